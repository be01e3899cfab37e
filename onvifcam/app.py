"""Wires the servers on one asyncio loop; start-up, housekeeping and clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from typing import Protocol

from onvifcam import __version__
from onvifcam.config import Config
from onvifcam.discovery.responder import DiscoveryService
from onvifcam.limits import ConnectionLimiter
from onvifcam.media.stream import StreamRegistry
from onvifcam.rtmp.server import RtmpServer
from onvifcam.rtsp.server import RtspServer
from onvifcam.web.server import WebServer

log = logging.getLogger(__name__)


class Component(Protocol):
    """A server the app starts, ticks once a second, and stops."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def tick(self, now: float) -> None: ...

    def ready_info(self) -> dict[str, str]:
        """key=value pairs for the ready line (chosen ports)."""
        ...


class App:
    """Owns the configuration, the stream registry and every server (no global state)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        lim = cfg.limits
        self.limiter = ConnectionLimiter.from_config(lim)
        self.registry = StreamRegistry(
            gop_cache_bytes=lim.gop_cache_bytes,
            media_timeout=lim.media_timeout,
            max_streams=lim.max_streams,
        )
        self.rtsp = RtspServer(cfg, self.registry, self.limiter)
        web = WebServer(self)
        self.components: list[Component] = [web]
        if cfg.discovery.enabled and cfg.onvif.enabled:
            self.components.append(DiscoveryService(self, web))
        if cfg.rtmp.enabled:
            self.components.append(RtmpServer(cfg, self.registry, self.limiter))
        self._tick_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.started_at = time.time()

    async def start(self) -> None:
        """Bind every listener; raises OSError when a port is taken."""
        s = self.cfg.server
        await self.rtsp.start(s.host, s.rtsp_port)
        for c in self.components:
            await c.start()
        self._tick_task = asyncio.create_task(self._ticker(), name="onvifcam-tick")

    def ready_line(self) -> str:
        """The line printed once everything listens (ports chosen for 0 included)."""
        info = {
            "rtsp_port": str(self.rtsp.port),
            "rtp_port": str(self.rtsp.rtp_port),
            "rtcp_port": str(self.rtsp.rtcp_port),
        }
        for c in self.components:
            info.update(c.ready_info())
        return "onvifcam ready " + " ".join(f"{k}={v}" for k, v in info.items())

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            try:
                self.registry.tick(now)
                self.rtsp.tick(now)
                for c in self.components:
                    c.tick(now)
            except Exception:
                log.exception("housekeeping failed")

    async def stop(self) -> None:
        """Close every session and listener."""
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        for c in reversed(self.components):
            try:
                await c.stop()
            except Exception:
                log.exception("stopping %s failed", type(c).__name__)
        self.registry.close("server shutting down")
        await self.rtsp.stop()
        self._stopped.set()

    async def run(self) -> None:
        """Start, print the ready line, serve until SIGINT/SIGTERM, stop cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await self.start()
        log.info(
            "onvifcam %s serving rtsp://%s:%d/", __version__, self.cfg.server.host, self.rtsp.port
        )
        print(self.ready_line(), flush=True)
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            await self.stop()


def run(cfg: Config) -> int:
    """Run the server until a signal; the process exit code."""
    use_uvloop = False
    if cfg.server.uvloop:
        try:
            import uvloop

            use_uvloop = True
        except ImportError:
            pass
    try:
        if use_uvloop:
            uvloop.run(App(cfg).run())
        else:
            asyncio.run(App(cfg).run())
    except OSError as exc:
        print(f"onvifcam: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
