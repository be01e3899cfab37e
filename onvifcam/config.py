"""Configuration: TOML file -> frozen dataclasses.

Every section is a dataclass whose fields are the accepted keys with their defaults. Unknown
keys, wrong types and out-of-range values raise :class:`ConfigError` naming the file, the key
and the reason, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import ipaddress
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onvifcam.srt import PASSPHRASE_MAX, PASSPHRASE_MIN


class ConfigError(ValueError):
    """A configuration problem, with the file and key it concerns."""


def _default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local/state")
    return os.path.join(base, "onvifcam")


@dataclass(frozen=True)
class ServerConfig:
    """[server]: listening addresses and ports."""

    host: str = "0.0.0.0"
    rtsp_port: int = 8554
    rtmp_port: int = 1935
    rtmps_port: int = 1936
    http_port: int = 8080
    # host or host:port put in URLs given to clients (the port: the main HTTP port as
    # clients reach it through port mapping)
    advertise: str = ""
    advertise_rtsp_port: int = 0  # RTSP port in stream URIs as clients reach it (0: bound)
    state_dir: str = field(default_factory=_default_state_dir)
    log_level: str = "info"
    log_format: str = "text"  # "text" (readable lines) or "json" (one object a line)
    uvloop: bool = True
    # Warn (once per stall, with the loop's stack) when the event loop is blocked this long.
    loop_stall_warn_ms: int = 500


@dataclass(frozen=True)
class RtspConfig:
    """[rtsp]: RTSP relay transports."""

    udp: bool = True
    rtp_port: int = 8000
    rtcp_port: int = 8001
    multicast: bool = True
    multicast_range: str = "239.77.0.0/16"
    multicast_port_base: int = 18000
    multicast_ttl: int = 16
    http_tunnel: bool = True
    auth_methods: tuple[str, ...] = ("digest", "basic")
    realm: str = "onvifcam"
    # DESCRIBE of a path a demand hook will start a source for waits this long for it.
    on_demand_timeout: float = 10.0
    # Requests a connection may send while one is waiting (answered in order afterwards).
    max_queued_requests: int = 16


@dataclass(frozen=True)
class RtmpConfig:
    """[rtmp]: RTMP / RTMPS ingest."""

    enabled: bool = True
    tls_cert: str = ""
    tls_key: str = ""
    tls_pkcs12: str = ""
    tls_pkcs12_password: str = ""
    chunk_size: int = 4096
    # Packetise RTMP media for RTSP only while the stream has readers (keyframes always).
    lazy_packetize: bool = True
    # While a stream has no readers, read its publisher's socket at most every N ms.
    idle_read_interval_ms: int = 100
    # Until a publish is accepted: the largest message, and all incomplete messages plus
    # unsent replies together. Afterwards: the largest message, and all incomplete ones.
    pre_publish_buffer_bytes: int = 65536
    max_message_bytes: int = 8 * 1024 * 1024
    max_buffer_bytes: int = 16 * 1024 * 1024
    max_chunk_streams: int = 64


@dataclass(frozen=True)
class SrtConfig:
    """[srt]: SRT listener (callers push MPEG-TS)."""

    enabled: bool = True
    port: int = 8890  # UDP
    latency_ms: int = 120  # receive latency offered; the larger of ours and the caller's wins
    max_latency_ms: int = 10000  # cap on what a caller can ask for (the buffer must hold it)
    passphrase: str = ""  # every path without its own srt_passphrase; 10-79 characters
    pbkeylen: int = 16  # AES key length offered to callers that do not choose one (16/24/32)
    max_connections: int = 64
    handshakes_per_ip_per_s: float = 5.0  # handshake packets per source IP (token bucket)...
    handshake_burst: int = 10  # ...with this burst
    recv_buffer_packets: int = 8192  # per connection, about 12 MB at most
    peer_idle_timeout_ms: int = 5000  # nothing from the caller this long: closed
    socket_buffer_bytes: int = 4 * 1024 * 1024  # UDP receive buffer (SO_RCVBUF)
    # Packetise for RTSP only while the stream has readers (keyframes always).
    lazy_packetize: bool = True


@dataclass(frozen=True)
class LimitsConfig:
    """[limits]: every bound the servers enforce."""

    max_connections: int = 1024
    # Share of max_connections that connections which have not authenticated cannot take,
    # except from addresses with an authenticated session now or in the last
    # trusted_address_ttl seconds.
    reserved_share: float = 0.125
    trusted_address_ttl: float = 600.0
    # Unauthenticated connections per address; beyond it they must authenticate within
    # probation_timeout seconds.
    max_unauthenticated_per_ip: int = 32
    probation_timeout: float = 3.0
    # Per-address budget for connections that end unauthenticated, failed logins and
    # publish attempts (token bucket; 0 turns it off).
    per_ip_rate: float = 20.0
    per_ip_burst: int = 50
    # Addresses that skip the per-address rules above.
    exempt_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    max_request_line: int = 4096
    max_headers: int = 64
    max_header_bytes: int = 16384
    max_body: int = 65536
    handshake_timeout: float = 10.0
    request_timeout: float = 10.0  # an RTSP request: from its first byte to its last
    unauthenticated_timeout: float = 30.0  # a connection must authenticate within this
    publish_timeout: float = 10.0
    media_timeout: float = 15.0
    idle_timeout: float = 30.0
    session_timeout: float = 60.0
    reader_queue_bytes: int = 4 * 1024 * 1024
    gop_cache_bytes: int = 16 * 1024 * 1024
    max_readers_per_stream: int = 2000
    max_streams: int = 4096
    hook_queue: int = 256  # events waiting for [[hooks]]; beyond it the oldest are dropped
    hook_concurrency: int = 4  # hook commands and webhooks running at once


@dataclass(frozen=True)
class HttpConfig:
    """[http]: the HTTP listeners (main port and every camera's own port, together)."""

    max_connections: int = 512  # all HTTP sockets together; idle ones are evicted first
    max_connections_per_ip: int = 128
    header_timeout: float = 10.0  # first byte of a request (or connect) -> end of headers
    body_timeout: float = 20.0  # end of headers -> whole body read
    keepalive_timeout: float = 15.0  # idle keep-alive connection
    max_header_bytes: int = 32768  # request line and headers together
    log_lines_per_s: float = 1.0  # lines about bad requests, refusals, timeouts...
    log_burst: int = 10  # ...after a burst of this many; the rest are counted


@dataclass(frozen=True)
class WhipConfig:
    """[whip]: WebRTC-HTTP ingestion (RFC 9725) on the main HTTP port."""

    enabled: bool = True
    # Extra host candidate(s) offered to publishers behind NAT: this server's public address
    # (the UDP ports must reach this host: use udp_port_min..udp_port_max and forward them).
    public_ip: str = ""
    udp_port_min: int = 0  # 0 and 0: any free port (one UDP socket per session and address)
    udp_port_max: int = 0
    # STUN/TURN URLs sent to publishers as Link headers (rel="ice-server"), e.g.
    # "stun:stun.example.net:3478"; nothing is contacted by the server itself.
    ice_servers: tuple[str, ...] = ()
    turn_username: str = ""  # credentials sent with every turn:/turns: URL
    turn_password: str = ""
    max_sessions: int = 64  # concurrent WHIP sessions, all clients together
    max_sessions_per_ip: int = 4  # concurrent WHIP sessions from one address
    max_offer_bytes: int = 32768  # an SDP offer larger than this gets 413
    connect_timeout: float = 15.0  # POST -> ICE+DTLS connected and media flowing
    # Packets after a gap are held this long for the NACKed retransmission (video).
    nack_wait_ms: int = 200
    reorder_packets: int = 2048  # at most this many packets held while waiting
    max_bitrate_kbps: int = 8000  # announced to publishers (REMB) as the ceiling


@dataclass(frozen=True)
class PathConfig:
    """Policy for one stream path; [defaults] holds the values every path inherits."""

    publish_user: str = ""
    publish_password: str = ""
    read_user: str = ""
    read_password: str = ""
    publish_key: str = ""
    on_conflict: str = "reject"
    publish: bool = True
    srt_passphrase: str = ""  # SRT callers must encrypt with it (else [srt] passphrase)


@dataclass(frozen=True)
class ForwardConfig:
    """One entry of a camera's ``forward`` list: push its stream to another server."""

    url: str = ""  # rtsp://, rtsps://, rtmp://, rtmps:// or srt://
    retry_timeout: float = 5.0  # seconds between attempts
    retry_limit: int = 0  # failed attempts in a row before status "error"; 0: retry forever
    disabled: bool = False  # keep the entry but do not forward
    timeout: float = 10.0  # disconnect when the source has been gone this long (seconds)
    connect_timeout: float = 10.0  # connect, handshake and publish/RECORD must finish in it
    max_queue_bytes: int = 4 * 1024 * 1024  # unsent bytes before dropping to a keyframe
    tls_verify: bool = True  # rtmps://, rtsps://: check the server's certificate and name


@dataclass(frozen=True)
class CameraConfig:
    """One [[cameras]] entry: a virtual ONVIF camera showing a stream path."""

    name: str = ""
    path: str = ""
    sub_path: str = ""
    onvif_port: int = 0
    address: str = ""
    rtsp_port: int = 0
    rtsp_listen: bool = False
    # host or host:port clients reach this camera by (port mapping, NAT): its XAddrs,
    # stream and snapshot URIs name it
    advertise: str = ""
    username: str = ""
    password: str = ""
    auth: bool = True
    # "onvif": reading the camera's streams over RTSP needs one of its ONVIF users;
    # "path": only what the path's read_user says; "": as [onvif] rtsp_auth.
    rtsp_auth: str = ""
    manufacturer: str = ""
    model: str = ""
    serial: str = ""
    mac: str = ""
    firmware: str = ""
    hardware: str = ""
    location: str = ""
    width: int = 0
    height: int = 0
    fps: float = 0.0
    codec: str = ""
    # While no publisher is there, readers get "placeholder" (an offline picture) or
    # "none" (DESCRIBE answers 404); "": as [onvif] offline.
    offline: str = ""
    # "file:///path/clip.mp4": the server plays this clip on the camera's path in a loop
    # (MP4, MKV, MPEG-TS with H.264/H.265 and AAC; no re-encoding); "rtsp://..." or
    # "rtmp://...", or a list of them: pulled from another server, the next URI when one
    # fails ([sources]); "": pushed by clients.
    source: str | tuple[str, ...] = ""
    # Pull only while somebody reads the camera (pull sources only).
    on_demand: bool = False
    # Readers of this camera get the stream pushed to path ``primary``, or the one pushed to
    # ``backup`` while the primary is gone ([sources] failover_after / failback_after).
    primary: str = ""
    backup: str = ""
    # Virtual PTZ (ONVIF PTZ service and a PTZConfiguration in every profile); false: none.
    ptz: bool = True
    # "transcode": a real H.264 sub stream made from the main stream (PyAV) while someone
    # reads it, and an H.264 Media1 profile for an H.265 camera; "": no sub stream unless
    # sub_path names one.
    sub_stream: str = ""
    # Push the camera's stream to other servers: [{ url = "rtmp://host/live/key" }, ...]
    forward: tuple[ForwardConfig, ...] = ()

    @property
    def source_uris(self) -> tuple[str, ...]:
        """``source`` as a tuple of URIs (empty: no source)."""
        if isinstance(self.source, str):
            return (self.source,) if self.source else ()
        return self.source


@dataclass(frozen=True)
class FleetConfig:
    """One [[fleets]] entry: ``count`` cameras made from templates ({fleet}: the fleet's
    name, {n}: start..start+count-1). Their MAC and serial derive from the fleet name and n,
    so they stay the same whatever the order or the state directory."""

    name: str = ""
    count: int = 0
    start: int = 1
    camera_name: str = "{fleet}-{n}"
    path: str = "{fleet}/{n}"
    # cameras sharing one file source share one demux; pull URLs may contain {n}
    source: str | tuple[str, ...] = ""
    on_demand: bool = False
    offline: str = ""
    width: int = 0
    height: int = 0
    fps: float = 0.0
    codec: str = ""
    # Forward each camera's stream: [{ url = "rtsp://host/mirror/{fleet}/{n}" }, ...]; the
    # URL must contain {n} (one target per camera); the other keys as on [[cameras]]
    forward: tuple[ForwardConfig, ...] = ()


@dataclass(frozen=True)
class OnvifConfig:
    """[onvif]: camera services shared settings."""

    enabled: bool = True
    auto_cameras: bool = True
    port_range_start: int = 8100
    port_range_end: int = 8999
    clock_skew: float = 300.0
    max_body: int = 262144
    snapshot_offline: str = "placeholder"
    # Default of [[cameras]] offline: "none" (no stream while offline) or "placeholder".
    offline: str = "none"
    username: str = ""
    password: str = ""
    # Without username/password: generate an admin password once (kept in the state
    # directory) for cameras with no credentials; false leaves such cameras open.
    auth: bool = True
    # Default of [[cameras]] rtsp_auth: "path" (the path's read_user decides) or "onvif".
    rtsp_auth: str = "path"
    address_port: int = 80
    max_cameras: int = 1024
    max_users: int = 32
    max_profiles: int = 16
    max_nonces: int = 10000  # per user and camera: ceiling of the WS-Security replay cache
    # WS-Security tokens per second one user can keep up per camera: each nonce is remembered
    # for 2 x clock_skew, so a user may hold rate x 2 x clock_skew (6000) nonces, then is refused.
    nonce_rate_per_user: float = 10.0
    snapshot_quality: int = 85
    # per camera: recent server log lines naming it, kept for GetSystemLog (512 chars each)
    system_log_lines: int = 200
    # per camera: OSDs CreateOSD may store
    max_osds: int = 8
    # seconds an auto-created camera may stay offline before it is removed with its
    # endpoint and state file (0: never)
    auto_expire: float = 0.0
    # Virtual PTZ: generic units per second at speed 1 (pan/tilt span -1..1, zoom 0..1),
    # the longest ContinuousMove Timeout honoured, and presets per camera.
    ptz_pan_speed: float = 1.0
    ptz_zoom_speed: float = 0.5
    ptz_max_timeout: float = 60.0
    ptz_max_presets: int = 32
    # Preset tours per camera (CreatePresetTour) and spots per tour (ModifyPresetTour).
    ptz_max_tours: int = 8
    ptz_max_tour_spots: int = 32
    # Transcoded sub streams (cameras with sub_stream = "transcode") running at once on the
    # server (each one costs a decode and an encode); readers of one more are closed.
    max_transcodes: int = 4


@dataclass(frozen=True)
class EventsConfig:
    """[events]: ONVIF Events (pull points, basic notification), DeviceIO and the trigger API."""

    max_subscriptions: int = 64  # per camera: pull points and Subscribe together
    max_queued_messages: int = 256  # per subscription; a full queue drops its oldest message
    default_termination: float = 60.0  # seconds, when a client gives no termination time
    max_termination: float = 3600.0  # longer (Initial)TerminationTime requests are shortened
    max_pull_timeout: float = 600.0  # PullMessages Timeout above this waits only this long
    max_message_limit: int = 1024  # messages per PullMessages response at most
    notify_timeout: float = 5.0  # seconds per Notify POST to a consumer
    notify_retries: int = 2  # extra attempts for one Notify before its messages are dropped
    notify_batch: int = 32  # messages per Notify POST at most
    max_consumer_url: int = 1024  # characters of a Subscribe ConsumerReference address
    digital_inputs: int = 1  # per camera: DI_1..DI_n
    relay_outputs: int = 1  # per camera: Relay_1..Relay_n
    trigger_loopback_without_auth: bool = True  # POST /api/cameras/X/events from 127.0.0.1/::1


@dataclass(frozen=True)
class ApiConfig:
    """[api]: the HTTP API and the dashboard on the main HTTP port."""

    # Bearer token (Authorization: Bearer TOKEN); "" accepts none.
    token: str = ""
    # Basic credentials; "" falls back to the [onvif] username/password (the generated
    # admin password by default).
    username: str = ""
    password: str = ""
    # false: the API and dashboard need no credentials at all (a closed lab network only).
    auth: bool = True
    # GET/HEAD from 127.0.0.1/::1 need no credential (like [events]
    # trigger_loopback_without_auth); false on a host shared with untrusted users.
    loopback_read: bool = True
    recent_events: int = 256  # events kept for GET /api/events
    max_sse_clients: int = 32  # concurrent GET /api/events/stream clients
    sse_queue: int = 256  # events waiting for one SSE client; a full queue drops the client
    sse_write_timeout: float = 10.0  # seconds one SSE write may take before the client is dropped
    max_body: int = 16384  # bytes of a JSON request body


@dataclass(frozen=True)
class DiscoveryConfig:
    """[discovery]: WS-Discovery responder and mDNS/DNS-SD advertiser."""

    enabled: bool = True
    port: int = 3702
    interfaces: tuple[str, ...] = ()  # names or IPv4 addresses; empty: follow [server] host
    ipv6: bool = True
    ttl: int = 1
    max_delay: float = 0.5  # APP_MAX_DELAY: random wait before ProbeMatch and Hello
    multicast_repeat: int = 1  # SOAP-over-UDP retransmissions of Hello/Bye
    unicast_repeat: int = 0  # retransmissions of ProbeMatch/ResolveMatch (clients drown)
    probes_per_source_per_s: float = 2.0
    probe_burst: int = 8
    send_rate: int = 4000  # datagrams per second, all cameras together
    max_datagram: int = 16384
    mdns: bool = True
    replies_per_s: int = 2000  # ProbeMatch/ResolveMatch datagrams per second, all sources
    max_backlog: int = 4096  # replies waiting to be sent, datagrams...
    max_backlog_bytes: int = 4 * 1024 * 1024  # ...and bytes; beyond: oldest answers dropped
    source_interval: float = 5.0  # a source answered this recently waits behind new ones
    # sources a directed (unicast) Probe/Resolve is answered for: "local" (loopback,
    # link-local, the subnets of the interfaces served) and/or networks ("10.20.0.0/16")
    unicast_from: tuple[str, ...] = ("local",)


@dataclass(frozen=True)
class SourcesConfig:
    """[sources]: pulled sources (``source = "rtsp://..."``) and primary/backup failover."""

    retry_interval: float = 3.0  # seconds between connection attempts of a pull source
    switch_after: float = 3.0  # media missing this long: the next URI is tried (round robin)
    give_up_after: float = 7200.0  # missing this long: status failed until enabled (0: never)
    connect_timeout: float = 5.0  # one attempt: TCP connect to the reply to PLAY / play
    on_demand_linger: float = 10.0  # on_demand: pulling stops this long after the last reader
    failover_after: float = 3.0  # primary gone this long: the camera shows the backup
    failback_after: float = 60.0  # primary back this long without a break: it is shown again
    max_sdp_bytes: int = 65536  # largest DESCRIBE reply body a pulled server may send
    # forward entries of all cameras and fleets together (each is a connection and up to
    # its max_queue_bytes of memory); more is a configuration error
    max_forwards: int = 256
    # milliseconds of one event-loop turn all file loops together may spend handing packets
    # to their cameras' streams (a keyframe fanned out to 500 cameras is spread over turns)
    file_turn_ms: int = 10


@dataclass(frozen=True)
class DemoConfig:
    """[demo]: a test-pattern camera. ``onvifcam serve`` without ``--config`` turns it on
    (``--no-demo`` keeps it off); with a configuration file it is on only when this section
    says ``enabled = true``."""

    enabled: bool = False
    name: str = "demo"
    path: str = "demo"
    width: int = 640
    height: int = 360
    fps: float = 15.0
    bitrate_kbps: int = 600
    # With no reader, encode one keyframe this often (seconds) for snapshots; nothing else.
    idle_keyframe_interval: float = 2.0
    # Add a 1 kHz AAC tone (48 kHz mono) while read.
    tone: bool = False


@dataclass(frozen=True)
class MetricsConfig:
    """[metrics]: Prometheus ``/metrics`` on the main HTTP port."""

    enabled: bool = True
    # Clients from open_networks read /metrics without credentials unless require_auth;
    # others (and everyone with require_auth) need "Authorization: Bearer TOKEN".
    require_auth: bool = False
    token: str = ""
    open_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class StatsConfig:
    """[stats]: the per-stream statistics block in the log."""

    interval: float = 30.0  # seconds between blocks of each live stream (0: never)
    on_leave: bool = True  # one block when a publisher leaves


HOOK_EVENTS = (
    "stream_ready",
    "stream_not_ready",
    "reader_connected",
    "reader_disconnected",
    "source_failed",
    "forward_error",
)


@dataclass(frozen=True)
class HookConfig:
    """One [[hooks]] entry: run ``command`` or POST to ``url`` when ``on`` happens."""

    on: str = ""  # one of HOOK_EVENTS
    command: str = ""  # run with /bin/sh -c; details in ONVIFCAM_* environment variables
    url: str = ""  # http(s) URL: POST a JSON body
    timeout: float = 10.0  # seconds; a command is killed, a request abandoned after it
    path: str = ""  # only for this stream path ("": every path)


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    server: ServerConfig = field(default_factory=ServerConfig)
    rtsp: RtspConfig = field(default_factory=RtspConfig)
    rtmp: RtmpConfig = field(default_factory=RtmpConfig)
    srt: SrtConfig = field(default_factory=SrtConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    onvif: OnvifConfig = field(default_factory=OnvifConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    whip: WhipConfig = field(default_factory=WhipConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    defaults: PathConfig = field(default_factory=PathConfig)
    paths: dict[str, PathConfig] = field(default_factory=dict)
    cameras: tuple[CameraConfig, ...] = ()
    fleets: tuple[FleetConfig, ...] = ()
    demo: DemoConfig = field(default_factory=DemoConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    hooks: tuple[HookConfig, ...] = ()
    any_path: bool = True
    source: str = "<defaults>"

    def path_policy(self, path: str) -> PathConfig:
        """The policy of one path: its [paths."x"] table, else [defaults]."""
        return self.paths.get(path.strip("/"), self.defaults)

    def path_allowed(self, path: str) -> bool:
        """Whether a publisher may use this path at all."""
        policy = self.paths.get(path.strip("/"))
        if policy is None:
            return self.any_path
        return policy.publish


# Keys that were renamed, so an old configuration gets told the new name.
_RENAMED = {
    "new_connections_per_ip_per_s": "per_ip_rate",
    "new_connections_burst": "per_ip_burst",
}

_PORT_KEYS = {
    "rtsp_port",
    "rtmp_port",
    "rtmps_port",
    "http_port",
    "rtp_port",
    "rtcp_port",
    "onvif_port",
    "multicast_port_base",
    "port_range_start",
    "port_range_end",
    "port",
    "udp_port_min",
    "udp_port_max",
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if dataclasses.is_dataclass(inner):
            return tuple(_build(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(tp)
        # str | tuple[str, ...]: one value or a list of them
        for arm in arms:
            if (typing.get_origin(arm) is tuple) == isinstance(value, list):
                return _coerce(value, arm, where)
        names = " or ".join(
            "a list" if typing.get_origin(a) is tuple else _type_name(a) for a in arms
        )
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: cannot read a {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in names:
            close = [n for n in names if n.replace("_", "") == key.replace("_", "").lower()]
            close = close or difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.75)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            if key in _RENAMED:
                hint = f" (renamed to '{_RENAMED[key]}'; see README)"
            raise ConfigError(f"{where}: unknown key '{key}'{hint}")
        val = _coerce(value, hints[key], f"{where}.{key}")
        if key in _PORT_KEYS and not 0 <= val <= 65535:
            raise ConfigError(f"{where}.{key}: port {val} is outside 0..65535")
        if isinstance(val, int | float) and not isinstance(val, bool) and val < 0:
            raise ConfigError(f"{where}.{key}: must not be negative, got {val}")
        kwargs[key] = val
    return cls(**kwargs)


RTSP_AUTH = ("path", "onvif")
OFFLINE = ("placeholder", "none")
SUB_STREAM = ("", "transcode")


def _validate(cfg: Config, where: str) -> None:
    for name, policy in [("defaults", cfg.defaults), *cfg.paths.items()]:
        if policy.on_conflict not in ("reject", "replace"):
            raise ConfigError(
                f"{where}: [{name}] on_conflict must be 'reject' or 'replace', "
                f"got {policy.on_conflict!r}"
            )
    try:
        net = ipaddress.ip_network(cfg.rtsp.multicast_range, strict=False)
    except ValueError as exc:
        raise ConfigError(f"{where}: [rtsp] multicast_range: {exc}") from None
    if not net.is_multicast:
        raise ConfigError(f"{where}: [rtsp] multicast_range {net} is not a multicast range")
    if cfg.rtsp.multicast_port_base > 65535 - 2 * 16:
        raise ConfigError(
            f"{where}: [rtsp] multicast_port_base {cfg.rtsp.multicast_port_base} leaves no room "
            "for 16 tracks (two ports each) below 65536"
        )
    lim = cfg.limits
    if not 0 <= lim.reserved_share <= 0.9:
        raise ConfigError(f"{where}: [limits] reserved_share must be 0..0.9")
    for n in lim.exempt_networks:
        try:
            ipaddress.ip_network(n, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{where}: [limits] exempt_networks: {exc}") from None
    for name in ("request_timeout", "unauthenticated_timeout", "probation_timeout"):
        if getattr(lim, name) <= 0:
            raise ConfigError(f"{where}: [limits] {name} must be positive")
    r = cfg.rtmp
    if not 4096 <= r.pre_publish_buffer_bytes <= r.max_message_bytes:
        raise ConfigError(
            f"{where}: [rtmp] pre_publish_buffer_bytes must be 4096..max_message_bytes"
        )
    if not r.max_message_bytes <= 0xFFFFFF:
        raise ConfigError(f"{where}: [rtmp] max_message_bytes must be at most 16777215")
    if r.max_buffer_bytes < r.max_message_bytes:
        raise ConfigError(f"{where}: [rtmp] max_buffer_bytes must be at least max_message_bytes")
    if not 4 <= r.max_chunk_streams <= 65599:
        raise ConfigError(f"{where}: [rtmp] max_chunk_streams must be 4..65599")
    if cfg.rtsp.on_demand_timeout <= 0 or cfg.rtsp.max_queued_requests < 1:
        raise ConfigError(
            f"{where}: [rtsp] on_demand_timeout (seconds) and max_queued_requests must be positive"
        )
    for m in cfg.rtsp.auth_methods:
        if m not in ("digest", "basic"):
            raise ConfigError(f"{where}: [rtsp] auth_methods: unknown method {m!r}")
    if cfg.server.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{where}: [server] log_level must be debug, info, warning or error")
    _check_advertise(cfg.server.advertise, f"{where}: [server] advertise")
    if not 0 <= cfg.server.advertise_rtsp_port <= 65535:
        raise ConfigError(f"{where}: [server] advertise_rtsp_port must be 0..65535")
    if cfg.onvif.port_range_start > cfg.onvif.port_range_end:
        raise ConfigError(f"{where}: [onvif] port_range_start is after port_range_end")
    if not 0 <= cfg.onvif.address_port <= 65535:
        raise ConfigError(f"{where}: [onvif] address_port {cfg.onvif.address_port} is not a port")
    if cfg.onvif.snapshot_offline not in ("placeholder", "503"):
        raise ConfigError(f"{where}: [onvif] snapshot_offline must be 'placeholder' or '503'")
    if not 0 <= cfg.onvif.system_log_lines <= 100000:
        raise ConfigError(f"{where}: [onvif] system_log_lines must be 0..100000")
    if not 0 <= cfg.onvif.max_osds <= 64:
        raise ConfigError(f"{where}: [onvif] max_osds must be 0..64")
    if not 1 <= cfg.onvif.snapshot_quality <= 100:
        raise ConfigError(f"{where}: [onvif] snapshot_quality must be 1..100")
    if cfg.onvif.nonce_rate_per_user <= 0 or cfg.onvif.max_nonces < 1:
        raise ConfigError(
            f"{where}: [onvif] nonce_rate_per_user and max_nonces must be positive (they bound "
            "the WS-Security replay cache)"
        )
    if cfg.onvif.password and not cfg.onvif.username:
        raise ConfigError(f"{where}: [onvif] password without username")
    if not cfg.onvif.auth and cfg.onvif.username:
        raise ConfigError(
            f"{where}: [onvif] auth = false contradicts [onvif] username; remove one of them"
        )
    o = cfg.onvif
    if o.ptz_pan_speed <= 0 or o.ptz_zoom_speed <= 0 or o.ptz_max_timeout <= 0:
        raise ConfigError(
            f"{where}: [onvif] ptz_pan_speed, ptz_zoom_speed and ptz_max_timeout must be positive"
        )
    if not 0 <= o.ptz_max_presets <= 1000:
        raise ConfigError(f"{where}: [onvif] ptz_max_presets must be 0..1000")
    if not 0 <= o.ptz_max_tours <= 100 or not 1 <= o.ptz_max_tour_spots <= 1000:
        raise ConfigError(
            f"{where}: [onvif] ptz_max_tours must be 0..100 and ptz_max_tour_spots 1..1000"
        )
    if cfg.onvif.offline not in OFFLINE:
        raise ConfigError(f"{where}: [onvif] offline must be 'placeholder' or 'none'")
    if cfg.onvif.rtsp_auth not in RTSP_AUTH:
        raise ConfigError(f"{where}: [onvif] rtsp_auth must be 'path' or 'onvif'")
    d = cfg.discovery
    if not 1 <= d.ttl <= 255:
        raise ConfigError(f"{where}: [discovery] ttl must be 1..255")
    if d.max_delay > 5.0:
        raise ConfigError(f"{where}: [discovery] max_delay must be at most 5 seconds")
    if d.multicast_repeat > 4 or d.unicast_repeat > 4:
        raise ConfigError(f"{where}: [discovery] repeats must be 0..4")
    if d.probes_per_source_per_s <= 0 or d.probe_burst < 1 or d.send_rate < 1:
        raise ConfigError(
            f"{where}: [discovery] probes_per_source_per_s, probe_burst and send_rate "
            "must be positive"
        )
    if not 512 <= d.max_datagram <= 65507:
        raise ConfigError(f"{where}: [discovery] max_datagram must be 512..65507")
    if d.replies_per_s < 1 or d.max_backlog < 1:
        raise ConfigError(f"{where}: [discovery] replies_per_s and max_backlog must be positive")
    if d.max_backlog_bytes < 65536:
        raise ConfigError(
            f"{where}: [discovery] max_backlog_bytes must be at least 65536 (about 48 answers)"
        )
    for i, spec in enumerate(d.unicast_from):
        if spec == "local":
            continue
        try:
            ipaddress.ip_network(spec, strict=False)
        except ValueError:
            raise ConfigError(
                f'{where}: [discovery] unicast_from[{i}]: {spec!r} is neither "local" nor '
                'a network such as "192.168.1.0/24"'
            ) from None
    _validate_srt(cfg, where)
    h = cfg.http
    if h.max_connections < 1 or h.max_connections_per_ip < 1:
        raise ConfigError(
            f"{where}: [http] max_connections and max_connections_per_ip must be at least 1"
        )
    for key in ("header_timeout", "body_timeout", "keepalive_timeout"):
        if getattr(h, key) <= 0:
            raise ConfigError(f"{where}: [http] {key} must be positive (seconds)")
    if h.max_header_bytes < 1024:
        raise ConfigError(f"{where}: [http] max_header_bytes must be at least 1024")
    if h.log_lines_per_s <= 0 or h.log_burst < 1:
        raise ConfigError(f"{where}: [http] log_lines_per_s and log_burst must be positive")
    _validate_whip(cfg.whip, where)
    ev = cfg.events
    if ev.max_subscriptions < 1 or ev.max_queued_messages < 1 or ev.max_message_limit < 1:
        raise ConfigError(
            f"{where}: [events] max_subscriptions, max_queued_messages and max_message_limit "
            "must be at least 1"
        )
    if ev.default_termination < 1 or ev.max_termination < ev.default_termination:
        raise ConfigError(
            f"{where}: [events] default_termination must be at least 1 s and at most "
            "max_termination"
        )
    if ev.max_pull_timeout < 60:
        raise ConfigError(f"{where}: [events] max_pull_timeout must be at least 60 s (ONVIF)")
    if ev.notify_timeout <= 0 or ev.notify_batch < 1 or ev.max_consumer_url < 16:
        raise ConfigError(
            f"{where}: [events] notify_timeout and notify_batch must be positive, "
            "max_consumer_url at least 16"
        )
    if ev.digital_inputs > 64 or ev.relay_outputs > 64:
        raise ConfigError(f"{where}: [events] digital_inputs and relay_outputs must be 0..64")
    _validate_demo(cfg, where)
    _validate_sources(cfg, where)
    _validate_api(cfg.api, where)
    _validate_ops(cfg, where)
    seen: set[str] = set()
    endpoints: dict[tuple[str, int], int] = {}
    for i, cam in enumerate(cfg.cameras):
        if cam.onvif_port:
            where_bound = (cam.address or cfg.server.host, cam.onvif_port)
            if where_bound in endpoints:
                raise ConfigError(
                    f"{where}: cameras[{i}].onvif_port: {where_bound[0]}:{cam.onvif_port} is "
                    f"already used by cameras[{endpoints[where_bound]}]"
                )
            if cam.onvif_port == cfg.server.http_port and not cam.address:
                raise ConfigError(
                    f"{where}: cameras[{i}].onvif_port: {cam.onvif_port} is the [server] "
                    "http_port; give the camera another port or its own address"
                )
            endpoints[where_bound] = i
        if not cam.path:
            raise ConfigError(f"{where}: cameras[{i}]: 'path' is required")
        key = cam.name or cam.path
        if key in seen:
            raise ConfigError(f"{where}: cameras[{i}]: duplicate camera name {key!r}")
        seen.add(key)
        if cam.password and not cam.username:
            raise ConfigError(f"{where}: cameras[{i}]: password without username")
        if cam.source_uris:
            _validate_source(cam.source_uris, f"{where}: cameras[{i}].source")
        _validate_failover(cfg, i, cam, f"{where}: cameras[{i}]")
        for j, fwd in enumerate(cam.forward):
            _validate_forward(fwd, f"{where}: cameras[{i}].forward[{j}]")
        if cam.offline and cam.offline not in OFFLINE:
            raise ConfigError(f"{where}: cameras[{i}].offline must be 'placeholder' or 'none'")
        if cam.rtsp_auth and cam.rtsp_auth not in RTSP_AUTH:
            raise ConfigError(f"{where}: cameras[{i}].rtsp_auth must be 'path' or 'onvif'")
        if cam.sub_stream not in SUB_STREAM:
            raise ConfigError(f"{where}: cameras[{i}].sub_stream must be 'transcode' or ''")
        if cam.sub_stream and cam.sub_path:
            raise ConfigError(
                f"{where}: cameras[{i}]: sub_stream = 'transcode' and sub_path both name a "
                "sub stream; keep one"
            )
        _check_advertise(cam.advertise, f"{where}: cameras[{i}].advertise")
        if cam.sub_path and cam.sub_path.strip("/") == cam.path.strip("/"):
            raise ConfigError(f"{where}: cameras[{i}]: sub_path is the same as path")
        if cam.address:
            try:
                ipaddress.ip_address(cam.address)
            except ValueError:
                raise ConfigError(
                    f"{where}: cameras[{i}].address: {cam.address!r} is not an IP address"
                ) from None


def _validate_api(a: ApiConfig, where: str) -> None:
    if a.password and not a.username:
        raise ConfigError(f"{where}: [api] password without username")
    if a.token and len(a.token) < 16:
        raise ConfigError(f"{where}: [api] token must be at least 16 characters")
    if a.recent_events < 1 or a.max_sse_clients < 1 or a.sse_queue < 1:
        raise ConfigError(
            f"{where}: [api] recent_events, max_sse_clients and sse_queue must be at least 1"
        )
    if a.sse_write_timeout <= 0:
        raise ConfigError(f"{where}: [api] sse_write_timeout must be positive (seconds)")
    if not 1024 <= a.max_body <= 1048576:
        raise ConfigError(f"{where}: [api] max_body must be 1024..1048576")


def camera_from_table(table: Any, cfg: Config, where: str = "camera") -> CameraConfig:
    """A camera as a ``[[cameras]]`` entry would give it (the HTTP API's input), checked by
    the same rules against ``cfg`` (without its other cameras). Raises ConfigError with
    ``key`` set to the offending field when one is to blame."""
    try:
        cam = _build(CameraConfig, table, where)
        _validate(dataclasses.replace(cfg, cameras=(cam,), fleets=()), where)
    except ConfigError as exc:
        text = str(exc)
        m = re.search(
            r"(?:\.|unknown key ')(\w+)|'(\w+)' is required|: (\w+) is the same|: (\w+) without",
            text,
        )
        exc.key = next((g for g in m.groups() if g), "") if m else ""  # type: ignore[attr-defined]
        raise
    return cam


def _validate_ops(cfg: Config, where: str) -> None:
    """[server] log_format, [metrics], [stats], [[hooks]] and the hook limits."""
    if cfg.server.log_format not in ("text", "json"):
        raise ConfigError(
            f"{where}: [server] log_format must be 'text' or 'json', got {cfg.server.log_format!r}"
        )
    m = cfg.metrics
    if m.require_auth and not m.token:
        raise ConfigError(
            f"{where}: [metrics] require_auth = true needs a token (set [metrics] token, "
            "then scrape with 'Authorization: Bearer TOKEN')"
        )
    for i, n in enumerate(m.open_networks):
        try:
            ipaddress.ip_network(n, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{where}: [metrics] open_networks[{i}]: {exc}") from None
    if cfg.stats.interval and cfg.stats.interval < 1:
        raise ConfigError(f"{where}: [stats] interval must be 0 (off) or at least 1 second")
    lim = cfg.limits
    if lim.hook_queue < 1 or lim.hook_concurrency < 1:
        raise ConfigError(f"{where}: [limits] hook_queue and hook_concurrency must be at least 1")
    for i, h in enumerate(cfg.hooks):
        at = f"{where}: hooks[{i}]"
        if h.on not in HOOK_EVENTS:
            raise ConfigError(f"{at}.on: {h.on!r} is not one of {', '.join(HOOK_EVENTS)}")
        if bool(h.command) == bool(h.url):
            raise ConfigError(f"{at}: give exactly one of 'command' and 'url'")
        if h.url and not re.match(r"https?://[^/\s]+", h.url):
            raise ConfigError(f"{at}.url: {h.url!r} is not an http:// or https:// URL")
        if not 0 < h.timeout <= 600:
            raise ConfigError(f"{at}.timeout must be more than 0 and at most 600 seconds")


def split_advertise(value: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address -> (host, port or 0).
    Raises ValueError when the port is not 1..65535 or the host is empty."""
    v = (value or "").strip()
    if not v:
        return "", 0
    host, port = v, ""
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            raise ValueError(f"{value!r}: missing ']'")
        host, rest = v[1:end], v[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{value!r}: expected ':PORT' after ']'")
            port = rest[1:]
    elif v.count(":") == 1:
        host, port = v.split(":")
    if not host:
        raise ValueError(f"{value!r}: no host")
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r}: port {port!r} is not 1..65535")
        return host, int(port)
    return host, 0


def _check_advertise(value: str, where: str) -> None:
    """``host``, ``host:port`` or ``[v6]:port``, with no scheme or path."""
    if not value:
        return
    if "/" in value or "@" in value or " " in value:
        raise ConfigError(f"{where}: {value!r} must be host or host:port (no scheme or path)")
    try:
        split_advertise(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}; write host or host:port") from None


def _validate_srt(cfg: Config, where: str) -> None:
    s = cfg.srt
    if not 0 < s.max_latency_ms <= 65535:
        raise ConfigError(f"{where}: [srt] max_latency_ms must be 1..65535 (milliseconds)")
    if not 20 <= s.latency_ms <= s.max_latency_ms:
        raise ConfigError(
            f"{where}: [srt] latency_ms must be 20..max_latency_ms ({s.max_latency_ms}), "
            f"got {s.latency_ms}"
        )
    if s.pbkeylen not in (16, 24, 32):
        raise ConfigError(f"{where}: [srt] pbkeylen must be 16, 24 or 32 (AES-128/192/256)")
    for name, phrase in [
        ("[srt] passphrase", s.passphrase),
        ("[defaults] srt_passphrase", cfg.defaults.srt_passphrase),
        *((f"[paths.{p!r}] srt_passphrase", c.srt_passphrase) for p, c in cfg.paths.items()),
    ]:
        if phrase and not PASSPHRASE_MIN <= len(phrase) <= PASSPHRASE_MAX:
            raise ConfigError(
                f"{where}: {name} must be {PASSPHRASE_MIN} to {PASSPHRASE_MAX} characters "
                f"(libsrt refuses any other length), got {len(phrase)}"
            )
    if s.max_connections < 1 or s.handshake_burst < 1 or s.handshakes_per_ip_per_s <= 0:
        raise ConfigError(
            f"{where}: [srt] max_connections, handshakes_per_ip_per_s and handshake_burst "
            "must be positive"
        )
    if not 32 <= s.recv_buffer_packets <= 1 << 20:
        raise ConfigError(f"{where}: [srt] recv_buffer_packets must be 32..1048576")
    if s.peer_idle_timeout_ms < 1000:
        raise ConfigError(f"{where}: [srt] peer_idle_timeout_ms must be at least 1000")


def _validate_whip(w: WhipConfig, where: str) -> None:
    if w.public_ip:
        try:
            ipaddress.ip_address(w.public_ip)
        except ValueError:
            raise ConfigError(
                f"{where}: [whip] public_ip {w.public_ip!r} is not an IP address"
            ) from None
    if (w.udp_port_min == 0) != (w.udp_port_max == 0) or w.udp_port_min > w.udp_port_max:
        raise ConfigError(
            f"{where}: [whip] udp_port_min..udp_port_max must both be 0 (any port) or a "
            f"range with min <= max, got {w.udp_port_min}..{w.udp_port_max}"
        )
    for url in w.ice_servers:
        if url.split(":", 1)[0].lower() not in ("stun", "stuns", "turn", "turns"):
            raise ConfigError(
                f"{where}: [whip] ice_servers: {url!r} is not a stun:, stuns:, turn: or turns: URL"
            )
    if w.max_sessions < 1 or w.max_sessions_per_ip < 1:
        raise ConfigError(
            f"{where}: [whip] max_sessions and max_sessions_per_ip must be at least 1"
        )
    if not 1024 <= w.max_offer_bytes <= 65536:
        raise ConfigError(f"{where}: [whip] max_offer_bytes must be 1024..65536")
    if w.connect_timeout <= 0:
        raise ConfigError(f"{where}: [whip] connect_timeout must be positive (seconds)")
    if w.nack_wait_ms > 2000:
        raise ConfigError(f"{where}: [whip] nack_wait_ms must be 0..2000")
    if not 64 <= w.reorder_packets <= 16384:
        raise ConfigError(f"{where}: [whip] reorder_packets must be 64..16384")


def _validate_forward(fwd: ForwardConfig, where: str) -> None:
    from urllib.parse import urlsplit

    from onvifcam.redact import redact

    parts = urlsplit(fwd.url)
    scheme = parts.scheme.lower()
    if scheme == "srt":
        from onvifcam.srt.client import parse_srt_url

        try:
            parse_srt_url(fwd.url)
        except ValueError as exc:
            raise ConfigError(f"{where}.url: {exc}") from None
    elif scheme not in ("rtsp", "rtsps", "rtmp", "rtmps") or not parts.hostname:
        raise ConfigError(
            f"{where}.url: {redact(fwd.url)!r} must be rtsp://HOST[:PORT]/PATH, rtsps://, "
            "rtmp://HOST[:PORT]/APP/KEY, rtmps:// or srt://HOST:PORT?streamid=..."
        )
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"{where}.url: {redact(fwd.url)!r} has an invalid port") from None
    if scheme.startswith("rtmp") and not parts.path.strip("/"):
        raise ConfigError(f"{where}.url: {redact(fwd.url)!r} needs an app: rtmp://HOST/APP/KEY")
    for key in ("retry_timeout", "connect_timeout"):
        if getattr(fwd, key) <= 0:
            raise ConfigError(f"{where}.{key} must be positive (seconds)")
    if fwd.max_queue_bytes < 64 * 1024:
        raise ConfigError(f"{where}.max_queue_bytes must be at least 65536")


PULL_SCHEMES = ("rtsp", "rtmp", "srt")
MAX_SOURCE_URIS = 16


def _validate_source(uris: tuple[str, ...], where: str) -> None:
    from urllib.parse import unquote, urlsplit

    if not 1 <= len(uris) <= MAX_SOURCE_URIS:
        raise ConfigError(f"{where}: give 1..{MAX_SOURCE_URIS} URIs")
    for source in uris:
        parts = urlsplit(source)
        if parts.scheme == "file":
            if len(uris) > 1:
                raise ConfigError(
                    f"{where}: a file:// source stands alone; failover lists are for "
                    f"{' and '.join(s + '://' for s in PULL_SCHEMES)} pulls"
                )
            if parts.netloc not in ("", "localhost") or not unquote(parts.path).startswith("/"):
                raise ConfigError(
                    f"{where}: {source!r} must name a local file by its absolute path "
                    "(file:///absolute/path/clip.mp4)"
                )
        elif parts.scheme == "srt":
            from onvifcam.srt.client import parse_srt_url

            try:
                parse_srt_url(source)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        elif parts.scheme in PULL_SCHEMES:
            try:
                port = parts.port
            except ValueError:
                port = -1
            if not parts.hostname or port == -1 or not parts.path.strip("/"):
                raise ConfigError(
                    f"{where}: {source!r} needs a host, an optional port and a path "
                    f"({parts.scheme}://host:port/path)"
                )
        else:
            raise ConfigError(
                f"{where}: {source!r} is not supported; use file:///absolute/path/clip.mp4, "
                "rtsp://host:port/path, rtmp://host:port/app/stream or srt://host:port?streamid=..."
            )


def _validate_failover(cfg: Config, i: int, cam: CameraConfig, where: str) -> None:
    path = cam.path.strip("/")
    if cam.on_demand and not (cam.source_uris and not cam.source_uris[0].startswith("file:")):
        raise ConfigError(
            f"{where}.on_demand: only pull sources (rtsp://, rtmp://, srt://) pull on demand"
        )
    if not (cam.primary or cam.backup):
        return
    if not (cam.primary and cam.backup):
        raise ConfigError(f"{where}: primary and backup go together (two pushed paths)")
    if cam.source_uris:
        raise ConfigError(f"{where}: a camera has either a source or primary/backup, not both")
    names = {path, cam.primary.strip("/"), cam.backup.strip("/")}
    if len(names) != 3 or "" in names:
        raise ConfigError(
            f"{where}: path, primary and backup must be three different non-empty paths "
            f"(readers read {path!r}; encoders push to primary and backup)"
        )


def _validate_sources(cfg: Config, where: str) -> None:
    s = cfg.sources
    for key in ("retry_interval", "switch_after", "connect_timeout", "failover_after"):
        if not 0.05 <= getattr(s, key) <= 3600:
            raise ConfigError(f"{where}: [sources] {key} must be 0.05..3600 seconds")
    if s.give_up_after and s.give_up_after < s.switch_after:
        raise ConfigError(
            f"{where}: [sources] give_up_after must be 0 (never) or at least switch_after"
        )
    if s.failback_after < 0 or s.on_demand_linger < 0:
        raise ConfigError(
            f"{where}: [sources] failback_after and on_demand_linger must not be negative"
        )
    if not 1024 <= s.max_sdp_bytes <= 1 << 20:
        raise ConfigError(f"{where}: [sources] max_sdp_bytes must be 1024..1048576")
    if not 0 <= s.max_forwards <= 100_000:
        raise ConfigError(f"{where}: [sources] max_forwards must be 0..100000")
    if not 1 <= s.file_turn_ms <= 1000:
        raise ConfigError(f"{where}: [sources] file_turn_ms must be 1..1000")
    forwards = sum(len(c.forward) for c in cfg.cameras)
    if forwards > s.max_forwards:
        raise ConfigError(
            f"{where}: {forwards} forward entries (cameras and fleets together) exceed "
            f"[sources] max_forwards = {s.max_forwards}; raise it or forward fewer cameras"
        )


def _validate_demo(cfg: Config, where: str) -> None:
    d = cfg.demo
    if not (16 <= d.width <= 3840 and 16 <= d.height <= 2160) or d.width % 2 or d.height % 2:
        raise ConfigError(
            f"{where}: [demo] width and height must be even, 16..3840 x 16..2160, "
            f"got {d.width}x{d.height}"
        )
    if not 1 <= d.fps <= 60:
        raise ConfigError(f"{where}: [demo] fps must be 1..60, got {d.fps:g}")
    if not 50 <= d.bitrate_kbps <= 20000:
        raise ConfigError(f"{where}: [demo] bitrate_kbps must be 50..20000")
    if not 0.5 <= d.idle_keyframe_interval <= 10:
        raise ConfigError(
            f"{where}: [demo] idle_keyframe_interval must be 0.5..10 seconds (below the "
            "media timeout, so the demo stream stays online)"
        )
    if not d.path.strip("/"):
        raise ConfigError(f"{where}: [demo] path must not be empty")
    if d.enabled:
        for i, cam in enumerate(cfg.cameras):
            if cam.path.strip("/") == d.path.strip("/"):
                raise ConfigError(
                    f"{where}: cameras[{i}].path {cam.path!r} is the [demo] path; "
                    "set [demo] path to another one or enabled = false"
                )
            if (cam.name or cam.path) == d.name:
                raise ConfigError(
                    f"{where}: cameras[{i}] is named {d.name!r} like the demo camera; "
                    "set [demo] name to another one"
                )


_SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "rtsp": RtspConfig,
    "rtmp": RtmpConfig,
    "srt": SrtConfig,
    "limits": LimitsConfig,
    "onvif": OnvifConfig,
    "discovery": DiscoveryConfig,
    "http": HttpConfig,
    "whip": WhipConfig,
    "events": EventsConfig,
    "api": ApiConfig,
    "defaults": PathConfig,
    "demo": DemoConfig,
    "sources": SourcesConfig,
    "metrics": MetricsConfig,
    "stats": StatsConfig,
}


def from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Build a :class:`Config` from parsed TOML data; raises ConfigError."""
    kwargs: dict[str, Any] = {"source": source}
    for key, value in data.items():
        if key in _SECTIONS:
            kwargs[key] = _build(_SECTIONS[key], value, f"{source}: [{key}]")
        elif key == "paths":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [paths] must be a table of tables")
            base = kwargs.get("defaults") or _build(
                PathConfig, data.get("defaults", {}), f"{source}: [defaults]"
            )
            paths = {}
            for name, table in value.items():
                if not isinstance(table, dict):
                    raise ConfigError(f"{source}: [paths.{name!r}] must be a table")
                merged = {**dataclasses.asdict(base), **table}
                paths[name.strip("/")] = _build(PathConfig, merged, f"{source}: [paths.{name!r}]")
            kwargs["paths"] = paths
        elif key == "cameras":
            if not isinstance(value, list):
                raise ConfigError(f"{source}: 'cameras' must be an array of tables ([[cameras]])")
            kwargs["cameras"] = tuple(
                _build(CameraConfig, t, f"{source}: cameras[{i}]") for i, t in enumerate(value)
            )
        elif key == "fleets":
            if not isinstance(value, list):
                raise ConfigError(f"{source}: 'fleets' must be an array of tables ([[fleets]])")
            kwargs["fleets"] = tuple(
                _build(FleetConfig, t, f"{source}: fleets[{i}]") for i, t in enumerate(value)
            )
        elif key == "hooks":
            if not isinstance(value, list):
                raise ConfigError(f"{source}: 'hooks' must be an array of tables ([[hooks]])")
            kwargs["hooks"] = tuple(
                _build(HookConfig, t, f"{source}: hooks[{i}]") for i, t in enumerate(value)
            )
        elif key == "any_path":
            kwargs["any_path"] = _coerce(value, bool, f"{source}: any_path")
        else:
            raise ConfigError(f"{source}: unknown section or key '{key}'")
    cfg = Config(**kwargs)
    if cfg.fleets:
        cfg = dataclasses.replace(cfg, cameras=(*cfg.cameras, *_fleet_cameras(cfg, source)))
    _validate(cfg, source)
    return cfg


_FLEET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _fleet_cameras(cfg: Config, where: str) -> list[CameraConfig]:
    """The cameras of every [[fleets]] entry."""
    out: list[CameraConfig] = []
    names: set[str] = set()
    for i, f in enumerate(cfg.fleets):
        at = f"{where}: fleets[{i}]"
        if not _FLEET_NAME.fullmatch(f.name):
            raise ConfigError(
                f"{at}.name: {f.name!r} must be 1..64 letters, digits, '_', '.' or '-' "
                "(it seeds the cameras' identity)"
            )
        if f.name in names:
            raise ConfigError(f"{at}.name: another fleet is named {f.name!r}")
        names.add(f.name)
        if not 1 <= f.count <= cfg.onvif.max_cameras:
            raise ConfigError(
                f"{at}.count must be 1..{cfg.onvif.max_cameras} ([onvif] max_cameras)"
            )
        for key in ("camera_name", "path"):
            if not _N_FIELD.search(getattr(f, key)):
                raise ConfigError(f"{at}.{key} must contain {{n}} (one camera per n)")
        for n in range(f.start, f.start + f.count):
            try:
                name = f.camera_name.format(fleet=f.name, n=n)
                path = f.path.format(fleet=f.name, n=n)
                forward = tuple(
                    dataclasses.replace(fwd, url=_fleet_url(fwd.url, f.name, n))
                    for fwd in f.forward
                )
                source = _fleet_source(f.source, n)
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    f"{at}: bad template ({exc!s}); use {{fleet}} and {{n}} only, "
                    "with a format such as {n:03}"
                ) from None
            seed = hashlib.sha256(f"onvifcam-fleet:{f.name}:{n}".encode()).digest()
            mac = ":".join(f"{b:02x}" for b in (0x02, *seed[:5]))  # locally administered
            out.append(
                CameraConfig(
                    name=name,
                    path=path,
                    source=source,
                    on_demand=f.on_demand,
                    offline=f.offline,
                    width=f.width,
                    height=f.height,
                    fps=f.fps,
                    codec=f.codec,
                    mac=mac,
                    serial="FL" + seed[5:11].hex().upper(),
                    forward=forward,
                )
            )
        for j, fwd in enumerate(f.forward):
            if not _N_FIELD.search(fwd.url):
                raise ConfigError(
                    f"{at}.forward[{j}].url must contain {{n}} (each camera of the fleet "
                    "forwards to its own URL)"
                )
            _validate_forward(out[-1].forward[j], f"{at}.forward[{j}] (n = {n})")
    return out


_N_FIELD = re.compile(r"\{n(:[^}]*)?\}")


def _fleet_url(url: str, fleet: str, n: int) -> str:
    """A fleet forward URL for camera ``n``: ``{n}`` (``{n:03}`` too) and ``{fleet}`` filled
    in; other characters stay as they are (a URL may hold braces of its own)."""
    url = _N_FIELD.sub(lambda m: format(n, (m.group(1) or ":")[1:]), url)
    return url.replace("{fleet}", fleet)


def _fleet_source(source: str | tuple[str, ...], n: int) -> str | tuple[str, ...]:
    """A fleet's source for camera ``n``: ``{n}`` in pull URLs is replaced (file paths stay)."""

    def one(uri: str) -> str:
        if uri.startswith("file:"):
            return uri
        return _N_FIELD.sub(lambda m: format(n, (m.group(1) or ":")[1:]), uri)

    return one(source) if isinstance(source, str) else tuple(one(u) for u in source)


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML configuration file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return from_dict(data, str(p))


def with_overrides(cfg: Config, **server: Any) -> Config:
    """Return cfg with [server] keys replaced by the non-None values given."""
    changes = {k: v for k, v in server.items() if v is not None}
    if not changes:
        return cfg
    return dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, **changes))
