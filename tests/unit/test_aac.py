"""Tests for onvifcam.media.aac against FFmpeg's AAC encoder and ADTS muxer (via PyAV)."""

from __future__ import annotations

import io
from fractions import Fraction
from functools import cache

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onvifcam.media import aac
from onvifcam.media.aac import AacConfig, AacError


@cache
def encode(
    layout: str = "stereo", rate: int = 48000, frames: int = 20
) -> tuple[bytes, tuple[bytes, ...]]:
    """Encode a sine with FFmpeg's AAC encoder: (AudioSpecificConfig, raw frames)."""
    ctx = av.CodecContext.create("aac", "w")
    ctx.sample_rate, ctx.layout, ctx.format = rate, layout, "fltp"
    ctx.time_base = Fraction(1, rate)
    ctx.open()
    channels = ctx.channels
    out: list[bytes] = []
    t = np.arange(1024 * frames) / rate
    pcm = np.tile(np.sin(2 * np.pi * 440 * t).astype(np.float32), (channels, 1))
    for i in range(frames):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm[:, i * 1024 : (i + 1) * 1024]), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        frame.pts = i * 1024
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return bytes(ctx.extradata), tuple(out)


def decode(config: bytes, frames: list[bytes]) -> int:
    ctx = av.CodecContext.create("aac", "r")
    ctx.extradata = config
    count = 0
    for data in frames:
        count += len(ctx.decode(av.Packet(data)))
    return count + len(ctx.decode(None))


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("layout", "rate", "channels"),
    [("stereo", 48000, 2), ("mono", 44100, 1), ("5.1", 32000, 6), ("5.0", 48000, 5),
     ("2.1", 48000, 3), ("quad", 24000, 4), ("hexagonal", 48000, 6)],
)  # fmt: skip
def test_parse_config_from_ffmpeg(layout: str, rate: int, channels: int) -> None:
    config, _ = encode(layout, rate, 2)
    cfg = aac.parse_audio_specific_config(config)
    assert cfg == AacConfig(2, rate, channels, config)  # 2.1/quad/hexagonal use a PCE


def test_parse_config_escapes_and_sbr() -> None:
    assert aac.parse_audio_specific_config(bytes.fromhex("1190")) == AacConfig(
        2, 48000, 2, bytes.fromhex("1190")
    )
    # sampling frequency index 15: explicit 24-bit rate
    raw = aac.make_audio_specific_config(2, 37800, 1)
    assert aac.parse_audio_specific_config(raw) == AacConfig(2, 37800, 1, raw)
    # object type 31 escape: 32 + 10 = 42 (USAC), 48 kHz, stereo
    bits = (31 << 6 | 10) << 8 | 3 << 4 | 2
    raw = (bits << 5).to_bytes(3, "big")  # 19 bits, left-aligned
    assert aac.parse_audio_specific_config(raw) == AacConfig(42, 48000, 2, raw)
    # explicit HE-AAC: object type 5, core 22050 Hz, SBR at 44100 Hz, core type 2
    he = aac.parse_audio_specific_config(bytes.fromhex("2b920800"))
    assert he == AacConfig(5, 22050, 2, bytes.fromhex("2b920800"), extension_sample_rate=44100)


def test_parse_config_errors() -> None:
    with pytest.raises(AacError, match="empty"):
        aac.parse_audio_specific_config(b"")
    with pytest.raises(AacError, match="truncated in sampling frequency"):
        aac.parse_audio_specific_config(b"\x11")
    with pytest.raises(AacError, match="reserved sampling frequency index 13"):
        aac.parse_audio_specific_config(bytes([0x16, 0x90]))
    with pytest.raises(AacError, match="object type 0"):
        aac.parse_audio_specific_config(b"\x01\x90")
    with pytest.raises(AacError, match="program_config_element"):
        aac.parse_audio_specific_config(b"\x11\x80")


@given(st.binary(max_size=40))
def test_parse_config_only_raises_aacerror(data: bytes) -> None:
    try:
        cfg = aac.parse_audio_specific_config(data)
    except AacError:
        return
    assert cfg.sample_rate > 0 and cfg.raw == data


@pytest.mark.parametrize(
    ("object_type", "rate", "channels", "expected"),
    [(2, 48000, 2, "1190"), (2, 44100, 1, "1208"), (2, 8000, 1, "1588"), (2, 48000, 8, "11b8")],
)
def test_make_audio_specific_config(
    object_type: int, rate: int, channels: int, expected: str
) -> None:
    assert aac.make_audio_specific_config(object_type, rate, channels).hex() == expected
    cfg = aac.parse_audio_specific_config(bytes.fromhex(expected))
    assert (cfg.object_type, cfg.sample_rate, cfg.channels) == (object_type, rate, channels)


def test_make_audio_specific_config_errors() -> None:
    for args in ((2, 48000, 7), (2, 48000, 0), (0, 48000, 2), (2, 0, 2), (2, 1 << 24, 2)):
        with pytest.raises(AacError):
            aac.make_audio_specific_config(*args)


def test_fmtp_mpeg4_generic() -> None:
    cfg = aac.parse_audio_specific_config(bytes.fromhex("1190"))
    assert aac.fmtp_mpeg4_generic(cfg, 96) == (
        "96 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;"
        "indexdeltalength=3;config=1190"
    )
    config, _ = encode()
    value = aac.fmtp_mpeg4_generic(aac.parse_audio_specific_config(config), 97)
    assert value.startswith("97 ") and value.endswith(f"config={config.hex().upper()}")


# --------------------------------------------------------------------------- RFC 3640


def test_packetize_layout() -> None:
    payload = aac.packetize([b"\x01\x02\x03", b"\x04" * 300])
    assert payload[:2] == b"\x00\x20"  # two 16-bit AU headers
    assert payload[2:4] == (3 << 3).to_bytes(2, "big")
    assert payload[4:6] == (300 << 3).to_bytes(2, "big")
    assert payload[6:] == b"\x01\x02\x03" + b"\x04" * 300
    with pytest.raises(AacError, match="no AAC frames"):
        aac.packetize([])
    with pytest.raises(AacError, match="13-bit"):
        aac.packetize([bytes(8192)])


def test_packetize_depacketize_real_frames_decode() -> None:
    config, frames = encode()
    assert len(frames) >= 20
    rebuilt: list[bytes] = []
    for i in range(0, len(frames), 3):  # three AUs per payload
        group = list(frames[i : i + 3])
        payload = aac.packetize(group)
        assert aac.depacketize(payload) == group
        assert aac.depacketize(memoryview(payload)) == group
        rebuilt += aac.depacketize(payload)
    assert rebuilt == list(frames)
    assert decode(config, rebuilt) == decode(config, list(frames)) >= 20


def test_depacketize_other_header_sizes() -> None:
    # AAC-lbr: sizelength=6, indexlength=2 -> 8-bit headers
    payload = b"\x00\x10" + bytes([3 << 2, 2 << 2]) + b"abc" + b"de"
    assert aac.depacketize(payload, sizelength=6, indexlength=2) == [b"abc", b"de"]
    # 13+3 first header, 13+0 later ones (indexdeltalength=0), padded to a byte
    bits = (5 << 3) << 13 | 2
    payload = (29).to_bytes(2, "big") + (bits << 3).to_bytes(4, "big") + b"12345" + b"67"
    assert aac.depacketize(payload, 13, 3, 0) == [b"12345", b"67"]


def test_depacketize_errors() -> None:
    with pytest.raises(AacError, match="shorter than its AU-headers-length"):
        aac.depacketize(b"\x00")
    with pytest.raises(AacError, match="overruns the payload"):
        aac.depacketize(b"\x00\x20\x00\x08")
    with pytest.raises(AacError, match="no AU headers"):
        aac.depacketize(b"\x00\x00abc")
    with pytest.raises(AacError, match="fragments unsupported"):
        aac.depacketize(b"\x00\x10\x00\x50abc")
    with pytest.raises(AacError, match="sizelength"):
        aac.depacketize(b"\x00\x10\x00\x08a", sizelength=0)


@given(st.binary(max_size=60), st.integers(1, 16), st.integers(0, 8))
def test_depacketize_only_raises_aacerror(data: bytes, sizelength: int, indexlength: int) -> None:
    try:
        aac.depacketize(data, sizelength, indexlength)
    except AacError:
        pass


@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=8))
def test_packetize_round_trip(frames: list[bytes]) -> None:
    assert aac.depacketize(aac.packetize(frames)) == frames


# --------------------------------------------------------------------------- ADTS


def adts_stream() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="adts") as out:
        stream = out.add_stream("aac", rate=44100, layout="mono")
        t = np.arange(1024 * 10) / 44100
        pcm = np.sin(2 * np.pi * 300 * t).astype(np.float32)[None, :]
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(pcm[:, i * 1024 : (i + 1) * 1024]),
                format="fltp",
                layout="mono",
            )
            frame.sample_rate = 44100
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def test_adts_to_raw_with_ffmpeg_muxer() -> None:
    data = adts_stream()
    cfg, frames = aac.adts_to_raw(data)
    assert (cfg.object_type, cfg.sample_rate, cfg.channels) == (2, 44100, 1)
    assert cfg.raw == bytes.fromhex("1208")
    assert len(frames) >= 10 and all(f[:1] != b"\xff" for f in frames)
    assert decode(cfg.raw, frames) == len(frames)


def test_adts_to_raw_crc_and_errors() -> None:
    frame = b"\x21\x10\x05"
    header = 0xFFF << 44 | 0 << 40 | 1 << 38 | 3 << 34 | 2 << 30 | (9 + len(frame)) << 13
    with_crc = header.to_bytes(7, "big") + b"\xab\xcd" + frame  # protection_absent = 0
    cfg, frames = aac.adts_to_raw(with_crc * 2)
    assert cfg.raw == bytes.fromhex("1190") and frames == [frame, frame]
    with pytest.raises(AacError, match="sync word"):
        aac.adts_to_raw(b"\x00" * 9)
    with pytest.raises(AacError, match="truncated"):
        aac.adts_to_raw(with_crc[:5])
    with pytest.raises(AacError, match="frame length"):
        aac.adts_to_raw(with_crc[:-1])
    with pytest.raises(AacError, match="no ADTS frames"):
        aac.adts_to_raw(b"")


@given(st.binary(max_size=60))
def test_adts_to_raw_only_raises_aacerror(data: bytes) -> None:
    for candidate in (data, b"\xff\xf1" + data):
        try:
            aac.adts_to_raw(candidate)
        except AacError:
            pass
