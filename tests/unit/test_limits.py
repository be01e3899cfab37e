"""ConnectionLimiter: a connection cap and a per-IP token bucket."""

from __future__ import annotations

from onvifcam.limits import ConnectionLimiter


def test_cap_counts_active_connections() -> None:
    lim = ConnectionLimiter(max_connections=2, rate=0, burst=0)
    assert lim.admit("a") is None and lim.admit("b") is None
    assert "too many connections (max 2)" in (lim.admit("c") or "")
    lim.release()
    assert lim.admit("c") is None
    assert lim.refused == 1


def test_rate_limit_is_per_ip_and_refills() -> None:
    lim = ConnectionLimiter(max_connections=100, rate=2.0, burst=3)
    t = 1000.0
    assert [lim.admit("1.2.3.4", t) for _ in range(3)] == [None, None, None]
    assert "too many new connections from 1.2.3.4" in (lim.admit("1.2.3.4", t) or "")
    assert lim.admit("5.6.7.8", t) is None, "another IP has its own bucket"
    assert lim.admit("1.2.3.4", t + 0.5) is None, "one token back after 0.5 s at 2/s"
    assert lim.admit("1.2.3.4", t + 0.5) is not None


def test_forgotten_buckets_keep_memory_bounded() -> None:
    lim = ConnectionLimiter(max_connections=10**6, rate=100.0, burst=1)
    for i in range(5000):
        lim.admit(f"10.0.{i // 256}.{i % 256}", 0.0 + i * 0.1)
        lim.release()
    assert len(lim._buckets) <= 4097
