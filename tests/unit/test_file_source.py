"""File loop: ClipReader turns MP4/MKV/TS clips into access units whose timestamps keep
rising across loop points (no decoding), with the tracks' specs; bad sources are clear."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from onvifcam.config import Config, ConfigError, load
from onvifcam.media.packetizer import AacSpec, LengthPrefixed, VideoSpec
from onvifcam.media.stream import Stream
from onvifcam.sources.file import ClipError, ClipReader, FileLoopSource, TurnBudget, path_of


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


def _load(tmp_path: Path, text: str) -> Config:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return load(p)


def test_fleets_expand_into_cameras_with_identity_from_name_and_n(tmp_path: Path) -> None:
    text = """
[[cameras]]
name = "Door"
path = "door"
[[fleets]]
name = "lobby"
count = 3
source = "file:///clips/a.mp4"
offline = "placeholder"
width = 640
height = 360
"""
    cfg = _load(tmp_path, text)
    cams = cfg.cameras
    assert [(c.name, c.path) for c in cams] == [
        ("Door", "door"),
        ("lobby-1", "lobby/1"),
        ("lobby-2", "lobby/2"),
        ("lobby-3", "lobby/3"),
    ]
    fleet = cams[1:]
    assert all(c.source == "file:///clips/a.mp4" and c.offline == "placeholder" for c in fleet)
    assert all((c.width, c.height) == (640, 360) for c in fleet)
    assert len({c.mac for c in fleet}) == 3 and all(c.mac.startswith("02:") for c in fleet)
    assert len({c.serial for c in fleet}) == 3
    # stable: the same fleet name and n give the same identity whatever else changes
    again = _load(tmp_path, "[[fleets]]" + text.split("[[fleets]]")[1].replace("3", "5"))
    assert [c.mac for c in again.cameras[:3]] == [c.mac for c in fleet]  # no Door, 5 cameras
    custom = _load(
        tmp_path,
        '[[fleets]]\nname = "f"\ncount = 2\nstart = 7\ncamera_name = "Cam {n:02d}"\n'
        'path = "{fleet}-{n}"\n',
    )
    assert [(c.name, c.path) for c in custom.cameras] == [("Cam 07", "f-7"), ("Cam 08", "f-8")]


def test_fleet_forward_urls_are_templated_per_camera(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        '[[fleets]]\nname = "lot"\ncount = 2\nstart = 9\nforward = [\n'
        '  { url = "rtsp://u:p@h:8554/m/{fleet}/{n:03}", retry_limit = 3 },\n'
        '  { url = "srt://h:9000?streamid=publish:{fleet}-{n}", disabled = true },\n]\n',
    )
    urls = [[f.url for f in c.forward] for c in cfg.cameras]
    assert urls == [
        ["rtsp://u:p@h:8554/m/lot/009", "srt://h:9000?streamid=publish:lot-9"],
        ["rtsp://u:p@h:8554/m/lot/010", "srt://h:9000?streamid=publish:lot-10"],
    ]
    assert all(c.forward[0].retry_limit == 3 and c.forward[1].disabled for c in cfg.cameras)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[fleets]]\nname = ""\ncount = 1\n', r"fleets\[0\]\.name: '' must be"),
        ('[[fleets]]\nname = "a b"\ncount = 1\n', r"fleets\[0\]\.name: 'a b' must be"),
        ('[[fleets]]\nname = "a"\ncount = 0\n', r"fleets\[0\]\.count must be 1\.\.1024"),
        ('[[fleets]]\nname = "a"\ncount = 2\npath = "x"\n', r"fleets\[0\]\.path must contain"),
        ('[[fleets]]\nname = "a"\ncount = 2\npath = "{m}/{n}"\n', r"fleets\[0\]: bad template"),
        (
            '[[fleets]]\nname = "a"\ncount = 2\nsource = "rtsp://h/c{n:zz}"\n',
            r"fleets\[0\]: bad template .*\{n:03\}",
        ),
        (
            '[[fleets]]\nname = "a"\ncount = 2\nforward = [{ url = "rtsp://h/{n:zz}" }]\n',
            r"fleets\[0\]: bad template",
        ),
        (
            '[[fleets]]\nname = "a"\ncount = 1\n[[fleets]]\nname = "a"\ncount = 1\n',
            r"fleets\[1\]\.name: another fleet is named 'a'",
        ),
        (
            '[[cameras]]\nname = "a-1"\npath = "z"\n[[fleets]]\nname = "a"\ncount = 1\n',
            r"duplicate camera name 'a-1'",
        ),
        ('[[fleets]]\nname = "a"\ncount = 1\nsource = "http://x"\n', r"\.source: 'http://x'"),
        (
            '[[fleets]]\nname = "a"\ncount = 2\nforward = [{ url = "rtsp://h/same" }]\n',
            r"fleets\[0\]\.forward\[0\]\.url must contain \{n\}",
        ),
        (
            '[[fleets]]\nname = "a"\ncount = 2\nforward = [{ url = "ftp://h/{n}" }]\n',
            r"fleets\[0\]\.forward\[0\] \(n = 2\)\.url: 'ftp://h/2' must be rtsp://",
        ),
        (
            '[sources]\nmax_forwards = 3\n[[fleets]]\nname = "a"\ncount = 4\n'
            'forward = [{ url = "rtsp://h/{n}" }]\n',
            r"4 forward entries .* exceed \[sources\] max_forwards = 3",
        ),
    ],
)
def test_fleet_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


def test_a_damaged_file_is_a_clip_error(tmp_path: Path) -> None:
    clip = _clip(tmp_path / "a.mp4")
    data = bytearray(clip.read_bytes())
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data[:200]))  # the header and nothing else
    with pytest.raises(ClipError, match=r"bad\.mp4"):
        ClipReader(str(bad))
    junk = tmp_path / "junk.ts"
    junk.write_bytes(b"\x47" + bytes(range(256)) * 50)
    with pytest.raises(ClipError):
        ClipReader(str(junk))


class _TurnStream(Stream):
    """A real Stream that notes in which turn of the event loop it was handed each packet
    (and each held access unit's count); each delivery advances ``clock`` by 10 us."""

    turn = [0]
    clock = [0.0]

    def __init__(self, path: str, log: list[int]) -> None:
        super().__init__(path)
        self._log = log
        self.turns: list[int] = []
        self.packets: list[bytes] = []

    def on_rtp(self, index: int, packet: bytes) -> None:
        self.clock[0] += 1e-5
        self._log.append(self.turn[0])
        self.turns.append(self.turn[0])
        self.packets.append(packet[:2] + packet[12:])  # all but seq, ts and SSRC
        super().on_rtp(index, packet)

    def note_input(self, nbytes: int, frames: int) -> None:
        self.clock[0] += 1e-5
        self._log.append(self.turn[0])
        self.turns.append(self.turn[0])
        super().note_input(nbytes, frames)


def test_a_fleet_file_loop_spreads_its_keyframes_and_catch_up_over_turns(tmp_path: Path) -> None:
    """200 cameras sharing one clip, nobody reading: every keyframe goes to every stream,
    but never more than the turn's time budget (1 ms; the test's clock counts 10 us per
    delivery, so 100 deliveries, plus one slice) in one loop turn; after the loop was held
    for 0.5 s the catch-up is spread the same way. (Before: a keyframe went to all 200
    streams in one callback, and the catch-up sent everything due at once.)"""
    clip = _clip(tmp_path / "a.mp4")
    cameras, budget = 200, 100

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        turn = _TurnStream.turn
        turn[0] = 0

        def tick() -> None:
            turn[0] += 1
            if not stopped:
                loop.call_soon(tick)

        stopped = False
        tick()
        log: list[int] = []
        streams = [_TurnStream(f"f/{i}", log) for i in range(cameras)]
        with ThreadPoolExecutor(1) as pool:
            clock = _TurnStream.clock
            turns = TurnBudget(budget * 1e-5, clock=lambda: clock[0])
            src = FileLoopSource(streams, pool, str(clip), budget=turns)  # type: ignore[arg-type]
            await src.start()
            try:
                loop.call_later(0.3, time.sleep, 0.5)  # the loop held: the source falls behind
                deadline = loop.time() + 60
                while sum(st.stats.keyframes_in for st in streams[-1:]) < 3:
                    assert loop.time() < deadline, "the last stream never got 3 keyframes"
                    await asyncio.sleep(0.05)
            finally:
                await src.stop()
                stopped = True
        per_turn = max(Counter(log).values())
        # one slice (256 deliveries, at least one stream's share) over the budget at most
        share = max(max(Counter(st.turns).values()) for st in streams)
        assert per_turn <= budget + max(256, share), per_turn
        assert src.stats()["turns_yielded"] > 0
        # every stream got the same packets, in the same order
        first = streams[0].packets
        assert all(st.packets[: len(first)] == first[: len(st.packets)] for st in streams)
        assert min(len(st.packets) for st in streams) > 0

    asyncio.run(scenario())
