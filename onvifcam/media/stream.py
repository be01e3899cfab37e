"""Stream: one publisher slot, its readers, the fan-out, the GOP cache and statistics.

Data path (no sockets here):

- A publisher (RTSP RECORD, RTMP, pull source) calls :meth:`Stream.on_rtp` per RTP packet.
  The packet is rewritten once (our SSRC, continuous sequence numbers and timestamps across
  publisher reconnects) and grouped into access units (AUs) per track.
- Completed AUs of one event-loop turn form a :class:`Batch`. Each reader gets the batch with
  one call; a TCP reader asks the batch for its bytes framed with its interleaved channels,
  which the batch builds once per distinct channel layout and shares, so the read side does no
  per-packet Python work and one write per reader per batch.
- The GOP cache keeps the AUs since the last keyframe so a new reader starts at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from onvifcam.media import rtp
from onvifcam.media.sdp import MediaDescription, SessionDescription

log = logging.getLogger(__name__)

RTP = 0
RTCP = 1

_RTP_HDR = rtp.HEADER
_IL = struct.Struct("!cBH")
# publisher attributes a reader's SDP does not repeat (we set direction and control)
_READER_DROPPED = frozenset(("control", "ssrc", "sendonly", "recvonly", "sendrecv", "range"))


_PEER = re.compile(r"^([a-z]+)(?:://| )([0-9A-Fa-f.:\[\]]+)(?=$|[\s/?])")


@dataclass(frozen=True)
class SessionInfo:
    """A publisher or reader of a stream as the HTTP API lists it."""

    id: str  # stable while the session lives
    path: str
    role: str  # "publisher" or "reader"
    protocol: str  # rtsp, rtmp, rtmps, srt, whip, source...
    address: str  # the peer's IP[:port], "" for internal sources
    bytes: int  # received from a publisher, sent to a reader
    since: float  # time.monotonic() of attach
    description: str


def session_info(obj: object, path: str, role: str, nbytes: int, since: float) -> SessionInfo:
    """Describe a publisher or reader from its ``description`` (``scheme://ip:port...``,
    ``whip ip:port``; RTSP readers through their session)."""
    desc = str(getattr(getattr(obj, "session", None) or obj, "description", "") or "")
    m = _PEER.match(desc)
    if m:
        proto, addr = m.groups()
    else:
        proto, addr = ("multicast" if hasattr(obj, "members") else "source"), ""
        desc = desc or type(obj).__name__
    return SessionInfo(f"{id(obj):x}", path, role, proto, addr, nbytes, since, desc)


class StreamError(Exception):
    """A publish or read request the stream refuses; ``status`` is the RTSP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class StreamBusy(StreamError):
    """Another publisher already owns the path."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 409)


class Publisher(Protocol):
    """What a stream needs from whoever feeds it.

    A publisher with a true ``placeholder`` attribute (the offline picture) stands in for a
    real one: the stream is not :attr:`Stream.online`, listeners hear nothing of it, no media
    timeout applies, and any real publisher replaces it without a conflict. One with a
    ``reader_refusal() -> str`` method can turn new readers away: a non-empty answer is the
    reason of a 503 to their DESCRIBE (the transcoded sub stream at ``max_transcodes``).
    """

    description: str

    def kick(self, reason: str) -> None:
        """Stop publishing (close the connection) for the given reason."""


class Reader(Protocol):
    """What a stream needs from whoever reads it."""

    def deliver(self, batch: Batch) -> None:
        """Send (or drop) one batch of access units."""

    def stream_closed(self, reason: str) -> None:
        """The stream ended for good (format change, server stop)."""


def _keyframe_fn(codec: str) -> Callable[[bytes | memoryview], bool] | None:
    if codec == "H264":
        from onvifcam.media import h264

        return h264.payload_is_keyframe
    if codec in ("H265", "HEVC"):
        from onvifcam.media import h265

        return h265.payload_is_keyframe
    if codec == "JPEG":
        return lambda _p: True
    return None


def _sdp_parameter_sets(track: Track) -> list[bytes]:
    """The video parameter sets in a track's SDP (sprop-parameter-sets / sprop-vps...)."""
    fmtp = track.media.fmtp.get(track.payload_type, {})
    try:
        if track.codec == "H264":
            from onvifcam.media import h264

            return h264.parse_sprop_parameter_sets(fmtp.get("sprop-parameter-sets", ""))
        if track.codec in ("H265", "HEVC"):
            from onvifcam.media import h265

            return h265.parse_sprop(fmtp)
    except ValueError:
        pass
    return []


@dataclass(eq=False)
class Track:
    """One media section of a stream and its output rewrite state."""

    index: int
    kind: str
    codec: str
    clock_rate: int
    payload_type: int
    media: MediaDescription
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    keyframe: Callable[[bytes | memoryview], bool] | None = None
    # rewrite state: out = in + offset; None until the first packet of a publisher
    seq_offset: int | None = None
    ts_offset: int | None = None
    last_seq: int = field(default_factory=lambda: random.getrandbits(16))
    last_ts: int = field(default_factory=lambda: random.getrandbits(32))
    last_time: float = 0.0
    started: bool = False
    # AU assembly
    au: list[bytes] = field(default_factory=list)
    au_ts: int = -1
    au_key: bool = False
    # counters
    packets: int = 0
    octets: int = 0
    last_sr_time: float = 0.0
    publisher_sr: bool = False
    # parameter sets to send before the next keyframe (a compatible publisher took over)
    pending_params: list[bytes] = field(default_factory=list)

    @property
    def control(self) -> str:
        """The control suffix readers SETUP."""
        return f"trackID={self.index}"


class Acc:
    """Count, sum, min and max of a measured value (cheap enough per access unit)."""

    __slots__ = ("count", "hi", "lo", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.lo = 0.0
        self.hi = 0.0

    def add(self, x: float) -> None:
        """Take one sample."""
        if self.count == 0 or x < self.lo:
            self.lo = x
        if x > self.hi or self.count == 0:
            self.hi = x
        self.count += 1
        self.total += x

    @property
    def avg(self) -> float:
        """The mean (0 with no sample)."""
        return self.total / self.count if self.count else 0.0


@dataclass
class StreamStats:
    """Counters and measured rates of a stream."""

    bytes_in: int = 0
    packets_in: int = 0
    frames_in: int = 0
    keyframes_in: int = 0
    dropped_in: int = 0  # video before the first keyframe of a publisher
    malformed_in: int = 0
    reader_drops: int = 0
    bitrate: float = 0.0
    fps: float = 0.0
    publishes: int = 0
    frames_out: int = 0  # key-track frames handed to readers (one per reader)
    gop: int = 0  # frames from the last keyframe to the one before it (0: not seen yet)
    # what left readers had sent and dropped (the live readers' counts are added on read)
    closed_bytes_out: int = 0
    closed_reader_drops: int = 0
    # ingest drops the publishers reported (Stream.count_drop), by reason
    drops: dict[str, int] = field(default_factory=dict)
    # inter-frame time (ms) and reader queue depth (bytes, sampled once a second):
    # since start, and since the last Stream.take_window()
    interframe: Acc = field(default_factory=Acc)
    interframe_window: Acc = field(default_factory=Acc)
    queue: Acc = field(default_factory=Acc)
    queue_window: Acc = field(default_factory=Acc)
    _bytes_mark: int = 0
    _frames_mark: int = 0
    _time_mark: float = 0.0
    _last_frame: float = 0.0
    _since_key: int = 0
    _released: int = 0


class Batch:
    """The AUs completed in one event-loop turn, framed once per interleaved channel layout."""

    __slots__ = ("_framed", "first_key", "items")

    def __init__(self, items: list[tuple[int, int, list[bytes], bool]], key_track: int) -> None:
        self.items = items
        self._framed: dict[tuple[int | None, ...], bytes] = {}
        self.first_key: int | None = None
        for i, (track, kind, _pk, key) in enumerate(items):
            if key and kind == RTP and track == key_track:
                self.first_key = i
                break

    def framed(self, channels: tuple[int | None, ...], start: int = 0) -> bytes:
        """Bytes of the batch as RTSP interleaved frames; ``channels[t]`` is track t's RTP
        channel (RTCP uses channel + 1) or None when the reader did not set the track up."""
        if start == 0:
            data = self._framed.get(channels)
            if data is not None:
                return data
        parts: list[bytes] = []
        pack = _IL.pack
        append = parts.append
        for track, kind, packets, _key in self.items[start:] if start else self.items:
            ch = channels[track] if track < len(channels) else None
            if ch is None:
                continue
            ch += kind
            for p in packets:
                append(pack(b"$", ch, len(p)))
                append(p)
        data = b"".join(parts)
        if start == 0:
            self._framed[channels] = data
        return data

    def packets(self, start: int = 0) -> Iterator[tuple[int, int, bytes]]:
        """(track, kind, packet) for every packet, for datagram readers."""
        for track, kind, packets, _key in self.items[start:]:
            for p in packets:
                yield track, kind, p

    def count(self, start: int = 0) -> int:
        """Number of packets from item ``start`` on."""
        return sum(len(it[2]) for it in self.items[start:])


class Stream:
    """One path: a publisher slot, its tracks, readers, GOP cache and statistics."""

    def __init__(
        self,
        path: str,
        *,
        gop_cache_bytes: int = 16 * 1024 * 1024,
        media_timeout: float = 15.0,
        on_change: Callable[[Stream, str], None] | None = None,
        on_reader: Callable[[Stream, Reader, bool], None] | None = None,
        on_playable: Callable[[Stream], None] | None = None,
    ) -> None:
        self.path = path
        self.publisher: Publisher | None = None
        self.tracks: list[Track] = []
        self.session: SessionDescription | None = None
        self.readers: set[Reader] = set()
        self.reader_since: dict[Reader, float] = {}  # monotonic attach time (API sessions)
        self.publisher_bytes0 = 0  # stats.bytes_in when the publisher attached
        self.stats = StreamStats()
        self.video_info: object | None = None  # media.h264.VideoInfo once the SPS is seen
        self.key_track: int = -1
        self.gop_cache_bytes = gop_cache_bytes
        self.media_timeout = media_timeout
        self._on_change = on_change
        self._on_reader = on_reader
        # told on every publish, a placeholder's (the offline picture, a transcoded sub
        # stream) too: readers waiting for the path can be answered now
        self._on_playable = on_playable
        # what the publisher declared (SDP a=x-dimensions / a=framerate, from onMetaData
        # for RTMP): width, height, fps; the measured values come from the SPS and rates
        self.declared: dict[str, float] = {}
        self.published_wall = 0.0  # time.time() of the last publish
        self._pending: list[tuple[int, int, list[bytes], bool]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._gop: list[tuple[int, int, list[bytes], bool]] = []
        self._gop_bytes = 0
        self._gop_valid = False
        self._waiting_key = False
        self._last_input = 0.0
        self._published_at = 0.0
        self.unpublished_at = time.monotonic()
        self.created_at = time.monotonic()
        self.version = 0
        self.unpublish_reason = ""

    # ------------------------------------------------------------------ publishing
    @property
    def online(self) -> bool:
        """True while a real publisher (not a placeholder) is attached."""
        return self.publisher is not None and not getattr(self.publisher, "placeholder", False)

    @property
    def playable(self) -> bool:
        """True while readers can get media: a publisher or a placeholder with tracks."""
        return self.publisher is not None and bool(self.tracks)

    def publish(
        self, publisher: Publisher, session: SessionDescription, *, replace: bool = False
    ) -> None:
        """Attach a publisher with the media it announced.

        Raises StreamBusy when another publisher is live and ``replace`` is false, and
        StreamError when the SDP has no usable media.
        """
        if self.publisher is not None and getattr(self.publisher, "placeholder", False):
            if self.publisher is not publisher:
                stand_in = self.publisher
                self.unpublish(stand_in, f"{publisher.description} arrived")
                stand_in.kick(f"replaced by {publisher.description}")
        if self.publisher is not None and self.publisher is not publisher:
            if not replace:
                raise StreamBusy(
                    f"path '{self.path}' already has a publisher ({self.publisher.description})"
                )
            old = self.publisher
            self.unpublish(old, "replaced by a new publisher")
            old.kick(f"replaced by {publisher.description}")
        tracks = self._tracks_from(session)
        if not tracks:
            raise StreamError("the SDP has no media with an RTP payload", 400)
        if self.tracks and self._compatible(tracks):
            # Same layout: keep SSRCs and the output timeline so readers carry on.
            for old_t, new_t in zip(self.tracks, tracks, strict=True):
                old_t.seq_offset = None
                old_t.ts_offset = None
                old_t.au = []
                old_t.au_ts = -1
                old_t.payload_type = new_t.payload_type
                if self.readers and new_t.keyframe is not None and old_t.media != new_t.media:
                    # Readers carry on across the change: the new publisher's parameter
                    # sets (often only in its SDP) go in front of its first keyframe.
                    old_t.pending_params = _sdp_parameter_sets(new_t)
                old_t.media = new_t.media
        else:
            if self.readers:
                self._drop_readers("the stream's media format changed")
            self.tracks = tracks
            self.video_info = None
            self.version += 1
        self.session = session
        self.key_track = next((t.index for t in self.tracks if t.keyframe is not None), -1)
        self.publisher = publisher
        self._waiting_key = self.key_track >= 0
        self._gop = []
        self._gop_bytes = 0
        self._gop_valid = False
        now = time.monotonic()
        self._published_at = now
        self._last_input = now
        self.stats.publishes += 1
        self.publisher_bytes0 = self.stats.bytes_in
        self.published_wall = time.time()
        self.stats._last_frame = 0.0
        self.stats._since_key = 0
        self.stats._released = 0
        self.stats._time_mark = now
        self.stats._bytes_mark = self.stats.bytes_in
        self.stats._frames_mark = self.stats.frames_in
        self.stats.gop = 0  # this publisher's GOP is not known yet
        self._detect_info_from_sdp()
        log.info(
            "stream %s: publishing from %s (%s)",
            self.path,
            publisher.description,
            ", ".join(f"{t.kind}/{t.codec}" for t in self.tracks),
        )
        if not getattr(publisher, "placeholder", False):
            self._notify("publish")
        if self._on_playable is not None:
            try:
                self._on_playable(self)
            except Exception:  # a listener bug must not break the data path
                log.exception("stream %s: playable listener failed", self.path)

    def unpublish(self, publisher: Publisher, reason: str = "") -> None:
        """Detach a publisher; readers stay and resume when a publisher comes back."""
        if self.publisher is not publisher:
            return
        self._flush()
        self.unpublish_reason = reason
        for k, v in _ingest_drops(publisher).items():  # keep them once the publisher is gone
            self.stats.drops[k] = self.stats.drops.get(k, 0) + v
        self.publisher = None
        self.unpublished_at = time.monotonic()
        for t in self.tracks:
            t.au = []
        self.stats.bitrate = 0.0
        self.stats.fps = 0.0
        log.info("stream %s: publisher %s left (%s)", self.path, publisher.description, reason)
        if not getattr(publisher, "placeholder", False):
            self._notify("unpublish")

    def _notify(self, what: str) -> None:
        if self._on_change is not None:
            try:
                self._on_change(self, what)
            except Exception:  # a listener bug must not break the data path
                log.exception("stream %s: %s listener failed", self.path, what)

    @staticmethod
    def _tracks_from(session: SessionDescription) -> list[Track]:
        tracks = []
        for md in session.media:
            if md.proto.upper().startswith("RTP/") is False or not md.formats:
                continue
            codec = md.encoding.upper()
            tracks.append(
                Track(
                    index=len(tracks),
                    kind=md.media.lower(),
                    codec=codec,
                    clock_rate=md.clock_rate or 90000,
                    payload_type=md.payload_type,
                    media=md,
                    keyframe=_keyframe_fn(codec) if md.media.lower() == "video" else None,
                )
            )
        return tracks

    def _compatible(self, tracks: list[Track]) -> bool:
        return len(tracks) == len(self.tracks) and all(
            a.kind == b.kind and a.codec == b.codec and a.clock_rate == b.clock_rate
            for a, b in zip(tracks, self.tracks, strict=True)
        )

    # ------------------------------------------------------------------ ingest
    def on_rtp(self, index: int, packet: bytes) -> None:
        """Take one RTP packet of track ``index`` from the publisher."""
        stats = self.stats
        try:
            track = self.tracks[index]
            b0, b1, seq, ts, _ssrc = _RTP_HDR.unpack_from(packet, 0)
        except (IndexError, struct.error):
            stats.malformed_in += 1
            return
        if b0 & 0xC0 != 0x80:
            stats.malformed_in += 1
            return
        n = len(packet)
        stats.bytes_in += n
        stats.packets_in += 1
        now = time.monotonic()
        self._last_input = now
        hdr = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:
            if n < hdr + 4:
                stats.malformed_in += 1
                return
            hdr += 4 + 4 * int.from_bytes(packet[hdr + 2 : hdr + 4], "big")
        keyfn = track.keyframe
        is_key = False
        if keyfn is not None and n > hdr:
            is_key = keyfn(memoryview(packet)[hdr:])
        if index == self.key_track and self._waiting_key:
            if not is_key:
                stats.dropped_in += 1
                return
            self._waiting_key = False
        if track.seq_offset is None:
            self._start_track(track, seq, ts, now)
        if track.pending_params and is_key:
            self._inject_params(track, b1 & 0x7F, seq, ts, now)
        out_seq = (seq + track.seq_offset) & 0xFFFF  # type: ignore[operator]
        out_ts = (ts + track.ts_offset) & 0xFFFFFFFF  # type: ignore[operator]
        track.last_seq = out_seq
        track.last_ts = out_ts
        track.last_time = now
        track.packets += 1
        track.octets += n - hdr
        out = _RTP_HDR.pack(b0, b1, out_seq, out_ts, track.ssrc) + packet[12:]
        if track.au and out_ts != track.au_ts:
            self._complete(track)  # the previous AU had no marker
        if not track.au:
            track.au_ts = out_ts
            track.au_key = False
        if is_key:
            track.au_key = True
        track.au.append(out)
        if b1 & 0x80 or keyfn is None:
            self._complete(track)

    def _inject_params(self, track: Track, pt: int, seq: int, ts: int, now: float) -> None:
        """Send the pending parameter sets (one RTP packet each, the keyframe's timestamp)
        just before the keyframe packet with input sequence ``seq``."""
        params, track.pending_params = track.pending_params, []
        out_ts = (ts + track.ts_offset) & 0xFFFFFFFF  # type: ignore[operator]
        out_seq = (seq + track.seq_offset) & 0xFFFF  # type: ignore[operator]
        if track.au and out_ts != track.au_ts:
            self._complete(track)
        if not track.au:
            track.au_ts = out_ts
            track.au_key = True
        for nal in params:
            track.au.append(_RTP_HDR.pack(0x80, pt, out_seq, out_ts, track.ssrc) + nal)
            out_seq = (out_seq + 1) & 0xFFFF
        track.seq_offset = (track.seq_offset + len(params)) & 0xFFFF  # type: ignore[operator]

    def note_input(self, nbytes: int, frames: int) -> None:
        """Count media a publisher received but holds back from RTP (lazy packetising), so
        rates and the media timeout see it; negative values undo it once it is sent."""
        st = self.stats
        st.bytes_in += nbytes
        st.frames_in += frames
        now = self._last_input = time.monotonic()
        if frames < 0:
            st._released -= frames
        for _ in range(frames):
            self._frame_timing(now, False)

    def _frame_timing(self, now: float, key: bool) -> None:
        """Inter-frame time and GOP length of one arriving video frame."""
        st = self.stats
        if st._last_frame:
            ms = (now - st._last_frame) * 1000.0
            st.interframe.add(ms)
            st.interframe_window.add(ms)
        st._last_frame = now
        if key:
            if st._since_key:
                st.gop = st._since_key
            st._since_key = 1
        elif st._since_key:
            st._since_key += 1

    def _start_track(self, track: Track, seq: int, ts: int, now: float) -> None:
        if track.started:
            gap = max(now - track.last_time, 0.0)
            track.seq_offset = (track.last_seq + 1 - seq) & 0xFFFF
            ts_next = track.last_ts + max(int(gap * track.clock_rate), 1)
            track.ts_offset = (ts_next - ts) & 0xFFFFFFFF
        else:
            track.seq_offset = (track.last_seq + 1 - seq) & 0xFFFF
            track.ts_offset = (track.last_ts - ts) & 0xFFFFFFFF
            track.started = True

    def _complete(self, track: Track) -> None:
        packets = track.au
        track.au = []
        key = track.au_key
        item = (track.index, RTP, packets, key)
        self._pending.append(item)
        if track.index == self.key_track:
            st = self.stats
            st.frames_in += 1
            if st._released and not key:
                st._released -= 1  # counted when it arrived (note_input)
            else:
                self._frame_timing(track.last_time, key)
            if key:
                st.keyframes_in += 1
                if self.video_info is None:
                    self._detect_info(track, packets)
        self._cache(item)
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._flush()
                return
            self._flush_handle = loop.call_soon(self._flush)

    def _cache(self, item: tuple[int, int, list[bytes], bool]) -> None:
        track, _kind, packets, key = item
        if self.key_track < 0:
            return
        if track == self.key_track and key:
            self._gop = []
            self._gop_bytes = 0
            self._gop_valid = True
        if not self._gop_valid:
            return
        size = sum(len(p) for p in packets)
        if self._gop_bytes + size > self.gop_cache_bytes:
            self._gop = []
            self._gop_bytes = 0
            self._gop_valid = False  # too long a GOP: wait for the next keyframe
            return
        self._gop.append(item)
        self._gop_bytes += size

    def on_rtcp(self, index: int, data: bytes) -> None:
        """Take an RTCP packet from the publisher; sender reports are translated for readers."""
        from onvifcam.media import rtcp

        if not 0 <= index < len(self.tracks):
            return
        track = self.tracks[index]
        try:
            packets = rtcp.parse_compound(data)
        except ValueError:
            self.stats.malformed_in += 1
            return
        self._last_input = time.monotonic()
        for p in packets:
            if isinstance(p, rtcp.SenderReport) and track.ts_offset is not None:
                sr = rtcp.SenderReport(
                    ssrc=track.ssrc,
                    ntp=p.ntp,
                    rtp_timestamp=(p.rtp_timestamp + track.ts_offset) & 0xFFFFFFFF,
                    packet_count=track.packets & 0xFFFFFFFF,
                    octet_count=track.octets & 0xFFFFFFFF,
                )
                track.publisher_sr = True
                self._send_sr(track, sr)

    def _send_sr(self, track: Track, sr: object) -> None:
        from onvifcam.media import rtcp

        track.last_sr_time = time.monotonic()
        data = rtcp.build_sender_report(sr, cname="onvifcam")  # type: ignore[arg-type]
        self._pending.append((track.index, RTCP, [data], False))
        if self._flush_handle is None:
            self._flush()

    # ------------------------------------------------------------------ fan-out
    def _flush(self) -> None:
        self._flush_handle = None
        if not self._pending:
            return
        batch = Batch(self._pending, self.key_track)
        self._pending = []
        if self.readers:
            self.stats.frames_out += self._frames(batch) * len(self.readers)
        for r in tuple(self.readers):
            r.deliver(batch)

    def _frames(self, batch: Batch) -> int:
        kt = self.key_track
        if kt < 0:
            return sum(1 for it in batch.items if it[1] == RTP)
        return sum(1 for it in batch.items if it[0] == kt and it[1] == RTP)

    def start_positions(self) -> list[tuple[int, int]]:
        """(sequence, timestamp) of the first packet each track will send a new reader."""
        firsts: dict[int, bytes] = {}
        for track, _kind, packets, _key in self._gop:
            firsts.setdefault(track, packets[0])
        out = []
        for t in self.tracks:
            first = firsts.get(t.index)
            if first is not None:
                _b0, _b1, seq, ts, _ssrc = _RTP_HDR.unpack_from(first, 0)
                out.append((seq, ts))
            else:
                out.append(((t.last_seq + 1) & 0xFFFF, t.last_ts))
        return out

    def add_reader(self, reader: Reader) -> bool:
        """Register a reader and send it the GOP cache at once.

        Returns True when the reader starts on a keyframe (or the stream has none), False
        when it must wait for the next keyframe.
        """
        self._flush()
        new = reader not in self.readers
        self.readers.add(reader)
        self.reader_since.setdefault(reader, time.monotonic())
        if new and self._on_reader is not None:
            self._reader_event(reader, True)
        if self._gop and self._gop_valid:
            batch = Batch(list(self._gop), self.key_track)
            self.stats.frames_out += self._frames(batch)
            reader.deliver(batch)
            return True
        return self.key_track < 0

    def remove_reader(self, reader: Reader) -> None:
        """Unregister a reader."""
        if reader in self.readers:
            self.readers.discard(reader)
            self._reader_gone(reader)

    def _reader_gone(self, reader: Reader) -> None:
        self.reader_since.pop(reader, None)
        st = self.stats
        st.closed_bytes_out += getattr(reader, "sent", 0)
        st.closed_reader_drops += getattr(reader, "dropped", 0)
        if self._on_reader is not None:
            self._reader_event(reader, False)

    def _reader_event(self, reader: Reader, added: bool) -> None:
        try:
            self._on_reader(self, reader, added)  # type: ignore[misc]
        except Exception:  # a listener bug must not break the data path
            log.exception("stream %s: reader listener failed", self.path)

    def _drop_readers(self, reason: str) -> None:
        readers = list(self.readers)
        self.readers.clear()
        for r in readers:
            self._reader_gone(r)
            r.stream_closed(reason)

    def count_drop(self, reason: str, n: int = 1) -> None:
        """An ingest dropped ``n`` units of this stream's input for ``reason``
        ("unsupported_codec", "non_media", "malformed"...)."""
        self.stats.drops[reason] = self.stats.drops.get(reason, 0) + n

    # ------------------------------------------------------------------ statistics
    def reader_totals(self) -> tuple[int, int]:
        """Bytes sent to and packets dropped by every reader so far (left ones included)."""
        st = self.stats
        sent, dropped = st.closed_bytes_out, st.closed_reader_drops
        for r in self.readers:
            sent += getattr(r, "sent", 0)
            dropped += getattr(r, "dropped", 0)
        return sent, dropped

    def sample_queues(self) -> None:
        """Note every reader's queued bytes (readers with a ``queued()``), once a second."""
        st = self.stats
        for r in self.readers:
            q = getattr(r, "queued", None)
            if q is not None:
                n = float(q())
                st.queue.add(n)
                st.queue_window.add(n)

    def take_window(self) -> tuple[Acc, Acc]:
        """The inter-frame and queue-depth accumulators since the last call; starts anew."""
        st = self.stats
        w = st.interframe_window, st.queue_window
        st.interframe_window, st.queue_window = Acc(), Acc()
        return w

    def stats_dict(self) -> dict[str, object]:
        """Counters and gauges in the ``stats()`` shape (docs/architecture.md)."""
        st = self.stats
        sent, dropped = self.reader_totals()
        pub = self.publisher
        drops = dict(st.drops)
        for k, v in _ingest_drops(pub).items():
            drops[k] = drops.get(k, 0) + v
        info = self.video_info
        vt = self.video_track
        return {
            "online": self.online,
            "placeholder": pub is not None and not self.online,
            "publisher": getattr(pub, "description", "") if pub is not None else "",
            "published_at": self.published_wall if pub is not None else 0.0,
            "readers": len(self.readers),
            "bytes_in": st.bytes_in,
            "packets_in": st.packets_in,
            "frames_in": st.frames_in,
            "keyframes_in": st.keyframes_in,
            "bytes_out": sent,
            "frames_out": st.frames_out,
            "fps": st.fps,
            "bitrate": st.bitrate,
            "gop": st.gop,
            "keyframe_interval": st.gop / st.fps if st.gop and st.fps else 0.0,
            "publishes": st.publishes,
            "codec": getattr(info, "codec", None) or (vt.codec if vt is not None else ""),
            "drops": {
                "overflow": dropped,
                "waiting_keyframe": st.dropped_in,
                "malformed": st.malformed_in + drops.get("malformed", 0),
                "non_media": drops.get("non_media", 0),
                "unsupported_codec": drops.get("unsupported_codec", 0),
                **{k: v for k, v in drops.items() if k not in ("non_media", "malformed")},
            },
        }

    def sessions(self) -> list[SessionInfo]:
        """The publisher (a placeholder is not one) and every reader, for the HTTP API."""
        out = []
        pub = self.publisher
        if pub is not None and self.online:
            nbytes = self.stats.bytes_in - self.publisher_bytes0
            out.append(session_info(pub, self.path, "publisher", nbytes, self._published_at))
        for r in self.readers:
            since = self.reader_since.get(r, self.created_at)
            out.append(session_info(r, self.path, "reader", int(getattr(r, "sent", 0)), since))
        return out

    def kick(self, session_id: str, reason: str) -> bool:
        """Disconnect the publisher or reader with this :class:`SessionInfo` id; False when
        there is none."""
        pub = self.publisher
        if pub is not None and self.online and f"{id(pub):x}" == session_id:
            self.unpublish(pub, reason)
            pub.kick(reason)
            return True
        for r in list(self.readers):
            if f"{id(r):x}" == session_id:
                self.remove_reader(r)
                r.stream_closed(reason)
                return True
        return False

    def gop_snapshot(self) -> list[list[bytes]]:
        """The key track's AUs since the last keyframe (RTP packets), for snapshots."""
        return [pk for t, kind, pk, _k in self._gop if t == self.key_track and kind == RTP]

    # ------------------------------------------------------------------ info
    def _detect_info_from_sdp(self) -> None:
        self.declared = {}
        if self.key_track < 0:
            return
        t = self.tracks[self.key_track]
        self.declared = _declared(t.media)
        fmtp = t.media.fmtp.get(t.payload_type, {})
        try:
            if t.codec == "H264":
                from onvifcam.media import h264

                sprop = fmtp.get("sprop-parameter-sets")
                if sprop:
                    for nal in h264.parse_sprop_parameter_sets(sprop):
                        if nal and nal[0] & 0x1F == 7:
                            self.video_info = h264.parse_sps(nal)
            elif t.codec in ("H265", "HEVC"):
                from onvifcam.media import h265

                for nal in h265.parse_sprop(fmtp):
                    if len(nal) > 2 and (nal[0] >> 1) & 0x3F == 33:
                        self.video_info = h265.parse_sps(nal)
        except ValueError as exc:
            log.warning("stream %s: bad parameter sets in SDP: %s", self.path, exc)

    def _detect_info(self, track: Track, packets: list[bytes]) -> None:
        try:
            payloads = [p[rtp.parse(p).payload_start :] for p in packets]
            if track.codec == "H264":
                from onvifcam.media import h264

                for nal in h264.depacketize(payloads):
                    if nal and nal[0] & 0x1F == 7:
                        self.video_info = h264.parse_sps(nal)
                        break
            elif track.codec in ("H265", "HEVC"):
                from onvifcam.media import h265

                for nal in h265.depacketize(payloads):
                    if len(nal) > 2 and (nal[0] >> 1) & 0x3F == 33:
                        self.video_info = h265.parse_sps(nal)
                        break
        except ValueError as exc:
            log.warning("stream %s: cannot parse in-band SPS: %s", self.path, exc)
        if self.video_info is not None:
            self._notify("info")

    @property
    def video_track(self) -> Track | None:
        """The track that carries keyframes (H.264/H.265/JPEG video), if any."""
        return self.tracks[self.key_track] if self.key_track >= 0 else None

    def reader_sdp(self, host: str = "0.0.0.0") -> bytes:
        """The SDP readers get from DESCRIBE: the publisher's media with our controls."""
        sid = abs(hash(self.path)) % 10**10
        media = []
        for t in self.tracks:
            md = t.media
            attributes = [a for a in md.attributes if a[0].lower() not in _READER_DROPPED]
            attributes += [("recvonly", None), ("control", t.control)]
            media.append(
                MediaDescription(
                    md.media, 0, "RTP/AVP", list(md.formats), attributes, None, list(md.bandwidth)
                )
            )
        return SessionDescription(
            origin=f"- {sid} {self.version} IN IP4 {host}",
            name=self.path,
            connection="IN IP4 0.0.0.0",
            times=["0 0"],
            attributes=[("tool", "onvifcam"), ("control", "*"), ("range", "npt=now-")],
            media=media,
        ).serialize()

    # ------------------------------------------------------------------ housekeeping
    def tick(self, now: float) -> None:
        """Once a second: measure rates, send sender reports, enforce the media timeout."""
        st = self.stats
        span = now - st._time_mark
        if span >= 1.0 and self.publisher is not None:
            st.bitrate = (st.bytes_in - st._bytes_mark) * 8 / span
            st.fps = (st.frames_in - st._frames_mark) / span
            st._time_mark, st._bytes_mark, st._frames_mark = now, st.bytes_in, st.frames_in
        if self.readers:
            self.sample_queues()
        if self.publisher is None:
            return
        if now - self._last_input > self.media_timeout and self.online:
            pub = self.publisher
            reason = f"no media for {self.media_timeout:g} s"
            self.unpublish(pub, reason)
            pub.kick(reason)
            return
        if self.readers:
            from onvifcam.media import rtcp

            for t in self.tracks:
                if t.started and now - t.last_sr_time >= 5.0 and now - t.last_time < 5.0:
                    if t.publisher_sr and now - t.last_sr_time < 10.0:
                        continue
                    ntp = rtcp.ntp_from_unix(time.time() - (now - t.last_time))
                    self._send_sr(
                        t,
                        rtcp.SenderReport(
                            t.ssrc,
                            ntp,
                            t.last_ts,
                            t.packets & 0xFFFFFFFF,
                            t.octets & 0xFFFFFFFF,
                        ),
                    )

    def close(self, reason: str) -> None:
        """End the stream: kick the publisher, tell every reader."""
        if self.publisher is not None:
            pub = self.publisher
            self.unpublish(pub, reason)
            pub.kick(reason)
        self._drop_readers(reason)


def _ingest_drops(publisher: object) -> dict[str, int]:
    """A publisher's own drop counters (``ingest_drops()``, e.g. RTMP's FLV ingest)."""
    fn = getattr(publisher, "ingest_drops", None)
    if fn is None:
        return {}
    try:
        return dict(fn())
    except Exception:  # a publisher's counters must not break the stream
        log.exception("ingest_drops of %r failed", publisher)
        return {}


def _declared(md: MediaDescription) -> dict[str, float]:
    """Width, height and fps a video section declares (a=x-dimensions, a=framesize,
    a=framerate); what cannot be read is left out."""
    out: dict[str, float] = {}
    dims = md.get("x-dimensions")
    if dims is None:
        fs = md.get("framesize")  # "96 1280-720"
        dims = fs.split()[-1].replace("-", ",") if fs else None
    if dims:
        w, _, h = dims.partition(",")
        if w.strip().isdigit() and h.strip().isdigit():
            out["width"], out["height"] = float(w), float(h)
    rate = md.get("framerate")
    if rate:
        try:
            fps = float(rate.split()[-1])
        except ValueError:
            fps = 0.0
        if 0 < fps < 1000:
            out["fps"] = fps
    return out


class StreamRegistry:
    """All streams by path, plus listeners for publish/unpublish/info changes and for
    readers coming and going (``reader_listeners``: ``fn(stream, reader, added)``)."""

    def __init__(self, *, gop_cache_bytes: int, media_timeout: float, max_streams: int) -> None:
        self.streams: dict[str, Stream] = {}
        self.gop_cache_bytes = gop_cache_bytes
        self.media_timeout = media_timeout
        self.max_streams = max_streams
        self.listeners: list[Callable[[Stream, str], None]] = []
        self.reader_listeners: list[Callable[[Stream, Reader, bool], None]] = []
        self._demand_hooks: list[Callable[[str], bool]] = []
        # fn(path) on every publish, a placeholder's too (see Stream.publish)
        self.playable_listeners: list[Callable[[str], None]] = []

    def add_demand_hook(self, hook: Callable[[str], bool]) -> None:
        """Register ``hook(path) -> bool``: asked when a reader wants ``path`` and nothing
        publishes there; True means it will start a source for the path (on-demand pull)."""
        self._demand_hooks.append(hook)

    def demand(self, path: str) -> bool:
        """Ask the demand hooks, in order, for a source at ``path``; True if one will start.

        Every hook is asked until one says True; a hook that raises is logged and counts as
        False (a broken source never takes the reader down).
        """
        p = self.normalize(path)
        for hook in list(self._demand_hooks):
            try:
                if hook(p):
                    return True
            except Exception:
                log.exception("stream registry: demand hook %r failed for %r", hook, p)
        return False

    @staticmethod
    def normalize(path: str) -> str:
        """Path without surrounding slashes."""
        return path.strip("/")

    def get(self, path: str) -> Stream | None:
        """The stream at path, if it exists."""
        return self.streams.get(self.normalize(path))

    def get_or_create(self, path: str) -> Stream:
        """The stream at path, created when missing."""
        p = self.normalize(path)
        s = self.streams.get(p)
        if s is None:
            if len(self.streams) >= self.max_streams:
                raise StreamError(f"too many streams (max {self.max_streams})", 503)
            s = Stream(
                p,
                gop_cache_bytes=self.gop_cache_bytes,
                media_timeout=self.media_timeout,
                on_change=self._changed,
                on_reader=self._reader_changed,
                on_playable=self._playable,
            )
            self.streams[p] = s
        return s

    def _changed(self, stream: Stream, what: str) -> None:
        for fn in self.listeners:
            fn(stream, what)

    def _playable(self, stream: Stream) -> None:
        for fn in self.playable_listeners:
            fn(stream.path)

    def _reader_changed(self, stream: Stream, reader: Reader, added: bool) -> None:
        for fn in self.reader_listeners:
            fn(stream, reader, added)

    def find_prefix(self, path: str) -> tuple[Stream, str] | None:
        """The stream whose path is the longest prefix of ``path``, and the rest."""
        p = self.normalize(path)
        while True:
            s = self.streams.get(p)
            if s is not None:
                return s, self.normalize(path)[len(p) :].strip("/")
            if "/" not in p:
                return None
            p = p.rsplit("/", 1)[0]

    def tick(self, now: float) -> None:
        """Housekeeping for every stream; drop streams nobody uses any more."""
        for path, s in list(self.streams.items()):
            s.tick(now)
            if s.publisher is None and not s.readers and now - s.unpublished_at > 30.0:
                del self.streams[path]

    def online(self) -> Iterable[Stream]:
        """Streams with a real publisher (placeholders do not count)."""
        return [s for s in self.streams.values() if s.online]

    def close(self, reason: str) -> None:
        """Close every stream."""
        for s in list(self.streams.values()):
            s.close(reason)
