"""Auto-created cameras: only real video streams are kept, and offline ones expire.

The server runs in ``lan.server`` with a one-port ONVIF range and ``auto_expire = 4``;
publishers (raw RTSP sessions that announce a stream and send nothing, and ffmpeg) and a
Hello/Bye listener run in ``lan.client``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import (
    HELLO_LISTENER,
    ROOT,
    ServerProc,
    api_cameras,
    ffmpeg_push,
    running,
    start_in_netns,
    stop_process,
    wait_lines,
    wait_online,
)
from tests.netns import Lan, can_make_netns, lan

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    pytest.mark.skipif(not can_make_netns(), reason="needs root and iproute2 for namespaces"),
]

PORT = 18100  # the only port auto cameras may have
EXPIRE = 4.0

# ANNOUNCE + SETUP + RECORD of an H.264 stream on argv[3] at argv[1]:argv[2], then nothing:
# prints "recording", waits for a line on stdin, closes.
SILENT_PUBLISHER = r"""
import socket, sys
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
url = f"rtsp://{host}:{port}/{path}"
sdp = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\n"
       b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n")
s = socket.create_connection((host, port), timeout=10)
f = s.makefile("rb")

def ask(head, body=b""):
    s.sendall(head.encode() + b"\r\n\r\n" + body)
    status = f.readline().split()[1]
    length, session = 0, ""
    while (line := f.readline().strip()):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "session":
            session = value.split(";")[0].strip()
    f.read(length)
    assert status == b"200", (head, status)
    return session

sid = ask(f"ANNOUNCE {url} RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\n"
          f"Content-Length: {len(sdp)}", sdp)
ask(f"SETUP {url}/streamid=0 RTSP/1.0\r\nCSeq: 2\r\nSession: {sid}\r\n"
    "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record")
ask(f"RECORD {url} RTSP/1.0\r\nCSeq: 3\r\nSession: {sid}")
print("recording", flush=True)
sys.stdin.readline()
s.close()
"""


@dataclass
class Site:
    """The link, the server, its state directory and the Hello/Bye listener's file."""

    net: Lan
    server: ServerProc
    heard_path: Path

    @property
    def state_files(self) -> list[Path]:
        assert self.server._tmp is not None
        return sorted((Path(self.server._tmp.name) / "state" / "cameras").glob("*.json"))

    def cameras(self) -> dict[str, dict]:
        return api_cameras(self.net.client, self.net.server_ip, self.server.ports["http_port"])

    def url(self, path: str) -> str:
        return f"rtsp://{self.net.server_ip}:{self.server.rtsp_port}/{path}"

    def wait(self, pred: Callable[[dict[str, dict]], bool], limit: float = 20.0) -> dict:
        deadline = time.monotonic() + limit
        cams = self.cameras()
        while not pred(cams) and time.monotonic() < deadline:
            time.sleep(0.3)
            cams = self.cameras()
        return cams

    def port_open(self, port: int) -> bool:
        code = (
            "import socket,sys\n"
            "try:\n"
            f"    socket.create_connection(({self.net.server_ip!r}, {port}), timeout=3).close()\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
        r = subprocess.run(
            ["ip", "netns", "exec", self.net.client, sys.executable, "-c", code], timeout=30
        )
        return r.returncode == 0


def _config() -> str:
    return (
        '[server]\nhost = "0.0.0.0"\nrtsp_port = 0\nhttp_port = 0\n'
        "[rtsp]\nrtp_port = 0\n[rtmp]\nenabled = false\n"
        f"[onvif]\nport_range_start = {PORT}\nport_range_end = {PORT}\n"
        f"auto_expire = {EXPIRE}\n"
        "[discovery]\nmdns = false\n"
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    heard = tmp_path_factory.mktemp("auto") / "heard.jsonl"
    with lan("ac") as net:
        listener = start_in_netns(net.client, HELLO_LISTENER, heard, net.client_ip)
        server = ServerProc(_config(), netns=net.server)
        try:
            assert wait_lines(heard, lambda x: x["kind"] == "ready", 30)
            server.start(timeout=60)
            yield Site(net, server, heard)
        finally:
            server.stop(check=False)
            stop_process(listener)


def _silent_session(site: Site, path: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        ["ip", "netns", "exec", site.net.client, sys.executable, "-c", SILENT_PUBLISHER,
         site.net.server_ip, str(site.server.rtsp_port), path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(ROOT),
    )  # fmt: skip
    assert p.stdout is not None and p.stdout.readline().strip() == "recording"
    return p


def test_a_publish_without_media_leaves_nothing_behind(site: Site) -> None:
    # while it records, the path has a camera (with the one port of the range) ...
    p = _silent_session(site, "fuzz/0")
    try:
        cams = site.wait(lambda c: c.get("fuzz/0", {}).get("port") == PORT)
        assert cams["fuzz/0"]["auto"] and cams["fuzz/0"]["port"] == PORT
        assert site.state_files == []  # not written before the stream carried video
    finally:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(10)
    # ... and once the publisher left without sending video, none: no file, port free
    assert "fuzz/0" not in site.wait(lambda c: "fuzz/0" not in c)
    for i in range(1, 11):  # a fuzzer's worth of them, one after the other
        p = _silent_session(site, f"fuzz/{i}")
        assert p.stdin is not None
        p.stdin.close()
        p.wait(10)
    cams = site.wait(lambda c: not any(k.startswith("fuzz/") for k in c))
    assert not any(k.startswith("fuzz/") for k in cams), sorted(cams)
    assert site.state_files == []
    log = site.server.log()
    assert "no free port in the range" not in log
    assert log.count("left before sending any video") == 11


def test_a_real_stream_is_kept_then_expires(site: Site) -> None:
    url = site.url("live/real")
    with running(ffmpeg_push(url, frames=75, gop=25, audio=False, netns=site.net.client)) as pub:
        wait_online(url, netns=site.net.client)
        cams = site.wait(lambda c: c.get("live/real", {}).get("port") == PORT)
        cam = cams["live/real"]
        assert cam["online"] and cam["port"] == PORT
        deadline = time.monotonic() + 10
        while not site.state_files and time.monotonic() < deadline:
            time.sleep(0.2)
        files = site.state_files
        assert len(files) == 1  # video arrived: its identity is saved
        assert json.loads(files[0].read_text())["uuid"] == cam["uuid"]
        assert pub.wait(30) == 0
    epr = "urn:uuid:" + cam["uuid"]
    assert wait_lines(site.heard_path, lambda x: x["kind"] == "hello" and x["epr"] == epr)
    # offline: kept for auto_expire seconds, then removed with its file, port and a Bye
    assert site.cameras()["live/real"]["online"] is False
    cams = site.wait(lambda c: "live/real" not in c, limit=EXPIRE + 20)
    assert "live/real" not in cams
    assert site.state_files == []
    assert wait_lines(site.heard_path, lambda x: x["kind"] == "bye" and x["epr"] == epr)
    assert not site.port_open(PORT)
    assert "offline for" in site.server.log() and "auto_expire = 4" in site.server.log()
    # the next stream gets the freed port
    url = site.url("live/next")
    with running(ffmpeg_push(url, frames=50, audio=False, netns=site.net.client)) as pub:
        wait_online(url, netns=site.net.client)
        cams = site.wait(lambda c: c.get("live/next", {}).get("port") == PORT)
        assert cams["live/next"]["port"] == PORT
        assert site.port_open(PORT)
        assert pub.wait(30) == 0
