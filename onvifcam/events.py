"""The event bus: what happened, as frozen dataclasses, for whoever listens.

Producers (the stream registry, the camera registry, the trigger API, DeviceIO) call
:meth:`EventBus.publish`. Consumers either

- subscribe a plain function (:meth:`EventBus.subscribe`): it runs synchronously inside
  ``publish``, so it must be quick and must not block (the data plane: bookkeeping,
  fan-out into queues); an exception is logged and counted and never reaches the producer
  or the other subscribers; or
- take a bounded queue (:meth:`EventBus.queue`) and read it from a task at their own pace
  (slow consumers: HTTP pushes, dashboards). A full queue drops its oldest item and counts
  it; the producer never waits.

:class:`EventQueue` is the same bounded drop-oldest queue for any item type (the ONVIF
pull points use it for their messages).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event; ``at`` is when it happened (wall clock, UNIX seconds)."""

    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class StreamPublished(Event):
    """A publisher attached to ``path`` (the stream is online)."""

    path: str
    publisher: str = ""


@dataclass(frozen=True)
class StreamUnpublished(Event):
    """The publisher of ``path`` left (readers stay and wait for the next one)."""

    path: str
    reason: str = ""


@dataclass(frozen=True)
class StreamInfoChanged(Event):
    """What is known about the media of ``path`` changed (codec parameters, size)."""

    path: str


@dataclass(frozen=True)
class ReaderConnected(Event):
    """A reader started reading ``path`` (``reader``: who, for logs and hooks)."""

    path: str
    reader: str = ""


@dataclass(frozen=True)
class ReaderDisconnected(Event):
    """A reader of ``path`` stopped reading (it left, or the stream closed)."""

    path: str
    reader: str = ""


@dataclass(frozen=True)
class SourceFailed(Event):
    """A source the server runs for ``path`` (file, pull...) failed; ``reason`` says why."""

    path: str
    source: str = ""
    reason: str = ""


@dataclass(frozen=True)
class ForwardError(Event):
    """Forwarding ``path`` to ``target`` failed (``target`` without credentials)."""

    path: str
    target: str = ""
    reason: str = ""


@dataclass(frozen=True)
class CameraAdded(Event):
    """A virtual camera was created (``camera`` is its registry key)."""

    camera: str
    name: str = ""


@dataclass(frozen=True)
class CameraUpdated(Event):
    """A camera's settings or identity changed."""

    camera: str


@dataclass(frozen=True)
class CameraRemoved(Event):
    """A camera was removed."""

    camera: str


@dataclass(frozen=True)
class EndpointBound(Event):
    """A camera's ONVIF endpoint is settled: bound at ``port`` on ``address`` (its own, or
    "" for the server's), or ``port`` 0 when it could not bind one and is reachable on the
    main port only. Sent again after a reboot or an update rebinds it."""

    camera: str
    port: int
    address: str = ""
    own_rtsp: bool = False  # it serves RTSP on its own address too


@dataclass(frozen=True)
class EndpointUnbound(Event):
    """A camera's ONVIF endpoint closed (``reason``: "reboot", "update" or "removed")."""

    camera: str
    reason: str = ""


@dataclass(frozen=True)
class MotionChanged(Event):
    """Motion started (``state`` true) or stopped on a camera's video source."""

    camera: str
    state: bool
    source: str = "VideoSource_1"


@dataclass(frozen=True)
class DigitalInputChanged(Event):
    """A camera's digital input changed its logical state (true = active/closed)."""

    camera: str
    input: str
    state: bool


@dataclass(frozen=True)
class RelayChanged(Event):
    """A camera's relay output changed its logical state (true = active)."""

    camera: str
    relay: str
    state: bool


@dataclass(frozen=True)
class SourceSwitched(Event):
    """The readers of ``path`` now get their media from ``new`` instead of ``old``
    (a pull source moved to another URI, or a camera moved between its primary and backup
    path; "" means none). Readers stay connected; the new media starts on an IDR."""

    path: str
    old: str
    new: str
    reason: str = ""


# --------------------------------------------------------------------------- queue


class EventQueue(Generic[T]):
    """A bounded FIFO for one consumer: a full queue drops its oldest item and counts it.

    ``put`` never blocks; :meth:`wait` blocks a task until an item arrives, the queue is
    woken (:meth:`wake`) or closed, or the timeout passes.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(1, maxsize)
        self._items: deque[T] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0
        self.put_count = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Append ``item``; False when the oldest item had to be dropped for it."""
        if self.closed:
            return True
        self.put_count += 1
        kept = True
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
            kept = False
        self._items.append(item)
        self._ready.set()
        return kept

    def drain(self, limit: int) -> list[T]:
        """Take up to ``limit`` items, oldest first."""
        items = self._items
        n = min(max(0, limit), len(items))
        out = [items.popleft() for _ in range(n)]
        if not items and not self.closed:
            self._ready.clear()
        return out

    def clear(self) -> int:
        """Drop every queued item without counting them; how many there were."""
        n = len(self._items)
        self._items.clear()
        if not self.closed:
            self._ready.clear()
        return n

    async def wait(self, within: float | None = None) -> bool:
        """Wait up to ``within`` seconds (None: forever) for an item or a wake-up; True when
        items are queued."""
        if self._items or self.closed:
            return bool(self._items)
        self._ready.clear()
        if within is None:
            await self._ready.wait()
        else:
            try:
                async with asyncio.timeout(within):
                    await self._ready.wait()
            except TimeoutError:
                pass
        return bool(self._items)

    async def get(self) -> T:
        """The next item (waits for one); raises EOFError once the queue is closed."""
        while not self._items:
            if self.closed:
                raise EOFError("queue closed")
            await self.wait()
        item = self._items.popleft()
        if not self._items and not self.closed:
            self._ready.clear()
        return item

    def wake(self) -> None:
        """Wake every waiter (they find the queue as it is)."""
        self._ready.set()

    def close(self) -> None:
        """No more items; waiters wake up."""
        self.closed = True
        self._ready.set()


# --------------------------------------------------------------------------- bus

Subscriber = Callable[[Event], None]


class EventBus:
    """Synchronous subscribers and bounded queues, filtered by event type."""

    def __init__(self) -> None:
        self._subscribers: list[tuple[tuple[type[Event], ...], Subscriber]] = []
        self._queues: list[tuple[tuple[type[Event], ...], EventQueue[Event]]] = []
        self.published = 0
        self.subscriber_errors = 0

    def subscribe(self, fn: Subscriber, *kinds: type[Event]) -> Callable[[], None]:
        """Call ``fn(event)`` for every event (of ``kinds``, when given); returns an unsubscribe."""
        entry = (kinds, fn)
        self._subscribers.append(entry)

        def unsubscribe() -> None:
            if entry in self._subscribers:
                self._subscribers.remove(entry)

        return unsubscribe

    def queue(self, maxsize: int, *kinds: type[Event]) -> EventQueue[Event]:
        """A bounded queue receiving every event (of ``kinds``); detach it with :meth:`detach`."""
        q: EventQueue[Event] = EventQueue(maxsize)
        self._queues.append((kinds, q))
        return q

    def detach(self, q: EventQueue[Event]) -> None:
        """Stop feeding a queue from :meth:`queue` and close it."""
        self._queues = [(k, x) for k, x in self._queues if x is not q]
        q.close()

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every matching subscriber and queue, in subscription order."""
        self.published += 1
        for kinds, fn in list(self._subscribers):
            if kinds and not isinstance(event, kinds):
                continue
            try:
                fn(event)
            except Exception:
                self.subscriber_errors += 1
                log.exception("event bus: subscriber %r failed on %s", fn, type(event).__name__)
        for kinds, q in self._queues:
            if not kinds or isinstance(event, kinds):
                q.put(event)

    def stats(self) -> dict[str, Any]:
        """Counters: events published, subscriber failures, queue drops."""
        return {
            "published": self.published,
            "subscribers": len(self._subscribers),
            "queues": len(self._queues),
            "subscriber_errors": self.subscriber_errors,
            "queue_dropped": sum(q.dropped for _k, q in self._queues),
        }


def stream_listener(bus: EventBus) -> Callable[[Any, str], None]:
    """Adapter for ``StreamRegistry.listeners``: its "publish"/"unpublish"/"info" callbacks
    become StreamPublished / StreamUnpublished / StreamInfoChanged events on ``bus``."""

    def on_stream(stream: Any, what: str) -> None:
        path = str(stream.path)
        if what == "publish":
            pub = getattr(stream, "publisher", None)
            bus.publish(StreamPublished(path, str(getattr(pub, "description", "") or "")))
        elif what == "unpublish":
            reason = str(getattr(stream, "unpublish_reason", "") or "")
            bus.publish(StreamUnpublished(path, reason))
        elif what == "info":
            bus.publish(StreamInfoChanged(path))

    return on_stream


def describe_reader(reader: Any) -> str:
    """Who a stream reader is: its ``description``, its session's, or its multicast group."""
    for obj in (reader, getattr(reader, "session", None)):
        text = getattr(obj, "description", None)
        if isinstance(text, str) and text:
            return text
    group = getattr(reader, "group", None)
    return f"multicast {group}" if group else type(reader).__name__


def reader_listener(bus: EventBus) -> Callable[[Any, Any, bool], None]:
    """Adapter for ``StreamRegistry.reader_listeners``: ReaderConnected / ReaderDisconnected."""

    def on_reader(stream: Any, reader: Any, added: bool) -> None:
        kind = ReaderConnected if added else ReaderDisconnected
        bus.publish(kind(str(stream.path), describe_reader(reader)))

    return on_reader
