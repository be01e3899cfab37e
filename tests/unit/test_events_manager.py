"""The sans-I/O Events core with an injected clock: properties, subscriptions, expiry,
bounded queues, topic and message-content filters, termination times, xs:duration."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from onvifcam.config import EventsConfig
from onvifcam.onvif.events import (
    CELL_MOTION,
    DIALECT_CONCRETE,
    DIALECT_CONCRETE_SET,
    DIGITAL_INPUT,
    MOTION_ALARM,
    RELAY,
    SIGNAL_LOSS,
    TOPICS,
    CameraEvents,
    ContentFilter,
    Filter,
    Message,
    parse_filter,
    parse_topic_expression,
    termination_time,
)
from onvifcam.onvif.soap import NS_TNS1, Fault
from onvifcam.onvif.xstime import duration_seconds, format_duration, parse_datetime, utc_text

T0 = 1_700_000_000.0
SRC = (("Source", "VideoSource_1"),)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def world(**cfg: object) -> tuple[CameraEvents, Clock]:
    clock = Clock()
    ids = iter(f"sub{i}" for i in range(1000))
    ce = CameraEvents("cam", EventsConfig(**cfg), clock, TOPICS, lambda: next(ids))  # type: ignore[arg-type]
    return ce, clock


def motion(ce: CameraEvents, on: bool) -> Message | None:
    return ce.set_property(MOTION_ALARM, SRC, (("State", "true" if on else "false"),))


def ops(msgs: list[Message]) -> list[tuple[str, str, str]]:
    return [(m.topic.name, m.operation, m.data[0][1] if m.data else "") for m in msgs]


# --------------------------------------------------------------------------- properties


def test_initialized_then_changed_then_deleted() -> None:
    ce, clock = world()
    motion(ce, False)
    sub = ce.create("pull", Filter(), None)
    assert ops(sub.queue.drain(10)) == [(MOTION_ALARM.name, "Initialized", "false")]
    assert motion(ce, False) is None  # no change, no message
    clock.t += 5
    msg = motion(ce, True)
    assert msg is not None and msg.utc == T0 + 5
    assert ops(sub.queue.drain(10)) == [(MOTION_ALARM.name, "Changed", "true")]
    ce.delete_property(MOTION_ALARM, SRC)
    assert ops(sub.queue.drain(10)) == [(MOTION_ALARM.name, "Deleted", "")]
    assert ce.delete_property(MOTION_ALARM, SRC) is None


def test_every_new_subscription_and_sync_point_gets_every_property() -> None:
    ce, clock = world()
    motion(ce, True)
    ce.set_property(SIGNAL_LOSS, SRC, (("State", "false"),))
    ce.set_property(DIGITAL_INPUT, (("InputToken", "DI_1"),), (("LogicalState", "false"),))
    a = ce.create("pull", Filter(), None)
    b = ce.create("pull", Filter(), "PT600S")
    for sub in (a, b):
        got = ops(sub.queue.drain(10))
        assert [o for _t, o, _v in got] == ["Initialized"] * 3
        assert got[0] == (MOTION_ALARM.name, "Initialized", "true")
    clock.t += 1
    assert ce.sync(a) == 3
    msgs = a.queue.drain(10)
    assert {m.operation for m in msgs} == {"Initialized"} and msgs[0].utc == T0 + 1
    assert b.queue.drain(10) == []


def test_changed_only_policy_suppresses_initialized() -> None:
    ce, _clock = world()
    motion(ce, False)
    sub = ce.create("pull", Filter(), None, changed_only=True)
    assert sub.queue.drain(10) == [] and ce.sync(sub) == 0
    motion(ce, True)
    assert ops(sub.queue.drain(10)) == [(MOTION_ALARM.name, "Changed", "true")]


def test_full_queue_drops_oldest_and_counts() -> None:
    ce, _clock = world(max_queued_messages=4)
    sub = ce.create("pull", Filter(), None)
    for i in range(10):
        motion(ce, i % 2 == 0)
    assert len(sub.queue) == 4 and sub.queue.dropped == 6
    assert ce.stats()["dropped"] == 6
    assert ops(sub.queue.drain(2))[0][2] == "true"  # the newest four survive (i = 6..9)


# --------------------------------------------------------------------------- lifetime


def test_termination_default_relative_absolute_and_cap() -> None:
    ce, _clock = world(default_termination=60.0, max_termination=3600.0)
    assert ce.create("pull", Filter(), None).termination == T0 + 60
    assert ce.create("pull", Filter(), "PT600S").termination == T0 + 600
    assert ce.create("pull", Filter(), "PT1M").termination == T0 + 60
    assert ce.create("pull", Filter(), "P1D").termination == T0 + 3600  # capped
    absolute = utc_text(T0 + 120)
    assert ce.create("pull", Filter(), absolute).termination == T0 + 120
    assert ce.create("pull", Filter(), "2023-11-14T23:15:00+01:00").termination == T0 + 100
    for bad in ("PT0S", "-PT5S", utc_text(T0 - 10), "tomorrow", "P", "PT"):
        with pytest.raises(Fault) as e:
            ce.create("pull", Filter(), bad)
        assert "wsnt:UnacceptableInitialTerminationTimeFault" in e.value.subcodes
        assert e.value.code == "Receiver"


def test_abandoned_subscriptions_expire_but_not_while_pulled() -> None:
    ce, clock = world()
    a = ce.create("pull", Filter(), "PT10S")
    b = ce.create("pull", Filter(), "PT100S")
    b.pulls = 1  # a PullMessages is waiting on b
    clock.t += 200
    assert [s.id for s in ce.expire()] == [a.id]
    assert a.closed and not b.closed
    with pytest.raises(Fault) as e:
        ce.get(a.id)
    assert "ter:ResourceUnknown" in e.value.subcodes
    b.pulls = 0
    ce.extend(b, 60)  # the pull answered: alive for its Timeout at least
    assert b.termination == clock.t + 60
    clock.t += 61
    with pytest.raises(Fault):
        ce.get(b.id)
    assert ce.stats()["subscriptions"] == 0 and ce.stats()["expired"] == 2


def test_renew_and_unsubscribe() -> None:
    ce, clock = world()
    sub = ce.create("pull", Filter(), "PT60S")
    clock.t += 30
    assert ce.renew(sub.id, "PT120S").termination == clock.t + 120
    with pytest.raises(Fault) as e:
        ce.renew(sub.id, "PT0S")
    assert "wsnt:UnacceptableTerminationTimeFault" in e.value.subcodes
    ce.unsubscribe(sub.id)
    assert sub.closed
    with pytest.raises(Fault):
        ce.unsubscribe(sub.id)


def test_subscription_limit_per_camera() -> None:
    ce, clock = world(max_subscriptions=2)
    ce.create("pull", Filter(), "PT10S")
    ce.create("push", Filter(), "PT100S", consumer="http://127.0.0.1/x")
    with pytest.raises(Fault) as e:
        ce.create("pull", Filter(), None)
    assert "wsnt:SubscribeCreationFailedFault" in e.value.subcodes
    assert "max_subscriptions" in e.value.reason
    clock.t += 11  # the first one expires: room again
    ce.create("pull", Filter(), None)


# --------------------------------------------------------------------------- filters

NSMAP = {"tns1": NS_TNS1, "x": "http://example.com/vendor"}


def matching(expr: str, dialect: str = DIALECT_CONCRETE_SET) -> list[str]:
    f = parse_topic_expression(expr, NSMAP, dialect)  # type: ignore[arg-type]
    return [t.name for t in TOPICS if f.matches(t)]


def test_concrete_set_topic_expressions() -> None:
    assert matching("tns1:VideoSource/MotionAlarm") == [MOTION_ALARM.name]
    assert matching("tns1:VideoSource//.") == [MOTION_ALARM.name, SIGNAL_LOSS.name]
    assert matching("tns1:RuleEngine//.|tns1:Device/Trigger//.") == [
        CELL_MOTION.name,
        DIGITAL_INPUT.name,
        RELAY.name,
    ]
    assert matching("tns1:Device/Trigger/Relay/") == [RELAY.name]  # trailing slash
    assert matching("tns1:VideoSource") == []  # not a topic itself, not a subtree
    assert matching("x:VideoSource//.") == []  # another namespace
    assert matching("tns1:VideoSource/MotionAlarm", DIALECT_CONCRETE) == [MOTION_ALARM.name]
    f = parse_topic_expression("tns1:VideoSource/MotionAlarm", {}, DIALECT_CONCRETE_SET)
    assert f.matches(MOTION_ALARM)  # tns1 used without being declared


@pytest.mark.parametrize(
    ("expr", "dialect", "fault"),
    [
        ("tns1:VideoSource", "http://example.com/xpath", "TopicExpressionDialectUnknownFault"),
        ("", DIALECT_CONCRETE_SET, "InvalidTopicExpressionFault"),
        ("nope:VideoSource", DIALECT_CONCRETE_SET, "InvalidTopicExpressionFault"),
        ("tns1:Video Source", DIALECT_CONCRETE_SET, "InvalidTopicExpressionFault"),
        ("tns1:a//b", DIALECT_CONCRETE_SET, "InvalidTopicExpressionFault"),
        ("tns1:" + "a/" * 600, DIALECT_CONCRETE_SET, "InvalidTopicExpressionFault"),
    ],
)
def test_bad_topic_expressions(expr: str, dialect: str, fault: str) -> None:
    with pytest.raises(Fault) as e:
        parse_topic_expression(expr, NSMAP, dialect)  # type: ignore[arg-type]
    assert f"wsnt:{fault}" in e.value.subcodes


def test_filter_element_and_topic_not_supported() -> None:
    xml = (
        '<wsnt:Filter xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" '
        f'xmlns:tns1="{NS_TNS1}"><wsnt:TopicExpression Dialect="{DIALECT_CONCRETE_SET}">'
        "tns1:VideoSource/MotionAlarm</wsnt:TopicExpression></wsnt:Filter>"
    )
    f = parse_filter(etree.fromstring(xml), TOPICS)
    ce, _clock = world()
    sub = ce.create("pull", f, None)
    motion(ce, True)
    ce.set_property(SIGNAL_LOSS, SRC, (("State", "true"),))
    assert ops(sub.queue.drain(10)) == [(MOTION_ALARM.name, "Initialized", "true")]
    with pytest.raises(Fault) as e:
        parse_filter(etree.fromstring(xml.replace("MotionAlarm", "Nothing")), TOPICS)
    assert "wsnt:TopicNotSupportedFault" in e.value.subcodes


def msg(*items: tuple[str, str]) -> Message:
    return Message(MOTION_ALARM, T0, "Changed", items[:1], items[1:])


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('boolean(//tt:SimpleItem[@Name="State" and @Value="true"])', True),
        ('boolean(//tt:SimpleItem[@Name="State" and @Value="false"])', False),
        ("boolean(//SimpleItem[@Name='Source'])", True),
        ('not(boolean(//tt:SimpleItem[@Name="Rule"]))', True),
        (
            'boolean(//tt:SimpleItem[@Name="Source" and @Value="VideoSource_1"]) and '
            'boolean(//tt:SimpleItem[@Name="State" and @Value="true"])',
            True,
        ),
        ('boolean(//tt:SimpleItem[@Name="X"]) or (boolean(//tt:SimpleItem[@Value="true"]))', True),
        ('boolean(//tt:ElementItem[@Name="State"])', False),
        (
            "boolean(//tt:SimpleItem[@Name=\u201dState\u201d and not(@Value=\u201dfalse\u201d)])",
            True,
        ),
    ],
)
def test_item_filter(expr: str, expected: bool) -> None:
    m = msg(("Source", "VideoSource_1"), ("State", "true"))
    assert ContentFilter(expr).matches(m) is expected


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "boolean(//tt:SimpleItem[@Name=State])",
        'boolean(//tt:Thing[@Name="a"])',
        'boolean(//tt:SimpleItem[@Name="a"]',
        "not(" * 40 + 'boolean(//tt:SimpleItem[@Name="a"])' + ")" * 40,
        'boolean(//tt:SimpleItem[@Name="a"]) extra',
        "$",
    ],
)
def test_bad_item_filters(expr: str) -> None:
    with pytest.raises(Fault) as e:
        ContentFilter(expr)
    assert "wsnt:InvalidMessageContentExpressionFault" in e.value.subcodes


@given(st.text(max_size=200))
def test_item_filter_parser_only_raises_faults(text: str) -> None:
    try:
        ContentFilter(text)
    except Fault:
        pass


# --------------------------------------------------------------------------- xs times


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT60S", 60),
        ("PT1M", 60),
        ("PT600S", 600),
        ("PT2M", 120),
        ("PT10S", 10),
        ("PT0.5S", 0.5),
        ("PT1H1M1S", 3661),
        ("P1D", 86400),
        ("P1DT2H", 93600),
        ("P1W", 604800),
        ("P1Y", 365 * 86400),
        ("P1M", 30 * 86400),
        ("-PT5S", -5),
        (" PT5S ", 5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "5S", "PT5", "P1S", "PTS", "PT1.S", "P1DT"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        duration_seconds(text)


def test_format_and_times() -> None:
    assert format_duration(1) == "PT1S"
    assert format_duration(0.5) == "PT0.5S"
    assert format_duration(3661) == "PT1H1M1S"
    assert format_duration(0) == "PT0S"
    assert utc_text(T0 + 0.9) == "2023-11-14T22:13:20Z"
    assert parse_datetime("2023-11-14T22:13:20Z") == T0
    assert parse_datetime("2023-11-14T22:13:20.123456789Z") == pytest.approx(T0 + 0.123456)
    assert parse_datetime("2023-11-14T23:13:20+01:00") == T0
    assert parse_datetime("2023-11-14T22:13:20") == T0  # no offset: UTC


@given(st.floats(min_value=0.001, max_value=1e6, allow_nan=False))
def test_termination_is_future_and_capped(seconds: float) -> None:
    cfg = EventsConfig()
    t = termination_time(format_duration(seconds), T0, cfg, "X")
    assert T0 < t <= T0 + cfg.max_termination
