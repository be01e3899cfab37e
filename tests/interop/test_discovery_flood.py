"""WS-Discovery under a flood: 200 cameras, Probes from 200 addresses, real clients still
answered, the reply backlog bounded, directed Probes from foreign networks refused.

The server runs in ``lan.server``; the client namespace gets 200 extra addresses on its
link, and a flooder there sends multicast and directed Probes from every one of them as
fast as it can. A second address range (192.0.2.0/24, routed to the client by the server)
stands for a network that is not on the link.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import (
    ROOT,
    ServerProc,
    api_cameras,
    discover_json,
    json_lines,
    start_in_netns,
    stop_process,
    wsdiscovery_search,
)
from tests.netns import Lan, can_make_netns, lan

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    pytest.mark.skipif(not can_make_netns(), reason="needs root and iproute2 for namespaces"),
]

N = 200
FLOODERS = 200
FLOOD_RATE = 10  # Probes a second from each flooding address: 5 times what one may send
FOREIGN = "192.0.2.7"  # TEST-NET-1: a source that is not on the server's link
FOREIGN_NET = "192.0.2.0/24"
ALT_PORT = 3711  # the second server, which allows FOREIGN_NET

# Sends argv[4] Probes a second from every address in argv[1] (comma-separated) for argv[2]
# seconds, half to the group, half to argv[3] directly, each with a new MessageID; prints
# what it sent.
FLOODER = """
import json, socket, sys, time, uuid
from onvifcam.discovery.wsdiscovery import build_probe
addrs, seconds, server = sys.argv[1].split(","), float(sys.argv[2]), sys.argv[3]
interval = 1.0 / float(sys.argv[4])
template = build_probe(message_id="urn:uuid:" + "0" * 36)
socks = []
for a in addrs:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # answers are not read
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(a))
    s.bind((a, 0))
    socks.append(s)
sent = nbytes = 0
end = time.monotonic() + seconds
next_round = time.monotonic()
while time.monotonic() < end:
    next_round += interval
    for i, s in enumerate(socks):
        data = template.replace(b"0" * 36, str(uuid.uuid4()).encode())
        dest = ("239.255.255.250", 3702) if (sent + i) % 2 else (server, 3702)
        try:
            s.sendto(data, dest)
        except OSError:
            continue
        sent += 1
        nbytes += len(data)
    print(json.dumps({"sent": sent, "bytes": nbytes}), flush=True)
    time.sleep(max(0.0, next_round - time.monotonic()))
"""

# One directed Probe from argv[1] to argv[2]:argv[3]; prints the number of answers and bytes.
DIRECTED = """
import json, socket, sys
from onvifcam.discovery.wsdiscovery import build_probe
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((sys.argv[1], 0))
probe = build_probe()
s.sendto(probe, (sys.argv[2], int(sys.argv[3])))
s.settimeout(2.0)
n = nbytes = 0
try:
    while True:
        nbytes += len(s.recv(65536))
        n += 1
except socket.timeout:
    pass
print(json.dumps({"answers": n, "bytes": nbytes, "probe": len(probe)}))
"""


def _config(extra: str = "", cameras: int = N) -> str:
    text = (
        '[server]\nhost = "0.0.0.0"\nrtsp_port = 0\nhttp_port = 0\n'
        "[rtsp]\nrtp_port = 0\n[rtmp]\nenabled = false\n"
        f"[discovery]\nmdns = false\n{extra}"
    )
    for i in range(cameras):
        text += f'[[cameras]]\nname = "cam{i}"\npath = "live/cam{i}"\nauth = false\n'
    return text


@dataclass
class Site:
    """The link, the server and the flood's source addresses."""

    net: Lan
    server: ServerProc
    flood_addrs: list[str]
    cameras: dict[str, dict]
    tmp: Path

    def epr(self, name: str) -> str:
        return "urn:uuid:" + self.cameras[name]["uuid"]

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid  # ip netns exec execs the server: same pid


def _rss_kib(pid: int) -> int:
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert m
    return int(m.group(1))


def _ip_batch(ns: str, commands: list[str]) -> None:
    subprocess.run(
        ["ip", "-n", ns, "-batch", "-"],
        input="\n".join(commands) + "\n",
        check=True,
        text=True,
        capture_output=True,
    )


def _dev_of(ns: str, ip: str) -> str:
    out = subprocess.run(
        ["ip", "-n", ns, "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    return next(line.split()[1] for line in out.splitlines() if f" {ip}/" in line)


def _run(net: Lan, code: str, *args: str) -> dict:
    """Python ``code`` with ``args`` in the client namespace; its last line as JSON."""
    r = subprocess.run(
        ["ip", "netns", "exec", net.client, sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.splitlines()[-1])


def _directed(net: Lan, source: str, port: int = 3702) -> dict:
    return _run(net, DIRECTED, source, net.server_ip, str(port))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with lan("fl") as net:
        base = net.client_ip.rsplit(".", 1)[0]
        addrs = [f"{base}.{10 + i}" for i in range(FLOODERS)]
        dev = _dev_of(net.client, net.client_ip)
        _ip_batch(net.client, [f"addr add {a}/24 dev {dev}" for a in addrs])
        _ip_batch(net.client, [f"addr add {FOREIGN}/32 dev {dev}"])
        _ip_batch(net.server, [f"route add {FOREIGN_NET} via {net.client_ip}"])
        server = ServerProc(_config(), netns=net.server)
        try:
            server.start(timeout=120)
            cams = api_cameras(net.client, net.server_ip, server.ports["http_port"])
            assert len(cams) == N
            yield Site(net, server, addrs, cams, tmp_path_factory.mktemp("flood"))
        finally:
            server.stop(check=False)


def test_directed_probes_only_from_the_link(site: Site) -> None:
    local = _directed(site.net, site.net.client_ip)
    assert local["answers"] == N
    foreign = _directed(site.net, FOREIGN)
    assert foreign["answers"] == 0 and foreign["bytes"] == 0


def test_real_clients_are_answered_during_a_flood(site: Site) -> None:
    net = site.net
    time.sleep(3.0)  # the Hellos of 200 cameras are out
    rss_before = _rss_kib(site.pid)
    out = site.tmp / "flood.jsonl"
    flooder = start_in_netns(
        net.client, FLOODER, out, ",".join(site.flood_addrs), "30", net.server_ip, str(FLOOD_RATE)
    )
    try:
        time.sleep(5.0)  # every flooder has been answered once; the backlog is full
        found = discover_json(net.client, net.client_ip, "--type", "nvt", "--timeout", "3")
        eprs = {d["epr"] for d in found["devices"]}
        assert eprs == {site.epr(n) for n in site.cameras}, len(eprs)
        # python-ws-discovery (Home Assistant) probes from every address of the link: the
        # client address is fresh again once it was quiet for source_interval (5 s)
        time.sleep(5.5)
        cam7 = site.epr("cam7")
        scopes = ["onvif://www.onvif.org/name/cam7"]
        assert set(wsdiscovery_search(net.client, scopes)) == {cam7}
        rss_during = _rss_kib(site.pid)
    finally:
        stop_process(flooder)
    sent = json_lines(out)[-1]
    assert sent["sent"] > 10 * FLOODERS, sent
    # a few MB of bounded backlog, not the hundreds an unbounded queue took
    assert rss_during - rss_before < 64 * 1024, (rss_before, rss_during)
    log = site.server.log()
    warnings = [x for x in log.splitlines() if "discovery: under load:" in x]
    assert warnings and "max_backlog" in warnings[0]


def test_unicast_from_allows_a_configured_network(site: Site) -> None:
    extra = f'port = {ALT_PORT}\nunicast_from = ["local", "{FOREIGN_NET}"]\n'
    other = ServerProc(_config(extra, cameras=3), netns=site.net.server)
    other.start(timeout=60)
    try:
        assert _directed(site.net, FOREIGN, ALT_PORT)["answers"] == 3
    finally:
        other.stop()


def test_backlog_stayed_bounded(site: Site) -> None:
    """Runs last: stops the shared server and reads its counters."""
    proc = site.server.proc
    assert proc is not None
    proc.send_signal(15)
    assert proc.wait(30) == 0
    log = site.server.log()
    assert "Traceback" not in log
    summary = next(x for x in log.splitlines() if "discovery: " in x and "backlog peak" in x)
    m = re.search(
        r"(\d+) unicast refused; (\d+) replies dropped \(backlog peak (\d+) datagrams, "
        r"(\d+) bytes\)",
        summary,
    )
    assert m, summary
    refused, dropped, peak, peak_bytes = map(int, m.groups())
    assert refused >= 1 and dropped > 0, summary
    assert 0 < peak <= 4096 and peak_bytes <= 4 * 1024 * 1024, summary
