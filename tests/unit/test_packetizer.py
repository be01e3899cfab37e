"""The packetizer without sockets: access units -> RTP (RFC 6184 / 7798 / 3640) and the SDP."""

from __future__ import annotations

import base64
import itertools
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onvifcam.media import aac, h264, h265, rtp
from onvifcam.media.packetizer import (
    AacSpec,
    LengthPrefixed,
    Packetizer,
    PacketizerError,
    VideoSpec,
    merge_parameter_sets,
)
from onvifcam.media.sdp import SessionDescription
from onvifcam.media.stream import Stream

# x264 (320x240 baseline) and x265 (320x240) parameter sets, as PyAV's encoders made them
SPS = base64.b64decode("Z0LADdoFB+hAAAADAEAAAAyDxQqo")
PPS = base64.b64decode("aM4PyA==")
VPS5 = base64.b64decode("QAEMAf//AWAAAAMAkAAAAwAAAwA8lZQJ")
SPS5 = base64.b64decode("QgEBAWAAAAMAkAAAAwAAAwA8oAoIDxZZWVKTC5oCAAADAAIAAAMAMhA=")
PPS5 = base64.b64decode("RAHAc8GJ")
ASC = aac.make_audio_specific_config(2, 48000, 2)

AUD = b"\x09\xf0"
SEI = b"\x06\x05\x03abc\x80"


def idr(size: int) -> bytes:
    return b"\x65" + bytes(i & 0xFF for i in range(size - 1))


def p_slice(size: int) -> bytes:
    return b"\x41" + bytes((i * 7) & 0xFF for i in range(size - 1))


class Sink:
    """Collects RTP packets per track."""

    def __init__(self) -> None:
        self.packets: list[tuple[int, bytes]] = []
        self.counted = [0, 0]

    def __call__(self, track: int, packet: bytes) -> None:
        self.packets.append((track, packet))

    def count(self, nbytes: int, frames: int) -> None:
        self.counted[0] += nbytes
        self.counted[1] += frames

    def of(self, track: int) -> list[tuple[rtp.RtpHeader, bytes]]:
        return [(rtp.parse(p), p[12:]) for t, p in self.packets if t == track]

    def access_units(self, track: int) -> list[tuple[int, list[bytes]]]:
        out: list[tuple[int, list[bytes]]] = []
        current: list[bytes] = []
        for h, payload in self.of(track):
            current.append(payload)
            if h.marker:
                out.append((h.timestamp, current))
                current = []
        assert current == [], "an access unit without a marker on its last packet"
        return out


def h264_packetizer(**kw: object) -> tuple[Packetizer, Sink]:
    sink = Sink()
    p = Packetizer(sink, **kw)  # type: ignore[arg-type]
    p.configure([VideoSpec("H264", [SPS, PPS]), AacSpec(ASC, 48000, 2)])
    return p, sink


# --------------------------------------------------------------------------- H.264


def test_h264_access_unit_above_and_below_the_mtu() -> None:
    p, sink = h264_packetizer()
    big = idr(3000)
    p.on_access_unit(0, 40, 40, [AUD, SEI, big], keyframe=True)
    packets = sink.of(0)
    # AUD, then the stored SPS/PPS (not in-band), then SEI aggregate into one STAP-A;
    # the 3000-byte IDR is split into FU-A fragments, none over the MTU.
    assert [pl[0] & 0x1F for _h, pl in packets] == [24, 28, 28, 28]
    assert all(len(pl) <= 1400 for _h, pl in packets)
    fu = [pl[1] for _h, pl in packets[1:]]
    assert [b & 0xC0 for b in fu] == [0x80, 0x00, 0x40] and {b & 0x1F for b in fu} == {5}
    assert h264.depacketize([pl for _h, pl in packets]) == [AUD, SPS, PPS, SEI, big]
    assert [h.marker for h, _pl in packets] == [False, False, False, True]
    assert {h.timestamp for h, _pl in packets} == {40 * 90}
    seqs = [h.sequence for h, _pl in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert {h.payload_type for h, _pl in packets} == {96}
    assert h264.payload_is_keyframe(packets[0][1])

    # A small non-key access unit: one single NAL unit packet, marker set, nothing added.
    p.on_access_unit(0, 80, 80, [p_slice(500)])
    h, pl = sink.of(0)[-1]
    assert (pl[0], len(pl), h.marker, h.timestamp, h.sequence) == (
        0x41,
        500,
        True,
        80 * 90,
        (seqs[-1] + 1) & 0xFFFF,
    )


def test_length_prefixed_and_list_give_the_same_packets() -> None:
    nals = [SEI, idr(2000)]
    avcc = b"".join(len(n).to_bytes(4, "big") + n for n in nals)
    a, sink_a = h264_packetizer()
    b, sink_b = h264_packetizer()
    a.on_access_unit(0, 0, 0, nals, keyframe=True)
    b.on_access_unit(0, 0, 0, LengthPrefixed(b"\x17\x01\x00\x00\x00" + avcc, 5, 4), True)
    assert [pk[12:] for _t, pk in sink_a.packets] == [pk[12:] for _t, pk in sink_b.packets]


def test_parameter_sets_in_band_are_not_repeated_and_replace_the_stored_ones() -> None:
    p, sink = h264_packetizer()
    new_sps = SPS[:-1] + bytes((SPS[-1] ^ 1,))
    p.on_access_unit(0, 0, 0, [AUD, new_sps, PPS, idr(100)], keyframe=True)
    assert h264.depacketize(sink.access_units(0)[0][1]) == [AUD, new_sps, PPS, idr(100)]
    assert p.parameter_sets(0) == [new_sps, PPS]
    # The next keyframe lacks them: it gets the in-band ones, in front (no AUD here).
    p.on_access_unit(0, 40, 40, [idr(50)], keyframe=True)
    assert h264.depacketize(sink.access_units(0)[1][1]) == [new_sps, PPS, idr(50)]
    # A non-key access unit never gets them.
    p.on_access_unit(0, 80, 80, [p_slice(50)])
    assert h264.depacketize(sink.access_units(0)[2][1]) == [p_slice(50)]
    # The caller may say what it already knows: then the packetizer does not look.
    p.on_access_unit(0, 120, 120, [idr(50)], keyframe=True, params_in_band=False)
    assert h264.depacketize(sink.access_units(0)[3][1])[:2] == [new_sps, PPS]


def test_merge_parameter_sets_keeps_decoding_order() -> None:
    assert merge_parameter_sets("H264", [PPS], [idr(9), SPS]) == [SPS, PPS]
    assert merge_parameter_sets("H265", [VPS5, SPS5, PPS5], [PPS5 + b"x"]) == [
        VPS5,
        SPS5,
        PPS5 + b"x",
    ]


# --------------------------------------------------------------------------- H.265


def test_h265_fragmentation_units() -> None:
    sink = Sink()
    p = Packetizer(sink, time_base=Fraction(1, 90000))
    p.configure([VideoSpec("H265", [VPS5, SPS5, PPS5])])
    irap = bytes((19 << 1, 1)) + bytes(i & 0xFF for i in range(4000))  # IDR_W_RADL
    p.on_access_unit(0, 123456, 120000, [irap], keyframe=True)
    packets = sink.of(0)
    types = [(pl[0] >> 1) & 0x3F for _h, pl in packets]
    # VPS+SPS+PPS aggregated into one AP (48), then FUs (49) carrying the IRAP's type.
    assert types == [48] + [49] * (len(packets) - 1) and len(packets) == 4
    fu = [pl[2] for _h, pl in packets[1:]]
    assert fu[0] & 0x80 and fu[-1] & 0x40 and {b & 0x3F for b in fu} == {19}
    assert not any(b & 0xC0 for b in fu[1:-1])
    assert all(len(pl) <= 1400 for _h, pl in packets)
    assert h265.depacketize([pl for _h, pl in packets]) == [VPS5, SPS5, PPS5, irap]
    assert [h.marker for h, _pl in packets] == [False] * 3 + [True]
    assert {h.timestamp for h, _pl in packets} == {123456}  # 90 kHz in, 90 kHz out
    assert h265.payload_is_keyframe(packets[0][1])


# --------------------------------------------------------------------------- AAC


def test_aac_hbr_several_frames_per_packet_then_split_at_the_mtu() -> None:
    p, sink = h264_packetizer()
    frames = [bytes([i]) * (100 + i) for i in range(3)]
    p.on_access_unit(1, 1000, 1000, frames)
    ((h, payload),) = sink.of(1)
    assert int.from_bytes(payload[:2], "big") == 3 * 16  # three 16-bit AU headers
    assert aac.depacketize(payload) == frames
    assert (h.marker, h.timestamp, h.payload_type) == (True, 48000, 97)

    big = [bytes([i]) * 600 for i in range(3)]  # two fit in 1400 bytes, the third does not
    p.on_access_unit(1, 1064, 1064, big)
    packets = sink.of(1)[1:]
    assert [aac.depacketize(pl) for _h, pl in packets] == [big[:2], big[2:]]
    first = packets[0][0].timestamp
    assert [h.timestamp - first for h, _pl in packets] == [0, 2048]
    assert all(h.marker for h, _pl in packets)
    seqs = [h.sequence for h, _pl in sink.of(1)]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))


def test_aac_millisecond_jitter_snaps_to_whole_frames_real_gaps_stay() -> None:
    p, sink = h264_packetizer()
    for ms in (0, 21, 43, 64, 85):  # 1024 samples at 48 kHz = 21.33 ms
        p.on_access_unit(1, ms, ms, b"\x21" * 10)
    p.on_access_unit(1, 1000, 1000, b"\x21" * 10)  # a real gap
    stamps = [h.timestamp for h, _pl in sink.of(1)]
    assert stamps == [0, 1024, 2048, 3072, 4096, 48000]


def test_aac_timestamps_at_the_sampling_rate_from_a_90khz_time_base() -> None:
    sink = Sink()
    p = Packetizer(sink, time_base=Fraction(1, 90000))
    p.configure([AacSpec(aac.make_audio_specific_config(2, 44100, 1), 44100, 1)])
    p.on_access_unit(0, 90000 * 3, 90000 * 3, [b"\x01" * 50, b"\x02" * 50])
    ((h, payload),) = sink.of(0)
    assert h.timestamp == 44100 * 3 and len(aac.depacketize(payload)) == 2


# --------------------------------------------------------------------------- timestamps


def test_video_timestamps_follow_pts_not_dts_and_wrap_at_32_bits() -> None:
    p, sink = h264_packetizer()
    for pts, dts in ((80, 0), (0, 40), (40, 80)):  # B-frames: presentation order differs
        p.on_access_unit(0, pts, dts, [p_slice(20)])
    p.on_access_unit(0, -40, 120, [p_slice(20)])  # negative composition offset at the start
    p.on_access_unit(0, 0xFFFFFFFF + 1, 0, [p_slice(20)])  # 32-bit RTMP clock wrapped
    assert [ts for ts, _p in sink.access_units(0)] == [
        7200,
        0,
        3600,
        (-3600) & 0xFFFFFFFF,
        (0x100000000 * 90) & 0xFFFFFFFF,
    ]


# --------------------------------------------------------------------------- SDP


def test_sdp_for_h264_and_aac() -> None:
    p = Packetizer(lambda _t, _p: None, name="rtmp cam")
    session = p.configure(
        [
            VideoSpec("H264", [SPS, PPS], width=320, height=240, fps=25, bitrate=1500.7),
            AacSpec.from_config(aac.parse_audio_specific_config(ASC), bitrate=128),
        ]
    )
    text = session.serialize().decode()
    assert text == (
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=rtmp cam\r\nt=0 0\r\n"
        "m=video 0 RTP/AVP 96\r\nb=AS:1500\r\na=rtpmap:96 H264/90000\r\n"
        "a=fmtp:96 packetization-mode=1;profile-level-id=42c00d;"
        "sprop-parameter-sets=Z0LADdoFB+hAAAADAEAAAAyDxQqo,aM4PyA==\r\n"
        "a=x-dimensions:320,240\r\na=framerate:25\r\na=control:trackID=0\r\n"
        "m=audio 0 RTP/AVP 97\r\nb=AS:128\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\n"
        "a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;"
        "indexdeltalength=3;config=1190\r\na=control:trackID=1\r\n"
    )
    # The object is what a parser of that text gives: nobody needs to re-parse it.
    assert SessionDescription.parse(text) == session == p.session
    video, audio = session.media
    assert (video.encoding, video.clock_rate, audio.clock_rate, audio.channels) == (
        "H264",
        90000,
        48000,
        2,
    )
    info = h264.parse_sps(
        h264.parse_sprop_parameter_sets(video.fmtp[96]["sprop-parameter-sets"])[0]
    )
    assert (info.width, info.height) == (320, 240)


def test_sdp_for_h265_and_a_stream_takes_it_as_is() -> None:
    session = Packetizer(lambda _t, _p: None).configure([VideoSpec("H265", [VPS5, SPS5, PPS5])])
    (video,) = session.media
    assert video.encoding == "H265" and video.rtpmap[96] == ("H265", 90000, None)
    assert h265.parse_sprop(video.fmtp[96]) == [VPS5, SPS5, PPS5]
    assert SessionDescription.parse(session.serialize()) == session

    class Pub:
        description = "test"

        def kick(self, reason: str) -> None:
            pass

    stream = Stream("cam")
    stream.publish(Pub(), session)
    assert [(t.kind, t.codec, t.clock_rate) for t in stream.tracks] == [("video", "H265", 90000)]
    assert stream.video_info is not None and stream.video_info.width == 320  # type: ignore[attr-defined]


def test_sdp_without_parameter_sets_still_names_the_codec() -> None:
    session = Packetizer(lambda _t, _p: None).configure(
        [VideoSpec("H264"), VideoSpec("H265", [SPS5])]
    )
    h264_md, h265_md = session.media
    assert h264_md.fmtp[96] == {"packetization-mode": "1"}
    assert h265_md.encoding == "H265" and h265_md.fmtp == {}


def test_bad_specs_and_tracks_are_refused() -> None:
    with pytest.raises(PacketizerError, match="VP8"):
        VideoSpec("VP8")
    with pytest.raises(aac.AacError):
        AacSpec(b"", 48000, 2)
    with pytest.raises(PacketizerError, match="sample rate"):
        AacSpec(ASC, 0, 2)
    p = Packetizer(lambda _t, _p: None)
    with pytest.raises(PacketizerError, match="no tracks"):
        p.configure([])
    p.configure([VideoSpec("H264", [SPS, PPS])])
    with pytest.raises(PacketizerError, match="no track 3"):
        p.on_access_unit(3, 0, 0, [idr(10)], True)
    with pytest.raises(PacketizerError, match="list of NAL units"):
        p.on_access_unit(0, 0, 0, idr(10), True)
    p.configure([AacSpec(ASC, 48000, 2)])
    with pytest.raises(PacketizerError, match="raw frames"):
        p.on_access_unit(0, 0, 0, LengthPrefixed(b"\0\0\0\1x", 0, 4))
    with pytest.raises(aac.AacError, match="13-bit"):
        p.on_access_unit(0, 0, 0, bytes(8192))


def test_reconfigure_keeps_ssrc_and_sequence_continuous() -> None:
    p, sink = h264_packetizer()
    p.on_access_unit(0, 0, 0, [idr(10)], keyframe=True)
    p.on_access_unit(1, 0, 0, b"\x21" * 10)
    before = {t: rtp.parse(pk) for t, pk in sink.packets}
    p.configure([VideoSpec("H265", [VPS5, SPS5, PPS5]), AacSpec(ASC, 48000, 2)])
    p.on_access_unit(0, 40, 40, [bytes((19 << 1, 1, 9))], keyframe=True)
    p.on_access_unit(1, 21, 21, b"\x21" * 10)
    after = [rtp.parse(pk) for _t, pk in sink.packets[2:]]
    assert after[0].ssrc == before[0].ssrc and after[0].sequence == before[0].sequence + 1
    assert after[1].ssrc == before[1].ssrc and after[1].timestamp == before[1].timestamp + 1024


# --------------------------------------------------------------------------- lazy


def test_lazy_holds_until_needed_drops_at_keyframes_and_counts() -> None:
    p, sink = h264_packetizer()
    readers = [False]
    p.needed = lambda: readers[0]
    p.on_count = sink.count
    p.on_access_unit(0, 0, 0, [idr(100)], keyframe=True)  # keyframes always go out
    p.on_access_unit(0, 40, 40, [p_slice(100)])
    p.on_access_unit(1, 40, 40, b"\x21" * 10)
    assert len(sink.access_units(0)) == 1 and sink.of(1) == []
    assert sink.counted[1] == 1 and sink.counted[0] > 110
    p.on_access_unit(0, 80, 80, [idr(100)], keyframe=True)  # held ones are dropped here
    p.on_access_unit(0, 120, 120, [p_slice(100)])
    readers[0] = True
    p.on_access_unit(1, 125, 125, b"\x22" * 10)  # flushes the held slice first
    p.on_access_unit(0, 160, 160, [p_slice(100)])
    assert [ts // 90 for ts, _p in sink.access_units(0)] == [0, 80, 120, 160]
    assert [pl[4:] for _h, pl in sink.of(1)] == [b"\x22" * 10]
    assert sink.counted[1] == 1  # the dropped slice stays counted, the flushed one not


def test_lazy_limits_and_audio_only_streams() -> None:
    p, sink = h264_packetizer()
    p.needed = lambda: False
    p.on_count = sink.count
    p.max_held_ms = 100
    p.on_access_unit(0, 0, 0, [idr(10)], keyframe=True)
    for ms in range(40, 400, 40):
        p.on_access_unit(0, ms, ms, [p_slice(10)])
        if ms == 80:
            assert len(sink.access_units(0)) == 1  # 40 and 80 held
    # Nothing is held longer than max_held_ms: then everything held goes out, in order,
    # and the count of held frames is taken back.
    assert [ts // 90 for ts, _p in sink.access_units(0)] == list(range(0, 400, 40))
    assert sink.counted == [0, 0]
    p.max_held_ms, p.max_held_bytes = 5000, 150
    p.on_access_unit(0, 400, 400, [idr(10)], keyframe=True)
    for ms in (440, 480, 520):
        p.on_access_unit(0, ms, ms, [p_slice(100)])
        if ms == 480:
            assert [ts // 90 for ts, _p in sink.access_units(0)][-1] == 400  # 200 B held
    assert [ts // 90 for ts, _p in sink.access_units(0)][-4:] == [400, 440, 480, 520]
    audio_only, sink2 = Packetizer(Sink()), Sink()
    audio_only.on_packet = sink2
    audio_only.configure([AacSpec(ASC, 48000, 2)])
    audio_only.needed = lambda: False
    audio_only.on_access_unit(0, 0, 0, b"\x21" * 10)
    assert len(sink2.packets) == 1  # nothing to hold for without a key track


# --------------------------------------------------------------------------- property


access_unit = st.one_of(
    st.tuples(
        st.just(0),
        st.integers(0, 200),
        st.lists(st.integers(1, 4000), min_size=1, max_size=5),
        st.booleans(),
    ),
    st.tuples(
        st.just(1),
        st.integers(0, 200),
        st.lists(st.integers(1, 900), min_size=1, max_size=4),
        st.just(False),
    ),
    st.tuples(st.just(2), st.integers(0, 200), st.just([0]), st.booleans()),  # toggles needed
)


@settings(max_examples=150, deadline=None)
@given(st.lists(access_unit, max_size=40), st.integers(200, 1500), st.booleans())
def test_any_access_units_give_valid_rtp_with_consecutive_sequence_numbers(
    aus: list[tuple[int, int, list[int], bool]], mtu: int, lazy: bool
) -> None:
    sink = Sink()
    p = Packetizer(sink, mtu=mtu)
    p.configure([VideoSpec("H264", [SPS, PPS]), AacSpec(ASC, 48000, 2)])
    readers = [False]
    if lazy:
        p.needed = lambda: readers[0]
    clock = 0
    sent_video = 0
    for track, step, sizes, key in aus:
        clock += step
        if track == 2:
            readers[0] = key
            continue
        if track == 0:
            nals = [(idr if key else p_slice)(n) for n in sizes]
            p.on_access_unit(0, clock, clock, nals, keyframe=key)
            sent_video += 1
        else:
            p.on_access_unit(1, clock, clock, [b"\x21" * n for n in sizes])
    for track, pt in ((0, 96), (1, 97)):
        headers = [h for h, _pl in sink.of(track)]
        payloads = [pl for _h, pl in sink.of(track)]
        assert all(h.payload_type == pt for h in headers)
        assert len({h.ssrc for h in headers}) <= 1
        assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in itertools.pairwise(headers))
        if track == 0:
            assert all(len(pl) <= mtu for pl in payloads)
            aus_out = sink.access_units(0)  # asserts the last packet of each AU has the marker
            assert len(aus_out) <= sent_video
            for _ts, pls in aus_out:
                assert h264.depacketize(pls)
            for a, b in itertools.pairwise(headers):
                assert a.marker or a.timestamp == b.timestamp  # one AU shares one timestamp
            if not lazy:
                assert len(aus_out) == sent_video
        else:
            assert all(h.marker for h in headers)
            for pl in payloads:
                assert aac.depacketize(pl)
