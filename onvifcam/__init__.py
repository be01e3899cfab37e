"""onvifcam: turn every live stream pushed into it into a virtual ONVIF IP camera."""

__version__ = "0.1.0"
