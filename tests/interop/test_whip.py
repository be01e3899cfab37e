"""WHIP ingest against real peers: an aiortc publisher (in this process, on loopback), a
headless Chromium on the publish page (in a private network namespace), ffmpeg publishing
over RTSP for conflicts; readers are ffprobe/ffmpeg over RTSP."""

from __future__ import annotations

import asyncio
import fractions
import http.client
import json
import re
import shutil
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from tests.helpers import (
    FFMPEG,
    FFPROBE,
    ServerProc,
    ffmpeg_push,
    probe,
    running,
    stop_process,
    wait_online,
)
from tests.netns import can_make_netns, lan

pytestmark = pytest.mark.interop


T = TypeVar("T")
CHROMIUM = "/usr/bin/chromium"


# --------------------------------------------------------------------------- helpers


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One HTTP request on its own connection: (status, headers, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def offline(url: str, timeout: float = 10.0) -> bool:
    """Wait until DESCRIBE on ``url`` answers 404 (nobody publishes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(
            [FFPROBE, "-v", "error", "-rtsp_transport", "tcp", "-timeout", "2000000", url],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if "404" in r.stderr:
            return True
        time.sleep(0.2)
    return False


def decode_frames(url: str, frames: int = 30, netns: str = "") -> tuple[int, str]:
    """Decode ``frames`` video frames from ``url`` with ffmpeg: (frames decoded, stderr)."""
    cmd = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp",
           "-timeout", "5000000", "-i", url, "-map", "0:v", "-frames:v", str(frames),
           "-f", "null", "-", "-progress", "pipe:1"]  # fmt: skip
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    done = [int(x) for x in re.findall(r"^frame=(\d+)$", r.stdout, re.M)]
    return (done[-1] if done else 0), r.stderr


class Loop:
    """An asyncio loop in a thread for the aiortc publishers, so the test's blocking calls
    (ffprobe, ffmpeg, HTTP) never stall their media."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _pattern_track() -> Any:
    from aiortc import VideoStreamTrack
    from av import VideoFrame

    class Pattern(VideoStreamTrack):
        """A moving white box on a colour that changes: real pictures for the encoder."""

        async def recv(self) -> VideoFrame:
            pts, time_base = await self.next_timestamp()
            n = pts // 3000
            img = np.zeros((240, 320, 3), np.uint8)
            img[:, :, 1] = (n * 4) % 255
            img[100:140, (n * 5) % 280 : (n * 5) % 280 + 40] = 255
            frame = VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = pts
            frame.time_base = fractions.Fraction(time_base)
            return frame

    return Pattern()


class AiortcPublisher:
    """A WHIP client made of aiortc: H.264 (forced) from a generated picture, Opus."""

    def __init__(self, loop: Loop, port: int) -> None:
        self.loop = loop
        self.port = port
        self.pc: Any = None
        self.location = ""
        self.token = ""

    async def _offer(self, audio: bool, strip_candidates: bool) -> str:
        from aiortc import AudioStreamTrack, RTCConfiguration, RTCPeerConnection
        from aiortc.rtcrtpsender import RTCRtpSender

        from onvifcam.whip.peer import restrict_gathering

        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        video = self.pc.addTransceiver(_pattern_track(), direction="sendonly")
        h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name == "H264"]
        video.setCodecPreferences(h264)
        if audio:
            self.pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        restrict_gathering(self.pc, ["127.0.0.1"])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = str(self.pc.localDescription.sdp)
        if strip_candidates:  # like OBS: no candidates, the server learns ours from checks
            sdp = re.sub(r"a=(candidate|end-of-candidates)[^\r\n]*\r?\n", "", sdp)
        return sdp

    def offer(self, *, audio: bool = True, strip_candidates: bool = False) -> str:
        return self.loop.run(self._offer(audio, strip_candidates))

    async def _answer(self, sdp: str) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def publish(
        self, path: str, *, token: str = "", audio: bool = True, strip_candidates: bool = False
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """POST the offer; on 201 apply the answer. The response."""
        offer = self.offer(audio=audio, strip_candidates=strip_candidates)
        headers = {"Content-Type": "application/sdp"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
            self.token = token
        status, hdrs, body = request(self.port, "POST", f"/whip/{path}", offer.encode(), headers)
        if status == 201:
            self.location = hdrs["Location"]
            self.loop.run(self._answer(body.decode()))
        return status, hdrs, body

    def delete(self) -> int:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        status, _h, _b = request(self.port, "DELETE", self.location, headers=headers)
        return status

    def close(self) -> None:
        if self.pc is not None:
            self.loop.run(self.pc.close())
            self.pc = None


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    config = textwrap.dedent(
        """
        [server]
        host = "127.0.0.1"
        rtsp_port = 0
        rtmp_port = 0
        rtmps_port = 0
        http_port = 0
        [rtsp]
        rtp_port = 0
        [discovery]
        enabled = false
        [whip]
        ice_servers = ["stun:stun.invalid:3478"]
        [paths."keyed/cam"]
        publish_key = "s3cret"
        [paths."auth/cam"]
        publish_user = "enc"
        publish_password = "pw"
        [paths."closed/cam"]
        publish = false
        """
    )
    s = ServerProc(config=config).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture
def publisher(srv: ServerProc, loop: Loop) -> Iterator[AiortcPublisher]:
    pub = AiortcPublisher(loop, int(srv.ports["http_port"]))
    yield pub
    pub.close()


def http_port(srv: ServerProc) -> int:
    return int(srv.ports["http_port"])


# --------------------------------------------------------------------------- aiortc


def test_aiortc_h264_and_opus_reach_rtsp_readers_then_delete(
    srv: ServerProc, publisher: AiortcPublisher
) -> None:
    status, headers, body = publisher.publish("cam1")
    assert status == 201, body
    assert headers["Content-Type"] == "application/sdp"
    assert re.fullmatch(r"/whip/cam1/[A-Za-z0-9_-]{20,}", headers["Location"])
    assert headers["Link"] == '<stun:stun.invalid:3478>; rel="ice-server"'
    assert b"a=candidate:" in body and b"127.0.0.1" in body
    url = srv.url("cam1")
    wait_online(url)
    streams = {s["codec_type"]: s for s in probe(url)}
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
    assert streams["audio"]["codec_name"] == "opus"
    frames, err = decode_frames(url, 30)
    assert frames == 30, err
    assert publisher.delete() == 200
    assert offline(url), "the stream stayed online after DELETE"
    assert publisher.delete() == 404  # the session is gone
    log = srv.log()
    assert "the publisher ended the session (DELETE)" in log


def test_offer_without_candidates_and_a_bearer_stream_key(
    srv: ServerProc, publisher: AiortcPublisher, loop: Loop
) -> None:
    # like OBS: no candidates in the offer; the server learns the address from the checks
    status, headers, body = publisher.publish("keyed/cam", token="wrong", strip_candidates=True)
    assert status == 401, body
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert b"stream key" in body
    publisher.close()
    status, _h, body = publisher.publish("keyed/cam", strip_candidates=True)
    assert status == 401, body
    publisher.close()
    status, _h, body = publisher.publish("keyed/cam", token="s3cret", strip_candidates=True)
    assert status == 201, body
    url = srv.url("keyed/cam")
    wait_online(url)
    assert decode_frames(url, 10)[0] == 10
    # DELETE needs the token the session was made with
    status, _h, _b = request(http_port(srv), "DELETE", publisher.location)
    assert status == 401
    assert publisher.delete() == 200
    assert offline(url)


def test_user_password_as_bearer_token_and_forbidden_path(
    srv: ServerProc, publisher: AiortcPublisher
) -> None:
    status, _h, body = publisher.publish("auth/cam", token="enc:nope", audio=False)
    assert status == 401, body
    publisher.close()
    status, _h, body = publisher.publish("closed/cam", audio=False)
    assert status == 403 and b"not allowed" in body
    publisher.close()
    status, _h, body = publisher.publish("auth/cam", token="enc:pw", audio=False)
    assert status == 201, body
    wait_online(srv.url("auth/cam"))
    assert publisher.delete() == 200


def test_second_publisher_gets_409_and_the_first_is_untouched(srv: ServerProc, loop: Loop) -> None:
    port = http_port(srv)
    # RTSP publishes first: WHIP is refused with the reason
    url = srv.url("busy/rtsp")
    with running(ffmpeg_push(url, frames=100000, audio=False)) as pusher:
        wait_online(url)
        second = AiortcPublisher(loop, port)
        try:
            status, _h, body = second.publish("busy/rtsp", audio=False)
        finally:
            second.close()
        assert status == 409, body
        assert b"already has a publisher" in body and b"rtsp" in body.lower()
        assert pusher.poll() is None
        assert decode_frames(url, 10)[0] == 10
    # WHIP publishes first: a second WHIP publisher is refused, the first goes on
    first, second = AiortcPublisher(loop, port), AiortcPublisher(loop, port)
    try:
        assert first.publish("busy/whip", audio=False)[0] == 201
        url = srv.url("busy/whip")
        wait_online(url)
        status, _h, body = second.publish("busy/whip", audio=False)
        assert status == 409, body
        assert b"already has a publisher" in body
        assert decode_frames(url, 15)[0] == 15
        assert first.delete() == 200
    finally:
        first.close()
        second.close()


# --------------------------------------------------------------------------- hostile


@pytest.fixture
def capped() -> Iterator[ServerProc]:
    config = textwrap.dedent(
        """
        [server]
        host = "127.0.0.1"
        rtsp_port = 0
        rtmp_port = 0
        rtmps_port = 0
        http_port = 0
        [rtsp]
        rtp_port = 0
        [discovery]
        enabled = false
        [whip]
        max_sessions_per_ip = 2
        max_offer_bytes = 8192
        connect_timeout = 3.0
        """
    )
    s = ServerProc(config=config).start()
    yield s
    s.stop()


def test_hostile_requests_get_specific_errors(capped: ServerProc, loop: Loop) -> None:
    port = http_port(capped)
    sdp = {"Content-Type": "application/sdp"}
    status, headers, _b = request(port, "OPTIONS", "/whip/x")
    assert status == 200 and headers["Accept-Post"] == "application/sdp"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    status, headers, _b = request(port, "POST", "/whip/x", b"v=0", {"Content-Type": "text/plain"})
    assert status == 415 and headers["Accept-Post"] == "application/sdp"
    status, _h, body = request(port, "POST", "/whip/x", b"\x00garbage\xff\r\n" * 10, sdp)
    assert status == 400 and b"malformed SDP" in body
    big = b"v=0\r\n" + b"a=x:" + b"y" * 9000 + b"\r\n"
    status, _h, body = request(port, "POST", "/whip/x", big, sdp)
    assert status == 413 and b"max_offer_bytes" in body
    # the same without Content-Length (chunked): still stopped at the bound
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("POST", "/whip/x", body=iter([big[:4000], big[4000:]]), headers=sdp)
    r = conn.getresponse()
    assert r.status == 413
    conn.close()
    assert request(port, "GET", "/whip/x")[0] == 405
    assert request(port, "PUT", "/whip/x", b"")[0] == 405
    assert request(port, "DELETE", "/whip/x/nosuchsession")[0] == 404
    assert request(port, "POST", "/whip/", b"v=0", sdp)[0] == 404
    # two sessions that never connect hold this address's slots...
    pending = [AiortcPublisher(loop, port) for _ in range(2)]
    offers = [p.offer(audio=False) for p in pending]
    made = [request(port, "POST", f"/whip/p{i}", o.encode(), sdp) for i, o in enumerate(offers)]
    assert [m[0] for m in made] == [201, 201]
    location = made[0][1]["Location"]
    status, headers, _b = request(
        port, "PATCH", location, b"a=x", {"Content-Type": "application/trickle-ice-sdpfrag"}
    )
    assert status == 405 and headers["Allow"] == "OPTIONS, DELETE"
    # ...so 50 more POSTs from it are refused, quickly and with the setting named
    started = time.monotonic()
    for i in range(50):
        status, headers, body = request(port, "POST", f"/whip/q{i}", offers[0].encode(), sdp)
        assert status == 429, body
        assert headers["Retry-After"] and b"max_sessions_per_ip" in body
    elapsed = time.monotonic() - started
    # they time out ([whip] connect_timeout = 3 s): the slots are free again
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "no ICE/DTLS connection within" not in capped.log():
        time.sleep(0.2)
    time.sleep(0.5)
    fresh = AiortcPublisher(loop, port)
    try:
        status, _h, body = fresh.publish("p9", audio=False)
        assert status == 201, body
        wait_online(capped.url("p9"))
    finally:
        fresh.close()
        for p in pending:
            p.close()
    log = capped.log()
    assert "connect_timeout" in log
    # one line per refusal, paced by [http] log_lines_per_s = 1 after a burst of 10
    assert log.count(": 429 ") <= 10 + elapsed + 1, "refusals must be logged at a bounded rate"


# --------------------------------------------------------------------------- Chromium


@pytest.mark.netns
@pytest.mark.skipif(not can_make_netns(), reason="needs root and iproute2 for namespaces")
@pytest.mark.parametrize("source", ["canvas", "camera"])
def test_chromium_publish_page(source: str, tmp_path: Path) -> None:
    """Chromium (Debian's) opens /whip/PATH/publish in its own namespace and publishes the
    fake camera or the test pattern; ffprobe reads H.264 and Opus over RTSP."""
    if not Path(CHROMIUM).exists() or shutil.which("ip") is None:
        pytest.fail("Chromium (/usr/bin/chromium) is needed: apt-get install chromium")
    with lan("wh") as net:
        config = textwrap.dedent(
            f"""
            [server]
            host = "{net.server_ip}"
            rtsp_port = 8554
            rtmp_port = 0
            rtmps_port = 0
            http_port = 8080
            [rtsp]
            rtp_port = 0
            [discovery]
            enabled = false
            """
        )
        server = ServerProc(config=config, netns=net.server).start()
        origin = f"http://{net.server_ip}:8080"
        page = f"{origin}/whip/room/cam/publish?start={source}"
        profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
        log_path = tmp_path / "chromium.log"
        cmd = ["ip", "netns", "exec", net.client, CHROMIUM, "--headless=new", "--no-sandbox",
               "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
               "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
               "--autoplay-policy=no-user-gesture-required",
               "--disable-features=WebRtcHideLocalIpsWithMdns",
               # the camera needs a secure context: let this plain-http origin count as one
               f"--unsafely-treat-insecure-origin-as-secure={origin}",
               "--enable-logging=stderr", "--v=0", page]  # fmt: skip
        with open(log_path, "w") as logf:
            chrome = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=logf)
        try:
            url = f"rtsp://{net.server_ip}:8554/room/cam"
            try:
                wait_online(url, timeout=40, netns=net.client)
            except AssertionError:
                console = [x for x in log_path.read_text().splitlines() if "CONSOLE" in x]
                raise AssertionError(f"not published; page said: {console[-5:]}") from None
            r = subprocess.run(
                ["ip", "netns", "exec", net.client, FFPROBE, "-v", "error", "-rtsp_transport",
                 "tcp", "-timeout", "4000000", "-show_entries", "stream=codec_type,codec_name",
                 "-of", "json", url],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            streams = {s["codec_type"]: s["codec_name"] for s in json.loads(r.stdout)["streams"]}
            assert streams == {"video": "h264", "audio": "opus"}, r.stderr
            frames, err = decode_frames(url, 20, netns=net.client)
            assert frames == 20, err
        finally:
            stop_process(chrome)  # type: ignore[arg-type]
            server.stop()
