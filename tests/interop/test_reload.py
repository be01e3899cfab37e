"""SIGHUP re-reads the configuration: a camera added to the file answers ONVIF, while a
reader of another camera keeps decoding on the same connection."""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

from tests.helpers import LiveReader, ServerProc, ffmpeg_push, wait_online
from tests.onvif_schema import envelope, validate

TDS = 'xmlns="http://www.onvif.org/ver10/device/wsdl"'
BASE = '[[cameras]]\nname = "first"\npath = "reload/first"\n'
ADDED = BASE + '\n[[cameras]]\nname = "second"\npath = "reload/second"\nmodel = "Reloaded"\n'


def soap(port: int, slug: str, op: str) -> bytes:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/onvif/{slug}/device_service",
        data=envelope(f"<{op} {TDS}/>"),
        headers={"Content-Type": "application/soap+xml"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        return r.read()


def test_sighup_adds_a_camera_without_touching_a_reader() -> None:
    srv = ServerProc(config=BASE + "\n[stats]\ninterval = 0\n").start()
    try:
        assert srv.proc is not None and srv._tmp is not None
        cfg_path = Path(srv._tmp.name) / "config.toml"
        push = ffmpeg_push(srv.url("reload/first"), frames=1000, gop=25, audio=False)
        try:
            wait_online(srv.url("reload/first"))
            reader = LiveReader(srv.url("reload/first"))
            deadline = time.monotonic() + 30
            while reader.frames < 25 and time.monotonic() < deadline:
                time.sleep(0.1)
            mark = srv.log_size()
            cfg_path.write_text(cfg_path.read_text().replace(BASE, ADDED))
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 15
            while "reload of " not in srv.log_since(mark) and time.monotonic() < deadline:
                time.sleep(0.05)
            log = srv.log_since(mark)
            assert "cameras added ['second'], updated none, removed none" in log, log
            info = soap(srv.ports["http_port"], "second", "GetDeviceInformation")
            validate(info)
            assert b"Reloaded" in info
            before = reader.frames
            result = reader.stop_at(before + 50)
            assert result.video_frames >= before + 50
        finally:
            push.kill()
            push.wait()
        log = srv.log()
        # one PLAY for the reader (wait_online's probe is the other): never reconnected
        assert log.count("plays reload/first") == 2, log[-3000:]

        # a file with an error changes nothing, names the file and the key
        mark = srv.log_size()
        cfg_path.write_text(cfg_path.read_text() + "\n[metrics]\nenabeld = true\n")
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while "reload:" not in srv.log_since(mark) and time.monotonic() < deadline:
            time.sleep(0.05)
        text = srv.log_since(mark)
        assert "reload: configuration error, nothing changed:" in text
        assert "config.toml: [metrics]: unknown key 'enabeld' (did you mean 'enabled'?)" in text
        soap(srv.ports["http_port"], "second", "GetSystemDateAndTime")
    finally:
        srv.stop()
