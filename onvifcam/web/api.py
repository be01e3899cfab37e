"""JSON views for tools and tests (``GET /api/cameras``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from onvifcam.cameras import Camera, CameraRegistry

CameraUrls = Callable[[Camera], dict[str, Any]]


def cameras_json(
    registry: CameraRegistry, now: float, urls: CameraUrls | None = None
) -> dict[str, Any]:
    """Every camera: name, path, identity, online state and video, plus what ``urls`` gives
    for it (the web component: its endpoint ``port``, ``onvif_url``, ``rtsp_url`` and
    ``snapshot_url``)."""
    out = []
    for cam in registry.cameras.values():
        entry = cam.summary()
        if urls is not None:
            entry.update(urls(cam))
        out.append(entry)
    return {"time": now, "cameras": out}
