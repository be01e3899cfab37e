"""Device, Media and Media2 operations in-process against a real Stream; every response is
validated against the official ONVIF schemas. Also persistence and snapshots (PyAV)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import io
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from onvifcam.cameras import CameraRegistry, User, VideoView
from onvifcam.config import from_dict
from onvifcam.media import h264, rtp
from onvifcam.media.sdp import SessionDescription
from onvifcam.media.stream import Stream, StreamRegistry
from onvifcam.onvif.snapshot import SnapshotError, SnapshotService
from onvifcam.onvif.soap import Context, Dispatcher
from onvifcam.state import StateStore
from onvifcam.web.server import operation_table
from tests.onvif_schema import envelope, fault_subcodes, security_header, validate

W, H = 640, 360
TDS = 'xmlns="http://www.onvif.org/ver10/device/wsdl"'
TRT = 'xmlns="http://www.onvif.org/ver10/media/wsdl"'
TR2 = 'xmlns="http://www.onvif.org/ver20/media/wsdl"'
TT = 'xmlns:tt="http://www.onvif.org/ver10/schema"'


@functools.lru_cache(maxsize=4)
def encoded_gop(width: int = W, height: int = H, frames: int = 3) -> list[list[bytes]]:
    """NAL units per access unit of a short libx264 stream (first AU: SPS, PPS, IDR)."""
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, 25)
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"}
    out: list[list[bytes]] = []
    for i in range(frames):
        frame = av.VideoFrame(width, height, "yuv420p")
        for p, plane in enumerate(frame.planes):
            plane.update(bytes([(40 * i + 60 * p) % 256]) * (plane.line_size * plane.height))
        frame.pts = i
        out.extend([h264.split_annexb(bytes(pk))] for pk in enc.encode(frame))
    out.extend([h264.split_annexb(bytes(pk))] for pk in enc.encode(None))
    return [au[0] for au in out]


class FakePublisher:
    """A publisher that never gets kicked in these tests."""

    description = "test"

    def kick(self, reason: str) -> None:
        """Nothing to close."""


def publish(stream: Stream, gop: list[list[bytes]], audio: bool = True) -> None:
    """Publish an SDP with sprop-parameter-sets and feed the GOP as RTP packets."""
    sps = next(n for n in gop[0] if n[0] & 0x1F == 7)
    pps = next(n for n in gop[0] if n[0] & 0x1F == 8)
    sprop = ",".join(base64.b64encode(x).decode() for x in (sps, pps))
    sdp = (
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=t\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        f"a=fmtp:96 packetization-mode=1;sprop-parameter-sets={sprop}\r\na=control:trackID=0\r\n"
    )
    if audio:
        sdp += (
            "m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\n"
            "a=fmtp:97 streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;"
            "indexlength=3;indexdeltalength=3;config=1190\r\na=control:trackID=1\r\n"
        )
    stream.publish(FakePublisher(), SessionDescription.parse(sdp))
    seq = 0
    for i, au in enumerate(gop):
        payloads = h264.packetize(au)
        for j, pl in enumerate(payloads):
            seq += 1
            pkt = rtp.build(96, seq, 3000 * i, 1234, pl, j == len(payloads) - 1)
            stream.on_rtp(0, pkt)


def make_world(tmp_path: Path, extra: dict[str, Any] | None = None) -> Any:
    cfg = from_dict(
        {
            "server": {"state_dir": str(tmp_path)},
            "cameras": [
                {
                    "name": "Lobby",
                    "path": "lobby",
                    "sub_path": "lobby/sub",
                    "username": "admin",
                    "password": "secret",
                }
            ],
            **(extra or {}),
        }
    )
    streams = StreamRegistry(gop_cache_bytes=1 << 22, media_timeout=15, max_streams=10)
    reg = CameraRegistry(cfg, StateStore(tmp_path), streams)
    streams.listeners.append(reg.stream_changed)
    reg.load()
    return reg, streams, Dispatcher(operation_table(), clock_skew=300)


@pytest.fixture
def world(tmp_path: Path) -> Any:
    reg, streams, disp = make_world(tmp_path)
    publish(streams.get_or_create("lobby"), encoded_gop())
    return reg, streams, disp


def call(world: Any, body: str, ok: bool = True, camera: str = "Lobby") -> bytes:
    """Dispatch as the admin; validate the response; check success or fault."""
    reg, _streams, disp = world
    cam = reg.cameras[camera]

    def make(user: User | None, soap_ns: str) -> Context:
        return Context(
            camera=cam,
            user=user,
            soap_ns=soap_ns,
            xaddr=lambda s: f"http://127.0.0.1:8080/onvif/{s}_service",
            stream_uri=lambda p, scheme: f"{scheme}://127.0.0.1:8554/{p}",
            snapshot_uri=lambda t: f"http://127.0.0.1:8080/onvif/snapshot?profile={t}",
            host="127.0.0.1",
            http_port=8080,
            rtsp_port=8554,
        )

    # Like Home Assistant, sign with the camera's clock (it may have been set Manual).
    created = dt.datetime.fromtimestamp(cam.now(), dt.UTC).isoformat()
    header = security_header("admin", "secret", created=created.replace("+00:00", "Z"))
    resp = disp.dispatch(envelope(body, header), make, cam)
    validate(resp.body)
    if ok:
        assert resp.status == 200, resp.body.decode()
    else:
        assert resp.status in (400, 500), resp.body.decode()
    return resp.body


# --------------------------------------------------------------------------- device

DEVICE_OPS = [
    f"<GetDeviceInformation {TDS}/>",
    f"<GetScopes {TDS}/>",
    f"<SetScopes {TDS}><Scopes>onvif://www.onvif.org/name/Foyer</Scopes></SetScopes>",
    f"<AddScopes {TDS}><ScopeItem>onvif://www.onvif.org/location/hall</ScopeItem></AddScopes>",
    f"<RemoveScopes {TDS}><ScopeItem>onvif://www.onvif.org/location/hall</ScopeItem>"
    "</RemoveScopes>",
    f"<GetDiscoveryMode {TDS}/>",
    f"<SetDiscoveryMode {TDS}><DiscoveryMode>NonDiscoverable</DiscoveryMode></SetDiscoveryMode>",
    f"<GetHostname {TDS}/>",
    f"<SetHostname {TDS}><Name>foyer-cam</Name></SetHostname>",
    f"<GetNetworkInterfaces {TDS}/>",
    f"<GetDNS {TDS}/>",
    f"<GetNTP {TDS}/>",
    f"<GetNetworkProtocols {TDS}/>",
    f"<GetNetworkDefaultGateway {TDS}/>",
    f"<GetUsers {TDS}/>",
    f"<CreateUsers {TDS} {TT}><User><tt:Username>bob</tt:Username><tt:Password>pw1</tt:Password>"
    "<tt:UserLevel>Operator</tt:UserLevel></User></CreateUsers>",
    f"<SetUser {TDS} {TT}><User><tt:Username>bob</tt:Username><tt:Password>pw2</tt:Password>"
    "<tt:UserLevel>User</tt:UserLevel></User></SetUser>",
    f"<DeleteUsers {TDS}><Username>bob</Username></DeleteUsers>",
    f"<SetSystemDateAndTime {TDS} {TT}><DateTimeType>Manual</DateTimeType>"
    "<DaylightSavings>false</DaylightSavings><TimeZone><tt:TZ>CET-1</tt:TZ></TimeZone>"
    "<UTCDateTime><tt:Time><tt:Hour>10</tt:Hour><tt:Minute>0</tt:Minute><tt:Second>0</tt:Second>"
    "</tt:Time><tt:Date><tt:Year>2030</tt:Year><tt:Month>1</tt:Month><tt:Day>2</tt:Day></tt:Date>"
    "</UTCDateTime></SetSystemDateAndTime>",
    f"<GetSystemDateAndTime {TDS}/>",
    f"<SetSystemDateAndTime {TDS}><DateTimeType>NTP</DateTimeType>"
    "<DaylightSavings>false</DaylightSavings></SetSystemDateAndTime>",
    f"<GetRelayOutputs {TDS}/>",
    f"<GetServiceCapabilities {TDS}/>",
    f"<GetCapabilities {TDS}><Category>Media</Category></GetCapabilities>",
    f"<SystemReboot {TDS}/>",
]


def test_every_device_operation(world: Any) -> None:
    for body in DEVICE_OPS:
        call(world, body)
    reg = world[0]
    cam = reg.cameras["Lobby"]
    assert cam.hostname == "foyer-cam"
    assert cam.discovery_mode == "NonDiscoverable"
    assert "onvif://www.onvif.org/name/Foyer" in cam.config_scopes
    assert cam.user("bob") is None
    assert cam.reboots == 1


def test_device_information_and_mac(world: Any) -> None:
    cam = world[0].cameras["Lobby"]
    body = call(world, f"<GetDeviceInformation {TDS}/>")
    assert cam.serial.encode() in body
    body = call(world, f"<GetNetworkInterfaces {TDS}/>")
    assert f"<tt:HwAddress>{cam.mac}</tt:HwAddress>".encode() in body


def test_manual_clock_moves_the_camera_time(world: Any) -> None:
    call(world, DEVICE_OPS[18])
    body = call(world, f"<GetSystemDateAndTime {TDS}/>")
    assert b"<tt:Year>2030</tt:Year>" in body
    assert b"<tt:DateTimeType>Manual</tt:DateTimeType>" in body
    assert b"<tt:Hour>11</tt:Hour>" in body  # LocalDateTime in CET


@pytest.mark.parametrize(
    ("body", "subcode"),
    [
        (f"<SetHostname {TDS}><Name>bad_host!</Name></SetHostname>", "ter:InvalidHostname"),
        (f"<DeleteUsers {TDS}><Username>admin</Username></DeleteUsers>", "ter:FixedUser"),
        (f"<DeleteUsers {TDS}><Username>nobody</Username></DeleteUsers>", "ter:UsernameMissing"),
        (
            f"<CreateUsers {TDS} {TT}><User><tt:Username>admin</tt:Username>"
            "<tt:Password>x</tt:Password><tt:UserLevel>User</tt:UserLevel></User></CreateUsers>",
            "ter:UsernameClash",
        ),
        (
            f"<RemoveScopes {TDS}><ScopeItem>onvif://www.onvif.org/Profile/Streaming</ScopeItem>"
            "</RemoveScopes>",
            "ter:FixedScope",
        ),
        (
            f"<GetCapabilities {TDS}><Category>Analytics</Category></GetCapabilities>",
            "ter:NoSuchService",
        ),
    ],
)
def test_device_faults(world: Any, body: str, subcode: str) -> None:
    assert subcode in fault_subcodes(call(world, body, ok=False))


# --------------------------------------------------------------------------- media


def test_profiles_describe_the_live_stream(world: Any) -> None:
    body = call(world, f"<GetProfiles {TRT}/>").decode()
    assert 'token="Profile_1"' in body and 'token="Profile_2"' in body
    assert "<tt:Encoding>H264</tt:Encoding>" in body
    assert f"<tt:Width>{W}</tt:Width><tt:Height>{H}</tt:Height>" in body
    assert "<tt:SourceToken>VideoSource_1</tt:SourceToken>" in body
    assert "<tt:Encoding>AAC</tt:Encoding>" in body  # the stream has audio
    sources = call(world, f"<GetVideoSources {TRT}/>").decode()
    assert 'token="VideoSource_1"' in sources


def test_profiles_before_publish_show_configured_values(tmp_path: Path) -> None:
    reg, _streams, disp = make_world(tmp_path)
    body = call((reg, _streams, disp), f"<GetProfiles {TRT}/>").decode()
    assert "<tt:Width>1920</tt:Width>" in body
    assert "AudioEncoderConfiguration" not in body


MEDIA_OPS = [
    f"<GetProfile {TRT}><ProfileToken>Profile_1</ProfileToken></GetProfile>",
    f"<CreateProfile {TRT}><Name>mine</Name><Token>P_mine</Token></CreateProfile>",
    f"<AddVideoSourceConfiguration {TRT}><ProfileToken>P_mine</ProfileToken>"
    "<ConfigurationToken>VideoSourceConfig_1</ConfigurationToken></AddVideoSourceConfiguration>",
    f"<AddVideoEncoderConfiguration {TRT}><ProfileToken>P_mine</ProfileToken>"
    "<ConfigurationToken>VideoEncoder_2</ConfigurationToken></AddVideoEncoderConfiguration>",
    f"<AddAudioSourceConfiguration {TRT}><ProfileToken>P_mine</ProfileToken>"
    "<ConfigurationToken>AudioSourceConfig_1</ConfigurationToken></AddAudioSourceConfiguration>",
    f"<AddAudioEncoderConfiguration {TRT}><ProfileToken>P_mine</ProfileToken>"
    "<ConfigurationToken>AudioEncoder_1</ConfigurationToken></AddAudioEncoderConfiguration>",
    f"<GetProfile {TRT}><ProfileToken>P_mine</ProfileToken></GetProfile>",
    f"<RemoveAudioEncoderConfiguration {TRT}><ProfileToken>P_mine</ProfileToken>"
    "</RemoveAudioEncoderConfiguration>",
    f"<RemoveAudioSourceConfiguration {TRT}><ProfileToken>P_mine</ProfileToken>"
    "</RemoveAudioSourceConfiguration>",
    f"<RemoveVideoEncoderConfiguration {TRT}><ProfileToken>P_mine</ProfileToken>"
    "</RemoveVideoEncoderConfiguration>",
    f"<RemoveVideoSourceConfiguration {TRT}><ProfileToken>P_mine</ProfileToken>"
    "</RemoveVideoSourceConfiguration>",
    f"<DeleteProfile {TRT}><ProfileToken>P_mine</ProfileToken></DeleteProfile>",
    f"<GetVideoSources {TRT}/>",
    f"<GetVideoSourceConfigurations {TRT}/>",
    f"<GetVideoSourceConfiguration {TRT}><ConfigurationToken>VideoSourceConfig_1"
    "</ConfigurationToken></GetVideoSourceConfiguration>",
    f"<GetVideoSourceConfigurationOptions {TRT}><ProfileToken>Profile_1</ProfileToken>"
    "</GetVideoSourceConfigurationOptions>",
    f"<GetCompatibleVideoSourceConfigurations {TRT}><ProfileToken>Profile_1</ProfileToken>"
    "</GetCompatibleVideoSourceConfigurations>",
    f"<GetCompatibleVideoEncoderConfigurations {TRT}><ProfileToken>Profile_1</ProfileToken>"
    "</GetCompatibleVideoEncoderConfigurations>",
    f"<GetVideoEncoderConfigurations {TRT}/>",
    f"<GetVideoEncoderConfiguration {TRT}><ConfigurationToken>VideoEncoder_1"
    "</ConfigurationToken></GetVideoEncoderConfiguration>",
    f"<GetVideoEncoderConfigurationOptions {TRT}><ConfigurationToken>VideoEncoder_1"
    "</ConfigurationToken></GetVideoEncoderConfigurationOptions>",
    f"<GetVideoEncoderConfigurationOptions {TRT}/>",
    f"<GetGuaranteedNumberOfVideoEncoderInstances {TRT}><ConfigurationToken>VideoSourceConfig_1"
    "</ConfigurationToken></GetGuaranteedNumberOfVideoEncoderInstances>",
    f"<GetAudioSources {TRT}/>",
    f"<GetAudioSourceConfigurations {TRT}/>",
    f"<GetAudioSourceConfiguration {TRT}><ConfigurationToken>AudioSourceConfig_1"
    "</ConfigurationToken></GetAudioSourceConfiguration>",
    f"<GetCompatibleAudioSourceConfigurations {TRT}><ProfileToken>Profile_1</ProfileToken>"
    "</GetCompatibleAudioSourceConfigurations>",
    f"<GetAudioSourceConfigurationOptions {TRT}/>",
    f"<GetAudioEncoderConfigurations {TRT}/>",
    f"<GetAudioEncoderConfiguration {TRT}><ConfigurationToken>AudioEncoder_1"
    "</ConfigurationToken></GetAudioEncoderConfiguration>",
    f"<GetCompatibleAudioEncoderConfigurations {TRT}><ProfileToken>Profile_1</ProfileToken>"
    "</GetCompatibleAudioEncoderConfigurations>",
    f"<GetAudioEncoderConfigurationOptions {TRT}/>",
    f"<GetSnapshotUri {TRT}><ProfileToken>Profile_1</ProfileToken></GetSnapshotUri>",
    f"<SetSynchronizationPoint {TRT}><ProfileToken>Profile_1</ProfileToken>"
    "</SetSynchronizationPoint>",
    f"<GetOSDs {TRT}/>",
    f"<GetServiceCapabilities {TRT}/>",
]


def test_every_media_operation(world: Any) -> None:
    for body in MEDIA_OPS:
        call(world, body)


def _stream_uri(stream: str, proto: str, profile: str = "Profile_1") -> str:
    return (
        f"<GetStreamUri {TRT} {TT}><StreamSetup><tt:Stream>{stream}</tt:Stream>"
        f"<tt:Transport><tt:Protocol>{proto}</tt:Protocol></tt:Transport></StreamSetup>"
        f"<ProfileToken>{profile}</ProfileToken></GetStreamUri>"
    )


@pytest.mark.parametrize(
    ("stream", "proto", "profile", "uri"),
    [
        ("RTP-Unicast", "RTSP", "Profile_1", "rtsp://127.0.0.1:8554/lobby"),
        ("RTP-Unicast", "UDP", "Profile_1", "rtsp://127.0.0.1:8554/lobby"),
        ("RTP-Unicast", "TCP", "Profile_2", "rtsp://127.0.0.1:8554/lobby/sub"),
        ("RTP-Multicast", "UDP", "Profile_1", "rtsp://127.0.0.1:8554/lobby"),
        ("RTP-Unicast", "HTTP", "Profile_1", "http://127.0.0.1:8554/lobby"),
    ],
)
def test_get_stream_uri(world: Any, stream: str, proto: str, profile: str, uri: str) -> None:
    body = call(world, _stream_uri(stream, proto, profile)).decode()
    assert f"<tt:Uri>{uri}</tt:Uri>" in body


@pytest.mark.parametrize(
    ("body", "subcode"),
    [
        (_stream_uri("RTP-Unicast", "RTSP", "nope"), "ter:NoProfile"),
        (_stream_uri("RTP-Broadcast", "RTSP"), "ter:InvalidStreamSetup"),
        (
            f"<DeleteProfile {TRT}><ProfileToken>Profile_1</ProfileToken></DeleteProfile>",
            "ter:DeletionOfFixedProfile",
        ),
        (
            f"<GetVideoEncoderConfiguration {TRT}><ConfigurationToken>x</ConfigurationToken>"
            "</GetVideoEncoderConfiguration>",
            "ter:NoConfig",
        ),
        (
            f"<CreateProfile {TRT}><Name>a</Name><Token>Profile_1</Token></CreateProfile>",
            "ter:ProfileExists",
        ),
    ],
)
def test_media_faults(world: Any, body: str, subcode: str) -> None:
    assert subcode in fault_subcodes(call(world, body, ok=False))


def _set_vec(width: int, height: int, name: str = "Main", codec: str = "H264") -> str:
    return (
        f'<SetVideoEncoderConfiguration {TRT} {TT}><Configuration token="VideoEncoder_1">'
        f"<tt:Name>{name}</tt:Name><tt:UseCount>1</tt:UseCount><tt:Encoding>{codec}</tt:Encoding>"
        f"<tt:Resolution><tt:Width>{width}</tt:Width><tt:Height>{height}</tt:Height>"
        "</tt:Resolution><tt:Quality>55</tt:Quality><tt:RateControl>"
        "<tt:FrameRateLimit>12</tt:FrameRateLimit><tt:EncodingInterval>1</tt:EncodingInterval>"
        "<tt:BitrateLimit>900</tt:BitrateLimit></tt:RateControl><tt:H264><tt:GovLength>24"
        "</tt:GovLength><tt:H264Profile>High</tt:H264Profile></tt:H264><tt:Multicast><tt:Address>"
        "<tt:Type>IPv4</tt:Type><tt:IPv4Address>239.1.2.3</tt:IPv4Address></tt:Address>"
        "<tt:Port>5000</tt:Port><tt:TTL>3</tt:TTL><tt:AutoStart>false</tt:AutoStart>"
        "</tt:Multicast><tt:SessionTimeout>PT30S</tt:SessionTimeout></Configuration>"
        "<ForcePersistence>true</ForcePersistence></SetVideoEncoderConfiguration>"
    )


def test_set_video_encoder_keeps_stream_codec_and_size(world: Any) -> None:
    assert "ter:ConfigModify" in fault_subcodes(call(world, _set_vec(1280, 720), ok=False))
    assert "ter:ConfigModify" in fault_subcodes(call(world, _set_vec(W, H, codec="JPEG"), ok=False))
    call(world, _set_vec(W, H, name="Renamed"))
    body = call(
        world,
        f"<GetVideoEncoderConfiguration {TRT}><ConfigurationToken>VideoEncoder_1"
        "</ConfigurationToken></GetVideoEncoderConfiguration>",
    ).decode()
    assert "<tt:Name>Renamed</tt:Name>" in body
    assert "<tt:IPv4Address>239.1.2.3</tt:IPv4Address>" in body
    assert "<tt:Quality>55</tt:Quality>" in body


# --------------------------------------------------------------------------- media2

MEDIA2_OPS = [
    f"<GetServiceCapabilities {TR2}/>",
    f"<GetProfiles {TR2}><Type>All</Type></GetProfiles>",
    f"<GetProfiles {TR2}><Token>Profile_2</Token><Type>VideoEncoder</Type></GetProfiles>",
    f"<GetProfiles {TR2}/>",
    f"<GetVideoSourceConfigurations {TR2}/>",
    f"<GetVideoEncoderConfigurations {TR2}/>",
    f"<GetVideoEncoderConfigurations {TR2}><ProfileToken>Profile_1</ProfileToken>"
    "</GetVideoEncoderConfigurations>",
    f"<GetVideoEncoderConfigurationOptions {TR2}/>",
    f"<GetAudioSourceConfigurations {TR2}/>",
    f"<GetAudioEncoderConfigurations {TR2}/>",
    f"<GetSnapshotUri {TR2}><ProfileToken>Profile_2</ProfileToken></GetSnapshotUri>",
    f"<SetSynchronizationPoint {TR2}><ProfileToken>Profile_1</ProfileToken>"
    "</SetSynchronizationPoint>",
    f'<SetVideoEncoderConfiguration {TR2} {TT}><Configuration token="VideoEncoder_1" '
    f'GovLength="30" Profile="High"><tt:Name>M2</tt:Name><tt:UseCount>1</tt:UseCount>'
    f"<tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>{W}</tt:Width><tt:Height>{H}"
    "</tt:Height></tt:Resolution><tt:RateControl><tt:FrameRateLimit>25</tt:FrameRateLimit>"
    "<tt:BitrateLimit>2000</tt:BitrateLimit></tt:RateControl><tt:Quality>70</tt:Quality>"
    "</Configuration></SetVideoEncoderConfiguration>",
]


def test_every_media2_operation(world: Any) -> None:
    for body in MEDIA2_OPS:
        call(world, body)
    body = call(world, f"<GetProfiles {TR2}><Type>All</Type></GetProfiles>").decode()
    assert "<tt:Encoding>H264</tt:Encoding>" in body
    assert "<tt:Name>M2</tt:Name>" in body
    assert "<tt:Encoding>MP4A-LATM</tt:Encoding>" in body


def test_media2_profile_lifecycle(world: Any) -> None:
    body = call(
        world,
        f"<CreateProfile {TR2}><Name>p2</Name><Configuration><Type>VideoSource</Type>"
        "</Configuration><Configuration><Type>VideoEncoder</Type><Token>VideoEncoder_2</Token>"
        "</Configuration></CreateProfile>",
    ).decode()
    token = body.split("<tr2:Token>")[1].split("</tr2:Token>")[0]
    call(
        world,
        f"<AddConfiguration {TR2}><ProfileToken>{token}</ProfileToken><Name>renamed</Name>"
        "<Configuration><Type>AudioSource</Type></Configuration></AddConfiguration>",
    )
    body = call(world, f"<GetProfiles {TR2}><Token>{token}</Token><Type>All</Type></GetProfiles>")
    text = body.decode()
    assert "<tr2:Name>renamed</tr2:Name>" in text and "tr2:AudioSource" in text
    call(
        world,
        f"<RemoveConfiguration {TR2}><ProfileToken>{token}</ProfileToken><Configuration>"
        "<Type>AudioSource</Type></Configuration></RemoveConfiguration>",
    )
    uri = call(
        world,
        f"<GetStreamUri {TR2}><Protocol>RtspOverHttp</Protocol><ProfileToken>{token}"
        "</ProfileToken></GetStreamUri>",
    )
    assert b"<tr2:Uri>http://127.0.0.1:8554/lobby/sub</tr2:Uri>" in uri
    call(world, f"<DeleteProfile {TR2}><Token>{token}</Token></DeleteProfile>")
    assert "ter:NoProfile" in fault_subcodes(
        call(world, f"<DeleteProfile {TR2}><Token>{token}</Token></DeleteProfile>", ok=False)
    )


@pytest.mark.parametrize("proto", ["RtspUnicast", "RtspMulticast", "RTSP", "RtspOverHttp"])
def test_media2_stream_uri(world: Any, proto: str) -> None:
    body = call(
        world,
        f"<GetStreamUri {TR2}><Protocol>{proto}</Protocol><ProfileToken>Profile_1"
        "</ProfileToken></GetStreamUri>",
    )
    assert b"/lobby</tr2:Uri>" in body


def test_media2_h265_is_described(tmp_path: Path) -> None:
    reg, streams, disp = make_world(tmp_path, {"onvif": {"max_profiles": 4}})
    cam = reg.cameras["Lobby"]
    cam.state.seen_video["main"] = VideoView(
        codec="H265", width=3840, height=2160, fps=30.0, bitrate_kbps=8000, gov_length=60
    )
    world = (reg, streams, disp)
    body = call(world, f"<GetProfiles {TR2}><Type>All</Type></GetProfiles>").decode()
    assert "<tt:Encoding>H265</tt:Encoding>" in body
    m1 = call(world, f"<GetProfiles {TRT}/>").decode()
    assert "H265" not in m1  # Media1 cannot name H.265: its encoder config is left out


# --------------------------------------------------------------------------- persistence


def test_changes_and_identity_survive_a_restart(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    cam = world[0].cameras["Lobby"]
    ident = (cam.uuid, cam.mac, cam.serial)
    call(world, f"<CreateProfile {TRT}><Name>kept</Name><Token>P_kept</Token></CreateProfile>")
    call(world, f"<SetHostname {TDS}><Name>kept-host</Name></SetHostname>")
    call(world, DEVICE_OPS[15])  # CreateUsers bob
    call(world, _set_vec(1920, 1080, name="KeptName"))
    again = make_world(tmp_path)
    cam2 = again[0].cameras["Lobby"]
    assert (cam2.uuid, cam2.mac, cam2.serial) == ident
    assert cam2.hostname == "kept-host"
    assert cam2.user("bob") is not None
    assert [p.token for p in cam2.profiles] == ["Profile_1", "Profile_2", "P_kept"]
    assert cam2.encoder_settings("VideoEncoder_1")["name"] == "KeptName"
    assert list(tmp_path.glob("cameras/*.tmp")) == []


def test_auto_cameras_get_unique_identities_and_come_back(tmp_path: Path) -> None:
    reg, streams, _d = make_world(tmp_path)
    for path in ("auto1", "auto2"):
        publish(streams.get_or_create(path), encoded_gop(), audio=False)
    a1, a2 = reg.cameras["auto1"], reg.cameras["auto2"]
    assert a1.auto and a2.auto
    assert len({a1.uuid, a2.uuid, reg.cameras["Lobby"].uuid}) == 3
    assert a1.mac != a2.mac and a1.serial != a2.serial
    assert a1.video().width == W  # last seen values were stored
    reg.tick()  # auto cameras are saved once their stream has carried video
    again, _s, _d2 = make_world(tmp_path)
    assert again.cameras["auto1"].uuid == a1.uuid
    assert again.cameras["auto1"].video().width == W


def test_auto_cameras_can_be_turned_off(tmp_path: Path) -> None:
    reg, streams, _d = make_world(tmp_path, {"onvif": {"auto_cameras": False}})
    publish(streams.get_or_create("other"), encoded_gop(), audio=False)
    assert "other" not in reg.cameras


# --------------------------------------------------------------------------- snapshots


def _decode(jpeg: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(jpeg)) as c:
        f = next(c.decode(video=0))
        return f.width, f.height


def test_snapshot_of_the_keyframe(world: Any) -> None:
    stream = world[1].get("lobby")
    svc = SnapshotService()

    async def go() -> tuple[bytes, bytes]:
        return await svc.jpeg(stream), await svc.jpeg(stream)

    try:
        first, second = asyncio.run(go())
    finally:
        svc.close()
    assert first[:2] == b"\xff\xd8"
    assert _decode(first) == (W, H)
    assert first is second and svc.decodes == 1 and svc.hits == 1


def test_snapshot_without_keyframe_and_placeholder(tmp_path: Path) -> None:
    svc = SnapshotService()
    stream = Stream("x")

    async def go() -> bytes:
        with pytest.raises(SnapshotError):
            await svc.jpeg(stream)
        return await svc.placeholder(800, 450, "CAMERA OFFLINE\nLobby")

    try:
        data = asyncio.run(go())
    finally:
        svc.close()
    assert _decode(data) == (800, 450)


def test_profiles_show_stable_rates_and_remember_them(world: Any) -> None:
    reg, streams, _disp = world
    stream = streams.get("lobby")
    assert stream.video_info.fps == 25  # libx264 writes VUI timing info
    stream.stats.fps = 23.0  # a noisy once-a-second measurement
    stream.stats.bitrate = 1_234_000.0
    stream.stats.gop = 30
    m1 = call(world, f"<GetProfiles {TRT}/>").decode()
    assert "<tt:FrameRateLimit>25</tt:FrameRateLimit>" in m1  # from the SPS
    assert "<tt:BitrateLimit>1200</tt:BitrateLimit>" in m1  # two significant figures
    assert "<tt:GovLength>30</tt:GovLength>" in m1
    cam = reg.cameras["Lobby"]
    for _ in range(6):  # a new stream's values settle over the first seconds
        cam.measure()
    assert call(world, f"<GetProfiles {TRT}/>").decode() == m1
    # poll to poll the measurement wanders; what clients read does not
    for fps, bps, gov in ((24.0, 1_310_000.0, 29), (25.0, 1_050_000.0, 31), (23.0, 1.4e6, 30)):
        stream.stats.fps, stream.stats.bitrate, stream.stats.gop = fps, bps, gov
        cam.measure()
        assert call(world, f"<GetProfiles {TRT}/>").decode() == m1
    assert cam.summary()["measured"]["bitrate_kbps"] == 1400.0  # the raw value: stats/API
    m2 = call(world, f"<GetProfiles {TR2}><Type>VideoEncoder</Type></GetProfiles>").decode()
    assert "<tt:FrameRateLimit>25</tt:FrameRateLimit>" in m2
    stream.unpublish(stream.publisher, "test")  # stats reset; last-seen values persisted
    again = make_world(Path(cam.store.dir).parent)[0].cameras["Lobby"]
    v = again.video("main")
    assert (v.width, v.height, v.fps, v.bitrate_kbps, v.gov_length) == (W, H, 25, 1200, 30)


def test_h265_snapshot_and_media2_profile(tmp_path: Path) -> None:
    from onvifcam.media import h265

    enc = av.CodecContext.create("libx265", "w")
    enc.width, enc.height, enc.pix_fmt = 320, 180, "yuv420p"
    enc.time_base = Fraction(1, 25)
    enc.options = {"preset": "ultrafast", "x265-params": "log-level=none:keyint=25"}
    aus: list[list[bytes]] = []
    for i in range(2):
        frame = av.VideoFrame(320, 180, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([100 + 40 * i]) * (plane.line_size * plane.height))
        frame.pts = i
        aus.extend(h264.split_annexb(bytes(pk)) for pk in enc.encode(frame))
    aus.extend(h264.split_annexb(bytes(pk)) for pk in enc.encode(None))
    params = {h265.nal_type(n): n for n in aus[0] if h265.nal_type(n) in (32, 33, 34)}
    sdp = (
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=t\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\n"
        f"a=fmtp:96 {h265.sprop_fmtp(params[32], params[33], params[34])}\r\n"
        "a=control:trackID=0\r\n"
    )
    reg, streams, disp = make_world(tmp_path)
    stream = streams.get_or_create("lobby")
    stream.publish(FakePublisher(), SessionDescription.parse(sdp))
    seq = 0
    for i, au in enumerate(aus):
        # drop the in-band parameter sets: the snapshot must take them from the SDP
        payloads = h265.packetize([n for n in au if h265.nal_type(n) not in (32, 33, 34)])
        for j, pl in enumerate(payloads):
            seq += 1
            stream.on_rtp(0, rtp.build(96, seq, 3600 * i, 99, pl, j == len(payloads) - 1))
    svc = SnapshotService()
    try:
        jpeg = asyncio.run(svc.jpeg(stream))
    finally:
        svc.close()
    assert _decode(jpeg) == (320, 180)
    body = call((reg, streams, disp), f"<GetProfiles {TR2}><Type>All</Type></GetProfiles>")
    assert b"<tt:Encoding>H265</tt:Encoding>" in body
    assert b"<tt:Width>320</tt:Width>" in body


# --------------------------------------------------------------------------- fault details


@pytest.mark.parametrize(
    "body",
    [
        _set_vec(W, H).replace("<tt:Quality>55</tt:Quality>", "<tt:Quality>high</tt:Quality>"),
        _set_vec(W, H).replace(">12</tt:FrameRateLimit>", ">1e999</tt:FrameRateLimit>"),
        MEDIA2_OPS[-1].replace(">25</tt:FrameRateLimit>", ">INF</tt:FrameRateLimit>"),
    ],
    ids=["media1-quality", "media1-fps-overflow", "media2-fps-inf"],
)
def test_bad_encoder_numbers_are_config_modify_and_not_stored(world: Any, body: str) -> None:
    assert fault_subcodes(call(world, body, ok=False)) == ["ter:InvalidArgVal", "ter:ConfigModify"]
    assert world[0].cameras["Lobby"].encoder_settings("VideoEncoder_1") == {}
    call(world, f"<GetProfiles {TRT}/>")


@pytest.mark.parametrize(
    ("body", "subcodes"),
    [
        (
            f"<DeleteProfile {TRT}><ProfileToken>Profile_1</ProfileToken></DeleteProfile>",
            ["ter:Action", "ter:DeletionOfFixedProfile"],
        ),
        (
            f"<SetDiscoveryMode {TDS}><DiscoveryMode>Hidden</DiscoveryMode></SetDiscoveryMode>",
            ["ter:InvalidArgVal"],
        ),
        (
            f"<CreateProfile {TRT}><Name>a</Name><Token>bad token!</Token></CreateProfile>",
            ["ter:InvalidArgVal"],
        ),
    ],
    ids=["fixed-profile", "discovery-mode", "profile-token"],
)
def test_camera_faults_carry_onvif_subcodes(world: Any, body: str, subcodes: list[str]) -> None:
    assert fault_subcodes(call(world, body, ok=False)) == subcodes


def test_refused_set_user_changes_nothing(world: Any) -> None:
    call(world, DEVICE_OPS[15])  # CreateUsers bob, Operator
    for password in (" ", "x" * 65):  # blank (stripped to empty) and too long
        body = DEVICE_OPS[16].replace(
            "<tt:Password>pw2</tt:Password>", f"<tt:Password>{password}</tt:Password>"
        )
        assert "ter:OperationProhibited" in fault_subcodes(call(world, body, ok=False))
    cam = world[0].cameras["Lobby"]
    assert cam.user("bob") == User("bob", "pw1", "Operator")
    cam.save()  # nothing half-applied waits in memory either
    assert (
        make_world(Path(cam.store.dir).parent)[0].cameras["Lobby"].user("bob").level == "Operator"
    )


def test_media2_profile_changes_are_one_state_write_each(world: Any) -> None:
    store = world[0].cameras["Lobby"].store
    before = store.writes
    body = call(
        world,
        f"<CreateProfile {TR2}><Name>p</Name><Configuration><Type>VideoSource</Type>"
        "</Configuration><Configuration><Type>VideoEncoder</Type></Configuration></CreateProfile>",
    ).decode()
    token = body.split("<tr2:Token>")[1].split("</tr2:Token>")[0]
    call(
        world,
        f"<AddConfiguration {TR2}><ProfileToken>{token}</ProfileToken><Name>renamed</Name>"
        "<Configuration><Type>AudioSource</Type></Configuration></AddConfiguration>",
    )
    assert store.writes == before + 2
    p = world[0].cameras["Lobby"].profile(token)
    assert (p.name, p.vsc, p.vec, p.asc) == (
        "renamed",
        "VideoSourceConfig_1",
        "VideoEncoder_1",
        "AudioSourceConfig_1",
    )
    # a refused reference leaves no half-made profile behind
    call(
        world,
        f"<CreateProfile {TR2}><Name>q</Name><Configuration><Type>VideoEncoder</Type>"
        "<Token>nope</Token></Configuration></CreateProfile>",
        ok=False,
    )
    assert store.writes == before + 2
    assert len(world[0].cameras["Lobby"].profiles) == 3


def test_a_cancelled_snapshot_request_does_not_waste_its_decode(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onvifcam.onvif import snapshot

    calls = []
    real = snapshot.decode_to_jpeg

    def counting(*args: Any) -> bytes:
        calls.append(args[0])
        return real(*args)

    monkeypatch.setattr(snapshot, "decode_to_jpeg", counting)
    stream = world[1].get("lobby")
    svc = SnapshotService()

    async def go() -> bytes:
        first = asyncio.create_task(svc.jpeg(stream))
        await asyncio.sleep(0)  # the decode is in the worker now
        first.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await first
        return await svc.jpeg(stream)

    try:
        data = asyncio.run(go())
    finally:
        svc.close()
    assert _decode(data) == (W, H)
    assert calls == ["H264"] and svc.decodes == 1


def test_set_video_encoder_sticks_while_live_and_after_restart(world: Any) -> None:
    """Set-then-get: exactly what was set comes back, not the measured stream."""
    reg, streams, _disp = world
    stream = streams.get("lobby")
    stream.stats.fps, stream.stats.bitrate = 24.0, 3_000_000.0
    call(world, _set_vec(320, 180, name="Set"))
    get = (
        f"<GetVideoEncoderConfiguration {TRT}><ConfigurationToken>VideoEncoder_1"
        "</ConfigurationToken></GetVideoEncoderConfiguration>"
    )
    want = (
        "<tt:Resolution><tt:Width>320</tt:Width><tt:Height>180</tt:Height></tt:Resolution>",
        "<tt:FrameRateLimit>12</tt:FrameRateLimit>",
        "<tt:BitrateLimit>900</tt:BitrateLimit>",
        "<tt:GovLength>24</tt:GovLength><tt:H264Profile>High</tt:H264Profile>",
        "<tt:Quality>55</tt:Quality>",
    )
    body = call(world, get).decode()
    assert all(w in body for w in want), body
    m2 = call(world, f"<GetVideoEncoderConfigurations {TR2}/>").decode()
    assert 'GovLength="24"' in m2 and "<tt:FrameRateLimit>12</tt:FrameRateLimit>" in m2
    cam = reg.cameras["Lobby"]
    assert cam.measured("main")["fps"] == 24.0  # the measurement lives in stats / the API
    world2 = make_world(Path(cam.store.dir).parent)
    publish(world2[1].get_or_create("lobby"), encoded_gop())
    body = call(world2, get).decode()
    assert all(w in body for w in want), body
    # Media2 sets are echoed too, frame rate as a float
    call(
        world,
        f'<SetVideoEncoderConfiguration {TR2} {TT}><Configuration token="VideoEncoder_1" '
        f'GovLength="50" Profile="Main"><tt:Name>M2</tt:Name><tt:UseCount>1</tt:UseCount>'
        f"<tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>{W}</tt:Width><tt:Height>{H}"
        "</tt:Height></tt:Resolution><tt:RateControl><tt:FrameRateLimit>12.5</tt:FrameRateLimit>"
        "<tt:BitrateLimit>2500</tt:BitrateLimit></tt:RateControl><tt:Quality>70</tt:Quality>"
        "</Configuration></SetVideoEncoderConfiguration>",
    )
    m2 = call(world, f"<GetVideoEncoderConfigurations {TR2}/>").decode()
    assert 'GovLength="50" Profile="Main"' in m2
    assert "<tt:FrameRateLimit>12.5</tt:FrameRateLimit>" in m2
    assert "<tt:BitrateLimit>2500</tt:BitrateLimit>" in m2


NETWORK_SETS = [
    (
        f"<SetNTP {TDS} {TT}><FromDHCP>false</FromDHCP><NTPManual><tt:Type>DNS</tt:Type>"
        "<tt:DNSname>pool.ntp.org</tt:DNSname></NTPManual><NTPManual><tt:Type>IPv4</tt:Type>"
        "<tt:IPv4Address>192.168.1.1</tt:IPv4Address></NTPManual></SetNTP>",
        f"<GetNTP {TDS}/>",
        ["<tt:DNSname>pool.ntp.org</tt:DNSname>", "<tt:IPv4Address>192.168.1.1</tt:IPv4Address>"],
    ),
    (
        f"<SetDNS {TDS} {TT}><FromDHCP>false</FromDHCP><SearchDomain>lab.example</SearchDomain>"
        "<DNSManual><tt:Type>IPv4</tt:Type><tt:IPv4Address>9.9.9.9</tt:IPv4Address></DNSManual>"
        "</SetDNS>",
        f"<GetDNS {TDS}/>",
        ["<tt:SearchDomain>lab.example</tt:SearchDomain>", "<tt:IPv4Address>9.9.9.9<"],
    ),
    (
        f"<SetNetworkProtocols {TDS} {TT}><NetworkProtocols><tt:Name>HTTPS</tt:Name>"
        "<tt:Enabled>true</tt:Enabled><tt:Port>8443</tt:Port></NetworkProtocols>"
        "</SetNetworkProtocols>",
        f"<GetNetworkProtocols {TDS}/>",
        ["<tt:Name>HTTPS</tt:Name><tt:Enabled>true</tt:Enabled><tt:Port>8443</tt:Port>"],
    ),
    (
        f"<SetNetworkDefaultGateway {TDS}><IPv4Address>10.0.0.1</IPv4Address>"
        "</SetNetworkDefaultGateway>",
        f"<GetNetworkDefaultGateway {TDS}/>",
        ["<tt:IPv4Address>10.0.0.1</tt:IPv4Address>"],
    ),
    (
        f"<SetZeroConfiguration {TDS}><InterfaceToken>eth0</InterfaceToken><Enabled>true"
        "</Enabled></SetZeroConfiguration>",
        f"<GetZeroConfiguration {TDS}/>",
        ["<tt:Enabled>true</tt:Enabled><tt:Addresses>169.254."],
    ),
    (
        f"<SetIPAddressFilter {TDS} {TT}><IPAddressFilter><tt:Type>Allow</tt:Type>"
        "<tt:IPv4Address><tt:Address>10.1.0.0</tt:Address><tt:PrefixLength>16</tt:PrefixLength>"
        "</tt:IPv4Address></IPAddressFilter></SetIPAddressFilter>",
        f"<GetIPAddressFilter {TDS}/>",
        ["<tt:Type>Allow</tt:Type><tt:IPv4Address><tt:Address>10.1.0.0</tt:Address>"],
    ),
    (
        f"<SetDynamicDNS {TDS}><Type>ClientUpdates</Type><Name>cam.example</Name>"
        "<TTL>PT1H</TTL></SetDynamicDNS>",
        f"<GetDynamicDNS {TDS}/>",
        ["<tt:Type>ClientUpdates</tt:Type><tt:Name>cam.example</tt:Name><tt:TTL>PT1H</tt:TTL>"],
    ),
]


def test_network_setters_round_trip_and_persist(world: Any) -> None:
    for setter, getter, want in NETWORK_SETS:
        call(world, setter)
        body = call(world, getter).decode()
        assert all(w in body for w in want), body
    cam = world[0].cameras["Lobby"]
    again = make_world(Path(cam.store.dir).parent)
    for _setter, getter, want in NETWORK_SETS:
        body = call(again, getter).decode()
        assert all(w in body for w in want), body


@pytest.mark.parametrize(
    "body",
    [
        f"<SetNTP {TDS} {TT}><FromDHCP>false</FromDHCP><NTPManual><tt:Type>IPv4</tt:Type>"
        "<tt:IPv4Address>999.1.1.1</tt:IPv4Address></NTPManual></SetNTP>",
        f"<SetZeroConfiguration {TDS}><InterfaceToken>wlan9</InterfaceToken><Enabled>true"
        "</Enabled></SetZeroConfiguration>",
        f"<SetNetworkProtocols {TDS} {TT}><NetworkProtocols><tt:Name>HTTP</tt:Name>"
        "<tt:Enabled>true</tt:Enabled><tt:Port>70000</tt:Port></NetworkProtocols>"
        "</SetNetworkProtocols>",
    ],
)
def test_bad_network_settings_are_refused(world: Any, body: str) -> None:
    assert "ter:InvalidArgVal" in fault_subcodes(call(world, body, ok=False))


def test_system_log_has_this_cameras_lines(world: Any) -> None:
    import logging

    logging.getLogger("onvifcam.test").warning("camera 'Lobby' did a thing")
    logging.getLogger("onvifcam.test").warning("camera 'Elsewhere' did another")
    body = call(world, f"<GetSystemLog {TDS}><LogType>System</LogType></GetSystemLog>").decode()
    assert "camera 'Lobby' did a thing" in body and "Elsewhere" not in body
    body = call(world, f"<GetSystemSupportInformation {TDS}/>").decode()
    assert "did a thing" in body


MDC_SET = (
    '<Configuration token="MetadataConfig_1"><tt:Name>Meta</tt:Name><tt:UseCount>1</tt:UseCount>'
    "<tt:PTZStatus><tt:Status>true</tt:Status><tt:Position>false</tt:Position></tt:PTZStatus>"
    '<tt:Events><tt:Filter><wsnt:TopicExpression xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" '
    'Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">tns1:VideoSource//.'
    "</wsnt:TopicExpression></tt:Filter></tt:Events><tt:Analytics>true</tt:Analytics>"
    "<tt:Multicast><tt:Address><tt:Type>IPv4</tt:Type><tt:IPv4Address>0.0.0.0</tt:IPv4Address>"
    "</tt:Address><tt:Port>0</tt:Port><tt:TTL>1</tt:TTL><tt:AutoStart>false</tt:AutoStart>"
    "</tt:Multicast><tt:SessionTimeout>PT60S</tt:SessionTimeout></Configuration>"
)
OSD = (
    '<OSD token="{token}"><tt:VideoSourceConfigurationToken>VideoSourceConfig_1'
    "</tt:VideoSourceConfigurationToken><tt:Type>Text</tt:Type><tt:Position><tt:Type>Custom"
    '</tt:Type><tt:Pos x="-0.5" y="0.9"/></tt:Position><tt:TextString><tt:Type>Plain</tt:Type>'
    "<tt:PlainText>{text}</tt:PlainText></tt:TextString></OSD>"
)


def test_vms_builds_its_own_profile_with_metadata_media1(world: Any) -> None:
    """CreateProfile + Add* as VMSs do it, then metadata and OSDs set and read back."""
    call(world, f"<CreateProfile {TRT}><Name>vms</Name><Token>VMS_1</Token></CreateProfile>")
    for kind, tok in (
        ("VideoSource", "VideoSourceConfig_1"),
        ("VideoEncoder", "VideoEncoder_1"),
        ("AudioSource", "AudioSourceConfig_1"),
        ("AudioEncoder", "AudioEncoder_1"),
        ("Metadata", "MetadataConfig_1"),
    ):
        call(world, f"<GetCompatible{kind}Configurations {TRT}><ProfileToken>VMS_1</ProfileToken>"
             f"</GetCompatible{kind}Configurations>")  # fmt: skip
        add = f"<ProfileToken>VMS_1</ProfileToken><ConfigurationToken>{tok}</ConfigurationToken>"
        call(world, f"<Add{kind}Configuration {TRT}>{add}</Add{kind}Configuration>")
    call(world, f"<GetMetadataConfigurationOptions {TRT}><ProfileToken>VMS_1</ProfileToken>"
         "</GetMetadataConfigurationOptions>")  # fmt: skip
    call(world, f"<SetMetadataConfiguration {TRT} {TT}>{MDC_SET}<ForcePersistence>true"
         "</ForcePersistence></SetMetadataConfiguration>")  # fmt: skip
    prof = call(world, f"<GetProfile {TRT}><ProfileToken>VMS_1</ProfileToken></GetProfile>")
    body = prof.decode()
    assert '<tt:MetadataConfiguration token="MetadataConfig_1">' in body
    assert "<tt:Name>Meta</tt:Name>" in body and "tns1:VideoSource//." in body
    assert "<tt:Analytics>true</tt:Analytics>" in body
    call(world, f"<RemoveMetadataConfiguration {TRT}><ProfileToken>VMS_1</ProfileToken>"
         "</RemoveMetadataConfiguration>")  # fmt: skip
    prof = call(world, f"<GetProfile {TRT}><ProfileToken>VMS_1</ProfileToken></GetProfile>")
    assert b"MetadataConfiguration" not in prof
    call(world, f"<GetOSDOptions {TRT}><ConfigurationToken>VideoSourceConfig_1"
         "</ConfigurationToken></GetOSDOptions>")  # fmt: skip
    made = call(world, f"<CreateOSD {TRT} {TT}>{OSD.format(token='x', text='Gate 3')}</CreateOSD>")
    assert b"<trt:OSDToken>OSD_1</trt:OSDToken>" in made
    call(world, f"<SetOSD {TRT} {TT}>{OSD.format(token='OSD_1', text='Gate 4')}</SetOSD>")
    osds = call(world, f"<GetOSDs {TRT}/>").decode()
    assert "<tt:PlainText>Gate 4</tt:PlainText>" in osds and 'x="-0.5"' in osds
    call(world, f"<DeleteOSD {TRT}><OSDToken>OSD_1</OSDToken></DeleteOSD>")
    assert b"OSD_1" not in call(world, f"<GetOSDs {TRT}/>")


MEDIA2_PARITY = [
    f"<GetVideoSourceConfigurationOptions {TR2}/>",
    f"<GetAudioSourceConfigurationOptions {TR2}/>",
    f"<GetAudioEncoderConfigurationOptions {TR2}/>",
    f"<GetVideoEncoderInstances {TR2}><ConfigurationToken>VideoSourceConfig_1"
    "</ConfigurationToken></GetVideoEncoderInstances>",
    f"<GetMetadataConfigurations {TR2}/>",
    f"<GetMetadataConfigurationOptions {TR2}/>",
    f"<SetMetadataConfiguration {TR2} {TT}>{MDC_SET}</SetMetadataConfiguration>",
    f"<GetOSDOptions {TR2}><ConfigurationToken>VideoSourceConfig_1</ConfigurationToken>"
    "</GetOSDOptions>",
    f"<CreateOSD {TR2} {TT}>{OSD.format(token='', text='M2')}</CreateOSD>",
    f"<SetOSD {TR2} {TT}>{OSD.format(token='OSD_1', text='M2b')}</SetOSD>",
    f"<GetOSDs {TR2}><OSDToken>OSD_1</OSDToken></GetOSDs>",
    f"<DeleteOSD {TR2}><OSDToken>OSD_1</OSDToken></DeleteOSD>",
]


def test_media2_answers_what_media1_answers(world: Any) -> None:
    for body in MEDIA2_PARITY:
        call(world, body)
    confs = "".join(
        f"<Configuration><Type>{t}</Type></Configuration>"
        for t in ("VideoSource", "VideoEncoder", "Metadata")
    )
    made = call(world, f"<CreateProfile {TR2}><Name>vms2</Name>{confs}</CreateProfile>").decode()
    token = made.split("<tr2:Token>")[1].split("<")[0]
    prof = call(world, f"<GetProfiles {TR2}><Token>{token}</Token><Type>All</Type></GetProfiles>")
    assert b'<tr2:Metadata token="MetadataConfig_1">' in prof


def test_osd_limit_and_bad_osds(world: Any) -> None:
    bad = OSD.format(token="", text="x").replace("Custom", "Middle")
    assert "ter:ConfigModify" in fault_subcodes(
        call(world, f"<CreateOSD {TRT} {TT}>{bad}</CreateOSD>", ok=False)
    )
    for _ in range(8):
        call(world, f"<CreateOSD {TRT} {TT}>{OSD.format(token='', text='n')}</CreateOSD>")
    full = call(world, f"<CreateOSD {TRT} {TT}>{OSD.format(token='', text='n')}</CreateOSD>", False)
    assert "ter:MaxOSDs" in fault_subcodes(full)
