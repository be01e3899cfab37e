"""ONVIF Device service (ver10 device/wsdl): identity, clock, capabilities, network, users."""

from __future__ import annotations

import datetime as dt
import re

from lxml import etree

from onvifcam.cameras import USER, User
from onvifcam.onvif.deviceio import NS_TMD, capabilities_tmd, input_tokens, relay_tokens
from onvifcam.onvif.events import capabilities_tev
from onvifcam.onvif.imaging import NS_TIMG, capabilities_timg
from onvifcam.onvif.ptz import NS_TPTZ, capabilities_tptz, ptz_enabled
from onvifcam.onvif.soap import (
    NS_TDS,
    NS_TEV,
    NS_TR2,
    NS_TRT,
    PRE_AUTH,
    READ_SYSTEM,
    READ_SYSTEM_SECRET,
    TDS,
    TR2,
    TRT,
    TT,
    UNRECOVERABLE,
    WRITE_SYSTEM,
    Context,
    Fault,
    OperationTable,
    boolean,
    child,
    children,
    invalid_arg,
    require,
    text_of,
    xbool,
)

ops = OperationTable()

SERVICES = (
    ("device", NS_TDS, (25, 12)),
    ("media", NS_TRT, (25, 12)),
    ("media2", NS_TR2, (25, 12)),
    ("events", NS_TEV, (24, 12)),
    ("deviceio", NS_TMD, (2, 41)),
    ("imaging", NS_TIMG, (25, 12)),
    ("ptz", NS_TPTZ, (25, 12)),  # only on cameras with ptz (see _has_service)
)
_TZ = re.compile(r"^(?P<std>[A-Za-z]{3,}|<[+-]?[A-Za-z0-9]+>)(?P<off>[+-]?\d{1,2}(:\d{2}){0,2})?")


# --------------------------------------------------------------------------- clock


def _tz_offset(tz: str) -> dt.timedelta:
    """UTC offset of a POSIX TZ string's standard time (``CET-1`` -> +1 h); DST ignored."""
    m = _TZ.match(tz)
    if not m or not m.group("off"):
        return dt.timedelta(0)
    off = m.group("off")
    sign = -1 if off.startswith("-") else 1  # POSIX: positive is west of Greenwich
    parts = [int(p) for p in off.lstrip("+-").split(":")]
    secs = parts[0] * 3600 + (parts[1] * 60 if len(parts) > 1 else 0)
    return dt.timedelta(seconds=-sign * secs)


def _datetime(d: dt.datetime) -> etree._Element:
    return TT.Time(TT.Hour(str(d.hour)), TT.Minute(str(d.minute)), TT.Second(str(d.second)))


def _dt_el(name: str, d: dt.datetime) -> etree._Element:
    return getattr(TT, name)(
        _datetime(d), TT.Date(TT.Year(str(d.year)), TT.Month(str(d.month)), TT.Day(str(d.day)))
    )


@ops.op(NS_TDS, "GetSystemDateAndTime", PRE_AUTH)
def get_system_date_and_time(ctx: Context, req: etree._Element) -> etree._Element:
    """The camera's clock in UTC and local time."""
    t = ctx.camera.time_settings
    utc = dt.datetime.fromtimestamp(ctx.camera.now(), dt.UTC)
    local = utc + _tz_offset(t["tz"])
    return TDS.GetSystemDateAndTimeResponse(
        TDS.SystemDateAndTime(
            TT.DateTimeType(t["type"]),
            TT.DaylightSavings(xbool(t["dst"])),
            TT.TimeZone(TT.TZ(t["tz"])),
            _dt_el("UTCDateTime", utc),
            _dt_el("LocalDateTime", local),
        )
    )


def _read_datetime(el: etree._Element) -> float:
    date = child(el, "Date")
    tm = child(el, "Time")
    try:
        d = dt.datetime(
            int(require(date, "Year")),  # type: ignore[arg-type]
            int(require(date, "Month")),  # type: ignore[arg-type]
            int(require(date, "Day")),  # type: ignore[arg-type]
            int(require(tm, "Hour")),  # type: ignore[arg-type]
            int(require(tm, "Minute")),  # type: ignore[arg-type]
            int(require(tm, "Second")),  # type: ignore[arg-type]
            tzinfo=dt.UTC,
        )
    except (ValueError, TypeError, Fault):
        raise invalid_arg("ter:InvalidDateTime", "invalid UTCDateTime") from None
    return d.timestamp()


@ops.op(NS_TDS, "SetSystemDateAndTime", WRITE_SYSTEM)
def set_system_date_and_time(ctx: Context, req: etree._Element) -> etree._Element:
    """Manual (offset to the host clock) or NTP (host clock); TZ is stored."""
    kind = require(req, "DateTimeType")
    if kind not in ("Manual", "NTP"):
        raise invalid_arg("ter:InvalidArgs", f"DateTimeType {kind!r}")
    dst = boolean(text_of(req, "DaylightSavings"))
    tz_el = child(req, "TimeZone")
    tz = text_of(tz_el, "TZ") if tz_el is not None else None
    if tz is not None and (not _TZ.match(tz) or len(tz) > 64):
        raise invalid_arg("ter:InvalidTimeZone", f"invalid POSIX TZ {tz[:64]!r}")
    utc = None
    if kind == "Manual":
        el = child(req, "UTCDateTime")
        if el is None:
            raise invalid_arg("ter:InvalidDateTime", "Manual needs UTCDateTime")
        utc = _read_datetime(el)
    ctx.camera.set_time(kind, tz, dst, utc)
    return TDS.SetSystemDateAndTimeResponse()


# --------------------------------------------------------------------------- identity


@ops.op(NS_TDS, "GetDeviceInformation", READ_SYSTEM)
def get_device_information(ctx: Context, req: etree._Element) -> etree._Element:
    """Manufacturer, model, firmware, serial, hardware id."""
    c = ctx.camera
    return TDS.GetDeviceInformationResponse(
        TDS.Manufacturer(c.manufacturer),
        TDS.Model(c.model),
        TDS.FirmwareVersion(c.firmware),
        TDS.SerialNumber(c.serial),
        TDS.HardwareId(c.hardware),
    )


@ops.op(NS_TDS, "GetEndpointReference", PRE_AUTH)
def get_endpoint_reference(ctx: Context, req: etree._Element) -> etree._Element:
    """The EPR address (the WS-Discovery identity)."""
    return TDS.GetEndpointReferenceResponse(TDS.GUID(f"urn:uuid:{ctx.camera.uuid}"))


@ops.op(NS_TDS, "GetWsdlUrl", PRE_AUTH)
def get_wsdl_url(ctx: Context, req: etree._Element) -> etree._Element:
    """Where the WSDLs are documented."""
    return TDS.GetWsdlUrlResponse(TDS.WsdlUrl("http://www.onvif.org/Documents/Specifications.aspx"))


# --------------------------------------------------------------------------- capabilities


def device_capabilities_tds(ctx: Context) -> etree._Element:
    """tds:Capabilities (GetServiceCapabilities, GetServices with capabilities)."""
    c = TDS.Capabilities(
        TDS.Network(
            IPFilter="false",
            ZeroConfiguration="false",
            IPVersion6="false",
            DynDNS="false",
            HostnameFromDHCP="false",
            NTP="0",
        ),
        TDS.Security(
            {
                "TLS1.0": "false",
                "TLS1.1": "false",
                "TLS1.2": "false",
                "OnboardKeyGeneration": "false",
                "AccessPolicyConfig": "false",
                "DefaultAccessPolicy": "true",
                "Dot1X": "false",
                "RemoteUserHandling": "false",
                "X.509Token": "false",
                "SAMLToken": "false",
                "KerberosToken": "false",
                "UsernameToken": "true",
                "HttpDigest": "true",
                "RELToken": "false",
                "MaxUsers": str(ctx.camera.app_cfg.onvif.max_users),
                "MaxUserNameLength": "64",
                "MaxPasswordLength": "64",
            }
        ),
        TDS.System(
            DiscoveryResolve="true",
            DiscoveryBye="true",
            RemoteDiscovery="false",
            SystemBackup="false",
            SystemLogging="false",
            HttpFirmwareUpgrade="false",
            HttpSystemBackup="false",
            HttpSystemLogging="false",
            HttpSupportInformation="false",
        ),
    )
    return c


def _media_streaming(ctx: Context) -> dict[str, str]:
    return {
        "RTPMulticast": xbool(ctx.multicast),
        "RTP_TCP": "true",
        "RTP_RTSP_TCP": "true",
        "NonAggregateControl": "false",
        "NoRTSPStreaming": "false",
    }


def media_capabilities_trt(ctx: Context) -> etree._Element:
    """trt:Capabilities."""
    return TRT.Capabilities(
        TRT.ProfileCapabilities(MaximumNumberOfProfiles=str(ctx.camera.app_cfg.onvif.max_profiles)),
        TRT.StreamingCapabilities(_media_streaming(ctx)),
        SnapshotUri="true",
        Rotation="false",
        VideoSourceMode="false",
        OSD="false",
    )


def media2_capabilities_tr2(ctx: Context) -> etree._Element:
    """tr2:Capabilities."""
    return TR2.Capabilities(
        TR2.ProfileCapabilities(
            MaximumNumberOfProfiles=str(ctx.camera.app_cfg.onvif.max_profiles),
            ConfigurationsSupported="VideoSource VideoEncoder AudioSource AudioEncoder",
        ),
        TR2.StreamingCapabilities(
            RTSPStreaming="true",
            RTPMulticast=xbool(ctx.multicast),
            RTP_RTSP_TCP="true",
            NonAggregateControl="false",
            RTSPWebSocketUri="",
            AutoStartMulticast="false",
        ),
        SnapshotUri="true",
        Rotation="false",
        VideoSourceMode="false",
        OSD="false",
        Mask="false",
        SourceMask="false",
    )


@ops.op(NS_TDS, "GetServiceCapabilities", PRE_AUTH)
def get_service_capabilities(ctx: Context, req: etree._Element) -> etree._Element:
    """Device service capabilities."""
    return TDS.GetServiceCapabilitiesResponse(device_capabilities_tds(ctx))


@ops.op(NS_TDS, "GetServices", PRE_AUTH)
def get_services(ctx: Context, req: etree._Element) -> etree._Element:
    """Every service with its XAddr and version (and capabilities when asked)."""
    include = boolean(text_of(req, "IncludeCapability"))
    caps = {
        "device": device_capabilities_tds,
        "media": media_capabilities_trt,
        "media2": media2_capabilities_tr2,
        "events": capabilities_tev,
        "deviceio": capabilities_tmd,
        "imaging": capabilities_timg,
        "ptz": capabilities_tptz,
    }
    out = TDS.GetServicesResponse()
    for name, ns, (major, minor) in SERVICES:
        if name == "ptz" and not ptz_enabled(ctx.camera):
            continue
        svc = TDS.Service(TDS.Namespace(ns), TDS.XAddr(ctx.xaddr(name)))
        if include:
            svc.append(TDS.Capabilities(caps[name](ctx)))
        svc.append(TDS.Version(TT.Major(str(major)), TT.Minor(str(minor))))
        out.append(svc)
    return out


@ops.op(NS_TDS, "GetCapabilities", PRE_AUTH)
def get_capabilities(ctx: Context, req: etree._Element) -> etree._Element:
    """Legacy capabilities: Device, Events, Media and (under Extension) DeviceIO."""
    cats = [c.text.strip() for c in children(req, "Category") if c.text] or ["All"]
    supported = {"All", "Device", "Events", "Media", "Imaging"}
    if ptz_enabled(ctx.camera):
        supported.add("PTZ")
    for cat in cats:
        if cat not in supported:
            raise Fault(
                ("ter:ActionNotSupported", "ter:NoSuchService"),
                f"the camera has no {cat} service",
                "Receiver",
            )
    caps = TDS.Capabilities()
    if {"All", "Device"} & set(cats):
        caps.append(
            TT.Device(
                TT.XAddr(ctx.xaddr("device")),
                TT.Network(
                    TT.IPFilter("false"),
                    TT.ZeroConfiguration("false"),
                    TT.IPVersion6("false"),
                    TT.DynDNS("false"),
                ),
                TT.System(
                    TT.DiscoveryResolve("true"),
                    TT.DiscoveryBye("true"),
                    TT.RemoteDiscovery("false"),
                    TT.SystemBackup("false"),
                    TT.SystemLogging("false"),
                    TT.FirmwareUpgrade("false"),
                    *[
                        TT.SupportedVersions(TT.Major(str(a)), TT.Minor(str(b)))
                        for a, b in ((2, 0), (2, 40), (18, 12), (25, 12))
                    ],
                ),
                TT.IO(
                    TT.InputConnectors(str(len(input_tokens(ctx.camera)))),
                    TT.RelayOutputs(str(len(relay_tokens(ctx.camera)))),
                ),
                TT.Security(
                    TT("TLS1.1", "false"),
                    TT("TLS1.2", "false"),
                    TT.OnboardKeyGeneration("false"),
                    TT.AccessPolicyConfig("false"),
                    TT("X.509Token", "false"),
                    TT.SAMLToken("false"),
                    TT.KerberosToken("false"),
                    TT.RELToken("false"),
                ),
            )
        )
    if {"All", "Events"} & set(cats):
        caps.append(
            TT.Events(
                TT.XAddr(ctx.xaddr("events")),
                TT.WSSubscriptionPolicySupport("true"),
                TT.WSPullPointSupport("true"),
                TT.WSPausableSubscriptionManagerInterfaceSupport("false"),
            )
        )
    if {"All", "Imaging"} & set(cats):
        caps.append(TT.Imaging(TT.XAddr(ctx.xaddr("imaging"))))
    if {"All", "Media"} & set(cats):
        s = _media_streaming(ctx)
        caps.append(
            TT.Media(
                TT.XAddr(ctx.xaddr("media")),
                TT.StreamingCapabilities(
                    TT.RTPMulticast(s["RTPMulticast"]),
                    TT.RTP_TCP("true"),
                    TT.RTP_RTSP_TCP("true"),
                ),
                TT.Extension(
                    TT.ProfileCapabilities(
                        TT.MaximumNumberOfProfiles(str(ctx.camera.app_cfg.onvif.max_profiles))
                    )
                ),
            )
        )
    if {"All", "PTZ"} & set(cats) and ptz_enabled(ctx.camera):
        caps.append(TT.PTZ(TT.XAddr(ctx.xaddr("ptz"))))
    if "All" in cats:
        caps.append(
            TT.Extension(
                TT.DeviceIO(
                    TT.XAddr(ctx.xaddr("deviceio")),
                    TT.VideoSources("1"),
                    TT.VideoOutputs("0"),
                    TT.AudioSources("1" if ctx.camera.audio("main") is not None else "0"),
                    TT.AudioOutputs("0"),
                    TT.RelayOutputs(str(len(relay_tokens(ctx.camera)))),
                )
            )
        )
    return TDS.GetCapabilitiesResponse(caps)


# --------------------------------------------------------------------------- scopes, discovery


def _scope(defn: str, item: str) -> etree._Element:
    return TDS.Scopes(TT.ScopeDef(defn), TT.ScopeItem(item))


@ops.op(NS_TDS, "GetScopes", READ_SYSTEM)
def get_scopes(ctx: Context, req: etree._Element) -> etree._Element:
    """Fixed and configurable scopes."""
    c = ctx.camera
    return TDS.GetScopesResponse(
        *[_scope("Fixed", s) for s in c.fixed_scopes],
        *[_scope("Configurable", s) for s in c.config_scopes + c.added_scopes],
    )


def _scope_list(req: etree._Element, local: str) -> list[str]:
    items = [(e.text or "").strip() for e in children(req, local)]
    if not items or any(not s or len(s) > 512 for s in items):
        raise invalid_arg("ter:InvalidArgs", f"{local} must hold 1..512-character URIs")
    return items


@ops.op(NS_TDS, "SetScopes", WRITE_SYSTEM)
def set_scopes(ctx: Context, req: etree._Element) -> etree._Element:
    """Replace the configurable scopes."""
    ctx.camera.set_scopes(_scope_list(req, "Scopes"))
    return TDS.SetScopesResponse()


@ops.op(NS_TDS, "AddScopes", WRITE_SYSTEM)
def add_scopes(ctx: Context, req: etree._Element) -> etree._Element:
    """Add configurable scopes."""
    ctx.camera.add_scopes(_scope_list(req, "ScopeItem"))
    return TDS.AddScopesResponse()


@ops.op(NS_TDS, "RemoveScopes", WRITE_SYSTEM)
def remove_scopes(ctx: Context, req: etree._Element) -> etree._Element:
    """Remove configurable scopes."""
    items = _scope_list(req, "ScopeItem")
    ctx.camera.remove_scopes(items)
    return TDS.RemoveScopesResponse(*[TDS.ScopeItem(s) for s in items])


@ops.op(NS_TDS, "GetDiscoveryMode", READ_SYSTEM)
def get_discovery_mode(ctx: Context, req: etree._Element) -> etree._Element:
    """Discoverable / NonDiscoverable."""
    return TDS.GetDiscoveryModeResponse(TDS.DiscoveryMode(ctx.camera.discovery_mode))


@ops.op(NS_TDS, "SetDiscoveryMode", WRITE_SYSTEM)
def set_discovery_mode(ctx: Context, req: etree._Element) -> etree._Element:
    """Set the WS-Discovery mode."""
    ctx.camera.set_discovery_mode(require(req, "DiscoveryMode"))
    return TDS.SetDiscoveryModeResponse()


# --------------------------------------------------------------------------- network


@ops.op(NS_TDS, "GetHostname", PRE_AUTH)
def get_hostname(ctx: Context, req: etree._Element) -> etree._Element:
    """The device hostname."""
    return TDS.GetHostnameResponse(
        TDS.HostnameInformation(TT.FromDHCP("false"), TT.Name(ctx.camera.hostname))
    )


@ops.op(NS_TDS, "SetHostname", WRITE_SYSTEM)
def set_hostname(ctx: Context, req: etree._Element) -> etree._Element:
    """Set the hostname (RFC 1123)."""
    ctx.camera.set_hostname(require(req, "Name"))
    return TDS.SetHostnameResponse()


@ops.op(NS_TDS, "GetNetworkInterfaces", READ_SYSTEM)
def get_network_interfaces(ctx: Context, req: etree._Element) -> etree._Element:
    """One interface with the camera's MAC and the address clients reach it on."""
    return TDS.GetNetworkInterfacesResponse(
        TDS.NetworkInterfaces(
            TT.Enabled("true"),
            TT.Info(TT.Name("eth0"), TT.HwAddress(ctx.camera.mac), TT.MTU("1500")),
            TT.IPv4(
                TT.Enabled("true"),
                TT.Config(
                    TT.Manual(TT.Address(_ipv4(ctx.host)), TT.PrefixLength("24")),
                    TT.DHCP("false"),
                ),
            ),
            token="eth0",
        )
    )


def _ipv4(host: str) -> str:
    return host if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", host) else "0.0.0.0"


@ops.op(NS_TDS, "GetDNS", READ_SYSTEM)
def get_dns(ctx: Context, req: etree._Element) -> etree._Element:
    """No DNS configuration (virtual device)."""
    return TDS.GetDNSResponse(TDS.DNSInformation(TT.FromDHCP("false")))


@ops.op(NS_TDS, "GetNTP", READ_SYSTEM)
def get_ntp(ctx: Context, req: etree._Element) -> etree._Element:
    """The camera follows the host clock; no NTP server of its own."""
    return TDS.GetNTPResponse(TDS.NTPInformation(TT.FromDHCP("false")))


@ops.op(NS_TDS, "GetNetworkProtocols", READ_SYSTEM)
def get_network_protocols(ctx: Context, req: etree._Element) -> etree._Element:
    """HTTP (the ONVIF port) and RTSP; no HTTPS."""
    return TDS.GetNetworkProtocolsResponse(
        TDS.NetworkProtocols(TT.Name("HTTP"), TT.Enabled("true"), TT.Port(str(ctx.http_port))),
        TDS.NetworkProtocols(TT.Name("HTTPS"), TT.Enabled("false"), TT.Port("443")),
        TDS.NetworkProtocols(TT.Name("RTSP"), TT.Enabled("true"), TT.Port(str(ctx.rtsp_port))),
    )


@ops.op(NS_TDS, "GetNetworkDefaultGateway", READ_SYSTEM)
def get_network_default_gateway(ctx: Context, req: etree._Element) -> etree._Element:
    """No gateway (virtual device)."""
    return TDS.GetNetworkDefaultGatewayResponse(TDS.NetworkGateway())


# --------------------------------------------------------------------------- users


@ops.op(NS_TDS, "GetUsers", READ_SYSTEM_SECRET)
def get_users(ctx: Context, req: etree._Element) -> etree._Element:
    """User names and levels (never passwords)."""
    return TDS.GetUsersResponse(
        *[TDS.User(TT.Username(u.name), TT.UserLevel(u.level)) for u in ctx.camera.users]
    )


def _users(req: etree._Element) -> list[User]:
    out = []
    for el in children(req, "User"):
        name = require(el, "Username")
        out.append(User(name, text_of(el, "Password") or "", text_of(el, "UserLevel") or USER))
    if not out:
        raise invalid_arg("ter:InvalidArgs", "no User given")
    return out


@ops.op(NS_TDS, "CreateUsers", WRITE_SYSTEM)
def create_users(ctx: Context, req: etree._Element) -> etree._Element:
    """Create users (persisted)."""
    ctx.camera.create_users(_users(req))
    return TDS.CreateUsersResponse()


@ops.op(NS_TDS, "DeleteUsers", WRITE_SYSTEM)
def delete_users(ctx: Context, req: etree._Element) -> etree._Element:
    """Delete users created over ONVIF."""
    names = [(e.text or "").strip() for e in children(req, "Username")]
    if not names:
        raise invalid_arg("ter:InvalidArgs", "no Username given")
    ctx.camera.delete_users(names)
    return TDS.DeleteUsersResponse()


@ops.op(NS_TDS, "SetUser", WRITE_SYSTEM)
def set_user(ctx: Context, req: etree._Element) -> etree._Element:
    """Change users' passwords and levels."""
    for el in children(req, "User"):
        ctx.camera.set_user(
            require(el, "Username"), text_of(el, "Password"), text_of(el, "UserLevel") or USER
        )
    return TDS.SetUserResponse()


# --------------------------------------------------------------------------- maintenance


@ops.op(NS_TDS, "SystemReboot", UNRECOVERABLE)
def system_reboot(ctx: Context, req: etree._Element) -> etree._Element:
    """Restart the virtual camera's endpoint (after the response is sent)."""
    ctx.camera.reboot()
    return TDS.SystemRebootResponse(TDS.Message("Rebooting the virtual camera in 1 second"))


@ops.op(NS_TDS, "SetSystemFactoryDefault", UNRECOVERABLE)
def set_system_factory_default(ctx: Context, req: etree._Element) -> etree._Element:
    """Forget client changes (users, scopes, hostname, profiles, clock); keep identity."""
    kind = require(req, "FactoryDefault")
    if kind not in ("Hard", "Soft"):
        raise invalid_arg("ter:InvalidArgs", f"FactoryDefault {kind!r}")
    ctx.camera.factory_default()
    return TDS.SetSystemFactoryDefaultResponse()
