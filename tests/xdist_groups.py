"""Which tests pytest-xdist keeps together on one worker (``--dist loadgroup``).

A test that uses a module-, class- or package-scoped fixture is grouped with the rest of
its file, so the module's shared server starts once, on one worker; a test marked
``xdist_group(name)`` is grouped with the others of that name; every other test is
scheduled on its own. Bigger groups go out first (xdist's loadscope order), single tests
fill the gaps at the end.

pytest 9 keeps an item's node id in a structure that xdist 3.8 cannot append its
``@group`` suffix to, so xdist's own loadgroup silently spreads a group over all workers.
Here each worker writes the groups it collected to a file the controller named
(``pytest_configure_node``), and the controller's scheduler reads them from there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

WORKERINPUT_KEY = "onvifcam_groups_file"
SHARED_SCOPES = ("module", "class", "package")


def group_of(item: pytest.Item, rootpath: Path) -> str | None:
    """The group an item belongs to, or None when it can run anywhere on its own."""
    names = {
        str(m.args[0] if m.args else m.kwargs.get("name", "default"))
        for m in item.iter_markers("xdist_group")
    }
    if names:
        return "group:" + "_".join(sorted(names))
    info = getattr(item, "_fixtureinfo", None)
    if info is not None:
        defs = (d for ds in info.name2fixturedefs.values() for d in ds)
        if any(d.scope in SHARED_SCOPES for d in defs):
            return "file:" + item.path.relative_to(rootpath).as_posix()
    return None


def write_groups(path: Path, items: list[pytest.Item], rootpath: Path) -> None:
    """Write {node id: group} for the grouped items (atomically: every worker writes)."""
    groups = {item.nodeid: g for item in items if (g := group_of(item, rootpath)) is not None}
    tmp = path.with_name(f"{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(groups))
    os.replace(tmp, path)


class GroupScheduling(LoadScopeScheduling):
    """xdist's loadscope scheduling with the scopes read from the workers' group file."""

    def __init__(self, config: pytest.Config, log: object, path: Path) -> None:
        super().__init__(config, log)  # type: ignore[arg-type]
        self._path = path
        self._groups: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self._groups is None:
            # schedule() runs once every worker finished collecting, so the file is there
            self._groups = json.loads(self._path.read_text()) if self._path.exists() else {}
        return self._groups.get(nodeid, nodeid)
