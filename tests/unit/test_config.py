"""config: TOML to frozen dataclasses, with errors that name the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from onvifcam.config import Config, ConfigError, load, with_overrides


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "onvifcam.toml"
    p.write_text(text)
    return p


def test_defaults_match_the_documented_ports() -> None:
    c = Config()
    assert (c.server.rtsp_port, c.server.rtmp_port, c.server.http_port) == (8554, 1935, 8080)
    assert c.limits.publish_timeout == 10 and c.limits.media_timeout == 15
    assert c.limits.idle_timeout == 30


def test_full_example_loads(tmp_path: Path) -> None:
    cfg = load(
        write(
            tmp_path,
            """
[server]
host = "127.0.0.1"
rtsp_port = 0
advertise = "192.0.2.10"
[limits]
max_connections = 10
media_timeout = 3
[defaults]
read_user = "v"
read_password = "p"
[paths."live/cam1"]
on_conflict = "replace"
[[cameras]]
name = "Lobby"
path = "lobby"
address = "127.0.0.2"
""",
        )
    )
    assert cfg.server.advertise == "192.0.2.10" and cfg.limits.media_timeout == 3.0
    assert cfg.path_policy("/live/cam1/").on_conflict == "replace"
    assert cfg.path_policy("live/cam1").read_user == "v", "paths inherit [defaults]"
    assert cfg.path_policy("elsewhere").read_user == "v"
    assert cfg.cameras[0].name == "Lobby"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[server]\nrtsp_prot = 1\n", "[server]: unknown key 'rtsp_prot'"),
        ("[server]\nrtsp_port = 'x'\n", "[server].rtsp_port: expected an integer"),
        ("[server]\nrtsp_port = 70000\n", "port 70000 is outside 0..65535"),
        ("[limits]\nidle_timeout = -1\n", "must not be negative"),
        ("[defaults]\non_conflict = 'fight'\n", "on_conflict must be 'reject' or 'replace'"),
        ("[rtsp]\nmulticast_range = '10.0.0.0/8'\n", "is not a multicast range"),
        ("[[cameras]]\nname = 'x'\n", "cameras[0]: 'path' is required"),
        ("[[cameras]]\npath = 'a'\naddress = 'nope'\n", "is not an IP address"),
        ("[bogus]\n", "unknown section or key 'bogus'"),
        ("[rtsp]\nmulticast_port_base = 65530\n", "leaves no room for 16 tracks"),
        ("[server\n", "invalid TOML"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(p)
    assert needle in str(err.value)
    assert str(p) in str(err.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "absent.toml")


def test_cli_overrides_replace_only_given_values() -> None:
    c = with_overrides(Config(), rtsp_port=0, host=None)
    assert c.server.rtsp_port == 0 and c.server.host == "0.0.0.0"
