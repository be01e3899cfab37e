"""PTZ and Imaging operations in-process with an injected clock; every response is validated
against the official ONVIF schemas (ver20 ptz and imaging)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from onvifcam.cameras import CameraRegistry, User
from onvifcam.config import ConfigError, from_dict
from onvifcam.media.stream import StreamRegistry
from onvifcam.onvif.ptz import PtzService, view_window
from onvifcam.onvif.ptzhead import Axis, Head
from onvifcam.onvif.soap import Context, Dispatcher
from onvifcam.state import StateStore
from onvifcam.web.server import operation_table
from tests.onvif_schema import envelope, fault_subcodes, security_header, validate

TPTZ = 'xmlns="http://www.onvif.org/ver20/ptz/wsdl"'
TIMG = 'xmlns="http://www.onvif.org/ver20/imaging/wsdl"'
TRT = 'xmlns="http://www.onvif.org/ver10/media/wsdl"'
TR2 = 'xmlns="http://www.onvif.org/ver20/media/wsdl"'
TDS = 'xmlns="http://www.onvif.org/ver10/device/wsdl"'
TT = "http://www.onvif.org/ver10/schema"
P = "<ProfileToken>Profile_1</ProfileToken>"


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class World:
    """A camera registry, a PTZ service on a fake clock and a dispatcher."""

    def __init__(self, tmp: Path, camera: dict[str, Any] | None = None) -> None:
        self.tmp = tmp
        self.cam_cfg = {"name": "Lobby", "path": "lobby", "username": "a", "password": "s"}
        self.cam_cfg.update(camera or {})
        self.clock = Clock()
        self.load()

    def load(self) -> None:
        """(Re)start: a new registry over the same state directory."""
        cfg = from_dict({"server": {"state_dir": str(self.tmp)}, "cameras": [self.cam_cfg]})
        streams = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=10)
        self.reg = CameraRegistry(cfg, StateStore(self.tmp), streams)
        self.reg.load()
        self.ptz = PtzService(self.clock)
        self.disp = Dispatcher(operation_table(ptz=self.ptz), clock_skew=300)

    def call(self, body: str, ok: bool = True) -> etree._Element:
        cam = self.reg.cameras["Lobby"]

        def make(user: User | None, soap_ns: str) -> Context:
            return Context(
                camera=cam,
                user=user,
                soap_ns=soap_ns,
                xaddr=lambda s: f"http://127.0.0.1:8080/onvif/{s}_service",
                stream_uri=lambda p, scheme: f"{scheme}://127.0.0.1:8554/{p}",
                snapshot_uri=lambda t: f"http://127.0.0.1:8080/onvif/snapshot?profile={t}",
            )

        created = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        resp = self.disp.dispatch(
            envelope(body, security_header("a", "s", created=created)), make, cam
        )
        root = validate(resp.body)
        if ok:
            assert resp.status == 200, resp.body.decode()
        else:
            assert resp.status in (400, 500), resp.body.decode()
            self.subcodes = fault_subcodes(resp.body)
        return root

    def status(self) -> tuple[tuple[float, float, float], tuple[str, str]]:
        root = self.call(f"<GetStatus {TPTZ}>{P}</GetStatus>")
        pt = root.find(f".//{{{TT}}}Position/{{{TT}}}PanTilt")
        z = root.find(f".//{{{TT}}}Position/{{{TT}}}Zoom")
        ms = root.find(f".//{{{TT}}}MoveStatus")
        assert pt is not None and z is not None and ms is not None
        return (
            (float(pt.get("x", "")), float(pt.get("y", "")), float(z.get("x", ""))),
            (ms[0].text or "", ms[1].text or ""),
        )


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path)


def test_axis_model() -> None:
    a = Axis(-1.0, 1.0)
    a.go(0.0, 0.5, 0.25)
    assert a.at(1.0) == pytest.approx(0.25) and a.moving(1.0)
    assert a.at(2.0) == 0.5 and not a.moving(2.0) and a.at(99) == 0.5
    a.drive(10.0, -1.0, 20.0)  # from 0.5 at -1/s: the limit -1 at t=11.5
    assert a.at(11.0) == pytest.approx(-0.5) and a.moving(11.0)
    assert a.at(12.0) == -1.0 and not a.moving(12.0)
    a.drive(20.0, 0.1, 21.0)  # times out at 21
    assert a.moving(20.5) and a.at(30.0) == pytest.approx(-0.9) and not a.moving(30.0)
    h = Head()
    h.pan.go(0.0, 1.0, 1.0)
    h.stop(0.5, pantilt=True, zoom=False)
    assert h.position(5.0) == (0.5, 0.0, 0.0) and h.moving(5.0) == (False, False)


def test_view_window() -> None:
    assert view_window(0, 0, 0) == (0.0, 0.0, 1.0, 1.0)
    assert view_window(1, -1, 0) == (0.0, 0.0, 1.0, 1.0)  # wide: nothing to pan across
    left, top, fw, fh = view_window(1, 1, 1)
    assert fw == fh == pytest.approx(0.25) and left + fw == pytest.approx(1.0) and top == 0.0


def test_capabilities_and_profiles(w: World) -> None:
    root = w.call(f"<GetServices {TDS}><IncludeCapability>true</IncludeCapability></GetServices>")
    ns = [e.text for e in root.iter("{http://www.onvif.org/ver10/device/wsdl}Namespace")]
    assert "http://www.onvif.org/ver20/ptz/wsdl" in ns
    assert "http://www.onvif.org/ver20/imaging/wsdl" in ns
    root = w.call(f"<GetCapabilities {TDS}><Category>All</Category></GetCapabilities>")
    assert root.find(f".//{{{TT}}}PTZ/{{{TT}}}XAddr").text.endswith("/ptz_service")
    assert root.find(f".//{{{TT}}}Imaging/{{{TT}}}XAddr").text.endswith("/imaging_service")
    caps = w.call(f"<GetServiceCapabilities {TPTZ}/>")
    assert (
        caps.find(".//{http://www.onvif.org/ver20/ptz/wsdl}Capabilities").get("MoveStatus")
        == "true"
    )
    root = w.call(f"<GetProfiles {TRT}/>")
    assert root.find(f".//{{{TT}}}PTZConfiguration/{{{TT}}}NodeToken").text == "PTZNode_1"
    root = w.call(f"<GetProfiles {TR2}><Type>All</Type></GetProfiles>")
    assert root.find(".//{http://www.onvif.org/ver20/media/wsdl}PTZ") is not None
    w.call(f"<RemovePTZConfiguration {TRT}>{P}</RemovePTZConfiguration>")
    root = w.call(f"<GetProfile {TRT}>{P}</GetProfile>")
    assert root.find(f".//{{{TT}}}PTZConfiguration") is None
    w.call(f"<GetStatus {TPTZ}>{P}</GetStatus>", ok=False)
    assert w.subcodes[-1] == "ter:NoPTZProfile"
    w.call(
        f"<AddPTZConfiguration {TRT}>{P}<ConfigurationToken>PTZConfig_1</ConfigurationToken>"
        "</AddPTZConfiguration>"
    )
    w.status()
    for body in (
        f"<GetNodes {TPTZ}/>",
        f"<GetNode {TPTZ}><NodeToken>PTZNode_1</NodeToken></GetNode>",
        f"<GetConfigurations {TPTZ}/>",
        f"<GetConfiguration {TPTZ}><PTZConfigurationToken>PTZConfig_1</PTZConfigurationToken>"
        "</GetConfiguration>",
        f"<GetConfigurationOptions {TPTZ}><ConfigurationToken>PTZConfig_1</ConfigurationToken>"
        "</GetConfigurationOptions>",
        f"<GetCompatibleConfigurations {TPTZ}>{P}</GetCompatibleConfigurations>",
    ):
        w.call(body)


def test_moves_take_time(w: World) -> None:
    w.call(
        f'<AbsoluteMove {TPTZ}>{P}<Position><tt:PanTilt xmlns:tt="{TT}" x="0.5" y="-0.5"/>'
        f'<tt:Zoom xmlns:tt="{TT}" x="1"/></Position></AbsoluteMove>'
    )
    assert w.status() == ((0.0, 0.0, 0.0), ("MOVING", "MOVING"))
    w.clock.t += 0.25  # pan/tilt at 1 unit/s, zoom at 0.5
    assert w.status() == ((0.25, -0.25, 0.125), ("MOVING", "MOVING"))
    w.clock.t += 0.5
    assert w.status() == ((0.5, -0.5, 0.375), ("IDLE", "MOVING"))
    w.clock.t += 2
    assert w.status() == ((0.5, -0.5, 1.0), ("IDLE", "IDLE"))
    # relative, clamped at the limit
    w.call(
        f'<RelativeMove {TPTZ}>{P}<Translation><tt:PanTilt xmlns:tt="{TT}" x="1" y="0"/>'
        "</Translation></RelativeMove>"
    )
    w.clock.t += 5
    assert w.status() == ((1.0, -0.5, 1.0), ("IDLE", "IDLE"))
    # continuous with a timeout, then stop at once
    w.call(
        f'<ContinuousMove {TPTZ}>{P}<Velocity><tt:PanTilt xmlns:tt="{TT}" x="-0.5" y="0"/>'
        "</Velocity><Timeout>PT1S</Timeout></ContinuousMove>"
    )
    w.clock.t += 0.5
    assert w.status() == ((0.75, -0.5, 1.0), ("MOVING", "IDLE"))
    w.clock.t += 10
    assert w.status() == ((0.5, -0.5, 1.0), ("IDLE", "IDLE"))
    w.call(
        f'<ContinuousMove {TPTZ}>{P}<Velocity><tt:Zoom xmlns:tt="{TT}" x="-1"/>'
        "</Velocity></ContinuousMove>"
    )
    w.clock.t += 0.5
    w.call(f"<Stop {TPTZ}>{P}</Stop>")
    w.clock.t += 5
    assert w.status() == ((0.5, -0.5, 0.75), ("IDLE", "IDLE"))


@pytest.mark.parametrize(
    ("body", "subcode"),
    [
        (
            f'<AbsoluteMove {TPTZ}>{P}<Position><tt:PanTilt xmlns:tt="{TT}" x="2" y="0"/>'
            "</Position></AbsoluteMove>",
            "ter:InvalidPosition",
        ),
        (
            f'<AbsoluteMove {TPTZ}>{P}<Position><tt:PanTilt xmlns:tt="{TT}" x="0" y="0" '
            'space="http://example.com/x"/></Position></AbsoluteMove>',
            "ter:SpaceNotSupported",
        ),
        (
            f'<ContinuousMove {TPTZ}>{P}<Velocity><tt:PanTilt xmlns:tt="{TT}" x="NaN" y="0"/>'
            "</Velocity></ContinuousMove>",
            "ter:InvalidVelocity",
        ),
        (
            f"<GotoPreset {TPTZ}>{P}<PresetToken>nope</PresetToken></GotoPreset>",
            "ter:NoToken",
        ),
        (f"<GetStatus {TPTZ}><ProfileToken>nope</ProfileToken></GetStatus>", "ter:NoProfile"),
        (
            f"<SetImagingSettings {TIMG}><VideoSourceToken>VideoSource_1</VideoSourceToken>"
            f'<ImagingSettings><Brightness xmlns="{TT}">101</Brightness></ImagingSettings>'
            "</SetImagingSettings>",
            "ter:SettingsInvalid",
        ),
        (
            f"<GetImagingSettings {TIMG}><VideoSourceToken>x</VideoSourceToken>"
            "</GetImagingSettings>",
            "ter:NoSource",
        ),
        (
            f"<Move {TIMG}><VideoSourceToken>VideoSource_1</VideoSourceToken>"
            f'<Focus><Continuous xmlns="{TT}"><Speed>1</Speed></Continuous></Focus></Move>',
            "ter:NoImagingForSource",
        ),
    ],
)
def test_faults(w: World, body: str, subcode: str) -> None:
    w.call(body, ok=False)
    assert w.subcodes[-1] == subcode


def test_presets_and_home_persist(w: World) -> None:
    w.call(
        f'<AbsoluteMove {TPTZ}>{P}<Position><tt:PanTilt xmlns:tt="{TT}" x="0.3" y="0.2"/>'
        "</Position></AbsoluteMove>"
    )
    w.clock.t += 10
    root = w.call(f"<SetPreset {TPTZ}>{P}<PresetName>door</PresetName></SetPreset>")
    token = root.find(".//{http://www.onvif.org/ver20/ptz/wsdl}PresetToken").text
    w.call(f"<SetPreset {TPTZ}>{P}<PresetName>door</PresetName></SetPreset>", ok=False)
    assert w.subcodes[-1] == "ter:PresetExist"
    w.call(f"<SetHomePosition {TPTZ}>{P}</SetHomePosition>")
    w.load()  # restart
    root = w.call(f"<GetPresets {TPTZ}>{P}</GetPresets>")
    presets = root.findall(".//{http://www.onvif.org/ver20/ptz/wsdl}Preset")
    assert [(p.get("token"), p.find(f"{{{TT}}}Name").text) for p in presets] == [(token, "door")]
    assert w.status() == ((0.3, 0.2, 0.0), ("IDLE", "IDLE"))  # starts at home
    w.call(f"<GotoHomePosition {TPTZ}>{P}</GotoHomePosition>")
    w.call(
        f'<AbsoluteMove {TPTZ}>{P}<Position><tt:PanTilt xmlns:tt="{TT}" x="-1" y="-1"/>'
        "</Position></AbsoluteMove>"
    )
    w.clock.t += 10
    w.call(f"<GotoPreset {TPTZ}>{P}<PresetToken>{token}</PresetToken></GotoPreset>")
    w.clock.t += 10
    assert w.status()[0] == (0.3, 0.2, 0.0)
    w.call(f"<RemovePreset {TPTZ}>{P}<PresetToken>{token}</PresetToken></RemovePreset>")
    w.load()
    assert (
        w.call(f"<GetPresets {TPTZ}>{P}</GetPresets>").find(
            ".//{http://www.onvif.org/ver20/ptz/wsdl}Preset"
        )
        is None
    )


def test_imaging_round_trip(w: World) -> None:
    src = "<VideoSourceToken>VideoSource_1</VideoSourceToken>"
    w.call(
        f"<SetImagingSettings {TIMG}>{src}<ImagingSettings>"
        f'<Brightness xmlns="{TT}">70</Brightness><Contrast xmlns="{TT}">33.5</Contrast>'
        f'<IrCutFilter xmlns="{TT}">OFF</IrCutFilter>'
        f'<WhiteBalance xmlns="{TT}"><Mode>MANUAL</Mode><CrGain>10</CrGain></WhiteBalance>'
        "</ImagingSettings></SetImagingSettings>"
    )
    w.load()
    root = w.call(f"<GetImagingSettings {TIMG}>{src}</GetImagingSettings>")
    s = root.find(".//{http://www.onvif.org/ver20/imaging/wsdl}ImagingSettings")
    got = {etree.QName(e).localname: (e.text or "").strip() for e in s}
    assert got["Brightness"] == "70" and got["Contrast"] == "33.5" and got["IrCutFilter"] == "OFF"
    assert got["ColorSaturation"] == "50"
    assert s.find(f"{{{TT}}}WhiteBalance/{{{TT}}}CrGain").text == "10"
    for body in ("GetOptions", "GetMoveOptions", "GetStatus", "Stop"):
        w.call(f"<{body} {TIMG}>{src}</{body}>")
    w.call(f"<GetServiceCapabilities {TIMG}/>")


def test_ptz_off(tmp_path: Path) -> None:
    w = World(tmp_path, {"ptz": False})
    root = w.call(f"<GetServices {TDS}><IncludeCapability>false</IncludeCapability></GetServices>")
    ns = [e.text for e in root.iter("{http://www.onvif.org/ver10/device/wsdl}Namespace")]
    assert "http://www.onvif.org/ver20/ptz/wsdl" not in ns
    assert w.call(f"<GetProfiles {TRT}/>").find(f".//{{{TT}}}PTZConfiguration") is None
    w.call(f"<GetNodes {TPTZ}/>", ok=False)


def test_config_keys() -> None:
    with pytest.raises(ConfigError, match="sub_stream"):
        from_dict({"cameras": [{"path": "a", "sub_stream": "yes"}]})
    with pytest.raises(ConfigError, match="ptz_pan_speed"):
        from_dict({"onvif": {"ptz_pan_speed": 0}})
