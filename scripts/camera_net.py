#!/usr/bin/env python3
"""Give every camera with an ``address`` its own network interface (macvlan) and MAC.

Some NVRs (UniFi Protect, Home Assistant's discovery, anything keyed by IP or by the MAC in
the ARP table) treat one IP as one camera. onvifcam binds a camera with ``address`` to that
IP; this helper makes the IP exist on the LAN with the camera's own MAC address, the same
one ONVIF GetNetworkInterfaces reports, so each virtual camera looks like separate hardware.

    sudo python3 scripts/camera_net.py up   --config onvifcam.toml [--parent eth0]
    sudo python3 scripts/camera_net.py show
    sudo python3 scripts/camera_net.py down

``up`` reads the configuration and the state directory (the camera identities live there;
missing ones are created exactly as the server would), then for each camera with an
IPv4 ``address``:

- creates a macvlan interface (bridge mode) on the parent link, named ``oc`` + 8 hex digits
  of the camera key, with the camera's MAC; the alias ``onvifcam table=N camera=KEY`` marks
  it as ours;
- adds the address as /32 (no route in the main table, so the host's own traffic does not
  leak onto camera interfaces) and a policy route: traffic from the camera address uses
  table N, which sends the subnet (and the parent's default gateway, if any) out of the
  camera's interface;
- sets ``arp_ignore=1`` and ``arp_announce=2`` on the parent and the new interface, so each
  IP is answered in ARP with its own MAC only.

The parent defaults to the interface whose IPv4 network contains the camera address.
``down`` removes every interface carrying our alias and its rules and routes. ``--dry-run``
prints the ``ip`` commands instead of running them. Run it before ``onvifcam serve``, with
the same ``--config`` and ``--state-dir`` (the server cannot bind an address that does not
exist yet); ``down`` after the server stopped.

When is it needed? When the NVR needs one IP per camera (UniFi Protect adopts by IP, HA
deduplicates discovered cameras by host). When cameras can share one IP on different ports
(ONVIF Device Manager, Milestone, Blue Iris, Frigate, Synology with a manual port), the
per-camera ports onvifcam assigns by default are enough and no root is needed.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onvifcam.cameras import CameraRegistry
from onvifcam.config import Config, ConfigError, load, with_overrides
from onvifcam.media.stream import StreamRegistry
from onvifcam.state import StateStore

ALIAS = "onvifcam"
TABLE_BASE = 4200
RULE_PRIORITY = 4200


@dataclass
class Plan:
    """One camera interface to create."""

    key: str
    ifname: str
    mac: str
    address: str
    parent: str
    network: str
    table: int
    gateway: str


def ifname_for(key: str) -> str:
    """A stable interface name (at most 15 characters) for a camera key."""
    return "oc" + hashlib.sha1(key.encode()).hexdigest()[:8]


def _ip_json(*args: str) -> list[dict]:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")


def _parent_for(address: str) -> tuple[str, str]:
    """(interface, network) whose IPv4 network holds ``address``."""
    ip = ipaddress.ip_address(address)
    mine = {name for name, _table in ours()}
    for link in _ip_json("-4", "addr", "show"):
        if link["ifname"] in mine:
            continue
        for a in link.get("addr_info", []):
            net = ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
            if ip in net and net.prefixlen < 32:
                return link["ifname"], str(net)
    raise SystemExit(f"camera_net: no interface has a network containing {address}; use --parent")


def _network_of(parent: str, address: str, prefix: int) -> str:
    if prefix:
        return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
    for link in _ip_json("-4", "addr", "show", "dev", parent):
        for a in link.get("addr_info", []):
            return str(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    return str(ipaddress.ip_network(f"{address}/24", strict=False))


def _gateway(parent: str) -> str:
    for r in _ip_json("-4", "route", "show", "default", "dev", parent):
        if r.get("gateway"):
            return str(r["gateway"])
    return ""


def plan(cfg: Config, parent: str, prefix: int) -> list[Plan]:
    """The interfaces to create for ``cfg`` (identities are created in the state dir)."""
    store = StateStore(cfg.server.state_dir)
    lim = cfg.limits
    streams = StreamRegistry(
        gop_cache_bytes=lim.gop_cache_bytes,
        media_timeout=lim.media_timeout,
        max_streams=lim.max_streams,
    )
    registry = CameraRegistry(cfg, store, streams)
    registry.load()
    out = []
    for n, cam in enumerate(c for c in registry.cameras.values() if c.address):
        if ipaddress.ip_address(cam.address).version != 4:
            print(f"camera_net: {cam.name}: IPv6 address {cam.address} skipped", file=sys.stderr)
            continue
        if ipaddress.ip_address(cam.address).is_loopback:
            continue  # 127.0.0.0/8 exists on lo already
        if parent:
            dev, net = parent, _network_of(parent, cam.address, prefix)
        else:
            dev, net = _parent_for(cam.address)
            if prefix:
                net = _network_of(dev, cam.address, prefix)
        out.append(
            Plan(
                cam.key,
                ifname_for(cam.key),
                cam.mac,
                cam.address,
                dev,
                net,
                TABLE_BASE + n,
                _gateway(dev),
            )
        )
    return out


def _run(cmd: list[str], dry: bool, check: bool = True) -> bool:
    if dry:
        print(" ".join(cmd))
        return True
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 and check:
        raise SystemExit(f"camera_net: {' '.join(cmd)}: {r.stderr.strip()}")
    return r.returncode == 0


def _sysctl(iface: str, dry: bool) -> None:
    for key, value in (("arp_ignore", "1"), ("arp_announce", "2")):
        path = f"/proc/sys/net/ipv4/conf/{iface}/{key}"
        if dry:
            print(f"echo {value} > {path}")
        else:
            Path(path).write_text(value)


def up(plans: list[Plan], dry: bool) -> None:
    """Create the interfaces, addresses, rules and routes."""
    existing = {link["ifname"] for link in _ip_json("link", "show")} if not dry else set()
    for parent in sorted({p.parent for p in plans}):
        _sysctl(parent, dry)
    for p in plans:
        if p.ifname in existing:
            print(f"camera_net: {p.ifname} exists; run 'down' first", file=sys.stderr)
            continue
        alias = f"{ALIAS} table={p.table} camera={p.key}"[:250]
        macvlan = ["type", "macvlan", "mode", "bridge"]
        _run(["ip", "link", "add", p.ifname, "link", p.parent, *macvlan], dry)
        _run(["ip", "link", "set", p.ifname, "address", p.mac], dry)
        _run(["ip", "link", "set", p.ifname, "alias", alias], dry)
        _sysctl(p.ifname, dry)
        _run(["ip", "addr", "add", f"{p.address}/32", "dev", p.ifname], dry)
        _run(["ip", "link", "set", p.ifname, "up"], dry)
        table = ["table", str(p.table)]
        _run(["ip", "route", "add", p.network, "dev", p.ifname, "src", p.address, *table], dry)
        if p.gateway:
            _run(["ip", "route", "add", "default", "via", p.gateway, "dev", p.ifname, *table], dry)
        prio = ["priority", str(RULE_PRIORITY)]
        _run(["ip", "rule", "add", "from", f"{p.address}/32", *table, *prio], dry)
        print(f"{p.ifname}  {p.mac}  {p.address}  on {p.parent}  ({p.key})")


def ours() -> list[tuple[str, int]]:
    """(interface, table) of every interface this helper created."""
    out = []
    for link in _ip_json("link", "show"):
        alias = str(link.get("ifalias", ""))
        if alias.startswith(ALIAS + " "):
            m = re.search(r"table=(\d+)", alias)
            out.append((link["ifname"], int(m.group(1)) if m else 0))
    return out


def down(dry: bool) -> None:
    """Remove our interfaces with their rules and routes."""
    for ifname, table in ours():
        if table:
            while _run(["ip", "rule", "del", "table", str(table)], dry, check=False) and not dry:
                pass
            _run(["ip", "route", "flush", "table", str(table)], dry, check=False)
        _run(["ip", "link", "del", ifname], dry, check=False)
        print(f"removed {ifname}")


def show() -> None:
    """List our interfaces with MAC and addresses."""
    aliases = {link["ifname"]: str(link.get("ifalias", "")) for link in _ip_json("link", "show")}
    for link in _ip_json("addr", "show"):
        alias = aliases.get(link["ifname"], "")
        if alias.startswith(ALIAS + " "):
            addrs = " ".join(a["local"] for a in link.get("addr_info", []) if a["family"] == "inet")
            print(f"{link['ifname']}  {link.get('address', '')}  {addrs}  {alias}")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["up", "down", "show"])
    p.add_argument("--config", help="onvifcam TOML configuration (for up)")
    p.add_argument("--state-dir", help="state directory, as given to onvifcam serve")
    p.add_argument("--parent", default="", help="parent interface (default: by subnet)")
    p.add_argument("--prefix", type=int, default=0, help="prefix length of the camera subnet")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    if args.command == "down":
        down(args.dry_run)
        return 0
    if args.command == "show":
        show()
        return 0
    if not args.config:
        p.error("up needs --config")
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        print(f"camera_net: {exc}", file=sys.stderr)
        return 2
    cfg = with_overrides(cfg, state_dir=args.state_dir)
    plans = plan(cfg, args.parent, args.prefix)
    if not plans:
        print("camera_net: no camera has a non-loopback IPv4 address; nothing to do")
        return 0
    up(plans, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
