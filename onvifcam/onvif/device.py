"""ONVIF Device service (ver10 device/wsdl): identity, clock, capabilities, network, users."""

from __future__ import annotations

import datetime as dt
import ipaddress
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
    READ_SYSTEM_SENSITIVE,
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
            IPFilter="true",
            ZeroConfiguration="true",
            IPVersion6="false",
            DynDNS="true",
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
            SystemLogging="true",
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
        OSD="true",
    )


def media2_capabilities_tr2(ctx: Context) -> etree._Element:
    """tr2:Capabilities."""
    return TR2.Capabilities(
        TR2.ProfileCapabilities(
            MaximumNumberOfProfiles=str(ctx.camera.app_cfg.onvif.max_profiles),
            ConfigurationsSupported="VideoSource VideoEncoder AudioSource AudioEncoder Metadata",
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
        OSD="true",
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
                    TT.IPFilter("true"),
                    TT.ZeroConfiguration("true"),
                    TT.IPVersion6("false"),
                    TT.DynDNS("true"),
                ),
                TT.System(
                    TT.DiscoveryResolve("true"),
                    TT.DiscoveryBye("true"),
                    TT.RemoteDiscovery("false"),
                    TT.SystemBackup("false"),
                    TT.SystemLogging("true"),
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


# --------------------------------------------------------------------------- network settings
# What NVR settings pages set: accepted, checked, persisted with the camera and echoed by
# the getters. The virtual camera changes nothing on the host.

MAX_ENTRIES = 16  # addresses / names per list setting
_DNS_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?")
_PROTOCOLS = ("HTTP", "HTTPS", "RTSP")


def _bad(subcode: str, reason: str) -> Fault:
    return invalid_arg(subcode, reason)


def _ip(text: str | None, version: int, what: str) -> str:
    try:
        addr = ipaddress.ip_address((text or "").strip())
    except ValueError:
        addr = None
    if addr is None or addr.version != version:
        sub = "ter:InvalidIPv4Address" if version == 4 else "ter:InvalidIPv6Address"
        raise _bad(sub, f"{what}: {(text or '')[:64]!r} is not an IPv{version} address")
    return str(addr)


def _limited(els: list[etree._Element], what: str) -> list[etree._Element]:
    if len(els) > MAX_ENTRIES:
        raise _bad("ter:InvalidArgs", f"at most {MAX_ENTRIES} {what} entries")
    return els


def _read_host(el: etree._Element, what: str) -> dict[str, str]:
    """A tt:NetworkHost as {"type", "address"}."""
    kind = require(el, "Type")
    if kind == "IPv4":
        return {"type": kind, "address": _ip(text_of(el, "IPv4Address"), 4, what)}
    if kind == "IPv6":
        return {"type": kind, "address": _ip(text_of(el, "IPv6Address"), 6, what)}
    if kind == "DNS":
        name = text_of(el, "DNSname") or ""
        if not _DNS_NAME.fullmatch(name):
            raise _bad("ter:InvalidDnsName", f"{what}: {name[:64]!r} is not a DNS name")
        return {"type": kind, "address": name}
    raise _bad("ter:InvalidArgs", f"{what}: Type {kind[:16]!r} is not IPv4, IPv6 or DNS")


def _host_el(tag: str, h: dict[str, str]) -> etree._Element:
    kind = h.get("type", "IPv4")
    child_tag = {"IPv4": "IPv4Address", "IPv6": "IPv6Address"}.get(kind, "DNSname")
    return getattr(TT, tag)(TT.Type(kind), getattr(TT, child_tag)(h.get("address", "")))


def _read_ip(el: etree._Element, what: str) -> dict[str, str]:
    """A tt:IPAddress as {"type", "address"}."""
    kind = require(el, "Type")
    if kind not in ("IPv4", "IPv6"):
        raise _bad("ter:InvalidArgs", f"{what}: Type {kind[:16]!r} is not IPv4 or IPv6")
    version = 4 if kind == "IPv4" else 6
    return {"type": kind, "address": _ip(text_of(el, f"IPv{version}Address"), version, what)}


def _ip_el(tag: str, a: dict[str, str]) -> etree._Element:
    kind = a.get("type", "IPv4")
    return getattr(TT, tag)(TT.Type(kind), getattr(TT, f"{kind}Address")(a.get("address", "")))


@ops.op(NS_TDS, "GetNTP", READ_SYSTEM)
def get_ntp(ctx: Context, req: etree._Element) -> etree._Element:
    """The NTP settings a client stored (none by default: the camera follows the host)."""
    ntp = ctx.camera.network("ntp") or {}
    return TDS.GetNTPResponse(
        TDS.NTPInformation(
            TT.FromDHCP(xbool(bool(ntp.get("dhcp", False)))),
            *[_host_el("NTPManual", h) for h in ntp.get("manual", [])],
        )
    )


@ops.op(NS_TDS, "SetNTP", WRITE_SYSTEM)
def set_ntp(ctx: Context, req: etree._Element) -> etree._Element:
    """Store FromDHCP and the manual NTP servers."""
    dhcp = boolean(require(req, "FromDHCP"))
    manual = [_read_host(e, "NTPManual") for e in _limited(children(req, "NTPManual"), "NTP")]
    ctx.camera.set_network("ntp", {"dhcp": dhcp, "manual": manual})
    return TDS.SetNTPResponse()


@ops.op(NS_TDS, "GetDNS", READ_SYSTEM)
def get_dns(ctx: Context, req: etree._Element) -> etree._Element:
    """The DNS settings a client stored."""
    dns = ctx.camera.network("dns") or {}
    return TDS.GetDNSResponse(
        TDS.DNSInformation(
            TT.FromDHCP(xbool(bool(dns.get("dhcp", False)))),
            *[TT.SearchDomain(d) for d in dns.get("search", [])],
            *[_ip_el("DNSManual", a) for a in dns.get("manual", [])],
        )
    )


@ops.op(NS_TDS, "SetDNS", WRITE_SYSTEM)
def set_dns(ctx: Context, req: etree._Element) -> etree._Element:
    """Store FromDHCP, search domains and manual DNS servers."""
    dhcp = boolean(require(req, "FromDHCP"))
    search = []
    for e in _limited(children(req, "SearchDomain"), "SearchDomain"):
        name = (e.text or "").strip()
        if not _DNS_NAME.fullmatch(name):
            raise _bad("ter:InvalidArgs", f"SearchDomain {name[:64]!r} is not a domain name")
        search.append(name)
    manual = [_read_ip(e, "DNSManual") for e in _limited(children(req, "DNSManual"), "DNS")]
    ctx.camera.set_network("dns", {"dhcp": dhcp, "search": search, "manual": manual})
    return TDS.SetDNSResponse()


def _default_protocols(ctx: Context) -> dict[str, dict[str, object]]:
    return {
        "HTTP": {"enabled": True, "ports": [ctx.http_port]},
        "HTTPS": {"enabled": False, "ports": [443]},
        "RTSP": {"enabled": True, "ports": [ctx.rtsp_port]},
    }


@ops.op(NS_TDS, "GetNetworkProtocols", READ_SYSTEM)
def get_network_protocols(ctx: Context, req: etree._Element) -> etree._Element:
    """HTTP, HTTPS and RTSP: the ports in use, or what a client set."""
    protocols = _default_protocols(ctx)
    protocols.update(ctx.camera.network("protocols") or {})
    return TDS.GetNetworkProtocolsResponse(
        *[
            TDS.NetworkProtocols(
                TT.Name(name),
                TT.Enabled(xbool(bool(p.get("enabled")))),
                *[TT.Port(str(port)) for port in p.get("ports", [])],  # type: ignore[attr-defined]
            )
            for name, p in protocols.items()
        ]
    )


@ops.op(NS_TDS, "SetNetworkProtocols", WRITE_SYSTEM)
def set_network_protocols(ctx: Context, req: etree._Element) -> etree._Element:
    """Store the protocols' enabled flags and ports (the listeners stay as configured)."""
    items = _limited(children(req, "NetworkProtocols"), "NetworkProtocols")
    if not items:
        raise _bad("ter:InvalidArgs", "no NetworkProtocols given")
    stored = ctx.camera.network("protocols") or {}
    for el in items:
        name = require(el, "Name")
        if name not in _PROTOCOLS:
            raise _bad("ter:ServiceNotSupported", f"protocol {name[:16]!r} is not supported")
        ports = []
        for p in _limited(children(el, "Port"), "Port"):
            try:
                port = int((p.text or "").strip())
            except ValueError:
                port = -1
            if not 0 < port < 65536:
                raise _bad("ter:InvalidArgs", f"{name} port {(p.text or '')[:8]!r} is not a port")
            ports.append(port)
        if not ports:
            raise _bad("ter:InvalidArgs", f"{name} needs a Port")
        stored[name] = {"enabled": boolean(require(el, "Enabled")), "ports": ports}
    ctx.camera.set_network("protocols", stored)
    return TDS.SetNetworkProtocolsResponse()


@ops.op(NS_TDS, "GetNetworkDefaultGateway", READ_SYSTEM)
def get_network_default_gateway(ctx: Context, req: etree._Element) -> etree._Element:
    """The gateways a client stored (none by default)."""
    gw = ctx.camera.network("gateway") or {}
    return TDS.GetNetworkDefaultGatewayResponse(
        TDS.NetworkGateway(
            *[TT.IPv4Address(a) for a in gw.get("ipv4", [])],
            *[TT.IPv6Address(a) for a in gw.get("ipv6", [])],
        )
    )


@ops.op(NS_TDS, "SetNetworkDefaultGateway", WRITE_SYSTEM)
def set_network_default_gateway(ctx: Context, req: etree._Element) -> etree._Element:
    """Store the default gateways."""
    v4 = [_ip(e.text, 4, "IPv4Address") for e in _limited(children(req, "IPv4Address"), "IPv4")]
    v6 = [_ip(e.text, 6, "IPv6Address") for e in _limited(children(req, "IPv6Address"), "IPv6")]
    ctx.camera.set_network("gateway", {"ipv4": v4, "ipv6": v6})
    return TDS.SetNetworkDefaultGatewayResponse()


def _link_local(mac: str) -> str:
    parts = [int(x, 16) for x in mac.split(":")[-2:]] if mac.count(":") == 5 else [1, 1]
    return f"169.254.{max(1, min(254, parts[0]))}.{max(1, min(254, parts[1]))}"


@ops.op(NS_TDS, "GetZeroConfiguration", READ_SYSTEM)
def get_zero_configuration(ctx: Context, req: etree._Element) -> etree._Element:
    """Zero configuration of eth0 (off by default); a link-local address while on."""
    zc = ctx.camera.network("zeroconf") or {}
    on = bool(zc.get("enabled", False))
    return TDS.GetZeroConfigurationResponse(
        TDS.ZeroConfiguration(
            TT.InterfaceToken("eth0"),
            TT.Enabled(xbool(on)),
            *([TT.Addresses(_link_local(ctx.camera.mac))] if on else []),
        )
    )


@ops.op(NS_TDS, "SetZeroConfiguration", WRITE_SYSTEM)
def set_zero_configuration(ctx: Context, req: etree._Element) -> etree._Element:
    """Store zero configuration on/off for eth0."""
    token = require(req, "InterfaceToken")
    if token != "eth0":
        raise _bad("ter:InvalidNetworkInterface", f"no network interface {token[:64]!r}")
    ctx.camera.set_network("zeroconf", {"enabled": boolean(require(req, "Enabled"))})
    return TDS.SetZeroConfigurationResponse()


def _read_filter(el: etree._Element | None) -> dict[str, object]:
    if el is None:
        raise _bad("ter:InvalidArgs", "missing IPAddressFilter")
    kind = require(el, "Type")
    if kind not in ("Allow", "Deny"):
        raise _bad("ter:InvalidArgs", f"IPAddressFilter Type {kind[:16]!r} is not Allow or Deny")
    out: dict[str, object] = {"type": kind}
    for version in (4, 6):
        entries = []
        for e in _limited(children(el, f"IPv{version}Address"), "filter address"):
            addr = _ip(text_of(e, "Address"), version, "IPAddressFilter")
            try:
                prefix = int(text_of(e, "PrefixLength") or "")
            except ValueError:
                prefix = -1
            if not 0 <= prefix <= (32 if version == 4 else 128):
                raise _bad("ter:InvalidArgs", f"bad PrefixLength for {addr}")
            entries.append([addr, prefix])
        out[f"ipv{version}"] = entries
    return out


def _filter(ctx: Context) -> dict[str, object]:
    return ctx.camera.network("ipfilter") or {"type": "Deny", "ipv4": [], "ipv6": []}


@ops.op(NS_TDS, "GetIPAddressFilter", READ_SYSTEM_SENSITIVE)
def get_ip_address_filter(ctx: Context, req: etree._Element) -> etree._Element:
    """The stored filter (default: deny nobody). It is never enforced."""
    f = _filter(ctx)
    return TDS.GetIPAddressFilterResponse(
        TDS.IPAddressFilter(
            TT.Type(str(f.get("type", "Deny"))),
            *[
                getattr(TT, f"IPv{v}Address")(TT.Address(a), TT.PrefixLength(str(p)))
                for v in (4, 6)
                for a, p in f.get(f"ipv{v}", [])  # type: ignore[attr-defined]
            ],
        )
    )


@ops.op(NS_TDS, "SetIPAddressFilter", WRITE_SYSTEM)
def set_ip_address_filter(ctx: Context, req: etree._Element) -> etree._Element:
    """Replace the stored filter."""
    ctx.camera.set_network("ipfilter", _read_filter(child(req, "IPAddressFilter")))
    return TDS.SetIPAddressFilterResponse()


@ops.op(NS_TDS, "AddIPAddressFilter", WRITE_SYSTEM)
def add_ip_address_filter(ctx: Context, req: etree._Element) -> etree._Element:
    """Add addresses to the stored filter."""
    new = _read_filter(child(req, "IPAddressFilter"))
    old = _filter(ctx)
    for key in ("ipv4", "ipv6"):
        have = list(old.get(key, []))  # type: ignore[call-overload]
        have += [e for e in new[key] if e not in have]  # type: ignore[attr-defined]
        if len(have) > MAX_ENTRIES:
            raise _bad("ter:InvalidArgs", f"at most {MAX_ENTRIES} filter addresses")
        new[key] = have
    ctx.camera.set_network("ipfilter", new)
    return TDS.AddIPAddressFilterResponse()


@ops.op(NS_TDS, "RemoveIPAddressFilter", WRITE_SYSTEM)
def remove_ip_address_filter(ctx: Context, req: etree._Element) -> etree._Element:
    """Remove addresses from the stored filter."""
    gone = _read_filter(child(req, "IPAddressFilter"))
    f = _filter(ctx)
    for key in ("ipv4", "ipv6"):
        f[key] = [e for e in f.get(key, []) if e not in gone[key]]  # type: ignore[attr-defined]
    ctx.camera.set_network("ipfilter", f)
    return TDS.RemoveIPAddressFilterResponse()


@ops.op(NS_TDS, "GetDynamicDNS", READ_SYSTEM)
def get_dynamic_dns(ctx: Context, req: etree._Element) -> etree._Element:
    """Dynamic DNS as stored (NoUpdate by default)."""
    d = ctx.camera.network("dyndns") or {}
    info = TDS.DynamicDNSInformation(TT.Type(str(d.get("type", "NoUpdate"))))
    if d.get("name"):
        info.append(TT.Name(str(d["name"])))
    if d.get("ttl"):
        info.append(TT.TTL(str(d["ttl"])))
    return TDS.GetDynamicDNSResponse(info)


@ops.op(NS_TDS, "SetDynamicDNS", WRITE_SYSTEM)
def set_dynamic_dns(ctx: Context, req: etree._Element) -> etree._Element:
    """Store the dynamic DNS type, name and TTL."""
    kind = require(req, "Type")
    if kind not in ("NoUpdate", "ClientUpdates", "ServerUpdates"):
        raise _bad("ter:InvalidArgs", f"DynamicDNS Type {kind[:16]!r}")
    name = text_of(req, "Name") or ""
    if name and not _DNS_NAME.fullmatch(name):
        raise _bad("ter:InvalidArgs", f"{name[:64]!r} is not a DNS name")
    ttl = text_of(req, "TTL") or ""
    if ttl and not re.fullmatch(r"P(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?", ttl):
        raise _bad("ter:InvalidArgs", f"TTL {ttl[:32]!r} is not an xs:duration")
    ctx.camera.set_network("dyndns", {"type": kind, "name": name, "ttl": ttl})
    return TDS.SetDynamicDNSResponse()


# --------------------------------------------------------------------------- system log


@ops.op(NS_TDS, "GetSystemLog", READ_SYSTEM_SECRET)
def get_system_log(ctx: Context, req: etree._Element) -> etree._Element:
    """The server's recent log lines about this camera ([onvif] system_log_lines; chosen by
    the camera's identity, see :mod:`onvifcam.cameras.logring`)."""
    kind = require(req, "LogType")
    if kind not in ("System", "Access"):
        raise _bad("ter:InvalidArgs", f"LogType {kind[:16]!r} is not System or Access")
    lines = list(ctx.camera.log_lines)
    if kind == "Access":
        lines = [ln for ln in lines if ".onvif." in ln or ".web." in ln or ".rtsp." in ln]
    return TDS.GetSystemLogResponse(TDS.SystemLog(TT.String("\n".join(lines))))


@ops.op(NS_TDS, "GetSystemSupportInformation", READ_SYSTEM_SECRET)
def get_system_support_information(ctx: Context, req: etree._Element) -> etree._Element:
    """Identity, stream state and the camera's recent log lines, as text."""
    c = ctx.camera
    v = c.video("main")
    head = [
        f"{c.manufacturer} {c.model} firmware {c.firmware} serial {c.serial}",
        f"camera {c.name!r} path {c.path!r} online {c.online}",
        f"video {v.codec} {v.width}x{v.height} {v.fps:g} fps; measured {c.measured('main')}",
        "",
    ]
    text = "\n".join(head + list(c.log_lines))
    return TDS.GetSystemSupportInformationResponse(TDS.SupportInformation(TT.String(text)))
