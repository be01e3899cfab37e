"""Connection admission shared by the RTSP and RTMP servers (sans-I/O, injected clock).

One :class:`ConnectionLimiter` holds every rule about who may take a connection slot and
how much unproven work an address may cause. The servers call it at four points: a new
connection (:meth:`~ConnectionLimiter.admit`), a connection that proved itself
(:meth:`~ConnectionLimiter.authenticate`: a request passed authentication, or a publish
was accepted), a costly or failed action (:meth:`~ConnectionLimiter.check` before it,
:meth:`~ConnectionLimiter.charge` after it), and the end of a connection
(:meth:`~ConnectionLimiter.release`). :meth:`~ConnectionLimiter.overdue` tells the servers'
once-a-second housekeeping which connections to drop.

The rules:

- ``max_connections``: RTSP and RTMP connections together.
- ``reserved`` slots (``[limits] reserved_share`` of ``max_connections``): once
  ``max_connections - reserved`` connections are unauthenticated, new connections are
  taken only from trusted addresses (one of their connections authenticated now or within
  ``trusted_ttl`` seconds), so a flood of connections that never log in cannot lock out
  the cameras' real users.
- ``max_unauthenticated_per_ip``: an address may hold this many unauthenticated connections;
  further ones are let in on probation and dropped unless they authenticate within
  ``probation`` seconds. An NVR that opens hundreds of streams at once passes (each of its
  connections authenticates with its first DESCRIBE); a client that opens connections and
  never logs in keeps at most this many.
- A per-address token bucket (``rate`` per second, ``burst``) pays for unproven work: a
  connection that ends without authenticating, a failed login, a publish attempt. While
  it is empty the address gets no new connections, logins or publishes. Authenticated
  readers never spend from it. An address whose bucket is not full (it wasted some of it
  lately) pays for each new connection up front and gets the token back when the
  connection authenticates, so a burst cannot outrun the budget once the address has
  shown it wastes it; an address with a clean record connects for free.
- ``unauthenticated_timeout``: a connection must authenticate within this many seconds.
- Addresses in ``exempt`` networks skip every per-address rule; only ``max_connections``
  and the timeouts apply to them. IPv6 addresses are grouped by their /64 prefix.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onvifcam.config import LimitsConfig

#: How many per-address entries (buckets, trusted addresses, log gates) are kept at most.
MAX_TRACKED_ADDRESSES = 8192


@dataclass(frozen=True)
class Refusal:
    """Why a connection or action is refused: what happened, what to change, when to retry."""

    reason: str
    hint: str
    retry_after: int
    kind: str = ""  # for counters: server_full, reserved, budget, probation, timeout

    def __str__(self) -> str:
        return f"{self.reason}; {self.hint}"


class Ticket:
    """One admitted connection's standing with the limiter."""

    __slots__ = (
        "authenticated",
        "exempt",
        "ip",
        "key",
        "prepaid",
        "probation_until",
        "released",
        "since",
    )

    def __init__(self, ip: str, key: str, exempt: bool, since: float) -> None:
        self.ip = ip
        self.key = key  # the address the per-address rules count against (IPv6: its /64)
        self.exempt = exempt
        self.since = since
        self.authenticated = False
        self.probation_until = 0.0  # > 0: must authenticate before this time
        self.prepaid = False  # paid a token when admitted (refunded when it authenticates)
        self.released = False


def address_key(ip: str) -> str:
    """The per-address key: the IPv4 address, or the /64 prefix of an IPv6 address."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))
    return str(addr)


def _networks(items: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in items)


class ConnectionLimiter:
    """Admission and per-address budgets for RTSP and RTMP connections (see module doc)."""

    def __init__(
        self,
        max_connections: int,
        rate: float = 0.0,
        burst: int = 0,
        *,
        reserved: int = 0,
        max_unauthenticated_per_ip: int = 0,
        probation: float = 3.0,
        unauthenticated_timeout: float = 0.0,
        trusted_ttl: float = 600.0,
        exempt: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self.rate = rate
        self.burst = burst
        self.reserved = min(reserved, max_connections)
        self.max_unauthenticated_per_ip = max_unauthenticated_per_ip
        self.probation = probation
        self.unauthenticated_timeout = unauthenticated_timeout
        self.trusted_ttl = trusted_ttl
        self.exempt_networks = _networks(exempt)
        self.clock = clock
        self.active = 0
        self.unauthenticated = 0
        self.refused = 0
        self.probation_drops = 0
        self.refused_by: dict[str, int] = {}  # Refusal.kind -> count (admit and overdue)
        self._unauth: dict[str, int] = {}  # key -> unauthenticated connections
        self._authed: dict[str, int] = {}  # key -> authenticated connections
        self._trusted: dict[str, float] = {}  # key -> when its last authenticated one ended
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, time)
        self._log_gates: dict[tuple[str, str], tuple[float, int]] = {}

    @classmethod
    def from_config(cls, lim: LimitsConfig) -> ConnectionLimiter:
        """A limiter with the [limits] settings."""
        return cls(
            lim.max_connections,
            lim.per_ip_rate,
            lim.per_ip_burst,
            reserved=int(lim.max_connections * lim.reserved_share),
            max_unauthenticated_per_ip=lim.max_unauthenticated_per_ip,
            probation=lim.probation_timeout,
            unauthenticated_timeout=lim.unauthenticated_timeout,
            trusted_ttl=lim.trusted_address_ttl,
            exempt=lim.exempt_networks,
        )

    # ------------------------------------------------------------------ connections
    def is_exempt(self, ip: str) -> bool:
        """Whether ``ip`` is in one of the exempt networks."""
        if not self.exempt_networks:
            return False
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.exempt_networks)

    def admit(self, ip: str) -> Ticket | Refusal:
        """A new connection from ``ip``: its ticket, or why it is refused."""
        now = self.clock()
        key = address_key(ip)
        exempt = self.is_exempt(ip)
        refusal = self._admission(ip, key, exempt, now)
        if refusal is not None:
            self.refused += 1
            self.refused_by[refusal.kind] = self.refused_by.get(refusal.kind, 0) + 1
            return refusal
        ticket = Ticket(ip, key, exempt, now)
        if not exempt and self.rate > 0 and self._tokens(key, now) < self.burst:
            # An address that wasted some of its budget lately pays when it connects (a
            # clean one pays only if the connection ends unproven), so a burst of
            # connections cannot outrun the budget once it is in use.
            self._spend(key, now)
            ticket.prepaid = True
        unauth = self._unauth.get(key, 0)
        if (
            not ticket.exempt
            and self.max_unauthenticated_per_ip
            and unauth >= self.max_unauthenticated_per_ip
        ):
            ticket.probation_until = now + self.probation
        self._unauth[key] = unauth + 1
        self.unauthenticated += 1
        self.active += 1
        return ticket

    def _admission(self, ip: str, key: str, exempt: bool, now: float) -> Refusal | None:
        if self.active >= self.max_connections:
            return Refusal(
                f"server full: {self.active} connections are open",
                "raise [limits] max_connections",
                10,
                "server_full",
            )
        if exempt:
            return None
        if self.reserved and self.unauthenticated >= self.max_connections - self.reserved:
            if not self.trusted(key, now):
                return Refusal(
                    f"server nearly full: {self.unauthenticated} connections have not "
                    f"authenticated and the last {self.reserved} slots are kept for addresses "
                    "with an authenticated session",
                    "raise [limits] max_connections or lower reserved_share",
                    10,
                    "reserved",
                )
        return self._budget(ip, key, now)

    def trusted(self, key: str, now: float | None = None) -> bool:
        """Whether an address (its key) has an authenticated connection now or had one lately."""
        if self._authed.get(key):
            return True
        ended = self._trusted.get(key)
        if ended is None:
            return False
        t = self.clock() if now is None else now
        if t - ended <= self.trusted_ttl:
            return True
        del self._trusted[key]
        return False

    def authenticate(self, ticket: Ticket) -> None:
        """The connection passed authentication (or publishes/plays): it is proven."""
        if ticket.authenticated or ticket.released:
            return
        ticket.authenticated = True
        ticket.probation_until = 0.0
        if ticket.prepaid:
            ticket.prepaid = False
            now = self.clock()
            self._buckets[ticket.key] = (
                min(float(self.burst), self._tokens(ticket.key, now) + 1),
                now,
            )
        self._dec(self._unauth, ticket.key)
        self.unauthenticated -= 1
        self._authed[ticket.key] = self._authed.get(ticket.key, 0) + 1

    def release(self, ticket: Ticket) -> None:
        """The connection closed; one that never authenticated spends from its budget."""
        if ticket.released:
            return
        ticket.released = True
        self.active -= 1
        now = self.clock()
        if ticket.authenticated:
            if not self._dec(self._authed, ticket.key):
                self._remember(ticket.key, now)
        else:
            self.unauthenticated -= 1
            self._dec(self._unauth, ticket.key)
            if not ticket.exempt and not ticket.prepaid:
                self._spend(ticket.key, now)

    def overdue(self, ticket: Ticket) -> Refusal | None:
        """Why an unauthenticated connection must go now (probation, timeout), or None."""
        if ticket.authenticated or ticket.released:
            return None
        now = self.clock()
        if ticket.probation_until and now >= ticket.probation_until:
            self.probation_drops += 1
            self.refused_by["probation"] = self.refused_by.get("probation", 0) + 1
            return Refusal(
                f"more than {self.max_unauthenticated_per_ip} connections from {ticket.ip} "
                f"have not authenticated, and this one did not within {self.probation:g} s",
                "raise [limits] max_unauthenticated_per_ip, or add the address to exempt_networks",
                5,
                "probation",
            )
        if self.unauthenticated_timeout and now - ticket.since >= self.unauthenticated_timeout:
            self.refused_by["timeout"] = self.refused_by.get("timeout", 0) + 1
            return Refusal(
                f"no authenticated request within {self.unauthenticated_timeout:g} s",
                "raise [limits] unauthenticated_timeout",
                1,
                "timeout",
            )
        return None

    # ------------------------------------------------------------------ budgets
    def check(self, ip: str) -> Refusal | None:
        """Before a costly action (a login, a publish): refused while the budget is empty."""
        if self.is_exempt(ip):
            return None
        return self._budget(ip, address_key(ip), self.clock())

    def charge(self, ip: str) -> None:
        """A costly or failed action (failed login, publish attempt) spends one token."""
        if not self.is_exempt(ip):
            self._spend(address_key(ip), self.clock())

    def _tokens(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return float(self.burst)
        tokens, last = entry
        return min(float(self.burst), tokens + max(0.0, now - last) * self.rate)

    def _budget(self, ip: str, key: str, now: float) -> Refusal | None:
        if self.rate <= 0:
            return None
        tokens = self._tokens(key, now)
        if tokens >= 1.0:
            return None
        return Refusal(
            f"too many unauthenticated connections, failed logins or publish attempts "
            f"from {ip} (budget {self.rate:g}/s, burst {self.burst})",
            "raise [limits] per_ip_rate or per_ip_burst, or add the address to exempt_networks",
            max(1, math.ceil((1.0 - tokens) / self.rate)),
            "budget",
        )

    def _spend(self, key: str, now: float) -> None:
        if self.rate <= 0:
            return
        self._buckets[key] = (max(0.0, self._tokens(key, now) - 1.0), now)
        if len(self._buckets) > MAX_TRACKED_ADDRESSES:
            self._forget_buckets(now)

    def _forget_buckets(self, now: float) -> None:
        """Drop full buckets; if still too many, the oldest half (they refill anyway)."""
        for key in [k for k in self._buckets if self._tokens(k, now) >= self.burst]:
            del self._buckets[key]
        if len(self._buckets) > MAX_TRACKED_ADDRESSES:
            for key in list(self._buckets)[: len(self._buckets) // 2]:
                del self._buckets[key]

    def _remember(self, key: str, now: float) -> None:
        self._trusted.pop(key, None)
        self._trusted[key] = now  # re-inserted: the dict stays in order of time
        if len(self._trusted) > MAX_TRACKED_ADDRESSES:
            del self._trusted[next(iter(self._trusted))]

    @staticmethod
    def _dec(counts: dict[str, int], key: str) -> int:
        n = counts.get(key, 0) - 1
        if n > 0:
            counts[key] = n
            return n
        counts.pop(key, None)
        return 0

    # ------------------------------------------------------------------ logging
    def log_gate(self, ip: str, kind: str, interval: float = 10.0) -> int | None:
        """Throttle log lines about one address: None to stay quiet, else how many lines
        of this kind were held back since the last one (at most one per ``interval``)."""
        now = self.clock()
        gate = (address_key(ip), kind)
        last = self._log_gates.get(gate)
        if last is not None and now - last[0] < interval:
            self._log_gates[gate] = (last[0], last[1] + 1)
            return None
        if len(self._log_gates) >= MAX_TRACKED_ADDRESSES:
            stale = [g for g, (t, _n) in self._log_gates.items() if now - t >= interval]
            for g in stale or list(self._log_gates)[: MAX_TRACKED_ADDRESSES // 2]:
                del self._log_gates[g]
        self._log_gates[gate] = (now, 0)
        return 0 if last is None else last[1]

    def stats(self) -> dict[str, int]:
        """Counters for the status API and metrics."""
        return {
            "active": self.active,
            "unauthenticated": self.unauthenticated,
            "refused": self.refused,
            "probation_drops": self.probation_drops,
            "refused_by": dict(self.refused_by),
        }
