"""AMF0 codec: known encodings, round trips and garbage (hypothesis)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onvifcam.rtmp import amf0
from onvifcam.rtmp.amf0 import UNDEFINED, AmfError, Date, EcmaArray, TypedObject, XmlDocument


def test_known_encodings() -> None:
    assert amf0.encode(1.5) == b"\x00\x3f\xf8\x00\x00\x00\x00\x00\x00"
    assert amf0.encode(True, False) == b"\x01\x01\x01\x00"
    assert amf0.encode("ab") == b"\x02\x00\x02ab"
    assert amf0.encode(None, UNDEFINED) == b"\x05\x06"
    assert amf0.encode({"a": 1}) == b"\x03\x00\x01a\x00" + b"\x3f\xf0" + bytes(6) + b"\x00\x00\x09"
    assert amf0.encode(EcmaArray(a=None)) == b"\x08\x00\x00\x00\x01\x00\x01a\x05\x00\x00\x09"
    assert (
        amf0.encode([1, "x"]) == b"\x0a\x00\x00\x00\x02\x00\x3f\xf0" + bytes(6) + b"\x02\x00\x01x"
    )


def test_connect_command_as_ffmpeg_sends_it() -> None:
    # "connect", 1, {app: "live", type: "nonprivate", tcUrl: ...}
    body = (
        b"\x02\x00\x07connect\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x03"
        b"\x00\x03app\x02\x00\x04live"
        b"\x00\x04type\x02\x00\x0anonprivate"
        b"\x00\x05tcUrl\x02\x00\x1artmp://127.0.0.1:1935/live"
        b"\x00\x00\x09"
    )
    assert amf0.decode(body) == [
        "connect",
        1.0,
        {"app": "live", "type": "nonprivate", "tcUrl": "rtmp://127.0.0.1:1935/live"},
    ]


def test_long_string_date_xml_typed_and_reference() -> None:
    long = "x" * 70000
    data = amf0.encode(long, Date(1e12, 0), XmlDocument("<a/>"), TypedObject("T", {"k": 2.0}))
    assert data[0] == amf0.LONG_STRING
    assert amf0.decode(data) == [
        long,
        Date(1e12, 0),
        XmlDocument("<a/>"),
        TypedObject("T", {"k": 2.0}),
    ]
    # An object, then a reference to it (index 0).
    ref = amf0.encode({"a": "b"}) + b"\x07\x00\x00"
    first, second = amf0.decode(ref)
    assert first == second == {"a": "b"}


def test_ecma_array_without_end_marker_at_the_end() -> None:
    # Some encoders finish onMetaData with 00 00 and no 09 at the end of the message.
    data = b"\x08\x00\x00\x00\x01\x00\x01w\x00" + bytes(8) + b"\x00\x00"
    assert amf0.decode(data) == [{"w": 0.0}]


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01",  # truncated number
        b"\x02\x00\x05ab",  # truncated string
        b"\x03\x00\x01a",  # object cut in a value
        b"\x07\x00\x05",  # reference to nothing
        b"\x0a\xff\xff\xff\xff",  # huge strict array
        b"\x11\x01",  # AMF3 switch
        b"\x42",  # unknown marker
        b"\x03" * 100,  # nesting too deep / truncated
    ],
)
def test_malformed_input_raises_amf_error(data: bytes) -> None:
    with pytest.raises(AmfError):
        amf0.decode(data)


def test_encode_rejects_what_amf0_cannot_carry() -> None:
    with pytest.raises(AmfError):
        amf0.encode({1: 2})
    with pytest.raises(AmfError):
        amf0.encode(object())
    nested: Any = []
    for _ in range(40):
        nested = [nested]
    with pytest.raises(AmfError):
        amf0.encode(nested)


keys = st.text(min_size=1, max_size=12)
scalars = st.one_of(
    st.none(),
    st.just(UNDEFINED),
    st.booleans(),
    st.floats(allow_nan=False),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.text(max_size=40),
    st.builds(Date, st.floats(allow_nan=False), st.integers(-32768, 32767)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(keys, inner, max_size=5),
        st.dictionaries(keys, inner, max_size=5).map(EcmaArray),
    ),
    max_leaves=30,
)


def _normalise(v: Any) -> Any:
    """What a value decodes back to (numbers become floats, tuples lists)."""
    if isinstance(v, bool) or v is None or v is UNDEFINED:
        return v
    if isinstance(v, int):
        return float(v)
    if isinstance(v, EcmaArray):
        return EcmaArray({k: _normalise(x) for k, x in v.items()})
    if isinstance(v, dict):
        return {k: _normalise(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_normalise(x) for x in v]
    return v


@settings(max_examples=300, deadline=None)
@given(st.lists(values, max_size=4))
def test_round_trip(items: list[Any]) -> None:
    decoded = amf0.decode(amf0.encode(*items))
    assert decoded == [_normalise(v) for v in items]
    for got, want in zip(decoded, items, strict=True):
        assert type(got) is type(_normalise(want))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_amf_error(data: bytes) -> None:
    try:
        amf0.decode(data)
    except AmfError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(values, min_size=1, max_size=3), st.data())
def test_truncated_encodings_raise_amf_error(items: list[Any], data: st.DataObject) -> None:
    raw = amf0.encode(*items)
    cut = data.draw(st.integers(0, len(raw) - 1))
    try:
        amf0.decode(raw[:cut])
    except AmfError:
        pass


def test_number_special_values() -> None:
    (inf,) = amf0.decode(amf0.encode(math.inf))
    assert inf == math.inf
    (nan,) = amf0.decode(amf0.encode(math.nan))
    assert math.isnan(nan)
