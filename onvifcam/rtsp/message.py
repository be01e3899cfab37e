"""Sans-I/O RTSP message codec (RFC 2326 / RFC 7826).

Nothing here touches a socket or an event loop: :class:`Parser` takes bytes and returns
events (:class:`Request`, :class:`Response`, :class:`InterleavedFrame`), and the
serialisers return bytes. Header helpers parse Transport, Session and Range values.

Parsing rules, in short:

* CRLF and bare LF line endings are both accepted; empty lines between messages are
  skipped; obsolete header folding (continuation lines) is joined with one space.
* ``Content-Length`` gives the body size; no ``Content-Length`` means no body (also for
  responses, unlike RFC 2326's read-until-close rule, which no live client relies on).
* ``$`` + channel + 16-bit length frames (RFC 2326 10.12) are recognised wherever a
  message may start, i.e. between messages.
* Start lines and headers are decoded as UTF-8, falling back to Latin-1.
* The first error is final: the parser raises :class:`ParseError` with the RTSP status to
  answer, and raises it again on every later :meth:`Parser.feed`.
"""

from __future__ import annotations

import calendar
import re
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NoReturn, TypeAlias
from urllib.parse import unquote

from onvifcam import __version__

__all__ = [
    "REASONS",
    "SERVER_HEADER",
    "Event",
    "Headers",
    "InterleavedFrame",
    "Limits",
    "ParseError",
    "Parser",
    "Request",
    "Response",
    "TransportSpec",
    "default_reason",
    "interleaved_header",
    "parse_range",
    "parse_session",
    "parse_transport",
    "response",
    "split_uri",
]

SERVER_HEADER = f"onvifcam/{__version__}"

#: Reason phrases (RFC 2326 section 7.1.1, RFC 7826 section 17, RFC 6585 for 431).
REASONS: dict[int, str] = {
    100: "Continue",
    200: "OK",
    201: "Created",
    250: "Low on Storage Space",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    451: "Parameter Not Understood",
    452: "Conference Not Found",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    456: "Header Field Not Valid for Resource",
    457: "Invalid Range",
    458: "Parameter Is Read-Only",
    459: "Aggregate Operation Not Allowed",
    460: "Only Aggregate Operation Allowed",
    461: "Unsupported Transport",
    462: "Destination Unreachable",
    463: "Destination Prohibited",
    464: "Data Transport Not Ready Yet",
    465: "Notification Reason Unknown",
    466: "Key Management Error",
    470: "Connection Authorization Required",
    471: "Connection Credentials Not Accepted",
    472: "Failure to Establish Secure Connection",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "RTSP Version Not Supported",
    551: "Option Not Supported",
    553: "Proxy Unavailable",
}

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Header values and start lines must not carry CR, LF or NUL when serialised.
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")
# Control characters that may not appear in a received head (HTAB and CRLF/LF are fine).
_HEAD_CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
# What the start of a request line may look like before it is complete.
_REQUEST_PREFIX = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}(?: |\Z)")
_RESPONSE_PREFIX = re.compile(rb"RTSP/[0-9.]{0,8}(?: |\Z)")
_PREFIX_WINDOW = 66
_VERSION = re.compile(r"[A-Z]+/\d+\.\d+")
_SUPPORTED_VERSIONS = frozenset({"RTSP/1.0", "RTSP/2.0"})
_DIGITS = re.compile(r"[0-9]+")
_SMALL_INT = re.compile(r"[0-9]{1,9}")


class ParseError(ValueError):
    """Malformed or over-limit input; ``status`` is the RTSP status code to answer with.

    ``cseq`` is the offending request's CSeq when it could be read, and ``events`` holds
    the events completed earlier in the same :meth:`Parser.feed` call.
    """

    def __init__(self, status: int, message: str, cseq: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.cseq = cseq
        self.events: list[Event] = []

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"ParseError({self.status}, {self.message!r})"


def _escaped(data: bytes | bytearray | memoryview, limit: int = 32) -> str:
    """A short printable rendering of ``data`` for error messages."""
    chunk = bytes(data[:limit])
    text = repr(chunk)[2:-1]
    return text + ("..." if len(data) > limit else "")


class Headers:
    """Case-insensitive, order-preserving multi-map of header fields."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] | None = None) -> None:
        # (lower-cased name, name as given, value)
        self._items: list[tuple[str, str, str]] = []
        if items is not None:
            for name, value in items:
                self._items.append((name.lower(), name, value))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        key = name.lower()
        for lname, _, value in self._items:
            if lname == key:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        key = name.lower()
        return [value for lname, _, value in self._items if lname == key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower()
        return any(lname == key for lname, _, _ in self._items)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def add(self, name: str, value: str) -> None:
        """Append a field, keeping existing ones of the same name."""
        self._items.append((name.lower(), name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every field called ``name`` with one, at the first one's position."""
        key = name.lower()
        out: list[tuple[str, str, str]] = []
        done = False
        for item in self._items:
            if item[0] == key:
                if not done:
                    out.append((key, name, value))
                    done = True
            else:
                out.append(item)
        if not done:
            out.append((key, name, value))
        self._items = out

    def remove(self, name: str) -> None:
        """Drop every field called ``name`` (no error if absent)."""
        key = name.lower()
        self._items = [item for item in self._items if item[0] != key]

    def items(self) -> list[tuple[str, str]]:
        """``(name, value)`` pairs in order, names as given."""
        return [(name, value) for _, name, value in self._items]

    def copy(self) -> Headers:
        """A shallow copy."""
        new = Headers()
        new._items = list(self._items)
        return new

    def __iter__(self) -> Iterator[str]:
        return (name for _, name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


def _write_headers(lines: list[str], headers: Iterable[tuple[str, str]]) -> None:
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if _UNSAFE_VALUE.search(value):
            raise ValueError(f"header {name} value contains CR, LF or NUL: {value!r}")
        lines.append(f"{name}: {value}\r\n")


def _serialize(start: str, headers: Headers, body: bytes) -> bytes:
    if _UNSAFE_VALUE.search(start):
        raise ValueError(f"start line contains CR, LF or NUL: {start!r}")
    lines = [start, "\r\n"]
    items = headers.items()
    if body or "content-length" in headers:
        items = [(n, v) for n, v in items if n.lower() != "content-length"]
        items.append(("Content-Length", str(len(body))))
    _write_headers(lines, items)
    lines.append("\r\n")
    return "".join(lines).encode("utf-8") + body


@dataclass
class Request:
    """An RTSP request."""

    method: str
    uri: str
    version: str = "RTSP/1.0"
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def cseq(self) -> str | None:
        """The CSeq header, or None."""
        return self.headers.get("CSeq")

    def serialize(self) -> bytes:
        """Wire form; Content-Length is written from ``body`` when there is one."""
        if not _TOKEN.fullmatch(self.method):
            raise ValueError(f"invalid method {self.method!r}")
        if not self.uri or " " in self.uri:
            raise ValueError(f"invalid request URI {self.uri!r}")
        return _serialize(f"{self.method} {self.uri} {self.version}", self.headers, self.body)


@dataclass
class Response:
    """An RTSP response."""

    version: str
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def cseq(self) -> str | None:
        """The CSeq header, or None."""
        return self.headers.get("CSeq")

    def serialize(self) -> bytes:
        """Wire form; Content-Length is written from ``body`` when there is one."""
        if not 100 <= self.status <= 999:
            raise ValueError(f"invalid status {self.status}")
        return _serialize(f"{self.version} {self.status} {self.reason}", self.headers, self.body)


@dataclass(slots=True)
class InterleavedFrame:
    """One ``$``-framed interleaved packet (RFC 2326 section 10.12)."""

    channel: int
    data: bytes


#: What :meth:`Parser.feed` returns.
Event: TypeAlias = "Request | Response | InterleavedFrame"


@dataclass(frozen=True)
class Limits:
    """Size limits enforced by :class:`Parser`."""

    max_line: int = 4096
    max_headers: int = 64
    max_header_bytes: int = 16384
    max_body: int = 65536
    max_interleaved: int = 65535

    def __post_init__(self) -> None:
        for name in ("max_line", "max_headers", "max_header_bytes", "max_body", "max_interleaved"):
            if getattr(self, name) < 0:
                raise ValueError(f"Limits.{name} must not be negative")


_FRAME_HEADER = struct.Struct(">BBH")


def interleaved_header(channel: int, length: int) -> bytes:
    """The 4-byte ``$`` header preceding ``length`` bytes on interleaved ``channel``."""
    if not 0 <= channel <= 255:
        raise ValueError(f"interleaved channel {channel} out of range 0-255")
    if not 0 <= length <= 65535:
        raise ValueError(f"interleaved length {length} out of range 0-65535")
    return _FRAME_HEADER.pack(0x24, channel, length)


def _decode(raw: bytes | bytearray) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _Pending:
    """Progress on a message whose head or body is still incomplete.

    Offsets are relative to the start of the message.
    """

    __slots__ = ("body_len", "body_start", "find_from", "lines", "msg", "scan")

    def __init__(self) -> None:
        self.scan = 0  # start of the first line not yet complete
        self.find_from = 0  # where the next newline search resumes
        self.lines: list[bytes] = []  # complete head lines, start line first, folded
        self.msg: Request | Response | None = None  # set once the head is complete
        self.body_start = 0
        self.body_len = 0


class Parser:
    """Incremental RTSP parser: bytes in, events out.

    ``role="server"`` parses requests (what a server receives); ``role="client"`` parses
    responses and also server-to-client requests (GET_PARAMETER, ANNOUNCE, REDIRECT).
    Both roles parse interleaved ``$`` frames between messages.
    """

    __slots__ = ("_buf", "_error", "_limits", "_pending", "_responses", "role")

    def __init__(self, limits: Limits = Limits(), role: str = "server") -> None:
        if role not in ("server", "client"):
            raise ValueError(f"role must be 'server' or 'client', not {role!r}")
        self.role = role
        self._limits = limits
        self._responses = role == "client"
        self._buf = bytearray()  # an incomplete item, always starting at offset 0
        self._pending: _Pending | None = None
        self._error: ParseError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message or frame."""
        return len(self._buf)

    @property
    def partial_message(self) -> bool:
        """True while part of a message (not of an interleaved frame) is held."""
        buf = self._buf
        return bool(buf) and buf[0] != 36

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Consume ``data``; return every message and frame completed by it, in order."""
        if self._error is not None:
            err = ParseError(self._error.status, self._error.message, self._error.cseq)
            raise err
        if type(data) is not bytes:
            data = bytes(data)
        out: list[Event] = []
        try:
            pos = 0
            if self._buf:
                pos = self._complete(data, out)
                if pos < 0:
                    return out
            pos = self._scan(data, pos, out)
            if pos < len(data):
                self._buf += memoryview(data)[pos:]
        except ParseError as exc:
            self._error = exc
            self._buf = bytearray()
            self._pending = None
            exc.events = out
            raise
        return out

    # -- internals -------------------------------------------------------------------

    def _scan(self, src: bytes, pos: int, out: list[Event]) -> int:
        """Parse complete items from ``src`` at ``pos``; return where parsing stopped."""
        n = len(src)
        append = out.append
        frame = InterleavedFrame
        max_frame = self._limits.max_interleaved
        while pos < n:
            c = src[pos]
            if c == 36:  # '$'
                start = pos + 4
                if start > n:
                    break
                length = (src[pos + 2] << 8) | src[pos + 3]
                if length > max_frame:
                    self._frame_too_large(length)
                end = start + length
                if end > n:
                    break
                append(frame(src[pos + 1], src[start:end]))
                pos = end
            elif c == 13 or c == 10:  # empty line between messages
                pos += 1
            else:
                done = self._message(src, pos, n)
                if done is None:
                    break
                append(done[0])
                pos = done[1]
        return pos

    def _frame_too_large(self, length: int) -> NoReturn:
        raise ParseError(
            400,
            f"interleaved frame of {length} bytes exceeds the limit of "
            f"{self._limits.max_interleaved}",
        )

    def _complete(self, data: bytes, out: list[Event]) -> int:
        """Extend the buffered incomplete item with ``data``.

        Return the offset in ``data`` just past the completed item, or -1 if it is still
        incomplete (and all of ``data`` is buffered).
        """
        buf = self._buf
        if buf[0] == 36:
            used = 0
            if len(buf) < 4:
                used = min(4 - len(buf), len(data))
                buf += data[:used]
                if len(buf) < 4:
                    return -1
            length = (buf[2] << 8) | buf[3]
            if length > self._limits.max_interleaved:
                self._frame_too_large(length)
            need = 4 + length - len(buf)
            if len(data) - used < need:
                buf += memoryview(data)[used:]
                return -1
            buf += memoryview(data)[used : used + need]
            out.append(InterleavedFrame(buf[1], bytes(buf[4:])))
            buf.clear()
            return used + need
        old = len(buf)
        buf += data
        done = self._message(buf, 0, len(buf))
        if done is None:
            return -1
        out.append(done[0])
        buf.clear()
        return done[1] - old

    def _message(
        self, src: bytes | bytearray, base: int, n: int
    ) -> tuple[Request | Response, int] | None:
        """Advance the message starting at ``src[base]``; return it and its end if done."""
        p = self._pending
        if p is None:
            p = self._pending = _Pending()
        if p.msg is None and not self._head(p, src, base, n):
            return None
        end = base + p.body_start + p.body_len
        if end > n:
            return None
        msg = p.msg
        assert msg is not None
        if p.body_len:
            msg.body = bytes(src[base + p.body_start : end])
        self._pending = None
        return msg, end

    def _head(self, p: _Pending, src: bytes | bytearray, base: int, n: int) -> bool:
        """Scan head lines; True once the head is complete and ``p.msg`` is set."""
        limits = self._limits
        line_start = base + p.scan
        search = base + p.find_from
        lines = p.lines
        while True:
            nl = src.find(b"\n", search, n)
            if nl < 0:
                p.scan = line_start - base
                p.find_from = n - base
                self._check_partial(src, base, line_start, n)
                return False
            stop = nl - 1 if nl > line_start and src[nl - 1] == 13 else nl
            if stop - line_start > limits.max_line:
                self._line_too_long(not lines, stop - line_start)
            if nl + 1 - base > limits.max_header_bytes:
                self._head_too_large(src, base, nl)
            line = bytes(src[line_start:stop])
            if not lines:
                self._check_start(src, line_start, stop)
                lines.append(line)
            elif not line:
                break
            elif line[0] in (32, 9):
                lines[-1] = lines[-1] + b" " + line.strip(b" \t")
            else:
                if len(lines) > limits.max_headers:
                    raise ParseError(
                        431,
                        f"more than {limits.max_headers} header fields",
                        _cseq_from_lines(lines),
                    )
                lines.append(line)
            line_start = search = nl + 1
        head_end = nl + 1
        bad = _HEAD_CTL.search(src, base, head_end)
        if bad is not None:
            raise ParseError(
                400,
                f"control character {_escaped(src[bad.start() : bad.start() + 1])} "
                f"in message head at offset {bad.start() - base}",
                _cseq_from_lines(lines),
            )
        p.msg, p.body_len = self._build(lines)
        p.body_start = head_end - base
        p.lines = []
        return True

    def _check_partial(self, src: bytes | bytearray, base: int, line_start: int, n: int) -> None:
        """Reject an incomplete head early if it is already over a limit or garbage."""
        limits = self._limits
        first = line_start == base
        if n - line_start > limits.max_line:
            self._line_too_long(first, n - line_start)
        if n - base > limits.max_header_bytes:
            self._head_too_large(src, base, n)
        if first:
            self._check_start(src, base, min(n, base + _PREFIX_WINDOW))

    def _check_start(self, src: bytes | bytearray, start: int, stop: int) -> None:
        """Reject a (possibly partial) start line that cannot begin an RTSP message."""
        end = min(stop, start + _PREFIX_WINDOW)
        if _REQUEST_PREFIX.match(src, start, end):
            return
        if _RESPONSE_PREFIX.match(src, start, end):
            if self._responses:
                return
            raise ParseError(
                400, f"expected a request, got a response line: {_escaped(src[start:stop])}"
            )
        seen = src[start:stop]
        hint = ""
        if seen[:1] == b"\x16":
            hint = " (looks like a TLS handshake on a plain RTSP port)"
        raise ParseError(400, f"not an RTSP message: {_escaped(seen)}{hint}")

    def _line_too_long(self, first: bool, length: int) -> NoReturn:
        limit = self._limits.max_line
        if first:
            status = 414 if not self._responses else 400
            raise ParseError(status, f"start line longer than {limit} bytes ({length}+)")
        raise ParseError(431, f"header line longer than {limit} bytes ({length}+)")

    def _head_too_large(self, src: bytes | bytearray, base: int, end: int) -> NoReturn:
        limit = self._limits.max_header_bytes
        raise ParseError(431, f"message head larger than {limit} bytes ({end - base}+)")

    def _build(self, lines: list[bytes]) -> tuple[Request | Response, int]:
        """Turn complete head lines into a message without body, plus its body length."""
        headers = Headers()
        for raw in lines[1:]:
            name, sep, value = _decode(raw).partition(":")
            name = name.strip()
            if not sep or not _TOKEN.fullmatch(name):
                raise ParseError(
                    400, f"malformed header line: {_escaped(raw)}", _cseq_from_lines(lines)
                )
            headers.add(name, value.strip(" \t"))
        cseq = headers.get("CSeq")
        start = _decode(lines[0])
        msg: Request | Response
        if start.startswith("RTSP/"):
            version, _, rest = start.partition(" ")
            code, _, reason = rest.partition(" ")
            self._check_version(version, cseq)
            if len(code) != 3 or not code.isdigit() or not code.isascii():
                raise ParseError(400, f"malformed status line: {start[:64]!r}", cseq)
            msg = Response(version, int(code), reason.strip(), headers, b"")
        else:
            method, _, rest = start.partition(" ")
            uri, _, version = rest.strip(" ").rpartition(" ")
            uri = uri.strip(" ")
            if not uri or not version:
                raise ParseError(400, f"malformed request line: {start[:64]!r}", cseq)
            self._check_version(version, cseq)
            msg = Request(method, uri, version, headers, b"")
        return msg, self._content_length(headers, cseq)

    @staticmethod
    def _check_version(version: str, cseq: str | None) -> None:
        if version in _SUPPORTED_VERSIONS:
            return
        if _VERSION.fullmatch(version):
            extra = ""
            if version.startswith("HTTP/"):
                extra = " (an HTTP request on the RTSP port)"
            raise ParseError(505, f"unsupported protocol version {version!r}{extra}", cseq)
        raise ParseError(400, f"malformed protocol version {version[:32]!r}", cseq)

    def _content_length(self, headers: Headers, cseq: str | None) -> int:
        values = headers.get_all("Content-Length")
        if not values:
            return 0
        if any(not _DIGITS.fullmatch(v) for v in values) or len(set(values)) > 1:
            raise ParseError(400, f"invalid Content-Length {', '.join(values)[:64]!r}", cseq)
        # compare digit counts first: int() refuses strings over 4300 digits
        length = int(values[0]) if len(values[0].lstrip("0")) <= 18 else 1 << 62
        if length > self._limits.max_body:
            raise ParseError(
                413, f"body of {length} bytes exceeds the limit of {self._limits.max_body}", cseq
            )
        return length


def _cseq_from_lines(lines: list[bytes]) -> str | None:
    """Best-effort CSeq from raw head lines (for error responses)."""
    for raw in lines[1:]:
        name, sep, value = raw.partition(b":")
        if sep and name.strip().lower() == b"cseq":
            text = _decode(value.strip())
            return text if _DIGITS.fullmatch(text) else None
    return None


def response(
    status: int,
    cseq: str | None,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes = b"",
    reason: str | None = None,
) -> bytes:
    """Serialise an RTSP/1.0 response with CSeq, Server and (for a body) Content-Length.

    ``headers`` may override Server; CSeq and Content-Length given there are ignored.
    """
    if not 100 <= status <= 999:
        raise ValueError(f"invalid status {status}")
    if reason is None:
        reason = REASONS.get(status) or default_reason(status)
    if _UNSAFE_VALUE.search(reason):
        raise ValueError(f"reason phrase contains CR, LF or NUL: {reason!r}")
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or ())
    lines = [f"RTSP/1.0 {status} {reason}\r\n"]
    out: list[tuple[str, str]] = []
    if cseq is not None:
        out.append(("CSeq", cseq))
    has_server = False
    for name, value in items:
        key = name.lower()
        if key in ("cseq", "content-length"):
            continue
        has_server = has_server or key == "server"
        out.append((name, value))
    if not has_server:
        out.append(("Server", SERVER_HEADER))
    if body:
        out.append(("Content-Length", str(len(body))))
    _write_headers(lines, out)
    lines.append("\r\n")
    return "".join(lines).encode("utf-8") + body


def default_reason(status: int) -> str:
    """A phrase for a status missing from :data:`REASONS`: its class, never "Unknown"."""
    return {
        1: "Informational",
        2: "Success",
        3: "Redirection",
        4: "Client Error",
        5: "Server Error",
    }.get(status // 100, "Error")


# -- URI ---------------------------------------------------------------------------------

_URI = re.compile(r"(?i)(rtsp[su]?)://([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#.*)?")


def split_uri(uri: str) -> tuple[str, str, str]:
    """Split a request URI into ``(host_port, path, query)``.

    ``path`` is percent-decoded, without leading or trailing slashes. Accepts
    ``rtsp://``, ``rtsps://`` and ``rtspu://`` URLs (user info is dropped), absolute paths
    like ``/a/b?x=1`` (host_port ``""``) and ``*`` (returned as path ``"*"``).
    """
    if uri == "*":
        return "", "*", ""
    m = _URI.fullmatch(uri)
    if m is not None:
        host = m.group(2).rpartition("@")[2]
        path, query = m.group(3), m.group(4) or ""
    elif uri.startswith("/"):
        path, _, query = uri.partition("?")
        query = query.partition("#")[0]
        path = path.partition("#")[0]
        host = ""
    else:
        raise ParseError(400, f"unsupported request URI {uri[:80]!r}")
    if any(c in uri for c in " \r\n\x00"):
        raise ParseError(400, f"invalid characters in request URI {uri[:80]!r}")
    return host, unquote(path).strip("/"), query


# -- Transport (RFC 2326 12.39, RFC 7826 18.54) -----------------------------------------

_KNOWN_TRANSPORT_KEYS = (
    "unicast",
    "multicast",
    "destination",
    "source",
    "interleaved",
    "client_port",
    "server_port",
    "port",
    "ttl",
    "ssrc",
    "mode",
)
_PROTOCOL = re.compile(r"([A-Za-z0-9._+-]+/[A-Za-z0-9._+-]+)(?:/([A-Za-z]+))?")


@dataclass
class TransportSpec:
    """One alternative of a Transport header.

    ``multicast`` is True only when ``multicast`` is given (an absent flag is treated as
    unicast, as deployed servers do, not as RFC 2326's multicast default). ``mode`` is
    lower-cased with quotes stripped. ``params`` holds every parameter as received
    (flags map to None); :meth:`serialize` writes the typed fields plus unknown params.
    """

    protocol: str = "RTP/AVP"
    lower: str = "UDP"
    multicast: bool = False
    interleaved: tuple[int, int] | None = None
    client_port: tuple[int, int] | None = None
    server_port: tuple[int, int] | None = None
    port: tuple[int, int] | None = None
    destination: str | None = None
    source: str | None = None
    ttl: int | None = None
    ssrc: str | None = None
    mode: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    def serialize(self) -> str:
        """Header value form, e.g. ``RTP/AVP/TCP;unicast;interleaved=0-1``."""
        parts = [self.protocol + ("/TCP" if self.lower == "TCP" else "")]
        parts.append("multicast" if self.multicast else "unicast")
        if self.destination is not None:
            parts.append(f"destination={self.destination}")
        if self.source is not None:
            parts.append(f"source={self.source}")
        for key in ("interleaved", "client_port", "server_port", "port"):
            pair = getattr(self, key)
            if pair is not None:
                parts.append(f"{key}={pair[0]}-{pair[1]}")
        if self.ttl is not None:
            parts.append(f"ttl={self.ttl}")
        if self.ssrc is not None:
            parts.append(f"ssrc={self.ssrc}")
        if self.mode is not None:
            parts.append(f"mode={self.mode}")
        for key, value in self.params.items():
            if key in _KNOWN_TRANSPORT_KEYS:
                continue
            parts.append(key if value is None else f"{key}={value}")
        text = ";".join(parts)
        if _UNSAFE_VALUE.search(text):
            raise ValueError(f"Transport value contains CR, LF or NUL: {text!r}")
        return text


def _split_outside_quotes(value: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quoted:
        raise ParseError(400, f"unterminated quote in {value[:80]!r}")
    parts.append("".join(current))
    return parts


def _pair(key: str, value: str | None, top: int) -> tuple[int, int]:
    if value is None:
        raise ParseError(400, f"Transport {key} needs a value")
    first, sep, second = value.strip().partition("-")
    if not _SMALL_INT.fullmatch(first) or (sep and not _SMALL_INT.fullmatch(second)):
        raise ParseError(400, f"invalid Transport {key}={value[:40]!r}")
    a = int(first)
    b = int(second) if sep else a + 1
    if a > top or b > top:
        raise ParseError(400, f"Transport {key}={value[:40]!r} out of range 0-{top}")
    return a, b


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _parse_one_transport(text: str) -> TransportSpec:
    items = [s.strip() for s in _split_outside_quotes(text, ";")]
    m = _PROTOCOL.fullmatch(items[0])
    if m is None:
        raise ParseError(400, f"invalid transport protocol {items[0][:40]!r}")
    lower = (m.group(2) or "UDP").upper()
    if lower not in ("UDP", "TCP"):
        raise ParseError(400, f"invalid lower transport {m.group(2)!r}")
    spec = TransportSpec(protocol=m.group(1).upper(), lower=lower)
    for item in items[1:]:
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = key.strip().lower()
        if not _TOKEN.fullmatch(key):
            raise ParseError(400, f"invalid Transport parameter {item[:40]!r}")
        value: str | None = raw.strip() if sep else None
        spec.params[key] = value
        if key == "multicast":
            spec.multicast = True
        elif key == "unicast":
            spec.multicast = False
        elif key == "interleaved":
            spec.interleaved = _pair(key, value, 255)
        elif key in ("client_port", "server_port", "port"):
            setattr(spec, key, _pair(key, value, 65535))
        elif key == "ttl":
            if value is None or not _SMALL_INT.fullmatch(value) or int(value) > 255:
                raise ParseError(400, f"invalid Transport ttl {value!r}")
            spec.ttl = int(value)
        elif key in ("destination", "source", "ssrc", "mode"):
            if value is not None:
                text_value = _unquote(value)
                if key == "mode":
                    text_value = text_value.lower()
                if not text_value:
                    raise ParseError(400, f"empty Transport {key}")
                setattr(spec, key, text_value)
    return spec


def parse_transport(value: str) -> list[TransportSpec]:
    """Parse a Transport header into its alternatives, in the client's preference order."""
    specs = [
        _parse_one_transport(part.strip())
        for part in _split_outside_quotes(value, ",")
        if part.strip()
    ]
    if not specs:
        raise ParseError(400, "empty Transport header")
    return specs


# -- Session (RFC 2326 12.37) -----------------------------------------------------------

_SESSION_ID = re.compile(r"[A-Za-z0-9$\-_.+!*'()%:/@&=~]+")


def parse_session(value: str) -> tuple[str, int | None]:
    """``"abc;timeout=60"`` -> ``("abc", 60)``; the timeout is None when absent."""
    sid, _, rest = value.partition(";")
    sid = sid.strip()
    if not _SESSION_ID.fullmatch(sid):
        raise ParseError(400, f"invalid Session header {value[:80]!r}")
    timeout: int | None = None
    for param in rest.split(";"):
        key, _, raw = param.partition("=")
        if key.strip().lower() == "timeout":
            raw = raw.strip()
            if not _SMALL_INT.fullmatch(raw):
                raise ParseError(400, f"invalid Session timeout {raw[:20]!r}")
            timeout = int(raw)
    return sid, timeout


# -- Range (RFC 2326 12.29, 3.5-3.7) ---------------------------------------------------

_NPT_HMS = re.compile(r"([0-9]{1,9}):([0-5]?[0-9]):([0-5]?[0-9](?:\.[0-9]*)?)")
_NPT_SEC = re.compile(r"[0-9]+(?:\.[0-9]*)?")
_SMPTE = re.compile(r"([0-9]{1,9}):([0-9]{1,2}):([0-9]{1,2})(?::([0-9]{1,2})(?:\.([0-9]{1,2}))?)?")
_CLOCK = re.compile(r"([0-9]{8})T([0-9]{6})(?:\.([0-9]+))?Z")
_SMPTE_FPS = {"smpte": 30000 / 1001, "smpte-30-drop": 30000 / 1001, "smpte-25": 25.0}


def _range_time(unit: str, text: str, range_value: str) -> float | None:
    text = text.strip()
    if not text or (unit == "npt" and text == "now"):
        return None
    if unit == "npt":
        m = _NPT_HMS.fullmatch(text)
        if m is not None:
            return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
        if _NPT_SEC.fullmatch(text):
            return float(text)
    elif unit in _SMPTE_FPS:
        m = _SMPTE.fullmatch(text)
        if m is not None:
            h, mi, s, fr, sub = m.groups()
            frames = int(fr or 0) + int(sub or 0) / 100
            return int(h) * 3600 + int(mi) * 60 + int(s) + frames / _SMPTE_FPS[unit]
    elif unit == "clock":
        m = _CLOCK.fullmatch(text)
        if m is not None:
            try:
                tm = time.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S")
            except ValueError:
                pass
            else:
                frac = float("0." + m.group(3)) if m.group(3) else 0.0
                return calendar.timegm(tm) + frac
    raise ParseError(457, f"invalid {unit} time {text[:40]!r} in Range {range_value[:80]!r}")


def parse_range(value: str) -> tuple[str, float | None, float | None]:
    """Parse a Range header: ``(unit, start, end)`` in seconds.

    ``npt`` times are seconds from the start, ``clock`` times are Unix timestamps,
    ``smpte`` times are converted with the unit's frame rate. ``now`` and open ends are
    None. Parameters after ``;`` (such as ``time=``) are ignored.
    """
    spec = value.partition(";")[0].strip()
    unit, sep, rng = spec.partition("=")
    unit = unit.strip().lower()
    if not sep or (unit != "npt" and unit != "clock" and unit not in _SMPTE_FPS):
        raise ParseError(457, f"invalid Range {value[:80]!r}")
    if unit == "clock":
        # "-" also appears nowhere inside a clock time, so a plain split works.
        first, dash, second = rng.partition("-")
    else:
        first, dash, second = rng.strip().partition("-")
    if not dash or (not first.strip() and not second.strip()):
        raise ParseError(457, f"invalid Range {value[:80]!r}")
    start = _range_time(unit, first, value)
    end = _range_time(unit, second, value)
    if first.strip() == "now" and second.strip():
        raise ParseError(457, f"invalid Range {value[:80]!r}: 'now' start with an end")
    if start is not None and end is not None and end < start:
        raise ParseError(457, f"invalid Range {value[:80]!r}: end before start")
    return unit, start, end
