"""JSON views for tools and tests (``GET /api/cameras``)."""

from __future__ import annotations

from typing import Any

from onvifcam.cameras import CameraRegistry


def cameras_json(registry: CameraRegistry, now: float) -> dict[str, Any]:
    """Every camera: name, path, endpoint port, identity, online state and video."""
    return {
        "time": now,
        "cameras": [c.summary() for c in registry.cameras.values()],
    }
