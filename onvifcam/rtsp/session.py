"""RTSP sessions: the publish side (RECORD) and the read side (PLAY) with their transports.

A session's state lives in its :class:`~onvifcam.rtsp.state.SessionMachine`; this module
knows the server and the connection only through the small protocols below (no import
of :mod:`onvifcam.rtsp.server`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Protocol

from onvifcam.config import LimitsConfig
from onvifcam.media.sdp import SessionDescription
from onvifcam.media.stream import RTCP, RTP, Batch, Stream
from onvifcam.rtsp.state import Role, SessionMachine, SessionState

log = logging.getLogger(__name__)


class Connection(Protocol):
    """What a session needs of its TCP connection."""

    out_transport: asyncio.Transport | None

    def close(self) -> None:
        """Close the connection."""


class Host(Protocol):
    """What a session needs of the server that owns it."""

    limits: LimitsConfig
    udp_rtp_transport: asyncio.DatagramTransport | None
    udp_rtcp_transport: asyncio.DatagramTransport | None
    reader_drops: int
    bytes_out: int

    def close_session(self, s: RtspSession, reason: str, unpublish: bool = True) -> None:
        """End a session."""

    def multicast_join(self, s: RtspSession) -> None:
        """Add a playing session to its stream's multicast group."""

    def multicast_leave(self, s: RtspSession) -> None:
        """Remove a session from its multicast group."""


@dataclass
class TrackTransport:
    """How one track of a session moves: interleaved channels or UDP destinations."""

    track: int
    lower: str  # "TCP", "UDP" or "MULTICAST"
    interleaved: tuple[int, int] | None = None
    client_addr: tuple[str, int, int] | None = None  # ip, rtp port, rtcp port
    control: str = ""


@dataclass(eq=False)
class RtspSession:
    """State of one RTSP session (identified by the Session header)."""

    server: Host
    conn: Connection | None
    role: Role
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    path: str = ""
    stream: Stream | None = None
    announced: SessionDescription | None = None
    transports: dict[int, TrackTransport] = field(default_factory=dict)
    machine: SessionMachine = field(init=False)
    last_seen: float = field(default_factory=time.monotonic)
    reader: TcpReader | UdpReader | None = None
    multicast: bool = False
    base_url: str = ""
    remote_ip: str = ""

    def __post_init__(self) -> None:
        self.machine = SessionMachine(self.role)

    @property
    def state(self) -> SessionState:
        """The session's state (changed only through ``machine``)."""
        return self.machine.state

    @property
    def description(self) -> str:
        """Who this is, for logs and conflicts."""
        return f"rtsp://{self.remote_ip} session {self.id}"

    def touch(self) -> None:
        """Note client activity (request, RTCP) for the session timeout."""
        self.last_seen = time.monotonic()

    # Publisher protocol -------------------------------------------------------------
    def kick(self, reason: str) -> None:
        """Stop this publisher: close its session and connection."""
        log.info("rtsp: closing publisher %s: %s", self.description, reason)
        self.server.close_session(self, reason, unpublish=False)
        if self.conn is not None:
            self.conn.close()

    # Reader side ------------------------------------------------------------------------
    def start_play(self) -> None:
        """Attach this session to its stream as a reader."""
        assert self.stream is not None
        if self.multicast:
            self.server.multicast_join(self)
        else:
            if self.reader is None:
                self.reader = self._make_reader()
            started = self.stream.add_reader(self.reader)
            if not started and isinstance(self.reader, TcpReader):
                self.reader.waiting_key = True
        self.machine.play()

    def _make_reader(self) -> TcpReader | UdpReader:
        assert self.stream is not None
        n = len(self.stream.tracks)
        if all(t.lower == "TCP" for t in self.transports.values()):
            channels: list[int | None] = [None] * n
            for idx, t in self.transports.items():
                if idx < n and t.interleaved is not None:
                    channels[idx] = t.interleaved[0]
            assert self.conn is not None
            return TcpReader(self, tuple(channels), self.server.limits.reader_queue_bytes)
        dests: list[tuple[tuple[str, int], tuple[str, int]] | None] = [None] * n
        for idx, t in self.transports.items():
            if idx < n and t.client_addr is not None:
                ip, p1, p2 = t.client_addr
                dests[idx] = ((ip, p1), (ip, p2))
        return UdpReader(self, dests)

    def stop_play(self) -> None:
        """Detach from the stream (PAUSE or TEARDOWN)."""
        if self.stream is not None:
            if self.reader is not None:
                self.stream.remove_reader(self.reader)
            if self.multicast and self.state is SessionState.PLAYING:
                self.server.multicast_leave(self)
        if not self.machine.check("PAUSE"):
            self.machine.pause()

    def stream_closed(self, reason: str) -> None:
        """The stream ended for good; drop the reader and its connection."""
        log.info("rtsp: reader %s of %s closed: %s", self.description, self.path, reason)
        self.server.close_session(self, reason)
        if self.conn is not None and all(t.lower == "TCP" for t in self.transports.values()):
            self.conn.close()


class TcpReader:
    """Reader over RTSP interleaved TCP (also the HTTP tunnel's GET connection)."""

    __slots__ = ("channels", "dropped", "limit", "sent", "session", "waiting_key")

    def __init__(self, session: RtspSession, channels: tuple[int | None, ...], limit: int) -> None:
        self.session = session
        self.channels = channels
        self.limit = limit
        self.waiting_key = False
        self.dropped = 0
        self.sent = 0

    def deliver(self, batch: Batch) -> None:
        """Write the batch in one go, or drop it and wait for a keyframe if we are behind."""
        conn = self.session.conn
        if conn is None:
            return
        transport = conn.out_transport
        if transport is None or transport.is_closing():
            return
        start = 0
        if self.waiting_key:
            key = batch.first_key
            if key is None:
                self.dropped += batch.count()
                return
            start = key
        if transport.get_write_buffer_size() > self.limit:
            self.dropped += batch.count(start)
            if not self.waiting_key:
                log.info(
                    "rtsp: reader %s of %s is behind (%d bytes queued); dropping to the next"
                    " keyframe",
                    self.session.description,
                    self.session.path,
                    transport.get_write_buffer_size(),
                )
            stream = self.session.stream
            self.waiting_key = stream is not None and stream.key_track >= 0
            self.session.server.reader_drops += 1
            return
        self.waiting_key = False
        data = batch.framed(self.channels, start)
        if data:
            transport.write(data)
            self.sent += len(data)
            self.session.server.bytes_out += len(data)

    def queued(self) -> int:
        """Bytes waiting in the connection's write buffer (the reader's queue depth)."""
        conn = self.session.conn
        transport = conn.out_transport if conn is not None else None
        return transport.get_write_buffer_size() if transport is not None else 0

    def stream_closed(self, reason: str) -> None:
        """See :class:`RtspSession.stream_closed`."""
        self.session.stream_closed(reason)


class UdpReader:
    """Reader over RTP/UDP unicast: one datagram per packet from the server's UDP ports."""

    __slots__ = ("dests", "dropped", "sent", "session")

    def __init__(
        self,
        session: RtspSession,
        dests: list[tuple[tuple[str, int], tuple[str, int]] | None],
    ) -> None:
        self.session = session
        self.dests = dests
        self.dropped = 0
        self.sent = 0

    def deliver(self, batch: Batch) -> None:
        """Send every packet of the batch to the client's ports."""
        server = self.session.server
        rtp_tx, rtcp_tx = server.udp_rtp_transport, server.udp_rtcp_transport
        if rtp_tx is None or rtcp_tx is None:
            return
        dests = self.dests
        n = len(dests)
        sent = self.sent
        for track, kind, packet in batch.packets():
            d = dests[track] if track < n else None
            if d is None:
                continue
            if kind == RTP:
                rtp_tx.sendto(packet, d[0])
            elif kind == RTCP:
                rtcp_tx.sendto(packet, d[1])
            self.sent += len(packet)
        server.bytes_out += self.sent - sent

    def stream_closed(self, reason: str) -> None:
        """See :class:`RtspSession.stream_closed`."""
        self.session.stream_closed(reason)


class MulticastGroup:
    """One stream's multicast output: a single reader that sends each packet once."""

    def __init__(
        self,
        stream: Stream,
        group: str,
        port_base: int,
        transport: asyncio.DatagramTransport,
    ) -> None:
        self.stream = stream
        self.group = group
        self.port_base = port_base
        self.transport = transport
        self.members: set[RtspSession] = set()
        self.sent = 0

    def ports(self, track: int) -> tuple[int, int]:
        """RTP and RTCP port of a track in the group."""
        return self.port_base + 2 * track, self.port_base + 2 * track + 1

    def deliver(self, batch: Batch) -> None:
        """Send each packet once to the group."""
        tx = self.transport
        for track, kind, packet in batch.packets():
            tx.sendto(packet, (self.group, self.port_base + 2 * track + kind))
            self.sent += len(packet)

    def stream_closed(self, reason: str) -> None:
        """Tell every member session."""
        for s in list(self.members):
            s.stream_closed(reason)
