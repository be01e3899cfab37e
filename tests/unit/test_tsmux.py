"""The MPEG-TS muxer: what it writes demuxes in FFmpeg (PyAV, ffprobe) and in onvifcam's
own TsDemuxer, from access units and from a stream's RTP; it never raises on odd sizes."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onvifcam.media import aac, h264
from onvifcam.media.mpegts import AudioFrame, TsDemuxer, VideoAccessUnit
from onvifcam.media.packetizer import AacSpec, Packetizer, VideoSpec
from onvifcam.media.rtpunits import MuxTrack
from onvifcam.media.tsmux import RtpTsMuxer, TsMuxer
from tests.unit.videotools import encode

FPS = 25
STEP = 90000 // FPS


@cache
def aac_frames(count: int = 60) -> tuple[bytes, tuple[bytes, ...]]:
    """(AudioSpecificConfig, raw AAC frames) of a 48 kHz stereo tone from PyAV."""
    ctx = av.CodecContext.create("aac", "w")
    ctx.sample_rate, ctx.layout, ctx.format = 48000, "stereo", "fltp"
    ctx.time_base = Fraction(1, 48000)
    out: list[bytes] = []
    t = np.arange(1024 * (count + 4)) / 48000
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for i in range(count + 4):
        frame = av.AudioFrame.from_ndarray(
            np.stack([tone[i * 1024 : (i + 1) * 1024]] * 2), format="fltp", layout="stereo"
        )
        frame.sample_rate, frame.pts = 48000, i * 1024
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return bytes(ctx.extradata), tuple(out[:count])


def video_units(codec: str, frames: int = 30) -> list[tuple[list[bytes], bool]]:
    """NAL units and keyframe flag of each access unit (no B-frames: decode = display)."""
    enc = "libx264" if codec == "H264" else "libx265"
    out = []
    for au in encode(enc, 320, 240, frames, params="keyint=10:bframes=0"):
        nals = h264.split_annexb(au)
        if codec == "H264":
            key = any(n[0] & 0x1F == 5 for n in nals)
        else:
            key = any(16 <= (n[0] >> 1) & 0x3F <= 21 for n in nals)
        out.append((nals, key))
    return out


def mux(codec: str, audio: bool, frames: int = 30) -> tuple[bytes, list[bytes]]:
    """A TS of ``frames`` video units (+ AAC) interleaved by time, and its payloads."""
    units = video_units(codec, frames)
    asc, raw = aac_frames()
    cfg = aac.parse_audio_specific_config(asc)
    m = TsMuxer(codec, audio)
    payloads: list[bytes] = []
    a = 0
    for i, (nals, key) in enumerate(units):
        pts = 90000 + i * STEP
        payloads += [p for _t, p in m.video(pts, pts, nals, key)]
        while audio and a < len(raw) and 90000 + a * 1920 <= pts:
            payloads += [p for _t, p in m.audio(90000 + a * 1920, raw[a : a + 2], cfg)]
            a += 2
    tail = m.flush()
    assert all(len(p) == 1316 for p in payloads)
    return b"".join(payloads) + tail, [*payloads, tail]


def pyav_read(path: Path) -> tuple[dict[str, str], list[int], int]:
    """Codecs by kind, video PTS in order, audio frames decoded."""
    with av.open(str(path)) as c:
        codecs = {s.type: s.codec_context.name for s in c.streams}
        pts: list[int] = []
        audio = 0
        for packet in c.demux():
            if packet.size == 0:
                continue
            for frame in packet.decode():
                if packet.stream.type == "video":
                    pts.append(frame.pts)
                else:
                    audio += frame.samples // 1024
    return codecs, pts, audio


@pytest.mark.parametrize("codec", ["H264", "H265"])
def test_ffmpeg_decodes_every_frame(tmp_path: Path, codec: str) -> None:
    data, _ = mux(codec, audio=True)
    path = tmp_path / "out.ts"
    path.write_bytes(data)
    codecs, pts, audio = pyav_read(path)
    assert codecs == {"video": "h264" if codec == "H264" else "hevc", "audio": "aac"}
    assert len(pts) == 30
    assert pts == sorted(pts) and len(set(pts)) == 30
    assert audio >= 30
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    streams = {s["codec_type"]: s for s in json.loads(probe.stdout)["streams"]}
    assert int(streams["video"]["nb_read_frames"]) == 30
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
    assert probe.stderr == ""


@pytest.mark.parametrize("codec", ["H264", "H265"])
def test_own_demuxer_round_trips(codec: str) -> None:
    _data, payloads = mux(codec, audio=True)
    units = video_units(codec)
    _asc, raw = aac_frames()
    d = TsDemuxer()
    events = []
    for p in payloads:
        events += d.feed(p)
    events += d.flush()
    video = [e for e in events if isinstance(e, VideoAccessUnit)]
    audio = [e for e in events if isinstance(e, AudioFrame)]
    assert [v.pts for v in video] == [90000 + i * STEP for i in range(30)]
    aud = 9 if codec == "H264" else 35
    for v, (nals, key) in zip(video, units, strict=True):
        got = [n for n in v.nal_units if ((n[0] & 0x1F) if codec == "H264" else n[0] >> 1) != aud]
        assert got == nals
        assert v.keyframe == key
    assert [a.frame for a in audio] == list(raw[: len(audio)])
    assert len(audio) >= 30
    assert [a.pts for a in audio] == [90000 + i * 1920 for i in range(len(audio))]
    assert d.stats()["cc_errors"] == 0 and d.stats()["crc_errors"] == 0


def test_parameter_sets_go_before_a_keyframe_without_them() -> None:
    units = video_units("H264", 12)
    params = [n for n in units[0][0] if n[0] & 0x1F in (7, 8)]
    m = TsMuxer("H264", False)
    out = b""
    for i, (nals, key) in enumerate(units):
        bare = [n for n in nals if n[0] & 0x1F not in (7, 8)]
        out += b"".join(p for _t, p in m.video(i * STEP, i * STEP, bare, key, params))
    out += m.flush()
    d = TsDemuxer()
    video = [e for e in d.feed(out) + d.flush() if isinstance(e, VideoAccessUnit)]
    assert [v.keyframe for v in video] == [key for _n, key in units]
    assert [v.params_in_band for v in video] == [key for _n, key in units]


def test_pat_pmt_repeat_and_pcr_on_the_video_pid() -> None:
    data, _ = mux("H264", audio=True)
    packets = [data[i : i + 188] for i in range(0, len(data), 188)]
    assert all(p[0] == 0x47 for p in packets)
    pids = [((p[1] & 0x1F) << 8) | p[2] for p in packets]
    assert pids.count(0) >= 12  # 1.2 s of video: at least every 100 ms
    pcr_pids = {pid for pid, p in zip(pids, packets, strict=True) if p[3] & 0x20 and p[5] & 0x10}
    assert pcr_pids == {0x100}
    cc: dict[int, int] = {}
    for pid, p in zip(pids, packets, strict=True):
        if pid in cc:
            assert p[3] & 0x0F == (cc[pid] + 1) % 16
        cc[pid] = p[3] & 0x0F


def rtp_units(codec: str, with_audio: bool) -> tuple[list[MuxTrack], list[tuple[int, list[bytes]]]]:
    """A stream's tracks and its RTP access units (track, packets), via the packetiser."""
    units = video_units(codec, 20)
    asc, raw = aac_frames()
    params = [n for n in units[0][0] if (n[0] & 0x1F if codec == "H264" else n[0] >> 1) in (
        (7, 8) if codec == "H264" else (32, 33, 34))]  # fmt: skip
    current: list[bytes] = []
    pkt = Packetizer(lambda _t, p: current.append(p), time_base=Fraction(1, 90000))
    specs: list = [VideoSpec(codec, params)]
    if with_audio:
        specs.append(AacSpec.from_config(aac.parse_audio_specific_config(asc)))
    session = pkt.configure(specs)
    tracks = [
        MuxTrack(m.media, m.encoding.upper(), m.clock_rate, dict(m.fmtp.get(m.payload_type, {})))
        for m in session.media
    ]
    out: list[tuple[int, list[bytes]]] = []
    for i, (nals, key) in enumerate(units):
        pkt.on_access_unit(0, i * STEP, i * STEP, nals, key)
        out.append((0, current[:]))
        current.clear()
        if with_audio and i % 2:
            pkt.on_access_unit(1, i * STEP, i * STEP, [raw[i]])
            out.append((1, current[:]))
            current.clear()
    return tracks, out


@pytest.mark.parametrize("codec", ["H264", "H265"])
def test_rtp_access_units_remux_to_ts(codec: str) -> None:
    tracks, units = rtp_units(codec, with_audio=True)
    m = RtpTsMuxer(tracks)
    data = b""
    for i, (track, packets) in enumerate(units):
        data += b"".join(p for _t, p in m.push(track, packets, i * 20.0))
    data += m.flush()
    d = TsDemuxer()
    events = d.feed(data) + d.flush()
    video = [e for e in events if isinstance(e, VideoAccessUnit)]
    audio = [e for e in events if isinstance(e, AudioFrame)]
    assert len(video) == 20 and video[0].keyframe and video[0].params_in_band
    dts = [v.dts for v in video]
    assert dts == sorted(dts) and all(v.pts >= v.dts for v in video)
    assert [v.pts - video[0].pts for v in video] == [i * STEP for i in range(20)]
    assert len(audio) == 10


def test_reordered_frames_keep_dts_at_or_below_pts() -> None:
    tracks, units = rtp_units("H264", with_audio=False)
    order = [0, 2, 1, 4, 3, 6, 5, 8, 7]  # B-frame-like display order in RTP time
    m = RtpTsMuxer(tracks)
    data = b""
    for i in order:
        # sent in decode order, RTP time is display time: it goes back and forth
        data += b"".join(p for _t, p in m.push(0, units[i][1], 0.0))
    data += m.flush()
    d = TsDemuxer()
    video = [e for e in d.feed(data) + d.flush() if isinstance(e, VideoAccessUnit)]
    assert len(video) == len(order)
    assert all(v.pts >= v.dts for v in video)
    dts = [v.dts for v in video]
    assert dts == sorted(dts) and len(set(dts)) == len(dts)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),  # video or audio
            st.lists(st.integers(0, 20000), max_size=5),  # unit sizes
            st.integers(-(1 << 34), 1 << 34),  # timestamp
            st.booleans(),
        ),
        max_size=12,
    ),
    st.sampled_from(["H264", "H265", None]),
)
def test_never_raises_on_any_sizes(units: list, codec: str | None) -> None:
    m = TsMuxer(codec, True)
    cfg = aac.parse_audio_specific_config(bytes.fromhex("1190"))
    out = b""
    for is_video, sizes, ts, key in units:
        if is_video and codec:
            nals = [bytes([0x65 if key else 0x41]) + b"\x00" * s for s in sizes]
            out += b"".join(p for _t, p in m.video(ts, ts - 3000, nals, key, [b"\x67\x42"]))
        else:
            out += b"".join(p for _t, p in m.audio(ts, [b"\x21" * s for s in sizes], cfg))
    out += m.flush()
    assert len(out) % 188 == 0
    assert all(out[i] == 0x47 for i in range(0, len(out), 188))
    TsDemuxer().feed(out)


def test_srt_caller_retransmission_buffer_is_bounded_and_acks_free_it() -> None:
    from onvifcam.srt.caller import Caller
    from onvifcam.srt.packet import build_ack

    c = Caller(isn=100)
    c.state, c.peer_id = "connected", 7
    for i in range(10):
        c.data(bytes(1316), i * 0.01)
    assert c.sent_bytes == 13160
    assert c.trim(5000) == 7 and c.sent_bytes == 3 * 1316 and min(c.sent) == 107
    c.receive(build_ack(0, c.socket_id, 1, 109), 0.2)
    assert c.sent_bytes == 1316 and list(c.sent) == [109]
