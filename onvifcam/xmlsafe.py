"""The one way onvifcam parses XML from the network (SOAP bodies, WS-Discovery datagrams).

libxml2 opens the file named by an external DTD subset (``<!DOCTYPE x SYSTEM "file:///...">``)
even with ``load_dtd=False`` and ``no_network=True`` under some parser options, and a FIFO there
blocks the event loop forever. A byte search for ``<!DOCTYPE`` is no guard either: the same
document in UTF-16 has no such bytes. So libxml2 never gets the bytes as sent:

1. :func:`decode` finds the encoding from the byte order mark or the first bytes and the XML
   declaration (XML 1.0 Appendix F), accepts only UTF-8, UTF-16, UTF-32, US-ASCII and
   ISO-8859-1, and decodes strictly to text;
2. any DOCTYPE or ENTITY declaration (in any letter case) is refused with one fixed reason,
   before libxml2 sees the document, so whether a named file exists can never show;
3. the XML declaration is dropped and the text goes to libxml2 as UTF-8, so libxml2 never
   picks an encoding of its own;
4. the parser has no entity expansion, no network, no DTD loading, no huge trees, and a
   resolver that refuses every external load (defence in depth: it is never reached).

Every failure raises :class:`XmlError`, whose ``reason`` is safe to put on the wire.
"""

from __future__ import annotations

import re
import threading

from lxml import etree

__all__ = ["DOCTYPE_REFUSED", "EXTERNAL_REFUSED", "XmlError", "decode", "parse"]

DOCTYPE_REFUSED = "DTDs (DOCTYPE and ENTITY declarations) are not allowed"
EXTERNAL_REFUSED = "external references are not allowed"


class XmlError(ValueError):
    """The bytes are not a document we accept; ``reason`` says why (safe to show a client)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Names of the encodings we accept (lower case, as declared) -> the Python codec.
_ASCII_COMPATIBLE = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "us-ascii": "ascii",
    "ascii": "ascii",
    "iso-8859-1": "latin-1",
    "iso8859-1": "latin-1",
    "latin1": "latin-1",
    "latin-1": "latin-1",
}
_UTF16 = {"utf-16", "utf-16le", "utf-16be", "utf16", "ucs-2", "iso-10646-ucs-2"}
_UTF32 = {"utf-32", "utf-32le", "utf-32be", "utf32", "ucs-4", "iso-10646-ucs-4"}

_BOMS = (  # longest first: FF FE 00 00 is UTF-32LE, not UTF-16LE
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)

# XML 1.0 [23] XMLDecl. Quotes must match; the order of the pseudo-attributes is fixed by
# the grammar. It is ASCII, so it is matched on the bytes of ASCII-compatible documents (its
# length in bytes is then its length in characters) and on the text of UTF-16/32 ones.
_S = r"[ \t\r\n]"
_XMLDECL_RE = (
    rf"<\?xml(?:{_S}|\?)(?:(?<={_S}){_S}*version{_S}*={_S}*(?:\"1\.[0-9]+\"|'1\.[0-9]+')"
    rf"(?:{_S}+encoding{_S}*={_S}*(?:\"(?P<e1>[A-Za-z][A-Za-z0-9._-]*)\""
    rf"|'(?P<e2>[A-Za-z][A-Za-z0-9._-]*)'))?"
    rf"(?:{_S}+standalone{_S}*={_S}*(?:\"(?:yes|no)\"|'(?:yes|no)'))?{_S}*\?>)?"
)
_XMLDECL = re.compile(_XMLDECL_RE)
_XMLDECL_B = re.compile(_XMLDECL_RE.encode())
# Only a DTD can declare entities or name an external subset; refuse both in any case.
_DTD = re.compile(r"<!(?:doctype|entity)", re.IGNORECASE)
_UNSUPPORTED = "unsupported encoding {!r} (use UTF-8, UTF-16 or UTF-32)"


def _declared(m: re.Match[str] | re.Match[bytes] | None) -> tuple[str | None, int]:
    """(declared encoding in lower case or None, declaration length) from a _XMLDECL match."""
    if m is None:  # no "<?xml" + blank at the start: no declaration
        return None, 0
    whole = m.group(0)
    if isinstance(whole, bytes):
        whole = whole.decode("ascii")
    if not whole.endswith("?>"):
        raise XmlError("malformed XML declaration")
    enc = m.group("e1") or m.group("e2")
    if isinstance(enc, bytes):
        enc = enc.decode("ascii")
    return (enc.lower() if enc else None), m.end()


def _sniff(data: bytes) -> tuple[str | None, int]:
    """(codec, or None for "ASCII-compatible, ask the declaration"; BOM length)."""
    if data[:1] == b"<" and data[1:2] != b"\x00":  # the usual case: no BOM, UTF-8 or ASCII
        return None, 0
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return codec, len(bom)
    head = data[:4]
    if len(head) < 4 or b"\x00" not in head:
        return None, 0
    zeros = tuple(b == 0 for b in head)
    codec = _BY_ZEROS.get(zeros)
    if codec is None:
        raise XmlError("cannot tell the character encoding (use UTF-8, UTF-16 or UTF-32)")
    return codec, 0


# Where the NUL bytes are in the first four bytes of "<" or whitespace in each encoding.
_BY_ZEROS = {
    (True, True, True, False): "utf-32-be",
    (False, True, True, True): "utf-32-le",
    (True, False, True, False): "utf-16-be",
    (False, True, False, True): "utf-16-le",
}


def _strict(data: bytes, codec: str, offset: int) -> str:
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        raise XmlError(f"invalid {codec} at byte {exc.start + offset}") from None


def decode(data: bytes) -> tuple[str, int]:
    """The document as text, and the length of its XML declaration (0 if none).

    Raises :class:`XmlError` for an unsupported or inconsistent encoding or bad bytes.
    """
    codec, bom = _sniff(data)
    if codec is None or codec == "utf-8":
        # ASCII-compatible: the declaration (ASCII by the grammar) names the encoding.
        declared, decl_len = _declared(_XMLDECL_B.match(data, bom))
        decl_len = max(0, decl_len - bom)
        if declared is None:
            found = "utf-8"
        else:
            found = _ASCII_COMPATIBLE.get(declared, "")
            if declared in _UTF16 or declared in _UTF32:
                raise XmlError(f"declared encoding {declared!r} does not match the bytes")
            if not found:
                raise XmlError(_UNSUPPORTED.format(declared[:40]))
            if codec == "utf-8" and found != "utf-8":
                raise XmlError(f"declared encoding {declared!r} does not match the UTF-8 BOM")
        return _strict(data[bom:], found, bom), decl_len
    text = _strict(data[bom:], codec, bom)
    declared, decl_len = _declared(_XMLDECL.match(text))
    family = _UTF16 if codec.startswith("utf-16") else _UTF32
    if declared is not None and declared not in family:
        raise XmlError(f"declared encoding {declared[:40]!r} does not match the {codec} bytes")
    return text, decl_len


class _RefuseAll(etree.Resolver):
    """Refuses every external load (DTD subsets, entities, XIncludes) libxml2 asks for."""

    def resolve(self, system_url: str | None, public_id: str | None, context: object) -> None:
        raise XmlError(EXTERNAL_REFUSED)


def _new_parser() -> etree.XMLParser:
    # collect_ids=False is left out on purpose: lxml then sets libxml2's XML_SKIP_IDS bit,
    # which makes libxml2 load the external subset despite load_dtd=False.
    parser = etree.XMLParser(
        encoding="utf-8",
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    parser.resolvers.add(_RefuseAll())
    return parser


_local = threading.local()  # lxml parsers must not be shared between threads


def _parser() -> etree.XMLParser:
    p: etree.XMLParser | None = getattr(_local, "parser", None)
    if p is None:
        p = _local.parser = _new_parser()
    return p


def parse(data: bytes) -> etree._Element:
    """Parse untrusted XML bytes into the root element; raises :class:`XmlError` only.

    Never opens a file or a socket, whatever the document says or how it is encoded.
    """
    text, decl_len = decode(bytes(data))
    if _DTD.search(text):
        raise XmlError(DOCTYPE_REFUSED)
    # Keep line numbers in libxml2's messages: the declaration becomes its own newlines.
    body = "\n" * text.count("\n", 0, decl_len) + text[decl_len:]
    try:
        root = etree.fromstring(body.encode("utf-8"), _parser())
    except XmlError:
        raise XmlError(EXTERNAL_REFUSED) from None
    except etree.XMLSyntaxError as exc:
        raise XmlError(f"malformed XML: {str(exc.msg)[:200]}") from None
    except (ValueError, etree.LxmlError) as exc:
        raise XmlError(f"malformed XML: {str(exc)[:200]}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise XmlError(DOCTYPE_REFUSED)
    return root
