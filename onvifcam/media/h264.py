"""H.264 helpers: Annex-B/AVCC framing, SPS parsing and RFC 6184 RTP payloads.

Pure functions on bytes, no I/O. Parsers raise only :class:`H264Error` on bad input.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "AvcConfig",
    "H264Error",
    "VideoInfo",
    "depacketize",
    "nals_from_avcc",
    "packetize",
    "parse_avc_config",
    "parse_sprop_parameter_sets",
    "parse_sps",
    "payload_is_keyframe",
    "profile_level_id",
    "split_annexb",
    "sprop_parameter_sets",
    "to_annexb",
    "unescape_rbsp",
]

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
STAP_A = 24
FU_A = 28

_START_CODE = b"\x00\x00\x00\x01"
_MAX_SPS_SIZE = 65535
_MAX_DIMENSION = 65535
_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


class H264Error(ValueError):
    """Malformed H.264 data."""


@dataclass(frozen=True)
class VideoInfo:
    """What an SPS says about a video stream (shared by H.264 and H.265)."""

    codec: str
    width: int
    height: int
    fps: float | None
    profile: int
    level: int


@dataclass(frozen=True)
class AvcConfig:
    """Parameter sets and NAL length size from an AVCDecoderConfigurationRecord."""

    sps: list[bytes]
    pps: list[bytes]
    length_size: int


# --------------------------------------------------------------------------- framing


def split_annexb(data: bytes | memoryview) -> list[bytes]:
    """Split an Annex-B byte stream into NAL units (start codes removed).

    Both 3- and 4-byte start codes are accepted; bytes before the first start code and
    empty NAL units are ignored, trailing zero bytes of each unit are stripped.
    """
    buf = bytes(data)
    out: list[bytes] = []
    pos = buf.find(b"\x00\x00\x01")
    while pos >= 0:
        start = pos + 3
        nxt = buf.find(b"\x00\x00\x01", start)
        end = len(buf) if nxt < 0 else nxt
        while end > start and buf[end - 1] == 0:
            end -= 1
        if end > start:
            out.append(buf[start:end])
        pos = nxt
    return out


def nals_from_avcc(data: bytes | memoryview, length_size: int = 4) -> list[bytes]:
    """Split length-prefixed (AVCC/HVCC, as in FLV and MP4) data into NAL units."""
    if length_size not in (1, 2, 3, 4):
        raise H264Error(f"NAL length size must be 1, 2, 3 or 4, not {length_size}")
    buf = bytes(data)
    out: list[bytes] = []
    pos = 0
    total = len(buf)
    while pos < total:
        if pos + length_size > total:
            raise H264Error(
                f"truncated {length_size}-byte NAL length at offset {pos} of {total}-byte buffer"
            )
        size = int.from_bytes(buf[pos : pos + length_size], "big")
        pos += length_size
        if pos + size > total:
            raise H264Error(
                f"NAL length {size} at offset {pos - length_size} overruns {total}-byte buffer"
            )
        if size:
            out.append(buf[pos : pos + size])
        pos += size
    return out


def to_annexb(nals: Iterable[bytes]) -> bytes:
    """Join NAL units into an Annex-B byte stream with 4-byte start codes."""
    parts: list[bytes] = []
    for nal in nals:
        parts.append(_START_CODE)
        parts.append(bytes(nal))
    return b"".join(parts)


def parse_avc_config(record: bytes | memoryview) -> AvcConfig:
    """Parse an AVCDecoderConfigurationRecord (FLV AVC sequence header, MP4 avcC)."""
    buf = bytes(record)
    if len(buf) < 7:
        raise H264Error(f"AVCDecoderConfigurationRecord too short ({len(buf)} bytes)")
    if buf[0] != 1:
        raise H264Error(f"AVCDecoderConfigurationRecord version {buf[0]} not supported")
    length_size = (buf[4] & 0x03) + 1
    pos = 5
    lists: list[list[bytes]] = []
    for what, mask in (("SPS", 0x1F), ("PPS", 0xFF)):
        if pos >= len(buf):
            raise H264Error(f"AVCDecoderConfigurationRecord truncated before {what} count")
        count = buf[pos] & mask
        pos += 1
        items: list[bytes] = []
        for _ in range(count):
            if pos + 2 > len(buf):
                raise H264Error(f"AVCDecoderConfigurationRecord truncated in {what} list")
            size = int.from_bytes(buf[pos : pos + 2], "big")
            pos += 2
            if pos + size > len(buf):
                raise H264Error(f"AVCDecoderConfigurationRecord truncated in {what} list")
            if size:
                items.append(buf[pos : pos + size])
            pos += size
        lists.append(items)
    return AvcConfig(sps=lists[0], pps=lists[1], length_size=length_size)


# --------------------------------------------------------------------------- bit reading


def unescape_rbsp(data: bytes) -> bytes:
    """Remove emulation-prevention bytes (``00 00 03`` -> ``00 00``)."""
    if b"\x00\x00\x03" not in data:
        return data
    return data.replace(b"\x00\x00\x03", b"\x00\x00")


class _BitReader:
    """MSB-first bit reader with exp-Golomb codes, raising ``error`` on truncation."""

    __slots__ = ("_data", "_error", "_nbits", "_what", "pos", "section")

    def __init__(self, data: bytes, error: type[ValueError], what: str) -> None:
        self._data = data
        self._nbits = len(data) * 8
        self._error = error
        self._what = what
        self.pos = 0
        self.section = "header"

    def fail(self, reason: str) -> ValueError:
        return self._error(f"{self._what} {reason}")

    def u(self, n: int) -> int:
        if n == 0:
            return 0
        pos = self.pos
        end = pos + n
        if end > self._nbits:
            raise self._error(f"{self._what} truncated in {self.section}")
        first = pos >> 3
        last = (end + 7) >> 3
        chunk = int.from_bytes(self._data[first:last], "big")
        self.pos = end
        return (chunk >> ((last << 3) - end)) & ((1 << n) - 1)

    def skip(self, n: int) -> None:
        if self.pos + n > self._nbits:
            raise self._error(f"{self._what} truncated in {self.section}")
        self.pos += n

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise self._error(
                    f"{self._what} has an exp-Golomb code over 32 bits in {self.section}"
                )
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) >> 1 if k & 1 else -(k >> 1)

    def ue_max(self, limit: int, name: str) -> int:
        value = self.ue()
        if value > limit:
            raise self._error(f"{self._what} {name} {value} out of range (max {limit})")
        return value


# --------------------------------------------------------------------------- SPS


def _h264_scaling_list(r: _BitReader, size: int) -> None:
    last = 8
    nxt = 8
    for _ in range(size):
        if nxt != 0:
            delta = r.se()
            if not -128 <= delta <= 127:
                raise r.fail(f"delta_scale {delta} out of range")
            nxt = (last + delta + 256) % 256
        last = nxt if nxt != 0 else last


def parse_sps(nal: bytes | memoryview) -> VideoInfo:
    """Parse an H.264 SPS NAL unit (with its 1-byte header) into :class:`VideoInfo`.

    Width and height are after frame cropping; ``fps`` comes from VUI timing info
    (``time_scale / (2 * num_units_in_tick)``) or is None when absent.
    """
    raw = bytes(nal)
    if not raw:
        raise H264Error("SPS is empty")
    if len(raw) > _MAX_SPS_SIZE:
        raise H264Error(f"SPS too large ({len(raw)} bytes)")
    nal_type = raw[0] & 0x1F
    if nal_type != NAL_SPS:
        raise H264Error(f"not an SPS NAL unit (type {nal_type})")
    r = _BitReader(unescape_rbsp(raw[1:]), H264Error, "SPS")
    r.section = "profile"
    profile_idc = r.u(8)
    r.skip(8)  # constraint_set flags + reserved bits
    level_idc = r.u(8)
    r.ue_max(31, "seq_parameter_set_id")

    chroma_format_idc = 1
    separate_colour_plane = 0
    if profile_idc in _HIGH_PROFILES:
        r.section = "chroma format"
        chroma_format_idc = r.ue_max(3, "chroma_format_idc")
        if chroma_format_idc == 3:
            separate_colour_plane = r.u(1)
        r.ue_max(6, "bit_depth_luma_minus8")
        r.ue_max(6, "bit_depth_chroma_minus8")
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.u(1):  # seq_scaling_matrix_present_flag
            r.section = "scaling lists"
            for i in range(12 if chroma_format_idc == 3 else 8):
                if r.u(1):
                    _h264_scaling_list(r, 16 if i < 6 else 64)

    r.section = "picture order count"
    r.ue_max(12, "log2_max_frame_num_minus4")
    poc_type = r.ue_max(2, "pic_order_cnt_type")
    if poc_type == 0:
        r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")
    elif poc_type == 1:
        r.skip(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        for _ in range(r.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle")):
            r.se()

    r.section = "picture size"
    r.ue()  # max_num_ref_frames
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue_max(_MAX_DIMENSION // 16, "pic_width_in_mbs_minus1") + 1
    height_units = r.ue_max(_MAX_DIMENSION // 16, "pic_height_in_map_units_minus1") + 1
    frame_mbs_only = r.u(1)
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_units * 16

    r.section = "frame cropping"
    if r.u(1):
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        if chroma_array_type == 0:
            unit_x, unit_y = 1, 2 - frame_mbs_only
        else:
            sub_w = 1 if chroma_array_type == 3 else 2
            sub_h = 2 if chroma_array_type == 1 else 1
            unit_x, unit_y = sub_w, sub_h * (2 - frame_mbs_only)
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
        if width <= 0 or height <= 0:
            raise H264Error("SPS frame cropping exceeds the picture size")

    fps: float | None = None
    r.section = "VUI"
    if r.u(1):  # vui_parameters_present_flag
        skip_vui_prefix(r)
        if r.u(1):  # timing_info_present_flag
            num_units_in_tick = r.u(32)
            time_scale = r.u(32)
            if num_units_in_tick and time_scale:
                fps = time_scale / (2 * num_units_in_tick)
    return VideoInfo("H264", width, height, fps, profile_idc, level_idc)


def skip_vui_prefix(r: _BitReader) -> None:
    """Skip the VUI fields H.264 and H.265 share, from aspect_ratio_info_present_flag up to
    and including the chroma sample location."""
    if r.u(1):  # aspect_ratio_info_present_flag
        if r.u(8) == 255:  # Extended_SAR
            r.skip(32)
    if r.u(1):  # overscan_info_present_flag
        r.skip(1)
    if r.u(1):  # video_signal_type_present_flag
        r.skip(4)
        if r.u(1):  # colour_description_present_flag
            r.skip(24)
    if r.u(1):  # chroma_loc_info_present_flag
        r.ue()
        r.ue()


def profile_level_id(sps: bytes | memoryview) -> str:
    """The ``profile-level-id`` SDP value (6 hex digits) for an SPS NAL unit."""
    raw = bytes(sps)
    if len(raw) < 4 or raw[0] & 0x1F != NAL_SPS:
        raise H264Error("profile-level-id needs an SPS NAL unit of at least 4 bytes")
    body = unescape_rbsp(raw[1:8])
    if len(body) < 3:
        raise H264Error("SPS truncated in profile")
    return body[:3].hex()


def sprop_parameter_sets(sps: bytes, pps: bytes) -> str:
    """The ``sprop-parameter-sets`` SDP value: base64 SPS and PPS, comma-joined."""
    return ",".join(base64.b64encode(bytes(p)).decode("ascii") for p in (sps, pps))


def _b64decode(value: str, error: type[ValueError], what: str) -> bytes:
    text = value.strip()
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise error(f"invalid base64 in {what}: {value[:40]!r}") from exc


def parse_sprop_parameter_sets(value: str) -> list[bytes]:
    """Decode a ``sprop-parameter-sets`` value into NAL units (missing padding tolerated)."""
    out: list[bytes] = []
    for part in value.split(","):
        if part.strip():
            nal = _b64decode(part, H264Error, "sprop-parameter-sets")
            if nal:
                out.append(nal)
    return out


# --------------------------------------------------------------------------- RFC 6184


def packetize(nals: Sequence[bytes | memoryview], mtu: int = 1400) -> list[bytes]:
    """RTP payloads for one access unit (RFC 6184 non-interleaved mode).

    NAL units that fit go out as single NAL unit packets, consecutive small ones are
    aggregated into STAP-A packets, larger ones are split into FU-A fragments. No payload
    exceeds ``mtu`` bytes. The caller adds RTP headers and the marker on the last payload.
    """
    if mtu < 3:
        raise H264Error(f"mtu {mtu} too small for FU-A")
    return _packetize(nals, mtu, 1, _stap_a_header, _fu_a_header)


def _stap_a_header(group: Sequence[bytes | memoryview]) -> bytes:
    forbidden = 0
    nri = 0
    for n in group:
        forbidden |= n[0] & 0x80
        nri = max(nri, n[0] & 0x60)
    return bytes((forbidden | nri | STAP_A,))


def _fu_a_header(nal: bytes | memoryview) -> tuple[bytes, int]:
    return bytes(((nal[0] & 0xE0) | FU_A,)), nal[0] & 0x1F


def _packetize(
    nals: Sequence[bytes | memoryview],
    mtu: int,
    hdr: int,
    aggregate_header: Callable[[Sequence[bytes | memoryview]], bytes],
    fu_header: Callable[[bytes | memoryview], tuple[bytes, int]],
) -> list[bytes]:
    """The packetiser RFC 6184 (H.264) and RFC 7798 (H.265) share.

    ``hdr`` is the NAL unit header size (1 or 2 bytes); units shorter than it are skipped.
    ``aggregate_header(group)`` is the payload header of a STAP-A / AP packet and
    ``fu_header(nal)`` the payload header of a FU-A / FU packet plus the unit's type.
    """
    out: list[bytes] = []
    group: list[bytes | memoryview] = []
    group_size = hdr  # aggregation packet payload header

    def flush() -> None:
        if len(group) == 1:
            out.append(bytes(group[0]))
        elif group:
            parts: list[bytes | memoryview] = [aggregate_header(group)]
            for n in group:
                parts.append(len(n).to_bytes(2, "big"))
                parts.append(n)
            out.append(b"".join(parts))
        group.clear()

    for nal in nals:
        size = len(nal)
        if size < hdr:
            continue
        if size > mtu:
            flush()
            group_size = hdr
            view = memoryview(nal)
            prefix, nal_type = fu_header(nal)
            chunk = mtu - hdr - 1
            pos = hdr
            while pos < size:
                end = min(pos + chunk, size)
                fu = nal_type
                if pos == hdr:
                    fu |= 0x80
                if end == size:
                    fu |= 0x40
                out.append(b"".join((prefix, bytes((fu,)), view[pos:end])))
                pos = end
            continue
        if group and group_size + 2 + size <= mtu and size <= 0xFFFF:
            group.append(nal)
            group_size += 2 + size
        else:
            flush()
            group.append(nal)
            group_size = hdr + 2 + size
    flush()
    return out


def depacketize(payloads: Iterable[bytes | memoryview | None]) -> list[bytes]:
    """NAL units of one access unit from its RTP payloads, in order.

    Handles single NAL unit, STAP-A and FU-A packets. ``None`` or an empty payload marks
    a lost packet. A FU-A sequence that is missing its start or end, is interrupted or
    spans a loss is dropped; malformed aggregation packets lose their broken tail.
    Interleaved-mode types (STAP-B, MTAP, FU-B) are dropped. Never raises on bad data.
    """
    return _depacketize(payloads, 1, _h264_type, 1, 23, STAP_A, FU_A, 0x1F, _fu_a_nal_header)


def _h264_type(p: bytes | memoryview) -> int:
    return p[0] & 0x1F


def _fu_a_nal_header(p: bytes | memoryview, nal_type: int) -> bytes:
    return bytes(((p[0] & 0xE0) | nal_type,))


def _depacketize(
    payloads: Iterable[bytes | memoryview | None],
    hdr: int,
    packet_type: Callable[[bytes | memoryview], int],
    single_first: int,
    single_last: int,
    aggregate: int,
    fragment: int,
    type_mask: int,
    nal_header: Callable[[bytes | memoryview, int], bytes],
) -> list[bytes]:
    """The depacketiser RFC 6184 (H.264) and RFC 7798 (H.265) share.

    ``hdr`` is the payload header size; types ``single_first..single_last`` are single NAL
    unit packets, ``aggregate`` is STAP-A / AP, ``fragment`` is FU-A / FU whose FU header
    carries the unit type under ``type_mask``; ``nal_header(payload, type)`` rebuilds the
    unit's header from a fragment's payload header. Other types are dropped.
    """
    out: list[bytes] = []
    fu: bytearray | None = None
    fu_type = 0
    for p in payloads:
        if not p or len(p) < hdr:
            fu = None
            continue
        t = packet_type(p)
        if t == fragment:
            if len(p) <= hdr:
                fu = None
                continue
            h = p[hdr]
            if h & 0x80:
                fu_type = h & type_mask
                fu = bytearray(nal_header(p, fu_type))
                fu += p[hdr + 1 :]
            elif fu is None or h & type_mask != fu_type:
                fu = None
                continue
            else:
                fu += p[hdr + 1 :]
            if h & 0x40:
                out.append(bytes(fu))
                fu = None
            continue
        fu = None
        if single_first <= t <= single_last:
            out.append(bytes(p))
        elif t == aggregate:
            pos = hdr
            n = len(p)
            while pos + 2 <= n:
                size = (p[pos] << 8) | p[pos + 1]
                pos += 2
                if size < hdr or pos + size > n:
                    break
                out.append(bytes(p[pos : pos + size]))
                pos += size
    return out


def payload_is_keyframe(payload: bytes | memoryview) -> bool:
    """True if an RTP payload is, contains or starts an IDR slice (5) or SPS (7)."""
    n = len(payload)
    if n == 0:
        return False
    t = payload[0] & 0x1F
    if t == NAL_IDR or t == NAL_SPS:
        return True
    if t == FU_A:
        if n < 2:
            return False
        h = payload[1]
        return bool(h & 0x80) and (h & 0x1F == NAL_IDR or h & 0x1F == NAL_SPS)
    if t == STAP_A:
        pos = 1
        while pos + 2 < n:
            size = (payload[pos] << 8) | payload[pos + 1]
            if size == 0:
                return False
            inner = payload[pos + 2] & 0x1F
            if inner == NAL_IDR or inner == NAL_SPS:
                return True
            pos += 2 + size
    return False
