"""SOAP envelope parsing, faults, WS-Security UsernameToken and dispatch/auth (no sockets)."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from onvifcam.cameras import OPERATOR, USER, CameraRegistry, User
from onvifcam.config import from_dict
from onvifcam.media.stream import StreamRegistry
from onvifcam.onvif import soap
from onvifcam.onvif.soap import Context, Dispatcher, Fault, ReplayCache
from onvifcam.rtsp.auth import digest_response, parse_auth_header
from onvifcam.state import StateStore
from onvifcam.web.server import operation_table
from tests.onvif_schema import (
    WSSE,
    WSU,
    created_now,
    envelope,
    fault_subcodes,
    security_header,
    validate,
)

DEVICE = 'xmlns="http://www.onvif.org/ver10/device/wsdl"'
MEDIA = 'xmlns="http://www.onvif.org/ver10/media/wsdl"'


# --------------------------------------------------------------------------- parsing


def test_parse_finds_action_and_header() -> None:
    req = soap.parse(envelope(f"<GetProfiles {MEDIA}/>", security_header("a", "b")))
    assert req.action == "{http://www.onvif.org/ver10/media/wsdl}GetProfiles"
    assert req.header is not None
    assert req.soap_ns == soap.ENV12


def test_parse_soap11() -> None:
    data = (
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body>'
        b'<GetHostname xmlns="http://www.onvif.org/ver10/device/wsdl"/></e:Body></e:Envelope>'
    )
    assert soap.parse(data).soap_ns == soap.ENV11


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"<s:Envelope", "malformed"),
        (b"<a/>", "not a SOAP Envelope"),
        (b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"/>', "no Body"),
        (
            b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>',
            "Body is empty",
        ),
    ],
)
def test_parse_rejects_malformed(data: bytes, why: str) -> None:
    with pytest.raises(Fault) as exc:
        soap.parse(data)
    assert exc.value.code == "Sender"
    assert exc.value.status == 400
    assert why in exc.value.reason


def test_xxe_is_refused_and_never_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    data = (
        f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file://{secret}">]>'
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
        f"<SetHostname {DEVICE}><Name>&xxe;</Name></SetHostname></s:Body></s:Envelope>"
    ).encode()
    with pytest.raises(Fault) as exc:
        soap.parse(data)
    assert "DTD" in exc.value.reason
    assert "TOPSECRET" not in exc.value.reason


def test_billion_laughs_is_refused() -> None:
    data = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
        b"<x>&b;</x></s:Body></s:Envelope>"
    )
    with pytest.raises(Fault):
        soap.parse(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_parse_only_ever_raises_fault(data: bytes) -> None:
    try:
        soap.parse(data)
    except Fault:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_parse_text_inside_envelope(text: str) -> None:
    body = "".join(ch for ch in text if ch.isprintable())
    data = envelope(f"<GetScopes {DEVICE}>{body}</GetScopes>")
    try:
        soap.parse(data)
    except Fault:
        pass


# --------------------------------------------------------------------------- faults


def test_fault_envelope_is_schema_valid_and_declares_ter() -> None:
    f = Fault(("ter:InvalidArgVal", "ter:NoProfile"), "no profile 'x'")
    body = soap.fault_body(f)
    root = validate(body)
    assert root.nsmap["ter"] == soap.NS_TER
    assert fault_subcodes(body) == ["ter:InvalidArgVal", "ter:NoProfile"]
    assert b'xml:lang="en"' in body


def test_fault_soap11() -> None:
    body = soap.fault_body(Fault("ter:ActionNotSupported", "x", "Receiver"), soap.ENV11)
    root = etree.fromstring(body)
    assert root.findtext(".//faultcode") == "s:Server"


# --------------------------------------------------------------------------- WS-Security


def _token(header: str) -> soap.UsernameToken:
    req = soap.parse(envelope(f"<GetProfiles {MEDIA}/>", header))
    tok = soap.find_username_token(req.header)
    assert tok is not None
    return tok


USERS = [User("admin", "secret"), User("viewer", "pw", USER)]


def _verify(header: str, cache: ReplayCache | None = None, skew: float = 300.0) -> User:
    return soap.verify_username_token(
        _token(header), USERS, time.time(), skew, ReplayCache(skew, 100) if cache is None else cache
    )


def test_password_digest_accepted() -> None:
    assert _verify(security_header("admin", "secret")).name == "admin"


def test_password_text_accepted() -> None:
    assert _verify(security_header("viewer", "pw", digest=False)).level == USER


@pytest.mark.parametrize("millis", [True, False])
def test_created_with_or_without_milliseconds(millis: bool) -> None:
    _verify(security_header("admin", "secret", created=created_now(millis=millis)))


def test_created_with_offset_and_long_fraction() -> None:
    import datetime as dt

    now = dt.datetime.now(dt.timezone(dt.timedelta(hours=2)))
    t = now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123+02:00"  # 9 fraction digits
    assert soap.parse_created(t) == pytest.approx(time.time(), abs=2)
    _verify(security_header("admin", "secret", created=t))


def test_wrong_password_refused() -> None:
    with pytest.raises(Fault) as exc:
        _verify(security_header("admin", "nope"))
    assert exc.value.subcodes == ("ter:NotAuthorized",)


def test_unknown_user_refused() -> None:
    with pytest.raises(Fault):
        _verify(security_header("mallory", "secret"))


def test_replayed_nonce_refused() -> None:
    cache = ReplayCache(300, 100)
    header = security_header("admin", "secret", nonce=os.urandom(16))
    _verify(header, cache)
    with pytest.raises(Fault) as exc:
        _verify(header, cache)
    assert "replayed" in str(exc.value)


@pytest.mark.parametrize("offset", [-301, 301, -3600])
def test_stale_or_future_created_refused(offset: float) -> None:
    with pytest.raises(Fault) as exc:
        _verify(security_header("admin", "secret", created=created_now(offset)))
    assert "clock-skew" in str(exc.value)


def test_created_inside_skew_window_accepted() -> None:
    _verify(security_header("admin", "secret", created=created_now(-250)))


def test_digest_without_nonce_refused() -> None:
    created = created_now()
    pw = base64.b64encode(hashlib.sha1(created.encode() + b"secret").digest()).decode()
    header = (
        f'<Security xmlns="{WSSE}"><UsernameToken><Username>admin</Username>'
        f'<Password Type="#PasswordDigest">{pw}</Password>'
        f'<Created xmlns="{WSU}">{created}</Created></UsernameToken></Security>'
    )
    with pytest.raises(Fault):
        _verify(header)


def test_security_header_in_default_namespace() -> None:
    """The npm onvif client uses default namespaces instead of wsse:/wsu: prefixes."""
    nonce = os.urandom(16)
    created = created_now()
    pw = base64.b64encode(hashlib.sha1(nonce + created.encode() + b"secret").digest()).decode()
    header = (
        f'<Security s:mustUnderstand="false" xmlns="{WSSE}"><UsernameToken>'
        "<Username>admin</Username>"
        '<Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-'
        f'token-profile-1.0#PasswordDigest">{pw}</Password>'
        f"<Nonce>{base64.b64encode(nonce).decode()}</Nonce>"
        f'<Created xmlns="{WSU}">{created}</Created></UsernameToken></Security>'
    )
    assert _verify(header).name == "admin"


def test_replay_cache_refuses_a_full_user_instead_of_forgetting() -> None:
    cache = ReplayCache(window=10, per_user=3)
    for i in range(3):
        cache.record("viewer", bytes([i]), created=100.0, now=100.0)
    with pytest.raises(Fault) as exc:
        cache.record("viewer", b"more", created=100.0, now=100.0)
    assert exc.value.public and "too many WS-Security tokens for user 'viewer'" in exc.value.reason
    assert "nonce_rate_per_user" in exc.value.reason and "retry in 10 s" in exc.value.reason
    for i in range(3):  # nothing was evicted: every recorded nonce is still refused
        with pytest.raises(Fault, match="replayed"):
            cache.record("viewer", bytes([i]), created=100.0, now=100.0)
    cache.record("admin", b"a", created=100.0, now=100.0)  # other users are not affected
    assert (cache.held("viewer"), cache.held("admin"), cache.refused) == (3, 1, 1)


def test_replay_cache_keeps_a_nonce_while_its_created_is_in_the_window() -> None:
    cache = ReplayCache(window=10, per_user=3)
    cache.record("u", b"n", created=105.0, now=100.0)  # Created ahead of the camera clock
    for now in (100.0, 110.0, 115.0):  # |now - Created| <= 10: acceptable, so refused
        with pytest.raises(Fault, match="replayed"):
            cache.record("u", b"n", created=105.0, now=now)
    cache.record("u", b"other", created=115.5, now=115.5)  # purges "n": Created left the window
    assert cache.held("u") == 1
    cache.record("u", b"n", created=115.5, now=115.5)  # a new token may reuse a stale nonce


def test_replay_cache_frees_a_full_user_as_created_leaves_the_window() -> None:
    cache = ReplayCache(window=10, per_user=2)
    cache.record("u", b"1", created=100.0, now=100.0)
    cache.record("u", b"2", created=105.0, now=105.0)
    with pytest.raises(Fault, match="retry in 5 s"):
        cache.record("u", b"3", created=105.0, now=105.0)
    cache.record("u", b"3", created=111.0, now=111.0)
    assert cache.held() == 2


# --------------------------------------------------------------------------- dispatch


@pytest.fixture
def world(tmp_path: Path) -> tuple[CameraRegistry, Dispatcher]:
    return _world(tmp_path)


def _ctx(cam: object) -> object:
    def make(user: User | None, soap_ns: str) -> Context:
        return Context(
            camera=cam,  # type: ignore[arg-type]
            user=user,
            soap_ns=soap_ns,
            xaddr=lambda s: f"http://127.0.0.1:8080/onvif/{s}_service",
            stream_uri=lambda p, scheme: f"{scheme}://127.0.0.1:8554/{p}",
            snapshot_uri=lambda t: f"http://127.0.0.1:8080/onvif/snapshot?profile={t}",
        )

    return make


def _call(
    world: tuple[CameraRegistry, Dispatcher],
    body: str,
    header: str = "",
    camera: str = "Lobby",
    **kw: str,
) -> soap.Response:
    reg, disp = world
    cam = reg.cameras[camera]
    resp = disp.dispatch(envelope(body, header), _ctx(cam), cam, **kw)  # type: ignore[arg-type]
    validate(resp.body)
    return resp


@pytest.mark.parametrize(
    "body",
    [
        "<tds:GetSystemDateAndTime/>",
        "<tds:GetCapabilities><tds:Category>All</tds:Category></tds:GetCapabilities>",
        "<tds:GetServices><tds:IncludeCapability>true</tds:IncludeCapability></tds:GetServices>",
        "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>",
        "<tds:GetServiceCapabilities/>",
        "<tds:GetWsdlUrl/>",
        "<tds:GetHostname/>",
        "<tds:GetEndpointReference/>",
        "<trt:GetServiceCapabilities/>",
        "<tr2:GetServiceCapabilities/>",
    ],
)
def test_pre_auth_operations_need_no_credentials(
    world: tuple[CameraRegistry, Dispatcher], body: str
) -> None:
    resp = _call(world, body)
    assert resp.status == 200, resp.body


def test_protected_operation_without_credentials_gets_digest_challenge(
    world: tuple[CameraRegistry, Dispatcher],
) -> None:
    resp = _call(world, f"<GetProfiles {MEDIA}/>")
    assert resp.status == 401
    assert fault_subcodes(resp.body) == ["ter:NotAuthorized"]
    assert any(k == "WWW-Authenticate" and v.startswith("Digest ") for k, v in resp.headers)


def test_wrong_wsse_password_is_400_not_authorized(
    world: tuple[CameraRegistry, Dispatcher],
) -> None:
    resp = _call(world, f"<GetProfiles {MEDIA}/>", security_header("admin", "wrong"))
    assert resp.status == 400
    assert fault_subcodes(resp.body) == ["ter:NotAuthorized"]
    assert b"wrong" not in resp.body  # the reason does not leak which part failed


def test_http_digest_accepted(world: tuple[CameraRegistry, Dispatcher]) -> None:
    _reg, disp = world
    challenge = next(v for _k, v in disp.digest.challenge_headers() if v.startswith("Digest"))
    _scheme, params = parse_auth_header(challenge)
    uri = "/onvif/media_service"
    authz = digest_response("POST", uri, "admin", "secret", params)
    resp = _call(world, f"<GetProfiles {MEDIA}/>", authorization=authz, uri=uri)
    assert resp.status == 200
    bad = digest_response("POST", uri, "admin", "nope", params)
    resp = _call(world, f"<GetProfiles {MEDIA}/>", authorization=bad, uri=uri)
    assert resp.status == 401


def test_unknown_operation_is_action_not_supported(
    world: tuple[CameraRegistry, Dispatcher],
) -> None:
    resp = _call(world, f"<FlyToTheMoon {DEVICE}/>")
    assert resp.status == 500
    assert fault_subcodes(resp.body) == ["ter:ActionNotSupported"]
    root = validate(resp.body)
    assert root.find(f".//{{{soap.ENV12}}}Value").text == "s:Receiver"


def test_malformed_xml_is_sender_fault_400(world: tuple[CameraRegistry, Dispatcher]) -> None:
    reg, disp = world
    cam = reg.cameras["Lobby"]
    resp = disp.dispatch(b"<s:Envelope><oops", _ctx(cam), cam)  # type: ignore[arg-type]
    assert resp.status == 400
    validate(resp.body)
    assert fault_subcodes(resp.body) == ["ter:WellFormed"]


@pytest.mark.parametrize(
    ("user", "password", "body", "ok"),
    [
        ("viewer", "viewpw", f"<GetProfiles {MEDIA}/>", True),
        ("viewer", "viewpw", f"<SetHostname {DEVICE}><Name>x1</Name></SetHostname>", False),
        ("viewer", "viewpw", f"<CreateProfile {MEDIA}><Name>n</Name></CreateProfile>", False),
        ("viewer", "viewpw", f"<GetUsers {DEVICE}/>", False),
        ("op", "oppw", f"<CreateProfile {MEDIA}><Name>n</Name></CreateProfile>", True),
        ("op", "oppw", f"<SetHostname {DEVICE}><Name>x1</Name></SetHostname>", False),
        ("op", "oppw", f"<SystemReboot {DEVICE}/>", False),
        ("admin", "secret", f"<SetHostname {DEVICE}><Name>x1</Name></SetHostname>", True),
        ("admin", "secret", f"<GetUsers {DEVICE}/>", True),
    ],
)
def test_user_levels(
    world: tuple[CameraRegistry, Dispatcher], user: str, password: str, body: str, ok: bool
) -> None:
    resp = _call(world, body, security_header(user, password))
    if ok:
        assert resp.status == 200, resp.body
    else:
        assert resp.status == 400
        assert fault_subcodes(resp.body) == ["ter:NotAuthorized"]


def test_auth_off_camera_answers_everything(world: tuple[CameraRegistry, Dispatcher]) -> None:
    resp = _call(world, f"<GetProfiles {MEDIA}/>", camera="Open")
    assert resp.status == 200


def test_synology_unauthenticated_create_profile_gets_a_fault(
    world: tuple[CameraRegistry, Dispatcher],
) -> None:
    resp = _call(world, f"<CreateProfile {MEDIA}><Name>syno</Name></CreateProfile>")
    assert resp.status == 401
    assert fault_subcodes(resp.body) == ["ter:NotAuthorized"]


def test_any_content_type_and_soap11_answered_in_kind(
    world: tuple[CameraRegistry, Dispatcher],
) -> None:
    reg, disp = world
    cam = reg.cameras["Lobby"]
    data = (
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body>'
        b'<GetHostname xmlns="http://www.onvif.org/ver10/device/wsdl"/></e:Body></e:Envelope>'
    )
    resp = disp.dispatch(data, _ctx(cam), cam)  # type: ignore[arg-type]
    assert resp.status == 200
    assert dict(resp.headers)["Content-Type"].startswith("text/xml")
    assert b"http://schemas.xmlsoap.org/soap/envelope/" in resp.body


def test_internal_error_is_a_fault_in_the_request_soap_version(
    world: tuple[CameraRegistry, Dispatcher],
) -> None:
    reg, _disp = world
    cam = reg.cameras["Open"]
    table = soap.OperationTable()

    @table.op(soap.NS_TDS, "GetHostname", soap.PRE_AUTH)
    def broken(ctx: Context, req: etree._Element) -> etree._Element:
        raise RuntimeError("handler bug")

    data = (
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body>'
        b'<GetHostname xmlns="http://www.onvif.org/ver10/device/wsdl"/></e:Body></e:Envelope>'
    )
    resp = Dispatcher(table).dispatch(data, _ctx(cam), cam)  # type: ignore[arg-type]
    assert resp.status == 500
    assert dict(resp.headers)["Content-Type"].startswith("text/xml")
    assert etree.fromstring(resp.body).findtext(".//faultcode") == "s:Server"


# --------------------------------------------------------------------------- hardening


CREATE_USER = (
    f"<CreateUsers {DEVICE}><User><Username>mallory</Username><Password>Mallory-pw1</Password>"
    "<UserLevel>Administrator</UserLevel></User></CreateUsers>"
)


def test_token_first_used_on_a_pre_auth_operation_cannot_be_replayed(
    world: tuple[CameraRegistry, Dispatcher],
) -> None:
    header = security_header("admin", "secret")
    assert _call(world, "<tds:GetSystemDateAndTime/>", header).status == 200
    resp = _call(world, CREATE_USER, header)
    assert resp.status == 400
    assert fault_subcodes(resp.body) == ["ter:NotAuthorized"]
    assert "mallory" not in [u.name for u in world[0].cameras["Lobby"].users]


@pytest.mark.parametrize(
    "header",
    [
        security_header("admin", "wrong"),
        security_header("admin", "secret", created=created_now(-3600)),
        security_header("nobody", "secret"),
        f'<Security xmlns="{WSSE}"/>',
    ],
)
def test_pre_auth_operation_answers_despite_a_bad_token(
    world: tuple[CameraRegistry, Dispatcher], header: str
) -> None:
    """A client with a skewed clock must still get GetSystemDateAndTime."""
    assert _call(world, "<tds:GetSystemDateAndTime/>", header).status == 200


def test_flooding_user_is_refused_and_cannot_evict_an_admin_nonce(tmp_path: Path) -> None:
    reg, _ = _world(tmp_path)
    disp = Dispatcher(operation_table(), clock_skew=300, nonce_rate_per_user=0.01)
    world = (reg, disp)
    assert disp.nonces_per_user == 6  # 0.01/s x 2 x 300 s
    admin = security_header("admin", "secret")
    assert _call(world, f"<GetUsers {DEVICE}/>", admin).status == 200
    for _ in range(6):
        viewer = security_header("viewer", "viewpw")
        assert _call(world, "<tds:GetSystemDateAndTime/>", viewer).status == 200
    resp = _call(world, f"<GetProfiles {MEDIA}/>", security_header("viewer", "viewpw"))
    assert resp.status == 400
    assert b"too many WS-Security tokens for user 'viewer'" in resp.body
    resp = _call(world, "<tds:GetSystemDateAndTime/>", security_header("viewer", "viewpw"))
    assert resp.status == 400  # refused rather than answered with the nonce unrecorded
    resp = _call(world, CREATE_USER, admin)  # the admin nonce is still remembered
    assert resp.status == 400
    assert b"Sender not authorized" in resp.body
    assert _call(world, f"<GetUsers {DEVICE}/>", security_header("admin", "secret")).status == 200


def _world(tmp_path: Path) -> tuple[CameraRegistry, Dispatcher]:
    cfg = from_dict(
        {
            "server": {"state_dir": str(tmp_path)},
            "cameras": [
                {"name": "Lobby", "path": "lobby", "username": "admin", "password": "secret"},
                {"name": "Open", "path": "open", "auth": False},
            ],
        }
    )
    streams = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=10)
    reg = CameraRegistry(cfg, StateStore(tmp_path), streams)
    reg.load()
    reg.cameras["Lobby"].create_users(
        [User("op", "oppw", OPERATOR), User("viewer", "viewpw", USER)]
    )
    return reg, Dispatcher(operation_table(), clock_skew=300)


def test_empty_post_gets_the_digest_challenge(world: tuple[CameraRegistry, Dispatcher]) -> None:
    """curl --digest first POSTs an empty body; it needs the 401, not a 400."""
    reg, disp = world
    cam = reg.cameras["Lobby"]
    resp = disp.dispatch(b"", _ctx(cam), cam)  # type: ignore[arg-type]
    assert resp.status == 401
    validate(resp.body)
    assert fault_subcodes(resp.body) == ["ter:NotAuthorized"]
    assert any(k == "WWW-Authenticate" and v.startswith("Digest ") for k, v in resp.headers)
    challenge = next(v for _k, v in disp.digest.challenge_headers() if v.startswith("Digest"))
    uri = "/onvif/device_service"
    authz = digest_response("POST", uri, "admin", "secret", parse_auth_header(challenge)[1])
    resp = disp.dispatch(b"", _ctx(cam), cam, authorization=authz, uri=uri)  # type: ignore[arg-type]
    assert resp.status == 400  # with valid credentials the empty body itself is the problem
    assert fault_subcodes(resp.body) == ["ter:WellFormed"]
    cam = reg.cameras["Open"]
    resp = disp.dispatch(b"  ", _ctx(cam), cam)  # type: ignore[arg-type]
    assert resp.status == 400


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_doctype_is_refused_with_one_text_whatever_file_it_names(
    world: tuple[CameraRegistry, Dispatcher], tmp_path: Path, encoding: str
) -> None:
    """An existing and a missing file give the same answer: no file-system oracle."""
    reg, disp = world
    cam = reg.cameras["Lobby"]
    present = tmp_path / "present.dtd"
    present.write_text("<!ELEMENT x ANY>")
    bodies = []
    for path in (present, tmp_path / "missing.dtd", Path("/etc/passwd")):
        doc = (
            f'<!DOCTYPE s:Envelope SYSTEM "file://{path}">'
            + envelope("<tds:GetSystemDateAndTime/>").decode().partition("?>")[2]
        )
        resp = disp.dispatch(doc.encode(encoding), _ctx(cam), cam)  # type: ignore[arg-type]
        assert resp.status == 400
        assert fault_subcodes(resp.body) == ["ter:WellFormed"]
        bodies.append(resp.body)
    assert bodies[0] == bodies[1] == bodies[2]
    assert b"DTDs (DOCTYPE and ENTITY declarations) are not allowed" in bodies[0]


def test_forget_keeps_a_removed_cameras_live_nonces() -> None:
    """Removing a camera drops its replay cache only once nothing in it can be replayed."""
    from onvifcam.onvif.soap import ReplayCache

    cache = ReplayCache(window=300.0, per_user=10)
    cache.record("admin", b"n1", created=1000.0, now=1000.0)
    cache.purge(1200.0)
    assert cache.held("admin") == 1  # still inside the window: must stay refused
    cache.purge(1301.0)
    assert len(cache) == 0


def test_failed_token_with_valid_http_digest_is_accepted(
    world: tuple[CameraRegistry, Dispatcher],
) -> None:
    """A client with a skewed clock falls back to HTTP auth: the token fails, Digest holds."""
    _reg, disp = world
    challenge = next(v for _k, v in disp.digest.challenge_headers() if v.startswith("Digest"))
    _scheme, params = parse_auth_header(challenge)
    uri = "/onvif/media_service"
    stale = security_header("admin", "secret", created=created_now(-3600))
    authz = digest_response("POST", uri, "admin", "secret", params)
    resp = _call(world, f"<GetProfiles {MEDIA}/>", stale, authorization=authz, uri=uri)
    assert resp.status == 200, resp.body
    bad = digest_response("POST", uri, "admin", "nope", params)
    resp = _call(world, f"<GetProfiles {MEDIA}/>", stale, authorization=bad, uri=uri)
    assert resp.status == 400 and fault_subcodes(resp.body) == ["ter:NotAuthorized"]
    basic = "Basic " + base64.b64encode(b"admin:secret").decode()
    wrong = security_header("admin", "wrong")
    resp = _call(world, f"<GetProfiles {MEDIA}/>", wrong, authorization=basic, uri=uri)
    assert resp.status == 200, resp.body


def test_camera_clock_set_off_locks_nobody_out(world: tuple[CameraRegistry, Dispatcher]) -> None:
    """SetSystemDateAndTime an hour ahead: tokens on the host's clock and tokens on the
    clock the camera reports both authenticate; nothing else does, and no replay."""
    reg, _disp = world
    cam = reg.cameras["Lobby"]
    cam.set_time("Manual", None, False, time.time() + 3600)
    host = security_header("admin", "secret")
    assert _call(world, f"<GetProfiles {MEDIA}/>", host).status == 200
    assert _call(world, f"<GetProfiles {MEDIA}/>", host).status == 400  # replayed
    camera_clock = security_header("admin", "secret", created=created_now(3600))
    assert _call(world, f"<GetProfiles {MEDIA}/>", camera_clock).status == 200
    assert _call(world, f"<GetProfiles {MEDIA}/>", camera_clock).status == 400  # replayed
    off = security_header("admin", "secret", created=created_now(1800))
    assert _call(world, f"<GetProfiles {MEDIA}/>", off).status == 400
