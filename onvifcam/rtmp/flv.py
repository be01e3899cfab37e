"""FLV tag bodies (as carried in RTMP audio/video messages) and their access units.

Sans-I/O. :func:`parse_video` / :func:`parse_audio` read the FLV VIDEODATA / AUDIODATA
headers: legacy codec ids (7 = AVC, 12 = HEVC as deployed by Chinese CDNs and FFmpeg
forks) and Enhanced RTMP v1 (``IsExHeader`` bit, FourCC ``avc1``/``hvc1``, packet types
SequenceStart, CodedFrames, CodedFramesX, SequenceEnd). :class:`FlvIngest` turns the tags
of one publisher into track specs and access units (AVCC NAL units, PTS from the
composition time, AAC frames) for a :class:`~onvifcam.media.packetizer.Packetizer`, which
makes the SessionDescription and the RTP packets.
:func:`read_file` splits an FLV file into tags (tests and the benchmark replay files).
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

from onvifcam.media import aac, h264, h265
from onvifcam.media.packetizer import (
    MTU,
    AacSpec,
    LengthPrefixed,
    Packetizer,
    TrackSpec,
    VideoSpec,
    merge_parameter_sets,
)
from onvifcam.media.sdp import SessionDescription

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
_MAX_NUMBER = 1e9  # onMetaData sizes, rates and bitrates above this are ignored

_U32 = struct.Struct("!I")
_lp = tuple.__new__  # LengthPrefixed without NamedTuple's Python-level __new__ (hot path)


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


class FlvIngest:
    """One publisher's FLV tags -> access units for a :class:`Packetizer`.

    FLV parsing stays here (AVCC/HVCC NAL units, composition time -> PTS, sequence
    headers, onMetaData); RTP and the SDP are the packetizer's (``self.packetizer``, which
    also does the lazy packetising: set its ``needed`` and ``on_count``).

    ``on_publish(session)`` is called once the media is known (video sequence header and
    the first keyframe, plus the AAC sequence header if it came before; or audio only
    when no video shows up) and again when a sequence header changes; it may raise to
    refuse. ``on_packet(track_index, rtp_packet)`` gets every RTP packet afterwards
    (``self.packetizer.on_packet``).
    """

    def __init__(
        self,
        on_publish: Callable[[SessionDescription], None],
        on_packet: Callable[[int, bytes], None],
        *,
        name: str = "rtmp",
        mtu: int = MTU,
        audio_only_after: int = 50,
    ) -> None:
        self.on_publish = on_publish
        self.packetizer = Packetizer(on_packet, name=name, mtu=mtu, time_base=Fraction(1, 1000))
        self.name = name
        self.audio_only_after = audio_only_after
        self.metadata: dict[str, Any] = {}
        self.stats = IngestStats()
        self.video: _VideoConfig | None = None
        self.audio: aac.AacConfig | None = None
        self.published = False
        self.session: SessionDescription | None = None
        self._vindex: int | None = None  # packetizer track of the video, once published
        self._aindex: int | None = None
        self._audio_before_video = 0
        self._video_seen = False
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ helpers
    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s: " + msg, self.name, *args)

    def set_metadata(self, meta: dict[str, Any]) -> None:
        """Keep onMetaData (declared resolution, frame rate, bitrates, encoder)."""
        self.metadata = dict(meta)

    def track_specs(self) -> list[TrackSpec]:
        """The packetizer tracks of the current video/audio configuration (video first)."""
        meta = self.metadata
        specs: list[TrackSpec] = []
        v = self.video
        if v is not None:
            # the declared size goes to the SDP (a=x-dimensions): the stream's statistics
            # show it beside the measured one (SPS)
            width, height = _number(meta.get("width")), _number(meta.get("height"))
            size = width is not None and height is not None and width >= 1 and height >= 1
            specs.append(
                VideoSpec(
                    v.codec,
                    list(v.params),
                    width=int(width) if size and width is not None else None,
                    height=int(height) if size and height is not None else None,
                    fps=_number(meta.get("framerate") or meta.get("fps")),
                    bitrate=_number(meta.get("videodatarate")),
                )
            )
        if self.audio is not None:
            specs.append(
                AacSpec.from_config(self.audio, bitrate=_number(meta.get("audiodatarate")))
            )
        return specs

    def _publish(self) -> None:
        session = self.packetizer.configure(self.track_specs())  # drops held access units
        self.on_publish(session)  # may raise: the caller refuses the publisher
        self.session = session
        self.published = True
        self._vindex = 0 if self.video is not None else None
        self._aindex = None if self.audio is None else 0 if self.video is None else 1

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
        nals: list[bytes] | None = None
        if has_params:
            # In-band parameter sets replace the stored ones (for the SDP and keyframes).
            nals = h264.nals_from_avcc(memoryview(payload)[off:], cfg.length_size)
            cfg.params = merge_parameter_sets(cfg.codec, cfg.params, nals)
            if self._vindex is not None:
                self.packetizer.set_parameter_sets(self._vindex, cfg.params)
        if not vcl:
            self.stats.dropped_frames += 1  # SEI / parameter sets / AUD only
            return
        if not self.published:
            if not key:
                self.stats.dropped_frames += 1
                return
            self._publish()
        vindex = self._vindex
        if vindex is None:
            return
        self.stats.video_frames += 1
        self.packetizer.on_access_unit(
            vindex,
            timestamp + cts,
            timestamp,
            nals if nals is not None else _lp(LengthPrefixed, (payload, off, cfg.length_size)),
            key,
            params_in_band=has_params,
        )

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
        aindex = self._aindex
        if aindex is None:
            self.stats.late_audio += 1
            return
        size = len(payload) - 2
        if size <= 0:
            return
        if size > 8191:
            self.stats.malformed += 1
            return
        self.stats.audio_frames += 1
        self.packetizer.on_access_unit(aindex, timestamp, timestamp, payload[2:])

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
        if self.published and self._aindex is None:
            self._warn_once(
                "late-asc", "AAC sequence header after the stream started; audio ignored"
            )
            return
        changed = self.audio is not None
        self.audio = cfg
        if self.published and changed:
            log.info("%s: AAC sequence header changed; re-announcing", self.name)
            self._publish()


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
    """An onMetaData number, or None when absent or unusable (bool, NaN, infinite, absurd)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and 0 < number < _MAX_NUMBER else None
