"""An ingest made of nothing but the packetizer and a Stream is readable over RTSP.

``TsIngest`` has the shape of the coming SRT ingest minus the socket: MPEG-TS packets
(PyAV's demuxer, packets only, no decoding) -> access units -> Packetizer -> Stream. It
imports nothing from rtsp/ or rtmp/; the RTSP relay serves the stream to real ffprobe
and ffmpeg readers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import pytest

from onvifcam.config import Config, RtspConfig
from onvifcam.limits import ConnectionLimiter
from onvifcam.media import aac, h264
from onvifcam.media.packetizer import AacSpec, Packetizer, VideoSpec
from onvifcam.media.stream import Stream, StreamRegistry
from onvifcam.rtsp.server import RtspServer
from tests.helpers import FFMPEG, ffmpeg_read, probe

pytestmark = pytest.mark.interop

FRAMES = 50


class TsIngest:
    """MPEG-TS packets -> packetizer -> stream (the publisher of the stream)."""

    description = "ts test ingest"

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.packetizer = Packetizer(stream.on_rtp, name=stream.path, time_base=Fraction(1, 90000))
        self.kicked = ""

    def kick(self, reason: str) -> None:
        self.kicked = reason

    def run(self, path: Path) -> None:
        with av.open(str(path)) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            packets = [p for p in container.demux(video, audio) if p.size and p.pts is not None]
        # The tracks are known at the first keyframe (in-band SPS/PPS) and the first ADTS header.
        first_key = next(p for p in packets if p.stream is video and p.is_keyframe)
        nals = h264.split_annexb(bytes(first_key))
        params = [n for n in nals if n[0] & 0x1F in (h264.NAL_SPS, h264.NAL_PPS)]
        asc, _frames = aac.adts_to_raw(bytes(next(p for p in packets if p.stream is audio)))
        session = self.packetizer.configure(
            [VideoSpec("H264", params, fps=25), AacSpec.from_config(asc)]
        )
        self.stream.publish(self, session)
        started = False
        for p in packets:
            if p.stream is video:
                started = started or p is first_key
                if started:
                    units = h264.split_annexb(bytes(p))
                    self.packetizer.on_access_unit(0, p.pts, p.dts, units, p.is_keyframe)
            elif started:
                _cfg, frames = aac.adts_to_raw(bytes(p))
                self.packetizer.on_access_unit(1, p.pts, p.dts, frames)


def make_ts(path: Path) -> None:
    cmd = [
        FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-frames:v", str(FRAMES), "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0",
        "-g", "1000", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-shortest",
        "-f", "mpegts", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=60)


def test_packetizer_ingest_is_read_by_ffprobe_and_ffmpeg(tmp_path: Path) -> None:
    ts = tmp_path / "in.ts"
    make_ts(ts)

    async def scenario() -> None:
        cfg = dataclasses.replace(Config(), rtsp=RtspConfig(udp=False))
        registry = StreamRegistry(gop_cache_bytes=16 << 20, media_timeout=15.0, max_streams=4)
        rtsp = RtspServer(cfg, registry, ConnectionLimiter(64, 0.0, 64))
        await rtsp.start("127.0.0.1", 0)
        try:
            stream = registry.get_or_create("ts/cam")
            ingest = TsIngest(stream)
            ingest.run(ts)  # everything since the first IDR sits in the GOP cache
            await asyncio.sleep(0)
            url = f"rtsp://127.0.0.1:{rtsp.port}/ts/cam"
            streams = await asyncio.to_thread(probe, url)
            kinds = {s["codec_type"]: s for s in streams}
            assert kinds["video"]["codec_name"] == "h264"
            assert (kinds["video"]["width"], kinds["video"]["height"]) == (320, 240)
            assert (kinds["audio"]["codec_name"], kinds["audio"]["sample_rate"]) == (
                "aac",
                "48000",
            )
            res = await asyncio.to_thread(ffmpeg_read, url, io_timeout=3.0)
            assert res.video_frames == FRAMES, res
            # Audio decoded too: ffmpeg reports nothing but the end of the stream.
            noise = [
                line
                for line in res.stderr.splitlines()
                if "timed out" not in line and "repeated" not in line
            ]
            assert noise == [], res.stderr
            assert stream.tracks[1].packets > 50
            assert stream.stats.frames_in == FRAMES and stream.stats.malformed_in == 0
            assert ingest.kicked == ""
        finally:
            await rtsp.stop()

    asyncio.run(scenario())
