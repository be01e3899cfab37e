"""Test pattern source: the rendered picture, the libx264 encoder, the source publishing into a
real Stream (keyframes only while nobody reads, every frame while read, continuous RTP), and
the [demo] configuration."""

from __future__ import annotations

import asyncio
import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pytest

from onvifcam.config import ConfigError, load
from onvifcam.media import aac, h264, rtp
from onvifcam.media.stream import RTP, Batch, Stream
from onvifcam.sources.manager import with_demo_camera
from onvifcam.sources.testpattern import PatternEncoder, PatternRenderer, TestPatternSource


class Collect:
    """A stream reader that keeps the RTP packets it is given."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def deliver(self, batch: Batch) -> None:
        self.packets += [p for _t, k, p in batch.packets() if k == RTP]

    def stream_closed(self, reason: str) -> None:
        raise AssertionError(f"closed: {reason}")


def test_renderer_draws_text_and_moves_the_box() -> None:
    r = PatternRenderer(320, 180, "CAM 1")
    a = r.render(0, "12:00:00.0").copy()
    b = r.render(10, "12:00:00.0").copy()
    assert a.shape == (270, 320)
    band = a[: r.band]
    assert (band == 235).any() and (band == 16).any()  # white glyphs on the black band
    assert not np.array_equal(a[r.band : 180], b[r.band : 180])  # the box moved
    assert np.array_equal(a[: r.band], b[: r.band])  # same text, same band
    c = r.render(10, "12:00:01.0")
    assert not np.array_equal(c[: r.band], b[: r.band])  # the clock changed


def test_renderer_rejects_odd_sizes() -> None:
    with pytest.raises(ValueError, match="even"):
        PatternRenderer(321, 180, "x")


def test_encoder_gives_decodable_constrained_baseline_with_a_1s_gop() -> None:
    enc = PatternEncoder(320, 180, 10, "unit")
    units = [u for i in range(25) for u in enc.encode("00:00:00.0", keyframe=(i == 13))]
    assert [i for i, u in enumerate(units) if u.keyframe] == [0, 10, 13, 23]
    first = units[0].nals
    assert {n[0] & 0x1F for n in first} >= {h264.NAL_SPS, h264.NAL_PPS, 5}
    sps = next(n for n in first if n[0] & 0x1F == h264.NAL_SPS)
    info = h264.parse_sps(sps)
    assert (info.width, info.height, info.profile) == (320, 180, 66)
    dec = av.CodecContext.create("h264", "r")
    frames = [f for u in units for f in dec.decode(av.Packet(h264.to_annexb(u.nals)))]
    frames += dec.decode(None)
    assert len(frames) == 25 and (frames[0].width, frames[0].height) == (320, 180)
    enc.close()


def test_source_encodes_only_keyframes_unread_and_every_frame_when_read() -> None:
    async def run() -> None:
        stream = Stream("demo")
        pool = ThreadPoolExecutor(1)
        src = TestPatternSource(
            stream, pool, title="demo", width=160, height=96, fps=20, idle_keyframe_interval=0.5
        )
        await src.start()
        assert stream.online and stream.publisher is src
        assert stream.video_track is not None and stream.video_track.codec == "H264"
        await asyncio.sleep(1.3)
        idle_frames = src.frames
        assert idle_frames >= 2 and src.keyframes == idle_frames  # nothing but keyframes
        assert stream.gop_snapshot()  # a keyframe for snapshots
        reader = Collect()
        assert stream.add_reader(reader)  # starts at the cached idle keyframe
        await asyncio.sleep(1.0)
        stream.remove_reader(reader)
        read_frames = src.frames - idle_frames
        assert read_frames > src.keyframes - idle_frames  # P-frames while read
        await src.stop()
        assert not stream.online
        pool.shutdown()
        # the reader's RTP: one SSRC, consecutive sequence numbers, rising timestamps
        hdrs = [rtp.parse(p) for p in reader.packets]
        assert len({h.ssrc for h in hdrs}) == 1
        seqs = [h.sequence for h in hdrs]
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
        ts = [h.timestamp for h in hdrs]
        assert all(0 <= (b - a) & 0xFFFFFFFF < 90000 for a, b in itertools.pairwise(ts))
        # and it decodes
        nals = h264.depacketize([p[rtp.parse(p).payload_start :] for p in reader.packets])
        dec = av.CodecContext.create("h264", "r")
        frames = []
        for pkt in dec.parse(h264.to_annexb(nals)):
            frames += dec.decode(pkt)
        frames += dec.decode(None)
        assert len(frames) >= read_frames - 1 and frames[0].width == 160

    asyncio.run(run())


def _cfg(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_demo_config_is_off_by_default_and_adds_a_camera(tmp_path: Path) -> None:
    cfg = load(_cfg(tmp_path, "[server]\nhost = '127.0.0.1'\n"))
    assert not cfg.demo.enabled and with_demo_camera(cfg) is cfg
    cfg = load(_cfg(tmp_path, "[demo]\nenabled = true\nwidth = 320\nheight = 240\nfps = 10\n"))
    cams = with_demo_camera(cfg).cameras
    assert [(c.name, c.path, c.width, c.height, c.fps) for c in cams] == [
        ("demo", "demo", 320, 240, 10.0)
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[demo]\nwidth = 641\n", r"\[demo\] width and height must be even"),
        ("[demo]\nfps = 0\n", r"\[demo\] fps must be 1..60"),
        ("[demo]\nidle_keyframe_interval = 30\n", r"\[demo\] idle_keyframe_interval"),
        ("[demo]\nbitrate_kbps = 1\n", r"\[demo\] bitrate_kbps"),
        ("[demo]\npath = '/'\n", r"\[demo\] path must not be empty"),
        ("[demo]\nenabeld = true\n", r"unknown key 'enabeld'"),
        (
            "[demo]\nenabled = true\n[[cameras]]\nname = 'x'\npath = 'demo'\n",
            r"cameras\[0\].path 'demo' is the \[demo\] path",
        ),
        (
            "[demo]\nenabled = true\n[[cameras]]\nname = 'demo'\npath = 'a'\n",
            r"cameras\[0\] is named 'demo'",
        ),
        (
            "[[cameras]]\npath = 'a'\nsource = 'http://h/x'\n",
            r"cameras\[0\]\.source: 'http://h/x' is not supported; use file:///",
        ),
        (
            "[[cameras]]\npath = 'a'\nsource = 'file://clip.mp4'\n",
            r"cameras\[0\]\.source: 'file://clip.mp4' must name a local file by its absolute",
        ),
        ("[[cameras]]\npath = 'a'\noffline = 'grey'\n", r"cameras\[0\]\.offline must be"),
        ("[onvif]\noffline = 'grey'\n", r"\[onvif\] offline must be 'placeholder' or 'none'"),
    ],
)
def test_demo_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(_cfg(tmp_path, text))


def test_the_tone_is_sent_while_read() -> None:
    async def run() -> None:
        stream = Stream("demo")
        pool = ThreadPoolExecutor(1)
        src = TestPatternSource(stream, pool, title="t", width=160, height=96, fps=10, tone=True)
        await src.start()
        assert [t.codec for t in stream.tracks] == ["H264", "MPEG4-GENERIC"]
        assert stream.tracks[1].clock_rate == 48000
        reader = Tracks()
        stream.add_reader(reader)
        await asyncio.sleep(1.5)
        await src.stop()
        pool.shutdown()
        audio = reader.tracks.get(1, [])
        assert len(audio) >= 10
        ts = [rtp.parse(p).timestamp for p in audio]
        assert all(b > a and (b - a) % 1024 == 0 for a, b in itertools.pairwise(ts))
        cfg = aac.parse_audio_specific_config(src._tone.config if src._tone else b"")
        frames = [f for p in audio for f in aac.depacketize(p[rtp.parse(p).payload_start :])]
        dec = av.CodecContext.create("aac", "r")
        dec.extradata = cfg.raw
        pcm = [f.to_ndarray() for fr in frames for f in dec.decode(av.Packet(fr))]
        level = float(np.sqrt(np.mean(np.concatenate(pcm, axis=1)[:, 2048:] ** 2)))
        assert 0.05 < level < 0.1  # 0.1 peak sine: RMS 0.0707

    asyncio.run(run())


class Tracks:
    def __init__(self) -> None:
        self.tracks: dict[int, list[bytes]] = {}

    def deliver(self, batch: Batch) -> None:
        for t, k, p in batch.packets():
            if k == RTP:
                self.tracks.setdefault(t, []).append(p)

    def stream_closed(self, reason: str) -> None:
        raise AssertionError(reason)
