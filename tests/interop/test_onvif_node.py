"""The npm `onvif` package (NVR integrations) connects to a camera, gets its stream URI and
drives its PTZ head."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ServerProc
from tests.interop.test_onvif_ha import api, ffprobe, lobby_server
from tests.onvif_schema import validate

pytestmark = pytest.mark.interop

NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the npm onvif package installed from the lockfile."""
    exe = shutil.which("node")
    assert exe is not None, "node is required (bash scripts/dev.sh test installs it)"
    if not (NODE_DIR / "node_modules" / "onvif").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "npm is required to install the onvif package"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300
        )
    return exe


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    """A server with the Lobby camera and ffmpeg publishing its main and sub streams."""
    with lobby_server() as server:
        yield server


def run_client(node: str, port: int, user: str, password: str) -> tuple[int, dict[str, Any]]:
    """Run the node client; its exit code and JSON report (every raw response validated)."""
    r = subprocess.run(
        [node, "onvif_client.js", "127.0.0.1", str(port), user, password],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(r.stdout)
    for resp in report["responses"]:
        validate(resp["xml"].encode())
    return r.returncode, report


def test_npm_onvif_connects_and_gets_the_stream_uri(node: str, srv: ServerProc) -> None:
    lobby = api(srv)["Lobby"]
    rc, report = run_client(node, lobby["port"], "admin", "secret")
    assert rc == 0, report.get("error")
    assert report["media2"] is True  # GetServices lists Media2, so the client uses it
    assert [p["token"] for p in report["profiles"]] == ["Profile_1", "Profile_2"]
    assert report["profiles"][0]["encoding"] == "H264"
    assert report["activeSource"]["width"] == 640
    assert report["uri"] == f"rtsp://127.0.0.1:{srv.rtsp_port}/lobby"
    assert report["snapshot"].startswith(f"http://127.0.0.1:{lobby['port']}/onvif/snapshot")
    assert report["serial"] == lobby["serial"]
    assert len(report["responses"]) >= 6
    assert ffprobe(report["uri"])["width"] == 640


def test_npm_onvif_wrong_password_fails_cleanly(node: str, srv: ServerProc) -> None:
    rc, report = run_client(node, api(srv)["Lobby"]["port"], "admin", "wrong")
    assert rc == 1
    assert "not authorized" in report["error"].lower()
    assert {r["status"] for r in report["responses"]} == {200, 400}


def test_npm_onvif_absolute_move_reaches_the_target(node: str, srv: ServerProc) -> None:
    """AbsoluteMove, then GetStatus until idle: the head stands at the target."""
    port = api(srv)["Lobby"]["port"]
    target = (0.5, -0.25, 0.4)
    r = subprocess.run(
        [node, "ptz_client.js", "127.0.0.1", str(port), "admin", "secret", *map(str, target)],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(r.stdout)
    assert r.returncode == 0, report.get("error")
    for resp in report["responses"]:
        validate(resp["xml"].encode())
    last = report["statuses"][-1]
    assert last["moveStatus"] == {"panTilt": "IDLE", "zoom": "IDLE"}
    got = (last["position"]["x"], last["position"]["y"], last["position"]["zoom"])
    assert got == pytest.approx(target, abs=1e-6)
