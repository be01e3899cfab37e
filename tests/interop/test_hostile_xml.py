"""Hostile XML against a live server: a FIFO named as the external DTD subset.

If libxml2 ever opened the FIFO, open() would block the event loop forever and RTSP, RTMP,
ONVIF and discovery would all stop. Both unauthenticated entry points are tried - a SOAP
POST on the camera's ONVIF port and one WS-Discovery datagram over loopback UDP - in UTF-8,
UTF-16 (LE/BE, with and without BOM) and UTF-32; after each, the server must still answer
GetSystemDateAndTime, an RTSP OPTIONS and a Probe.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onvifcam.discovery import wsdiscovery
from tests.helpers import ServerProc, rtsp_exchange, status_of
from tests.onvif_schema import envelope, fault_subcodes, validate

pytestmark = pytest.mark.interop

TDS = 'xmlns="http://www.onvif.org/ver10/device/wsdl"'
REFUSED = b"DTDs (DOCTYPE and ENTITY declarations) are not allowed"

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

[discovery]
port = 0
mdns = false
max_delay = 0.0
probes_per_source_per_s = 50.0
probe_burst = 50

[[cameras]]
name = "Lobby"
path = "lobby"
username = "admin"
password = "secret"
"""

BOMS = {
    "utf-8": b"\xef\xbb\xbf",
    "utf-16-le": b"\xff\xfe",
    "utf-16-be": b"\xfe\xff",
    "utf-32-le": b"\xff\xfe\x00\x00",
    "utf-32-be": b"\x00\x00\xfe\xff",
}
# (codec, BOM, XML declaration's encoding or None)
ENCODINGS = [
    ("utf-8", False, None),
    ("utf-8", True, "UTF-8"),
    ("utf-16-le", True, "UTF-16"),
    ("utf-16-be", True, "UTF-16"),
    ("utf-16-le", False, "UTF-16"),
    ("utf-16-be", False, "UTF-16"),
    ("utf-16-le", False, None),
    ("utf-32-le", True, "UTF-32"),
    ("utf-32-be", False, "UTF-32"),
]
IDS = [f"{c}{'-bom' if b else ''}{'-decl' if d else ''}" for c, b, d in ENCODINGS]


def hostile(xml: str, dtd: Path, codec: str, bom: bool, declared: str | None) -> bytes:
    """``xml`` (no declaration) behind a DOCTYPE naming ``dtd`` as its external subset."""
    text = f'<!DOCTYPE s:Envelope SYSTEM "file://{dtd}">\n{xml}'
    if declared:
        text = f'<?xml version="1.0" encoding="{declared}"?>\n{text}'
    return (BOMS[codec] if bom else b"") + text.encode(codec)


def without_declaration(data: bytes) -> str:
    return data.decode().partition("?>")[2] if data.startswith(b"<?xml") else data.decode()


@pytest.fixture(scope="module")
def fifos() -> list[Path]:
    """The FIFOs the tests of this module name (srv lets a stuck reader of them go)."""
    return []


@pytest.fixture(scope="module")
def srv(fifos: list[Path]) -> Iterator[ServerProc]:
    server = ServerProc(config=CONFIG).start()
    try:
        yield server
    finally:
        for path in fifos:  # unblock a stuck server first, or SIGTERM is never handled
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        server.stop()


def new_fifo(fifos: list[Path], tmp_path: Path) -> Path:
    path = tmp_path / "subset.dtd"
    os.mkfifo(path)
    fifos.append(path)
    return path


def device_url(srv: ServerProc) -> str:
    url = f"http://127.0.0.1:{srv.ports['http_port']}/api/cameras"
    with urllib.request.urlopen(url, timeout=10) as r:
        port = json.loads(r.read())["cameras"][0]["port"]
    return f"http://127.0.0.1:{port}/onvif/device_service"


def post(url: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/soap+xml"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def probe(srv: ServerProc) -> Any:
    """A unicast Probe to the discovery port; the parsed answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(10)
        u.sendto(wsdiscovery.build_probe(), ("127.0.0.1", srv.ports["discovery_port"]))
        data, _src = u.recvfrom(65536)
    return wsdiscovery.parse(data)


def assert_alive(srv: ServerProc) -> None:
    """The event loop still runs: ONVIF, RTSP and WS-Discovery all answer."""
    status, body = post(device_url(srv), envelope(f"<GetSystemDateAndTime {TDS}/>"))
    assert status == 200
    validate(body)
    reply = rtsp_exchange(srv.rtsp_port, b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
    assert status_of(reply) == 200
    assert isinstance(probe(srv), wsdiscovery.ProbeMatches)


@pytest.mark.parametrize(("codec", "bom", "declared"), ENCODINGS, ids=IDS)
def test_soap_post_naming_a_fifo_is_refused_and_the_server_keeps_answering(
    srv: ServerProc,
    fifos: list[Path],
    tmp_path: Path,
    codec: str,
    bom: bool,
    declared: str | None,
) -> None:
    dtd = new_fifo(fifos, tmp_path)
    xml = without_declaration(envelope(f"<GetSystemDateAndTime {TDS}/>"))
    status, body = post(device_url(srv), hostile(xml, dtd, codec, bom, declared))
    assert status == 400
    validate(body)
    assert fault_subcodes(body) == ["ter:WellFormed"]
    assert REFUSED in body
    assert_alive(srv)


@pytest.mark.parametrize(("codec", "bom", "declared"), ENCODINGS, ids=IDS)
def test_discovery_datagram_naming_a_fifo_is_dropped_and_the_server_keeps_answering(
    srv: ServerProc,
    fifos: list[Path],
    tmp_path: Path,
    codec: str,
    bom: bool,
    declared: str | None,
) -> None:
    dtd = new_fifo(fifos, tmp_path)
    xml = without_declaration(wsdiscovery.build_probe())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(1.0)
        u.sendto(
            hostile(xml, dtd, codec, bom, declared), ("127.0.0.1", srv.ports["discovery_port"])
        )
        with pytest.raises(TimeoutError):  # a refused Probe gets no ProbeMatch
            u.recvfrom(65536)
    assert_alive(srv)


def test_existing_and_missing_files_give_the_same_fault(srv: ServerProc, tmp_path: Path) -> None:
    """The fault must not tell whether a file exists on the server."""
    present = tmp_path / "present.dtd"
    present.write_text('<!ELEMENT s:Envelope ANY>\n<!ENTITY x "y">\n')
    xml = without_declaration(envelope(f"<GetSystemDateAndTime {TDS}/>"))
    answers = set()
    for dtd in (present, tmp_path / "missing.dtd", Path("/etc/hostname"), Path("/")):
        for codec, bom, declared in (("utf-8", False, None), ("utf-16-le", True, "UTF-16")):
            answers.add(post(device_url(srv), hostile(xml, dtd, codec, bom, declared)))
    assert len(answers) == 1
    status, body = answers.pop()
    assert status == 400
    assert REFUSED in body
