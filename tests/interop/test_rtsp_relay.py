"""The RTSP relay against real peers: ffmpeg, GStreamer and aiortsp push and read."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from onvifcam.config import Config, RtspConfig
from onvifcam.limits import ConnectionLimiter
from onvifcam.media.sdp import SessionDescription
from onvifcam.media.stream import StreamRegistry
from onvifcam.rtsp.server import MAX_SESSIONS_PER_CONNECTION, RtspServer
from tests.helpers import (
    FFMPEG,
    GST_LAUNCH,
    LiveReader,
    ReadResult,
    ServerProc,
    ffmpeg_push,
    ffmpeg_read,
    ffmpeg_read_async,
    gst_read,
    probe,
    rtsp_exchange,
    running,
    status_of,
    stop_process,
    wait_online,
)
from tests.netns import can_make_netns, lan

pytestmark = pytest.mark.interop


def _read_all(server: ServerProc, path: str, transports: list[str], frames: int) -> None:
    """Push `frames` frames over TCP and read them with one ffmpeg reader per transport."""
    url = server.url(path)
    with running(ffmpeg_push(url, frames=frames)) as pub:
        wait_online(url)
        readers = [ffmpeg_read_async(url, transport=t) for t in transports]
        for _p, thread, _box in readers:
            thread.join(90)
        assert pub.wait(60) == 0, pub.stderr.read() if pub.stderr else ""
    for t, (_p, _thread, box) in zip(transports, readers, strict=True):
        res = box[0]
        # A big GOP (keyint 1000) means the GOP cache holds everything since the first IDR,
        # so every reader decodes exactly what was pushed, however late it joined.
        assert res.video_frames == frames, (t, res)


def test_push_tcp_read_tcp_udp_http_tunnel(server: ServerProc) -> None:
    _read_all(server, "relay/tcp", ["tcp", "udp", "http"], frames=100)


def test_push_udp_read_tcp(server: ServerProc) -> None:
    url = server.url("relay/udp")
    with running(ffmpeg_push(url, frames=75, transport="udp")) as pub:
        wait_online(url)
        res = ffmpeg_read(url, transport="tcp")
        assert pub.wait(60) == 0
    assert res.video_frames == 75, res


def test_describe_reports_codecs_and_size(server: ServerProc) -> None:
    url = server.url("relay/probe")
    with running(ffmpeg_push(url, frames=125, size="640x360")):
        wait_online(url)
        streams = probe(url)
    kinds = {s["codec_type"]: s for s in streams}
    assert kinds["video"]["codec_name"] == "h264"
    assert (kinds["video"]["width"], kinds["video"]["height"]) == (640, 360)
    assert kinds["audio"]["codec_name"] == "aac"
    assert kinds["audio"]["sample_rate"] == "48000"


def test_gstreamer_push_ffmpeg_read(server: ServerProc) -> None:
    """GStreamer's rtspclientsink publishes, ffmpeg reads. The publisher outlives the
    reader (num-buffers is only a backstop of 100 s): it is stopped once the reader decoded
    90 frames, so a slow reader start can never find the stream already gone."""
    url = server.url("relay/gst")
    cmd = [
        GST_LAUNCH, "-q", "videotestsrc", "num-buffers=3000", "is-live=true", "!",
        "video/x-raw,format=I420,width=320,height=240,framerate=30/1", "!",
        "x264enc", "tune=zerolatency", "speed-preset=ultrafast", "key-int-max=1000", "!",
        "video/x-h264,profile=baseline", "!", "rtspclientsink", f"location={url}",
        "protocols=tcp",
    ]  # fmt: skip
    with running(subprocess.Popen(cmd, stderr=subprocess.DEVNULL, text=True)) as gst:
        wait_online(url)
        # key-int-max=1000: one IDR, so the GOP cache gives the reader every frame since
        # the first, however late it joins
        res = LiveReader(url, io_timeout=3.0).stop_at(90)
        assert gst.poll() is None, "the publisher left before the reader was done"
    assert res.video_frames >= 90, res
    assert "error while decoding" not in res.stderr and "non-existing PPS" not in res.stderr, res


def test_ffmpeg_push_gstreamer_read(server: ServerProc) -> None:
    url = server.url("relay/gstread")
    # A reader joins at the last keyframe (gop 25): the publisher must outlast a slow start.
    # It is stopped as soon as the reader is done, so a long one costs no time.
    with running(ffmpeg_push(url, frames=750, gop=25)):
        wait_online(url)
        res = gst_read(url, frames=40)
    # Not the exit code: gst-launch's rtspsrc can fail its own PAUSE while it stops (see
    # GST_STOP_RACE), and it ends with EOS, exit code 0, when the server hangs up early.
    assert res.eos and res.frames == 40 and not res.errors, (res.errors, res.output[-3000:])


def test_aiortsp_reads_continuous_rtp_across_publisher_restart(server: ServerProc) -> None:
    from aiortsp.rtsp.reader import RTSPReader

    url = server.url("relay/restart")
    packets: list[tuple[int, int, int]] = []

    async def read() -> None:
        async with RTSPReader(url.replace("rtsp://", "rtspt://"), timeout=5) as reader:
            async for pkt in reader.iter_packets():
                packets.append((pkt.seq, pkt.ts, pkt.ssrc))

    async def scenario() -> None:
        first = ffmpeg_push(url, frames=50, audio=False)
        await asyncio.to_thread(wait_online, url)
        task = asyncio.create_task(read())
        await asyncio.to_thread(first.wait, 30)
        count_first = len(packets)
        second = ffmpeg_push(url, frames=50, audio=False)
        await asyncio.to_thread(second.wait, 30)
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert count_first > 0
        assert len(packets) > count_first, "no packets after the publisher came back"

    asyncio.run(scenario())
    assert len({ssrc for _s, _t, ssrc in packets}) == 1, "SSRC changed"
    for (s1, t1, _), (s2, t2, _) in itertools.pairwise(packets):
        assert (s2 - s1) & 0xFFFF == 1, f"sequence jumped {s1} -> {s2}"
        assert (t2 - t1) & 0xFFFFFFFF < 90000 * 10, f"timestamp jumped back {t1} -> {t2}"


def test_reader_keeps_decoding_across_publisher_restart(server: ServerProc) -> None:
    url = server.url("relay/restart2")
    first = ffmpeg_push(url, frames=50)
    with running(first):
        wait_online(url)
        _p, thread, box = ffmpeg_read_async(url, io_timeout=5.0)
        assert first.wait(30) == 0
    with running(ffmpeg_push(url, frames=50)) as second:
        assert second.wait(30) == 0
    thread.join(60)
    res = box[0]
    assert res.video_frames == 100, res


def test_second_publisher_rejected_first_untouched(server: ServerProc) -> None:
    url = server.url("relay/busy")
    with running(ffmpeg_push(url, frames=100)) as first:
        wait_online(url)
        _p, thread, box = ffmpeg_read_async(url)
        second = ffmpeg_push(url, frames=50)
        assert second.wait(30) != 0
        err = second.stderr.read() if second.stderr else ""
        assert "409" in err, err
        assert first.wait(60) == 0
        thread.join(60)
    assert box[0].video_frames == 100, box[0]


def test_describe_unknown_path_is_404(server: ServerProc) -> None:
    reply = rtsp_exchange(
        server.rtsp_port,
        b"DESCRIBE rtsp://127.0.0.1/nobody/here RTSP/1.0\r\nCSeq: 7\r\n\r\n",
    )
    assert status_of(reply) == 404
    assert b"CSeq: 7" in reply


def test_unsupported_transport_gets_461(server: ServerProc) -> None:
    url = server.url("relay/461")
    with running(ffmpeg_push(url, frames=250, realtime=True)):
        wait_online(url)
        reply = rtsp_exchange(
            server.rtsp_port,
            f"SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 2\r\n"
            "Transport: RTP/SAVP/UDP;unicast;destination=127.0.0.1\r\n\r\n".encode(),
        )
    assert status_of(reply) == 461, reply


def test_garbage_and_half_open_connections_do_not_disturb_a_live_stream(
    server: ServerProc,
) -> None:
    url = server.url("relay/garbage")
    port = server.rtsp_port
    with running(ffmpeg_push(url, frames=100)) as pub:
        wait_online(url)
        _p, thread, box = ffmpeg_read_async(url)
        replies = [
            rtsp_exchange(port, b"\x16\x03\x01\x02\x00garbage-tls-hello\r\n\r\n"),
            rtsp_exchange(port, b"PLAY rtsp://x/ RTSP/9.9\r\nCSeq: 1\r\n\r\n"),
            rtsp_exchange(port, b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n" + b"X: y\r\n" * 200 + b"\r\n"),
            rtsp_exchange(
                port,
                b"ANNOUNCE rtsp://127.0.0.1/relay/garbage2 RTSP/1.0\r\nCSeq: 1\r\n"
                b"Content-Type: application/sdp\r\nContent-Length: 19\r\n\r\n"
                b"v=0\r\nm=garbage!!!\r\n",
            ),
        ]
        assert [status_of(r) for r in replies] == [400, 505, 431, 400]
        half_open = []
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"OPTIONS rtsp://127.0.0.1/ RTSP/1.0\r\nCSeq: 1\r\n")  # never finished
            half_open.append(s)
        # interleaved data before any session, and a frame header announcing more than it sends
        raw = socket.create_connection(("127.0.0.1", port))
        raw.sendall(b"$\x00\x05\x00abc")
        half_open.append(raw)
        assert pub.wait(60) == 0
        thread.join(60)
        for s in half_open:
            s.close()
    assert box[0].video_frames == 100, box[0]


# --------------------------------------------------------------------------- strict server
# Every port 0: a fixed default (rtmp 1935, http 8080) collides with other test runs.
STRICT_CONFIG = """
[server]
host = "127.0.0.1"
rtsp_port = 0
rtmp_port = 0
rtmps_port = 0
http_port = 0
[rtsp]
rtp_port = 0
[limits]
publish_timeout = 1.0
idle_timeout = 2.0
media_timeout = 2.0
reader_queue_bytes = 32768
[paths."secure"]
publish_user = "pub"
publish_password = "pubpass"
read_user = "viewer"
read_password = "viewpass"
[paths."closed"]
publish = false
"""


@pytest.fixture(scope="module")
def strict() -> Iterator[ServerProc]:
    srv = ServerProc(config=STRICT_CONFIG).start()
    yield srv
    srv.stop()


def test_auth_publish_and_read(strict: ServerProc) -> None:
    plain = strict.url("secure")
    bad = ffmpeg_push(strict.url("secure", user="pub:wrong"), frames=25)
    assert bad.wait(30) != 0
    assert "401" in (bad.stderr.read() if bad.stderr else "")
    with running(ffmpeg_push(strict.url("secure", user="pub:pubpass"), frames=150)):
        wait_online(strict.url("secure", user="viewer:viewpass"))
        denied = ffmpeg_read(plain, io_timeout=2.0)
        assert denied.returncode != 0 and "401" in denied.stderr, denied
        wrong = ffmpeg_read(strict.url("secure", user="viewer:nope"), io_timeout=2.0)
        assert wrong.returncode != 0, wrong
        challenge = rtsp_exchange(
            strict.rtsp_port, f"DESCRIBE {plain} RTSP/1.0\r\nCSeq: 3\r\n\r\n".encode()
        )
        assert status_of(challenge) == 401
        assert b'WWW-Authenticate: Digest realm="onvifcam"' in challenge
        ok = ffmpeg_read(strict.url("secure", user="viewer:viewpass"), io_timeout=3.0, frames=10)
    assert ok.video_frames > 0, ok


def test_publish_to_forbidden_path_is_403(strict: ServerProc) -> None:
    p = ffmpeg_push(strict.url("closed"), frames=25)
    assert p.wait(30) != 0
    assert "403" in (p.stderr.read() if p.stderr else "")


def test_announce_without_record_is_closed(strict: ServerProc) -> None:
    sdp = (
        b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\n"
        b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n"
    )
    with socket.create_connection(("127.0.0.1", strict.rtsp_port), timeout=10) as s:
        s.sendall(
            b"ANNOUNCE rtsp://127.0.0.1/stalled RTSP/1.0\r\nCSeq: 1\r\n"
            b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(sdp) + sdp
        )
        assert status_of(s.recv(4096)) == 200
        # publish_timeout = 1 s: the server closes the connection (recv returns b"")
        assert s.recv(4096) == b""


def test_idle_connection_is_closed(strict: ServerProc) -> None:
    with socket.create_connection(("127.0.0.1", strict.rtsp_port), timeout=10) as s:
        assert s.recv(4096) == b""


def test_silent_publisher_dropped_reader_stays(strict: ServerProc) -> None:
    url = strict.url("quiet")
    # SIGSTOP keeps the publisher's TCP connection open while it sends nothing.
    with running(ffmpeg_push(url, frames=1000)) as pub:
        wait_online(url)
        reader = LiveReader(url, io_timeout=8.0)
        time.sleep(1.0)
        pub.send_signal(19)  # SIGSTOP
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "left (no media" not in strict.log():
            time.sleep(0.2)
        assert "left (no media for 2 s)" in strict.log()
        pub.send_signal(18)  # SIGCONT
    with running(ffmpeg_push(url, frames=50)) as again:
        assert again.wait(30) == 0
    # Once it has them, the reader need not wait for the stall to end.
    res = reader.stop_at(50 + 25)
    # the reader was not closed with the publisher: it also got the second publisher's frames
    assert res.video_frames >= 50 + 25, res


def test_slow_reader_drops_without_hurting_others(strict: ServerProc) -> None:
    url = strict.url("slowpoke")
    cbr = ["-b:v", "8M", "-maxrate", "8M", "-bufsize", "1M", "-x264-params", "nal-hrd=cbr"]
    with running(ffmpeg_push(url, frames=150, size="640x360", extra=cbr)) as pub:
        wait_online(url)
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", strict.rtsp_port))
        stuck.sendall(
            f"SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\n"
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n".encode()
        )
        reply = stuck.recv(4096).decode()
        session = reply.split("Session: ")[1].split(";")[0]
        stuck.sendall(f"PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n".encode())
        _p, thread, box = ffmpeg_read_async(url)
        assert pub.wait(60) == 0
        thread.join(60)
        stuck.close()
    assert box[0].video_frames == 150, box[0]
    assert "is behind" in strict.log()


@pytest.mark.netns
@pytest.mark.skipif(not can_make_netns(), reason="needs root and iproute2 for namespaces")
def test_multicast_reader_on_another_host() -> None:
    with lan("mc") as net:
        srv = ServerProc(
            config='[server]\nhost = "0.0.0.0"\nrtsp_port = 0\n[rtsp]\nrtp_port = 0\n',
            netns=net.server,
        ).start()
        try:
            local = srv.url("mc/cam")
            with running(ffmpeg_push(local, frames=75, netns=net.server)) as pub:
                wait_online(local, netns=net.server)
                remote = srv.url("mc/cam", host=net.server_ip)
                res = ffmpeg_read(remote, transport="udp_multicast", netns=net.client)
                assert pub.wait(60) == 0
        finally:
            srv.stop()
    assert res.video_frames == 75, res


def _interleaved_frames(
    sock: socket.socket,
    seconds: float,
    until: Callable[[list[tuple[int, bytes]]], bool] | None = None,
) -> list[tuple[int, bytes]]:
    """Read RTSP interleaved frames from a playing socket for a while, or until the
    (channel, data) frames read so far satisfy ``until``."""
    sock.settimeout(0.5)
    buf = b""
    frames: list[tuple[int, bytes]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 4 and buf[0:1] == b"$":
            n = int.from_bytes(buf[2:4], "big")
            if len(buf) < 4 + n:
                break
            frames.append((buf[1], buf[4 : 4 + n]))
            buf = buf[4 + n :]
            if until is not None and until(frames):
                return frames
    return frames


def _play_tcp(port: int, url: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(
        f"SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\n"
        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n".encode()
    )
    reply = s.recv(4096).decode()
    assert status_of(reply.encode()) == 200, reply
    session = reply.split("Session: ")[1].split(";")[0].strip()
    s.sendall(f"PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert status_of(head) == 200 and b"RTP-Info: url=" in head, head
    return s


def _sender_report_after_rtp(frames: list[tuple[int, bytes]]) -> bool:
    """The last frame is an RTCP sender report and RTP came before it."""
    from onvifcam.media import rtcp

    channel, data = frames[-1]
    if channel != 1 or not any(isinstance(p, rtcp.SenderReport) for p in rtcp.parse_compound(data)):
        return False
    return any(ch == 0 for ch, _d in frames)


def test_rtcp_sender_reports_reach_readers(server: ServerProc) -> None:
    from onvifcam.media import rtcp

    url = server.url("relay/sr")
    with running(ffmpeg_push(url, frames=250, audio=False)):
        wait_online(url)
        sock = _play_tcp(server.rtsp_port, url)
        # a report comes within 5 s: no need to read the whole 7 s
        frames = _interleaved_frames(sock, 7.0, until=_sender_report_after_rtp)
        sock.close()
    rtp_ssrcs = {int.from_bytes(d[8:12], "big") for ch, d in frames if ch == 0}
    reports = [
        p for ch, d in frames if ch == 1 for p in rtcp.parse_compound(d)
        if isinstance(p, rtcp.SenderReport)
    ]  # fmt: skip
    assert len(rtp_ssrcs) == 1
    assert reports, "no RTCP sender report within 7 s"
    assert {r.ssrc for r in reports} == rtp_ssrcs
    last_ts = int.from_bytes([d for ch, d in frames if ch == 0][-1][4:8], "big")
    assert abs(((reports[-1].rtp_timestamp - last_ts + 2**31) % 2**32) - 2**31) < 90000 * 8


def test_second_publisher_gets_409_conflict_with_the_reason(server: ServerProc) -> None:
    # The reason phrase carries why: ffmpeg prints it as "method ANNOUNCE failed: ...",
    # GStreamer's rtspclientsink as "Got error response: 409 (...)".
    url = server.url("relay/busy")
    with running(ffmpeg_push(url, frames=250)) as first:
        wait_online(url)
        second = subprocess.run(
            [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
             "testsrc2=size=160x120:rate=25", "-t", "1", "-c:v", "libx264", "-f", "rtsp",
             "-rtsp_transport", "tcp", url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        gst = subprocess.run(
            [GST_LAUNCH, "-q", "videotestsrc", "num-buffers=25", "is-live=true", "!",
             "video/x-raw,format=I420,width=160,height=120", "!", "x264enc",
             "tune=zerolatency", "!", "rtspclientsink", f"location={url}", "protocols=tcp"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        raw = rtsp_exchange(
            server.rtsp_port,
            f"ANNOUNCE {url} RTSP/1.0\r\nCSeq: 7\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(_SDP)}\r\n\r\n{_SDP}".encode(),
        )
        assert first.poll() is None  # the first publisher is untouched
    reason = "409 Conflict: path 'relay/busy' already has a publisher"
    assert second.returncode != 0 and f"method ANNOUNCE failed: {reason}" in second.stderr
    assert gst.returncode != 0 and "Got error response: 409 (Conflict: path 'relay/busy'" in (
        gst.stdout + gst.stderr
    )
    assert raw.startswith(f"RTSP/1.0 {reason}\r\nCSeq: 7\r\n".encode()), raw


_SDP = "v=0\r\ns=t\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"


# ---------------------------------------------------------------- in-process server state


async def _in_process_server() -> RtspServer:
    cfg = dataclasses.replace(Config(), rtsp=RtspConfig(udp=False))
    registry = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15.0, max_streams=8)
    rtsp = RtspServer(cfg, registry, ConnectionLimiter(64, 0.0, 64))
    await rtsp.start("127.0.0.1", 0)

    class _Pub:
        description = "test publisher"

        def kick(self, reason: str) -> None:
            pass

    sdp = "v=0\r\ns=t\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    registry.get_or_create("cam").publish(_Pub(), SessionDescription.parse(sdp))
    return rtsp


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: str) -> bytes:
    writer.write(request.encode())
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def test_multicast_group_of_a_session_that_never_plays_is_freed() -> None:
    async def run() -> None:
        rtsp = await _in_process_server()
        try:
            url = f"rtsp://127.0.0.1:{rtsp.port}/cam/trackID=0"
            reader, writer = await asyncio.open_connection("127.0.0.1", rtsp.port)
            reply = await _ask(
                reader,
                writer,
                f"SETUP {url} RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP;multicast\r\n\r\n",
            )
            assert status_of(reply) == 200
            assert list(rtsp.multicast) == ["cam"]
            writer.close()
            await _until(lambda: not rtsp.sessions)
            assert rtsp.multicast == {}
        finally:
            await rtsp.stop()

    asyncio.run(run())


def test_tunnel_post_half_closes_with_its_get_half() -> None:
    async def run() -> None:
        rtsp = await _in_process_server()
        try:
            get_r, get_w = await asyncio.open_connection("127.0.0.1", rtsp.port)
            head = await _ask(get_r, get_w, "GET /cam HTTP/1.0\r\nx-sessioncookie: c1\r\n\r\n")
            assert status_of(head) == 200
            post_r, post_w = await asyncio.open_connection("127.0.0.1", rtsp.port)
            post_w.write(b"POST /cam HTTP/1.0\r\nx-sessioncookie: c1\r\n\r\n")
            options = base64.b64encode(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
            post_w.write(options)
            assert status_of(await asyncio.wait_for(get_r.readuntil(b"\r\n\r\n"), 5)) == 200
            get_w.close()
            assert await asyncio.wait_for(post_r.read(), 5) == b""  # closed by the server
            await _until(lambda: not rtsp.connections)
        finally:
            await rtsp.stop()

    asyncio.run(run())


def test_sessions_per_connection_are_capped() -> None:
    async def run() -> None:
        rtsp = await _in_process_server()
        try:
            url = f"rtsp://127.0.0.1:{rtsp.port}/cam/trackID=0"
            reader, writer = await asyncio.open_connection("127.0.0.1", rtsp.port)
            setup = (
                "SETUP {url} RTSP/1.0\r\nCSeq: {n}\r\n"
                "Transport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n"
            )
            for n in range(MAX_SESSIONS_PER_CONNECTION):
                assert status_of(await _ask(reader, writer, setup.format(url=url, n=n))) == 200
            assert status_of(await _ask(reader, writer, setup.format(url=url, n=99))) == 453
            assert len(rtsp.sessions) == MAX_SESSIONS_PER_CONNECTION
            writer.close()
            await _until(lambda: not rtsp.sessions)
        finally:
            await rtsp.stop()

    asyncio.run(run())


def test_error_reason_phrases_carry_the_detail_safely() -> None:
    # The detail goes into the status line: control characters from a percent-decoded
    # path must not break it (nor turn the answer into a 500).
    async def run() -> list[bytes]:
        rtsp = await _in_process_server()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", rtsp.port)
            base = f"rtsp://127.0.0.1:{rtsp.port}"
            heads = [
                await _ask(reader, writer, f"DESCRIBE {base}/a%0d%0ab RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
                await _ask(reader, writer, f"PLAY {base}/cam RTSP/1.0\r\nCSeq: 2\r\n\r\n"),
            ]
            writer.close()
            return heads
        finally:
            await rtsp.stop()

    missing, no_session = asyncio.run(run())
    assert missing.startswith(
        b"RTSP/1.0 404 Not Found: no stream is published at 'a??b'\r\nCSeq: 1\r\n"
    ), missing
    assert no_session.startswith(
        b"RTSP/1.0 454 Session Not Found: request without a Session header\r\n"
    ), no_session


def test_describe_waits_for_a_source_started_on_demand() -> None:
    # A demand hook starts an ffmpeg push when a reader asks for a path nobody publishes:
    # the reader's DESCRIBE is answered once the push is RECORDing, and it reads frames.
    async def run() -> tuple[ReadResult, list[subprocess.Popen[str]], dict]:
        cfg = dataclasses.replace(Config(), rtsp=RtspConfig(udp=False, on_demand_timeout=20))
        registry = StreamRegistry(gop_cache_bytes=1 << 22, media_timeout=15.0, max_streams=8)
        rtsp = RtspServer(cfg, registry, ConnectionLimiter(64, 0.0, 64))
        await rtsp.start("127.0.0.1", 0)
        pushes: list[subprocess.Popen[str]] = []

        def hook(path: str) -> bool:
            if path != "ondemand/cam":
                return False
            if not pushes:
                url = f"rtsp://127.0.0.1:{rtsp.port}/{path}"
                pushes.append(ffmpeg_push(url, frames=1500, audio=False))
            return True

        registry.add_demand_hook(hook)
        try:
            url = f"rtsp://127.0.0.1:{rtsp.port}/ondemand/cam"
            res = await asyncio.to_thread(ffmpeg_read, url, io_timeout=25.0, frames=25)
            return res, pushes, rtsp.stats()
        finally:
            for p in pushes:
                await asyncio.to_thread(stop_process, p)
            await rtsp.stop()

    res, pushes, stats = asyncio.run(run())
    assert len(pushes) == 1
    assert res.video_frames == 25, res
    assert stats["deferred"]["deferred"] == 1 and stats["deferred"]["resumed"] == 1
