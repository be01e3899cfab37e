"""The pure RTMP connection state machine: where a connection is, what it may send, and
when it has waited too long.

No sockets, no asyncio; times are passed in. The asyncio server
(:mod:`onvifcam.rtmp.server`) moves bytes through the sans-I/O handshake and chunk parser,
asks this machine what a message may do, changes state only through it, and carries out
what :meth:`RtmpSession.overdue` returns from its once-a-second tick.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from onvifcam.config import LimitsConfig


class RtmpState(enum.Enum):
    """Where an RTMP connection is."""

    HANDSHAKE = "handshake"  # C0/C1/C2 not complete: bytes go to the handshake
    OPEN = "open"  # chunk stream running, no connect yet
    CONNECTED = "connected"  # connect answered (or a publish ended: it may publish again)
    AWAITING_MEDIA = "awaiting_media"  # publish accepted, no decodable media yet
    PUBLISHING = "publishing"  # the stream is published from this connection
    CLOSED = "closed"


class Kind(enum.Enum):
    """What an RTMP message is, for the table of what each state accepts."""

    COMMAND = "command"  # AMF0/AMF3 commands (connect, createStream, publish, ...)
    DATA = "data"  # AMF data (@setDataFrame / onMetaData)
    CONTROL = "control"  # protocol control and user control (ack window, ping)
    MEDIA = "media"  # audio, video and aggregate messages


St = RtmpState
_CHUNKS = frozenset({Kind.COMMAND, Kind.DATA, Kind.CONTROL})

#: Messages each state acts on; anything else is ignored (media before a publish is
#: accepted costs nothing: it is dropped unparsed).
ACCEPTS: dict[RtmpState, frozenset[Kind]] = {
    St.HANDSHAKE: frozenset(),
    St.OPEN: _CHUNKS,  # encoders that publish without connect are served too
    St.CONNECTED: _CHUNKS,
    St.AWAITING_MEDIA: _CHUNKS | {Kind.MEDIA},
    St.PUBLISHING: _CHUNKS | {Kind.MEDIA},
    St.CLOSED: frozenset(),
}

#: Commands refused in a state: (onStatus code, reason).
REFUSED_COMMANDS: dict[tuple[RtmpState, str], tuple[str, str]] = {
    (St.AWAITING_MEDIA, "publish"): (
        "NetStream.Publish.BadName",
        "this connection already publishes",
    ),
    (St.PUBLISHING, "publish"): ("NetStream.Publish.BadName", "this connection already publishes"),
}

_NEXT: dict[RtmpState, frozenset[RtmpState]] = {
    St.HANDSHAKE: frozenset({St.OPEN}),
    St.OPEN: frozenset({St.CONNECTED, St.AWAITING_MEDIA}),
    St.CONNECTED: frozenset({St.CONNECTED, St.AWAITING_MEDIA}),
    St.AWAITING_MEDIA: frozenset({St.PUBLISHING, St.CONNECTED}),
    St.PUBLISHING: frozenset({St.PUBLISHING, St.CONNECTED}),
    St.CLOSED: frozenset(),
}


class StateError(Exception):
    """A change the table does not allow (a bug in the caller, not bad input)."""


@dataclass(frozen=True)
class Overdue:
    """Close the connection: ``reason`` for the log; ``unpublish`` first with
    ``unpublish_reason`` when it had a publish going."""

    kind: str  # the refusals counter: handshake_timeout, publish_timeout, ...
    reason: str
    unpublish: bool = False
    unpublish_reason: str = ""


class RtmpSession:
    """State and timers of one RTMP connection; the only place that changes its state."""

    __slots__ = ("connected_at", "last_rx", "last_video", "publish_requested_at", "state")

    def __init__(self, now: float) -> None:
        self.state = St.HANDSHAKE
        self.connected_at = now
        self.last_rx = now
        self.last_video = now
        self.publish_requested_at = 0.0

    # ------------------------------------------------------------------ questions
    def accepts(self, kind: Kind) -> bool:
        """True when a message of ``kind`` is acted on now."""
        return kind in ACCEPTS[self.state]

    def refusal(self, command: str) -> tuple[str, str] | None:
        """The onStatus code and reason when ``command`` is refused now, else None."""
        return REFUSED_COMMANDS.get((self.state, command))

    @property
    def publishing(self) -> bool:
        """True from an accepted publish until unpublish or close."""
        return self.state is St.AWAITING_MEDIA or self.state is St.PUBLISHING

    @property
    def closed(self) -> bool:
        """True once closed (final)."""
        return self.state is St.CLOSED

    # ------------------------------------------------------------------ changes
    def _to(self, state: RtmpState) -> None:
        if state not in _NEXT[self.state]:
            raise StateError(f"rtmp connection cannot go from {self.state.value} to {state.value}")
        self.state = state

    def handshake_done(self) -> None:
        """The handshake completed: chunks follow."""
        self._to(St.OPEN)

    def connected(self) -> None:
        """``connect`` was answered."""
        if self.state is St.OPEN or self.state is St.CONNECTED:
            self._to(St.CONNECTED)

    def publish_accepted(self, now: float) -> None:
        """A publish passed the gate; media is awaited (``media_timeout``)."""
        self._to(St.AWAITING_MEDIA)
        self.publish_requested_at = now

    def media_ready(self) -> None:
        """The media is known and the stream is published (again, after a change)."""
        self._to(St.PUBLISHING)

    def unpublished(self) -> None:
        """FCUnpublish / deleteStream, or the stream ended: the connection stays open."""
        if self.publishing:
            self._to(St.CONNECTED)

    def close(self) -> None:
        """Closed (by us or the peer): final."""
        self.state = St.CLOSED

    def received(self, now: float) -> None:
        """Bytes arrived (the idle timeout restarts)."""
        self.last_rx = now

    def video(self, now: float) -> None:
        """A video message arrived (the video timeout restarts)."""
        self.last_video = now

    # ------------------------------------------------------------------ timeouts
    def overdue(self, now: float, lim: LimitsConfig, has_video: bool) -> Overdue | None:
        """What to do about a connection that waited too long, if anything (tick)."""
        if self.closed:
            return None
        age = now - self.connected_at
        if self.state is St.HANDSHAKE and age > lim.handshake_timeout:
            return Overdue(
                "handshake_timeout", f"no RTMP handshake within {lim.handshake_timeout:g} s"
            )
        if not self.publish_requested_at and age > lim.publish_timeout:
            return Overdue("publish_timeout", f"no publish within {lim.publish_timeout:g} s")
        if now - self.last_rx > lim.idle_timeout:
            return Overdue("idle_timeout", f"nothing received for {lim.idle_timeout:g} s")
        if self.state is St.AWAITING_MEDIA:
            if now - self.publish_requested_at > lim.media_timeout:
                return Overdue(
                    "media_timeout",
                    f"no decodable video or audio within {lim.media_timeout:g} s",
                    unpublish=True,
                    unpublish_reason="no usable media",
                )
        elif self.state is St.PUBLISHING and has_video:
            if now - self.last_video > lim.media_timeout:
                reason = f"no video for {lim.media_timeout:g} s"
                return Overdue("media_timeout", reason, unpublish=True, unpublish_reason=reason)
        return None
