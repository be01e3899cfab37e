"""WS-Discovery sans-I/O core: parsing, building, scope/type matching and responder decisions."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onvifcam.config import ConfigError, from_dict
from onvifcam.discovery import wsdiscovery as w
from onvifcam.discovery.client import Device, format_table

ONVIF = "onvif://www.onvif.org"
SCOPES = (
    f"{ONVIF}/type/video_encoder",
    f"{ONVIF}/Profile/Streaming",
    f"{ONVIF}/Profile/T",
    f"{ONVIF}/hardware/Virtual_Camera",
    f"{ONVIF}/name/Front_Door",
    f"{ONVIF}/location/virtual",
)
SRC = ("10.0.0.9", 40000)

# What the npm `onvif` package sends (default namespaces, dn: declared on the Envelope).
NPM_PROBE = (
    b'<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope" '
    b'xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><Header>'
    b'<wsa:MessageID xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing">'
    b"urn:uuid:8d3c0ee4-6a8e-4a5e-9a2e-2ad0f35d3a41</wsa:MessageID>"
    b'<wsa:To xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing">'
    b"urn:schemas-xmlsoap-org:ws:2005:04:discovery</wsa:To>"
    b'<wsa:Action xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing">'
    b"http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</wsa:Action></Header><Body>"
    b'<Probe xmlns="http://schemas.xmlsoap.org/ws/2005/04/discovery" '
    b'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
    b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    b"<Types>dn:NetworkVideoTransmitter</Types><Scopes /></Probe></Body></Envelope>"
)


def target(n: int, address: str = "", scopes: tuple[str, ...] = SCOPES) -> w.Target:
    return w.Target(
        key=f"cam{n}",
        epr=f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
        scopes=scopes,
        xaddr=f"http://{{host}}:{8100 + n}/onvif/device_service",
        host=address,
        address=address,
    )


def responder(n: int = 3, **kw: object) -> w.Responder:
    r = w.Responder(instance_id=1000, rng=random.Random(1), **kw)  # type: ignore[arg-type]
    r.update([target(i) for i in range(n)])
    return r


def matches(replies: list[w.Reply]) -> list[w.Endpoint]:
    out = []
    for rep in replies:
        msg = w.parse(rep.data)
        assert isinstance(msg, w.ProbeMatches | w.ResolveMatches), msg
        assert len(msg.matches) == 1  # one match per message: npm `onvif` needs that
        out.append(msg.matches[0])
    return out


# --------------------------------------------------------------------------- scope matching
@pytest.mark.parametrize(
    ("probe", "scope", "expected"),
    [
        (f"{ONVIF}/Profile/Streaming", f"{ONVIF}/Profile/Streaming", True),
        (f"{ONVIF}/Profile", f"{ONVIF}/Profile/Streaming", True),
        (f"{ONVIF}", f"{ONVIF}/Profile/Streaming", True),
        (f"{ONVIF}/", f"{ONVIF}/Profile/Streaming", True),
        (f"{ONVIF}/Profile/", f"{ONVIF}/Profile/Streaming", True),  # trailing slash
        (f"{ONVIF}/Profile/Stream", f"{ONVIF}/Profile/Streaming", False),  # segments, not text
        (f"{ONVIF}/profile/streaming", f"{ONVIF}/Profile/Streaming", False),  # path: case
        ("ONVIF://WWW.ONVIF.ORG/Profile/Streaming", f"{ONVIF}/Profile/Streaming", True),
        (f"{ONVIF}/Profile/Streaming/x", f"{ONVIF}/Profile/Streaming", False),
        ("onvif://other.org/Profile/Streaming", f"{ONVIF}/Profile/Streaming", False),
        ("http://www.onvif.org/Profile/Streaming", f"{ONVIF}/Profile/Streaming", False),
        (f"{ONVIF}/name/Front%20Door", f"{ONVIF}/name/Front Door", True),  # canonicalised
        (f"{ONVIF}/name/Front_Door", f"{ONVIF}/name/Front%5FDoor", True),
        (f"{ONVIF}/Profile/./Streaming", f"{ONVIF}/Profile/Streaming", False),
        (f"{ONVIF}/Profile/../Profile", f"{ONVIF}/Profile/Streaming", False),
        (f"{ONVIF}/Profile?x=1", f"{ONVIF}/Profile/Streaming", True),  # query not compared
        (f"{ONVIF}/Profile#frag", f"{ONVIF}/Profile/Streaming", True),
        ("urn:a:b", "urn:a:b", True),
        ("not a uri", f"{ONVIF}/Profile", False),
        ("", f"{ONVIF}/Profile", False),
    ],
)
def test_rfc3986_rule(probe: str, scope: str, expected: bool) -> None:
    assert w.scope_matches(probe, scope, w.MATCH_RFC3986) is expected
    assert w.scope_matches(probe, scope, w.MATCH_RFC2396) is expected  # the 2005/04 name


def test_other_rules() -> None:
    s = f"{ONVIF}/Profile/Streaming"
    assert w.scope_matches(s, s, w.MATCH_STRCMP0)
    assert not w.scope_matches(f"{ONVIF}/Profile", s, w.MATCH_STRCMP0)
    assert not w.scope_matches(s.upper(), s, w.MATCH_STRCMP0)
    u = "urn:uuid:6BA7B810-9DAD-11D1-80B4-00C04FD430C8"
    assert w.scope_matches(u, "uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8", w.MATCH_UUID)
    assert not w.scope_matches(u, "urn:uuid:00000000-0000-0000-0000-000000000000", w.MATCH_UUID)
    assert not w.scope_matches(s, s, w.MATCH_LDAP)  # not supported: no match


def test_types_match() -> None:
    offered = w.ONVIF_TYPES
    assert w.types_match([], offered)
    assert w.types_match([w.NVT], offered)
    assert w.types_match([w.DEVICE, w.NVT], offered)
    assert w.types_match([w.QName(None, "NetworkVideoTransmitter")], offered)  # bad prefix
    assert not w.types_match([w.QName("urn:other", "NetworkVideoTransmitter")], offered)
    assert not w.types_match([w.QName(w.NS_DN, "Printer")], offered)


# --------------------------------------------------------------------------- parsing
def test_parse_npm_onvif_probe() -> None:
    msg = w.parse(NPM_PROBE)
    assert isinstance(msg, w.Probe)
    assert msg.types == (w.NVT,)
    assert msg.scopes == ()
    assert msg.match_by == w.MATCH_RFC3986
    assert msg.header.message_id == "urn:uuid:8d3c0ee4-6a8e-4a5e-9a2e-2ad0f35d3a41"


def test_roundtrip_every_message() -> None:
    ep = w.Endpoint("urn:uuid:1", w.ONVIF_TYPES, SCOPES, ("http://1.2.3.4/onvif",), 7)
    h = w.Header(w.ACTION_HELLO, "urn:uuid:m", to=w.TO_DISCOVERY, instance_id=5, message_number=9)
    hello = w.parse(w.build_hello(h, ep))
    assert isinstance(hello, w.Hello)
    assert hello.endpoint == ep
    assert (hello.header.instance_id, hello.header.message_number) == (5, 9)
    bye = w.parse(w.build_bye(h, "urn:uuid:1"))
    assert isinstance(bye, w.Bye) and bye.epr == "urn:uuid:1"
    pm = w.parse(w.build_probe_matches(w.Header(w.ACTION_PROBE_MATCHES, relates_to="r"), [ep]))
    assert isinstance(pm, w.ProbeMatches) and pm.matches == (ep,) and pm.header.relates_to == "r"
    rm = w.parse(w.build_resolve_matches(w.Header(w.ACTION_RESOLVE_MATCHES), [ep]))
    assert isinstance(rm, w.ResolveMatches) and rm.matches == (ep,)
    probe = w.parse(w.build_probe([w.DEVICE], [f"{ONVIF}/name/a b"], w.MATCH_STRCMP0))
    assert isinstance(probe, w.Probe)
    assert probe.types == (w.DEVICE,)
    assert probe.scopes == (f"{ONVIF}/name/a%20b",)  # spaces are escaped in a URI list
    assert probe.match_by == w.MATCH_STRCMP0
    res = w.parse(w.build_resolve("urn:uuid:1"))
    assert isinstance(res, w.Resolve) and res.epr == "urn:uuid:1"
    custom = w.parse(w.build_probe([w.QName("urn:x", "Thing")]))
    assert isinstance(custom, w.Probe) and custom.types == (w.QName("urn:x", "Thing"),)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed"),
        (b"   ", "malformed"),
        (b"<Envelope", "malformed"),
        (b"\xff\xfe\x00<", "malformed"),
        (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\r\n", "malformed"),
        (b"<html><body>hi</body></html>", "foreign"),
        (
            b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
            b'<x:Get xmlns:x="urn:x"/></s:Body></s:Envelope>',
            "foreign",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
            b'"&lol;&lol;&lol;">]><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">'
            b"<s:Body>&lol2;</s:Body></s:Envelope>",
            "malformed",
        ),
        (NPM_PROBE.replace(b"urn:uuid:8d3c0ee4-6a8e-4a5e-9a2e-2ad0f35d3a41", b""), "malformed"),
        (b"<a>" + b"x" * 20000 + b"</a>", "oversized"),
        (
            b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
            b'<d:Hello xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"/>'
            b"</s:Body></s:Envelope>",
            "malformed",  # a Hello without an endpoint reference
        ),
    ],
)
def test_parse_rejects(data: bytes, reason: str) -> None:
    msg = w.parse(data)
    assert isinstance(msg, w.Ignored)
    assert msg.reason == reason


def test_parse_ws_addressing_1_0_reply() -> None:
    ep = w.Endpoint("urn:uuid:1", w.ONVIF_TYPES, SCOPES, ("http://1.2.3.4/onvif",), 1)
    data = w.build_probe_matches(w.Header(w.ACTION_PROBE_MATCHES, relates_to="r"), [ep])
    msg = w.parse(data.replace(w.NS_WSA.encode(), w.NS_WSA10.encode()))
    assert isinstance(msg, w.ProbeMatches)
    assert msg.matches == (ep,) and msg.header.relates_to == "r"


def test_parse_soap11_probe_and_reply_in_kind() -> None:
    data = w.build_probe().replace(w.NS_SOAP12.encode(), w.NS_SOAP11.encode())
    msg = w.parse(data)
    assert isinstance(msg, w.Probe) and msg.header.soap_ns == w.NS_SOAP11
    r = responder(1)
    (reply,) = r.receive(data, SRC, "10.0.0.1", True, 0.0)
    assert w.NS_SOAP11.encode() in reply.data
    assert isinstance(w.parse(reply.data), w.ProbeMatches)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=4096))
def test_parse_never_raises_on_bytes(data: bytes) -> None:
    assert w.parse(data) is not None


_SNIPPETS = [NPM_PROBE, w.build_probe(), w.build_resolve("urn:uuid:1")]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(_SNIPPETS),
    st.integers(min_value=0, max_value=900),
    st.integers(min_value=0, max_value=60),
    st.binary(max_size=40),
)
def test_parse_never_raises_on_mutations(base: bytes, at: int, cut: int, junk: bytes) -> None:
    data = base[:at] + junk + base[at + cut :]
    assert w.parse(data) is not None
    r = responder(2)
    r.receive(data, SRC, "10.0.0.1", True, 0.0)  # nor does the responder


@given(st.text(max_size=80), st.text(max_size=80), st.sampled_from(list(w.SUPPORTED_RULES)))
def test_scope_matching_never_raises(a: str, b: str, rule: str) -> None:
    assert w.scope_matches(a, b, rule) in (True, False)


# --------------------------------------------------------------------------- responder
def test_one_probe_match_per_target_with_own_identity() -> None:
    r = responder(3)
    replies = r.receive(NPM_PROBE, SRC, "10.0.0.1", True, 0.0)
    eps = matches(replies)
    assert sorted(e.epr for e in eps) == sorted(target(i).epr for i in range(3))
    for rep, ep in zip(replies, eps, strict=True):
        assert rep.dest == SRC
        assert 0.0 <= rep.delay <= w.APP_MAX_DELAY
        assert rep.repeat == 0
        assert ep.types == w.ONVIF_TYPES
        assert f"{ONVIF}/Profile/Streaming" in ep.scopes
        n = int(ep.epr[-12:])
        assert ep.xaddrs == (f"http://10.0.0.1:{8100 + n}/onvif/device_service",)
        assert ep.metadata_version == 1
        msg = w.parse(rep.data)
        assert isinstance(msg, w.ProbeMatches)
        assert msg.header.relates_to == "urn:uuid:8d3c0ee4-6a8e-4a5e-9a2e-2ad0f35d3a41"
        assert msg.header.to == w.TO_ANONYMOUS
        assert msg.header.instance_id == 1000


@pytest.mark.parametrize(
    ("types", "scopes", "rule", "count"),
    [
        ([w.NVT], [], "", 3),
        ([w.DEVICE], [], "", 3),
        ([], [], "", 3),
        ([w.NVT, w.DEVICE], [f"{ONVIF}/Profile/Streaming"], "", 3),
        ([w.QName(w.NS_DN, "Printer")], [], "", 0),
        ([], [f"{ONVIF}/Profile/Streaming", f"{ONVIF}/Profile/G"], "", 0),
        ([], [f"{ONVIF}/name/Front_Door"], w.MATCH_STRCMP0, 3),
        ([], [f"{ONVIF}/name"], w.MATCH_STRCMP0, 0),
    ],
)
def test_probe_filters(types: list[w.QName], scopes: list[str], rule: str, count: int) -> None:
    r = responder(3)
    assert len(r.receive(w.build_probe(types, scopes, rule), SRC, "h", True, 0.0)) == count


def test_unsupported_rule_gets_one_fault() -> None:
    r = responder(3)
    probe = w.build_probe([], [f"{ONVIF}/name"], w.MATCH_LDAP)
    (reply,) = r.receive(probe, SRC, "h", True, 0.0)
    fault = w.parse(reply.data)
    assert isinstance(fault, w.SoapFault)
    assert fault.subcode == "d:MatchingRuleNotSupported"
    assert r.stats["unsupported_rule"] == 1


def test_duplicates_rate_limits_and_bad_ports() -> None:
    r = responder(2, rate=1.0, burst=2)
    probe = w.build_probe()
    assert len(r.receive(probe, SRC, "h", True, 0.0)) == 2
    assert r.receive(probe, SRC, "h", True, 0.0) == []  # the SOAP-over-UDP repeat
    assert r.stats["duplicate"] == 1
    assert len(r.receive(w.build_probe(), SRC, "h", True, 0.1)) == 2
    assert r.receive(w.build_probe(), SRC, "h", True, 0.2) == []  # bucket empty
    assert r.stats["rate_limited"] == 1
    assert len(r.receive(w.build_probe(), ("10.0.0.10", 40000), "h", True, 0.2)) == 2
    assert len(r.receive(w.build_probe(), SRC, "h", True, 1.5)) == 2  # refilled
    assert r.receive(w.build_probe(), ("10.0.0.11", 53), "h", True, 5.0) == []
    assert r.stats["bad_source_port"] == 1
    for data in (b"junk", b"<a/>", b"x" * 20000):
        assert r.receive(data, SRC, "h", True, 5.0) == []
    assert (r.stats["malformed"], r.stats["foreign"], r.stats["oversized"]) == (1, 1, 1)


def test_source_table_is_bounded() -> None:
    r = responder(1, max_sources=10)
    for i in range(50):
        r.receive(w.build_probe(), (f"10.1.0.{i}", 40000), "h", True, 0.0)
    assert len(r._buckets) == 10


def test_directed_probes_and_own_addresses() -> None:
    r = w.Responder(instance_id=1)
    r.update([target(0, "10.0.0.50"), target(1, "10.0.0.51"), target(2), target(3)])
    own = matches(r.receive(w.build_probe(), SRC, "10.0.0.51", False, 0.0))
    assert [e.epr for e in own] == [target(1).epr]
    assert own[0].xaddrs == ("http://10.0.0.51:8101/onvif/device_service",)
    shared = r.receive(w.build_probe(), SRC, "10.0.0.1", False, 0.0)
    assert sorted(x.target.key for x in shared if x.target) == ["cam2", "cam3"]
    assert all(x.delay == 0.0 for x in shared)  # directed: no back-off
    everyone = matches(r.receive(w.build_probe(), SRC, "10.0.0.1", True, 0.0))
    assert len(everyone) == 4
    by_epr = {e.epr: e.xaddrs for e in everyone}
    r.update([target(0, "127.0.0.2"), target(1)])  # loopback cameras: loopback clients only
    assert [e.epr for e in matches(r.receive(w.build_probe(), SRC, "h", True, 0.0))] == [
        target(1).epr
    ]
    local = matches(r.receive(w.build_probe(), ("127.0.0.1", 5000), "127.0.0.1", True, 0.0))
    assert sorted(e.epr for e in local) == [target(0).epr, target(1).epr]
    assert by_epr[target(0).epr] == ("http://10.0.0.50:8100/onvif/device_service",)
    assert by_epr[target(2).epr] == ("http://10.0.0.1:8102/onvif/device_service",)


def test_resolve() -> None:
    r = responder(3)
    epr = target(1).epr.upper().replace("URN:UUID:", "urn:uuid:")
    (ep,) = matches(r.receive(w.build_resolve(epr), SRC, "10.0.0.1", True, 0.0))
    assert ep.epr == target(1).epr and ep.xaddrs
    assert r.receive(w.build_resolve("urn:uuid:nobody"), SRC, "10.0.0.1", True, 0.0) == []


def test_match_bodies_follow_target_changes() -> None:
    r = responder(1)
    first = matches(r.receive(w.build_probe(), SRC, "10.0.0.1", True, 0.0))
    assert matches(r.receive(w.build_probe(), SRC, "10.0.0.1", True, 0.1)) == first
    lab = f"{ONVIF}/location/lab"
    r.update([target(0, scopes=(*SCOPES, lab))])
    (ep,) = matches(r.receive(w.build_probe(), SRC, "10.0.0.1", True, 0.2))
    assert lab in ep.scopes and ep.metadata_version == 2
    (ep,) = matches(r.receive(w.build_probe(), SRC, "10.0.0.2", True, 0.3))
    assert ep.xaddrs == ("http://10.0.0.2:8100/onvif/device_service",)
    (ep,) = matches(r.receive(w.build_resolve(target(0).epr), SRC, "10.0.0.2", True, 0.4))
    assert lab in ep.scopes and ep.xaddrs == ("http://10.0.0.2:8100/onvif/device_service",)


def test_hello_bye_and_metadata_version() -> None:
    r = w.Responder(instance_id=1)
    hello, bye = r.update([target(0), target(1)])
    assert [t.key for t in hello] == ["cam0", "cam1"] and bye == []
    assert r.update([target(0), target(1)]) == ([], [])
    changed = target(1, scopes=(*SCOPES, f"{ONVIF}/location/lab"))
    hello, bye = r.update([target(0), changed])
    assert [t.key for t in hello] == ["cam1"] and bye == []
    assert r.metadata_version(changed.epr) == 2
    assert r.metadata_version(target(0).epr) == 1
    rebooted = w.Target(**{**changed.__dict__, "generation": 1})
    hello, _ = r.update([target(0), rebooted])
    assert [t.key for t in hello] == ["cam1"] and r.metadata_version(changed.epr) == 2
    hello, bye = r.update([target(0)])
    assert hello == [] and [t.key for t in bye] == ["cam1"]
    # XAddrs change: version + 1
    moved = w.Target(**{**target(0).__dict__, "xaddr": "http://{host}:9000/onvif/device_service"})
    r.update([moved])
    assert r.metadata_version(moved.epr) == 2
    # a restart with the persisted versions keeps the numbers
    again = w.Responder(instance_id=2, versions=dict(r.versions))
    hello, _ = again.update([moved])
    assert len(hello) == 1 and again.metadata_version(moved.epr) == 2
    msg = w.parse(again.hello(moved, "10.0.0.1"))
    assert isinstance(msg, w.Hello) and msg.endpoint.metadata_version == 2
    assert msg.header.to == w.TO_DISCOVERY and msg.header.instance_id == 2
    assert msg.endpoint.xaddrs == ("http://10.0.0.1:9000/onvif/device_service",)


def test_message_numbers_increase_per_target() -> None:
    r = responder(2)
    t = target(0)
    numbers = []
    for data in (r.hello(t, "h"), r.bye(t)):
        msg = w.parse(data)
        assert isinstance(msg, w.Hello | w.Bye)
        numbers.append(msg.header.message_number)
    for rep in r.receive(w.build_probe(), SRC, "h", True, 0.0):
        msg = w.parse(rep.data)
        assert isinstance(msg, w.ProbeMatches)
        if rep.target and rep.target.key == "cam0":
            numbers.append(msg.header.message_number)
    assert numbers == [1, 2, 3]


def test_ipv6_xaddr_host_and_retransmit_schedule() -> None:
    t = target(0)
    assert t.xaddrs("fe80::1") == ("http://[fe80::1]:8100/onvif/device_service",)
    offs = w.retransmit_offsets(3, random.Random(3))
    assert len(offs) == 3 and offs == sorted(offs)
    assert w.UDP_MIN_DELAY <= offs[0] <= w.UDP_MAX_DELAY
    assert w.retransmit_offsets(0, random.Random()) == []


def test_table_output() -> None:
    d = Device("urn:uuid:1", ["http://a/onvif"], list(SCOPES), [], 1, "10.0.0.5", 0.1)
    assert d.name == "Front_Door" and d.hardware == "Virtual_Camera"
    text = format_table([d])
    assert "Front_Door" in text and "urn:uuid:1" in text and "Profile/Streaming" in text
    assert format_table([]) == "no ONVIF device answered"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"ttl": 0}, "ttl"),
        ({"max_delay": 9.0}, "max_delay"),
        ({"unicast_repeat": 5}, "repeats"),
        ({"probe_burst": 0}, "positive"),
        ({"max_datagram": 100}, "max_datagram"),
        ({"port": 70000}, "port"),
        ({"interfaces": "eth0"}, "list"),
        ({"mdns": "yes"}, "true or false"),
    ],
)
def test_discovery_config_errors(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict({"discovery": table}, "t.toml")


def test_discovery_config_defaults() -> None:
    d = from_dict({"discovery": {"interfaces": ["eth0", "10.0.0.5"]}}).discovery
    assert d.interfaces == ("eth0", "10.0.0.5")
    assert (d.enabled, d.mdns, d.port, d.ttl, d.max_delay) == (True, True, 3702, 1, 0.5)


# --------------------------------------------------------------------------- flood policy
def drain(b: w.Backlog, now: float, until: float, step: float = 0.01) -> list[w.Reply]:
    """Pop the backlog as the sender would from ``now`` to ``until``."""
    return [rep for _t, rep in drain_timed(b, now, until, step)]


def drain_timed(
    b: w.Backlog, now: float, until: float, step: float = 0.01
) -> list[tuple[float, w.Reply]]:
    """Like :func:`drain`, with the time each reply left."""
    out = []
    t = now
    while t <= until + 1e-9:
        while (rep := b.pop(t)) is not None:
            out.append((t, rep))
        t += step
    return out


def test_backlog_is_bounded_in_datagrams_and_bytes_under_a_flood() -> None:
    r = responder(200, max_backlog=1000, max_backlog_bytes=10**9, burst=8)
    for i in range(500):  # 500 sources, each its whole burst: 800,000 replies before
        for _ in range(8):
            r.receive(w.build_probe(), (f"10.1.{i // 250}.{i % 250}", 40000), "h", True, 0.0)
            assert len(r.backlog) <= 1000
    assert len(r.backlog) == 1000 and r.stats["backlog_peak"] == 1000
    # every source's first Probe was fresh and pushed older answers out; the repeats found
    # the backlog full and were dropped before any work was done for them
    assert r.stats["probe"] < 600  # 500 first Probes, and a few while there was room
    assert r.stats["backlog_dropped"] == r.stats["probe"] * 200 - 1000
    assert r.stats["backlog_jobs_dropped"] == 4000 - 1000 // 200  # all but those queued
    r = responder(200, max_backlog=10**6, max_backlog_bytes=300_000)
    for i in range(100):
        r.receive(w.build_probe(), (f"10.1.0.{i}", 40000), "h", True, 0.0)
        assert r.backlog.nbytes <= 300_000
    assert r.backlog.nbytes > 300_000 - 200 * 1400  # full: whole answers are dropped
    assert r.stats["backlog_peak_bytes"] <= 300_000


def test_global_budget_paces_replies_for_all_sources() -> None:
    r = responder(50, replies_per_s=100.0)
    for i in range(20):
        r.receive(w.build_probe(), (f"10.1.0.{i}", 40000), "h", True, 0.0)
    sent = drain(r.backlog, 0.0, 2.0)
    # the burst plus 100 per second, whatever the number of sources
    assert len(sent) <= r.backlog.burst + 100 * 2.0 + 1
    assert len(sent) >= 100 * 2.0
    due = r.backlog.next_due(2.0)
    assert due is not None and 2.0 <= due <= 2.0 + 1 / 100 + 1e-9


def test_fresh_source_is_answered_first_during_a_flood() -> None:
    r = responder(50, max_backlog=1000, replies_per_s=500.0, source_interval=5.0)
    flood = [(f"10.1.0.{i}", 40000) for i in range(200)]
    probe = w.build_probe(message_id="urn:uuid:{}")
    n = 0

    def flood_round(now: float) -> None:
        nonlocal n
        for src in flood:
            n += 1
            r.receive(probe.replace(b"{}", str(n).encode()), src, "h", True, now)

    t = 0.0
    answered = 0
    while t < 8.0:  # every flooder probes twice a second, longer than source_interval
        flood_round(t)
        answered += len(drain(r.backlog, t, t + 0.49))
        t += 0.5
    # the flood got answers, at the global budget (500 a second) and no faster
    assert 3000 < answered <= 8.0 * 500 + r.backlog.burst
    assert len(r.backlog) > 500
    client = ("10.9.9.9", 3702)
    mine = r.receive(w.build_probe(), client, "h", True, t)
    assert len(mine) == 50  # admitted whole: older work of recent sources made room
    flood_round(t + 0.1)  # the flood goes on after the client's Probe
    sent = drain_timed(r.backlog, t + 0.1, t + 2.0)
    to_client = [at for at, x in sent if x.dest == client]
    assert len(to_client) == 50 and len(sent) > 500
    # each when due (0-0.5 s after the Probe), not behind the work queued before
    assert max(to_client) <= t + w.APP_MAX_DELAY + 0.02
    assert r.stats["backlog_dropped"] > 0 and r.stats["backlog_jobs_dropped"] > 0


def test_oldest_work_is_dropped_and_the_newest_sent_first() -> None:
    b = w.Backlog(max_datagrams=10, max_bytes=10**6, rate=1000.0, rng=random.Random(1))

    def reps(src: str, n: int) -> list[w.Reply]:
        return [w.Reply(None, lambda: b"x", (src, 4000), 0.1, size=1) for _ in range(n)]

    assert len(b.push(reps("a", 4), "a", 0.0)) == 4
    assert len(b.push(reps("b", 4), "b", 0.0)) == 4
    assert len(b.push(reps("c", 4), "c", 0.0)) == 4  # both fresh: "a" (oldest) makes room
    assert len(b) == 8 and b.stats["backlog_dropped"] == 4
    assert len(b.push(reps("d", 4), "d", 0.5)) == 4  # fresh: the oldest, "b", makes room
    assert [j.source for j in b._jobs[0].values()] == ["c", "d"]
    assert len(b.push(reps("a", 4), "a", 0.6)) == 0  # heard 0.6 s ago: recent, no room
    assert b.stats["backlog_dropped"] == 12
    assert [x.dest[0] for x in drain(b, 0.6, 1.0)] == ["d"] * 4 + ["c"] * 4  # newest first
    assert len(b.push(reps("a", 4), "a", 1.0)) == 4  # recent, but there is room now
    assert len(b.push(reps("a", 4), "a", 1.0)) == 4
    assert not b.may_admit(False, 4) and b.may_admit(True, 4)
    assert len(b.push(reps("a", 4), "a", 1.0)) == 0
    # a source that keeps asking stays recent, even though it got no answer
    assert not b.heard("a", 5.5) and not b.heard("a", 10.0)
    assert b.heard("a", 15.0) and b.heard("e", 15.0)


def test_copies_of_a_probe_from_several_addresses() -> None:
    r = responder(2, max_backlog=4, rate=1.0, burst=1)
    busy = ("10.0.0.50", 40000)
    r.receive(w.build_probe(), busy, "h", True, 0.0)  # heard: recent from now on
    r.receive(w.build_probe(), ("10.0.0.51", 40000), "h", True, 0.0)  # backlog full
    probe = w.build_probe()
    # a client probing from all its addresses: the copy from a busy address is rate-limited
    # and not remembered; the copy from its own quiet address is answered first
    assert r.receive(probe, busy, "h", True, 0.5) == []
    assert r.stats["rate_limited"] == 1
    assert len(r.receive(probe, SRC, "h", True, 0.5)) == 2
    assert r.receive(probe, SRC, "h", True, 0.6) == []  # its SOAP-over-UDP repeat
    assert r.stats["duplicate"] == 1
    # answered for a recent source first, the copy from a fresh one is answered again
    r2 = responder(2)
    r2.receive(w.build_probe(), ("10.0.0.60", 40000), "h", True, 0.0)
    probe = w.build_probe()
    assert len(r2.receive(probe, ("10.0.0.60", 40000), "h", True, 1.0)) == 2
    assert len(r2.receive(probe, ("10.0.0.61", 40000), "h", True, 1.0)) == 2
    assert r2.receive(probe, ("10.0.0.62", 40000), "h", True, 1.0) == []
    assert r2.receive(probe, ("10.0.0.60", 40000), "h", True, 1.1) == []


def test_an_answer_larger_than_the_backlog_is_cut_at_random() -> None:
    r = responder(30, max_backlog=10)
    first = {x.target.key for x in r.receive(w.build_probe(), SRC, "h", True, 0.0) if x.target}
    assert len(first) == 10 and r.stats["backlog_dropped"] == 20
    r.backlog.clear()
    again = {x.target.key for x in r.receive(w.build_probe(), SRC, "h", True, 9.0) if x.target}
    assert len(again) == 10 and again != first  # not always the same cameras left out


def test_unicast_repeats_count_as_datagrams() -> None:
    r = responder(3, unicast_repeat=2)
    replies = r.receive(w.build_probe(), SRC, "10.0.0.1", False, 0.0)
    assert len(replies) == 3 and len(r.backlog) == 9
    sent = drain(r.backlog, 0.0, 3.0)
    assert len(sent) == 9 and {id(x) for x in sent} == {id(x) for x in replies}


def test_unicast_only_from_allowed_networks() -> None:
    import ipaddress

    r = responder(3)
    r.unicast_from = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("fe80::/10"))
    assert len(r.receive(w.build_probe(), ("10.0.0.9", 40000), "10.0.0.1", False, 0.0)) == 3
    assert len(r.receive(w.build_probe(), ("fe80::9%eth0", 40000), "fe80::1", False, 0.0)) == 3
    assert len(r.receive(w.build_probe(), ("127.0.0.1", 40000), "127.0.0.1", False, 0.0)) == 3
    assert r.receive(w.build_probe(), ("203.0.113.7", 40000), "10.0.0.1", False, 0.0) == []
    assert r.receive(w.build_resolve(target(0).epr), ("198.51.100.1", 4000), "h", False, 0) == []
    assert r.stats["unicast_refused"] == 2
    # a multicast Probe comes from the link: answered (and paced) whatever its source
    assert len(r.receive(w.build_probe(), ("203.0.113.7", 40000), "10.0.0.1", True, 0.0)) == 3


def test_long_message_ids_are_not_echoed() -> None:
    r = responder(3)
    probe = w.build_probe(message_id="urn:x:" + "a" * 5000)
    assert r.receive(probe, SRC, "h", True, 0.0) == []
    assert r.stats["malformed"] == 1


def test_reply_size_estimate_is_close() -> None:
    r = responder(3)
    lab = tuple(f"{ONVIF}/location/{'x' * n}" for n in (10, 200, 400))
    r.update([target(0), target(1, scopes=SCOPES + lab), target(2, scopes=SCOPES[:1])])
    for now in (0.0, 1.0):  # before and after the bodies are cached
        for rep in r.receive(w.build_probe(), SRC, "10.0.0.1", True, now):
            assert abs(rep.size - len(rep.data)) <= 0.05 * len(rep.data), rep.target


def test_forget_drops_state_of_removed_endpoints() -> None:
    r = responder(2)
    r.hello(target(0), "h")
    r.update([target(1)])
    r.forget([target(0).epr])
    assert target(0).epr not in r.versions and target(0).epr not in r._seq
    assert r.metadata_version(target(1).epr) == 1


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"max_backlog": 0}, "max_backlog"),
        ({"replies_per_s": 0}, "replies_per_s"),
        ({"max_backlog_bytes": 1000}, "max_backlog_bytes"),
        ({"unicast_from": ["lan"]}, "unicast_from"),
        ({"unicast_from": ["10.0.0.0/33"]}, "unicast_from"),
        ({"source_interval": -1}, "source_interval"),
    ],
)
def test_flood_config_errors(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict({"discovery": table}, "t.toml")


def test_flood_config_defaults() -> None:
    d = from_dict({}).discovery
    assert (d.max_backlog, d.max_backlog_bytes, d.replies_per_s) == (4096, 4 << 20, 2000)
    assert d.source_interval == 5.0 and d.unicast_from == ("local",)
    d = from_dict({"discovery": {"unicast_from": ["local", "10.20.0.0/16"]}}).discovery
    assert d.unicast_from == ("local", "10.20.0.0/16")
