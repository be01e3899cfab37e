"""WS-Discovery 1.0 (2005/04) over SOAP-over-UDP, as ONVIF Core uses it: sans-I/O.

Three layers, none of which touches a socket:

- :func:`parse` turns any datagram into a message object or an :class:`Ignored` verdict
  (malformed, oversized, foreign); it never raises.
- ``build_*`` functions write Probe, ProbeMatches, Resolve, ResolveMatches, Hello, Bye and
  the MatchingRuleNotSupported fault with lxml's ElementMaker.
- :class:`Responder` holds the decisions of the target side: which targets match a Probe or
  a Resolve, duplicate suppression by MessageID, a per-source token bucket, which sources a
  directed (unicast) Probe is answered for, the random APP_MAX_DELAY back-off, the
  AppSequence counters, and the MetadataVersion bookkeeping that produces Hello and Bye when
  the set of targets changes.
- :class:`Backlog` holds the replies waiting to leave: bounded in datagrams and bytes,
  paced by a global replies-per-second budget, with sources that were quiet for a while
  served (and kept) before sources that keep asking, so a flood of Probes from many
  addresses neither grows memory nor starves a real client.

The asyncio layer (:mod:`onvifcam.discovery.responder`) only moves the bytes.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import itertools
import random
import re
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import unquote

from lxml import etree
from lxml.builder import ElementMaker

from onvifcam import xmlsafe

# --------------------------------------------------------------------------- constants
NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NS_SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
NS_WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_WSA10 = "http://www.w3.org/2005/08/addressing"  # read too: some devices answer with it
NS_WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
NS_DN = "http://www.onvif.org/ver10/network/wsdl"
NS_TDS = "http://www.onvif.org/ver10/device/wsdl"

ACTION_PROBE = NS_WSD + "/Probe"
ACTION_PROBE_MATCHES = NS_WSD + "/ProbeMatches"
ACTION_RESOLVE = NS_WSD + "/Resolve"
ACTION_RESOLVE_MATCHES = NS_WSD + "/ResolveMatches"
ACTION_HELLO = NS_WSD + "/Hello"
ACTION_BYE = NS_WSD + "/Bye"
ACTION_FAULT = NS_WSA + "/fault"
TO_DISCOVERY = "urn:schemas-xmlsoap-org:ws:2005:04:discovery"
TO_ANONYMOUS = NS_WSA + "/role/anonymous"

MATCH_RFC3986 = NS_WSD + "/rfc3986"
MATCH_RFC2396 = NS_WSD + "/rfc2396"  # the 2005/04 name of the same rule
MATCH_UUID = NS_WSD + "/uuid"
MATCH_LDAP = NS_WSD + "/ldap"
MATCH_STRCMP0 = NS_WSD + "/strcmp0"
SUPPORTED_RULES = (MATCH_RFC3986, MATCH_RFC2396, MATCH_STRCMP0, MATCH_UUID)

MULTICAST_V4 = "239.255.255.250"
MULTICAST_V6 = "ff02::c"
PORT = 3702
APP_MAX_DELAY = 0.5  # WS-Discovery appendix I, seconds
UDP_MIN_DELAY, UDP_MAX_DELAY, UDP_UPPER_DELAY = 0.05, 0.25, 0.5  # SOAP-over-UDP, seconds
MAX_DATAGRAM = 16384
MAX_ITEMS = 64  # types or scopes in one message
MAX_MESSAGE_ID = 256  # characters of a request's wsa:MessageID we echo as RelatesTo
_HEADER_BASE = 680  # a match's envelope and headers without RelatesTo (estimate)
_BODY_BASE = 220  # a match body without EPR, scopes, XAddrs and types (estimate)

NSMAP = {"s": NS_SOAP12, "a": NS_WSA, "d": NS_WSD, "dn": NS_DN, "tds": NS_TDS}
_NSMAP11 = {**NSMAP, "s": NS_SOAP11}
_KNOWN_PREFIX = {NS_DN: "dn", NS_TDS: "tds", NS_WSD: "d", NS_WSA: "a"}
A = ElementMaker(namespace=NS_WSA, nsmap=NSMAP)
D = ElementMaker(namespace=NS_WSD, nsmap=NSMAP)
_S12 = ElementMaker(namespace=NS_SOAP12, nsmap=NSMAP)
_S11 = ElementMaker(namespace=NS_SOAP11, nsmap=_NSMAP11)


# --------------------------------------------------------------------------- messages
@dataclass(frozen=True, order=True)
class QName:
    """An XML qualified name; ``ns`` is None when a Probe used an undeclared prefix."""

    ns: str | None
    local: str

    def __str__(self) -> str:
        return f"{{{self.ns}}}{self.local}" if self.ns else self.local


NVT = QName(NS_DN, "NetworkVideoTransmitter")
DEVICE = QName(NS_TDS, "Device")
ONVIF_TYPES = (NVT, DEVICE)


@dataclass(frozen=True)
class Header:
    """The WS-Addressing and AppSequence headers of a message."""

    action: str = ""
    message_id: str = ""
    relates_to: str = ""
    to: str = ""
    instance_id: int = 0
    message_number: int = 0
    soap_ns: str = NS_SOAP12


@dataclass(frozen=True)
class Endpoint:
    """What a target tells about itself in Hello, ProbeMatch and ResolveMatch."""

    epr: str
    types: tuple[QName, ...] = ()
    scopes: tuple[str, ...] = ()
    xaddrs: tuple[str, ...] = ()
    metadata_version: int = 0


@dataclass(frozen=True)
class Probe:
    """A Probe: every type and every scope must match."""

    header: Header
    types: tuple[QName, ...] = ()
    scopes: tuple[str, ...] = ()
    match_by: str = MATCH_RFC3986


@dataclass(frozen=True)
class Resolve:
    """A Resolve for one endpoint reference."""

    header: Header
    epr: str


@dataclass(frozen=True)
class Hello:
    """A target announcing itself."""

    header: Header
    endpoint: Endpoint


@dataclass(frozen=True)
class Bye:
    """A target leaving."""

    header: Header
    epr: str


@dataclass(frozen=True)
class ProbeMatches:
    """The answer to a Probe (ours carry exactly one match)."""

    header: Header
    matches: tuple[Endpoint, ...]


@dataclass(frozen=True)
class ResolveMatches:
    """The answer to a Resolve."""

    header: Header
    matches: tuple[Endpoint, ...]


@dataclass(frozen=True)
class SoapFault:
    """A SOAP fault, e.g. MatchingRuleNotSupported."""

    header: Header
    subcode: str
    reason: str


@dataclass(frozen=True)
class Ignored:
    """A datagram that is not a usable WS-Discovery message; ``reason`` names the counter."""

    reason: str  # malformed | oversized | foreign
    detail: str = ""


Message = Probe | Resolve | Hello | Bye | ProbeMatches | ResolveMatches | SoapFault


# --------------------------------------------------------------------------- parsing
class _Bad(Exception):
    """Internal: the datagram is XML but not a valid message of its kind."""


def _text(el: etree._Element | None) -> str:
    if el is None:
        return ""
    return "".join(el.itertext()).strip()


def _find(el: etree._Element, ns: str, local: str) -> etree._Element | None:
    for c in el:
        if isinstance(c.tag, str) and c.tag == f"{{{ns}}}{local}":
            return c
    return None


def _wsa(el: etree._Element, local: str) -> etree._Element | None:
    found = _find(el, NS_WSA, local)
    return found if found is not None else _find(el, NS_WSA10, local)


def _uint(value: str | None, default: int = 0) -> int:
    if value is None or not value.strip().isdigit():
        return default
    return min(int(value.strip()), 2**32 - 1)


def _items(el: etree._Element | None) -> list[str]:
    if el is None:
        return []
    items = _text(el).split()
    if len(items) > MAX_ITEMS:
        raise _Bad(f"more than {MAX_ITEMS} items in {etree.QName(el).localname}")
    return items


def _qnames(el: etree._Element | None) -> tuple[QName, ...]:
    out = []
    for item in _items(el):
        prefix, sep, local = item.rpartition(":")
        if not local:
            raise _Bad(f"bad QName {item[:64]!r}")
        ns = el.nsmap.get(prefix) if (sep and el is not None) else None
        out.append(QName(ns, local))
    return tuple(out)


def _epr(el: etree._Element) -> str:
    ref = _wsa(el, "EndpointReference")
    addr = _text(_wsa(ref, "Address")) if ref is not None else ""
    if not addr:
        raise _Bad("missing EndpointReference/Address")
    return addr


def _endpoint(el: etree._Element) -> Endpoint:
    return Endpoint(
        epr=_epr(el),
        types=_qnames(_find(el, NS_WSD, "Types")),
        scopes=tuple(_items(_find(el, NS_WSD, "Scopes"))),
        xaddrs=tuple(_items(_find(el, NS_WSD, "XAddrs"))),
        metadata_version=_uint(_text(_find(el, NS_WSD, "MetadataVersion"))),
    )


def _header(env: etree._Element, soap_ns: str) -> Header:
    h = _find(env, soap_ns, "Header")
    if h is None:
        return Header(soap_ns=soap_ns)
    seq = _find(h, NS_WSD, "AppSequence")
    return Header(
        action=_text(_wsa(h, "Action")),
        message_id=_text(_wsa(h, "MessageID")),
        relates_to=_text(_wsa(h, "RelatesTo")),
        to=_text(_wsa(h, "To")),
        instance_id=_uint(seq.get("InstanceId") if seq is not None else None),
        message_number=_uint(seq.get("MessageNumber") if seq is not None else None),
        soap_ns=soap_ns,
    )


def _message(data: bytes) -> Message | Ignored:
    try:
        root = xmlsafe.parse(data)
    except xmlsafe.XmlError as exc:
        return Ignored("malformed", exc.reason[:120])
    soap_ns = etree.QName(root).namespace if isinstance(root.tag, str) else None
    if soap_ns not in (NS_SOAP12, NS_SOAP11) or etree.QName(root).localname != "Envelope":
        return Ignored("foreign", "not a SOAP envelope")
    header = _header(root, soap_ns)
    body = _find(root, soap_ns, "Body")
    first = next((c for c in body if isinstance(c.tag, str)), None) if body is not None else None
    if first is None:
        return Ignored("foreign", "empty SOAP body")
    q = etree.QName(first)
    if q.namespace == soap_ns and q.localname == "Fault":
        sub = first.find(f".//{{{soap_ns}}}Subcode/{{{soap_ns}}}Value")
        return SoapFault(header, _text(sub), _text(first.find(f".//{{{soap_ns}}}Text")))
    if q.namespace != NS_WSD:
        return Ignored("foreign", f"body element {q.text[:120]}")
    try:
        return _wsd_message(header, q.localname, first)
    except _Bad as exc:
        return Ignored("malformed", str(exc))


def _wsd_message(header: Header, kind: str, el: etree._Element) -> Message | Ignored:
    if kind in ("Probe", "Resolve") and not header.message_id:
        raise _Bad(f"{kind} without wsa:MessageID")
    if kind == "Probe":
        scopes_el = _find(el, NS_WSD, "Scopes")
        match_by = (scopes_el.get("MatchBy") or "").strip() if scopes_el is not None else ""
        return Probe(
            header,
            _qnames(_find(el, NS_WSD, "Types")),
            tuple(_items(scopes_el)),
            match_by or MATCH_RFC3986,
        )
    if kind == "Resolve":
        return Resolve(header, _epr(el))
    if kind == "Hello":
        return Hello(header, _endpoint(el))
    if kind == "Bye":
        return Bye(header, _epr(el))
    if kind in ("ProbeMatches", "ResolveMatches"):
        name = kind[:-2]
        matches = tuple(_endpoint(m) for m in el if m.tag == f"{{{NS_WSD}}}{name}")
        if len(matches) > MAX_ITEMS:
            raise _Bad(f"more than {MAX_ITEMS} matches")
        cls = ProbeMatches if kind == "ProbeMatches" else ResolveMatches
        return cls(header, matches)
    return Ignored("foreign", f"WS-Discovery {kind[:64]}")


def parse(data: bytes, max_size: int = MAX_DATAGRAM) -> Message | Ignored:
    """Parse one datagram. Never raises: anything unusable comes back as :class:`Ignored`."""
    if len(data) > max_size:
        return Ignored("oversized", f"{len(data)} bytes")
    if not data.strip():
        return Ignored("malformed", "empty datagram")
    try:
        return _message(bytes(data))
    except Exception as exc:  # defensive: the contract is "never raises"
        return Ignored("malformed", f"{type(exc).__name__}: {str(exc)[:100]}")


# --------------------------------------------------------------------------- matching
_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*):(?://(?P<auth>[^/?#]*))?(?P<path>[^?#]*)")


def _split_uri(uri: str) -> tuple[str, str | None, tuple[str, ...]] | None:
    """(scheme, authority, path segments) canonicalised for the RFC 3986 rule, or None."""
    m = _URI.match(uri)
    if m is None:
        return None
    path = m.group("path")
    raw = path.split("/")
    if path.startswith("/"):
        raw = raw[1:]
    segs = [unquote(s) for s in raw]
    while segs and segs[-1] == "":  # "a/b/" is "a/b"
        segs.pop()
    if any(s in (".", "..") for s in segs):
        return None
    auth = m.group("auth")
    return (
        m.group("scheme").lower(),
        (unquote(auth).lower() if auth is not None else None),
        tuple(segs),
    )


def _uuid(value: str) -> uuid.UUID | None:
    v = value.strip().lower()
    for prefix in ("urn:uuid:", "uuid:"):
        if v.startswith(prefix):
            v = v[len(prefix) :]
            break
    try:
        return uuid.UUID(v)
    except ValueError:
        return None


def scope_matches(probe_scope: str, target_scope: str, rule: str = MATCH_RFC3986) -> bool:
    """Whether ``probe_scope`` (S1) matches ``target_scope`` (S2) under ``rule``.

    RFC 3986 rule (WS-Discovery 2005/04 section 5.1): the schemes and authorities are equal
    ignoring case, S1's path segments are a segment-wise prefix of S2's compared with case,
    after percent-decoding; "." and ".." segments never match; query and fragment are not
    compared. ``strcmp0`` is plain string equality, ``uuid`` compares UUID values.
    """
    if rule in (MATCH_RFC3986, MATCH_RFC2396, ""):
        s1, s2 = _split_uri(probe_scope), _split_uri(target_scope)
        if s1 is None or s2 is None or s1[0] != s2[0] or s1[1] != s2[1]:
            return False
        return s2[2][: len(s1[2])] == s1[2]
    if rule == MATCH_STRCMP0:
        return probe_scope == target_scope
    if rule == MATCH_UUID:
        u1, u2 = _uuid(probe_scope), _uuid(target_scope)
        return u1 is not None and u1 == u2
    return False


def types_match(wanted: Iterable[QName], offered: Iterable[QName]) -> bool:
    """Every wanted type is offered; an unresolved prefix matches on the local name."""
    have = list(offered)
    for w in wanted:
        if not any(w.local == o.local and (w.ns is None or w.ns == o.ns) for o in have):
            return False
    return True


def probe_matches(probe: Probe, types: Iterable[QName], scopes: Iterable[str]) -> bool:
    """Whether a target with these types and scopes answers ``probe``."""
    if not types_match(probe.types, types):
        return False
    offered = list(scopes)
    return all(any(scope_matches(s, o, probe.match_by) for o in offered) for s in probe.scopes)


# --------------------------------------------------------------------------- building
def new_message_id() -> str:
    """A fresh urn:uuid message id."""
    return uuid.uuid4().urn


def _quote_uri(uri: str) -> str:
    return uri.replace(" ", "%20")


def _types_text(types: Iterable[QName], nsmap: dict[str, str]) -> str:
    out = []
    for t in types:
        if t.ns is None:
            out.append(t.local)
            continue
        prefix = _KNOWN_PREFIX.get(t.ns)
        if prefix is None:
            prefix = next((p for p, ns in nsmap.items() if ns == t.ns), None)
            if prefix is None:
                prefix = f"t{len(nsmap)}"
                nsmap[prefix] = t.ns
        out.append(f"{prefix}:{t.local}")
    return " ".join(out)


def _envelope(
    header: Header, body: etree._Element | None, extra_ns: dict[str, str] | None = None
) -> bytes:
    if extra_ns:
        base = _NSMAP11 if header.soap_ns == NS_SOAP11 else NSMAP
        S = ElementMaker(namespace=header.soap_ns, nsmap={**base, **extra_ns})
    else:
        S = _S11 if header.soap_ns == NS_SOAP11 else _S12
    parts = [A.MessageID(header.message_id or new_message_id())]
    if header.relates_to:
        parts.append(A.RelatesTo(header.relates_to))
    parts.append(A.To(header.to or TO_ANONYMOUS))
    parts.append(A.Action(header.action))
    if header.instance_id:
        parts.append(
            D.AppSequence(
                InstanceId=str(header.instance_id), MessageNumber=str(header.message_number)
            )
        )
    env = S.Envelope(S.Header(*parts), S.Body() if body is None else S.Body(body))
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


def _endpoint_children(ep: Endpoint, nsmap: dict[str, str], xaddrs: bool = True) -> list:
    out = [A.EndpointReference(A.Address(ep.epr))]
    if ep.types:
        out.append(D.Types(_types_text(ep.types, nsmap)))
    if ep.scopes:
        out.append(D.Scopes(" ".join(_quote_uri(s) for s in ep.scopes)))
    if xaddrs and ep.xaddrs:
        out.append(D.XAddrs(" ".join(ep.xaddrs)))
    out.append(D.MetadataVersion(str(ep.metadata_version)))
    return out


def build_probe(
    types: Iterable[QName] = (NVT,),
    scopes: Iterable[str] = (),
    match_by: str = "",
    message_id: str = "",
) -> bytes:
    """A Probe (to the multicast group or one host)."""
    extra: dict[str, str] = {}
    types_text = _types_text(types, extra)
    children = []
    if types_text:
        children.append(D.Types(types_text))
    sc = " ".join(_quote_uri(s) for s in scopes)
    if sc:
        children.append(D.Scopes(sc, MatchBy=match_by) if match_by else D.Scopes(sc))
    header = Header(ACTION_PROBE, message_id or new_message_id(), to=TO_DISCOVERY)
    return _envelope(header, D.Probe(*children), extra)


def build_resolve(epr: str, message_id: str = "") -> bytes:
    """A Resolve for ``epr``."""
    header = Header(ACTION_RESOLVE, message_id or new_message_id(), to=TO_DISCOVERY)
    return _envelope(header, D.Resolve(A.EndpointReference(A.Address(epr))))


def build_probe_matches(header: Header, matches: Iterable[Endpoint]) -> bytes:
    """ProbeMatches (header: RelatesTo the Probe, AppSequence of the target)."""
    extra: dict[str, str] = {}
    body = D.ProbeMatches(*[D.ProbeMatch(*_endpoint_children(m, extra)) for m in matches])
    return _envelope(header, body, extra)


def build_resolve_matches(header: Header, matches: Iterable[Endpoint]) -> bytes:
    """ResolveMatches."""
    extra: dict[str, str] = {}
    body = D.ResolveMatches(*[D.ResolveMatch(*_endpoint_children(m, extra)) for m in matches])
    return _envelope(header, body, extra)


_EMPTY_BODY = b"<s:Body/>"
_BODY_END = b"</s:Body></s:Envelope>"


def match_body(kind: str, endpoint: Endpoint) -> tuple[bytes, dict[str, str]]:
    """``<d:{kind}es>`` with one ``<d:{kind}>`` (ProbeMatch or ResolveMatch) serialised as it
    appears inside an envelope, plus the extra namespaces it uses: made once per target
    state and wrapped in any number of envelopes by :func:`build_with_body`."""
    extra: dict[str, str] = {}
    el = D(kind + "es", D(kind, *_endpoint_children(endpoint, extra)))
    data = _envelope(Header(message_id="-"), el, extra)
    start = data.index(b"<s:Body>") + len(b"<s:Body>")
    return data[start : -len(_BODY_END)], extra


def build_with_body(header: Header, body: tuple[bytes, dict[str, str]]) -> bytes:
    """The envelope for ``header`` around a body from :func:`match_body`."""
    xml, extra = body
    head = _envelope(header, None, extra).rpartition(_EMPTY_BODY)[0]
    return b"".join((head, b"<s:Body>", xml, _BODY_END))


def build_hello(header: Header, endpoint: Endpoint) -> bytes:
    """Hello."""
    extra: dict[str, str] = {}
    return _envelope(header, D.Hello(*_endpoint_children(endpoint, extra)), extra)


def build_bye(header: Header, epr: str) -> bytes:
    """Bye (the endpoint reference only)."""
    return _envelope(header, D.Bye(A.EndpointReference(A.Address(epr))))


def build_fault(header: Header, subcode: str, reason: str, detail: Iterable[str] = ()) -> bytes:
    """A SOAP 1.2 fault such as d:MatchingRuleNotSupported (Sender)."""
    soap = header.soap_ns
    S = ElementMaker(namespace=soap, nsmap=NSMAP if soap == NS_SOAP12 else _NSMAP11)
    rules = " ".join(detail)
    fault = S.Fault(
        S.Code(S.Value("s:Sender"), S.Subcode(S.Value(subcode))),
        S.Reason(S.Text(reason, {"{http://www.w3.org/XML/1998/namespace}lang": "en"})),
    )
    if rules:
        fault.append(S.Detail(D.SupportedMatchingRules(rules)))
    return _envelope(header, fault)


def retransmit_offsets(repeat: int, rng: random.Random) -> list[float]:
    """SOAP-over-UDP retransmission schedule: offsets (s) of the ``repeat`` extra copies."""
    out: list[float] = []
    t = rng.uniform(UDP_MIN_DELAY, UDP_MAX_DELAY)
    at = 0.0
    for _ in range(repeat):
        at += t
        out.append(at)
        t = min(2 * t, UDP_UPPER_DELAY)
    return out


# --------------------------------------------------------------------------- the target side
@dataclass(frozen=True)
class Target:
    """One discoverable device (a camera) as the responder sees it.

    ``xaddr`` is a template with ``{host}`` where the address the client reaches goes;
    ``host`` fills it when known (the camera's own address or an advertised one), else the
    responder uses the address the Probe arrived on. ``address`` is the camera's own
    address: its replies and announcements leave from it. ``generation`` changes when the
    device restarts (a Hello without a MetadataVersion change).
    """

    key: str
    epr: str
    types: tuple[QName, ...] = ONVIF_TYPES
    scopes: tuple[str, ...] = ()
    xaddr: str = ""
    host: str = ""
    address: str = ""
    generation: int = 0

    def xaddrs(self, host: str) -> tuple[str, ...]:
        """The XAddrs seen by a client that reached us on ``host``."""
        h = self.host or host
        if not h or not self.xaddr:
            return ()
        if ":" in h and not h.startswith("["):
            h = f"[{h}]"
        return (self.xaddr.replace("{host}", h),)

    @property
    def fingerprint(self) -> str:
        """What MetadataVersion tracks: types, scopes and XAddrs."""
        text = "\n".join(
            [" ".join(map(str, self.types)), " ".join(self.scopes), self.xaddr, self.host]
        )
        return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass
class Reply:
    """A datagram the I/O layer should send ``delay`` seconds from now, ``repeat`` extra times.

    The bytes are built on first use (:attr:`data`), so a Probe answered by a thousand
    targets costs its XML work spread over the send window, not in one burst.
    """

    target: Target | None
    build: Callable[[], bytes]
    dest: tuple[str, int]
    delay: float = 0.0
    local: str = ""  # the local address the request arrived on (source hint)
    repeat: int = 0
    size: int = 0  # estimated length of the datagram, for the byte bound of the backlog
    _data: bytes | None = None

    @property
    def data(self) -> bytes:
        """The datagram."""
        if self._data is None:
            self._data = self.build()
        return self._data


@dataclass
class _Bucket:
    tokens: float
    last: float


@dataclass(eq=False)
class _Job:
    """The replies to one request, as the backlog accounts for them."""

    key: int
    source: str
    fresh: bool
    pending: int = 0
    nbytes: int = 0
    dead: bool = False


# waiting for its time: (due, order, job, reply, size)
_Pending = tuple[float, int, _Job, Reply, int]
# due: (0 fresh / 1 recent, -job key: newest job first, due, order, job, reply, size)
_Ready = tuple[int, int, float, int, _Job, Reply, int]


@dataclass
class Backlog:
    """The replies waiting to be sent: bounded, paced, fresh sources and new work first.

    Each answered request is a job: its replies and their SOAP-over-UDP copies, each due at
    its own time. A job whose source sent no request in the last ``source_interval``
    seconds is *fresh* (a flooding source never is; a client that probes now and then
    always is). Of the replies that are due, those of fresh jobs go first, and
    among those the newest job's (under overload the newest request is the one whose
    client still listens). A fresh job that does not fit ``max_datagrams`` and
    ``max_bytes`` makes room by dropping whole jobs, oldest first: recent sources' jobs,
    then older fresh jobs. The job of a recent source is queued only if it fits. :meth:`pop`
    hands out at most ``rate`` replies per second for all sources together. Sans-I/O: the
    caller passes the clock.
    """

    max_datagrams: int = 4096
    max_bytes: int = 4 << 20
    rate: float = 2000.0
    source_interval: float = 5.0
    max_sources: int = 4096
    rng: random.Random = field(default_factory=random.Random)
    stats: Counter[str] = field(default_factory=Counter)
    datagrams: int = 0  # pending datagrams
    nbytes: int = 0  # their estimated bytes
    _pending: list[_Pending] = field(default_factory=list)
    _ready: list[_Ready] = field(default_factory=list)
    _jobs: tuple[OrderedDict[int, _Job], OrderedDict[int, _Job]] = field(
        default_factory=lambda: (OrderedDict(), OrderedDict())
    )
    _heard: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _order: itertools.count[int] = field(default_factory=itertools.count)
    _dead: int = 0
    _avg_size: float = 1024.0  # bytes per reply, recent answers
    _tokens: float = -1.0
    _last: float = 0.0

    @property
    def burst(self) -> float:
        """How many replies may leave back to back."""
        return max(16.0, self.rate / 50.0)

    def __len__(self) -> int:
        return self.datagrams

    def heard(self, source: str, now: float) -> bool:
        """Note a request from ``source``; True when it is fresh (none in the last
        ``source_interval`` seconds)."""
        last = self._heard.get(source)
        self._heard[source] = now
        self._heard.move_to_end(source)
        while len(self._heard) > self.max_sources:
            self._heard.popitem(last=False)
        return last is None or now - last >= self.source_interval

    def may_admit(self, fresh: bool, datagrams: int = 1) -> bool:
        """A cheap look before any work is done for a request: False when its answer (about
        ``datagrams`` of the size seen lately) would be dropped: a recent source, no room."""
        fits = (
            self.datagrams + datagrams <= self.max_datagrams
            and self.nbytes + datagrams * self._avg_size <= self.max_bytes
        )
        return fits or fresh

    def push(
        self, replies: list[Reply], source: str, now: float, fresh: bool | None = None
    ) -> list[Reply]:
        """Queue the replies to one request from ``source`` (``fresh``: from :meth:`heard`,
        which is asked when not given); returns those queued."""
        if fresh is None:
            fresh = self.heard(source, now)
        if not replies:
            return []
        items = [(now + r.delay, r) for r in replies]
        for r in replies:
            offsets = retransmit_offsets(r.repeat, self.rng) if r.repeat else []
            items += [(now + r.delay + off, r) for off in offsets]
        size = sum(r.size for _, r in items)
        self._avg_size = 0.8 * self._avg_size + 0.2 * size / len(items)
        if len(items) > self.max_datagrams or size > self.max_bytes:
            # one answer larger than the whole backlog: a random part of it, never the same
            items = self._fit(items)
            size = sum(r.size for _, r in items)
        while (
            self.datagrams + len(items) > self.max_datagrams or self.nbytes + size > self.max_bytes
        ):
            victims = (self._jobs[1] or self._jobs[0]) if fresh else None
            if not victims:
                self._dropped(len(items))
                return []
            self._evict(next(iter(victims.values())))
        job = _Job(next(self._order), source, fresh, len(items), size)
        self._jobs[0 if fresh else 1][job.key] = job
        for due, r in items:
            heapq.heappush(self._pending, (due, next(self._order), job, r, r.size))
        self.datagrams += len(items)
        self.nbytes += size
        st = self.stats
        st["backlog_peak"] = max(st["backlog_peak"], self.datagrams)
        st["backlog_peak_bytes"] = max(st["backlog_peak_bytes"], self.nbytes)
        kept: dict[int, Reply] = {id(r): r for _, r in items}
        return list(kept.values())

    def _fit(self, items: list[tuple[float, Reply]]) -> list[tuple[float, Reply]]:
        self.rng.shuffle(items)
        out: list[tuple[float, Reply]] = []
        size = 0
        for due, r in items:
            if len(out) < self.max_datagrams and size + r.size <= self.max_bytes:
                out.append((due, r))
                size += r.size
        self._dropped(len(items) - len(out))
        return out

    def _dropped(self, n: int) -> None:
        if n:
            self.stats["backlog_dropped"] += n
            self.stats["backlog_jobs_dropped"] += 1

    def _evict(self, job: _Job) -> None:
        job.dead = True
        self._jobs[0 if job.fresh else 1].pop(job.key, None)
        self.datagrams -= job.pending
        self.nbytes -= job.nbytes
        self._dead += job.pending
        self._dropped(job.pending)
        if self._dead > max(1024, 2 * self.datagrams):
            self._pending = [e for e in self._pending if not e[2].dead]
            self._ready = [e for e in self._ready if not e[4].dead]
            heapq.heapify(self._pending)
            heapq.heapify(self._ready)
            self._dead = 0

    def _promote(self, now: float) -> None:
        """Move the replies that are due from the waiting heap to the ready heap."""
        pending, ready = self._pending, self._ready
        while pending and (pending[0][0] <= now or pending[0][2].dead):
            due, order, job, r, size = heapq.heappop(pending)
            if job.dead:
                self._dead -= 1
            else:
                heapq.heappush(ready, (0 if job.fresh else 1, -job.key, due, order, job, r, size))
        while ready and ready[0][4].dead:
            heapq.heappop(ready)
            self._dead -= 1

    def _refill(self, now: float) -> None:
        if self._tokens < 0.0:
            self._tokens, self._last = self.burst, now
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._last) * self.rate)
        self._last = now

    def pop(self, now: float) -> Reply | None:
        """The next reply to send now, if one is due and the budget allows it."""
        self._refill(now)
        if self._tokens < 1.0:
            return None
        self._promote(now)
        if not self._ready:
            return None
        *_, job, reply, size = heapq.heappop(self._ready)
        job.pending -= 1
        job.nbytes -= size
        if job.pending == 0:
            self._jobs[0 if job.fresh else 1].pop(job.key, None)
        self.datagrams -= 1
        self.nbytes -= size
        self._tokens -= 1.0
        return reply

    def next_due(self, now: float) -> float | None:
        """When :meth:`pop` may next return a reply (None: nothing is queued)."""
        self._promote(now)
        if self._ready:
            due = now
        else:
            while self._pending and self._pending[0][2].dead:
                heapq.heappop(self._pending)
                self._dead -= 1
            if not self._pending:
                return None
            due = self._pending[0][0]
        self._refill(now)
        ready = now if self._tokens >= 1.0 else now + (1.0 - self._tokens) / self.rate
        return max(due, ready)

    def clear(self) -> None:
        """Forget every pending reply (shutdown)."""
        self._pending.clear()
        self._ready.clear()
        for jobs in self._jobs:
            jobs.clear()
        self.datagrams = self.nbytes = self._dead = 0


@dataclass
class _Seq:
    instance_id: int
    number: int = 0


@dataclass
class Responder:
    """The decisions of the target side of WS-Discovery, for any number of targets."""

    instance_id: int
    max_delay: float = APP_MAX_DELAY
    rate: float = 2.0  # Probe/Resolve per second per source address
    burst: int = 8
    unicast_repeat: int = 0
    max_datagram: int = MAX_DATAGRAM
    max_sources: int = 4096
    max_seen: int = 2048
    max_bodies: int = 8192
    max_backlog: int = 4096
    max_backlog_bytes: int = 4 << 20
    replies_per_s: float = 2000.0
    source_interval: float = 5.0
    # networks a directed (unicast) Probe/Resolve is answered for; None: any source
    unicast_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None
    rng: random.Random = field(default_factory=random.Random)
    targets: dict[str, Target] = field(default_factory=dict)
    versions: dict[str, tuple[str, int]] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    _seen: OrderedDict[str, bool] = field(default_factory=OrderedDict)  # MessageID: fresh
    _buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)
    _seq: dict[str, _Seq] = field(default_factory=dict)
    # serialised match bodies and their lengths by (kind, EPR, host, MetadataVersion): the
    # MetadataVersion rises with every change of what goes into a body; cleared on changes
    _bodies: dict[tuple[str, str, str, int], tuple[bytes, dict[str, str]]] = field(
        default_factory=dict
    )
    _sizes: dict[tuple[str, str, str, int], int] = field(default_factory=dict)
    # which targets match a (types, scopes, rule) Probe
    _hits: dict[tuple[tuple[QName, ...], tuple[str, ...], str], frozenset[str]] = field(
        default_factory=dict
    )
    backlog: Backlog = field(init=False)

    def __post_init__(self) -> None:
        self.backlog = Backlog(
            self.max_backlog,
            self.max_backlog_bytes,
            self.replies_per_s,
            self.source_interval,
            self.max_sources,
            self.rng,
            self.stats,
        )

    # ------------------------------------------------------------------ state changes
    def update(self, targets: Iterable[Target]) -> tuple[list[Target], list[Target]]:
        """Replace the discoverable set; returns (targets to Hello, targets to Bye).

        A new target, a target whose types/scopes/XAddrs changed (MetadataVersion + 1) and
        a target whose generation changed get a Hello; a target that is gone gets a Bye.
        """
        new = {t.key: t for t in targets}
        hello: list[Target] = []
        bye = [t for k, t in self.targets.items() if k not in new or new[k].epr != t.epr]
        for k, t in new.items():
            old = self.targets.get(k)
            fp = t.fingerprint
            prev = self.versions.get(t.epr)
            if prev is None:
                self.versions[t.epr] = (fp, 1)
            elif prev[0] != fp:
                self.versions[t.epr] = (fp, prev[1] + 1)
            if old is None or old.epr != t.epr or prev is None or prev[0] != fp:
                hello.append(t)
            elif old.generation != t.generation:
                self._seq[t.epr] = _Seq(self.instance_id + t.generation)
                hello.append(t)
        self.targets = new
        if hello or bye:
            self._bodies.clear()
            self._sizes.clear()
            self._hits.clear()
        return hello, bye

    def metadata_version(self, epr: str) -> int:
        """The current MetadataVersion of ``epr`` (0 when unknown)."""
        v = self.versions.get(epr)
        return v[1] if v else 0

    def endpoint(self, t: Target, host: str) -> Endpoint:
        """The Endpoint of ``t`` as seen from ``host``."""
        return Endpoint(t.epr, t.types, t.scopes, t.xaddrs(host), self.metadata_version(t.epr))

    def _header(self, t: Target, action: str, relates_to: str = "", to: str = "") -> Header:
        seq = self._seq.get(t.epr)
        if seq is None:
            seq = self._seq[t.epr] = _Seq(self.instance_id + t.generation)
        seq.number += 1
        return Header(
            action,
            new_message_id(),
            relates_to,
            to or TO_ANONYMOUS,
            seq.instance_id,
            seq.number,
        )

    def _match(self, kind: str, request: Header, t: Target, host: str, version: int) -> bytes:
        """A ProbeMatches/ResolveMatches datagram answering ``request``, made when it is sent
        (MessageID and MessageNumber then, too); its body is built once per target state."""
        action = ACTION_PROBE_MATCHES if kind == "ProbeMatch" else ACTION_RESOLVE_MATCHES
        header = _with_soap(self._header(t, action, request.message_id), request.soap_ns)
        key = (kind, t.epr, host, version)
        body = self._bodies.get(key)
        if body is None:
            if len(self._bodies) >= self.max_bodies:
                self._bodies.clear()
            ep = Endpoint(t.epr, t.types, t.scopes, t.xaddrs(host), version)
            body = self._bodies[key] = match_body(kind, ep)
        return build_with_body(header, body)

    def _size(self, kind: str, request: Header, t: Target, host: str, version: int) -> int:
        """The length of a match datagram, estimated without building it."""
        key = (kind, t.epr, host, version)
        blen = self._sizes.get(key)
        if blen is None:
            body = self._bodies.get(key)
            if body is not None:
                blen = len(body[0])
            else:
                h = t.host or host
                blen = (
                    _BODY_BASE
                    + len(t.epr)
                    + sum(len(x) + 1 for x in t.scopes)
                    + (len(t.xaddr) + len(h) if t.xaddr else 0)
                    + sum(len(q.local) + 5 for q in t.types)
                )
            if len(self._sizes) >= self.max_bodies:
                self._sizes.clear()
            self._sizes[key] = blen
        return _HEADER_BASE + len(request.message_id) + blen

    def forget(self, eprs: Iterable[str]) -> None:
        """Drop the MetadataVersion and AppSequence state of endpoints gone for good."""
        for epr in eprs:
            self.versions.pop(epr, None)
            self._seq.pop(epr, None)

    def unicast_allowed(self, addr: str) -> bool:
        """Whether a directed Probe/Resolve from ``addr`` is answered (``unicast_from``)."""
        if self.unicast_from is None:
            return True
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            return False
        return ip.is_loopback or any(ip in net for net in self.unicast_from)

    def hello(self, t: Target, host: str) -> bytes:
        """A Hello for ``t`` announcing XAddrs for ``host``."""
        self.stats["hello_sent"] += 1
        return build_hello(self._header(t, ACTION_HELLO, to=TO_DISCOVERY), self.endpoint(t, host))

    def bye(self, t: Target) -> bytes:
        """A Bye for ``t``."""
        self.stats["bye_sent"] += 1
        return build_bye(self._header(t, ACTION_BYE, to=TO_DISCOVERY), t.epr)

    # ------------------------------------------------------------------ requests
    def _allow(self, source: str, now: float) -> bool:
        b = self._buckets.get(source)
        if b is None:
            b = self._buckets[source] = _Bucket(float(self.burst), now)
            while len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
            b.tokens = min(float(self.burst), b.tokens + (now - b.last) * self.rate)
            b.last = now
        if b.tokens < 1.0:
            return False
        b.tokens -= 1.0
        return True

    def _remember(self, message_id: str, fresh: bool) -> None:
        self._seen[message_id] = fresh
        self._seen.move_to_end(message_id)
        while len(self._seen) > self.max_seen:
            self._seen.popitem(last=False)

    def receive(
        self,
        data: bytes,
        source: tuple[str, int],
        local: str,
        multicast: bool,
        now: float,
        *,
        host: str = "",
    ) -> list[Reply]:
        """Handle one datagram from ``source`` that arrived on local address ``local``.

        ``multicast`` says it was sent to the group (the replies then wait a random delay of
        up to APP_MAX_DELAY each); a directed Probe to a camera's own address is answered by
        the targets with that address only, one to any other local address by the targets
        without an address of their own. ``host`` is what goes into XAddrs for targets
        without a fixed host (default: ``local``).
        """
        self.stats["received"] += 1
        msg = parse(data, self.max_datagram)
        if isinstance(msg, Ignored):
            self.stats[msg.reason] += 1
            return []
        if not isinstance(msg, Probe | Resolve):
            self.stats["seen_" + type(msg).__name__.lower()] += 1
            return []
        if source[1] < 1024:
            self.stats["bad_source_port"] += 1
            return []
        if len(msg.header.message_id) > MAX_MESSAGE_ID:
            # it comes back as RelatesTo in every match: a long one multiplies the bytes
            self.stats["malformed"] += 1
            return []
        if not multicast and not self.unicast_allowed(source[0]):
            self.stats["unicast_refused"] += 1
            return []
        seen = self._seen.get(msg.header.message_id)
        if seen:
            self.stats["duplicate"] += 1
            return []
        # a request dropped here is not remembered: its SOAP-over-UDP copy, or the copy a
        # client sent from another of its addresses, gets the next chance
        if not self._allow(source[0], now):
            self.stats["rate_limited"] += 1
            return []
        if multicast:
            # a camera on a loopback address cannot answer a client on the link
            loop = is_loopback(source[0])
            candidates = [
                t
                for t in self.targets.values()
                if loop or not t.address or not is_loopback(t.address)
            ]
        else:
            own = [t for t in self.targets.values() if t.address and t.address == local]
            candidates = own or [t for t in self.targets.values() if not t.address]
        n = 1
        if isinstance(msg, Probe) and msg.match_by in SUPPORTED_RULES:
            n = min(len(candidates), len(self._probe_hits(msg)))
        n *= 1 + self.unicast_repeat
        fresh = self.backlog.heard(source[0], now)
        if seen is not None and not fresh:
            # answered for a recent source already; a copy from a fresh source (a client
            # probing from all its addresses) is answered again, with priority
            self.stats["duplicate"] += 1
            return []
        if not self.backlog.may_admit(fresh, n):
            self.stats["backlog_jobs_dropped"] += 1
            return []
        self._remember(msg.header.message_id, fresh)
        host = host or local
        if isinstance(msg, Probe):
            self.stats["probe"] += 1
            replies = self._answer_probe(msg, candidates, source, local, host, multicast)
        else:
            self.stats["resolve"] += 1
            replies = self._answer_resolve(msg, candidates, source, local, host, multicast)
        queued = self.backlog.push(replies, source[0], now, fresh)
        kind = "probe_match" if isinstance(msg, Probe) else "resolve_match"
        self.stats[kind] += sum(1 for r in queued if r.target is not None)
        return queued

    def _probe_hits(self, probe: Probe) -> frozenset[str]:
        """Keys of the targets that match ``probe``, cached per (types, scopes, rule)."""
        key = (probe.types, probe.scopes, probe.match_by)
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= 256:
                self._hits.clear()
            hits = self._hits[key] = frozenset(
                t.key for t in self.targets.values() if probe_matches(probe, t.types, t.scopes)
            )
        return hits

    def _delay(self, multicast: bool) -> float:
        return self.rng.uniform(0.0, self.max_delay) if multicast else 0.0

    def _answer_probe(
        self,
        probe: Probe,
        candidates: list[Target],
        source: tuple[str, int],
        local: str,
        host: str,
        multicast: bool,
    ) -> list[Reply]:
        if probe.match_by not in SUPPORTED_RULES:
            self.stats["unsupported_rule"] += 1
            if not candidates:
                return []
            header = Header(
                ACTION_FAULT,
                new_message_id(),
                probe.header.message_id,
                TO_ANONYMOUS,
                soap_ns=probe.header.soap_ns,
            )
            data = build_fault(
                header,
                "d:MatchingRuleNotSupported",
                "the matching rule is not supported",
                (MATCH_RFC3986, MATCH_STRCMP0, MATCH_UUID),
            )
            delay = self._delay(multicast)
            return [Reply(None, lambda: data, source, delay, local, size=len(data))]
        out = []
        hits = self._probe_hits(probe)
        for t in candidates:
            if t.key not in hits:
                continue
            version = self.metadata_version(t.epr)
            build = partial(self._match, "ProbeMatch", probe.header, t, host, version)
            size = self._size("ProbeMatch", probe.header, t, host, version)
            delay = self._delay(multicast)
            out.append(Reply(t, build, source, delay, local, self.unicast_repeat, size))
        return out

    def _answer_resolve(
        self,
        resolve: Resolve,
        candidates: list[Target],
        source: tuple[str, int],
        local: str,
        host: str,
        multicast: bool,
    ) -> list[Reply]:
        want = _uuid(resolve.epr)
        out = []
        for t in candidates:
            same = (want is not None and want == _uuid(t.epr)) or resolve.epr == t.epr
            if not same:
                continue
            version = self.metadata_version(t.epr)
            build = partial(self._match, "ResolveMatch", resolve.header, t, host, version)
            size = self._size("ResolveMatch", resolve.header, t, host, version)
            delay = self._delay(multicast)
            out.append(Reply(t, build, source, delay, local, self.unicast_repeat, size))
        return out


def is_loopback(addr: str) -> bool:
    """Whether ``addr`` is a loopback IP address (False for anything that is not an IP)."""
    try:
        return ipaddress.ip_address(addr.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _with_soap(h: Header, soap_ns: str) -> Header:
    if soap_ns == h.soap_ns:
        return h
    return Header(
        h.action, h.message_id, h.relates_to, h.to, h.instance_id, h.message_number, soap_ns
    )
