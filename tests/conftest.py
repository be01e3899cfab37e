"""Shared fixtures: one onvifcam server per session for the tests that can share it.

A failing test's report gets one section per onvifcam server that ran during the test (the
shared ``server`` fixture, module fixtures and servers the test started itself): the last
lines it logged since the test began, or, when no server logged anything meanwhile, the
lines before it. So a flake can be diagnosed after the server's directory is gone.

Under pytest-xdist (``bash scripts/dev.sh test`` runs ``-n 3 --dist loadgroup``) every test
that uses a module- or class-scoped fixture is put in one group per file, so the module's
shared server starts once on one worker; the other tests are spread one by one. The groups
go out first, the bigger ones before the smaller ones, and the single tests fill the gaps.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Generator, Iterator

import pytest

from tests.helpers import STARTED, ServerProc, forget_servers_stopped_before, servers_running_since

LOG_TAIL_LINES = 60
QUIET_LINES = 15
_TEST_START = pytest.StashKey[float]()
_LOG_OFFSETS = pytest.StashKey[dict[int, int]]()


_SHARED_SCOPES = ("module", "class", "package")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep each file whose tests share a module-scoped fixture on one xdist worker."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None or any(m.name == "xdist_group" for m in item.iter_markers()):
            continue
        defs = [d for ds in info.name2fixturedefs.values() for d in ds]
        if any(d.scope in _SHARED_SCOPES for d in defs):
            item.add_marker(
                pytest.mark.xdist_group(item.path.relative_to(config.rootpath).as_posix())
            )


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
