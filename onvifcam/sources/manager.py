"""Starts and stops the configured sources: the ``[demo]`` test-pattern camera, file loops,
pull sources (``source = "rtsp://..."`` or a list), primary/backup failover cameras, the
offline placeholders of cameras with ``offline = "placeholder"``, and the forwarders of
cameras with ``forward`` entries.

A source is a publisher of a stream like any pushing client; the manager creates its stream
in the registry, starts it with the app and stops it (unpublishing) before the streams
close. Encoding work runs in the manager's small thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from onvifcam.config import CameraConfig, Config
from onvifcam.media.stream import Stream, StreamError, StreamRegistry
from onvifcam.sources.failover import FailoverSource
from onvifcam.sources.file import ClipError, FileLoopSource, path_of
from onvifcam.sources.forward import Forwarder
from onvifcam.sources.placeholder import Placeholders
from onvifcam.sources.pull import PullSource
from onvifcam.sources.testpattern import TestPatternSource

if TYPE_CHECKING:
    from onvifcam.auth.gate import Gate
    from onvifcam.cameras import Camera, CameraRegistry
    from onvifcam.events import EventBus

log = logging.getLogger(__name__)

_WORKERS = 2


def with_demo_camera(cfg: Config) -> Config:
    """``cfg`` with the ONVIF camera of the enabled ``[demo]`` appended to ``cameras``."""
    d = cfg.demo
    if not d.enabled:
        return cfg
    cam = CameraConfig(
        name=d.name,
        path=d.path.strip("/"),
        width=d.width,
        height=d.height,
        fps=d.fps,
        codec="H264",
        model="onvifcam demo (test pattern)",
    )
    return dataclasses.replace(cfg, cameras=(*cfg.cameras, cam))


class SourceManager:
    """The app component that runs the sources the configuration asks for."""

    def __init__(
        self,
        cfg: Config,
        registry: StreamRegistry,
        cameras: CameraRegistry | None = None,
        push_urls: Callable[[str], list[str]] | None = None,
        *,
        gate: Gate | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.cameras = cameras
        self.gate = gate
        self.bus = bus
        self.sources: list[TestPatternSource | FileLoopSource | FailoverSource] = []
        self.pulls: dict[str, PullSource] = {}  # by camera path
        self.failovers: dict[str, FailoverSource] = {}  # by camera path
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="source")
        self.placeholders = Placeholders(registry, self._pool, push_urls or (lambda _p: []))
        self.forwarders: list[Forwarder] = []
        self._started = False

    async def start(self) -> None:
        """Start every configured source, then the placeholders of offline cameras."""
        await self._start_demo()
        await self._start_files()
        await self._start_pulls()
        await self._start_failovers()
        self._start_forwarders()
        self._started = True
        if self.cameras is not None:
            self.registry.listeners.append(self._stream_changed)
            self.cameras.on_added.append(self._camera_added)
            self.cameras.on_removed.append(self._camera_removed)
            for cam in list(self.cameras.cameras.values()):
                self._camera_added(cam)
            # readers that connect once the server is ready find the placeholders there
            await asyncio.gather(*self.placeholders._tasks, return_exceptions=True)

    def _offline_mode(self, cam: Camera) -> str:
        return cam.cfg.offline or self.cfg.onvif.offline

    def _camera_added(self, cam: Camera) -> None:
        if not self._started or self._offline_mode(cam) != "placeholder":
            return
        s = self.registry.get(cam.path)
        if s is None or s.publisher is None:
            v = cam.video("main")
            a = cam.audio("main")
            audio = None
            if a is not None and a.codec.upper() == "MPEG4-GENERIC" and a.sample_rate > 0:
                audio = (a.sample_rate, a.channels)  # mirror the last publisher's layout
            self.placeholders.ensure(cam.path, cam.name, v.width, v.height, audio)

    def _camera_removed(self, cam: Camera) -> None:
        task = asyncio.get_running_loop().create_task(self.placeholders.remove(cam.path))
        self.placeholders._tasks.add(task)
        task.add_done_callback(self.placeholders._tasks.discard)

    def _stream_changed(self, stream: Stream, what: str) -> None:
        if what != "unpublish" or self.cameras is None:
            return
        for cam in list(self.cameras.cameras.values()):
            if cam.path == stream.path:
                self._camera_added(cam)

    async def _start_files(self) -> None:
        """One FileLoopSource per distinct ``source``: cameras sharing a clip share its demux."""
        by_source: dict[str, list[tuple[int, CameraConfig]]] = {}
        for i, cam in enumerate(self.cfg.cameras):
            if isinstance(cam.source, str) and cam.source.startswith("file:"):
                by_source.setdefault(cam.source, []).append((i, cam))
        for source, cams in by_source.items():
            keys = ", ".join(f"cameras[{i}]" for i, _c in cams[:3])
            keys += f" and {len(cams) - 3} more" if len(cams) > 3 else ""
            try:
                streams = [self.registry.get_or_create(c.path) for _i, c in cams]
                src = FileLoopSource(
                    streams,
                    self._pool,
                    path_of(source),
                    turn_ms=self.cfg.sources.file_turn_ms,
                )
                await src.start()
            except (ClipError, ValueError, OSError) as exc:
                log.error("%s source (%s): %s; the camera stays offline", keys, source, exc)
                continue
            self.sources.append(src)
            paths = [f.stream.path for f in src.feeds]
            more = f" and {len(paths) - 5} more paths" if len(paths) > 5 else ""
            log.info("file source: %s plays in a loop on %s%s", source, ", ".join(paths[:5]), more)

    async def _start_pulls(self) -> None:
        """One PullSource per camera with pull URIs (on_demand ones wait for a reader)."""
        for i, cam in enumerate(self.cfg.cameras):
            uris = cam.source_uris
            if not uris or uris[0].startswith("file:"):
                continue
            try:
                stream = self.registry.get_or_create(cam.path)
            except StreamError as exc:
                log.error("cameras[%d] source: %s; the camera stays offline", i, exc)
                continue
            on_demand = cam.on_demand
            src = PullSource(
                stream, uris, self.cfg.sources, gate=self.gate, bus=self.bus, on_demand=on_demand
            )
            self.pulls[stream.path] = src
            if on_demand:
                self.registry.add_demand_hook(src.demand)
            else:
                src.start()
            log.info(
                "pull source: %s pulls %s%s",
                stream.path,
                ", ".join(src.info()["uris"]),
                " on demand" if on_demand else "",
            )

    async def _start_failovers(self) -> None:
        """One FailoverSource per camera with primary/backup paths."""
        for i, cam in enumerate(self.cfg.cameras):
            if not cam.primary:
                continue
            try:
                stream = self.registry.get_or_create(cam.path)
                for p in (cam.primary, cam.backup):
                    self.registry.get_or_create(p)
            except StreamError as exc:
                log.error("cameras[%d] failover: %s; the camera stays offline", i, exc)
                continue
            src = FailoverSource(
                stream,
                self.registry,
                cam.primary,
                cam.backup,
                self.cfg.sources,
                gate=self.gate,
                bus=self.bus,
            )
            await src.start()
            self.failovers[stream.path] = src
            self.sources.append(src)
            log.info(
                "failover: %s shows %s, or %s while it is gone for %g s",
                stream.path,
                cam.primary,
                cam.backup,
                self.cfg.sources.failover_after,
            )

    def source(self, path: str) -> PullSource | FailoverSource | None:
        """The pull or failover source of a camera path (for the API)."""
        p = path.strip("/")
        return self.pulls.get(p) or self.failovers.get(p)

    def switchable(self) -> list[object]:
        """The sources the API lists and switches (``/api/sources``): running sources and
        pull sources (a failed pull is enabled again there)."""
        return [*self.sources, *self.pulls.values()]

    def _start_forwarders(self) -> None:
        """One Forwarder per ``forward`` entry of every camera."""
        for cam in self.cfg.cameras:
            for i, fcfg in enumerate(cam.forward):
                name = f"{cam.name or cam.path}[{i}]"
                fwd = Forwarder(self.registry, cam.path, fcfg, name, bus=self.bus)
                self.forwarders.append(fwd)
                fwd.start()
                log.info(
                    "forward: %s -> %s%s",
                    fwd.path,
                    fwd.url,
                    " (disabled)" if fcfg.disabled else "",
                )

    def forwarders_of(self, path: str) -> list[Forwarder]:
        """The forwarders of one stream path, in configuration order (for the API)."""
        p = self.registry.normalize(path)
        return [f for f in self.forwarders if f.path == p]

    async def _start_demo(self) -> None:
        d = self.cfg.demo
        if not d.enabled:
            return
        assert self._pool is not None
        src = TestPatternSource(
            self.registry.get_or_create(d.path),
            self._pool,
            title=d.name,
            width=d.width,
            height=d.height,
            fps=d.fps,
            bitrate_kbps=d.bitrate_kbps,
            idle_keyframe_interval=d.idle_keyframe_interval,
            tone=d.tone,
        )
        await src.start()
        self.sources.append(src)
        log.info(
            "demo: test pattern %dx%d at %g fps on path %s (encoded only while read; "
            "--no-demo or [demo] enabled = false turns it off)",
            d.width,
            d.height,
            d.fps,
            d.path,
        )

    async def stop(self) -> None:
        """Stop every source (they unpublish) and the worker threads."""
        self._started = False
        if self._stream_changed in self.registry.listeners:
            self.registry.listeners.remove(self._stream_changed)
        await asyncio.gather(*(f.stop() for f in self.forwarders), return_exceptions=True)
        self.forwarders.clear()
        await self.placeholders.stop()
        for pull in self.pulls.values():
            await pull.stop()
        self.pulls.clear()
        self.failovers.clear()
        for src in reversed(self.sources):
            try:
                await src.stop()
            except Exception:
                log.exception("stopping source %s failed", src.description)
        self.sources.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)  # never block the loop
            self._pool = None

    def tick(self, now: float) -> None:
        """Nothing to do once a second (sources pace themselves)."""

    def ready_info(self) -> dict[str, str]:
        """``demo_path=PATH`` in the ready line when the demo runs."""
        demo = any(isinstance(s, TestPatternSource) for s in self.sources)
        return {"demo_path": self.cfg.demo.path.strip("/")} if demo else {}

    def stats(self) -> dict[str, Any]:
        """Counters of every running source and of the placeholders."""
        return {
            "sources": [s.stats() for s in self.sources],
            "pulls": [p.info() for p in self.pulls.values()],
            "placeholders": self.placeholders.stats(),
            "forwarders": [f.stats() for f in self.forwarders],
        }
