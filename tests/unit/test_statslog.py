"""statslog: the per-stream statistics block (formatting, and the counters behind it)."""

from __future__ import annotations

import logging

import pytest

from onvifcam.config import StatsConfig
from onvifcam.media.sdp import SessionDescription
from onvifcam.media.stream import Stream, StreamRegistry
from onvifcam.statslog import HEADER, Acc, BlockInfo, Snapshot, StatsLogger, format_block
from tests.unit.test_stream import SDP_AV, Collect, Encoder, Pub, RtpMaker, push


def _info(**kw: object) -> BlockInfo:
    base = dict(
        path="lobby",
        publisher="rtsp://192.0.2.7 session 5d1c",
        started_wall=1_700_000_000.0,
        uptime=750.0,
        video="H264 High 4.0",
        measured_size="1920x1080",
        declared_size="1920x1080",
        declared_fps=25.0,
        readers=2,
        audio="MPEG4-GENERIC 48000 Hz",
        window=(
            Snapshot(at=100.0, bytes_in=1000, frames_in=100, keyframes_in=2, frames_out=200),
            Snapshot(
                at=130.0,
                bytes_in=1000 + 15_000_000,
                frames_in=850,
                keyframes_in=17,
                frames_out=1700,
                drops={"overflow": 3, "malformed": 0},
            ),
        ),
        total=(
            Snapshot(at=0.0),
            Snapshot(
                at=130.0,
                bytes_in=20_000_000,
                frames_in=3250,
                keyframes_in=65,
                frames_out=6400,
                drops={"overflow": 3, "malformed": 0},
            ),
        ),
        gop=50,
        interframe=(Acc(750, 40.0, 38.1, 44.9), Acc(3250, 40.0, 12.0, 90.5)),
        queue=(Acc(30, 1536.0, 0.0, 65536.0), Acc(130, 800.0, 0.0, 65536.0)),
    )
    base.update(kw)
    return BlockInfo(**base)  # type: ignore[arg-type]


def test_block_format() -> None:
    text = format_block(_info())
    lines = text.splitlines()
    assert lines[0] == "Stream stats: lobby"
    assert lines[1] == (
        "  publisher rtsp://192.0.2.7 session 5d1c, up 0:12:30 since 2023-11-14 22:13:20 UTC"
    )
    assert lines[2] == (
        "  video H264 High 4.0, 1920x1080 (declared 1920x1080, 25 fps), 25.0 fps, "
        "4.00 Mbit/s (average 25.0 fps, 1.23 Mbit/s)"
    )
    assert lines[3] == "  audio MPEG4-GENERIC 48000 Hz"
    assert lines[4] == (
        "  window 30 s: in 750 frames, 15 keyframes (GOP 50, avg 50.0); delivered 1500 frames "
        "to 2 readers"
    )
    assert lines[5] == "    drops malformed 0, overflow 3"
    assert lines[6] == (
        "    reader queue avg 1.5 KiB max 64.0 KiB; inter-frame ms avg 40.0 min 38.1 max 44.9"
    )
    assert lines[7].startswith("  total: in 3250 frames, 65 keyframes (GOP 50, avg 50.0)")
    assert lines[9].endswith("inter-frame ms avg 40.0 min 12.0 max 90.5")
    assert sum(1 for ln in lines if ln.startswith(HEADER)) == 1


def test_block_without_video_info_or_samples() -> None:
    text = format_block(
        _info(
            video="",
            measured_size="?",
            declared_size="",
            declared_fps=0.0,
            audio="",
            interframe=(Acc(), Acc()),
            queue=(Acc(), Acc()),
            reason="publisher left: connection closed",
        )
    )
    assert text.splitlines()[0] == "Stream stats: lobby (publisher left: connection closed)"
    assert "video none, ? (declared not declared)" in text
    assert "audio none" in text
    assert "reader queue -; inter-frame ms -" in text


def test_stream_counters_and_a_block_on_leave(caplog: pytest.LogCaptureFixture) -> None:
    reg = StreamRegistry(gop_cache_bytes=1 << 24, media_timeout=15, max_streams=8)
    clock = [1000.0]
    slog = StatsLogger(StatsConfig(interval=30), reg, clock=lambda: clock[0])
    reg.listeners.append(slog.stream_changed)
    s: Stream = reg.get_or_create("cam")
    pub = Pub("rtsp://192.0.2.9 session 1")
    s.publish(pub, SessionDescription.parse(SDP_AV))
    reader = Collect()
    s.add_reader(reader)
    enc, mk = Encoder(gop=5), RtpMaker(1, 10, 1000)
    for _ in range(12):  # keyframes at 0, 5, 10
        push(s, mk.video(enc.next_au()))
    st = s.stats_dict()
    assert st["frames_in"] == 12 and st["keyframes_in"] == 3
    assert st["gop"] == 5
    assert st["frames_out"] == 12  # one reader got every frame
    assert st["bytes_out"] == 0  # Collect counts no bytes; real readers have .sent
    assert s.stats.interframe.count == 11
    clock[0] += 31
    with caplog.at_level(logging.INFO, logger="onvifcam.stats"):
        slog.tick(clock[0])
        s.unpublish(pub, "connection closed")
    blocks = [r.getMessage() for r in caplog.records if r.getMessage().startswith(HEADER)]
    assert len(blocks) == 2
    assert blocks[0].splitlines()[0] == "Stream stats: cam"
    assert "video H264 Baseline 1.3, 320x240 (declared not declared)" in blocks[0]
    assert "320x240" in blocks[0]
    assert "in 12 frames, 3 keyframes (GOP 5" in blocks[0]
    assert "delivered 12 frames to 1 readers" in blocks[0]
    assert blocks[1].splitlines()[0] == "Stream stats: cam (publisher left: connection closed)"
    assert "window 0 s: in 0 frames" in blocks[1]  # nothing new since the periodic block
    assert "total: in 12 frames" in blocks[1]
    assert slog.stats() == {"blocks": 2, "streams": 0}


def test_reader_totals_survive_the_reader() -> None:
    s = Stream("cam")
    s.publish(Pub(), SessionDescription.parse(SDP_AV))

    class Counted(Collect):
        sent = 1234
        dropped = 7

    r = Counted()
    s.add_reader(r)
    s.remove_reader(r)
    sent, dropped = s.reader_totals()
    assert (sent, dropped) == (1234, 7)
    assert s.stats_dict()["drops"]["overflow"] == 7  # type: ignore[index]


def test_declared_size_and_rate_from_the_sdp() -> None:
    sdp = SDP_AV.replace(
        "a=control:streamid=0", "a=x-dimensions:1280,720\na=framerate:30\na=control:streamid=0"
    )
    s = Stream("cam")
    s.publish(Pub(), SessionDescription.parse(sdp))
    assert s.declared == {"width": 1280.0, "height": 720.0, "fps": 30.0}


def test_publisher_ingest_drops_count_and_outlive_it() -> None:
    class RtmpLike(Pub):
        def ingest_drops(self) -> dict[str, int]:
            return {"unsupported_codec": 4, "non_media": 2, "malformed": 1}

    s = Stream("cam")
    pub = RtmpLike()
    s.publish(pub, SessionDescription.parse(SDP_AV))
    drops = s.stats_dict()["drops"]
    assert drops["unsupported_codec"] == 4 and drops["non_media"] == 2  # type: ignore[index]
    assert drops["malformed"] == 1  # type: ignore[index]
    s.unpublish(pub, "gone")
    assert s.stats_dict()["drops"]["unsupported_codec"] == 4  # type: ignore[index]
