#!/usr/bin/env python3
"""Fan-out benchmark: one H.264 publisher, N RTSP/TCP readers; onvifcam against gst-rtsp-server.

A 1080p25 H.264 clip at 4 Mbit/s (and a 720p25 one at 2 Mbit/s for the camera case) is
encoded once with ffmpeg (cached in /tmp/onvifcam-bench-fanout) and packetised here with
onvifcam's own RFC 6184 packetiser. One asyncio process (uvloop, pinned to CPU 1) replays it
in real time, loops it with continuous sequence numbers and timestamps, and runs every reader.
The server under test runs alone on CPU 0; its CPU time (utime + stime from /proc/PID/stat)
is read over a fixed window.

- onvifcam gets the stream by RTSP ANNOUNCE/SETUP/RECORD (TCP interleaved), one AU per write.
- the peer, gst-rtsp-server (C, Debian's python3-gi, pinned to CPU 0 as well), serves one
  shared media per path, fed with the very same RTP packets over UDP. ``--peer repay``
  (default): ``udpsrc ! rtph264depay ! rtph264pay name=pay0 config-interval=-1``, the usual
  set-up; the payloader pushes one buffer list per NAL unit, so gst writes a whole frame per
  reader at once. ``--peer relay``: ``udpsrc name=pay0``, packets relayed untouched, but gst
  then sends every packet to every reader on its own (about 2.5x the CPU, and 40 ms
  Nagle/delayed-ACK stalls). gst has no GOP cache: its PLAY -> keyframe is up to one GOP (2 s).
- readers do DESCRIBE/SETUP/PLAY (RTP/AVP/TCP interleaved). Every reader parses ``$`` frames
  until its first complete keyframe AU (PLAY -> keyframe time), then only counts bytes; a
  sample of readers keeps parsing: RTP sequence gaps and the added latency of each AU.
- added latency: every AU carries a 24-byte SEI (user data unregistered, which decoders
  ignore) holding the AU's number, so it survives a depayload/repayload; the publisher notes
  when it sent the AU's last packet, the reader when the AU's marker packet arrived (same
  process, same monotonic clock).
- drops: onvifcam's "is behind ... dropping" log lines, sequence gaps on the sampled readers,
  readers that received under 90 % of the median reader's bytes in the window, and for the
  peer the datagrams its UDP sockets dropped (/proc/net/udp).

Loopback only, temp files only, bounded in time, cleans up every process it starts::

    python3 scripts/bench_fanout.py --readers 10,100,300 --cameras 50,200 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench_common import cpu_seconds, pin_and_use_uvloop, rtsp_record, stop_process

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onvifcam.media import h264, rtp  # noqa: E402

CACHE = Path("/tmp/onvifcam-bench-fanout")
GST_PYTHON = "/usr/bin/python3"
SERVER_CPU = 0
LOAD_CPU = 1
PT = 96
RING = 1024  # AUs of send times kept per publisher (40 s at 25 fps)
TAG_UUID = bytes.fromhex("6f6e7669 6663616d 2d62656e 63682d31".replace(" ", ""))
TAG_PLACEHOLDER = b"\x80\x80\x80\x80"
# SEI, user_data_unregistered (type 5), 20 bytes: UUID + AU number, then rbsp trailing bits
TAG_SEI = b"\x06\x05\x14" + TAG_UUID + TAG_PLACEHOLDER + b"\x80"
HANDSHAKE_TIMEOUT = 20.0
now = time.perf_counter

PROCS: list[subprocess.Popen[bytes]] = []


# --------------------------------------------------------------------------- helpers


def free_udp_ports(n: int) -> list[int]:
    """n UDP ports on 127.0.0.1 that are free right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def udp_drops(ports: list[int]) -> int:
    """Datagrams the kernel dropped on these local UDP ports (receive buffer full)."""
    want = {f"0100007F:{p:04X}" for p in ports}
    total = 0
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if len(cols) > 12 and cols[1] in want:
                total += int(cols[12])
    return total


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values, NaN when empty."""
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q / 100 * len(v)) - 1))]


def start_proc(cmd: list[str], out: Path, err: Path, cwd: Path, env: dict[str, str] | None = None):
    """Start a process in its own process group; stdout and stderr go to files."""
    with open(out, "wb") as o, open(err, "wb") as e:
        p = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=o,
            stderr=e,
            cwd=str(cwd),
            env=env,
            start_new_session=True,
        )
    PROCS.append(p)
    return p


def stop_proc(p: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal a process group we started, wait, then kill it."""
    stop_process(p, sig)
    with contextlib.suppress(ValueError):
        PROCS.remove(p)


def wait_ready(p: subprocess.Popen[bytes], out: Path, err: Path, prefix: str, timeout: float):
    """Wait for the line starting with prefix on stdout; its key=value tokens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in out.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return dict(t.split("=", 1) for t in line.split() if "=" in t)
        if p.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{prefix!r} not seen: {err.read_text(errors='replace')[-2000:]}")


# --------------------------------------------------------------------------- media


def encode_clip(name: str, size: str, kbit: int, seconds: int) -> Path:
    """A noisy test pattern, H.264 CBR-ish, IDR every 2 s, no B-frames; cached."""
    path = CACHE / f"{name}.h264"
    if path.exists() and path.stat().st_size > 0:
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"encoding {path} ({size}, {kbit} kbit/s, {seconds} s) ...", flush=True)
    tmp = path.with_suffix(".tmp")
    cmd = [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25", "-t", str(seconds),
        "-vf", "noise=alls=10:allf=t", "-c:v", "libx264", "-preset", "veryfast",
        "-b:v", f"{kbit}k", "-maxrate", f"{kbit}k", "-bufsize", f"{kbit // 2}k",
        "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-bf", "0",
        "-pix_fmt", "yuv420p", "-f", "h264", str(tmp),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=600)
    tmp.rename(path)
    return path


@dataclass
class Clip:
    """An H.264 clip as RTP payloads per access unit."""

    name: str
    fps: int
    payloads: list[list[bytes]]
    tags: list[tuple[int, int]]  # per AU: (payload index, offset) of the SEI's AU number
    sps: bytes
    pps: bytes

    @property
    def frames(self) -> int:
        return len(self.payloads)

    @property
    def duration(self) -> float:
        return self.frames / self.fps

    @property
    def mbit(self) -> float:
        size = sum(len(p) + 12 for au in self.payloads for p in au)
        return size * 8 / self.duration / 1e6

    def sdp(self) -> str:
        sprop = h264.sprop_parameter_sets(self.sps, self.pps)
        return (
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=bench\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=video 0 RTP/AVP {PT}\r\na=rtpmap:{PT} H264/90000\r\n"
            f"a=fmtp:{PT} packetization-mode=1;profile-level-id="
            f"{h264.profile_level_id(self.sps)};sprop-parameter-sets={sprop}\r\n"
            "a=control:trackID=0\r\n"
        )


def tag(g: int) -> bytes:
    """The AU number as 4 bytes with the top bit set: no zero bytes, no emulation prevention."""
    return bytes((0x80 | (g >> 21) & 0x7F, 0x80 | (g >> 14) & 0x7F, 0x80 | (g >> 7) & 0x7F,
                  0x80 | g & 0x7F))  # fmt: skip


def untag(b: bytes) -> int:
    return (b[0] & 0x7F) << 21 | (b[1] & 0x7F) << 14 | (b[2] & 0x7F) << 7 | b[3] & 0x7F


def load_clip(path: Path, fps: int = 25) -> Clip:
    """Access units via PyAV's H.264 parser, NAL units via h264.split_annexb, the tag SEI put
    before the first slice, packetised with onvifcam's RFC 6184 packetiser."""
    import av

    payloads: list[list[bytes]] = []
    tags: list[tuple[int, int]] = []
    sps = pps = b""
    with av.open(str(path), format="h264") as c:
        for pkt in c.demux(video=0):
            if pkt.size == 0:
                continue
            nals = [n for n in h264.split_annexb(bytes(pkt)) if n and n[0] & 0x1F != 9]
            for n in nals:
                if n[0] & 0x1F == 7 and not sps:
                    sps = n
                elif n[0] & 0x1F == 8 and not pps:
                    pps = n
            vcl = next(i for i, n in enumerate(nals) if n[0] & 0x1F in (1, 5))
            nals.insert(vcl, TAG_SEI)
            au = h264.packetize(nals, 1400)
            where = next((j, p.find(TAG_UUID)) for j, p in enumerate(au) if TAG_UUID in p)
            tags.append((where[0], where[1] + len(TAG_UUID)))
            payloads.append(au)
    if not payloads or not sps or not pps:
        raise RuntimeError(f"{path}: no H.264 access units with SPS/PPS")
    if not h264.payload_is_keyframe(payloads[0][0]):
        raise RuntimeError(f"{path}: does not start with a keyframe")
    return Clip(path.stem, fps, payloads, tags, sps, pps)


class Timeline:
    """RTP packets of the clip looped for ever: AU g is clip AU g % frames of loop g // frames,
    with continuous sequence numbers and timestamps. Loops are built once and shared by every
    publisher (the server rewrites SSRC, sequence and timestamp per stream anyway)."""

    def __init__(self, clip: Clip) -> None:
        self.clip = clip
        self.per_loop = sum(len(au) for au in clip.payloads)
        self.loops: dict[int, tuple[list[list[bytes]], list[bytes]]] = {}
        self.ssrc = 0x0BE4C400

    def build(self, k: int) -> None:
        if k in self.loops:
            return
        clip = self.clip
        seq = k * self.per_loop
        step = 90000 // clip.fps
        packets_l: list[list[bytes]] = []
        framed_l: list[bytes] = []
        for i, au in enumerate(clip.payloads):
            g = k * clip.frames + i
            ts = g * step
            pk = []
            last = len(au) - 1
            tag_j, tag_at = clip.tags[i]
            for j, payload in enumerate(au):
                if j == tag_j:
                    payload = payload[:tag_at] + tag(g) + payload[tag_at + 4 :]
                pk.append(rtp.build(PT, seq, ts, self.ssrc, payload, j == last))
                seq += 1
            packets_l.append(pk)
            framed_l.append(b"".join(b"$\x00" + len(p).to_bytes(2, "big") + p for p in pk))
        self.loops[k] = (packets_l, framed_l)

    def au(self, g: int) -> tuple[list[bytes], bytes]:
        k, i = divmod(g, self.clip.frames)
        if k not in self.loops:
            self.build(k)
        packets_l, framed_l = self.loops[k]
        return packets_l[i], framed_l[i]


# --------------------------------------------------------------------------- publishers


class Publisher:
    """Send times of the AUs, by AU number modulo RING."""

    def __init__(self) -> None:
        self.sent_g = [-1] * RING
        self.sent_t = [0.0] * RING
        self.sent = 0
        self.late = 0.0
        self.errors = 0

    def send(self, g: int, packets: list[bytes], framed: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class TcpPublisher(Publisher):
    """RTSP ANNOUNCE/SETUP/RECORD over TCP; each AU is one write of interleaved frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self.streams = (reader, writer)  # a StreamWriter closes its transport when collected
        self.transport: asyncio.Transport = writer.transport  # type: ignore[assignment]

    @classmethod
    async def connect(cls, port: int, path: str, sdp: str) -> TcpPublisher:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await rtsp_record(reader, writer, f"rtsp://127.0.0.1:{port}/{path}", sdp)
        return cls(reader, writer)

    def send(self, g: int, packets: list[bytes], framed: bytes) -> None:
        tx = self.transport
        if tx.is_closing():
            self.errors += 1
            return
        slot = g % RING
        self.sent_g[slot] = g
        self.sent_t[slot] = now()
        tx.write(framed)
        self.sent += len(framed)

    def close(self) -> None:
        self.transport.close()


class UdpPublisher(Publisher):
    """Plain RTP over UDP to the peer's udpsrc."""

    def __init__(self, sock: socket.socket, port: int) -> None:
        super().__init__()
        self.sock = sock
        self.addr = ("127.0.0.1", port)

    def send(self, g: int, packets: list[bytes], framed: bytes) -> None:
        sendto, addr = self.sock.sendto, self.addr
        last = len(packets) - 1
        try:
            for j, p in enumerate(packets):
                if j == last:
                    slot = g % RING
                    self.sent_g[slot] = g
                    self.sent_t[slot] = now()
                sendto(p, addr)
                self.sent += len(p)
        except OSError:
            self.errors += 1


async def pace(pubs: list[Publisher], tl: Timeline, state: Case) -> None:
    """Replay the timeline in real time to every publisher, phases spread over a frame."""
    fps = tl.clip.fps
    n = len(pubs)
    t0 = now() + 0.05
    g = 0
    while not state.stop:
        packets, framed = tl.au(g)
        base = t0 + g / fps
        for i, pub in enumerate(pubs):
            due = base + (i / n) / fps
            wait = due - now()
            if wait > 0.001:
                await asyncio.sleep(wait)
                if state.stop:
                    return
            else:
                late = -wait
                if late > pub.late and state.measuring:
                    pub.late = late
            pub.send(g, packets, framed)
        if g % tl.clip.frames == tl.clip.frames // 2:
            tl.build(g // tl.clip.frames + 1)  # ahead of time, not on the hot path
        g += 1
        if now() - base > 1.0 / fps:  # behind: let the readers run
            await asyncio.sleep(0)


# --------------------------------------------------------------------------- readers

HANDSHAKE, MEDIA, COUNT = 0, 1, 2


class Reader(asyncio.Protocol):
    """An RTSP/TCP reader: DESCRIBE, SETUP, PLAY, then ``$`` frames.

    Parses frames until the first complete keyframe AU (and for the whole run when sampled:
    sequence gaps, latency); afterwards it only counts bytes."""

    def __init__(self, state: Case, cam: int, url: str, sample: bool) -> None:
        self.case = state
        self.cam = cam
        self.url = url
        self.sample = sample
        self.transport: asyncio.Transport | None = None
        self.mode = HANDSHAKE
        self.step = ""
        self.rbuf = b""
        self.cseq = 0
        self.session = ""
        self.base = url
        self.bytes = 0
        self.early = 0
        self.w0 = 0
        self.w1 = 0
        self.t_play = 0.0
        self.t_key = -1.0
        self.mbuf = b""
        self.last_seq = -1
        self.gaps = 0
        self.au_key = False
        self.au_g = -1
        self.error = ""
        self.ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    # -- RTSP handshake
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._request("DESCRIBE", self.url, ["Accept: application/sdp"])

    def _request(self, method: str, uri: str, headers: list[str]) -> None:
        self.cseq += 1
        self.step = method
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self.cseq}", *headers]
        if self.session:
            lines.append(f"Session: {self.session}")
        if method == "PLAY":
            self.t_play = now()
        assert self.transport is not None
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def _fail(self, why: str) -> None:
        self.error = why
        if not self.ready.done():
            self.ready.set_result(why)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.error = f"closed during {self.step}: {exc}"
            self.ready.set_result(self.error)
        elif not self.case.stop and not self.error:
            self.error = f"connection lost: {exc}"

    def data_received(self, data: bytes) -> None:
        mode = self.mode
        if mode == COUNT:
            self.bytes += len(data)
        elif mode == MEDIA:
            self._media(data)
        else:
            self._rtsp(data)

    def _rtsp(self, data: bytes) -> None:
        self.rbuf += data
        while self.rbuf[:1] == b"$":  # media ahead of the PLAY reply (gst-rtsp-server does it)
            if len(self.rbuf) < 4:
                return
            end = 4 + int.from_bytes(self.rbuf[2:4], "big")
            if len(self.rbuf) < end:
                return
            self.early += end
            self.rbuf = self.rbuf[end:]
        end = self.rbuf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.rbuf[:end].decode("latin-1")
        m = re.search(r"^Content-Length:\s*(\d+)", head, re.M | re.I)
        clen = int(m.group(1)) if m else 0
        if len(self.rbuf) < end + 4 + clen:
            return
        body = self.rbuf[end + 4 : end + 4 + clen].decode("latin-1")
        rest = self.rbuf[end + 4 + clen :]
        self.rbuf = b""
        if self.mode == HANDSHAKE and self.step != "PLAY":
            self.rbuf = rest
            rest = b""
        status = head.split("\r\n", 1)[0]
        if not status.startswith("RTSP/1.0 200 "):
            self._fail(f"{self.step}: {status[:80]!r}")
            return
        m = re.search(r"^Session:\s*([^;\r\n]+)", head, re.M | re.I)
        if m:
            self.session = m.group(1).strip()
        if self.step == "DESCRIBE":
            m = re.search(r"^Content-Base:\s*(\S+)", head, re.M | re.I)
            self.base = (m.group(1) if m else self.url).rstrip("/")
            video = body.split("m=video", 1)[-1]
            m = re.search(r"^a=control:(\S+)", video, re.M)
            control = m.group(1) if m else ""
            if control.startswith("rtsp://"):
                uri = control
            elif control and control != "*":
                uri = f"{self.base}/{control}"
            else:
                uri = self.base
            self._request("SETUP", uri, ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"])
        elif self.step == "SETUP":
            self._request("PLAY", self.base + "/", ["Range: npt=0.000-"])
        elif self.step == "PLAY":
            self.mode = MEDIA
            self.ready.set_result("")
            if rest:
                self._media(rest)
        if self.mode == HANDSHAKE and self.rbuf:
            self._rtsp(b"")

    # -- media
    def _media(self, data: bytes) -> None:
        self.bytes += len(data)
        if self.mbuf:
            data = self.mbuf + data
            self.mbuf = b""
        n = len(data)
        pos = 0
        while pos + 4 <= n:
            if data[pos] != 36:
                self.error = f"lost $ framing at {self.bytes}"
                self.mode = COUNT
                return
            end = pos + 4 + ((data[pos + 2] << 8) | data[pos + 3])
            if end > n:
                break
            if data[pos + 1] == 0 and end - pos >= 16:
                self._rtp(data, pos + 4, end)
                if self.mode == COUNT:
                    return
            pos = end
        if pos < n:
            self.mbuf = data[pos:]

    def _rtp(self, data: bytes, s: int, e: int) -> None:
        b0 = data[s]
        b1 = data[s + 1]
        seq = (data[s + 2] << 8) | data[s + 3]
        last = self.last_seq
        if last >= 0 and seq != (last + 1) & 0xFFFF:
            self.gaps += (seq - last - 1) & 0xFFFF
        self.last_seq = seq
        if self.t_key < 0 and not self.au_key:  # does this AU have an IDR/SPS?
            p = s + 12 + 4 * (b0 & 0x0F)
            if b0 & 0x10 and p + 4 <= e:
                p += 4 + 4 * ((data[p + 2] << 8) | data[p + 3])
            self.au_key = p < e and h264.payload_is_keyframe(memoryview(data)[p:e])
        if self.sample and e - s < 2000:
            i = data.find(TAG_UUID, s, e)
            if i >= 0:
                self.au_g = untag(data[i + 16 : i + 20])
        if b1 & 0x80:
            t = now()
            if self.au_key and self.t_key < 0:
                self.t_key = t
                if not self.sample:
                    self.mode = COUNT
                    return
            st = self.case
            g = self.au_g
            self.au_g = -1
            if st.measuring and g >= 0:
                pub = st.pubs[self.cam]
                slot = g % RING
                if pub.sent_g[slot] == g:
                    st.latencies.append(t - pub.sent_t[slot])


# --------------------------------------------------------------------------- one case


@dataclass
class Case:
    """Shared state of one measured run."""

    pubs: list[Publisher] = field(default_factory=list)
    readers: list[Reader] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)
    measuring: bool = False
    stop: bool = False


@dataclass
class Result:
    server: str
    case: str
    cams: int
    readers: int
    ok_readers: int
    gbps: float
    cpu_pct: float
    cpu_per_gbit: float
    lg_pct: float
    log_drops: int | None
    gaps: int
    short: int
    lat50: float
    lat99: float
    key50: float
    key99: float
    nokey: int
    pub_late_ms: float
    threads: int
    in_drops: int | None
    errors: list[str]
    retries: list[str]

    @property
    def drops(self) -> int:
        failed = self.readers - self.ok_readers
        return (self.log_drops or 0) + (self.in_drops or 0) + self.gaps + self.short + failed


async def run_case(
    server: str,
    pid: int,
    port: int,
    paths: list[str],
    udp_ports: list[int] | None,
    tl: Timeline,
    per_cam: int,
    args: argparse.Namespace,
) -> Result:
    st = Case()
    loop = asyncio.get_running_loop()
    ncams = len(paths)
    label = f"{ncams}cam" if ncams > 1 else "1pub"
    udp_sock = None
    try:
        if udp_ports is None:
            sdp = tl.clip.sdp()
            sem = asyncio.Semaphore(32)

            async def pub_connect(path: str) -> TcpPublisher:
                async with sem:
                    return await asyncio.wait_for(
                        TcpPublisher.connect(port, path, sdp), HANDSHAKE_TIMEOUT
                    )

            st.pubs = list(await asyncio.gather(*(pub_connect(p) for p in paths)))
        else:
            udp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            st.pubs = [UdpPublisher(udp_sock, p) for p in udp_ports]
        pacer = asyncio.create_task(pace(st.pubs, tl, st))
        await asyncio.sleep(0.5)
        n_readers = ncams * per_cam
        every = max(1, n_readers // max(1, args.sample))
        sem = asyncio.Semaphore(32)

        async def read_connect(i: int) -> None:
            cam = i // per_cam
            url = f"rtsp://127.0.0.1:{port}/{paths[cam]}"
            for attempt in range(3):
                r = Reader(st, cam, url, sample=i % every == 0)
                async with sem:
                    try:
                        await loop.create_connection(lambda: r, "127.0.0.1", port)  # noqa: B023
                        why = await asyncio.wait_for(asyncio.shield(r.ready), HANDSHAKE_TIMEOUT)
                        if not why:
                            break
                        raise RuntimeError(why)
                    except (OSError, RuntimeError, TimeoutError) as exc:
                        r.error = r.error or f"{type(exc).__name__}: {exc}"
                        if r.transport is not None:
                            r.transport.close()
                if attempt < 2:
                    st.retries.append(r.error)
                    await asyncio.sleep(0.3)
            st.readers.append(r)

        # one reader per stream first (gst-rtsp-server prepares a shared media on first use)
        await asyncio.gather(*(read_connect(i) for i in range(0, n_readers, per_cam)))
        rest = [i for i in range(n_readers) if i % per_cam]
        await asyncio.gather(*(read_connect(i) for i in rest))
        await asyncio.sleep(args.warmup)
        for r in st.readers:
            r.w0 = r.bytes
        for p in st.pubs:
            p.late = 0.0
        me = os.getpid()
        c0, l0, t0 = cpu_seconds(pid), cpu_seconds(me), now()
        st.measuring = True
        await asyncio.sleep(args.seconds)
        st.measuring = False
        c1, l1, t1 = cpu_seconds(pid), cpu_seconds(me), now()
        for r in st.readers:
            r.w1 = r.bytes
        nthreads = threads(pid)
        in_drops = udp_drops(udp_ports) if udp_ports is not None else None
        st.stop = True
        await pacer
    finally:
        st.stop = True
        for r in st.readers:
            if r.transport is not None:
                r.transport.close()
        for p in st.pubs:
            p.close()
        if udp_sock is not None:
            udp_sock.close()
        await asyncio.sleep(0.2)
    span = t1 - t0
    ok = [r for r in st.readers if r.ready.done() and not r.ready.result()]
    errors = sorted({r.error for r in st.readers if r.error})
    bits = sum(r.w1 - r.w0 for r in ok) * 8
    cpu = c1 - c0
    per = sorted(r.w1 - r.w0 for r in ok)
    median = per[len(per) // 2] if per else 0
    short = sum(1 for r in ok if r.w1 - r.w0 < 0.9 * median)
    keys = [r.t_key - r.t_play for r in ok if r.t_key >= 0]
    return Result(
        server=server,
        case=label,
        cams=ncams,
        readers=n_readers,
        ok_readers=len(ok),
        gbps=bits / span / 1e9,
        cpu_pct=100 * cpu / span,
        cpu_per_gbit=cpu / (bits / 1e9) if bits else float("nan"),
        lg_pct=100 * (l1 - l0) / span,
        log_drops=None,
        gaps=sum(r.gaps for r in ok if r.sample),
        short=short,
        lat50=1000 * pct(st.latencies, 50),
        lat99=1000 * pct(st.latencies, 99),
        key50=1000 * pct(keys, 50),
        key99=1000 * pct(keys, 99),
        nokey=len(ok) - len(keys),
        pub_late_ms=1000 * max((p.late for p in st.pubs), default=0.0),
        threads=nthreads,
        in_drops=in_drops,
        errors=errors,
        retries=st.retries,
    )


# --------------------------------------------------------------------------- servers

ONVIFCAM_TOML = """\
[server]
host = "127.0.0.1"
rtsp_port = 0
rtmp_port = 0
http_port = 0
log_level = "info"
[rtsp]
rtp_port = 0
udp = false
multicast = false
http_tunnel = false
[rtmp]
enabled = false
[onvif]
enabled = false
[limits]
max_connections = 4096
per_ip_rate = 100000.0
per_ip_burst = 100000
"""

PEER_PY = r"""
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

Gst.init(None)
srv = GstRtspServer.RTSPServer()
srv.set_address("127.0.0.1")
srv.set_service("0")
srv.set_backlog(1024)
# DESCRIBE of a repayloaded media blocks its client thread until an IDR (up to one GOP) has
# gone through; with the default single thread, N mounts would prepare one after the other.
srv.get_thread_pool().set_max_threads(max(1, min(64, len(sys.argv) - 2)))
mounts = srv.get_mount_points()
CAPS = "application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload=96"
mode = sys.argv[1]
for spec in sys.argv[2:]:
    path, port = spec.split("=")
    f = GstRtspServer.RTSPMediaFactory()
    src = f'udpsrc address=127.0.0.1 port={port} buffer-size=4194304 caps="{CAPS}"'
    if mode == "relay":
        f.set_launch(f"( {src} name=pay0 )")
    else:
        f.set_launch(f"( {src} ! rtph264depay ! rtph264pay name=pay0 pt=96 config-interval=-1 )")
    f.set_shared(True)
    mounts.add_factory("/" + path, f)
srv.attach(None)
print(f"peer ready rtsp_port={srv.get_bound_port()}", flush=True)
GLib.MainLoop().run()
"""


@contextlib.contextmanager
def onvifcam_server(tmp: Path, root: Path, profile: str = ""):
    d = Path(tempfile.mkdtemp(prefix="onvifcam-", dir=tmp))
    cfg = d / "config.toml"
    cfg.write_text(ONVIFCAM_TOML)
    out, err = d / "stdout", d / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(root)}
    prof = ["-m", "cProfile", "-o", profile] if profile else []
    cmd = ["taskset", "-c", str(SERVER_CPU), sys.executable, *prof, "-m", "onvifcam", "serve"]
    cmd += ["--config", str(cfg), "--state-dir", str(d / "state"), "--log-level", "info"]
    p = start_proc(cmd, out, err, root, env)
    try:
        info = wait_ready(p, out, err, "onvifcam ready", 30)
        yield p.pid, int(info["rtsp_port"]), err
    finally:
        stop_proc(p)
        text = err.read_text(errors="replace")
        if "Traceback" in text:
            print(f"  ! onvifcam logged a traceback, see {err}", flush=True)


@contextlib.contextmanager
def peer_server(tmp: Path, mounts: list[tuple[str, int]], mode: str):
    d = Path(tempfile.mkdtemp(prefix="gst-", dir=tmp))
    script = d / "peer.py"
    script.write_text(PEER_PY)
    out, err = d / "stdout", d / "stderr"
    cmd = ["taskset", "-c", str(SERVER_CPU), GST_PYTHON, str(script), mode]
    cmd += [f"{path}={port}" for path, port in mounts]
    p = start_proc(cmd, out, err, d)
    try:
        info = wait_ready(p, out, err, "peer ready", 30)
        yield p.pid, int(info["rtsp_port"])
    finally:
        stop_proc(p)


def peer_available() -> str:
    """Empty when the gst-rtsp-server peer can run, else why not."""
    if not os.path.exists(GST_PYTHON):
        return f"{GST_PYTHON} not found"
    r = subprocess.run(
        [GST_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
        capture_output=True,
        text=True,
    )
    return "" if r.returncode == 0 else "python3-gi / gir1.2-gst-rtsp-server-1.0 missing"


# --------------------------------------------------------------------------- main


def measure(
    server: str, tmp: Path, tl: Timeline, ncams: int, per_cam: int, args: argparse.Namespace
) -> Result:
    paths = [f"bench/cam{i}" for i in range(ncams)]
    timeout = 60 + 3 * args.seconds + ncams * per_cam * 0.2
    if server == "onvifcam":
        prof = f"{args.profile}.{ncams}x{per_cam}" if args.profile else ""
        with onvifcam_server(tmp, Path(args.server_root), prof) as (pid, port, log_path):
            coro = run_case(server, pid, port, paths, None, tl, per_cam, args)
            r = asyncio.run(asyncio.wait_for(coro, timeout))
            r.log_drops = log_path.read_text(errors="replace").count(" is behind (")
            return r
    udp = free_udp_ports(ncams)
    with peer_server(tmp, list(zip(paths, udp, strict=True)), args.peer) as (pid, port):
        coro = run_case(server, pid, port, paths, udp, tl, per_cam, args)
        return asyncio.run(asyncio.wait_for(coro, timeout))


HEADER = (
    f"{'server':9} {'case':6} {'readers':>7} {'Gbit/s':>7} {'CPU%':>6} {'CPU-s/Gbit':>10} "
    f"{'LG%':>4} {'drops':>13} {'lat p50/p99 ms':>14} {'PLAY->key p50/p99 ms':>20}"
)


def row(r: Result) -> str:
    logd = "-" if r.log_drops is None else str(r.log_drops)
    drops = f"{logd}/{r.gaps}/{r.short}"
    if r.in_drops:
        drops += f" U{r.in_drops}"
    if r.ok_readers < r.readers:
        drops += f" F{r.readers - r.ok_readers}"
    key = f"{r.key50:.1f}/{r.key99:.1f}"
    if r.nokey:
        key += f" !{r.nokey}"
    return (
        f"{r.server:9} {r.case:6} {r.readers:>7} {r.gbps:>7.3f} {r.cpu_pct:>6.1f} "
        f"{r.cpu_per_gbit:>10.3f} {r.lg_pct:>4.0f} {drops:>13} "
        f"{f'{r.lat50:.2f}/{r.lat99:.2f}':>14} {key:>20}"
    )


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()] if text else []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readers", default="10,100,300", help="reader counts of one 4 Mbit/s stream")
    ap.add_argument("--cameras", default="50,200", help="camera counts (2 Mbit/s, 2 readers each)")
    ap.add_argument("--readers-per-camera", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    ap.add_argument("--warmup", type=float, default=2.0, help="after the last reader joined")
    ap.add_argument("--sample", type=int, default=20, help="readers that parse every packet")
    ap.add_argument("--no-peer", action="store_true", help="skip gst-rtsp-server")
    ap.add_argument("--no-onvifcam", action="store_true", help="only run the peer")
    ap.add_argument("--peer", choices=["repay", "relay"], default="repay")
    ap.add_argument("--no-camera-peer", action="store_true", help="skip gst for the camera case")
    ap.add_argument("--max-minutes", type=float, default=15.0, help="stop starting new runs after")
    ap.add_argument("--server-root", default=str(ROOT), help="onvifcam source tree to run")
    ap.add_argument("--profile", metavar="PREFIX", help="run onvifcam under cProfile")
    args = ap.parse_args()
    readers, cameras = ints(args.readers), ints(args.cameras)
    if max(readers + cameras + [0]) > 1000:
        ap.error("at most 1000 readers / cameras")
    if os.cpu_count() and os.cpu_count() < 2:  # type: ignore[operator]
        ap.error("needs 2 CPUs (server on CPU 0, load generator on CPU 1)")
    pin_and_use_uvloop(LOAD_CPU)
    started = time.monotonic()
    why_no_peer = "--no-peer" if args.no_peer else peer_available()
    servers = ([] if args.no_onvifcam else ["onvifcam"]) + ([] if why_no_peer else ["gst"])
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results: list[Result] = []
    try:
        with tempfile.TemporaryDirectory(prefix="onvifcam-bench-fanout-") as d:
            tmp = Path(d)
            jobs: list[tuple[str, Timeline, int, int]] = []
            if readers:
                clip = load_clip(encode_clip("1080p25_4M", "1920x1080", 4000, 20))
                tl = Timeline(clip)
                print(f"clip {clip.name}: {clip.duration:.0f} s, {clip.mbit:.2f} Mbit/s RTP")
                jobs += [(s, tl, 1, n) for n in readers for s in servers]
            if cameras:
                clip2 = load_clip(encode_clip("720p25_2M", "1280x720", 2000, 20))
                tl2 = Timeline(clip2)
                print(f"clip {clip2.name}: {clip2.duration:.0f} s, {clip2.mbit:.2f} Mbit/s RTP")
                cam_servers = [s for s in servers if s == "onvifcam" or not args.no_camera_peer]
                per = args.readers_per_camera
                jobs += [(s, tl2, n, per) for n in cameras for s in cam_servers]
            for t in {id(j[1]): j[1] for j in jobs}.values():
                t.build(0)
                t.build(1)
            for server, tl_, ncams, per_cam in jobs:
                if time.monotonic() - started > 60 * args.max_minutes:
                    print(f"time budget spent; skipped {server} {ncams}x{per_cam}", flush=True)
                    continue
                try:
                    r = measure(server, tmp, tl_, ncams, per_cam, args)
                except Exception as exc:  # report and carry on with the next run
                    print(f"  ! {server} {ncams}x{per_cam}: {type(exc).__name__}: {exc}")
                    continue
                results.append(r)
                print(row(r), f"| load {os.getloadavg()[0]:.1f} threads {r.threads}", flush=True)
                for e in r.errors[:3]:
                    print(f"    reader error: {e}")
                if r.retries:
                    print(f"    {len(r.retries)} handshakes retried, e.g. {r.retries[0]}")
                if r.pub_late_ms > 20:
                    print(f"    publisher fell {r.pub_late_ms:.0f} ms behind (load generator busy)")
    finally:
        for p in list(PROCS):
            stop_proc(p, signal.SIGKILL)
    print()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    took = time.monotonic() - started
    print(f"load average after: {load}; took {took:.0f} s; peer: {why_no_peer or 'gst (repay)'}")
    print(HEADER)
    for r in results:
        print(row(r))
    print(
        "drops = server-log drop events / RTP seq gaps on sampled readers / readers under 90% of"
        " the median bytes (F = failed handshakes); LG% = load generator CPU (>90: LG-bound);"
        " PLAY->key '!n' = readers with no keyframe yet"
    )
    summary(results)
    return 0


def summary(results: list[Result]) -> None:
    """One line per target of the issue."""

    def verdict(ok: bool | None) -> str:
        return "n/a " if ok is None else ("PASS" if ok else "FAIL")

    on = {r.readers: r for r in results if r.server == "onvifcam" and r.case == "1pub"}
    gst = {r.readers: r for r in results if r.server == "gst" and r.case == "1pub"}
    cams = {r.cams: r for r in results if r.server == "onvifcam" and r.case != "1pub"}
    print("\ntargets (onvifcam):")
    big = [r for n, r in on.items() if n >= 300]
    ok = all(r.cpu_pct < 100 and r.drops == 0 for r in big) if big else None
    top = max(on.values(), key=lambda r: r.readers, default=None)
    extra = ""
    if top is not None and top.cpu_pct > 0:
        per_core = int(top.readers * 100 / top.cpu_pct)
        extra = f"; ~{per_core} readers/core if linear from N={top.readers}"
    got = ", ".join(f"N={r.readers} {r.cpu_pct:.1f}% drops {r.drops}" for r in big)
    print(f"  {verdict(ok)} 300+ readers of 4 Mbit/s on one core, zero drops: {got}{extra}")
    r100 = on.get(100)
    got = f"{r100.lat99:.2f} ms" if r100 else "not run"
    ok = None if r100 is None else r100.lat99 < 10
    print(f"  {verdict(ok)} p99 added latency < 10 ms at 100 readers: {got}")
    keys = [r.key99 for r in on.values()] + [r.key99 for r in cams.values()]
    nokey = sum(r.nokey for r in on.values()) + sum(r.nokey for r in cams.values())
    ok = (max(keys) < 50 and nokey == 0) if keys else None
    print(
        f"  {verdict(ok)} first keyframe within 50 ms of PLAY: worst p99 "
        f"{max(keys, default=float('nan')):.1f} ms, {nokey} readers without one"
    )
    c200 = [r for n, r in cams.items() if n >= 200]
    ok = all(r.cpu_pct < 100 and r.drops == 0 for r in c200) if c200 else None
    got = ", ".join(f"{r.cams} cams {r.cpu_pct:.1f}% drops {r.drops}" for r in c200)
    print(f"  {verdict(ok)} 200 cameras x 2 Mbit/s x 2 readers on one core: {got}")
    gcams = {r.cams: r for r in results if r.server == "gst" and r.case != "1pub"}
    pairs = [(f"N={n}", on[n], gst[n]) for n in on if n in gst]
    pairs += [(f"{n}cams", cams[n], gcams[n]) for n in cams if n in gcams]
    ok = all(a.cpu_per_gbit < b.cpu_per_gbit for _n, a, b in pairs) if pairs else None
    got = ", ".join(f"{n} {a.cpu_per_gbit:.3f} vs {b.cpu_per_gbit:.3f}" for n, a, b in pairs)
    print(f"  {verdict(ok)} CPU-s per delivered Gbit below gst-rtsp-server's: {got}")
    if any(r.lg_pct > 90 for r in results):
        print("  ! the load generator used >90% of its core in some runs: those are LG-bound")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        for proc in list(PROCS):
            stop_proc(proc, signal.SIGKILL)
        sys.exit(130)
