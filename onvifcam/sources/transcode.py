"""Transcoded sub stream: an H.264 picture made from a camera's main stream (PyAV).

For a camera with ``sub_stream = "transcode"`` a :class:`SubTranscoder` holds the publisher
slot of ``PATH/sub`` (as a stand-in, like the offline placeholder: no publish event, no auto
camera, a real publisher there would replace it). Its SDP comes from one throwaway encode
at the configured size, so readers can DESCRIBE at once. Work happens only while the sub
stream has readers: then it reads the main stream in-process (from its cached keyframe),
and a worker thread decodes every access unit, keeps the frames the sub's frame rate asks
for, crops the window the PTZ head shows (:func:`onvifcam.onvif.ptz.view_window`), scales
it, applies the imaging brightness/contrast/saturation (numpy, only when not neutral) and
encodes it with libx264 (ultrafast, zerolatency, baseline) at the sub encoder's resolution,
frame rate, bitrate and GOV length. A settings change restarts the sub stream (its readers
reconnect and get the new size). Nothing decodes on the event loop; one job per camera is
in flight, and a backlog beyond ``_MAX_PENDING`` access units drops to the next keyframe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from fractions import Fraction
from typing import Any

import numpy as np

from onvifcam.aio import cancel_and_wait, within
from onvifcam.cameras import Camera, CameraRegistry, VideoView
from onvifcam.config import Config
from onvifcam.media import h264, h265, rtp
from onvifcam.media.packetizer import Packetizer, VideoSpec
from onvifcam.media.stream import Batch, Stream, StreamRegistry
from onvifcam.onvif.imaging import picture_adjustment
from onvifcam.onvif.ptz import view_window
from onvifcam.onvif.ptzhead import Head
from onvifcam.sources.testpattern import EncodedUnit

log = logging.getLogger(__name__)

_MAX_PENDING = 100  # access units waiting for the worker before dropping to a keyframe
_RTP = 0  # Batch item kind of RTP packets


class SubEncoder:
    """Decode main access units, crop/scale/adjust, encode H.264 (blocking: worker thread)."""

    def __init__(self, view: VideoView) -> None:
        import av

        self._av = av
        self.view = view
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = view.width, view.height, "yuv420p"
        rate = Fraction(view.fps).limit_denominator(1001)
        ctx.time_base = 1 / rate
        ctx.framerate = rate
        ctx.gop_size = max(1, view.gov_length)
        ctx.bit_rate = view.bitrate_kbps * 1000
        ctx.thread_count = 1
        kb = view.bitrate_kbps
        ctx.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "profile": "baseline",
            "x264-params": f"scenecut=0:threads=1:vbv-maxrate={kb}:vbv-bufsize={kb}",
        }
        ctx.open()
        self._enc = ctx
        self._dec: Any = None
        self._codec = ""
        self._n = 0
        self._lock = threading.Lock()
        self._closed = False
        self.decoded = 0
        self.encoded = 0

    def reset(self, codec: str) -> None:
        """A new main session (or the first): a fresh decoder for ``codec``."""
        self._dec = self._av.CodecContext.create("h264" if codec == "H264" else "hevc", "r")
        self._dec.thread_count = 2
        self._codec = codec

    def parameter_sets(self) -> list[bytes]:
        """SPS and PPS (encode one grey frame; the encoder is then restarted on an IDR)."""
        arr = np.full((self.view.height * 3 // 2, self.view.width), 128, dtype=np.uint8)
        units = self._encode(arr, keyframe=True)
        return [n for u in units for n in u.nals if n and n[0] & 0x1F in (7, 8)]

    def process(
        self,
        aus: list[tuple[bytes, bool]],
        head: tuple[float, float, float],
        adjust: tuple[float, float, float],
    ) -> list[EncodedUnit]:
        """Decode ``aus`` (Annex-B, keyframe flag), encode the frames marked to keep."""
        out: list[EncodedUnit] = []
        with self._lock:
            if self._closed or self._dec is None:
                return out
            for data, keep in aus:
                try:
                    frames = self._dec.decode(self._av.Packet(data))
                except self._av.error.FFmpegError:
                    continue
                for f in frames:
                    self.decoded += 1
                    if keep:
                        out += self._encode(self._picture(f, head, adjust))
        return out

    def _picture(
        self, frame: Any, head: tuple[float, float, float], adjust: tuple[float, float, float]
    ) -> np.ndarray:
        w, h = frame.width, frame.height
        left, top, fw, fh = view_window(*head)
        cw, ch = max(16, int(w * fw)) & ~1, max(16, int(h * fh)) & ~3
        x0 = min(max(0, int(w * left)) & ~1, w - cw)
        y0 = min(max(0, int(h * top)) & ~1, h - ch)
        if (cw, ch) != (w, h):
            yuv = frame.to_ndarray(format="yuv420p")
            y = yuv[:h]
            u = yuv[h : h + h // 4].reshape(h // 2, w // 2)
            v = yuv[h + h // 4 : h + h // 2].reshape(h // 2, w // 2)
            buf = np.empty((ch * 3 // 2, cw), dtype=np.uint8)
            buf[:ch] = y[y0 : y0 + ch, x0 : x0 + cw]
            q = ch // 4
            buf[ch : ch + q] = u[y0 // 2 : y0 // 2 + ch // 2, x0 // 2 : x0 // 2 + cw // 2].reshape(
                q, cw
            )
            buf[ch + q :] = v[y0 // 2 : y0 // 2 + ch // 2, x0 // 2 : x0 // 2 + cw // 2].reshape(
                q, cw
            )
            frame = self._av.VideoFrame.from_ndarray(buf, format="yuv420p")
        scaled = frame.reformat(
            width=self.view.width,
            height=self.view.height,
            format="yuv420p",
            interpolation="FAST_BILINEAR",
        )
        arr = scaled.to_ndarray()
        brightness, contrast, saturation = adjust
        if (brightness, contrast, saturation) != (0.0, 1.0, 1.0):
            arr = adjust_picture(arr, self.view.height, brightness, contrast, saturation)
        return arr

    def _encode(self, arr: np.ndarray, keyframe: bool = False) -> list[EncodedUnit]:
        frame = self._av.VideoFrame.from_ndarray(arr, format="yuv420p")
        frame.pts = self._n
        if keyframe:
            frame.pict_type = self._av.video.frame.PictureType.I
        self._n += 1
        units = [
            EncodedUnit(h264.split_annexb(bytes(p)), bool(p.is_keyframe))
            for p in self._enc.encode(frame)
        ]
        self.encoded += len(units)
        return units

    def close(self) -> None:
        """Release the codecs (waits for a job in progress)."""
        with self._lock:
            self._closed = True
            self._dec = None


def adjust_picture(
    arr: np.ndarray, height: int, brightness: float, contrast: float, saturation: float
) -> np.ndarray:
    """Brightness (offset, fraction of full scale), contrast and saturation (gains around
    mid-grey) on a yuv420p array."""
    out = arr.astype(np.int16)
    y = out[:height]
    y -= 128
    y = (y * contrast + 128 + brightness * 219).astype(np.int16)
    out[:height] = y
    c = out[height:]
    out[height:] = ((c - 128) * saturation + 128).astype(np.int16)
    return np.clip(out, 0, 255).astype(np.uint8)


def annexb(codec: str, packets: list[bytes], params: list[bytes]) -> bytes:
    """One access unit's RTP packets as Annex-B, with ``params`` in front when given."""
    payloads: list[bytes | memoryview | None] = []
    for p in packets:
        try:
            hd = rtp.parse(p)
        except rtp.RtpError:
            payloads.append(None)
            continue
        payloads.append(memoryview(p)[hd.payload_start : hd.payload_end])
    nals = h264.depacketize(payloads) if codec == "H264" else h265.depacketize(payloads)
    return h264.to_annexb([*params, *nals])


def _sdp_params(main: Stream) -> list[bytes]:
    track = main.video_track
    if track is None:
        return []
    fmtp = track.media.fmtp.get(track.payload_type, {})
    try:
        if track.codec == "H264":
            return h264.parse_sprop_parameter_sets(fmtp.get("sprop-parameter-sets", ""))
        return h265.parse_sprop(fmtp)
    except ValueError:
        return []


def _view_key(v: VideoView) -> tuple[float, ...]:
    """What a change of means a new sub stream (a new SDP and encoder)."""
    return (v.width, v.height, v.fps, v.bitrate_kbps, v.gov_length)


class SubTranscoder:
    """The transcoded sub stream of one camera (see the module docstring)."""

    placeholder = True  # a stand-in publisher: see onvifcam.media.stream.Stream.online

    def __init__(
        self, cam: Camera, streams: StreamRegistry, executor: Executor, owner: Transcoders
    ) -> None:
        self.cam = cam
        self.streams = streams
        self.executor = executor
        self.owner = owner
        self.sub = streams.get_or_create(cam.sub_path)
        self.description = f"transcoder of {cam.path}"
        self._packetizer = Packetizer(
            self.sub.on_rtp, name=self.sub.path, time_base=Fraction(1, 90000)
        )
        self._task: asyncio.Task[None] | None = None
        self._main: Stream | None = None
        self._version = -1
        self._pending: list[tuple[list[bytes], bool]] = []
        self._waiting_key = True
        self._wake = asyncio.Event()
        self.dropped = 0  # backlogs dropped to the next keyframe
        self.frames_in = 0  # main access units taken for the worker
        self.decoded = 0  # main pictures decoded
        self.frames = 0  # sub pictures encoded and published
        self.encoder: SubEncoder | None = None
        self._codec = "H264"
        self._params: list[bytes] = []
        self._published: tuple[float, ...] = ()  # _view_key of the published sub stream

    # Reader protocol (of the main stream) ------------------------------------------
    def deliver(self, batch: Batch) -> None:
        """Main stream AUs (on the loop): keep the video ones for the worker."""
        main = self._main
        if main is None:
            return
        for track, kind, packets, key in batch.items:
            if track != main.key_track or kind != _RTP:
                continue
            if self._waiting_key and not key:
                continue
            self._waiting_key = False
            if len(self._pending) >= _MAX_PENDING:
                self._pending.clear()
                self.dropped += 1
                self._waiting_key = not key
                if not key:
                    continue
            self._pending.append((packets, key))
            self.frames_in += 1
        self._wake.set()

    def stream_closed(self, reason: str) -> None:
        """The main stream's format changed or it ended: detach and start again."""
        self._main = None

    def kick(self, reason: str) -> None:
        """A real publisher took PATH/sub: stop transcoding."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def reader_refusal(self) -> str:
        """Why a new reader is turned away now (the RTSP server answers its DESCRIBE with
        503 and this reason); "" while this sub stream transcodes or there is room."""
        n = self.owner.running
        limit = self.owner.cfg.onvif.max_transcodes
        if self.encoder is not None or n < limit:
            return ""
        self.owner.refused += 1
        return (
            f"{n} sub streams are transcoded already on this server ([onvif] max_transcodes "
            f"= {limit}); read the main stream or raise [onvif] max_transcodes"
        )

    # lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        """Publish the sub stream and serve it while read."""
        self.cam.on_encoder_change.append(self._encoder_changed)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"transcode-{self.cam.path}"
        )

    async def stop(self) -> None:
        """Stop and give PATH/sub back."""
        with contextlib.suppress(ValueError):
            self.cam.on_encoder_change.remove(self._encoder_changed)
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._detach()
        self.sub.unpublish(self, "transcoder stopped")

    def _detach(self) -> None:
        if self._main is not None:
            self._main.remove_reader(self)
            self._main = None
        self._pending.clear()
        if self.encoder is not None:
            self.decoded += self.encoder.decoded
            self.encoder.close()
            self.encoder = None
            self.owner.running -= 1

    async def _publish(self, view: VideoView) -> None:
        loop = asyncio.get_running_loop()
        enc = await loop.run_in_executor(self.executor, SubEncoder, view)
        params = await loop.run_in_executor(self.executor, enc.parameter_sets)
        enc.close()
        spec = VideoSpec("H264", params, view.width, view.height, view.fps, view.bitrate_kbps)
        if self.sub.publisher not in (None, self):
            raise RuntimeError(f"{self.sub.path} has another publisher")
        self._withdraw()
        self._published = _view_key(view)
        self.sub.publish(self, self._packetizer.configure([spec]))

    def _withdraw(self) -> None:
        """Unpublish PATH/sub (its SDP no longer matches the settings) and close its
        readers; a DESCRIBE meanwhile waits for the new one (see :meth:`demand`)."""
        if self.sub.publisher is self:
            self.sub.unpublish(self, "sub stream settings changed")
            for r in list(self.sub.readers):
                r.stream_closed("the sub stream's settings changed")
            self.sub.readers.clear()

    def _encoder_changed(self, token: str) -> None:
        """A client stored encoder settings: when the sub stream's changed, take the old
        one down now and wake the worker to publish the new one."""
        if self._task is None or _view_key(self.cam.sub_settings()) == self._published:
            return
        self._withdraw()
        self._wake.set()

    def demand(self, path: str) -> bool:
        """A reader wants PATH/sub while it is being remade: it waits for the new one."""
        return path == self.sub.path and self._task is not None and not self._task.done()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        view = self.cam.sub_settings()
        try:
            await self._publish(view)
            base = 0  # output timestamps continue across main sessions
            last_out = 0
            ts0: int | None = None
            next_ts = 0
            while True:
                now_view = self.cam.sub_settings()
                if _view_key(now_view) != self._published or self.sub.publisher is not self:
                    self._detach()
                    view = now_view
                    await self._publish(view)
                main = self.streams.get(self.cam.path)
                playable = main is not None and main.playable and main.video_track is not None
                if not self.sub.readers or not playable:
                    self._detach()
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await within(self._wake.wait(), 0.2)
                    continue
                assert main is not None
                if self._main is not main or self._version != main.version:
                    self._detach()
                    if self.owner.running >= self.owner.cfg.onvif.max_transcodes:
                        self.owner.refused += 1
                        log.warning(
                            "transcode %s: %d sub streams are transcoded already "
                            "([onvif] max_transcodes); its readers are closed",
                            self.sub.path,
                            self.owner.running,
                        )
                        for r in list(self.sub.readers):
                            r.stream_closed("too many transcoded sub streams on this server")
                        self.sub.readers.clear()
                        continue
                    self.encoder = await loop.run_in_executor(self.executor, SubEncoder, view)
                    self.owner.running += 1
                    codec = "H265" if main.video_track.codec.upper() in ("H265", "HEVC") else "H264"
                    self.encoder.reset(codec)
                    self._codec = codec
                    self._params = _sdp_params(main)
                    self._main, self._version = main, main.version
                    self._waiting_key = True
                    base = last_out + round(90000 / view.fps)
                    ts0 = None
                    main.add_reader(self)
                if not self._pending:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await within(self._wake.wait(), 0.5)
                    continue
                items, self._pending = self._pending, []
                step = 90000 / view.fps
                aus: list[tuple[bytes, bool]] = []
                stamps: list[int] = []
                for packets, key in items:
                    ts = rtp.parse(packets[0]).timestamp if packets else 0
                    if ts0 is None:
                        ts0, next_ts = ts, 0
                    rel = (ts - ts0) & 0xFFFFFFFF
                    keep = rel >= next_ts
                    if keep:
                        next_ts = max(next_ts + step, rel - step)
                        stamps.append(base + rel)
                    aus.append((annexb(self._codec, packets, self._params if key else []), keep))
                head = self.cam.ptz_head
                pos = (
                    head.position(self.owner.clock()) if isinstance(head, Head) else (0.0, 0.0, 0.0)
                )
                units = (
                    await loop.run_in_executor(
                        self.executor, self.encoder.process, aus, pos, picture_adjustment(self.cam)
                    )
                    if self.encoder is not None
                    else []
                )
                for u, pts in zip(units, stamps, strict=False):
                    self._packetizer.on_access_unit(0, pts, pts, u.nals, u.keyframe)
                    last_out = pts
                    self.frames += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("transcode %s failed; the sub stream stops", self.sub.path)
            self._detach()


class Transcoders:
    """The app component running a :class:`SubTranscoder` per ``sub_stream = "transcode"``
    camera, in a pool of ``[onvif] max_transcodes`` worker threads."""

    def __init__(self, cfg: Config, streams: StreamRegistry, cameras: CameraRegistry) -> None:
        import time

        self.cfg = cfg
        self.streams = streams
        self.cameras = cameras
        self.clock = time.monotonic  # the PTZ service's clock
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, cfg.onvif.max_transcodes), thread_name_prefix="transcode"
        )
        self.by_camera: dict[str, SubTranscoder] = {}
        self._by_sub: dict[str, SubTranscoder] = {}  # by sub stream path (the demand hook)
        self.running = 0  # transcoding now
        self.refused = 0  # starts refused by max_transcodes

    async def start(self) -> None:
        """A transcoder for every camera that asks for one, now and when added."""
        self.cameras.on_added.append(self._camera_added)
        self.cameras.on_removed.append(self._camera_removed)
        self.streams.add_demand_hook(self._demand)
        for cam in list(self.cameras.cameras.values()):
            self._camera_added(cam)

    def _camera_added(self, cam: Camera) -> None:
        if not cam.transcoded_sub or cam.key in self.by_camera:
            return
        t = SubTranscoder(cam, self.streams, self._pool, self)
        self.by_camera[cam.key] = t
        self._by_sub[t.sub.path] = t
        t.start()

    def _demand(self, path: str) -> bool:
        t = self._by_sub.get(path)
        return t is not None and t.demand(path)

    def _camera_removed(self, cam: Camera) -> None:
        t = self.by_camera.pop(cam.key, None)
        if t is not None:
            self._by_sub.pop(t.sub.path, None)
            asyncio.get_running_loop().create_task(t.stop())

    async def stop(self) -> None:
        """Stop every transcoder and the worker threads."""
        for t in list(self.by_camera.values()):
            await t.stop()
        self.by_camera.clear()
        self._by_sub.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def tick(self, now: float) -> None:
        """Nothing periodic."""

    def ready_info(self) -> dict[str, str]:
        """Nothing for the ready line."""
        return {}

    def stats(self) -> dict[str, int]:
        """``transcoders`` and ``running`` (gauges: configured, transcoding now);
        ``frames_in`` (main access units taken), ``decoded``, ``frames_out`` (sub pictures
        published), ``dropped`` (backlogs dropped to a keyframe), ``refused`` (sub stream
        readers turned away by ``[onvif] max_transcodes``)."""
        ts = list(self.by_camera.values())
        return {
            "transcoders": len(ts),
            "running": self.running,
            "frames_in": sum(t.frames_in for t in ts),
            "decoded": sum(
                t.decoded + (t.encoder.decoded if t.encoder is not None else 0) for t in ts
            ),
            "frames_out": sum(t.frames for t in ts),
            "dropped": sum(t.dropped for t in ts),
            "refused": self.refused,
        }
