"""Tests for onvifcam.media.sdp with SDP as real encoders and cameras send it."""

from __future__ import annotations

from fractions import Fraction

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onvifcam.media import h264
from onvifcam.media.sdp import (
    MAX_MEDIA,
    MediaDescription,
    SdpError,
    SessionDescription,
    resolve_control,
)


def x264_sprop() -> tuple[str, bytes, bytes]:
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 640, 360, "yuv420p"
    ctx.time_base = Fraction(1, 25)
    packet = next(iter(ctx.encode(av.VideoFrame(640, 360, "yuv420p")) + ctx.encode(None)))
    sps, pps = h264.split_annexb(bytes(packet))[:2]
    return h264.sprop_parameter_sets(sps, pps), sps, pps


# Shaped like FFmpeg's RTSP ANNOUNCE (CRLF, "; " between fmtp params, streamid controls).
FFMPEG_SDP = (
    "v=0\r\n"
    "o=- 0 0 IN IP4 127.0.0.1\r\n"
    "s=No Name\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "a=tool:libavformat 61.7.100\r\n"
    "m=video 0 RTP/AVP 96\r\n"
    "b=AS:2000\r\n"
    "a=rtpmap:96 H264/90000\r\n"
    "a=fmtp:96 packetization-mode=1; sprop-parameter-sets={sprop}; profile-level-id=64001E\r\n"
    "a=control:streamid=0\r\n"
    "m=audio 0 RTP/AVP 97\r\n"
    "b=AS:128\r\n"
    "a=rtpmap:97 MPEG4-GENERIC/48000/2\r\n"
    "a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;"
    "indexdeltalength=3; config=119056E500\r\n"
    "a=control:streamid=1\r\n"
)

# Shaped like GStreamer's rtspclientsink (LF only here, session-level absolute control).
GST_SDP = (
    "\n".join(
        [
            "v=0",
            "o=- 1188340656180883 1 IN IP4 127.0.0.1",
            "s=Session streamed with GStreamer",
            "i=rtsp-server",
            "t=0 0",
            "a=tool:GStreamer",
            "a=type:broadcast",
            "a=range:npt=now-",
            "a=control:rtsp://127.0.0.1:8554/live/cam",
            "m=video 0 RTP/AVP 96",
            "c=IN IP4 0.0.0.0",
            "a=rtpmap:96 H265/90000",
            "a=framerate:30",
            "a=fmtp:96 sprop-vps=QAEMAf//AWAAAAMAkAAAAwAAAwA/lZgJ;"
            "sprop-sps=QgEBAWAAAAMAkAAAAwAAAwA/oAUCAXHy5lZkkmS8BAAAAwAEAAADAGQg;"
            "sprop-pps=RAHBcrRiQA==",
            "a=control:stream=0",
            "a=ts-refclk:local",
            "a=mediaclk:sender",
            "m=audio 0 RTP/AVP 0",
            "c=IN IP4 0.0.0.0",
            "a=control:stream=1",
        ]
    )
    + "\n"
)


def test_parse_ffmpeg_announce() -> None:
    sprop, sps, pps = x264_sprop()
    sdp = SessionDescription.parse(FFMPEG_SDP.format(sprop=sprop).encode())
    assert sdp.version == 0 and sdp.name == "No Name" and sdp.times == ["0 0"]
    assert sdp.origin == "- 0 0 IN IP4 127.0.0.1" and sdp.connection == "IN IP4 127.0.0.1"
    assert sdp.get("tool") == "libavformat 61.7.100"
    video, audio = sdp.media
    assert (video.media, video.port, video.proto, video.formats) == ("video", 0, "RTP/AVP", ["96"])
    assert video.bandwidth == ["AS:2000"]
    assert video.payload_type == 96 and video.encoding == "H264" and video.clock_rate == 90000
    assert video.control == "streamid=0"
    fmtp = video.fmtp[96]
    assert fmtp["packetization-mode"] == "1" and fmtp["profile-level-id"] == "64001E"
    assert h264.parse_sprop_parameter_sets(fmtp["sprop-parameter-sets"]) == [sps, pps]
    assert audio.rtpmap == {97: ("MPEG4-GENERIC", 48000, 2)}
    assert audio.encoding == "MPEG4-GENERIC" and audio.clock_rate == 48000 and audio.channels == 2
    assert audio.fmtp[97]["config"] == "119056E500" and audio.fmtp[97]["mode"] == "AAC-hbr"
    assert resolve_control("rtsp://h:8554/live/cam", audio.control) == (
        "rtsp://h:8554/live/cam/streamid=1"
    )


def test_parse_gstreamer_announce_lf_only() -> None:
    sdp = SessionDescription.parse(GST_SDP)
    assert sdp.control == "rtsp://127.0.0.1:8554/live/cam"
    assert sdp.info == "rtsp-server"
    video, audio = sdp.media
    assert video.connection == "IN IP4 0.0.0.0"
    assert video.encoding == "H265" and video.get("framerate") == "30"
    assert set(video.fmtp[96]) == {"sprop-vps", "sprop-sps", "sprop-pps"}
    assert video.fmtp[96]["sprop-pps"] == "RAHBcrRiQA=="
    assert video.get("ts-refclk") == "local"
    assert (audio.encoding, audio.clock_rate, audio.channels) == ("PCMU", 8000, 1)
    assert resolve_control(sdp.control or "", audio.control) == (
        "rtsp://127.0.0.1:8554/live/cam/stream=1"
    )


def test_tolerates_missing_session_lines_and_blank_lines() -> None:
    sdp = SessionDescription.parse("\n\nm=video 5000 RTP/AVP 26\n a=recvonly \n\nx=whatever\n")
    assert sdp.origin is None and sdp.name is None and sdp.times == []
    media = sdp.media[0]
    assert media.encoding == "JPEG" and media.clock_rate == 90000 and media.port == 5000
    assert media.attributes == [("recvonly", None)] and media.control is None


@pytest.mark.parametrize(
    ("pt", "encoding", "rate", "channels"),
    [(0, "PCMU", 8000, 1), (8, "PCMA", 8000, 1), (14, "MPA", 90000, None),
     (26, "JPEG", 90000, None), (32, "MPV", 90000, None), (10, "L16", 44100, 2),
     (11, "L16", 44100, 1)],
)  # fmt: skip
def test_static_payload_types(pt: int, encoding: str, rate: int, channels: int | None) -> None:
    media = SessionDescription.parse(f"v=0\nm=audio 0 RTP/AVP {pt}\n").media[0]
    assert (media.encoding, media.clock_rate, media.channels) == (encoding, rate, channels)


def test_rtpmap_overrides_static_and_name_is_kept() -> None:
    media = SessionDescription.parse("m=audio 0 RTP/AVP 8 0\na=rtpmap:8 pcma/16000\n").media[0]
    assert media.rtpmap == {8: ("pcma", 16000, None)}
    assert media.encoding == "PCMA" and media.clock_rate == 16000
    unknown = SessionDescription.parse("m=video 0 RTP/AVP 96\n").media[0]
    assert (unknown.encoding, unknown.clock_rate, unknown.channels) == ("", 0, None)
    other = SessionDescription.parse("m=application 0 TCP/WSS *\n").media[0]
    with pytest.raises(SdpError, match="no numeric payload type"):
        _ = other.payload_type
    assert (other.encoding, other.clock_rate) == ("", 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v=0\ns=x\nt=0 0\n", "no m= line"),
        ("v=0\nm=video 0 RTP/AVP 96\na=rtpmap:96 H264\n", "rtpmap without clock rate on line 3"),
        ("v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/\r\n", "without clock rate on line 3"),
        ("m=video 0 RTP/AVP 96\n\n\na=rtpmap:x H264/90000\n", "invalid payload type on line 4"),
        ("m=video 0 RTP/AVP 96\na=rtpmap:96 /90000\n", "without encoding name on line 2"),
        ("m=video 0 RTP/AVP 96\na=rtpmap:96 H264/9k\n", "invalid clock rate '9k' on line 2"),
        ("m=video 0 RTP/AVP 96\na=rtpmap:96 H264/0\n", "invalid clock rate"),
        ("m=audio 0 RTP/AVP 97\na=rtpmap:97 opus/48000/two\n", "invalid channel count"),
        ("m=video 0 RTP/AVP 96\na=fmtp:abc x=1\n", "fmtp with invalid payload type on line 2"),
        ("v=0\nm=video 0 RTP/AVP\n", "needs media, port, proto and formats on line 2"),
        ("v=0\nm=video x RTP/AVP 96\n", "invalid port 'x' in m= line 2"),
        ("v=0\nm=video 70000 RTP/AVP 96\n", "port 70000 out of range"),
        ("v=0\nm=video 0 RTP/AVP 96 x\n", "invalid RTP payload type 'x' in m= line 2"),
        ("v=0\nm=video 0 RTP/SAVPF 128\n", "invalid RTP payload type '128'"),
        ("v=0\nhello\nm=video 0 RTP/AVP 96\n", "malformed SDP line 2"),
        ("v=1\nm=video 0 RTP/AVP 96\n", "unsupported SDP version 1 on line 1"),
        ("v=zero\n", "invalid version"),
        ("m=video 0 RTP/AVP 96\nv=0\n", "v= inside a media section on line 2"),
        ("m=video 0 RTP/AVP 96\na=\n", "attribute without a name on line 2"),
    ],
)
def test_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        SessionDescription.parse(text)


def test_limits() -> None:
    too_many = "v=0\n" + "m=video 0 RTP/AVP 96\na=rtpmap:96 H264/90000\n" * (MAX_MEDIA + 1)
    with pytest.raises(SdpError, match="more than 16 media sections at line 34"):
        SessionDescription.parse(too_many)
    assert len(SessionDescription.parse(too_many.rsplit("m=", 1)[0]).media) == MAX_MEDIA
    big = "v=0\nm=video 0 RTP/AVP 96\n" + "a=x-pad:" + "y" * (64 * 1024) + "\n"
    with pytest.raises(SdpError, match="larger than 65536 bytes"):
        SessionDescription.parse(big)
    with pytest.raises(SdpError, match="larger than 65536 bytes"):
        SessionDescription.parse(big.encode())
    assert SessionDescription.parse("m=video 0 RTP/AVP 96\n", require_media=True).media
    assert SessionDescription.parse("v=0\n", require_media=False).media == []


def test_serialize_layout() -> None:
    sdp = SessionDescription(
        name="cam1",
        connection="IN IP4 0.0.0.0",
        attributes=[("control", "*"), ("range", "npt=now-")],
        media=[
            MediaDescription(
                "video",
                0,
                "RTP/AVP",
                ["96"],
                [
                    ("rtpmap", "96 H264/90000"),
                    ("fmtp", "96 packetization-mode=1"),
                    ("control", "trackID=0"),
                    ("recvonly", None),
                ],
                bandwidth=["AS:4000"],
            ),
            MediaDescription("audio", 0, "RTP/AVP", ["0"], [("control", "trackID=1")]),
        ],
    )
    assert sdp.serialize() == (
        b"v=0\r\n"
        b"o=- 0 0 IN IP4 127.0.0.1\r\n"
        b"s=cam1\r\n"
        b"c=IN IP4 0.0.0.0\r\n"
        b"t=0 0\r\n"
        b"a=control:*\r\n"
        b"a=range:npt=now-\r\n"
        b"m=video 0 RTP/AVP 96\r\n"
        b"b=AS:4000\r\n"
        b"a=rtpmap:96 H264/90000\r\n"
        b"a=fmtp:96 packetization-mode=1\r\n"
        b"a=control:trackID=0\r\n"
        b"a=recvonly\r\n"
        b"m=audio 0 RTP/AVP 0\r\n"
        b"a=control:trackID=1\r\n"
    )
    assert SessionDescription(media=[]).serialize().startswith(b"v=0\r\no=- 0 0 IN IP4")
    assert b"s= \r\n" in SessionDescription().serialize()


@pytest.mark.parametrize("text", [FFMPEG_SDP.format(sprop="Z0IAH+KQ,aM48gA=="), GST_SDP])
def test_serialize_round_trip(text: str) -> None:
    sdp = SessionDescription.parse(text)
    again = SessionDescription.parse(sdp.serialize())
    assert again == sdp
    assert again.serialize() == sdp.serialize()
    assert b"\n" not in sdp.serialize().replace(b"\r\n", b"")


@pytest.mark.parametrize(
    ("base", "control", "expected"),
    [
        ("rtsp://h/live/cam", "streamid=0", "rtsp://h/live/cam/streamid=0"),
        ("rtsp://h/live/cam/", "trackID=1", "rtsp://h/live/cam/trackID=1"),
        ("rtsp://h:554/live/cam", "stream=0", "rtsp://h:554/live/cam/stream=0"),
        ("rtsp://h/live/cam", "rtsp://other/x/trackID=3", "rtsp://other/x/trackID=3"),
        ("rtsp://h/live/cam", "RTSPS://other/x", "RTSPS://other/x"),
        ("rtsp://h/live/cam", "*", "rtsp://h/live/cam"),
        ("rtsp://h/live/cam", None, "rtsp://h/live/cam"),
        ("rtsp://h/live/cam", "", "rtsp://h/live/cam"),
        ("rtsp://h/live/cam", " trackID=2 ", "rtsp://h/live/cam/trackID=2"),
        ("rtsp://u:p@h:8554/a/b?x=1", "/c/trackID=0", "rtsp://u:p@h:8554/c/trackID=0"),
        ("rtsp://h/live/cam?token=1", "trackID=0", "rtsp://h/live/cam?token=1/trackID=0"),
        ("rtsp://h/live/cam", "?ctype=video", "rtsp://h/live/cam?ctype=video"),
    ],
)
def test_resolve_control(base: str, control: str | None, expected: str) -> None:
    assert resolve_control(base, control) == expected


@given(st.text(max_size=400))
def test_parse_only_raises_sdperror(text: str) -> None:
    try:
        sdp = SessionDescription.parse(text)
    except SdpError:
        return
    for media in sdp.media:
        _ = media.rtpmap, media.fmtp, media.control, media.encoding, media.clock_rate
        if media.proto.upper().startswith("RTP/"):
            assert 0 <= media.payload_type <= 127


@given(st.lists(st.sampled_from([
    "v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=x", "t=0 0", "m=video 0 RTP/AVP 96",
    "m=audio 0 RTP/AVP 0 8", "a=rtpmap:96 H264/90000", "a=rtpmap:96 H264", "a=fmtp:96 a=b;c",
    "a=control:trackID=1", "a=recvonly", "c=IN IP4 0.0.0.0", "b=AS:1", "m=video x", "a=rtpmap:",
    "a=fmtp:", "", "i=info", "junk", "a=rtpmap:200 X/1",
]), max_size=12), st.sampled_from(["\n", "\r\n"]))  # fmt: skip
def test_structured_parse_only_raises_sdperror(lines: list[str], eol: str) -> None:
    try:
        sdp = SessionDescription.parse(eol.join(lines).encode())
    except SdpError:
        return
    again = SessionDescription.parse(sdp.serialize())
    assert again.media == sdp.media and again.serialize() == sdp.serialize()


def test_reader_sdp_is_written_by_the_one_sdp_writer() -> None:
    from onvifcam.media.stream import Stream

    class Pub:
        description = "test"

        def kick(self, reason: str) -> None:
            pass

    stream = Stream("live/cam")
    stream.publish(Pub(), SessionDescription.parse(GST_SDP))
    sid = abs(hash("live/cam")) % 10**10
    # The publisher's media, without its controls, direction, range and ssrc; ours added.
    assert (
        stream.reader_sdp("10.1.2.3")
        == (
            "v=0\r\n"
            f"o=- {sid} 1 IN IP4 10.1.2.3\r\n"
            "s=live/cam\r\n"
            "c=IN IP4 0.0.0.0\r\n"
            "t=0 0\r\n"
            "a=tool:onvifcam\r\n"
            "a=control:*\r\n"
            "a=range:npt=now-\r\n"
            "m=video 0 RTP/AVP 96\r\n"
            "a=rtpmap:96 H265/90000\r\n"
            "a=framerate:30\r\n"
            "a=fmtp:96 sprop-vps=QAEMAf//AWAAAAMAkAAAAwAAAwA/lZgJ;"
            "sprop-sps=QgEBAWAAAAMAkAAAAwAAAwA/oAUCAXHy5lZkkmS8BAAAAwAEAAADAGQg;"
            "sprop-pps=RAHBcrRiQA==\r\n"
            "a=ts-refclk:local\r\n"
            "a=mediaclk:sender\r\n"
            "a=recvonly\r\n"
            "a=control:trackID=0\r\n"
            "m=audio 0 RTP/AVP 0\r\n"
            "a=recvonly\r\n"
            "a=control:trackID=1\r\n"
        ).encode()
    )
    # A stream at the root path still gets a valid (non-empty) s= line.
    root = Stream("")
    root.publish(Pub(), SessionDescription.parse(FFMPEG_SDP.format(sprop="Z0IAH+KQ,aM48gA==")))
    text = root.reader_sdp()
    assert b"\r\ns= \r\n" in text
    assert SessionDescription.parse(text).media[1].control == "trackID=1"
