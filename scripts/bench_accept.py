#!/usr/bin/env python3
"""Accept benchmark: a burst of N connections (an NVR adding 500 cameras) to the RTMP and the
HTTP port of a busy server, and how fast they are accepted and served.

The server runs on CPU 0 with a ``--cameras`` file-loop fleet being read (``--readers`` raw
RTSP readers) so its event loop turns take a while, as on a loaded server; the load generator
(this process, uvloop, CPU 1) opens N connections at once and waits for each one's first
answer: S0+S1+S2 for an RTMP C0+C1, the status line for an HTTP ``GET /``. It prints the time
to the last answer and the rate (connections/s). ``--root`` runs the server from another
checkout, e.g. ``/work/main`` for the figures before the listeners accepted in batches.

Loopback only, temp files only; every process it starts is stopped::

    python3 scripts/bench_accept.py --burst 500 --cameras 100 --readers 100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

import bench_sources
from bench_common import pin_and_use_uvloop

RTMP_C0C1 = bytes([3]) + bytes(1536)


async def one(port: int, hello: bytes, want: int) -> float:
    """Connect, send ``hello``, wait for ``want`` bytes; seconds from the start."""
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(hello)
        got = 0
        while got < want:
            data = await reader.read(65536)
            if not data:
                break
            got += len(data)
        return time.monotonic() - t0
    finally:
        writer.close()


async def burst(what: str, port: int, n: int) -> None:
    if what == "rtmp":
        hello, want = RTMP_C0C1, 1 + 2 * 1536
    else:
        hello, want = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 12
    t0 = time.monotonic()
    results = await asyncio.wait_for(
        asyncio.gather(*(one(port, hello, want) for _ in range(n)), return_exceptions=True), 300
    )
    took = time.monotonic() - t0
    ok = sorted(r for r in results if isinstance(r, float))
    failed = n - len(ok)
    median = ok[len(ok) // 2] if ok else 0.0
    print(
        f"    {what}: {len(ok)} of {n} answered in {took:.2f} s ({len(ok) / took:.0f} "
        f"connections/s; median {median * 1000:.0f} ms, last {ok[-1] * 1000 if ok else 0:.0f} "
        f"ms; {failed} failed)",
        flush=True,
    )


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="onvifcam-bench-accept-") as d:
        tmp = Path(d)
        clip = bench_sources.make_clip(tmp)
        config = (
            f'[[fleets]]\nname = "bench"\ncount = {args.cameras}\npath = "bench/{{n}}"\n'
            f'source = "file://{clip}"\n[http]\nmax_connections = {4 * args.burst}\n'
            f"max_connections_per_ip = {4 * args.burst}\n"
        )
        p, info, _log = bench_sources.start_server(tmp / "server", config)
        try:
            loop = asyncio.get_running_loop()
            rtsp = int(info["rtsp_port"])
            readers = []
            for i in range(args.readers):
                url = f"rtsp://127.0.0.1:{rtsp}/bench/{1 + i % args.cameras}"
                _t, r = await loop.create_connection(
                    lambda u=url: bench_sources.Reader(u), "127.0.0.1", rtsp
                )
                readers.append(r)
            await asyncio.wait_for(asyncio.gather(*(r.ready for r in readers)), 120)
            await asyncio.sleep(3)
            print(
                f"accept burst of {args.burst} connections, server from {bench_sources.ROOT} "
                f"({args.cameras} file-loop cameras, {args.readers} readers):",
                flush=True,
            )
            await burst("rtmp", int(info["rtmp_port"]), args.burst)
            await asyncio.sleep(2)
            await burst("http", int(info["http_port"]), args.burst)
            for r in readers:
                if r.transport is not None:
                    r.transport.close()
        finally:
            bench_sources.stop(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--burst", type=int, default=500, help="connections opened at once")
    ap.add_argument("--cameras", type=int, default=100, help="file-loop cameras (load)")
    ap.add_argument("--readers", type=int, default=100, help="RTSP readers of them (load)")
    ap.add_argument("--root", default="", help="run the server from this checkout")
    args = ap.parse_args()
    if args.root:
        bench_sources.ROOT = Path(args.root).resolve()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    pin_and_use_uvloop(bench_sources.LOAD_CPU)
    with bench_sources.cleanup():
        asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    socket.setdefaulttimeout(None)
    sys.exit(main())
