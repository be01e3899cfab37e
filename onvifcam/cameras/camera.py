"""The ONVIF view of a camera: its configuration, persisted state and live stream together.

A :class:`Camera` shows one stream path (and optionally a second "sub" path) as an ONVIF
device: identity, users, clock, scopes, media profiles and the live video/audio views.
Everything a client can change and the generated identity live in a typed
:class:`~onvifcam.cameras.model.CameraState`, stored as one JSON document per camera
(:mod:`onvifcam.state`). Sockets are not the camera's business: the web component binds
them and knows where each camera is reachable.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from onvifcam import __version__
from onvifcam.cameras.model import (
    ADMIN,
    DISCOVERABLE,
    LEVELS,
    NON_DISCOVERABLE,
    AudioView,
    CameraState,
    Clock,
    ProfileState,
    StoredUser,
    User,
    VideoView,
)
from onvifcam.cameras.stable import StableRates
from onvifcam.config import CameraConfig, Config
from onvifcam.media.stream import Stream, StreamRegistry
from onvifcam.state import StateStore

log = logging.getLogger(__name__)

VSRC = "VideoSource_1"
VSC = "VideoSourceConfig_1"
VEC_MAIN = "VideoEncoder_1"
VEC_SUB = "VideoEncoder_2"
ASRC = "AudioSource_1"
ASC = "AudioSourceConfig_1"
AEC = "AudioEncoder_1"
MDC = "MetadataConfig_1"
MAIN_PROFILE = "Profile_1"
SUB_PROFILE = "Profile_2"

_H264_PROFILES = {66: "Baseline", 77: "Main", 88: "Extended", 100: "High"}
_H265_PROFILES = {1: "Main", 2: "Main10"}
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")
# SetVideoEncoderConfiguration keys (CameraState.encoders) -> VideoView attribute, type
_ENCODER_KEYS: tuple[tuple[str, str, type | tuple[type, ...]], ...] = (
    ("width", "width", int),
    ("height", "height", int),
    ("fps", "fps", (int, float)),
    ("bitrate", "bitrate_kbps", int),
    ("gov", "gov_length", int),
    ("profile", "profile", str),
)


class CameraError(ValueError):
    """A request the camera model refuses; ``subcode`` is the ONVIF ter: subcode."""

    def __init__(self, subcode: str, message: str, code: str = "Sender") -> None:
        super().__init__(message)
        self.subcode = subcode
        self.code = code


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
        state: CameraState | None = None,
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
        # sub_stream = "transcode": the sub stream is made from the main one, on PATH/sub
        self.transcoded_sub = getattr(cfg, "sub_stream", "") == "transcode" and not cfg.sub_path
        self.sub_path = streams.normalize(
            cfg.sub_path or (cfg.path.rstrip("/") + "/sub" if self.transcoded_sub else "")
        )
        self.address = cfg.address
        self.started_at = time.time()
        self.reboots = 0
        # Told when a client changes what the camera announces (scopes, discovery mode,
        # hostname, factory default): the registry turns it into CameraUpdated.
        self.on_change: Callable[[Camera], None] | None = None
        self.on_reboot: Callable[[Camera], None] | None = None
        # Told (with the token) when a client stores encoder settings: the transcoded sub
        # stream is remade at once, before the next reader's DESCRIBE
        self.on_encoder_change: list[Callable[[str], None]] = []
        self._measured: dict[str, VideoView] = {}
        # run-time only: the virtual PTZ head (onvifcam.onvif.ptz.Head) once a client uses it
        self.ptz_head: Any = None
        self._stable: dict[str, StableRates] = {}  # "main"/"sub": live values held still
        self._publisher: dict[str, int] = {}  # id() of the publisher they were measured on
        # the server's recent log lines naming this camera (GetSystemLog), bounded
        self.log_lines: deque[str] = deque(maxlen=app_cfg.onvif.system_log_lines)
        self.state = state if state is not None else CameraState.from_json(store.load(key))
        self._ensure_identity()

    # ------------------------------------------------------------------ identity
    def _ensure_identity(self) -> None:
        st = self.state
        changed = False
        if not st.uuid:
            st.uuid = str(uuid.uuid4())
            changed = True
        if not st.mac:
            st.mac = _mac_from(st.uuid)
            changed = True
        if not st.serial:
            try:
                st.serial = "OC" + uuid.UUID(st.uuid).hex[:12].upper()
            except ValueError:  # a hand-edited UUID
                st.serial = "OC" + hashlib.sha1(st.uuid.encode()).hexdigest()[:12].upper()
            changed = True
        if self.auto and (not st.auto or st.path != self.path):
            st.auto = True
            st.path = self.path
            changed = True
        if changed:
            self.save()

    def regenerate_identity(self) -> None:
        """A new EPR UUID, MAC and serial (a state file copied from another camera)."""
        self.state.uuid = self.state.mac = self.state.serial = ""
        self._ensure_identity()

    @property
    def doc(self) -> dict[str, Any]:
        """Persisted keys without a typed field in :class:`CameraState` (settings other
        components keep with the camera, e.g. DeviceIO relays): read and change them here,
        then :meth:`save`. Everything else lives in ``state``."""
        return self.state.extra

    def _changed(self) -> None:
        """Persist, then tell ``on_change`` (a client changed what the camera announces)."""
        self.save()
        if self.on_change is not None:
            self.on_change(self)

    def save(self) -> None:
        """Persist the camera's document (atomic write); kept in memory while not ``persist``."""
        if self.persist:
            self.store.save(self.key, self.state.to_json())

    @property
    def uuid(self) -> str:
        """The EPR address UUID (urn:uuid:...)."""
        return self.state.uuid

    @property
    def mac(self) -> str:
        """The network interface's hardware address."""
        return self.cfg.mac.lower() or self.state.mac

    @property
    def serial(self) -> str:
        """Serial number."""
        return self.cfg.serial or self.state.serial

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
        return self.state.port

    def remember_port(self, port: int) -> None:
        """Persist the port an auto camera got, so it keeps it across restarts."""
        if self.cfg.onvif_port or (self.address and not self.auto):
            return
        if self.state.port != port and self.app_cfg.onvif.port_range_start:
            self.state.port = port
            self.save()

    # ------------------------------------------------------------------ clock
    def now(self) -> float:
        """The camera's clock (UNIX time): the host clock plus any SetSystemDateAndTime."""
        clock = self.state.clock
        return time.time() + (clock.offset if clock is not None else 0.0)

    @property
    def time_settings(self) -> dict[str, Any]:
        """DateTimeType, TZ and DST flag."""
        t = self.state.clock or Clock()
        return {"type": t.type, "tz": t.tz, "dst": t.dst}

    def set_time(self, kind: str, tz: str | None, dst: bool, utc: float | None) -> None:
        """SetSystemDateAndTime: Manual sets an offset to the host clock, NTP clears it."""
        old = self.state.clock or Clock()
        self.state.clock = Clock(
            type=kind,
            tz=tz if tz is not None else old.tz,
            dst=dst,
            offset=(utc - time.time()) if (kind == "Manual" and utc is not None) else 0.0,
        )
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
        for u in self.state.users:
            if not any(x.name == u.name for x in out):
                out.append(User(u.name, u.password, u.level))
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
        self.state.users.extend(StoredUser(u.name, u.password, u.level) for u in new)
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
        self.state.users = [u for u in self.state.users if u.name not in names]
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
        for d in self.state.users:
            if d.name == name:
                d.level = level
                if password is not None:
                    d.password = password
        self.save()

    # ------------------------------------------------------------------ device settings
    @property
    def hostname(self) -> str:
        """The device hostname (settable)."""
        return self.state.hostname or f"onvifcam-{self.slug}"[:63]

    def set_hostname(self, name: str) -> None:
        """SetHostname with RFC 1123 checks."""
        if not re.fullmatch(r"(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?", name):
            raise CameraError("ter:InvalidHostname", f"invalid hostname {name[:64]!r}")
        self.state.hostname = name
        self._changed()

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
        stored = self.state.scopes
        if stored is not None:
            return list(stored)
        base = "onvif://www.onvif.org"
        out = [f"{base}/name/{self.name.replace(' ', '_')}"]
        out.append(f"{base}/location/{(self.cfg.location or 'virtual').replace(' ', '_')}")
        return out

    @property
    def added_scopes(self) -> list[str]:
        """Scopes added with AddScopes."""
        return list(self.state.added_scopes)

    def set_scopes(self, scopes: list[str]) -> None:
        """SetScopes replaces the configurable scopes."""
        self.state.scopes = list(scopes)
        self._changed()

    def add_scopes(self, scopes: list[str]) -> None:
        """AddScopes."""
        have = set(self.fixed_scopes + self.config_scopes + self.added_scopes)
        extra = [s for s in scopes if s not in have]
        self.state.added_scopes = self.added_scopes + extra
        self._changed()

    def remove_scopes(self, scopes: list[str]) -> None:
        """RemoveScopes: fixed scopes cannot be removed."""
        for s in scopes:
            if s in self.fixed_scopes:
                raise CameraError("ter:FixedScope", f"scope {s} is fixed")
            if s not in self.config_scopes and s not in self.added_scopes:
                raise CameraError("ter:NoScope", f"scope {s} does not exist")
        self.state.scopes = [s for s in self.config_scopes if s not in scopes]
        self.state.added_scopes = [s for s in self.added_scopes if s not in scopes]
        self._changed()

    @property
    def discovery_mode(self) -> str:
        """Discoverable or NonDiscoverable."""
        return self.state.discovery_mode

    def set_discovery_mode(self, mode: str) -> None:
        """SetDiscoveryMode."""
        if mode not in (DISCOVERABLE, NON_DISCOVERABLE):
            raise CameraError("ter:InvalidArgVal", f"discovery mode {mode!r}")
        self.state.discovery_mode = mode
        self._changed()

    def network(self, key: str) -> Any:
        """A stored network setting (SetNTP, SetDNS ...); None when never set."""
        value = self.state.network.get(key)
        return copy.deepcopy(value)

    def set_network(self, key: str, value: Any) -> None:
        """Store a network setting (echoed by its getter; the host is never changed)."""
        self.state.network[key] = copy.deepcopy(value)
        self.save()

    def factory_default(self) -> None:
        """SetSystemFactoryDefault: forget every client change, keep the identity."""
        self.state = self.state.factory_default()
        self._changed()

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
    def metadata_track(self) -> bool:
        """True while the main stream carries an ONVIF metadata track (an SDP
        ``m=application`` with ``vnd.onvif.metadata``): the relay forwards it with the rest."""
        s = self.stream("main")
        return s is not None and any(
            t.kind == "application" and t.codec.lower() == "vnd.onvif.metadata" for t in s.tracks
        )

    @property
    def online(self) -> bool:
        """True while the main stream has a publisher."""
        s = self.stream("main")
        return s is not None and s.online

    def sub_settings(self) -> VideoView:
        """What the transcoded sub stream is made as: the sub encoder's settings
        (SetVideoEncoderConfiguration), else 640x360 at 10 fps, 512 kbit/s, a keyframe every
        2 s."""
        e = self.encoder_settings(VEC_SUB)

        def num(key: str, default: float, lo: float, hi: float) -> float:
            v = e.get(key, default)
            ok = isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi
            return float(v) if ok else default

        fps = num("fps", 10.0, 1.0, 60.0)
        return VideoView(
            codec="H264",
            width=int(num("width", 640, 16, 4096)) & ~1,
            height=int(num("height", 360, 16, 4096)) & ~1,
            fps=fps,
            bitrate_kbps=int(num("bitrate", 512, 16, 100000)),
            profile="Baseline",
            gov_length=int(num("gov", round(2 * fps), 1, 1000)),
            online=self.online,
        )

    def video(self, which: str = "main") -> VideoView:
        """The live video description, else the last-seen one, else configured defaults."""
        if which == "sub" and self.transcoded_sub:
            return self.sub_settings()
        s = self.stream(which)
        if s is not None and s.online and s.video_track is not None:
            v = self._live_view(s, which)
            if v is not None:
                return v
        seen = self.state.seen_video.get(which)
        if seen is not None:
            return VideoView(**seen.to_json())
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

    def _rates(self, s: Stream, which: str) -> StableRates:
        """The stable rates of a stream, measured afresh for each new publisher."""
        pub = id(s.publisher)
        rates = self._stable.get(which)
        if rates is None or self._publisher.get(which) != pub:
            rates = self._stable[which] = StableRates()
            self._publisher[which] = pub
        return rates

    def _live_view(self, s: Stream, which: str) -> VideoView | None:
        """The live stream as configurations show it: size and profile from the SPS,
        frame rate from the SPS timing info, else measured; frame rate, bitrate and GOV
        length held still (:mod:`onvifcam.cameras.stable`)."""
        track = s.video_track
        if track is None:
            return None
        info = s.video_info
        prev = self._measured.get(which) or VideoView()
        codec = _norm_codec(track.codec)
        rates = self._rates(s, which)
        if rates.fps.value is None or rates.kbps.value is None or rates.gov.value is None:
            self._feed(s, rates, seed=True)  # between ticks: only what is not held yet
        v = VideoView(
            codec=codec,
            width=getattr(info, "width", 0) or prev.width,
            height=getattr(info, "height", 0) or prev.height,
            fps=rates.fps.value or prev.fps,
            bitrate_kbps=int(rates.kbps.value or prev.bitrate_kbps),
            profile=_h264_profile_name(codec, int(getattr(info, "profile", 0) or 0)),
            gov_length=int(rates.gov.value or prev.gov_length),
            online=True,
        )
        return v

    @staticmethod
    def _feed(s: Stream, rates: StableRates, seed: bool = False) -> None:
        st = s.stats
        sps_fps = getattr(s.video_info, "fps", None)
        gov = st.gop or None  # frames between the last two keyframes
        rates.feed(float(sps_fps) if sps_fps else None, st.fps, st.bitrate, gov, seed)

    def measured(self, which: str = "main") -> dict[str, Any]:
        """The raw measurements of a live stream (statistics and the API, never the ONVIF
        configuration): frames/s and kbit/s of the last second, average GOV length."""
        s = self.stream(which)
        if s is None or not s.online:
            return {}
        st = s.stats
        return {
            "fps": round(st.fps, 2),
            "bitrate_kbps": round(st.bitrate / 1000, 1),
            "gov_length": st.gop,
            "sps_fps": getattr(s.video_info, "fps", None),
            "settled": self._settled(which),
        }

    def _settled(self, which: str) -> bool:
        """True once the configurations show values that hold still (a new stream's are
        followed over its first seconds)."""
        rates = self._stable.get(which)
        return rates is not None and all(
            h.settled for h in (rates.fps, rates.kbps, rates.gov) if h.value is not None
        )

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
        seen = self.state.seen_audio.get(which)
        return AudioView(**seen.to_json()) if seen is not None else None

    def measure(self) -> None:
        """Once a second: feed the stable rates and remember the live values so they
        survive the publisher leaving."""
        for which in ("main", "sub"):
            s = self.stream(which)
            if s is not None and s.online:
                self._feed(s, self._rates(s, which))
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
        st = self.state
        new = VideoView(**v.to_json())
        a = self.audio(which)
        if st.seen_video.get(which) == new and st.seen_audio.get(which) == a:
            return
        st.seen_video[which] = new
        st.seen_audio[which] = a
        self.save()

    # ------------------------------------------------------------------ profiles
    def default_profiles(self) -> list[ProfileState]:
        """The fixed profiles: main (with the metadata configuration while the main stream
        carries a metadata track), and sub when the camera has a sub stream."""
        audio = self.audio("main") is not None
        out = [
            ProfileState(
                MAIN_PROFILE,
                "MainStream",
                True,
                VSC,
                VEC_MAIN,
                ASC if audio else None,
                AEC if audio else None,
                mdc=MDC if self.metadata_track else None,
            ),
            ProfileState(SUB_PROFILE, "SubStream", True, VSC, VEC_SUB, None, None),
        ]
        return out if self.sub_path else out[:1]

    @property
    def profiles(self) -> list[ProfileState]:
        """Every profile, fixed ones first."""
        stored = self.state.profiles
        if stored is None:
            return self.default_profiles()
        return [
            ProfileState(**p.to_json())
            for p in stored
            if self.sub_path or not (p.fixed and p.token == SUB_PROFILE)
        ]

    def profile(self, token: str) -> ProfileState:
        """The profile with ``token``; CameraError ter:NoProfile when missing."""
        for p in self.profiles:
            if p.token == token:
                return p
        raise CameraError("ter:NoProfile", f"no profile with token {token!r}")

    def _store_profiles(self, profiles: list[ProfileState]) -> None:
        self.state.profiles = [ProfileState(**p.to_json()) for p in profiles]
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
        """Video encoder configuration tokens (the sub one only with a sub stream)."""
        return [VEC_MAIN, VEC_SUB] if self.sub_path else [VEC_MAIN]

    def use_count(self, attr: str, token: str) -> int:
        """How many profiles use configuration ``token``."""
        return sum(1 for p in self.profiles if getattr(p, attr) == token)

    def encoder_settings(self, token: str) -> dict[str, Any]:
        """Client-set encoder values (name, quality, multicast, rate limits...)."""
        return dict(self.state.encoders.get(token, {}))

    def set_encoder_settings(self, token: str, settings: dict[str, Any]) -> None:
        """Persist client-set encoder values."""
        self.state.encoders[token] = dict(settings)
        self.save()
        for fn in list(self.on_encoder_change):
            fn(token)

    def encoder_view(self, token: str) -> VideoView:
        """What a video encoder configuration shows: every value a client set with
        SetVideoEncoderConfiguration (resolution, frame rate and bitrate limits, GOV length,
        profile), else the stream's own (stable) value. Set values are reported as set even
        when a pushed stream cannot honour them; :meth:`measured` has what really arrives."""
        v = self.video(self.which(token))
        s = self.state.encoders.get(token, {})
        out = VideoView(**v.to_json())
        out.online = v.online
        for key, attr, kind in _ENCODER_KEYS:
            value = s.get(key)
            if isinstance(value, kind) and not isinstance(value, bool):
                setattr(out, attr, value)
        return out

    # ------------------------------------------------------------------ OSD, metadata
    @property
    def osds(self) -> list[dict[str, Any]]:
        """Stored OSDs (CreateOSD/SetOSD), in creation order."""
        return copy.deepcopy(self.state.osds)

    def osd(self, token: str) -> dict[str, Any]:
        """One OSD; CameraError ter:NoConfig when missing."""
        for o in self.state.osds:
            if o.get("token") == token:
                return copy.deepcopy(o)
        raise CameraError("ter:NoConfig", f"no OSD with token {token[:64]!r}")

    def create_osd(self, osd: dict[str, Any]) -> str:
        """CreateOSD: store a new OSD under a fresh token ([onvif] max_osds)."""
        limit = self.app_cfg.onvif.max_osds
        if len(self.state.osds) >= limit:
            raise CameraError("ter:MaxOSDs", f"at most {limit} OSDs ([onvif] max_osds)", "Receiver")
        used = {o.get("token") for o in self.state.osds}
        n = 1
        while f"OSD_{n}" in used:
            n += 1
        stored = {**copy.deepcopy(osd), "token": f"OSD_{n}"}
        self.state.osds.append(stored)
        self.save()
        return stored["token"]

    def set_osd(self, osd: dict[str, Any]) -> None:
        """SetOSD: replace a stored OSD."""
        self.osd(str(osd.get("token")))
        self.state.osds = [
            copy.deepcopy(osd) if o.get("token") == osd.get("token") else o for o in self.state.osds
        ]
        self.save()

    def delete_osd(self, token: str) -> None:
        """DeleteOSD."""
        self.osd(token)
        self.state.osds = [o for o in self.state.osds if o.get("token") != token]
        self.save()

    @property
    def metadata_settings(self) -> dict[str, Any]:
        """What SetMetadataConfiguration stored."""
        return copy.deepcopy(self.state.metadata)

    def set_metadata_settings(self, settings: dict[str, Any]) -> None:
        """Persist SetMetadataConfiguration."""
        self.state.metadata = copy.deepcopy(settings)
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
            "uuid": self.uuid,
            "mac": self.mac,
            "serial": self.serial,
            "auth": self.auth_required,
            "video": {"codec": v.codec, "width": v.width, "height": v.height, "fps": v.fps},
            "measured": self.measured("main"),
        }
