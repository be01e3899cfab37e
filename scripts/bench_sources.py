#!/usr/bin/env python3
"""Sources benchmark: a fleet of file-loop cameras with 2 RTSP readers each, the failover gap,
and CPU per forwarded Gbit against ``ffmpeg -c copy``.

(a) Fleet: one 2 Mbit/s 1080p25 H.264 clip (made with ffmpeg in a temp dir), ``--cameras N``
    cameras looping it (one ``[[fleets]]`` entry, one shared demux), each read by 2 RTSP/TCP
    readers. The readers are raw interleaved readers counting bytes in this one asyncio
    process (pinned to CPU 1, uvloop when installed); the server runs alone on CPU 0. Over
    the window: server CPU (share of one core), RSS, per-reader byte rate (min / median) and
    readers that starved (under half the median rate, or 2 s without a byte).
(b) Failover gap: ``measure_failover_gap`` from ``scripts/bench_failover_gap.py`` when that
    file exists, its figures printed as they come; else "not available".
(c) Forwarding: ``--forward N`` cameras looping the clip, each forwarded to a sink in this
    process (an RTSP RECORD acceptor, or an RTMP publish acceptor built on onvifcam's
    sans-I/O RTMP modules) that counts bytes, once by onvifcam's own ``forward`` entries and
    once by N ``ffmpeg -c copy`` processes reading the camera over RTSP and pushing the same
    way. CPU per forwarded Gbit: onvifcam's CPU above its baseline (the same cameras, nobody
    reading) against the ffmpeg processes' CPU. Side by side, same run.

Loopback only, temp files only, bounded in time; every process it starts is stopped::

    python3 scripts/bench_sources.py --cameras 100 --seconds 10 --forward 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench_common import cpu_seconds, pin_and_use_uvloop, stop_process

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onvifcam.rtmp import amf0, chunk  # noqa: E402
from onvifcam.rtmp.handshake import ServerHandshake  # noqa: E402

SERVER_CPU = 0
LOAD_CPU = 1
PROCS: list[subprocess.Popen[bytes]] = []
ONVIF = False  # --onvif: every camera also gets its ONVIF endpoint (slower start, more RSS)
TURN_MS = 0  # --turn-ms: the server's [sources] file_turn_ms (0: its default)
STALL_MS = 20  # --stall-ms: the server's loop-stall watchdog threshold (stalls are parsed)


# --------------------------------------------------------------------------- processes


def make_clip(d: Path, seconds: int = 10) -> Path:
    """A 1080p25 H.264 clip at about 2 Mbit/s (IDR every 2 s, no B-frames) with AAC."""
    out = d / "clip.mp4"
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=25:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "50",
            "-bf", "0", "-b:v", "1900k", "-maxrate", "2000k", "-bufsize", "2000k",
            "-c:a", "aac", "-b:a", "96k", str(out),
        ],
        check=True,
        timeout=300,
    )  # fmt: skip
    return out


def start_server(d: Path, config: str) -> tuple[subprocess.Popen[bytes], dict[str, str], Path]:
    """onvifcam on CPU 0 with ``config`` (plus loopback ports); its ready-line values."""
    d.mkdir(parents=True, exist_ok=True)
    base = (
        '[server]\nhost = "127.0.0.1"\nrtsp_port = 0\nrtmp_port = 0\nrtmps_port = 0\n'
        f"http_port = 0\nloop_stall_warn_ms = {STALL_MS}\n"
        "[rtsp]\nrtp_port = 0\n[srt]\nport = 0\n[discovery]\nenabled = false\n"
        "[limits]\nmax_connections = 8192\n"
        f"[onvif]\nenabled = {'true' if ONVIF else 'false'}\nport_range_start = 0\n"
        "port_range_end = 0\nauth = false\n"
    )
    if TURN_MS:
        base += f"[sources]\nfile_turn_ms = {TURN_MS}\n"
    (d / "config.toml").write_text(base + config)
    out, err = d / "stdout", d / "server.log"
    cmd = ["taskset", "-c", str(SERVER_CPU), sys.executable, "-m", "onvifcam", "serve"]
    cmd += ["--config", str(d / "config.toml"), "--state-dir", str(d / "state")]
    cmd += ["--log-level", "info"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    with open(out, "wb") as o, open(err, "wb") as e:
        p = subprocess.Popen(cmd, stdout=o, stderr=e, cwd=ROOT, env=env, start_new_session=True)
    PROCS.append(p)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        for line in out.read_text(errors="replace").splitlines():
            if line.startswith("onvifcam ready"):
                return p, dict(t.split("=", 1) for t in line.split() if "=" in t), err
        if p.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(
        f"onvifcam did not start (exit {p.poll()}): {err.read_text(errors='replace')[-2000:]}"
    )


def stop(p: subprocess.Popen[bytes]) -> None:
    try:
        stop_process(p)
    except subprocess.TimeoutExpired:  # a loaded machine can take longer to reap
        p.kill()
        p.wait()
    with contextlib.suppress(ValueError):
        PROCS.remove(p)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --------------------------------------------------------------------------- RTSP readers


class Reader(asyncio.Protocol):
    """DESCRIBE, SETUP every track (TCP interleaved), PLAY; then count bytes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.cseq = 0
        self.session = ""
        self.controls: list[str] = []
        self.playing = False
        self.bytes = 0
        self.last = 0.0
        self.max_gap = 0.0
        self.error = ""
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.request("DESCRIBE", self.url, "Accept: application/sdp\r\n")

    def request(self, method: str, uri: str, extra: str = "") -> None:
        self.cseq += 1
        s = f"Session: {self.session}\r\n" if self.session else ""
        assert self.transport is not None
        self.transport.write(
            f"{method} {uri} RTSP/1.0\r\nCSeq: {self.cseq}\r\n{s}{extra}\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        if self.playing:
            t = time.monotonic()
            gap = t - self.last
            if gap > self.max_gap:
                self.max_gap = gap
            self.last = t
            self.bytes += len(data)
            return
        self.buf += data
        while b"\r\n\r\n" in self.buf and not self.playing:
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            text = head.decode(errors="replace")
            length = 0
            for line in text.split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.lower() == "content-length":
                    length = int(v)
                elif k.lower() == "session":
                    self.session = v.split(";")[0].strip()
            if len(rest) < length:
                return
            body, self.buf = rest[:length], rest[length:]
            if " 200 " not in text.split("\r\n", 1)[0]:
                self.fail(text.split("\r\n", 1)[0])
                return
            self.step(body.decode(errors="replace"))

    def step(self, body: str) -> None:
        if self.cseq == 1:
            self.controls = [
                line[len("a=control:") :].strip()
                for line in body.splitlines()
                if line.startswith("a=control:") and line.strip() != "a=control:*"
            ]
        i = self.cseq - 1  # tracks set up so far
        if i < len(self.controls):
            self.request(
                "SETUP",
                f"{self.url}/{self.controls[i]}",
                f"Transport: RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}\r\n",
            )
        elif i == len(self.controls):
            self.request("PLAY", self.url, "Range: npt=0.000-\r\n")
        else:
            self.playing = True
            self.last = time.monotonic()
            self.bytes += len(self.buf)
            self.buf = b""
            if not self.ready.done():
                self.ready.set_result(None)

    def fail(self, why: str) -> None:
        self.error = why
        if not self.ready.done():
            self.ready.set_result(None)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.error:
            self.error = f"connection lost: {exc}"
        if not self.ready.done():
            self.ready.set_result(None)


async def fleet_case(clip: Path, cameras: int, seconds: float, tmp: Path) -> None:
    config = (
        f'[[fleets]]\nname = "bench"\ncount = {cameras}\npath = "bench/{{n}}"\n'
        f'source = "file://{clip}"\n'
    )
    p, info, log = start_server(tmp / f"fleet{cameras}", config)
    try:
        loop = asyncio.get_running_loop()
        port = int(info["rtsp_port"])
        readers: list[Reader] = []
        t0 = time.monotonic()
        for n in range(1, cameras + 1):
            for _ in range(2):
                url = f"rtsp://127.0.0.1:{port}/bench/{n}"
                _t, r = await loop.create_connection(lambda u=url: Reader(u), "127.0.0.1", port)
                readers.append(r)
        await asyncio.wait_for(asyncio.gather(*(r.ready for r in readers)), 120)
        failed = [r.error for r in readers if r.error]
        setup = time.monotonic() - t0
        await asyncio.sleep(3)  # settle
        b0 = [r.bytes for r in readers]
        for r in readers:
            r.max_gap = 0.0
        start = log.stat().st_size
        c0, w0 = cpu_seconds(p.pid), time.monotonic()
        await asyncio.sleep(seconds)
        c1, w1 = cpu_seconds(p.pid), time.monotonic()
        await asyncio.sleep(0.5)  # the last "runs again" line
        n_stalls, worst = stalls(log, start)
        rates = [(r.bytes - b) * 8 / (w1 - w0) / 1e6 for r, b in zip(readers, b0, strict=True)]
        med = statistics.median(rates)
        starved = [
            i
            for i, (r, rate) in enumerate(zip(readers, rates, strict=True))
            if rate < med / 2 or r.max_gap > 2.0 or r.error
        ]
        behind = log.read_text(errors="replace").count("is behind")
        print(
            f"(a) fleet: {cameras} cameras x 2 readers ({len(readers)} readers, set up in "
            f"{setup:.1f} s, {len(failed)} failed)\n"
            f"    server CPU {100 * (c1 - c0) / (w1 - w0):.1f} % of one core, "
            f"RSS {rss_mib(p.pid):.0f} MiB, delivered {sum(rates) / 1000:.2f} Gbit/s\n"
            f"    per-reader Mbit/s: min {min(rates):.2f}, median {med:.2f}; max gap "
            f"{max(r.max_gap for r in readers):.2f} s; starved readers: {len(starved)}; "
            f"'behind' drops logged: {behind}\n"
            f"    loop stalls over {STALL_MS} ms: {n_stalls}, worst {worst:.0f} ms",
            flush=True,
        )
        for r in readers:
            if r.transport is not None:
                r.transport.close()
    finally:
        stop(p)


def stalls(log: Path, start: int) -> tuple[int, float]:
    """(stalls, worst stall in ms) the server's watchdog logged after byte ``start`` of its log."""
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    ms = [float(m) for m in re.findall(r"after a stall of (\d+) ms", text)]
    warned = text.count("event loop stalled")
    return warned, max(ms, default=0.0)


async def idle_case(clip: Path, cameras: int, seconds: float, tmp: Path, peer: int) -> None:
    """(d) The fleet with nobody reading: loop stalls and CPU per camera, beside ``peer``
    ``ffmpeg -re -stream_loop -1 -c copy`` processes pushing the clip to the same server."""
    config = (
        f'[[fleets]]\nname = "bench"\ncount = {cameras}\npath = "bench/{{n}}"\n'
        f'source = "file://{clip}"\n'
    )
    p, _info, log = start_server(tmp / f"idle{cameras}", config)
    try:
        await asyncio.sleep(3)  # settle
        start = log.stat().st_size
        c0, w0 = cpu_seconds(p.pid), time.monotonic()
        await asyncio.sleep(seconds)
        c1, w1 = cpu_seconds(p.pid), time.monotonic()
        await asyncio.sleep(0.5)  # the last "runs again" line
        n, worst = stalls(log, start)
        cpu = 100 * (c1 - c0) / (w1 - w0)
        print(
            f"(d) idle fleet: {cameras} file-loop cameras, nobody reading, {seconds:g} s, "
            f"watchdog at {STALL_MS} ms\n"
            f"    onvifcam: CPU {cpu:.1f} % of one core ({1000 * cpu / 100 / cameras:.2f} "
            f"ms CPU/s per camera), loop stalls {n}, worst {worst:.0f} ms, "
            f"RSS {rss_mib(p.pid):.0f} MiB",
            flush=True,
        )
    finally:
        stop(p)
    if not peer:
        return
    p, info, log = start_server(tmp / f"idle-peer{peer}", "")
    ffs: list[subprocess.Popen[bytes]] = []
    try:
        port = int(info["rtsp_port"])
        for i in range(peer):
            cmd = ["taskset", "-c", str(SERVER_CPU), "ffmpeg", "-hide_banner", "-nostdin"]
            cmd += ["-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(clip)]
            cmd += ["-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp"]
            cmd += [f"rtsp://127.0.0.1:{port}/push/{i}"]
            f = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
            PROCS.append(f)
            ffs.append(f)
        await asyncio.sleep(5)  # settle
        start = log.stat().st_size
        pids = [f.pid for f in ffs if f.poll() is None]
        c0 = sum(cpu_seconds(x) for x in pids)
        s0, w0 = cpu_seconds(p.pid), time.monotonic()
        await asyncio.sleep(seconds)
        c1 = sum(cpu_seconds(x) for x in pids)
        s1, w1 = cpu_seconds(p.pid), time.monotonic()
        await asyncio.sleep(0.5)
        n, worst = stalls(log, start)
        ff = 100 * (c1 - c0) / (w1 - w0)
        srv = 100 * (s1 - s0) / (w1 - w0)
        print(
            f"    peer: {len(pids)} x ffmpeg -re -stream_loop -1 -c copy -> RTSP: ffmpeg CPU "
            f"{ff:.1f} % ({1000 * ff / 100 / max(1, len(pids)):.2f} ms CPU/s per camera) + "
            f"onvifcam ingest {srv:.1f} % ({1000 * srv / 100 / max(1, len(pids)):.2f} ms "
            f"CPU/s per camera), loop stalls {n}, worst {worst:.0f} ms",
            flush=True,
        )
    finally:
        for f in ffs:
            stop(f)
        stop(p)


# --------------------------------------------------------------------------- failover gap


async def failover_case() -> None:
    path = Path(__file__).with_name("bench_failover_gap.py")
    if not path.exists():
        print("(b) failover gap: not available (scripts/bench_failover_gap.py is missing)")
        return
    spec = importlib.util.spec_from_file_location("bench_failover_gap", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fn = getattr(mod, "measure_failover_gap", None)
    if fn is None:
        print("(b) failover gap: not available (no measure_failover_gap in the script)")
        return
    try:
        result = fn()
        if asyncio.iscoroutine(result):
            result = await result
    except Exception as exc:  # report and carry on with (c)
        print(f"(b) failover gap: measure_failover_gap failed: {exc!r}")
        return
    if isinstance(result, dict):
        result = ", ".join(f"{k} {v}" for k, v in result.items())
    print(f"(b) failover gap (ms, as measure_failover_gap reports it): {result}", flush=True)


# --------------------------------------------------------------------------- sinks


@dataclass
class Sink:
    bytes: int = 0
    sessions: int = 0


async def rtsp_sink(r: asyncio.StreamReader, w: asyncio.StreamWriter, sink: Sink) -> None:
    """Accept ANNOUNCE/SETUP/RECORD (200 to each), then count bytes."""
    try:
        n = 0
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            text = head.decode(errors="replace")
            cseq, length = "0", 0
            for line in text.split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.lower() == "cseq":
                    cseq = v.strip()
                elif k.lower() == "content-length":
                    length = int(v)
            await r.readexactly(length)
            method = text.split(" ", 1)[0]
            extra = ""
            if method == "SETUP":
                tr = f"RTP/AVP/TCP;unicast;interleaved={2 * n}-{2 * n + 1};mode=record"
                extra = f"Session: 1\r\nTransport: {tr}\r\n"
                n += 1
            w.write(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}\r\n".encode())
            if method == "RECORD":
                break
        sink.sessions += 1
        while data := await r.read(262144):
            sink.bytes += len(data)
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        w.close()


async def rtmp_sink(r: asyncio.StreamReader, w: asyncio.StreamWriter, sink: Sink) -> None:
    """Handshake, answer connect/createStream/publish, then count bytes."""
    try:
        hs = ServerHandshake()
        rest = b""
        while not hs.done:
            data = await r.read(65536)
            if not data:
                return
            reply, rest = hs.feed(data)
            w.write(reply)
        parser = chunk.ChunkParser()
        out = chunk.ChunkWriter()
        publishing = False
        data = rest
        while not publishing:
            for m in parser.feed(data) if data else []:
                if m.type_id != chunk.AMF0_COMMAND:
                    continue
                v = amf0.decode(m.payload)
                name, txn = v[0], v[1] if len(v) > 1 else 0
                if name == "connect":
                    body = amf0.encode(
                        "_result",
                        txn,
                        {"fmsVer": "bench"},
                        {"code": "NetConnection.Connect.Success", "level": "status"},
                    )
                    w.write(out.message(3, chunk.AMF0_COMMAND, 0, 0, body))
                elif name == "createStream":
                    w.write(
                        out.message(
                            3, chunk.AMF0_COMMAND, 0, 0, amf0.encode("_result", txn, None, 1.0)
                        )
                    )
                elif name == "publish":
                    info = {
                        "level": "status",
                        "code": "NetStream.Publish.Start",
                        "description": "ok",
                    }
                    w.write(
                        out.message(
                            5, chunk.AMF0_COMMAND, 0, 1, amf0.encode("onStatus", 0.0, None, info)
                        )
                    )
                    publishing = True
            if not publishing:
                data = await r.read(65536)
                if not data:
                    return
        sink.sessions += 1
        while data := await r.read(262144):
            sink.bytes += len(data)
    except (ConnectionError, ValueError):
        pass
    finally:
        w.close()


# --------------------------------------------------------------------------- forwarding


async def window(pids: list[int], sink: Sink, seconds: float) -> tuple[float, float]:
    """(CPU seconds of ``pids``, forwarded Gbit) over the window."""
    c0 = sum(cpu_seconds(pid) for pid in pids)
    b0 = sink.bytes
    await asyncio.sleep(seconds)
    c1 = sum(cpu_seconds(pid) for pid in pids)
    return c1 - c0, (sink.bytes - b0) * 8 / 1e9


async def wait_sessions(sink: Sink, n: int, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while sink.sessions < n and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    if sink.sessions < n:
        raise RuntimeError(f"only {sink.sessions} of {n} forwards reached the sink")


def cameras_toml(clip: Path, n: int, forward: str = "") -> str:
    out = []
    for i in range(n):
        fwd = f'forward = [{{ url = "{forward.format(i=i)}" }}]\n' if forward else ""
        out.append(f'[[cameras]]\nname = "f{i}"\npath = "f/{i}"\nsource = "file://{clip}"\n{fwd}')
    return "\n".join(out)


async def forward_case(clip: Path, n: int, seconds: float, tmp: Path) -> None:
    rtsp, rtmp = Sink(), Sink()
    s1 = await asyncio.start_server(lambda r, w: rtsp_sink(r, w, rtsp), "127.0.0.1", 0)
    s2 = await asyncio.start_server(lambda r, w: rtmp_sink(r, w, rtmp), "127.0.0.1", 0)
    rtsp_port = s1.sockets[0].getsockname()[1]
    rtmp_port = s2.sockets[0].getsockname()[1]
    urls = {
        "rtsp": f"rtsp://127.0.0.1:{rtsp_port}/in/{{i}}",
        "rtmp": f"rtmp://127.0.0.1:{rtmp_port}/live/s{{i}}",
    }
    sinks = {"rtsp": rtsp, "rtmp": rtmp}
    rows: list[str] = []
    # baseline: the same cameras, nobody reading
    p, _info, _log = start_server(tmp / "fwd-base", cameras_toml(clip, n))
    try:
        await asyncio.sleep(3)
        c0 = cpu_seconds(p.pid)
        await asyncio.sleep(seconds)
        base = (cpu_seconds(p.pid) - c0) / seconds
    finally:
        stop(p)
    for proto in ("rtsp", "rtmp"):
        sink = sinks[proto]
        # onvifcam's own forwarders
        sink.sessions = 0
        p, _info, _log = start_server(tmp / f"fwd-{proto}", cameras_toml(clip, n, urls[proto]))
        try:
            await wait_sessions(sink, n)
            await asyncio.sleep(2)
            cpu, gbit = await window([p.pid], sink, seconds)
            extra = cpu - base * seconds
            rows.append(
                f"    {proto}: onvifcam forward  {gbit / seconds * 1000:7.1f} Mbit/s, "
                f"{100 * cpu / seconds:5.1f} % CPU ({100 * base:.1f} % baseline): "
                f"{extra / gbit:.2f} CPU-s per forwarded Gbit"
            )
        finally:
            stop(p)
        # ffmpeg -c copy reading each camera over RTSP and pushing the same way
        sink.sessions = 0
        p, info, _log = start_server(tmp / f"fwd-{proto}-ff", cameras_toml(clip, n))
        ffs: list[subprocess.Popen[bytes]] = []
        try:
            port = int(info["rtsp_port"])
            for i in range(n):
                dest = urls[proto].format(i=i)
                fmt = ["-f", "rtsp", "-rtsp_transport", "tcp"] if proto == "rtsp" else ["-f", "flv"]
                cmd = ["taskset", "-c", str(SERVER_CPU), "ffmpeg", "-hide_banner", "-nostdin"]
                cmd += ["-loglevel", "error", "-rtsp_transport", "tcp"]
                cmd += ["-i", f"rtsp://127.0.0.1:{port}/f/{i}", "-c", "copy", *fmt, dest]
                f = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
                PROCS.append(f)
                ffs.append(f)
            await wait_sessions(sink, n)
            await asyncio.sleep(2)
            c_server0 = cpu_seconds(p.pid)
            cpu, gbit = await window([f.pid for f in ffs], sink, seconds)
            served = cpu_seconds(p.pid) - c_server0 - base * seconds
            rows.append(
                f"    {proto}: ffmpeg -c copy    {gbit / seconds * 1000:7.1f} Mbit/s, "
                f"{100 * cpu / seconds:5.1f} % CPU in {n} ffmpeg: {cpu / gbit:.2f} CPU-s per "
                f"forwarded Gbit (+ {served / gbit:.2f} in onvifcam serving their reads)"
            )
        finally:
            for f in ffs:
                stop(f)
            stop(p)
    s1.close()
    s2.close()
    print(f"(c) forwarding {n} cameras (2 Mbit/s 1080p + AAC each), {seconds:g} s windows:")
    print("\n".join(rows), flush=True)


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="onvifcam-bench-sources-") as d:
        tmp = Path(d)
        clip = make_clip(tmp)
        if "a" in args.cases:
            for n in args.cameras:
                await fleet_case(clip, n, args.seconds, tmp)
        if "b" in args.cases:
            await failover_case()
        if "c" in args.cases and args.forward:
            await forward_case(clip, args.forward, args.seconds, tmp)
        if "d" in args.cases:
            for n in args.cameras:
                await idle_case(clip, n, args.seconds, tmp, args.peer)


@contextlib.contextmanager
def cleanup() -> Iterator[None]:
    try:
        yield
    finally:
        for p in list(PROCS):
            stop(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cameras", default="100", help="fleet sizes, comma separated (500: the target)"
    )
    ap.add_argument("--forward", type=int, default=20, help="cameras forwarded in (c); 0: skip")
    ap.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    ap.add_argument("--onvif", action="store_true", help="serve ONVIF for every camera too")
    ap.add_argument("--cases", default="abc", help="which of a, b, c, d to run")
    ap.add_argument(
        "--peer", type=int, default=20, help="ffmpeg -re -stream_loop pushers in (d); 0: skip"
    )
    ap.add_argument("--stall-ms", type=int, default=20, help="server loop_stall_warn_ms")
    ap.add_argument("--turn-ms", type=int, default=0, help="server [sources] file_turn_ms")
    args = ap.parse_args()
    args.cameras = [int(x) for x in args.cameras.split(",") if x]
    global ONVIF, STALL_MS, TURN_MS
    ONVIF = args.onvif
    STALL_MS = args.stall_ms
    TURN_MS = args.turn_ms
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    pin_and_use_uvloop(LOAD_CPU)
    with cleanup():
        asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
