"""Minimal RTP (RFC 3550) header handling for the relay hot path."""

from __future__ import annotations

import struct
from dataclasses import dataclass

_HDR = struct.Struct("!BBHII")
HEADER = _HDR


class RtpError(ValueError):
    """A packet that is not valid RTP."""


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """The fixed RTP header fields plus where the payload starts and ends."""

    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload_start: int
    payload_end: int


def parse(packet: bytes | bytearray | memoryview) -> RtpHeader:
    """Parse an RTP header; raise RtpError naming what is wrong."""
    n = len(packet)
    if n < 12:
        raise RtpError(f"RTP packet of {n} bytes is shorter than the 12-byte header")
    b0, b1, seq, ts, ssrc = _HDR.unpack_from(packet, 0)
    if b0 >> 6 != 2:
        raise RtpError(f"RTP version {b0 >> 6}, expected 2")
    start = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if n < start + 4:
            raise RtpError("RTP header extension truncated")
        start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
    end = n
    if b0 & 0x20:
        pad = packet[-1]
        if pad == 0:
            raise RtpError("RTP padding length 0")
        end -= pad
    if start > end:
        raise RtpError(f"RTP header ({start} bytes) is longer than the packet ({n} bytes)")
    return RtpHeader(bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, start, end)


def build(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, marker: bool
) -> bytes:
    """Build one RTP packet with a fixed 12-byte header."""
    return (
        _HDR.pack(
            0x80,
            (0x80 if marker else 0) | payload_type,
            sequence & 0xFFFF,
            timestamp & 0xFFFFFFFF,
            ssrc,
        )
        + payload
    )
