"""ONVIF Media2 service (ver20 media/wsdl): the same profiles as Media1, H.265 included."""

from __future__ import annotations

from typing import Any

from lxml import etree

from onvifcam.cameras import AEC, ASRC, MDC, VEC_MAIN, VSC, Camera, ProfileState
from onvifcam.cameras.stable import COMMON_FPS
from onvifcam.onvif.device import media2_capabilities_tr2
from onvifcam.onvif.media import (
    CONFIG_TYPES,
    asc_el,
    check_token,
    enc_settings,
    has_audio,
    integer,
    mdc_el,
    mdc_options_el,
    multicast_el,
    number,
    osd_el,
    osd_options_el,
    osds_for,
    profile_or_fault,
    read_encoder_config,
    read_metadata_config,
    read_osd,
    reported_rates,
    resolutions,
    selected_tokens,
    valid_tokens,
    video_encoder_tokens,
    video_of,
    vsc_el,
    vsc_options_el,
)
from onvifcam.onvif.ptz import config_el as ptz_config_el
from onvifcam.onvif.ptz import profile_ptz
from onvifcam.onvif.soap import (
    ACTUATE,
    NS_TR2,
    PRE_AUTH,
    READ_MEDIA,
    TR2,
    TT,
    Context,
    Fault,
    OperationTable,
    child,
    children,
    invalid_arg,
    require,
    text_of,
    xbool,
)

ops = OperationTable()

_AUDIO_MEDIA2 = {"MPEG4-GENERIC": "MP4A-LATM", "MP4A-LATM": "MP4A-LATM"}


def vec2_el(cam: Camera, token: str, tag: str = "VideoEncoder", ns: Any = TR2) -> etree._Element:
    """A tt:VideoEncoder2Configuration (H.264 or H.265): set values, else the stream's."""
    v = cam.encoder_view(token)
    s = enc_settings(cam, token)
    fps, kbps, gov = reported_rates(cam, token)
    q = float(s.get("quality", 80))
    return getattr(ns, tag)(
        TT.Name(s.get("name", "MainStream" if token == VEC_MAIN else "SubStream")),
        TT.UseCount(str(cam.use_count("vec", token))),
        TT.Encoding(v.codec),
        TT.Resolution(TT.Width(str(v.width)), TT.Height(str(v.height))),
        TT.RateControl(
            TT.FrameRateLimit(f"{fps:g}"),
            TT.BitrateLimit(str(kbps)),
            ConstantBitRate="false",
        ),
        multicast_el(cam, token),
        TT.Quality(f"{q:g}"),
        token=token,
        GovLength=str(gov),
        Profile=v.profile,
    )


def aec2_el(cam: Camera, tag: str = "AudioEncoder", ns: Any = TR2) -> etree._Element | None:
    """A tt:AudioEncoder2Configuration (RTP encoding names as Media2 spells them)."""
    a = cam.audio("main")
    if a is None:
        return None
    return getattr(ns, tag)(
        TT.Name(enc_settings(cam, AEC).get("name", "AudioEncoder")),
        TT.UseCount(str(cam.use_count("aec", AEC))),
        TT.Encoding(_AUDIO_MEDIA2.get(a.codec, a.codec)),
        multicast_el(cam, AEC),
        TT.Bitrate(str(a.bitrate_kbps)),
        TT.SampleRate(str(a.sample_rate)),
        token=AEC,
    )


def profile2_el(cam: Camera, p: ProfileState, types: set[str]) -> etree._Element:
    """A tr2:Profiles element with the requested configuration types."""
    el = TR2.Profiles(TR2.Name(p.name), token=p.token, fixed=xbool(p.fixed))
    if not types:
        return el
    every = "All" in types
    conf = TR2.Configurations()
    audio = has_audio(cam)
    if p.vsc and (every or "VideoSource" in types):
        conf.append(vsc_el(cam, "VideoSource", TR2))
    if p.asc and audio and (every or "AudioSource" in types):
        conf.append(asc_el(cam, "AudioSource", TR2))
    if p.vec and (every or "VideoEncoder" in types):
        conf.append(vec2_el(cam, p.vec))
    if p.aec and audio and (every or "AudioEncoder" in types):
        a = aec2_el(cam)
        if a is not None:
            conf.append(a)
    if profile_ptz(cam, p) and (every or "PTZ" in types):
        conf.append(ptz_config_el(cam, "PTZ", TR2))
    if p.mdc and (every or "Metadata" in types):
        conf.append(mdc_el(cam, "Metadata", TR2))
    el.append(conf)
    return el


@ops.op(NS_TR2, "GetServiceCapabilities", PRE_AUTH)
def get_service_capabilities(ctx: Context, req: etree._Element) -> etree._Element:
    """Media2 capabilities."""
    return TR2.GetServiceCapabilitiesResponse(media2_capabilities_tr2(ctx))


@ops.op(NS_TR2, "GetProfiles", READ_MEDIA)
def get_profiles(ctx: Context, req: etree._Element) -> etree._Element:
    """Profiles (one when Token is given) with the configuration types asked for."""
    cam = ctx.camera
    types = {(e.text or "").strip() for e in children(req, "Type")}
    token = text_of(req, "Token")
    profiles = [profile_or_fault(cam, token)] if token else cam.profiles
    return TR2.GetProfilesResponse(*[profile2_el(cam, p, types) for p in profiles])


def _refs(req: etree._Element) -> list[tuple[str, str | None]]:
    out = []
    for c in children(req, "Configuration"):
        kind = require(c, "Type")
        out.append((kind, text_of(c, "Token")))
    return out


def _attr(kind: str) -> str:
    attr = CONFIG_TYPES.get(kind)
    if attr is None:
        raise invalid_arg("ter:NoConfig", f"configuration type {kind!r} is not supported")
    return attr


def _changes(cam: Camera, refs: list[tuple[str, str | None]]) -> dict[str, str | None]:
    """The profile attributes that configuration references set (checked, nothing stored)."""
    changes: dict[str, str | None] = {}
    for kind, tok in refs:
        attr = _attr(kind)
        valid = valid_tokens(cam, attr)
        changes[attr] = check_token(tok or (valid[0] if valid else None), valid)
    return changes


@ops.op(NS_TR2, "CreateProfile", ACTUATE)
def create_profile(ctx: Context, req: etree._Element) -> etree._Element:
    """A new deletable profile, optionally with configurations."""
    cam = ctx.camera
    changes = _changes(cam, _refs(req))
    p = cam.create_profile(require(req, "Name"), None, **changes)
    return TR2.CreateProfileResponse(TR2.Token(p.token))


@ops.op(NS_TR2, "DeleteProfile", ACTUATE)
def delete_profile(ctx: Context, req: etree._Element) -> etree._Element:
    """Delete a non-fixed profile."""
    cam = ctx.camera
    p = profile_or_fault(cam, text_of(req, "Token"))
    cam.delete_profile(p.token)
    return TR2.DeleteProfileResponse()


@ops.op(NS_TR2, "AddConfiguration", ACTUATE)
def add_configuration(ctx: Context, req: etree._Element) -> etree._Element:
    """Attach configurations to a profile (and rename it when Name is given)."""
    cam = ctx.camera
    p = profile_or_fault(cam, text_of(req, "ProfileToken"))
    changes = _changes(cam, _refs(req))
    name = text_of(req, "Name")
    if name:
        changes["name"] = name[:64]
    if changes:
        cam.update_profile(p.token, **changes)
    return TR2.AddConfigurationResponse()


@ops.op(NS_TR2, "RemoveConfiguration", ACTUATE)
def remove_configuration(ctx: Context, req: etree._Element) -> etree._Element:
    """Detach configurations from a profile."""
    cam = ctx.camera
    p = profile_or_fault(cam, text_of(req, "ProfileToken"))
    changes: dict[str, str | None] = {_attr(kind): None for kind, _tok in _refs(req)}
    if changes:
        cam.update_profile(p.token, **changes)
    return TR2.RemoveConfigurationResponse()


@ops.op(NS_TR2, "GetVideoSourceConfigurations", READ_MEDIA)
def get_vscs(ctx: Context, req: etree._Element) -> etree._Element:
    """Video source configurations."""
    cam = ctx.camera
    sel = selected_tokens(cam, req, "vsc", [VSC])
    return TR2.GetVideoSourceConfigurationsResponse(
        *[vsc_el(cam, "Configurations", TR2) for _ in sel]
    )


@ops.op(NS_TR2, "GetVideoEncoderConfigurations", READ_MEDIA)
def get_vecs(ctx: Context, req: etree._Element) -> etree._Element:
    """Video encoder configurations (H.264 and H.265)."""
    cam = ctx.camera
    sel = selected_tokens(cam, req, "vec", video_encoder_tokens(cam, False))
    return TR2.GetVideoEncoderConfigurationsResponse(
        *[vec2_el(cam, t, "Configurations") for t in sel]
    )


@ops.op(NS_TR2, "GetVideoEncoderConfigurationOptions", READ_MEDIA)
def get_vec_options(ctx: Context, req: etree._Element) -> etree._Element:
    """Per encoder: its stream's codec, resolution and profile."""
    cam = ctx.camera
    sel = selected_tokens(cam, req, "vec", video_encoder_tokens(cam, False)) or [VEC_MAIN]
    out = TR2.GetVideoEncoderConfigurationOptionsResponse()
    for t in sel:
        v = video_of(cam, t)
        fps, kbps, gov = reported_rates(cam, t)
        rates = sorted({fps, v.fps} | {f for f in COMMON_FPS if f <= max(fps, v.fps)})
        out.append(
            TR2.Options(
                TT.Encoding(v.codec),
                TT.QualityRange(TT.Min("0"), TT.Max("100")),
                *[
                    TT.ResolutionsAvailable(TT.Width(str(w)), TT.Height(str(h)))
                    for w, h in resolutions(cam, t)
                ],
                TT.BitrateRange(TT.Min("1"), TT.Max(str(max(100000, kbps, v.bitrate_kbps)))),
                GovLengthRange=f"1 {max(300, gov)}",
                FrameRatesSupported=" ".join(f"{f:g}" for f in rates),
                ProfilesSupported=v.profile,
                ConstantBitRateSupported="false",
                GuaranteedFrameRateSupported="false",
            )
        )
    return out


@ops.op(NS_TR2, "SetVideoEncoderConfiguration", ACTUATE)
def set_vec(ctx: Context, req: etree._Element) -> etree._Element:
    """Store everything a client sets (the codec stays the stream's); Get* echoes it."""
    cam = ctx.camera
    token, conf, s = read_encoder_config(cam, req, media1=False)
    rc = child(conf, "RateControl")
    if rc is not None:
        s["fps"] = max(1.0, number(text_of(rc, "FrameRateLimit") or "1", "FrameRateLimit"))
        s["bitrate"] = max(1, integer(text_of(rc, "BitrateLimit") or "1", "BitrateLimit"))
    # Media2 puts GovLength and Profile in attributes; the npm onvif package also sends a
    # Media1-style H264 element to Media2, so that counts when the attributes are missing
    h264 = child(conf, "H264")
    gov = conf.get("GovLength") or text_of(h264, "GovLength")
    if gov:
        s["gov"] = max(1, integer(gov, "GovLength"))
    profile = conf.get("Profile") or text_of(h264, "H264Profile")
    if profile and len(profile) <= 32:
        s["profile"] = profile
    cam.set_encoder_settings(token, s)
    return TR2.SetVideoEncoderConfigurationResponse()


@ops.op(NS_TR2, "GetAudioSourceConfigurations", READ_MEDIA)
def get_ascs(ctx: Context, req: etree._Element) -> etree._Element:
    """Audio source configurations (none without audio)."""
    cam = ctx.camera
    sel = selected_tokens(cam, req, "asc", valid_tokens(cam, "asc"))
    return TR2.GetAudioSourceConfigurationsResponse(
        *[asc_el(cam, "Configurations", TR2) for _ in sel]
    )


@ops.op(NS_TR2, "GetAudioEncoderConfigurations", READ_MEDIA)
def get_aecs(ctx: Context, req: etree._Element) -> etree._Element:
    """Audio encoder configurations (none without audio)."""
    cam = ctx.camera
    sel = selected_tokens(cam, req, "aec", valid_tokens(cam, "aec"))
    els = [aec2_el(cam, "Configurations") for _ in sel]
    return TR2.GetAudioEncoderConfigurationsResponse(*[e for e in els if e is not None])


_PROTOCOLS = {
    "RtspUnicast": "rtsp",
    "RtspMulticast": "rtsp",
    "RTSP": "rtsp",
    "RtspOverHttp": "http",
}


@ops.op(NS_TR2, "GetStreamUri", READ_MEDIA)
def get_stream_uri(ctx: Context, req: etree._Element) -> etree._Element:
    """RtspUnicast, RtspMulticast, RTSP (interleaved TCP) or RtspOverHttp."""
    cam = ctx.camera
    proto = require(req, "Protocol")
    p = profile_or_fault(cam, text_of(req, "ProfileToken"))
    scheme = _PROTOCOLS.get(proto)
    if scheme is None:
        raise invalid_arg("ter:InvalidStreamSetup", f"unsupported Protocol {proto!r}")
    if proto == "RtspMulticast" and not ctx.multicast:
        raise invalid_arg("ter:InvalidStreamSetup", "multicast is disabled")
    return TR2.GetStreamUriResponse(TR2.Uri(ctx.stream_uri(cam.stream_path(p.vec), scheme)))


@ops.op(NS_TR2, "GetSnapshotUri", READ_MEDIA)
def get_snapshot_uri(ctx: Context, req: etree._Element) -> etree._Element:
    """HTTP URI of a JPEG of the profile's stream."""
    p = profile_or_fault(ctx.camera, text_of(req, "ProfileToken"))
    return TR2.GetSnapshotUriResponse(TR2.Uri(ctx.snapshot_uri(p.token)))


@ops.op(NS_TR2, "SetSynchronizationPoint", READ_MEDIA)
def set_synchronization_point(ctx: Context, req: etree._Element) -> etree._Element:
    """Readers already start on the cached keyframe."""
    profile_or_fault(ctx.camera, text_of(req, "ProfileToken"))
    return TR2.SetSynchronizationPointResponse()


# --------------------------------------------------------------------------- parity with Media1


@ops.op(NS_TR2, "GetVideoSourceConfigurationOptions", READ_MEDIA)
def get_vsc_options(ctx: Context, req: etree._Element) -> etree._Element:
    """The bounds are the stream's picture."""
    selected_tokens(ctx.camera, req, "vsc", [VSC])
    return TR2.GetVideoSourceConfigurationOptionsResponse(vsc_options_el(ctx.camera, TR2))


@ops.op(NS_TR2, "GetAudioSourceConfigurationOptions", READ_MEDIA)
def get_asc_options(ctx: Context, req: etree._Element) -> etree._Element:
    """The one audio input (ter:AudioNotSupported without audio)."""
    cam = ctx.camera
    selected_tokens(cam, req, "asc", valid_tokens(cam, "asc"))
    if not has_audio(cam):
        raise Fault(("ter:ActionNotSupported", "ter:AudioNotSupported"), "no audio", "Receiver")
    return TR2.GetAudioSourceConfigurationOptionsResponse(
        TR2.Options(TT.InputTokensAvailable(ASRC))
    )


@ops.op(NS_TR2, "GetAudioEncoderConfigurationOptions", READ_MEDIA)
def get_aec_options(ctx: Context, req: etree._Element) -> etree._Element:
    """The stream's own audio encoding, as Media2 names it (none without audio)."""
    cam = ctx.camera
    selected_tokens(cam, req, "aec", valid_tokens(cam, "aec"))
    a = cam.audio("main")
    out = TR2.GetAudioEncoderConfigurationOptionsResponse()
    if a is not None:
        out.append(
            TR2.Options(
                TT.Encoding(_AUDIO_MEDIA2.get(a.codec, a.codec)),
                TT.BitrateList(TT.Items(str(a.bitrate_kbps))),
                TT.SampleRateList(TT.Items(str(a.sample_rate))),
            )
        )
    return out


@ops.op(NS_TR2, "GetVideoEncoderInstances", READ_MEDIA)
def get_video_encoder_instances(ctx: Context, req: etree._Element) -> etree._Element:
    """Readers share the stream: many instances of the stream's codec."""
    cam = ctx.camera
    check_token(text_of(req, "ConfigurationToken"), [VSC])
    codecs = sorted({video_of(cam, t).codec for t in video_encoder_tokens(cam, False)})
    return TR2.GetVideoEncoderInstancesResponse(
        TR2.Info(*[TR2.Codec(TR2.Encoding(c), TR2.Number("16")) for c in codecs], TR2.Total("16"))
    )


@ops.op(NS_TR2, "GetMetadataConfigurations", READ_MEDIA)
def get_mdcs(ctx: Context, req: etree._Element) -> etree._Element:
    """The metadata configuration (of a profile, when it has one)."""
    sel = selected_tokens(ctx.camera, req, "mdc", [MDC])
    return TR2.GetMetadataConfigurationsResponse(
        *[mdc_el(ctx.camera, "Configurations", TR2) for _ in sel]
    )


@ops.op(NS_TR2, "GetMetadataConfigurationOptions", READ_MEDIA)
def get_mdc_options(ctx: Context, req: etree._Element) -> etree._Element:
    """What SetMetadataConfiguration accepts."""
    selected_tokens(ctx.camera, req, "mdc", [MDC])
    return TR2.GetMetadataConfigurationOptionsResponse(mdc_options_el(ctx.camera, ns=TR2))


@ops.op(NS_TR2, "SetMetadataConfiguration", ACTUATE)
def set_mdc(ctx: Context, req: etree._Element) -> etree._Element:
    """Store the metadata configuration."""
    read_metadata_config(ctx.camera, req)
    return TR2.SetMetadataConfigurationResponse()


@ops.op(NS_TR2, "GetOSDs", READ_MEDIA)
def get_osds(ctx: Context, req: etree._Element) -> etree._Element:
    """Stored OSDs (one by OSDToken, or of a video source configuration)."""
    return TR2.GetOSDsResponse(*[osd_el(o, "OSDs", TR2) for o in osds_for(ctx.camera, req)])


@ops.op(NS_TR2, "GetOSDOptions", READ_MEDIA)
def get_osd_options(ctx: Context, req: etree._Element) -> etree._Element:
    """Text and image OSDs at the corners or anywhere."""
    check_token(text_of(req, "ConfigurationToken"), [VSC])
    return TR2.GetOSDOptionsResponse(osd_options_el(ctx.camera, TR2))


@ops.op(NS_TR2, "CreateOSD", ACTUATE)
def create_osd(ctx: Context, req: etree._Element) -> etree._Element:
    """Store a new OSD."""
    return TR2.CreateOSDResponse(TR2.OSDToken(ctx.camera.create_osd(read_osd(req, False))))


@ops.op(NS_TR2, "SetOSD", ACTUATE)
def set_osd(ctx: Context, req: etree._Element) -> etree._Element:
    """Replace a stored OSD."""
    ctx.camera.set_osd(read_osd(req, True))
    return TR2.SetOSDResponse()


@ops.op(NS_TR2, "DeleteOSD", ACTUATE)
def delete_osd(ctx: Context, req: etree._Element) -> etree._Element:
    """Delete a stored OSD."""
    ctx.camera.delete_osd(require(req, "OSDToken"))
    return TR2.DeleteOSDResponse()
