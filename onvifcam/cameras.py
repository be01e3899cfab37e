"""Virtual cameras: identity, users, media profiles and endpoints, plus their registry.

A :class:`Camera` shows one stream path (and optionally a second "sub" path) as an ONVIF
device. Cameras come from ``[[cameras]]`` entries and, unless ``[onvif] auto_cameras`` is
off, from every path that gets a publisher. Everything a client can change (users, scopes,
hostname, profiles, encoder settings, clock) and the generated identity (EPR UUID, MAC,
serial, auto-assigned port) lives in one JSON document per camera (:mod:`onvifcam.state`).

An auto camera is written to disk only once its stream has carried video (a keyframe on a
video track); one whose publisher leaves before that is removed at once, and with
``[onvif] auto_expire`` an auto camera offline for that long is removed with its state file.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from onvifcam import __version__
from onvifcam.config import CameraConfig, Config
from onvifcam.media.stream import Stream, StreamRegistry
from onvifcam.state import StateStore

log = logging.getLogger(__name__)

ADMIN, OPERATOR, USER = "Administrator", "Operator", "User"
LEVELS = (ADMIN, OPERATOR, USER)

VSRC = "VideoSource_1"
VSC = "VideoSourceConfig_1"
VEC_MAIN = "VideoEncoder_1"
VEC_SUB = "VideoEncoder_2"
ASRC = "AudioSource_1"
ASC = "AudioSourceConfig_1"
AEC = "AudioEncoder_1"
MAIN_PROFILE = "Profile_1"
SUB_PROFILE = "Profile_2"

_H264_PROFILES = {66: "Baseline", 77: "Main", 88: "Extended", 100: "High"}
_H265_PROFILES = {1: "Main", 2: "Main10"}
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


class CameraError(ValueError):
    """A request the camera model refuses; ``subcode`` is the ONVIF ter: subcode."""

    def __init__(self, subcode: str, message: str, code: str = "Sender") -> None:
        super().__init__(message)
        self.subcode = subcode
        self.code = code


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


@dataclass
class AudioView:
    """The audio track of a stream."""

    codec: str  # RTP encoding name: MPEG4-GENERIC, PCMU, PCMA, OPUS ...
    sample_rate: int
    channels: int
    bitrate_kbps: int = 64


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

    def to_json(self) -> dict[str, Any]:
        """The persisted form."""
        return dict(self.__dict__)


def slugify(name: str) -> str:
    """URL-safe form of a camera name (``live/cam 1`` -> ``live-cam-1``)."""
    return _SLUG.sub("-", name).strip("-.") or "camera"


def _h264_profile_name(codec: str, profile: int) -> str:
    if codec == "H265":
        return _H265_PROFILES.get(profile, "Main")
    return _H264_PROFILES.get(profile, "High" if profile > 100 else "Main")


def _norm_codec(codec: str) -> str:
    c = codec.upper()
    return "H265" if c in ("H265", "HEVC") else c


def _check_password(name: str, password: str) -> None:
    if not password:
        raise CameraError("ter:PasswordTooWeak", f"user {name!r} needs a password")
    if len(password) > 64:
        raise CameraError("ter:PasswordTooLong", "passwords are at most 64 characters")


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise CameraError("ter:AnonymousNotAllowed", f"user level {level!r}")


def _mac_from(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    first = (digest[0] & 0xFC) | 0x02  # locally administered, unicast
    return ":".join(f"{b:02x}" for b in (first, *digest[1:6]))


class Camera:
    """One virtual ONVIF device."""

    def __init__(
        self,
        key: str,
        cfg: CameraConfig,
        app_cfg: Config,
        store: StateStore,
        streams: StreamRegistry,
        *,
        auto: bool,
        persist: bool = True,
    ) -> None:
        self.key = key
        self.persist = persist  # False: the document lives in memory only (see save)
        self.offline_since: float | None = None  # UNIX time the main stream went offline
        self.cfg = cfg
        self.app_cfg = app_cfg
        self.store = store
        self.streams = streams
        self.auto = auto
        self.name = cfg.name or cfg.path
        self.slug = slugify(self.name)
        self.path = streams.normalize(cfg.path)
        self.sub_path = streams.normalize(cfg.sub_path)
        self.address = cfg.address
        self.started_at = time.time()
        self.reboots = 0
        self.bound: list[tuple[str, int]] = []
        self.on_reboot: Callable[[Camera], None] | None = None
        self._measured: dict[str, VideoView] = {}
        self.doc: dict[str, Any] = store.load(key)
        self._ensure_identity()

    # ------------------------------------------------------------------ identity
    def _ensure_identity(self) -> None:
        d = self.doc
        changed = False
        if not d.get("uuid"):
            d["uuid"] = str(uuid.uuid4())
            changed = True
        if not d.get("mac"):
            d["mac"] = _mac_from(d["uuid"])
            changed = True
        if not d.get("serial"):
            d["serial"] = "OC" + uuid.UUID(d["uuid"]).hex[:12].upper()
            changed = True
        if self.auto and (d.get("auto") is not True or d.get("path") != self.path):
            d["auto"] = True
            d["path"] = self.path
            changed = True
        if changed:
            self.save()

    def save(self) -> None:
        """Persist the camera's document (atomic write); kept in memory while not ``persist``."""
        if self.persist:
            self.store.save(self.key, self.doc)

    @property
    def uuid(self) -> str:
        """The EPR address UUID (urn:uuid:...)."""
        return str(self.doc["uuid"])

    @property
    def mac(self) -> str:
        """The network interface's hardware address."""
        return self.cfg.mac.lower() or str(self.doc["mac"])

    @property
    def serial(self) -> str:
        """Serial number."""
        return self.cfg.serial or str(self.doc["serial"])

    @property
    def manufacturer(self) -> str:
        """Manufacturer name."""
        return self.cfg.manufacturer or "onvifcam"

    @property
    def model(self) -> str:
        """Model name."""
        return self.cfg.model or "Virtual Camera"

    @property
    def firmware(self) -> str:
        """Firmware version."""
        return self.cfg.firmware or __version__

    @property
    def hardware(self) -> str:
        """Hardware id."""
        return self.cfg.hardware or "onvifcam-v1"

    @property
    def preferred_port(self) -> int:
        """The ONVIF port to bind: configured, else the persisted auto-assigned one."""
        if self.cfg.onvif_port:
            return self.cfg.onvif_port
        if self.address and not self.auto:
            return self.app_cfg.onvif.address_port
        return int(self.doc.get("port") or 0)

    def remember_port(self, port: int) -> None:
        """Persist the port an auto camera got, so it keeps it across restarts."""
        if self.cfg.onvif_port or (self.address and not self.auto):
            return
        if self.doc.get("port") != port and self.app_cfg.onvif.port_range_start:
            self.doc["port"] = port
            self.save()

    # ------------------------------------------------------------------ clock
    def now(self) -> float:
        """The camera's clock (UNIX time): the host clock plus any SetSystemDateAndTime."""
        return time.time() + float(self.doc.get("time", {}).get("offset", 0.0))

    @property
    def time_settings(self) -> dict[str, Any]:
        """DateTimeType, TZ and DST flag."""
        t = self.doc.get("time", {})
        return {
            "type": t.get("type", "NTP"),
            "tz": t.get("tz", "UTC0"),
            "dst": bool(t.get("dst", False)),
        }

    def set_time(self, kind: str, tz: str | None, dst: bool, utc: float | None) -> None:
        """SetSystemDateAndTime: Manual sets an offset to the host clock, NTP clears it."""
        t = dict(self.doc.get("time", {}))
        t["type"] = kind
        t["dst"] = dst
        if tz is not None:
            t["tz"] = tz
        t["offset"] = (utc - time.time()) if (kind == "Manual" and utc is not None) else 0.0
        self.doc["time"] = t
        self.save()

    # ------------------------------------------------------------------ users
    @property
    def users(self) -> list[User]:
        """Configured user (fixed) plus users created over ONVIF."""
        out: list[User] = []
        name = self.cfg.username or self.app_cfg.onvif.username
        password = self.cfg.password if self.cfg.username else self.app_cfg.onvif.password
        if name:
            out.append(User(name, password, ADMIN, fixed=True))
        for u in self.doc.get("users", []):
            if not any(x.name == u["name"] for x in out):
                out.append(User(u["name"], u.get("password", ""), u.get("level", USER)))
        return out

    @property
    def auth_required(self) -> bool:
        """False when auth is off for this camera or no user exists (ONVIF factory state)."""
        return self.cfg.auth and bool(self.users)

    @property
    def rtsp_needs_users(self) -> bool:
        """True when reading this camera's streams over RTSP needs one of its ONVIF users
        (``rtsp_auth = "onvif"`` on the camera or in ``[onvif]``, with auth on)."""
        mode = self.cfg.rtsp_auth or self.app_cfg.onvif.rtsp_auth
        return mode == "onvif" and self.auth_required

    def user(self, name: str) -> User | None:
        """The user called ``name``."""
        return next((u for u in self.users if u.name == name), None)

    def create_users(self, users: Iterable[User]) -> None:
        """CreateUsers: all or nothing."""
        new = list(users)
        names = [u.name for u in new]
        if len(set(names)) != len(names) or any(self.user(n) for n in names):
            raise CameraError("ter:UsernameClash", "a user with that name already exists")
        if len(self.users) + len(new) > self.app_cfg.onvif.max_users:
            raise CameraError(
                "ter:TooManyUsers", f"at most {self.app_cfg.onvif.max_users} users", "Receiver"
            )
        for u in new:
            if not u.name or len(u.name) > 64:
                raise CameraError("ter:UsernameTooLong", "user names are 1 to 64 characters")
            _check_password(u.name, u.password)
            _check_level(u.level)
        self.doc.setdefault("users", []).extend(
            {"name": u.name, "password": u.password, "level": u.level} for u in new
        )
        self.save()

    def delete_users(self, names: Iterable[str]) -> None:
        """DeleteUsers: all or nothing; configured users are fixed."""
        names = list(names)
        for n in names:
            u = self.user(n)
            if u is None:
                raise CameraError("ter:UsernameMissing", f"no user {n!r}")
            if u.fixed:
                raise CameraError("ter:FixedUser", f"user {n!r} comes from the configuration")
        self.doc["users"] = [u for u in self.doc.get("users", []) if u["name"] not in names]
        self.save()

    def set_user(self, name: str, password: str | None, level: str) -> None:
        """SetUser: change a user's password and level."""
        u = self.user(name)
        if u is None:
            raise CameraError("ter:UsernameMissing", f"no user {name!r}")
        if u.fixed:
            raise CameraError("ter:FixedUser", f"user {name!r} comes from the configuration")
        _check_level(level)
        if password is not None:
            _check_password(name, password)
        for d in self.doc.get("users", []):
            if d["name"] == name:
                d["level"] = level
                if password is not None:
                    d["password"] = password
        self.save()

    # ------------------------------------------------------------------ device settings
    @property
    def hostname(self) -> str:
        """The device hostname (settable)."""
        return str(self.doc.get("hostname") or f"onvifcam-{self.slug}"[:63])

    def set_hostname(self, name: str) -> None:
        """SetHostname with RFC 1123 checks."""
        if not re.fullmatch(r"(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?", name):
            raise CameraError("ter:InvalidHostname", f"invalid hostname {name[:64]!r}")
        self.doc["hostname"] = name
        self.save()

    @property
    def fixed_scopes(self) -> list[str]:
        """Scopes the device always has."""
        base = "onvif://www.onvif.org"
        hw = self.model.replace(" ", "_")
        return [
            f"{base}/type/video_encoder",
            f"{base}/type/Network_Video_Transmitter",
            f"{base}/Profile/Streaming",
            f"{base}/Profile/T",
            f"{base}/hardware/{hw}",
        ]

    @property
    def config_scopes(self) -> list[str]:
        """Settable scopes: name and location (defaults), replaced by SetScopes."""
        stored = self.doc.get("scopes")
        if stored is not None:
            return list(stored)
        base = "onvif://www.onvif.org"
        out = [f"{base}/name/{self.name.replace(' ', '_')}"]
        out.append(f"{base}/location/{(self.cfg.location or 'virtual').replace(' ', '_')}")
        return out

    @property
    def added_scopes(self) -> list[str]:
        """Scopes added with AddScopes."""
        return list(self.doc.get("added_scopes", []))

    def set_scopes(self, scopes: list[str]) -> None:
        """SetScopes replaces the configurable scopes."""
        self.doc["scopes"] = scopes
        self.save()

    def add_scopes(self, scopes: list[str]) -> None:
        """AddScopes."""
        have = set(self.fixed_scopes + self.config_scopes + self.added_scopes)
        extra = [s for s in scopes if s not in have]
        self.doc["added_scopes"] = self.added_scopes + extra
        self.save()

    def remove_scopes(self, scopes: list[str]) -> None:
        """RemoveScopes: fixed scopes cannot be removed."""
        for s in scopes:
            if s in self.fixed_scopes:
                raise CameraError("ter:FixedScope", f"scope {s} is fixed")
            if s not in self.config_scopes and s not in self.added_scopes:
                raise CameraError("ter:NoScope", f"scope {s} does not exist")
        self.doc["scopes"] = [s for s in self.config_scopes if s not in scopes]
        self.doc["added_scopes"] = [s for s in self.added_scopes if s not in scopes]
        self.save()

    @property
    def discovery_mode(self) -> str:
        """Discoverable or NonDiscoverable."""
        return str(self.doc.get("discovery_mode", "Discoverable"))

    def set_discovery_mode(self, mode: str) -> None:
        """SetDiscoveryMode."""
        if mode not in ("Discoverable", "NonDiscoverable"):
            raise CameraError("ter:InvalidArgVal", f"discovery mode {mode!r}")
        self.doc["discovery_mode"] = mode
        self.save()

    def factory_default(self) -> None:
        """SetSystemFactoryDefault: forget every client change, keep the identity."""
        keep = {
            k: self.doc[k]
            for k in ("uuid", "mac", "serial", "port", "auto", "path")
            if k in self.doc
        }
        self.doc = {**keep, "last_seen": self.doc.get("last_seen", {})}
        self.save()

    def reboot(self) -> None:
        """SystemReboot: the component restarts the camera's endpoint."""
        self.reboots += 1
        self.started_at = time.time()
        if self.on_reboot is not None:
            self.on_reboot(self)

    # ------------------------------------------------------------------ streams
    def stream_path(self, vec: str | None) -> str:
        """Path streamed by a profile whose video encoder is ``vec``."""
        if vec == VEC_SUB and self.sub_path:
            return self.sub_path
        return self.path

    def stream(self, which: str = "main") -> Stream | None:
        """The Stream behind the main or sub encoder, if it exists."""
        return self.streams.get(self.sub_path if which == "sub" and self.sub_path else self.path)

    @property
    def online(self) -> bool:
        """True while the main stream has a publisher."""
        s = self.stream("main")
        return s is not None and s.online

    def video(self, which: str = "main") -> VideoView:
        """The live video description, else the last-seen one, else configured defaults."""
        s = self.stream(which)
        if s is not None and s.online and s.video_track is not None:
            v = self._live_view(s, which)
            if v is not None:
                return v
        seen = self.doc.get("last_seen", {}).get(which)
        if isinstance(seen, dict):
            try:
                return VideoView(**{k: v for k, v in seen.items() if k != "online"})
            except TypeError:
                pass
        c = self.cfg
        v = VideoView(
            codec=_norm_codec(c.codec) if c.codec else "H264",
            width=c.width or 1920,
            height=c.height or 1080,
            fps=c.fps or 25.0,
        )
        if which == "sub" and not (c.width or c.height):
            v.width, v.height, v.bitrate_kbps = 640, 360, 512
        return v

    def _live_view(self, s: Stream, which: str) -> VideoView | None:
        track = s.video_track
        if track is None:
            return None
        info = s.video_info
        prev = self._measured.get(which) or VideoView()
        codec = _norm_codec(track.codec)
        v = VideoView(
            codec=codec,
            width=getattr(info, "width", 0) or prev.width,
            height=getattr(info, "height", 0) or prev.height,
            fps=prev.fps,
            bitrate_kbps=prev.bitrate_kbps,
            profile=_h264_profile_name(codec, int(getattr(info, "profile", 0) or 0)),
            gov_length=prev.gov_length,
            online=True,
        )
        st = s.stats
        if st.fps > 0:
            v.fps = round(st.fps, 2)
        elif info is not None and getattr(info, "fps", None):
            v.fps = round(float(info.fps), 2)  # type: ignore[attr-defined]
        if st.bitrate > 0:
            v.bitrate_kbps = max(1, int(st.bitrate / 1000))
        if st.keyframes_in > 1:
            v.gov_length = max(1, round(st.frames_in / st.keyframes_in))
        return v

    def audio(self, which: str = "main") -> AudioView | None:
        """The stream's audio track, if any (live or last seen)."""
        s = self.stream(which)
        if s is not None and s.tracks:
            for t in s.tracks:
                if t.kind == "audio":
                    ch = 1
                    rtpmap = t.media.rtpmap.get(t.payload_type)
                    if rtpmap and rtpmap[2]:
                        ch = int(rtpmap[2])
                    return AudioView(t.codec.upper(), t.clock_rate, ch)
            return None
        seen = self.doc.get("last_seen", {}).get(which + "_audio")
        if isinstance(seen, dict):
            try:
                return AudioView(**seen)
            except TypeError:
                return None
        return None

    def measure(self) -> None:
        """Once a second: remember the live values so they survive the publisher leaving."""
        for which in ("main", "sub"):
            s = self.stream(which)
            if s is not None and s.online:
                v = self._live_view(s, which)
                if v is not None:
                    self._measured[which] = v

    def remember_stream(self, which: str) -> None:
        """Persist the last-seen description of a stream (on publish/info/unpublish)."""
        v = self._measured.get(which)
        s = self.stream(which)
        if s is not None and s.online:
            v = self._live_view(s, which) or v
        if v is None:
            return
        seen = dict(self.doc.get("last_seen", {}))
        new = v.to_json()
        a = self.audio(which)
        new_audio = a.__dict__ if a is not None else None
        if seen.get(which) == new and seen.get(which + "_audio") == new_audio:
            return
        seen[which] = new
        seen[which + "_audio"] = new_audio
        self.doc["last_seen"] = seen
        self.save()

    # ------------------------------------------------------------------ profiles
    def default_profiles(self) -> list[ProfileState]:
        """The two fixed profiles: main and sub."""
        audio = self.audio("main") is not None
        return [
            ProfileState(
                MAIN_PROFILE,
                "MainStream",
                True,
                VSC,
                VEC_MAIN,
                ASC if audio else None,
                AEC if audio else None,
            ),
            ProfileState(SUB_PROFILE, "SubStream", True, VSC, VEC_SUB, None, None),
        ]

    @property
    def profiles(self) -> list[ProfileState]:
        """Every profile, fixed ones first."""
        stored = self.doc.get("profiles")
        if stored is None:
            return self.default_profiles()
        out = []
        for p in stored:
            try:
                out.append(ProfileState(**p))
            except TypeError:
                continue
        return out

    def profile(self, token: str) -> ProfileState:
        """The profile with ``token``; CameraError ter:NoProfile when missing."""
        for p in self.profiles:
            if p.token == token:
                return p
        raise CameraError("ter:NoProfile", f"no profile with token {token!r}")

    def _store_profiles(self, profiles: list[ProfileState]) -> None:
        self.doc["profiles"] = [p.to_json() for p in profiles]
        self.save()

    def create_profile(self, name: str, token: str | None, **configs: str | None) -> ProfileState:
        """CreateProfile: a deletable profile, empty or with ``configs`` (vsc, vec, asc, aec)."""
        profiles = self.profiles
        if len(profiles) >= self.app_cfg.onvif.max_profiles:
            raise CameraError(
                "ter:MaxNVTProfiles",
                f"at most {self.app_cfg.onvif.max_profiles} profiles",
                "Receiver",
            )
        if token is None or not token:
            token = "Profile_" + secrets.token_hex(4)
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", token):
            raise CameraError("ter:InvalidArgVal", f"invalid profile token {token[:64]!r}")
        if any(p.token == token for p in profiles):
            raise CameraError("ter:ProfileExists", f"profile {token!r} exists")
        p = ProfileState(token, name[:64] or token, **configs)
        profiles.append(p)
        self._store_profiles(profiles)
        return p

    def delete_profile(self, token: str) -> None:
        """DeleteProfile: fixed profiles stay."""
        p = self.profile(token)
        if p.fixed:
            raise CameraError("ter:DeletionOfFixedProfile", f"profile {token!r} is fixed")
        self._store_profiles([x for x in self.profiles if x.token != token])

    def update_profile(self, token: str, **changes: str | None) -> ProfileState:
        """Attach or detach configurations (vsc, vec, asc, aec) of a profile, or rename it."""
        profiles = self.profiles
        for p in profiles:
            if p.token == token:
                for k, v in changes.items():
                    setattr(p, k, v)
                self._store_profiles(profiles)
                return p
        raise CameraError("ter:NoProfile", f"no profile with token {token!r}")

    def video_encoders(self) -> list[str]:
        """Video encoder configuration tokens."""
        return [VEC_MAIN, VEC_SUB]

    def use_count(self, attr: str, token: str) -> int:
        """How many profiles use configuration ``token``."""
        return sum(1 for p in self.profiles if getattr(p, attr) == token)

    def encoder_settings(self, token: str) -> dict[str, Any]:
        """Client-set encoder values (name, quality, multicast, rate limits...)."""
        return dict(self.doc.get("encoders", {}).get(token, {}))

    def set_encoder_settings(self, token: str, settings: dict[str, Any]) -> None:
        """Persist client-set encoder values."""
        enc = copy.deepcopy(self.doc.get("encoders", {}))
        enc[token] = settings
        self.doc["encoders"] = enc
        self.save()

    def which(self, vec: str | None) -> str:
        """``main`` or ``sub`` for an encoder token."""
        return "sub" if vec == VEC_SUB else "main"

    def summary(self) -> dict[str, Any]:
        """The /api/cameras entry."""
        v = self.video("main")
        return {
            "name": self.name,
            "slug": self.slug,
            "path": self.path,
            "sub_path": self.sub_path,
            "auto": self.auto,
            "online": self.online,
            "address": self.address,
            "port": self.bound[0][1] if self.bound else 0,
            "uuid": self.uuid,
            "mac": self.mac,
            "serial": self.serial,
            "auth": self.auth_required,
            "video": {"codec": v.codec, "width": v.width, "height": v.height, "fps": v.fps},
        }


@dataclass
class CameraRegistry:
    """Every camera by key, created from the configuration and from publishes."""

    cfg: Config
    store: StateStore
    streams: StreamRegistry
    cameras: dict[str, Camera] = field(default_factory=dict)
    on_added: list[Callable[[Camera], None]] = field(default_factory=list)
    on_removed: list[Callable[[Camera], None]] = field(default_factory=list)
    loaded: bool = False

    def load(self) -> None:
        """Create the configured cameras, restore auto cameras seen before, and add auto
        cameras for paths that went live before the registry was loaded."""
        self.loaded = True
        for c in self.cfg.cameras:
            cam = Camera(c.name or c.path, c, self.cfg, self.store, self.streams, auto=False)
            self._add(cam)
        if not self.cfg.onvif.auto_cameras:
            return
        for key in self.store.keys():
            if key in self.cameras:
                continue
            doc = self.store.load(key)
            path = doc.get("path")
            if doc.get("auto") and isinstance(path, str) and path and not self.claimed(path):
                cam = self._auto(path)
                cam.offline_since = self._offline_since(cam, doc)
        for s in self.streams.online():
            if not self.claimed(s.path):
                self._auto(s.path, persist=False)

    def _offline_since(self, cam: Camera, doc: dict[str, Any]) -> float | None:
        """When a restored auto camera was last online: recorded, else its file's age."""
        if cam.online:
            return None
        last = doc.get("last_online")
        if isinstance(last, int | float):
            return float(last)
        try:
            return self.store.path(cam.key).stat().st_mtime
        except OSError:
            return time.time()

    def claimed(self, path: str) -> bool:
        """True when some camera shows ``path`` as its main or sub stream."""
        return any(path in (c.path, c.sub_path) for c in self.cameras.values())

    def _auto(self, path: str, persist: bool = True) -> Camera:
        """An auto camera for ``path``; a new one (``persist`` False) stays in memory until
        its stream carries video, unless a state file for it exists already."""
        if not persist and self.store.path(path).exists():
            persist = True
        cam = Camera(
            path,
            CameraConfig(name=path, path=path),
            self.cfg,
            self.store,
            self.streams,
            auto=True,
            persist=persist,
        )
        self._add(cam)
        return cam

    @staticmethod
    def carried_video(cam: Camera) -> bool:
        """Whether the camera's main stream has delivered a keyframe on a video track."""
        s = cam.stream("main")
        return s is not None and s.video_track is not None and s.stats.keyframes_in > 0

    def _keep(self, cam: Camera) -> None:
        """Persist an auto camera whose stream has become a real video stream."""
        if not cam.persist and self.carried_video(cam):
            cam.persist = True
            cam.save()
            log.info("onvif: camera %r carries video; its identity is saved", cam.name)

    def remove(self, cam: Camera, reason: str) -> None:
        """Remove a camera for good: from the registry, its endpoint (listeners) and its
        state file."""
        if self.cameras.get(cam.key) is not cam:
            return
        del self.cameras[cam.key]
        if cam.persist:
            try:
                self.store.path(cam.key).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("onvif: cannot delete %s (%s)", self.store.path(cam.key), exc)
        cam.persist = False
        log.info("onvif: camera %r removed: %s", cam.name, reason)
        for fn in self.on_removed:
            fn(cam)

    def _add(self, cam: Camera) -> None:
        for other in self.cameras.values():
            if other.slug == cam.slug:
                cam.slug = f"{cam.slug}-{hashlib.sha1(cam.key.encode()).hexdigest()[:6]}"
            # copied state files: regenerate the stored identity (a configured mac or serial
            # is the operator's choice; a clash there would regenerate the EPR on every start)
            if other.uuid == cam.uuid or other.doc["mac"] == cam.doc["mac"]:
                cam.doc.pop("uuid", None)
                cam.doc.pop("mac", None)
                cam.doc.pop("serial", None)
                cam._ensure_identity()
            if other.mac == cam.mac:
                log.warning("onvif: cameras %r and %r have the same MAC", other.name, cam.name)
        self.cameras[cam.key] = cam
        for fn in self.on_added:
            fn(cam)

    def stream_changed(self, stream: Stream, what: str) -> None:
        """StreamRegistry listener: auto cameras on publish, last-seen values on changes."""
        path = stream.path
        if not self.loaded:
            return
        if what == "publish" and self.cfg.onvif.auto_cameras and not self.claimed(path):
            if len(self.cameras) >= self.cfg.onvif.max_cameras:
                log.warning("onvif: not creating a camera for %s: max_cameras reached", path)
                return
            cam = self._auto(path, persist=False)
            log.info("onvif: new camera %r for path %s", cam.name, path)
        for cam in list(self.cameras.values()):
            if cam.auto and cam.path == path:
                if what == "unpublish" and not cam.persist and not self.carried_video(cam):
                    self.remove(cam, "its publisher left before sending any video")
                    continue
                self._keep(cam)
                if what == "publish":
                    cam.offline_since = None
                elif what == "unpublish":
                    cam.offline_since = time.time()
                    cam.doc["last_online"] = cam.offline_since
            for which, p in (("main", cam.path), ("sub", cam.sub_path)):
                if p == path and p:
                    writes = self.store.writes
                    cam.remember_stream(which)
                    if what == "unpublish" and cam.auto and self.store.writes == writes:
                        cam.save()  # last_online

    def rtsp_users(self, path: str) -> tuple[list[tuple[str, str]], bool]:
        """ONVIF users (name, password) of the cameras showing ``path``, and whether one of
        those cameras requires them for reading it over RTSP."""
        path = self.streams.normalize(path)
        users: list[tuple[str, str]] = []
        required = False
        for c in self.cameras.values():
            if path and path in (c.path, c.sub_path):
                users.extend((u.name, u.password) for u in c.users)
                required = required or c.rtsp_needs_users
        return users, required

    def find(self, name: str) -> Camera | None:
        """A camera by name, key, slug or path (case-insensitive slug as a last resort)."""
        for c in self.cameras.values():
            if name in (c.name, c.key, c.slug, c.path):
                return c
        low = name.lower()
        for c in self.cameras.values():
            if c.slug.lower() == low or slugify(name).lower() == c.slug.lower():
                return c
        return None

    def tick(self, now: float | None = None) -> None:
        """Once a second: remember measured rates of live streams, save auto cameras whose
        stream has carried video, remove auto cameras offline longer than ``auto_expire``.
        ``now`` is UNIX time (default: the clock)."""
        now = time.time() if now is None else now
        expire = self.cfg.onvif.auto_expire
        for c in list(self.cameras.values()):
            c.measure()
            if not c.auto:
                continue
            self._keep(c)
            since = c.offline_since
            if expire > 0 and since is not None and not c.online and now - since >= expire:
                self.remove(
                    c, f"offline for {now - since:.0f} s ([onvif] auto_expire = {expire:g})"
                )
