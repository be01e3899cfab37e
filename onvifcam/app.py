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
from onvifcam.addressing import Addressing, url_host
from onvifcam.auth.gate import Gate
from onvifcam.cameras import CameraRegistry
from onvifcam.config import Config
from onvifcam.discovery.responder import DiscoveryService
from onvifcam.events import EventBus, stream_listener
from onvifcam.firststart import with_admin_password
from onvifcam.limits import ConnectionLimiter
from onvifcam.media.stream import StreamRegistry
from onvifcam.rtmp.server import RtmpServer
from onvifcam.rtsp.server import RtspServer
from onvifcam.sources.manager import SourceManager, with_demo_camera
from onvifcam.srt.ingest import ts_ingest_factory
from onvifcam.srt.server import SrtServer
from onvifcam.state import StateStore
from onvifcam.watchdog import LoopWatchdog
from onvifcam.web.server import WebServer
from onvifcam.whip.server import WhipServer

log = logging.getLogger(__name__)

_LOGGED_CAMERAS = 10  # cameras listed with their URLs at start


class Component(Protocol):
    """A server the app starts, ticks once a second, and stops."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def tick(self, now: float) -> None: ...

    def ready_info(self) -> dict[str, str]:
        """key=value pairs for the ready line (chosen ports)."""
        ...


class App:
    """The composition root: owns the configuration, the stream and camera registries, the
    state store, the addressing rules and the limiter, and hands each component only the
    narrow things it uses (no global state; no module but cli.py imports this one)."""

    def __init__(self, cfg: Config) -> None:
        # no [onvif] credentials: cameras get a generated admin password (see firststart.py)
        cfg, self.login = with_admin_password(with_demo_camera(cfg))
        self.cfg = cfg
        lim = cfg.limits
        self.limiter = ConnectionLimiter.from_config(lim)
        self.registry = StreamRegistry(
            gop_cache_bytes=lim.gop_cache_bytes,
            media_timeout=lim.media_timeout,
            max_streams=lim.max_streams,
        )
        self.bus = EventBus()
        self.addressing = Addressing(cfg.server)
        self.store = StateStore(cfg.server.state_dir)
        self.cameras = CameraRegistry(cfg, self.store, self.registry, bus=self.bus)
        if cfg.onvif.enabled:
            self.registry.listeners.append(self.cameras.stream_changed)
        # publish and read admission shared by every protocol; NVRs read with ONVIF users
        self.gate = Gate(cfg, camera_users=self.cameras.rtsp_users)
        self.rtsp = RtspServer(cfg, self.registry, self.limiter, self.gate, self.bus)
        self.whip = WhipServer(cfg, self.registry, self.gate) if cfg.whip.enabled else None
        self.web = WebServer(
            cfg,
            self.cameras,
            self.registry,
            self.addressing,
            self.rtsp,
            self.bus,
            routes=[self.whip] if self.whip is not None else [],
        )
        # after the camera registry's and WebServer's listeners, so a publish has created
        # its camera before the event
        self.registry.listeners.append(stream_listener(self.bus))
        self.components: list[Component] = [self.web]
        if cfg.discovery.enabled and cfg.onvif.enabled:
            self.components.append(DiscoveryService(cfg, self.cameras, self.addressing, self.bus))
        if cfg.rtmp.enabled:
            self.components.append(RtmpServer(cfg, self.registry, self.limiter, self.gate))
        if self.whip is not None:
            self.components.append(self.whip)
        self.sources = SourceManager(cfg, self.registry, self.cameras, self.push_urls)
        self.components.append(self.sources)
        if cfg.srt.enabled:
            sinks = ts_ingest_factory(
                self.registry,
                lazy=cfg.srt.lazy_packetize,
                replace_for=lambda path: cfg.path_policy(path).on_conflict == "replace",
            )
            self.components.append(SrtServer(cfg, self.gate, sinks, limiter=self.limiter))
        self._tick_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.started_at = time.time()
        self.ready = False  # True once every listener is open
        self.watchdog: LoopWatchdog | None = None

    async def start(self) -> None:
        """Bind every listener; raises BindError (an OSError) when one cannot be opened.

        When any part fails, the parts already started are stopped again before the error
        propagates, so a failed start leaves no listener, socket or task behind.
        """
        s = self.cfg.server
        started: list[Component] = []
        try:
            await self.rtsp.start(s.host, s.rtsp_port)
            self.addressing.rtsp_port = self.rtsp.port
            if self.cfg.onvif.enabled:
                self.cameras.load()  # configured cameras, auto ones seen before, live paths
            for c in self.components:
                started.append(c)  # a half-started component is stopped too
                await c.start()
        except BaseException:
            await self._stop_parts(started)
            raise
        ms = s.loop_stall_warn_ms
        if ms:
            self.watchdog = LoopWatchdog(ms / 1000)
            self.watchdog.start()
        self._tick_task = asyncio.create_task(self._ticker(), name="onvifcam-tick")

    def push_urls(self, path: str) -> list[str]:
        """The URLs a publisher of ``path`` can push to (RTMP when the path is APP/KEY)."""
        host = url_host(self.addressing.host())
        urls = [f"rtsp://{host}:{self.rtsp.port}/{path}"]
        rtmp = [c.ready_info().get("rtmp_port") for c in self.components]
        if "/" in path and any(rtmp):
            urls.append(f"rtmp://{host}:{next(p for p in rtmp if p)}/{path}")
        return urls

    def ready_line(self) -> str:
        """The line printed once everything listens (ports chosen for 0 included), as
        ``onvifcam ready key=value ...``; also logs the login and URLs a user can paste."""
        info = {
            "rtsp_port": str(self.rtsp.port),
            "rtp_port": str(self.rtsp.rtp_port),
            "rtcp_port": str(self.rtsp.rtcp_port),
        }
        for c in self.components:
            info.update(c.ready_info())
        o = self.cfg.onvif
        if o.enabled:
            if self.login is not None:
                info["onvif_user"] = self.login.user
                info["onvif_password"] = self.login.password
            elif o.username:
                info["onvif_user"] = o.username
            elif not o.auth:
                info["onvif_auth"] = "off"
        self._log_where(info)
        return "onvifcam ready " + " ".join(f"{k}={v}" for k, v in info.items())

    def _log_where(self, info: dict[str, str]) -> None:
        """Log the ONVIF login and the URLs to paste (never 0.0.0.0)."""
        host = url_host(self.addressing.host())
        rtsp = f"rtsp://{host}:{info['rtsp_port']}"
        publish = f"publish to {rtsp}/PATH"
        if "rtmp_port" in info:
            publish += f" or rtmp://{host}:{info['rtmp_port']}/APP/KEY (path APP/KEY)"
        if "http_port" in info and self.whip is not None:
            publish += f" or WHIP http://{host}:{info['http_port']}/whip/PATH"
        if "srt_port" in info:
            publish += f" or srt://{host}:{info['srt_port']}?streamid=publish:PATH"
        if self.login is not None:
            log.info(
                "onvif: cameras without their own credentials need user %r, password %r "
                "(%s %s; set [onvif] username and password to choose them)",
                self.login.user,
                self.login.password,
                "generated now and kept in" if self.login.new else "kept in",
                self.login.path,
            )
        o = self.cfg.onvif
        if not (o.enabled and o.auto_cameras and "http_port" in info):
            log.info("%s; read it at %s/PATH", publish, rtsp)
        else:
            log.info(
                "%s; the path becomes an ONVIF camera on its own port and at "
                "http://%s:%s/onvif/SLUG/device_service (SLUG: the path with '/' as '-'); "
                "read it at %s/PATH",
                publish,
                host,
                info["http_port"],
                rtsp,
            )
        cams = list(self.cameras.cameras.values())
        for cam in cams[:_LOGGED_CAMERAS]:
            urls = self.addressing.urls(self.web.place(cam))
            log.info("onvif: camera %r: %s, stream %s", cam.name, urls.onvif_url, urls.rtsp_url)
        for cam in cams:
            if cam.path == info.get("demo_path"):
                urls = self.addressing.urls(self.web.place(cam))
                log.info(
                    "demo: test pattern camera: %s, ONVIF %s "
                    "(--no-demo or [demo] enabled = false turns it off)",
                    urls.rtsp_url,
                    urls.onvif_url,
                )
        if len(cams) > _LOGGED_CAMERAS:
            log.info(
                "onvif: %d more cameras: GET /api/cameras lists them", len(cams) - _LOGGED_CAMERAS
            )

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
        if self.watchdog is not None:
            self.watchdog.stop()
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
            url_host(self.addressing.host()),
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
