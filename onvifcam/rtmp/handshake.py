"""The RTMP handshake (C0/C1/C2, S0/S1/S2), sans-I/O, server and client side.

Two forms exist in the field:

- simple (Adobe RTMP spec 5.2): C1/S1 are time, four zero bytes and 1528 random bytes;
  C2/S2 echo the peer's C1/S1.
- digest (what Flash Player, librtmp/OBS and ffmpeg send): C1 carries a non-zero version
  and an HMAC-SHA256 digest at a position derived from the packet (scheme 0: from bytes
  8..11, scheme 1: from bytes 772..775), keyed with the player key. A server that sees a
  valid C1 digest answers with an S1 digest keyed with the server key and an S2 whose
  last 32 bytes are an HMAC keyed with a key derived from the C1 digest.

The server accepts either form and answers in the same form. C2 is read but not
verified (encoders differ in what they put there). Encrypted RTMPE (version 6) is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time

__all__ = [
    "PACKET_SIZE",
    "ClientHandshake",
    "HandshakeError",
    "ServerHandshake",
    "find_digest",
    "make_digest_packet",
]

PACKET_SIZE = 1536
RTMP_VERSION = 3
DIGEST_SIZE = 32

_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
PLAYER_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL
SERVER_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL
PLAYER_KEY_SHORT = PLAYER_KEY[:30]
SERVER_KEY_SHORT = SERVER_KEY[:36]
SERVER_VERSION = bytes((5, 0, 3, 1))
CLIENT_VERSION = bytes((10, 0, 32, 18))

_U32 = struct.Struct("!I")


class HandshakeError(ValueError):
    """The peer's handshake is malformed or asks for something unsupported."""


def _digest_offset(packet: bytes, scheme: int) -> int:
    base = 8 if scheme == 0 else 772
    total = packet[base] + packet[base + 1] + packet[base + 2] + packet[base + 3]
    return total % 728 + base + 4


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def find_digest(packet: bytes, key: bytes) -> tuple[int, bytes] | None:
    """(scheme, digest) when ``packet`` (C1 or S1) carries a valid digest for ``key``."""
    if len(packet) != PACKET_SIZE:
        return None
    for scheme in (0, 1):
        off = _digest_offset(packet, scheme)
        digest = packet[off : off + DIGEST_SIZE]
        expected = _hmac(key, packet[:off] + packet[off + DIGEST_SIZE :])
        if hmac.compare_digest(digest, expected):
            return scheme, digest
    return None


def make_digest_packet(version: bytes, key: bytes, scheme: int = 0) -> tuple[bytes, bytes]:
    """A C1/S1 packet with a digest for ``key``; returns (packet, digest)."""
    body = bytearray(_U32.pack(int(time.monotonic() * 1000) & 0xFFFFFFFF) + version)
    body += os.urandom(PACKET_SIZE - 8)
    off = _digest_offset(bytes(body), scheme)
    digest = _hmac(key, bytes(body[:off] + body[off + DIGEST_SIZE :]))
    body[off : off + DIGEST_SIZE] = digest
    return bytes(body), digest


def _simple_packet() -> bytes:
    return _U32.pack(int(time.monotonic() * 1000) & 0xFFFFFFFF) + bytes(4) + os.urandom(1528)


def _signed_echo(peer_digest: bytes, key: bytes) -> bytes:
    """C2/S2 for the digest form: random bytes ending in an HMAC derived from the peer."""
    body = os.urandom(PACKET_SIZE - DIGEST_SIZE)
    return body + _hmac(_hmac(key, peer_digest), body)


class ServerHandshake:
    """Server side: feed bytes, get bytes to send, until :attr:`done`.

    ``feed`` returns ``(reply, rest)``: the bytes to write to the client (S0+S1+S2 once C1
    is complete) and any bytes that followed C2 (the start of the chunk stream).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.state = "c0c1"  # c0c1 -> c2 -> done
        self.digest = False  # the client used the digest form
        self.scheme = -1

    @property
    def done(self) -> bool:
        """True once C2 has been received."""
        return self.state == "done"

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Take client bytes; return (bytes to send, bytes after the handshake)."""
        if self.state == "done":
            return b"", data
        self._buf += data
        reply = b""
        if self.state == "c0c1":
            if self._buf and self._buf[0] != RTMP_VERSION:
                v = self._buf[0]
                if v in (6, 8, 9):
                    raise HandshakeError(f"encrypted RTMPE (version {v}) is not supported")
                raise HandshakeError(f"RTMP version {v} is not supported (expected 3)")
            if len(self._buf) < 1 + PACKET_SIZE:
                return b"", b""
            c1 = bytes(self._buf[1 : 1 + PACKET_SIZE])
            del self._buf[: 1 + PACKET_SIZE]
            reply = self._answer(c1)
            self.state = "c2"
        if self.state == "c2":
            if len(self._buf) < PACKET_SIZE:
                return reply, b""
            rest = bytes(self._buf[PACKET_SIZE:])
            self._buf = bytearray()
            self.state = "done"
            return reply, rest
        return reply, b""

    def _answer(self, c1: bytes) -> bytes:
        found = find_digest(c1, PLAYER_KEY_SHORT) if c1[4:8] != bytes(4) else None
        if found is None:
            return bytes((RTMP_VERSION,)) + _simple_packet() + c1
        self.digest = True
        self.scheme, client_digest = found
        s1, _ = make_digest_packet(SERVER_VERSION, SERVER_KEY_SHORT, self.scheme)
        s2 = _signed_echo(client_digest, SERVER_KEY)
        return bytes((RTMP_VERSION,)) + s1 + s2


class ClientHandshake:
    """Client side (tests and the benchmark): C0+C1 first, then C2 once S0+S1+S2 arrive.

    With ``digest`` the client signs C1 and verifies the server's S1 and S2 digests.
    """

    def __init__(self, digest: bool = False) -> None:
        self._buf = bytearray()
        self.digest = digest
        self.done = False
        self.server_digest = False
        if digest:
            self.c1, self._c1_digest = make_digest_packet(CLIENT_VERSION, PLAYER_KEY_SHORT)
        else:
            self.c1, self._c1_digest = _simple_packet(), b""

    def start(self) -> bytes:
        """C0 + C1."""
        return bytes((RTMP_VERSION,)) + self.c1

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Take server bytes; return (C2 once S0..S2 are complete, bytes after S2)."""
        if self.done:
            return b"", data
        self._buf += data
        if len(self._buf) < 1 + 2 * PACKET_SIZE:
            return b"", b""
        if self._buf[0] != RTMP_VERSION:
            raise HandshakeError(f"server answered with RTMP version {self._buf[0]}")
        s1 = bytes(self._buf[1 : 1 + PACKET_SIZE])
        s2 = bytes(self._buf[1 + PACKET_SIZE : 1 + 2 * PACKET_SIZE])
        rest = bytes(self._buf[1 + 2 * PACKET_SIZE :])
        self._buf = bytearray()
        self.done = True
        if self.digest and s1[4:8] != bytes(4):
            found = find_digest(s1, SERVER_KEY_SHORT)
            if found is None:
                raise HandshakeError("server S1 digest does not verify")
            expected = _hmac(_hmac(SERVER_KEY, self._c1_digest), s2[:-DIGEST_SIZE])
            if not hmac.compare_digest(expected, s2[-DIGEST_SIZE:]):
                raise HandshakeError("server S2 signature does not verify")
            self.server_digest = True
            return _signed_echo(found[1], PLAYER_KEY), rest
        return s1, rest
