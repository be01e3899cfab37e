"""Events and DeviceIO over SOAP, in-process: the real Dispatcher (async handlers), the real
camera registry and stream registry, the event bus; every response is schema-validated."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from lxml import etree

from onvifcam.cameras import CameraRegistry, User
from onvifcam.config import from_dict
from onvifcam.events import EventBus, MotionChanged, RelayChanged, stream_listener
from onvifcam.media.sdp import SessionDescription
from onvifcam.media.stream import StreamRegistry
from onvifcam.onvif.deviceio import DeviceIO
from onvifcam.onvif.events import EventService, TriggerError, parse_trigger
from onvifcam.onvif.soap import (
    PRE_AUTH,
    Context,
    Dispatcher,
    OperationTable,
)
from onvifcam.state import StateStore
from onvifcam.web.server import operation_table
from tests.onvif_schema import envelope, fault_subcodes, security_header, validate

TEV = 'xmlns="http://www.onvif.org/ver10/events/wsdl"'
WSNT = 'xmlns="http://docs.oasis-open.org/wsn/b-2"'
TDS = 'xmlns="http://www.onvif.org/ver10/device/wsdl"'
TMD = 'xmlns="http://www.onvif.org/ver10/deviceIO/wsdl"'
NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "tev": "http://www.onvif.org/ver10/events/wsdl",
    "wsnt": "http://docs.oasis-open.org/wsn/b-2",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "tt": "http://www.onvif.org/ver10/schema",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "tmd": "http://www.onvif.org/ver10/deviceIO/wsdl",
    "wstop": "http://docs.oasis-open.org/wsn/t-1",
}
SDP = (
    "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=t\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n"
)


class Clock:
    t = 1000.0

    def __call__(self) -> float:
        return self.t


class Pub:
    description = "test"

    def kick(self, reason: str) -> None:
        """Nothing to close."""


class World:
    """Cameras, streams, bus, DeviceIO with a fake clock, the Events service, a dispatcher."""

    def __init__(self, tmp_path: Path, events: dict[str, Any] | None = None) -> None:
        cfg = from_dict(
            {
                "server": {"state_dir": str(tmp_path)},
                "events": {"digital_inputs": 2, "relay_outputs": 1, **(events or {})},
                "cameras": [
                    {"name": "Lobby", "path": "lobby", "username": "admin", "password": "secret"}
                ],
            }
        )
        self.streams = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=10)
        self.cams = CameraRegistry(cfg, StateStore(tmp_path), self.streams)
        self.streams.listeners.append(self.cams.stream_changed)
        self.bus = EventBus()
        self.streams.listeners.append(stream_listener(self.bus))
        self.cams.load()
        self.cam = self.cams.cameras["Lobby"]
        self.clock = Clock()
        self.io = DeviceIO(self.bus, clock=self.clock)
        self.events = EventService(self.bus, self.io, self.cams)
        self.disp = Dispatcher(operation_table(self.events), clock_skew=300)
        self.seen: list[bytes] = []

    def context(self, subscription: str = "") -> Any:
        def make(user: User | None, soap_ns: str) -> Context:
            return Context(
                camera=self.cam,
                user=user,
                soap_ns=soap_ns,
                xaddr=lambda s: f"http://127.0.0.1:8080/onvif/{s}_service",
                stream_uri=lambda p, scheme: f"{scheme}://127.0.0.1:8554/{p}",
                snapshot_uri=lambda t: f"http://127.0.0.1:8080/onvif/snapshot?profile={t}",
                subscription=subscription,
            )

        return make

    async def call(
        self,
        body: str,
        *,
        sid: str = "",
        ok: bool = True,
        user: str = "admin",
        password: str = "secret",
        header: str = "",
    ) -> etree._Element:
        """Dispatch as ``user``; validate; the parsed envelope."""
        created = dt.datetime.fromtimestamp(self.cam.now(), dt.UTC).isoformat()
        sec = security_header(user, password, created=created.replace("+00:00", "Z"))
        data = envelope(body, sec + header if user else header)
        resp = await self.disp.dispatch_async(data, self.context(sid), self.cam)
        self.seen.append(resp.body)
        root = validate(resp.body)
        if ok:
            assert resp.status == 200, resp.body.decode()
        else:
            assert resp.status in (400, 401, 500), resp.body.decode()
        return root

    async def create(
        self, extra: str = "<InitialTerminationTime>PT600S</InitialTerminationTime>"
    ) -> str:
        root = await self.call(
            f"<CreatePullPointSubscription {TEV}>{extra}</CreatePullPointSubscription>"
        )
        address = root.findtext(".//tev:SubscriptionReference/wsa:Address", namespaces=NS)
        assert address is not None and address.startswith(
            "http://127.0.0.1:8080/onvif/events_service?subscription="
        )
        return parse_qs(urlsplit(address).query)["subscription"][0]

    async def pull(
        self, sid: str, wait: str = "PT0S", limit: int = 100
    ) -> list[tuple[str, str, dict[str, str]]]:
        root = await self.call(
            f"<PullMessages {TEV}><Timeout>{wait}</Timeout>"
            f"<MessageLimit>{limit}</MessageLimit></PullMessages>",
            sid=sid,
        )
        return messages(root)


def messages(root: etree._Element) -> list[tuple[str, str, dict[str, str]]]:
    """(topic, PropertyOperation, items) of every NotificationMessage."""
    out = []
    for nm in root.iterfind(".//wsnt:NotificationMessage", NS):
        topic = (nm.findtext("wsnt:Topic", namespaces=NS) or "").strip()
        m = nm.find("wsnt:Message/tt:Message", NS)
        assert m is not None and m.get("UtcTime", "").endswith("Z")
        items = {i.get("Name"): i.get("Value") for i in m.iter(f"{{{NS['tt']}}}SimpleItem")}
        out.append((topic, m.get("PropertyOperation", ""), items))
    return out


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path)


# --------------------------------------------------------------------------- discovery


async def test_services_and_capabilities_list_events_and_deviceio(w: World) -> None:
    root = await w.call(
        f"<GetServices {TDS}><IncludeCapability>true</IncludeCapability></GetServices>"
    )
    services = {
        s.findtext("tds:Namespace", namespaces=NS): s for s in root.iterfind(".//tds:Service", NS)
    }
    ev = services["http://www.onvif.org/ver10/events/wsdl"]
    assert ev.findtext("tds:XAddr", namespaces=NS) == "http://127.0.0.1:8080/onvif/events_service"
    cap = ev.find("tds:Capabilities/tev:Capabilities", NS)
    assert cap is not None and cap.get("WSSubscriptionPolicySupport") == "true"
    assert cap.get("MaxPullPoints") == "64" and cap.get("MaxNotificationProducers") == "64"
    dio = services["http://www.onvif.org/ver10/deviceIO/wsdl"]
    assert dio.findtext("tds:XAddr", namespaces=NS).endswith("/deviceio_service")  # type: ignore[union-attr]
    dcap = dio.find("tds:Capabilities/tmd:Capabilities", NS)
    assert dcap is not None and dcap.get("DigitalInputs") == "2" and dcap.get("RelayOutputs") == "1"

    root = await w.call(
        f"<GetCapabilities {TDS}><Category>All</Category></GetCapabilities>", user=""
    )
    assert root.findtext(".//tt:Events/tt:XAddr", namespaces=NS).endswith("/events_service")  # type: ignore[union-attr]
    assert root.findtext(".//tt:Events/tt:WSPullPointSupport", namespaces=NS) == "true"
    assert root.findtext(".//tt:Extension/tt:DeviceIO/tt:RelayOutputs", namespaces=NS) == "1"
    assert root.findtext(".//tt:Device/tt:IO/tt:InputConnectors", namespaces=NS) == "2"
    root = await w.call(
        f"<GetCapabilities {TDS}><Category>Events</Category></GetCapabilities>", user=""
    )
    assert root.find(".//tt:Media", NS) is None and root.find(".//tt:Events", NS) is not None
    root = await w.call(f"<GetServiceCapabilities {TEV}/>", user="")  # PRE_AUTH
    assert root.find(".//tev:Capabilities", NS).get("PersistentNotificationStorage") == "false"  # type: ignore[union-attr]


async def test_event_properties_describe_every_topic(w: World) -> None:
    root = await w.call(f"<GetEventProperties {TEV}/>")
    assert root.findtext(".//wsnt:FixedTopicSet", namespaces=NS) == "true"
    ts = root.find(".//wstop:TopicSet", NS)
    assert ts is not None
    leaves = {}
    for el in ts.iter():
        if el.get(f"{{{NS['wstop']}}}topic") == "true":
            path = [
                etree.QName(e).localname
                for e in reversed(list(el.iterancestors()))
                if e is not ts and e in ts.iter()
            ]
            desc = el.find("tt:MessageDescription", NS)
            assert desc is not None and desc.get("IsProperty") == "true"
            names = [
                (d.get("Name"), d.get("Type"))
                for d in desc.iter(f"{{{NS['tt']}}}SimpleItemDescription")
            ]
            leaves["/".join([*path, etree.QName(el).localname])] = names
    assert leaves["VideoSource/MotionAlarm"] == [
        ("Source", "tt:ReferenceToken"),
        ("State", "xs:boolean"),
    ]
    assert leaves["VideoSource/SignalLoss"][1] == ("State", "xs:boolean")
    assert leaves["RuleEngine/CellMotionDetector/Motion"][-1] == ("IsMotion", "xs:boolean")
    assert leaves["Device/Trigger/DigitalInput"] == [
        ("InputToken", "tt:ReferenceToken"),
        ("LogicalState", "xs:boolean"),
    ]
    assert leaves["Device/Trigger/Relay"][1] == ("LogicalState", "tt:RelayLogicalState")
    assert ts.nsmap["xs"] == "http://www.w3.org/2001/XMLSchema"  # the Type prefixes resolve
    dialects = [d.text for d in root.iterfind(".//wsnt:TopicExpressionDialect", NS)]
    assert "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet" in dialects


async def test_no_inputs_or_relays_means_no_such_topics(tmp_path: Path) -> None:
    w = World(tmp_path, {"digital_inputs": 0, "relay_outputs": 0})
    root = await w.call(f"<GetEventProperties {TEV}/>")
    text = etree.tostring(root).decode()
    assert "MotionAlarm" in text and "DigitalInput" not in text and "Relay" not in text
    sid = await w.create()
    assert {t for t, _o, _i in await w.pull(sid)} == {
        "tns1:VideoSource/MotionAlarm",
        "tns1:RuleEngine/CellMotionDetector/Motion",
        "tns1:VideoSource/SignalLoss",
    }


# --------------------------------------------------------------------------- pull points


async def test_pull_point_initialized_then_motion_changed(w: World) -> None:
    sid = await w.create()
    got = await w.pull(sid)
    assert {(t, o) for t, o, _i in got} == {
        ("tns1:VideoSource/MotionAlarm", "Initialized"),
        ("tns1:RuleEngine/CellMotionDetector/Motion", "Initialized"),
        ("tns1:VideoSource/SignalLoss", "Initialized"),
        ("tns1:Device/Trigger/DigitalInput", "Initialized"),
        ("tns1:Device/Trigger/Relay", "Initialized"),
    }
    by_topic = {t: i for t, _o, i in got if t != "tns1:Device/Trigger/DigitalInput"}
    assert by_topic["tns1:VideoSource/MotionAlarm"] == {"Source": "VideoSource_1", "State": "false"}
    assert by_topic["tns1:VideoSource/SignalLoss"]["State"] == "true"  # nobody publishes yet
    assert by_topic["tns1:RuleEngine/CellMotionDetector/Motion"] == {
        "VideoSourceConfigurationToken": "VideoSourceConfig_1",
        "VideoAnalyticsConfigurationToken": "VideoAnalyticsConfig_1",
        "Rule": "MyMotionDetectorRule",
        "IsMotion": "false",
    }
    assert by_topic["tns1:Device/Trigger/Relay"] == {
        "RelayToken": "Relay_1",
        "LogicalState": "inactive",
    }
    assert sorted(i["InputToken"] for t, _o, i in got if t.endswith("DigitalInput")) == [
        "DI_1",
        "DI_2",
    ]

    w.bus.publish(MotionChanged(w.cam.key, True))
    got = await w.pull(sid)
    assert [(t, o, i.get("State", i.get("IsMotion"))) for t, o, i in got] == [
        ("tns1:VideoSource/MotionAlarm", "Changed", "true"),
        ("tns1:RuleEngine/CellMotionDetector/Motion", "Changed", "true"),
    ]


async def test_times_are_utc_with_z_and_pull_extends_the_subscription(w: World) -> None:
    root = await w.call(
        f"<CreatePullPointSubscription {TEV}><InitialTerminationTime>PT10S</InitialTerminationTime>"
        "</CreatePullPointSubscription>"
    )
    cur = root.findtext(".//wsnt:CurrentTime", namespaces=NS)
    term = root.findtext(".//wsnt:TerminationTime", namespaces=NS)
    assert cur and term and cur.endswith("Z") and term.endswith("Z")
    span = dt.datetime.fromisoformat(term) - dt.datetime.fromisoformat(cur)
    assert span.total_seconds() == pytest.approx(10, abs=1)
    sid = parse_qs(urlsplit(root.findtext(".//wsa:Address", namespaces=NS) or "").query)[
        "subscription"
    ][0]
    root = await w.call(
        f"<PullMessages {TEV}><Timeout>PT0S</Timeout><MessageLimit>2</MessageLimit></PullMessages>",
        sid=sid,
    )
    assert len(messages(root)) == 2  # MessageLimit
    cur = root.findtext("s:Body/tev:PullMessagesResponse/tev:CurrentTime", namespaces=NS)
    term = root.findtext("s:Body/tev:PullMessagesResponse/tev:TerminationTime", namespaces=NS)
    assert cur and term and cur.endswith("Z") and term.endswith("Z")
    w.events.for_camera(w.cam).subs[sid].termination = w.cam.now() + 1
    await w.pull(sid, "PT0.2S", 1)  # an empty long poll extends the subscription by its Timeout
    assert w.events.for_camera(w.cam).subs[sid].termination >= w.cam.now()


async def test_long_poll_returns_on_the_first_event(w: World) -> None:
    sid = await w.create()
    await w.pull(sid)  # the Initialized messages
    task = asyncio.ensure_future(w.pull(sid, "PT60S"))
    await asyncio.sleep(0.05)
    assert not task.done()
    w.io.set_input(w.cam, "DI_2", True)
    got = await asyncio.wait_for(task, 30)
    assert got == [
        (
            "tns1:Device/Trigger/DigitalInput",
            "Changed",
            {"InputToken": "DI_2", "LogicalState": "true"},
        )
    ]


async def test_empty_long_poll_returns_empty(w: World) -> None:
    sid = await w.create()
    await w.pull(sid)
    assert await w.pull(sid, "PT0.1S") == []


async def test_a_newer_pull_ends_the_older_one(w: World) -> None:
    sid = await w.create()
    await w.pull(sid)
    first = asyncio.ensure_future(w.pull(sid, "PT60S"))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(w.pull(sid, "PT60S"))
    assert await asyncio.wait_for(first, 30) == []
    w.bus.publish(MotionChanged(w.cam.key, True))
    assert len(await asyncio.wait_for(second, 30)) == 2


async def test_unsubscribe_wakes_a_waiting_pull_and_ends_the_pull_point(w: World) -> None:
    sid = await w.create()
    await w.pull(sid)
    waiting = asyncio.ensure_future(w.pull(sid, "PT60S"))
    await asyncio.sleep(0.05)
    await w.call(f"<Unsubscribe {WSNT}/>", sid=sid)
    assert await asyncio.wait_for(waiting, 30) == []
    root = await w.call(
        f"<PullMessages {TEV}><Timeout>PT1S</Timeout><MessageLimit>1</MessageLimit></PullMessages>",
        sid=sid,
        ok=False,
    )
    assert "ter:ResourceUnknown" in fault_subcodes(etree.tostring(root))


async def test_sync_point_renew_and_wsa_to_fallback(w: World) -> None:
    sid = await w.create()
    await w.pull(sid)
    await w.call(f"<SetSynchronizationPoint {TEV}/>", sid=sid)
    assert {o for _t, o, _i in await w.pull(sid)} == {"Initialized"}
    root = await w.call(f"<Renew {WSNT}><TerminationTime>PT120S</TerminationTime></Renew>", sid=sid)
    term = root.findtext(".//wsnt:RenewResponse/wsnt:TerminationTime", namespaces=NS)
    cur = root.findtext(".//wsnt:RenewResponse/wsnt:CurrentTime", namespaces=NS)
    assert term and cur
    span = dt.datetime.fromisoformat(term) - dt.datetime.fromisoformat(cur)
    assert span.total_seconds() == pytest.approx(120, abs=1)
    # a client that posts to events_service but names the pull point in wsa:To
    to = (
        '<wsa:To xmlns:wsa="http://www.w3.org/2005/08/addressing">'
        f"http://127.0.0.1:8080/onvif/events_service?subscription={sid}</wsa:To>"
    )
    await w.call(f"<SetSynchronizationPoint {TEV}/>", header=to)
    assert len(await w.pull(sid)) == 6
    root = await w.call(f"<SetSynchronizationPoint {TEV}/>", ok=False)
    assert "ter:InvalidArgVal" in fault_subcodes(etree.tostring(root))


async def test_filtered_pull_point(w: World) -> None:
    flt = (
        '<Filter><wsnt:TopicExpression xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" '
        'xmlns:tns1="http://www.onvif.org/ver10/topics" '
        'Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">'
        "tns1:VideoSource/MotionAlarm|tns1:Device//.</wsnt:TopicExpression>"
        '<wsnt:MessageContent xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" '
        'Dialect="http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter">'
        'not(boolean(//tt:SimpleItem[@Name="InputToken" and @Value="DI_2"]))'
        "</wsnt:MessageContent></Filter>"
    )
    sid = await w.create(flt)
    got = await w.pull(sid)
    assert sorted(t for t, _o, _i in got) == [
        "tns1:Device/Trigger/DigitalInput",
        "tns1:Device/Trigger/Relay",
        "tns1:VideoSource/MotionAlarm",
    ]
    bad = flt.replace("MotionAlarm|tns1:Device//.", "Nothing")
    root = await w.call(
        f"<CreatePullPointSubscription {TEV}>{bad}</CreatePullPointSubscription>", ok=False
    )
    assert "wsnt:TopicNotSupportedFault" in fault_subcodes(etree.tostring(root))


async def test_bad_requests_get_specific_faults(w: World) -> None:
    root = await w.call(
        f"<CreatePullPointSubscription {TEV}><InitialTerminationTime>yesterday"
        "</InitialTerminationTime></CreatePullPointSubscription>",
        ok=False,
    )
    assert "wsnt:UnacceptableInitialTerminationTimeFault" in fault_subcodes(etree.tostring(root))
    sid = await w.create()
    root = await w.call(
        f"<PullMessages {TEV}><Timeout>soon</Timeout><MessageLimit>1</MessageLimit></PullMessages>",
        sid=sid,
        ok=False,
    )
    assert "ter:InvalidArgVal" in fault_subcodes(etree.tostring(root))
    root = await w.call(
        f"<PullMessages {TEV}><Timeout>PT1S</Timeout><MessageLimit>1</MessageLimit></PullMessages>",
        sid="0123456789abcdef",
        ok=False,
    )
    assert "ter:ResourceUnknown" in fault_subcodes(etree.tostring(root))
    for url in ("", "ftp://127.0.0.1/x", "http:///nohost", "http://127.0.0.1/" + "x" * 2000):
        root = await w.call(
            f"<Subscribe {WSNT}><ConsumerReference><wsa:Address "
            f'xmlns:wsa="http://www.w3.org/2005/08/addressing">{url}</wsa:Address>'
            "</ConsumerReference></Subscribe>",
            ok=False,
        )
        assert "ter:InvalidArgVal" in fault_subcodes(etree.tostring(root))


async def test_subscription_limit(tmp_path: Path) -> None:
    w = World(tmp_path, {"max_subscriptions": 2})
    await w.create()
    await w.create()
    root = await w.call(f"<CreatePullPointSubscription {TEV}/>", ok=False)
    assert "wsnt:SubscribeCreationFailedFault" in fault_subcodes(etree.tostring(root))


async def test_events_need_credentials(w: World) -> None:
    root = await w.call(f"<CreatePullPointSubscription {TEV}/>", user="", ok=False)
    assert "ter:NotAuthorized" in fault_subcodes(etree.tostring(root))
    w.cam.create_users([User("viewer", "pw", "User")])
    sid = await w.create()  # READ_MEDIA: every level
    await w.call(f"<GetEventProperties {TEV}/>", user="viewer", password="pw")
    root = await w.call(
        f"<SetRelayOutputState {TDS}><RelayOutputToken>Relay_1</RelayOutputToken>"
        "<LogicalState>active</LogicalState></SetRelayOutputState>",
        user="viewer",
        password="pw",
        ok=False,
    )
    assert "ter:NotAuthorized" in fault_subcodes(etree.tostring(root))
    assert sid


# --------------------------------------------------------------------------- stream state


async def test_signal_loss_follows_the_publisher(w: World) -> None:
    sid = await w.create()
    await w.pull(sid)
    s = w.streams.get_or_create("lobby")
    pub = Pub()
    s.publish(pub, SessionDescription.parse(SDP))
    assert await w.pull(sid) == [
        ("tns1:VideoSource/SignalLoss", "Changed", {"Source": "VideoSource_1", "State": "false"})
    ]
    s.unpublish(pub, "gone")
    assert await w.pull(sid) == [
        ("tns1:VideoSource/SignalLoss", "Changed", {"Source": "VideoSource_1", "State": "true"})
    ]
    other = w.streams.get_or_create("elsewhere")
    other.publish(Pub(), SessionDescription.parse(SDP))
    assert await w.pull(sid) == []  # another path: not this camera


# --------------------------------------------------------------------------- DeviceIO


async def test_relays_over_device_and_deviceio(w: World) -> None:
    sid = await w.create()
    await w.pull(sid)
    root = await w.call(f"<GetRelayOutputs {TDS}/>")
    relay = root.find(".//tds:RelayOutputs", NS)
    assert relay is not None and relay.get("token") == "Relay_1"
    assert relay.findtext("tt:Properties/tt:Mode", namespaces=NS) == "Bistable"
    await w.call(
        f"<SetRelayOutputSettings {TDS} xmlns:tt='http://www.onvif.org/ver10/schema'>"
        "<RelayOutputToken>Relay_1</RelayOutputToken><Properties><tt:Mode>Monostable</tt:Mode>"
        "<tt:DelayTime>PT2S</tt:DelayTime><tt:IdleState>open</tt:IdleState></Properties>"
        "</SetRelayOutputSettings>"
    )
    root = await w.call(f"<GetRelayOutputs {TDS}/>")  # DeviceIO answers with the tds element
    assert root.findtext(".//tds:RelayOutputs/tt:Properties/tt:DelayTime", namespaces=NS) == "PT2S"
    assert root.findtext(".//tds:RelayOutputs/tt:Properties/tt:IdleState", namespaces=NS) == "open"
    assert w.cam.doc["relays"]["Relay_1"]["mode"] == "Monostable"  # persisted

    await w.call(
        f"<SetRelayOutputState {TDS}><RelayOutputToken>Relay_1</RelayOutputToken>"
        "<LogicalState>active</LogicalState></SetRelayOutputState>"
    )
    assert await w.pull(sid) == [
        (
            "tns1:Device/Trigger/Relay",
            "Changed",
            {"RelayToken": "Relay_1", "LogicalState": "active"},
        )
    ]
    w.clock.t += 1.9
    assert w.io.expire() == 0
    w.clock.t += 0.2
    assert w.io.expire() == 1  # Monostable: back to inactive after DelayTime
    assert await w.pull(sid) == [
        (
            "tns1:Device/Trigger/Relay",
            "Changed",
            {"RelayToken": "Relay_1", "LogicalState": "inactive"},
        )
    ]
    # Bistable through DeviceIO's own SetRelayOutputSettings: stays active
    await w.call(
        f"<SetRelayOutputSettings {TMD} xmlns:tt='http://www.onvif.org/ver10/schema'>"
        '<RelayOutput token="Relay_1"><tt:Properties><tt:Mode>Bistable</tt:Mode>'
        "<tt:DelayTime>PT1S</tt:DelayTime><tt:IdleState>closed</tt:IdleState></tt:Properties>"
        "</RelayOutput></SetRelayOutputSettings>"
    )
    await w.call(
        f"<SetRelayOutputState {TDS}><RelayOutputToken>Relay_1</RelayOutputToken>"
        "<LogicalState>active</LogicalState></SetRelayOutputState>"
    )
    w.clock.t += 100
    assert w.io.expire() == 0 and w.io.relays(w.cam) == {"Relay_1": True}


async def test_deviceio_reads_and_faults(w: World) -> None:
    root = await w.call(f"<GetDigitalInputs {TMD}/>")
    assert [d.get("token") for d in root.iterfind(".//tmd:DigitalInputs", NS)] == ["DI_1", "DI_2"]
    root = await w.call(f"<GetRelayOutputOptions {TMD}/>", user="")
    opts = root.find(".//tmd:RelayOutputOptions", NS)
    assert opts is not None and opts.get("token") == "Relay_1"
    assert [m.text for m in opts.iterfind("tmd:Mode", NS)] == ["Monostable", "Bistable"]
    root = await w.call(f"<GetServiceCapabilities {TMD}/>", user="")
    assert root.find(".//tmd:Capabilities", NS).get("DigitalInputs") == "2"  # type: ignore[union-attr]
    for body in (
        f"<GetVideoOutputs {TMD}/>",
        f"<GetSerialPorts {TMD}/>",
    ):
        await w.call(body)
    cases = [
        (
            f"<SetRelayOutputState {TDS}><RelayOutputToken>Relay_9</RelayOutputToken>"
            "<LogicalState>active</LogicalState></SetRelayOutputState>",
            "ter:RelayToken",
        ),
        (
            f"<SetRelayOutputState {TDS}><RelayOutputToken>Relay_1</RelayOutputToken>"
            "<LogicalState>on</LogicalState></SetRelayOutputState>",
            "ter:InvalidArgs",
        ),
        (
            f"<SetRelayOutputSettings {TDS} xmlns:tt='http://www.onvif.org/ver10/schema'>"
            "<RelayOutputToken>Relay_1</RelayOutputToken><Properties><tt:Mode>Monostable</tt:Mode>"
            "<tt:DelayTime>PT0S</tt:DelayTime><tt:IdleState>open</tt:IdleState></Properties>"
            "</SetRelayOutputSettings>",
            "ter:ModeError",
        ),
        (
            f"<GetRelayOutputOptions {TMD}><RelayOutputToken>x</RelayOutputToken>"
            "</GetRelayOutputOptions>",
            "ter:RelayToken",
        ),
    ]
    for body, subcode in cases:
        root = await w.call(body, ok=False)
        assert subcode in fault_subcodes(etree.tostring(root)), body


def test_relay_change_events_are_published(w: World) -> None:
    got: list[RelayChanged] = []
    w.bus.subscribe(got.append, RelayChanged)  # type: ignore[arg-type]
    assert w.io.set_relay(w.cam, "Relay_1", True) is True
    assert w.io.set_relay(w.cam, "Relay_1", True) is False
    assert [(e.relay, e.state) for e in got] == [("Relay_1", True)]


# --------------------------------------------------------------------------- trigger API


def test_trigger_validation_names_the_field(w: World) -> None:
    assert parse_trigger({"type": "motion", "state": True}, w.cam).token == "VideoSource_1"
    assert (
        parse_trigger({"type": "digital_input", "state": False, "input": "DI_2"}, w.cam).token
        == "DI_2"
    )
    cases: list[tuple[Any, int, str]] = [
        ([], 400, ""),
        ({"state": True}, 422, "type"),
        ({"type": "smoke", "state": True}, 422, "type"),
        ({"type": "motion", "state": "on"}, 422, "state"),
        ({"type": "motion"}, 422, "state"),
        ({"type": "digital_input", "state": True}, 422, "input"),  # two inputs: must name one
        ({"type": "digital_input", "state": True, "input": "DI_7"}, 422, "input"),
        ({"type": "motion", "state": True, "source": "VideoSource_2"}, 422, "source"),
        ({"type": "motion", "state": True, "colour": "red"}, 422, "colour"),
    ]
    for payload, status, field in cases:
        with pytest.raises(TriggerError) as e:
            parse_trigger(payload, w.cam)
        assert (e.value.status, e.value.field) == (status, field), payload


async def test_trigger_reports_changes(w: World) -> None:
    sid = await w.create()
    await w.pull(sid)
    out = w.events.trigger(w.cam, {"type": "motion", "state": True})
    assert out == {"camera": "Lobby", "type": "motion", "state": True, "changed": True}
    assert w.events.trigger(w.cam, {"type": "motion", "state": True})["changed"] is False
    out = w.events.trigger(w.cam, {"type": "digital_input", "state": True, "input": "DI_1"})
    assert out["input"] == "DI_1" and out["changed"] is True
    assert [t for t, _o, _i in await w.pull(sid)] == [
        "tns1:VideoSource/MotionAlarm",
        "tns1:RuleEngine/CellMotionDetector/Motion",
        "tns1:Device/Trigger/DigitalInput",
    ]


# --------------------------------------------------------------------------- dispatcher


async def test_dispatcher_runs_async_handlers_and_refuses_them_in_sync_dispatch(w: World) -> None:
    table = OperationTable()

    @table.op("urn:test", "Slow", PRE_AUTH)
    async def slow(ctx: Context, req: etree._Element) -> etree._Element:
        await asyncio.sleep(0)
        return etree.Element("{http://www.onvif.org/ver10/device/wsdl}GetHostnameResponse")

    @table.op("urn:test", "Raw", PRE_AUTH)
    def raw(ctx: Context, req: etree._Element) -> bytes:
        return b'<h:SetHostnameResponse xmlns:h="http://www.onvif.org/ver10/device/wsdl"/>'

    disp = Dispatcher(table)
    data = envelope('<Slow xmlns="urn:test"/>')
    resp = await disp.dispatch_async(data, w.context(), w.cam)
    assert resp.status == 200 and b"GetHostnameResponse" in resp.body
    resp = disp.dispatch(data, w.context(), w.cam)
    assert resp.status == 500 and b"internal error" in resp.body
    # a handler may hand back its element already serialised: wrapped in the same envelope
    resp = disp.dispatch(envelope('<Raw xmlns="urn:test"/>'), w.context(), w.cam)
    root = validate(resp.body)
    assert resp.status == 200 and root[0][0].tag.endswith("}SetHostnameResponse")
    assert resp.body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<s:Envelope ')
