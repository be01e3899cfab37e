"""Identity, ports and every client change survive a server restart; SystemReboot works."""

from __future__ import annotations

import time
import urllib.error
from pathlib import Path

import pytest

from tests.helpers import ServerProc, ffmpeg_push, free_ports, running, wait_online
from tests.interop.test_onvif_ha import api, post
from tests.onvif_schema import envelope, security_header, validate

pytestmark = pytest.mark.interop

TDS = 'xmlns="http://www.onvif.org/ver10/device/wsdl"'
TRT = 'xmlns="http://www.onvif.org/ver10/media/wsdl"'
TT = 'xmlns:tt="http://www.onvif.org/ver10/schema"'


def config(base: int) -> str:
    return f"""
[server]
host = "127.0.0.1"
rtsp_port = 0
rtmp_port = 0
http_port = 0

[rtsp]
rtp_port = 0

[onvif]
port_range_start = {base}
port_range_end = {base + 30}
username = "auto"
password = "autopw"

[[cameras]]
name = "Lobby"
path = "lobby"
username = "admin"
password = "secret"
"""


def soap(port: int, service: str, body: str, user: str = "admin", pw: str = "secret") -> bytes:
    status, _h, data = post(
        f"http://127.0.0.1:{port}/onvif/{service}", envelope(body, security_header(user, pw))
    )
    validate(data)
    assert status == 200, data.decode()
    return data


def test_identity_and_changes_survive_restart(tmp_path: Path) -> None:
    base = free_ports(31)
    state = tmp_path / "state"
    args = ["--state-dir", str(state)]
    srv = ServerProc(config=config(base), extra_args=args).start()
    try:
        with running(ffmpeg_push(srv.url("auto/x"), frames=1_000_000, size="320x240", gop=25)):
            wait_online(srv.url("auto/x"))
            before = api(srv)
            auto = before["auto/x"]
            # auto cameras use the [onvif] credentials
            soap(auto["port"], "device_service", f"<GetDeviceInformation {TDS}/>", "auto", "autopw")
        lobby = before["Lobby"]
        port = lobby["port"]
        assert base <= port <= base + 30 and base <= auto["port"] <= base + 30
        soap(port, "media_service", f"<CreateProfile {TRT}><Name>kept</Name><Token>P_kept</Token>"
             "</CreateProfile>")  # fmt: skip
        soap(port, "device_service", f"<SetHostname {TDS}><Name>kept-host</Name></SetHostname>")
        soap(port, "device_service", f"<SetScopes {TDS}><Scopes>onvif://www.onvif.org/name/Kept"
             "</Scopes></SetScopes>")  # fmt: skip
        soap(port, "device_service", f"<CreateUsers {TDS} {TT}><User><tt:Username>bob"
             "</tt:Username><tt:Password>bobpw</tt:Password><tt:UserLevel>User</tt:UserLevel>"
             "</User></CreateUsers>")  # fmt: skip
    finally:
        srv.stop()

    srv = ServerProc(config=config(base), extra_args=args).start()
    try:
        after = api(srv)
        for name in ("Lobby", "auto/x"):
            for key in ("uuid", "mac", "serial", "port"):
                assert after[name][key] == before[name][key], (name, key)
        assert not after["auto/x"]["online"]
        # the offline auto camera shows the last-seen picture size
        data = soap(after["auto/x"]["port"], "media_service", f"<GetProfiles {TRT}/>", "auto",
                    "autopw")  # fmt: skip
        assert b"<tt:Width>320</tt:Width><tt:Height>240</tt:Height>" in data
        data = soap(port, "media_service", f"<GetProfiles {TRT}/>", "bob", "bobpw")
        assert b'token="P_kept"' in data
        data = soap(port, "device_service", f"<GetHostname {TDS}/>")
        assert b"<tt:Name>kept-host</tt:Name>" in data
        data = soap(port, "device_service", f"<GetScopes {TDS}/>")
        assert b"onvif://www.onvif.org/name/Kept" in data

        # SystemReboot restarts the camera's endpoint; it answers again afterwards.
        data = soap(port, "device_service", f"<SystemReboot {TDS}/>")
        assert b"SystemRebootResponse" in data
        deadline = time.monotonic() + 20
        while True:
            try:
                soap(port, "device_service", f"<GetDeviceInformation {TDS}/>")
                if "reboots" in srv.log():
                    break
            except (urllib.error.URLError, ConnectionError, AssertionError):
                pass
            assert time.monotonic() < deadline, srv.log()[-2000:]
            time.sleep(0.2)
    finally:
        srv.stop()
