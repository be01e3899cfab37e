"""File loop: ClipReader turns MP4/MKV/TS clips into access units whose timestamps keep
rising across loop points (no decoding), with the tracks' specs; bad sources are clear."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pytest

from onvifcam.media.packetizer import AacSpec, LengthPrefixed, VideoSpec
from onvifcam.sources.fileloop import ClipError, ClipReader, path_of


def _clip(path: Path, vcodec: str = "libx264", bframes: int = 0) -> Path:
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-t", "1", "-c:v", vcodec, "-g", "25", "-bf", str(bframes), "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-shortest", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=60)
    return path


@pytest.mark.parametrize(("name", "bframes"), [("a.mp4", 2), ("a.mkv", 0), ("a.ts", 0)])
def test_three_loops_keep_timestamps_rising(tmp_path: Path, name: str, bframes: int) -> None:
    r = ClipReader(str(_clip(tmp_path / name, bframes=bframes)))
    specs = r.specs()
    assert isinstance(specs[0], VideoSpec) and specs[0].codec == "H264"
    assert (specs[0].width, specs[0].height) == (160, 96) and len(specs[0].parameter_sets) == 2
    assert isinstance(specs[1], AacSpec) and specs[1].sample_rate == 48000
    units = []
    while r.loops < 3:
        units += r.read()
    video = [u for u in units if u.track == 0]
    audio = [u for u in units if u.track == 1]
    assert all(b.dts > a.dts for a, b in itertools.pairwise(video))
    assert all(b.pts > a.pts for a, b in itertools.pairwise(audio))
    assert all(u.pts >= u.dts for u in video)
    # display order: every pass's pictures come after the previous pass's
    assert sorted(u.pts for u in video) == sorted(set(u.pts for u in video))
    assert sum(u.keyframe for u in video) >= 3
    assert isinstance(video[0].data, LengthPrefixed) == (not name.endswith(".ts"))
    assert all(isinstance(u.data, list) and u.data for u in audio)
    r.close()


def test_bad_sources(tmp_path: Path) -> None:
    assert path_of("file:///tmp/a%20b.mp4") == "/tmp/a b.mp4"
    with pytest.raises(ClipError, match="not a file:// URL"):
        path_of("rtsp://x/y")
    with pytest.raises(ClipError, match="cannot open"):
        ClipReader(str(tmp_path / "missing.mp4"))
    wav = tmp_path / "a.wav"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine", "-t", "0.2", str(wav)],
        check=True,
        timeout=30,
    )
    with pytest.raises(ClipError, match=r"no H\.264 or H\.265 video stream"):
        ClipReader(str(wav))
