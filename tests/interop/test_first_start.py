"""Safe first start: out of the box every camera needs the generated ONVIF admin password
(printed in the ready line, the same after a restart), ``[onvif] auth = false`` opens them,
and an NVR that logs in with a camera's ONVIF user can play the stream URI it was given
(onvif-zeep-async for ONVIF, ffmpeg/ffprobe for RTSP). Every SOAP response is validated."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import onvif
import pytest
from onvif import ONVIFCamera

from tests.helpers import (
    FFPROBE,
    ROOT,
    SERVE_PORTS_ZERO,
    ServerProc,
    ffmpeg_push,
    ffmpeg_read,
    running,
    wait_online,
)
from tests.onvif_client import validate_every_zeep_response  # noqa: F401 (autouse)
from tests.onvif_schema import envelope, fault_subcodes, security_header, validate

pytestmark = pytest.mark.interop

WSDL = f"{os.path.dirname(onvif.__file__)}/wsdl/"
TDS = 'xmlns="http://www.onvif.org/ver10/device/wsdl"'
TT = 'xmlns:tt="http://www.onvif.org/ver10/schema"'
SCOPE = "onvif://www.onvif.org/name/Changed"

CONFIG = """
[server]
host = "127.0.0.1"
rtsp_port = 0
rtmp_port = 0
http_port = 0

[rtsp]
rtp_port = 0

[onvif]
port_range_start = 0
port_range_end = 0

[paths."viewers"]
read_user = "viewer"
read_password = "viewpw"

[[cameras]]
name = "Lobby"
path = "lobby"

[[cameras]]
name = "Viewers"
path = "viewers"

[[cameras]]
name = "Vault"
path = "vault"
rtsp_auth = "onvif"
"""

CHANGES = {
    "CreateUsers": f"<CreateUsers {TDS} {TT}><User><tt:Username>mallory</tt:Username>"
    "<tt:Password>mallory1</tt:Password><tt:UserLevel>Administrator</tt:UserLevel></User>"
    "</CreateUsers>",
    "SetScopes": f"<SetScopes {TDS}><Scopes>{SCOPE}</Scopes></SetScopes>",
    "SystemReboot": f"<SystemReboot {TDS}/>",
}


def start(state: Path, config: str = CONFIG) -> ServerProc:
    """A server with the shipped ONVIF auth default (no ``auth = false`` added)."""
    return ServerProc(config=config, onvif_auth=True, state_dir=str(state)).start()


def cameras(srv: ServerProc) -> dict[str, dict[str, Any]]:
    """/api/cameras by camera name."""
    url = f"http://127.0.0.1:{srv.ports['http_port']}/api/cameras"
    with urllib.request.urlopen(url, timeout=10) as r:
        return {c["name"]: c for c in json.loads(r.read())["cameras"]}


def soap(port: int, body: str, header: str = "") -> tuple[int, bytes]:
    """POST a device_service request; status and validated body."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/onvif/device_service", data=envelope(body, header)
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, data = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, data = e.code, e.read()
    validate(data)
    return status, data


def rtsp_status(url: str) -> str:
    """ffprobe's verdict on a URL: "ok" or the error it printed."""
    r = subprocess.run(
        [FFPROBE, "-v", "error", "-rtsp_transport", "tcp", "-timeout", "4000000",
         "-show_entries", "stream=codec_name", "-of", "json", url],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if r.returncode == 0 and json.loads(r.stdout).get("streams"):
        return "ok"
    return r.stderr.strip() or f"exit {r.returncode}"


def with_login(uri: str, user: str, password: str) -> str:
    """``rtsp://host/...`` -> ``rtsp://user:password@host/...`` (as NVRs do)."""
    scheme, rest = uri.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest}"


def test_fresh_cameras_refuse_unauthenticated_changes_and_accept_the_printed_password(
    tmp_path: Path,
) -> None:
    srv = start(tmp_path / "state")
    try:
        user, password = srv.ports["onvif_user"], str(srv.ports["onvif_password"])
        assert user == "admin" and len(password) == 16
        with running(ffmpeg_push(srv.url("auto/cam"), frames=1_000_000, gop=25, audio=False)):
            wait_online(srv.url("auto/cam"))
            for _ in range(50):  # the auto camera's endpoint opens right after the publish
                cams = cameras(srv)
                if cams.get("auto/cam", {}).get("port"):
                    break
                time.sleep(0.1)
            ports = {name: cams[name]["port"] for name in ("Lobby", "auto/cam")}
            assert cams["Lobby"]["auth"] and cams["auto/cam"]["auth"]
            for name, port in ports.items():
                for op, body in CHANGES.items():
                    status, data = soap(port, body)  # no credentials at all
                    assert status == 401, (name, op, data)
                    assert fault_subcodes(data) == ["ter:NotAuthorized"], (name, op)
                    status, data = soap(port, body, security_header("admin", "admin"))
                    assert status == 400 and fault_subcodes(data) == ["ter:NotAuthorized"]

            async def change(port: int) -> list[str]:
                cam = ONVIFCamera("127.0.0.1", port, user, password, WSDL, no_cache=True)
                try:
                    dm = await cam.create_devicemgmt_service()
                    await dm.CreateUsers(
                        {"User": [{"Username": "bob", "Password": "bobpw", "UserLevel": "User"}]}
                    )
                    await dm.SetScopes({"Scopes": [SCOPE]})
                    scopes = [s.ScopeItem for s in await dm.GetScopes()]
                    assert SCOPE in scopes
                    users = [u.Username for u in await dm.GetUsers()]
                    assert "Rebooting" in str(await dm.SystemReboot())
                    return users
                finally:
                    await cam.close()

            for port in ports.values():
                assert asyncio.run(change(port)) == ["admin", "bob"]
    finally:
        srv.stop()


def test_the_password_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    srv = start(state)
    try:
        first = str(srv.ports["onvif_password"])
        log = srv.log()
        assert f"password {first!r} (generated now and kept in {state}" in log
        assert "http://127.0.0.1:" in log and "rtsp://127.0.0.1:" in log  # pasteable URLs
    finally:
        srv.stop()
    f = state / "onvif-admin-password"
    assert f.read_text() == first + "\n" and stat.S_IMODE(f.stat().st_mode) == 0o600
    srv = start(state)
    try:
        assert str(srv.ports["onvif_password"]) == first
        port = cameras(srv)["Lobby"]["port"]
        status, data = soap(port, f"<GetUsers {TDS}/>", security_header("admin", first))
        assert status == 200 and b"<tt:Username>admin</tt:Username>" in data
    finally:
        srv.stop()


def test_auth_false_opens_the_cameras(tmp_path: Path) -> None:
    config = CONFIG.replace("[onvif]\n", "[onvif]\nauth = false\n")
    srv = start(tmp_path / "state", config)
    try:
        assert srv.ports["onvif_auth"] == "off" and "onvif_password" not in srv.ports
        port = cameras(srv)["Lobby"]["port"]
        status, data = soap(port, CHANGES["SetScopes"])
        assert status == 200 and b"SetScopesResponse" in data
        assert "camera 'Lobby' has authentication OFF" in srv.log()
    finally:
        srv.stop()
    assert not (tmp_path / "state" / "onvif-admin-password").exists()


def test_an_nvr_plays_the_stream_uri_with_its_onvif_login(tmp_path: Path) -> None:
    srv = start(tmp_path / "state")
    pubs = [
        ffmpeg_push(srv.url(p), frames=1_000_000, gop=25, audio=False)
        for p in ("lobby", "viewers", "vault")
    ]
    try:
        password = str(srv.ports["onvif_password"])
        wait_online(srv.url("lobby"))
        wait_online(srv.url("vault", user="admin:" + password))
        wait_online(srv.url("viewers", user="viewer:viewpw"))
        cams = cameras(srv)

        async def stream_uri(port: int, user: str, pw: str) -> str:
            cam = ONVIFCamera("127.0.0.1", port, user, pw, WSDL, no_cache=True)
            try:
                await cam.update_xaddrs()
                media = await cam.create_media_service()
                profiles = await media.GetProfiles()
                req = media.create_type("GetStreamUri")
                req.ProfileToken = profiles[0].token
                req.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
                return str((await media.GetStreamUri(req)).Uri)
            finally:
                await cam.close()

        async def create_user(port: int) -> None:
            cam = ONVIFCamera("127.0.0.1", port, "admin", password, WSDL, no_cache=True)
            try:
                dm = await cam.create_devicemgmt_service()
                await dm.CreateUsers(
                    {"User": [{"Username": "nvr", "Password": "nvrpw", "UserLevel": "User"}]}
                )
            finally:
                await cam.close()

        # A path with read_user: the camera's ONVIF users may read it too (Digest, as ffmpeg
        # picks it); before, "unknown user 'admin'" refused the URI the camera just gave.
        uri = asyncio.run(stream_uri(cams["Viewers"]["port"], "admin", password))
        assert uri == f"rtsp://127.0.0.1:{srv.rtsp_port}/viewers"
        assert rtsp_status(with_login(uri, "admin", password)) == "ok"
        assert rtsp_status(with_login(uri, "viewer", "viewpw")) == "ok"
        assert "401" in rtsp_status(uri)
        assert "401" in rtsp_status(with_login(uri, "admin", "wrong"))
        read = ffmpeg_read(with_login(uri, "admin", password), io_timeout=2, extra=["-t", "2"])
        assert read.returncode == 0 and read.video_frames > 0, read.stderr

        # rtsp_auth = "onvif": the stream needs one of the camera's ONVIF users, including
        # users an NVR creates over ONVIF; the path's own read user of another path does not.
        vault = cams["Vault"]["port"]
        asyncio.run(create_user(vault))
        uri = asyncio.run(stream_uri(vault, "nvr", "nvrpw"))
        assert "401" in rtsp_status(uri)
        assert "401" in rtsp_status(with_login(uri, "viewer", "viewpw"))
        assert rtsp_status(with_login(uri, "nvr", "nvrpw")) == "ok"
        read = ffmpeg_read(with_login(uri, "admin", password), io_timeout=2, extra=["-t", "2"])
        assert read.returncode == 0 and read.video_frames > 0, read.stderr

        # RTSP reading stays open by default.
        uri = asyncio.run(stream_uri(cams["Lobby"]["port"], "admin", password))
        assert rtsp_status(uri) == "ok"
    finally:
        for p in pubs:
            with running(p):
                pass
        srv.stop()


def test_an_unwritable_state_dir_is_a_clear_start_error(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    r = subprocess.run(
        [sys.executable, "-m", "onvifcam", "serve", *SERVE_PORTS_ZERO, "--state-dir",
         str(blocker)],
        capture_output=True, text=True, timeout=30, cwd=str(ROOT),
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert str(blocker / "onvif-admin-password") in r.stderr and "state_dir" in r.stderr
    assert "Traceback" not in r.stderr and "onvifcam ready" not in r.stdout
