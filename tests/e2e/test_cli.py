"""The `onvifcam` command as a user runs it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from onvifcam import __version__
from tests.helpers import ROOT, SERVE_PORTS_ZERO, ServerProc, rtsp_exchange, status_of


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onvifcam", *args],
        capture_output=True, text=True, timeout=timeout, cwd=str(ROOT),
    )  # fmt: skip


def test_version() -> None:
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"onvifcam {__version__}"


def test_bad_config_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[server]\nrtsp_port = 'eighty'\n")
    r = run("serve", "--config", str(cfg))
    assert r.returncode == 2
    assert "configuration error" in r.stderr and "rtsp_port" in r.stderr
    assert "Traceback" not in r.stderr


def test_port_in_use_is_a_clear_error(server: ServerProc) -> None:
    port = server.rtsp_port
    r = run("serve", *SERVE_PORTS_ZERO, "--rtsp-port", str(port))
    assert r.returncode == 1
    # one line naming the listener, its flag and key, and what to do; no traceback
    assert r.stderr.strip() == (
        f"onvifcam: cannot start: tcp 127.0.0.1:{port} (RTSP port; --rtsp-port or "
        f"[server] rtsp_port) is already in use (ss -ltnp 'sport = :{port}' shows by "
        "what); pick another port, or 0 for any free one"
    ), r.stderr


def test_port_zero_ready_line_and_clean_sigint(tmp_path: Path) -> None:
    # No config file at all: built-in defaults with flags, as in the README.
    p = subprocess.Popen(
        [sys.executable, "-m", "onvifcam", "serve", "--host", "127.0.0.1", "--rtsp-port", "0",
         "--rtmp-port", "0", "--http-port", "0", "--rtp-port", "0", "--onvif-ports", "0",
         "--discovery-port", "0", "--srt-port", "0", "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
    )  # fmt: skip
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("onvifcam ready "), line
        ports = dict(tok.split("=", 1) for tok in line.split()[2:])
        port = int(ports["rtsp_port"])
        assert port > 0
        reply = rtsp_exchange(port, b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        assert status_of(reply) == 200 and b"ANNOUNCE" in reply
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        _out, err = p.communicate(timeout=15)
        assert p.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
