"""mDNS / DNS-SD advertising of every camera with zeroconf, on the server's event loop.

Each camera gets two services and a host name of its own:

- ``<name>._rtsp._tcp.local.`` on the RTSP port, TXT ``path=/<stream path>``;
- ``<name>._http._tcp.local.`` on its ONVIF port, TXT ``type=onvif``,
  ``path=/onvif/device_service`` plus its EPR uuid, MAC and model;
- ``<hostname>.local.`` (the ONVIF GetHostname value) with the camera's own address, else
  the addresses of the interfaces discovery works on.

A name already taken on the link is renamed while probing (``name-2``, ...).
:meth:`MdnsAdvertiser.update` diffs the wanted set against what is registered, so cameras
that appear, change or turn NonDiscoverable are registered, updated or withdrawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from onvifcam.netutil import binding

log = logging.getLogger(__name__)

RTSP_TYPE = "_rtsp._tcp.local."
HTTP_TYPE = "_http._tcp.local."
_LABEL_MAX = 63


@dataclass(frozen=True)
class MdnsCamera:
    """What is advertised for one camera."""

    key: str
    name: str
    hostname: str
    addresses: tuple[str, ...]
    rtsp_port: int
    rtsp_path: str
    http_port: int
    http_path: str = "/onvif/device_service"
    txt: tuple[tuple[str, str], ...] = ()


def _instance(name: str) -> str:
    raw = name.replace(".", "-").strip() or "camera"
    data = raw.encode()[:_LABEL_MAX]
    return data.decode("utf-8", "ignore")


def _hostname(name: str) -> str:
    return (name or "onvifcam").lower()[:_LABEL_MAX] + ".local."


def service_infos(cam: MdnsCamera) -> list[ServiceInfo]:
    """The zeroconf ServiceInfo objects of one camera (RTSP first, then ONVIF/HTTP)."""
    inst = _instance(cam.name)
    server = _hostname(cam.hostname)
    out = []
    if cam.rtsp_port:
        out.append(
            ServiceInfo(
                RTSP_TYPE,
                f"{inst}.{RTSP_TYPE}",
                port=cam.rtsp_port,
                properties={"path": "/" + cam.rtsp_path.lstrip("/")},
                server=server,
                parsed_addresses=list(cam.addresses),
            )
        )
    if cam.http_port:
        props = {"type": "onvif", "path": cam.http_path, **dict(cam.txt)}
        out.append(
            ServiceInfo(
                HTTP_TYPE,
                f"{inst}.{HTTP_TYPE}",
                port=cam.http_port,
                properties=props,
                server=server,
                parsed_addresses=list(cam.addresses),
            )
        )
    return out


@dataclass
class _Entry:
    cam: MdnsCamera
    infos: list[ServiceInfo] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class MdnsAdvertiser:
    """Registers, updates and withdraws the cameras' DNS-SD services."""

    def __init__(self, interfaces: list[str], concurrency: int = 32) -> None:
        self.interfaces = interfaces
        self._zc: AsyncZeroconf | None = None
        self._entries: dict[str, _Entry] = {}
        self._sem = asyncio.Semaphore(concurrency)
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.registered = 0
        self.stop_timeout = 5.0

    async def start(self) -> None:
        """Open the mDNS sockets on the chosen interfaces."""
        with binding(
            "udp",
            "0.0.0.0",
            5353,
            "mDNS, a fixed port",
            "[discovery] mdns",
            advice="stop the program holding it, or set [discovery] mdns = false",
        ):
            self._zc = AsyncZeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only)
        log.info("mdns: advertising cameras on %s", ", ".join(self.interfaces))

    def names(self) -> dict[str, list[str]]:
        """Camera key -> the service names it ended up with (after conflict renames)."""
        return {k: [i.name for i in e.infos] for k, e in self._entries.items()}

    def update(self, cameras: list[MdnsCamera]) -> None:
        """Make the advertised set equal ``cameras`` (work happens in background tasks)."""
        if self._zc is None or self._closing:
            return
        wanted = {c.key: c for c in cameras}
        for key in [k for k in self._entries if k not in wanted]:
            self._spawn(self._withdraw(self._entries.pop(key)))
        for key, cam in wanted.items():
            old = self._entries.get(key)
            if old is not None and old.cam == cam:
                continue
            new = _Entry(cam)
            new.task = self._spawn(self._register(new, old))
            self._entries[key] = new

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _register(self, entry: _Entry, old: _Entry | None = None) -> None:
        if old is not None:
            await self._withdraw(old)
        zc = self._zc
        if zc is None:
            return
        pending = []
        async with self._sem:  # bounds the probing phase, not the announcements
            for info in service_infos(entry.cam):
                want = info.name
                try:
                    # probing (and renaming) happens here; then the service is registered
                    announced = await zc.async_register_service(info, allow_name_change=True)
                except (asyncio.CancelledError, GeneratorExit):
                    raise
                except Exception as exc:
                    log.warning("mdns: cannot register %s: %s", want, exc)
                    continue
                entry.infos.append(info)
                pending.append(announced)
                self.registered += 1
                if info.name != want:
                    log.warning("mdns: %s is taken on the network; using %s", want, info.name)
                else:
                    log.debug("mdns: registered %s", info.name)
        for announced in pending:
            with contextlib.suppress(Exception):
                await announced

    async def _withdraw(self, entry: _Entry) -> None:
        if entry.task is not None and not entry.task.done():
            entry.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await entry.task
        zc = self._zc
        if zc is None:
            return
        for info in entry.infos:
            with contextlib.suppress(Exception):
                await (await zc.async_unregister_service(info))
                log.debug("mdns: withdrew %s", info.name)
        entry.infos.clear()

    async def stop(self) -> None:
        """Withdraw every service (goodbye packets) and close the sockets."""
        self._closing = True
        zc, self._zc = self._zc, None
        if zc is None:
            return
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        try:
            async with asyncio.timeout(self.stop_timeout):
                await zc.async_unregister_all_services()
        except TimeoutError:
            log.warning("mdns: withdrawing services took more than %.0f s", self.stop_timeout)
        except Exception as exc:
            log.warning("mdns: withdrawing services failed: %s", exc)
        with contextlib.suppress(Exception):
            await zc.async_close()
        self._entries.clear()
