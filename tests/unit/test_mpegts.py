"""Unit tests for the sans-I/O MPEG-TS demuxer (onvifcam.media.mpegts).

Real input first: transport streams written by the real ffmpeg and GStreamer muxers are
demuxed in random chunk sizes and compared packet by packet with PyAV's demuxer of the
same file. Then damage (loss, duplicates, garbage, scrambling, bit flips), PSI and PES
corner cases built with a tiny test-only muxer, and hypothesis properties.
"""

from __future__ import annotations

import itertools
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onvifcam.media import h264
from onvifcam.media.mpegts import (
    PACKET_SIZE,
    AudioFrame,
    Event,
    Limits,
    TracksChanged,
    TsDemuxer,
    TsError,
    VideoAccessUnit,
    VideoParameters,
    crc32_mpeg2,
)
from tests.helpers import FFMPEG, GST_LAUNCH, gst_available
from tests.unit.videotools import encode

# --------------------------------------------------------------------------- real files

DEFAULT = Limits()
VideoRef = tuple[int, int, bool, list[bytes]]  # pts, dts, keyframe, NAL units
AudioRef = tuple[int, bytes]  # pts, raw frame


def _ffmpeg(path: Path, *args: str, seconds: float = 3) -> Path:
    if shutil.which(FFMPEG) is None:
        pytest.fail("ffmpeg is needed to write real MPEG-TS", pytrace=False)
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-t", str(seconds), "-pix_fmt", "yuv420p", "-g", "25", "-bf", "2",
           *args, "-f", "mpegts", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=120)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Transport streams from the real muxers, written once for the module."""
    base = tmp_path_factory.mktemp("ts")
    out = {
        "h264": _ffmpeg(base / "h264.ts", "-c:v", "libx264", "-c:a", "aac"),
        "h265": _ffmpeg(
            base / "h265.ts",
            "-c:v",
            "libx265",
            "-x265-params",
            "log-level=error:bframes=2",
            "-c:a",
            "aac",
        ),
        "h264-44k": _ffmpeg(
            base / "h264-44k.ts", "-c:v", "libx264", "-c:a", "aac", "-ar", "44100", seconds=2
        ),
        # starts 0.6 s before the 33-bit PTS wrap (2^33 / 90000 = 95443.7 s)
        "wrap": _ffmpeg(
            base / "wrap.ts",
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            "-output_ts_offset",
            "95441.5",
            seconds=2,
        ),
        "others": _ffmpeg(
            base / "others.ts",
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-map",
            "1:a",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-c:a:0",
            "ac3",
            "-c:a:1",
            "libopus",
            "-c:a:2",
            "mp2",
            "-metadata:s:a:0",
            "language=eng",
            seconds=1,
        ),
    }
    return out


@pytest.fixture(scope="module")
def gst_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """H.264 (B-frames) + AAC through GStreamer's mpegtsmux."""
    if not gst_available():
        pytest.fail("gst-launch-1.0 is needed for the mpegtsmux test", pytrace=False)
    path = tmp_path_factory.mktemp("gst") / "gst.ts"
    pipeline = (
        "videotestsrc num-buffers=75 ! video/x-raw,width=320,height=240,framerate=25/1,"
        "format=I420 ! x264enc bframes=2 key-int-max=25 ! h264parse ! mux. "
        "audiotestsrc num-buffers=100 ! audio/x-raw,rate=48000 ! avenc_aac ! aacparse ! mux. "
        f"mpegtsmux name=mux ! filesink location={path}"
    )
    subprocess.run([GST_LAUNCH, "-q", *pipeline.split()], check=True, timeout=120)
    return path


def reference(path: Path) -> tuple[list[VideoRef], list[AudioRef]]:
    """What PyAV's (FFmpeg's) demuxer makes of the file: video packets as NAL units,
    audio packets (ADTS frames) without their header."""
    video: list[VideoRef] = []
    audio: list[AudioRef] = []
    with av.open(str(path)) as container:
        for p in container.demux():
            if p.size == 0:
                continue
            assert p.stream.time_base == Fraction(1, 90000)
            raw = bytes(p)
            if p.stream.type == "video":
                video.append((p.pts, p.dts, p.is_keyframe, h264.split_annexb(raw)))
            elif p.stream.type == "audio":
                audio.append((p.pts, raw[7 if raw[1] & 1 else 9 :]))
    return video, audio


@dataclass
class Demuxed:
    events: list[Event]
    demuxer: TsDemuxer

    @property
    def video(self) -> list[VideoRef]:
        return [
            (e.pts, e.dts, e.keyframe, e.nal_units)
            for e in self.events
            if isinstance(e, VideoAccessUnit)
        ]

    @property
    def audio(self) -> list[AudioRef]:
        return [(e.pts, e.frame) for e in self.events if isinstance(e, AudioFrame)]

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def stats(self) -> dict[str, int]:
        return self.demuxer.stats()


def demux(
    data: bytes, seed: int | None = 0, limits: Limits = DEFAULT, max_chunk: int = 3000
) -> Demuxed:
    """Feed ``data`` in random chunks of 1..max_chunk bytes (all at once if seed is None),
    then flush."""
    d = TsDemuxer(limits)
    events: list[Event] = []
    if seed is None:
        events += d.feed(data)
    else:
        rng = random.Random(seed)
        pos = 0
        while pos < len(data):
            step = rng.randint(1, max_chunk)
            events += d.feed(data[pos : pos + step])
            pos += step
    events += d.flush()
    return Demuxed(events, d)


def packets_of(data: bytes) -> list[bytes]:
    return [data[i : i + PACKET_SIZE] for i in range(0, len(data), PACKET_SIZE)]


def pid_of(packet: bytes) -> int:
    return ((packet[1] & 0x1F) << 8) | packet[2]


def assert_one_gap(got: list, ref: list) -> int:
    """``got`` is ``ref`` with one contiguous run left out; return the run's length."""
    missing = len(ref) - len(got)
    assert missing >= 1
    i = next((k for k, (a, b) in enumerate(zip(got, ref, strict=False)) if a != b), len(got))
    assert got[:i] == ref[:i]
    assert got[i:] == ref[i + missing :]
    return missing


# --------------------------------------------------------------------------- real muxers


@pytest.mark.parametrize(("name", "codec"), [("h264", "H264"), ("h265", "H265")])
def test_ffmpeg_output_matches_pyav(files: dict[str, Path], name: str, codec: str) -> None:
    path = files[name]
    ref_video, ref_audio = reference(path)
    got = demux(path.read_bytes(), seed=7)
    assert got.video == ref_video
    assert got.audio == ref_audio
    assert len(ref_video) == 75 and len(ref_audio) > 100
    assert any(pts != dts for pts, dts, _, _ in ref_video)  # B-frames: DTS != PTS
    assert sum(key for _, _, key, _ in ref_video) == 3
    tracks = got.of(TracksChanged)
    assert len(tracks) == 1
    assert [(t.kind, t.codec, t.supported) for t in tracks[0].tracks] == [
        ("video", codec, True),
        ("audio", "AAC", True),
    ]
    params = got.of(VideoParameters)
    assert len(params) == 1 and params[0].codec == codec
    assert params[0].info is not None
    assert (params[0].info.width, params[0].info.height) == (320, 240)
    assert len(params[0].parameter_sets) == (2 if codec == "H264" else 3)
    assert got.demuxer.parameter_sets(params[0].pid) == params[0].parameter_sets
    cfg = got.of(AudioFrame)[0].config
    assert (cfg.object_type, cfg.sample_rate, cfg.channels) == (2, 48000, 1)
    first_key = next(e for e in got.of(VideoAccessUnit) if e.keyframe)
    assert first_key.params_in_band
    stats = got.stats
    assert stats["video_aus"] == 75 and stats["audio_frames"] == len(ref_audio)
    assert stats["bytes"] == path.stat().st_size
    assert stats["packets"] == path.stat().st_size // PACKET_SIZE
    for key in ("cc_errors", "dropped_aus", "malformed", "crc_errors", "adts_errors"):
        assert stats[key] == 0, key
    assert stats["pcr_count"] > 0 and stats["pcr"] > 0 and stats["pcr_pid"] == 0x100
    assert stats["buffered"] == 0


def test_gstreamer_mpegtsmux_matches_pyav(gst_file: Path) -> None:
    ref_video, ref_audio = reference(gst_file)
    got = demux(gst_file.read_bytes(), seed=3)
    assert got.video == ref_video
    assert got.audio == ref_audio
    assert len(ref_video) == 75 and any(p != d for p, d, _, _ in ref_video)
    assert got.stats["cc_errors"] == 0 and got.stats["dropped_aus"] == 0


def test_44100_hz_audio_advances_1024_samples_per_frame(files: dict[str, Path]) -> None:
    """FFmpeg adds a rounded 2090 ticks per frame after the PES PTS; exact 1024/44100 s
    steps stay within one tick of it."""
    ref_video, ref_audio = reference(files["h264-44k"])
    got = demux(files["h264-44k"].read_bytes(), seed=1)
    assert got.video == ref_video
    assert [f for _, f in got.audio] == [f for _, f in ref_audio]
    assert max(abs(a[0] - b[0]) for a, b in zip(got.audio, ref_audio, strict=True)) <= 1
    assert got.of(AudioFrame)[0].config.sample_rate == 44100


def test_srt_sized_chunks_equal_one_feed(files: dict[str, Path]) -> None:
    data = files["h264"].read_bytes()
    d = TsDemuxer()
    events: list[Event] = []
    for i in range(0, len(data), 1316):
        events += d.feed(data[i : i + 1316])
    events += d.flush()
    assert events == demux(data, seed=None).events


def test_unsupported_streams_are_named_and_skipped(files: dict[str, Path]) -> None:
    got = demux(files["others"].read_bytes())
    (changed,) = got.of(TracksChanged)
    assert [(t.stream_type, t.kind, t.codec, t.supported, t.language) for t in changed.tracks] == [
        (0x1B, "video", "H264", True, None),
        (0x81, "audio", "AC-3", False, "eng"),
        (0x06, "audio", "Opus", False, None),
        (0x03, "audio", "MPEG-1 audio", False, None),
    ]
    assert got.stats["unknown_streams"] == 3
    assert got.stats["unknown_pes"] > 0
    assert got.video == reference(files["others"])[0]
    assert got.audio == []


def test_pts_wrap_gives_monotonic_timestamps(files: dict[str, Path]) -> None:
    ref_video, ref_audio = reference(files["wrap"])
    got = demux(files["wrap"].read_bytes())
    dts = [d for _, d, _, _ in got.video]
    assert dts == sorted(dts) and len(set(dts)) == len(dts)
    assert dts[0] < 1 << 33 < dts[-1]  # crossed the wrap
    # FFmpeg puts the part before the wrap below zero; the offset is one 2^33 throughout
    assert {g[0] - r[0] for g, r in zip(got.video, ref_video, strict=True)} == {1 << 33}
    assert {g[1] - r[1] for g, r in zip(got.video, ref_video, strict=True)} == {1 << 33}
    assert {g[0] - r[0] for g, r in zip(got.audio, ref_audio, strict=True)} == {1 << 33}
    assert [g[3] for g in got.video] == [r[3] for r in ref_video]
    assert got.stats["timestamp_jumps"] == 0


# --------------------------------------------------------------------------- damage


def _video_packets(data: bytes) -> list[tuple[int, bool]]:
    """(packet index, payload_unit_start) of the video PID's packets."""
    return [(i, bool(p[1] & 0x40)) for i, p in enumerate(packets_of(data)) if pid_of(p) == 0x100]


def test_lost_packet_drops_only_its_access_unit(files: dict[str, Path]) -> None:
    data = files["h264"].read_bytes()
    ref_video, ref_audio = reference(files["h264"])
    packets = packets_of(data)
    video = _video_packets(data)
    rng = random.Random(5)
    for _ in range(6):
        k = rng.randrange(len(video) // 4, 3 * len(video) // 4)
        while video[k][1]:  # a packet in the middle of an access unit
            k += 1
        au = sum(start for _, start in video[: k + 1]) - 1  # its access unit
        lost = video[k][0]
        got = demux(b"".join(packets[:lost] + packets[lost + 1 :]), seed=k)
        assert got.video == ref_video[:au] + ref_video[au + 1 :]
        assert got.audio == ref_audio
        assert got.stats["cc_errors"] == 1 and got.stats["dropped_aus"] == 1


def test_lost_first_packet_of_an_access_unit(files: dict[str, Path]) -> None:
    """With PES length 0 the loss of a payload_unit_start shows only in the next packet:
    the access unit it started and the one before (whose end cannot be known) are
    dropped, and counted as one damaged PES."""
    data = files["h264"].read_bytes()
    ref_video, ref_audio = reference(files["h264"])
    packets = packets_of(data)
    starts = [i for i, start in _video_packets(data) if start]
    for au in (10, 31, 52):
        got = demux(b"".join(packets[: starts[au]] + packets[starts[au] + 1 :]))
        assert got.video == ref_video[: au - 1] + ref_video[au + 1 :]
        assert got.audio == ref_audio
        assert got.stats["cc_errors"] == 1 and got.stats["dropped_aus"] == 1


def test_lost_audio_packet_drops_its_pes(files: dict[str, Path]) -> None:
    data = files["h264"].read_bytes()
    ref_video, ref_audio = reference(files["h264"])
    packets = packets_of(data)
    audio = [i for i, p in enumerate(packets) if pid_of(p) == 0x101 and not p[1] & 0x40]
    lost = audio[len(audio) // 2]
    got = demux(b"".join(packets[:lost] + packets[lost + 1 :]))
    assert got.video == ref_video
    assert assert_one_gap(got.audio, ref_audio) >= 1
    assert got.stats["cc_errors"] == 1 and got.stats["dropped_aus"] == 1


def test_one_duplicate_is_ignored_a_second_is_loss(files: dict[str, Path]) -> None:
    data = files["h264"].read_bytes()
    whole = demux(data)
    packets = packets_of(data)
    video = [i for i, start in _video_packets(data) if not start]
    k = video[len(video) // 2]
    twice = demux(b"".join([*packets[: k + 1], packets[k], *packets[k + 1 :]]), seed=2)
    assert twice.events == whole.events
    assert twice.stats["duplicates"] == 1 and twice.stats["cc_errors"] == 0
    thrice = demux(b"".join(packets[: k + 1] + [packets[k]] * 2 + packets[k + 1 :]))
    assert thrice.stats["duplicates"] == 1 and thrice.stats["cc_errors"] == 1
    assert thrice.stats["dropped_aus"] == 1
    assert assert_one_gap(thrice.video, whole.video) == 1


def test_scrambled_and_transport_error_packets_drop_their_access_unit(
    files: dict[str, Path],
) -> None:
    data = files["h264"].read_bytes()
    ref_video, _ = reference(files["h264"])
    packets = packets_of(data)
    video = [i for i, start in _video_packets(data) if not start]
    k = video[len(video) // 3]
    scrambled = bytearray(packets[k])
    scrambled[3] |= 0x80  # transport_scrambling_control 2 (even key)
    got = demux(b"".join([*packets[:k], bytes(scrambled), *packets[k + 1 :]]))
    assert got.stats["scrambled"] == 1 and got.stats["cc_errors"] == 0
    assert got.stats["dropped_aus"] == 1 and assert_one_gap(got.video, ref_video) == 1
    errored = bytearray(packets[k])
    errored[1] |= 0x80  # transport_error_indicator
    got = demux(b"".join([*packets[:k], bytes(errored), *packets[k + 1 :]]))
    assert got.stats["transport_errors"] == 1 and got.stats["cc_errors"] == 1
    assert got.stats["dropped_aus"] == 1 and assert_one_gap(got.video, ref_video) == 1


def test_garbage_before_and_inside_the_stream_resyncs(files: dict[str, Path]) -> None:
    data = files["h264"].read_bytes()
    whole = demux(data)
    rng = random.Random(9)
    junk = bytes(rng.randrange(256) for _ in range(1000)).replace(b"\x47", b"\x46")
    got = demux(junk + data)
    assert got.events == whole.events
    assert got.stats["skipped_bytes"] == len(junk) and got.stats["resyncs"] == 0
    cut = 200 * PACKET_SIZE + 77  # a packet cut short, then junk
    got = demux(data[:cut] + junk + data[cut + PACKET_SIZE - 77 :])
    # The cut packet, completed by junk, still has its sync byte and is taken; the junk
    # after it is not, and lost sync drops every unfinished PES.
    assert got.stats["resyncs"] == 1
    assert got.stats["skipped_bytes"] == len(junk) - (PACKET_SIZE - 77)
    assert assert_one_gap(got.video, whole.video) <= 2
    assert got.audio[-10:] == whole.audio[-10:]


def test_not_mpegts_raises_a_final_error(files: dict[str, Path]) -> None:
    annexb = b"".join(h264.to_annexb(nals) for _, _, _, nals in reference(files["h264"])[0])
    d = TsDemuxer()
    with pytest.raises(TsError, match="not MPEG-TS") as info:
        for i in range(0, len(annexb), 1316):
            d.feed(annexb[i : i + 1316])
    assert info.value.events == []
    with pytest.raises(TsError):
        d.feed(files["h264"].read_bytes())
    assert d.stats()["skipped_bytes"] > Limits().max_sync_search
    assert d.buffered < 3 * PACKET_SIZE


def test_spliced_streams_change_tracks_and_keep_time_monotonic(files: dict[str, Path]) -> None:
    """An encoder restarting with another codec on the same PIDs: a new track set, and
    the timeline (which jumps back 3 s) goes on from where it was."""
    first, second = files["h264"].read_bytes(), files["h265"].read_bytes()
    got = demux(first + second)
    changes = got.of(TracksChanged)
    assert [[t.codec for t in c.tracks] for c in changes] == [["H264", "AAC"], ["H265", "AAC"]]
    units = got.of(VideoAccessUnit)
    assert {u.codec for u in units} == {"H264", "H265"}
    dts = [u.dts for u in units]
    assert all(b > a for a, b in itertools.pairwise(dts))
    assert got.stats["timestamp_jumps"] >= 1 and got.stats["pmt_changes"] == 2
    # the H.265 part keeps its frame spacing
    h265_dts = [u.dts for u in units if u.codec == "H265"]
    assert {b - a for a, b in itertools.pairwise(h265_dts)} == {3600}


def test_oversized_pes_is_dropped_and_buffers_stay_bounded(files: dict[str, Path]) -> None:
    data = files["h264"].read_bytes()
    ref_video, _ = reference(files["h264"])
    limits = Limits(max_pes_size=4096, max_buffered=6000)
    d = TsDemuxer(limits)
    events: list[Event] = []
    for i in range(0, len(data), 1316):
        events += d.feed(data[i : i + 1316])
        assert d.buffered <= limits.max_buffered + 3 * PACKET_SIZE + 2 * 1024 + 8191
    got = Demuxed(events + d.flush(), d)
    assert got.stats["oversized_pes"] > 0
    assert len(got.video) + got.stats["oversized_pes"] == len(ref_video)
    big = {i for i, r in enumerate(ref_video) if sum(len(n) + 4 for n in r[3]) > 4000}
    assert got.video == [r for i, r in enumerate(ref_video) if i not in big]


# --------------------------------------------------------------------------- test muxer


def _timestamp(prefix: int, t: int) -> bytes:
    return bytes((
        (prefix << 4) | (((t >> 30) & 7) << 1) | 1,
        (t >> 22) & 0xFF,
        (((t >> 15) & 0x7F) << 1) | 1,
        (t >> 7) & 0xFF,
        ((t & 0x7F) << 1) | 1,
    ))  # fmt: skip


def pes(
    payload: bytes,
    pts: int | None = None,
    dts: int | None = None,
    *,
    stream_id: int = 0xE0,
    sized: bool = False,
) -> bytes:
    """A PES packet; ``sized`` writes PES_packet_length (else 0, as for video)."""
    header = b""
    flags = 0
    if pts is not None and dts is not None and dts != pts:
        flags, header = 0xC0, _timestamp(3, pts & ((1 << 33) - 1)) + _timestamp(1, dts)
    elif pts is not None:
        flags, header = 0x80, _timestamp(2, pts & ((1 << 33) - 1))
    body = bytes((0x80, flags, len(header))) + header + payload
    length = len(body) if sized else 0
    return b"\x00\x00\x01" + bytes((stream_id,)) + length.to_bytes(2, "big") + body


def section(table_id: int, ext: int, body: bytes, *, version: int = 0) -> bytes:
    length = 5 + len(body) + 4
    head = bytes((table_id, 0xB0 | (length >> 8), length & 0xFF))
    head += ext.to_bytes(2, "big") + bytes((0xC1 | (version << 1), 0, 0))
    return head + body + crc32_mpeg2(head + body).to_bytes(4, "big")


def pat(programs: list[tuple[int, int]], version: int = 0) -> bytes:
    body = b"".join(n.to_bytes(2, "big") + (0xE000 | pid).to_bytes(2, "big") for n, pid in programs)
    return section(0x00, 1, body, version=version)


def pmt(
    streams: list[tuple[int, int, bytes]], *, program: int = 1, pcr: int = 0x100, version: int = 0
) -> bytes:
    body = (0xE000 | pcr).to_bytes(2, "big") + b"\xf0\x00"
    for stream_type, pid, descriptors in streams:
        body += bytes((stream_type,)) + (0xE000 | pid).to_bytes(2, "big")
        body += (0xF000 | len(descriptors)).to_bytes(2, "big") + descriptors
    return section(0x02, program, body, version=version)


def adts(raw: bytes, rate_index: int = 3, channels: int = 2, crc: bool = False) -> bytes:
    length = len(raw) + (9 if crc else 7)
    h = (0xFFF << 44) | ((0 if crc else 1) << 40) | (1 << 38) | (rate_index << 34)
    h |= (channels << 30) | (length << 13) | (0x7FF << 2)
    return h.to_bytes(7, "big") + (b"\x00\x00" if crc else b"") + raw


class Mux:
    """A test-only TS muxer that tracks continuity counters."""

    def __init__(self) -> None:
        self.cc: dict[int, int] = {}

    def packet(
        self,
        pid: int,
        chunk: bytes,
        *,
        start: bool = False,
        flags: int = 0,
        pcr: int | None = None,
        cc: int | None = None,
    ) -> bytes:
        """One packet; the adaptation field (``flags``, PCR) and stuffing fill it up."""
        af_body = b""
        if flags or pcr is not None:
            af_body = bytes((flags | (0x10 if pcr is not None else 0),))
            if pcr is not None:
                base, ext = divmod(pcr, 300)
                af_body += ((base << 15) | (0x3F << 9) | ext).to_bytes(6, "big")
        room = 184 - len(chunk)
        assert room >= 0
        if af_body or room:
            if room == 1 and not af_body:
                af = b"\x00"
            else:
                af_body = af_body or b"\x00"
                stuffing = room - 1 - len(af_body)
                assert stuffing >= 0
                af = bytes((len(af_body) + stuffing,)) + af_body + b"\xff" * stuffing
            afc = 0x30 if chunk else 0x20
        else:
            af, afc = b"", 0x10
        if cc is None:
            cc = self.cc.get(pid, -1) + 1 if chunk else self.cc.get(pid, 0)
        self.cc[pid] = cc & 0x0F
        b1 = (0x40 if start else 0) | (pid >> 8)
        return bytes((0x47, b1, pid & 0xFF, afc | (cc & 0x0F))) + af + chunk

    def pes(self, pid: int, data: bytes, *, first: int = 184) -> bytes:
        """A PES over packets (``first``: payload bytes in the first packet)."""
        out = [self.packet(pid, data[:first], start=True)]
        out += [self.packet(pid, data[i : i + 184]) for i in range(first, len(data), 184)]
        return b"".join(out)

    def psi(self, pid: int, *sections: bytes) -> bytes:
        """Sections back to back, packed with pointer fields, 0xFF stuffing at the end."""
        stream = b"".join(sections)
        starts = []
        pos = 0
        for s in sections:
            starts.append(pos)
            pos += len(s)
        out = []
        pos = 0
        while pos < len(stream):
            inside = [s for s in starts if pos <= s < pos + 183]
            if inside:
                chunk = bytes((inside[0] - pos,)) + stream[pos : pos + 183]
                pos += 183
            else:
                chunk = stream[pos : pos + 184]
                pos += 184
            out.append(self.packet(pid, chunk + b"\xff" * (184 - len(chunk)), start=bool(inside)))
        return b"".join(out)


H264_STREAMS = [(0x1B, 0x100, b""), (0x0F, 0x101, b"")]


def _au(keyframe: bool, size: int = 600) -> list[bytes]:
    """NAL units of a made-up H.264 access unit (AUD, [SPS, PPS,] a slice)."""
    sps, pps = h264.split_annexb(encode("libx264", 64, 64, frames=1)[0])[1:3]
    nals = [b"\x09\xf0"]
    if keyframe:
        nals += [sps, pps, b"\x65" + bytes(range(1, 256)) * (size // 255)]
    else:
        nals += [b"\x41" + bytes(range(1, 256)) * (size // 255)]
    return nals


def head(mux: Mux, streams: list[tuple[int, int, bytes]] = H264_STREAMS) -> bytes:
    return mux.psi(0, pat([(1, 0x1000)])) + mux.psi(0x1000, pmt(streams))


def test_crc32_mpeg2_check_value() -> None:
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7
    s = pat([(1, 0x1000)])
    assert crc32_mpeg2(s) == 0
    assert crc32_mpeg2(s[:-1] + bytes((s[-1] ^ 1,))) != 0


def test_two_packets_lock_at_flush() -> None:
    """Three sync bytes are needed to lock while more may come; at the end fewer do."""
    d = TsDemuxer()
    assert d.feed(head(Mux())) == []
    assert d.buffered == 2 * PACKET_SIZE
    (changed,) = d.flush()
    assert isinstance(changed, TracksChanged) and changed.program == 1
    assert [t.pid for t in changed.tracks] == [0x100, 0x101]


def test_sections_span_packets_and_share_them() -> None:
    """A PMT longer than a packet, then a new version starting in the same packet as the
    old one's end (pointer_field), with stream names from descriptors."""
    klv = b"\x05\x04KLVA"
    many = [(0x06, 0x200 + i, klv + b"\x0a\x04deu\x00" + b"\x80\x40" + bytes(64)) for i in range(5)]
    v0 = pmt([*H264_STREAMS, *many])
    v1 = pmt([(0x24, 0x100, b""), (0x86, 0x102, b""), (0x15, 0x103, b""), (0x99, 0x104, b"")],
             version=1)  # fmt: skip
    assert len(v0) > 2 * 184
    mux = Mux()
    data = mux.psi(0, pat([(1, 0x1000)])) + mux.psi(0x1000, v0, v1)
    got = demux(data, seed=4, max_chunk=50)
    first, second = got.of(TracksChanged)
    assert [(t.codec, t.kind, t.supported) for t in first.tracks][2:] == [
        ("KLV", "data", False)
    ] * 5
    assert first.tracks[2].language == "deu"
    assert [(t.codec, t.kind) for t in second.tracks] == [
        ("H265", "video"),
        ("SCTE-35", "data"),
        ("metadata", "data"),
        ("stream type 0x99", "data"),
    ]
    assert got.stats["pmt_changes"] == 2 and got.stats["unknown_streams"] == 3


def test_repeated_and_corrupt_tables() -> None:
    mux = Mux()
    table = pmt(H264_STREAMS)
    bad = table[:20] + bytes((table[20] ^ 0xFF,)) + table[21:]
    data = mux.psi(0, pat([(1, 0x1000)])) + mux.psi(0x1000, bad)
    data += mux.psi(0x1000, table) + mux.psi(0, pat([(1, 0x1000)])) + mux.psi(0x1000, table)
    got = demux(data)
    assert len(got.of(TracksChanged)) == 1
    assert got.stats["crc_errors"] == 1 and got.stats["pmt_changes"] == 1


def test_max_pids_and_program_choice() -> None:
    mux = Mux()
    streams = [(0x0F, 0x200 + i, b"") for i in range(20)]
    data = mux.psi(0, pat([(1, 0x1000), (2, 0x1001)]))
    data += mux.psi(0x1000, pmt(H264_STREAMS)) + mux.psi(0x1001, pmt(streams, program=2))
    got = demux(data, limits=Limits(max_pids=4))
    (changed,) = got.of(TracksChanged)
    assert changed.program == 1 and len(changed.tracks) == 2
    d = TsDemuxer(Limits(max_pids=4), program=2)
    (changed,) = d.feed(data) + d.flush()
    assert isinstance(changed, TracksChanged)
    assert changed.program == 2 and [t.pid for t in changed.tracks] == [0x200, 0x201, 0x202, 0x203]
    assert d.stats()["ignored_streams"] == 16


def test_pes_continuation_header_across_packets_and_discontinuity() -> None:
    mux = Mux()
    key, delta = _au(True), _au(False, 2000)
    data = head(mux)
    # the PES header (14 bytes) split over two packets: 4 bytes in the first
    data += mux.pes(0x100, pes(h264.to_annexb(key), 900000, 896400), first=4)
    # an access unit in two PES, the second without PTS (it continues the first)
    annexb = h264.to_annexb(delta)
    data += mux.pes(0x100, pes(annexb[:700], 907200, 900000))
    data += mux.pes(0x100, pes(annexb[700:]))
    # a CC gap flagged by discontinuity_indicator: no loss
    unit = pes(h264.to_annexb(_au(False, 300)), 903600)
    data += mux.packet(0x100, unit[:184], start=True)
    data += mux.packet(0x100, unit[184:], flags=0x80, cc=(mux.cc[0x100] + 5))
    data += mux.pes(0x100, pes(h264.to_annexb(_au(False, 300)), 910800, 907200))
    got = demux(data, seed=1, max_chunk=200)
    units = got.of(VideoAccessUnit)
    assert [(u.pts, u.dts, u.keyframe) for u in units] == [
        (900000, 896400, True),
        (907200, 900000, False),
        (903600, 903600, False),
        (910800, 907200, False),
    ]
    assert units[0].nal_units == key and units[1].nal_units == delta
    assert got.stats["discontinuities"] == 1 and got.stats["cc_errors"] == 0
    assert got.stats["dropped_aus"] == 0


def test_adts_frames_across_pes_with_crc_and_garbage() -> None:
    """The PES PTS belongs to the first frame starting in it; a frame split over two PES
    keeps the timing of the first; 44.1 kHz steps are exact (1024 * 90000 / 44100)."""
    mux = Mux()
    frames = [adts(bytes([i]) * (50 + i), rate_index=4, crc=i % 2 == 1) for i in range(6)]
    a = frames[0] + frames[1] + frames[2][:20]
    b = frames[2][20:] + frames[3] + b"junk" + frames[4] + frames[5]
    data = head(mux)
    data += mux.pes(0x101, pes(a, 100000, stream_id=0xC0, sized=True))
    data += mux.pes(0x101, pes(b, 200000, stream_id=0xC0, sized=True))
    got = demux(data, seed=2, max_chunk=100)
    step = 1024 * 90000 / 44100
    assert got.audio == [
        (100000, frames[0][7:]),
        (100000 + int(step), frames[1][9:]),
        (100000 + int(2 * step), frames[2][7:]),
        (200000, frames[3][9:]),
        (200000 + int(step), frames[4][7:]),
        (200000 + int(2 * step), frames[5][9:]),
    ]
    cfg = got.of(AudioFrame)[0].config
    assert (cfg.object_type, cfg.sample_rate, cfg.channels) == (2, 44100, 2)
    assert all(f.config is cfg for f in got.of(AudioFrame))
    assert got.stats["adts_errors"] == 1 and got.stats["audio_frames"] == 6


def test_timestamp_jumps_rebase_the_timeline() -> None:
    mux = Mux()
    data = head(mux)
    times = [1000, 4000, 7000, 5_000_000, 5_003_000, 10, 3010]
    for i, t in enumerate(times):
        data += mux.pes(0x100, pes(h264.to_annexb(_au(i == 0, 100)), t))
    got = demux(data)
    assert [u[1] for u in got.video] == [1000, 4000, 7000, 10000, 13000, 16000, 19000]
    assert got.stats["timestamp_jumps"] == 2


def test_endless_pes_is_bounded() -> None:
    mux = Mux()
    limits = Limits(max_pes_size=8192, max_buffered=8192)
    d = TsDemuxer(limits)
    d.feed(head(mux) + mux.packet(0x100, pes(b"\x00\x00\x01\x09\xf0" + bytes(150), 0), start=True))
    filler = b"".join(mux.packet(0x100, bytes(184)) for _ in range(100))
    for _ in range(20):
        assert d.feed(filler) == []
        assert d.buffered <= limits.max_buffered + 2 * 1024
    assert d.stats()["oversized_pes"] == 1  # dropped once, the rest waits for a new start


def test_floods_of_tiny_units_are_dropped() -> None:
    """A PES of thousands of 1-byte NAL units or empty ADTS frames would turn a few KiB
    into thousands of objects: over ``max_units`` the PES is dropped."""
    mux = Mux()
    data = head(mux)
    data += mux.pes(0x100, pes(b"\x00\x00\x01\x41" * 40, 3000))
    data += mux.pes(0x100, pes(b"\x00\x00\x01\x41" * 41, 6000))
    data += mux.pes(0x101, pes(adts(b"\x01") * 40, 3000, stream_id=0xC0, sized=True))
    data += mux.pes(0x101, pes(adts(b"\x02") * 41 + adts(b""), 9000, stream_id=0xC0, sized=True))
    got = demux(data, limits=Limits(max_units=40))
    assert [len(u[3]) for u in got.video] == [40]
    assert [f for _, f in got.audio] == [b"\x01"] * 40 + [b"\x02"] * 40
    assert got.stats["malformed"] == 1 and got.stats["adts_errors"] == 1


# --------------------------------------------------------------------------- properties

TINY = Limits(max_pes_size=1024, max_buffered=1500, max_pids=2, max_units=8,
              max_section_size=200, max_sync_search=600)  # fmt: skip


def _bound(limits: Limits) -> int:
    """What ``buffered`` may reach between feeds: an unlocked tail, the PES data, a
    section per PSI PID and an ADTS frame per stream."""
    return (
        3 * PACKET_SIZE
        + limits.max_buffered
        + 2 * (limits.max_section_size + 184)
        + (limits.max_pids * 8191)
    )


def _check(events: list[Event], d: TsDemuxer, limits: Limits) -> None:
    assert d.buffered <= _bound(limits)
    for e in events:
        if isinstance(e, VideoAccessUnit):
            assert e.nal_units and all(isinstance(n, bytes) and n for n in e.nal_units)
        elif isinstance(e, AudioFrame):
            assert len(e.frame) <= 8191
        elif isinstance(e, TracksChanged):
            assert len(e.tracks) <= limits.max_pids


def _run_hostile(data: bytes, step: int, limits: Limits) -> None:
    d = TsDemuxer(limits)
    try:
        for i in range(0, len(data), step):
            _check(d.feed(data[i : i + step]), d, limits)
    except TsError as exc:
        _check(exc.events, d, limits)
        with pytest.raises(TsError):
            d.feed(b"\x47" * 188)
        return
    _check(d.flush(), d, limits)


@cache
def real_sample() -> bytes:
    """300 packets of ffmpeg's H.264 + AAC output (not a fixture: hypothesis would print
    it in full with a failing example)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _ffmpeg(Path(tmp) / "sample.ts", "-c:v", "libx264", "-c:a", "aac", seconds=2)
        return path.read_bytes()[: 300 * PACKET_SIZE]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=400),
            st.binary(min_size=187, max_size=187).map(lambda b: b"\x47" + b),
            st.binary(min_size=183, max_size=183).map(lambda b: b"\x47\x40\x00\x10" + b[1:]),
            st.binary(min_size=183, max_size=183).map(lambda b: b"\x47\x01\x00\x30" + b[1:]),
        ),
        max_size=30,
    ),
    st.integers(1, 2000),
    st.booleans(),
)
def test_arbitrary_bytes_only_raise_ts_error(parts: list[bytes], step: int, tiny: bool) -> None:
    _run_hostile(b"".join(parts), step, TINY if tiny else Limits())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_real_stream_with_flipped_bytes(data: st.DataObject) -> None:
    buf = bytearray(real_sample())
    for _ in range(data.draw(st.integers(1, 40))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    tiny = data.draw(st.booleans())
    _run_hostile(bytes(buf), data.draw(st.integers(1, 3000)), TINY if tiny else Limits())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 300 * PACKET_SIZE), max_size=40))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    sample = real_sample()
    whole = demux(sample, seed=None).events
    assert len(whole) > 20
    bounds = [0, *sorted(cuts), len(sample)]
    d = TsDemuxer()
    events: list[Event] = []
    for a, b in itertools.pairwise(bounds):
        events += d.feed(sample[a:b])
    assert events + d.flush() == whole
