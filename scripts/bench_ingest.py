#!/usr/bin/env python3
"""Ingest benchmark: N publishers at ~4 Mbit/s into onvifcam (RTMP, RTSP and SRT), nginx-rtmp
and srt-live-transmit.

One 1080p H.264 + AAC FLV (~4 Mbit/s) is encoded once with ffmpeg. A single asyncio
process (pinned to CPU 1) replays it in real time from N connections: RTMP messages
pre-chunked once and shared by every connection, or RTSP interleaved RTP packets made
once by onvifcam's own FLV-to-RTP converter. The server under test is pinned to CPU 0;
its CPU time (utime + stime from /proc/PID/stat) is measured over a fixed window.

Loss: RTMP publishers set a 1 MB acknowledgement window, so the server reports what it has
consumed; "backlog" is what was sent but not consumed (beyond one window) at the end,
"late" is the worst lateness of a write against the file's timeline. RTSP has no
acknowledgements: its backlog is what is still queued in the client's socket buffers.

SRT: the same fixture remuxed to MPEG-TS by ffmpeg (-c copy), sent as 1316-byte payloads
(7 TS packets, as libsrt callers do) by onvifcam's sans-I/O SRT caller (srt/caller.py,
which answers ACKs with ACKACKs and NAKs with retransmissions) at the fixture's rate, to
onvifcam's SRT listener (whole ingest: SRT -> TS demux -> packetiser -> stream) and, as the
peer, to srt-live-transmit (libsrt, C++), one listener process per publisher writing to
/dev/null, all pinned to the same core; the CPU figure is the sum over those processes.
SRT backlog: packets the receiver never acknowledged plus what it asked to retransmit.

Loopback only, temp files only, bounded in time, stops by itself::

    python3 scripts/bench_ingest.py -n 10 -n 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import cpu_times, free_port, pin_and_use_uvloop, rtsp_record, stop_process

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onvifcam.rtmp import flv  # noqa: E402
from onvifcam.rtmp.chunk import ChunkWriter  # noqa: E402
from onvifcam.rtmp.client import RtmpPublisher  # noqa: E402
from onvifcam.srt.caller import Caller  # noqa: E402

NGINX_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
ACK_WINDOW = 1_000_000


def encode_fixture(path: Path, seconds: int) -> None:
    """1080p30 H.264 (~3.9 Mbit/s, noisy so the rate is real) + AAC 96k as FLV."""
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(seconds), "-vf", "noise=alls=12:allf=t",
        "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "3900k", "-maxrate", "3900k",
        "-bufsize", "3900k", "-g", "60", "-bf", "0", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "96k", "-f", "flv", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=300)


# --------------------------------------------------------------------------- media prep


@dataclass
class Media:
    """The fixture prepared for both protocols."""

    duration: float
    rtmp: list[tuple[int, bytes]]  # (ms, pre-chunked message bytes for stream id 1)
    rtmp_head: list[tuple[int, int, bytes]]  # (type, ts, body) sent right after publish
    rtsp: list[tuple[int, bytes]]  # (ms, interleaved RTP of one access unit)
    sdp: str
    total_bytes: int
    srt: list[tuple[int, list[bytes]]] = field(default_factory=list)  # (ms, 1316 B payloads)


def prepare(path: Path, chunk_size: int) -> Media:
    data = path.read_bytes()
    tags = list(flv.read_file(data))
    writer = ChunkWriter(chunk_size)
    rtmp: list[tuple[int, bytes]] = []
    head: list[tuple[int, int, bytes]] = []
    for t in tags:
        if t.type_id == 18:
            head.append((t.type_id, t.timestamp, t.data))
            continue
        csid = 6 if t.type_id == 9 else 4
        rtmp.append((t.timestamp, writer.message(csid, t.type_id, t.timestamp, 1, t.data)))
    # RTSP: the same tags through onvifcam's FLV -> RTP conversion, framed interleaved.
    rtsp: list[tuple[int, bytes]] = []
    current: list[bytes] = []
    sdp_box: list[str] = []

    def on_packet(track: int, packet: bytes) -> None:
        current.append(b"$" + bytes((2 * track,)) + len(packet).to_bytes(2, "big") + packet)

    ingest = flv.FlvIngest(
        lambda session: sdp_box.append(session.serialize().decode()), on_packet, name="bench"
    )
    for t in tags:
        if t.type_id == 9:
            ingest.video_message(t.timestamp, t.data)
        elif t.type_id == 8:
            ingest.audio_message(t.timestamp, t.data)
        if current:
            rtsp.append((t.timestamp, b"".join(current)))
            current.clear()
    duration = max(t.timestamp for t in tags) / 1000
    total = sum(len(b) for _, b in rtmp)
    return Media(duration, rtmp, head, rtsp, sdp_box[0], total, srt_timeline(path, duration))


SRT_PAYLOAD = 7 * 188
SRT_TICK_MS = 5


def srt_timeline(flv_path: Path, duration: float) -> list[tuple[int, list[bytes]]]:
    """The fixture as MPEG-TS (ffmpeg -c copy), cut into 1316-byte payloads spread evenly
    over its duration in 5 ms ticks (an encoder's SRT output is close to constant rate)."""
    ts_path = flv_path.with_suffix(".ts")
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(flv_path),
           "-c", "copy", "-f", "mpegts", str(ts_path)]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=120)
    data = ts_path.read_bytes()
    payloads = [data[i : i + SRT_PAYLOAD] for i in range(0, len(data), SRT_PAYLOAD)]
    ticks = max(1, int(duration * 1000 / SRT_TICK_MS))
    out: list[tuple[int, list[bytes]]] = []
    for t in range(ticks):
        lo, hi = len(payloads) * t // ticks, len(payloads) * (t + 1) // ticks
        if hi > lo:
            out.append((t * SRT_TICK_MS, payloads[lo:hi]))
    return out


# --------------------------------------------------------------------------- load


@dataclass
class Conn:
    name: str
    writer: asyncio.StreamWriter | None = None
    pub: RtmpPublisher | None = None
    srt: SrtPublisher | None = None
    sent: int = 0
    late: float = 0.0
    window_start_sent: int = 0


@dataclass
class Load:
    conns: list[Conn] = field(default_factory=list)
    stop: bool = False


async def rtmp_connect(port: int, name: str, media: Media) -> Conn:
    pub = RtmpPublisher(chunk_size=4096)
    await pub.connect("127.0.0.1", port, "bench", window=ACK_WINDOW)
    await pub.publish(name)
    if pub.stream_id != 1:
        raise RuntimeError(f"unexpected stream id {pub.stream_id}")
    for _type_id, _ts, body in media.rtmp_head:
        pub.data(body)
    c = Conn(name, pub.writer, pub)
    return c


async def rtsp_connect(port: int, name: str, media: Media) -> Conn:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await rtsp_record(reader, writer, f"rtsp://127.0.0.1:{port}/{name}", media.sdp)
    return Conn(name, writer)


class SrtPublisher(asyncio.DatagramProtocol):
    """One SRT caller over a connected UDP socket; the protocol logic is srt/caller.py."""

    def __init__(self, streamid: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.caller = Caller(streamid=streamid, latency_ms=200, start=self.loop.time(),
                             socket_id=random.getrandbits(31) or 1,
                             isn=random.getrandbits(31))  # fmt: skip
        self.transport: asyncio.DatagramTransport | None = None
        self.connected = self.loop.create_future()
        self.unacked_max = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable while the listener starts: the handshake is resent

    def datagram_received(self, data: bytes, addr: object) -> None:
        assert self.transport is not None
        now = self.loop.time()
        for out in self.caller.receive(data, now):
            self.transport.sendto(out)
        if self.caller.state in ("connected", "rejected") and not self.connected.done():
            self.connected.set_result(self.caller.state)

    def send(self, payloads: list[bytes]) -> int:
        assert self.transport is not None
        now = self.loop.time()
        data = self.caller.data
        sendto = self.transport.sendto
        for p in payloads:
            sendto(data(p, now))
        return sum(map(len, payloads))

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.sendto(self.caller.shutdown(self.loop.time()))
            self.transport.close()


async def srt_connect(port: int, name: str, media: Media) -> Conn:
    loop = asyncio.get_running_loop()
    _, pub = await loop.create_datagram_endpoint(
        lambda: SrtPublisher(f"publish:{name}"), remote_addr=("127.0.0.1", port)
    )
    for _ in range(20):
        assert pub.transport is not None
        c = pub.caller  # resend the step that went unanswered, as libsrt does
        hs = c.conclusion(loop.time()) if c.state == "induced" else c.induction(loop.time())
        pub.transport.sendto(hs)
        with contextlib.suppress(TimeoutError):
            state = await asyncio.wait_for(asyncio.shield(pub.connected), 0.5)
            if state != "connected":
                raise RuntimeError(f"SRT publish {name!r} rejected ({pub.caller.reject_code})")
            break
    else:
        raise RuntimeError(
            f"SRT listener on port {port} did not answer (caller state {pub.caller.state})"
        )
    return Conn(name, srt=pub)


async def replay(load: Load, timeline: list[tuple[int, Any]], until: float) -> None:
    """One scheduler for every connection: write each item when it is due."""
    loop = asyncio.get_running_loop()
    heap: list[tuple[float, int, int]] = []
    base = loop.time() + 0.2
    for ci, _c in enumerate(load.conns):
        start = base + (ci / max(1, len(load.conns))) * 0.5  # spread the phase
        heapq.heappush(heap, (start + timeline[0][0] / 1000, ci, 0))
    starts = {ci: base + (ci / max(1, len(load.conns))) * 0.5 for ci in range(len(load.conns))}
    behind = 0
    while heap and not load.stop:
        due, ci, idx = heap[0]
        now = loop.time()
        if due > now:
            if due > until:
                break
            behind = 0
            await asyncio.sleep(due - now)
            continue
        behind += 1
        if behind % 256 == 0:
            await asyncio.sleep(0)  # behind schedule: still let acknowledgements in
        heapq.heappop(heap)
        c = load.conns[ci]
        if c.srt is not None:
            c.sent += c.srt.send(timeline[idx][1])  # type: ignore[arg-type]
        else:
            w = c.writer
            if w is None or w.is_closing():
                continue
            data = timeline[idx][1]
            w.write(data)
            c.sent += len(data)
        late = now - due
        if late > c.late:
            c.late = late
        if idx + 1 < len(timeline):
            heapq.heappush(heap, (starts[ci] + timeline[idx + 1][0] / 1000, ci, idx + 1))


@dataclass
class Result:
    server: str
    proto: str
    n: int
    mbit: float
    cpu_pct: float
    user_pct: float
    cpu_per_gbit: float
    late_ms: float
    backlog: str


def cpu_of(pids: list[int]) -> tuple[float, float]:
    """(utime, stime) summed over processes."""
    times = [cpu_times(p) for p in pids]
    return sum(u for u, _ in times), sum(s for _, s in times)


async def run_load(
    server: str,
    proto: str,
    pids: list[int],
    ports: list[int],
    n: int,
    media: Media,
    warmup: float,
    window: float,
) -> Result:
    load = Load()
    connect = {"rtmp": rtmp_connect, "rtsp": rtsp_connect, "srt": srt_connect}[proto]
    for i in range(n):
        name = f"bench/{proto}{i}" if proto == "rtsp" else f"{proto}{i}"
        load.conns.append(await connect(ports[i % len(ports)], name, media))
    loop = asyncio.get_running_loop()
    timeline: list[tuple[int, Any]] = {"rtmp": media.rtmp, "rtsp": media.rtsp,
                                       "srt": media.srt}[proto]  # fmt: skip
    end = loop.time() + 0.7 + warmup + window
    if end - loop.time() > media.duration:
        raise SystemExit(f"fixture too short ({media.duration:.0f} s) for the run")
    task = asyncio.create_task(replay(load, timeline, end))
    await asyncio.sleep(0.7 + warmup)
    (u0, s0), t0 = cpu_of(pids), loop.time()
    for c in load.conns:
        c.window_start_sent = c.sent
        c.late = 0.0
    await asyncio.sleep(window)
    (u1, s1), t1 = cpu_of(pids), loop.time()
    sent = sum(c.sent - c.window_start_sent for c in load.conns)
    load.stop = True
    await task
    late = max(c.late for c in load.conns)
    await asyncio.sleep(1.5)  # let the last acknowledgements arrive
    if proto == "rtmp":
        pending = 0
        for c in load.conns:
            assert c.pub is not None
            pending += max(0, c.pub.sent - c.pub.acked - ACK_WINDOW)
        total = sum(c.pub.sent for c in load.conns if c.pub is not None)
        backlog = f"{100 * pending / max(1, total):.2f}%"
    elif proto == "srt":
        unacked = sum(len(c.srt.caller.sent) for c in load.conns if c.srt is not None)
        rexmit = sum(c.srt.caller.retransmitted for c in load.conns if c.srt is not None)
        backlog = f"{unacked} unacked, {rexmit} retransmitted"
    else:
        queued = sum(
            c.writer.transport.get_write_buffer_size() for c in load.conns if c.writer is not None
        )
        backlog = f"{queued} B queued"
    for c in load.conns:
        if c.srt is not None:
            await c.srt.close()
        elif c.pub is not None:
            await c.pub.close()
        elif c.writer is not None:
            c.writer.close()
            with contextlib.suppress(Exception):
                await c.writer.wait_closed()
    span = t1 - t0
    mbit = sent * 8 / span / 1e6
    cpu = (u1 - u0 + s1 - s0) / span
    user = (u1 - u0) / span
    per_gbit = cpu / (mbit / 1000) if mbit else float("nan")
    return Result(server, proto, n, mbit, 100 * cpu, 100 * user, per_gbit, 1000 * late, backlog)


# --------------------------------------------------------------------------- servers


@contextlib.contextmanager
def onvifcam_server(tmp: Path, cpu: int, rtmp_extra: str = ""):
    cfg = tmp / "onvifcam.toml"
    cfg.write_text(
        '[server]\nhost = "127.0.0.1"\nrtsp_port = 0\nrtmp_port = 0\nhttp_port = 0\n'
        'log_level = "info"\n[onvif]\nenabled = false\n'
        "[rtsp]\nrtp_port = 0\nudp = false\nmulticast = false\n"
        "[limits]\nper_ip_rate = 1000.0\nper_ip_burst = 1000\n"
        "[srt]\nport = 0\nlatency_ms = 200\nmax_connections = 1000\n"
        "handshakes_per_ip_per_s = 1000.0\nhandshake_burst = 1000\n"
        f"[rtmp]\n{rtmp_extra}\n"
    )
    logf = open(tmp / "onvifcam.log", "w")  # closed in finally
    proc = subprocess.Popen(
        ["taskset", "-c", str(cpu), sys.executable, "-m", "onvifcam", "serve",
         "--config", str(cfg), "--state-dir", str(tmp / "state")],
        stdout=subprocess.PIPE, stderr=logf, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("onvifcam ready"):
            raise RuntimeError(f"onvifcam did not start: {line!r}")
        ports = dict(tok.split("=", 1) for tok in line.split()[2:])
        yield proc.pid, {k: int(v) for k, v in ports.items() if k.endswith("_port")}
    finally:
        stop_process(proc, timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()
        logf.close()
        srt_summary((tmp / "onvifcam.log").read_text())


def srt_summary(log: str) -> None:
    """Sum the SRT receivers' own counters from the 'closed' lines of the server log."""
    rows = re.findall(r"\((\d+) packets, (\d+) lost, (\d+) recovered, (\d+) dropped", log)
    if rows:
        packets, lost, recovered, dropped = (sum(int(r[i]) for r in rows) for i in range(4))
        print(
            f"  onvifcam SRT receivers: {len(rows)} callers, {packets} packets, {lost} lost, "
            f"{recovered} recovered, {dropped} dropped too late",
            flush=True,
        )


@contextlib.contextmanager
def nginx_server(tmp: Path, cpu: int):
    port = free_port()
    root = tmp / "nginx"
    root.mkdir(exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(
        f"load_module {NGINX_MODULE};\n"
        "daemon off;\nmaster_process off;\nworker_processes 1;\n"
        f"pid {root}/nginx.pid;\nerror_log {root}/error.log warn;\n"
        "events { worker_connections 4096; }\n"
        "rtmp {\n  server {\n"
        f"    listen 127.0.0.1:{port};\n    chunk_size 4096;\n"
        "    application bench { live on; record off; }\n  }\n}\n"
    )
    proc = subprocess.Popen(
        ["taskset", "-c", str(cpu), "nginx", "-p", str(root), "-e", str(root / "error.log"),
         "-c", str(conf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None:
                raise RuntimeError("nginx did not start: " + (root / "error.log").read_text())
            time.sleep(0.1)
        yield proc.pid, port
    finally:
        stop_process(proc)


@contextlib.contextmanager
def srt_live_transmit(n: int, cpu: int):
    """n srt-live-transmit listeners (libsrt), each writing what it receives to /dev/null."""
    ports = [free_port() for _ in range(n)]
    procs = [
        subprocess.Popen(
            [
                "taskset",
                "-c",
                str(cpu),
                "srt-live-transmit",
                "-q",
                f"srt://127.0.0.1:{port}?mode=listener&latency=200",
                "file://con",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        wanted = {f"0100007F:{port:04X}" for port in ports}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # every listener's socket is bound
            with open("/proc/net/udp") as f:
                bound = {line.split()[1] for line in f.readlines()[1:]}
            if wanted <= bound:
                break
            time.sleep(0.1)
        yield [p.pid for p in procs], ports
    finally:
        for p in procs:
            stop_process(p)


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, action="append", help="publishers (repeatable)")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--window", type=float, default=12.0, help="measured seconds")
    ap.add_argument("--fixture", help="use this FLV instead of encoding one")
    ap.add_argument(
        "--only", choices=["onvifcam", "nginx", "rtsp", "srt", "srt-live-transmit"], action="append"
    )
    ap.add_argument(
        "--rtmp-config",
        default="",
        metavar="TOML",
        help='extra [rtmp] settings for onvifcam, e.g. "lazy_packetize = false"',
    )
    args = ap.parse_args()
    counts = args.n or [10]
    if max(counts) > 900:
        ap.error("at most 900 publishers")
    pin_and_use_uvloop(1)
    with tempfile.TemporaryDirectory(prefix="onvifcam-bench-") as d:
        tmp = Path(d)
        seconds = int(args.warmup + args.window + 6)
        fixture = Path(args.fixture) if args.fixture else tmp / "bench.flv"
        if not args.fixture:
            print(f"encoding a {seconds} s 1080p fixture ...", flush=True)
            encode_fixture(fixture, seconds)
        media = prepare(fixture, 4096)
        rate = media.total_bytes * 8 / media.duration / 1e6
        print(f"fixture: {media.duration:.1f} s, {rate:.2f} Mbit/s per publisher", flush=True)
        results: list[Result] = []
        which = args.only or ["nginx", "onvifcam", "rtsp", "srt-live-transmit", "srt"]
        have_nginx = shutil.which("nginx") and os.path.exists(NGINX_MODULE)
        have_slt = shutil.which("srt-live-transmit")
        for n in counts:
            for what in which:
                if what == "nginx":
                    if not have_nginx:
                        print("nginx-rtmp not installed; skipped")
                        continue
                    with nginx_server(tmp, 0) as (pid, port):
                        r = asyncio.run(
                            run_load("nginx-rtmp", "rtmp", [pid], [port], n, media,
                                     args.warmup, args.window)
                        )  # fmt: skip
                elif what == "srt-live-transmit":
                    if not have_slt:
                        print("srt-live-transmit (srt-tools) not installed; skipped")
                        continue
                    with srt_live_transmit(n, 0) as (pids, ports):
                        r = asyncio.run(
                            run_load("srt-l-t", "srt", pids, ports, n, media,
                                     args.warmup, args.window)
                        )  # fmt: skip
                else:
                    proto = {"onvifcam": "rtmp", "rtsp": "rtsp", "srt": "srt"}[what]
                    with onvifcam_server(tmp, 0, args.rtmp_config) as (pid, ports):
                        port = ports[f"{proto}_port"]
                        r = asyncio.run(
                            run_load("onvifcam", proto, [pid], [port], n, media,
                                     args.warmup, args.window)
                        )  # fmt: skip
                results.append(r)
                print(
                    f"  {r.server:10} {r.proto:4} N={r.n:<4} {r.mbit:8.1f} Mbit/s "
                    f"{r.cpu_pct:6.1f}% CPU ({r.user_pct:.1f}% user) "
                    f"{r.cpu_per_gbit:6.3f} CPU-s/Gbit  "
                    f"late {r.late_ms:6.1f} ms  backlog {r.backlog}",
                    flush=True,
                )
        print()
        print(
            f"{'server':10} {'in':4} {'N':>4} {'Mbit/s':>8} {'CPU %core':>10} {'user %':>7} "
            f"{'CPU-s/Gbit':>11} {'x peer':>8} {'late ms':>8}  backlog"
        )
        base = {(r.n, r.proto): r.cpu_per_gbit for r in results if r.server == "nginx-rtmp"}
        base.update({(r.n, "srt"): r.cpu_per_gbit for r in results if r.server == "srt-l-t"})
        for r in results:
            peer = base.get((r.n, "srt" if r.proto == "srt" else "rtmp"))
            ratio = r.cpu_per_gbit / peer if peer else float("nan")
            print(
                f"{r.server:10} {r.proto:4} {r.n:>4} {r.mbit:>8.1f} {r.cpu_pct:>10.1f} "
                f"{r.user_pct:>7.1f} "
                f"{r.cpu_per_gbit:>11.3f} {ratio:>8.2f} {r.late_ms:>8.1f}  {r.backlog}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
