#!/usr/bin/env python3
"""ONVIF benchmark: SOAP throughput with WS-Security, GetProfiles latency with many cameras,
snapshot latency on a 1080p stream.

The server runs as a real ``onvifcam serve`` process pinned to CPU 0 (``taskset``); this
process (the load generator, a minimal keep-alive HTTP/1.1 client on raw asyncio streams)
and ffmpeg are pinned to CPU 1. Every request body is built before the clock starts, each
with its own WS-Security nonce and PasswordDigest, so the server does the full work: parse,
verify the digest, check the nonce cache, build and serialise the response.

1. ``uri``: GetStreamUri requests per second with WS-Security (target 2000+ on one core),
   and the server's CPU use over the window.
2. ``profiles``: GetProfiles p50/p99 latency with 100 cameras defined, round-robin over
   their own ports, one request at a time.
3. ``snapshot``: GetSnapshotUri's URL fetched while ffmpeg publishes 1080p25 (1 s GOP);
   p50/p99 over all fetches and over the ones that decoded a new keyframe (target p50 under
   100 ms).

Loopback only, temp files only, bounded in time and count, cleans up what it starts::

    python3 scripts/bench_onvif.py            # all three
    python3 scripts/bench_onvif.py uri --seconds 10 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (
    LOOPBACK_CONFIG,
    Conn,
    cameras,
    cpu_seconds,
    http_request,
    onvifcam_server,
    pct,
    soap,
)

SERVER_CPU = 0
PREFIX = "onvifcam-bench-onvif-"
LOAD_CPU = 1
TRT = 'xmlns="http://www.onvif.org/ver10/media/wsdl"'
TT = "http://www.onvif.org/ver10/schema"

BASE_CONFIG = (
    LOOPBACK_CONFIG
    + """max_nonces = 200000           # one user signs every request: let it hold them all
nonce_rate_per_user = 1000.0
"""
)


# --------------------------------------------------------------------------- benches


CAMERA = (
    '\n[[cameras]]\nname = "{name}"\npath = "{path}"\nusername = "admin"\npassword = "secret"\n'
)


def bench_uri(seconds: float, concurrency: int) -> dict[str, float]:
    """GetStreamUri requests per second with WS-Security."""
    cfg = BASE_CONFIG + CAMERA.format(name="Lobby", path="lobby")
    body = (
        f'<GetStreamUri {TRT}><StreamSetup><Stream xmlns="{TT}">RTP-Unicast</Stream>'
        f'<Transport xmlns="{TT}"><Protocol>RTSP</Protocol></Transport></StreamSetup>'
        "<ProfileToken>Profile_1</ProfileToken></GetStreamUri>"
    )
    with onvifcam_server(cfg, SERVER_CPU, PREFIX) as (proc, ports):
        port = int(cameras(ports["http_port"])["Lobby"]["port"])  # type: ignore[arg-type]
        budget = int(seconds * 8000) + 1000
        print(f"uri: building {budget} signed requests ...", flush=True)
        reqs = [http_request(port, "/onvif/media_service", soap(body)) for _ in range(budget)]

        async def run() -> tuple[int, int, float, float]:
            conns = [await Conn.open(port) for _ in range(concurrency)]
            # warm-up (imports, caches)
            for c in conns:
                st, _h, _b = await c.exchange(reqs.pop())
                assert st == 200, _b[:300]
            it = iter(reqs)
            ok = bad = 0
            deadline = time.monotonic() + seconds
            cpu0 = cpu_seconds(proc.pid)
            t0 = time.monotonic()

            async def worker(c: Conn) -> None:
                nonlocal ok, bad
                for data in it:
                    st, _h, _b = await c.exchange(data)
                    if st == 200:
                        ok += 1
                    else:
                        bad += 1
                    if time.monotonic() > deadline:
                        return

            await asyncio.gather(*(worker(c) for c in conns))
            elapsed = time.monotonic() - t0
            cpu = cpu_seconds(proc.pid) - cpu0
            for c in conns:
                c.close()
            return ok, bad, elapsed, cpu

        ok, bad, elapsed, cpu = asyncio.run(run())
    return {
        "requests_per_s": ok / elapsed,
        "errors": bad,
        "server_cpu_percent": 100 * cpu / elapsed,
        "seconds": elapsed,
    }


def bench_profiles(n_cameras: int, requests: int) -> dict[str, float]:
    """GetProfiles latency with many cameras, one request at a time, round-robin."""
    cfg = BASE_CONFIG + "".join(
        CAMERA.format(name=f"cam{i:03d}", path=f"cam{i:03d}") for i in range(n_cameras)
    )
    body = f"<GetProfiles {TRT}/>"
    with onvifcam_server(cfg, SERVER_CPU, PREFIX) as (_proc, ports):
        cams = cameras(ports["http_port"])
        assert len(cams) == n_cameras, len(cams)
        targets = [int(c["port"]) for c in cams.values()]  # type: ignore[arg-type]
        reqs = [(targets[i % len(targets)], soap(body)) for i in range(requests + len(targets))]

        async def run() -> list[float]:
            conns = {p: await Conn.open(p) for p in targets}
            lat: list[float] = []
            for i, (port, data) in enumerate(reqs):
                raw = http_request(port, "/onvif/media_service", data)
                t = time.perf_counter()
                st, _h, b = await conns[port].exchange(raw)
                d = time.perf_counter() - t
                assert st == 200 and b"Profiles" in b, b[:300]
                if i >= len(targets):  # the first round warms every camera up
                    lat.append(d)
            for c in conns.values():
                c.close()
            return lat

        lat = asyncio.run(run())
    return {
        "cameras": n_cameras,
        "requests": len(lat),
        "p50_ms": 1000 * pct(lat, 50),
        "p99_ms": 1000 * pct(lat, 99),
        "max_ms": 1000 * max(lat),
    }


def bench_snapshot(seconds: float, rate: float) -> dict[str, float]:
    """Snapshot latency while ffmpeg publishes 1080p25 with a 1 s GOP."""
    cfg = BASE_CONFIG + CAMERA.format(name="Snap", path="snap")
    with onvifcam_server(cfg, SERVER_CPU, PREFIX) as (_proc, ports):
        url = f"rtsp://127.0.0.1:{ports['rtsp_port']}/snap"
        ff = subprocess.Popen(
            ["taskset", "-c", str(LOAD_CPU), "ffmpeg", "-hide_banner", "-nostdin", "-loglevel",
             "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=25",
             "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25",
             "-b:v", "4M", "-pix_fmt", "yuv420p", "-t", str(seconds + 30),
             "-f", "rtsp", "-rtsp_transport", "tcp", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            port = int(cameras(ports["http_port"])["Snap"]["port"])  # type: ignore[arg-type]
            auth = "Authorization: Basic " + base64.b64encode(b"admin:secret").decode() + "\r\n"
            req = http_request(port, "/onvif/snapshot?profile=Profile_1", None, auth)

            async def run() -> tuple[list[float], list[float], int]:
                c = await Conn.open(port)
                deadline = time.monotonic() + 20
                while True:  # wait for the publisher's first keyframe
                    st, h, _b = await c.exchange(req)
                    if st == 200 and h.get("x-snapshot", "").startswith("live"):
                        break
                    assert time.monotonic() < deadline, "no live snapshot"
                    await asyncio.sleep(0.2)
                every: list[float] = []
                decoded: list[float] = []
                size = 0
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    t = time.perf_counter()
                    st, h, b = await c.exchange(req)
                    d = time.perf_counter() - t
                    assert st == 200 and b[:2] == b"\xff\xd8"
                    size = len(b)
                    every.append(d)
                    if h.get("x-snapshot") == "live":
                        decoded.append(d)
                    await asyncio.sleep(1 / rate)
                c.close()
                return every, decoded, size

            every, decoded, size = asyncio.run(run())
        finally:
            ff.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                ff.wait(10)
            if ff.poll() is None:
                ff.kill()
                ff.wait()
    return {
        "fetches": len(every),
        "p50_ms": 1000 * pct(every, 50),
        "p99_ms": 1000 * pct(every, 99),
        "decoded": len(decoded),
        "decoded_p50_ms": 1000 * pct(decoded, 50) if decoded else float("nan"),
        "decoded_p99_ms": 1000 * pct(decoded, 99) if decoded else float("nan"),
        "jpeg_bytes": size,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("which", nargs="*", default=["uri", "profiles", "snapshot"])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the uri run")
    ap.add_argument("--concurrency", type=int, default=16, help="connections for the uri run")
    ap.add_argument("--cameras", type=int, default=100)
    ap.add_argument("--requests", type=int, default=2000, help="GetProfiles requests")
    ap.add_argument("--snapshot-seconds", type=float, default=15.0)
    ap.add_argument("--snapshot-rate", type=float, default=20.0, help="fetches per second")
    args = ap.parse_args(argv)
    for tool in ("taskset", "ffmpeg"):
        if shutil.which(tool) is None:
            print(f"bench_onvif: {tool} is required", file=sys.stderr)
            return 2
    os.sched_setaffinity(0, {LOAD_CPU})
    results: dict[str, dict[str, float]] = {}
    if "uri" in args.which:
        results["GetStreamUri (WS-Security, 1 core)"] = bench_uri(args.seconds, args.concurrency)
    if "profiles" in args.which:
        results[f"GetProfiles ({args.cameras} cameras)"] = bench_profiles(
            args.cameras, args.requests
        )
    if "snapshot" in args.which:
        results["Snapshot 1080p25"] = bench_snapshot(args.snapshot_seconds, args.snapshot_rate)
    for name, r in results.items():
        figures = ", ".join(
            f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
        )
        print(f"{name}: {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
