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
from dataclasses import dataclass

from onvifcam.media import aac, h264, h265
from onvifcam.media.rtpunits import H264_PARAMS, H265_PARAMS, MuxTrack, RtpAccessUnits
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
_H264_DROP = frozenset((h264.NAL_SPS, h264.NAL_PPS, 9))  # parameter sets, AUD
_H265_DROP = frozenset((*H265_PARAMS, h265.NAL_AUD))


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
class MuxStats:
    """What the muxer sent and skipped."""

    video_frames: int = 0
    audio_frames: int = 0
    skipped_frames: int = 0  # video before the first keyframe with parameter sets
    skipped_audio: int = 0  # audio in a codec RTMP cannot carry here, or undecodable
    config_changes: int = 0


class FlvMuxer(RtpAccessUnits):
    """Access units of a stream's tracks in, RTMP messages ``(type_id, ms, body)`` out."""

    def __init__(self, tracks: Sequence[MuxTrack]) -> None:
        super().__init__(tracks)
        self.stats = MuxStats()
        self._video_cfg: bytes | None = None
        self._audio_sent = False
        self._last_dts = 0
        self._started = False
        self._pending_cfg: bytes | None = None

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

    def _video_au(self, packets: Sequence[bytes], now_ms: float) -> list[tuple[int, int, bytes]]:
        ts, nals, types, key = self._nal_units(packets)
        if ts < 0:
            return []
        codec = self.tracks[self.video].codec
        drop = _H264_DROP if codec == "H264" else _H265_DROP
        params_types = H264_PARAMS if codec == "H264" else H265_PARAMS
        out: list[tuple[int, int, bytes]] = []
        if key:
            found = self._parameter_sets(nals, types)
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
        frames, bad = self._aac_frames(payloads)
        self.stats.skipped_audio += bad
        for n, f in enumerate(frames):
            out.append((AUDIO, max(int(base + n * step), 0), bytes((_AAC_HEADER, 1)) + f))
        n = len(frames)
        self.stats.audio_frames += n
        return out


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
