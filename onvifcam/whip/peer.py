"""One WHIP publisher's WebRTC connection: aiortc for ICE, DTLS and SRTP, nothing more.

aiortc's receive path (frame-assembling jitter buffer, one decoder thread per track) is
not used: the decrypted RTP and RTCP of the connection go straight to two callbacks, and
the callers pass packets through without decoding. This is the only module that touches
aiortc/aioice internals, each named here and checked by ``tests/unit/test_whip.py``:

- ``RTCRtpReceiver.receive`` is replaced per instance by a no-op (no decoder thread);
- ``RTCDtlsTransport._handle_rtp_data`` / ``_handle_rtcp_data`` are replaced per instance
  (they get the decrypted datagrams), and ``_send_rtp`` sends our RTCP;
- ``aioice.Connection.gather_candidates`` is replaced per instance, so host candidates
  are exactly the configured addresses (loopback included when configured) on ports of
  the configured range, plus the public address for NAT, and no STUN server is asked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Callable
from typing import Any

from aioice import Candidate
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import StunProtocol, get_host_addresses
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCBundlePolicy

log = logging.getLogger(__name__)

__all__ = ["WhipPeer", "host_addresses", "restrict_gathering"]

UDP_RCVBUF = 4 * 1024 * 1024  # a 1080p keyframe arrives as a burst of ~100-300 packets
_WILDCARD = ("", "0.0.0.0", "::")


def host_addresses(host: str) -> list[str]:
    """The addresses to offer host candidates on for the ``[server] host`` setting."""
    if host in ("", "0.0.0.0"):
        return get_host_addresses(use_ipv4=True, use_ipv6=False)
    if host == "::":
        return get_host_addresses(use_ipv4=True, use_ipv6=True)
    return [host]


async def _bind(
    conn: Any, address: str, ports: tuple[int, int] | None
) -> tuple[asyncio.DatagramTransport, Any]:
    loop = asyncio.get_running_loop()
    if ports is None:
        candidates = [0]
    else:
        lo, hi = ports
        start = random.randint(lo, hi)
        candidates = [*range(start, hi + 1), *range(lo, start)]
    last: OSError | None = None
    for port in candidates:
        try:
            return await loop.create_datagram_endpoint(
                lambda: StunProtocol(conn), local_addr=(address, port)
            )
        except OSError as exc:
            last = exc
    raise OSError(
        f"no free UDP port on {address} in {ports[0]}..{ports[1]} ([whip] udp_port_min.."
        f"udp_port_max): {last}"
        if ports
        else f"cannot bind UDP on {address}: {last}"
    )


def restrict_gathering(
    pc: RTCPeerConnection,
    addresses: list[str],
    *,
    ports: tuple[int, int] | None = None,
    public_ip: str = "",
) -> None:
    """Make ``pc`` gather host candidates on ``addresses`` only (see the module doc)."""
    for t in pc.getTransceivers():
        conn = t.receiver.transport.transport.iceGatherer._connection
        if getattr(conn, "_onvifcam_gather", False):
            continue
        conn._onvifcam_gather = True

        async def gather(conn: Any = conn) -> None:
            if conn._local_candidates_start:
                return
            conn._local_candidates_start = True
            try:
                for component in sorted(conn._components):
                    for address in addresses:
                        transport, protocol = await _bind(conn, address, ports)
                        sock = transport.get_extra_info("socket")
                        if sock is not None:
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
                        host, port = transport.get_extra_info("sockname")[:2]
                        protocol.local_candidate = Candidate(
                            foundation=candidate_foundation("host", "udp", host),
                            component=component,
                            transport="udp",
                            priority=candidate_priority(component, "host"),
                            host=host,
                            port=port,
                            type="host",
                        )
                        conn._protocols.append(protocol)
                        conn._local_candidates.append(protocol.local_candidate)
                        if public_ip and _same_family(public_ip, host) and public_ip != host:
                            # NAT: the same socket, as the publisher sees it from outside
                            conn._local_candidates.append(
                                Candidate(
                                    foundation=candidate_foundation("host", "udp", public_ip),
                                    component=component,
                                    transport="udp",
                                    priority=candidate_priority(component, "host", 65534),
                                    host=public_ip,
                                    port=port,
                                    type="host",
                                )
                            )
            finally:
                conn._local_candidates_end = True

        conn.gather_candidates = gather


def _same_family(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a).version == ipaddress.ip_address(b).version
    except ValueError:
        return False


async def _noop_receive(*_args: object) -> None:
    """Replaces RTCRtpReceiver.receive: no jitter buffer, no decoder thread."""


class WhipPeer:
    """The RTCPeerConnection of one publisher, answering its offer and handing over the
    decrypted RTP (``on_rtp(datagram)``) and RTCP (``on_rtcp(datagram)``)."""

    def __init__(
        self,
        *,
        addresses: list[str],
        on_rtp: Callable[[bytes], None],
        on_rtcp: Callable[[bytes], None],
        on_state: Callable[[str], None],
        ports: tuple[int, int] | None = None,
        public_ip: str = "",
    ) -> None:
        self.addresses = addresses
        self.ports = ports
        self.public_ip = public_ip
        self._on_rtp = on_rtp
        self._on_rtcp = on_rtcp
        self._on_state = on_state
        # No iceServers: aiortc would otherwise ask a public STUN server.
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.pc.on("connectionstatechange", self._state_changed)
        self._dtls: list[Any] = []
        self.closed = False

    @property
    def state(self) -> str:
        """aiortc's connectionState: new, connecting, connected, failed, closed."""
        return str(self.pc.connectionState)

    def _state_changed(self) -> None:
        self._on_state(self.state)

    async def answer(self, offer: str) -> str:
        """Apply the offer, gather, and return the answer with our candidates.

        Raises ValueError (aiortc's complaint) for an offer aiortc cannot use.
        """
        pc = self.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ValueError(str(exc) or type(exc).__name__) from None
        except Exception as exc:  # aiortc's InvalidAccessError, OperationError...
            raise ValueError(str(exc) or type(exc).__name__) from None
        restrict_gathering(pc, self.addresses, ports=self.ports, public_ip=self.public_ip)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        # No await between here and the return: aiortc's connect task has not run yet.
        for t in pc.getTransceivers():
            t.receiver.receive = _noop_receive
            dtls = t.receiver.transport
            if dtls not in self._dtls:
                self._dtls.append(dtls)
                dtls._handle_rtp_data = self._rtp
                dtls._handle_rtcp_data = self._rtcp
        return str(pc.localDescription.sdp)

    async def _rtp(self, data: bytes, arrival_time_ms: int = 0) -> None:
        self._on_rtp(data)

    async def _rtcp(self, data: bytes) -> None:
        self._on_rtcp(data)

    def local_candidates(self) -> list[tuple[str, int]]:
        """(address, port) of our host candidates, for logs and tests."""
        out = []
        for t in self.pc.getTransceivers()[:1]:
            for c in t.receiver.transport.transport.iceGatherer.getLocalCandidates():
                out.append((c.ip, c.port))
        return out

    async def send_rtcp(self, packets: list[bytes]) -> bool:
        """Send RTCP to the publisher; False when the connection is not up."""
        if not self._dtls or self.closed:
            return False
        dtls = self._dtls[0]
        try:
            for p in packets:
                await dtls._send_rtp(p)
        except ConnectionError:
            return False
        return True

    async def close(self) -> None:
        """Close ICE, DTLS and the sockets (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            # shielded: aiortc may be closing already (the publisher closed DTLS) and awaits
            # one future from both calls; cancelling us must not cancel that future
            await asyncio.shield(self.pc.close())
        except Exception as exc:  # a half-set-up connection may fail to close cleanly
            log.debug("whip: closing the peer connection: %s", exc)
