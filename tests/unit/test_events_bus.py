"""The event bus (onvifcam/events.py): typed synchronous subscribers, bounded drop-oldest
queues, the StreamRegistry adapter."""

from __future__ import annotations

import asyncio
import logging

import pytest

from onvifcam.events import (
    CameraAdded,
    Event,
    EventBus,
    EventQueue,
    MotionChanged,
    StreamInfoChanged,
    StreamPublished,
    StreamUnpublished,
    stream_listener,
)
from onvifcam.media.sdp import SessionDescription
from onvifcam.media.stream import StreamRegistry

SDP = (
    "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=t\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n"
)


class Pub:
    description = "rtsp 127.0.0.1:5000"

    def kick(self, reason: str) -> None:
        """Nothing to close."""


def test_events_are_frozen_and_stamped() -> None:
    ev = MotionChanged("cam", True)
    assert ev.source == "VideoSource_1" and ev.at > 0
    with pytest.raises(AttributeError):
        ev.state = False  # type: ignore[misc]
    assert MotionChanged("cam", True, at=1.0) == MotionChanged("cam", True, at=1.0)


def test_subscribers_by_kind_in_order() -> None:
    bus = EventBus()
    seen: list[tuple[str, Event]] = []
    bus.subscribe(lambda e: seen.append(("all", e)))
    unsubscribe = bus.subscribe(lambda e: seen.append(("motion", e)), MotionChanged)
    bus.publish(CameraAdded("a"))
    bus.publish(MotionChanged("a", True))
    assert [k for k, _ in seen] == ["all", "all", "motion"]
    unsubscribe()
    bus.publish(MotionChanged("a", False))
    assert [k for k, _ in seen][-1] == "all"
    assert bus.stats()["published"] == 3


def test_a_failing_subscriber_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    got: list[Event] = []

    def broken(e: Event) -> None:
        raise RuntimeError("bug")

    bus.subscribe(broken)
    bus.subscribe(got.append)
    with caplog.at_level(logging.ERROR):
        bus.publish(CameraAdded("a"))
    assert got == [CameraAdded("a", at=got[0].at)]
    assert bus.stats()["subscriber_errors"] == 1
    assert "subscriber" in caplog.text


def test_queue_drops_oldest_and_counts() -> None:
    q: EventQueue[int] = EventQueue(3)
    for i in range(5):
        q.put(i)
    assert q.dropped == 2 and len(q) == 3
    assert q.drain(2) == [2, 3]
    assert q.drain(10) == [4]
    assert q.drain(10) == []


def test_bus_queue_is_bounded_and_filtered() -> None:
    bus = EventBus()
    q = bus.queue(2, StreamPublished)
    for i in range(4):
        bus.publish(StreamPublished(f"p{i}"))
        bus.publish(MotionChanged("c", True))
    assert [e.path for e in q.drain(10)] == ["p2", "p3"]  # type: ignore[attr-defined]
    assert bus.stats()["queue_dropped"] == 2
    bus.detach(q)
    bus.publish(StreamPublished("late"))
    assert len(q) == 0 and q.closed


async def test_queue_wait_get_wake_close() -> None:
    q: EventQueue[str] = EventQueue(4)
    assert await q.wait(0.01) is False
    waiter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.put("x")
    assert await waiter == "x"
    w2 = asyncio.ensure_future(q.wait(30))
    await asyncio.sleep(0)
    q.wake()
    assert await w2 is False  # woken without an item
    w3 = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.close()
    with pytest.raises(EOFError):
        await w3


def test_stream_listener_adapts_registry_callbacks() -> None:
    reg = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=4)
    bus = EventBus()
    got: list[Event] = []
    bus.subscribe(got.append)
    reg.listeners.append(stream_listener(bus))
    s = reg.get_or_create("live/cam")
    pub = Pub()
    s.publish(pub, SessionDescription.parse(SDP))
    s.unpublish(pub, "bye")
    stream_listener(bus)(s, "info")
    assert [type(e) for e in got] == [StreamPublished, StreamUnpublished, StreamInfoChanged]
    assert got[0] == StreamPublished("live/cam", "rtsp 127.0.0.1:5000", at=got[0].at)
    assert got[1].path == "live/cam"  # type: ignore[attr-defined]
