"""AAC helpers: AudioSpecificConfig, ADTS and RFC 3640 (mpeg4-generic, AAC-hbr) payloads.

Pure functions on bytes, no I/O. Parsers raise only :class:`AacError` on bad input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "SAMPLE_RATES",
    "AacConfig",
    "AacError",
    "adts_to_raw",
    "depacketize",
    "fmtp_mpeg4_generic",
    "make_audio_specific_config",
    "packetize",
    "parse_audio_specific_config",
]

SAMPLE_RATES: tuple[int, ...] = (
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
)  # fmt: skip
# Object types whose AudioSpecificConfig carries a GASpecificConfig (ISO 14496-3 1.6.2.1).
_GA_OBJECT_TYPES = frozenset((1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23))
_CHANNELS_BY_CONFIG = (0, 1, 2, 3, 4, 5, 6, 8, 0, 0, 0, 7, 8, 24, 8, 0)
_MAX_AU_SIZE = (1 << 13) - 1


class AacError(ValueError):
    """Malformed AAC data."""


@dataclass(frozen=True)
class AacConfig:
    """Decoded AudioSpecificConfig; ``raw`` is the config as received.

    ``sample_rate`` is the core rate; with explicit SBR/PS signalling (object type 5 or
    29) the output rate is ``extension_sample_rate``.
    """

    object_type: int
    sample_rate: int
    channels: int
    raw: bytes
    extension_sample_rate: int | None = None


class _Bits:
    __slots__ = ("_data", "_nbits", "pos", "section")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._nbits = len(data) * 8
        self.pos = 0
        self.section = "object type"

    def u(self, n: int) -> int:
        end = self.pos + n
        if end > self._nbits:
            raise AacError(f"AudioSpecificConfig truncated in {self.section}")
        first = self.pos >> 3
        last = (end + 7) >> 3
        chunk = int.from_bytes(self._data[first:last], "big")
        self.pos = end
        return (chunk >> ((last << 3) - end)) & ((1 << n) - 1)


def _object_type(r: _Bits) -> int:
    value = r.u(5)
    return 32 + r.u(6) if value == 31 else value


def _sample_rate(r: _Bits) -> int:
    index = r.u(4)
    if index == 15:
        rate = r.u(24)
        if rate == 0:
            raise AacError("AudioSpecificConfig explicit sampling frequency is zero")
        return rate
    if index >= len(SAMPLE_RATES):
        raise AacError(f"AudioSpecificConfig reserved sampling frequency index {index}")
    return SAMPLE_RATES[index]


def _pce_channels(r: _Bits) -> int:
    """Channel count from a program_config_element()."""
    r.section = "program_config_element"
    r.u(4 + 2 + 4)  # element_instance_tag, object_type, sampling_frequency_index
    front, side, back = r.u(4), r.u(4), r.u(4)
    lfe = r.u(2)
    channels = lfe
    r.u(3 + 4)  # num_assoc_data_elements, num_valid_cc_elements
    for width in (4, 4, 3):  # mono / stereo / matrix mixdown present + element
        if r.u(1):
            r.u(width)
    for _ in range(front + side + back):
        channels += 2 if r.u(1) else 1  # is_cpe
        r.u(4)  # tag_select
    return channels


def parse_audio_specific_config(data: bytes | memoryview) -> AacConfig:
    """Parse an MPEG-4 AudioSpecificConfig (FLV AAC sequence header, SDP ``config=``).

    Handles the object type 31 escape, sampling frequency index 15 (explicit 24-bit
    rate), explicit SBR/PS signalling, and channel configuration 0 with a program config
    element for general audio object types.
    """
    raw = bytes(data)
    if not raw:
        raise AacError("AudioSpecificConfig is empty")
    r = _Bits(raw)
    object_type = _object_type(r)
    if object_type == 0:
        raise AacError("AudioSpecificConfig has object type 0 (null)")
    r.section = "sampling frequency"
    sample_rate = _sample_rate(r)
    r.section = "channel configuration"
    channel_config = r.u(4)
    extension_rate: int | None = None
    core_type = object_type
    if object_type in (5, 29):
        r.section = "SBR extension"
        extension_rate = _sample_rate(r)
        core_type = _object_type(r)
        if core_type == 22:
            r.u(4)  # extensionChannelConfiguration
    channels = _CHANNELS_BY_CONFIG[channel_config]
    if channel_config == 0 and core_type in _GA_OBJECT_TYPES:
        r.section = "GASpecificConfig"
        r.u(1)  # frameLengthFlag
        if r.u(1):  # dependsOnCoreCoder
            r.u(14)
        r.u(1)  # extensionFlag
        channels = _pce_channels(r)
    return AacConfig(object_type, sample_rate, channels, raw, extension_rate)


def make_audio_specific_config(object_type: int, sample_rate: int, channels: int) -> bytes:
    """A minimal AudioSpecificConfig for 1..6 or 8 channels (configurations 1..7)."""
    if not 1 <= object_type <= 30:
        raise AacError(f"object type {object_type} not supported here")
    if not 1 <= channels <= 8 or channels == 7:
        raise AacError(f"no channel configuration for {channels} channels")
    channel_config = 7 if channels == 8 else channels
    bits = object_type
    if sample_rate in SAMPLE_RATES:
        bits = (bits << 4) | SAMPLE_RATES.index(sample_rate)
        nbits = 9
    elif 0 < sample_rate < 1 << 24:
        bits = (((bits << 4) | 15) << 24) | sample_rate
        nbits = 33
    else:
        raise AacError(f"sample rate {sample_rate} out of range")
    bits = (bits << 4) | channel_config
    nbits += 4
    bits <<= 3  # GASpecificConfig: frameLengthFlag, dependsOnCoreCoder, extensionFlag
    nbits += 3
    pad = -nbits % 8
    return (bits << pad).to_bytes((nbits + pad) // 8, "big")


def fmtp_mpeg4_generic(cfg: AacConfig, payload_type: int) -> str:
    """The ``a=fmtp:`` value for RFC 3640 AAC-hbr with 13-bit sizes and 3-bit indexes."""
    return (
        f"{payload_type} profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;"
        f"indexdeltalength=3;config={cfg.raw.hex().upper()}"
    )


def packetize(frames: Sequence[bytes | memoryview]) -> bytes:
    """One RFC 3640 AAC-hbr RTP payload carrying ``frames`` (raw AAC access units).

    The payload has the AU-headers-length, one 16-bit AU header (13-bit size, 3-bit
    index/index-delta of 0) per frame, then the frames. The RTP timestamp is the first
    frame's; keeping the payload under the MTU is the caller's job.
    """
    if not frames:
        raise AacError("no AAC frames to packetize")
    if len(frames) > 4095:
        raise AacError(f"too many AAC frames ({len(frames)}) for one payload")
    parts: list[bytes | memoryview] = [(16 * len(frames)).to_bytes(2, "big")]
    for frame in frames:
        size = len(frame)
        if size > _MAX_AU_SIZE:
            raise AacError(f"AAC frame of {size} bytes does not fit a 13-bit AU size")
        parts.append((size << 3).to_bytes(2, "big"))
    parts.extend(frames)
    return b"".join(parts)


def depacketize(
    payload: bytes | memoryview,
    sizelength: int = 13,
    indexlength: int = 3,
    indexdeltalength: int | None = None,
) -> list[bytes]:
    """Raw AAC frames from one RFC 3640 payload with an AU header section.

    Fragmented access units (an AU larger than the payload) are not supported.
    """
    if not 1 <= sizelength <= 16:
        raise AacError(f"unsupported sizelength {sizelength}")
    delta_len = indexlength if indexdeltalength is None else indexdeltalength
    buf = bytes(payload)
    if len(buf) < 2:
        raise AacError("mpeg4-generic payload shorter than its AU-headers-length")
    header_bits = int.from_bytes(buf[:2], "big")
    header_bytes = (header_bits + 7) // 8
    if 2 + header_bytes > len(buf):
        raise AacError(f"AU-headers-length {header_bits} bits overruns the payload")
    headers = int.from_bytes(buf[2 : 2 + header_bytes], "big")
    total_bits = header_bytes * 8
    pos = 0
    sizes: list[int] = []
    index_len = indexlength
    while pos + sizelength + index_len <= header_bits:
        end = pos + sizelength
        sizes.append((headers >> (total_bits - end)) & ((1 << sizelength) - 1))
        pos = end + index_len
        index_len = delta_len
    if not sizes:
        raise AacError("mpeg4-generic payload has no AU headers")
    data_pos = 2 + header_bytes
    frames: list[bytes] = []
    for size in sizes:
        if data_pos + size > len(buf):
            raise AacError(f"AU of {size} bytes overruns the payload (fragments unsupported)")
        frames.append(buf[data_pos : data_pos + size])
        data_pos += size
    return frames


def adts_to_raw(data: bytes | memoryview) -> tuple[AacConfig, list[bytes]]:
    """Split an ADTS stream into its config and raw AAC frames (CRC bytes dropped)."""
    buf = bytes(data)
    frames: list[bytes] = []
    cfg: AacConfig | None = None
    pos = 0
    while pos < len(buf):
        if pos + 7 > len(buf):
            raise AacError(f"ADTS header truncated at offset {pos}")
        h = int.from_bytes(buf[pos : pos + 7], "big")
        if h >> 44 != 0xFFF:
            raise AacError(f"ADTS sync word missing at offset {pos}")
        protection_absent = (h >> 40) & 1
        profile = (h >> 38) & 3
        rate_index = (h >> 34) & 0xF
        channel_config = (h >> 30) & 7
        frame_length = (h >> 13) & 0x1FFF
        blocks = h & 3
        header_len = 7 if protection_absent else 9
        if blocks:
            raise AacError("ADTS frames with several raw data blocks are not supported")
        if rate_index >= len(SAMPLE_RATES):
            raise AacError(f"ADTS reserved sampling frequency index {rate_index}")
        if channel_config == 0:
            raise AacError("ADTS channel configuration 0 (in-band PCE) is not supported")
        if frame_length < header_len or pos + frame_length > len(buf):
            raise AacError(f"ADTS frame length {frame_length} at offset {pos} is invalid")
        if cfg is None:
            cfg = parse_audio_specific_config(
                make_audio_specific_config(
                    profile + 1, SAMPLE_RATES[rate_index], _CHANNELS_BY_CONFIG[channel_config]
                )
            )
        frames.append(buf[pos + header_len : pos + frame_length])
        pos += frame_length
    if cfg is None:
        raise AacError("no ADTS frames")
    return cfg, frames
