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
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from onvifcam.config import CameraConfig, Config, ForwardConfig
from onvifcam.media.stream import Stream, StreamError, StreamRegistry
from onvifcam.redact import redact
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


# ---------------------------------------------------------------------- reload: the diff


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """What runs on one camera path: a file loop, a pull or a primary/backup failover."""

    kind: str  # "file" | "pull" | "failover"
    path: str
    uris: tuple[str, ...] = ()
    on_demand: bool = False
    primary: str = ""
    backup: str = ""

    def describe(self) -> str:
        """A short text for logs and the reload summary (passwords redacted)."""
        if self.kind == "failover":
            return f"failover {self.primary}/{self.backup}"
        uris = ", ".join(redact(u) for u in self.uris)
        return f"{self.kind} {uris}{' on demand' if self.on_demand else ''}"


def source_spec(cam: CameraConfig) -> SourceSpec | None:
    """The source a camera's configuration asks for (None: pushed by clients)."""
    path = cam.path.strip("/")
    if cam.primary:
        return SourceSpec("failover", path, primary=cam.primary.strip("/"),
                          backup=cam.backup.strip("/"))  # fmt: skip
    uris = cam.source_uris
    if not uris:
        return None
    if uris[0].startswith("file:"):
        return SourceSpec("file", path, uris[:1])
    return SourceSpec("pull", path, tuple(uris), on_demand=cam.on_demand)


@dataclasses.dataclass
class SourcePlan:
    """What a reload changes in the running sources, camera by camera (pure data: made by
    :func:`plan_sources`, carried out by :meth:`SourceManager.reconcile`)."""

    stop: list[tuple[str, SourceSpec]] = dataclasses.field(default_factory=list)
    start: list[tuple[str, SourceSpec]] = dataclasses.field(default_factory=list)
    # paths whose source stops with nothing configured in its place: readers are closed
    close_readers: list[str] = dataclasses.field(default_factory=list)
    forward_stop: list[tuple[str, ForwardConfig]] = dataclasses.field(default_factory=list)
    # (path, name, entry)
    forward_start: list[tuple[str, str, ForwardConfig]] = dataclasses.field(default_factory=list)
    placeholder_on: list[str] = dataclasses.field(default_factory=list)  # camera keys
    placeholder_off: list[str] = dataclasses.field(default_factory=list)  # paths
    # camera key -> what changed, for the reload summary ("source", "forward", "offline")
    changed: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when nothing changes."""
        return not self.changed

    def summary(self) -> dict[str, list[str]]:
        """``started``/``stopped``/``restarted`` sources and ``forwards_started``/
        ``forwards_stopped`` (``PATH -> URL``, passwords redacted) for the reload summary."""
        stopped = {k: s for k, s in self.stop}
        started = {k: s for k, s in self.start}
        both = [k for k in started if k in stopped]
        return {
            "started": [f"{k}: {s.describe()}" for k, s in self.start if k not in stopped],
            "stopped": [f"{k}: {s.describe()}" for k, s in self.stop if k not in started],
            "restarted": [f"{k}: {started[k].describe()}" for k in both],
            "forwards_started": [f"{p} -> {redact(f.url)}" for p, _n, f in self.forward_start],
            "forwards_stopped": [f"{p} -> {redact(f.url)}" for p, f in self.forward_stop],
        }


def _key(cam: CameraConfig) -> str:
    return cam.name or cam.path


def _offline(cam: CameraConfig, default: str) -> str:
    return cam.offline or default


def plan_sources(
    old: Sequence[CameraConfig], new: Sequence[CameraConfig], default_offline: str = ""
) -> SourcePlan:
    """Diff two camera lists (``[[cameras]]`` and expanded ``[[fleets]]``) by camera key:
    the sources to stop and start (a changed one is stopped and started again; unchanged
    ones are not in the plan), the forwarders that differ (one entry at a time: the
    others keep their connections), and placeholders of cameras that stay but whose
    ``offline`` changed (added and removed cameras get theirs from the camera registry's
    events). ``default_offline`` is ``[onvif] offline``."""
    plan = SourcePlan()
    before = {_key(c): c for c in old}
    after = {_key(c): c for c in new}
    for key in [*before, *(k for k in after if k not in before)]:
        b, a = before.get(key), after.get(key)
        sb = source_spec(b) if b is not None else None
        sa = source_spec(a) if a is not None else None
        what: list[str] = []
        if sb != sa:
            what.append("source")
            if sb is not None:
                plan.stop.append((key, sb))
            if sa is not None:
                plan.start.append((key, sa))
        fb = Counter((b.path.strip("/"), f) for f in b.forward) if b is not None else Counter()
        fa = Counter((a.path.strip("/"), f) for f in a.forward) if a is not None else Counter()
        if fb != fa:
            what.append("forward")
            gone = fb - fa
            for (path, f), n in gone.items():
                plan.forward_stop.extend([(path, f)] * n)
            fresh = fa - fb
            assert a is not None or not fresh
            for i, f in enumerate(a.forward if a is not None else ()):
                path = a.path.strip("/") if a is not None else ""
                if fresh[(path, f)] > 0:
                    fresh[(path, f)] -= 1
                    plan.forward_start.append((path, f"{key}[{i}]", f))
        if b is not None and a is not None:
            pb = _offline(b, default_offline) == "placeholder"
            pa = _offline(a, default_offline) == "placeholder"
            moved = b.path.strip("/") != a.path.strip("/")
            if pb and (not pa or moved):
                plan.placeholder_off.append(b.path.strip("/"))
            if pa and (not pb or moved):
                plan.placeholder_on.append(key)
            if pa != pb:
                what.append("offline")
        if what:
            plan.changed[key] = what
    kept = {s.path for _k, s in plan.start}
    plan.close_readers = [s.path for _k, s in plan.stop if s.path not in kept]
    return plan


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
        self.registry.add_demand_hook(self._demand)
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
        await self._start_file_groups(
            [(f"cameras[{i}]", c) for i, c in enumerate(self.cfg.cameras)]
        )

    async def _start_file_groups(self, cams: Sequence[tuple[str, CameraConfig]]) -> None:
        """Start the file loops of ``cams`` (where in the config, camera): one per clip."""
        by_source: dict[str, list[tuple[str, CameraConfig]]] = {}
        for where, cam in cams:
            if isinstance(cam.source, str) and cam.source.startswith("file:"):
                by_source.setdefault(cam.source, []).append((where, cam))
        for source, group in by_source.items():
            keys = ", ".join(w for w, _c in group[:3])
            keys += f" and {len(group) - 3} more" if len(group) > 3 else ""
            try:
                streams = [self.registry.get_or_create(c.path) for _w, c in group]
                src = FileLoopSource(
                    streams,
                    self._pool,
                    path_of(source),
                    turn_ms=self.cfg.sources.file_turn_ms,
                )
                await src.start()
            except (ClipError, ValueError, OSError, StreamError) as exc:
                log.error("%s source (%s): %s; the camera stays offline", keys, source, exc)
                continue
            self.sources.append(src)
            paths = [f.stream.path for f in src.feeds]
            more = f" and {len(paths) - 5} more paths" if len(paths) > 5 else ""
            log.info("file source: %s plays in a loop on %s%s", source, ", ".join(paths[:5]), more)

    async def _start_pulls(self) -> None:
        """One PullSource per camera with pull URIs (on_demand ones wait for a reader)."""
        for i, cam in enumerate(self.cfg.cameras):
            self._start_pull(f"cameras[{i}]", cam)

    def _start_pull(self, where: str, cam: CameraConfig) -> None:
        uris = cam.source_uris
        if not uris or uris[0].startswith("file:"):
            return
        try:
            stream = self.registry.get_or_create(cam.path)
        except StreamError as exc:
            log.error("%s source: %s; the camera stays offline", where, exc)
            return
        on_demand = cam.on_demand
        src = PullSource(
            stream, uris, self.cfg.sources, gate=self.gate, bus=self.bus, on_demand=on_demand
        )
        self.pulls[stream.path] = src
        if not on_demand or stream.readers:  # readers kept across a reload: no DESCRIBE comes
            src.start()
        log.info(
            "pull source: %s pulls %s%s",
            stream.path,
            ", ".join(src.info()["uris"]),
            " on demand" if on_demand else "",
        )

    def _demand(self, path: str) -> bool:
        """The registry's demand hook: start the on-demand pull of ``path``, if any."""
        src = self.pulls.get(path)
        return src is not None and src.on_demand and src.demand(path)

    async def _start_failovers(self) -> None:
        """One FailoverSource per camera with primary/backup paths."""
        for i, cam in enumerate(self.cfg.cameras):
            await self._start_failover(f"cameras[{i}]", cam)

    async def _start_failover(self, where: str, cam: CameraConfig) -> None:
        if not cam.primary:
            return
        try:
            stream = self.registry.get_or_create(cam.path)
            for p in (cam.primary, cam.backup):
                self.registry.get_or_create(p)
        except StreamError as exc:
            log.error("%s failover: %s; the camera stays offline", where, exc)
            return
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
                self._start_forwarder(cam.path, f"{cam.name or cam.path}[{i}]", fcfg)

    def _start_forwarder(self, path: str, name: str, fcfg: ForwardConfig) -> None:
        fwd = Forwarder(self.registry, path, fcfg, name, bus=self.bus)
        self.forwarders.append(fwd)
        fwd.start()
        log.info("forward: %s -> %s%s", fwd.path, fwd.url, " (disabled)" if fcfg.disabled else "")

    def forwarders_of(self, path: str) -> list[Forwarder]:
        """The forwarders of one stream path, in configuration order (for the API)."""
        p = self.registry.normalize(path)
        return [f for f in self.forwarders if f.path == p]

    async def reconcile(self, old: Config, new: Config) -> SourcePlan:
        """Apply a reload's camera changes to the running sources (:func:`plan_sources`):
        stop what is gone or changed, close the readers of a path left without a source,
        start what is new or changed, and start/stop only the forwarders that differ.
        Everything else (other cameras' sources, forwarders, readers) is not touched.
        ``new`` becomes the manager's configuration; its camera list must hold only the
        cameras the camera registry accepted."""
        plan = plan_sources(old.cameras, new.cameras, self.cfg.onvif.offline)
        self.cfg = dataclasses.replace(self.cfg, cameras=new.cameras)
        if plan.empty or not self._started:
            return plan
        why = "removed from the configuration (reload)"
        for path, fcfg in plan.forward_stop:
            fwd = next((f for f in self.forwarders if f.path == path and f.cfg == fcfg), None)
            if fwd is not None:
                self.forwarders.remove(fwd)
                await fwd.stop()
                log.info("forward: %s -> %s stopped: %s", fwd.path, fwd.url, why)
        for key, spec in plan.stop:
            await self._stop_source(spec, why)
            log.info("reload: camera %r: %s stopped", key, spec.describe())
        for path in plan.close_readers:
            stream = self.registry.get(path)
            if stream is not None and stream.publisher is None and stream.readers:
                n = len(stream.readers)
                stream.close(f"its source was {why}")
                log.info("reload: %s: %d readers closed (its source was removed)", path, n)
        for path in plan.placeholder_off:
            await self.placeholders.remove(path)
        files: list[tuple[str, CameraConfig]] = []
        cams = {c.name or c.path: c for c in new.cameras}
        for key, spec in plan.start:
            cam = cams[key]
            where = f"camera {key!r}"
            if spec.kind == "pull":
                self._start_pull(where, cam)
            elif spec.kind == "failover":
                await self._start_failover(where, cam)
            else:
                files.append((where, cam))
        await self._start_file_groups(files)
        if self.cameras is not None:
            for key in plan.placeholder_on:
                cam_obj = self.cameras.cameras.get(key)
                if cam_obj is not None:
                    self._camera_added(cam_obj)
        for path, name, fcfg in plan.forward_start:
            self._start_forwarder(path, name, fcfg)
        return plan

    async def _stop_source(self, spec: SourceSpec, reason: str) -> None:
        """Stop the running source ``spec`` describes (it unpublishes; readers stay)."""
        if spec.kind == "pull":
            pull = self.pulls.pop(spec.path, None)
            if pull is not None:
                await pull.stop()
        elif spec.kind == "failover":
            fo = self.failovers.pop(spec.path, None)
            if fo is not None:
                self.sources.remove(fo)
                await fo.stop()
        else:
            clip = path_of(spec.uris[0])
            for src in list(self.sources):
                if not isinstance(src, FileLoopSource) or src.path != clip:
                    continue
                for feed in [f for f in src.feeds if f.stream.path == spec.path]:
                    feed.stream.unpublish(feed, reason)
                    src.detach(feed, reason)
                if not src.feeds:
                    self.sources.remove(src)
                    await src.stop()

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
