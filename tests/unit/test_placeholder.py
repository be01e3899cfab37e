"""Offline placeholder: its picture, its parameter sets, and how a Stream treats it (not
online, no listener events, no media timeout, replaced by a real publisher whose SDP-only
parameter sets reach the readers that carry on)."""

from __future__ import annotations

import asyncio
import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np

from onvifcam.media import h264, rtp
from onvifcam.media.packetizer import AacSpec, VideoSpec, describe
from onvifcam.media.stream import RTP, Batch, Stream
from onvifcam.sources.placeholder import (
    PlaceholderSource,
    encode_loop,
    fit_size,
    parameter_sets,
    render,
    silent_aac,
)
from onvifcam.sources.testpattern import H264Encoder


class Collect:
    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.closed: list[str] = []

    def deliver(self, batch: Batch) -> None:
        self.packets += [p for _t, k, p in batch.packets() if k == RTP]

    def stream_closed(self, reason: str) -> None:
        self.closed.append(reason)


class Pub:
    description = "test publisher"

    def __init__(self) -> None:
        self.kicked: list[str] = []

    def kick(self, reason: str) -> None:
        self.kicked.append(reason)


def _sps_pps(nals: list[bytes]) -> list[bytes]:
    return [n for n in nals if n[0] & 0x1F in (h264.NAL_SPS, h264.NAL_PPS)]


def test_picture_and_sizes() -> None:
    a = render(320, 180, ["Lobby", "offline", "rtsp://h:1/lobby"])
    assert a.shape == (270, 320) and (a[:180] == 235).any() and (a[:180] == 0x50).any()
    assert (a[180:] == 128).all()  # grey: no colour
    assert fit_size(0, 0) == (1920, 1080)
    assert fit_size(4000, 3000) == (1920, 1080)
    assert fit_size(641, 33) == (640, 64)


def test_parameter_sets_do_not_depend_on_the_picture() -> None:
    params = parameter_sets(160, 96)
    loop = encode_loop(160, 96, ["cam", "offline"])
    assert [u.keyframe for u in loop] == [True, False, False, False, False]
    assert _sps_pps(loop[0].nals) == params
    assert sum(map(len, loop[1].nals)) * 4 < sum(map(len, loop[0].nals))  # P: small
    dec = av.CodecContext.create("h264", "r")
    frames = [f for u in loop for f in dec.decode(av.Packet(h264.to_annexb(u.nals)))]
    assert len(frames) + len(dec.decode(None)) == 5


def test_a_placeholder_is_not_online_and_never_times_out() -> None:
    async def run() -> None:
        events: list[str] = []
        stream = Stream("cam", on_change=lambda _s, w: events.append(w), media_timeout=1)
        pool = ThreadPoolExecutor(1)
        ph = PlaceholderSource(
            stream, pool, lines=["cam"], width=160, height=96, params=parameter_sets(160, 96)
        )
        ph.publish()
        assert stream.playable and not stream.online and events == []
        stream.tick(time.monotonic() + 100)
        assert stream.publisher is ph  # no media timeout for a placeholder
        await asyncio.sleep(0.3)
        assert ph.frames == 0 and ph.encodes == 0  # nobody reads: nothing encoded or sent
        await ph.stop()
        assert stream.publisher is None and events == []
        pool.shutdown()

    asyncio.run(run())


def test_a_real_publisher_takes_over_and_readers_carry_on() -> None:
    async def run() -> None:
        events: list[str] = []
        stream = Stream("cam", on_change=lambda _s, w: events.append(w))
        pool = ThreadPoolExecutor(1)
        ph = PlaceholderSource(
            stream, pool, lines=["cam"], width=160, height=96, params=parameter_sets(160, 96)
        )
        ph.publish()
        reader = Collect()
        stream.add_reader(reader)
        for _ in range(50):
            await asyncio.sleep(0.1)
            if len(reader.packets) >= 3:
                break
        assert reader.packets, "the placeholder sent nothing to its reader"
        # a real publisher of another size whose parameter sets are only in its SDP
        enc = H264Encoder(320, 240, 25)
        arr = np.full((360, 320), 100, dtype=np.uint8)
        units = [u for i in range(5) for u in enc.encode_array(arr, i == 0)]
        params = _sps_pps(units[0].nals)
        pub = Pub()
        stream.publish(pub, describe([VideoSpec("H264", params, 320, 240)]))  # no conflict
        assert stream.online and stream.publisher is pub and events == ["publish"]
        assert reader in stream.readers and not reader.closed
        before = len(reader.packets)
        seq = itertools.count(1000)
        for i, u in enumerate(units):
            nals = [n for n in u.nals if n not in params]
            payloads = h264.packetize(nals, 1400)
            for j, pl in enumerate(payloads):
                pkt = rtp.build(96, next(seq), 5000 + i * 3600, 77, pl, j == len(payloads) - 1)
                stream.on_rtp(0, pkt)
        stream._flush()
        await ph.stop()  # no longer the publisher: does nothing to the stream
        assert stream.publisher is pub
        pool.shutdown()
        new = [p[rtp.parse(p).payload_start :] for p in reader.packets[before:]]
        assert h264.depacketize(new)[:2] == params  # the SDP's SPS/PPS come first
        hdrs = [rtp.parse(p) for p in reader.packets]
        assert len({h.ssrc for h in hdrs}) == 1
        assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in itertools.pairwise(hdrs))
        dec = av.CodecContext.create("h264", "r")
        payloads = [p[rtp.parse(p).payload_start :] for p in reader.packets]
        frames = []
        annexb = h264.to_annexb(h264.depacketize(payloads))
        for pkt in [*dec.parse(annexb), *dec.parse(None)]:
            frames += dec.decode(pkt)
        frames += dec.decode(None)
        sizes = [(f.width, f.height) for f in frames]
        assert sizes[0] == (160, 96) and sizes[-5:] == [(320, 240)] * 5, (sizes, len(units))

    asyncio.run(run())


def test_with_the_last_publishers_aac_an_av_publisher_is_compatible() -> None:
    async def run() -> None:
        stream = Stream("cam")
        pool = ThreadPoolExecutor(1)
        silence = silent_aac(48000, 2)
        assert len(silence.frame) < 32 and silence.config
        ph = PlaceholderSource(
            stream,
            pool,
            lines=["cam"],
            width=160,
            height=96,
            params=parameter_sets(160, 96),
            audio=silence,
        )
        ph.publish()
        assert [t.codec for t in stream.tracks] == ["H264", "MPEG4-GENERIC"]
        reader = Collect2()
        stream.add_reader(reader)
        for _ in range(50):
            await asyncio.sleep(0.1)
            if len(reader.tracks.get(1, [])) >= 10:
                break
        audio = [rtp.parse(p) for p in reader.tracks[1]]
        assert len(audio) >= 10 and len({h.ssrc for h in audio}) == 1
        # timestamps at 48 kHz, 1024 samples a frame, sample-exact
        ts = [h.timestamp for h in audio]
        assert all((b - a) % 1024 == 0 and b > a for a, b in itertools.pairwise(ts))
        enc = H264Encoder(160, 96, 25)
        units = enc.encode_array(np.full((144, 160), 90, dtype=np.uint8), True)
        pub = Pub()
        specs = [VideoSpec("H264", _sps_pps(units[0].nals)), AacSpec(silence.config, 48000, 2)]
        stream.publish(pub, describe(specs))
        assert reader in stream.readers and reader.closed == []  # compatible: no reconnect
        await ph.stop()
        pool.shutdown()

    asyncio.run(run())


class Collect2(Collect):
    def __init__(self) -> None:
        super().__init__()
        self.tracks: dict[int, list[bytes]] = {}

    def deliver(self, batch: Batch) -> None:
        for t, k, p in batch.packets():
            if k == RTP:
                self.tracks.setdefault(t, []).append(p)
