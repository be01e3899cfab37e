"""RTP access units -> RTMP media messages (FLV tag bodies), for forwarding a stream.

Sans-I/O. :class:`FlvMuxer` takes the access units of a :class:`~onvifcam.media.stream.Stream`
(lists of RTP packets per track, as a reader gets them) and returns RTMP messages: the
``onMetaData`` script data, the AVC / HEVC / AAC sequence headers before the first frame and
again when the parameter sets change, and one message per video frame or AAC frame.
H.264 goes out with the legacy codec id 7, H.265 as Enhanced RTMP (FourCC ``hvc1``), AAC
with sound format 10. Other codecs are counted and skipped.

Timestamps: each track's RTP clock is unwrapped and converted to milliseconds; a track's
first access unit is anchored to the time it arrived (the argument ``now_ms``), so tracks
stay in step as the stream delivered them. RTP carries no decode time: video frames go out
with DTS = PTS, held monotonic (a reordered frame gets a negative composition time, so its
PTS stays exact).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from onvifcam.media import aac, h264, h265, rtp
from onvifcam.rtmp import amf0

__all__ = [
    "AUDIO",
    "DATA",
    "FLV_HEADER",
    "VIDEO",
    "FlvMuxer",
    "MuxTrack",
    "avc_config",
    "flv_file_tag",
    "hevc_config",
]

AUDIO = 8
VIDEO = 9
DATA = 18

_AAC_HEADER = 0xAF  # sound format 10 (AAC), 44 kHz, 16 bit, stereo: fixed for AAC
_H264_PARAMS = (h264.NAL_SPS, h264.NAL_PPS)
_H264_DROP = frozenset((h264.NAL_SPS, h264.NAL_PPS, 9))  # parameter sets, AUD
_H265_PARAMS = (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS)
_H265_DROP = frozenset((*_H265_PARAMS, h265.NAL_AUD))


def avc_config(sps: bytes, pps: bytes) -> bytes:
    """An AVCDecoderConfigurationRecord (ISO 14496-15) for one SPS and one PPS."""
    if len(sps) < 4:
        raise ValueError(f"SPS of {len(sps)} bytes is too short")
    return (
        bytes((1, sps[1], sps[2], sps[3], 0xFF, 0xE1))
        + len(sps).to_bytes(2, "big")
        + sps
        + b"\x01"
        + len(pps).to_bytes(2, "big")
        + pps
    )


def hevc_config(vps: bytes, sps: bytes, pps: bytes) -> bytes:
    """An HEVCDecoderConfigurationRecord (ISO 14496-15) for one VPS, SPS and PPS.

    The 12 bytes of general profile, tier, compatibility and constraint flags and level come
    from the SPS's profile_tier_level; chroma 4:2:0 and 8-bit depth are declared (decoders
    take the real values from the SPS in the arrays).
    """
    rbsp = h264.unescape_rbsp(sps[2:])
    if len(rbsp) < 13:
        raise ValueError(f"SPS of {len(sps)} bytes is too short for profile_tier_level")
    ptl = rbsp[1:13]
    out = bytearray((1,))
    out += ptl
    out += bytes((0xF0, 0x00, 0xFC, 0xFD, 0xF8, 0xF8, 0x00, 0x00, 0x0F, 3))
    for nal in (vps, sps, pps):
        out.append(0x80 | ((nal[0] >> 1) & 0x3F))  # array_completeness = 1
        out += b"\x00\x01" + len(nal).to_bytes(2, "big") + nal
    return bytes(out)


def _si24(v: int) -> bytes:
    return (v & 0xFFFFFF).to_bytes(3, "big")


@dataclass
class MuxTrack:
    """What the muxer needs to know of one track of the stream."""

    kind: str  # "video" or "audio"
    codec: str  # upper case rtpmap encoding: H264, H265, MPEG4-GENERIC, ...
    clock_rate: int
    fmtp: dict[str, str] = field(default_factory=dict)


class _Clock:
    """One track's RTP timestamps unwrapped and in milliseconds from the muxer's start."""

    __slots__ = ("base_ms", "base_ts", "ext", "last", "rate")

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.base_ts: int | None = None
        self.base_ms = 0.0
        self.ext = 0
        self.last = 0

    def ms(self, ts: int, now_ms: float) -> float:
        if self.base_ts is None:
            self.base_ts = ts
            self.base_ms = now_ms
            self.ext = ts
            self.last = ts
            return now_ms
        delta = (ts - self.last) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        self.ext += delta
        self.last = ts
        return self.base_ms + (self.ext - self.base_ts) * 1000.0 / self.rate


@dataclass
class MuxStats:
    """What the muxer sent and skipped."""

    video_frames: int = 0
    audio_frames: int = 0
    skipped_frames: int = 0  # video before the first keyframe with parameter sets
    skipped_audio: int = 0  # audio in a codec RTMP cannot carry here, or undecodable
    config_changes: int = 0


class FlvMuxer:
    """Access units of a stream's tracks in, RTMP messages ``(type_id, ms, body)`` out."""

    def __init__(self, tracks: Sequence[MuxTrack]) -> None:
        self.tracks = list(tracks)
        self.stats = MuxStats()
        self._clocks = [_Clock(max(t.clock_rate, 1)) for t in self.tracks]
        self._t0: float | None = None
        self._video_cfg: bytes | None = None
        self._audio_sent = False
        self._last_dts = 0
        self._started = False
        self._pending_cfg: bytes | None = None
        self.video = next(
            (i for i, t in enumerate(self.tracks) if t.kind == "video" and t.codec in _VIDEO),
            -1,
        )
        self.audio = next(
            (
                i
                for i, t in enumerate(self.tracks)
                if t.kind == "audio" and t.codec == "MPEG4-GENERIC" and t.fmtp.get("config")
            ),
            -1,
        )
        self._asc = b""
        self._aac_sizes = (13, 3, 3)
        if self.audio >= 0:
            f = self.tracks[self.audio].fmtp
            try:
                self._asc = bytes.fromhex(f["config"])
                aac.parse_audio_specific_config(self._asc)
                self._aac_sizes = (
                    int(f.get("sizelength", 13)),
                    int(f.get("indexlength", 3)),
                    int(f.get("indexdeltalength", f.get("indexlength", 3))),
                )
            except ValueError:
                self.audio = -1
        self._sdp_params: list[bytes] = []
        if self.video >= 0:
            t = self.tracks[self.video]
            try:
                if t.codec == "H264":
                    self._sdp_params = h264.parse_sprop_parameter_sets(
                        t.fmtp.get("sprop-parameter-sets", "")
                    )
                else:
                    self._sdp_params = h265.parse_sprop(t.fmtp)
            except ValueError:
                self._sdp_params = []

    @property
    def video_codec(self) -> str | None:
        """H264 or H265 when the stream has video the muxer sends, else None."""
        return self.tracks[self.video].codec if self.video >= 0 else None

    def metadata(self, width: int = 0, height: int = 0, fps: float = 0.0) -> tuple[int, int, bytes]:
        """The ``@setDataFrame onMetaData`` message."""
        meta: dict[str, object] = {"encoder": "onvifcam"}
        if self.video >= 0:
            meta["videocodecid"] = 7.0 if self.video_codec == "H264" else 12.0
            if width and height:
                meta["width"] = float(width)
                meta["height"] = float(height)
            if fps:
                meta["framerate"] = float(fps)
        if self.audio >= 0:
            cfg = aac.parse_audio_specific_config(self._asc)
            meta["audiocodecid"] = 10.0
            meta["audiosamplerate"] = float(cfg.extension_sample_rate or cfg.sample_rate)
            meta["audiochannels"] = float(cfg.channels or 2)
            meta["stereo"] = (cfg.channels or 2) > 1
        return DATA, 0, amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(meta))

    def push(
        self, track: int, packets: Sequence[bytes], now_ms: float
    ) -> list[tuple[int, int, bytes]]:
        """One access unit (its RTP packets) of ``track``; the messages to send for it."""
        if track == self.video:
            return self._video_au(packets, now_ms)
        if track == self.audio:
            return self._audio_au(packets, now_ms)
        self.stats.skipped_audio += 1
        return []

    def _payloads(self, packets: Sequence[bytes]) -> tuple[int, list[bytes | None]]:
        ts = -1
        out: list[bytes | None] = []
        for p in packets:
            try:
                h = rtp.parse(p)
            except rtp.RtpError:
                out.append(None)
                continue
            if ts < 0:
                ts = h.timestamp
            out.append(p[h.payload_start : h.payload_end])
        return ts, out

    def _anchor(self, now_ms: float) -> float:
        if self._t0 is None:
            self._t0 = now_ms
        return now_ms - self._t0

    def _video_au(self, packets: Sequence[bytes], now_ms: float) -> list[tuple[int, int, bytes]]:
        ts, payloads = self._payloads(packets)
        if ts < 0:
            return []
        codec = self.tracks[self.video].codec
        if codec == "H264":
            nals = h264.depacketize(payloads)
            types = [n[0] & 0x1F for n in nals]
            key = h264.NAL_IDR in types
            params_types, drop = _H264_PARAMS, _H264_DROP
        else:
            nals = h265.depacketize(payloads)
            types = [(n[0] >> 1) & 0x3F if len(n) > 1 else -1 for n in nals]
            key = any(h265.NAL_IRAP_FIRST <= t <= h265.NAL_IRAP_LAST for t in types)
            params_types, drop = _H265_PARAMS, _H265_DROP
        out: list[tuple[int, int, bytes]] = []
        if key:
            found: dict[int, bytes] = {}
            for n, t in zip(nals, types, strict=True):
                if t in params_types:
                    found.setdefault(t, n)
            if len(found) < len(params_types):
                for n in self._sdp_params:
                    t = n[0] & 0x1F if codec == "H264" else (n[0] >> 1) & 0x3F
                    found.setdefault(t, n)
            if len(found) == len(params_types):
                try:
                    if codec == "H264":
                        cfg = avc_config(found[h264.NAL_SPS], found[h264.NAL_PPS])
                    else:
                        cfg = hevc_config(
                            found[h265.NAL_VPS], found[h265.NAL_SPS], found[h265.NAL_PPS]
                        )
                except ValueError:
                    cfg = None
                if cfg is not None and cfg != self._video_cfg:
                    if self._video_cfg is not None:
                        self.stats.config_changes += 1
                    self._video_cfg = cfg
                    self._pending_cfg = cfg
                    self._started = True
            elif self._video_cfg is not None:
                self._started = True
        if not self._started:
            self.stats.skipped_frames += 1
            return out
        pts = self._clocks[self.video].ms(ts, self._anchor(now_ms))
        pts_i = max(int(pts), 0)
        dts = max(pts_i, self._last_dts)
        self._last_dts = dts
        if self.audio >= 0 and not self._audio_sent:
            # receivers (ours, nginx-rtmp) take the AAC config only before the first frame
            self._audio_sent = True
            out.append((AUDIO, dts, bytes((_AAC_HEADER, 0)) + self._asc))
        cfg = self._pending_cfg
        if cfg is not None:
            self._pending_cfg = None
            if codec == "H264":
                out.append((VIDEO, dts, b"\x17\x00\x00\x00\x00" + cfg))
            else:
                out.append((VIDEO, dts, b"\x90hvc1" + cfg))
        body = b"".join(
            len(n).to_bytes(4, "big") + n for n, t in zip(nals, types, strict=True) if t not in drop
        )
        if not body:
            return out
        cts = _si24(pts_i - dts)
        if codec == "H264":
            head = (b"\x17\x01" if key else b"\x27\x01") + cts
        else:
            head = (b"\x91hvc1" if key else b"\xa1hvc1") + cts
        out.append((VIDEO, dts, head + body))
        self.stats.video_frames += 1
        return out

    def _audio_au(self, packets: Sequence[bytes], now_ms: float) -> list[tuple[int, int, bytes]]:
        ts, payloads = self._payloads(packets)
        if ts < 0:
            return []
        clock = self._clocks[self.audio]
        out: list[tuple[int, int, bytes]] = []
        if self.video >= 0 and not self._started:
            self.stats.skipped_audio += 1
            return out  # audio starts with the video, so a receiver sees both from the start
        base = clock.ms(ts, self._anchor(now_ms))
        if not self._audio_sent:
            self._audio_sent = True
            out.append((AUDIO, max(int(base), 0), bytes((_AAC_HEADER, 0)) + self._asc))
        step = 1024_000.0 / clock.rate
        n = 0
        for p in payloads:
            if p is None:
                continue
            try:
                frames = aac.depacketize(p, *self._aac_sizes)
            except ValueError:
                self.stats.skipped_audio += 1
                continue
            for f in frames:
                out.append((AUDIO, max(int(base + n * step), 0), bytes((_AAC_HEADER, 1)) + f))
                n += 1
        self.stats.audio_frames += n
        return out


_VIDEO = frozenset(("H264", "H265", "HEVC"))


FLV_HEADER = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"  # audio+video, PreviousTagSize0


def flv_file_tag(type_id: int, timestamp: int, body: bytes) -> bytes:
    """One FLV file tag (with its PreviousTagSize) of a message, for writing .flv files."""
    ts = timestamp & 0xFFFFFFFF
    head = (
        bytes((type_id,))
        + len(body).to_bytes(3, "big")
        + (ts & 0xFFFFFF).to_bytes(3, "big")
        + bytes((ts >> 24,))
        + b"\x00\x00\x00"
    )
    return head + body + (11 + len(body)).to_bytes(4, "big")
