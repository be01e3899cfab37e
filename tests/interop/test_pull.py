"""Pull sources against real peers: a camera pulls ``source = [A, B]`` from two other
onvifcam processes (fed by ffmpeg over RTSP RECORD); when A dies the camera carries on from B
and an ffmpeg reader connected throughout keeps decoding on its one connection. (Debian has
no gst-rtsp-server typelib on this machine, so both upstreams are onvifcam.) RTMP pulls play
from nginx-rtmp (onvifcam's RTMP server only ingests), after a URI that refuses."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    FFMPEG,
    LiveReader,
    ServerProc,
    ffmpeg_push,
    ffmpeg_read,
    free_port,
    reader_count,
    stop_process,
    wait_online,
)

pytestmark = pytest.mark.interop

NGINX_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
SECRET = "s3cret-pw"
FAST = "\n[sources]\nretry_interval = 0.3\nswitch_after = 1.0\nconnect_timeout = 2.0\n"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[ServerProc, ServerProc, list[subprocess.Popen[str]]]]:
    a = ServerProc("").start()
    b = ServerProc(f'[paths."up-b"]\nread_user = "u"\nread_password = "{SECRET}"\n').start()
    pushers = [
        ffmpeg_push(s.url(p), frames=25 * 120, gop=25, audio=False)
        for s, p in ((a, "up-a"), (b, "up-b"))
    ]
    try:
        wait_online(a.url("up-a"))
        wait_online(b.url("up-b", user=f"u:{SECRET}"))
        yield a, b, pushers
    finally:
        for p in pushers:
            stop_process(p)
        a.stop(check=False)
        b.stop()


def test_pull_fails_over_to_the_next_uri_without_reader_reconnect(
    upstreams: tuple[ServerProc, ServerProc, list[subprocess.Popen[str]]],
) -> None:
    a, b, pushers = upstreams
    cfg = (
        '[[cameras]]\nname = "pulled"\npath = "pulled"\n'
        f'source = ["{a.url("up-a")}", "{b.url("up-b", user=f"u:{SECRET}")}"]\n' + FAST
    )
    srv = ServerProc(cfg).start()
    try:
        wait_online(srv.url("pulled"))
        assert f"playing {a.url('up-a')}" in srv.log()
        reader = LiveReader(srv.url("pulled"), io_timeout=6.0)
        deadline = time.monotonic() + 20
        while reader.frames < 15 and time.monotonic() < deadline:
            time.sleep(0.1)
        before = reader.frames
        assert before >= 15, reader.result(5).stderr
        stop_process(pushers[0])
        a.stop(check=False)  # the first URI is gone for good: connection refused
        res = reader.stop_at(before + 40, timeout=30)
        assert res.video_frames >= before + 40, (res, srv.log()[-3000:])
        assert res.returncode in (0, 255), res.stderr
        log = srv.log()
        assert re.search(r"switched from .*up-a to .*up-b", log), log[-3000:]
        assert log.count("publishing from pull") >= 2  # one stream, two publishes
        assert SECRET not in log  # Digest answered, the password never logged
    finally:
        srv.stop()


@pytest.fixture
def nginx_rtmp(tmp_path: Path) -> Iterator[int]:
    """nginx-rtmp on a free loopback port with application ``live``."""
    if not (shutil.which("nginx") and NGINX_MODULE.exists()):
        pytest.skip("nginx with libnginx-mod-rtmp is not installed (scripts/dev.sh)")
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"load_module {NGINX_MODULE};\ndaemon off;\nmaster_process off;\n"
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log warn;\n"
        "events { worker_connections 64; }\n"
        f"rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} }} }}\n"
    )
    cmd = ["nginx", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert proc.poll() is None, (tmp_path / "error.log").read_text()
            time.sleep(0.1)
        yield port
    finally:
        stop_process(proc)


def test_rtmp_pull_from_nginx_after_a_refusing_uri(nginx_rtmp: int) -> None:
    src = f"rtmp://127.0.0.1:{nginx_rtmp}/live/cam"
    push = subprocess.Popen(
        [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
         "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-t", "60", "-f", "flv", src],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    refused = f"rtsp://127.0.0.1:{free_port()}/nothing"
    cfg = f'[[cameras]]\nname = "r"\npath = "r"\nsource = ["{refused}", "{src}"]\n' + FAST
    srv = ServerProc(cfg).start()
    try:
        wait_online(srv.url("r"), timeout=20)
        res = ffmpeg_read(srv.url("r"), frames=30, max_seconds=30)
        assert res.video_frames >= 30, (res, srv.log()[-3000:])
        assert f"playing {src}" in srv.log()
    finally:
        stop_process(push)
        srv.stop()


def _pull_status(srv: ServerProc, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", int(srv.ports["http_port"]), timeout=10)
    try:
        conn.request("GET", "/api/sources")
        body = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    found = [i for i in body["items"] if i["stats"].get("path") == path]
    assert found, body
    return str(found[0]["status"])


def test_on_demand_pull_starts_with_a_reader_and_stops_after_the_linger(
    upstreams: tuple[ServerProc, ServerProc, list[subprocess.Popen[str]]],
) -> None:
    _a, b, _pushers = upstreams
    cfg = (
        '[[cameras]]\nname = "lazy"\npath = "lazy"\non_demand = true\n'
        f'source = "{b.url("up-b", user=f"u:{SECRET}")}"\n' + FAST + "on_demand_linger = 1.0\n"
    )
    srv = ServerProc(cfg).start()
    try:
        time.sleep(1.0)  # a pull that started by itself would be reading by now
        assert reader_count(b, "up-b") == 0, srv.log()[-2000:]
        assert _pull_status(srv, "lazy") == "idle"
        # the reader's DESCRIBE waits for the pull, then it decodes the upstream's frames
        res = ffmpeg_read(srv.url("lazy"), frames=30, max_seconds=30)
        assert res.video_frames >= 30, (res, srv.log()[-3000:])
        log = srv.log()
        assert "waits up to" in log and "for its on-demand source" in log, log[-3000:]
        # the reader left: after the linger the pull stops and the upstream loses its reader
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if reader_count(b, "up-b") == 0 and _pull_status(srv, "lazy") == "idle":
                break
            time.sleep(0.2)
        assert reader_count(b, "up-b") == 0, srv.log()[-3000:]
        assert _pull_status(srv, "lazy") == "idle", srv.log()[-3000:]
        log = srv.log()
        assert "no reader for 1 s, stopping" in log
        assert "lost: no reader" not in log and "WARNING onvifcam.sources" not in log, log
        # and a new reader starts it again
        res = ffmpeg_read(srv.url("lazy"), frames=10, max_seconds=30)
        assert res.video_frames >= 10, (res, srv.log()[-3000:])
    finally:
        srv.stop()
