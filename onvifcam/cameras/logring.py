"""The server's own recent log lines per camera, for GetSystemLog / GetSystemSupportInformation.

:class:`CameraLogHandler` is a :class:`logging.Handler` on the ``onvifcam`` logger, owned by
the camera registry. A record goes to a camera's bounded ring (``[onvif] system_log_lines``;
each line cut to :data:`MAX_LINE` characters) only when it carries that camera's identity
explicitly, never because a name shows up somewhere in the text (camera "Gate" must not get
the lines of camera "Gate 2", of a path "gate.old", or of a user called "Gate"):

1. ``extra={"camera_key": key}`` or ``extra={"stream_path": path}`` on the call;
2. else an argument of the message that *is* one of the camera's identities (its key,
   name, slug, path or sub path; a path also with leading or trailing ``/``), as in
   ``log.info("onvif %s: ...", cam.name)`` or ``log.info("stream %s: ...", stream.path)``;
3. else, for a message formatted beforehand, the identity quoted as ``%r`` formats it
   (``camera 'Gate' ...``).

The lookup tables are rebuilt only when the set of cameras changes.
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

MAX_LINE = 512


class _Named(Protocol):
    key: str
    name: str
    slug: str
    path: str
    log_lines: deque[str]


#: what ``generation()`` answers once the registry is gone
ORPHANED = -2


class CameraLogHandler(logging.Handler):
    """Copies log records that carry a camera's identity into that camera's ring."""

    def __init__(self, cameras: Callable[[], Iterable[_Named]], generation: Callable[[], int]):
        super().__init__(logging.DEBUG)
        self._cameras = cameras
        self._generation = generation
        self._built = -1
        self._by_id: dict[str, list[weakref.ref[_Named]]] = {}
        self._by_quote: dict[str, str] = {}  # repr(identity) -> identity
        self._quoted: re.Pattern[str] | None = None
        self.kept = 0

    def orphaned(self) -> bool:
        """Whether the registry this handler serves is gone."""
        return self._generation() == ORPHANED

    def _rebuild(self) -> None:
        by_id: dict[str, list[weakref.ref[_Named]]] = {}
        for cam in self._cameras():
            ids = {cam.key, cam.name, cam.slug, cam.path, getattr(cam, "sub_path", "")}
            for ident in ids - {""}:
                by_id.setdefault(ident, []).append(weakref.ref(cam))
        self._by_id = by_id
        # repr() is what %r writes; longest first, so 'Gate 2' is tried before 'Gate'
        self._by_quote = {repr(i): i for i in by_id}
        quoted = sorted(self._by_quote, key=len, reverse=True)
        self._quoted = re.compile("|".join(map(re.escape, quoted))) if quoted else None
        self._built = self._generation()

    def _identities(self, record: logging.LogRecord) -> set[str]:
        """The camera identities a record carries (see the module docstring)."""
        by_id = self._by_id
        for attr in ("camera_key", "stream_path"):
            value = getattr(record, attr, None)
            if isinstance(value, str):
                return {value} if value in by_id else {value.strip("/")} & by_id.keys()
        args = record.args
        values = args.values() if isinstance(args, Mapping) else (args or ())
        found: set[str] = set()
        for v in values:
            if isinstance(v, str) and v:
                if v in by_id:
                    found.add(v)
                elif v.strip("/") in by_id:
                    found.add(v.strip("/"))
        if found or self._quoted is None:
            return found
        return {self._by_quote[m.group(0)] for m in self._quoted.finditer(record.getMessage())}

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the line for every camera it carries."""
        try:
            if self._built != self._generation():
                self._rebuild()
            if not self._by_id:
                return
            found = self._identities(record)
            if not found:
                return
            msg = record.getMessage()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
            line = f"{stamp} {record.levelname} {record.name}: {msg}"[:MAX_LINE]
            done: set[int] = set()
            for ident in found:
                for ref in self._by_id.get(ident, []):
                    cam = ref()
                    if cam is not None and id(cam) not in done:
                        done.add(id(cam))
                        cam.log_lines.append(line)
                        self.kept += 1
        except Exception:  # a log line is never worth an exception in the caller
            self.handleError(record)
