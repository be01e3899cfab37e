"""Sans-I/O admission and log pacing for the HTTP listeners.

:class:`ConnectionGuard` keeps one budget for every HTTP socket of the process (the main port
and each camera's own port): a global cap and a per-IP cap. When the global cap is reached a
new connection takes the place of the connection that has been idle longest (no request being
handled: waiting for headers or for its next keep-alive request); only when every connection
is busy is the newcomer refused. :class:`LogPacer` keeps log lines about hostile clients to a
token-bucket rate and counts the rest for a periodic "suppressed K" summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")


@dataclass(frozen=True)
class Admission(Generic[K]):
    """What to do with a new connection."""

    ok: bool
    evict: K | None = None  # admitted in place of this idle connection: close it
    reason: str = ""  # why it was refused ("" when admitted)
    cap: str = ""  # which cap was hit: "total" or "per_ip" ("" when none)


@dataclass
class ConnectionGuard(Generic[K]):
    """Counts open connections (any hashable key) globally and per source IP."""

    max_total: int
    max_per_ip: int
    refused: int = 0
    evicted: int = 0
    _ip_of: dict[K, str] = field(default_factory=dict)
    _per_ip: dict[str, int] = field(default_factory=dict)
    _idle: dict[K, None] = field(default_factory=dict)  # insertion order: longest idle first

    @property
    def open(self) -> int:
        """Connections admitted and not yet released."""
        return len(self._ip_of)

    def count(self, ip: str) -> int:
        """Open connections from ``ip``."""
        return self._per_ip.get(ip, 0)

    def admit(self, conn: K, ip: str) -> Admission[K]:
        """Account for a new connection from ``ip``; it starts idle (no request yet)."""
        if self._per_ip.get(ip, 0) >= self.max_per_ip:
            self.refused += 1
            return Admission(
                False,
                reason=f"too many connections from {ip} (max {self.max_per_ip})",
                cap="per_ip",
            )
        victim: K | None = None
        if len(self._ip_of) >= self.max_total:
            if not self._idle:
                self.refused += 1
                return Admission(
                    False, reason=f"too many connections (max {self.max_total})", cap="total"
                )
            victim = next(iter(self._idle))
            self.release(victim)
            self.evicted += 1
        self._ip_of[conn] = ip
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        self._idle[conn] = None
        return Admission(True, evict=victim, cap="total" if victim is not None else "")

    def busy(self, conn: K) -> None:
        """``conn`` has a complete request header: it may not be evicted."""
        self._idle.pop(conn, None)

    def idle(self, conn: K) -> None:
        """``conn`` finished its requests and waits for the next one (evictable)."""
        if conn in self._ip_of:
            self._idle.pop(conn, None)
            self._idle[conn] = None

    def release(self, conn: K) -> None:
        """``conn`` closed (or was evicted); releasing twice is harmless."""
        ip = self._ip_of.pop(conn, None)
        if ip is None:
            return
        self._idle.pop(conn, None)
        left = self._per_ip[ip] - 1
        if left:
            self._per_ip[ip] = left
        else:
            del self._per_ip[ip]


@dataclass
class LogPacer:
    """A token bucket for log lines: ``rate`` lines/s after a burst of ``burst``.

    ``allow(now)`` says whether to log a line; refused lines are counted, and ``summary(now)``
    returns that count (and resets it) at most once per ``every`` seconds.
    """

    rate: float
    burst: int
    every: float = 10.0
    suppressed: int = 0
    _tokens: float = -1.0
    _last: float = 0.0
    _last_summary: float = 0.0

    def allow(self, now: float) -> bool:
        """True when one more line may be logged now."""
        if self._tokens < 0:
            self._tokens, self._last, self._last_summary = float(self.burst), now, now
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.suppressed += 1
        return False

    def summary(self, now: float) -> int:
        """The number of lines suppressed since the last summary, if one is due; else 0."""
        if not self.suppressed or now - self._last_summary < self.every:
            return 0
        n, self.suppressed, self._last_summary = self.suppressed, 0, now
        return n
