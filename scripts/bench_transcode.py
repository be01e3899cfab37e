"""Transcoded sub stream cost: server CPU share for a 1080p25 H.264 and an H.265 main made
into a 640x360 H.264 sub (sub_stream = "transcode", one reader), beside ffmpeg doing the
same (``ffmpeg -i main -s 640x360 -c:v libx264 -preset ultrafast``).

For each codec: a 1080p25 test pattern is encoded once to a file, which ffmpeg then
pushes in real time with -c copy (no encoder competing with the server). The server's CPU (/proc)
is measured over ``--seconds`` with one reader of the main stream ("relay"), then with that
reader and one of PATH/sub ("+sub"); "transcode" is the difference. Then an ffmpeg reader
transcodes the main stream to 640x360 and its own CPU is measured. Every reader counts the
video frames it receives in the window ("main fps": what arrived of the pushed main,
"sub fps": what the sub delivered, "ff fps": what ffmpeg's transcode put out), so a CPU
figure can be read against the work actually done (a pusher or transcoder that falls behind
real time on a loaded machine shows here, not as a lower CPU share).

    python scripts/bench_transcode.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench_common import cpu_seconds, stop_process
from tests.helpers import FFMPEG, ServerProc, wait_online

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


class Reader:
    """An ffmpeg reader of ``url`` (copying, or transcoding to 640x360 like the sub) that
    prints one framecrc line per video frame it receives; a thread stamps each one, so the
    frames that arrived in any window can be counted."""

    def __init__(self, url: str, transcode: bool = False) -> None:
        cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp"]
        cmd += ["-i", url, "-map", "0:v"]
        if transcode:
            cmd += ["-s", "640x360", "-c:v", "libx264", "-preset", "ultrafast"]
        else:
            cmd += ["-c", "copy"]
        cmd += ["-f", "framecrc", "-"]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.stamps: list[float] = []
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line[:1].isdigit():
                self.stamps.append(time.monotonic())

    def fps(self, t0: float, t1: float) -> float:
        """Video frames received per second between ``t0`` and ``t1``."""
        return sum(1 for t in list(self.stamps) if t0 <= t < t1) / (t1 - t0)

    def stop(self) -> None:
        """End ffmpeg."""
        stop_process(self.proc)
        self._pump.join(5)


def measure(pid: int, seconds: float) -> tuple[float, float, float]:
    """CPU share (cores) of ``pid`` over a window of ``seconds`` after 2 s of warm-up, and
    the window's bounds."""
    time.sleep(2.0)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    return (c1 - c0) / (t1 - t0), t0, t1


def clip(codec: str, directory: Path, seconds: int = 20) -> Path:
    """A 1080p25 clip encoded once beforehand, so that pushing it costs no encoding (a live
    1080p x265 encode does not keep up on a 2-core machine, and it competed with the server)."""
    path = directory / f"main-{codec}.mkv"
    x265 = ["-x265-params", "log-level=error:bframes=0"] if codec == "libx265" else []
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc2=size=1920x1080:rate=25:duration={seconds}",
         "-c:v", codec, "-preset", "ultrafast", "-g", "50", "-bf", "0", *x265,
         "-pix_fmt", "yuv420p", str(path)],
        check=True, timeout=600,
    )  # fmt: skip
    return path


def run(codec: str, seconds: float) -> dict[str, float]:
    """Figures for one main codec: the server with one main reader (relay only), then with
    a main and a sub reader; then an ffmpeg reader transcoding the main to 640x360."""
    with tempfile.TemporaryDirectory() as state:
        source = clip(codec, Path(state))  # looped by the pusher
        srv = ServerProc(config=CONFIG, extra_args=["--state-dir", state]).start()
        push = subprocess.Popen(
            [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
             "-i", str(source), "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp",
             srv.url("main")],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        out: dict[str, float] = {}
        try:
            wait_online(srv.url("main"), timeout=30)
            pid = srv.proc.pid
            main = Reader(srv.url("main"))
            out["relay_only"], t0, t1 = measure(pid, seconds)
            out["main_fps_relay"] = main.fps(t0, t1)
            sub = Reader(srv.url("main/sub"))
            out["with_sub"], t0, t1 = measure(pid, seconds)
            out["main_fps"], out["sub_fps"] = main.fps(t0, t1), sub.fps(t0, t1)
            sub.stop()
            main.stop()
            ff = Reader(srv.url("main"), transcode=True)
            out["ffmpeg"], t0, t1 = measure(ff.proc.pid, seconds)
            out["ffmpeg_fps"] = ff.fps(t0, t1)
            ff.stop()
        finally:
            stop_process(push)
            srv.stop(check=False)
    out["transcode"] = out["with_sub"] - out["relay_only"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    cols = ("relay", "main fps", "+sub", "main fps", "sub fps", "transcode", "ffmpeg", "ff fps")
    print(f"{'main':<14}" + "".join(f"{c:>10}" for c in cols))
    for name, codec in (("H.264 1080p25", "libx264"), ("H.265 1080p25", "libx265")):
        r = run(codec, a.seconds)
        cpu = ("relay_only", "with_sub", "transcode", "ffmpeg")
        print(
            f"{name:<14}"
            + "".join(
                f"{r[k]:>10.0%}" if k in cpu else f"{r[k]:>10.1f}"
                for k in (
                    "relay_only",
                    "main_fps_relay",
                    "with_sub",
                    "main_fps",
                    "sub_fps",
                    "transcode",
                    "ffmpeg",
                    "ffmpeg_fps",
                )
            ),
            flush=True,
        )
    print(
        f"(CPU: share of one core, server process via /proc; {os.cpu_count()} cores. fps:"
        " video frames the readers received in the same window)"
    )


if __name__ == "__main__":
    main()
