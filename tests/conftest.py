"""Shared fixtures: one onvifcam server per session for the tests that can share it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.helpers import ServerProc


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Interop tests need real peers; fail loudly (not skip, not xfail) when they are missing."""
    if "interop" in item.keywords:
        missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
        if missing:
            pytest.fail(f"missing {missing}: interop tests need real peers", pytrace=False)


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProc]:
    """One shared onvifcam server with built-in defaults on free ports."""
    srv = ServerProc().start()
    yield srv
    srv.stop()
