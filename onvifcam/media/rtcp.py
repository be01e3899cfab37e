"""RTCP (RFC 3550) compound packet parsing and SR/RR/SDES/BYE building, plus NTP time.

Pure functions on bytes, no I/O. :func:`parse_compound` raises only :class:`RtcpError`.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "PT_APP",
    "PT_BYE",
    "PT_RR",
    "PT_SDES",
    "PT_SR",
    "Bye",
    "Other",
    "ReceiverReport",
    "ReportBlock",
    "RtcpError",
    "SenderReport",
    "build_bye",
    "build_receiver_report",
    "build_sender_report",
    "ntp_from_unix",
    "ntp_middle32",
    "ntp_now",
    "parse_compound",
    "unix_from_ntp",
]

PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_APP = 204

NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
_U64 = (1 << 64) - 1

_REPORT = struct.Struct("!IIIIII")
_SENDER_INFO = struct.Struct("!IQIII")


class RtcpError(ValueError):
    """Malformed RTCP data."""


@dataclass(frozen=True)
class ReportBlock:
    """One reception report block."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int  # signed 24-bit
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int


@dataclass(frozen=True)
class SenderReport:
    """An SR: the NTP/RTP timestamp pair readers use for A/V sync."""

    ssrc: int
    ntp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True)
class ReceiverReport:
    """An RR."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True)
class Bye:
    """A BYE with its SSRC/CSRC list and optional reason."""

    ssrcs: tuple[int, ...]
    reason: str | None = None


@dataclass(frozen=True)
class Other:
    """Any other RTCP packet (SDES, APP, XR, feedback...): type, count field and body."""

    pt: int
    body: bytes
    count: int = 0


def _report_blocks(body: bytes, offset: int, count: int, pt: int) -> tuple[ReportBlock, ...]:
    if offset + 24 * count > len(body):
        raise RtcpError(f"RTCP {pt} packet too short for {count} report blocks")
    blocks = []
    for i in range(count):
        ssrc, lost, seq, jitter, lsr, dlsr = _REPORT.unpack_from(body, offset + 24 * i)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        blocks.append(ReportBlock(ssrc, lost >> 24, cumulative, seq, jitter, lsr, dlsr))
    return tuple(blocks)


def parse_compound(data: bytes | memoryview) -> list[object]:
    """Parse a (compound) RTCP packet into SenderReport / ReceiverReport / Bye / Other."""
    buf = bytes(data)
    if not buf:
        raise RtcpError("empty RTCP packet")
    out: list[object] = []
    pos = 0
    while pos < len(buf):
        if pos + 4 > len(buf):
            raise RtcpError(f"RTCP header truncated at offset {pos}")
        first, pt, words = struct.unpack_from("!BBH", buf, pos)
        if first >> 6 != 2:
            raise RtcpError(f"RTCP version {first >> 6} at offset {pos} (expected 2)")
        size = 4 * (words + 1)
        if pos + size > len(buf):
            raise RtcpError(f"RTCP packet at offset {pos} claims {size} bytes, overruns buffer")
        body = buf[pos + 4 : pos + size]
        if first & 0x20:  # padding
            pad = body[-1] if body else 0
            if pad == 0 or pad > len(body):
                raise RtcpError(f"RTCP padding of {pad} bytes invalid at offset {pos}")
            body = body[:-pad]
        count = first & 0x1F
        if pt == PT_SR:
            if len(body) < 24:
                raise RtcpError("RTCP SR too short for sender info")
            ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body, 0)
            reports = _report_blocks(body, 24, count, pt)
            out.append(SenderReport(ssrc, ntp, rtp_ts, packets, octets, reports))
        elif pt == PT_RR:
            if len(body) < 4:
                raise RtcpError("RTCP RR too short for its SSRC")
            (ssrc,) = struct.unpack_from("!I", body, 0)
            out.append(ReceiverReport(ssrc, _report_blocks(body, 4, count, pt)))
        elif pt == PT_BYE:
            if len(body) < 4 * count:
                raise RtcpError(f"RTCP BYE too short for {count} SSRCs")
            ssrcs = struct.unpack_from(f"!{count}I", body, 0)
            reason = None
            rest = body[4 * count :]
            if rest:
                length = rest[0]
                if 1 + length > len(rest):
                    raise RtcpError("RTCP BYE reason overruns the packet")
                reason = rest[1 : 1 + length].decode("utf-8", errors="replace")
            out.append(Bye(tuple(ssrcs), reason))
        else:
            out.append(Other(pt, body, count))
        pos += size
    return out


def _header(count: int, pt: int, body_len: int) -> bytes:
    return struct.pack("!BBH", 0x80 | count, pt, body_len // 4)


def _sdes_cname(ssrc: int, cname: str) -> bytes:
    text = cname.encode("utf-8")[:255]
    chunk = struct.pack("!IBB", ssrc, 1, len(text)) + text + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return _header(1, PT_SDES, len(chunk)) + chunk


def _pack_reports(reports: Sequence[ReportBlock]) -> bytes:
    if len(reports) > 31:
        raise RtcpError("at most 31 report blocks per RTCP packet")
    return b"".join(
        _REPORT.pack(
            r.ssrc,
            ((r.fraction_lost & 0xFF) << 24) | (r.cumulative_lost & 0xFFFFFF),
            r.highest_seq,
            r.jitter,
            r.lsr,
            r.dlsr,
        )
        for r in reports
    )


def build_sender_report(sr: SenderReport, cname: str | None = None) -> bytes:
    """An SR (with ``sr.reports``), followed by an SDES CNAME packet when ``cname``."""
    body = _SENDER_INFO.pack(
        sr.ssrc & 0xFFFFFFFF,
        sr.ntp & _U64,
        sr.rtp_timestamp & 0xFFFFFFFF,
        sr.packet_count & 0xFFFFFFFF,
        sr.octet_count & 0xFFFFFFFF,
    ) + _pack_reports(sr.reports)
    packet = _header(len(sr.reports), PT_SR, len(body)) + body
    if cname is not None:
        packet += _sdes_cname(sr.ssrc & 0xFFFFFFFF, cname)
    return packet


def build_receiver_report(
    ssrc: int, reports: Sequence[ReportBlock] = (), cname: str | None = None
) -> bytes:
    """An RR (empty unless ``reports``), followed by SDES CNAME when ``cname``."""
    body = struct.pack("!I", ssrc & 0xFFFFFFFF) + _pack_reports(reports)
    packet = _header(len(reports), PT_RR, len(body)) + body
    if cname is not None:
        packet += _sdes_cname(ssrc & 0xFFFFFFFF, cname)
    return packet


def build_bye(ssrc: int) -> bytes:
    """A BYE for one SSRC."""
    return _header(1, PT_BYE, 4) + struct.pack("!I", ssrc & 0xFFFFFFFF)


def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) for a Unix time."""
    seconds = math.floor(t)
    fraction = int((t - seconds) * (1 << 32))
    return (((seconds + NTP_UNIX_OFFSET) << 32) | min(fraction, 0xFFFFFFFF)) & _U64


def ntp_now() -> int:
    """The current wall-clock time as a 64-bit NTP timestamp."""
    return ntp_from_unix(time.time())


def unix_from_ntp(ntp: int) -> float:
    """Unix time for a 64-bit NTP timestamp."""
    return (ntp >> 32) - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / (1 << 32)


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (the LSR field of report blocks)."""
    return (ntp >> 16) & 0xFFFFFFFF
