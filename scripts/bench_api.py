#!/usr/bin/env python3
"""HTTP API benchmark: ``GET /api/cameras`` latency with 1000 cameras (one ``[[fleets]]``
entry, no source: every camera has its own ONVIF port but no stream), and the ``/metrics``
scrape time (skipped with a message on 404), each with the server's CPU time per answer.

A real ``onvifcam serve`` on loopback with a bearer token; sequential keep-alive requests
from this process (one client: this measures the server's time per answer, body included).
Temp files only, bounded in time, cleans up what it starts::

    python3 scripts/bench_api.py                         # 1000 cameras, 200 requests
    python3 scripts/bench_api.py --cameras 100 --requests 50
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_seconds, free_port, stop_process

TOKEN = "bench-api-token-0123456789"


def config(cameras: int, http_port: int) -> str:
    return f"""
[server]
host = "127.0.0.1"
rtsp_port = 0
rtmp_port = 0
rtmps_port = 0
http_port = {http_port}

[rtsp]
rtp_port = 0

[srt]
port = 0

[discovery]
enabled = false

[onvif]
port_range_start = 0
port_range_end = 0
max_cameras = {cameras + 10}

[limits]
max_connections = 256

[api]
token = "{TOKEN}"

[[fleets]]
name = "bench"
count = {cameras}
"""


def timed_gets(port: int, path: str, n: int) -> tuple[list[float], int, int]:
    """Latencies (ms) of n sequential GETs on one keep-alive connection, the last status
    and body size."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    out = []
    status = size = 0
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
            r = conn.getresponse()
            body = r.read()
            out.append((time.perf_counter() - t0) * 1000)
            status, size = r.status, len(body)
            if status != 200:
                break
    finally:
        conn.close()
    return out, status, size


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        port = free_port()
        cfg = Path(tmp) / "config.toml"
        cfg.write_text(config(args.cameras, port))
        log = open(Path(tmp) / "server.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "onvifcam", "serve", "--config", str(cfg), "--state-dir",
             str(Path(tmp) / "state"), "--log-level", "warning"],
            cwd=root, stdout=subprocess.PIPE, stderr=log, text=True,
            env={**os.environ, "PYTHONPATH": str(root)},
        )  # fmt: skip
        try:
            t0 = time.monotonic()
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("onvifcam ready"):
                    break
            else:
                print(Path(tmp, "server.log").read_text()[-3000:], file=sys.stderr)
                return 1
            print(f"server ready with {args.cameras} cameras in {time.monotonic() - t0:.1f} s")
            timed_gets(port, "/api/cameras", 3)  # warm up
            cpu0 = cpu_seconds(proc.pid)
            lat, status, size = timed_gets(port, "/api/cameras", args.requests)
            cpu = cpu_seconds(proc.pid) - cpu0
            if status != 200:
                print(f"GET /api/cameras answered {status}", file=sys.stderr)
                return 1
            print(
                f"GET /api/cameras ({args.cameras} cameras, {size / 1e6:.2f} MB JSON), "
                f"{len(lat)} requests: p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, "
                f"max {max(lat):.1f} ms, mean {statistics.fmean(lat):.1f} ms; "
                f"server CPU {cpu / len(lat) * 1000:.1f} ms per request"
            )
            cpu0 = cpu_seconds(proc.pid)
            lat, status, size = timed_gets(port, "/metrics", max(10, args.requests // 4))
            cpu = cpu_seconds(proc.pid) - cpu0
            if status == 404:
                print("/metrics: 404 (not in this build); scrape time not measured")
            elif status != 200:
                print(f"/metrics answered {status}; scrape time not measured")
            else:
                print(
                    f"/metrics ({size / 1e3:.0f} kB), {len(lat)} scrapes: p50 "
                    f"{pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat):.1f} ms; "
                    f"server CPU {cpu / len(lat) * 1000:.1f} ms per scrape"
                )
        finally:
            stop_process(proc)
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
