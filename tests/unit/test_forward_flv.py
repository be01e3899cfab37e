"""The forwarder's FLV muxer: PyAV-encoded FLV -> RTMP ingest -> Stream -> FlvMuxer -> an
FLV file that PyAV decodes frame for frame, with the original timestamps, and that the RTMP
ingest reads back to the same media description."""

from __future__ import annotations

import io
import itertools

import av
import pytest

from onvifcam.media.sdp import SessionDescription
from onvifcam.media.stream import RTP, Batch, Stream
from onvifcam.rtmp import flv
from onvifcam.rtmp.publisher import (
    AUDIO,
    DATA,
    FLV_HEADER,
    VIDEO,
    FlvMuxer,
    MuxTrack,
    avc_config,
    flv_file_tag,
    hevc_config,
)
from tests.unit.test_rtmp_flv import FRAMES, Sink, ingest_file, make_flv


class Publisher:
    description = "test"

    def kick(self, reason: str) -> None:
        pass


class Collect:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def deliver(self, batch: Batch) -> None:
        self.batches.append(batch)

    def stream_closed(self, reason: str) -> None:
        pass


def relay(codec: str, bframes: int = 0) -> tuple[Stream, list[Batch], str]:
    """The FLV file pushed through the RTMP ingest into a Stream; what a reader got."""
    sink = Sink()
    ingest_file(make_flv(codec, bframes=bframes), sink)
    stream = Stream("cam")
    reader = Collect()
    stream.publish(Publisher(), SessionDescription.parse(sink.sdps[-1]))
    stream.add_reader(reader)
    for track, pkt in sink.packets:
        stream.on_rtp(track, pkt)
    return stream, reader.batches, sink.sdps[-1]


def mux(stream: Stream, batches: list[Batch]) -> tuple[FlvMuxer, list[tuple[int, int, bytes]]]:
    tracks = [
        MuxTrack(t.kind, t.codec, t.clock_rate, dict(t.media.fmtp.get(t.payload_type, {})))
        for t in stream.tracks
    ]
    muxer = FlvMuxer(tracks)
    out = [muxer.metadata(320, 240, 25.0)]
    for i, b in enumerate(batches):
        for track, kind, packets, _key in b.items:
            if kind == RTP:
                out += muxer.push(track, packets, now_ms=1000.0 + i)
    return muxer, out


def as_file(messages: list[tuple[int, int, bytes]]) -> bytes:
    return FLV_HEADER + b"".join(flv_file_tag(t, ts, body) for t, ts, body in messages)


@pytest.mark.parametrize(("codec", "bframes"), [("libx264", 0), ("libx264", 2), ("libx265", 0)])
def test_muxed_flv_decodes_every_frame_with_its_timestamps(codec: str, bframes: int) -> None:
    stream, batches, _sdp = relay(codec, bframes)
    muxer, messages = mux(stream, batches)
    assert muxer.stats.video_frames == FRAMES
    assert muxer.stats.skipped_frames == 0
    video = [m for m in messages if m[0] == VIDEO]
    dts = [ts for _t, ts, _b in video]
    assert dts == sorted(dts)  # FLV wants monotonic decode time
    with av.open(io.BytesIO(as_file(messages)), format="flv") as c:
        vs = c.streams.video[0]
        assert vs.codec_context.name == ("h264" if codec == "libx264" else "hevc")
        pts = []
        decoded = 0
        audio = 0
        for packet in c.demux():
            if packet.stream.type == "video":
                for frame in packet.decode():
                    decoded += 1
                    pts.append(frame.pts)
            elif packet.stream.type == "audio":
                audio += len(packet.decode())
    assert decoded == FRAMES
    assert audio > 0
    # presentation times 40 ms apart, in order once decoded (B-frames reordered back)
    steps = {b - a for a, b in itertools.pairwise(pts)}
    assert steps == {40}


def test_muxed_flv_reads_back_to_the_same_media_description() -> None:
    stream, batches, sdp = relay("libx264")
    _muxer, messages = mux(stream, batches)
    again = Sink()
    ingest_file(as_file(messages), again)
    first = SessionDescription.parse(sdp)
    second = SessionDescription.parse(again.sdps[-1])
    assert [(m.encoding, m.clock_rate) for m in first.media] == [
        (m.encoding, m.clock_rate) for m in second.media
    ]
    for a, b in zip(first.media, second.media, strict=True):
        fa, fb = a.fmtp[a.payload_type], b.fmtp[b.payload_type]
        for key in ("sprop-parameter-sets", "config"):
            assert fa.get(key) == fb.get(key)
    assert len(again.access_units(0)) == FRAMES


def test_sequence_header_first_then_only_keyframe_starts() -> None:
    stream, batches, _sdp = relay("libx264")
    muxer, messages = mux(stream, batches[3:])  # join mid-GOP: frames before a keyframe wait
    assert muxer.stats.skipped_frames > 0
    first_video = next(m for m in messages if m[0] == VIDEO)
    assert first_video[2][:2] == b"\x17\x00"  # AVC sequence header
    tag = flv.parse_video(next(m for m in messages if m[0] == VIDEO and m[2][1] == 1)[2])
    assert tag.keyframe
    first_audio = next(m for m in messages if m[0] == AUDIO)
    assert first_audio[2][:2] == b"\xaf\x00"  # AAC sequence header before AAC frames
    assert messages[0][0] == DATA


def test_config_records_parse_back() -> None:
    from onvifcam.media import h264, h265

    _stream, _b, sdp = relay("libx264")
    fmtp = SessionDescription.parse(sdp).media[0].fmtp
    sps, pps = h264.parse_sprop_parameter_sets(next(iter(fmtp.values()))["sprop-parameter-sets"])
    cfg = h264.parse_avc_config(avc_config(sps, pps))
    assert cfg.sps == [sps] and cfg.pps == [pps]
    _stream, _b, sdp = relay("libx265")
    vps, sps, pps = h265.parse_sprop(
        next(iter(SessionDescription.parse(sdp).media[0].fmtp.values()))
    )
    hc = h265.parse_hevc_config(hevc_config(vps, sps, pps))
    assert (hc.vps, hc.sps, hc.pps, hc.length_size) == ([vps], [sps], [pps], 4)


def test_other_codecs_are_skipped() -> None:
    muxer = FlvMuxer([MuxTrack("video", "JPEG", 90000), MuxTrack("audio", "OPUS", 48000)])
    assert muxer.video < 0 and muxer.audio < 0
    assert muxer.push(0, [b"\x80\x1a\x00\x01" + bytes(8)], 0.0) == []
