"""Camera configuration checks, state files and the camera registry's naming."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from onvifcam.cameras import CameraRegistry, slugify
from onvifcam.config import ConfigError, from_dict
from onvifcam.media.stream import StreamRegistry
from onvifcam.state import StateStore, atomic_write, file_name


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"cameras": [{"path": "a", "onvif_port": 9000}, {"path": "b", "onvif_port": 9000}]},
            "already used by cameras[0]",
        ),
        ({"cameras": [{"path": "a", "onvif_port": 8080}]}, "is the [server] http_port"),
        ({"cameras": [{"path": "a", "password": "x"}]}, "password without username"),
        ({"cameras": [{"path": "a", "sub_path": "/a/"}]}, "sub_path is the same as path"),
        ({"cameras": [{"path": "a", "address": "lobby"}]}, "is not an IP address"),
        ({"onvif": {"snapshot_offline": "black"}}, "snapshot_offline"),
        ({"onvif": {"address_port": 70000}}, "address_port"),
        ({"onvif": {"password": "x"}}, "password without username"),
        ({"cameras": [{"path": "a", "colour": "red"}]}, "unknown key 'colour'"),
    ],
)
def test_bad_camera_config_names_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        from_dict(data, "test.toml")
    assert message in str(exc.value)
    assert "test.toml" in str(exc.value)


def test_same_port_on_distinct_addresses_is_fine() -> None:
    cams = [
        {"path": "a", "onvif_port": 9000, "address": "127.0.0.2"},
        {"path": "b", "onvif_port": 9000, "address": "127.0.0.3"},
    ]
    assert len(from_dict({"cameras": cams}).cameras) == 2


def test_atomic_write_replaces_and_is_private(tmp_path: Path) -> None:
    target = tmp_path / "d" / "x.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_state_store_round_trip_and_broken_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save("live/cam 1", {"uuid": "u"})
    assert store.load("live/cam 1")["uuid"] == "u"
    assert store.keys() == ["live/cam 1"]
    assert file_name("live/cam 1").startswith("live-cam-1-")
    store.path("broken").write_text("{not json")
    assert store.load("broken") == {}  # logged, moved aside, defaults used
    assert store.path("broken").with_suffix(".broken").exists()
    other = store.path("mine")
    other.write_text(json.dumps({"key": "someone-else"}))
    assert store.load("mine") == {}


def test_registry_names_slugs_and_lookup(tmp_path: Path) -> None:
    cfg = from_dict(
        {"cameras": [{"name": "Front Door", "path": "front"}, {"name": "front-door", "path": "x"}]}
    )
    streams = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=10)
    reg = CameraRegistry(cfg, StateStore(tmp_path), streams)
    reg.load()
    a, b = reg.cameras["Front Door"], reg.cameras["front-door"]
    assert a.slug == "Front-Door" and b.slug == "front-door"
    assert reg.find("Front-Door") is a and reg.find("front") is a and reg.find("x") is b
    assert reg.find("nope") is None
    assert slugify("live/cam 1") == "live-cam-1"
    assert reg.claimed("front")
    assert len({a.uuid, b.uuid}) == 2 and len({a.mac, b.mac}) == 2
    assert int(a.mac.split(":")[0], 16) & 0x03 == 0x02  # locally administered unicast


def test_configured_mac_clash_keeps_identities_across_restarts(tmp_path: Path) -> None:
    mac = "02:00:00:00:00:01"
    cfg = from_dict(
        {
            "cameras": [
                {"name": "a", "path": "a", "mac": mac},
                {"name": "b", "path": "b", "mac": mac},
            ]
        }
    )

    def load() -> CameraRegistry:
        streams = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=10)
        reg = CameraRegistry(cfg, StateStore(tmp_path), streams)
        reg.load()
        return reg

    first = {k: c.uuid for k, c in load().cameras.items()}
    assert len(set(first.values())) == 2
    assert {k: c.uuid for k, c in load().cameras.items()} == first
