"""Everything one SRT listening socket does, sans-I/O: datagrams and a clock in, actions out.

:class:`Listener` answers handshakes (stateless until a conclusion is accepted, thanks to
SYN cookies), admits callers (Stream ID, passphrase, then the application's ``admit``
callback, which asks the gate), routes packets to each connection's :class:`Receiver` by
destination socket id, and collects what to do in an :class:`Output`: datagrams to send,
payloads delivered per connection, connections opened, closed and callers rejected.

The asyncio server (:mod:`onvifcam.srt.server`) only moves datagrams, calls :meth:`tick`
every :data:`~onvifcam.srt.receiver.TICK` while connections exist, and carries out the
output. Bounds per unauthenticated source: handshakes per IP (token bucket, the table of
buckets bounded), no state before a valid cookie, a connection cap.

Deriving the key of an encrypted caller (PBKDF2, a few milliseconds of CPU) is not done
here: the conclusion is parked and a :class:`Derive` job is put in the output; whoever
drives the listener runs it (the asyncio server in a worker thread, tests inline) and hands
the result to :meth:`Listener.derived`. At most ``max_deriving`` conclusions wait at once.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from onvifcam.limits import ConnectionLimiter, Refusal, Ticket
from onvifcam.srt.crypto import CryptoError, Decryptor, KeyMaterial
from onvifcam.srt.handshake import (
    ConclusionRequest,
    Mode,
    RejectCode,
    Rejection,
    Responder,
)
from onvifcam.srt.packet import (
    HEADER_SIZE,
    MAX_DATAGRAM,
    ControlPacket,
    ControlType,
    ExtType,
    Handshake,
    HsType,
    PacketError,
    decode_words,
    parse,
)
from onvifcam.srt.receiver import Receiver, ReceiverSettings

__all__ = ["Connection", "Derive", "Listener", "ListenerSettings", "Output", "Rejected"]

Addr = tuple[str, int]
_HEADER = struct.Struct("!IIII")
MAX_BUCKETS = 4096


@dataclass(frozen=True)
class ListenerSettings:
    """What the listener negotiates and the bounds it keeps."""

    latency_ms: int = 120
    max_latency_ms: int = 10_000
    pbkeylen: int = 0  # key length advertised to callers that do not choose one
    max_connections: int = 64
    handshakes_per_ip_per_s: float = 5.0
    handshake_burst: int = 10
    max_deriving: int = 16  # encrypted conclusions waiting for their key derivation
    receiver: ReceiverSettings = field(default_factory=ReceiverSettings)


@dataclass(eq=False)
class Connection:
    """An accepted caller: its request, receiver and the conclusion we answered."""

    id: int
    addr: Addr
    request: ConclusionRequest
    receiver: Receiver
    reply: bytes = b""
    app: Any = None  # what the application attaches (its publisher)
    ticket: Ticket | None = None  # its slot in the connection limiter shared with RTSP/RTMP

    @property
    def path(self) -> str:
        """The stream path the caller publishes."""
        return self.request.stream.path

    @property
    def description(self) -> str:
        """``srt://IP:PORT`` of the caller."""
        host = f"[{self.addr[0]}]" if ":" in self.addr[0] else self.addr[0]
        return f"srt://{host}:{self.addr[1]}"


@dataclass(frozen=True)
class Rejected:
    """A caller we refused, for one log line."""

    addr: Addr
    streamid: str
    code: RejectCode
    reason: str


@dataclass(frozen=True)
class Derive:
    """A key derivation to run off the event loop, then pass to :meth:`Listener.derived`."""

    key: tuple[Addr, int]  # (caller address, caller socket id)
    passphrase: str
    km: KeyMaterial

    def run(self) -> Decryptor | CryptoError:
        """Derive and unwrap (blocking: PBKDF2); the error when the passphrase is wrong."""
        try:
            return Decryptor(self.passphrase, self.km)
        except CryptoError as exc:
            return exc


class _NeedKeys(Exception):
    """Internal: the conclusion is encrypted and its keys are not derived yet."""

    def __init__(self, passphrase: str) -> None:
        super().__init__(passphrase)
        self.passphrase = passphrase


@dataclass
class Output:
    """What the listener wants done after a call."""

    send: list[tuple[bytes, Addr]] = field(default_factory=list)
    delivered: list[tuple[Connection, list[bytes]]] = field(default_factory=list)
    opened: list[Connection] = field(default_factory=list)
    closed: list[tuple[Connection, str]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    derive: list[Derive] = field(default_factory=list)


@dataclass
class ListenerStats:
    """Datagrams the listener ignored, by why, and handshake outcomes."""

    malformed: int = 0
    bad_cookie: int = 0
    rate_limited: int = 0
    unknown_socket: int = 0
    wrong_source: int = 0
    inductions: int = 0
    accepted: int = 0
    rejected: int = 0
    derived: int = 0


class _Buckets:
    """Token buckets per IP; the table forgets full buckets and never grows past a cap."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.table: dict[str, tuple[float, float]] = {}

    def allow(self, ip: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        tokens, last = self.table.get(ip, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self.table[ip] = (tokens, now)
            return False
        self.table[ip] = (tokens - 1.0, now)
        if len(self.table) > MAX_BUCKETS:
            self._forget(now)
        return True

    def _forget(self, now: float) -> None:
        full = [
            ip for ip, (t, last) in self.table.items() if t + (now - last) * self.rate >= self.burst
        ]
        for ip in full:
            del self.table[ip]
        while len(self.table) > MAX_BUCKETS:  # all busy: drop the oldest entries
            del self.table[next(iter(self.table))]


class Listener:
    """The sans-I/O SRT listener; see the module docstring."""

    def __init__(
        self,
        settings: ListenerSettings,
        *,
        passphrase_for: Callable[[str], str],
        admit: Callable[[Connection], None],
        limiter: ConnectionLimiter | None = None,
        secret: bytes | None = None,
        rand: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        self.passphrase_for = passphrase_for
        self.admit = admit
        self.limiter = limiter
        self._rand = rand or (lambda: secrets.randbits(31))
        self.responder = Responder(
            secret if secret is not None else secrets.token_bytes(32),
            listener_id=self._new_id(),
            latency_ms=settings.latency_ms,
            max_latency_ms=settings.max_latency_ms,
            pbkeylen=settings.pbkeylen,
            flow_window=settings.receiver.buffer_packets,
        )
        self.connections: dict[int, Connection] = {}
        self.by_peer: dict[tuple[Addr, int], Connection] = {}
        self.deriving: dict[tuple[Addr, int], tuple[ConclusionRequest, Handshake]] = {}
        self.buckets = _Buckets(settings.handshakes_per_ip_per_s, settings.handshake_burst)
        self.stats = ListenerStats()
        self.output = Output()

    def _new_id(self) -> int:
        for _ in range(64):
            sid = self._rand() & 0x3FFFFFFF
            if sid and sid not in getattr(self, "connections", {}):
                return sid
        raise RuntimeError("no free SRT socket id")  # pragma: no cover - 2^30 ids

    def take(self) -> Output:
        """Everything to do since the last call."""
        out, self.output = self.output, Output()
        return out

    # ------------------------------------------------------------------ input
    def datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """One UDP datagram from ``addr``."""
        n = len(data)
        if HEADER_SIZE < n <= MAX_DATAGRAM and not data[0] & 0x80:  # data: the hot path
            seq, msg, ts, dst = _HEADER.unpack_from(data)
            conn = self.connections.get(dst)
            if conn is None:
                self.stats.unknown_socket += 1
                return
            if conn.addr != addr:
                self.stats.wrong_source += 1
                return
            rx = conn.receiver
            rx.on_data(seq, msg, ts, data[HEADER_SIZE:], now)
            if rx.out:
                self._flush(conn)
            return
        try:
            pkt = parse(data)
        except PacketError:
            self.stats.malformed += 1
            return
        if pkt.dst == 0:
            if isinstance(pkt, ControlPacket) and pkt.type == ControlType.HANDSHAKE:
                self._handshake(pkt, addr, now)
            else:
                self.stats.unknown_socket += 1
            return
        conn = self.connections.get(pkt.dst)
        if conn is None:
            self.stats.unknown_socket += 1
            return
        if conn.addr != addr:
            self.stats.wrong_source += 1
            return
        if isinstance(pkt, ControlPacket) and pkt.type == ControlType.HANDSHAKE:
            self.output.send.append((conn.reply, addr))  # a repeated conclusion
            conn.receiver.last_rx = now
            return
        rx = conn.receiver
        rx.on_packet(pkt, now)
        if rx.out or rx.delivered:
            self._flush(conn)
        if rx.closed is not None:
            self._drop(conn, rx.closed)

    def _handshake(self, pkt: ControlPacket, addr: Addr, now: float) -> None:
        try:
            hs = Handshake.parse(pkt.cif)
        except PacketError:
            self.stats.malformed += 1
            return
        if (addr, hs.socket_id) in self.deriving:
            return  # a repeated conclusion while its key is being derived
        conn = self.by_peer.get((addr, hs.socket_id))
        if conn is not None:
            if hs.hs_type == HsType.CONCLUSION:
                self.output.send.append((conn.reply, addr))  # our answer was lost
                conn.receiver.last_rx = now
            return
        if not self.buckets.allow(addr[0], now):
            self.stats.rate_limited += 1
            return
        if hs.hs_type == HsType.INDUCTION:
            reply = self.responder.induction(hs, addr[0], addr[1], now)
            if reply is not None:
                self.stats.inductions += 1
                self.output.send.append((reply, addr))
            return
        if hs.hs_type != HsType.CONCLUSION:
            self.stats.malformed += 1  # rendezvous or a rejection: not for a listener
            return
        if not self.responder.cookie_ok(hs.cookie, addr[0], addr[1], now):
            self.stats.bad_cookie += 1
            return
        req: ConclusionRequest | None = None
        try:
            req = self.responder.conclusion(hs, pkt.timestamp, addr[0], addr[1])
            self._finish(hs, req, addr, now, None)
        except _NeedKeys as need:
            assert req is not None and req.km is not None
            self._defer(hs, req, addr, need.passphrase)
        except Rejection as rej:
            self._reject(hs, rej, addr)

    def _reject(self, hs: Handshake, rej: Rejection, addr: Addr) -> None:
        self.stats.rejected += 1
        self.output.send.append((self.responder.reject(hs, rej, addr[0]), addr))
        self.output.rejected.append(Rejected(addr, _sid_of(hs), rej.code, rej.reason))

    def _finish(
        self,
        hs: Handshake,
        req: ConclusionRequest,
        addr: Addr,
        now: float,
        keys: Decryptor | CryptoError | None,
    ) -> None:
        conn = self._open(req, addr, now, keys)
        self.stats.accepted += 1
        self.output.send.append((conn.reply, addr))
        self.output.opened.append(conn)

    def _defer(self, hs: Handshake, req: ConclusionRequest, addr: Addr, passphrase: str) -> None:
        if len(self.deriving) >= self.settings.max_deriving:
            self._reject(
                hs,
                Rejection(
                    RejectCode.RESOURCE,
                    f"{len(self.deriving)} encrypted handshakes are already being checked; "
                    "try again in a moment",
                ),
                addr,
            )
            return
        key = (addr, hs.socket_id)
        self.deriving[key] = (req, hs)
        assert req.km is not None
        self.output.derive.append(Derive(key, passphrase, req.km))

    def derived(self, job: Derive, keys: Decryptor | CryptoError, now: float) -> None:
        """The result of ``job.run()``: finish admitting (or reject) the parked caller."""
        parked = self.deriving.pop(job.key, None)
        if parked is None:
            return
        self.stats.derived += 1
        req, hs = parked
        try:
            self._finish(hs, req, job.key[0], now, keys)
        except Rejection as rej:
            self._reject(hs, rej, job.key[0])

    def _open(
        self,
        req: ConclusionRequest,
        addr: Addr,
        now: float,
        keys: Decryptor | CryptoError | None = None,
    ) -> Connection:
        """Admit a conclusion or raise :class:`Rejection` (:class:`_NeedKeys` when it is
        encrypted and ``keys``, the result of its :class:`Derive`, is not there yet)."""
        path = req.stream.path
        if req.stream.mode is Mode.READ:
            raise Rejection(
                RejectCode.X_BAD_MODE,
                f"reading '{path}' over SRT is not supported; read it over RTSP",
            )
        if len(self.connections) >= self.settings.max_connections:
            raise Rejection(
                RejectCode.RESOURCE,
                f"too many SRT connections (max {self.settings.max_connections}, "
                "[srt] max_connections)",
            )
        passphrase = self.passphrase_for(path)
        decryptor: Decryptor | None = None
        if req.km is None:
            if passphrase:
                raise Rejection(
                    RejectCode.UNSECURE,
                    f"'{path}' needs a passphrase and the caller sent none (passphrase=...)",
                )
        else:
            if not passphrase:
                raise Rejection(
                    RejectCode.UNSECURE,
                    f"the caller encrypts but '{path}' has no passphrase "
                    "(set [srt] passphrase or the path's srt_passphrase, or remove the "
                    "caller's passphrase)",
                )
            if keys is None:
                raise _NeedKeys(passphrase)
            if isinstance(keys, CryptoError):
                raise Rejection(RejectCode.BADSECRET, f"'{path}': {keys}")
            decryptor = keys
        sid = self._new_id()
        rx = Receiver(
            socket_id=sid,
            peer_id=req.socket_id,
            isn=req.isn,
            latency=req.latency_ms / 1000,
            now=now,
            peer_timestamp=req.timestamp,
            decryptor=decryptor,
            settings=self.settings.receiver,
        )
        conn = Connection(sid, addr, req, rx)
        conn.reply = self.responder.accept(req, sid, self.settings.receiver.buffer_packets)
        if self.limiter is not None:
            ticket = self.limiter.admit(addr[0])
            if isinstance(ticket, Refusal):
                raise Rejection(RejectCode.RESOURCE, str(ticket))
            conn.ticket = ticket
        try:
            self.admit(conn)
        except BaseException:
            if self.limiter is not None and conn.ticket is not None:
                self.limiter.release(conn.ticket)
            raise
        if self.limiter is not None and conn.ticket is not None:
            self.limiter.authenticate(conn.ticket)  # the gate admitted its publish
        self.connections[sid] = conn
        self.by_peer[(addr, req.socket_id)] = conn
        return conn

    # ------------------------------------------------------------------ timers
    def tick(self, now: float) -> None:
        """Run every connection's timers (call at least every 10 ms while any exist)."""
        for conn in list(self.connections.values()):
            rx = conn.receiver
            rx.tick(now)
            if rx.out or rx.delivered:
                self._flush(conn)
            if rx.closed is not None:
                self._drop(conn, rx.closed)

    def close(self, conn: Connection, reason: str, now: float) -> None:
        """Close a connection from our side (SHUTDOWN to the caller)."""
        if conn.id not in self.connections:
            return
        conn.receiver.close(reason, now)
        self._flush(conn)
        self._drop(conn, reason)

    def close_all(self, reason: str, now: float) -> None:
        """Close every connection (server shutdown)."""
        for conn in list(self.connections.values()):
            self.close(conn, reason, now)

    def _flush(self, conn: Connection) -> None:
        out, delivered = conn.receiver.take()
        if out:
            send = self.output.send
            for d in out:
                send.append((d, conn.addr))
        if delivered:
            self.output.delivered.append((conn, delivered))

    def _drop(self, conn: Connection, reason: str) -> None:
        if self.connections.pop(conn.id, None) is None:
            return
        self.by_peer.pop((conn.addr, conn.request.socket_id), None)
        if self.limiter is not None and conn.ticket is not None:
            self.limiter.release(conn.ticket)
        self.output.closed.append((conn, reason))


def _sid_of(hs: Handshake) -> str:
    raw = hs.ext(ExtType.SID)
    if raw is None:
        return ""
    try:
        return decode_words(raw[:512])
    except PacketError:
        return "<not UTF-8>"
