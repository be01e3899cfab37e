"""SRT ingest cost: N ffmpeg SRT publishers (-c copy of a ~4 Mbit/s 1080p TS), CPU per
ingested Gbit of

* onvifcam (the whole server: SRT -> MPEG-TS demux -> packetizer -> stream, no readers),
* onvifcam's SRT listener alone (payloads discarded: the pure-Python protocol core),
* srt-live-transmit (libsrt, C++), one listener per publisher writing to /dev/null.

The servers run pinned to one core, the publishers on the other; CPU time comes from
/proc. Needs ffmpeg and srt-live-transmit (``bash scripts/dev.sh bench-deps``).

    .venv/bin/python scripts/bench_srt.py [--publishers 10] [--seconds 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_seconds, free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU, LOAD_CPU = 0, 1

NULL_LISTENER = """
import asyncio, sys
from onvifcam import config
from onvifcam.auth.gate import Gate
from onvifcam.srt.server import SrtServer

class Null:
    def feed(self, payloads): pass
    def close(self, reason): pass

async def main():
    cfg = config.from_dict({"srt": {"port": 0}, "server": {"host": "127.0.0.1"}})
    srv = SrtServer(cfg, Gate(cfg), lambda path, pub: Null())
    await srv.start()
    print(f"ready srt_port={srv.port}", flush=True)
    await asyncio.Event().wait()

try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


def fixture(path: Path, seconds: int = 20) -> None:
    """1080p30 H.264 (~3.9 Mbit/s, noisy so the rate is real) + AAC 96k as MPEG-TS."""
    if path.exists():
        return
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-vf", "noise=alls=12:allf=t",
         "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "3900k", "-maxrate", "3900k",
         "-bufsize", "3900k", "-g", "60", "-bf", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "96k", "-f", "mpegts", str(path)],
        check=True, timeout=600,
    )  # fmt: skip


def duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
         str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(out.strip())


@contextlib.contextmanager
def publishers(src: Path, urls: list[str]) -> Iterator[list[subprocess.Popen[str]]]:
    procs = [
        subprocess.Popen(
            [
                "taskset",
                "-c",
                str(LOAD_CPU),
                "ffmpeg",
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-re",
                "-stream_loop",
                "-1",
                "-i",
                str(src),
                "-c",
                "copy",
                "-f",
                "mpegts",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for url in urls
    ]
    try:
        yield procs
    finally:
        for p in procs:
            stop_process(p)


def measure(pids: list[int], warmup: float, seconds: float) -> float:
    """CPU seconds of ``pids`` over ``seconds`` after ``warmup``."""
    time.sleep(warmup)
    before = sum(cpu_seconds(p) for p in pids)
    time.sleep(seconds)
    return sum(cpu_seconds(p) for p in pids) - before


def start_ready(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> tuple:
    logf = open(log, "w")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logf, text=True, cwd=ROOT, env=env)
    assert p.stdout is not None
    line = p.stdout.readline()
    m = re.search(r"srt_port=(\d+)", line)
    if m is None:
        stop_process(p)
        raise RuntimeError(f"{cmd[3:6]} did not start: {line!r}\n{log.read_text()[-2000:]}")
    return p, int(m.group(1)), logf


def run_onvifcam(tmp: Path, src: Path, n: int, warmup: float, seconds: float) -> float:
    cfg = tmp / "onvifcam.toml"
    cfg.write_text(
        '[server]\nhost = "127.0.0.1"\nrtsp_port = 0\nrtmp_port = 0\nhttp_port = 0\n'
        'log_level = "info"\n[onvif]\nenabled = false\n'
        "[rtsp]\nrtp_port = 0\nudp = false\nmulticast = false\n"
        "[discovery]\nenabled = false\n[srt]\nport = 0\n"
    )
    log = tmp / "onvifcam.log"
    p, port, logf = start_ready(
        ["taskset", "-c", str(SERVER_CPU), sys.executable, "-m", "onvifcam", "serve",
         "--config", str(cfg), "--state-dir", str(tmp / "state")],
        log,
    )  # fmt: skip
    try:
        urls = [
            f"srt://127.0.0.1:{port}?streamid=publish:bench{i}&latency=200000" for i in range(n)
        ]
        with publishers(src, urls):
            cpu = measure([p.pid], warmup, seconds)
            published = log.read_text().count("publishing from srt://")
    finally:
        stop_process(p, timeout=15)
        logf.close()
    text = log.read_text()
    lost = sum(int(x) for x in re.findall(r"packets, \d+ lost, \d+ recovered, (\d+) dropped", text))
    if published != n:
        print(f"  warning: {published} of {n} streams were published", file=sys.stderr)
    if lost:
        print(f"  warning: {lost} packets dropped too late", file=sys.stderr)
    return cpu


def run_null_listener(tmp: Path, src: Path, n: int, warmup: float, seconds: float) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p, port, logf = start_ready(
        ["taskset", "-c", str(SERVER_CPU), sys.executable, "-c", NULL_LISTENER],
        tmp / "null.log",
        env,
    )
    try:
        urls = [
            f"srt://127.0.0.1:{port}?streamid=publish:bench{i}&latency=200000" for i in range(n)
        ]
        with publishers(src, urls):
            return measure([p.pid], warmup, seconds)
    finally:
        stop_process(p)
        logf.close()


def run_srt_live_transmit(tmp: Path, src: Path, n: int, warmup: float, seconds: float) -> float:
    ports = [free_port() for _ in range(n)]
    procs = [
        subprocess.Popen(
            [
                "taskset",
                "-c",
                str(SERVER_CPU),
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
        time.sleep(1.0)
        urls = [f"srt://127.0.0.1:{port}?latency=200000" for port in ports]
        with publishers(src, urls):
            return measure([p.pid for p in procs], warmup, seconds)
    finally:
        for p in procs:
            stop_process(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--publishers", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    args = ap.parse_args()
    cache = Path(tempfile.gettempdir()) / "onvifcam-bench"
    cache.mkdir(exist_ok=True)
    src = cache / "srt-4mbit-1080p.ts"
    fixture(src)
    mbit = src.stat().st_size * 8 / duration(src) / 1e6
    n, secs = args.publishers, args.seconds
    gbit = mbit * n * secs / 1000
    print(f"{n} publishers x {mbit:.2f} Mbit/s for {secs:g} s = {gbit:.2f} Gbit ingested")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-srt-") as d:
        tmp = Path(d)
        for name, fn in (
            ("onvifcam (SRT + TS demux + packetizer + stream)", run_onvifcam),
            ("onvifcam SRT listener only (payloads discarded)", run_null_listener),
            ("srt-live-transmit x N (libsrt, to /dev/null)", run_srt_live_transmit),
        ):
            cpu = fn(tmp, src, n, args.warmup, secs)
            rows.append((name, cpu))
            print(
                f"  {name}: {100 * cpu / secs:.1f} % of a core, {cpu / gbit:.3f} CPU-s/Gbit",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
