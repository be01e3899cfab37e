"""Primary/backup failover with real encoders: ffmpeg pushes the primary and the backup path
of a camera; an ffmpeg reader of the camera, connected throughout, keeps decoding when the
primary encoder is killed (it gets the backup) and after the primary is back long enough
(it gets the primary again). Short [sources] settings keep it quick."""

from __future__ import annotations

import time

import pytest

from tests.helpers import LiveReader, ServerProc, ffmpeg_push, stop_process, wait_online

pytestmark = pytest.mark.interop

CFG = """
[[cameras]]
name = "fo"
path = "fo"
primary = "fo-p"
backup = "fo-b"

[sources]
failover_after = 0.5
failback_after = 2.0
"""


def _wait_log(srv: ServerProc, *texts: str, since: int = 0, timeout: float = 20.0) -> int:
    """Wait until one of ``texts`` is in the log after offset ``since``; the log's size then."""
    text = srv.wait_log(*texts, since=since, timeout=timeout)
    assert any(t in text for t in texts), f"no {texts!r} in the log:\n{srv.log()[-3000:]}"
    return srv.log_size()


def _wait_frames(reader: LiveReader, frames: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while reader.frames < frames:
        assert reader.proc.poll() is None, reader.result(5).stderr
        assert time.monotonic() < deadline, f"reader stuck at {reader.frames} frames"
        time.sleep(0.1)


def test_reader_follows_primary_backup_and_back_on_one_connection() -> None:
    srv = ServerProc(CFG).start()
    push = dict(frames=25 * 60, gop=25, audio=False)
    primary = ffmpeg_push(srv.url("fo-p"), **push)  # type: ignore[arg-type]
    backup = ffmpeg_push(srv.url("fo-b"), **push)  # type: ignore[arg-type]
    try:
        wait_online(srv.url("fo"))
        reader = LiveReader(srv.url("fo"), io_timeout=5.0)
        _wait_frames(reader, 10)
        # on a busy machine the backup may be up first: the camera shows the primary only
        # once it has been there failback_after
        to_primary = "failover fo: switched from backup 'fo-b' to primary 'fo-p'"
        _wait_log(srv, "failover fo: showing primary 'fo-p'", to_primary)
        at = srv.log_size()
        stop_process(primary)  # the primary encoder dies
        at = _wait_log(srv, "failover fo: switched from primary 'fo-p' to backup 'fo-b'", since=at)
        _wait_frames(reader, reader.frames + 25)
        primary = ffmpeg_push(srv.url("fo-p"), **push)  # type: ignore[arg-type]
        _wait_log(srv, to_primary, since=at)
        res = reader.stop_at(reader.frames + 25, timeout=20)
        assert res.returncode in (0, 255), res.stderr
        assert "stream fo: publisher" not in srv.log()  # the camera never went offline
    finally:
        stop_process(primary)
        stop_process(backup)
        srv.stop()
