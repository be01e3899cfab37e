"""The sans-I/O SRT listener: cookies, per-IP handshake rate, connection cap, passphrases,
admission, repeated conclusions, foreign sources; and the [srt] configuration."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onvifcam.config import ConfigError, from_dict
from onvifcam.limits import ConnectionLimiter
from onvifcam.srt import packet
from onvifcam.srt.caller import Caller
from onvifcam.srt.crypto import Encryptor
from onvifcam.srt.handshake import RejectCode
from onvifcam.srt.listener import ListenerSettings
from onvifcam.srt.packet import (
    ControlType,
    Handshake,
    HsExt,
    HsType,
    build_control,
    build_data,
    encode_words,
)
from tests.unit.srt_sim import ADDR, Sim, ctype_of, refuse

PASS = "correct horse battery"


def handshakes(sim: Sim) -> list[Handshake]:
    out = []
    for d in sim.down:
        if ctype_of(d) == ControlType.HANDSHAKE:
            pkt = packet.parse(d)
            out.append(Handshake.parse(pkt.cif))  # type: ignore[union-attr]
    return out


def test_connect_and_publish() -> None:
    sim = Sim()
    conn = sim.connect()
    assert conn is not None and sim.caller.state == "connected"
    assert conn.path == "cam1" and conn.description == "srt://192.0.2.1:40000"
    assert sim.caller.peer_id == conn.id
    sent = sim.stream(3)
    sim.run_for(0.3)
    assert [p for _, p in sim.delivered] == sent


def test_no_state_before_a_valid_cookie() -> None:
    sim = Sim()
    c = sim.caller
    c.cookie = 12345  # never asked for one
    sim.up(c.conclusion(sim.now), lose=False)
    sim.run_for(0.01)
    assert not sim.down and not sim.listener.connections
    assert sim.listener.stats.bad_cookie == 1


def test_handshakes_per_ip_are_rate_limited() -> None:
    sim = Sim(settings=ListenerSettings(handshakes_per_ip_per_s=1.0, handshake_burst=3))
    for i in range(6):
        sim.listener.datagram(Caller(socket_id=i + 1).induction(0), ADDR, sim.now)
    sim.listener.datagram(Caller().induction(0), ("192.0.2.2", 1), sim.now)
    out = sim.listener.take()
    assert len(out.send) == 4  # a burst of 3 from the first address, 1 from the other
    assert sim.listener.stats.rate_limited == 3
    sim.listener.datagram(Caller().induction(0), ADDR, sim.now + 1.0)  # one token refilled
    assert len(sim.listener.take().send) == 1


def test_rate_table_stays_bounded() -> None:
    sim = Sim(settings=ListenerSettings(handshakes_per_ip_per_s=0.001, handshake_burst=1))
    for i in range(5000):
        sim.listener.datagram(Caller().induction(0), (f"10.0.{i // 250}.{i % 250}", 1), sim.now)
    assert len(sim.listener.buckets.table) <= 4096


def test_repeated_conclusion_gets_the_same_answer_and_one_connection() -> None:
    sim = Sim()
    sim.connect()
    again = sim.caller.conclusion(sim.now)
    sim.up(again, lose=False)
    sim.run_for(0.01)
    hs = handshakes(sim)
    assert [h.hs_type for h in hs] == [HsType.INDUCTION, HsType.CONCLUSION, HsType.CONCLUSION]
    assert hs[1] == hs[2]
    assert len(sim.listener.connections) == 1 and len(sim.opened) == 1


def test_lost_conclusion_answer_is_repeated() -> None:
    answers: list[bytes] = []

    def lose_first_conclusion(d: bytes) -> bool:
        if ctype_of(d) == ControlType.HANDSHAKE and len(d) > 64 and not answers:
            answers.append(d)
            return True
        return False

    sim = Sim(lose_down=lose_first_conclusion)
    sim.connect()
    assert sim.caller.state == "induced"
    sim.up(sim.caller.conclusion(sim.now), lose=False)  # libsrt repeats it every 250 ms
    sim.run_for(0.01)
    assert sim.caller.state == "connected" and len(sim.opened) == 1


@pytest.mark.parametrize(
    ("server", "client", "code"),
    [
        (PASS, PASS, None),
        (PASS, "a wrong passphrase", RejectCode.BADSECRET),
        (PASS, "", RejectCode.UNSECURE),
        ("", PASS, RejectCode.UNSECURE),
    ],
)
def test_passphrases(server: str, client: str, code: RejectCode | None) -> None:
    sim = Sim(caller=Caller(passphrase=client, key_len=32), passphrase=server)
    conn = sim.connect()
    if code is None:
        assert conn is not None
        sent = sim.stream(4)
        sim.run_for(0.3)
        assert [p for _, p in sim.delivered] == sent
    else:
        assert conn is None and sim.caller.state == "rejected"
        assert sim.caller.reject_code == code
        assert [r.code for r in sim.rejected] == [code]
        assert sim.rejected[0].streamid == "publish:cam1"


def test_read_mode_is_refused_with_bad_mode() -> None:
    sim = Sim(caller=Caller(streamid="read:cam1"))
    assert sim.connect() is None
    assert sim.caller.reject_code == RejectCode.X_BAD_MODE
    assert "read it over RTSP" in sim.rejected[0].reason


def test_application_rejection_travels_as_1000_plus_code() -> None:
    sim = Sim(admit=refuse(RejectCode.X_CONFLICT, "busy"))
    assert sim.connect() is None
    assert handshakes(sim)[-1].hs_type == 2409
    assert sim.rejected[0].reason == "busy" and not sim.listener.connections


def test_connection_cap() -> None:
    sim = Sim(settings=ListenerSettings(max_connections=1))
    assert sim.connect() is not None
    second = Sim(settings=sim.settings)
    second.listener = sim.listener
    second.caller = Caller(socket_id=99)
    assert second.connect() is None
    assert second.caller.reject_code == RejectCode.RESOURCE


def test_shared_limiter_counts_and_releases() -> None:
    limiter = ConnectionLimiter(1, 0.0, 1)
    sim = Sim()
    sim.listener.limiter = limiter
    sim.connect()
    assert limiter.active == 1
    assert limiter.unauthenticated == 0  # an admitted publish counts as authenticated
    sim.up(sim.caller.shutdown(sim.now), lose=False)
    sim.run_for(0.01)
    assert limiter.active == 0


def test_packets_from_another_address_are_ignored() -> None:
    sim = Sim()
    conn = sim.connect()
    assert conn is not None
    d = sim.caller.data(b"spoofed", sim.now)
    sim.listener.datagram(d, ("192.0.2.99", 40000), sim.now)
    sim.listener.datagram(sim.caller.shutdown(sim.now), ("192.0.2.99", 40000), sim.now)
    assert sim.listener.stats.wrong_source == 2 and sim.listener.connections


def test_close_all_sends_shutdown() -> None:
    sim = Sim()
    sim.connect()
    sim.listener.close_all("server shutting down", sim.now)
    out = sim.listener.take()
    assert [ctype_of(d) for d, _ in out.send] == [ControlType.SHUTDOWN]
    assert [r for _, r in out.closed] == ["server shutting down"]


# ---------------------------------------------------------------------------- config
def test_srt_config_defaults_and_path_passphrase() -> None:
    cfg = from_dict(
        {
            "srt": {"port": 0, "passphrase": "global passphrase"},
            "paths": {"cam2": {"srt_passphrase": "path passphrase"}},
        }
    )
    assert (cfg.srt.port, cfg.srt.latency_ms, cfg.srt.pbkeylen) == (0, 120, 16)
    assert cfg.path_policy("cam2").srt_passphrase == "path passphrase"
    assert cfg.path_policy("other").srt_passphrase == ""
    longest = from_dict({"srt": {"passphrase": "y" * 79}, "defaults": {"srt_passphrase": "z" * 10}})
    assert len(longest.srt.passphrase) == 79, "libsrt's longest passphrase is accepted"


@pytest.mark.parametrize(
    ("table", "why"),
    [
        ({"srt": {"passphrase": "short"}}, r"\[srt\] passphrase must be 10 to 79"),
        ({"srt": {"passphrase": "y" * 80}}, r"\[srt\] passphrase must be 10 to 79 .* got 80"),
        ({"defaults": {"srt_passphrase": "y" * 80}}, r"\[defaults\] srt_passphrase must be 10"),
        ({"paths": {"x": {"srt_passphrase": "y" * 80}}}, "srt_passphrase must be 10 to 79"),
        ({"srt": {"pbkeylen": 20}}, "pbkeylen must be 16, 24 or 32"),
        ({"srt": {"latency_ms": 5}}, "latency_ms must be 20"),
        ({"srt": {"latency_ms": 3000, "max_latency_ms": 2000}}, "latency_ms must be 20"),
        ({"srt": {"max_latency_ms": 70000}}, "max_latency_ms must be 1..65535"),
        ({"srt": {"recv_buffer_packets": 8}}, "recv_buffer_packets"),
        ({"srt": {"max_connections": 0}}, "max_connections"),
        ({"srt": {"peer_idle_timeout_ms": 10}}, "peer_idle_timeout_ms"),
        ({"srt": {"port": 70000}}, "port 70000"),
        ({"srt": {"latencyms": 1}}, "did you mean 'latency_ms'"),
    ],
)
def test_srt_config_errors(table: dict, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        from_dict(table)


# ---------------------------------------------------------------------------- fuzz
_ext = st.tuples(
    st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 0x7FFF]),
    st.one_of(
        st.binary(max_size=64),
        st.just(HsExt(0x010501, 0x3F, 120, 120).pack()),
        st.builds(lambda t: encode_words(t), st.text(max_size=40)),
        st.builds(
            lambda k: Encryptor("fuzz passphrase", k).key_material().pack(),
            st.sampled_from([16, 24, 32]),
        ),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from([0, 4, 5, 6, 0xFFFFFFFF]),
    hs_type=st.sampled_from([0, 1, 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 1003, 2401, 77]),
    extension=st.integers(0, 0xFFFF),
    good_cookie=st.booleans(),
    exts=st.lists(_ext, max_size=6),
    tail=st.binary(max_size=8),
)
def test_arbitrary_handshakes_never_raise(
    version: int, hs_type: int, extension: int, good_cookie: bool, exts: list, tail: bytes
) -> None:
    """Handshakes with any fields and extension blocks (valid or not): the listener answers,
    refuses or ignores them, and raises nothing."""
    sim = Sim(passphrase="fuzz passphrase")
    lst = sim.listener
    cookie = lst.responder.cookie(ADDR[0], ADDR[1], sim.now) if good_cookie else 7
    hs = Handshake(
        version, 0, extension, 5, 1500, 8192, hs_type, 99, cookie, bytes(16), tuple(exts)
    )
    lst.datagram(build_control(ControlType.HANDSHAKE, 0, 0, hs.pack() + tail), ADDR, sim.now)
    out = lst.take()
    for data, addr in out.send:
        assert addr == ADDR and packet.parse(data).dst == 99
    for conn in out.opened:  # whatever was accepted works like any connection
        lst.datagram(build_data(5, b"x" * 188, 0, conn.id), ADDR, sim.now)
        lst.tick(sim.now + 1.0)


def test_an_encrypted_conclusion_waits_for_its_key_derivation_off_the_listener() -> None:
    """The listener never runs PBKDF2 itself: the conclusion is parked with a Derive job;
    repeats of it are ignored meanwhile; the connection opens when the result comes."""
    sim = Sim(caller=Caller(passphrase=PASS, key_len=16), passphrase=PASS)
    lst = sim.listener
    c = sim.caller
    lst.datagram(c.induction(sim.now), ADDR, sim.now)
    for reply in c.receive(lst.take().send[0][0], sim.now):
        lst.datagram(reply, ADDR, sim.now)
    out = lst.take()
    assert not out.send and not out.opened and len(out.derive) == 1
    lst.datagram(c.conclusion(sim.now), ADDR, sim.now)  # libsrt repeats it every 250 ms
    assert not lst.take().derive and len(lst.deriving) == 1
    job = out.derive[0]
    lst.derived(job, job.run(), sim.now)
    done = lst.take()
    assert len(done.opened) == 1 and done.send and not lst.deriving
    assert lst.stats.derived == 1


def test_encrypted_conclusions_waiting_at_once_are_bounded() -> None:
    settings = ListenerSettings(max_deriving=2, handshakes_per_ip_per_s=0)
    sim = Sim(settings=settings, passphrase=PASS)
    lst = sim.listener
    for i in range(3):
        c = Caller(passphrase=PASS, socket_id=100 + i, start=sim.now)
        lst.datagram(c.induction(sim.now), ADDR, sim.now)
        for reply in c.receive(lst.take().send[0][0], sim.now):
            lst.datagram(reply, ADDR, sim.now)
        out = lst.take()
        if i < 2:
            assert len(out.derive) == 1
        else:
            assert not out.derive and [r.code for r in out.rejected] == [RejectCode.RESOURCE]
            assert "try again" in out.rejected[0].reason
    assert len(lst.deriving) == 2


def test_a_wrong_passphrase_found_off_the_loop_is_rejected() -> None:
    sim = Sim(caller=Caller(passphrase="not the passphrase", key_len=16), passphrase=PASS)
    lst = sim.listener
    c = sim.caller
    lst.datagram(c.induction(sim.now), ADDR, sim.now)
    for reply in c.receive(lst.take().send[0][0], sim.now):
        lst.datagram(reply, ADDR, sim.now)
    (job,) = lst.take().derive
    lst.derived(job, job.run(), sim.now)
    out = lst.take()
    assert not out.opened and [r.code for r in out.rejected] == [RejectCode.BADSECRET]
    lst.derived(job, job.run(), sim.now)  # a late duplicate result changes nothing
    assert not lst.take().rejected
