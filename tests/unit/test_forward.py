"""Forward configuration keys, and a Forwarder's status machine driven in-process against a
closed loopback port (retry_limit -> error, enable(), disable()) and a loopback RTSP
listener that reads what RECORD sends."""

from __future__ import annotations

import asyncio
import errno
import socket
from pathlib import Path
from typing import Never

import pytest

from onvifcam.config import ConfigError, ForwardConfig, HookConfig, from_dict
from onvifcam.events import EventBus, ForwardError
from onvifcam.hooks import Hooks
from onvifcam.media.packetizer import Packetizer, VideoSpec
from onvifcam.media.stream import Stream, StreamRegistry
from onvifcam.rtsp.recorder import redact
from onvifcam.sources.forward import Forwarder


def cfg_with(forward: list[dict]) -> object:
    return from_dict({"cameras": [{"name": "c", "path": "cam", "forward": forward}]})


def test_forward_keys_are_typed_with_defaults() -> None:
    cfg = cfg_with([{"url": "rtmp://h/live/k"}, {"url": "rtsp://h:8554/x", "retry_limit": 3}])
    f0, f1 = cfg.cameras[0].forward  # type: ignore[attr-defined]
    assert f0 == ForwardConfig(url="rtmp://h/live/k")
    assert (f0.retry_timeout, f0.retry_limit, f0.disabled, f0.timeout) == (5.0, 0, False, 10.0)
    assert f1.retry_limit == 3


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"url": "srt://h"}, "needs a host and a port"),
        ({"url": "srt://h:9000?passphrase=short"}, "10..79 characters"),
        ({"url": "srt://h:9000?passphrase=" + "p" * 80}, "10..79 characters"),
        ({"url": "srt://h:9000?mode=listener"}, "only mode=caller"),
        ({"url": "srt://h:9000?latncy=20"}, "unknown SRT option"),
        ({"url": "http://h/x"}, "must be rtsp://HOST"),
        ({"url": "rtmp://h"}, "needs an app"),
        (
            {"url": "rtsp://h/x", "retry_timeout": 0},
            r"forward\[0\]\.retry_timeout must be positive",
        ),
        ({"url": "rtsp://h/x", "retrylimit": 1}, "did you mean 'retry_limit'"),
        ({"url": "rtsp://h/x", "max_queue_bytes": 10}, "max_queue_bytes must be at least"),
    ],
)
def test_bad_forward_entries_name_the_key(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        cfg_with([entry])
    assert "cameras[0].forward[0]" in str(exc.value)


def test_redact_hides_the_password() -> None:
    assert redact("rtsp://u:secret@h:554/x") == "rtsp://u:***@h:554/x"
    assert redact("rtmp://h/live/k") == "rtmp://h/live/k"
    assert redact("srt://h:1?streamid=a&passphrase=p4ssw0rd-long") == (
        "srt://h:1?streamid=a&passphrase=***"
    )
    assert redact("rtsp://u:secret@[::1/x") == "rtsp://u:***@[::1/x"  # urlsplit cannot read it


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # an SRT stream id with credentials (MediaMTX), raw and %-encoded
        (
            "srt://h:1?streamid=publish:cam:bob:s3cret&latency=20",
            "srt://h:1?streamid=publish:cam:bob:***&latency=20",
        ),
        (
            "srt://h:1?streamid=publish%3Acam%3Abob%3As3cret",
            "srt://h:1?streamid=publish%3Acam%3Abob%3A***",
        ),
        # the access-control syntax: s= is the secret
        (
            "srt://h:1?streamid=#!::r=cam,m=publish,u=bob,s=s3cret&latency=5",
            "srt://h:1?streamid=#!::r=cam,m=publish,u=bob,s=***&latency=5",
        ),
        # stream keys and passwords as query values, also inside a stream id
        ("srt://h:1?streamid=publish:cam?key=abc", "srt://h:1?streamid=publish:cam?key=***"),
        (
            "srt://h:1?streamid=publish%3Acam%3Fkey%3Dabc%26x%3D1",
            "srt://h:1?streamid=publish%3Acam%3Fkey%3D***%26x%3D1",
        ),
        ("rtsp://h:554/cam?key=abc&x=1", "rtsp://h:554/cam?key=***&x=1"),
        ("rtmp://h/live/cam?pass=p&user=u", "rtmp://h/live/cam?pass=***&user=u"),
        ("srt://h:1?streamid=publish:cam", "srt://h:1?streamid=publish:cam"),
    ],
)
def test_redact_hides_stream_id_credentials_and_keys(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "srt://u:SECRET@h?passphrase=SECRETSECRET",  # no port
        "srt://u:SECRET@h:9000?passphrase=SECRETSECRET&mode=listener",
        "srt://u:SECRET@h:9000?passphrase=SECRETSECRET&latency=5",
        "srt://u:SECRET@h:9000?passphrase=SECRETSECRET&bogus=1",
        "srt://u:SECRET@h:x?passphrase=SECRETSECRET",
        "rtmp://u:SECRET@h",
        "http://u:SECRET@h/x",
    ],
)
def test_forward_url_errors_never_show_the_secret(url: str) -> None:
    """The messages reach logs and the HTTP API's 422 answers."""
    with pytest.raises(ConfigError) as exc:
        cfg_with([{"url": url}])
    assert "SECRET" not in str(exc.value) and "***" in str(exc.value)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Source:
    description = "test source"

    def kick(self, reason: str) -> None:
        pass


def online_registry() -> tuple[StreamRegistry, Packetizer]:
    reg = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=4)
    stream = reg.get_or_create("cam")
    pk = Packetizer(stream.on_rtp)
    sps = bytes.fromhex("6742c01e95a0a0fd00")
    sdp = pk.configure([VideoSpec("H264", [sps, bytes.fromhex("68ce3c80")])])
    stream.publish(Source(), sdp)
    return reg, pk


async def wait_for(pred, limit: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + limit
    while not pred():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_retry_limit_reached_gives_error_then_enable_and_disable() -> None:
    reg, _pk = online_registry()
    url = f"rtsp://127.0.0.1:{closed_port()}/x"
    fwd = Forwarder(reg, "cam", ForwardConfig(url=url, retry_timeout=0.05, retry_limit=3))
    fwd.start()
    await wait_for(lambda: fwd.status == "error")
    st = fwd.stats()
    assert st["attempts"] == 3 and st["failures_in_a_row"] == 3
    assert "cannot reach 127.0.0.1:" in st["last_error"]
    assert "Connection refused" in st["last_error"]
    fwd.enable()
    assert fwd.status == "idle"
    await wait_for(lambda: fwd.attempts >= 4)
    fwd.disable()
    assert fwd.status == "disabled"
    attempts = fwd.attempts
    await asyncio.sleep(0.2)
    assert fwd.attempts == attempts and fwd.status == "disabled"
    await fwd.stop()


async def test_rtsp_record_sends_the_stream_and_source_timeout_disconnects() -> None:
    reg, pk = online_registry()
    got = bytearray()
    closed = asyncio.Event()

    async def server(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        # a minimal RECORD peer: 200 to every request, then count interleaved bytes
        cseq = 0
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            cseq += 1
            length = 0
            for line in head.decode().split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":")[1])
            await r.readexactly(length)
            method = head.split(b" ", 1)[0]
            extra = b"Session: 1\r\n" if method != b"ANNOUNCE" else b""
            if method == b"SETUP":
                extra += b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n"
            w.write(b"RTSP/1.0 200 OK\r\nCSeq: %d\r\n%s\r\n" % (cseq, extra))
            if method == b"RECORD":
                break
        while data := await r.read(65536):
            got.extend(data)
        closed.set()

    srv = await asyncio.start_server(server, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    fwd = Forwarder(reg, "cam", ForwardConfig(url=f"rtsp://127.0.0.1:{port}/in", timeout=0.3))
    fwd.start()
    await wait_for(lambda: fwd.status == "active")
    idr = bytes.fromhex("6588") + bytes(3000)
    for i in range(5):
        nal = idr if i == 0 else bytes.fromhex("4188") + bytes(500)
        pk.on_access_unit(0, i * 40, i * 40, [nal], keyframe=i == 0)
        await asyncio.sleep(0.01)
    await wait_for(lambda: fwd.frames == 5)
    await wait_for(lambda: len(got) >= fwd.bytes)
    assert got[:1] == b"$" and fwd.bytes == len(got)
    stream = reg.get("cam")
    assert stream is not None
    stream.unpublish(stream.publisher, "test")  # type: ignore[arg-type]
    await asyncio.wait_for(closed.wait(), 5)  # disconnected after `timeout`
    assert fwd.status == "idle" and fwd.reconnects == 0
    await fwd.stop()
    srv.close()


class _Unreachable(Forwarder):
    """A forwarder whose target refuses every connection (no socket needed)."""

    async def _connect(self, stream: Stream) -> Never:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


async def test_retry_limit_reached_publishes_forward_error_and_runs_the_hook(
    tmp_path: Path,
) -> None:
    bus = EventBus()
    got: list[ForwardError] = []
    bus.subscribe(got.append, ForwardError)  # type: ignore[arg-type]
    out = tmp_path / "hook.out"
    command = f'printf "%s|%s|%s" "$ONVIFCAM_EVENT" "$ONVIFCAM_TARGET" "$ONVIFCAM_REASON" > {out}'
    hooks = Hooks((HookConfig(on="forward_error", command=command, path="cam"),), bus)
    await hooks.start()
    reg, _pk = online_registry()
    url = "rtmp://user:secret@127.0.0.1:9/live/key"
    fwd = _Unreachable(
        reg, "cam", ForwardConfig(url=url, retry_timeout=0.01, retry_limit=2), bus=bus
    )
    try:
        fwd.start()
        await wait_for(lambda: hooks.stats()["runs"] != {})  # the hook ran and ended
        assert len(got) == 1 and got[0].path == "cam"
        assert got[0].target == "rtmp://user:***@127.0.0.1:9/live/key"
        assert "cannot reach 127.0.0.1:9: Connection refused" in got[0].reason
        assert out.read_text() == f"forward_error|{got[0].target}|{got[0].reason}"
        assert hooks.stats()["runs"] == {"forward_error:ok": 1}
        assert fwd.stats()["failures_in_a_row"] == 2
    finally:
        await fwd.stop()
        await hooks.stop()
