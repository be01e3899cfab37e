"""The WS-Discovery responder component: UDP sockets on the event loop, nothing else.

Sockets (all non-blocking, read with ``loop.add_reader`` + ``recvmsg`` so the destination
address of every datagram is known from IP_PKTINFO):

- ``mc4``: bound to 239.255.255.250:3702 and joined on the chosen interfaces only
  (IP_MULTICAST_ALL off), so it receives multicast Probes/Resolves and nothing else;
- ``uc4``: bound to the ``[server] host`` at the same port: directed (unicast) Probes, and
  the socket replies and announcements of cameras without an address of their own leave from
  (with the address the Probe came in on as the source);
- one socket per camera address, bound to that address and port: directed Probes to the
  camera, and the camera's ProbeMatches, Hello and Bye, so they come from its own IP;
- ``udp6``: [::]:3702 joined to FF02::C on the chosen interfaces, when IPv6 is there.

Replies wait in the sans-I/O :class:`Backlog` of the :class:`Responder` (bounded, paced by
``replies_per_s``, fresh sources first); Hello and Bye wait in a heap ordered by due time.
Both leave through one global token bucket (``send_rate``), announcements first, so a Probe
answered by a thousand cameras spreads over the random APP_MAX_DELAY window without
overflowing socket buffers. Directed Probes are answered only for sources in
``unicast_from`` ("local": loopback, link-local and the subnets of the interfaces served).
Hello goes out on EndpointBound (from the web component: a camera's endpoint is settled:
bound, rebound after a reboot or an update, or given up so it is on the main port only),
Bye on CameraRemoved (from the registry), and what clients change over ONVIF (scopes,
discovery mode, hostname) on CameraUpdated, all read from the event bus: nothing polls the
registry. The sans-I/O :class:`Responder` turns the difference between the registry and
what was announced into Hello and Bye. XAddrs come from :mod:`onvifcam.addressing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import ipaddress
import itertools
import json
import logging
import socket
import struct
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import ifaddr

from onvifcam.addressing import Addressing, Place
from onvifcam.config import Config
from onvifcam.discovery import netif
from onvifcam.discovery.mdns import MdnsAdvertiser, MdnsCamera
from onvifcam.discovery.wsdiscovery import (
    MULTICAST_V4,
    MULTICAST_V6,
    ONVIF_TYPES,
    Reply,
    Responder,
    Target,
    is_loopback,
    retransmit_offsets,
)
from onvifcam.events import CameraRemoved, CameraUpdated, EndpointBound, Event, EventBus
from onvifcam.netutil import binding
from onvifcam.state import atomic_write

if typing.TYPE_CHECKING:
    from onvifcam.cameras import Camera, CameraRegistry

log = logging.getLogger(__name__)

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
IPV6_MULTICAST_ALL = getattr(socket, "IPV6_MULTICAST_ALL", 29)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
SO_RCVBUF_SIZE = 1 << 20
RESCAN = 30.0  # seconds between interface rescans
PRESSURE_LOG = 10.0  # seconds between two log lines about dropped or refused requests
_DROP_KEYS = ("backlog_dropped", "unicast_refused", "rate_limited")
_STAT_KEYS = (  # always in stats(), even while zero
    "received",
    "probe",
    "probe_match",
    "hello_sent",
    "bye_sent",
    "malformed",
    "oversized",
    "foreign",
    "rate_limited",
    "unicast_refused",
    "backlog_dropped",
    "sent",
    "sent_bytes",
    "send_retry",
    "send_error",
    "send_dropped",
    "recv_error",
    "internal_error",
)
_LOCAL_NETS = ("127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10")
_ANC = socket.CMSG_SPACE(32)
_PORT_KEY = "--discovery-port or [discovery] port"
_ADVICE = (
    "stop the program holding it; on another port (or 0) only Probes sent straight to that "
    "port are answered, not the multicast ones clients send to 3702"
)


@dataclass
class _Out:
    sock: socket.socket
    reply: Reply | None
    data: bytes | None
    dest: tuple[Any, ...]
    mcast_if: bytes | int | None = None
    src: str = ""
    tries: int = 0

    def payload(self) -> bytes:
        if self.data is None:
            self.data = self.reply.data if self.reply is not None else b""
        return self.data


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _set(sock: socket.socket, level: int, opt: int, value: int | bytes) -> bool:
    try:
        sock.setsockopt(level, opt, value)
    except OSError:
        return False
    return True


def _udp(family: socket.AddressFamily) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _set(sock, socket.SOL_SOCKET, socket.SO_RCVBUF, SO_RCVBUF_SIZE)
    sock.setblocking(False)
    return sock


class DiscoveryService:
    """App component: WS-Discovery for every camera of the registry, plus mDNS."""

    def __init__(
        self,
        cfg: Config,
        cameras: CameraRegistry,
        addressing: Addressing,
        bus: EventBus,
    ) -> None:
        self.cfg = cfg
        self.cameras = cameras
        self.addressing = addressing
        self.dcfg = cfg.discovery
        self.core = Responder(
            instance_id=int(time.time()),
            max_delay=self.dcfg.max_delay,
            rate=self.dcfg.probes_per_source_per_s,
            burst=self.dcfg.probe_burst,
            unicast_repeat=self.dcfg.unicast_repeat,
            max_datagram=self.dcfg.max_datagram,
            max_backlog=self.dcfg.max_backlog,
            max_backlog_bytes=self.dcfg.max_backlog_bytes,
            replies_per_s=float(self.dcfg.replies_per_s),
            source_interval=self.dcfg.source_interval,
        )
        self.counters = self.core.stats
        self.port = 0
        self.ifaces: list[netif.Iface] = []
        self.mdns: MdnsAdvertiser | None = None
        self._uc4: socket.socket | None = None
        self._uc4_wildcard = False
        self._mc4: socket.socket | None = None
        self._udp6: socket.socket | None = None
        self._cam_socks: dict[str, socket.socket] = {}
        self._cam_failed: set[str] = set()
        self._readers: list[socket.socket] = []
        self._heap: list[tuple[float, int, _Out]] = []
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self._idle = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._tokens = 0.0
        self._last_refill = 0.0
        # camera key -> (where it is reachable, its reboot count then), once settled
        self._placed: dict[str, tuple[Place, int]] = {}
        self._eprs: dict[str, str] = {}  # camera key -> EPR address, for its removal
        self._last_rescan = 0.0
        self._versions_path = Path(self.cfg.server.state_dir) / "discovery.json"
        self._saved_versions: dict[str, tuple[str, int]] = {}
        self._mdns_addrs: list[str] = []
        self._avoid: list[str] = []  # camera addresses: never an interface's own address
        self._running = False
        self._drops_logged = {k: 0 for k in _DROP_KEYS}
        self._removed: set[str] = set()  # EPRs of cameras removed for good
        bus.subscribe(self._on_event, EndpointBound, CameraRemoved, CameraUpdated)
        self._last_drop_log = -1e9

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the sockets, announce every discoverable camera, start mDNS."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._load_versions()
        self._avoid = self._cam_addrs()
        self.ifaces = netif.choose(self.dcfg.interfaces, self.cfg.server.host, self._avoid)
        self.core.unicast_from = self._unicast_networks(self.ifaces)
        try:
            self._open_v4()
        except OSError as exc:
            log.error("discovery: %s; WS-Discovery is off", exc)
            self._close_sockets()
        else:
            self._open_v6()
            self._running = True
            self._tokens = float(self._burst)
            self._last_refill = loop.time()
            self._sender = loop.create_task(self._send_loop(), name="onvifcam-discovery-send")
            names = ", ".join(f"{i.name} ({i.address() or 'no IPv4'})" for i in self.ifaces)
            log.info(
                "discovery: WS-Discovery on udp/%d%s, interfaces: %s",
                self.port,
                " and IPv6" if self._udp6 else "",
                names or "none",
            )
        await self._start_mdns()
        self._sync(loop.time())

    async def stop(self) -> None:
        """Say Bye for every announced camera, withdraw mDNS, close the sockets."""
        if self._running:
            for t in list(self.core.targets.values()):
                self._announce(t, hello=False)
            self.core.targets = {}
            # not running from here on: a Probe during the drain neither re-syncs the
            # registry (which would queue a Hello after the Bye) nor gets an answer
            self._running = False
            self.core.backlog.clear()
            await self._drain(3.0)
        if self.mdns is not None:
            await self.mdns.stop()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        self._close_sockets()
        self._save_versions()
        s = self.counters
        log.debug("discovery: counters %s", dict(sorted(s.items())))
        if s["received"]:
            log.info(
                "discovery: %d datagrams in, %d probes, %d matches queued, %d hello, %d bye; "
                "ignored %d malformed, %d oversized, %d foreign, %d rate-limited, "
                "%d unicast refused; %d replies dropped (backlog peak %d datagrams, %d bytes)",
                s["received"],
                s["probe"],
                s["probe_match"],
                s["hello_sent"],
                s["bye_sent"],
                s["malformed"],
                s["oversized"],
                s["foreign"],
                s["rate_limited"],
                s["unicast_refused"],
                s["backlog_dropped"],
                s["backlog_peak"],
                s["backlog_peak_bytes"],
            )

    def tick(self, now: float) -> None:
        """Rescan interfaces, persist versions (Hello and Bye come from events)."""
        loop_now = asyncio.get_running_loop().time()
        if self._running and loop_now - self._last_rescan > RESCAN:
            self._rescan(loop_now)
        if self._saved_versions != self.core.versions:
            self._save_versions()
        self._log_pressure(loop_now)

    def _log_pressure(self, now: float) -> None:
        """One line per PRESSURE_LOG seconds while requests are dropped or refused."""
        if now - self._last_drop_log < PRESSURE_LOG:
            return
        new = {k: self.counters[k] - self._drops_logged[k] for k in _DROP_KEYS}
        if not any(new.values()):
            return
        self._last_drop_log = now
        self._drops_logged = {k: self.counters[k] for k in _DROP_KEYS}
        log.warning(
            "discovery: under load: %d replies dropped (backlog over [discovery] max_backlog "
            "= %d datagrams or max_backlog_bytes = %d), %d requests over "
            "probes_per_source_per_s, %d directed requests from outside unicast_from; "
            "backlog now %d datagrams",
            new["backlog_dropped"],
            self.dcfg.max_backlog,
            self.dcfg.max_backlog_bytes,
            new["rate_limited"],
            new["unicast_refused"],
            len(self.core.backlog),
        )

    def stats(self) -> dict[str, int | float | dict[str, int]]:
        """Counters of the responder (datagrams, replies, drops, sends) plus the current
        backlog, announced cameras and mDNS registrations."""
        out: dict[str, int | float | dict[str, int]] = {k: 0 for k in _STAT_KEYS}
        out.update(self.counters)
        out["backlog"] = len(self.core.backlog)
        out["announced"] = len(self.core.targets)
        out["mdns_registered"] = self.mdns.registered if self.mdns is not None else 0
        return out

    def ready_info(self) -> dict[str, str]:
        """The discovery port for the ready line."""
        return {"discovery_port": str(self.port)} if self._running else {}

    @property
    def _burst(self) -> int:
        return max(16, self.dcfg.send_rate // 50)

    # ------------------------------------------------------------------ sockets
    def _open_v4(self) -> None:
        host = self.cfg.server.host
        uc_host = host if _family(host) == socket.AF_INET and host not in netif.WILDCARD else ""
        uc = _udp(socket.AF_INET)
        self._uc4 = uc
        _set(uc, socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        uc.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        uc.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.dcfg.ttl)
        uc.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        port = self.dcfg.port
        with binding("udp", uc_host, port, "WS-Discovery port", _PORT_KEY, advice=_ADVICE):
            uc.bind((uc_host, port))
        self.port = uc.getsockname()[1]
        self._uc4_wildcard = not uc_host
        mc = _udp(socket.AF_INET)
        self._mc4 = mc
        _set(mc, socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        mc.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        with binding("udp", MULTICAST_V4, self.port, "WS-Discovery", _PORT_KEY, advice=_ADVICE):
            mc.bind((MULTICAST_V4, self.port))
        for i in self.ifaces:
            self._join4(i)
        self._reader(uc, "uc4")
        self._reader(mc, "mc4")

    def _join4(self, i: netif.Iface, leave: bool = False) -> None:
        if self._mc4 is None:
            return
        mreq = struct.pack("4s4si", socket.inet_aton(MULTICAST_V4), bytes(4), i.index)
        opt = socket.IP_DROP_MEMBERSHIP if leave else socket.IP_ADD_MEMBERSHIP
        try:
            self._mc4.setsockopt(socket.IPPROTO_IP, opt, mreq)
        except OSError as exc:
            if not leave:
                log.warning("discovery: cannot join %s on %s: %s", MULTICAST_V4, i.name, exc)

    def _open_v6(self) -> None:
        if not (self.dcfg.ipv6 and socket.has_ipv6 and self.cfg.server.host in netif.WILDCARD):
            return
        try:
            s = _udp(socket.AF_INET6)
        except OSError:
            return
        try:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            _set(s, socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, self.dcfg.ttl)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
            s.bind(("::", self.port))
        except OSError as exc:
            log.debug("discovery: no IPv6 (%s)", exc)
            s.close()
            return
        self._udp6 = s
        for i in self.ifaces:
            self._join6(i)
        self._reader(s, "udp6")

    def _join6(self, i: netif.Iface, leave: bool = False) -> None:
        if self._udp6 is None or not i.ipv6:
            return
        mreq = socket.inet_pton(socket.AF_INET6, MULTICAST_V6) + struct.pack("@I", i.index)
        opt = socket.IPV6_LEAVE_GROUP if leave else socket.IPV6_JOIN_GROUP
        with contextlib.suppress(OSError):
            self._udp6.setsockopt(socket.IPPROTO_IPV6, opt, mreq)

    def _reader(self, sock: socket.socket, kind: str) -> None:
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable, sock, kind)
        self._readers.append(sock)

    def _cam_socket(self, addr: str) -> socket.socket | None:
        s = self._cam_socks.get(addr)
        if s is not None or addr in self._cam_failed or not self._running:
            return s
        fam = _family(addr)
        try:
            s = _udp(fam)
        except OSError:
            self._cam_failed.add(addr)
            return None
        try:
            try:
                s.bind((addr, self.port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                s.bind((addr, 0))
            if fam == socket.AF_INET:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(addr))
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.dcfg.ttl)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
                s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            else:
                idx = self._index_of(addr)
                if idx:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, self.dcfg.ttl)
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        except OSError as exc:
            s.close()
            self._cam_failed.add(addr)
            log.error(
                "discovery: cannot send from camera address %s (%s); its replies leave from "
                "the server's address instead",
                addr,
                exc.strerror or exc,
            )
            return None
        self._cam_socks[addr] = s
        self._reader(s, "cam")
        return s

    def _index_of(self, addr: str) -> int:
        want = ipaddress.ip_address(addr)
        for a in ifaddr.get_adapters():
            for ip in a.ips:
                text = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
                with contextlib.suppress(ValueError):
                    if ipaddress.ip_address(text) == want:
                        return int(a.index or 0)
        return 0

    def _close_sockets(self) -> None:
        loop = asyncio.get_running_loop()
        for s in self._readers:
            with contextlib.suppress(Exception):
                loop.remove_reader(s.fileno())
        self._readers.clear()
        socks = [self._uc4, self._mc4, self._udp6, *self._cam_socks.values()]
        for s in socks:
            if s is not None:
                s.close()
        self._uc4 = self._mc4 = self._udp6 = None
        self._cam_socks.clear()

    def _unicast_networks(
        self, ifaces: list[netif.Iface]
    ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``[discovery] unicast_from`` with "local" expanded: loopback, link-local and the
        subnets of the interfaces discovery serves."""
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for spec in self.dcfg.unicast_from:
            if spec != "local":
                nets.append(ipaddress.ip_network(spec, strict=False))
                continue
            nets += [ipaddress.ip_network(n) for n in _LOCAL_NETS]
            names = {i.name for i in ifaces}
            for a in ifaddr.get_adapters():
                if a.name not in names:
                    continue
                for ip in a.ips:
                    text = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
                    with contextlib.suppress(ValueError):
                        nets.append(
                            ipaddress.ip_network(f"{text}/{ip.network_prefix}", strict=False)
                        )
        return tuple(dict.fromkeys(nets))

    def _rescan(self, now: float) -> None:
        self._last_rescan = now
        new = netif.choose(self.dcfg.interfaces, self.cfg.server.host, self._avoid)
        self.core.unicast_from = self._unicast_networks(new)
        if new == self.ifaces:
            return
        old = self.ifaces
        for i in old:
            if i not in new:
                self._join4(i, leave=True)
                self._join6(i, leave=True)
        for i in new:
            if i not in old:
                self._join4(i)
                self._join6(i)
        self.ifaces = new
        log.info("discovery: interfaces now %s", ", ".join(i.name for i in new) or "none")

    # ------------------------------------------------------------------ receiving
    def _on_readable(self, sock: socket.socket, kind: str) -> None:
        for _ in range(64):
            try:
                data, anc, flags, src = sock.recvmsg(self.dcfg.max_datagram + 1, _ANC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.counters["recv_error"] += 1
                log.debug("discovery: receive failed: %s", exc)
                return
            if flags & socket.MSG_TRUNC:
                self.counters["received"] += 1
                self.counters["oversized"] += 1
                continue
            local, dest, ifindex = _pktinfo(anc)
            if kind == "cam" and not local:
                local = sock.getsockname()[0]
            multicast = kind == "mc4" or dest.lower().startswith("ff")
            try:
                self._handle(data, src, local, multicast, ifindex, kind)
            except Exception:
                self.counters["internal_error"] += 1
                log.exception("discovery: handling a datagram from %s failed", src[0])

    def _handle(
        self,
        data: bytes,
        src: tuple[Any, ...],
        local: str,
        multicast: bool,
        ifindex: int,
        kind: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        host = local
        if kind == "udp6":
            iface = next((i for i in self.ifaces if i.index == ifindex), None)
            host = iface.address(self._avoid) if iface and iface.ipv4 else ""
        queued = self.core.receive(data, src, local, multicast, now, host=host)
        if queued and self._wake is not None:
            self._wake.set()

    def _reply_out(self, r: Reply) -> _Out | None:
        """The socket a reply leaves from: IPv6 from the IPv6 socket, else the camera's own
        address when it has one, else the server's unicast socket (source = where the
        request arrived)."""
        if _family(r.dest[0]) == socket.AF_INET6:
            sock = self._udp6
            return _Out(sock, r, None, r.dest) if sock is not None else None
        own = None
        if (
            r.target is not None
            and r.target.address
            and _family(r.target.address) == socket.AF_INET
        ):
            own = self._cam_socket(r.target.address)
        if own is not None:
            return _Out(own, r, None, r.dest)
        if self._uc4 is None:
            return None
        return _Out(self._uc4, r, None, r.dest, None, r.local)

    # ------------------------------------------------------------------ announcing
    def _announce(self, t: Target, hello: bool) -> None:
        """Queue a Hello (after the random delay) or a Bye for ``t`` on every link."""
        loop_now = asyncio.get_running_loop().time()
        delay = self.core.rng.uniform(0.0, self.dcfg.max_delay) if hello else 0.0
        due = loop_now + delay
        outs: list[_Out] = []
        own = (
            self._cam_socket(t.address)
            if t.address and _family(t.address) == socket.AF_INET
            else None
        )
        if own is not None:
            data = self.core.hello(t, t.address) if hello else self.core.bye(t)
            outs.append(_Out(own, None, data, (MULTICAST_V4, self.port)))
        elif self._uc4 is not None:
            for i in self.ifaces:
                addr = i.address(self._avoid)
                if not addr:
                    continue
                data = self.core.hello(t, addr) if hello else self.core.bye(t)
                outs.append(
                    _Out(self._uc4, None, data, (MULTICAST_V4, self.port), socket.inet_aton(addr))
                )
        if self._udp6 is not None:
            for i in self.ifaces:
                if not i.ipv6:
                    continue
                addr = t.host or i.address(self._avoid)
                data = self.core.hello(t, addr) if hello else self.core.bye(t)
                outs.append(
                    _Out(self._udp6, None, data, (MULTICAST_V6, self.port, 0, i.index), i.index)
                )
        offsets = retransmit_offsets(self.dcfg.multicast_repeat, self.core.rng)
        for out in outs:
            self._push(due, out)
            for off in offsets:
                self._push(due + off, out)
        if outs:
            log.debug(
                "discovery: %s %s (MetadataVersion %d)",
                "hello" if hello else "bye",
                t.key,
                self.core.metadata_version(t.epr),
            )

    # ------------------------------------------------------------------ sending
    def _push(self, due: float, out: _Out) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), out))
        self._idle.clear()
        if self._wake is not None:
            self._wake.set()

    def _next(self, now: float) -> _Out | float | None:
        """The next datagram due now, else when one will be (None: nothing queued).
        Hello and Bye go before replies; replies come from the backlog only while running."""
        if self._heap and self._heap[0][0] <= now:
            return heapq.heappop(self._heap)[2]
        backlog = self.core.backlog
        while self._running:
            r = backlog.pop(now)
            if r is None:
                break
            out = self._reply_out(r)
            if out is not None:
                return out
            self.counters["send_error"] += 1
        due = [self._heap[0][0]] if self._heap else []
        later = backlog.next_due(now) if self._running else None
        if later is not None:
            due.append(later)
        return min(due) if due else None

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        rate = float(self.dcfg.send_rate)
        sent = 0
        while True:
            now = loop.time()
            self._tokens = min(float(self._burst), self._tokens + (now - self._last_refill) * rate)
            self._last_refill = now
            if self._tokens < 1.0:
                await asyncio.sleep((1.0 - self._tokens) / rate)
                continue
            nxt = self._next(now)
            if not isinstance(nxt, _Out):
                self._wake.clear()
                if nxt is None:
                    self._idle.set()
                    await self._wake.wait()
                else:
                    handle = loop.call_later(max(0.0, nxt - now), self._wake.set)
                    await self._wake.wait()
                    handle.cancel()
                continue
            out = nxt
            self._tokens -= 1.0
            try:
                done = self._send(out)
            except Exception:
                log.exception("discovery: sending to %s failed", out.dest[0])
                done = True
            if not done:
                out.tries += 1
                if out.tries < 50:
                    self._push(now + 0.002 * out.tries, out)
                else:
                    self.counters["send_dropped"] += 1
            sent += 1
            if sent % 32 == 0:
                await asyncio.sleep(0)

    def _send(self, out: _Out) -> bool:
        """One datagram; False when the kernel says try again later."""
        sock = out.sock
        if sock.fileno() < 0:
            return True
        try:
            data = out.payload()
            if out.mcast_if is not None:
                if sock.family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, out.mcast_if)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, out.mcast_if)
            if out.src and sock is self._uc4 and self._uc4_wildcard:
                pkt = struct.pack("@I4s4s", 0, socket.inet_aton(out.src), bytes(4))
                sock.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, pkt)], 0, out.dest)
            else:
                sock.sendto(data, out.dest)
        except (BlockingIOError, InterruptedError):
            self.counters["send_retry"] += 1
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOBUFS, errno.EAGAIN, errno.EADDRNOTAVAIL):
                # EADDRNOTAVAIL: an address still in duplicate address detection
                self.counters["send_retry"] += 1
                return False
            self.counters["send_error"] += 1
            log.debug("discovery: send to %s failed: %s", out.dest[0], exc)
            return True
        self.counters["sent"] += 1
        self.counters["sent_bytes"] += len(data)
        return True

    async def _drain(self, limit: float) -> None:
        """Wait until everything queued is sent (at most ``limit`` seconds)."""
        if self._sender is None or not self._heap:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await self._idle.wait()

    # ------------------------------------------------------------------ the registry
    def _cam_addrs(self) -> list[str]:
        reg = self.cameras
        return [c.address for c in reg.cameras.values() if c.address]

    def _target(self, cam: Camera, place: Place, generation: int) -> Target:
        scopes = tuple(dict.fromkeys([*cam.fixed_scopes, *cam.config_scopes, *cam.added_scopes]))
        host, xaddr = self.addressing.discovery_xaddr(place)
        return Target(
            key=cam.key,
            epr=f"urn:uuid:{cam.uuid}",
            types=ONVIF_TYPES,
            scopes=scopes,
            xaddr=xaddr,
            host=host,
            address=cam.address,
            generation=generation,
        )

    def _sync(self, now: float) -> None:
        """Diff the registry against what was announced: Hello, Bye, mDNS updates."""
        self._avoid = self._cam_addrs()
        targets: list[Target] = []
        mdns: list[MdnsCamera] = []
        for cam in list(self.cameras.cameras.values()):
            placed = self._placed.get(cam.key)
            if placed is None or cam.discovery_mode != "Discoverable":
                continue  # endpoint still starting (announced once it is settled), or silent
            place, generation = placed
            t = self._target(cam, place, generation)
            targets.append(t)
            if self.mdns is not None and not is_loopback(cam.address):
                mdns.append(self._mdns_camera(cam, t, place))
        if self._running:
            hello, bye = self.core.update(targets)
            for t in bye:
                self._announce(t, hello=False)
            for t in hello:
                self._announce(t, hello=True)
        if self.mdns is not None:
            self.mdns.update(mdns)
        self._forget_removed()

    def _on_event(self, ev: Event) -> None:
        """EndpointBound: the camera is reachable there (bound, rebound after a reboot or an
        update, or on the main port only): Hello (again). CameraRemoved: gone for good (its
        state file too): Bye. CameraUpdated: announce what changed. EndpointUnbound is not
        heard: what was announced stays until the endpoint is back or the camera is gone."""
        if isinstance(ev, EndpointBound):
            cam = self.cameras.cameras.get(ev.camera)
            if cam is None:
                return
            place = Place(
                cam.slug,
                cam.path,
                ev.address,
                ev.port,
                cam.cfg.rtsp_port,
                ev.own_rtsp,
                advertise=cam.cfg.advertise,
            )
            self._placed[cam.key] = (place, cam.reboots)
            self._eprs[cam.key] = f"urn:uuid:{cam.uuid}"
        elif isinstance(ev, CameraRemoved):
            self._placed.pop(ev.camera, None)
            epr = self._eprs.pop(ev.camera, None)
            if epr is not None:
                self._removed.add(epr)
        if self._running or self.mdns is not None:
            self._sync(asyncio.get_running_loop().time())

    def _forget_removed(self) -> None:
        """After their Bye: drop what is kept for cameras that are gone for good."""
        cams = self.cameras.cameras
        for table in (self._placed, self._eprs):
            for key in [k for k in table if k not in cams]:
                del table[key]
        if self._removed:
            live = {t.epr for t in self.core.targets.values()}
            self.core.forget(self._removed - live)
            self._removed &= live

    # ------------------------------------------------------------------ mDNS
    async def _start_mdns(self) -> None:
        if not self.dcfg.mdns:
            return
        addrs = [i.address(self._avoid) for i in self.ifaces if not i.loopback]
        addrs = [a for a in addrs if a]
        if not addrs:
            log.info("mdns: off (no non-loopback interface to advertise on)")
            return
        self._mdns_addrs = addrs
        try:
            adv = MdnsAdvertiser(addrs)
            await adv.start()
        except OSError as exc:
            log.error("mdns: cannot start (%s); cameras are not advertised over mDNS", exc)
            return
        self.mdns = adv

    def _mdns_camera(self, cam: Camera, t: Target, place: Place) -> MdnsCamera:
        if cam.address:
            addrs: tuple[str, ...] = (cam.address,)
        elif _is_ip(t.host) and not is_loopback(t.host):
            addrs = (t.host,)
        else:
            addrs = tuple(self._mdns_addrs)
        port = place.onvif_port or self.addressing.http_port
        path = (
            "/onvif/device_service"
            if place.onvif_port
            else f"/onvif/{quote(cam.slug)}/device_service"
        )
        return MdnsCamera(
            key=cam.key,
            name=cam.name,
            hostname=cam.hostname,
            addresses=addrs,
            rtsp_port=self.addressing.rtsp_port_of(place),
            rtsp_path=cam.path,
            http_port=port,
            http_path=path,
            txt=(
                ("uuid", cam.uuid),
                ("mac", cam.mac),
                ("manufacturer", cam.manufacturer),
                ("model", cam.model),
                ("hardware", cam.hardware),
            ),
        )

    # ------------------------------------------------------------------ persistence
    def _load_versions(self) -> None:
        try:
            raw = json.loads(self._versions_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("discovery: cannot read %s (%s)", self._versions_path, exc)
            return
        versions = {}
        if isinstance(raw, dict):
            for epr, v in raw.get("versions", {}).items():
                if isinstance(v, list) and len(v) == 2 and isinstance(v[1], int):
                    versions[str(epr)] = (str(v[0]), int(v[1]))
        self.core.versions = versions
        self._saved_versions = dict(versions)

    def _save_versions(self) -> None:
        versions = dict(self.core.versions)
        if versions == self._saved_versions:
            return
        data = json.dumps({"versions": {k: list(v) for k, v in versions.items()}}, indent=1)
        try:
            atomic_write(self._versions_path, data.encode())
        except OSError as exc:
            log.warning("discovery: cannot write %s (%s)", self._versions_path, exc)
            return
        self._saved_versions = versions


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _pktinfo(anc: list[tuple[int, int, bytes]]) -> tuple[str, str, int]:
    """(local address, destination address, interface index) from IP(V6)_PKTINFO."""
    for level, kind, data in anc:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            idx, spec_dst, dst = struct.unpack_from("@I4s4s", data)
            return socket.inet_ntoa(spec_dst), socket.inet_ntoa(dst), idx
        if level == socket.IPPROTO_IPV6 and len(data) >= 20:
            addr = socket.inet_ntop(socket.AF_INET6, data[:16])
            (idx,) = struct.unpack_from("@I", data, 16)
            return addr, addr, idx
    return "", "", 0
