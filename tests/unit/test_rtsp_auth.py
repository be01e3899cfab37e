"""Unit tests for RTSP authentication (onvifcam.rtsp.auth)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onvifcam.rtsp.auth import (
    Authenticator,
    AuthResult,
    Credentials,
    digest_response,
    parse_auth_header,
)

ALICE = Credentials("alice", "s3cret")
BOB = Credentials("bob", "hunter2")
USERS = [ALICE, BOB]
URL = "rtsp://192.168.1.10:8554/live/cam1"


class Clock:
    """A settable clock for nonce expiry tests."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def h(algorithm: str, text: str) -> str:
    name = {"MD5": "md5", "SHA-256": "sha256"}[algorithm]
    return hashlib.new(name, text.encode()).hexdigest()


def challenge(auth: Authenticator, index: int = 0) -> dict[str, str]:
    scheme, params = parse_auth_header(auth.challenge_headers()[index][1])
    assert scheme == "Digest"
    return params


def manual_digest(
    auth: Authenticator,
    user: str,
    password: str,
    *,
    method: str = "DESCRIBE",
    uri: str = URL,
    algorithm: str = "MD5",
    qop: bool = True,
    realm: str | None = None,
    nonce: str | None = None,
) -> str:
    """An Authorization header computed here, independently of the module under test."""
    realm = auth.realm if realm is None else realm
    nonce = challenge(auth)["nonce"] if nonce is None else nonce
    ha1 = h(algorithm, f"{user}:{realm}:{password}")
    ha2 = h(algorithm, f"{method}:{uri}")
    if qop:
        resp = h(algorithm, f"{ha1}:{nonce}:00000001:abcdef:auth:{ha2}")
        extra = ', qop=auth, nc=00000001, cnonce="abcdef"'
    else:
        resp = h(algorithm, f"{ha1}:{nonce}:{ha2}")
        extra = ""
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{resp}", algorithm={algorithm}{extra}'
    )


# -- parse_auth_header -------------------------------------------------------------------


class TestParseAuthHeader:
    def test_digest_with_quotes_escapes_and_commas(self) -> None:
        scheme, params = parse_auth_header(
            'Digest username="a\\"b", realm="r, with comma", nonce=abc,'
            '   uri="rtsp://h/x?a=1,b=2" ,qop=auth, NC=00000001'
        )
        assert scheme == "Digest"
        assert params == {
            "username": 'a"b',
            "realm": "r, with comma",
            "nonce": "abc",
            "uri": "rtsp://h/x?a=1,b=2",
            "qop": "auth",
            "nc": "00000001",
        }

    def test_basic_token68(self) -> None:
        assert parse_auth_header("Basic YWxpY2U6czNjcmV0") == (
            "Basic",
            {"token68": "YWxpY2U6czNjcmV0"},
        )
        assert parse_auth_header("Basic YQ==")[1] == {"token68": "YQ=="}

    def test_challenge(self) -> None:
        _, params = parse_auth_header('Digest realm="cam", nonce="n", qop="auth,auth-int"')
        assert params["qop"] == "auth,auth-int"
        assert parse_auth_header("Negotiate") == ("Negotiate", {})

    def test_spaces_around_equals_and_empty_elements(self) -> None:
        _, params = parse_auth_header('Digest a = "1",, b=2 ,')
        assert params == {"a": "1", "b": "2"}

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "   ",
            'Di"gest a=1',
            'Digest a="unterminated',
            'Digest a="dangling\\',
            "Digest a b",
            "Digest a=1 b=2",
            "Digest a=1, a=2",
            "Digest =1",
            "Digest a=,",
            "Digest a=1, b",
        ],
    )
    def test_malformed(self, value: str) -> None:
        with pytest.raises(ValueError):
            parse_auth_header(value)


@given(st.text(max_size=200))
def test_property_parse_auth_header_only_raises_value_error(value: str) -> None:
    try:
        scheme, params = parse_auth_header(value)
    except ValueError:
        return
    assert scheme and isinstance(params, dict)


_chars = st.sampled_from('abc XYZ019,=";\\\t/+:@-')


@given(st.text(alphabet=_chars, max_size=80))
def test_property_parse_auth_header_structured_noise(value: str) -> None:
    try:
        parse_auth_header("Digest " + value)
    except ValueError:
        pass


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x3FF), max_size=20),
        max_size=6,
    )
)
def test_property_quoted_params_round_trip(params: dict[str, str]) -> None:
    def quote(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    text = "Digest " + ", ".join(f"{k}={quote(v)}" for k, v in params.items())
    if not params:
        text = "Digest"
    assert parse_auth_header(text) == ("Digest", params)


# -- challenges ----------------------------------------------------------------------------


class TestChallenge:
    def test_default_headers(self) -> None:
        auth = Authenticator(realm="cams")
        headers = auth.challenge_headers()
        assert [name for name, _ in headers] == ["WWW-Authenticate", "WWW-Authenticate"]
        digest, basic = (v for _, v in headers)
        scheme, params = parse_auth_header(digest)
        assert scheme == "Digest"
        assert params["realm"] == "cams"
        assert params["algorithm"] == "MD5"
        assert params["qop"] == "auth"
        assert "stale" not in params
        assert basic == 'Basic realm="cams"'

    def test_stale_multiple_algorithms_no_basic(self) -> None:
        auth = Authenticator(algorithms=("SHA-256", "MD5"), allow_basic=False, offer_qop=False)
        headers = auth.challenge_headers(stale=True)
        assert len(headers) == 2
        algorithms = [parse_auth_header(v)[1]["algorithm"] for _, v in headers]
        assert algorithms == ["SHA-256", "MD5"]
        for _, value in headers:
            params = parse_auth_header(value)[1]
            assert params["stale"] == "TRUE"
            assert "qop" not in params

    def test_nonces_are_fresh(self) -> None:
        auth = Authenticator()
        assert challenge(auth)["nonce"] != challenge(auth)["nonce"]

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"algorithms": ()},
            {"algorithms": ("SHA-1",)},
            {"algorithms": ("MD5-sess",)},
            {"realm": 'a"b'},
        ],
    )
    def test_bad_configuration(self, kwargs: dict) -> None:
        with pytest.raises(ValueError):
            Authenticator(**kwargs)

    def test_credentials_repr_hides_password(self) -> None:
        assert "s3cret" not in repr(ALICE)


# -- check: Digest ---------------------------------------------------------------------


class TestDigest:
    @pytest.mark.parametrize("qop", [True, False])
    @pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
    def test_independent_vectors(self, algorithm: str, qop: bool) -> None:
        auth = Authenticator(algorithms=(algorithm,))
        header = manual_digest(auth, "alice", "s3cret", algorithm=algorithm, qop=qop)
        result = auth.check("DESCRIBE", header, USERS)
        assert result == AuthResult(True, "alice", False, result.reason)
        assert result.ok and algorithm in result.reason

    def test_uri_is_taken_from_header_path_or_url(self) -> None:
        auth = Authenticator()
        for uri in (URL, "/live/cam1", URL + "/trackID=0"):
            header = manual_digest(auth, "bob", "hunter2", method="SETUP", uri=uri)
            assert auth.check("SETUP", header, USERS).ok

    def test_uri_fallback_when_header_has_no_uri(self) -> None:
        auth = Authenticator()
        header = manual_digest(auth, "bob", "hunter2", uri=URL)
        header = header.replace(f'uri="{URL}", ', "")
        assert auth.check("DESCRIBE", header, USERS, uri_fallback=URL).ok
        result = auth.check("DESCRIBE", header, USERS)
        assert result.reason == "malformed Digest header: missing 'uri'"

    def test_wrong_method_fails(self) -> None:
        auth = Authenticator()
        header = manual_digest(auth, "alice", "s3cret", method="DESCRIBE")
        assert auth.check("PLAY", header, USERS).reason == "wrong password for 'alice'"

    def test_wrong_password(self) -> None:
        auth = Authenticator()
        result = auth.check("DESCRIBE", manual_digest(auth, "alice", "nope"), USERS)
        assert result == AuthResult(False, "alice", False, "wrong password for 'alice'")

    def test_unknown_user(self) -> None:
        auth = Authenticator()
        result = auth.check("DESCRIBE", manual_digest(auth, "mallory", "x"), USERS)
        assert result == AuthResult(False, None, False, "unknown user 'mallory'")

    def test_same_name_two_passwords(self) -> None:
        auth = Authenticator()
        users = [Credentials("alice", "old"), Credentials("alice", "s3cret")]
        assert auth.check("DESCRIBE", manual_digest(auth, "alice", "s3cret"), users).ok

    def test_wrong_realm(self) -> None:
        auth = Authenticator(realm="cams")
        header = manual_digest(auth, "alice", "s3cret", realm="other")
        assert auth.check("DESCRIBE", header, USERS).reason == "wrong realm 'other'"

    def test_nonce_not_issued_here(self) -> None:
        auth = Authenticator()
        for nonce in ("dcd98b7102dd2f0e8b11d0f600bfb0c093", "0" * 64):
            header = manual_digest(auth, "alice", "s3cret", nonce=nonce)
            assert auth.check("DESCRIBE", header, USERS).reason == "nonce not issued by this server"
        other = Authenticator()
        header = manual_digest(other, "alice", "s3cret")
        assert auth.check("DESCRIBE", header, USERS).reason == "nonce not issued by this server"

    def test_shared_secret_verifies_across_instances(self) -> None:
        a = Authenticator(secret=b"k" * 32)
        b = Authenticator(secret=b"k" * 32)
        assert b.check("DESCRIBE", manual_digest(a, "alice", "s3cret"), USERS).ok
        c = Authenticator(realm="other", secret=b"k" * 32)
        header = manual_digest(a, "alice", "s3cret", realm="other")
        assert not c.check("DESCRIBE", header, USERS).ok

    def test_nonce_expiry_is_stale_only_with_right_password(self) -> None:
        clock = Clock()
        auth = Authenticator(nonce_ttl=60, clock=clock)
        good = manual_digest(auth, "alice", "s3cret")
        bad = manual_digest(auth, "alice", "wrong", nonce=parse_auth_header(good)[1]["nonce"])
        clock.now += 59
        assert auth.check("DESCRIBE", good, USERS).ok
        clock.now += 2
        assert auth.check("DESCRIBE", good, USERS) == AuthResult(
            False, "alice", True, "nonce expired"
        )
        assert auth.check("DESCRIBE", bad, USERS).stale is False
        # a nonce from the future (clock stepped back) is also refused as stale
        clock.now -= 3600
        assert auth.check("DESCRIBE", good, USERS).stale is True

    def test_sess_algorithms(self) -> None:
        auth = Authenticator(algorithms=("MD5", "SHA-256"))
        nonce = challenge(auth)["nonce"]
        for algorithm in ("MD5", "SHA-256"):
            ha1 = h(algorithm, h(algorithm, f"alice:{auth.realm}:s3cret") + f":{nonce}:cn")
            ha2 = h(algorithm, f"PLAY:{URL}")
            resp = h(algorithm, f"{ha1}:{nonce}:00000002:cn:auth:{ha2}")
            header = (
                f'Digest username="alice", realm="{auth.realm}", nonce="{nonce}", uri="{URL}", '
                f'response="{resp}", algorithm={algorithm}-sess, qop=auth, nc=00000002, '
                f'cnonce="cn"'
            )
            assert auth.check("PLAY", header, USERS).ok, algorithm

    def test_algorithm_not_offered(self) -> None:
        auth = Authenticator(algorithms=("SHA-256",))
        header = manual_digest(auth, "alice", "s3cret", algorithm="MD5")
        assert auth.check("DESCRIBE", header, USERS).reason == "algorithm MD5 not offered"
        header = manual_digest(auth, "alice", "s3cret").replace("algorithm=MD5", "algorithm=SHA1")
        assert "unsupported algorithm" in auth.check("DESCRIBE", header, USERS).reason

    def test_userhash_and_username_star(self) -> None:
        auth = Authenticator(algorithms=("SHA-256",))
        users = [Credentials("jäsón", "pw")]
        nonce = challenge(auth)["nonce"]
        ha1 = h("SHA-256", f"jäsón:{auth.realm}:pw")
        resp = h("SHA-256", f"{ha1}:{nonce}:00000001:c:auth:{h('SHA-256', 'OPTIONS:*')}")
        common = (
            f'realm="{auth.realm}", nonce="{nonce}", uri="*", response="{resp}", '
            'algorithm=SHA-256, qop=auth, nc=00000001, cnonce="c"'
        )
        star = f"Digest username*=UTF-8''j%C3%A4s%C3%B3n, {common}"
        assert auth.check("OPTIONS", star, users).username == "jäsón"
        hashed = h("SHA-256", f"jäsón:{auth.realm}")
        userhash = f'Digest username="{hashed}", userhash=true, {common}'
        assert auth.check("OPTIONS", userhash, users) == AuthResult(
            True, "jäsón", False, "ok (Digest SHA-256)"
        )
        bad_star = f"Digest username*=latin1''x, {common}"
        assert auth.check("OPTIONS", bad_star, users).reason.startswith("malformed Digest")
        invalid_utf8 = f"Digest username*=UTF-8''%ff, {common}"
        assert auth.check("OPTIONS", invalid_utf8, users).reason.startswith("malformed Digest")

    @pytest.mark.parametrize(
        ("mutate", "reason"),
        [
            (lambda v: v.replace("qop=auth", "qop=auth-int"), "unsupported qop 'auth-int'"),
            (
                lambda v: v.replace(', nc=00000001, cnonce="abcdef"', ""),
                "malformed Digest header: qop without nc and cnonce",
            ),
            (lambda v: v.replace("nonce=", "xnonce="), "malformed Digest header: missing 'nonce'"),
            (lambda v: v.replace("realm=", "xrealm="), "malformed Digest header: missing 'realm'"),
            (
                lambda v: v.replace("response=", "xresponse="),
                "malformed Digest header: missing 'response'",
            ),
            (
                lambda v: v.replace("username=", "xusername="),
                "malformed Digest header: missing 'username'",
            ),
            (lambda v: v + ", broken", "malformed Digest header: parameter 'broken' has no value"),
            (
                lambda v: v + ', realm="dup"',
                "malformed Digest header: duplicate parameter 'realm'",
            ),
            (
                lambda v: (
                    v.replace("algorithm=MD5", "algorithm=MD5-sess")
                    .replace(', nc=00000001, cnonce="abcdef"', "")
                    .replace(", qop=auth", "")
                ),
                "malformed Digest header: MD5-sess without cnonce",
            ),
        ],
    )
    def test_malformed_digest(self, mutate, reason: str) -> None:
        auth = Authenticator()
        header = mutate(manual_digest(auth, "alice", "s3cret"))
        assert auth.check("DESCRIBE", header, USERS).reason == reason

    def test_non_ascii_response_does_not_raise(self) -> None:
        auth = Authenticator()
        header = manual_digest(auth, "alice", "s3cret").replace('response="', 'response="é')
        assert not auth.check("DESCRIBE", header, USERS).ok


# -- check: Basic and general --------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class TestBasicAndGeneral:
    def test_basic_ok(self) -> None:
        result = Authenticator().check("DESCRIBE", basic("alice", "s3cret"), USERS)
        assert result == AuthResult(True, "alice", False, "ok (Basic)")

    def test_basic_password_with_colon_and_unicode(self) -> None:
        users = [Credentials("ünï", "pa:ss:wörd")]
        assert Authenticator().check("PLAY", basic("ünï", "pa:ss:wörd"), users).ok

    def test_basic_wrong_password_and_unknown_user(self) -> None:
        auth = Authenticator()
        assert auth.check("PLAY", basic("alice", "x"), USERS).reason == "wrong password for 'alice'"
        assert auth.check("PLAY", basic("eve", "x"), USERS).reason == "unknown user 'eve'"

    @pytest.mark.parametrize("value", ["Basic !!!", "Basic", "Basic " + "YWxpY2U="])
    def test_basic_malformed(self, value: str) -> None:
        reason = Authenticator().check("PLAY", value, USERS).reason
        assert reason.startswith("malformed Basic header")

    def test_basic_disabled(self) -> None:
        auth = Authenticator(allow_basic=False)
        result = auth.check("PLAY", basic("alice", "s3cret"), USERS)
        assert result.reason == "unsupported scheme 'Basic'"

    def test_no_header(self) -> None:
        auth = Authenticator()
        for value in (None, "", "   "):
            assert auth.check("PLAY", value, USERS) == AuthResult(
                False, None, False, "no Authorization header"
            )

    def test_unsupported_scheme(self) -> None:
        result = Authenticator().check("PLAY", "Bearer abc.def", USERS)
        assert result.reason == "unsupported scheme 'Bearer'"

    def test_empty_allowed_means_open(self) -> None:
        auth = Authenticator()
        assert auth.check("PLAY", None, []).ok
        assert auth.check("PLAY", "garbage", iter(())).ok

    def test_scheme_is_case_insensitive(self) -> None:
        auth = Authenticator()
        assert auth.check("PLAY", basic("alice", "s3cret").replace("Basic", "bAsIc"), USERS).ok
        header = manual_digest(auth, "alice", "s3cret", method="PLAY").replace("Digest", "DIGEST")
        assert auth.check("PLAY", header, USERS).ok


# -- client helper -----------------------------------------------------------------------


class TestDigestResponse:
    def test_rfc2617_example(self) -> None:
        value = digest_response(
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle Of Life",
            {
                "realm": "testrealm@host.com",
                "qop": "auth,auth-int",
                "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
                "opaque": "5ccc069c403ebaf9f0171e9517f40e41",
            },
            cnonce="0a4f113b",
        )
        scheme, params = parse_auth_header(value)
        assert scheme == "Digest"
        assert params["response"] == "6629fae49393a05397450978507c4ef1"
        assert params["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"
        assert (params["qop"], params["nc"], params["cnonce"]) == ("auth", "00000001", "0a4f113b")

    @pytest.mark.parametrize(
        ("algorithm", "expected"),
        [
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
            ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ],
    )
    def test_rfc7616_examples(self, algorithm: str, expected: str) -> None:
        value = digest_response(
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle of Life",
            {
                "realm": "http-auth@example.org",
                "qop": "auth, auth-int",
                "algorithm": algorithm,
                "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
            },
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )
        params = parse_auth_header(value)[1]
        assert params["response"] == expected
        assert params["algorithm"] == algorithm

    def test_rfc2069_style_without_qop(self) -> None:
        value = digest_response("DESCRIBE", URL, "a", "b", {"realm": "r", "nonce": "n"}, nc=3)
        params = parse_auth_header(value)[1]
        ha1, ha2 = h("MD5", "a:r:b"), h("MD5", f"DESCRIBE:{URL}")
        assert params["response"] == h("MD5", f"{ha1}:n:{ha2}")
        assert "qop" not in params and "nc" not in params and "cnonce" not in params

    def test_nc_and_random_cnonce(self) -> None:
        challenge_params = {"realm": "r", "nonce": "n", "qop": "auth"}
        a = parse_auth_header(digest_response("PLAY", "*", "u", "p", challenge_params, nc=255))
        b = parse_auth_header(digest_response("PLAY", "*", "u", "p", challenge_params))
        assert a[1]["nc"] == "000000ff"
        assert a[1]["cnonce"] != b[1]["cnonce"]

    def test_quotes_in_username(self) -> None:
        value = digest_response("PLAY", "*", 'we"ird\\', "p", {"realm": "r", "nonce": "n"})
        assert parse_auth_header(value)[1]["username"] == 'we"ird\\'

    def test_unsupported_algorithm(self) -> None:
        with pytest.raises(ValueError):
            digest_response("PLAY", "*", "u", "p", {"nonce": "n", "algorithm": "SHA-512-256"})

    @pytest.mark.parametrize("algorithms", [("MD5",), ("SHA-256",), ("SHA-256", "MD5")])
    @pytest.mark.parametrize("offer_qop", [True, False])
    def test_round_trip_with_authenticator(
        self, algorithms: tuple[str, ...], offer_qop: bool
    ) -> None:
        auth = Authenticator(algorithms=algorithms, offer_qop=offer_qop)
        for _, value in auth.challenge_headers():
            scheme, params = parse_auth_header(value)
            if scheme != "Digest":
                continue
            header = digest_response("RECORD", URL, "bob", "hunter2", params, nc=7)
            assert auth.check("RECORD", header, USERS).ok
            header = digest_response("RECORD", URL, "bob", "wrong", params)
            assert not auth.check("RECORD", header, USERS).ok


@given(
    user=st.text(min_size=1, max_size=20).filter(lambda s: ":" not in s),
    password=st.text(max_size=20),
    method=st.sampled_from(["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "ANNOUNCE", "RECORD"]),
    uri=st.text(min_size=1, max_size=40),
)
def test_property_digest_round_trip(user: str, password: str, method: str, uri: str) -> None:
    auth = Authenticator(algorithms=("SHA-256", "MD5"))
    for _, value in auth.challenge_headers()[:2]:
        header = digest_response(method, uri, user, password, parse_auth_header(value)[1])
        result = auth.check(method, header, [Credentials(user, password)])
        assert result.ok, result.reason


@given(st.text(max_size=200))
def test_property_check_never_raises(value: str) -> None:
    result = Authenticator().check("PLAY", value, USERS)
    assert isinstance(result, AuthResult) and not result.ok
