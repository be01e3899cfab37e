"""Validate SOAP envelopes against the official ONVIF WSDL/XSD files in wsdl/.

The schemas embedded in the Device, Media, Media2, Events, DeviceIO, PTZ and Imaging WSDLs
are extracted (with the WSDL root's namespace declarations merged in), and every file is
copied to a temporary tree. WS-BaseNotification's elements (b-2.xsd: Subscribe, Renew,
Notify...) count as declared responses too.
libxml2 rejects a few official types as non-deterministic (an optional element followed by
an ``xs:any`` of ``##any`` / ``##targetNamespace``); only the wildcards of the types it
names (or of the anonymous type at the line it reports) are narrowed to ``##other``, one at
a time, in that test-only copy. wsdl/ stays byte-identical to the official files.
"""

from __future__ import annotations

import functools
import re
import shutil
import tempfile
from pathlib import Path

from lxml import etree

WSDL_DIR = Path(__file__).resolve().parent.parent / "wsdl"
XS = "http://www.w3.org/2001/XMLSchema"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
ENV12 = "http://www.w3.org/2003/05/soap-envelope"

_WSDLS = [
    "ver10/device/wsdl/devicemgmt.wsdl",
    "ver10/media/wsdl/media.wsdl",
    "ver20/media/wsdl/media.wsdl",
    "ver10/events/wsdl/event.wsdl",
    "ver10/deviceio.wsdl",
    "ver20/ptz/wsdl/ptz.wsdl",
    "ver20/imaging/wsdl/imaging.wsdl",
]
_DECLARING_XSDS = ["schema/common/b-2.xsd"]
_IMPORTS = {
    "http://www.onvif.org/ver10/schema": "ver10/schema/onvif.xsd",
    ENV12: "schema/common/soap-envelope",
    "http://www.w3.org/2005/08/addressing": "schema/common/ws-addr.xsd",
    "http://docs.oasis-open.org/wsn/b-2": "schema/common/b-2.xsd",
}


class SchemaError(AssertionError):
    """A response that does not validate against the ONVIF schemas."""


def _build(tmp: Path) -> tuple[etree.XMLSchema, frozenset[str]]:
    for src in WSDL_DIR.rglob("*"):
        if src.is_file():
            dst = tmp / src.relative_to(WSDL_DIR)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
    imports = dict(_IMPORTS)
    names: set[str] = set()
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)
    for i, rel in enumerate(_WSDLS):
        path = tmp / rel
        root = etree.parse(str(path), parser).getroot()
        for j, schema in enumerate(root.iter(f"{{{XS}}}schema")):
            nsmap = {**{k: v for k, v in root.nsmap.items() if k}, **schema.nsmap}
            new = etree.Element(f"{{{XS}}}schema", nsmap=nsmap)
            for k, v in schema.attrib.items():
                new.set(k, v)
            for child in schema:
                new.append(child)
            for imp in new.iter(f"{{{XS}}}import"):
                loc = imp.get("schemaLocation")
                if loc:
                    imp.set("schemaLocation", str((path.parent / loc).resolve()))
            tns = new.get("targetNamespace", "")
            names.update(f"{{{tns}}}{e.get('name')}" for e in new.findall(f"{{{XS}}}element"))
            out = path.parent / f"_embedded_{i}_{j}.xsd"
            out.write_bytes(etree.tostring(new))
            imports.setdefault(new.get("targetNamespace", ""), str(out))
    for rel in _DECLARING_XSDS:
        root = etree.parse(str(tmp / rel), parser).getroot()
        tns = root.get("targetNamespace", "")
        names.update(f"{{{tns}}}{e.get('name')}" for e in root.findall(f"{{{XS}}}element"))
    master = etree.Element(f"{{{XS}}}schema", nsmap={"xs": XS})
    for ns, loc in imports.items():
        full = loc if loc.startswith("/") else str(tmp / loc)
        etree.SubElement(master, f"{{{XS}}}import", namespace=ns, schemaLocation=full)
    doc = etree.fromstring(etree.tostring(master), parser, base_url=str(tmp / "master.xsd"))
    for _attempt in range(100):
        try:
            return etree.XMLSchema(doc), frozenset(names)
        except etree.XMLSchemaParseError as exc:
            m = re.search(r"complex type '([^']+)': The content model is not determinist", str(exc))
            if m is not None and _narrow_type(tmp, m.group(1)):
                continue
            if "local complex type: The content model is not determinist" in str(exc):
                last = exc.error_log.last_error
                if last is not None and _narrow_local(Path(last.filename), last.line):
                    continue
            raise
    raise RuntimeError("could not make the ONVIF schemas deterministic")


def _narrow_type(tmp: Path, name: str) -> bool:
    """Narrow the wildcards of complex type ``name`` (wherever it is defined) to ##other."""
    needle = f'complexType name="{name}"'
    for path in tmp.rglob("*"):
        if not path.is_file() or path.suffix not in (".xsd", ".wsdl"):
            continue
        if needle not in path.read_text(encoding="utf-8"):
            continue
        tree = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True))
        changed = False
        for ct in tree.iter(f"{{{XS}}}complexType"):
            if ct.get("name") != name:
                continue
            for wildcard in ct.iter(f"{{{XS}}}any"):
                if wildcard.get("namespace", "##any") in ("##any", "##targetNamespace"):
                    wildcard.set("namespace", "##other")
                    changed = True
        if changed:
            tree.write(str(path), encoding="utf-8", xml_declaration=True)
            return True
    return False


def _narrow_local(path: Path, line: int) -> bool:
    """Narrow the wildcards of the anonymous complex type at ``line`` of ``path`` to ##other
    (e.g. PTZ's MoveAndStartTracking request)."""
    tree = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True))
    changed = False
    for ct in tree.iter(f"{{{XS}}}complexType"):
        if ct.sourceline != line or ct.get("name"):
            continue
        for wildcard in ct.iter(f"{{{XS}}}any"):
            if wildcard.get("namespace", "##any") in ("##any", "##targetNamespace"):
                wildcard.set("namespace", "##other")
                changed = True
    if changed:
        tree.write(str(path), encoding="utf-8", xml_declaration=True)
    return changed


@functools.lru_cache(maxsize=1)
def _compiled() -> tuple[etree.XMLSchema, frozenset[str]]:
    tmp = Path(tempfile.mkdtemp(prefix="onvifcam-wsdl-"))
    try:
        return _build(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def schema() -> etree.XMLSchema:
    """The compiled schema set (built once per test process)."""
    return _compiled()[0]


def declared() -> frozenset[str]:
    """QNames of the request/response elements the WSDLs declare."""
    return _compiled()[1]


def validate(xml: bytes | str | etree._Element) -> etree._Element:
    """Validate a SOAP 1.2 envelope (bytes or element); returns the parsed root.

    Raises SchemaError naming every violation. The Body's children are validated
    strictly when the schemas declare them (``processContents="lax"`` in the envelope).
    """
    if isinstance(xml, etree._Element):
        root = xml
    else:
        data = xml.encode() if isinstance(xml, str) else xml
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    if root.tag != f"{{{ENV12}}}Envelope":
        raise SchemaError(f"not a SOAP 1.2 envelope: {root.tag}")
    s = schema()
    if not s.validate(root):
        errors = "\n".join(f"line {e.line}: {e.message}" for e in s.error_log)
        raise SchemaError(f"ONVIF schema violations:\n{errors}")
    body = root.find(f"{{{ENV12}}}Body")
    if body is None or len(body) == 0:
        raise SchemaError("SOAP Body is empty")
    child = body[0]
    if child.tag != f"{{{ENV12}}}Fault" and child.tag not in declared():
        raise SchemaError(f"response element {child.tag} is not declared in the schemas")
    return root


# --------------------------------------------------------------------------- request helpers

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PW_DIGEST = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)
PW_TEXT = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordText"
)


def created_now(offset: float = 0.0, millis: bool = True) -> str:
    """A wsu:Created value for now (+offset seconds), with or without milliseconds."""
    import datetime as dt

    t = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)
    spec = "milliseconds" if millis else "seconds"
    return t.isoformat(timespec=spec).replace("+00:00", "Z")


def security_header(
    username: str,
    password: str,
    *,
    digest: bool = True,
    nonce: bytes | None = None,
    created: str | None = None,
) -> str:
    """A wsse:Security header with a UsernameToken (PasswordDigest by default)."""
    import base64
    import hashlib
    import os

    nonce = os.urandom(16) if nonce is None else nonce
    created = created_now() if created is None else created
    if digest:
        pw = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest())
        pw_text, ptype = pw.decode(), PW_DIGEST
    else:
        pw_text, ptype = password, PW_TEXT
    return (
        f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}" s:mustUnderstand="true">'
        f"<wsse:UsernameToken><wsse:Username>{username}</wsse:Username>"
        f'<wsse:Password Type="{ptype}">{pw_text}</wsse:Password>'
        f"<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce>"
        f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"
    )


def envelope(body: str, header: str = "") -> bytes:
    """A SOAP 1.2 request envelope around ``body`` (and an optional header block)."""
    head = f"<s:Header>{header}</s:Header>" if header else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{ENV12}" xmlns:tds="http://www.onvif.org/ver10/device/wsdl" '
        f'xmlns:trt="http://www.onvif.org/ver10/media/wsdl" '
        f'xmlns:tr2="http://www.onvif.org/ver20/media/wsdl" '
        f'xmlns:tt="http://www.onvif.org/ver10/schema">'
        f"{head}<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def fault_subcodes(xml: bytes) -> list[str]:
    """The Subcode values of a SOAP 1.2 fault, outermost first."""
    root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
    return [
        (v.text or "").strip()
        for v in root.iter(f"{{{ENV12}}}Value")
        if v.getparent() is not None and v.getparent().tag == f"{{{ENV12}}}Subcode"
    ]
