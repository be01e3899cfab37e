"""asyncio helpers every layer shares: a timeout that never loses a cancellation, and
cancelling a task with a bound on how long its unwinding may take."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


async def within(aw: Awaitable[T], seconds: float | None) -> T:
    """``await aw`` for at most ``seconds`` (``TimeoutError`` after; None: no limit).

    Use this, not ``asyncio.wait_for``: on Python 3.11, when the awaited thing finishes at the
    moment the caller is cancelled, ``wait_for`` returns its result and the cancellation is
    lost, so a task looping over ``wait_for(read(), t)`` could not be stopped (a server
    shutdown that waited for it hung). ``asyncio.timeout`` keeps the cancellation.
    """
    async with asyncio.timeout(seconds):
        return await aw


async def cancel_and_wait(task: asyncio.Task[Any] | None, *, grace: float = 10.0) -> None:
    """Cancel ``task`` (when there is one) and wait until it has finished unwinding; an
    exception it ended with (other than the cancellation) is raised here.

    A task still running ``grace`` s later is left behind with one warning naming it and
    where it is stuck, so a stop (a server shutdown) never waits for good. A cancellation of
    the caller itself is never swallowed.
    """
    if task is None:
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        task.cancel()
        where = io.StringIO()
        task.print_stack(limit=6, file=where)
        log.warning(
            "task %s did not stop within %g s of being cancelled; going on without it; it "
            "was at:\n%s",
            task.get_name(),
            grace,
            where.getvalue().rstrip(),
        )
        return
    if not task.cancelled():
        task.result()
