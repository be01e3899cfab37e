"""Tests for onvifcam.media.h264 against real libx264 output (via PyAV)."""

from __future__ import annotations

import base64
from fractions import Fraction
from functools import partial

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onvifcam.media import h264
from onvifcam.media.h264 import H264Error, VideoInfo
from tests.unit import videotools
from tests.unit.videotools import BitWriter, escape

# --------------------------------------------------------------------------- helpers


encode = partial(videotools.encode, "libx264")
# videotools.encode caches its output per process: with the file on one xdist worker, each
# stream is encoded once, not once per worker
pytestmark = pytest.mark.xdist_group("tests/unit/test_h264.py")


def decode_frames(codec: str, annexb: bytes) -> list[av.VideoFrame]:
    return videotools.decode(codec, annexb)[0]


def nal_types(nals: list[bytes]) -> list[int]:
    return [n[0] & 0x1F for n in nals]


def first_sps(packets: tuple[bytes, ...]) -> bytes:
    return next(n for n in h264.split_annexb(packets[0]) if n[0] & 0x1F == 7)


# --------------------------------------------------------------------------- framing


def test_split_annexb_handles_3_and_4_byte_start_codes() -> None:
    data = b"\x00\x00\x00\x01\x67\x01\x02\x00\x00\x01\x68\x03\x00\x00\x00\x00\x01\x65\x04"
    assert h264.split_annexb(data) == [b"\x67\x01\x02", b"\x68\x03", b"\x65\x04"]


def test_split_annexb_ignores_leading_garbage_and_empty_units() -> None:
    data = b"\xff\xfe\x00\x00\x01\x00\x00\x01\x09\xf0\x00\x00\x00"
    assert h264.split_annexb(data) == [b"\x09\xf0"]
    assert h264.split_annexb(b"") == []
    assert h264.split_annexb(b"\x67\x42") == []
    assert h264.split_annexb(memoryview(b"\x00\x00\x01\x41")) == [b"\x41"]


def test_split_and_join_real_stream_round_trip() -> None:
    for packet in encode(640, 360):
        nals = h264.split_annexb(packet)
        assert nals and all(n for n in nals)
        assert h264.split_annexb(h264.to_annexb(nals)) == nals


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.sampled_from([1, 2, 3, 4]))
def test_avcc_round_trip(nals: list[bytes], length_size: int) -> None:
    limit = 1 << (8 * length_size)
    nals = [n[: limit - 1] for n in nals]
    data = b"".join(len(n).to_bytes(length_size, "big") + n for n in nals)
    assert h264.nals_from_avcc(data, length_size) == nals


def test_avcc_errors() -> None:
    with pytest.raises(H264Error, match="NAL length 10 at offset 0 overruns 6-byte buffer"):
        h264.nals_from_avcc(b"\x00\x00\x00\x0a\x65\x00")
    with pytest.raises(H264Error, match="truncated 4-byte NAL length"):
        h264.nals_from_avcc(b"\x00\x00\x00\x01\x65\x00\x00")
    with pytest.raises(H264Error, match="length size"):
        h264.nals_from_avcc(b"", 5)
    assert h264.nals_from_avcc(b"\x00\x00\x00\x00") == []


def mp4_avcc() -> tuple[bytes, bytes, bytes]:
    """An avcC box made by FFmpeg's MP4 muxer plus the Annex-B SPS/PPS of the same stream."""
    record, first = videotools.mp4_config_record("libx264")
    nals = h264.split_annexb(first)
    sps = next(n for n in nals if n[0] & 0x1F == 7)
    pps = next(n for n in nals if n[0] & 0x1F == 8)
    return record, sps, pps


def test_parse_avc_config_from_ffmpeg_mp4() -> None:
    record, sps, pps = mp4_avcc()
    cfg = h264.parse_avc_config(record)
    assert cfg.sps == [sps] and cfg.pps == [pps] and cfg.length_size == 4
    assert h264.parse_sps(cfg.sps[0]).width == 320
    for cut in range(len(record) - len(pps)):
        with pytest.raises(H264Error):
            h264.parse_avc_config(record[:cut])


def test_parse_avc_config_version_and_length_size() -> None:
    record = bytes([1, 0x42, 0xC0, 0x1E, 0xFD, 0xE1, 0, 2, 0x67, 0x42, 1, 0, 1, 0x68])
    cfg = h264.parse_avc_config(record)
    assert cfg == h264.AvcConfig(sps=[b"\x67\x42"], pps=[b"\x68"], length_size=2)
    with pytest.raises(H264Error, match="version 0"):
        h264.parse_avc_config(b"\x00" + record[1:])


# --------------------------------------------------------------------------- SPS


SPS_CASES = [
    # (width, height, pix_fmt, rate, params, profile, expected profile_idc, level)
    (1920, 1080, "yuv420p", Fraction(25), "keyint=10", None, 100, 40),
    (640, 360, "yuv420p", Fraction(25), "keyint=10", "baseline", 66, 30),
    (642, 362, "yuv422p", Fraction(25), "keyint=10", None, 122, 30),
    (640, 360, "yuv444p", Fraction(30), "keyint=10:cqm=jvt", None, 244, 30),
    (1920, 1080, "yuv420p", Fraction(30000, 1001), "interlaced=1:cqm=jvt", None, 100, 40),
    (1280, 720, "yuv444p", Fraction(50), "interlaced=1:cqm=jvt", None, 244, 32),
    (320, 240, "gray", Fraction(10), "keyint=10", None, 100, 12),
    (854, 480, "yuv420p10le", Fraction(24), "keyint=10", None, 110, 30),
]


@pytest.mark.parametrize(
    ("width", "height", "pix_fmt", "rate", "params", "profile", "pidc", "lvl"), SPS_CASES
)
def test_parse_sps_real_encoder_output(
    width: int,
    height: int,
    pix_fmt: str,
    rate: Fraction,
    params: str,
    profile: str | None,
    pidc: int,
    lvl: int,
) -> None:
    packets = encode(width, height, 2, pix_fmt, rate, params, profile=profile)
    info = h264.parse_sps(first_sps(packets))
    assert info == VideoInfo("H264", width, height, pytest.approx(float(rate)), pidc, lvl)
    decoded = decode_frames("h264", b"".join(packets))
    assert (decoded[0].width, decoded[0].height) == (width, height)


def test_parse_sps_handles_emulation_prevention() -> None:
    sps = first_sps(encode(640, 360, 2))
    assert b"\x00\x00\x03" in sps  # num_units_in_tick = 1 needs escaping
    assert h264.parse_sps(memoryview(sps)).fps == 25.0


def test_parse_sps_truncation_only_raises_h264error() -> None:
    sps = first_sps(encode(1920, 1080, 2))
    full = h264.parse_sps(sps)
    messages = set()
    for cut in range(len(sps)):
        try:
            assert h264.parse_sps(sps[:cut]) == full
        except H264Error as exc:
            messages.add(str(exc))
    assert "SPS truncated in VUI" in messages
    assert "SPS truncated in profile" in messages


def synthetic_baseline_sps() -> bytes:
    """Baseline SPS with POC type 1, cropping and a full VUI up to timing info."""
    w = BitWriter()
    w.u(8, 66)
    w.u(8, 0xC0)
    w.u(8, 31)
    w.ue(0)  # sps id
    w.ue(0)  # log2_max_frame_num_minus4
    w.ue(1)  # pic_order_cnt_type
    w.u(1, 0)
    w.se(-2)
    w.se(1)
    w.ue(2)
    w.se(3)
    w.se(-4)
    w.ue(2)  # max_num_ref_frames
    w.u(1, 0)
    w.ue(79)  # 1280
    w.ue(44)  # 720
    w.u(1, 1)  # frame_mbs_only
    w.u(1, 1)
    w.u(1, 1)  # cropping
    for v in (0, 2, 1, 3):
        w.ue(v)
    w.u(1, 1)  # VUI
    w.u(1, 1)
    w.u(8, 255)
    w.u(16, 4)
    w.u(16, 3)
    w.u(1, 1)
    w.u(1, 1)
    w.u(1, 1)
    w.u(3, 5)
    w.u(1, 0)
    w.u(1, 1)
    w.u(24, 0x010101)
    w.u(1, 1)
    w.ue(1)
    w.ue(1)
    w.u(1, 1)  # timing
    w.u(32, 1001)
    w.u(32, 60000)
    w.u(1, 1)
    w.u(5, 0)  # hrd flags, pic_struct, bitstream_restriction
    return b"\x67" + escape(w.rbsp())


def synthetic_444_sps() -> bytes:
    """High 4:4:4 SPS: separate colour planes, 12 scaling lists, field coding, no VUI."""
    w = BitWriter()
    w.u(8, 244)
    w.u(8, 0)
    w.u(8, 51)
    w.ue(3)
    w.ue(3)  # chroma_format_idc
    w.u(1, 1)  # separate_colour_plane_flag
    w.ue(2)
    w.ue(2)
    w.u(1, 0)
    w.u(1, 1)  # seq_scaling_matrix_present_flag
    for i in range(12):
        present = i in (0, 3, 6, 11)
        w.u(1, int(present))
        if not present:
            continue
        if i == 0:
            w.se(5)
            w.se(-13)  # next scale 0: list ends early
        else:
            for j in range(16 if i < 6 else 64):
                w.se(1 if i != 11 else (-1) ** j * 100)
    w.ue(4)  # log2_max_frame_num_minus4
    w.ue(2)  # poc type 2
    w.ue(4)
    w.u(1, 1)
    w.ue(19)  # 320 wide
    w.ue(9)  # 10 map units -> 320 rows in field mode
    w.u(1, 0)  # frame_mbs_only_flag
    w.u(1, 1)  # mb_adaptive_frame_field_flag
    w.u(1, 1)
    w.u(1, 1)
    for v in (0, 1, 0, 2):
        w.ue(v)
    w.u(1, 0)  # no VUI
    return b"\x67" + escape(w.rbsp())


def test_parse_sps_synthetic_poc_type_1_and_full_vui() -> None:
    info = h264.parse_sps(synthetic_baseline_sps())
    assert info == VideoInfo("H264", 1276, 712, pytest.approx(29.97, abs=1e-3), 66, 31)
    assert h264.profile_level_id(synthetic_baseline_sps()) == "42c01f"


def test_parse_sps_synthetic_separate_planes_scaling_lists_fields() -> None:
    assert h264.parse_sps(synthetic_444_sps()) == VideoInfo("H264", 319, 316, None, 244, 51)


def test_parse_sps_errors() -> None:
    with pytest.raises(H264Error, match="not an SPS NAL unit \\(type 8\\)"):
        h264.parse_sps(b"\x68\xce\x38\x80")
    with pytest.raises(H264Error, match="empty"):
        h264.parse_sps(b"")
    with pytest.raises(H264Error, match="chroma_format_idc 7 out of range"):
        w = BitWriter()
        w.u(24, 0x640028)
        w.ue(0)
        w.ue(7)
        h264.parse_sps(b"\x67" + w.rbsp())
    with pytest.raises(H264Error, match="exp-Golomb"):
        h264.parse_sps(b"\x67\x64\x00\x28" + b"\x00\x00\x03" * 8 + b"\x01")
    with pytest.raises(H264Error, match="cropping exceeds"):
        w = BitWriter()
        w.u(24, 0x42C01E)
        for v in (0, 0, 2, 1):
            w.ue(v)
        w.u(1, 0)
        w.ue(0)
        w.ue(0)
        w.u(3, 0b111)
        for v in (0, 0, 0, 8):
            w.ue(v)
        w.u(1, 0)
        h264.parse_sps(b"\x67" + w.rbsp())


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_parse_sps_only_raises_h264error(data: bytes) -> None:
    for nal in (data, b"\x67" + data, b"\x67\x64\x00\x1f" + data):
        try:
            h264.parse_sps(nal)
        except H264Error:
            pass


@given(st.binary(max_size=120))
def test_parse_avc_config_only_raises_h264error(data: bytes) -> None:
    for record in (data, b"\x01" + data):
        try:
            h264.parse_avc_config(record)
        except H264Error:
            pass


@given(st.binary(max_size=60), st.integers(0, 6))
def test_nals_from_avcc_only_raises_h264error(data: bytes, length_size: int) -> None:
    try:
        h264.nals_from_avcc(data, length_size)
    except H264Error:
        pass


def test_profile_level_id() -> None:
    assert h264.profile_level_id(first_sps(encode(1920, 1080, 2))) == "640028"
    with pytest.raises(H264Error):
        h264.profile_level_id(b"\x68\x42\xc0\x1e")
    with pytest.raises(H264Error):
        h264.profile_level_id(b"\x67\x42")


def test_sprop_parameter_sets_round_trip() -> None:
    nals = h264.split_annexb(encode(640, 360, 2)[0])
    sps, pps = nals[0], nals[1]
    value = h264.sprop_parameter_sets(sps, pps)
    assert value == f"{base64.b64encode(sps).decode()},{base64.b64encode(pps).decode()}"
    assert h264.parse_sprop_parameter_sets(value) == [sps, pps]
    unpadded = ",".join(part.rstrip("=") for part in value.split(",")) + ", "
    assert h264.parse_sprop_parameter_sets(unpadded) == [sps, pps]
    with pytest.raises(H264Error, match="invalid base64 in sprop-parameter-sets"):
        h264.parse_sprop_parameter_sets("Z0IA!!,aM4=")


# --------------------------------------------------------------------------- RFC 6184


def test_packetize_single_stap_a_and_fu_a_layout() -> None:
    sps, pps, sei = b"\x67" + b"\x01" * 10, b"\x68" + b"\x02" * 4, b"\x06" + b"\x03" * 5
    idr = b"\x65" + bytes(range(256)) * 10
    payloads = h264.packetize([sps, pps, sei, idr], mtu=1000)
    stap = payloads[0]
    assert stap[0] == 0x78  # NRI 3 from the SPS, type 24
    assert stap == b"\x78" + b"".join(len(n).to_bytes(2, "big") + n for n in (sps, pps, sei))
    fus = payloads[1:]
    assert len(fus) == 3 and all(len(p) <= 1000 for p in fus)
    assert [p[0] for p in fus] == [0x7C] * 3  # NRI 3, type 28
    assert [p[1] for p in fus] == [0x85, 0x05, 0x45]
    assert b"".join(p[2:] for p in fus) == idr[1:]
    assert h264.packetize([b"\x41\x9a"]) == [b"\x41\x9a"]
    assert h264.packetize([b"", b"\x09\xf0"]) == [b"\x09\xf0"]
    assert h264.packetize([]) == []
    with pytest.raises(H264Error):
        h264.packetize([b"\x41"], mtu=2)


def test_packetize_aggregates_only_when_it_fits() -> None:
    a, b, c = b"\x41" + b"a" * 500, b"\x41" + b"b" * 500, b"\x41" + b"c" * 500
    payloads = h264.packetize([a, b, c], mtu=1100)
    assert len(payloads) == 2
    assert payloads[0][0] & 0x1F == 24 and payloads[1] == c
    assert h264.packetize([a, b, c], mtu=1006) == [a, b, c]
    assert len(h264.packetize([a, b, c], mtu=1007)) == 2


@pytest.mark.parametrize("mtu", [100, 576, 1400, 9000])
def test_packetize_depacketize_round_trip_decodes(mtu: int) -> None:
    packets = encode(640, 360, 12, noise=True)
    rebuilt = []
    fu_a = stap_a = 0
    for packet in packets:
        nals = h264.split_annexb(packet)
        payloads = h264.packetize(nals, mtu)
        assert all(len(p) <= mtu for p in payloads)
        fu_a += sum(p[0] & 0x1F == 28 for p in payloads)
        stap_a += sum(p[0] & 0x1F == 24 for p in payloads)
        assert h264.depacketize(payloads) == nals
        assert h264.depacketize([memoryview(p) for p in payloads]) == nals
        rebuilt.append(h264.to_annexb(h264.depacketize(payloads)))
    assert fu_a and stap_a
    original = decode_frames("h264", b"".join(packets))
    frames = decode_frames("h264", b"".join(rebuilt))
    assert len(frames) == len(original) == 12
    assert np.array_equal(frames[-1].to_ndarray(), original[-1].to_ndarray())


def test_depacketize_drops_broken_fu_a() -> None:
    nal = b"\x65" + bytes(range(200))
    fus = h264.packetize([nal], mtu=60)
    single = b"\x41\x01\x02"
    assert len(fus) == 4
    assert h264.depacketize(fus) == [nal]
    assert h264.depacketize(fus[1:]) == []  # missing start
    assert h264.depacketize(fus[:-1]) == []  # missing end
    assert h264.depacketize([*fus[:2], None, *fus[2:]]) == []  # loss in the middle
    assert h264.depacketize([*fus[:2], b"", *fus[2:]]) == []
    assert h264.depacketize([*fus[:2], single, *fus[2:]]) == [single]
    assert h264.depacketize([fus[0], *fus]) == [nal]  # restarted sequence
    other = bytearray(fus[1])
    other[1] = (other[1] & 0xE0) | 1  # type change mid-sequence
    assert h264.depacketize([fus[0], bytes(other), *fus[2:]]) == []
    assert h264.depacketize([b"\x7c"]) == []


def test_depacketize_stap_a_and_unsupported_types() -> None:
    stap = b"\x78\x00\x02\x67\x42\x00\x01\x68"
    assert h264.depacketize([stap]) == [b"\x67\x42", b"\x68"]
    assert h264.depacketize([stap + b"\x00\x09\x65"]) == [b"\x67\x42", b"\x68"]  # broken tail
    assert h264.depacketize([b"\x78\x00\x00\x00\x01\x68"]) == []
    assert h264.depacketize([b"\x79\x00\x00\x00\x01\x68"]) == []  # STAP-B
    assert h264.depacketize([b"\x7d\x85\x00\x00\x01"]) == []  # FU-B
    assert h264.depacketize([b"\x00\x01", b"\x1e\x01"]) == []


@given(st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=10))
def test_depacketize_never_raises(payloads: list[bytes | None]) -> None:
    for nal in h264.depacketize(payloads):
        assert nal


def test_payload_is_keyframe_on_real_stream() -> None:
    packets = encode(640, 360, 12, noise=True)
    keyframes = 0
    for packet in packets:
        nals = h264.split_annexb(packet)
        payloads = h264.packetize(nals, 1400)
        is_key = 5 in nal_types(nals)
        flags = [h264.payload_is_keyframe(p) for p in payloads]
        if is_key:
            keyframes += 1
            assert flags[0]
            assert h264.payload_is_keyframe(memoryview(payloads[0]))
        else:
            assert not any(flags)
    assert keyframes == 2  # keyint=10 over 12 frames


def test_payload_is_keyframe_cases() -> None:
    assert h264.payload_is_keyframe(b"\x65\x88")
    assert h264.payload_is_keyframe(b"\x67\x42")
    assert not h264.payload_is_keyframe(b"\x68\xce")
    assert not h264.payload_is_keyframe(b"\x41\x9a")
    assert not h264.payload_is_keyframe(b"")
    assert h264.payload_is_keyframe(b"\x7c\x85\x00")  # FU-A start of IDR
    assert not h264.payload_is_keyframe(b"\x7c\x05\x00")  # FU-A middle of IDR
    assert not h264.payload_is_keyframe(b"\x7c\x45\x00")  # FU-A end of IDR
    assert not h264.payload_is_keyframe(b"\x5c\x81\x00")  # FU-A start of non-IDR
    assert not h264.payload_is_keyframe(b"\x7c")
    assert h264.payload_is_keyframe(b"\x78\x00\x01\x09\x00\x02\x67\x42")  # AUD + SPS
    assert not h264.payload_is_keyframe(b"\x78\x00\x01\x09\x00\x02\x06\x05")
    assert not h264.payload_is_keyframe(b"\x78\x00\x00\x00\x02\x67\x42")
    assert not h264.payload_is_keyframe(b"\x78\x00\x05\x09")


@given(st.binary(max_size=40))
def test_payload_is_keyframe_never_raises(data: bytes) -> None:
    assert h264.payload_is_keyframe(data) in (True, False)
