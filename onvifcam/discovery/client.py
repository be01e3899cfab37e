"""The probe client behind ``onvifcam discover``: find every ONVIF device on a link.

It sends WS-Discovery Probes (by default one for ``dn:NetworkVideoTransmitter`` and one for
``tds:Device``, each sent twice as SOAP-over-UDP asks), collects ProbeMatches for a fixed
time, and merges them by endpoint reference. It speaks plain WS-Discovery 2005/04, so it
finds real cameras as well as onvifcam's. :func:`listen` records Hello/Bye traffic.
"""

from __future__ import annotations

import json
import random
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from urllib.parse import unquote

from onvifcam.discovery import netif
from onvifcam.discovery.wsdiscovery import (
    DEVICE,
    MULTICAST_V4,
    MULTICAST_V6,
    NVT,
    PORT,
    Bye,
    Hello,
    Ignored,
    Message,
    ProbeMatches,
    QName,
    ResolveMatches,
    build_probe,
    build_resolve,
    new_message_id,
    parse,
    retransmit_offsets,
)

TYPE_CHOICES: dict[str, tuple[QName, ...]] = {"nvt": (NVT,), "device": (DEVICE,), "any": ()}
_SCOPE = "onvif://www.onvif.org/"


class DiscoverError(OSError):
    """The probe could not be sent (no such interface, no route...)."""


@dataclass
class Device:
    """One device that answered, merged over every ProbeMatch with its EPR."""

    epr: str
    xaddrs: list[str]
    scopes: list[str]
    types: list[str]
    metadata_version: int
    source: str
    seconds: float  # after the first Probe left
    matches: int = 1

    def scope(self, kind: str) -> str:
        """The value of the first ``onvif://www.onvif.org/<kind>/...`` scope."""
        prefix = f"{_SCOPE}{kind}/"
        for s in self.scopes:
            if s.startswith(prefix):
                return unquote(s[len(prefix) :])
        return ""

    @property
    def name(self) -> str:
        """The name/ scope."""
        return self.scope("name")

    @property
    def hardware(self) -> str:
        """The hardware/ scope."""
        return self.scope("hardware")

    @property
    def location(self) -> str:
        """The location/ scope."""
        return self.scope("location")

    def to_json(self) -> dict[str, object]:
        """The --json form."""
        d = asdict(self)
        d.update(name=self.name, hardware=self.hardware, location=self.location)
        return d


@dataclass
class ProbeResult:
    """Every device found plus what else arrived."""

    devices: list[Device] = field(default_factory=list)
    datagrams: int = 0
    duplicates: int = 0
    ignored: int = 0
    unrelated: int = 0  # matches whose RelatesTo is not one of our Probes (taken anyway)
    last: float = 0.0  # seconds from the first Probe to the last new ProbeMatch


def _socket(v6: bool, iface: netif.Iface | None, ttl: int) -> socket.socket:
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        for opt in (33, socket.SO_RCVBUF):  # SO_RCVBUFFORCE when allowed, else SO_RCVBUF
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
                break
            except OSError:
                continue
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
            if iface is not None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, iface.index)
            sock.bind(("::", 0))
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            addr = iface.address() if iface is not None else ""
            if addr:
                mif = socket.inet_aton(addr)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mif)
            sock.bind((addr, 0))
    except OSError:
        sock.close()
        raise
    return sock


def _dest(address: str, port: int, v6: bool, iface: netif.Iface | None) -> tuple[object, ...]:
    if address:
        info = socket.getaddrinfo(address, port, type=socket.SOCK_DGRAM)[0]
        return info[4]
    if v6:
        if iface is None:
            raise DiscoverError("IPv6 discovery needs --interface (FF02::C is link-local)")
        return (MULTICAST_V6, port, 0, iface.index)
    return (MULTICAST_V4, port)


def _iface(interface: str) -> netif.Iface | None:
    if not interface:
        return None
    i = netif.find(interface)
    if i is None:
        raise DiscoverError(f"no interface or local address {interface!r}")
    return i


def probe(
    *,
    interface: str = "",
    address: str = "",
    port: int = PORT,
    timeout: float = 3.0,
    type_sets: Iterable[tuple[QName, ...]] = ((NVT,), (DEVICE,)),
    scopes: Iterable[str] = (),
    match_by: str = "",
    ipv6: bool = False,
    repeat: int = 1,
    ttl: int = 1,
) -> ProbeResult:
    """Probe, wait ``timeout`` seconds, and return every device that answered.

    ``interface`` (a name or a local IPv4 address) picks the link for multicast;
    ``address`` sends a directed Probe to one host instead of the multicast group.
    """
    iface = _iface(interface)
    v6 = ipv6 or (":" in address)
    dest = _dest(address, port, v6, iface)
    rng = random.Random()
    scopes = list(scopes)
    ids: set[str] = set()
    queue: list[tuple[float, bytes]] = []
    for types in type_sets:
        mid = new_message_id()
        ids.add(mid)
        data = build_probe(types, scopes, match_by, mid)
        queue.append((0.0, data))
        queue += [(off, data) for off in retransmit_offsets(repeat, rng)]
    queue.sort(key=lambda x: x[0])
    result = ProbeResult()
    found: dict[str, Device] = {}
    sock = _socket(v6, iface, ttl)
    try:
        start = time.monotonic()
        end = start + timeout
        while True:
            now = time.monotonic()
            while queue and queue[0][0] <= now - start:
                try:
                    sock.sendto(queue.pop(0)[1], dest)
                except OSError as exc:
                    raise DiscoverError(f"cannot send the Probe: {exc.strerror or exc}") from exc
            if now >= end:
                break
            wait = end - now
            if queue:
                wait = min(wait, max(0.0, start + queue[0][0] - now))
            ready, _, _ = select.select([sock], [], [], wait)
            if not ready:
                continue
            while True:
                try:
                    data, src = sock.recvfrom(65536, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                at = time.monotonic() - start
                result.datagrams += 1
                _collect(parse(data, 65536), src[0], at, ids, found, result)
    finally:
        sock.close()
    result.devices = sorted(found.values(), key=lambda d: (d.name, d.epr))
    return result


def _collect(
    msg: Message | Ignored,
    source: str,
    at: float,
    ids: set[str],
    found: dict[str, Device],
    result: ProbeResult,
) -> None:
    # Only replies reach our ephemeral port; some devices get RelatesTo wrong, so a match
    # that does not relate to one of our Probes is still taken.
    if not isinstance(msg, ProbeMatches | ResolveMatches):
        result.ignored += 1
        return
    if msg.header.relates_to not in ids:
        result.unrelated += 1
    for m in msg.matches:
        d = found.get(m.epr)
        if d is not None:
            d.matches += 1
            result.duplicates += 1
            for x in m.xaddrs:
                if x not in d.xaddrs:
                    d.xaddrs.append(x)
            continue
        found[m.epr] = Device(
            epr=m.epr,
            xaddrs=list(m.xaddrs),
            scopes=list(m.scopes),
            types=[str(t) for t in m.types],
            metadata_version=m.metadata_version,
            source=source,
            seconds=round(at, 4),
        )
        result.last = max(result.last, at)


def resolve(
    epr: str, *, interface: str = "", address: str = "", port: int = PORT, timeout: float = 2.0
) -> Device | None:
    """Resolve one endpoint reference to its XAddrs (multicast, or directed to ``address``)."""
    iface = _iface(interface)
    v6 = ":" in address
    dest = _dest(address, port, v6, iface)
    mid = new_message_id()
    found: dict[str, Device] = {}
    result = ProbeResult()
    sock = _socket(v6, iface, 1)
    try:
        sock.sendto(build_resolve(epr, mid), dest)
        start = time.monotonic()
        while time.monotonic() < start + timeout and not found:
            ready, _, _ = select.select([sock], [], [], start + timeout - time.monotonic())
            if ready:
                data, src = sock.recvfrom(65536)
                _collect(parse(data, 65536), src[0], time.monotonic() - start, {mid}, found, result)
    finally:
        sock.close()
    return next(iter(found.values()), None)


@dataclass
class Heard:
    """A Hello or Bye heard on the group."""

    kind: str
    epr: str
    source: str
    metadata_version: int
    xaddrs: list[str]
    scopes: list[str]
    at: float


def listen(
    duration: float,
    *,
    interface: str = "",
    port: int = PORT,
    callback: Callable[[Heard], None] | None = None,
    ready: Callable[[], None] | None = None,
) -> list[Heard]:
    """Join the group on ``interface`` for ``duration`` seconds and record Hello and Bye.

    ``callback`` sees each one as it arrives (for a listener running in another process);
    ``ready`` is called once the group is joined.
    """
    iface = _iface(interface)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out: list[Heard] = []
    seen: set[str] = set()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((MULTICAST_V4, port))
        index = iface.index if iface is not None else 0
        mreq = struct.pack("4s4si", socket.inet_aton(MULTICAST_V4), bytes(4), index)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        if ready is not None:
            ready()
        start = time.monotonic()
        while (left := start + duration - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                continue
            data, src = sock.recvfrom(65536)
            msg = parse(data, 65536)
            at = round(time.monotonic() - start, 4)
            if isinstance(msg, Hello | Bye):
                if msg.header.message_id in seen:
                    continue  # a SOAP-over-UDP retransmission
                seen.add(msg.header.message_id)
            if isinstance(msg, Hello):
                e = msg.endpoint
                heard = Heard(
                    "hello", e.epr, src[0], e.metadata_version, list(e.xaddrs), list(e.scopes), at
                )
            elif isinstance(msg, Bye):
                heard = Heard("bye", msg.epr, src[0], 0, [], [], at)
            else:
                continue
            out.append(heard)
            if callback is not None:
                callback(heard)
    finally:
        sock.close()
    return out


def format_table(devices: list[Device]) -> str:
    """A plain-text table: name, hardware, source address, XAddrs, EPR, then scopes."""
    if not devices:
        return "no ONVIF device answered"
    rows = [("NAME", "HARDWARE", "FROM", "XADDRS", "EPR")]
    rows += [
        (d.name or "-", d.hardware or "-", d.source, " ".join(d.xaddrs), d.epr) for d in devices
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for n, r in enumerate(rows):
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        )
        if n:
            lines.append("    scopes: " + " ".join(devices[n - 1].scopes))
    lines.append(f"{len(devices)} device(s)")
    return "\n".join(lines)


def to_json(result: ProbeResult) -> str:
    """The --json output."""
    return json.dumps(
        {
            "devices": [d.to_json() for d in result.devices],
            "datagrams": result.datagrams,
            "duplicates": result.duplicates,
            "ignored": result.ignored,
            "unrelated": result.unrelated,
            "last_match_s": round(result.last, 4),
        },
        indent=2,
    )
