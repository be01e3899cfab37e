"""ONVIF Events with real clients against a real server and a real ffmpeg publisher.

- onvif-zeep-async's PullPointManager (Home Assistant's code path) and NotificationManager
  (HA's webhook path, with a small aiohttp consumer in the test);
- the npm ``onvif`` package's event loop;
- ``onvifcam trigger`` and POST /api/cameras/{camera}/events to set motion;
- ffmpeg stopping and starting to publish gives tns1:VideoSource/SignalLoss true / false;
- ten PullMessages long polls in flight do not hold up a GetStreamUri.

Every SOAP response (and every Notify) is validated against the schemas in wsdl/.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import onvif
import pytest
from aiohttp import ClientSession, DigestAuthMiddleware, encode_basic_auth, web
from lxml import etree
from onvif import ONVIFCamera

from tests.helpers import ROOT, ServerProc, ffmpeg_push, stop_process, wait_online
from tests.interop.test_onvif_node import NODE_DIR
from tests.onvif_client import validate_every_zeep_response  # noqa: F401 (autouse)
from tests.onvif_schema import envelope, security_header, validate

pytestmark = pytest.mark.interop

WSDL = f"{os.path.dirname(onvif.__file__)}/wsdl/"
TEV = 'xmlns="http://www.onvif.org/ver10/events/wsdl"'
TRT = 'xmlns="http://www.onvif.org/ver10/media/wsdl"'
NS = {
    "wsnt": "http://docs.oasis-open.org/wsn/b-2",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "tt": "http://www.onvif.org/ver10/schema",
    "tev": "http://www.onvif.org/ver10/events/wsdl",
}
MOTION = "tns1:VideoSource/MotionAlarm"
CELL = "tns1:RuleEngine/CellMotionDetector/Motion"
LOSS = "tns1:VideoSource/SignalLoss"

CONFIG = """
[server]
host = "127.0.0.1"
rtsp_port = 0
rtmp_port = 0
http_port = 0

[rtsp]
rtp_port = 0

[onvif]
port_range_start = 0
port_range_end = 0

[events]
trigger_loopback_without_auth = false
notify_timeout = 1.0
notify_retries = 1

[[cameras]]
name = "Lobby"
path = "lobby"
username = "admin"
password = "secret"
"""


class Publisher:
    """ffmpeg publishing the Lobby stream; stop() and start() it to flip SignalLoss."""

    def __init__(self, srv: ServerProc) -> None:
        self.srv = srv
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = ffmpeg_push(
            self.srv.url("lobby"), frames=1_000_000, size="320x240", gop=25, audio=False
        )
        wait_online(self.srv.url("lobby"))

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    server = ServerProc(config=CONFIG).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pub(srv: ServerProc) -> Iterator[Publisher]:
    p = Publisher(srv)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def http_port(srv: ServerProc) -> int:
    return int(srv.ports["http_port"])


def lobby_port(srv: ServerProc) -> int:
    with contextlib.closing(
        __import__("urllib.request").request.urlopen(
            f"http://127.0.0.1:{http_port(srv)}/api/cameras", timeout=10
        )
    ) as r:
        cams = json.loads(r.read())["cameras"]
    return int(next(c["port"] for c in cams if c["name"] == "Lobby"))


async def trigger(
    srv: ServerProc,
    body: Any,
    camera: str = "Lobby",
    auth: str = "digest",
    password: str = "secret",
) -> tuple[int, dict[str, Any]]:
    """POST /api/cameras/CAMERA/events (Digest, Basic or no credentials)."""
    url = f"http://127.0.0.1:{http_port(srv)}/api/cameras/{camera}/events"
    middlewares = (DigestAuthMiddleware("admin", password),) if auth == "digest" else ()
    headers = {"Authorization": encode_basic_auth("admin", password)} if auth == "basic" else {}
    async with ClientSession(middlewares=middlewares) as s:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with s.post(url, data=data, headers=headers) as r:
            return r.status, json.loads(await r.read() or b"{}")


def cli_trigger(srv: ServerProc, *args: str) -> subprocess.CompletedProcess[str]:
    """``onvifcam trigger`` against the server, with the camera's admin credentials."""
    return subprocess.run(
        [sys.executable, "-m", "onvifcam", "trigger", *args,
         "--url", f"http://127.0.0.1:{http_port(srv)}", "--user", "admin", "--password", "secret"],
        capture_output=True, text=True, timeout=30, cwd=str(ROOT),
    )  # fmt: skip


def parse_zeep(msg: Any) -> tuple[str, str, dict[str, str]]:
    """(topic, PropertyOperation, items) of a NotificationMessage as zeep gives it to HA."""
    topic = str(msg.Topic._value_1).rstrip("/.")
    m = msg.Message._value_1
    items: dict[str, str] = {}
    for group in (m.Source, m.Data):
        for item in (group.SimpleItem if group is not None else None) or []:
            items[item.Name] = item.Value
    return topic, str(m.PropertyOperation), items


class Pulls:
    """Home Assistant's pull loop: PullMessages(Timeout=PT1M, MessageLimit=100) repeatedly."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    async def until(
        self, pred: Callable[[tuple[str, str, dict[str, str]]], bool], limit: float = 60
    ) -> tuple[str, str, dict[str, str]]:
        async with asyncio.timeout(limit):
            while True:
                for m in self.seen:
                    if pred(m):
                        self.seen.remove(m)
                        return m
                resp = await self.service.PullMessages(
                    {"MessageLimit": 100, "Timeout": dt.timedelta(seconds=60)}
                )
                assert resp.CurrentTime.tzinfo is not None and resp.TerminationTime.tzinfo
                self.seen.extend(parse_zeep(m) for m in resp.NotificationMessage or [])


def is_(topic: str, op: str, key: str, value: str) -> Callable[[Any], bool]:
    return lambda m: m[0] == topic and m[1] == op and m[2].get(key) == value


# --------------------------------------------------------------------------- Home Assistant


async def test_home_assistant_pull_point_gets_motion_and_stream_state(
    srv: ServerProc, pub: Publisher
) -> None:
    cam = ONVIFCamera("127.0.0.1", lobby_port(srv), "admin", "secret", WSDL, no_cache=True)
    lost: list[int] = []
    try:
        await cam.update_xaddrs()
        caps = await cam.get_capabilities()
        assert caps["Events"]["XAddr"].endswith("/onvif/events_service")
        assert caps["Events"]["WSPullPointSupport"] is True
        manager = await cam.create_pullpoint_manager(
            dt.timedelta(seconds=600), lambda: lost.append(1)
        )
        await manager.set_synchronization_point()
        pulls = Pulls(manager.get_service())
        await pulls.until(is_(MOTION, "Initialized", "State", "false"))
        await pulls.until(is_(LOSS, "Initialized", "State", "false"))  # ffmpeg is publishing

        r = await asyncio.to_thread(cli_trigger, srv, "Lobby", "motion", "on")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "Lobby: motion on (changed)"
        await pulls.until(is_(MOTION, "Changed", "State", "true"))
        await pulls.until(is_(CELL, "Changed", "IsMotion", "true"))
        status, answer = await trigger(srv, {"type": "motion", "state": False})
        assert status == 200 and answer["changed"] is True
        await pulls.until(is_(MOTION, "Changed", "State", "false"))

        await asyncio.to_thread(pub.stop)
        await pulls.until(is_(LOSS, "Changed", "State", "true"))
        await asyncio.to_thread(pub.start)
        await pulls.until(is_(LOSS, "Changed", "State", "false"))
        await manager.shutdown()  # Unsubscribe
        assert lost == []
    finally:
        await cam.close()
        if pub.proc is None:
            pub.start()


# --------------------------------------------------------------------------- npm onvif


@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    assert exe is not None, "node is required (bash scripts/dev.sh test installs it)"
    if not (NODE_DIR / "node_modules" / "onvif").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "npm is required to install the onvif package"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300
        )
    return exe


class NodeEvents:
    """The npm client in the background; its JSON lines arrive on a queue."""

    def __init__(self, node: str, port: int) -> None:
        self.proc = subprocess.Popen(
            [node, "events_client.js", "127.0.0.1", str(port), "admin", "secret", "90"],
            cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.all: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(line))

    def wait(self, pred: Callable[[dict[str, Any]], bool], limit: float = 60) -> dict[str, Any]:
        """The first line not taken yet that matches (waiting up to ``limit`` seconds)."""
        deadline = time.monotonic() + limit
        while True:
            for item in self.pending:
                if pred(item):
                    self.pending.remove(item)
                    return item
            left = deadline - time.monotonic()
            assert left > 0, [x for x in self.all if x["kind"] != "raw"]
            try:
                item = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.all.append(item)
            assert item["kind"] not in ("error", "eventsError"), item
            if item["kind"] != "raw":
                self.pending.append(item)


def node_event(topic: str, op: str, key: str, value: str) -> Callable[[dict[str, Any]], bool]:
    return lambda x: (
        x["kind"] == "event"
        and x["topic"] == topic
        and x["operation"] == op
        and x["items"].get(key) == value
    )


def test_npm_onvif_event_loop_gets_motion_and_stream_state(
    node: str, srv: ServerProc, pub: Publisher
) -> None:
    client = NodeEvents(node, lobby_port(srv))
    try:
        assert client.wait(lambda x: x["kind"] == "connected")["events"] is True
        client.wait(node_event(MOTION, "Initialized", "State", "false"))
        client.wait(node_event(LOSS, "Initialized", "State", "false"))
        assert asyncio.run(trigger(srv, {"type": "motion", "state": True}))[0] == 200
        client.wait(node_event(MOTION, "Changed", "State", "true"))
        assert asyncio.run(trigger(srv, {"type": "motion", "state": False}, auth="basic"))[0] == 200
        client.wait(node_event(MOTION, "Changed", "State", "false"))
        pub.stop()
        client.wait(node_event(LOSS, "Changed", "State", "true"))
        pub.start()
        client.wait(node_event(LOSS, "Changed", "State", "false"))
    finally:
        stop_process(client.proc)
        if pub.proc is None:
            pub.start()
    raw = [x for x in client.all if x["kind"] == "raw"]
    assert any("PullMessagesResponse" in x["xml"] for x in raw)
    assert any("RenewResponse" in x["xml"] for x in raw)  # npm renews after every pull
    assert 'UtcTime="' in "".join(x["xml"] for x in raw)
    for x in raw:
        validate(x["xml"].encode())


# --------------------------------------------------------------------------- basic notification


@contextlib.asynccontextmanager
async def consumer() -> AsyncIterator[tuple[str, asyncio.Queue[bytes]]]:
    """A NotificationConsumer: an aiohttp server on loopback collecting Notify bodies."""
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def notify(request: web.Request) -> web.Response:
        await got.put(await request.read())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/onvif-hook", notify)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/onvif-hook", got
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def silent_consumer() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A consumer that accepts connections, reads the request and never answers."""
    seen: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(Exception):
            seen.append(await reader.read(65536))
            await reader.read()  # until the sender gives up and closes

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hang", seen
    finally:
        server.close()
        for w in writers:
            w.close()


async def notified(
    manager: Any, got: asyncio.Queue[bytes], pred: Callable[[Any], bool], limit: float = 30
) -> None:
    """Wait for a Notify holding a message that matches (parsed the way HA parses it)."""
    async with asyncio.timeout(limit):
        while True:
            body = await got.get()
            validate(body)
            result = manager.process(body)
            if any(pred(parse_zeep(m)) for m in result.NotificationMessage or []):
                return


async def test_basic_notification_consumer_gets_notify(srv: ServerProc, pub: Publisher) -> None:
    cam = ONVIFCamera("127.0.0.1", lobby_port(srv), "admin", "secret", WSDL, no_cache=True)
    try:
        await cam.update_xaddrs()
        async with consumer() as (url, got), silent_consumer() as (hang_url, hung):
            # a consumer that never answers, subscribed first: it must hold nothing up
            stuck = await cam.create_notification_manager(
                hang_url, dt.timedelta(seconds=600), lambda: None
            )
            manager = await cam.create_notification_manager(
                url, dt.timedelta(seconds=600), lambda: None
            )
            await manager.set_synchronization_point()
            await notified(manager, got, is_(MOTION, "Initialized", "State", "false"))
            status, _ = await trigger(srv, {"type": "motion", "state": True})
            assert status == 200
            await notified(manager, got, is_(MOTION, "Changed", "State", "true"))
            assert hung and b"Notify" in hung[0]  # its Notify was sent and is still unanswered
            await trigger(srv, {"type": "motion", "state": False})
            await notified(manager, got, is_(MOTION, "Changed", "State", "false"))
            # the silent consumer's Notify gives up after notify_timeout x (1 + notify_retries)
            deadline = time.monotonic() + 30
            while f"Notify to {hang_url} failed (no answer within 1 s)" not in srv.log():
                assert time.monotonic() < deadline, srv.log()[-3000:]
                await asyncio.sleep(0.2)
            await manager.shutdown()
            await stuck.shutdown()
    finally:
        await cam.close()


# --------------------------------------------------------------------------- long polls


async def soap(
    s: ClientSession, url: str, body: str, *, auth: bool = True
) -> tuple[int, etree._Element, float]:
    """POST a SOAP request with WS-Security; status, validated envelope, monotonic end time."""
    header = security_header("admin", "secret") if auth else ""
    async with s.post(url, data=envelope(body, header)) as r:
        data = await r.read()
        return r.status, validate(data), time.monotonic()


async def test_long_polls_do_not_hold_up_other_requests(srv: ServerProc, pub: Publisher) -> None:
    base = f"http://127.0.0.1:{http_port(srv)}/onvif/Lobby"  # the main port's per-camera path
    conn = aiohttp.TCPConnector(limit=0)
    async with ClientSession(connector=conn) as s:
        pull_urls = []
        for _ in range(10):
            status, root, _t = await soap(
                s, f"{base}/events_service", f"<CreatePullPointSubscription {TEV}/>"
            )
            assert status == 200
            address = root.findtext(".//wsa:Address", namespaces=NS) or ""
            assert parse_qs(urlsplit(address).query)["subscription"]
            pull_urls.append(address)
            # drain the Initialized messages so the long poll below has nothing to return
            await soap(
                s, address, f"<PullMessages {TEV}><Timeout>PT0S</Timeout>"
                "<MessageLimit>100</MessageLimit></PullMessages>",
            )  # fmt: skip
        polls = [
            asyncio.ensure_future(
                soap(
                    s,
                    u,
                    f"<PullMessages {TEV}><Timeout>PT10S</Timeout>"
                    "<MessageLimit>10</MessageLimit></PullMessages>",
                )
            )
            for u in pull_urls
        ]
        await asyncio.sleep(1.0)  # let the ten requests reach the server
        status, root, uri_done = await soap(
            s,
            f"{base}/media_service",
            f'<GetStreamUri {TRT}><StreamSetup><tt:Stream xmlns:tt="{NS["tt"]}">RTP-Unicast'
            '</tt:Stream><tt:Transport xmlns:tt="http://www.onvif.org/ver10/schema">'
            "<tt:Protocol>RTSP</tt:Protocol></tt:Transport></StreamSetup>"
            "<ProfileToken>Profile_1</ProfileToken></GetStreamUri>",
        )
        assert status == 200 and (root.findtext(".//tt:Uri", namespaces=NS) or "").startswith(
            "rtsp://"
        )
        assert not any(p.done() for p in polls)
        results = await asyncio.gather(*polls)
        for status, root, done in results:
            assert status == 200 and done > uri_done
            assert root.find(".//tev:PullMessagesResponse", NS) is not None
            assert root.find(".//wsnt:NotificationMessage", NS) is None  # nothing happened


# --------------------------------------------------------------------------- trigger API


async def test_trigger_api_errors_and_auth(srv: ServerProc, pub: Publisher) -> None:
    assert (await trigger(srv, {"type": "motion", "state": True}, camera="Nope"))[0] == 404
    status, answer = await trigger(srv, b"{not json")
    assert status == 400 and "JSON" in answer["error"]
    status, answer = await trigger(srv, b"[" * 100_000)  # the server keeps going
    assert status == 400 and "nested" in answer["error"]
    status, answer = await trigger(srv, {"type": "motion", "state": "yes"})
    assert status == 422 and answer["field"] == "state"
    status, answer = await trigger(srv, {"type": "digital_input", "state": True, "input": "DI_9"})
    assert status == 422 and answer["field"] == "input" and "DI_1" in answer["error"]
    # loopback is not trusted in this server's configuration: credentials are required
    status, answer = await trigger(srv, {"type": "motion", "state": True}, auth="none")
    assert status == 401 and "Administrator" in answer["error"]
    status, _ = await trigger(srv, {"type": "motion", "state": True}, password="wrong")
    assert status == 401
    # by stream path, with Basic
    status, answer = await trigger(
        srv, {"type": "digital_input", "state": True}, camera="lobby", auth="basic"
    )
    assert status == 200 and answer == {
        "camera": "Lobby",
        "type": "digital_input",
        "state": True,
        "input": "DI_1",
        "changed": True,
    }
    r = await asyncio.to_thread(cli_trigger, srv, "Lobby", "input", "DI_1", "off")
    assert r.returncode == 0 and r.stdout.strip() == "Lobby: input DI_1 off (changed)"
    r = await asyncio.to_thread(cli_trigger, srv, "Lobby", "input", "DI_5", "off")
    assert r.returncode == 1 and "HTTP 422" in r.stderr and "Traceback" not in r.stderr
    r = await asyncio.to_thread(cli_trigger, srv, "Lobby", "motion", "maybe")
    assert r.returncode == 2 and "motion on|off" in r.stderr


def test_loopback_trigger_without_credentials_when_allowed(tmp_path: Path) -> None:
    server = ServerProc(config=CONFIG.replace("trigger_loopback_without_auth = false", "")).start()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "onvifcam", "trigger", "Lobby", "motion", "on",
             "--url", f"http://127.0.0.1:{server.ports['http_port']}"],
            capture_output=True, text=True, timeout=30, cwd=str(ROOT),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "Lobby: motion on (changed)"
    finally:
        server.stop()
