"""The landing page at ``/`` and the pasteable URLs in ``/api/cameras``, over real HTTP:
every URL given is used (SOAP, snapshot with Digest, ffprobe / RTSP OPTIONS), on loopback,
with ``advertise``, and with a wildcard listener in a network namespace."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest

from tests.helpers import (
    ServerProc,
    ffmpeg_push,
    in_netns,
    probe,
    rtsp_exchange,
    running,
    status_of,
    wait_online,
)
from tests.netns import can_make_netns, lan
from tests.onvif_schema import envelope, validate

pytestmark = pytest.mark.interop

LOBBY = 'Lobby <b>&"x"'
CONFIG = f"""
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
address_port = 0

[discovery]
enabled = false

[[cameras]]
name = {json.dumps(LOBBY)}
path = "lobby"
username = "admin"
password = "secret"

[[cameras]]
name = "Dock"
path = "dock"
address = "127.0.0.3"
rtsp_listen = true
auth = false
"""
URL_KEYS = ("onvif_url", "rtsp_url", "snapshot_url")


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """GET and return status, headers and body (errors included)."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def api(srv: ServerProc) -> dict[str, dict[str, Any]]:
    status, _h, body = get(f"http://127.0.0.1:{srv.ports['http_port']}/api/cameras")
    assert status == 200
    return {c["name"]: c for c in json.loads(body)["cameras"]}


def soap_time(url: str) -> None:
    """GetSystemDateAndTime at ``url`` answers with a schema-valid response."""
    req = urllib.request.Request(
        url,
        data=envelope("<tds:GetSystemDateAndTime/>"),
        headers={"Content-Type": "application/soap+xml"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        validate(r.read())


def get_digest(url: str, user: str, password: str) -> tuple[int, Any, bytes]:
    mgr = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    mgr.add_password(None, url, user, password)
    opener = urllib.request.build_opener(urllib.request.HTTPDigestAuthHandler(mgr))
    with opener.open(url, timeout=15) as r:
        return r.status, r.headers, r.read()


class Page(HTMLParser):
    """Text, tags, links and attributes of an HTML page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    server = ServerProc(CONFIG).start()
    with running(ffmpeg_push(server.url("lobby"), frames=1_000_000, size="320x240", gop=25)):
        wait_online(server.url("lobby"))
        yield server
    server.stop()


def test_api_urls_are_pasteable_and_work(srv: ServerProc) -> None:
    cams = api(srv)
    rtsp = srv.rtsp_port
    lobby, dock = cams[LOBBY], cams["Dock"]
    assert lobby["onvif_url"] == f"http://127.0.0.1:{lobby['port']}/onvif/device_service"
    assert lobby["snapshot_url"] == f"http://127.0.0.1:{lobby['port']}/onvif/snapshot"
    assert lobby["rtsp_url"] == f"rtsp://127.0.0.1:{rtsp}/lobby"
    assert dock["onvif_url"] == f"http://127.0.0.3:{dock['port']}/onvif/device_service"
    assert dock["rtsp_url"] == f"rtsp://127.0.0.3:{rtsp}/dock"  # its own RTSP listener
    for cam in cams.values():
        for key in URL_KEYS:
            assert "0.0.0.0" not in cam[key] and "ANY-ADDRESS" not in cam[key], cam

    for cam in cams.values():
        soap_time(cam["onvif_url"])
    status, headers, jpeg = get_digest(lobby["snapshot_url"], "admin", "secret")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
    assert headers["X-Snapshot"].startswith("live")
    status, headers, jpeg = get(dock["snapshot_url"])  # auth off, offline: placeholder
    assert status == 200 and headers["X-Snapshot"] == "placeholder" and jpeg[:2] == b"\xff\xd8"
    assert [s["codec_name"] for s in probe(lobby["rtsp_url"]) if s["codec_type"] == "video"] == [
        "h264"
    ]
    host, port = dock["rtsp_url"][len("rtsp://") :].split("/")[0].split(":")
    reply = rtsp_exchange(int(port), b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n", host=host)
    assert status_of(reply) == 200


def test_landing_page_lists_cameras_escaped_with_no_outside_assets(srv: ServerProc) -> None:
    cams = api(srv)
    status, headers, body = get(f"http://127.0.0.1:{srv.ports['http_port']}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    html = body.decode()
    assert html.startswith("<!DOCTYPE html>")
    assert "<b>&" not in html and "Lobby &lt;b&gt;&amp;&quot;x&quot;" in html
    page = Page(html)
    text = "".join(page.text)
    assert LOBBY in text and "Dock" in text
    assert "online" in text and "offline" in text
    for cam in cams.values():
        for key in URL_KEYS:
            assert cam[key] in text, (key, cam[key])
        assert ("href", cam["snapshot_url"]) in page.attrs
    assert not {"iframe", "object", "style"} & set(page.tags)
    for name, value in page.attrs:
        if name in ("href", "src", "action"):  # the dashboard's own files, nothing from elsewhere
            assert value in ("/api/cameras", "data:,") or value.startswith(
                ("http://127.0.0.", "/static/dashboard.")
            ), value
    assert "0.0.0.0" not in html and "ANY-ADDRESS" not in html
    # The page is there on a camera's own port as well, and HEAD works.
    req = urllib.request.Request(f"http://127.0.0.1:{cams[LOBBY]['port']}/", method="HEAD")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200 and r.read() == b""


def test_advertise_names_the_urls_except_a_camera_with_its_own_address() -> None:
    cfg = CONFIG.replace(
        'host = "127.0.0.1"', 'host = "127.0.0.1"\nadvertise = "cams.example.test"'
    )
    srv = ServerProc(cfg).start()
    try:
        cams = api(srv)
        lobby, dock = cams[LOBBY], cams["Dock"]
        assert lobby["onvif_url"].startswith("http://cams.example.test:")
        assert lobby["rtsp_url"] == f"rtsp://cams.example.test:{srv.rtsp_port}/lobby"
        assert dock["onvif_url"].startswith("http://127.0.0.3:")
        status, _h, body = get(f"http://127.0.0.1:{srv.ports['http_port']}/")
        assert status == 200 and b"http://cams.example.test:" in body
    finally:
        srv.stop()


WILDCARD = (
    '[server]\nhost = "0.0.0.0"\nrtsp_port = 0\nrtmp_port = 0\nhttp_port = 0\n'
    "[rtsp]\nrtp_port = 0\n[discovery]\nenabled = false\n"
    '[[cameras]]\nname = "Yard"\npath = "yard"\nauth = false\n'
)

FETCH = (
    "import json, sys, urllib.request\n"
    "req = urllib.request.Request(sys.argv[1], headers=json.loads(sys.argv[2]))\n"
    "sys.stdout.write(urllib.request.urlopen(req, timeout=10).read().decode())\n"
)


@pytest.mark.netns
@pytest.mark.skipif(not can_make_netns(), reason="needs root and iproute2 for namespaces")
def test_wildcard_listener_uses_the_request_host_never_the_wildcard() -> None:
    """Listening on 0.0.0.0 (inside a private namespace): the URLs carry the Host the
    client used, or the address it reached when the Host is unusable (0.0.0.0 too)."""
    import subprocess
    import sys

    with lan("wp") as net:
        srv = ServerProc(WILDCARD, netns=net.server).start()
        try:
            port = srv.ports["http_port"]

            def fetch(path: str, host: str | None = None) -> str:
                headers = {"Host": host} if host else {}
                r = subprocess.run(
                    ["ip", "netns", "exec", net.client, sys.executable, "-c", FETCH,
                     f"http://{net.server_ip}:{port}{path}", json.dumps(headers)],
                    capture_output=True, text=True, timeout=30,
                )  # fmt: skip
                assert r.returncode == 0, r.stderr[-2000:]
                return r.stdout

            def yard(host: str | None = None) -> dict[str, str]:
                return json.loads(fetch("/api/cameras", host))["cameras"][0]

            plain = yard()
            assert (
                plain["onvif_url"] == f"http://{net.server_ip}:{plain['port']}/onvif/device_service"
            )
            assert plain["rtsp_url"] == f"rtsp://{net.server_ip}:{srv.rtsp_port}/yard"
            named = yard(f"nvr-lab.test:{port}")
            assert named["onvif_url"] == f"http://nvr-lab.test:{plain['port']}/onvif/device_service"
            assert named["rtsp_url"] == f"rtsp://nvr-lab.test:{srv.rtsp_port}/yard"
            for bad in (f"0.0.0.0:{port}", "[::]", "evil<script>"):
                assert yard(bad)["onvif_url"] == plain["onvif_url"], bad
            page = fetch("/", f"0.0.0.0:{port}")
            assert f"http://{net.server_ip}:{plain['port']}/onvif/device_service" in page
            assert "0.0.0.0" not in page and "ANY-ADDRESS" not in page
            # The URL works from the other host.
            code = (
                "import sys, urllib.request\n"
                f"req = urllib.request.Request({plain['onvif_url']!r}, "
                f"data={envelope('<tds:GetSystemDateAndTime/>')!r}, "
                "headers={'Content-Type': 'application/soap+xml'})\n"
                "sys.stdout.write(urllib.request.urlopen(req, timeout=10).read().decode())\n"
            )
            validate(in_netns(net.client, code).encode())
        finally:
            srv.stop()
