"""Sources: ``onvifcam serve`` with no configuration file runs a demo test-pattern camera that
ffprobe/ffmpeg decode over RTSP, whose ONVIF profile (onvif-zeep-async) gives its real size
and whose snapshot is a real JPEG; a configuration file without ``[demo]`` (as every other
test uses) and ``--no-demo`` give no demo camera."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import av
import onvif
import pytest
from onvif import ONVIFCamera

from tests.helpers import ROOT, ServerProc, ffmpeg_read, probe, wait_online

pytestmark = pytest.mark.interop

WSDL = f"{os.path.dirname(onvif.__file__)}/wsdl/"
PORT_FLAGS = [
    "--host", "127.0.0.1", "--rtsp-port", "0", "--rtmp-port", "0", "--rtmps-port", "0",
    "--http-port", "0", "--rtp-port", "0", "--onvif-ports", "0", "--discovery-port", "0",
]  # fmt: skip


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
            if not line:
                break
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


def test_a_config_file_runs_the_demo_only_when_it_asks() -> None:
    srv = ServerProc().start()
    try:
        assert "demo_path" not in srv.ports
    finally:
        srv.stop()
    srv = ServerProc(config='[demo]\nenabled = true\nname = "Pattern"\npath = "test/pattern"\n')
    srv = srv.start()
    try:
        assert srv.ports["demo_path"] == "test/pattern"
        streams = probe(srv.url("test/pattern"))
        assert [(s["codec_name"], s["width"]) for s in streams] == [("h264", 640)]
        url = f"http://127.0.0.1:{srv.ports['http_port']}/api/cameras"
        with urllib.request.urlopen(url, timeout=10) as r:
            names = [c["name"] for c in json.loads(r.read())["cameras"]]
        assert names == ["Pattern"]
    finally:
        srv.stop()
