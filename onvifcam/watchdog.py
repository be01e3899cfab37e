"""Loop-stall watchdog: notices when something blocks the asyncio event loop, and says where.

Nothing that can block may run on the loop (one blocked call stops RTSP, RTMP, ONVIF and
discovery at once). The loop runs a heartbeat callback every ``interval``; a daemon thread
checks that the heartbeat keeps coming. When it has been late by more than ``threshold``, the
thread logs ONE warning with the loop thread's stack at that moment (taken with
``sys._current_frames()``, so it shows the blocking call), and one info line with the total
duration once the loop runs again. ``stats()`` counts the stalls.

A call that blocks while holding the GIL (rare: most blocking C calls release it) also stops
this thread; the stall is then reported, with its full length, when the call returns.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable

log = logging.getLogger(__name__)


class LoopWatchdog:
    """Watches one event loop from a thread; start it on the loop, stop it on the loop."""

    def __init__(
        self,
        threshold: float,
        *,
        setting: str = "[server] loop_stall_warn_ms",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold <= 0:
            raise ValueError("threshold must be positive")
        self.threshold = threshold
        self.setting = setting
        self.interval = min(0.1, threshold / 4)  # heartbeat period on the loop
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._handle: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_beat = 0.0
        self._in_stall = False
        self._stall_started = 0.0
        self.stalls = 0
        self.longest = 0.0
        self.total = 0.0
        self.checks = 0

    # ------------------------------------------------------------------ loop side
    def start(self) -> None:
        """Start beating on the running loop and watching from a thread."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._last_beat = self._clock()
        self._stop = stop = threading.Event()  # each thread gets its own, so a restart is clean
        self._handle = self._loop.call_later(self.interval, self._beat)
        self._thread = threading.Thread(
            target=self._watch, args=(stop,), name="onvifcam-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat and the thread (returns at once; the thread ends by itself)."""
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._thread = None

    def _beat(self) -> None:
        self._last_beat = self._clock()
        if self._loop is not None and not self._stop.is_set():
            self._handle = self._loop.call_later(self.interval, self._beat)

    # ------------------------------------------------------------------ thread side
    def _watch(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            if self._loop is not None and self._loop.is_closed():
                return  # the loop ended without stop(): nothing left to watch
            self.check()

    def check(self) -> None:
        """One look at the heartbeat (the thread calls this every few tens of ms)."""
        self.checks += 1
        now = self._clock()
        late = now - self._last_beat - self.interval
        if late > self.threshold:
            if not self._in_stall:
                self._in_stall = True
                self._stall_started = self._last_beat + self.interval
                self.stalls += 1
                log.warning(
                    "event loop stalled: blocked for %.0f ms (threshold %s = %.0f); every "
                    "server waits meanwhile. The loop thread is at:\n%s",
                    late * 1000,
                    self.setting,
                    self.threshold * 1000,
                    self._loop_stack(),
                )
        elif self._in_stall:
            self._in_stall = False
            took = max(0.0, self._last_beat - self._stall_started)
            self.longest = max(self.longest, took)
            self.total += took
            log.info("event loop runs again after a stall of %.0f ms", took * 1000)

    def _loop_stack(self) -> str:
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return "  (loop thread not found)"
        return "".join(traceback.format_stack(frame)).rstrip()

    def stats(self) -> dict[str, float]:
        """Stalls seen, the longest and total stalled time (seconds), and whether one lasts."""
        return {
            "stalls": self.stalls,
            "longest_s": round(self.longest, 3),
            "total_s": round(self.total, 3),
            "stalled_now": 1 if self._in_stall else 0,
            "threshold_s": self.threshold,
        }
