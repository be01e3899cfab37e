"""A camera that behaves like hardware to a real client (onvif-zeep-async): encoder settings
set-then-get exactly and across a restart, network setters round-trip, live values that hold
still poll to poll, WS-Security that survives a client setting the camera clock an hour off,
and HTTP Digest as the fallback of a client whose token fails. Every SOAP response is
validated against wsdl/. One server (with one state directory) for the module."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onvif
import pytest
from aiohttp import BasicAuth, ClientSession, DigestAuthMiddleware
from onvif import ONVIFCamera
from onvif.client import ONVIFService

from tests.helpers import ServerProc, ffmpeg_push, free_port, running, wait_online
from tests.interop.test_onvif_ha import api
from tests.onvif_client import validate_every_zeep_response  # noqa: F401 (autouse)
from tests.onvif_schema import created_now, envelope, security_header, validate

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
WSDL = f"{os.path.dirname(onvif.__file__)}/wsdl/"
MEDIA2_WSDL = str(ROOT / "wsdl/ver20/media/wsdl/media.wsdl")
MEDIA2_BINDING = "{http://www.onvif.org/ver20/media/wsdl}Media2Binding"
NODE_DIR = Path(__file__).resolve().parent / "node"
TRT = 'xmlns="http://www.onvif.org/ver10/media/wsdl"'
TDS = 'xmlns="http://www.onvif.org/ver10/device/wsdl"'
# behind port mapping: the main HTTP port and RTSP port as clients reach them
ADVERTISED_HTTP = 18080
ADVERTISED_RTSP = 8554


def config(base: int) -> str:
    return f"""
[server]
host = "127.0.0.1"
rtsp_port = 0
rtmp_port = 0
http_port = 0
advertise = "127.0.0.1:{ADVERTISED_HTTP}"
advertise_rtsp_port = {ADVERTISED_RTSP}

[rtsp]
rtp_port = 0

[onvif]
port_range_start = {base}
port_range_end = {base + 10}

[[cameras]]
name = "Gate"
path = "gate"
sub_path = "gate/sub"
username = "admin"
password = "secret"

[[cameras]]
name = "Meta"
path = "meta"
username = "admin"
password = "secret"

[[cameras]]
name = "Mapped"
path = "mapped"
username = "admin"
password = "secret"
"""


class Lab:
    """The module's server: started, restarted on the same state directory and port."""

    def __init__(self, state: Path) -> None:
        self.base = free_port()
        self.state = state
        self.srv = self._start()
        self.port = api(self.srv)["Gate"]["port"]  # the camera's own ONVIF port

    def _start(self) -> ServerProc:
        args = ["--state-dir", str(self.state)]
        return ServerProc(config=config(self.base), extra_args=args).start()

    def restart(self) -> None:
        """Stop and start again; the camera keeps its port (it is persisted)."""
        self.srv.stop()
        self.srv = self._start()
        assert api(self.srv)["Gate"]["port"] == self.port


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("fidelity-state"))
    pub = ffmpeg_push(lab.srv.url("gate"), frames=1_000_000, size="640x360", gop=25)
    try:
        wait_online(lab.srv.url("gate"))
        yield lab
    finally:
        with running(pub):
            pass
        lab.srv.stop()


async def _camera(port: int) -> ONVIFCamera:
    cam = ONVIFCamera("127.0.0.1", port, "admin", "secret", WSDL, no_cache=True)
    await cam.update_xaddrs()
    return cam


async def _media2(cam: ONVIFCamera) -> ONVIFService:
    svc = ONVIFService(
        cam.xaddrs["http://www.onvif.org/ver20/media/wsdl"],
        "admin",
        "secret",
        MEDIA2_WSDL,
        no_cache=True,
        binding_name=MEDIA2_BINDING,
    )
    await svc.setup()
    return svc


ENCODER = {
    "Resolution": (320, 180),
    "Quality": 42.0,
    "FrameRateLimit": 10,
    "BitrateLimit": 777,
    "GovLength": 20,
    "H264Profile": "Baseline",
}


def _encoder_values(c: Any) -> dict[str, Any]:
    return {
        "Resolution": (c.Resolution.Width, c.Resolution.Height),
        "Quality": float(c.Quality),
        "FrameRateLimit": c.RateControl.FrameRateLimit,
        "BitrateLimit": c.RateControl.BitrateLimit,
        "GovLength": c.H264.GovLength,
        "H264Profile": c.H264.H264Profile,
    }


async def _set_settings(port: int) -> None:
    """What an NVR settings page sends: encoder (Media1 and Media2) and network setters."""
    cam = await _camera(port)
    try:
        media = await cam.create_media_service()
        conf = await media.GetVideoEncoderConfiguration({"ConfigurationToken": "VideoEncoder_1"})
        opts = await media.GetVideoEncoderConfigurationOptions(
            {"ConfigurationToken": "VideoEncoder_1"}
        )
        sizes = [(r.Width, r.Height) for r in opts.H264.ResolutionsAvailable]
        assert (640, 360) in sizes and ENCODER["Resolution"] in sizes
        conf.Resolution.Width, conf.Resolution.Height = ENCODER["Resolution"]
        conf.Quality = ENCODER["Quality"]
        conf.RateControl.FrameRateLimit = ENCODER["FrameRateLimit"]
        conf.RateControl.BitrateLimit = ENCODER["BitrateLimit"]
        conf.H264.GovLength = ENCODER["GovLength"]
        conf.H264.H264Profile = ENCODER["H264Profile"]
        await media.SetVideoEncoderConfiguration({"Configuration": conf, "ForcePersistence": True})
        m2 = await _media2(cam)
        try:
            (sub,) = await m2.GetVideoEncoderConfigurations(
                {"ConfigurationToken": "VideoEncoder_2"}
            )
            sub.RateControl.FrameRateLimit = 12.5
            sub.RateControl.BitrateLimit = 300
            sub.GovLength = 50
            sub.Quality = 33.0
            await m2.SetVideoEncoderConfiguration({"Configuration": sub})
        finally:
            await m2.close()
        dm = await cam.create_devicemgmt_service()
        await dm.SetNTP(
            {
                "FromDHCP": False,
                "NTPManual": [
                    {"Type": "DNS", "DNSname": "ntp.lab.example"},
                    {"Type": "IPv4", "IPv4Address": "192.0.2.123"},
                ],
            }
        )
        await dm.SetDNS(
            {
                "FromDHCP": False,
                "SearchDomain": ["lab.example"],
                "DNSManual": [{"Type": "IPv4", "IPv4Address": "192.0.2.53"}],
            }
        )
        await dm.SetNetworkProtocols(
            {"NetworkProtocols": [{"Name": "RTSP", "Enabled": True, "Port": [554]}]}
        )
        await dm.SetNetworkDefaultGateway({"IPv4Address": ["192.0.2.1"]})
        await dm.SetZeroConfiguration({"InterfaceToken": "eth0", "Enabled": True})
        await dm.SetIPAddressFilter(
            {
                "IPAddressFilter": {
                    "Type": "Allow",
                    "IPv4Address": [{"Address": "192.0.2.0", "PrefixLength": 24}],
                }
            }
        )
    finally:
        await cam.close()


async def _read_settings(port: int) -> dict[str, Any]:
    cam = await _camera(port)
    try:
        media = await cam.create_media_service()
        out: dict[str, Any] = {}
        conf = await media.GetVideoEncoderConfiguration({"ConfigurationToken": "VideoEncoder_1"})
        out["main"] = _encoder_values(conf)
        profiles = await media.GetProfiles()
        out["profile_main"] = _encoder_values(profiles[0].VideoEncoderConfiguration)
        m2 = await _media2(cam)
        try:
            (sub,) = await m2.GetVideoEncoderConfigurations(
                {"ConfigurationToken": "VideoEncoder_2"}
            )
            out["sub"] = (
                sub.RateControl.FrameRateLimit,
                sub.RateControl.BitrateLimit,
                sub.GovLength,
                sub.Quality,
            )
        finally:
            await m2.close()
        dm = await cam.create_devicemgmt_service()
        ntp = await dm.GetNTP()
        out["ntp"] = [(h.Type, h.DNSname or h.IPv4Address) for h in ntp.NTPManual]
        dns = await dm.GetDNS()
        out["dns"] = (list(dns.SearchDomain), [a.IPv4Address for a in dns.DNSManual])
        protocols = await dm.GetNetworkProtocols()
        out["rtsp"] = next(list(p.Port) for p in protocols if p.Name == "RTSP")
        gw = await dm.GetNetworkDefaultGateway()
        out["gateway"] = list(gw.IPv4Address)
        zc = await dm.GetZeroConfiguration()
        out["zeroconf"] = zc.Enabled
        f = await dm.GetIPAddressFilter()
        out["filter"] = (f.Type, [(a.Address, a.PrefixLength) for a in f.IPv4Address])
        return out
    finally:
        await cam.close()


WANT = {
    "main": ENCODER,
    "profile_main": ENCODER,
    "sub": (12.5, 300, 50, 33.0),
    "ntp": [("DNS", "ntp.lab.example"), ("IPv4", "192.0.2.123")],
    "dns": (["lab.example"], ["192.0.2.53"]),
    "rtsp": [554],
    "gateway": ["192.0.2.1"],
    "zeroconf": True,
    "filter": ("Allow", [("192.0.2.0", 24)]),
}


def _get_profiles_raw(port: int) -> bytes:
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/onvif/media_service",
        data=envelope(f"<GetProfiles {TRT}/>", security_header("admin", "secret")),
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    validate(body)
    return body


def test_profiles_hold_still_on_a_steady_stream(lab: Lab) -> None:
    """Five GetProfiles 1 s apart on a steady 25 fps stream: byte-identical answers, with
    the SPS frame rate and the real GOV length, once the new stream's values settled (the
    API says when; its raw measurements keep moving)."""
    port = lab.port
    deadline = time.monotonic() + 20
    while not api(lab.srv)["Gate"]["measured"].get("settled"):
        assert time.monotonic() < deadline, api(lab.srv)["Gate"]
        time.sleep(0.5)
    answers = []
    for i in range(5):
        if i:
            time.sleep(1.0)
        answers.append(_get_profiles_raw(port))
    assert all(a == answers[0] for a in answers), [a.decode()[-1500:] for a in answers]
    assert b"<tt:FrameRateLimit>25</tt:FrameRateLimit>" in answers[0]
    assert b"<tt:GovLength>25</tt:GovLength>" in answers[0]


def test_settings_stick_and_survive_a_restart(lab: Lab) -> None:
    asyncio.run(_set_settings(lab.port))
    assert asyncio.run(_read_settings(lab.port)) == WANT
    lab.restart()  # the publisher is gone with the old process: the camera is offline
    assert asyncio.run(_read_settings(lab.port)) == WANT


def test_clock_set_an_hour_off_locks_nobody_out(lab: Lab) -> None:
    port = lab.port

    async def go() -> None:
        first = await _camera(port)
        try:
            dm = await first.create_devicemgmt_service()
            ahead = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
            await dm.SetSystemDateAndTime(
                {
                    "DateTimeType": "Manual",
                    "DaylightSavings": False,
                    "TimeZone": {"TZ": "UTC0"},
                    "UTCDateTime": {
                        "Date": {"Year": ahead.year, "Month": ahead.month, "Day": ahead.day},
                        "Time": {
                            "Hour": ahead.hour,
                            "Minute": ahead.minute,
                            "Second": ahead.second,
                        },
                    },
                }
            )
        finally:
            await first.close()
        # a second client, which syncs to the time the camera reports (as zeep-async does)
        second = await _camera(port)
        try:
            dm = await second.create_devicemgmt_service()
            info = await dm.GetDeviceInformation()
            assert info.Model == "Virtual Camera"
        finally:
            await second.close()

    try:
        asyncio.run(go())
        # and a client that signs with its own (the host's) clock
        req_body = envelope(
            f"<GetProfiles {TRT}/>", security_header("admin", "secret", created=created_now())
        )
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{port}/onvif/media_service", data=req_body)
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
            validate(r.read())
    finally:
        asyncio.run(_reset_clock(port))


async def _reset_clock(port: int) -> None:
    cam = await _camera(port)
    try:
        dm = await cam.create_devicemgmt_service()
        await dm.SetSystemDateAndTime({"DateTimeType": "NTP", "DaylightSavings": False})
    finally:
        await cam.close()


def test_network_protocols_name_the_advertised_ports(lab: Lab) -> None:
    """Behind port mapping ([server] advertise = host:port, advertise_rtsp_port) the ports
    GetNetworkProtocols reports are the ones clients reach, like the XAddrs and stream URIs."""
    main = lab.srv.ports["http_port"]
    req = urllib.request.Request(
        f"http://127.0.0.1:{main}/onvif/mapped/device_service",
        data=envelope(f"<GetNetworkProtocols {TDS}/>", security_header("admin", "secret")),
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        tree = validate(r.read())
    ports = {
        p.findtext("{*}Name"): [int(x.text or "0") for x in p.findall("{*}Port")]
        for p in tree.iter("{http://www.onvif.org/ver10/device/wsdl}NetworkProtocols")
    }
    assert ports["HTTP"] == [ADVERTISED_HTTP]
    assert ports["RTSP"] == [ADVERTISED_RTSP]


def test_http_auth_carries_a_request_whose_token_fails(lab: Lab) -> None:
    """A client with a stale token (its clock skewed) that also authenticates over HTTP:
    aiohttp's Digest client (preemptive once challenged) and Basic. The token alone fails."""
    url = f"http://127.0.0.1:{lab.port}/onvif/media_service"
    plain = envelope(f"<GetProfiles {TRT}/>")

    def stale() -> bytes:
        token = security_header("admin", "secret", created=created_now(-7200))
        return envelope(f"<GetProfiles {TRT}/>", token)

    async def go() -> list[tuple[int, bytes]]:
        out = []
        mw = DigestAuthMiddleware("admin", "secret")
        async with ClientSession(middlewares=(mw,)) as s:
            for body in (plain, stale()):  # challenged once, then Digest goes with each request
                async with s.post(url, data=body) as r:
                    out.append((r.status, await r.read()))
        async with ClientSession(auth=BasicAuth("admin", "secret")) as s:
            async with s.post(url, data=stale()) as r:
                out.append((r.status, await r.read()))
        async with ClientSession() as s:
            async with s.post(url, data=stale()) as r:
                out.append((r.status, await r.read()))
        return out

    results = asyncio.run(go())
    for _status, data in results:
        validate(data)
    assert [status for status, _data in results] == [200, 200, 200, 400]
    assert all(b"GetProfilesResponse" in data for _s, data in results[:3])


def test_npm_onvif_settings_round_trip_and_survive_a_restart(lab: Lab) -> None:
    """The npm `onvif` package sets the encoder (over Media2, as it does when the camera has
    it) and NTP, and reads back exactly that, also after a restart."""
    node = node_binary()

    def run(mode: str) -> dict[str, Any]:
        r = subprocess.run(
            [node, "settings_client.js", "127.0.0.1", str(lab.port), "admin", "secret", mode],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )
        report = json.loads(r.stdout)
        for resp in report["responses"]:
            validate(resp["xml"].encode())
        assert r.returncode == 0, report.get("error")
        return report

    def read_back(report: dict[str, Any]) -> tuple[Any, ...]:
        enc = next(e for e in report["encoders"] if e["$"]["token"] == "VideoEncoder_1")
        rc = enc["rateControl"]
        manual = report["ntp"]["NTPManual"]
        return (
            enc["name"],
            (enc["resolution"]["width"], enc["resolution"]["height"]),
            enc["quality"],
            rc["frameRateLimit"],
            rc["bitrateLimit"],
            enc["$"]["GovLength"],
            enc["$"]["Profile"],
            manual["IPv4Address"] if isinstance(manual, dict) else manual[0]["IPv4Address"],
        )

    want = ("FromNode", (640, 360), 61, 20, 1500, 40, "High", "192.0.2.77")
    first = run("set")
    assert first["media2"] is True
    assert read_back(first) == want
    lab.restart()
    assert read_back(run("get")) == want


def node_binary() -> str:
    """node with the npm onvif package (installed from the lockfile by test_onvif_node)."""
    exe = shutil.which("node")
    if exe is None or not (NODE_DIR / "node_modules" / "onvif").is_dir():
        pytest.skip("node and tests/interop/node/node_modules (npm ci) are needed")
    return exe


# --------------------------------------------------------------------------- metadata
META_SDP = (
    "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=meta\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=application 0 RTP/AVP 107\r\na=rtpmap:107 vnd.onvif.metadata/90000\r\n"
    "a=control:streamid=0\r\n"
)
META_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?><tt:MetadataStream '
    b'xmlns:tt="http://www.onvif.org/ver10/schema"><tt:VideoAnalytics>'
    b'<tt:Frame UtcTime="2024-01-01T00:00:00Z"/></tt:VideoAnalytics></tt:MetadataStream>'
)


class RawRtsp:
    """A bare RTSP/TCP client: requests with CSeq and Session, interleaved frames."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.cseq = 0
        self.session = ""

    def request(self, method: str, url: str, headers: str = "", body: str = "") -> str:
        self.cseq += 1
        head = f"{method} {url} RTSP/1.0\r\nCSeq: {self.cseq}\r\n{headers}"
        if self.session:
            head += f"Session: {self.session}\r\n"
        if body:
            head += f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n"
        self.sock.sendall(f"{head}\r\n{body}".encode())
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        text = raw.decode()
        m = re.search(r"(?im)^content-length:\s*(\d+)", text)
        n = int(m.group(1)) if m else 0
        while len(self.buf) < n:
            self.buf += self.sock.recv(65536)
        payload, self.buf = self.buf[:n], self.buf[n:]
        assert text.startswith("RTSP/1.0 200"), text
        sm = re.search(r"(?im)^session:\s*([^;\r\n]+)", text)
        if sm:
            self.session = sm.group(1).strip()
        return text + "\r\n\r\n" + payload.decode()

    def send_rtp(self, seq: int, payload: bytes) -> None:
        rtp = struct.pack("!BBHII", 0x80, 0x80 | 107, seq, seq * 9000, 0x1234) + payload
        self.sock.sendall(b"$\x00" + struct.pack("!H", len(rtp)) + rtp)

    def read_rtp(self, deadline: float) -> bytes:
        """The payload of the next interleaved frame on channel 0."""
        while time.monotonic() < deadline:
            if len(self.buf) >= 4 and self.buf[:1] == b"$":
                n = struct.unpack("!H", self.buf[2:4])[0]
                if len(self.buf) >= 4 + n:
                    ch, frame, self.buf = self.buf[1], self.buf[4 : 4 + n], self.buf[4 + n :]
                    if ch == 0:
                        return frame[12:]
                    continue
            self.buf += self.sock.recv(65536)
        raise AssertionError("no metadata packet arrived")

    def close(self) -> None:
        self.sock.close()


def test_a_pushed_metadata_track_is_the_metadata_configuration(lab: Lab) -> None:
    """An encoder ANNOUNCEs an ONVIF metadata track: the main profile gets the metadata
    configuration (Media1 and Media2, Analytics and Events on), and the stream URI of
    that profile delivers the pushed XML to a reader."""
    rtsp_port = lab.srv.rtsp_port
    url = f"rtsp://127.0.0.1:{rtsp_port}/meta"
    pub = RawRtsp(rtsp_port)
    stop = threading.Event()

    def push() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            pub.send_rtp(seq, META_XML)
            stop.wait(0.1)

    pusher = threading.Thread(target=push, daemon=True)
    try:
        pub.request("ANNOUNCE", url, body=META_SDP)
        transport = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n"
        pub.request("SETUP", f"{url}/streamid=0", transport)
        pub.request("RECORD", url)
        pusher.start()
        port = api(lab.srv)["Meta"]["port"]

        async def go() -> tuple[Any, Any, Any, str]:
            cam = await _camera(port)
            try:
                media = await cam.create_media_service()
                profiles = await media.GetProfiles()
                (mdc1,) = await media.GetMetadataConfigurations()
                req = media.create_type("GetStreamUri")
                req.ProfileToken = profiles[0].token
                req.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
                uri = str((await media.GetStreamUri(req)).Uri)
                m2 = await _media2(cam)
                try:
                    (mdc2,) = await m2.GetMetadataConfigurations(
                        {"ProfileToken": profiles[0].token}
                    )
                finally:
                    await m2.close()
                return profiles[0], mdc1, mdc2, uri
            finally:
                await cam.close()

        profile, mdc1, mdc2, uri = asyncio.run(go())
        assert profile.MetadataConfiguration.token == mdc1.token == mdc2.token
        assert profile.MetadataConfiguration.Analytics and mdc1.Analytics and mdc2.Analytics
        req = urllib.request.Request(  # zeep reads an empty tt:Events as None: look at the XML
            f"http://127.0.0.1:{port}/onvif/media_service",
            data=envelope(
                f"<GetMetadataConfigurations {TRT}/>", security_header("admin", "secret")
            ),
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            tree = validate(r.read())
        assert len(list(tree.iter("{http://www.onvif.org/ver10/schema}Events"))) == 1
        assert uri.endswith(
            f":{ADVERTISED_RTSP}/meta"
        )  # the advertised RTSP port of this module's server
        uri = url  # reached at the bound one
        reader = RawRtsp(rtsp_port)
        try:
            sdp = reader.request("DESCRIBE", uri, "Accept: application/sdp\r\n")
            assert "m=application" in sdp and "vnd.onvif.metadata/90000" in sdp
            transport = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
            reader.request("SETUP", f"{uri}/trackID=0", transport)
            reader.request("PLAY", uri)
            assert reader.read_rtp(time.monotonic() + 10) == META_XML
        finally:
            reader.close()
    finally:
        stop.set()
        if pusher.is_alive():
            pusher.join(5)
        pub.close()
