"""The HTTP/ONVIF listeners under hostile clients, with real sockets against a live server:
an idle-connection flood, dribbling clients, and a stream of malformed requests."""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.helpers import ServerProc, rtsp_exchange, status_of
from tests.onvif_schema import envelope, validate

pytestmark = pytest.mark.interop

BASE = """
[server]
host = "127.0.0.1"
rtsp_port = 0
rtmp_port = 0
http_port = 0

[rtsp]
rtp_port = 0

[onvif]
port_range_start = 0
port_range_end = 0

[discovery]
enabled = false

[[cameras]]
name = "Gate"
path = "gate"
username = "admin"
password = "secret"
"""

FLOOD = 3000
SERVER_NOFILE = 1024  # the server's open-file limit during the flood: 3000 > 1024
CAP = 200  # [http] max_connections in the flood test
PER_IP = 60  # [http] max_connections_per_ip
FD_SLACK = 32  # fds the server may open besides the capped HTTP connections


def fd_count(pid: int) -> int:
    """Open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def cameras(srv: ServerProc) -> dict[str, dict]:
    """GET /api/cameras on the main port: name -> entry."""
    url = f"http://127.0.0.1:{srv.ports['http_port']}/api/cameras"
    with urllib.request.urlopen(url, timeout=10) as r:
        return {c["name"]: c for c in json.loads(r.read())["cameras"]}


def get_system_date_and_time(url: str) -> bytes:
    """POST GetSystemDateAndTime (pre-auth) and return the schema-validated response."""
    req = urllib.request.Request(
        url,
        data=envelope("<tds:GetSystemDateAndTime/>"),
        headers={"Content-Type": "application/soap+xml"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    validate(body)
    assert b"GetSystemDateAndTimeResponse" in body
    return body


def recv_all(sock: socket.socket, limit: float) -> tuple[bytes, str]:
    """Read until EOF, a reset, or ``limit`` seconds; (bytes, how it ended)."""
    sock.settimeout(limit)
    out = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return out, "eof"
            out += chunk
    except TimeoutError:
        return out, "open"
    except ConnectionResetError:
        return out, "reset"


@pytest.fixture
def nofile() -> Iterator[int]:
    """Raise this process's open-file limit for thousands of client sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FLOOD + 512
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"needs RLIMIT_NOFILE >= {want} for the client sockets (hard {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    yield want
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_flood_is_capped_and_new_clients_still_get_served(nofile: int) -> None:
    """3000 idle connections from 10 addresses to a camera's port and the main port: the
    caps refuse or evict them, the server's fds stay below baseline + cap + slack, and a new
    GetSystemDateAndTime and an RTSP OPTIONS still work while every flood socket is held."""
    cfg = BASE + (
        f"\n[http]\nmax_connections = {CAP}\nmax_connections_per_ip = {PER_IP}\n"
        "header_timeout = 120\nkeepalive_timeout = 120\n"
    )
    srv = ServerProc(cfg).start()
    flood: list[socket.socket] = []
    try:
        pid = srv.proc.pid  # type: ignore[union-attr]
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (SERVER_NOFILE, SERVER_NOFILE))
        cam = cameras(srv)["Gate"]
        cam_port, main_port = int(cam["port"]), int(srv.ports["http_port"])
        onvif_url = cam["onvif_url"]
        get_system_date_and_time(onvif_url)
        baseline = fd_count(pid)
        bound = baseline + CAP + FD_SLACK

        # 300 connections from each of 127.0.0.2..11 in turn; 2 of 3 to the camera's port.
        peak, unaccepted, started = 0, 0, time.monotonic()
        for i in range(FLOOD):
            s = socket.socket()
            s.bind((f"127.0.0.{2 + i // (FLOOD // 10)}", 0))
            s.settimeout(10)
            try:
                s.connect(("127.0.0.1", cam_port if i % 3 else main_port))
            except (TimeoutError, ConnectionError):
                unaccepted += 1  # the listen backlog overflowed on a loaded machine
                s.close()
                continue
            flood.append(s)
            if i % 250 == 0:
                peak = max(peak, fd_count(pid))
        assert unaccepted < FLOOD // 10

        get_system_date_and_time(onvif_url)  # also evicts an idle flood connection
        get_system_date_and_time(f"http://127.0.0.1:{main_port}/onvif/Gate/device_service")
        reply = rtsp_exchange(srv.rtsp_port, b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        assert status_of(reply) == 200
        peak = max(peak, fd_count(pid))
        assert peak <= bound, f"server had {peak} fds open, bound {bound}"

        outcomes: dict[str, int] = {}
        refusal = b""
        for s in flood:
            s.setblocking(False)
            try:
                data = s.recv(4096)
                kind = "503" if data.startswith(b"HTTP/1.1 503") else ("eof" if not data else "?")
                refusal = refusal or (data if kind == "503" else b"")
            except BlockingIOError:
                kind = "open"
            except ConnectionResetError:
                kind = "reset"
            outcomes[kind] = outcomes.get(kind, 0) + 1
        assert outcomes.get("open", 0) <= CAP, outcomes
        assert outcomes.get("503", 0) > 0 and outcomes.get("eof", 0) > 0, outcomes
        assert b"Retry-After: " in refusal and b"max_connections_per_ip" in refusal, refusal

        log = srv.log()
        once = 1 + int(time.monotonic() - started) // 60  # one line a minute per cap
        assert 1 <= len(re.findall(r"the cap \(\[http\] max_connections = ", log)) <= once
        assert 1 <= len(re.findall(r"per-address cap \(\[http\] max_connections_per", log)) <= once
        assert "Traceback" not in log and "out of system resource" not in log
    finally:
        for s in flood:
            s.close()
    get_system_date_and_time(cameras(srv)["Gate"]["onvif_url"])
    srv.stop()


@pytest.fixture(scope="module")
def strict() -> Iterator[ServerProc]:
    """A server with short deadlines and a tight log budget."""
    cfg = BASE + (
        "\n[http]\nheader_timeout = 1.0\nbody_timeout = 1.0\nkeepalive_timeout = 1.0\n"
        "log_lines_per_s = 0.01\nlog_burst = 5\n"
    )
    srv = ServerProc(cfg).start()
    yield srv
    srv.stop()


def dribble(port: int, head: bytes, drip: bytes, limit: float = 30.0) -> tuple[bytes, str]:
    """Send ``head``, then ``drip`` one byte every 50 ms for up to ``limit`` seconds, until
    the server answers or closes; (what it sent, how it ended)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        s.setblocking(False)
        deadline = time.monotonic() + limit
        i = 0
        while time.monotonic() < deadline:
            try:
                if s.recv(1, socket.MSG_PEEK):
                    break
                return b"", "eof"
            except BlockingIOError:
                pass
            except ConnectionResetError:
                return b"", "reset"
            try:
                s.send(drip[i % len(drip) : i % len(drip) + 1])
            except (BrokenPipeError, ConnectionResetError):
                return b"", "reset"
            i += 1
            time.sleep(0.05)
        else:
            return b"", "still open"
        s.setblocking(True)
        return recv_all(s, 10)


def test_dribbled_headers_are_cut_at_the_header_deadline(strict: ServerProc) -> None:
    """A request line and headers dribbled a byte at a time get 408 after header_timeout,
    even though bytes keep arriving (30 s of dribbling would otherwise go on)."""
    port = cameras(strict)["Gate"]["port"]
    data, how = dribble(
        port, b"POST /onvif/device_service HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"abcdefgh"
    )
    assert how == "eof" and data.startswith(b"HTTP/1.1 408 "), (how, data)
    assert b"request headers not complete in time" in data
    assert "request headers not complete after 1 s ([http] header_timeout)" in strict.log()


def test_dribbled_body_gets_a_soap_fault_at_the_body_deadline(strict: ServerProc) -> None:
    port = cameras(strict)["Gate"]["port"]
    head = (
        b"POST /onvif/device_service HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/soap+xml\r\nContent-Length: 5000\r\n\r\n"
    )
    data, how = dribble(port, head, envelope("<tds:GetSystemDateAndTime/>"))
    assert how == "eof" and data.startswith(b"HTTP/1.1 408 "), (how, data)
    validate(data.split(b"\r\n\r\n", 1)[1])
    assert "([http] body_timeout)" in strict.log()


def test_idle_keepalive_connection_is_closed(strict: ServerProc) -> None:
    port = cameras(strict)["Gate"]["port"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /api/cameras HTTP/1.1\r\nHost: x\r\n\r\n")
        data, how = recv_all(s, 30)
    assert data.startswith(b"HTTP/1.1 200 ") and how == "eof", (how, data[:100])


MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # TLS ClientHello on the HTTP port
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
    b"POST /onvif/device_service HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 40000 + b"\r\n\r\n",
]


def test_malformed_requests_give_400_and_a_bounded_concise_log(strict: ServerProc) -> None:
    """1000 malformed requests: each gets a short 4xx; the log gets at most log_burst lines
    plus pacing and summaries, none with a traceback or the raw request."""
    port = int(cameras(strict)["Gate"]["port"])
    before = strict.log()
    started = time.monotonic()
    statuses: dict[int, int] = {}
    for i in range(1000):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            try:
                s.sendall(MALFORMED[i % len(MALFORMED)])
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered and closed before everything was sent
            data, _how = recv_all(s, 10)
        code = status_of(data) if data else 0
        statuses[code] = statuses.get(code, 0) + 1
        if i < len(MALFORMED):
            assert len(data) < 600 and b"aaaa" not in data and b"yyyy" not in data, data
    assert set(statuses) <= {400, 431}, statuses
    deadline = time.monotonic() + 20
    while "suppressed" not in strict.log()[len(before) :] and time.monotonic() < deadline:
        time.sleep(0.5)
    new = strict.log()[len(before) :]
    lines = new.splitlines()
    elapsed = time.monotonic() - started
    # 5 (the burst) + 0.01 a second + one summary per 10 s, whatever the machine's speed
    assert len(lines) <= 5 + 1 + int(elapsed * 0.01) + 1 + int(elapsed / 10), new
    assert sum("http: bad request from 127.0.0.1:" in x for x in lines) >= 1
    assert re.search(r"http: \d+ more lines about bad requests and timeouts suppressed", new)
    assert "Traceback" not in new and "aiohttp" not in new and "aaaa" not in new
    assert len(new) < 200 * len(lines)
