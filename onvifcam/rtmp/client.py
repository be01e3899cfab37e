"""Small asyncio RTMP clients: a publisher (connect, createStream, publish, send FLV tags)
and a puller (connect, createStream, play; FLV tags -> RTP).

The publisher is used by the tests and by ``scripts/bench_ingest.py``; it is also a reference
of the command sequence encoders send (connect, releaseStream, FCPublish, createStream,
publish). The puller feeds pull sources (``source = "rtmp://host/app/name"``). Protocol work
is done by the sans-I/O modules (handshake, chunk, amf0, flv, the packetiser).
"""

from __future__ import annotations

import asyncio
import math
import ssl as _ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from onvifcam.aio import cancel_and_wait, within
from onvifcam.media.sdp import SessionDescription
from onvifcam.rtmp import amf0, chunk
from onvifcam.rtmp.chunk import ChunkParser, ChunkWriter, Message
from onvifcam.rtmp.flv import FlvIngest
from onvifcam.rtmp.handshake import ClientHandshake
from onvifcam.rtsp.client import PullError, PullTarget

__all__ = ["PublishError", "RtmpPublisher", "RtmpPuller"]

CSID_COMMAND = 3
CSID_AUDIO = 4
CSID_VIDEO = 6
CSID_DATA = 5


def stream_id_of(result: list[Any]) -> int | None:
    """The stream id a ``createStream`` ``_result`` carries; None when it is missing or not a
    plausible id (a hostile server may send a string, NaN, Infinity or 2**80)."""
    if len(result) < 4:
        return None
    sid = result[3]
    if isinstance(sid, bool) or not isinstance(sid, int | float):
        return None
    if not (math.isfinite(sid) and 0 < sid < 2**31 and sid == int(sid)):
        return None
    return int(sid)


class PublishError(Exception):
    """The server refused a command; ``info`` is its status object."""

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__(f"{info.get('code')}: {info.get('description')}")
        self.info = info


class RtmpPublisher:
    """One publishing connection."""

    def __init__(self, chunk_size: int = 4096, digest: bool = False, timeout: float = 10.0) -> None:
        self.chunk_size = chunk_size
        self.timeout = timeout
        self.digest = digest
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.parser = ChunkParser()
        self.out = ChunkWriter()
        self.stream_id = 0
        self.acked = 0  # the server's last Acknowledgement (bytes it received)
        self.sent = 0
        self.statuses: list[dict[str, Any]] = []
        self._txn = 0
        self._waiters: dict[float, asyncio.Future[list[Any]]] = {}
        self._status_waiter: asyncio.Future[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.error: Exception | None = None  # why the connection ended, if not a clean EOF

    async def connect(
        self,
        host: str,
        port: int,
        app: str,
        *,
        tc_url: str = "",
        ssl: _ssl.SSLContext | None = None,
        window: int = 0,
    ) -> dict[str, Any]:
        """Open the connection, handshake, send connect; the server's connect result."""
        self.reader, self.writer = await asyncio.open_connection(
            host, port, ssl=ssl, server_hostname=host if ssl else None
        )
        hs = ClientHandshake(digest=self.digest)
        self.writer.write(hs.start())
        rest = b""
        while not hs.done:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("server closed the connection during the handshake")
            c2, rest = hs.feed(data)
            if hs.done:
                self.writer.write(c2)
        self._task = asyncio.create_task(self._read_loop(rest))
        self._send(2, chunk.SET_CHUNK_SIZE, 0, chunk.set_chunk_size(self.chunk_size))
        self.out.chunk_size = self.chunk_size
        if window:
            self._send(2, chunk.WINDOW_ACK_SIZE, 0, chunk.window_ack_size(window))
        scheme = "rtmps" if ssl else "rtmp"
        result = await self.call(
            "connect",
            {
                "app": app,
                "type": "nonprivate",
                "flashVer": "FMLE/3.0 (compatible; onvifcam)",
                "tcUrl": tc_url or f"{scheme}://{host}:{port}/{app}",
            },
        )
        if result[0] != "_result":
            raise PublishError(result[3] if len(result) > 3 else {"code": "connect failed"})
        return result[3] if len(result) > 3 and isinstance(result[3], dict) else {}

    async def publish(self, name: str) -> dict[str, Any]:
        """releaseStream, FCPublish, createStream, publish; the NetStream.Publish.* status."""
        self.notify("releaseStream", None, name)
        self.notify("FCPublish", None, name)
        result = await self.call("createStream", None)
        sid = stream_id_of(result) if result[0] == "_result" else None
        if sid is None:
            raise PublishError({"code": "createStream failed", "description": f"{result!r:.200}"})
        self.stream_id = sid
        loop = asyncio.get_running_loop()
        self._status_waiter = loop.create_future()
        self._send(
            CSID_DATA,
            chunk.AMF0_COMMAND,
            self.stream_id,
            amf0.encode("publish", 0, None, name, "live"),
        )
        info = await within(self._status_waiter, self.timeout)
        if info.get("level") == "error":
            raise PublishError(info)
        return info

    def metadata(self, meta: dict[str, Any]) -> None:
        """Send @setDataFrame onMetaData."""
        body = amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(meta))
        self._send(CSID_DATA, chunk.AMF0_DATA, self.stream_id, body)

    def data(self, body: bytes) -> None:
        """Send an AMF0 data message body as it is (an FLV script tag, onMetaData)."""
        self._send(CSID_DATA, chunk.AMF0_DATA, self.stream_id, body)

    def video(self, timestamp: int, body: bytes) -> None:
        """Send one video message (an FLV VIDEODATA body)."""
        self._send(CSID_VIDEO, chunk.VIDEO, self.stream_id, body, timestamp)

    def audio(self, timestamp: int, body: bytes) -> None:
        """Send one audio message (an FLV AUDIODATA body)."""
        self._send(CSID_AUDIO, chunk.AUDIO, self.stream_id, body, timestamp)

    def write_raw(self, data: bytes) -> None:
        """Write bytes as they are (pre-chunked media, or garbage in tests)."""
        assert self.writer is not None
        self.sent += len(data)
        self.writer.write(data)

    async def drain(self) -> None:
        """Wait until the socket buffer drains."""
        assert self.writer is not None
        await self.writer.drain()

    def notify(self, name: str, *args: Any) -> None:
        """A command without a reply."""
        self._txn += 1
        self._send(CSID_COMMAND, chunk.AMF0_COMMAND, 0, amf0.encode(name, self._txn, *args))

    async def call(self, name: str, *args: Any) -> list[Any]:
        """A command and its _result/_error reply (all its values)."""
        self._txn += 1
        txn = float(self._txn)
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiters[txn] = fut
        self._send(CSID_COMMAND, chunk.AMF0_COMMAND, 0, amf0.encode(name, txn, *args))
        return await within(fut, self.timeout)

    async def wait_status(self) -> dict[str, Any]:
        """The next onStatus info object."""
        self._status_waiter = asyncio.get_running_loop().create_future()
        return await within(self._status_waiter, self.timeout)

    def _send(self, csid: int, type_id: int, sid: int, payload: bytes, ts: int = 0) -> None:
        self.write_raw(self.out.message(csid, type_id, ts, sid, payload))

    async def _read_loop(self, first: bytes) -> None:
        assert self.reader is not None
        data = first
        try:
            while True:
                if data:
                    for m in self.parser.feed(data):
                        self._message(m)
                data = await self.reader.read(65536)
                if not data:
                    break
        except (ConnectionError, OSError, chunk.ChunkError, amf0.AmfError) as exc:
            self.error = exc
        except Exception as exc:  # whatever else the peer's data caused ends this connection
            self.error = exc
        finally:
            self.closed.set()
            for fut in self._waiters.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))
            if self._status_waiter is not None and not self._status_waiter.done():
                self._status_waiter.set_exception(ConnectionError("connection closed"))

    def _message(self, m: Message) -> None:
        if m.type_id == chunk.ACK and len(m.payload) >= 4:
            self.acked = int.from_bytes(m.payload[:4], "big")
        elif m.type_id == chunk.AMF0_COMMAND:
            values = amf0.decode(m.payload)
            if not values:
                return
            name = values[0]
            if name in ("_result", "_error") and len(values) > 1:
                tid = values[1] if len(values) > 1 else None
                if isinstance(tid, bool) or not isinstance(tid, int | float):
                    return  # a transaction id must be a number (AMF0 Number)
                fut = self._waiters.pop(tid, None)
                if fut is not None and not fut.done():
                    fut.set_result(values)
            elif name == "onStatus" and len(values) > 3 and isinstance(values[3], dict):
                self.statuses.append(values[3])
                w = self._status_waiter
                if w is not None and not w.done():
                    w.set_result(values[3])

    async def close(self) -> None:
        """FCUnpublish + deleteStream, then close the socket."""
        if self.writer is None:
            return
        try:
            if self.stream_id and not self.writer.is_closing():
                self.notify("FCUnpublish", None, "")
                self.notify("deleteStream", None, float(self.stream_id))
            self.writer.close()
            await within(self.writer.wait_closed(), 5)
        except (ConnectionError, OSError, TimeoutError):
            pass
        task, self._task = self._task, None
        await cancel_and_wait(task)  # the read loop keeps its error in self.error
        self.writer = None


class RtmpPuller(RtmpPublisher):
    """One playing connection: connect, createStream, play; FLV tags -> access units ->
    RTP through :class:`~onvifcam.rtmp.flv.FlvIngest` and the packetiser.

    The pull-source interface (as :class:`onvifcam.rtsp.client.RtspPuller`): :meth:`open`
    returns the SDP once the media is known (video sequence header and first keyframe),
    :meth:`run` delivers RTP to ``on_rtp`` until the server stops, :meth:`close`.
    ``on_session`` hears of a later SDP change (a new sequence header).
    """

    def __init__(
        self,
        uri: str,
        *,
        on_rtp: Callable[[int, bytes], None],
        on_session: Callable[[SessionDescription], None] | None = None,
        timeout: float = 5.0,
        max_message_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        super().__init__(timeout=timeout)
        self.target = PullTarget.parse(uri, 443 if uri.lower().startswith("rtmps") else 1935)
        path = urlsplit(uri).path.strip("/")
        app, _, name = path.rpartition("/")
        if not app or not name:
            raise PullError(f"{self.target.url}: name an app and a stream (rtmp://host/app/name)")
        query = urlsplit(uri).query
        self.app, self.name = app, name + (f"?{query}" if query else "")
        self.on_rtp = on_rtp
        self.on_session = on_session
        self.parser.max_message_size = max_message_bytes
        self.parser.max_buffered = 2 * max_message_bytes
        self.ingest = FlvIngest(self._published, self._packet, name=f"pull {self.target.url}")
        self.session: SessionDescription | None = None
        self._ready: asyncio.Future[SessionDescription] | None = None
        self._early: list[tuple[int, bytes]] | None = []  # RTP made before open() returned
        self._window = 0
        self._acked_at = 0

    @property
    def description(self) -> str:
        """The URL without credentials."""
        return self.target.url

    async def open(self) -> SessionDescription:
        """Connect, play, and wait for the media to be known; the SDP."""
        t = self.target
        ctx = _ssl.create_default_context() if t.scheme == "rtmps" else None
        self._ready = asyncio.get_running_loop().create_future()
        try:
            await self.connect(t.host, t.port, self.app, ssl=ctx)
            result = await self.call("createStream", None)
            sid = stream_id_of(result) if result[0] == "_result" else None
            if sid is None:
                raise PullError(f"{t.url}: createStream failed: {result!r:.200}")
            self.stream_id = sid
            self._status_waiter = asyncio.get_running_loop().create_future()
            self._send(
                CSID_DATA,
                chunk.AMF0_COMMAND,
                self.stream_id,
                amf0.encode("play", 0, None, self.name, -1000),
            )
            self._send(
                2,
                chunk.USER_CONTROL,
                0,
                chunk.user_control(chunk.SET_BUFFER_LENGTH, self.stream_id, 500),
            )
            while True:
                info = await within(self._status_waiter, self.timeout)
                if info.get("level") == "error":
                    raise PullError(f"{t.url}: {info.get('code')}: {info.get('description')}")
                if info.get("code") == "NetStream.Play.Start":
                    break
                self._status_waiter = asyncio.get_running_loop().create_future()
            return await within(asyncio.shield(self._ready), self.timeout)
        except PublishError as exc:
            raise PullError(f"{t.url}: {exc}") from None
        except (ConnectionError, OSError) as exc:
            raise PullError(f"{t.url}: {exc or 'connection closed'}") from None
        except TimeoutError:
            raise PullError(f"{t.url}: no media within {self.timeout:g} s") from None

    def _published(self, session: SessionDescription) -> None:
        first = self.session is None
        self.session = session
        if first:
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(session)
        elif self.on_session is not None:
            self.on_session(session)

    def _packet(self, track: int, packet: bytes) -> None:
        if self._early is not None:
            if len(self._early) < 4096:
                self._early.append((track, packet))
        else:
            self.on_rtp(track, packet)

    async def run(self, idle_timeout: float) -> None:
        """Deliver media until the server stops; raises PullError saying why it ended."""
        early, self._early = self._early or [], None
        for track, packet in early:
            self.on_rtp(track, packet)
        seen = -1
        closed = asyncio.ensure_future(self.closed.wait())  # one waiter for the whole run
        try:
            while not (await asyncio.wait({closed}, timeout=idle_timeout))[0]:
                if self.parser.bytes_received == seen:
                    raise PullError(
                        f"{self.target.url}: no data for {idle_timeout:g} s "
                        "([sources] switch_after)"
                    )
                seen = self.parser.bytes_received
        finally:
            closed.cancel()
        why = self.error or "the server closed the connection"
        raise PullError(f"{self.target.url}: {why}")

    def _message(self, m: Message) -> None:
        t = m.type_id
        if t == chunk.VIDEO:
            self.ingest.video_message(m.timestamp, m.payload)
        elif t == chunk.AUDIO:
            self.ingest.audio_message(m.timestamp, m.payload)
        elif t == chunk.AMF0_DATA:
            try:
                values = amf0.decode(m.payload)
            except amf0.AmfError:
                return
            if values and values[0] == "@setDataFrame":
                values = values[1:]
            if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
                self.ingest.set_metadata(values[1])
        elif t == chunk.WINDOW_ACK_SIZE and len(m.payload) >= 4:
            self._window = int.from_bytes(m.payload[:4], "big")
        elif t == chunk.USER_CONTROL and len(m.payload) >= 6:
            if int.from_bytes(m.payload[:2], "big") == chunk.PING_REQUEST:
                self._send(2, chunk.USER_CONTROL, 0, chunk.user_control(
                    chunk.PING_RESPONSE, int.from_bytes(m.payload[2:6], "big")))  # fmt: skip
        else:
            super()._message(m)
        got = self.parser.bytes_received
        if self._window and got - self._acked_at >= self._window // 2:
            self._acked_at = got
            self._send(2, chunk.ACK, 0, chunk.ack(got & 0xFFFFFFFF))
