"""Per-stream statistics blocks in the log: every ``[stats] interval`` seconds and once when a
publisher leaves, each live stream logs one block headed ``Stream stats: PATH``.

The figures come from the stream's counters (ingest side, per access unit) and its
accumulators (inter-frame time, reader queue depth sampled once a second); this module only
takes differences between two snapshots and formats them, so it costs nothing per packet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from onvifcam.config import StatsConfig

log = logging.getLogger("onvifcam.stats")

HEADER = "Stream stats: "

_H264_PROFILES = {
    66: "Baseline",
    77: "Main",
    88: "Extended",
    100: "High",
    110: "High 10",
    122: "High 4:2:2",
    244: "High 4:4:4",
}
_H265_PROFILES = {1: "Main", 2: "Main 10", 3: "Main Still Picture", 4: "RExt"}


@dataclass
class Snapshot:
    """A stream's cumulative counters at one moment."""

    at: float = 0.0  # time.monotonic()
    bytes_in: int = 0
    frames_in: int = 0
    keyframes_in: int = 0
    frames_out: int = 0
    drops: dict[str, int] = field(default_factory=dict)


@dataclass
class Acc:
    """count/avg/min/max of a measured value, for formatting."""

    count: int = 0
    avg: float = 0.0
    lo: float = 0.0
    hi: float = 0.0


@dataclass
class BlockInfo:
    """Everything one block shows (pure data, so formatting is unit-tested alone)."""

    path: str
    publisher: str
    started_wall: float  # time.time() of the publish
    uptime: float  # seconds
    video: str  # "H264 High 4.0" or ""
    measured_size: str  # "1920x1080" or "?"
    declared_size: str  # "1920x1080" or "" (not declared)
    declared_fps: float
    readers: int
    audio: str  # "MPEG4-GENERIC 48000 Hz" or ""
    window: tuple[Snapshot, Snapshot]
    total: tuple[Snapshot, Snapshot]
    gop: int
    interframe: tuple[Acc, Acc]  # window, total
    queue: tuple[Acc, Acc]
    reason: str = ""  # why the block is logged now ("publisher left: ...")


def _rate(a: Snapshot, b: Snapshot) -> tuple[float, float]:
    span = b.at - a.at
    if span <= 0:
        return 0.0, 0.0
    return (b.frames_in - a.frames_in) / span, (b.bytes_in - a.bytes_in) * 8 / span


def _duration(sec: float) -> str:
    s = int(max(sec, 0))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} MiB"  # pragma: no cover


def _part(a: Snapshot, b: Snapshot, inter: Acc, queue: Acc, readers: int, gop: int) -> list[str]:
    frames = b.frames_in - a.frames_in
    keys = b.keyframes_in - a.keyframes_in
    gop_text = f"GOP {gop}" if gop else "GOP ?"
    if keys and frames:
        gop_text += f", avg {frames / keys:.1f}"
    drops = ", ".join(f"{k} {b.drops.get(k, 0) - a.drops.get(k, 0)}" for k in sorted(b.drops))
    inter_text = (
        f"inter-frame ms avg {inter.avg:.1f} min {inter.lo:.1f} max {inter.hi:.1f}"
        if inter.count
        else "inter-frame ms -"
    )
    queue_text = (
        f"reader queue avg {_bytes(queue.avg)} max {_bytes(queue.hi)}"
        if queue.count
        else "reader queue -"
    )
    return [
        f"in {frames} frames, {keys} keyframes ({gop_text}); delivered "
        f"{b.frames_out - a.frames_out} frames to {readers} readers",
        f"drops {drops or 'none'}",
        f"{queue_text}; {inter_text}",
    ]


def format_block(b: BlockInfo) -> str:
    """The block as log text: the ``Stream stats: PATH`` header, then indented lines."""
    started = datetime.fromtimestamp(b.started_wall, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    w0, w1 = b.window
    t0, t1 = b.total
    fps_w, bps_w = _rate(w0, w1)
    fps_t, bps_t = _rate(t0, t1)
    declared = b.declared_size or "not declared"
    if b.declared_fps:
        declared += f", {b.declared_fps:g} fps"
    lines = [
        f"{HEADER}{b.path}" + (f" ({b.reason})" if b.reason else ""),
        f"  publisher {b.publisher or '-'}, up {_duration(b.uptime)} since {started}",
        f"  video {b.video or 'none'}, {b.measured_size} (declared {declared}), "
        f"{fps_w:.1f} fps, {bps_w / 1e6:.2f} Mbit/s (average {fps_t:.1f} fps, "
        f"{bps_t / 1e6:.2f} Mbit/s)",
        f"  audio {b.audio or 'none'}",
    ]
    span = w1.at - w0.at
    for label, (a, z), inter, queue in (
        (f"window {span:.0f} s", (w0, w1), b.interframe[0], b.queue[0]),
        ("total", (t0, t1), b.interframe[1], b.queue[1]),
    ):
        part = _part(a, z, inter, queue, b.readers, b.gop)
        lines.append(f"  {label}: {part[0]}")
        lines.extend(f"    {p}" for p in part[1:])
    return "\n".join(lines)


def video_text(info: Any, codec: str) -> str:
    """ "H264 High 4.0" from a VideoInfo (codec, profile, level), else the SDP codec."""
    if info is None:
        return codec
    c = str(getattr(info, "codec", codec) or codec).upper()
    profile, level = int(getattr(info, "profile", 0)), int(getattr(info, "level", 0))
    if c in ("H265", "HEVC"):
        name = _H265_PROFILES.get(profile, f"profile {profile}")
        return f"H265 {name} {level / 30:.1f}" if level else f"H265 {name}"
    name = _H264_PROFILES.get(profile, f"profile {profile}")
    return f"{c} {name} {level / 10:.1f}" if level else f"{c} {name}"


def _acc(a: Any) -> Acc:
    return Acc(a.count, a.avg, a.lo, a.hi)


def snapshot(stream: Any, now: float) -> Snapshot:
    """The cumulative counters of a :class:`~onvifcam.media.stream.Stream` now."""
    st = stream.stats_dict()
    return Snapshot(
        at=now,
        bytes_in=int(st["bytes_in"]),
        frames_in=int(st["frames_in"]),
        keyframes_in=int(st["keyframes_in"]),
        frames_out=int(st["frames_out"]),
        drops={k: int(v) for k, v in st["drops"].items()},
    )


@dataclass
class _Live:
    publisher: str
    started_wall: float
    started: float
    first: Snapshot
    last: Snapshot


class StatsLogger:
    """Logs the blocks: ``tick(now)`` once a second, ``stream_changed`` as a registry listener."""

    def __init__(
        self,
        cfg: StatsConfig,
        streams: Any,
        camera_for: Callable[[str], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.streams = streams
        self.camera_for = camera_for
        self.clock = clock
        self._live: dict[str, _Live] = {}
        self._next = clock() + cfg.interval if cfg.interval else 0.0
        self.blocks = 0

    def reconfigure(self, cfg: StatsConfig) -> None:
        """Use new ``[stats]`` settings from the next tick on."""
        self.cfg = cfg
        self._next = self.clock() + cfg.interval if cfg.interval else 0.0

    def stream_changed(self, stream: Any, what: str) -> None:
        """StreamRegistry listener: start counting on publish, log a block on unpublish."""
        now = self.clock()
        if what == "publish":
            snap = snapshot(stream, now)
            pub = getattr(stream.publisher, "description", "")
            self._live[stream.path] = _Live(pub, time.time(), now, snap, snap)
            stream.take_window()
        elif what == "unpublish":
            live = self._live.pop(stream.path, None)
            if live is not None and self.cfg.on_leave:
                reason = getattr(stream, "unpublish_reason", "")
                self._log(stream, live, now, f"publisher left: {reason}" if reason else "end")

    def tick(self, now: float) -> None:
        """Log a block for every live stream once the interval has passed."""
        if not self.cfg.interval or now < self._next:
            return
        self._next = now + self.cfg.interval
        for path, live in list(self._live.items()):
            stream = self.streams.get(path)
            if stream is None or not stream.online:
                self._live.pop(path, None)
                continue
            self._log(stream, live, now)

    def _log(self, stream: Any, live: _Live, now: float, reason: str = "") -> None:
        try:
            text = format_block(self.block(stream, live, now, reason))
        except Exception:  # statistics must never break the data path
            log.exception("stream %s: statistics block failed", stream.path)
            return
        self.blocks += 1
        log.info("%s", text, extra={"stream_path": stream.path})

    def block(self, stream: Any, live: _Live, now: float, reason: str = "") -> BlockInfo:
        """Collect one block's figures (and start the next window)."""
        snap = snapshot(stream, now)
        win_inter, win_queue = stream.take_window()
        st = stream.stats
        info = stream.video_info
        vt = stream.video_track
        size = f"{info.width}x{info.height}" if info is not None else "?"
        d = stream.declared
        declared = f"{int(d['width'])}x{int(d['height'])}" if "width" in d else ""
        audio = ""
        for t in _tracks(stream):
            if t.kind == "audio":
                audio = f"{t.codec} {t.clock_rate} Hz"
                break
        cam = self.camera_for(stream.path) if self.camera_for is not None else ""
        path = stream.path + (f" (camera {cam!r})" if cam and cam != stream.path else "")
        out = BlockInfo(
            path=path,
            publisher=live.publisher,
            started_wall=live.started_wall,
            uptime=now - live.started,
            video=video_text(info, vt.codec if vt is not None else ""),
            measured_size=size,
            declared_size=declared,
            declared_fps=float(d.get("fps", 0.0)),
            readers=len(stream.readers),
            audio=audio,
            window=(live.last, snap),
            total=(live.first, snap),
            gop=int(st.gop),
            interframe=(_acc(win_inter), _acc(st.interframe)),
            queue=(_acc(win_queue), _acc(st.queue)),
            reason=reason,
        )
        live.last = snap
        return out

    def stats(self) -> dict[str, int]:
        """Blocks logged, streams followed now."""
        return {"blocks": self.blocks, "streams": len(self._live)}


def _tracks(stream: Any) -> Iterable[Any]:
    return getattr(stream, "tracks", ())
