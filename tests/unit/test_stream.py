"""media.stream: fan-out, GOP cache, publisher policies and output continuity."""

from __future__ import annotations

import itertools
import struct
from fractions import Fraction

import av
import pytest

from onvifcam.media import h264, rtp
from onvifcam.media.sdp import SessionDescription
from onvifcam.media.stream import RTP, Batch, Stream, StreamBusy, StreamRegistry

SDP_AV = """v=0
o=- 0 0 IN IP4 127.0.0.1
s=test
t=0 0
m=video 0 RTP/AVP 96
a=rtpmap:96 H264/90000
a=fmtp:96 packetization-mode=1
a=control:streamid=0
m=audio 0 RTP/AVP 97
a=rtpmap:97 MPEG4-GENERIC/48000/2
a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190
a=control:streamid=1
"""


class Pub:
    """A publisher as the stream sees it."""

    def __init__(self, name: str = "pub") -> None:
        self.description = name
        self.kicked: list[str] = []

    def kick(self, reason: str) -> None:
        self.kicked.append(reason)


class Collect:
    """A reader that keeps what it is given (framed for channels 0 and 2)."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.closed: list[str] = []

    def deliver(self, batch: Batch) -> None:
        self.batches.append(batch)

    def stream_closed(self, reason: str) -> None:
        self.closed.append(reason)

    def packets(self, track: int = 0) -> list[bytes]:
        return [p for b in self.batches for t, k, p in b.packets() if t == track and k == RTP]

    def aus(self) -> list[tuple[int, bool]]:
        return [(t, key) for b in self.batches for t, k, _p, key in b.items if k == RTP]


class Encoder:
    """Real H.264 access units from libx264, as RTP packets."""

    def __init__(self, size: tuple[int, int] = (320, 240), gop: int = 5) -> None:
        self.ctx = av.CodecContext.create("libx264", "w")
        self.ctx.width, self.ctx.height = size
        self.ctx.pix_fmt = "yuv420p"
        self.ctx.time_base = Fraction(1, 25)
        self.ctx.framerate = Fraction(25, 1)
        self.ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"}
        self.ctx.gop_size = gop
        self.n = 0
        self.size = size

    def next_au(self) -> list[bytes]:
        frame = av.VideoFrame(self.size[0], self.size[1], "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([self.n * 7 % 256]) * plane.buffer_size)
        frame.pts = self.n
        self.n += 1
        out = b"".join(bytes(p) for p in self.ctx.encode(frame))
        return h264.split_annexb(out)


class RtpMaker:
    """Builds RTP packets for a publisher with its own SSRC, seq and timestamps."""

    def __init__(self, ssrc: int, seq: int, ts: int) -> None:
        self.ssrc, self.seq, self.ts = ssrc, seq, ts

    def video(self, nals: list[bytes]) -> list[bytes]:
        payloads = h264.packetize(nals, mtu=600)
        out = []
        for i, pl in enumerate(payloads):
            out.append(rtp.build(96, self.seq, self.ts, self.ssrc, pl, i == len(payloads) - 1))
            self.seq += 1
        self.ts += 3600
        return out


def push(stream: Stream, packets: list[bytes], track: int = 0) -> None:
    for p in packets:
        stream.on_rtp(track, p)


def header(packet: bytes) -> tuple[int, int, int]:
    _b0, _b1, seq, ts, ssrc = struct.unpack_from("!BBHII", packet)
    return seq, ts, ssrc


@pytest.fixture
def sdp() -> SessionDescription:
    return SessionDescription.parse(SDP_AV)


def test_readers_with_one_layout_share_the_same_framed_bytes(sdp: SessionDescription) -> None:
    s = Stream("cam")
    s.publish(Pub(), sdp)
    enc, mk = Encoder(), RtpMaker(1, 10, 1000)
    r1, r2 = Collect(), Collect()
    s.add_reader(r1)
    s.add_reader(r2)
    push(s, mk.video(enc.next_au()))
    batch = r1.batches[-1]
    assert batch is r2.batches[-1]
    a = batch.framed((0, 2))
    assert a is batch.framed((0, 2)), "framed once per layout, then shared"
    # '$' channel length packet, for every packet of the AU
    pos, n = 0, 0
    while pos < len(a):
        magic, ch, length = struct.unpack_from("!cBH", a, pos)
        assert (magic, ch) == (b"$", 0)
        pos += 4 + length
        n += 1
    assert pos == len(a) and n == len(batch.items[0][2])


def test_new_reader_starts_at_last_keyframe_and_rtp_info_matches(
    sdp: SessionDescription,
) -> None:
    s = Stream("cam")
    s.publish(Pub(), sdp)
    enc, mk = Encoder(gop=5), RtpMaker(1, 10, 1000)
    for _ in range(7):  # IDR, 4 P, IDR, P
        push(s, mk.video(enc.next_au()))
    positions = s.start_positions()
    late = Collect()
    assert s.add_reader(late) is True
    assert late.aus() == [(0, True), (0, False)]
    first = late.packets()[0]
    seq, ts, _ssrc = header(first)
    assert positions[0] == (seq, ts)
    assert h264.payload_is_keyframe(first[12:])


def test_reader_joining_before_any_keyframe_must_wait(sdp: SessionDescription) -> None:
    s = Stream("cam")
    s.publish(Pub(), sdp)
    assert s.add_reader(Collect()) is False


def test_publisher_video_starts_on_an_idr(sdp: SessionDescription) -> None:
    s = Stream("cam")
    s.publish(Pub(), sdp)
    enc, mk = Encoder(gop=5), RtpMaker(1, 10, 1000)
    enc.next_au()  # the IDR is lost: the stream first sees P frames
    r = Collect()
    s.add_reader(r)
    for _ in range(4):
        push(s, mk.video(enc.next_au()))
    assert r.aus() == []
    assert s.stats.dropped_in > 0
    push(s, mk.video(enc.next_au()))  # the next IDR
    assert r.aus() == [(0, True)]


def test_output_is_continuous_across_a_publisher_reconnect(sdp: SessionDescription) -> None:
    s = Stream("cam")
    first = Pub("first")
    s.publish(first, sdp)
    r = Collect()
    s.add_reader(r)
    enc = Encoder(gop=3)
    mk = RtpMaker(0x1111, 60000, 4_000_000_000)
    for _ in range(6):
        push(s, mk.video(enc.next_au()))
    s.unpublish(first, "gone")
    second = Pub("second")
    s.publish(second, sdp)
    enc2, mk2 = Encoder(gop=3), RtpMaker(0x2222, 5, 77)
    for _ in range(6):
        push(s, mk2.video(enc2.next_au()))
    heads = [header(p) for p in r.packets()]
    assert len({ssrc for _s, _t, ssrc in heads}) == 1
    for (s1, t1, _), (s2, t2, _) in itertools.pairwise(heads):
        assert (s2 - s1) & 0xFFFF == 1
        assert 0 <= (t2 - t1) & 0xFFFFFFFF < 90000 * 5
    assert r.closed == []


def test_second_publisher_rejected_unless_replace(sdp: SessionDescription) -> None:
    s = Stream("cam")
    a, b, c = Pub("a"), Pub("b"), Pub("c")
    s.publish(a, sdp)
    with pytest.raises(StreamBusy) as err:
        s.publish(b, sdp)
    assert err.value.status == 409 and "already has a publisher (a)" in str(err.value)
    assert s.publisher is a and a.kicked == []
    s.publish(c, sdp, replace=True)
    assert s.publisher is c and a.kicked and "replaced" in a.kicked[0]


def test_format_change_closes_readers(sdp: SessionDescription) -> None:
    s = Stream("cam")
    p = Pub()
    s.publish(p, sdp)
    r = Collect()
    s.add_reader(r)
    s.unpublish(p)
    video_only = SessionDescription.parse(SDP_AV.split("m=audio")[0])
    s.publish(Pub("b"), video_only)
    assert r.closed and not s.readers


def test_gop_cache_is_bounded(sdp: SessionDescription) -> None:
    s = Stream("cam", gop_cache_bytes=3000)
    s.publish(Pub(), sdp)
    enc, mk = Encoder(gop=100), RtpMaker(1, 1, 1)
    for _ in range(10):
        push(s, mk.video(enc.next_au()))
    assert s.gop_snapshot() == []  # the GOP outgrew the cache: nothing stale is served
    assert s.add_reader(Collect()) is False


def test_sps_in_band_gives_codec_size(sdp: SessionDescription) -> None:
    s = Stream("cam")
    s.publish(Pub(), sdp)
    enc, mk = Encoder(size=(640, 360)), RtpMaker(1, 1, 1)
    push(s, mk.video(enc.next_au()))
    info = s.video_info
    assert info is not None and (info.codec, info.width, info.height) == ("H264", 640, 360)


def test_malformed_rtp_is_counted_not_raised(sdp: SessionDescription) -> None:
    s = Stream("cam")
    s.publish(Pub(), sdp)
    for junk in (b"", b"\x00" * 5, b"\x40" * 20, b"\x90\x60\x00\x01" + b"\x00" * 9):
        s.on_rtp(0, junk)
    s.on_rtp(7, b"\x80" * 20)
    assert s.stats.malformed_in == 5


def test_registry_prefix_lookup_and_cleanup(sdp: SessionDescription) -> None:
    reg = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=2)
    s = reg.get_or_create("/live/cam1/")
    assert reg.find_prefix("live/cam1/trackID=0") == (s, "trackID=0")
    assert reg.find_prefix("other/x") is None
    reg.get_or_create("b")
    with pytest.raises(Exception, match="too many streams"):
        reg.get_or_create("c")
    reg.tick(s.unpublished_at + 31)
    assert reg.get("live/cam1") is None


def test_media_timeout_kicks_publisher_but_keeps_readers(sdp: SessionDescription) -> None:
    s = Stream("cam", media_timeout=2.0)
    p = Pub()
    s.publish(p, sdp)
    r = Collect()
    s.add_reader(r)
    s.tick(s._last_input + 2.5)
    assert p.kicked and "no media" in p.kicked[0]
    assert s.publisher is None and r in s.readers


def test_demand_hooks_are_asked_in_order_until_one_starts_a_source() -> None:
    reg = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=4)
    asked: list[str] = []

    def no(path: str) -> bool:
        asked.append("no:" + path)
        return False

    def broken(path: str) -> bool:
        asked.append("broken:" + path)
        raise RuntimeError("a source that cannot start")

    def yes(path: str) -> bool:
        asked.append("yes:" + path)
        return path == "cam"

    def never(path: str) -> bool:
        asked.append("never:" + path)
        return True

    assert reg.demand("cam") is False  # no hooks
    for hook in (no, broken, yes, never):
        reg.add_demand_hook(hook)
    assert reg.demand("/cam/") is True
    assert asked == ["no:cam", "broken:cam", "yes:cam"]
    asked.clear()
    assert reg.demand("other") is True  # 'never' says yes to anything
    assert asked == ["no:other", "broken:other", "yes:other", "never:other"]
