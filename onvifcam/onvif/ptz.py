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
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from lxml.builder import ElementMaker

from onvifcam.cameras import Camera, ProfileState
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

PAN_RANGE = (-1.0, 1.0)
ZOOM_RANGE = (0.0, 1.0)
DEFAULT_TIMEOUT = 10.0  # ContinuousMove without a Timeout (DefaultPTZTimeout)
MIN_TIMEOUT = 1.0
# The picture the head "sees" (a digital PTZ): at zoom 0 the transcoded sub stream shows
# VIEW_AT_WIDE of the main picture's width and height (all of it), at zoom 1 a MAX_ZOOM
# times narrower window that pan and tilt move across the picture.
VIEW_AT_WIDE = 1.0
MAX_ZOOM = 4.0
_NAME = re.compile(r"[^\x00-\x1f]{1,64}")


# --------------------------------------------------------------------------- model


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

    def position(self, t: float) -> tuple[float, float, float]:
        """(pan, tilt, zoom) at time ``t``."""
        return self.pan.at(t), self.tilt.at(t), self.zoom.at(t)

    def moving(self, t: float) -> tuple[bool, bool]:
        """(pan/tilt moving, zoom moving) at time ``t``."""
        return self.pan.moving(t) or self.tilt.moving(t), self.zoom.moving(t)

    def stop(self, t: float, pantilt: bool = True, zoom: bool = True) -> None:
        """Stop the named axes."""
        if pantilt:
            self.pan.stop(t)
            self.tilt.stop(t)
        if zoom:
            self.zoom.stop(t)


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


def _range(lo: float, hi: float) -> etree._Element:
    return TT.XRange(TT.Min(_f(lo)), TT.Max(_f(hi)))


def _space2(tag: str, uri: str, lo: float = -1.0, hi: float = 1.0) -> etree._Element:
    return getattr(TT, tag)(TT.URI(uri), _range(lo, hi), TT.YRange(TT.Min(_f(lo)), TT.Max(_f(hi))))


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
    """A tt:PTZConfiguration (under any tag/namespace: tptz:, trt: profiles, tr2:PTZ)."""
    return getattr(ns, tag)(
        TT.Name("PTZConfig"),
        TT.UseCount(str(sum(1 for p in cam.profiles if profile_ptz(cam, p) == CONFIG))),
        TT.NodeToken(NODE),
        TT.DefaultAbsolutePantTiltPositionSpace(ABS_PT),
        TT.DefaultAbsoluteZoomPositionSpace(ABS_Z),
        TT.DefaultRelativePanTiltTranslationSpace(REL_PT),
        TT.DefaultRelativeZoomTranslationSpace(REL_Z),
        TT.DefaultContinuousPanTiltVelocitySpace(CONT_PT),
        TT.DefaultContinuousZoomVelocitySpace(CONT_Z),
        TT.DefaultPTZSpeed(TT.PanTilt(x="1", y="1", space=SPEED_PT), TT.Zoom(x="1", space=SPEED_Z)),
        TT.DefaultPTZTimeout(format_duration(DEFAULT_TIMEOUT)),
        TT.PanTiltLimits(_space2("Range", ABS_PT)),
        TT.ZoomLimits(_space1("Range", ABS_Z, *ZOOM_RANGE)),
        token=CONFIG,
    )


class PtzService:
    """Every camera's head, presets and home position, and the PTZ SOAP operations."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._heads: dict[str, Head] = {}
        self.moves = 0  # move commands accepted (stats)
        self.ops = self._operations()

    # ------------------------------------------------------------------ model
    def head(self, cam: Camera) -> Head:
        """The camera's head (created at its home position). It lives on the camera, so the
        transcoded sub stream reads the same position."""
        h = getattr(cam, "ptz_head", None)
        if not isinstance(h, Head):
            h = Head()
            h.pan.start, h.tilt.start, h.zoom.start = self.home(cam)
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
        return {"heads": len(self._heads), "moving": moving, "moves": self.moves}

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

    # ------------------------------------------------------------------ requests
    def _profile(self, ctx: Context, req: etree._Element) -> ProfileState:
        token = text_of(req, "ProfileToken")
        if not token:
            raise invalid_arg("ter:NoProfile", "missing ProfileToken")
        p = ctx.camera.profile(token)
        if profile_ptz(ctx.camera, p) is None:
            raise invalid_arg("ter:NoPTZProfile", f"profile {token[:64]!r} has no PTZConfiguration")
        return p

    def _speed(self, req: etree._Element) -> tuple[float, float, float]:
        """The request's Speed (generic speed space, 0..1 each), default 1."""
        sp = child(req, "Speed")
        pt, z = child(sp, "PanTilt"), child(sp, "Zoom")
        out = [1.0, 1.0, 1.0]
        if pt is not None:
            _check_space(pt, SPEED_PT, "ter:InvalidSpeed")
            out[0] = _attr_float(pt, "x", "ter:InvalidSpeed")
            out[1] = _attr_float(pt, "y", "ter:InvalidSpeed")
        if z is not None:
            _check_space(z, SPEED_Z, "ter:InvalidSpeed")
            out[2] = _attr_float(z, "x", "ter:InvalidSpeed")
        if any(not 0.0 <= v <= 1.0 for v in out):
            raise invalid_arg("ter:InvalidSpeed", "Speed must be within 0..1 (GenericSpeedSpace)")
        return out[0], out[1], out[2]

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
            token=NODE,
            FixedHomePosition="false",
        )

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
            target: list[float | None] = [None, None, None]
            pt, z = child(pos, "PanTilt"), child(pos, "Zoom")
            if pt is not None:
                _check_space(pt, ABS_PT, "ter:InvalidPosition")
                target[0] = _attr_float(pt, "x", "ter:InvalidPosition")
                target[1] = _attr_float(pt, "y", "ter:InvalidPosition")
            if z is not None:
                _check_space(z, ABS_Z, "ter:InvalidPosition")
                target[2] = _attr_float(z, "x", "ter:InvalidPosition")
            for v, (lo, hi), what in zip(
                target, (PAN_RANGE, PAN_RANGE, ZOOM_RANGE), ("pan", "tilt", "zoom"), strict=True
            ):
                if v is not None and not lo <= v <= hi:
                    raise invalid_arg(
                        "ter:InvalidPosition", f"{what} {v:g} is outside {lo:g}..{hi:g}"
                    )
            self.goto(cam, (target[0], target[1], target[2]), self._speed(req))
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
            self.goto(cam, (target[0], target[1], target[2]), self._speed(req))
            return TPTZ.RelativeMoveResponse()

        @ops.op(NS_TPTZ, "ContinuousMove", ACTUATE)
        def continuous_move(ctx: Context, req: etree._Element) -> etree._Element:
            """Move at a velocity until Stop, the Timeout or a limit."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            vel = child(req, "Velocity")
            if vel is None:
                raise invalid_arg("ter:InvalidVelocity", "missing Velocity")
            timeout = DEFAULT_TIMEOUT
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
            self.head(cam).stop(
                self.clock(),
                pantilt=True if pt is None else boolean(pt),
                zoom=True if z is None else boolean(z),
            )
            return TPTZ.StopResponse()

        @ops.op(NS_TPTZ, "GotoHomePosition", ACTUATE)
        def goto_home(ctx: Context, req: etree._Element) -> etree._Element:
            """Move to the home position at Speed."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            self.goto(cam, self.home(cam), self._speed(req))
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
            self.goto(cam, (p.pan, p.tilt, p.zoom), self._speed(req))
            return TPTZ.GotoPresetResponse()

        @ops.op(NS_TPTZ, "RemovePreset", ACTUATE)
        def remove_preset(ctx: Context, req: etree._Element) -> etree._Element:
            """Forget a preset."""
            cam = need_ptz(ctx)
            self._profile(ctx, req)
            p = self._find_preset(cam, text_of(req, "PresetToken"))
            self._save_presets(cam, [x for x in self.presets(cam) if x.token != p.token])
            return TPTZ.RemovePresetResponse()

        return ops


def capabilities_tptz(ctx: Context) -> etree._Element:
    """tptz:Capabilities (GetServiceCapabilities, GetServices with capabilities)."""
    return TPTZ.Capabilities(
        EFlip="false",
        Reverse="false",
        GetCompatibleConfigurations="true",
        MoveStatus=xbool(True),
        StatusPosition=xbool(True),
    )


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
