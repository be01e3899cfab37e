"""The RTMP chunk stream (Adobe RTMP spec section 5.3), sans-I/O.

:class:`ChunkParser` turns received bytes into whole :class:`Message` objects: chunk
header types 0-3, 1/2/3-byte basic headers, extended timestamps (also on type-3 chunks,
which most encoders repeat and some omit: both are accepted), Set Chunk Size and Abort
applied at once. :class:`ChunkWriter` frames messages into chunks.

The parser is the ingest hot path: it works on the received ``bytes`` with
``struct.unpack_from`` and keeps chunk bodies as memoryview slices until a message is
complete, so each payload byte is copied once; only a header split across two reads is
carried over to the next call.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = [
    "ABORT",
    "ACK",
    "AMF0_COMMAND",
    "AMF0_DATA",
    "AMF3_COMMAND",
    "AMF3_DATA",
    "AUDIO",
    "SET_CHUNK_SIZE",
    "SET_PEER_BANDWIDTH",
    "USER_CONTROL",
    "VIDEO",
    "WINDOW_ACK_SIZE",
    "ChunkError",
    "ChunkParser",
    "ChunkWriter",
    "Message",
    "abort",
    "ack",
    "set_chunk_size",
    "set_peer_bandwidth",
    "user_control",
    "window_ack_size",
]

# message type ids
SET_CHUNK_SIZE = 1
ABORT = 2
ACK = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
AMF3_DATA = 15
AMF3_SHARED_OBJECT = 16
AMF3_COMMAND = 17
AMF0_DATA = 18
AMF0_SHARED_OBJECT = 19
AMF0_COMMAND = 20
AGGREGATE = 22

# user control events
STREAM_BEGIN = 0
STREAM_EOF = 1
STREAM_DRY = 2
SET_BUFFER_LENGTH = 3
STREAM_IS_RECORDED = 4
PING_REQUEST = 6
PING_RESPONSE = 7

DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 0xFFFFFF  # no message is longer, so larger chunk sizes mean the same
MAX_MESSAGE_SIZE = 0xFFFFFF
MAX_CHUNK_STREAMS = 256

_U32 = struct.Struct("!I")
_U32LE = struct.Struct("<I")
_U16 = struct.Struct("!H")
_HEADER_SIZE = (11, 7, 3)  # message header bytes of chunk types 0, 1 and 2
_COMMANDS = frozenset((AMF0_COMMAND, AMF3_COMMAND))


class ChunkError(ValueError):
    """A chunk stream that cannot be parsed; the connection must be closed."""


class Message(NamedTuple):
    """One reassembled RTMP message."""

    type_id: int
    timestamp: int  # absolute, milliseconds, 32-bit
    stream_id: int
    csid: int
    payload: bytes


def _new_message(fields: tuple[int, int, int, int, bytes]) -> Message:
    return tuple.__new__(Message, fields)  # skips NamedTuple's Python-level __new__


class _Stream:
    """Per chunk stream id state: the last header and the message being assembled."""

    __slots__ = (
        "delta",
        "ext",
        "held",
        "length",
        "parts",
        "received",
        "src",
        "stream_id",
        "timestamp",
        "type_id",
    )

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0  # the last timestamp field (delta; for type 0 the absolute value)
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.ext = -1  # the last extended timestamp value, -1 when the header had none
        self.parts: list[memoryview] = []
        self.received = 0
        # Memory the parts keep alive: each is a view into a received buffer, so the whole
        # buffer counts (once per message), however little of it belongs to the message.
        self.held = 0
        self.src: bytes | None = None  # the buffer the last part points into


class ChunkParser:
    """Reassembles RTMP messages from the chunk stream.

    ``feed(data)`` returns the messages completed by ``data``. Set Chunk Size and Abort
    take effect immediately (they are returned too). Raises :class:`ChunkError` on a
    stream that cannot be parsed: a continuation header on an unknown chunk stream, a
    zero chunk size, a message over ``max_message_size``, too many chunk streams, or more
    than ``max_buffered`` bytes held for incomplete messages. What is held is counted
    conservatively: a part of a message keeps the whole received buffer it came in alive,
    so each such buffer counts in full for every incomplete message it holds a part of.

    The limits are plain attributes: a server starts with small ones and raises them once
    the peer is trusted. With ``stop_after_command`` set, :meth:`feed` returns after each
    command message (AMF0/AMF3) and keeps the rest of the input (:attr:`paused`); call
    ``feed(b"")`` to go on, so that limits changed by that command apply to what follows.
    """

    def __init__(
        self,
        *,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_chunk_streams: int = MAX_CHUNK_STREAMS,
        max_buffered: int = 32 * 1024 * 1024,
    ) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_message_size = max_message_size
        self.max_chunk_streams = max_chunk_streams
        self.max_buffered = max_buffered
        self.bytes_received = 0
        self.aborted = 0
        self._streams: dict[int, _Stream] = {}
        self._rest = b""
        self._cur: _Stream | None = None  # stream whose chunk body is partly received
        self._cur_csid = 0
        self._left = 0  # bytes of that chunk body still to come
        self._buffered = 0
        self.stop_after_command = False
        self._paused: tuple[bytes, int] | None = None  # input left when stopped
        self._incomplete: set[_Stream] = set()  # streams whose parts hold buffers

    @property
    def buffered(self) -> int:
        """Bytes counted as held for incomplete messages (see the class doc)."""
        return self._buffered

    @property
    def paused(self) -> bool:
        """True when :meth:`feed` stopped after a command with input left to parse."""
        return self._paused is not None

    def _hold(self, st: _Stream, part: memoryview, src: bytes) -> None:
        st.parts.append(part)
        st.received += len(part)
        if st.src is not src:
            st.src = src
            st.held += len(src)
            self._buffered += len(src)
            self._incomplete.add(st)

    def _reset(self, st: _Stream) -> None:
        self._buffered -= st.held
        st.parts = []
        st.received = 0
        st.held = 0
        st.src = None
        self._incomplete.discard(st)

    def _settle(self) -> None:
        """End of a feed with more than half of ``max_buffered`` held: copy out parts that
        keep much larger buffers alive, then check what is held against the limit."""
        for st in self._incomplete:
            if st.held > 2 * st.received + 4096:
                joined = b"".join(st.parts)
                st.parts = [memoryview(joined)]
                self._buffered -= st.held - len(joined)
                st.held = len(joined)
                st.src = joined
        if self._buffered > self.max_buffered:
            raise ChunkError(
                f"more than {self.max_buffered} bytes held for incomplete messages"
                f" ({len(self._incomplete)} of them, chunk size {self.chunk_size})"
            )

    def _complete(self, st: _Stream, csid: int, out: list[Message]) -> None:
        parts = st.parts
        payload = bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
        self._reset(st)
        type_id = st.type_id
        out.append(_new_message((type_id, st.timestamp, st.stream_id, csid, payload)))
        if type_id == SET_CHUNK_SIZE or type_id == ABORT:
            self._control(type_id, payload)

    def _control(self, type_id: int, payload: bytes) -> None:
        if len(payload) < 4:
            raise ChunkError(f"protocol control message {type_id} shorter than 4 bytes")
        value = _U32.unpack_from(payload, 0)[0] & 0x7FFFFFFF
        if type_id == SET_CHUNK_SIZE:
            if value == 0:
                raise ChunkError("Set Chunk Size of 0")
            self.chunk_size = min(value, MAX_CHUNK_SIZE)
        else:  # ABORT
            st = self._streams.get(value)
            if st is not None and st.received:
                self._reset(st)
                self.aborted += 1

    def feed(self, data: bytes) -> list[Message]:
        """Parse received bytes; return the messages they complete."""
        if type(data) is not bytes:
            data = bytes(data)
        self.bytes_received += len(data)
        out: list[Message] = []
        pos = 0
        if self._paused is not None:
            held, pos = self._paused
            self._paused = None
            data = held + data if data else held
        elif self._rest:
            data = self._rest + data
            self._rest = b""
        n = len(data)
        mv = memoryview(data)
        if self._left:
            st = self._cur
            assert st is not None
            take = self._left if self._left <= n - pos else n - pos
            self._hold(st, mv[pos : pos + take], data)
            self._left -= take
            pos += take
            if not self._left and st.received >= st.length:
                self._complete(st, self._cur_csid, out)
                if self.stop_after_command and st.type_id in _COMMANDS and pos < n:
                    self._paused = (data, pos)
                    if self._buffered > self.max_buffered >> 1:
                        self._settle()
                    return out
        streams = self._streams
        u32 = _U32.unpack_from
        new = tuple.__new__  # Message(...) without NamedTuple's Python-level __new__
        stop = self.stop_after_command
        while pos < n:
            b = data[pos]
            fmt = b >> 6
            csid = b & 0x3F
            hpos = pos + 1
            if csid < 2:
                if csid == 0:
                    if hpos + 1 > n:
                        break
                    csid = 64 + data[hpos]
                    hpos += 1
                else:
                    if hpos + 2 > n:
                        break
                    csid = 64 + data[hpos] + (data[hpos + 1] << 8)
                    hpos += 2
            st = streams.get(csid)
            if st is None:
                if fmt != 0:
                    raise ChunkError(
                        f"chunk type {fmt} on chunk stream {csid} without a preceding header"
                    )
                if len(streams) >= self.max_chunk_streams:
                    raise ChunkError(f"more than {self.max_chunk_streams} chunk streams")
                st = streams[csid] = _Stream()
            if fmt < 3:
                # Types 0-2 start with a 3-byte timestamp (type 0) or delta (1, 2); type 0
                # adds length, type id and stream id, type 1 length and type id.
                end = hpos + _HEADER_SIZE[fmt]
                if end > n:
                    break
                ts = u32(data, hpos - 1)[0] & 0xFFFFFF
                ext = -1
                if ts == 0xFFFFFF:
                    if end + 4 > n:
                        break
                    ts = ext = u32(data, end)[0]
                    end += 4
                if st.received:
                    self._drop_partial(st)
                if fmt < 2:
                    st.length = u32(data, hpos + 2)[0] & 0xFFFFFF
                    st.type_id = data[hpos + 6]
                    if fmt == 0:
                        st.stream_id = _U32LE.unpack_from(data, hpos + 7)[0]
                st.timestamp = ts if fmt == 0 else (st.timestamp + ts) & 0xFFFFFFFF
                st.delta = ts
                st.ext = ext
            else:
                end = hpos
                if st.ext >= 0:
                    # The extended timestamp is repeated on type-3 chunks by most encoders
                    # and omitted on continuations by some: take it when it matches.
                    if end + 4 > n:
                        break
                    if not st.received or u32(data, end)[0] == st.ext:
                        end += 4
                if not st.received:
                    st.timestamp = (st.timestamp + st.delta) & 0xFFFFFFFF
            length = st.length
            if not st.received:
                if length > self.max_message_size:
                    raise ChunkError(
                        f"message of {length} bytes on chunk stream {csid} exceeds the limit"
                        f" of {self.max_message_size}"
                    )
                if length == 0:
                    pos = end
                    self._complete(st, csid, out)
                    if stop and st.type_id in _COMMANDS:
                        break
                    continue
            want = length - st.received
            if want > self.chunk_size:
                want = self.chunk_size
            avail = n - end
            if avail >= want and want == length:
                # The whole message in one chunk (audio, commands): no parts, one copy.
                pos = end + want
                type_id = st.type_id
                out.append(new(Message, (type_id, st.timestamp, st.stream_id, csid, data[end:pos])))
                if type_id == SET_CHUNK_SIZE or type_id == ABORT:
                    self._control(type_id, data[end:pos])
                elif stop and type_id in _COMMANDS:
                    break
                continue
            if avail >= want:
                self._hold(st, mv[end : end + want], data)
                pos = end + want
                if st.received >= length:
                    self._complete(st, csid, out)
                    if stop and st.type_id in _COMMANDS:
                        break
            else:
                if avail:
                    self._hold(st, mv[end:n], data)
                self._cur = st
                self._cur_csid = csid
                self._left = want - avail
                pos = n
        if pos < n:
            if stop and out and out[-1][0] in _COMMANDS and self._left == 0:
                self._paused = (data, pos)
            else:
                self._rest = data[pos:]
        if self._buffered > self.max_buffered >> 1:
            self._settle()
        return out

    def _drop_partial(self, st: _Stream) -> None:
        """A new header on a chunk stream whose message is incomplete: drop the partial."""
        self._reset(st)
        self.aborted += 1


class ChunkWriter:
    """Frames messages into chunks of ``chunk_size`` (type 0 first, then type 3)."""

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size

    @staticmethod
    def _basic(fmt: int, csid: int) -> bytes:
        if 2 <= csid <= 63:
            return bytes(((fmt << 6) | csid,))
        if 64 <= csid <= 319:
            return bytes((fmt << 6, csid - 64))
        if 64 <= csid <= 65599:
            v = csid - 64
            return bytes(((fmt << 6) | 1, v & 0xFF, v >> 8))
        raise ValueError(f"chunk stream id {csid} out of range")

    def message(
        self,
        csid: int,
        type_id: int,
        timestamp: int,
        stream_id: int,
        payload: bytes | bytearray | memoryview,
    ) -> bytes:
        """The chunks of one message."""
        length = len(payload)
        if length > MAX_MESSAGE_SIZE:
            raise ValueError(f"message of {length} bytes is too long for RTMP")
        timestamp &= 0xFFFFFFFF
        ext = timestamp >= 0xFFFFFF
        ts_field = 0xFFFFFF if ext else timestamp
        header = (
            self._basic(0, csid)
            + _U32.pack(ts_field)[1:]
            + _U32.pack(length)[1:]
            + bytes((type_id,))
            + _U32LE.pack(stream_id)
        )
        ext_bytes = _U32.pack(timestamp) if ext else b""
        size = self.chunk_size
        if length <= size:
            return b"".join((header, ext_bytes, payload))
        cont = self._basic(3, csid) + ext_bytes
        view = memoryview(payload)
        parts: list[bytes | memoryview] = [header, ext_bytes, view[:size]]
        for off in range(size, length, size):
            parts.append(cont)
            parts.append(view[off : off + size])
        return b"".join(parts)


def set_chunk_size(size: int) -> bytes:
    """Payload of a Set Chunk Size message."""
    return _U32.pack(size & 0x7FFFFFFF)


def abort(csid: int) -> bytes:
    """Payload of an Abort message."""
    return _U32.pack(csid)


def ack(sequence: int) -> bytes:
    """Payload of an Acknowledgement (bytes received so far, 32-bit)."""
    return _U32.pack(sequence & 0xFFFFFFFF)


def window_ack_size(size: int) -> bytes:
    """Payload of a Window Acknowledgement Size message."""
    return _U32.pack(size)


def set_peer_bandwidth(size: int, limit_type: int = 2) -> bytes:
    """Payload of a Set Peer Bandwidth message (limit type 0 hard, 1 soft, 2 dynamic)."""
    return _U32.pack(size) + bytes((limit_type,))


def user_control(event: int, value: int, extra: int | None = None) -> bytes:
    """Payload of a User Control message (event type, 32-bit value, optional second)."""
    out = _U16.pack(event) + _U32.pack(value)
    if extra is not None:
        out += _U32.pack(extra)
    return out
