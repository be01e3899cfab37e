"""ONVIF Events service (ver10 events/wsdl): pull points, basic notification, properties.

What a camera emits (its topic set, all property events):

- ``tns1:VideoSource/MotionAlarm`` (Source ``Source`` = video source token, Data ``State``)
  and ``tns1:RuleEngine/CellMotionDetector/Motion`` (Source VideoSourceConfigurationToken,
  VideoAnalyticsConfigurationToken, Rule; Data ``IsMotion``): motion from the trigger API.
- ``tns1:VideoSource/SignalLoss`` (Source ``Source``, Data ``State``): true while the
  camera's main stream has no publisher, false while one is connected (ONVIF Imaging
  spec: the video signal of the source is lost).
- ``tns1:Device/Trigger/DigitalInput`` (InputToken, LogicalState) and
  ``tns1:Device/Trigger/Relay`` (RelayToken, LogicalState active/inactive), for cameras
  with inputs or relays (:mod:`onvifcam.onvif.deviceio`).

The core is sans-I/O: :class:`CameraEvents` holds one camera's property states and
subscriptions with an injected clock; every subscription owns a bounded drop-oldest
queue (:class:`onvifcam.events.EventQueue`). :class:`EventService` feeds it from the event
bus, answers the SOAP operations (PullMessages is a coroutine: a long poll never blocks
another request), posts Notify messages to basic-notification consumers (one task and
queue per subscription, bounded retries and timeouts) and expires abandoned subscriptions.

Each subscription has its own address, ``.../events_service?subscription=ID``; the
subscription-manager operations sent there (PullMessages, Renew, Unsubscribe,
SetSynchronizationPoint) are dispatched on the body element like every other request.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from lxml import etree
from lxml.builder import ElementMaker

from onvifcam.cameras import VSC, VSRC, Camera
from onvifcam.config import EventsConfig
from onvifcam.events import (
    DigitalInputChanged,
    Event,
    EventBus,
    EventQueue,
    MotionChanged,
    RelayChanged,
    StreamPublished,
    StreamUnpublished,
)
from onvifcam.onvif.deviceio import DeviceIO, input_tokens, relay_tokens
from onvifcam.onvif.soap import (
    CONTENT_TYPE,
    ENV12,
    NS_TEV,
    NS_TNS1,
    NS_TT,
    NS_WSA,
    NS_WSNT,
    NSMAP,
    PRE_AUTH,
    READ_MEDIA,
    TT,
    Context,
    Fault,
    Handler,
    Operation,
    OperationTable,
    Reply,
    child,
    children,
    invalid_arg,
    require,
    text_of,
)
from onvifcam.onvif.xstime import duration_seconds, parse_datetime, utc_text

if TYPE_CHECKING:
    from onvifcam.cameras import CameraRegistry

log = logging.getLogger(__name__)

NS_WSTOP = "http://docs.oasis-open.org/wsn/t-1"
XSD = "http://www.w3.org/2001/XMLSchema"
DIALECT_CONCRETE_SET = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
DIALECT_CONCRETE = "http://docs.oasis-open.org/wsn/t-1/TopicExpression/Concrete"
DIALECT_SIMPLE = "http://docs.oasis-open.org/wsn/t-1/TopicExpression/Simple"
DIALECT_ITEM_FILTER = "http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter"
TOPIC_NS_LOCATION = "http://www.onvif.org/onvif/ver10/topics/topicns.xml"
SCHEMA_LOCATION = "http://www.onvif.org/onvif/ver10/schema/onvif.xsd"
NOTIFY_ACTION = "http://docs.oasis-open.org/wsn/bw-2/NotificationConsumer/Notify"
VIDEO_ANALYTICS = "VideoAnalyticsConfig_1"  # Source items of the CellMotionDetector event
MOTION_RULE = "MyMotionDetectorRule"
MAX_EXPRESSION = 1024  # characters of a topic or message content expression
SETTLE_TURNS = 16  # event-loop turns a woken PullMessages lets pass before answering

S = ElementMaker(namespace=ENV12, nsmap=NSMAP)
TEV = ElementMaker(namespace=NS_TEV, nsmap=NSMAP)
WSNT = ElementMaker(namespace=NS_WSNT, nsmap=NSMAP)
WSA = ElementMaker(namespace=NS_WSA, nsmap=NSMAP)
_DECL = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def wsn_fault(name: str, reason: str) -> Fault:
    """A WS-BaseNotification fault (ONVIF: env:Receiver, HTTP 500) named by its wsnt element."""
    return Fault(("ter:InvalidArgVal", f"wsnt:{name}"), reason, "Receiver")


def unknown_subscription(sid: str) -> Fault:
    """The fault for a subscription id that does not exist (any more)."""
    return Fault(
        ("ter:InvalidArgVal", "ter:ResourceUnknown"),
        f"no subscription {sid[:32]!r} (it expired or was unsubscribed): create a new one",
        "Receiver",
    )


# --------------------------------------------------------------------------- topics


@dataclass(frozen=True)
class Topic:
    """One ONVIF topic with its message description (item name, XML type)."""

    name: str  # "tns1:VideoSource/MotionAlarm"
    source: tuple[tuple[str, str], ...]
    data: tuple[tuple[str, str], ...]

    @property
    def path(self) -> tuple[str, ...]:
        """The topic's levels under the ONVIF topic namespace."""
        return tuple(self.name.partition(":")[2].split("/"))


_STATE = (("State", "xs:boolean"),)
MOTION_ALARM = Topic("tns1:VideoSource/MotionAlarm", (("Source", "tt:ReferenceToken"),), _STATE)
CELL_MOTION = Topic(
    "tns1:RuleEngine/CellMotionDetector/Motion",
    (
        ("VideoSourceConfigurationToken", "tt:ReferenceToken"),
        ("VideoAnalyticsConfigurationToken", "tt:ReferenceToken"),
        ("Rule", "xs:string"),
    ),
    (("IsMotion", "xs:boolean"),),
)
SIGNAL_LOSS = Topic("tns1:VideoSource/SignalLoss", (("Source", "tt:ReferenceToken"),), _STATE)
DIGITAL_INPUT = Topic(
    "tns1:Device/Trigger/DigitalInput",
    (("InputToken", "tt:ReferenceToken"),),
    (("LogicalState", "xs:boolean"),),
)
RELAY = Topic(
    "tns1:Device/Trigger/Relay",
    (("RelayToken", "tt:ReferenceToken"),),
    (("LogicalState", "tt:RelayLogicalState"),),
)
TOPICS = (MOTION_ALARM, CELL_MOTION, SIGNAL_LOSS, DIGITAL_INPUT, RELAY)


def camera_topics(cam: Camera) -> tuple[Topic, ...]:
    """The topics a camera emits (DigitalInput and Relay only when it has some)."""
    out = [MOTION_ALARM, CELL_MOTION, SIGNAL_LOSS]
    if input_tokens(cam):
        out.append(DIGITAL_INPUT)
    if relay_tokens(cam):
        out.append(RELAY)
    return tuple(out)


def _xbool(v: bool) -> str:
    return "true" if v else "false"


# --------------------------------------------------------------------------- messages

Items = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Message:
    """One notification: topic, time (camera clock), property operation, items."""

    topic: Topic
    utc: float
    operation: str  # Initialized, Changed or Deleted
    source: Items
    data: Items
    _el: list[etree._Element] = field(default_factory=list, compare=False, repr=False)
    _xml: list[bytes] = field(default_factory=list, compare=False, repr=False)

    @property
    def key(self) -> tuple[str, Items]:
        """Property identity: topic and source."""
        return (self.topic.name, self.source)

    def again(self, operation: str, utc: float) -> Message:
        """The same property state with another operation and time."""
        return Message(self.topic, utc, operation, self.source, self.data)

    def element(self) -> etree._Element:
        """A fresh wsnt:NotificationMessage (built once, copied per response)."""
        if not self._el:
            self._el.append(self._build())
        return copy.deepcopy(self._el[0])

    def xml(self) -> bytes:
        """The wsnt:NotificationMessage serialised once (own namespace declarations), shared
        by every PullMessages response that carries it."""
        if not self._xml:
            self._xml.append(etree.tostring(self._build(), encoding="UTF-8"))
        return self._xml[0]

    def _build(self) -> etree._Element:
        # SubElement, not ElementMaker: the messages are the hot path of every pull point.
        nm = etree.Element(_NOTIFICATION_MESSAGE, nsmap=_MSG_NSMAP)
        topic = etree.SubElement(nm, _WSNT_TOPIC, Dialect=DIALECT_CONCRETE_SET)
        topic.text = self.topic.name
        holder = etree.SubElement(nm, _WSNT_MESSAGE)
        msg = etree.SubElement(
            holder, _TT_MESSAGE, UtcTime=utc_text(self.utc), PropertyOperation=self.operation
        )
        for tag, items in ((_TT_SOURCE, self.source), (_TT_DATA, self.data)):
            if items or tag == _TT_SOURCE:
                group = etree.SubElement(msg, tag)
                for name, value in items:
                    etree.SubElement(group, _TT_SIMPLE_ITEM, Name=name, Value=value)
        return nm


_MSG_NSMAP = {"wsnt": NS_WSNT, "tt": NS_TT, "tns1": NS_TNS1}
_NOTIFICATION_MESSAGE = f"{{{NS_WSNT}}}NotificationMessage"
_WSNT_TOPIC = f"{{{NS_WSNT}}}Topic"
_WSNT_MESSAGE = f"{{{NS_WSNT}}}Message"
_TT_MESSAGE = f"{{{NS_TT}}}Message"
_TT_SOURCE = f"{{{NS_TT}}}Source"
_TT_DATA = f"{{{NS_TT}}}Data"
_TT_SIMPLE_ITEM = f"{{{NS_TT}}}SimpleItem"


def pull_response(now: float, termination: float, msgs: list[Message]) -> bytes:
    """tev:PullMessagesResponse, serialised: times, then each message's shared bytes."""
    return b"".join(
        [
            _PULL_OPEN,
            utc_text(now).encode(),
            b"</tev:CurrentTime><tev:TerminationTime>",
            utc_text(termination).encode(),
            b"</tev:TerminationTime>",
            *[m.xml() for m in msgs],
            b"</tev:PullMessagesResponse>",
        ]
    )


_PULL_OPEN = f'<tev:PullMessagesResponse xmlns:tev="{NS_TEV}"><tev:CurrentTime>'.encode()


# --------------------------------------------------------------------------- filters

_NCNAME = re.compile(r"[A-Za-z_][\w.\-]*")


@dataclass(frozen=True)
class TopicFilter:
    """A ConcreteSet topic expression: alternatives, each a topic path or a subtree."""

    paths: tuple[tuple[tuple[str, ...], bool], ...]  # (levels, subtree)

    def matches(self, topic: Topic) -> bool:
        """True when the topic is one of the paths or lies in one of the subtrees."""
        t = topic.path
        for levels, subtree in self.paths:
            if t == levels or (subtree and t[: len(levels)] == levels):
                return True
        return False


def parse_topic_expression(text: str, nsmap: dict[str | None, str], dialect: str) -> TopicFilter:
    """Parse a Concrete/ConcreteSet topic expression; WSN faults when malformed."""
    if dialect not in (DIALECT_CONCRETE_SET, DIALECT_CONCRETE, DIALECT_SIMPLE):
        raise wsn_fault(
            "TopicExpressionDialectUnknownFault",
            f"topic expression dialect {dialect[:100]!r} is not supported; use "
            f"{DIALECT_CONCRETE_SET}",
        )
    text = text.strip()
    if not text or len(text) > MAX_EXPRESSION:
        raise wsn_fault("InvalidTopicExpressionFault", "empty or overlong topic expression")
    paths = []
    for alt in text.split("|"):
        alt = alt.strip()
        subtree = alt.endswith("//.")
        if subtree:
            alt = alt[:-3]
        alt = alt.rstrip("/")  # "tns1:VideoSource/MotionAlarm/" as clients sometimes send
        levels = alt.split("/")
        root_prefix, _, root = levels[0].rpartition(":")
        ns = nsmap.get(root_prefix or None)
        if ns is None and root_prefix == "tns1":
            ns = NS_TNS1  # the ONVIF prefix, used without declaring it
        if ns is None and root_prefix:
            raise wsn_fault(
                "InvalidTopicExpressionFault",
                f"prefix {root_prefix!r} of {alt[:80]!r} is undeclared",
            )
        names = [root] + [lvl.rpartition(":")[2] for lvl in levels[1:]]
        if not all(_NCNAME.fullmatch(n) for n in names):
            raise wsn_fault("InvalidTopicExpressionFault", f"invalid topic path {alt[:80]!r}")
        if ns == NS_TNS1:
            paths.append((tuple(names), subtree))
        else:
            paths.append(((f"{{{ns}}}", *names), subtree))  # matches no ONVIF topic
    return TopicFilter(tuple(paths))


_TOKEN = re.compile(
    r"\s*(?:(?P<op>//|\(|\)|\[|\]|=)|(?P<attr>@Name|@Value)"
    r"|(?P<str>\"[^\"]*\"|'[^']*'|\u201c[^\u201d]*\u201d|\u201d[^\u201d]*\u201d)"
    r"|(?P<name>[A-Za-z_][\w.\-]*(?::[A-Za-z_][\w.\-]*)?))"
)


class ContentFilter:
    """An ItemFilter message content expression (ONVIF Core), e.g.
    ``boolean(//tt:SimpleItem[@Name="State" and @Value="true"])``."""

    MAX_DEPTH = 32

    def __init__(self, text: str) -> None:
        if len(text) > MAX_EXPRESSION:
            raise self._error("expression too long")
        self.text = text
        self._tokens = self._tokenize(text)
        self._pos = 0
        self._depth = 0
        self._expr = self._or(self._bool_factor)
        if self._pos != len(self._tokens):
            raise self._error(f"unexpected {self._tokens[self._pos][1]!r}")

    @staticmethod
    def _error(why: str) -> Fault:
        return wsn_fault("InvalidMessageContentExpressionFault", f"message content filter: {why}")

    def _tokenize(self, text: str) -> list[tuple[str, str]]:
        out = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise self._error(f"cannot read {text[pos : pos + 20]!r}")
            kind = m.lastgroup or ""
            value = m.group(kind)
            if kind == "str":
                value = value[1:-1]
            out.append((kind, value))
            pos = m.end()
        return out

    def _peek(self) -> tuple[str, str]:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else ("end", "")

    def _take(self, value: str | None = None, kind: str | None = None) -> str:
        k, v = self._peek()
        if (value is not None and v != value) or (kind is not None and k != kind) or k == "end":
            raise self._error(f"expected {value or kind}, found {v or 'the end'!r}")
        self._pos += 1
        return v

    def _or(self, factor: Callable[[], Any]) -> Callable[[Any], bool]:
        self._depth += 1
        if self._depth > self.MAX_DEPTH:
            raise self._error("nested too deeply")
        terms = [self._and(factor)]
        while self._peek() == ("name", "or"):
            self._pos += 1
            terms.append(self._and(factor))
        self._depth -= 1
        return terms[0] if len(terms) == 1 else (lambda x: any(t(x) for t in terms))

    def _and(self, factor: Callable[[], Any]) -> Callable[[Any], bool]:
        parts = [factor()]
        while self._peek() == ("name", "and"):
            self._pos += 1
            parts.append(factor())
        return parts[0] if len(parts) == 1 else (lambda x: all(p(x) for p in parts))

    def _group(self, factor: Callable[[], Any]) -> Callable[[Any], bool] | None:
        k, v = self._peek()
        if (k, v) == ("name", "not"):
            self._pos += 1
            self._take("(")
            inner = self._or(factor)
            self._take(")")
            return lambda x: not inner(x)
        if (k, v) == ("op", "("):
            self._pos += 1
            inner = self._or(factor)
            self._take(")")
            return inner
        return None

    def _bool_factor(self) -> Callable[[Message], bool]:
        g = self._group(self._bool_factor)
        if g is not None:
            return g
        self._take("boolean")
        self._take("(")
        self._take("//")
        kind = self._take(kind="name").rpartition(":")[2]
        if kind not in ("SimpleItem", "ElementItem"):
            raise self._error(f"{kind!r} is neither SimpleItem nor ElementItem")
        self._take("[")
        test = self._or(self._attr_factor)
        self._take("]")
        self._take(")")
        if kind == "ElementItem":
            return lambda m: False  # our messages carry SimpleItems only
        return lambda m: any(test(item) for item in (*m.source, *m.data))

    def _attr_factor(self) -> Callable[[tuple[str, str]], bool]:
        g = self._group(self._attr_factor)
        if g is not None:
            return g
        attr = self._take(kind="attr")
        self._take("=")
        value = self._take(kind="str")
        index = 0 if attr == "@Name" else 1
        return lambda item: item[index] == value

    def matches(self, msg: Message) -> bool:
        """True when the message passes the filter."""
        return bool(self._expr(msg))


@dataclass
class Filter:
    """Every TopicExpression and MessageContent of a subscription request (all must match)."""

    topics: list[TopicFilter] = field(default_factory=list)
    content: list[ContentFilter] = field(default_factory=list)

    def matches(self, msg: Message) -> bool:
        """True when the message passes every expression."""
        return all(t.matches(msg.topic) for t in self.topics) and all(
            c.matches(msg) for c in self.content
        )


def parse_filter(el: etree._Element | None, topics: Iterable[Topic]) -> Filter:
    """A wsnt:Filter element; faults for unknown dialects, bad or unmatched expressions."""
    f = Filter()
    if el is None:
        return f
    for c in el:
        if not isinstance(c.tag, str):
            continue
        local = etree.QName(c).localname
        dialect = (c.get("Dialect") or "").strip()
        if local == "TopicExpression":
            tf = parse_topic_expression(c.text or "", dict(c.nsmap), dialect)
            if not any(tf.matches(t) for t in topics):
                raise wsn_fault(
                    "TopicNotSupportedFault",
                    f"no topic of this camera matches {(c.text or '').strip()[:120]!r}; "
                    "GetEventProperties lists them",
                )
            f.topics.append(tf)
        elif local == "MessageContent":
            if dialect != DIALECT_ITEM_FILTER:
                raise wsn_fault(
                    "InvalidMessageContentExpressionFault",
                    f"message content dialect {dialect[:100]!r} is not supported; use "
                    f"{DIALECT_ITEM_FILTER}",
                )
            f.content.append(ContentFilter(c.text or ""))
        else:
            raise wsn_fault("InvalidFilterFault", f"unknown filter {local[:64]!r}")
    return f


# --------------------------------------------------------------------------- core


def termination_time(text: str | None, now: float, cfg: EventsConfig, fault: str) -> float:
    """Absolute termination time for an (Initial)TerminationTime (duration or dateTime).

    Absent: ``default_termination``; longer than ``max_termination``: shortened to it;
    zero, negative, past or malformed: the WSN ``fault``.
    """
    if text is None or not text.strip():
        return now + cfg.default_termination
    t = text.strip()
    try:
        if t.startswith(("P", "-P", "+P")):
            seconds = duration_seconds(t.lstrip("+"))
        else:
            seconds = parse_datetime(t) - now
    except (ValueError, OverflowError) as exc:
        raise wsn_fault(fault, f"termination time {t[:40]!r}: {exc}") from None
    if seconds <= 0:
        raise wsn_fault(
            fault,
            f"termination time {t[:40]!r} is not in the future (camera time {utc_text(now)}); "
            f"for example PT{int(cfg.default_termination)}S is accepted",
        )
    return now + min(seconds, cfg.max_termination)


class Subscription:
    """A pull point (``pull``) or a basic-notification subscription (``push``)."""

    def __init__(
        self,
        sid: str,
        kind: str,
        flt: Filter,
        termination: float,
        queue_size: int,
        *,
        consumer: str = "",
        changed_only: bool = False,
        created: float = 0.0,
    ) -> None:
        self.id = sid
        self.kind = kind
        self.filter = flt
        self.termination = termination
        self.queue: EventQueue[Message] = EventQueue(queue_size)
        self.consumer = consumer
        self.changed_only = changed_only
        self.created = created
        self.url = ""  # the address handed to the client
        self.pulls = 0  # PullMessages in flight
        self.pull_gen = 0
        self.delivered = 0
        self.notify_failed = 0

    @property
    def closed(self) -> bool:
        """True once unsubscribed or expired."""
        return self.queue.closed

    def wants(self, msg: Message) -> bool:
        """Whether the message goes to this subscription."""
        if self.changed_only and msg.operation != "Changed":
            return False
        return self.filter.matches(msg)


class CameraEvents:
    """One camera's properties and subscriptions (sans-I/O; ``clock`` is the camera clock)."""

    def __init__(
        self,
        name: str,
        cfg: EventsConfig,
        clock: Callable[[], float],
        topics: tuple[Topic, ...] = TOPICS,
        new_id: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.clock = clock
        self.topics = topics
        self.new_id = new_id
        self.properties: dict[tuple[str, Items], Message] = {}
        self.subs: dict[str, Subscription] = {}
        self.created = 0
        self.expired = 0
        self.messages = 0

    # ------------------------------------------------------------------ properties
    def set_property(self, topic: Topic, source: Items, data: Items) -> Message | None:
        """Record a property's state; the Initialized/Changed message sent, or None."""
        key = (topic.name, source)
        old = self.properties.get(key)
        if old is not None and old.data == data:
            return None
        op = "Initialized" if old is None else "Changed"
        msg = Message(topic, self.clock(), op, source, data)
        self.properties[key] = msg
        self._fanout(msg)
        return msg

    def delete_property(self, topic: Topic, source: Items) -> Message | None:
        """Remove a property; the Deleted message sent, or None when it did not exist."""
        old = self.properties.pop((topic.name, source), None)
        if old is None:
            return None
        msg = Message(topic, self.clock(), "Deleted", source, ())
        self._fanout(msg)
        return msg

    def _fanout(self, msg: Message) -> None:
        self.messages += 1
        for sub in self.subs.values():
            if sub.wants(msg):
                sub.queue.put(msg)

    # ------------------------------------------------------------------ subscriptions
    def create(
        self,
        kind: str,
        flt: Filter,
        initial_termination: str | None,
        *,
        consumer: str = "",
        changed_only: bool = False,
    ) -> Subscription:
        """A new subscription holding Initialized messages for every matching property."""
        now = self.clock()
        self.expire(now)
        if len(self.subs) >= self.cfg.max_subscriptions:
            raise Fault(
                ("ter:Action", "wsnt:SubscribeCreationFailedFault"),
                f"camera {self.name!r} has {len(self.subs)} subscriptions, the most it keeps "
                "([events] max_subscriptions); unsubscribe or let old ones expire",
                "Receiver",
            )
        term = termination_time(
            initial_termination, now, self.cfg, "UnacceptableInitialTerminationTimeFault"
        )
        sub = Subscription(
            self.new_id(),
            kind,
            flt,
            term,
            self.cfg.max_queued_messages,
            consumer=consumer,
            changed_only=changed_only,
            created=now,
        )
        self.subs[sub.id] = sub
        self.created += 1
        if not changed_only:
            self.sync(sub)
        return sub

    def get(self, sid: str) -> Subscription:
        """A live subscription; the ResourceUnknown fault otherwise."""
        sub = self.subs.get(sid)
        if sub is None or sub.closed:
            raise unknown_subscription(sid)
        if sub.termination <= self.clock() and not sub.pulls:
            self._remove(sub)
            self.expired += 1
            raise unknown_subscription(sid)
        return sub

    def sync(self, sub: Subscription) -> int:
        """SetSynchronizationPoint: every matching property again, as Initialized."""
        if sub.changed_only:
            return 0
        now = self.clock()
        n = 0
        for msg in self.properties.values():
            again = msg.again("Initialized", now)
            if sub.filter.matches(again):
                sub.queue.put(again)
                n += 1
        return n

    def renew(self, sid: str, text: str | None) -> Subscription:
        """Renew: a new termination time."""
        sub = self.get(sid)
        sub.termination = termination_time(
            text, self.clock(), self.cfg, "UnacceptableTerminationTimeFault"
        )
        return sub

    def unsubscribe(self, sid: str) -> None:
        """End a subscription (a waiting PullMessages returns at once)."""
        self._remove(self.get(sid))

    def extend(self, sub: Subscription, seconds: float) -> None:
        """Keep a pull point alive at least ``seconds`` after a PullMessages response."""
        if not sub.closed:
            sub.termination = max(sub.termination, self.clock() + seconds)

    def expire(self, now: float | None = None) -> list[Subscription]:
        """Remove subscriptions past their termination time (not while pulled)."""
        now = self.clock() if now is None else now
        gone = [s for s in self.subs.values() if s.termination <= now and not s.pulls]
        for s in gone:
            self._remove(s)
        self.expired += len(gone)
        return gone

    def close(self) -> None:
        """Remove every subscription (shutdown)."""
        for s in list(self.subs.values()):
            self._remove(s)

    def _remove(self, sub: Subscription) -> None:
        self.subs.pop(sub.id, None)
        sub.queue.close()

    def stats(self) -> dict[str, int]:
        """Counters for this camera."""
        return {
            "subscriptions": len(self.subs),
            "created": self.created,
            "expired": self.expired,
            "messages": self.messages,
            "queued": sum(len(s.queue) for s in self.subs.values()),
            "dropped": sum(s.queue.dropped for s in self.subs.values()),
        }


# --------------------------------------------------------------------------- trigger API


class TriggerError(ValueError):
    """A bad trigger request: HTTP status, the JSON field at fault, and why."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.field = field

    def to_json(self) -> dict[str, str]:
        """The JSON error body."""
        out = {"error": str(self)}
        if self.field:
            out["field"] = self.field
        return out


@dataclass(frozen=True)
class Trigger:
    """A validated trigger: ``motion`` (token = video source) or ``digital_input``."""

    type: str
    state: bool
    token: str


def parse_trigger(payload: Any, cam: Camera) -> Trigger:
    """Validate ``{"type": "motion"|"digital_input", "state": bool, "input": "DI_1"}``."""
    if not isinstance(payload, dict):
        raise TriggerError(400, "the body must be a JSON object")
    allowed = {"type", "state", "input", "source"}
    for k in payload:
        if k not in allowed:
            why = f"unknown field {str(k)[:40]!r} (allowed: {', '.join(sorted(allowed))})"
            raise TriggerError(422, why, str(k)[:40])
    kind = payload.get("type")
    if kind not in ("motion", "digital_input"):
        raise TriggerError(422, 'type must be "motion" or "digital_input"', "type")
    state = payload.get("state")
    if not isinstance(state, bool):
        raise TriggerError(422, "state must be true or false", "state")
    if kind == "motion":
        source = payload.get("source", VSRC)
        if source != VSRC:
            raise TriggerError(422, f"source must be {VSRC!r} (the only video source)", "source")
        if "input" in payload:
            raise TriggerError(422, "input is only for type digital_input", "input")
        return Trigger(kind, state, VSRC)
    tokens = input_tokens(cam)
    token = payload.get("input")
    if token is None and len(tokens) == 1:
        token = tokens[0]
    if not isinstance(token, str) or token not in tokens:
        have = ", ".join(tokens) or "none ([events] digital_inputs = 0)"
        raise TriggerError(422, f"input must name one of this camera's inputs: {have}", "input")
    if "source" in payload:
        raise TriggerError(422, "source is only for type motion", "source")
    return Trigger(kind, state, token)


# --------------------------------------------------------------------------- service


class EventService:
    """The Events service of every camera: bus consumer, SOAP operations, Notify sender."""

    def __init__(
        self,
        bus: EventBus | None = None,
        io: DeviceIO | None = None,
        cameras: CameraRegistry | None = None,
    ) -> None:
        self.bus = bus if bus is not None else EventBus()
        self.io = io if io is not None else DeviceIO(self.bus)
        self.cameras = cameras
        self._cams: dict[str, CameraEvents] = {}
        self._camera_objs: dict[str, Camera] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._settle: asyncio.Future[None] | None = None
        self.notify_sent = 0
        self.notify_failed = 0
        self.ops = self._operations()
        self.bus.subscribe(
            self._on_event,
            StreamPublished,
            StreamUnpublished,
            MotionChanged,
            DigitalInputChanged,
            RelayChanged,
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start expiring abandoned subscriptions once a second."""
        if self._housekeeping is None:
            self._housekeeping = asyncio.get_running_loop().create_task(
                self._tick_forever(), name="onvif-events"
            )

    async def stop(self) -> None:
        """End every subscription (waiting PullMessages return), Notify tasks and timers."""
        for ce in self._cams.values():
            ce.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        tasks = [*self._tasks, *([self._housekeeping] if self._housekeeping else [])]
        for t in self._tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._housekeeping = None
        self.io.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.tick()
            except Exception:
                log.exception("onvif events: housekeeping failed")

    def tick(self) -> None:
        """Expire subscriptions past their termination time and due Monostable relays."""
        self.io.expire()
        for ce in self._cams.values():
            for sub in ce.expire():
                log.info(
                    "onvif %s: %s subscription %s expired (%d delivered, %d dropped)",
                    ce.name,
                    sub.kind,
                    sub.id,
                    sub.delivered,
                    sub.queue.dropped,
                )

    def stats(self) -> dict[str, Any]:
        """Counters over every camera."""
        total: dict[str, Any] = {
            "notify_sent": self.notify_sent,
            "notify_failed": self.notify_failed,
        }
        for ce in self._cams.values():
            for k, v in ce.stats().items():
                total[k] = total.get(k, 0) + v
        return total

    # ------------------------------------------------------------------ state
    def for_camera(self, cam: Camera) -> CameraEvents:
        """The camera's event state, created with its current property values."""
        ce = self._cams.get(cam.key)
        if ce is not None:
            return ce
        ce = CameraEvents(cam.name, cam.app_cfg.events, cam.now, camera_topics(cam))
        self._cams[cam.key] = ce
        self._camera_objs[cam.key] = cam
        ce.set_property(SIGNAL_LOSS, (("Source", VSRC),), (("State", _xbool(not cam.online)),))
        self._motion(ce, VSRC, False)
        for token, state in self.io.inputs(cam).items():
            self._input(ce, token, state)
        for token, state in self.io.relays(cam).items():
            self._relay(ce, token, state)
        return ce

    def motion(self, cam: Camera) -> bool:
        """The camera's current motion state."""
        msg = self.for_camera(cam).properties.get((MOTION_ALARM.name, (("Source", VSRC),)))
        return msg is not None and msg.data == (("State", "true"),)

    @staticmethod
    def _motion(ce: CameraEvents, source: str, state: bool) -> None:
        ce.set_property(MOTION_ALARM, (("Source", source),), (("State", _xbool(state)),))
        ce.set_property(
            CELL_MOTION,
            (
                ("VideoSourceConfigurationToken", VSC),
                ("VideoAnalyticsConfigurationToken", VIDEO_ANALYTICS),
                ("Rule", MOTION_RULE),
            ),
            (("IsMotion", _xbool(state)),),
        )

    @staticmethod
    def _input(ce: CameraEvents, token: str, state: bool) -> None:
        ce.set_property(DIGITAL_INPUT, (("InputToken", token),), (("LogicalState", _xbool(state)),))

    @staticmethod
    def _relay(ce: CameraEvents, token: str, active: bool) -> None:
        state = "active" if active else "inactive"
        ce.set_property(RELAY, (("RelayToken", token),), (("LogicalState", state),))

    def _camera(self, key: str) -> Camera | None:
        if self.cameras is not None:
            cam = self.cameras.cameras.get(key)
            if cam is not None:
                return cam
        return self._camera_objs.get(key)

    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, StreamPublished | StreamUnpublished):
            cams = self.cameras.cameras.values() if self.cameras is not None else ()
            for cam in list(cams) or list(self._camera_objs.values()):
                if cam.path == ev.path:
                    lost = isinstance(ev, StreamUnpublished)
                    self.for_camera(cam).set_property(
                        SIGNAL_LOSS, (("Source", VSRC),), (("State", _xbool(lost)),)
                    )
            return
        cam = self._camera(getattr(ev, "camera", ""))
        if cam is None:
            return
        ce = self.for_camera(cam)
        if isinstance(ev, MotionChanged):
            self._motion(ce, ev.source, ev.state)
        elif isinstance(ev, DigitalInputChanged):
            self._input(ce, ev.input, ev.state)
        elif isinstance(ev, RelayChanged):
            self._relay(ce, ev.relay, ev.state)

    # ------------------------------------------------------------------ trigger API
    def trigger(self, cam: Camera, payload: Any) -> dict[str, Any]:
        """Apply a trigger request (see :func:`parse_trigger`); the JSON answer."""
        t = parse_trigger(payload, cam)
        if t.type == "motion":
            changed = self.motion(cam) != t.state
            self.bus.publish(MotionChanged(cam.key, t.state, t.token))
        else:
            changed = self.io.set_input(cam, t.token, t.state)
        out: dict[str, Any] = {"camera": cam.name, "type": t.type, "state": t.state}
        if t.type == "digital_input":
            out["input"] = t.token
        out["changed"] = changed
        return out

    # ------------------------------------------------------------------ pull and push
    async def pull(
        self, ce: CameraEvents, sub: Subscription, wait: float, limit: int
    ) -> list[Message]:
        """Long poll: queued messages at once, else the first ones to arrive, else none
        after ``wait`` seconds. A newer PullMessages on the same subscription ends this one."""
        sub.pull_gen += 1
        gen = sub.pull_gen
        if sub.pulls:
            sub.queue.wake()
        sub.pulls += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        try:
            while True:
                if gen != sub.pull_gen:
                    return []
                msgs = sub.queue.drain(limit)
                if msgs or sub.closed:
                    return msgs
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                if await sub.queue.wait(remaining):
                    await asyncio.shield(self._settled())
        finally:
            sub.pulls -= 1
            ce.extend(sub, wait)

    def _settled(self) -> asyncio.Future[None]:
        """A future done after ``SETTLE_TURNS`` event-loop turns, shared by every long poll
        woken in the same turn. A woken PullMessages waits for it before answering, so
        requests the server has already received (the next triggers, say) run first and
        their messages go out in the same response; it never waits for anything that has
        not happened yet. Without it, under load every event costs one response per
        subscriber and the server falls further and further behind."""
        fut = self._settle
        if fut is None or fut.done():
            loop = asyncio.get_running_loop()
            fut = self._settle = loop.create_future()

            def turn(left: int) -> None:
                if left > 0:
                    loop.call_soon(turn, left - 1)
                elif not fut.done():
                    fut.set_result(None)

            loop.call_soon(turn, SETTLE_TURNS)
        return fut

    def _start_notify(self, ce: CameraEvents, sub: Subscription) -> None:
        task = asyncio.get_running_loop().create_task(
            self._notify_loop(ce, sub), name=f"onvif-notify-{sub.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify_loop(self, ce: CameraEvents, sub: Subscription) -> None:
        cfg = ce.cfg
        failing = False
        while not sub.closed:
            await sub.queue.wait()
            batch = sub.queue.drain(cfg.notify_batch)
            if not batch:
                continue
            body = notify_body(batch, sub)
            error = await self._post(sub.consumer, body, cfg)
            if error is None:
                sub.delivered += len(batch)
                self.notify_sent += 1
                if failing:
                    log.info("onvif %s: Notify to %s works again", ce.name, sub.consumer)
                failing = False
                continue
            sub.notify_failed += len(batch)
            self.notify_failed += 1
            if not failing:
                log.info(
                    "onvif %s: Notify to %s failed (%s); %d message(s) dropped, later ones "
                    "are still tried",
                    ce.name,
                    sub.consumer,
                    error,
                    len(batch),
                )
            failing = True

    async def _post(self, url: str, body: bytes, cfg: EventsConfig) -> str | None:
        """POST one Notify with bounded retries; None on success, else the last error."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        error = "not tried"
        for attempt in range(cfg.notify_retries + 1):
            if attempt:
                await asyncio.sleep(min(0.5 * 2**attempt, 5.0))
            try:
                async with (
                    asyncio.timeout(cfg.notify_timeout),
                    self._session.post(
                        url,
                        data=body,
                        headers={"Content-Type": CONTENT_TYPE},
                        allow_redirects=False,
                    ) as r,
                ):
                    await r.content.read(65536)
                    if 200 <= r.status < 300:
                        return None
                    error = f"HTTP {r.status}"
            except TimeoutError:
                error = f"no answer within {cfg.notify_timeout:g} s"
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:200]
        return error

    # ------------------------------------------------------------------ SOAP helpers
    def _sub(self, ctx: Context, req: etree._Element) -> tuple[CameraEvents, Subscription]:
        sid = ctx.subscription or _sid_from_header(req)
        if not sid:
            raise invalid_arg(
                "ter:InvalidArgs",
                f"{etree.QName(req).localname} goes to the subscription address that "
                "CreatePullPointSubscription or Subscribe returned",
            )
        ce = self.for_camera(ctx.camera)
        return ce, ce.get(sid)

    def _subscribe(
        self,
        ctx: Context,
        req: etree._Element,
        kind: str,
        consumer: str = "",
    ) -> tuple[CameraEvents, Subscription]:
        cam = ctx.camera
        ce = self.for_camera(cam)
        flt = parse_filter(child(req, "Filter"), ce.topics)
        changed_only = False
        policy = child(req, "SubscriptionPolicy")
        if policy is not None:
            for p in policy:
                if not isinstance(p.tag, str):
                    continue
                name = etree.QName(p).localname
                if name == "ChangedOnly":
                    changed_only = (p.text or "").strip().lower() in ("true", "1")
                else:
                    raise wsn_fault(
                        "UnsupportedPolicyRequestFault",
                        f"subscription policy {name[:64]!r} is not supported "
                        "(only tev:ChangedOnly)",
                    )
        initial = child(req, "InitialTerminationTime")
        text = None if initial is None else initial.text
        sub = ce.create(kind, flt, text, consumer=consumer, changed_only=changed_only)
        sub.url = f"{ctx.xaddr('events')}?subscription={sub.id}"
        log.info(
            "onvif %s: %s subscription %s by %s until %s",
            cam.name,
            kind,
            sub.id,
            ctx.user.name if ctx.user else "anonymous",
            utc_text(sub.termination),
        )
        return ce, sub

    # ------------------------------------------------------------------ operations
    def _operations(self) -> OperationTable:
        ops = OperationTable()

        @ops.op(NS_TEV, "GetServiceCapabilities", PRE_AUTH)
        def get_service_capabilities(ctx: Context, req: etree._Element) -> etree._Element:
            """Pull points and basic notification, ChangedOnly policy, no persistence."""
            return TEV.GetServiceCapabilitiesResponse(capabilities_tev(ctx))

        @ops.op(NS_TEV, "GetEventProperties", READ_MEDIA)
        def get_event_properties(ctx: Context, req: etree._Element) -> etree._Element:
            """The topics this camera emits with their message descriptions."""
            return TEV.GetEventPropertiesResponse(
                TEV.TopicNamespaceLocation(TOPIC_NS_LOCATION),
                WSNT.FixedTopicSet("true"),
                topic_set(self.for_camera(ctx.camera).topics),
                WSNT.TopicExpressionDialect(DIALECT_CONCRETE_SET),
                WSNT.TopicExpressionDialect(DIALECT_CONCRETE),
                TEV.MessageContentFilterDialect(DIALECT_ITEM_FILTER),
                TEV.MessageContentSchemaLocation(SCHEMA_LOCATION),
            )

        @ops.op(NS_TEV, "CreatePullPointSubscription", READ_MEDIA)
        def create_pull_point_subscription(ctx: Context, req: etree._Element) -> etree._Element:
            """A new pull point with its own address; Initialized messages are waiting."""
            ce, sub = self._subscribe(ctx, req, "pull")
            return TEV.CreatePullPointSubscriptionResponse(
                TEV.SubscriptionReference(WSA.Address(sub.url)),
                WSNT.CurrentTime(utc_text(ce.clock())),
                WSNT.TerminationTime(utc_text(sub.termination)),
            )

        @ops.op(NS_TEV, "PullMessages", READ_MEDIA)
        async def pull_messages(ctx: Context, req: etree._Element) -> bytes:
            """Long poll for messages (never blocks other requests)."""
            ce, sub = self._sub(ctx, req)
            if sub.kind != "pull":
                raise invalid_arg("ter:InvalidArgs", "this is a Subscribe (push) subscription")
            cfg = ce.cfg
            try:
                timeout = duration_seconds(require(req, "Timeout"))
            except ValueError as exc:
                raise invalid_arg("ter:InvalidArgs", f"Timeout: {exc}") from None
            try:
                limit = int(require(req, "MessageLimit"))
            except ValueError:
                raise invalid_arg("ter:InvalidArgs", "MessageLimit is not an integer") from None
            timeout = min(max(timeout, 0.0), cfg.max_pull_timeout)
            limit = min(max(limit, 1), cfg.max_message_limit)
            msgs = await self.pull(ce, sub, timeout, limit)
            sub.delivered += len(msgs)
            return pull_response(ce.clock(), sub.termination, msgs)

        @ops.op(NS_TEV, "SetSynchronizationPoint", READ_MEDIA)
        def set_synchronization_point(ctx: Context, req: etree._Element) -> etree._Element:
            """Every property's current state again, as Initialized."""
            ce, sub = self._sub(ctx, req)
            ce.sync(sub)
            return TEV.SetSynchronizationPointResponse()

        @ops.op(NS_WSNT, "Subscribe", READ_MEDIA)
        def subscribe(ctx: Context, req: etree._Element) -> etree._Element:
            """Basic notification: Notify messages are POSTed to the ConsumerReference."""
            ref = child(req, "ConsumerReference")
            url = (text_of(ref, "Address") or "") if ref is not None else ""
            check_consumer(url, ctx.camera.app_cfg.events.max_consumer_url)
            ce, sub = self._subscribe(ctx, req, "push", consumer=url)
            self._start_notify(ce, sub)
            return WSNT.SubscribeResponse(
                WSNT.SubscriptionReference(WSA.Address(sub.url)),
                WSNT.CurrentTime(utc_text(ce.clock())),
                WSNT.TerminationTime(utc_text(sub.termination)),
            )

        @ops.op(NS_WSNT, "Renew", READ_MEDIA)
        def renew(ctx: Context, req: etree._Element) -> etree._Element:
            """A new termination time (absolute or relative)."""
            ce, sub = self._sub(ctx, req)
            ce.renew(sub.id, text_of(req, "TerminationTime"))
            return WSNT.RenewResponse(
                WSNT.TerminationTime(utc_text(sub.termination)),
                WSNT.CurrentTime(utc_text(ce.clock())),
            )

        @ops.op(NS_WSNT, "Unsubscribe", READ_MEDIA)
        def unsubscribe(ctx: Context, req: etree._Element) -> etree._Element:
            """End the subscription."""
            ce, sub = self._sub(ctx, req)
            ce.unsubscribe(sub.id)
            log.info("onvif %s: %s subscription %s unsubscribed", ce.name, sub.kind, sub.id)
            return WSNT.UnsubscribeResponse()

        for action, op in list(ops.ops.items()):
            ops.ops[action] = Operation(action, _logging_faults(op.handler), op.access)
        return ops


def _logging_faults(fn: Handler) -> Handler:
    """Log the Receiver faults of a handler once (the Dispatcher logs Sender faults only);
    WS-BaseNotification faults are Receiver faults in ONVIF but mostly mean bad input."""

    def note(ctx: Context, req: etree._Element, f: Fault) -> None:
        if f.code == "Receiver":
            log.info("onvif %s: %s: %s", ctx.camera.name, etree.QName(req).localname, f.reason)

    if inspect.iscoroutinefunction(fn):

        async def wrapped_async(ctx: Context, req: etree._Element) -> Reply:
            try:
                return await fn(ctx, req)  # type: ignore[no-any-return,misc]
            except Fault as f:
                note(ctx, req, f)
                raise

        return wrapped_async

    def wrapped(ctx: Context, req: etree._Element) -> Reply:
        try:
            return fn(ctx, req)  # type: ignore[return-value]
        except Fault as f:
            note(ctx, req, f)
            raise

    return wrapped


def capabilities_tev(ctx: Context) -> etree._Element:
    """tev:Capabilities (GetServiceCapabilities, GetServices with capabilities)."""
    n = str(ctx.camera.app_cfg.events.max_subscriptions)
    return TEV.Capabilities(
        WSSubscriptionPolicySupport="true",
        WSPausableSubscriptionManagerInterfaceSupport="false",
        MaxNotificationProducers=n,
        MaxPullPoints=n,
        PersistentNotificationStorage="false",
    )


def _sid_from_header(req: etree._Element) -> str:
    """The subscription id from a wsa:To header (clients that post to events_service)."""
    body = req.getparent()
    env = body.getparent() if body is not None else None
    header = child(env, "Header") if env is not None else None
    for to in children(header, "To"):
        q = parse_qs(urlsplit((to.text or "").strip()).query)
        sid = q.get("subscription", [""])[0]
        if sid:
            return sid[:64]
    return ""


def check_consumer(url: str, max_len: int) -> None:
    """A Subscribe ConsumerReference must be an http(s) URL with a host."""
    if not url:
        raise invalid_arg("ter:InvalidArgs", "ConsumerReference/Address is required")
    if len(url) > max_len:
        raise invalid_arg(
            "ter:InvalidArgs", f"ConsumerReference address longer than {max_len} characters"
        )
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid_arg(
            "ter:InvalidArgs", f"ConsumerReference {url[:100]!r} is not an http(s) URL with a host"
        )


def topic_set(topics: Iterable[Topic]) -> etree._Element:
    """wstop:TopicSet: tns1 roots, unqualified children, tt:MessageDescription at the leaves."""
    ts = etree.Element(
        f"{{{NS_WSTOP}}}TopicSet",
        nsmap={"wstop": NS_WSTOP, "xs": XSD, "tns1": NS_TNS1, "tt": NS_TT},
    )
    for topic in topics:
        root, *rest = topic.path
        node = ts.find(f"{{{NS_TNS1}}}{root}")
        if node is None:
            node = etree.SubElement(ts, f"{{{NS_TNS1}}}{root}")
        for level in rest:
            nxt = node.find(level)
            node = nxt if nxt is not None else etree.SubElement(node, level)
        node.set(f"{{{NS_WSTOP}}}topic", "true")
        desc = TT.MessageDescription(IsProperty="true")
        desc.append(TT.Source(*[TT.SimpleItemDescription(Name=n, Type=t) for n, t in topic.source]))
        desc.append(TT.Data(*[TT.SimpleItemDescription(Name=n, Type=t) for n, t in topic.data]))
        node.append(desc)
    return ts


def notify_body(msgs: list[Message], sub: Subscription) -> bytes:
    """The SOAP 1.2 Notify envelope POSTed to a basic-notification consumer."""
    notify = WSNT.Notify()
    for m in msgs:
        el = m.element()
        el.insert(0, WSNT.SubscriptionReference(WSA.Address(sub.url)))
        notify.append(el)
    env = S.Envelope(
        S.Header(
            WSA.Action(NOTIFY_ACTION),
            WSA.MessageID(f"urn:uuid:{uuid.uuid4()}"),
            WSA.To(sub.consumer),
        ),
        S.Body(notify),
    )
    return _DECL + etree.tostring(env, encoding="UTF-8")
