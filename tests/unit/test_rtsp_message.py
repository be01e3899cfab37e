"""Unit tests for the sans-I/O RTSP codec (onvifcam.rtsp.message)."""

from __future__ import annotations

import calendar
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import onvifcam
from onvifcam.rtsp.message import (
    REASONS,
    Headers,
    InterleavedFrame,
    Limits,
    ParseError,
    Parser,
    Request,
    Response,
    TransportSpec,
    interleaved_header,
    parse_range,
    parse_session,
    parse_transport,
    response,
    split_uri,
)

OPTIONS = b"OPTIONS rtsp://cam.local:8554/live/main RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: t\r\n\r\n"
SDP = (
    b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n"
)
ANNOUNCE_HEAD = (
    b"ANNOUNCE rtsp://127.0.0.1:8554/live/cam1 RTSP/1.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"CSeq: 2\r\n"
    b"User-Agent: Lavf59.27.100\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n"
)


def frame(channel: int, data: bytes) -> bytes:
    return interleaved_header(channel, len(data)) + data


def feed_all(parser: Parser, chunks: list[bytes]) -> list:
    out: list = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


def error_of(data: bytes | list[bytes], *, limits: Limits = Limits(), role: str = "server"):  # noqa: B008
    parser = Parser(limits, role)
    chunks = [data] if isinstance(data, bytes) else data
    with pytest.raises(ParseError) as info:
        feed_all(parser, chunks)
    return info.value


# -- Headers -----------------------------------------------------------------------------


class TestHeaders:
    def test_case_insensitive_multi_map(self) -> None:
        h = Headers([("CSeq", "1"), ("X-A", "one"), ("x-a", "two")])
        assert h.get("cseq") == "1"
        assert h["CSEQ"] == "1"
        assert h.get("x-A") == "one"
        assert h.get_all("X-A") == ["one", "two"]
        assert "x-a" in h and "missing" not in h and 5 not in h
        assert len(h) == 3
        assert h.get("missing") is None
        assert h.get("missing", "d") == "d"
        with pytest.raises(KeyError):
            h["missing"]

    def test_add_set_remove_keep_order(self) -> None:
        h = Headers()
        h.add("A", "1")
        h.add("B", "2")
        h.add("a", "3")
        h.set("A", "9")
        assert h.items() == [("A", "9"), ("B", "2")]
        h.set("C", "4")
        assert h.items() == [("A", "9"), ("B", "2"), ("C", "4")]
        h.remove("b")
        assert list(h) == ["A", "C"]
        assert h.copy() == h
        assert Headers([("a", "1")]) == Headers([("A", "1")])
        assert Headers([("a", "1")]) != Headers([("a", "2")])
        assert "Headers(" in repr(h)


# -- Parser: requests --------------------------------------------------------------------


class TestParserRequests:
    def test_single_request(self) -> None:
        [req] = Parser().feed(OPTIONS)
        assert req == Request(
            "OPTIONS",
            "rtsp://cam.local:8554/live/main",
            "RTSP/1.0",
            Headers([("CSeq", "1"), ("User-Agent", "t")]),
            b"",
        )
        assert req.cseq == "1"

    def test_pipelined_requests_in_one_feed(self) -> None:
        data = b"".join(
            b"GET_PARAMETER rtsp://h/x RTSP/1.0\r\nCSeq: %d\r\n\r\n" % i for i in range(5)
        )
        events = Parser().feed(data)
        assert [e.cseq for e in events] == ["0", "1", "2", "3", "4"]

    def test_byte_at_a_time(self) -> None:
        data = OPTIONS + ANNOUNCE_HEAD + SDP + frame(0, b"\x80" * 50) + OPTIONS
        parser = Parser()
        events = feed_all(parser, [data[i : i + 1] for i in range(len(data))])
        assert [type(e).__name__ for e in events] == [
            "Request",
            "Request",
            "InterleavedFrame",
            "Request",
        ]
        assert events[1].body == SDP
        assert events[2] == InterleavedFrame(0, b"\x80" * 50)
        assert parser.buffered == 0

    def test_announce_head_and_sdp_body_in_separate_feeds(self) -> None:
        parser = Parser()
        assert parser.feed(ANNOUNCE_HEAD) == []
        assert parser.buffered == len(ANNOUNCE_HEAD)
        assert parser.feed(SDP[:10]) == []
        [req] = parser.feed(SDP[10:] + frame(0, b"rtp"))[:1]
        assert req.method == "ANNOUNCE"
        assert req.body == SDP
        assert req.headers["Content-Type"] == "application/sdp"

    def test_body_followed_by_frames_in_same_feed(self) -> None:
        parser = Parser()
        parser.feed(ANNOUNCE_HEAD)
        events = parser.feed(SDP + frame(0, b"a") + frame(1, b"b") + frame(0, b"c"[:0]))
        assert events[1:] == [
            InterleavedFrame(0, b"a"),
            InterleavedFrame(1, b"b"),
            InterleavedFrame(0, b""),
        ]
        assert isinstance(events[1].data, bytes)

    def test_bare_lf_and_mixed_line_endings(self) -> None:
        data = b"OPTIONS * RTSP/1.0\nCSeq: 3\r\nX: y\n\r\nDESCRIBE /a RTSP/1.0\nCSeq: 4\n\n"
        events = Parser().feed(data)
        assert [(e.method, e.uri, e.cseq) for e in events] == [
            ("OPTIONS", "*", "3"),
            ("DESCRIBE", "/a", "4"),
        ]
        assert events[0].headers["X"] == "y"

    def test_empty_lines_between_messages_are_skipped(self) -> None:
        events = Parser().feed(b"\r\n\r\n" + OPTIONS + b"\r\n" + OPTIONS)
        assert len(events) == 2

    def test_any_token_method_and_case_sensitivity(self) -> None:
        events = Parser().feed(
            b"FOO_BAR rtsp://h/ RTSP/1.0\r\nCSeq: 1\r\n\r\noptions * RTSP/1.0\r\nCSeq: 2\r\n\r\n"
        )
        assert [e.method for e in events] == ["FOO_BAR", "options"]

    def test_rtsp_2_0(self) -> None:
        [req] = Parser().feed(b"OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n")
        assert req.version == "RTSP/2.0"

    def test_header_whitespace_and_folding(self) -> None:
        data = b"SETUP /a RTSP/1.0\r\nCSeq:   7  \r\nTransport: RTP/AVP;\r\n unicast\r\nX:\r\n\r\n"
        [req] = Parser().feed(data)
        assert req.cseq == "7"
        assert req.headers["Transport"] == "RTP/AVP; unicast"
        assert req.headers["X"] == ""

    def test_utf8_and_latin1_heads(self) -> None:
        [a, b] = Parser().feed(
            "DESCRIBE rtsp://h/caméra RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode()
            + b"DESCRIBE rtsp://h/cam\xe9ra RTSP/1.0\r\nCSeq: 2\r\n\r\n"
        )
        assert a.uri == b.uri == "rtsp://h/caméra"

    def test_zero_content_length(self) -> None:
        [req] = Parser().feed(b"PLAY /a RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 0\r\n\r\n")
        assert req.body == b""

    def test_duplicate_equal_content_length_ok(self) -> None:
        data = b"SET_PARAMETER /a RTSP/1.0\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab"
        [req] = Parser().feed(data)
        assert req.body == b"ab"

    def test_accepts_bytearray_and_memoryview(self) -> None:
        parser = Parser()
        assert len(parser.feed(bytearray(OPTIONS))) == 1
        assert len(parser.feed(memoryview(OPTIONS))) == 1

    def test_no_content_length_means_no_body(self) -> None:
        events = Parser().feed(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\nOPTIONS")
        assert len(events) == 1 and events[0].body == b""

    def test_empty_feed(self) -> None:
        assert Parser().feed(b"") == []

    def test_bad_role(self) -> None:
        with pytest.raises(ValueError):
            Parser(role="proxy")


# -- Parser: responses (client role) -----------------------------------------------------


class TestParserResponses:
    def test_response_with_body_and_frames(self) -> None:
        body = b"v=0\r\n"
        data = (
            b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Length: 5\r\n\r\n"
            + body
            + frame(0, b"xyz")
            + b"RTSP/1.0 454 Session Not Found\r\nCSeq: 3\r\n\r\n"
        )
        events = Parser(role="client").feed(data)
        assert events[0] == Response(
            "RTSP/1.0", 200, "OK", Headers([("CSeq", "2"), ("Content-Length", "5")]), body
        )
        assert events[1] == InterleavedFrame(0, b"xyz")
        assert (events[2].status, events[2].reason, events[2].cseq) == (
            454,
            "Session Not Found",
            "3",
        )

    def test_status_line_without_reason(self) -> None:
        [resp] = Parser(role="client").feed(b"RTSP/1.0 200\r\nCSeq: 1\r\n\r\n")
        assert (resp.status, resp.reason) == (200, "")

    def test_client_accepts_server_requests(self) -> None:
        [req] = Parser(role="client").feed(b"GET_PARAMETER rtsp://h/ RTSP/1.0\r\nCSeq: 9\r\n\r\n")
        assert req.method == "GET_PARAMETER"

    def test_server_rejects_response(self) -> None:
        err = error_of(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n")
        assert err.status == 400 and "response line" in str(err)

    @pytest.mark.parametrize(
        "line", [b"RTSP/1.0 20 OK", b"RTSP/1.0 abc OK", b"RTSP/1.0 2000 OK", b"RTSP/1.0"]
    )
    def test_malformed_status_line(self, line: bytes) -> None:
        assert error_of(line + b"\r\n\r\n", role="client").status == 400

    def test_response_version_checked(self) -> None:
        assert error_of(b"RTSP/3.0 200 OK\r\n\r\n", role="client").status == 505


# -- Parser: interleaved frames ----------------------------------------------------------


class TestParserFrames:
    def test_frames_split_everywhere(self) -> None:
        data = frame(0, b"A" * 300) + frame(1, b"B" * 7) + frame(255, b"")
        expected = Parser().feed(data)
        assert expected == [
            InterleavedFrame(0, b"A" * 300),
            InterleavedFrame(1, b"B" * 7),
            InterleavedFrame(255, b""),
        ]
        for i in range(len(data) + 1):
            for j in range(i, min(len(data), i + 6) + 1):
                assert feed_all(Parser(), [data[:i], data[i:j], data[j:]]) == expected

    def test_frame_of_max_size(self) -> None:
        payload = bytes(range(256)) * 255 + b"x" * 255
        assert len(payload) == 65535
        [ev] = feed_all(Parser(), [frame(3, payload)[:1000], frame(3, payload)[1000:]])
        assert ev == InterleavedFrame(3, payload)

    def test_frames_in_client_role(self) -> None:
        assert Parser(role="client").feed(frame(2, b"q")) == [InterleavedFrame(2, b"q")]

    def test_interleaved_limit(self) -> None:
        limits = Limits(max_interleaved=100)
        assert Parser(limits).feed(frame(0, b"x" * 100)) == [InterleavedFrame(0, b"x" * 100)]
        err = error_of(frame(0, b"x" * 101), limits=limits)
        assert err.status == 400 and "101" in str(err)
        # detected from the header alone, before the payload arrives
        err = error_of([b"$\x00", b"\x00\x65"], limits=limits)
        assert err.status == 400
        err = error_of([OPTIONS + b"$\x00\x00\x65"], limits=limits)
        assert err.events and err.events[0].method == "OPTIONS"

    def test_interleaved_header(self) -> None:
        assert interleaved_header(1, 0x1234) == b"$\x01\x12\x34"
        for bad in ((-1, 0), (256, 0), (0, -1), (0, 65536)):
            with pytest.raises(ValueError):
                interleaved_header(*bad)


# -- Parser: errors and limits -----------------------------------------------------------


class TestParserErrors:
    @pytest.mark.parametrize(
        "data",
        [
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS ClientHello
            b"\x00\x01\x02\x03",
            b"\x80\x60\x00\x01" + b"\x00" * 20,  # bare RTP without '$'
            b"(OPTIONS * RTSP/1.0\r\n\r\n",
            b"@ rtsp://h/ RTSP/1.0\r\n\r\n",
        ],
    )
    def test_garbage_is_400_immediately_with_escaped_prefix(self, data: bytes) -> None:
        err = error_of(data)
        assert err.status == 400
        assert "not an RTSP message" in str(err)
        assert repr(data[:4])[2:-1] in str(err)
        assert "\x00" not in str(err)

    def test_tls_hint(self) -> None:
        assert "TLS" in str(error_of(b"\x16\x03\x01\x00"))

    def test_garbage_detected_before_line_end(self) -> None:
        parser = Parser()
        assert parser.feed(b"OPT") == []
        with pytest.raises(ParseError):
            parser.feed(b"\x00\x01")

    def test_method_too_long_is_garbage(self) -> None:
        assert error_of(b"A" * 100).status == 400

    @pytest.mark.parametrize(
        "line",
        [
            b"OPTIONS",
            b"OPTIONS *",
            b"OPTIONS * RTSP/x",
            b"OPTIONS * RTSP1.0",
        ],
    )
    def test_malformed_request_line(self, line: bytes) -> None:
        assert error_of(line + b"\r\nCSeq: 1\r\n\r\n").status == 400

    @pytest.mark.parametrize("version", [b"RTSP/1.1", b"RTSP/0.9", b"HTTP/1.1", b"HTTP/1.0"])
    def test_unsupported_version_is_505_with_cseq(self, version: bytes) -> None:
        err = error_of(b"OPTIONS * " + version + b"\r\nCSeq: 12\r\n\r\n")
        assert err.status == 505
        assert err.cseq == "12"
        assert version.decode() in str(err)

    def test_malformed_header_line(self) -> None:
        err = error_of(b"OPTIONS * RTSP/1.0\r\nCSeq: 4\r\nno colon here\r\n\r\n")
        assert err.status == 400 and "malformed header" in str(err)
        assert err.cseq == "4"
        assert error_of(b"OPTIONS * RTSP/1.0\r\nBad Name: x\r\n\r\n").status == 400
        assert error_of(b"OPTIONS * RTSP/1.0\r\n: x\r\n\r\n").status == 400

    def test_control_characters_in_head(self) -> None:
        err = error_of(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: a\x00b\r\n\r\n")
        assert err.status == 400 and "control character" in str(err)
        assert error_of(b"OPTIONS * RTSP/1.0\r\nX: a\rb\r\n\r\n").status == 400

    @pytest.mark.parametrize("value", [b"-1", b"abc", b"1.5", b"", b"+3", b"2, 3"])
    def test_bad_content_length(self, value: bytes) -> None:
        err = error_of(b"ANNOUNCE /a RTSP/1.0\r\nCSeq: 5\r\nContent-Length: " + value + b"\r\n\r\n")
        assert err.status == 400 and "Content-Length" in str(err)
        assert err.cseq == "5"

    def test_conflicting_content_length(self) -> None:
        data = b"ANNOUNCE /a RTSP/1.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        assert error_of(data).status == 400

    def test_body_limit_413(self) -> None:
        limits = Limits(max_body=10)
        ok = b"ANNOUNCE /a RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 10\r\n\r\n0123456789"
        assert Parser(limits).feed(ok)[0].body == b"0123456789"
        err = error_of(
            b"ANNOUNCE /a RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 11\r\n\r\n", limits=limits
        )
        assert err.status == 413 and err.cseq == "2"
        assert "11" in str(err)

    def test_request_line_limit_414(self) -> None:
        limits = Limits(max_line=64)
        line = b"DESCRIBE rtsp://h/" + b"a" * (64 - 27) + b" RTSP/1.0"
        assert len(line) == 64
        assert len(Parser(limits).feed(line + b"\r\n\r\n")) == 1
        long_line = b"DESCRIBE rtsp://h/" + b"a" * 50 + b" RTSP/1.0\r\n\r\n"
        assert error_of(long_line, limits=limits).status == 414
        # also while the line is still incomplete
        assert error_of(b"DESCRIBE rtsp://h/" + b"a" * 100, limits=limits).status == 414

    def test_status_line_limit_is_400_for_client(self) -> None:
        limits = Limits(max_line=20)
        err = error_of(b"RTSP/1.0 200 " + b"O" * 30 + b"\r\n\r\n", limits=limits, role="client")
        assert err.status == 400

    def test_header_line_limit_431(self) -> None:
        limits = Limits(max_line=64)
        err = error_of(b"OPTIONS * RTSP/1.0\r\nX: " + b"v" * 100 + b"\r\n\r\n", limits=limits)
        assert err.status == 431 and "header line" in str(err)
        err = error_of(b"OPTIONS * RTSP/1.0\r\nX: " + b"v" * 100, limits=limits)
        assert err.status == 431

    def test_header_count_limit_431(self) -> None:
        limits = Limits(max_headers=3)
        head = b"OPTIONS * RTSP/1.0\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(3))
        assert len(Parser(limits).feed(head + b"\r\n")[0].headers) == 3
        err = error_of(head + b"H3: v\r\n\r\n", limits=limits)
        assert err.status == 431 and "3 header fields" in str(err)

    def test_header_bytes_limit_431(self) -> None:
        limits = Limits(max_header_bytes=100)
        head = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n"
        filler = b"X: " + b"a" * (100 - len(head) - 2 - 5) + b"\r\n"
        ok = head + filler + b"\r\n"
        assert len(ok) == 100
        assert len(Parser(limits).feed(ok)) == 1
        assert error_of(head + b"Y" + filler + b"\r\n", limits=limits).status == 431
        # and before the head is complete
        err = error_of([head, filler, b"Y: " + b"b" * 40], limits=limits)
        assert err.status == 431

    def test_huge_numbers_are_parse_errors(self) -> None:
        limits = Limits(max_line=20000, max_header_bytes=40000)
        digits = b"9" * 5000
        err = error_of(
            b"ANNOUNCE /a RTSP/1.0\r\nContent-Length: " + digits + b"\r\n\r\n", limits=limits
        )
        assert err.status == 413
        for value in (
            "RTP/AVP;client_port=" + "9" * 5000,
            "RTP/AVP;ttl=" + "9" * 5000,
        ):
            with pytest.raises(ParseError):
                parse_transport(value)
        with pytest.raises(ParseError):
            parse_session("abc;timeout=" + "9" * 5000)
        with pytest.raises(ParseError):
            parse_range("npt=" + "9" * 5000 + ":00:00-")

    def test_large_head_fed_byte_at_a_time(self) -> None:
        head = b"OPTIONS * RTSP/1.0\r\n" + b"".join(
            b"X-%d: %s\r\n" % (i, b"v" * 200) for i in range(60)
        )
        data = head + b"\r\n"
        assert len(data) < Limits().max_header_bytes
        parser = Parser()
        events = feed_all(parser, [data[i : i + 1] for i in range(len(data))])
        assert len(events) == 1 and len(events[0].headers) == 60

    def test_limits_validation(self) -> None:
        with pytest.raises(ValueError):
            Limits(max_body=-1)

    def test_parser_is_dead_after_error(self) -> None:
        parser = Parser()
        with pytest.raises(ParseError) as first:
            parser.feed(b"\x00garbage\r\n\r\n")
        with pytest.raises(ParseError) as second:
            parser.feed(OPTIONS)
        assert second.value.status == first.value.status
        assert str(second.value) == str(first.value)
        assert parser.buffered == 0

    def test_events_before_error_are_kept_on_the_exception(self) -> None:
        err = error_of(OPTIONS + frame(0, b"x") + b"\x01\x02")
        assert [type(e).__name__ for e in err.events] == ["Request", "InterleavedFrame"]

    def test_parse_error_is_value_error(self) -> None:
        err = ParseError(457, "bad range")
        assert isinstance(err, ValueError)
        assert str(err) == "bad range" and err.status == 457
        assert "457" in repr(err)


# -- Serialisation ------------------------------------------------------------------------


class TestSerialize:
    def test_request_round_trip(self) -> None:
        req = Request("ANNOUNCE", "rtsp://h/a", "RTSP/1.0", Headers([("CSeq", "3")]), b"v=0\r\n")
        wire = req.serialize()
        assert wire == (
            b"ANNOUNCE rtsp://h/a RTSP/1.0\r\nCSeq: 3\r\nContent-Length: 5\r\n\r\nv=0\r\n"
        )
        assert Parser().feed(wire) == [
            Request(
                "ANNOUNCE",
                "rtsp://h/a",
                "RTSP/1.0",
                Headers([("CSeq", "3"), ("Content-Length", "5")]),
                b"v=0\r\n",
            )
        ]

    def test_request_content_length_is_rewritten(self) -> None:
        req = Request("X", "*", headers=Headers([("Content-Length", "99")]))
        assert req.serialize() == b"X * RTSP/1.0\r\nContent-Length: 0\r\n\r\n"

    def test_response_serialize(self) -> None:
        resp = Response("RTSP/1.0", 200, "OK", Headers([("CSeq", "1")]), b"ab")
        assert resp.serialize() == b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 2\r\n\r\nab"
        assert Parser(role="client").feed(resp.serialize())[0].body == b"ab"

    def test_serialize_refuses_header_injection(self) -> None:
        with pytest.raises(ValueError):
            Request("OPTIONS", "*", headers=Headers([("X", "a\r\nY: b")])).serialize()
        with pytest.raises(ValueError):
            Request("OPTIONS", "*", headers=Headers([("Bad Name", "a")])).serialize()
        with pytest.raises(ValueError):
            Request("OPT IONS", "*").serialize()
        with pytest.raises(ValueError):
            Request("OPTIONS", "a b").serialize()
        with pytest.raises(ValueError):
            Response("RTSP/1.0", 99, "x").serialize()
        with pytest.raises(ValueError):
            Response("RTSP/1.0\r\n", 200, "x").serialize()


class TestResponseFunction:
    def test_minimal(self) -> None:
        assert response(200, "5") == (
            b"RTSP/1.0 200 OK\r\nCSeq: 5\r\nServer: onvifcam/"
            + onvifcam.__version__.encode()
            + b"\r\n\r\n"
        )

    def test_without_cseq(self) -> None:
        assert b"CSeq" not in response(400, None)

    def test_headers_body_and_order(self) -> None:
        wire = response(200, "2", {"Content-Type": "application/sdp"}, b"v=0\r\n")
        [resp] = Parser(role="client").feed(wire)
        assert resp.headers.items() == [
            ("CSeq", "2"),
            ("Content-Type", "application/sdp"),
            ("Server", f"onvifcam/{onvifcam.__version__}"),
            ("Content-Length", "5"),
        ]
        assert resp.body == b"v=0\r\n"

    def test_header_list_and_overrides(self) -> None:
        wire = response(
            401,
            "3",
            [
                ("WWW-Authenticate", 'Digest realm="r"'),
                ("WWW-Authenticate", 'Basic realm="r"'),
                ("Server", "custom"),
                ("CSeq", "999"),
                ("Content-Length", "999"),
            ],
        )
        [resp] = Parser(role="client").feed(wire)
        assert resp.headers.get_all("WWW-Authenticate") == ['Digest realm="r"', 'Basic realm="r"']
        assert resp.headers.get_all("Server") == ["custom"]
        assert resp.headers.get_all("CSeq") == ["3"]
        assert "Content-Length" not in resp.headers

    @pytest.mark.parametrize(
        ("status", "reason"),
        [
            (200, "OK"),
            (302, "Moved Temporarily"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (406, "Not Acceptable"),
            (413, "Request Entity Too Large"),
            (414, "Request-URI Too Long"),
            (431, "Request Header Fields Too Large"),
            (451, "Parameter Not Understood"),
            (453, "Not Enough Bandwidth"),
            (454, "Session Not Found"),
            (455, "Method Not Valid in This State"),
            (457, "Invalid Range"),
            (459, "Aggregate Operation Not Allowed"),
            (460, "Only Aggregate Operation Allowed"),
            (461, "Unsupported Transport"),
            (500, "Internal Server Error"),
            (501, "Not Implemented"),
            (503, "Service Unavailable"),
            (505, "RTSP Version Not Supported"),
        ],
    )
    def test_reason_phrases(self, status: int, reason: str) -> None:
        assert REASONS[status] == reason
        assert response(status, "1").startswith(f"RTSP/1.0 {status} {reason}\r\n".encode())

    def test_custom_and_unknown_reason(self) -> None:
        assert response(299, "1").startswith(b"RTSP/1.0 299 Success\r\n")
        assert response(498, "1").startswith(b"RTSP/1.0 498 Client Error\r\n")
        assert response(200, "1", reason="Fine").startswith(b"RTSP/1.0 200 Fine\r\n")
        with pytest.raises(ValueError):
            response(42, "1")
        with pytest.raises(ValueError):
            response(200, "1", reason="a\r\nb")
        with pytest.raises(ValueError):
            response(200, "1\r\nX: y")


# -- URIs ---------------------------------------------------------------------------------


class TestSplitUri:
    @pytest.mark.parametrize(
        ("uri", "expected"),
        [
            ("rtsp://host:8554/a/b?x=1", ("host:8554", "a/b", "x=1")),
            ("rtsp://host/a/b/", ("host", "a/b", "")),
            ("rtsp://host", ("host", "", "")),
            ("rtsp://host/", ("host", "", "")),
            ("rtsps://h:322/live/cam1/streamid=0", ("h:322", "live/cam1/streamid=0", "")),
            ("RTSP://H/x", ("H", "x", "")),
            ("rtspu://h/x", ("h", "x", "")),
            ("rtsp://user:p%40ss@h:554/x", ("h:554", "x", "")),
            ("rtsp://[::1]:8554/cam?a=b&c", ("[::1]:8554", "cam", "a=b&c")),
            ("rtsp://h/my%20cam#frag", ("h", "my cam", "")),
            ("/a/b?x=1", ("", "a/b", "x=1")),
            ("/", ("", "", "")),
            ("*", ("", "*", "")),
        ],
    )
    def test_split(self, uri: str, expected: tuple[str, str, str]) -> None:
        assert split_uri(uri) == expected

    @pytest.mark.parametrize("uri", ["http://h/a", "a/b", "", "rtsp://h/a b", "rtsp:/h"])
    def test_rejects(self, uri: str) -> None:
        with pytest.raises(ParseError) as info:
            split_uri(uri)
        assert info.value.status == 400


# -- Transport ----------------------------------------------------------------------------


class TestTransport:
    def test_ffmpeg_record_tcp(self) -> None:
        [t] = parse_transport("RTP/AVP/TCP;unicast;interleaved=0-1;mode=record")
        assert (t.protocol, t.lower, t.multicast, t.interleaved, t.mode) == (
            "RTP/AVP",
            "TCP",
            False,
            (0, 1),
            "record",
        )
        assert t.params == {"unicast": None, "interleaved": "0-1", "mode": "record"}

    def test_ffmpeg_record_udp(self) -> None:
        [t] = parse_transport("RTP/AVP/UDP;unicast;client_port=20000-20001;mode=record")
        assert (t.lower, t.client_port, t.server_port, t.mode) == (
            "UDP",
            (20000, 20001),
            None,
            "record",
        )

    def test_gstreamer_record_upper_case(self) -> None:
        [t] = parse_transport("RTP/AVP/TCP;unicast;interleaved=0-1;mode=RECORD")
        assert t.mode == "record"
        assert t.params["mode"] == "RECORD"

    def test_gstreamer_quoted_play(self) -> None:
        [t] = parse_transport('RTP/AVP;unicast;client_port=5000-5001;mode="PLAY"')
        assert (t.protocol, t.lower, t.client_port, t.mode) == (
            "RTP/AVP",
            "UDP",
            (5000, 5001),
            "play",
        )

    def test_vlc_multicast(self) -> None:
        [t] = parse_transport("RTP/AVP;multicast;destination=232.0.0.1;port=5000-5001;ttl=16")
        assert t.multicast is True
        assert (t.destination, t.port, t.ttl) == ("232.0.0.1", (5000, 5001), 16)

    def test_alternatives_in_order(self) -> None:
        specs = parse_transport(
            "RTP/AVP/UDP;unicast;client_port=6000-6001,RTP/AVP/TCP;unicast;interleaved=2-3, "
            "RTP/AVP;multicast"
        )
        assert [(s.lower, s.multicast) for s in specs] == [
            ("UDP", False),
            ("TCP", False),
            ("UDP", True),
        ]
        assert specs[1].interleaved == (2, 3)

    @pytest.mark.parametrize(
        ("proto", "protocol", "lower"),
        [
            ("RTP/AVP", "RTP/AVP", "UDP"),
            ("RTP/AVP/UDP", "RTP/AVP", "UDP"),
            ("RTP/AVP/TCP", "RTP/AVP", "TCP"),
            ("RTP/AVPF", "RTP/AVPF", "UDP"),
            ("RTP/AVPF/TCP", "RTP/AVPF", "TCP"),
            ("RTP/SAVP", "RTP/SAVP", "UDP"),
            ("rtp/avp/tcp", "RTP/AVP", "TCP"),
        ],
    )
    def test_protocols(self, proto: str, protocol: str, lower: str) -> None:
        [t] = parse_transport(proto + ";unicast")
        assert (t.protocol, t.lower) == (protocol, lower)

    def test_single_ports_and_channels(self) -> None:
        [t] = parse_transport("RTP/AVP;unicast;client_port=5000;server_port=6000")
        assert t.client_port == (5000, 5001) and t.server_port == (6000, 6001)
        [t] = parse_transport("RTP/AVP/TCP;interleaved=4")
        assert t.interleaved == (4, 5)

    def test_server_reply_fields(self) -> None:
        [t] = parse_transport(
            "RTP/AVP;unicast;client_port=5000-5001;server_port=9000-9001;ssrc=1A2B3C4D;"
            'source=10.0.0.1;mode="PLAY";x-extra=1;flag'
        )
        assert (t.server_port, t.ssrc, t.source) == ((9000, 9001), "1A2B3C4D", "10.0.0.1")
        assert t.params["x-extra"] == "1" and t.params["flag"] is None
        assert "x-extra=1" in t.serialize() and t.serialize().endswith(";flag")

    def test_no_cast_flag_is_unicast(self) -> None:
        assert parse_transport("RTP/AVP/TCP;interleaved=0-1")[0].multicast is False

    @pytest.mark.parametrize(
        "value",
        [
            "",
            " , ",
            "garbage",
            "RTP",
            "RTP/AVP/SCTP;unicast",
            "RTP/AVP;client_port=abc",
            "RTP/AVP;client_port=5000-x",
            "RTP/AVP;client_port=70000-70001",
            "RTP/AVP;client_port=65535",
            "RTP/AVP;client_port",
            "RTP/AVP/TCP;interleaved=0-256",
            "RTP/AVP/TCP;interleaved=-1",
            "RTP/AVP;ttl=300",
            "RTP/AVP;ttl=x",
            "RTP/AVP;mode=",
            'RTP/AVP;mode="PLAY',
            "RTP/AVP;bad key=1",
        ],
    )
    def test_garbage(self, value: str) -> None:
        with pytest.raises(ParseError) as info:
            parse_transport(value)
        assert info.value.status == 400

    def test_serialize(self) -> None:
        spec = TransportSpec("RTP/AVP", "TCP", interleaved=(0, 1), mode="record")
        assert spec.serialize() == "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"
        spec = TransportSpec(
            "RTP/AVP",
            "UDP",
            client_port=(5000, 5001),
            server_port=(6970, 6971),
            ssrc="0000ABCD",
        )
        assert spec.serialize() == (
            "RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;ssrc=0000ABCD"
        )
        spec = TransportSpec(multicast=True, destination="232.0.0.1", port=(5000, 5001), ttl=16)
        assert spec.serialize() == "RTP/AVP;multicast;destination=232.0.0.1;port=5000-5001;ttl=16"
        with pytest.raises(ValueError):
            TransportSpec(destination="a\r\nb").serialize()


# -- Session and Range -------------------------------------------------------------------


class TestSessionRange:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("12345678", ("12345678", None)),
            ("12345678;timeout=60", ("12345678", 60)),
            ("  abc ; timeout = 30 ", ("abc", 30)),
            ("a.b-c_d$e", ("a.b-c_d$e", None)),
            ("xyz;foo=bar", ("xyz", None)),
        ],
    )
    def test_session(self, value: str, expected: tuple[str, int | None]) -> None:
        assert parse_session(value) == expected

    @pytest.mark.parametrize("value", ["", ";timeout=5", "a b", "abc;timeout=x", "abc;timeout="])
    def test_session_garbage(self, value: str) -> None:
        with pytest.raises(ParseError) as info:
            parse_session(value)
        assert info.value.status == 400

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("npt=0-", ("npt", 0.0, None)),
            ("npt=now-", ("npt", None, None)),
            ("npt=1.5-3", ("npt", 1.5, 3.0)),
            ("npt = 0.000-", ("npt", 0.0, None)),
            ("npt=-3", ("npt", None, 3.0)),
            ("npt=0:01:30.5-1:00:00", ("npt", 90.5, 3600.0)),
            ("NPT=10-20;time=19970123T153600Z", ("npt", 10.0, 20.0)),
            ("smpte-25=0:00:01:05-", ("smpte-25", 1.2, None)),
        ],
    )
    def test_range(self, value: str, expected: tuple) -> None:
        unit, start, end = parse_range(value)
        assert unit == expected[0]
        assert start == pytest.approx(expected[1]) if expected[1] is not None else start is None
        assert end == pytest.approx(expected[2]) if expected[2] is not None else end is None

    def test_clock_range(self) -> None:
        unit, start, end = parse_range("clock=19961108T142300Z-19961108T143520.25Z")
        base = calendar.timegm(time.strptime("19961108142300", "%Y%m%d%H%M%S"))
        assert unit == "clock"
        assert start == base and end == pytest.approx(base + 740.25)

    def test_smpte_range(self) -> None:
        unit, start, end = parse_range("smpte=10:07:00-10:07:33:05.01")
        assert unit == "smpte" and start == 36420.0
        assert end == pytest.approx(36453 + 5.01 * 1001 / 30000)

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "npt",
            "npt=",
            "npt=-",
            "npt=abc-",
            "npt=5-3",
            "npt=1-2-3",
            "npt=now-5",
            "bytes=0-100",
            "clock=1996-",
            "clock=19961308T142300Z-",
            "smpte=1:2-",
            "npt=0:99:00-",
        ],
    )
    def test_range_garbage_is_457(self, value: str) -> None:
        with pytest.raises(ParseError) as info:
            parse_range(value)
        assert info.value.status == 457


# -- Properties -------------------------------------------------------------------------

_token = st.text(
    alphabet="!#$%&'*+.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-",
    min_size=1,
    max_size=12,
)
_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
    max_size=30,
).map(str.strip)
_method = _token.filter(lambda s: s[0] != "$")
_uri = st.sampled_from(["*", "/a", "rtsp://h:8554/live/cam1", "rtsp://[::1]/x?y=1&z"])
_headers = st.lists(
    st.tuples(_token.filter(lambda s: s.lower() != "content-length"), _value), max_size=6
)


@st.composite
def _requests(draw: st.DrawFn) -> Request:
    body = draw(st.binary(max_size=80))
    headers = Headers(draw(_headers))
    if body:
        headers.add("Content-Length", str(len(body)))
    version = draw(st.sampled_from(["RTSP/1.0", "RTSP/2.0"]))
    return Request(draw(_method), draw(_uri), version, headers, body)


@st.composite
def _responses(draw: st.DrawFn) -> Response:
    body = draw(st.binary(max_size=80))
    headers = Headers(draw(_headers))
    if body:
        headers.add("Content-Length", str(len(body)))
    reason = draw(st.sampled_from(["OK", "Not Found", "", "Method Not Valid in This State"]))
    return Response("RTSP/1.0", draw(st.integers(100, 999)), reason, headers, body)


_frames = st.builds(InterleavedFrame, st.integers(0, 255), st.binary(max_size=300))


def _wire(event: Request | Response | InterleavedFrame) -> bytes:
    if isinstance(event, InterleavedFrame):
        return frame(event.channel, event.data)
    return event.serialize()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(st.one_of(_requests(), _frames), max_size=8),
    cuts=st.lists(st.integers(0, 5000), max_size=12),
)
def test_property_any_split_gives_same_events_server(events: list, cuts: list[int]) -> None:
    data = b"".join(_wire(e) for e in events)
    whole = Parser().feed(data)
    assert whole == events
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    parser = Parser()
    assert feed_all(parser, chunks) == whole
    assert parser.buffered == 0


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(st.one_of(_responses(), _requests(), _frames), max_size=8),
    cuts=st.lists(st.integers(0, 5000), max_size=12),
)
def test_property_any_split_gives_same_events_client(events: list, cuts: list[int]) -> None:
    data = b"".join(_wire(e) for e in events)
    whole = Parser(role="client").feed(data)
    assert whole == events
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert feed_all(Parser(role="client"), chunks) == whole


_interesting = st.sampled_from(
    [OPTIONS, ANNOUNCE_HEAD, SDP, b"$", b"\r\n", b"\n", b": ", b"Content-Length: 3\r\n", b"RTSP/"]
)


@settings(max_examples=500)
@given(
    parts=st.lists(st.one_of(st.binary(max_size=40), _interesting), max_size=10),
    role=st.sampled_from(["server", "client"]),
    small=st.booleans(),
)
def test_property_arbitrary_bytes_only_raise_parse_error(
    parts: list[bytes], role: str, small: bool
) -> None:
    limits = Limits(16, 2, 64, 8, 16) if small else Limits()
    parser = Parser(limits, role)
    for part in parts:
        try:
            events = parser.feed(part)
        except ParseError as exc:
            assert 400 <= exc.status <= 599
            assert str(exc)
            with pytest.raises(ParseError):
                parser.feed(b"OPTIONS * RTSP/1.0\r\n\r\n")
            return
        for event in events:
            assert isinstance(event, Request | Response | InterleavedFrame)
    assert parser.buffered <= sum(map(len, parts))


_param_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=8)
_pair = st.tuples(st.integers(0, 65534), st.integers(0, 65535))
_chan = st.tuples(st.integers(0, 255), st.integers(0, 255))


_KNOWN_KEYS = frozenset(
    "unicast multicast destination source interleaved client_port server_port port ttl "
    "ssrc mode".split()
)


@st.composite
def _transport_specs(draw: st.DrawFn) -> TransportSpec:
    extra = draw(
        st.dictionaries(
            _param_token.filter(lambda k: k not in _KNOWN_KEYS),
            st.one_of(st.none(), _param_token),
            max_size=3,
        )
    )
    return TransportSpec(
        protocol=draw(st.sampled_from(["RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF"])),
        lower=draw(st.sampled_from(["UDP", "TCP"])),
        multicast=draw(st.booleans()),
        interleaved=draw(st.none() | _chan),
        client_port=draw(st.none() | _pair),
        server_port=draw(st.none() | _pair),
        port=draw(st.none() | _pair),
        destination=draw(st.none() | st.sampled_from(["232.0.0.1", "10.1.2.3", "ff15::1"])),
        source=draw(st.none() | st.sampled_from(["192.168.1.2", "host.example"])),
        ttl=draw(st.none() | st.integers(0, 255)),
        ssrc=draw(st.none() | st.sampled_from(["1A2B3C4D", "00000001"])),
        mode=draw(st.none() | st.sampled_from(["play", "record"])),
        params=extra,
    )


_TYPED = (
    "protocol lower multicast interleaved client_port server_port port destination source "
    "ttl ssrc mode"
).split()


@given(specs=st.lists(_transport_specs(), min_size=1, max_size=3))
def test_property_transport_round_trip(specs: list[TransportSpec]) -> None:
    text = ",".join(s.serialize() for s in specs)
    parsed = parse_transport(text)
    assert len(parsed) == len(specs)
    for original, back in zip(specs, parsed, strict=True):
        for name in _TYPED:
            assert getattr(back, name) == getattr(original, name), name
        for key, value in original.params.items():
            assert back.params[key] == value
        assert back.serialize() == original.serialize()


# -- Micro-benchmark (sanity only, no timing assertion) ---------------------------------


def bench_interleaved(frames: int = 20000, size: int = 1400, chunk: int = 65536) -> float:
    """Feed ``frames`` interleaved frames in ``chunk``-byte reads; return frames per second."""
    payload = bytes(size)
    stream = frame(0, payload) * frames
    chunks = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    parser = Parser()
    start = time.perf_counter()
    count = 0
    for c in chunks:
        count += len(parser.feed(c))
    elapsed = time.perf_counter() - start
    assert count == frames
    return frames / max(elapsed, 1e-9)


def test_benchmark_sanity() -> None:
    for chunk in (65536, 1404, 1000):
        assert bench_interleaved(2000, 1400, chunk) > 0


if __name__ == "__main__":
    for read_size in (65536, 16384, 1404, 1000):
        print(f"{read_size:6d}-byte reads: {bench_interleaved(chunk=read_size):,.0f} frames/s")
