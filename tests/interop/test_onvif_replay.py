"""Requests of clients that cannot run here (fixtures/onvif: ONVIF Device Manager, Milestone
XProtect, Synology Surveillance Station, Blue Iris, Hikvision and Dahua NVRs, UniFi Protect)
replayed against one live camera, in each client's own envelope style, Content-Type and
order. Every answer must validate against wsdl/; no operation such a client needs to add
and record a camera may get a fault."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.helpers import ServerProc, ffmpeg_push, running, wait_online
from tests.interop.test_onvif_ha import api
from tests.onvif_schema import fault_subcodes, validate

pytestmark = pytest.mark.interop

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "onvif"
INDEX: list[dict[str, Any]] = tomllib.loads((FIXTURES / "index.toml").read_text())["request"]
CLIENTS = sorted({r["file"].split("/")[0] for r in INDEX})
USER, PASSWORD = "admin", "secret"
W, H = 320, 240

CONFIG = """
[[cameras]]
name = "Replay"
path = "replay"
sub_path = "replay/sub"
username = "admin"
password = "secret"
"""


@pytest.fixture(scope="module")
def camera() -> Iterator[int]:
    """One server, one camera with a live main stream; its own ONVIF port."""
    srv = ServerProc(config=CONFIG).start()
    pub = ffmpeg_push(srv.url("replay"), frames=1_000_000, size=f"{W}x{H}", gop=25)
    try:
        wait_online(srv.url("replay"))
        yield int(api(srv)["Replay"]["port"])
    finally:
        with running(pub):
            pass
        srv.stop()


def fill(text: str, auth: str) -> bytes:
    """The fixture with a fresh UsernameToken and this camera's tokens filled in."""
    nonce = os.urandom(16)
    created = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    digest = base64.b64encode(hashlib.sha1(nonce + created.encode() + PASSWORD.encode()).digest())
    values = {
        "USERNAME": USER,
        "DIGEST": digest.decode(),
        "NONCE": base64.b64encode(nonce).decode(),
        "CREATED": created,
        "PROFILE": "Profile_1",
        "SUBPROFILE": "Profile_2",
        "WIDTH": str(W),
        "HEIGHT": str(H),
    }
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    assert "{{" not in text, text
    return text.encode()


def post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_index_and_fixture_files_agree() -> None:
    """Every fixture is listed once and parses as a SOAP 1.2 envelope; every client named in
    the issue has requests, and the README names a source for each."""
    listed = {r["file"] for r in INDEX}
    files = {str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*.xml")}
    assert listed == files
    assert len(listed) == len(INDEX)
    for r in INDEX:
        root = etree.fromstring(fill((FIXTURES / r["file"]).read_text(), r["auth"]))
        assert etree.QName(root).localname == "Envelope", r["file"]
        assert r["service"] in ("device", "media", "media2") and r["expect"] in (
            "ok",
            "fault",
            "any",
        )
    readme = (FIXTURES / "README.md").read_text()
    for client in CLIENTS:
        assert f"`{client}/`" in readme, client
    assert len(CLIENTS) == 7


@pytest.mark.parametrize("client", CLIENTS)
def test_client_requests_get_schema_valid_answers(camera: int, client: str) -> None:
    failures = []
    for r in (r for r in INDEX if r["file"].startswith(client + "/")):
        body = fill((FIXTURES / r["file"]).read_text(), r["auth"])
        url = f"http://127.0.0.1:{camera}/onvif/{r['service']}_service"
        status, data = post(url, body, r["content_type"])
        validate(data)  # faults included
        faulted = status != 200
        if r["expect"] == "fault" and not faulted:
            failures.append(f"{r['file']}: expected a fault, got 200")
        if faulted and (r["needed"] or r["expect"] == "ok"):
            failures.append(f"{r['file']}: {status} {fault_subcodes(data)}")
    assert not failures, failures
