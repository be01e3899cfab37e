"""Every HTTP response of every listener (the main port, a camera's own ONVIF port, WHIP,
error pages, static files, the event stream) says ``Server: onvifcam`` and nothing about
Python's or aiohttp's versions; the RTSP ``Server:`` names no library either."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.request
from collections.abc import Iterator

import pytest

from tests.helpers import ServerProc, status_of
from tests.onvif_schema import envelope

pytestmark = pytest.mark.interop

CONFIG = """
[discovery]
enabled = false

[[cameras]]
name = "Gate"
path = "gate"
"""


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    s = ServerProc(CONFIG).start()
    yield s
    s.stop()


def camera_port(srv: ServerProc) -> int:
    url = f"http://127.0.0.1:{srv.ports['http_port']}/api/cameras"
    with urllib.request.urlopen(url, timeout=10) as r:
        return int({c["name"]: c for c in json.loads(r.read())["cameras"]}["Gate"]["port"])


def ask(
    port: int, method: str, path: str, body: bytes | None = None, ctype: str = ""
) -> tuple[int, list[str]]:
    """One request; (status, every Server header of the response)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": ctype} if ctype else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.msg.get_all("Server") or []
    finally:
        conn.close()


def raw(port: int, data: bytes) -> bytes:
    """Send raw bytes; the response head (up to the blank line) or all until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before everything was sent
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out.split(b"\r\n\r\n", 1)[0]


def server_headers(head: bytes) -> list[str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [v.strip() for k, _, v in (x.partition(":") for x in lines) if k.lower() == "server"]


SOAP = "application/soap+xml"


@pytest.mark.parametrize(
    ("where", "method", "path", "body", "ctype", "status"),
    [
        ("main", "GET", "/", None, "", 200),
        ("main", "GET", "/static/dashboard.css", None, "", 200),
        ("main", "GET", "/api/cameras", None, "", 200),
        ("main", "GET", "/nowhere", None, "", 404),
        ("main", "DELETE", "/api/sessions", None, "", 405),
        ("main", "POST", "/onvif/device_service", b"x" * 300_000, SOAP, 413),
        ("main", "POST", "/whip/gate", b"not sdp", "text/plain", None),
        (
            "camera",
            "POST",
            "/onvif/device_service",
            envelope("<tds:GetSystemDateAndTime/>"),
            SOAP,
            200,
        ),
        ("camera", "POST", "/onvif/device_service", envelope("<tds:NoSuchThing/>"), SOAP, 500),
        ("camera", "GET", "/nowhere", None, "", 404),
        ("camera", "POST", "/onvif/device_service", b"x" * 300_000, SOAP, 413),
    ],
)
def test_every_http_response_says_server_onvifcam(
    srv: ServerProc,
    where: str,
    method: str,
    path: str,
    body: bytes | None,
    ctype: str,
    status: int | None,
) -> None:
    port = srv.ports["http_port"] if where == "main" else camera_port(srv)
    got, servers = ask(int(port), method, path, body, ctype)
    if status is not None:
        assert got == status
    else:
        assert 400 <= got < 500, got  # WHIP refuses a non-SDP offer
    assert servers == ["onvifcam"]


def test_event_stream_and_error_pages_outside_the_app(srv: ServerProc) -> None:
    """A response the handler prepares itself (Server-Sent Events), a malformed request (a
    400 made by the connection handler) and a canned 431 (headers over the cap)."""
    main = int(srv.ports["http_port"])
    head = raw(main, b"GET /api/events/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(head) == 200 and server_headers(head) == ["onvifcam"], head
    for port in (main, camera_port(srv)):
        head = raw(port, b"GARBAGE\r\n\r\n")
        assert status_of(head) == 400 and server_headers(head) == ["onvifcam"], head
        big = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"y" * 60_000 + b"\r\n\r\n"
        head = raw(port, big)
        assert status_of(head) in (400, 431) and server_headers(head) == ["onvifcam"], head


def test_rtsp_server_header_names_no_library(srv: ServerProc) -> None:
    head = raw(srv.rtsp_port, b"OPTIONS rtsp://127.0.0.1/gate RTSP/1.0\r\nCSeq: 1\r\n\r\n")
    (value,) = server_headers(head)
    assert value.startswith("onvifcam"), value
    assert not any(x in value.lower() for x in ("python", "aiohttp", "gstreamer", "asyncio"))
