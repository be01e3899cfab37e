"""Real clients against real cameras: Home Assistant's add-camera sequence with
onvif-zeep-async, Media2 through zeep, ffprobe on the returned URIs, Digest-authenticated
snapshots, and the negative cases over HTTP. Every SOAP response is schema-validated."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import onvif
import pytest
import zeep.exceptions
from aiohttp import ClientSession, DigestAuthMiddleware
from onvif import ONVIFCamera
from onvif.client import ONVIFService
from onvif.exceptions import ONVIFError

from tests.helpers import (
    FFPROBE,
    ServerProc,
    ffmpeg_push,
    probe,
    rtsp_exchange,
    running,
    status_of,
    wait_online,
)
from tests.onvif_client import validating_zeep
from tests.onvif_schema import (
    created_now,
    envelope,
    fault_subcodes,
    security_header,
    validate,
)

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
WSDL = f"{os.path.dirname(onvif.__file__)}/wsdl/"
MEDIA2_WSDL = str(ROOT / "wsdl/ver20/media/wsdl/media.wsdl")
MEDIA2_BINDING = "{http://www.onvif.org/ver20/media/wsdl}Media2Binding"
TDS = 'xmlns="http://www.onvif.org/ver10/device/wsdl"'
TRT = 'xmlns="http://www.onvif.org/ver10/media/wsdl"'

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
address_port = 0
max_body = 65536

[[cameras]]
name = "Lobby"
path = "lobby"
sub_path = "lobby/sub"
username = "admin"
password = "secret"

[[cameras]]
name = "Dock"
path = "dock"
address = "127.0.0.2"
rtsp_listen = true
"""

SEEN: list[bytes] = []


@pytest.fixture(scope="module", autouse=True)
def validate_every_zeep_response() -> Iterator[None]:
    """Schema-validate every SOAP response onvif-zeep-async receives in this module."""
    with validating_zeep(SEEN.append):
        yield


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    """One server with two configured cameras and ffmpeg publishing main and sub streams."""
    with lobby_server() as server:
        yield server


@contextlib.contextmanager
def lobby_server() -> Iterator[ServerProc]:
    """A CONFIG server with ffmpeg publishing the Lobby camera's main and sub streams."""
    server = ServerProc(config=CONFIG).start()
    pubs = [
        ffmpeg_push(server.url("lobby"), frames=1_000_000, size="640x360", gop=25),
        ffmpeg_push(server.url("lobby/sub"), frames=1_000_000, size="320x180", gop=25, audio=False),
    ]
    try:
        wait_online(server.url("lobby"))
        wait_online(server.url("lobby/sub"))
        yield server
    finally:
        for p in pubs:
            with running(p):
                pass
        server.stop()


def api(srv: ServerProc) -> dict[str, dict[str, Any]]:
    """/api/cameras by camera name."""
    url = f"http://127.0.0.1:{srv.ports['http_port']}/api/cameras"
    with urllib.request.urlopen(url, timeout=10) as r:
        return {c["name"]: c for c in json.loads(r.read())["cameras"]}


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """POST and return status, headers and body (errors included)."""
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def ffprobe(url: str) -> dict[str, Any]:
    """The first video stream of a URL as ffprobe reports it."""
    r = subprocess.run(
        [FFPROBE, "-v", "error", "-rtsp_transport", "tcp", "-select_streams", "v:0",
         "-show_entries", "stream=codec_name,width,height", "-of", "json", url],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["streams"][0]


def jpeg_size(data: bytes) -> tuple[int, int]:
    """Decode a JPEG with PyAV; its width and height."""
    assert data[:2] == b"\xff\xd8"
    with av.open(io.BytesIO(data)) as c:
        f = next(c.decode(video=0))
        return f.width, f.height


# --------------------------------------------------------------------------- Home Assistant


def test_ready_line_has_http_port(srv: ServerProc) -> None:
    assert int(srv.ports["http_port"]) > 0
    cams = api(srv)
    assert cams["Lobby"]["port"] > 0 and cams["Lobby"]["online"]
    assert cams["Dock"]["address"] == "127.0.0.2"


def test_home_assistant_add_camera_sequence(srv: ServerProc) -> None:
    lobby = api(srv)["Lobby"]
    port = lobby["port"]

    async def sequence() -> None:
        # homeassistant/components/onvif: get_device() + async_setup_profiles()
        cam = ONVIFCamera("127.0.0.1", port, "admin", "secret", WSDL, no_cache=True)
        try:
            dm = await cam.create_devicemgmt_service()
            date = await dm.authless_GetSystemDateAndTime()  # unauthenticated, first
            assert date.UTCDateTime.Date.Year >= 2024
            await cam.update_xaddrs()
            assert cam.xaddrs["http://www.onvif.org/ver10/media/wsdl"].startswith(
                f"http://127.0.0.1:{port}/onvif/"
            )
            caps = await cam.get_capabilities()  # GetCapabilities
            assert caps["Media"]["XAddr"].endswith("/onvif/media_service")
            dm = await cam.create_devicemgmt_service()
            await dm.GetSystemDateAndTime()
            interfaces = await dm.GetNetworkInterfaces()
            enabled = next(i for i in interfaces if i.Enabled)
            assert enabled.Info.HwAddress == lobby["mac"]
            info = await dm.GetDeviceInformation()
            assert info.SerialNumber == lobby["serial"]
            media = await cam.create_media_service()
            media_caps = await media.GetServiceCapabilities()
            assert media_caps.SnapshotUri is True
            profiles = await media.GetProfiles()
            h264 = [
                p
                for p in profiles
                if p.VideoEncoderConfiguration and p.VideoEncoderConfiguration.Encoding == "H264"
            ]
            assert len(h264) == 2  # main and sub; HA aborts with no_h264 otherwise
            main = h264[0].VideoEncoderConfiguration.Resolution
            assert (main.Width, main.Height) == (640, 360)
            sub = h264[1].VideoEncoderConfiguration.Resolution
            assert (sub.Width, sub.Height) == (320, 180)
            sources = await media.GetVideoSources()
            assert h264[0].VideoSourceConfiguration.SourceToken == sources[0].token
            uris = []
            for p in h264:
                req = media.create_type("GetStreamUri")
                req.ProfileToken = p.token
                req.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
                uris.append((await media.GetStreamUri(req)).Uri)
            assert ffprobe(uris[0]) == {"codec_name": "h264", "width": 640, "height": 360}
            assert ffprobe(uris[1]) == {"codec_name": "h264", "width": 320, "height": 180}
            snap_uri = await cam.get_snapshot_uri(h264[0].token)
            assert snap_uri.startswith(f"http://127.0.0.1:{port}/onvif/snapshot")
            image = await cam.get_snapshot(h264[0].token)  # HTTP Digest, as HA does
            assert image is not None
            assert jpeg_size(image) == (640, 360)
        finally:
            await cam.close()

    asyncio.run(sequence())


def test_media2_get_stream_uri(srv: ServerProc) -> None:
    port = api(srv)["Lobby"]["port"]

    async def go() -> str:
        cam = ONVIFCamera("127.0.0.1", port, "admin", "secret", WSDL, no_cache=True)
        await cam.update_xaddrs()
        xaddr = cam.xaddrs["http://www.onvif.org/ver20/media/wsdl"]
        await cam.close()
        svc = ONVIFService(
            xaddr, "admin", "secret", MEDIA2_WSDL, no_cache=True, binding_name=MEDIA2_BINDING
        )
        await svc.setup()
        try:
            profiles = await svc.GetProfiles({"Type": ["All"]})
            assert profiles[0].Configurations.VideoEncoder.Encoding == "H264"
            r = await svc.GetStreamUri({"Protocol": "RtspUnicast", "ProfileToken": "Profile_1"})
            return str(r)
        finally:
            await svc.close()

    uri = asyncio.run(go())
    assert ffprobe(uri) == {"codec_name": "h264", "width": 640, "height": 360}


def test_main_port_path_per_camera(srv: ServerProc) -> None:
    hp = srv.ports["http_port"]

    async def go() -> None:
        dm = ONVIFService(
            f"http://127.0.0.1:{hp}/onvif/Lobby/device_service",
            "admin",
            "secret",
            WSDL + "devicemgmt.wsdl",
            no_cache=True,
            binding_name="{http://www.onvif.org/ver10/device/wsdl}DeviceBinding",
        )
        await dm.setup()
        try:
            services = await dm.GetServices({"IncludeCapability": True})
            xaddrs = {s.Namespace: s.XAddr for s in services}
            assert xaddrs["http://www.onvif.org/ver10/media/wsdl"] == (
                f"http://127.0.0.1:{hp}/onvif/Lobby/media_service"
            )
            info = await dm.GetDeviceInformation()
            assert info.Model == "Virtual Camera"
        finally:
            await dm.close()

    asyncio.run(go())


def test_camera_on_its_own_address(srv: ServerProc) -> None:
    dock = api(srv)["Dock"]
    base = f"http://127.0.0.2:{dock['port']}/onvif"
    status, _h, body = post(f"{base}/device_service", envelope(f"<GetCapabilities {TDS}/>"))
    assert status == 200
    validate(body)
    assert f"<tt:XAddr>{base}/device_service</tt:XAddr>".encode() in body
    # Dock has no users: authentication is off (logged loudly), so GetStreamUri answers.
    status, _h, body = post(
        f"{base}/media_service",
        envelope(
            f'<GetStreamUri {TRT}><StreamSetup><Stream xmlns="http://www.onvif.org/ver10/schema">'
            'RTP-Unicast</Stream><Transport xmlns="http://www.onvif.org/ver10/schema"><Protocol>'
            "RTSP</Protocol></Transport></StreamSetup><ProfileToken>Profile_1</ProfileToken>"
            "</GetStreamUri>"
        ),
    )
    validate(body)
    # rtsp_listen: the RTSP server also listens on the camera's own address, and the URI
    # names it, so an NVR sees one device per IP for ONVIF and RTSP alike
    assert f"rtsp://127.0.0.2:{srv.rtsp_port}/dock".encode() in body
    assert "authentication OFF" in srv.log()
    reply = rtsp_exchange(srv.rtsp_port, b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n", "127.0.0.2")
    assert status_of(reply) == 200
    assert [s["codec_type"] for s in probe(f"rtsp://127.0.0.2:{srv.rtsp_port}/lobby")] == [
        "video",
        "audio",
    ]


def test_offline_camera_snapshot_is_a_placeholder(srv: ServerProc) -> None:
    dock = api(srv)["Dock"]
    url = f"http://127.0.0.2:{dock['port']}/onvif/snapshot?profile=Profile_1"
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["Content-Type"] == "image/jpeg"
        assert r.headers["X-Snapshot"] == "placeholder"
        assert jpeg_size(r.read()) == (1920, 1080)


# --------------------------------------------------------------------------- negative cases


def _device_url(srv: ServerProc, service: str = "device_service") -> str:
    return f"http://127.0.0.1:{api(srv)['Lobby']['port']}/onvif/{service}"


def test_wrong_password_is_not_authorized(srv: ServerProc) -> None:
    port = api(srv)["Lobby"]["port"]

    async def go() -> None:
        cam = ONVIFCamera("127.0.0.1", port, "admin", "wrong", WSDL, no_cache=True)
        try:
            await cam.update_xaddrs()  # PRE_AUTH: works
            dm = await cam.create_devicemgmt_service()
            with pytest.raises((ONVIFError, zeep.exceptions.Fault)) as exc:
                await dm.GetDeviceInformation()
            assert "not authorized" in str(exc.value).lower()
        finally:
            await cam.close()

    asyncio.run(go())
    assert "ter:NotAuthorized" in fault_subcodes(SEEN[-1])


def test_replayed_nonce_refused_over_http(srv: ServerProc) -> None:
    data = envelope(f"<GetDeviceInformation {TDS}/>", security_header("admin", "secret"))
    status, _h, body = post(_device_url(srv), data)
    assert status == 200
    validate(body)
    status, _h, body = post(_device_url(srv), data)
    assert status == 400
    validate(body)
    assert fault_subcodes(body) == ["ter:NotAuthorized"]


def test_stale_created_refused_over_http(srv: ServerProc) -> None:
    header = security_header("admin", "secret", created=created_now(-3600))
    status, _h, body = post(_device_url(srv), envelope(f"<GetDeviceInformation {TDS}/>", header))
    assert status == 400
    validate(body)
    assert fault_subcodes(body) == ["ter:NotAuthorized"]


def test_no_credentials_gets_401_digest_challenge_with_soap_fault(srv: ServerProc) -> None:
    status, headers, body = post(_device_url(srv), envelope(f"<GetUsers {TDS}/>"))
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Digest ")
    assert headers["Content-Type"].startswith("application/soap+xml")
    validate(body)


def test_unknown_operation_is_a_soap_fault(srv: ServerProc) -> None:
    status, headers, body = post(_device_url(srv), envelope(f"<GetTeleporter {TDS}/>"))
    assert status == 500
    assert headers["Content-Type"].startswith("application/soap+xml")
    validate(body)
    assert fault_subcodes(body) == ["ter:ActionNotSupported"]


def test_malformed_xml_is_400_sender_fault(srv: ServerProc) -> None:
    status, _h, body = post(
        _device_url(srv), b"<s:Envelope><s:Body><Get", {"Content-Type": "application/xml"}
    )
    assert status == 400
    validate(body)
    assert fault_subcodes(body) == ["ter:WellFormed"]


def test_xxe_payload_is_refused(srv: ServerProc, tmp_path: Path) -> None:
    secret = tmp_path / "passwd"
    secret.write_text("root:TOPSECRET")
    data = (
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
        f"<SetHostname {TDS}><Name>&x;</Name></SetHostname></s:Body></s:Envelope>"
    ).encode()
    status, _h, body = post(_device_url(srv), data)
    assert status == 400
    validate(body)
    assert b"TOPSECRET" not in body


def test_oversized_body_is_refused(srv: ServerProc) -> None:
    data = envelope(f"<SetHostname {TDS}><Name>{'a' * 70000}</Name></SetHostname>")
    status, _h, body = post(_device_url(srv), data)
    assert status == 413
    validate(body)


def test_snapshot_needs_credentials_and_accepts_digest_and_basic(srv: ServerProc) -> None:
    url = _device_url(srv, "snapshot?profile=Profile_2")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(url, timeout=10)
    assert exc.value.code == 401
    assert exc.value.headers["WWW-Authenticate"].startswith("Digest ")

    async def fetch() -> list[bytes]:
        out = []
        mw = (DigestAuthMiddleware("admin", "secret"),)
        async with ClientSession() as s:
            async with s.get(url, middlewares=mw) as r:
                assert r.status == 200
                out.append(await r.read())
            basic = {"Authorization": "Basic " + base64.b64encode(b"admin:secret").decode()}
            async with s.get(url, headers=basic) as r:
                assert r.status == 200
                out.append(await r.read())
            async with s.get(url, middlewares=(DigestAuthMiddleware("admin", "x"),)) as r:
                assert r.status == 401
        return out

    for image in asyncio.run(fetch()):
        assert jpeg_size(image) == (320, 180)  # Profile_2 is the sub stream


def test_auto_camera_for_a_new_publisher(srv: ServerProc) -> None:
    with running(ffmpeg_push(srv.url("cams/auto"), frames=1_000_000, size="320x240", gop=25)):
        wait_online(srv.url("cams/auto"))
        cam = api(srv)["cams/auto"]
        assert cam["auto"] and cam["port"] > 0 and cam["slug"] == "cams-auto"
        status, _h, body = post(
            f"http://127.0.0.1:{cam['port']}/onvif/media_service",
            envelope(f"<GetProfiles {TRT}/>"),
        )
        assert status == 200  # no [onvif] username: auth is off for auto cameras here
        validate(body)
        assert b"<tt:Width>320</tt:Width><tt:Height>240</tt:Height>" in body
        hp = srv.ports["http_port"]
        status, _h, body = post(
            f"http://127.0.0.1:{hp}/onvif/cams-auto/device_service",
            envelope(f"<GetDeviceInformation {TDS}/>"),
        )
        assert status == 200
        assert cam["serial"].encode() in body
