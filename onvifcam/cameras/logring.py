"""The server's own recent log lines per camera, for GetSystemLog / GetSystemSupportInformation.

:class:`CameraLogHandler` is a :class:`logging.Handler` on the ``onvifcam`` logger, owned by
the camera registry. A record whose message names a camera (its name, slug or stream path,
as a whole word) is kept in that camera's bounded ring (``[onvif] system_log_lines``; each
line cut to :data:`MAX_LINE` characters). One combined pattern finds every camera a line
names in one pass; it is rebuilt only when the set of cameras changes.
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
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
    """Copies log records that name a camera into that camera's ring."""

    def __init__(self, cameras: Callable[[], Iterable[_Named]], generation: Callable[[], int]):
        super().__init__(logging.DEBUG)
        self._cameras = cameras
        self._generation = generation
        self._built = -1
        self._pattern: re.Pattern[str] | None = None
        self._by_word: dict[str, list[weakref.ref[_Named]]] = {}
        self.kept = 0

    def orphaned(self) -> bool:
        """Whether the registry this handler serves is gone."""
        return self._generation() == ORPHANED

    def _rebuild(self) -> None:
        by_word: dict[str, list[weakref.ref[_Named]]] = {}
        for cam in self._cameras():
            for word in {cam.name, cam.slug, cam.path}:
                if word and len(word) >= 2:
                    by_word.setdefault(word, []).append(weakref.ref(cam))
        self._by_word = by_word
        words = sorted(by_word, key=len, reverse=True)
        alt = "|".join(re.escape(w) for w in words)
        self._pattern = re.compile(rf"(?<![\w/.-])(?:{alt})(?![\w/-])") if words else None
        self._built = self._generation()

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the line for every camera it names."""
        try:
            if self._built != self._generation():
                self._rebuild()
            if self._pattern is None:
                return
            msg = record.getMessage()
            found = {m.group(0) for m in self._pattern.finditer(msg)}
            if not found:
                return
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
            line = f"{stamp} {record.levelname} {record.name}: {msg}"[:MAX_LINE]
            done: set[int] = set()
            for word in found:
                for ref in self._by_word.get(word, []):
                    cam = ref()
                    if cam is not None and id(cam) not in done:
                        done.add(id(cam))
                        cam.log_lines.append(line)
                        self.kept += 1
        except Exception:  # a log line is never worth an exception in the caller
            self.handleError(record)
