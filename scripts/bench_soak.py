#!/usr/bin/env python3
"""Soak: mixed load plus hostile input at a low rate against one onvifcam process.

For ``--minutes`` (30 by default) it runs, all against 127.0.0.1 only:

- a reference publisher (ffmpeg, RTSP/TCP, 25 fps, for the whole run) and a reference
  reader (raw RTSP/TCP in this process) that counts video packets, RTP sequence gaps and
  frames (marker bits): the frames lost by a reader that was never slow;
- churning publishers: ffmpeg pushing a prepared clip with ``-c copy`` over RTSP or RTMP to
  ``soak/churnN`` for 5-20 s, then SIGTERM or SIGKILL, at most 3 at a time;
- churning readers: raw RTSP readers joining a live path for 2-10 s, up to 20 at a time;
- ONVIF polling: GetProfiles and GetStreamUri with WS-Security every second;
- discovery: a unicast Probe every 2 s, counting the ProbeMatches that come back;
- hostile input, one every ``--hostile-interval`` seconds, round robin: SOAP naming a FIFO as
  external DTD (UTF-16), the same as a WS-Discovery datagram, RTSP garbage, an RTSP request
  dribbled one byte a second, an RTMP connection asking for a huge chunk size and sending
  partial messages, idle HTTP connections, malformed HTTP, a replayed WS-Security token.

Every ``--sample`` seconds it prints the server's RSS, open fds and threads, and the
reference reader's counters; at the end a summary with the loop stalls the server logged.
Bounded in time, stops everything it started::

    python3 scripts/bench_soak.py --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench_common import stop_process

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import ServerProc  # noqa: E402
from tests.onvif_schema import envelope, security_header  # noqa: E402

USER, PASSWORD = "admin", "soak-secret"
CONFIG = f"""
[server]
host = "127.0.0.1"
rtsp_port = 0
rtmp_port = 0
rtmps_port = 0
http_port = 0

[rtsp]
rtp_port = 0

[onvif]
username = "{USER}"
password = "{PASSWORD}"
port_range_start = 0
port_range_end = 0

[discovery]
port = 0
mdns = false
"""


# --------------------------------------------------------------------------- processes


def make_clip(path: Path, seconds: int = 20) -> None:
    """A small H.264 + AAC clip (640x360, 25 fps, 1 s GOP) to push with -c copy."""
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
        "-bf", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=120)


def push(clip: Path, url: str, seconds: float) -> subprocess.Popen[bytes]:
    """ffmpeg pushing the clip in real time, looped, with stream copy."""
    fmt = ["-f", "flv"] if url.startswith("rtmp") else ["-f", "rtsp", "-rtsp_transport", "tcp"]
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
        "-stream_loop", "-1", "-i", str(clip), "-t", f"{seconds:.1f}", "-c", "copy", *fmt, url,
    ]  # fmt: skip
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def proc_status(pid: int) -> tuple[int, int, int]:
    """(RSS KiB, open fds, threads) of a process."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


# --------------------------------------------------------------------------- RTSP reader


@dataclass
class ReaderStats:
    """What one raw RTSP reader saw on its video channel."""

    packets: int = 0
    frames: int = 0
    gaps: int = 0
    lost: int = 0
    bytes: int = 0
    started: float = 0.0
    last_seq: int = -1


async def rtsp_read(port: int, path: str, stats: ReaderStats, until: float) -> None:
    """DESCRIBE/SETUP (TCP interleaved)/PLAY ``path`` and count video RTP until ``until``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    url = f"rtsp://127.0.0.1:{port}/{path}"
    cseq = 0
    session = ""

    async def request(method: str, uri: str, headers: list[str]) -> str:
        nonlocal cseq, session
        cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {cseq}", *headers]
        if session:
            lines.append(f"Session: {session}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
        if " 200 " not in head.split("\r\n", 1)[0]:
            raise RuntimeError(f"{method} {path}: {head.splitlines()[0]}")
        m = re.search(r"^Content-Length:\s*(\d+)", head, re.M | re.I)
        body = (await reader.readexactly(int(m.group(1)))).decode() if m else ""
        m = re.search(r"^Session:\s*([^;\r\n]+)", head, re.M | re.I)
        if m:
            session = m.group(1).strip()
        return body

    try:
        sdp = await request("DESCRIBE", url, ["Accept: application/sdp"])
        controls = re.findall(r"^a=control:(\S+)", sdp.split("m=", 1)[1], re.M)
        video = next((i for i, m in enumerate(sdp.split("m=")[1:]) if m.startswith("video")), 0)
        for i, control in enumerate(controls):
            uri = control if control.startswith("rtsp:") else f"{url}/{control}"
            await request(
                "SETUP", uri, [f"Transport: RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}"]
            )
        await request("PLAY", url, ["Range: npt=0.000-"])
        stats.started = time.monotonic()
        want = 2 * video
        while time.monotonic() < until:
            head = await asyncio.wait_for(reader.readexactly(4), 10)
            if head[0] != 0x24:  # an RTSP reply (to nothing we sent): skip its head
                await reader.readuntil(b"\r\n\r\n")
                continue
            data = await reader.readexactly(struct.unpack("!H", head[2:4])[0])
            if head[1] != want or len(data) < 12:
                continue
            seq = struct.unpack("!H", data[2:4])[0]
            if stats.last_seq >= 0 and seq != (stats.last_seq + 1) & 0xFFFF:
                stats.gaps += 1
                stats.lost += (seq - stats.last_seq - 1) & 0xFFFF
            stats.last_seq = seq
            stats.packets += 1
            stats.bytes += len(data)
            stats.frames += data[1] >> 7
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# --------------------------------------------------------------------------- the soak


@dataclass
class Soak:
    """Counters of everything the soak did."""

    srv: ServerProc
    clip: Path
    tmp: Path
    until: float
    hostile_interval: float
    onvif_ok: int = 0
    onvif_failed: int = 0
    probes: int = 0
    probe_matches: int = 0
    publishes: int = 0
    reads: int = 0
    read_failures: int = 0
    hostile: dict[str, int] = field(default_factory=dict)
    hostile_cut: dict[str, int] = field(default_factory=dict)  # attacks the server cut short
    held: list[socket.socket] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    live: set[str] = field(default_factory=set)
    replay: bytes = b""
    url: str = ""

    @property
    def port(self) -> int:
        return int(self.srv.ports["rtsp_port"])

    @property
    def http(self) -> int:
        return int(self.srv.ports["http_port"])

    def cameras(self) -> list[dict]:
        """/api/cameras (blocking: call in a thread)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/api/cameras", timeout=5) as r:
            return json.loads(r.read())["cameras"]

    def online(self, path: str) -> bool:
        """Whether the camera of ``path`` is online (blocking)."""
        return any(c["path"] == path and c["online"] for c in self.cameras())

    def device_url(self) -> str:
        """The reference camera's device service URL (blocking; cached)."""
        if not self.url:
            cam = next(c for c in self.cameras() if c["path"] == "soak/ref")
            self.url = f"http://127.0.0.1:{self.http}/onvif/{cam['slug']}/device_service"
        return self.url

    async def publishers(self) -> None:
        n = 0
        while time.monotonic() < self.until - 25:
            self.procs = [p for p in self.procs if p.poll() is None]
            if len(self.procs) < 3:
                n += 1
                path = f"soak/churn{n % 8}"
                url = (
                    f"rtmp://127.0.0.1:{self.srv.ports['rtmp_port']}/{path}"
                    if n % 2
                    else f"rtsp://127.0.0.1:{self.port}/{path}"
                )
                p = push(self.clip, url, random.uniform(5, 20))
                self.procs.append(p)
                self.publishes += 1
                if random.random() < 0.3:  # some die hard, mid-stream
                    asyncio.get_running_loop().call_later(
                        random.uniform(2, 8), lambda p=p: p.poll() is None and p.kill()
                    )
            await asyncio.sleep(random.uniform(2, 5))

    async def readers(self) -> None:
        tasks: set[asyncio.Task[None]] = set()

        async def one() -> None:
            path = random.choice(["soak/ref", *[f"soak/churn{i}" for i in range(8)]])
            st = ReaderStats()
            try:
                await rtsp_read(self.port, path, st, time.monotonic() + random.uniform(2, 10))
                self.reads += 1
            except (TimeoutError, OSError, RuntimeError, asyncio.IncompleteReadError):
                self.read_failures += 1  # the path was not live (404) or its publisher left

        while time.monotonic() < self.until - 15:
            if len(tasks) < 20:
                t = asyncio.create_task(one())
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            await asyncio.sleep(0.5)
        for t in tasks:
            t.cancel()

    async def onvif(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            while time.monotonic() < self.until - 5:
                await asyncio.sleep(1)
                try:
                    url = await asyncio.to_thread(self.device_url)
                    for body in (
                        "<trt:GetProfiles/>",
                        "<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>"
                        "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport>"
                        "</trt:StreamSetup><trt:ProfileToken>Profile_1</trt:ProfileToken>"
                        "</trt:GetStreamUri>",
                    ):
                        data = envelope(body, security_header(USER, PASSWORD))
                        target = url.replace("device_service", "media_service")
                        async with http.post(target, data=data, timeout=10) as r:
                            await r.read()
                            ok = r.status == 200
                        self.onvif_ok += ok
                        self.onvif_failed += not ok
                        if not self.replay:
                            self.replay = data
                except (TimeoutError, aiohttp.ClientError, OSError, StopIteration):
                    self.onvif_failed += 1

    async def discovery(self) -> None:
        port = int(self.srv.ports.get("discovery_port", 0) or 0)
        if not port:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            while time.monotonic() < self.until - 5:
                mid = f"urn:uuid:{random.getrandbits(128):032x}"
                sock.sendto(probe_datagram(mid), ("127.0.0.1", port))
                self.probes += 1
                end = time.monotonic() + 2
                while (left := end - time.monotonic()) > 0:
                    try:
                        data = await asyncio.wait_for(loop.sock_recv(sock, 65536), left)
                    except TimeoutError:
                        break
                    self.probe_matches += b"ProbeMatch" in data and mid.encode() in data
        finally:
            sock.close()

    async def hostile_loop(self) -> None:
        fifo = self.tmp / "fifo"
        os.mkfifo(fifo)
        attacks = [
            ("soap-doctype-fifo", lambda: self.soap_doctype(fifo)),
            ("wsd-doctype-fifo", lambda: self.wsd_doctype(fifo)),
            ("rtsp-garbage", self.rtsp_garbage),
            ("rtsp-dribble", self.rtsp_dribble),
            ("rtmp-big-chunks", self.rtmp_big_chunks),
            ("http-idle", self.http_idle),
            ("http-malformed", self.http_malformed),
            ("wsse-replay", self.wsse_replay),
        ]
        i = 0
        while time.monotonic() < self.until - 5:
            await asyncio.sleep(self.hostile_interval)
            name, attack = attacks[i % len(attacks)]
            i += 1
            try:
                await asyncio.wait_for(attack(), 10)
            except Exception:  # the server cut us off (as it should) or refused: still sent
                self.hostile_cut[name] = self.hostile_cut.get(name, 0) + 1
            self.hostile[name] = self.hostile.get(name, 0) + 1
            # hold at most 200 idle/dribbling sockets; release the oldest first
            while len(self.held) > 200:
                self.held.pop(0).close()

    async def _send(self, port: int, data: bytes, wait: float = 1.0) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(data)
            with contextlib.suppress(asyncio.TimeoutError, OSError):
                return await asyncio.wait_for(reader.read(65536), wait)
            return b""
        finally:
            writer.close()

    async def soap_doctype(self, fifo: Path) -> None:
        xml = (
            f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x SYSTEM "file://{fifo}">'
            '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
            '<GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/>'
            "</s:Body></s:Envelope>"
        ).encode("utf-16")
        head = (
            f"POST /onvif/device_service HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
            f"soap+xml\r\nContent-Length: {len(xml)}\r\nConnection: close\r\n\r\n"
        ).encode()
        path = f"/onvif/{(await asyncio.to_thread(self.device_url)).split('/onvif/')[1]}"
        head = head.replace(b"/onvif/device_service", path.encode())
        await self._send(self.http, head + xml)

    async def wsd_doctype(self, fifo: Path) -> None:
        port = int(self.srv.ports.get("discovery_port", 0) or 0)
        if port:
            data = f'<!DOCTYPE x SYSTEM "file://{fifo}"><x/>'.encode("utf-16")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(data, ("127.0.0.1", port))

    async def rtsp_garbage(self) -> None:
        await self._send(self.port, os.urandom(random.randint(1, 4000)))

    async def rtsp_dribble(self) -> None:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        s.setblocking(False)
        self.held.append(s)
        req = b"OPTIONS rtsp://127.0.0.1/x RTSP/1.0\r\nCSeq: 1\r\n"

        async def dribble() -> None:
            for b in req:
                await asyncio.sleep(1)
                try:
                    s.send(bytes([b]))
                except OSError:
                    return

        asyncio.create_task(dribble())  # noqa: RUF006 - ends on its own, bounded

    async def rtmp_big_chunks(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.srv.ports["rtmp_port"])
        try:
            writer.write(b"\x03" + bytes(1536))
            await asyncio.wait_for(reader.readexactly(1 + 1536 + 1536), 5)
            writer.write(bytes(1536))  # C2
            # SetChunkSize 0x7fffffff, then type-0 headers of 16 MiB messages, never finished
            writer.write(
                bytes([2, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0]) + struct.pack("!I", 0x7FFFFFFF)
            )
            for csid in range(3, 10):
                hdr = (
                    bytes([csid, 0, 0, 0]) + (16 << 20).to_bytes(3, "big") + bytes([20, 0, 0, 0, 0])
                )
                writer.write(hdr + os.urandom(64 * 1024))
            await writer.drain()
            await asyncio.sleep(0.5)
        finally:
            writer.close()

    async def http_idle(self) -> None:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", self.http), timeout=2)
            self.held.append(s)

    async def http_malformed(self) -> None:
        for _ in range(20):
            await self._send(self.http, b"GET /\x00\xff HTTP/9.9\r\nBad header\r\n\r\n", 0.2)

    async def wsse_replay(self) -> None:
        if self.replay:
            path = "/onvif/" + self.url.split("/onvif/")[1].replace("device", "media")
            head = (
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/soap+xml\r\n"
                f"Content-Length: {len(self.replay)}\r\nConnection: close\r\n\r\n"
            ).encode()
            await self._send(self.http, head + self.replay)


def probe_datagram(message_id: str) -> bytes:
    """A WS-Discovery Probe for NetworkVideoTransmitter."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:w="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" '
        'xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><e:Header>'
        f"<w:MessageID>{message_id}</w:MessageID>"
        "<w:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</w:To>"
        "<w:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</w:Action>"
        "</e:Header><e:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types>"
        "</d:Probe></e:Body></e:Envelope>"
    ).encode()


def stalls(log: str) -> list[str]:
    """The server's loop-stall warnings."""
    return [line for line in log.splitlines() if "stall" in line.lower() and "WARNING" in line]


async def run(args: argparse.Namespace) -> int:
    """Start the server and the load, sample, report."""
    tmp = Path(tempfile.mkdtemp(prefix="onvifcam-soak-"))
    clip = tmp / "clip.mp4"
    make_clip(clip)
    srv = ServerProc(config=CONFIG).start()
    pid = srv.proc.pid  # type: ignore[union-attr]
    seconds = args.minutes * 60
    start = time.monotonic()
    until = start + seconds
    ref_pub = push(clip, f"rtsp://127.0.0.1:{srv.ports['rtsp_port']}/soak/ref", seconds + 30)
    soak = Soak(srv, clip, tmp, until, args.hostile_interval)
    ref = ReaderStats()
    samples: list[tuple[float, int, int, int]] = []
    try:
        for _ in range(100):  # wait for the reference stream
            await asyncio.sleep(0.2)
            with contextlib.suppress(Exception):
                if await asyncio.to_thread(soak.online, "soak/ref"):
                    break
        ref_task = asyncio.create_task(rtsp_read(soak.port, "soak/ref", ref, until))
        tasks = [
            asyncio.create_task(c())
            for c in (soak.publishers, soak.readers, soak.onvif, soak.discovery, soak.hostile_loop)
        ]
        cols = ("t(s)", "RSS MiB", "fds", "threads", "ref frames", "ref lost")
        print(" ".join(f"{c:>10}" for c in (*cols, "onvif ok/fail", "probe/match", "stalls")))
        while time.monotonic() < until:
            await asyncio.sleep(min(args.sample, max(0.0, until - time.monotonic())))
            rss, fds, threads = proc_status(pid)
            t = time.monotonic() - start
            samples.append((t, rss, fds, threads))
            row = (f"{t:.0f}", f"{rss / 1024:.1f}", fds, threads, ref.frames, ref.lost)
            print(
                " ".join(f"{c:>10}" for c in row),
                f"{soak.onvif_ok:>7}/{soak.onvif_failed:<5}",
                f"{soak.probes:>5}/{soak.probe_matches:<5}",
                f"{len(stalls(srv.log())):>6}",
                flush=True,
            )
        ref_error = ""
        try:
            await asyncio.wait_for(ref_task, 15)
        except Exception as exc:  # the reference reader must not die: report why it did
            ref_error = f"{type(exc).__name__}: {exc}"
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        expected = round(((time.monotonic() if ref_error else until) - ref.started) * 25)
        found = stalls(srv.log())
        alive = srv.proc.poll() is None  # type: ignore[union-attr]
        rss = [s[1] / 1024 for s in samples]
        fd = [s[2] for s in samples]
        rows = [
            ("duration", f"{seconds / 60:.1f} min"),
            ("server RSS MiB", f"first {rss[0]:.1f}, max {max(rss):.1f}, last {rss[-1]:.1f}"),
            ("server fds", f"first {fd[0]}, max {max(fd)}, last {fd[-1]}"),
            ("reference frames", f"{ref.frames} of about {expected} expected at 25 fps"),
            ("reference packets", f"{ref.packets}, {ref.lost} lost in {ref.gaps} gaps"),
            ("reference reader died", ref_error or "no"),
            ("loop stalls logged", str(len(found))),
            ("publishes (churn)", str(soak.publishes)),
            ("reader sessions", f"{soak.reads} done, {soak.read_failures} refused or cut"),
            ("ONVIF requests", f"{soak.onvif_ok} ok, {soak.onvif_failed} failed"),
            ("discovery probes", f"{soak.probes} sent, {soak.probe_matches} answered"),
            ("hostile inputs", f"{sum(soak.hostile.values())}: {soak.hostile}"),
            ("cut short by the server", str(soak.hostile_cut)),
            ("server still running", str(alive)),
        ]
        print("\nsummary")
        for k, v in rows:
            print(f"  {k:<24} {v}")
        for line in found[:10]:
            print(f"    {line[:200]}")
        return 0 if alive and not ref_error else 1
    finally:
        for s in soak.held:
            s.close()
        for p in [ref_pub, *soak.procs]:
            stop_process(p, signal.SIGKILL, 5)
        srv.stop(check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    """Parse arguments and run the soak."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--hostile-interval", type=float, default=2.0)
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
