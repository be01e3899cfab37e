"""SRT handshake: Stream IDs, SYN cookies, induction and conclusion answers, rejections."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onvifcam.srt import packet
from onvifcam.srt.caller import Caller
from onvifcam.srt.handshake import (
    Mode,
    RejectCode,
    Rejection,
    Responder,
    StreamRequest,
    parse_streamid,
)
from onvifcam.srt.packet import ControlPacket, ExtType, Handshake, HsExt, HsType, encode_words

HOST, PORT = "192.0.2.7", 40000


def responder(**kw: int) -> Responder:
    return Responder(b"k" * 32, listener_id=77, **kw)


@pytest.mark.parametrize(
    ("sid", "want"),
    [
        ("publish:cam1", StreamRequest(Mode.PUBLISH, "cam1")),
        ("publish:/live/cam1/", StreamRequest(Mode.PUBLISH, "live/cam1")),
        ("read:cam1", StreamRequest(Mode.READ, "cam1")),
        ("live/cam2", StreamRequest(Mode.PUBLISH, "live/cam2")),
        ("publish:cam1:enc:pw", StreamRequest(Mode.PUBLISH, "cam1", "enc", "pw")),
        ("publish:cam1:enc:pw:key=k1", StreamRequest(Mode.PUBLISH, "cam1", "enc", "pw", "k1")),
        ("publish:cam1?key=s3", StreamRequest(Mode.PUBLISH, "cam1", key="s3")),
        ("cam1?user=u&pass=p", StreamRequest(Mode.PUBLISH, "cam1", "u", "p")),
        ("#!::r=cam3,m=publish", StreamRequest(Mode.PUBLISH, "cam3")),
        ("#!::m=publish,r=a/b,u=enc,s=pw", StreamRequest(Mode.PUBLISH, "a/b", "enc", "pw")),
        ("#!::r=cam3,m=publish,bmd_uuid=xyz", StreamRequest(Mode.PUBLISH, "cam3")),
        ("#!::r=cam3", StreamRequest(Mode.READ, "cam3")),  # m defaults to request
        ("%23!::r=cam4,m=publish", StreamRequest(Mode.PUBLISH, "cam4")),
    ],
)
def test_stream_id_forms(sid: str, want: StreamRequest) -> None:
    assert parse_streamid(sid) == want


@pytest.mark.parametrize(
    ("sid", "code", "why"),
    [
        ("", RejectCode.X_BAD_REQUEST, "no stream id"),
        ("publish:", RejectCode.X_BAD_REQUEST, "names no path"),
        ("publish:a b", RejectCode.X_BAD_REQUEST, "spaces or control"),
        ("publish:cam:extra", RejectCode.X_BAD_REQUEST, "expected publish:PATH"),
        ("#!::r=x,m=bidirectional", RejectCode.X_BAD_MODE, "not supported"),
        ("#!::r=x,junk", RejectCode.X_BAD_REQUEST, "is not key=value"),
    ],
)
def test_bad_stream_ids(sid: str, code: RejectCode, why: str) -> None:
    with pytest.raises(Rejection, match=why) as err:
        parse_streamid(sid)
    assert err.value.code == code


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_stream_id_parses_or_is_rejected(sid: str) -> None:
    try:
        req = parse_streamid(sid)
    except Rejection as rej:
        assert rej.code in (RejectCode.X_BAD_REQUEST, RejectCode.X_BAD_MODE)
        return
    assert req.path and req.path == req.path.strip("/")


def test_reject_codes_travel_as_1000_plus_code() -> None:
    assert Rejection(RejectCode.X_UNAUTHORIZED, "").wire == 2401
    assert Rejection(RejectCode.BADSECRET, "").wire == 1010


def test_cookie_is_valid_this_minute_and_the_next() -> None:
    r = responder()
    c = r.cookie(HOST, PORT, 600.0)
    assert r.cookie_ok(c, HOST, PORT, 659.9)
    assert r.cookie_ok(c, HOST, PORT, 719.9)  # the caller may straddle a minute
    assert not r.cookie_ok(c, HOST, PORT, 720.0)
    assert not r.cookie_ok(c, HOST, PORT + 1, 600.0)
    assert not r.cookie_ok(c, "192.0.2.8", PORT, 600.0)


def _hs(data: bytes) -> Handshake:
    pkt = packet.parse(data)
    assert isinstance(pkt, ControlPacket)
    return Handshake.parse(pkt.cif)


def test_induction_response() -> None:
    caller = Caller()
    hs = _hs(caller.induction(0.0))
    reply = responder(pbkeylen=32).induction(hs, HOST, PORT, 10.0)
    assert reply is not None
    ans = _hs(reply)
    assert (ans.version, ans.extension, ans.hs_type, ans.encryption) == (
        5,
        packet.SRT_MAGIC,
        HsType.INDUCTION,
        4,
    )
    assert ans.cookie == responder().cookie(HOST, PORT, 10.0)
    assert ans.extensions == ()
    assert packet.parse(reply).dst == caller.socket_id


def _conclusion(caller: Caller) -> Handshake:
    return _hs(caller.conclusion(1.0))


def test_conclusion_negotiates_the_larger_latency() -> None:
    r = responder(latency_ms=120)
    req = r.conclusion(_conclusion(Caller(latency_ms=300)), 5000, HOST, PORT)
    assert req.latency_ms == 300 and req.stream.path == "cam1"
    assert r.conclusion(_conclusion(Caller(latency_ms=80)), 0, HOST, PORT).latency_ms == 120
    capped = responder(max_latency_ms=2000)
    assert capped.conclusion(_conclusion(Caller(latency_ms=9000)), 0, HOST, PORT).latency_ms == (
        2000
    )
    reply = _hs(r.accept(req, 99, 8192))
    hsrsp = HsExt.parse(reply.ext(ExtType.HSRSP) or b"")
    assert (reply.hs_type, reply.socket_id, reply.isn) == (HsType.CONCLUSION, 99, req.isn)
    assert hsrsp.recv_delay == 300
    assert hsrsp.flags & packet.FLAG_TSBPDRCV and hsrsp.flags & packet.FLAG_TLPKTDROP
    assert reply.ext(ExtType.KMRSP) is None


def test_conclusion_with_key_material_answers_kmrsp() -> None:
    caller = Caller(passphrase="0123456789abc", key_len=24)
    req = responder().conclusion(_conclusion(caller), 0, HOST, PORT)
    assert req.km is not None and req.km.key_len == 24
    reply = _hs(responder().accept(req, 5, 8192))
    assert reply.ext(ExtType.KMRSP) == req.km_raw
    assert reply.encryption == 3 and reply.extension & packet.EXT_KMREQ


@pytest.mark.parametrize(
    ("caller", "code", "why"),
    [
        (Caller(version=4), RejectCode.VERSION, "HSv5"),
        (Caller(flags=0x3F | packet.FLAG_STREAM), RejectCode.MESSAGEAPI, "live mode"),
        (Caller(flags=packet.FLAG_TSBPDRCV), RejectCode.ROGUE, "TSBPD"),
        (
            Caller(extra_extensions=((ExtType.CONGESTION, encode_words("file")),)),
            RejectCode.CONGESTION,
            "'file'",
        ),
        (
            Caller(extra_extensions=((ExtType.FILTER, encode_words("fec,cols:10")),)),
            RejectCode.FILTER,
            "FEC",
        ),
        (Caller(extra_extensions=((ExtType.GROUP, bytes(8)),)), RejectCode.GROUP, "bonding"),
        (Caller(streamid="publish:" + "x" * 600), RejectCode.X_BAD_REQUEST, "at most 512"),
        (Caller(streamid=""), RejectCode.X_BAD_REQUEST, "no stream id"),
    ],
)
def test_conclusion_rejections(caller: Caller, code: RejectCode, why: str) -> None:
    r = responder()
    hs = _conclusion(caller)
    with pytest.raises(Rejection, match=why) as err:
        r.conclusion(hs, 0, HOST, PORT)
    assert err.value.code == code
    ans = _hs(r.reject(hs, err.value, HOST))
    assert ans.hs_type == 1000 + int(code)


def test_live_congestion_is_accepted() -> None:
    caller = Caller(extra_extensions=((ExtType.CONGESTION, encode_words("live")),))
    assert responder().conclusion(_conclusion(caller), 0, HOST, PORT).stream.path == "cam1"


def test_conclusion_without_hsreq_is_rogue() -> None:
    hs = _conclusion(Caller())
    bare = Handshake(5, 0, 0, hs.isn, 1500, 8192, HsType.CONCLUSION, hs.socket_id, hs.cookie)
    with pytest.raises(Rejection, match="without the HSREQ") as err:
        responder().conclusion(bare, 0, HOST, PORT)
    assert err.value.code == RejectCode.ROGUE
