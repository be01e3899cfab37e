"""One admission gate for every ingest and every reader.

Each protocol turns what its client presented into a :class:`Presented` (an RTSP
``Authorization`` header, RTMP ``?user=&pass=&key=`` parameters, later an SRT stream id or a
WHIP bearer token) and asks the gate. The gate applies the path policy (``publish = false``,
credentials, stream key, ``on_conflict``) the same way for all of them, compares secrets in
constant time, and answers with a :class:`Claim` or raises a :class:`Refusal` whose
:class:`RefusalKind` each protocol maps to its own status (RTSP 401/403/409/453, RTMP
``NetStream.Publish.*``, SRT reject codes, HTTP statuses).

Sans-I/O: no sockets, no clock; the asyncio servers call it and carry out the answer.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from onvifcam.config import Config
from onvifcam.rtsp.auth import Authenticator, AuthResult, Credentials

__all__ = [
    "Claim",
    "Gate",
    "HttpAuthorization",
    "PlainCredentials",
    "Presented",
    "Refusal",
    "RefusalKind",
]


class RefusalKind(enum.Enum):
    """Why the gate said no; each protocol maps it to its own status."""

    FORBIDDEN = "forbidden"  # the path may not be published/read at all
    UNAUTHORIZED = "unauthorized"  # credentials or stream key missing or wrong
    CONFLICT = "conflict"  # another publisher holds the path


class Refusal(Exception):
    """The gate refused; ``reason`` is meant for the client and the log."""

    def __init__(
        self, kind: RefusalKind, reason: str, *, stale: bool = False, key: bool = False
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.stale = stale  # RTSP/HTTP Digest: the nonce expired, the client may retry
        self.key = key  # the stream key was wrong (no login challenge helps)


class Presented(Protocol):
    """What a client showed: proof of a user's password, and perhaps a stream key."""

    key: str | None

    def proves(self, users: Sequence[Credentials]) -> AuthResult:
        """Whether the client knows the password of one of ``users``."""
        ...


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


@dataclass(frozen=True)
class PlainCredentials:
    """A user name, password and key sent in clear (RTMP query parameters, SRT, WHIP)."""

    user: str = ""
    password: str = ""
    key: str | None = None

    def proves(self, users: Sequence[Credentials]) -> AuthResult:
        """Constant-time comparison with every allowed user (no early exit on a match)."""
        found = False
        for u in users:
            found = (_same(self.user, u.username) & _same(self.password, u.password)) | found
        if found:
            return AuthResult(True, self.user)
        why = "no credentials" if not self.user else f"wrong credentials for user {self.user!r}"
        return AuthResult(False, self.user or None, False, why)

    def __repr__(self) -> str:
        return f"PlainCredentials(user={self.user!r}, password='***', key='***')"


@dataclass(frozen=True)
class HttpAuthorization:
    """An HTTP/RTSP ``Authorization`` header (Digest or Basic) and the request's method."""

    authenticator: Authenticator
    method: str
    authorization: str | None
    key: str | None = None

    def proves(self, users: Sequence[Credentials]) -> AuthResult:
        """Verify the header against ``users`` with the authenticator's nonces."""
        return self.authenticator.check(self.method, self.authorization, users)


class Holder(Protocol):
    """A publisher as the gate sees it: it can be described and told to go."""

    description: str

    def kick(self, reason: str) -> None:
        """Stop publishing and close (another publisher replaces this one)."""
        ...


@dataclass(eq=False)
class Claim:
    """A publisher's hold on a path, from admission until :meth:`release`."""

    gate: Gate
    path: str
    holder: Holder
    replace: bool
    released: bool = False

    def release(self) -> None:
        """Give the path back (the publisher closed); idempotent."""
        if not self.released:
            self.released = True
            if self.gate.claims.get(self.path) is self:
                del self.gate.claims[self.path]


CameraUsers = Callable[[str], tuple[list[tuple[str, str]], bool]]
"""For a path: the ONVIF users (name, password) of the cameras showing it, and whether one
of those cameras requires them for RTSP reading."""


@dataclass
class GateStats:
    """Counters, read through :meth:`Gate.stats`."""

    admitted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    replaced: int = 0


class Gate:
    """Publish and read admission for every protocol, from the path policies in ``cfg``."""

    def __init__(self, cfg: Config, camera_users: CameraUsers | None = None) -> None:
        self.cfg = cfg
        self.camera_users = camera_users
        self.claims: dict[str, Claim] = {}
        self._stats = GateStats()

    # ------------------------------------------------------------------ publish
    def admit_publish(self, path: str, presented: Presented, holder: Holder) -> Claim:
        """Admit ``holder`` as the publisher of ``path``, or raise :class:`Refusal`.

        A path held by another publisher is refused (CONFLICT) unless its policy says
        ``on_conflict = "replace"``, in which case the old holder is kicked.
        """
        cfg = self.cfg
        if not path:
            raise self._refuse(RefusalKind.FORBIDDEN, "publishing needs a stream path")
        if not cfg.path_allowed(path):
            raise self._refuse(RefusalKind.FORBIDDEN, f"publishing to '{path}' is not allowed")
        policy = cfg.path_policy(path)
        if policy.publish_user:
            res = presented.proves([Credentials(policy.publish_user, policy.publish_password)])
            if not res.ok:
                raise self._refuse(
                    RefusalKind.UNAUTHORIZED,
                    f"wrong or missing credentials to publish to '{path}' ({res.reason})",
                    stale=res.stale,
                )
        if policy.publish_key and not _same(presented.key or "", policy.publish_key):
            raise self._refuse(
                RefusalKind.UNAUTHORIZED, f"wrong or missing stream key for '{path}'", key=True
            )
        replace = policy.on_conflict == "replace"
        old = self.claims.get(path)
        if old is not None and old.holder is not holder:
            if not replace:
                raise self._refuse(
                    RefusalKind.CONFLICT,
                    f"path '{path}' already has a publisher ({old.holder.description})",
                )
            old.release()
            self._stats.replaced += 1
            old.holder.kick(f"replaced by {holder.description}")
        claim = Claim(self, path, holder, replace)
        self.claims[path] = claim
        self._stats.admitted += 1
        return claim

    def holder(self, path: str) -> Holder | None:
        """Who holds ``path`` now, if anyone."""
        c = self.claims.get(path)
        return c.holder if c is not None else None

    # ------------------------------------------------------------------ read
    def readers(self, path: str) -> list[Credentials]:
        """Who may read ``path``: its configured read user plus the ONVIF users of the
        cameras showing it. Empty means open (neither requires credentials)."""
        policy = self.cfg.path_policy(path)
        configured = (
            [Credentials(policy.read_user, policy.read_password)] if policy.read_user else []
        )
        if self.camera_users is None:
            return configured
        extra, required = self.camera_users(path)
        if not (configured or required):
            return []
        out = list(configured)
        for name, password in extra:
            cred = Credentials(name, password)
            if cred not in out:
                out.append(cred)
        return out

    def admit_read(self, path: str, presented: Presented) -> AuthResult:
        """Admit a reader of ``path`` or raise :class:`Refusal` (UNAUTHORIZED)."""
        users = self.readers(path)
        if not users:
            return AuthResult(True, None, False, "no authentication required")
        res = presented.proves(users)
        if not res.ok:
            raise self._refuse(
                RefusalKind.UNAUTHORIZED,
                f"wrong or missing credentials to read '{path}' ({res.reason})",
                stale=res.stale,
            )
        return res

    # ------------------------------------------------------------------ stats
    def _refuse(
        self, kind: RefusalKind, reason: str, *, stale: bool = False, key: bool = False
    ) -> Refusal:
        self._stats.refused[kind.value] = self._stats.refused.get(kind.value, 0) + 1
        return Refusal(kind, reason, stale=stale, key=key)

    def stats(self) -> dict[str, object]:
        """Counters: admitted, refused by kind, replaced, paths held now."""
        return {
            "admitted": self._stats.admitted,
            "refused": dict(self._stats.refused),
            "replaced": self._stats.replaced,
            "held": len(self.claims),
        }
