"""Tests for onvifcam.media.h265 against real libx265 output (via PyAV)."""

from __future__ import annotations

import base64
from fractions import Fraction
from functools import partial

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onvifcam.media import h264, h265
from onvifcam.media.h265 import H265Error, VideoInfo
from tests.unit import videotools
from tests.unit.videotools import BitWriter, escape, from_bits, to_bits

# --------------------------------------------------------------------------- helpers


encode = partial(videotools.encode, "libx265")
# videotools.encode caches its output per process: with the file on one xdist worker, each
# stream is encoded once, not once per worker
pytestmark = pytest.mark.xdist_group("tests/unit/test_h265.py")


def decode(annexb: bytes) -> tuple[list[av.VideoFrame], av.CodecContext]:
    return videotools.decode("hevc", annexb)


def nal_of_type(packets: tuple[bytes, ...], nal_type: int) -> bytes:
    return next(n for n in h265.split_annexb(packets[0]) if h265.nal_type(n) == nal_type)


# --------------------------------------------------------------------------- config


def test_reuses_h264_framing_helpers() -> None:
    assert h265.split_annexb is h264.split_annexb
    assert h265.nals_from_avcc is h264.nals_from_avcc
    assert h265.to_annexb is h264.to_annexb
    assert h265.VideoInfo is h264.VideoInfo


def test_parse_hevc_config_from_ffmpeg_mp4() -> None:
    record, extradata = videotools.mp4_config_record("libx265")
    cfg = h265.parse_hevc_config(record)
    nals = h265.split_annexb(extradata)
    assert cfg.vps == [n for n in nals if h265.nal_type(n) == 32]
    assert cfg.sps == [n for n in nals if h265.nal_type(n) == 33]
    assert cfg.pps == [n for n in nals if h265.nal_type(n) == 34]
    assert cfg.length_size == 4
    assert h265.parse_sps(cfg.sps[0]).height == 240
    for cut in range(len(record) - len(cfg.pps[0])):
        with pytest.raises(H265Error):
            h265.parse_hevc_config(record[:cut])
    with pytest.raises(H265Error, match="version 2"):
        h265.parse_hevc_config(b"\x02" + record[1:])


@given(st.binary(max_size=120))
def test_parse_hevc_config_only_raises_h265error(data: bytes) -> None:
    for record in (data, b"\x01" + bytes(21) + data):
        try:
            h265.parse_hevc_config(record)
        except H265Error:
            pass


# --------------------------------------------------------------------------- SPS


SPS_CASES = [
    # (width, height, pix_fmt, rate, params, profile, level, fps)
    (1920, 1080, "yuv420p", Fraction(25), "keyint=10", 1, 120, 25.0),
    (640, 360, "yuv420p", Fraction(25), "keyint=10", 1, 63, 25.0),
    (642, 362, "yuv420p", Fraction(30000, 1001), "keyint=10", 1, 63, 30000 / 1001),
    (642, 362, "yuv422p", Fraction(25), "keyint=10", 4, 63, 25.0),
    (646, 366, "yuv444p", Fraction(25), "keyint=10", 4, 63, 25.0),
    (322, 242, "gray", Fraction(25), "keyint=10", 4, 60, 25.0),
    (640, 360, "yuv420p10le", Fraction(60), "keyint=10:vui-timing-info=0", 2, 90, None),
    (
        640,
        360,
        "yuv420p",
        Fraction(25),
        "temporal-layers=3:bframes=4:scaling-list=default",
        1,
        63,
        25.0,
    ),
    (
        1280,
        720,
        "yuv420p",
        Fraction(50),
        "sar=12:range=full:colorprim=bt709:transfer=bt709:colormatrix=bt709:chromaloc=2:"
        "display-window=8,0,8,0:overscan=show:hrd=1:vbv-bufsize=1000:vbv-maxrate=1000",
        1,
        120,
        50.0,
    ),
]


@pytest.mark.parametrize(
    ("width", "height", "pix_fmt", "rate", "params", "profile", "level", "fps"), SPS_CASES
)
def test_parse_sps_real_encoder_output(
    width: int,
    height: int,
    pix_fmt: str,
    rate: Fraction,
    params: str,
    profile: int,
    level: int,
    fps: float | None,
) -> None:
    packets = encode(width, height, 2, pix_fmt, rate, params)
    info = h265.parse_sps(nal_of_type(packets, 33))
    assert info == VideoInfo("H265", width, height, fps, profile, level)
    frames, _ = decode(b"".join(packets))
    assert (frames[0].width, frames[0].height) == (width, height)


def test_parse_sps_sub_layers_are_present() -> None:
    sps = nal_of_type(encode(640, 360, 2, params="temporal-layers=3:bframes=4"), 33)
    assert (sps[2] >> 1) & 7 == 2  # sps_max_sub_layers_minus1


def splice_rps(sps: bytes, monkeypatch: pytest.MonkeyPatch, rps: BitWriter) -> bytes:
    """Replace the (empty) short-term RPS list in a real SPS with ``rps`` bits."""
    seen: dict[str, int] = {}
    original = h265._st_ref_pic_sets

    def spy(r: h264._BitReader, count: int) -> None:
        seen["pos"], seen["count"] = r.pos, count
        original(r, count)

    with monkeypatch.context() as m:
        m.setattr(h265, "_st_ref_pic_sets", spy)
        h265.parse_sps(sps)
    assert seen["count"] == 0
    bits = to_bits(h264.unescape_rbsp(sps[2:]))
    stop = len(bits) - 1 - bits[::-1].index(1)
    body = bits[:stop]
    new = body[: seen["pos"] - 1] + rps.bits + body[seen["pos"] :] + [1]
    return sps[:2] + escape(from_bits(new))


def test_parse_sps_with_short_term_ref_pic_sets_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rewrite x265's SPS to carry 4 RPSs (3 inter-predicted); FFmpeg must still decode."""
    rps = BitWriter()
    rps.ue(4)  # num_short_term_ref_pic_sets
    # RPS 0: explicit, S0 = [-1, -3], S1 = [+2]
    rps.ue(2)
    rps.ue(1)
    rps.ue(0)
    rps.u(1, 1)
    rps.ue(1)
    rps.u(1, 0)
    rps.ue(1)
    rps.u(1, 1)
    # RPS 1: predicted from RPS 0 with deltaRps = -1 -> S0 = [-1, -2, -4], S1 = [+1]
    rps.u(1, 1)  # inter_ref_pic_set_prediction_flag
    rps.u(1, 1)  # delta_rps_sign
    rps.ue(0)  # abs_delta_rps_minus1
    for _ in range(4):
        rps.u(1, 1)  # used_by_curr_pic_flag
    # RPS 2: predicted from RPS 1 with deltaRps = +2; skip two refs via use_delta_flag = 0
    rps.u(1, 1)
    rps.u(1, 0)
    rps.ue(1)
    for used, use_delta in ((1, None), (0, 0), (0, 1), (1, None), (0, 0)):
        rps.u(1, used)
        if use_delta is not None:
            rps.u(1, use_delta)
    # -> S0 = [-2], S1 = [+1, +3]. RPS 3: predicted from RPS 2, so its flag count
    # (NumDeltaPocs[2] + 1 = 4) checks the derivation above.
    # deltaRps = -3: dPoc -5, -2, 0 (must be unused), -3
    rps.u(1, 1)
    rps.u(1, 1)
    rps.ue(2)
    for used, use_delta in ((1, None), (0, 1), (0, 0), (1, None)):
        rps.u(1, used)
        if use_delta is not None:
            rps.u(1, use_delta)
    packets = encode(320, 240, 5, rate=Fraction(30000, 1001), params="keyint=1")
    sps = nal_of_type(packets, 33)
    new_sps = splice_rps(sps, monkeypatch, rps)
    assert new_sps != sps
    # the parser consumes exactly the RPS bits written (count excluded) ...
    spans: list[int] = []
    original = h265._st_ref_pic_sets

    def spy(r: h264._BitReader, count: int) -> None:
        start = r.pos
        original(r, count)
        spans.append(r.pos - start)

    with monkeypatch.context() as m:
        m.setattr(h265, "_st_ref_pic_sets", spy)
        info = h265.parse_sps(new_sps)
    count_bits = BitWriter()
    count_bits.ue(4)
    assert spans == [len(rps.bits) - len(count_bits.bits)]
    # ... and reads the VUI behind them
    before = h265.parse_sps(sps)
    assert info == VideoInfo("H265", 320, 240, 30000 / 1001, before.profile, before.level)
    stream = b"".join(
        h265.to_annexb(new_sps if n == sps else n for n in h265.split_annexb(p)) for p in packets
    )
    frames, ctx = decode(stream)
    assert len(frames) == 5
    assert ctx.framerate == Fraction(30000, 1001)  # FFmpeg read the same VUI after the RPSs


def test_parse_sps_truncation_only_raises_h265error() -> None:
    sps = nal_of_type(encode(1920, 1080, 2), 33)
    full = h265.parse_sps(sps)
    messages = set()
    for cut in range(len(sps)):
        try:
            assert h265.parse_sps(sps[:cut]) == full
        except H265Error as exc:
            messages.add(str(exc))
    assert "SPS truncated in VUI" in messages
    assert "SPS truncated in profile_tier_level" in messages
    assert "SPS shorter than its 2-byte NAL header" in messages


def test_parse_sps_errors() -> None:
    with pytest.raises(H265Error, match="not an SPS NAL unit \\(type 34\\)"):
        h265.parse_sps(b"\x44\x01\xc1")
    with pytest.raises(H265Error, match="nuh_layer_id 1"):
        h265.parse_sps(b"\x42\x09\x01")
    w = BitWriter()
    w.u(8, 0x01)  # vps id 0, max_sub_layers_minus1 0, nesting 1
    w.u(96, 0)
    w.ue(0)
    w.ue(5)
    with pytest.raises(H265Error, match="chroma_format_idc 5 out of range"):
        h265.parse_sps(b"\x42\x01" + from_bits([*w.bits, 1]))
    w = BitWriter()
    w.u(8, 0x01)
    w.u(96, 0)
    for v in (0, 1, 16, 16):
        w.ue(v)
    w.u(1, 1)
    for v in (0, 0, 0, 8):
        w.ue(v)
    with pytest.raises(H265Error, match="conformance window exceeds"):
        h265.parse_sps(b"\x42\x01" + from_bits([*w.bits, 1]))


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_parse_sps_only_raises_h265error(data: bytes) -> None:
    for nal in (data, b"\x42\x01" + data, b"\x42\x01\x01\x01\x60" + data):
        try:
            h265.parse_sps(nal)
        except H265Error:
            pass


# --------------------------------------------------------------------------- SDP


def test_sprop_fmtp_round_trip() -> None:
    packets = encode(640, 360, 2)
    vps, sps, pps = (nal_of_type(packets, t) for t in (32, 33, 34))
    value = h265.sprop_fmtp(vps, sps, pps)
    b64 = [base64.b64encode(n).decode() for n in (vps, sps, pps)]
    assert value == f"sprop-vps={b64[0]};sprop-sps={b64[1]};sprop-pps={b64[2]}"
    fmtp = dict(item.split("=", 1) for item in value.split(";"))
    assert h265.parse_sprop(fmtp) == [vps, sps, pps]
    assert h265.parse_sprop({"SPROP-SPS": b64[1].rstrip("=")}) == [sps]
    assert h265.parse_sprop({}) == []
    with pytest.raises(H265Error, match="invalid base64 in sprop-pps"):
        h265.parse_sprop({"sprop-pps": "%%%"})


# --------------------------------------------------------------------------- RFC 7798


def test_packetize_single_ap_and_fu_layout() -> None:
    vps = b"\x40\x01" + b"\x0c" * 20
    sps = b"\x42\x01" + b"\x01" * 30
    pps = b"\x44\x01" + b"\xc1" * 5
    idr = b"\x26\x01" + bytes(range(256)) * 8  # IDR_W_RADL, TID 1
    payloads = h265.packetize([vps, sps, pps, idr], mtu=1000)
    ap = payloads[0]
    assert ap[:2] == b"\x60\x01"  # type 48, layer 0, TID 1
    assert ap[2:] == b"".join(len(n).to_bytes(2, "big") + n for n in (vps, sps, pps))
    fus = payloads[1:]
    assert len(fus) == 3 and all(len(p) <= 1000 for p in fus)
    assert [p[:2] for p in fus] == [b"\x62\x01"] * 3  # type 49
    assert [p[2] for p in fus] == [0x80 | 19, 19, 0x40 | 19]
    assert b"".join(p[3:] for p in fus) == idr[2:]
    # AP header takes the lowest TID and layer id of its units
    ap = h265.packetize([b"\x02\x03\xaa", b"\x03\x0a\xbb"], mtu=100)[0]
    assert ap[:2] == bytes((48 << 1, (0 << 3) | 2))
    assert h265.packetize([b"\x02", b"\x02\x01\x00"]) == [b"\x02\x01\x00"]
    with pytest.raises(H265Error):
        h265.packetize([b"\x02\x01"], mtu=3)


@pytest.mark.parametrize("mtu", [100, 1400, 9000])
def test_packetize_depacketize_round_trip_decodes(mtu: int) -> None:
    packets = encode(640, 360, 12, noise=True)
    rebuilt = []
    kinds: set[int] = set()
    for packet in packets:
        nals = h265.split_annexb(packet)
        payloads = h265.packetize(nals, mtu)
        assert all(len(p) <= mtu for p in payloads)
        kinds |= {h265.nal_type(p) for p in payloads}
        assert h265.depacketize(payloads) == nals
        assert h265.depacketize([memoryview(p) for p in payloads]) == nals
        rebuilt.append(h265.to_annexb(h265.depacketize(payloads)))
    assert {48, 49} <= kinds
    original, _ = decode(b"".join(packets))
    frames, _ = decode(b"".join(rebuilt))
    assert len(frames) == len(original) == 12
    assert np.array_equal(frames[-1].to_ndarray(), original[-1].to_ndarray())


def test_depacketize_drops_broken_fu() -> None:
    nal = b"\x26\x01" + bytes(range(200))
    fus = h265.packetize([nal], mtu=60)
    single = b"\x02\x01\x05"
    assert len(fus) == 4
    assert h265.depacketize(fus) == [nal]
    assert h265.depacketize(fus[1:]) == []
    assert h265.depacketize(fus[:-1]) == []
    assert h265.depacketize([*fus[:2], None, *fus[2:]]) == []
    assert h265.depacketize([*fus[:2], single, *fus[2:]]) == [single]
    assert h265.depacketize([b"\x62\x01"]) == []


def test_depacketize_ap_and_unsupported_types() -> None:
    ap = b"\x60\x01\x00\x03\x40\x01\x0c\x00\x02\x44\x01"
    assert h265.depacketize([ap]) == [b"\x40\x01\x0c", b"\x44\x01"]
    assert h265.depacketize([ap + b"\x00\x09\x26"]) == [b"\x40\x01\x0c", b"\x44\x01"]
    assert h265.depacketize([b"\x60\x01\x00\x01\x40"]) == []
    assert h265.depacketize([b"\x64\x01\x00\x00\x26\x01"]) == []  # PACI
    assert h265.depacketize([b"\x02"]) == []


@given(st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=10))
def test_depacketize_never_raises(payloads: list[bytes | None]) -> None:
    for nal in h265.depacketize(payloads):
        assert len(nal) >= 2


def test_payload_is_keyframe_on_real_stream() -> None:
    packets = encode(640, 360, 12, noise=True)
    keyframes = 0
    for packet in packets:
        nals = h265.split_annexb(packet)
        payloads = h265.packetize(nals, 1400)
        is_key = any(16 <= h265.nal_type(n) <= 21 for n in nals)
        flags = [h265.payload_is_keyframe(p) for p in payloads]
        if is_key:
            keyframes += 1
            assert flags[0] and h265.payload_is_keyframe(memoryview(payloads[0]))
        else:
            assert not any(flags)
    assert keyframes >= 2  # keyint=10 over 12 frames, plus any scene cut


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x26\x01\xaa", True),  # IDR_W_RADL
        (b"\x2a\x01\xaa", True),  # CRA
        (b"\x20\x01\xaa", True),  # BLA_W_LP
        (b"\x40\x01\x0c", True),  # VPS
        (b"\x42\x01\x01", True),  # SPS
        (b"\x44\x01\xc1", False),  # PPS
        (b"\x02\x01\xd0", False),  # TRAIL_R
        (b"\x62\x01\x93\x00", True),  # FU start of IDR_W_RADL
        (b"\x62\x01\x13\x00", False),  # FU middle
        (b"\x62\x01\x81\x00", False),  # FU start of TRAIL_R
        (b"\x62\x01", False),
        (b"\x60\x01\x00\x02\x46\x01\x00\x02\x42\x01", True),  # AP: AUD, SPS
        (b"\x60\x01\x00\x02\x46\x01\x00\x02\x44\x01", False),
        (b"\x60\x01\x00\x00\x42\x01", False),
        (b"\x26", False),
        (b"", False),
    ],
)
def test_payload_is_keyframe_cases(payload: bytes, expected: bool) -> None:
    assert h265.payload_is_keyframe(payload) is expected


@given(st.binary(max_size=40))
def test_payload_is_keyframe_never_raises(data: bytes) -> None:
    assert h265.payload_is_keyframe(data) in (True, False)
