"""The RTSP, RTMP and HTTP listeners accept every waiting connection in one turn of the event
loop, with uvloop too (libuv accepts one connection per turn, so on a loaded server each
connection of a burst waited a whole turn: 1000 readers of a 500-camera fleet took minutes to
connect, and an NVR adding 500 cameras waited as long for their ONVIF endpoints)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiohttp import web

from onvifcam import accept
from onvifcam.config import Config, HttpConfig, RtspConfig
from onvifcam.limits import ConnectionLimiter
from onvifcam.media.stream import StreamRegistry
from onvifcam.rtmp.handshake import RTMP_VERSION
from onvifcam.rtmp.server import RtmpServer
from onvifcam.rtsp.server import RtspServer
from onvifcam.web.listener import HttpGate, Listener

BURST = 64


def _runners() -> list[Any]:
    runners: list[Any] = [pytest.param(asyncio.run, id="asyncio")]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the test extra
        return runners
    return [*runners, pytest.param(uvloop.run, id="uvloop")]


@pytest.mark.parametrize("run", _runners())
def test_a_burst_of_connections_is_accepted_in_one_turn(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    async def scenario() -> None:
        cfg = dataclasses.replace(Config(), rtsp=RtspConfig(udp=False))
        registry = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15.0, max_streams=4)
        rtsp = RtspServer(cfg, registry, ConnectionLimiter(4 * BURST, 0.0, 4 * BURST))
        await rtsp.start("127.0.0.1", 0)
        clients: list[socket.socket] = []
        try:
            # the kernel completes the handshakes; the connections wait in the accept queue
            for _ in range(BURST):
                clients.append(socket.create_connection(("127.0.0.1", rtsp.port), timeout=5))
            for _ in range(6):  # a few turns: wake-up, accept, connection_made
                await asyncio.sleep(0)
            assert len(rtsp.connections) == BURST
            # and they are served: OPTIONS on the last one
            clients[-1].sendall(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
            reply = await asyncio.get_running_loop().run_in_executor(None, clients[-1].recv, 4096)
            assert reply.startswith(b"RTSP/1.0 200 OK"), reply
        finally:
            for c in clients:
                c.close()
            await rtsp.stop()

    run(scenario())


def test_the_listener_binds_like_create_server_and_closes() -> None:
    async def scenario() -> None:
        srv = await accept.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        with pytest.raises(OSError):  # the port is taken: the caller's binding() explains
            await accept.create_server(asyncio.Protocol, "127.0.0.1", port)
        srv.close()
        await srv.wait_closed()
        again = await accept.create_server(asyncio.Protocol, "127.0.0.1", port)
        again.close()

    asyncio.run(scenario())


def _burst(port: int) -> list[socket.socket]:
    """BURST connections the kernel completes at once; they wait in the accept queue."""
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(BURST)]


async def _recv(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    out = b""
    while len(out) < n:
        data = await loop.run_in_executor(None, sock.recv, n - len(out))
        if not data:
            break
        out += data
    return out


@pytest.mark.parametrize("run", _runners())
def test_a_burst_of_rtmp_connections_is_accepted_in_one_turn_and_served(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    async def scenario() -> None:
        cfg = dataclasses.replace(
            Config(), server=dataclasses.replace(Config().server, host="127.0.0.1", rtmp_port=0)
        )
        registry = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15.0, max_streams=4)
        rtmp = RtmpServer(cfg, registry, ConnectionLimiter(4 * BURST, 0.0, 4 * BURST))
        await rtmp.start()
        clients: list[socket.socket] = []
        try:
            clients = _burst(rtmp.port)
            for _ in range(6):  # a few turns: wake-up, accept, connection_made
                await asyncio.sleep(0)
            assert len(rtmp.connections) == BURST
            # and every one is served: C0+C1 in, S0+S1+S2 out
            for c in clients:
                c.sendall(bytes([RTMP_VERSION]) + bytes(1536))
            for c in clients:
                reply = await _recv(c, 1 + 2 * 1536)
                assert len(reply) == 1 + 2 * 1536 and reply[0] == RTMP_VERSION
        finally:
            for c in clients:
                c.close()
            await rtmp.stop()

    run(scenario())


@pytest.mark.parametrize("run", _runners())
def test_a_burst_of_http_connections_is_accepted_in_one_turn_and_served(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    async def scenario() -> None:
        async def hello(_request: web.Request) -> web.Response:
            return web.Response(text="hello")

        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        gate = HttpGate(HttpConfig(max_connections=4 * BURST, max_connections_per_ip=4 * BURST))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = Listener(sock, gate.factory(runner))
        await site.start()
        clients: list[socket.socket] = []
        try:
            clients = _burst(sock.getsockname()[1])
            # ACCEPT_BATCH per wake-up, then a few turns for their protocols: 4 rounds
            # (accepting one per turn, as uvloop alone does, would take 64 turns)
            turns = 0
            while gate.guard.open < BURST and turns < 32:
                await asyncio.sleep(0)
                turns += 1
            assert gate.guard.open == BURST
            assert site.accepted == BURST
            for c in clients:
                c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            for c in clients:
                reply = await _recv(c, 4096)
                assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"hello"), reply
        finally:
            for c in clients:
                c.close()
            await site.stop()
            await runner.cleanup()

    run(scenario())
