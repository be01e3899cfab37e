"""A small asyncio RTSP client that pulls a stream: DESCRIBE, SETUP (TCP interleaved), PLAY.

Used by the pull sources (``source = "rtsp://..."``). Protocol work is done by the sans-I/O
parts: :mod:`onvifcam.rtsp.message` parses the replies and the ``$`` frames,
:mod:`onvifcam.rtsp.auth` answers Digest challenges, :mod:`onvifcam.media.sdp` reads the
SDP. RTP and RTCP go to the callbacks as they arrive, track ``i`` being the i-th media of the
SDP with an RTP profile (the numbering :class:`onvifcam.media.stream.Stream` uses).

Every bound holds against a hostile server: reply heads and bodies are limited (``Limits``),
interleaved frames too, each request waits ``timeout`` at most, and a server that stops
sending for ``idle_timeout`` ends :meth:`RtspPuller.run`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl as _ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from onvifcam.aio import within
from onvifcam.media.sdp import SdpError, SessionDescription, resolve_control
from onvifcam.redact import redact
from onvifcam.rtsp import message
from onvifcam.rtsp.auth import digest_response, parse_auth_header
from onvifcam.rtsp.message import Headers, Limits, ParseError, Parser, Request, Response

__all__ = ["PullError", "PullTarget", "RtspPuller", "redact", "rtp_media"]

log = logging.getLogger(__name__)

USER_AGENT = "onvifcam-pull"
MAX_TRACKS = 8  # media sections set up at most (a hostile SDP could list thousands)


class PullError(Exception):
    """A pull attempt failed; the message says what the server did and what to check."""


@dataclass(frozen=True)
class PullTarget:
    """A pull URL split into what the client needs (credentials kept out of ``url``)."""

    scheme: str
    host: str
    port: int
    url: str  # without user info: what requests carry
    username: str = ""
    password: str = ""

    @classmethod
    def parse(cls, uri: str, default_port: int) -> PullTarget:
        """Split ``scheme://user:pass@host:port/path?query``; raises PullError."""
        parts = urlsplit(uri)
        try:
            port = parts.port or default_port
        except ValueError:
            raise PullError(f"{redact(uri)}: bad port") from None
        if not parts.hostname:
            raise PullError(f"{redact(uri)}: no host")
        host = parts.hostname
        netloc = f"[{host}]" if ":" in host else host
        url = f"{parts.scheme}://{netloc}:{port}{parts.path or '/'}"
        if parts.query:
            url += "?" + parts.query
        return cls(
            parts.scheme.lower(),
            host,
            port,
            url,
            unquote(parts.username or ""),
            unquote(parts.password or ""),
        )


def rtp_media(session: SessionDescription) -> list[int]:
    """Indexes (in ``session.media``) of the media a stream makes tracks of, in track order."""
    return [
        i
        for i, md in enumerate(session.media)
        if md.proto.upper().startswith("RTP/") and md.formats
    ]


class RtspPuller:
    """One RTSP connection pulling one stream over TCP interleaved."""

    def __init__(
        self,
        uri: str,
        *,
        on_rtp: Callable[[int, bytes], None],
        on_rtcp: Callable[[int, bytes], None] | None = None,
        timeout: float = 5.0,
        max_sdp_bytes: int = 65536,
    ) -> None:
        self.target = PullTarget.parse(uri, 322 if uri.lower().startswith("rtsps") else 554)
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        self.timeout = timeout
        self.parser = Parser(Limits(max_body=max_sdp_bytes), role="client")
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.session_id = ""
        self.session_timeout = 60.0
        self.public: set[str] = set()
        self.sdp: SessionDescription | None = None
        self.tracks: list[int] = []  # media indexes, in track order
        self._cseq = 0
        self._auth: tuple[str, dict[str, str]] | None = None
        self._nc = 0
        self._events: list[message.Event] = []
        self.bytes_in = 0
        self.packets_in = 0

    @property
    def description(self) -> str:
        """The URL without credentials."""
        return self.target.url

    # ------------------------------------------------------------------ setup
    async def open(self) -> SessionDescription:
        """Connect, DESCRIBE, SETUP every RTP track over TCP, PLAY; the server's SDP."""
        t = self.target
        ctx = _ssl.create_default_context() if t.scheme == "rtsps" else None
        try:
            self.reader, self.writer = await within(
                asyncio.open_connection(t.host, t.port, ssl=ctx), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise PullError(f"cannot connect to {t.host}:{t.port}: {exc or 'timed out'}") from None
        resp = await self.request("OPTIONS", t.url)
        self.public = {m.strip().upper() for m in (resp.headers.get("Public") or "").split(",")}
        resp = await self.request("DESCRIBE", t.url, [("Accept", "application/sdp")])
        self._expect(resp, "DESCRIBE")
        try:
            sdp = SessionDescription.parse(resp.body)
        except SdpError as exc:
            raise PullError(f"DESCRIBE {t.url}: the server's SDP is not usable: {exc}") from None
        base = resp.headers.get("Content-Base") or resp.headers.get("Content-Location") or t.url
        base = resolve_control(base, sdp.control)
        self.tracks = rtp_media(sdp)
        if not self.tracks:
            raise PullError(f"DESCRIBE {t.url}: the SDP has no RTP media")
        if len(self.tracks) > MAX_TRACKS:
            raise PullError(
                f"DESCRIBE {t.url}: the SDP has {len(self.tracks)} media (at most {MAX_TRACKS})"
            )
        for n, i in enumerate(self.tracks):
            url = resolve_control(base, sdp.media[i].control)
            hdrs = [("Transport", f"RTP/AVP/TCP;unicast;interleaved={2 * n}-{2 * n + 1}")]
            resp = await self.request("SETUP", url, hdrs)
            self._expect(resp, "SETUP")
            sess = resp.headers.get("Session")
            if sess and not self.session_id:
                try:
                    sid, tmo = message.parse_session(sess)
                except ParseError:
                    raise PullError(f"SETUP {url}: bad Session header {sess[:60]!r}") from None
                self.session_id = sid
                if tmo:
                    self.session_timeout = float(tmo)
            transport = resp.headers.get("Transport") or ""
            specs = message.parse_transport(transport) if transport else []
            if specs and specs[0].interleaved not in (None, (2 * n, 2 * n + 1)):
                raise PullError(f"SETUP {url}: the server chose other channels ({transport})")
        resp = await self.request("PLAY", base, [("Range", "npt=0.000-")])
        self._expect(resp, "PLAY")
        self.sdp = sdp
        return sdp

    def _expect(self, resp: Response, what: str) -> None:
        if resp.status == 200:
            return
        hint = ""
        if resp.status == 401:
            hint = " (check the user and password in the URL)"
        elif resp.status == 404:
            hint = " (nothing is published at that path)"
        raise PullError(f"{what} {self.target.url}: {resp.status} {resp.reason}{hint}")

    async def request(
        self, method: str, url: str, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        """Send a request and wait for its reply (one retry with credentials after 401)."""
        for attempt in range(2):
            self._cseq += 1
            h = Headers([("CSeq", str(self._cseq)), ("User-Agent", USER_AGENT)])
            for k, v in headers or []:
                h.add(k, v)
            if self.session_id:
                h.add("Session", self.session_id)
            auth = self._authorization(method, url)
            if auth:
                h.add("Authorization", auth)
            self._write(Request(method, url, headers=h).serialize())
            resp = await within(self._reply(str(self._cseq)), self.timeout)
            if resp.status != 401 or attempt or not (self.target.username or self.target.password):
                return resp
            self._auth = self._challenge(resp)
            if self._auth is None:
                return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def _challenge(self, resp: Response) -> tuple[str, dict[str, str]] | None:
        best: tuple[str, dict[str, str]] | None = None
        for value in resp.headers.get_all("WWW-Authenticate"):
            try:
                scheme, params = parse_auth_header(value)
            except ValueError:
                continue
            if scheme.lower() == "digest" and "nonce" in params:
                return "digest", params
            if scheme.lower() == "basic":
                best = ("basic", params)
        return best

    def _authorization(self, method: str, url: str) -> str:
        if self._auth is None:
            return ""
        t = self.target
        scheme, params = self._auth
        if scheme == "basic":
            token = base64.b64encode(f"{t.username}:{t.password}".encode()).decode()
            return f"Basic {token}"
        self._nc += 1
        return digest_response(method, url, t.username, t.password, params, nc=self._nc)

    def _write(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    async def _reply(self, cseq: str) -> Response:
        while True:
            while self._events:
                ev = self._events.pop(0)
                if isinstance(ev, Response) and ev.cseq == cseq:
                    return ev
                if isinstance(ev, message.InterleavedFrame):
                    self._frame(ev)
            await self._read()

    async def _read(self) -> None:
        assert self.reader is not None
        try:
            data = await self.reader.read(65536)
        except OSError as exc:
            raise PullError(f"{self.target.url}: connection lost: {exc}") from None
        if not data:
            raise PullError(f"{self.target.url}: the server closed the connection")
        self.bytes_in += len(data)
        try:
            self._events.extend(self.parser.feed(data))
        except ParseError as exc:
            raise PullError(f"{self.target.url}: bad data from the server: {exc}") from None

    def _frame(self, f: message.InterleavedFrame) -> None:
        track, rtcp = divmod(f.channel, 2)
        if track >= len(self.tracks):
            return
        if rtcp:
            if self.on_rtcp is not None:
                self.on_rtcp(track, f.data)
        else:
            self.packets_in += 1
            self.on_rtp(track, f.data)

    # ------------------------------------------------------------------ playing
    async def run(self, idle_timeout: float) -> None:
        """Deliver media until the server stops; raises PullError saying why it ended
        (closed, no data for ``idle_timeout`` s, bad data)."""
        loop = asyncio.get_running_loop()
        keepalive = max(5.0, min(self.session_timeout / 2, 30.0))
        next_keepalive = loop.time() + keepalive
        method = "GET_PARAMETER" if "GET_PARAMETER" in self.public else "OPTIONS"
        while True:
            for ev in self._events:
                if isinstance(ev, message.InterleavedFrame):
                    self._frame(ev)
            self._events.clear()
            if loop.time() >= next_keepalive:
                next_keepalive = loop.time() + keepalive
                self._cseq += 1
                h = Headers([("CSeq", str(self._cseq)), ("User-Agent", USER_AGENT)])
                if self.session_id:
                    h.add("Session", self.session_id)
                auth = self._authorization(method, self.target.url)
                if auth:
                    h.add("Authorization", auth)
                self._write(Request(method, self.target.url, headers=h).serialize())
            try:
                await within(self._read(), idle_timeout)
            except TimeoutError:
                raise PullError(
                    f"{self.target.url}: no data for {idle_timeout:g} s ([sources] switch_after)"
                ) from None

    async def close(self) -> None:
        """TEARDOWN (best effort) and close the socket."""
        w, self.writer = self.writer, None
        if w is None:
            return
        try:
            if self.session_id and not w.is_closing():
                self._cseq += 1
                h = Headers([("CSeq", str(self._cseq)), ("Session", self.session_id)])
                w.write(Request("TEARDOWN", self.target.url, headers=h).serialize())
            w.close()
            await within(w.wait_closed(), 2)
        except (OSError, TimeoutError, ValueError):
            pass
