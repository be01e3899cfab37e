"""Primary/backup failover: a camera whose readers follow one of two pushed paths.

A camera with ``primary = "cam1"`` and ``backup = "cam1-backup"`` shows, on its own path,
the stream pushed to the primary path. When the primary has been gone for
``failover_after`` seconds its readers get the backup; the primary is shown again once it has
been back for ``failback_after`` seconds without a break (or at once when the backup goes
while the primary is there).

:class:`FailoverSource` is a reader of the side it shows and the publisher of the camera's
stream (admitted by the publish gate). A switch re-publishes the camera's stream with the
other side's SDP as the same publisher, so readers stay connected with continuous SSRC,
sequence numbers and timestamps, and the new side starts on an IDR: on failover the backup's
GOP cache (the picture at once, the gap is the failover delay), on failback the primary's
next live keyframe (the backup plays until then: no gap). Each switch is a
:class:`~onvifcam.events.SourceSwitched` event and a log line.

:class:`FailoverState` holds the decisions (pure, clock injected).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from onvifcam.aio import cancel_and_wait
from onvifcam.auth.gate import Claim, Gate, Refusal
from onvifcam.config import SourcesConfig
from onvifcam.events import EventBus, SourceSwitched
from onvifcam.media.stream import RTP, Batch, Stream, StreamError, StreamRegistry
from onvifcam.rtsp.auth import AuthResult, Credentials

__all__ = ["FailoverSource", "FailoverState"]

log = logging.getLogger(__name__)

PRIMARY = "primary"
BACKUP = "backup"
_TICK = 0.1


@dataclass
class FailoverState:
    """Which side to show, from the online state of both (sans-I/O)."""

    failover_after: float = 3.0
    failback_after: float = 60.0
    active: str | None = None  # the side shown; None: nothing (the camera is offline)
    primary_up_since: float | None = None
    primary_down_since: float | None = None
    active_down_since: float | None = None

    def shown(self, side: str | None) -> None:
        """``side`` is what the camera shows from now on."""
        self.active = side
        self.active_down_since = None

    def _for(self, since: float | None, now: float) -> float:
        return 0.0 if since is None else now - since

    def update(self, now: float, primary_on: bool, backup_on: bool) -> tuple[str | None, bool]:
        """The side that should be shown now (None: none, go offline) and whether to take it
        from its GOP cache at once (True) or at its next live keyframe (False)."""
        if primary_on:
            self.primary_down_since = None
            if self.primary_up_since is None:
                self.primary_up_since = now
        else:
            self.primary_up_since = None
            if self.primary_down_since is None:
                self.primary_down_since = now
        active_on = {PRIMARY: primary_on, BACKUP: backup_on, None: False}[self.active]
        if active_on:
            self.active_down_since = None
        elif self.active_down_since is None:
            self.active_down_since = now
        if self.active is None:
            if primary_on:
                return PRIMARY, True
            if backup_on and self._for(self.primary_down_since, now) >= self.failover_after:
                return BACKUP, True
            return None, True
        if self.active == PRIMARY:
            if self._for(self.active_down_since, now) >= self.failover_after:
                return (BACKUP, True) if backup_on else (None, True)
            return PRIMARY, True
        # showing the backup
        if primary_on and not backup_on:
            return PRIMARY, True
        if primary_on and self._for(self.primary_up_since, now) >= self.failback_after:
            return PRIMARY, False
        if not backup_on and self._for(self.active_down_since, now) >= self.failover_after:
            return None, True
        return BACKUP, True


class _Tap:
    """The failover source's reader on one side's stream."""

    def __init__(self, owner: FailoverSource, side: str, stream: Stream) -> None:
        self.owner = owner
        self.side = side
        self.stream = stream
        self.attached = False
        self.skip = False  # ignore what add_reader sends (the GOP cache)

    def attach(self, use_gop: bool) -> None:
        if self.attached:
            return
        self.attached = True
        self.skip = not use_gop
        try:
            self.stream.add_reader(self)
        finally:
            self.skip = False

    def detach(self) -> None:
        if self.attached:
            self.attached = False
            self.stream.remove_reader(self)

    def deliver(self, batch: Batch) -> None:
        if not self.skip:
            self.owner._on_batch(self, batch)

    def stream_closed(self, reason: str) -> None:
        self.attached = False  # the media format changed: attach again on the next tick


class _Trusted:
    def __init__(self, key: str) -> None:
        self.key = key

    def proves(self, users: list[Credentials]) -> AuthResult:
        return AuthResult(True, "source", False, "configured failover")


class FailoverSource:
    """Shows ``primary`` or ``backup`` on the camera's ``stream``."""

    def __init__(
        self,
        stream: Stream,
        registry: StreamRegistry,
        primary: str,
        backup: str,
        cfg: SourcesConfig,
        *,
        gate: Gate | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.stream = stream
        self.registry = registry
        self.paths = {PRIMARY: primary.strip("/"), BACKUP: backup.strip("/")}
        self.cfg = cfg
        self.gate = gate
        self.bus = bus
        self.state = FailoverState(cfg.failover_after, cfg.failback_after)
        self.description = f"failover {self.paths[PRIMARY]}/{self.paths[BACKUP]}"
        self.pending: str | None = None
        self.switches = 0
        self.last_error = ""
        self._taps: dict[str, _Tap] = {}
        self._claim: Claim | None = None
        self._published = False
        self._task: asyncio.Task[None] | None = None

    @property
    def active(self) -> str | None:
        """The side shown (``"primary"``, ``"backup"``) or None."""
        return self.state.active

    async def start(self) -> None:
        """Watch both paths and show one."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"failover-{self.stream.path}"
        )

    async def stop(self) -> None:
        """Stop showing anything and give the camera's path back."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for tap in self._taps.values():
            tap.detach()
        self._go_offline("failover stopped")

    def kick(self, reason: str) -> None:
        """The stream dropped this publisher (media timeout): publish again on the next
        switch."""
        self._published = False

    def info(self) -> dict[str, Any]:
        """Status for the API."""
        return {
            "kind": "failover",
            "path": self.stream.path,
            "primary": self.paths[PRIMARY],
            "backup": self.paths[BACKUP],
            "active": self.active,
            "pending": self.pending,
            "switches": self.switches,
            "last_error": self.last_error,
        }

    stats = info

    def _side_stream(self, side: str) -> Stream | None:
        return self.registry.get(self.paths[side])

    def _online(self, side: str) -> bool:
        s = self._side_stream(side)
        return s is not None and s.online and bool(s.tracks)

    async def _run(self) -> None:
        while True:
            try:
                self.step(time.monotonic())
            except Exception:  # a bug here must not end the failover for good
                log.exception("failover %s: step failed", self.stream.path)
            await asyncio.sleep(_TICK)

    def step(self, now: float) -> None:
        """Decide and act once (called every 100 ms)."""
        want, use_gop = self.state.update(now, self._online(PRIMARY), self._online(BACKUP))
        active = self.state.active
        if want is None:
            if active is not None:
                self._switch_log(active, None, "both paths are gone")
                self.state.shown(None)
                self._go_offline("primary and backup are gone")
            self._cancel_pending()
            return
        if want == active:
            if self.pending not in (None, active):
                self._cancel_pending()
            tap = self._taps.get(active)
            if tap is None or not tap.attached or tap.stream is not self._side_stream(active):
                # the side's stream was replaced or changed its format (and closed its
                # readers): take it again, re-publishing its SDP at its keyframe
                self.pending = active
                self._attach(active, use_gop=True)
            return
        if self.pending != want:
            self._cancel_pending()
            self.pending = want
            self._attach(want, use_gop)

    def _attach(self, side: str, use_gop: bool) -> None:
        stream = self._side_stream(side)
        if stream is None:
            return
        tap = self._taps.get(side)
        if tap is None or tap.stream is not stream:
            if tap is not None:
                tap.detach()
            tap = self._taps[side] = _Tap(self, side, stream)
        tap.attach(use_gop)

    def _cancel_pending(self) -> None:
        side, self.pending = self.pending, None
        if side is not None and side != self.state.active:
            tap = self._taps.get(side)
            if tap is not None:
                tap.detach()

    def _on_batch(self, tap: _Tap, batch: Batch) -> None:
        start = 0
        if tap.side == self.pending:
            if batch.first_key is None:
                return
            start = batch.first_key
            if not self._take(tap):
                return
        elif tap.side != self.state.active:
            return
        feed_rtp = self.stream.on_rtp
        feed_rtcp = self.stream.on_rtcp
        for track, kind, packets, _key in batch.items[start:] if start else batch.items:
            if kind == RTP:
                for p in packets:
                    feed_rtp(track, p)
            else:
                for p in packets:
                    feed_rtcp(track, p)

    def _take(self, tap: _Tap) -> bool:
        """Switch to ``tap``'s side now (at its keyframe)."""
        old = self.state.active
        session = tap.stream.session
        if session is None:
            return False
        try:
            if self._claim is None and self.gate is not None:
                key = self.gate.cfg.path_policy(self.stream.path).publish_key
                self._claim = self.gate.admit_publish(self.stream.path, _Trusted(key), self)
            self.stream.publish(self, session)
        except (Refusal, StreamError) as exc:
            self.last_error = str(exc)
            log.warning("failover %s: cannot publish: %s", self.stream.path, exc)
            self._cancel_pending()
            return False
        self._published = True
        self.pending = None
        self.state.shown(tap.side)
        if old is not None and old != tap.side:
            old_tap = self._taps.get(old)
            if old_tap is not None:
                old_tap.detach()
        self._switch_log(old, tap.side, "")
        return True

    def _switch_log(self, old: str | None, new: str | None, why: str) -> None:
        if old == new:
            return
        a = self.paths[old] if old else ""
        b = self.paths[new] if new else ""
        if old is None:
            log.info("failover %s: showing %s %r", self.stream.path, new, b)
        else:
            self.switches += 1
            log.warning(
                "failover %s: switched from %s %r to %s%s",
                self.stream.path,
                old,
                a,
                f"{new} {b!r}" if new else "nothing",
                f" ({why})" if why else "",
            )
        if self.bus is not None:
            reason = new or "offline"
            self.bus.publish(SourceSwitched(path=self.stream.path, old=a, new=b, reason=reason))

    def _go_offline(self, reason: str) -> None:
        if self._published:
            self.stream.unpublish(self, reason)
            self._published = False
        if self._claim is not None:
            self._claim.release()
            self._claim = None
