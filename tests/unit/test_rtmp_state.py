"""rtmp.state: the RTMP connection machine (states, what each accepts, timeouts) without
sockets, and the server's stats() as the machine moves."""

from __future__ import annotations

import dataclasses

import pytest

from onvifcam.config import Config, LimitsConfig
from onvifcam.limits import ConnectionLimiter
from onvifcam.media.stream import StreamRegistry
from onvifcam.rtmp import amf0, chunk
from onvifcam.rtmp.chunk import Message
from onvifcam.rtmp.server import RtmpConnection, RtmpServer
from onvifcam.rtmp.state import ACCEPTS, Kind, RtmpSession, RtmpState, StateError

St = RtmpState
LIM = LimitsConfig()


def test_a_publish_goes_through_the_states() -> None:
    s = RtmpSession(now=0.0)
    assert s.state is St.HANDSHAKE and not s.accepts(Kind.COMMAND)
    s.handshake_done()
    assert s.accepts(Kind.COMMAND) and not s.accepts(Kind.MEDIA)
    s.connected()
    assert s.state is St.CONNECTED and s.refusal("publish") is None
    s.publish_accepted(1.0)
    assert s.publishing and s.accepts(Kind.MEDIA)
    assert s.refusal("publish") == (
        "NetStream.Publish.BadName",
        "this connection already publishes",
    )
    s.media_ready()
    s.media_ready()  # the media changed: published again
    assert s.state is St.PUBLISHING
    s.unpublished()  # FCUnpublish: the connection stays and may publish again
    assert s.state is St.CONNECTED and not s.accepts(Kind.MEDIA)
    s.publish_accepted(2.0)
    s.close()
    assert s.closed and not s.accepts(Kind.CONTROL)
    s.unpublished()  # nothing after close
    assert s.closed


def test_changes_the_table_does_not_allow() -> None:
    s = RtmpSession(now=0.0)
    with pytest.raises(StateError):
        s.publish_accepted(0.0)  # no commands before the handshake
    s.handshake_done()
    with pytest.raises(StateError):
        s.media_ready()  # media before a publish was accepted
    with pytest.raises(StateError):
        s.handshake_done()
    assert ACCEPTS[St.HANDSHAKE] == ACCEPTS[St.CLOSED] == frozenset()


def test_timeouts_in_the_order_the_tick_applies_them() -> None:
    lim = dataclasses.replace(
        LIM, handshake_timeout=5, publish_timeout=10, idle_timeout=20, media_timeout=15
    )
    s = RtmpSession(now=0.0)
    assert s.overdue(4.0, lim, has_video=False) is None
    late = s.overdue(6.0, lim, has_video=False)
    assert late is not None and late.kind == "handshake_timeout" and not late.unpublish
    assert late.reason == "no RTMP handshake within 5 s"
    s.handshake_done()
    late = s.overdue(11.0, lim, has_video=False)
    assert late is not None and late.reason == "no publish within 10 s"
    s.publish_accepted(3.0)
    s.received(17.0)
    late = s.overdue(19.0, lim, has_video=False)
    assert late is not None and late.kind == "media_timeout" and late.unpublish
    assert late.unpublish_reason == "no usable media"
    s.media_ready()
    s.video(18.0)
    assert s.overdue(19.0, lim, has_video=True) is None
    late = s.overdue(34.0, lim, has_video=True)
    assert late is not None and late.unpublish and late.reason == "no video for 15 s"
    assert s.overdue(34.0, lim, has_video=False) is None  # audio-only: no video timeout
    late = s.overdue(38.0, lim, has_video=True)
    assert late is not None and late.kind == "idle_timeout"
    s.close()
    assert s.overdue(100.0, lim, has_video=True) is None


def _server() -> RtmpServer:
    cfg = dataclasses.replace(Config(), limits=LimitsConfig())
    reg = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=10)
    return RtmpServer(cfg, reg, ConnectionLimiter(10, 0, 10))


def _command(*values: object, stream_id: int = 0) -> Message:
    return Message(chunk.AMF0_COMMAND, 0, stream_id, 3, amf0.encode(*values))


def test_server_counts_commands_states_and_refusals() -> None:
    srv = _server()
    conn = RtmpConnection(srv, "rtmp")
    srv.connections.add(conn)
    assert srv.stats()["sessions"]["handshake"] == 1
    conn.session.handshake_done()
    conn._handle([_command("connect", 1.0, {"app": "live"})], 0.0)
    conn._handle([_command("createStream", 2.0, None)], 0.0)
    conn._handle([_command("publish", 0.0, None, "cam", stream_id=1)], 0.0)
    st = srv.stats()
    assert st["sessions"]["awaiting_media"] == 1 and st["sessions"]["handshake"] == 0
    assert st["requests"]["connect"] == st["requests"]["publish"] == 1
    # A second publish on the same connection is refused by the state table.
    conn._handle([_command("publish", 0.0, None, "cam2", stream_id=1)], 0.0)
    st = srv.stats()
    assert st["refusals"]["badname"] == 1 and conn.closed
    assert st["requests"]["publish"] == 2 and st["connections"] == 1
    conn.connection_lost(None)
    assert srv.stats()["connections"] == 0
    assert srv.gate.holder("live/cam") is None  # its claim went with it
