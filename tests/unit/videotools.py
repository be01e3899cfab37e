"""Shared helpers for the codec tests: real encoder output via PyAV, and bit writing."""

from __future__ import annotations

import io
from fractions import Fraction
from functools import cache

import av
import numpy as np

X265_QUIET = "log-level=error"


@cache
def encode(
    codec: str,
    width: int,
    height: int,
    frames: int = 12,
    pix_fmt: str = "yuv420p",
    rate: Fraction = Fraction(25),
    params: str = "keyint=10",
    noise: bool = False,
    profile: str | None = None,
) -> tuple[bytes, ...]:
    """Encode frames with libx264 or libx265; one Annex-B packet per access unit."""
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
    ctx.time_base = 1 / rate
    ctx.framerate = rate
    if codec == "libx265":
        options = {"x265-params": f"{X265_QUIET}:{params}" if params else X265_QUIET}
    else:
        options = {"x264-params": params}
    if profile:
        options["profile"] = profile
    ctx.options = options
    rng = np.random.default_rng(2 if codec == "libx265" else 1)
    out: list[bytes] = []
    for i in range(frames):
        if noise:
            arr = rng.integers(0, 256, (height * 3 // 2, width), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(arr, format="yuv420p")
        else:
            frame = av.VideoFrame(width, height, pix_fmt)
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return tuple(out)


def mp4_config_record(codec: str) -> tuple[bytes, bytes]:
    """The avcC/hvcC record FFmpeg's MP4 muxer writes for a short stream, and the encoder's
    Annex-B extradata (parameter sets) of the same stream."""
    options = {"x265-params": X265_QUIET} if codec == "libx265" else {}
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream(codec, rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame(320, 240, "yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        extradata = bytes(stream.codec_context.extradata or b"")
    data = buf.getvalue()
    box = b"hvcC" if codec == "libx265" else b"avcC"
    at = data.find(box)
    record = data[at + 4 : at - 4 + int.from_bytes(data[at - 4 : at], "big")]
    return record, extradata


def decode(codec: str, annexb: bytes) -> tuple[list[av.VideoFrame], av.CodecContext]:
    """Decode an Annex-B byte stream to the end (the parser flushed with None)."""
    ctx = av.CodecContext.create(codec, "r")
    frames: list[av.VideoFrame] = []
    for packet in [*ctx.parse(annexb), *ctx.parse(None)]:
        frames += ctx.decode(packet)
    frames += ctx.decode(None)
    return frames, ctx


class BitWriter:
    """Minimal MSB-first bit writer with exp-Golomb codes, for synthetic parameter sets."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> None:
        self.bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]

    def ue(self, value: int) -> None:
        value += 1
        self.u(value.bit_length() - 1, 0)
        self.u(value.bit_length(), value)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        """The bits with the RBSP stop bit and alignment zeros."""
        return from_bits([*self.bits, 1])


def to_bits(data: bytes) -> list[int]:
    """Bytes as a list of bits, MSB first."""
    return [(b >> (7 - i)) & 1 for b in data for i in range(8)]


def from_bits(bits: list[int]) -> bytes:
    """Bits (zero-padded to a byte) as bytes."""
    bits = bits + [0] * (-len(bits) % 8)
    return int("".join(map(str, bits)), 2).to_bytes(len(bits) // 8, "big")


def escape(rbsp: bytes) -> bytes:
    """Insert emulation-prevention bytes (00 00 0x -> 00 00 03 0x for x <= 3)."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)
