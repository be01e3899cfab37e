"""Virtual cameras: the typed persisted state (:mod:`.model`), the ONVIF view of one camera
(:mod:`.camera`) and the registry with add / update / remove (:mod:`.registry`)."""

from onvifcam.cameras.camera import (
    AEC,
    ASC,
    ASRC,
    MAIN_PROFILE,
    MDC,
    SUB_PROFILE,
    VEC_MAIN,
    VEC_SUB,
    VSC,
    VSRC,
    Camera,
    CameraError,
    slugify,
)
from onvifcam.cameras.model import (
    ADMIN,
    LEVELS,
    OPERATOR,
    USER,
    AudioView,
    CameraState,
    ProfileState,
    User,
    VideoView,
)
from onvifcam.cameras.registry import CameraRegistry, RegistryError

__all__ = [
    "ADMIN",
    "AEC",
    "ASC",
    "ASRC",
    "LEVELS",
    "MAIN_PROFILE",
    "MDC",
    "OPERATOR",
    "SUB_PROFILE",
    "USER",
    "VEC_MAIN",
    "VEC_SUB",
    "VSC",
    "VSRC",
    "AudioView",
    "Camera",
    "CameraError",
    "CameraRegistry",
    "CameraState",
    "ProfileState",
    "RegistryError",
    "User",
    "VideoView",
    "slugify",
]
