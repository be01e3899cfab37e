"""The camera registry: every camera by key, with add / update / remove and notifications.

Cameras come from ``[[cameras]]`` entries, from :meth:`CameraRegistry.add` at run time and,
unless ``[onvif] auto_cameras`` is off, from every path that gets a publisher. An auto
camera is written to disk only once its stream has carried video (a keyframe on a video
track); one whose publisher leaves before that is removed at once, and with
``[onvif] auto_expire`` an auto camera offline for that long is removed with its state file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from onvifcam.cameras.camera import Camera, slugify
from onvifcam.cameras.logring import ORPHANED, CameraLogHandler
from onvifcam.cameras.model import CameraState
from onvifcam.config import CameraConfig, Config, ConfigError, camera_from_table
from onvifcam.events import CameraAdded, CameraRemoved, CameraUpdated, EventBus
from onvifcam.media.stream import Stream, StreamRegistry
from onvifcam.state import StateStore

log = logging.getLogger(__name__)

API_KEY = "api"  # state document key holding the configuration of an API-made camera


class RegistryError(ValueError):
    """A camera the registry cannot add or update (the message says why)."""


def _plain(value: Any) -> Any:
    """``value`` as JSON-serialisable data (nested dataclasses such as forward entries
    become dicts, tuples lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


@dataclass
class CameraRegistry:
    """Every camera by key, created from the configuration, at run time (:meth:`add`) and
    from publishes (auto cameras). Subscribers of ``on_added``, ``on_updated`` (old, new)
    and ``on_removed`` get the Camera objects (the web component, which owns their
    sockets); everyone else reads CameraAdded / CameraUpdated / CameraRemoved on ``bus``."""

    cfg: Config
    store: StateStore
    streams: StreamRegistry
    cameras: dict[str, Camera] = field(default_factory=dict)
    on_added: list[Callable[[Camera], None]] = field(default_factory=list)
    on_updated: list[Callable[[Camera, Camera], None]] = field(default_factory=list)
    on_removed: list[Callable[[Camera], None]] = field(default_factory=list)
    loaded: bool = False
    bus: EventBus | None = None  # CameraAdded / CameraUpdated / CameraRemoved go here
    counters: dict[str, int] = field(
        default_factory=lambda: {"added": 0, "updated": 0, "removed": 0, "refused": 0}
    )
    generation: int = 0  # changes whenever a camera is added or removed
    log_handler: CameraLogHandler | None = None  # the cameras' GetSystemLog lines

    def load(self) -> None:
        """Create the configured cameras, restore auto cameras seen before, and add auto
        cameras for paths that went live before the registry was loaded."""
        self.loaded = True
        self._attach_log()
        for c in self.cfg.cameras:
            cam = Camera(c.name or c.path, c, self.cfg, self.store, self.streams, auto=False)
            if cam.doc.pop(API_KEY, None) is not None:
                log.info("onvif: camera %r is in the configuration file now; it wins", cam.name)
                cam.save()
            self._add(cam)
        keys = self.store.keys()
        self._restore_api(keys)
        if not self.cfg.onvif.auto_cameras:
            return
        for key in keys:
            if key in self.cameras:
                continue
            state = CameraState.from_json(self.store.load(key))
            if state.auto and state.path and not self.claimed(state.path):
                cam = self._auto(state.path)
                cam.offline_since = self._offline_since(cam, state)
        for s in self.streams.online():
            if not self.claimed(s.path):
                self._auto(s.path, persist=False)

    def _restore_api(self, keys: list[str]) -> None:
        """Re-create the cameras made or changed through the HTTP API (their configuration
        is kept in their state document, beside their identity)."""
        for key in keys:
            if key in self.cameras:
                continue
            doc = self.store.load(key)
            table = doc.get(API_KEY)
            if not isinstance(table, dict):
                continue
            where = str(self.store.path(key))
            try:
                cfg = camera_from_table(table, self.cfg, f"{where}: {API_KEY}")
                self._check(key, cfg, None)
            except (ConfigError, RegistryError) as exc:
                log.error("onvif: not restoring API camera %r: %s", key, exc)
                continue
            state = CameraState.from_json(doc)
            state.auto = False
            cam = Camera(key, cfg, self.cfg, self.store, self.streams, auto=False, state=state)
            self._add(cam)

    @staticmethod
    def api_table(cfg: CameraConfig) -> dict[str, Any]:
        """The keys of ``cfg`` that differ from the defaults (what the state file keeps)."""
        default = CameraConfig()
        return {
            f.name: _plain(getattr(cfg, f.name))
            for f in dataclasses.fields(cfg)
            if getattr(cfg, f.name) != getattr(default, f.name)
        }

    @staticmethod
    def made_by_api(cam: Camera) -> bool:
        """Whether ``cam`` was made or last changed through the HTTP API."""
        return isinstance(cam.doc.get(API_KEY), dict)

    def _attach_log(self) -> None:
        """Keep each camera's recent log lines (GetSystemLog); the handler lets go of the
        registry once it is gone (it holds a weak reference only)."""
        if self.log_handler is not None:
            return
        ref = weakref.ref(self)
        logger = logging.getLogger("onvifcam")
        # handlers of registries that are gone; never removed from inside emit, where the
        # logger is iterating over its handlers (removing one there skips the next)
        for old in list(logger.handlers):
            if isinstance(old, CameraLogHandler) and old.orphaned():
                logger.removeHandler(old)

        def cameras() -> list[Camera]:
            reg = ref()
            return list(reg.cameras.values()) if reg is not None else []

        def generation() -> int:
            reg = ref()
            return reg.generation if reg is not None else ORPHANED

        handler = CameraLogHandler(cameras, generation)
        self.log_handler = handler
        logger.addHandler(handler)

    def close(self) -> None:
        """Detach the log handler."""
        if self.log_handler is not None:
            logging.getLogger("onvifcam").removeHandler(self.log_handler)
            self.log_handler = None

    def _offline_since(self, cam: Camera, state: CameraState) -> float | None:
        """When a restored auto camera was last online: recorded, else its file's age."""
        if cam.online:
            return None
        if state.last_online is not None:
            return state.last_online
        try:
            return self.store.path(cam.key).stat().st_mtime
        except OSError:
            return time.time()

    def claimed(self, path: str) -> bool:
        """True when some camera shows ``path`` as its main or sub stream."""
        return any(path in (c.path, c.sub_path) for c in self.cameras.values())

    def _auto(self, path: str, persist: bool = True) -> Camera:
        """An auto camera for ``path``; a new one (``persist`` False) stays in memory until
        its stream carries video, unless a state file for it exists already."""
        if not persist and self.store.path(path).exists():
            persist = True
        cam = Camera(
            path,
            CameraConfig(name=path, path=path),
            self.cfg,
            self.store,
            self.streams,
            auto=True,
            persist=persist,
        )
        self._add(cam)
        return cam

    @staticmethod
    def carried_video(cam: Camera) -> bool:
        """Whether the camera's main stream has delivered a keyframe on a video track."""
        s = cam.stream("main")
        return s is not None and s.video_track is not None and s.stats.keyframes_in > 0

    def _keep(self, cam: Camera) -> None:
        """Persist an auto camera whose stream has become a real video stream."""
        if not cam.persist and self.carried_video(cam):
            cam.persist = True
            cam.save()
            log.info("onvif: camera %r carries video; its identity is saved", cam.name)

    def add(self, cfg: CameraConfig, persist_config: bool = False) -> Camera:
        """Add a configured camera at run time (as a ``[[cameras]]`` entry would); raises
        RegistryError when its name or a stream path is taken or ``max_cameras`` is reached.
        With ``persist_config`` (the HTTP API) its configuration is written with its state
        (one atomic write) and it comes back after a restart; OSError when that fails."""
        key = cfg.name or cfg.path
        self._check(key, cfg, None)
        state = None
        if persist_config:
            state = CameraState.from_json(self.store.load(key))  # an earlier identity stays
            state.auto = False
            state.extra[API_KEY] = self.api_table(cfg)
        writes = self.store.writes
        cam = Camera(key, cfg, self.cfg, self.store, self.streams, auto=False, state=state)
        if persist_config and self.store.writes == writes:
            cam.save()  # the identity came with the stored state: nothing was written yet
        self._add(cam)
        log.info("onvif: camera %r added", cam.name)
        return cam

    def update(self, cam: Camera, cfg: CameraConfig, persist_config: bool = False) -> Camera:
        """Replace a camera's configuration; it keeps its key, identity and everything
        clients set (its persisted state). Returns the new Camera that takes its place (an
        auto camera becomes a configured one). Raises RegistryError as :meth:`add` does.
        With ``persist_config`` (the HTTP API) the configuration is saved first: OSError
        when that fails, and then nothing has changed."""
        if self.cameras.get(cam.key) is not cam:
            raise RegistryError(f"no camera {cam.key!r}")
        self._check(cam.key, cfg, cam)
        if persist_config:
            state = cam.state.copy()
            state.auto = False
            state.extra[API_KEY] = self.api_table(cfg)
            self.store.save(cam.key, state.to_json())  # raises before anything changed
            cam.state.auto = False
            cam.state.extra[API_KEY] = state.extra[API_KEY]
        new = Camera(cam.key, cfg, self.cfg, self.store, self.streams, auto=False, state=cam.state)
        new.reboots = cam.reboots
        new.offline_since = cam.offline_since
        new.on_change = self._camera_changed

        new.log_lines.extend(cam.log_lines)
        self.generation += 1
        if new.slug != cam.slug:
            new.slug = self._unique_slug(new)
        self.cameras[cam.key] = new
        cam.persist = False  # the old object must not write over the new one's state
        new.save()
        self.counters["updated"] += 1
        log.info("onvif: camera %r updated", new.name)
        for fn in self.on_updated:
            fn(cam, new)
        if self.bus is not None:
            self.bus.publish(CameraUpdated(new.key))
        return new

    def _check(self, key: str, cfg: CameraConfig, replacing: Camera | None) -> None:
        why = ""
        if not key or not cfg.path:
            why = "a camera needs a path"
        elif replacing is None and key in self.cameras:
            why = f"a camera named {key!r} exists"
        elif replacing is None and len(self.cameras) >= self.cfg.onvif.max_cameras:
            why = f"[onvif] max_cameras = {self.cfg.onvif.max_cameras} reached"
        else:
            paths = {self.streams.normalize(p) for p in (cfg.path, cfg.sub_path) if p}
            for other in self.cameras.values():
                if other is not replacing and paths & {other.path, other.sub_path} - {""}:
                    why = f"camera {other.name!r} shows that path"
                    break
        if why:
            self.counters["refused"] += 1
            raise RegistryError(why)

    def _unique_slug(self, cam: Camera) -> str:
        if any(o.slug == cam.slug for o in self.cameras.values() if o.key != cam.key):
            return f"{cam.slug}-{hashlib.sha1(cam.key.encode()).hexdigest()[:6]}"
        return cam.slug

    def stats(self) -> dict[str, int | float | dict[str, int]]:
        """Cameras now (in total, auto, online) and changes since start."""
        cams = list(self.cameras.values())
        return {
            "cameras": len(cams),
            "auto": sum(1 for c in cams if c.auto),
            "online": sum(1 for c in cams if c.online),
            **self.counters,
        }

    def remove(self, cam: Camera, reason: str) -> None:
        """Remove a camera for good: from the registry, its endpoint (listeners) and its
        state file."""
        if self.cameras.get(cam.key) is not cam:
            return
        del self.cameras[cam.key]
        self.generation += 1
        if cam.persist:
            try:
                self.store.path(cam.key).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("onvif: cannot delete %s (%s)", self.store.path(cam.key), exc)
        cam.persist = False
        self.counters["removed"] += 1
        log.info("onvif: camera %r removed: %s", cam.name, reason)
        for fn in self.on_removed:
            fn(cam)
        if self.bus is not None:
            self.bus.publish(CameraRemoved(cam.key))

    def _add(self, cam: Camera) -> None:
        for other in self.cameras.values():
            if other.slug == cam.slug:
                cam.slug = f"{cam.slug}-{hashlib.sha1(cam.key.encode()).hexdigest()[:6]}"
            # copied state files: regenerate the stored identity (a configured mac or serial
            # is the operator's choice; a clash there would regenerate the EPR on every start)
            if other.uuid == cam.uuid or other.state.mac == cam.state.mac:
                cam.regenerate_identity()
            if other.mac == cam.mac:
                log.warning("onvif: cameras %r and %r have the same MAC", other.name, cam.name)
        self.cameras[cam.key] = cam
        cam.on_change = self._camera_changed

        self.generation += 1
        self.counters["added"] += 1
        for fn in self.on_added:
            fn(cam)
        if self.bus is not None:
            self.bus.publish(CameraAdded(cam.key, cam.name))

    def _camera_changed(self, cam: Camera) -> None:
        """A client changed what a camera announces (over ONVIF): CameraUpdated."""
        if self.bus is not None and self.cameras.get(cam.key) is cam:
            self.bus.publish(CameraUpdated(cam.key))

    def stream_changed(self, stream: Stream, what: str) -> None:
        """StreamRegistry listener: auto cameras on publish, last-seen values on changes."""
        path = stream.path
        if not self.loaded:
            return
        if what == "publish" and self.cfg.onvif.auto_cameras and not self.claimed(path):
            if len(self.cameras) >= self.cfg.onvif.max_cameras:
                log.warning("onvif: not creating a camera for %s: max_cameras reached", path)
                return
            cam = self._auto(path, persist=False)
            log.info("onvif: new camera %r for path %s", cam.name, path)
        for cam in list(self.cameras.values()):
            if cam.auto and cam.path == path:
                if what == "unpublish" and not cam.persist and not self.carried_video(cam):
                    self.remove(cam, "its publisher left before sending any video")
                    continue
                self._keep(cam)
                if what == "publish":
                    cam.offline_since = None
                elif what == "unpublish":
                    cam.offline_since = time.time()
                    cam.state.last_online = cam.offline_since
            for which, p in (("main", cam.path), ("sub", cam.sub_path)):
                if p == path and p:
                    writes = self.store.writes
                    cam.remember_stream(which)
                    if what == "unpublish" and cam.auto and self.store.writes == writes:
                        cam.save()  # last_online

    def rtsp_users(self, path: str) -> tuple[list[tuple[str, str]], bool]:
        """ONVIF users (name, password) of the cameras showing ``path``, and whether one of
        those cameras requires them for reading it over RTSP."""
        path = self.streams.normalize(path)
        users: list[tuple[str, str]] = []
        required = False
        for c in self.cameras.values():
            if path and path in (c.path, c.sub_path):
                users.extend((u.name, u.password) for u in c.users)
                required = required or c.rtsp_needs_users
        return users, required

    def find(self, name: str) -> Camera | None:
        """A camera by name, key, slug or path (case-insensitive slug as a last resort)."""
        for c in self.cameras.values():
            if name in (c.name, c.key, c.slug, c.path):
                return c
        low = name.lower()
        for c in self.cameras.values():
            if c.slug.lower() == low or slugify(name).lower() == c.slug.lower():
                return c
        return None

    def tick(self, now: float | None = None) -> None:
        """Once a second: remember measured rates of live streams, save auto cameras whose
        stream has carried video, remove auto cameras offline longer than ``auto_expire``.
        ``now`` is UNIX time (default: the clock)."""
        now = time.time() if now is None else now
        expire = self.cfg.onvif.auto_expire
        for c in list(self.cameras.values()):
            c.measure()
            if not c.auto:
                continue
            self._keep(c)
            since = c.offline_since
            if expire > 0 and since is not None and not c.online and now - since >= expire:
                self.remove(
                    c, f"offline for {now - since:.0f} s ([onvif] auto_expire = {expire:g})"
                )
