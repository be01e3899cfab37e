#!/usr/bin/env python3
"""Ingest benchmark: N publishers at ~4 Mbit/s into onvifcam (RTMP and RTSP) and nginx-rtmp.

One 1080p H.264 + AAC FLV (~4 Mbit/s) is encoded once with ffmpeg. A single asyncio
process (pinned to CPU 1) replays it in real time from N connections: RTMP messages
pre-chunked once and shared by every connection, or RTSP interleaved RTP packets made
once by onvifcam's own FLV-to-RTP converter. The server under test is pinned to CPU 0;
its CPU time (utime + stime from /proc/PID/stat) is measured over a fixed window.

Loss: RTMP publishers set a 1 MB acknowledgement window, so the server reports what it has
consumed; "backlog" is what was sent but not consumed (beyond one window) at the end,
"late" is the worst lateness of a write against the file's timeline. RTSP has no
acknowledgements: its backlog is what is still queued in the client's socket buffers.

Loopback only, temp files only, bounded in time, stops by itself::

    python3 scripts/bench_ingest.py -n 10 -n 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench_common import cpu_times, free_port, pin_and_use_uvloop, rtsp_record, stop_process

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onvifcam.rtmp import flv  # noqa: E402
from onvifcam.rtmp.chunk import ChunkWriter  # noqa: E402
from onvifcam.rtmp.client import RtmpPublisher  # noqa: E402

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
    return Media(duration, rtmp, head, rtsp, sdp_box[0], total)


# --------------------------------------------------------------------------- load


@dataclass
class Conn:
    name: str
    writer: asyncio.StreamWriter | None = None
    pub: RtmpPublisher | None = None
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


async def replay(load: Load, timeline: list[tuple[int, bytes]], until: float) -> None:
    """One scheduler for every connection: write each item when it is due."""
    loop = asyncio.get_running_loop()
    heap: list[tuple[float, int, int]] = []
    base = loop.time() + 0.2
    for ci, _c in enumerate(load.conns):
        start = base + (ci / max(1, len(load.conns))) * 0.5  # spread the phase
        heapq.heappush(heap, (start + timeline[0][0] / 1000, ci, 0))
    starts = {ci: base + (ci / max(1, len(load.conns))) * 0.5 for ci in range(len(load.conns))}
    while heap and not load.stop:
        due, ci, idx = heap[0]
        now = loop.time()
        if due > now:
            if due > until:
                break
            await asyncio.sleep(due - now)
            continue
        heapq.heappop(heap)
        c = load.conns[ci]
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


async def run_load(
    server: str, proto: str, pid: int, port: int, n: int, media: Media, warmup: float, window: float
) -> Result:
    load = Load()
    connect = rtmp_connect if proto == "rtmp" else rtsp_connect
    for i in range(n):
        name = f"{proto}{i}" if proto == "rtmp" else f"bench/{proto}{i}"
        load.conns.append(await connect(port, name, media))
    loop = asyncio.get_running_loop()
    timeline = media.rtmp if proto == "rtmp" else media.rtsp
    end = loop.time() + 0.7 + warmup + window
    if end - loop.time() > media.duration:
        raise SystemExit(f"fixture too short ({media.duration:.0f} s) for the run")
    task = asyncio.create_task(replay(load, timeline, end))
    await asyncio.sleep(0.7 + warmup)
    (u0, s0), t0 = cpu_times(pid), loop.time()
    for c in load.conns:
        c.window_start_sent = c.sent
        c.late = 0.0
    await asyncio.sleep(window)
    (u1, s1), t1 = cpu_times(pid), loop.time()
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
    else:
        queued = sum(
            c.writer.transport.get_write_buffer_size() for c in load.conns if c.writer is not None
        )
        backlog = f"{queued} B queued"
    for c in load.conns:
        if c.pub is not None:
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
        'log_level = "warning"\n[onvif]\nenabled = false\n'
        "[rtsp]\nrtp_port = 0\nudp = false\nmulticast = false\n"
        "[limits]\nnew_connections_per_ip_per_s = 1000.0\nnew_connections_burst = 1000\n"
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
        yield proc.pid, int(ports["rtmp_port"]), int(ports["rtsp_port"])
    finally:
        stop_process(proc, timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()
        logf.close()


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


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, action="append", help="publishers (repeatable)")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--window", type=float, default=12.0, help="measured seconds")
    ap.add_argument("--fixture", help="use this FLV instead of encoding one")
    ap.add_argument("--only", choices=["onvifcam", "nginx", "rtsp"], action="append")
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
        which = args.only or ["nginx", "onvifcam", "rtsp"]
        have_nginx = shutil.which("nginx") and os.path.exists(NGINX_MODULE)
        for n in counts:
            for what in which:
                if what == "nginx":
                    if not have_nginx:
                        print("nginx-rtmp not installed; skipped")
                        continue
                    with nginx_server(tmp, 0) as (pid, port):
                        r = asyncio.run(
                            run_load("nginx-rtmp", "rtmp", pid, port, n, media,
                                     args.warmup, args.window)
                        )  # fmt: skip
                else:
                    proto = "rtmp" if what == "onvifcam" else "rtsp"
                    with onvifcam_server(tmp, 0, args.rtmp_config) as (pid, rtmp_port, rtsp_port):
                        port = rtmp_port if proto == "rtmp" else rtsp_port
                        r = asyncio.run(
                            run_load("onvifcam", proto, pid, port, n, media,
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
            f"{'CPU-s/Gbit':>11} {'x nginx':>8} {'late ms':>8}  backlog"
        )
        base = {r.n: r.cpu_per_gbit for r in results if r.server == "nginx-rtmp"}
        for r in results:
            ratio = r.cpu_per_gbit / base[r.n] if base.get(r.n) else float("nan")
            print(
                f"{r.server:10} {r.proto:4} {r.n:>4} {r.mbit:>8.1f} {r.cpu_pct:>10.1f} "
                f"{r.user_pct:>7.1f} "
                f"{r.cpu_per_gbit:>11.3f} {ratio:>8.2f} {r.late_ms:>8.1f}  {r.backlog}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
