"""Live stream values that hold still: what ONVIF configurations show of a measured stream.

An NVR compares the configurations it cached with the ones it reads now; a frame rate that
reads 25, 24, 23 on one steady stream makes it see a new camera every poll. Raw once-a-second
measurements are therefore turned into stable values here: frame rates snap to the common
rates, bitrates to two significant figures, and a held value changes only after the raw
measure has left a band around it for several ticks in a row (hysteresis). Pure: no clock,
no streams; :class:`onvifcam.cameras.camera.Camera` feeds it once a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

COMMON_FPS = (
    1.0,
    2.0,
    3.0,
    4.0,
    5.0,
    6.0,
    7.5,
    8.0,
    10.0,
    12.0,
    12.5,
    15.0,
    20.0,
    23.976,
    24.0,
    25.0,
    29.97,
    30.0,
    48.0,
    50.0,
    59.94,
    60.0,
    90.0,
    100.0,
    119.88,
    120.0,
)


def snap_fps(raw: float, tolerance: float = 0.06) -> float:
    """The common frame rate nearest ``raw`` when within ``tolerance`` (relative), else
    ``raw`` rounded to an integer (at least 1)."""
    if not math.isfinite(raw) or raw <= 0:
        return 0.0
    best = min(COMMON_FPS, key=lambda f: abs(f - raw))
    if abs(best - raw) <= tolerance * best:
        return best
    return float(max(1, round(raw)))


def round_sig(raw: float, digits: int = 2) -> int:
    """``raw`` rounded to ``digits`` significant figures (an int, at least 1)."""
    if not math.isfinite(raw) or raw <= 0:
        return 1
    scale = 10 ** (math.floor(math.log10(raw)) - digits + 1)
    return max(1, int(round(raw / scale) * scale))


@dataclass
class Steady:
    """A value that follows a measurement only when it really moved.

    ``update(raw)`` takes one raw measurement. A new value (a new stream, or a change) is
    first *followed*: the held value is the running mean of the measurements since, rounded
    with ``rounder``, until it has ``min_samples`` of them and the last ``settle`` rounded
    means stayed within ``band / 2.5`` of each other. Then it is *settled*: measurements
    feed an exponential average, and the held value changes only when that average, rounded,
    is more than ``band`` (relative) away from it for ``settle`` updates in a row, which
    starts following the new value.
    """

    band: float
    rounder: Callable[[float], float] = float
    settle: int = 3
    min_samples: int = 5
    alpha: float = 0.2  # weight of a new measurement in the settled average
    value: float | None = None
    _following: bool = field(default=True, repr=False)
    _count: int = field(default=0, repr=False)
    _sum: float = field(default=0.0, repr=False)
    _n: int = field(default=0, repr=False)
    _avg: float = field(default=0.0, repr=False)

    def _near(self, candidate: float, band: float) -> bool:
        assert self.value is not None
        return abs(candidate - self.value) <= band * max(abs(self.value), 1e-9)

    def update(self, raw: float) -> float:
        """Feed one measurement; the held value."""
        if self._following:
            self._sum += raw
            self._n += 1
            mean = self._sum / self._n
            candidate = self.rounder(mean)
            near = self.value is not None and self._near(candidate, self.band / 2.5)
            self._count = self._count + 1 if near else 0
            self.value = candidate
            if self._n >= self.min_samples and self._count >= self.settle:
                self._following, self._count, self._avg = False, 0, mean
            return candidate
        assert self.value is not None
        self._avg += self.alpha * (raw - self._avg)
        candidate = self.rounder(self._avg)
        if self._near(candidate, self.band):
            self._count = 0
        else:
            self._count += 1
            if self._count >= self.settle:
                self.value = candidate
                self._following, self._count, self._sum, self._n = True, 0, 0.0, 0
        return self.value

    def seed(self, raw: float) -> None:
        """A first value before any measurement is fed (not counted as one)."""
        if self.value is None:
            self.value = self.rounder(raw)

    def hold(self, value: float) -> None:
        """A value known exactly (the encoder said so): settled at once."""
        self.value, self._following, self._count = value, False, 0
        self._avg = value

    @property
    def settled(self) -> bool:
        """True once the value holds still."""
        return self.value is not None and not self._following

    def reset(self) -> None:
        """Forget everything (a new publisher)."""
        self.value = None
        self._following, self._count, self._sum, self._n, self._avg = True, 0, 0.0, 0, 0.0


def _kbps(bps: float) -> float:
    return float(round_sig(bps / 1000))


def _gov(frames: float) -> float:
    return float(max(1, round(frames)))


@dataclass
class StableRates:
    """Frame rate, bitrate (kbit/s) and GOV length of one stream, held still."""

    fps: Steady = field(default_factory=lambda: Steady(band=0.08, rounder=snap_fps, min_samples=10))
    kbps: Steady = field(default_factory=lambda: Steady(band=0.25, rounder=_kbps))
    gov: Steady = field(default_factory=lambda: Steady(band=0.15, rounder=_gov))

    def feed(
        self,
        sps_fps: float | None,
        fps: float,
        bitrate_bps: float,
        gov: float | None,
        seed: bool = False,
    ) -> None:
        """One once-a-second measurement (zeros and Nones: nothing measured yet); ``seed``:
        only fill values not held yet (a read between ticks)."""
        if sps_fps:
            if self.fps.value != snap_fps(sps_fps) or not self.fps.settled:
                self.fps.hold(snap_fps(sps_fps))  # the encoder said so
        elif fps > 0:
            self.fps.seed(fps) if seed else self.fps.update(fps)
        if bitrate_bps > 0:
            self.kbps.seed(bitrate_bps) if seed else self.kbps.update(bitrate_bps)
        if gov:
            self.gov.seed(gov) if seed else self.gov.update(gov)

    def reset(self) -> None:
        """A new publisher: measure afresh."""
        self.fps.reset()
        self.kbps.reset()
        self.gov.reset()
