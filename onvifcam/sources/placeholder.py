"""Offline placeholder: what a camera's readers get while it has no publisher.

A :class:`PlaceholderSource` stands in for the publisher of a camera's main path (the stream
treats it as a placeholder: not online, no listeners told, replaced by any real publisher
without a conflict). Its picture (mid-grey, the camera name, "OFFLINE", the URL to push to)
is encoded once per camera, the first time somebody reads it, as one second of H.264 at
5 fps (an IDR and four small P-frames) that is replayed in a loop while read; with no
reader nothing is sent. Its SDP's parameter sets come from a per-size cache (they depend only
on the encoder settings), so a reader can DESCRIBE before any picture was encoded.

When a real publisher arrives, readers carry on without reconnecting if its media is
compatible with the placeholder's: H.264 video, plus AAC at the same rate when the camera's
last publisher had AAC (the placeholder then sends silence in that format): the stream keeps
SSRC, sequence numbers and timestamps continuous, the new publisher starts on an IDR and its
parameter sets are sent in front of it. Other layouts (H.265, another audio format or track
count) close the readers so they DESCRIBE again and get the real SDP.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from onvifcam.aio import cancel_and_wait
from onvifcam.media import h264
from onvifcam.media.packetizer import AAC_FRAME_SAMPLES, AacSpec, Packetizer, TrackSpec, VideoSpec
from onvifcam.media.stream import Stream
from onvifcam.sources.testpattern import EncodedUnit, H264Encoder, _glyph

log = logging.getLogger(__name__)

FPS = 5.0
MAX_SIZE = (1920, 1080)
_BITRATE = 300  # kbit/s: the P-frames are empty, the IDR is the only real cost


def fit_size(width: int, height: int) -> tuple[int, int]:
    """An even size within 64x64..1920x1080 (the camera's last known size, bounded)."""
    w = max(64, min(width or MAX_SIZE[0], MAX_SIZE[0])) & ~1
    h = max(64, min(height or MAX_SIZE[1], MAX_SIZE[1])) & ~1
    return w, h


def render(width: int, height: int, lines: list[str]) -> np.ndarray:
    """The placeholder picture as a ``(height * 3 // 2, width)`` yuv420p array: white block
    letters (the 5x7 font has letters, digits and ``-._/:``) centred on mid-grey."""
    buf = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    y = buf[:height]
    y[:] = 0x50
    texts = [ln for ln in lines if ln]
    longest = max((len(t) for t in texts), default=1)
    scale = max(1, min(width // (6 * longest + 6), height // (12 * max(1, len(texts)))))
    line_h = 10 * scale
    top = (height - line_h * len(texts)) // 2
    for i, text in enumerate(texts):
        cols = min(len(text), (width - scale) // (6 * scale))
        x = (width - 6 * scale * cols) // 2
        for ch in text[:cols]:
            g = _glyph(ch, scale)
            y[top + i * line_h : top + i * line_h + g.shape[0], x : x + g.shape[1]][g] = 235
            x += 6 * scale
    return buf


@dataclass(frozen=True)
class Silence:
    """Silent AAC: the AudioSpecificConfig and one raw frame (1024 samples) to repeat."""

    config: bytes
    frame: bytes
    sample_rate: int
    channels: int


def silent_aac(sample_rate: int, channels: int) -> Silence:
    """Encode AAC-LC silence once (blocking)."""
    import av

    layout = "mono" if channels == 1 else "stereo"
    ctx = av.CodecContext.create("aac", "w")
    ctx.sample_rate, ctx.layout, ctx.format = sample_rate, layout, "fltp"
    ctx.time_base = Fraction(1, sample_rate)
    ctx.open()
    frames: list[bytes] = []
    for i in range(4):
        f = av.AudioFrame(format="fltp", layout=layout, samples=1024)
        for plane in f.planes:
            plane.update(bytes(plane.buffer_size))
        f.sample_rate, f.pts = sample_rate, i * 1024
        frames += [bytes(p) for p in ctx.encode(f)]
    return Silence(bytes(ctx.extradata or b""), frames[-1], sample_rate, 1 if channels == 1 else 2)


def parameter_sets(width: int, height: int) -> list[bytes]:
    """SPS and PPS of the placeholder encoder at this size (blocking)."""
    enc = H264Encoder(width, height, FPS, _BITRATE)
    units = enc.encode_array(render(width, height, []), keyframe=True)
    enc.close()
    return [n for u in units for n in u.nals if n and n[0] & 0x1F in (h264.NAL_SPS, h264.NAL_PPS)]


def encode_loop(width: int, height: int, lines: list[str]) -> list[EncodedUnit]:
    """One second of the placeholder: an IDR then all-skip P-frames (blocking)."""
    enc = H264Encoder(width, height, FPS, _BITRATE)
    arr = render(width, height, lines)
    units = [u for i in range(int(FPS)) for u in enc.encode_array(arr, keyframe=i == 0)]
    enc.close()
    return units


class PlaceholderSource:
    """The offline picture of one camera, published on its path while it has no publisher."""

    placeholder = True  # see onvifcam.media.stream.Publisher

    def __init__(
        self,
        stream: Stream,
        executor: Executor,
        *,
        lines: list[str],
        width: int,
        height: int,
        params: list[bytes],
        audio: Silence | None = None,
    ) -> None:
        self.stream = stream
        self.audio = audio
        self.executor = executor
        self.lines = lines
        self.width, self.height = width, height
        self.params = params
        self.description = f"offline placeholder {width}x{height}"
        self._packetizer = Packetizer(stream.on_rtp, name=stream.path, time_base=Fraction(1, 90000))
        self._units: list[EncodedUnit] | None = None
        self._task: asyncio.Task[None] | None = None
        self.frames = 0
        self.encodes = 0

    @property
    def active(self) -> bool:
        """True while published on its stream."""
        return self.stream.publisher is self

    def publish(self) -> None:
        """Take the stream's publisher slot (it must be free) and start serving readers."""
        specs: list[TrackSpec] = [
            VideoSpec("H264", list(self.params), self.width, self.height, FPS)
        ]
        a = self.audio
        if a is not None:
            specs.append(AacSpec(a.config, a.sample_rate, a.channels))
        self.stream.publish(self, self._packetizer.configure(specs))
        self._task = asyncio.create_task(self._run(), name=f"placeholder-{self.stream.path}")

    def kick(self, reason: str) -> None:
        """A real publisher took the stream: stop sending."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def stop(self) -> None:
        """Stop and give the stream's slot back."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self.stream.unpublish(self, "placeholder stopped")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / FPS
        origin = loop.time()
        i = 0
        samples = -1  # audio samples sent since reading started (-1: not yet)
        next_frame = origin
        try:
            while True:
                if not self.stream.readers:
                    i = 0  # the next reader starts on the IDR
                    await asyncio.sleep(0.2)
                    continue
                if self._units is None:
                    self._units = await loop.run_in_executor(
                        self.executor, encode_loop, self.width, self.height, self.lines
                    )
                    self.encodes += 1
                    next_frame = loop.time()
                if i == 0:
                    next_frame = loop.time()
                    samples = -1
                u = self._units[i % len(self._units)]
                elapsed = loop.time() - origin
                pts = round(elapsed * 90000)
                self._packetizer.on_access_unit(0, pts, pts, u.nals, u.keyframe)
                a = self.audio
                if a is not None:
                    if samples < 0:
                        samples = int(elapsed * a.sample_rate)
                    n = (int((elapsed + 1.0 / FPS) * a.sample_rate) - samples) // AAC_FRAME_SAMPLES
                    if n > 0:
                        apts = samples * 90000 // a.sample_rate
                        self._packetizer.on_access_unit(1, apts, apts, [a.frame] * n)
                        samples += n * AAC_FRAME_SAMPLES
                self.frames += 1
                i += 1
                next_frame += period
                await asyncio.sleep(max(0.0, next_frame - loop.time()))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("placeholder %s failed; readers get nothing", self.stream.path)


class Placeholders:
    """Keeps a placeholder on every camera path (``offline = "placeholder"``) that has no
    publisher: at start, when a camera is added and when a publisher leaves."""

    def __init__(
        self,
        streams: Any,
        executor: Executor,
        push_urls: Callable[[str], list[str]],
    ) -> None:
        self.streams = streams  # StreamRegistry
        self.executor = executor
        self.push_urls = push_urls
        self.by_path: dict[str, PlaceholderSource] = {}
        self._params: dict[tuple[int, int], asyncio.Future[list[bytes]]] = {}
        self._silence: dict[tuple[int, int], Silence] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def ensure(
        self, path: str, name: str, width: int, height: int, audio: tuple[int, int] | None = None
    ) -> None:
        """Put a placeholder on ``path`` soon, unless a publisher is there by then; with
        ``audio`` (sample rate, channels) it also sends silent AAC in that format."""
        task = asyncio.get_running_loop().create_task(
            self._ensure(path, name, width, height, audio)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ensure(
        self, path: str, name: str, width: int, height: int, audio: tuple[int, int] | None
    ) -> None:
        w, h = fit_size(width, height)
        silence = None
        if audio is not None:
            silence = self._silence.get(audio)
            if silence is None:
                loop = asyncio.get_running_loop()
                try:
                    silence = await loop.run_in_executor(self.executor, silent_aac, *audio)
                except Exception as exc:  # an AAC rate the encoder refuses: video only
                    log.warning("placeholder for %s: no silent AAC at %s: %s", path, audio, exc)
                else:
                    self._silence[audio] = silence
        fut = self._params.get((w, h))
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = asyncio.ensure_future(loop.run_in_executor(self.executor, parameter_sets, w, h))
            self._params[(w, h)] = fut
        try:
            params = await asyncio.shield(fut)
        except Exception:
            self._params.pop((w, h), None)
            log.exception("placeholder for %s: cannot encode at %dx%d", path, w, h)
            return
        stream = self.streams.get(path)
        if stream is None:
            try:
                stream = self.streams.get_or_create(path)
            except Exception as exc:  # too many streams
                log.warning("placeholder for %s: %s", path, exc)
                return
        if stream.publisher is not None:
            return
        old = self.by_path.get(stream.path)
        if (
            old is not None
            and (old.width, old.height) == (w, h)
            and old.stream is stream
            and old.audio == silence
        ):
            ph = old  # keeps its encoded picture
        else:
            lines = [name, "OFFLINE", *self.push_urls(stream.path)]
            ph = PlaceholderSource(
                stream,
                self.executor,
                lines=lines,
                width=w,
                height=h,
                params=params,
                audio=silence,
            )
        ph.publish()
        self.by_path[stream.path] = ph

    async def remove(self, path: str) -> None:
        """Take the placeholder off ``path`` (camera removed)."""
        ph = self.by_path.pop(path, None)
        if ph is not None and ph.active:
            await ph.stop()

    async def stop(self) -> None:
        """Stop every placeholder."""
        for t in list(self._tasks):
            t.cancel()
        for path in list(self.by_path):
            await self.remove(path)

    def stats(self) -> dict[str, int]:
        """Placeholders known, published now, encoded pictures, frames sent."""
        phs = list(self.by_path.values())
        return {
            "placeholders": len(phs),
            "active": sum(p.active for p in phs),
            "encoded": sum(p.encodes for p in phs),
            "frames": sum(p.frames for p in phs),
        }
