"""Hiding secrets in URLs before they reach logs, statuses, errors and API answers.

A module of its own with no onvifcam imports, so that the configuration check, the clients
and the API can all use it without import cycles.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["redact"]

# a secret query value: SRT passphrase=, a stream key= (RTSP/RTMP/SRT), pass=/password=,
# token=; also where a URL carries it %-encoded (inside an SRT streamid=)
_SEP = r"(?:[?&]|%3F|%26)"
_SECRET_PARAM = re.compile(
    rf"({_SEP}(?:passphrase|pass|password|key|token)(?:=|%3D))(?:(?!%26)[^&#])*", re.IGNORECASE
)
# an SRT stream id with credentials: MediaMTX's ACTION:PATH:USER:PASS...
_C = r"(?::|%3A)"
_STREAMID_PASS = re.compile(
    rf"(streamid=(?:publish|read|request|play){_C}(?:(?!%3A)[^:&#])*{_C}(?:(?!%3A)[^:&#])*{_C})"
    r"(?:(?!%3A|%3F)[^:?&#])*",
    re.IGNORECASE,
)
# ...and the access-control syntax #!::...,s=PASS (s= is the secret)
_STREAMID_S = re.compile(r"((?:,|%2C)s(?:=|%3D))(?:(?!%2C)[^,&#])*", re.IGNORECASE)
# scheme://USER:PASSWORD@ when urlsplit cannot read the URL (a bad IPv6 literal)
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):[^/?#]*@")


def redact(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (the URL's own, an SRT ``passphrase=``,
    a ``key=``/``pass=``/``token=`` query value, the password of an SRT stream id): for logs,
    status, error messages and API answers. Anything that is not a URL comes back as is. A
    stream key written as a path segment (``rtmp://cdn/live/KEY``) cannot be told apart
    from a path and stays."""
    uri = _SECRET_PARAM.sub(r"\1***", uri)
    uri = _STREAMID_PASS.sub(r"\1***", uri)
    if "streamid=#!::" in uri or "streamid=%23%21%3a%3a" in uri.lower():
        uri = _STREAMID_S.sub(r"\1***", uri)
    try:
        parts = urlsplit(uri)
    except ValueError:
        return _USERINFO.sub(r"\1:***@", uri)
    if parts.password is None:
        return uri
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()
