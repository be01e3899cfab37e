"""SDP (RFC 8866) parsing and serialisation for RTSP ANNOUNCE/DESCRIBE bodies.

Lenient on what encoders really send (LF line ends, missing o=/s=/t=, unknown lines),
strict on structure and size. Parsers raise only :class:`SdpError`, naming the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "MAX_MEDIA",
    "MAX_SDP_SIZE",
    "STATIC_PAYLOAD_TYPES",
    "MediaDescription",
    "SdpError",
    "SessionDescription",
    "resolve_control",
]

MAX_SDP_SIZE = 64 * 1024
MAX_MEDIA = 16

# RFC 3551 static payload types: pt -> (encoding, clock rate, channels)
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int | None]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    14: ("MPA", 90000, None),
    15: ("G728", 8000, 1),
    18: ("G729", 8000, 1),
    26: ("JPEG", 90000, None),
    31: ("H261", 90000, None),
    32: ("MPV", 90000, None),
    33: ("MP2T", 90000, None),
    34: ("H263", 90000, None),
}

Attribute = tuple[str, str | None]


class SdpError(ValueError):
    """Malformed or unacceptable SDP."""


def _decimal(text: str, max_digits: int = 10) -> int | None:
    """``text`` as a non-negative integer of at most ``max_digits`` significant digits, else
    None (int() itself refuses strings of over 4300 digits with a plain ValueError)."""
    text = text.strip()
    if not text.isdecimal() or len(text.lstrip("0")) > max_digits:
        return None
    return int(text)


def _split_attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    return (name.strip(), rest if sep else None)


def _split_pt(value: str) -> tuple[str, str]:
    """``"96 H264/90000"`` -> ("96", "H264/90000")."""
    parts = value.strip().split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def _parse_rtpmap(value: str) -> tuple[int, tuple[str, int, int | None]] | None:
    """``96 H264/90000`` -> (96, ("H264", 90000, None)); None when not an rtpmap."""
    pt_text, spec = _split_pt(value)
    parts = spec.split("/")
    try:
        pt = int(pt_text)
        rate = int(parts[1])
        channels = int(parts[2]) if len(parts) > 2 and parts[2].strip() else None
    except (ValueError, IndexError):
        return None
    if not parts[0] or not 0 <= pt <= 127 or rate <= 0:
        return None
    return pt, (parts[0].strip(), rate, channels)


def _parse_fmtp(value: str) -> tuple[int, dict[str, str]] | None:
    pt_text, params = _split_pt(value)
    try:
        pt = int(pt_text)
    except ValueError:
        return None
    out: dict[str, str] = {}
    for item in params.split(";"):
        key, _, val = item.strip().partition("=")
        if key.strip():
            out[key.strip().lower()] = val.strip()
    return pt, out


@dataclass
class MediaDescription:
    """One ``m=`` section."""

    media: str
    port: int
    proto: str
    formats: list[str]
    attributes: list[Attribute] = field(default_factory=list)
    connection: str | None = None
    bandwidth: list[str] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        """Value of the first attribute called ``name`` (case-insensitive), else None."""
        return _first(self.attributes, name)

    def get_all(self, name: str) -> list[str | None]:
        """Values of every attribute called ``name`` (case-insensitive)."""
        lname = name.lower()
        return [value for key, value in self.attributes if key.lower() == lname]

    @property
    def control(self) -> str | None:
        """The ``a=control`` value as given, or None."""
        value = self.get("control")
        return value.strip() if value is not None else None

    @property
    def rtpmap(self) -> dict[int, tuple[str, int, int | None]]:
        """pt -> (encoding name as given, clock rate, channels or None)."""
        out: dict[int, tuple[str, int, int | None]] = {}
        for value in self.get_all("rtpmap"):
            parsed = _parse_rtpmap(value or "")
            if parsed is not None and parsed[0] not in out:
                out[parsed[0]] = parsed[1]
        return out

    @property
    def fmtp(self) -> dict[int, dict[str, str]]:
        """pt -> format parameters (keys lower-cased, values as given)."""
        out: dict[int, dict[str, str]] = {}
        for value in self.get_all("fmtp"):
            parsed = _parse_fmtp(value or "")
            if parsed is not None and parsed[0] not in out:
                out[parsed[0]] = parsed[1]
        return out

    @property
    def payload_type(self) -> int:
        """The first format as an RTP payload type (validated at parse for RTP protos)."""
        try:
            pt = int(self.formats[0])
        except (ValueError, IndexError) as exc:
            raise SdpError(f"{self.media} media has no numeric payload type") from exc
        if not 0 <= pt <= 127:
            raise SdpError(f"{self.media} media payload type {pt} out of range")
        return pt

    def _format(self) -> tuple[str, int, int | None]:
        try:
            pt = self.payload_type
        except SdpError:
            return ("", 0, None)
        mapped = self.rtpmap.get(pt)
        if mapped is not None:
            return mapped
        return STATIC_PAYLOAD_TYPES.get(pt, ("", 0, None))

    @property
    def encoding(self) -> str:
        """Upper-cased encoding name of the first format (static types filled in).

        Empty when the first format is a dynamic payload type without an rtpmap.
        """
        return self._format()[0].upper()

    @property
    def clock_rate(self) -> int:
        """RTP clock rate of the first format; 0 when unknown (no rtpmap, not static)."""
        return self._format()[1]

    @property
    def channels(self) -> int | None:
        """Channel count of the first format, if given."""
        return self._format()[2]

    def _lines(self) -> list[str]:
        lines = [f"m={self.media} {self.port} {self.proto} {' '.join(self.formats)}".rstrip()]
        if self.connection:
            lines.append(f"c={self.connection}")
        lines.extend(f"b={b}" for b in self.bandwidth)
        lines.extend(_attribute_line(a) for a in self.attributes)
        return lines


def _first(attributes: list[Attribute], name: str) -> str | None:
    lname = name.lower()
    for key, value in attributes:
        if key.lower() == lname:
            return value
    return None


def _attribute_line(attr: Attribute) -> str:
    name, value = attr
    return f"a={name}" if value is None else f"a={name}:{value}"


@dataclass
class SessionDescription:
    """A whole SDP document: session-level fields plus media sections."""

    version: int = 0
    origin: str | None = None
    name: str | None = None
    connection: str | None = None
    times: list[str] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    bandwidth: list[str] = field(default_factory=list)
    info: str | None = None

    def get(self, name: str) -> str | None:
        """Value of the first session attribute called ``name`` (case-insensitive)."""
        return _first(self.attributes, name)

    @property
    def control(self) -> str | None:
        """The session-level ``a=control`` value as given, or None."""
        value = self.get("control")
        return value.strip() if value is not None else None

    @classmethod
    def parse(cls, text: str | bytes, *, require_media: bool = True) -> SessionDescription:
        """Parse SDP text (CRLF or LF). Unknown line types and attributes are kept/ignored.

        Raises :class:`SdpError` naming the line on malformed input, over
        :data:`MAX_SDP_SIZE` bytes, over :data:`MAX_MEDIA` media sections, or (with
        ``require_media``) when there is no ``m=`` line.
        """
        if isinstance(text, bytes | bytearray | memoryview):
            if len(text) > MAX_SDP_SIZE:
                raise SdpError(f"SDP larger than {MAX_SDP_SIZE} bytes")
            text = bytes(text).decode("utf-8", errors="replace")
        elif len(text) > MAX_SDP_SIZE or len(text.encode("utf-8", "replace")) > MAX_SDP_SIZE:
            raise SdpError(f"SDP larger than {MAX_SDP_SIZE} bytes")
        sdp = cls()
        current: MediaDescription | None = None
        for number, line in enumerate(text.split("\n"), start=1):
            line = line.rstrip("\r").strip()
            if not line:
                continue
            if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
                raise SdpError(f"malformed SDP line {number}: {line[:40]!r}")
            kind, value = line[0], line[2:]
            if kind == "v":
                if current is not None:
                    raise SdpError(f"v= inside a media section on line {number}")
                try:
                    sdp.version = int(value)
                except ValueError:
                    raise SdpError(f"invalid version {value[:20]!r} on line {number}") from None
                if sdp.version != 0:
                    raise SdpError(f"unsupported SDP version {sdp.version} on line {number}")
            elif kind == "m":
                if len(sdp.media) >= MAX_MEDIA:
                    raise SdpError(f"more than {MAX_MEDIA} media sections at line {number}")
                current = _parse_media_line(value, number)
                sdp.media.append(current)
            elif kind == "a":
                attr = _split_attribute(value)
                if not attr[0]:
                    raise SdpError(f"attribute without a name on line {number}")
                _check_attribute(attr, number)
                (current.attributes if current is not None else sdp.attributes).append(attr)
            elif kind == "c":
                if current is not None:
                    current.connection = value
                else:
                    sdp.connection = value
            elif kind == "b":
                (current.bandwidth if current is not None else sdp.bandwidth).append(value)
            elif current is not None:
                continue  # i=, k= and unknown media-level lines
            elif kind == "o":
                sdp.origin = value
            elif kind == "s":
                sdp.name = value
            elif kind == "i":
                sdp.info = value
            elif kind == "t":
                sdp.times.append(value)
        if require_media and not sdp.media:
            raise SdpError("SDP has no m= line")
        return sdp

    def serialize(self) -> bytes:
        """CRLF-terminated SDP with v, o, s, (i), c, b, t, a, then each media section."""
        lines = [
            f"v={self.version}",
            f"o={self.origin or '- 0 0 IN IP4 127.0.0.1'}",
            f"s={self.name or ' '}",
        ]
        if self.info:
            lines.append(f"i={self.info}")
        if self.connection:
            lines.append(f"c={self.connection}")
        lines.extend(f"b={b}" for b in self.bandwidth)
        lines.extend(f"t={t}" for t in self.times or ["0 0"])
        lines.extend(_attribute_line(a) for a in self.attributes)
        for media in self.media:
            lines.extend(media._lines())
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _parse_media_line(value: str, number: int) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"m= line needs media, port, proto and formats on line {number}")
    port_text = parts[1].partition("/")[0]
    try:
        port = int(port_text)
    except ValueError:
        raise SdpError(f"invalid port {parts[1][:20]!r} in m= line {number}") from None
    if not 0 <= port <= 65535:
        raise SdpError(f"port {port} out of range in m= line {number}")
    if parts[2].upper().startswith("RTP/"):
        for fmt in parts[3:]:
            pt = _decimal(fmt)
            if pt is None or pt > 127:
                raise SdpError(f"invalid RTP payload type {fmt[:20]!r} in m= line {number}")
    return MediaDescription(media=parts[0], port=port, proto=parts[2], formats=parts[3:])


def _check_attribute(attr: Attribute, number: int) -> None:
    name, value = attr
    lname = name.lower()
    if lname == "rtpmap":
        pt_text, spec = _split_pt(value or "")
        pt = _decimal(pt_text)
        if pt is None or pt > 127:
            raise SdpError(f"rtpmap with invalid payload type on line {number}")
        encoding, _, rest = spec.partition("/")
        if not encoding:
            raise SdpError(f"rtpmap without encoding name on line {number}")
        rate, _, channels = rest.partition("/")
        if not rate.strip():
            raise SdpError(f"rtpmap without clock rate on line {number}")
        if not _decimal(rate):
            raise SdpError(f"rtpmap with invalid clock rate {rate[:20]!r} on line {number}")
        if channels.strip() and not channels.strip().isdecimal():
            raise SdpError(f"rtpmap with invalid channel count on line {number}")
    elif lname == "fmtp":
        pt_text = _split_pt(value or "")[0]
        if not pt_text.isdecimal():
            raise SdpError(f"fmtp with invalid payload type on line {number}")


def resolve_control(base: str, control: str | None) -> str:
    """Resolve an ``a=control`` value against a base URL the way RTSP clients do.

    Absolute URLs are returned as is; None, empty and ``*`` mean the base itself; an
    absolute path replaces the base's path; anything else (``trackID=1``, ``streamid=0``,
    ``stream=0``) is appended to the base with exactly one ``/`` between them.
    """
    if control is None:
        return base
    control = control.strip()
    if not control or control == "*":
        return base
    scheme, sep, _ = control.partition("://")
    if sep and scheme and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
        return control
    if control.startswith("/"):
        scheme, sep, rest = base.partition("://")
        if sep:
            authority = rest.split("/", 1)[0].split("?", 1)[0]
            return f"{scheme}://{authority}{control}"
        return control
    if control.startswith("?") or base.endswith("/"):
        return base + control
    return f"{base}/{control}"
