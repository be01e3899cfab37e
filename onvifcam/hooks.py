"""Hooks: run a command or POST a webhook when a stream becomes ready or not, a reader comes
or goes, a source fails or a forward errs (``[[hooks]]`` in the configuration).

The hooks read the event bus through one bounded queue (a full queue drops its oldest event
and counts it), so a slow hook never holds up the producer. At most ``[limits]
hook_concurrency`` hooks run at once; each is killed (command, with its process group) or
abandoned (webhook) after its ``timeout``. Commands run through ``asyncio`` subprocesses,
webhooks through one aiohttp client session: nothing blocks the loop. A failure is logged in
one line and counted in :meth:`Hooks.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import aiohttp

from onvifcam.config import HookConfig
from onvifcam.events import (
    Event,
    EventBus,
    EventQueue,
    ForwardError,
    ReaderConnected,
    ReaderDisconnected,
    SourceFailed,
    StreamPublished,
    StreamUnpublished,
)

log = logging.getLogger(__name__)

#: hook event name -> bus event type
KINDS: dict[str, type[Event]] = {
    "stream_ready": StreamPublished,
    "stream_not_ready": StreamUnpublished,
    "reader_connected": ReaderConnected,
    "reader_disconnected": ReaderDisconnected,
    "source_failed": SourceFailed,
    "forward_error": ForwardError,
}
_NAMES = {v: k for k, v in KINDS.items()}
_STDERR_TAIL = 300  # bytes of a failing command's stderr put in the log line
_ENV_KEY = re.compile(r"[^A-Z0-9_]")


def payload(event: Event, camera: str) -> dict[str, Any]:
    """The JSON body of a webhook (and the source of a command's environment)."""
    fields = asdict(event)
    at = fields.pop("at")
    path = str(fields.pop("path", ""))
    return {
        "event": _NAMES[type(event)],
        "path": path,
        "camera": camera,
        "time": at,
        "details": {k: v for k, v in fields.items()},
    }


def environment(body: dict[str, Any]) -> dict[str, str]:
    """``ONVIFCAM_*`` variables for a command: EVENT, PATH, CAMERA, TIME, DETAILS (JSON) and
    one per detail."""
    env = {
        "ONVIFCAM_EVENT": body["event"],
        "ONVIFCAM_PATH": body["path"],
        "ONVIFCAM_CAMERA": body["camera"],
        "ONVIFCAM_TIME": f"{body['time']:.3f}",
        "ONVIFCAM_DETAILS": json.dumps(body["details"], default=str),
    }
    for k, v in body["details"].items():
        env["ONVIFCAM_" + _ENV_KEY.sub("_", str(k).upper())] = str(v)
    return env


class Hooks:
    """The app component running the ``[[hooks]]``."""

    def __init__(
        self,
        hooks: tuple[HookConfig, ...],
        bus: EventBus,
        camera_for: Callable[[str], str] | None = None,
        *,
        queue_size: int = 256,
        concurrency: int = 4,
    ) -> None:
        self.hooks = hooks
        self.bus = bus
        self.camera_for = camera_for
        self.queue_size = queue_size
        self._slots = asyncio.Semaphore(concurrency)
        self._queue: EventQueue[Event] | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self.runs: dict[str, int] = {}  # "event:result" -> count
        self.dropped = 0  # by queues replaced on reload (the current one counts its own)
        self._started = False
        self._subscribed: frozenset[type[Event]] = frozenset()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Subscribe to the events some hook wants and start the dispatcher."""
        self._started = True
        self._subscribe()

    def _kinds(self) -> frozenset[type[Event]]:
        return frozenset(KINDS[h.on] for h in self.hooks if h.on in KINDS)

    def _subscribe(self) -> None:
        """(Re)attach the queue for the event types the hooks want now."""
        if self._queue is not None:
            self.bus.detach(self._queue)  # the old dispatcher ends at EOFError
            self.dropped += self._queue.dropped
            self._queue = None
        kinds = self._kinds()
        self._subscribed = kinds
        if not kinds:
            return
        self._queue = self.bus.queue(self.queue_size, *kinds)
        self._task = asyncio.create_task(self._dispatch(self._queue), name="onvifcam-hooks")
        log.info("hooks: %d configured (%s)", len(self.hooks), ", ".join(h.on for h in self.hooks))

    async def stop(self) -> None:
        """Stop dispatching; running hooks are cancelled (commands killed)."""
        if self._queue is not None:
            self.bus.detach(self._queue)
        tasks = [t for t in (self._task, *self._running) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    def tick(self, now: float) -> None:
        """Nothing to do once a second."""

    def ready_info(self) -> dict[str, str]:
        """Nothing for the ready line."""
        return {}

    def reload(self, hooks: tuple[HookConfig, ...]) -> None:
        """Use ``hooks`` from now on; the queue follows the event types they want."""
        self.hooks = hooks
        if self._started and self._kinds() != self._subscribed:
            self._subscribe()

    # ------------------------------------------------------------------ work
    async def _dispatch(self, q: EventQueue[Event]) -> None:
        while True:
            try:
                event = await q.get()
            except EOFError:
                return
            name = _NAMES.get(type(event))
            path = str(getattr(event, "path", ""))
            for i, hook in enumerate(self.hooks):
                if hook.on != name or (hook.path and hook.path.strip("/") != path):
                    continue
                await self._slots.acquire()
                task = asyncio.create_task(self._run(i, hook, event))
                self._running.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()

    async def _run(self, index: int, hook: HookConfig, event: Event) -> None:
        camera = ""
        if self.camera_for is not None:
            camera = self.camera_for(str(getattr(event, "path", "")))
        body = payload(event, camera)
        what = f"hooks[{index}] ({hook.on}, {'command' if hook.command else hook.url})"
        try:
            async with asyncio.timeout(hook.timeout):
                if hook.command:
                    error = await self._command(hook.command, environment(body))
                else:
                    error = await self._webhook(hook.url, body)
        except TimeoutError:
            self._count(hook.on, "timeout")
            log.warning("hook %s: no answer within %g s ([[hooks]] timeout)", what, hook.timeout)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # cannot start, connection refused, bad URL...
            self._count(hook.on, "failed")
            log.warning("hook %s failed: %s: %s", what, type(exc).__name__, exc)
            return
        if error:
            self._count(hook.on, "failed")
            log.warning("hook %s failed: %s", what, error)
        else:
            self._count(hook.on, "ok")

    async def _command(self, command: str, env: dict[str, str]) -> str:
        proc = await asyncio.create_subprocess_shell(
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **env},
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
        tail = b""
        try:
            assert proc.stderr is not None
            while chunk := await proc.stderr.read(4096):
                tail = (tail + chunk)[-_STDERR_TAIL:]
            rc = await proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
            raise
        if rc != 0:
            err = tail.decode(errors="replace").strip().replace("\n", " | ")
            return f"exit status {rc}" + (f": {err}" if err else "")
        return ""

    async def _webhook(self, url: str, body: dict[str, Any]) -> str:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        async with self._http.post(url, json=body) as r:
            await r.content.read(4096)
            if not 200 <= r.status < 300:
                return f"HTTP {r.status} {r.reason or ''}".strip()
        return ""

    def _count(self, event: str, result: str) -> None:
        key = f"{event}:{result}"
        self.runs[key] = self.runs.get(key, 0) + 1

    def stats(self) -> dict[str, Any]:
        """Runs by ``event:result`` (ok, failed, timeout), events dropped, hooks running."""
        q = self._queue
        return {
            "runs": dict(self.runs),
            "dropped": self.dropped + (q.dropped if q is not None else 0),
            "running": len(self._running),
            "queued": len(q) if q is not None else 0,
        }
