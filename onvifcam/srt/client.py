"""SRT as a caller over asyncio: sending (forwarding) and receiving (pulling).

``srt://HOST:PORT?streamid=...&passphrase=...&latency=MS&pbkeylen=16`` names the peer (a
listener: srt-live-transmit, ffmpeg, MediaMTX, another onvifcam's ``[srt]`` port).

* :class:`SrtSender` connects with the sans-I/O :class:`~onvifcam.srt.caller.Caller`,
  sends payloads with the timestamps it is given (the receiver's TSBPD plays them out at
  that pace), answers every full ACK with an ACKACK, retransmits what a NAK lists, sends a
  KEEPALIVE after 1 s of silence, keeps at most ``max_buffer_bytes`` unacknowledged and
  closes on SHUTDOWN or when the peer has been silent for ``idle_timeout``.
* :class:`SrtReceiverConnection` connects with :class:`~onvifcam.srt.puller.Puller`
  (the caller's handshake, then :class:`~onvifcam.srt.receiver.Receiver`) and hands the
  payloads it delivers, in order, to a callback.

Only the datagrams move here; every decision is in the sans-I/O cores.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from onvifcam.aio import within
from onvifcam.redact import redact
from onvifcam.srt import PASSPHRASE_MAX, PASSPHRASE_MIN
from onvifcam.srt.caller import Caller
from onvifcam.srt.packet import PacketError
from onvifcam.srt.puller import Puller, reject_text
from onvifcam.srt.receiver import TICK, ReceiverSettings

__all__ = ["SrtError", "SrtReceiverConnection", "SrtSender", "SrtTarget", "parse_srt_url"]

_HANDSHAKE_REPEAT = 0.25  # seconds between handshake retransmissions
_KEEPALIVE = 1.0


class SrtError(Exception):
    """An SRT connection failed (refused, timed out, lost)."""


@dataclass(frozen=True)
class SrtTarget:
    """What an ``srt://`` URL says."""

    host: str
    port: int
    streamid: str = ""
    passphrase: str = ""
    latency_ms: int = 120
    pbkeylen: int = 16


def parse_srt_url(url: str) -> SrtTarget:
    """``srt://HOST:PORT?streamid=..&passphrase=..&latency=MS&pbkeylen=N``; raises
    ValueError saying what is wrong. Only caller mode is possible (``mode=caller``)."""
    shown = redact(url)  # messages reach logs and API answers: no secrets in them
    parts = urlsplit(url)
    if parts.scheme.lower() != "srt":
        raise ValueError(f"{shown!r} is not an srt:// URL")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{shown!r} has an invalid port") from None
    if not parts.hostname or not port:
        raise ValueError(f"{shown!r} needs a host and a port: srt://HOST:PORT?streamid=...")
    q = dict(parse_qsl(parts.query, keep_blank_values=True))
    known = {"streamid", "passphrase", "latency", "pbkeylen", "mode"}
    unknown = sorted(set(q) - known)
    if unknown:
        raise ValueError(
            f"{shown!r}: unknown SRT option(s) {', '.join(unknown)}; "
            "streamid, passphrase, latency (ms), pbkeylen and mode=caller are understood"
        )
    if q.get("mode", "caller") != "caller":
        raise ValueError(f"{shown!r}: only mode=caller is possible here (the peer listens)")
    passphrase = q.get("passphrase", "")
    if passphrase and not PASSPHRASE_MIN <= len(passphrase) <= PASSPHRASE_MAX:
        raise ValueError(
            f"{shown!r}: an SRT passphrase has {PASSPHRASE_MIN}..{PASSPHRASE_MAX} characters"
        )
    try:
        latency = int(q.get("latency", "120"))
        pbkeylen = int(q.get("pbkeylen", "16"))
    except ValueError:
        raise ValueError(f"{shown!r}: latency (ms) and pbkeylen are whole numbers") from None
    if not 20 <= latency <= 65535:
        raise ValueError(f"{shown!r}: latency must be 20..65535 ms")
    if pbkeylen not in (16, 24, 32):
        raise ValueError(f"{shown!r}: pbkeylen must be 16, 24 or 32")
    return SrtTarget(parts.hostname, port, q.get("streamid", ""), passphrase, latency, pbkeylen)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes], None], on_error: Callable[[str], None]):
        self.on_datagram = on_datagram
        self.on_error = on_error

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        why = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
        self.on_error(why)


class _Base:
    """The UDP socket, the handshake repetition and the closed/error state."""

    def __init__(self, target: SrtTarget, *, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.transport: asyncio.DatagramTransport | None = None
        self.closed = asyncio.Event()
        self.error = ""
        self._connected = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self.last_tx = 0.0

    @property
    def where(self) -> str:
        return f"{self.target.host}:{self.target.port}"

    def fail(self, reason: str) -> None:
        if not self.closed.is_set():
            self.error = reason
            self.closed.set()
            self._connected.set()

    def _sendto(self, data: bytes, now: float) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data)
            self.last_tx = now

    def _on_error(self, why: str) -> None:
        self.fail(f"cannot reach {self.where}: {why}")

    async def _open(self, first: Callable[[float], bytes], connected: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self._datagram, self._on_error),
            remote_addr=(self.target.host, self.target.port),
        )
        deadline = time.monotonic() + self.timeout
        while not connected() and not self.closed.is_set():
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError
            self._sendto(first(now), now)
            try:
                await within(self._connected.wait(), _HANDSHAKE_REPEAT)
            except TimeoutError:
                pass
        if self.closed.is_set():
            raise SrtError(self.error)
        self._timer = asyncio.create_task(self._tick_loop())

    def _datagram(self, data: bytes) -> None:
        raise NotImplementedError

    def _tick(self, now: float) -> None:
        raise NotImplementedError

    async def _tick_loop(self) -> None:
        while not self.closed.is_set():
            await asyncio.sleep(TICK)
            self._tick(time.monotonic())

    def _close_socket(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()
        self.fail("closed")


class SrtSender(_Base):
    """A connected SRT sender; also what the forwarder's backpressure looks at
    (:meth:`get_write_buffer_size`: unacknowledged bytes)."""

    def __init__(
        self, target: SrtTarget, *, timeout: float = 10.0, max_buffer_bytes: int = 4 << 20
    ) -> None:
        super().__init__(target, timeout=timeout)
        self.max_buffer_bytes = max_buffer_bytes
        self.start = time.monotonic()
        self.caller = Caller(
            streamid=target.streamid,
            latency_ms=target.latency_ms,
            passphrase=target.passphrase,
            key_len=target.pbkeylen,
            socket_id=secrets.randbelow(0x3FFFFFFF) + 1,
            isn=secrets.randbelow(0x3FFFFFFF),
            start=self.start,
        )
        self.packets = 0
        self.bytes = 0

    async def connect(self) -> None:
        """Handshake; raises SrtError (refused), TimeoutError or OSError."""
        c = self.caller
        c.last_rx = time.monotonic()

        def first(now: float) -> bytes:
            return c.induction(now) if c.state == "new" else c.conclusion(now)

        await self._open(first, lambda: c.state == "connected")

    def _datagram(self, data: bytes) -> None:
        c = self.caller
        now = time.monotonic()
        try:
            replies = c.receive(data, now)
        except (PacketError, ValueError):
            return
        for r in replies:
            self._sendto(r, now)
        if c.state == "rejected":
            self.fail(reject_text(c.reject_code))
        elif c.state == "closed":
            self.fail("the peer closed the connection (SHUTDOWN)")
        elif c.state == "connected":
            self._connected.set()
        elif c.state == "induced" and replies:
            pass  # the conclusion went out; the loop in _open repeats it if lost

    def _tick(self, now: float) -> None:
        c = self.caller
        idle = now - c.last_rx
        if idle >= self.timeout:
            self.fail(f"nothing from {self.where} for {self.timeout:g} s (connect_timeout)")
            return
        if now - self.last_tx >= _KEEPALIVE:
            self._sendto(c.keepalive(now), now)

    def timestamp(self, now: float) -> int:
        """Our SRT clock now (microseconds)."""
        return self.caller.ts(now)

    def send(self, payload: bytes, timestamp: int) -> None:
        """One payload with its SRT timestamp (microseconds on our clock)."""
        if self.closed.is_set():
            return
        now = time.monotonic()
        self._sendto(self.caller.data(payload, now, timestamp=timestamp & 0xFFFFFFFF), now)
        self.packets += 1
        self.bytes += len(payload)
        if self.caller.sent_bytes > self.max_buffer_bytes:
            self.caller.trim(self.max_buffer_bytes)

    # the slice of asyncio.WriteTransport the forwarder's backpressure uses
    def get_write_buffer_size(self) -> int:
        """Bytes sent and not yet acknowledged."""
        return self.caller.sent_bytes

    def is_closing(self) -> bool:
        """True once the connection is over."""
        return self.closed.is_set()

    def close(self) -> None:
        """SHUTDOWN and close the socket."""
        if self.caller.state == "connected":
            self._sendto(self.caller.shutdown(time.monotonic()), time.monotonic())
        self._close_socket()

    def stats(self) -> dict[str, int]:
        """Counters."""
        c = self.caller
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "retransmitted": c.retransmitted,
            "naks": len(c.naks),
            "acks": c.acks,
            "unacknowledged_bytes": c.sent_bytes,
            "trimmed": c.trimmed,
        }


class SrtReceiverConnection(_Base):
    """A connected SRT receiver (caller side); payloads go to ``on_payloads``."""

    def __init__(
        self,
        target: SrtTarget,
        on_payloads: Callable[[list[bytes]], None],
        *,
        timeout: float = 10.0,
        settings: ReceiverSettings | None = None,
    ) -> None:
        super().__init__(target, timeout=timeout)
        self.on_payloads = on_payloads
        self.puller = Puller(
            streamid=target.streamid,
            latency_ms=target.latency_ms,
            passphrase=target.passphrase,
            key_len=target.pbkeylen,
            socket_id=secrets.randbelow(0x3FFFFFFF) + 1,
            isn=secrets.randbelow(0x3FFFFFFF),
            start=time.monotonic(),
            settings=settings or ReceiverSettings(idle_timeout=timeout),
        )

    async def connect(self) -> None:
        """Handshake; raises SrtError (refused), TimeoutError or OSError."""
        p = self.puller
        await self._open(p.handshake, lambda: p.receiver is not None)

    def _datagram(self, data: bytes) -> None:
        p = self.puller
        now = time.monotonic()
        p.datagram(data, now)
        self._carry_out(now)

    def _tick(self, now: float) -> None:
        self.puller.tick(now)
        self._carry_out(now)

    def _carry_out(self, now: float) -> None:
        p = self.puller
        out, delivered = p.take()
        for d in out:
            self._sendto(d, now)
        if p.receiver is not None:
            self._connected.set()
        if delivered:
            try:
                self.on_payloads(delivered)
            except Exception as exc:  # the sink refused the media: end the connection
                p.close(str(exc), now)
                for d in p.take()[0]:
                    self._sendto(d, now)
                self.fail(str(exc))
                return
        if p.closed is not None:
            self.fail(p.closed)

    def close(self) -> None:
        """SHUTDOWN and close the socket."""
        now = time.monotonic()
        self.puller.close("closed", now)
        for d in self.puller.take()[0]:
            self._sendto(d, now)
        self._close_socket()

    def stats(self) -> dict[str, int]:
        """The receiver's counters."""
        rx = self.puller.receiver
        return dict(vars(rx.stats)) if rx is not None else {}
