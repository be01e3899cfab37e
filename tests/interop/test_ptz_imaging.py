"""PTZ and Imaging through onvif-zeep-async against a real server: AbsoluteMove reaches its
target (polled until IDLE), ContinuousMove stops at its timeout, presets and imaging
settings survive a restart. Every response is schema-validated."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from onvif import ONVIFCamera

from tests.helpers import ServerProc
from tests.interop.test_onvif_ha import WSDL, api, validate_every_zeep_response

pytestmark = pytest.mark.interop
__all__ = ["validate_every_zeep_response"]

CONFIG = """
[server]
host = "127.0.0.1"
rtsp_port = 0
rtmp_port = 0
http_port = 0

[rtsp]
rtp_port = 0

[onvif]
port_range_start = 0
port_range_end = 0
address_port = 0
ptz_pan_speed = 4.0
ptz_zoom_speed = 4.0

[[cameras]]
name = "Dome"
path = "dome"
username = "admin"
password = "secret"
"""


async def until_idle(ptz: Any, token: str, limit: float = 20.0) -> Any:
    """GetStatus until both axes are IDLE; the last status."""
    deadline = time.monotonic() + limit
    while True:
        st = await ptz.GetStatus({"ProfileToken": token})
        if st.MoveStatus.PanTilt == "IDLE" and st.MoveStatus.Zoom == "IDLE":
            return st
        assert time.monotonic() < deadline, st
        await asyncio.sleep(0.05)


def test_ptz_and_imaging(tmp_path: Path) -> None:
    args = ["--state-dir", str(tmp_path / "state")]
    srv = ServerProc(config=CONFIG, extra_args=args).start()
    try:
        port = api(srv)["Dome"]["port"]

        async def first() -> None:
            cam = ONVIFCamera("127.0.0.1", port, "admin", "secret", WSDL, no_cache=True)
            try:
                await cam.update_xaddrs()
                media = await cam.create_media_service()
                profile = (await media.GetProfiles())[0]
                assert profile.PTZConfiguration.NodeToken == "PTZNode_1"
                token = profile.token
                ptz = await cam.create_ptz_service()
                await ptz.GetNodes()
                await ptz.GetConfigurationOptions({"ConfigurationToken": "PTZConfig_1"})
                await ptz.AbsoluteMove(
                    {
                        "ProfileToken": token,
                        "Position": {"PanTilt": {"x": 0.5, "y": -0.25}, "Zoom": {"x": 0.75}},
                    }
                )
                st = await until_idle(ptz, token)
                assert (st.Position.PanTilt.x, st.Position.PanTilt.y) == (0.5, -0.25)
                assert st.Position.Zoom.x == 0.75
                await ptz.ContinuousMove(
                    {
                        "ProfileToken": token,
                        "Velocity": {"PanTilt": {"x": -0.05, "y": 0}},
                        "Timeout": "PT1S",
                    }
                )
                st = await until_idle(ptz, token)  # stops by itself at the timeout
                assert 0.0 < st.Position.PanTilt.x < 0.5
                made = await ptz.SetPreset({"ProfileToken": token, "PresetName": "gate"})
                assert made
                imaging = await cam.create_imaging_service()
                src = profile.VideoSourceConfiguration.SourceToken
                await imaging.SetImagingSettings(
                    {
                        "VideoSourceToken": src,
                        "ImagingSettings": {"Brightness": 80.0, "Contrast": 20.0},
                    }
                )
                await imaging.GetOptions({"VideoSourceToken": src})
            finally:
                await cam.close()

        asyncio.run(first())
    finally:
        srv.stop()

    srv = ServerProc(config=CONFIG, extra_args=args).start()
    try:
        port = api(srv)["Dome"]["port"]

        async def second() -> None:
            cam = ONVIFCamera("127.0.0.1", port, "admin", "secret", WSDL, no_cache=True)
            try:
                await cam.update_xaddrs()
                ptz = await cam.create_ptz_service()
                presets = await ptz.GetPresets({"ProfileToken": "Profile_1"})
                assert [p.Name for p in presets] == ["gate"]
                assert presets[0].PTZPosition.Zoom.x == 0.75
                imaging = await cam.create_imaging_service()
                s = await imaging.GetImagingSettings({"VideoSourceToken": "VideoSource_1"})
                assert (s.Brightness, s.Contrast, s.ColorSaturation) == (80.0, 20.0, 50.0)
            finally:
                await cam.close()

        asyncio.run(second())
    finally:
        srv.stop()
