"""A simulated network between the sans-I/O SRT caller and listener (no sockets, no clock).

Events run in time order: datagrams in flight with a one-way delay, the listener's 10 ms
tick, and whatever the test schedules. Filters decide which datagrams get lost.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from onvifcam.srt import packet
from onvifcam.srt.caller import Caller
from onvifcam.srt.handshake import Rejection
from onvifcam.srt.listener import Connection, Listener, ListenerSettings, Output, Rejected
from onvifcam.srt.receiver import TICK

ADDR = ("192.0.2.1", 40000)
T0 = 1000.0

Filter = Callable[[bytes], bool]  # True: the datagram is lost


def is_data(d: bytes) -> bool:
    return not d[0] & 0x80


def seq_of(d: bytes) -> int:
    return int.from_bytes(d[:4], "big") & 0x7FFFFFFF


def ctype_of(d: bytes) -> int:
    return (int.from_bytes(d[:2], "big") & 0x7FFF) if d[0] & 0x80 else -1


@dataclass
class Sim:
    """Caller <-> listener over a lossy, delayed link."""

    caller: Caller = field(default_factory=lambda: Caller(start=T0 - 0.25))
    settings: ListenerSettings = field(default_factory=ListenerSettings)
    passphrase: str = ""
    delay: float = 0.0  # one way
    lose_up: Filter = lambda d: False  # caller -> listener
    lose_down: Filter = lambda d: False  # listener -> caller
    admit: Callable[[Connection], None] = lambda c: None
    now: float = T0
    delivered: list[tuple[float, bytes]] = field(default_factory=list)
    down: list[bytes] = field(default_factory=list)  # everything the listener sent
    closed: list[tuple[Connection, str]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    opened: list[Connection] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.listener = Listener(
            self.settings,
            passphrase_for=lambda path: self.passphrase,
            admit=self._admit,
            secret=b"s" * 32,
        )
        self._events: list[tuple[float, int, str, bytes]] = []
        self._n = 0
        self._next_tick = self.now

    def _admit(self, conn: Connection) -> None:
        self.admit(conn)

    # ------------------------------------------------------------------ plumbing
    def _schedule(self, at: float, target: str, data: bytes) -> None:
        self._n += 1
        heapq.heappush(self._events, (at, self._n, target, data))

    def up(self, data: bytes, *, lose: bool | None = None) -> None:
        """The caller sends ``data`` now (subject to ``lose_up`` unless ``lose`` says)."""
        lost = self.lose_up(data) if lose is None else lose
        if not lost:
            self._schedule(self.now + self.delay, "listener", data)

    def _carry(self, out: Output) -> None:
        for job in out.derive:  # what the server runs in a worker thread
            self.listener.derived(job, job.run(), self.now)
            self._carry(self.listener.take())
        for data, addr in out.send:
            assert addr == ADDR
            self.down.append(data)
            if not self.lose_down(data):
                self._schedule(self.now + self.delay, "caller", data)
        for _conn, payloads in out.delivered:
            self.delivered.extend((self.now, p) for p in payloads)
        self.closed.extend(out.closed)
        self.rejected.extend(out.rejected)
        self.opened.extend(out.opened)

    def run_until(self, t: float) -> None:
        """Advance time to ``t``, carrying datagrams and ticking the listener."""
        while True:
            nxt = self._events[0][0] if self._events else float("inf")
            if min(nxt, self._next_tick) > t:
                break
            if self._next_tick <= nxt:
                self.now = self._next_tick
                self._next_tick += TICK
                self.listener.tick(self.now)
                self._carry(self.listener.take())
                continue
            at, _, target, data = heapq.heappop(self._events)
            self.now = at
            if target == "listener":
                self.listener.datagram(data, ADDR, self.now)
                self._carry(self.listener.take())
            else:
                for reply in self.caller.receive(data, self.now):
                    self.up(reply)
        self.now = t

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    # ------------------------------------------------------------------ scenarios
    def connect(self) -> Connection | None:
        """Handshake; the connection (None when refused)."""
        self.up(self.caller.induction(self.now), lose=False)
        self.run_for(4 * self.delay + 0.05)
        return self.opened[-1] if self.opened else None

    def stream(self, count: int, interval: float = 0.005, size: int = 1316) -> list[bytes]:
        """Send ``count`` payloads, one every ``interval``; the payloads."""
        sent = []
        for i in range(count):
            payload = i.to_bytes(4, "big") * (size // 4)
            sent.append(payload)
            self.up(self.caller.data(payload, self.now))
            self.run_for(interval)
        return sent

    @property
    def conn(self) -> Connection:
        return next(iter(self.listener.connections.values()))

    def sent_of_type(self, ctype: packet.ControlType) -> list[bytes]:
        return [d for d in self.down if ctype_of(d) == ctype]


def refuse(code: object, reason: str = "no") -> Callable[[Connection], None]:
    def admit(conn: Connection) -> None:
        raise Rejection(code, reason)  # type: ignore[arg-type]

    return admit
