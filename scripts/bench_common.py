"""What the benchmark scripts share: CPU time from /proc, CPU pinning, free ports, the RTSP
publisher handshake and stopping the processes they started.

Imported by ``scripts/bench_*.py`` (run as scripts, so this directory is on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess

CLK_TCK = os.sysconf("SC_CLK_TCK")


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
