"""GetSystemLog: two cameras whose names overlap ("Gate" and "Gate 2") each get only their
own log lines, made by the real code paths (SOAP refusals, streams publishing and leaving),
not the lines of the other camera, of a path that merely contains the name, or of a user
called like a camera. Responses are validated against the ONVIF schemas."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from onvifcam.cameras import CameraRegistry
from onvifcam.config import from_dict
from onvifcam.media.stream import StreamRegistry
from onvifcam.onvif.soap import Context, Dispatcher
from onvifcam.state import StateStore
from onvifcam.web.server import operation_table
from tests.onvif_schema import envelope, security_header, validate
from tests.unit.test_onvif_services import encoded_gop, publish

TDS = 'xmlns="http://www.onvif.org/ver10/device/wsdl"'
GET_LOG = f"<GetSystemLog {TDS}><LogType>System</LogType></GetSystemLog>"


@pytest.fixture
def world(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.DEBUG, logger="onvifcam")
    cam = {"username": "admin", "password": "secret"}
    cfg = from_dict(
        {
            "server": {"state_dir": str(tmp_path)},
            "cameras": [
                {"name": "Gate", "path": "gate", "sub_path": "gate/sub", **cam},
                {"name": "Gate 2", "path": "gate2", **cam},
            ],
        }
    )
    streams = StreamRegistry(gop_cache_bytes=1 << 22, media_timeout=15, max_streams=10)
    reg = CameraRegistry(cfg, StateStore(tmp_path), streams)
    streams.listeners.append(reg.stream_changed)
    reg.load()
    yield reg, streams, Dispatcher(operation_table(), clock_skew=300)
    reg.close()


def soap(world: Any, camera: str, body: str, user: str = "admin", password: str = "secret") -> str:
    reg, _streams, disp = world
    cam = reg.cameras[camera]

    def make(u: Any, soap_ns: str) -> Context:
        return Context(
            camera=cam,
            user=u,
            soap_ns=soap_ns,
            xaddr=lambda s: f"http://127.0.0.1:8080/onvif/{s}_service",
            stream_uri=lambda p, scheme: f"{scheme}://127.0.0.1:8554/{p}",
            snapshot_uri=lambda t: f"http://127.0.0.1:8080/onvif/snapshot?profile={t}",
            host="127.0.0.1",
            http_port=8080,
            rtsp_port=8554,
        )

    resp = disp.dispatch(envelope(body, security_header(user, password)), make, cam)
    validate(resp.body)
    return resp.body.decode()


def system_log(world: Any, camera: str) -> list[str]:
    body = soap(world, camera, GET_LOG)
    text = (
        body.split("<tt:String>", 1)[1].split("</tt:String>", 1)[0] if "<tt:String>" in body else ""
    )
    return [ln for ln in text.splitlines() if ln]


def test_overlapping_names_each_get_only_their_lines(world: Any) -> None:
    _reg, streams, _disp = world
    # a client of each camera logs in as a user named like the other camera
    soap(world, "Gate 2", f"<GetDeviceInformation {TDS}/>", user="Gate", password="x")
    soap(world, "Gate", f"<GetDeviceInformation {TDS}/>", user="Gate 2", password="x")
    # streams: each camera's, Gate's sub stream, and paths that merely contain "gate"
    for path in ("gate", "gate2", "gate/sub", "gate.old", "gate:2"):
        stream = streams.get_or_create(path)
        publish(stream, encoded_gop())
        stream.unpublish(stream.publisher, "done")  # type: ignore[arg-type]
    logging.getLogger("onvifcam.test").warning("camera %r did a thing", "Gate 2")
    logging.getLogger("onvifcam.test").warning("camera 'Gate' did another")

    gate, gate2 = system_log(world, "Gate"), system_log(world, "Gate 2")
    assert not any("onvif Gate 2: " in ln or "'Gate 2' did" in ln for ln in gate), gate
    assert not any("onvif Gate: " in ln or "'Gate' did" in ln for ln in gate2), gate2
    assert any("onvif Gate: " in ln and "unknown user 'Gate 2'" in ln for ln in gate), gate
    assert any("onvif Gate 2: " in ln and "unknown user 'Gate'" in ln for ln in gate2), gate2
    for who, lines, own, foreign in (
        ("Gate", gate, ("gate", "gate/sub"), ("gate2", "gate.old", "gate:2")),
        ("Gate 2", gate2, ("gate2",), ("gate", "gate/sub", "gate.old", "gate:2")),
    ):
        for path in foreign:
            assert not any(f"stream {path}:" in ln for ln in lines), (who, path, lines)
        for path in own:
            assert any(f"stream {path}: publisher test left" in ln for ln in lines), (who, path)
    assert any("camera 'Gate' did another" in ln for ln in gate)
    assert any("camera 'Gate 2' did a thing" in ln for ln in gate2)


def test_an_explicit_camera_key_wins(world: Any) -> None:
    reg, _streams, _disp = world
    key = reg.cameras["Gate 2"].key
    logging.getLogger("onvifcam.test").warning("about %s", "Gate", extra={"camera_key": key})
    assert any("about Gate" in ln for ln in system_log(world, "Gate 2"))
    assert not any("about Gate" in ln for ln in system_log(world, "Gate"))
