"""The one ``stats()`` shape: flat ints/floats by name, nested dicts for sub-parts, every
documented key present from the start (metrics and the API read it without guessing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onvifcam.addressing import Addressing
from onvifcam.cameras import CameraRegistry
from onvifcam.config import from_dict
from onvifcam.discovery.responder import DiscoveryService
from onvifcam.events import EventBus
from onvifcam.media.stream import StreamRegistry
from onvifcam.state import StateStore
from onvifcam.web.server import WebServer


class NoRtsp:
    async def listen(self, host: str, port: int, role: str, setting: str, host_setting: str) -> Any:
        raise OSError("not in this test")


def _shape(stats: dict[str, Any]) -> None:
    for k, v in stats.items():
        assert isinstance(k, str)
        if isinstance(v, dict):
            _shape(v)
        else:
            assert isinstance(v, int | float) and not isinstance(v, bool), (k, v)


def test_components_share_one_stats_shape(tmp_path: Path) -> None:
    cfg = from_dict({"server": {"state_dir": str(tmp_path)}, "cameras": [{"path": "a"}]})
    streams = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=5)
    cams = CameraRegistry(cfg, StateStore(tmp_path), streams)
    cams.load()
    addressing = Addressing(cfg.server)
    bus = EventBus()
    web = WebServer(cfg, cams, streams, addressing, NoRtsp(), bus)
    disc = DiscoveryService(cfg, cams, addressing, bus)
    try:
        for component in (cams, web, disc):
            _shape(component.stats())
        assert cams.stats()["cameras"] == 1
        w = web.stats()
        assert w["camera_endpoints"] == 0 and set(w) >= {"http", "soap", "snapshots"}
        d = disc.stats()
        assert d["received"] == 0 and d["backlog"] == 0 and d["announced"] == 0
    finally:
        web.snapshots.close()


def test_rtsp_and_rtmp_servers_share_the_shape() -> None:
    from onvifcam.config import Config
    from onvifcam.limits import ConnectionLimiter
    from onvifcam.rtmp.server import RtmpServer
    from onvifcam.rtsp.server import RtspServer

    cfg = Config()
    streams = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=5)
    limiter = ConnectionLimiter(10, 0, 10)
    rtsp = RtspServer(cfg, streams, limiter).stats()
    rtmp = RtmpServer(cfg, streams, limiter).stats()
    for st in (rtsp, rtmp):
        _shape(st)
        assert {"connections", "sessions", "requests", "refusals", "bytes_in", "bytes_out"} <= set(
            st
        )
    assert rtsp["sessions"] == {"init": 0, "ready": 0, "playing": 0, "recording": 0}
    assert rtsp["requests"]["DESCRIBE"] == 0 and rtsp["refusals"]["on_demand_timeout"] == 0
    assert rtmp["sessions"]["publishing"] == 0 and rtmp["requests"]["publish"] == 0
