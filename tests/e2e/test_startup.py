"""Start-up edges: which listener failed and why, clean-up after a failed start, two servers
on one host with flags alone, SIGHUP, ``discover`` into a closed pipe, the serving log line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onvifcam.addressing import display_host, url_host
from onvifcam.app import App
from onvifcam.config import Config, ServerConfig, from_dict
from onvifcam.netutil import BindError, Listener, describe
from tests.helpers import (
    ROOT,
    SERVE_PORTS_ZERO,
    ServerProc,
    _die_with_parent,
    free_port,
    free_ports,
    rtsp_exchange,
    status_of,
)
from tests.netns import can_make_netns, lan

PY = sys.executable


def _cfg(tmp: Path, server: dict[str, Any] | None = None, **sections: Any) -> Config:
    """A loopback-only config on free ports; ``server``/sections override keys."""
    data: dict[str, Any] = {
        "server": {
            "host": "127.0.0.1",
            "rtsp_port": 0,
            "rtmp_port": 0,
            "rtmps_port": 0,
            "http_port": 0,
            "state_dir": str(tmp / "state"),
            "uvloop": False,
            **(server or {}),
        },
        "rtsp": {"rtp_port": 0, "rtcp_port": 0},
        "onvif": {"port_range_start": 0, "port_range_end": 0},
        "discovery": {"port": 0, "mdns": False},
        "srt": {"port": 0},
        **sections,
    }
    return from_dict(data, "<test>")


@contextlib.contextmanager
def held(proto: str, port: int = 0) -> Iterator[int]:
    """Occupy a port on 127.0.0.1 (a TCP listener or a bound UDP socket); yields it."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", port))
        if proto == "tcp":
            s.listen()
        yield s.getsockname()[1]


def _free_pair() -> int:
    """An even port whose odd neighbour is free too, right now (UDP and TCP)."""
    return free_ports(2, udp=True, even=True)


def _bindable(port: int, proto: str = "tcp") -> bool:
    """Whether a plain bind (no SO_REUSEADDR) to 127.0.0.1:port works now."""
    try:
        with held(proto, port):
            return True
    except OSError:
        return False


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


# --------------------------------------------------------------------------- failed start


async def test_failed_start_stops_what_already_started(tmp_path: Path) -> None:
    """RTMP starts last: when its port is taken, RTSP, RTP/RTCP, HTTP and discovery, all
    bound before it, are closed again before the error reaches the caller."""
    rtsp_port, http_port, rtp_port = free_port(), free_port(), _free_pair()
    cameras = [{"name": "Lobby", "path": "lobby", "auth": False}]
    with held("tcp") as rtmp_port:
        cfg = _cfg(
            tmp_path,
            {"rtsp_port": rtsp_port, "http_port": http_port, "rtmp_port": rtmp_port},
            rtsp={"rtp_port": rtp_port, "rtcp_port": rtp_port + 1},
            cameras=cameras,
        )
        fds = _open_fds()
        app = App(cfg)
        with pytest.raises(BindError) as err:
            await app.start()
        assert err.value.listener.role == "RTMP port"
        assert err.value.listener.port == rtmp_port
        # Everything started before RTMP is gone: the ports are free again at once...
        assert _bindable(rtsp_port), "the RTSP listener was left open"
        assert _bindable(http_port), "the HTTP listener was left open"
        assert _bindable(rtp_port, "udp") and _bindable(rtp_port + 1, "udp")
        # ...and so are the camera's ONVIF socket, discovery's sockets and every task.
        await asyncio.sleep(0)
        assert _open_fds() - fds == set()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []


async def test_failed_start_in_the_middle_stops_the_earlier_parts(tmp_path: Path) -> None:
    """The HTTP port taken: the RTSP server started before it is closed again."""
    rtsp_port = free_port()
    with held("tcp") as http_port:
        app = App(_cfg(tmp_path, {"rtsp_port": rtsp_port, "http_port": http_port}))
        with pytest.raises(BindError, match=r"--http-port or \[server\] http_port"):
            await app.start()
        assert _bindable(rtsp_port)


# --------------------------------------------------------------------------- messages

# (listener, how to take its port, config overrides, role, flag, key)
CASES = {
    "rtsp": ("tcp", lambda p: {"server": {"rtsp_port": p}}, "RTSP port", "--rtsp-port",
             "[server] rtsp_port"),
    "rtp": ("udp", lambda p: {"rtsp": {"rtp_port": p, "rtcp_port": p + 1}}, "RTSP RTP port",
            "--rtp-port", "[rtsp] rtp_port"),
    "rtcp": ("udp", lambda p: {"rtsp": {"rtp_port": p - 1, "rtcp_port": p}},
             "RTSP RTCP port", "--rtp-port", "[rtsp] rtcp_port"),
    "http": ("tcp", lambda p: {"server": {"http_port": p}}, "HTTP port", "--http-port",
             "[server] http_port"),
    "rtmp": ("tcp", lambda p: {"server": {"rtmp_port": p}}, "RTMP port", "--rtmp-port",
             "[server] rtmp_port"),
    "rtmps": ("tcp", lambda p: {"server": {"rtmps_port": p}}, "RTMPS port", "--rtmps-port",
              "[server] rtmps_port"),
    "srt": ("udp", lambda p: {"srt": {"port": p}}, "SRT port", "--srt-port", "[srt] port"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
async def test_port_in_use_names_the_listener_and_its_setting(tmp_path: Path, name: str) -> None:
    proto, override, role, flag, key = CASES[name]
    port = {"rtp": _free_pair(), "rtcp": _free_pair() + 1}.get(name) or free_port()
    extra: dict[str, Any] = {}
    if name == "rtmps":
        cert, key_file = _self_signed(tmp_path)
        extra["rtmp"] = {"tls_cert": str(cert), "tls_key": str(key_file)}
    with held(proto, port):
        changes = override(port)
        cfg = _cfg(tmp_path, changes.pop("server", None), **changes, **extra)
        with pytest.raises(BindError) as err:
            await App(cfg).start()
    text = str(err.value)
    assert text.startswith(f"{proto} 127.0.0.1:{port} ({role}; {flag}"), text
    assert key in text and "is already in use" in text
    assert "pick another port, or 0 for any free one" in text
    assert "\n" not in text and "Errno" not in text


def test_messages_for_privileged_ports_foreign_addresses_and_names() -> None:
    lis = Listener("tcp", "127.0.0.1", 554, "RTSP port", "--rtsp-port or [server] rtsp_port")
    text = describe(lis, PermissionError(13, "Permission denied"))
    assert "permission denied, ports below 1024 need root or CAP_NET_BIND_SERVICE" in text
    far = Listener("udp", "192.0.2.1", 8000, "RTSP RTP port", "--rtp-port or [rtsp] rtp_port")
    text = describe(far, OSError(99, "Cannot assign requested address"))
    assert "192.0.2.1 is not an address of this host" in text and "--host or [server] host" in text
    text = describe(lis, socket.gaierror(-2, "Name or service not known"))
    assert "cannot resolve the address '127.0.0.1'" in text
    # uvloop hides the errno in __cause__: still recognised
    wrapped = OSError("could not bind to local_addr")
    wrapped.__cause__ = OSError(98, "Address already in use")
    assert "is already in use" in str(BindError(far, wrapped))
    assert BindError(far, wrapped).errno == 98


def _serve(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "onvifcam", "serve", "--state-dir", tempfile.mkdtemp(prefix="onvifcam-st-"),
         *SERVE_PORTS_ZERO, *args],
        capture_output=True, text=True, timeout=timeout, cwd=str(ROOT),
    )  # fmt: skip


def test_udp_port_in_use_is_one_line_naming_the_rtp_port() -> None:
    port = _free_pair()
    with held("udp", port):
        r = _serve("--host", "127.0.0.1", "--rtsp-port", "0", "--rtp-port", str(port))
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"onvifcam: cannot start: udp 127.0.0.1:{port} (RTSP RTP port; --rtp-port or [rtsp] "
        f"rtp_port) is already in use (ss -lunp 'sport = :{port}' shows by what); pick "
        "another port, or 0 for any free one"
    ), r.stderr


def test_privileged_port_says_so() -> None:
    cmd = ["--host", "127.0.0.1", "--rtsp-port", "554"]
    if os.geteuid() == 0:
        # root: drop the capability that lets it bind low ports, as an ordinary user lacks it
        assert shutil.which("setpriv"), "needs setpriv (util-linux) to drop the capability"
        r = subprocess.run(
            ["setpriv", "--bounding-set", "-net_bind_service", PY, "-m", "onvifcam", "serve",
             "--state-dir", tempfile.mkdtemp(prefix="onvifcam-st-"), *SERVE_PORTS_ZERO, *cmd],
            capture_output=True, text=True, timeout=30, cwd=str(ROOT),
        )  # fmt: skip
    else:
        r = _serve(*cmd)
    assert r.returncode == 1, r.stderr
    assert "tcp 127.0.0.1:554 (RTSP port; --rtsp-port or [server] rtsp_port)" in r.stderr
    assert "ports below 1024 need root or CAP_NET_BIND_SERVICE" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_address_not_on_this_host_says_so() -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails, nothing is sent
    r = _serve("--host", "192.0.2.1", "--rtsp-port", "0")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "onvifcam: cannot start: tcp 192.0.2.1:0 (RTSP port; --rtsp-port or [server] "
        "rtsp_port): 192.0.2.1 is not an address of this host; set --host or [server] host "
        "to one of its addresses (ip -br addr lists them), or 0.0.0.0 for all of them"
    ), r.stderr


# --------------------------------------------------------------------------- two servers

FLAGS_ALL_ZERO = SERVE_PORTS_ZERO


def _start(args: list[str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    p = subprocess.Popen(
        [PY, "-m", "onvifcam", "serve", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
        preexec_fn=_die_with_parent,
    )  # fmt: skip
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line.startswith("onvifcam ready "):
        p.kill()
        _out, err = p.communicate()
        raise AssertionError(f"not ready: {line!r}\n{err[-2000:]}")
    return p, dict(tok.split("=", 1) for tok in line.split()[2:])


def _stop(p: subprocess.Popen[str]) -> str:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        _out, err = p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        _out, err = p.communicate()
    assert p.returncode == 0, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    return err


def test_two_servers_on_one_host_with_flags_only(tmp_path: Path) -> None:
    """No config file: port 0 everywhere from the command line, one state dir each."""
    servers = []
    try:
        for name in ("a", "b"):
            servers.append(_start([*FLAGS_ALL_ZERO, "--state-dir", str(tmp_path / name)]))
        (_pa, a), (_pb, b) = servers
        for key in ("rtsp_port", "rtp_port", "rtcp_port", "http_port", "discovery_port"):
            assert a[key] != b[key] and int(a[key]) > 0 and int(b[key]) > 0, (key, a, b)
        for ports in (a, b):
            assert int(ports["rtcp_port"]) == int(ports["rtp_port"]) + 1
            reply = rtsp_exchange(int(ports["rtsp_port"]), b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
            assert status_of(reply) == 200
            url = f"http://127.0.0.1:{ports['http_port']}/api/cameras"
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.status == 200 and b'"cameras"' in resp.read()
    finally:
        for p, _ in servers:
            _stop(p)


def test_section_flags_reach_the_config() -> None:
    from onvifcam.cli import _section_overrides, build_parser

    args = build_parser().parse_args(
        ["serve", "--rtp-port", "9000", "--onvif-ports", "9100-9199", "--discovery-port", "0"]
    )
    cfg = _section_overrides(Config(), args)
    assert (cfg.rtsp.rtp_port, cfg.rtsp.rtcp_port) == (9000, 9001)
    assert (cfg.onvif.port_range_start, cfg.onvif.port_range_end) == (9100, 9199)
    assert cfg.discovery.port == 0
    args = build_parser().parse_args(["serve", "--rtp-port", "0", "--onvif-ports", "0"])
    cfg = _section_overrides(Config(), args)
    assert (cfg.rtsp.rtp_port, cfg.rtsp.rtcp_port) == (0, 0)
    assert (cfg.onvif.port_range_start, cfg.onvif.port_range_end) == (0, 0)
    for bad in (["--onvif-ports", "9199-9100"], ["--rtp-port", "65535"], ["--onvif-ports", "0-5"]):
        r = subprocess.run(
            [PY, "-m", "onvifcam", "serve", *bad],
            capture_output=True, text=True, timeout=20, cwd=str(ROOT),
        )  # fmt: skip
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr


# --------------------------------------------------------------------------- signals, pipes


def test_sighup_is_logged_and_the_server_keeps_serving() -> None:
    srv = ServerProc().start()
    try:
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGHUP)
        done = "cameras added none, updated none, removed none"  # the reload's summary
        assert done in srv.wait_log(done, timeout=10)
        assert srv.proc.poll() is None
        reply = rtsp_exchange(srv.rtsp_port, b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        assert status_of(reply) == 200
    finally:
        srv.stop()  # exit status 0, no traceback


def test_discover_into_a_closed_pipe_exits_quietly() -> None:
    """`onvifcam discover | head -0`: the reader is gone before the table is printed."""
    srv = ServerProc(
        config='[[cameras]]\nname = "Lobby"\npath = "lobby"\n',
        extra_args=["--discovery-port", "0"],
    ).start()
    try:
        port = str(srv.ports["discovery_port"])
        args = ["discover", "--address", "127.0.0.1", "--port", port, "--timeout", "1"]
        # the same probe with a reader: it finds the camera, so there is output to write
        ok = subprocess.run(
            [PY, "-m", "onvifcam", *args], capture_output=True, text=True, timeout=30,
            cwd=str(ROOT),
        )  # fmt: skip
        assert ok.returncode == 0 and "Lobby" in ok.stdout, ok.stderr
        p = subprocess.Popen(
            [PY, "-m", "onvifcam", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=str(ROOT),
        )  # fmt: skip
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()  # the reader goes away at once, as `head` does when it has enough
        err = p.stderr.read()
        p.wait(30)
        assert p.returncode == 0, err
        assert err == "", err
    finally:
        srv.stop()


# --------------------------------------------------------------------------- serving line


def test_url_host_is_pasteable() -> None:
    assert url_host("127.0.0.1") == "127.0.0.1"
    assert display_host(ServerConfig(host="0.0.0.0", advertise="cam.example")) == "cam.example"
    assert url_host("::1") == "[::1]"
    wild = display_host(ServerConfig(host="0.0.0.0"))
    assert wild not in ("0.0.0.0", "", "ANY-ADDRESS")
    socket.inet_aton(wild)


@pytest.mark.netns
@pytest.mark.skipif(not can_make_netns(), reason="needs root and iproute2 for namespaces")
def test_serving_line_names_a_reachable_address_for_the_wildcard() -> None:
    """Listening on 0.0.0.0 (inside a private namespace): the log names the host's address."""
    with lan("st") as net:
        srv = ServerProc(
            config='[server]\nhost = "0.0.0.0"\nrtsp_port = 0\nrtmp_port = 0\nhttp_port = 0\n'
            '[[cameras]]\nname = "Lobby"\npath = "lobby"\n[discovery]\nmdns = false\n',
            netns=net.server,
        ).start()
        try:
            log = srv.log()
            serving = next(x for x in log.splitlines() if " serving " in x)
            assert f"serving rtsp://{net.server_ip}:{srv.rtsp_port}/" in serving, serving
            assert "://0.0.0.0" not in log and "ANY-ADDRESS" not in log, log
            assert f"camera 'Lobby' (lobby) at http://{net.server_ip}:" in log, log
        finally:
            srv.stop()


async def test_camera_and_discovery_ports_in_use_are_logged_with_their_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """These do not stop the server, but the log line says which port, key and what to do."""
    cam_rtsp = free_port()
    with held("tcp") as cam_port, held("udp") as disc_port, socket.socket() as taken:
        # Gate's own RTSP port is taken on its own address (127.0.0.2, a loopback address)
        taken.bind(("127.0.0.2", cam_rtsp))
        taken.listen()
        cfg = _cfg(
            tmp_path,
            discovery={"port": disc_port, "mdns": False},
            cameras=[
                {"name": "Lobby", "path": "lobby", "auth": False, "onvif_port": cam_port},
                {"name": "Gate", "path": "gate", "auth": False, "address": "127.0.0.2",
                 "onvif_port": free_port(), "rtsp_listen": True, "rtsp_port": cam_rtsp},
            ],
        )  # fmt: skip
        app = App(cfg)
        await app.start()
        try:
            text = caplog.text
        finally:
            await app.stop()
    assert (
        f"onvif: tcp 127.0.0.1:{cam_port} (ONVIF port of camera 'Lobby'; cameras[0].onvif_port) "
        "is already in use" in text
    ), text
    assert "camera 'Lobby' is still reachable at /onvif/Lobby/device_service" in text
    assert (
        f"udp 127.0.0.1:{disc_port} (WS-Discovery port; --discovery-port or [discovery] port) "
        "is already in use" in text
    ), text
    assert (
        f"tcp 127.0.0.2:{cam_rtsp} (RTSP port of camera 'Gate'; cameras[1].rtsp_port, else "
        "--rtsp-port) is already in use" in text
    ), text
