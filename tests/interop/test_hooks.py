"""[[hooks]]: real commands (they write their environment to a file) and a real webhook (a
small aiohttp server in the test) fired by a real push and a real reader."""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from onvifcam.config import HookConfig
from onvifcam.events import EventBus, StreamPublished
from onvifcam.hooks import Hooks, environment, payload
from tests.helpers import LiveReader, ServerProc, ffmpeg_push, wait_online


class Webhook:
    """An aiohttp server on loopback in its own thread, keeping the JSON bodies it gets."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def hook(request: web.Request) -> web.Response:
            self.bodies.append(await request.json())
            status = 500 if request.path == "/fail" else 204
            return web.Response(status=status)

        app = web.Application()
        app.router.add_post("/{name}", hook)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._runner = runner
        ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def wait_for(pred: Any, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def read_env(path: Path) -> dict[str, str]:
    return dict(ln.split("=", 1) for ln in path.read_text().splitlines() if "=" in ln)


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[ServerProc, Webhook, Path]]:
    hook = Webhook()
    tmp = tempfile.TemporaryDirectory(prefix="onvifcam-hooks-")
    d = Path(tmp.name)
    cfg = f"""
[[hooks]]
on = "stream_ready"
command = "env | grep ^ONVIFCAM_ > {d}/ready.env"

[[hooks]]
on = "stream_ready"
command = "sleep 30"
timeout = 0.5

[[hooks]]
on = "reader_connected"
url = "http://127.0.0.1:{hook.port}/reader"

[[hooks]]
on = "reader_disconnected"
command = "env | grep ^ONVIFCAM_ > {d}/reader_gone.env"

[[hooks]]
on = "stream_not_ready"
url = "http://127.0.0.1:{hook.port}/fail"
path = "hooked/cam"

[[hooks]]
on = "stream_ready"
command = "echo nope >&2; exit 3"
path = "other/path"
"""
    srv = ServerProc(config=cfg).start()
    try:
        yield srv, hook, d
    finally:
        srv.stop()
        hook.stop()
        tmp.cleanup()


def test_hooks_fire_with_details(setup: tuple[ServerProc, Webhook, Path]) -> None:
    srv, hook, d = setup
    push = ffmpeg_push(srv.url("hooked/cam"), frames=500, gop=25, audio=False)
    try:
        wait_online(srv.url("hooked/cam"))
        wait_for(lambda: (d / "ready.env").exists() and (d / "ready.env").stat().st_size > 0)
        env = read_env(d / "ready.env")
        assert env["ONVIFCAM_EVENT"] == "stream_ready"
        assert env["ONVIFCAM_PATH"] == "hooked/cam"
        assert env["ONVIFCAM_CAMERA"] == "hooked/cam"
        assert env["ONVIFCAM_PUBLISHER"].startswith("rtsp://127.0.0.1 session ")
        assert json.loads(env["ONVIFCAM_DETAILS"])["publisher"] == env["ONVIFCAM_PUBLISHER"]
        assert float(env["ONVIFCAM_TIME"]) > 1.6e9

        reader = LiveReader(srv.url("hooked/cam"))
        assert reader.stop_at(5).video_frames >= 5
        wait_for(lambda: any(b["event"] == "reader_connected" for b in hook.bodies))
        body = next(b for b in hook.bodies if b["event"] == "reader_connected")
        assert body["path"] == "hooked/cam" and body["camera"] == "hooked/cam"
        assert body["details"]["reader"].startswith("rtsp://127.0.0.1 session ")
        wait_for(lambda: (d / "reader_gone.env").exists())
        wait_for(lambda: "ONVIFCAM_READER" in read_env(d / "reader_gone.env"))
        assert read_env(d / "reader_gone.env")["ONVIFCAM_EVENT"] == "reader_disconnected"
    finally:
        push.kill()
        push.wait()
    wait_for(lambda: any(b["event"] == "stream_not_ready" for b in hook.bodies))
    gone = next(b for b in hook.bodies if b["event"] == "stream_not_ready")
    assert gone["path"] == "hooked/cam" and gone["details"]["reason"]
    # the slow hook was killed after its timeout; the webhook's 500 is a failure; the hook
    # for another path never ran; all counted and logged
    url = f"http://127.0.0.1:{srv.ports['http_port']}/metrics"

    def runs() -> str:
        return urllib.request.urlopen(url, timeout=10).read().decode()

    wait_for(
        lambda: 'onvifcam_hook_runs_total{event="stream_not_ready",result="failed"} 1.0' in runs()
    )
    text = runs()
    assert 'onvifcam_hook_runs_total{event="stream_ready",result="timeout"} 1.0' in text
    assert 'onvifcam_hook_runs_total{event="stream_ready",result="ok"} 1.0' in text
    # wait_online's probe reads too: one run per reader
    assert re.search(
        r'onvifcam_hook_runs_total\{event="reader_connected",result="ok"\} [1-9]', text
    )
    log = srv.log()
    assert "no answer within 0.5 s ([[hooks]] timeout)" in log
    assert "HTTP 500" in log
    assert "exit status 3" not in log


async def test_hook_command_failure_and_queue_bound(tmp_path: Path) -> None:
    """In process: a failing command is counted with its stderr; a full queue drops the
    oldest events and counts them; the producer never waits."""
    bus = EventBus()
    out = tmp_path / "n"
    hooks = Hooks(
        (HookConfig(on="stream_ready", command=f"echo x >> {out}; echo oops >&2; exit 2"),),
        bus,
        queue_size=2,
        concurrency=1,
    )
    await hooks.start()
    try:
        for i in range(10):
            bus.publish(StreamPublished(f"p{i}", "pub"))
        # 10 events, at most 1 running + 2 queued at any time
        for _ in range(200):
            st = hooks.stats()
            if st["running"] == 0 and st["queued"] == 0 and st["runs"]:
                break
            await asyncio.sleep(0.05)
        st = hooks.stats()
        ran = st["runs"].get("stream_ready:failed", 0)
        assert ran + st["dropped"] == 10 and st["dropped"] >= 7
        assert out.read_text().count("x") == ran
    finally:
        await hooks.stop()


def test_payload_and_environment() -> None:
    body = payload(StreamPublished("a/b", "rtsp://x", at=12.5), "Cam A")
    assert body == {
        "event": "stream_ready",
        "path": "a/b",
        "camera": "Cam A",
        "time": 12.5,
        "details": {"publisher": "rtsp://x"},
    }
    env = environment(body)
    assert env["ONVIFCAM_PUBLISHER"] == "rtsp://x"
    assert env["ONVIFCAM_CAMERA"] == "Cam A"
    assert env["ONVIFCAM_TIME"] == "12.500"
