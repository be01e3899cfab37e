"""onvifcam.aio: a stop of a task that loops over timed reads is never lost, and a task that
will not stop does not hold up whoever stops it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from onvifcam.aio import cancel_and_wait, within


def _cancel_as_the_read_completes(timed: Callable[[Awaitable[int], float], Awaitable[int]]) -> str:
    """A task awaits ``timed(read, 10)``; the read completes and the task is cancelled in
    the same loop turn (what a shutdown does to a puller that is receiving media)."""

    async def main() -> str:
        loop = asyncio.get_running_loop()
        read: asyncio.Future[int] = loop.create_future()

        async def worker() -> str:
            await timed(read, 10)
            return "ran on after its cancellation"

        task = asyncio.create_task(worker())
        await asyncio.sleep(0)  # the worker waits for the read
        read.set_result(1)
        task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return "cancelled"

    return asyncio.run(main())


def test_within_keeps_a_cancellation_that_coincides_with_the_result() -> None:
    assert _cancel_as_the_read_completes(within) == "cancelled"


@pytest.mark.skipif(
    not hasattr(asyncio, "timeout") or __import__("sys").version_info >= (3, 12),
    reason="the lost cancellation is Python 3.11's wait_for",
)
def test_python_311_wait_for_loses_it() -> None:
    """Why onvifcam.aio exists (and ruff bans asyncio.wait_for in the package)."""
    wait_for: Any = getattr(asyncio, "wait_for")  # noqa: B009 (the banned name, on purpose)
    assert _cancel_as_the_read_completes(wait_for) == "ran on after its cancellation"


def test_within_times_out() -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError):
            await within(asyncio.sleep(5), 0.01)

    asyncio.run(main())


def test_cancel_and_wait_gives_up_on_a_task_that_will_not_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = False

    async def stubborn() -> None:
        while not release:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    async def main() -> bool:
        nonlocal release
        task = asyncio.create_task(stubborn(), name="stubborn-source")
        await asyncio.sleep(0)
        await cancel_and_wait(task, grace=0.05)
        still_running = not task.done()
        release = True
        await task
        return still_running

    with caplog.at_level(logging.WARNING, logger="onvifcam.aio"):
        assert asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records]
    assert any("stubborn-source did not stop within 0.05 s" in m for m in lines), lines


def test_cancel_and_wait_raises_what_the_task_ended_with() -> None:
    async def failing() -> None:
        try:
            await asyncio.sleep(5)
        finally:
            raise ValueError("cleanup failed")

    async def main() -> None:
        task = asyncio.create_task(failing())
        await asyncio.sleep(0)
        with pytest.raises(ValueError, match="cleanup failed"):
            await cancel_and_wait(task)
        await cancel_and_wait(None)

    asyncio.run(main())
