"""Tests for onvifcam.media.rtcp (RFC 3550 SR/RR/SDES/BYE)."""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onvifcam.media import rtcp
from onvifcam.media.rtcp import (
    Bye,
    Other,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    SenderReport,
)

NTP_2024 = (3_913_056_000 << 32) | 0x80000000  # 2024-01-01T00:00:00.5Z


def test_parse_hand_built_compound_sr_sdes() -> None:
    # SR with one report block, then SDES CNAME "cam", as a camera would send them
    block = struct.pack("!IIIIII", 0x11111111, (25 << 24) | 0xFFFFFE, 70000, 12, 0xAABBCCDD, 65536)
    sr = struct.pack("!BBH", 0x81, 200, 12) + struct.pack(
        "!IQIII", 0xDEADBEEF, NTP_2024, 123456, 10, 14000
    )
    sdes = struct.pack("!BBHIBB", 0x81, 202, 3, 0xDEADBEEF, 1, 3) + b"cam" + b"\x00" * 3
    items = rtcp.parse_compound(sr + block + sdes)
    assert items == [
        SenderReport(
            0xDEADBEEF,
            NTP_2024,
            123456,
            10,
            14000,
            (ReportBlock(0x11111111, 25, -2, 70000, 12, 0xAABBCCDD, 65536),),
        ),
        Other(202, struct.pack("!IBB", 0xDEADBEEF, 1, 3) + b"cam\x00\x00\x00", 1),
    ]


def test_build_sender_report_with_cname() -> None:
    sr = SenderReport(0x01020304, NTP_2024, 90000, 5, 7000)
    data = rtcp.build_sender_report(sr, cname="onvifcam")
    assert data[:4] == b"\x80\xc8\x00\x06" and len(data) == 28 + 20
    sdes = data[28:]
    assert sdes[:4] == b"\x81\xca\x00\x04"
    assert sdes[4:] == b"\x01\x02\x03\x04\x01\x08onvifcam\x00\x00"
    assert len(data) % 4 == 0
    parsed = rtcp.parse_compound(data)
    assert parsed[0] == sr
    assert isinstance(parsed[1], Other) and parsed[1].pt == 202
    assert rtcp.build_sender_report(sr) == data[:28]


@pytest.mark.parametrize("cname", ["", "a", "ab", "abc", "abcd", "x" * 300, "caméra"])
def test_sdes_padding(cname: str) -> None:
    data = rtcp.build_sender_report(SenderReport(1, 2, 3, 4, 5), cname)
    assert len(data) % 4 == 0
    body = rtcp.parse_compound(data)[1].body
    length = body[5]
    assert body[6 : 6 + length] == cname.encode()[:255]
    assert body[6 + length] == 0


def test_sender_report_with_blocks_round_trip() -> None:
    blocks = (
        ReportBlock(7, 0, 0, 1, 2, 3, 4),
        ReportBlock(8, 255, -8388608, 0xFFFFFFFF, 99, 0, 0),
        ReportBlock(9, 1, 8388607, 5, 6, 7, 8),
    )
    sr = SenderReport(42, NTP_2024, 1, 2, 3, blocks)
    assert rtcp.parse_compound(rtcp.build_sender_report(sr)) == [sr]
    rr = rtcp.build_receiver_report(43, blocks, cname="reader")
    assert rtcp.parse_compound(rr)[0] == ReceiverReport(43, blocks)
    with pytest.raises(RtcpError, match="at most 31"):
        rtcp.build_receiver_report(1, blocks * 11)


def test_receiver_report_and_bye() -> None:
    rr = rtcp.build_receiver_report(0xCAFEBABE)
    assert rr == b"\x80\xc9\x00\x01\xca\xfe\xba\xbe"
    assert rtcp.parse_compound(rr) == [ReceiverReport(0xCAFEBABE, ())]
    bye = rtcp.build_bye(0xCAFEBABE)
    assert bye == b"\x81\xcb\x00\x01\xca\xfe\xba\xbe"
    assert rtcp.parse_compound(rr + bye) == [ReceiverReport(0xCAFEBABE), Bye((0xCAFEBABE,))]


def test_bye_with_reason_and_padding() -> None:
    body = struct.pack("!II", 1, 2) + b"\x04done" + b"\x00\x00\x00"
    bye = struct.pack("!BBH", 0x82, 203, len(body) // 4) + body
    assert rtcp.parse_compound(bye) == [Bye((1, 2), "done")]
    padded = struct.pack("!BBH", 0xA0, 201, 2) + struct.pack("!I", 5) + b"\x00\x00\x00\x04"
    assert rtcp.parse_compound(padded) == [ReceiverReport(5)]


def test_app_and_unknown_types_are_other() -> None:
    app = struct.pack("!BBHI", 0x83, 204, 2, 9) + b"ABCD"
    fb = struct.pack("!BBHII", 0x81, 206, 2, 1, 2)  # PSFB PLI
    assert rtcp.parse_compound(app + fb) == [
        Other(204, struct.pack("!I", 9) + b"ABCD", 3),
        Other(206, struct.pack("!II", 1, 2), 1),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x80\xc8\x00", "header truncated at offset 0"),
        (b"\x40\xc9\x00\x01\x00\x00\x00\x01", "version 1"),
        (b"\x80\xc9\x00\x05\x00\x00\x00\x01", "claims 24 bytes, overruns"),
        (b"\x80\xc8\x00\x01\x00\x00\x00\x01", "SR too short"),
        (b"\x81\xc9\x00\x01\x00\x00\x00\x01", "too short for 1 report blocks"),
        (b"\x80\xc9\x00\x00", "RR too short"),
        (b"\x82\xcb\x00\x01\x00\x00\x00\x01", "BYE too short for 2 SSRCs"),
        (b"\x81\xcb\x00\x02\x00\x00\x00\x01\x09abc", "reason overruns"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x00", "padding of 0 bytes"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x09", "padding of 9 bytes"),
        (rtcp.build_bye(1) + b"\x80", "header truncated at offset 8"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(RtcpError, match=message):
        rtcp.parse_compound(data)


@given(st.binary(max_size=120))
def test_parse_only_raises_rtcperror(data: bytes) -> None:
    for candidate in (data, b"\x80" + data, rtcp.build_receiver_report(1) + data):
        try:
            rtcp.parse_compound(memoryview(candidate))
        except RtcpError:
            pass


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
)
def test_sender_report_round_trip(ssrc: int, ntp: int, ts: int, packets: int, octets: int) -> None:
    sr = SenderReport(ssrc, ntp, ts, packets, octets)
    assert rtcp.parse_compound(rtcp.build_sender_report(sr, "c"))[0] == sr


def test_ntp_time() -> None:
    assert rtcp.ntp_from_unix(0.0) == 2_208_988_800 << 32
    assert rtcp.ntp_from_unix(1_704_067_200.5) == NTP_2024
    assert rtcp.unix_from_ntp(NTP_2024) == 1_704_067_200.5
    t = 1_712_345_678.123456
    assert abs(rtcp.unix_from_ntp(rtcp.ntp_from_unix(t)) - t) < 1e-6
    before = time.time()
    now = rtcp.ntp_now()
    after = time.time()
    assert before - 1e-6 <= rtcp.unix_from_ntp(now) <= after + 1e-6
    assert rtcp.ntp_middle32(NTP_2024) == ((3_913_056_000 & 0xFFFF) << 16) | 0x8000
