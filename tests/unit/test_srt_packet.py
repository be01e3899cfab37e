"""SRT packet codec: headers, handshake CIF and extensions, loss lists; fuzzed."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onvifcam.srt import packet
from onvifcam.srt.packet import (
    MAX_DATAGRAM,
    ControlPacket,
    ControlType,
    DataPacket,
    ExtType,
    Handshake,
    HsExt,
    HsType,
    PacketError,
    build_ack,
    build_control,
    build_data,
    decode_loss_list,
    decode_words,
    encode_loss_list,
    encode_words,
    parse,
    peer_ip_field,
    seq_add,
    seq_diff,
    seq_ranges,
)


def test_data_packet_round_trip() -> None:
    raw = build_data(
        0x7FFFFFFE,
        b"\x47" * 188,
        123456,
        0xDEADBEEF,
        msgno=77,
        position=packet.PP_FIRST,
        in_order=True,
        key=packet.KK_ODD,
        retransmitted=True,
    )
    pkt = parse(raw)
    assert isinstance(pkt, DataPacket)
    assert (pkt.seq, pkt.timestamp, pkt.dst, pkt.payload) == (
        0x7FFFFFFE,
        123456,
        0xDEADBEEF,
        b"\x47" * 188,
    )
    assert (pkt.position, pkt.in_order, pkt.key, pkt.retransmitted, pkt.msgno) == (
        packet.PP_FIRST,
        True,
        packet.KK_ODD,
        True,
        77,
    )


def test_control_packet_round_trip() -> None:
    raw = build_control(ControlType.USER, 5, 9, b"abcd", subtype=3, info=0xFFFFFFFF)
    pkt = parse(raw)
    assert isinstance(pkt, ControlPacket)
    assert (pkt.type, pkt.subtype, pkt.info, pkt.timestamp, pkt.dst, pkt.cif) == (
        ControlType.USER,
        3,
        0xFFFFFFFF,
        5,
        9,
        b"abcd",
    )


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "shorter than the 16-byte"),
        (b"\x00" * 15, "shorter than the 16-byte"),
        (b"\x00" * 16, "data packet without payload"),
        (b"\x00" * (MAX_DATAGRAM + 1), "exceeds the SRT maximum"),
    ],
)
def test_malformed_datagrams_say_why(data: bytes, why: str) -> None:
    with pytest.raises(PacketError, match=why):
        parse(data)


def test_full_and_light_ack() -> None:
    full = parse(build_ack(1, 2, 7, 1000, rtt=100, rtt_var=50, buffer=8000, pkt_rate=300))
    assert isinstance(full, ControlPacket) and full.type == ControlType.ACK
    assert full.info == 7
    assert struct.unpack("!7I", full.cif)[:5] == (1000, 100, 50, 8000, 300)
    light = parse(build_ack(1, 2, 0, 1000, light=True))
    assert isinstance(light, ControlPacket)
    assert (light.info, light.cif) == (0, struct.pack("!I", 1000))


def test_sequence_arithmetic_wraps_at_31_bits() -> None:
    assert seq_add(0x7FFFFFFF, 1) == 0
    assert seq_diff(0, 0x7FFFFFFF) == 1
    assert seq_diff(0x7FFFFFFF, 0) == -1
    assert seq_diff(5, 3) == 2
    assert seq_ranges([0x7FFFFFFE, 0x7FFFFFFF, 0, 5]) == [(0x7FFFFFFE, 0), (5, 5)]


def test_stream_id_words_are_byte_reversed() -> None:
    # libsrt keeps the string in host-order words and swaps each to network order
    assert encode_words("publish:cam1") == b"lbup:hsi1mac"
    assert encode_words("abcde") == b"dcba\x00\x00\x00e"
    assert decode_words(b"dcba\x00\x00\x00e") == "abcde"
    assert decode_words(encode_words("#!::r=живой/кам,m=publish")) == "#!::r=живой/кам,m=publish"
    with pytest.raises(PacketError, match="not UTF-8"):
        decode_words(b"\xff\xfe\xfd\xfc")


def test_peer_ip_field() -> None:
    assert peer_ip_field("127.0.0.1") == b"\x01\x00\x00\x7f" + bytes(12)
    assert peer_ip_field("::1")[12:] == b"\x01\x00\x00\x00"
    assert peer_ip_field("not an ip") == bytes(16)


def test_handshake_round_trip_with_extensions() -> None:
    hs = Handshake(
        5,
        2,
        packet.EXT_HSREQ | packet.EXT_CONFIG,
        1234,
        1500,
        8192,
        HsType.CONCLUSION,
        0x11223344,
        0xCAFEBABE,
        peer_ip_field("10.0.0.1"),
        (
            (ExtType.HSREQ, HsExt(0x010501, 0x3F, 200, 120).pack()),
            (ExtType.SID, encode_words("publish:x")),
            (99, b"\x01\x02\x03"),  # unknown, padded to a word
        ),
    )
    back = Handshake.parse(hs.pack())
    assert back.hs_type == HsType.CONCLUSION and back.cookie == 0xCAFEBABE
    assert HsExt.parse(back.ext(ExtType.HSREQ) or b"") == HsExt(0x010501, 0x3F, 200, 120)
    assert decode_words(back.ext(ExtType.SID) or b"") == "publish:x"
    assert back.ext(99) == b"\x01\x02\x03\x00"
    assert back.ext(ExtType.KMREQ) is None


def test_handshake_extension_overrun_is_refused() -> None:
    cif = Handshake(5, 0, 1, 1, 1500, 8192, 1, 1, 1).pack() + struct.pack("!HH", 1, 100)
    with pytest.raises(PacketError, match="claims 400 bytes"):
        Handshake.parse(cif)


def test_hsreq_latency_halves() -> None:
    # receiver delay in the high 16 bits, sender delay in the low 16 bits (libsrt)
    assert HsExt(1, 2, 0x00C8, 0x0078).pack()[8:] == b"\x00\xc8\x00\x78"


def test_loss_list_round_trip() -> None:
    ranges = [(5, 5), (7, 9), (0x7FFFFFFF, 2)]
    cif = encode_loss_list(ranges)
    assert decode_loss_list(cif) == ranges
    assert struct.unpack("!I", cif[4:8])[0] == 0x80000007


def test_loss_list_cut_to_one_datagram() -> None:
    cif = encode_loss_list([(i * 3, i * 3 + 1) for i in range(1000)])
    assert len(cif) <= MAX_DATAGRAM - 16
    with pytest.raises(PacketError, match="without its last"):
        decode_loss_list(struct.pack("!I", 0x80000001))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=MAX_DATAGRAM + 8))
def test_arbitrary_datagrams_only_raise_packet_error(data: bytes) -> None:
    try:
        pkt = parse(data)
    except PacketError:
        return
    if isinstance(pkt, ControlPacket):
        for fn in (Handshake.parse, HsExt.parse, decode_loss_list, decode_words):
            try:
                fn(pkt.cif)
            except PacketError:
                pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=48, max_size=600))
def test_arbitrary_handshakes_only_raise_packet_error(cif: bytes) -> None:
    try:
        hs = Handshake.parse(cif)
    except PacketError:
        return
    assert len(hs.extensions) <= packet.MAX_EXTENSIONS
    Handshake.parse(hs.pack())  # what we parsed packs back into something parseable
