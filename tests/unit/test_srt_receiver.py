"""The SRT receiver through the sans-I/O listener over a simulated link: TSBPD delivery,
ACK/ACKACK and RTT, NAK and retransmission, too-late drop, wrap-arounds, messages,
keepalive, idle timeout, shutdown, key refresh and hostile input."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onvifcam.srt import packet
from onvifcam.srt.caller import Caller
from onvifcam.srt.listener import ListenerSettings
from onvifcam.srt.packet import ControlType, build_control, build_data
from onvifcam.srt.receiver import ReceiverSettings
from tests.unit.srt_sim import T0, Sim, ctype_of, is_data, seq_of


def test_delivery_waits_for_the_latency_and_keeps_order() -> None:
    sim = Sim(caller=Caller(latency_ms=200, start=T0), delay=0.02)
    assert sim.connect() is not None
    started = sim.now
    sent = sim.stream(50, interval=0.01)
    sim.run_for(0.5)
    assert [p for _, p in sim.delivered] == sent
    first_at = sim.delivered[0][0]
    # sent at `started`, due 20 ms (link) + 200 ms (latency) later, within one tick
    assert started + 0.2 <= first_at <= started + 0.2 + 0.02 + 0.011
    assert sim.conn.receiver.latency == 0.2


def test_lost_packets_are_naked_retransmitted_and_delivered() -> None:
    lost_once: set[int] = set()

    def lose(d: bytes) -> bool:
        if is_data(d) and seq_of(d) % 7 == 3 and seq_of(d) not in lost_once:
            lost_once.add(seq_of(d))
            return True
        return False

    sim = Sim(delay=0.01, lose_up=lose)
    sim.connect()
    sent = sim.stream(100)
    sim.run_for(0.5)
    assert [p for _, p in sim.delivered] == sent
    st_ = sim.conn.receiver.stats
    assert st_.lost == len(lost_once) == st_.recovered and st_.dropped == 0
    assert sim.caller.retransmitted >= len(lost_once)
    assert sim.sent_of_type(ControlType.NAK)


def test_lost_naks_are_repeated_periodically() -> None:
    dropped_naks = []

    def lose_first_naks(d: bytes) -> bool:
        if ctype_of(d) == ControlType.NAK and len(dropped_naks) < 3:
            dropped_naks.append(d)
            return True
        return False

    lost_once: set[int] = set()

    def lose(d: bytes) -> bool:
        if is_data(d) and seq_of(d) == 1010 and not lost_once:
            lost_once.add(1010)
            return True
        return False

    sim = Sim(caller=Caller(latency_ms=500), delay=0.01, lose_up=lose, lose_down=lose_first_naks)
    sim.connect()
    sent = sim.stream(40)
    sim.run_for(1.0)
    assert [p for _, p in sim.delivered] == sent
    assert len(sim.sent_of_type(ControlType.NAK)) > 3


def test_a_packet_that_never_comes_is_dropped_and_acked_past() -> None:
    sim = Sim(delay=0.005, lose_up=lambda d: is_data(d) and seq_of(d) == 1005)
    sim.connect()
    sent = sim.stream(30)
    sim.run_for(0.5)
    assert [p for _, p in sim.delivered] == sent[:5] + sent[6:]
    rx = sim.conn.receiver
    assert rx.stats.dropped == 1 and not rx.loss
    assert rx.ack_seq == 1030  # the caller may forget it
    assert sim.caller.acked == 1030


def test_reordered_and_duplicated_packets() -> None:
    sim = Sim(delay=0.0)
    sim.connect()
    c = sim.caller
    payloads = [bytes([i]) * 188 for i in range(20)]
    datagrams = [c.data(p, sim.now) for p in payloads]
    order = list(range(20))
    random.Random(5).shuffle(order)
    for i in order:
        sim.up(datagrams[i], lose=False)
        sim.up(datagrams[i], lose=False)  # every packet twice
    sim.run_for(0.3)
    assert [p for _, p in sim.delivered] == payloads
    assert sim.conn.receiver.stats.duplicates >= 20  # (and the retransmissions NAKs asked for)


def test_rtt_from_ack_ackack() -> None:
    sim = Sim(delay=0.025)
    sim.connect()
    sim.stream(100, interval=0.01)
    rx = sim.conn.receiver
    assert rx.rtt_measured
    assert 40_000 <= rx.rtt <= 70_000  # 50 ms, within a tick
    acks = sim.sent_of_type(ControlType.ACK)
    full = [a for a in acks if packet.parse(a).info]  # type: ignore[union-attr]
    assert full and len(acks) >= len(full)


def test_light_ack_every_64_packets() -> None:
    sim = Sim()
    sim.connect()
    c = sim.caller
    for _ in range(130):  # a burst within one tick
        sim.up(c.data(bytes(188), sim.now), lose=False)
    sim.run_until(sim.now + 0.001)
    light = [a for a in sim.sent_of_type(ControlType.ACK) if not packet.parse(a).info]  # type: ignore[union-attr]
    assert len(light) == 2


def test_keepalive_idle_timeout_and_shutdown() -> None:
    sim = Sim(settings=ListenerSettings(receiver=ReceiverSettings(idle_timeout=3.0)))
    sim.connect()
    sim.stream(5)
    sim.caller.state = "deaf"  # the caller stops answering and sending
    sim.run_for(2.5)
    assert sim.sent_of_type(ControlType.KEEPALIVE)
    assert not sim.closed
    sim.run_for(1.0)
    assert [r for _, r in sim.closed] == ["no packet from the caller for 3 s (peer idle timeout)"]
    assert ctype_of(sim.down[-1]) == ControlType.SHUTDOWN
    assert not sim.listener.connections


def test_caller_shutdown_delivers_what_is_held() -> None:
    sim = Sim(caller=Caller(latency_ms=1000))
    sim.connect()
    sent = sim.stream(10)
    assert not sim.delivered  # still within the latency
    sim.up(sim.caller.shutdown(sim.now), lose=False)
    sim.run_for(0.01)
    assert [p for _, p in sim.delivered] == sent
    assert [r for _, r in sim.closed] == ["the caller closed the connection (SHUTDOWN)"]


def lose_once(*seqs: int) -> Callable[[bytes], bool]:
    """Loses the first transmission of each of ``seqs``."""
    pending = set(seqs)

    def lose(d: bytes) -> bool:
        if is_data(d) and seq_of(d) in pending:
            pending.discard(seq_of(d))
            return True
        return False

    return lose


def test_sequence_numbers_wrap() -> None:
    sim = Sim(caller=Caller(isn=0x7FFFFFF0), lose_up=lose_once(0x7FFFFFFF, 0, 2))
    sim.connect()
    sent = sim.stream(40)
    sim.run_for(0.5)
    assert [p for _, p in sim.delivered] == sent
    assert sim.conn.receiver.stats.recovered == 3


def test_timestamps_wrap() -> None:
    # the caller's clock started 71.5 minutes ago: its 32-bit microseconds wrap mid-stream
    sim = Sim(caller=Caller(start=T0 - (2**32 - 200_000) / 1e6))
    sim.connect()
    sent = sim.stream(100, interval=0.005)
    sim.run_for(0.4)
    assert [p for _, p in sim.delivered] == sent
    times = [t for t, _ in sim.delivered]
    assert times[-1] - times[0] < 0.6  # no stall of 71 minutes, no burst


def test_dropreq_gives_up_at_once() -> None:
    sim = Sim(caller=Caller(latency_ms=2000), lose_up=lambda d: is_data(d) and seq_of(d) == 1003)
    sim.connect()
    sim.stream(6)
    drop = build_control(
        ControlType.DROPREQ,
        sim.caller.ts(sim.now),
        sim.caller.peer_id,
        struct.pack("!II", 1003, 1003),
        info=4,
    )
    sim.up(drop, lose=False)
    sim.up(sim.caller.shutdown(sim.now), lose=False)
    sim.run_for(0.01)
    rx = sim.conn.receiver if sim.listener.connections else sim.closed[0][0].receiver
    assert rx.stats.dropped == 1 and len(sim.delivered) == 5


def test_multi_packet_messages_are_delivered_whole() -> None:
    sim = Sim()
    sim.connect()
    c = sim.caller

    def send(seq: int, pp: int, msgno: int, body: bytes) -> None:
        sim.up(
            build_data(seq, body, c.ts(sim.now), c.peer_id, msgno=msgno, position=pp), lose=False
        )

    send(1000, packet.PP_FIRST, 1, b"a")
    send(1001, packet.PP_MIDDLE, 1, b"b")
    send(1002, packet.PP_LAST, 1, b"c")
    send(1003, packet.PP_SOLO, 2, b"d")
    send(1004, packet.PP_FIRST, 3, b"e")  # its end never comes...
    send(1006, packet.PP_SOLO, 4, b"g")  # ...1005 is lost for good
    sim.run_for(0.5)
    assert [p for _, p in sim.delivered] == [b"abc", b"d", b"g"]


def test_drift_correction_follows_a_fast_sender_clock() -> None:
    settings_ = ListenerSettings(receiver=ReceiverSettings(drift_samples=100, max_drift_us=2000))
    sim = Sim(settings=settings_, delay=0.01)
    sim.connect()
    c = sim.caller
    skew = 0.002  # the caller's clock runs 0.2 % fast: 24 ms too far ahead after 12 s
    base = sim.now
    plain = c.ts
    c.ts = lambda now: plain(now) + int((now - base) * skew * 1e6)  # type: ignore[method-assign]
    sent_at = {}
    for i in range(1200):
        sent_at[i.to_bytes(4, "big")] = sim.now
        sim.up(c.data(i.to_bytes(4, "big"), sim.now))
        sim.run_for(0.01)
    rx = sim.conn.receiver
    assert rx.stats.drift_corrections >= 3 and rx.stats.dropped == 0
    # the last packets still wait about the latency, not latency + 24 ms
    t, p = sim.delivered[-1]
    assert t - sent_at[p] - 0.01 < rx.latency + 0.002 + 0.011


def test_key_refresh_over_user_control_packets() -> None:
    sim = Sim(caller=Caller(passphrase="refresh passphrase"), passphrase="refresh passphrase")
    sim.connect()
    first = sim.stream(5)
    sim.up(sim.caller.refresh_key(sim.now), lose=False)
    sim.run_for(0.02)
    assert sim.caller.kmrsp and len(sim.caller.kmrsp[0]) > 4  # echoed: accepted
    second = sim.stream(5)
    sim.run_for(0.3)
    assert [p for _, p in sim.delivered] == first + second
    assert sim.conn.receiver.stats.undecryptable == 0


def test_packet_with_an_unknown_key_is_skipped() -> None:
    sim = Sim(caller=Caller(passphrase="refresh passphrase"), passphrase="refresh passphrase")
    sim.connect()
    sent = sim.stream(3)
    sim.caller.enc.refresh()  # type: ignore[union-attr]  # ...without telling the listener
    sim.stream(2)
    sim.run_for(0.3)
    assert [p for _, p in sim.delivered] == sent
    assert sim.conn.receiver.stats.undecryptable == 2


def test_packets_beyond_the_buffer_are_not_stored() -> None:
    sim = Sim(settings=ListenerSettings(receiver=ReceiverSettings(buffer_packets=64)))
    sim.connect()
    c = sim.caller
    sim.up(build_data(1000 + 64, b"x", c.ts(sim.now), c.peer_id), lose=False)
    sim.up(build_data(1000 + 10**6, b"x", c.ts(sim.now), c.peer_id), lose=False)
    sim.run_for(0.001)
    rx = sim.conn.receiver
    assert rx.stats.overflow == 2 and not rx.buf and not rx.loss


def test_encrypted_packets_on_a_clear_connection_are_skipped() -> None:
    sim = Sim()
    sim.connect()
    c = sim.caller
    sim.up(build_data(1000, b"x" * 10, c.ts(sim.now), c.peer_id, key=packet.KK_EVEN), lose=False)
    sim.up(c.data(b"y" * 10, sim.now), lose=False)  # seq 1000 again: a duplicate, ignored
    sim.up(build_data(1001, b"z" * 10, c.ts(sim.now), c.peer_id), lose=False)
    sim.run_for(0.3)
    assert [p for _, p in sim.delivered] == [b"z" * 10]
    assert sim.conn.receiver.stats.undecryptable == 1


# ---------------------------------------------------------------------------- properties
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    losses=st.sets(st.integers(0, 74), max_size=25),  # a loss is noticed by what follows
    twice=st.sets(st.integers(0, 74), max_size=10),
    delay_ms=st.integers(0, 30),
    isn=st.sampled_from([0, 1000, 0x7FFFFFC0]),
)
def test_loss_within_the_latency_budget_loses_nothing(
    losses: set[int], twice: set[int], delay_ms: int, isn: int
) -> None:
    """Each first transmission in ``losses`` is lost (in ``twice`` also the first
    retransmission): with 300 ms of latency and RTT <= 60 ms every payload arrives once,
    in order."""
    seen: dict[int, int] = {}

    def lose(d: bytes) -> bool:
        if not is_data(d):
            return False
        i = (seq_of(d) - isn) & 0x7FFFFFFF
        n = seen.get(i, 0)
        seen[i] = n + 1
        return (n == 0 and i in losses) or (n == 1 and i in losses and i in twice)

    sim = Sim(caller=Caller(isn=isn, latency_ms=300), delay=delay_ms / 1000, lose_up=lose)
    sim.connect()
    sent = sim.stream(80, interval=0.004, size=188)
    sim.run_for(1.0)
    assert [p for _, p in sim.delivered] == sent
    assert sim.conn.receiver.stats.dropped == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=0, max_size=200), max_size=20), st.booleans())
def test_arbitrary_datagrams_never_raise_or_break_a_connection(
    junk: list[bytes], to_conn: bool
) -> None:
    sim = Sim()
    conn = sim.connect()
    assert conn is not None
    for d in junk:
        if to_conn and len(d) >= 16:  # aim it at the live connection's socket id
            d = d[:12] + conn.id.to_bytes(4, "big") + d[16:]
        sim.up(d, lose=False)
    sim.run_for(0.01)
    before = len(sim.delivered)
    sent = sim.stream(5)
    sim.run_for(0.3)
    if sim.listener.connections:  # junk may carry a SHUTDOWN; otherwise nothing changed
        delivered = [p for _, p in sim.delivered[before:]]
        assert (
            delivered == sent
            or sim.conn.receiver.stats.belated + sim.conn.receiver.stats.duplicates > 0
        )


@pytest.mark.parametrize("size", [16, 17, 64, 1472])
def test_control_packets_of_every_type_with_junk_bodies(size: int) -> None:
    sim = Sim()
    conn = sim.connect()
    assert conn is not None
    rnd = random.Random(size)
    for ctype in [*ControlType, 9, 0x1234]:
        for sub in (0, 3, 4, 0xFFFF):
            body = bytes(rnd.randrange(256) for _ in range(size - 16))
            sim.up(
                build_control(ctype, 0, conn.id, body, subtype=sub, info=rnd.randrange(2**32)),
                lose=False,
            )
    sim.run_for(0.05)
