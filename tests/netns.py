"""Private network namespaces joined by veth pairs, for multicast tests (root only).

Only addresses inside namespaces made here are used; nothing leaves the machine.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def can_make_netns() -> bool:
    """True when we are root and have iproute2."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class Lan:
    """Two hosts on one link: ``server`` and ``client`` namespaces with their addresses."""

    server: str
    client: str
    server_ip: str
    client_ip: str


_made = itertools.count()


@contextmanager
def lan(tag: str) -> Iterator[Lan]:
    """Two namespaces on a veth link (10.213.x.0/24), multicast routed onto the link.

    Names carry the process id and a counter, so pytest-xdist workers (and concurrent runs)
    never share a namespace or an interface name; the subnet needs no such care, as each
    link is alone in its own pair of namespaces.
    """
    uid = f"{os.getpid()}x{next(_made)}"
    a, b = f"oc-{tag}{uid}-s", f"oc-{tag}{uid}-c"
    va, vb = f"ocv{uid}s", f"ocv{uid}c"  # at most 15 characters: ocv + 7 + x + n + s
    subnet = 10 + os.getpid() % 200
    ips = (f"10.213.{subnet}.1", f"10.213.{subnet}.2")
    made: list[str] = []
    try:
        for ns in (a, b):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b)
        for ns, dev, ip in ((a, va, ips[0]), (b, vb, ips[1])):
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up", "multicast", "on")
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)
        yield Lan(a, b, ips[0], ips[1])
    finally:
        for ns in made:
            pids = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True
            ).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-9", pid], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
