"""The HTTP listeners' sans-I/O parts: connection caps with idle eviction, log pacing,
bad-request reasons and Host header parsing."""

from __future__ import annotations

from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from hypothesis import given
from hypothesis import strategies as st

from onvifcam.addressing import host_from_header
from onvifcam.config import ConfigError, from_dict
from onvifcam.web.guard import ConnectionGuard, LogPacer
from onvifcam.web.listener import bad_request_reason


def test_per_ip_cap_refuses_and_frees_on_release() -> None:
    g: ConnectionGuard[int] = ConnectionGuard(max_total=10, max_per_ip=2)
    assert g.admit(1, "a").ok and g.admit(2, "a").ok
    v = g.admit(3, "a")
    assert not v.ok and v.cap == "per_ip" and "max 2" in v.reason
    assert g.admit(4, "b").ok  # another address is not affected
    g.release(1)
    g.release(1)  # twice is harmless
    assert g.admit(5, "a").ok
    assert g.open == 3 and g.count("a") == 2 and g.refused == 1


def test_global_cap_evicts_the_longest_idle_and_refuses_when_all_busy() -> None:
    g: ConnectionGuard[int] = ConnectionGuard(max_total=3, max_per_ip=10)
    for c in (1, 2, 3):
        assert g.admit(c, f"ip{c}").ok
    g.busy(1)  # 1 is handling a request: never evicted
    g.busy(2)
    g.idle(2)  # 2 finished: idle again, but more recently than 3
    v = g.admit(4, "ip4")
    assert v.ok and v.evict == 3 and v.cap == "total"
    v = g.admit(5, "ip5")
    assert v.ok and v.evict == 2
    g.busy(4)
    g.busy(5)
    v = g.admit(6, "ip6")
    assert not v.ok and v.cap == "total" and v.evict is None
    assert (g.open, g.evicted, g.refused) == (3, 2, 1)
    assert g.count("ip3") == 0 and g.count("ip2") == 0


@given(st.lists(st.tuples(st.sampled_from("arbi"), st.integers(0, 15), st.sampled_from("ab"))))
def test_guard_bounds_hold_for_any_sequence(ops: list[tuple[str, int, str]]) -> None:
    g: ConnectionGuard[int] = ConnectionGuard(max_total=4, max_per_ip=3)
    for op, conn, ip in ops:
        if op == "a" and conn not in g._ip_of:
            v = g.admit(conn, ip)
            if v.evict is not None:
                assert v.evict not in g._ip_of
        elif op == "r":
            g.release(conn)
        elif op == "b":
            g.busy(conn)
        else:
            g.idle(conn)
        assert g.open <= 4
        assert all(0 < n <= 3 for n in g._per_ip.values())
        assert sum(g._per_ip.values()) == g.open
        assert set(g._idle) <= set(g._ip_of)


def test_pacer_allows_a_burst_then_the_rate_and_summarises() -> None:
    p = LogPacer(rate=1.0, burst=3, every=10.0)
    assert [p.allow(100.0) for _ in range(5)] == [True, True, True, False, False]
    assert p.summary(105.0) == 0  # not due yet
    assert p.allow(101.0)  # one token refilled after a second
    assert not p.allow(101.0)
    assert p.summary(110.0) == 3
    assert p.summary(121.0) == 0  # nothing new suppressed


def test_bad_request_reason_is_one_line_without_the_request_bytes() -> None:
    exc = BadHttpMessage("Invalid header token:\n\n  b'Bad Header'\n       ^")
    assert bad_request_reason(exc, None) == "Invalid header token"
    long = LineTooLong(b"a" * 9000, 8190, 9000)
    assert bad_request_reason(long, None) == "request line or a header line is too long"
    odd = BadHttpMessage("Got \x00 more than: bytearray(b'xx')")
    assert bad_request_reason(odd, None) == "Got ? more than"
    assert len(bad_request_reason(None, "x" * 500)) == 120


def test_host_header_parsing() -> None:
    assert host_from_header("cams.example:8080") == "cams.example"
    assert host_from_header("Cams.Example") == "cams.example"
    assert host_from_header("192.0.2.7:80") == "192.0.2.7"
    assert host_from_header("[2001:db8::1]:8080") == "2001:db8::1"
    assert host_from_header("[::ffff:192.0.2.9]:80") == "192.0.2.9"
    for bad in ("", None, "0.0.0.0:8080", "[::]:80", "a b", "x<script>", "[::1", "é.example"):
        assert host_from_header(bad) == "", bad


def test_http_section_is_validated() -> None:
    cfg = from_dict({"http": {"max_connections": 10, "header_timeout": 2}})
    assert cfg.http.max_connections == 10 and cfg.http.header_timeout == 2.0
    for bad, why in (
        ({"max_connections": 0}, "at least 1"),
        ({"header_timeout": 0}, "header_timeout must be positive"),
        ({"max_header_bytes": 100}, "at least 1024"),
        ({"max_conections": 3}, "unknown key"),
    ):
        try:
            from_dict({"http": bad}, "f.toml")
        except ConfigError as exc:
            assert why in str(exc) and "f.toml" in str(exc)
        else:
            raise AssertionError(bad)


def test_fd_budget_raises_the_soft_limit_or_warns() -> None:
    """In a child process with a low open-file limit (the test's own limit is untouched)."""
    import resource
    import subprocess
    import sys

    code = (
        "import logging, resource\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from onvifcam.config import HttpConfig\n"
        "from onvifcam.web.listener import HttpGate\n"
        "HttpGate(HttpConfig(max_connections=512)).check_fd_budget(1024)\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )

    def run(soft: int, hard: int) -> tuple[int, str]:
        r = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
        )
        assert r.returncode == 0, r.stderr
        return int(r.stdout.strip()), r.stderr

    limit, err = run(256, 4096)
    assert limit == 512 + 1024 + 64 and "raised the open-file limit from 256" in err
    assert "exceed" not in err
    limit, err = run(256, 1000)
    assert limit == 1000 and "exceed the open-file limit (1000)" in err
    assert "[http] max_connections (512)" in err
