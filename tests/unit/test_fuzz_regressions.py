"""Every committed fuzz seed and crash input, replayed through the fuzz targets.

The targets are the functions of ``scripts/fuzz.py`` (no atheris needed here): each feeds
bytes to a sans-I/O parser the way the server does and may raise only that parser's own
error types. A crash the fuzzer saved under ``tests/fuzz_corpus/crashes/<target>/`` fails
here until the parser is fixed, and guards the fix afterwards.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("onvifcam_fuzz", ROOT / "scripts" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


fuzz = _load()
CASES = [(name, path) for name in fuzz.TARGETS for path in fuzz.corpus_files(name)]


@pytest.mark.parametrize(
    ("name", "path"), CASES, ids=[f"{p.parent.name}/{p.name}" for _n, p in CASES]
)
def test_input_raises_only_the_parsers_own_errors(name: str, path: Path) -> None:
    exc = fuzz.replay(name, path.read_bytes())
    if exc is not None:
        text = "".join(traceback.format_exception(exc))
        pytest.fail(f"{name}: {path.name} raised {type(exc).__name__}\n{text}")


def test_every_target_has_seeds_and_every_crash_a_target() -> None:
    for name in fuzz.TARGETS:
        assert any((fuzz.CORPUS / name).iterdir()), f"no seeds for {name}"
    known = set(fuzz.TARGETS)
    for d in (fuzz.CORPUS, fuzz.CRASHES):
        for sub in d.iterdir():
            if sub.is_dir() and sub != fuzz.CRASHES:
                assert sub.name in known, f"{sub} belongs to no fuzz target"


def test_replay_reports_exceptions_that_are_not_the_parsers_own() -> None:
    def run(data: bytes) -> None:
        if data == b"own":
            raise KeyError("the parser's own error in this fake target")
        if data == b"bug":
            [][1]  # an IndexError escaping: the kind of bug the fuzzer finds
        fuzz.never_raises(int, data)

    fuzz.TARGETS["fake"] = fuzz.Target("fake", run, lambda: (KeyError,), "a fake parser")
    try:
        assert fuzz.replay("fake", b"own") is None
        assert fuzz.replay("fake", b"7") is None
        assert isinstance(fuzz.replay("fake", b"bug"), IndexError)
        assert isinstance(fuzz.replay("fake", b"x"), fuzz.ContractViolation)
    finally:
        del fuzz.TARGETS["fake"]


def test_records_round_trip() -> None:
    parts = [b"", b"a", b"\x00" * 300]
    assert fuzz.records(fuzz.join_records(parts)) == parts
    assert fuzz.records(b"\x00\x05ab") == [b"ab"]
