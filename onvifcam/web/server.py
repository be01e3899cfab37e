"""The HTTP side: ONVIF SOAP endpoints and snapshots for every camera, plus /api/cameras.

One aiohttp runner serves several sockets:

- the main port (``[server] http_port``): ``/onvif/NAME/device_service`` (media_service,
  media2_service, snapshot) for every camera, and ``/api/cameras``;
- one socket per camera on its own address and/or port, answering at
  ``/onvif/device_service`` (the path many NVRs assume) and the sibling services.

Which camera a request is for comes from the socket it arrived on (camera sockets) or the
name in the path (main port). The hosts and ports in XAddrs and URIs come from
:mod:`onvifcam.addressing` for the request's :class:`~onvifcam.addressing.Arrival` and the
camera's :class:`~onvifcam.addressing.Place`. This component owns the cameras' sockets:
which port each camera is bound to, and the cameras' own RTSP listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import typing
from collections.abc import Callable, Sequence
from urllib.parse import quote

from aiohttp import web

from onvifcam.accept import BatchServer
from onvifcam.addressing import Addressing, Arrival, Place, url_host
from onvifcam.cameras import ADMIN, MAIN_PROFILE, Camera, CameraRegistry, User
from onvifcam.config import Config
from onvifcam.events import EndpointBound, EndpointUnbound, EventBus
from onvifcam.media.stream import Stream, StreamRegistry
from onvifcam.netutil import (
    SERVER_HOST,
    binding,
    camera_listener,
    camera_rtsp_listener,
)
from onvifcam.onvif import device, imaging, media, media2
from onvifcam.onvif.deviceio import DeviceIO
from onvifcam.onvif.events import EventService, TriggerError
from onvifcam.onvif.ptz import PtzService
from onvifcam.onvif.snapshot import SnapshotError, SnapshotService
from onvifcam.onvif.soap import (
    CONTENT_TYPE,
    POLICY,
    READ_MEDIA,
    Context,
    Dispatcher,
    Fault,
    OperationTable,
    fault_body,
)
from onvifcam.web.api import Api, PushUrls, cross_site_refusal
from onvifcam.web.listener import (
    SERVER_HEADER,
    GuardedHandler,
    HttpGate,
    Listener,
    bad_request_reason,
)
from onvifcam.web.pages import STATIC_DIR, dashboard_page


class Routes(typing.Protocol):
    """A component serving HTTP routes of its own on the main port (WHIP...)."""

    def add_routes(self, router: web.UrlDispatcher) -> None: ...


class RtspListen(typing.Protocol):
    """What the web component needs from the RTSP server: serving a camera's own address."""

    async def listen(
        self, host: str, port: int, role: str, setting: str, host_setting: str
    ) -> asyncio.base_events.Server: ...


log = logging.getLogger(__name__)

SERVICES = {
    "device_service": "device",
    "media_service": "media",
    "media2_service": "media2",
    "events_service": "events",
    "deviceio_service": "deviceio",
    "ptz_service": "ptz",
    "imaging_service": "imaging",
}
_WILDCARD = ("", "0.0.0.0", "::")


def operation_table(
    events: EventService | None = None, ptz: PtzService | None = None
) -> OperationTable:
    """Every SOAP operation of every service; Events and DeviceIO are bound to ``events``
    (and its DeviceIO), or to fresh ones on a private event bus; PTZ to ``ptz`` or a new one."""
    table = OperationTable()
    for mod in (device, media, media2, imaging):
        table.merge(mod.ops)
    events = events if events is not None else EventService()
    table.merge(events.io.ops)
    table.merge(events.ops)
    table.merge((ptz if ptz is not None else PtzService()).ops)
    return table


async def _server_header(_request: web.Request, resp: web.StreamResponse) -> None:
    """``Server: onvifcam``, without aiohttp's and Python's versions."""
    resp.headers["Server"] = SERVER_HEADER


def _bind(
    host: str,
    port: int,
    role: str = "HTTP port",
    setting: str = "--http-port or [server] http_port",
    host_setting: str = SERVER_HOST,
) -> socket.socket:
    """A listening TCP socket; raises BindError naming the listener and its setting."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with binding("tcp", host, port, role, setting, host_setting):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(256)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
    return sock


class WebServer:
    """The app component serving ONVIF and snapshots over HTTP."""

    def __init__(
        self,
        cfg: Config,
        cameras: CameraRegistry,
        streams: StreamRegistry,
        addressing: Addressing,
        rtsp: RtspListen,
        bus: EventBus,
        routes: Sequence[Routes] = (),
        push: PushUrls | None = None,
    ) -> None:
        self.cfg = cfg
        self.addressing = addressing
        self.cameras = cameras
        self.bus = bus
        self._rtsp_server = rtsp
        self._routes = list(routes)  # other components' HTTP routes on the main port
        self.io = DeviceIO(bus)
        self.events = EventService(bus, self.io, self.cameras)
        self.ptz = PtzService()
        self.dispatcher = Dispatcher(
            operation_table(self.events, self.ptz),
            clock_skew=self.cfg.onvif.clock_skew,
            nonce_rate_per_user=self.cfg.onvif.nonce_rate_per_user,
            max_nonces=self.cfg.onvif.max_nonces,
        )
        self.snapshots = SnapshotService(self.cfg.onvif.snapshot_quality)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.http = HttpGate(self.cfg.http)  # caps and deadlines shared by every HTTP socket
        self._factory: Callable[[], GuardedHandler] | None = None
        self._sites: dict[str, list[Listener]] = {}
        self._by_sock: dict[tuple[str, int], Camera] = {}
        self._bound: dict[str, tuple[str, int]] = {}  # camera key -> its ONVIF socket
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_port: dict[str, int] = {}
        self._rtsp: dict[str, BatchServer] = {}  # cameras' own RTSP listeners
        self._started = False
        self.urls_version = 0  # bumped whenever a camera's URLs may have changed
        # the HTTP API and the dashboard's data (/api/...); push: the ingest URLs of a path
        self.api = Api(cfg, cameras, streams, bus, self, push)
        self.cameras.on_added.append(self._camera_added)
        self.cameras.on_updated.append(self._camera_updated)
        self.cameras.on_removed.append(self._camera_removed)
        if self.cfg.onvif.enabled:
            streams.listeners.append(self._stream_changed)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind the main port (API, dashboard, other components' routes such as /metrics
        and WHIP; the ONVIF routes too while ``[onvif] enabled``) and every camera's
        endpoint."""
        onvif = self.cfg.onvif.enabled
        aio = web.Application(
            client_max_size=self.cfg.onvif.max_body, middlewares=[self.api.middleware]
        )
        aio.on_response_prepare.append(_server_header)  # responses a handler prepares itself
        if onvif:
            aio.router.add_route("*", "/onvif/{tail:[\\s\\S]*}", self._onvif)
        aio.router.add_get("/", self._landing)
        aio.router.add_static("/static/", STATIC_DIR, append_version=False)
        if onvif:
            aio.router.add_post("/api/cameras/{camera:[\\s\\S]+}/events", self._api_trigger)
        self.api.add_routes(aio.router)
        self.api.start()
        for r in self._routes:
            r.add_routes(aio.router)  # e.g. /whip/PATH: WebRTC ingest (RFC 9725)
        self._runner = web.AppRunner(
            aio, access_log=None, handle_signals=False, handler_cancellation=True
        )
        await self._runner.setup()
        self._factory = self.http.factory(self._runner)
        self.http.check_fd_budget(self.cfg.limits.max_connections)
        s = self.cfg.server
        sock = _bind(s.host, s.http_port)
        self.port = sock.getsockname()[1]
        self.addressing.http_port = self.port
        site = self._listener(sock)
        await site.start()
        self._sites["*main*"] = [site]
        if onvif:
            for cam in list(self.cameras.cameras.values()):
                await self._start_camera(cam)
            await self.events.start()
        self._started = True

    async def stop(self) -> None:
        """Close every socket and the snapshot workers."""
        await self.events.stop()  # long polls return before the runner waits for handlers
        self.api.stop()  # and the event streams
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for sites in self._sites.values():
            for site in sites:
                await site.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        self._sites.clear()
        self._by_sock.clear()
        self._bound.clear()
        self.snapshots.close()

    def tick(self, now: float) -> None:
        """Remember measured rates for the profiles of offline cameras; log summaries."""
        self.cameras.tick()
        self.http.tick(now)

    def _stream_changed(self, stream: Stream, what: str) -> None:
        # A stream's cached JPEG can never be served again once its publisher left.
        if what == "unpublish":
            self.snapshots.forget(stream.path)

    def stats(self) -> dict[str, int | float | dict[str, int]]:
        """Counters: endpoints bound, HTTP caps and errors, SOAP and snapshot work."""
        d, snap = self.dispatcher, self.snapshots
        return {
            "camera_endpoints": len(self._by_sock),
            "camera_rtsp_listeners": len(self._rtsp),
            "http": self.http.stats(),
            "soap": {
                "requests": d.requests,
                "faults": d.faults,
                "auth_failures": d.auth_failures,
            },
            "snapshots": {"decodes": snap.decodes, "hits": snap.hits},
            "ptz": self.ptz.stats(),
            "api": self.api.stats(),
        }

    def ready_info(self) -> dict[str, str]:
        """The main HTTP port for the ready line."""
        return {"http_port": str(self.port)} if self.port else {}

    # ------------------------------------------------------------------ camera endpoints
    def _camera_added(self, cam: Camera) -> None:
        cam.on_reboot = self._schedule_reboot
        if not cam.auth_required:
            why = "auth = false" if not cam.cfg.auth else "no ONVIF user is configured"
            log.warning(
                "onvif: camera %r has authentication OFF (%s): anyone who reaches it can "
                "change it; set username/password in [[cameras]] or [onvif]",
                cam.name,
                why,
            )
        if self._started and cam.key not in self._sites:
            self._spawn(self._start_camera(cam))

    def _registered(self, cam: Camera) -> bool:
        return self.cameras.cameras.get(cam.key) is cam

    def _camera_removed(self, cam: Camera) -> None:
        """A removed auto camera: close its endpoint, so its port is free again."""
        self._last_port.pop(cam.key, None)
        self.dispatcher.forget(cam)
        self.snapshots.forget(cam.path)
        sites = self._sites.pop(cam.key, [])
        for k in [k for k, c in self._by_sock.items() if c is cam]:
            del self._by_sock[k]
        self._bound.pop(cam.key, None)
        rtsp = self._rtsp.pop(cam.key, None)
        if rtsp is not None:
            rtsp.close()
        self.urls_changed()
        for site in sites:
            self._spawn(site.stop())
        if sites:
            self.bus.publish(EndpointUnbound(cam.key, "removed"))

    def _camera_updated(self, old: Camera, new: Camera) -> None:
        """A camera's configuration changed: its endpoint restarts for the new one (on the
        same port when it can)."""
        new.on_reboot = self._schedule_reboot
        if new.path != old.path or new.sub_path != old.sub_path:
            self.snapshots.forget(old.path)
            self.snapshots.forget(old.sub_path)

        async def restart() -> None:
            await self._stop_camera(old, "update")
            await self._start_camera(new)

        if self._started:
            self._spawn(restart())

    def _spawn(self, coro: typing.Coroutine[typing.Any, typing.Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _port_candidates(self, cam: Camera) -> list[int]:
        o = self.cfg.onvif
        preferred = cam.preferred_port
        if cam.cfg.onvif_port or (cam.address and not cam.auto):
            return [preferred]
        if o.port_range_start == 0:
            return [0]
        used = {p for (_h, p) in self._by_sock}
        out = []
        if o.port_range_start <= preferred <= o.port_range_end:
            out.append(preferred)
        taken = {c.state.port for c in self.cameras.cameras.values() if c is not cam}
        for p in range(o.port_range_start, o.port_range_end + 1):
            if p not in used and p not in taken and p not in out:
                out.append(p)
            if len(out) > 64:
                break
        return out

    async def _start_camera(self, cam: Camera) -> None:
        if (
            self._runner is None
            or not self.cfg.onvif.enabled
            or cam.key in self._sites
            or not self._registered(cam)
        ):
            return
        reserved: list[web.SockSite] = []
        self._sites[cam.key] = reserved  # reserved while binding
        host = cam.address or self.cfg.server.host
        candidates = self._port_candidates(cam)
        fixed = bool(cam.cfg.onvif_port or (cam.address and not cam.auto))
        last = self._last_port.get(cam.key)
        if last and not fixed and candidates[:1] != [last]:
            candidates.insert(0, last)  # a rebooted (or updated) camera keeps its port
        for port in candidates:
            try:
                sock = _bind(host, port, *camera_listener(self.cfg.cameras, cam))
            except OSError as exc:
                if fixed:
                    log.error(
                        "onvif: %s; camera %r is still reachable at /onvif/%s/device_service "
                        "on the main port",
                        exc,
                        cam.name,
                        cam.slug,
                    )
                    del self._sites[cam.key]
                    self._settled(cam)
                    return
                continue
            bound = sock.getsockname()[:2]
            site = self._listener(sock)
            await site.start()
            # its own RTSP listener first: clients see the endpoint only once every URL it
            # hands out works (the API showed the port with the main RTSP address meanwhile)
            if self._registered(cam):
                await self._start_rtsp(cam)
            if not self._registered(cam):  # removed while its endpoint was starting
                await site.stop()
                rtsp = self._rtsp.pop(cam.key, None)
                if rtsp is not None:
                    rtsp.close()
                if self._sites.get(cam.key) is reserved:
                    del self._sites[cam.key]
                return
            self._sites[cam.key] = [site]
            self._by_sock[(bound[0], bound[1])] = cam
            self._bound[cam.key] = (bound[0], bound[1])
            self._last_port[cam.key] = bound[1]
            cam.remember_port(bound[1])
            self.urls_changed()
            shown = url_host(self.addressing.host(self.place(cam)))
            log.info(
                "onvif: camera %r (%s) at http://%s:%d/onvif/device_service",
                cam.name,
                cam.path,
                shown,
                bound[1],
            )
            self._settled(cam)
            return
        del self._sites[cam.key]
        log.error(
            "onvif: no free port for camera %r in [onvif] port_range_start..port_range_end "
            "(--onvif-ports); widen the range, or set it to 0 for any free port",
            cam.name,
        )
        self._settled(cam)

    def _settled(self, cam: Camera) -> None:
        """EndpointBound: where ``cam`` is reachable now (port 0: the main port only)."""
        place = self.place(cam)
        self.bus.publish(
            EndpointBound(cam.key, place.onvif_port, place.address, own_rtsp=place.own_rtsp)
        )

    def _listener(self, sock: socket.socket) -> Listener:
        """Serve ``sock`` behind the shared HTTP caps and deadlines."""
        assert self._factory is not None
        return Listener(sock, self._factory)

    async def _start_rtsp(self, cam: Camera) -> None:
        """With ``rtsp_listen``, serve RTSP on the camera's own address too."""
        if not (cam.address and cam.cfg.rtsp_listen) or cam.key in self._rtsp:
            return
        port = self.addressing.rtsp_port_of(self.place(cam))
        try:
            self._rtsp[cam.key] = await self._rtsp_server.listen(
                cam.address, port, *camera_rtsp_listener(self.cfg.cameras, cam)
            )
        except OSError as exc:
            log.error("onvif: %s; its stream URIs name the main RTSP address instead", exc)
            return
        log.info("onvif: camera %r serves RTSP at rtsp://%s:%d/", cam.name, cam.address, port)

    async def _stop_camera(self, cam: Camera, reason: str) -> None:
        rtsp = self._rtsp.pop(cam.key, None)
        if rtsp is not None:
            rtsp.close()
        for site in self._sites.pop(cam.key, []):
            await site.stop()
        for k in [k for k, c in self._by_sock.items() if c is cam]:
            del self._by_sock[k]
        self._bound.pop(cam.key, None)
        self.urls_changed()
        self.bus.publish(EndpointUnbound(cam.key, reason))

    def _schedule_reboot(self, cam: Camera) -> None:
        async def reboot() -> None:
            await asyncio.sleep(1.0)
            log.info("onvif: camera %r reboots", cam.name)
            await self._stop_camera(cam, "reboot")
            await self._start_camera(cam)

        self._spawn(reboot())

    # ------------------------------------------------------------------ routing
    def _resolve(self, request: web.Request) -> tuple[Camera | None, str, str]:
        """(camera, URL prefix for its services, service or "snapshot") of a request."""
        tail = request.match_info.get("tail", "")
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        local = (sock[0], sock[1]) if sock else ("", 0)
        cam = self._by_sock.get(local)
        if cam is None:
            for (h, p), c in self._by_sock.items():
                if p == local[1] and h in _WILDCARD:
                    cam = c
                    break
        if cam is not None:
            return cam, "/onvif", tail
        name, _, service = tail.rpartition("/")
        if not name:
            cams = list(self.cameras.cameras.values())
            return (cams[0] if len(cams) == 1 else None), "/onvif", service
        found = self.cameras.find(name)
        prefix = f"/onvif/{quote(found.slug)}" if found else ""
        return found, prefix, service

    def place(self, cam: Camera) -> Place:
        """Where ``cam`` is reachable: its own address and the ports bound for it."""
        return Place(
            slug=cam.slug,
            path=cam.path,
            address=cam.address,
            onvif_port=self._bound[cam.key][1] if cam.key in self._bound else 0,
            rtsp_port=cam.cfg.rtsp_port,
            own_rtsp=cam.key in self._rtsp,
            advertise=cam.cfg.advertise,
        )

    @staticmethod
    def arrival(request: web.Request) -> Arrival:
        """How the client of ``request`` reached us (socket address, port, Host header)."""
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        return Arrival(
            local=str(sock[0]) if sock else "",
            port=int(sock[1]) if sock else 0,
            host_header=request.host,
        )

    def urls_changed(self) -> None:
        """Something the cameras' URLs depend on changed (a port bound or closed, the
        listeners all open): cached URL sets are stale (:attr:`urls_version`)."""
        self.urls_version += 1

    def camera_urls(self, cam: Camera, arrival: Arrival) -> dict[str, str | int]:
        """The camera's own ``port`` (0: none) and its ``onvif_url``, ``rtsp_url`` and
        ``snapshot_url`` for a client that arrived as ``arrival``, ready to paste."""
        place = self.place(cam)
        return {"port": place.onvif_port, **self.addressing.urls(place, arrival).as_dict()}

    def request_host(self, arrival: Arrival) -> str:
        """The host a client that arrived as ``arrival`` reaches the server by (push URLs)."""
        return self.addressing.host(None, arrival)

    def _context(
        self, cam: Camera, request: web.Request, prefix: str, subscription: str = ""
    ) -> Callable[[User | None, str], Context]:
        addressing = self.addressing
        place = self.place(cam)
        arrival = self.arrival(request)
        host = addressing.host(place, arrival)
        port = arrival.port or self.port
        base = addressing.service_base(place, host, port, prefix)
        rtsp_port = addressing.public_rtsp_port(place)  # as clients reach it (advertised)

        def stream_uri(path: str, scheme: str) -> str:
            return addressing.stream_uri(place, path, host, scheme)

        def snapshot_uri(profile: str) -> str:
            return f"{base}/snapshot?profile={quote(profile)}"

        def make(user: User | None, soap_ns: str) -> Context:
            return Context(
                camera=cam,
                user=user,
                soap_ns=soap_ns,
                xaddr=lambda service: f"{base}/{service}_service",
                stream_uri=stream_uri,
                snapshot_uri=snapshot_uri,
                host=addressing.ip(place, arrival),
                http_port=addressing.public_port(place, port),
                rtsp_port=rtsp_port,
                multicast=self.cfg.rtsp.multicast,
                subscription=subscription,
            )

        return make

    # ------------------------------------------------------------------ handlers
    async def _onvif(self, request: web.Request) -> web.StreamResponse:
        cam, prefix, service = self._resolve(request)
        if cam is None:
            return self._fault(Fault("ter:InvalidArgVal", "no such camera", status=404))
        if service == "snapshot":
            if request.method not in ("GET", "HEAD"):
                return web.Response(status=405, headers={"Allow": "GET, HEAD"})
            return await self._snapshot(cam, request)
        if request.method != "POST":
            return self._fault(
                Fault("ter:InvalidArgVal", "ONVIF services take SOAP over HTTP POST", status=405)
            )
        if service not in SERVICES and service != "events_service":
            return self._fault(Fault("ter:InvalidArgVal", f"no service {service!r}", status=404))
        if (request.content_length or 0) > self.cfg.onvif.max_body:
            return self._fault(Fault("ter:InvalidArgVal", "request body too large", status=413))
        try:
            async with asyncio.timeout(self.cfg.http.body_timeout):
                data = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._fault(Fault("ter:InvalidArgVal", "request body too large", status=413))
        except TimeoutError:
            self.http.body_timeouts += 1
            self._client_error(
                request,
                f"request body not complete after {self.cfg.http.body_timeout:g} s "
                "([http] body_timeout); sent 408",
            )
            return self._fault(
                Fault("ter:InvalidArgVal", "request body not complete in time", status=408),
                close=True,
            )
        except web.RequestPayloadError as exc:
            self.http.bad_requests += 1
            self._client_error(request, f"malformed body: {bad_request_reason(None, str(exc))}")
            return self._fault(
                Fault("ter:InvalidArgVal", "malformed request body", status=400), close=True
            )
        sid = request.query.get("subscription", "")[:64] if service == "events_service" else ""
        resp = await self.dispatcher.dispatch_async(
            data,
            self._context(cam, request, prefix, sid),
            cam,
            authorization=request.headers.get("Authorization"),
            method=request.method,
            uri=request.path_qs,
        )
        headers = dict(resp.headers[:1])
        out = web.Response(body=resp.body, status=resp.status, headers=headers)
        for k, v in resp.headers[1:]:
            out.headers.add(k, v)
        return out

    def _fault(self, f: Fault, close: bool = False) -> web.Response:
        resp = web.Response(
            body=fault_body(f), status=f.status, headers={"Content-Type": CONTENT_TYPE}
        )
        if close:
            resp.force_close()
        return resp

    def _client_error(self, request: web.Request, what: str) -> None:
        """One paced log line about a client's bad request (peer, port, reason)."""
        peer = request.transport.get_extra_info("peername") if request.transport else None
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        self.http.client_error(
            "http: bad request from %s on port %s: %s",
            f"{peer[0]}:{peer[1]}" if peer else "?",
            sock[1] if sock else "?",
            what,
        )

    def _snapshot_auth(self, cam: Camera, request: web.Request) -> web.Response | None:
        if not cam.auth_required:
            return None
        authz = request.headers.get("Authorization")
        user = (
            self.dispatcher.check_http(cam, authz, request.method, request.path_qs)
            if authz
            else None
        )
        if user is not None and READ_MEDIA in POLICY.get(user.level, frozenset()):
            return None
        resp = web.Response(status=401, text="401 Unauthorized: snapshot needs credentials\n")
        for k, v in self.dispatcher.digest.challenge_headers():
            resp.headers.add(k, v)
        return resp

    async def _snapshot(self, cam: Camera, request: web.Request) -> web.StreamResponse:
        denied = self._snapshot_auth(cam, request)
        if denied is not None:
            return denied
        return await self.snapshot_image(cam, request)

    async def snapshot_image(self, cam: Camera, request: web.Request) -> web.StreamResponse:
        """The JPEG of ``cam`` (credentials already checked): live, or the offline picture."""
        token = request.query.get("profile", MAIN_PROFILE)
        try:
            profile = cam.profile(token)
        except ValueError:
            return web.Response(status=404, text=f"no profile {token!r}\n")
        which = cam.which(profile.vec)
        stream = cam.stream(which)
        reason = "CAMERA OFFLINE"
        if stream is not None and stream.online:
            decodes = self.snapshots.decodes
            try:
                data = await self.snapshots.jpeg(stream)
            except SnapshotError as exc:
                log.info("onvif %s: snapshot unavailable: %s", cam.name, exc)
                reason = "WAITING FOR KEYFRAME"
            else:
                fresh = self.snapshots.decodes != decodes
                return web.Response(
                    body=data,
                    content_type="image/jpeg",
                    headers={
                        "Cache-Control": "no-store",
                        "X-Snapshot": "live" if fresh else "live-cached",
                    },
                )
        if self.cfg.onvif.snapshot_offline == "503":
            return web.Response(
                status=503,
                text=f"503 {reason.lower()}: no picture to show\n",
                headers={"Retry-After": "5"},
            )
        v = cam.video(which)
        data = await self.snapshots.placeholder(v.width, v.height, f"{reason}\n{cam.name}")
        return web.Response(
            body=data,
            content_type="image/jpeg",
            headers={"Cache-Control": "no-store", "X-Snapshot": "placeholder"},
        )

    async def _landing(self, request: web.Request) -> web.Response:
        """The dashboard: the camera list rendered here, made live by /static/dashboard.js."""
        if not self.api.authorized(request):
            return self.api.challenge()
        cams = [self.api.entry(c, request) for c in list(self.cameras.cameras.values())]
        template = self.addressing.rtsp_template(self.arrival(request))
        page = dashboard_page(cams, template)
        return web.Response(
            text=page,
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": (
                    "default-src 'none'; script-src 'self'; style-src 'self'; "
                    "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; "
                    "form-action 'none'; frame-ancestors 'none'"
                ),
            },
        )

    async def _api_trigger(self, request: web.Request) -> web.Response:
        """POST /api/cameras/{camera}/events: motion or a digital input, from outside."""
        # CSRF: the dashboard's Basic credential rides along on a cross-site post
        refused = cross_site_refusal(request, require_json=False)
        if refused is not None:
            return refused
        name = request.match_info["camera"]
        cam = self.cameras.find(name)
        if cam is None:
            return web.json_response({"error": f"no camera {name[:80]!r}"}, status=404)
        denied = self._trigger_auth(cam, request)
        if denied is not None:
            return denied
        try:
            payload = await request.json()
        except (ValueError, RecursionError) as exc:
            why = str(exc)[:120] if isinstance(exc, ValueError) else "nested too deeply"
            return web.json_response({"error": f"the body is not JSON: {why}"}, status=400)
        try:
            result = self.events.trigger(cam, payload)
        except TriggerError as exc:
            log.info("api: trigger on %r refused: %s", cam.name, exc)
            return web.json_response(exc.to_json(), status=exc.status)
        log.info("api: trigger on %r: %s", cam.name, result)
        return web.json_response(result)

    def _trigger_auth(self, cam: Camera, request: web.Request) -> web.Response | None:
        """The camera's Administrator credentials (Digest or Basic); loopback clients need
        none while ``[events] trigger_loopback_without_auth`` is on."""
        if not cam.auth_required:
            return None
        if not self.api.open and self.api.authorized(request):
            return None  # the API's admin credential (the dashboard's buttons)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if self.cfg.events.trigger_loopback_without_auth and peer:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(str(peer[0]).removeprefix("::ffff:")).is_loopback:
                    return None
        authz = request.headers.get("Authorization")
        user = (
            self.dispatcher.check_http(cam, authz, request.method, request.path_qs)
            if authz
            else None
        )
        if user is not None and user.level == ADMIN:
            return None
        resp = web.json_response(
            {"error": f"camera {cam.name!r} needs its ONVIF Administrator credentials"},
            status=401,
        )
        for k, v in self.dispatcher.digest.challenge_headers():
            resp.headers.add(k, v)
        return resp
