"""Prometheus ``/metrics``: one collector that reads the components' ``stats()`` at scrape time.

Nothing here counts anything: every figure comes from a component's ``stats()`` (the shape in
docs/architecture.md, "Counters") or a stream's :meth:`~onvifcam.media.stream.Stream.stats_dict`
when Prometheus asks. The figures the operator surface names get proper names, types and
labels (streams, cameras, sources, ONVIF operations, discovery, refusals); every other
number a component reports is exported as ``onvifcam_<component>_<key>`` (untyped), so a
counter added to a ``stats()`` shows up without touching this file.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from onvifcam.config import MetricsConfig

log = logging.getLogger(__name__)

StatsFn = Callable[[], Mapping[str, Any]]

_NAME = re.compile(r"[^a-zA-Z0-9_]")
# string fields of a source's stats() that identify it (labels); never URLs (credentials)
_ID_FIELDS = ("kind", "path", "name")
_STATUS_FIELDS = ("state", "status")


class Streams(Protocol):
    """What the collector reads of the stream registry."""

    streams: Mapping[str, Any]


class Cameras(Protocol):
    """What the collector reads of the camera registry."""

    cameras: Mapping[str, Any]

    def stats(self) -> Mapping[str, Any]: ...


def _metric_name(*parts: str) -> str:
    return _NAME.sub("_", "_".join(p for p in parts if p)).strip("_").lower()


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, int | float):
        return float(v)
    return None


class StatsCollector(Collector):
    """The prometheus_client collector over the components' ``stats()``.

    ``components`` maps a component name ("web", "discovery", "limiter", "gate", "sources",
    "srt", "whip", "events", "hooks"...) to its ``stats`` method; ``operations`` returns the
    ONVIF (operation, result) -> count table.
    """

    def __init__(
        self,
        streams: Streams,
        cameras: Cameras | None,
        components: Mapping[str, StatsFn],
        operations: Callable[[], Mapping[tuple[str, str], int]] | None = None,
    ) -> None:
        self.streams = streams
        self.cameras = cameras
        self.components = components  # read at every scrape: later additions count
        self.operations = operations
        self.errors = 0

    def describe(self) -> Iterable[Metric]:
        """Nothing up front (the families depend on what the components report)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Read every stats() now and yield the metric families."""
        yield from self._streams()
        yield from self._cameras()
        stats: dict[str, Mapping[str, Any]] = {}
        for name, fn in self.components.items():
            try:
                stats[name] = fn()
            except Exception:  # one broken stats() must not empty the whole scrape
                self.errors += 1
                log.exception("metrics: %s.stats() failed", name)
        yield from self._named(stats)
        for name, st in stats.items():
            yield from self._generic(name, st)
        err = CounterMetricFamily(
            "onvifcam_metrics_collect_errors", "stats() calls that failed during a scrape"
        )
        err.add_metric([], self.errors)
        yield err

    # ------------------------------------------------------------------ streams
    def _path_cameras(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.cameras is None:
            return out
        for cam in self.cameras.cameras.values():
            for p in (getattr(cam, "path", ""), getattr(cam, "sub_path", "")):
                if p:
                    out.setdefault(p, str(getattr(cam, "name", "")))
        return out

    def _streams(self) -> Iterator[Metric]:
        labels = ["path", "camera"]
        c = CounterMetricFamily
        g = GaugeMetricFamily
        fam = {
            "bytes_in": c(
                "onvifcam_stream_bytes_in", "Bytes received from publishers", labels=labels
            ),
            "frames_in": c("onvifcam_stream_frames_in", "Video frames received", labels=labels),
            "keyframes_in": c("onvifcam_stream_keyframes_in", "Keyframes received", labels=labels),
            "bytes_out": c("onvifcam_stream_bytes_out", "Bytes sent to readers", labels=labels),
            "frames_out": c(
                "onvifcam_stream_frames_out",
                "Video frames handed to readers (one per reader)",
                labels=labels,
            ),
            "publishes": c("onvifcam_stream_publishes", "Publishers that attached", labels=labels),
            "fps": g("onvifcam_stream_fps", "Measured frames per second", labels=labels),
            "bitrate": g(
                "onvifcam_stream_bitrate_bits_per_second", "Measured input bitrate", labels=labels
            ),
            "gop": g(
                "onvifcam_stream_keyframe_interval_frames",
                "Frames between the last two keyframes",
                labels=labels,
            ),
            "keyframe_interval": g(
                "onvifcam_stream_keyframe_interval_seconds",
                "Seconds between keyframes (GOP length / fps)",
                labels=labels,
            ),
            "readers": g("onvifcam_stream_readers", "Readers now", labels=labels),
            "online": g(
                "onvifcam_stream_online", "1 while a real publisher is attached", labels=labels
            ),
            "placeholder": g(
                "onvifcam_stream_placeholder",
                "1 while the offline placeholder plays",
                labels=labels,
            ),
        }
        drops = c(
            "onvifcam_stream_drops",
            "Media dropped, by reason (overflow: packets slow readers skipped; "
            "waiting_keyframe, malformed, non_media, unsupported_codec: input)",
            labels=[*labels, "reason"],
        )
        cams = self._path_cameras()
        for path, stream in list(self.streams.streams.items()):
            try:
                st = stream.stats_dict()
            except Exception:
                self.errors += 1
                log.exception("metrics: stream %s stats failed", path)
                continue
            lv = [path, cams.get(path, "")]
            for key, f in fam.items():
                v = _num(st.get(key))
                if v is not None:
                    f.add_metric(lv, v)
            for reason, n in (st.get("drops") or {}).items():
                drops.add_metric([*lv, str(reason)], float(n))
        yield from fam.values()
        yield drops

    def _cameras(self) -> Iterator[Metric]:
        if self.cameras is None:
            return
        online = GaugeMetricFamily(
            "onvifcam_camera_online",
            "1 while the camera's main stream has a publisher",
            labels=["camera", "path"],
        )
        for cam in list(self.cameras.cameras.values()):
            online.add_metric(
                [str(getattr(cam, "name", "")), str(getattr(cam, "path", ""))],
                1.0 if getattr(cam, "online", False) else 0.0,
            )
        yield online
        st = self.cameras.stats()
        gauges = GaugeMetricFamily("onvifcam_cameras", "Cameras now, by kind", labels=["kind"])
        for kind in ("cameras", "auto", "online"):
            if kind in st:
                gauges.add_metric(["total" if kind == "cameras" else kind], float(st[kind]))
        yield gauges
        changes = CounterMetricFamily(
            "onvifcam_camera_changes", "Camera registry changes", labels=["change"]
        )
        for k in ("added", "updated", "removed", "refused"):
            if k in st:
                changes.add_metric([k], float(st[k]))
        yield changes

    # ------------------------------------------------------------------ named figures
    def _named(self, stats: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
        if self.operations is not None:
            ops = CounterMetricFamily(
                "onvifcam_onvif_requests",
                "ONVIF SOAP requests by operation and result (ok, fault, auth_failure, error)",
                labels=["operation", "result"],
            )
            for (op, result), n in sorted(self.operations().items()):
                ops.add_metric([op, result], float(n))
            yield ops
        disc = stats.get("discovery")
        if disc is not None:
            probes = CounterMetricFamily(
                "onvifcam_discovery_probes_answered",
                "WS-Discovery ProbeMatch answers queued (one per camera and Probe)",
            )
            probes.add_metric([], float(disc.get("probe_match", 0)))
            yield probes
        refused = CounterMetricFamily(
            "onvifcam_connections_refused",
            "Connections and requests refused, by component and reason",
            labels=["component", "reason"],
        )
        lim = stats.get("limiter") or {}
        for reason, n in (lim.get("refused_by") or {}).items():
            refused.add_metric(["limiter", str(reason) or "other"], float(n))
        gate = stats.get("gate") or {}
        for reason, n in (gate.get("refused") or {}).items():
            refused.add_metric(["gate", str(reason)], float(n))
        http = (stats.get("web") or {}).get("http") or {}
        for k in ("refused", "evicted", "header_timeouts", "body_timeouts", "bad_requests"):
            if k in http:
                refused.add_metric(["http", k], float(http[k]))
        srt = stats.get("srt") or {}
        if isinstance(srt.get("refused"), Mapping):
            for reason, n in srt["refused"].items():
                refused.add_metric(["srt", str(reason)], float(n))
        yield refused
        src = stats.get("sources")
        if src is not None:
            yield from self._sources(src)
        hooks = stats.get("hooks")
        if hooks is not None:
            runs = CounterMetricFamily(
                "onvifcam_hook_runs", "Hook runs by event and result", labels=["event", "result"]
            )
            for key, n in (hooks.get("runs") or {}).items():
                event, _, result = str(key).partition(":")
                runs.add_metric([event, result], float(n))
            runs.add_metric(["any", "dropped"], float(hooks.get("dropped", 0)))
            yield runs

    def _sources(self, st: Mapping[str, Any]) -> Iterator[Metric]:
        """Every list of dicts in the source manager's stats() (sources, forwards, pulls...):
        its numbers as ``onvifcam_<kind>_<key>`` and its state/status as a 1-valued gauge."""
        for group, items in st.items():
            if not isinstance(items, list | tuple):
                continue
            kind = group[:-1] if group.endswith("s") else group
            families: dict[str, GaugeMetricFamily] = {}
            status = GaugeMetricFamily(
                f"onvifcam_{_metric_name(kind)}_status",
                f"1 for the current state of each {kind}",
                labels=["kind", "path", "name", "status"],
            )
            for item in items:
                if not isinstance(item, Mapping):
                    continue
                ids = [_label(item, f) for f in _ID_FIELDS]
                for f in _STATUS_FIELDS:
                    if isinstance(item.get(f), str):
                        status.add_metric([*ids, item[f]], 1.0)
                running = item.get("running")
                if isinstance(running, bool) and not any(f in item for f in _STATUS_FIELDS):
                    status.add_metric([*ids, "running" if running else "stopped"], 1.0)
                for key, v in item.items():
                    n = _num(v)
                    if n is None or key in _ID_FIELDS:
                        continue
                    name = _metric_name("onvifcam", kind, key)
                    fam = families.get(name)
                    if fam is None:
                        fam = families[name] = GaugeMetricFamily(
                            name, f"{kind} stats(): {key}", labels=["kind", "path", "name"]
                        )
                    fam.add_metric(ids, n)
            yield status
            yield from families.values()

    # ------------------------------------------------------------------ the rest
    def _generic(self, component: str, st: Mapping[str, Any]) -> Iterator[Metric]:
        for key, value in _flatten(st):
            name = _metric_name("onvifcam", component, *key)
            m = UnknownMetricFamily(name, f"{component} stats(): {'.'.join(key)}")
            m.add_metric([], value)
            yield m


def _label(item: Mapping[str, Any], field: str) -> str:
    v = item.get(field)
    if field == "path" and v is None and isinstance(item.get("paths"), list):
        return ",".join(str(p) for p in item["paths"][:4])
    return str(v) if isinstance(v, str | int) and not isinstance(v, bool) else ""


def _flatten(
    st: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], float]]:
    """Numeric leaves of nested dicts (lists are left to the named families)."""
    for k, v in st.items():
        key = (*prefix, str(k))
        if isinstance(v, Mapping):
            if len(v) <= 64:  # a dict keyed by client data would be unbounded: skip
                yield from _flatten(v, key)
            continue
        n = _num(v)
        if n is not None:
            yield key, n


class MetricsEndpoint:
    """``GET /metrics`` on the main HTTP port: open to ``[metrics] open_networks`` (loopback
    by default) unless ``require_auth``; anyone else needs ``Authorization: Bearer TOKEN``."""

    def __init__(self, cfg: MetricsConfig, collector: StatsCollector) -> None:
        self.cfg = cfg
        self.collector = collector
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._open = [ipaddress.ip_network(n, strict=False) for n in cfg.open_networks]
        self.scrapes = 0
        self.denied = 0

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add ``GET /metrics`` (when ``[metrics] enabled``)."""
        if self.cfg.enabled:
            router.add_get("/metrics", self.handle)

    def allowed(self, remote: str | None, authorization: str | None) -> str:
        """ "" when the request may read the metrics, else why not (for the 401/403 body)."""
        token = self.cfg.token
        if token and authorization:
            scheme, _, given = authorization.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                return ""
            return "wrong bearer token"
        if not self.cfg.require_auth and self._is_open(remote):
            return ""
        if token:
            return "send 'Authorization: Bearer TOKEN' ([metrics] token)"
        return (
            f"/metrics is open to {', '.join(self.cfg.open_networks) or 'nobody'} only; "
            "set [metrics] token (and scrape with a bearer token) or widen open_networks"
        )

    def _is_open(self, remote: str | None) -> bool:
        if not remote:
            return False
        try:
            addr = ipaddress.ip_address(remote.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in n for n in self._open)

    async def handle(self, request: web.Request) -> web.Response:
        """Serve one scrape (text exposition format 0.0.4)."""
        why = self.allowed(request.remote, request.headers.get("Authorization"))
        if why:
            self.denied += 1
            status = 403 if not self.cfg.token else 401
            headers = (
                {"WWW-Authenticate": 'Bearer realm="onvifcam metrics"'} if status == 401 else {}
            )
            return web.Response(status=status, text=why + "\n", headers=headers)
        self.scrapes += 1
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def stats(self) -> dict[str, int]:
        """Scrapes served and refused."""
        return {"scrapes": self.scrapes, "denied": self.denied}
