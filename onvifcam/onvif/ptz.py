"""ONVIF PTZ service (ver20 ptz/wsdl): a virtual pan/tilt/zoom head on every camera.

The head is a pure model (:class:`Head`): each axis (pan, tilt, zoom) remembers its last
command (where it started, when, and either a target with a rate or a velocity with an end
time), and its position at any time is computed from that, so nothing ticks while it moves.
Pan and tilt span -1..1 and zoom 0..1 (the node's generic spaces, which are also its
limits); speed 1 is ``[onvif] ptz_pan_speed`` / ``ptz_zoom_speed`` generic units per second.
MoveStatus is MOVING exactly while an axis has not reached its target (or its continuous
move has neither timed out nor hit a limit).

Presets and the home position are kept in the camera's state document (``ptz``), so they
survive a restart. While the camera's sub stream is transcoded, :func:`view_window` turns
the position into the crop of the picture the sub stream shows.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lxml import etree
from lxml.builder import ElementMaker

from onvifcam.cameras import Camera, ProfileState
from onvifcam.onvif.ptzhead import (
    DEFAULT_STAY,
    IDLE,
    MAX_RECURRING_DURATION,
    MAX_RECURRING_TIME,
    MAX_STAY,
    MIN_RECURRING_DURATION,
    MIN_STAY,
    PAN_RANGE,
    TOURING,
    ZOOM_RANGE,
    Head,
    Leg,
    TourRun,
)
from onvifcam.onvif.soap import (
    ACTUATE,
    NSMAP,
    PRE_AUTH,
    READ_MEDIA,
    TT,
    Context,
    Fault,
    OperationTable,
    boolean,
    child,
    children,
    invalid_arg,
    text_of,
    xbool,
)
from onvifcam.onvif.xstime import duration_seconds, format_duration, utc_text

log = logging.getLogger(__name__)

NS_TPTZ = "http://www.onvif.org/ver20/ptz/wsdl"
TPTZ = ElementMaker(namespace=NS_TPTZ, nsmap={**NSMAP, "tptz": NS_TPTZ})

NODE = "PTZNode_1"
CONFIG = "PTZConfig_1"

_BASE = "http://www.onvif.org/ver10/tptz"
ABS_PT = f"{_BASE}/PanTiltSpaces/PositionGenericSpace"
ABS_Z = f"{_BASE}/ZoomSpaces/PositionGenericSpace"
REL_PT = f"{_BASE}/PanTiltSpaces/TranslationGenericSpace"
REL_PT_FOV = f"{_BASE}/PanTiltSpaces/TranslationSpaceFov"
REL_Z = f"{_BASE}/ZoomSpaces/TranslationGenericSpace"
CONT_PT = f"{_BASE}/PanTiltSpaces/VelocityGenericSpace"
CONT_Z = f"{_BASE}/ZoomSpaces/VelocityGenericSpace"
SPEED_PT = f"{_BASE}/PanTiltSpaces/GenericSpeedSpace"
SPEED_Z = f"{_BASE}/ZoomSpaces/ZoomGenericSpeedSpace"

DEFAULT_TIMEOUT = 10.0  # ContinuousMove without a Timeout (DefaultPTZTimeout)
MIN_TIMEOUT = 1.0
# The picture the head "sees" (a digital PTZ): at zoom 0 the transcoded sub stream shows
# VIEW_AT_WIDE of the main picture's width and height (all of it), at zoom 1 a MAX_ZOOM
# times narrower window that pan and tilt move across the picture.
VIEW_AT_WIDE = 1.0
MAX_ZOOM = 4.0
TOUR_OPERATIONS = ("Start", "Stop", "Pause")
_NAME = re.compile(r"[^\x00-\x1f]{1,64}")


# --------------------------------------------------------------------------- model


def view_window(pan: float, tilt: float, zoom: float) -> tuple[float, float, float, float]:
    """The crop of the main picture a head position shows, as fractions of the picture:
    (left, top, width, height). Pan 1 puts the window at the right edge, tilt 1 at the top."""
    frac = VIEW_AT_WIDE / (1.0 + min(1.0, max(0.0, zoom)) * (MAX_ZOOM - 1.0))
    cx = 0.5 + min(1.0, max(-1.0, pan)) * (1.0 - frac) / 2
    cy = 0.5 - min(1.0, max(-1.0, tilt)) * (1.0 - frac) / 2
    return cx - frac / 2, cy - frac / 2, frac, frac


def fov_to_pan(zoom: float) -> float:
    """Generic pan units per FOV-translation unit (1 = half the view) at ``zoom``."""
    frac = view_window(0.0, 0.0, zoom)[2]
    return min(1.0, frac / (1.0 - frac)) if frac < 1.0 else 1.0


@dataclass
class Preset:
    """A stored preset."""

    token: str
    name: str
    pan: float
    tilt: float
    zoom: float

    def to_json(self) -> dict[str, Any]:
        """The persisted form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Settings:
    """The PTZ configuration a client may set (SetConfiguration), as stored."""

    name: str = "PTZConfig"
    speed: tuple[float, float, float] = (1.0, 1.0, 1.0)  # DefaultPTZSpeed (0..1 each)
    timeout: float = DEFAULT_TIMEOUT  # DefaultPTZTimeout (ContinuousMove without Timeout)
    pan: tuple[float, float] = PAN_RANGE  # PanTiltLimits x
    tilt: tuple[float, float] = PAN_RANGE  # PanTiltLimits y
    zoom: tuple[float, float] = ZOOM_RANGE  # ZoomLimits

    def to_json(self) -> dict[str, Any]:
        """The persisted form."""
        return {
            "name": self.name,
            "speed": list(self.speed),
            "timeout": self.timeout,
            "pan": list(self.pan),
            "tilt": list(self.tilt),
            "zoom": list(self.zoom),
        }


def _pair(v: Any, lo: float, hi: float) -> tuple[float, float] | None:
    if (
        isinstance(v, list)
        and len(v) == 2
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        and lo <= v[0] <= v[1] <= hi
    ):
        return float(v[0]), float(v[1])
    return None


def settings(cam: Camera) -> Settings:
    """The stored PTZ configuration (a bad stored value takes its default; the timeout is
    kept within what ``[onvif] ptz_max_timeout`` allows now)."""
    d = cam.doc.get("ptz")
    d = d.get("config") if isinstance(d, dict) else None
    if not isinstance(d, dict):
        d = {}
    base = Settings()
    name = d.get("name")
    speed = d.get("speed")
    if not (
        isinstance(speed, list)
        and len(speed) == 3
        and all(isinstance(x, int | float) and 0 <= x <= 1 for x in speed)
    ):
        speed = base.speed
    timeout = d.get("timeout")
    if not isinstance(timeout, int | float) or not math.isfinite(timeout):
        timeout = base.timeout
    timeout = min(max(float(timeout), MIN_TIMEOUT), cam.app_cfg.onvif.ptz_max_timeout)
    return Settings(
        name=name if isinstance(name, str) and _NAME.fullmatch(name) else base.name,
        speed=(float(speed[0]), float(speed[1]), float(speed[2])),
        timeout=timeout,
        pan=_pair(d.get("pan"), *PAN_RANGE) or base.pan,
        tilt=_pair(d.get("tilt"), *PAN_RANGE) or base.tilt,
        zoom=_pair(d.get("zoom"), *ZOOM_RANGE) or base.zoom,
    )


# --------------------------------------------------------------------------- service


def ptz_enabled(cam: Camera) -> bool:
    """True when the camera has a PTZ head (``[[cameras]] ptz``, default true)."""
    return bool(getattr(cam.cfg, "ptz", True))


def profile_ptz(cam: Camera, p: ProfileState) -> str | None:
    """The PTZ configuration token of a profile: the fixed profiles have it unless a client
    removed it (stored ``None``); other profiles only once a client added it."""
    if not ptz_enabled(cam):
        return None
    tok = getattr(p, "ptz", "")
    if tok == "":
        return CONFIG if p.fixed else None
    return tok if tok == CONFIG else None


def _f(v: float) -> str:
    return f"{round(v, 6):g}"


def _range(lo: float, hi: float, tag: str = "XRange") -> etree._Element:
    return getattr(TT, tag)(TT.Min(_f(lo)), TT.Max(_f(hi)))


def _space2(
    tag: str,
    uri: str,
    lo: float = -1.0,
    hi: float = 1.0,
    ylo: float | None = None,
    yhi: float | None = None,
) -> etree._Element:
    y = _range(lo if ylo is None else ylo, hi if yhi is None else yhi, "YRange")
    return getattr(TT, tag)(TT.URI(uri), _range(lo, hi), y)


def _space1(tag: str, uri: str, lo: float, hi: float) -> etree._Element:
    return getattr(TT, tag)(TT.URI(uri), _range(lo, hi))


def spaces_el(tag: str = "SupportedPTZSpaces") -> etree._Element:
    """tt:PTZSpaces of the node (also the configuration options' Spaces)."""
    return getattr(TT, tag)(
        _space2("AbsolutePanTiltPositionSpace", ABS_PT),
        _space1("AbsoluteZoomPositionSpace", ABS_Z, *ZOOM_RANGE),
        _space2("RelativePanTiltTranslationSpace", REL_PT),
        _space2("RelativePanTiltTranslationSpace", REL_PT_FOV),
        _space1("RelativeZoomTranslationSpace", REL_Z, -1.0, 1.0),
        _space2("ContinuousPanTiltVelocitySpace", CONT_PT),
        _space1("ContinuousZoomVelocitySpace", CONT_Z, -1.0, 1.0),
        _space1("PanTiltSpeedSpace", SPEED_PT, 0.0, 1.0),
        _space1("ZoomSpeedSpace", SPEED_Z, 0.0, 1.0),
    )


def config_el(cam: Camera, tag: str = "PTZConfiguration", ns: Any = TT) -> etree._Element:
    """A tt:PTZConfiguration (under any tag/namespace: tptz:, trt: profiles, tr2:PTZ) with
    what SetConfiguration stored."""
    s = settings(cam)
    return getattr(ns, tag)(
        TT.Name(s.name),
        TT.UseCount(str(sum(1 for p in cam.profiles if profile_ptz(cam, p) == CONFIG))),
        TT.NodeToken(NODE),
        TT.DefaultAbsolutePantTiltPositionSpace(ABS_PT),
        TT.DefaultAbsoluteZoomPositionSpace(ABS_Z),
        TT.DefaultRelativePanTiltTranslationSpace(REL_PT),
        TT.DefaultRelativeZoomTranslationSpace(REL_Z),
        TT.DefaultContinuousPanTiltVelocitySpace(CONT_PT),
        TT.DefaultContinuousZoomVelocitySpace(CONT_Z),
        TT.DefaultPTZSpeed(
            TT.PanTilt(x=_f(s.speed[0]), y=_f(s.speed[1]), space=SPEED_PT),
            TT.Zoom(x=_f(s.speed[2]), space=SPEED_Z),
        ),
        TT.DefaultPTZTimeout(format_duration(s.timeout)),
        TT.PanTiltLimits(_space2("Range", ABS_PT, *s.pan, *s.tilt)),
        TT.ZoomLimits(_space1("Range", ABS_Z, *s.zoom)),
        token=CONFIG,
    )


def _read_position(
    pos: etree._Element, limits: Settings, code: str
) -> tuple[float | None, float | None, float | None]:
    """A tt:PTZVector in the absolute generic spaces as (pan, tilt, zoom), None for an axis
    it leaves out; within the configured limits, else a ``code`` fault."""
    target: list[float | None] = [None, None, None]
    pt, z = child(pos, "PanTilt"), child(pos, "Zoom")
    if pt is not None:
        _check_space(pt, ABS_PT, code)
        target[0] = _attr_float(pt, "x", code)
        target[1] = _attr_float(pt, "y", code)
    if z is not None:
        _check_space(z, ABS_Z, code)
        target[2] = _attr_float(z, "x", code)
    _check_position(limits, target, code)
    return target[0], target[1], target[2]


def _duration_in(text: str, lo: float, hi: float, what: str, bad: Callable[[str], Fault]) -> float:
    """An xs:duration of a tour (seconds) within ``lo..hi``, else ``bad`` naming ``what``."""
    try:
        d = duration_seconds(text)
    except ValueError:
        d = math.nan
    if not lo <= d <= hi:
        raise bad(f"{what} {text[:40]!r} is outside {format_duration(lo)}..{format_duration(hi)}")
    return d


def _num(v: Any, lo: float, hi: float) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi


def _spot_ok(spot: Any) -> bool:
    """A stored tour spot in the shape :meth:`PtzService._read_spot` writes."""
    if not isinstance(spot, dict):
        return False
    if "preset" in spot:
        where = isinstance(spot["preset"], str)
    elif "home" in spot:
        where = spot["home"] is True
    else:
        axes = [spot.get(k) for k in ("pan", "tilt", "zoom")]
        where = any(a is not None for a in axes) and all(
            a is None or _num(a, lo, hi)
            for a, (lo, hi) in zip(axes, (PAN_RANGE, PAN_RANGE, ZOOM_RANGE), strict=True)
        )
        where = where and (spot.get("pan") is None) == (spot.get("tilt") is None)
    speed = spot.get("speed", {})
    return (
        where
        and isinstance(speed, dict)
        and all(k in ("x", "y", "z") and _num(v, 0.0, 1.0) for k, v in speed.items())
        and ("x" in speed) == ("y" in speed)
        and _num(spot.get("stay", DEFAULT_STAY), MIN_STAY, MAX_STAY)
    )


def _tour_ok(t: Any) -> bool:
    """A stored preset tour in the shape :meth:`PtzService._read_tour` writes."""
    if not isinstance(t, dict) or not isinstance(t.get("token"), str):
        return False
    rt, rd, spots = t.get("recurring_time"), t.get("recurring_duration"), t.get("spots", [])
    return (
        isinstance(t.get("name", ""), str)
        and t.get("direction", "Forward") in ("Forward", "Backward")
        and (rt is None or (isinstance(rt, int) and _num(rt, 0, MAX_RECURRING_TIME)))
        and (rd is None or _num(rd, MIN_RECURRING_DURATION, MAX_RECURRING_DURATION))
        and isinstance(spots, list)
        and all(_spot_ok(sp) for sp in spots)
    )


class PtzService:
    """Every camera's head, presets and home position, and the PTZ SOAP operations."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._heads: dict[str, Head] = {}
        self.moves = 0  # move commands accepted (stats)
        self.tours_started = 0  # OperatePresetTour Start accepted (stats)
        self._bad_tours: set[tuple[str, str]] = set()  # (camera, tour) already warned about
        self.ops = self._operations()

    # ------------------------------------------------------------------ model
    def head(self, cam: Camera) -> Head:
        """The camera's head (created at its home position). It lives on the camera, so the
        transcoded sub stream reads the same position."""
        h = getattr(cam, "ptz_head", None)
        if not isinstance(h, Head):
            h = Head()
            s = settings(cam)
            for axis, (lo, hi), v in zip(
                (h.pan, h.tilt, h.zoom), (s.pan, s.tilt, s.zoom), self.home(cam), strict=True
            ):
                axis.lo, axis.hi = lo, hi
                axis.start = axis.clamp(v)
            cam.ptz_head = h
        self._heads[cam.key] = h
        return h

    def forget(self, cam: Camera) -> None:
        """Drop a removed camera's head."""
        self._heads.pop(cam.key, None)

    def stats(self) -> dict[str, int]:
        """Counters."""
        now = self.clock()
        moving = sum(1 for h in self._heads.values() if any(h.moving(now)))
        touring = sum(
            1 for h in self._heads.values() if h.run is not None and h.run.state == TOURING
        )
        return {
            "heads": len(self._heads),
            "moving": moving,
            "moves": self.moves,
            "touring": touring,
            "tours_started": self.tours_started,
        }

    def _doc(self, cam: Camera) -> dict[str, Any]:
        d = cam.doc.get("ptz")
        return d if isinstance(d, dict) else {}

    def _store(self, cam: Camera, doc: dict[str, Any]) -> None:
        cam.doc["ptz"] = doc
        cam.save()

    def home(self, cam: Camera) -> tuple[float, float, float]:
        """The home position (SetHomePosition; the centre, zoomed out, by default)."""
        h = self._doc(cam).get("home")
        if isinstance(h, list) and len(h) == 3 and all(isinstance(v, int | float) for v in h):
            return (
                min(1.0, max(-1.0, float(h[0]))),
                min(1.0, max(-1.0, float(h[1]))),
                min(1.0, max(0.0, float(h[2]))),
            )
        return 0.0, 0.0, 0.0

    def presets(self, cam: Camera) -> list[Preset]:
        """Stored presets, in creation order."""
        out = []
        for d in self._doc(cam).get("presets", []):
            try:
                out.append(
                    Preset(
                        str(d["token"]),
                        str(d["name"]),
                        float(d["pan"]),
                        float(d["tilt"]),
                        float(d["zoom"]),
                    )
                )
            except (KeyError, TypeError, ValueError):
                continue
        return out

    def _save_presets(self, cam: Camera, presets: list[Preset]) -> None:
        doc = dict(self._doc(cam))
        doc["presets"] = [p.to_json() for p in presets]
        self._store(cam, doc)

    def goto(
        self,
        cam: Camera,
        target: tuple[float | None, float | None, float | None],
        speed: tuple[float, float, float],
    ) -> None:
        """Move the axes with a target toward it at the given speeds (0..1)."""
        h, now = self.head(cam), self.clock()
        h.manual(now)
        o = cam.app_cfg.onvif
        rates = (
            speed[0] * o.ptz_pan_speed,
            speed[1] * o.ptz_pan_speed,
            speed[2] * o.ptz_zoom_speed,
        )
        for axis, value, rate in zip((h.pan, h.tilt, h.zoom), target, rates, strict=True):
            if value is not None:
                axis.go(now, value, rate)
        self.moves += 1

    # ------------------------------------------------------------------ tours
    def tours(self, cam: Camera) -> list[dict[str, Any]]:
        """Stored preset tours (JSON form), in creation order; an entry the state file holds
        in a shape this server never writes (hand-edited, corrupt) is left out, with one
        warning naming it."""
        out = []
        for t in self._doc(cam).get("tours", []):
            if _tour_ok(t):
                out.append(t)
                continue
            key = (cam.key, str(t.get("token") if isinstance(t, dict) else t)[:64])
            if key not in self._bad_tours and len(self._bad_tours) < 1024:
                self._bad_tours.add(key)
                log.warning(
                    "ptz: camera %r: preset tour %r in the state file is malformed: it is "
                    "ignored, and dropped at the next tour change; fix it in the state file "
                    '(under "ptz" -> "tours") or create the tour again',
                    cam.name,
                    key[1],
                )
        return out

    def _save_tours(self, cam: Camera, tours: list[dict[str, Any]]) -> None:
        doc = dict(self._doc(cam))
        doc["tours"] = tours
        self._store(cam, doc)

    def _find_tour(self, cam: Camera, token: str | None) -> dict[str, Any]:
        for t in self.tours(cam):
            if t["token"] == token:
                return t
        raise invalid_arg("ter:NoToken", f"no preset tour with token {str(token)[:64]!r}")

    def _legs(self, cam: Camera, tour: dict[str, Any]) -> list[Leg]:
        """The tour's spots resolved now (presets looked up, default speed and stay)."""
        s, o = settings(cam), cam.app_cfg.onvif
        presets = {p.token: p for p in self.presets(cam)}
        legs = []
        for i, spot in enumerate(tour.get("spots", [])):
            target: tuple[float | None, float | None, float | None]
            if "preset" in spot:
                p = presets.get(spot["preset"])
                if p is None:
                    raise Fault(
                        ("ter:InvalidArgVal", "ter:ActivationFailed"),
                        f"TourSpot {i + 1} names preset {spot['preset']!r}, which was removed; "
                        "fix the tour with ModifyPresetTour",
                    )
                target = (p.pan, p.tilt, p.zoom)
            elif spot.get("home"):
                target = self.home(cam)
            else:
                target = (spot.get("pan"), spot.get("tilt"), spot.get("zoom"))
            sp = spot.get("speed") or {}
            speed = (
                sp.get("x", s.speed[0]),
                sp.get("y", s.speed[1]),
                sp.get("z", s.speed[2]),
            )
            rates = (
                speed[0] * o.ptz_pan_speed,
                speed[1] * o.ptz_pan_speed,
                speed[2] * o.ptz_zoom_speed,
            )
            legs.append(Leg(i, target, rates, float(spot.get("stay", DEFAULT_STAY))))
        if tour.get("direction") == "Backward":
            legs.reverse()
        return legs

    def tour_state(self, cam: Camera, token: str) -> tuple[str, int | None]:
        """(Idle/Touring/Paused, index of the current spot) of a tour now."""
        h = self.head(cam)
        h.advance(self.clock())
        if h.run is None or h.run.token != token:
            return IDLE, None
        return h.run.state, h.run.leg.spot

    def apply_limits(self, cam: Camera, s: Settings) -> None:
        """New limits: a tour ends, the head stops and moves back inside them."""
        h, now = self.head(cam), self.clock()
        h.advance(now)
        if h.run is not None:
            h.run.stop(h, now)
            h.run = None
        h.stop(now)
        o = cam.app_cfg.onvif
        for axis, (lo, hi), rate in zip(
            (h.pan, h.tilt, h.zoom),
            (s.pan, s.tilt, s.zoom),
            (o.ptz_pan_speed, o.ptz_pan_speed, o.ptz_zoom_speed),
            strict=True,
        ):
            axis.lo, axis.hi = lo, hi
            pos = axis.at(now)
            if axis.clamp(pos) != pos:
                axis.go(now, pos, rate)

    # ------------------------------------------------------------------ requests
    def _profile(self, ctx: Context, req: etree._Element) -> ProfileState:
        token = text_of(req, "ProfileToken")
        if not token:
            raise invalid_arg("ter:NoProfile", "missing ProfileToken")
        p = ctx.camera.profile(token)
        if profile_ptz(ctx.camera, p) is None:
            raise invalid_arg("ter:NoPTZProfile", f"profile {token[:64]!r} has no PTZConfiguration")
        return p

    def _speed(self, cam: Camera, req: etree._Element) -> tuple[float, float, float]:
        """The request's Speed (generic speed space, 0..1 each), default DefaultPTZSpeed."""
        return read_speed(child(req, "Speed"), settings(cam).speed, "ter:InvalidSpeed")

    def _find_preset(self, cam: Camera, token: str | None) -> Preset:
        for p in self.presets(cam):
            if p.token == token:
                return p
        raise invalid_arg("ter:NoToken", f"no preset with token {str(token)[:64]!r}")

    # ------------------------------------------------------------------ XML
    def _vector(self, tag: str, pan: float, tilt: float, zoom: float) -> etree._Element:
        return getattr(TT, tag)(
            TT.PanTilt(x=_f(pan), y=_f(tilt), space=ABS_PT), TT.Zoom(x=_f(zoom), space=ABS_Z)
        )

    def _node_el(self, cam: Camera, tag: str) -> etree._Element:
        return getattr(TPTZ, tag)(
            TT.Name("PTZ"),
            spaces_el(),
            TT.MaximumNumberOfPresets(str(cam.app_cfg.onvif.ptz_max_presets)),
            TT.HomeSupported("true"),
            TT.Extension(
                TT.SupportedPresetTour(
                    TT.MaximumNumberOfPresetTours(str(cam.app_cfg.onvif.ptz_max_tours)),
                    *[TT.PTZPresetTourOperation(op) for op in TOUR_OPERATIONS],
                )
            ),
            token=NODE,
            FixedHomePosition="false",
        )

    def _spot_el(self, spot: dict[str, Any], tag: str = "TourSpot") -> etree._Element:
        if "preset" in spot:
            detail = TT.PresetDetail(TT.PresetToken(spot["preset"]))
        elif spot.get("home"):
            detail = TT.PresetDetail(TT.Home("true"))
        else:
            pos = TT.PTZPosition()
            if spot.get("pan") is not None:
                pos.append(TT.PanTilt(x=_f(spot["pan"]), y=_f(spot["tilt"]), space=ABS_PT))
            if spot.get("zoom") is not None:
                pos.append(TT.Zoom(x=_f(spot["zoom"]), space=ABS_Z))
            detail = TT.PresetDetail(pos)
        el = getattr(TT, tag)(detail)
        sp = spot.get("speed")
        if sp:
            speed = TT.Speed()
            if "x" in sp:
                speed.append(TT.PanTilt(x=_f(sp["x"]), y=_f(sp["y"]), space=SPEED_PT))
            if "z" in sp:
                speed.append(TT.Zoom(x=_f(sp["z"]), space=SPEED_Z))
            el.append(speed)
        if "stay" in spot:
            el.append(TT.StayTime(format_duration(spot["stay"])))
        return el

    def _tour_el(self, cam: Camera, tour: dict[str, Any], tag: str) -> etree._Element:
        state, current = self.tour_state(cam, tour["token"])
        status = TT.Status(TT.State(state))
        spots = tour.get("spots", [])
        if current is not None and current < len(spots):
            status.append(self._spot_el(spots[current], "CurrentTourSpot"))
        cond = TT.StartingCondition()
        if tour.get("recurring_time") is not None:
            cond.append(TT.RecurringTime(str(tour["recurring_time"])))
        if tour.get("recurring_duration") is not None:
            cond.append(TT.RecurringDuration(format_duration(tour["recurring_duration"])))
        cond.append(TT.Direction(tour.get("direction", "Forward")))
        el = getattr(TPTZ, tag)(token=tour["token"])
        if tour.get("name"):
            el.append(TT.Name(tour["name"]))
        el.extend([status, TT.AutoStart("false"), cond])
        el.extend(self._spot_el(sp) for sp in spots)
        return el

    def _read_tour(self, cam: Camera, el: etree._Element, old: dict[str, Any]) -> dict[str, Any]:
        """A tt:PresetTour of ModifyPresetTour as the stored form (ter:InvalidPresetTour)."""

        def bad(reason: str) -> Fault:
            return invalid_arg("ter:InvalidPresetTour", reason)

        new: dict[str, Any] = {"token": old["token"], "name": old.get("name", "")}
        name = text_of(el, "Name")
        if name is not None:
            if not _NAME.fullmatch(name):
                raise bad("Name must be 1..64 characters without control characters")
            new["name"] = name
        if boolean(text_of(el, "AutoStart")):
            raise bad("AutoStart is not supported (GetPresetTourOptions AutoStart is false)")
        cond = child(el, "StartingCondition")
        if boolean(cond.get("RandomPresetOrder") if cond is not None else None):
            raise bad("RandomPresetOrder is not supported")
        text = text_of(cond, "RecurringTime")
        if text is not None:
            try:
                n = int(text)
            except ValueError:
                n = -1
            if not 0 <= n <= MAX_RECURRING_TIME:
                raise bad(
                    f"RecurringTime {text[:20]!r} is outside 0..{MAX_RECURRING_TIME} "
                    "(0: until stopped)"
                )
            new["recurring_time"] = n
        text = text_of(cond, "RecurringDuration")
        if text is not None:
            new["recurring_duration"] = _duration_in(
                text, MIN_RECURRING_DURATION, MAX_RECURRING_DURATION, "RecurringDuration", bad
            )
        direction = text_of(cond, "Direction") or "Forward"
        if direction not in ("Forward", "Backward"):
            raise bad(f"Direction {direction[:20]!r} is not Forward or Backward")
        new["direction"] = direction
        spots_el = children(el, "TourSpot")
        top = cam.app_cfg.onvif.ptz_max_tour_spots
        if len(spots_el) > top:
            raise bad(
                f"{len(spots_el)} TourSpots; a tour holds at most {top} "
                "([onvif] ptz_max_tour_spots)"
            )
        presets = {p.token for p in self.presets(cam)}
        limits = settings(cam)
        new["spots"] = [
            self._read_spot(i + 1, sp, presets, limits, bad) for i, sp in enumerate(spots_el)
        ]
        return new

    def _read_spot(
        self,
        n: int,
        el: etree._Element,
        presets: set[str],
        limits: Settings,
        bad: Callable[[str], Fault],
    ) -> dict[str, Any]:
        det = child(el, "PresetDetail")
        token, home, pos = (
            text_of(det, "PresetToken"),
            text_of(det, "Home"),
            child(det, "PTZPosition"),
        )
        spot: dict[str, Any] = {}
        if token is not None:
            if token not in presets:
                raise bad(f"TourSpot {n}: no preset with token {token[:64]!r}")
            spot["preset"] = token
        elif home is not None:
            if not boolean(home):
                raise bad(f"TourSpot {n}: Home must be true")
            spot["home"] = True
        elif pos is not None:
            pt, z = child(pos, "PanTilt"), child(pos, "Zoom")
            if pt is None and z is None:
                raise bad(f"TourSpot {n}: PTZPosition has neither PanTilt nor Zoom")
            try:
                target = _read_position(pos, limits, "ter:InvalidPresetTour")
            except Fault as exc:
                raise bad(f"TourSpot {n}: {exc.reason}") from None
            if target[0] is not None:
                spot["pan"], spot["tilt"] = target[0], target[1]
            if target[2] is not None:
                spot["zoom"] = target[2]
        else:
            raise bad(f"TourSpot {n}: PresetDetail needs PresetToken, Home or PTZPosition")
        sp = child(el, "Speed")
        if sp is not None:
            try:
                x, y, z_ = read_speed(sp, (0.0, 0.0, 0.0), "ter:InvalidPresetTour")
            except Fault as exc:
                raise bad(f"TourSpot {n}: {exc.reason}") from None
            speed: dict[str, float] = {}
            if child(sp, "PanTilt") is not None:
                speed["x"], speed["y"] = x, y
            if child(sp, "Zoom") is not None:
                speed["z"] = z_
            if speed:
                spot["speed"] = speed
        text = text_of(el, "StayTime")
        if text is not None:
            spot["stay"] = _duration_in(text, MIN_STAY, MAX_STAY, f"TourSpot {n}: StayTime", bad)
        return spot

    # ------------------------------------------------------------------ operations
    def _operations(self) -> OperationTable:
        ops = OperationTable()

        def need_ptz(ctx: Context) -> Camera:
            if not ptz_enabled(ctx.camera):
                raise Fault(
                    ("ter:ActionNotSupported", "ter:PTZNotSupported"),
                    "this camera has no PTZ ([[cameras]] ptz = false)",
                    "Receiver",
                )
            return ctx.camera

        @ops.op(NS_TPTZ, "GetServiceCapabilities", PRE_AUTH)
        def get_service_capabilities(ctx: Context, req: etree._Element) -> etree._Element:
            """PTZ capabilities: MoveStatus and Position in GetStatus."""
            return TPTZ.GetServiceCapabilitiesResponse(capabilities_tptz(ctx))

        @ops.op(NS_TPTZ, "GetNodes", READ_MEDIA)
        def get_nodes(ctx: Context, req: etree._Element) -> etree._Element:
            """The one PTZ node."""
            cam = need_ptz(ctx)
            return TPTZ.GetNodesResponse(self._node_el(cam, "PTZNode"))

        @ops.op(NS_TPTZ, "GetNode", READ_MEDIA)
        def get_node(ctx: Context, req: etree._Element) -> etree._Element:
            """One PTZ node by token."""
            cam = need_ptz(ctx)
            tok = text_of(req, "NodeToken")
            if tok != NODE:
                raise invalid_arg("ter:NoEntity", f"no PTZ node {str(tok)[:64]!r}")
            return TPTZ.GetNodeResponse(self._node_el(cam, "PTZNode"))

        @ops.op(NS_TPTZ, "GetConfigurations", READ_MEDIA)
        def get_configurations(ctx: Context, req: etree._Element) -> etree._Element:
            """The one PTZ configuration."""
            cam = need_ptz(ctx)
            return TPTZ.GetConfigurationsResponse(config_el(cam, "PTZConfiguration", TPTZ))

        @ops.op(NS_TPTZ, "GetConfiguration", READ_MEDIA)
        def get_configuration(ctx: Context, req: etree._Element) -> etree._Element:
            """One PTZ configuration by token."""
            cam = need_ptz(ctx)
            _check_config(text_of(req, "PTZConfigurationToken"))
            return TPTZ.GetConfigurationResponse(config_el(cam, "PTZConfiguration", TPTZ))

        @ops.op(NS_TPTZ, "GetCompatibleConfigurations", READ_MEDIA)
        def get_compatible(ctx: Context, req: etree._Element) -> etree._Element:
            """Every profile can take the PTZ configuration."""
            cam = need_ptz(ctx)
            cam.profile(text_of(req, "ProfileToken") or "")
            return TPTZ.GetCompatibleConfigurationsResponse(
                config_el(cam, "PTZConfiguration", TPTZ)
            )

        @ops.op(NS_TPTZ, "GetConfigurationOptions", READ_MEDIA)
        def get_configuration_options(ctx: Context, req: etree._Element) -> etree._Element:
            """The node's spaces and the ContinuousMove timeout range."""
            cam = need_ptz(ctx)
            _check_config(text_of(req, "ConfigurationToken"))
            return TPTZ.GetConfigurationOptionsResponse(
                TPTZ.PTZConfigurationOptions(
                    spaces_el("Spaces"),
                    TT.PTZTimeout(
                        TT.Min(format_duration(MIN_TIMEOUT)),
                        TT.Max(format_duration(cam.app_cfg.onvif.ptz_max_timeout)),
                    ),
                )
            )

        @ops.op(NS_TPTZ, "SetConfiguration", ACTUATE)
        def set_configuration(ctx: Context, req: etree._Element) -> etree._Element:
            """Store the client's Name, DefaultPTZSpeed, DefaultPTZTimeout and limits
            (always persisted: ForcePersistence is taken as true, as the spec now says)."""
            cam = need_ptz(ctx)
            el = child(req, "PTZConfiguration")
            if el is None:
                raise invalid_arg("ter:NoConfig", "missing PTZConfiguration")
            new = read_settings(cam, el)
            doc = dict(self._doc(cam))
            doc["config"] = new.to_json()
            self._store(cam, doc)
            self.apply_limits(cam, new)
            return TPTZ.SetConfigurationResponse()

        @ops.op(NS_TPTZ, "GetStatus", READ_MEDIA)
        def get_status(ctx: Context, req: etree._Element) -> etree._Element:
            """Position and MoveStatus now."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            h, now = self.head(cam), self.clock()
            pt, z = h.moving(now)
            return TPTZ.GetStatusResponse(
                TPTZ.PTZStatus(
                    self._vector("Position", *h.position(now)),
                    TT.MoveStatus(
                        TT.PanTilt("MOVING" if pt else "IDLE"),
                        TT.Zoom("MOVING" if z else "IDLE"),
                    ),
                    TT.UtcTime(utc_text(cam.now())),
                )
            )

        @ops.op(NS_TPTZ, "AbsoluteMove", ACTUATE)
        def absolute_move(ctx: Context, req: etree._Element) -> etree._Element:
            """Move to a position (PositionGenericSpace) at Speed."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            pos = child(req, "Position")
            if pos is None:
                raise invalid_arg("ter:InvalidPosition", "missing Position")
            target = _read_position(pos, settings(cam), "ter:InvalidPosition")
            self.goto(cam, target, self._speed(cam, req))
            return TPTZ.AbsoluteMoveResponse()

        @ops.op(NS_TPTZ, "RelativeMove", ACTUATE)
        def relative_move(ctx: Context, req: etree._Element) -> etree._Element:
            """Move by a translation (generic or field-of-view space), stopping at limits."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            tr = child(req, "Translation")
            if tr is None:
                raise invalid_arg("ter:InvalidTranslation", "missing Translation")
            h, now = self.head(cam), self.clock()
            pan, tilt, zoom = h.position(now)
            target: list[float | None] = [None, None, None]
            pt, z = child(tr, "PanTilt"), child(tr, "Zoom")
            if pt is not None:
                space = _check_space(pt, REL_PT, "ter:InvalidTranslation", (REL_PT, REL_PT_FOV))
                dx = _attr_float(pt, "x", "ter:InvalidTranslation")
                dy = _attr_float(pt, "y", "ter:InvalidTranslation")
                if not (-1.0 <= dx <= 1.0 and -1.0 <= dy <= 1.0):
                    raise invalid_arg("ter:InvalidTranslation", "PanTilt must be within -1..1")
                k = fov_to_pan(zoom) if space == REL_PT_FOV else 1.0
                target[0], target[1] = pan + dx * k, tilt + dy * k
            if z is not None:
                _check_space(z, REL_Z, "ter:InvalidTranslation")
                dz = _attr_float(z, "x", "ter:InvalidTranslation")
                if not -1.0 <= dz <= 1.0:
                    raise invalid_arg("ter:InvalidTranslation", "Zoom must be within -1..1")
                target[2] = zoom + dz
            self.goto(cam, (target[0], target[1], target[2]), self._speed(cam, req))
            return TPTZ.RelativeMoveResponse()

        @ops.op(NS_TPTZ, "ContinuousMove", ACTUATE)
        def continuous_move(ctx: Context, req: etree._Element) -> etree._Element:
            """Move at a velocity until Stop, the Timeout or a limit."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            vel = child(req, "Velocity")
            if vel is None:
                raise invalid_arg("ter:InvalidVelocity", "missing Velocity")
            timeout = settings(cam).timeout
            text = text_of(req, "Timeout")
            if text:
                try:
                    timeout = duration_seconds(text)
                except ValueError:
                    raise invalid_arg("ter:InvalidArgs", f"bad Timeout {text[:40]!r}") from None
                if not math.isfinite(timeout) or timeout <= 0:
                    raise invalid_arg("ter:InvalidArgs", f"Timeout {text[:40]!r} is not positive")
            timeout = min(timeout, cam.app_cfg.onvif.ptz_max_timeout)
            h, now = self.head(cam), self.clock()
            h.manual(now)
            o = cam.app_cfg.onvif
            pt, z = child(vel, "PanTilt"), child(vel, "Zoom")
            values = []
            if pt is not None:
                _check_space(pt, CONT_PT, "ter:InvalidVelocity")
                values += [
                    (h.pan, _attr_float(pt, "x", "ter:InvalidVelocity"), o.ptz_pan_speed),
                    (h.tilt, _attr_float(pt, "y", "ter:InvalidVelocity"), o.ptz_pan_speed),
                ]
            if z is not None:
                _check_space(z, CONT_Z, "ter:InvalidVelocity")
                values.append(
                    (h.zoom, _attr_float(z, "x", "ter:InvalidVelocity"), o.ptz_zoom_speed)
                )
            if any(not -1.0 <= v <= 1.0 for _a, v, _s in values):
                raise invalid_arg("ter:InvalidVelocity", "Velocity must be within -1..1")
            for axis, v, scale in values:
                axis.drive(now, v * scale, now + timeout)
            self.moves += 1
            return TPTZ.ContinuousMoveResponse()

        @ops.op(NS_TPTZ, "Stop", ACTUATE)
        def stop(ctx: Context, req: etree._Element) -> etree._Element:
            """Stop pan/tilt and/or zoom (both when not said)."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            pt = text_of(req, "PanTilt")
            z = text_of(req, "Zoom")
            h, now = self.head(cam), self.clock()
            h.manual(now)
            h.stop(
                now,
                pantilt=True if pt is None else boolean(pt),
                zoom=True if z is None else boolean(z),
            )
            return TPTZ.StopResponse()

        @ops.op(NS_TPTZ, "GotoHomePosition", ACTUATE)
        def goto_home(ctx: Context, req: etree._Element) -> etree._Element:
            """Move to the home position at Speed."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            self.goto(cam, self.home(cam), self._speed(cam, req))
            return TPTZ.GotoHomePositionResponse()

        @ops.op(NS_TPTZ, "SetHomePosition", ACTUATE)
        def set_home(ctx: Context, req: etree._Element) -> etree._Element:
            """The current position becomes home (persisted)."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            doc = dict(self._doc(cam))
            doc["home"] = [round(v, 6) for v in self.head(cam).position(self.clock())]
            self._store(cam, doc)
            return TPTZ.SetHomePositionResponse()

        @ops.op(NS_TPTZ, "GetPresets", READ_MEDIA)
        def get_presets(ctx: Context, req: etree._Element) -> etree._Element:
            """Every stored preset with its position."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            return TPTZ.GetPresetsResponse(
                *[
                    TPTZ.Preset(
                        TT.Name(p.name),
                        self._vector("PTZPosition", p.pan, p.tilt, p.zoom),
                        token=p.token,
                    )
                    for p in self.presets(cam)
                ]
            )

        @ops.op(NS_TPTZ, "SetPreset", ACTUATE)
        def set_preset(ctx: Context, req: etree._Element) -> etree._Element:
            """Store the current position as a new preset, or overwrite one by token."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            presets = self.presets(cam)
            token = text_of(req, "PresetToken")
            name = text_of(req, "PresetName")
            if name is not None and not _NAME.fullmatch(name):
                raise invalid_arg("ter:InvalidPresetName", "PresetName must be 1..64 characters")
            pos = self.head(cam).position(self.clock())
            if token:
                old = self._find_preset(cam, token)
                name = name or old.name
            else:
                if len(presets) >= cam.app_cfg.onvif.ptz_max_presets:
                    raise Fault(
                        ("ter:Action", "ter:TooManyPresets"),
                        f"this camera holds at most {cam.app_cfg.onvif.ptz_max_presets} presets "
                        "([onvif] ptz_max_presets); remove one first",
                        "Receiver",
                    )
                token = "Preset_" + secrets.token_hex(4)
                name = name or token
            if any(p.name == name and p.token != token for p in presets):
                raise invalid_arg("ter:PresetExist", f"a preset is already called {name!r}")
            new = Preset(token, name, *(round(v, 6) for v in pos))
            kept = [p for p in presets if p.token != token]
            idx = next((i for i, p in enumerate(presets) if p.token == token), len(kept))
            kept.insert(idx, new)
            self._save_presets(cam, kept)
            return TPTZ.SetPresetResponse(TPTZ.PresetToken(token))

        @ops.op(NS_TPTZ, "GotoPreset", ACTUATE)
        def goto_preset(ctx: Context, req: etree._Element) -> etree._Element:
            """Move to a preset at Speed."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            p = self._find_preset(cam, text_of(req, "PresetToken"))
            self.goto(cam, (p.pan, p.tilt, p.zoom), self._speed(cam, req))
            return TPTZ.GotoPresetResponse()

        @ops.op(NS_TPTZ, "RemovePreset", ACTUATE)
        def remove_preset(ctx: Context, req: etree._Element) -> etree._Element:
            """Forget a preset."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            p = self._find_preset(cam, text_of(req, "PresetToken"))
            self._save_presets(cam, [x for x in self.presets(cam) if x.token != p.token])
            return TPTZ.RemovePresetResponse()

        @ops.op(NS_TPTZ, "GetPresetTours", READ_MEDIA)
        def get_preset_tours(ctx: Context, req: etree._Element) -> etree._Element:
            """Every preset tour with its status."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            return TPTZ.GetPresetToursResponse(
                *[self._tour_el(cam, t, "PresetTour") for t in self.tours(cam)]
            )

        @ops.op(NS_TPTZ, "GetPresetTour", READ_MEDIA)
        def get_preset_tour(ctx: Context, req: etree._Element) -> etree._Element:
            """One preset tour by token."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            tour = self._find_tour(cam, text_of(req, "PresetTourToken"))
            return TPTZ.GetPresetTourResponse(self._tour_el(cam, tour, "PresetTour"))

        @ops.op(NS_TPTZ, "GetPresetTourOptions", READ_MEDIA)
        def get_preset_tour_options(ctx: Context, req: etree._Element) -> etree._Element:
            """What ModifyPresetTour accepts."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            tok = text_of(req, "PresetTourToken")
            if tok:
                self._find_tour(cam, tok)
            s = settings(cam)
            return TPTZ.GetPresetTourOptionsResponse(
                TPTZ.Options(
                    TT.AutoStart("false"),
                    TT.StartingCondition(
                        TT.RecurringTime(TT.Min("0"), TT.Max(str(MAX_RECURRING_TIME))),
                        TT.RecurringDuration(
                            TT.Min(format_duration(MIN_RECURRING_DURATION)),
                            TT.Max(format_duration(MAX_RECURRING_DURATION)),
                        ),
                        TT.Direction("Forward"),
                        TT.Direction("Backward"),
                    ),
                    TT.TourSpot(
                        TT.PresetDetail(
                            *[TT.PresetToken(p.token) for p in self.presets(cam)],
                            TT.Home("true"),
                            _space2("PanTiltPositionSpace", ABS_PT, *s.pan, *s.tilt),
                            _space1("ZoomPositionSpace", ABS_Z, *s.zoom),
                        ),
                        TT.StayTime(
                            TT.Min(format_duration(MIN_STAY)), TT.Max(format_duration(MAX_STAY))
                        ),
                    ),
                )
            )

        @ops.op(NS_TPTZ, "CreatePresetTour", ACTUATE)
        def create_preset_tour(ctx: Context, req: etree._Element) -> etree._Element:
            """A new, empty preset tour (fill it with ModifyPresetTour)."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            tours = self.tours(cam)
            top = cam.app_cfg.onvif.ptz_max_tours
            if len(tours) >= top:
                raise Fault(
                    ("ter:Action", "ter:TooManyPresetTours"),
                    f"this camera holds at most {top} preset tours ([onvif] ptz_max_tours); "
                    "remove one first",
                    "Receiver",
                )
            token = "Tour_" + secrets.token_hex(4)
            tours.append({"token": token, "name": "", "direction": "Forward", "spots": []})
            self._save_tours(cam, tours)
            return TPTZ.CreatePresetTourResponse(TPTZ.PresetTourToken(token))

        @ops.op(NS_TPTZ, "ModifyPresetTour", ACTUATE)
        def modify_preset_tour(ctx: Context, req: etree._Element) -> etree._Element:
            """Replace a tour's name, starting condition and spots (a running one stops)."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            el = child(req, "PresetTour")
            if el is None:
                raise invalid_arg("ter:InvalidPresetTour", "missing PresetTour")
            old = self._find_tour(cam, el.get("token"))
            new = self._read_tour(cam, el, old)
            self._end_tour(cam, old["token"])
            self._save_tours(
                cam, [new if t["token"] == old["token"] else t for t in self.tours(cam)]
            )
            return TPTZ.ModifyPresetTourResponse()

        @ops.op(NS_TPTZ, "OperatePresetTour", ACTUATE)
        def operate_preset_tour(ctx: Context, req: etree._Element) -> etree._Element:
            """Start (or resume), Pause or Stop a tour."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            tour = self._find_tour(cam, text_of(req, "PresetTourToken"))
            op = text_of(req, "Operation")
            if op not in TOUR_OPERATIONS:
                raise invalid_arg(
                    "ter:InvalidArgVal",
                    f"Operation {str(op)[:20]!r} is not supported; use Start, Stop or Pause",
                )
            h, now = self.head(cam), self.clock()
            h.advance(now)
            run = h.run if h.run is not None and h.run.token == tour["token"] else None
            if op == "Stop":
                self._end_tour(cam, tour["token"])
            elif op == "Pause":
                if run is not None:
                    run.pause(h, now)
            elif run is not None:
                run.resume(h, now)
            else:
                if h.run is not None:
                    raise Fault(
                        ("ter:InvalidArgVal", "ter:ActivationFailed"),
                        f"preset tour {h.run.token!r} is {h.run.state.lower()} on this head; "
                        "stop it first (OperatePresetTour Stop)",
                    )
                legs = self._legs(cam, tour)
                if not legs:
                    raise Fault(
                        ("ter:InvalidArgVal", "ter:ActivationFailed"),
                        "the preset tour has no TourSpot; add some with ModifyPresetTour",
                    )
                n = tour.get("recurring_time")
                d = tour.get("recurring_duration")
                h.run = TourRun(
                    tour["token"],
                    legs,
                    passes=n if n else None,
                    until=now + d if d else None,
                )
                h.run.start(h, now)
                self.tours_started += 1
            return TPTZ.OperatePresetTourResponse()

        @ops.op(NS_TPTZ, "RemovePresetTour", ACTUATE)
        def remove_preset_tour(ctx: Context, req: etree._Element) -> etree._Element:
            """Forget a tour (a running one stops)."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            tour = self._find_tour(cam, text_of(req, "PresetTourToken"))
            self._end_tour(cam, tour["token"])
            self._save_tours(cam, [t for t in self.tours(cam) if t["token"] != tour["token"]])
            return TPTZ.RemovePresetTourResponse()

        return ops

    def _end_tour(self, cam: Camera, token: str) -> None:
        h, now = self.head(cam), self.clock()
        h.advance(now)
        if h.run is not None and h.run.token == token:
            h.run.stop(h, now)
            h.run = None


def capabilities_tptz(ctx: Context) -> etree._Element:
    """tptz:Capabilities (GetServiceCapabilities, GetServices with capabilities)."""
    return TPTZ.Capabilities(
        EFlip="false",
        Reverse="false",
        GetCompatibleConfigurations="true",
        MoveStatus=xbool(True),
        StatusPosition=xbool(True),
    )


def read_speed(
    sp: etree._Element | None, default: tuple[float, float, float], subcode: str
) -> tuple[float, float, float]:
    """A tt:PTZSpeed (generic speed spaces, 0..1 each); absent parts take ``default``."""
    pt, z = child(sp, "PanTilt"), child(sp, "Zoom")
    out = list(default)
    if pt is not None:
        _check_space(pt, SPEED_PT, subcode)
        out[0] = _attr_float(pt, "x", subcode)
        out[1] = _attr_float(pt, "y", subcode)
    if z is not None:
        _check_space(z, SPEED_Z, subcode)
        out[2] = _attr_float(z, "x", subcode)
    if any(not 0.0 <= v <= 1.0 for v in out):
        raise invalid_arg(subcode, "Speed must be within 0..1 (GenericSpeedSpace)")
    return out[0], out[1], out[2]


def _check_position(
    s: Settings, target: list[float | None] | tuple[float | None, ...], subcode: str
) -> None:
    """A position within the configured PanTiltLimits / ZoomLimits."""
    for v, (lo, hi), what, key in zip(
        target,
        (s.pan, s.tilt, s.zoom),
        ("pan", "tilt", "zoom"),
        ("PanTiltLimits", "PanTiltLimits", "ZoomLimits"),
        strict=True,
    ):
        if v is not None and not lo <= v <= hi:
            raise invalid_arg(subcode, f"{what} {v:g} is outside {lo:g}..{hi:g} ({key})")


def _modify(reason: str) -> Fault:
    return invalid_arg("ter:ConfigModify", reason)


def _limit_range(
    r: etree._Element | None, local: str, what: str, lo: float, hi: float
) -> tuple[float, float]:
    """A tt:FloatRange of a limit: -INF/INF (limits off) mean the space's edge."""
    el = child(r, local)
    vals = []
    for part in ("Min", "Max"):
        text = text_of(el, part)
        try:
            v = float(text if text is not None else "")
        except ValueError:
            v = math.nan
        if math.isnan(v):
            raise _modify(f"{what} {local} {part} {str(text)[:32]!r} is not a number")
        vals.append(min(hi, v) if v == math.inf else max(lo, v) if v == -math.inf else v)
    if not lo <= vals[0] <= vals[1] <= hi:
        raise _modify(
            f"{what} {local} {vals[0]:g}..{vals[1]:g} is not within the node's space "
            f"{lo:g}..{hi:g} with Min <= Max (see GetConfigurationOptions Spaces)"
        )
    return vals[0], vals[1]


def read_settings(cam: Camera, el: etree._Element) -> Settings:
    """The tt:PTZConfiguration of a SetConfiguration, checked against the node (faults
    ter:NoConfig / ter:ConfigModify; nothing is stored on a fault)."""
    _check_config(el.get("token"))
    old = settings(cam)
    name_el = child(el, "Name")
    name = None if name_el is None else (name_el.text or "").strip()
    if name is not None and not _NAME.fullmatch(name):
        raise _modify("Name must be 1..64 characters without control characters")
    node = text_of(el, "NodeToken")
    if node is not None and node != NODE:
        raise _modify(f"NodeToken {node[:64]!r} is not this camera's node {NODE!r}")
    for local, uris in (
        ("DefaultAbsolutePantTiltPositionSpace", (ABS_PT,)),
        ("DefaultAbsoluteZoomPositionSpace", (ABS_Z,)),
        ("DefaultRelativePanTiltTranslationSpace", (REL_PT,)),
        ("DefaultRelativeZoomTranslationSpace", (REL_Z,)),
        ("DefaultContinuousPanTiltVelocitySpace", (CONT_PT,)),
        ("DefaultContinuousZoomVelocitySpace", (CONT_Z,)),
    ):
        uri = text_of(el, local)
        if uri is not None and uri not in uris:
            raise _modify(f"{local} {uri[:120]!r} is not supported; use {uris[0]}")
    sp = child(el, "DefaultPTZSpeed")
    try:
        speed = read_speed(sp, old.speed, "ter:ConfigModify") if sp is not None else old.speed
    except Fault as exc:
        raise _modify(f"DefaultPTZSpeed: {exc.reason}") from None
    timeout = old.timeout
    text = text_of(el, "DefaultPTZTimeout")
    if text is not None:
        try:
            timeout = duration_seconds(text)
        except ValueError:
            raise _modify(f"DefaultPTZTimeout {text[:40]!r} is not an xs:duration") from None
        top = cam.app_cfg.onvif.ptz_max_timeout
        if not MIN_TIMEOUT <= timeout <= top:
            raise _modify(
                f"DefaultPTZTimeout {text[:40]!r} is outside {format_duration(MIN_TIMEOUT)}.."
                f"{format_duration(top)} (GetConfigurationOptions PTZTimeout; the upper end "
                "is [onvif] ptz_max_timeout)"
            )
    pan, tilt, zoom = old.pan, old.tilt, old.zoom
    ptl = child(child(el, "PanTiltLimits"), "Range")
    if child(el, "PanTiltLimits") is not None:
        uri = text_of(ptl, "URI")
        if uri != ABS_PT:
            raise _modify(f"PanTiltLimits URI {str(uri)[:120]!r} is not supported; use {ABS_PT}")
        pan = _limit_range(ptl, "XRange", "PanTiltLimits", *PAN_RANGE)
        tilt = _limit_range(ptl, "YRange", "PanTiltLimits", *PAN_RANGE)
    zl = child(child(el, "ZoomLimits"), "Range")
    if child(el, "ZoomLimits") is not None:
        uri = text_of(zl, "URI")
        if uri != ABS_Z:
            raise _modify(f"ZoomLimits URI {str(uri)[:120]!r} is not supported; use {ABS_Z}")
        zoom = _limit_range(zl, "XRange", "ZoomLimits", *ZOOM_RANGE)
    direction = child(child(el, "Extension"), "PTControlDirection")
    for local in ("EFlip", "Reverse"):
        mode = text_of(child(direction, local), "Mode")
        if mode not in (None, "OFF"):
            raise _modify(f"{local} {mode[:20]!r} is not supported (only OFF)")
    return Settings(name or old.name, speed, timeout, pan, tilt, zoom)


def _check_config(token: str | None) -> None:
    if token != CONFIG:
        raise invalid_arg("ter:NoConfig", f"no PTZ configuration {str(token)[:64]!r}")


def _check_space(
    el: etree._Element, default: str, subcode: str, allowed: tuple[str, ...] = ()
) -> str:
    space = el.get("space") or default
    if space not in (allowed or (default,)):
        raise invalid_arg("ter:SpaceNotSupported", f"space {space[:120]!r} is not supported")
    return space


def _attr_float(el: etree._Element, name: str, subcode: str) -> float:
    text = el.get(name)
    try:
        v = float(text if text is not None else "")
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        local = etree.QName(el).localname
        raise invalid_arg(subcode, f"{local} {name}={str(text)[:32]!r} is not a finite number")
    return v
