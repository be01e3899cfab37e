"""The receiving side of one SRT connection, sans-I/O: packets and a clock in, actions out.

:class:`Receiver` is created when the listener accepts a conclusion. Feed it every packet
addressed to its socket id (:meth:`Receiver.on_packet`) and call :meth:`Receiver.tick` at
least every :data:`TICK` seconds; after each call take :attr:`Receiver.out` (datagrams for
the caller) and :attr:`Receiver.delivered` (payloads, in sequence order), and check
:attr:`Receiver.closed`.

What it does (draft-sharabayko-srt section 4):

* Reliability: a gap in sequence numbers is reported at once with a NAK, and every lost
  packet again each NAK interval until it arrives or its time has passed. The interval is
  ``max(RTT - 4 RTTVar + 2 ms, 20 ms)`` per packet, not the draft's ``(RTT + 4 RTTVar) / 2``:
  a libsrt sender ignores a NAK for a packet it retransmitted less than ``SRTT - 4 RTTVar``
  ago, so a repeat sent sooner is wasted and the next useful one comes a whole interval
  later. A full ACK every 10 ms when the acknowledged position moved (or was not confirmed
  within RTT + 4 RTTVar), a light ACK every 64 packets; the caller's ACKACK gives the RTT
  (7/8 smoothing, variance 3/4).
* Timestamp-based delivery (TSBPD): a packet is delivered at
  ``base + timestamp + latency``, where ``base`` is our clock minus the caller's timestamp
  of its conclusion handshake, corrected for clock drift from ACKACK timestamps; 32-bit
  microsecond timestamps wrap every 71.6 minutes and are unwrapped.
* Too-late packet drop: when the next packet is still missing but a later one is due, the
  missing ones are given up (counted in ``dropped``) and delivery goes on; a DROPREQ from the
  caller gives packets up at once.
* Messages: packets are delivered in sequence order; a message spanning several packets
  (PP first/middle/last) is delivered whole or not at all.
* Decryption with the connection's keys, key refresh (KMREQ in a USER control packet),
  keepalive after 1 s of silence from us, SHUTDOWN in both directions, and a peer idle
  timeout.

Every structure is bounded by the receive buffer (``buffer_packets``): a packet further
ahead than that is dropped and counted, never stored.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

from onvifcam.srt.crypto import KM_BADSECRET, KM_NOSECRET, CryptoError, Decryptor, KeyMaterial
from onvifcam.srt.packet import (
    PP_FIRST,
    PP_LAST,
    PP_SOLO,
    SEQ_MASK,
    ControlPacket,
    ControlType,
    DataPacket,
    ExtType,
    build_ack,
    build_control,
    encode_loss_list,
    encode_loss_lists,
    seq_add,
    seq_diff,
    seq_ranges,
)

__all__ = ["TICK", "Receiver", "ReceiverSettings", "ReceiverStats"]

TICK = 0.01  # the ACK period; tick() wants to be called at least this often
_NAK_FLOOR = 0.02  # the shortest NAK interval
_NAK_MARGIN = 2_000  # microseconds beyond the sender's retransmission window
_SLACK = 0.001  # timers on a 10 ms tick fire this much early rather than a tick late
_US = 1_000_000
_HALF = 1 << 30
_Entry = tuple[int, bytes, int]  # unwrapped timestamp, payload, message word
_MISSING: _Entry = (-1, b"", -1)
_DROPREQ = struct.Struct("!II")


@dataclass(frozen=True)
class ReceiverSettings:
    """Per-connection bounds and timers."""

    buffer_packets: int = 8192  # packets held at most (received ahead of delivery)
    idle_timeout: float = 5.0  # close when nothing arrives from the caller this long
    keepalive: float = 1.0  # send a keepalive when we sent nothing this long
    light_ack_packets: int = 64
    max_drift_us: int = 5_000  # correct the TSBPD base when the clocks drift more
    drift_samples: int = 1000  # ACKACKs averaged per drift correction
    max_message_packets: int = 1024  # a multi-packet message longer than this is dropped


@dataclass
class ReceiverStats:
    """Counters of one connection."""

    packets: int = 0  # data packets received (retransmissions included)
    bytes: int = 0
    retransmitted: int = 0  # received with the R flag
    lost: int = 0  # packets found missing (NAKed)
    recovered: int = 0  # missing packets that arrived later
    dropped: int = 0  # given up: too late, or the caller dropped them
    duplicates: int = 0
    belated: int = 0  # arrived after their time (already delivered or given up)
    overflow: int = 0  # further ahead than the receive buffer
    undecryptable: int = 0  # encrypted without a known key, or on a clear connection
    delivered: int = 0  # payloads delivered
    delivered_bytes: int = 0
    naks: int = 0
    acks: int = 0
    drift_corrections: int = 0


@dataclass
class _RateMeter:
    start: float
    packets: int = 0
    nbytes: int = 0
    pkt_rate: int = 0
    byte_rate: int = 0

    def add(self, size: int, now: float) -> None:
        if size:
            self.packets += 1
            self.nbytes += size
        span = now - self.start
        if span >= 1.0:
            self.pkt_rate = int(self.packets / span)
            self.byte_rate = int(self.nbytes / span)
            self.start, self.packets, self.nbytes = now, 0, 0


@dataclass
class Receiver:
    """One accepted caller; see the module docstring."""

    socket_id: int  # ours
    peer_id: int  # the caller's
    isn: int
    latency: float  # seconds
    now: float  # when the conclusion arrived
    peer_timestamp: int  # the conclusion's timestamp (the caller's clock, microseconds)
    decryptor: Decryptor | None = None
    settings: ReceiverSettings = field(default_factory=ReceiverSettings)
    out: list[bytes] = field(default_factory=list)
    delivered: list[bytes] = field(default_factory=list)
    closed: str | None = None
    stats: ReceiverStats = field(default_factory=ReceiverStats)

    def __post_init__(self) -> None:
        now = self.now
        self.start = now  # our timestamps count from here
        self.base = now - self.peer_timestamp / _US  # TSBPD base: local time of caller's 0
        self.ts_last = self.peer_timestamp  # unwrapped, latest timestamp seen
        self.next_seq = self.isn  # next sequence number to deliver
        self.max_seq = seq_add(self.isn, -1)  # highest received
        self.buf: dict[int, _Entry | None] = {}
        self.loss: dict[int, float] = {}  # missing seq -> when last NAKed (circle order)
        self.nak_queue: deque[tuple[float, int]] = deque()  # (when NAKed, seq), time order
        self.last_rx = now
        self.last_tx = now
        self.ack_no = 0
        self.acks: dict[int, tuple[float, int]] = {}  # ack number -> (sent, ack seq)
        self.last_ack_seq = self.isn  # in the latest full ACK
        self.last_ack_time = now
        self.acked_seq = self.isn  # confirmed by an ACKACK
        self.since_ack = 0  # data packets since the last ACK of any kind
        self.rtt = 100_000  # microseconds
        self.rtt_var = 50_000
        self.rtt_measured = False
        self.rate = _RateMeter(now)
        self._drift_sum = 0
        self._drift_n = 0
        self._ackack_ts_last = self.peer_timestamp
        self._partial: list[bytes] | None = None
        self._partial_no = -1

    def rebase(self, timestamp: int, now: float) -> None:
        """Anchor TSBPD on a data packet's ``timestamp`` arriving ``now`` instead of the
        handshake's: on the caller side the listener's conclusion need not be stamped on
        the clock its data uses (libsrt)."""
        self.base = now - timestamp / _US
        self.ts_last = self._ackack_ts_last = timestamp

    # ------------------------------------------------------------------ helpers
    def _ts(self, now: float) -> int:
        return int((now - self.start) * _US) & 0xFFFFFFFF

    def _send(self, data: bytes, now: float) -> None:
        self.out.append(data)
        self.last_tx = now

    def _unwrap(self, ts: int, last: int) -> int:
        delta = ((ts - (last & 0xFFFFFFFF) + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        return last + delta

    @property
    def ack_seq(self) -> int:
        """The first sequence number not received (what a full ACK acknowledges up to)."""
        for s in self.loss:
            return s
        return seq_add(self.max_seq, 1)

    def play_time(self, timestamp: int) -> float:
        """When a packet with the unwrapped ``timestamp`` is due for delivery."""
        return self.base + timestamp / _US + self.latency

    def close(self, reason: str, now: float, *, notify: bool = True) -> None:
        """Stop; with ``notify`` the caller gets a SHUTDOWN."""
        if self.closed is None:
            self.closed = reason
            if notify:
                self._send(build_control(ControlType.SHUTDOWN, self._ts(now), self.peer_id), now)

    # ------------------------------------------------------------------ input
    def on_packet(self, pkt: DataPacket | ControlPacket, now: float) -> None:
        """One packet from the caller."""
        if self.closed is not None:
            return
        self.last_rx = now
        if isinstance(pkt, DataPacket):
            self.on_data(pkt.seq, pkt.msg, pkt.timestamp, pkt.payload, now)
        else:
            self._on_control(pkt, now)

    def on_data(self, seq: int, msg: int, timestamp: int, payload: bytes, now: float) -> None:
        """One data packet from the caller (the fields of its header), the hot path."""
        if self.closed is not None:
            return
        self.last_rx = now
        st = self.stats
        st.packets += 1
        size = len(payload)
        st.bytes += size
        rate = self.rate
        rate.packets += 1
        rate.nbytes += size
        if now - rate.start >= 1.0:
            rate.add(0, now)
        if msg & 0x04000000:
            st.retransmitted += 1
        off = ((seq - self.next_seq + _HALF) & SEQ_MASK) - _HALF
        if off < 0:
            st.belated += 1
            return
        if off >= self.settings.buffer_packets:
            st.overflow += 1
            return
        d = ((seq - self.max_seq + _HALF) & SEQ_MASK) - _HALF
        if d == 1:
            self.max_seq = seq
        elif d > 1:
            first = seq_add(self.max_seq, 1)
            last = seq_add(seq, -1)
            s = first
            queue = self.nak_queue
            for _ in range(d - 1):
                self.loss[s] = now
                queue.append((now, s))
                s = seq_add(s, 1)
            st.lost += d - 1
            st.naks += 1
            self._send(
                build_control(
                    ControlType.NAK,
                    self._ts(now),
                    self.peer_id,
                    encode_loss_list([(first, last)]),
                ),
                now,
            )
            self.max_seq = seq
        else:
            if seq in self.buf:
                st.duplicates += 1
                return
            if self.loss.pop(seq, None) is not None:
                st.recovered += 1
            else:  # neither received nor missing: given up by a DROPREQ
                st.belated += 1
                return
        kk = (msg >> 27) & 0b11
        if kk:
            clear = None if self.decryptor is None else self.decryptor.decrypt(kk, seq, payload)
            if clear is None:
                st.undecryptable += 1
                self.buf[seq] = None  # never deliverable: skip it at once
                return
            payload = clear
        last = self.ts_last
        ts = last + ((timestamp - last + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        if ts > last:
            self.ts_last = ts
        self.buf[seq] = (ts, payload, msg)
        self.since_ack += 1
        if self.since_ack >= self.settings.light_ack_packets:
            self.since_ack = 0
            st.acks += 1
            self._send(build_ack(self._ts(now), self.peer_id, 0, self.ack_seq, light=True), now)

    def _on_control(self, pkt: ControlPacket, now: float) -> None:
        t = pkt.type
        if t == ControlType.ACKACK:
            self._on_ackack(pkt, now)
        elif t == ControlType.SHUTDOWN:
            self._drain()
            self.close("the caller closed the connection (SHUTDOWN)", now, notify=False)
        elif t == ControlType.DROPREQ:
            self._on_dropreq(pkt)
        elif t == ControlType.USER and pkt.subtype == ExtType.KMREQ:
            self._on_km(pkt, now)
        # KEEPALIVE refreshes last_rx; ACK, NAK, CONGESTION, PEERERROR and unknown types
        # concern a sender, and we send no data: ignored.

    def _on_ackack(self, pkt: ControlPacket, now: float) -> None:
        sent = self.acks.pop(pkt.info, None)
        if sent is None:
            return
        sample = int((now - sent[0]) * _US)
        if not self.rtt_measured:
            self.rtt, self.rtt_var, self.rtt_measured = sample, sample // 2, True
        else:
            self.rtt_var = (3 * self.rtt_var + abs(self.rtt - sample)) // 4
            self.rtt = (7 * self.rtt + sample) // 8
        if seq_diff(sent[1], self.acked_seq) > 0:
            self.acked_seq = sent[1]
        # drift: how late the caller's clock says this ACKACK is, against the TSBPD base
        ts = self._unwrap(pkt.timestamp, self._ackack_ts_last)
        self._ackack_ts_last = ts
        self._drift_sum += int((now - self.base) * _US) - ts
        self._drift_n += 1
        if self._drift_n >= self.settings.drift_samples:
            avg = self._drift_sum // self._drift_n
            self._drift_sum = self._drift_n = 0
            if abs(avg) > self.settings.max_drift_us:
                self.base += avg / _US
                self.stats.drift_corrections += 1

    def _on_dropreq(self, pkt: ControlPacket) -> None:
        if len(pkt.cif) < 8:
            return
        first, last = _DROPREQ.unpack_from(pkt.cif)
        first &= 0x7FFFFFFF
        last &= 0x7FFFFFFF
        n = seq_diff(last, first) + 1
        if n <= 0 or n > self.settings.buffer_packets:
            return
        s = first
        for _ in range(n):
            off = seq_diff(s, self.next_seq)
            if 0 <= off < self.settings.buffer_packets and seq_diff(s, self.max_seq) <= 0:
                if self.loss.pop(s, None) is not None:
                    self.buf[s] = None
                    self.stats.dropped += 1
            s = seq_add(s, 1)

    def _on_km(self, pkt: ControlPacket, now: float) -> None:
        if self.decryptor is None:
            answer = struct.pack("!I", KM_NOSECRET)
        else:
            try:
                self.decryptor.update(KeyMaterial.parse(pkt.cif))
                answer = pkt.cif
            except CryptoError as exc:
                answer = struct.pack("!I", exc.km_state or KM_BADSECRET)
        self._send(
            build_control(
                ControlType.USER, self._ts(now), self.peer_id, answer, subtype=ExtType.KMRSP
            ),
            now,
        )

    # ------------------------------------------------------------------ timers
    def tick(self, now: float) -> None:
        """Deliver what is due, send ACK/NAK/keepalive, check the idle timeout."""
        if self.closed is not None:
            return
        if now - self.last_rx >= self.settings.idle_timeout:
            self.close(
                f"no packet from the caller for {self.settings.idle_timeout:g} s "
                "(peer idle timeout)",
                now,
            )
            return
        self._deliver(now)
        self._ack(now)
        if self.nak_queue:
            interval = max((self.rtt - 4 * self.rtt_var + _NAK_MARGIN) / _US, _NAK_FLOOR)
            self._periodic_nak(now, interval)
        if now - self.last_tx >= self.settings.keepalive:
            self._send(build_control(ControlType.KEEPALIVE, self._ts(now), self.peer_id), now)

    def _ack(self, now: float) -> None:
        ack = self.ack_seq
        if ack == self.last_ack_seq:
            if ack == self.acked_seq:
                return
            wait = (self.rtt + 4 * self.rtt_var) / _US
            if now - self.last_ack_time < wait:
                return
        self.ack_no = (self.ack_no + 1) & 0x7FFFFFFF or 1
        self.acks[self.ack_no] = (now, ack)
        if len(self.acks) > 1024:
            del self.acks[next(iter(self.acks))]
        self.last_ack_seq = ack
        self.last_ack_time = now
        self.since_ack = 0
        self.stats.acks += 1
        used = seq_diff(self.max_seq, self.next_seq) + 1
        rate = self.rate
        self._send(
            build_ack(
                self._ts(now),
                self.peer_id,
                self.ack_no,
                ack,
                rtt=self.rtt,
                rtt_var=self.rtt_var,
                buffer=self.settings.buffer_packets - max(0, used),
                pkt_rate=rate.pkt_rate,
                capacity=max(rate.pkt_rate * 2, 1000),
                byte_rate=rate.byte_rate,
            ),
            now,
        )

    def _periodic_nak(self, now: float, interval: float) -> None:
        queue, loss = self.nak_queue, self.loss
        limit = now - interval + _SLACK
        due: list[int] = []
        while queue and queue[0][0] <= limit:
            t, s = queue.popleft()
            if loss.get(s) == t:  # else recovered, given up or NAKed since
                due.append(s)
        if not due:
            return
        nxt = self.next_seq
        due.sort(key=lambda s: seq_diff(s, nxt))
        for s in due:
            loss[s] = now
            queue.append((now, s))
        for cif in encode_loss_lists(seq_ranges(due)):
            self.stats.naks += 1
            self._send(build_control(ControlType.NAK, self._ts(now), self.peer_id, cif), now)

    def _deliver(self, now: float) -> None:
        buf = self.buf
        st = self.stats
        due = (now - self.base - self.latency) * _US  # deliver timestamps up to this
        nxt, top = self.next_seq, self.max_seq
        out = self.delivered
        while ((nxt - top + _HALF) & SEQ_MASK) - _HALF <= 0:
            entry = buf.get(nxt, _MISSING)
            if entry is None:  # given up at once (DROPREQ or no key)
                del buf[nxt]
                self._partial = None
                nxt = (nxt + 1) & SEQ_MASK
                continue
            if entry is _MISSING:
                # the next packet is lost: give it up when a later one is due
                s = (nxt + 1) & SEQ_MASK
                while seq_diff(s, top) <= 0 and s in self.loss:
                    s = (s + 1) & SEQ_MASK
                later = buf.get(s, _MISSING)
                if later is _MISSING or (later is not None and later[0] > due):
                    break
                gone = seq_diff(s, nxt)
                for _ in range(gone):
                    self.loss.pop(nxt, None)
                    nxt = (nxt + 1) & SEQ_MASK
                st.dropped += gone
                self._partial = None
                continue
            ts, payload, msg = entry
            if ts > due:
                break
            del buf[nxt]
            nxt = (nxt + 1) & SEQ_MASK
            if msg >> 30 == PP_SOLO and self._partial is None:
                out.append(payload)
                st.delivered += 1
                st.delivered_bytes += len(payload)
            else:
                self._message(payload, msg)
        self.next_seq = nxt

    def _drain(self) -> None:
        """Deliver everything still held, in order, giving up what is missing (the caller
        closed: nothing more will come)."""
        while seq_diff(self.next_seq, self.max_seq) <= 0:
            seq = self.next_seq
            entry = self.buf.pop(seq, _MISSING)
            self.next_seq = seq_add(seq, 1)
            if entry is None or entry is _MISSING:
                if entry is _MISSING:
                    self.loss.pop(seq, None)
                    self.stats.dropped += 1
                self._partial = None
                continue
            self._message(entry[1], entry[2])

    def _message(self, payload: bytes, msg: int) -> None:
        pp = msg >> 30
        if pp == PP_SOLO:
            self._partial = None
            self._emit(payload)
            return
        msgno = msg & 0x03FFFFFF
        if pp == PP_FIRST:
            self._partial = [payload]
            self._partial_no = msgno
            return
        part = self._partial
        if part is None or msgno != self._partial_no:
            self._partial = None
            self.stats.dropped += 1
            return
        part.append(payload)
        if pp == PP_LAST:
            self._partial = None
            self._emit(b"".join(part))
        elif len(part) > self.settings.max_message_packets:
            self._partial = None
            self.stats.dropped += len(part)

    def _emit(self, payload: bytes) -> None:
        self.delivered.append(payload)
        self.stats.delivered += 1
        self.stats.delivered_bytes += len(payload)

    # ------------------------------------------------------------------ output
    def take(self) -> tuple[list[bytes], list[bytes]]:
        """The datagrams to send and the payloads delivered since the last call."""
        out, delivered = self.out, self.delivered
        if out:
            self.out = []
        if delivered:
            self.delivered = []
        return out, delivered
