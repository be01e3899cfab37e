"""An RTSP ANNOUNCE/RECORD client over TCP interleaved, for forwarding a stream.

:func:`open_record` connects, ANNOUNCEs the SDP, SETUPs every track with
``RTP/AVP/TCP;interleaved=2i-2i+1;mode=record`` and sends RECORD, answering one 401 with
Digest (preferred) or Basic credentials from the URL. It returns the open connection and
the interleaved RTP channel of each track; the caller then writes ``$``-framed RTP and
RTCP (a :class:`~onvifcam.media.stream.Batch` framed with those channels) as it is.
Message parsing is :class:`onvifcam.rtsp.message.Parser`'s.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl as _ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from onvifcam.redact import redact
from onvifcam.rtsp.auth import digest_response, parse_auth_header
from onvifcam.rtsp.message import Headers, ParseError, Parser, Request, Response

__all__ = ["RecordError", "Recording", "open_record", "redact"]

_USER_AGENT = "onvifcam-forward"
_INTERLEAVED = re.compile(r"interleaved=(\d+)(?:-(\d+))?", re.I)


class RecordError(Exception):
    """The server refused a request or the exchange failed; the message says which."""


@dataclass
class Recording:
    """An open RECORD session."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    channels: tuple[int | None, ...]  # RTP channel per track (RTCP: channel + 1)
    parser: Parser
    session: str


class _Client:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, url: str
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = Parser(role="client")
        self.cseq = 0
        self.session = ""
        parts = urlsplit(url)
        self.user = unquote(parts.username or "")
        self.password = unquote(parts.password or "")
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
        self.base = urlunsplit(parts._replace(netloc=netloc, fragment=""))
        self.auth: tuple[str, dict[str, str]] | None = None
        self.nc = 0

    def _authorization(self, method: str, uri: str) -> str | None:
        if self.auth is None:
            return None
        scheme, params = self.auth
        if scheme == "digest":
            self.nc += 1
            return digest_response(method, uri, self.user, self.password, params, nc=self.nc)
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return f"Basic {token}"

    async def request(
        self, method: str, uri: str, headers: list[tuple[str, str]], body: bytes = b""
    ) -> Response:
        for attempt in (0, 1):
            self.cseq += 1
            h = Headers([("CSeq", str(self.cseq)), ("User-Agent", _USER_AGENT), *headers])
            if self.session:
                h.set("Session", self.session)
            auth = self._authorization(method, uri)
            if auth:
                h.set("Authorization", auth)
            self.writer.write(Request(method, uri, headers=h, body=body).serialize())
            resp = await self._response()
            if resp.status == 401 and attempt == 0 and self.user and self.auth is None:
                self.auth = _pick_challenge(resp.headers.get_all("WWW-Authenticate"))
                if self.auth is not None:
                    continue
            if resp.status == 401:
                who = (
                    "the credentials in the URL were refused"
                    if self.user
                    else ("the server wants credentials: put user:password@ in the forward url")
                )
                raise RecordError(f"{method}: 401 {resp.reason} ({who})")
            if resp.status != 200:
                raise RecordError(f"{method}: {resp.status} {resp.reason}")
            s = resp.headers.get("Session")
            if s:
                self.session = s.split(";", 1)[0].strip()
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    async def _response(self) -> Response:
        while True:
            data = await self.reader.read(65536)
            if not data:
                raise RecordError("the server closed the connection")
            try:
                events = self.parser.feed(data)
            except ParseError as exc:
                raise RecordError(f"bad reply from the server: {exc}") from None
            for ev in events:
                if isinstance(ev, Response) and ev.cseq == str(self.cseq):
                    return ev
                # interleaved frames or server requests before our reply: ignored


def _pick_challenge(values: list[str]) -> tuple[str, dict[str, str]] | None:
    parsed = []
    for v in values:
        try:
            parsed.append(parse_auth_header(v))
        except ValueError:
            continue
    for scheme, params in parsed:
        if scheme.lower() == "digest" and "nonce" in params:
            return "digest", params
    for scheme, params in parsed:
        if scheme.lower() == "basic":
            return "basic", params
    return None


async def open_record(
    url: str, sdp: bytes, controls: list[str], *, ssl: _ssl.SSLContext | None = None
) -> Recording:
    """ANNOUNCE ``sdp`` to ``url``, SETUP each control over TCP interleaved, RECORD.

    ``controls`` are the tracks' ``a=control`` values in the SDP, in track order. Raises
    RecordError (refused, closed) or OSError (cannot connect); the caller bounds the time.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("rtsp", "rtsps") or not parts.hostname:
        raise RecordError(f"{redact(url)} is not an rtsp:// URL")
    port = parts.port or (322 if parts.scheme == "rtsps" else 554)
    if parts.scheme == "rtsps" and ssl is None:
        ssl = _ssl.create_default_context()
    reader, writer = await asyncio.open_connection(
        parts.hostname, port, ssl=ssl, server_hostname=parts.hostname if ssl else None
    )
    try:
        c = _Client(reader, writer, url)
        await c.request("ANNOUNCE", c.base, [("Content-Type", "application/sdp")], sdp)
        channels: list[int | None] = []
        for i, control in enumerate(controls):
            if "://" in control:
                uri = control
            else:
                uri = c.base.rstrip("/") + "/" + control
            want = f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1};mode=record"
            resp = await c.request("SETUP", uri, [("Transport", want)])
            m = _INTERLEAVED.search(resp.headers.get("Transport", ""))
            channels.append(int(m.group(1)) if m else 2 * i)
        await c.request("RECORD", c.base, [("Range", "npt=0.000-")])
        return Recording(reader, writer, tuple(channels), c.parser, c.session)
    except BaseException:
        writer.close()
        raise
