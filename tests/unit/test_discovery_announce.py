"""Discovery announces from endpoint and camera events on the bus, not from timing guesses:
no Hello before a camera's endpoint is settled however long that takes, Hello when it is
(again after a reboot), Bye when the registry removes the camera. The announcing step is
recorded instead of sent (no sockets)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from onvifcam.addressing import Addressing
from onvifcam.cameras import Camera, CameraRegistry
from onvifcam.config import from_dict
from onvifcam.discovery.responder import DiscoveryService
from onvifcam.discovery.wsdiscovery import Target
from onvifcam.events import EndpointBound, EventBus
from onvifcam.media.stream import StreamRegistry
from onvifcam.state import StateStore


class Endpoints:
    """What the web component publishes once a camera's endpoint is settled."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def settle(self, cam: Camera, port: int) -> None:
        self.bus.publish(EndpointBound(cam.key, port, cam.address))


def test_hello_follows_the_endpoint_and_bye_the_registry(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = from_dict(
            {
                "server": {"state_dir": str(tmp_path), "host": "127.0.0.1", "http_port": 8080},
                "cameras": [{"name": "A", "path": "a"}, {"name": "B", "path": "b"}],
            }
        )
        streams = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=5)
        bus = EventBus()
        cams = CameraRegistry(cfg, StateStore(tmp_path), streams, bus=bus)
        cams.load()
        ends = Endpoints(bus)
        disc = DiscoveryService(cfg, cams, Addressing(cfg.server), bus)
        said: list[tuple[str, bool, str, int]] = []

        def announce(t: Target, hello: bool) -> None:
            said.append((t.key, hello, t.xaddr, t.generation))

        disc._announce = announce  # type: ignore[method-assign]
        disc._running = True
        a, b = cams.cameras["A"], cams.cameras["B"]

        for now in (0.0, 10.0, 1000.0):  # no endpoint yet: silent, however long it takes
            disc._sync(now)
        assert said == []

        ends.settle(a, 8100)
        assert said == [("A", True, "http://{host}:8100/onvif/device_service", 0)]

        a.reboot()  # the endpoint goes down and comes back: no Hello until it is back
        disc._sync(2000.0)
        assert len(said) == 1
        ends.settle(a, 8100)
        assert said[-1] == ("A", True, "http://{host}:8100/onvif/device_service", 1)

        ends.settle(b, 0)  # no port of its own: announced on the main port
        assert said[-1] == ("B", True, "http://{host}:8080/onvif/B/device_service", 0)

        cams.remove(a, "test")
        assert said[-1][:2] == ("A", False)
        b.set_discovery_mode("NonDiscoverable")  # an ONVIF change, read on the next tick
        disc._sync(3000.0)
        assert said[-1][:2] == ("B", False)
        assert disc.core.targets == {}

    asyncio.run(main())


def test_onvif_changes_are_announced_from_events_not_polled(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = from_dict(
            {
                "server": {"state_dir": str(tmp_path), "host": "127.0.0.1", "http_port": 8080},
                "cameras": [{"name": "A", "path": "a"}],
            }
        )
        streams = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=5)
        bus = EventBus()
        cams = CameraRegistry(cfg, StateStore(tmp_path), streams, bus=bus)
        cams.load()
        disc = DiscoveryService(cfg, cams, Addressing(cfg.server), bus)
        said: list[tuple[bool, tuple[str, ...]]] = []
        disc._announce = lambda t, hello: said.append((hello, t.scopes))  # type: ignore[method-assign]
        disc._running = True
        a = cams.cameras["A"]
        Endpoints(bus).settle(a, 8100)
        assert [h for h, _s in said] == [True]
        # What clients change over ONVIF is announced at once (no tick, no Probe needed).
        a.add_scopes(["onvif://www.onvif.org/location/dock"])
        assert said[-1][0] is True and "onvif://www.onvif.org/location/dock" in said[-1][1]
        a.set_discovery_mode("NonDiscoverable")
        assert said[-1][0] is False and disc.core.targets == {}
        a.set_discovery_mode("Discoverable")
        assert said[-1][0] is True
        # The tick no longer reads the registry: a change made behind the registry's back
        # (not through the camera's setters) is not picked up by it.
        n = len(said)
        a.state.discovery_mode = "NonDiscoverable"
        disc.tick(0.0)
        assert len(said) == n

    asyncio.run(main())
