"""Access units -> RTP packets plus one SessionDescription, for every ingest that is not RTP.

Sans-I/O. An ingest (RTMP today; SRT/MPEG-TS, the test pattern and the offline placeholder
next) describes its tracks with :class:`VideoSpec` / :class:`AacSpec`;
:meth:`Packetizer.configure` returns the :class:`~onvifcam.media.sdp.SessionDescription`
to publish (``sdp.py`` is the only place that renders SDP text), and
:meth:`Packetizer.on_access_unit` turns each access unit into RTP packets for
``on_packet(track, packet)``, normally the stream's ``on_rtp``:

- H.264 (RFC 6184) and H.265 (RFC 7798): single NAL unit packets, STAP-A/AP aggregation
  and FU-A/FU fragmentation under the MTU (the shared packetiser of ``h264.py``); the
  marker bit on the last packet of the access unit; the RTP timestamp from the PTS at
  90 kHz. Parameter sets carried in-band replace the stored ones; a keyframe without them
  gets the stored ones in front (after an access unit delimiter), so a reader joining at
  any keyframe can decode.
- AAC (RFC 3640 AAC-hbr): the frames of one call go out in as few packets as fit the MTU
  (one AU header each), timestamps at the sampling rate, 1024 samples per frame; with a
  coarse time base (RTMP's milliseconds) timestamps within half a frame of the expected
  one are snapped to it, so the spacing stays sample-exact.

Lazy packetising: work happens only when somebody consumes it. With ``needed`` set (e.g.
``stream.readers.__len__``), access units after a keyframe are held unpacketised while
``needed()`` is false and packetised in order as soon as it is true; keyframes always go
out, so the stream's GOP cache and snapshots have them; the held ones are dropped at the
next keyframe. ``on_count(bytes, frames)`` reports what was held (and, negated, what was
sent after all) so the stream's rates and media timeout see it.

Room for more: a new codec is a spec class with ``kind``, ``clock_rate``,
``payload_type`` and ``media(control)``, plus a branch in :meth:`Packetizer._emit`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import ClassVar, NamedTuple

from onvifcam.media import aac, h264, h265, rtp
from onvifcam.media.sdp import MediaDescription, SessionDescription

__all__ = [
    "AAC_FRAME_SAMPLES",
    "AUDIO_PT",
    "MTU",
    "VIDEO_PT",
    "AacSpec",
    "LengthPrefixed",
    "Packetizer",
    "PacketizerError",
    "TrackSpec",
    "VideoSpec",
    "describe",
    "has_parameter_sets",
    "merge_parameter_sets",
]

VIDEO_PT = 96
AUDIO_PT = 97
MTU = 1400
AAC_FRAME_SAMPLES = 1024
_MASK32 = 0xFFFFFFFF
_BUFFERS = (bytes, bytearray, memoryview)


class PacketizerError(ValueError):
    """A track spec or access unit the packetizer cannot use."""


class LengthPrefixed(NamedTuple):
    """NAL units as length-prefixed data (AVCC/HVCC: FLV, MP4) from ``offset`` on.

    Split into units only when the access unit is packetised, so an access unit that lazy
    packetising holds and then drops costs no copy.
    """

    data: bytes | memoryview
    offset: int
    length_size: int

    def split(self) -> list[bytes]:
        """The NAL units (raises ``h264.H264Error`` when a length overruns the data)."""
        return h264.nals_from_avcc(memoryview(self.data)[self.offset :], self.length_size)


NalUnits = Sequence[bytes | memoryview] | LengthPrefixed
"""A video access unit's NAL units (or AAC frames, as a sequence) as the packetizer keeps them."""


# --------------------------------------------------------------------------- track specs


def _nal_type(codec: str, nal: bytes | memoryview) -> int:
    if codec == "H264":
        return nal[0] & 0x1F if nal else -1
    return (nal[0] >> 1) & 0x3F if nal else -1


_PARAM_TYPES = {
    "H264": (h264.NAL_SPS, h264.NAL_PPS),
    "H265": (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS),
}
_AUD_TYPE = {"H264": h264.NAL_AUD, "H265": h265.NAL_AUD}


def has_parameter_sets(codec: str, nals: Sequence[bytes | memoryview]) -> bool:
    """True when the NAL units include a parameter set (SPS/PPS, or VPS/SPS/PPS)."""
    types = _PARAM_TYPES[codec]
    return any(_nal_type(codec, n) in types for n in nals)


def merge_parameter_sets(
    codec: str, current: Sequence[bytes], nals: Sequence[bytes | memoryview]
) -> list[bytes]:
    """``current`` with the parameter sets found in ``nals`` replacing those of their type.

    One of each type, in decoding order ([VPS,] SPS, PPS); the last one of a type in
    ``nals`` wins.
    """
    types = _PARAM_TYPES[codec]
    found = {_nal_type(codec, n): bytes(n) for n in nals if _nal_type(codec, n) in types}
    merged = {_nal_type(codec, p): p for p in current}
    merged.update(found)
    return [merged[t] for t in types if t in merged]


@dataclass
class VideoSpec:
    """An H.264 or H.265 video track.

    ``parameter_sets``: SPS+PPS (H.264) or VPS+SPS+PPS (H.265) as known out of band (FLV
    sequence header, MP4 avcC/hvcC, or the first keyframe of an Annex-B stream); they go
    into the SDP and in front of keyframes that lack them. ``width``/``height`` (given
    together) become ``a=x-dimensions``, ``fps`` ``a=framerate``, ``bitrate`` (kbit/s)
    ``b=AS``.
    """

    codec: str  # "H264" or "H265"
    parameter_sets: list[bytes] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    bitrate: float | None = None
    payload_type: int = VIDEO_PT

    kind: ClassVar[str] = "video"
    clock_rate: ClassVar[int] = 90000

    def __post_init__(self) -> None:
        if self.codec not in _PARAM_TYPES:
            raise PacketizerError(f"video codec {self.codec!r} is not H264 or H265")
        if not 96 <= self.payload_type <= 127:
            raise PacketizerError(f"dynamic payload type {self.payload_type} not in 96..127")

    def media(self, control: str) -> MediaDescription:
        """The ``m=video`` section of this track."""
        pt = self.payload_type
        md = MediaDescription("video", 0, "RTP/AVP", [str(pt)])
        if self.bitrate and self.bitrate > 0:
            md.bandwidth.append(f"AS:{int(self.bitrate)}")
        attrs = md.attributes
        params = self.parameter_sets
        if self.codec == "H264":
            attrs.append(("rtpmap", f"{pt} H264/90000"))
            fmtp = ["packetization-mode=1"]
            sps = [p for p in params if _nal_type("H264", p) == h264.NAL_SPS]
            pps = [p for p in params if _nal_type("H264", p) == h264.NAL_PPS]
            if sps:
                try:
                    fmtp.append(f"profile-level-id={h264.profile_level_id(sps[0])}")
                except h264.H264Error:
                    pass
                if pps:
                    fmtp.append(f"sprop-parameter-sets={h264.sprop_parameter_sets(sps[0], pps[0])}")
            attrs.append(("fmtp", f"{pt} {';'.join(fmtp)}"))
        else:
            attrs.append(("rtpmap", f"{pt} H265/90000"))
            by_type: dict[int, bytes] = {}
            for p in params:
                by_type.setdefault(_nal_type("H265", p), p)
            vps, sps_, pps_ = (by_type.get(t) for t in _PARAM_TYPES["H265"])
            if vps is not None and sps_ is not None and pps_ is not None:
                attrs.append(("fmtp", f"{pt} {h265.sprop_fmtp(vps, sps_, pps_)}"))
        if self.width and self.height and self.width > 0 and self.height > 0:
            attrs.append(("x-dimensions", f"{self.width},{self.height}"))
        if self.fps and 0 < self.fps < 1000:
            attrs.append(("framerate", f"{self.fps:g}"))
        attrs.append(("control", control))
        return md


@dataclass
class AacSpec:
    """An AAC track (RFC 3640 AAC-hbr).

    ``config`` is the AudioSpecificConfig; ``sample_rate`` is the RTP clock (the config's
    core rate) and ``channels`` the count for the rtpmap. :meth:`from_config` fills both
    from a parsed config.
    """

    config: bytes
    sample_rate: int
    channels: int
    bitrate: float | None = None
    payload_type: int = AUDIO_PT
    _parsed: aac.AacConfig = field(init=False, repr=False, compare=False)

    kind: ClassVar[str] = "audio"

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.channels <= 0:
            raise PacketizerError(
                f"AAC needs a positive sample rate and channel count, not "
                f"{self.sample_rate} Hz / {self.channels}"
            )
        if not 96 <= self.payload_type <= 127:
            raise PacketizerError(f"dynamic payload type {self.payload_type} not in 96..127")
        self._parsed = aac.parse_audio_specific_config(self.config)  # raises AacError

    @classmethod
    def from_config(cls, cfg: aac.AacConfig, *, bitrate: float | None = None) -> AacSpec:
        """The spec of a parsed AudioSpecificConfig (2 channels when its PCE gives none)."""
        return cls(cfg.raw, cfg.sample_rate, cfg.channels or 2, bitrate)

    @property
    def clock_rate(self) -> int:
        """The RTP clock rate: the sampling rate."""
        return self.sample_rate

    def media(self, control: str) -> MediaDescription:
        """The ``m=audio`` section of this track."""
        pt = self.payload_type
        md = MediaDescription("audio", 0, "RTP/AVP", [str(pt)])
        if self.bitrate and self.bitrate > 0:
            md.bandwidth.append(f"AS:{int(self.bitrate)}")
        md.attributes += [
            ("rtpmap", f"{pt} MPEG4-GENERIC/{self.sample_rate}/{self.channels}"),
            ("fmtp", aac.fmtp_mpeg4_generic(self._parsed, pt)),
            ("control", control),
        ]
        return md


TrackSpec = VideoSpec | AacSpec


def describe(specs: Sequence[TrackSpec], name: str = "onvifcam") -> SessionDescription:
    """The session of these tracks; track ``i`` has control ``trackID=i``."""
    return SessionDescription(
        origin="- 0 0 IN IP4 127.0.0.1",
        name=name,
        times=["0 0"],
        media=[spec.media(f"trackID={i}") for i, spec in enumerate(specs)],
    )


# --------------------------------------------------------------------------- packetizer


@dataclass(eq=False)
class _Track:
    index: int
    spec: TrackSpec
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq: int = field(default_factory=lambda: random.getrandbits(16))
    last_ts: int = -1  # audio: the last frame's RTP timestamp, for sample-exact spacing
    # set by Packetizer.configure
    pt: int = 0
    mul: int = 1  # RTP timestamp = pts * mul // div
    div: int = 1
    codec: str = ""
    params: list[bytes] = field(default_factory=list)


class Packetizer:
    """Tracks in, a SessionDescription out; access units in, RTP packets out.

    ``time_base`` is the unit of the ``pts``/``dts`` given to :meth:`on_access_unit`
    (milliseconds for RTMP, 1/90000 for MPEG-TS). Lazy packetising: see the module
    docstring (``needed``, ``on_count``, ``max_held_bytes``, ``max_held_ms``).
    """

    def __init__(
        self,
        on_packet: Callable[[int, bytes], None],
        *,
        name: str = "onvifcam",
        mtu: int = MTU,
        time_base: Fraction = Fraction(1, 1000),
    ) -> None:
        if mtu < 64:
            raise PacketizerError(f"mtu {mtu} is too small")
        if time_base <= 0:
            raise PacketizerError(f"time base {time_base} must be positive")
        self.on_packet = on_packet
        self.name = name
        self.mtu = mtu
        self.time_base = Fraction(time_base)
        self.session: SessionDescription | None = None
        self.needed: Callable[[], bool] | None = None
        self.on_count: Callable[[int, int], None] | None = None
        self.max_held_bytes = 8 * 1024 * 1024
        self._hold_ticks = 0
        self.max_held_ms = 5000
        self._tracks: list[_Track] = []
        self._key_track = -1
        self._held: list[tuple[_Track, int, NalUnits, bool, int]] = []
        self._held_bytes = 0
        self._last_emit = 0

    @property
    def max_held_ms(self) -> int:
        """Lazy packetising holds nothing longer than this (in decoding time)."""
        return self._max_held_ms

    @max_held_ms.setter
    def max_held_ms(self, value: int) -> None:
        self._max_held_ms = value
        tb = self.time_base
        self._hold_ticks = value * tb.denominator // (1000 * tb.numerator)

    # ------------------------------------------------------------------ set-up
    def configure(self, specs: Sequence[TrackSpec]) -> SessionDescription:
        """Set the tracks (index = position in ``specs``) and return their session.

        May be called again when the media changes (a new sequence header): a track of the
        same kind keeps its SSRC, sequence numbers and audio timing, so readers carry on.
        Held access units are dropped.
        """
        if not specs:
            raise PacketizerError("no tracks")
        session = describe(specs, self.name)
        self.drop_held()
        old: dict[str, list[_Track]] = {}
        for t in self._tracks:
            old.setdefault(t.spec.kind, []).append(t)
        tracks = []
        num, den = self.time_base.numerator, self.time_base.denominator
        for i, spec in enumerate(specs):
            reuse = old.get(spec.kind)
            t = reuse.pop(0) if reuse else _Track(i, spec)
            t.index, t.spec, t.pt = i, spec, spec.payload_type
            mul, div = spec.clock_rate * num, den
            if mul % div == 0:
                mul, div = mul // div, 1
            t.mul, t.div = mul, div
            if isinstance(spec, VideoSpec):
                t.codec = spec.codec
                t.params = list(spec.parameter_sets)
            else:
                t.codec = "AAC"
            tracks.append(t)
        self._tracks = tracks
        self._key_track = next((t.index for t in tracks if t.spec.kind == "video"), -1)
        self.session = session
        return session

    @property
    def specs(self) -> list[TrackSpec]:
        """The configured tracks."""
        return [t.spec for t in self._tracks]

    def parameter_sets(self, track: int) -> list[bytes]:
        """The parameter sets a keyframe of video ``track`` gets when it lacks them."""
        return list(self._tracks[track].params)

    def set_parameter_sets(self, track: int, params: Sequence[bytes]) -> None:
        """Replace the stored parameter sets of video ``track`` (e.g. from a message that
        carries only parameter sets)."""
        self._tracks[track].params = list(params)

    # ------------------------------------------------------------------ access units
    def on_access_unit(
        self,
        track: int,
        pts: int,
        dts: int,
        data: NalUnits | bytes | memoryview | Sequence[bytes | memoryview],
        keyframe: bool = False,
        *,
        params_in_band: bool | None = None,
    ) -> None:
        """Packetise one access unit of ``track`` (times in ``time_base`` units).

        Video: ``data`` is the NAL units (a sequence, or :class:`LengthPrefixed`) and
        ``keyframe`` says whether it is an IDR/IRAP access unit; ``params_in_band`` says
        whether it carries parameter sets (None: look). Audio (AAC): ``data`` is one raw
        frame or a sequence of consecutive frames, ``pts`` that of the first; a frame over
        8191 bytes raises ``aac.AacError``.
        """
        try:
            t = self._tracks[track]
        except IndexError:
            raise PacketizerError(f"no track {track}") from None
        ts = (pts * t.mul // t.div) & _MASK32
        if t.codec != "AAC":
            if isinstance(data, _BUFFERS):
                raise PacketizerError(f"{t.codec} takes a list of NAL units, not one buffer")
            self._video(t, ts, dts, data, keyframe, params_in_band)
            return
        # AAC, inline: this runs for every audio frame, held or not.
        if isinstance(data, _BUFFERS):
            frames: Sequence[bytes | memoryview] = (data,)
        elif isinstance(data, LengthPrefixed):
            raise PacketizerError("AAC takes raw frames, not length-prefixed NAL units")
        elif not data:
            return
        else:
            frames = data
        last = t.last_ts
        if last >= 0:
            expected = (last + AAC_FRAME_SAMPLES) & _MASK32
            diff = (ts - expected) & _MASK32
            if diff >= 0x80000000:
                diff -= 0x100000000
            if -AAC_FRAME_SAMPLES // 2 < diff < AAC_FRAME_SAMPLES // 2:
                ts = expected  # millisecond timestamps jitter; keep sample-exact spacing
        t.last_ts = (
            ts if len(frames) == 1 else (ts + (len(frames) - 1) * AAC_FRAME_SAMPLES) & _MASK32
        )
        needed = self.needed
        if needed is not None and self._key_track >= 0:
            if (
                not needed()
                and self._held_bytes < self.max_held_bytes
                and (dts - self._last_emit) & _MASK32 < self._hold_ticks
            ):
                self._hold(t, ts, frames, False, sum(map(len, frames)))
                return
            if self._held:
                self._flush_held()
        self._last_emit = dts
        self._emit_audio(t, ts, frames)

    def _video(
        self,
        t: _Track,
        ts: int,
        dts: int,
        nals: NalUnits,
        keyframe: bool,
        params_in_band: bool | None,
    ) -> None:
        if params_in_band is None or params_in_band:
            if isinstance(nals, LengthPrefixed):
                nals = nals.split()
            if params_in_band is None:
                params_in_band = has_parameter_sets(t.codec, nals)
            if params_in_band:
                t.params = merge_parameter_sets(t.codec, t.params, nals)
        add_params = keyframe and not params_in_band
        needed = self.needed
        if needed is not None:
            if keyframe and t.index == self._key_track:
                if self._held and not needed():
                    self.drop_held()  # the stream's GOP cache restarts at this keyframe
            elif (
                not needed()
                and self._held_bytes < self.max_held_bytes
                and (dts - self._last_emit) & _MASK32 < self._hold_ticks
            ):
                self._hold(t, ts, nals, add_params, _size(nals))
                return
            if self._held:
                self._flush_held()
        self._last_emit = dts
        self._emit_video(t, ts, nals, add_params)

    # ------------------------------------------------------------------ RTP
    def _send(self, t: _Track, ts: int, payloads: list[bytes]) -> None:
        seq = t.seq
        last = len(payloads) - 1
        emit = self.on_packet
        index = t.index
        pt = t.pt
        ssrc = t.ssrc
        build = rtp.build
        for i, p in enumerate(payloads):
            emit(index, build(pt, seq, ts, ssrc, p, i == last))
            seq = (seq + 1) & 0xFFFF
        t.seq = seq

    def _emit_video(self, t: _Track, ts: int, nals: NalUnits, add_params: bool) -> None:
        if isinstance(nals, LengthPrefixed):
            nals = h264.nals_from_avcc(memoryview(nals.data)[nals.offset :], nals.length_size)
        if add_params and t.params:
            # Readers joining at this keyframe need the parameter sets in-band.
            if nals and _nal_type(t.codec, nals[0]) == _AUD_TYPE[t.codec]:
                nals = [nals[0], *t.params, *nals[1:]]
            else:
                nals = [*t.params, *nals]
        if t.codec == "H264":
            payloads = h264.packetize(nals, self.mtu)
        else:
            payloads = h265.packetize(nals, self.mtu)
        if payloads:
            self._send(t, ts, payloads)

    def _emit_audio(self, t: _Track, ts: int, frames: Sequence[bytes | memoryview]) -> None:
        if len(frames) == 1:
            self.on_packet(t.index, rtp.build(t.pt, t.seq, ts, t.ssrc, aac.packetize(frames), True))
            t.seq = (t.seq + 1) & 0xFFFF
            return
        # Several frames: as many per packet as fit (AU-headers-length + 2 bytes each).
        budget = self.mtu
        start = 0
        size = 2
        seq = t.seq
        for i, frame in enumerate(frames):
            n = 2 + len(frame)
            if i > start and size + n > budget:
                first_ts = (ts + start * AAC_FRAME_SAMPLES) & _MASK32
                payload = aac.packetize(frames[start:i])
                self.on_packet(t.index, rtp.build(t.pt, seq, first_ts, t.ssrc, payload, True))
                seq = (seq + 1) & 0xFFFF
                start, size = i, 2
            size += n
        first_ts = (ts + start * AAC_FRAME_SAMPLES) & _MASK32
        payload = aac.packetize(frames[start:])
        self.on_packet(t.index, rtp.build(t.pt, seq, first_ts, t.ssrc, payload, True))
        t.seq = (seq + 1) & 0xFFFF

    def _emit(self, t: _Track, ts: int, data: NalUnits, add_params: bool) -> None:
        if t.codec == "AAC" and not isinstance(data, LengthPrefixed):
            self._emit_audio(t, ts, data)
        else:
            self._emit_video(t, ts, data, add_params)

    # ------------------------------------------------------------------ lazy packetising
    def _hold(self, t: _Track, ts: int, data: NalUnits, add_params: bool, size: int) -> None:
        self._held.append((t, ts, data, add_params, size))
        self._held_bytes += size
        count = self.on_count
        if count is not None:
            count(_rtp_size(size), 1 if t.index == self._key_track else 0)

    def drop_held(self) -> None:
        """Forget the access units held back (they stay counted as input)."""
        self._held.clear()
        self._held_bytes = 0

    def _flush_held(self) -> None:
        """Packetise what was held back (oldest first); it counts once, as RTP input."""
        held = self._held
        self._held = []
        self._held_bytes = 0
        count = self.on_count
        key = self._key_track
        for t, ts, data, add_params, size in held:
            if count is not None:
                count(-_rtp_size(size), -1 if t.index == key else 0)
            self._emit(t, ts, data, add_params)


def _size(data: NalUnits) -> int:
    """Bytes of an access unit as given (length prefixes included)."""
    if isinstance(data, LengthPrefixed):
        return len(data.data) - data.offset
    return sum(map(len, data))


def _rtp_size(payload: int) -> int:
    """About how many RTP bytes a payload of this size becomes (headers included)."""
    return payload + 14 * (payload // MTU + 1)
