"""JSON views for tools and tests (``GET /api/cameras``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from onvifcam.cameras import Camera, CameraRegistry

CameraUrls = Callable[[Camera], dict[str, str]]


def cameras_json(
    registry: CameraRegistry, now: float, urls: CameraUrls | None = None
) -> dict[str, Any]:
    """Every camera: name, path, endpoint port, identity, online state and video, plus the
    ``onvif_url``, ``rtsp_url`` and ``snapshot_url`` that ``urls`` gives for it."""
    out = []
    for cam in registry.cameras.values():
        entry = cam.summary()
        if urls is not None:
            entry.update(urls(cam))
        out.append(entry)
    return {"time": now, "cameras": out}
