"""SOAP 1.2 for ONVIF: envelope parsing, dispatch, faults, WS-Security and HTTP Digest.

Sans-I/O: :meth:`Dispatcher.dispatch` takes the request bytes plus what the HTTP layer knows
(Authorization header, method, URI) and returns status, headers and body bytes. Requests are
parsed with :mod:`onvifcam.xmlsafe` (encoding checked, DOCTYPEs refused before libxml2 sees
them, nothing external ever loaded) and dispatched on the QName of the Body's first child;
responses are built with lxml's ElementMaker with every prefix declared once on the Envelope
(``ter:`` and ``tns1:`` are used in text, so they are declared too).

Access control follows ONVIF Core: every operation has an access class (PRE_AUTH ...
UNRECOVERABLE); PRE_AUTH operations answer without credentials, the rest need a valid
WS-Security UsernameToken (PasswordDigest or PasswordText) or HTTP Digest/Basic credentials
of a user whose level allows the class.

Replay protection: every UsernameToken that authenticates, on any operation (PRE_AUTH ones
included), has its nonce recorded in the camera's :class:`ReplayCache` until its Created
leaves the clock-skew window, so a token captured from any request cannot be used again.
A token on a PRE_AUTH operation that does not verify is ignored (the operation answers as
for an anonymous client, as a client with a skewed clock needs GetSystemDateAndTime); on
other operations, a token that fails beside valid HTTP Digest/Basic credentials is passed
over for them. Created is checked against the host's real clock (or the camera's reported
clock, which clients may sign with), never only the settable camera clock.
Each user may hold a bounded number of nonces; a user beyond it is refused, never forgotten.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import heapq
import hmac
import inspect
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lxml import etree
from lxml.builder import ElementMaker

from onvifcam import xmlsafe
from onvifcam.cameras import ADMIN, OPERATOR, USER, Camera, CameraError, User
from onvifcam.rtsp.auth import Authenticator, Credentials

log = logging.getLogger(__name__)

ENV12 = "http://www.w3.org/2003/05/soap-envelope"
ENV11 = "http://schemas.xmlsoap.org/soap/envelope/"
NS_TT = "http://www.onvif.org/ver10/schema"
NS_TDS = "http://www.onvif.org/ver10/device/wsdl"
NS_TRT = "http://www.onvif.org/ver10/media/wsdl"
NS_TR2 = "http://www.onvif.org/ver20/media/wsdl"
NS_TEV = "http://www.onvif.org/ver10/events/wsdl"
NS_TER = "http://www.onvif.org/ver10/error"
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
NS_WSA = "http://www.w3.org/2005/08/addressing"
NS_WSNT = "http://docs.oasis-open.org/wsn/b-2"
NS_TNS1 = "http://www.onvif.org/ver10/topics"
XML_NS = "http://www.w3.org/XML/1998/namespace"

NSMAP = {
    "s": ENV12,
    "tt": NS_TT,
    "tds": NS_TDS,
    "trt": NS_TRT,
    "tr2": NS_TR2,
    "tev": NS_TEV,
    "ter": NS_TER,
    "wsa": NS_WSA,
    "wsnt": NS_WSNT,
    "tns1": NS_TNS1,
}
_NSMAP11 = {**NSMAP, "s": ENV11}

S = ElementMaker(namespace=ENV12, nsmap=NSMAP)
S11 = ElementMaker(namespace=ENV11, nsmap=_NSMAP11)
TT = ElementMaker(namespace=NS_TT, nsmap=NSMAP)
TDS = ElementMaker(namespace=NS_TDS, nsmap=NSMAP)
TRT = ElementMaker(namespace=NS_TRT, nsmap=NSMAP)
TR2 = ElementMaker(namespace=NS_TR2, nsmap=NSMAP)
WSNT = ElementMaker(namespace=NS_WSNT, nsmap=NSMAP)

# ONVIF Core access classes and the default policy per user level.
PRE_AUTH = "PRE_AUTH"
READ_SYSTEM = "READ_SYSTEM"
READ_SYSTEM_SENSITIVE = "READ_SYSTEM_SENSITIVE"
READ_SYSTEM_SECRET = "READ_SYSTEM_SECRET"
WRITE_SYSTEM = "WRITE_SYSTEM"
UNRECOVERABLE = "UNRECOVERABLE"
READ_MEDIA = "READ_MEDIA"
ACTUATE = "ACTUATE"
_ALL = {
    PRE_AUTH,
    READ_SYSTEM,
    READ_SYSTEM_SENSITIVE,
    READ_SYSTEM_SECRET,
    WRITE_SYSTEM,
    UNRECOVERABLE,
    READ_MEDIA,
    ACTUATE,
}
POLICY: dict[str, frozenset[str]] = {
    ADMIN: frozenset(_ALL),
    OPERATOR: frozenset({PRE_AUTH, READ_SYSTEM, READ_SYSTEM_SENSITIVE, READ_MEDIA, ACTUATE}),
    USER: frozenset({PRE_AUTH, READ_SYSTEM, READ_MEDIA}),
}

CONTENT_TYPE = "application/soap+xml; charset=utf-8"
_DECL = b'<?xml version="1.0" encoding="UTF-8"?>\n'
CONTENT_TYPE11 = "text/xml; charset=utf-8"


def content_type(soap_ns: str) -> str:
    """The response Content-Type for a SOAP version (answered in kind)."""
    return CONTENT_TYPE if soap_ns == ENV12 else CONTENT_TYPE11


# Second-level subcodes for camera-model errors (ONVIF Core fault tables).
_PARENT = {
    "ter:UsernameClash": "ter:OperationProhibited",
    "ter:PasswordTooLong": "ter:OperationProhibited",
    "ter:PasswordTooWeak": "ter:OperationProhibited",
    "ter:UsernameTooLong": "ter:OperationProhibited",
    "ter:AnonymousNotAllowed": "ter:OperationProhibited",
    "ter:FixedScope": "ter:OperationProhibited",
    "ter:ScopeOverwrite": "ter:OperationProhibited",
    "ter:DeletionOfFixedProfile": "ter:Action",
}


class Fault(Exception):
    """A SOAP fault: code (Sender/Receiver), ter: subcodes, reason and HTTP status."""

    def __init__(
        self,
        subcodes: str | tuple[str, ...],
        reason: str,
        code: str = "Sender",
        status: int | None = None,
        challenge: bool = False,
        public: bool = False,
        logged: bool = False,
    ) -> None:
        super().__init__(reason)
        self.subcodes = (subcodes,) if isinstance(subcodes, str) else subcodes
        self.reason = reason
        self.code = code
        self.status = status or (400 if code == "Sender" else 500)
        self.challenge = challenge
        # ter:NotAuthorized reasons are hidden from the client unless public (they would
        # tell which user exists or which part of a token was wrong).
        self.public = public
        self.logged = logged  # already logged once (repeats of a refusal stay quiet)

    @classmethod
    def from_camera(cls, exc: CameraError) -> Fault:
        """Map a camera-model error to its ONVIF fault."""
        parent = _PARENT.get(exc.subcode) or (
            "ter:InvalidArgVal" if exc.code == "Sender" else "ter:Action"
        )
        subcodes = (parent,) if parent == exc.subcode else (parent, exc.subcode)
        return cls(subcodes, str(exc), exc.code)


class TokenQuotaFault(Fault):
    """A user has used up its replay-cache quota (refused, never forgotten; reason shown)."""

    def __init__(self, reason: str, logged: bool) -> None:
        super().__init__("ter:NotAuthorized", reason, public=True, logged=logged)


def not_authorized(reason: str = "Sender not authorized", challenge: bool = False) -> Fault:
    """The ter:NotAuthorized fault (401 with a Digest challenge when ``challenge``)."""
    return Fault("ter:NotAuthorized", reason, "Sender", 401 if challenge else 400, challenge)


def invalid_arg(subcode: str, reason: str) -> Fault:
    """env:Sender / ter:InvalidArgVal / ``subcode``."""
    return Fault(("ter:InvalidArgVal", subcode), reason)


# --------------------------------------------------------------------------- envelope


@dataclass
class SoapRequest:
    """A parsed request: SOAP version namespace, Header (or None) and the Body's first child."""

    soap_ns: str
    header: etree._Element | None
    body: etree._Element

    @property
    def action(self) -> str:
        """The operation's QName in Clark notation ({ns}Local)."""
        return str(self.body.tag)


def parse(data: bytes) -> SoapRequest:
    """Parse a SOAP 1.2 (or 1.1) envelope; raises Fault (Sender) on anything malformed."""
    if not data.strip():
        raise Fault("ter:WellFormed", "empty request body")
    try:
        root = xmlsafe.parse(data)
    except xmlsafe.XmlError as exc:
        raise Fault("ter:WellFormed", exc.reason) from None
    tag = root.tag if isinstance(root.tag, str) else ""
    ns, _, local = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    if local != "Envelope":
        raise Fault("ter:WellFormed", f"root element is {local or '?'}, not a SOAP Envelope")
    if ns not in (ENV12, ENV11):
        raise Fault("ter:VersionMismatch", f"unknown SOAP envelope namespace {ns!r}")
    header = None
    body = None
    for child in root:
        if not isinstance(child.tag, str):
            continue
        if child.tag == f"{{{ns}}}Header":
            header = child
        elif child.tag == f"{{{ns}}}Body":
            body = child
    if body is None:
        raise Fault("ter:WellFormed", "the envelope has no Body")
    first = next((c for c in body if isinstance(c.tag, str)), None)
    if first is None:
        raise Fault("ter:WellFormed", "the Body is empty")
    return SoapRequest(ns, header, first)


def serialize(child: etree._Element, soap_ns: str = ENV12) -> bytes:
    """An envelope around one Body child, as UTF-8 bytes with an XML declaration."""
    E = S if soap_ns == ENV12 else S11
    return _DECL + etree.tostring(
        E.Envelope(E.Body(child)), encoding="UTF-8", xml_declaration=False
    )


def fault_body(f: Fault, soap_ns: str = ENV12) -> bytes:
    """The envelope of a fault (SOAP 1.2 structure, or 1.1 faultcode/faultstring)."""
    if soap_ns == ENV11:
        el = S11.Fault(
            etree.Element("faultcode"),
            etree.Element("faultstring"),
        )
        el[0].text = "s:Client" if f.code == "Sender" else "s:Server"
        el[1].text = f.reason
        if f.subcodes:
            detail = etree.SubElement(el, "detail")
            detail.text = " ".join(f.subcodes)
        return serialize(el, ENV11)
    code = S.Code(S.Value(f"s:{f.code}"))
    parent = code
    for sub in f.subcodes:
        node = S.Subcode(S.Value(sub))
        parent.append(node)
        parent = node
    text = S.Text(f.reason)
    text.set(f"{{{XML_NS}}}lang", "en")
    return serialize(S.Fault(code, S.Reason(text)), ENV12)


# --------------------------------------------------------------------------- WS-Security


@dataclass(frozen=True)
class UsernameToken:
    """A WS-Security UsernameToken as sent."""

    username: str
    password: str
    digest: bool
    nonce: bytes | None
    created: str | None


def _local(el: etree._Element) -> str:
    tag = el.tag if isinstance(el.tag, str) else ""
    return tag.rpartition("}")[2]


def _child(el: etree._Element, local: str) -> etree._Element | None:
    for c in el:
        if isinstance(c.tag, str) and _local(c) == local:
            return c
    return None


def find_username_token(header: etree._Element | None) -> UsernameToken | None:
    """The UsernameToken of a wsse:Security header (found by namespace, any prefix)."""
    if header is None:
        return None
    sec = None
    for c in header:
        if not isinstance(c.tag, str) or _local(c) != "Security":
            continue
        ns = c.tag[1:].partition("}")[0] if c.tag.startswith("{") else ""
        if ns == NS_WSSE or "secext" in ns:
            sec = c
            break
    if sec is None:
        return None
    tok = _child(sec, "UsernameToken")
    if tok is None:
        raise not_authorized("Security header without a UsernameToken")
    user_el = _child(tok, "Username")
    pw_el = _child(tok, "Password")
    if user_el is None or pw_el is None:
        raise not_authorized("UsernameToken without Username or Password")
    ptype = pw_el.get("Type", "")
    digest = ptype.endswith("#PasswordDigest")
    if ptype and not digest and not ptype.endswith("#PasswordText"):
        raise not_authorized(f"unsupported password type {ptype[-40:]!r}")
    nonce_el = _child(tok, "Nonce")
    nonce = None
    if nonce_el is not None and (nonce_el.text or "").strip():
        enc = nonce_el.get("EncodingType", "")
        raw = (nonce_el.text or "").strip()
        try:
            nonce = bytes.fromhex(raw) if enc.endswith("#HexBinary") else base64.b64decode(raw)
        except (ValueError, binascii.Error):
            raise not_authorized("malformed Nonce") from None
    created_el = _child(tok, "Created")
    created = (created_el.text or "").strip() if created_el is not None else None
    return UsernameToken(
        (user_el.text or "").strip(), pw_el.text or "", digest, nonce, created or None
    )


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_created(text: str) -> float:
    """A wsu:Created timestamp (with or without fractions, Z or offset) as UNIX time."""
    t = _FRACTION.sub(r"\1", text.strip(), count=1)
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    try:
        d = dt.datetime.fromisoformat(t)
    except ValueError:
        raise not_authorized(f"malformed Created timestamp {text[:40]!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return d.timestamp()


class ReplayCache:
    """Nonces of one camera's accepted UsernameTokens, per user, kept while they could be replayed.

    A token is accepted while its Created is within ``window`` seconds of the host clock
    (a token signed with the camera's reported clock counts by its Created moved onto the
    host clock), so its nonce is kept until Created + ``window`` has passed (up to 2 x window
    after it arrived when Created is ahead). Each user may hold ``per_user`` nonces: a user
    beyond that gets a fault until some of its nonces expire, so no flood can push another
    user's nonce out of the cache. SetSystemDateAndTime does not move this clock, so it
    cannot reopen replays.
    """

    def __init__(self, window: float, per_user: int) -> None:
        self.window = window
        self.per_user = per_user
        # user -> (nonce digests, heap of (Created, nonce digest))
        self._users: dict[str, tuple[set[bytes], list[tuple[float, bytes]]]] = {}
        self._limited: set[str] = set()  # users refused since their last accepted token
        self.replays = 0
        self.refused = 0

    def record(self, user: str, nonce: bytes, created: float, now: float) -> None:
        """Record a token's nonce; raises ter:NotAuthorized on a replay or a full quota."""
        self.purge(now)
        key = hashlib.sha1(nonce).digest()  # fixed size whatever the client sends
        seen, heap = self._users.setdefault(user, (set(), []))
        if key in seen:
            self.replays += 1
            raise not_authorized("replayed nonce")
        if len(seen) >= self.per_user:
            self.refused += 1
            first = user not in self._limited
            self._limited.add(user)
            retry = max(1, math.ceil(heap[0][0] + self.window - now))
            raise TokenQuotaFault(
                f"too many WS-Security tokens for user {user[:64]!r}: {self.per_user} "
                f"nonces within the {self.window:g} s clock-skew window are remembered to "
                f"refuse replays ([onvif] nonce_rate_per_user); retry in {retry} s",
                logged=not first,
            )
        self._limited.discard(user)
        seen.add(key)
        heapq.heappush(heap, (created, key))

    def purge(self, now: float) -> None:
        """Drop nonces whose Created left the window."""
        for user in list(self._users):
            seen, heap = self._users[user]
            # the same test that refuses a token for its Created, so the two always agree
            while heap and now - heap[0][0] > self.window:
                _created, key = heapq.heappop(heap)
                seen.discard(key)
            if not heap:
                del self._users[user]

    def held(self, user: str | None = None) -> int:
        """Nonces held for ``user`` (all users when None)."""
        if user is not None:
            return len(self._users.get(user, (set(), []))[0])
        return sum(len(seen) for seen, _heap in self._users.values())

    def __len__(self) -> int:
        return self.held()


def verify_username_token(
    tok: UsernameToken,
    users: list[User],
    now: float,
    skew: float,
    nonces: ReplayCache,
    camera_offset: float = 0.0,
) -> User:
    """Check a UsernameToken against the camera's users and record its nonce.

    ``now`` is the host's real clock; ``camera_offset`` how far the camera's reported clock
    (SetSystemDateAndTime) is from it. Created is accepted within ``skew`` of the host clock,
    or of the camera clock (clients such as onvif-zeep-async sign with the time the camera
    reports), so a client setting the camera clock off locks nobody out. The nonce is kept
    by its Created moved onto the host clock. Raises ter:NotAuthorized (wrong credentials,
    Created outside both windows, a replayed nonce, or the user's nonce quota used up).
    """
    user = next((u for u in users if u.name == tok.username), None)
    if user is None:
        raise not_authorized(f"unknown user {tok.username[:64]!r}")
    created = now
    if tok.created is not None:
        created = parse_created(tok.created)
        if abs(now - created) > skew:
            if camera_offset and abs(now + camera_offset - created) <= skew:
                created -= camera_offset  # signed with the camera's clock
            else:
                raise not_authorized(
                    f"Created {tok.created[:40]} is outside the {skew:g} s clock-skew window"
                )
    if tok.digest:
        if tok.nonce is None or tok.created is None:
            raise not_authorized("PasswordDigest needs a Nonce and a Created timestamp")
        expected = base64.b64encode(
            hashlib.sha1(tok.nonce + tok.created.encode() + user.password.encode()).digest()
        )
        if not hmac.compare_digest(expected, tok.password.strip().encode()):
            raise not_authorized(f"wrong password for {user.name!r}")
    elif not hmac.compare_digest(user.password.encode(), tok.password.encode()):
        raise not_authorized(f"wrong password for {user.name!r}")
    if tok.nonce is not None:
        nonces.record(user.name, tok.nonce, created, now)
    return user


# --------------------------------------------------------------------------- dispatch


@dataclass
class Context:
    """Everything a handler needs about one request."""

    camera: Camera
    user: User | None
    soap_ns: str
    xaddr: Callable[[str], str]
    stream_uri: Callable[[str, str], str]
    snapshot_uri: Callable[[str], str]
    host: str = "127.0.0.1"
    http_port: int = 80
    rtsp_port: int = 554
    multicast: bool = True
    subscription: str = ""  # Events: the subscription id in the request URL, if any


# Plain functions or coroutine functions. A handler returns the Body's child element, or
# that child already serialised (bytes of one element declaring its own namespaces: hot
# paths that send the same fragments to many clients build them once).
Reply = etree._Element | bytes
Handler = Callable[[Context, etree._Element], Reply | Awaitable[Reply]]


@dataclass(frozen=True)
class Operation:
    """One SOAP operation: its handler and ONVIF access class."""

    action: str
    handler: Handler
    access: str


class OperationTable:
    """Operations by QName; services register into it with :meth:`op`."""

    def __init__(self) -> None:
        self.ops: dict[str, Operation] = {}

    def op(self, ns: str, name: str, access: str) -> Callable[[Handler], Handler]:
        """Decorator registering ``{ns}name``."""

        def deco(fn: Handler) -> Handler:
            action = f"{{{ns}}}{name}"
            self.ops[action] = Operation(action, fn, access)
            return fn

        return deco

    def merge(self, other: OperationTable) -> None:
        """Add another table's operations."""
        self.ops.update(other.ops)


@dataclass
class Response:
    """What the HTTP layer sends back."""

    status: int
    body: bytes
    headers: list[tuple[str, str]]
    action: str = ""
    user: str = ""


class Dispatcher:
    """Authenticates and dispatches SOAP requests for any camera."""

    def __init__(
        self,
        table: OperationTable,
        *,
        clock_skew: float = 300.0,
        nonce_rate_per_user: float = 10.0,
        max_nonces: int = 10000,
        digest: Authenticator | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.clock = clock  # the host's real clock: WS-Security Created is checked on it
        self.clock_skew = clock_skew
        # A nonce lives up to 2 x clock_skew (Created may be ahead of the camera clock).
        self.nonces_per_user = max(
            1, min(max_nonces, math.ceil(nonce_rate_per_user * 2 * clock_skew))
        )
        self.digest = digest or Authenticator(realm="onvifcam")
        # Per camera; kept across a camera's SystemReboot, or a reboot would reopen replays.
        self._nonces: dict[str, ReplayCache] = {}
        self.requests = 0
        self.faults = 0
        self.auth_failures = 0
        # (operation, result) -> count; result "ok", "fault", "auth_failure" or "error";
        # operations this table does not know count as "unknown" (bounded label values)
        self.by_operation: dict[tuple[str, str], int] = {}

    def _count(self, action: str, result: str) -> None:
        op = _short(action) if action in self.table.ops else "unknown"
        key = (op, result)
        self.by_operation[key] = self.by_operation.get(key, 0) + 1

    def nonces(self, camera: Camera) -> ReplayCache:
        """The camera's replay cache."""
        cache = self._nonces.get(camera.key)
        if cache is None:
            cache = self._nonces[camera.key] = ReplayCache(self.clock_skew, self.nonces_per_user)
        return cache

    def forget(self, camera: Camera) -> None:
        """A removed camera: drop its replay cache once none of its nonces can be replayed
        (a camera re-created with the same key within the window still refuses them)."""
        cache = self._nonces.get(camera.key)
        if cache is not None:
            cache.purge(self.clock())
            if not len(cache):
                del self._nonces[camera.key]

    def dispatch(
        self,
        data: bytes,
        make_context: Callable[[User | None, str], Context],
        camera: Camera,
        *,
        authorization: str | None = None,
        method: str = "POST",
        uri: str = "/",
    ) -> Response:
        """Handle one request body with a plain (synchronous) handler; never raises.

        A coroutine handler gets an internal-error fault here: use :meth:`dispatch_async`.
        """
        out = self._begin(data, make_context, camera, authorization, method, uri)
        if isinstance(out, Response):
            return out
        pending, soap_ns, action, user = out
        if inspect.isawaitable(pending):
            if inspect.iscoroutine(pending):
                pending.close()
            log.error("onvif: %s has a coroutine handler: use dispatch_async", _short(action))
            return self._internal_error(camera, soap_ns, action, traceback=False)
        return self._finish(pending, soap_ns, action, user, camera)

    async def dispatch_async(
        self,
        data: bytes,
        make_context: Callable[[User | None, str], Context],
        camera: Camera,
        *,
        authorization: str | None = None,
        method: str = "POST",
        uri: str = "/",
    ) -> Response:
        """Like :meth:`dispatch`, awaiting coroutine handlers (long polls); never raises."""
        out = self._begin(data, make_context, camera, authorization, method, uri)
        if isinstance(out, Response):
            return out
        pending, soap_ns, action, user = out
        if inspect.isawaitable(pending):
            try:
                pending = await pending
            except CameraError as exc:
                return self._fault(Fault.from_camera(exc), camera, soap_ns, action)
            except Fault as f:
                return self._fault(f, camera, soap_ns, action)
            except Exception:
                return self._internal_error(camera, soap_ns, action)
        return self._finish(pending, soap_ns, action, user, camera)

    def _begin(
        self,
        data: bytes,
        make_context: Callable[[User | None, str], Context],
        camera: Camera,
        authorization: str | None,
        method: str,
        uri: str,
    ) -> Response | tuple[object, str, str, User | None]:
        """Parse, authenticate and call the handler: a Response (fault), or what the handler
        returned (an element or an awaitable) with the SOAP version, action and user."""
        self.requests += 1
        soap_ns = ENV12
        action = ""
        try:
            if not data.strip() and camera.auth_required:
                # curl --digest (and other HTTP clients) first POST an empty body to get the
                # challenge; answer that before complaining about the body.
                if not authorization or self.check_http(camera, authorization, method, uri) is None:
                    raise not_authorized("credentials required", challenge=True)
            req = parse(data)
            soap_ns = req.soap_ns
            action = req.action
            op = self.table.ops.get(action)
            if op is None:
                raise Fault(
                    "ter:ActionNotSupported",
                    f"operation {action} is not supported",
                    "Receiver",
                )
            user = self._authenticate(camera, op, req, authorization, method, uri)
            ctx = make_context(user, soap_ns)
            try:
                result = op.handler(ctx, req.body)
            except CameraError as exc:
                raise Fault.from_camera(exc) from None
            return result, soap_ns, action, user
        except Fault as f:
            return self._fault(f, camera, soap_ns, action)
        except Exception:
            return self._internal_error(camera, soap_ns, action)

    def _finish(
        self, result: object, soap_ns: str, action: str, user: User | None, camera: Camera
    ) -> Response:
        try:
            if isinstance(result, bytes):
                head, tail = _envelope_parts(soap_ns)
                body = head + result + tail
            else:
                body = serialize(result, soap_ns)  # type: ignore[arg-type]
        except Exception:
            return self._internal_error(camera, soap_ns, action)
        self._count(action, "ok")
        return Response(
            200,
            body,
            [("Content-Type", content_type(soap_ns))],
            action,
            user.name if user else "",
        )

    def _fault(self, f: Fault, camera: Camera, soap_ns: str, action: str) -> Response:
        self.faults += 1
        denied = "ter:NotAuthorized" in f.subcodes
        if denied:
            self.auth_failures += 1
        self._count(action, "auth_failure" if denied else "fault")
        if f.logged:
            pass
        elif denied and f.public:
            log.warning("onvif %s: %s refused: %s", camera.name, _short(action), f.reason)
        elif denied:
            log.info("onvif %s: %s refused: %s", camera.name, _short(action), f.reason)
        elif f.code == "Sender":
            log.info("onvif %s: %s: %s", camera.name, _short(action) or "request", f.reason)
        headers = [("Content-Type", content_type(soap_ns))]
        if f.challenge:
            headers += self.digest.challenge_headers()
        reason = "Sender not authorized" if denied and not f.public else f.reason
        shown = Fault(f.subcodes, reason, f.code, f.status, f.challenge)
        return Response(f.status, fault_body(shown, soap_ns), headers, action)

    def _internal_error(
        self, camera: Camera, soap_ns: str, action: str, traceback: bool = True
    ) -> Response:
        self.faults += 1
        self._count(action, "error")
        if traceback:
            log.exception("onvif %s: internal error in %s", camera.name, _short(action))
        f = Fault("ter:Action", "internal error", "Receiver", 500)
        headers = [("Content-Type", content_type(soap_ns))]
        return Response(500, fault_body(f, soap_ns), headers, action)

    def _authenticate(
        self,
        camera: Camera,
        op: Operation,
        req: SoapRequest,
        authorization: str | None,
        method: str,
        uri: str,
    ) -> User | None:
        if not camera.auth_required:
            return None
        user: User | None = None
        if op.access == PRE_AUTH:
            # A token here is verified and its nonce recorded like anywhere else (or it could
            # be replayed on a protected operation); one that fails is ignored, since these
            # operations answer anyway and clients with a skewed clock need them.
            try:
                user = self._verify_token(camera, req)
            except TokenQuotaFault:
                raise  # refuse rather than answer with the nonce unrecorded
            except Fault as f:
                log.debug("onvif %s: %s: token ignored: %s", camera.name, _short(op.action), f)
            return user
        try:
            tok_user = self._verify_token(camera, req)
        except Fault as f:
            # A client whose token fails (a skewed clock, most often) but which also sent
            # valid HTTP Digest/Basic credentials is let in on those.
            http_user = (
                self.check_http(camera, authorization, method, uri) if authorization else None
            )
            if http_user is None:
                raise
            log.debug("onvif %s: token refused (%s); HTTP credentials accepted", camera.name, f)
            tok_user = http_user
        if tok_user is not None:
            user = tok_user
        elif authorization:
            user = self.check_http(camera, authorization, method, uri)
            if user is None:
                raise not_authorized("wrong HTTP credentials", challenge=True)
        else:
            raise not_authorized("credentials required", challenge=True)
        if op.access not in POLICY.get(user.level, frozenset()):
            raise not_authorized(f"user level {user.level} may not call {_short(op.action)}")
        return user

    def _verify_token(self, camera: Camera, req: SoapRequest) -> User | None:
        """The user of the request's UsernameToken (None without one); Fault when it fails."""
        tok = find_username_token(req.header)
        if tok is None:
            return None
        now = self.clock()
        return verify_username_token(
            tok,
            camera.users,
            now,
            self.clock_skew,
            self.nonces(camera),
            camera_offset=camera.now() - time.time(),
        )

    def check_http(self, camera: Camera, authorization: str, method: str, uri: str) -> User | None:
        """Verify HTTP Digest/Basic credentials; the user, or None."""
        users = camera.users
        res = self.digest.check(
            method, authorization, [Credentials(u.name, u.password) for u in users], uri
        )
        if not res.ok:
            log.info("onvif %s: HTTP auth failed: %s", camera.name, res.reason)
            return None
        return next((u for u in users if u.name == res.username), None)


@functools.cache
def _envelope_parts(soap_ns: str) -> tuple[bytes, bytes]:
    """What :func:`serialize` puts before and after the Body's child."""
    head, _, tail = serialize(etree.Element("onvifcam-marker"), soap_ns).partition(
        b"<onvifcam-marker/>"
    )
    return head, tail


def _short(action: str) -> str:
    return action.rpartition("}")[2]


def text_of(el: etree._Element | None, local: str, default: str | None = None) -> str | None:
    """Text of the first child called ``local`` (any namespace), stripped."""
    if el is None:
        return default
    c = _child(el, local)
    if c is None or c.text is None:
        return default
    return c.text.strip()


def child(el: etree._Element | None, local: str) -> etree._Element | None:
    """First child called ``local`` in any namespace."""
    return None if el is None else _child(el, local)


def children(el: etree._Element | None, local: str) -> list[etree._Element]:
    """Every child called ``local`` in any namespace."""
    if el is None:
        return []
    return [c for c in el if isinstance(c.tag, str) and _local(c) == local]


def require(el: etree._Element, local: str) -> str:
    """Text of a mandatory child; ter:InvalidArgVal fault when missing."""
    v = text_of(el, local)
    if v is None:
        raise Fault(("ter:InvalidArgVal", "ter:InvalidArgs"), f"missing {local}")
    return v


def boolean(text: str | None) -> bool:
    """xs:boolean."""
    return (text or "").strip().lower() in ("true", "1")


def xbool(value: bool) -> str:
    """Python bool as xs:boolean text."""
    return "true" if value else "false"
