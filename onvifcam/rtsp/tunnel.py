"""RTSP over HTTP tunnelling: the GET/POST pair tied by ``x-sessioncookie``.

The GET connection carries everything the server sends (responses and interleaved media);
the POST connection carries the client's RTSP requests, base64-encoded, for as long as it
stays open. This module holds the small HTTP parsing and streaming base64 decoding; the
server glues the two connections together.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

MAX_HTTP_HEADER = 16384


class TunnelError(ValueError):
    """A malformed tunnel request."""


@dataclass(frozen=True)
class HttpRequestHead:
    """Request line and headers of an HTTP request (names lower-cased)."""

    method: str
    target: str
    version: str
    headers: dict[str, str]


def looks_like_http(data: bytes) -> bool:
    """True when a connection's first bytes are an HTTP GET/POST rather than RTSP."""
    if not (data.startswith(b"GET ") or data.startswith(b"POST ")):
        return False
    line_end = data.find(b"\n")
    first = data if line_end < 0 else data[:line_end]
    return b"HTTP/" in first or line_end < 0


def parse_head(data: bytes) -> tuple[HttpRequestHead, bytes] | None:
    """Parse a complete HTTP request head; None while incomplete. Returns the head and the
    bytes after it. Raises TunnelError on garbage or an oversized head."""
    end = data.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end = data.find(b"\n\n")
        sep = 2
    if end < 0:
        if len(data) > MAX_HTTP_HEADER:
            raise TunnelError(f"HTTP request head larger than {MAX_HTTP_HEADER} bytes")
        return None
    try:
        text = data[:end].decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes anything
        raise TunnelError(str(exc)) from None
    lines = text.replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise TunnelError(f"bad HTTP request line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" not in line:
            raise TunnelError(f"bad HTTP header line {line[:80]!r}")
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return HttpRequestHead(parts[0], parts[1], parts[2], headers), data[end + sep :]


def get_response() -> bytes:
    """The reply to the tunnel's GET: it stays open and carries RTSP from here on."""
    return (
        b"HTTP/1.0 200 OK\r\n"
        b"Server: onvifcam\r\n"
        b"Connection: close\r\n"
        b"Cache-Control: no-store\r\n"
        b"Pragma: no-cache\r\n"
        b"Content-Type: application/x-rtsp-tunnelled\r\n\r\n"
    )


def error_response(status: int, reason: str) -> bytes:
    """A short HTTP error for a request that is not a valid tunnel half."""
    body = f"{reason}\n".encode()
    return (
        f"HTTP/1.0 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


class Base64Stream:
    """Decodes base64 that arrives in arbitrary pieces (whitespace ignored)."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        """Decode what is complete so far; keep the partial quantum."""
        data = self._rest + bytes(data).translate(None, b" \r\n\t")
        cut = len(data) - len(data) % 4
        self._rest = data[cut:]
        if not cut:
            return b""
        try:
            return base64.b64decode(data[:cut], validate=True)
        except binascii.Error as exc:
            raise TunnelError(f"bad base64 in tunnel POST body: {exc}") from None
