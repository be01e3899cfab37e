"""ONVIF Media service (ver10 media/wsdl): profiles and configurations of the live stream.

Profiles describe the stream: codec and resolution from the SPS; frame rate from the SPS
timing info, else measured; bitrate and GOP length measured; all held still from poll to
poll (:mod:`onvifcam.cameras.stable`). Before a first publish they show the configured or
last-seen values. SetVideoEncoderConfiguration stores everything a client sets (resolution
from the options, frame rate and bitrate limits, GOV length, profile, quality, multicast,
session timeout) and every Get* echoes it, across restarts, even where a pushed stream
cannot honour it; only the codec stays the publisher's (ter:ConfigModify). The measured
values are in the camera's statistics and the API.
"""

from __future__ import annotations

import math
import re
from typing import Any

from lxml import etree

from onvifcam.cameras import (
    AEC,
    ASC,
    ASRC,
    MDC,
    VEC_MAIN,
    VEC_SUB,
    VSC,
    VSRC,
    AudioView,
    Camera,
    ProfileState,
    VideoView,
)
from onvifcam.onvif.device import media_capabilities_trt
from onvifcam.onvif.ptz import CONFIG as PTZ_CONFIG
from onvifcam.onvif.ptz import config_el as ptz_config_el
from onvifcam.onvif.ptz import profile_ptz, ptz_enabled
from onvifcam.onvif.soap import (
    ACTUATE,
    NS_TRT,
    PRE_AUTH,
    READ_MEDIA,
    TRT,
    TT,
    WSNT,
    Context,
    Fault,
    OperationTable,
    boolean,
    child,
    invalid_arg,
    require,
    text_of,
    xbool,
)

ops = OperationTable()

TOPIC_DIALECT = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"

_AUDIO_MEDIA1 = {
    "MPEG4-GENERIC": "AAC",
    "MP4A-LATM": "AAC",
    "PCMU": "G711",
    "PCMA": "G711",
    "G726-32": "G726",
    "G726-24": "G726",
    "G726-16": "G726",
    "G726-40": "G726",
}


# --------------------------------------------------------------------------- model helpers


def enc_settings(cam: Camera, token: str) -> dict[str, Any]:
    """Client-set values of a video/audio encoder configuration."""
    return cam.encoder_settings(token)


def video_of(cam: Camera, vec: str) -> VideoView:
    """The video behind an encoder configuration."""
    return cam.video(cam.which(vec))


def reported_rates(cam: Camera, vec: str) -> tuple[float, int, int]:
    """(fps, kbit/s, GOP length) a configuration shows: what a client set, else the stream's
    own values held still (never the raw measurement, which moves poll to poll)."""
    v = cam.encoder_view(vec)
    return v.fps, v.bitrate_kbps, v.gov_length


# Sizes a configuration may be set to besides the stream's own (at most the stream's size).
_LADDER = (
    (3840, 2160),
    (2560, 1440),
    (1920, 1080),
    (1280, 720),
    (1024, 576),
    (960, 540),
    (800, 600),
    (704, 576),
    (640, 480),
    (640, 360),
    (352, 288),
    (320, 240),
    (320, 180),
)


def resolutions(cam: Camera, vec: str) -> list[tuple[int, int]]:
    """ResolutionsAvailable of an encoder: the stream's size, the standard sizes below it,
    and the size a client set (kept even after the stream changed size)."""
    if vec == VEC_SUB and cam.transcoded_sub:
        return encoder_resolutions(cam, vec)
    v = video_of(cam, vec)
    out = [(v.width, v.height)]
    out += [(w, h) for w, h in _LADDER if w <= v.width and h <= v.height and (w, h) != out[0]]
    shown = cam.encoder_view(vec)
    if (shown.width, shown.height) not in out:
        out.append((shown.width, shown.height))
    return out


def has_audio(cam: Camera) -> bool:
    """True when the main stream has (or last had) an audio track."""
    return cam.audio("main") is not None


def check_token(token: str | None, valid: list[str], subcode: str = "ter:NoConfig") -> str:
    """A configuration token that must be one of ``valid``."""
    if token is None or token not in valid:
        raise invalid_arg(subcode, f"no configuration with token {token!r}")
    return token


SUB_RESOLUTIONS = ((320, 180), (640, 360), (960, 540), (1280, 720))


def encoder_resolutions(cam: Camera, token: str) -> list[tuple[int, int]]:
    """Resolutions an encoder configuration can take: the transcoded sub stream's choice
    (up to the main picture's width), else the stream's own size."""
    v = video_of(cam, token)
    if token == VEC_SUB and cam.transcoded_sub:
        main_w = cam.video("main").width
        out = [r for r in SUB_RESOLUTIONS if r[0] <= max(main_w, 640)]
        return out + ([(v.width, v.height)] if (v.width, v.height) not in out else [])
    return [(v.width, v.height)]


def video_encoder_tokens(cam: Camera, media1: bool) -> list[str]:
    """Encoder configurations Media1 can describe (H.264 only) or all of them (Media2)."""
    return [t for t in cam.video_encoders() if not media1 or video_of(cam, t).codec == "H264"]


def profile_or_fault(cam: Camera, token: str | None) -> ProfileState:
    """The profile ``token``; ter:NoProfile when missing or unknown."""
    if not token:
        raise invalid_arg("ter:NoProfile", "missing ProfileToken")
    return cam.profile(token)  # CameraError ter:NoProfile becomes the same fault


# Configuration types (Media2 names) and the ProfileState attribute holding each.
CONFIG_TYPES = {
    "VideoSource": "vsc",
    "VideoEncoder": "vec",
    "AudioSource": "asc",
    "AudioEncoder": "aec",
    "PTZ": "ptz",
    "Metadata": "mdc",
}


def valid_tokens(cam: Camera, attr: str) -> list[str]:
    """Configuration tokens a profile's ``attr`` (vsc, vec, asc, aec) can hold."""
    if attr == "vsc":
        return [VSC]
    if attr == "vec":
        return cam.video_encoders()
    if attr == "ptz":
        return [PTZ_CONFIG] if ptz_enabled(cam) else []
    if attr == "mdc":
        return [MDC]
    if not has_audio(cam):
        return []
    return [ASC] if attr == "asc" else [AEC]


def selected_tokens(cam: Camera, req: etree._Element, attr: str, valid: list[str]) -> list[str]:
    """The configurations a request names: its ConfigurationToken, else its ProfileToken's
    ``attr`` (none when that is not one of ``valid``), else all of ``valid``. Faults on an
    unknown configuration token or profile, whichever the request gives."""
    tok = text_of(req, "ConfigurationToken")
    chosen = [check_token(tok, valid)] if tok is not None else valid
    prof = text_of(req, "ProfileToken")
    if prof is not None:
        t = getattr(profile_or_fault(cam, prof), attr)
        if tok is None:
            chosen = [t] if t in valid else []
    return chosen


def multicast_el(cam: Camera, token: str) -> etree._Element:
    """tt:Multicast of an encoder configuration."""
    m = enc_settings(cam, token).get("multicast", {})
    return TT.Multicast(
        TT.Address(TT.Type("IPv4"), TT.IPv4Address(m.get("address", "0.0.0.0"))),
        TT.Port(str(m.get("port", 0))),
        TT.TTL(str(m.get("ttl", cam.app_cfg.rtsp.multicast_ttl))),
        TT.AutoStart("false"),
    )


def session_timeout(cam: Camera, token: str) -> str:
    """xs:duration of the RTSP session timeout."""
    return str(
        enc_settings(cam, token).get(
            "session_timeout", f"PT{int(cam.app_cfg.limits.session_timeout)}S"
        )
    )


# --------------------------------------------------------------------------- elements


def vsc_el(cam: Camera, tag: str = "VideoSourceConfiguration", ns: Any = TT) -> etree._Element:
    """A tt:VideoSourceConfiguration element (under any tag/namespace)."""
    v = cam.video("main")
    name = enc_settings(cam, VSC).get("name", "VideoSourceConfig")
    return getattr(ns, tag)(
        TT.Name(name),
        TT.UseCount(str(cam.use_count("vsc", VSC))),
        TT.SourceToken(VSRC),
        TT.Bounds(x="0", y="0", width=str(v.width), height=str(v.height)),
        token=VSC,
    )


def vec_el(
    cam: Camera, token: str, tag: str = "VideoEncoderConfiguration", ns: Any = TT
) -> etree._Element:
    """A Media1 tt:VideoEncoderConfiguration (H.264): the values a client set, else the
    stream's own."""
    v = cam.encoder_view(token)
    s = enc_settings(cam, token)
    fps, kbps, gov = reported_rates(cam, token)
    return getattr(ns, tag)(
        TT.Name(s.get("name", "MainStream" if token == VEC_MAIN else "SubStream")),
        TT.UseCount(str(cam.use_count("vec", token))),
        TT.Encoding(v.codec),
        TT.Resolution(TT.Width(str(v.width)), TT.Height(str(v.height))),
        TT.Quality(_num(s.get("quality", 80))),
        TT.RateControl(
            TT.FrameRateLimit(str(max(1, round(fps)))),
            TT.EncodingInterval(str(s.get("interval", 1))),
            TT.BitrateLimit(str(kbps)),
        ),
        TT.H264(TT.GovLength(str(gov)), TT.H264Profile(_h264_profile(v.profile))),
        multicast_el(cam, token),
        TT.SessionTimeout(session_timeout(cam, token)),
        token=token,
        GuaranteedFrameRate="false",
    )


def _h264_profile(name: str) -> str:
    return name if name in ("Baseline", "Main", "Extended", "High") else "High"


def _num(value: float | int) -> str:
    f = float(value)
    return str(int(f)) if f.is_integer() else f"{f:g}"


def asc_el(cam: Camera, tag: str = "AudioSourceConfiguration", ns: Any = TT) -> etree._Element:
    """A tt:AudioSourceConfiguration."""
    return getattr(ns, tag)(
        TT.Name(enc_settings(cam, ASC).get("name", "AudioSourceConfig")),
        TT.UseCount(str(cam.use_count("asc", ASC))),
        TT.SourceToken(ASRC),
        token=ASC,
    )


def media1_audio_encoding(a: AudioView) -> str | None:
    """The Media1 AudioEncoding for an RTP encoding name (None when Media1 has none)."""
    return _AUDIO_MEDIA1.get(a.codec.upper())


def aec_el(
    cam: Camera, tag: str = "AudioEncoderConfiguration", ns: Any = TT
) -> etree._Element | None:
    """A Media1 tt:AudioEncoderConfiguration, or None when Media1 cannot name the codec."""
    a = cam.audio("main")
    if a is None:
        return None
    enc = media1_audio_encoding(a)
    if enc is None:
        return None
    return getattr(ns, tag)(
        TT.Name(enc_settings(cam, AEC).get("name", "AudioEncoder")),
        TT.UseCount(str(cam.use_count("aec", AEC))),
        TT.Encoding(enc),
        TT.Bitrate(str(a.bitrate_kbps)),
        TT.SampleRate(str(a.sample_rate // 1000 or 1)),
        multicast_el(cam, AEC),
        TT.SessionTimeout(session_timeout(cam, AEC)),
        token=AEC,
    )


def profile_el(cam: Camera, p: ProfileState, tag: str = "Profiles") -> etree._Element:
    """A Media1 trt:Profiles / trt:Profile element."""
    el = getattr(TRT, tag)(TT.Name(p.name), token=p.token, fixed=xbool(p.fixed))
    if p.vsc:
        el.append(vsc_el(cam))
    audio = has_audio(cam)
    if p.asc and audio:
        el.append(asc_el(cam))
    if p.vec and p.vec in video_encoder_tokens(cam, media1=True):
        el.append(vec_el(cam, p.vec))
    if p.aec and audio:
        a = aec_el(cam)
        if a is not None:
            el.append(a)
    if profile_ptz(cam, p):
        el.append(ptz_config_el(cam))
    if p.mdc:
        el.append(mdc_el(cam))
    return el


# --------------------------------------------------------------------------- operations


@ops.op(NS_TRT, "GetServiceCapabilities", PRE_AUTH)
def get_service_capabilities(ctx: Context, req: etree._Element) -> etree._Element:
    """Media service capabilities (snapshots, streaming)."""
    return TRT.GetServiceCapabilitiesResponse(media_capabilities_trt(ctx))


@ops.op(NS_TRT, "GetProfiles", READ_MEDIA)
def get_profiles(ctx: Context, req: etree._Element) -> etree._Element:
    """Every profile with its configurations."""
    cam = ctx.camera
    return TRT.GetProfilesResponse(*[profile_el(cam, p) for p in cam.profiles])


@ops.op(NS_TRT, "GetProfile", READ_MEDIA)
def get_profile(ctx: Context, req: etree._Element) -> etree._Element:
    """One profile."""
    p = profile_or_fault(ctx.camera, text_of(req, "ProfileToken"))
    return TRT.GetProfileResponse(profile_el(ctx.camera, p, "Profile"))


@ops.op(NS_TRT, "CreateProfile", ACTUATE)
def create_profile(ctx: Context, req: etree._Element) -> etree._Element:
    """An empty, deletable profile (persisted)."""
    name = require(req, "Name")
    p = ctx.camera.create_profile(name, text_of(req, "Token"))
    return TRT.CreateProfileResponse(profile_el(ctx.camera, p, "Profile"))


@ops.op(NS_TRT, "DeleteProfile", ACTUATE)
def delete_profile(ctx: Context, req: etree._Element) -> etree._Element:
    """Delete a non-fixed profile."""
    cam = ctx.camera
    p = profile_or_fault(cam, text_of(req, "ProfileToken"))
    cam.delete_profile(p.token)
    return TRT.DeleteProfileResponse()


def _add_remove_ops(kind: str, attr: str) -> None:
    """Register Add<kind>Configuration and Remove<kind>Configuration for ``attr``."""

    def add(ctx: Context, req: etree._Element) -> etree._Element:
        cam = ctx.camera
        p = profile_or_fault(cam, text_of(req, "ProfileToken"))
        token = check_token(text_of(req, "ConfigurationToken"), valid_tokens(cam, attr))
        cam.update_profile(p.token, **{attr: token})
        return getattr(TRT, f"Add{kind}ConfigurationResponse")()

    def remove(ctx: Context, req: etree._Element) -> etree._Element:
        cam = ctx.camera
        p = profile_or_fault(cam, text_of(req, "ProfileToken"))
        cam.update_profile(p.token, **{attr: None})
        return getattr(TRT, f"Remove{kind}ConfigurationResponse")()

    ops.op(NS_TRT, f"Add{kind}Configuration", ACTUATE)(add)
    ops.op(NS_TRT, f"Remove{kind}Configuration", ACTUATE)(remove)


for _kind, _attr in CONFIG_TYPES.items():
    _add_remove_ops(_kind, _attr)


@ops.op(NS_TRT, "GetVideoSources", READ_MEDIA)
def get_video_sources(ctx: Context, req: etree._Element) -> etree._Element:
    """The one video source: the main stream's resolution and frame rate."""
    v = ctx.camera.video("main")
    return TRT.GetVideoSourcesResponse(
        TRT.VideoSources(
            TT.Framerate(_num(round(v.fps, 2))),
            TT.Resolution(TT.Width(str(v.width)), TT.Height(str(v.height))),
            token=VSRC,
        )
    )


@ops.op(NS_TRT, "GetVideoSourceConfigurations", READ_MEDIA)
def get_vscs(ctx: Context, req: etree._Element) -> etree._Element:
    """All video source configurations."""
    return TRT.GetVideoSourceConfigurationsResponse(vsc_el(ctx.camera, "Configurations", TRT))


@ops.op(NS_TRT, "GetVideoSourceConfiguration", READ_MEDIA)
def get_vsc(ctx: Context, req: etree._Element) -> etree._Element:
    """One video source configuration."""
    check_token(text_of(req, "ConfigurationToken"), [VSC])
    return TRT.GetVideoSourceConfigurationResponse(vsc_el(ctx.camera, "Configuration", TRT))


@ops.op(NS_TRT, "GetCompatibleVideoSourceConfigurations", READ_MEDIA)
def get_compatible_vscs(ctx: Context, req: etree._Element) -> etree._Element:
    """Video source configurations a profile can take."""
    profile_or_fault(ctx.camera, text_of(req, "ProfileToken"))
    return TRT.GetCompatibleVideoSourceConfigurationsResponse(
        vsc_el(ctx.camera, "Configurations", TRT)
    )


def vsc_options_el(cam: Camera, ns: Any = TRT) -> etree._Element:
    """tt:VideoSourceConfigurationOptions: the bounds are the stream's picture."""
    v = cam.video("main")

    def rng(lo: int, hi: int) -> list[etree._Element]:
        return [TT.Min(str(lo)), TT.Max(str(hi))]

    return ns.Options(
        TT.BoundsRange(
            TT.XRange(*rng(0, 0)),
            TT.YRange(*rng(0, 0)),
            TT.WidthRange(*rng(v.width, v.width)),
            TT.HeightRange(*rng(v.height, v.height)),
        ),
        TT.VideoSourceTokensAvailable(VSRC),
        MaximumNumberOfProfiles=str(cam.app_cfg.onvif.max_profiles),
    )


@ops.op(NS_TRT, "GetVideoSourceConfigurationOptions", READ_MEDIA)
def get_vsc_options(ctx: Context, req: etree._Element) -> etree._Element:
    """The bounds are fixed to the stream's picture."""
    selected_tokens(ctx.camera, req, "vsc", [VSC])
    return TRT.GetVideoSourceConfigurationOptionsResponse(vsc_options_el(ctx.camera))


@ops.op(NS_TRT, "GetVideoEncoderConfigurations", READ_MEDIA)
def get_vecs(ctx: Context, req: etree._Element) -> etree._Element:
    """All H.264 video encoder configurations (Media1 cannot describe H.265)."""
    cam = ctx.camera
    return TRT.GetVideoEncoderConfigurationsResponse(
        *[vec_el(cam, t, "Configurations", TRT) for t in video_encoder_tokens(cam, True)]
    )


@ops.op(NS_TRT, "GetVideoEncoderConfiguration", READ_MEDIA)
def get_vec(ctx: Context, req: etree._Element) -> etree._Element:
    """One video encoder configuration."""
    cam = ctx.camera
    tok = check_token(text_of(req, "ConfigurationToken"), video_encoder_tokens(cam, True))
    return TRT.GetVideoEncoderConfigurationResponse(vec_el(cam, tok, "Configuration", TRT))


@ops.op(NS_TRT, "GetCompatibleVideoEncoderConfigurations", READ_MEDIA)
def get_compatible_vecs(ctx: Context, req: etree._Element) -> etree._Element:
    """Encoder configurations a profile can take (main and sub)."""
    cam = ctx.camera
    profile_or_fault(cam, text_of(req, "ProfileToken"))
    return TRT.GetCompatibleVideoEncoderConfigurationsResponse(
        *[vec_el(cam, t, "Configurations", TRT) for t in video_encoder_tokens(cam, True)]
    )


@ops.op(NS_TRT, "GetVideoEncoderConfigurationOptions", READ_MEDIA)
def get_vec_options(ctx: Context, req: etree._Element) -> etree._Element:
    """What SetVideoEncoderConfiguration accepts: the stream's own codec and resolution."""
    cam = ctx.camera
    valid = video_encoder_tokens(cam, True)
    toks = selected_tokens(cam, req, "vec", valid) or valid
    views = [cam.encoder_view(t) for t in toks] or [cam.video("main")]
    fps_max = max(60, *[round(v.fps) for v in views])
    gov_max = max(300, *[v.gov_length for v in views])
    sizes: list[tuple[int, int]] = []
    for t in toks:
        sizes += [r for r in resolutions(cam, t) if r not in sizes]
    profiles = sorted({_h264_profile(video_of(cam, t).profile) for t in toks} | {"Main"})
    if not valid:  # an H.265 stream without a transcoded sub: Media1 has no H.264 to offer
        return TRT.GetVideoEncoderConfigurationOptionsResponse(
            TRT.Options(TT.QualityRange(TT.Min("0"), TT.Max("100")))
        )
    return TRT.GetVideoEncoderConfigurationOptionsResponse(
        TRT.Options(
            TT.QualityRange(TT.Min("0"), TT.Max("100")),
            TT.H264(
                *[TT.ResolutionsAvailable(TT.Width(str(w)), TT.Height(str(h))) for w, h in sizes],
                TT.GovLengthRange(TT.Min("1"), TT.Max(str(gov_max))),
                TT.FrameRateRange(TT.Min("1"), TT.Max(str(fps_max))),
                TT.EncodingIntervalRange(TT.Min("1"), TT.Max("1")),
                *[TT.H264ProfilesSupported(p) for p in profiles],
            ),
            GuaranteedFrameRateSupported="false",
        )
    )


_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_DURATION = re.compile(r"P(T?[0-9.]+[HMS])+|PT0S|P[0-9DTHMS.]+")


def read_multicast(el: etree._Element | None, old: dict[str, Any]) -> dict[str, Any]:
    """Multicast settings from a tt:Multicast element."""
    if el is None:
        return old
    addr_el = child(el, "Address")
    addr = text_of(addr_el, "IPv4Address", "0.0.0.0") if addr_el is not None else "0.0.0.0"
    if not _IPV4.fullmatch(addr or ""):
        raise Fault(("ter:InvalidArgVal", "ter:ConfigModify"), f"bad multicast address {addr!r}")
    try:
        port = int(text_of(el, "Port", "0") or 0)
        ttl = int(text_of(el, "TTL", "1") or 1)
    except ValueError:
        raise Fault(("ter:InvalidArgVal", "ter:ConfigModify"), "bad multicast port/TTL") from None
    if not (0 <= port <= 65535 and 0 <= ttl <= 255):
        raise Fault(("ter:InvalidArgVal", "ter:ConfigModify"), "multicast port/TTL out of range")
    return {
        "address": addr,
        "port": port,
        "ttl": ttl,
        "autostart": boolean(text_of(el, "AutoStart")),
    }


def check_encoder_change(cam: Camera, token: str, codec: str, width: int, height: int) -> None:
    """The publisher decides the codec; the resolution must be one the options list."""
    v = video_of(cam, token)
    if token == VEC_SUB and cam.transcoded_sub:
        if codec.upper() != "H264":
            raise Fault(
                ("ter:InvalidArgVal", "ter:ConfigModify"),
                f"the transcoded sub stream is H264, not {codec}",
            )
        if (width, height) not in encoder_resolutions(cam, token):
            offered = ", ".join(f"{w}x{h}" for w, h in encoder_resolutions(cam, token))
            raise Fault(
                ("ter:InvalidArgVal", "ter:ConfigModify"),
                f"the sub stream can be {offered}, not {width}x{height}",
            )
        return
    if codec.upper() != v.codec:
        raise Fault(
            ("ter:InvalidArgVal", "ter:ConfigModify"),
            f"the stream is {v.codec}; the publisher decides the codec, not {codec}",
        )
    if (width, height) not in resolutions(cam, token):
        raise Fault(
            ("ter:InvalidArgVal", "ter:ConfigModify"),
            f"{width}x{height} is not in ResolutionsAvailable "
            "(GetVideoEncoderConfigurationOptions): the stream is "
            f"{v.width}x{v.height}",
        )


def number(text: str | None, what: str) -> float:
    """A finite number from a request; ter:ConfigModify when it is not one (INF and NaN
    are valid xs:float, but stored they would break every later response)."""
    try:
        value = float(text or "")
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise Fault(("ter:InvalidArgVal", "ter:ConfigModify"), f"bad {what} {text!r}")
    return value


def integer(text: str | None, what: str) -> int:
    """An integer from a request (decimals truncated); ter:ConfigModify when it is not one."""
    return int(number(text, what))


def read_encoder_config(
    cam: Camera, req: etree._Element, media1: bool
) -> tuple[str, etree._Element, dict[str, Any]]:
    """The Configuration of a (Media1 or Media2) SetVideoEncoderConfiguration: its token,
    the element, and the encoder's stored settings with the new name, quality and multicast.
    Codec and resolution must stay the stream's own (ter:ConfigModify)."""
    conf = child(req, "Configuration")
    if conf is None:
        raise invalid_arg("ter:InvalidArgs", "missing Configuration")
    token = check_token(conf.get("token"), video_encoder_tokens(cam, media1))
    res = child(conf, "Resolution")
    width = integer(text_of(res, "Width"), "Width")
    height = integer(text_of(res, "Height"), "Height")
    check_encoder_change(cam, token, require(conf, "Encoding"), width, height)
    s = enc_settings(cam, token)
    s["width"], s["height"] = width, height
    s["name"] = require(conf, "Name")[:64]
    quality = number(require(conf, "Quality"), "Quality")
    if not 0 <= quality <= 100:
        raise Fault(("ter:InvalidArgVal", "ter:ConfigModify"), "Quality must be 0..100")
    s["quality"] = quality
    s["multicast"] = read_multicast(child(conf, "Multicast"), s.get("multicast", {}))
    return token, conf, s


@ops.op(NS_TRT, "SetVideoEncoderConfiguration", ACTUATE)
def set_vec(ctx: Context, req: etree._Element) -> etree._Element:
    """Store everything a client sets (the codec stays the stream's); Get* echoes it."""
    cam = ctx.camera
    token, conf, s = read_encoder_config(cam, req, media1=True)
    rc = child(conf, "RateControl")
    if rc is not None:
        s["fps"] = max(1, integer(text_of(rc, "FrameRateLimit"), "FrameRateLimit"))
        s["interval"] = 1
        s["bitrate"] = max(1, integer(text_of(rc, "BitrateLimit"), "BitrateLimit"))
    h264 = child(conf, "H264")
    if h264 is not None:
        s["gov"] = max(1, integer(text_of(h264, "GovLength"), "GovLength"))
        profile = text_of(h264, "H264Profile")
        if profile in ("Baseline", "Main", "Extended", "High"):
            s["profile"] = profile
    st = text_of(conf, "SessionTimeout")
    if st:
        if not _DURATION.fullmatch(st):
            raise Fault(("ter:InvalidArgVal", "ter:ConfigModify"), f"bad SessionTimeout {st!r}")
        s["session_timeout"] = st
    cam.set_encoder_settings(token, s)
    return TRT.SetVideoEncoderConfigurationResponse()


@ops.op(NS_TRT, "GetGuaranteedNumberOfVideoEncoderInstances", READ_MEDIA)
def get_guaranteed(ctx: Context, req: etree._Element) -> etree._Element:
    """Readers share the stream: the relay guarantees many instances."""
    check_token(text_of(req, "ConfigurationToken"), [VSC])
    return TRT.GetGuaranteedNumberOfVideoEncoderInstancesResponse(
        TRT.TotalNumber("16"), TRT.H264("16")
    )


# --------------------------------------------------------------------------- audio


@ops.op(NS_TRT, "GetAudioSources", READ_MEDIA)
def get_audio_sources(ctx: Context, req: etree._Element) -> etree._Element:
    """The audio source when the stream has audio."""
    a = ctx.camera.audio("main")
    if a is None:
        return TRT.GetAudioSourcesResponse()
    return TRT.GetAudioSourcesResponse(TRT.AudioSources(TT.Channels(str(a.channels)), token=ASRC))


@ops.op(NS_TRT, "GetAudioSourceConfigurations", READ_MEDIA)
def get_ascs(ctx: Context, req: etree._Element) -> etree._Element:
    """Audio source configurations (none without audio)."""
    cam = ctx.camera
    if not has_audio(cam):
        return TRT.GetAudioSourceConfigurationsResponse()
    return TRT.GetAudioSourceConfigurationsResponse(asc_el(cam, "Configurations", TRT))


@ops.op(NS_TRT, "GetAudioSourceConfiguration", READ_MEDIA)
def get_asc(ctx: Context, req: etree._Element) -> etree._Element:
    """One audio source configuration."""
    cam = ctx.camera
    check_token(text_of(req, "ConfigurationToken"), valid_tokens(cam, "asc"))
    return TRT.GetAudioSourceConfigurationResponse(asc_el(cam, "Configuration", TRT))


@ops.op(NS_TRT, "GetCompatibleAudioSourceConfigurations", READ_MEDIA)
def get_compatible_ascs(ctx: Context, req: etree._Element) -> etree._Element:
    """Audio source configurations a profile can take."""
    cam = ctx.camera
    profile_or_fault(cam, text_of(req, "ProfileToken"))
    if not has_audio(cam):
        return TRT.GetCompatibleAudioSourceConfigurationsResponse()
    return TRT.GetCompatibleAudioSourceConfigurationsResponse(asc_el(cam, "Configurations", TRT))


@ops.op(NS_TRT, "GetAudioSourceConfigurationOptions", READ_MEDIA)
def get_asc_options(ctx: Context, req: etree._Element) -> etree._Element:
    """The one audio input."""
    cam = ctx.camera
    selected_tokens(cam, req, "asc", valid_tokens(cam, "asc"))
    if not has_audio(cam):
        raise Fault(("ter:ActionNotSupported", "ter:AudioNotSupported"), "no audio", "Receiver")
    return TRT.GetAudioSourceConfigurationOptionsResponse(
        TRT.Options(TT.InputTokensAvailable(ASRC))
    )


def _aecs(ctx: Context, tag: str) -> list[etree._Element]:
    a = aec_el(ctx.camera, tag, TRT)
    return [a] if a is not None else []


@ops.op(NS_TRT, "GetAudioEncoderConfigurations", READ_MEDIA)
def get_aecs(ctx: Context, req: etree._Element) -> etree._Element:
    """Audio encoder configurations (AAC/G.711/G.726 only in Media1)."""
    return TRT.GetAudioEncoderConfigurationsResponse(*_aecs(ctx, "Configurations"))


@ops.op(NS_TRT, "GetAudioEncoderConfiguration", READ_MEDIA)
def get_aec(ctx: Context, req: etree._Element) -> etree._Element:
    """One audio encoder configuration."""
    found = _aecs(ctx, "Configuration")
    check_token(text_of(req, "ConfigurationToken"), [AEC] if found else [])
    return TRT.GetAudioEncoderConfigurationResponse(*found)


@ops.op(NS_TRT, "GetCompatibleAudioEncoderConfigurations", READ_MEDIA)
def get_compatible_aecs(ctx: Context, req: etree._Element) -> etree._Element:
    """Audio encoder configurations a profile can take."""
    profile_or_fault(ctx.camera, text_of(req, "ProfileToken"))
    return TRT.GetCompatibleAudioEncoderConfigurationsResponse(*_aecs(ctx, "Configurations"))


@ops.op(NS_TRT, "GetAudioEncoderConfigurationOptions", READ_MEDIA)
def get_aec_options(ctx: Context, req: etree._Element) -> etree._Element:
    """The stream's own audio encoding."""
    cam = ctx.camera
    selected_tokens(cam, req, "aec", [AEC])
    a = cam.audio("main")
    opts = TRT.Options()
    if a is not None and media1_audio_encoding(a):
        opts.append(
            TT.Options(
                TT.Encoding(media1_audio_encoding(a)),
                TT.BitrateList(TT.Items(str(a.bitrate_kbps))),
                TT.SampleRateList(TT.Items(str(a.sample_rate // 1000 or 1))),
            )
        )
    return TRT.GetAudioEncoderConfigurationOptionsResponse(opts)


# --------------------------------------------------------------------------- URIs


def _media_uri(uri: str) -> etree._Element:
    return TRT.MediaUri(
        TT.Uri(uri),
        TT.InvalidAfterConnect("false"),
        TT.InvalidAfterReboot("false"),
        TT.Timeout("PT0S"),
    )


@ops.op(NS_TRT, "GetStreamUri", READ_MEDIA)
def get_stream_uri(ctx: Context, req: etree._Element) -> etree._Element:
    """rtsp:// URI of the profile's stream (http:// for RTSP-over-HTTP)."""
    cam = ctx.camera
    p = profile_or_fault(cam, text_of(req, "ProfileToken"))
    setup = child(req, "StreamSetup")
    stream = text_of(setup, "Stream", "RTP-Unicast")
    transport = child(setup, "Transport")
    proto = text_of(transport, "Protocol", "RTSP")
    if stream not in ("RTP-Unicast", "RTP-Multicast"):
        raise invalid_arg("ter:InvalidStreamSetup", f"unknown Stream {stream!r}")
    if proto not in ("UDP", "TCP", "RTSP", "HTTP"):
        raise invalid_arg("ter:InvalidStreamSetup", f"unknown transport Protocol {proto!r}")
    if stream == "RTP-Multicast" and not ctx.multicast:
        raise invalid_arg("ter:InvalidStreamSetup", "multicast is disabled")
    scheme = "http" if proto == "HTTP" else "rtsp"
    return TRT.GetStreamUriResponse(_media_uri(ctx.stream_uri(cam.stream_path(p.vec), scheme)))


@ops.op(NS_TRT, "GetSnapshotUri", READ_MEDIA)
def get_snapshot_uri(ctx: Context, req: etree._Element) -> etree._Element:
    """HTTP URI of a JPEG of the profile's stream (latest keyframe)."""
    p = profile_or_fault(ctx.camera, text_of(req, "ProfileToken"))
    return TRT.GetSnapshotUriResponse(_media_uri(ctx.snapshot_uri(p.token)))


@ops.op(NS_TRT, "SetSynchronizationPoint", READ_MEDIA)
def set_synchronization_point(ctx: Context, req: etree._Element) -> etree._Element:
    """New readers start on the cached keyframe already, so there is nothing to do."""
    profile_or_fault(ctx.camera, text_of(req, "ProfileToken"))
    return TRT.SetSynchronizationPointResponse()


# --------------------------------------------------------------------------- metadata

_MAX_TOPIC = 1024  # characters of a stored event filter TopicExpression


def mdc_el(cam: Camera, tag: str = "MetadataConfiguration", ns: Any = TT) -> etree._Element:
    """A tt:MetadataConfiguration: what SetMetadataConfiguration stored, else defaults (while
    the main stream carries an ONVIF metadata track, Analytics true and an Events element:
    the metadata comes with the main profile's stream)."""
    m = cam.metadata_settings
    if cam.metadata_track:
        m.setdefault("analytics", True)
        m.setdefault("events", True)
    el = getattr(ns, tag)(
        TT.Name(str(m.get("name", "MetadataConfig"))),
        TT.UseCount(str(cam.use_count("mdc", MDC))),
        token=MDC,
    )
    if m.get("compression"):
        el.set("CompressionType", str(m["compression"]))
    if m.get("ptz") is not None:
        status, position = m["ptz"]
        el.append(TT.PTZStatus(TT.Status(xbool(status)), TT.Position(xbool(position))))
    if m.get("events"):
        ev = TT.Events()
        topic = m.get("topic")
        if topic:
            expr = WSNT.TopicExpression(str(topic), Dialect=str(m.get("dialect", TOPIC_DIALECT)))
            ev.append(TT.Filter(expr))
        el.append(ev)
    el.append(TT.Analytics(xbool(bool(m.get("analytics", False)))))
    el.append(multicast_el(cam, MDC))
    el.append(TT.SessionTimeout(session_timeout(cam, MDC)))
    return el


def read_metadata_config(cam: Camera, req: etree._Element) -> None:
    """Store the Configuration of a (Media1 or Media2) SetMetadataConfiguration."""
    conf = child(req, "Configuration")
    if conf is None:
        raise invalid_arg("ter:InvalidArgs", "missing Configuration")
    check_token(conf.get("token"), [MDC])
    m = cam.metadata_settings
    m["name"] = require(conf, "Name")[:64]
    comp = conf.get("CompressionType")
    if comp is not None:
        if comp not in ("None", "GZIP", "EXI"):
            raise Fault(("ter:InvalidArgVal", "ter:ConfigModify"), f"CompressionType {comp!r}")
        m["compression"] = comp
    ptz = child(conf, "PTZStatus")
    m["ptz"] = (
        [boolean(text_of(ptz, "Status")), boolean(text_of(ptz, "Position"))]
        if ptz is not None
        else None
    )
    events = child(conf, "Events")
    m["events"] = events is not None
    m["topic"] = None
    if events is not None:
        expr = child(child(events, "Filter"), "TopicExpression")
        if expr is not None:
            topic = (expr.text or "").strip()
            if len(topic) > _MAX_TOPIC:
                raise Fault(
                    ("ter:InvalidArgVal", "ter:ConfigModify"),
                    f"TopicExpression longer than {_MAX_TOPIC} characters",
                )
            m["topic"] = topic
            m["dialect"] = expr.get("Dialect", TOPIC_DIALECT)[:256]
    m["analytics"] = boolean(text_of(conf, "Analytics"))
    s = enc_settings(cam, MDC)
    s["multicast"] = read_multicast(child(conf, "Multicast"), s.get("multicast", {}))
    st = text_of(conf, "SessionTimeout")
    if st:
        if not _DURATION.fullmatch(st):
            raise Fault(("ter:InvalidArgVal", "ter:ConfigModify"), f"bad SessionTimeout {st!r}")
        s["session_timeout"] = st
    cam.state.encoders[MDC] = s
    cam.set_metadata_settings(m)


def mdc_options_el(cam: Camera, tag: str = "Options", ns: Any = TRT) -> etree._Element:
    """tt:MetadataConfigurationOptions: PTZ status and position can be asked for."""
    return getattr(ns, tag)(
        TT.PTZStatusFilterOptions(
            TT.PanTiltStatusSupported("true"),
            TT.ZoomStatusSupported("true"),
            TT.PanTiltPositionSupported("true"),
            TT.ZoomPositionSupported("true"),
        ),
        GeoLocation="false",
        MaxContentFilterSize="0",
    )


@ops.op(NS_TRT, "GetMetadataConfigurations", READ_MEDIA)
def get_mdcs(ctx: Context, req: etree._Element) -> etree._Element:
    """The one metadata configuration."""
    return TRT.GetMetadataConfigurationsResponse(mdc_el(ctx.camera, "Configurations", TRT))


@ops.op(NS_TRT, "GetMetadataConfiguration", READ_MEDIA)
def get_mdc(ctx: Context, req: etree._Element) -> etree._Element:
    """One metadata configuration."""
    check_token(text_of(req, "ConfigurationToken"), [MDC])
    return TRT.GetMetadataConfigurationResponse(mdc_el(ctx.camera, "Configuration", TRT))


@ops.op(NS_TRT, "GetCompatibleMetadataConfigurations", READ_MEDIA)
def get_compatible_mdcs(ctx: Context, req: etree._Element) -> etree._Element:
    """Metadata configurations a profile can take."""
    profile_or_fault(ctx.camera, text_of(req, "ProfileToken"))
    return TRT.GetCompatibleMetadataConfigurationsResponse(
        mdc_el(ctx.camera, "Configurations", TRT)
    )


@ops.op(NS_TRT, "GetMetadataConfigurationOptions", READ_MEDIA)
def get_mdc_options(ctx: Context, req: etree._Element) -> etree._Element:
    """What SetMetadataConfiguration accepts."""
    selected_tokens(ctx.camera, req, "mdc", [MDC])
    return TRT.GetMetadataConfigurationOptionsResponse(mdc_options_el(ctx.camera))


@ops.op(NS_TRT, "SetMetadataConfiguration", ACTUATE)
def set_mdc(ctx: Context, req: etree._Element) -> etree._Element:
    """Store name, PTZ status filter, event filter, analytics, multicast and timeout."""
    read_metadata_config(ctx.camera, req)
    return TRT.SetMetadataConfigurationResponse()


# --------------------------------------------------------------------------- OSD

OSD_POSITIONS = ("UpperLeft", "UpperRight", "LowerLeft", "LowerRight", "Custom")
OSD_TEXT_TYPES = ("Plain", "Date", "Time", "DateAndTime")
OSD_DATE_FORMATS = ("M/d/yyyy", "MM/dd/yyyy", "dd/MM/yyyy", "yyyy/MM/dd", "yyyy-MM-dd")
OSD_TIME_FORMATS = ("h:mm:ss tt", "hh:mm:ss tt", "H:mm:ss", "HH:mm:ss")
_MAX_OSD_TEXT = 256


def osd_el(o: dict[str, Any], tag: str = "OSDs", ns: Any = TRT) -> etree._Element:
    """A tt:OSDConfiguration from a stored OSD."""
    pos = o.get("position", {})
    pos_el = TT.Position(TT.Type(str(pos.get("type", "UpperLeft"))))
    if pos.get("type") == "Custom":
        pos_el.append(TT.Pos(x=_num(pos.get("x", 0.0)), y=_num(pos.get("y", 0.0))))
    el = getattr(ns, tag)(
        TT.VideoSourceConfigurationToken(str(o.get("vsc", VSC))),
        TT.Type(str(o.get("type", "Text"))),
        pos_el,
        token=str(o["token"]),
    )
    text = o.get("text")
    if o.get("type") == "Text" and isinstance(text, dict):
        t = TT.TextString(TT.Type(str(text.get("type", "Plain"))))
        if text.get("date_format"):
            t.append(TT.DateFormat(str(text["date_format"])))
        if text.get("time_format"):
            t.append(TT.TimeFormat(str(text["time_format"])))
        if text.get("font_size"):
            t.append(TT.FontSize(str(text["font_size"])))
        if text.get("plain") is not None:
            t.append(TT.PlainText(str(text["plain"])))
        el.append(t)
    if o.get("type") == "Image":
        el.append(TT.Image(TT.ImgPath(str(o.get("image", "")))))
    return el


def read_osd(req: etree._Element, need_token: bool) -> dict[str, Any]:
    """The OSD of a CreateOSD / SetOSD, checked."""
    el = child(req, "OSD")
    if el is None:
        raise invalid_arg("ter:InvalidArgs", "missing OSD")

    def bad(reason: str) -> Fault:
        return Fault(("ter:InvalidArgVal", "ter:ConfigModify"), reason)

    vsc = require(el, "VideoSourceConfigurationToken")
    check_token(vsc, [VSC])
    kind = require(el, "Type")
    if kind not in ("Text", "Image"):
        raise bad(f"OSD Type {kind[:16]!r} is not Text or Image")
    pos_el = child(el, "Position")
    pos_type = text_of(pos_el, "Type") or "UpperLeft"
    if pos_type not in OSD_POSITIONS:
        raise bad(f"OSD position {pos_type[:16]!r} is not one of {', '.join(OSD_POSITIONS)}")
    position: dict[str, Any] = {"type": pos_type}
    if pos_type == "Custom":
        vec = child(pos_el, "Pos")
        x = number(vec.get("x") if vec is not None else "0", "Pos x")
        y = number(vec.get("y") if vec is not None else "0", "Pos y")
        if not (-1 <= x <= 1 and -1 <= y <= 1):
            raise bad("Custom OSD Pos x and y must be -1..1")
        position.update(x=x, y=y)
    out: dict[str, Any] = {"vsc": vsc, "type": kind, "position": position}
    if need_token:
        out["token"] = el.get("token") or ""
    if kind == "Text":
        t = child(el, "TextString")
        ttype = text_of(t, "Type") or "Plain"
        if ttype not in OSD_TEXT_TYPES:
            raise bad(f"OSD text Type {ttype[:16]!r}")
        plain = text_of(t, "PlainText")
        if plain is not None and len(plain) > _MAX_OSD_TEXT:
            raise bad(f"OSD PlainText longer than {_MAX_OSD_TEXT} characters")
        text: dict[str, Any] = {"type": ttype, "plain": plain}
        for key, local, allowed in (
            ("date_format", "DateFormat", OSD_DATE_FORMATS),
            ("time_format", "TimeFormat", OSD_TIME_FORMATS),
        ):
            v = text_of(t, local)
            if v is not None:
                if v not in allowed:
                    raise bad(f"OSD {local} {v[:16]!r} is not one of {', '.join(allowed)}")
                text[key] = v
        size = text_of(t, "FontSize")
        if size is not None:
            fs = integer(size, "FontSize")
            if not 8 <= fs <= 128:
                raise bad("OSD FontSize must be 8..128")
            text["font_size"] = fs
        out["text"] = text
    else:
        path = text_of(child(el, "Image"), "ImgPath") or ""
        if len(path) > 1024:
            raise bad("OSD ImgPath longer than 1024 characters")
        out["image"] = path
    return out


def osd_options_el(cam: Camera, ns: Any = TRT) -> etree._Element:
    """tt:OSDConfigurationOptions."""
    total = str(cam.app_cfg.onvif.max_osds)
    return ns.OSDOptions(
        TT.MaximumNumberOfOSDs(
            Total=total, Image=total, PlainText=total, Date=total, Time=total, DateAndTime=total
        ),
        TT.Type("Text"),
        TT.Type("Image"),
        *[TT.PositionOption(p) for p in OSD_POSITIONS],
        TT.TextOption(
            *[TT.Type(t) for t in OSD_TEXT_TYPES],
            TT.FontSizeRange(TT.Min("8"), TT.Max("128")),
            *[TT.DateFormat(f) for f in OSD_DATE_FORMATS],
            *[TT.TimeFormat(f) for f in OSD_TIME_FORMATS],
        ),
    )


def osds_for(cam: Camera, req: etree._Element) -> list[dict[str, Any]]:
    """The OSDs a GetOSDs asks for (by OSDToken or video source ConfigurationToken)."""
    tok = text_of(req, "OSDToken")
    if tok is not None:
        return [cam.osd(tok)]
    conf = text_of(req, "ConfigurationToken")
    if conf is not None:
        check_token(conf, [VSC])
    return [o for o in cam.osds if conf is None or o.get("vsc") == conf]


@ops.op(NS_TRT, "GetOSDs", READ_MEDIA)
def get_osds(ctx: Context, req: etree._Element) -> etree._Element:
    """Stored OSDs (of a video source configuration)."""
    return TRT.GetOSDsResponse(*[osd_el(o) for o in osds_for(ctx.camera, req)])


@ops.op(NS_TRT, "GetOSD", READ_MEDIA)
def get_osd(ctx: Context, req: etree._Element) -> etree._Element:
    """One stored OSD."""
    o = ctx.camera.osd(require(req, "OSDToken"))
    return TRT.GetOSDResponse(osd_el(o, "OSD"))


@ops.op(NS_TRT, "GetOSDOptions", READ_MEDIA)
def get_osd_options(ctx: Context, req: etree._Element) -> etree._Element:
    """Text and image OSDs at the corners or anywhere."""
    check_token(text_of(req, "ConfigurationToken"), [VSC])
    return TRT.GetOSDOptionsResponse(osd_options_el(ctx.camera))


@ops.op(NS_TRT, "CreateOSD", ACTUATE)
def create_osd(ctx: Context, req: etree._Element) -> etree._Element:
    """Store a new OSD ([onvif] max_osds per camera)."""
    return TRT.CreateOSDResponse(TRT.OSDToken(ctx.camera.create_osd(read_osd(req, False))))


@ops.op(NS_TRT, "SetOSD", ACTUATE)
def set_osd(ctx: Context, req: etree._Element) -> etree._Element:
    """Replace a stored OSD."""
    ctx.camera.set_osd(read_osd(req, True))
    return TRT.SetOSDResponse()


@ops.op(NS_TRT, "DeleteOSD", ACTUATE)
def delete_osd(ctx: Context, req: etree._Element) -> etree._Element:
    """Delete a stored OSD."""
    ctx.camera.delete_osd(require(req, "OSDToken"))
    return TRT.DeleteOSDResponse()
