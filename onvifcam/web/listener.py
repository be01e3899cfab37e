"""Hardened aiohttp listeners: connection caps, header deadline, concise paced logging.

aiohttp's own sites hand every accepted socket to its request handler with no cap and no
deadline for a request's headers. Here every socket (the main port and each camera's port)
is served by :class:`GuardedHandler`, a :class:`aiohttp.web.RequestHandler` that

- asks one shared :class:`~onvifcam.web.guard.ConnectionGuard` before serving: over the
  per-IP cap, or over the global cap with no idle connection to replace, the client gets a
  canned ``503`` with ``Retry-After`` and the socket is closed at once;
- closes a connection whose request headers are not complete ``header_timeout`` seconds
  after the connection opened or after the first byte of the request (a client dribbling
  one byte at a time included), with ``408``, and one whose headers grow past
  ``max_header_bytes`` with ``431``;
- answers a malformed request with a short ``400`` and ONE concise log line (peer, reason)
  instead of aiohttp's traceback with the raw request, paced by a :class:`LogPacer`.

Idle keep-alive connections close after ``keepalive_timeout`` (aiohttp's own timer).
"""

from __future__ import annotations

import asyncio
import logging
import re
import resource
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.streams import StreamReader

from onvifcam.accept import BatchServer, serve_socket
from onvifcam.config import HttpConfig
from onvifcam.web.guard import Admission, ConnectionGuard, LogPacer

log = logging.getLogger("onvifcam.web.http")

# Every HTTP response names the product only: aiohttp's default (``Python/3.x aiohttp/3.x``)
# would tell a scanner which versions to look up.
SERVER_HEADER = "onvifcam"
RETRY_AFTER = 5  # seconds, in the 503 sent to a client refused by a cap
CAP_LOG_EVERY = 60.0  # at most one line per cap and per minute while a cap is being hit
# Reserved for listening sockets, RTP/RTCP, state files, executors: used by the fd check.
FD_RESERVE = 64


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _canned(status: int, text: str, extra: str = "") -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    body = text.encode("utf-8", "replace")
    phrase = _phrase(status)
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nServer: {SERVER_HEADER}\r\n{extra}"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_BYTES_ECHO = re.compile(r":?\s*(?:b'|b\"|bytearray\().*$")


def bad_request_reason(exc: BaseException | None, message: str | None) -> str:
    """One short printable line saying what was wrong, without echoing the request."""
    if isinstance(exc, LineTooLong):
        return "request line or a header line is too long"
    text = getattr(exc, "message", None) or message or (str(exc) if exc else "") or "bad request"
    line = str(text).strip().splitlines()[0] if str(text).strip() else "bad request"
    line = _BYTES_ECHO.sub("", line).rstrip(" :.")
    line = "".join(ch if ch.isprintable() else "?" for ch in line)
    return (line[:117] + "...") if len(line) > 120 else (line or "bad request")


def _peer(transport: asyncio.BaseTransport) -> tuple[str, str]:
    """(IP, "ip:port" for logs) of a transport's peer; IPv4-mapped IPv6 unwrapped."""
    peer = transport.get_extra_info("peername")
    if not peer or not isinstance(peer, tuple):
        return "?", "?"
    ip = str(peer[0])
    if ip.startswith("::ffff:"):
        ip = ip[7:]
    shown = f"[{ip}]:{peer[1]}" if ":" in ip else f"{ip}:{peer[1]}"
    return ip, shown


def _local_port(transport: asyncio.BaseTransport) -> int:
    sock = transport.get_extra_info("sockname")
    return int(sock[1]) if sock and isinstance(sock, tuple) else 0


class HttpGate:
    """Shared state of every HTTP listener: the guard, the pacers, counters, the factory."""

    def __init__(self, cfg: HttpConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.guard: ConnectionGuard[GuardedHandler] = ConnectionGuard(
            cfg.max_connections, cfg.max_connections_per_ip
        )
        self.pacer = LogPacer(cfg.log_lines_per_s, cfg.log_burst)
        self._cap_pacers = {
            "total": LogPacer(1.0 / CAP_LOG_EVERY, 1, every=CAP_LOG_EVERY),
            "per_ip": LogPacer(1.0 / CAP_LOG_EVERY, 1, every=CAP_LOG_EVERY),
        }
        self.bad_requests = 0
        self.header_timeouts = 0
        self.body_timeouts = 0
        self._reported = (0, 0)  # (refused, evicted) at the last cap summary
        self._last_cap_summary = clock()

    # ---------------------------------------------------------------- admission
    def admit(self, conn: GuardedHandler, ip: str, transport: asyncio.BaseTransport) -> bool:
        """Admit ``conn`` or refuse it (503 and close); may close an idle connection."""
        verdict: Admission[GuardedHandler] = self.guard.admit(conn, ip)
        if verdict.evict is not None:
            verdict.evict.evicted()
        if verdict.cap:
            self._cap_reached(verdict, ip)
        if verdict.ok:
            return True
        key = "max_connections_per_ip" if verdict.cap == "per_ip" else "max_connections"
        body = f"503 Service Unavailable: {verdict.reason} ([http] {key}); retry later\n"
        try:
            transport.write(_canned(503, body, f"Retry-After: {RETRY_AFTER}\r\n"))
        finally:
            transport.close()
        return False

    def _cap_reached(self, verdict: Admission[GuardedHandler], ip: str) -> None:
        if not self._cap_pacers[verdict.cap].allow(self.clock()):
            return
        g = self.guard
        if verdict.cap == "per_ip":
            log.warning(
                "http: %s has %d connections open, the per-address cap ([http] "
                "max_connections_per_ip = %d); its new connections get 503 until some close",
                ip,
                g.count(ip),
                g.max_per_ip,
            )
        else:
            log.warning(
                "http: %d connections open on the HTTP ports, the cap ([http] "
                "max_connections = %d); a new connection replaces the longest-idle one, or "
                "gets 503 while all are busy",
                g.open,
                g.max_total,
            )

    # ---------------------------------------------------------------- paced client errors
    def client_error(self, fmt: str, *args: object) -> None:
        """Log one line about a misbehaving client, paced (the rest are counted)."""
        if self.pacer.allow(self.clock()):
            log.info(fmt, *args)

    def tick(self, now: float | None = None) -> None:
        """Once a second: summaries of suppressed lines, refused and evicted connections."""
        t = self.clock() if now is None else now
        n = self.pacer.summary(t)
        if n:
            log.info(
                "http: %d more lines about bad requests and timeouts suppressed "
                "([http] log_lines_per_s = %g)",
                n,
                self.cfg.log_lines_per_s,
            )
        if t - self._last_cap_summary >= CAP_LOG_EVERY:
            g = self.guard
            refused, evicted = g.refused - self._reported[0], g.evicted - self._reported[1]
            if refused or evicted:
                log.warning(
                    "http: in the last %.0f s %d connections were refused (503) and %d idle "
                    "ones closed to make room; %d open now ([http] max_connections = %d, "
                    "max_connections_per_ip = %d)",
                    t - self._last_cap_summary,
                    refused,
                    evicted,
                    g.open,
                    g.max_total,
                    g.max_per_ip,
                )
            self._reported = (g.refused, g.evicted)
            self._last_cap_summary = t

    def stats(self) -> dict[str, int]:
        """Counters for tools and metrics."""
        return {
            "open": self.guard.open,
            "refused": self.guard.refused,
            "evicted": self.guard.evicted,
            "bad_requests": self.bad_requests,
            "header_timeouts": self.header_timeouts,
            "body_timeouts": self.body_timeouts,
        }

    # ---------------------------------------------------------------- sockets
    def factory(self, runner: web.AppRunner) -> Callable[[], GuardedHandler]:
        """The asyncio protocol factory serving ``runner``'s application."""
        server = runner.server
        assert server is not None, "runner.setup() first"
        loop = asyncio.get_running_loop()
        c = self.cfg
        kwargs: dict[str, Any] = {
            "loop": loop,
            # Our handler closes idle and slow connections itself; aiohttp's own keep-alive
            # timer (which also runs from connect) is only a backstop behind those deadlines.
            "keepalive_timeout": c.keepalive_timeout + c.header_timeout,
            "lingering_time": c.body_timeout,
            "access_log": None,
            "auto_decompress": False,  # no compressed SOAP bodies: no decompression bombs
        }

        def make() -> GuardedHandler:
            return GuardedHandler(server, self, **kwargs)

        return make

    def check_fd_budget(self, other_connections: int) -> None:
        """Make room for the caps under the open-file limit: raise the soft limit towards
        the hard one if needed (as Go and nginx do), and warn if even that is too low."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = self.cfg.max_connections + other_connections + FD_RESERVE
        if soft == resource.RLIM_INFINITY or need <= soft:
            return
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (OSError, ValueError):
                target = soft
            else:
                log.info(
                    "http: raised the open-file limit from %d to %d for the caps", soft, target
                )
        if target < need:
            log.warning(
                "http: [http] max_connections (%d) + [limits] max_connections (%d) + %d "
                "reserved exceed the open-file limit (%d): raise it (ulimit -n, systemd "
                "LimitNOFILE=) or lower the caps, or new clients may fail when it runs out",
                self.cfg.max_connections,
                other_connections,
                FD_RESERVE,
                target,
            )


class GuardedHandler(web.RequestHandler):
    """aiohttp's request handler behind the caps, with a header deadline and quiet errors."""

    __slots__ = (
        "_admitted",
        "_body",
        "_gate",
        "_head_bytes",
        "_head_timer",
        "_ip",
        "_peer",
        "_reading",
        "_waiting",
    )

    def __init__(self, manager: web.Server, gate: HttpGate, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._admitted = False
        self._ip = "?"
        self._peer = "?"
        self._reading = True  # reading a request's line and headers (not handling one)
        self._waiting = False  # kept alive after a response, no byte of the next request yet
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the last request's body

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._ip, self._peer = _peer(transport)
        if not self._gate.admit(self, self._ip, transport):
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm(self._gate.cfg.header_timeout)  # first request's headers: due after connect

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._gate.guard.release(self)
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        # Bytes count as request headers unless a request is being handled or the body of
        # the last one is still arriving (aiohttp reads and drops an unread body).
        head = self._reading and (self._body is None or self._body.is_eof())
        if head:
            self._body = None
            if self._waiting:  # first byte of the next request: its headers are now due
                self._waiting = False
                self._arm(self._gate.cfg.header_timeout)
            self._head_bytes += len(data)
        # aiohttp queues every parsed request (or parse error) in _messages.
        before = len(self._messages)
        super().data_received(data)
        if len(self._messages) > before:
            self._reading = False
            self._head_bytes = 0
            self._disarm()
            self._gate.guard.busy(self)
        elif head and self._head_bytes > self._gate.cfg.max_header_bytes:
            self._gate.client_error(
                "http: closed connection from %s on port %d: request headers over %d bytes "
                "([http] max_header_bytes); sent 431",
                self._peer,
                self._port(),
                self._gate.cfg.max_header_bytes,
            )
            self._abort(431, "request headers too large")

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if not resp.prepared:  # incl. the error pages made here, outside any application
            resp.headers["Server"] = SERVER_HEADER
        out = await super().finish_response(request, resp, start_time)
        if not self._messages:  # nothing pipelined: wait for the next request's first byte
            self._reading = True
            self._waiting = True
            self._head_bytes = 0
            self._body = request.content
            self._gate.guard.idle(self)
            self._arm(self._gate.cfg.keepalive_timeout)
        return out

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            if self._gate.pacer.allow(self._gate.clock()):
                return super().handle_error(request, status, exc, message)  # a bug: traceback
            reason = HTTPStatus.INTERNAL_SERVER_ERROR.phrase
        else:
            self._gate.bad_requests += 1
            reason = bad_request_reason(exc, message)
            self._gate.client_error(
                "http: bad request from %s on port %d: %d %s",
                self._peer,
                self._port(),
                status,
                reason,
            )
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        resp = web.Response(status=status, text=f"{status} {_phrase(status)}: {reason}\n")
        resp.force_close()
        return resp

    # ---------------------------------------------------------------- helpers
    def evicted(self) -> None:
        """Closed to make room for a new connection under the global cap."""
        self._disarm()
        self.force_close()

    def _port(self) -> int:
        return _local_port(self.transport) if self.transport is not None else 0

    def _arm(self, delay: float) -> None:
        self._disarm()
        self._head_timer = self._loop.call_later(delay, self._deadline)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _deadline(self) -> None:
        self._head_timer = None
        if not (self._admitted and self._reading) or self.transport is None:
            return
        if self._head_bytes == 0:
            self.force_close()  # connected (or kept alive) and sent nothing: just close
            return
        self._gate.header_timeouts += 1
        self._gate.client_error(
            "http: closed connection from %s on port %d: request headers not complete after "
            "%g s ([http] header_timeout); sent 408",
            self._peer,
            self._port(),
            self._gate.cfg.header_timeout,
        )
        self._abort(408, "request headers not complete in time")

    def _abort(self, status: int, text: str) -> None:
        if self.transport is not None:
            self.transport.write(_canned(status, f"{status} {_phrase(status)}: {text}\n"))
        self.force_close()


#: connections an HTTP listener accepts per wake-up, and at most has waiting for their protocol
ACCEPT_BATCH = 16


class Listener:
    """One listening socket served by the gate's protocol; start()/stop() like a site.

    Accepts up to :data:`ACCEPT_BATCH` waiting connections per wake-up (:mod:`onvifcam.accept`;
    uvloop alone accepts one per loop turn), so an NVR adding hundreds of cameras at once is
    not held in the kernel's accept queue while the loop is busy. No more than that many
    accepted sockets wait for their protocol (and so for the caps) at once: the open-file
    bound stays ``[http] max_connections`` plus that."""

    def __init__(
        self, sock: socket.socket, factory: Callable[[], GuardedHandler], backlog: int = 1024
    ) -> None:
        self.sock = sock
        self._factory = factory
        self._backlog = backlog
        self._server: BatchServer | None = None

    async def start(self) -> None:
        """Start accepting connections."""
        self._server = serve_socket(
            self._factory,
            self.sock,
            backlog=self._backlog,
            batch=ACCEPT_BATCH,
            max_pending=ACCEPT_BATCH,
        )

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return self._server.accepted if self._server is not None else 0

    async def stop(self) -> None:
        """Stop accepting; open connections finish (or time out) on their own."""
        if self._server is not None:
            self._server.close()
            self._server = None
