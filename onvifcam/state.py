"""Run-time state that clients change (ONVIF Set*/Create*/Delete*, users, identity).

One JSON document per camera under ``<state_dir>/cameras/``. Every write is atomic: the new
content goes to a temporary file in the same directory, is flushed and fsync'ed, then
renamed over the old file (and the directory is fsync'ed), so a crash leaves either the old
or the new document, never a torn one. Files are mode 0600: they hold ONVIF user passwords,
which HTTP Digest and WS-Security PasswordDigest need in clear.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_VERSION = 1


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename, fsync dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def file_name(key: str) -> str:
    """A file name for a camera key: a readable slug plus a hash so keys never collide."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", key).strip("-.")[:40] or "camera"
    return f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.json"


class StateStore:
    """Per-camera JSON documents in a directory; ``load`` returns {} when absent or broken."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir) / "cameras"
        self.writes = 0

    def path(self, key: str) -> Path:
        """Where the document of camera ``key`` lives."""
        return self.dir / file_name(key)

    def load(self, key: str) -> dict[str, Any]:
        """The stored document of camera ``key`` ({} when there is none or it is unreadable)."""
        p = self.path(key)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("state: cannot read %s (%s); starting that camera from defaults", p, exc)
            with contextlib.suppress(OSError):
                os.replace(p, p.with_suffix(".broken"))
            return {}
        if not isinstance(data, dict) or data.get("key") != key:
            log.error("state: %s does not belong to camera %r; ignoring it", p, key)
            return {}
        return data

    def save(self, key: str, doc: dict[str, Any]) -> None:
        """Write the document of camera ``key`` atomically."""
        body = {"version": STATE_VERSION, **doc, "key": key}
        atomic_write(self.path(key), json.dumps(body, indent=1, sort_keys=True).encode())
        self.writes += 1

    def keys(self) -> list[str]:
        """Keys of every stored camera document."""
        out = []
        if not self.dir.is_dir():
            return out
        for p in sorted(self.dir.glob("*.json")):
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and isinstance(data.get("key"), str):
                out.append(data["key"])
        return out
