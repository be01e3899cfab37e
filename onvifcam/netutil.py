"""Listening sockets that fail with a useful message.

Every bind site wraps its ``bind`` / ``create_server`` / ``create_datagram_endpoint`` in
:func:`binding`, which turns the bare ``[Errno 98] Address already in use`` into a
:class:`BindError` naming the protocol, address, port, what the listener is for, the flag or
config key that sets it, and what to do::

    udp 0.0.0.0:8000 (RTSP RTP port; --rtp-port or [rtsp] rtp_port) is already in use
    (ss -lunp 'sport = :8000' shows by what); pick another port, or 0 for any free one
"""

from __future__ import annotations

import errno as errnos
import socket
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

if typing.TYPE_CHECKING:
    from onvifcam.cameras import Camera
    from onvifcam.config import CameraConfig

SERVER_HOST = "--host or [server] host"


@dataclass(frozen=True)
class Listener:
    """What a listening socket is for and which setting chooses its address and port."""

    proto: str  # "tcp" or "udp"
    host: str
    port: int
    role: str  # e.g. "RTSP port"
    setting: str  # flag and/or config key of the port, e.g. "--rtsp-port or [server] rtsp_port"
    host_setting: str = SERVER_HOST  # flag and/or config key of the address
    zero_ok: bool = True  # whether port 0 (any free port) is a valid choice
    advice: str = ""  # what to do instead of picking another port, for fixed ports

    @property
    def where(self) -> str:
        """``proto host:port`` with IPv6 addresses in brackets and the wildcard spelt out."""
        host = self.host or "0.0.0.0"
        if ":" in host:
            host = f"[{host}]"
        return f"{self.proto} {host}:{self.port}"


def os_errno(exc: BaseException) -> int | None:
    """The errno of an OSError, looking through the wrappers asyncio and uvloop add."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            break
        code = getattr(seen, "errno", None)
        if isinstance(code, int):
            return code
        seen = seen.__cause__ or seen.__context__
    return None


def _strerror(exc: BaseException) -> str:
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            break
        text = getattr(seen, "strerror", None)
        if text:
            return str(text)
        seen = seen.__cause__ or seen.__context__
    return str(exc)


def describe(lis: Listener, exc: BaseException) -> str:
    """One line saying which listener failed, why, and what to do about it."""
    what = f"{lis.where} ({lis.role}; {lis.setting})"
    other = lis.advice or (
        "pick another port, or 0 for any free one" if lis.zero_ok else "pick another port"
    )
    if isinstance(exc, socket.gaierror):
        return (
            f"{what}: cannot resolve the address {lis.host!r} ({_strerror(exc)}); "
            f"set {lis.host_setting} to an IP address of this host"
        )
    code = os_errno(exc)
    if code == errnos.EADDRINUSE:
        tool = "ss -ltnp" if lis.proto == "tcp" else "ss -lunp"
        return f"{what} is already in use ({tool} 'sport = :{lis.port}' shows by what); {other}"
    if code in (errnos.EACCES, errnos.EPERM):
        if 0 < lis.port < 1024:
            return (
                f"{what}: permission denied, ports below 1024 need root or "
                f"CAP_NET_BIND_SERVICE; pick a port of 1024 or above, or run with that "
                f"capability"
            )
        return f"{what}: permission denied ({_strerror(exc)}); {other}"
    if code == errnos.EADDRNOTAVAIL:
        return (
            f"{what}: {lis.host or '0.0.0.0'} is not an address of this host; set "
            f"{lis.host_setting} to one of its addresses (ip -br addr lists them), "
            f"or 0.0.0.0 for all of them"
        )
    return f"{what}: {_strerror(exc)}"


class BindError(OSError):
    """A listener could not be opened; ``str()`` is the whole actionable message."""

    def __init__(self, listener: Listener, cause: BaseException) -> None:
        message = describe(listener, cause)
        super().__init__(os_errno(cause) or 0, message)
        self.listener = listener
        self.message = message

    def __str__(self) -> str:
        return self.message


@contextmanager
def binding(
    proto: str,
    host: str,
    port: int,
    role: str,
    setting: str,
    host_setting: str = SERVER_HOST,
    zero_ok: bool = True,
    advice: str = "",
) -> Iterator[Listener]:
    """Turn an OSError raised inside the block into a :class:`BindError` for this listener."""
    lis = Listener(proto, host, port, role, setting, host_setting, zero_ok, advice)
    try:
        yield lis
    except BindError:
        raise
    except OSError as exc:
        raise BindError(lis, exc) from exc


def _entry(cameras: Sequence[CameraConfig], cam: Camera) -> str:
    """``cameras[i]``, the config entry of a configured camera ("" for an auto camera)."""
    for i, c in enumerate(cameras):
        if c is cam.cfg:
            return f"cameras[{i}]"
    return ""


def camera_listener(cameras: Sequence[CameraConfig], cam: Camera) -> tuple[str, str, str]:
    """(role, port setting, address setting) of a camera's ONVIF socket."""
    entry = _entry(cameras, cam)
    if cam.cfg.onvif_port:
        setting = f"{entry}.onvif_port"
    elif cam.address and not cam.auto:
        setting = "[onvif] address_port"
    else:
        setting = "--onvif-ports or [onvif] port_range_start/port_range_end"
    host_setting = f"{entry}.address" if cam.address and entry else SERVER_HOST
    return f"ONVIF port of camera {cam.name!r}", setting, host_setting


def camera_rtsp_listener(cameras: Sequence[CameraConfig], cam: Camera) -> tuple[str, str, str]:
    """(role, port setting, address setting) of a camera's own RTSP listener."""
    entry = _entry(cameras, cam) or "cameras[]"
    return (
        f"RTSP port of camera {cam.name!r}",
        f"{entry}.rtsp_port, else --rtsp-port",
        f"{entry}.address",
    )
