"""The receiving side of an SRT caller, sans-I/O: pulling a stream from a listener.

:class:`Puller` does the caller's handshake with :class:`~onvifcam.srt.caller.Caller`
(induction, conclusion with HSREQ, Stream ID such as ``read:cam1`` and KMREQ when there is a
passphrase) and, once the listener accepts, runs the data path through the listener-side
:class:`~onvifcam.srt.receiver.Receiver` (ACK, NAK, TSBPD, decryption, keepalive, idle
timeout, SHUTDOWN). What the receiver needs on this side:

* socket ids: ours is the caller's, the peer's comes from the conclusion response;
* the ISN: the one in the conclusion response (libsrt's listener sends from the caller's);
* the latency: the HSRSP's sender delay (the listener's answer to our receive latency);
* the key: in HSv5 the caller's KMREQ keys both directions, so the decryptor is built from
  our own key material;
* the TSBPD base: taken from the first data packet, not from the conclusion response's
  timestamp (libsrt stamps it on another clock than its data).

Feed :meth:`Puller.datagram` and call :meth:`Puller.tick` at least every
:data:`~onvifcam.srt.receiver.TICK` seconds once connected; :meth:`Puller.take` gives the
datagrams to send and the payloads delivered; :attr:`Puller.closed` the end reason.
"""

from __future__ import annotations

from onvifcam.srt.caller import Caller
from onvifcam.srt.crypto import CryptoError, Decryptor
from onvifcam.srt.handshake import RejectCode
from onvifcam.srt.packet import DataPacket, PacketError, parse
from onvifcam.srt.receiver import Receiver, ReceiverSettings

__all__ = ["Puller", "reject_text"]


class Puller:
    """One SRT caller that receives; see the module docstring."""

    def __init__(
        self,
        *,
        streamid: str,
        latency_ms: int = 120,
        passphrase: str = "",
        key_len: int = 16,
        socket_id: int = 0x2345678,
        isn: int = 1000,
        start: float = 0.0,
        settings: ReceiverSettings | None = None,
    ) -> None:
        self.caller = Caller(
            streamid=streamid,
            latency_ms=latency_ms,
            passphrase=passphrase,
            key_len=key_len,
            socket_id=socket_id,
            isn=isn,
            start=start,
        )
        self.latency_ms = latency_ms
        self.settings = settings or ReceiverSettings()
        self.receiver: Receiver | None = None
        self.closed: str | None = None
        self.bad_packets = 0
        self._out: list[bytes] = []
        self._rebased = False

    def handshake(self, now: float) -> bytes:
        """The handshake packet to (re)send until connected."""
        c = self.caller
        return c.induction(now) if c.state == "new" else c.conclusion(now)

    def datagram(self, data: bytes, now: float) -> None:
        """One datagram from the listener."""
        if self.closed is not None:
            return
        rx = self.receiver
        if rx is None:
            c = self.caller
            try:
                self._out += c.receive(data, now)
            except (PacketError, ValueError):
                self.bad_packets += 1
                return
            if c.state == "rejected":
                self.closed = reject_text(c.reject_code)
            elif c.state == "connected":
                self._connected(now)
            return
        try:
            pkt = parse(data)
        except PacketError:
            self.bad_packets += 1
            return
        if isinstance(pkt, DataPacket) and not self._rebased:
            self._rebased = True
            rx.rebase(pkt.timestamp, now)
        rx.on_packet(pkt, now)
        if rx.closed is not None:
            self.closed = rx.closed

    def _connected(self, now: float) -> None:
        c = self.caller
        decryptor = None
        if c.enc is not None:
            try:
                decryptor = Decryptor(c.passphrase, c.enc.key_material())
            except CryptoError as exc:
                self.closed = f"cannot set up decryption: {exc}"
                return
        latency = max(c.receive_latency_ms, self.latency_ms)
        self.receiver = Receiver(
            socket_id=c.socket_id,
            peer_id=c.peer_id,
            isn=c.peer_isn,
            latency=latency / 1000,
            now=now,
            peer_timestamp=c.peer_timestamp,
            decryptor=decryptor,
            settings=self.settings,
        )

    def tick(self, now: float) -> None:
        """Timers (ACK, NAK, delivery, keepalive, idle timeout)."""
        rx = self.receiver
        if rx is not None and self.closed is None:
            rx.tick(now)
            if rx.closed is not None:
                self.closed = rx.closed

    def take(self) -> tuple[list[bytes], list[bytes]]:
        """Datagrams to send and payloads delivered since the last call."""
        out, self._out = self._out, []
        rx = self.receiver
        if rx is None:
            return out, []
        sent, delivered = rx.take()
        return out + sent, delivered

    def close(self, reason: str, now: float) -> None:
        """End the connection (SHUTDOWN to the listener when connected)."""
        if self.receiver is not None:
            self.receiver.close(reason, now)
        if self.closed is None:
            self.closed = reason


def reject_text(code: int) -> str:
    """What a listener's reject code means, for the last error and the log."""
    try:
        name = RejectCode(code).name
    except ValueError:
        name = "unknown"
    hint = {
        RejectCode.BADSECRET: "wrong passphrase",
        RejectCode.UNSECURE: "the peer and we disagree on encryption (passphrase)",
        RejectCode.X_UNAUTHORIZED: "the streamid's credentials were refused",
        RejectCode.X_FORBIDDEN: "the peer does not allow this streamid",
        RejectCode.X_NOTFOUND: "the peer has no such stream",
        RejectCode.X_BAD_MODE: "the peer does not allow this mode (publish/read)",
        RejectCode.X_CONFLICT: "the stream already has a publisher",
    }.get(code, "")
    return f"the peer refused the connection: {name} ({code})" + (f", {hint}" if hint else "")
