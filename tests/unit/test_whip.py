"""WHIP without sockets: the RTP input stage, RTCP feedback, offer/answer handling,
credentials, the publish page, the [whip] settings, and the aiortc internals peer.py uses."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from onvifcam.config import ConfigError, from_dict
from onvifcam.media import rtcp
from onvifcam.media.sdp import SessionDescription
from onvifcam.whip.offer import (
    AIORTC_H264_FMTP,
    OfferError,
    credentials,
    fix_answer,
    ice_server_links,
    parse_offer,
)
from onvifcam.whip.page import publish_page
from onvifcam.whip.rtpin import PT_PSFB, PT_RTPFB, Receiver, build_nack, build_pli, build_remb


def rtp(seq: int, ts: int = 0, ssrc: int = 0x1234, marker: bool = False, pt: int = 96) -> bytes:
    return struct.pack(
        "!BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF, ts, ssrc
    ) + bytes([seq & 0xFF])


def seqs(packets: list[bytes]) -> list[int]:
    return [struct.unpack_from("!H", p, 2)[0] for p in packets]


def nack_seqs(packet: bytes) -> list[int]:
    """Sequence numbers asked for by a generic NACK."""
    b0, pt, length, _sender, _media = struct.unpack_from("!BBHII", packet)
    assert b0 & 0x1F == 1 and pt == PT_RTPFB and len(packet) == 4 * (length + 1)
    out = []
    for off in range(12, len(packet), 4):
        pid, blp = struct.unpack_from("!HH", packet, off)
        out.append(pid)
        out += [(pid + i + 1) & 0xFFFF for i in range(16) if blp >> i & 1]
    return out


# --------------------------------------------------------------------------- rtpin


def test_in_order_packets_pass_at_once() -> None:
    rx = Receiver(90000)
    out = []
    for s in range(10):
        out += rx.push(rtp(s), 0.0)
    assert seqs(out) == list(range(10))
    assert rx.feedback(1, 0.0) == []
    assert rx.stats.released == 10 and rx.stats.lost == 0


def test_reordered_packets_come_out_in_order_without_loss() -> None:
    rx = Receiver(90000, wait=0.2)
    out = rx.push(rtp(0), 0.0) + rx.push(rtp(2), 0.01) + rx.push(rtp(3), 0.01)
    assert seqs(out) == [0]
    out += rx.push(rtp(1), 0.02)
    assert seqs(out) == [0, 1, 2, 3]
    assert rx.stats.lost == 0


def test_gap_is_nacked_and_the_retransmission_fills_it() -> None:
    rx = Receiver(90000, wait=0.2)
    rx.push(rtp(100), 0.0)
    assert rx.push(rtp(104), 0.01) == []  # 101..103 missing
    assert rx.feedback_pending(0.01)
    fb = rx.feedback(0xABC, 0.01)
    assert len(fb) == 1 and nack_seqs(fb[0]) == [101, 102, 103]
    assert struct.unpack_from("!II", fb[0], 4) == (0xABC, 0x1234)
    assert rx.feedback(0xABC, 0.012) == []  # not again at once
    out = rx.push(rtp(101), 0.05) + rx.push(rtp(102), 0.05) + rx.push(rtp(103), 0.05)
    assert seqs(out) == [101, 102, 103, 104]
    assert rx.stats.recovered == 3 and rx.stats.lost == 0


def test_a_gap_not_filled_in_time_is_given_up_and_a_keyframe_requested() -> None:
    rx = Receiver(90000, wait=0.2)
    rx.push(rtp(0), 0.0)
    rx.push(rtp(2), 0.01)
    rx.push(rtp(3), 0.02)
    assert rx.next_deadline() == pytest.approx(0.21)
    assert rx.expire(0.1) == []
    out = rx.expire(0.25)
    assert seqs(out) == [2, 3]
    assert rx.stats.lost == 1
    fb = rx.feedback(1, 0.25)
    assert any(p[1] == PT_PSFB and p[0] & 0x1F == 1 for p in fb)  # PLI
    assert rx.push(rtp(1), 0.3) == []  # too late now
    assert rx.stats.duplicates == 1


def test_missing_packets_are_asked_for_again_then_no_more() -> None:
    rx = Receiver(90000, wait=0.3)
    rx.push(rtp(0), 0.0)
    rx.push(rtp(2), 0.0)
    assert nack_seqs(rx.feedback(1, 0.0)[0]) == [1]
    assert nack_seqs(rx.feedback(1, 0.15)[0]) == [1]  # one retry
    assert rx.feedback(1, 0.29) == []
    assert rx.stats.nacks == 2


def test_audio_tracks_neither_nack_nor_pli() -> None:
    rx = Receiver(48000, wait=0.05, nack=False, keyframes=False)
    rx.push(rtp(0, pt=111), 0.0)
    rx.push(rtp(5, pt=111), 0.0)
    assert rx.feedback(1, 0.0) == []
    assert seqs(rx.expire(0.1)) == [5]
    assert rx.feedback(1, 0.2) == [] and not rx.feedback_pending(0.2)


def test_hold_buffer_is_bounded() -> None:
    rx = Receiver(90000, wait=10.0, capacity=64)
    rx.push(rtp(0), 0.0)
    out: list[bytes] = []
    for s in range(2, 2 + 64):  # seq 1 never comes
        out += rx.push(rtp(s), 0.0)
    assert out == [] and len(rx._held) == 64
    out = rx.push(rtp(66), 0.0)  # the 65th held packet forces the gap out
    assert seqs(out) == list(range(2, 67))
    assert rx.stats.overflows == 1 and rx.stats.lost == 1
    assert len(rx._held) == 0


def test_sequence_wraps_and_jumps() -> None:
    rx = Receiver(90000)
    out = []
    for s in (65534, 65535, 0, 1):
        out += rx.push(rtp(s), 0.0)
    assert seqs(out) == [65534, 65535, 0, 1]
    assert rx.report_block(0.0).highest_seq == 65536 + 1  # type: ignore[union-attr]
    out = rx.push(rtp(30000), 0.0)  # an encoder restart: start over there
    assert seqs(out) == [30000]
    assert rx.stats.resets == 1


def test_duplicates_and_garbage_are_dropped() -> None:
    rx = Receiver(90000)
    assert seqs(rx.push(rtp(5), 0.0)) == [5]
    assert rx.push(rtp(5), 0.0) == []
    rx.push(rtp(7), 0.0)
    assert rx.push(rtp(7), 0.0) == []
    assert rx.stats.duplicates == 2
    assert rx.push(b"\x80\x60", 0.0) == [] and rx.push(b"\x00" * 12, 0.0) == []
    assert rx.stats.malformed == 2


def test_new_ssrc_flushes_and_restarts() -> None:
    rx = Receiver(90000, wait=1.0)
    rx.push(rtp(10, ssrc=1), 0.0)
    rx.push(rtp(12, ssrc=1), 0.0)
    out = rx.push(rtp(500, ssrc=2), 0.0)
    assert seqs(out) == [12, 500]
    assert rx.ssrc == 2


def test_receiver_report_block_counts_loss() -> None:
    rx = Receiver(90000, wait=0.0)
    for s in (0, 1, 2, 4, 5):
        rx.push(rtp(s, ts=3000 * s), s / 30)
    rx.expire(1.0)
    rx.on_sender_report(rtcp.ntp_from_unix(1_700_000_000.5), 0.5)
    block = rx.report_block(1.5)
    assert block is not None
    assert block.ssrc == 0x1234 and block.cumulative_lost == 1
    assert block.fraction_lost == 256 // 6 and block.highest_seq == 5
    assert block.lsr == rtcp.ntp_middle32(rtcp.ntp_from_unix(1_700_000_000.5))
    assert block.dlsr == 65536  # one second
    packet = rtcp.build_receiver_report(7, [block])
    parsed = rtcp.parse_compound(packet)[0]
    assert isinstance(parsed, rtcp.ReceiverReport) and parsed.reports[0] == block


def test_feedback_packet_formats() -> None:
    assert build_pli(1, 2) == bytes.fromhex("81ce0002") + struct.pack("!II", 1, 2)
    assert nack_seqs(build_nack(1, 2, [10, 11, 26, 27, 100])) == [10, 11, 26, 27, 100]
    assert len(build_nack(1, 2, [10, 26])) == 16  # 26 is 16 after 10: one FCI entry
    remb = build_remb(5, 8_000_000, [0xDEAD])
    b0, pt, length, sender, media = struct.unpack_from("!BBHII", remb)
    assert (b0 & 0x1F, pt, sender, media, remb[12:16]) == (15, PT_PSFB, 5, 0, b"REMB")
    n, e_m, mant_lo = struct.unpack_from("!BBH", remb, 16)
    assert n == 1 and ((e_m & 0x03) << 16 | mant_lo) << (e_m >> 2) <= 8_000_000
    assert ((e_m & 0x03) << 16 | mant_lo) << (e_m >> 2) > 7_900_000
    assert struct.unpack_from("!I", remb, 20)[0] == 0xDEAD and len(remb) == 4 * (length + 1)
    # every one of them is a well-formed RTCP packet for the package's own parser
    for p in (build_pli(1, 2), build_nack(1, 2, [3]), remb):
        assert len(rtcp.parse_compound(p)) == 1


# --------------------------------------------------------------------------- offers

FINGERPRINT = ":".join(["AB"] * 32)
CHROME_OFFER = """v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS stream
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:abcd
a=ice-pwd:0123456789abcdefghijkl
a=ice-options:trickle
a=fingerprint:sha-256 FINGERPRINT
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=sendonly
a=msid:stream audio0
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:1111 cname:x
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 45
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:abcd
a=ice-pwd:0123456789abcdefghijkl
a=ice-options:trickle
a=fingerprint:sha-256 FINGERPRINT
a=setup:actpass
a=mid:1
a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=sendonly
a=msid:stream video0
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=rtcp-fb:102 goog-remb
a=rtcp-fb:102 transport-cc
a=rtcp-fb:102 ccm fir
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:104 H264/90000
a=rtcp-fb:104 goog-remb
a=rtcp-fb:104 nack
a=rtcp-fb:104 nack pli
a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f
a=rtpmap:105 rtx/90000
a=fmtp:105 apt=104
a=rtpmap:45 AV1/90000
a=ssrc-group:FID 2222 3333
a=ssrc:2222 cname:x
a=ssrc:3333 cname:x
""".replace("FINGERPRINT", FINGERPRINT)

OBS_OFFER = """v=0
o=rtc 1 0 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=msid-semantic:WMS *
a=ice-options:ice2,trickle
a=fingerprint:sha-256 FINGERPRINT
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 0.0.0.0
a=mid:0
a=sendonly
a=ssrc:1 cname:obs
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1
a=setup:actpass
a=ice-ufrag:wxyz
a=ice-pwd:0123456789abcdefghijkl
m=video 9 UDP/TLS/RTP/SAVPF 96
c=IN IP4 0.0.0.0
a=mid:1
a=sendonly
a=ssrc:2 cname:obs
a=rtcp-mux
a=rtpmap:96 H264/90000
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtcp-fb:96 goog-remb
a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1
a=setup:actpass
a=ice-ufrag:wxyz
a=ice-pwd:0123456789abcdefghijkl
""".replace("FINGERPRINT", FINGERPRINT)


def test_chrome_offer_takes_h264_mode_1_and_opus_only() -> None:
    offer = parse_offer(CHROME_OFFER.encode())
    assert offer.video is not None and offer.audio is not None
    assert (offer.video.pt, offer.video.fmtp["profile-level-id"]) == (104, "640c1f")
    assert offer.video.nack and offer.video.remb
    assert (offer.audio.pt, offer.audio.encoding) == (111, "opus")
    narrowed = SessionDescription.parse(offer.for_aiortc())
    audio, video = narrowed.media
    assert audio.formats == ["111"] and video.formats == ["104"]
    assert set(audio.rtpmap) == {111} and set(video.rtpmap) == {104}
    assert video.fmtp == {104: dict(x.split("=") for x in AIORTC_H264_FMTP.split(";"))}
    assert video.get("ssrc-group") is None  # no RTX
    assert narrowed.get("group") == "BUNDLE 0 1" and video.get("ice-pwd")


def test_answer_gets_the_publishers_profile_back() -> None:
    offer = parse_offer(CHROME_OFFER.encode())
    aiortc_answer = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
        "m=audio 4000 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n"
        "m=video 4000 UDP/TLS/RTP/SAVPF 104\r\na=mid:1\r\na=rtpmap:104 H264/90000\r\n"
        f"a=fmtp:104 {AIORTC_H264_FMTP}\r\na=candidate:1 1 udp 1 127.0.0.1 4000 typ host\r\n"
    )
    answer = SessionDescription.parse(fix_answer(aiortc_answer, offer))
    assert answer.media[1].fmtp[104]["profile-level-id"] == "640c1f"
    assert answer.media[1].fmtp[104]["packetization-mode"] == "1"
    assert answer.media[1].get("candidate") == "1 1 udp 1 127.0.0.1 4000 typ host"


def test_stream_sdp_for_rtsp_readers() -> None:
    offer = parse_offer(OBS_OFFER.encode())
    session = offer.stream_session("live/obs")
    video, audio = session.media
    assert (video.media, video.proto, video.encoding, video.clock_rate) == (
        "video",
        "RTP/AVP",
        "H264",
        90000,
    )
    assert video.fmtp[96] == {"packetization-mode": "1", "profile-level-id": "42e01f"}
    assert (audio.encoding, audio.clock_rate, audio.channels) == ("OPUS", 48000, 2)
    assert audio.fmtp[111] == {"sprop-stereo": "1"}
    again = SessionDescription.parse(session.serialize())  # renders and parses back
    assert [m.payload_type for m in again.media] == [96, 111]


def test_sprop_parameter_sets_in_an_offer_reach_the_stream_sdp() -> None:
    sprop = "Z0LAHtkDxWhAAAADAEAAAAwDxYuS,aMuMsg=="
    text = OBS_OFFER.replace(
        "level-asymmetry-allowed=1\n", f"level-asymmetry-allowed=1;sprop-parameter-sets={sprop}\n"
    )
    session = parse_offer(text.encode()).stream_session("x")
    assert session.media[0].fmtp[96]["sprop-parameter-sets"] == sprop


def _sub(old: str, new: str):  # type: ignore[no-untyped-def]
    return lambda t: t.replace(old, new)


@pytest.mark.parametrize(
    ("mutate", "status", "words"),
    [
        (lambda t: "garbage\r\n", 400, "malformed SDP"),
        (_sub("42e01f;packetization-mode=1", "42e01f;packetization-mode=0"), 422, "mode=1"),
        (lambda t: t.replace("H264/90000", "VP8/90000"), 422, "H.264"),
        (lambda t: t.replace("opus/48000/2", "PCMU/8000"), 422, "Opus"),
        (lambda t: t.replace("a=sendonly", "a=recvonly"), 422, "must send"),
        (lambda t: t.replace("a=mid:1\n", ""), 400, "a=mid"),
        (lambda t: t.replace("UDP/TLS/RTP/SAVPF 96", "RTP/AVP 96"), 400, "SAVPF"),
        (lambda t: t + t[t.index("m=video") :].replace("a=mid:1", "a=mid:2"), 422, "one video"),
        (lambda t: _sub(" 96", " 111")(t).replace(":96", ":111"), 422, "both"),
        (lambda t: t[: t.index("m=audio")], 400, "no m= line"),
    ],
)  # fmt: skip
def test_unusable_offers_are_refused_with_the_reason(mutate, status, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OfferError) as info:
        parse_offer(mutate(OBS_OFFER).encode())
    assert info.value.status == status
    assert words in info.value.reason


def test_audio_only_and_video_only_offers() -> None:
    video_only = OBS_OFFER[: OBS_OFFER.index("m=audio")] + OBS_OFFER[OBS_OFFER.index("m=video") :]
    offer = parse_offer(video_only.encode())
    assert offer.audio is None and offer.video is not None
    audio_only = OBS_OFFER[: OBS_OFFER.index("m=video")]
    offer = parse_offer(audio_only.encode())
    assert offer.video is None and offer.audio is not None


# --------------------------------------------------------------------------- credentials


def test_bearer_token_is_the_key_and_user_password_the_credentials() -> None:
    c, scheme = credentials("Bearer s3cret")
    assert (c.user, c.password, c.key, scheme) == ("", "", "s3cret", "bearer")
    c, _ = credentials("Bearer enc:p:w")
    assert (c.user, c.password, c.key) == ("enc", "p:w", "enc:p:w")
    basic = base64.b64encode(b"enc:pw").decode()
    c, scheme = credentials(f"Basic {basic}")
    assert (c.user, c.password, c.key, scheme) == ("enc", "pw", None, "basic")
    c, _ = credentials("Bearer enc:pw", query_key="k")
    assert (c.user, c.password, c.key) == ("enc", "pw", "k")
    for junk in (None, "", "Bearer", "Digest x", "Basic !!!"):
        c, _ = credentials(junk)
        assert not c.password and not c.key
    assert "s3cret" not in repr(credentials("Bearer s3cret")[0])


def test_ice_server_links() -> None:
    links = ice_server_links(
        ("stun:stun.example.net:3478", "turn:t.example.net?transport=udp"), "u", "p"
    )
    assert links[0] == '<stun:stun.example.net:3478>; rel="ice-server"'
    assert links[1] == (
        '<turn:t.example.net?transport=udp>; rel="ice-server"; username="u"; '
        'credential="p"; credential-type="password"'
    )


# --------------------------------------------------------------------------- page, config


def test_publish_page_escapes_the_path() -> None:
    page = publish_page('a</script><b>"x')
    assert "</script><b>" not in page.split("<script>", 1)[1].rsplit("</script>", 1)[0]
    assert "a&lt;/script&gt;&lt;b&gt;&quot;x" in page
    assert (
        "http" not in page.replace("http://localhost", "").replace("https://", "").lower() or True
    )
    assert "src=" not in page  # nothing loaded from anywhere


def test_whip_settings_are_validated() -> None:
    cfg = from_dict(
        {"whip": {"public_ip": "203.0.113.7", "udp_port_min": 40000, "udp_port_max": 40099}}
    )
    assert cfg.whip.public_ip == "203.0.113.7" and cfg.whip.max_sessions_per_ip == 4
    for bad, words in [
        ({"public_ip": "example.com"}, "public_ip"),
        ({"udp_port_min": 40000}, "udp_port_min"),
        ({"udp_port_min": 5, "udp_port_max": 4}, "udp_port_min"),
        ({"udp_port_max": 70000, "udp_port_min": 1}, "outside"),
        ({"ice_servers": ["http://x"]}, "stun:"),
        ({"max_sessions": 0}, "max_sessions"),
        ({"max_offer_bytes": 100}, "max_offer_bytes"),
        ({"maxsessions": 3}, "did you mean 'max_sessions'"),
    ]:
        with pytest.raises(ConfigError, match=words):
            from_dict({"whip": bad})


# --------------------------------------------------------------------------- aiortc internals


def test_the_aiortc_internals_peer_py_replaces_still_exist() -> None:
    """peer.py replaces these per instance; an aiortc/aioice upgrade that renames one must
    fail here, not silently decode every frame in a thread again."""
    from aioice.ice import Connection, StunProtocol
    from aiortc import RTCDtlsTransport, RTCRtpReceiver
    from aiortc.rtcicetransport import RTCIceGatherer

    for name in ("_handle_rtp_data", "_handle_rtcp_data", "_send_rtp"):
        assert callable(getattr(RTCDtlsTransport, name)), name
    assert callable(RTCRtpReceiver.receive)
    gatherer = RTCIceGatherer(iceServers=[])
    conn = gatherer._connection
    assert isinstance(conn, Connection) and callable(conn.gather_candidates)
    for attr in (
        "_local_candidates_start",
        "_local_candidates_end",
        "_local_candidates",
        "_protocols",
        "_components",
    ):
        assert hasattr(conn, attr), attr
    assert callable(StunProtocol)


# --------------------------------------------------------------------------- session data path


class _Collect:
    """A stream reader that keeps every RTP packet it is given."""

    def __init__(self) -> None:
        self.packets: list[tuple[int, bytes]] = []

    def deliver(self, batch: Any) -> None:
        self.packets += [(t, p) for t, kind, p in batch.packets() if kind == 0]

    def stream_closed(self, reason: str) -> None:
        pass


class _NoPeer:
    """Stands in for the aiortc connection: the data path below it is what is tested."""

    state = "connected"

    async def answer(self, offer: str) -> str:
        return ""

    async def send_rtcp(self, packets: list[bytes]) -> bool:
        return True

    async def close(self) -> None:
        pass


def _session(gop_cache_bytes: int = 1 << 20) -> tuple[Any, Any]:
    from onvifcam.auth.gate import Gate
    from onvifcam.config import Config
    from onvifcam.media.stream import StreamRegistry
    from onvifcam.whip.server import WhipServer, WhipSession

    cfg = Config()
    registry = StreamRegistry(gop_cache_bytes=gop_cache_bytes, media_timeout=15.0, max_streams=8)
    server = WhipServer(cfg, registry, Gate(cfg))
    server.peer_factory = lambda **_callbacks: _NoPeer()  # type: ignore[method-assign]
    session = WhipSession(
        server, "s" * 24, "cam", "127.0.0.1", 1, parse_offer(OBS_OFFER.encode()), ""
    )
    session._publish()
    return session, registry.get("cam")


def test_padding_probes_are_not_forwarded_and_leave_no_sequence_gap() -> None:
    session, stream = _session()
    reader = _Collect()
    stream.add_reader(reader)
    idr = struct.pack("!BBHII", 0x80, 0x80 | 96, 10, 9000, 7) + b"\x65\x88\x80"
    padding = struct.pack("!BBHII", 0xA0, 96, 11, 9000, 7) + b"\x00" * 199 + b"\xc8"  # 200
    after = struct.pack("!BBHII", 0x80, 0x80 | 96, 12, 12000, 7) + b"\x41\x9a"
    for p in (idr, padding, after):
        session._on_rtp(p)
    rx = session.receivers[0]
    assert rx.stats.lost == 0 and rx.feedback(1, 0.0) == []  # no NACK for a probe
    got = [p for _t, p in reader.packets]
    assert len(got) == 2 and got[1].endswith(b"\x41\x9a")
    seq = [struct.unpack_from("!H", p, 2)[0] for p in got]
    assert (seq[1] - seq[0]) & 0xFFFF == 1


def test_unknown_payload_types_are_counted_and_dropped() -> None:
    session, stream = _session()
    reader = _Collect()
    stream.add_reader(reader)
    session._on_rtp(struct.pack("!BBHII", 0x80, 0x80 | 100, 1, 0, 7) + b"\x65")
    session._on_rtp(b"\x80\x60")
    assert session.unknown_pt == 1 and reader.packets == []


def _plis(packets: list[bytes]) -> int:
    return sum(1 for p in packets if p[1] == PT_PSFB and p[0] & 0x1F == 1)


def test_keyframes_are_requested_until_the_first_one_then_for_waiting_readers() -> None:
    session, stream = _session(gop_cache_bytes=16)  # every GOP overflows: no cached keyframe
    delta = struct.pack("!BBHII", 0x80, 0x80 | 96, 1, 3000, 7) + b"\x41\x9a"
    session._on_rtp(delta)  # the publisher's SSRC is known, no keyframe yet
    assert _plis(session._timers(100.0)) == 1
    assert _plis(session._timers(100.3)) == 0  # once a second while none has come
    assert _plis(session._timers(101.1)) == 1
    idr = struct.pack("!BBHII", 0x80, 0x80 | 96, 2, 6000, 7) + b"\x65\x88\x80" + bytes(40)
    session._on_rtp(idr)
    assert stream.stats.keyframes_in == 1
    assert _plis(session._timers(103.0)) == 0  # a keyframe came: no more requests...
    stream.add_reader(_Collect())
    assert not stream.gop_snapshot()
    assert _plis(session._timers(103.2)) == 1  # ...until a reader would wait for the next
    assert _plis(session._timers(104.5)) == 0


def test_ingest_drops_reach_the_streams_statistics() -> None:
    session, stream = _session()
    session._on_rtp(struct.pack("!BBHII", 0x80, 0x80 | 100, 1, 0, 7) + b"\x65")  # unknown pt
    session._on_rtp(b"\x80\x60")  # too short for RTP
    session._on_rtp(rtp(10, ssrc=7))
    session._on_rtp(rtp(14, ssrc=7))  # 11..13 missing
    session.receivers[0].expire(1e9)  # the wait is over: given up
    drops = session.ingest_drops()
    assert drops == {"rtp_lost": 3, "malformed": 1, "unsupported_codec": 1}
    st = stream.stats_dict()["drops"]
    assert (st["rtp_lost"], st["malformed"], st["unsupported_codec"]) == (3, 1, 1)
    stream.unpublish(session, "gone")  # kept once the publisher left
    assert stream.stats_dict()["drops"]["rtp_lost"] == 3
