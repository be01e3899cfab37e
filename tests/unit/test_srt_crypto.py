"""SRT encryption: key material, KEK derivation, AES-CTR counters, key refresh; fuzzed."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from onvifcam.srt import crypto
from onvifcam.srt.crypto import (
    KK_BOTH,
    KK_EVEN,
    KK_ODD,
    CryptoError,
    Decryptor,
    Encryptor,
    KeyMaterial,
    derive_kek,
)

SALT = bytes(range(16))


def test_kek_is_pbkdf2_sha1_over_the_last_8_salt_bytes() -> None:
    expected = hashlib.pbkdf2_hmac("sha1", b"0123456789", SALT[8:], 2048, 24)
    assert derive_kek("0123456789", SALT, 24) == expected


def test_counter_block_is_salt_xor_sequence_then_block_counter() -> None:
    enc = Encryptor("0123456789", 16, salt=SALT)
    payload = bytes(100)
    seq = 0x01020304
    # the keystream of a zero payload is AES(key, counter block), then the next block
    iv = bytearray(SALT[:14]) + b"\x00\x00"
    for i, b in enumerate(seq.to_bytes(4, "big")):
        iv[10 + i] ^= b
    want = Cipher(algorithms.AES(enc.keys[KK_EVEN]), modes.ECB()).encryptor()
    block0 = want.update(bytes(iv))
    iv[15] = 1
    block1 = want.update(bytes(iv))
    stream = enc.encrypt(seq, payload)
    assert stream[:16] == block0 and stream[16:32] == block1


@pytest.mark.parametrize("key_len", [16, 24, 32])
def test_round_trip_through_key_material(key_len: int) -> None:
    enc = Encryptor("a long enough passphrase", key_len)
    km = KeyMaterial.parse(enc.key_material().pack())
    assert (km.kk, km.key_len, km.salt) == (KK_EVEN, key_len, enc.salt)
    dec = Decryptor("a long enough passphrase", km)
    for seq in (0, 1, 0x7FFFFFFF):
        clear = bytes(range(256)) * 5 + b"tail"
        assert dec.decrypt(KK_EVEN, seq, enc.encrypt(seq, clear)) == clear
    assert dec.decrypt(KK_ODD, 1, b"x") is None  # odd key not announced yet


def test_wrong_passphrase_is_badsecret() -> None:
    km = Encryptor("the right passphrase").key_material()
    with pytest.raises(CryptoError, match="wrong passphrase") as err:
        Decryptor("the wrong passphrase", km)
    assert err.value.km_state == crypto.KM_BADSECRET


def test_key_refresh_keeps_the_old_key_for_late_packets() -> None:
    enc = Encryptor("refresh passphrase")
    dec = Decryptor("refresh passphrase", enc.key_material())
    old = enc.encrypt(10, b"old key packet")
    enc.refresh()
    dec.update(KeyMaterial.parse(enc.key_material(KK_BOTH).pack()))
    assert dec.decrypt(KK_ODD, 11, enc.encrypt(11, b"new key packet")) == b"new key packet"
    assert dec.decrypt(KK_EVEN, 10, old) == b"old key packet"


def test_unsupported_cipher_is_a_crypto_mode_error() -> None:
    raw = bytearray(Encryptor("gcm passphrase").key_material().pack())
    raw[8] = crypto.CIPHER_GCM
    with pytest.raises(CryptoError, match="only AES-CTR") as err:
        KeyMaterial.parse(bytes(raw))
    assert err.value.km_state == crypto.KM_BADCRYPTOMODE


@pytest.mark.parametrize(
    ("offset", "value", "why"),
    [
        (0, 0x13, "not an SRT key material"),
        (1, 0x21, "not an SRT key material"),
        (3, 0x00, "without a key"),
        (14, 3, "salt of 12 bytes"),
        (15, 5, "key length 20"),
    ],
)
def test_malformed_key_material(offset: int, value: int, why: str) -> None:
    raw = bytearray(Encryptor("malformed passphrase").key_material().pack())
    raw[offset] = value
    with pytest.raises(CryptoError, match=why):
        KeyMaterial.parse(bytes(raw))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_arbitrary_key_material_only_raises_crypto_error(data: bytes) -> None:
    try:
        km = KeyMaterial.parse(data)
    except CryptoError:
        return
    with pytest.raises(CryptoError):
        km.unwrap("some passphrase")  # random bytes never pass the RFC 3394 check


def test_a_key_refresh_with_the_same_salt_derives_no_new_kek(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []
    real = crypto.derive_kek

    def counting(passphrase: str, salt: bytes, key_len: int) -> bytes:
        calls.append(salt)
        return real(passphrase, salt, key_len)

    monkeypatch.setattr(crypto, "derive_kek", counting)
    enc = Encryptor("refresh passphrase")
    dec = Decryptor("refresh passphrase", enc.key_material())
    before = len(calls)
    for _ in range(5):
        enc.refresh()
        dec.update(KeyMaterial.parse(enc.key_material(KK_BOTH).pack()))
    # the sender derives for each KM it builds; the receiver derived only once
    assert dec.derivations == 1
    assert len(calls) - before == 5


def test_a_caller_that_keeps_changing_its_salt_is_refused() -> None:
    dec = Decryptor("salty passphrase", Encryptor("salty passphrase").key_material())
    for _ in range(crypto.MAX_DERIVATIONS - 1):
        dec.update(Encryptor("salty passphrase").key_material())  # a new random salt each
    with pytest.raises(CryptoError, match="changed its salt"):
        dec.update(Encryptor("salty passphrase").key_material())
