"""Which URL a client gets for a camera: XAddrs, stream URIs and snapshot URIs.

The one place that decides the host (and port) put into every URL the server hands out:
SOAP responses (XAddrs, GetStreamUri, GetSnapshotUri), ``/api/cameras`` and the landing
page, DESCRIBE's SDP, WS-Discovery ProbeMatch/Hello XAddrs, mDNS and the log lines a user
pastes. The host of a camera's HTTP URLs is, first that applies:

1. the camera's own ``address`` (it is bound there);
2. ``[server] advertise``;
3. on a wildcard listener (``0.0.0.0``, ``::``): the host of the request's ``Host`` header,
   when it is a usable name or address (the name the client reached us by, NAT included);
4. the address the request came in on (``::ffff:`` mapped IPv4 unmapped, never a wildcard);
5. the ``Host`` header (validated);
6. the first up, non-loopback, non-link-local IPv4 address of an interface;
7. ``127.0.0.1``.

A camera's own ``advertise`` comes before all of these. ``advertise`` (either one) may carry
a port, ``host:port`` (``[v6addr]:port``), for port mapping (a container's ``-p 8080:18100``,
NAT): that port replaces the port the server listens on in the XAddrs and snapshot URIs,
the camera's own ``advertise`` port for its own socket (or the main port when it has none),
``[server] advertise``'s for the main port; ``[server] advertise_rtsp_port`` likewise
replaces the RTSP port in stream URIs (a camera's ``rtsp_port`` still wins).

Without a request (log lines, discovery before a Probe names its interface) steps 3 to 5
are the listening host when it is specific. Stream URIs name the camera's own address when
it serves RTSP there (``rtsp_listen``), else the host above when the main RTSP listener is
on a wildcard or on that very host, else ``advertise`` or the RTSP listening host. IPv6
hosts come in brackets; ``0.0.0.0`` never appears.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import time
from dataclasses import dataclass
from urllib.parse import quote

from onvifcam.config import ServerConfig, split_advertise
from onvifcam.discovery import netif

WILDCARD = ("", "0.0.0.0", "::")
FALLBACK = "127.0.0.1"
_IFACE_TTL = 30.0  # seconds an interface lookup is reused

_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)


def _adv_host(value: str) -> str:
    try:
        return split_advertise(value)[0]
    except ValueError:
        return ""


def _adv_port(value: str) -> int:
    try:
        return split_advertise(value)[1]
    except ValueError:
        return 0


def url_host(host: str) -> str:
    """``host`` as it goes into a URL: IPv6 addresses in brackets."""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    return host


def specific(ip: str) -> str:
    """``ip`` with an IPv4-mapped IPv6 address unmapped; "" for a wildcard."""
    ip = (ip or "").strip()
    with contextlib.suppress(ValueError):
        addr = ipaddress.ip_address(ip)
        if addr.is_unspecified:
            return ""
        mapped = getattr(addr, "ipv4_mapped", None)
        if mapped is not None:
            return str(mapped)
    return "" if ip in WILDCARD else ip


def host_from_header(value: str | None) -> str:
    """The host part of a Host header if it is a usable name or address, else ""."""
    v = (value or "").strip()
    if v.startswith("["):
        end = v.find("]")
        name = v[1:end] if end > 0 else ""
    else:
        name = v.rsplit(":", 1)[0] if v.count(":") == 1 else v
    if not name:
        return ""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return name.lower() if _HOSTNAME.fullmatch(name) else ""
    if ip.is_unspecified:
        return ""
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def interface_host(table: list[netif.Iface] | None = None) -> str:
    """The first up, non-loopback, non-link-local IPv4 address of an interface, else
    127.0.0.1."""
    try:
        ifaces = netif.interfaces() if table is None else table
    except Exception:  # an address for a URL is never worth failing for
        ifaces = []
    for i in ifaces:
        if not i.up or i.loopback:
            continue
        for a in i.ipv4:
            with contextlib.suppress(ValueError):
                ip = ipaddress.ip_address(a)
                if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
                    return a
    return FALLBACK


def display_host(server: ServerConfig, table: list[netif.Iface] | None = None) -> str:
    """The host to print in URLs a user pastes (no request to look at): ``advertise``, else
    the listening host when it is specific, else :func:`interface_host`."""
    return _adv_host(server.advertise) or specific(server.host) or interface_host(table)


def sdp_host(server: ServerConfig, local: str) -> str:
    """The address in the SDP origin line of a DESCRIBE answer: ``advertise``, else the
    address the request came in on, else the listening host or an interface's."""
    return _adv_host(server.advertise) or specific(local) or display_host(server)


@dataclass(frozen=True)
class Place:
    """Where a camera is reachable, as far as its URLs are concerned."""

    slug: str  # its name on the main port: /onvif/SLUG/...
    path: str  # main stream path
    address: str = ""  # its own address ("" none)
    onvif_port: int = 0  # port of its own ONVIF socket (0: only on the main port)
    rtsp_port: int = 0  # port in its stream URIs (``rtsp_port`` setting; 0: the main one)
    own_rtsp: bool = False  # it serves RTSP on its own address (``rtsp_listen``, bound)
    advertise: str = ""  # its own ``advertise``: host or host:port clients reach it by


@dataclass(frozen=True)
class Arrival:
    """What a request tells about how the client reached us."""

    local: str = ""  # address the request came in on (the socket's own address)
    port: int = 0  # port it came in on
    host_header: str | None = None  # the Host header as sent


@dataclass(frozen=True)
class CameraUrls:
    """The URLs of one camera for one client."""

    onvif_url: str
    rtsp_url: str
    snapshot_url: str

    def as_dict(self) -> dict[str, str]:
        """``onvif_url``, ``rtsp_url`` and ``snapshot_url``."""
        return {
            "onvif_url": self.onvif_url,
            "rtsp_url": self.rtsp_url,
            "snapshot_url": self.snapshot_url,
        }


class Addressing:
    """The URL rules of one server (see the module docstring).

    ``rtsp_port`` and ``http_port`` are the main listeners' ports, set by their owners once
    bound (a configured 0 becomes the port the OS chose).
    """

    def __init__(self, server: ServerConfig, table: list[netif.Iface] | None = None) -> None:
        self.server = server
        self.rtsp_port = server.rtsp_port
        self.http_port = server.http_port
        self._table = table  # a fixed interface table (tests); None: the host's
        self._iface: tuple[float, str] = (-1e9, "")

    # ------------------------------------------------------------------ hosts
    def _interface_host(self) -> str:
        if self._table is not None:
            return interface_host(self._table)
        now = time.monotonic()
        if now - self._iface[0] > _IFACE_TTL:
            self._iface = (now, interface_host())
        return self._iface[1]

    @property
    def wildcard(self) -> bool:
        """True when the main listeners are on every address."""
        return self.server.host in WILDCARD

    def host(self, place: Place | None = None, arrival: Arrival | None = None) -> str:
        """The host of a camera's HTTP URLs (XAddrs, snapshot URI) for this client, bare
        (no brackets); ``place`` None: the server itself."""
        if place is not None and _adv_host(place.advertise):
            return _adv_host(place.advertise)
        own = specific(place.address) if place is not None else ""
        if own:
            return own
        if _adv_host(self.server.advertise):
            return _adv_host(self.server.advertise)
        if arrival is None:
            return specific(self.server.host) or self._interface_host()
        named = host_from_header(arrival.host_header)
        if named and self.wildcard:
            return named
        return specific(arrival.local) or named or self._interface_host()

    def rtsp_host(self, place: Place | None, http_host: str) -> str:
        """The host of stream URIs, given the host of the same client's HTTP URLs."""
        if place is not None and _adv_host(place.advertise):
            return _adv_host(place.advertise)
        if place is not None and place.own_rtsp and specific(place.address):
            return specific(place.address)
        listen = self.server.host
        if listen in WILDCARD or listen == http_host:
            return http_host
        return _adv_host(self.server.advertise) or specific(listen) or http_host

    def sdp_host(self, local: str) -> str:
        """The address in the SDP origin line of a DESCRIBE answer (see :func:`sdp_host`)."""
        return sdp_host(self.server, local)

    def ip(self, place: Place | None, arrival: Arrival | None) -> str:
        """The address a client talks to (GetNetworkInterfaces): the camera's own, else the
        one the request came in on, else the host of its URLs."""
        own = specific(place.address) if place is not None else ""
        local = specific(arrival.local) if arrival is not None else ""
        return own or local or self.host(place, arrival)

    # ------------------------------------------------------------------ URLs
    def rtsp_port_of(self, place: Place | None) -> int:
        """The port of a camera's stream URIs: its ``rtsp_port`` setting, else the main one."""
        return place.rtsp_port if place is not None and place.rtsp_port else self.rtsp_port

    def public_rtsp_port(self, place: Place | None) -> int:
        """The RTSP port clients reach a camera's streams by: its ``rtsp_port``, else
        ``[server] advertise_rtsp_port``, else the main RTSP port."""
        if place is not None and place.rtsp_port:
            return place.rtsp_port
        return self.server.advertise_rtsp_port or self.rtsp_port

    def public_port(self, place: Place | None, port: int) -> int:
        """The port clients reach the HTTP socket listening on ``port`` by: the camera's
        ``advertise`` port for its own socket (or for the main port when it has none), the
        ``[server] advertise`` port for the main port, else ``port`` itself."""
        own = _adv_port(place.advertise) if place is not None else 0
        if own and place is not None and (port == place.onvif_port or not place.onvif_port):
            return own
        if port == self.http_port and (place is None or port != place.onvif_port):
            return _adv_port(self.server.advertise) or port
        return port

    def stream_uri(self, place: Place, path: str, http_host: str, scheme: str = "rtsp") -> str:
        """``scheme://HOST:PORT/PATH`` of one of the camera's streams."""
        host = url_host(self.rtsp_host(place, http_host))
        return f"{scheme}://{host}:{self.public_rtsp_port(place)}/{quote(path, safe='/')}"

    def service_base(
        self, place: Place, host: str, port: int | None = None, prefix: str = ""
    ) -> str:
        """``http://HOST:PORT/onvif[/SLUG]``: the camera's own socket when it has one,
        else the main port by name. ``port``/``prefix`` given: the socket and path the
        request used (SOAP answers point back where the client came from)."""
        if port is not None:
            return f"http://{url_host(host)}:{self.public_port(place, port)}{prefix}"
        if place.onvif_port:
            return f"http://{url_host(host)}:{self.public_port(place, place.onvif_port)}/onvif"
        main = self.public_port(place, self.http_port)
        return f"http://{url_host(host)}:{main}/onvif/{quote(place.slug)}"

    def urls(self, place: Place, arrival: Arrival | None = None) -> CameraUrls:
        """Device service, stream and snapshot URLs of a camera for this client."""
        host = self.host(place, arrival)
        base = self.service_base(place, host)
        return CameraUrls(
            onvif_url=f"{base}/device_service",
            rtsp_url=self.stream_uri(place, place.path, host),
            snapshot_url=f"{base}/snapshot",
        )

    def rtsp_template(self, arrival: Arrival | None = None) -> str:
        """``rtsp://HOST:PORT/NAME`` of the main RTSP server for this client."""
        host = url_host(self.rtsp_host(None, self.host(None, arrival)))
        return f"rtsp://{host}:{self.public_rtsp_port(None)}/NAME"

    def discovery_xaddr(self, place: Place) -> tuple[str, str]:
        """(host, XAddr template) for WS-Discovery: ``{host}`` in the template is filled in
        per reply with the address the Probe came in on when ``host`` is ""."""
        host = (
            _adv_host(place.advertise)
            or specific(place.address)
            or _adv_host(self.server.advertise)
            or specific(self.server.host)
        )
        if place.onvif_port:
            where = f"{self.public_port(place, place.onvif_port)}/onvif/device_service"
        else:
            main = self.public_port(place, self.http_port)
            where = f"{main}/onvif/{quote(place.slug)}/device_service"
        return host, f"http://{{host}}:{where}"
