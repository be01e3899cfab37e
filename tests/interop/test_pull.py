"""Pull sources against real peers: a camera pulls ``source = [A, B]`` from two other
onvifcam processes (fed by ffmpeg over RTSP RECORD); when A dies the camera carries on from B
and an ffmpeg reader connected throughout keeps decoding on its one connection. (Debian has
no gst-rtsp-server typelib on this machine, so both upstreams are onvifcam.)"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.helpers import LiveReader, ServerProc, ffmpeg_push, stop_process, wait_online

pytestmark = pytest.mark.interop

FAST = "\n[sources]\nretry_interval = 0.3\nswitch_after = 1.0\nconnect_timeout = 2.0\n"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[ServerProc, ServerProc, list[subprocess.Popen[str]]]]:
    a = ServerProc("").start()
    b = ServerProc("").start()
    pushers = [
        ffmpeg_push(s.url(p), frames=25 * 120, gop=25, audio=False)
        for s, p in ((a, "up-a"), (b, "up-b"))
    ]
    try:
        wait_online(a.url("up-a"))
        wait_online(b.url("up-b"))
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
        f'source = ["{a.url("up-a")}", "{b.url("up-b")}"]\n' + FAST
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
    finally:
        srv.stop()
