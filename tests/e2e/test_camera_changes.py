"""Cameras added, updated and removed at run time through the registry the app owns: the
web component opens, moves and closes their endpoints (real sockets on loopback)."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from onvifcam.app import App
from onvifcam.config import CameraConfig
from onvifcam.events import EndpointBound, EndpointUnbound, Event
from tests.e2e.test_startup import _cfg
from tests.helpers import free_port

SOAP = (
    b'<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">'
    b'<s:Body><GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/>'
    b"</s:Body></s:Envelope>"
)


def _get(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/soap+xml"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


async def _until(what: Callable[[], bool]) -> None:
    """Wait for a condition the server reaches asynchronously (fails after 10 s)."""
    for _ in range(200):
        if await asyncio.to_thread(what):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


def test_add_update_remove_move_the_endpoint(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = _cfg(
            tmp_path,
            discovery={"enabled": False},
            cameras=[{"name": "Lobby", "path": "lobby", "auth": False}],
        )
        app = App(cfg)
        seen: list[tuple[str, str, int | str]] = []

        def endpoint(ev: Event) -> None:
            if isinstance(ev, EndpointBound):
                seen.append(("bound", ev.camera, ev.port))
            elif isinstance(ev, EndpointUnbound):
                seen.append(("unbound", ev.camera, ev.reason))

        app.bus.subscribe(endpoint, EndpointBound, EndpointUnbound)
        await app.start()
        try:
            api = f"http://127.0.0.1:{app.web.port}/api/cameras"

            def cams() -> dict[str, dict[str, object]]:
                _s, body = _get(api)
                return {c["name"]: c for c in json.loads(body)["cameras"]}

            p1, p2, r1 = free_port(), free_port(), free_port()
            app.cameras.add(
                CameraConfig(
                    name="Dock", path="dock", auth=False, address="127.0.0.4",
                    onvif_port=p1, rtsp_listen=True, rtsp_port=r1,
                )
            )  # fmt: skip
            await _until(lambda: cams().get("Dock", {}).get("port") == p1)
            dock = (await asyncio.to_thread(cams))["Dock"]
            assert dock["onvif_url"] == f"http://127.0.0.4:{p1}/onvif/device_service"
            assert dock["rtsp_url"] == f"rtsp://127.0.0.4:{r1}/dock"
            status, body = await asyncio.to_thread(_get, str(dock["onvif_url"]), SOAP)
            assert status == 200 and b"GetSystemDateAndTimeResponse" in body
            assert await asyncio.to_thread(_listening, "127.0.0.4", r1)
            uuid = dock["uuid"]

            app.cameras.update(
                app.cameras.cameras["Dock"],
                CameraConfig(name="Dock", path="dock2", auth=False, onvif_port=p2),
            )
            await _until(lambda: cams()["Dock"].get("port") == p2)
            dock = (await asyncio.to_thread(cams))["Dock"]
            assert dock["uuid"] == uuid and dock["path"] == "dock2"
            assert dock["onvif_url"] == f"http://127.0.0.1:{p2}/onvif/device_service"
            await _until(lambda: not _listening("127.0.0.4", p1))
            await _until(lambda: not _listening("127.0.0.4", r1))  # its own RTSP listener
            status, _b = await asyncio.to_thread(_get, str(dock["onvif_url"]), SOAP)
            assert status == 200

            app.cameras.remove(app.cameras.cameras["Dock"], "test")
            await _until(lambda: not _listening("127.0.0.1", p2))
            now = await asyncio.to_thread(cams)
            assert "Dock" not in now and "Lobby" in now
            assert [x for x in seen if x[1] == "Dock"] == [
                ("bound", "Dock", p1),
                ("unbound", "Dock", "update"),
                ("bound", "Dock", p2),
                ("unbound", "Dock", "removed"),
            ]
            stats = app.web.stats()
            assert stats["camera_endpoints"] == 1 and stats["camera_rtsp_listeners"] == 0
        finally:
            await app.stop()

    asyncio.run(main())
