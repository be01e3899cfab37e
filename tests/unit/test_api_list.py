"""``GET /api/cameras`` from its cache: each camera's static part (identity, URLs, push
commands) is built once per client view and camera, its entry encoded again only when the
camera or its live values change, and the answer always equals the per-camera entry.

An in-process App on loopback ports; the requests are aiohttp's mocked requests (the
handler is called directly, no HTTP client involved)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import make_mocked_request

from onvifcam.app import App
from onvifcam.config import from_dict


class _Transport:
    """The socket side of a request: which address and port it arrived on."""

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 40000)}.get(key, default)

    def is_closing(self) -> bool:
        return False


class _Reader:
    def deliver(self, batch: Any) -> None:
        pass

    def stream_closed(self, reason: str) -> None:
        pass


def _request() -> Any:
    return make_mocked_request(
        "GET", "/api/cameras", headers={"Host": "127.0.0.1:8080"}, transport=_Transport()
    )


async def test_list_is_cached_per_camera_and_follows_changes(tmp_path: Path) -> None:
    cfg = from_dict(
        {
            "server": {
                "host": "127.0.0.1",
                "rtsp_port": 0,
                "rtmp_port": 0,
                "rtmps_port": 0,
                "http_port": 0,
                "state_dir": str(tmp_path),
            },
            "rtsp": {"rtp_port": 0},
            "srt": {"port": 0},
            "discovery": {"enabled": False},
            "onvif": {"port_range_start": 0, "port_range_end": 0, "auth": False},
            "fleets": [{"name": "lab", "count": 5}],
        }
    )
    app = App(cfg)
    await app.start()
    try:
        web, api = app.web, app.web.api
        built = 0
        urls = web.camera_urls

        def counting(cam: Any, arrival: Any) -> dict[str, str | int]:
            nonlocal built
            built += 1
            return urls(cam, arrival)

        web.camera_urls = counting  # type: ignore[method-assign]

        def listed() -> dict[str, dict[str, Any]]:
            body = json.loads(api.list_body(_request()))
            return {c["name"]: c for c in body["cameras"]}

        first = listed()
        assert len(first) == 5 and built == 5
        for cam in app.cameras.cameras.values():  # the list is what entry() gives
            assert first[cam.name] == json.loads(json.dumps(api.entry(cam, _request())))
        assert listed() == first and built == 5  # nothing built again

        # live values: a reader on one camera's stream
        cam = next(iter(app.cameras.cameras.values()))
        stream = app.registry.get_or_create(cam.path)
        stream.add_reader(_Reader())
        now = listed()
        assert now[cam.name]["readers"] == 1 and built == 5
        assert {k: v for k, v in now.items() if k != cam.name} == {
            k: v for k, v in first.items() if k != cam.name
        }

        # a changed camera is a new Camera object: its static part is built again
        new = app.cameras.update(cam, dataclasses.replace(cam.cfg, sub_path=cam.path + "/low"))
        assert listed()[new.name]["sub_path"] == cam.path + "/low" and built == 6

        # its endpoint moved (web.urls_changed): every camera's URLs are built again
        web.urls_changed()
        listed()
        assert built == 11

        app.cameras.remove(new, "test")
        assert new.name not in listed()
    finally:
        await app.stop()
