"""rtsp.state: the connection, session and pipeline machines, and the deferred reply as
the server carries it out, driven without sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onvifcam.config import Config, RtspConfig
from onvifcam.limits import ConnectionLimiter
from onvifcam.media.sdp import SessionDescription
from onvifcam.media.stream import StreamRegistry
from onvifcam.rtsp.server import RtspConnection, RtspServer
from onvifcam.rtsp.state import (
    ALLOWED,
    ConnMachine,
    ConnMode,
    Overflow,
    Pipeline,
    Role,
    SessionMachine,
    SessionState,
    StateError,
)

S = SessionState


# ---------------------------------------------------------------- connection


def test_connection_modes_follow_the_table() -> None:
    m = ConnMachine()
    assert m.mode is ConnMode.NEW
    m.to(ConnMode.HTTP_HEAD)
    m.to(ConnMode.HTTP_POST)
    with pytest.raises(StateError):
        m.to(ConnMode.RTSP)  # a POST half never carries RTSP itself
    m.to(ConnMode.CLOSED)
    assert m.closed
    with pytest.raises(StateError):
        m.to(ConnMode.RTSP)
    refused = ConnMachine()
    refused.to(ConnMode.REFUSED)
    with pytest.raises(StateError):
        refused.to(ConnMode.RTSP)


# ---------------------------------------------------------------- session


def test_reading_session_setup_play_pause_teardown() -> None:
    m = SessionMachine(Role.PLAY)
    assert m.check("PLAY") is not None and m.check("PLAY").reason == "PLAY before SETUP"
    m.set_up()
    assert m.state is S.READY and not m.active
    m.set_up()  # a second track
    m.play()
    assert m.state is S.PLAYING and m.active
    assert m.check("PLAY") is None  # a second PLAY is answered 200
    refusal = m.check("SETUP")
    assert refusal is not None and (refusal.status, refusal.reason) == (455, "SETUP while playing")
    assert m.check("RECORD") is not None and m.check("RECORD").reason == "RECORD without ANNOUNCE"
    m.pause()
    assert m.state is S.READY
    m.close()
    assert m.state is S.CLOSED and m.check("OPTIONS").status == 454


def test_recording_session_announce_setup_record() -> None:
    m = SessionMachine(Role.RECORD)
    assert m.check("RECORD").reason == "RECORD before SETUP"
    assert m.check("PLAY").reason == "PLAY on a recording session"
    m.set_up()
    m.record()
    assert m.state is S.RECORDING and m.active
    assert m.check("SETUP").reason == "SETUP after RECORD"
    assert m.check("RECORD") is None
    m.pause()  # a publisher's PAUSE changes nothing
    assert m.state is S.RECORDING
    with pytest.raises(StateError):
        m.set_up()


def test_every_state_allows_the_stateless_methods() -> None:
    for (role, state), allowed in ALLOWED.items():
        assert {"OPTIONS", "GET_PARAMETER", "SET_PARAMETER", "TEARDOWN"} <= allowed, (role, state)
        m = SessionMachine(role)
        m.state = state
        for method in ("PLAY", "RECORD", "SETUP", "PAUSE", "DESCRIBE"):
            refusal = m.check(method)
            assert (refusal is None) == (method in allowed), (role, state, method)
            if refusal is not None:
                assert refusal.status == 455 and refusal.reason


# ---------------------------------------------------------------- pipeline


def test_pipeline_defers_queues_and_resumes_in_order() -> None:
    p: Pipeline[str] = Pipeline(max_queued=2)
    assert p.submit("OPTIONS 1") == ["OPTIONS 1"]
    assert p.submit("DESCRIBE 2") == ["DESCRIBE 2"]
    p.defer("DESCRIBE 2", "cam", deadline=10.0)
    assert p.busy
    assert p.submit("OPTIONS 3") == [] and p.submit("SETUP 4") == []
    with pytest.raises(Overflow, match="max_queued_requests"):
        p.submit("OPTIONS 5")
    assert p.published("other") is None and p.expire(9.9) is None  # not yet
    w = p.published("cam")
    assert w is not None and w.request == "DESCRIBE 2" and not p.busy
    assert p.next_queued() == "OPTIONS 3"
    assert p.next_queued() == "SETUP 4"
    assert p.next_queued() is None
    assert (p.deferred, p.resumed, p.expired, p.cancelled) == (1, 1, 0, 0)


def test_pipeline_expires_and_a_queued_request_can_defer_again() -> None:
    p: Pipeline[str] = Pipeline(max_queued=4)
    p.defer("DESCRIBE a", "a", deadline=5.0)
    p.submit("DESCRIBE b")
    p.submit("OPTIONS")
    w = p.expire(5.0)
    assert w is not None and w.path == "a" and p.expired == 1
    assert p.next_queued() == "DESCRIBE b"
    p.defer("DESCRIBE b", "b", deadline=12.0)
    assert p.next_queued() is None  # OPTIONS waits behind the new deferral
    with pytest.raises(StateError):
        p.defer("x", "c", deadline=1.0)
    p.cancel()  # the client went
    assert not p.busy and p.next_queued() is None and p.cancelled == 1


# ---------------------------------------------------------------- the server carries it out


class _Transport(asyncio.Transport):
    """Collects what the server writes (no socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 554)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0

    def replies(self) -> list[str]:
        return re.findall(r"(?m)^RTSP/1\.0 [^\r]*", self.out.decode())


class _Pub:
    description = "on-demand test source"

    def kick(self, reason: str) -> None:
        pass


_SDP = "v=0\r\ns=t\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"


def _server(timeout: float = 10.0, queued: int = 16) -> tuple[RtspServer, list[str]]:
    cfg = dataclasses.replace(
        Config(),
        rtsp=RtspConfig(udp=False, on_demand_timeout=timeout, max_queued_requests=queued),
    )
    registry = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15.0, max_streams=8)
    asked: list[str] = []

    def hook(path: str) -> bool:
        asked.append(path)
        return path.startswith("ondemand/")

    registry.add_demand_hook(hook)
    return RtspServer(cfg, registry, ConnectionLimiter(64, 0.0, 64)), asked


def _connect(server: RtspServer) -> tuple[RtspConnection, _Transport]:
    conn = RtspConnection(server)
    tx = _Transport()
    conn.connection_made(tx)
    return conn, tx


def _req(method: str, path: str, cseq: int) -> bytes:
    return f"{method} rtsp://127.0.0.1/{path} RTSP/1.0\r\nCSeq: {cseq}\r\n\r\n".encode()


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_describe_waits_for_the_on_demand_source_and_queued_requests_follow() -> None:
    async def run() -> None:
        server, asked = _server()
        conn, tx = _connect(server)
        conn.data_received(_req("DESCRIBE", "ondemand/cam", 1))
        assert tx.out == b"" and asked == ["ondemand/cam"]
        # The connection keeps reading: these wait behind the DESCRIBE, in order.
        conn.data_received(_req("OPTIONS", "ondemand/cam", 2) + _req("DESCRIBE", "nothing", 3))
        assert tx.out == b"" and server.stats()["waiting"] == 1
        stream = server.registry.get_or_create("ondemand/cam")
        stream.publish(_Pub(), SessionDescription.parse(_SDP))
        assert tx.out == b""  # answered on the next loop turn, not inside publish()
        await _turns()
        replies = tx.replies()
        assert replies[0] == "RTSP/1.0 200 OK" and "CSeq: 1" in tx.out.decode()
        assert "m=video" in tx.out.decode()
        assert replies[-2:] == [
            "RTSP/1.0 200 OK",
            "RTSP/1.0 404 Not Found: no stream is published at 'nothing'",
        ]
        st = server.stats()
        assert st["deferred"] == {"deferred": 1, "resumed": 1, "expired": 0, "cancelled": 0}
        assert st["waiting"] == 0 and st["requests"]["DESCRIBE"] == 2
        assert st["refusals"]["not_found"] == 1
        assert st["bytes_in"] > 0 and st["bytes_out"] == len(tx.out)

    asyncio.run(run())


def test_a_placeholder_publish_answers_a_waiting_describe() -> None:
    """A transcoded sub stream being remade is published by a placeholder (no
    StreamPublished event): the DESCRIBE waiting for it is answered all the same."""

    class _Stand(_Pub):
        placeholder = True

    async def run() -> None:
        server, _asked = _server()
        conn, tx = _connect(server)
        conn.data_received(_req("DESCRIBE", "ondemand/sub", 1))
        assert tx.out == b""
        server.registry.get_or_create("ondemand/sub").publish(
            _Stand(), SessionDescription.parse(_SDP)
        )
        await _turns()
        assert tx.replies() == ["RTSP/1.0 200 OK"] and "m=video" in tx.out.decode()

    asyncio.run(run())


def test_describe_times_out_with_the_reason_and_the_key() -> None:
    async def run() -> None:
        server, _asked = _server(timeout=0.05)
        conn, tx = _connect(server)
        conn.data_received(_req("DESCRIBE", "ondemand/late", 7) + _req("OPTIONS", "x", 8))
        assert tx.out == b""
        for _ in range(100):
            if b"CSeq: 8" in tx.out:
                break
            await asyncio.sleep(0.02)
        assert tx.replies() == [
            "RTSP/1.0 503 Service Unavailable: on-demand source for 'ondemand/late' did not "
            "start within 0.05 s ([rtsp] on_demand_timeout)",
            "RTSP/1.0 200 OK",
        ]
        st = server.stats()
        assert st["deferred"]["expired"] == 1 and st["refusals"]["on_demand_timeout"] == 1

    asyncio.run(run())


def test_disconnect_cancels_the_wait_and_too_many_queued_requests_close() -> None:
    async def run() -> None:
        server, _asked = _server(queued=2)
        conn, tx = _connect(server)
        conn.data_received(_req("DESCRIBE", "ondemand/a", 1))
        conn.connection_lost(None)
        assert server.stats()["waiting"] == 0
        assert server.stats()["deferred"]["cancelled"] == 1
        server.registry.get_or_create("ondemand/a").publish(_Pub(), SessionDescription.parse(_SDP))
        await _turns()
        assert tx.out == b""  # nobody to answer
        conn, tx = _connect(server)
        conn.data_received(b"".join(_req("OPTIONS", "ondemand/b", n) for n in (2, 3, 4)))
        conn.data_received(_req("DESCRIBE", "ondemand/b", 5))
        conn.data_received(b"".join(_req("OPTIONS", "ondemand/b", n) for n in (6, 7, 8)))
        assert tx.replies()[:3] == ["RTSP/1.0 200 OK"] * 3
        assert tx.replies()[3].startswith("RTSP/1.0 503 Service Unavailable: more than 2 requests")
        assert tx.closing and server.stats()["refusals"]["queue_full"] == 1
        conn.connection_lost(None)

    asyncio.run(run())


def test_a_path_no_hook_serves_is_404_at_once() -> None:
    async def run() -> None:
        server, asked = _server()
        conn, tx = _connect(server)
        conn.data_received(_req("DESCRIBE", "plain/cam", 1))
        assert tx.replies() == ["RTSP/1.0 404 Not Found: no stream is published at 'plain/cam'"]
        assert asked == ["plain/cam"] and server.stats()["deferred"]["deferred"] == 0

    asyncio.run(run())


_METHODS = ["SETUP", "PLAY", "PAUSE", "RECORD", "TEARDOWN", "OPTIONS", "DESCRIBE"]


@given(
    role=st.sampled_from(list(Role)),
    methods=st.lists(st.sampled_from(_METHODS), max_size=30),
)
@settings(max_examples=300, deadline=None)
def test_property_what_check_allows_can_be_applied(role: Role, methods: list[str]) -> None:
    # Whatever a client sends, a method the table allows moves the machine without error,
    # and one it refuses leaves the state as it was.
    m = SessionMachine(role)
    apply = {"SETUP": m.set_up, "PLAY": m.play, "PAUSE": m.pause, "RECORD": m.record}
    for method in methods:
        before = m.state
        refusal = m.check(method)
        if refusal is not None:
            assert refusal.status in (454, 455) and m.state is before
            continue
        if method == "TEARDOWN":
            m.close()
        elif method in apply:
            apply[method]()
        assert m.state in ALLOWED_STATES[role] or m.state is S.CLOSED


ALLOWED_STATES = {r: {st_ for (r2, st_) in ALLOWED if r2 is r} for r in Role}
