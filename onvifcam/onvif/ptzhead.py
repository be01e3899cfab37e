"""The virtual PTZ head (:class:`Axis`, :class:`Head`) and its preset tours (the run state
machine); pure: every call takes the time.

A running tour is a list of legs (a resolved tour spot: where each axis goes, at what rate,
and how long the head stays there). Like the head itself, nothing ticks: whenever the head's
position is asked for, :meth:`TourRun.advance` replays every leg boundary up to that time,
commanding the axes *at the boundary's own time*, so the result is the same as if a timer
had fired exactly then. After two whole passes every further pass is identical (it starts
from the same positions), so a long gap is skipped a whole number of passes at once: the
work per call is bounded by about three passes, however long nobody looked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PAN_RANGE = (-1.0, 1.0)
ZOOM_RANGE = (0.0, 1.0)
IDLE = "Idle"
TOURING = "Touring"
PAUSED = "Paused"

MIN_STAY = 1.0  # seconds a spot's StayTime may be at least (a pass always takes time)
MAX_STAY = 86400.0
DEFAULT_STAY = 5.0  # a TourSpot without StayTime
MAX_RECURRING_TIME = 10000  # passes (RecurringTime); 0 or absent: until stopped
MIN_RECURRING_DURATION = 1.0
MAX_RECURRING_DURATION = 7 * 86400.0


@dataclass(frozen=True)
class Leg:
    """One resolved tour spot: targets (None: the axis stays), rates (units/s), stay (s)."""

    spot: int  # index of the spot in the stored tour
    target: tuple[float | None, float | None, float | None]
    rates: tuple[float, float, float]
    stay: float


def _axes(head: Head) -> tuple[Axis, Axis, Axis]:
    return head.pan, head.tilt, head.zoom


@dataclass
class TourRun:
    """One tour running (or paused) on a head."""

    token: str
    legs: list[Leg]
    passes: int | None = None  # None: until stopped (or ``until``)
    until: float | None = None  # RecurringDuration: when the tour ends (touring time)
    state: str = IDLE
    i: int = 0  # the current leg
    moving: bool = True  # moving to the current leg (else staying there)
    stay_end: float = 0.0
    done: int = 0  # passes completed
    last_wrap: float | None = None
    paused_at: float = 0.0
    paused_left: float | None = None  # stay left when paused during a stay
    events: int = 0  # leg boundaries replayed (a bound the tests check)

    @property
    def leg(self) -> Leg:
        """The leg the tour is at."""
        return self.legs[self.i]

    def start(self, head: Head, t: float) -> None:
        """Start from the first leg at ``t`` (the head stops first)."""
        for a in _axes(head):
            a.stop(t)
        self.state, self.i, self.done, self.last_wrap = TOURING, 0, 0, None
        self._issue(head, t)

    def _issue(self, head: Head, t: float) -> None:
        leg = self.leg
        for axis, value, rate in zip(_axes(head), leg.target, leg.rates, strict=True):
            if value is not None:
                axis.go(t, value, rate)
        self.moving = True

    def advance(self, head: Head, t: float) -> None:
        """Replay every leg boundary up to ``t``."""
        while self.state == TOURING:
            ev = max(a.arrival() for a in _axes(head)) if self.moving else self.stay_end
            if self.until is not None and self.until <= min(ev, t):
                for a in _axes(head):
                    a.stop(self.until)
                self.state = IDLE
                return
            if ev > t:
                return
            self.events += 1
            if self.moving:
                self.moving, self.stay_end = False, ev + self.leg.stay
                continue
            self.i += 1
            if self.i == len(self.legs):
                self.done += 1
                if self.passes is not None and self.done >= self.passes:
                    self.state = IDLE
                    return
                self.i = 0
                ev = self._skip(head, ev, t)
            self._issue(head, ev)

    def _skip(self, head: Head, wrap: float, t: float) -> float:
        """At a wrap to the first leg: skip whole passes that end before ``t``."""
        prev, self.last_wrap = self.last_wrap, wrap
        if prev is None or self.done < 2 or wrap <= prev:
            return wrap
        period = wrap - prev
        k = math.floor((t - wrap) / period)
        if self.passes is not None:
            k = min(k, self.passes - self.done - 1)
        if self.until is not None:
            k = min(k, math.floor((self.until - wrap) / period))
        if k <= 0:
            return wrap
        shift = k * period
        for a in _axes(head):
            a.t0 += shift
        self.done += k
        self.last_wrap = wrap + shift
        return wrap + shift

    def pause(self, head: Head, t: float) -> None:
        """Hold where the head is; :meth:`resume` continues the same leg."""
        self.advance(head, t)
        if self.state != TOURING:
            return
        for a in _axes(head):
            a.stop(t)
        self.paused_left = None if self.moving else max(0.0, self.stay_end - t)
        self.paused_at, self.state = t, PAUSED

    def resume(self, head: Head, t: float) -> None:
        """Continue a paused tour (a RecurringDuration does not count the pause)."""
        if self.state != PAUSED:
            return
        self.state = TOURING
        if self.until is not None:
            self.until += max(0.0, t - self.paused_at)
        if self.paused_left is None:
            self._issue(head, t)
        else:
            self.moving, self.stay_end = False, t + self.paused_left

    def stop(self, head: Head, t: float) -> None:
        """End the tour; the head stops where it is."""
        self.advance(head, t)
        if self.state != IDLE:
            for a in _axes(head):
                a.stop(t)
        self.state = IDLE


# --------------------------------------------------------------------------- head


@dataclass
class Axis:
    """One axis: its last command and the position computed from it."""

    lo: float
    hi: float
    start: float = 0.0
    t0: float = 0.0
    target: float | None = None  # absolute/relative move: where it goes
    rate: float = 0.0  # toward target: units/s (<= 0: at once); continuous: signed velocity
    until: float = 0.0  # continuous move: when it stops

    def at(self, t: float) -> float:
        """The position at time ``t``."""
        if self.target is not None:
            d = self.target - self.start
            step = self.rate * max(0.0, t - self.t0) if self.rate > 0 else math.inf
            return self.target if step >= abs(d) else self.start + math.copysign(step, d)
        if self.rate == 0.0:
            return self.start
        dt = max(0.0, min(t, self.until) - self.t0)
        return min(self.hi, max(self.lo, self.start + self.rate * dt))

    def moving(self, t: float) -> bool:
        """True while the axis has somewhere to go."""
        if self.target is not None:
            return self.at(t) != self.target
        if self.rate == 0.0 or t >= self.until:
            return False
        p = self.at(t)
        return not (p >= self.hi if self.rate > 0 else p <= self.lo)

    def arrival(self) -> float:
        """When the current move toward a target ends (its start when there is none)."""
        if self.target is None or self.rate <= 0:
            return self.t0
        return self.t0 + abs(self.target - self.start) / self.rate

    def clamp(self, v: float) -> float:
        """``v`` within the axis limits."""
        return min(self.hi, max(self.lo, v))

    def go(self, t: float, target: float, rate: float) -> None:
        """Move toward ``target`` (clamped) at ``rate`` units/s."""
        self.start, self.t0 = self.at(t), t
        self.target, self.rate = self.clamp(target), rate

    def drive(self, t: float, velocity: float, until: float) -> None:
        """Move at ``velocity`` units/s until ``until`` (or a limit)."""
        self.start, self.t0 = self.at(t), t
        self.target, self.rate, self.until = None, velocity, until

    def stop(self, t: float) -> None:
        """Stop where it is now."""
        self.start, self.t0 = self.at(t), t
        self.target, self.rate = None, 0.0


@dataclass
class Head:
    """The virtual PTZ head of one camera (pure: every call takes the time)."""

    pan: Axis = field(default_factory=lambda: Axis(*PAN_RANGE))
    tilt: Axis = field(default_factory=lambda: Axis(*PAN_RANGE))
    zoom: Axis = field(default_factory=lambda: Axis(*ZOOM_RANGE))
    run: TourRun | None = None  # the preset tour touring or paused on this head

    def advance(self, t: float) -> None:
        """Let a running preset tour command the axes up to time ``t``."""
        if self.run is not None:
            self.run.advance(self, t)
            if self.run.state == IDLE:
                self.run = None

    def position(self, t: float) -> tuple[float, float, float]:
        """(pan, tilt, zoom) at time ``t``."""
        self.advance(t)
        return self.pan.at(t), self.tilt.at(t), self.zoom.at(t)

    def moving(self, t: float) -> tuple[bool, bool]:
        """(pan/tilt moving, zoom moving) at time ``t``."""
        self.advance(t)
        return self.pan.moving(t) or self.tilt.moving(t), self.zoom.moving(t)

    def manual(self, t: float) -> None:
        """A client's own move command: a touring preset tour ends (a paused one stays)."""
        self.advance(t)
        if self.run is not None and self.run.state == TOURING:
            self.run.stop(self, t)
            self.run = None

    def stop(self, t: float, pantilt: bool = True, zoom: bool = True) -> None:
        """Stop the named axes."""
        if pantilt:
            self.pan.stop(t)
            self.tilt.stop(t)
        if zoom:
            self.zoom.stop(t)
