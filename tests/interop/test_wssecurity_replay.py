"""WS-Security replay protection and the Digest challenge, against a live server.

- A UsernameToken captured from a real client's GetSystemDateAndTime (onvif-zeep-async)
  cannot be replayed on CreateUsers to make a new Administrator.
- A User-level account that floods requests cannot push an Administrator's used nonce out
  of the replay cache; it is refused with a clear fault instead, logged once.
- curl --digest first POSTs an empty body and must get the 401 challenge, not a 400.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onvif
import pytest
from lxml import etree
from onvif import ONVIFCamera
from onvif.zeep_aiohttp import AIOHTTPTransport

from tests.helpers import ServerProc
from tests.onvif_schema import WSSE, envelope, fault_subcodes, security_header, validate

pytestmark = pytest.mark.interop

WSDL = f"{os.path.dirname(onvif.__file__)}/wsdl/"
TDS = 'xmlns="http://www.onvif.org/ver10/device/wsdl"'
TRT = 'xmlns="http://www.onvif.org/ver10/media/wsdl"'

# nonce_rate_per_user = 0.05/s with clock_skew = 300 s: each user may hold 30 nonces.
CONFIG = """
[server]
host = "127.0.0.1"
rtsp_port = 0
rtmp_port = 0
http_port = 0

[rtsp]
rtp_port = 0

[rtmp]
enabled = false

[discovery]
enabled = false

[onvif]
port_range_start = 0
port_range_end = 0
clock_skew = 300
nonce_rate_per_user = 0.05

[[cameras]]
name = "Lobby"
path = "lobby"
username = "admin"
password = "secret"
"""
PER_USER = 30


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    server = ServerProc(config=CONFIG).start()
    try:
        yield server
    finally:
        server.stop()


def device_url(srv: ServerProc, service: str = "device_service") -> str:
    url = f"http://127.0.0.1:{srv.ports['http_port']}/api/cameras"
    with urllib.request.urlopen(url, timeout=10) as r:
        port = json.loads(r.read())["cameras"][0]["port"]
    return f"http://127.0.0.1:{port}/onvif/{service}"


def post(url: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/soap+xml"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def create_user(name: str, password: str, level: str) -> str:
    return (
        f"<CreateUsers {TDS}><User><Username>{name}</Username><Password>{password}</Password>"
        f"<UserLevel>{level}</UserLevel></User></CreateUsers>"
    )


def users(srv: ServerProc) -> list[str]:
    status, body = post(
        device_url(srv), envelope(f"<GetUsers {TDS}/>", security_header("admin", "secret"))
    )
    assert status == 200, body
    validate(body)
    return [u.text for u in etree.fromstring(body).iter("{*}Username")]


def captured_zeep_token() -> Any:
    """Patches onvif-zeep-async's transport to keep every request it sends."""
    sent: list[bytes] = []
    orig = AIOHTTPTransport._post_internal

    async def spy(self: Any, address: str, message: Any, headers: Any) -> Any:
        sent.append(message if isinstance(message, bytes) else message.encode())
        return await orig(self, address, message, headers)

    return sent, spy


def test_token_captured_from_get_system_date_and_time_cannot_create_an_admin(
    srv: ServerProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent, spy = captured_zeep_token()
    monkeypatch.setattr(AIOHTTPTransport, "_post_internal", spy)
    port = int(device_url(srv).split(":")[2].split("/")[0])

    async def client() -> None:
        cam = ONVIFCamera("127.0.0.1", port, "admin", "secret", WSDL, no_cache=True)
        try:
            dm = await cam.create_devicemgmt_service()
            date = await dm.GetSystemDateAndTime()  # with WS-Security, as HA's later calls
            assert date.UTCDateTime.Date.Year >= 2024
        finally:
            await cam.close()

    asyncio.run(client())
    request = next(m for m in sent if b"GetSystemDateAndTime" in m and b"UsernameToken" in m)
    token = etree.fromstring(request).find(f".//{{{WSSE}}}Security")
    assert token is not None
    header = etree.tostring(token).decode()
    # the attacker replays the captured token, within its Created window, on CreateUsers
    status, body = post(
        device_url(srv), envelope(create_user("mallory", "Mallory-1x", "Administrator"), header)
    )
    assert status == 400
    validate(body)
    assert fault_subcodes(body) == ["ter:NotAuthorized"]
    assert "mallory" not in users(srv)


def test_raw_token_first_used_on_a_pre_auth_operation_is_not_replayable(srv: ServerProc) -> None:
    header = security_header("admin", "secret")
    status, body = post(device_url(srv), envelope(f"<GetSystemDateAndTime {TDS}/>", header))
    assert status == 200
    validate(body)
    body = envelope(create_user("mallory2", "Mallory-2x", "Administrator"), header)
    status, reply = post(device_url(srv), body)
    assert status == 400
    assert fault_subcodes(reply) == ["ter:NotAuthorized"]
    assert "mallory2" not in users(srv)


def test_user_flood_cannot_evict_an_admin_nonce_and_is_refused_clearly(srv: ServerProc) -> None:
    url = device_url(srv)
    status, body = post(
        url,
        envelope(create_user("viewer", "Viewer-pw1", "User"), security_header("admin", "secret")),
    )
    assert status == 200, body
    admin = security_header("admin", "secret")
    status, body = post(url, envelope(f"<GetUsers {TDS}/>", admin))  # the nonce to protect
    assert status == 200
    media = device_url(srv, "media_service")
    for i in range(PER_USER):
        status, body = post(
            media, envelope(f"<GetProfiles {TRT}/>", security_header("viewer", "Viewer-pw1"))
        )
        assert status == 200, (i, body)
    for _ in range(3):
        status, body = post(
            media, envelope(f"<GetProfiles {TRT}/>", security_header("viewer", "Viewer-pw1"))
        )
        assert status == 400
        validate(body)
        assert fault_subcodes(body) == ["ter:NotAuthorized"]
        text = etree.fromstring(body).findtext(".//{*}Text") or ""
        assert re.search(
            r"too many WS-Security tokens for user 'viewer': 30 nonces within the 300 s "
            r"clock-skew window .*\(\[onvif\] nonce_rate_per_user\); retry in \d+ s",
            text,
        ), text
    # the admin's used nonce is still remembered: its replay is refused
    status, body = post(
        url, envelope(create_user("mallory3", "Mallory-3x", "Administrator"), admin)
    )
    assert status == 400
    assert b"Sender not authorized" in body
    assert "mallory3" not in users(srv)
    assert srv.log().count("too many WS-Security tokens for user 'viewer'") == 1  # logged once


def test_curl_digest_gets_the_challenge_for_its_empty_first_post(
    srv: ServerProc, tmp_path: Path
) -> None:
    body = tmp_path / "body.xml"
    body.write_bytes(envelope(f"<GetDeviceInformation {TDS}/>"))
    out = tmp_path / "out.xml"
    r = subprocess.run(
        ["curl", "-sS", "-v", "--digest", "-u", "admin:secret", "--max-time", "20",
         "-H", "Content-Type: application/soap+xml", "--data-binary", f"@{body}",
         "-o", str(out), "-w", "%{http_code}", device_url(srv)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    statuses = re.findall(r"^< HTTP/1\.1 (\d{3})", r.stderr, re.M)
    assert statuses == ["401", "200"], r.stderr
    assert r.stdout == "200"
    validate(out.read_bytes())
    assert b"GetDeviceInformationResponse" in out.read_bytes()
