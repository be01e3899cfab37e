#!/usr/bin/env python3
"""WS-Discovery at scale: time from one Probe to the last ProbeMatch, and datagrams lost.

For each camera count it builds two network namespaces joined by a veth pair (the
multicast path of a real LAN; root only), runs ``onvifcam serve`` with that many
``[[cameras]]`` in one and ``onvifcam discover`` in the other, and reports per run:

- found / lost: cameras that answered one Probe within the wait, and those that did not;
- last match: seconds from the Probe leaving to the last new ProbeMatch arriving (the
  answers are spread over the spec's random 0..500 ms APP_MAX_DELAY window, then paced);
- rcvbuf drops: UDP datagrams the client's kernel dropped (RcvbufErrors in the namespace);
- server CPU: CPU time the server spent on that Probe (utime + stime).

    sudo python3 scripts/bench_discovery.py                 # 16, 256 and 1024 cameras
    sudo python3 scripts/bench_discovery.py --cameras 256 --runs 10 --unicast-repeat 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench_common import cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import ServerProc  # noqa: E402
from tests.netns import can_make_netns, lan  # noqa: E402


@dataclass
class Run:
    """One Probe."""

    found: int
    last: float
    datagrams: int
    rcvbuf_drops: int
    server_cpu: float


def _config(n: int, unicast_repeat: int) -> str:
    text = (
        '[server]\nhost = "0.0.0.0"\nrtsp_port = 0\nhttp_port = 0\n'
        "[rtsp]\nrtp_port = 0\n[rtmp]\nenabled = false\n"
        f"[onvif]\nport_range_end = {8100 + n + 200}\nmax_cameras = {n + 16}\n"
        "[discovery]\nmdns = false\nprobes_per_source_per_s = 100.0\nprobe_burst = 100\n"
        f"unicast_repeat = {unicast_repeat}\n"
    )
    for i in range(n):
        text += f'[[cameras]]\nname = "cam{i}"\npath = "live/cam{i}"\nauth = false\n'
    return text


def _rcvbuf_errors(ns: str) -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"], capture_output=True, text=True
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def bench(n: int, runs: int, wait: float, unicast_repeat: int) -> list[Run]:
    """Start a server with ``n`` cameras and probe it ``runs`` times."""
    out: list[Run] = []
    with lan("bd") as net:
        t0 = time.monotonic()
        srv = ServerProc(_config(n, unicast_repeat), netns=net.server).start(timeout=600)
        started = time.monotonic() - t0
        try:
            assert srv.proc is not None
            time.sleep(3.0)  # let the start-up Hello burst pass
            for _ in range(runs):
                drops = _rcvbuf_errors(net.client)
                cpu = cpu_seconds(srv.proc.pid)
                cmd = [sys.executable, "-m", "onvifcam", "discover", "--json", "--type", "nvt"]
                cmd += ["--interface", net.client_ip, "--timeout", str(wait)]
                r = subprocess.run(
                    ["ip", "netns", "exec", net.client, *cmd],
                    capture_output=True,
                    text=True,
                    cwd=str(ROOT),
                    timeout=120,
                )
                if r.returncode != 0:
                    raise RuntimeError(f"onvifcam discover failed: {r.stderr[-2000:]}")
                res = json.loads(r.stdout)
                time.sleep(0.5)
                out.append(
                    Run(
                        found=len(res["devices"]),
                        last=res["last_match_s"],
                        datagrams=res["datagrams"],
                        rcvbuf_drops=_rcvbuf_errors(net.client) - drops,
                        server_cpu=cpu_seconds(srv.proc.pid) - cpu,
                    )
                )
        finally:
            srv.stop(check=False)
    print(f"  server with {n} cameras ready in {started:.1f} s", file=sys.stderr)
    return out


def main() -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cameras", type=int, action="append", help="camera counts (16 256 1024)")
    p.add_argument("--runs", type=int, default=5, help="Probes per camera count")
    p.add_argument("--wait", type=float, default=3.0, help="seconds the client waits")
    p.add_argument("--unicast-repeat", type=int, default=0, help="ProbeMatch retransmissions")
    args = p.parse_args()
    if not can_make_netns():
        print("bench_discovery: needs root and iproute2 (network namespaces)", file=sys.stderr)
        return 2
    counts = args.cameras or [16, 256, 1024]
    print(f"one Probe (dn:NetworkVideoTransmitter), client waits {args.wait:.1f} s, "
          f"{args.runs} runs, ProbeMatch retransmissions: {args.unicast_repeat}")  # fmt: skip
    print(
        f"{'cameras':>8} {'found':>13} {'lost':>6} {'last match s':>22} "
        f"{'rcvbuf drops':>12} {'server CPU ms':>13}"
    )
    for n in counts:
        rs = bench(n, args.runs, args.wait, args.unicast_repeat)
        lasts = [r.last for r in rs]
        found = [r.found for r in rs]
        print(
            f"{n:>8} {min(found):>6}..{max(found):<6} {sum(n - f for f in found):>6} "
            f"{statistics.median(lasts):>8.3f} (max {max(lasts):.3f}) "
            f"{sum(r.rcvbuf_drops for r in rs):>12} "
            f"{statistics.median(r.server_cpu for r in rs) * 1000:>13.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
