"""File loop source: a clip (MP4, MKV, MPEG-TS; H.264/H.265 and AAC) played in real time in a
loop, without decoding or re-encoding.

:class:`ClipReader` (blocking, PyAV's demuxer: packets only) turns the file into access units
with timestamps at 90 kHz that keep rising across the loop point (each pass is shifted by the
clip's length: its last video timestamp plus one frame). Length-prefixed video (MP4/MKV
avcC/hvcC) stays length-prefixed for the packetizer; Annex-B (TS) is split into NAL units;
AAC in ADTS (TS) is unwrapped to raw frames.

:class:`FileLoopSource` (asyncio) reads the clip in chunks of about half a second in an
executor thread and sends each access unit when its decoding time comes, on the loop's clock.
Lazy: the packetizer holds the non-key access units while nobody reads (keyframes always go
out, for the GOP cache and snapshots), so an unread file loop costs the demuxing only.

Bounded per turn: cameras sharing a clip share one packetizer, so one keyframe (about a
hundred RTP packets at 1080p) goes to every camera's stream: 50,000 ``on_rtp`` calls for a
500-camera fleet, which held the event loop for 0.1-0.5 s every keyframe, and a loop behind
schedule sent everything due in the same callback. Now what the packetizer makes of the due
access units is handed out a slice of cameras at a time under one :class:`TurnBudget` of loop
time shared by every file loop (``[sources] file_turn_ms`` per turn), yielding between
slices, so many clips whose keyframes fall due at the same instant share the one budget too.
Access units that fell due together (catching up) go out as one group, so each stream still
gets them in one turn and its readers in one write (a per-unit yield halved the throughput
of a loaded 500-camera fleet).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from onvifcam.aio import cancel_and_wait
from onvifcam.media import aac, h264, h265
from onvifcam.media.packetizer import (
    AacSpec,
    LengthPrefixed,
    NalUnits,
    Packetizer,
    TrackSpec,
    VideoSpec,
)
from onvifcam.media.stream import Stream

log = logging.getLogger(__name__)

CLOCK = 90000
_CHUNK = 45000  # read about half a second ahead (90 kHz)
TURN_MS = 10  # default of [sources] file_turn_ms
_SLICE = 256  # deliveries between two looks at the clock
_GROUP = 1024  # packets (and counts) of due access units handed out together at most


class TurnBudget:
    """Loop time every file loop on one event loop may spend together handing packets to
    streams in one turn of it (``per_turn`` seconds); :meth:`turn` waits for the next turn.
    Time, not a count: on a busy loop each turn also carries the readers' writes, and a
    fixed count per turn would cap the throughput (measured: half the clip's rate)."""

    def __init__(
        self, per_turn: float = TURN_MS / 1000, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.per_turn = per_turn
        self.clock = clock
        self.used = 0.0
        self._armed: asyncio.AbstractEventLoop | None = None
        self.yields = 0  # turns given back because the budget was spent

    def spent(self) -> bool:
        """Whether this turn's time is used up (a fresh budget on a loop it was not armed
        on)."""
        if self._armed is not None and self._armed is not asyncio.get_running_loop():
            self._refill()
        return self.used >= self.per_turn

    def spend(self, seconds: float) -> None:
        """Count ``seconds`` of this turn (the budget refills on the next one)."""
        loop = asyncio.get_running_loop()
        if self._armed is not loop:
            if self._armed is not None:  # armed on another (closed) loop: start afresh
                self.used = 0.0
            self._armed = loop
            loop.call_soon(self._refill)  # runs at the start of the next turn
        self.used += seconds

    def _refill(self) -> None:
        self.used = 0.0
        self._armed = None

    async def turn(self) -> None:
        """Let the loop run one turn (other work, readers' writes) before going on."""
        self.yields += 1
        await asyncio.sleep(0)


_BUDGET = TurnBudget()


def turn_budget() -> TurnBudget:
    """The budget every file loop shares."""
    return _BUDGET


class ClipError(Exception):
    """The file cannot be played (missing, no H.264/H.265 video, unreadable)."""


@dataclass
class Unit:
    """One access unit (video) or frame group (audio) with 90 kHz times."""

    track: int
    pts: int
    dts: int
    data: NalUnits | list[bytes]
    keyframe: bool


def path_of(source: str) -> str:
    """The local path of a ``file://`` source (``file:///abs/path``)."""
    if not source.startswith("file://"):
        raise ClipError(f"source {source!r} is not a file:// URL")
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(source)
    if parts.netloc not in ("", "localhost"):
        raise ClipError(f"source {source!r}: only local files (file:///path)")
    return unquote(parts.path)


class ClipReader:
    """Demuxes a clip in a loop (blocking: call from an executor thread)."""

    def __init__(self, path: str) -> None:
        import av

        try:
            self._c = av.open(path)
        except (OSError, av.error.FFmpegError) as exc:
            raise ClipError(f"cannot open {path}: {exc}") from None
        try:
            self._setup(path)
        except ClipError:
            self._c.close()
            raise
        except (ValueError, av.error.FFmpegError) as exc:
            self._c.close()
            raise ClipError(f"cannot play {path}: {exc}") from None

    def _setup(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._closed = False
        self._video = next(
            (s for s in self._c.streams.video if s.codec_context.name in ("h264", "hevc")), None
        )
        if self._video is None:
            raise ClipError(f"{path}: no H.264 or H.265 video stream (found: {self._names()})")
        self._audio = next(
            (s for s in self._c.streams.audio if s.codec_context.name == "aac"), None
        )
        v = self._video
        self.codec = "H264" if v.codec_context.name == "h264" else "H265"
        self.width, self.height = v.codec_context.width, v.codec_context.height
        rate = v.average_rate or v.guessed_rate or Fraction(25)
        self.fps = float(rate)
        self._frame = round(CLOCK / float(rate))
        self._length_size = 0
        self.params: list[bytes] = []
        extra = bytes(v.codec_context.extradata or b"")
        if extra[:1] == b"\x01":
            if self.codec == "H264":
                avc = h264.parse_avc_config(extra)
                self.params, self._length_size = [*avc.sps, *avc.pps], avc.length_size
            else:
                hvc = h265.parse_hevc_config(extra)
                self.params = [*hvc.vps, *hvc.sps, *hvc.pps]
                self._length_size = hvc.length_size
        self.asc: aac.AacConfig | None = None
        if self._audio is not None:
            a_extra = bytes(self._audio.codec_context.extradata or b"")
            if a_extra:
                self.asc = aac.parse_audio_specific_config(a_extra)
        self._offset = 0  # added to every timestamp of the current pass
        self._pass_end = 0  # the end of the last picture or audio frame of this pass
        self._lead = 0  # how far timestamps of a pass go below its first packet's dts
        self._base: int | None = None  # the first packet's dts in this pass (90 kHz)
        self.loops = 0
        self._it = self._c.demux(*self._streams())
        self._pending: list[Unit] = []
        if not self.params or (self._audio is not None and self.asc is None):
            self._probe()

    def _names(self) -> str:
        return ", ".join(s.codec_context.name for s in self._c.streams) or "nothing"

    def _streams(self) -> list[Any]:
        return [s for s in (self._video, self._audio) if s is not None]

    def _probe(self) -> None:
        """Find in-band parameter sets / the ADTS config in the first packets."""
        for _ in range(2000):
            units = self.read(_CHUNK)
            for u in units:
                if u.track == 0 and u.keyframe and not self.params:
                    nals = u.data if isinstance(u.data, list) else u.data.split()  # type: ignore[union-attr]
                    from onvifcam.media.packetizer import merge_parameter_sets

                    self.params = merge_parameter_sets(self.codec, [], nals)
            if self.params and (self._audio is None or self.asc is not None):
                break
        self._restart()
        self.loops = 0
        self._offset = 0
        self._pass_end = 0
        self._lead = 0
        if not self.params:
            raise ClipError(f"{self.path}: no parameter sets ({self.codec}) found")

    def _restart(self) -> None:
        self._c.seek(0)
        self._it = self._c.demux(*self._streams())
        self._base = None

    def specs(self) -> list[TrackSpec]:
        """The tracks: video, then AAC when the clip has it."""
        out: list[TrackSpec] = [
            VideoSpec(self.codec, list(self.params), self.width, self.height, self.fps)
        ]
        if self.asc is not None:
            out.append(AacSpec.from_config(self.asc))
        return out

    def read(self, span: int = _CHUNK) -> list[Unit]:
        """The next access units, about ``span`` ticks of decoding time; loops at the end.
        Nothing once closed."""
        with self._lock:
            return [] if self._closed else self._read(span)

    def _read(self, span: int) -> list[Unit]:
        out: list[Unit] = []
        start: int | None = None
        for _ in range(100000):
            try:
                pkt = next(self._it)
            except StopIteration:
                self.loops += 1
                self._offset = self._pass_end + self._lead
                self._restart()
                if not out and self.loops > 3 and self._pass_end == 0:
                    raise ClipError(f"{self.path}: no packets") from None
                continue
            if pkt.size == 0 or (pkt.dts is None and pkt.pts is None):
                continue
            u = self._unit(pkt)
            if u is None:
                continue
            out.append(u)
            if start is None:
                start = u.dts
            elif u.dts - start >= span:
                break
        return out

    def _unit(self, pkt: Any) -> Unit | None:
        s = pkt.stream
        tb = s.time_base
        dts = pkt.dts if pkt.dts is not None else pkt.pts
        pts = pkt.pts if pkt.pts is not None else dts
        d90 = int(dts * tb * CLOCK)
        p90 = int(pts * tb * CLOCK)
        if self._base is None:
            self._base = d90  # one base for all tracks keeps their sync
        if self.loops == 0:
            self._lead = max(self._lead, self._base - min(d90, p90))
        d90 += self._offset - self._base
        p90 += self._offset - self._base
        data = bytes(pkt)
        if s is self._video:
            self._pass_end = max(self._pass_end, p90 + self._frame, d90 + self._frame)
            nals: NalUnits
            if self._length_size:
                nals = LengthPrefixed(data, 0, self._length_size)
            else:
                nals = h264.split_annexb(data)
            return Unit(0, p90, d90, nals, bool(pkt.is_keyframe))
        if self.asc is None or data[:2] in (b"\xff\xf1", b"\xff\xf9"):
            try:
                cfg, frames = aac.adts_to_raw(data)
            except aac.AacError:
                return None
            self.asc = self.asc or cfg
        else:
            frames = [data]
        rate = self.asc.sample_rate if self.asc is not None else 48000
        end = max(p90, d90) + len(frames) * 1024 * CLOCK // rate
        self._pass_end = max(self._pass_end, end)
        return Unit(1, p90, d90, frames, False)

    def close(self) -> None:
        """Close the file (waits for a read in progress on another thread)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._c.close()


class _Feed:
    """The publisher a :class:`FileLoopSource` is on one of its streams."""

    def __init__(self, source: FileLoopSource, stream: Stream) -> None:
        self.source = source
        self.stream = stream
        self.description = f"file loop {source.path}"
        self.active = True  # False once detached: packets in flight no longer go to it

    def kick(self, reason: str) -> None:
        """Another publisher took this path: stop feeding it (the others carry on)."""
        self.source.detach(self, reason)


class FileLoopSource:
    """Publishes a clip in a loop, in real time, on one or more streams (one demux and one
    packetizer for all of them: cameras sharing a clip cost one camera)."""

    def __init__(
        self,
        streams: list[Stream],
        executor: Executor,
        path: str,
        *,
        turn_ms: float | None = None,
        budget: TurnBudget | None = None,
    ) -> None:
        self.executor = executor
        self.path = path
        self.description = f"file loop {path}"
        self.feeds = [_Feed(self, s) for s in streams]
        self._reader: ClipReader | None = None
        self._budget = budget or turn_budget()
        if turn_ms is not None:
            self._budget.per_turn = turn_ms / 1000
        # what the packetizer made of the access unit being sent: packets, held-unit counts
        self._out: list[tuple[int, bytes]] = []
        self._counts: list[tuple[int, int]] = []
        self._packetizer = Packetizer(self._collect, name=path, time_base=Fraction(1, CLOCK))
        self._packetizer.needed = self._needed
        self._packetizer.on_count = self._count
        self._task: asyncio.Task[None] | None = None
        self.units = 0
        self.kicked = ""

    def _collect(self, track: int, packet: bytes) -> None:
        self._out.append((track, packet))

    def _count(self, nbytes: int, frames: int) -> None:
        self._counts.append((nbytes, frames))

    async def _fan_out(self) -> None:
        """Hand what the packetizer made of one access unit (RTP packets, counts of held
        units) to every stream, a slice of streams per turn within the shared budget; each
        stream gets it in order, before the next access unit."""
        packets, self._out = self._out, []
        counts, self._counts = self._counts, []
        n = len(packets) + len(counts)
        feeds = list(self.feeds)
        budget = self._budget
        clock = budget.clock
        step = max(1, _SLICE // max(1, n))
        for i in range(0, len(feeds), step):
            while budget.spent():
                await budget.turn()
            t0 = clock()
            for f in feeds[i : i + step]:
                if f.active:
                    stream = f.stream
                    for nbytes, frames in counts:
                        stream.note_input(nbytes, frames)
                    on_rtp = stream.on_rtp
                    for track, packet in packets:
                        on_rtp(track, packet)
            budget.spend(clock() - t0)

    def _needed(self) -> bool:
        return any(f.stream.readers for f in self.feeds)

    def detach(self, feed: _Feed, reason: str) -> None:
        """Stop feeding one stream; with none left, stop reading the file."""
        feed.active = False
        if feed in self.feeds:
            self.feeds.remove(feed)
        if not self.feeds:
            self.kicked = reason
            if self._task is not None:
                self._task.cancel()

    async def start(self) -> None:
        """Open the clip (ClipError when it cannot be played) and start playing."""
        loop = asyncio.get_running_loop()
        self._reader = await loop.run_in_executor(self.executor, ClipReader, self.path)
        session = self._packetizer.configure(self._reader.specs())
        for f in list(self.feeds):
            try:
                f.stream.publish(f, session)
            except Exception as exc:  # StreamBusy: a client holds the path already
                log.warning("file loop %s: not on path %s: %s", self.path, f.stream.path, exc)
                self.feeds.remove(f)
        if not self.feeds:
            raise ClipError(f"{self.path}: every path it should play on is taken")
        self._task = asyncio.create_task(self._run(), name=f"fileloop-{self.path}")

    async def stop(self) -> None:
        """Stop playing, unpublish and close the file."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for f in self.feeds:
            f.stream.unpublish(f, "source stopped")
        reader, self._reader = self._reader, None
        if reader is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, reader.close)

    def stats(self) -> dict[str, Any]:
        """Counters of this source."""
        r = self._reader
        return {
            "kind": "file",
            "paths": [f.stream.path for f in self.feeds],
            "file": self.path,
            "units": self.units,
            "loops": r.loops if r is not None else 0,
            "turns_yielded": self._budget.yields,
        }

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._reader is not None
        reader = self._reader
        origin: float | None = None
        send: Callable[..., None] = self._packetizer.on_access_unit
        try:
            while True:
                units = await loop.run_in_executor(self.executor, reader.read, _CHUNK)
                for u in units:
                    if origin is None:
                        origin = loop.time() - u.dts / CLOCK
                    wait = origin + u.dts / CLOCK - loop.time()
                    if wait > 0.002:
                        # what is due goes out before the wait; access units that fell due
                        # together (catching up) go out as one group: a stream gets them in
                        # one turn, so its readers get them in one write
                        if self._out or self._counts:
                            await self._fan_out()
                            wait = origin + u.dts / CLOCK - loop.time()
                        if wait > 0.002:
                            await asyncio.sleep(wait)
                    elif wait < -2.0:  # far behind (loaded machine): carry on from here
                        origin -= wait
                    send(u.track, u.pts, u.dts, u.data, u.keyframe)
                    self.units += 1
                    if len(self._out) + len(self._counts) >= _GROUP:
                        await self._fan_out()
                if self._out or self._counts:
                    await self._fan_out()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # one line: a damaged file is an input problem, not a bug worth a traceback
            log.error("file loop %s: %s: %s; the source stops", self.path, type(exc).__name__, exc)
            for f in self.feeds:
                f.stream.unpublish(f, "file source failed")
