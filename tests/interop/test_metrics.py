"""Prometheus /metrics: the collector over stats() after a real push, read and ONVIF call.

One server for the module, with ``[metrics] require_auth`` and a token: the same scrape
checks the figures and the access rule.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from onvifcam.config import MetricsConfig
from onvifcam.web.metrics import MetricsEndpoint, StatsCollector
from tests.helpers import LiveReader, ServerProc, ffmpeg_push, wait_online
from tests.onvif_schema import envelope

TOKEN = "scrape-me-0123"
TDS = 'xmlns="http://www.onvif.org/ver10/device/wsdl"'


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    s = ServerProc(
        config=f'[metrics]\nrequire_auth = true\ntoken = "{TOKEN}"\n[stats]\ninterval = 0\n'
    ).start()
    try:
        yield s
    finally:
        s.stop()


def scrape(srv: ServerProc, token: str | None = TOKEN) -> dict[tuple[str, tuple], float]:
    req = urllib.request.Request(f"http://127.0.0.1:{srv.ports['http_port']}/metrics")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out: dict[tuple[str, tuple], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return m[(name, tuple(sorted(labels.items())))]


def test_scrape_after_push_read_and_onvif(srv: ServerProc) -> None:
    push = ffmpeg_push(srv.url("metrics/cam"), frames=500, gop=25, audio=False)
    try:
        wait_online(srv.url("metrics/cam"))
        reader = LiveReader(srv.url("metrics/cam"))
        assert reader.stop_at(20).video_frames >= 20
        body = envelope(f"<GetSystemDateAndTime {TDS}/>")
        post = urllib.request.Request(
            f"http://127.0.0.1:{srv.ports['http_port']}/onvif/metrics-cam/device_service",
            data=body,
            headers={"Content-Type": "application/soap+xml"},
        )
        with urllib.request.urlopen(post, timeout=10) as r:
            assert r.status == 200
        m = scrape(srv)
    finally:
        push.kill()
        push.wait()
    lv = {"path": "metrics/cam", "camera": "metrics/cam"}
    cams = {k[1] for k in m if k[0] == "onvifcam_camera_online"}
    assert (("camera", "metrics/cam"), ("path", "metrics/cam")) in cams
    assert value(m, "onvifcam_stream_bytes_in_total", **lv) > 0
    assert value(m, "onvifcam_stream_frames_in_total", **lv) >= 20
    assert value(m, "onvifcam_stream_keyframes_in_total", **lv) >= 1
    assert value(m, "onvifcam_stream_bytes_out_total", **lv) > 0
    assert value(m, "onvifcam_stream_frames_out_total", **lv) >= 20
    assert value(m, "onvifcam_stream_publishes_total", **lv) == 1
    assert value(m, "onvifcam_stream_online", **lv) == 1
    assert value(m, "onvifcam_stream_drops_total", reason="overflow", **lv) == 0
    assert (
        value(m, "onvifcam_onvif_requests_total", operation="GetSystemDateAndTime", result="ok")
        == 1
    )
    assert ("onvifcam_discovery_probes_answered_total", ()) in m
    assert value(m, "onvifcam_connections_refused_total", component="http", reason="refused") == 0
    assert value(m, "onvifcam_metrics_collect_errors_total") == 0


def test_token_is_required_when_configured(srv: ServerProc) -> None:
    for token in (None, "wrong"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            scrape(srv, token)
        assert exc.value.code == 401
    assert ("onvifcam_metrics_denied", ()) in scrape(srv)


class _NoStreams:
    streams: dict[str, object] = {}


def test_access_rule_without_sockets() -> None:
    collector = StatsCollector(_NoStreams(), None, {})
    open_ = MetricsEndpoint(MetricsConfig(), collector)
    assert open_.allowed("127.0.0.1", None) == ""
    assert open_.allowed("::ffff:127.0.0.1", None) == ""
    assert open_.allowed("::1", None) == ""
    assert "open to" in open_.allowed("192.0.2.7", None)  # remote: refused with the reason
    tok = MetricsEndpoint(MetricsConfig(token="t0ken"), collector)
    assert tok.allowed("192.0.2.7", "Bearer t0ken") == ""
    assert tok.allowed("192.0.2.7", "Bearer nope") == "wrong bearer token"
    assert tok.allowed("127.0.0.1", None) == ""  # loopback stays open without require_auth
    strict = MetricsEndpoint(MetricsConfig(token="t0ken", require_auth=True), collector)
    assert strict.allowed("127.0.0.1", None) != ""


def test_a_failing_stats_is_counted_not_fatal() -> None:
    def broken() -> dict[str, int]:
        raise RuntimeError("boom")

    collector = StatsCollector(_NoStreams(), None, {"broken": broken, "ok": lambda: {"n": 3}})
    ep = MetricsEndpoint(MetricsConfig(), collector)
    from prometheus_client.exposition import generate_latest

    text = generate_latest(ep.registry).decode()
    assert "onvifcam_ok_n 3.0" in text
    assert "onvifcam_metrics_collect_errors_total 1.0" in text


def test_a_push_logs_one_stats_block_when_it_leaves(srv: ServerProc) -> None:
    start = srv.log_size()
    push = ffmpeg_push(srv.url("metrics/leave"), frames=30, gop=10, audio=True)
    assert push.wait(30) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "Stream stats: metrics/leave" not in srv.log_since(start):
        time.sleep(0.1)
    text = srv.log_since(start)
    headers = [ln for ln in text.splitlines() if "Stream stats: metrics/leave" in ln]
    assert len(headers) == 1, text[-3000:]
    block = text[text.index(headers[0]) :]
    assert "publisher left" in headers[0]
    assert "publisher rtsp://127.0.0.1" in block
    assert "video H264 Baseline" in block and "320x240" in block
    assert "audio MPEG4-GENERIC 48000 Hz" in block
    assert "total: in 30 frames, 3 keyframes" in block
