"""A stream's RTP access units back to codec units, for the remuxers (FLV, MPEG-TS).

Sans-I/O. :class:`RtpAccessUnits` knows the tracks of a :class:`~onvifcam.media.stream.Stream`
(as :class:`MuxTrack`) and turns one access unit (its RTP packets, as a reader gets them)
into NAL units (H.264 / H.265, RFC 6184 / 7798) or raw AAC frames (RFC 3640), and RTP
time into milliseconds. It picks the first H.264/H.265 video track and the first AAC track
with a configuration; other tracks are the remuxer's to skip. The remuxers
(:class:`onvifcam.rtmp.publisher.FlvMuxer`, :class:`onvifcam.media.tsmux.RtpTsMuxer`)
subclass it and add their container.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from onvifcam.media import aac, h264, h265, rtp

__all__ = ["H264_PARAMS", "H265_PARAMS", "VIDEO_CODECS", "MuxTrack", "RtpAccessUnits"]

H264_PARAMS = (h264.NAL_SPS, h264.NAL_PPS)
H265_PARAMS = (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS)
VIDEO_CODECS = frozenset(("H264", "H265", "HEVC"))


@dataclass
class MuxTrack:
    """What a remuxer needs to know of one track of the stream."""

    kind: str  # "video" or "audio"
    codec: str  # upper case rtpmap encoding: H264, H265, MPEG4-GENERIC, ...
    clock_rate: int
    fmtp: dict[str, str] = field(default_factory=dict)


class Clock:
    """One track's RTP timestamps unwrapped and in milliseconds from the muxer's start."""

    __slots__ = ("base_ms", "base_ts", "ext", "last", "rate")

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.base_ts: int | None = None
        self.base_ms = 0.0
        self.ext = 0
        self.last = 0

    def ms(self, ts: int, now_ms: float) -> float:
        """``ts`` in ms; the first call anchors the clock at ``now_ms``."""
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


class RtpAccessUnits:
    """RTP access units of a stream's tracks -> NAL units / AAC frames and times."""

    def __init__(self, tracks: Sequence[MuxTrack]) -> None:
        self.tracks = list(tracks)
        self._clocks = [Clock(max(t.clock_rate, 1)) for t in self.tracks]
        self._t0: float | None = None
        self.video = next(
            (i for i, t in enumerate(self.tracks) if t.kind == "video" and t.codec in VIDEO_CODECS),
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

    @property
    def audio_config(self) -> bytes:
        """The AAC AudioSpecificConfig (empty without AAC)."""
        return self._asc

    def _payloads(self, packets: Sequence[bytes]) -> tuple[int, list[bytes | None]]:
        """The RTP timestamp (-1: none parsed) and payloads (None: unparsable) of a unit."""
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

    def _nal_units(self, packets: Sequence[bytes]) -> tuple[int, list[bytes], list[int], bool]:
        """A video access unit: RTP timestamp (-1: none), NAL units, their types, keyframe."""
        ts, payloads = self._payloads(packets)
        if ts < 0:
            return ts, [], [], False
        if self.tracks[self.video].codec == "H264":
            nals = h264.depacketize(payloads)
            types = [n[0] & 0x1F for n in nals]
            return ts, nals, types, h264.NAL_IDR in types
        nals = h265.depacketize(payloads)
        types = [(n[0] >> 1) & 0x3F if len(n) > 1 else -1 for n in nals]
        key = any(h265.NAL_IRAP_FIRST <= t <= h265.NAL_IRAP_LAST for t in types)
        return ts, nals, types, key

    def _parameter_sets(self, nals: list[bytes], types: list[int]) -> dict[int, bytes]:
        """The parameter sets of a keyframe by NAL type: its own, else the SDP's."""
        h264_codec = self.tracks[self.video].codec == "H264"
        wanted = H264_PARAMS if h264_codec else H265_PARAMS
        found: dict[int, bytes] = {}
        for n, t in zip(nals, types, strict=True):
            if t in wanted:
                found.setdefault(t, n)
        if len(found) < len(wanted):
            for n in self._sdp_params:
                t = n[0] & 0x1F if h264_codec else (n[0] >> 1) & 0x3F
                found.setdefault(t, n)
        return found

    def _aac_frames(self, payloads: list[bytes | None]) -> tuple[list[bytes], int]:
        """Raw AAC frames of an audio unit's payloads, and how many payloads were bad."""
        frames: list[bytes] = []
        bad = 0
        for p in payloads:
            if p is None:
                continue
            try:
                frames.extend(aac.depacketize(p, *self._aac_sizes))
            except ValueError:
                bad += 1
        return frames, bad
