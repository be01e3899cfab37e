"""RTMP chunk stream: hand-built headers from the spec, round trips and garbage."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onvifcam.rtmp import chunk
from onvifcam.rtmp.chunk import ChunkError, ChunkParser, ChunkWriter, Message


def feed_all(p: ChunkParser, data: bytes, step: int = 0) -> list[Message]:
    if not step:
        return p.feed(data)
    out: list[Message] = []
    for i in range(0, len(data), step):
        out += p.feed(data[i : i + step])
    return out


def hdr0(csid: int, ts: int, length: int, type_id: int, msid: int) -> bytes:
    return (
        bytes((csid,))
        + ts.to_bytes(3, "big")
        + length.to_bytes(3, "big")
        + bytes((type_id,))
        + struct.pack("<I", msid)
    )


def test_spec_example_audio_with_type_2_and_3_headers() -> None:
    # Adobe RTMP spec 5.3.2.1: same stream, same length/type, constant delta.
    p = ChunkParser()
    data = (
        hdr0(3, 1000, 32, 8, 12345) + b"a" * 32
        + bytes((0x80 | 3,)) + (20).to_bytes(3, "big") + b"b" * 32  # type 2: delta 20
        + bytes((0xC0 | 3,)) + b"c" * 32  # type 3: delta repeats
        + bytes((0xC0 | 3,)) + b"d" * 32
    )  # fmt: skip
    msgs = p.feed(data)
    assert [(m.timestamp, m.stream_id, m.type_id, m.payload[:1]) for m in msgs] == [
        (1000, 12345, 8, b"a"),
        (1020, 12345, 8, b"b"),
        (1040, 12345, 8, b"c"),
        (1060, 12345, 8, b"d"),
    ]


def test_spec_example_message_split_in_chunks_and_type_1() -> None:
    # 5.3.2.2: a 307-byte message in chunks of 128 (type 0 then two type 3).
    p = ChunkParser()
    body = bytes(range(256)) + bytes(51)
    data = (
        hdr0(4, 1000, 307, 9, 1) + body[:128]
        + bytes((0xC0 | 4,)) + body[128:256]
        + bytes((0xC0 | 4,)) + body[256:]
        + bytes((0x40 | 4,)) + (40).to_bytes(3, "big") + (3).to_bytes(3, "big") + b"\x09xyz"
    )  # fmt: skip
    msgs = feed_all(p, data, 7)
    assert msgs[0].payload == body and msgs[0].timestamp == 1000
    assert msgs[1] == Message(9, 1040, 1, 4, b"xyz")


def test_two_and_three_byte_basic_headers() -> None:
    w = ChunkWriter(64)
    p = ChunkParser()
    p.chunk_size = 64
    for csid in (2, 63, 64, 319, 320, 65599):
        (m,) = p.feed(w.message(csid, 20, 5, 0, b"z" * 100))
        assert (m.csid, m.payload) == (csid, b"z" * 100)


def test_extended_timestamp_repeated_or_not_on_type_3() -> None:
    ts = 0x01234567
    body = b"q" * 300
    head = hdr0(6, 0xFFFFFF, 300, 9, 1) + ts.to_bytes(4, "big")
    with_repeat = (
        head + body[:128]
        + bytes((0xC6,)) + ts.to_bytes(4, "big") + body[128:256]
        + bytes((0xC6,)) + ts.to_bytes(4, "big") + body[256:]
    )  # fmt: skip
    without = head + body[:128] + bytes((0xC6,)) + body[128:256] + bytes((0xC6,)) + body[256:]
    for data in (with_repeat, without):
        for step in (0, 1, 5):
            msgs = feed_all(ChunkParser(), data, step)
            assert [(m.timestamp, m.payload) for m in msgs] == [(ts, body)]


def test_type_3_new_message_after_extended_type_0() -> None:
    ts = 0x02000000
    data = hdr0(6, 0xFFFFFF, 4, 9, 1) + ts.to_bytes(4, "big") + b"abcd"
    data += bytes((0xC6,)) + ts.to_bytes(4, "big") + b"efgh"  # new message, delta = field
    msgs = ChunkParser().feed(data)
    assert [(m.timestamp, m.payload) for m in msgs] == [(ts, b"abcd"), (2 * ts, b"efgh")]


def test_set_chunk_size_applies_to_the_next_chunk_in_the_same_read() -> None:
    w = ChunkWriter()
    data = w.message(2, chunk.SET_CHUNK_SIZE, 0, 0, chunk.set_chunk_size(4096))
    w.chunk_size = 4096
    data += w.message(6, chunk.VIDEO, 40, 1, b"v" * 3000)
    p = ChunkParser()
    msgs = p.feed(data)
    assert p.chunk_size == 4096
    assert msgs[-1].payload == b"v" * 3000


def test_abort_discards_the_partial_message() -> None:
    w = ChunkWriter()
    partial = w.message(6, chunk.VIDEO, 0, 1, b"x" * 300)[:140]
    p = ChunkParser()
    assert p.feed(partial) == []
    p.feed(w.message(2, chunk.ABORT, 0, 0, chunk.abort(6)))
    assert p.aborted == 1
    (m,) = p.feed(w.message(6, chunk.VIDEO, 80, 1, b"ok"))
    assert m.payload == b"ok" and m.timestamp == 80


def test_zero_length_message() -> None:
    (m,) = ChunkParser().feed(hdr0(3, 7, 0, 20, 0))
    assert m.payload == b"" and m.timestamp == 7


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes((0x43,)) + bytes(7), "without a preceding header"),
        (bytes((0xC5,)), "without a preceding header"),
        (hdr0(2, 0, 4, 1, 0) + bytes(4), "Set Chunk Size of 0"),
        (hdr0(2, 0, 2, 1, 0) + bytes(2), "shorter than 4 bytes"),
    ],
)
def test_unparseable_streams_raise(data: bytes, reason: str) -> None:
    with pytest.raises(ChunkError, match=reason):
        ChunkParser().feed(data)


def test_limits() -> None:
    p = ChunkParser(max_message_size=1000)
    with pytest.raises(ChunkError, match="exceeds the limit"):
        p.feed(hdr0(6, 0, 1001, 9, 1))
    p = ChunkParser(max_chunk_streams=3)
    w = ChunkWriter()
    with pytest.raises(ChunkError, match="chunk streams"):
        for csid in range(3, 10):
            p.feed(w.message(csid, 20, 0, 0, b"x"))
    p = ChunkParser(max_buffered=1000)
    with pytest.raises(ChunkError, match="incomplete messages"):
        for csid in range(3, 20):
            p.feed(w.message(csid, 9, 0, 1, b"x" * 500)[:140])


messages = st.lists(
    st.tuples(
        st.sampled_from([3, 4, 6, 63, 64, 300, 70000 % 65600]),
        st.sampled_from([8, 9, 18, 20]),
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 5),
        st.binary(max_size=700),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(messages, st.integers(1, 600), st.integers(1, 997))
def test_round_trip_any_chunk_size_and_split(
    msgs: list[tuple[int, int, int, int, bytes]], size: int, step: int
) -> None:
    w = ChunkWriter(128)
    data = w.message(2, chunk.SET_CHUNK_SIZE, 0, 0, chunk.set_chunk_size(size))
    w.chunk_size = size
    for csid, t, ts, sid, body in msgs:
        data += w.message(csid, t, ts, sid, body)
    p = ChunkParser()
    out = feed_all(p, data, step)
    assert out[0].type_id == chunk.SET_CHUNK_SIZE
    got = [(m.csid, m.type_id, m.timestamp, m.stream_id, m.payload) for m in out[1:]]
    assert got == msgs
    assert p.bytes_received == len(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 300))
def test_garbage_raises_only_chunk_error(data: bytes, step: int) -> None:
    p = ChunkParser(max_message_size=1 << 16)
    try:
        feed_all(p, data, step)
    except ChunkError:
        pass


def test_control_payloads() -> None:
    assert chunk.window_ack_size(2500000) == (2500000).to_bytes(4, "big")
    assert chunk.set_peer_bandwidth(100, 2) == (100).to_bytes(4, "big") + b"\x02"
    assert chunk.user_control(chunk.STREAM_BEGIN, 1) == b"\x00\x00\x00\x00\x00\x01"
    assert chunk.ack(2**32 + 5) == (5).to_bytes(4, "big")


def test_message_type_0_is_not_a_control_message() -> None:
    # Type 0 is no protocol control message: it must neither abort a chunk stream nor be
    # refused for a short payload (it was taken as Abort by a `type_id <= ABORT` test).
    w = ChunkWriter()
    p = ChunkParser()
    body = b"v" * 300
    whole = w.message(6, chunk.VIDEO, 0, 1, body)
    assert p.feed(whole[:140]) == []  # first chunk of a video message on chunk stream 6
    (odd,) = p.feed(w.message(3, 0, 0, 0, (6).to_bytes(4, "big")))  # "abort 6"?
    assert (odd.type_id, p.aborted) == (0, 0)
    (short,) = p.feed(w.message(3, 0, 0, 0, b"\x01"))
    assert short.payload == b"\x01"
    (video,) = p.feed(whole[140:])
    assert video.payload == body
    # Through the multi-chunk path too.
    (big,) = feed_all(ChunkParser(), w.message(4, 0, 0, 0, b"x" * 200), 50)
    assert big.type_id == 0 and len(big.payload) == 200


def test_held_memory_counts_what_is_really_kept() -> None:
    # A part of an incomplete message is a view into a receive buffer and keeps all of it
    # alive. Small parts of large reads are copied out; large parts count their buffer.
    w = ChunkWriter(128)
    filler = w.message(3, chunk.AMF0_DATA, 0, 0, b"f" * 60000)
    p = ChunkParser(max_buffered=64 * 1024)
    for csid in range(4, 20):
        # a 60 KB read ending with the first 128-byte chunk of a 1000-byte message
        p.feed(filler + w.message(csid, chunk.VIDEO, 0, 1, b"x" * 1000)[:140])
    assert p.buffered == 16 * 128
    for stream in p._streams.values():
        assert all(len(part.obj) < 1000 for part in stream.parts)  # no 60 KB read pinned
    # Large parts: counted as the buffers they are in, and bounded.
    w = ChunkWriter(60000)
    p = ChunkParser(max_buffered=512 * 1024)
    p.feed(w.message(2, chunk.SET_CHUNK_SIZE, 0, 0, chunk.set_chunk_size(60000)))
    with pytest.raises(ChunkError, match="held for incomplete messages"):
        for csid in range(4, 20):
            p.feed(w.message(csid, chunk.VIDEO, 0, 1, b"x" * 100_000)[:60012])
    assert csid == 12  # the ninth 60 KB part passes 512 KiB


def test_stop_after_command_lets_a_command_change_the_limits() -> None:
    # Before publish a server keeps small limits; the media that follows the publish
    # command in the same read must be parsed with the limits the command raised.
    w = ChunkWriter(4096)
    data = w.message(2, chunk.SET_CHUNK_SIZE, 0, 0, chunk.set_chunk_size(4096))
    data += w.message(3, chunk.AMF0_COMMAND, 0, 0, b"publish")
    data += w.message(3, chunk.AMF0_COMMAND, 0, 1, b"second")
    data += w.message(6, chunk.VIDEO, 0, 1, b"k" * 100_000)
    p = ChunkParser(max_message_size=1000, max_buffered=1000)
    p.stop_after_command = True
    first = p.feed(data)
    assert [m.payload for m in first][-1] == b"publish" and p.paused
    (second,) = p.feed(b"")
    assert second.payload == b"second" and p.paused
    p.max_message_size = p.max_buffered = 1 << 20
    p.stop_after_command = False
    (video,) = p.feed(b"")
    assert video.payload == b"k" * 100_000 and not p.paused
    assert p.bytes_received == len(data)
    # Without raising the limits the same input is refused.
    q = ChunkParser(max_message_size=1000, max_buffered=1000)
    q.stop_after_command = True
    q.feed(data)
    q.feed(b"")
    with pytest.raises(ChunkError, match="exceeds the limit"):
        q.feed(b"")


@settings(max_examples=200, deadline=None)
@given(messages, st.integers(1, 600), st.integers(1, 997))
def test_stopping_after_commands_gives_the_same_messages(
    msgs: list[tuple[int, int, int, int, bytes]], size: int, step: int
) -> None:
    w = ChunkWriter(128)
    data = w.message(2, chunk.SET_CHUNK_SIZE, 0, 0, chunk.set_chunk_size(size))
    w.chunk_size = size
    for csid, t, ts, sid, body in msgs:
        data += w.message(csid, t, ts, sid, body)
    p = ChunkParser()
    p.stop_after_command = True
    out: list[Message] = []
    for i in range(0, len(data), step):
        out += p.feed(data[i : i + step])
        while p.paused:
            assert out[-1].type_id == chunk.AMF0_COMMAND
            out += p.feed(b"")
    got = [(m.csid, m.type_id, m.timestamp, m.stream_id, m.payload) for m in out[1:]]
    assert got == msgs
