"""WHIP (RFC 9725) on the main HTTP port: the aiohttp handlers and the publishing sessions.

- ``POST /whip/PATH`` with an SDP offer (``application/sdp``): 201 Created, the answer, a
  ``Location: /whip/PATH/SESSION`` and one ``Link`` per configured STUN/TURN server.
- ``DELETE /whip/PATH/SESSION``: the publisher stops (200).
- ``OPTIONS``: CORS preflight (200, ``Accept-Post: application/sdp``).
- ``PATCH``: 405 (neither trickle ICE nor ICE restarts: the answer carries every candidate
  and offers without candidates work through the publisher's connectivity checks).
- ``GET /whip/PATH/publish``: a page publishing the browser's camera or a test canvas.

Admission is the shared :class:`~onvifcam.auth.gate.Gate` (path policy, credentials, stream
key, conflicts); see :func:`onvifcam.whip.offer.credentials` for what a bearer token means.
A session publishes into the path's :class:`~onvifcam.media.stream.Stream` once ICE and
DTLS are up; RTP goes through a small reorder/NACK stage (``rtpin.py``) and is passed on
as it arrived (no transcoding). A session ends on DELETE, ICE/DTLS failure or close, no
media for ``[limits] media_timeout``, or no connection within ``[whip] connect_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from aiohttp import web

from onvifcam.auth.gate import Claim, Gate, Refusal, RefusalKind
from onvifcam.config import Config
from onvifcam.media import rtcp
from onvifcam.media.stream import Stream, StreamError, StreamRegistry
from onvifcam.web.guard import LogPacer
from onvifcam.whip.offer import Offer, OfferError, credentials, fix_answer, ice_server_links
from onvifcam.whip.page import publish_page
from onvifcam.whip.rtpin import Receiver, build_remb

log = logging.getLogger(__name__)

__all__ = ["WhipServer", "WhipSession"]

SDP = "application/sdp"
KEYFRAME_REQUEST_EVERY = 1.0  # seconds between PLIs while no keyframe has arrived
REPORT_EVERY = 1.0  # receiver reports (and REMB)
POLL_EVERY = 0.2  # new readers without a keyframe in the GOP cache are noticed this fast
ANSWER_TIMEOUT = 10.0  # seconds for aiortc to apply the offer and gather
RETRY_AFTER = 5
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, Link, Accept-Post",
}
ENDPOINT_ALLOW = "OPTIONS, POST"
SESSION_ALLOW = "OPTIONS, DELETE"


def _text(status: int, reason: str, **headers: str) -> web.Response:
    resp = web.Response(status=status, text=f"{status} {reason}\n", headers={**CORS, **headers})
    return resp


@dataclass
class WhipStats:
    """Counters, read through :meth:`WhipServer.stats`."""

    sessions: int = 0  # sessions answered (201)
    refused: dict[str, int] = field(default_factory=dict)  # by HTTP status
    ended: dict[str, int] = field(default_factory=dict)  # by cause


class WhipSession:
    """One publisher: its peer connection, the RTP input per track, the gate's claim."""

    def __init__(
        self,
        server: WhipServer,
        sid: str,
        path: str,
        ip: str,
        port: int,
        offer: Offer,
        authorization: str,
    ) -> None:
        self.server = server
        self.id = sid
        self.path = path
        self.ip = ip
        self.description = f"whip {ip}:{port}" if ":" not in ip else f"whip [{ip}]:{port}"
        self.offer = offer
        self.authorization = authorization
        self.claim: Claim | None = None
        self.stream: Stream | None = None
        self.created = time.monotonic()
        self.closed = False
        w = server.cfg.whip
        self.choices = sorted(offer.choices, key=lambda c: c.kind != "video")
        self.pt_index = {c.pt: i for i, c in enumerate(self.choices)}
        self.receivers = [
            Receiver(
                c.clock_rate,
                wait=w.nack_wait_ms / 1000 if c.nack else min(w.nack_wait_ms / 1000, 0.05),
                capacity=w.reorder_packets,
                nack=c.nack,
                keyframes=c.kind == "video",
            )
            for c in self.choices
        ]
        self.video = next((i for i, c in enumerate(self.choices) if c.kind == "video"), None)
        self._seq_shift = [0] * len(self.choices)
        self.rtcp_ssrc = random.getrandbits(32) or 1
        self.peer: WhipPeerLike | None = None  # made by answer(), after admission
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._keys_at_publish = 0
        self._readers = 0
        self._next_report = 0.0
        self._next_keyframe_request = 0.0
        self.bytes_in = 0
        self.unknown_pt = 0
        self.short_rtp = 0  # datagrams too short for an RTP header

    # ---------------------------------------------------------------- lifecycle
    async def answer(self) -> bytes:
        """Apply the offer with aiortc; the answer to send (raises ValueError)."""
        self.peer = self.server.peer_factory(
            on_rtp=self._on_rtp, on_rtcp=self._on_rtcp, on_state=self._on_state
        )
        text = await self.peer.answer(self.offer.for_aiortc())
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"whip-{self.id[:8]}")
        return fix_answer(text, self.offer)

    def kick(self, reason: str) -> None:
        """Gate/Stream: stop publishing (replaced, media timeout, server stop)."""
        self.server.spawn(self.close(reason, "kicked"))

    async def close(self, reason: str, cause: str = "closed") -> None:
        """End the session: unpublish, release the path, close the connection."""
        if self.closed:
            return
        self.closed = True
        if self.stream is not None:
            self.stream.unpublish(self, reason)
        if self.claim is not None:
            self.claim.release()
        self.server.forget(self, cause)
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.peer is not None:
            await self.peer.close()
        lost = sum(rx.stats.lost for rx in self.receivers)
        log.info(
            "whip: session %s on '%s' from %s ended after %.0f s, %.1f MB in, %d packets "
            "lost: %s",
            self.id[:8], self.path, self.ip, time.monotonic() - self.created,
            self.bytes_in / 1e6, lost, reason,
        )  # fmt: skip

    def _on_state(self, state: str) -> None:
        if self.closed:
            return
        if state == "connected" and self.stream is None:
            self._publish()
        elif state in ("failed", "closed"):
            why = "ICE/DTLS connection failed (publisher gone or unreachable)"
            self.server.spawn(
                self.close(why if state == "failed" else "the publisher closed", state)
            )

    def _publish(self) -> None:
        policy = self.server.cfg.path_policy(self.path)
        try:
            stream = self.server.registry.get_or_create(self.path)
            stream.publish(
                self,
                self.offer.stream_session(self.path),
                replace=policy.on_conflict == "replace",
            )
        except StreamError as exc:
            log.info("whip: %s cannot publish to '%s': %s", self.description, self.path, exc)
            self.server.spawn(self.close(str(exc), "conflict"))
            return
        self.stream = stream
        self._keys_at_publish = stream.stats.keyframes_in
        tracks = ", ".join(f"{c.kind} {c.encoding} pt {c.pt}" for c in self.choices)
        log.info(
            "whip: %s publishes to '%s' (%s), session %s", self.ip, self.path, tracks,
            self.id[:8],
        )  # fmt: skip
        self._wake.set()

    # ---------------------------------------------------------------- data path
    def _on_rtp(self, data: bytes) -> None:
        n = len(data)
        if n < 12:
            self.short_rtp += 1
            return
        index = self.pt_index.get(data[1] & 0x7F)
        if index is None:
            self.unknown_pt += 1
            return
        self.bytes_in += n
        rx = self.receivers[index]
        now = time.monotonic()
        out = rx.push(data, now)
        if out:
            self._forward(index, out)
        if rx.feedback_pending(now):
            self._wake.set()

    def _forward(self, index: int, packets: list[bytes]) -> None:
        """Pass packets on to the stream. Padding-only ones (the bandwidth probes browsers
        send on the media SSRC when RTX is not negotiated) stop here; they took sequence
        numbers, so the packets after them are renumbered to keep the readers' sequence
        without gaps (a gap would look like loss to them)."""
        stream = self.stream
        if stream is None:
            return
        shift = self._seq_shift[index]
        for p in packets:
            if p[0] & 0x20 and _padding_only(p):
                shift = (shift + 1) & 0xFFFF
                continue
            if shift:
                b = bytearray(p)
                seq = ((b[2] << 8 | b[3]) - shift) & 0xFFFF
                b[2], b[3] = seq >> 8, seq & 0xFF
                p = bytes(b)
            stream.on_rtp(index, p)
        self._seq_shift[index] = shift

    def _on_rtcp(self, data: bytes) -> None:
        try:
            packets = rtcp.parse_compound(data)
        except ValueError:
            return
        now = time.monotonic()
        for p in packets:
            if not isinstance(p, rtcp.SenderReport):
                continue
            for i, rx in enumerate(self.receivers):
                if rx.ssrc == p.ssrc:
                    rx.on_sender_report(p.ntp, now)
                    if self.stream is not None:
                        self.stream.on_rtcp(i, rtcp.build_sender_report(p))

    async def _run(self) -> None:
        """Timers: release held packets, NACK/PLI, reports, connect deadline."""
        w = self.server.cfg.whip
        deadline = self.created + w.connect_timeout
        while not self.closed:
            now = time.monotonic()
            if self.stream is None and now >= deadline:
                await self.close(
                    f"no ICE/DTLS connection within {w.connect_timeout:g} s "
                    "([whip] connect_timeout): is the publisher's UDP blocked, or does it "
                    "need [whip] public_ip?",
                    "timeout",
                )
                return
            packets = self._timers(now)
            if packets and self.peer is not None:
                await self.peer.send_rtcp(packets)
            wait = POLL_EVERY
            for rx in self.receivers:
                due = rx.next_deadline()
                if due is not None:
                    wait = min(wait, max(due - now, 0.005))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _timers(self, now: float) -> list[bytes]:
        """Expire held packets and build the RTCP due now."""
        stream = self.stream
        for i, rx in enumerate(self.receivers):
            out = rx.expire(now)
            if out:
                self._forward(i, out)
        if stream is not None and self.video is not None:
            rx = self.receivers[self.video]
            readers = len(stream.readers)
            if stream.stats.keyframes_in == self._keys_at_publish:
                if now >= self._next_keyframe_request:  # none yet: ask until one comes
                    rx.request_keyframe()
                    self._next_keyframe_request = now + KEYFRAME_REQUEST_EVERY
            elif readers > self._readers and not stream.gop_snapshot():
                rx.request_keyframe()  # a new reader waits for a keyframe: ask for one
            self._readers = readers
        packets: list[bytes] = []
        for rx in self.receivers:
            packets += rx.feedback(self.rtcp_ssrc, now)
        if now >= self._next_report:
            self._next_report = now + REPORT_EVERY
            blocks = [b for rx in self.receivers if (b := rx.report_block(now)) is not None]
            if blocks:
                report = rtcp.build_receiver_report(self.rtcp_ssrc, blocks)
                if self.video is not None and self.choices[self.video].remb:
                    ssrc = self.receivers[self.video].ssrc
                    if ssrc is not None:
                        kbps = self.server.cfg.whip.max_bitrate_kbps
                        report += build_remb(self.rtcp_ssrc, kbps * 1000, [ssrc])
                packets.append(report)
        return packets

    def ingest_drops(self) -> dict[str, int]:
        """What this publisher's input lost, by reason (read by the stream's statistics):
        ``rtp_lost`` (packets given up after the NACK wait or a full reorder buffer),
        ``malformed`` (RTP packets that could not be read), ``unsupported_codec`` (packets
        of payload types the answer did not accept)."""
        return {
            "rtp_lost": sum(rx.stats.lost for rx in self.receivers),
            "malformed": sum(rx.stats.malformed for rx in self.receivers) + self.short_rtp,
            "unsupported_codec": self.unknown_pt,
        }

    def stats(self) -> dict[str, object]:
        """Counters of this session."""
        return {
            "path": self.path,
            "peer": self.ip,
            "state": self.peer.state if self.peer is not None else "new",
            "bytes_in": self.bytes_in,
            "unknown_payload_type": self.unknown_pt,
            "tracks": [
                {"kind": c.kind, "codec": c.encoding, **vars(rx.stats)}
                for c, rx in zip(self.choices, self.receivers, strict=True)
            ],
        }


PeerFactory = Callable[..., "WhipPeerLike"]


class WhipPeerLike:  # pragma: no cover - typing only
    """What a session needs from its peer connection (``peer.WhipPeer``)."""

    state: str

    async def answer(self, offer: str) -> str: ...

    async def send_rtcp(self, packets: list[bytes]) -> bool: ...

    async def close(self) -> None: ...


class WhipServer:
    """The WHIP component: routes on the main HTTP app, sessions, caps."""

    def __init__(self, cfg: Config, registry: StreamRegistry, gate: Gate) -> None:
        self.cfg = cfg
        self.registry = registry
        self.gate = gate
        self.sessions: dict[str, WhipSession] = {}
        self.per_ip: dict[str, int] = {}
        self._stats = WhipStats()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pacer = LogPacer(cfg.http.log_lines_per_s, cfg.http.log_burst)
        self.addresses: list[str] = []
        w = cfg.whip
        self.ports = (w.udp_port_min, w.udp_port_max) if w.udp_port_min else None

    def peer_factory(self, **callbacks: Callable[..., None]) -> WhipPeerLike:
        """A new peer connection with the configured addresses."""
        from onvifcam.whip.peer import WhipPeer  # aiortc loads only when WHIP is used

        return WhipPeer(  # type: ignore[return-value]
            addresses=self.addresses,
            ports=self.ports,
            public_ip=self.cfg.whip.public_ip,
            **callbacks,
        )

    # ---------------------------------------------------------------- component
    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register ``/whip/...`` on the main HTTP app."""
        router.add_route("*", "/whip/{tail:[\\s\\S]*}", self._handle)

    async def start(self) -> None:
        """Resolve the addresses host candidates are offered on."""
        from onvifcam.whip.peer import host_addresses

        # aioice/aiortc log every STUN message and check at DEBUG/INFO: keep logs readable
        for name in ("aioice", "aiortc"):
            logging.getLogger(name).setLevel(logging.WARNING)

        host = self.cfg.server.host
        try:
            ipaddress.ip_address(host or "0.0.0.0")
            self.addresses = host_addresses(host)
        except ValueError:  # a name: its IPv4 addresses
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, family=socket.AF_INET, type=socket.SOCK_DGRAM
            )
            self.addresses = sorted({str(i[4][0]) for i in infos})
        if not self.addresses:
            log.warning(
                "whip: no IPv4 address found for ICE host candidates ([server] host = %r); "
                "publishers can only reach [whip] public_ip",
                host,
            )

    async def stop(self) -> None:
        """End every session."""
        for s in list(self.sessions.values()):
            await s.close("server shutting down", "shutdown")
        if self._tasks:  # closes already under way: let them finish, briefly
            await asyncio.wait(list(self._tasks), timeout=5.0)
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def tick(self, now: float) -> None:
        """Once a second: the summary of suppressed log lines."""
        n = self._pacer.summary(now)
        if n:
            log.info("whip: %d more lines about refused requests suppressed", n)

    def ready_info(self) -> dict[str, str]:
        """Nothing of its own: WHIP shares the HTTP port."""
        return {}

    def stats(self) -> dict[str, object]:
        """Counters: sessions answered, refused by status, ended by cause, live sessions."""
        return {
            "answered": self._stats.sessions,
            "refused": dict(self._stats.refused),
            "ended": dict(self._stats.ended),
            "live": {sid[:8]: s.stats() for sid, s in self.sessions.items()},
        }

    def spawn(self, coro: object) -> None:
        """Run a coroutine in the background, kept until done."""
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget(self, session: WhipSession, cause: str) -> None:
        """A session ended: free its slot."""
        if self.sessions.pop(session.id, None) is not None:
            n = self.per_ip.get(session.ip, 1) - 1
            if n > 0:
                self.per_ip[session.ip] = n
            else:
                self.per_ip.pop(session.ip, None)
            self._stats.ended[cause] = self._stats.ended.get(cause, 0) + 1

    # ---------------------------------------------------------------- HTTP
    def _refuse(
        self, request: web.Request, status: int, reason: str, **headers: str
    ) -> web.Response:
        self._stats.refused[str(status)] = self._stats.refused.get(str(status), 0) + 1
        if self._pacer.allow(time.monotonic()):
            log.info(
                "whip: %s %s from %s: %d %s",
                request.method,
                request.path[:120],
                _peer(request)[0],
                status,
                reason,
            )
        return _text(status, reason, **headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("tail", "").strip("/")
        method = request.method
        if method == "OPTIONS":
            return web.Response(
                status=200,
                headers={
                    **CORS,
                    "Accept-Post": SDP,
                    "Allow": "OPTIONS, POST, DELETE",
                    "Access-Control-Allow-Methods": "OPTIONS, POST, DELETE",
                    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
                    "Access-Control-Max-Age": "86400",
                },
            )
        if method in ("GET", "HEAD") and (tail == "publish" or tail.endswith("/publish")):
            return self._page(tail[: -len("publish")].strip("/"))
        if method == "POST":
            return await self._post(request, tail)
        session = self._session_of(tail)
        if session is None:
            if method in ("DELETE", "PATCH"):
                return self._refuse(request, 404, "no such WHIP session (ended, or never made)")
            return self._refuse(
                request,
                405,
                f"{method} is not used on a WHIP endpoint: POST an SDP offer",
                Allow=ENDPOINT_ALLOW,
            )
        if method == "DELETE":
            if session.authorization and not hmac.compare_digest(
                session.authorization.encode(), request.headers.get("Authorization", "").encode()
            ):
                return self._refuse(
                    request,
                    401,
                    "DELETE needs the Authorization the session was created with",
                    **{"WWW-Authenticate": 'Bearer realm="onvifcam"'},
                )
            await session.close("the publisher ended the session (DELETE)", "delete")
            return web.Response(status=200, headers=CORS)
        if method == "PATCH":
            return self._refuse(
                request,
                405,
                "this server supports neither trickle ICE nor ICE restarts: every candidate "
                "is in the answer",
                Allow=SESSION_ALLOW,
            )
        return self._refuse(
            request, 405, f"{method} is not used on a WHIP session", Allow=SESSION_ALLOW
        )

    def _session_of(self, tail: str) -> WhipSession | None:
        path, _, sid = tail.rpartition("/")
        s = self.sessions.get(sid)
        if s is None or s.path != self.registry.normalize(path):
            return None
        return s

    def _page(self, path: str) -> web.Response:
        return web.Response(
            text=publish_page(path),
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": (
                    "default-src 'none'; script-src 'unsafe-inline'; "
                    "style-src 'unsafe-inline'; connect-src 'self'; media-src 'self' blob:"
                ),
            },
        )

    async def _post(self, request: web.Request, tail: str) -> web.Response:
        w = self.cfg.whip
        path = self.registry.normalize(tail)
        if not path:
            return self._refuse(request, 404, "the WHIP URL needs a stream path: /whip/PATH")
        ctype = request.content_type.lower()
        if ctype != SDP:
            return self._refuse(
                request,
                415,
                f"the offer must be {SDP}, not {ctype or 'nothing'}",
                **{"Accept-Post": SDP},
            )
        if (request.content_length or 0) > w.max_offer_bytes:
            resp = self._refuse(
                request,
                413,
                f"SDP offer larger than {w.max_offer_bytes} bytes ([whip] max_offer_bytes)",
            )
            resp.force_close()
            return resp
        try:
            async with asyncio.timeout(self.cfg.http.body_timeout):
                body = await _read_body(request, w.max_offer_bytes)
        except TimeoutError:
            resp = self._refuse(request, 408, "the SDP offer did not arrive in time")
            resp.force_close()
            return resp
        except (web.HTTPException, ConnectionError, ValueError) as exc:
            resp = self._refuse(request, 400, f"cannot read the request body: {exc}")
            resp.force_close()
            return resp
        if body is None:
            resp = self._refuse(
                request,
                413,
                f"SDP offer larger than {w.max_offer_bytes} bytes ([whip] max_offer_bytes)",
            )
            resp.force_close()
            return resp
        ip, port = _peer(request)
        if len(self.sessions) >= w.max_sessions:
            return self._refuse(
                request,
                503,
                f"{len(self.sessions)} WHIP sessions are open, the limit ([whip] max_sessions)",
                **{"Retry-After": str(RETRY_AFTER)},
            )
        if self.per_ip.get(ip, 0) >= w.max_sessions_per_ip:
            return self._refuse(
                request,
                429,
                f"{ip} has {self.per_ip[ip]} WHIP sessions open, the limit ([whip] "
                "max_sessions_per_ip); DELETE old ones",
                **{"Retry-After": str(RETRY_AFTER)},
            )
        from onvifcam.whip.offer import parse_offer

        try:
            offer = parse_offer(body)
        except OfferError as exc:
            return self._refuse(request, exc.status, exc.reason)
        presented, _scheme = credentials(
            request.headers.get("Authorization"), request.query.get("key")
        )
        sid = secrets.token_urlsafe(18)
        session = WhipSession(
            self, sid, path, ip, port, offer, request.headers.get("Authorization", "")
        )
        try:
            session.claim = self.gate.admit_publish(path, presented, session)
        except Refusal as exc:
            return self._refused_by_gate(request, exc, bool(_scheme))
        stream = self.registry.get(path)
        policy = self.cfg.path_policy(path)
        if stream is not None and stream.publisher is not None and policy.on_conflict != "replace":
            session.claim.release()
            return self._refuse(
                request,
                409,
                f"path '{path}' already has a publisher ({stream.publisher.description})",
            )
        self.sessions[sid] = session
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                answer = await session.answer()
        except (ValueError, TimeoutError, OSError) as exc:
            await session.close(f"offer not usable: {exc}", "bad-offer")
            status = 500 if isinstance(exc, OSError) else 422
            text = str(exc) or "the offer could not be answered in time"
            return self._refuse(request, status, f"cannot answer the offer: {text}")
        if session.closed:  # replaced or stopped while answering
            return self._refuse(request, 409, "the session ended while it was being set up")
        self._stats.sessions += 1
        resp = web.Response(
            status=201,
            body=answer,
            headers={
                **CORS,
                "Content-Type": SDP,
                "Location": f"/whip/{quote(path)}/{sid}",
            },
        )
        for link in ice_server_links(w.ice_servers, w.turn_username, w.turn_password):
            resp.headers.add("Link", link)
        log.info(
            "whip: %s:%d offered to publish '%s': answered, session %s",
            ip,
            port,
            path,
            sid[:8],
        )
        return resp

    def _refused_by_gate(self, request: web.Request, exc: Refusal, presented: bool) -> web.Response:
        if exc.kind is RefusalKind.UNAUTHORIZED:
            challenge = 'Bearer realm="onvifcam"'
            if presented:
                challenge += ', error="invalid_token"'
            return self._refuse(
                request,
                401,
                f"{exc.reason}: send Authorization: Bearer KEY (the path's publish_key) or "
                "Bearer USER:PASSWORD",
                **{"WWW-Authenticate": challenge},
            )
        if exc.kind is RefusalKind.CONFLICT:
            return self._refuse(request, 409, exc.reason)
        return self._refuse(request, 403, exc.reason)


def _padding_only(p: bytes) -> bool:
    """True for an RTP packet (P bit set) whose payload is all padding."""
    n = len(p)
    hdr = 12 + 4 * (p[0] & 0x0F)
    if p[0] & 0x10 and n >= hdr + 4:
        hdr += 4 + 4 * int.from_bytes(p[hdr + 2 : hdr + 4], "big")
    return n - p[-1] <= hdr


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)


def _peer(request: web.Request) -> tuple[str, int]:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return "?", 0
    ip = str(peer[0])
    if ip.startswith("::ffff:"):
        ip = ip[7:]
    return ip, int(peer[1])
