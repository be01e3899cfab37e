"""SRT packet codec (draft-sharabayko-srt section 3): bytes <-> packets, nothing else.

Every SRT packet starts with a 16-byte header; the first bit tells a data packet (0) from a
control packet (1). :func:`parse` turns one UDP datagram into a :class:`DataPacket` or a
:class:`ControlPacket` and raises :class:`PacketError` (and nothing else) for anything that
is not a well-formed SRT packet. The handshake CIF, its extension blocks (HSREQ/HSRSP, SID,
congestion), loss lists and ACKs have their own small parsers and builders here; the key
material message lives in :mod:`onvifcam.srt.crypto`.

Two SRT oddities handled here: the Stream ID and congestion strings travel as 32-bit words
whose bytes are reversed (libsrt stores the string in host-order words, then swaps every
word to network order), and so does the peer IP address in the handshake.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "HEADER_SIZE",
    "MAX_DATAGRAM",
    "SEQ_MASK",
    "ControlPacket",
    "ControlType",
    "DataPacket",
    "ExtType",
    "Handshake",
    "HsExt",
    "HsType",
    "PacketError",
    "build_ack",
    "build_control",
    "build_data",
    "decode_loss_list",
    "decode_words",
    "encode_loss_list",
    "encode_loss_lists",
    "encode_words",
    "parse",
    "peer_ip_field",
    "seq_add",
    "seq_diff",
]

HEADER_SIZE = 16
#: The largest SRT packet a caller may send: libsrt's MSS is at most 1500 bytes, less the
#: 20-byte IPv4 and 8-byte UDP headers.
MAX_DATAGRAM = 1500 - 28
SEQ_MASK = 0x7FFFFFFF
_SEQ_HALF = 1 << 30
MSGNO_MASK = 0x03FFFFFF

_HEADER = struct.Struct("!IIII")
_WORD = struct.Struct("!I")


class PacketError(ValueError):
    """A datagram that is not a well-formed SRT packet; ``str()`` says why."""


class ControlType(enum.IntEnum):
    """Control packet types (draft section 3.2)."""

    HANDSHAKE = 0x0000
    KEEPALIVE = 0x0001
    ACK = 0x0002
    NAK = 0x0003
    CONGESTION = 0x0004
    SHUTDOWN = 0x0005
    ACKACK = 0x0006
    DROPREQ = 0x0007
    PEERERROR = 0x0008
    USER = 0x7FFF


class HsType(enum.IntEnum):
    """Handshake types; a rejection is ``REJECT_BASE + reason`` instead."""

    DONE = 0xFFFFFFFD
    AGREEMENT = 0xFFFFFFFE
    CONCLUSION = 0xFFFFFFFF
    WAVEAHAND = 0x00000000
    INDUCTION = 0x00000001


REJECT_BASE = 1000  # a handshake type of 1000 + code carries a rejection reason


class ExtType(enum.IntEnum):
    """Handshake extension block types (also USER control subtypes for KM refresh)."""

    HSREQ = 1
    HSRSP = 2
    KMREQ = 3
    KMRSP = 4
    SID = 5
    CONGESTION = 6
    FILTER = 7
    GROUP = 8


# Extension field flags of a conclusion handshake.
EXT_HSREQ = 0x1
EXT_KMREQ = 0x2
EXT_CONFIG = 0x4
#: What the listener puts in the extension field of its induction response.
SRT_MAGIC = 0x4A17

# HSREQ/HSRSP flags.
FLAG_TSBPDSND = 0x01
FLAG_TSBPDRCV = 0x02
FLAG_CRYPT = 0x04
FLAG_TLPKTDROP = 0x08
FLAG_NAKREPORT = 0x10
FLAG_REXMITFLG = 0x20
FLAG_STREAM = 0x40
FLAG_FILTERCAP = 0x80

# Data packet message word.
PP_FIRST = 0b10
PP_LAST = 0b01
PP_SOLO = 0b11
PP_MIDDLE = 0b00
KK_NONE = 0
KK_EVEN = 1
KK_ODD = 2


def seq_diff(a: int, b: int) -> int:
    """``a - b`` on the 31-bit sequence circle, in [-2^30, 2^30)."""
    return ((a - b + _SEQ_HALF) & SEQ_MASK) - _SEQ_HALF


def seq_add(a: int, n: int) -> int:
    """``a + n`` on the 31-bit sequence circle."""
    return (a + n) & SEQ_MASK


# ---------------------------------------------------------------------------- packets
@dataclass(slots=True)
class DataPacket:
    """A data packet; ``msg`` is the raw PP|O|KK|R|msgno word."""

    seq: int
    msg: int
    timestamp: int
    dst: int
    payload: bytes

    @property
    def position(self) -> int:
        """PP: first (0b10), middle (0b00), last (0b01) or solo (0b11) packet of a message."""
        return self.msg >> 30

    @property
    def in_order(self) -> bool:
        """O: the message must be delivered in order."""
        return bool(self.msg & 0x20000000)

    @property
    def key(self) -> int:
        """KK: 0 clear, 1 even key, 2 odd key."""
        return (self.msg >> 27) & 0b11

    @property
    def retransmitted(self) -> bool:
        """R: this is a retransmission."""
        return bool(self.msg & 0x04000000)

    @property
    def msgno(self) -> int:
        """The 26-bit message number."""
        return self.msg & MSGNO_MASK


@dataclass(slots=True)
class ControlPacket:
    """A control packet: type, subtype, type-specific word and the CIF bytes."""

    type: int
    subtype: int
    info: int
    timestamp: int
    dst: int
    cif: bytes


def parse(datagram: bytes) -> DataPacket | ControlPacket:
    """One UDP datagram -> packet; raises :class:`PacketError` for anything malformed."""
    n = len(datagram)
    if n < HEADER_SIZE:
        raise PacketError(f"datagram of {n} bytes is shorter than the 16-byte SRT header")
    if n > MAX_DATAGRAM:
        raise PacketError(f"datagram of {n} bytes exceeds the SRT maximum of {MAX_DATAGRAM}")
    w0, w1, ts, dst = _HEADER.unpack_from(datagram)
    if w0 & 0x80000000:
        ctype = (w0 >> 16) & 0x7FFF
        return ControlPacket(ctype, w0 & 0xFFFF, w1, ts, dst, bytes(datagram[HEADER_SIZE:]))
    if n == HEADER_SIZE:
        raise PacketError("data packet without payload")
    return DataPacket(w0, w1, ts, dst, bytes(datagram[HEADER_SIZE:]))


def build_control(
    ctype: int, timestamp: int, dst: int, cif: bytes = b"", *, subtype: int = 0, info: int = 0
) -> bytes:
    """A control packet's bytes."""
    head = _HEADER.pack(
        0x80000000 | (ctype & 0x7FFF) << 16 | (subtype & 0xFFFF),
        info & 0xFFFFFFFF,
        timestamp & 0xFFFFFFFF,
        dst & 0xFFFFFFFF,
    )
    return head + cif


def build_data(
    seq: int,
    payload: bytes,
    timestamp: int,
    dst: int,
    *,
    msgno: int = 1,
    position: int = PP_SOLO,
    in_order: bool = False,
    key: int = KK_NONE,
    retransmitted: bool = False,
) -> bytes:
    """A data packet's bytes (used by the test caller and benchmarks)."""
    msg = (
        (position & 0b11) << 30
        | int(in_order) << 29
        | (key & 0b11) << 27
        | int(retransmitted) << 26
        | (msgno & MSGNO_MASK)
    )
    return _HEADER.pack(seq & SEQ_MASK, msg, timestamp & 0xFFFFFFFF, dst & 0xFFFFFFFF) + payload


# ---------------------------------------------------------------------------- handshake
_HS = struct.Struct("!IHHIIIIII16s")
HS_SIZE = _HS.size  # 48
MAX_EXTENSIONS = 16


@dataclass(frozen=True)
class Handshake:
    """The handshake CIF (draft section 3.2.1) with its extension blocks, raw."""

    version: int
    encryption: int
    extension: int
    isn: int
    mtu: int
    flow_window: int
    hs_type: int
    socket_id: int
    cookie: int
    peer_ip: bytes = bytes(16)
    extensions: tuple[tuple[int, bytes], ...] = ()

    @classmethod
    def parse(cls, cif: bytes) -> Handshake:
        """The CIF of a HANDSHAKE control packet; raises :class:`PacketError`."""
        if len(cif) < HS_SIZE:
            raise PacketError(f"handshake of {len(cif)} bytes is shorter than {HS_SIZE}")
        fields = _HS.unpack_from(cif)
        exts: list[tuple[int, bytes]] = []
        pos = HS_SIZE
        while pos < len(cif):
            if len(cif) - pos < 4:
                raise PacketError("truncated handshake extension header")
            if len(exts) >= MAX_EXTENSIONS:
                raise PacketError(f"more than {MAX_EXTENSIONS} handshake extensions")
            etype, words = struct.unpack_from("!HH", cif, pos)
            pos += 4
            end = pos + 4 * words
            if end > len(cif):
                raise PacketError(
                    f"handshake extension {etype} claims {4 * words} bytes, "
                    f"{len(cif) - pos} are left"
                )
            exts.append((etype, bytes(cif[pos:end])))
            pos = end
        return cls(*fields[:9], peer_ip=fields[9], extensions=tuple(exts))

    def pack(self) -> bytes:
        """The CIF bytes."""
        out = [
            _HS.pack(
                self.version,
                self.encryption,
                self.extension,
                self.isn & SEQ_MASK,
                self.mtu,
                self.flow_window,
                self.hs_type & 0xFFFFFFFF,
                self.socket_id,
                self.cookie & 0xFFFFFFFF,
                self.peer_ip,
            )
        ]
        for etype, content in self.extensions:
            if len(content) % 4:
                content = content + bytes(4 - len(content) % 4)
            out.append(struct.pack("!HH", etype, len(content) // 4))
            out.append(content)
        return b"".join(out)

    def ext(self, etype: int) -> bytes | None:
        """The content of the first extension block of ``etype``, if any."""
        for t, content in self.extensions:
            if t == etype:
                return content
        return None


def peer_ip_field(host: str) -> bytes:
    """The 16-byte peer address field as libsrt writes it (each 32-bit word reversed)."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return bytes(16)
    raw = addr.packed if addr.version == 6 else addr.packed + bytes(12)
    return encode_words_raw(raw)


_HSEXT = struct.Struct("!IIHH")


@dataclass(frozen=True)
class HsExt:
    """HSREQ / HSRSP content: SRT version, flags, receiver and sender TSBPD delays (ms)."""

    version: int
    flags: int
    recv_delay: int
    send_delay: int

    @classmethod
    def parse(cls, content: bytes) -> HsExt:
        """12 bytes of an HSREQ/HSRSP block; raises :class:`PacketError`."""
        if len(content) < 12:
            raise PacketError(f"HSREQ of {len(content)} bytes, 12 expected")
        return cls(*_HSEXT.unpack_from(content))

    def pack(self) -> bytes:
        """The 12 content bytes."""
        return _HSEXT.pack(self.version, self.flags, self.recv_delay, self.send_delay)


def encode_words_raw(raw: bytes) -> bytes:
    """Reverse the bytes of every 32-bit word (zero-padded to a multiple of 4)."""
    if len(raw) % 4:
        raw = raw + bytes(4 - len(raw) % 4)
    return b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))


def encode_words(text: str) -> bytes:
    """A Stream ID / congestion string as it travels in a handshake extension."""
    return encode_words_raw(text.encode("utf-8"))


def decode_words(content: bytes) -> str:
    """The string of a SID / congestion block: un-reverse the words, drop the NUL padding.

    Raises :class:`PacketError` when the bytes are not UTF-8.
    """
    raw = encode_words_raw(content).rstrip(b"\x00")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PacketError(f"string is not UTF-8 ({exc.reason} at byte {exc.start})") from None


# ---------------------------------------------------------------------------- ACK / NAK
_ACK_FULL = struct.Struct("!IIIIIII")


def build_ack(
    timestamp: int,
    dst: int,
    ack_no: int,
    last_seq: int,
    *,
    rtt: int = 0,
    rtt_var: int = 0,
    buffer: int = 0,
    pkt_rate: int = 0,
    capacity: int = 0,
    byte_rate: int = 0,
    light: bool = False,
) -> bytes:
    """A full ACK (all CIF fields) or a light ACK (the sequence number only, number 0)."""
    if light:
        return build_control(ControlType.ACK, timestamp, dst, _WORD.pack(last_seq & SEQ_MASK))
    cif = _ACK_FULL.pack(
        last_seq & SEQ_MASK,
        rtt & 0xFFFFFFFF,
        rtt_var & 0xFFFFFFFF,
        max(0, buffer) & 0xFFFFFFFF,
        pkt_rate & 0xFFFFFFFF,
        capacity & 0xFFFFFFFF,
        byte_rate & 0xFFFFFFFF,
    )
    return build_control(ControlType.ACK, timestamp, dst, cif, info=ack_no)


def encode_loss_list(
    ranges: Iterable[tuple[int, int]], max_bytes: int = MAX_DATAGRAM - 16
) -> bytes:
    """Loss ranges (first, last inclusive) -> NAK CIF, cut to ``max_bytes``."""
    lists = encode_loss_lists(ranges, max_bytes)
    return lists[0] if lists else b""


def encode_loss_lists(
    ranges: Iterable[tuple[int, int]], max_bytes: int = MAX_DATAGRAM - 16
) -> list[bytes]:
    """Loss ranges -> as many NAK CIFs of at most ``max_bytes`` as they need."""
    out: list[bytes] = []
    cur: list[bytes] = []
    size = 0
    for first, last in ranges:
        if first == last:
            item = _WORD.pack(first & SEQ_MASK)
        else:
            item = _WORD.pack(0x80000000 | (first & SEQ_MASK)) + _WORD.pack(last & SEQ_MASK)
        if size + len(item) > max_bytes and cur:
            out.append(b"".join(cur))
            cur, size = [], 0
        cur.append(item)
        size += len(item)
    if cur:
        out.append(b"".join(cur))
    return out


def decode_loss_list(cif: bytes, max_items: int = 4096) -> list[tuple[int, int]]:
    """NAK CIF -> loss ranges; raises :class:`PacketError` for a malformed list."""
    if len(cif) % 4:
        raise PacketError(f"loss list of {len(cif)} bytes is not whole words")
    words = struct.unpack(f"!{len(cif) // 4}I", cif)
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w & 0x80000000:
            if i + 1 >= len(words):
                raise PacketError("loss range without its last sequence number")
            out.append((w & SEQ_MASK, words[i + 1] & SEQ_MASK))
            i += 2
        else:
            out.append((w, w))
            i += 1
        if len(out) > max_items:
            raise PacketError(f"loss list longer than {max_items} ranges")
    return out


def seq_ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive sequence numbers (in circle order) -> (first, last) ranges."""
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and seq_add(out[-1][1], 1) == s:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out
