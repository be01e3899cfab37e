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

    ``update(candidate)`` takes an already rounded candidate: the held value becomes it once
    it differs by more than ``band`` (relative) for ``settle`` updates in a row. The first
    candidate is taken at once.
    """

    band: float
    settle: int = 3
    value: float | None = None
    _away: int = field(default=0, repr=False)

    def update(self, candidate: float) -> float:
        """Feed one measurement; the held value."""
        if self.value is None:
            self.value = candidate
            return candidate
        if abs(candidate - self.value) <= self.band * max(abs(self.value), 1e-9):
            self._away = 0
        else:
            self._away += 1
            if self._away >= self.settle:
                self.value = candidate
                self._away = 0
        return self.value

    def reset(self) -> None:
        """Forget the held value (a new publisher)."""
        self.value = None
        self._away = 0


@dataclass
class StableRates:
    """Frame rate, bitrate (kbit/s) and GOV length of one stream, held still."""

    fps: Steady = field(default_factory=lambda: Steady(band=0.08))
    kbps: Steady = field(default_factory=lambda: Steady(band=0.25))
    gov: Steady = field(default_factory=lambda: Steady(band=0.15))

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
        if seed:
            held = StableRates()
            held.feed(sps_fps, fps, bitrate_bps, gov)
            for name in ("fps", "kbps", "gov"):
                mine, new = getattr(self, name), getattr(held, name)
                if mine.value is None:
                    mine.value = new.value
            return
        if sps_fps:
            self.fps.value = snap_fps(sps_fps)  # the encoder said so: no hysteresis needed
        elif fps > 0:
            self.fps.update(snap_fps(fps))
        if bitrate_bps > 0:
            self.kbps.update(round_sig(bitrate_bps / 1000))
        if gov:
            self.gov.update(max(1, round(gov)))

    def reset(self) -> None:
        """A new publisher: measure afresh."""
        self.fps.reset()
        self.kbps.reset()
        self.gov.reset()
