"""Sources: ``onvifcam serve`` with no configuration file runs a demo test-pattern camera that
ffprobe/ffmpeg decode over RTSP, whose ONVIF profile (onvif-zeep-async) gives its real size
and whose snapshot is a real JPEG; a configuration file without ``[demo]`` (as every other
test uses) and ``--no-demo`` give no demo camera."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import av
import onvif
import pytest
from onvif import ONVIFCamera

from tests.helpers import (
    FFMPEG,
    FFPROBE,
    ROOT,
    SERVE_PORTS_ZERO,
    ServerProc,
    ffmpeg_push,
    ffmpeg_read,
    probe,
    running,
    stop_process,
    wait_online,
)

pytestmark = pytest.mark.interop

WSDL = f"{os.path.dirname(onvif.__file__)}/wsdl/"
PORT_FLAGS = SERVE_PORTS_ZERO


@dataclass
class Bare:
    """``onvifcam serve`` without ``--config``: only flags."""

    state: Path
    args: list[str] = field(default_factory=list)
    ports: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    log_path: Path = Path()

    def start(self) -> Bare:
        self.log_path = self.state.parent / "server.log"
        cmd = [sys.executable, "-m", "onvifcam", "serve", *PORT_FLAGS]
        cmd += ["--state-dir", str(self.state), "--log-level", "debug", *self.args]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=str(ROOT)
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:  # it exited: say why instead of failing on its exit status
                rc = self.proc.wait(15)
                raise AssertionError(f"server exited ({rc}) before ready:\n{self.log()[-3000:]}")
            if line.startswith("onvifcam ready"):
                self.ports = dict(t.split("=", 1) for t in line.split()[2:])
                return self
        self.stop()
        raise AssertionError(f"server did not become ready:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                assert self.proc.wait(15) == 0
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        assert "Traceback" not in self.log(), self.log()[-5000:]

    def rtsp(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.ports['rtsp_port']}/{path}"

    def cameras(self) -> dict[str, dict]:
        url = f"http://127.0.0.1:{self.ports['http_port']}/api/cameras"
        with urllib.request.urlopen(url, timeout=10) as r:
            return {c["name"]: c for c in json.loads(r.read())["cameras"]}


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Bare]:
    srv = Bare(tmp_path / "state").start()
    try:
        yield srv
    finally:
        srv.stop()


def _onvif_view(port: int, user: str, password: str) -> tuple[tuple[int, int], str]:
    """(width, height) of the first profile's video encoder and its snapshot URI."""

    async def run() -> tuple[tuple[int, int], str]:
        cam = ONVIFCamera("127.0.0.1", port, user, password, WSDL, no_cache=True)
        try:
            await cam.update_xaddrs()
            media = await cam.create_media_service()
            profiles = await media.GetProfiles()
            res = profiles[0].VideoEncoderConfiguration.Resolution
            uri = await media.GetSnapshotUri({"ProfileToken": profiles[0].token})
            return (int(res.Width), int(res.Height)), str(uri.Uri)
        finally:
            await cam.close()

    return asyncio.run(run())


def _get(url: str, user: str, password: str) -> tuple[str, bytes]:
    mgr = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    mgr.add_password(None, url, user, password)
    opener = urllib.request.build_opener(
        urllib.request.HTTPDigestAuthHandler(mgr), urllib.request.HTTPBasicAuthHandler(mgr)
    )
    with opener.open(url, timeout=15) as r:
        return r.headers.get("Content-Type", ""), r.read()


def test_serve_without_config_runs_a_demo_camera(bare: Bare) -> None:
    assert bare.ports["demo_path"] == "demo"
    url = bare.rtsp("demo")
    wait_online(url)
    streams = probe(url)
    assert [(s["codec_name"], s["width"], s["height"]) for s in streams] == [("h264", 640, 360)]
    # ffmpeg decodes it continuously (15 fps: far more than the idle keyframes, 1 per 2 s)
    r = ffmpeg_read(url, extra=["-t", "3"])
    assert r.returncode == 0, r.stderr
    assert r.video_frames >= 10, r
    assert "error" not in r.stderr.lower(), r.stderr

    cams = bare.cameras()
    assert list(cams) == ["demo"]
    size, snap_uri = _onvif_view(
        int(cams["demo"]["port"]), bare.ports["onvif_user"], bare.ports["onvif_password"]
    )
    assert size == (640, 360)
    ctype, data = _get(snap_uri, bare.ports["onvif_user"], bare.ports["onvif_password"])
    assert ctype == "image/jpeg" and data[:2] == b"\xff\xd8"
    with av.open(BytesIO(data)) as c:
        frame = next(c.decode(video=0))
    assert (frame.width, frame.height) == (640, 360)
    log = bare.log()
    assert f"demo: test pattern camera: {url}, ONVIF http://127.0.0.1:" in log


def test_snapshot_of_the_demo_works_with_nobody_reading(tmp_path: Path) -> None:
    srv = Bare(tmp_path / "state").start()
    try:
        cams = srv.cameras()
        size, snap_uri = _onvif_view(
            int(cams["demo"]["port"]), srv.ports["onvif_user"], srv.ports["onvif_password"]
        )
        ctype, data = _get(snap_uri, srv.ports["onvif_user"], srv.ports["onvif_password"])
        assert ctype == "image/jpeg" and data[:2] == b"\xff\xd8"
        assert size == (640, 360)
        assert "plays demo" not in srv.log()  # nobody read the stream
    finally:
        srv.stop()


def test_no_demo_flag(tmp_path: Path) -> None:
    srv = Bare(tmp_path / "state", ["--no-demo"]).start()
    try:
        assert "demo_path" not in srv.ports
        assert srv.cameras() == {}
    finally:
        srv.stop()


def test_a_config_file_runs_the_demo_only_when_it_asks(server: ServerProc) -> None:
    assert "demo_path" not in server.ports  # the shared server: a config without [demo]
    srv = ServerProc(
        config='[demo]\nenabled = true\nname = "Pattern"\npath = "test/pattern"\ntone = true\n'
    )
    srv = srv.start()
    try:
        assert srv.ports["demo_path"] == "test/pattern"
        streams = probe(srv.url("test/pattern"))
        assert [(s["codec_name"], s.get("width")) for s in streams] == [
            ("h264", 640),
            ("aac", None),
        ]
        url = f"http://127.0.0.1:{srv.ports['http_port']}/api/cameras"
        with urllib.request.urlopen(url, timeout=10) as r:
            names = [c["name"] for c in json.loads(r.read())["cameras"]]
        assert names == ["Pattern"]
    finally:
        srv.stop()


# --------------------------------------------------------------------------- placeholder

PLACEHOLDER_CONFIG = """
[[cameras]]
name = "Lobby"
path = "lobby"
width = 320
height = 240
offline = "placeholder"
"""


class ShowInfo:
    """An ffmpeg reader that logs every decoded frame (showinfo): size and pts_time."""

    def __init__(self, url: str, extra: list[str] | None = None) -> None:
        self.frames: list[tuple[str, float]] = []
        self.proc = subprocess.Popen(
            [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "info", "-rtsp_transport", "tcp",
             "-timeout", "8000000", *(extra or []), "-i", url, "-map", "0:v", "-vf", "showinfo",
             "-f", "null", "-"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"pts_time:\s*([-\d.]+).*? s:(\d+x\d+)", line)
            if m:
                self.frames.append((m.group(2), float(m.group(1))))

    def wait(self, pred: Callable[[list[tuple[str, float]]], bool], limit: float = 20) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if pred(list(self.frames)):
                return
            assert self.proc.poll() is None, "".join(self.lines[-20:])
            time.sleep(0.1)
        raise AssertionError(f"reader: {self.frames[-5:]}\n{''.join(self.lines[-20:])}")

    def stop(self) -> None:
        stop_process(self.proc)
        self._thread.join(5)


def test_a_reader_gets_the_placeholder_then_the_publisher_on_one_connection() -> None:
    srv = ServerProc(config=PLACEHOLDER_CONFIG).start()
    reader = None
    try:
        url = srv.url("lobby")
        reader = ShowInfo(url)  # connected before any publisher came
        reader.wait(lambda f: len(f) >= 5)
        assert {s for s, _t in reader.frames} == {"320x240"}
        pub = ffmpeg_push(url, frames=75, size="640x480", audio=False, gop=25)
        with running(pub):
            reader.wait(lambda f: sum(s == "640x480" for s, _t in f) >= 25)
            pub.wait(30)
        # the publisher left: the same reader gets the placeholder again, at the last size
        n = len(reader.frames)
        reader.wait(lambda f: len(f) >= n + 5)
        sizes = [s for s, _t in reader.frames]
        runs = [s for i, s in enumerate(sizes) if i == 0 or sizes[i - 1] != s]
        assert runs == ["320x240", "640x480"], runs  # placeholder, publisher, placeholder
        assert sizes.count("640x480") >= 60, sizes.count("640x480")
        # ffmpeg gives the very first RTP packet no pts (shown as 0): check from the second
        times = [t for _s, t in reader.frames][1:]
        bad = [(i, a, b) for i, (a, b) in enumerate(itertools.pairwise(times)) if b <= a]
        assert not bad, (bad, times[:10])
        assert reader.proc.poll() is None
        assert srv.log().count("plays lobby") == 1  # one connection throughout
    finally:
        if reader is not None:
            reader.stop()
        srv.stop()


def test_describe_before_any_publisher() -> None:
    srv = ServerProc(config=PLACEHOLDER_CONFIG.replace('offline = "placeholder"', "")).start()
    try:
        # the default ("none"): no placeholder, 404 as before
        r = subprocess.run(
            [FFPROBE, "-v", "error", "-rtsp_transport", "tcp", srv.url("lobby")],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert r.returncode != 0 and "404" in r.stderr
    finally:
        srv.stop()
    srv = ServerProc(config=PLACEHOLDER_CONFIG).start()
    try:
        streams = probe(srv.url("lobby"))
        assert [(s["codec_name"], s["width"], s["height"]) for s in streams] == [("h264", 320, 240)]
        url = f"http://127.0.0.1:{srv.ports['http_port']}/api/cameras"
        with urllib.request.urlopen(url, timeout=10) as resp:
            cams = json.loads(resp.read())["cameras"]
        assert [c["online"] for c in cams] == [False]  # a placeholder is not a publisher
    finally:
        srv.stop()


# --------------------------------------------------------------------------- file loop


def _clip(path: Path, codec: str) -> None:
    audio = codec == "libx264"
    cmd = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"]  # fmt: skip
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-t", "2", "-c:v", codec, "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"]
    if codec == "libx265":
        cmd += ["-x265-params", "log-level=error"]
    if audio:
        cmd += ["-c:a", "aac", "-shortest"]
    subprocess.run([*cmd, str(path)], check=True, timeout=60)


@pytest.mark.parametrize(
    ("name", "codec", "probe_codecs"),
    [
        ("clip.mp4", "libx264", ["h264", "aac"]),
        ("clip.ts", "libx264", ["h264", "aac"]),
        ("clip.mkv", "libx265", ["hevc"]),
    ],
)
def test_a_file_loops_with_continuous_timestamps(
    tmp_path: Path, name: str, codec: str, probe_codecs: list[str]
) -> None:
    clip = tmp_path / name
    _clip(clip, codec)
    config = f'[[cameras]]\nname = "Clip"\npath = "clip"\nsource = "file://{clip}"\n'
    srv = ServerProc(config=config).start()
    try:
        url = srv.url("clip")
        assert [s["codec_name"] for s in probe(url)] == probe_codecs
        reader = ShowInfo(url, ["-t", "7"])  # three loop points of a 2 s clip
        reader.proc.wait(60)
        reader.stop()
        frames = reader.frames
        times = [t for _s, t in frames][1:]  # ffmpeg: no pts on the very first packet
        bad = [(a, b) for a, b in itertools.pairwise(times) if b <= a]
        assert not bad, bad
        assert times[-1] >= 6.5 and len(frames) >= 150, (times[-1], len(frames))
        assert {s for s, _t in frames} == {"320x240"}
        assert "error" not in "".join(reader.lines).lower(), "".join(reader.lines)[-2000:]
        assert "file source: file://" in srv.log()
    finally:
        srv.stop()


def test_a_missing_file_is_one_clear_line_and_the_camera_stays(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    config = f'[[cameras]]\nname = "Clip"\npath = "clip"\nsource = "file://{missing}"\n'
    srv = ServerProc(config=config).start()
    try:
        log = srv.log()
        assert f"cameras[0] source (file://{missing}): cannot open {missing}" in log
        url = f"http://127.0.0.1:{srv.ports['http_port']}/api/cameras"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert [c["name"] for c in json.loads(resp.read())["cameras"]] == ["Clip"]
    finally:
        srv.stop()


def test_a_fleet_shares_one_demux_of_its_file(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    _clip(clip, "libx264")
    config = f'[[fleets]]\nname = "lot"\ncount = 3\nsource = "file://{clip}"\n'
    srv = ServerProc(config=config).start()
    try:
        log = srv.log()
        assert f"file source: file://{clip} plays in a loop on lot/1, lot/2, lot/3" in log
        assert log.count("file source:") == 1  # one demux for the three cameras
        url = f"http://127.0.0.1:{srv.ports['http_port']}/api/cameras"
        with urllib.request.urlopen(url, timeout=10) as resp:
            cams = json.loads(resp.read())["cameras"]
        assert sorted(c["name"] for c in cams) == ["lot-1", "lot-2", "lot-3"]
        assert len({c["mac"] for c in cams}) == 3, cams
        for n in (1, 3):
            r = ffmpeg_read(srv.url(f"lot/{n}"), extra=["-t", "3"])
            assert r.returncode == 0 and r.video_frames >= 50, r
    finally:
        srv.stop()


def test_after_an_av_publisher_the_placeholder_keeps_its_layout() -> None:
    srv = ServerProc(config=PLACEHOLDER_CONFIG).start()
    reader = None
    try:
        url = srv.url("lobby")
        first = ffmpeg_push(url, frames=50, size="640x480", audio=True, gop=25)
        with running(first):
            first.wait(30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the placeholder comes back, with silent AAC
            streams = [(s["codec_name"], s.get("width")) for s in probe(url)]
            if streams == [("h264", 640), ("aac", None)]:
                break
            time.sleep(0.3)
        assert streams == [("h264", 640), ("aac", None)], streams
        plays = srv.log().count("plays lobby")  # ffprobe played it too
        reader = ShowInfo(url)
        reader.wait(lambda f: len(f) >= 5)
        second = ffmpeg_push(url, frames=75, size="480x360", audio=True, gop=25)
        with running(second):
            reader.wait(lambda f: sum(s == "480x360" for s, _t in f) >= 25)
        sizes = [s for s, _t in reader.frames]
        runs = [s for i, s in enumerate(sizes) if i == 0 or sizes[i - 1] != s]
        assert runs[:2] == ["640x480", "480x360"], runs
        assert reader.proc.poll() is None
        log = srv.log()
        assert "media format changed" not in log
        assert log.count("plays lobby") == plays + 1  # one connection throughout
    finally:
        if reader is not None:
            reader.stop()
        srv.stop()
