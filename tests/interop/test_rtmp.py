"""RTMP/RTMPS ingest against real peers: ffmpeg, GStreamer rtmp2sink, PyAV (H.265 over
Enhanced RTMP); readers are ffmpeg/ffprobe over RTSP. One server serves the module."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from onvifcam.rtmp import amf0, chunk
from onvifcam.rtmp.chunk import ChunkWriter
from onvifcam.rtmp.client import PublishError, RtmpPublisher
from onvifcam.rtmp.handshake import ClientHandshake
from tests.helpers import (
    FFMPEG,
    GST_LAUNCH,
    ServerProc,
    ffmpeg_push,
    ffmpeg_read,
    ffmpeg_read_async,
    probe,
    rtsp_exchange,
    running,
    wait_online,
)

pytestmark = pytest.mark.interop


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    config = textwrap.dedent(
        f"""
        [server]
        host = "127.0.0.1"
        rtsp_port = 0
        rtmp_port = 0
        rtmps_port = 0
        http_port = 0
        [rtsp]
        rtp_port = 0
        [rtmp]
        tls_cert = "{cert}"
        tls_key = "{key}"
        [limits]
        handshake_timeout = 3.0
        publish_timeout = 3.0
        [onvif]
        enabled = false
        [paths."keyed/cam"]
        publish_key = "s3cret"
        [paths."auth/cam"]
        publish_user = "enc"
        publish_password = "pw"
        [paths."swap/cam"]
        on_conflict = "replace"
        """
    )
    s = ServerProc(config=config).start()
    yield s
    s.stop()


def rtmp_url(srv: ServerProc, path: str, tls: bool = False) -> str:
    if tls:
        return f"rtmps://127.0.0.1:{srv.ports['rtmps_port']}/{path}"
    return f"rtmp://127.0.0.1:{srv.ports['rtmp_port']}/{path}"


def ffmpeg_push_rtmp(
    url: str, *, frames: int = 100, gop: int = 1000, bframes: int = 0, audio: bool = True
) -> subprocess.Popen[str]:
    """ffmpeg pushing a 320x240 25 fps test pattern (H.264 + AAC) as FLV over RTMP(S)."""
    cmd = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "warning", "-re",
           "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"]  # fmt: skip
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p",
            "-preset", "ultrafast", "-bf", str(bframes), "-g", str(gop)]  # fmt: skip
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "64k", "-shortest"]
    cmd += ["-f", "flv", url]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def read_audio_seconds(url: str) -> float:
    """Decode a stream's audio to 48 kHz mono s16 until it stalls; its duration."""
    r = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp",
         "-timeout", "2000000", "-threads", "1", "-i", url, "-map", "0:a", "-ac", "1",
         "-ar", "48000", "-f", "s16le", "pipe:1"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    return len(r.stdout) / 2 / 48000


# --------------------------------------------------------------------------- media


def test_ffmpeg_h264_aac_with_b_frames(srv: ServerProc) -> None:
    url = srv.url("live/cam1")
    with running(ffmpeg_push_rtmp(rtmp_url(srv, "live/cam1"), frames=100, bframes=2)) as pub:
        wait_online(url)
        streams = {s["codec_type"]: s for s in probe(url)}
        video_reader = ffmpeg_read_async(url, io_timeout=2.0)
        audio = read_audio_seconds(url)
        video_reader[1].join(90)
        assert pub.wait(60) == 0, pub.stderr.read() if pub.stderr else ""
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
    assert streams["audio"]["codec_name"] == "aac"
    assert streams["audio"]["sample_rate"] == "48000"
    # One IDR (gop 1000): the GOP cache holds everything, so a late reader decodes it all.
    assert video_reader[2][0].video_frames == 100, video_reader[2][0]
    assert 3.0 <= audio <= 4.5, audio  # 100 frames at 25 fps: about 4 s of audio


def test_gstreamer_rtmp2sink(srv: ServerProc) -> None:
    url = srv.url("live/gst")
    cmd = [
        GST_LAUNCH, "-q", "flvmux", "name=mux", "streamable=true", "!",
        "rtmp2sink", f"location={rtmp_url(srv, 'live/gst')}",
        "videotestsrc", "num-buffers=90", "is-live=true", "!",
        "video/x-raw,format=I420,width=320,height=240,framerate=30/1", "!",
        "x264enc", "tune=zerolatency", "speed-preset=ultrafast", "key-int-max=1000", "!",
        "h264parse", "!", "mux.",
        "audiotestsrc", "is-live=true", "num-buffers=150", "!", "avenc_aac", "!", "aacparse",
        "!", "mux.",
    ]  # fmt: skip
    with running(subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)) as gst:
        wait_online(url)
        # the reader first: the publisher is gone after 3 s, and a loaded machine can spend
        # that on a probe (the GOP cache gives a late reader every frame since the keyframe)
        _p, thread, box = ffmpeg_read_async(url, io_timeout=3.0)
        kinds = {s["codec_type"] for s in probe(url)}
        thread.join(90)
        gst.wait(30)
    assert kinds == {"video", "audio"}
    res = box[0]
    assert res.video_frames == 90, res


def test_librtmp_publisher(srv: ServerProc) -> None:
    # GStreamer's rtmpsink is built on librtmp, the library OBS's RTMP output descends from.
    url = srv.url("live/librtmp")
    cmd = [
        GST_LAUNCH, "-q", "videotestsrc", "num-buffers=100", "is-live=true", "!",
        "video/x-raw,format=I420,width=320,height=240,framerate=25/1", "!",
        "x264enc", "tune=zerolatency", "speed-preset=ultrafast", "key-int-max=1000", "!",
        "h264parse", "!", "flvmux", "streamable=true", "!",
        "rtmpsink", f"location={rtmp_url(srv, 'live/librtmp')} live=1",
    ]  # fmt: skip
    with running(subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)):
        wait_online(url)
        (video,) = probe(url)
    assert (video["codec_name"], video["width"]) == ("h264", 320)


def test_digest_handshake_verified_by_ffmpeg_player(srv: ServerProc) -> None:
    # ffmpeg checks the server's S1/S2 digests when it plays (not when it publishes); the
    # play request itself is refused with a pointer to RTSP.
    r = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-i",
         rtmp_url(srv, "live/nothing"), "-f", "null", "-"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode != 0
    assert "read the stream over RTSP" in r.stderr
    assert "validat" not in r.stderr and "mismatch" not in r.stderr


PYAV_H265 = """
import sys, time
from fractions import Fraction
import av, numpy as np
out = av.open(sys.argv[1], "w", format="flv")
v = out.add_stream("libx265", rate=25)
v.width, v.height, v.pix_fmt = 320, 240, "yuv420p"
v.options = {"x265-params": "keyint=1000:log-level=error", "preset": "ultrafast"}
start = time.monotonic()
for i in range(75):
    arr = np.full((240, 320, 3), (i * 3) % 256, dtype=np.uint8)
    arr[:, (i * 4) % 320] = 255
    f = av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format="yuv420p")
    f.pts, f.time_base = i, Fraction(1, 25)
    for p in v.encode(f):
        out.mux(p)
    time.sleep(max(0.0, start + (i + 1) / 25 - time.monotonic()))
for p in v.encode(None):
    out.mux(p)
out.close()
"""


def test_h265_over_enhanced_rtmp_from_pyav(srv: ServerProc) -> None:
    url = srv.url("live/hevc")
    cmd = [sys.executable, "-c", PYAV_H265, rtmp_url(srv, "live/hevc")]
    with running(subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)) as pub:
        wait_online(url)
        (video,) = probe(url)
        res = ffmpeg_read(url, io_timeout=3.0)
        assert pub.wait(60) == 0, pub.stderr.read() if pub.stderr else ""
    assert (video["codec_name"], video["width"], video["height"]) == ("hevc", 320, 240)
    assert res.video_frames == 75, res


def test_rtmps_with_self_signed_certificate(srv: ServerProc) -> None:
    url = srv.url("live/tls")
    with running(ffmpeg_push_rtmp(rtmp_url(srv, "live/tls", tls=True), frames=50)) as pub:
        wait_online(url)
        res = ffmpeg_read(url, io_timeout=3.0)
        assert pub.wait(60) == 0, pub.stderr.read() if pub.stderr else ""
    assert res.video_frames == 50, res


# --------------------------------------------------------------------------- policies


async def _publish(
    srv: ServerProc, app: str, name: str, tc_url: str = "", digest: bool = False
) -> tuple[RtmpPublisher, dict | PublishError]:
    pub = RtmpPublisher(digest=digest)
    await pub.connect("127.0.0.1", int(srv.ports["rtmp_port"]), app, tc_url=tc_url)
    try:
        return pub, await pub.publish(name)
    except PublishError as exc:
        return pub, exc


def _code(result: dict | PublishError) -> str:
    return result.info["code"] if isinstance(result, PublishError) else result["code"]


def test_second_publisher_gets_bad_name(srv: ServerProc) -> None:
    url = srv.url("live/busy")
    with running(ffmpeg_push_rtmp(rtmp_url(srv, "live/busy"), frames=250)) as first:
        wait_online(url)

        async def second() -> tuple[str, str, bool]:
            pub, res = await _publish(srv, "live", "busy", digest=True)
            await asyncio.wait_for(pub.closed.wait(), 10)  # the server hangs up
            await pub.close()
            assert isinstance(res, PublishError)
            return _code(res), res.info["description"], pub.closed.is_set()

        code, description, closed = asyncio.run(second())
        late = subprocess.run(
            [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
             "testsrc2=size=160x120:rate=25", "-t", "1", "-c:v", "libx264", "-f", "flv",
             rtmp_url(srv, "live/busy")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert first.poll() is None  # the first publisher is untouched
        probe(url)
    assert code == "NetStream.Publish.BadName"
    assert "already has a publisher" in description and closed
    assert late.returncode != 0 and "already has a publisher" in late.stderr


_SDP = "v=0\r\ns=t\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"


def _announce(srv: ServerProc, path: str) -> bytes:
    url = srv.url(path)
    return rtsp_exchange(
        srv.rtsp_port,
        f"ANNOUNCE {url} RTSP/1.0\r\nCSeq: 3\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(_SDP)}\r\n\r\n{_SDP}".encode(),
    )


def test_rtsp_and_rtmp_publishers_share_one_gate(srv: ServerProc) -> None:
    # An RTMP publisher that has not sent media yet already holds its path: an RTSP
    # ANNOUNCE is refused by the gate with 409 and who holds the path.
    async def rtmp_claims_then_rtsp_announces() -> tuple[str, bytes]:
        pub, res = await _publish(srv, "live", "cross0")
        try:
            return _code(res), await asyncio.to_thread(_announce, srv, "live/cross0")
        finally:
            await pub.close()

    code, raw = asyncio.run(rtmp_claims_then_rtsp_announces())
    assert code == "NetStream.Publish.Start"
    assert raw.startswith(b"RTSP/1.0 409 Conflict: path 'live/cross0' already has a publisher\r\n")
    assert "already has a publisher (rtmp://127.0.0.1:" in srv.log()  # who holds it
    # Real encoders: ffmpeg over RTMP holds the path, ffmpeg over RTSP gets the 409 ...
    url = srv.url("live/cross1")
    with running(ffmpeg_push_rtmp(rtmp_url(srv, "live/cross1"), frames=250)) as first:
        wait_online(url)
        second = ffmpeg_push(url, frames=25, audio=False)
        _out, err = second.communicate(timeout=60)
        assert first.poll() is None  # the first publisher is untouched
    reason = "409 Conflict: path 'live/cross1' already has a publisher"
    assert second.returncode != 0 and reason in err, err
    # ... and the reverse: ffmpeg over RTSP holds it, ffmpeg over RTMP is refused.
    url = srv.url("live/cross2")
    with running(ffmpeg_push(url, frames=250, audio=False)) as first:
        wait_online(url)
        late = ffmpeg_push_rtmp(rtmp_url(srv, "live/cross2"), frames=25, audio=False)
        _out, err = late.communicate(timeout=60)
        assert first.poll() is None

    assert late.returncode != 0 and "already has a publisher (rtsp://127.0.0.1" in err, err


def test_url_without_app_publishes_to_the_key(srv: ServerProc) -> None:
    # rtmp://host:1935/stream1, as many encoder guides show it: ffmpeg sends app=stream1
    # and an empty stream name; the stream is read back at rtsp://host:8554/stream1.
    url = srv.url("stream1")
    with running(ffmpeg_push_rtmp(rtmp_url(srv, "stream1"), frames=50, audio=False)) as pub:
        wait_online(url)
        (video,) = probe(url)
        assert pub.wait(60) == 0, pub.stderr.read() if pub.stderr else ""
    assert (video["codec_name"], video["width"]) == ("h264", 320)

    async def nameless() -> str:
        pub, res = await _publish(srv, "", "")
        await pub.close()
        assert isinstance(res, PublishError)
        return res.info["description"]

    assert "use rtmp://HOST/APP/NAME" in asyncio.run(nameless())


def test_stream_key_and_credentials(srv: ServerProc) -> None:
    async def scenario() -> list[str]:
        port = srv.ports["rtmp_port"]
        codes = []
        for app, name, tc in [
            ("keyed", "cam", ""),
            ("keyed", "cam?key=wrong", ""),
            ("keyed", "cam?key=s3cret", ""),
            ("keyed?key=s3cret", "cam", ""),
            ("auth", "cam?user=enc&pass=nope", ""),
            ("auth", "cam?user=enc&pass=pw", ""),
            ("auth", "cam", f"rtmp://enc:pw@127.0.0.1:{port}/auth"),
        ]:
            pub, res = await _publish(srv, app, name, tc)
            codes.append(_code(res))
            await pub.close()
        return codes

    assert asyncio.run(scenario()) == [
        "NetStream.Publish.Denied",
        "NetStream.Publish.Denied",
        "NetStream.Publish.Start",
        "NetStream.Publish.Start",
        "NetStream.Publish.Denied",
        "NetStream.Publish.Start",
        "NetStream.Publish.Start",
    ]
    # A real encoder with the key in the URL, as OBS/ffmpeg users will set it.
    url = srv.url("keyed/cam")
    with running(ffmpeg_push_rtmp(rtmp_url(srv, "keyed/cam?key=s3cret"), frames=50)):
        wait_online(url)
    bad = ffmpeg_push_rtmp(rtmp_url(srv, "keyed/cam?key=nope"), frames=25)
    _out, err = bad.communicate(timeout=60)
    assert bad.returncode != 0 and "wrong or missing stream key" in err


def _flv_tags() -> list[tuple[int, int, bytes]]:
    """A short H.264 FLV from ffmpeg, as (type, ms, body) tags."""
    from onvifcam.rtmp import flv

    r = subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         "testsrc2=size=160x120:rate=25", "-frames:v", "25", "-c:v", "libx264",
         "-g", "1000", "-f", "flv", "pipe:1"],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return [(t.type_id, t.timestamp, t.data) for t in flv.read_file(r.stdout)]


def test_replace_policy_kicks_the_old_publisher(srv: ServerProc) -> None:
    tags = _flv_tags()

    async def scenario() -> tuple[bool, list[str]]:
        video = [(ts, body) for t, ts, body in tags if t == 9]
        a, _res_a = await _publish(srv, "swap", "cam")
        for ts, body in video[:3]:
            a.video(ts, body)
        await a.drain()
        await asyncio.to_thread(wait_online, srv.url("swap/cam"))
        b, res_b = await _publish(srv, "swap", "cam")
        for ts, body in video:
            b.video(ts, body)
        await b.drain()
        await asyncio.wait_for(a.closed.wait(), 10)  # the server hung up on A
        b_alive = isinstance(res_b, dict) and not b.closed.is_set()
        await b.close()
        await a.close()
        return b_alive, [s["code"] for s in a.statuses]

    b_alive, a_statuses = asyncio.run(scenario())
    assert b_alive
    assert a_statuses == ["NetStream.Publish.Start", "NetStream.Unpublish.Success"]


# --------------------------------------------------------------------------- robustness


def _handshaken(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    hs = ClientHandshake()
    s.sendall(hs.start())
    data = b""
    while not hs.done:
        data = s.recv(65536)
        assert data
        c2, _rest = hs.feed(data)
        if hs.done:
            s.sendall(c2)
    return s


def _closed_by_server(s: socket.socket) -> bool:
    s.settimeout(20)
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        pass
    s.close()
    return True


def test_bad_input_closes_only_that_connection(srv: ServerProc) -> None:
    url = srv.url("live/steady")
    port = int(srv.ports["rtmp_port"])
    w = ChunkWriter()
    with running(ffmpeg_push_rtmp(rtmp_url(srv, "live/steady"), frames=375)) as pub:
        wait_online(url)
        # Encrypted RTMPE version byte.
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"\x06" + bytes(1536))
        assert _closed_by_server(s)
        # Truncated handshake, client goes away.
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"\x03" + bytes(500))
        s.close()
        # Truncated handshake, client stays: closed at the handshake timeout.
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"\x03" + bytes(500))
        assert _closed_by_server(s)
        # Chunk type 1 on a chunk stream that never had a header.
        s = _handshaken(port)
        s.sendall(b"\x45" + bytes(20))
        assert _closed_by_server(s)
        # A connect command whose AMF0 is cut short / uses an unknown marker.
        for body in (b"\x02\x00\x07connect\x00\x3f", b"\x02\x00\x07connect\x42"):
            s = _handshaken(port)
            s.sendall(w.message(3, chunk.AMF0_COMMAND, 0, 0, body))
            assert _closed_by_server(s)
        # A command that is not a name.
        s = _handshaken(port)
        s.sendall(w.message(3, chunk.AMF0_COMMAND, 0, 0, amf0.encode(1.0, 2.0)))
        assert _closed_by_server(s)
        # Connected but never publishing: closed at the publish timeout.
        s = _handshaken(port)
        s.sendall(w.message(3, chunk.AMF0_COMMAND, 0, 0, amf0.encode("connect", 1, {})))
        assert _closed_by_server(s)
        assert pub.poll() is None
        res = ffmpeg_read(url, io_timeout=3.0, frames=10)
        assert pub.wait(60) == 0
    assert res.video_frames > 0
    log = srv.log()
    for needle in ("RTMPE", "malformed chunk stream", "bad AMF0 command", "no publish within"):
        assert needle in log, needle


def test_garbage_media_is_counted_not_fatal(srv: ServerProc) -> None:
    async def scenario() -> bool:
        pub, res = await _publish(srv, "live", "garbage")
        assert isinstance(res, dict)
        pub.video(0, b"\x17\x00\x00\x00\x00\x01\x42")  # truncated AVC sequence header
        pub.video(0, b"\x17\x01\x00\x00\x00\x00\x00\x99\x99")  # NAL length overrun
        pub.video(0, b"\x14vp6 frame")
        pub.audio(0, b"\x2fmp3 frame")
        pub.metadata({"width": 320.0, "encoder": "garbage"})
        pub.video(0, b"")
        await pub.drain()
        await asyncio.sleep(0.5)
        alive = not pub.closed.is_set()
        await pub.close()
        return alive

    assert asyncio.run(scenario())
    log = srv.wait_log("video codec VP6 is not supported", timeout=10)
    assert "video codec VP6 is not supported" in log
    assert "audio codec MP3 is not supported" in log
