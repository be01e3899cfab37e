"""Connection slots, budgets and buffers under hostile clients, against a real server.

Hostile clients are raw sockets bound to 127.0.0.2 (the whole 127/8 is local), with
``exempt_networks = []`` so loopback gets no exemption; real ffmpeg publishers and readers
(from 127.0.0.1) check that the cameras' users are not locked out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from onvifcam.rtmp import chunk
from onvifcam.rtmp.chunk import ChunkParser, ChunkWriter
from onvifcam.rtmp.handshake import ClientHandshake
from tests.helpers import (
    FFPROBE,
    ServerProc,
    ffmpeg_push,
    ffmpeg_read,
    running,
    status_of,
    wait_online,
)

pytestmark = pytest.mark.interop

HOSTILE = "127.0.0.2"
OPTIONS = b"OPTIONS * RTSP/1.0\r\nCSeq: 3\r\n\r\n"


def _config(*limits: str) -> str:
    return "[limits]\nexempt_networks = []\n" + "\n".join(limits) + "\n"


@contextlib.contextmanager
def _server(*limits: str) -> Iterator[ServerProc]:
    srv = ServerProc(config=_config(*limits)).start()
    try:
        yield srv
    finally:
        srv.stop()


def _connect(port: int, source: str = HOSTILE, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout, source_address=(source, 0))


def _read_reply(s: socket.socket) -> bytes:
    """One response head (and what follows in the same reads) or b"" if closed."""
    out = b""
    while b"\r\n\r\n" not in out:
        data = s.recv(65536)
        if not data:
            break
        out += data
    return out


def _exchange(port: int, data: bytes, source: str = HOSTILE) -> bytes:
    with _connect(port, source) as s:
        s.sendall(data)
        return _read_reply(s)


def _until(cond: collections.abc.Callable[[], bool], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def _header(reply: bytes, name: str) -> str:
    m = re.search(rb"(?im)^" + name.encode() + rb":\s*(.*?)\r$", reply)
    return m.group(1).decode() if m else ""


# --------------------------------------------------------------------------- slowloris


def test_dribbled_request_is_cut_off_after_the_deadline_with_one_log_line() -> None:
    with _server("request_timeout = 2.0") as srv:
        s = _connect(srv.rtsp_port)
        s.settimeout(0.25)
        request = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: " + b"x" * 4000
        got = b""
        closed = False
        give_up = time.monotonic() + 40  # a guard only: each byte used to reset the idle timer
        for byte in request:
            if time.monotonic() > give_up:
                break
            try:
                s.send(bytes((byte,)))
                data = s.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
            got += data
            if not data:
                closed = True
                break
        s.close()
        log = srv.log()
    assert closed and got.startswith(b"RTSP/1.0 408 Request Timeout"), got
    lines = [line for line in log.splitlines() if "did not complete its request" in line]
    assert len(lines) == 1, lines
    assert "within 2 s ([limits] request_timeout)" in lines[0] and HOSTILE in lines[0]


class Dribblers:
    """``n`` clients from one address that each keep a connection open by sending one
    byte of an endless request every half second, and reconnect when cut off."""

    def __init__(self, port: int, n: int) -> None:
        self.port = port
        self.n = n
        self.statuses: collections.Counter[int] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Dribblers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        await asyncio.gather(*(self._one() for _ in range(self.n)))

    async def _one(self) -> None:
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(HOSTILE, 0)
                )
            except OSError:
                await asyncio.sleep(0.2)
                continue
            try:
                await self._dribble(reader, writer)
            except OSError:
                pass
            finally:
                writer.close()
            await asyncio.sleep(0.1)

    async def _dribble(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = b"DESCRIBE rtsp://127.0.0.1/x RTSP/1.0\r\nCSeq: 1\r\nX-Pad: " + b"y" * 100000
        for byte in request:
            if self._stop.is_set():
                return
            writer.write(bytes((byte,)))
            try:
                data = await asyncio.wait_for(reader.read(4096), 0.5)
            except TimeoutError:
                continue
            if data.startswith(b"RTSP/1.0 "):
                self.statuses[int(data[9:12])] += 1
            return  # answered or closed: the server cut us off


def test_300_dribblers_from_one_address_do_not_lock_out_a_publisher_and_reader() -> None:
    # max_connections = 256: before the request deadline and the per-address rules, 300
    # dribblers held every slot and the publisher got 503.
    limits = ("max_connections = 256", "request_timeout = 3.0")
    with _server(*limits) as srv, Dribblers(srv.rtsp_port, 300) as attack:
        # Let the attack settle: until the first admitted dribblers are cut off at the
        # deadline (now), or 15 s (before: every slot taken by then, at 20 new per second).
        settle = time.monotonic() + 15
        _until(lambda: attack.statuses[408] >= 20 or time.monotonic() > settle)
        url = srv.url("limits/steady")
        with running(ffmpeg_push(url, frames=100)) as pub:
            wait_online(url)
            res = ffmpeg_read(url)
            assert pub.wait(60) == 0, pub.stderr.read() if pub.stderr else ""
        log = srv.log()
    assert res.video_frames == 100, res
    assert attack.statuses[408] >= 20 and attack.statuses[503] > 0, attack.statuses
    assert "did not complete its request within 3 s" in log
    assert "max_unauthenticated_per_ip" in log or "per_ip_rate" in log


# --------------------------------------------------------------------------- per address


def test_unauthenticated_connections_beyond_the_per_address_cap_must_authenticate() -> None:
    limits = ("max_unauthenticated_per_ip = 4", "probation_timeout = 1.0")
    with _server(*limits) as srv:
        port = srv.rtsp_port
        idle = [_connect(port) for _ in range(4)]  # the cap: these may wait
        late = _connect(port)  # fifth: on probation, and it never logs in
        proven = _connect(port)  # sixth: on probation, but its DESCRIBE passes auth
        proven.sendall(b"DESCRIBE rtsp://127.0.0.1/nothing RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        assert status_of(_read_reply(proven)) == 404  # no stream, but auth passed
        late.settimeout(20)
        refused = _read_reply(late)
        # The proven one outlives its probation; the first four are still there.
        proven.sendall(OPTIONS)
        assert status_of(_read_reply(proven)) == 200
        for s in idle:
            s.sendall(OPTIONS)
            assert status_of(_read_reply(s)) == 200
        for s in [*idle, late, proven]:
            s.close()
        log = srv.log()
    assert refused.startswith(
        b"RTSP/1.0 503 Service Unavailable: more than 4 connections from 127.0.0.2"
    ), refused
    assert _header(refused, "Retry-After").isdigit()
    assert "raise [limits] max_unauthenticated_per_ip" in log


def test_200_simultaneous_readers_from_one_address_all_get_200() -> None:
    # An NVR opening every stream at start-up, from one address without exemption: with
    # the old per-address connection rate limit 150 of these got 503 (or no reply).
    with _server() as srv:
        url = srv.url("limits/nvr")
        with running(ffmpeg_push(url, frames=2000)):
            wait_online(url)

            async def readers() -> list[int]:
                conns = await asyncio.gather(
                    *(
                        asyncio.open_connection("127.0.0.1", srv.rtsp_port, local_addr=(HOSTILE, 0))
                        for _ in range(200)
                    )
                )
                for _r, w in conns:  # all connected, then all ask
                    w.write(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\n\r\n".encode())
                heads = await asyncio.gather(
                    *(asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30) for r, _w in conns)
                )
                for _r, w in conns:
                    w.close()
                return [status_of(h) for h in heads]

            statuses = asyncio.run(readers())
    assert statuses == [200] * 200


def test_refusals_are_503_with_retry_after_and_name_the_key() -> None:
    limits = (
        "max_connections = 4",
        "per_ip_rate = 0.01",
        "per_ip_burst = 2",
        '[paths."locked"]',
        'read_user = "viewer"',
        'read_password = "secret"',
    )
    with _server(*limits) as srv:
        port = srv.rtsp_port
        # Per-address budget: connections that never log in spend it.
        replies = []
        for _ in range(20):
            replies.append(_exchange(port, OPTIONS))
            if status_of(replies[-1]) == 503:
                break
        budget = replies[-1]
        assert status_of(_exchange(port, OPTIONS, "127.0.0.3")) == 200  # its own budget
        # Failed logins spend it too, and an empty budget answers before checking.
        with _connect(port, "127.0.0.4") as s:
            bad = b"Authorization: Basic dmlld2VyOm5vcGU=\r\n"  # viewer:nope
            logins = []
            for n in range(3):
                s.sendall(
                    b"DESCRIBE rtsp://127.0.0.1/locked RTSP/1.0\r\nCSeq: %d\r\n%s\r\n" % (n, bad)
                )
                logins.append(_read_reply(s))
        # The connection cap: a real ffmpeg reader and an RTMP publisher are refused.
        held = [_connect(port, "127.0.0.1") for _ in range(4)]
        time.sleep(0.5)  # let the server take them before the next one knocks
        probe = subprocess.run(
            [FFPROBE, "-v", "error", "-rtsp_transport", "tcp", srv.url("any")],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        with socket.create_connection(("127.0.0.1", int(srv.ports["rtmp_port"])), 10) as r:
            r.sendall(b"\x03" + bytes(1536))
            with contextlib.suppress(ConnectionResetError):
                assert r.recv(4096) == b""
        for s in held:
            s.close()
        log = srv.log()
    assert budget.startswith(b"RTSP/1.0 503 Service Unavailable: too many unauthenticated"), budget
    assert b"CSeq: 3\r\n" in budget and _header(budget, "Retry-After").isdigit()
    assert [status_of(r) for r in logins] == [401, 401, 503]
    assert "Retry-After: " in logins[2].decode()
    assert "503 Service Unavailable: server full" in probe.stderr, probe.stderr
    assert "raise [limits] per_ip_rate or per_ip_burst" in log
    assert re.search(
        r"rtsp: refused connection from 127\.0\.0\.1: server full.*max_connections", log
    )
    assert re.search(
        r"rtmp: refused connection from 127\.0\.0\.1: server full.*max_connections", log
    )


def test_a_client_that_never_reads_is_dropped_and_frees_its_slot() -> None:
    # Requests whose answers are never read pile up in the server; the server gives up on
    # the client, and since the goodbye cannot be delivered either, aborts the connection
    # instead of waiting for ever with the only slot taken.
    with _server("max_connections = 1", "reader_queue_bytes = 65536") as srv:
        port = srv.rtsp_port
        s = _connect(port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Not 2 s: a server that waits for a core that long is slow, not closed, and a
        # sender that gave up then had not queued enough answers for the check to fire.
        s.settimeout(20)
        burst = OPTIONS * 2000
        with contextlib.suppress(OSError):  # the server stops reading, then resets us
            for _ in range(200):
                s.sendall(burst)
        _until(lambda: "does not read its responses" in srv.log())
        replies: list[int] = []

        def slot_free() -> bool:
            replies.append(status_of(_exchange(port, OPTIONS, "127.0.0.1")))
            return replies[-1] == 200

        _until(slot_free, limit=30)
        s.close()
    assert replies[-1] == 200


# --------------------------------------------------------------------------- RTMP buffers


def _vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _rtmp_handshaken(port: int, source: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), 10, source_address=(source, 0))
    hs = ClientHandshake()
    s.sendall(hs.start())
    while not hs.done:
        data = s.recv(65536)
        assert data
        c2, _rest = hs.feed(data)
        if hs.done:
            s.sendall(c2)
    return s


def _first_chunk(csid: int, length: int, chunk_len: int) -> bytes:
    """A type-0 chunk starting a video message of ``length`` bytes: only ``chunk_len`` of it."""
    head = (
        bytes((csid,)) + bytes(3) + length.to_bytes(3, "big") + b"\x09" + (1).to_bytes(4, "little")
    )
    return head + bytes(chunk_len)


def _hostile_rtmp(
    port: int, chunk_size: int, length: int, source: str = HOSTILE
) -> tuple[socket.socket, str]:
    """Before any publish: a large chunk size, then the first chunk of 8 messages that never
    complete, then a ping. Returns the socket (kept open) and what the server did."""
    s = _rtmp_handshaken(port, source)
    w = ChunkWriter()
    data = w.message(2, chunk.SET_CHUNK_SIZE, 0, 0, chunk.set_chunk_size(chunk_size))
    for csid in range(4, 12):
        data += _first_chunk(csid, length, chunk_size)
    data += w.message(2, chunk.USER_CONTROL, 0, 0, chunk.user_control(chunk.PING_REQUEST, 77))
    try:
        s.sendall(data)
    except OSError:
        return s, "closed"
    parser = ChunkParser()
    s.settimeout(30)
    try:
        while True:
            got = s.recv(65536)
            if not got:
                return s, "closed"
            for m in parser.feed(got):
                if m.type_id == chunk.USER_CONTROL and m.payload[:2] == b"\x00\x07":
                    return s, "buffered all and answered the ping"
    except OSError:
        return s, "closed"


def test_unauthenticated_rtmp_connections_cannot_make_the_server_buffer() -> None:
    # 20 connections that never publish: 10 declare 4 MiB messages and send 1 MiB of each
    # of 8; 10 stay under the message limit (8 x 60 KB). Before the pre-publish bound the
    # server kept all of it: about 85 MiB more RSS. Now each is closed at its first
    # oversized header or once 64 KiB is held.
    with _server() as srv:
        assert srv.proc is not None
        port = int(srv.ports["rtmp_port"])
        _hostile_rtmp(port, 4096, 100)[0].close()  # warm up the code paths
        before = _vm_rss_kib(srv.proc.pid)
        results = [_hostile_rtmp(port, 1 << 20, 4 << 20) for _ in range(10)]
        results += [_hostile_rtmp(port, 60000, 65000, "127.0.0.3") for _ in range(10)]
        after = _vm_rss_kib(srv.proc.pid)
        for s, _what in results:
            s.close()
        log = srv.log()
    growth_mib = (after - before) / 1024
    print(f"server RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB (+{growth_mib:.1f})")
    assert [what for _s, what in results] == ["closed"] * 20
    assert growth_mib < 8, f"RSS grew by {growth_mib:.1f} MiB"
    assert "exceeds the limit of 65536" in log and "held for incomplete messages" in log
