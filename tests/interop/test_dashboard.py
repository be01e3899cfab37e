"""The dashboard in headless Chromium (Debian's /usr/bin/chromium driven by Playwright):
it loads without console errors, shows a camera going live when ffmpeg pushes, adds a
camera through its form that then answers ONVIF GetDeviceInformation (onvif-zeep-async),
and a motion button shows up in the live event log. A screenshot is kept as an artefact."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ServerProc, ffmpeg_push, running, wait_online

pytestmark = pytest.mark.interop

CHROMIUM = "/usr/bin/chromium"
CONFIG = """
[discovery]
enabled = false

[onvif]
port_range_start = 0
port_range_end = 0

[[cameras]]
name = "Lobby"
path = "lobby"
"""


def _api(srv: ServerProc, path: str) -> Any:
    import base64

    cred = base64.b64encode(f"admin:{srv.ports['onvif_password']}".encode()).decode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{srv.ports['http_port']}{path}",
        headers={"Authorization": f"Basic {cred}"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _device_information(port: int, password: str) -> Any:
    import onvif
    from onvif import ONVIFCamera

    wsdl = f"{os.path.dirname(onvif.__file__)}/wsdl/"

    async def go() -> Any:
        cam = ONVIFCamera("127.0.0.1", port, "admin", password, wsdl, no_cache=True)
        try:
            await cam.update_xaddrs()
            dm = await cam.create_devicemgmt_service()
            return await dm.GetDeviceInformation()
        finally:
            await cam.close()

    return asyncio.run(go())


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="needs Debian's chromium")
def test_dashboard_live_camera_form_and_events(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    srv = ServerProc(CONFIG, onvif_auth=True).start()
    errors: list[str] = []
    clean: list[str] = []
    try:
        base = f"http://127.0.0.1:{srv.ports['http_port']}"
        password = str(srv.ports["onvif_password"])
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            ctx = browser.new_context(
                http_credentials={"username": "admin", "password": password},
                viewport={"width": 1400, "height": 900},
            )
            page = ctx.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + "/")
            expect(page.locator("#app")).to_be_visible()
            expect(page.locator("#live")).to_have_text("events: live")
            lobby = page.locator('article.card[data-slug="Lobby"]')
            expect(lobby.locator(".state")).to_have_text("offline")

            # ffmpeg pushes: the card goes live with video facts and a real snapshot
            with running(ffmpeg_push(srv.url("lobby"), frames=100_000, gop=25)):
                wait_online(srv.url("lobby"))
                expect(lobby.locator(".state")).to_have_text("online", timeout=15_000)
                expect(lobby.locator(".video")).to_contain_text("320x240")
                expect(lobby.locator(".publisher")).to_contain_text("rtsp 127.0.0.1")
                page.wait_for_function(
                    "() => { const i = document.querySelector("
                    "'article.card[data-slug=\"Lobby\"] img.snap');"
                    " return i && i.complete && i.naturalWidth === 320; }",
                    timeout=15_000,
                )
                assert "rtsp://127.0.0.1:" in lobby.locator(".urls").inner_text()
                lobby.locator("details.push summary").click()
                cmds = lobby.locator(".cmds").inner_text()
                assert f"-f rtsp rtsp://127.0.0.1:{srv.rtsp_port}/lobby" in cmds
                assert "OBS server" in cmds and "streamid=publish:lobby" in cmds

                # firing motion shows in the live event log
                lobby.locator(".motion-on").click()
                expect(page.locator('#events li[data-type="MotionChanged"]').first).to_contain_text(
                    "state=true"
                )
                page.screenshot(path=str(tmp_path / "dashboard.png"))

            # a camera added through the form answers ONVIF
            page.locator("#add").click()
            page.locator('#camera-form [name="name"]').fill("Pier")
            page.locator('#camera-form [name="path"]').fill("pier/cam")
            page.locator('#camera-form [name="path"]').press("Enter")
            expect(page.locator('article.card[data-slug="Pier"]')).to_be_visible()
            # a wrong value is refused with the field named, nothing added (Chromium logs
            # the 422 as a console error: the only one allowed)
            clean = list(errors)
            page.locator("#add").click()
            page.locator('#camera-form [name="path"]').fill("x")
            page.locator('#camera-form [name="address"]').fill("not-an-ip")
            page.locator("#save").click()
            expect(page.locator("#form-error")).to_contain_text("address")
            page.locator("#cancel").click()
            browser.close()
        assert [e for e in errors[len(clean) :] if "status of 422" not in e] == []
        del errors[len(clean) :]

        deadline = time.monotonic() + 10
        while True:
            pier = _api(srv, "/api/cameras/Pier")
            if pier["port"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert pier["origin"] == "api" and pier["path"] == "pier/cam"
        info = _device_information(int(pier["port"]), password)
        assert info.SerialNumber == pier["serial"]
        assert [c["name"] for c in _api(srv, "/api/cameras")["cameras"]] == ["Lobby", "Pier"]
    finally:
        srv.stop()
    print(f"dashboard screenshot: {tmp_path / 'dashboard.png'}")
    assert not errors, errors
