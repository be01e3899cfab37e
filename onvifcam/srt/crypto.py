"""SRT payload encryption: key material messages, KEK derivation, AES-CTR (draft section 6).

The caller generates a random stream encrypting key (SEK) and a 16-byte salt, derives the key
encrypting key ``KEK = PBKDF2-HMAC-SHA1(passphrase, salt[8:16], 2048, len(SEK))`` and sends
the SEK wrapped with RFC 3394 AES key wrap in a key material (KM) message (KMREQ in the
conclusion handshake, later in USER control packets when it refreshes the key). A wrong
passphrase shows as a failed unwrap (the integrity check), so it is refused at the handshake
instead of producing garbage.

Payloads are AES-CTR with a counter block built from the salt and the packet's sequence
number: ``iv = salt[0:14] ^ (0^10 || seq(4 bytes))`` followed by a 16-bit block counter that
starts at zero. Two keys can be live (even and odd, the KK bits of a data packet) so a
refresh switches without a gap and late retransmissions still decrypt.

Uses the ``cryptography`` package (a main dependency of onvifcam).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

__all__ = [
    "KM_BADSECRET",
    "KM_NOSECRET",
    "CryptoError",
    "Decryptor",
    "Encryptor",
    "KeyMaterial",
    "derive_kek",
]

KM_SIGN = 0x2029  # "HAI" as a PnP vendor id
KM_VERSION = 1
KM_PT_KEYMSG = 2
CIPHER_CTR = 2
CIPHER_GCM = 4
SE_SRT = 2
SALT_LEN = 16
PBKDF2_ITERATIONS = 2048
#: PBKDF2 runs one connection may cause (a new salt in a refresh KM costs one on the loop)
MAX_DERIVATIONS = 4
KEY_LENGTHS = (16, 24, 32)

# KM states in a one-word KMRSP (the responder could not use the key material).
KM_UNSECURED = 0
KM_NOSECRET = 3
KM_BADSECRET = 4
KM_BADCRYPTOMODE = 5

KK_EVEN = 1
KK_ODD = 2
KK_BOTH = 3

_KM_HEAD = struct.Struct("!BHBIBBBBHBB")  # 16 bytes


class CryptoError(ValueError):
    """Key material that cannot be used; ``km_state`` is the KMRSP state to answer."""

    def __init__(self, message: str, km_state: int = KM_BADSECRET) -> None:
        super().__init__(message)
        self.km_state = km_state


@dataclass(frozen=True)
class KeyMaterial:
    """A KM message: which keys it carries (KK), the cipher, the salt and the wrapped keys."""

    kk: int
    salt: bytes
    key_len: int
    wrapped: bytes
    cipher: int = CIPHER_CTR

    @classmethod
    def parse(cls, data: bytes) -> KeyMaterial:
        """Parse a KM message; raises :class:`CryptoError`."""
        if len(data) < _KM_HEAD.size:
            raise CryptoError(f"key material of {len(data)} bytes is too short")
        (b0, sign, b3, _keki, cipher, auth, se, _r2, _r3, slen4, klen4) = _KM_HEAD.unpack_from(data)
        version, ptype = (b0 >> 4) & 0x7, b0 & 0xF
        if version != KM_VERSION or ptype != KM_PT_KEYMSG or sign != KM_SIGN:
            raise CryptoError("not an SRT key material message (version, type or signature)")
        kk = b3 & 0b11
        if kk == 0:
            raise CryptoError("key material without a key")
        if cipher != CIPHER_CTR or auth != 0:
            raise CryptoError(
                f"cipher {cipher} (auth {auth}) is not supported, only AES-CTR",
                KM_BADCRYPTOMODE,
            )
        del se  # MPEG-TS/UDP or /SRT: the payload does not matter to us
        salt_len, key_len = slen4 * 4, klen4 * 4
        if salt_len != SALT_LEN:
            raise CryptoError(f"salt of {salt_len} bytes, {SALT_LEN} expected")
        if key_len not in KEY_LENGTHS:
            raise CryptoError(f"key length {key_len} is not 16, 24 or 32")
        nkeys = 2 if kk == KK_BOTH else 1
        wrap_len = 8 + nkeys * key_len
        need = _KM_HEAD.size + salt_len + wrap_len
        if len(data) < need:
            raise CryptoError(f"key material of {len(data)} bytes, {need} expected")
        salt = bytes(data[_KM_HEAD.size : _KM_HEAD.size + salt_len])
        wrapped = bytes(data[_KM_HEAD.size + salt_len : need])
        return cls(kk, salt, key_len, wrapped, cipher)

    def pack(self) -> bytes:
        """The KM message bytes."""
        head = _KM_HEAD.pack(
            (KM_VERSION << 4) | KM_PT_KEYMSG,
            KM_SIGN,
            self.kk & 0b11,
            0,
            self.cipher,
            0,
            SE_SRT,
            0,
            0,
            len(self.salt) // 4,
            self.key_len // 4,
        )
        return head + self.salt + self.wrapped

    def unwrap(self, passphrase: str, kek: bytes | None = None) -> dict[int, bytes]:
        """The SEKs by KK (even 1, odd 2); raises :class:`CryptoError` (BADSECRET) when the
        passphrase is wrong. ``kek``: the key-encrypting key when already derived."""
        if kek is None:
            kek = derive_kek(passphrase, self.salt, self.key_len)
        try:
            keys = aes_key_unwrap(kek, self.wrapped)
        except (InvalidUnwrap, ValueError):
            raise CryptoError("wrong passphrase (the key does not unwrap)", KM_BADSECRET) from None
        if self.kk == KK_BOTH:
            return {KK_EVEN: keys[: self.key_len], KK_ODD: keys[self.key_len :]}
        return {self.kk: keys}


def derive_kek(passphrase: str, salt: bytes, key_len: int) -> bytes:
    """KEK = PBKDF2-HMAC-SHA1(passphrase, last 8 bytes of the salt, 2048, key_len)."""
    kdf = PBKDF2HMAC(hashes.SHA1(), key_len, salt[-8:], PBKDF2_ITERATIONS)
    return kdf.derive(passphrase.encode("utf-8"))


def _counter(salt: bytes, seq: int) -> bytes:
    iv = bytearray(salt[:14])
    s = struct.pack("!I", seq & 0x7FFFFFFF)
    iv[10] ^= s[0]
    iv[11] ^= s[1]
    iv[12] ^= s[2]
    iv[13] ^= s[3]
    return bytes(iv) + b"\x00\x00"


class Decryptor:
    """The receiver's live keys; :meth:`decrypt` a payload by its KK bits and sequence."""

    def __init__(self, passphrase: str, km: KeyMaterial) -> None:
        self.passphrase = passphrase
        self.key_len = km.key_len
        self._keys: dict[int, tuple[algorithms.AES, bytes]] = {}
        self._kek: tuple[bytes, int, bytes] | None = None  # (salt, key length, KEK)
        self.derivations = 0  # PBKDF2 runs for this connection
        self.update(km)

    def update(self, km: KeyMaterial) -> None:
        """Install the key(s) of a (refresh) KM message; raises :class:`CryptoError`.

        The KEK depends only on the passphrase and the salt, which a caller keeps for the
        whole connection, so a key refresh costs no second PBKDF2 (a caller that sends a
        new salt pays one derivation, which the receiver limits to one per KM message)."""
        cached = self._kek
        if cached is not None and cached[0] == km.salt and cached[1] == km.key_len:
            kek = cached[2]
        else:
            if self.derivations >= MAX_DERIVATIONS:
                raise CryptoError(
                    f"the caller changed its salt {self.derivations} times; refused",
                    KM_BADSECRET,
                )
            self.derivations += 1
            kek = derive_kek(self.passphrase, km.salt, km.key_len)
        keys = km.unwrap(self.passphrase, kek)
        self._kek = (km.salt, km.key_len, kek)
        for kk, sek in keys.items():
            self._keys[kk] = (algorithms.AES(sek), km.salt)

    def has_key(self, kk: int) -> bool:
        """Whether the even (1) or odd (2) key is known."""
        return kk in self._keys

    def decrypt(self, kk: int, seq: int, payload: bytes) -> bytes | None:
        """The clear payload, or None when the key ``kk`` is not known."""
        entry = self._keys.get(kk)
        if entry is None:
            return None
        alg, salt = entry
        return Cipher(alg, modes.CTR(_counter(salt, seq))).decryptor().update(payload)


class Encryptor:
    """The sender side (for the test caller and benchmarks): one random SEK per key slot."""

    def __init__(self, passphrase: str, key_len: int = 16, salt: bytes | None = None) -> None:
        if key_len not in KEY_LENGTHS:
            raise ValueError("key_len must be 16, 24 or 32")
        self.passphrase = passphrase
        self.key_len = key_len
        self.salt = salt if salt is not None else os.urandom(SALT_LEN)
        self.keys = {KK_EVEN: os.urandom(key_len), KK_ODD: os.urandom(key_len)}
        self.current = KK_EVEN

    def key_material(self, kk: int | None = None) -> KeyMaterial:
        """A KM message carrying the current key (or ``kk``: 1, 2 or 3 for both)."""
        kk = self.current if kk is None else kk
        kek = derive_kek(self.passphrase, self.salt, self.key_len)
        if kk == KK_BOTH:
            plain = self.keys[KK_EVEN] + self.keys[KK_ODD]
        else:
            plain = self.keys[kk]
        return KeyMaterial(kk, self.salt, self.key_len, aes_key_wrap(kek, plain))

    def refresh(self) -> None:
        """New key in the other slot, which becomes current."""
        other = KK_ODD if self.current == KK_EVEN else KK_EVEN
        self.keys[other] = os.urandom(self.key_len)
        self.current = other

    def encrypt(self, seq: int, payload: bytes, kk: int | None = None) -> bytes:
        """AES-CTR of one payload with the key in slot ``kk`` (default: current)."""
        key = self.keys[self.current if kk is None else kk]
        enc = Cipher(algorithms.AES(key), modes.CTR(_counter(self.salt, seq))).encryptor()
        return enc.update(payload)
