"""Sans-I/O MPEG-TS muxer: access units in, 188-byte transport packets out.

:class:`TsMuxer` writes one program (PAT, PMT, one H.264/H.265 and/or one AAC stream):

* video access units go out in Annex B with an access unit delimiter first and, on a
  keyframe, the parameter sets before the picture when the unit does not carry them;
* AAC frames (raw, as RTP carries them) get an ADTS header each; one PES per call;
* PAT and PMT go out before the first packet, before every keyframe and at least every
  ``psi_interval`` (90 kHz ticks, 100 ms by default);
* the PCR rides on the video PID (the audio PID without video) in the adaptation field of
  each PES's first packet, ``pcr_delay`` ticks before its DTS; keyframes set
  random_access_indicator;
* continuity counters per PID; a PES's last packet is filled up with adaptation-field
  stuffing.

Timestamps are 90 kHz ticks (wrapped to 33 bits on the wire). Output is grouped into
payloads of ``packets_per_payload`` packets (7 x 188 = 1316 bytes, what SRT carries):
:meth:`TsMuxer.video` and :meth:`TsMuxer.audio` return the complete payloads, each with
the DTS of the unit that completed it; :meth:`TsMuxer.flush` returns the rest.

:class:`RtpTsMuxer` feeds it from a stream's RTP access units (reusing
:class:`~onvifcam.media.rtpunits.RtpAccessUnits`, as the FLV muxer does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from onvifcam.media import aac, h264, h265
from onvifcam.media.mpegts import PACKET_SIZE, crc32_mpeg2
from onvifcam.media.rtpunits import H264_PARAMS, H265_PARAMS, MuxTrack, RtpAccessUnits

__all__ = ["STREAM_TYPES", "RtpTsMuxer", "TsMuxStats", "TsMuxer", "adts_header"]

STREAM_TYPES = {"H264": 0x1B, "H265": 0x24, "AAC": 0x0F}
_MASK33 = (1 << 33) - 1
_AUD = {"H264": b"\x09\xf0", "H265": b"\x46\x01\x50"}
_START = b"\x00\x00\x00\x01"
_PAYLOAD = PACKET_SIZE - 4
_ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


def adts_header(cfg: aac.AacConfig, frame_len: int) -> bytes:
    """The 7-byte ADTS header (no CRC) of a raw AAC frame of ``frame_len`` bytes."""
    profile = max(min(cfg.object_type, 4), 1) - 1
    try:
        rate = _ADTS_RATES.index(cfg.sample_rate)
    except ValueError:
        rate = 4  # 44.1 kHz: an explicit rate has no ADTS index
    ch = cfg.channels & 7
    n = min(frame_len + 7, 0x1FFF)
    return bytes(
        (
            0xFF,
            0xF1,
            (profile << 6) | (rate << 2) | (ch >> 2),
            ((ch & 3) << 6) | (n >> 11),
            (n >> 3) & 0xFF,
            ((n & 7) << 5) | 0x1F,
            0xFC,
        )
    )


def _timestamp(prefix: int, ts: int) -> bytes:
    ts &= _MASK33
    return bytes(
        (
            (prefix << 4) | ((ts >> 29) & 0x0E) | 1,
            (ts >> 22) & 0xFF,
            ((ts >> 14) & 0xFE) | 1,
            (ts >> 7) & 0xFF,
            ((ts << 1) & 0xFE) | 1,
        )
    )


def _pcr(ticks: int) -> bytes:
    base = ticks & _MASK33
    return bytes(
        (
            (base >> 25) & 0xFF,
            (base >> 17) & 0xFF,
            (base >> 9) & 0xFF,
            (base >> 1) & 0xFF,
            ((base & 1) << 7) | 0x7E,
            0,
        )
    )


@dataclass
class TsMuxStats:
    """What the muxer wrote."""

    packets: int = 0
    video_units: int = 0
    audio_frames: int = 0
    psi: int = 0  # PAT+PMT pairs


class TsMuxer:
    """One program: ``video`` ("H264", "H265" or None) and/or AAC (``audio``)."""

    def __init__(
        self,
        video: str | None,
        audio: bool,
        *,
        video_pid: int = 0x100,
        audio_pid: int = 0x101,
        pmt_pid: int = 0x1000,
        program: int = 1,
        psi_interval: int = 9000,
        pcr_delay: int = 9000,
        packets_per_payload: int = 7,
    ) -> None:
        if video not in (None, "H264", "H265"):
            raise ValueError(f"MPEG-TS video here is H264 or H265, not {video}")
        if video is None and not audio:
            raise ValueError("a program needs video or audio")
        self.codec = video
        self.has_audio = audio
        self.video_pid = video_pid
        self.audio_pid = audio_pid
        self.pmt_pid = pmt_pid
        self.program = program
        self.psi_interval = psi_interval
        self.pcr_delay = pcr_delay
        self.payload_size = packets_per_payload * PACKET_SIZE
        self.pcr_pid = video_pid if video else audio_pid
        self.stats = TsMuxStats()
        self._cc: dict[int, int] = {}
        self._buf = bytearray()
        self._last_psi: int | None = None
        self._pat = self._section(0x00, 1, program.to_bytes(2, "big") + _pid13(pmt_pid))
        streams = b""
        if video:
            streams += bytes((STREAM_TYPES[video],)) + _pid13(video_pid) + b"\xf0\x00"
        if audio:
            streams += bytes((STREAM_TYPES["AAC"],)) + _pid13(audio_pid) + b"\xf0\x00"
        self._pmt = self._section(0x02, program, _pid13(self.pcr_pid) + b"\xf0\x00" + streams)

    # ------------------------------------------------------------------ input
    def video(
        self,
        pts: int,
        dts: int,
        nals: Sequence[bytes],
        key: bool,
        params: Sequence[bytes] = (),
    ) -> list[tuple[int, bytes]]:
        """One video access unit (NAL units without start codes); ``params`` are written
        before a keyframe that lacks parameter sets. Returns complete payloads."""
        if self.codec is None:
            raise ValueError("this program has no video")
        h264_codec = self.codec == "H264"
        aud = h264.NAL_AUD if h264_codec else h265.NAL_AUD
        ptypes = H264_PARAMS if h264_codec else H265_PARAMS
        parts = [_START, _AUD[self.codec]]
        have = set()
        body: list[bytes] = []
        for n in nals:
            if not n:
                continue
            t = (n[0] & 0x1F) if h264_codec else (n[0] >> 1) & 0x3F
            if t == aud:
                continue
            if t in ptypes:
                have.add(t)
            body.append(n)
        if key and params:
            for p in params:
                if p and ((p[0] & 0x1F) if h264_codec else (p[0] >> 1) & 0x3F) not in have:
                    parts += (_START, p)
        for n in body:
            parts += (_START, n)
        self.stats.video_units += 1
        self._psi(dts, key)
        self._pes(self.video_pid, 0xE0, pts, dts, b"".join(parts), key, bounded=False)
        return self._take(dts)

    def audio(
        self, pts: int, frames: Sequence[bytes], cfg: aac.AacConfig
    ) -> list[tuple[int, bytes]]:
        """Raw AAC frames starting at ``pts`` in one PES. Returns complete payloads."""
        if not self.has_audio:
            raise ValueError("this program has no audio")
        data = b"".join(adts_header(cfg, len(f)) + f for f in frames if len(f) + 7 <= 0x1FFF)
        if not data:
            return []
        self.stats.audio_frames += len(frames)
        self._psi(pts, False)
        self._pes(self.audio_pid, 0xC0, pts, pts, data, False, bounded=True)
        return self._take(pts)

    def flush(self) -> bytes:
        """The packets not yet returned in a full payload (possibly none)."""
        out = bytes(self._buf)
        self._buf.clear()
        return out

    # ------------------------------------------------------------------ writing
    def _take(self, dts: int) -> list[tuple[int, bytes]]:
        size = self.payload_size
        buf = self._buf
        n = len(buf) // size
        if not n:
            return []
        out = [(dts, bytes(buf[i * size : (i + 1) * size])) for i in range(n)]
        del buf[: n * size]
        return out

    def _section(self, table: int, ext: int, body: bytes) -> bytes:
        head = bytes((table,)) + (0xB000 | (len(body) + 9)).to_bytes(2, "big")
        sec = head + ext.to_bytes(2, "big") + b"\xc1\x00\x00" + body
        return b"\x00" + sec + crc32_mpeg2(sec).to_bytes(4, "big")

    def _psi(self, dts: int, key: bool) -> None:
        last = self._last_psi
        if last is not None and not key and 0 <= dts - last < self.psi_interval:
            return
        self._last_psi = dts
        self.stats.psi += 1
        for pid, sec in ((0, self._pat), (self.pmt_pid, self._pmt)):
            self._packet(pid, True, b"", sec + b"\xff" * (_PAYLOAD - len(sec)))

    def _cc_next(self, pid: int) -> int:
        cc = self._cc.get(pid, -1) + 1 & 0x0F
        self._cc[pid] = cc
        return cc

    def _packet(self, pid: int, start: bool, adapt: bytes, payload: bytes | memoryview) -> None:
        """One packet: ``adapt`` is the adaptation field after its length byte (b"" for
        none); it is stuffed so the packet is exactly 188 bytes."""
        room = _PAYLOAD - len(payload)
        head = bytes((0x47, (0x40 if start else 0) | (pid >> 8), pid & 0xFF))
        if room == 0 and not adapt:
            self._buf += head + bytes((0x10 | self._cc_next(pid),))
            self._buf += payload
        else:
            if not adapt:
                adapt = b"\x00" if room > 1 else b""
            field_len = room - 1  # the adaptation_field_length byte
            af = bytes((field_len,))
            if field_len > 0:
                af += adapt + b"\xff" * (field_len - len(adapt))
            self._buf += head + bytes((0x30 | self._cc_next(pid),)) + af
            self._buf += payload
        self.stats.packets += 1

    def _pes(
        self, pid: int, sid: int, pts: int, dts: int, data: bytes, key: bool, *, bounded: bool
    ) -> None:
        if dts != pts:
            header = b"\x80\xc0\x0a" + _timestamp(3, pts) + _timestamp(1, dts)
        else:
            header = b"\x80\x80\x05" + _timestamp(2, pts)
        length = len(header) + len(data)
        plen = length if bounded and length <= 0xFFFF else 0
        pes = b"\x00\x00\x01" + bytes((sid,)) + plen.to_bytes(2, "big") + header + data
        view = memoryview(pes)
        flags = 0x40 if key else 0
        if pid == self.pcr_pid:
            adapt = bytes((flags | 0x10,)) + _pcr(dts - self.pcr_delay)
        else:
            adapt = bytes((flags,)) if flags else b""
        first_room = _PAYLOAD - (1 + len(adapt) if adapt else 0)
        take = min(first_room, len(view))
        self._packet(pid, True, adapt, view[:take])
        pos, end = take, len(view)
        while pos < end:
            n = min(_PAYLOAD, end - pos)
            self._packet(pid, False, b"", view[pos : pos + n])
            pos += n


def _pid13(pid: int) -> bytes:
    return (0xE000 | pid).to_bytes(2, "big")


class RtpTsMuxer(RtpAccessUnits):
    """A stream's RTP access units in, MPEG-TS payloads ``(dts_ticks, bytes)`` out.

    Video starts at the first keyframe with parameter sets (in band or from the SDP);
    audio starts with it. RTP carries no decode time: DTS is the PTS held monotonic and,
    once a frame comes out of order (B-frames), trails the PTS by the largest reordering
    seen, so DTS <= PTS holds from then on.
    """

    def __init__(self, tracks: Sequence[MuxTrack], *, base: int = 90000) -> None:
        super().__init__(tracks)
        codec = self.video_codec
        self.aac: aac.AacConfig | None = None
        if self.audio >= 0:
            self.aac = aac.parse_audio_specific_config(self._asc)
        if codec is None and self.aac is None:
            codecs = ", ".join(f"{t.kind}/{t.codec}" for t in self.tracks)
            raise ValueError(f"MPEG-TS carries H.264, H.265 and AAC here; the stream has {codecs}")
        self.mux = TsMuxer("H265" if codec == "HEVC" else codec, self.aac is not None)
        self.base = base
        self.started = self.video < 0
        self.skipped = 0
        self._params: list[bytes] = []
        self._last_dts = -1
        self._delay = 0

    def push(self, track: int, packets: Sequence[bytes], now_ms: float) -> list[tuple[int, bytes]]:
        """One access unit (its RTP packets) of ``track``; the complete payloads."""
        if track == self.video:
            return self._video_au(packets, now_ms)
        if track == self.audio:
            return self._audio_au(packets, now_ms)
        self.skipped += 1
        return []

    def flush(self) -> bytes:
        """What is buffered short of a full payload."""
        return self.mux.flush()

    def _video_au(self, packets: Sequence[bytes], now_ms: float) -> list[tuple[int, bytes]]:
        ts, nals, types, key = self._nal_units(packets)
        if ts < 0 or not nals:
            return []
        if key:
            found = self._parameter_sets(nals, types)
            wanted = H264_PARAMS if self.video_codec == "H264" else H265_PARAMS
            if len(found) == len(wanted):
                self._params = [found[t] for t in wanted]
                self.started = True
        if not self.started:
            self.skipped += 1
            return []
        pts = self.base + round(self._clocks[self.video].ms(ts, self._anchor(now_ms)) * 90)
        last = self._last_dts
        if last >= 0 and pts <= last:
            self._delay = max(self._delay, last - pts + 1)
        dts = max(pts - self._delay, last + 1)
        self._last_dts = dts
        return self.mux.video(max(pts, dts), dts, nals, key, self._params)

    def _audio_au(self, packets: Sequence[bytes], now_ms: float) -> list[tuple[int, bytes]]:
        if not self.started or self.aac is None:
            self.skipped += 1
            return []
        ts, payloads = self._payloads(packets)
        if ts < 0:
            return []
        frames, _bad = self._aac_frames(payloads)
        if not frames:
            return []
        pts = self.base + round(self._clocks[self.audio].ms(ts, self._anchor(now_ms)) * 90)
        return self.mux.audio(pts, frames, self.aac)
