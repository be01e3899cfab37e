"""Shared fixtures: one onvifcam server per session for the tests that can share it.

A failing test's report gets one section per onvifcam server that ran during the test (the
shared ``server`` fixture, module fixtures and servers the test started itself): the last
lines it logged since the test began, or, when no server logged anything meanwhile, the
lines before it. So a flake can be diagnosed after the server's directory is gone.

Under pytest-xdist (``bash scripts/dev.sh test`` runs ``-n 3 --dist loadgroup``) the tests
of a file that share a module-scoped fixture stay on one worker, so its server starts once;
the other tests are spread one by one (tests/xdist_groups.py).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import STARTED, ServerProc, forget_servers_stopped_before, servers_running_since

LOG_TAIL_LINES = 60
QUIET_LINES = 15
_TEST_START = pytest.StashKey[float]()
_LOG_OFFSETS = pytest.StashKey[dict[int, int]]()


_GROUPS_FILE = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """No timing checks in property tests: with three xdist workers on two cores, an example
    can take longer than hypothesis's 200 ms deadline, and generating inputs longer than its
    too_slow health check allows, with nothing wrong in the code. Tests that set either
    keep their own value. (Only when hypothesis's plugin loaded it: not worth an import.)"""
    if "hypothesis" in sys.modules:
        from hypothesis import HealthCheck, settings

        settings.register_profile(
            "onvifcam", deadline=None, suppress_health_check=[HealthCheck.too_slow]
        )
        settings.load_profile("onvifcam")


def _groups_file(config: pytest.Config) -> Path:
    """Controller under xdist: the file the workers write their groups to (made once)."""
    if _GROUPS_FILE not in config.stash:
        path = Path(tempfile.mkdtemp(prefix="onvifcam-xdist-")) / "groups.json"
        config.stash[_GROUPS_FILE] = path
        config.add_cleanup(lambda: shutil.rmtree(path.parent, ignore_errors=True))
    return config.stash[_GROUPS_FILE]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    from tests import xdist_groups  # imports xdist: only where it runs

    node.workerinput[xdist_groups.WORKERINPUT_KEY] = str(_groups_file(node.config))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``: the groups of tests/xdist_groups.py."""
    if config.getoption("dist") != "loadgroup":
        return None
    from tests import xdist_groups

    return xdist_groups.GroupScheduling(config, log, _groups_file(config))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Worker under xdist: write the groups of the tests collected."""
    path = getattr(config, "workerinput", {}).get("onvifcam_groups_file")
    if path is not None:
        from tests import xdist_groups

        xdist_groups.write_groups(Path(path), items, config.rootpath)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Note where each server's log stands; interop tests need real peers (fail, not skip)."""
    now = time.monotonic()
    forget_servers_stopped_before(now)
    item.stash[_TEST_START] = now
    item.stash[_LOG_OFFSETS] = {id(s): s.log_size() for s in STARTED}
    if "interop" in item.keywords:
        missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
        if missing:
            pytest.fail(f"missing {missing}: interop tests need real peers", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the log tail of every server that ran during a failed setup, call or teardown."""
    report = yield
    if report.failed and _TEST_START in item.stash:
        offsets = item.stash[_LOG_OFFSETS]
        active: list[tuple[str, str]] = []
        quiet: list[tuple[str, str]] = []
        for srv in servers_running_since(item.stash[_TEST_START]):
            offset = offsets.get(id(srv), 0)
            lines = srv.log_since(offset).splitlines()
            if lines:
                tail = lines[-LOG_TAIL_LINES:]
                omitted = len(lines) - len(tail)
                head = f"[{omitted} earlier lines of this test omitted]\n" if omitted else ""
                active.append((_title(srv, call.when), head + "\n".join(tail)))
            else:
                start = max(0, offset - 16384)
                before = srv.log_since(start).splitlines()[1 if start else 0 :][-QUIET_LINES:]
                note = "[nothing logged during this test; the lines before it:]\n"
                quiet.append((_title(srv, call.when), note + "\n".join(before)))
        # Servers that stayed quiet only matter when none spoke, and never to unit tests.
        if not active and "unit" not in item.path.parts:
            active = quiet
        report.sections.extend(active)
    return report


def _title(srv: ServerProc, when: str) -> str:
    ports = " ".join(f"{k}={v}" for k, v in srv.ports.items() if k in ("rtsp_port", "http_port"))
    rc = srv.proc.returncode if srv.proc is not None else None
    state = "running" if srv.stopped_at is None else f"stopped, exit code {rc}"
    return f"onvifcam server log {when} ({ports or 'not ready'}; {state})"


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProc]:
    """One shared onvifcam server with built-in defaults on free ports."""
    srv = ServerProc().start()
    yield srv
    srv.stop()
