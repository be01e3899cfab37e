"""Forwarding against real peers: one onvifcam process plays a clip on a camera and forwards
it to a second onvifcam process over RTSP (ANNOUNCE/RECORD) and over RTMP, and to nginx-rtmp;
ffprobe decodes what each receiver got. A 2-camera fleet forwards each camera to its own
templated URL. A forward to a closed port with ``retry_limit`` ends in status error. One
sender, one receiver and one nginx serve the module."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import FFPROBE, ServerProc, av_clip, free_port, stop_process

pytestmark = pytest.mark.interop

NGINX = "/usr/sbin/nginx"
RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s 320x240 H.264 (with B-frames) + AAC clip the sender plays in a loop."""
    return av_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """nginx with the RTMP module on a free loopback port (application ``live``)."""
    if not (Path(NGINX).exists() and Path(RTMP_MODULE).exists()):
        pytest.skip("nginx-light and libnginx-mod-rtmp are not installed")
    d = tmp_path_factory.mktemp("nginx")
    port = free_port()
    (d / "logs").mkdir()
    (d / "nginx.conf").write_text(
        f"load_module {RTMP_MODULE};\n"
        "daemon off;\nmaster_process off;\nworker_processes 1;\n"
        f"pid {d}/nginx.pid;\nerror_log {d}/logs/error.log info;\n"
        "events { worker_connections 64; }\n"
        f"rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n"
        "  application live { live on; record off; } } }\n"
    )
    proc = subprocess.Popen(
        [NGINX, "-p", str(d), "-e", str(d / "logs/error.log"), "-c", str(d / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"nginx did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.05)
    yield port
    stop_process(proc)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def receiver() -> Iterator[ServerProc]:
    srv = ServerProc().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sender(clip: Path, receiver: ServerProc, nginx: int) -> Iterator[ServerProc]:
    rtsp = f"rtsp://127.0.0.1:{receiver.rtsp_port}/fwd/rtsp"
    rtmp = f"rtmp://127.0.0.1:{receiver.ports['rtmp_port']}/fwd/rtmp"
    closed = f"rtsp://127.0.0.1:{free_port()}/nobody"
    srv = ServerProc(
        config=f"""
[[cameras]]
name = "cam"
path = "cam"
source = "file://{clip}"
forward = [
  {{ url = "{rtsp}" }},
  {{ url = "{rtmp}" }},
  {{ url = "rtmp://127.0.0.1:{nginx}/live/cam" }},
  {{ url = "{closed}", retry_timeout = 0.2, retry_limit = 2 }},
  {{ url = "rtsp://127.0.0.1:1/off", disabled = true }},
]

[[fleets]]
name = "lot"
count = 2
source = "file://{clip}"
forward = [{{ url = "rtsp://127.0.0.1:{receiver.rtsp_port}/mirror/{{fleet}}/{{n:02}}" }}]
"""
    ).start()
    yield srv
    srv.stop()


def ffprobe_streams(url: str, tries: int = 40) -> list[str]:
    """codec_type/codec_name of each stream ffprobe finds at ``url`` (retried until the
    forwarder has connected)."""
    args = ["-rtsp_transport", "tcp"] if url.startswith("rtsp") else []
    last = ""
    for _ in range(tries):
        r = subprocess.run(
            [
                FFPROBE, "-v", "error", *args, "-rw_timeout", "4000000",
                "-analyzeduration", "1000000",
                "-show_entries", "stream=codec_type,codec_name,width,height",
                "-of", "csv=p=0", url,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )  # fmt: skip
        if r.returncode == 0 and "video" in r.stdout:
            return sorted(line.strip() for line in r.stdout.splitlines() if line.strip())
        last = r.stderr
        time.sleep(0.25)
    raise AssertionError(f"ffprobe never found the stream at {url}: {last[-500:]}")


@pytest.mark.parametrize("proto", ["rtsp", "rtmp"])
def test_forward_to_onvifcam(sender: ServerProc, receiver: ServerProc, proto: str) -> None:
    streams = ffprobe_streams(receiver.url(f"fwd/{proto}"))
    assert any(s.startswith("h264,video,320,240") for s in streams), streams
    assert any(s.startswith("aac,audio") for s in streams), streams


def test_fleet_cameras_forward_each_to_its_own_url(
    sender: ServerProc, receiver: ServerProc
) -> None:
    for n in (1, 2):
        streams = ffprobe_streams(receiver.url(f"mirror/lot/{n:02}"))
        assert any(s.startswith("h264,video,320,240") for s in streams), streams
    log = sender.log()
    for n in (1, 2):
        assert f"forward: lot/{n} -> rtsp://127.0.0.1:{receiver.rtsp_port}/mirror/lot/{n:02}" in log


def test_forward_to_nginx_rtmp(sender: ServerProc, nginx: int) -> None:
    streams = ffprobe_streams(f"rtmp://127.0.0.1:{nginx}/live/cam")
    assert any(s.startswith("h264,video,320,240") for s in streams), streams
    assert any(s.startswith("aac,audio") for s in streams), streams


def test_retry_limit_gives_error_and_disabled_stays_off(sender: ServerProc) -> None:
    log = sender.wait_log("giving up after 2 attempts")
    assert re.search(
        r"forward cam\[3\]: cannot reach 127.0.0.1:\d+: Connection refused; giving up after 2 "
        r"attempts in a row \(retry_limit\)",
        log,
    ), log[-3000:]
    assert "rtsp://127.0.0.1:1/off (disabled)" in log
    assert "forward cam[4]" not in log  # the disabled entry never tries
