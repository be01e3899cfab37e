"""Snapshots: the latest keyframe of a stream as a JPEG, decoded with PyAV off the event loop.

Work happens only when somebody asks: the GOP cache's first access unit (the keyframe) is
depacketized (RFC 6184 / 7798), prefixed with the SDP's parameter sets when it lacks them,
decoded, and encoded as a JPEG in a small thread pool. The result is cached per GOP, so
every request until the next keyframe is served from memory, and concurrent requests for
the same GOP share one decode.

Offline streams get a placeholder JPEG (mid-grey with "CAMERA OFFLINE" written on it, the
size of the last-seen picture) or nothing (the HTTP layer answers 503), per
``[onvif] snapshot_offline``.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

from onvifcam.media import h264, h265, rtp
from onvifcam.media.stream import Stream

log = logging.getLogger(__name__)

MAX_PLACEHOLDER = (1920, 1080)


class SnapshotError(Exception):
    """The stream cannot give a picture right now (no keyframe yet, undecodable)."""


def _annexb_keyframe(codec: str, packets: list[bytes], fmtp: dict[str, str]) -> bytes:
    """Annex-B bytes of one access unit, with parameter sets from the SDP when missing."""
    payloads = []
    for p in packets:
        try:
            h = rtp.parse(p)
        except rtp.RtpError:
            payloads.append(None)
            continue
        payloads.append(p[h.payload_start : h.payload_end])
    if codec == "H264":
        nals = h264.depacketize(payloads)
        types = {n[0] & 0x1F for n in nals if n}
        if not {7, 8} <= types:
            sprop = fmtp.get("sprop-parameter-sets", "")
            try:
                nals = h264.parse_sprop_parameter_sets(sprop) + nals
            except ValueError:
                pass
        return h264.to_annexb(nals)
    if codec in ("H265", "HEVC"):
        nals = h265.depacketize(payloads)
        types = {(n[0] >> 1) & 0x3F for n in nals if len(n) > 1}
        if not {32, 33, 34} <= types:
            try:
                nals = h265.parse_sprop(fmtp) + nals
            except ValueError:
                pass
        return h264.to_annexb(nals)  # Annex-B framing is the same for H.265
    raise SnapshotError(f"snapshots of {codec} streams are not supported")


def _qscale(quality: int) -> int:
    return max(2, min(31, round(2 + (100 - quality) * 29 / 99)))


def encode_jpeg(frame: object, quality: int) -> bytes:
    """JPEG of a PyAV VideoFrame."""
    import av

    f = frame.reformat(format="yuvj420p")  # type: ignore[attr-defined]
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width = f.width
    enc.height = f.height
    enc.pix_fmt = "yuvj420p"
    enc.time_base = Fraction(1, 25)
    q = str(_qscale(quality))
    enc.options = {"qmin": q, "qmax": q}
    return b"".join(bytes(p) for p in [*enc.encode(f), *enc.encode(None)])


def decode_to_jpeg(codec: str, annexb: bytes, quality: int) -> bytes:
    """Decode one keyframe access unit and encode it as JPEG (runs in a worker thread)."""
    import av

    name = "h264" if codec == "H264" else "hevc"
    dec = av.CodecContext.create(name, "r")
    frames = []
    try:
        for pkt in [*dec.parse(annexb), *dec.parse(None)]:
            frames.extend(dec.decode(pkt))
        frames.extend(dec.decode(None))
    except av.error.FFmpegError as exc:
        raise SnapshotError(f"cannot decode the keyframe: {exc}") from None
    if not frames:
        raise SnapshotError("the keyframe decoded to no picture")
    try:
        return encode_jpeg(frames[0], quality)
    except av.error.FFmpegError as exc:
        raise SnapshotError(f"cannot encode the picture as JPEG: {exc}") from None


# --------------------------------------------------------------------------- placeholder

_FONT = {
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    "/": "00000 00001 00010 00100 01000 10000 00000",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    ":": "00000 01100 01100 00000 01100 01100 00000",
}


def placeholder_jpeg(width: int, height: int, lines: list[str], quality: int = 85) -> bytes:
    """A mid-grey JPEG with white block-letter text centred on it."""
    import av

    w = max(64, min(width, MAX_PLACEHOLDER[0])) & ~1
    h = max(64, min(height, MAX_PLACEHOLDER[1])) & ~1
    luma = bytearray(b"\x50" * (w * h))
    texts = [ln.upper()[:40] for ln in lines if ln]
    scale = max(1, min(w // (6 * max((len(t) for t in texts), default=1) + 6), h // 40))
    line_h = 9 * scale
    y0 = (h - line_h * len(texts)) // 2
    for i, text in enumerate(texts):
        x0 = (w - 6 * scale * len(text)) // 2
        for j, ch in enumerate(text):
            rows = _FONT.get(ch)
            if rows is None:
                continue
            for r, bits in enumerate(rows.split()):
                for c, bit in enumerate(bits):
                    if bit != "1":
                        continue
                    px = x0 + (6 * j + c) * scale
                    py = y0 + i * line_h + r * scale
                    for yy in range(py, min(py + scale, h)):
                        start = yy * w + max(px, 0)
                        end = yy * w + min(px + scale, w)
                        luma[start:end] = b"\xeb" * (end - start)
    frame = av.VideoFrame(w, h, "yuv420p")
    planes = frame.planes
    _fill(planes[0], bytes(luma), w, h)
    _fill(planes[1], b"\x80" * ((w // 2) * (h // 2)), w // 2, h // 2)
    _fill(planes[2], b"\x80" * ((w // 2) * (h // 2)), w // 2, h // 2)
    return encode_jpeg(frame, quality)


def _fill(plane: object, data: bytes, w: int, h: int) -> None:
    stride = plane.line_size  # type: ignore[attr-defined]
    if stride == w:
        plane.update(data)  # type: ignore[attr-defined]
        return
    padded = b"".join(data[r * w : (r + 1) * w] + b"\x00" * (stride - w) for r in range(h))
    plane.update(padded)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- service


class SnapshotService:
    """Per-GOP JPEG cache with one decode in flight per stream."""

    def __init__(self, quality: int = 85, workers: int = 2) -> None:
        self.quality = quality
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snapshot")
        self._cache: dict[str, tuple[bytes, bytes]] = {}
        self._inflight: dict[str, tuple[bytes, asyncio.Future[bytes]]] = {}
        self._placeholders: dict[tuple[int, int, str], bytes] = {}
        self.decodes = 0
        self.hits = 0

    async def jpeg(self, stream: Stream) -> bytes:
        """JPEG of the stream's latest keyframe; SnapshotError when there is none yet."""
        track = stream.video_track
        if track is None:
            raise SnapshotError("the stream has no video track")
        gop = stream.gop_snapshot()
        if not gop or not gop[0]:
            raise SnapshotError("no keyframe received yet")
        au = gop[0]
        key = stream.version.to_bytes(4, "big") + au[0][:12]
        cached = self._cache.get(stream.path)
        if cached is not None and cached[0] == key:
            self.hits += 1
            return cached[1]
        flight = self._inflight.get(stream.path)
        if flight is not None and flight[0] == key:
            return await asyncio.shield(flight[1])
        fmtp = track.media.fmtp.get(track.payload_type, {})
        annexb = _annexb_keyframe(track.codec.upper(), list(au), dict(fmtp))
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(
            self._pool, decode_to_jpeg, track.codec.upper(), annexb, self.quality
        )
        self._inflight[stream.path] = (key, fut)
        path = stream.path

        def finished(f: asyncio.Future[bytes]) -> None:
            # Runs even when every requester went away, so a GOP is still decoded only once.
            if self._inflight.get(path, (b"", None))[1] is f:
                del self._inflight[path]
            if not f.cancelled() and f.exception() is None:
                self.decodes += 1
                self._cache[path] = (key, f.result())

        fut.add_done_callback(finished)
        return await asyncio.shield(fut)

    async def placeholder(self, width: int, height: int, text: str) -> bytes:
        """The offline picture (cached per size and text)."""
        key = (width, height, text)
        data = self._placeholders.get(key)
        if data is None:
            loop = asyncio.get_running_loop()
            data = await loop.run_in_executor(
                self._pool, placeholder_jpeg, width, height, text.split("\n"), self.quality
            )
            if len(self._placeholders) > 64:
                self._placeholders.clear()
            self._placeholders[key] = data
        return data

    def forget(self, path: str) -> None:
        """Drop a stream's cached JPEG (stream gone)."""
        self._cache.pop(path, None)

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
