"""xs:duration and xs:dateTime as ONVIF clients send them, and UTC times as they expect them.

Clients send every form of duration (``PT60S``, ``PT1M``, ``PT600S``, ``PT0.5S``,
``P1DT2H``) and absolute times with ``Z``, an offset, or nothing (taken as UTC). Answers
always carry UTC with ``Z`` and whole seconds: the npm ``onvif`` package only accepts
``...Z`` and Home Assistant compares the two times it gets.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re

_DURATION = re.compile(
    r"(?P<sign>-)?P(?!$)"
    r"(?:(?P<y>\d+(?:\.\d+)?)Y)?(?:(?P<mo>\d+(?:\.\d+)?)M)?(?:(?P<w>\d+(?:\.\d+)?)W)?"
    r"(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<mi>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)
_UNITS = {
    "y": 365 * 86400.0,
    "mo": 30 * 86400.0,
    "w": 7 * 86400.0,
    "d": 86400.0,
    "h": 3600.0,
    "mi": 60.0,
    "s": 1.0,
}
_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def duration_seconds(text: str) -> float:
    """An xs:duration in seconds (negative when signed); ValueError when malformed."""
    t = text.strip()
    if len(t) > 64:
        raise ValueError("duration too long")
    m = _DURATION.fullmatch(t)
    if m is None or t.endswith("T"):
        raise ValueError(f"not an xs:duration: {t[:40]!r}")
    total = sum(float(v) * _UNITS[k] for k, v in m.groupdict().items() if k != "sign" and v)
    if not math.isfinite(total):
        raise ValueError(f"duration out of range: {t[:40]!r}")
    return -total if m.group("sign") else total


def format_duration(seconds: float) -> str:
    """xs:duration of a non-negative number of seconds (``PT1S``, ``PT0.5S``, ``PT1H1M``)."""
    seconds = max(0.0, seconds)
    whole = int(seconds)
    frac = round(seconds - whole, 3)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    out = "PT"
    if h:
        out += f"{h}H"
    if m:
        out += f"{m}M"
    if s or frac or out == "PT":
        out += f"{s + frac:g}S"
    return out


def parse_datetime(text: str) -> float:
    """An xs:dateTime as UNIX time (no offset means UTC); ValueError when malformed."""
    t = _FRACTION.sub(r"\1", text.strip(), count=1)
    if len(t) > 64:
        raise ValueError("dateTime too long")
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    d = dt.datetime.fromisoformat(t)
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return d.timestamp()


def utc_text(t: float) -> str:
    """UNIX time as ``YYYY-MM-DDTHH:MM:SSZ`` (whole seconds, rounded down)."""
    return _utc_second(math.floor(t))


@functools.lru_cache(maxsize=256)
def _utc_second(second: int) -> str:
    return dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
