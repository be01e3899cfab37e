"""onvifcam.watchdog: a loop blocked in the test is reported once, with the blocking frame."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from onvifcam.watchdog import LoopWatchdog


class _Seen(logging.Handler):
    """Collects the watchdog's records; ``stalled`` is set by the first stall warning."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.stalled = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if "event loop stalled" in record.getMessage():
            self.stalled.set()


def _loops() -> list[Callable[[], asyncio.AbstractEventLoop]]:
    out: list[Callable[[], asyncio.AbstractEventLoop]] = [asyncio.new_event_loop]
    try:
        import uvloop
    except ImportError:
        return out
    return [*out, uvloop.new_event_loop]


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(3000):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never came true")


@pytest.mark.parametrize("new_loop", _loops())
def test_blocked_loop_is_reported_once_with_the_blocking_stack(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    seen = _Seen()
    logger = logging.getLogger("onvifcam.watchdog")
    logger.addHandler(seen)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    wd = LoopWatchdog(0.05, setting="[server] loop_stall_warn_ms")

    def block_the_loop_deliberately() -> None:
        # Blocks until the watchdog has reported the stall, then for a few more of its
        # checks, to show that a long stall gives one warning, not one per check.
        assert seen.stalled.wait(60), "the watchdog never reported the blocked loop"
        checks = wd.checks
        while wd.checks < checks + 5:
            time.sleep(0.01)

    async def main() -> None:
        wd.start()
        thread = wd._thread
        assert thread is not None
        await asyncio.sleep(0)
        block_the_loop_deliberately()
        await _until(lambda: wd.stats()["stalled_now"] == 0)
        wd.stop()
        thread.join(10)
        assert not thread.is_alive()

    loop = new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
        logger.removeHandler(seen)
        logger.setLevel(old_level)
    warnings = [r for r in seen.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "[server] loop_stall_warn_ms" in text
    assert "in block_the_loop_deliberately" in text
    assert "time.sleep(0.01)" in text or "seen.stalled.wait(60)" in text
    assert any("runs again after a stall" in r.getMessage() for r in seen.records)
    stats = wd.stats()
    assert stats["stalls"] == 1
    assert stats["stalled_now"] == 0
    assert stats["longest_s"] > 0.05


def test_loop_blocked_opening_a_fifo_is_reported_and_can_be_freed(tmp_path: Path) -> None:
    """The bug this watchdog exists for: libxml2 blocked in open() of a FIFO on the loop.

    lxml releases the GIL while libxml2 works, so the watchdog sees the stall; the test
    then lets the open() finish by opening the FIFO's write end.
    """
    fifo = tmp_path / "subset.dtd"
    os.mkfifo(fifo)
    # collect_ids=False is the option that made libxml2 load the external subset
    parser = etree.XMLParser(load_dtd=False, no_network=True, collect_ids=False)
    seen = _Seen()
    logger = logging.getLogger("onvifcam.watchdog")
    logger.addHandler(seen)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    wd = LoopWatchdog(0.05)

    def free_the_loop() -> None:
        seen.stalled.wait(60)  # then free it anyway, or a broken watchdog hangs the test
        with contextlib.suppress(OSError):  # ENXIO: nobody opened it
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    async def main() -> None:
        wd.start()
        helper = threading.Thread(target=free_the_loop, daemon=True)
        helper.start()
        await asyncio.sleep(0)
        etree.fromstring(f'<!DOCTYPE a SYSTEM "file://{fifo}"><a/>'.encode(), parser)
        helper.join(10)
        wd.stop()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
        logger.removeHandler(seen)
        logger.setLevel(old_level)
    warnings = [r.getMessage() for r in seen.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "etree.fromstring" in warnings[0]
    assert wd.stats()["stalls"] == 1


def test_thread_ends_when_the_loop_closes_without_stop() -> None:
    wd = LoopWatchdog(0.05)

    async def main() -> threading.Thread:
        wd.start()
        assert wd._thread is not None
        return wd._thread

    loop = asyncio.new_event_loop()
    thread = loop.run_until_complete(main())
    loop.close()
    thread.join(30)
    assert not thread.is_alive()


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LoopWatchdog(0)
