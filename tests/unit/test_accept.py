"""The RTSP listener accepts every waiting connection in one turn of the event loop, with
uvloop too (libuv accepts one connection per turn, so on a loaded server each connection of
a burst waited a whole turn: 1000 readers of a 500-camera fleet took minutes to connect)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from onvifcam import accept
from onvifcam.config import Config, RtspConfig
from onvifcam.limits import ConnectionLimiter
from onvifcam.media.stream import StreamRegistry
from onvifcam.rtsp.server import RtspServer

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
