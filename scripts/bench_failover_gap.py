#!/usr/bin/env python3
"""Failover gap: what a reader sees when a camera's primary encoder is killed.

One ``onvifcam serve`` with a camera ``fo`` (``primary = "fo-p"``, ``backup = "fo-b"``), two
ffmpeg encoders pushing the two paths over RTSP, and a raw RTSP reader of ``fo`` (the
project's own client, TCP interleaved) that timestamps every RTP packet as it arrives. The
primary encoder is killed with SIGKILL; the figures are the longest RTP arrival gap around
the kill (expected: about ``failover_after``), the time from the kill to the first backup
packet, and, after the primary is restarted, the longest gap around the failback (expected:
no more than a frame interval, since the backup plays until the primary's keyframe). SSRC
changes and reconnects of the reader must be 0.

Run alone: ``python scripts/bench_failover_gap.py [--failover-after 3] [--failback-after 5]``.
``scripts/bench_sources.py`` imports :func:`measure_failover_gap`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onvifcam.rtsp.client import RtspPuller  # noqa: E402
from tests.helpers import ServerProc, ffmpeg_push, stop_process, wait_online  # noqa: E402


class _Reader:
    """A raw RTSP reader in its own thread and event loop: RTP arrival times and SSRCs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.arrivals: list[float] = []
        self.ssrcs: list[int] = []
        self.error = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Future[None] | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()

    def _rtp(self, track: int, packet: bytes) -> None:
        if track == 0 and len(packet) >= 12:
            self.arrivals.append(time.monotonic())
            ssrc = struct.unpack_from("!I", packet, 8)[0]
            if not self.ssrcs or self.ssrcs[-1] != ssrc:
                self.ssrcs.append(ssrc)

    async def _main(self) -> None:
        client = RtspPuller(self.url, on_rtp=self._rtp, timeout=10)
        try:
            await client.open()
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.ensure_future(client.run(3600))
            self._ready.set()
            await self._task
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            self.error = str(exc)
        finally:
            self._ready.set()
            await client.close()

    def stop(self) -> None:
        self._ready.wait(15)
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)


def _max_gap(times: list[float], start: float, end: float) -> float:
    window = [t for t in times if start <= t <= end]
    return max((b - a for a, b in itertools.pairwise(window)), default=0.0)


def measure_failover_gap(
    failover_after: float = 3.0,
    failback_after: float = 5.0,
    fps: int = 25,
    gop: int = 25,
    settle: float = 3.0,
    failback: bool = True,
) -> dict[str, float | int | str]:
    """Kill the primary encoder of a primary/backup camera and measure what a raw RTSP
    reader sees (milliseconds); with ``failback`` also restart it and measure the return."""
    cfg = (
        '[[cameras]]\nname = "fo"\npath = "fo"\nprimary = "fo-p"\nbackup = "fo-b"\n'
        f"[sources]\nfailover_after = {failover_after}\nfailback_after = {failback_after}\n"
    )
    srv = ServerProc(cfg).start()
    push = {"frames": fps * 3600, "fps": fps, "gop": gop, "audio": False}
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(ffmpeg_push(srv.url("fo-p"), **push))  # type: ignore[arg-type]
        procs.append(ffmpeg_push(srv.url("fo-b"), **push))  # type: ignore[arg-type]
        wait_online(srv.url("fo"))
        wait_online(srv.url("fo-b"))
        reader = _Reader(srv.url("fo"))
        time.sleep(settle)
        killed = time.monotonic()
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        time.sleep(failover_after + settle)
        out: dict[str, float | int | str] = {
            "failover_after_s": failover_after,
            "fps": fps,
            "failover_max_gap_ms": round(
                _max_gap(reader.arrivals, killed - 1, time.monotonic()) * 1000, 1
            ),
            "kill_to_backup_ms": round(
                (next((t for t in reader.arrivals if t > killed + 0.1), killed) - killed) * 1000,
                1,
            ),
        }
        if failback:
            restarted = time.monotonic()
            procs[0] = ffmpeg_push(srv.url("fo-p"), **push)  # type: ignore[arg-type]
            time.sleep(failback_after + settle + 2)
            out["failback_after_s"] = failback_after
            out["failback_max_gap_ms"] = round(
                _max_gap(reader.arrivals, restarted, time.monotonic()) * 1000, 1
            )
            out["switches_logged"] = srv.log().count("failover fo: switched")
        reader.stop()
        out["reader_ssrc_changes"] = len(reader.ssrcs) - 1
        out["reader_error"] = reader.error
        out["normal_gap_ms"] = round(1000 / fps, 1)
        return out
    finally:
        for p in procs:
            stop_process(p)
        srv.stop(check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--failover-after", type=float, default=3.0)
    ap.add_argument("--failback-after", type=float, default=5.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--gop", type=int, default=25)
    ap.add_argument("--no-failback", action="store_true")
    a = ap.parse_args()
    res = measure_failover_gap(
        a.failover_after, a.failback_after, a.fps, a.gop, failback=not a.no_failback
    )
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
