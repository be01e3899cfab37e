"""The asyncio RTMP/RTMPS ingest server: publishers push FLV into the shared streams.

Only this module touches sockets for RTMP. The handshake (:mod:`.handshake`), chunk
stream (:mod:`.chunk`), AMF0 (:mod:`.amf0`) and FLV-to-RTP conversion (:mod:`.flv`) are
sans-I/O. Publishing is admitted by the shared gate (:mod:`onvifcam.auth.gate`): the
path is ``APP/NAME`` (or ``APP`` when the name is empty, as with ``rtmp://host/KEY``), a
path has one publisher (the next one gets ``NetStream.Publish.BadName``, or replaces it
when the path's ``on_conflict`` is ``replace``), publish credentials and stream keys come
from the query of the stream name, the app or the tcUrl (``?key=``, ``?user=&pass=``) or
from ``user:pass@`` in the tcUrl, and connections count against the limiter shared with RTSP.

Until a publish is accepted a connection is unauthenticated: its chunk parser holds at
most ``[rtmp] pre_publish_buffer_bytes`` and stops after each command, so the limits that
the publish raises apply to what follows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
import time
import typing
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from onvifcam import accept
from onvifcam.aio import within
from onvifcam.auth.gate import Claim, Gate, PlainCredentials, RefusalKind
from onvifcam.auth.gate import Refusal as GateRefusal
from onvifcam.config import Config
from onvifcam.limits import ConnectionLimiter, Refusal, Ticket
from onvifcam.media.sdp import SessionDescription
from onvifcam.media.stream import Stream, StreamBusy, StreamError, StreamRegistry
from onvifcam.netutil import binding
from onvifcam.rtmp import amf0, chunk
from onvifcam.rtmp.chunk import ChunkError, ChunkParser, ChunkWriter, Message
from onvifcam.rtmp.flv import FlvIngest
from onvifcam.rtmp.handshake import HandshakeError, ServerHandshake
from onvifcam.rtmp.state import Kind, RtmpSession, RtmpState

log = logging.getLogger(__name__)

WINDOW_ACK_SIZE = 5_000_000
PEER_BANDWIDTH = 5_000_000
CSID_CONTROL = 2
CSID_COMMAND = 3
CSID_STATUS = 5
FMS_VERSION = "FMS/3,5,7,7009"
MAX_STREAMS_PER_CONNECTION = 16
# A closed connection whose peer does not read what is left to send is aborted after this.
CLOSE_FLUSH_GRACE = 5.0


def _status(level: str, code: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"level": level, "code": code, "description": description, **extra}


class PublishRefused(Exception):
    """A publish request the server refuses, with the onStatus code to send; ``hint``
    (what the operator can change) goes to the log only; ``kind`` is the refusals counter."""

    def __init__(self, code: str, reason: str, hint: str = "", kind: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.hint = hint
        self.kind = kind or code.rsplit(".", 1)[-1].lower()  # badname, denied, failed


# Commands counted by name in stats() (anything else as "other").
COUNTED_COMMANDS = (
    "connect",
    "releaseStream",
    "FCPublish",
    "createStream",
    "publish",
    "FCUnpublish",
    "deleteStream",
    "play",
    "other",
)
REFUSAL_KEYS = (
    "connection_limit",
    "malformed",
    "slow_peer",
    "unauthorized",
    "forbidden",
    "conflict",
    "badname",
    "denied",
    "failed",
    "play_unsupported",
    "handshake_timeout",
    "publish_timeout",
    "idle_timeout",
    "media_timeout",
    "internal",
)


_KINDS = {
    chunk.AMF0_COMMAND: Kind.COMMAND,
    chunk.AMF3_COMMAND: Kind.COMMAND,
    chunk.AMF0_DATA: Kind.DATA,
    chunk.AMF3_DATA: Kind.DATA,
    chunk.AGGREGATE: Kind.MEDIA,
}


def split_query(text: str) -> tuple[str, dict[str, str]]:
    """``"cam1?key=x&user=u"`` -> ("cam1", {"key": "x", "user": "u"})."""
    base, _, query = text.partition("?")
    return base, dict(parse_qsl(query, keep_blank_values=True))


class RtmpConnection(asyncio.Protocol):
    """One RTMP(S) connection; it is the :class:`Publisher` of the stream it feeds."""

    def __init__(self, server: RtmpServer, scheme: str) -> None:
        self.server = server
        self.scheme = scheme
        self.transport: asyncio.Transport | None = None
        self.peer = ("?", 0)
        self.description = f"{scheme}://?"
        self.handshake: ServerHandshake | None = ServerHandshake()
        r = server.cfg.rtmp
        self.parser = ChunkParser(
            max_message_size=r.pre_publish_buffer_bytes,
            max_chunk_streams=r.max_chunk_streams,
            max_buffered=r.pre_publish_buffer_bytes,
        )
        self.parser.stop_after_command = True
        self.max_output = r.pre_publish_buffer_bytes
        self.writer = ChunkWriter()
        self.ticket: Ticket | None = None
        self.closed_at = 0.0
        self.session = RtmpSession(time.monotonic())  # state and timers (rtmp.state)
        self.app = ""
        self.tc_url = ""
        self.connect_params: dict[str, str] = {}
        self.streams_created = 0
        self.publish_stream_id = -1
        self.path = ""
        self.stream: Stream | None = None
        self.ingest: FlvIngest | None = None
        self.claim: Claim | None = None  # the gate's, from publish until unpublish/close
        self.peer_window = 0
        self.last_ack = 0
        self.paused = False
        self.metadata: dict[str, Any] = {}

    @property
    def closed(self) -> bool:
        """True once the connection is closed (by us or the peer)."""
        return self.session.closed

    # ------------------------------------------------------------------ lifecycle
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = typing.cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        self.description = f"{self.scheme}://{self.peer[0]}:{self.peer[1]}"
        ticket = self.server.limiter.admit(self.peer[0])
        if isinstance(ticket, Refusal):
            # RTMP has no way to say why before the handshake: the log line has to do.
            self.server.log_refusal(self.peer[0], "refused connection", ticket)
            self.server.refused("connection_limit")
            self.session.close()
            transport.abort()
            return
        self.ticket = ticket
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ticket is not None:
            self.server.limiter.release(self.ticket)
        self.server.connections.discard(self)
        self._unpublish("connection closed")
        self.session.close()

    def close(self, reason: str = "") -> None:
        """Close the connection (after what was written is flushed)."""
        if reason:
            log.info("rtmp: closing %s: %s", self.description, reason)
        self.session.close()
        self.ingest = None
        self._release_claim()
        if self.transport is not None and not self.transport.is_closing():
            self.closed_at = time.monotonic()
            self.transport.close()

    def ingest_drops(self) -> dict[str, int]:
        """What the FLV ingest dropped, by reason (read by the stream's statistics)."""
        st = getattr(self, "ingest_stats", None)
        if st is None:
            return {}
        return {
            "unsupported_codec": st.unsupported_video + st.unsupported_audio,
            "non_media": st.dropped_frames + st.late_audio,
            "malformed": st.malformed,
        }

    def kick(self, reason: str) -> None:
        """Publisher protocol: the stream dropped us (replaced, media timeout, shutdown)."""
        self.stream = None
        self._release_claim()
        if not self.closed and self.publish_stream_id >= 0:
            self._on_status(
                self.publish_stream_id,
                _status("status", "NetStream.Unpublish.Success", f"publishing stopped: {reason}"),
            )
        self.close(reason)

    def _unpublish(self, reason: str) -> None:
        stream = self.stream
        self.stream = None
        self.ingest = None
        self.session.unpublished()
        if stream is not None:
            stream.unpublish(self, reason)
        self._release_claim()

    def _release_claim(self) -> None:
        claim, self.claim = self.claim, None
        if claim is not None:
            claim.release()

    # ------------------------------------------------------------------ output
    def send(self, csid: int, type_id: int, stream_id: int, payload: bytes, ts: int = 0) -> None:
        """Write one message (the peer must read what we send: replies queue only so far)."""
        tx = self.transport
        if tx is not None and not tx.is_closing():
            if tx.get_write_buffer_size() > self.max_output:
                self.server.refused("slow_peer")
                self.close(f"the peer does not read our replies ({self.max_output} bytes queued)")
                return
            data = self.writer.message(csid, type_id, ts, stream_id, payload)
            tx.write(data)
            self.server.bytes_out += len(data)

    def _command(self, stream_id: int, *values: Any, csid: int = CSID_COMMAND) -> None:
        self.send(csid, chunk.AMF0_COMMAND, stream_id, amf0.encode(*values))

    def _on_status(self, stream_id: int, info: dict[str, Any]) -> None:
        self._command(stream_id, "onStatus", 0, None, info, csid=CSID_STATUS)

    # ------------------------------------------------------------------ input
    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        now = time.monotonic()
        session = self.session
        session.received(now)
        self.server.bytes_in += len(data)
        if session.state is RtmpState.HANDSHAKE and self.handshake is not None:
            try:
                reply, data = self.handshake.feed(data)
            except HandshakeError as exc:
                self.server.refused("malformed")
                log.warning("rtmp: bad handshake from %s: %s", self.peer[0], exc)
                self.close()
                return
            if reply:
                tx = self.transport
                if tx is not None:
                    tx.write(reply)
                    self.server.bytes_out += len(reply)
            if not self.handshake.done:
                return
            log.debug(
                "rtmp: %s handshake from %s",
                "digest" if self.handshake.digest else "simple",
                self.description,
            )
            self.handshake = None
            session.handshake_done()
            if not data:
                return
        parser = self.parser
        while True:
            try:
                messages = parser.feed(data)
            except ChunkError as exc:
                self.server.refused("malformed")
                self._log_bad("malformed chunk stream", exc)
                self.close()
                return
            if not self._handle(messages, now) or not parser.paused:
                break
            data = b""  # the parser stopped after a command: go on with the rest
        if self.closed:
            return
        if self.peer_window:
            received = self.parser.bytes_received
            if received - self.last_ack >= self.peer_window:
                self.last_ack = received
                self.send(CSID_CONTROL, chunk.ACK, 0, chunk.ack(received))
        stream = self.stream
        if stream is not None and not stream.readers and not self.paused:
            interval = self.server.idle_read_interval
            tx = self.transport
            if interval and tx is not None:
                # Nobody reads this stream: let the socket fill for a moment so one read
                # takes several messages (a large share of the CPU cost is per read).
                self.paused = True
                tx.pause_reading()
                asyncio.get_running_loop().call_later(interval, self._resume)

    def _handle(self, messages: list[Message], now: float) -> bool:
        """Act on received messages; False once the connection is closed."""
        try:
            # One publish per connection, so media is taken whatever message stream id it
            # names (some encoders use 0).
            for m in messages:
                t = m[0]
                if t == 9:
                    ingest = self.ingest  # set exactly while the state accepts media
                    if ingest is not None:
                        self.session.last_video = now
                        ingest.video_message(m[1], m[4])
                elif t == 8:
                    ingest = self.ingest
                    if ingest is not None:
                        ingest.audio_message(m[1], m[4])
                else:
                    self._other(m)
                if self.closed:
                    return False
        except PublishRefused as exc:
            self._refuse(exc)
            return False
        except Exception:
            self.server.refused("internal")
            log.exception("rtmp: internal error on %s; closing it", self.description)
            self.close()
            return False
        return True

    def _log_bad(self, what: str, exc: Exception) -> None:
        """One warning per bad connection, at most one per address every 10 s."""
        held = self.server.limiter.log_gate(self.peer[0], "rtmp " + what)
        if held is not None:
            more = f" ({held} more from this address not logged)" if held else ""
            log.warning("rtmp: %s from %s: %s%s", what, self.description, exc, more)

    def _resume(self) -> None:
        self.paused = False
        tx = self.transport
        if not self.closed and tx is not None and not tx.is_closing():
            tx.resume_reading()

    def _other(self, m: Message) -> None:
        t = m.type_id
        if not self.session.accepts(_KINDS.get(t, Kind.CONTROL)):
            return
        if t == chunk.AMF0_COMMAND or t == chunk.AMF3_COMMAND:
            values = self._amf_values(m, "command")
            if values is None:
                self.close()
                return
            self._invoke(m, values)
        elif t == chunk.AMF0_DATA or t == chunk.AMF3_DATA:
            values = self._amf_values(m, "data")
            if values is not None:
                self._data(values)
        elif t == chunk.WINDOW_ACK_SIZE:
            if len(m.payload) >= 4:
                self.peer_window = int.from_bytes(m.payload[:4], "big")
        elif t == chunk.USER_CONTROL:
            p = m.payload
            if len(p) >= 6 and int.from_bytes(p[:2], "big") == chunk.PING_REQUEST:
                self.send(
                    CSID_CONTROL,
                    chunk.USER_CONTROL,
                    0,
                    chunk.user_control(chunk.PING_RESPONSE, int.from_bytes(p[2:6], "big")),
                )
        elif t == chunk.AGGREGATE:
            self._aggregate(m)
        # Set Chunk Size and Abort are applied by the parser; Ack and Set Peer Bandwidth
        # need nothing from an ingest server.

    def _amf_values(self, m: Message, what: str) -> list[Any] | None:
        """The AMF0 values of a command or data message; None (logged) when malformed."""
        payload = m.payload
        if m.type_id in (chunk.AMF3_COMMAND, chunk.AMF3_DATA) and payload[:1] == b"\x00":
            payload = payload[1:]  # AMF3 message types that carry AMF0 values
        try:
            return amf0.decode(payload)
        except amf0.AmfError as exc:
            self.server.refused("malformed")
            log.warning("rtmp: bad AMF0 %s from %s: %s", what, self.description, exc)
            return None

    def _aggregate(self, m: Message) -> None:
        """An aggregate message: FLV-style tags whose timestamps are relative to the first."""
        data = m.payload
        ingest = self.ingest
        if ingest is None:
            return
        pos = 0
        base: int | None = None
        while pos + 11 <= len(data):
            t = data[pos]
            size = int.from_bytes(data[pos + 1 : pos + 4], "big")
            ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
            body = data[pos + 11 : pos + 11 + size]
            if len(body) < size:
                break
            if base is None:
                base = ts
            when = (m.timestamp + ts - base) & 0xFFFFFFFF
            if t == chunk.VIDEO:
                self.session.video(time.monotonic())
                ingest.video_message(when, body)
            elif t == chunk.AUDIO:
                ingest.audio_message(when, body)
            pos += 11 + size + 4

    def _data(self, values: list[Any]) -> None:
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
            meta = {
                k: v
                for k, v in values[1].items()
                if isinstance(v, str | int | float | bool) and len(k) <= 64
            }
            if meta == self.metadata:
                return  # some encoders repeat it
            self.metadata = meta
            if self.ingest is not None:
                self.ingest.set_metadata(meta)
            log.info(
                "rtmp: %s metadata: %s",
                self.description,
                ", ".join(
                    f"{k}={meta[k]!r}"
                    for k in (
                        "width",
                        "height",
                        "framerate",
                        "videodatarate",
                        "audiodatarate",
                        "encoder",
                    )
                    if k in meta
                ),
            )

    # ------------------------------------------------------------------ commands
    def _invoke(self, m: Message, values: list[Any]) -> None:
        if not values or not isinstance(values[0], str):
            self.server.refused("malformed")
            log.warning("rtmp: command without a name from %s", self.description)
            self.close()
            return
        name = values[0]
        txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        args = values[2:]
        server = self.server
        key = name if name in server.commands else "other"
        server.commands[key] += 1
        handler = _COMMANDS.get(name)
        if handler is None:
            log.debug("rtmp: %s sent unknown command %r", self.description, name)
            if txn:
                self._command(
                    m.stream_id,
                    "_error",
                    txn,
                    None,
                    _status("error", "NetConnection.Call.Failed", f"unknown command {name!r}"),
                )
            return
        handler(self, m, txn, args)

    def c_connect(self, m: Message, txn: float, args: list[Any]) -> None:
        obj = args[0] if args and isinstance(args[0], dict) else {}
        app = obj.get("app")
        tc_url = obj.get("tcUrl")
        self.app, self.connect_params = split_query(app if isinstance(app, str) else "")
        self.app = self.app.strip("/")
        self.tc_url = tc_url if isinstance(tc_url, str) else ""
        if self.tc_url:
            try:
                url = urlsplit(self.tc_url)
                for k, v in parse_qsl(url.query, keep_blank_values=True):
                    self.connect_params.setdefault(k, v)
                if url.username is not None:
                    self.connect_params.setdefault("user", unquote(url.username))
                if url.password is not None:
                    self.connect_params.setdefault("pass", unquote(url.password))
            except ValueError:
                pass
        self.send(CSID_CONTROL, chunk.WINDOW_ACK_SIZE, 0, chunk.window_ack_size(WINDOW_ACK_SIZE))
        self.send(
            CSID_CONTROL,
            chunk.SET_PEER_BANDWIDTH,
            0,
            chunk.set_peer_bandwidth(PEER_BANDWIDTH, 2),
        )
        size = self.server.out_chunk_size
        self.send(CSID_CONTROL, chunk.SET_CHUNK_SIZE, 0, chunk.set_chunk_size(size))
        self.writer.chunk_size = size
        self._command(
            0,
            "_result",
            txn,
            {"fmsVer": FMS_VERSION, "capabilities": 31.0, "mode": 1.0},
            _status(
                "status",
                "NetConnection.Connect.Success",
                "Connection succeeded.",
                objectEncoding=0.0,
                data=amf0.EcmaArray(version="3,5,7,7009"),
            ),
        )
        self.session.connected()

    def c_release_stream(self, m: Message, txn: float, args: list[Any]) -> None:
        if txn:
            self._command(0, "_result", txn, None, amf0.UNDEFINED)

    def c_fc_publish(self, m: Message, txn: float, args: list[Any]) -> None:
        if txn:
            self._command(0, "_result", txn, None, amf0.UNDEFINED)

    def c_create_stream(self, m: Message, txn: float, args: list[Any]) -> None:
        if self.streams_created >= MAX_STREAMS_PER_CONNECTION:
            self._command(
                0,
                "_error",
                txn,
                None,
                _status("error", "NetConnection.Call.Failed", "too many streams"),
            )
            return
        self.streams_created += 1
        self._command(0, "_result", txn, None, float(self.streams_created))

    def c_publish(self, m: Message, txn: float, args: list[Any]) -> None:
        raw_name = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
        stream_id = m.stream_id
        refused = self.session.refusal("publish")
        if refused is not None:
            raise PublishRefused(*refused)
        self.publish_stream_id = stream_id
        limiter = self.server.limiter
        refusal = limiter.check(self.peer[0])
        if refusal is not None:
            raise PublishRefused(
                "NetStream.Publish.Denied", refusal.reason, refusal.hint, kind="connection_limit"
            )
        limiter.charge(self.peer[0])  # a publish attempt costs from the address's budget
        name, params = split_query(raw_name)
        merged = {**self.connect_params, **params}
        name = name.strip("/")
        # rtmp://host/KEY (no app, what many encoder guides show) arrives as app=KEY and an
        # empty name: publish to the path KEY, as MediaMTX and go2rtc do.
        target = f"{self.app}/{name}" if self.app and name else self.app or name
        if not target:
            raise PublishRefused(
                "NetStream.Publish.BadName",
                "publish without a stream name; use rtmp://HOST/APP/NAME (path APP/NAME) "
                "or rtmp://HOST/NAME",
            )
        path = StreamRegistry.normalize(target)
        self.path = path
        self.claim = self.server.authorize(self, path, merged)
        self._trusted()
        self.description = f"{self.scheme}://{self.peer[0]}:{self.peer[1]}/{path}"
        self.session.publish_accepted(time.monotonic())
        ingest = FlvIngest(self._on_publish, self._drop_packet, name=f"rtmp {path}")
        self.ingest_stats = ingest.stats  # outlives self.ingest, for ingest_drops()
        if self.metadata:
            ingest.set_metadata(self.metadata)
        self.ingest = ingest
        self.send(
            CSID_CONTROL,
            chunk.USER_CONTROL,
            0,
            chunk.user_control(chunk.STREAM_BEGIN, stream_id),
        )
        self._command(
            stream_id,
            "onFCPublish",
            0,
            None,
            _status("status", "NetStream.Publish.Start", f"FCPublish to {path}"),
            csid=CSID_STATUS,
        )
        self._on_status(
            stream_id,
            _status("status", "NetStream.Publish.Start", f"{path} is now published", details=path),
        )
        log.info("rtmp: %s publishes to %s", self.peer[0], path)

    def _trusted(self) -> None:
        """The publish passed the path policy: lift the pre-publish limits."""
        if self.ticket is not None:
            self.server.limiter.authenticate(self.ticket)
        r = self.server.cfg.rtmp
        p = self.parser
        p.max_message_size = r.max_message_bytes
        p.max_buffered = r.max_buffer_bytes
        p.stop_after_command = False
        self.max_output = r.max_buffer_bytes

    @staticmethod
    def _drop_packet(track: int, packet: bytes) -> None:
        """on_packet before the stream exists (never called: publish comes first)."""

    def _on_publish(self, session: SessionDescription) -> None:
        """FlvIngest callback: the media is known; attach to (or re-announce) the stream."""
        policy = self.server.cfg.path_policy(self.path)
        try:
            stream = self.server.registry.get_or_create(self.path)
            stream.publish(self, session, replace=policy.on_conflict == "replace")
        except StreamBusy as exc:
            raise PublishRefused("NetStream.Publish.BadName", str(exc), kind="conflict") from None
        except StreamError as exc:
            raise PublishRefused("NetStream.Publish.Failed", str(exc)) from None
        self.stream = stream
        self.session.media_ready()
        ingest = self.ingest
        if ingest is not None:
            packetizer = ingest.packetizer
            packetizer.on_packet = stream.on_rtp
            if self.server.cfg.rtmp.lazy_packetize:
                packetizer.needed = stream.readers.__len__
                packetizer.on_count = stream.note_input

    def _refuse(self, exc: PublishRefused) -> None:
        hint = f"; {exc.hint}" if exc.hint else ""
        log.warning("rtmp: refused %s: %s (%s)%s", self.description, exc.reason, exc.code, hint)
        self.server.refused(exc.kind)
        sid = self.publish_stream_id if self.publish_stream_id >= 0 else 1
        self._on_status(sid, _status("error", exc.code, exc.reason))
        self._unpublish(exc.reason)
        self.close()

    def c_unpublish(self, m: Message, txn: float, args: list[Any]) -> None:
        if self.session.publishing:
            self._unpublish("the publisher stopped")
            self._on_status(
                self.publish_stream_id,
                _status("status", "NetStream.Unpublish.Success", f"{self.path} is unpublished"),
            )
        if txn:
            self._command(0, "_result", txn, None, amf0.UNDEFINED)

    def c_delete_stream(self, m: Message, txn: float, args: list[Any]) -> None:
        sid = args[1] if len(args) > 1 and isinstance(args[1], float) else float(m.stream_id)
        # compared as a float: int() of a NaN or infinite AMF0 number would raise
        if sid == self.publish_stream_id and self.session.publishing:
            self._unpublish("the publisher deleted its stream")

    def c_play(self, m: Message, txn: float, args: list[Any]) -> None:
        self.server.refused("play_unsupported")
        self._on_status(
            m.stream_id or 1,
            _status(
                "error",
                "NetStream.Play.Failed",
                "this server only ingests over RTMP; read the stream over RTSP",
            ),
        )

    def c_ignore(self, m: Message, txn: float, args: list[Any]) -> None:
        """Commands that need no answer (receiveAudio, _result of our own calls, ...)."""


_COMMANDS: dict[str, typing.Callable[[RtmpConnection, Message, float, list[Any]], None]] = {
    "connect": RtmpConnection.c_connect,
    "releaseStream": RtmpConnection.c_release_stream,
    "FCPublish": RtmpConnection.c_fc_publish,
    "createStream": RtmpConnection.c_create_stream,
    "publish": RtmpConnection.c_publish,
    "FCUnpublish": RtmpConnection.c_unpublish,
    "deleteStream": RtmpConnection.c_delete_stream,
    "closeStream": RtmpConnection.c_delete_stream,
    "play": RtmpConnection.c_play,
    "play2": RtmpConnection.c_play,
    "_result": RtmpConnection.c_ignore,
    "_error": RtmpConnection.c_ignore,
    "onStatus": RtmpConnection.c_ignore,
    "receiveAudio": RtmpConnection.c_ignore,
    "receiveVideo": RtmpConnection.c_ignore,
    "_checkbw": RtmpConnection.c_release_stream,
    "getStreamLength": RtmpConnection.c_release_stream,
}


def _load_tls(cfg: Config) -> ssl.SSLContext | None:
    r = cfg.rtmp
    if not (r.tls_cert or r.tls_pkcs12):
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if r.tls_pkcs12:
        try:
            from cryptography.hazmat.primitives.serialization import (
                Encoding,
                NoEncryption,
                PrivateFormat,
                pkcs12,
            )
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise OSError("[rtmp] tls_pkcs12 needs the 'cryptography' package") from exc
        try:
            with open(r.tls_pkcs12, "rb") as f:
                key, cert, extra = pkcs12.load_key_and_certificates(
                    f.read(), r.tls_pkcs12_password.encode() or None
                )
        except (OSError, ValueError) as exc:
            raise OSError(f"[rtmp] tls_pkcs12 {r.tls_pkcs12}: {exc}") from None
        if key is None or cert is None:
            raise OSError(f"[rtmp] tls_pkcs12 {r.tls_pkcs12}: no key or certificate inside")
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        pem += cert.public_bytes(Encoding.PEM)
        for c in extra or []:
            pem += c.public_bytes(Encoding.PEM)
        fd, name = tempfile.mkstemp(prefix="onvifcam-tls-", suffix=".pem")
        try:
            os.write(fd, pem)
            os.close(fd)
            ctx.load_cert_chain(name)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
        return ctx
    try:
        ctx.load_cert_chain(r.tls_cert, r.tls_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise OSError(f"[rtmp] cannot load tls_cert/tls_key: {exc}") from None
    return ctx


class RtmpServer:
    """The RTMP and RTMPS listeners, their connections and the publish policy."""

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
        self.connections: set[RtmpConnection] = set()
        self.out_chunk_size = max(128, min(cfg.rtmp.chunk_size, 65536))
        self.idle_read_interval = max(0, cfg.rtmp.idle_read_interval_ms) / 1000
        self.port = 0
        self.tls_port = 0
        self._servers: list[accept.BatchServer] = []
        # counters (stats())
        self.commands: dict[str, int] = dict.fromkeys(COUNTED_COMMANDS, 0)
        self.refusals: dict[str, int] = dict.fromkeys(REFUSAL_KEYS, 0)
        self.bytes_in = 0
        self.bytes_out = 0

    def refused(self, kind: str) -> None:
        """Count a refusal (a refused publish, a dropped connection) by kind."""
        self.refusals[kind] = self.refusals.get(kind, 0) + 1

    def stats(self) -> dict[str, int | float | dict[str, int]]:
        """Connections and sessions by state (gauges); commands by name, refusals by kind,
        bytes in and out (counters)."""
        by_state = dict.fromkeys((st.value for st in RtmpState if st.value != "closed"), 0)
        for c in self.connections:
            if c.session.state.value in by_state:
                by_state[c.session.state.value] += 1
        return {
            "connections": len(self.connections),
            "sessions": by_state,
            "requests": dict(self.commands),
            "refusals": dict(self.refusals),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }

    # ------------------------------------------------------------------ component
    async def start(self) -> None:
        """Bind the RTMP listener, and the RTMPS one when a certificate is configured."""
        host = self.cfg.server.host
        tls = _load_tls(self.cfg)
        port = self.cfg.server.rtmp_port
        with binding("tcp", host, port, "RTMP port", "--rtmp-port or [server] rtmp_port"):
            srv = await accept.create_server(
                lambda: RtmpConnection(self, "rtmp"), host, port, backlog=1024
            )
        self._servers.append(srv)
        self.port = srv.sockets[0].getsockname()[1]
        if tls is not None:
            port = self.cfg.server.rtmps_port
            with binding("tcp", host, port, "RTMPS port", "--rtmps-port or [server] rtmps_port"):
                srv = await accept.create_server(
                    lambda: RtmpConnection(self, "rtmps"),
                    host,
                    port,
                    ssl=tls,
                    ssl_handshake_timeout=self.limits.handshake_timeout,
                    backlog=1024,
                )
            self._servers.append(srv)
            self.tls_port = srv.sockets[0].getsockname()[1]
        log.info(
            "rtmp: listening on %s:%d%s",
            host,
            self.port,
            f" (rtmps on {self.tls_port})" if self.tls_port else "",
        )

    async def stop(self) -> None:
        """Close the listeners and every connection."""
        for s in self._servers:
            s.close()
        for c in list(self.connections):
            c._unpublish("server shutting down")
            c.close()
        for s in self._servers:
            with contextlib.suppress(TimeoutError):
                await within(s.wait_closed(), 2.0)
        self._servers.clear()

    def ready_info(self) -> dict[str, str]:
        """rtmp_port (and rtmps_port) for the ready line."""
        info = {"rtmp_port": str(self.port)}
        if self.tls_port:
            info["rtmps_port"] = str(self.tls_port)
        return info

    def log_refusal(self, ip: str, what: str, refusal: Refusal) -> None:
        """Log a refusal by the limiter (at most one line per address and kind every 10 s)."""
        held = self.limiter.log_gate(ip, "rtmp " + what)
        if held is not None:
            more = f" ({held} more not logged)" if held else ""
            log.warning("rtmp: %s from %s: %s%s", what, ip, refusal, more)

    def tick(self, now: float) -> None:
        """Enforce the handshake, publish, video and receive timeouts."""
        lim = self.limits
        for c in list(self.connections):
            if c.closed:
                # Closed, but the peer does not read what was left to send: it would hold
                # its slot for ever.
                tx = c.transport
                if c.closed_at and now - c.closed_at > CLOSE_FLUSH_GRACE and tx is not None:
                    tx.abort()
                continue
            refusal = self.limiter.overdue(c.ticket) if c.ticket is not None else None
            if refusal is not None:
                self.log_refusal(c.peer[0], "dropped connection", refusal)
                self.refused("connection_limit")
                c.close()
                continue
            has_video = c.ingest is not None and c.ingest.video is not None
            late = c.session.overdue(now, lim, has_video)
            if late is not None:
                self.refused(late.kind)
                if late.unpublish:
                    c._unpublish(late.unpublish_reason)
                c.close(late.reason)

    # ------------------------------------------------------------------ policy
    def authorize(self, conn: RtmpConnection, path: str, params: dict[str, str]) -> Claim:
        """Ask the gate to admit a publish request; raises PublishRefused."""
        presented = PlainCredentials(
            params.get("user", params.get("username", "")),
            params.get("pass", params.get("password", "")),
            params.get("key"),
        )
        try:
            claim = self.gate.admit_publish(path, presented, conn)
        except GateRefusal as exc:
            code = "NetStream.Publish.BadName" if exc.kind is RefusalKind.CONFLICT else ""
            kind = {RefusalKind.UNAUTHORIZED: "unauthorized", RefusalKind.CONFLICT: "conflict"}
            raise PublishRefused(
                code or "NetStream.Publish.Denied", exc.reason, kind=kind.get(exc.kind, "forbidden")
            ) from None
        stream = self.registry.get(path)  # a publisher outside the gate (a source)
        if (
            not claim.replace
            and stream is not None
            and stream.online
            and stream.publisher is not conn
        ):
            claim.release()
            desc = getattr(stream.publisher, "description", "another publisher")
            raise PublishRefused(
                "NetStream.Publish.BadName",
                f"path '{path}' already has a publisher ({desc})",
                kind="conflict",
            )
        return claim
