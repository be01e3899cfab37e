"""The HTTP API on the main port: cameras, sessions, events (recent and live as Server-Sent
Events), sources and forwards, and its OpenAPI 3 description (:mod:`.openapi`).

Every route but ``GET /api/health`` needs the admin credential (``[api]``): HTTP Basic with
``[api] username``/``password`` (by default the ``[onvif]`` ones, i.e. the generated admin
password) or ``Authorization: Bearer [api] token``. Bad input gets 400 (not JSON), 404 (no
such thing), 409 (conflicts with the running state) or 422 (a field is wrong) with
``{"error": ..., "field": ...}``; a request is checked in full before anything changes.

Cameras made or changed here are written to the state directory with their identity (one
atomic write, :meth:`CameraRegistry.add`) and come back after a restart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hmac
import inspect
import ipaddress
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, Protocol

from aiohttp import web

from onvifcam import __version__
from onvifcam.cameras import Camera, CameraRegistry, RegistryError, slugify
from onvifcam.config import CameraConfig, Config, ConfigError, camera_from_table
from onvifcam.events import Event, EventBus, EventQueue
from onvifcam.media.stream import StreamRegistry
from onvifcam.redact import redact
from onvifcam.web.openapi import UNSAFE_METHODS

log = logging.getLogger(__name__)

CameraUrls = Callable[[Camera], dict[str, Any]]
# (path, host the client used) -> push URLs by kind: rtsp, rtmp, obs_server, obs_key, srt, whip
PushUrls = Callable[[str, str], dict[str, str]]
_KEEPALIVE = 15.0  # seconds between SSE comments on a quiet stream
_NO_STORE = {"Cache-Control": "no-store"}
_ARRIVALS = 8  # distinct (address, port, Host) views of the camera list kept cached


def cameras_json(
    registry: CameraRegistry, now: float, urls: CameraUrls | None = None
) -> dict[str, Any]:
    """Every camera: name, path, identity, online state and video, plus what ``urls`` gives
    for it (the web component: its endpoint ``port``, ``onvif_url``, ``rtsp_url`` and
    ``snapshot_url``)."""
    out = []
    for cam in registry.cameras.values():
        entry = cam.summary()
        if urls is not None:
            entry.update(urls(cam))
        out.append(entry)
    return {"time": now, "cameras": out}


class Site(Protocol):
    """What the API needs from the web component."""

    urls_version: int  # changes whenever a camera's URLs may have changed

    def arrival(self, request: web.Request) -> Hashable: ...

    def camera_urls(self, cam: Camera, arrival: Any) -> dict[str, str | int]: ...

    def request_host(self, arrival: Any) -> str: ...

    async def snapshot_image(self, cam: Camera, request: web.Request) -> web.StreamResponse: ...


class ApiError(Exception):
    """An error answer: status, message and the field to blame."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.field = field

    def response(self) -> web.Response:
        """The JSON error body."""
        body: dict[str, Any] = {"error": str(self)}
        if self.field:
            body["field"] = self.field
        return web.json_response(body, status=self.status, headers=_NO_STORE)


_WHERE = re.compile(r"(\[[\w.]+\](?:[ .][\w.]+)?|\w+(?:\[\d+\])?(?:\.[\w.]+)?): (.+)", re.S)
_UNKNOWN_KEY = re.compile(r"unknown key '([^']*)'")


def config_error_json(text: str, source: str) -> dict[str, str]:
    """A configuration error's text (``FILE: [section].key: reason``) as ``file``, ``key``
    (``section.key`` when one is named, else "") and ``reason``."""
    rest = text.removeprefix(f"{source}: ") if source else text
    key, reason = "", rest
    m = _WHERE.fullmatch(rest)
    if m:
        where, reason = m.group(1), m.group(2)
        if where.startswith("["):
            section, _, tail = where[1:].partition("]")
            key = f"{section}.{tail[1:]}" if tail else section
        else:
            key = where
        unknown = _UNKNOWN_KEY.match(reason)
        if unknown:
            key = f"{key}.{unknown.group(1)}"
    return {"file": source, "key": key, "reason": reason}


def event_json(event: Event) -> dict[str, Any]:
    """An event as JSON: its type name and fields."""
    return {"type": type(event).__name__, **dataclasses.asdict(event)}


def _item_id(obj: object, index: int) -> str:
    ident = getattr(obj, "id", None) or getattr(obj, "name", None)
    if isinstance(ident, str) and ident:
        return slugify(ident)
    desc = str(getattr(obj, "description", "") or type(obj).__name__)
    return f"{index}-{slugify(desc)[:40]}"


_MASK = "********"
# camera keys only the configuration file can set (their pullers, forwarders and failover
# are started with the server)
_FILE_ONLY = ("source", "forward", "primary", "backup")


def cross_site_refusal(request: web.Request, require_json: bool = True) -> web.Response | None:
    """403 for a state-changing request a browser sent from another site (the dashboard's
    HTTP Basic credential would ride along: CSRF), 415 for a body that is not declared
    ``application/json`` (a cross-site HTML form cannot declare it); None when it may go on.
    Clients that send neither ``Origin`` nor ``Sec-Fetch-Site`` (curl, scripts) pass.
    ``require_json=False`` (the trigger route, which cameras and ``curl -d`` call without a
    JSON content type) checks the origin only."""
    if request.method not in UNSAFE_METHODS:
        return None
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if site and site not in ("same-origin", "none"):
        return web.json_response(
            {"error": f"refused: a cross-site browser request (Sec-Fetch-Site: {site[:20]})"},
            status=403,
            headers=_NO_STORE,
        )
    origin = request.headers.get("Origin")
    if origin is not None:
        scheme, _, host = origin.strip().partition("://")
        if scheme.lower() not in ("http", "https") or host.lower() != request.host.lower():
            return web.json_response(
                {
                    "error": f"refused: Origin {origin[:80]!r} is not this server "
                    f"({request.host[:80]!r}); the API takes changes from its own pages "
                    "and from clients that send no Origin"
                },
                status=403,
                headers=_NO_STORE,
            )
    if require_json and request.body_exists and request.content_type != "application/json":
        return web.json_response(
            {
                "error": f"the body must be Content-Type: application/json, not "
                f"{request.content_type[:60]!r}"
            },
            status=415,
            headers=_NO_STORE,
        )
    return None


def config_json(cfg: CameraConfig) -> dict[str, Any]:
    """``cfg`` as JSON for the API: the password masked, passwords and SRT passphrases in
    ``source`` and ``forward[].url`` replaced by ``***``."""
    out = dataclasses.asdict(cfg)
    out["password"] = _MASK if cfg.password else ""
    if isinstance(cfg.source, str):
        out["source"] = redact(cfg.source)
    else:
        out["source"] = [redact(u) for u in cfg.source]
    for f in out["forward"]:
        f["url"] = redact(f["url"])
    return out


class Api:
    """The routes under ``/api`` (and the dashboard's auth) on the main HTTP port."""

    def __init__(
        self,
        cfg: Config,
        cameras: CameraRegistry,
        streams: StreamRegistry,
        bus: EventBus,
        site: Site,
        push: PushUrls | None = None,
    ) -> None:
        self.cfg = cfg
        self.cameras = cameras
        self.streams = streams
        self.bus = bus
        self.site = site
        self.push = push
        self._credentials(cfg)
        a = cfg.api
        self._recent: deque[tuple[int, str, dict[str, Any]]] = deque(maxlen=a.recent_events)
        self._seq = 0
        self._clients: set[EventQueue[tuple[int, str]]] = set()
        # switchable things (sources, forwards) by kind: see :meth:`register`
        self._directories: dict[str, Callable[[], Iterable[object]]] = {}
        self._unsubscribe: Callable[[], None] | None = None
        # POST /api/reload: the app's reload (re-read the configuration file; its summary)
        self.reloader: Callable[[], Awaitable[dict[str, Any]]] | None = None
        self._reload_task: asyncio.Task[dict[str, Any]] | None = None
        self._reloading = False
        # the static part of each camera's list entry (identity, URLs, push commands) as a
        # dict and as its JSON text, per client view (arrival), for one Camera object and
        # one site.urls_version: see :meth:`_static`
        self._static_cache: dict[Hashable, dict[str, tuple[Camera, Any, dict[str, Any], str]]] = {}
        # each camera's encoded list entry with the static text and live values it was made
        # from (a different arrival's static text, or new values, make it again)
        self._entry_cache: dict[str, tuple[str, tuple[Any, ...], bytes]] = {}
        self.started_at = time.time()
        self.counters = {
            "requests": 0,
            "auth_failures": 0,
            "errors": 0,
            "sse_clients_dropped": 0,
            "sse_refused": 0,
            "cross_site_refused": 0,
        }

    def _credentials(self, cfg: Config) -> None:
        a = cfg.api
        self._user = a.username or cfg.onvif.username
        self._password = a.password if a.username else cfg.onvif.password
        # no credential at all: open while ONVIF is on (its auth is off; a warning says
        # so); with ONVIF off there is no generated admin, so the API stays closed (loopback
        # reads excepted) until [api] sets one, or [api] auth = false opens it
        self.open = not a.auth or (not (self._user or a.token) and cfg.onvif.enabled)
        self.no_credential = not (self._user or a.token)

    def reconfigure(self, cfg: Config) -> None:
        """Take a reloaded ``[api]`` section and ``[onvif]`` login: a new token, username or
        password (the API's own, or the ``[onvif]`` one it falls back to) replaces the old one
        at once (the old one stops working), as do ``auth``, ``loopback_read`` and the limits."""
        onvif = dataclasses.replace(
            self.cfg.onvif, username=cfg.onvif.username, password=cfg.onvif.password
        )
        new = dataclasses.replace(self.cfg, api=cfg.api, onvif=onvif)
        if new.api.recent_events != self.cfg.api.recent_events:
            self._recent = deque(self._recent, maxlen=new.api.recent_events)
        self.cfg = new
        self._credentials(new)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Record events from the bus (ring buffer and SSE clients)."""
        if self._unsubscribe is None:
            self._unsubscribe = self.bus.subscribe(self._on_event)
        if self.no_credential and not self.open:
            log.warning(
                "api: [onvif] enabled = false and no [api] token or username: the HTTP API "
                "and dashboard answer loopback reads only; set [api] token to use them"
            )
        if self.open and self.cfg.api.auth:
            log.warning(
                "api: no credentials are configured ([api] token or username, [onvif] "
                "username or the generated admin password): the HTTP API and dashboard are "
                "open to anyone who reaches the HTTP port"
            )

    def stop(self) -> None:
        """End every SSE stream."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for q in list(self._clients):
            q.close()

    def register(self, kind: str, items: Callable[[], Iterable[object]]) -> None:
        """Make things switchable through ``/api/sources``: ``items()`` gives the current
        ones of ``kind`` ("sources", "forwards"...). Each has a ``description`` and may have
        ``id`` or ``name``, ``stats()``, ``status`` (a string, or a method returning one or a
        dict) and ``enable()`` / ``disable()`` (plain or async)."""
        self._directories[kind] = items

    def stats(self) -> dict[str, Any]:
        """Counters: requests, auth failures, error answers, SSE clients."""
        return {**self.counters, "sse_clients": len(self._clients), "events_seen": self._seq}

    def _on_event(self, event: Event) -> None:
        self._seq += 1
        data = event_json(event)
        data["id"] = self._seq
        self._recent.append((self._seq, data["type"], data))
        if self._clients:
            text = json.dumps(data, separators=(",", ":"))
            for q in list(self._clients):
                q.put((self._seq, text))

    # ------------------------------------------------------------------ routes
    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register every /api route (the trigger route stays the web component's)."""
        g = self._guard
        router.add_get("/api/health", self._health)
        router.add_get("/api/openapi.json", g(self._openapi))
        router.add_get("/api/cameras", g(self._list))
        router.add_post("/api/cameras", g(self._create))
        router.add_get("/api/cameras/{name:[\\s\\S]+}/snapshot", g(self._snapshot))
        router.add_get("/api/cameras/{name:[\\s\\S]+}", g(self._get))
        router.add_put("/api/cameras/{name:[\\s\\S]+}", g(self._put))
        router.add_patch("/api/cameras/{name:[\\s\\S]+}", g(self._patch))
        router.add_delete("/api/cameras/{name:[\\s\\S]+}", g(self._delete))
        router.add_get("/api/sessions", g(self._sessions))
        router.add_delete("/api/sessions/{id}", g(self._kick))
        router.add_get("/api/events", g(self._events))
        router.add_get("/api/events/stream", g(self._stream))
        router.add_get("/api/sources", g(self._sources))
        router.add_post("/api/sources/{kind}/{id}/{action}", g(self._switch))
        router.add_post("/api/reload", g(self._reload))

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """aiohttp's own answers under /api (no route, wrong method) as JSON errors."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if not request.path.startswith("/api/") or exc.status < 400:
                raise
            body: dict[str, Any] = {"error": f"{exc.status} {exc.reason}: {request.path[:80]}"}
            headers = dict(_NO_STORE)
            if "Allow" in exc.headers:
                headers["Allow"] = exc.headers["Allow"]
            return web.json_response(body, status=exc.status, headers=headers)

    def authorized(self, request: web.Request) -> bool:
        """Whether the request carries the admin credential (or none is needed: an open
        API, or a read from loopback with ``[api] loopback_read``)."""
        if self.open:
            return True
        if self.cfg.api.loopback_read and request.method in ("GET", "HEAD"):
            peer = request.transport.get_extra_info("peername") if request.transport else None
            with contextlib.suppress(ValueError, TypeError, IndexError):
                if ipaddress.ip_address(str(peer[0]).removeprefix("::ffff:")).is_loopback:
                    return True
        return self.credentialed(request)

    def credentialed(self, request: web.Request) -> bool:
        """Whether the request carries the admin credential (Basic or bearer token), or the
        API is open; loopback reads do not count."""
        if self.open:
            return True
        authz = request.headers.get("Authorization", "")
        scheme, _, value = authz.partition(" ")
        value = value.strip()
        token = self.cfg.api.token
        if scheme.lower() == "bearer" and token:
            return hmac.compare_digest(value.encode(), token.encode())
        if scheme.lower() == "basic" and self._user:
            try:
                user, _, pw = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            ok_user = hmac.compare_digest(user.encode(), self._user.encode())
            ok_pw = hmac.compare_digest(pw.encode(), self._password.encode())
            return ok_user and ok_pw
        return False

    def challenge(self) -> web.Response:
        """401 with a Basic challenge (browsers ask once, then send it with every call)."""
        self.counters["auth_failures"] += 1
        text = "the API needs the admin credential: HTTP Basic or a bearer token"
        if self.no_credential:
            text = (
                "the API needs a credential and none is configured ([onvif] enabled = false "
                "generates no admin): set [api] token or [api] username/password"
            )
        return web.json_response(
            {"error": text},
            status=401,
            headers={"WWW-Authenticate": 'Basic realm="onvifcam", charset="UTF-8"', **_NO_STORE},
        )

    def _guard(
        self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            self.counters["requests"] += 1
            refused = cross_site_refusal(request)
            if refused is not None:
                self.counters["cross_site_refused"] += 1
                return refused
            if not self.authorized(request):
                return self.challenge()
            try:
                return await handler(request)
            except ApiError as exc:
                self.counters["errors"] += 1
                return exc.response()

        return guarded

    # ------------------------------------------------------------------ helpers
    async def _body(self, request: web.Request) -> dict[str, Any]:
        limit = self.cfg.api.max_body
        if (request.content_length or 0) > limit:
            raise ApiError(413, f"the body is larger than {limit} bytes ([api] max_body)")
        try:
            async with asyncio.timeout(self.cfg.http.body_timeout):
                raw = await request.content.read(limit + 1)
        except TimeoutError:
            raise ApiError(408, "the body did not arrive in time") from None
        if len(raw) > limit:
            raise ApiError(413, f"the body is larger than {limit} bytes ([api] max_body)")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            why = str(exc)[:120] if isinstance(exc, ValueError) else "nested too deeply"
            raise ApiError(400, f"the body is not JSON: {why}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object")
        return data

    def _camera(self, request: web.Request) -> Camera:
        name = request.match_info["name"]
        cam = self.cameras.find(name)
        if cam is None:
            raise ApiError(404, f"no camera {name[:80]!r}", "name")
        return cam

    def origin(self, cam: Camera) -> str:
        """Where a camera comes from: "config" (the file), "api" or "auto" (a publish)."""
        if self.cameras.made_by_api(cam):
            return "api"
        return "auto" if cam.auto else "config"

    def _static(self, cam: Camera, arrival: Hashable) -> tuple[dict[str, Any], str]:
        """The parts of ``cam``'s entry that change only when the camera is replaced (an
        update makes a new Camera), its endpoint moves (``site.urls_version``) or its ONVIF
        users come or go: built
        once per client view, kept as a dict and as JSON text (without the braces)."""
        # ONVIF CreateUsers/DeleteUsers can switch a camera's auth on or off
        version = (self.site.urls_version, bool(cam.state.users))
        per = self._static_cache.get(arrival)
        if per is None:
            if len(self._static_cache) >= _ARRIVALS:  # a bounded set of Host headers
                del self._static_cache[next(iter(self._static_cache))]
            per = self._static_cache[arrival] = {}
        hit = per.get(cam.key)
        if hit is not None and hit[0] is cam and hit[1] == version:
            return hit[2], hit[3]
        d: dict[str, Any] = {
            "name": cam.name,
            "slug": cam.slug,
            "path": cam.path,
            "sub_path": cam.sub_path,
            "auto": cam.auto,
            "address": cam.address,
            "uuid": cam.uuid,
            "mac": cam.mac,
            "serial": cam.serial,
            "auth": cam.auth_required,
            "origin": self.origin(cam),
            "api_snapshot_url": f"/api/cameras/{cam.slug}/snapshot",
        }
        d.update(self.site.camera_urls(cam, arrival))
        d["push"] = self.push(cam.path, self.site.request_host(arrival)) if self.push else {}
        text = json.dumps(d, separators=(",", ":"))[1:-1]
        per[cam.key] = (cam, version, d, text)
        if len(per) > 2 * len(self.cameras.cameras) + 16:  # removed cameras' entries
            for key in [k for k in per if k not in self.cameras.cameras]:
                del per[key]
        return d, text

    @staticmethod
    def _live_values(cam: Camera) -> tuple[Any, ...]:
        """What of ``cam``'s entry follows its stream, flat: online, state, video codec,
        width, height, fps, measured rates, kbit/s, readers, publisher address and protocol."""
        s = cam.stream("main")
        v = cam.video("main")
        if s is None:
            return (False, "offline", v.codec, v.width, v.height, v.fps, None, 0.0, 0, 0, "", "")
        if not s.online:
            state = "placeholder" if s.publisher is not None else "offline"
            n = len(s.readers)
            return (False, state, v.codec, v.width, v.height, v.fps, None, 0.0, 0, n, "", "")
        pub = next((i for i in s.sessions() if i.role == "publisher"), None)
        st = s.stats
        return (
            True,
            "online",
            v.codec,
            v.width,
            v.height,
            v.fps,
            tuple(cam.measured("main").items()),
            round(float(st.fps), 2),
            round(st.bitrate / 1000),
            len(s.readers),
            pub.address if pub else "",
            pub.protocol if pub else "",
        )

    @staticmethod
    def _live(values: tuple[Any, ...]) -> dict[str, Any]:
        """The live part of an entry from :meth:`_live_values`."""
        online, state, codec, width, height, fps, measured, rfps, kbps, readers, addr, proto = (
            values
        )
        return {
            "online": online,
            "video": {"codec": codec, "width": width, "height": height, "fps": fps},
            "measured": dict(measured) if measured else {},
            "state": state,
            "codec": codec,
            "width": width,
            "height": height,
            "resolution": f"{width}x{height}",
            "fps": rfps,
            "bitrate_kbps": kbps,
            "readers": readers,
            "publisher_address": addr,
            "publisher_protocol": proto,
        }

    def entry(self, cam: Camera, request: web.Request) -> dict[str, Any]:
        """One camera as the list shows it."""
        static, _text = self._static(cam, self.site.arrival(request))
        return {**static, **self._live(self._live_values(cam))}

    def list_body(self, request: web.Request) -> bytes:
        """``GET /api/cameras`` as JSON: each camera's entry is kept as encoded text and
        made again only when its static part (:meth:`_static`) or its live values changed."""
        arrival = self.site.arrival(request)
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        cache = self._entry_cache
        parts = []
        for cam in list(self.cameras.cameras.values()):
            _d, text = self._static(cam, arrival)
            values = self._live_values(cam)
            hit = cache.get(cam.key)
            if hit is None or hit[0] is not text or hit[1] != values:
                body = ("{" + text + "," + dumps(self._live(values))[1:]).encode()
                hit = cache[cam.key] = (text, values, body)
            parts.append(hit[2])
        if len(cache) > 2 * len(self.cameras.cameras) + 16:  # removed cameras' entries
            for key in [k for k in cache if k not in self.cameras.cameras]:
                del cache[key]
        head = f'{{"time":{time.time()!r},"cameras":['.encode()
        return b"".join((head, b",".join(parts), b"]}"))

    def _config_json(self, cam: Camera) -> dict[str, Any]:
        return config_json(cam.cfg)

    def _validated(self, table: dict[str, Any], cam: Camera | None) -> CameraConfig:
        """The camera configuration of a request body; ApiError 422/409 when it cannot be."""
        if "password" in table and table["password"] == _MASK and cam is not None:
            table = {**table, "password": cam.cfg.password}  # the masked value: unchanged
        default = dataclasses.asdict(CameraConfig())
        for key in _FILE_ONLY:
            if key in table and table[key] not in (default[key], [], None):
                raise ApiError(
                    422,
                    f"{key}: the configuration file sets a camera's {key} (its pullers, "
                    "forwarders and failover start with the server); add the camera as a "
                    "[[cameras]] entry there",
                    key,
                )
        try:
            cfg = camera_from_table(table, self.cfg)
        except ConfigError as exc:
            text = str(exc).replace("camera: cameras[0]: ", "").replace("camera: cameras[0].", "")
            text = text.removeprefix("camera: ").removeprefix("camera.")
            raise ApiError(422, text, getattr(exc, "key", "")) from None
        if cam is not None and (cfg.name or cfg.path) != cam.key:
            raise ApiError(
                422,
                f"the name is the camera's key ({cam.key!r}) and cannot change; "
                "delete the camera and create it under the new name",
                "name",
            )
        if cfg.address and (
            ipaddress.ip_address(cfg.address).is_unspecified
            or ipaddress.ip_address(cfg.address).is_multicast
        ):
            raise ApiError(422, "a camera's own address must be one unicast address", "address")
        if cfg.onvif_port:
            for other in self.cameras.cameras.values():
                if other is cam:
                    continue
                if other.cfg.onvif_port == cfg.onvif_port and other.address == cfg.address:
                    raise ApiError(
                        409, f"camera {other.name!r} uses onvif_port {cfg.onvif_port}", "onvif_port"
                    )
        return cfg

    # ------------------------------------------------------------------ handlers
    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "version": __version__,
                "uptime": round(time.time() - self.started_at, 3),
            },
            headers=_NO_STORE,
        )

    async def _openapi(self, request: web.Request) -> web.Response:
        from onvifcam.web.openapi import spec

        return web.json_response(spec(), headers=_NO_STORE)

    async def _list(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.list_body(request), content_type="application/json", headers=_NO_STORE
        )

    async def _get(self, request: web.Request) -> web.Response:
        cam = self._camera(request)
        e = self.entry(cam, request)
        e["config"] = self._config_json(cam)
        return web.json_response(e, headers=_NO_STORE)

    def _need_onvif(self) -> None:
        if not self.cfg.onvif.enabled:
            raise ApiError(
                409, "cameras are ONVIF devices and [onvif] enabled = false: nothing to change"
            )

    async def _create(self, request: web.Request) -> web.Response:
        self._need_onvif()
        table = await self._body(request)
        cfg = self._validated(table, None)
        try:
            cam = self.cameras.add(cfg, persist_config=True)
        except RegistryError as exc:
            raise ApiError(409, str(exc), "name" if "named" in str(exc) else "path") from None
        except OSError as exc:
            log.error("api: cannot save camera %r: %s", cfg.name or cfg.path, exc)
            raise ApiError(507, f"cannot write the state directory: {exc}") from None
        log.info("api: camera %r created", cam.name)
        e = self.entry(cam, request)
        e["config"] = self._config_json(cam)
        return web.json_response(e, status=201, headers=_NO_STORE)

    async def _change(self, request: web.Request, merge: bool) -> web.Response:
        self._need_onvif()
        cam = self._camera(request)
        table = await self._body(request)
        if self.origin(cam) == "config":
            raise ApiError(
                409,
                f"camera {cam.name!r} comes from the configuration file ({self.cfg.source}); "
                "change it there",
                "name",
            )
        if merge:
            base = self.cameras.api_table(cam.cfg)
            base.setdefault("name", cam.key)
            table = {**base, **table}
        else:
            table = {"name": cam.key, **table}
        cfg = self._validated(table, cam)
        try:
            new = self.cameras.update(cam, cfg, persist_config=True)
        except RegistryError as exc:
            raise ApiError(409, str(exc), "path") from None
        except OSError as exc:
            log.error("api: cannot save camera %r: %s", cam.name, exc)
            raise ApiError(507, f"cannot write the state directory: {exc}") from None
        log.info("api: camera %r changed", new.name)
        e = self.entry(new, request)
        e["config"] = self._config_json(new)
        return web.json_response(e, headers=_NO_STORE)

    async def _put(self, request: web.Request) -> web.Response:
        return await self._change(request, merge=False)

    async def _patch(self, request: web.Request) -> web.Response:
        return await self._change(request, merge=True)

    async def _delete(self, request: web.Request) -> web.Response:
        cam = self._camera(request)
        if self.origin(cam) == "config":
            raise ApiError(
                409,
                f"camera {cam.name!r} comes from the configuration file ({self.cfg.source}); "
                "remove it there",
                "name",
            )
        self.cameras.remove(cam, "deleted through the API")
        return web.Response(status=204, headers=_NO_STORE)

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        # a picture of the scene is not a loopback "read" of the server's state: it needs
        # the credential ([api] loopback_read does not cover it)
        if not self.credentialed(request):
            return self.challenge()
        return await self.site.snapshot_image(self._camera(request), request)

    async def _sessions(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        out = []
        for s in list(self.streams.streams.values()):
            for i in s.sessions():
                d = dataclasses.asdict(i)
                d["uptime"] = round(max(0.0, now - d.pop("since")), 3)
                out.append(d)
        return web.json_response({"sessions": out}, headers=_NO_STORE)

    async def _kick(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        for s in list(self.streams.streams.values()):
            if s.kick(sid, "disconnected through the API"):
                log.info("api: session %s on %s disconnected", sid[:32], s.path)
                return web.Response(status=204, headers=_NO_STORE)
        raise ApiError(404, f"no session {sid[:40]!r}", "id")

    async def _events(self, request: web.Request) -> web.Response:
        after = self._int_query(request, "after", 0, 0, 1 << 62)
        limit = self._int_query(request, "limit", 100, 1, self.cfg.api.recent_events)
        items = [d for n, _t, d in self._recent if n > after]
        return web.json_response(
            {"events": items[-limit:], "last_id": self._seq}, headers=_NO_STORE
        )

    @staticmethod
    def _int_query(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
        raw = request.query.get(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(422, f"{key} must be an integer", key) from None
        if not lo <= value <= hi:
            raise ApiError(422, f"{key} must be {lo}..{hi}", key)
        return value

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: every event as it happens (``id``: its number; a reconnect
        with Last-Event-ID gets the ones it missed from the recent buffer first)."""
        a = self.cfg.api
        if len(self._clients) >= a.max_sse_clients:
            self.counters["sse_refused"] += 1
            raise ApiError(
                503, f"{a.max_sse_clients} event streams are open ([api] max_sse_clients)"
            )
        try:
            last = int(request.headers.get("Last-Event-ID", "") or 0)
        except ValueError:
            last = 0
        q: EventQueue[tuple[int, str]] = EventQueue(a.sse_queue)
        self._clients.add(q)
        try:
            resp = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-store",
                    "X-Accel-Buffering": "no",
                }
            )
            await resp.prepare(request)
            out = [b"retry: 2000\n\n"]
            for n, _t, d in list(self._recent):
                if last and n > last:
                    out.append(
                        f"id: {n}\ndata: {json.dumps(d, separators=(',', ':'))}\n\n".encode()
                    )
            await self._write(resp, b"".join(out))
            while not q.closed:
                if not await q.wait(_KEEPALIVE):
                    if q.closed:
                        break
                    await self._write(resp, b": keepalive\n\n")
                    continue
                if q.dropped:
                    self.counters["sse_clients_dropped"] += 1
                    log.info(
                        "api: event stream client too slow (%d events queued); dropped", a.sse_queue
                    )
                    await self._write(resp, b"event: overflow\ndata: {}\n\n")
                    break
                chunk = "".join(f"id: {n}\ndata: {t}\n\n" for n, t in q.drain(a.sse_queue))
                await self._write(resp, chunk.encode())
        except (ConnectionError, TimeoutError):
            self.counters["sse_clients_dropped"] += 1
            if request.transport is not None:
                request.transport.close()  # a stalled client: free its slot now
        finally:
            self._clients.discard(q)
        return resp

    async def _write(self, resp: web.StreamResponse, data: bytes) -> None:
        async with asyncio.timeout(self.cfg.api.sse_write_timeout):
            await resp.write(data)

    def _reload_done(self, task: asyncio.Task[dict[str, Any]]) -> None:
        self._reloading = False
        self._reload_task = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("api: the reload failed: %s: %s", type(exc).__name__, exc)

    async def _reload(self, request: web.Request) -> web.Response:
        """Re-read the configuration file and apply what changed (as SIGHUP does): 200 with
        the reload's summary; 422 naming the file, key and reason when the file has an error
        (nothing changed); 409 when there is no file or a reload through the API runs."""
        if self.reloader is None:
            raise ApiError(409, "this server cannot reload its configuration")
        if self._reloading:
            raise ApiError(409, "a reload is already running; try again when it is done")
        # its own task: a client that gives up (a cancelled handler) must not stop a reload
        # halfway, with some sources stopped and their replacements not yet started
        self._reloading = True
        task = asyncio.ensure_future(self.reloader())
        self._reload_task = task
        task.add_done_callback(self._reload_done)
        summary = await asyncio.shield(task)
        if summary.get("ok"):
            log.info("api: configuration reloaded from %s", summary.get("source", ""))
            return web.json_response(summary, headers=_NO_STORE)
        failed = summary.get("failed", "")
        body = dict(summary)
        if failed == "config":
            where = config_error_json(str(summary.get("error", "")), str(summary.get("source")))
            body.update(where, field=where["key"])
            status = 422
        elif failed == "no_config":
            status = 409
        else:
            status = 507  # the state directory could not be written
        self.counters["errors"] += 1
        return web.json_response(body, status=status, headers=_NO_STORE)

    # ------------------------------------------------------------------ sources, forwards
    def _items(self) -> list[tuple[str, str, object]]:
        out = []
        for kind, items in self._directories.items():
            for i, obj in enumerate(list(items())):
                out.append((kind, _item_id(obj, i), obj))
        return out

    @staticmethod
    def _item_json(kind: str, ident: str, obj: object) -> dict[str, Any]:
        status: Any = getattr(obj, "status", None)
        if callable(status):
            status = status()
        st = getattr(obj, "stats", None)
        stats = st() if callable(st) else {}
        enabled = getattr(obj, "enabled", None)
        return {
            "kind": kind,
            "id": ident,
            "description": str(getattr(obj, "description", "") or type(obj).__name__),
            "status": status if isinstance(status, str | dict) else "running",
            "enabled": enabled if isinstance(enabled, bool) else True,
            "switchable": callable(getattr(obj, "enable", None))
            and callable(getattr(obj, "disable", None)),
            "stats": json.loads(json.dumps(stats, default=str)),
        }

    async def _sources(self, request: web.Request) -> web.Response:
        items = [self._item_json(k, i, o) for k, i, o in self._items()]
        return web.json_response(
            {"kinds": sorted(self._directories), "items": items}, headers=_NO_STORE
        )

    async def _switch(self, request: web.Request) -> web.Response:
        kind, ident, action = (request.match_info[k] for k in ("kind", "id", "action"))
        if action not in ("enable", "disable"):
            raise ApiError(404, f"no action {action[:40]!r}: use enable or disable", "action")
        if kind not in self._directories:
            raise ApiError(404, f"no kind {kind[:40]!r}: {', '.join(self._directories)}", "kind")
        for k, i, obj in self._items():
            if k == kind and i == ident:
                fn = getattr(obj, action, None)
                if not callable(fn):
                    raise ApiError(409, f"{kind} {ident!r} cannot be switched on or off", "id")
                result = fn()
                if inspect.isawaitable(result):
                    await result
                log.info("api: %s %s %sd", kind, ident, action)
                return web.json_response(self._item_json(k, i, obj), headers=_NO_STORE)
        raise ApiError(404, f"no {kind} {ident[:40]!r}", "id")
