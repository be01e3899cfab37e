"""ConnectionLimiter: caps, the reserve, per-address probation and budgets (injected clock)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from onvifcam.config import ConfigError, LimitsConfig, from_dict
from onvifcam.limits import MAX_TRACKED_ADDRESSES, ConnectionLimiter, Refusal, Ticket, address_key


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def ticket(x: Ticket | Refusal) -> Ticket:
    assert isinstance(x, Ticket), x
    return x


def refusal(x: Ticket | Refusal) -> Refusal:
    assert isinstance(x, Refusal), x
    return x


def test_cap_counts_active_connections() -> None:
    lim = ConnectionLimiter(2)
    a, b = ticket(lim.admit("10.0.0.1")), ticket(lim.admit("10.0.0.2"))
    r = refusal(lim.admit("10.0.0.3"))
    assert "server full" in r.reason and "[limits] max_connections" in str(r)
    assert r.retry_after > 0
    lim.release(a)
    lim.release(a)  # twice is harmless
    assert lim.active == 1
    ticket(lim.admit("10.0.0.3"))
    lim.release(b)
    assert lim.refused == 1


def test_reserve_is_kept_for_trusted_addresses() -> None:
    clock = Clock()
    lim = ConnectionLimiter(10, reserved=2, trusted_ttl=60, clock=clock)
    reader = ticket(lim.admit("10.0.0.1"))
    lim.authenticate(reader)  # a real user, reading
    floods = [ticket(lim.admit(f"10.1.0.{i}")) for i in range(8)]
    assert lim.unauthenticated == 8
    r = refusal(lim.admit("10.2.0.1"))  # an unknown address: refused
    assert "reserved_share" in r.hint
    # The reader's address gets a connection from the reserve...
    second = ticket(lim.admit("10.0.0.1"))
    lim.authenticate(second)
    # ...and keeps its standing for trusted_ttl after its last session ended.
    lim.release(second)
    lim.release(reader)
    clock.t += 59
    ticket(lim.admit("10.0.0.1"))
    clock.t += 2
    assert isinstance(lim.admit("10.0.0.1"), Refusal)
    # Authenticated connections do not fill the unauthenticated share.
    for t in floods[:3]:
        lim.authenticate(t)
    ticket(lim.admit("10.2.0.1"))


def test_nvr_burst_from_one_address_passes_the_defaults() -> None:
    # Hundreds of connections at once from one NVR: each authenticates with its DESCRIBE.
    clock = Clock()
    cfg = dataclasses.replace(LimitsConfig(), exempt_networks=())
    lim = ConnectionLimiter.from_config(cfg)
    lim.clock = clock
    tickets = [ticket(lim.admit("192.0.2.7")) for _ in range(200)]
    assert sum(1 for t in tickets if t.probation_until) == 200 - cfg.max_unauthenticated_per_ip
    clock.t += 0.5
    for t in tickets:
        lim.authenticate(t)
    clock.t += 60
    assert all(lim.overdue(t) is None for t in tickets)
    for t in tickets:
        lim.release(t)
    assert lim.check("192.0.2.7") is None  # authenticated readers spend nothing
    assert lim.active == 0 and lim.unauthenticated == 0


def test_probation_beyond_the_unauthenticated_cap() -> None:
    clock = Clock()
    lim = ConnectionLimiter(100, max_unauthenticated_per_ip=2, probation=3.0, clock=clock)
    held = [ticket(lim.admit("10.0.0.9")) for _ in range(2)]
    assert not any(t.probation_until for t in held)
    late, quick = ticket(lim.admit("10.0.0.9")), ticket(lim.admit("10.0.0.9"))
    assert late.probation_until == quick.probation_until == 1003.0
    other = ticket(lim.admit("10.0.0.10"))  # another address has its own count
    assert not other.probation_until
    clock.t += 1
    lim.authenticate(quick)
    assert lim.overdue(late) is None
    clock.t += 2
    r = lim.overdue(late)
    assert r is not None
    assert "more than 2 connections from 10.0.0.9" in r.reason
    assert "max_unauthenticated_per_ip" in r.hint
    assert lim.overdue(quick) is None and all(lim.overdue(t) is None for t in held)
    # Once one of the first two authenticates, the next newcomer is not on probation.
    lim.authenticate(held[0])
    lim.release(late)
    assert not ticket(lim.admit("10.0.0.9")).probation_until


def test_exempt_addresses_skip_per_address_rules() -> None:
    clock = Clock()
    lim = ConnectionLimiter(
        100,
        rate=1.0,
        burst=1,
        max_unauthenticated_per_ip=1,
        reserved=99,
        exempt=("127.0.0.0/8", "::1/128"),
        clock=clock,
    )
    tickets = [ticket(lim.admit(ip)) for ip in ("127.0.0.1", "127.0.0.2", "::1", "::1")]
    assert not any(t.probation_until for t in tickets)
    for t in tickets:
        lim.release(t)  # unauthenticated, but exempt: no budget spent
    for _ in range(5):
        lim.charge("127.0.0.1")
    assert lim.check("127.0.0.1") is None
    assert ticket(lim.admit("::ffff:127.0.0.1")).exempt
    # Only the exempt: a plain address is still subject to the reserve (99 of 100).
    assert isinstance(lim.admit("10.0.0.1"), Refusal)


def test_budget_pays_for_unproven_work_only() -> None:
    clock = Clock()
    lim = ConnectionLimiter(100, rate=2.0, burst=3, clock=clock)
    ip = "198.51.100.4"
    for _ in range(3):
        lim.release(ticket(lim.admit(ip)))  # connect, never log in, leave
    r = refusal(lim.admit(ip))
    assert "from 198.51.100.4" in r.reason and "per_ip_rate" in r.hint
    assert r.retry_after == 1
    assert lim.check(ip) is not None  # logins and publishes wait too
    assert lim.admit("198.51.100.5") is not None and lim.check("198.51.100.5") is None
    clock.t += 0.5  # one token back at 2/s
    t = ticket(lim.admit(ip))
    lim.authenticate(t)
    lim.release(t)  # proven: free
    assert lim.check(ip) is None
    lim.charge(ip)  # a failed login
    assert lim.check(ip) is not None


def test_budget_off_when_rate_is_zero() -> None:
    lim = ConnectionLimiter(10, rate=0.0, burst=0)
    for _ in range(20):
        lim.release(ticket(lim.admit("10.9.9.9")))
        lim.charge("10.9.9.9")
    assert lim.check("10.9.9.9") is None


def test_unauthenticated_timeout() -> None:
    clock = Clock()
    lim = ConnectionLimiter(10, unauthenticated_timeout=30.0, clock=clock)
    a, b = ticket(lim.admit("10.0.0.1")), ticket(lim.admit("10.0.0.1"))
    lim.authenticate(b)
    clock.t += 29.9
    assert lim.overdue(a) is None
    clock.t += 0.1
    r = lim.overdue(a)
    assert r is not None
    assert "unauthenticated_timeout" in r.hint
    assert lim.overdue(b) is None


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_address_keys(ip: str, key: str) -> None:
    assert address_key(ip) == key


def test_ipv6_addresses_of_one_prefix_share_a_budget() -> None:
    clock = Clock()
    lim = ConnectionLimiter(100, rate=1.0, burst=2, clock=clock)
    lim.release(ticket(lim.admit("2001:db8::1")))
    lim.release(ticket(lim.admit("2001:db8::2")))
    assert isinstance(lim.admit("2001:db8::3"), Refusal)
    assert isinstance(lim.admit("2001:db8:0:1::3"), Ticket)


def test_tracked_addresses_stay_bounded() -> None:
    clock = Clock()
    lim = ConnectionLimiter(10**6, rate=0.001, burst=5, clock=clock)
    n = MAX_TRACKED_ADDRESSES + 3000
    for i in range(n):
        ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        t = ticket(lim.admit(ip))
        if i % 2:
            lim.authenticate(t)
        lim.release(t)
        lim.log_gate(ip, "x")
        clock.t += 0.001
    assert len(lim._buckets) <= MAX_TRACKED_ADDRESSES
    assert len(lim._trusted) <= MAX_TRACKED_ADDRESSES
    assert len(lim._log_gates) <= MAX_TRACKED_ADDRESSES
    assert lim._unauth == {} and lim._authed == {}


def test_log_gate_one_line_per_address_and_kind() -> None:
    clock = Clock()
    lim = ConnectionLimiter(10, clock=clock)
    assert lim.log_gate("10.0.0.1", "timeout") == 0
    assert lim.log_gate("10.0.0.1", "timeout") is None
    assert lim.log_gate("10.0.0.1", "timeout") is None
    assert lim.log_gate("10.0.0.1", "refused") == 0
    assert lim.log_gate("10.0.0.2", "timeout") == 0
    clock.t += 10
    assert lim.log_gate("10.0.0.1", "timeout") == 2


def test_an_address_that_wasted_its_budget_pays_up_front() -> None:
    # A clean address connects for free (an NVR's burst); once it has wasted budget, each
    # new connection pays when admitted, so a second burst cannot outrun the budget.
    clock = Clock()
    lim = ConnectionLimiter(1000, rate=20.0, burst=50, clock=clock)
    first = [ticket(lim.admit("10.0.0.2")) for _ in range(200)]
    assert not any(t.prepaid for t in first)
    clock.t += 3
    for t in first:
        lim.release(t)  # the whole burst was cut off without logging in
    clock.t += 0.1  # two tokens back
    second = [lim.admit("10.0.0.2") for _ in range(200)]
    admitted = [t for t in second if isinstance(t, Ticket)]
    assert len(admitted) == 2 and all(t.prepaid for t in admitted)
    # A prepaid connection that authenticates gets its token back; one that does not
    # is not charged twice.
    lim.authenticate(admitted[0])
    lim.release(admitted[1])
    assert isinstance(lim.admit("10.0.0.2"), Ticket)
    assert isinstance(lim.admit("10.0.0.2"), Refusal)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"limits": {"new_connections_per_ip_per_s": 5.0}}, "renamed to 'per_ip_rate'"),
        ({"limits": {"new_connections_burst": 5}}, "renamed to 'per_ip_burst'"),
        ({"limits": {"exempt_networks": ["10.0.0.0/33"]}}, "exempt_networks"),
        ({"limits": {"reserved_share": 0.95}}, "reserved_share must be 0..0.9"),
        ({"limits": {"request_timeout": 0}}, "request_timeout must be positive"),
        ({"rtmp": {"max_message_bytes": 1 << 24}}, "max_message_bytes must be at most"),
        ({"rtmp": {"pre_publish_buffer_bytes": 100}}, "pre_publish_buffer_bytes"),
        ({"rtmp": {"max_buffer_bytes": 1000}}, "max_buffer_bytes must be at least"),
        ({"rtmp": {"max_chunk_streams": 2}}, "max_chunk_streams must be 4.."),
    ],
)
def test_limit_settings_are_validated(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(table)


def test_limiter_from_config() -> None:
    cfg = from_dict(
        {"limits": {"max_connections": 100, "reserved_share": 0.25, "exempt_networks": []}}
    ).limits
    lim = ConnectionLimiter.from_config(cfg)
    assert (lim.max_connections, lim.reserved, lim.exempt_networks) == (100, 25, ())
    assert ConnectionLimiter.from_config(LimitsConfig()).is_exempt("127.0.0.5")
    assert not ConnectionLimiter.from_config(LimitsConfig()).is_exempt("192.0.2.1")
