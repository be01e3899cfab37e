"""Wires the servers on one asyncio loop; start-up, housekeeping and clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from onvifcam import __version__
from onvifcam.addressing import Addressing, url_host
from onvifcam.auth.gate import Gate
from onvifcam.cameras import CameraRegistry, RegistryError
from onvifcam.config import Config, ConfigError, load
from onvifcam.discovery.responder import DiscoveryService
from onvifcam.events import EventBus, reader_listener, stream_listener
from onvifcam.firststart import with_admin_password
from onvifcam.hooks import Hooks
from onvifcam.limits import ConnectionLimiter
from onvifcam.media.stream import StreamRegistry
from onvifcam.rtmp.server import RtmpServer
from onvifcam.rtsp.server import RtspServer
from onvifcam.sources.manager import SourceManager, with_demo_camera
from onvifcam.sources.transcode import Transcoders
from onvifcam.srt.ingest import ts_ingest_factory
from onvifcam.srt.server import SrtServer
from onvifcam.state import StateStore
from onvifcam.statslog import StatsLogger
from onvifcam.watchdog import LoopWatchdog
from onvifcam.web.metrics import MetricsEndpoint, StatsCollector
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
        self.rtsp = RtspServer(cfg, self.registry, self.limiter, self.gate)
        self.whip = WhipServer(cfg, self.registry, self.gate) if cfg.whip.enabled else None
        # components' stats() by name, read by /metrics at scrape time (more added below)
        self.stats_sources: dict[str, Callable[[], Mapping[str, Any]]] = {
            "limiter": self.limiter.stats,
            "gate": self.gate.stats,
            "events": self.bus.stats,
            "rtsp": self._rtsp_stats,
        }
        self.collector = StatsCollector(self.registry, self.cameras, self.stats_sources)
        self.metrics = MetricsEndpoint(cfg.metrics, self.collector)
        self.stats_sources["metrics"] = self.metrics.stats
        self.web = WebServer(
            cfg,
            self.cameras,
            self.registry,
            self.addressing,
            self.rtsp,
            self.bus,
            routes=[self.metrics, *([self.whip] if self.whip is not None else [])],
            push=self.push_table,
        )
        self.stats_sources["web"] = self.web.stats
        self.collector.operations = lambda: self.web.dispatcher.by_operation
        if self.whip is not None:
            self.stats_sources["whip"] = self.whip.stats
        # after the camera registry's and WebServer's listeners, so a publish has created
        # its camera before the event
        self.registry.listeners.append(stream_listener(self.bus))
        self.registry.reader_listeners.append(reader_listener(self.bus))
        self.statslog = StatsLogger(cfg.stats, self.registry, self.camera_for)
        self.registry.listeners.append(self.statslog.stream_changed)
        self.stats_sources["statslog"] = self.statslog.stats
        self.hooks = Hooks(
            cfg.hooks,
            self.bus,
            self.camera_for,
            queue_size=lim.hook_queue,
            concurrency=lim.hook_concurrency,
        )
        self.stats_sources["hooks"] = self.hooks.stats
        self.components: list[Component] = [self.hooks, self.web]
        if cfg.discovery.enabled and cfg.onvif.enabled:
            discovery = DiscoveryService(cfg, self.cameras, self.addressing, self.bus)
            self.components.append(discovery)
            self.stats_sources["discovery"] = discovery.stats
        self.rtmp: RtmpServer | None = None
        if cfg.rtmp.enabled:
            self.rtmp = RtmpServer(cfg, self.registry, self.limiter, self.gate)
            self.components.append(self.rtmp)
        if self.whip is not None:
            self.components.append(self.whip)
        self.sources = SourceManager(
            cfg, self.registry, self.cameras, self.push_urls, gate=self.gate, bus=self.bus
        )
        self.components.append(self.sources)
        if any(c.sub_stream == "transcode" for c in cfg.cameras):
            transcoders = Transcoders(cfg, self.registry, self.cameras)
            self.components.append(transcoders)
            self.stats_sources["transcode"] = transcoders.stats
        self.web.api.register("sources", self.sources.switchable)
        self.web.api.register("forwards", lambda: self.sources.forwarders)
        self.stats_sources["sources"] = self.sources.stats
        self.srt: SrtServer | None = None
        if cfg.srt.enabled:
            sinks = ts_ingest_factory(
                self.registry,
                lazy=cfg.srt.lazy_packetize,
                replace_for=lambda path: self.gate.cfg.path_policy(path).on_conflict == "replace",
            )
            self.srt = SrtServer(cfg, self.gate, sinks, limiter=self.limiter)
            self.components.append(self.srt)
            self.stats_sources["srt"] = self.srt.stats
        self._tick_task: asyncio.Task[None] | None = None
        self._reload_task: asyncio.Task[dict[str, Any]] | None = None
        self._reload_lock = asyncio.Lock()
        # (old, new) camera configurations _apply_cameras leaves for the SourceManager
        self._sources_pending: tuple[Config, Config] | None = None
        self.web.api.reloader = self.reload  # POST /api/reload
        self._stopped = asyncio.Event()
        self.started_at = time.time()
        self.ready = False  # True once every listener is open
        self._ports: dict[str, str] | None = None  # ready_info of every component, once
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
            self.stats_sources["watchdog"] = self.watchdog.stats
        self._tick_task = asyncio.create_task(self._ticker(), name="onvifcam-tick")

    def camera_for(self, path: str) -> str:
        """The name of the camera showing ``path`` ("" when none does)."""
        path = path.strip("/")
        for cam in self.cameras.cameras.values():
            if path in (cam.path, cam.sub_path):
                return str(cam.name)
        return ""

    def _rtsp_stats(self) -> dict[str, int]:
        """The RTSP server's ``stats_*`` counters."""
        return {
            k[6:]: v
            for k, v in vars(self.rtsp).items()
            if k.startswith("stats_") and isinstance(v, int)
        }

    def push_urls(self, path: str) -> list[str]:
        """The URLs a publisher of ``path`` can push to (RTMP when the path is APP/KEY)."""
        host = url_host(self.addressing.host())
        urls = [f"rtsp://{host}:{self.rtsp.port}/{path}"]
        rtmp = [c.ready_info().get("rtmp_port") for c in self.components]
        if "/" in path and any(rtmp):
            urls.append(f"rtmp://{host}:{next(p for p in rtmp if p)}/{path}")
        return urls

    def push_table(self, path: str, host: str) -> dict[str, str]:
        """Where a publisher of ``path`` can push, by ingest, for a client reaching ``host``
        (for the API and the dashboard's ready-to-paste commands)."""
        ports = self._ports
        if ports is None:
            ports = {}
            for c in self.components:
                ports.update(c.ready_info())
            if self.ready:  # every listener is open: the ports are final
                self._ports = ports
        h = url_host(host)
        out = {"rtsp": f"rtsp://{h}:{self.rtsp.port}/{path}"}
        rtmp = ports.get("rtmp_port")
        if rtmp:
            out["rtmp"] = f"rtmp://{h}:{rtmp}/{path}"
            app, _, key = path.partition("/")
            out["obs_server"] = f"rtmp://{h}:{rtmp}/{app}"
            out["obs_key"] = key
        srt = ports.get("srt_port")
        if srt:
            out["srt"] = f"srt://{h}:{srt}?streamid=publish:{path}"
        http = ports.get("http_port")
        if http and self.whip is not None:
            out["whip"] = f"http://{h}:{http}/whip/{path}"
        return out

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
                self.statslog.tick(now)
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
        """Start, print the ready line, serve until SIGINT/SIGTERM, stop cleanly; SIGHUP
        re-reads the configuration (:meth:`reload`)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
            loop.add_signal_handler(signal.SIGHUP, self._sighup)
        await self.start()
        self.ready = True
        self.web.urls_changed()  # every port is final: push URLs made before are stale
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
        if self._reload_task is not None and not self._reload_task.done():
            log.warning("SIGHUP: a reload is still running; ignored")
            return
        self._reload_task = asyncio.create_task(self.reload(), name="onvifcam-reload")

    async def reload(self, cfg: Config | None = None) -> dict[str, Any]:
        """Re-read the configuration and apply what changed (:meth:`_reload`); one reload at a
        time (SIGHUP and ``POST /api/reload`` wait for each other)."""
        async with self._reload_lock:
            return await self._reload(cfg)

    async def _reload(self, cfg: Config | None = None) -> dict[str, Any]:
        """Re-read the configuration file (or take ``cfg``) and apply what changed without a
        restart: cameras added, updated and removed through the camera registry (unaffected
        cameras, streams, readers and publishers are not touched), path policies, [stats]
        and [[hooks]]. Changes that need a listener restarted are only reported.

        Returns a summary: ``{"ok", "source", "cameras": {"added", "updated", "removed",
        "refused"}, "applied", "restart_needed", "error", "failed"}`` (``failed``: "" or why
        nothing changed: "no_config", "config" for an error in the file, "state" when the
        state directory could not be written); a configuration with an error changes
        nothing.
        """
        summary: dict[str, Any] = {
            "ok": False,
            "source": self.cfg.source,
            "cameras": {"added": [], "updated": [], "removed": [], "refused": {}},
            "sources": {},
            "applied": [],
            "restart_needed": [],
            "error": "",
            "failed": "",
        }
        if cfg is None:
            if self.cfg.source.startswith("<"):
                summary["error"] = "the server was started without --config: nothing to re-read"
                summary["failed"] = "no_config"
                log.warning("reload: %s", summary["error"])
                return summary
            loop = asyncio.get_running_loop()
            try:
                cfg = await loop.run_in_executor(None, load, self.cfg.source)
            except ConfigError as exc:
                summary["error"] = str(exc)
                summary["failed"] = "config"
                log.error("reload: configuration error, nothing changed: %s", exc)
                return summary
        try:
            new, login = await asyncio.get_running_loop().run_in_executor(
                None, lambda: with_admin_password(with_demo_camera(_keep_overrides(cfg, self)))
            )
        except OSError as exc:
            summary["error"] = str(exc)
            summary["failed"] = "state"
            log.error("reload: %s; nothing changed", exc)
            return summary
        self._apply(new, summary)
        if (new.onvif.enabled, new.onvif.auth) == (self.cfg.onvif.enabled, self.cfg.onvif.auth):
            self.login = login  # the [onvif] login is applied at once (see _LIVE_KEYS)
        await self._apply_sources(summary)
        summary["ok"] = True
        cams = summary["cameras"]
        srcs = "; ".join(f"{k} {v}" for k, v in summary["sources"].items() if v)
        log.info(
            "reload of %s: cameras added %s, updated %s, removed %s%s; applied: %s; "
            "%sneeds a restart: %s",
            summary["source"],
            cams["added"] or "none",
            cams["updated"] or "none",
            cams["removed"] or "none",
            f", refused {cams['refused']}" if cams["refused"] else "",
            ", ".join(summary["applied"]) or "nothing",
            f"sources: {srcs}; " if srcs else "",
            ", ".join(summary["restart_needed"]) or "nothing",
        )
        return summary

    async def _apply_sources(self, summary: dict[str, Any]) -> None:
        """Hand the camera changes of :meth:`_apply_cameras` to the SourceManager: pulls,
        file loops, failovers, placeholders and forwarders that changed are stopped and
        started; the others keep running. Adds ``sources`` (started, stopped, restarted,
        forwards_started, forwards_stopped) and the cameras' changed keys to ``applied``."""
        pending, self._sources_pending = self._sources_pending, None
        if pending is None:
            return
        try:
            plan = await self.sources.reconcile(*pending)
        except Exception as exc:  # a source bug must not lose the rest of the reload
            log.exception("reload: applying the cameras' sources failed")
            summary["restart_needed"].append(f"camera sources (applying them failed: {exc})")
            return
        summary["sources"] = plan.summary()
        for key, what in plan.changed.items():
            summary["applied"].append(f"camera {key!r} " + ", ".join(what))

    def _apply(self, new: Config, summary: dict[str, Any]) -> None:
        old = self.cfg
        keep = old
        restart: list[str] = summary["restart_needed"]
        applied: list[str] = summary["applied"]
        live: dict[str, Any] = {}  # section -> its old value with the live keys of new
        for name in _RESTART_SECTIONS:
            o, n = getattr(old, name), getattr(new, name)
            if o == n:
                continue
            keys = _LIVE_KEYS.get(name, ())
            changed = [
                f.name for f in dataclasses.fields(o) if getattr(o, f.name) != getattr(n, f.name)
            ]
            # the live keys wait for a restart too when a key they depend on changed (an
            # [onvif] login computed for "auth = false" would switch authentication off now)
            if any(k in changed for k in _LIVE_UNLESS.get(name, ())):
                keys = ()
            moved = [k for k in changed if k in keys]
            if moved:
                live[name] = dataclasses.replace(o, **{k: getattr(n, k) for k in moved})
                applied.append(f"[{name}] " + ", ".join(moved))
            rest = [k for k in changed if k not in keys]
            if rest:
                restart.append(f"[{name}] " + ", ".join(rest))
        if live:
            keep = dataclasses.replace(keep, **live)
        if (old.paths, old.defaults, old.any_path) != (new.paths, new.defaults, new.any_path):
            keep = dataclasses.replace(
                keep, paths=new.paths, defaults=new.defaults, any_path=new.any_path
            )
            applied.append("path policies ([paths], [defaults], any_path)")
        if old.api != new.api:
            keep = dataclasses.replace(keep, api=new.api)
            applied.append("[api] (credentials take effect now)")
        if keep is not old:
            self._apply_credentials(keep)
        if old.stats != new.stats:
            keep = dataclasses.replace(keep, stats=new.stats)
            self.statslog.reconfigure(new.stats)
            applied.append("[stats]")
        if old.hooks != new.hooks:
            keep = dataclasses.replace(keep, hooks=new.hooks)
            self.hooks.reload(new.hooks)
            applied.append("[[hooks]]")
        if old.cameras != new.cameras:
            keep = dataclasses.replace(keep, cameras=new.cameras, fleets=new.fleets)
            self.cfg = keep
            self._apply_cameras(old, new, summary)
        self.cfg = keep

    def _apply_credentials(self, cfg: Config) -> None:
        """Hand the reloaded credentials and path policies to whoever checks them per
        request: the gate and every ingest (publish users, stream keys, SRT passphrases,
        ``on_conflict``), the cameras (``[onvif]`` users), the API and ``/metrics``. Sessions
        admitted before keep running; the next request is checked against ``cfg``."""
        policies = {"paths": cfg.paths, "defaults": cfg.defaults, "any_path": cfg.any_path}
        self.gate.cfg = dataclasses.replace(self.gate.cfg, **policies)
        for server in (self.rtsp, self.rtmp, self.srt, self.whip):
            if server is not None:
                server.cfg = dataclasses.replace(
                    server.cfg, **policies, onvif=cfg.onvif, srt=cfg.srt
                )
        self.metrics.cfg = cfg.metrics
        self.web.api.reconfigure(cfg)
        if self.cfg.onvif != cfg.onvif:
            self.cameras.cfg = dataclasses.replace(self.cameras.cfg, onvif=cfg.onvif)
            for cam in self.cameras.cameras.values():
                cam.app_cfg = dataclasses.replace(cam.app_cfg, onvif=cfg.onvif)

    def _apply_cameras(self, old: Config, new: Config, summary: dict[str, Any]) -> None:
        """Cameras in ``new`` but not ``old`` are added, gone ones removed, changed ones
        updated, each through the camera registry (the web component and discovery follow
        its events); the others are not touched. Their sources, ``offline`` placeholders
        and forwarders are left for :meth:`_apply_sources` (cameras the registry refused
        keep their old ones)."""
        cams = summary["cameras"]
        before = {c.name or c.path: c for c in old.cameras}
        after = {c.name or c.path: c for c in new.cameras}
        self.cameras.cfg = self.cfg
        reg = self.cameras
        for key in before.keys() - after.keys():
            cam = reg.cameras.get(key)
            if cam is not None and not cam.auto:
                reg.remove(cam, "removed from the configuration (reload)")
                cams["removed"].append(key)
        for key, c in after.items():
            try:
                if key not in before:
                    cam = reg.cameras.get(key)
                    if cam is not None and cam.auto:
                        reg.update(cam, c)  # an auto camera of that path becomes configured
                    else:
                        reg.add(c)
                    cams["added"].append(key)
                elif before[key] != c and key in reg.cameras:
                    reg.update(reg.cameras[key], c)
                    cams["updated"].append(key)
                else:
                    continue
            except RegistryError as exc:
                cams["refused"][key] = str(exc)
                log.warning("reload: camera %r not applied: %s", key, exc)
                continue
            b = before.get(key)
            # the Transcoders component exists only when a camera asked for it at start,
            # and follows cameras added and removed, not updated
            updated = b is not None and b.sub_stream != c.sub_stream
            added = b is None and c.sub_stream == "transcode"
            if updated or (added and "transcode" not in self.stats_sources):
                summary["restart_needed"].append(
                    f"camera {key!r} sub_stream (the transcoded sub stream is set up at start)"
                )
        refused = cams["refused"]
        effective = [
            before[k] if k in refused else c
            for k, c in after.items()
            if k not in refused or k in before
        ]
        self._sources_pending = (old, dataclasses.replace(new, cameras=tuple(effective)))


# sections whose change needs a restart (listeners, sockets, limits baked in at start)
_RESTART_SECTIONS = (
    "server",
    "rtsp",
    "rtmp",
    "srt",
    "limits",
    "onvif",
    "discovery",
    "http",
    "whip",
    "events",
    "demo",
    "metrics",
    "sources",
)
# keys of those sections that are checked per request, so a reload applies them at once
# (credentials: the next request is checked against the new ones, admitted sessions stay)
_LIVE_KEYS: dict[str, tuple[str, ...]] = {
    "onvif": ("username", "password"),
    "srt": ("passphrase",),
    "metrics": ("token",),
}
# ...unless one of these keys of the same section changed as well (then all need a restart)
_LIVE_UNLESS: dict[str, tuple[str, ...]] = {"onvif": ("enabled", "auth")}


def _keep_overrides(cfg: Config, app: App) -> Config:
    """``cfg`` re-read from the file, with what the command line set at start kept (flags
    win over the file, as at start): [server], the RTP/ONVIF/discovery/SRT ports, demo."""
    cur = app.cfg
    return dataclasses.replace(
        cfg,
        server=cur.server,
        rtsp=dataclasses.replace(
            cfg.rtsp, rtp_port=cur.rtsp.rtp_port, rtcp_port=cur.rtsp.rtcp_port
        ),
        onvif=dataclasses.replace(
            cfg.onvif,
            port_range_start=cur.onvif.port_range_start,
            port_range_end=cur.onvif.port_range_end,
        ),
        discovery=dataclasses.replace(cfg.discovery, port=cur.discovery.port),
        srt=dataclasses.replace(cfg.srt, port=cur.srt.port),
        demo=cur.demo,
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
