"""Test pattern source: a moving picture with the camera name and a running clock, as H.264.

Three layers:

- :class:`PatternRenderer` (numpy, sans-I/O): colour bars, a box that moves one step per
  frame and a black band with the camera name (rendered once) and the clock (a few glyph
  blits per frame from glyphs scaled once). One YUV 4:2:0 buffer is reused.
- :class:`PatternEncoder` (PyAV/libx264, blocking): ultrafast, zero latency (no B-frames,
  no lookahead), constrained baseline, one thread, a keyframe every ``gop`` frames and
  whenever asked; SPS/PPS in front of every keyframe.
- :class:`TestPatternSource` (asyncio): publishes into a :class:`~onvifcam.media.stream.Stream`
  through a :class:`~onvifcam.media.packetizer.Packetizer`. Rendering and encoding run in an
  executor thread, never on the loop; frames are paced on the loop's clock and their
  timestamps come from that clock, so they stay continuous whatever happens.

Work only while someone reads: with readers every frame is encoded; with none, one keyframe
every ``idle_keyframe_interval`` seconds keeps the GOP cache fresh for ONVIF snapshots (and
keeps the stream's media timeout quiet), and nothing else is done. A reader that arrives
gets that keyframe from the GOP cache at once; the next frames predict from it.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from onvifcam.aio import cancel_and_wait
from onvifcam.media import h264
from onvifcam.media.packetizer import (
    AAC_FRAME_SAMPLES,
    AacSpec,
    Packetizer,
    TrackSpec,
    VideoSpec,
)
from onvifcam.media.stream import Stream
from onvifcam.onvif.snapshot import _FONT

log = logging.getLogger(__name__)

_BARS = (  # BT.601 limited-range Y, U, V of 75 % colour bars
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
    (16, 128, 128),
)


_LOWER = {  # lower case for the 5x7 font of onvif.snapshot (paths are case-sensitive)
    "a": "00000 00000 01110 00001 01111 10001 01111",
    "b": "10000 10000 10110 11001 10001 10001 11110",
    "c": "00000 00000 01110 10000 10000 10001 01110",
    "d": "00001 00001 01101 10011 10001 10001 01111",
    "e": "00000 00000 01110 10001 11111 10000 01110",
    "f": "00110 01001 01000 11100 01000 01000 01000",
    "g": "00000 01111 10001 10001 01111 00001 01110",
    "h": "10000 10000 10110 11001 10001 10001 10001",
    "i": "00100 00000 01100 00100 00100 00100 01110",
    "j": "00010 00000 00110 00010 00010 10010 01100",
    "k": "10000 10000 10010 10100 11000 10100 10010",
    "l": "01100 00100 00100 00100 00100 00100 01110",
    "m": "00000 00000 11010 10101 10101 10001 10001",
    "n": "00000 00000 10110 11001 10001 10001 10001",
    "o": "00000 00000 01110 10001 10001 10001 01110",
    "p": "00000 00000 11110 10001 11110 10000 10000",
    "q": "00000 00000 01101 10011 01111 00001 00001",
    "r": "00000 00000 10110 11001 10000 10000 10000",
    "s": "00000 00000 01110 10000 01110 00001 11110",
    "t": "01000 01000 11100 01000 01000 01001 00110",
    "u": "00000 00000 10001 10001 10001 10011 01101",
    "v": "00000 00000 10001 10001 10001 01010 00100",
    "w": "00000 00000 10001 10001 10101 10101 01010",
    "x": "00000 00000 10001 01010 00100 01010 10001",
    "y": "00000 00000 10001 10001 01111 00001 01110",
    "z": "00000 00000 11111 00010 00100 01000 11111",
}


def _glyph(ch: str, scale: int) -> np.ndarray:
    """The 5x7 glyph of ``ch`` (unknown characters: blank) scaled to a boolean mask."""
    rows = _LOWER.get(ch) or _FONT.get(ch.upper())
    bits = np.zeros((7, 5), dtype=bool)
    if rows is not None:
        for r, row in enumerate(rows.split()):
            bits[r] = [c == "1" for c in row]
    return np.kron(bits, np.ones((scale, scale), dtype=bool))


class PatternRenderer:
    """Frames of the test pattern as one ``(height * 3 // 2, width)`` yuv420p array."""

    def __init__(self, width: int, height: int, title: str) -> None:
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise ValueError(f"test pattern size {width}x{height}: needs even sizes >= 16")
        self.width, self.height = width, height
        w, h = width, height
        self.scale = max(1, min(h // 60, w // (6 * 26)))
        s = self.scale
        self._cell = 6 * s  # glyph advance
        self.band = 2 * (9 * s) + 2 * s  # two text lines plus margins
        bg = np.empty((h * 3 // 2, w), dtype=np.uint8)
        y, u, v = self._planes(bg)
        for i, (yy, uu, vv) in enumerate(_BARS):
            x0, x1 = i * w // len(_BARS), (i + 1) * w // len(_BARS)
            y[:, x0:x1] = yy
            u[:, x0 // 2 : x1 // 2] = uu
            v[:, x0 // 2 : x1 // 2] = vv
        y[: self.band] = 16
        u[: self.band // 2] = 128
        v[: self.band // 2] = 128
        self._glyphs = {ch: _glyph(ch, s) for ch in "0123456789:.- "}
        self._draw_text(y, title[: max(1, (w - 2 * s) // self._cell)], s, s)
        self.background = bg
        self.buffer = bg.copy()
        self.box = max(8, (h - self.band) // 4) & ~1

    def _planes(self, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, h = self.width, self.height
        q = h // 4
        y = buf[:h]
        u = buf[h : h + q].reshape(h // 2, w // 2)
        v = buf[h + q : h + 2 * q].reshape(h // 2, w // 2)
        return y, u, v

    def _draw_text(self, y: np.ndarray, text: str, x: int, top: int) -> None:
        for ch in text:
            g = self._glyphs.get(ch)
            if g is None:
                g = _glyph(ch, self.scale)
            gh, gw = g.shape
            if x + gw > self.width:
                break
            y[top : top + gh, x : x + gw][g] = 235
            x += self._cell

    def render(self, n: int, clock: str) -> np.ndarray:
        """Frame ``n`` with ``clock`` written under the title (digits, ':', '.', '-')."""
        buf = self.buffer
        np.copyto(buf, self.background)
        y, u, v = self._planes(buf)
        s = self.scale
        self._draw_text(y, clock, s, s + 9 * s)
        b = self.box
        span = max(1, self.width - b)
        step = max(2, self.width // 100) & ~1
        x = (n * step) % (2 * span)
        x = (x if x < span else 2 * span - x) & ~1
        top = (self.band + (self.height - self.band - b) // 2) & ~1
        y[top : top + b, x : x + b] = 235
        u[top // 2 : (top + b) // 2, x // 2 : (x + b) // 2] = 128
        v[top // 2 : (top + b) // 2, x // 2 : (x + b) // 2] = 128
        return buf


@dataclass
class EncodedUnit:
    """One encoded access unit: its NAL units and whether it is a keyframe."""

    nals: list[bytes]
    keyframe: bool


class H264Encoder:
    """libx264, ultrafast and zero latency, constrained baseline, one thread, a keyframe
    every second (and whenever asked), SPS/PPS in front of every keyframe. Blocking: call
    from an executor thread. The parameter sets depend only on the settings, not on the
    pictures."""

    def __init__(self, width: int, height: int, fps: float, bitrate_kbps: int = 600) -> None:
        import av

        self._av = av
        self.width, self.height, self.fps = width, height, fps
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        rate = Fraction(fps).limit_denominator(1001)
        ctx.time_base = 1 / rate
        ctx.framerate = rate
        ctx.gop_size = max(1, round(fps))  # one keyframe a second
        ctx.bit_rate = bitrate_kbps * 1000
        ctx.thread_count = 1
        ctx.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "profile": "baseline",
            "x264-params": f"scenecut=0:threads=1:vbv-maxrate={bitrate_kbps}:"
            f"vbv-bufsize={bitrate_kbps}",
        }
        ctx.open()
        self._ctx = ctx
        self._n = 0
        # encode and close may run on two pool threads (a stop while a frame is encoded)
        self._lock = threading.Lock()
        self._closed = False

    def encode_array(self, arr: np.ndarray, keyframe: bool = False) -> list[EncodedUnit]:
        """Encode one ``(height * 3 // 2, width)`` yuv420p frame; ``keyframe`` forces an IDR.
        Nothing once closed."""
        av = self._av
        with self._lock:
            if self._closed:
                return []
            frame = av.VideoFrame.from_ndarray(arr, format="yuv420p")
            frame.pts = self._n
            if keyframe:
                frame.pict_type = av.video.frame.PictureType.I
            self._n += 1
            return [
                EncodedUnit(h264.split_annexb(bytes(p)), bool(p.is_keyframe))
                for p in self._ctx.encode(frame)
            ]

    def close(self) -> None:
        """Release the encoder (waits for a frame being encoded)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._ctx.encode(None)
            except Exception:  # flushing a broken encoder: nothing to keep
                pass


class PatternEncoder(H264Encoder):
    """Renders and encodes test pattern frames (blocking: call from an executor thread)."""

    def __init__(
        self, width: int, height: int, fps: float, title: str, bitrate_kbps: int = 600
    ) -> None:
        self.renderer = PatternRenderer(width, height, title)
        super().__init__(width, height, fps, bitrate_kbps)

    def encode(self, clock: str, keyframe: bool = False) -> list[EncodedUnit]:
        """Render and encode the next frame; ``keyframe`` forces an IDR."""
        return self.encode_array(self.renderer.render(self._n, clock), keyframe)


class ToneEncoder:
    """A continuous 1 kHz sine at -20 dBFS as mono AAC-LC (blocking: executor thread)."""

    def __init__(self, sample_rate: int = 48000, freq: float = 1000.0) -> None:
        import av

        self._av = av
        self.sample_rate = sample_rate
        ctx = av.CodecContext.create("aac", "w")
        ctx.sample_rate, ctx.layout, ctx.format = sample_rate, "mono", "fltp"
        ctx.time_base = Fraction(1, sample_rate)
        ctx.bit_rate = 64000
        ctx.open()
        self._ctx = ctx
        self.config = bytes(ctx.extradata or b"")
        self._step = 2 * np.pi * freq / sample_rate
        self._n = 0
        self._lock = threading.Lock()
        self._closed = False

    def encode(self, frames: int) -> list[bytes]:
        """Encode ``frames`` x 1024 more samples; the raw AAC frames that came out."""
        av = self._av
        out: list[bytes] = []
        with self._lock:
            if self._closed:
                return out
            for _ in range(frames):
                t = np.arange(self._n, self._n + 1024)
                samples = (0.1 * np.sin(t * self._step)).astype(np.float32).reshape(1, -1)
                f = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                f.sample_rate, f.pts = self.sample_rate, self._n
                self._n += 1024
                out += [bytes(p) for p in self._ctx.encode(f)]
        return out

    def close(self) -> None:
        """Stop encoding."""
        with self._lock:
            self._closed = True


def clock_text(now: float | None = None) -> str:
    """``YYYY-MM-DD HH:MM:SS.d`` in UTC (the glyphs have digits, '-', ':' and '.')."""
    t = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + str(t.microsecond // 100000)


class TestPatternSource:
    """Publishes a test pattern into ``stream`` while started (a stream Publisher)."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        stream: Stream,
        executor: Executor,
        *,
        title: str,
        width: int,
        height: int,
        fps: float,
        bitrate_kbps: int = 600,
        idle_keyframe_interval: float = 2.0,
        tone: bool = False,
    ) -> None:
        self.stream = stream
        self.tone = tone
        self._tone: ToneEncoder | None = None
        self._audio_base = -1  # 48 kHz sample the audio of the current read spell starts at
        self._audio_out = 0  # AAC frames sent in this spell
        self.executor = executor
        self.title = title
        self.width, self.height, self.fps = width, height, fps
        self.bitrate_kbps = bitrate_kbps
        self.idle_keyframe_interval = idle_keyframe_interval
        self.description = f"test pattern {width}x{height}@{fps:g}"
        self._task: asyncio.Task[None] | None = None
        self._encoder: PatternEncoder | None = None
        self._packetizer = Packetizer(stream.on_rtp, name=title, time_base=Fraction(1, 90000))
        self.frames = 0  # frames encoded
        self.keyframes = 0
        self.encode_seconds = 0.0  # thread CPU time spent rendering and encoding
        self.kicked = ""
        self._origin = 0.0

    # ------------------------------------------------------------------ Publisher
    def kick(self, reason: str) -> None:
        """The stream dropped us (replaced by a real publisher, media timeout): stop."""
        self.kicked = reason
        if self._task is not None:
            self._task.cancel()

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Open the encoder, encode the first keyframe and publish; then run in the
        background until :meth:`stop`."""
        loop = asyncio.get_running_loop()
        self._encoder = await loop.run_in_executor(
            self.executor,
            PatternEncoder,
            self.width,
            self.height,
            self.fps,
            self.title,
            self.bitrate_kbps,
        )
        if self.tone:
            self._tone = await loop.run_in_executor(self.executor, ToneEncoder)
        self._origin = loop.time()
        units, spent = await loop.run_in_executor(self.executor, self._encode, time.time(), True)
        self.encode_seconds += spent
        self._publish(units)
        self._send(units, 0)
        self._task = asyncio.create_task(self._run(), name=f"testpattern-{self.stream.path}")

    async def stop(self) -> None:
        """Stop encoding and unpublish."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self.stream.unpublish(self, "source stopped")
        if self._tone is not None:
            self._tone.close()
        enc, self._encoder = self._encoder, None
        if enc is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, enc.close)

    def stats(self) -> dict[str, Any]:
        """Counters of this source."""
        return {
            "kind": "testpattern",
            "path": self.stream.path,
            "size": f"{self.width}x{self.height}",
            "fps": self.fps,
            "frames": self.frames,
            "keyframes": self.keyframes,
            "encode_seconds": round(self.encode_seconds, 3),
            "running": self._task is not None and not self._task.done(),
        }

    # ------------------------------------------------------------------ work
    def _encode(self, wall: float, key: bool) -> tuple[list[EncodedUnit], float]:
        enc = self._encoder
        if enc is None:  # stopped meanwhile
            return [], 0.0
        t0 = time.thread_time()
        units = enc.encode(clock_text(wall), key)
        return units, time.thread_time() - t0

    async def _audio(self, elapsed: float) -> None:
        """Send the tone up to one video frame ahead of ``elapsed`` (seconds since start)."""
        tone = self._tone
        if tone is None:
            return
        rate = tone.sample_rate
        if self._audio_base < 0:
            self._audio_base, self._audio_out = int(elapsed * rate), 0
        due = int((elapsed + 1.0 / self.fps) * rate) - self._audio_base
        n = due // AAC_FRAME_SAMPLES - self._audio_out
        if n <= 0:
            return
        loop = asyncio.get_running_loop()
        frames = await loop.run_in_executor(self.executor, tone.encode, n)
        if frames:
            start = self._audio_base + self._audio_out * AAC_FRAME_SAMPLES
            pts = start * 90000 // rate
            self._packetizer.on_access_unit(1, pts, pts, frames)
            self._audio_out += len(frames)

    def _send(self, units: list[EncodedUnit], pts: int) -> None:
        for u in units:
            self.frames += 1
            self.keyframes += u.keyframe
            self._packetizer.on_access_unit(0, pts, pts, u.nals, u.keyframe)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.fps
        origin = self._origin
        next_frame = origin + period
        next_idle_key = origin + self.idle_keyframe_interval
        reading = False
        try:
            while True:
                await asyncio.sleep(max(0.0, next_frame - loop.time()))
                now = loop.time()
                was_reading, reading = reading, bool(self.stream.readers)
                if reading or now >= next_idle_key:
                    # After an idle spell the reader got the idle keyframe from the GOP
                    # cache; the next frame predicts from it, so no new IDR is needed.
                    units, spent = await loop.run_in_executor(
                        self.executor, self._encode, time.time(), not reading
                    )
                    self.encode_seconds += spent
                    self._send(units, round((now - origin) * 90000))
                    if reading:
                        await self._audio(now - origin)
                    else:
                        self._audio_base = -1  # nobody listens: no audio
                        next_idle_key = now + self.idle_keyframe_interval
                elif was_reading:
                    self._audio_base = -1
                    next_idle_key = now + self.idle_keyframe_interval
                next_frame += period
                if next_frame < loop.time() - 1.0:  # fell far behind (loaded machine)
                    next_frame = loop.time()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("test pattern %s: encoder failed; the source stops", self.stream.path)
            self.stream.unpublish(self, "encoder failed")

    def _publish(self, units: list[EncodedUnit]) -> None:
        params: list[bytes] = []
        for u in units:
            params = [n for n in u.nals if n and n[0] & 0x1F in (h264.NAL_SPS, h264.NAL_PPS)]
            if params:
                break
        spec = VideoSpec(
            "H264",
            parameter_sets=params,
            width=self.width,
            height=self.height,
            fps=self.fps,
            bitrate=self.bitrate_kbps,
        )
        specs: list[TrackSpec] = [spec]
        if self._tone is not None:
            specs.append(AacSpec(self._tone.config, self._tone.sample_rate, 1))
        session = self._packetizer.configure(specs)
        self.stream.publish(self, session)
