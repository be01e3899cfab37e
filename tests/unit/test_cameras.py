"""The cameras package without sockets: the typed state reads today's state files unchanged,
and the registry adds, updates and removes cameras and says so to its subscribers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from onvifcam.cameras import (
    VEC_MAIN,
    AudioView,
    Camera,
    CameraRegistry,
    CameraState,
    RegistryError,
    User,
)
from onvifcam.config import CameraConfig, from_dict
from onvifcam.media.stream import StreamRegistry
from onvifcam.state import StateStore

# A state file as the single-module cameras.py wrote it (every kind of client change).
OLD_DOC: dict[str, Any] = {
    "added_scopes": ["onvif://www.onvif.org/extra/x"],
    "discovery_mode": "NonDiscoverable",
    "encoders": {"VideoEncoder_1": {"multicast": {"port": 0}, "name": "enc", "quality": 4.0}},
    "hostname": "lobby-cam",
    "key": "Lobby",
    "last_online": 1700000000.5,
    "last_seen": {
        "main": {
            "bitrate_kbps": 8000,
            "codec": "H265",
            "fps": 30.0,
            "gov_length": 60,
            "height": 2160,
            "profile": "Main",
            "width": 3840,
        },
        "main_audio": {
            "bitrate_kbps": 64,
            "channels": 2,
            "codec": "MPEG4-GENERIC",
            "sample_rate": 48000,
        },
        "sub_audio": None,
    },
    "mac": "4e:59:69:c1:7d:85",
    "port": 8123,
    "profiles": [
        {
            "aec": None,
            "asc": None,
            "fixed": True,
            "name": "MainStream",
            "token": "Profile_1",
            "vec": "VideoEncoder_1",
            "vsc": "VideoSourceConfig_1",
        },
        {
            "aec": None,
            "asc": None,
            "fixed": True,
            "name": "SubStream",
            "token": "Profile_2",
            "vec": "VideoEncoder_2",
            "vsc": "VideoSourceConfig_1",
        },
        {
            "aec": None,
            "asc": None,
            "fixed": False,
            "name": "Mine",
            "token": "Profile_x",
            "vec": "VideoEncoder_1",
            "vsc": "VideoSourceConfig_1",
        },
    ],
    "scopes": ["onvif://www.onvif.org/name/Lobby", "onvif://www.onvif.org/location/hall"],
    "serial": "OC4E1B0EB7B000",
    "time": {"dst": True, "offset": -96047453.9899211, "type": "Manual", "tz": "CET-1CEST"},
    "users": [
        {"level": "Operator", "name": "op", "password": "pw1"},
        {"level": "User", "name": "viewer", "password": "pw2"},
    ],
    "uuid": "4e1b0eb7-b000-4e8e-84bd-cde0be7f6da7",
    "version": 1,
}


def world(tmp_path: Path, **cfg: Any) -> tuple[CameraRegistry, list[tuple[str, str]]]:
    data = {
        "server": {"state_dir": str(tmp_path)},
        "onvif": {"port_range_start": 8100, "port_range_end": 8200, "max_profiles": 4},
        "cameras": [{"name": "Lobby", "path": "lobby"}],
        **cfg,
    }
    streams = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=50)
    reg = CameraRegistry(from_dict(data), StateStore(tmp_path), streams)
    heard: list[tuple[str, str]] = []
    reg.on_added.append(lambda c: heard.append(("added", c.key)))
    reg.on_updated.append(lambda old, new: heard.append(("updated", new.key)))
    reg.on_removed.append(lambda c: heard.append(("removed", c.key)))
    return reg, heard


def write_old(tmp_path: Path) -> Path:
    path = StateStore(tmp_path).path("Lobby")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**OLD_DOC, "future_key": [1, 2]}, indent=1))
    return path


def test_state_round_trips_an_old_document_unchanged() -> None:
    doc = {k: v for k, v in OLD_DOC.items() if k not in ("key", "version")}
    doc["future_key"] = {"kept": True}
    assert CameraState.from_json(doc).to_json() == doc


def test_a_camera_reads_an_existing_state_file(tmp_path: Path) -> None:
    path = write_old(tmp_path)
    reg, _ = world(tmp_path)
    reg.load()
    cam = reg.cameras["Lobby"]
    assert cam.uuid == OLD_DOC["uuid"] and cam.mac == OLD_DOC["mac"]
    assert cam.serial == OLD_DOC["serial"] and cam.preferred_port == 8123
    assert [(u.name, u.level) for u in cam.users] == [("op", "Operator"), ("viewer", "User")]
    assert cam.time_settings == {"type": "Manual", "tz": "CET-1CEST", "dst": True}
    assert cam.hostname == "lobby-cam" and cam.discovery_mode == "NonDiscoverable"
    assert cam.config_scopes == OLD_DOC["scopes"] and cam.added_scopes == OLD_DOC["added_scopes"]
    # no sub_path: the stored fixed sub profile is not shown (it would be the main stream)
    assert [p.token for p in cam.profiles] == ["Profile_1", "Profile_x"]
    assert cam.encoder_settings(VEC_MAIN)["quality"] == 4.0
    v = cam.video("main")
    assert (v.codec, v.width, v.height, v.fps, v.gov_length) == ("H265", 3840, 2160, 30.0, 60)
    assert cam.audio("main") == AudioView("MPEG4-GENERIC", 48000, 2, 64)
    assert cam.audio("sub") is None
    cam.set_hostname("lobby-2")  # a write keeps everything else, unknown keys included
    after = json.loads(path.read_text())
    assert after == {**OLD_DOC, "future_key": [1, 2], "hostname": "lobby-2"}


@pytest.mark.parametrize(
    "doc",
    [
        {"users": "x", "time": 5, "scopes": "s", "profiles": {}, "port": "80", "auto": "yes"},
        {"users": [{"password": "no name"}, 7], "profiles": [{"bad": 1}], "last_seen": []},
        {"last_seen": {"main": {"codec": "H264", "nonsense": 1}, "main_audio": "x"}},
        {"uuid": 5, "mac": None, "discovery_mode": "Sometimes", "encoders": {"a": 1}},
    ],
)
def test_a_hand_edited_file_never_stops_a_start(doc: dict[str, Any]) -> None:
    s = CameraState.from_json(doc)
    assert s.users == [] and s.port == 0 and not s.auto
    assert s.discovery_mode == "Discoverable"
    assert "main" not in s.seen_video
    json.dumps(s.to_json())


def test_a_broken_uuid_still_gets_a_serial(tmp_path: Path) -> None:
    path = StateStore(tmp_path).path("Lobby")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"key": "Lobby", "uuid": "not-a-uuid"}))
    reg, _ = world(tmp_path)
    reg.load()
    assert reg.cameras["Lobby"].serial.startswith("OC")


def test_factory_default_keeps_identity_port_and_last_seen(tmp_path: Path) -> None:
    write_old(tmp_path)
    reg, _ = world(tmp_path)
    reg.load()
    cam = reg.cameras["Lobby"]
    cam.factory_default()
    assert cam.uuid == OLD_DOC["uuid"] and cam.preferred_port == 8123
    assert cam.hostname == "onvifcam-Lobby" and len(cam.users) == 0
    assert len(cam.profiles) == 1 and cam.video("main").codec == "H265"


def test_add_update_remove_notify_and_persist(tmp_path: Path) -> None:
    reg, heard = world(tmp_path)
    reg.load()
    cam = reg.add(CameraConfig(name="Dock", path="dock"))
    assert reg.cameras["Dock"] is cam and ("added", "Dock") in heard
    cam.create_users([User("bob", "b")])
    uuid = cam.uuid
    new = reg.update(cam, CameraConfig(name="Dock", path="dock2", location="pier"))
    assert reg.cameras["Dock"] is new and new is not cam
    assert heard[-1] == ("updated", "Dock")
    assert new.uuid == uuid and new.user("bob") is not None  # identity and changes kept
    assert new.path == "dock2" and "onvif://www.onvif.org/location/pier" in new.config_scopes
    cam.set_hostname("stale")  # the replaced object no longer writes the state file
    assert CameraState.from_json(reg.store.load("Dock")).hostname == ""
    reg.remove(new, "test")
    assert "Dock" not in reg.cameras and heard[-1] == ("removed", "Dock")
    assert not reg.store.path("Dock").exists()
    assert reg.stats() == {
        "cameras": 1, "auto": 0, "online": 0, "added": 2, "updated": 1, "removed": 1,
        "refused": 0,
    }  # fmt: skip


def test_add_and_update_refuse_clashes(tmp_path: Path) -> None:
    reg, heard = world(tmp_path, onvif={"max_cameras": 3})
    reg.load()
    with pytest.raises(RegistryError, match="exists"):
        reg.add(CameraConfig(name="Lobby", path="elsewhere"))
    with pytest.raises(RegistryError, match="shows that path"):
        reg.add(CameraConfig(name="Other", path="/lobby/"))
    with pytest.raises(RegistryError, match="needs a path"):
        reg.add(CameraConfig(name="Empty", path=""))
    dock = reg.add(CameraConfig(name="Dock", path="dock"))
    with pytest.raises(RegistryError, match="shows that path"):
        reg.update(dock, CameraConfig(name="Dock", path="dock", sub_path="lobby"))
    reg.add(CameraConfig(name="Yard", path="yard"))
    with pytest.raises(RegistryError, match="max_cameras"):
        reg.add(CameraConfig(name="Gate", path="gate"))
    assert reg.stats()["refused"] == 5
    assert [h for h in heard if h[0] != "added"] == []
    stale = Camera("Nope", CameraConfig(path="n"), reg.cfg, reg.store, reg.streams, auto=False)
    with pytest.raises(RegistryError, match="no camera"):
        reg.update(stale, CameraConfig(name="Nope", path="n"))


def test_untyped_settings_of_other_components_persist(tmp_path: Path) -> None:
    reg, _ = world(tmp_path)
    reg.load()
    cam = reg.cameras["Lobby"]
    cam.doc["relays"] = {"Relay_1": {"mode": "Monostable"}}
    cam.save()
    reg2, _ = world(tmp_path)
    reg2.load()
    assert reg2.cameras["Lobby"].doc["relays"] == {"Relay_1": {"mode": "Monostable"}}
    assert reg2.cameras["Lobby"].uuid == cam.uuid


def test_changes_are_events_on_the_bus(tmp_path: Path) -> None:
    from onvifcam.events import CameraAdded, CameraRemoved, CameraUpdated, Event, EventBus

    bus = EventBus()
    got: list[Event] = []
    bus.subscribe(got.append)
    cfg = from_dict({"server": {"state_dir": str(tmp_path)}, "cameras": [{"path": "a"}]})
    streams = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=5)
    reg = CameraRegistry(cfg, StateStore(tmp_path), streams, bus=bus)
    reg.load()
    cam = reg.add(CameraConfig(name="Dock", path="dock"))
    reg.update(cam, CameraConfig(name="Dock", path="dock2"))
    reg.remove(reg.cameras["Dock"], "test")
    assert [(type(e), e.camera) for e in got] == [  # type: ignore[attr-defined]
        (CameraAdded, "a"),
        (CameraAdded, "Dock"),
        (CameraUpdated, "Dock"),
        (CameraRemoved, "Dock"),
    ]
