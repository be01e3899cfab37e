"""What an SRT publisher's payloads turn into: MPEG-TS -> access units -> RTP -> stream.

The SRT server hands the payloads of each admitted caller, in order, to a
:class:`PayloadSink` made by a :data:`SinkFactory`. The application's sink is
:class:`TsIngest`: :class:`~onvifcam.media.mpegts.TsDemuxer` turns the bytes into access
units, :class:`~onvifcam.media.packetizer.Packetizer` into RTP and one SessionDescription,
and the path's :class:`~onvifcam.media.stream.Stream` fans them out to RTSP readers.

Tracks: the first H.264/H.265 and the first AAC stream of the program; other streams are
named once in the log and ignored. The stream is published when the media is known: at
the first video keyframe with its parameter sets (and the AAC configuration, if the
program has AAC: access units are held from that keyframe until the audio configuration
shows up, at most ``MAX_WAIT_AUS`` of them); a program with audio only is published at its
first frame. New parameter sets, an AAC configuration change or a new program layout
re-announce the stream (readers carry on when the track layout stays the same).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

from onvifcam.media import aac, mpegts
from onvifcam.media.mpegts import (
    AudioFrame,
    TracksChanged,
    TsDemuxer,
    TsError,
    VideoAccessUnit,
    VideoParameters,
)
from onvifcam.media.packetizer import AacSpec, Packetizer, PacketizerError, TrackSpec, VideoSpec
from onvifcam.media.stream import Publisher, Stream, StreamBusy, StreamError, StreamRegistry

__all__ = ["IngestError", "PayloadSink", "SinkFactory", "TsIngest", "ts_ingest_factory"]

log = logging.getLogger(__name__)

MAX_WAIT_AUS = 100  # video access units held while waiting for the AAC configuration
MAX_WAIT_BYTES = 8 * 1024 * 1024


class IngestError(Exception):
    """The payload cannot be used at all (not MPEG-TS); the connection is closed."""


class PayloadSink(Protocol):
    """Receives one connection's payloads."""

    def feed(self, payloads: list[bytes]) -> None:
        """Payloads delivered since the last call, in sequence order; may raise
        :class:`IngestError`."""
        ...

    def close(self, reason: str) -> None:
        """The connection ended (the sink unpublishes what it published)."""
        ...


SinkFactory = Callable[[str, Publisher], PayloadSink]
"""(path, publisher) -> the sink of a newly admitted caller; may raise ``StreamError`` to
refuse it (``StreamBusy``: the path is published by another protocol)."""


@dataclass
class _Held:
    video: bool
    pts: int
    dts: int
    data: list[bytes] | bytes
    key: bool


@dataclass
class IngestStats:
    """Counters of one TS ingest."""

    video_aus: int = 0
    audio_frames: int = 0
    waited: int = 0  # access units dropped before the stream could be published
    bad_units: int = 0  # refused by the packetizer
    republished: int = 0
    ignored_tracks: list[str] = field(default_factory=list)


class TsIngest:
    """One SRT publisher: MPEG-TS bytes in, RTP into the stream of ``path``."""

    def __init__(
        self,
        path: str,
        registry: StreamRegistry,
        publisher: Publisher,
        *,
        replace: bool = False,
        lazy: bool = True,
        limits: mpegts.Limits | None = None,
    ) -> None:
        self.path = path
        self.registry = registry
        self.publisher = publisher
        self.replace = replace
        self.lazy = lazy
        self.demuxer = TsDemuxer(limits or mpegts.Limits())
        self.packetizer = Packetizer(self._no_stream, name=path, time_base=Fraction(1, 90000))
        self.stream: Stream | None = None
        self.stats = IngestStats()
        self.video_pid = -1
        self.audio_pid = -1
        self.video_codec = ""
        self.video_params: list[bytes] = []
        self.video_info: object | None = None
        self.audio_config: aac.AacConfig | None = None
        self.published = False
        self._vindex: int | None = None
        self._aindex: int | None = None
        self._held: list[_Held] = []
        self._held_bytes = 0
        self._closed = False
        registry_stream = registry.get(path)
        if registry_stream is not None and registry_stream.online and not replace:
            holder = registry_stream.publisher
            if holder is not publisher:
                desc = getattr(holder, "description", "another publisher")
                raise StreamBusy(f"path '{path}' already has a publisher ({desc})")

    @staticmethod
    def _no_stream(track: int, packet: bytes) -> None:
        """on_packet before the stream exists (never called: publish comes first)."""

    # ------------------------------------------------------------------ input
    def feed(self, payloads: list[bytes]) -> None:
        """Demux the payloads and pass their access units on."""
        if self._closed:
            return
        data = payloads[0] if len(payloads) == 1 else b"".join(payloads)
        try:
            events = self.demuxer.feed(data)
        except TsError as exc:
            self._events(exc.events)
            raise IngestError(f"the payload is not MPEG-TS ({exc})") from None
        self._events(events)

    def _events(self, events: list[mpegts.Event]) -> None:
        for ev in events:
            if type(ev) is VideoAccessUnit:
                if ev.pid == self.video_pid:
                    self._video(ev)
            elif type(ev) is AudioFrame:
                if ev.pid == self.audio_pid:
                    self._audio(ev)
            elif type(ev) is VideoParameters:
                if ev.pid == self.video_pid:
                    self._parameters(ev)
            elif type(ev) is TracksChanged:
                self._tracks(ev)

    def _tracks(self, ev: TracksChanged) -> None:
        video = next((t for t in ev.tracks if t.kind == "video" and t.supported), None)
        audio = next((t for t in ev.tracks if t.kind == "audio" and t.supported), None)
        for t in ev.tracks:
            if t is video or t is audio:
                continue
            name = f"{t.kind} {t.codec} (pid {t.pid})"
            if name not in self.stats.ignored_tracks:
                self.stats.ignored_tracks.append(name)
                log.warning("srt %s: ignoring %s: not supported", self.path, name)
        vpid = video.pid if video is not None else -1
        apid = audio.pid if audio is not None else -1
        if (vpid, apid) == (self.video_pid, self.audio_pid):
            return
        self.video_pid, self.audio_pid = vpid, apid
        self.video_codec = video.codec if video is not None else ""
        self.video_params = self.demuxer.parameter_sets(vpid) if vpid >= 0 else []
        self.audio_config = None
        self._drop_held()
        if self.published:
            self.published = False  # publish again once the new media is known
            self._vindex = self._aindex = None
        if vpid < 0 and apid < 0:
            log.warning("srt %s: the program has no H.264, H.265 or AAC stream", self.path)

    def _parameters(self, ev: VideoParameters) -> None:
        self.video_params = list(ev.parameter_sets)
        self.video_info = ev.info
        if self.published:
            self._publish()  # new parameter sets: re-announce (size may have changed)

    def _video(self, ev: VideoAccessUnit) -> None:
        self.stats.video_aus += 1
        if not self.published:
            if not self._held and not (ev.keyframe and self.video_params):
                self.stats.waited += 1
                return
            self._hold(_Held(True, ev.pts, ev.dts, ev.nal_units, ev.keyframe))
            if self.audio_pid < 0 or self.audio_config is not None:
                self._publish()
            elif len(self._held) > MAX_WAIT_AUS or self._held_bytes > MAX_WAIT_BYTES:
                log.warning(
                    "srt %s: no AAC configuration after %d video frames; publishing video only",
                    self.path,
                    len(self._held),
                )
                self.audio_pid = -1
                self._publish()
            return
        if self._vindex is None:
            return
        try:
            self.packetizer.on_access_unit(
                self._vindex,
                ev.pts,
                ev.dts,
                ev.nal_units,
                ev.keyframe,
                params_in_band=ev.params_in_band,
            )
        except (PacketizerError, ValueError):
            self.stats.bad_units += 1

    def _audio(self, ev: AudioFrame) -> None:
        self.stats.audio_frames += 1
        cfg = ev.config
        if cfg is not self.audio_config:
            if self.audio_config is not None and cfg.raw == self.audio_config.raw:
                self.audio_config = cfg
            else:
                changed = self.audio_config is not None
                self.audio_config = cfg
                if self.published and changed:
                    log.info("srt %s: AAC configuration changed; re-announcing", self.path)
                    self._publish()
        if not self.published:
            if self.video_pid < 0:
                self._publish()  # audio only
            elif self._held:
                self._hold(_Held(False, ev.pts, ev.pts, ev.frame, False))
                self._publish()
                return
            else:
                self.stats.waited += 1
                return
        if self._aindex is None:
            return
        try:
            self.packetizer.on_access_unit(self._aindex, ev.pts, ev.pts, ev.frame)
        except (PacketizerError, ValueError):
            self.stats.bad_units += 1

    def _hold(self, held: _Held) -> None:
        self._held.append(held)
        self._held_bytes += (
            sum(map(len, held.data)) if isinstance(held.data, list) else len(held.data)
        )

    def _drop_held(self) -> None:
        self.stats.waited += len(self._held)
        self._held = []
        self._held_bytes = 0

    # ------------------------------------------------------------------ publishing
    def track_specs(self) -> list[TrackSpec]:
        """The packetizer tracks of what is known now (video first)."""
        specs: list[TrackSpec] = []
        if self.video_pid >= 0 and self.video_params:
            info = self.video_info
            specs.append(
                VideoSpec(
                    self.video_codec,
                    list(self.video_params),
                    width=getattr(info, "width", None),
                    height=getattr(info, "height", None),
                    fps=getattr(info, "fps", None),
                )
            )
        if self.audio_pid >= 0 and self.audio_config is not None:
            specs.append(AacSpec.from_config(self.audio_config))
        return specs

    def _publish(self) -> None:
        specs = self.track_specs()
        if not specs:
            return
        try:
            session = self.packetizer.configure(specs)
        except (PacketizerError, ValueError) as exc:
            raise IngestError(f"unusable media: {exc}") from None
        stream = self.stream
        was = stream is not None
        try:
            if stream is None:
                stream = self.registry.get_or_create(self.path)
            stream.publish(self.publisher, session, replace=self.replace)
        except StreamError as exc:
            raise IngestError(str(exc)) from None
        if was:
            self.stats.republished += 1
        self.stream = stream
        self.published = True
        has_video = isinstance(specs[0], VideoSpec)
        self._vindex = 0 if has_video else None
        self._aindex = (1 if has_video else 0) if isinstance(specs[-1], AacSpec) else None
        p = self.packetizer
        p.on_packet = stream.on_rtp
        if self.lazy:
            p.needed = stream.readers.__len__
            p.on_count = stream.note_input
        held, self._held, self._held_bytes = self._held, [], 0
        for h in held:
            index = self._vindex if h.video else self._aindex
            if index is None:
                continue
            try:
                p.on_access_unit(index, h.pts, h.dts, h.data, h.key)
            except (PacketizerError, ValueError):
                self.stats.bad_units += 1

    # ------------------------------------------------------------------ end
    def close(self, reason: str) -> None:
        """The caller left: flush the demuxer, unpublish."""
        if self._closed:
            return
        self._events(self.demuxer.flush())
        self._closed = True
        if self.stream is not None:
            self.stream.unpublish(self.publisher, reason)
            self.stream = None

    def ingest_drops(self) -> dict[str, int]:
        """What this ingest dropped of its input, by reason (the stream's statistics and
        /metrics add them to its own drops): ``malformed`` (damaged PES, bad ADTS, units
        the packetizer refused), ``ts_continuity`` (TS packets missing: continuity counter
        gaps), ``unsupported_codec`` (PES of stream types that are not carried),
        ``before_publish`` (units before the first keyframe with its parameter sets)."""
        d = self.demuxer.stats()
        return {
            "malformed": d["malformed"] + d["dropped_aus"] + d["adts_errors"]
            + self.stats.bad_units,
            "ts_continuity": d["cc_errors"],
            "unsupported_codec": d["unknown_pes"],
            "before_publish": self.stats.waited,
        }  # fmt: skip

    def summary(self) -> str:
        """Counters for the close log line."""
        d = self.demuxer.stats()
        return (
            f"{self.stats.video_aus} video / {self.stats.audio_frames} audio units, "
            f"{d['dropped_aus']} damaged, {d['cc_errors']} TS continuity errors"
        )


def ts_ingest_factory(
    registry: StreamRegistry,
    *,
    lazy: bool = True,
    replace_for: Callable[[str], bool] = lambda path: False,
) -> SinkFactory:
    """The application's sink factory: a :class:`TsIngest` per admitted caller."""

    def make(path: str, publisher: Publisher) -> PayloadSink:
        return TsIngest(path, registry, publisher, replace=replace_for(path), lazy=lazy)

    return make
