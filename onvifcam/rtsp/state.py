"""Pure RTSP state machines: what a connection and a session may do next.

No sockets, no asyncio, no clock of its own (times are passed in). The asyncio server
(:mod:`onvifcam.rtsp.server`) asks these objects and carries out what they return:

- :class:`ConnMode` / :class:`ConnMachine`: what the bytes of a TCP connection are (not
  sniffed yet, RTSP, an HTTP tunnel's GET head or POST body, a refused connection waiting
  for its request, closed) and which changes are allowed.
- :class:`SessionState` / :class:`SessionMachine`: one RTSP session (the Session header),
  its role (reading or recording) and the methods allowed in each state (``ALLOWED``),
  with the exact status and reason a request out of place gets.
- :class:`Pipeline`: requests of one connection in order, where one may be answered later
  (a deferred reply: DESCRIBE of a path whose on-demand source is starting). Requests that
  arrive meanwhile wait in a bounded queue; the wait ends when the stream is published,
  when its deadline passes, or when the client goes.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")


class StateError(Exception):
    """A change the machine does not allow (a bug in the caller, not bad input)."""


# --------------------------------------------------------------------------- connection


class ConnMode(enum.Enum):
    """What a connection's bytes are."""

    NEW = "new"  # nothing received yet: RTSP or an HTTP tunnel half
    RTSP = "rtsp"
    HTTP_HEAD = "http-head"  # receiving the HTTP request of a tunnel half
    HTTP_POST = "http-post"  # the tunnel's POST half: base64 RTSP for its GET half
    REFUSED = "refused"  # over a limit: answered 503 once its first request is in
    CLOSED = "closed"


_CONN_NEXT: dict[ConnMode, frozenset[ConnMode]] = {
    ConnMode.NEW: frozenset({ConnMode.RTSP, ConnMode.HTTP_HEAD, ConnMode.REFUSED}),
    ConnMode.HTTP_HEAD: frozenset({ConnMode.RTSP, ConnMode.HTTP_POST}),
    ConnMode.RTSP: frozenset(),
    ConnMode.HTTP_POST: frozenset(),
    ConnMode.REFUSED: frozenset(),
    ConnMode.CLOSED: frozenset(),
}


class ConnMachine:
    """The mode of one connection; every mode may go to CLOSED, which is final."""

    __slots__ = ("mode",)

    def __init__(self) -> None:
        self.mode = ConnMode.NEW

    def to(self, mode: ConnMode) -> None:
        """Change mode; raises :class:`StateError` for a change the table does not allow."""
        if mode is ConnMode.CLOSED or mode in _CONN_NEXT[self.mode]:
            self.mode = mode
            return
        raise StateError(f"connection cannot go from {self.mode.value} to {mode.value}")

    @property
    def closed(self) -> bool:
        """True once the connection is gone."""
        return self.mode is ConnMode.CLOSED


# --------------------------------------------------------------------------- session


class Role(enum.Enum):
    """What a session does: read a stream (SETUP/PLAY) or publish one (ANNOUNCE/RECORD)."""

    PLAY = "play"
    RECORD = "record"


class SessionState(enum.Enum):
    """RTSP session states (RFC 2326 appendix A, server side)."""

    INIT = "init"  # announced, nothing set up yet (a reading session starts READY)
    READY = "ready"  # transports set up, not flowing
    PLAYING = "playing"
    RECORDING = "recording"
    CLOSED = "closed"


@dataclass(frozen=True)
class Refusal:
    """Why a method is not allowed now: the status and the reason to answer with."""

    status: int
    reason: str


S = SessionState
_STATELESS = frozenset({"OPTIONS", "GET_PARAMETER", "SET_PARAMETER", "TEARDOWN"})

#: Methods allowed for a session, by role and state. Anything else gets ``REFUSALS``.
ALLOWED: dict[tuple[Role, SessionState], frozenset[str]] = {
    (Role.PLAY, S.INIT): _STATELESS | {"SETUP", "PAUSE"},
    (Role.PLAY, S.READY): _STATELESS | {"SETUP", "PLAY", "PAUSE"},
    (Role.PLAY, S.PLAYING): _STATELESS | {"PLAY", "PAUSE"},
    (Role.RECORD, S.INIT): _STATELESS | {"SETUP", "PAUSE"},
    (Role.RECORD, S.READY): _STATELESS | {"SETUP", "RECORD", "PAUSE"},
    (Role.RECORD, S.RECORDING): _STATELESS | {"RECORD", "PAUSE"},
}

#: The answer to a method the table does not allow (status 455, with what went wrong).
REFUSALS: dict[tuple[Role, str], dict[SessionState | None, str]] = {
    (Role.PLAY, "PLAY"): {S.INIT: "PLAY before SETUP"},
    (Role.PLAY, "SETUP"): {S.PLAYING: "SETUP while playing"},
    (Role.PLAY, "RECORD"): {None: "RECORD without ANNOUNCE"},
    (Role.RECORD, "PLAY"): {None: "PLAY on a recording session"},
    (Role.RECORD, "SETUP"): {S.RECORDING: "SETUP after RECORD"},
    (Role.RECORD, "RECORD"): {S.INIT: "RECORD before SETUP"},
}


class SessionMachine:
    """State of one RTSP session; the only place that changes it."""

    __slots__ = ("role", "state")

    def __init__(self, role: Role) -> None:
        self.role = role
        self.state = SessionState.INIT

    def check(self, method: str) -> Refusal | None:
        """None when ``method`` is allowed now, else the status and reason to answer."""
        if self.state is S.CLOSED:
            return Refusal(454, "session is closed")
        if method in ALLOWED.get((self.role, self.state), frozenset()):
            return None
        reasons = REFUSALS.get((self.role, method), {})
        reason = reasons.get(self.state) or reasons.get(None)
        if reason is None:
            reason = f"{method} not allowed in state {self.state.value}"
        return Refusal(455, reason)

    @property
    def active(self) -> bool:
        """True while media flows (playing or recording)."""
        return self.state is S.PLAYING or self.state is S.RECORDING

    def set_up(self) -> None:
        """A SETUP succeeded: a track has a transport."""
        self._need("SETUP")
        if self.state is S.INIT:
            self.state = S.READY

    def play(self) -> None:
        """PLAY: media flows to the client."""
        self._need("PLAY")
        self.state = S.PLAYING

    def record(self) -> None:
        """RECORD: the stream is published from this session."""
        self._need("RECORD")
        self.state = S.RECORDING

    def pause(self) -> None:
        """PAUSE of a reading session: media stops, transports stay.

        (A recording session ignores PAUSE, as before: the publisher keeps its stream.)"""
        self._need("PAUSE")
        if self.role is Role.PLAY and self.state is S.PLAYING:
            self.state = S.READY

    def close(self) -> None:
        """TEARDOWN, timeout or connection loss: final."""
        self.state = S.CLOSED

    def _need(self, method: str) -> None:
        refusal = self.check(method)
        if refusal is not None:
            raise StateError(f"{self.role.value} session: {refusal.reason}")


# --------------------------------------------------------------------------- pipeline


@dataclass
class Waiting(Generic[R]):
    """A request whose reply is deferred until ``path`` is published or ``deadline``."""

    request: R
    path: str
    deadline: float


class Overflow(Exception):
    """More requests queued behind a deferred reply than the connection may hold."""


class Pipeline(Generic[R]):
    """The requests of one connection, answered in order; one may wait (deferred reply).

    ``submit(req)`` returns the requests to handle now (``[req]``, or ``[]`` while a reply
    is deferred: then it is queued). A handler that cannot answer yet calls
    :meth:`defer`; :meth:`published` or :meth:`expire` end the wait and return the waiting
    request (to handle again, or to answer as timed out) followed by the queued ones to
    handle, up to the next one that defers again.
    """

    def __init__(self, max_queued: int) -> None:
        self.max_queued = max(1, max_queued)
        self.waiting: Waiting[R] | None = None
        self.queued: deque[R] = deque()
        self.deferred = 0  # replies deferred
        self.resumed = 0  # ... answered after their stream came
        self.expired = 0  # ... answered as timed out
        self.cancelled = 0  # ... whose client went first

    def submit(self, request: R) -> list[R]:
        """A request arrived: handle it now, or queue it behind the waiting one.

        Raises :class:`Overflow` when the queue is full (the caller answers and closes)."""
        if self.waiting is None:
            return [request]
        if len(self.queued) >= self.max_queued:
            raise Overflow(
                f"more than {self.max_queued} requests sent while one waits "
                "([rtsp] max_queued_requests)"
            )
        self.queued.append(request)
        return []

    def defer(self, request: R, path: str, deadline: float) -> None:
        """Answer ``request`` later: when ``path`` is published or at ``deadline``."""
        if self.waiting is not None:
            raise StateError("a reply is already deferred")
        self.waiting = Waiting(request, path, deadline)
        self.deferred += 1

    @property
    def busy(self) -> bool:
        """True while a reply is deferred."""
        return self.waiting is not None

    def published(self, path: str) -> Waiting[R] | None:
        """``path`` got a stream: the waiting request for it (to handle again), if any."""
        w = self.waiting
        if w is None or w.path != path:
            return None
        self.waiting = None
        self.resumed += 1
        return w

    def expire(self, now: float) -> Waiting[R] | None:
        """The waiting request whose deadline has passed (to answer as timed out), if any."""
        w = self.waiting
        if w is None or now < w.deadline:
            return None
        self.waiting = None
        self.expired += 1
        return w

    def next_queued(self) -> R | None:
        """After a wait ended: the next queued request to handle (None when the queue is
        empty or a handler deferred again)."""
        if self.waiting is not None or not self.queued:
            return None
        return self.queued.popleft()

    def cancel(self) -> None:
        """The client went: forget the waiting request and the queue."""
        if self.waiting is not None:
            self.cancelled += 1
        self.waiting = None
        self.queued.clear()
