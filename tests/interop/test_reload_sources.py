"""A reload applies sources and forwards against real peers: an upstream onvifcam (fed by
two ffmpeg pushers) serves ``up-a`` and ``up-b``; the server under test has a pushed camera
``steady`` read by an ffmpeg LiveReader, and a camera ``moving`` that pulls ``up-a``.
SIGHUP 1 changes ``moving`` to ``up-b`` (the upstream's reader of ``up-a`` goes away) and adds
a forward of ``steady`` to the upstream (ffprobe decodes it there); SIGHUP 2 removes
``moving``'s source (the upstream's reader of ``up-b`` goes away and a reader of ``moving``
is closed). The reader of ``steady`` decodes throughout on its one connection."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    LiveReader,
    ServerProc,
    ffmpeg_push,
    probe,
    reader_count,
    stop_process,
    wait_online,
)

pytestmark = pytest.mark.interop

FAST = "\n[sources]\nretry_interval = 0.3\nswitch_after = 1.0\nconnect_timeout = 2.0\n"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ServerProc]:
    """One onvifcam with ``up-a`` and ``up-b`` pushed by ffmpeg (for the whole module)."""
    up = ServerProc("").start()
    pushers = [
        ffmpeg_push(up.url(p), frames=25 * 120, gop=25, audio=False) for p in ("up-a", "up-b")
    ]
    try:
        wait_online(up.url("up-a"))
        wait_online(up.url("up-b"))
        yield up
    finally:
        for p in pushers:
            stop_process(p)
        up.stop()


def _wait_readers(srv: ServerProc, path: str, n: int, why: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while reader_count(srv, path) != n and time.monotonic() < deadline:
        time.sleep(0.1)
    assert reader_count(srv, path) == n, why


def _reload(srv: ServerProc, cfg_path: Path, text: str) -> str:
    """Write the configuration, SIGHUP, and return the log of that reload."""
    assert srv.proc is not None
    mark = srv.log_size()
    cfg_path.write_text(text)
    srv.proc.send_signal(signal.SIGHUP)
    log = srv.wait_log("reload of ", since=mark, timeout=20)
    assert "reload of " in log, log
    return log


def _camera(name: str, extra: str = "") -> str:
    return f'\n[[cameras]]\nname = "{name}"\npath = "{name}"\n{extra}'


def test_reload_restarts_one_pull_adds_a_forward_and_stops_a_pull(upstream: ServerProc) -> None:
    up = upstream
    steady = _camera("steady")
    moving_a = _camera("moving", f'source = "{up.url("up-a")}"\n')
    srv = ServerProc(steady + moving_a + FAST).start()
    push: subprocess.Popen[str] | None = None
    reader: LiveReader | None = None
    try:
        assert srv._tmp is not None
        cfg_path = Path(srv._tmp.name) / "config.toml"
        base = cfg_path.read_text()
        push = ffmpeg_push(srv.url("steady"), frames=25 * 120, gop=25, audio=False)
        wait_online(srv.url("steady"))
        _wait_readers(up, "up-a", 1, "the pull of up-a did not start\n" + srv.log()[-3000:])
        reader = LiveReader(srv.url("steady"), io_timeout=6.0)
        deadline = time.monotonic() + 30
        while reader.frames < 15 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reader.frames >= 15, srv.log()[-3000:]
        plays = srv.log().count("plays steady")
        mark = srv.log_size()

        # 1: moving pulls up-b instead of up-a; steady gets a forward to the upstream
        fwd = f'forward = [{{ url = "{up.url("fwd")}", retry_timeout = 0.5 }}]\n'
        moving_b = _camera("moving", f'source = "{up.url("up-b")}"\n')
        log = _reload(srv, cfg_path, base.replace(steady, _camera("steady", fwd)).replace(
            moving_a, moving_b))  # fmt: skip
        assert "needs a restart: nothing" in log, log
        assert f"restarted ['moving: pull {up.url('up-b')}']" in log, log
        assert f"forwards_started ['steady -> {up.url('fwd')}']" in log, log
        _wait_readers(up, "up-a", 0, "the old pull of up-a is still reading\n" + log)
        _wait_readers(up, "up-b", 1, "the new pull of up-b does not read\n" + srv.log()[-3000:])
        wait_online(up.url("fwd"), timeout=20)
        streams = probe(up.url("fwd"), io_timeout=8.0)
        assert [s["codec_name"] for s in streams if s["codec_type"] == "video"] == ["h264"]
        moving_reader = LiveReader(srv.url("moving"), io_timeout=6.0)
        deadline = time.monotonic() + 30
        while moving_reader.frames < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert moving_reader.frames >= 10, srv.log()[-3000:]

        # 2: moving's source is removed (the camera stays, for pushers): the pull stops and
        # its reader is closed; steady and its forward are not touched
        text = cfg_path.read_text().replace(moving_b, _camera("moving"))
        log = _reload(srv, cfg_path, text)
        assert f"stopped ['moving: pull {up.url('up-b')}']" in log, log
        _wait_readers(up, "up-b", 0, "the removed pull still reads\n" + srv.log()[-3000:])
        res = moving_reader.result(timeout=20)  # ends by itself: the server closed it
        assert res.video_frames >= 10, res
        assert "readers closed (its source was removed)" in srv.log_since(mark)

        # the reader of steady kept decoding on its one connection; its publisher stayed
        before = reader.frames
        res = reader.stop_at(before + 25, timeout=30)
        reader = None
        assert res.video_frames >= before + 25, (res, srv.log()[-3000:])
        after = srv.log_since(mark)
        assert srv.log().count("plays steady") == plays, after
        assert "stream steady: publisher" not in after, after
    finally:
        if reader is not None:
            stop_process(reader.proc)
        if push is not None:
            stop_process(push)
        srv.stop()
