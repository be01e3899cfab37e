"""Pull sources: a camera fed from other servers (``source = ["rtsp://a/x", "rtmp://b/y"]``).

:class:`RetryPolicy` (pure, clock injected) decides which URI to try when: the first
working URI is used; once media has been missing for ``switch_after`` seconds the next URI
is tried (round robin), one attempt every ``retry_interval`` seconds; after
``give_up_after`` seconds without media the source is *failed* until :meth:`PullSource.enable`.

:class:`PullSource` (asyncio) carries the policy out with the RTSP client
(:mod:`onvifcam.rtsp.client`) or the RTMP client (:mod:`onvifcam.rtmp.client`, through the
packetiser). It is admitted by the publish gate like any pushing client and publishes every
connection on the same :class:`~onvifcam.media.stream.Stream` as the same publisher, so
readers stay connected across URI changes: the stream keeps SSRC, sequence numbers and
timestamps continuous and restarts on an IDR (a URI with another media layout, e.g. audio
where the first had none, makes readers DESCRIBE again). A switch of URI is a
:class:`~onvifcam.events.SourceSwitched` event on the bus; giving up (status failed) a
:class:`~onvifcam.events.SourceFailed` event (the ``source_failed`` hook).

With ``on_demand`` the source pulls only while somebody reads: the stream registry's demand
hook starts it, and it stops ``on_demand_linger`` seconds after the last reader left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from onvifcam.aio import cancel_and_wait, within
from onvifcam.auth.gate import Claim, Gate, Refusal
from onvifcam.config import SourcesConfig
from onvifcam.events import EventBus, SourceFailed, SourceSwitched
from onvifcam.media.sdp import SessionDescription
from onvifcam.media.stream import Stream, StreamError
from onvifcam.rtmp.client import RtmpPuller
from onvifcam.rtsp.auth import AuthResult, Credentials
from onvifcam.rtsp.client import PullError, RtspPuller, redact
from onvifcam.srt.client import SrtError, SrtReceiverConnection, parse_srt_url
from onvifcam.srt.ingest import IngestError, TsIngest
from onvifcam.srt.receiver import ReceiverSettings

__all__ = ["PullSource", "RetryPolicy", "Status"]

log = logging.getLogger(__name__)


class Status:
    """Values of :attr:`PullSource.status`."""

    IDLE = "idle"  # on_demand and nobody reads
    CONNECTING = "connecting"  # first attempts, no media yet
    ACTIVE = "active"  # media flowing from ``uri``
    RETRYING = "retrying"  # media lost; attempts go on
    FAILED = "failed"  # gave up after give_up_after; enable() restarts
    DISABLED = "disabled"  # disable() stopped it


@dataclass
class RetryPolicy:
    """Which URI to try next, and when (sans-I/O: every method takes ``now``)."""

    count: int
    retry_interval: float = 3.0
    switch_after: float = 3.0
    give_up_after: float = 7200.0
    index: int = 0
    lost_at: float | None = None  # media last seen (or start); None while media flows
    missing_since: float | None = None  # the same, but reset when the URI changes
    next_at: float = 0.0
    attempts: int = 0
    switches: int = 0

    def start(self, now: float) -> None:
        """Begin (or begin again after failed/disabled) at the current URI, at once."""
        self.lost_at = self.missing_since = self.next_at = now

    def attempt(self, now: float) -> int:
        """An attempt starts now: the URI index to try. It moves on (round robin) once
        media has been missing from the current URI for ``switch_after``."""
        if self.missing_since is None:
            self.start(now)
        assert self.missing_since is not None
        if self.count > 1 and now - self.missing_since >= self.switch_after:
            self.index = (self.index + 1) % self.count
            self.switches += 1
            self.missing_since = now  # the next URI gets its own switch_after
        self.attempts += 1
        self.next_at = now + self.retry_interval
        return self.index

    def media(self) -> None:
        """Media arrived from the current URI."""
        self.lost_at = self.missing_since = None

    def lost(self, last_media: float) -> None:
        """The connection ended; media was last seen at ``last_media``. After a loss the
        first attempt is at once; after a failed attempt the next waits retry_interval."""
        if self.lost_at is None:
            self.lost_at = self.missing_since = last_media
            self.next_at = last_media

    def failed(self, now: float) -> bool:
        """True when media has been missing for ``give_up_after`` (0: never give up)."""
        return (
            self.give_up_after > 0
            and self.lost_at is not None
            and now - self.lost_at >= self.give_up_after
        )


class _Connection(Protocol):
    async def open(self) -> SessionDescription: ...
    async def run(self, idle_timeout: float) -> None: ...
    async def close(self) -> None: ...


class _Trusted:
    """What a configured source presents to the gate: the operator configured it, so it
    proves any credentials; it carries the path's stream key."""

    def __init__(self, key: str) -> None:
        self.key = key

    def proves(self, users: list[Credentials]) -> AuthResult:
        return AuthResult(True, "source", False, "configured source")


class PullSource:
    """Pulls one camera path from a list of URIs with failover; a publisher of its stream.

    API for the web/API layer: :attr:`status` (a :class:`Status` value), :meth:`info`
    (status, current URI, counters, last error), :meth:`enable`, :meth:`disable`.
    """

    def __init__(
        self,
        stream: Stream,
        uris: tuple[str, ...] | list[str],
        cfg: SourcesConfig,
        *,
        gate: Gate | None = None,
        bus: EventBus | None = None,
        on_demand: bool = False,
        connect: Callable[[str, PullSource], _Connection] | None = None,
    ) -> None:
        if not uris:
            raise ValueError("a pull source needs at least one URI")
        self.stream = stream
        self.uris = list(uris)
        self.cfg = cfg
        self.gate = gate
        self.bus = bus
        self.on_demand = on_demand
        self.policy = RetryPolicy(
            len(self.uris), cfg.retry_interval, cfg.switch_after, cfg.give_up_after
        )
        self._connect = connect or _default_connect
        self.status = Status.IDLE if on_demand else Status.CONNECTING
        self.last_error = ""
        self.since = time.time()
        self.connections = 0
        self.packets = 0
        self._claim: Claim | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: _Connection | None = None
        self._active_index: int | None = None
        self._published = False
        self._media_seen = False
        self._last_media = 0.0
        self._last_reader = time.monotonic()
        self.description = f"pull {redact(self.uris[0])}"

    # ------------------------------------------------------------------ control
    @property
    def uri(self) -> str:
        """The URI in use or being tried (password redacted)."""
        return redact(self.uris[self.policy.index])

    @property
    def running(self) -> bool:
        """True while the pull task runs."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start pulling (no-op when running)."""
        if self.running:
            return
        self.policy.attempts = 0
        self.policy.start(time.monotonic())
        self._last_reader = time.monotonic()
        self._set_status(Status.CONNECTING)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"pull-{self.stream.path}"
        )

    def enable(self) -> None:
        """Start again after failed/disabled (on_demand: wait for a reader)."""
        if self.on_demand and not self.stream.readers:
            self._set_status(Status.IDLE)
            return
        self.start()

    async def disable(self) -> None:
        """Stop pulling and give the path back; :meth:`enable` restarts."""
        await self._halt()
        self._set_status(Status.DISABLED)

    async def stop(self) -> None:
        """Stop for good (server shutdown)."""
        await self._halt()

    async def _halt(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._drop_connection()
        self._leave("source stopped")

    def demand(self, path: str) -> bool:
        """The stream registry's demand hook: a reader wants ``path``; start pulling."""
        if path.strip("/") != self.stream.path or self.status in (Status.DISABLED,):
            return False
        if self.status == Status.FAILED:
            return False
        self.start()
        return True

    def info(self) -> dict[str, Any]:
        """Status for the API: status, uri, uris, index, since, last_error, counters."""
        return {
            "kind": "pull",
            "path": self.stream.path,
            "status": self.status,
            "uri": self.uri,
            "uris": [redact(u) for u in self.uris],
            "index": self.policy.index,
            "on_demand": self.on_demand,
            "since": self.since,
            "last_error": self.last_error,
            "attempts": self.policy.attempts,
            "switches": self.policy.switches,
            "connections": self.connections,
            "packets": self.packets,
        }

    stats = info

    def kick(self, reason: str) -> None:
        """The stream or the gate dropped this publisher (media timeout, replaced)."""
        self._published = False
        if "replaced" in reason and self._task is not None:
            self.last_error = reason
            self._task.cancel()
            self._task = None
            if self._claim is not None:
                self._claim.release()
                self._claim = None
            self._set_status(Status.DISABLED)

    # ------------------------------------------------------------------ internals
    def _set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self.since = time.time()

    def _admit(self) -> None:
        if self._claim is not None or self.gate is None:
            return
        key = self.gate.cfg.path_policy(self.stream.path).publish_key
        self._claim = self.gate.admit_publish(self.stream.path, _Trusted(key), self)

    def _leave(self, reason: str) -> None:
        if self._published:
            self.stream.unpublish(self, reason)
            self._published = False
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def on_rtp(self, track: int, packet: bytes) -> None:
        """RTP from the connection in use (any track)."""
        self.packets += 1
        self._last_media = time.monotonic()
        if not self._media_seen:
            self._media_seen = True
            self.policy.media()
            self._set_status(Status.ACTIVE)
        if self._published:
            self.stream.on_rtp(track, packet)

    def on_session(self, session: SessionDescription) -> None:
        """The connection in use announced new media (RTMP: a new sequence header)."""
        if not self._published:
            return
        try:
            self.stream.publish(self, session)
        except StreamError as exc:
            self.last_error = f"new media refused: {exc}"
            self._published = False
            self.stream.unpublish(self, self.last_error)

    def on_rtcp(self, track: int, data: bytes) -> None:
        """RTCP from the connection in use."""
        if self._published:
            self.stream.on_rtcp(track, data)

    async def _run(self) -> None:
        policy = self.policy
        cfg = self.cfg
        while True:
            now = time.monotonic()
            if policy.failed(now):
                self.last_error = (
                    f"no media for {cfg.give_up_after:g} s from any of {len(self.uris)} URIs "
                    f"(last: {self.last_error}); enable the source to try again"
                )
                log.error("pull %s: failed: %s", self.stream.path, self.last_error)
                self._leave("pull source failed")
                self._set_status(Status.FAILED)
                if self.bus is not None:
                    self.bus.publish(
                        SourceFailed(self.stream.path, self.description, self.last_error)
                    )
                self._task = None
                return
            if self.on_demand and self._idle_for() > cfg.on_demand_linger:
                log.info("pull %s: no reader for %g s, stopping", self.stream.path,
                         cfg.on_demand_linger)  # fmt: skip
                self._leave("no reader (on_demand)")
                self._set_status(Status.IDLE)
                self._task = None
                return
            if now < policy.next_at:
                await asyncio.sleep(min(policy.next_at - now, 0.5))
                continue
            index = policy.attempt(now)
            uri = self.uris[index]
            self._media_seen = False
            conn = self._connect(uri, self)
            self._conn = conn
            try:
                session = await within(conn.open(), cfg.connect_timeout)
                self._admit()
                self.stream.publish(self, session)
                self._published = True
                self.connections += 1
                if self._active_index is not None and self._active_index != index:
                    self._switched(self._active_index, index)
                self._active_index = index
                self.description = f"pull {redact(uri)}"
                log.info("pull %s: playing %s", self.stream.path, redact(uri))
                if await self._play(conn):  # no reader any more: the top of the loop stops
                    continue
            except asyncio.CancelledError:
                raise
            except Refusal as exc:
                self.last_error = f"the publish gate refused the source: {exc.reason}"
            except (PullError, StreamError, OSError, TimeoutError, ValueError) as exc:
                self.last_error = str(exc) or f"timed out after {cfg.connect_timeout:g} s"
            except Exception as exc:  # a hostile upstream must not end the source for good
                log.exception("pull %s: %s failed unexpectedly", self.stream.path, redact(uri))
                self.last_error = f"unexpected {type(exc).__name__}: {exc}"[:300]
            finally:
                self._conn = None
                await conn.close()
            policy.lost(self._last_media if self._media_seen else time.monotonic())
            if self.status == Status.ACTIVE:
                log.warning("pull %s: %s lost: %s", self.stream.path, redact(uri), self.last_error)
            else:
                log.info("pull %s: %s: %s", self.stream.path, redact(uri), self.last_error)
            if self.status != Status.IDLE:
                self._set_status(Status.RETRYING)

    async def _play(self, conn: _Connection) -> bool:
        """Play until the connection ends (its error raised); True when it was stopped
        because nobody has read for ``on_demand_linger``."""
        run = asyncio.ensure_future(conn.run(self.cfg.switch_after))
        try:
            while not run.done():
                done, _ = await asyncio.wait({run}, timeout=0.5)
                if done:
                    break
                if self.on_demand and self._idle_for() > self.cfg.on_demand_linger:
                    return True
        finally:
            if not run.done():
                # cancel_and_wait: a stop of this source while run unwinds is not swallowed
                with contextlib.suppress(PullError, OSError):
                    await cancel_and_wait(run)
        run.result()
        return False

    def _idle_for(self) -> float:
        if self.stream.readers:
            self._last_reader = time.monotonic()
            return 0.0
        return time.monotonic() - self._last_reader

    def _switched(self, old: int, new: int) -> None:
        a, b = redact(self.uris[old]), redact(self.uris[new])
        log.warning("pull %s: switched from %s to %s", self.stream.path, a, b)
        if self.bus is not None:
            self.bus.publish(SourceSwitched(path=self.stream.path, old=a, new=b, reason="pull"))


def _default_connect(uri: str, src: PullSource) -> _Connection:
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("rtsp", "rtsps"):
        return RtspPuller(
            uri,
            on_rtp=src.on_rtp,
            on_rtcp=src.on_rtcp,
            timeout=src.cfg.connect_timeout,
            max_sdp_bytes=src.cfg.max_sdp_bytes,
        )
    if scheme in ("rtmp", "rtmps"):
        return RtmpPuller(
            uri, on_rtp=src.on_rtp, on_session=src.on_session, timeout=src.cfg.connect_timeout
        )
    if scheme == "srt":
        return SrtPull(uri, src)
    raise PullError(f"{redact(uri)}: unsupported scheme {scheme!r}")


_MAX_EARLY_PACKETS = 4096  # RTP held between the first media and the publish


class _IngestTarget:
    """What :class:`~onvifcam.srt.ingest.TsIngest` publishes to, for an SRT pull: it plays
    the registry and the stream, keeps the first session for :meth:`SrtPull.open`, passes
    later ones (new parameter sets) and the RTP to the pull source."""

    def __init__(self, src: PullSource) -> None:
        self.src = src
        self.session: SessionDescription | None = None
        self.ready = asyncio.Event()
        self._early: list[tuple[int, bytes]] = []

    def get(self, path: str) -> None:
        return None

    def get_or_create(self, path: str) -> _IngestTarget:
        return self

    def publish(
        self, publisher: object, session: SessionDescription, replace: bool = False
    ) -> None:
        if self.session is None:
            self.session = session
            self.ready.set()
        else:
            self.src.on_session(session)

    def unpublish(self, publisher: object, reason: str) -> None:
        """The pull source unpublishes (it owns the publish)."""

    def on_rtp(self, track: int, packet: bytes) -> None:
        src = self.src
        if not src._published:
            if len(self._early) < _MAX_EARLY_PACKETS:
                self._early.append((track, packet))  # the first keyframe, until published
            return
        if self._early:
            early, self._early = self._early, []
            for t, p in early:
                src.on_rtp(t, p)
        src.on_rtp(track, packet)


class SrtPull:
    """One SRT pull connection (caller, receiving MPEG-TS): payloads -> TsIngest ->
    packetiser -> the pull source."""

    def __init__(self, uri: str, src: PullSource) -> None:
        self.uri = uri
        self.src = src
        self.target = _IngestTarget(src)
        self.ingest: TsIngest | None = None
        self.conn: SrtReceiverConnection | None = None

    async def open(self) -> SessionDescription:
        """Handshake, then wait for the media to be known (first keyframe)."""
        try:
            target = parse_srt_url(self.uri)
        except ValueError as exc:
            raise PullError(str(exc)) from None
        path = self.src.stream.path
        self.ingest = TsIngest(path, self.target, self.src, lazy=False)  # type: ignore[arg-type]
        timeout = self.src.cfg.connect_timeout
        self.conn = SrtReceiverConnection(
            target,
            self.ingest.feed,
            timeout=timeout,
            settings=ReceiverSettings(idle_timeout=max(self.src.cfg.switch_after, 1.0)),
        )
        try:
            await self.conn.connect()
        except SrtError as exc:
            raise PullError(f"{redact(self.uri)}: {exc}") from None
        ready = asyncio.ensure_future(self.target.ready.wait())
        closed = asyncio.ensure_future(self.conn.closed.wait())
        try:
            await asyncio.wait({ready, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            closed.cancel()
        if self.target.session is None:
            raise PullError(f"{redact(self.uri)}: {self.conn.error}")
        return self.target.session

    async def run(self, idle_timeout: float) -> None:
        """Until the connection ends (SHUTDOWN, silence, unusable media)."""
        assert self.conn is not None
        await self.conn.closed.wait()
        raise PullError(f"{redact(self.uri)}: {self.conn.error}")

    async def close(self) -> None:
        """SHUTDOWN, close the socket, flush the demuxer."""
        if self.conn is not None:
            self.conn.close()
        if self.ingest is not None:
            try:
                self.ingest.close("pull stopped")
            except IngestError:
                pass
