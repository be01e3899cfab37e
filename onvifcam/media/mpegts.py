"""Sans-I/O MPEG-TS demuxer: 188-byte transport packets in, access units out.

:class:`TsDemuxer` takes byte chunks of any size (SRT payloads are usually 7 x 188 bytes,
but any split works) and returns events:

* :class:`TracksChanged` when the program's PMT is first seen or its stream list changes,
  naming every elementary stream, supported or not (so the ingest can log the ones it
  ignores once);
* :class:`VideoParameters` when an H.264 (stream type 0x1B) or H.265 (0x24) stream carries
  new parameter sets (SPS/PPS, plus VPS for H.265), before the access unit carrying them;
* :class:`VideoAccessUnit`: one PES of an H.264/H.265 stream as Annex-B-split NAL units,
  with 90 kHz PTS/DTS and the IDR/IRAP keyframe flag;
* :class:`AudioFrame`: one raw AAC frame of an ADTS stream (0x0F), the ADTS header
  removed, its AudioSpecificConfig derived from the header, PTS advanced by 1024 samples
  per frame after the PES PTS.

What it does with damaged input, in short:

* Sync: a packet starts with 0x47. Lock needs three sync bytes 188 bytes apart; a packet
  without one drops the lock, and the demuxer searches again (``resyncs``, ``skipped_bytes``).
  The only error raised is :class:`TsError`, when no lock is found in
  ``Limits.max_sync_search`` bytes (the input is not MPEG-TS); like the RTSP parser's
  errors it is final.
* Continuity counters per PID (payload packets only): one duplicate is ignored, a gap is
  loss unless the adaptation field's discontinuity_indicator is set. A PES or section hit
  by loss (or by a scrambled packet, or by loss of sync) is dropped as a whole and counted
  in ``dropped_aus``; PES length 0 (video) ends at the next payload_unit_start, and a
  video PES without PTS continues the access unit before it.
* PAT/PMT sections are reassembled across packets and CRC32-checked; a bad CRC, table or
  length is counted and the section ignored. Only the first program of the PAT is
  demuxed (or the one given to the constructor).
* Timestamps: 33-bit PTS/DTS are unwrapped into 64-bit values that keep growing across
  the wrap (every 26.5 hours), shared by the program's streams so they stay in sync. A
  stream stepping back more than 1 s or forward more than ``Limits.max_timestamp_jump``
  (an encoder restart, spliced files) rebases the timeline so it goes on from the largest
  time given out (``timestamp_jumps``): DTS stay monotonic for the packetiser.
* Bounds: a PES over ``max_pes_size`` and PES data over ``max_buffered`` across streams
  are dropped (``oversized_pes``); so is a PES of more than ``max_units`` NAL units or
  ADTS frames; at most ``max_pids`` elementary streams per PMT are kept; sections over
  ``max_section_size`` are dropped. Every buffer is bounded whatever the input.

Not handled: 192/204-byte packets (M2TS, Reed-Solomon), several access units in one video
PES (they come out as one), AAC LATM (0x11), ADTS frames with several raw data blocks or
an in-band PCE (counted in ``adts_errors``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TypeAlias

from onvifcam.media import aac, h264, h265

__all__ = [
    "PACKET_SIZE",
    "AudioFrame",
    "Event",
    "Limits",
    "TrackInfo",
    "TracksChanged",
    "TsDemuxer",
    "TsError",
    "VideoAccessUnit",
    "VideoParameters",
    "crc32_mpeg2",
]

PACKET_SIZE = 188
SYNC = 0x47
_SYNC_BYTE = b"\x47"
_WRAP = 1 << 33
_MASK33 = _WRAP - 1
_HALF = 1 << 32
_NULL_PID = 0x1FFF
_PAT_PID = 0
_AAC_SAMPLES = 1024
_MAX_BACKWARD = 90000  # a stream going back more than 1 s restarts the timeline
_DEFAULT_STEP = 3000  # 1/30 s: where a rebased stream goes on when its step is unknown
# stream_ids whose PES has no optional header (ISO 13818-1 table 2-21 / 2.4.3.7)
_NO_HEADER_IDS = frozenset((0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF))

# --------------------------------------------------------------------------- CRC32/MPEG-2

# CRC-32/MPEG-2 (poly 0x04C11DB7, MSB first, init 0xFFFFFFFF, no final XOR) equals the
# bit-reversed zlib CRC-32 of the bit-reversed bytes, XORed with 0xFFFFFFFF: zlib does the
# byte loop in C.
_REVERSE = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def crc32_mpeg2(data: bytes | bytearray | memoryview) -> int:
    """CRC-32/MPEG-2 of ``data``; 0 over a whole PSI section (CRC included) means intact."""
    c = zlib.crc32(bytes(data).translate(_REVERSE)) ^ 0xFFFFFFFF
    return int(f"{c:032b}"[::-1], 2)


# --------------------------------------------------------------------------- public types


class TsError(ValueError):
    """Input that is not MPEG-TS (no sync found within ``Limits.max_sync_search`` bytes).

    Final: every later :meth:`TsDemuxer.feed` raises it again. ``events`` holds the events
    completed earlier in the same call.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.events: list[Event] = []

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Limits:
    """Bounds (bytes unless named otherwise) and tolerances of :class:`TsDemuxer`."""

    max_pes_size: int = 8 * 1024 * 1024  # one PES (a video access unit); larger ones dropped
    max_buffered: int = 16 * 1024 * 1024  # all unfinished PES together
    max_pids: int = 16  # elementary streams kept per PMT (the rest are ignored)
    max_units: int = 1024  # NAL units or ADTS frames in one PES; more drops the PES
    max_section_size: int = 1024  # PAT/PMT section, header and CRC included (ISO max 1024)
    max_sync_search: int = 65536  # bytes without a sync lock before TsError
    max_timestamp_jump: int = 10 * 90000  # 90 kHz ticks; a bigger jump rebases the timeline

    def __post_init__(self) -> None:
        if self.max_pes_size < 1024 or self.max_buffered < self.max_pes_size:
            raise ValueError("Limits.max_pes_size must be >= 1024 and <= max_buffered")
        if self.max_pids < 1 or self.max_units < 1:
            raise ValueError("Limits.max_pids and max_units must be at least 1")
        if not 16 <= self.max_section_size <= 4096:
            raise ValueError("Limits.max_section_size must be 16..4096")
        if self.max_sync_search < 3 * PACKET_SIZE:
            raise ValueError(f"Limits.max_sync_search must be at least {3 * PACKET_SIZE}")
        if self.max_timestamp_jump < 90000:
            raise ValueError("Limits.max_timestamp_jump must be at least 90000 (1 s)")


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """One elementary stream of the PMT.

    ``kind`` is "video", "audio" or "data"; ``codec`` "H264", "H265", "AAC" for the
    supported ones (``supported`` True) and a name such as "AC-3", "Opus", "MP3",
    "SCTE-35", "KLV" or "stream type 0x.." for the others.
    """

    pid: int
    stream_type: int
    kind: str
    codec: str
    supported: bool
    language: str | None = None


@dataclass(frozen=True, slots=True)
class TracksChanged:
    """The PMT of the demuxed program, first seen or with a new stream list."""

    program: int
    pcr_pid: int
    tracks: list[TrackInfo]


@dataclass(slots=True)
class VideoParameters:
    """New parameter sets of a video stream: [VPS,] SPS, PPS in decoding order.

    ``info`` is what the SPS says (None when it does not parse). Sent before the
    :class:`VideoAccessUnit` that carries them.
    """

    pid: int
    codec: str
    parameter_sets: list[bytes]
    info: h264.VideoInfo | None


@dataclass(slots=True)
class VideoAccessUnit:
    """One video access unit; ``pts``/``dts`` are unwrapped 90 kHz ticks.

    ``keyframe``: an IDR (H.264) or IRAP (H.265) picture is in it; ``params_in_band``:
    it carries parameter sets.
    """

    pid: int
    codec: str
    pts: int
    dts: int
    nal_units: list[bytes]
    keyframe: bool
    params_in_band: bool


@dataclass(slots=True)
class AudioFrame:
    """One raw AAC frame (ADTS header removed); ``pts`` in unwrapped 90 kHz ticks.

    ``config`` is the same object while the ADTS parameters stay the same.
    """

    pid: int
    pts: int
    frame: bytes
    config: aac.AacConfig


#: What :meth:`TsDemuxer.feed` returns.
Event: TypeAlias = "TracksChanged | VideoParameters | VideoAccessUnit | AudioFrame"

# --------------------------------------------------------------------------- stream types

_SUPPORTED: dict[int, tuple[str, str]] = {0x1B: ("video", "H264"), 0x24: ("video", "H265"),
                                          0x0F: ("audio", "AAC")}  # fmt: skip
_OTHER_TYPES: dict[int, tuple[str, str]] = {
    0x01: ("video", "MPEG-1 video"),
    0x02: ("video", "MPEG-2 video"),
    0x03: ("audio", "MPEG-1 audio"),
    0x04: ("audio", "MPEG-2 audio"),
    0x05: ("data", "private sections"),
    0x06: ("data", "private data"),
    0x10: ("video", "MPEG-4 video"),
    0x11: ("audio", "AAC-LATM"),
    0x15: ("data", "metadata"),
    0x1C: ("audio", "MPEG-4 audio"),
    0x33: ("video", "H266"),
    0x81: ("audio", "AC-3"),
    0x82: ("audio", "DTS"),
    0x86: ("data", "SCTE-35"),
    0x87: ("audio", "E-AC-3"),
    0xEA: ("video", "VC-1"),
}
# registration descriptor format identifiers and descriptor tags that name a 0x06 stream
_REGISTRATIONS: dict[bytes, tuple[str, str]] = {
    b"Opus": ("audio", "Opus"),
    b"AC-3": ("audio", "AC-3"),
    b"EAC3": ("audio", "E-AC-3"),
    b"KLVA": ("data", "KLV"),
    b"ID3 ": ("data", "ID3"),
    b"HEVC": ("video", "H265"),
    b"VC-1": ("video", "VC-1"),
}
_DESCRIPTOR_NAMES: dict[int, tuple[str, str]] = {
    0x56: ("data", "teletext"),
    0x59: ("data", "DVB subtitles"),
    0x6A: ("audio", "AC-3"),
    0x7A: ("audio", "E-AC-3"),
    0x7B: ("audio", "DTS"),
}


def _describe(stream_type: int, pid: int, descriptors: bytes) -> TrackInfo:
    registration: bytes | None = None
    language: str | None = None
    named: tuple[str, str] | None = None
    pos = 0
    while pos + 2 <= len(descriptors):
        tag, size = descriptors[pos], descriptors[pos + 1]
        body = descriptors[pos + 2 : pos + 2 + size]
        if tag == 0x05 and len(body) >= 4:
            registration = bytes(body[:4])
        elif tag == 0x0A and len(body) >= 3:
            language = bytes(body[:3]).decode("latin-1").strip("\x00 ") or None
        elif tag in _DESCRIPTOR_NAMES and named is None:
            named = _DESCRIPTOR_NAMES[tag]
        pos += 2 + size
    if stream_type in _SUPPORTED:
        kind, codec = _SUPPORTED[stream_type]
        return TrackInfo(pid, stream_type, kind, codec, True, language)
    if stream_type == 0x06:
        if registration in _REGISTRATIONS:
            named = _REGISTRATIONS[registration]
        kind, codec = named or _OTHER_TYPES[0x06]
    elif stream_type in _OTHER_TYPES:
        kind, codec = _OTHER_TYPES[stream_type]
    else:
        kind, codec = "data", f"stream type 0x{stream_type:02X}"
    return TrackInfo(pid, stream_type, kind, codec, False, language)


# --------------------------------------------------------------------------- per-PID state


class _Section:
    """Reassembles the PSI sections of one PID (PAT or PMT)."""

    __slots__ = ("buf", "cc", "dup", "last", "pid")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cc = -1
        self.dup = False
        self.buf: bytearray | None = None
        self.last: bytes = b""  # the last section accepted, to skip repeats cheaply

    def lost(self) -> None:
        self.buf = None


class _Pes:
    """Reassembles the PES packets of one elementary stream."""

    __slots__ = (
        "adts_anchor",
        "adts_carry",
        "adts_index",
        "cc",
        "codec",
        "damaged",
        "dup",
        "expected",
        "info",
        "last_dts",
        "last_out",
        "params",
        "parts",
        "pid",
        "prev_time",
        "size",
        "step",
        "stream_type",
        "supported",
    )

    def __init__(self, info: TrackInfo) -> None:
        self.pid = info.pid
        self.info = info
        self.stream_type = info.stream_type
        self.codec = info.codec
        self.supported = info.supported
        self.cc = -1
        self.dup = False
        self.parts: list[bytes] | None = None  # None: waiting for a payload_unit_start
        self.size = 0
        self.expected = -1  # whole PES size; 0 unbounded (length 0); -1 not known yet
        self.damaged = False
        self.last_dts: int | None = None  # unwrapped 33-bit timeline of this PID
        self.last_out: tuple[int, int] | None = None  # last video (pts, dts) given out
        self.prev_time: int | None = None  # last program time (DTS, or PTS for audio)
        self.step = 0  # last forward DTS step, to place a rebased timeline
        self.params: dict[int, bytes] = {}
        self.adts_carry = b""  # an ADTS frame started in the previous PES
        self.adts_anchor: int | None = None  # PTS of frame 0 of the current run
        self.adts_index = 0

    def lost(self) -> None:
        if self.parts is not None:
            self.damaged = True
        self.adts_carry = b""


_ParamKey = tuple[int, ...]
_PARAM_TYPES: dict[str, _ParamKey] = {
    "H264": (h264.NAL_SPS, h264.NAL_PPS),
    "H265": (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS),
}
_ADTS_CONFIGS: dict[tuple[int, int, int], aac.AacConfig] = {}


def _adts_config(profile: int, rate_index: int, channel_config: int) -> aac.AacConfig:
    key = (profile, rate_index, channel_config)
    cfg = _ADTS_CONFIGS.get(key)
    if cfg is None:
        channels = 8 if channel_config == 7 else channel_config
        raw = aac.make_audio_specific_config(profile + 1, aac.SAMPLE_RATES[rate_index], channels)
        cfg = _ADTS_CONFIGS[key] = aac.parse_audio_specific_config(raw)
    return cfg


# --------------------------------------------------------------------------- demuxer


class TsDemuxer:
    """Incremental MPEG-TS demuxer: bytes in, events out (see the module docstring).

    ``program`` picks a program number from the PAT; None takes the first one listed.
    """

    def __init__(self, limits: Limits = Limits(), *, program: int | None = None) -> None:
        self.limits = limits
        self.program = program
        self._buf = b""  # an incomplete packet, or bytes not yet good enough to lock on
        self._locked = False
        self._unsynced = 0  # bytes skipped since the lock was lost
        self._error: TsError | None = None
        self._out: list[Event] = []
        self._pids: dict[int, _Section | _Pes] = {_PAT_PID: _Section(_PAT_PID)}
        self._pat: dict[int, list[tuple[int, int]]] = {}  # section number -> programs
        self._pat_version = -1
        self._pmt_pid = -1
        self._program_number = -1
        self._tracks: list[TrackInfo] = []
        self._pcr_pid = -1
        self._held = 0  # bytes in unfinished PES buffers
        # timeline shared by the program's streams
        self._ref: int | None = None  # last unwrapped 33-bit value of any stream
        self._offset = 0
        self._last_out: int | None = None
        self._max_out = 0
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "packets", "bytes", "skipped_bytes", "resyncs", "transport_errors",
                "cc_errors", "duplicates", "discontinuities", "scrambled", "crc_errors",
                "malformed", "dropped_aus", "oversized_pes", "video_aus", "audio_frames",
                "adts_errors", "missing_pts", "timestamp_jumps", "pmt_changes",
                "unknown_streams", "unknown_pes", "ignored_streams", "pcr_count",
            ),
            0,
        )  # fmt: skip
        self._stats.update(pcr=-1, pcr_pid=-1)

    # ------------------------------------------------------------------ public
    @property
    def buffered(self) -> int:
        """Bytes held: an incomplete packet plus unfinished PES and section data."""
        held = len(self._buf) + self._held
        for st in self._pids.values():
            if isinstance(st, _Pes):
                held += len(st.adts_carry)
            elif st.buf is not None:
                held += len(st.buf)
        return held

    @property
    def tracks(self) -> list[TrackInfo]:
        """The streams of the current PMT (empty before it is seen)."""
        return list(self._tracks)

    def parameter_sets(self, pid: int) -> list[bytes]:
        """The latest parameter sets seen on video ``pid`` ([VPS,] SPS, PPS)."""
        st = self._pids.get(pid)
        if not isinstance(st, _Pes) or st.codec not in _PARAM_TYPES:
            return []
        return [st.params[t] for t in _PARAM_TYPES[st.codec] if t in st.params]

    def stats(self) -> dict[str, int]:
        """Counters since the start, plus ``buffered`` (bytes held now).

        Input: ``packets``, ``bytes``, ``skipped_bytes`` (searching for sync), ``resyncs``
        (sync lost), ``transport_errors`` (TEI set), ``scrambled``. Continuity:
        ``cc_errors``, ``duplicates`` (ignored), ``discontinuities`` (flagged gaps).
        Tables: ``crc_errors``, ``pmt_changes``, ``unknown_streams`` and
        ``ignored_streams`` (over ``max_pids``) of the current PMT, ``unknown_pes``.
        Output: ``video_aus``, ``audio_frames``; ``dropped_aus`` (PES lost to damage),
        ``oversized_pes``, ``malformed``, ``adts_errors``, ``missing_pts``,
        ``timestamp_jumps`` (timeline rebased). Clock: ``pcr_count``, ``pcr`` (the last
        PCR in 27 MHz ticks, -1 before one) and ``pcr_pid``.
        """
        out = dict(self._stats)
        out["buffered"] = self.buffered
        return out

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Consume ``data``; return the events it completed, in order."""
        if self._error is not None:
            raise TsError(self._error.message)
        if type(data) is not bytes:
            data = bytes(data)
        self._stats["bytes"] += len(data)
        out: list[Event] = []
        self._out = out
        if self._buf:
            data = self._buf + data
            self._buf = b""
        try:
            self._run(data, False)
        except TsError as exc:
            self._error = exc
            self._buf = b""
            exc.events = out
            raise
        return out

    def flush(self) -> list[Event]:
        """End of input: demux what is buffered and complete the unfinished PES (video PES
        of length 0 end only at the next payload_unit_start, so the last one needs this).
        Feeding may go on afterwards. Never raises."""
        if self._error is not None:
            return []
        out: list[Event] = []
        self._out = out
        data, self._buf = self._buf, b""
        if data:
            try:
                self._run(data, True)
            except TsError:
                pass  # an unsynced tail of under 3 packets: nothing to demux in it
            self._buf = b""
        for st in list(self._pids.values()):
            if isinstance(st, _Pes) and st.parts is not None:
                self._finish(st)
        return out

    # ------------------------------------------------------------------ sync
    def _run(self, data: bytes, final: bool) -> None:
        pos = 0
        n = len(data)
        while pos < n:
            if not self._locked:
                pos = self._find_sync(data, pos, final)
                if not self._locked:
                    return
            pos = self._packets(data, pos, n)
            if pos + PACKET_SIZE <= n:  # stopped on a packet without a sync byte
                self._lose_sync()
                self._skip(1, self.limits.max_sync_search)
                pos += 1
            else:
                if pos < n and not final:
                    self._buf = data[pos:]
                return

    def _find_sync(self, data: bytes, pos: int, final: bool) -> int:
        n = len(data)
        limit = self.limits.max_sync_search
        start = pos
        while True:
            p = data.find(_SYNC_BYTE, pos)
            if p < 0:
                self._skip(n - start, limit)
                return n
            if p + 2 * PACKET_SIZE < n:
                if data[p + PACKET_SIZE] == SYNC and data[p + 2 * PACKET_SIZE] == SYNC:
                    self._skip(p - start, limit)
                    self._locked = True
                    self._unsynced = 0
                    return p
                pos = p + 1
                continue
            if final and p + PACKET_SIZE <= n:
                # the end of the input: lock if every sync byte that is there checks out
                if all(data[q] == SYNC for q in range(p + PACKET_SIZE, n, PACKET_SIZE)):
                    self._skip(p - start, limit)
                    self._locked = True
                    self._unsynced = 0
                    return p
                pos = p + 1
                continue
            self._skip(p - start, limit)
            if not final:
                self._buf = data[p:]  # fewer than 377 bytes: wait for more
            return n

    def _skip(self, count: int, limit: int) -> None:
        if count <= 0:
            return
        self._stats["skipped_bytes"] += count
        self._unsynced += count
        if self._unsynced > limit:
            raise TsError(
                f"not MPEG-TS: no sync byte 0x47 repeating every {PACKET_SIZE} bytes in "
                f"{self._unsynced} bytes (the sender must mux to MPEG-TS, e.g. ffmpeg -f mpegts)"
            )

    def _lose_sync(self) -> None:
        self._locked = False
        self._stats["resyncs"] += 1
        for st in self._pids.values():
            st.lost()
            st.cc = -1

    # ------------------------------------------------------------------ packets
    def _packets(self, data: bytes, pos: int, n: int) -> int:
        """Demux the whole packets of ``data`` from ``pos``; return where it stopped (at a
        missing sync byte or the start of an incomplete packet)."""
        pids = self._pids
        stats = self._stats
        max_pes = self.limits.max_pes_size
        max_held = self.limits.max_buffered
        count = 0
        while pos + PACKET_SIZE <= n:
            if data[pos] != SYNC:
                break
            end = pos + PACKET_SIZE
            count += 1
            b1 = data[pos + 1]
            st = pids.get(((b1 & 0x1F) << 8) | data[pos + 2])
            if st is None:
                pos = end
                continue
            if b1 & 0x80:
                stats["transport_errors"] += 1
                pos = end
                continue
            b3 = data[pos + 3]
            start = pos + 4
            disc = 0
            if b3 & 0x20:
                alen = data[start]
                if alen:
                    if alen > 183:
                        stats["malformed"] += 1
                        pos = end
                        continue
                    flags = data[start + 1]
                    disc = flags & 0x80
                    if flags & 0x10 and alen >= 7:
                        base = int.from_bytes(data[start + 2 : start + 8], "big")
                        stats["pcr"] = (base >> 15) * 300 + (base & 0x1FF)
                        stats["pcr_count"] += 1
                        stats["pcr_pid"] = st.pid
                start += 1 + alen
            if not b3 & 0x10 or start >= end:
                pos = end  # no payload: the continuity counter does not advance
                continue
            cc = b3 & 0x0F
            last = st.cc
            if last >= 0 and cc != (last + 1) & 0x0F:
                if cc == last and not st.dup:
                    st.dup = True
                    stats["duplicates"] += 1
                    pos = end
                    continue
                if disc:
                    stats["discontinuities"] += 1
                else:
                    stats["cc_errors"] += 1
                    st.lost()
            st.dup = False
            st.cc = cc
            if b3 & 0xC0:
                stats["scrambled"] += 1
                st.lost()
                pos = end
                continue
            if type(st) is _Pes:
                if b1 & 0x40:
                    self._pes_start(st, data, start, end)
                else:
                    parts = st.parts
                    if parts is not None:
                        parts.append(data[start:end])
                        size = end - start
                        st.size += size
                        self._held += size
                        expected = st.expected
                        if st.size > max_pes or self._held > max_held:
                            self._oversized(st)
                        elif expected > 0:
                            if st.size >= expected:
                                self._finish(st)
                        elif expected < 0 and st.size >= 6:
                            self._pes_length(st, b"".join(parts)[:6])
            elif type(st) is _Section:
                self._section_payload(st, data, start, end, b1 & 0x40)
            pos = end
        stats["packets"] += count
        return pos

    # ------------------------------------------------------------------ PES
    def _pes_start(self, st: _Pes, data: bytes, start: int, end: int) -> None:
        if not st.supported:
            self._stats["unknown_pes"] += 1
            return
        if (
            st.parts is not None
            and st.expected == 0
            and st.info.kind == "video"
            and end - start >= 9
            and data[start : start + 3] == b"\x00\x00\x01"
            and data[start + 3] not in _NO_HEADER_IDS
            and data[start + 6] & 0xC0 == 0x80
            and not data[start + 7] & 0x80
            and 9 + data[start + 8] <= end - start
        ):
            # A PES without PTS continues the access unit of length-0 video PES.
            body = data[start + 9 + data[start + 8] : end]
            st.parts.append(body)
            st.size += len(body)
            self._held += len(body)
            if st.size > self.limits.max_pes_size or self._held > self.limits.max_buffered:
                self._oversized(st)
            return
        if st.parts is not None:
            self._finish(st)
        chunk = data[start:end]
        st.parts = [chunk]
        st.size = len(chunk)
        st.damaged = False
        st.expected = -1
        self._held += st.size
        if st.size >= 6:
            self._pes_length(st, chunk)

    def _pes_length(self, st: _Pes, head: bytes) -> None:
        if head[:3] != b"\x00\x00\x01":
            self._stats["malformed"] += 1
            self._discard(st)
            return
        length = (head[4] << 8) | head[5]
        st.expected = 6 + length if length else 0
        if 0 < st.expected <= st.size:
            self._finish(st)

    def _oversized(self, st: _Pes) -> None:
        self._stats["oversized_pes"] += 1
        self._discard(st)

    def _discard(self, st: _Pes) -> None:
        """Forget the PES being assembled and any ADTS frame carried over (damage)."""
        self._release(st)
        st.adts_carry = b""

    def _release(self, st: _Pes) -> None:
        self._held -= st.size
        st.parts = None
        st.size = 0
        st.damaged = False

    def _finish(self, st: _Pes) -> None:
        """A PES is complete (length reached, next start, or flush): decode and emit it."""
        parts = st.parts
        assert parts is not None
        size, damaged, expected = st.size, st.damaged, st.expected
        self._release(st)
        if damaged:
            st.adts_carry = b""
            self._stats["dropped_aus"] += 1
            return
        pes = parts[0] if len(parts) == 1 else b"".join(parts)
        if expected < 0:
            if size < 6 or pes[:3] != b"\x00\x00\x01":
                self._stats["malformed"] += 1
                return
            length = (pes[4] << 8) | pes[5]
            expected = 6 + length if length else 0
        if expected:
            if size < expected:
                self._stats["dropped_aus"] += 1  # cut short without a visible CC gap
                return
            pes = pes[:expected]
        stream_id = pes[3]
        if stream_id in _NO_HEADER_IDS:
            return
        if len(pes) < 9 or pes[6] & 0xC0 != 0x80:
            self._stats["malformed"] += 1
            return
        if pes[6] & 0x30:
            self._stats["scrambled"] += 1
            return
        flags = pes[7]
        body = 9 + pes[8]
        if body > len(pes):
            self._stats["malformed"] += 1
            return
        pts = dts = None
        ts_flags = flags >> 6
        if ts_flags & 2:
            if pes[8] < (10 if ts_flags == 3 else 5):
                self._stats["malformed"] += 1
                return
            pts = _timestamp(pes, 9)
            dts = _timestamp(pes, 14) if ts_flags == 3 else pts
        payload = pes[body:]
        if st.codec == "AAC":
            self._audio(st, pts, payload)
        else:
            self._video(st, pts, dts, payload)

    def _unwrap(self, st: _Pes, raw: int) -> int:
        """The 64-bit program time of a 33-bit DTS (or audio PTS) of stream ``st``.

        Unwrapped against the stream's previous value (a new stream: the program's), so
        the 2^33 wrap is invisible. A stream stepping back more than a second, or
        forward more than ``max_timestamp_jump``, is a discontinuity: the program's
        offset changes so that the stream goes on one step after the largest time given
        out. A new stream is compared with the program's last time (one of the first
        track set may also start up to ``max_timestamp_jump`` before it).
        """
        ref = st.last_dts if st.last_dts is not None else self._ref
        if ref is None:
            u = raw
        else:
            d = (raw - ref) & _MASK33
            if d >= _HALF:
                d -= _WRAP
            u = ref + d
        st.last_dts = self._ref = u
        out = u + self._offset
        prev = st.prev_time
        jump = self.limits.max_timestamp_jump
        back = _MAX_BACKWARD
        if prev is None:  # a new stream: compare with the program
            prev = self._last_out
            if self._stats["pmt_changes"] <= 1:
                back = jump  # the first streams may start seconds apart
        if prev is not None:
            if out - prev > jump or prev - out > back:
                self._stats["timestamp_jumps"] += 1
                target = max(self._max_out, prev) + (st.step or _DEFAULT_STEP)
                self._offset += target - out
                out = target
            elif out > prev and st.prev_time is not None:
                st.step = out - prev
        st.prev_time = self._last_out = out
        if out > self._max_out:
            self._max_out = out
        return out

    # ------------------------------------------------------------------ video
    def _video(self, st: _Pes, pts: int | None, dts: int | None, payload: bytes) -> None:
        stats = self._stats
        if pts is None or dts is None:
            if st.last_out is None:
                stats["missing_pts"] += 1
                stats["dropped_aus"] += 1
                return
            stats["missing_pts"] += 1
            out_pts, out_dts = st.last_out
        else:
            delta = (pts - dts) & _MASK33
            if delta >= _HALF:
                delta -= _WRAP
            out_dts = self._unwrap(st, dts)
            out_pts = out_dts + delta
            st.last_out = (out_pts, out_dts)
        if payload.count(b"\x00\x00\x01") > self.limits.max_units:
            stats["malformed"] += 1  # a flood of tiny NAL units: bound the objects made
            stats["dropped_aus"] += 1
            return
        nals = h264.split_annexb(payload)
        if not nals:
            stats["malformed"] += 1
            stats["dropped_aus"] += 1
            return
        keyframe = in_band = changed = False
        params = st.params
        if st.codec == "H264":
            for nal in nals:
                t = nal[0] & 0x1F
                if t == 5:
                    keyframe = True
                elif t == 7 or t == 8:
                    in_band = True
                    if params.get(t) != nal:
                        params[t] = nal
                        changed = True
        else:
            for nal in nals:
                t = (nal[0] >> 1) & 0x3F
                if 16 <= t <= 21:
                    keyframe = True
                elif 32 <= t <= 34:
                    in_band = True
                    if params.get(t) != nal:
                        params[t] = nal
                        changed = True
        if changed:
            self._out.append(self._parameters(st))
        stats["video_aus"] += 1
        self._out.append(
            VideoAccessUnit(st.pid, st.codec, out_pts, out_dts, nals, keyframe, in_band)
        )

    def _parameters(self, st: _Pes) -> VideoParameters:
        sets = [st.params[t] for t in _PARAM_TYPES[st.codec] if t in st.params]
        info: h264.VideoInfo | None = None
        sps_type = h264.NAL_SPS if st.codec == "H264" else h265.NAL_SPS
        sps = st.params.get(sps_type)
        if sps is not None:
            try:
                info = h264.parse_sps(sps) if st.codec == "H264" else h265.parse_sps(sps)
            except ValueError:
                info = None
        return VideoParameters(st.pid, st.codec, sets, info)

    # ------------------------------------------------------------------ audio
    def _audio(self, st: _Pes, pts: int | None, payload: bytes) -> None:
        """Split ADTS frames. The PES PTS belongs to the first frame that starts in this
        PES; a frame begun in the previous PES (``adts_carry``) and frames of a PES without
        PTS continue the previous run at 1024 samples per frame."""
        stats = self._stats
        out = self._out
        carry = st.adts_carry
        buf = carry + payload if carry else payload
        split = len(carry)
        st.adts_carry = b""
        new_pts = None if pts is None else self._unwrap(st, pts)
        n = len(buf)
        pos = 0
        budget = self.limits.max_units
        while pos + 7 <= n:
            if buf[pos] != 0xFF or buf[pos + 1] & 0xF6 != 0xF0:
                stats["adts_errors"] += 1
                pos = _next_adts_sync(buf, pos + 1)
                continue
            h = int.from_bytes(buf[pos : pos + 7], "big")
            header = 7 if (h >> 40) & 1 else 9
            rate_index = (h >> 34) & 0xF
            length = (h >> 13) & 0x1FFF
            if length <= header or rate_index >= 13:
                stats["adts_errors"] += 1
                pos = _next_adts_sync(buf, pos + 1)
                continue
            if new_pts is not None and pos >= split:
                st.adts_anchor, st.adts_index = new_pts, 0
                new_pts = None
            if pos + length > n:
                break
            budget -= 1
            if budget < 0:
                stats["adts_errors"] += 1  # a flood of tiny frames: bound the objects made
                pos = n
                break
            anchor = st.adts_anchor
            channel_config = (h >> 30) & 7
            if anchor is None:
                stats["missing_pts"] += 1
            elif h & 3 or channel_config == 0:
                stats["adts_errors"] += 1  # several raw data blocks, or an in-band PCE
            else:
                rate = aac.SAMPLE_RATES[rate_index]
                frame_pts = anchor + st.adts_index * _AAC_SAMPLES * 90000 // rate
                cfg = _adts_config((h >> 38) & 3, rate_index, channel_config)
                stats["audio_frames"] += 1
                out.append(AudioFrame(st.pid, frame_pts, buf[pos + header : pos + length], cfg))
            st.adts_index += 1 + (h & 3)
            pos += length
        if pos < n:
            st.adts_carry = buf[pos:]  # under 8 KiB: an ADTS frame is at most 8191 bytes

    # ------------------------------------------------------------------ PSI
    def _section_payload(self, st: _Section, data: bytes, start: int, end: int, pusi: int) -> None:
        if pusi:
            pointer = data[start]
            start += 1
            if start + pointer > end:
                self._stats["malformed"] += 1
                st.buf = None
                return
            if pointer and st.buf is not None:
                st.buf += data[start : start + pointer]
                self._sections(st)
            start += pointer
            st.buf = bytearray(data[start:end])
        elif st.buf is None:
            return
        else:
            st.buf += data[start:end]
        self._sections(st)

    def _sections(self, st: _Section) -> None:
        buf = st.buf
        while buf is not None and len(buf) >= 3:
            if buf[0] == 0xFF:  # stuffing up to the end of the packet
                st.buf = None
                return
            total = 3 + (((buf[1] & 0x0F) << 8) | buf[2])
            if total > self.limits.max_section_size or total < 12:
                self._stats["malformed"] += 1
                st.buf = None
                return
            if len(buf) < total:
                return
            section = bytes(buf[:total])
            del buf[:total]
            self._section(st, section)
            if st.buf is not buf:  # the handler reset this PID
                return
        if buf is not None and len(buf) > self.limits.max_section_size:
            st.buf = None

    def _section(self, st: _Section, section: bytes) -> None:
        if section == st.last:
            return  # a repeat of the table in force
        if not section[1] & 0x80 or crc32_mpeg2(section) != 0:
            self._stats["crc_errors" if section[1] & 0x80 else "malformed"] += 1
            return
        if not section[5] & 1:
            return  # current_next_indicator 0: not in force yet
        table = section[0]
        if st.pid == _PAT_PID and table == 0x00:
            st.last = section
            self._pat_section(section)
        elif st.pid == self._pmt_pid and table == 0x02:
            if self._pmt_section(section):
                st.last = section

    def _pat_section(self, s: bytes) -> None:
        version = (s[5] >> 1) & 0x1F
        if version != self._pat_version:
            self._pat = {}
            self._pat_version = version
        programs = []
        for i in range(8, len(s) - 4 - 3, 4):
            number = (s[i] << 8) | s[i + 1]
            pid = ((s[i + 2] & 0x1F) << 8) | s[i + 3]
            if number and 0x10 <= pid < _NULL_PID:
                programs.append((number, pid))
        self._pat[s[6]] = programs
        choice: tuple[int, int] | None = None
        for number in sorted(self._pat):
            for prog in self._pat[number]:
                if self.program is None or prog[0] == self.program:
                    choice = prog
                    break
            if choice:
                break
        if choice is None:
            return
        number, pid = choice
        if pid == self._pmt_pid and number == self._program_number:
            return
        old = self._pids.get(self._pmt_pid)
        if isinstance(old, _Section):
            del self._pids[self._pmt_pid]
        current = self._pids.get(pid)
        if isinstance(current, _Pes):
            self._remove(current)
        self._pmt_pid = pid
        self._program_number = number
        self._pids[pid] = _Section(pid)

    def _pmt_section(self, s: bytes) -> bool:
        if (s[3] << 8) | s[4] != self._program_number or s[6] != 0:
            return False
        pcr_pid = ((s[8] & 0x1F) << 8) | s[9]
        pos = 12 + (((s[10] & 0x0F) << 8) | s[11])
        end = len(s) - 4
        tracks: list[TrackInfo] = []
        seen: set[int] = set()
        ignored = 0
        while pos + 5 <= end:
            stream_type = s[pos]
            pid = ((s[pos + 1] & 0x1F) << 8) | s[pos + 2]
            info_len = ((s[pos + 3] & 0x0F) << 8) | s[pos + 4]
            descriptors = s[pos + 5 : pos + 5 + info_len]
            pos += 5 + info_len
            if pos > end:
                self._stats["malformed"] += 1
                return False
            if pid in seen or not 0x10 <= pid < _NULL_PID or pid == self._pmt_pid:
                continue
            if len(tracks) >= self.limits.max_pids:
                ignored += 1
                continue
            seen.add(pid)
            tracks.append(_describe(stream_type, pid, descriptors))
        self._stats["ignored_streams"] = ignored
        if tracks == self._tracks and pcr_pid == self._pcr_pid:
            return True
        self._apply_tracks(tracks, pcr_pid)
        return True

    def _apply_tracks(self, tracks: list[TrackInfo], pcr_pid: int) -> None:
        pids = self._pids
        wanted = {t.pid: t for t in tracks}
        for pid, st in list(pids.items()):
            if isinstance(st, _Pes) and (
                pid not in wanted or wanted[pid].stream_type != st.stream_type
            ):
                self._remove(st)
        for t in tracks:
            st = pids.get(t.pid)
            if isinstance(st, _Pes):
                st.info = t
            elif st is None:
                pids[t.pid] = _Pes(t)
        self._tracks = tracks
        self._pcr_pid = pcr_pid
        self._stats["pmt_changes"] += 1
        self._stats["unknown_streams"] = sum(1 for t in tracks if not t.supported)
        self._out.append(TracksChanged(self._program_number, pcr_pid, list(tracks)))

    def _remove(self, st: _Pes) -> None:
        if st.parts is not None:
            self._discard(st)
        self._pids.pop(st.pid, None)


def _next_adts_sync(buf: bytes, pos: int) -> int:
    """The offset of the next ADTS sync word (0xFFF, layer 0) from ``pos``, or len(buf)."""
    n = len(buf)
    while True:
        pos = buf.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= n:
            return n
        if buf[pos + 1] & 0xF6 == 0xF0:
            return pos
        pos += 1


def _timestamp(b: bytes, i: int) -> int:
    """A 33-bit PTS/DTS from the 5 bytes at ``b[i]`` (marker bits ignored)."""
    return (
        ((b[i] & 0x0E) << 29)
        | (b[i + 1] << 22)
        | ((b[i + 2] & 0xFE) << 14)
        | (b[i + 3] << 7)
        | (b[i + 4] >> 1)
    )
