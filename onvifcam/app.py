"""Wires the servers on one asyncio loop; start-up, housekeeping and clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from typing import Protocol

from onvifcam import __version__
from onvifcam.config import Config
from onvifcam.discovery.responder import DiscoveryService
from onvifcam.limits import ConnectionLimiter
from onvifcam.media.stream import StreamRegistry
from onvifcam.netutil import url_host
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
        self.limiter = ConnectionLimiter(
            lim.max_connections, lim.new_connections_per_ip_per_s, lim.new_connections_burst
        )
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
        self.ready = False  # True once every listener is open

    async def start(self) -> None:
        """Bind every listener; raises BindError (an OSError) when one cannot be opened.

        When any part fails, the parts already started are stopped again before the error
        propagates, so a failed start leaves no listener, socket or task behind.
        """
        s = self.cfg.server
        started: list[Component] = []
        try:
            await self.rtsp.start(s.host, s.rtsp_port)
            for c in self.components:
                started.append(c)  # a half-started component is stopped too
                await c.start()
        except BaseException:
            await self._stop_parts(started)
            raise
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
        await self._stop_parts(self.components)
        self._stopped.set()

    async def _stop_parts(self, components: list[Component]) -> None:
        """Stop ``components`` in reverse order, then the streams and the RTSP server."""
        for c in reversed(components):
            try:
                await c.stop()
            except Exception:
                log.exception("stopping %s failed", type(c).__name__)
        self.registry.close("server shutting down")
        try:
            await self.rtsp.stop()
        except Exception:
            log.exception("stopping the RTSP server failed")

    async def run(self) -> None:
        """Start, print the ready line, serve until SIGINT/SIGTERM, stop cleanly.

        SIGHUP is logged and ignored (reloading the configuration is not supported yet).
        """
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
            loop.add_signal_handler(signal.SIGHUP, self._sighup)
        await self.start()
        self.ready = True
        s = self.cfg.server
        log.info(
            "onvifcam %s serving rtsp://%s:%d/%s",
            __version__,
            url_host(s.host, s.advertise),
            self.rtsp.port,
            " (listening on every address)" if s.host in ("", "0.0.0.0", "::") else "",
        )
        try:
            print(self.ready_line(), flush=True)
        except OSError as exc:  # stdout closed (e.g. `onvifcam serve | head -0`)
            _stdout_to_devnull()
            log.warning("cannot print the ready line (%s); serving anyway", exc)
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            await self.stop()

    def _sighup(self) -> None:
        log.warning(
            "SIGHUP: reloading the configuration is not supported; still serving with the "
            "configuration read at start (%s); restart onvifcam to apply changes",
            self.cfg.source,
        )


def _stdout_to_devnull() -> None:
    """Point fd 1 at /dev/null so later writes and the flush at exit do not fail again."""
    with contextlib.suppress(OSError, ValueError):
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)


def run(cfg: Config) -> int:
    """Run the server until a signal; the process exit code."""
    use_uvloop = False
    if cfg.server.uvloop:
        try:
            import uvloop

            use_uvloop = True
        except ImportError:
            pass
    app: App | None = None
    try:
        app = App(cfg)
        if use_uvloop:
            uvloop.run(app.run())
        else:
            asyncio.run(app.run())
    except OSError as exc:
        # BindError's text names the listener, its setting and what to do; one line, no
        # traceback. Other OSErrors (a TLS file that cannot be read...) carry their own.
        what = "error" if app is not None and app.ready else "cannot start"
        print(f"onvifcam: {what}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
