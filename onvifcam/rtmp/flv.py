"""FLV tag bodies (as carried in RTMP audio/video messages) and their conversion to RTP.

Sans-I/O. :func:`parse_video` / :func:`parse_audio` read the FLV VIDEODATA / AUDIODATA
headers: legacy codec ids (7 = AVC, 12 = HEVC as deployed by Chinese CDNs and FFmpeg
forks) and Enhanced RTMP v1 (``IsExHeader`` bit, FourCC ``avc1``/``hvc1``, packet types
SequenceStart, CodedFrames, CodedFramesX, SequenceEnd). :class:`FlvIngest` turns the tags
of one publisher into an SDP and RTP packets (RFC 6184, RFC 7798, RFC 3640 AAC-hbr).
:func:`read_file` splits an FLV file into tags (tests and the benchmark replay files).
"""

from __future__ import annotations

import logging
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from onvifcam.media import aac, h264, h265, rtp

__all__ = [
    "AudioTag",
    "FlvError",
    "FlvIngest",
    "IngestStats",
    "Tag",
    "VideoTag",
    "parse_audio",
    "parse_video",
    "read_file",
]

log = logging.getLogger(__name__)

# VideoTag.kind / AudioTag.kind
CONFIG = 0
FRAME = 1
END = 2
OTHER = 3

AUDIO_FORMATS = {
    0: "PCM",
    1: "ADPCM",
    2: "MP3",
    3: "PCM-LE",
    4: "Nellymoser-16k",
    5: "Nellymoser-8k",
    6: "Nellymoser",
    7: "G.711 A-law",
    8: "G.711 mu-law",
    9: "ExHeader",
    10: "AAC",
    11: "Speex",
    14: "MP3-8k",
    15: "device-specific",
}
VIDEO_CODECS = {
    2: "Sorenson H.263",
    3: "Screen video",
    4: "VP6",
    5: "VP6 alpha",
    6: "Screen video 2",
    7: "H264",
    12: "H265",
}
_FOURCC = {b"avc1": "H264", b"hvc1": "H265"}

VIDEO_PT = 96
AUDIO_PT = 97
MTU = 1400
AAC_FRAME_SAMPLES = 1024
_MAX_KBPS = 10_000_000  # onMetaData bitrates (kbit/s) above this are not put in the SDP
_U32 = struct.Struct("!I")


class FlvError(ValueError):
    """A malformed FLV tag body."""


class VideoTag(NamedTuple):
    """A parsed VIDEODATA body; ``codec`` is H264/H265 or a description of another codec."""

    codec: str
    kind: int  # CONFIG, FRAME, END or OTHER
    keyframe: bool  # as the FLV frame type claims
    cts: int  # composition time offset, ms
    data: memoryview


class AudioTag(NamedTuple):
    """A parsed AUDIODATA body; ``codec`` is AAC or the name of another format."""

    codec: str
    kind: int  # CONFIG or FRAME
    data: memoryview


def _si24(b0: int, b1: int, b2: int) -> int:
    v = (b0 << 16) | (b1 << 8) | b2
    return v - 0x1000000 if v & 0x800000 else v


def video_header(payload: bytes | memoryview) -> tuple[str, int, bool, int, int]:
    """(codec, kind, keyframe flag, composition time, body offset) of a video message."""
    n = len(payload)
    if n < 1:
        raise FlvError("empty video message")
    b0 = payload[0]
    if b0 & 0x80:  # Enhanced RTMP ExVideoTagHeader
        frame_type = (b0 >> 4) & 0x07
        packet_type = b0 & 0x0F
        if n < 5:
            raise FlvError("Enhanced RTMP video header truncated before the FourCC")
        fourcc = bytes(payload[1:5])
        codec = _FOURCC.get(fourcc)
        if codec is None:
            return f"FourCC {fourcc.decode('latin-1')!r}", OTHER, frame_type == 1, 0, 5
        if frame_type == 5 and packet_type != 4:
            return codec, OTHER, False, 0, 5  # command frame
        if packet_type == 1:
            if n < 8:
                raise FlvError("Enhanced RTMP coded frame truncated in composition time")
            return codec, FRAME, frame_type == 1, _si24(payload[5], payload[6], payload[7]), 8
        if packet_type == 3:
            return codec, FRAME, frame_type == 1, 0, 5
        if packet_type == 0:
            return codec, CONFIG, True, 0, 5
        if packet_type == 2:
            return codec, END, False, 0, 5
        return codec, OTHER, False, 0, 5
    frame_type = b0 >> 4
    codec_id = b0 & 0x0F
    if codec_id != 7 and codec_id != 12:
        return VIDEO_CODECS.get(codec_id, f"codec id {codec_id}"), OTHER, frame_type == 1, 0, 1
    codec = "H264" if codec_id == 7 else "H265"
    if frame_type == 5:
        return codec, OTHER, False, 0, 1
    if n < 5:
        raise FlvError(f"{codec} video header truncated ({n} bytes)")
    packet_type = payload[1]
    if packet_type == 1:
        return codec, FRAME, frame_type == 1, _si24(payload[2], payload[3], payload[4]), 5
    if packet_type == 0:
        return codec, CONFIG, True, 0, 5
    if packet_type == 2:
        return codec, END, False, 0, 5
    return codec, OTHER, False, 0, 5


def parse_video(payload: bytes | memoryview) -> VideoTag:
    """Parse an RTMP video message body (an FLV VIDEODATA tag body)."""
    codec, kind, key, cts, offset = video_header(payload)
    return VideoTag(codec, kind, key, cts, memoryview(payload)[offset:])


def parse_audio(payload: bytes | memoryview) -> AudioTag:
    """Parse an RTMP audio message body (an FLV AUDIODATA tag body)."""
    n = len(payload)
    if n < 1:
        raise FlvError("empty audio message")
    fmt = payload[0] >> 4
    mv = memoryview(payload)
    if fmt != 10:
        return AudioTag(AUDIO_FORMATS.get(fmt, f"sound format {fmt}"), OTHER, mv[1:])
    if n < 2:
        raise FlvError("AAC audio header truncated")
    kind = CONFIG if payload[1] == 0 else FRAME if payload[1] == 1 else OTHER
    return AudioTag("AAC", kind, mv[2:])


# --------------------------------------------------------------------------- FLV files


class Tag(NamedTuple):
    """One FLV file tag: type (8 audio, 9 video, 18 script data), ms timestamp, body."""

    type_id: int
    timestamp: int
    data: bytes


def read_file(data: bytes) -> Iterator[Tag]:
    """The tags of an FLV file held in memory."""
    if len(data) < 9 or data[:3] != b"FLV":
        raise FlvError("not an FLV file")
    pos = struct.unpack_from("!I", data, 5)[0] + 4  # header, then PreviousTagSize0
    n = len(data)
    while pos + 11 <= n:
        type_id = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        start = pos + 11
        if start + size > n:
            return
        yield Tag(type_id, ts, data[start : start + size])
        pos = start + size + 4


# --------------------------------------------------------------------------- ingest


@dataclass
class IngestStats:
    """What the ingest dropped and why."""

    video_frames: int = 0
    audio_frames: int = 0
    dropped_frames: int = 0  # no VCL NAL unit (SEI only, parameter sets only), bad AVCC
    unsupported_video: int = 0
    unsupported_audio: int = 0
    malformed: int = 0
    late_audio: int = 0  # audio of a stream already started without an audio track


@dataclass
class _VideoConfig:
    codec: str
    length_size: int
    params: list[bytes]  # SPS+PPS (H.264) or VPS+SPS+PPS (H.265), in that order
    raw: bytes


@dataclass
class _Track:
    index: int
    pt: int
    clock: int
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq: int = field(default_factory=lambda: random.getrandbits(16))
    last_ts: int = -1  # audio: the last RTP timestamp, for sample-exact spacing


class FlvIngest:
    """One publisher's FLV tags -> an SDP and RTP packets, through two callbacks.

    ``on_publish(sdp_text)`` is called once the media is known (video sequence header and
    the first keyframe, plus the AAC sequence header if it came before; or audio only
    when no video shows up) and again when a sequence header changes; it may raise to
    refuse. ``on_packet(track_index, rtp_packet)`` gets every RTP packet afterwards.
    """

    def __init__(
        self,
        on_publish: Callable[[str], None],
        on_packet: Callable[[int, bytes], None],
        *,
        name: str = "rtmp",
        mtu: int = MTU,
        audio_only_after: int = 50,
    ) -> None:
        self.on_publish = on_publish
        self.on_packet = on_packet
        self.name = name
        self.mtu = mtu
        self.audio_only_after = audio_only_after
        self.metadata: dict[str, Any] = {}
        self.stats = IngestStats()
        self.video: _VideoConfig | None = None
        self.audio: aac.AacConfig | None = None
        self.published = False
        self.sdp = ""
        self._vtrack: _Track | None = None
        self._atrack: _Track | None = None
        self._audio_before_video = 0
        self._video_seen = False
        self._warned: set[str] = set()
        # Lazy packetising: with ``needed`` set, access units after a keyframe are held
        # (not packetised) while needed() is false, and packetised in order once it is
        # true; keyframes always go out so the stream's GOP cache and snapshots have them.
        self.needed: Callable[[], bool] | None = None
        self.on_count: Callable[[int, int], None] | None = None
        self.max_held_bytes = 8 * 1024 * 1024
        self.max_held_ms = 5000
        self._held: list[tuple[_Track, int, bytes, int, bool]] = []
        self._held_bytes = 0
        self._last_emit = 0

    # ------------------------------------------------------------------ helpers
    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s: " + msg, self.name, *args)

    def set_metadata(self, meta: dict[str, Any]) -> None:
        """Keep onMetaData (declared resolution, frame rate, bitrates, encoder)."""
        self.metadata = dict(meta)

    def build_sdp(self) -> str:
        """The SDP of the current video/audio configuration."""
        lines = ["v=0", "o=- 0 0 IN IP4 127.0.0.1", f"s={self.name}", "t=0 0"]
        meta = self.metadata
        v = self.video
        if v is not None:
            lines.append(f"m=video 0 RTP/AVP {VIDEO_PT}")
            rate = _number(meta.get("videodatarate"))
            if rate and 0 < rate < _MAX_KBPS:  # not inf, which int() refuses
                lines.append(f"b=AS:{int(rate)}")
            if v.codec == "H264":
                lines.append(f"a=rtpmap:{VIDEO_PT} H264/90000")
                fmtp = ["packetization-mode=1"]
                sps = [p for p in v.params if p[0] & 0x1F == h264.NAL_SPS]
                pps = [p for p in v.params if p[0] & 0x1F == h264.NAL_PPS]
                if sps:
                    try:
                        fmtp.append(f"profile-level-id={h264.profile_level_id(sps[0])}")
                    except h264.H264Error:
                        pass
                    if pps:
                        fmtp.append(
                            f"sprop-parameter-sets={h264.sprop_parameter_sets(sps[0], pps[0])}"
                        )
                lines.append(f"a=fmtp:{VIDEO_PT} {';'.join(fmtp)}")
            else:
                lines.append(f"a=rtpmap:{VIDEO_PT} H265/90000")
                by_type: dict[int, bytes] = {}
                for p in v.params:
                    by_type.setdefault(h265.nal_type(p), p)
                if all(t in by_type for t in (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS)):
                    fmtp_text = h265.sprop_fmtp(
                        by_type[h265.NAL_VPS], by_type[h265.NAL_SPS], by_type[h265.NAL_PPS]
                    )
                    lines.append(f"a=fmtp:{VIDEO_PT} {fmtp_text}")
            fps = _number(meta.get("framerate") or meta.get("fps"))
            if fps and 0 < fps < 1000:
                lines.append(f"a=framerate:{fps:g}")
            lines.append("a=control:trackID=0")
        a = self.audio
        if a is not None:
            channels = a.channels or 2
            lines.append(f"m=audio 0 RTP/AVP {AUDIO_PT}")
            rate = _number(meta.get("audiodatarate"))
            if rate and 0 < rate < _MAX_KBPS:  # not inf, which int() refuses
                lines.append(f"b=AS:{int(rate)}")
            lines.append(f"a=rtpmap:{AUDIO_PT} MPEG4-GENERIC/{a.sample_rate}/{channels}")
            lines.append(f"a=fmtp:{aac.fmtp_mpeg4_generic(a, AUDIO_PT)}")
            lines.append(f"a=control:trackID={1 if v is not None else 0}")
        return "\r\n".join(lines) + "\r\n"

    def _publish(self) -> None:
        sdp = self.build_sdp()
        self._drop_held()
        self.on_publish(sdp)  # may raise: the caller refuses the publisher
        self.sdp = sdp
        self.published = True
        old_v, old_a = self._vtrack, self._atrack
        index = 0
        self._vtrack = self._atrack = None
        if self.video is not None:
            self._vtrack = old_v or _Track(0, VIDEO_PT, 90000)
            self._vtrack.index = index
            index += 1
        if self.audio is not None:
            self._atrack = old_a or _Track(0, AUDIO_PT, self.audio.sample_rate)
            self._atrack.index = index
            self._atrack.clock = self.audio.sample_rate

    def _send(self, track: _Track, ts: int, payloads: list[bytes]) -> None:
        seq = track.seq
        last = len(payloads) - 1
        emit = self.on_packet
        index = track.index
        build = rtp.build
        for i, p in enumerate(payloads):
            emit(index, build(track.pt, seq, ts, track.ssrc, p, i == last))
            seq = (seq + 1) & 0xFFFF
        track.seq = seq

    # ------------------------------------------------------------------ video
    def video_message(self, timestamp: int, payload: bytes) -> None:
        """Take one RTMP video message (timestamp in ms)."""
        try:
            codec, kind, _key, cts, offset = video_header(payload)
        except FlvError as exc:
            self.stats.malformed += 1
            self._warn_once("bad-video", "malformed video message: %s", exc)
            return
        if kind == FRAME:
            self._video_frame(timestamp, codec, cts, payload, offset)
        elif kind == CONFIG:
            self._video_config(codec, bytes(payload[offset:]))
        elif kind == OTHER and codec not in ("H264", "H265"):
            self.stats.unsupported_video += 1
            self._warn_once("codec-" + codec, "video codec %s is not supported; dropping it", codec)

    def _video_config(self, codec: str, raw: bytes) -> None:
        if self.video is not None and self.video.raw == raw and self.video.codec == codec:
            return
        try:
            if codec == "H264":
                avc = h264.parse_avc_config(raw)
                cfg = _VideoConfig("H264", avc.length_size, [*avc.sps, *avc.pps], raw)
            else:
                hevc = h265.parse_hevc_config(raw)
                cfg = _VideoConfig("H265", hevc.length_size, [*hevc.vps, *hevc.sps, *hevc.pps], raw)
        except ValueError as exc:
            self.stats.malformed += 1
            self._warn_once("bad-config", "bad %s sequence header: %s", codec, exc)
            return
        self._video_seen = True
        changed = self.video is not None
        self.video = cfg
        if self.published and changed:
            log.info("%s: %s sequence header changed; re-announcing", self.name, cfg.codec)
            self._publish()

    def _video_frame(self, timestamp: int, codec: str, cts: int, payload: bytes, off: int) -> None:
        cfg = self.video
        if cfg is None or cfg.codec != codec:
            self.stats.dropped_frames += 1
            self._warn_once("no-config", "%s frame before its sequence header; dropped", codec)
            return
        try:
            vcl, key, has_params = scan_nal_units(payload, off, cfg.length_size, codec)
        except FlvError as exc:
            self.stats.malformed += 1
            self.stats.dropped_frames += 1
            self._warn_once("bad-avcc", "malformed %s frame: %s", codec, exc)
            return
        if has_params:
            nals = h264.nals_from_avcc(memoryview(payload)[off:], cfg.length_size)
            self._update_params(cfg, nals)
        if not vcl:
            self.stats.dropped_frames += 1  # SEI / parameter sets / AUD only
            return
        if not self.published:
            if not key:
                self.stats.dropped_frames += 1
                return
            self._publish()
        track = self._vtrack
        if track is None:
            return
        self.stats.video_frames += 1
        ts = ((timestamp + cts) * 90) & 0xFFFFFFFF
        needed = self.needed
        if needed is not None:
            if key:
                if self._held and not needed():
                    self._drop_held()  # the stream's GOP cache restarts at this keyframe
            elif self._may_hold(timestamp, needed):
                self._hold(track, ts, payload, off, True)
                return
            if self._held:
                self._flush_held()
        self._last_emit = timestamp
        self._emit_video(track, ts, payload, off, key and not has_params)

    def _emit_video(
        self, track: _Track, ts: int, payload: bytes, off: int, add_params: bool
    ) -> None:
        cfg = self.video
        assert cfg is not None
        nals = h264.nals_from_avcc(memoryview(payload)[off:], cfg.length_size)
        if add_params:
            # Readers joining at this keyframe need the parameter sets in-band.
            if nals and self._is_aud(cfg.codec, nals[0]):
                nals = [nals[0], *cfg.params, *nals[1:]]
            else:
                nals = [*cfg.params, *nals]
        if cfg.codec == "H264":
            payloads = h264.packetize(nals, self.mtu)
        else:
            payloads = h265.packetize(nals, self.mtu)
        self._send(track, ts, payloads)

    # ------------------------------------------------------------------ lazy packetising
    def _may_hold(self, timestamp: int, needed: Callable[[], bool]) -> bool:
        return (
            not needed()
            and self._held_bytes < self.max_held_bytes
            and (timestamp - self._last_emit) & 0xFFFFFFFF < self.max_held_ms
        )

    def _hold(self, track: _Track, ts: int, payload: bytes, off: int, video: bool) -> None:
        size = len(payload) - off
        self._held.append((track, ts, payload, off, video))
        self._held_bytes += size
        if self.on_count is not None:
            self.on_count(_rtp_size(size), 1 if video else 0)

    def _drop_held(self) -> None:
        self._held.clear()
        self._held_bytes = 0

    def _flush_held(self) -> None:
        """Packetise what was held back (oldest first); it counts once, as RTP input."""
        held = self._held
        self._held = []
        self._held_bytes = 0
        count = self.on_count
        for track, ts, payload, off, video in held:
            if count is not None:
                count(-_rtp_size(len(payload) - off), -1 if video else 0)
            if video:
                self._emit_video(track, ts, payload, off, False)
            else:
                self._emit_audio(track, ts, payload[off:])

    @staticmethod
    def _is_aud(codec: str, nal: bytes) -> bool:
        if codec == "H264":
            return nal[0] & 0x1F == h264.NAL_AUD
        return len(nal) > 1 and (nal[0] >> 1) & 0x3F == h265.NAL_AUD

    @staticmethod
    def _update_params(cfg: _VideoConfig, nals: list[bytes]) -> None:
        """In-band parameter sets replace the stored ones (same order: [V]PS, SPS, PPS)."""
        if cfg.codec == "H264":
            found = {nal[0] & 0x1F: nal for nal in nals if nal[0] & 0x1F in (7, 8)}
            order = (7, 8)
            kind: Callable[[bytes], int] = lambda p: p[0] & 0x1F  # noqa: E731
        else:
            found = {(nal[0] >> 1) & 0x3F: nal for nal in nals if 32 <= (nal[0] >> 1) & 0x3F <= 34}
            order = (32, 33, 34)
            kind = h265.nal_type
        current = {kind(p): p for p in cfg.params}
        current.update(found)
        cfg.params = [current[t] for t in order if t in current]

    # ------------------------------------------------------------------ audio
    def audio_message(self, timestamp: int, payload: bytes) -> None:
        """Take one RTMP audio message (timestamp in ms)."""
        if len(payload) > 2 and payload[0] >> 4 == 10 and payload[1] == 1 and self.published:
            self._audio_frame(timestamp, payload)  # the common case: a raw AAC frame
            return
        try:
            tag = parse_audio(payload)
        except FlvError as exc:
            self.stats.malformed += 1
            self._warn_once("bad-audio", "malformed audio message: %s", exc)
            return
        if tag.codec != "AAC":
            self.stats.unsupported_audio += 1
            self._warn_once(
                "audio-" + tag.codec, "audio codec %s is not supported; ignoring audio", tag.codec
            )
            return
        if tag.kind == CONFIG:
            self._audio_config(tag)
            return
        if tag.kind != FRAME:
            return
        if not self.published:
            if self.audio is None:
                return
            if self.video is None:
                self._audio_before_video += 1
                if self._wants_audio_only():
                    self._publish()
            if not self.published:
                return
        self._audio_frame(timestamp, payload)

    def _audio_frame(self, timestamp: int, payload: bytes) -> None:
        """A raw AAC frame (``payload[2:]``) of a published stream."""
        track = self._atrack
        if track is None:
            self.stats.late_audio += 1
            return
        size = len(payload) - 2
        if size <= 0:
            return
        if size > 8191:
            self.stats.malformed += 1
            return
        clock = track.clock
        ts = (timestamp * clock // 1000) & 0xFFFFFFFF
        last = track.last_ts
        if last >= 0:
            expected = (last + AAC_FRAME_SAMPLES) & 0xFFFFFFFF
            diff = (ts - expected) & 0xFFFFFFFF
            if diff >= 0x80000000:
                diff -= 0x100000000
            if -AAC_FRAME_SAMPLES // 2 < diff < AAC_FRAME_SAMPLES // 2:
                ts = expected  # millisecond timestamps jitter; keep sample-exact spacing
        track.last_ts = ts
        self.stats.audio_frames += 1
        needed = self.needed
        if needed is not None and self._vtrack is not None:
            if self._may_hold(timestamp, needed):
                self._hold(track, ts, payload, 2, False)
                return
            if self._held:
                self._flush_held()
        self._last_emit = timestamp
        self._emit_audio(track, ts, payload[2:])

    def _emit_audio(self, track: _Track, ts: int, frame: bytes) -> None:
        self.on_packet(
            track.index,
            rtp.build(track.pt, track.seq, ts, track.ssrc, aac.packetize([frame]), True),
        )
        track.seq = (track.seq + 1) & 0xFFFF

    def _wants_audio_only(self) -> bool:
        if self._video_seen:
            return False
        meta = self.metadata
        if meta and not any(k in meta for k in ("videocodecid", "width", "videodatarate")):
            return True  # onMetaData declares no video
        return self._audio_before_video >= self.audio_only_after

    def _audio_config(self, tag: AudioTag) -> None:
        raw = bytes(tag.data)
        if self.audio is not None and self.audio.raw == raw:
            return
        try:
            cfg = aac.parse_audio_specific_config(raw)
        except aac.AacError as exc:
            self.stats.malformed += 1
            self._warn_once("bad-asc", "bad AAC sequence header: %s", exc)
            return
        if self.published and self._atrack is None:
            self._warn_once(
                "late-asc", "AAC sequence header after the stream started; audio ignored"
            )
            return
        changed = self.audio is not None
        self.audio = cfg
        if self.published and changed:
            log.info("%s: AAC sequence header changed; re-announcing", self.name)
            self._publish()


def _rtp_size(payload: int) -> int:
    """About how many RTP bytes a payload of this size becomes (headers included)."""
    return payload + 14 * (payload // MTU + 1)


def scan_nal_units(
    data: bytes | memoryview, offset: int, length_size: int, codec: str
) -> tuple[bool, bool, bool]:
    """(has a VCL unit, has an IDR/IRAP unit, has parameter sets) of AVCC/HVCC data that
    starts at ``offset``. Reads only the NAL unit headers; raises FlvError when a length
    overruns the data."""
    n = len(data)
    pos = offset
    vcl = key = params = False
    avc = codec == "H264"
    four = length_size == 4
    while pos < n:
        end = pos + length_size
        if end > n:
            raise FlvError(f"truncated NAL length at offset {pos} of {n}")
        size = _U32.unpack_from(data, pos)[0] if four else int.from_bytes(data[pos:end], "big")
        if end + size > n:
            raise FlvError(f"NAL length {size} at offset {pos} overruns {n} bytes")
        if size:
            b = data[end]
            if avc:
                t = b & 0x1F
                if 1 <= t <= 5:
                    vcl = True
                    if t == 5:
                        key = True
                elif t == 7 or t == 8:
                    params = True
            else:
                t = (b >> 1) & 0x3F
                if t < 32:
                    vcl = True
                    if 16 <= t <= 21:
                        key = True
                elif 32 <= t <= 34:
                    params = True
        pos = end + size
    return vcl, key, params


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    return None
