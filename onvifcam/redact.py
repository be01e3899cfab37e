"""Hiding secrets in URLs before they reach logs, statuses, errors and API answers.

A module of its own with no onvifcam imports, so that the configuration check, the clients
and the API can all use it without import cycles.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["redact"]

_PASSPHRASE = re.compile(r"([?&]passphrase=)[^&#]*", re.IGNORECASE)
# scheme://USER:PASSWORD@ when urlsplit cannot read the URL (a bad IPv6 literal)
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):[^/?#]*@")


def redact(uri: str) -> str:
    """``uri`` with any password (or SRT ``passphrase=``) replaced by ``***``: for logs,
    status, error messages and API answers. Anything that is not a URL comes back as is."""
    uri = _PASSPHRASE.sub(r"\1***", uri)
    try:
        parts = urlsplit(uri)
    except ValueError:
        return _USERINFO.sub(r"\1:***@", uri)
    if parts.password is None:
        return uri
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()
