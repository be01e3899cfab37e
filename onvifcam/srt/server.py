"""The asyncio SRT listener: moves datagrams between one UDP socket and the sans-I/O
:class:`~onvifcam.srt.listener.Listener`, runs its timer, and carries out its output.

Admission: the Stream ID gives the path and credentials; the listener checks the passphrase
(the path's ``srt_passphrase``, else ``[srt] passphrase``), then this server asks the gate
(:meth:`~onvifcam.auth.gate.Gate.admit_publish`) and maps a refusal to an SRT reject code:
unauthorized 1401, forbidden 1403, conflict 1409. An admitted caller gets a payload sink
from the sink factory (the MPEG-TS ingest); its payloads go there in order, and its end
(SHUTDOWN, idle timeout, kicked by a replacing publisher, server stop) closes the sink and
releases the path.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
import typing
from dataclasses import dataclass

from onvifcam.auth.gate import Claim, Gate, PlainCredentials, Refusal, RefusalKind
from onvifcam.config import Config
from onvifcam.limits import ConnectionLimiter
from onvifcam.media.stream import StreamBusy, StreamError
from onvifcam.netutil import binding
from onvifcam.srt.crypto import CryptoError, Decryptor
from onvifcam.srt.handshake import RejectCode, Rejection
from onvifcam.srt.ingest import IngestError, PayloadSink, SinkFactory
from onvifcam.srt.listener import Connection, Derive, Listener, ListenerSettings, Output
from onvifcam.srt.receiver import TICK, ReceiverSettings
from onvifcam.web.guard import LogPacer

__all__ = ["REFUSAL_CODES", "SrtPublisher", "SrtServer"]

log = logging.getLogger(__name__)

REFUSAL_CODES: dict[RefusalKind, RejectCode] = {
    RefusalKind.UNAUTHORIZED: RejectCode.X_UNAUTHORIZED,
    RefusalKind.FORBIDDEN: RejectCode.X_FORBIDDEN,
    RefusalKind.CONFLICT: RejectCode.X_CONFLICT,
}


@dataclass(eq=False)
class SrtPublisher:
    """An admitted caller as the gate and the stream see it."""

    server: SrtServer
    conn: Connection
    claim: Claim | None = None
    sink: PayloadSink | None = None

    @property
    def description(self) -> str:
        """``srt://IP:PORT`` of the caller."""
        return self.conn.description

    def kick(self, reason: str) -> None:
        """Close the connection (a new publisher replaced it, or the stream ended)."""
        self.server.close(self.conn, reason)

    def ingest_drops(self) -> dict[str, int]:
        """What this publisher's input lost, by reason (read by the stream's statistics):
        the ingest's own (see ``TsIngest.ingest_drops``) and ``too_late``, the SRT packets
        given up because they were not there by their delivery time (too-late drop)."""
        fn = getattr(self.sink, "ingest_drops", None)
        out: dict[str, int] = dict(fn()) if callable(fn) else {}
        out["too_late"] = self.conn.receiver.stats.dropped
        return out


def settings_from(cfg: Config) -> ListenerSettings:
    """The listener's settings from ``[srt]``."""
    s = cfg.srt
    return ListenerSettings(
        latency_ms=s.latency_ms,
        max_latency_ms=s.max_latency_ms,
        pbkeylen=s.pbkeylen,
        max_connections=s.max_connections,
        handshakes_per_ip_per_s=s.handshakes_per_ip_per_s,
        handshake_burst=s.handshake_burst,
        receiver=ReceiverSettings(
            buffer_packets=s.recv_buffer_packets,
            idle_timeout=s.peer_idle_timeout_ms / 1000,
        ),
    )


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: SrtServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[typing.Any, ...]) -> None:
        srv = self.server
        lst = srv.listener
        lst.datagram(data, (addr[0], addr[1]), time.monotonic())
        o = lst.output
        if o.send or o.opened or o.closed or o.rejected or o.delivered or o.derive:
            srv.carry_out(lst.take())

    def error_received(self, exc: Exception) -> None:
        log.debug("srt: socket error: %s", exc)


class SrtServer:
    """The SRT listener component (start, stop, tick, ready_info, stats)."""

    def __init__(
        self,
        cfg: Config,
        gate: Gate,
        sink_factory: SinkFactory,
        *,
        limiter: ConnectionLimiter | None = None,
        host: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.gate = gate
        self.sink_factory = sink_factory
        self.host = cfg.server.host if host is None else host
        self.port = cfg.srt.port
        self.listener = Listener(
            settings_from(cfg),
            passphrase_for=self.passphrase_for,
            admit=self._admit,
            limiter=limiter,
        )
        self.transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pacer = LogPacer(1.0, 10)
        self.refused: dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind the UDP socket; raises BindError."""
        loop = asyncio.get_running_loop()
        with binding("udp", self.host, self.port, "SRT port", "--srt-port or [srt] port"):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), local_addr=(self.host or "0.0.0.0", self.port)
            )
        self.transport = typing.cast(asyncio.DatagramTransport, transport)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            self.port = sock.getsockname()[1]
            want = self.cfg.srt.socket_buffer_bytes
            force = getattr(socket, "SO_RCVBUFFORCE", None)  # Linux, CAP_NET_ADMIN
            for opt in (force, socket.SO_RCVBUF):
                if opt is None:
                    continue
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, want)
                    break
                except OSError:
                    continue
            try:
                got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
            except OSError:
                got = 0
            if got < want:
                log.info(
                    "srt: UDP receive buffer is %d bytes, not the %d of [srt] "
                    "socket_buffer_bytes (raise net.core.rmem_max to allow it)",
                    got,
                    want,
                )

    async def stop(self) -> None:
        """SHUTDOWN to every caller, close the socket."""
        self.listener.close_all("server shutting down", time.monotonic())
        self.carry_out(self.listener.take())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def tick(self, now: float) -> None:
        """Once a second: the summary of suppressed log lines."""
        n = self._pacer.summary(now)
        if n:
            log.warning("srt: %d more refused callers not logged (see stats)", n)

    def ready_info(self) -> dict[str, str]:
        """``srt_port`` for the ready line."""
        return {"srt_port": str(self.port)}

    def stats(self) -> dict[str, object]:
        """Connections, refusals by code and the listener's counters."""
        st = self.listener.stats
        return {
            "connections": len(self.listener.connections),
            "refused": dict(self.refused),
            "accepted": st.accepted,
            "malformed": st.malformed,
            "bad_cookie": st.bad_cookie,
            "rate_limited": st.rate_limited,
            "unknown_socket": st.unknown_socket,
            "wrong_source": st.wrong_source,
        }

    # ------------------------------------------------------------------ admission
    def passphrase_for(self, path: str) -> str:
        """The passphrase callers publishing ``path`` must use ("" = none)."""
        return self.cfg.path_policy(path).srt_passphrase or self.cfg.srt.passphrase

    def _admit(self, conn: Connection) -> None:
        s = conn.request.stream
        pub = SrtPublisher(self, conn)
        try:
            claim = self.gate.admit_publish(
                s.path, PlainCredentials(s.user, s.password, s.key), pub
            )
        except Refusal as r:
            raise Rejection(REFUSAL_CODES[r.kind], r.reason) from None
        try:
            pub.sink = self.sink_factory(s.path, pub)
        except StreamBusy as exc:
            claim.release()
            raise Rejection(RejectCode.X_CONFLICT, str(exc)) from None
        except StreamError as exc:
            claim.release()
            raise Rejection(RejectCode.RESOURCE, str(exc)) from None
        pub.claim = claim
        conn.app = pub

    def close(self, conn: Connection, reason: str) -> None:
        """Close ``conn`` from our side."""
        self.listener.close(conn, reason, time.monotonic())
        self.carry_out(self.listener.take())

    # ------------------------------------------------------------------ output
    def carry_out(self, out: Output) -> None:
        """Send, deliver, log what the listener decided."""
        for job in out.derive:  # PBKDF2 takes milliseconds: never on the event loop
            fut = asyncio.get_running_loop().run_in_executor(None, job.run)
            fut.add_done_callback(functools.partial(self._derived, job))
        tr = self.transport
        if tr is not None:
            for data, addr in out.send:
                tr.sendto(data, addr)
        for conn, payloads in out.delivered:
            pub = conn.app
            if pub is not None and pub.sink is not None:
                try:
                    pub.sink.feed(payloads)
                except IngestError as exc:
                    log.warning("srt: %s on '%s': %s", conn.description, conn.path, exc)
                    self.listener.close(conn, str(exc), time.monotonic())
                except Exception:
                    log.exception("srt: %s on '%s': ingest failed", conn.description, conn.path)
                    self.listener.close(conn, "ingest failed", time.monotonic())
        for conn in out.opened:
            req = conn.request
            enc = f", AES-{req.km.key_len * 8}" if req.km is not None else ""
            log.info(
                "srt: %s publishes '%s' (latency %d ms%s)",
                conn.description,
                conn.path,
                req.latency_ms,
                enc,
            )
            self._arm()
        for conn, reason in out.closed:
            self._closed(conn, reason)
        for rej in out.rejected:
            name = rej.code.name.removeprefix("X_")
            self.refused[name] = self.refused.get(name, 0) + 1
            if self._pacer.allow(time.monotonic()):
                log.warning(
                    "srt: refused %s:%d stream id %r: %s (reject code %d %s)",
                    rej.addr[0],
                    rej.addr[1],
                    rej.streamid[:100],
                    rej.reason,
                    int(rej.code),
                    name,
                )
        left = self.listener.output
        if left.send or left.closed:  # an ingest failure closed a connection just now
            self.carry_out(self.listener.take())

    def _derived(self, job: Derive, fut: asyncio.Future[Decryptor | CryptoError]) -> None:
        if fut.cancelled() or self.transport is None:
            return
        self.listener.derived(job, fut.result(), time.monotonic())
        self.carry_out(self.listener.take())

    def _closed(self, conn: Connection, reason: str) -> None:
        pub = conn.app
        extra = ""
        if isinstance(pub, SrtPublisher):
            if pub.sink is not None:
                try:
                    pub.sink.close(reason)
                except Exception:
                    log.exception("srt: %s: closing the ingest failed", conn.description)
                summary = getattr(pub.sink, "summary", None)
                if callable(summary):
                    extra = f"; {summary()}"
            if pub.claim is not None:
                pub.claim.release()
        st = conn.receiver.stats
        log.info(
            "srt: %s on '%s' closed: %s (%d packets, %d lost, %d recovered, %d dropped, "
            "rtt %.1f ms%s)",
            conn.description,
            conn.path,
            reason,
            st.packets,
            st.lost,
            st.recovered,
            st.dropped,
            conn.receiver.rtt / 1000,
            extra,
        )

    # ------------------------------------------------------------------ timer
    def _arm(self) -> None:
        if self._timer is None and self.listener.connections:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(TICK, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.listener.tick(time.monotonic())
            self.carry_out(self.listener.take())
        except Exception:  # a bug must not stop the timers of every connection
            log.exception("srt: timer failed")
        finally:
            self._arm()
