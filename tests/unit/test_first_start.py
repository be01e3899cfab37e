"""Safe first start: the generated ONVIF admin password, its file, the printed address, and
who may read a stream over RTSP (path read users plus the cameras' ONVIF users)."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from onvifcam.addressing import display_host
from onvifcam.auth.gate import Gate
from onvifcam.cameras import CameraRegistry, User
from onvifcam.config import Config, ConfigError, PathConfig, ServerConfig, from_dict
from onvifcam.discovery.netif import Iface
from onvifcam.firststart import (
    PASSWORD_FILE,
    PasswordFileError,
    _create_once,
    generate_password,
    load_or_create,
    with_admin_password,
)
from onvifcam.media.stream import StreamRegistry
from onvifcam.rtsp.auth import Credentials
from onvifcam.state import StateStore


def test_generated_passwords_are_random_letters_and_digits() -> None:
    seen = {generate_password() for _ in range(200)}
    assert len(seen) == 200
    for pw in seen:
        assert len(pw) == 16 and pw.isalnum() and pw.isascii() and not pw.isdigit()
        assert not set(pw) & set("0O1lI")


def test_password_is_created_once_private_and_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    pw, new = load_or_create(state)
    assert new
    f = state / PASSWORD_FILE
    assert f.read_text() == pw + "\n"
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert load_or_create(state) == (pw, False)  # a restart gets the same password
    assert [p.name for p in state.iterdir()] == [PASSWORD_FILE]  # no temp files left


def test_a_second_creator_keeps_the_first_password(tmp_path: Path) -> None:
    f = tmp_path / PASSWORD_FILE
    assert _create_once(f, b"first\n")
    assert not _create_once(f, b"second\n")  # two servers starting at once: one wins
    assert f.read_text() == "first\n"
    assert [p.name for p in tmp_path.iterdir()] == [PASSWORD_FILE]


def test_an_operator_may_put_their_own_password_in_the_file(tmp_path: Path) -> None:
    f = tmp_path / PASSWORD_FILE
    f.write_text("  my-own.Pass  \n")
    os.chmod(f, 0o644)
    assert load_or_create(tmp_path) == ("my-own.Pass", False)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600  # made private again


@pytest.mark.parametrize(
    ("content", "why"),
    [(b"\n", "it is empty"), (b"two words\n", "spaces"), (b"x" * 65, "longer than 64")],
)
def test_an_unusable_password_file_is_a_clear_error(
    tmp_path: Path, content: bytes, why: str
) -> None:
    (tmp_path / PASSWORD_FILE).write_bytes(content)
    with pytest.raises(PasswordFileError) as exc:
        load_or_create(tmp_path)
    text = str(exc.value)
    assert why in text and str(tmp_path / PASSWORD_FILE) in text and "delete it" in text
    assert (tmp_path / PASSWORD_FILE).read_bytes() == content  # never silently replaced


def test_an_unwritable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(PasswordFileError) as exc:
        load_or_create(blocker)
    assert isinstance(exc.value, OSError)  # `onvifcam: cannot start: ...`, exit status 1
    assert "state_dir" in str(exc.value) and "[onvif] username and password" in str(exc.value)


def _streams() -> StreamRegistry:
    return StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=10)


def _cfg(tmp_path: Path, **data: Any) -> Config:
    return from_dict({"server": {"state_dir": str(tmp_path)}, **data})


def test_admin_password_applies_only_without_configured_credentials(tmp_path: Path) -> None:
    cfg, login = with_admin_password(_cfg(tmp_path))
    assert login is not None and login.new and login.user == "admin"
    assert (cfg.onvif.username, cfg.onvif.password) == ("admin", login.password)
    again, login2 = with_admin_password(_cfg(tmp_path))
    assert login2 is not None and not login2.new and login2.password == login.password
    assert again.onvif.password == login.password
    for data in (
        {"onvif": {"username": "op", "password": "pw"}},
        {"onvif": {"auth": False}},
        {"onvif": {"enabled": False}},
    ):
        other = tmp_path / "other"
        cfg = _cfg(other, **data)
        assert with_admin_password(cfg) == (cfg, None)
        assert not other.exists()  # nothing generated, nothing written


def test_cameras_use_the_admin_unless_they_have_their_own_credentials(tmp_path: Path) -> None:
    data = {
        "cameras": [
            {"name": "open", "path": "a"},
            {"name": "own", "path": "b", "username": "u", "password": "p"},
            {"name": "off", "path": "c", "auth": False},
        ]
    }
    cfg, login = with_admin_password(_cfg(tmp_path, **data))
    assert login is not None
    reg = CameraRegistry(cfg, StateStore(tmp_path), _streams())
    reg.load()
    reg._auto("live/x")
    users = {k: [(u.name, u.password) for u in c.users] for k, c in reg.cameras.items()}
    assert users["open"] == users["live/x"] == [("admin", login.password)]
    assert users["own"] == [("u", "p")]
    auth = {k: c.auth_required for k, c in reg.cameras.items()}
    assert auth == {"open": True, "own": True, "off": False, "live/x": True}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"onvif": {"auth": False, "username": "a"}}, "contradicts [onvif] username"),
        ({"onvif": {"rtsp_auth": "yes"}}, "[onvif] rtsp_auth must be 'path' or 'onvif'"),
        ({"cameras": [{"path": "a", "rtsp_auth": "on"}]}, "cameras[0].rtsp_auth must be"),
    ],
)
def test_bad_auth_settings_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        from_dict(data, "test.toml")
    assert message in str(exc.value) and "test.toml" in str(exc.value)


ETH = Iface("eth0", 2, ("192.168.1.5",), True)
LO = Iface("lo", 1, ("127.0.0.1",), True, loopback=True)
LINK_LOCAL = Iface("eth1", 3, ("169.254.3.4",), False)
DOWN = Iface("eth2", 4, ("10.0.0.9",), False, up=False)


@pytest.mark.parametrize(
    ("host", "advertise", "table", "shown"),
    [
        ("127.0.0.1", "cams.example", [LO, ETH], "cams.example"),  # as in the URLs served
        ("127.0.0.1", "", [LO, ETH], "127.0.0.1"),  # a specific host
        ("0.0.0.0", "cams.example", [LO, ETH], "cams.example"),
        ("0.0.0.0", "", [LO, DOWN, LINK_LOCAL, ETH], "192.168.1.5"),
        ("::", "", [LO, DOWN, LINK_LOCAL], "127.0.0.1"),
        ("0.0.0.0", "", [], "127.0.0.1"),
    ],
)
def test_printed_address_is_never_the_wildcard(
    host: str, advertise: str, table: list[Iface], shown: str
) -> None:
    assert display_host(ServerConfig(host=host, advertise=advertise), table) == shown


def test_rtsp_readers_are_the_path_users_plus_the_cameras_onvif_users() -> None:
    viewer = [Credentials("viewer", "v")]
    paths = {"pv": PathConfig(read_user="viewer", read_password="v")}
    cfg = dataclasses.replace(Config(), paths=paths)
    gate = Gate(cfg)
    assert gate.readers("pv") == viewer  # no camera registry attached
    cams = {
        "p": ([("admin", "A"), ("viewer", "v")], False),
        "pv": ([("admin", "A"), ("viewer", "v")], False),
        "q": ([("admin", "A")], True),
    }
    gate.camera_users = lambda path: cams.get(path, ([], False))
    assert gate.readers("p") == []  # open path, camera does not ask: stays open
    assert gate.readers("pv") == [Credentials("viewer", "v"), Credentials("admin", "A")]
    assert gate.readers("q") == [Credentials("admin", "A")]  # rtsp_auth = "onvif"
    assert gate.readers("other") == []


def test_registry_rtsp_users_follow_rtsp_auth(tmp_path: Path) -> None:
    data = {
        "onvif": {"username": "admin", "password": "A"},
        "cameras": [
            {"name": "main", "path": "m", "sub_path": "m/sub", "rtsp_auth": "onvif"},
            {"name": "plain", "path": "p"},
            {"name": "off", "path": "o", "auth": False, "rtsp_auth": "onvif"},
        ],
    }
    reg = CameraRegistry(_cfg(tmp_path, **data), StateStore(tmp_path), _streams())
    reg.load()
    reg.cameras["main"].create_users([User("bob", "b")])
    assert reg.rtsp_users("/m/sub/") == ([("admin", "A"), ("bob", "b")], True)
    assert reg.rtsp_users("p") == ([("admin", "A")], False)
    assert reg.rtsp_users("o") == ([("admin", "A")], False)  # ONVIF auth off: RTSP not forced
    assert reg.rtsp_users("nobody") == ([], False)
    cfg = _cfg(tmp_path / "2", onvif={"username": "a", "password": "b", "rtsp_auth": "onvif"})
    reg = CameraRegistry(cfg, StateStore(tmp_path / "2"), _streams())
    reg.load()
    reg._auto("live/x")
    assert reg.rtsp_users("live/x") == ([("a", "b")], True)  # [onvif] rtsp_auth is the default
