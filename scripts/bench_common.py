"""What the benchmark scripts share: CPU time from /proc, CPU pinning, free ports, the RTSP
publisher handshake, stopping the processes they started, a pinned ``onvifcam serve``, signed
SOAP requests and a minimal keep-alive HTTP/1.1 client.

Imported by ``scripts/bench_*.py`` (run as scripts, so this directory is on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)
# the start of a loopback-only server config, every port ephemeral; ends in [onvif]
LOOPBACK_CONFIG = """
[server]
host = "127.0.0.1"
rtsp_port = 0
rtmp_port = 0
http_port = 0
log_level = "warning"

[rtsp]
rtp_port = 0

[onvif]
port_range_start = 0
port_range_end = 0
"""


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    return sum(cpu_times(pid))


def free_port() -> int:
    """A TCP port that is free right now on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin_and_use_uvloop(cpu: int) -> None:
    """Run this process (the load generator) on ``cpu`` only, with uvloop when installed."""
    os.sched_setaffinity(0, {cpu})
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def stop_process(p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal a process we started (its whole group when it leads one), wait, then kill."""

    def send(s: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(p.pid) == p.pid:
                os.killpg(p.pid, s)
            else:
                p.send_signal(s)

    if p.poll() is None:
        send(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            p.wait(5)


async def rtsp_record(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, url: str, sdp: str
) -> None:
    """ANNOUNCE ``sdp`` to ``url``, SETUP every track (TCP interleaved 2N-2N+1), RECORD."""
    session = ""
    cseq = 0

    async def request(method: str, uri: str, headers: list[str], body: bytes = b"") -> None:
        nonlocal session, cseq
        cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {cseq}", *headers]
        if session:
            lines.append(f"Session: {session}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        if " 200 " not in head.split("\r\n", 1)[0]:
            raise RuntimeError(f"{method} {uri}: {head.splitlines()[0]}")
        m = re.search(r"^Session:\s*([^;\r\n]+)", head, re.M | re.I)
        if m:
            session = m.group(1).strip()

    await request("ANNOUNCE", url, ["Content-Type: application/sdp"], sdp.encode())
    tracks = sum(1 for line in sdp.splitlines() if line.startswith("m="))
    for i in range(tracks):
        transport = f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1};mode=record"
        await request("SETUP", f"{url}/trackID={i}", [f"Transport: {transport}"])
    await request("RECORD", url, ["Range: npt=0.000-"])


@contextlib.contextmanager
def onvifcam_server(
    config: str, cpu: int, prefix: str
) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """``onvifcam serve`` with ``config``, pinned to ``cpu``; yields the process and its
    ready-line ports. The temp dir (named ``prefix``...) is removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    cfg = tmp / "config.toml"
    cfg.write_text(config)
    cmd = ["taskset", "-c", str(cpu), sys.executable, "-m", "onvifcam", "serve"]
    cmd += ["--config", str(cfg), "--state-dir", str(tmp / "state")]
    log = open(tmp / "server.log", "w")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line.startswith("onvifcam ready"):
            raise RuntimeError(
                f"server did not start: {line!r}\n{(tmp / 'server.log').read_text()}"
            )
        yield p, dict(tok.split("=", 1) for tok in line.split()[2:])
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def cameras(http_port: int | str) -> dict[str, dict[str, object]]:
    """/api/cameras by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/cameras", timeout=10) as r:
        return {c["name"]: c for c in json.loads(r.read())["cameras"]}


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))] if s else float("nan")


def security(user: str = "admin", password: str = "secret") -> str:
    """A fresh wsse:Security header (random nonce, PasswordDigest)."""
    nonce = os.urandom(16)
    created = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    created = created.replace("+00:00", "Z")
    pw = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest())
    return (
        f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
        f"<wsse:Username>{user}</wsse:Username>"
        f'<wsse:Password Type="{DIGEST}">{pw.decode()}</wsse:Password>'
        f"<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce>"
        f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"
    )


def soap(body: str, user: str = "admin", password: str = "secret") -> bytes:
    """A complete SOAP 1.2 envelope around ``body``, signed with WS-Security."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?><s:Envelope '
        'xmlns:s="http://www.w3.org/2003/05/soap-envelope">'
        f"<s:Header>{security(user, password)}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def http_request(port: int, path: str, body: bytes | None, extra: str = "") -> bytes:
    """Raw HTTP/1.1 request bytes to 127.0.0.1 (a SOAP POST when body is given, else GET)."""
    if body is None:
        return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/soap+xml; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"{extra}\r\n"
    )
    return head.encode() + body


def soap_request(port: int, path: str, body: str) -> bytes:
    """A POST of a signed SOAP 1.2 envelope (admin/secret) to ``path``."""
    return http_request(port, path, soap(body))


class Conn:
    """One keep-alive HTTP/1.1 connection: send a request, read the whole response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        """Connect to 127.0.0.1:``port``."""
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def exchange(self, data: bytes) -> tuple[int, dict[str, str], bytes]:
        """Write ``data`` and read one response: (status, lower-cased headers, body)."""
        self.writer.write(data)
        return await self.read_response()

    async def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """Read one response (Content-Length framed): (status, lower-cased headers, body)."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    def close(self) -> None:
        """Close the connection."""
        self.writer.close()
