"""Server-side RTSP authentication: Digest (RFC 2617 / RFC 7616, plus RFC 2069) and Basic.

Nonces are stateless: ``hex(timestamp) + hex(salt) + hex(HMAC(secret, ...))``, so any
nonce this :class:`Authenticator` issued verifies without server-side storage, and an
expired one is reported as ``stale`` when the response was otherwise right (the client
then retries with a fresh nonce without asking the user). Replay within the nonce
lifetime is not detected (no ``nc`` bookkeeping).

Sans-I/O: no sockets, no event loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

__all__ = [
    "AuthResult",
    "Authenticator",
    "Credentials",
    "digest_response",
    "parse_auth_header",
]


@dataclass(frozen=True)
class Credentials:
    """A user allowed to access a resource."""

    username: str
    password: str = ""

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***')"


@dataclass(frozen=True)
class AuthResult:
    """Outcome of :meth:`Authenticator.check`; ``reason`` is meant for the log."""

    ok: bool
    username: str | None = None
    stale: bool = False
    reason: str = ""


# -- header parsing ---------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_WS = " \t"


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """Split an Authorization / WWW-Authenticate value into scheme and parameters.

    Parameter names are lower-cased; quoted values are unescaped. A token68 credential
    (``Basic dXNlcjpwYXNz``) is returned as ``{"token68": "dXNlcjpwYXNz"}``. Raises
    ValueError on malformed input (including duplicate parameters).
    """
    text = value.strip(_WS)
    scheme, _, rest = text.partition(" ")
    if not _TOKEN.fullmatch(scheme):
        raise ValueError(f"invalid authentication scheme {scheme[:32]!r}")
    rest = rest.strip(_WS)
    params: dict[str, str] = {}
    if not rest:
        return scheme, params
    if _TOKEN68.fullmatch(rest):
        params["token68"] = rest
        return scheme, params
    i, n = 0, len(rest)
    while i < n:
        # skip separators and whitespace between parameters
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        m = _TOKEN.match(rest, i)
        if m is None:
            raise ValueError(f"invalid parameter name at {rest[i : i + 20]!r}")
        name = m.group().lower()
        i = m.end()
        while i < n and rest[i] in _WS:
            i += 1
        if i >= n or rest[i] != "=":
            raise ValueError(f"parameter {name!r} has no value")
        i += 1
        while i < n and rest[i] in _WS:
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise ValueError(f"unterminated quoted value for {name!r}")
                ch = rest[i]
                if ch == "\\":
                    if i + 1 >= n:
                        raise ValueError(f"dangling escape in value for {name!r}")
                    chars.append(rest[i + 1])
                    i += 2
                elif ch == '"':
                    i += 1
                    break
                else:
                    chars.append(ch)
                    i += 1
            param = "".join(chars)
        else:
            m = _TOKEN.match(rest, i)
            if m is None:
                raise ValueError(f"invalid value for {name!r} at {rest[i : i + 20]!r}")
            param = m.group()
            i = m.end()
        if name in params:
            raise ValueError(f"duplicate parameter {name!r}")
        params[name] = param
        while i < n and rest[i] in _WS:
            i += 1
        if i < n and rest[i] != ",":
            raise ValueError(f"expected ',' after {name!r}, got {rest[i : i + 20]!r}")
    return scheme, params


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- digest arithmetic ------------------------------------------------------------------

_HASHES: dict[str, Callable[[bytes], Any]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}


def _split_algorithm(algorithm: str) -> tuple[str, bool]:
    """``"sha-256-sess"`` -> ``("SHA-256", True)``; ValueError if unknown."""
    name = algorithm.upper()
    sess = name.endswith("-SESS")
    if sess:
        name = name[: -len("-SESS")]
    if name not in _HASHES:
        raise ValueError(f"unsupported algorithm {algorithm!r}")
    return name, sess


def _h(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode("utf-8", "surrogatepass")).hexdigest()


def _expected_response(
    *,
    algorithm: str,
    sess: bool,
    ha1_base: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str,
    cnonce: str,
) -> str:
    """RFC 7616 3.4.1 ``response`` from ``H(user:realm:password)``."""
    ha1 = _h(algorithm, f"{ha1_base}:{nonce}:{cnonce}") if sess else ha1_base
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1}:{nonce}:{ha2}")


def digest_response(
    method: str,
    uri: str,
    username: str,
    password: str,
    challenge_params: dict[str, str],
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """Client side: the Authorization value answering a Digest challenge.

    Uses ``qop=auth`` when the challenge offers it, RFC 2069 style otherwise.
    """
    realm = challenge_params.get("realm", "")
    nonce = challenge_params["nonce"]
    algorithm_param = challenge_params.get("algorithm", "MD5")
    algorithm, sess = _split_algorithm(algorithm_param)
    offered = [q.strip().lower() for q in challenge_params.get("qop", "").split(",")]
    qop = "auth" if "auth" in offered else None
    if cnonce is None:
        cnonce = secrets.token_hex(8)
    nc_text = f"{nc:08x}"
    value = _expected_response(
        algorithm=algorithm,
        sess=sess,
        ha1_base=_h(algorithm, f"{username}:{realm}:{password}"),
        method=method,
        uri=uri,
        nonce=nonce,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
    )
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(value)}",
    ]
    if "algorithm" in challenge_params:
        parts.append(f"algorithm={algorithm_param}")
    if "opaque" in challenge_params:
        parts.append(f"opaque={_quote(challenge_params['opaque'])}")
    if qop or sess:
        parts.append(f"cnonce={_quote(cnonce)}")
    if qop:
        parts.append(f"qop={qop}")
        parts.append(f"nc={nc_text}")
    return "Digest " + ", ".join(parts)


# -- server -----------------------------------------------------------------------------

_NONCE_TIME = struct.Struct(">Q")
_NONCE_HEX = re.compile(r"[0-9a-f]{64}")
_FUTURE_SKEW = 5.0


class Authenticator:
    """Issues challenges and checks Authorization headers against allowed credentials.

    ``secret`` keys the nonce HMAC (random per instance by default; pass a fixed one to
    share nonces between instances or across restarts). ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        realm: str = "onvifcam",
        secret: bytes | None = None,
        nonce_ttl: float = 300.0,
        algorithms: tuple[str, ...] = ("MD5",),
        allow_basic: bool = True,
        *,
        offer_qop: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not algorithms:
            raise ValueError("at least one Digest algorithm is required")
        for algorithm in algorithms:
            name, sess = _split_algorithm(algorithm)
            if sess:
                raise ValueError(f"offer {name}, not {algorithm}: -sess is accepted from it")
        if '"' in realm or "\\" in realm:
            raise ValueError(f"realm must not contain quotes or backslashes: {realm!r}")
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self.algorithms = tuple(a.upper() for a in algorithms)
        self.allow_basic = allow_basic
        self.offer_qop = offer_qop
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._clock = clock

    # nonce = 16 hex (ms timestamp) + 16 hex (salt) + 32 hex (HMAC-SHA256 truncated)
    def _mac(self, stamp_salt: bytes) -> bytes:
        msg = stamp_salt + self.realm.encode("utf-8")
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:16]

    def make_nonce(self) -> str:
        """A fresh nonce that this authenticator will verify until it expires."""
        stamp_salt = _NONCE_TIME.pack(int(self._clock() * 1000)) + secrets.token_bytes(8)
        return (stamp_salt + self._mac(stamp_salt)).hex()

    def _nonce_age(self, nonce: str) -> float | None:
        """Seconds since ``nonce`` was issued, or None if we did not issue it."""
        if not _NONCE_HEX.fullmatch(nonce):
            return None
        raw = bytes.fromhex(nonce)
        if not hmac.compare_digest(self._mac(raw[:16]), raw[16:]):
            return None
        (millis,) = _NONCE_TIME.unpack(raw[:8])
        return self._clock() - millis / 1000

    def challenge_headers(self, stale: bool = False) -> list[tuple[str, str]]:
        """``WWW-Authenticate`` headers for a 401: one Digest per algorithm, then Basic."""
        headers: list[tuple[str, str]] = []
        for algorithm in self.algorithms:
            parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.make_nonce())}"]
            parts.append(f"algorithm={algorithm}")
            if self.offer_qop:
                parts.append('qop="auth"')
            if stale:
                parts.append("stale=TRUE")
            headers.append(("WWW-Authenticate", "Digest " + ", ".join(parts)))
        if self.allow_basic:
            headers.append(("WWW-Authenticate", f"Basic realm={_quote(self.realm)}"))
        return headers

    def check(
        self,
        method: str,
        authorization: str | None,
        allowed: Iterable[Credentials],
        uri_fallback: str | None = None,
    ) -> AuthResult:
        """Verify ``authorization`` for a request with ``method``.

        An empty ``allowed`` means no authentication is required. ``uri_fallback`` (the
        request URI) is used only when a Digest header has no ``uri`` parameter; the
        ``uri`` a client sent is otherwise used verbatim, whatever form it takes.
        """
        users = list(allowed)
        if not users:
            return AuthResult(True, None, False, "no authentication required")
        if not authorization or not authorization.strip():
            return AuthResult(False, None, False, "no Authorization header")
        scheme = authorization.strip().partition(" ")[0]
        lowered = scheme.lower()
        if lowered == "basic" and self.allow_basic:
            return self._check_basic(authorization, users)
        if lowered == "digest":
            try:
                _, params = parse_auth_header(authorization)
            except ValueError as exc:
                return AuthResult(False, None, False, f"malformed Digest header: {exc}")
            return self._check_digest(method, params, users, uri_fallback)
        return AuthResult(False, None, False, f"unsupported scheme {scheme[:32]!r}")

    def _check_basic(self, authorization: str, users: list[Credentials]) -> AuthResult:
        try:
            _, params = parse_auth_header(authorization)
            token = params.get("token68")
            if token is None:
                raise ValueError("expected base64 credentials")
            raw = base64.b64decode(token, validate=True)
        except (ValueError, binascii.Error) as exc:
            return AuthResult(False, None, False, f"malformed Basic header: {exc}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        username, sep, password = text.partition(":")
        if not sep:
            return AuthResult(False, None, False, "malformed Basic header: no ':' separator")
        candidates = [c for c in users if c.username == username]
        if not candidates:
            return AuthResult(False, None, False, f"unknown user {username!r}")
        given = password.encode("utf-8", "surrogatepass")
        matched = False
        for cred in candidates:
            matched |= hmac.compare_digest(cred.password.encode("utf-8", "surrogatepass"), given)
        if matched:
            return AuthResult(True, username, False, "ok (Basic)")
        return AuthResult(False, username, False, f"wrong password for {username!r}")

    def _check_digest(
        self,
        method: str,
        params: dict[str, str],
        users: list[Credentials],
        uri_fallback: str | None,
    ) -> AuthResult:
        def bad(why: str, username: str | None = None) -> AuthResult:
            return AuthResult(False, username, False, f"malformed Digest header: {why}")

        if "uri" not in params and uri_fallback is not None:
            params = {**params, "uri": uri_fallback}
        username = params.get("username")
        if username is None and "username*" in params:
            encoded = params["username*"]
            charset, _, rest = encoded.partition("'")
            if charset.lower() != "utf-8" or "'" not in rest:
                return bad("unsupported username* encoding")
            try:
                username = unquote(rest.partition("'")[2], encoding="utf-8", errors="strict")
            except UnicodeDecodeError:
                return bad("username* is not valid UTF-8")
        for name in ("realm", "nonce", "uri", "response"):
            if name not in params:
                return bad(f"missing {name!r}", username)
        if username is None:
            return bad("missing 'username'")
        realm = params["realm"]
        if realm != self.realm:
            return AuthResult(False, username, False, f"wrong realm {realm[:64]!r}")
        try:
            algorithm, sess = _split_algorithm(params.get("algorithm", "MD5"))
        except ValueError as exc:
            return AuthResult(False, username, False, str(exc))
        if algorithm not in self.algorithms:
            return AuthResult(False, username, False, f"algorithm {algorithm} not offered")
        qop = params.get("qop")
        if qop is not None:
            qop = qop.lower()
            if qop != "auth":
                return AuthResult(False, username, False, f"unsupported qop {qop[:16]!r}")
        nc = params.get("nc", "")
        cnonce = params.get("cnonce", "")
        if qop and not (nc and cnonce):
            return bad("qop without nc and cnonce", username)
        if sess and not cnonce:
            return bad(f"{params['algorithm']} without cnonce", username)
        nonce = params["nonce"]
        age = self._nonce_age(nonce)
        if age is None:
            return AuthResult(False, username, False, "nonce not issued by this server")
        if params.get("userhash", "").lower() == "true":
            candidates = [
                c for c in users if _h(algorithm, f"{c.username}:{self.realm}") == username.lower()
            ]
            if candidates:
                username = candidates[0].username
        else:
            candidates = [c for c in users if c.username == username]
        if not candidates:
            return AuthResult(False, None, False, f"unknown user {username[:64]!r}")
        given = params["response"].lower().encode("utf-8", "surrogatepass")
        matched = False
        for cred in candidates:
            expected = _expected_response(
                algorithm=algorithm,
                sess=sess,
                ha1_base=_h(algorithm, f"{cred.username}:{self.realm}:{cred.password}"),
                method=method,
                uri=params["uri"],
                nonce=nonce,
                qop=qop,
                nc=nc,
                cnonce=cnonce,
            )
            matched |= hmac.compare_digest(expected.encode("ascii"), given)
        if not matched:
            return AuthResult(False, username, False, f"wrong password for {username!r}")
        if age > self.nonce_ttl or age < -_FUTURE_SKEW:
            return AuthResult(False, username, True, "nonce expired")
        return AuthResult(True, username, False, f"ok (Digest {algorithm})")
