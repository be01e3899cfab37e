"""SRT listener handshake (HSv5, caller-listener), sans-I/O: handshakes in, replies out.

Induction: a caller sends version 4, type INDUCTION, cookie 0; :class:`Responder` answers
version 5, extension field 0x4A17 and a SYN cookie made from the caller's address and the
current minute with a secret, so an induction costs the listener no state.

Conclusion: the caller echoes the cookie and sends its extensions (HSREQ with its TSBPD
delays and flags, the Stream ID, KMREQ when it encrypts). :meth:`Responder.conclusion`
checks the cookie and every field and returns a :class:`ConclusionRequest` for the listener
to admit, or raises :class:`Rejection` with the SRT reject code the caller will report.
:meth:`Responder.accept` and :meth:`Responder.reject` build the answers.

Reject codes travel in the handshake type as 1000 + code: libsrt's own reasons are 0-17
(``SRT_REJ_*``), the access-control codes of applications 1000-1999 (``SRT_REJX_*``), so a
1401 UNAUTHORIZED goes on the wire as 2401.

The Stream ID (:func:`parse_streamid`) names the path and the mode: ``publish:PATH``,
``read:PATH``, ``publish:PATH:USER:PASS`` (MediaMTX), the access-control syntax
``#!::r=PATH,m=publish,u=USER,s=PASS`` (unknown keys ignored) and a plain ``PATH`` (publish).
A ``?key=SECRET`` or ``?user=U&pass=P`` query after the path gives a stream key or
credentials, as for RTMP.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from onvifcam.srt.crypto import CryptoError, KeyMaterial
from onvifcam.srt.packet import (
    EXT_HSREQ,
    EXT_KMREQ,
    FLAG_CRYPT,
    FLAG_NAKREPORT,
    FLAG_REXMITFLG,
    FLAG_STREAM,
    FLAG_TLPKTDROP,
    FLAG_TSBPDRCV,
    FLAG_TSBPDSND,
    REJECT_BASE,
    SRT_MAGIC,
    ControlType,
    ExtType,
    Handshake,
    HsExt,
    HsType,
    PacketError,
    build_control,
    decode_words,
    peer_ip_field,
)

__all__ = [
    "ConclusionRequest",
    "Mode",
    "RejectCode",
    "Rejection",
    "Responder",
    "StreamRequest",
    "parse_streamid",
]

SRT_VERSION = 0x010500  # the libsrt version whose behaviour we follow (1.5.0)
MAX_STREAMID = 512
MAX_MTU = 1500
#: Smallest latency a caller can bring down the negotiation to; libsrt's own default.
DEFAULT_LATENCY_MS = 120


class RejectCode(enum.IntEnum):
    """Reject reasons: libsrt's ``SRT_REJ_*`` (0-17) and access control ``SRT_REJX_*``."""

    UNKNOWN = 0
    SYSTEM = 1
    PEER = 2
    RESOURCE = 3
    ROGUE = 4
    BACKLOG = 5
    IPE = 6
    CLOSE = 7
    VERSION = 8
    RDVCOOKIE = 9
    BADSECRET = 10
    UNSECURE = 11
    MESSAGEAPI = 12
    CONGESTION = 13
    FILTER = 14
    GROUP = 15
    TIMEOUT = 16
    CRYPTO = 17
    X_BAD_REQUEST = 1400
    X_UNAUTHORIZED = 1401
    X_OVERLOAD = 1402
    X_FORBIDDEN = 1403
    X_NOTFOUND = 1404
    X_BAD_MODE = 1405
    X_CONFLICT = 1409
    X_ISE = 1500
    X_DOWN = 1503


class Rejection(Exception):
    """Refuse a caller with ``code``; ``reason`` is for our log (the wire carries the code)."""

    def __init__(self, code: RejectCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    @property
    def wire(self) -> int:
        """The handshake type that carries this rejection."""
        return REJECT_BASE + int(self.code)


class Mode(enum.Enum):
    """What the caller wants: send us a stream, or read one."""

    PUBLISH = "publish"
    READ = "read"


@dataclass(frozen=True)
class StreamRequest:
    """What a Stream ID asks for."""

    mode: Mode
    path: str
    user: str = ""
    password: str = ""
    key: str | None = None

    def __repr__(self) -> str:
        return f"StreamRequest(mode={self.mode.value}, path={self.path!r}, user={self.user!r})"


def _clean_path(raw: str, streamid: str) -> tuple[str, dict[str, str]]:
    base, _, query = raw.partition("?")
    path = base.strip("/")
    if not path:
        raise Rejection(RejectCode.X_BAD_REQUEST, f"stream id {streamid!r} names no path")
    if any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in path):
        raise Rejection(
            RejectCode.X_BAD_REQUEST,
            f"stream id {streamid!r}: the path has spaces or control characters",
        )
    return path, dict(parse_qsl(query, keep_blank_values=True))


def _from_query(q: dict[str, str]) -> tuple[str, str, str | None]:
    user = q.get("user") or q.get("username") or ""
    password = q.get("pass") or q.get("password") or ""
    return user, password, q.get("key")


def parse_streamid(streamid: str) -> StreamRequest:
    """The path, mode and credentials a Stream ID names; raises :class:`Rejection`."""
    sid = streamid.strip()
    if sid.lower().startswith("%23!"):
        sid = unquote(sid)
    if not sid:
        raise Rejection(
            RejectCode.X_BAD_REQUEST, "no stream id: set streamid=publish:PATH on the caller"
        )
    if sid.startswith("#!::"):
        fields: dict[str, str] = {}
        for item in sid[4:].split(","):
            k, sep, v = item.partition("=")
            if not sep:
                raise Rejection(
                    RejectCode.X_BAD_REQUEST, f"stream id {streamid!r}: {item!r} is not key=value"
                )
            fields[k.strip()] = v
        mode_text = fields.get("m", "request").lower()
        if mode_text == "publish":
            mode = Mode.PUBLISH
        elif mode_text in ("request", "read", "play"):
            mode = Mode.READ
        else:
            raise Rejection(
                RejectCode.X_BAD_MODE, f"stream id {streamid!r}: mode {mode_text!r} not supported"
            )
        path, q = _clean_path(fields.get("r", ""), streamid)
        user, password, key = _from_query(q)
        return StreamRequest(
            mode, path, fields.get("u", user), fields.get("s", password), fields.get("key", key)
        )
    action, sep, rest = sid.partition(":")
    if sep and action.lower() in ("publish", "read", "request", "play"):
        mode = Mode.PUBLISH if action.lower() == "publish" else Mode.READ
        parts = rest.split(":")
        path, q = _clean_path(parts[0], streamid)
        user, password, key = _from_query(q)
        if len(parts) >= 3:  # MediaMTX: action:path:user:pass[:query]
            user, password = parts[1], parts[2]
            if len(parts) >= 4:
                _, _, key2 = _from_query(dict(parse_qsl(parts[3], keep_blank_values=True)))
                key = key2 if key2 is not None else key
        elif len(parts) == 2:
            raise Rejection(
                RejectCode.X_BAD_REQUEST,
                f"stream id {streamid!r}: expected {action}:PATH or {action}:PATH:USER:PASS",
            )
        return StreamRequest(mode, path, user, password, key)
    path, q = _clean_path(sid, streamid)
    user, password, key = _from_query(q)
    return StreamRequest(Mode.PUBLISH, path, user, password, key)


@dataclass(frozen=True)
class ConclusionRequest:
    """A well-formed conclusion from a caller, waiting for the listener's decision."""

    host: str
    port: int
    hs: Handshake
    timestamp: int  # the packet timestamp: the caller's clock at sending (TSBPD base)
    hsreq: HsExt
    streamid: str
    stream: StreamRequest
    km: KeyMaterial | None = None
    km_raw: bytes = b""
    latency_ms: int = DEFAULT_LATENCY_MS  # negotiated receive latency
    mtu: int = MAX_MTU

    @property
    def socket_id(self) -> int:
        """The caller's socket id (destination of everything we send it)."""
        return self.hs.socket_id

    @property
    def isn(self) -> int:
        """The first data sequence number the caller will send."""
        return self.hs.isn


def _cookie(secret: bytes, host: str, port: int, minute: int) -> int:
    mac = hmac.new(secret, f"{host}|{port}|{minute}".encode(), hashlib.sha256).digest()
    return struct.unpack_from("!I", mac)[0]


class Responder:
    """Answers handshakes on a listening socket; keeps no state per caller."""

    def __init__(
        self,
        secret: bytes,
        *,
        listener_id: int,
        latency_ms: int = DEFAULT_LATENCY_MS,
        max_latency_ms: int = 10_000,
        pbkeylen: int = 0,
        flow_window: int = 8192,
    ) -> None:
        self.secret = secret
        self.listener_id = listener_id
        self.latency_ms = latency_ms
        self.max_latency_ms = max_latency_ms
        self.pbkeylen = pbkeylen
        self.flow_window = flow_window

    # ------------------------------------------------------------------ cookies
    def cookie(self, host: str, port: int, now: float) -> int:
        """The SYN cookie of a caller address for the minute ``now`` falls in."""
        return _cookie(self.secret, host, port, int(now // 60))

    def cookie_ok(self, cookie: int, host: str, port: int, now: float) -> bool:
        """Whether ``cookie`` was made for this address this minute or the one before."""
        minute = int(now // 60)
        return any(
            hmac.compare_digest(
                struct.pack("!I", cookie & 0xFFFFFFFF),
                struct.pack("!I", _cookie(self.secret, host, port, m)),
            )
            for m in (minute, minute - 1)
        )

    # ------------------------------------------------------------------ induction
    def induction(self, hs: Handshake, host: str, port: int, now: float) -> bytes | None:
        """The induction response to send (None: not an induction we answer)."""
        if hs.hs_type != HsType.INDUCTION or hs.version not in (4, 5):
            return None
        enc = {16: 2, 24: 3, 32: 4}.get(self.pbkeylen, 0)
        reply = Handshake(
            version=5,
            encryption=enc,
            extension=SRT_MAGIC,
            isn=hs.isn,
            mtu=min(hs.mtu, MAX_MTU) or MAX_MTU,
            flow_window=self.flow_window,
            hs_type=HsType.INDUCTION,
            socket_id=self.listener_id,
            cookie=self.cookie(host, port, now),
            peer_ip=peer_ip_field(host),
        )
        return build_control(ControlType.HANDSHAKE, 0, hs.socket_id, reply.pack())

    # ------------------------------------------------------------------ conclusion
    def conclusion(self, hs: Handshake, timestamp: int, host: str, port: int) -> ConclusionRequest:
        """Validate a conclusion (cookie already checked); raises :class:`Rejection`."""
        if hs.version != 5:
            raise Rejection(
                RejectCode.VERSION,
                f"handshake version {hs.version}: only SRT 1.3 or newer (HSv5) callers",
            )
        raw = hs.ext(ExtType.HSREQ)
        if not hs.extension & EXT_HSREQ or raw is None:
            raise Rejection(RejectCode.ROGUE, "conclusion without the HSREQ extension")
        try:
            hsreq = HsExt.parse(raw)
        except PacketError as exc:
            raise Rejection(RejectCode.ROGUE, f"bad HSREQ: {exc}") from None
        if hsreq.flags & FLAG_STREAM:
            raise Rejection(
                RejectCode.MESSAGEAPI,
                "the caller uses stream (file) mode; only live mode (transtype=live) is served",
            )
        if not hsreq.flags & FLAG_TSBPDSND:
            raise Rejection(
                RejectCode.ROGUE,
                "the caller does not timestamp for TSBPD (tsbpdmode off); use live mode",
            )
        for etype, content in hs.extensions:
            if etype == ExtType.CONGESTION:
                try:
                    cc = decode_words(content)
                except PacketError:
                    cc = "?"
                if cc != "live":
                    raise Rejection(
                        RejectCode.CONGESTION, f"congestion control {cc!r}: only 'live' is served"
                    )
            elif etype == ExtType.FILTER:
                raise Rejection(RejectCode.FILTER, "packet filters (FEC) are not supported")
            elif etype == ExtType.GROUP:
                raise Rejection(RejectCode.GROUP, "socket groups (bonding) are not supported")
        sid_raw = hs.ext(ExtType.SID)
        streamid = ""
        if sid_raw is not None:
            if len(sid_raw) > MAX_STREAMID:
                raise Rejection(
                    RejectCode.X_BAD_REQUEST,
                    f"stream id of {len(sid_raw)} bytes, at most {MAX_STREAMID}",
                )
            try:
                streamid = decode_words(sid_raw)
            except PacketError as exc:
                raise Rejection(RejectCode.X_BAD_REQUEST, f"stream id: {exc}") from None
        stream = parse_streamid(streamid)
        km: KeyMaterial | None = None
        km_raw = hs.ext(ExtType.KMREQ) or b""
        if km_raw:
            try:
                km = KeyMaterial.parse(km_raw)
            except CryptoError as exc:
                code = RejectCode.CRYPTO if exc.km_state == 5 else RejectCode.BADSECRET
                raise Rejection(code, f"key material: {exc}") from None
        latency = min(max(self.latency_ms, hsreq.send_delay), self.max_latency_ms)
        return ConclusionRequest(
            host=host,
            port=port,
            hs=hs,
            timestamp=timestamp,
            hsreq=hsreq,
            streamid=streamid,
            stream=stream,
            km=km,
            km_raw=km_raw,
            latency_ms=latency,
            mtu=min(hs.mtu, MAX_MTU) or MAX_MTU,
        )

    def accept(self, req: ConclusionRequest, socket_id: int, flow_window: int) -> bytes:
        """The conclusion response that opens the connection ``socket_id``."""
        flags = (
            FLAG_TSBPDSND
            | FLAG_TSBPDRCV
            | FLAG_CRYPT
            | FLAG_TLPKTDROP
            | FLAG_NAKREPORT
            | FLAG_REXMITFLG
        )
        hsrsp = HsExt(SRT_VERSION, flags, req.latency_ms, req.hsreq.recv_delay)
        exts: list[tuple[int, bytes]] = [(ExtType.HSRSP, hsrsp.pack())]
        extension = EXT_HSREQ
        enc = 0
        if req.km is not None:
            exts.append((ExtType.KMRSP, req.km_raw))
            extension |= EXT_KMREQ
            enc = {16: 2, 24: 3, 32: 4}[req.km.key_len]
        reply = Handshake(
            version=5,
            encryption=enc,
            extension=extension,
            isn=req.hs.isn,
            mtu=req.mtu,
            flow_window=flow_window,
            hs_type=HsType.CONCLUSION,
            socket_id=socket_id,
            cookie=req.hs.cookie,
            peer_ip=peer_ip_field(req.host),
            extensions=tuple(exts),
        )
        return build_control(ControlType.HANDSHAKE, 0, req.socket_id, reply.pack())

    def reject(self, hs: Handshake, rejection: Rejection, host: str) -> bytes:
        """The handshake that tells the caller it is refused and why (the code)."""
        reply = Handshake(
            version=5,
            encryption=0,
            extension=0,
            isn=hs.isn,
            mtu=min(hs.mtu, MAX_MTU),
            flow_window=self.flow_window,
            hs_type=rejection.wire,
            socket_id=self.listener_id,
            cookie=hs.cookie,
            peer_ip=peer_ip_field(host),
        )
        return build_control(ControlType.HANDSHAKE, 0, hs.socket_id, reply.pack())
