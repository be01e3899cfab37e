"""A failing test's report carries the log of every onvifcam server that ran during it."""

from __future__ import annotations

import pytest

from tests.helpers import ROOT

pytest_plugins = ["pytester"]

INNER = """
from tests.helpers import ServerProc, rtsp_exchange


def describe(srv, path):
    request = f"DESCRIBE rtsp://127.0.0.1/{path} RTSP/1.0\\r\\nCSeq: 1\\r\\n\\r\\n"
    rtsp_exchange(srv.rtsp_port, request.encode())


def test_shared_server_quiet(server):
    describe(server, "marker-passing")


def test_shared_server(server):
    describe(server, "marker-shared")
    assert False


def test_own_server_stopped_before_the_failure():
    srv = ServerProc().start()
    try:
        describe(srv, "marker-own")
    finally:
        srv.stop()
    assert False


def test_without_a_server():
    assert False
"""


def test_failure_report_has_the_server_log_tail(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest("from tests.conftest import *  # noqa: F403\n")
    pytester.makepyfile(test_inner=INNER)
    pytester.mkpydir("unit")
    pytester.makepyfile(**{"unit/test_pure": "def test_pure():\n    assert False\n"})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=4)
    out = result.stdout.str()
    shared, own, without, pure = (
        out.split(f"_ {name} _", 1)[1].split("\n_", 1)[0]
        for name in (
            "test_shared_server",
            "test_own_server_stopped_before_the_failure",
            "test_without_a_server",
            "test_pure",
        )
    )
    # only what the server logged during the failing test, under one section per server
    assert "onvifcam server log call (rtsp_port=" in shared and "; running)" in shared
    assert "no stream is published at 'marker-shared'" in shared
    assert "marker-passing" not in shared
    # a server the test started and stopped itself: its log outlives its directory; the
    # shared server, quiet meanwhile, stays out
    assert own.count("onvifcam server log") == 1 and "; stopped, exit code 0)" in own
    assert "no stream is published at 'marker-own'" in own
    assert "onvifcam.app: shutting down" in own
    # no server logged anything during this test: the shared one's lines before it
    assert "[nothing logged during this test; the lines before it:]" in without
    assert "no stream is published at 'marker-shared'" in without
    # unit tests talk to no server
    assert "onvifcam server log" not in pure
