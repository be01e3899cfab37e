"""H.265/HEVC helpers: hvcC records, SPS parsing and RFC 7798 RTP payloads.

Pure functions on bytes, no I/O. Parsers raise only :class:`H265Error` on bad input.
Annex-B / length-prefixed framing is shared with :mod:`onvifcam.media.h264`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from onvifcam.media.h264 import (
    VideoInfo,
    _b64decode,
    _BitReader,
    _depacketize,
    _packetize,
    nals_from_avcc,
    skip_vui_prefix,
    split_annexb,
    to_annexb,
    unescape_rbsp,
)

__all__ = [
    "H265Error",
    "HevcConfig",
    "VideoInfo",
    "depacketize",
    "nal_type",
    "nals_from_avcc",
    "packetize",
    "parse_hevc_config",
    "parse_sprop",
    "parse_sps",
    "payload_is_keyframe",
    "split_annexb",
    "sprop_fmtp",
    "to_annexb",
]

NAL_IRAP_FIRST = 16  # BLA_W_LP
NAL_IRAP_LAST = 21  # CRA_NUT
NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35
AP = 48
FU = 49

_MAX_SPS_SIZE = 65535
_MAX_DIMENSION = 65535


class H265Error(ValueError):
    """Malformed H.265 data."""


@dataclass(frozen=True)
class HevcConfig:
    """Parameter sets and NAL length size from an HEVCDecoderConfigurationRecord."""

    vps: list[bytes]
    sps: list[bytes]
    pps: list[bytes]
    length_size: int


def nal_type(nal: bytes | memoryview) -> int:
    """The NAL unit type from the first header byte (``(b0 >> 1) & 0x3F``)."""
    return (nal[0] >> 1) & 0x3F


def parse_hevc_config(record: bytes | memoryview) -> HevcConfig:
    """Parse an HEVCDecoderConfigurationRecord (MP4 hvcC, Enhanced-RTMP sequence start).

    VPS, SPS and PPS arrays are returned; other arrays (SEI) are ignored.
    """
    buf = bytes(record)
    if len(buf) < 23:
        raise H265Error(f"HEVCDecoderConfigurationRecord too short ({len(buf)} bytes)")
    if buf[0] > 1:  # some early muxers wrote 0
        raise H265Error(f"HEVCDecoderConfigurationRecord version {buf[0]} not supported")
    length_size = (buf[21] & 0x03) + 1
    arrays = buf[22]
    pos = 23
    found: dict[int, list[bytes]] = {NAL_VPS: [], NAL_SPS: [], NAL_PPS: []}
    for _ in range(arrays):
        if pos + 3 > len(buf):
            raise H265Error("HEVCDecoderConfigurationRecord truncated in NAL array header")
        array_type = buf[pos] & 0x3F
        count = int.from_bytes(buf[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            if pos + 2 > len(buf):
                raise H265Error("HEVCDecoderConfigurationRecord truncated in NAL array")
            size = int.from_bytes(buf[pos : pos + 2], "big")
            pos += 2
            if pos + size > len(buf):
                raise H265Error("HEVCDecoderConfigurationRecord truncated in NAL array")
            if size and array_type in found:
                found[array_type].append(buf[pos : pos + size])
            pos += size
    return HevcConfig(
        vps=found[NAL_VPS], sps=found[NAL_SPS], pps=found[NAL_PPS], length_size=length_size
    )


# --------------------------------------------------------------------------- SPS


def _profile_tier_level(r: _BitReader, max_sub_layers_minus1: int) -> tuple[int, int]:
    r.section = "profile_tier_level"
    r.skip(3)  # general_profile_space, general_tier_flag
    profile_idc = r.u(5)
    r.skip(32 + 48)  # compatibility flags, constraint flags
    level_idc = r.u(8)
    profile_present: list[int] = []
    level_present: list[int] = []
    for _ in range(max_sub_layers_minus1):
        profile_present.append(r.u(1))
        level_present.append(r.u(1))
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for i in range(max_sub_layers_minus1):
        if profile_present[i]:
            r.skip(88)
        if level_present[i]:
            r.skip(8)
    return profile_idc, level_idc


def _scaling_list_data(r: _BitReader) -> None:
    r.section = "scaling list data"
    for size_id in range(4):
        for _matrix_id in range(0, 6, 3 if size_id == 3 else 1):
            if not r.u(1):  # scaling_list_pred_mode_flag
                r.ue_max(5, "scaling_list_pred_matrix_id_delta")
                continue
            coef_num = min(64, 1 << (4 + (size_id << 1)))
            if size_id > 1:
                r.se()  # scaling_list_dc_coef_minus8
            for _ in range(coef_num):
                r.se()  # scaling_list_delta_coef


def _st_ref_pic_sets(r: _BitReader, count: int) -> None:
    """Parse ``count`` st_ref_pic_set() structures, tracking delta POCs for prediction."""
    r.section = "short-term reference picture sets"
    sets: list[tuple[list[int], list[int]]] = []  # (DeltaPocS0, DeltaPocS1)
    for idx in range(count):
        inter = r.u(1) if idx != 0 else 0
        if inter:
            ref_s0, ref_s1 = sets[idx - 1]  # delta_idx_minus1 is only sent in slice headers
            sign = r.u(1)
            abs_delta = r.ue_max(1 << 15, "abs_delta_rps_minus1") + 1
            delta_rps = -abs_delta if sign else abs_delta
            num_ref = len(ref_s0) + len(ref_s1)
            use_delta: list[int] = []
            for _ in range(num_ref + 1):
                used = r.u(1)
                use_delta.append(1 if used else r.u(1))
            s0: list[int] = []
            s1: list[int] = []
            n0 = len(ref_s0)
            for j in range(len(ref_s1) - 1, -1, -1):
                d = ref_s1[j] + delta_rps
                if d < 0 and use_delta[n0 + j]:
                    s0.append(d)
            if delta_rps < 0 and use_delta[num_ref]:
                s0.append(delta_rps)
            for j in range(n0):
                d = ref_s0[j] + delta_rps
                if d < 0 and use_delta[j]:
                    s0.append(d)
            for j in range(n0 - 1, -1, -1):
                d = ref_s0[j] + delta_rps
                if d > 0 and use_delta[j]:
                    s1.append(d)
            if delta_rps > 0 and use_delta[num_ref]:
                s1.append(delta_rps)
            for j in range(len(ref_s1)):
                d = ref_s1[j] + delta_rps
                if d > 0 and use_delta[n0 + j]:
                    s1.append(d)
            if len(s0) > 16 or len(s1) > 16:
                raise r.fail("short-term reference picture set has over 16 pictures")
        else:
            num_negative = r.ue_max(16, "num_negative_pics")
            num_positive = r.ue_max(16, "num_positive_pics")
            s0 = []
            s1 = []
            poc = 0
            for _ in range(num_negative):
                poc -= r.ue_max(1 << 15, "delta_poc_s0_minus1") + 1
                r.skip(1)  # used_by_curr_pic_s0_flag
                s0.append(poc)
            poc = 0
            for _ in range(num_positive):
                poc += r.ue_max(1 << 15, "delta_poc_s1_minus1") + 1
                r.skip(1)  # used_by_curr_pic_s1_flag
                s1.append(poc)
        sets.append((s0, s1))


def parse_sps(nal: bytes | memoryview) -> VideoInfo:
    """Parse an H.265 SPS NAL unit (with its 2-byte header) into :class:`VideoInfo`.

    Width and height are after the conformance window; ``fps`` comes from VUI timing
    info (``vui_time_scale / vui_num_units_in_tick``) or is None when absent.
    """
    raw = bytes(nal)
    if len(raw) < 2:
        raise H265Error("SPS shorter than its 2-byte NAL header")
    if len(raw) > _MAX_SPS_SIZE:
        raise H265Error(f"SPS too large ({len(raw)} bytes)")
    if nal_type(raw) != NAL_SPS:
        raise H265Error(f"not an SPS NAL unit (type {nal_type(raw)})")
    layer_id = ((raw[0] & 1) << 5) | (raw[1] >> 3)
    if layer_id:
        raise H265Error(f"SPS for nuh_layer_id {layer_id} (multi-layer HEVC) not supported")
    r = _BitReader(unescape_rbsp(raw[2:]), H265Error, "SPS")
    r.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    if max_sub_layers_minus1 > 6:
        raise H265Error("SPS sps_max_sub_layers_minus1 7 out of range (max 6)")
    r.skip(1)  # sps_temporal_id_nesting_flag
    profile_idc, level_idc = _profile_tier_level(r, max_sub_layers_minus1)

    r.section = "picture size"
    r.ue_max(15, "sps_seq_parameter_set_id")
    chroma_format_idc = r.ue_max(3, "chroma_format_idc")
    separate_colour_plane = r.u(1) if chroma_format_idc == 3 else 0
    width = r.ue_max(_MAX_DIMENSION, "pic_width_in_luma_samples")
    height = r.ue_max(_MAX_DIMENSION, "pic_height_in_luma_samples")
    if width == 0 or height == 0:
        raise H265Error("SPS picture size is zero")
    r.section = "conformance window"
    if r.u(1):
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        sub_w = 2 if chroma_array_type in (1, 2) else 1
        sub_h = 2 if chroma_array_type == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
        if width <= 0 or height <= 0:
            raise H265Error("SPS conformance window exceeds the picture size")

    r.section = "coding parameters"
    r.ue_max(8, "bit_depth_luma_minus8")
    r.ue_max(8, "bit_depth_chroma_minus8")
    log2_max_poc_lsb = r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4") + 4
    sub_layer_ordering_info = r.u(1)
    first = 0 if sub_layer_ordering_info else max_sub_layers_minus1
    for _ in range(first, max_sub_layers_minus1 + 1):
        r.ue_max(15, "sps_max_dec_pic_buffering_minus1")
        r.ue_max(15, "sps_max_num_reorder_pics")
        r.ue()  # sps_max_latency_increase_plus1
    for _ in range(6):
        # log2 coding / transform block sizes, transform hierarchy depths
        r.ue_max(31, "block size parameter")
    if r.u(1):  # scaling_list_enabled_flag
        if r.u(1):  # sps_scaling_list_data_present_flag
            _scaling_list_data(r)
    r.section = "coding parameters"
    r.skip(2)  # amp_enabled_flag, sample_adaptive_offset_enabled_flag
    if r.u(1):  # pcm_enabled_flag
        r.skip(8)
        r.ue()
        r.ue()
        r.skip(1)
    _st_ref_pic_sets(r, r.ue_max(64, "num_short_term_ref_pic_sets"))
    r.section = "long-term reference pictures"
    if r.u(1):  # long_term_ref_pics_present_flag
        for _ in range(r.ue_max(32, "num_long_term_ref_pics_sps")):
            r.skip(log2_max_poc_lsb + 1)
    r.skip(2)  # sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag

    fps: float | None = None
    r.section = "VUI"
    if r.u(1):  # vui_parameters_present_flag
        skip_vui_prefix(r)
        r.skip(3)  # neutral_chroma_indication, field_seq, frame_field_info_present
        if r.u(1):  # default_display_window_flag
            for _ in range(4):
                r.ue()
        if r.u(1):  # vui_timing_info_present_flag
            num_units_in_tick = r.u(32)
            time_scale = r.u(32)
            if num_units_in_tick and time_scale:
                fps = time_scale / num_units_in_tick
    return VideoInfo("H265", width, height, fps, profile_idc, level_idc)


# --------------------------------------------------------------------------- SDP


def sprop_fmtp(vps: bytes, sps: bytes, pps: bytes) -> str:
    """``sprop-vps=...;sprop-sps=...;sprop-pps=...`` for an H.265 ``a=fmtp`` line."""
    return ";".join(
        f"sprop-{name}={base64.b64encode(bytes(value)).decode('ascii')}"
        for name, value in (("vps", vps), ("sps", sps), ("pps", pps))
    )


def parse_sprop(fmtp: Mapping[str, str]) -> list[bytes]:
    """Parameter sets (VPS, then SPS, then PPS) from parsed ``a=fmtp`` parameters."""
    lowered = {key.lower(): value for key, value in fmtp.items()}
    out: list[bytes] = []
    for name in ("sprop-vps", "sprop-sps", "sprop-pps"):
        for part in lowered.get(name, "").split(","):
            if part.strip():
                nal = _b64decode(part, H265Error, name)
                if nal:
                    out.append(nal)
    return out


# --------------------------------------------------------------------------- RFC 7798


def _single_header(nal: bytes | memoryview, new_type: int) -> tuple[int, int]:
    return (nal[0] & 0x81) | (new_type << 1), nal[1]


def packetize(nals: Sequence[bytes | memoryview], mtu: int = 1400) -> list[bytes]:
    """RTP payloads for one access unit (RFC 7798, no DONL).

    Single NAL unit packets, Aggregation Packets (type 48) for consecutive small units
    and Fragmentation Units (type 49) for units over ``mtu``. No payload exceeds ``mtu``.
    Units shorter than the 2-byte NAL header are skipped.
    """
    if mtu < 4:
        raise H265Error(f"mtu {mtu} too small for fragmentation units")
    return _packetize(nals, mtu, 2, _ap_header, _fu_header)


def _ap_header(group: Sequence[bytes | memoryview]) -> bytes:
    forbidden = 0
    layer = 63
    tid = 7
    for n in group:
        forbidden |= n[0] & 0x80
        layer = min(layer, ((n[0] & 1) << 5) | (n[1] >> 3))
        tid = min(tid, n[1] & 7)
    return bytes((forbidden | (AP << 1) | (layer >> 5), ((layer & 0x1F) << 3) | tid))


def _fu_header(nal: bytes | memoryview) -> tuple[bytes, int]:
    return bytes(_single_header(nal, FU)), nal_type(nal)


def _fu_nal_header(p: bytes | memoryview, fu_type: int) -> bytes:
    return bytes(_single_header(p, fu_type))


def depacketize(payloads: Iterable[bytes | memoryview | None]) -> list[bytes]:
    """NAL units of one access unit from its RTP payloads, in order.

    Handles single NAL unit packets, APs and FUs (without DONL). ``None`` or an empty
    payload marks a lost packet. Broken FU sequences and PACI packets are dropped;
    malformed APs lose their broken tail. Never raises on bad data.
    """
    return _depacketize(payloads, 2, nal_type, 0, AP - 1, AP, FU, 0x3F, _fu_nal_header)


def payload_is_keyframe(payload: bytes | memoryview) -> bool:
    """True if an RTP payload is, contains or starts an IRAP picture (16..21), VPS or SPS."""
    n = len(payload)
    if n < 2:
        return False
    t = (payload[0] >> 1) & 0x3F
    if NAL_IRAP_FIRST <= t <= NAL_IRAP_LAST or t == NAL_VPS or t == NAL_SPS:
        return True
    if t == FU:
        if n < 3:
            return False
        h = payload[2]
        t = h & 0x3F
        return bool(h & 0x80) and (
            NAL_IRAP_FIRST <= t <= NAL_IRAP_LAST or t == NAL_VPS or t == NAL_SPS
        )
    if t == AP:
        pos = 2
        while pos + 2 < n:
            size = (payload[pos] << 8) | payload[pos + 1]
            if size == 0:
                return False
            t = (payload[pos + 2] >> 1) & 0x3F
            if NAL_IRAP_FIRST <= t <= NAL_IRAP_LAST or t == NAL_VPS or t == NAL_SPS:
                return True
            pos += 2 + size
    return False
