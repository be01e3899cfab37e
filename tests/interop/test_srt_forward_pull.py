"""SRT forwarding and pulling against real peers.

Forward: one onvifcam process plays a clip (H.264 with B-frames + AAC) on a camera and
forwards it over SRT (MPEG-TS in 1316-byte payloads) to srt-live-transmit listening (what
arrives is written to a file) and, encrypted, to a second onvifcam's [srt] listener;
ffprobe decodes both. A wrong passphrase ends in the SRT reject reason as the last error.

Pull: srt-live-transmit listens and sends a TS (fed by ffmpeg -re); a camera with
``source = "srt://..."`` pulls it and ffprobe reads the camera over RTSP.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import FFMPEG, FFPROBE, ServerProc, av_clip, stop_process

pytestmark = pytest.mark.interop

SLT = shutil.which("srt-live-transmit") or ""
PASS = "forward-secret-1"


def udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s 320x240 H.264 (with B-frames) + AAC clip."""
    return av_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.fixture(scope="module")
def slt_listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """srt-live-transmit listening on a loopback port, writing what arrives to a file."""
    if not SLT:
        pytest.skip("srt-live-transmit (Debian srt-tools) is not installed")
    port = udp_port()
    out = tmp_path_factory.mktemp("slt") / "got.ts"
    f = out.open("wb")
    proc = subprocess.Popen(
        [SLT, "-q", f"srt://127.0.0.1:{port}?mode=listener", "file://con"],
        stdout=f,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield port, out
    stop_process(proc)
    f.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[ServerProc]:
    srv = ServerProc(config=f'[srt]\nport = 0\npassphrase = "{PASS}"\n').start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sender(
    clip: Path, receiver: ServerProc, slt_listener: tuple[int, Path]
) -> Iterator[ServerProc]:
    srt_port = receiver.ports["srt_port"]
    slt_port, _out = slt_listener
    bad = f"srt://127.0.0.1:{srt_port}?streamid=publish:fwd/bad&passphrase=wrong-secret"
    srv = ServerProc(
        config=f"""
[[cameras]]
name = "cam"
path = "cam"
source = "file://{clip}"
forward = [
  {{ url = "srt://127.0.0.1:{slt_port}?latency=200" }},
  {{ url = "srt://127.0.0.1:{srt_port}?streamid=publish:fwd/srt&passphrase={PASS}" }},
  {{ url = "{bad}", retry_timeout = 0.2, retry_limit = 2 }},
]
"""
    ).start()
    yield srv
    srv.stop()


def probe(target: str, *args: str, tries: int = 40) -> list[str]:
    """codec_type/codec_name/size of each stream ffprobe finds (retried)."""
    last = ""
    for _ in range(tries):
        r = subprocess.run(
            [
                FFPROBE, "-v", "error", *args, "-show_entries",
                "stream=codec_name,codec_type,width,height", "-of", "csv=p=0", target,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )  # fmt: skip
        if r.returncode == 0 and "video" in r.stdout:
            return sorted(line.strip() for line in r.stdout.splitlines() if line.strip())
        last = r.stderr
        time.sleep(0.25)
    raise AssertionError(f"ffprobe never found the stream at {target}: {last[-500:]}")


def count_frames(path: Path) -> int:
    r = subprocess.run(
        [
            FFPROBE, "-v", "error", "-count_frames", "-select_streams", "v:0",
            "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    lines = [line for line in r.stdout.split() if line.strip().isdigit()]
    assert lines, (r.stdout, r.stderr)
    return int(lines[0])


def test_forward_to_srt_live_transmit(sender: ServerProc, slt_listener: tuple[int, Path]) -> None:
    _port, out = slt_listener
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 200_000):
        time.sleep(0.2)
    streams = probe(str(out))
    assert any(s.startswith("h264,video,320,240") for s in streams), streams
    assert any(s.startswith("aac,audio") for s in streams), streams
    assert count_frames(out) >= 25


def test_forward_to_onvifcam_srt_listener(sender: ServerProc, receiver: ServerProc) -> None:
    streams = probe(receiver.url("fwd/srt"), "-rtsp_transport", "tcp", "-rw_timeout", "4000000")
    assert any(s.startswith("h264,video,320,240") for s in streams), streams
    assert any(s.startswith("aac,audio") for s in streams), streams


def test_wrong_passphrase_gives_error_with_the_reject_reason(sender: ServerProc) -> None:
    log = sender.wait_log("giving up after 2 attempts")
    assert re.search(
        r"forward cam\[2\]: the peer refused the connection: BADSECRET \(10\), wrong passphrase; "
        r"giving up after 2 attempts in a row \(retry_limit\)",
        log,
    ), log[-3000:]
    assert "wrong-secret" not in log  # the passphrase is redacted


@pytest.fixture(scope="module")
def slt_sender(clip: Path) -> Iterator[int]:
    """srt-live-transmit listening on a loopback port and sending the clip as MPEG-TS in
    real time (ffmpeg -re, looped) to whoever calls."""
    if not SLT:
        pytest.skip("srt-live-transmit (Debian srt-tools) is not installed")
    port = udp_port()
    ff = subprocess.Popen(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
            "-i", str(clip), "-c", "copy", "-f", "mpegts", "-",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    slt = subprocess.Popen(
        [SLT, "-q", "file://con", f"srt://127.0.0.1:{port}?mode=listener"],
        stdin=ff.stdout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert ff.stdout is not None
    ff.stdout.close()
    yield port
    stop_process(slt)  # type: ignore[arg-type]
    stop_process(ff)  # type: ignore[arg-type]


def test_pull_from_srt_live_transmit(slt_sender: int) -> None:
    srv = ServerProc(
        config=f"""
[[cameras]]
name = "pulled"
path = "pulled"
source = "srt://127.0.0.1:{slt_sender}?streamid=read:x&latency=200"
"""
    ).start()
    try:
        streams = probe(srv.url("pulled"), "-rtsp_transport", "tcp", "-rw_timeout", "4000000")
        assert any(s.startswith("h264,video,320,240") for s in streams), streams
        assert any(s.startswith("aac,audio") for s in streams), streams
        assert "pull pulled: playing srt://127.0.0.1" in srv.log()
    finally:
        srv.stop()
