"""A failing test's report carries the log of every onvifcam server that ran during it."""

from __future__ import annotations

import pytest

from tests.helpers import ROOT

pytest_plugins = ["pytester"]

# One shared server (the ``server`` fixture) for everything, to start only one: the tests
# run in this order (files and folders by name), and the last one stops it itself.
HELPER = """
from tests.helpers import rtsp_exchange


def describe(srv, path):
    request = f"DESCRIBE rtsp://127.0.0.1/{path} RTSP/1.0\\r\\nCSeq: 1\\r\\n\\r\\n"
    rtsp_exchange(srv.rtsp_port, request.encode())
"""
FIRST = """
from describe import describe


def test_passing(server):
    describe(server, "marker-passing")


def test_server_speaks(server):
    describe(server, "marker-speaks")
    assert False


def test_server_quiet():
    assert False
"""
LAST = """
from describe import describe


def test_server_stopped_before_the_failure(server):
    describe(server, "marker-stopped")
    server.stop()
    assert False
"""


@pytest.mark.timeout(300)  # a pytest run that starts a server (and an xdist worker)
@pytest.mark.parametrize("xdist", [[], ["-p", "xdist.plugin", "-n", "1"]], ids=["plain", "xdist"])
def test_failure_report_has_the_server_log_tail(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, xdist: list[str]
) -> None:
    """In one process and in an xdist worker (the sections travel to the controller)."""
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}:{pytester.path}")
    # none of the installed plugins (hypothesis, schemathesis...): seconds less to start
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest("from tests.conftest import *  # noqa: F403\n")
    pytester.makepyfile(describe=HELPER, test_a=FIRST)
    pytester.mkdir("unit")
    pytester.makepyfile(**{"unit/test_pure": "def test_pure():\n    assert False\n"})
    pytester.mkdir("zz")
    pytester.makepyfile(**{"zz/test_z": LAST})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *xdist)
    result.assert_outcomes(passed=1, failed=4)
    out = result.stdout.str()
    speaks, quiet, pure, stopped = (
        out.split(f"_ {name} _", 1)[1].split("\n_", 1)[0]
        for name in (
            "test_server_speaks",
            "test_server_quiet",
            "test_pure",
            "test_server_stopped_before_the_failure",
        )
    )
    # only what the server logged during the failing test
    assert "onvifcam server log call (rtsp_port=" in speaks and "; running)" in speaks
    assert "no stream is published at 'marker-speaks'" in speaks
    assert "marker-passing" not in speaks
    # no server logged anything during this test: the lines before it
    assert "[nothing logged during this test; the lines before it:]" in quiet
    assert "no stream is published at 'marker-speaks'" in quiet
    # unit tests talk to no server
    assert "onvifcam server log" not in pure
    # a server stopped during the test: its log outlives its directory
    assert "; stopped, exit code 0)" in stopped
    assert "no stream is published at 'marker-stopped'" in stopped
    assert "onvifcam.app: shutting down" in stopped
