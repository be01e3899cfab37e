"""Transcoded sub stream cost: server CPU share for a 1080p25 H.264 and an H.265 main made
into a 640x360 H.264 sub (sub_stream = "transcode", one reader), beside ffmpeg doing the
same (``ffmpeg -i main -s 640x360 -c:v libx264 -preset ultrafast``).

For each codec: ffmpeg pushes a 1080p25 test pattern to a server, one ffmpeg reader reads
PATH/sub for ``--seconds``; the server's CPU (/proc) is measured over that window, minus
the same window with a reader of the main stream only (the relay's own share). Then an
ffmpeg reader transcodes the main stream to 640x360 and its own CPU is measured.

    python scripts/bench_transcode.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench_common import cpu_seconds, stop_process
from tests.helpers import FFMPEG, ServerProc, ffmpeg_push, wait_online

CONFIG = """
[server]
host = "127.0.0.1"
rtsp_port = 0
rtmp_port = 0
http_port = 0

[rtsp]
rtp_port = 0

[onvif]
port_range_start = 0
port_range_end = 0
address_port = 0

[[cameras]]
name = "Main"
path = "main"
sub_stream = "transcode"
auth = false
"""


def reader(url: str, seconds: float, transcode: bool = False) -> subprocess.Popen[str]:
    """ffmpeg reading ``url`` for ``seconds`` (copying, or transcoding to 640x360)."""
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", url]
    cmd += ["-t", str(seconds)]
    if transcode:
        cmd += ["-s", "640x360", "-c:v", "libx264", "-preset", "ultrafast", "-f", "null", "-"]
    else:
        cmd += ["-c", "copy", "-f", "null", "-"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def measure(pid: int, proc: subprocess.Popen[str], seconds: float) -> float:
    """CPU share (cores) of ``pid`` while ``proc`` runs (after 2 s of warm-up)."""
    time.sleep(2.0)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds - 3.0)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    stop_process(proc)  # a reader behind real time would run on past the window
    return (c1 - c0) / (t1 - t0)


def run(codec: str, seconds: float) -> dict[str, float]:
    """Figures for one main codec."""
    with tempfile.TemporaryDirectory() as state:
        srv = ServerProc(config=CONFIG, extra_args=["--state-dir", state]).start()
        extra = ["-preset", "ultrafast", "-tune", "zerolatency"]
        if codec == "libx265":
            extra += ["-x265-params", "log-level=error:bframes=0"]
        push = ffmpeg_push(
            srv.url("main"),
            frames=10_000_000,
            size="1920x1080",
            gop=50,
            audio=False,
            codec=codec,
            extra=extra if codec == "libx265" else None,
        )
        try:
            wait_online(srv.url("main"), timeout=30)
            pid = srv.proc.pid
            relay = measure(pid, reader(srv.url("main"), seconds), seconds)
            sub = measure(pid, reader(srv.url("main/sub"), seconds), seconds)
            ff = reader(srv.url("main"), seconds, transcode=True)
            ffmpeg_share = measure(ff.pid, ff, seconds)
        finally:
            stop_process(push)
            srv.stop(check=False)
    return {"relay_only": relay, "with_sub": sub, "transcode": sub - relay, "ffmpeg": ffmpeg_share}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    print(f"{'main':<14}{'relay only':>12}{'with sub':>12}{'transcode':>12}{'ffmpeg':>12}")
    for name, codec in (("H.264 1080p25", "libx264"), ("H.265 1080p25", "libx265")):
        r = run(codec, a.seconds)
        print(
            f"{name:<14}{r['relay_only']:>11.0%} {r['with_sub']:>11.0%} "
            f"{r['transcode']:>11.0%} {r['ffmpeg']:>11.0%}",
            flush=True,
        )
    print(f"(CPU share of one core; {os.cpu_count()} cores; server process via /proc)")


if __name__ == "__main__":
    main()
