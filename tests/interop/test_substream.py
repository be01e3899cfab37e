"""Sub streams as onvif-zeep-async sees them: a camera fed H.265 with sub_stream = "transcode"
offers an H.264 Media1 profile that ffprobe reads at the size SetVideoEncoderConfiguration
set; a camera without sub_path lists one profile; a sub stream beyond [onvif] max_transcodes
is refused at DESCRIBE with 503 naming the key. Every response is schema-validated."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Iterator

import pytest
from onvif import ONVIFCamera

from onvifcam.media import h264
from tests.helpers import (
    LiveReader,
    ServerProc,
    ffmpeg_push,
    probe,
    rtsp_exchange,
    running,
    status_of,
    wait_online,
)
from tests.interop.test_onvif_ha import WSDL, api, validate_every_zeep_response

pytestmark = pytest.mark.interop
__all__ = ["validate_every_zeep_response"]  # the module fixture validates every response

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
max_transcodes = 1

[[cameras]]
name = "Hevc"
path = "hevc"
sub_stream = "transcode"
username = "admin"
password = "secret"

[[cameras]]
name = "Spare"
path = "spare"
sub_stream = "transcode"

[[cameras]]
name = "Plain"
path = "plain"
username = "admin"
password = "secret"
"""


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    """One server; ffmpeg pushes H.265 (libx265) to the transcoding camera."""
    server = ServerProc(config=CONFIG).start()
    pub = ffmpeg_push(
        server.url("hevc"),
        frames=1_000_000,
        size="640x360",
        gop=25,
        audio=False,
        codec="libx265",
        extra=["-preset", "ultrafast", "-x265-params", "log-level=error:bframes=0"],
    )
    try:
        wait_online(server.url("hevc"))
        yield server
    finally:
        with running(pub):
            pass
        server.stop()


def test_h265_camera_gives_media1_an_h264_sub(srv: ServerProc) -> None:
    port = api(srv)["Hevc"]["port"]

    async def go() -> str:
        cam = ONVIFCamera("127.0.0.1", port, "admin", "secret", WSDL, no_cache=True)
        try:
            await cam.update_xaddrs()
            media = await cam.create_media_service()
            profiles = await media.GetProfiles()
            assert len(profiles) == 2
            h264 = [
                p
                for p in profiles
                if p.VideoEncoderConfiguration and p.VideoEncoderConfiguration.Encoding == "H264"
            ]
            assert len(h264) == 1  # Media1 cannot name the H.265 main; the sub is H.264
            vec = h264[0].VideoEncoderConfiguration
            assert (vec.Resolution.Width, vec.Resolution.Height) == (640, 360)
            opts = await media.GetVideoEncoderConfigurationOptions(
                {"ConfigurationToken": vec.token}
            )
            sizes = {(r.Width, r.Height) for r in opts.H264.ResolutionsAvailable}
            assert (320, 180) in sizes
            vec.Resolution.Width, vec.Resolution.Height = 320, 180
            vec.RateControl.FrameRateLimit = 5
            await media.SetVideoEncoderConfiguration(
                {"Configuration": vec, "ForcePersistence": True}
            )
            got = await media.GetVideoEncoderConfiguration({"ConfigurationToken": vec.token})
            assert (got.Resolution.Width, got.Resolution.Height) == (320, 180)
            req = media.create_type("GetStreamUri")
            req.ProfileToken = h264[0].token
            req.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
            return str((await media.GetStreamUri(req)).Uri)
        finally:
            await cam.close()

    uri = asyncio.run(go())
    assert uri.endswith("/hevc/sub")
    # a DESCRIBE right after the SOAP answer already gets the new size: the set took the old
    # sub stream down and this waits for the new one (it once got the old SDP, then was cut)
    url = srv.url("hevc/sub")
    reply = rtsp_exchange(
        srv.rtsp_port, f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\n\r\n".encode(), wait=15
    )
    assert status_of(reply) == 200, reply[:300]
    sprop = re.search(rb"sprop-parameter-sets=([A-Za-z0-9+/=]+)", reply)
    assert sprop, reply
    sps = h264.parse_sps(h264.parse_sprop_parameter_sets(sprop.group(1).decode())[0])
    assert (sps.width, sps.height) == (320, 180)
    # the read starts the transcoder (decode H.265, encode H.264): slow on a busy machine
    video = [s for s in probe(uri, io_timeout=15) if s["codec_type"] == "video"]
    assert [(s["codec_name"], s["width"], s["height"]) for s in video] == [("h264", 320, 180)]
    stats = api(srv)["Hevc"]
    assert stats["online"]


def test_camera_without_sub_path_lists_one_profile(srv: ServerProc) -> None:
    port = api(srv)["Plain"]["port"]

    async def go() -> int:
        cam = ONVIFCamera("127.0.0.1", port, "admin", "secret", WSDL, no_cache=True)
        try:
            await cam.update_xaddrs()
            media = await cam.create_media_service()
            return len(await media.GetProfiles())
        finally:
            await cam.close()

    assert asyncio.run(go()) == 1


def _metrics(srv: ServerProc) -> dict[str, float]:
    """The unlabelled samples of /metrics (open to loopback by default)."""
    url = f"http://127.0.0.1:{srv.ports['http_port']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return {
        k: float(v)
        for k, _, v in (line.partition(" ") for line in text.splitlines())
        if k and not k.startswith("#") and "{" not in k
    }


def test_a_sub_stream_beyond_max_transcodes_is_refused_at_describe(srv: ServerProc) -> None:
    """...and the transcoder's counters are in /metrics."""
    reader = LiveReader(srv.url("hevc/sub"))  # takes the one transcode slot
    try:
        deadline = time.monotonic() + 30
        while reader.frames < 1 and reader.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reader.frames >= 1
        url = srv.url("spare/sub")
        reply = rtsp_exchange(srv.rtsp_port, f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\n\r\n".encode())
    finally:
        reader.stop_at(1)
    assert status_of(reply) == 503
    assert b"[onvif] max_transcodes = 1" in reply.split(b"\r\n", 1)[0]
    m = _metrics(srv)
    assert m["onvifcam_transcode_transcoders"] == 2
    assert m["onvifcam_transcode_refused"] >= 1
    assert m["onvifcam_transcode_frames_in"] >= m["onvifcam_transcode_frames_out"] >= 1
    assert m["onvifcam_transcode_decoded"] >= 1
    assert "onvifcam_transcode_dropped" in m
