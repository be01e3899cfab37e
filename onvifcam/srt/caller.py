"""A minimal SRT caller (live-mode sender), sans-I/O, for tests and benchmarks.

It speaks just enough of the protocol to drive the listener the way libsrt does: induction,
conclusion with HSREQ, Stream ID and optional KMREQ, data packets with TSBPD timestamps,
ACKACK for every full ACK, retransmission of what a NAK lists, a key refresh, KEEPALIVE,
SHUTDOWN. What is sent stays for retransmission until acknowledged, bounded by
:meth:`Caller.trim`. The forwarder (:mod:`onvifcam.srt.client`) sends with it, and the
puller (:mod:`onvifcam.srt.puller`) uses its handshake.
Real encoders (ffmpeg, GStreamer) are what the interop tests use; this one lets the unit
tests exercise loss, reordering, wrap-arounds and hostile callers without sockets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from onvifcam.srt.crypto import KK_BOTH, Encryptor
from onvifcam.srt.packet import (
    EXT_CONFIG,
    EXT_HSREQ,
    EXT_KMREQ,
    FLAG_CRYPT,
    FLAG_NAKREPORT,
    FLAG_REXMITFLG,
    FLAG_TLPKTDROP,
    FLAG_TSBPDRCV,
    FLAG_TSBPDSND,
    PP_SOLO,
    REJECT_BASE,
    ControlPacket,
    ControlType,
    DataPacket,
    ExtType,
    Handshake,
    HsExt,
    HsType,
    build_control,
    build_data,
    decode_loss_list,
    encode_words,
    parse,
    seq_add,
    seq_diff,
)

__all__ = ["Caller"]


@dataclass
class Caller:
    """One caller; feed it what the listener sends, send what it returns."""

    streamid: str = "publish:cam1"
    latency_ms: int = 120
    passphrase: str = ""
    key_len: int = 16
    socket_id: int = 0x1234567
    isn: int = 1000
    start: float = 0.0
    version: int = 5
    extra_extensions: tuple[tuple[int, bytes], ...] = ()
    flags: int = (
        FLAG_TSBPDSND
        | FLAG_TSBPDRCV
        | FLAG_CRYPT
        | FLAG_TLPKTDROP
        | FLAG_NAKREPORT
        | FLAG_REXMITFLG
    )
    state: str = "new"  # new, induced, connected, rejected, closed
    peer_id: int = 0
    reject_code: int = 0
    negotiated_latency_ms: int = 0  # the listener's receive latency (HSRSP)
    receive_latency_ms: int = 0  # ours, as the listener agreed (HSRSP sender delay)
    next_seq: int = 0
    msgno: int = 1
    sent: dict[int, tuple[bytes, int, int]] = field(default_factory=dict)
    acked: int = 0
    acks: int = 0
    naks: list[tuple[int, int]] = field(default_factory=list)
    retransmitted: int = 0
    kmrsp: list[bytes] = field(default_factory=list)
    enc: Encryptor | None = None
    cookie: int = 0
    sent_bytes: int = 0  # payload bytes kept for retransmission
    trimmed: int = 0  # packets dropped from the retransmission buffer unacknowledged
    last_rx: float = 0.0  # when the last datagram from the listener arrived
    peer_timestamp: int = 0  # the timestamp of the listener's conclusion
    peer_isn: int = 0  # the ISN in the listener's conclusion

    def __post_init__(self) -> None:
        self.next_seq = self.isn
        self.acked = self.isn
        if self.passphrase:
            self.enc = Encryptor(self.passphrase, self.key_len)

    def ts(self, now: float) -> int:
        """Our packet timestamp (microseconds since ``start``)."""
        return int((now - self.start) * 1_000_000) & 0xFFFFFFFF

    # ------------------------------------------------------------------ handshake
    def induction(self, now: float) -> bytes:
        """The first handshake packet."""
        hs = Handshake(4, 0, 2, self.isn, 1500, 8192, HsType.INDUCTION, self.socket_id, 0)
        return build_control(ControlType.HANDSHAKE, self.ts(now), 0, hs.pack())

    def conclusion(self, now: float) -> bytes:
        """The conclusion handshake (after the induction response gave the cookie)."""
        exts: list[tuple[int, bytes]] = [
            (
                ExtType.HSREQ,
                HsExt(0x010501, self.flags, self.latency_ms, self.latency_ms).pack(),
            )
        ]
        ext = EXT_HSREQ
        if self.enc is not None:
            exts.append((ExtType.KMREQ, self.enc.key_material().pack()))
            ext |= EXT_KMREQ
        if self.streamid:
            exts.append((ExtType.SID, encode_words(self.streamid)))
            ext |= EXT_CONFIG
        exts.extend(self.extra_extensions)
        enc_field = {16: 2, 24: 3, 32: 4}[self.key_len] if self.enc is not None else 0
        hs = Handshake(
            self.version,
            enc_field,
            ext,
            self.isn,
            1500,
            8192,
            HsType.CONCLUSION,
            self.socket_id,
            self.cookie,
            extensions=tuple(exts),
        )
        return build_control(ControlType.HANDSHAKE, self.ts(now), 0, hs.pack())

    # ------------------------------------------------------------------ data
    def data(self, payload: bytes, now: float, *, timestamp: int | None = None) -> bytes:
        """The next data packet carrying ``payload`` (kept for retransmission)."""
        seq = self.next_seq
        self.next_seq = seq_add(seq, 1)
        ts = self.ts(now) if timestamp is None else timestamp
        msgno = self.msgno
        self.msgno = (self.msgno + 1) & 0x03FFFFFF or 1
        self.sent[seq] = (payload, ts, msgno)
        self.sent_bytes += len(payload)
        return self._packet(seq, payload, ts, msgno, retransmitted=False)

    def _packet(
        self, seq: int, payload: bytes, ts: int, msgno: int, *, retransmitted: bool
    ) -> bytes:
        key = 0
        if self.enc is not None:
            key = self.enc.current
            payload = self.enc.encrypt(seq, payload)
        return build_data(
            seq,
            payload,
            ts,
            self.peer_id,
            msgno=msgno,
            position=PP_SOLO,
            key=key,
            retransmitted=retransmitted,
        )

    def refresh_key(self, now: float) -> bytes:
        """Switch to a new key; the KMREQ (both keys) to send before using it."""
        assert self.enc is not None
        self.enc.refresh()
        km = self.enc.key_material(KK_BOTH).pack()
        return build_control(
            ControlType.USER, self.ts(now), self.peer_id, km, subtype=ExtType.KMREQ
        )

    def keepalive(self, now: float) -> bytes:
        """KEEPALIVE."""
        return build_control(ControlType.KEEPALIVE, self.ts(now), self.peer_id)

    def trim(self, max_bytes: int) -> int:
        """Forget the oldest unacknowledged packets beyond ``max_bytes``; how many."""
        n = 0
        sent = self.sent
        while self.sent_bytes > max_bytes and sent:
            seq = next(iter(sent))
            self.sent_bytes -= len(sent.pop(seq)[0])
            n += 1
        self.trimmed += n
        return n

    def shutdown(self, now: float) -> bytes:
        """SHUTDOWN."""
        self.state = "closed"
        return build_control(ControlType.SHUTDOWN, self.ts(now), self.peer_id)

    # ------------------------------------------------------------------ input
    def receive(self, datagram: bytes, now: float) -> list[bytes]:
        """Handle one datagram from the listener; the datagrams to answer with."""
        pkt = parse(datagram)
        self.last_rx = now
        if isinstance(pkt, DataPacket):
            return []
        return self._control(pkt, now)

    def _control(self, pkt: ControlPacket, now: float) -> list[bytes]:
        if pkt.type == ControlType.HANDSHAKE:
            hs = Handshake.parse(pkt.cif)
            if hs.hs_type >= REJECT_BASE and hs.hs_type < REJECT_BASE + 2000:
                self.state = "rejected"
                self.reject_code = hs.hs_type - REJECT_BASE
                return []
            if self.state == "new" and hs.hs_type == HsType.INDUCTION:
                self.cookie = hs.cookie
                self.state = "induced"
                return [self.conclusion(now)]
            if self.state == "induced" and hs.hs_type == HsType.CONCLUSION:
                self.peer_id = hs.socket_id
                self.peer_timestamp = pkt.timestamp
                self.peer_isn = hs.isn
                raw = hs.ext(ExtType.HSRSP)
                if raw is not None:
                    rsp = HsExt.parse(raw)
                    self.negotiated_latency_ms = rsp.recv_delay
                    self.receive_latency_ms = rsp.send_delay
                self.state = "connected"
            return []
        if pkt.type == ControlType.ACK:
            ack = struct.unpack_from("!I", pkt.cif)[0] & 0x7FFFFFFF
            if seq_diff(ack, self.acked) > 0:
                sent = self.sent  # in sequence order: forget from the front up to the ACK
                while sent:
                    s = next(iter(sent))
                    if seq_diff(s, ack) >= 0:
                        break
                    self.sent_bytes -= len(sent.pop(s)[0])
                self.acked = ack
            if pkt.info:  # full ACK: answer with ACKACK
                self.acks += 1
                return [
                    build_control(ControlType.ACKACK, self.ts(now), self.peer_id, info=pkt.info)
                ]
            return []
        if pkt.type == ControlType.NAK:
            out = []
            for first, last in decode_loss_list(pkt.cif):
                self.naks.append((first, last))
                s = first
                for _ in range(seq_diff(last, first) + 1):
                    kept = self.sent.get(s)
                    if kept is not None:
                        self.retransmitted += 1
                        out.append(self._packet(s, kept[0], kept[1], kept[2], retransmitted=True))
                    s = seq_add(s, 1)
            return out
        if pkt.type == ControlType.USER and pkt.subtype == ExtType.KMRSP:
            self.kmrsp.append(pkt.cif)
        if pkt.type == ControlType.SHUTDOWN:
            self.state = "closed"
        return []
