"""Coverage-guided fuzzing of every sans-I/O parser with atheris (``pip install .[fuzz]``).

    python scripts/fuzz.py --list
    python scripts/fuzz.py [--target NAME|all] [--runs N] [--seconds S]
    python scripts/fuzz.py --make-seeds        # regenerate tests/fuzz_corpus/ from real peers

Each target in :data:`TARGETS` is one entry: a function that feeds bytes to a parser the
way the server does, plus the exception types that are that parser's own errors. Any other
exception escaping (or a "never raises" function raising, or a server-side catch-all
swallowing an internal error) is a finding: its input is saved under
``tests/fuzz_corpus/crashes/<target>/`` and fuzzing goes on. The unit test
``tests/unit/test_fuzz_regressions.py`` replays every seed and crash file through the same
functions without atheris.

``all`` runs the targets one after another, one fuzzing process at a time (each target
runs in its own child process because libFuzzer exits when it is done). Per target the
script prints the inputs run, exec/s and the unexpected exceptions (0 expected).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz_corpus"
CRASHES = CORPUS / "crashes"

#: The onvifcam modules the targets reach; the fuzzing child imports them instrumented.
MODULES = (
    "onvifcam.rtsp.message",
    "onvifcam.rtsp.auth",
    "onvifcam.media.sdp",
    "onvifcam.media.rtp",
    "onvifcam.media.rtcp",
    "onvifcam.media.h264",
    "onvifcam.media.h265",
    "onvifcam.media.aac",
    "onvifcam.rtmp.handshake",
    "onvifcam.rtmp.chunk",
    "onvifcam.rtmp.amf0",
    "onvifcam.rtmp.flv",
    "onvifcam.onvif.soap",
    "onvifcam.discovery.wsdiscovery",
    "onvifcam.media.mpegts",
    "onvifcam.srt.packet",
    "onvifcam.srt.handshake",
    "onvifcam.srt.receiver",
)


class ContractViolation(AssertionError):
    """A function documented as never raising raised, or returned something inconsistent."""


@dataclass(frozen=True)
class Target:
    """One fuzz target: ``run(data)`` may raise only the parser's own ``allowed`` errors."""

    name: str
    run: Callable[[bytes], None]
    errors: Callable[[], tuple[type[BaseException], ...]]
    doc: str
    max_len: int = 4096

    @property
    def allowed(self) -> tuple[type[BaseException], ...]:
        """The exception types that are the parser's own (imported on first use)."""
        return self.errors()


#: name -> Target; add a parser with the :func:`target` decorator.
TARGETS: dict[str, Target] = {}


def target(
    name: str, errors: Callable[[], tuple[type[BaseException], ...]], max_len: int = 4096
) -> Callable[[Callable[[bytes], None]], Callable[[bytes], None]]:
    """Register ``fn`` as fuzz target ``name``; ``errors()`` returns the parser's own
    exception types (a function, so that onvifcam is imported only when a target runs: the
    fuzzing child imports it under atheris instrumentation first)."""

    def deco(fn: Callable[[bytes], None]) -> Callable[[bytes], None]:
        first = " ".join((fn.__doc__ or "").split("\n\n")[0].split())
        doc = re.split(r"(?<=\.)\s", first)[0]
        TARGETS[name] = Target(name, fn, errors, doc, max_len)
        return fn

    return deco


# --------------------------------------------------------------------------- input helpers


def records(data: bytes, width: int = 2) -> list[bytes]:
    """Split ``data`` into records, each prefixed by a ``width``-byte big-endian length;
    a truncated last record is kept as it is."""
    out: list[bytes] = []
    pos = 0
    n = len(data)
    while pos < n:
        size = int.from_bytes(data[pos : pos + width], "big")
        pos += width
        out.append(data[pos : pos + size])
        pos += size
    return out


def join_records(parts: list[bytes], width: int = 2) -> bytes:
    """The inverse of :func:`records` (used to write seeds)."""
    return b"".join(len(p).to_bytes(width, "big") + p for p in parts)


def pieces(data: bytes, step: int, most: int = 64) -> Iterator[bytes]:
    """``data`` in pieces of ``step`` bytes, the rest in one piece after ``most`` of them
    (all at once when ``step`` is 0): feeding a long input byte by byte would halve the
    fuzzing speed for little more coverage than splitting its start."""
    if step <= 0:
        yield data
        return
    end = min(len(data), step * most)
    for i in range(0, end, step):
        yield data[i : i + step]
    if end < len(data):
        yield data[end:]


def text(data: bytes) -> str:
    """Bytes as a header value would reach the parser (UTF-8, else Latin-1)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def never_raises(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a function documented as never raising; any exception is a contract violation."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        raise ContractViolation(f"{fn.__qualname__} raised {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- targets


def _rtsp_allowed() -> tuple[type[BaseException], ...]:
    from onvifcam.rtsp.message import ParseError

    return (ParseError,)


@target("rtsp-message", _rtsp_allowed, max_len=8192)
def fuzz_rtsp_message(data: bytes) -> None:
    """RTSP requests/responses and $-interleaved frames (rtsp/message.py Parser), fed in
    pieces, plus the Transport, Session, Range and URI header helpers on what it parsed.

    Byte 0: bit 0 client role, bit 1 tiny limits, bits 2-7 piece size (0 = one feed).
    """
    from onvifcam.rtsp import message as m

    if not data:
        return
    ctl = data[0]
    limits = m.Limits(64, 4, 256, 512, 300) if ctl & 2 else m.Limits()
    parser = m.Parser(limits, role="client" if ctl & 1 else "server")
    events: list[m.Event] = []
    try:
        for piece in pieces(data[1:], ctl >> 2):
            events += parser.feed(piece)
    except m.ParseError as exc:
        events += exc.events
        final = False
        try:
            parser.feed(b"OPTIONS * RTSP/1.0\r\n\r\n")
        except m.ParseError:
            final = True  # the first error is final
        if not final:
            raise ContractViolation("Parser accepted input after an error") from None
    for ev in events:
        if isinstance(ev, m.InterleavedFrame):
            if not 0 <= ev.channel <= 255 or len(ev.data) > limits.max_interleaved:
                raise ContractViolation(f"bad interleaved frame {ev.channel} {len(ev.data)}")
            continue
        if len(ev.body) > limits.max_body:
            raise ContractViolation(f"body of {len(ev.body)} bytes over the limit")
        headers = ev.headers
        for name, helper in (
            ("Transport", m.parse_transport),
            ("Session", m.parse_session),
            ("Range", m.parse_range),
        ):
            value = headers.get(name)
            if value is not None:
                with contextlib.suppress(m.ParseError):
                    helper(value)
        if isinstance(ev, m.Request):
            with contextlib.suppress(m.ParseError):
                m.split_uri(ev.uri)


def _auth_allowed() -> tuple[type[BaseException], ...]:
    return ()


_AUTH_SECRET = b"onvifcam-fuzz-secret-0123456789ab"
_AUTH_CLOCK = 1_700_000_000.0


@functools.cache
def _authenticators() -> tuple[Any, ...]:
    from onvifcam.rtsp.auth import Authenticator

    clock = lambda: _AUTH_CLOCK  # noqa: E731
    return (
        Authenticator("onvifcam", _AUTH_SECRET, clock=clock),
        Authenticator("onvifcam", _AUTH_SECRET, algorithms=("SHA-256", "MD5"), clock=clock),
    )


@target("rtsp-auth", _auth_allowed, max_len=2048)
def fuzz_rtsp_auth(data: bytes) -> None:
    """RTSP/HTTP Authorization headers (rtsp/auth.py): parse_auth_header, whose error is
    ValueError, and Authenticator.check (Digest MD5/SHA-256, Basic), which never raises.

    Line 1 is the method and URI (``DESCRIBE rtsp://...``), the rest the header value;
    nonces made with the fixed secret and clock of the harness verify.
    """
    from onvifcam.rtsp.auth import Credentials, parse_auth_header

    head, _, value_raw = data.partition(b"\n")
    method, _, uri = text(head).partition(" ")
    value = text(value_raw)
    with contextlib.suppress(ValueError):
        scheme, params = parse_auth_header(value)
        if not isinstance(scheme, str) or not all(isinstance(v, str) for v in params.values()):
            raise ContractViolation("parse_auth_header returned non-strings")
    users = [Credentials("admin", "secret"), Credentials("user", "p\u00e4ss:w")]
    for auth in _authenticators():
        res = never_raises(auth.check, method or "DESCRIBE", value, users, uri or None)
        if res.ok and res.username not in ("admin", "user"):
            raise ContractViolation(f"accepted unknown user {res.username!r}")


def _sdp_allowed() -> tuple[type[BaseException], ...]:
    from onvifcam.media.h264 import H264Error
    from onvifcam.media.h265 import H265Error
    from onvifcam.media.sdp import SdpError

    return (SdpError, H264Error, H265Error)


@target("sdp", _sdp_allowed, max_len=8192)
def fuzz_sdp(data: bytes) -> None:
    """SDP bodies of ANNOUNCE (media/sdp.py), their accessors, control URL resolution and
    the parameter sets in fmtp (sprop-*), as the stream reads them; the serialised SDP
    must parse again."""
    from onvifcam.media import h264, h265
    from onvifcam.media.sdp import MAX_SDP_SIZE, SdpError, SessionDescription, resolve_control

    sdp = SessionDescription.parse(data, require_media=bool(len(data) & 1))
    base = "rtsp://127.0.0.1:8554/live/cam"
    resolve_control(base, sdp.control)
    for md in sdp.media:
        resolve_control(base, md.control)
        _ = (md.rtpmap, md.encoding, md.clock_rate, md.channels)
        with contextlib.suppress(SdpError):
            fmtp = md.fmtp.get(md.payload_type, {})
            with contextlib.suppress(h264.H264Error):
                for nal in h264.parse_sprop_parameter_sets(fmtp.get("sprop-parameter-sets", "")):
                    if nal[0] & 0x1F == h264.NAL_SPS:
                        h264.parse_sps(nal)
            with contextlib.suppress(h265.H265Error):
                for nal in h265.parse_sprop(fmtp):
                    if len(nal) > 2 and h265.nal_type(nal) == h265.NAL_SPS:
                        h265.parse_sps(nal)
    out = sdp.serialize()
    if len(out) <= MAX_SDP_SIZE:
        try:
            again = SessionDescription.parse(out, require_media=False)
        except SdpError as exc:
            raise ContractViolation(f"serialised SDP does not parse: {exc}") from exc
        if len(again.media) != len(sdp.media):
            raise ContractViolation("serialised SDP lost media sections")


def _rtp_allowed() -> tuple[type[BaseException], ...]:
    from onvifcam.media.rtp import RtpError

    return (RtpError,)


@target("rtp", _rtp_allowed, max_len=2048)
def fuzz_rtp(data: bytes) -> None:
    """RTP packets (media/rtp.py parse): the payload bounds must lie inside the packet."""
    from onvifcam.media import rtp

    h = rtp.parse(data)
    if not 12 <= h.payload_start <= h.payload_end <= len(data):
        raise ContractViolation(f"payload {h.payload_start}..{h.payload_end} of {len(data)}")


def _rtcp_allowed() -> tuple[type[BaseException], ...]:
    from onvifcam.media.rtcp import RtcpError

    return (RtcpError,)


@target("rtcp", _rtcp_allowed, max_len=2048)
def fuzz_rtcp(data: bytes) -> None:
    """Compound RTCP packets (media/rtcp.py parse_compound)."""
    from onvifcam.media import rtcp

    for p in rtcp.parse_compound(data):
        if isinstance(p, rtcp.SenderReport):
            rtcp.unix_from_ntp(p.ntp)


def _h264_allowed() -> tuple[type[BaseException], ...]:
    from onvifcam.media.h264 import H264Error

    return (H264Error,)


@target("h264", _h264_allowed)
def fuzz_h264(data: bytes) -> None:
    """H.264 (media/h264.py): SPS, avcC, AVCC/Annex-B framing, sprop-parameter-sets, and
    the RFC 6184 depacketiser and keyframe test (never raise) on 2-byte-length records."""
    from onvifcam.media import h264

    H264Error = h264.H264Error
    with contextlib.suppress(H264Error):
        info = h264.parse_sps(data)
        if info.width <= 0 or info.height <= 0:
            raise ContractViolation(f"SPS gave {info.width}x{info.height}")
    with contextlib.suppress(H264Error):
        h264.profile_level_id(data)
    with contextlib.suppress(H264Error):
        cfg = h264.parse_avc_config(data)
        for sps in cfg.sps:
            with contextlib.suppress(H264Error):
                h264.parse_sps(sps)
    with contextlib.suppress(H264Error):
        h264.nals_from_avcc(data[1:], (data[:1] or b"\x03")[0] % 4 + 1)
    h264.split_annexb(data)
    with contextlib.suppress(H264Error):
        h264.parse_sprop_parameter_sets(text(data))
    payloads = records(data)
    for nal in never_raises(h264.depacketize, [p or None for p in payloads]):
        if nal[0] & 0x1F == h264.NAL_SPS:
            with contextlib.suppress(H264Error):
                h264.parse_sps(nal)
    for p in payloads:
        never_raises(h264.payload_is_keyframe, p)


def _h265_allowed() -> tuple[type[BaseException], ...]:
    from onvifcam.media.h265 import H265Error

    return (H265Error,)


@target("h265", _h265_allowed)
def fuzz_h265(data: bytes) -> None:
    """H.265 (media/h265.py): SPS, hvcC, sprop-vps/sps/pps, and the RFC 7798 depacketiser
    and keyframe test (never raise) on 2-byte-length records."""
    from onvifcam.media import h265

    H265Error = h265.H265Error
    with contextlib.suppress(H265Error):
        info = h265.parse_sps(data)
        if info.width <= 0 or info.height <= 0:
            raise ContractViolation(f"SPS gave {info.width}x{info.height}")
    with contextlib.suppress(H265Error):
        cfg = h265.parse_hevc_config(data)
        for sps in cfg.sps:
            with contextlib.suppress(H265Error):
                h265.parse_sps(sps)
    with contextlib.suppress(H265Error):
        vps, _, rest = text(data).partition(";")
        sps, _, pps = rest.partition(";")
        h265.parse_sprop({"sprop-vps": vps, "sprop-sps": sps, "SPROP-PPS": pps})
    payloads = records(data)
    for nal in never_raises(h265.depacketize, [p or None for p in payloads]):
        if len(nal) > 2 and h265.nal_type(nal) == h265.NAL_SPS:
            with contextlib.suppress(H265Error):
                h265.parse_sps(nal)
    for p in payloads:
        never_raises(h265.payload_is_keyframe, p)


def _aac_allowed() -> tuple[type[BaseException], ...]:
    from onvifcam.media.aac import AacError

    return (AacError,)


@target("aac", _aac_allowed)
def fuzz_aac(data: bytes) -> None:
    """AAC (media/aac.py): AudioSpecificConfig, ADTS streams and RFC 3640 payloads (the
    first byte picks sizelength/indexlength for the payload)."""
    from onvifcam.media import aac

    with contextlib.suppress(aac.AacError):
        cfg = aac.parse_audio_specific_config(data)
        if cfg.sample_rate <= 0:
            raise ContractViolation(f"sample rate {cfg.sample_rate}")
    with contextlib.suppress(aac.AacError):
        aac.adts_to_raw(data)
    if data:
        ctl = data[0]
        with contextlib.suppress(aac.AacError):
            aac.depacketize(data[1:], 13 if ctl & 0x80 else 1 + (ctl & 0x0F), (ctl >> 4) & 7)


def _handshake_allowed() -> tuple[type[BaseException], ...]:
    from onvifcam.rtmp.handshake import HandshakeError

    return (HandshakeError,)


@target("rtmp-handshake", _handshake_allowed, max_len=4096)
def fuzz_rtmp_handshake(data: bytes) -> None:
    """RTMP handshake (rtmp/handshake.py): C0+C1+C2 into ServerHandshake in pieces, S0..S2
    into ClientHandshake, and the C1 digest finder. Byte 0: piece size / 16."""
    from onvifcam.rtmp import handshake as hs

    if not data:
        return
    step = data[0] * 16
    body = data[1:]
    hs.find_digest(body[1 : 1 + hs.PACKET_SIZE], hs.PLAYER_KEY_SHORT)
    with contextlib.suppress(hs.HandshakeError):
        server = hs.ServerHandshake()
        fed = 0
        for piece in pieces(body, step):
            reply, rest = server.feed(piece)
            fed += len(piece)
            if reply and len(reply) != 1 + 2 * hs.PACKET_SIZE:
                raise ContractViolation(f"S0+S1+S2 of {len(reply)} bytes")
            if server.done:
                if rest != body[1 + 2 * hs.PACKET_SIZE : fed]:
                    raise ContractViolation("bytes after C2 were not handed back")
                break
    client = hs.ClientHandshake(digest=bool(data[0] & 1))
    client.start()
    with contextlib.suppress(hs.HandshakeError):
        for piece in pieces(body, step):
            client.feed(piece)


def _chunk_allowed() -> tuple[type[BaseException], ...]:
    from onvifcam.rtmp.amf0 import AmfError
    from onvifcam.rtmp.chunk import ChunkError

    return (ChunkError, AmfError)


@target("rtmp-chunk", _chunk_allowed, max_len=16384)
def fuzz_rtmp_chunk(data: bytes) -> None:
    """The RTMP chunk stream after the handshake (rtmp/chunk.py ChunkParser), in pieces,
    with the completed messages handled as the server does: AMF0 commands and data
    decoded, onMetaData, audio and video into FlvIngest. Byte 0: piece size (0 = one
    feed); bit 0 of byte 1 selects tiny limits."""
    from onvifcam.rtmp import amf0
    from onvifcam.rtmp.chunk import ChunkParser

    if len(data) < 2:
        return
    small = data[1] & 1
    parser = (
        ChunkParser(max_message_size=4096, max_chunk_streams=4, max_buffered=8192)
        if small
        else ChunkParser()
    )
    ingest = _ingest()
    for piece in pieces(data[2:], data[0]):
        for msg in parser.feed(piece):
            if msg.type_id == 9:
                never_raises(ingest.video_message, msg.timestamp, msg.payload)
            elif msg.type_id == 8:
                never_raises(ingest.audio_message, msg.timestamp, msg.payload)
            elif msg.type_id in (15, 17, 18, 20):
                payload = msg.payload
                if msg.type_id in (15, 17) and payload[:1] == b"\x00":
                    payload = payload[1:]
                values = amf0.decode(payload)
                _metadata(ingest, values)


def _amf0_allowed() -> tuple[type[BaseException], ...]:
    from onvifcam.rtmp.amf0 import AmfError

    return (AmfError,)


@target("amf0", _amf0_allowed)
def fuzz_amf0(data: bytes) -> None:
    """AMF0 values (rtmp/amf0.py decode); what was decoded must encode again (AmfError
    allowed there only for values the encoder bounds: depth, cyclic references)."""
    from onvifcam.rtmp import amf0

    values = amf0.decode(data)
    with contextlib.suppress(amf0.AmfError):
        amf0.encode(*values)


def _flv_allowed() -> tuple[type[BaseException], ...]:
    from onvifcam.rtmp.amf0 import AmfError
    from onvifcam.rtmp.flv import FlvError

    return (FlvError, AmfError)


class _Refused(Exception):
    """on_publish refusing the publisher (the server raises PublishRefused)."""


def _ingest() -> Any:
    """A FlvIngest whose callbacks check what it produces as the RTMP server would use it."""
    from onvifcam.media import rtp
    from onvifcam.media.sdp import SdpError, SessionDescription
    from onvifcam.rtmp.flv import FlvIngest

    def on_publish(session: SessionDescription) -> None:
        try:  # the one SDP writer's text must parse back, as readers will parse it
            SessionDescription.parse(session.serialize())
        except SdpError as exc:
            raise ContractViolation(f"FlvIngest made an SDP that does not parse: {exc}") from exc

    def on_packet(track: int, packet: bytes) -> None:
        try:
            rtp.parse(packet)
        except rtp.RtpError as exc:
            raise ContractViolation(f"FlvIngest made a bad RTP packet: {exc}") from exc

    return FlvIngest(on_publish, on_packet, audio_only_after=4)


def _metadata(ingest: Any, values: list[Any]) -> None:
    """The RTMP server's onMetaData handling (rtmp/server.py _data)."""
    if values and values[0] == "@setDataFrame":
        values = values[1:]
    if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
        meta = {
            k: v
            for k, v in values[1].items()
            if isinstance(v, str | int | float | bool) and len(k) <= 64
        }
        never_raises(ingest.set_metadata, meta)


@target("flv", _flv_allowed, max_len=8192)
def fuzz_flv(data: bytes) -> None:
    """FLV tag bodies into FlvIngest (rtmp/flv.py), which never raises, with its SDP and
    RTP checked; plus parse_video/parse_audio and read_file on the raw bytes.

    Records (2-byte length): first byte 0 video, 1 audio, 2 AMF0 onMetaData, 3 toggles
    lazy packetising; then a 3-byte timestamp and the tag body.
    """
    from onvifcam.rtmp import amf0, flv

    with contextlib.suppress(flv.FlvError):
        flv.parse_video(data)
    with contextlib.suppress(flv.FlvError):
        flv.parse_audio(data)
    with contextlib.suppress(flv.FlvError):
        for _tag in flv.read_file(data):
            pass
    ingest = _ingest()
    readers = [False]
    for rec in records(data):
        if len(rec) < 4:
            continue
        kind = rec[0] & 3
        ts = int.from_bytes(rec[1:4], "big")
        body = rec[4:]
        if kind == 0:
            never_raises(ingest.video_message, ts, body)
        elif kind == 1:
            never_raises(ingest.audio_message, ts, body)
        elif kind == 2:
            with contextlib.suppress(amf0.AmfError):
                _metadata(ingest, amf0.decode(body))
        else:
            readers[0] = not readers[0]
            ingest.packetizer.needed = lambda: readers[0]
    if ingest.published:
        never_raises(lambda: ingest.packetizer.configure(ingest.track_specs()).serialize())


def _soap_allowed() -> tuple[type[BaseException], ...]:
    from onvifcam.onvif.soap import Fault

    return (Fault,)


SOAP_CLOCK = 1_700_000_000.0  # the camera clock in the harness: 2023-11-14T22:13:20Z


class _Captured(logging.Handler):
    """Collects the records a catch-all ``log.exception`` writes."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@functools.cache
def _soap_world() -> tuple[Any, Any, Any]:
    """A Dispatcher with stub operations of each access class (answering an empty
    response), and a camera with an administrator (admin/secret) and a user
    (viewer/viewpw), on a fixed clock."""
    from lxml import etree

    from onvifcam.cameras import USER, CameraRegistry, User
    from onvifcam.config import from_dict
    from onvifcam.media.stream import StreamRegistry
    from onvifcam.onvif import soap
    from onvifcam.rtsp.auth import Authenticator
    from onvifcam.state import StateStore

    tmp = tempfile.mkdtemp(prefix="onvifcam-fuzz-")
    import atexit

    atexit.register(shutil.rmtree, tmp, True)
    cfg = from_dict(
        {
            "server": {"state_dir": tmp},
            "cameras": [
                {"name": "Fuzz", "path": "fuzz", "username": "admin", "password": "secret"}
            ],
        }
    )
    streams = StreamRegistry(gop_cache_bytes=1 << 16, media_timeout=15, max_streams=4)
    reg = CameraRegistry(cfg, StateStore(Path(tmp)), streams)
    reg.load()
    cam = reg.cameras["Fuzz"]
    cam.create_users([User("viewer", "viewpw", USER)])
    cam.now = lambda: SOAP_CLOCK  # type: ignore[method-assign]
    table = soap.OperationTable()

    def answer(_ctx: Any, body: Any) -> Any:
        return etree.Element(f"{{{soap.NS_TDS}}}{etree.QName(body).localname}Response")

    for ns, name, access in (
        (soap.NS_TDS, "GetSystemDateAndTime", soap.PRE_AUTH),
        (soap.NS_TDS, "GetCapabilities", soap.PRE_AUTH),
        (soap.NS_TDS, "GetServices", soap.PRE_AUTH),
        (soap.NS_TDS, "GetHostname", soap.READ_SYSTEM),
        (soap.NS_TDS, "GetDeviceInformation", soap.READ_SYSTEM),
        (soap.NS_TDS, "GetScopes", soap.READ_SYSTEM),
        (soap.NS_TDS, "SetHostname", soap.WRITE_SYSTEM),
        (soap.NS_TRT, "GetProfiles", soap.READ_MEDIA),
        (soap.NS_TRT, "GetStreamUri", soap.READ_MEDIA),
    ):
        table.op(ns, name, access)(answer)
    digest = Authenticator("onvifcam", _AUTH_SECRET, clock=lambda: SOAP_CLOCK)
    disp = soap.Dispatcher(table, clock_skew=300, digest=digest)

    def make_context(user: Any, soap_ns: str) -> Any:
        return soap.Context(
            camera=cam,
            user=user,
            soap_ns=soap_ns,
            xaddr=lambda s: f"http://127.0.0.1:8080/onvif/{s}_service",
            stream_uri=lambda p, scheme: f"{scheme}://127.0.0.1:8554/{p}",
            snapshot_uri=lambda t: f"http://127.0.0.1:8080/onvif/snapshot?profile={t}",
        )

    return disp, cam, make_context


@target("soap", _soap_allowed, max_len=8192)
def fuzz_soap(data: bytes) -> None:
    """ONVIF SOAP requests (onvif/soap.py): the envelope parse, WS-Security UsernameToken
    and HTTP Digest/Basic checks through Dispatcher.dispatch, which never raises and must
    not hit its internal-error catch-all. An optional first line ``Authorization: ...``
    is the HTTP header."""
    from onvifcam.onvif import soap

    disp, cam, make_context = _soap_world()
    authorization = None
    body = data
    if data.startswith(b"Authorization: "):
        line, _, body = data.partition(b"\n")
        authorization = text(line[len(b"Authorization: ") :]).strip()
    with contextlib.suppress(soap.Fault):
        soap.parse(body)
    disp._nonces.pop(cam.key, None)  # replayed nonces would otherwise depend on input order
    captured = _Captured()
    log = logging.getLogger(soap.__name__)
    log.addHandler(captured)
    try:
        resp = never_raises(
            disp.dispatch,
            body,
            make_context,
            cam,
            authorization=authorization,
            uri="/onvif/device_service",
        )
    finally:
        log.removeHandler(captured)
    if captured.records:
        exc_info = captured.records[0].exc_info
        assert exc_info is not None and exc_info[1] is not None
        raise ContractViolation(f"dispatch hit its catch-all: {exc_info[1]!r}") from exc_info[1]
    if resp.status not in (200, 400, 401, 500) or not resp.body.startswith(b"<?xml"):
        raise ContractViolation(f"dispatch answered {resp.status} {resp.body[:60]!r}")


def _wsd_allowed() -> tuple[type[BaseException], ...]:
    return ()


# the Ignored detail wsdiscovery.parse's defensive catch-all writes: "TypeError: ..."
_CAUGHT = re.compile(r"[A-Z][A-Za-z0-9_]*(?:Error|Exception): ")


@functools.cache
def _responder() -> Any:
    import random

    from onvifcam.discovery import wsdiscovery as wsd

    r = wsd.Responder(instance_id=1, rng=random.Random(1), rate=1e9, burst=1 << 30)
    r.update(
        [
            wsd.Target(
                key="cam",
                epr="urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8",
                scopes=(
                    "onvif://www.onvif.org/Profile/Streaming",
                    "onvif://www.onvif.org/name/Fuzz%20Cam",
                    "onvif://www.onvif.org/hardware/onvifcam-v1",
                ),
                xaddr="http://{host}:8080/onvif/device_service",
            )
        ]
    )
    return r


@target("wsdiscovery", _wsd_allowed, max_len=8192)
def fuzz_wsdiscovery(data: bytes) -> None:
    """WS-Discovery datagrams (discovery/wsdiscovery.py): parse never raises and must not
    need its defensive catch-all; Responder.receive answers Probes and Resolves and the
    replies it builds must be valid datagrams."""
    from onvifcam.discovery import wsdiscovery as wsd

    msg = never_raises(wsd.parse, data)
    if isinstance(msg, wsd.Ignored) and _CAUGHT.match(msg.detail):
        raise ContractViolation(f"parse needed its catch-all: {msg.detail}")
    responder = _responder()
    responder._seen.clear()  # duplicate suppression would depend on the order of inputs
    replies = never_raises(
        responder.receive, data, ("127.0.0.1", 40000), "127.0.0.1", bool(len(data) & 1), 0.0
    )
    for reply in replies:
        out = never_raises(lambda r=reply: r.data)
        back = wsd.parse(out)
        if not isinstance(back, wsd.ProbeMatches | wsd.ResolveMatches | wsd.SoapFault):
            raise ContractViolation(f"our reply does not parse: {back!r}")


def _mpegts_allowed() -> tuple[type[BaseException], ...]:
    from onvifcam.media.mpegts import TsError

    return (TsError,)


@target("mpegts", _mpegts_allowed, max_len=16384)
def fuzz_mpegts(data: bytes) -> None:
    """MPEG-TS (media/mpegts.py TsDemuxer) fed in pieces, then flushed: only TsError,
    which is final; flush never raises; buffered stays within the limits' bound.

    Byte 0: bit 0 tiny limits, bits 1-7 piece size in 47-byte units (0 = one feed).
    """
    from onvifcam.media import mpegts as m

    if not data:
        return
    ctl = data[0]
    limits = m.Limits()
    if ctl & 1:
        limits = m.Limits(max_pes_size=1024, max_buffered=1500, max_pids=2, max_units=8,
                          max_section_size=200, max_sync_search=600)  # fmt: skip
    bound = 3 * m.PACKET_SIZE + limits.max_buffered + 2 * (limits.max_section_size + 184)
    bound += limits.max_pids * 8191  # one ADTS frame carried per stream
    d = m.TsDemuxer(limits)
    try:
        for piece in pieces(data[1:], (ctl >> 1) * 47):
            d.feed(piece)
            if d.buffered > bound:
                raise ContractViolation(f"TsDemuxer holds {d.buffered} bytes (bound {bound})")
    except m.TsError:
        try:
            d.feed(b"\x47" * 188)
        except m.TsError:
            return
        raise ContractViolation("TsDemuxer accepted input after an error") from None
    never_raises(d.flush)
    if d.buffered > bound:
        raise ContractViolation(f"TsDemuxer holds {d.buffered} bytes after flush")


def _srt_allowed() -> tuple[type[BaseException], ...]:
    from onvifcam.srt.handshake import Rejection
    from onvifcam.srt.packet import PacketError

    return (PacketError, Rejection)


@target("srt", _srt_allowed, max_len=16384)
def fuzz_srt(data: bytes) -> None:
    """SRT datagrams (srt/packet.py, handshake.py, receiver.py): parse raises only
    PacketError; a handshake goes to the stateless Responder (PacketError or Rejection);
    every other packet goes to one Receiver, whose tick never raises and whose buffer
    stays within its bound while time advances 10 ms per datagram.

    The input is length-prefixed records, one datagram each.
    """
    from onvifcam.srt import handshake as h
    from onvifcam.srt import packet as p
    from onvifcam.srt.receiver import Receiver, ReceiverSettings

    settings = ReceiverSettings(buffer_packets=64, max_message_packets=8)
    rx = Receiver(socket_id=1, peer_id=2, isn=1000, latency=0.12, now=0.0,
                  peer_timestamp=0, settings=settings)  # fmt: skip
    responder = _srt_responder()
    now = 0.0
    for datagram in records(data):
        now += 0.01
        try:
            pkt = p.parse(datagram)
        except p.PacketError:
            continue
        if isinstance(pkt, p.ControlPacket) and pkt.type == p.ControlType.HANDSHAKE:
            try:
                hs = p.Handshake.parse(pkt.cif)
                never_raises(responder.induction, hs, "127.0.0.1", 4000, now)
                responder.conclusion(hs, pkt.timestamp, "127.0.0.1", 4000)
            except (p.PacketError, h.Rejection):
                pass
            continue
        never_raises(rx.on_packet, pkt, now)
        never_raises(rx.tick, now)
        never_raises(rx.take)
        if len(rx.buf) > settings.buffer_packets + 1:
            raise ContractViolation(f"receiver holds {len(rx.buf)} packets")


_SRT_RESPONDER: Any = None


def _srt_responder() -> Any:
    global _SRT_RESPONDER
    if _SRT_RESPONDER is None:
        from onvifcam.srt.handshake import Responder

        _SRT_RESPONDER = Responder(b"k" * 16, listener_id=7, pbkeylen=16)
    return _SRT_RESPONDER


# --------------------------------------------------------------------------- seeds


class _Recorder:
    """A TCP relay on 127.0.0.1 that records both directions of every connection."""

    def __init__(self, port: int) -> None:
        import socket
        import threading

        self._to = port
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.conns: list[tuple[bytearray, bytearray]] = []  # (client->server, server->client)
        self._threading = threading
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._to))
            rec = (bytearray(), bytearray())
            self.conns.append(rec)
            for src, dst, buf in ((client, upstream, rec[0]), (upstream, client, rec[1])):
                self._threading.Thread(target=self._pump, args=(src, dst, buf), daemon=True).start()

    @staticmethod
    def _pump(src: Any, dst: Any, buf: bytearray) -> None:
        import socket

        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                buf += data
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def c2s(self, i: int = 0) -> bytes:
        """What the client of connection ``i`` sent."""
        return bytes(self.conns[i][0]) if i < len(self.conns) else b""

    def s2c(self, i: int = 0) -> bytes:
        """What the server answered on connection ``i``."""
        return bytes(self.conns[i][1]) if i < len(self.conns) else b""

    def close(self) -> None:
        """Stop accepting."""
        self._sock.close()


_SEED_CONFIG = """
[paths."secure"]
publish_user = "pub"
publish_password = "pubpw"

[[cameras]]
name = "Seed"
path = "live/h264"
username = "admin"
password = "secret"
onvif_port = {onvif_port}
"""


_RTMP_PUSH = (
    "-re -f lavfi -i testsrc2=size=160x120:rate=25 -f lavfi -i sine=frequency=440:sample_rate=44100"
    " -frames:v 50 -c:v libx264 -preset ultrafast -tune zerolatency -g 25 -pix_fmt yuv420p"
    " -c:a aac -b:a 64k -f flv"
)
_FLV_FILE = (
    "-f lavfi -i testsrc2=size=96x64:rate=10 -frames:v 3 -c:v libx264 -preset ultrafast"
    " -pix_fmt yuv420p -f flv pipe:1"
)


def _ffmpeg(*args: str, timeout: float = 60) -> bytes:
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", *args]
    return subprocess.run(cmd, capture_output=True, timeout=timeout, check=True).stdout


def _rtsp_events(data: bytes, role: str) -> list[Any]:
    from onvifcam.rtsp import message as m

    parser = m.Parser(m.Limits(max_body=1 << 20), role=role)
    try:
        return parser.feed(data)
    except m.ParseError as exc:
        return exc.events


def _rtmp_messages(data: bytes) -> list[Any]:
    from onvifcam.rtmp.chunk import ChunkError, ChunkParser

    parser = ChunkParser()
    out: list[Any] = []
    with contextlib.suppress(ChunkError):
        for piece in pieces(data, 4096):
            out += parser.feed(piece)
    return out


def _first_au(frames: list[Any], channel: int, limit: int = 4096) -> list[bytes]:
    """RTP payloads of the first access unit (up to the marker) on ``channel``."""
    from onvifcam.media import rtp

    out: list[bytes] = []
    for f in frames:
        if f.channel != channel:
            continue
        h = rtp.parse(f.data)
        out.append(f.data[h.payload_start : h.payload_end])
        if h.marker or sum(len(p) + 2 for p in out) > limit:
            break
    return out


async def _zeep_requests(port: int) -> list[bytes]:
    """The request bodies onvif-zeep-async sends for a typical NVR start-up."""
    import onvif
    from onvif import ONVIFCamera
    from onvif.zeep_aiohttp import AIOHTTPTransport

    sent: list[bytes] = []
    orig = AIOHTTPTransport._post_internal

    async def post(self: Any, address: str, message: Any, headers: Any) -> Any:
        sent.append(message if isinstance(message, bytes) else str(message).encode())
        return await orig(self, address, message, headers)

    AIOHTTPTransport._post_internal = post  # type: ignore[method-assign]
    try:
        wsdl = f"{os.path.dirname(onvif.__file__)}/wsdl/"
        cam = ONVIFCamera("127.0.0.1", port, "admin", "secret", wsdl, no_cache=True)
        dm = await cam.create_devicemgmt_service()
        await dm.authless_GetSystemDateAndTime()
        await cam.update_xaddrs()
        dm = await cam.create_devicemgmt_service()
        await dm.GetDeviceInformation()
        await dm.GetScopes()
        media = await cam.create_media_service()
        profiles = await media.GetProfiles()
        req = media.create_type("GetStreamUri")
        req.ProfileToken = profiles[0].token
        req.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
        await media.GetStreamUri(req)
        await cam.close()
    finally:
        AIOHTTPTransport._post_internal = orig  # type: ignore[method-assign]
    return sent


def _soap_seeds(zeep: list[bytes]) -> dict[str, bytes]:
    import base64
    import datetime as dt

    from onvifcam.rtsp.auth import digest_response, parse_auth_header
    from tests.onvif_schema import envelope, security_header

    created = dt.datetime.fromtimestamp(SOAP_CLOCK - 5, dt.UTC).isoformat().replace("+00:00", "Z")
    tds = 'xmlns="http://www.onvif.org/ver10/device/wsdl"'
    disp, _cam, _ctx = _soap_world()
    challenge = next(v for _k, v in disp.digest.challenge_headers() if v.startswith("Digest"))
    params = parse_auth_header(challenge)[1]
    http_digest = digest_response("POST", "/onvif/device_service", "admin", "secret", params)
    basic = "Basic " + base64.b64encode(b"viewer:viewpw").decode()
    out = {f"zeep-{i}": body for i, body in enumerate(zeep)}
    out |= {
        "pre-auth": envelope(f"<GetSystemDateAndTime {tds}/>"),
        "wsse-digest": envelope(
            f"<GetHostname {tds}/>", security_header("admin", "secret", created=created)
        ),
        "wsse-text-user": envelope(
            f"<SetHostname {tds}><Name>x</Name></SetHostname>",
            security_header("viewer", "viewpw", digest=False, created=created[:19]),
        ),
        "soap11": (
            b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body>'
            b"<GetHostname " + tds.encode() + b"/></e:Body></e:Envelope>"
        ),
        "http-digest": f"Authorization: {http_digest}\n".encode()
        + envelope(f"<GetHostname {tds}/>"),
        "http-basic": f"Authorization: {basic}\n".encode() + envelope(f"<GetHostname {tds}/>"),
    }
    return out


def _auth_seeds(captured: list[str]) -> dict[str, bytes]:
    import base64

    from onvifcam.rtsp.auth import digest_response, parse_auth_header

    uri = "rtsp://127.0.0.1:8554/secure"
    out = {f"ffmpeg-{i}": f"ANNOUNCE {uri}\n{v}".encode() for i, v in enumerate(captured)}
    for auth in _authenticators():
        for n, (_k, challenge) in enumerate(auth.challenge_headers(stale=True)):
            if not challenge.startswith("Digest"):
                continue
            params = parse_auth_header(challenge)[1]
            alg = params["algorithm"].lower()
            out[f"digest-{alg}"] = f"DESCRIBE {uri}\n".encode() + digest_response(
                "DESCRIBE", uri, "admin", "secret", params
            ).encode("utf-8")
            no_qop = {k: v for k, v in params.items() if k != "qop"}
            out[f"digest-{alg}-rfc2069-{n}"] = f"SETUP {uri}\n".encode() + digest_response(
                "SETUP", uri, "user", "p\u00e4ss:w", no_qop
            ).encode("utf-8")
            sess = {**params, "algorithm": params["algorithm"] + "-sess"}
            out[f"digest-{alg}-sess"] = f"PLAY {uri}\n".encode() + digest_response(
                "PLAY", uri, "admin", "secret", sess
            ).encode("utf-8")
    out["basic"] = f"OPTIONS {uri}\nBasic ".encode() + base64.b64encode(b"admin:secret")
    return out


def _wsd_seeds() -> dict[str, bytes]:
    from wsdiscovery.actions import constructProbe, constructResolve
    from wsdiscovery.message import createSOAPMessage
    from wsdiscovery.qname import QName as PkgQName
    from wsdiscovery.scope import Scope

    from onvifcam.discovery import wsdiscovery as wsd

    responder = _responder()
    t = next(iter(responder.targets.values()))
    probe = wsd.build_probe(message_id="urn:uuid:00000000-0000-4000-8000-000000000001")
    replies = responder.receive(probe, ("127.0.0.1", 40000), "127.0.0.1", False, 0.0)
    nvt = PkgQName("http://www.onvif.org/ver10/network/wsdl", "NetworkVideoTransmitter", "dn")
    pkg_probe = createSOAPMessage(
        constructProbe([nvt], [Scope("onvif://www.onvif.org/Profile/Streaming")])
    )
    return {
        "probe": probe,
        "probe-scopes": wsd.build_probe(
            (wsd.NVT, wsd.DEVICE),
            ("onvif://www.onvif.org/name/Fuzz%20Cam", "onvif://www.onvif.org/Profile"),
            wsd.MATCH_RFC3986,
        ),
        "probe-strcmp0": wsd.build_probe((), (t.scopes[0],), wsd.MATCH_STRCMP0),
        "probe-uuid-rule": wsd.build_probe((), (t.epr,), wsd.MATCH_UUID),
        "probe-ldap-rule": wsd.build_probe((), ("ldap:///ou=x",), wsd.MATCH_LDAP),
        "resolve": wsd.build_resolve(t.epr),
        "probe-matches": replies[0].data if replies else b"",
        "hello": responder.hello(t, "127.0.0.1"),
        "bye": responder.bye(t),
        "python-wsdiscovery-probe": pkg_probe.encode(),
        "python-wsdiscovery-resolve": createSOAPMessage(constructResolve(t.epr)).encode(),
    }


def make_seeds(out_dir: Path) -> None:
    """Capture real peers (ffmpeg RTSP and RTMP publishers and an RTSP reader, the
    onvif-zeep-async client, the python WSDiscovery package) talking to a running onvifcam,
    and write the seed corpora under ``out_dir/<target>/``."""
    import asyncio

    from onvifcam.media import h264, h265, rtcp, rtp
    from onvifcam.media.sdp import SessionDescription
    from onvifcam.rtmp import amf0
    from tests.helpers import ServerProc, ffmpeg_push, free_port, running, wait_online
    from tests.unit.videotools import mp4_config_record

    onvif_port = free_port()
    srv = ServerProc(config=_SEED_CONFIG.format(onvif_port=onvif_port)).start()
    seeds: dict[str, dict[str, bytes]] = {name: {} for name in TARGETS}
    try:
        rtsp_port = srv.rtsp_port
        push, read, auth, hevc = (_Recorder(rtsp_port) for _ in range(4))
        rtmp = _Recorder(int(srv.ports["rtmp_port"]))
        base = "rtsp://127.0.0.1:{}/{}"
        pub = ffmpeg_push(base.format(push.port, "live/h264"), frames=100, size="160x120", gop=25)
        with running(pub):
            wait_online(srv.url("live/h264"))
            _ffmpeg(
                *f"-rtsp_transport tcp -i {base.format(read.port, 'live/h264')} -t 1".split(),
                *"-f null -".split(),
            )
            zeep = asyncio.run(_zeep_requests(onvif_port))
        url = f"rtsp://pub:pubpw@127.0.0.1:{auth.port}/secure"
        with running(ffmpeg_push(url, frames=10, audio=False, realtime=False)) as p:
            p.wait(30)
        url = base.format(hevc.port, "live/h265")
        x265 = ["-x265-params", "log-level=error"]
        h265_push = ffmpeg_push(
            url, frames=10, size="160x120", audio=False, realtime=False, codec="libx265", extra=x265
        )
        with running(h265_push) as p:
            p.wait(30)
        _ffmpeg(*_RTMP_PUSH.split(), f"rtmp://127.0.0.1:{rtmp.port}/live/rtmpcam")
        adts = _ffmpeg(*"-f lavfi -i sine=sample_rate=48000 -t 0.1 -c:a aac -f adts pipe:1".split())
        flv_file = _ffmpeg(*_FLV_FILE.split())
        for r in (push, read, auth, hevc, rtmp):
            r.close()
    finally:
        srv.stop(check=False)

    # --- RTSP: the byte streams as they are, in one feed and in pieces, both roles
    s = seeds["rtsp-message"]
    s["push-record"] = b"\x00" + push.c2s()[:8000]
    s["push-record-pieces7"] = bytes([7 << 2]) + push.c2s()[:4000]
    s["read-requests"] = b"\x00" + read.c2s()[:8000]
    s["read-replies-client"] = b"\x01" + read.s2c()[:8000]
    s["read-replies-pieces13-client"] = bytes([(13 << 2) | 1]) + read.s2c()[:4000]
    s["read-tiny-limits"] = b"\x02" + read.c2s()[:2000]
    s["push-replies-client"] = b"\x01" + push.s2c()[:4000]
    s["auth-401-retry"] = b"\x00" + b"".join(auth.c2s(i) for i in range(len(auth.conns)))[:8000]
    s["h265-push"] = b"\x00" + hevc.c2s()[:8000]
    pushed = _rtsp_events(push.c2s(), "server")
    replies = _rtsp_events(read.s2c(), "client")
    h265_events = _rtsp_events(hevc.c2s(), "server")
    auth_events = [e for i in range(len(auth.conns)) for e in _rtsp_events(auth.c2s(i), "server")]
    frames = [e for e in pushed if hasattr(e, "channel")]
    read_frames = [e for e in replies if hasattr(e, "channel")]
    h265_frames = [e for e in h265_events if hasattr(e, "channel")]

    # --- SDP
    sdps = {
        "announce-h264-aac": next(e.body for e in pushed if getattr(e, "method", "") == "ANNOUNCE"),
        "announce-h265": next(
            e.body for e in h265_events if getattr(e, "method", "") == "ANNOUNCE"
        ),
        "describe-reply": next(e.body for e in replies if getattr(e, "body", b"")),
    }
    seeds["sdp"] = sdps

    # --- RTP / RTCP packets
    s = seeds["rtp"]
    for label, fs in (("video", frames), ("relay", read_frames), ("h265", h265_frames)):
        for i, f in enumerate(f for f in fs if f.channel % 2 == 0):
            if i in (0, 1, 2, 40):
                s[f"{label}-{f.channel}-{i}"] = f.data
    audio = [f for f in frames if f.channel == 2]
    if audio:
        s["audio-aac"] = audio[0].data
    s = seeds["rtcp"]
    for label, fs in (("publisher", frames), ("relay", read_frames)):
        for i, f in enumerate(f for f in fs if f.channel % 2 == 1):
            if i < 2:
                s[f"{label}-sr-{f.channel}-{i}"] = f.data
    for i, f in enumerate(e for e in _rtsp_events(read.c2s(), "server") if hasattr(e, "channel")):
        if i < 2:
            s[f"reader-rr-{i}"] = f.data
    s["built-sr-rr-bye"] = (
        rtcp.build_sender_report(rtcp.SenderReport(1, rtcp.ntp_from_unix(SOAP_CLOCK), 9, 1, 2), "x")
        + rtcp.build_receiver_report(2, [rtcp.ReportBlock(1, 3, -4, 5, 6, 7, 8)])
        + rtcp.build_bye(3)
    )

    # --- H.264 / H.265 parameter sets and payloads
    def sprop(sdp_body: bytes) -> dict[str, str]:
        md = SessionDescription.parse(sdp_body).media[0]
        return md.fmtp.get(md.payload_type, {})

    s = seeds["h264"]
    sets = h264.parse_sprop_parameter_sets(sprop(sdps["announce-h264-aac"])["sprop-parameter-sets"])
    s["sps"], s["pps"] = sets[0], sets[1]
    s["sprop-text"] = sprop(sdps["announce-h264-aac"])["sprop-parameter-sets"].encode()
    s["rtp-au-records"] = join_records(_first_au(frames, 0))
    s["annexb"] = h264.to_annexb([*sets, *_first_au(frames, 0)[:1]])[:4096]
    s["avcc-mp4"] = mp4_config_record("libx264")[0]
    s = seeds["h265"]
    fmtp = sprop(sdps["announce-h265"])
    vps, sps, pps = (
        h265.parse_sprop({f"sprop-{k}": fmtp[f"sprop-{k}"]}) for k in ("vps", "sps", "pps")
    )
    s["vps"], s["sps"], s["pps"] = vps[0], sps[0], pps[0]
    s["sprop-text"] = ";".join(fmtp[f"sprop-{k}"] for k in ("vps", "sps", "pps")).encode()
    s["rtp-au-records"] = join_records(_first_au(h265_frames, 0))
    s["hvcc-mp4"] = mp4_config_record("libx265")[0]

    # --- RTMP
    raw = rtmp.c2s()
    hs_len = 1 + 2 * 1536
    seeds["rtmp-handshake"] = {
        "ffmpeg-c0c1c2": b"\x00" + raw[: hs_len + 64],
        "ffmpeg-c0c1c2-pieces256": b"\x10" + raw[: hs_len + 64],
        "ffmpeg-c0c1c2-client-digest": b"\x01" + raw[:hs_len],
    }
    chunks = raw[hs_len:]
    seeds["rtmp-chunk"] = {
        "ffmpeg-publish": b"\x00\x00" + chunks[:16000],
        "ffmpeg-publish-pieces61": b"\x3d\x00" + chunks[:8000],
        "ffmpeg-publish-tiny-limits": b"\x00\x01" + chunks[:6000],
    }
    msgs = _rtmp_messages(chunks)
    s = seeds["amf0"]
    for i, m in enumerate(x for x in msgs if x.type_id in (18, 20)):
        name = amf0.decode(m.payload)[0]
        s[f"{m.type_id}-{i}-{name}"[:40]] = m.payload
    s["built-every-type"] = amf0.encode(
        1.5,
        True,
        "s",
        "x" * 70000,
        None,
        amf0.UNDEFINED,
        {"a": [1, {"b": None}]},
        amf0.EcmaArray(k=1),
        amf0.Date(1.0, 0),
        amf0.XmlDocument("<a/>"),
        amf0.TypedObject("cls", {"p": 2}),
    )
    flv_records: list[bytes] = []
    for m in msgs:
        kind = {9: 0, 8: 1, 18: 2}.get(m.type_id)
        if kind is None:
            continue
        rec = bytes([kind]) + (m.timestamp & 0xFFFFFF).to_bytes(3, "big") + m.payload
        if sum(len(r) + 2 for r in flv_records) + len(rec) + 2 > 16000:
            break
        flv_records.append(rec)
    seeds["flv"] = {
        "ffmpeg-publish-records": join_records(flv_records),
        "ffmpeg-lazy-records": join_records([b"\x03\x00\x00\x00", *flv_records]),
        "ffmpeg-flv-file": flv_file[:8192],
    }
    video_cfg = next(m.payload for m in msgs if m.type_id == 9 and m.payload[1:2] == b"\x00")
    audio_cfg = next(m.payload for m in msgs if m.type_id == 8 and m.payload[1:2] == b"\x00")
    seeds["h264"]["avcc-rtmp"] = video_cfg[5:]

    # --- AAC
    s = seeds["aac"]
    s["asc-rtmp"] = audio_cfg[2:]
    announce = SessionDescription.parse(sdps["announce-h264-aac"])
    a = next(md for md in announce.media if md.media == "audio")
    s["asc-sdp"] = bytes.fromhex(a.fmtp[a.payload_type]["config"])
    s["adts"] = adts[:2048]
    if audio:
        h = rtp.parse(audio[0].data)
        s["rfc3640-payload"] = b"\xb0" + audio[0].data[h.payload_start : h.payload_end]

    # --- auth, SOAP, WS-Discovery
    captured = [
        v for e in auth_events if hasattr(e, "headers") for v in e.headers.get_all("Authorization")
    ]
    seeds["rtsp-auth"] = _auth_seeds(captured)
    seeds["soap"] = _soap_seeds(zeep)
    seeds["wsdiscovery"] = _wsd_seeds()
    seeds.update(_stream_seeds())
    _write_seeds(out_dir, seeds)


def _write_seeds(out_dir: Path, seeds: dict[str, dict[str, bytes]]) -> None:
    total = 0
    for name, files in seeds.items():
        d = out_dir / name
        if d.is_dir():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        for label, data in files.items():
            if not data:
                continue
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", label)
            (d / safe).write_bytes(data)
            total += len(data)
        print(f"{name:<15} {len(files):>3} seeds")
    print(f"{total} bytes of seeds in {out_dir}")


def _ts_file(path: Path, codec: str) -> bytes:
    """A short MPEG-TS from ffmpeg (video ``codec`` and AAC), as SRT encoders send."""
    extra = ["-x265-params", "log-level=error"] if codec == "libx265" else []
    _ffmpeg(
        *"-f lavfi -i testsrc2=size=160x120:rate=25 -f lavfi -i sine=frequency=440".split(),
        *f"-t 1 -c:v {codec} -g 10 -pix_fmt yuv420p".split(), *extra,
        *"-c:a aac -b:a 32k -f mpegts".split(), str(path),
    )  # fmt: skip
    return path.read_bytes()


class _UdpRecorder:
    """A UDP relay on 127.0.0.1 in front of ``port`` that records what the caller sends."""

    def __init__(self, port: int) -> None:
        import socket
        import threading

        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.front.settimeout(0.2)
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect(("127.0.0.1", port))
        self.back.settimeout(0.2)
        self.port = self.front.getsockname()[1]
        self.sent: list[bytes] = []
        self._stop = threading.Event()
        self._caller: Any = None
        for fn in (self._up, self._down):
            threading.Thread(target=fn, daemon=True).start()

    def _up(self) -> None:
        while not self._stop.is_set():
            try:
                data, self._caller = self.front.recvfrom(2048)
            except OSError:
                continue
            self.sent.append(data)
            with contextlib.suppress(OSError):
                self.back.send(data)

    def _down(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.back.recv(2048)
            except OSError:
                continue
            if self._caller is not None:
                with contextlib.suppress(OSError):
                    self.front.sendto(data, self._caller)

    def close(self) -> None:
        self._stop.set()
        time.sleep(0.3)
        self.front.close()
        self.back.close()


def _stream_seeds() -> dict[str, dict[str, bytes]]:
    """MPEG-TS from ffmpeg, and the SRT datagrams ffmpeg's libsrt caller sends to the real
    listener (tests/interop/srt_recorder.py), clear and encrypted."""
    seeds: dict[str, dict[str, bytes]] = {"mpegts": {}, "srt": {}}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for codec in ("libx264", "libx265"):
            ts = _ts_file(t / f"{codec}.ts", codec)
            seeds["mpegts"][f"ffmpeg-{codec}-one-feed"] = b"\x00" + ts[: 188 * 80]
            seeds["mpegts"][f"ffmpeg-{codec}-by-packet"] = b"\x08" + ts[188 * 10 : 188 * 60]
        cfg = t / "srt.toml"
        cfg.write_text(
            '[server]\nhost = "127.0.0.1"\n[srt]\nport = 0\n'
            '[paths."enc"]\nsrt_passphrase = "seedpassphrase1"\n'
        )
        (t / "rec").mkdir()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.interop.srt_recorder", str(cfg), str(t / "rec")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=str(ROOT),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            port = int(proc.stdout.readline().split("=")[1])
            for label, streamid, opts in (
                ("clear", "publish:seed", ""),
                ("encrypted", "publish:enc", "&passphrase=seedpassphrase1&pbkeylen=16"),
            ):
                relay = _UdpRecorder(port)
                url = f"srt://127.0.0.1:{relay.port}?streamid={streamid}&latency=120000{opts}"
                _ffmpeg("-re", "-i", str(t / "libx264.ts"), "-c", "copy", "-f", "mpegts", url)
                relay.close()
                grams = relay.sent
                seeds["srt"][f"ffmpeg-{label}-start"] = join_records(grams[:12])
                seeds["srt"][f"ffmpeg-{label}-middle"] = join_records(grams[20:30])
                seeds["srt"][f"ffmpeg-{label}-end"] = join_records(grams[-8:])
        finally:
            proc.terminate()
            proc.wait(10)
    return seeds


# --------------------------------------------------------------------------- running


def corpus_files(name: str) -> list[Path]:
    """Every committed seed and crash file of a target, sorted."""
    out: list[Path] = []
    for d in (CORPUS / name, CRASHES / name):
        if d.is_dir():
            out += sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
    return out


def replay(name: str, data: bytes) -> BaseException | None:
    """Run one input; return the unexpected exception, or None."""
    t = TARGETS[name]
    try:
        t.run(data)
    except t.allowed:
        return None
    except Exception as exc:
        return exc
    return None


def _signature(exc: BaseException) -> str:
    """Exception type plus the innermost onvifcam (else any) frame: one per distinct bug."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    frames = traceback.extract_tb(root.__traceback__)
    ours = [f for f in frames if "onvifcam" in f.filename and "fuzz.py" not in f.filename]
    f = (ours or frames or [None])[-1]
    where = f"{Path(f.filename).name}:{f.lineno}" if f is not None else "?"
    return f"{type(root).__name__}@{where}"


def _child(name: str, argv: list[str], stats_path: Path) -> None:
    """The fuzzing process of one target (libFuzzer exits when it is done)."""
    import atheris

    with atheris.instrument_imports(include=["onvifcam"]):
        import importlib

        for mod in MODULES:
            importlib.import_module(mod)
    # log lines of the parsers (bad input is logged once per event) are noise here
    quiet = logging.getLogger("onvifcam")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    t = TARGETS[name]
    allowed = t.allowed
    crash_dir = CRASHES / name
    seen: dict[str, int] = {}
    state = {"runs": 0, "unexpected": 0, "last": time.monotonic(), "start": time.monotonic()}

    def write_stats() -> None:
        stats_path.write_text(
            json.dumps(
                {
                    "runs": state["runs"],
                    "seconds": time.monotonic() - state["start"],
                    "unexpected": state["unexpected"],
                    "signatures": seen,
                }
            )
        )

    def one(data: bytes) -> None:
        state["runs"] += 1
        try:
            t.run(data)
        except allowed:
            pass
        except Exception as exc:
            state["unexpected"] += 1
            sig = _signature(exc)
            seen[sig] = seen.get(sig, 0) + 1
            if seen[sig] == 1:
                crash_dir.mkdir(parents=True, exist_ok=True)
                tag = re.sub(r"[^A-Za-z0-9_.-]", "_", sig)
                path = crash_dir / f"{tag}-{hashlib.sha1(data).hexdigest()[:12]}"
                path.write_bytes(data)
                print(f"\n=== {name}: unexpected {sig}, input saved to {path}", file=sys.stderr)
                traceback.print_exception(exc, file=sys.stderr)
            write_stats()
        now = time.monotonic()
        if now - state["last"] > 5:
            state["last"] = now
            write_stats()

    write_stats()
    atheris.Setup([sys.argv[0], *argv], one)
    atheris.Fuzz()


def _run_target(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fuzz one target in a child process; return its figures."""
    t = TARGETS[name]
    work = Path(args.work) / name
    work.mkdir(parents=True, exist_ok=True)
    (CRASHES / name).mkdir(parents=True, exist_ok=True)
    stats_path = work / "stats.json"
    stats_path.unlink(missing_ok=True)
    log_path = work / "libfuzzer.log"
    dirs = [str(work / "corpus")]
    (work / "corpus").mkdir(exist_ok=True)
    for d in (CORPUS / name, CRASHES / name):
        if d.is_dir() and any(d.iterdir()):
            dirs.append(str(d))
    fuzz_args = [
        f"-runs={args.runs}",
        f"-max_len={t.max_len}",
        "-timeout=20",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={CRASHES / name}/",
        *([f"-max_total_time={args.seconds}"] if args.seconds else []),
        *dirs,
    ]
    cmd = [sys.executable, __file__, "--child", name, "--stats", str(stats_path), "--", *fuzz_args]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.monotonic()
    with open(log_path, "w") as logf:
        proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    wall = time.monotonic() - start
    log_text = log_path.read_text(errors="replace")
    stats: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        stats = json.loads(stats_path.read_text())
    done = re.findall(r"Done (\d+) runs in (\d+) second", log_text)
    rate = re.findall(r"stat::average_exec_per_sec:\s+(\d+)", log_text)
    runs = int(done[-1][0]) if done else int(stats.get("runs", 0))
    result = {
        "target": name,
        "runs": runs,
        "seconds": round(wall, 1),
        "exec_per_s": int(rate[-1]) if rate else round(runs / wall),
        "unexpected": int(stats.get("unexpected", 0)),
        "signatures": stats.get("signatures", {}),
        "exit": proc.returncode,
        "log": str(log_path),
    }
    if proc.returncode != 0 and not done:
        # libFuzzer stopped on its own: a timeout, an out-of-memory or a hard crash
        result["unexpected"] += 1
        result["signatures"] = {**result["signatures"], f"libFuzzer exit {proc.returncode}": 1}
    return result


def _print_result(r: dict[str, Any]) -> None:
    line = (
        f"{r['target']:<15} inputs {r['runs']:>9}  {r['exec_per_s']:>6} exec/s  "
        f"{r['seconds']:>7.1f} s  unexpected exceptions: {r['unexpected']}"
    )
    print(line, flush=True)
    for sig, count in r["signatures"].items():
        print(f"{'':<15} {count:>6} x {sig}", flush=True)
    if r["unexpected"]:
        print(f"{'':<15} details: {r['log']}; inputs: {CRASHES / r['target']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--child" in argv:
        sep = argv.index("--") if "--" in argv else len(argv)
        own, rest = argv[:sep], argv[sep + 1 :]
        name = own[own.index("--child") + 1]
        stats = Path(own[own.index("--stats") + 1])
        _child(name, rest, stats)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--target", default="all", help="a target name, several (a,b) or 'all' (see --list)"
    )
    ap.add_argument("--runs", type=int, default=1_000_000, help="inputs per target")
    ap.add_argument("--seconds", type=int, default=0, help="time limit per target (0: none)")
    ap.add_argument(
        "--work",
        default=str(Path(tempfile.gettempdir()) / "onvifcam-fuzz"),
        help="where the growing corpus and libFuzzer logs go",
    )
    ap.add_argument("--json", help="also write the figures of every target to this file")
    ap.add_argument("--list", action="store_true", help="list the targets and exit")
    ap.add_argument(
        "--make-seeds", action="store_true", help="regenerate tests/fuzz_corpus from real peers"
    )
    args = ap.parse_args(argv)
    if args.list:
        for t in TARGETS.values():
            print(f"{t.name:<15} {len(corpus_files(t.name)):>3} files  {t.doc}")
        return 0
    if args.make_seeds:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))  # tests.helpers starts the server and ffmpeg
        if args.target in ("mpegts", "srt", "mpegts,srt", "srt,mpegts"):
            _write_seeds(CORPUS, _stream_seeds())  # without the slower capture of the rest
        else:
            make_seeds(CORPUS)
        return 0
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("fuzz.py: atheris is missing: pip install -e '.[fuzz]'", file=sys.stderr)
        return 2
    names = list(TARGETS) if args.target == "all" else args.target.split(",")
    for n in names:
        if n not in TARGETS:
            ap.error(f"unknown target {n!r}; one of: all, {', '.join(TARGETS)}")
    results = []
    for n in names:
        r = _run_target(n, args)
        results.append(r)
        _print_result(r)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    return 1 if any(r["unexpected"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
