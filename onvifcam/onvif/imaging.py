"""ONVIF Imaging service (ver20 imaging/wsdl): the video source's picture settings.

SetImagingSettings stores what the client sets (merged over what was there) in the camera's
state document (``imaging``) and GetImagingSettings returns exactly that, across restarts.
A pushed stream's picture is the encoder's business, so nothing changes on the main
stream; a transcoded sub stream applies brightness, contrast and saturation
(:func:`picture_adjustment`). There is no focus motor: GetMoveOptions is empty and Move is
refused.
"""

from __future__ import annotations

import math
from typing import Any

from lxml import etree
from lxml.builder import ElementMaker

from onvifcam.cameras import VSRC, Camera
from onvifcam.onvif.soap import (
    ACTUATE,
    NSMAP,
    PRE_AUTH,
    READ_MEDIA,
    TT,
    Context,
    Fault,
    OperationTable,
    child,
    invalid_arg,
    text_of,
)

NS_TIMG = "http://www.onvif.org/ver20/imaging/wsdl"
TIMG = ElementMaker(namespace=NS_TIMG, nsmap={**NSMAP, "timg": NS_TIMG})

# stored key -> (element, default, min, max)
LEVELS = {
    "brightness": ("Brightness", 50.0, 0.0, 100.0),
    "saturation": ("ColorSaturation", 50.0, 0.0, 100.0),
    "contrast": ("Contrast", 50.0, 0.0, 100.0),
    "sharpness": ("Sharpness", 50.0, 0.0, 100.0),
}
IRCUT = ("ON", "OFF", "AUTO")
ON_OFF = ("OFF", "ON")
AUTO_MANUAL = ("AUTO", "MANUAL")
GAIN_RANGE = (0.0, 255.0)


def _f(v: float) -> str:
    return f"{round(v, 4):g}"


def settings(cam: Camera) -> dict[str, Any]:
    """The stored settings with defaults filled in (bad stored values take the default)."""
    d = cam.doc.get("imaging")
    d = d if isinstance(d, dict) else {}
    out: dict[str, Any] = {}
    for key, (_tag, default, lo, hi) in LEVELS.items():
        v = d.get(key)
        ok = isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi
        out[key] = float(v) if ok else default
    out["ircut"] = d.get("ircut") if d.get("ircut") in IRCUT else "AUTO"
    out["blc"] = d.get("blc") if d.get("blc") in ON_OFF else "OFF"
    out["exposure"] = d.get("exposure") if d.get("exposure") in AUTO_MANUAL else "AUTO"
    out["wdr"] = d.get("wdr") if d.get("wdr") in ON_OFF else "OFF"
    out["wb"] = d.get("wb") if d.get("wb") in AUTO_MANUAL else "AUTO"
    for key in ("blc_level", "wdr_level", "wb_cr", "wb_cb"):
        v = d.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = float(v)
    return out


def picture_adjustment(cam: Camera) -> tuple[float, float, float]:
    """(brightness, contrast, saturation) as offsets/gains for the transcoder: brightness
    -0.5..0.5 of full scale (0 at 50), contrast and saturation gains 0..2 (1 at 50)."""
    s = settings(cam)
    return (s["brightness"] - 50.0) / 100.0, s["contrast"] / 50.0, s["saturation"] / 50.0


def _settings_el(cam: Camera) -> etree._Element:
    s = settings(cam)
    blc = TT.BacklightCompensation(TT.Mode(s["blc"]))
    if "blc_level" in s:
        blc.append(TT.Level(_f(s["blc_level"])))
    wdr = TT.WideDynamicRange(TT.Mode(s["wdr"]))
    if "wdr_level" in s:
        wdr.append(TT.Level(_f(s["wdr_level"])))
    wb = TT.WhiteBalance(TT.Mode(s["wb"]))
    for key, tag in (("wb_cr", "CrGain"), ("wb_cb", "CbGain")):
        if key in s:
            wb.append(getattr(TT, tag)(_f(s[key])))
    return TIMG.ImagingSettings(
        blc,
        TT.Brightness(_f(s["brightness"])),
        TT.ColorSaturation(_f(s["saturation"])),
        TT.Contrast(_f(s["contrast"])),
        TT.Exposure(TT.Mode(s["exposure"])),
        TT.IrCutFilter(s["ircut"]),
        TT.Sharpness(_f(s["sharpness"])),
        wdr,
        wb,
    )


def _number(el: etree._Element | None, local: str, lo: float, hi: float) -> float | None:
    text = text_of(el, local)
    if text is None:
        return None
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and lo <= v <= hi):
        raise invalid_arg("ter:SettingsInvalid", f"{local} {text[:32]!r} is outside {lo:g}..{hi:g}")
    return v


def _choice(el: etree._Element | None, local: str, allowed: tuple[str, ...]) -> str | None:
    text = text_of(el, local)
    if text is None:
        return None
    if text not in allowed:
        raise invalid_arg(
            "ter:SettingsInvalid", f"{local} {text[:32]!r} is not one of {', '.join(allowed)}"
        )
    return text


def read_settings(cam: Camera, el: etree._Element) -> dict[str, Any]:
    """The stored settings with a tt:ImagingSettings20 element's values merged in (checked
    first, nothing stored on a fault)."""
    d = cam.doc.get("imaging")
    new: dict[str, Any] = dict(d) if isinstance(d, dict) else {}
    for key, (tag, _default, lo, hi) in LEVELS.items():
        v = _number(el, tag, lo, hi)
        if v is not None:
            new[key] = v
    ir = _choice(el, "IrCutFilter", IRCUT)
    if ir is not None:
        new["ircut"] = ir
    for key, tag, modes in (
        ("blc", "BacklightCompensation", ON_OFF),
        ("exposure", "Exposure", AUTO_MANUAL),
        ("wdr", "WideDynamicRange", ON_OFF),
        ("wb", "WhiteBalance", AUTO_MANUAL),
    ):
        sub = child(el, tag)
        if sub is None:
            continue
        mode = _choice(sub, "Mode", modes)
        if mode is not None:
            new[key] = mode
        if key in ("blc", "wdr"):
            level = _number(sub, "Level", 0.0, 100.0)
            if level is not None:
                new[f"{key}_level"] = level
        if key == "wb":
            for gkey, gtag in (("wb_cr", "CrGain"), ("wb_cb", "CbGain")):
                g = _number(sub, gtag, *GAIN_RANGE)
                if g is not None:
                    new[gkey] = g
    return new


def _source(req: etree._Element) -> str:
    tok = text_of(req, "VideoSourceToken")
    if tok != VSRC:
        raise invalid_arg("ter:NoSource", f"no video source {str(tok)[:64]!r} (it is {VSRC})")
    return tok


def _range(tag: str, lo: float, hi: float) -> etree._Element:
    return getattr(TT, tag)(TT.Min(_f(lo)), TT.Max(_f(hi)))


ops = OperationTable()


@ops.op(NS_TIMG, "GetServiceCapabilities", PRE_AUTH)
def get_service_capabilities(ctx: Context, req: etree._Element) -> etree._Element:
    """Imaging capabilities (no stabilisation, no presets)."""
    return TIMG.GetServiceCapabilitiesResponse(capabilities_timg(ctx))


@ops.op(NS_TIMG, "GetImagingSettings", READ_MEDIA)
def get_imaging_settings(ctx: Context, req: etree._Element) -> etree._Element:
    """The stored settings."""
    _source(req)
    return TIMG.GetImagingSettingsResponse(_settings_el(ctx.camera))


@ops.op(NS_TIMG, "SetImagingSettings", ACTUATE)
def set_imaging_settings(ctx: Context, req: etree._Element) -> etree._Element:
    """Store the settings given (merged over the stored ones)."""
    _source(req)
    el = child(req, "ImagingSettings")
    if el is None:
        raise invalid_arg("ter:SettingsInvalid", "missing ImagingSettings")
    cam = ctx.camera
    new = read_settings(cam, el)
    if cam.doc.get("imaging") != new:
        cam.doc["imaging"] = new
        cam.save()
    return TIMG.SetImagingSettingsResponse()


@ops.op(NS_TIMG, "GetOptions", READ_MEDIA)
def get_options(ctx: Context, req: etree._Element) -> etree._Element:
    """What SetImagingSettings accepts."""
    _source(req)
    return TIMG.GetOptionsResponse(
        TIMG.ImagingOptions(
            TT.BacklightCompensation(*[TT.Mode(m) for m in ON_OFF], _range("Level", 0, 100)),
            _range("Brightness", *LEVELS["brightness"][2:]),
            _range("ColorSaturation", *LEVELS["saturation"][2:]),
            _range("Contrast", *LEVELS["contrast"][2:]),
            TT.Exposure(*[TT.Mode(m) for m in AUTO_MANUAL]),
            *[TT.IrCutFilterModes(m) for m in IRCUT],
            _range("Sharpness", *LEVELS["sharpness"][2:]),
            TT.WideDynamicRange(*[TT.Mode(m) for m in ON_OFF], _range("Level", 0, 100)),
            TT.WhiteBalance(
                *[TT.Mode(m) for m in AUTO_MANUAL],
                _range("YrGain", *GAIN_RANGE),
                _range("YbGain", *GAIN_RANGE),
            ),
        )
    )


@ops.op(NS_TIMG, "GetMoveOptions", READ_MEDIA)
def get_move_options(ctx: Context, req: etree._Element) -> etree._Element:
    """No focus motor: no move options."""
    _source(req)
    return TIMG.GetMoveOptionsResponse(TIMG.MoveOptions())


@ops.op(NS_TIMG, "Move", ACTUATE)
def move(ctx: Context, req: etree._Element) -> etree._Element:
    """Refused: the virtual camera has no focus."""
    _source(req)
    raise Fault(
        ("ter:ActionNotSupported", "ter:NoImagingForSource"),
        "this virtual camera has no focus motor (GetMoveOptions is empty)",
        "Receiver",
    )


@ops.op(NS_TIMG, "Stop", ACTUATE)
def stop(ctx: Context, req: etree._Element) -> etree._Element:
    """Nothing moves, so nothing to stop."""
    _source(req)
    return TIMG.StopResponse()


@ops.op(NS_TIMG, "GetStatus", READ_MEDIA)
def get_status(ctx: Context, req: etree._Element) -> etree._Element:
    """No focus, so an empty status."""
    _source(req)
    return TIMG.GetStatusResponse(TIMG.Status())


def capabilities_timg(ctx: Context) -> etree._Element:
    """timg:Capabilities (GetServiceCapabilities, GetServices with capabilities)."""
    return TIMG.Capabilities(ImageStabilization="false", Presets="false", AdaptablePreset="false")
