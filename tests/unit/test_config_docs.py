"""Every configuration key is documented in README.md with its default.

The README's TOML blocks are read line by line (``key = value`` under ``[section]``,
commented-out lines included); each key of each config dataclass must appear under its
section, and for the single sections ([server], [limits]...) one of its lines must show the
default value.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

from onvifcam import config as C

README = Path(__file__).resolve().parents[2] / "README.md"
# defaults that depend on the machine (shown as their usual value)
_COMPUTED = {("server", "state_dir")}
_ARRAYS: dict[str, type] = {
    "cameras": C.CameraConfig,
    "fleets": C.FleetConfig,
    "hooks": C.HookConfig,
}


def documented() -> dict[tuple[str, str], list[str]]:
    """(section, key) -> the values written for it in the README's TOML blocks."""
    text = README.read_text(encoding="utf-8")
    found: dict[tuple[str, str], list[str]] = {}
    for block in re.findall(r"```toml\n(.*?)```", text, re.S):
        section = ""
        for line in block.splitlines():
            head = re.match(r"\s*#?\s*\[\[?\s*([A-Za-z_]+)", line)
            if head and re.match(r"\s*#?\s*\[", line):
                section = head.group(1)
                continue
            m = re.match(r"\s*#?\s*([a-z_0-9]+)\s*=\s*(.*)", line)
            if m and section:
                found.setdefault((section, m.group(1)), []).append(_strip_comment(m.group(2)))
    return found


def _strip_comment(value: str) -> str:
    out, quote = [], ""
    for ch in value:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        out.append(ch)
    return "".join(out).strip()


def _parse(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return None


def _same(written: Any, default: Any) -> bool:
    if isinstance(default, tuple):
        return isinstance(written, list) and tuple(written) == default
    if isinstance(default, bool) or isinstance(written, bool):
        return written is default
    if isinstance(default, int | float) and isinstance(written, int | float):
        return float(written) == float(default)
    return bool(written == default)


def test_every_key_is_in_the_readme_with_its_default() -> None:
    found = documented()
    missing: list[str] = []
    wrong: list[str] = []
    for section, cls in {**C._SECTIONS, **_ARRAYS}.items():
        instance = cls()
        for f in dataclasses.fields(cls):
            values = found.get((section, f.name))
            if not values:
                missing.append(f"[{section}] {f.name}")
                continue
            if section in _ARRAYS or (section, f.name) in _COMPUTED:
                continue
            default = getattr(instance, f.name)
            if not any(_same(_parse(v), default) for v in values):
                wrong.append(f"[{section}] {f.name}: README says {values}, default is {default!r}")
    assert not missing, "keys not documented in README.md: " + ", ".join(missing)
    assert not wrong, "README.md shows another default: " + "; ".join(wrong)


def test_the_checker_sees_a_missing_key() -> None:
    found = documented()
    assert ("server", "http_port") in found
    assert ("server", "no_such_key") not in found


def test_check_config_exit_status_and_message(tmp_path: Path, capsys: Any) -> None:
    from onvifcam.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nrtsp_prot = 1\n")
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: [server]: unknown key 'rtsp_prot' (did you mean 'rtsp_port'?)" in err
    good = tmp_path / "good.toml"
    good.write_text('[[hooks]]\non = "stream_ready"\ncommand = "true"\n')
    assert main(["check-config", str(good)]) == 0
    assert "OK (0 cameras, 0 path policies, 1 hooks)" in capsys.readouterr().out


def test_json_log_lines() -> None:
    import json
    import logging

    from onvifcam.cli import JsonFormatter

    rec = logging.LogRecord("onvifcam.x", logging.WARNING, __file__, 1, "a %s", ("b",), None)
    rec.stream_path = "cam"
    out = json.loads(JsonFormatter().format(rec))
    assert out["level"] == "warning" and out["logger"] == "onvifcam.x"
    assert out["message"] == "a b" and out["stream_path"] == "cam"
    assert out["time"].endswith("+00:00")
