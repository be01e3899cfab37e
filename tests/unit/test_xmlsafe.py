"""onvifcam.xmlsafe: encodings, DOCTYPE refusal, and that nothing on disk is ever opened."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from onvifcam import xmlsafe
from onvifcam.xmlsafe import DOCTYPE_REFUSED, XmlError

DOC = '<a xmlns="urn:x" b="1">h\u00e9llo \u4e16\u754c</a>'
BOMS = {
    "utf-8": b"\xef\xbb\xbf",
    "utf-16-le": b"\xff\xfe",
    "utf-16-be": b"\xfe\xff",
    "utf-32-le": b"\xff\xfe\x00\x00",
    "utf-32-be": b"\x00\x00\xfe\xff",
}
# (codec, with BOM, declared encoding or None): every way a client may send a document.
ENCODINGS = [
    ("utf-8", False, None),
    ("utf-8", False, "UTF-8"),
    ("utf-8", True, "utf-8"),
    ("utf-16-le", True, "UTF-16"),
    ("utf-16-be", True, "UTF-16"),
    ("utf-16-le", False, "UTF-16"),
    ("utf-16-be", False, "UTF-16"),
    ("utf-16-le", False, None),
    ("utf-16-be", True, None),
    ("utf-32-le", True, "UTF-32"),
    ("utf-32-be", False, "UTF-32"),
    ("utf-32-le", False, None),
]


def encode(text: str, codec: str, bom: bool, declared: str | None) -> bytes:
    """``text`` as a client would send it."""
    if declared is not None:
        text = f'<?xml version="1.0" encoding="{declared}"?>\n' + text
    return (BOMS[codec] if bom else b"") + text.encode(codec)


@pytest.mark.parametrize(("codec", "bom", "declared"), ENCODINGS)
def test_every_unicode_encoding_parses_to_the_same_tree(
    codec: str, bom: bool, declared: str | None
) -> None:
    root = xmlsafe.parse(encode(DOC, codec, bom, declared))
    assert root.tag == "{urn:x}a"
    assert root.text == "h\u00e9llo \u4e16\u754c"
    assert root.get("b") == "1"


def test_latin1_and_ascii_declarations() -> None:
    data = '<?xml version="1.0" encoding="ISO-8859-1"?><a>caf\u00e9</a>'.encode("latin-1")
    assert xmlsafe.parse(data).text == "caf\u00e9"
    assert xmlsafe.parse(b"<?xml version='1.0' encoding='us-ascii' ?><a>x</a>").text == "x"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'<?xml version="1.0" encoding="EBCDIC-US"?><a/>', "unsupported encoding"),
        (b'<?xml version="1.0" encoding="UTF-7"?><a/>', "unsupported encoding"),
        (b'<?xml version="1.0" encoding="UTF-16"?><a/>', "does not match"),
        (b'\xef\xbb\xbf<?xml version="1.0" encoding="ISO-8859-1"?><a/>', "does not match"),
        ('<?xml version="1.0" encoding="UTF-8"?><a/>'.encode("utf-16"), "does not match"),
        (b"\x00<\x00\x00a", "cannot tell the character encoding"),
        (b'<?xml version="1.0" encoding=UTF-8?><a/>', "malformed XML declaration"),
        (b"<a>\xff\xfe</a>", "invalid utf-8"),
        (b"\xff\xfe<\x00a\x00\x00\xd8>\x00", "invalid utf-16-le"),
        (b"<a>", "malformed XML"),
    ],
)
def test_refusals_say_why(data: bytes, why: str) -> None:
    with pytest.raises(XmlError) as exc:
        xmlsafe.parse(data)
    assert why in exc.value.reason


DTDS = [
    '<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>',
    '<!doctype a SYSTEM "file:///etc/passwd"><a/>',
    '<!DocType a PUBLIC "-//x//y" "http://192.0.2.1/x.dtd"><a/>',
    '<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><a>&e;</a>',
    '<!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><l>&b;</l>',
    '<a><![CDATA[ <!ENTITY x "y"> ]]></a>',  # refused too: over-refusal is harmless here
]


@pytest.mark.parametrize(("codec", "bom", "declared"), ENCODINGS)
@pytest.mark.parametrize("doc", DTDS)
def test_dtds_are_refused_in_every_encoding_with_one_text(
    doc: str, codec: str, bom: bool, declared: str | None
) -> None:
    with pytest.raises(XmlError) as exc:
        xmlsafe.parse(encode(doc, codec, bom, declared))
    assert exc.value.reason == DOCTYPE_REFUSED


@contextlib.contextmanager
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A FIFO: opening it to read blocks until a writer comes (and never one does)."""
    path = tmp_path / "blocker.dtd"
    os.mkfifo(path)
    yield path


def run_without_opening(path: Path, action: Callable[[], object]) -> BaseException | None:
    """Run ``action`` in a thread; fail (after unblocking it) if it opened the FIFO at ``path``.

    Returns what ``action`` raised, or None.
    """
    box: list[BaseException | None] = []

    def run() -> None:
        try:
            action()
            box.append(None)
        except Exception as exc:
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():  # blocked in open(): let it go, then fail
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        t.join(10)
        pytest.fail(f"the parser opened {path}")
    # Nobody has it open for reading: a non-blocking writer cannot open it (ENXIO).
    with pytest.raises(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    return box[0]


@pytest.mark.parametrize(("codec", "bom", "declared"), ENCODINGS)
def test_a_fifo_named_as_external_subset_is_never_opened(
    tmp_path: Path, codec: str, bom: bool, declared: str | None
) -> None:
    with fifo(tmp_path) as path:
        data = encode(f'<!DOCTYPE a SYSTEM "file://{path}"><a/>', codec, bom, declared)
        exc = run_without_opening(path, lambda: xmlsafe.parse(data))
    assert isinstance(exc, XmlError)
    assert exc.reason == DOCTYPE_REFUSED


def test_the_parser_itself_never_loads_an_external_subset(tmp_path: Path) -> None:
    """Defence in depth: even bytes that skip the DOCTYPE check do not reach the file."""
    with fifo(tmp_path) as path:
        data = f'<!DOCTYPE a SYSTEM "file://{path}"><a/>'.encode()
        assert run_without_opening(path, lambda: etree.fromstring(data, xmlsafe._parser())) is None


def test_the_resolver_refuses_what_libxml2_would_load(tmp_path: Path) -> None:
    """collect_ids=False makes libxml2 load the subset; the resolver still stops it."""
    parser = etree.XMLParser(load_dtd=False, no_network=True, collect_ids=False)
    parser.resolvers.add(xmlsafe._RefuseAll())
    with fifo(tmp_path) as path:
        data = f'<!DOCTYPE a SYSTEM "file://{path}"><a/>'.encode()
        exc = run_without_opening(path, lambda: etree.fromstring(data, parser))
    assert isinstance(exc, XmlError)


def test_line_numbers_survive_the_dropped_declaration() -> None:
    data = '<?xml version="1.0"\n encoding="UTF-16"?>\n<a>\n<b></a>'.encode("utf-16")
    with pytest.raises(XmlError) as exc:
        xmlsafe.parse(data)
    assert "line 4" in exc.value.reason


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_xml_error(data: bytes) -> None:
    try:
        xmlsafe.parse(data)
    except XmlError:
        pass


PIECES = st.sampled_from(
    [
        "<a>",
        "</a>",
        "<?xml version='1.0'?>",
        '<?xml version="1.0" encoding="utf-16"?>',
        "<!DOCTYPE a>",
        "<!-- c -->",
        "&amp;",
        "&e;",
        "<![CDATA[x]]>",
        "\ufeff",
        "\x00",
        " ",
        "\u00e9",
        "\U0001f600",
    ]
)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(PIECES | st.text(max_size=5), max_size=12),
    st.sampled_from(["utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "latin-1"]),
    st.booleans(),
)
def test_xml_like_documents_in_any_encoding_only_raise_xml_error(
    pieces: list[str], codec: str, bom: bool
) -> None:
    text = "".join(pieces)
    try:
        data = (BOMS.get(codec, b"") if bom else b"") + text.encode(codec, "replace")
    except UnicodeEncodeError:
        return
    try:
        root = xmlsafe.parse(data)
    except XmlError:
        return
    assert root.getroottree().docinfo.doctype == ""
