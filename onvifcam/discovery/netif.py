"""Network interfaces for discovery: which links to join the multicast groups on."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import ifaddr

log = logging.getLogger(__name__)

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_MULTICAST = 0x1000
WILDCARD = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class Iface:
    """One interface: name, index, IPv4 addresses, whether it has IPv6, flags."""

    name: str
    index: int
    ipv4: tuple[str, ...]
    ipv6: bool
    up: bool = True
    loopback: bool = False
    multicast: bool = True

    def address(self, avoid: Iterable[str] = ()) -> str:
        """The first IPv4 address that is not in ``avoid`` (camera addresses), else the first."""
        skip = set(avoid)
        return next((a for a in self.ipv4 if a not in skip), self.ipv4[0] if self.ipv4 else "")


def _flags(name: str) -> int | None:
    try:
        return int(Path(f"/sys/class/net/{name}/flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return None


def interfaces() -> list[Iface]:
    """Every interface with its addresses (flags from /sys on Linux, else assumed usable)."""
    out = []
    for a in ifaddr.get_adapters():
        v4 = tuple(str(ip.ip) for ip in a.ips if isinstance(ip.ip, str))
        v6 = any(isinstance(ip.ip, tuple) for ip in a.ips)
        flags = _flags(a.name)
        if flags is None:
            loop = any(ipaddress.ip_address(x).is_loopback for x in v4)
            out.append(Iface(a.name, int(a.index or 0), v4, v6, True, loop, True))
        else:
            out.append(
                Iface(
                    a.name,
                    int(a.index or 0),
                    v4,
                    v6,
                    bool(flags & IFF_UP),
                    bool(flags & IFF_LOOPBACK),
                    bool(flags & IFF_MULTICAST),
                )
            )
    return out


def find(spec: str, table: list[Iface] | None = None) -> Iface | None:
    """The interface named ``spec`` or holding IPv4 address ``spec``."""
    for i in table if table is not None else interfaces():
        if spec == i.name or spec in i.ipv4:
            return i
    return None


def choose(
    wanted: Iterable[str], host: str, avoid: Iterable[str] = (), table: list[Iface] | None = None
) -> list[Iface]:
    """The interfaces discovery works on.

    ``wanted`` (names or addresses) wins when given. Otherwise a specific listening ``host``
    means the interface holding it (so ``host = "127.0.0.1"`` keeps everything on the
    loopback), and a wildcard host means every up, multicast-capable, non-loopback interface
    with an IPv4 address that is not only a camera's own address (``avoid``), falling back
    to the loopback when there is none.
    """
    table = interfaces() if table is None else table
    wanted = [w for w in wanted if w]
    if wanted:
        out = []
        for w in wanted:
            i = find(w, table)
            if i is None:
                log.warning("discovery: no interface %r; ignoring it", w)
            elif i not in out:
                out.append(i)
        return out
    if host not in WILDCARD:
        i = find(host, table)
        return [i] if i is not None else []
    skip = set(avoid)
    usable = [
        i
        for i in table
        if i.up and i.multicast and not i.loopback and any(a not in skip for a in i.ipv4)
    ]
    if usable:
        return usable
    return [i for i in table if i.loopback and i.ipv4]
