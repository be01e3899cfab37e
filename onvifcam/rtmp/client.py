"""A small asyncio RTMP publisher: connect, createStream, publish, send FLV tags.

Used by the tests and by ``scripts/bench_ingest.py``; it is also a reference of the
command sequence encoders send (connect, releaseStream, FCPublish, createStream,
publish). Protocol work is done by the sans-I/O modules.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from typing import Any

from onvifcam.rtmp import amf0, chunk
from onvifcam.rtmp.chunk import ChunkParser, ChunkWriter, Message
from onvifcam.rtmp.handshake import ClientHandshake

__all__ = ["PublishError", "RtmpPublisher"]

CSID_COMMAND = 3
CSID_AUDIO = 4
CSID_VIDEO = 6
CSID_DATA = 5


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
        if result[0] != "_result" or len(result) < 4:
            raise PublishError({"code": "createStream failed", "description": repr(result)})
        self.stream_id = int(result[3])
        loop = asyncio.get_running_loop()
        self._status_waiter = loop.create_future()
        self._send(
            CSID_DATA,
            chunk.AMF0_COMMAND,
            self.stream_id,
            amf0.encode("publish", 0, None, name, "live"),
        )
        info = await asyncio.wait_for(self._status_waiter, self.timeout)
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
        return await asyncio.wait_for(fut, self.timeout)

    async def wait_status(self) -> dict[str, Any]:
        """The next onStatus info object."""
        self._status_waiter = asyncio.get_running_loop().create_future()
        return await asyncio.wait_for(self._status_waiter, self.timeout)

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
                fut = self._waiters.pop(values[1], None)
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
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (ConnectionError, OSError, TimeoutError):
            pass
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.writer = None
