"""RTMP server pieces that need no socket: TLS loading, the publish policy, URL queries."""

from __future__ import annotations

import dataclasses
import datetime
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from onvifcam.config import Config, LimitsConfig, PathConfig, RtmpConfig
from onvifcam.limits import ConnectionLimiter
from onvifcam.media.stream import StreamRegistry
from onvifcam.rtmp import chunk
from onvifcam.rtmp.chunk import Message
from onvifcam.rtmp.flv import FlvIngest
from onvifcam.rtmp.server import (
    PublishRefused,
    RtmpConnection,
    RtmpServer,
    _load_tls,
    split_query,
)
from onvifcam.rtmp.state import RtmpState


def _cert(tmp: Path) -> tuple[Path, Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_pem, key_pem, p12 = tmp / "c.pem", tmp / "k.pem", tmp / "both.p12"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"x", key, cert, None, serialization.BestAvailableEncryption(b"pw")
        )
    )
    return cert_pem, key_pem, p12


def _cfg(**rtmp: Any) -> Config:
    return dataclasses.replace(Config(), rtmp=RtmpConfig(**rtmp))


def test_tls_from_pem_and_pkcs12(tmp_path: Path) -> None:
    cert, key, p12 = _cert(tmp_path)
    assert _load_tls(_cfg()) is None
    assert isinstance(_load_tls(_cfg(tls_cert=str(cert), tls_key=str(key))), ssl.SSLContext)
    ctx = _load_tls(_cfg(tls_pkcs12=str(p12), tls_pkcs12_password="pw"))
    assert isinstance(ctx, ssl.SSLContext)
    assert not list(tmp_path.glob("onvifcam-tls-*"))
    with pytest.raises(OSError, match="tls_pkcs12"):
        _load_tls(_cfg(tls_pkcs12=str(p12), tls_pkcs12_password="wrong"))
    with pytest.raises(OSError, match="tls_cert"):
        _load_tls(_cfg(tls_cert=str(tmp_path / "missing.pem")))


def test_split_query() -> None:
    assert split_query("cam1?key=a%20b&user=u") == ("cam1", {"key": "a b", "user": "u"})
    assert split_query("cam1") == ("cam1", {})


class _Conn:
    description = "rtmp://test"
    closed = False
    stream = None
    kicked = ""

    def kick(self, reason: str) -> None:
        self.kicked = reason


def _server(**paths: PathConfig) -> RtmpServer:
    cfg = dataclasses.replace(Config(), paths=paths, limits=LimitsConfig())
    reg = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=10)
    return RtmpServer(cfg, reg, ConnectionLimiter(10, 0, 10))


def test_policy_keys_credentials_and_conflicts() -> None:
    srv = _server(
        **{
            "k/cam": PathConfig(publish_key="s3"),
            "u/cam": PathConfig(publish_user="enc", publish_password="pw"),
            "off/cam": PathConfig(publish=False),
            "swap/cam": PathConfig(on_conflict="replace"),
        }
    )
    a, b = _Conn(), _Conn()
    with pytest.raises(PublishRefused, match="stream key") as exc:
        srv.authorize(a, "k/cam", {"key": "nope"})  # type: ignore[arg-type]
    assert exc.value.code == "NetStream.Publish.Denied"
    srv.authorize(a, "k/cam", {"key": "s3"})  # type: ignore[arg-type]
    with pytest.raises(PublishRefused, match="credentials"):
        srv.authorize(a, "u/cam", {"user": "enc", "pass": "x"})  # type: ignore[arg-type]
    srv.authorize(a, "u/cam", {"username": "enc", "password": "pw"})  # type: ignore[arg-type]
    with pytest.raises(PublishRefused, match="not allowed"):
        srv.authorize(a, "off/cam", {})  # type: ignore[arg-type]
    # One publisher per path: the claim of a publisher that has no media yet counts.
    with pytest.raises(PublishRefused, match="already has a publisher") as exc:
        srv.authorize(b, "k/cam", {"key": "s3"})  # type: ignore[arg-type]
    assert exc.value.code == "NetStream.Publish.BadName"
    # With on_conflict = replace, a newcomer takes the claim and the old one is kicked.
    srv.authorize(a, "swap/cam", {})  # type: ignore[arg-type]
    srv.authorize(b, "swap/cam", {})  # type: ignore[arg-type]
    assert "replaced by" in a.kicked and srv.gate.holder("swap/cam") is b


def test_delete_stream_with_a_nan_stream_id_is_ignored() -> None:
    conn = RtmpConnection(_server(), "rtmp")
    conn.session.handshake_done()
    conn.session.publish_accepted(0.0)
    conn.publish_stream_id = 1
    conn.ingest = FlvIngest(lambda _sdp: None, lambda _t, _p: None)
    m = Message(chunk.AMF0_COMMAND, 0, 1, 3, b"")
    conn.c_delete_stream(m, 0.0, [None, float("nan")])  # int(nan) would raise
    assert conn.ingest is not None
    conn.c_delete_stream(m, 0.0, [None, 1.0])
    assert conn.ingest is None


def _publish(conn: RtmpConnection, app: str, name: str) -> None:
    if conn.session.state is RtmpState.HANDSHAKE:
        conn.session.handshake_done()
    conn.app = app
    conn.c_publish(Message(chunk.AMF0_COMMAND, 0, 1, 3, b""), 0.0, [None, name])


def test_app_only_url_publishes_to_the_app() -> None:
    # rtmp://host/stream1 arrives as app "stream1" and an empty stream name.
    conn = RtmpConnection(_server(), "rtmp")
    _publish(conn, "stream1", "")
    assert conn.path == "stream1"
    conn = RtmpConnection(_server(), "rtmp")
    _publish(conn, "live", "cam1")
    assert conn.path == "live/cam1"
    with pytest.raises(PublishRefused, match=r"use rtmp://HOST/APP/NAME"):
        _publish(RtmpConnection(_server(), "rtmp"), "", "")


def test_buffer_limits_are_small_until_publish_is_accepted() -> None:
    srv = _server(**{"k/cam": PathConfig(publish_key="s3")})
    r = srv.cfg.rtmp
    conn = RtmpConnection(srv, "rtmp")
    p = conn.parser
    assert p.max_message_size == p.max_buffered == r.pre_publish_buffer_bytes
    assert p.stop_after_command and p.max_chunk_streams == r.max_chunk_streams
    with pytest.raises(PublishRefused):
        _publish(conn, "k", "cam?key=wrong")
    assert p.max_message_size == r.pre_publish_buffer_bytes  # refused: still small
    conn = RtmpConnection(srv, "rtmp")
    _publish(conn, "k", "cam?key=s3")
    p = conn.parser
    assert (p.max_message_size, p.max_buffered) == (r.max_message_bytes, r.max_buffer_bytes)
    assert not p.stop_after_command


def test_publish_attempts_spend_from_the_address_budget() -> None:
    cfg = dataclasses.replace(Config(), limits=LimitsConfig())
    reg = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=10)
    srv = RtmpServer(cfg, reg, ConnectionLimiter(10, rate=0.001, burst=2))
    for i in range(2):
        _publish(RtmpConnection(srv, "rtmp"), "live", f"cam{i}")
    with pytest.raises(PublishRefused, match="publish attempts from") as exc:
        _publish(RtmpConnection(srv, "rtmp"), "live", "cam9")
    assert exc.value.code == "NetStream.Publish.Denied" and "per_ip_rate" in exc.value.hint
