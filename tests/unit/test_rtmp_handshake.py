"""RTMP handshake: simple and digest forms, split input, bad versions."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onvifcam.rtmp import handshake
from onvifcam.rtmp.handshake import (
    PACKET_SIZE,
    ClientHandshake,
    HandshakeError,
    ServerHandshake,
)


def run(client: ClientHandshake, step: int = 0, trailer: bytes = b"") -> ServerHandshake:
    server = ServerHandshake()
    data = client.start()
    reply = b""
    chunks = [data] if not step else [data[i : i + step] for i in range(0, len(data), step)]
    for c in chunks:
        out, rest = server.feed(c)
        reply += out
        assert rest == b""
    assert len(reply) == 1 + 2 * PACKET_SIZE
    c2, rest = client.feed(reply)
    assert client.done and rest == b""
    out, rest = server.feed(c2 + trailer)
    assert out == b"" and server.done
    assert rest == trailer
    return server


def test_simple_handshake_echoes_c1() -> None:
    client = ClientHandshake()
    server = ServerHandshake()
    reply, _ = server.feed(client.start())
    assert reply[0] == 3
    assert reply[1 + PACKET_SIZE :] == client.c1  # S2 echoes C1
    assert reply[5:9] == bytes(4)  # simple S1: zero version field
    assert not server.digest


@pytest.mark.parametrize("step", [0, 1, 100, 1537])
def test_digest_handshake_both_sides_verify(step: int) -> None:
    client = ClientHandshake(digest=True)
    server = run(client, step, trailer=b"\x03connect...")
    assert server.digest and client.server_digest


def test_both_digest_schemes_are_recognised() -> None:
    for scheme in (0, 1):
        c1, digest = handshake.make_digest_packet(
            handshake.CLIENT_VERSION, handshake.PLAYER_KEY_SHORT, scheme
        )
        found = handshake.find_digest(c1, handshake.PLAYER_KEY_SHORT)
        assert found == (scheme, digest)
        server = ServerHandshake()
        reply, _ = server.feed(b"\x03" + c1)
        assert server.digest and server.scheme == scheme
        s1 = reply[1 : 1 + PACKET_SIZE]
        assert handshake.find_digest(s1, handshake.SERVER_KEY_SHORT) is not None


def test_version_without_valid_digest_falls_back_to_simple() -> None:
    c1 = bytes(4) + b"\x0a\x00\x20\x12" + os.urandom(PACKET_SIZE - 8)
    server = ServerHandshake()
    reply, _ = server.feed(b"\x03" + c1)
    assert not server.digest
    assert reply[1 + PACKET_SIZE :] == c1


@pytest.mark.parametrize(("version", "match"), [(6, "RTMPE"), (0, "version 0"), (0x47, "71")])
def test_unsupported_versions(version: int, match: str) -> None:
    with pytest.raises(HandshakeError, match=match):
        ServerHandshake().feed(bytes((version,)) + bytes(10))


def test_truncated_handshake_waits_for_more() -> None:
    server = ServerHandshake()
    assert server.feed(b"\x03" + bytes(1000)) == (b"", b"")
    assert not server.done and server.state == "c0c1"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000))
def test_garbage_raises_only_handshake_error(data: bytes) -> None:
    try:
        ServerHandshake().feed(data)
    except HandshakeError:
        pass
