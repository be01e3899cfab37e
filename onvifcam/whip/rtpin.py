"""RTP input of one WHIP track: reorder, loss recovery (NACK), keyframe requests (PLI),
receiver reports and bitrate ceiling (REMB). Sans-I/O: packets and a clock go in,
packets in sequence order and RTCP bytes to send come out.

aiortc's own receiver is bypassed (see ``peer.py``): its jitter buffer assembles whole
frames and overflows on large keyframes, and it decodes every frame in a thread. Here a
packet is held only while an earlier one is missing, for at most ``wait`` seconds and
``capacity`` packets; then the gap is given up, counted as lost, and (video) a keyframe
is requested so readers do not stay on a broken picture.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from onvifcam.media import rtcp

__all__ = [
    "PT_PSFB",
    "PT_RTPFB",
    "Receiver",
    "ReceiverStats",
    "build_nack",
    "build_pli",
    "build_remb",
    "seq_delta",
]

PT_RTPFB = 205  # transport-layer feedback (generic NACK: FMT 1)
PT_PSFB = 206  # payload-specific feedback (PLI: FMT 1, REMB: FMT 15)
_HDR = struct.Struct("!BBHII")
_NACK_RETRIES = 2  # a missing packet is NACKed at most this many times
_MAX_NACK_BATCH = 64  # sequence numbers per NACK packet (16 per FCI entry at best)
PLI_MIN_INTERVAL = 0.5  # seconds between two keyframe requests
JUMP = 16384  # a sequence number this far ahead is a new start, not a gap


def seq_delta(a: int, b: int) -> int:
    """``a - b`` for 16-bit sequence numbers, in -32768..32767."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    """RTCP Picture Loss Indication (RFC 4585 6.3.1)."""
    return struct.pack("!BBHII", 0x81, PT_PSFB, 2, sender_ssrc, media_ssrc)


def build_nack(sender_ssrc: int, media_ssrc: int, seqs: list[int]) -> bytes:
    """RTCP generic NACK (RFC 4585 6.2.1) for the given sequence numbers."""
    fci = b""
    ordered = sorted(set(seqs), key=lambda s: seq_delta(s, seqs[0]))
    i = 0
    while i < len(ordered):
        pid = ordered[i]
        blp = 0
        i += 1
        while i < len(ordered):
            d = seq_delta(ordered[i], pid)
            if not 1 <= d <= 16:
                break
            blp |= 1 << (d - 1)
            i += 1
        fci += struct.pack("!HH", pid, blp)
    return struct.pack("!BBHII", 0x81, PT_RTPFB, 2 + len(fci) // 4, sender_ssrc, media_ssrc) + fci


def build_remb(sender_ssrc: int, bitrate: int, ssrcs: list[int]) -> bytes:
    """RTCP Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb)."""
    exp = 0
    mantissa = max(int(bitrate), 0)
    while mantissa >= 1 << 18:
        mantissa >>= 1
        exp += 1
    fci = b"REMB" + struct.pack(
        "!BBH", len(ssrcs), (exp << 2) | (mantissa >> 16), mantissa & 0xFFFF
    )
    fci += b"".join(struct.pack("!I", s) for s in ssrcs)
    return struct.pack("!BBHII", 0x8F, PT_PSFB, 2 + len(fci) // 4, sender_ssrc, 0) + fci


@dataclass
class ReceiverStats:
    """Counters of one track's input."""

    packets: int = 0  # accepted (in sequence or held)
    released: int = 0  # passed on in order
    duplicates: int = 0  # seen already, or older than what was passed on
    lost: int = 0  # given up after the wait
    recovered: int = 0  # arrived after a NACK for it
    nacks: int = 0  # sequence numbers asked for
    plis: int = 0
    overflows: int = 0  # gaps given up early because the hold buffer was full
    resets: int = 0  # the publisher changed SSRC or jumped in sequence
    malformed: int = 0


class Receiver:
    """One track's RTP input state (one SSRC at a time).

    ``wait``: how long packets after a gap are held for the missing one (the NACKed
    retransmission); ``capacity``: at most this many held (then the gap is given up).
    """

    def __init__(
        self,
        clock_rate: int,
        *,
        wait: float = 0.2,
        capacity: int = 2048,
        nack: bool = True,
        keyframes: bool = True,
    ) -> None:
        self.clock_rate = clock_rate
        self.wait = wait
        self.capacity = capacity
        self.nack = nack  # the publisher retransmits what we NACK (rtcp-fb nack negotiated)
        self.keyframes = keyframes  # video: PLI after a lost gap or when asked
        self.stats = ReceiverStats()
        self.ssrc: int | None = None
        self._reset()
        self._pli_wanted = False
        self._last_pli = -1e9
        self._lsr = 0
        self._lsr_at = 0.0

    def _reset(self) -> None:
        self._expected: int | None = None  # next sequence number to pass on
        self._held: dict[int, tuple[bytes, float]] = {}
        self._missing: dict[int, tuple[float, int]] = {}  # seq -> (last NACK time, count)
        self._nack_due: list[int] = []
        # RFC 3550 A.1/A.3 statistics
        self._base: int | None = None
        self._max_ext = 0
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter = 0.0
        self._transit: float | None = None

    # ---------------------------------------------------------------- input
    def push(self, packet: bytes, now: float) -> list[bytes]:
        """Take one RTP packet; the packets that can go on now, in sequence order."""
        try:
            b0, _b1, seq, ts, ssrc = _HDR.unpack_from(packet, 0)
        except struct.error:
            self.stats.malformed += 1
            return []
        if b0 & 0xC0 != 0x80:
            self.stats.malformed += 1
            return []
        out: list[bytes] = []
        if ssrc != self.ssrc:
            if self.ssrc is not None:
                self.stats.resets += 1
                out = self._flush_all()
                self._reset()
            self.ssrc = ssrc
        if self._expected is None:
            self._expected = self._base = self._max_ext = seq
        d = seq_delta(seq, self._expected)
        if d < 0:
            # older than what was passed on: a duplicate, or a retransmission too late
            self.stats.duplicates += 1
            return self._released(out)
        if d >= JUMP:
            # a jump (encoder restart, long outage): pass on what is held, start over here
            self.stats.resets += 1
            out += self._flush_all()
            self._reset()
            self._expected = self._base = self._max_ext = seq
            d = 0
        if seq in self._held:
            self.stats.duplicates += 1
            return self._released(out)
        self.stats.packets += 1
        self._count(seq, ts, now)
        if seq in self._missing:
            del self._missing[seq]
            self.stats.recovered += 1
        if d == 0:
            out.append(packet)
            self._expected = (seq + 1) & 0xFFFF
            out += self._drain()
            return self._released(out)
        # ahead of a gap: hold it, note what is missing
        self._held[seq] = (packet, now)
        if self.nack:
            s = self._expected
            for _ in range(min(d, self.capacity)):
                if s not in self._held and s not in self._missing:
                    self._missing[s] = (now, 1)
                    self._nack_due.append(s)
                s = (s + 1) & 0xFFFF
        if len(self._held) > self.capacity:
            self.stats.overflows += 1
            out += self._skip_gap()
        return self._released(out)

    def _released(self, out: list[bytes]) -> list[bytes]:
        self.stats.released += len(out)
        return out

    def _drain(self) -> list[bytes]:
        out = []
        held = self._held
        while self._expected in held:
            out.append(held.pop(self._expected)[0])  # type: ignore[arg-type]
            self._expected = (self._expected + 1) & 0xFFFF  # type: ignore[operator]
        return out

    def _skip_gap(self) -> list[bytes]:
        """Give up the gap before the oldest held packet; pass on what follows it."""
        assert self._expected is not None
        first = min(self._held, key=lambda s: seq_delta(s, self._expected))  # type: ignore[arg-type]
        lost = seq_delta(first, self._expected)
        self.stats.lost += lost
        s = self._expected
        for _ in range(lost):
            self._missing.pop(s, None)
            s = (s + 1) & 0xFFFF
        self._expected = first
        self._pli_wanted = True
        return self._drain()

    def _flush_all(self) -> list[bytes]:
        out = []
        while self._held:
            out += self._skip_gap()
        return out

    def _count(self, seq: int, ts: int, now: float) -> None:
        self._received += 1
        ext = self._max_ext + seq_delta(seq, self._max_ext & 0xFFFF)  # extended to 32 bits
        if ext > self._max_ext:
            self._max_ext = ext
        arrival = now * self.clock_rate
        transit = arrival - ts
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < self.clock_rate * 10:  # ignore timestamp jumps
                self._jitter += (d - self._jitter) / 16
        self._transit = transit

    def expire(self, now: float) -> list[bytes]:
        """Packets whose wait for an earlier one is over, in order (gaps given up)."""
        out: list[bytes] = []
        while self._held and self._expected is not None:
            first = min(self._held, key=lambda s: seq_delta(s, self._expected))  # type: ignore[arg-type]
            if now - self._held[first][1] < self.wait:
                break
            out += self._skip_gap()
        return self._released(out)

    def next_deadline(self) -> float | None:
        """When :meth:`expire` will next release something (None: nothing held)."""
        if not self._held:
            return None
        return min(t for _p, t in self._held.values()) + self.wait

    # ---------------------------------------------------------------- feedback
    def feedback_pending(self, now: float) -> bool:
        """Whether :meth:`feedback` has something to send now (new NACKs, a due PLI)."""
        if self._nack_due:
            return True
        return self._pli_wanted and self.keyframes and now - self._last_pli >= PLI_MIN_INTERVAL

    def request_keyframe(self) -> None:
        """Ask for a PLI with the next :meth:`feedback` (rate-limited)."""
        self._pli_wanted = True

    def on_sender_report(self, ntp: int, now: float) -> None:
        """The publisher's SR for this SSRC arrived (for LSR/DLSR in our reports)."""
        self._lsr = rtcp.ntp_middle32(ntp)
        self._lsr_at = now

    def feedback(self, sender_ssrc: int, now: float) -> list[bytes]:
        """NACK and PLI packets due now."""
        out: list[bytes] = []
        if self.ssrc is None:
            return out
        if self.nack:
            due = [s for s in self._nack_due if s in self._missing]
            self._nack_due = []
            retry_after = max(self.wait / (_NACK_RETRIES + 1), 0.02)
            for s, (t, n) in list(self._missing.items()):
                if n < _NACK_RETRIES and now - t >= retry_after and s not in due:
                    due.append(s)
                    self._missing[s] = (now, n + 1)
            for i in range(0, len(due), _MAX_NACK_BATCH):
                batch = due[i : i + _MAX_NACK_BATCH]
                out.append(build_nack(sender_ssrc, self.ssrc, batch))
            self.stats.nacks += len(due)
        if self._pli_wanted and self.keyframes and now - self._last_pli >= PLI_MIN_INTERVAL:
            self._pli_wanted = False
            self._last_pli = now
            self.stats.plis += 1
            out.append(build_pli(sender_ssrc, self.ssrc))
        return out

    def report_block(self, now: float) -> rtcp.ReportBlock | None:
        """A reception report block for this track (None before the first packet)."""
        if self.ssrc is None or self._base is None:
            return None
        expected = self._max_ext - self._base + 1
        lost = max(min(expected - self._received, 0x7FFFFF), -0x800000)
        exp_int = expected - self._expected_prior
        rec_int = self._received - self._received_prior
        self._expected_prior, self._received_prior = expected, self._received
        lost_int = exp_int - rec_int
        fraction = (lost_int << 8) // exp_int if exp_int > 0 and lost_int > 0 else 0
        dlsr = int((now - self._lsr_at) * 65536) if self._lsr else 0
        return rtcp.ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=min(fraction, 255),
            cumulative_lost=lost,
            highest_seq=self._max_ext & 0xFFFFFFFF,
            jitter=int(self._jitter),
            lsr=self._lsr,
            dlsr=max(dlsr, 0) & 0xFFFFFFFF,
        )
