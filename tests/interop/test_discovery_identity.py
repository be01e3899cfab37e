"""One device per IP: cameras on their own addresses (macvlan and loopback), mDNS, and
NonDiscoverable persisted across a restart.

In ``lan.server``, scripts/camera_net.py gives two cameras a macvlan interface each with
the camera's MAC; two cameras sit on 127.0.0.2 and 127.0.0.3; four share the server's
address. Clients run in ``lan.client`` (the link) and in ``lan.server`` (the loopback).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import (
    HELLO_LISTENER,
    ROOT,
    ServerProc,
    api_cameras,
    discover_json,
    json_lines,
    soap_in_netns,
    start_in_netns,
    stop_process,
    wait_lines,
    wsdiscovery_search,
)
from tests.netns import Lan, can_make_netns, lan

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    pytest.mark.skipif(not can_make_netns(), reason="needs root and iproute2 for namespaces"),
]

PLAIN = ["plain0", "plain1", "plain2", "plain3"]
LOOPBACK = {"lo2": "127.0.0.2", "lo3": "127.0.0.3"}
MACVLAN = ["mv1", "mv2"]
QUIET = "plain3"
STREAMING = "onvif://www.onvif.org/Profile/Streaming"

# Registers a rival "plain0" HTTP service first (so the server must rename its own), then
# browses both service types and prints every add/remove as a JSON line.
MDNS_WATCH = """
import asyncio, json, sys
from zeroconf import IPVersion, ServiceInfo, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

def emit(**kw):
    print(json.dumps(kw), flush=True)

async def main():
    azc = AsyncZeroconf(ip_version=IPVersion.V4Only)
    rival = ServiceInfo("_http._tcp.local.", "plain0._http._tcp.local.", port=1234,
                        properties={"owner": "rival"}, server="rival.local.",
                        parsed_addresses=[sys.argv[1]])
    await (await azc.async_register_service(rival))
    emit(event="ready")

    async def resolve(type_, name):
        info = AsyncServiceInfo(type_, name)
        if await info.async_request(azc.zeroconf, 3000):
            props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
            emit(event="added", type=type_, name=name, port=info.port,
                 addresses=info.parsed_addresses(), properties=props)

    def changed(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Added:
            asyncio.ensure_future(resolve(service_type, name))
        elif state_change is ServiceStateChange.Removed:
            emit(event="removed", type=service_type, name=name)

    AsyncServiceBrowser(azc.zeroconf, ["_rtsp._tcp.local.", "_http._tcp.local."],
                        handlers=[changed])
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@dataclass
class Site:
    """The link, the server (restartable), its state and the background watchers."""

    net: Lan
    tmp: Path
    config: str
    heard_path: Path
    mdns_path: Path
    server: ServerProc | None = None
    cameras: dict[str, dict] = field(default_factory=dict)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.net.server_ip.rsplit(".", 1)[0]

    def address(self, name: str) -> str:
        if name in LOOPBACK:
            return LOOPBACK[name]
        if name in MACVLAN:
            return f"{self.base}.{11 + MACVLAN.index(name)}"
        return self.net.server_ip

    def start(self) -> None:
        state = str(self.tmp / "state")
        self.server = ServerProc(self.config, ["--state-dir", state], netns=self.net.server)
        self.server.start(timeout=60)
        port = self.server.ports["http_port"]
        self.cameras = api_cameras(self.net.client, self.net.server_ip, port)

    def epr(self, name: str) -> str:
        return "urn:uuid:" + self.cameras[name]["uuid"]

    def lines(self, path: Path) -> list[dict]:
        return json_lines(path)

    def wait_for(self, path: Path, pred: Callable[[dict], bool], limit: float = 15.0) -> list[dict]:
        return wait_lines(path, pred, limit)


def _config(net: Lan) -> str:
    base = net.server_ip.rsplit(".", 1)[0]
    text = (
        '[server]\nhost = "0.0.0.0"\nrtsp_port = 0\nhttp_port = 0\n'
        "[rtsp]\nrtp_port = 0\n[rtmp]\nenabled = false\n"
        "[onvif]\nport_range_start = 8100\nport_range_end = 8999\n"  # kept across restarts
        "[discovery]\nprobes_per_source_per_s = 20.0\nprobe_burst = 40\n"
        f'interfaces = ["127.0.0.1", "{net.server_ip}"]\n'
    )
    for name in PLAIN:
        text += f'[[cameras]]\nname = "{name}"\npath = "live/{name}"\nauth = false\n'
    for name, addr in LOOPBACK.items():
        text += f'[[cameras]]\nname = "{name}"\npath = "live/{name}"\naddress = "{addr}"\n'
        text += "auth = false\n"
    for i, name in enumerate(MACVLAN):
        text += f'[[cameras]]\nname = "{name}"\npath = "live/{name}"\n'
        text += f'address = "{base}.{11 + i}"\nauth = false\n'
    return text


def _camera_net(net: Lan, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", net.server, sys.executable, "scripts/camera_net.py", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=str(ROOT))


def discover_in(ns: str, interface: str, *args: str) -> dict:
    """``onvifcam discover --json --type nvt`` in namespace ``ns``."""
    return discover_json(ns, interface, "--type", "nvt", "--timeout", "1.5", *args)


def soap(net: Lan, url: str, body: str) -> str:
    """POST a SOAP 1.2 request from the client namespace; returns the response text."""
    return soap_in_netns(net.client, url, body)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("wsd-id")
    with lan("wi") as net:
        s = Site(net, tmp, _config(net), tmp / "heard.jsonl", tmp / "mdns.jsonl")
        cfg = tmp / "config.toml"
        cfg.write_text(s.config)
        try:
            r = _camera_net(net, "up", "--config", str(cfg), "--state-dir", str(tmp / "state"))
            assert r.returncode == 0, r.stderr
            s.procs.append(start_in_netns(net.client, HELLO_LISTENER, s.heard_path, net.client_ip))
            s.procs.append(start_in_netns(net.client, MDNS_WATCH, s.mdns_path, net.client_ip))
            assert s.wait_for(s.heard_path, lambda x: x["kind"] == "ready")
            assert s.wait_for(s.mdns_path, lambda x: x["event"] == "ready")
            s.start()
            yield s
        finally:
            if s.server is not None:
                s.server.stop(check=False)
            for p in s.procs:
                stop_process(p)
            down = _camera_net(net, "down")
            assert down.returncode == 0, down.stderr


def test_macvlan_helper_made_one_interface_per_camera(site: Site) -> None:
    out = _camera_net(site.net, "show").stdout
    for name in MACVLAN:
        cam = site.cameras[name]
        assert f"{cam['mac']}  {site.address(name)}" in out, out


def test_each_camera_answers_from_its_own_address(site: Site) -> None:
    out = discover_in(site.net.client, site.net.client_ip)
    found = {d["name"]: d for d in out["devices"]}
    assert set(found) == set(PLAIN + MACVLAN)  # loopback cameras do not answer the link
    for name, d in found.items():
        cam = site.cameras[name]
        addr = site.address(name)
        assert d["epr"] == site.epr(name)
        assert d["source"] == addr, (name, d)
        assert d["xaddrs"] == [f"http://{addr}:{cam['port']}/onvif/device_service"]
    assert {site.cameras[n]["port"] for n in MACVLAN} == {80}  # one device per IP, port 80


def test_loopback_cameras_answer_from_their_own_address(site: Site) -> None:
    out = discover_in(site.net.server, "127.0.0.1")
    found = {d["name"]: d for d in out["devices"]}
    assert set(found) == set(PLAIN + list(LOOPBACK) + MACVLAN)
    for name, addr in LOOPBACK.items():
        d = found[name]
        assert d["source"] == addr
        assert d["xaddrs"] == [f"http://{addr}:80/onvif/device_service"]
    assert found["plain1"]["source"] == "127.0.0.1"
    assert found["plain1"]["xaddrs"][0].startswith("http://127.0.0.1:")
    # a directed Probe to a camera's address gets that camera only
    direct = discover_in(site.net.server, "127.0.0.1", "--address", "127.0.0.3")
    assert [(d["name"], d["source"]) for d in direct["devices"]] == [("lo3", "127.0.0.3")]


def test_ipv6_probe(site: Site) -> None:
    deadline = time.monotonic() + 10  # link-local addresses leave duplicate detection
    while time.monotonic() < deadline:
        addrs = "".join(
            subprocess.run(["ip", "-n", ns, "-6", "addr"], capture_output=True, text=True).stdout
            for ns in (site.net.server, site.net.client)
        )
        if "tentative" not in addrs:
            break
        time.sleep(0.2)
    out = discover_in(site.net.client, site.net.client_ip, "--ipv6")
    found = {d["name"]: d for d in out["devices"]}
    assert set(found) == set(PLAIN + MACVLAN)
    for name, d in found.items():
        assert d["source"].startswith("fe80::")
        port = site.cameras[name]["port"]
        assert d["xaddrs"] == [f"http://{site.address(name)}:{port}/onvif/device_service"]


def test_mac_on_the_wire_matches_get_network_interfaces(site: Site) -> None:
    for name in MACVLAN:
        cam = site.cameras[name]
        url = f"http://{site.address(name)}:{cam['port']}/onvif/device_service"
        reply = soap(site.net, url, "<tds:GetNetworkInterfaces/>")
        assert f"<tt:HwAddress>{cam['mac']}</tt:HwAddress>" in reply, reply[:2000]
        neigh = subprocess.run(
            ["ip", "-n", site.net.client, "neigh", "show", site.address(name)],
            capture_output=True,
            text=True,
        ).stdout
        assert f"lladdr {cam['mac']}" in neigh, neigh
    macs = {site.cameras[n]["mac"] for n in site.cameras}
    assert len(macs) == len(site.cameras)


def test_python_wsdiscovery_finds_every_camera(site: Site) -> None:
    found = wsdiscovery_search(site.net.client, [STREAMING])
    assert set(found) == {site.epr(n) for n in PLAIN + MACVLAN}
    for name in MACVLAN:
        assert found[site.epr(name)]["xaddrs"][0].startswith(f"http://{site.address(name)}:80/")


def test_mdns_advertises_each_camera_and_renames_on_conflict(site: Site) -> None:
    def added(kind: str) -> dict[str, dict]:
        return {
            x["name"]: x
            for x in site.lines(site.mdns_path)
            if x["event"] == "added" and x["type"] == kind
        }

    want = len(PLAIN + MACVLAN)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ours = [x for x in added("_http._tcp.local.").values() if x["properties"].get("uuid")]
        if len(ours) >= want and len(added("_rtsp._tcp.local.")) >= want:
            break
        time.sleep(0.3)
    http = {
        x["properties"]["uuid"]: x
        for x in added("_http._tcp.local.").values()
        if "uuid" in x["properties"]
    }
    rtsp = added("_rtsp._tcp.local.")
    for name in PLAIN + MACVLAN:
        cam = site.cameras[name]
        h = http[cam["uuid"]]
        assert h["properties"]["type"] == "onvif"
        assert h["properties"]["path"] == "/onvif/device_service"
        assert h["properties"]["mac"] == cam["mac"]
        assert h["port"] == cam["port"]
        assert h["addresses"] == [site.address(name)]
        r = rtsp[f"{name}._rtsp._tcp.local."]
        assert r["properties"]["path"] == f"/live/{name}"
        assert r["addresses"] == [site.address(name)]
    # the rival took "plain0" first: the server renamed its own
    assert http[site.cameras["plain0"]["uuid"]]["name"] == "plain0-2._http._tcp.local."
    assert not any(x.startswith("lo") for x in rtsp)  # loopback cameras are not advertised


def test_reboot_announces_again_with_the_same_metadata_version(site: Site) -> None:
    name = "plain1"
    epr = site.epr(name)
    before = len(site.lines(site.heard_path))
    url = f"http://{site.net.server_ip}:{site.cameras[name]['port']}/onvif/device_service"
    assert "SystemRebootResponse" in soap(site.net, url, "<tds:SystemReboot/>")
    new: list[dict] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not new:
        new = [x for x in site.lines(site.heard_path)[before:] if x["epr"] == epr]
        time.sleep(0.2)
    time.sleep(1.5)  # nothing else follows (no second Hello, no Bye)
    new = [x for x in site.lines(site.heard_path)[before:] if x["epr"] == epr]
    assert [x["kind"] for x in new] == ["hello"], new
    assert new[0]["metadata_version"] == 1


def test_non_discoverable_persists_and_everything_is_withdrawn(site: Site) -> None:
    """Runs last: restarts the server."""
    assert site.server is not None
    quiet = site.epr(QUIET)
    assert site.wait_for(
        site.mdns_path, lambda x: x["event"] == "added" and x["name"].startswith(QUIET), 30
    )
    url = f"http://{site.net.server_ip}:{site.cameras[QUIET]['port']}/onvif/device_service"
    body = (
        "<tds:SetDiscoveryMode><tds:DiscoveryMode>NonDiscoverable</tds:DiscoveryMode>"
        "</tds:SetDiscoveryMode>"
    )
    assert "SetDiscoveryModeResponse" in soap(site.net, url, body)
    assert site.wait_for(site.heard_path, lambda x: x["kind"] == "bye" and x["epr"] == quiet)
    assert site.wait_for(
        site.mdns_path, lambda x: x["event"] == "removed" and x["name"].startswith(QUIET)
    ), [x for x in site.lines(site.mdns_path) if QUIET in x.get("name", "")]
    heard_before = len(site.lines(site.heard_path))
    site.server.stop()
    # a Bye from every camera the link can hear, goodbyes for every mDNS service
    link = {site.epr(n) for n in PLAIN + MACVLAN if n != QUIET}
    byes: set[str] = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and byes != link:
        new = site.lines(site.heard_path)[heard_before:]
        byes = {x["epr"] for x in new if x["kind"] == "bye"}
        time.sleep(0.2)
    assert byes == link
    for name in PLAIN + MACVLAN:
        if name == QUIET:
            continue
        assert site.wait_for(
            site.mdns_path,
            lambda x, n=name: (
                x["event"] == "removed"
                and x["type"] == "_rtsp._tcp.local."
                and x["name"] == f"{n}._rtsp._tcp.local."
            ),
        ), name
    # restart: the camera stays silent, the others keep their identity
    heard_before = len(site.lines(site.heard_path))
    old = dict(site.cameras)
    site.start()
    assert {n: c["uuid"] for n, c in site.cameras.items()} == {n: c["uuid"] for n, c in old.items()}
    hellos = site.wait_for(
        site.heard_path, lambda x: x["kind"] == "hello" and x["epr"] == site.epr("plain1")
    )
    assert hellos
    out = discover_in(site.net.client, site.net.client_ip)
    names = {d["name"] for d in out["devices"]}
    assert names == set(PLAIN + MACVLAN) - {QUIET}
    after = site.lines(site.heard_path)[heard_before:]
    assert not [x for x in after if x["epr"] == quiet]
    # MetadataVersion survived the restart (nothing changed)
    versions = {x["epr"]: x["metadata_version"] for x in after if x["kind"] == "hello"}
    assert versions[site.epr("plain1")] == 1, [
        x for x in site.lines(site.heard_path) if x["epr"] == site.epr("plain1")
    ]
