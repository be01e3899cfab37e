"""Starts and stops the configured sources (today: the ``[demo]`` test-pattern camera).

A source is a publisher of a stream like any pushing client; the manager creates its stream
in the registry, starts it with the app and stops it (unpublishing) before the streams
close. Encoding work runs in the manager's small thread pool, never on the event loop.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from onvifcam.config import CameraConfig, Config
from onvifcam.media.stream import StreamRegistry
from onvifcam.sources.testpattern import TestPatternSource

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

    def __init__(self, cfg: Config, registry: StreamRegistry) -> None:
        self.cfg = cfg
        self.registry = registry
        self.sources: list[TestPatternSource] = []
        self._pool: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start every configured source."""
        d = self.cfg.demo
        if not d.enabled:
            return
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="source")
        src = TestPatternSource(
            self.registry.get_or_create(d.path),
            self._pool,
            title=d.name,
            width=d.width,
            height=d.height,
            fps=d.fps,
            bitrate_kbps=d.bitrate_kbps,
            idle_keyframe_interval=d.idle_keyframe_interval,
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
        for src in reversed(self.sources):
            try:
                await src.stop()
            except Exception:
                log.exception("stopping source %s failed", src.description)
        self.sources.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def tick(self, now: float) -> None:
        """Nothing to do once a second (sources pace themselves)."""

    def ready_info(self) -> dict[str, str]:
        """``demo_path=PATH`` in the ready line when the demo runs."""
        return {"demo_path": self.cfg.demo.path.strip("/")} if self.sources else {}

    def stats(self) -> list[dict[str, Any]]:
        """Counters of every running source."""
        return [s.stats() for s in self.sources]
