"""A reload applies new credentials at once: the next ONVIF request (onvif-zeep-async), API
call, RTSP publish (ffmpeg, Digest) and RTMP publish (stream key) is checked against the new
ones and the old ones are refused, while a publisher and a reader admitted before keep
running on their connections."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onvif
import pytest
import zeep.exceptions
from onvif import ONVIFCamera
from onvif.exceptions import ONVIFError

from tests.helpers import LiveReader, ServerProc, ffmpeg_push, running, wait_online
from tests.interop.test_rtmp import ffmpeg_push_rtmp
from tests.onvif_client import validate_every_zeep_response  # noqa: F401 - autouse fixture

pytestmark = pytest.mark.interop

WSDL = f"{os.path.dirname(onvif.__file__)}/wsdl/"

OLD = {
    "onvif": "old-onvif-pw",
    "cam": "old-cam-pw",
    "token": "old-token-0123456789",
    "api": "old-api-pw",
    "pub": "old-pub-pw",
    "key": "oldkey",
}
NEW = {
    "onvif": "new-onvif-pw",
    "cam": "new-cam-pw",
    "token": "new-token-9876543210",
    "api": "new-api-pw",
    "pub": "new-pub-pw",
    "key": "newkey",
}

CONFIG = """
[onvif]
port_range_start = 0
port_range_end = 0
username = "admin"
password = "{onvif}"

[api]
loopback_read = false
token = "{token}"
username = "apiuser"
password = "{api}"

[stats]
interval = 0

[defaults]
publish_user = "enc"
publish_password = "{pub}"

[paths."live/keyed"]
publish_key = "{key}"

[[cameras]]
name = "shared"
path = "pub"

[[cameras]]
name = "own"
path = "own"
username = "camuser"
password = "{cam}"
"""


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    s = ServerProc(config=CONFIG.format(**OLD), onvif_auth=True).start()
    yield s
    s.stop()


def api(srv: ServerProc, path: str, auth: str, method: str = "GET") -> tuple[int, Any]:
    """Status and JSON body of one API request with an Authorization header."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{srv.ports['http_port']}{path}",
        method=method,
        headers={"Authorization": auth},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def onvif_login_works(port: int, user: str, password: str) -> bool:
    """GetDeviceInformation with onvif-zeep-async (WS-Security PasswordDigest)."""

    async def go() -> bool:
        cam = ONVIFCamera("127.0.0.1", port, user, password, WSDL, no_cache=True)
        try:
            await cam.update_xaddrs()  # PRE_AUTH
            dm = await cam.create_devicemgmt_service()
            try:
                await dm.GetDeviceInformation()
            except (ONVIFError, zeep.exceptions.Fault) as exc:
                assert "not authorized" in str(exc).lower(), exc
                return False
            return True
        finally:
            await cam.close()

    return asyncio.run(go())


def publish_refused(proc: subprocess.Popen[str]) -> str:
    """ffmpeg's error output once it gave up (it must not have been admitted)."""
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0, err
    return err


def test_reload_applies_new_credentials(srv: ServerProc, tmp_path: Path) -> None:
    assert srv._tmp is not None
    cfg_path = Path(srv._tmp.name) / "config.toml"
    rtmp = f"rtmp://127.0.0.1:{srv.ports['rtmp_port']}/live/keyed"
    st, body = api(srv, "/api/cameras", f"Bearer {OLD['token']}")
    assert st == 200
    ports = {c["name"]: c["port"] for c in body["cameras"]}

    # before: the old credentials work
    assert onvif_login_works(ports["shared"], "admin", OLD["onvif"])
    assert onvif_login_works(ports["own"], "camuser", OLD["cam"])
    assert api(srv, "/api/sessions", basic("apiuser", OLD["api"]))[0] == 200
    old_url = srv.url("pub", user=f"enc:{OLD['pub']}")
    with running(ffmpeg_push(old_url, frames=100_000, gop=25, audio=False)) as pub:
        wait_online(srv.url("pub"))
        reader = LiveReader(srv.url("pub"))
        mark = srv.log_size()

        # reload through the API with the old token
        text = cfg_path.read_text()
        for k, v in OLD.items():
            text = text.replace(f'"{v}"', f'"{NEW[k]}"')
        cfg_path.write_text(text)
        st, summary = api(srv, "/api/reload", f"Bearer {OLD['token']}", "POST")
        assert st == 200, summary
        assert summary["restart_needed"] == [], summary
        assert "[onvif] password" in summary["applied"], summary
        assert summary["cameras"]["updated"] == ["own"], summary
        line = srv.wait_log("reload of ", since=mark)
        assert "needs a restart: nothing" in line, line

        # after: the old ones are refused, the new ones work
        assert not onvif_login_works(ports["shared"], "admin", OLD["onvif"])
        assert onvif_login_works(ports["shared"], "admin", NEW["onvif"])
        assert not onvif_login_works(ports["own"], "camuser", OLD["cam"])
        assert onvif_login_works(ports["own"], "camuser", NEW["cam"])
        assert api(srv, "/api/sessions", f"Bearer {OLD['token']}")[0] == 401
        assert api(srv, "/api/sessions", basic("apiuser", OLD["api"]))[0] == 401
        assert api(srv, "/api/sessions", f"Bearer {NEW['token']}")[0] == 200
        assert api(srv, "/api/sessions", basic("apiuser", NEW["api"]))[0] == 200

        refused = ffmpeg_push(srv.url("pub2", user=f"enc:{OLD['pub']}"), frames=50, audio=False)
        assert "401" in publish_refused(refused)
        fresh = ffmpeg_push(srv.url("pub2", user=f"enc:{NEW['pub']}"), frames=100_000, audio=False)
        with running(fresh):
            wait_online(srv.url("pub2"))
        rtmp_auth = f"?user=enc&pass={NEW['pub']}"
        publish_refused(ffmpeg_push_rtmp(f"{rtmp}{rtmp_auth}&key={OLD['key']}", frames=50))
        with running(ffmpeg_push_rtmp(f"{rtmp}{rtmp_auth}&key={NEW['key']}", frames=100_000)):
            wait_online(srv.url("live/keyed"))

        # the publisher and the reader admitted before the reload kept going
        before = reader.frames
        result = reader.stop_at(before + 25)
        assert result.video_frames >= before + 25
        assert pub.poll() is None
    log = srv.log()
    assert log.count("plays pub (") == 2, log[-3000:]  # wait_online's probe and the reader
