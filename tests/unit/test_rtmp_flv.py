"""FLV tag parsing and FLV -> SDP + RTP conversion (through the packetizer), against
PyAV-encoded FLV files."""

from __future__ import annotations

import io
import itertools
from fractions import Fraction
from functools import cache

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onvifcam.media import aac, h264, h265, rtp
from onvifcam.media.sdp import SessionDescription
from onvifcam.rtmp import flv
from onvifcam.rtmp.flv import CONFIG, END, FRAME, OTHER, FlvError, FlvIngest

FRAMES = 30


@cache
def make_flv(codec: str, audio: bool = True, bframes: int = 0) -> bytes:
    """A 30-frame 320x240 FLV (keyframe every 10 frames) with mono 48 kHz AAC."""
    buf = io.BytesIO()
    out = av.open(buf, "w", format="flv")
    v = out.add_stream(codec, rate=25)
    v.width, v.height, v.pix_fmt = 320, 240, "yuv420p"
    if codec == "libx264":
        v.options = {"g": "10", "bf": str(bframes), "preset": "ultrafast"}
    else:
        v.options = {"x265-params": "keyint=10:log-level=error", "preset": "ultrafast"}
    a = None
    if audio:
        a = out.add_stream("aac", rate=48000)
        a.layout = "mono"
    samples = 0
    for i in range(FRAMES):
        arr = np.full((240, 320, 3), (i * 8) % 256, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        frame.time_base = Fraction(1, 25)
        for p in v.encode(frame):
            out.mux(p)
        while a is not None and samples < (i + 1) * 48000 // 25:
            af = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono"
            )
            af.sample_rate = 48000
            af.pts = samples
            samples += 1024
            for p in a.encode(af):
                out.mux(p)
    for p in v.encode(None):
        out.mux(p)
    if a is not None:
        for p in a.encode(None):
            out.mux(p)
    out.close()
    return buf.getvalue()


class Sink:
    """Collects what an FlvIngest emits."""

    def __init__(self) -> None:
        self.sdps: list[str] = []
        self.packets: list[tuple[int, bytes]] = []
        self.counted = [0, 0]

    def publish(self, session: SessionDescription) -> None:
        self.sdps.append(session.serialize().decode())

    def packet(self, track: int, data: bytes) -> None:
        self.packets.append((track, data))

    def count(self, nbytes: int, frames: int) -> None:
        self.counted[0] += nbytes
        self.counted[1] += frames

    def access_units(self, track: int) -> list[tuple[int, list[bytes]]]:
        """(RTP timestamp, payloads) per access unit, split at the marker bit."""
        out: list[tuple[int, list[bytes]]] = []
        current: list[bytes] = []
        for t, pkt in self.packets:
            if t != track:
                continue
            h = rtp.parse(pkt)
            current.append(pkt[h.payload_start :])
            if h.marker:
                out.append((h.timestamp, current))
                current = []
        return out


def ingest_file(data: bytes, sink: Sink, transform=None) -> FlvIngest:  # type: ignore[no-untyped-def]
    ing = FlvIngest(sink.publish, sink.packet, name="test")
    for tag in flv.read_file(data):
        body = transform(tag) if transform else tag.data
        if body is None:
            continue
        if tag.type_id == 9:
            ing.video_message(tag.timestamp, body)
        elif tag.type_id == 8:
            ing.audio_message(tag.timestamp, body)
    return ing


def decode_count(codec: str, aus: list[tuple[int, list[bytes]]]) -> int:
    depack = h264.depacketize if codec == "h264" else h265.depacketize
    ctx = av.CodecContext.create(codec, "r")
    frames = 0
    for _ts, payloads in aus:
        data = h264.to_annexb(depack(payloads))
        for packet in ctx.parse(data):
            frames += len(ctx.decode(packet))
    for packet in ctx.parse(None):
        frames += len(ctx.decode(packet))
    frames += len(ctx.decode(None))
    return frames


# --------------------------------------------------------------------------- parsing


def test_parse_legacy_avc_and_hevc() -> None:
    tag = flv.parse_video(b"\x17\x01\xff\xff\xfe" + b"nal")
    assert tag.codec == "H264" and tag.kind == FRAME and tag.keyframe and tag.cts == -2
    assert bytes(tag.data) == b"nal"
    tag = flv.parse_video(b"\x1c\x00\x00\x00\x00cfg")
    assert (tag.codec, tag.kind, bytes(tag.data)) == ("H265", CONFIG, b"cfg")
    assert flv.parse_video(b"\x27\x02\x00\x00\x00").kind == END
    assert flv.parse_video(b"\x57\x00").kind == OTHER  # command frame


def test_parse_enhanced_rtmp() -> None:
    tag = flv.parse_video(b"\x91hvc1\x00\x00\x28" + b"x")
    assert (tag.codec, tag.kind, tag.keyframe, tag.cts) == ("H265", FRAME, True, 40)
    tag = flv.parse_video(b"\xa3hvc1y")  # CodedFramesX: no composition time
    assert (tag.kind, tag.keyframe, tag.cts, bytes(tag.data)) == (FRAME, False, 0, b"y")
    assert flv.parse_video(b"\x90avc1cfg").codec == "H264"
    assert flv.parse_video(b"\x90av01cfg").kind == OTHER
    assert flv.parse_video(b"\xd4hvc1meta").kind == OTHER


@pytest.mark.parametrize("body", [b"", b"\x17\x01", b"\x91hv", b"\x91hvc1\x00"])
def test_truncated_video_raises(body: bytes) -> None:
    with pytest.raises(FlvError):
        flv.parse_video(body)


def test_parse_audio() -> None:
    assert flv.parse_audio(b"\xaf\x00\x11\x90").kind == CONFIG
    tag = flv.parse_audio(b"\xaf\x01raw")
    assert (tag.codec, tag.kind, bytes(tag.data)) == ("AAC", FRAME, b"raw")
    assert flv.parse_audio(b"\x2fmp3").codec == "MP3"
    with pytest.raises(FlvError):
        flv.parse_audio(b"\xaf")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_tags_raise_only_flv_error(body: bytes) -> None:
    for fn in (flv.parse_video, flv.parse_audio):
        try:
            fn(body)
        except FlvError:
            pass


# --------------------------------------------------------------------------- ingest


def test_h264_aac_to_sdp_and_rtp() -> None:
    sink = Sink()
    ing = ingest_file(make_flv("libx264"), sink)
    assert len(sink.sdps) == 1
    sdp = SessionDescription.parse(sink.sdps[0])
    video, audio = sdp.media
    assert (video.encoding, video.clock_rate) == ("H264", 90000)
    fmtp = video.fmtp[96]
    assert fmtp["packetization-mode"] == "1"
    sps = h264.parse_sprop_parameter_sets(fmtp["sprop-parameter-sets"])[0]
    info = h264.parse_sps(sps)
    assert (info.width, info.height) == (320, 240)
    assert fmtp["profile-level-id"] == h264.profile_level_id(sps)
    assert (audio.encoding, audio.clock_rate, audio.channels) == ("MPEG4-GENERIC", 48000, 1)
    cfg = aac.parse_audio_specific_config(bytes.fromhex(audio.fmtp[97]["config"]))
    assert (cfg.sample_rate, cfg.channels) == (48000, 1)

    aus = sink.access_units(0)
    assert len(aus) == FRAMES == ing.stats.video_frames
    # x264 in FLV keeps SPS/PPS out of band: they are put in front of each IDR.
    first = h264.depacketize(aus[0][1])
    assert [n[0] & 0x1F for n in first[:2]] == [7, 8]
    assert h264.payload_is_keyframe(aus[0][1][0])
    assert decode_count("h264", aus) == FRAMES
    audio_ts = [ts for ts, _p in sink.access_units(1)]
    assert len(audio_ts) == ing.stats.audio_frames > 20
    assert {(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(audio_ts)} == {1024}
    assert ing.stats.dropped_frames == ing.stats.malformed == 0


def test_composition_time_gives_pts() -> None:
    sink = Sink()
    ingest_file(make_flv("libx264", audio=False, bframes=2), sink)
    stamps = [ts for ts, _p in sink.access_units(0)]
    assert stamps != sorted(stamps)  # B-frames: presentation order differs from decode order
    assert sorted(stamps) == [i * 3600 + stamps[0] for i in range(FRAMES)]


def test_h265_enhanced_rtmp_to_sdp_and_rtp() -> None:
    sink = Sink()
    ingest_file(make_flv("libx265"), sink)
    sdp = SessionDescription.parse(sink.sdps[0])
    video = sdp.media[0]
    assert video.encoding == "H265"
    params = h265.parse_sprop(video.fmtp[96])
    assert [h265.nal_type(p) for p in params] == [32, 33, 34]
    aus = sink.access_units(0)
    assert len(aus) == FRAMES
    assert decode_count("hevc", aus) == FRAMES


def _to_legacy_hevc(tag: flv.Tag) -> bytes | None:
    """Rewrite Enhanced RTMP hvc1 video tags as legacy codec id 12 tags."""
    if tag.type_id != 9:
        return tag.data
    parsed = flv.parse_video(tag.data)
    frame_type = 1 if parsed.keyframe else 2
    if parsed.kind == CONFIG:
        return bytes((0x1C, 0, 0, 0, 0)) + bytes(parsed.data)
    if parsed.kind == FRAME:
        cts = (parsed.cts & 0xFFFFFF).to_bytes(3, "big")
        return bytes(((frame_type << 4) | 12, 1)) + cts + bytes(parsed.data)
    return None


def test_h265_legacy_codec_id_12() -> None:
    sink = Sink()
    ingest_file(make_flv("libx265", audio=False), sink, _to_legacy_hevc)
    assert "H265/90000" in sink.sdps[0]
    assert decode_count("hevc", sink.access_units(0)) == FRAMES


def _avc_config_and_idr() -> tuple[bytes, bytes]:
    tags = [t for t in flv.read_file(make_flv("libx264", audio=False)) if t.type_id == 9]
    return tags[0].data, tags[1].data


def test_sei_only_and_bad_frames_are_dropped_and_counted() -> None:
    sink = Sink()
    ing = FlvIngest(sink.publish, sink.packet)
    config, idr = _avc_config_and_idr()
    ing.video_message(0, config)
    ing.video_message(0, idr)
    sent = len(sink.packets)
    sei = b"\x06\x05\x01\x00\x80"
    ing.video_message(40, b"\x27\x01\x00\x00\x00" + len(sei).to_bytes(4, "big") + sei)
    ing.video_message(80, b"\x27\x01\x00\x00\x00\x00\x00\x10\x00short")  # length overruns
    assert ing.stats.dropped_frames == 2 and ing.stats.malformed == 1
    assert len(sink.packets) == sent


def test_unsupported_codecs_are_counted_not_fatal() -> None:
    sink = Sink()
    ing = FlvIngest(sink.publish, sink.packet)
    ing.audio_message(0, b"\x2f" + b"mp3 frame")
    ing.audio_message(0, b"\x72" + b"alaw")
    ing.video_message(0, b"\x14" + b"vp6 frame")
    ing.video_message(0, b"\x90av01" + b"av1 config")
    assert ing.stats.unsupported_audio == 2 and ing.stats.unsupported_video == 2
    assert sink.packets == [] and sink.sdps == []


def test_frames_before_sequence_header_and_refusal() -> None:
    sink = Sink()
    config, idr = _avc_config_and_idr()

    def refuse(session: SessionDescription) -> None:
        raise RuntimeError("busy")

    ing = FlvIngest(refuse, sink.packet)
    ing.video_message(0, idr)
    assert ing.stats.dropped_frames == 1
    ing.video_message(0, config)
    with pytest.raises(RuntimeError):
        ing.video_message(0, idr)
    assert not ing.published


def test_audio_only_publish_after_metadata_without_video() -> None:
    sink = Sink()
    ing = FlvIngest(sink.publish, sink.packet)
    ing.set_metadata({"audiocodecid": 10.0, "audiosamplerate": 44100.0})
    ing.audio_message(0, b"\xaf\x00\x12\x10")  # AAC-LC 44.1 kHz stereo
    ing.audio_message(0, b"\xaf\x01" + b"\x21" * 10)
    assert "MPEG4-GENERIC/44100/2" in sink.sdps[0]
    assert "m=video" not in sink.sdps[0]
    assert [t for t, _p in sink.packets] == [0]


def test_lazy_packetising_holds_until_needed_then_flushes_in_order() -> None:
    sink = Sink()
    readers = [False]
    ing = FlvIngest(sink.publish, sink.packet)
    ing.packetizer.needed = lambda: readers[0]
    ing.packetizer.on_count = sink.count
    tags = [t for t in flv.read_file(make_flv("libx264")) if t.type_id in (8, 9)]
    half = len(tags) // 2
    for tag in tags[:half]:
        (ing.video_message if tag.type_id == 9 else ing.audio_message)(tag.timestamp, tag.data)
    # Without readers only keyframes went out (every 10th frame); the rest was counted.
    video = sink.access_units(0)
    assert all(h264.payload_is_keyframe(p[0]) for _ts, p in video)
    assert sink.counted[1] > 0 and sink.counted[0] > 0
    last_key_ts = video[-1][0]
    readers[0] = True
    for tag in tags[half:]:
        (ing.video_message if tag.type_id == 9 else ing.audio_message)(tag.timestamp, tag.data)
    # Once needed, the held access units came out first, in order: from the last keyframe
    # before that on, every frame is there exactly once.
    video = sink.access_units(0)
    stamps = [ts for ts, _p in video]
    tail = stamps[stamps.index(last_key_ts) :]
    assert tail == [last_key_ts + 3600 * i for i in range(len(tail))]
    assert tail[-1] == stamps[0] + 3600 * (FRAMES - 1)
    seqs = [rtp.parse(p).sequence for t, p in sink.packets if t == 0]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    # What never went out stays counted (once); what was flushed was taken back.
    assert sink.counted[1] == FRAMES - len(video)
    assert ing.stats.video_frames == FRAMES


def test_in_band_parameter_sets_replace_the_stored_ones() -> None:
    sink = Sink()
    ing = FlvIngest(sink.publish, sink.packet)
    config, idr = _avc_config_and_idr()
    ing.video_message(0, config)
    assert ing.video is not None
    old_sps = ing.video.params[0]
    new_sps = old_sps[:-1] + bytes((old_sps[-1] ^ 1,))
    body = len(new_sps).to_bytes(4, "big") + new_sps
    ing.video_message(0, b"\x17\x01\x00\x00\x00" + body + bytes(idr[5:]))
    assert ing.video.params[0] == new_sps
    first_au = sink.access_units(0)[0][1]
    assert h264.depacketize(first_au)[0] == new_sps  # in-band SPS kept, nothing prepended


def test_lazy_mode_keeps_stream_counters_and_gop_cache_right() -> None:
    from onvifcam.media.stream import Stream

    class Pub:
        description = "test"

        def kick(self, reason: str) -> None:
            pass

    def run(lazy: bool) -> Stream:
        stream = Stream("t")
        pub = Pub()

        def on_publish(session: SessionDescription) -> None:
            stream.publish(pub, session)
            ing.packetizer.on_packet = stream.on_rtp
            if lazy:
                stats = stream.stats

                def count(nbytes: int, frames: int) -> None:
                    stats.bytes_in += nbytes
                    stats.frames_in += frames

                ing.packetizer.needed = stream.readers.__len__
                ing.packetizer.on_count = count

        ing = FlvIngest(on_publish, lambda _t, _p: None)
        for tag in flv.read_file(make_flv("libx264")):
            if tag.type_id == 9:
                ing.video_message(tag.timestamp, tag.data)
            elif tag.type_id == 8:
                ing.audio_message(tag.timestamp, tag.data)
        return stream

    eager, lazy = run(False), run(True)
    assert lazy.stats.frames_in == eager.stats.frames_in == FRAMES
    assert lazy.stats.keyframes_in == eager.stats.keyframes_in == 3
    assert abs(lazy.stats.bytes_in - eager.stats.bytes_in) < 0.02 * eager.stats.bytes_in
    # Snapshots decode the GOP's first access unit: the same keyframe either way.
    assert lazy.gop_snapshot()[0] != [] and len(lazy.gop_snapshot()[0]) == len(
        eager.gop_snapshot()[0]
    )


def test_declared_size_from_onmetadata_reaches_the_stream() -> None:
    from onvifcam.media.stream import Stream

    sink = Sink()
    ing = FlvIngest(sink.publish, sink.packet, name="test")
    ing.set_metadata({"width": 1280.0, "height": 720.0, "framerate": 30.0})
    for tag in flv.read_file(make_flv("libx264", audio=False)):
        if tag.type_id == 9:
            ing.video_message(tag.timestamp, tag.data)
    video = SessionDescription.parse(sink.sdps[0]).media[0]
    assert video.get("x-dimensions") == "1280,720"
    stream = Stream("declared")
    pub = type("Pub", (), {"description": "rtmp://192.0.2.1:1", "kick": lambda self, r: None})
    stream.publish(pub(), SessionDescription.parse(sink.sdps[0]))
    assert stream.declared == {"width": 1280.0, "height": 720.0, "fps": 30.0}
    assert (stream.video_info.width, stream.video_info.height) == (320, 240)  # measured (SPS)
    # an unusable declared size is left out, not passed on
    ing.set_metadata({"width": 0.0, "height": float("nan")})
    assert ing.track_specs()[0].width is None  # type: ignore[attr-defined]
