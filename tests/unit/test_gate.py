"""auth/gate.py: one publish/read admission for every ingest, without sockets."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onvifcam.auth.gate import (
    Gate,
    HttpAuthorization,
    PlainCredentials,
    Refusal,
    RefusalKind,
)
from onvifcam.config import from_dict
from onvifcam.rtsp.auth import Authenticator, Credentials, digest_response


@dataclass
class FakeHolder:
    """A publisher as the gate sees it (the gate only describes and kicks it)."""

    description: str
    kicked: list[str] = field(default_factory=list)

    def kick(self, reason: str) -> None:
        self.kicked.append(reason)


def gate(**paths: dict[str, object]) -> Gate:
    return Gate(from_dict({"paths": paths} if paths else {}))


def refusal(fn, *args) -> Refusal:  # type: ignore[no-untyped-def]
    with pytest.raises(Refusal) as info:
        fn(*args)
    return info.value


def test_open_path_admits_and_release_frees_it() -> None:
    g = gate()
    a, b = FakeHolder("a"), FakeHolder("b")
    claim = g.admit_publish("cam", PlainCredentials(), a)
    assert g.holder("cam") is a
    r = refusal(g.admit_publish, "cam", PlainCredentials(), b)
    assert r.kind is RefusalKind.CONFLICT and "already has a publisher (a)" in r.reason
    claim.release()
    claim.release()  # idempotent
    g.admit_publish("cam", PlainCredentials(), b)
    assert g.holder("cam") is b
    assert g.stats()["refused"] == {"conflict": 1}


def test_same_holder_may_claim_again() -> None:
    g = gate()
    a = FakeHolder("a")
    g.admit_publish("cam", PlainCredentials(), a)
    g.admit_publish("cam", PlainCredentials(), a)
    assert g.stats()["held"] == 1


def test_replace_kicks_the_old_holder() -> None:
    g = gate(cam={"on_conflict": "replace"})
    a, b = FakeHolder("a"), FakeHolder("b")
    old = g.admit_publish("cam", PlainCredentials(), a)
    g.admit_publish("cam", PlainCredentials(), b)
    assert a.kicked == ["replaced by b"] and old.released and g.holder("cam") is b
    old.release()  # the old connection closing later must not free b's claim
    assert g.holder("cam") is b


def test_closed_path_and_empty_path_are_forbidden() -> None:
    g = gate(private={"publish": False})
    assert refusal(g.admit_publish, "private", PlainCredentials(), FakeHolder("a")).kind is (
        RefusalKind.FORBIDDEN
    )
    assert refusal(g.admit_publish, "", PlainCredentials(), FakeHolder("a")).kind is (
        RefusalKind.FORBIDDEN
    )


def test_credentials_and_key() -> None:
    g = gate(cam={"publish_user": "enc", "publish_password": "pw", "publish_key": "k1"})
    h = FakeHolder("a")
    for presented in (
        PlainCredentials(),
        PlainCredentials("enc", "nope", "k1"),
        PlainCredentials("other", "pw", "k1"),
        PlainCredentials("enc", "pw", None),
        PlainCredentials("enc", "pw", "k2"),
    ):
        r = refusal(g.admit_publish, "cam", presented, h)
        assert r.kind is RefusalKind.UNAUTHORIZED and "'cam'" in r.reason
    g.admit_publish("cam", PlainCredentials("enc", "pw", "k1"), h)


def test_secrets_never_in_repr() -> None:
    assert "pw" not in repr(PlainCredentials("enc", "pw", "secret-key"))
    assert "secret-key" not in repr(PlainCredentials("enc", "pw", "secret-key"))


def test_rtsp_digest_header_through_the_gate() -> None:
    auth = Authenticator(clock=lambda: 1000.0)
    g = gate(cam={"publish_user": "enc", "publish_password": "pw"})
    challenge = {"realm": auth.realm, "nonce": auth.make_nonce(), "qop": "auth"}
    header = digest_response("ANNOUNCE", "rtsp://h/cam", "enc", "pw", challenge)
    g.admit_publish("cam", HttpAuthorization(auth, "ANNOUNCE", header), FakeHolder("a"))
    wrong = digest_response("ANNOUNCE", "rtsp://h/cam", "enc", "bad", challenge)
    # an open path ignores whatever header came with the request
    g.admit_publish("open", HttpAuthorization(auth, "ANNOUNCE", wrong), FakeHolder("b"))
    assert (
        refusal(
            g.admit_publish, "cam", HttpAuthorization(auth, "ANNOUNCE", wrong), FakeHolder("b")
        ).kind
        is RefusalKind.UNAUTHORIZED
    )


def test_read_admission_with_camera_users() -> None:
    g = gate(viewers={"read_user": "viewer", "read_password": "v"})
    users = {"viewers": ([("admin", "onvif-pw")], False), "locked": ([("admin", "a")], True)}
    g.camera_users = lambda path: users.get(path, ([], False))
    assert g.readers("open") == []
    g.admit_read("open", PlainCredentials())
    assert g.readers("viewers") == [Credentials("viewer", "v"), Credentials("admin", "onvif-pw")]
    g.admit_read("viewers", PlainCredentials("admin", "onvif-pw"))
    g.admit_read("viewers", PlainCredentials("viewer", "v"))
    assert refusal(g.admit_read, "viewers", PlainCredentials()).kind is RefusalKind.UNAUTHORIZED
    g.admit_read("locked", PlainCredentials("admin", "a"))
    assert refusal(g.admit_read, "locked", PlainCredentials("admin", "x")).kind is (
        RefusalKind.UNAUTHORIZED
    )


@given(st.text(max_size=40), st.text(max_size=40), st.one_of(st.none(), st.text(max_size=40)))
def test_only_the_right_secret_admits(user: str, password: str, key: str | None) -> None:
    g = gate(cam={"publish_user": "enc", "publish_password": "pw", "publish_key": "k1"})
    ok = (user, password, key) == ("enc", "pw", "k1")
    try:
        g.admit_publish("cam", PlainCredentials(user, password, key), FakeHolder("x"))
    except Refusal as r:
        assert not ok and r.kind is RefusalKind.UNAUTHORIZED
    else:
        assert ok


def test_a_wrong_stream_key_is_told_apart_from_wrong_credentials() -> None:
    # RTSP answers a wrong key with a plain 401 (a login prompt would not help).
    g = gate(**{"both/cam": {"publish_user": "enc", "publish_password": "pw", "publish_key": "k"}})
    a = FakeHolder("a")
    creds = refusal(g.admit_publish, "both/cam", PlainCredentials("enc", "x", "k"), a)
    key = refusal(g.admit_publish, "both/cam", PlainCredentials("enc", "pw", "nope"), a)
    assert creds.kind is key.kind is RefusalKind.UNAUTHORIZED
    assert (creds.key, key.key) == (False, True)
