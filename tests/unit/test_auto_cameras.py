"""Auto cameras: saved only once their stream carried video, removed when they never did,
and expired after ``[onvif] auto_expire`` seconds offline (clock passed in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onvifcam.cameras import Camera, CameraRegistry
from onvifcam.config import from_dict
from onvifcam.media.sdp import SessionDescription
from onvifcam.media.stream import StreamRegistry
from onvifcam.state import StateStore
from tests.unit.test_onvif_services import FakePublisher, encoded_gop, publish

SDP_NO_MEDIA_SENT = (
    "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=t\r\nt=0 0\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n"
)


def world(tmp_path: Path, **onvif: Any) -> tuple[CameraRegistry, StreamRegistry, list[str]]:
    cfg = from_dict(
        {
            "server": {"state_dir": str(tmp_path)},
            "onvif": onvif,
            "cameras": [{"name": "Lobby", "path": "lobby"}],
        }
    )
    streams = StreamRegistry(gop_cache_bytes=1 << 22, media_timeout=15, max_streams=50)
    reg = CameraRegistry(cfg, StateStore(tmp_path), streams)
    streams.listeners.append(reg.stream_changed)
    removed: list[str] = []
    reg.on_removed.append(lambda cam: removed.append(cam.key))
    reg.load()
    return reg, streams, removed


def files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "cameras").glob("*.json"))


def test_a_publish_that_never_carries_video_leaves_no_trace(tmp_path: Path) -> None:
    reg, streams, removed = world(tmp_path)
    before = files(tmp_path)
    for i in range(20):
        s = streams.get_or_create(f"fuzz/{i}")
        pub = FakePublisher()
        s.publish(pub, SessionDescription.parse(SDP_NO_MEDIA_SENT))
        cam = reg.cameras[f"fuzz/{i}"]
        assert cam.auto and not cam.persist
        cam.set_hostname("changed")  # a client's change stays in memory meanwhile
        reg.tick(1000.0)
        s.unpublish(pub, "gone")
        assert f"fuzz/{i}" not in reg.cameras
    assert removed == [f"fuzz/{i}" for i in range(20)]
    assert files(tmp_path) == before  # only the configured camera's file


def test_a_stream_with_video_is_saved_and_kept_across_restarts(tmp_path: Path) -> None:
    reg, streams, removed = world(tmp_path)
    publish(streams.get_or_create("live/a"), encoded_gop(), audio=False)
    cam = reg.cameras["live/a"]
    reg.tick()  # once a second: the stream has carried a keyframe, the camera is saved
    assert cam.persist
    assert any(n.startswith("live-a-") for n in files(tmp_path))
    s = streams.get("live/a")
    assert s is not None and s.publisher is not None
    s.unpublish(s.publisher, "done")
    assert "live/a" in reg.cameras and cam.offline_since is not None
    reg.tick(cam.offline_since + 10**9)  # auto_expire = 0: never
    assert "live/a" in reg.cameras and removed == []
    again, _s, _r = world(tmp_path)
    assert again.cameras["live/a"].uuid == cam.uuid


def test_offline_auto_cameras_expire(tmp_path: Path) -> None:
    reg, streams, removed = world(tmp_path, auto_expire=60.0)
    for path in ("live/a", "live/b"):
        publish(streams.get_or_create(path), encoded_gop(), audio=False)
    reg.tick()
    a, b = reg.cameras["live/a"], reg.cameras["live/b"]
    sa = streams.get("live/a")
    assert sa is not None and sa.publisher is not None
    sa.unpublish(sa.publisher, "done")
    gone_at = a.offline_since
    assert gone_at is not None
    reg.tick(gone_at + 59.0)
    assert "live/a" in reg.cameras
    reg.tick(gone_at + 61.0)
    assert "live/a" not in reg.cameras and removed == ["live/a"]
    assert not any(n.startswith("live-a-") for n in files(tmp_path))
    # online auto cameras and configured cameras never expire
    reg.tick(gone_at + 10**6)
    assert set(reg.cameras) == {"Lobby", "live/b"} and b.online
    # a restart keeps counting from when the camera went offline
    sb = streams.get("live/b")
    assert sb is not None and sb.publisher is not None
    sb.unpublish(sb.publisher, "done")
    left = b.offline_since
    assert left is not None
    again, _s, removed2 = world(tmp_path, auto_expire=60.0)
    restored: Camera = again.cameras["live/b"]
    assert restored.offline_since == left
    again.tick(left + 61.0)
    assert "live/b" not in again.cameras and removed2 == ["live/b"]
    assert files(tmp_path) == [n for n in files(tmp_path) if not n.startswith("live-")]


def test_auto_expire_config() -> None:
    assert from_dict({}).onvif.auto_expire == 0.0
    assert from_dict({"onvif": {"auto_expire": 3600}}).onvif.auto_expire == 3600.0
