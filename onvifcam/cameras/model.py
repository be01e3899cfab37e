"""The persisted state of a camera, typed: what ``STATE_DIR/cameras/*.json`` holds.

:class:`CameraState` reads every state file earlier versions wrote (a key that is missing
or of the wrong type takes its default, so a hand-edited file never stops a start) and
writes the same JSON shape back; keys this version does not know are kept as they are.
No sockets, no streams, no configuration: the ONVIF view (:mod:`onvifcam.cameras.camera`)
combines this state with the configuration and the live stream.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

ADMIN, OPERATOR, USER = "Administrator", "Operator", "User"
LEVELS = (ADMIN, OPERATOR, USER)
DISCOVERABLE, NON_DISCOVERABLE = "Discoverable", "NonDiscoverable"

# keys StateStore adds around the document
_ENVELOPE = ("version", "key")


@dataclass(frozen=True)
class User:
    """An ONVIF user; ``fixed`` users come from the configuration and cannot be changed."""

    name: str
    password: str
    level: str = ADMIN
    fixed: bool = False


@dataclass
class VideoView:
    """What a profile's video encoder shows: the live stream, else the last-seen values."""

    codec: str = "H264"
    width: int = 1920
    height: int = 1080
    fps: float = 25.0
    bitrate_kbps: int = 4096
    profile: str = "Main"
    gov_length: int = 50
    online: bool = False

    def to_json(self) -> dict[str, Any]:
        """The persisted form."""
        return {k: v for k, v in self.__dict__.items() if k != "online"}

    @classmethod
    def from_json(cls, data: object) -> VideoView | None:
        """A stored view; None when ``data`` is not one."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{k: v for k, v in data.items() if k != "online"})
        except TypeError:
            return None


@dataclass
class AudioView:
    """The audio track of a stream."""

    codec: str  # RTP encoding name: MPEG4-GENERIC, PCMU, PCMA, OPUS ...
    sample_rate: int
    channels: int
    bitrate_kbps: int = 64

    def to_json(self) -> dict[str, Any]:
        """The persisted form."""
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: object) -> AudioView | None:
        """A stored view; None when ``data`` is not one."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(**data)
        except TypeError:
            return None


@dataclass
class ProfileState:
    """A media profile: which configurations it holds."""

    token: str
    name: str
    fixed: bool = False
    vsc: str | None = None
    vec: str | None = None
    asc: str | None = None
    aec: str | None = None
    # PTZ configuration: "" = the default (fixed profiles have it), None = removed
    ptz: str | None = ""
    mdc: str | None = None  # metadata configuration

    def to_json(self) -> dict[str, Any]:
        """The persisted form (``ptz`` only once a client changed it, ``mdc`` only when set,
        as earlier versions wrote it)."""
        d = dict(self.__dict__)
        if d["ptz"] == "":
            del d["ptz"]
        if d["mdc"] is None:
            del d["mdc"]
        return d


@dataclass
class StoredUser:
    """A user created over ONVIF (CreateUsers)."""

    name: str
    password: str = ""
    level: str = USER

    def to_json(self) -> dict[str, Any]:
        """The persisted form."""
        return {"name": self.name, "password": self.password, "level": self.level}


@dataclass
class Clock:
    """SetSystemDateAndTime: type, time zone, DST and the offset to the host clock (s)."""

    type: str = "NTP"
    tz: str = "UTC0"
    dst: bool = False
    offset: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The persisted form."""
        return {"type": self.type, "tz": self.tz, "dst": self.dst, "offset": self.offset}


@dataclass
class CameraState:
    """Everything persisted about one camera: generated identity, the auto-assigned port,
    what clients changed over ONVIF, and the last-seen stream description.

    ``None`` means "never set" where that differs from empty (scopes, profiles, clock):
    the camera then shows its defaults.
    """

    uuid: str = ""
    mac: str = ""
    serial: str = ""
    auto: bool = False
    path: str = ""  # an auto camera's stream path (restored at start)
    port: int = 0  # the auto-assigned ONVIF port
    hostname: str = ""
    clock: Clock | None = None
    users: list[StoredUser] = field(default_factory=list)
    scopes: list[str] | None = None  # SetScopes; None: the default name/location scopes
    added_scopes: list[str] = field(default_factory=list)
    discovery_mode: str = DISCOVERABLE
    profiles: list[ProfileState] | None = None  # None: the two fixed profiles
    encoders: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen_video: dict[str, VideoView] = field(default_factory=dict)  # "main"/"sub"
    seen_audio: dict[str, AudioView | None] = field(default_factory=dict)
    last_online: float | None = None  # UNIX time an auto camera's stream went offline
    # Network settings NVRs set and read back (NTP, DNS, gateway, protocols, zero
    # configuration, IP filter, dynamic DNS): stored and echoed, never applied to the host.
    network: dict[str, Any] = field(default_factory=dict)
    osds: list[dict[str, Any]] = field(default_factory=list)  # CreateOSD/SetOSD, in order
    metadata: dict[str, Any] = field(default_factory=dict)  # SetMetadataConfiguration
    extra: dict[str, Any] = field(default_factory=dict)  # keys of other versions, kept

    # ------------------------------------------------------------------ JSON
    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CameraState:
        """The state in a stored document (any version; bad values take their default)."""
        d = {k: v for k, v in doc.items() if k not in _ENVELOPE}
        s = cls()
        s.uuid = _str(d.pop("uuid", ""))
        s.mac = _str(d.pop("mac", ""))
        s.serial = _str(d.pop("serial", ""))
        s.auto = d.pop("auto", False) is True
        s.path = _str(d.pop("path", ""))
        port = d.pop("port", 0)
        s.port = port if isinstance(port, int) and not isinstance(port, bool) else 0
        s.hostname = _str(d.pop("hostname", ""))
        t = d.pop("time", None)
        if isinstance(t, dict):
            s.clock = Clock(
                type=_str(t.get("type", "NTP")) or "NTP",
                tz=_str(t.get("tz", "UTC0")) or "UTC0",
                dst=bool(t.get("dst", False)),
                offset=_float(t.get("offset", 0.0)),
            )
        for u in _list(d.pop("users", [])):
            if isinstance(u, dict) and isinstance(u.get("name"), str) and u["name"]:
                s.users.append(
                    StoredUser(u["name"], _str(u.get("password", "")), _str(u.get("level", USER)))
                )
        scopes = d.pop("scopes", None)
        s.scopes = [x for x in scopes if isinstance(x, str)] if isinstance(scopes, list) else None
        s.added_scopes = [x for x in _list(d.pop("added_scopes", [])) if isinstance(x, str)]
        mode = d.pop("discovery_mode", DISCOVERABLE)
        s.discovery_mode = mode if mode in (DISCOVERABLE, NON_DISCOVERABLE) else DISCOVERABLE
        profiles = d.pop("profiles", None)
        if isinstance(profiles, list):
            s.profiles = []
            for p in profiles:
                with contextlib.suppress(TypeError):
                    if isinstance(p, dict):
                        s.profiles.append(ProfileState(**p))
        enc = d.pop("encoders", {})
        if isinstance(enc, dict):
            s.encoders = {str(k): dict(v) for k, v in enc.items() if isinstance(v, dict)}
        seen = d.pop("last_seen", {})
        if isinstance(seen, dict):
            for k, v in seen.items():
                if k.endswith("_audio"):
                    s.seen_audio[k[: -len("_audio")]] = AudioView.from_json(v)
                else:
                    view = VideoView.from_json(v)
                    if view is not None:
                        s.seen_video[k] = view
        net = d.pop("network", {})
        if isinstance(net, dict):
            s.network = {str(k): v for k, v in net.items()}
        s.osds = [o for o in _list(d.pop("osds", [])) if isinstance(o, dict) and o.get("token")]
        meta = d.pop("metadata", {})
        if isinstance(meta, dict):
            s.metadata = dict(meta)
        last = d.pop("last_online", None)
        if isinstance(last, int | float) and not isinstance(last, bool):
            s.last_online = float(last)
        s.extra = d
        return s

    def to_json(self) -> dict[str, Any]:
        """The document to store: the keys earlier versions wrote, set ones only."""
        out: dict[str, Any] = dict(self.extra)
        for k in ("uuid", "mac", "serial"):
            if getattr(self, k):
                out[k] = getattr(self, k)
        if self.auto:
            out["auto"] = True
        if self.path:
            out["path"] = self.path
        if self.port:
            out["port"] = self.port
        if self.hostname:
            out["hostname"] = self.hostname
        if self.clock is not None:
            out["time"] = self.clock.to_json()
        if self.users:
            out["users"] = [u.to_json() for u in self.users]
        if self.scopes is not None:
            out["scopes"] = list(self.scopes)
        if self.added_scopes:
            out["added_scopes"] = list(self.added_scopes)
        if self.discovery_mode != DISCOVERABLE:
            out["discovery_mode"] = self.discovery_mode
        if self.profiles is not None:
            out["profiles"] = [p.to_json() for p in self.profiles]
        if self.encoders:
            out["encoders"] = {k: dict(v) for k, v in self.encoders.items()}
        seen: dict[str, Any] = {}
        for k, v in self.seen_video.items():
            seen[k] = v.to_json()
        for k, a in self.seen_audio.items():
            seen[k + "_audio"] = a.to_json() if a is not None else None
        if seen:
            out["last_seen"] = seen
        if self.last_online is not None:
            out["last_online"] = self.last_online
        if self.network:
            out["network"] = dict(self.network)
        if self.osds:
            out["osds"] = [dict(o) for o in self.osds]
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out

    def factory_default(self) -> CameraState:
        """The state after SetSystemFactoryDefault: identity, port and last-seen kept."""
        return CameraState(
            uuid=self.uuid,
            mac=self.mac,
            serial=self.serial,
            auto=self.auto,
            path=self.path,
            port=self.port,
            seen_video=dict(self.seen_video),
            seen_audio=dict(self.seen_audio),
        )

    def copy(self) -> CameraState:
        """A deep copy."""
        return dataclasses.replace(
            self,
            clock=dataclasses.replace(self.clock) if self.clock is not None else None,
            users=[dataclasses.replace(u) for u in self.users],
            scopes=list(self.scopes) if self.scopes is not None else None,
            added_scopes=list(self.added_scopes),
            profiles=[dataclasses.replace(p) for p in self.profiles]
            if self.profiles is not None
            else None,
            encoders={k: dict(v) for k, v in self.encoders.items()},
            seen_video={k: dataclasses.replace(v) for k, v in self.seen_video.items()},
            seen_audio=dict(self.seen_audio),
            network=copy.deepcopy(self.network),
            osds=copy.deepcopy(self.osds),
            metadata=copy.deepcopy(self.metadata),
            extra=dict(self.extra),
        )


def _str(v: object) -> str:
    return v if isinstance(v, str) else ""


def _float(v: object) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    return 0.0


def _list(v: object) -> list[Any]:
    return v if isinstance(v, list) else []
