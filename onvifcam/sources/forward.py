"""Forwarding: push a camera's stream to other servers over RTSP or RTMP/RTMPS.

A :class:`Forwarder` is a reader of the stream (``forward = [{ url = ... }]`` on a camera).
While the stream has a real publisher it connects to the target and sends what the stream
delivers:

- RTSP (``rtsp://``, ``rtsps://``): ANNOUNCE the stream's SDP, RECORD over TCP interleaved,
  then every batch goes out as the RTP/RTCP it already is, framed once per batch (the same
  bytes an RTSP reader gets); no per-packet Python work.
- RTMP (``rtmp://``, ``rtmps://``): connect, releaseStream, FCPublish, createStream,
  publish; then onMetaData, sequence headers and one FLV message per frame, remuxed from
  the access units by :class:`onvifcam.rtmp.publisher.FlvMuxer` (H.264, H.265 as Enhanced
  RTMP ``hvc1``, AAC).
- SRT (``srt://HOST:PORT?streamid=...&passphrase=...&latency=MS``): the access units are
  remuxed to MPEG-TS by :class:`onvifcam.media.tsmux.RtpTsMuxer` and sent in 1316-byte
  payloads by :class:`onvifcam.srt.client.SrtSender` (caller, live mode), each stamped with
  its media time so the receiver's TSBPD plays them out at their pace; unacknowledged data
  counts against ``max_queue_bytes``.

A slow target (more than ``max_queue_bytes`` unsent) drops to the next keyframe, as a slow
RTSP reader does. A failed attempt is retried every ``retry_timeout`` seconds; after
``retry_limit`` failures in a row (0: never) the status becomes ``error`` until
:meth:`Forwarder.enable` is called. When the source stops for ``timeout`` seconds the
forwarder disconnects and waits for it to come back.

Status: ``idle`` (waiting for the source), ``active``, ``retrying``, ``error``, ``disabled``.
Reaching ``error`` is a :class:`onvifcam.events.ForwardError` event on the bus (the
``forward_error`` hook).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl as _ssl
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from onvifcam.aio import cancel_and_wait, within
from onvifcam.events import EventBus
from onvifcam.events import ForwardError as ForwardFailed
from onvifcam.media.sdp import SessionDescription
from onvifcam.media.stream import RTP, Batch, Stream, StreamRegistry
from onvifcam.media.tsmux import RtpTsMuxer
from onvifcam.rtmp import amf0, chunk
from onvifcam.rtmp.client import PublishError, RtmpPublisher
from onvifcam.rtmp.publisher import AUDIO, DATA, FlvMuxer, MuxTrack
from onvifcam.rtsp.message import ParseError
from onvifcam.rtsp.recorder import RecordError, Recording, open_record, redact
from onvifcam.srt.client import SrtError, SrtSender, parse_srt_url

if TYPE_CHECKING:
    from onvifcam.config import ForwardConfig

__all__ = ["SCHEMES", "STATUSES", "ForwardError", "Forwarder"]

log = logging.getLogger(__name__)

STATUSES = ("idle", "active", "retrying", "error", "disabled")
SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt")
_POLL = 0.25  # seconds between looks at the source while waiting or active
_CSID = {AUDIO: 4, DATA: 5}
_CSID_VIDEO = 6
_DEFAULT_PORT = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443}


class ForwardError(Exception):
    """A forward attempt failed for a reason worth showing as the last error."""


def _tls_context(verify: bool) -> _ssl.SSLContext:
    ctx = _ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = _ssl.CERT_NONE
    return ctx


class _Sink:
    """A connected target: a reader of the stream that writes to one transport."""

    def __init__(self, fwd: Forwarder, transport: Any, limit: int) -> None:
        self.fwd = fwd
        self.transport = transport
        self.limit = limit
        self.waiting_key = False
        self.closed = asyncio.Event()
        self.error = ""
        self.format_changed = False

    def fail(self, reason: str) -> None:
        if not self.closed.is_set():
            self.error = reason
            self.closed.set()

    def stream_closed(self, reason: str) -> None:
        """The stream's media changed: reconnect with the new description."""
        self.format_changed = True
        self.fail(reason)

    def _start(self, batch: Batch) -> int | None:
        """Where to start in the batch (None: drop it), applying backpressure."""
        if self.closed.is_set() or self.transport.is_closing():
            return None
        start = 0
        if self.waiting_key:
            if batch.first_key is None:
                self.fwd.dropped += batch.count()
                return None
            start = batch.first_key
        queued = self.transport.get_write_buffer_size()
        if queued > self.limit:
            self.fwd.dropped += batch.count(start)
            if not self.waiting_key:
                self.fwd.behind += 1
                log.info(
                    "forward %s: target is behind (%d bytes queued, max_queue_bytes %d); "
                    "dropping to the next keyframe",
                    self.fwd.name,
                    queued,
                    self.limit,
                )
            self.waiting_key = True
            return None
        self.waiting_key = False
        return start

    async def close(self) -> None:
        """Close the connection."""
        self.transport.close()


class _RtspSink(_Sink):
    """RECORD: batches go out framed with the channels the server agreed to."""

    def __init__(self, fwd: Forwarder, rec: Recording, limit: int) -> None:
        super().__init__(fwd, rec.writer.transport, limit)
        self.rec = rec
        self.key_track = -1
        self._watch = asyncio.create_task(self._read())

    def deliver(self, batch: Batch) -> None:
        """Write the batch as interleaved frames in one go."""
        start = self._start(batch)
        if start is None:
            return
        data = batch.framed(self.rec.channels, start)
        if data:
            self.transport.write(data)
            fwd = self.fwd
            fwd.bytes += len(data)
            key = self.key_track
            fwd.frames += sum(1 for t, k, _p, _key in batch.items[start:] if t == key and k == RTP)

    async def _read(self) -> None:
        try:
            while True:
                data = await self.rec.reader.read(65536)
                if not data:
                    self.fail("the server closed the connection")
                    return
                for ev in self.rec.parser.feed(data):
                    status = getattr(ev, "status", None)
                    if status is not None and status >= 300:
                        self.fail(f"the server answered {status} {ev.reason}")  # type: ignore[union-attr]
                        return
        except (OSError, ParseError) as exc:
            self.fail(f"connection lost: {exc}")

    async def close(self) -> None:
        """TEARDOWN is implied by closing the TCP connection."""
        self._watch.cancel()
        self.rec.writer.close()


class _RtmpSink(_Sink):
    """RTMP publish: access units remuxed to FLV messages."""

    def __init__(self, fwd: Forwarder, pub: RtmpPublisher, muxer: FlvMuxer, limit: int) -> None:
        assert pub.writer is not None
        super().__init__(fwd, pub.writer.transport, limit)
        self.pub = pub
        self.muxer = muxer
        self.t0 = time.monotonic()
        self._watch = asyncio.create_task(self._wait_closed())

    def deliver(self, batch: Batch) -> None:
        """Remux the batch's access units and write their chunks in one go."""
        start = self._start(batch)
        if start is None:
            return
        now_ms = (time.monotonic() - self.t0) * 1000.0
        writer = self.pub.out
        sid = self.pub.stream_id
        push = self.muxer.push
        parts: list[bytes] = []
        frames = self.muxer.stats.video_frames
        for track, kind, packets, _key in batch.items[start:]:
            if kind != RTP:
                continue
            for type_id, ts, body in push(track, packets, now_ms):
                parts.append(
                    writer.message(_CSID.get(type_id, _CSID_VIDEO), type_id, ts, sid, body)
                )
        if parts:
            data = b"".join(parts)
            self.transport.write(data)
            self.pub.sent += len(data)
            self.fwd.bytes += len(data)
            self.fwd.frames += self.muxer.stats.video_frames - frames

    async def _wait_closed(self) -> None:
        await self.pub.closed.wait()
        err = self.pub.error
        self.fail(f"connection lost: {err}" if err else "the server closed the connection")

    async def close(self) -> None:
        """FCUnpublish, deleteStream, close."""
        self._watch.cancel()
        try:
            await within(self.pub.close(), 5)
        except (OSError, TimeoutError):
            pass


class _SrtSink(_Sink):
    """SRT: access units remuxed to MPEG-TS, sent as SRT payloads stamped with media time."""

    def __init__(self, fwd: Forwarder, sender: SrtSender, muxer: RtpTsMuxer, limit: int) -> None:
        super().__init__(fwd, sender, limit)
        self.sender = sender
        self.muxer = muxer
        self.t0 = time.monotonic()
        self.latency_us = sender.target.latency_ms * 1000
        self._anchor: tuple[int, int] | None = None  # (SRT timestamp, 90 kHz DTS)
        self._watch = asyncio.create_task(self._wait_closed())

    def _stamp(self, dts: int, now_us: int) -> int:
        """The SRT timestamp of a payload whose last unit has ``dts``: media time mapped
        onto our clock; re-anchored when it would be late for the receiver or far ahead."""
        anchor = self._anchor
        if anchor is not None:
            ts = anchor[0] + (dts - anchor[1]) * 100 // 9
            if now_us - self.latency_us // 2 <= ts <= now_us + 5_000_000:
                return ts
        self._anchor = (now_us, dts)
        return now_us

    def deliver(self, batch: Batch) -> None:
        """Remux the batch's access units and send their payloads."""
        start = self._start(batch)
        if start is None:
            return
        now = time.monotonic()
        now_ms = (now - self.t0) * 1000.0
        now_us = self.sender.timestamp(now)
        push = self.muxer.push
        send = self.sender.send
        frames = self.muxer.mux.stats.video_units
        sent = self.sender.bytes
        dts = -1
        for track, kind, packets, _key in batch.items[start:]:
            if kind != RTP:
                continue
            for dts, payload in push(track, packets, now_ms):
                send(payload, self._stamp(dts, now_us))
        tail = self.muxer.flush()
        if tail:
            send(tail, self._stamp(dts, now_us) if dts >= 0 else now_us)
        self.fwd.bytes += self.sender.bytes - sent
        self.fwd.frames += self.muxer.mux.stats.video_units - frames

    async def _wait_closed(self) -> None:
        await self.sender.closed.wait()
        self.fail(f"connection lost: {self.sender.error}")

    async def close(self) -> None:
        """SHUTDOWN and close the socket."""
        self._watch.cancel()
        self.sender.close()


class Forwarder:
    """Pushes one stream path to one target URL, reconnecting as configured."""

    def __init__(
        self,
        registry: StreamRegistry,
        path: str,
        cfg: ForwardConfig,
        name: str = "",
        bus: EventBus | None = None,
    ) -> None:
        self.registry = registry
        self.bus = bus
        self.path = registry.normalize(path)
        self.cfg = cfg
        self.url = redact(cfg.url)
        self.name = name or f"{self.path} -> {self.url}"
        parts = urlsplit(cfg.url)
        self.target = f"{parts.hostname}:{parts.port or _DEFAULT_PORT.get(parts.scheme, 0)}"
        self.enabled = not cfg.disabled
        self.status = "idle" if self.enabled else "disabled"
        self.last_error = ""
        self.bytes = 0
        self.frames = 0
        self.connects = 0
        self.reconnects = 0
        self.failures = 0  # failed attempts in a row
        self.attempts = 0
        self.dropped = 0
        self.behind = 0
        self._task: asyncio.Task[None] | None = None
        self._sink: _Sink | None = None

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Start the forwarding task (unless disabled)."""
        if self.enabled and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"forward {self.name}"
            )

    def enable(self) -> None:
        """Turn the forwarder on again; also restarts one in ``error``."""
        self.enabled = True
        if self.status in ("disabled", "error"):
            self.status = "idle"
        self.failures = 0
        self.start()

    def disable(self) -> None:
        """Stop forwarding and keep the entry (status ``disabled``)."""
        self.enabled = False
        self.status = "disabled"
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def stop(self) -> None:
        """Stop for good (server shutdown)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def stats(self) -> dict[str, Any]:
        """Status, last error and counters."""
        return {
            "path": self.path,
            "url": self.url,
            "status": self.status,
            "last_error": self.last_error,
            "bytes": self.bytes,
            "frames": self.frames,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "attempts": self.attempts,
            "failures_in_a_row": self.failures,
            "dropped_packets": self.dropped,
            "behind": self.behind,
        }

    # ------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        cfg = self.cfg
        try:
            while True:
                stream = await self._wait_source()
                self.attempts += 1
                try:
                    sink = await within(self._connect(stream), cfg.connect_timeout)
                except TimeoutError:
                    error = f"no answer within connect_timeout ({cfg.connect_timeout:g} s)"
                except OSError as exc:
                    why = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
                    error = f"cannot reach {self.target}: {why}"
                except (RecordError, PublishError, ForwardError) as exc:
                    error = str(exc) or type(exc).__name__
                except (chunk.ChunkError, amf0.AmfError, ValueError) as exc:
                    error = f"bad reply from the server: {exc}"
                else:
                    error = await self._pump(stream, sink)
                    if error is None:
                        continue  # the source stopped: wait for it again
                    if sink.format_changed:
                        log.info("forward %s: %s; reconnecting", self.name, error)
                        continue
                if not await self._failed(error):
                    return
        except asyncio.CancelledError:
            if self._sink is not None:
                sink, self._sink = self._sink, None
                self._detach(sink)
                await sink.close()
            raise

    async def _failed(self, error: str) -> bool:
        """Count a failure; False when retry_limit is reached (status error)."""
        cfg = self.cfg
        self.failures += 1
        self.last_error = error
        if cfg.retry_limit and self.failures >= cfg.retry_limit:
            self.status = "error"
            log.error(
                "forward %s: %s; giving up after %d attempts in a row (retry_limit); "
                "enable it again through the API or restart",
                self.name,
                error,
                self.failures,
            )
            if self.bus is not None:
                self.bus.publish(ForwardFailed(self.path, self.url, error))
            self._task = None
            return False
        self.status = "retrying"
        log.warning(
            "forward %s: %s; retrying in %g s (retry_timeout)", self.name, error, cfg.retry_timeout
        )
        await asyncio.sleep(cfg.retry_timeout)
        return True

    async def _wait_source(self) -> Stream:
        while True:
            s = self.registry.get(self.path)
            if s is not None and s.online and s.tracks:
                return s
            if self.status != "retrying":
                self.status = "idle"
            await asyncio.sleep(_POLL)

    async def _pump(self, stream: Stream, sink: _Sink) -> str | None:
        """Read the stream into the sink until it fails (its error) or the source has been
        gone for ``timeout`` (None)."""
        if self.connects:
            self.reconnects += 1
        self.connects += 1
        self.failures = 0
        self.status = "active"
        self.last_error = ""
        log.info("forward %s: active", self.name)
        self._sink = sink
        if isinstance(sink, _RtspSink):
            sink.key_track = stream.key_track
        try:
            if not stream.add_reader(sink):
                sink.waiting_key = True
            while True:
                try:
                    await within(sink.closed.wait(), _POLL)
                except TimeoutError:
                    pass
                if sink.closed.is_set():
                    return sink.error
                gone = not stream.online
                if gone and time.monotonic() - stream.unpublished_at >= self.cfg.timeout:
                    log.info(
                        "forward %s: the source stopped %g s ago (timeout); disconnecting",
                        self.name,
                        self.cfg.timeout,
                    )
                    self.status = "idle"
                    return None
        finally:
            self._sink = None
            self._detach(sink, stream)
            await sink.close()

    def _detach(self, sink: _Sink, stream: Stream | None = None) -> None:
        s = stream or self.registry.get(self.path)
        if s is not None:
            s.remove_reader(sink)

    # ------------------------------------------------------------------ connecting
    async def _connect(self, stream: Stream) -> _Sink:
        scheme = urlsplit(self.cfg.url).scheme.lower()
        if scheme in ("rtsp", "rtsps"):
            return await self._connect_rtsp(stream)
        if scheme in ("rtmp", "rtmps"):
            return await self._connect_rtmp(stream)
        if scheme == "srt":
            return await self._connect_srt(stream)
        raise ForwardError(f"unsupported URL scheme {scheme!r}")

    async def _connect_rtsp(self, stream: Stream) -> _Sink:
        sdp = SessionDescription.parse(stream.reader_sdp("127.0.0.1"))
        controls = []
        for md in sdp.media:
            md.attributes = [
                ("sendonly", None) if a[0].lower() == "recvonly" else a for a in md.attributes
            ]
            controls.append(md.control or "")
        ssl = _tls_context(self.cfg.tls_verify) if self.cfg.url.startswith("rtsps") else None
        rec = await open_record(self.cfg.url, sdp.serialize(), controls, ssl=ssl)
        return _RtspSink(self, rec, self.cfg.max_queue_bytes)

    async def _connect_rtmp(self, stream: Stream) -> _Sink:
        tracks = [
            MuxTrack(t.kind, t.codec, t.clock_rate, dict(t.media.fmtp.get(t.payload_type, {})))
            for t in stream.tracks
        ]
        muxer = FlvMuxer(tracks)
        if muxer.video < 0 and muxer.audio < 0:
            codecs = ", ".join(f"{t.kind}/{t.codec}" for t in stream.tracks)
            raise ForwardError(f"RTMP carries H.264, H.265 and AAC here; the stream has {codecs}")
        parts = urlsplit(self.cfg.url)
        host = parts.hostname or ""
        secure = parts.scheme.lower() == "rtmps"
        port = parts.port or (443 if secure else 1935)
        segments = parts.path.lstrip("/").split("/", 1)
        app = unquote(segments[0])
        name = unquote(segments[1]) if len(segments) > 1 else ""
        if parts.query:
            name += "?" + parts.query
        if not host or not app:
            raise ForwardError(
                f"{self.url}: an RTMP URL needs a host and an app (rtmp://HOST/APP/KEY)"
            )
        ssl = _tls_context(self.cfg.tls_verify) if secure else None
        auth = ""
        if parts.username:
            auth = parts.username + (f":{parts.password}" if parts.password else "") + "@"
        tc_url = f"{parts.scheme.lower()}://{auth}{host}:{port}/{segments[0]}"
        pub = RtmpPublisher(chunk_size=4096, timeout=self.cfg.connect_timeout)
        try:
            await pub.connect(host, port, app, tc_url=tc_url, ssl=ssl)
            await pub.publish(name)
        except BaseException:
            await pub.close()
            raise
        info = stream.video_info
        width = getattr(info, "width", 0) or 0
        height = getattr(info, "height", 0) or 0
        fps = getattr(info, "fps", 0.0) or 0.0
        _type, _ts, body = muxer.metadata(width, height, fps)
        pub.data(body)
        return _RtmpSink(self, pub, muxer, self.cfg.max_queue_bytes)

    async def _connect_srt(self, stream: Stream) -> _Sink:
        tracks = [
            MuxTrack(t.kind, t.codec, t.clock_rate, dict(t.media.fmtp.get(t.payload_type, {})))
            for t in stream.tracks
        ]
        try:
            target = parse_srt_url(self.cfg.url)
            muxer = RtpTsMuxer(tracks)
        except ValueError as exc:
            raise ForwardError(str(exc)) from None
        # above max_queue_bytes unacknowledged the sink drops to a keyframe; twice that is
        # the hard bound of the retransmission buffer
        sender = SrtSender(
            target, timeout=self.cfg.connect_timeout, max_buffer_bytes=2 * self.cfg.max_queue_bytes
        )
        try:
            await sender.connect()
        except SrtError as exc:
            sender.close()
            raise ForwardError(str(exc)) from None
        except BaseException:
            sender.close()
            raise
        return _SrtSink(self, sender, muxer, self.cfg.max_queue_bytes)
