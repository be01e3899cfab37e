"""The asyncio RTSP server: publishers RECORD into streams, readers PLAY from them.

Only this module touches sockets for RTSP. Requests are parsed by :mod:`rtsp.message`
(sans-I/O); media goes through :class:`media.stream.Stream`. Admission and per-address
budgets come from the :class:`~onvifcam.limits.ConnectionLimiter` shared with RTMP: a
connection is unauthenticated until one of its requests passes the path's authentication
(DESCRIBE, ANNOUNCE, SETUP); a request must be complete ``request_timeout`` seconds after
its first byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import re
import socket
import time
import typing
from collections.abc import Iterable

from onvifcam import accept
from onvifcam.addressing import sdp_host
from onvifcam.aio import within
from onvifcam.auth.gate import Claim, Gate, HttpAuthorization, RefusalKind
from onvifcam.auth.gate import Refusal as GateRefusal
from onvifcam.config import Config
from onvifcam.limits import ConnectionLimiter, Refusal, Ticket
from onvifcam.media.sdp import SdpError, SessionDescription
from onvifcam.media.stream import RTCP, RTP, Stream, StreamBusy, StreamError, StreamRegistry
from onvifcam.netutil import BindError, Listener, binding
from onvifcam.rtsp import tunnel
from onvifcam.rtsp.auth import Authenticator
from onvifcam.rtsp.message import (
    REASONS,
    InterleavedFrame,
    Limits,
    ParseError,
    Parser,
    Request,
    TransportSpec,
    default_reason,
    parse_transport,
    response,
    split_uri,
)
from onvifcam.rtsp.session import MulticastGroup, RtspSession, TrackTransport
from onvifcam.rtsp.state import (
    ConnMachine,
    ConnMode,
    Overflow,
    Pipeline,
    Role,
    SessionState,
)

log = logging.getLogger(__name__)

PUBLIC = (
    "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, PAUSE, RECORD, TEARDOWN, "
    "GET_PARAMETER, SET_PARAMETER"
)
_TRACK_NUM = re.compile(r"(?:trackID|streamid|stream|track)=(\d+)$", re.IGNORECASE)
_CSEQ = re.compile(rb"(?im)^cseq[ \t]*:[ \t]*([0-9]{1,9})[ \t]*\r?$")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
MAX_SESSIONS_PER_CONNECTION = 16
_RTP_KEY = "--rtp-port or [rtsp] rtp_port"
_RTCP_KEY = "--rtp-port (plus 1) or [rtsp] rtcp_port"
# A refused connection is answered after its first request arrives (so the client reads
# the 503 instead of a reset); it waits at most this long, and only this many wait at once.
REFUSED_LINGER = 2.0
MAX_REFUSED_LINGERING = 256
REFUSED_HEAD_BYTES = 4096
# A closed connection whose client does not read what is left to send is aborted after this.
CLOSE_FLUSH_GRACE = 5.0


def _unavailable(refusal: Refusal, cseq: str | None, http: bool) -> bytes:
    """503 with Retry-After, as RTSP or (to an HTTP tunnel request) as HTTP."""
    retry = str(refusal.retry_after)
    if http:
        body = f"{refusal}\n".encode()
        return (
            f"HTTP/1.0 503 Service Unavailable\r\nRetry-After: {retry}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode() + body
    return response(503, cseq, [("Retry-After", retry)], reason=wire_reason(503, refusal.reason))


def wire_reason(status: int, detail: str) -> str:
    """The reason phrase for an error: the standard phrase, then what went wrong
    (ffmpeg prints it as "method X failed: 409 Conflict: ...", GStreamer as well)."""
    phrase = REASONS.get(status) or default_reason(status)
    if not detail:
        return phrase
    text = f"{phrase}: {_UNPRINTABLE.sub('?', detail)}"
    return text if len(text) <= 300 else text[:297] + "..."


class Reply(Exception):
    """Answer the current request with this status (and log the reason).

    The reason also goes into the reason phrase, unless ``public`` says what to tell the
    client instead (a 401 challenge tells nothing).
    """

    def __init__(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]] | None = None,
        public: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []
        self.public = public

    @classmethod
    def refused(cls, refusal: Refusal) -> Reply:
        """503 with Retry-After for a limiter refusal (the key to raise is only logged)."""
        return cls(503, str(refusal), [("Retry-After", str(refusal.retry_after))], refusal.reason)


class _Defer(Exception):
    """Answer the current request later, when ``path`` is published (a deferred reply)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


# The ``refusals`` counter an error status goes to (stats()).
_REFUSAL_KINDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    453: "capacity",
    454: "session_not_found",
    455: "method_not_valid",
    459: "transport",
    461: "transport",
    503: "unavailable",
}
REFUSAL_KEYS = (
    *dict.fromkeys(_REFUSAL_KINDS.values()),
    "other",
    "malformed",
    "connection_limit",
    "request_timeout",
    "slow_client",
    "not_implemented",
    "internal",
    "queue_full",
    "on_demand_timeout",
)


class RtspConnection(asyncio.Protocol):
    """One TCP connection: plain RTSP, or one half of an HTTP tunnel."""

    def __init__(self, server: RtspServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.out_transport: asyncio.Transport | None = None
        self.parser = Parser(server.parser_limits, role="server")
        self.sessions: set[RtspSession] = set()
        self.channels: dict[int, tuple[Stream | RtspSession, int, int]] = {}
        self.cm = ConnMachine()  # what the bytes are (see rtsp.state.ConnMode)
        self.pipeline: Pipeline[Request] = Pipeline(server.cfg.rtsp.max_queued_requests)
        self._wait_timer: asyncio.TimerHandle | None = None
        self._retrying = False  # handling a deferred request again: no second deferral
        self.peer_ip = ""
        self.local_ip = ""
        self.local_port = 0
        self.connected_at = time.monotonic()
        self.last_rx = self.connected_at
        self.record_deadline = 0.0
        self.partial_since = 0.0  # when the request now incomplete started arriving
        self.failed_logins = 0
        self.closing_at = 0.0
        self.ticket: Ticket | None = None
        self._refusal: Refusal | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._head = b""
        self._b64: tunnel.Base64Stream | None = None
        self._tunnel_target: RtspConnection | None = None
        self._tunnel_cookie = ""
        self.tunnelled = False

    @property
    def mode(self) -> ConnMode:
        """What this connection's bytes are."""
        return self.cm.mode

    # ------------------------------------------------------------------ lifecycle
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = typing.cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport = transport
        self.out_transport = transport
        peer = transport.get_extra_info("peername") or ("?", 0)
        sock = transport.get_extra_info("sockname") or ("0.0.0.0", 0)
        self.peer_ip, self.local_ip, self.local_port = peer[0], sock[0], sock[1]
        ticket = self.server.limiter.admit(self.peer_ip)
        if isinstance(ticket, Refusal):
            self._refuse(ticket)
            return
        self.ticket = ticket
        self.server.connections.add(self)

    def _refuse(self, refusal: Refusal) -> None:
        """Answer a refused connection with 503 and Retry-After once its request is in."""
        self.server.log_refusal(self.peer_ip, "refused connection", refusal)
        self._refusal = refusal
        self.server.refused("connection_limit")
        self.cm.to(ConnMode.REFUSED)
        server = self.server
        if server.lingering >= MAX_REFUSED_LINGERING:
            self._answer_refused(b"")
            return
        server.lingering += 1
        self._linger = asyncio.get_running_loop().call_later(
            REFUSED_LINGER, self._answer_refused, b""
        )

    def _answer_refused(self, head: bytes) -> None:
        refusal = self._refusal
        if self.mode is not ConnMode.REFUSED or refusal is None or self.transport is None:
            return
        self._refusal = None  # answered once
        self._stop_lingering()
        m = _CSEQ.search(head)
        self.transport.write(
            _unavailable(refusal, m.group(1).decode() if m else None, tunnel.looks_like_http(head))
        )
        self.transport.close()

    def _stop_lingering(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
            self.server.lingering -= 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.mode is ConnMode.REFUSED:
            self.cm.to(ConnMode.CLOSED)
            self._stop_lingering()
            return
        self._cancel_wait()
        if self.ticket is not None:
            self.server.limiter.release(self.ticket)
        self.server.connections.discard(self)
        for s in list(self.sessions):
            self.server.close_session(s, "connection closed")
        if self._tunnel_cookie and self.server.tunnels.get(self._tunnel_cookie) is self:
            del self.server.tunnels[self._tunnel_cookie]
        if self.tunnelled:
            # The POST halves feeding this GET half are exempt from the idle timeout, so
            # they go with it.
            for c in list(self.server.connections):
                if c._tunnel_target is self:
                    c.close()
        self.cm.to(ConnMode.CLOSED)

    def request_timeout(self) -> None:
        """The request being received took too long (slowloris): 408, one log line, close."""
        timeout = self.server.limits.request_timeout
        what = "request" if self.mode is ConnMode.RTSP else "HTTP tunnel request"
        held = self.server.limiter.log_gate(self.peer_ip, "request timeout")
        if held is not None:
            more = f" ({held} more from this address not logged)" if held else ""
            log.warning(
                "rtsp: %s did not complete its %s within %g s ([limits] request_timeout); "
                "closing%s",
                self.peer_ip,
                what,
                timeout,
                more,
            )
        reason = f"request not complete within {timeout:g} s"
        if self.mode is ConnMode.HTTP_HEAD:
            self.send(tunnel.error_response(408, "Request Timeout"))
        else:
            self.send(response(408, None, reason=wire_reason(408, reason)))
        self.partial_since = 0.0
        self.close()

    def send_refusal(self, refusal: Refusal) -> None:
        """Drop an admitted connection the limiter gave up on, telling the client why."""
        if self.mode is not ConnMode.HTTP_POST:
            self.send(_unavailable(refusal, None, self.mode is ConnMode.HTTP_HEAD))
        self.close()

    def close(self) -> None:
        """Close this connection (and the POST half of its tunnel, if any)."""
        if self.transport is not None and not self.transport.is_closing():
            self.closing_at = time.monotonic()
            self.transport.close()

    def send(self, data: bytes) -> None:
        """Write to the client (through the tunnel's GET half when tunnelled)."""
        tx = self.out_transport
        if tx is not None and not tx.is_closing():
            tx.write(data)
            self.server.bytes_out += len(data)

    # ------------------------------------------------------------------ input
    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        self.server.bytes_in += len(data)
        mode = self.mode
        if mode is ConnMode.RTSP:
            self.feed_rtsp(data)
        elif mode is ConnMode.HTTP_POST:
            self._post_body(data)
        elif mode is ConnMode.NEW:
            if self.server.cfg.rtsp.http_tunnel and tunnel.looks_like_http(data):
                self.cm.to(ConnMode.HTTP_HEAD)
                self._http_head(data)
            else:
                self.cm.to(ConnMode.RTSP)
                self.feed_rtsp(data)
        elif mode is ConnMode.HTTP_HEAD:
            self._http_head(data)
        elif mode is ConnMode.REFUSED:
            self._head = (self._head + data)[:REFUSED_HEAD_BYTES]
            if b"\r\n\r\n" in self._head or b"\n\n" in self._head:
                self._answer_refused(self._head)
            elif len(self._head) >= REFUSED_HEAD_BYTES:
                self._answer_refused(b"")

    def feed_rtsp(self, data: bytes) -> None:
        """Parse RTSP input (from this socket or from the tunnel's POST half)."""
        parser = self.parser
        try:
            events = parser.feed(data)
        except ParseError as exc:
            self.server.refused("malformed")
            log.warning("rtsp: malformed request from %s: %s", self.peer_ip, exc)
            self.send(response(exc.status, exc.cseq, reason=wire_reason(exc.status, exc.message)))
            self.close()
            return
        if parser.partial_message:
            # The request deadline runs from the first byte of the incomplete request.
            if not self.partial_since or any(isinstance(ev, Request) for ev in events):
                self.partial_since = time.monotonic()
        elif self.partial_since:
            self.partial_since = 0.0
        for ev in events:
            if type(ev) is InterleavedFrame:
                self._frame(ev)
            elif isinstance(ev, Request):
                self._submit(ev)

    def _frame(self, frame: InterleavedFrame) -> None:
        target = self.channels.get(frame.channel)
        if target is None:
            self.server.unknown_frames += 1
            return
        obj, index, kind = target
        if isinstance(obj, Stream):
            if kind == RTP:
                obj.on_rtp(index, frame.data)
            else:
                obj.on_rtcp(index, frame.data)
        else:
            obj.touch()  # a reader's RTCP receiver report keeps its session alive

    # ------------------------------------------------------------------ HTTP tunnel
    def _http_head(self, data: bytes) -> None:
        self._head += data
        try:
            parsed = tunnel.parse_head(self._head)
        except tunnel.TunnelError as exc:
            self._http_fail(400, "Bad Request", str(exc))
            return
        if parsed is None:
            if not self.partial_since:
                self.partial_since = time.monotonic()
            return
        head, rest = parsed
        self._head = b""
        self.partial_since = 0.0
        cookie = head.headers.get("x-sessioncookie", "")
        if not cookie:
            self._http_fail(400, "Bad Request", "HTTP request without x-sessioncookie")
            return
        if head.method == "GET":
            if cookie in self.server.tunnels:
                self._http_fail(409, "Conflict", f"tunnel cookie {cookie!r} already in use")
                return
            self.server.tunnels[cookie] = self
            self._tunnel_cookie = cookie
            self.tunnelled = True
            self.cm.to(ConnMode.RTSP)
            self.send(tunnel.get_response())
            if rest:
                self.feed_rtsp(rest)
        elif head.method == "POST":
            target = self.server.tunnels.get(cookie)
            if target is None:
                self._http_fail(404, "Not Found", f"no tunnel GET with cookie {cookie!r}")
                return
            self._tunnel_target = target
            self._b64 = tunnel.Base64Stream()
            self.cm.to(ConnMode.HTTP_POST)
            if rest:
                self._post_body(rest)
        else:
            self._http_fail(405, "Method Not Allowed", f"HTTP {head.method} is not a tunnel")

    def _http_fail(self, status: int, reason: str, why: str) -> None:
        log.warning("rtsp-http: %s from %s: %s", status, self.peer_ip, why)
        self.server.refused("malformed")
        self.send(tunnel.error_response(status, reason))
        self.close()

    def _post_body(self, data: bytes) -> None:
        target = self._tunnel_target
        assert self._b64 is not None
        if target is None or target.cm.closed:
            self.close()
            return
        try:
            decoded = self._b64.feed(data)
        except tunnel.TunnelError as exc:
            self._http_fail(400, "Bad Request", str(exc))
            return
        if decoded:
            target.last_rx = self.last_rx
            target.feed_rtsp(decoded)
            # The POST half carries the GET half's requests: it is proven when that is.
            mine, theirs = self.ticket, target.ticket
            if mine is not None and theirs is not None and theirs.authenticated:
                self.server.limiter.authenticate(mine)

    # ------------------------------------------------------------------ requests
    def _submit(self, req: Request) -> None:
        """A request arrived: handle it now, or queue it behind a deferred reply."""
        self.server.count_request(req.method)
        try:
            ready = self.pipeline.submit(req)
        except Overflow as exc:
            self.server.refused("queue_full")
            log.warning("rtsp: %s: %s; closing", self.peer_ip, exc)
            cseq = req.headers.get("CSeq")
            self.send(response(503, cseq, reason=wire_reason(503, str(exc))))
            self.close()
            return
        for r in ready:
            self._request(r)

    def _defer(self, req: Request, path: str) -> None:
        """Answer ``req`` once ``path`` is published, or as timed out (see rtsp.state)."""
        timeout = self.server.cfg.rtsp.on_demand_timeout
        self.pipeline.defer(req, path, time.monotonic() + timeout)
        self.server.waiting.add(self)
        self.server.deferred["deferred"] += 1
        self._wait_timer = asyncio.get_running_loop().call_later(timeout, self._wait_expired)
        log.info(
            "rtsp: %s %s from %s waits up to %g s for its on-demand source",
            req.method,
            path,
            self.peer_ip,
            timeout,
        )

    def _end_wait(self) -> None:
        if self._wait_timer is not None:
            self._wait_timer.cancel()
            self._wait_timer = None
        self.server.waiting.discard(self)

    def _cancel_wait(self) -> None:
        """The client went: its deferred request and the queue behind it are dropped."""
        if self.pipeline.busy:
            self.server.deferred["cancelled"] += 1
        self.pipeline.cancel()
        self._end_wait()

    def stream_published(self, path: str) -> None:
        """``path`` got a publisher: answer the request waiting for it, then the queue."""
        w = self.pipeline.published(path)
        if w is None:
            return
        self._end_wait()
        self.server.deferred["resumed"] += 1
        self._retrying = True
        try:
            self._request(w.request)
        finally:
            self._retrying = False
        self._drain()

    def _wait_expired(self) -> None:
        self._wait_timer = None
        waiting = self.pipeline.waiting
        if waiting is None:
            return
        w = self.pipeline.expire(max(time.monotonic(), waiting.deadline))
        self._end_wait()
        if w is None:
            return
        self.server.deferred["expired"] += 1
        self.server.refused("on_demand_timeout")
        timeout = self.server.cfg.rtsp.on_demand_timeout
        reason = (
            f"on-demand source for '{w.path}' did not start within {timeout:g} s "
            "([rtsp] on_demand_timeout)"
        )
        log.warning("rtsp: %s %s from %s -> 503 %s", w.request.method, w.path, self.peer_ip, reason)
        self.send(response(503, w.request.headers.get("CSeq"), reason=wire_reason(503, reason)))
        self._drain()

    def _drain(self) -> None:
        """Handle what was queued behind a deferred reply, until one defers again."""
        while not self.closing_at:
            req = self.pipeline.next_queued()
            if req is None:
                return
            self._request(req)

    def _request(self, req: Request) -> None:
        cseq = req.headers.get("CSeq")
        sid = req.headers.get("Session")
        if sid:
            s = self.server.sessions.get(sid.split(";")[0].strip())
            if s is not None:
                s.touch()
        handler = _HANDLERS.get(req.method)
        if handler is None:
            self.server.refused("not_implemented")
            self.send(response(501, cseq, [("Public", PUBLIC)]))
            return
        tx = self.out_transport
        playing = any(s.state is SessionState.PLAYING for s in self.sessions)
        if tx is not None and not playing:
            queued = tx.get_write_buffer_size()
            if queued > self.server.limits.reader_queue_bytes:
                # A client that sends requests but never reads the answers.
                self.server.refused("slow_client")
                log.warning(
                    "rtsp: %s does not read its responses (%d bytes queued, [limits] "
                    "reader_queue_bytes); closing",
                    self.peer_ip,
                    queued,
                )
                self.close()
                return
        limiter = self.server.limiter
        with_credentials = "Authorization" in req.headers
        ticket = self.ticket
        try:
            if with_credentials and (
                self.failed_logins or ticket is None or not ticket.authenticated
            ):
                # No password guessing on an empty budget: refused before it is checked.
                # (A logged-in client's further requests carry credentials too: they pass.)
                refusal = limiter.check(self.peer_ip)
                if refusal is not None:
                    raise Reply.refused(refusal)
            handler(self, req, cseq)
        except _Defer as d:
            self._defer(req, d.path)
        except Reply as r:
            self.server.refused(_REFUSAL_KINDS.get(r.status, "other"))
            level = logging.INFO if r.status in (401, 404) else logging.WARNING
            log.log(
                level,
                "rtsp: %s %s from %s -> %d %s",
                req.method,
                req.uri,
                self.peer_ip,
                r.status,
                r.reason,
            )
            if r.status == 401 and with_credentials:
                self.failed_logins += 1
                limiter.charge(self.peer_ip)  # a failed login
            challenge = any(k.lower() == "www-authenticate" for k, _v in r.headers)
            # Why a login failed stays in the log (no hints for password guessing).
            detail = r.public if r.public is not None else "" if challenge else r.reason
            self.send(response(r.status, cseq, r.headers, reason=wire_reason(r.status, detail)))
        except Exception:
            self.server.refused("internal")
            log.exception("rtsp: internal error handling %s %s", req.method, req.uri)
            self.send(response(500, cseq))

    def _path(self, req: Request) -> tuple[str, str]:
        try:
            _host, path, query = split_uri(req.uri)
        except ValueError as exc:
            raise Reply(400, f"bad request URI: {exc}") from None
        return path, query

    def _auth(self, req: Request, path: str) -> None:
        """Read admission through the gate (path users and the cameras' ONVIF users)."""
        presented = HttpAuthorization(
            self.server.auth, req.method, req.headers.get("Authorization")
        )
        try:
            self.server.gate.admit_read(path, presented)
        except GateRefusal as exc:
            raise self._gate_reply(exc, path) from None

    def _gate_reply(self, exc: GateRefusal, path: str) -> Reply:
        """The RTSP status for a gate refusal (the log gets the whole reason)."""
        if exc.kind is RefusalKind.UNAUTHORIZED:
            if exc.key:  # a stream key in the URL: a login prompt would not help
                return Reply(401, exc.reason)
            return Reply(401, exc.reason, self.server.auth.challenge_headers(stale=exc.stale))
        if exc.kind is RefusalKind.CONFLICT:
            return Reply(409, exc.reason, public=f"path '{path}' already has a publisher")
        return Reply(403, exc.reason)

    def _session(self, req: Request, required: bool = True) -> RtspSession | None:
        sid = req.headers.get("Session")
        if not sid:
            if required:
                raise Reply(454, "request without a Session header")
            return None
        s = self.server.sessions.get(sid.split(";")[0].strip())
        if s is None:
            raise Reply(454, f"session {sid!r} not found")
        return s

    def _check_session_room(self) -> None:
        if len(self.sessions) >= MAX_SESSIONS_PER_CONNECTION:
            raise Reply(
                453, f"too many sessions on one connection (max {MAX_SESSIONS_PER_CONNECTION})"
            )

    def _url(self, req: Request) -> str:
        return req.uri.split("?", 1)[0].rstrip("/")

    def _session_header(self, s: RtspSession) -> tuple[str, str]:
        return ("Session", f"{s.id};timeout={int(self.server.limits.session_timeout)}")

    def m_options(self, req: Request, cseq: str | None) -> None:
        self.send(response(200, cseq, [("Public", PUBLIC)]))

    def m_get_parameter(self, req: Request, cseq: str | None) -> None:
        headers = []
        s = self._session(req, required=False)
        if s is not None:
            headers.append(self._session_header(s))
        self.send(response(200, cseq, headers))

    m_set_parameter = m_get_parameter

    def _proven(self) -> None:
        """A request passed authentication: the connection no longer counts as unproven."""
        if self.ticket is not None:
            self.server.limiter.authenticate(self.ticket)

    def m_describe(self, req: Request, cseq: str | None) -> None:
        path, _q = self._path(req)
        self._auth(req, path)
        self._proven()
        registry = self.server.registry
        stream = registry.get(path)
        if stream is None or not stream.playable:
            if not self._retrying and registry.demand(path):
                raise _Defer(registry.normalize(path))
            raise Reply(404, f"no stream is published at '{path}'")
        busy = getattr(stream.publisher, "reader_refusal", None)  # see media.stream.Publisher
        if busy is not None and (why := busy()):
            raise Reply(503, why)
        host = self.server.advertised_host(self.local_ip)
        body = stream.reader_sdp(host)
        headers = [
            ("Content-Type", "application/sdp"),
            ("Content-Base", self._url(req) + "/"),
        ]
        self.send(response(200, cseq, headers, body))

    def m_announce(self, req: Request, cseq: str | None) -> None:
        path, query = self._path(req)
        server = self.server
        if not path:
            raise Reply(400, "ANNOUNCE needs a stream path")
        limiter = server.limiter
        refusal = limiter.check(self.peer_ip)
        if refusal is not None:
            raise Reply.refused(refusal)
        s = RtspSession(server, self, Role.RECORD, path=path, remote_ip=self.peer_ip)
        key = next(
            (v for k, _, v in (p.partition("=") for p in query.split("&")) if k == "key"), None
        )
        presented = HttpAuthorization(
            server.auth, req.method, req.headers.get("Authorization"), key=key
        )
        try:
            claim = server.gate.admit_publish(path, presented, s)
        except GateRefusal as exc:
            if exc.kind is RefusalKind.CONFLICT:  # the credentials were right
                self._proven()
                limiter.charge(self.peer_ip)
            raise self._gate_reply(exc, path) from None
        self._proven()
        limiter.charge(self.peer_ip)  # a publish attempt costs from the address's budget
        try:
            try:
                sdp = SessionDescription.parse(req.body)
            except SdpError as exc:
                raise Reply(400, f"bad SDP: {exc}") from None
            existing = server.registry.get(path)  # a publisher outside the gate (a source)
            if (
                existing is not None
                and existing.online
                and server.cfg.path_policy(path).on_conflict == "reject"
            ):
                raise Reply(409, f"path '{path}' already has a publisher")
            self._check_session_room()
        except Reply:
            claim.release()
            raise
        server.new_session(self, Role.RECORD, path, s)
        server.claims[s.id] = claim
        s.announced = sdp
        s.base_url = self._url(req)
        self.record_deadline = time.monotonic() + server.limits.publish_timeout
        self.send(response(200, cseq, [self._session_header(s)]))

    def _record_track(self, s: RtspSession, req: Request) -> int:
        assert s.announced is not None
        url = self._url(req)
        media = s.announced.media
        suffix = url[len(s.base_url) :].strip("/") if url.startswith(s.base_url) else ""
        for i, md in enumerate(media):
            c = (md.control or "").strip()
            if c and (c == url or c.rstrip("/") == url or c == suffix or url.endswith("/" + c)):
                return i
        m = _TRACK_NUM.search(url)
        if m and int(m.group(1)) < len(media):
            return int(m.group(1))
        if len(media) == 1:
            return 0
        raise Reply(404, f"no announced media matches {url!r}")

    def m_setup(self, req: Request, cseq: str | None) -> None:
        raw = req.headers.get("Transport")
        if not raw:
            raise Reply(400, "SETUP without a Transport header")
        try:
            specs = parse_transport(raw)
        except ParseError as exc:
            raise Reply(461, f"bad Transport header: {exc}") from None
        s = self._session(req, required=False)
        if s is not None and s.role is Role.RECORD:
            self._setup_record(s, req, cseq, specs)
        else:
            self._setup_play(s, req, cseq, specs)

    def _setup_record(
        self, s: RtspSession, req: Request, cseq: str | None, specs: list[TransportSpec]
    ) -> None:
        refusal = s.machine.check("SETUP")
        if refusal is not None:
            raise Reply(refusal.status, refusal.reason)
        idx = self._record_track(s, req)
        server = self.server
        for spec in specs:
            if spec.multicast:
                continue
            if spec.lower == "TCP":
                ch = spec.interleaved or (2 * idx, 2 * idx + 1)
                tt = TrackTransport(idx, "TCP", interleaved=ch)
                reply = f"RTP/AVP/TCP;unicast;interleaved={ch[0]}-{ch[1]};mode=record"
                break
            if spec.lower == "UDP" and spec.client_port and server.udp_ready and not self.tunnelled:
                p1, p2 = spec.client_port
                tt = TrackTransport(idx, "UDP", client_addr=(self.peer_ip, p1, p2))
                reply = (
                    f"RTP/AVP/UDP;unicast;client_port={p1}-{p2};"
                    f"server_port={server.rtp_port}-{server.rtcp_port};mode=record"
                )
                break
        else:
            raise Reply(461, f"no supported transport for recording in {raw_of(specs)!r}")
        s.transports[idx] = tt
        s.machine.set_up()
        self.send(response(200, cseq, [("Transport", reply), self._session_header(s)]))

    def _setup_play(
        self,
        s: RtspSession | None,
        req: Request,
        cseq: str | None,
        specs: list[TransportSpec],
    ) -> None:
        if any(sp.mode == "record" for sp in specs):
            raise Reply(455, "SETUP with mode=record before ANNOUNCE")
        path, _q = self._path(req)
        found = self.server.registry.find_prefix(path)
        if found is None:
            self._auth(req, path)
            self._proven()
            raise Reply(404, f"no stream is published at '{path}'")
        stream, control = found
        self._auth(req, stream.path)
        self._proven()
        if not stream.playable:
            raise Reply(404, f"no stream is published at '{stream.path}'")
        if s is not None and s.stream is not None and s.stream is not stream:
            raise Reply(459, "one session cannot read two streams")
        if s is None:
            self._check_session_room()
            if len(stream.readers) >= self.server.limits.max_readers_per_stream:
                raise Reply(453, f"stream '{stream.path}' has its maximum number of readers")
        idx = self._play_track(stream, control)
        server = self.server
        cfg = server.cfg.rtsp
        chosen: TrackTransport | None = None
        reply = ""
        for spec in specs:
            if spec.lower == "TCP" and not spec.multicast:
                ch = spec.interleaved or (2 * idx, 2 * idx + 1)
                chosen = TrackTransport(idx, "TCP", interleaved=ch)
                reply = f"RTP/AVP/TCP;unicast;interleaved={ch[0]}-{ch[1]}"
                break
            if self.tunnelled:
                continue
            if spec.multicast and cfg.multicast and server.multicast_transport is not None:
                group = server.multicast_group(stream)
                p1, p2 = group.ports(idx)
                chosen = TrackTransport(idx, "MULTICAST")
                reply = (
                    f"RTP/AVP;multicast;destination={group.group};port={p1}-{p2};"
                    f"ttl={cfg.multicast_ttl}"
                )
                break
            if spec.lower == "UDP" and not spec.multicast and spec.client_port and server.udp_ready:
                p1, p2 = spec.client_port
                chosen = TrackTransport(idx, "UDP", client_addr=(self.peer_ip, p1, p2))
                reply = (
                    f"RTP/AVP;unicast;client_port={p1}-{p2};"
                    f"server_port={server.rtp_port}-{server.rtcp_port};"
                    f"ssrc={stream.tracks[idx].ssrc:08X}"
                )
                break
        if chosen is None:
            raise Reply(461, f"unsupported transport {raw_of(specs)!r}")
        if s is None:
            s = server.new_session(self, Role.PLAY, stream.path)
            s.stream = stream
            url = self._url(req)
            s.base_url = url[: len(url) - len(control)].rstrip("/") if control else url
        refusal = s.machine.check("SETUP")
        if refusal is not None:
            raise Reply(refusal.status, refusal.reason)
        if s.transports and any(
            (t.lower == "MULTICAST") != (chosen.lower == "MULTICAST") for t in s.transports.values()
        ):
            raise Reply(461, "mixing multicast and unicast in one session is not supported")
        s.multicast = chosen.lower == "MULTICAST"
        s.transports[idx] = chosen
        s.machine.set_up()
        if chosen.interleaved is not None:
            self.channels[chosen.interleaved[1]] = (s, idx, RTCP)
        if chosen.client_addr is not None:
            server.udp_reader_rtcp[(chosen.client_addr[0], chosen.client_addr[2])] = s
        self.send(response(200, cseq, [("Transport", reply), self._session_header(s)]))

    @staticmethod
    def _play_track(stream: Stream, control: str) -> int:
        if not control:
            if len(stream.tracks) == 1:
                return 0
            raise Reply(459, "SETUP of the aggregate URL; set up each track (trackID=N)")
        for t in stream.tracks:
            if control == t.control:
                return t.index
        m = _TRACK_NUM.search(control)
        if m and int(m.group(1)) < len(stream.tracks):
            return int(m.group(1))
        raise Reply(404, f"stream '{stream.path}' has no track '{control}'")

    def m_play(self, req: Request, cseq: str | None) -> None:
        s = self._session(req)
        assert s is not None
        refusal = s.machine.check("PLAY")
        if refusal is not None:
            raise Reply(refusal.status, refusal.reason)
        stream = s.stream
        assert stream is not None  # a reading session has its stream from its first SETUP
        headers = [self._session_header(s), ("Range", "npt=now-")]
        if s.state is not SessionState.PLAYING:
            positions = stream.start_positions()
            info = []
            base = s.base_url or self._url(req)
            for idx in sorted(s.transports):
                seq, ts = positions[idx]
                info.append(f"url={base}/{stream.tracks[idx].control};seq={seq};rtptime={ts}")
            headers.append(("RTP-Info", ",".join(info)))
            self.send(response(200, cseq, headers))
            s.start_play()
            log.info(
                "rtsp: %s plays %s (%s)",
                self.peer_ip,
                stream.path,
                ",".join(t.lower for t in s.transports.values()),
            )
        else:
            self.send(response(200, cseq, headers))

    def m_pause(self, req: Request, cseq: str | None) -> None:
        s = self._session(req)
        assert s is not None
        if s.role is Role.PLAY:
            s.stop_play()
        self.send(response(200, cseq, [self._session_header(s)]))

    def m_record(self, req: Request, cseq: str | None) -> None:
        s = self._session(req)
        assert s is not None
        refusal = s.machine.check("RECORD")
        if refusal is not None:
            raise Reply(refusal.status, refusal.reason)
        assert s.announced is not None  # a recording session starts with its ANNOUNCE
        if s.state is SessionState.RECORDING:
            self.send(response(200, cseq, [self._session_header(s)]))
            return
        policy = self.server.cfg.path_policy(s.path)
        try:
            stream = self.server.registry.get_or_create(s.path)
            stream.publish(s, s.announced, replace=policy.on_conflict == "replace")
        except StreamBusy as exc:
            raise Reply(409, str(exc)) from None
        except StreamError as exc:
            raise Reply(exc.status, str(exc)) from None
        s.stream = stream
        s.machine.record()
        self.record_deadline = 0.0
        # map announced media index -> stream track index
        by_media = {id(t.media): t.index for t in stream.tracks}
        for i, tt in s.transports.items():
            ti = by_media.get(id(s.announced.media[i]))
            if ti is None:
                continue
            if tt.interleaved is not None:
                self.channels[tt.interleaved[0]] = (stream, ti, RTP)
                self.channels[tt.interleaved[1]] = (stream, ti, RTCP)
            elif tt.client_addr is not None:
                ip, p1, p2 = tt.client_addr
                self.server.udp_publishers[(ip, p1)] = (stream, ti, RTP, s)
                self.server.udp_publishers[(ip, p2)] = (stream, ti, RTCP, s)
        self.send(response(200, cseq, [self._session_header(s)]))

    def m_teardown(self, req: Request, cseq: str | None) -> None:
        s = self._session(req, required=False)
        if s is not None:
            self.server.close_session(s, "TEARDOWN")
        self.send(response(200, cseq))


def raw_of(specs: Iterable[TransportSpec]) -> str:
    """Transport alternatives as text, for error messages."""
    return ",".join(sp.serialize() for sp in specs)


_HANDLERS = {
    "OPTIONS": RtspConnection.m_options,
    "DESCRIBE": RtspConnection.m_describe,
    "ANNOUNCE": RtspConnection.m_announce,
    "SETUP": RtspConnection.m_setup,
    "PLAY": RtspConnection.m_play,
    "PAUSE": RtspConnection.m_pause,
    "RECORD": RtspConnection.m_record,
    "TEARDOWN": RtspConnection.m_teardown,
    "GET_PARAMETER": RtspConnection.m_get_parameter,
    "SET_PARAMETER": RtspConnection.m_set_parameter,
}


class _UdpIn(asyncio.DatagramProtocol):
    def __init__(self, server: RtspServer, kind: int) -> None:
        self.server = server
        self.kind = kind

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.udp_datagram(self.kind, data, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable etc.
        log.debug("rtsp-udp: %s", exc)


class RtspServer:
    """Owns the RTSP listener, UDP ports, sessions and tunnels."""

    def __init__(
        self,
        cfg: Config,
        registry: StreamRegistry,
        limiter: ConnectionLimiter,
        gate: Gate | None = None,
    ) -> None:
        self.cfg = cfg
        self.limits = cfg.limits
        self.registry = registry
        self.limiter = limiter
        self.gate = gate if gate is not None else Gate(cfg)
        # deferred replies wake on any publish of their path, a placeholder's too (a
        # transcoded sub stream being remade is one): StreamPublished is for real ones only
        registry.playable_listeners.append(self._on_playable)
        self.waiting: set[RtspConnection] = set()  # connections with a deferred reply
        self.claims: dict[str, Claim] = {}  # publishing session id -> its claim on the path
        self.parser_limits = Limits(
            max_line=cfg.limits.max_request_line,
            max_headers=cfg.limits.max_headers,
            max_header_bytes=cfg.limits.max_header_bytes,
            max_body=cfg.limits.max_body,
        )
        self.auth = Authenticator(
            realm=cfg.rtsp.realm, allow_basic="basic" in cfg.rtsp.auth_methods
        )
        self.connections: set[RtspConnection] = set()
        self.sessions: dict[str, RtspSession] = {}
        self.tunnels: dict[str, RtspConnection] = {}
        self.udp_publishers: dict[tuple[str, int], tuple[Stream, int, int, RtspSession]] = {}
        self.udp_reader_rtcp: dict[tuple[str, int], RtspSession] = {}
        self.multicast: dict[str, MulticastGroup] = {}
        self.multicast_transport: asyncio.DatagramTransport | None = None
        self.udp_rtp_transport: asyncio.DatagramTransport | None = None
        self.udp_rtcp_transport: asyncio.DatagramTransport | None = None
        self.rtp_port = 0
        self.rtcp_port = 0
        self.port = 0
        self._server: accept.BatchServer | None = None
        self._extra: list[accept.BatchServer] = []
        # counters (stats())
        self.requests: dict[str, int] = dict.fromkeys([*_HANDLERS, "other"], 0)
        self.refusals: dict[str, int] = dict.fromkeys(REFUSAL_KEYS, 0)
        self.deferred: dict[str, int] = dict.fromkeys(
            ("deferred", "resumed", "expired", "cancelled"), 0
        )
        self.bytes_in = 0
        self.bytes_out = 0
        self.unknown_frames = 0  # interleaved frames on a channel nobody set up
        self.udp_foreign = 0  # datagrams on the UDP ports from nobody we know
        self.reader_drops = 0  # times a reader fell behind and dropped to a keyframe
        self.lingering = 0  # refused connections waiting for their request (see _refuse)

    def count_request(self, method: str) -> None:
        """Count a request by method (unknown methods as "other")."""
        key = method if method in self.requests else "other"
        self.requests[key] += 1

    def refused(self, kind: str) -> None:
        """Count a refusal (an error answer or a dropped connection) by kind."""
        self.refusals[kind] = self.refusals.get(kind, 0) + 1

    def stats(self) -> dict[str, int | float | dict[str, int]]:
        """Sessions by state and connections (gauges); requests by method, refusals by
        kind, deferred replies, bytes in and out, and stray input (counters)."""
        by_state = dict.fromkeys((st.value for st in SessionState if st.value != "closed"), 0)
        for sess in self.sessions.values():
            if sess.state.value in by_state:
                by_state[sess.state.value] += 1
        return {
            "connections": len(self.connections),
            "sessions": by_state,
            "waiting": len(self.waiting),
            "requests": dict(self.requests),
            "refusals": dict(self.refusals),
            "deferred": dict(self.deferred),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out + sum(g.sent for g in self.multicast.values()),
            "unknown_frames": self.unknown_frames,
            "udp_foreign": self.udp_foreign,
            "reader_drops": self.reader_drops,
        }

    def _on_playable(self, path: str) -> None:
        """A publish at ``path``: wake the connections whose deferred reply waits for it
        (on the next loop turn, not inside the publisher's call)."""
        if not self.waiting:
            return
        loop = asyncio.get_running_loop()
        for c in list(self.waiting):
            w = c.pipeline.waiting
            if w is not None and w.path == path:
                loop.call_soon(c.stream_published, path)

    @property
    def udp_ready(self) -> bool:
        """True when UDP transport is enabled and its ports are bound."""
        return self.udp_rtp_transport is not None

    def advertised_host(self, local_ip: str) -> str:
        """The address to put in the SDP (:func:`onvifcam.addressing.sdp_host`)."""
        return sdp_host(self.cfg.server, local_ip)

    async def start(self, host: str, port: int) -> None:
        """Bind the RTSP listener and the UDP ports."""
        loop = asyncio.get_running_loop()
        with binding("tcp", host, port, "RTSP port", "--rtsp-port or [server] rtsp_port"):
            self._server = await accept.create_server(
                lambda: RtspConnection(self), host, port, backlog=1024
            )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.cfg.rtsp.udp:
            await self._bind_udp(host)
        if self.cfg.rtsp.multicast:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.cfg.rtsp.multicast_ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            sock.setblocking(False)
            tx, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=sock)
            self.multicast_transport = tx

    async def listen(
        self,
        host: str,
        port: int,
        role: str = "camera RTSP port",
        setting: str = "rtsp_port",
        host_setting: str = "address",
    ) -> accept.BatchServer:
        """Serve RTSP on one more address (a camera's own IP); close it with ``.close()``."""
        with binding("tcp", host, port, role, setting, host_setting):
            srv = await accept.create_server(lambda: RtspConnection(self), host, port, backlog=1024)
        self._extra.append(srv)
        return srv

    async def _bind_udp(self, host: str) -> None:
        loop = asyncio.get_running_loop()
        want = self.cfg.rtsp.rtp_port
        for _attempt in range(50):
            rtp_port = want
            if want == 0:
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                probe.bind((host, 0))
                rtp_port = probe.getsockname()[1] & ~1
                probe.close()
            rtcp_port = self.cfg.rtsp.rtcp_port if want else rtp_port + 1
            try:
                with binding("udp", host, rtp_port, "RTSP RTP port", _RTP_KEY):
                    t1, _ = await loop.create_datagram_endpoint(
                        lambda: _UdpIn(self, RTP), local_addr=(host, rtp_port)
                    )
            except OSError:
                if want:
                    raise
                continue
            try:
                with binding("udp", host, rtcp_port, "RTSP RTCP port", _RTCP_KEY):
                    t2, _ = await loop.create_datagram_endpoint(
                        lambda: _UdpIn(self, RTCP), local_addr=(host, rtcp_port)
                    )
            except OSError:
                t1.close()
                if want:
                    raise
                continue
            self.udp_rtp_transport, self.udp_rtcp_transport = t1, t2
            self.rtp_port, self.rtcp_port = rtp_port, rtcp_port
            return
        raise BindError(
            Listener("udp", host, 0, "RTSP RTP/RTCP port pair", _RTP_KEY, zero_ok=False),
            OSError(errno.EAGAIN, "no free pair of adjacent UDP ports in 50 tries"),
        )

    async def stop(self) -> None:
        """Close every session and connection, then the listeners."""
        with contextlib.suppress(ValueError):
            self.registry.playable_listeners.remove(self._on_playable)
        for srv in [self._server, *self._extra]:
            if srv is not None:
                srv.close()
        for s in list(self.sessions.values()):
            self.close_session(s, "server shutting down")
        for c in list(self.connections):
            c.close()
        for tx in (self.udp_rtp_transport, self.udp_rtcp_transport, self.multicast_transport):
            if tx is not None:
                tx.close()
        # a closed transport's socket closes on the next loop turn: take it, so the UDP
        # ports are free when stop returns (a failed start binds nothing it leaves behind)
        await asyncio.sleep(0)
        if self._server is not None:
            try:
                await within(self._server.wait_closed(), 2.0)
            except TimeoutError:
                pass

    # ------------------------------------------------------------------ sessions
    def new_session(
        self, conn: RtspConnection, role: Role, path: str, s: RtspSession | None = None
    ) -> RtspSession:
        """Create (unless given) and register a session on a connection."""
        if s is None:
            s = RtspSession(self, conn, role, path=path, remote_ip=conn.peer_ip)
        self.sessions[s.id] = s
        conn.sessions.add(s)
        return s

    def close_session(self, s: RtspSession, reason: str, unpublish: bool = True) -> None:
        """End a session: unpublish or stop reading, drop its transports."""
        if self.sessions.pop(s.id, None) is None:
            return
        if s.role is Role.RECORD:
            claim = self.claims.pop(s.id, None)
            if claim is not None:
                claim.release()
            if s.stream is not None and unpublish:
                s.stream.unpublish(s, reason)
            for key, val in list(self.udp_publishers.items()):
                if val[3] is s:
                    del self.udp_publishers[key]
        else:
            s.stop_play()
            self.multicast_leave(s)  # also frees a group set up but never played
            for key, val in list(self.udp_reader_rtcp.items()):
                if val is s:
                    del self.udp_reader_rtcp[key]
        conn = s.conn
        if conn is not None:
            conn.sessions.discard(s)
            for ch, target in list(conn.channels.items()):
                if target[0] is s or (
                    s.stream is not None and target[0] is s.stream and s.role is Role.RECORD
                ):
                    del conn.channels[ch]
        s.machine.close()

    # ------------------------------------------------------------------ UDP
    def udp_datagram(self, kind: int, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram on the server's RTP or RTCP port."""
        self.bytes_in += len(data)
        key = (addr[0], addr[1])
        pub = self.udp_publishers.get(key)
        if pub is not None and pub[2] == kind:
            stream, index, _k, session = pub
            if session.state is not SessionState.RECORDING:
                return
            if kind == RTP:
                stream.on_rtp(index, data)
            else:
                stream.on_rtcp(index, data)
            return
        if kind == RTCP:
            s = self.udp_reader_rtcp.get(key)
            if s is not None:
                s.touch()
                return
        self.udp_foreign += 1

    # ------------------------------------------------------------------ multicast
    def multicast_group(self, stream: Stream) -> MulticastGroup:
        """The stream's multicast group, allocated on first use."""
        g = self.multicast.get(stream.path)
        if g is None:
            assert self.multicast_transport is not None
            net = ipaddress.ip_network(self.cfg.rtsp.multicast_range, strict=False)
            used = {x.group for x in self.multicast.values()}
            size = net.num_addresses
            start = 1 if size > 2 else 0
            for i in range(start, size):
                addr = str(net[i])
                if addr not in used:
                    break
            else:
                raise Reply(453, "multicast address range exhausted")
            g = MulticastGroup(
                stream, addr, self.cfg.rtsp.multicast_port_base, self.multicast_transport
            )
            self.multicast[stream.path] = g
        return g

    def multicast_join(self, s: RtspSession) -> None:
        """Add a playing session to its stream's group; the group reads the stream once."""
        assert s.stream is not None
        g = self.multicast_group(s.stream)
        if not g.members:
            g.stream.add_reader(g)
        g.members.add(s)

    def multicast_leave(self, s: RtspSession) -> None:
        """Remove a session from its path's group; a group left without members stops."""
        g = self.multicast.get(s.path)
        if g is None:
            return
        g.members.discard(s)
        if not g.members:
            g.stream.remove_reader(g)
            del self.multicast[s.path]
            self.bytes_out += g.sent

    # ------------------------------------------------------------------ housekeeping
    def log_refusal(self, ip: str, what: str, refusal: Refusal) -> None:
        """Log a limiter refusal: at most one line per address and kind every 10 s."""
        held = self.limiter.log_gate(ip, "rtsp " + what)
        if held is not None:
            more = f" ({held} more not logged)" if held else ""
            log.warning("rtsp: %s from %s: %s%s", what, ip, refusal, more)

    def tick(self, now: float) -> None:
        """Enforce the connection and session timeouts (called once a second)."""
        lim = self.limits
        limiter = self.limiter
        for c in list(self.connections):
            if c.cm.closed:
                continue
            if c.closing_at:
                # Closed, but the client does not read what was left to send: it would hold
                # its slot for ever.
                if now - c.closing_at > CLOSE_FLUSH_GRACE and c.transport is not None:
                    c.transport.abort()
                continue
            if c.partial_since and now - c.partial_since > lim.request_timeout:
                self.refused("request_timeout")
                c.request_timeout()
                continue
            refusal = limiter.overdue(c.ticket) if c.ticket is not None else None
            if refusal is not None:
                self.log_refusal(c.peer_ip, "dropped connection", refusal)
                c.send_refusal(refusal)
                continue
            if c.record_deadline and now > c.record_deadline:
                log.warning(
                    "rtsp: %s did not RECORD within %gs; closing", c.peer_ip, lim.publish_timeout
                )
                c.close()
                continue
            active = c.pipeline.busy or any(s.machine.active for s in c.sessions)
            if (
                not active
                and c.mode is not ConnMode.HTTP_POST
                and now - c.last_rx > lim.idle_timeout
            ):
                log.info("rtsp: closing idle connection from %s", c.peer_ip)
                c.close()
        for s in list(self.sessions.values()):
            udp = any(t.lower != "TCP" for t in s.transports.values())
            if s.role is Role.PLAY and udp and now - s.last_seen > lim.session_timeout:
                log.info("rtsp: session %s timed out", s.id)
                self.close_session(s, "session timeout")
