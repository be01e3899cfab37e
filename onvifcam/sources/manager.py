"""Starts and stops the configured sources: the ``[demo]`` test-pattern camera, the
offline placeholders of cameras with ``offline = "placeholder"``, file loops, and the
forwarders of cameras with ``forward`` entries.

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
from onvifcam.media.stream import Stream, StreamRegistry
from onvifcam.sources.file import ClipError, FileLoopSource, path_of
from onvifcam.sources.forward import Forwarder
from onvifcam.sources.placeholder import Placeholders
from onvifcam.sources.testpattern import TestPatternSource

if TYPE_CHECKING:
    from onvifcam.cameras import Camera, CameraRegistry

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
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.cameras = cameras
        self.sources: list[TestPatternSource | FileLoopSource] = []
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="source")
        self.placeholders = Placeholders(registry, self._pool, push_urls or (lambda _p: []))
        self.forwarders: list[Forwarder] = []
        self._started = False

    async def start(self) -> None:
        """Start every configured source, then the placeholders of offline cameras."""
        await self._start_demo()
        await self._start_files()
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
            if cam.source:
                by_source.setdefault(cam.source, []).append((i, cam))
        for source, cams in by_source.items():
            keys = ", ".join(f"cameras[{i}]" for i, _c in cams[:3])
            keys += f" and {len(cams) - 3} more" if len(cams) > 3 else ""
            try:
                streams = [self.registry.get_or_create(c.path) for _i, c in cams]
                src = FileLoopSource(streams, self._pool, path_of(source))
                await src.start()
            except (ClipError, ValueError, OSError) as exc:
                log.error("%s source (%s): %s; the camera stays offline", keys, source, exc)
                continue
            self.sources.append(src)
            paths = [f.stream.path for f in src.feeds]
            more = f" and {len(paths) - 5} more paths" if len(paths) > 5 else ""
            log.info("file source: %s plays in a loop on %s%s", source, ", ".join(paths[:5]), more)

    def _start_forwarders(self) -> None:
        """One Forwarder per ``forward`` entry of every camera."""
        for cam in self.cfg.cameras:
            for i, fcfg in enumerate(cam.forward):
                fwd = Forwarder(self.registry, cam.path, fcfg, f"{cam.name or cam.path}[{i}]")
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
        return {"demo_path": self.cfg.demo.path.strip("/")} if self.sources else {}

    def stats(self) -> dict[str, Any]:
        """Counters of every running source and of the placeholders."""
        return {
            "sources": [s.stats() for s in self.sources],
            "placeholders": self.placeholders.stats(),
            "forwarders": [f.stats() for f in self.forwarders],
        }
