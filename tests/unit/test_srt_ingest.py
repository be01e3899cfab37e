"""The SRT MPEG-TS ingest without sockets: real ffmpeg transport streams in 1316-byte
payloads -> TsIngest -> a real Stream."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from onvifcam.media.stream import StreamBusy, StreamRegistry
from onvifcam.srt.ingest import IngestError, TsIngest
from tests.helpers import FFMPEG


class Pub:
    description = "srt://192.0.2.1:1"

    def __init__(self) -> None:
        self.kicked = ""

    def kick(self, reason: str) -> None:
        self.kicked = reason


def _ffmpeg(path: Path, *args: str, seconds: float = 2, size: str = "320x240") -> Path:
    if shutil.which(FFMPEG) is None:
        pytest.fail("ffmpeg is needed to write real MPEG-TS", pytrace=False)
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-t", str(seconds), "-pix_fmt", "yuv420p", "-g", "25",
           *args, "-f", "mpegts", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=120)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("srtts")
    return {
        "av": _ffmpeg(base / "av.ts", "-c:v", "libx264", "-c:a", "aac"),
        "h265": _ffmpeg(
            base / "h265.ts", "-c:v", "libx265", "-x265-params", "log-level=error", "-an"
        ),
        "audio": _ffmpeg(base / "audio.ts", "-vn", "-c:a", "aac"),
        "mp2": _ffmpeg(base / "mp2.ts", "-c:v", "libx264", "-c:a", "mp2"),
        "small": _ffmpeg(base / "small.ts", "-c:v", "libx264", "-an", seconds=1, size="160x120"),
    }


def registry() -> StreamRegistry:
    return StreamRegistry(gop_cache_bytes=16 << 20, media_timeout=15.0, max_streams=8)


def feed(ingest: TsIngest, data: bytes, size: int = 1316) -> None:
    for i in range(0, len(data), size * 10):  # ten payloads per delivery, like a 10 ms tick
        chunk = data[i : i + size * 10]
        ingest.feed([chunk[j : j + size] for j in range(0, len(chunk), size)])


def test_h264_and_aac_are_published_and_packetised(files: dict[str, Path]) -> None:
    reg, pub = registry(), Pub()
    ingest = TsIngest("cam1", reg, pub, lazy=False)
    feed(ingest, files["av"].read_bytes())
    stream = reg.get("cam1")
    assert stream is not None and stream.publisher is pub
    assert [(t.kind, t.codec) for t in stream.tracks] == [
        ("video", "H264"),
        ("audio", "MPEG4-GENERIC"),
    ]
    assert stream.tracks[0].packets > 50 and stream.tracks[1].packets > 50
    ingest.close("done")  # the last video PES ends with the stream
    assert ingest.stats.video_aus == 50 and ingest.stats.republished == 0
    assert stream.publisher is None
    assert "50 video / " in ingest.summary()


def test_h265_video_only(files: dict[str, Path]) -> None:
    reg = registry()
    ingest = TsIngest("cam2", reg, Pub(), lazy=False)
    feed(ingest, files["h265"].read_bytes())
    stream = reg.get("cam2")
    assert stream is not None and [t.codec for t in stream.tracks] == ["H265"]
    assert getattr(stream.video_info, "width", None) == 320


def test_audio_only(files: dict[str, Path]) -> None:
    reg = registry()
    ingest = TsIngest("radio", reg, Pub(), lazy=False)
    feed(ingest, files["audio"].read_bytes())
    stream = reg.get("radio")
    assert stream is not None and [t.kind for t in stream.tracks] == ["audio"]
    assert stream.tracks[0].packets > 50


def test_unsupported_audio_is_named_once_and_video_goes_on(
    files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    reg = registry()
    ingest = TsIngest("cam3", reg, Pub(), lazy=False)
    feed(ingest, files["mp2"].read_bytes())
    stream = reg.get("cam3")
    assert stream is not None and [t.codec for t in stream.tracks] == ["H264"]
    assert ingest.stats.ignored_tracks == ["audio MPEG-1 audio (pid 257)"]
    assert caplog.text.count("ignoring audio MPEG-1 audio") == 1


def test_lazy_packetising_sends_keyframes_only_without_readers(files: dict[str, Path]) -> None:
    reg = registry()
    ingest = TsIngest("cam4", reg, Pub(), lazy=True)
    feed(ingest, files["av"].read_bytes())
    stream = reg.get("cam4")
    assert stream is not None
    assert stream.stats.frames_in >= 49  # held frames are counted...
    eager = TsIngest("cam5", reg, Pub(), lazy=False)
    feed(eager, files["av"].read_bytes())
    busy = reg.get("cam5")
    assert busy is not None
    assert stream.tracks[0].packets < busy.tracks[0].packets  # ...but not packetised


def test_a_new_resolution_re_announces(files: dict[str, Path]) -> None:
    reg = registry()
    ingest = TsIngest("cam6", reg, Pub(), lazy=False)
    feed(ingest, files["av"].read_bytes())
    stream = reg.get("cam6")
    assert stream is not None
    feed(ingest, files["small"].read_bytes())  # an encoder restart at another size
    assert ingest.stats.republished >= 1
    assert getattr(stream.video_info, "width", None) == 160
    assert stream.publisher is not None


def test_not_mpegts_is_an_ingest_error() -> None:
    ingest = TsIngest("junk", registry(), Pub())
    with pytest.raises(IngestError, match="not MPEG-TS"):
        for _ in range(100):
            ingest.feed([b"\x00" * 1316])


def test_a_path_published_elsewhere_is_busy(files: dict[str, Path]) -> None:
    reg = registry()
    first = TsIngest("cam7", reg, Pub(), lazy=False)
    feed(first, files["av"].read_bytes()[: 188 * 2000])
    with pytest.raises(StreamBusy, match="already has a publisher"):
        TsIngest("cam7", reg, Pub())
    TsIngest("cam7", reg, Pub(), replace=True)  # on_conflict = "replace" may take over


def test_ingest_drops_reach_the_streams_statistics(files: dict[str, Path]) -> None:
    from types import SimpleNamespace

    from onvifcam.srt.receiver import ReceiverStats
    from onvifcam.srt.server import SrtPublisher

    data = files["mp2"].read_bytes()
    cut = len(data) // 2 // 188 * 188
    damaged = data[:cut] + data[cut + 5 * 188 :]  # five TS packets lost in the middle
    reg = registry()
    receiver = SimpleNamespace(stats=ReceiverStats(dropped=4))
    conn = SimpleNamespace(receiver=receiver, description="srt://192.0.2.1:1")
    pub = SrtPublisher(server=None, conn=conn)  # type: ignore[arg-type]
    ingest = TsIngest("cam9", reg, pub, lazy=False)
    pub.sink = ingest
    feed(ingest, damaged)
    drops = pub.ingest_drops()
    assert drops["too_late"] == 4  # SRT packets given up at their delivery time
    assert drops["ts_continuity"] >= 1  # the TS continuity counters show the gap
    assert drops["unsupported_codec"] > 10  # the MPEG-1 audio PES, not carried
    assert drops["before_publish"] == 0 and drops["malformed"] >= 0
    stream = reg.get("cam9")
    assert stream is not None
    st = stream.stats_dict()["drops"]
    assert st["too_late"] == 4 and st["ts_continuity"] == drops["ts_continuity"]
    ingest.close("done")  # unpublish: the stream keeps what the publisher reported
    assert stream.stats_dict()["drops"]["unsupported_codec"] == drops["unsupported_codec"]
