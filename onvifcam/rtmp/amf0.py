"""AMF0 (Action Message Format 0) encoding and decoding, as used by RTMP commands.

Pure functions on bytes. Python values map to AMF0 types as follows:

- ``float``/``int`` <-> Number (decoded as float), ``bool`` <-> Boolean
- ``str`` <-> String (Long String above 65535 UTF-8 bytes), ``None`` <-> Null
- :data:`UNDEFINED` <-> Undefined, :class:`Date` <-> Date, :class:`XmlDocument` <-> XML
- ``dict`` <-> Object, :class:`EcmaArray` <-> ECMA Array, ``list`` <-> Strict Array
- :class:`TypedObject` <-> Typed Object

References (type 0x07) are resolved against the objects decoded so far. Decoding raises
only :class:`AmfError`, with nesting depth, item counts and string sizes bounded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "UNDEFINED",
    "AmfError",
    "Date",
    "EcmaArray",
    "TypedObject",
    "XmlDocument",
    "decode",
    "encode",
]

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
MOVIECLIP = 0x04
NULL = 0x05
UNDEFINED_MARKER = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED = 0x0D
RECORDSET = 0x0E
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS = 0x11

MAX_DEPTH = 32
MAX_ITEMS = 65536
MAX_LONG_STRING = 16 * 1024 * 1024

_DOUBLE = struct.Struct("!d")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_DATE = struct.Struct("!dh")


class AmfError(ValueError):
    """Malformed or unsupported AMF0 data."""


class _Undefined:
    """The AMF0 ``undefined`` value (distinct from Null / None)."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False


UNDEFINED = _Undefined()


class EcmaArray(dict):  # type: ignore[type-arg]
    """An associative array (AMF0 ECMA Array); onMetaData usually arrives as one."""


@dataclass(frozen=True)
class Date:
    """An AMF0 Date: milliseconds since the Unix epoch and a (reserved) time zone."""

    ms: float
    tz: int = 0


@dataclass(frozen=True)
class XmlDocument:
    """An AMF0 XML document (kept as text)."""

    text: str


@dataclass
class TypedObject:
    """An AMF0 typed object: a class name and its properties."""

    class_name: str
    properties: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- encoding


def _enc_str_body(s: str, out: list[bytes]) -> None:
    raw = s.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise AmfError(f"object key of {len(raw)} bytes is too long for AMF0")
    out.append(_U16.pack(len(raw)))
    out.append(raw)


def _enc_props(props: dict[str, Any], out: list[bytes], depth: int) -> None:
    for key, value in props.items():
        if not isinstance(key, str):
            raise AmfError(f"AMF0 object keys must be strings, not {type(key).__name__}")
        if not key:
            raise AmfError("AMF0 object keys must not be empty")
        _enc_str_body(key, out)
        _enc(value, out, depth + 1)
    out.append(b"\x00\x00\x09")


def _enc(value: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise AmfError(f"AMF0 value nested deeper than {MAX_DEPTH}")
    if value is None:
        out.append(b"\x05")
    elif value is UNDEFINED:
        out.append(b"\x06")
    elif isinstance(value, bool):
        out.append(b"\x01\x01" if value else b"\x01\x00")
    elif isinstance(value, int | float):
        out.append(b"\x00" + _DOUBLE.pack(float(value)))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) <= 0xFFFF:
            out.append(bytes((STRING,)) + _U16.pack(len(raw)))
        else:
            out.append(bytes((LONG_STRING,)) + _U32.pack(len(raw)))
        out.append(raw)
    elif isinstance(value, EcmaArray):
        out.append(bytes((ECMA_ARRAY,)) + _U32.pack(len(value)))
        _enc_props(value, out, depth)
    elif isinstance(value, dict):
        out.append(bytes((OBJECT,)))
        _enc_props(value, out, depth)
    elif isinstance(value, list | tuple):
        out.append(bytes((STRICT_ARRAY,)) + _U32.pack(len(value)))
        for item in value:
            _enc(item, out, depth + 1)
    elif isinstance(value, Date):
        out.append(bytes((DATE,)) + _DATE.pack(value.ms, value.tz))
    elif isinstance(value, XmlDocument):
        raw = value.text.encode("utf-8")
        out.append(bytes((XML_DOCUMENT,)) + _U32.pack(len(raw)))
        out.append(raw)
    elif isinstance(value, TypedObject):
        out.append(bytes((TYPED_OBJECT,)))
        _enc_str_body(value.class_name, out)
        _enc_props(value.properties, out, depth)
    else:
        raise AmfError(f"cannot encode {type(value).__name__} as AMF0")


def encode(*values: Any) -> bytes:
    """AMF0 bytes of the values, one after another (an RTMP command body)."""
    out: list[bytes] = []
    for v in values:
        _enc(v, out, 0)
    return b"".join(out)


# --------------------------------------------------------------------------- decoding


class _Decoder:
    __slots__ = ("data", "items", "pos", "refs")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.refs: list[Any] = []
        self.items = 0

    def need(self, n: int, what: str) -> int:
        pos = self.pos
        if pos + n > len(self.data):
            raise AmfError(f"AMF0 {what} truncated at offset {pos}")
        self.pos = pos + n
        return pos

    def count(self) -> None:
        self.items += 1
        if self.items > MAX_ITEMS:
            raise AmfError(f"AMF0 data has more than {MAX_ITEMS} values")

    def utf8(self, n: int, what: str) -> str:
        pos = self.need(n, what)
        try:
            return self.data[pos : pos + n].decode("utf-8")
        except UnicodeDecodeError:
            # Encoders do send Latin-1 in metadata; keep the text rather than fail.
            return self.data[pos : pos + n].decode("latin-1")

    def short_string(self, what: str) -> str:
        pos = self.need(2, what)
        (n,) = _U16.unpack_from(self.data, pos)
        return self.utf8(n, what)

    def props(self, target: dict[str, Any], depth: int) -> None:
        data = self.data
        while True:
            pos = self.need(2, "object key")
            (n,) = _U16.unpack_from(data, pos)
            if n == 0:
                if self.pos < len(data) and data[self.pos] == OBJECT_END:
                    self.pos += 1
                    return
                # Some encoders end ECMA arrays without the marker at the very end.
                if self.pos >= len(data):
                    return
                raise AmfError(f"AMF0 empty object key without end marker at offset {pos}")
            key = self.utf8(n, "object key")
            target[key] = self.value(depth + 1)

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise AmfError(f"AMF0 value nested deeper than {MAX_DEPTH}")
        self.count()
        data = self.data
        pos = self.need(1, "type marker")
        marker = data[pos]
        if marker == NUMBER:
            pos = self.need(8, "number")
            return _DOUBLE.unpack_from(data, pos)[0]
        if marker == BOOLEAN:
            pos = self.need(1, "boolean")
            return data[pos] != 0
        if marker == STRING:
            return self.short_string("string")
        if marker == OBJECT:
            obj: dict[str, Any] = {}
            self.refs.append(obj)
            self.props(obj, depth)
            return obj
        if marker == NULL:
            return None
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker == REFERENCE:
            pos = self.need(2, "reference")
            (index,) = _U16.unpack_from(data, pos)
            if index >= len(self.refs):
                raise AmfError(f"AMF0 reference {index} to an unknown object")
            return self.refs[index]
        if marker == ECMA_ARRAY:
            self.need(4, "ECMA array count")  # the count is advisory; the end marker rules
            arr = EcmaArray()
            self.refs.append(arr)
            self.props(arr, depth)
            return arr
        if marker == STRICT_ARRAY:
            pos = self.need(4, "strict array count")
            (n,) = _U32.unpack_from(data, pos)
            if n > MAX_ITEMS or n > len(data) - self.pos:
                raise AmfError(f"AMF0 strict array count {n} exceeds the data")
            items: list[Any] = []
            self.refs.append(items)
            for _ in range(n):
                items.append(self.value(depth + 1))
            return items
        if marker == DATE:
            pos = self.need(10, "date")
            ms, tz = _DATE.unpack_from(data, pos)
            return Date(ms, tz)
        if marker == LONG_STRING or marker == XML_DOCUMENT:
            pos = self.need(4, "long string")
            (n,) = _U32.unpack_from(data, pos)
            if n > MAX_LONG_STRING:
                raise AmfError(f"AMF0 long string of {n} bytes is too long")
            text = self.utf8(n, "long string")
            return text if marker == LONG_STRING else XmlDocument(text)
        if marker == TYPED_OBJECT:
            name = self.short_string("typed object class name")
            typed = TypedObject(name)
            self.refs.append(typed)
            self.props(typed.properties, depth)
            return typed
        if marker == UNSUPPORTED:
            return UNDEFINED
        if marker == AVMPLUS:
            raise AmfError("AMF3 values (AVM+ marker) are not supported")
        raise AmfError(f"unknown AMF0 type marker 0x{marker:02x} at offset {pos}")


def decode(data: bytes | bytearray | memoryview) -> list[Any]:
    """Every AMF0 value in ``data``; raises AmfError on malformed input."""
    d = _Decoder(data)
    out = []
    n = len(d.data)
    while d.pos < n:
        out.append(d.value(0))
    return out
