"""TCP listeners that accept every waiting connection at once, however busy the loop is.

libuv (so uvloop) accepts one connection per turn of the event loop since libuv 1.45. On a
loaded server a turn can take hundreds of milliseconds (hundreds of streams fanning out
media), and a client opening many connections at once (an NVR, a benchmark, a VMS
reconnecting after a restart) then waits seconds per connection in the kernel's accept queue.
:func:`create_server` accepts up to ``batch`` connections per wake-up of the listening socket
(as asyncio's own selector loop does) and hands each to the loop with
``connect_accepted_socket``, so the protocol objects are the same as with
``loop.create_server``. The RTSP, RTMP/RTMPS and HTTP (aiohttp, behind the HTTP gate's
protocol factory) listeners all use it; :func:`serve_socket` takes a socket bound already.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from ssl import SSLContext

log = logging.getLogger(__name__)

#: errors that mean "out of descriptors or memory": pause accepting for a moment
_RESOURCE = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_RETRY_DELAY = 1.0


class BatchServer:
    """Listening sockets served by :meth:`_accept` (``sockets``, ``close``, ``wait_closed``
    like :class:`asyncio.Server`)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.BaseProtocol],
        sockets: list[socket.socket],
        batch: int,
        *,
        ssl: SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        max_pending: int | None = None,
    ) -> None:
        self._loop = loop
        self._factory = factory
        self.sockets = sockets
        self.batch = max(1, batch)
        # at most this many accepted sockets whose protocol is not made yet (each is an fd
        # the caps behind the protocol, e.g. the HTTP gate's, do not see yet); while that
        # many are pending the rest wait in the backlog (None: no cap)
        self.max_pending = max(1, max_pending) if max_pending is not None else None
        self._paused = False
        self._ssl = ssl
        self._ssl_timeout = ssl_handshake_timeout if ssl is not None else None
        self._pending: set[asyncio.Task[object]] = set()
        self._closed = False
        self.accepted = 0
        self.accept_errors = 0
        for sock in sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        n = self.batch
        if self.max_pending is not None:
            n = min(n, self.max_pending - len(self._pending))
            if n <= 0:
                self._pause()
                return
        for _ in range(n):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self.accept_errors += 1
                if exc.errno in _RESOURCE:
                    log.warning(
                        "tcp %s: cannot accept connections: %s; retrying in %g s "
                        "(raise the open-file limit, ulimit -n, or lower [limits] "
                        "max_connections)",
                        _where(sock),
                        exc.strerror or exc,
                        _RETRY_DELAY,
                    )
                    self._loop.remove_reader(sock.fileno())
                    self._loop.call_later(_RETRY_DELAY, self._resume, sock)
                return
            conn.setblocking(False)
            self.accepted += 1
            task = self._loop.create_task(self._serve(conn))
            self._pending.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[object]) -> None:
        self._pending.discard(task)
        if self._paused and len(self._pending) < (self.max_pending or 0):
            self._paused = False
            for sock in self.sockets:
                self._resume(sock)

    def _pause(self) -> None:
        """Stop watching the sockets until a pending connection has its protocol."""
        if not self._paused:
            self._paused = True
            for sock in self.sockets:
                self._loop.remove_reader(sock.fileno())

    def _resume(self, sock: socket.socket) -> None:
        if not self._closed:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    async def _serve(self, conn: socket.socket) -> object:
        try:
            return await self._loop.connect_accepted_socket(
                self._factory, conn, ssl=self._ssl, ssl_handshake_timeout=self._ssl_timeout
            )
        except OSError as exc:  # reset before the transport was made: nothing to serve
            log.debug("tcp: accepted connection lost at once: %s", exc)
            conn.close()
            return None

    def close(self) -> None:
        """Stop listening (connections already accepted stay)."""
        if self._closed:
            return
        self._closed = True
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    async def wait_closed(self) -> None:
        """Wait until the connections accepted before :meth:`close` have their protocols."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def _where(sock: socket.socket) -> str:
    try:
        host, port = sock.getsockname()[:2]
    except OSError:
        return "?"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def serve_socket(
    factory: Callable[[], asyncio.BaseProtocol],
    sock: socket.socket,
    *,
    backlog: int = 1024,
    batch: int = 256,
    max_pending: int | None = None,
    ssl: SSLContext | None = None,
    ssl_handshake_timeout: float | None = None,
) -> BatchServer:
    """Listen on ``sock`` (bound already, e.g. a camera's own address) and serve each
    connection with a protocol from ``factory``, like ``loop.create_server(sock=sock)``;
    ``max_pending``: see :class:`BatchServer`."""
    sock.listen(backlog)
    sock.setblocking(False)
    return BatchServer(
        asyncio.get_running_loop(),
        factory,
        [sock],
        batch,
        ssl=ssl,
        ssl_handshake_timeout=ssl_handshake_timeout,
        max_pending=max_pending,
    )


async def create_server(
    factory: Callable[[], asyncio.BaseProtocol],
    host: str | None,
    port: int,
    *,
    backlog: int = 1024,
    batch: int = 256,
    ssl: SSLContext | None = None,
    ssl_handshake_timeout: float | None = None,
) -> BatchServer:
    """Listen on ``host``:``port`` (every address it resolves to, as ``loop.create_server``
    with ``reuse_address``) and serve each connection with a protocol from ``factory``
    (over TLS with ``ssl``)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return BatchServer(
        loop, factory, sockets, batch, ssl=ssl, ssl_handshake_timeout=ssl_handshake_timeout
    )
