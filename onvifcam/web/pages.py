"""The dashboard at ``/``: the camera list rendered here as plain HTML (it works without
scripts), made live by ``static/dashboard.js`` (cards with snapshots, forms, event log).

Nothing is loaded from elsewhere: the page, its CSS and JS come from this package
(``static/``); every value is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from pathlib import Path
from typing import Any

from onvifcam import __version__

STATIC_DIR = Path(__file__).resolve().parent / "static"

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
table { border-collapse: collapse; margin-top: 1em; }
th, td { border-bottom: 1px solid #ddd; padding: .4em .7em; text-align: left;
  vertical-align: top; }
th { background: #f4f4f4; }
code { font-size: .92em; overflow-wrap: break-word; }
.on { color: #176c2b; font-weight: 600; }
.off { color: #8a1c1c; font-weight: 600; }
.dim { color: #666; font-size: .9em; }
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _row(cam: Mapping[str, Any]) -> str:
    video = cam.get("video") or {}
    online = bool(cam.get("online"))
    state = '<span class="on">online</span>' if online else '<span class="off">offline</span>'
    if video.get("width"):
        fps = round(float(video.get("fps") or 0), 1)
        state += (
            f'<br><span class="dim">{_e(video.get("codec", ""))} '
            f"{_e(video['width'])}x{_e(video.get('height', ''))}"
            f"{f' {fps:g} fps' if fps else ''}</span>"
        )
    paths = f'<span class="dim">path {_e(cam.get("path", ""))}'
    if cam.get("sub_path"):
        paths += f", sub {_e(cam['sub_path'])}"
    paths += "</span>"
    auth = "credentials required" if cam.get("auth") else "no authentication"
    onvif = _e(cam.get("onvif_url", ""))
    snap = _e(cam.get("snapshot_url", ""))
    return (
        "<tr>"
        f"<td><strong>{_e(cam.get('name', ''))}</strong><br>{paths}</td>"
        f"<td>{state}</td>"
        f'<td><code>{onvif}</code><br><span class="dim">{auth}</span></td>'
        f"<td><code>{_e(cam.get('rtsp_url', ''))}</code></td>"
        f'<td><a href="{snap}"><code>{snap}</code></a></td>'
        "</tr>"
    )


def dashboard_page(cameras: Iterable[Mapping[str, Any]], publish_url: str) -> str:
    """The dashboard: its frame (header, event log, forms) around the landing list."""
    page = landing_page(cameras, publish_url, styled=False)
    head, _, rest = page.partition("</head>")
    body, _, _end = rest.partition("</body>")
    return (
        head
        + '<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/dashboard.css">'
        + '<script src="/static/dashboard.js" defer></script></head>'
        + body.replace("<body>", '<body><div id="fallback">', 1)
        + "</div>"
        + (STATIC_DIR / "dashboard.html").read_text(encoding="utf-8")
        + "</body></html>\n"
    )


def landing_page(
    cameras: Iterable[Mapping[str, Any]], publish_url: str, styled: bool = True
) -> str:
    """The whole page: one row per camera (entries as in ``/api/cameras``)."""
    rows = [_row(c) for c in cameras]
    if rows:
        body = (
            "<table><thead><tr><th>Camera</th><th>State</th><th>ONVIF device service</th>"
            "<th>RTSP stream</th><th>Snapshot</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )
    else:
        body = "<p><strong>No cameras yet.</strong></p>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>onvifcam</title>{f'<style>{_STYLE}</style>' if styled else ''}</head><body>"
        f"<h1>onvifcam {_e(__version__)}</h1>"
        f"<p>{len(rows)} camera{'' if len(rows) == 1 else 's'}. A stream pushed to "
        f"<code>{_e(publish_url)}</code> (RTSP ANNOUNCE/RECORD, or RTMP) becomes a camera. "
        'The same list as JSON: <a href="/api/cameras">/api/cameras</a>.</p>'
        f"{body}</body></html>\n"
    )
