"""Command line: ``onvifcam serve`` and friends (thin: parse, then call the app)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys

from onvifcam import __version__
from onvifcam.config import Config, ConfigError, load, with_overrides


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0..65535")
    return value


def _rtp_port(text: str) -> int:
    value = _port(text)
    if value == 65535:
        raise argparse.ArgumentTypeError("the RTP port must leave room for RTCP on port + 1")
    return value


def _port_range(text: str) -> tuple[int, int]:
    """``START-END``, a single port, or 0 (any free port)."""
    first, sep, last = text.partition("-")
    lo = _port(first.strip())
    hi = _port(last.strip()) if sep else lo
    if lo == 0 or hi == 0:
        if (lo, hi) != (0, 0):
            raise argparse.ArgumentTypeError("0 (any free port) cannot be part of a range")
    elif lo > hi:
        raise argparse.ArgumentTypeError(f"range {text!r} ends before it starts")
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    p = argparse.ArgumentParser(
        prog="onvifcam", description="Turn pushed live streams into virtual ONVIF cameras."
    )
    p.add_argument("--version", action="version", version=f"onvifcam {__version__}")
    sub = p.add_subparsers(dest="command")
    s = sub.add_parser("serve", help="run the server (default)")
    s.add_argument("--config", metavar="FILE", help="TOML configuration file")
    s.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    s.add_argument("--rtsp-port", type=_port, metavar="N", help="RTSP port (default 8554)")
    s.add_argument("--rtmp-port", type=_port, metavar="N", help="RTMP port (default 1935)")
    s.add_argument("--rtmps-port", type=_port, metavar="N", help="RTMPS port (default 1936)")
    s.add_argument("--http-port", type=_port, metavar="N", help="HTTP port (default 8080)")
    s.add_argument("--srt-port", type=_port, metavar="N", help="SRT UDP port (default 8890)")
    s.add_argument(
        "--rtp-port",
        type=_rtp_port,
        metavar="N",
        help="RTSP server UDP port for RTP; RTCP uses N+1; 0 picks a free pair (default 8000)",
    )
    s.add_argument(
        "--onvif-ports",
        type=_port_range,
        metavar="START-END",
        help="ports for the cameras' own ONVIF endpoints; 0 picks free ones (default 8100-8999)",
    )
    s.add_argument(
        "--discovery-port", type=_port, metavar="N", help="WS-Discovery UDP port (default 3702)"
    )
    s.add_argument(
        "--advertise", metavar="ADDR", help="host or host:port put in URLs given to clients"
    )
    s.add_argument("--state-dir", metavar="DIR", help="where run-time state is kept")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    s.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="readable lines (default) or one JSON object per line ([server] log_format)",
    )
    s.add_argument(
        "--no-demo",
        action="store_true",
        help="no demo test-pattern camera (it runs when no --config is given)",
    )
    c = sub.add_parser(
        "check-config",
        help="check a configuration file without starting (exit status 0: fine, 1: not)",
    )
    c.add_argument("file", metavar="FILE", help="TOML configuration file")
    d = sub.add_parser("discover", help="find ONVIF devices with a WS-Discovery Probe")
    d.add_argument("--interface", "-i", default="", help="interface name or local IPv4 address")
    d.add_argument("--address", default="", help="send a directed Probe to this host instead")
    d.add_argument("--port", type=_port, default=3702, help="WS-Discovery port (default 3702)")
    d.add_argument("--timeout", "-t", type=float, default=3.0, help="seconds to wait (default 3)")
    d.add_argument(
        "--type",
        dest="types",
        action="append",
        choices=["nvt", "device", "any"],
        help="Probe types, repeatable (default: nvt and device, one Probe each)",
    )
    d.add_argument("--scope", dest="scopes", action="append", default=[], help="scope filter")
    d.add_argument("--match-by", default="", help="scope matching rule URI (default RFC 3986)")
    d.add_argument("--ipv6", action="store_true", help="probe FF02::C (needs --interface)")
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")
    t = sub.add_parser(
        "trigger",
        help="set a camera's motion or digital input (ONVIF events) on a running server",
        description="onvifcam trigger CAMERA motion on|off  |  "
        "onvifcam trigger CAMERA input DI_1 on|off",
    )
    t.add_argument("camera", help="camera name or stream path")
    t.add_argument("what", choices=["motion", "input"])
    t.add_argument("args", nargs="+", metavar="ARG", help="on|off, or INPUT on|off")
    t.add_argument(
        "--url",
        default="http://127.0.0.1:8080",
        help="server's main HTTP address (default %(default)s)",
    )
    t.add_argument("--user", default="", help="the camera's ONVIF Administrator (Digest/Basic)")
    t.add_argument("--password", default="")
    t.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``onvifcam`` console script."""
    try:
        try:
            return _command(build_parser(), argv)
        finally:
            sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
    except BrokenPipeError:
        # The reader went away (`onvifcam discover | head -1`): what it wanted it has.
        # Point stdout at /dev/null so the flush at interpreter exit stays quiet too.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 0


def _command(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    if args.command in (None, "serve"):
        return _serve(args)
    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "discover":
        return _discover(args)
    if args.command == "trigger":
        return _trigger(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


def _serve(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config) if getattr(args, "config", None) else Config()
        cfg = with_overrides(
            cfg,
            host=getattr(args, "host", None),
            rtsp_port=getattr(args, "rtsp_port", None),
            rtmp_port=getattr(args, "rtmp_port", None),
            rtmps_port=getattr(args, "rtmps_port", None),
            http_port=getattr(args, "http_port", None),
            advertise=getattr(args, "advertise", None),
            state_dir=getattr(args, "state_dir", None),
            log_level=getattr(args, "log_level", None),
            log_format=getattr(args, "log_format", None),
        )
        cfg = _section_overrides(cfg, args)
    except ConfigError as exc:
        print(f"onvifcam: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.server.log_level, cfg.server.log_format)
    from onvifcam.app import run

    return run(cfg)


def _check_config(path: str) -> int:
    """``onvifcam check-config FILE``: 0 and a summary when it loads, 1 and the error."""
    try:
        cfg = load(path)
    except ConfigError as exc:
        print(f"onvifcam: configuration error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{path}: OK ({len(cfg.cameras)} cameras, {len(cfg.paths)} path policies, "
        f"{len(cfg.hooks)} hooks)"
    )
    return 0


_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# LogRecord attributes that are not extra fields given with ``extra=``
_RECORD_KEYS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, plus
    ``exception`` (the traceback) and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        import json
        from datetime import UTC, datetime

        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        for k, v in vars(record).items():
            if k not in _RECORD_KEYS and not k.startswith("_"):
                out[k] = v
        return json.dumps(out, default=str, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Log to stderr at ``level``: readable lines, or JSON lines with ``fmt`` "json"."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


def _section_overrides(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the flags that set keys outside [server]."""
    rtp = getattr(args, "rtp_port", None)
    if rtp is not None:
        rtsp = dataclasses.replace(cfg.rtsp, rtp_port=rtp, rtcp_port=rtp + 1 if rtp else 0)
        cfg = dataclasses.replace(cfg, rtsp=rtsp)
    ports = getattr(args, "onvif_ports", None)
    if ports is not None:
        onvif = dataclasses.replace(cfg.onvif, port_range_start=ports[0], port_range_end=ports[1])
        cfg = dataclasses.replace(cfg, onvif=onvif)
    if getattr(args, "no_demo", False):
        cfg = dataclasses.replace(cfg, demo=dataclasses.replace(cfg.demo, enabled=False))
    elif not getattr(args, "config", None):
        cfg = dataclasses.replace(cfg, demo=dataclasses.replace(cfg.demo, enabled=True))
    disc = getattr(args, "discovery_port", None)
    if disc is not None:
        cfg = dataclasses.replace(cfg, discovery=dataclasses.replace(cfg.discovery, port=disc))
    srt = getattr(args, "srt_port", None)
    if srt is not None:
        cfg = dataclasses.replace(cfg, srt=dataclasses.replace(cfg.srt, port=srt))
    return cfg


def _discover(args: argparse.Namespace) -> int:
    from onvifcam.discovery import client

    if args.timeout <= 0:
        print("onvifcam: --timeout must be positive", file=sys.stderr)
        return 2
    try:
        result = client.probe(
            interface=args.interface,
            address=args.address,
            port=args.port,
            timeout=args.timeout,
            type_sets=[client.TYPE_CHOICES[t] for t in (args.types or ["nvt", "device"])],
            scopes=args.scopes,
            match_by=args.match_by,
            ipv6=args.ipv6,
        )
    except OSError as exc:
        print(f"onvifcam: discover: {exc}", file=sys.stderr)
        return 1
    print(client.to_json(result) if args.json else client.format_table(result.devices))
    return 0


_ON = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


def _trigger(args: argparse.Namespace) -> int:
    """POST the trigger to /api/cameras/CAMERA/events and print the answer."""
    import json
    import urllib.error
    import urllib.request
    from urllib.parse import quote

    want = 1 if args.what == "motion" else 2
    usage = "motion on|off" if args.what == "motion" else "input INPUT on|off"
    state = _ON.get(args.args[-1].lower()) if len(args.args) == want else None
    if state is None:
        print(f"onvifcam: trigger: expected `{usage}`", file=sys.stderr)
        return 2
    body: dict[str, object] = {"type": "motion", "state": state}
    if args.what == "input":
        body = {"type": "digital_input", "input": args.args[0], "state": state}
    url = f"{args.url.rstrip('/')}/api/cameras/{quote(args.camera, safe='/')}/events"
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    handlers: list[urllib.request.BaseHandler] = []
    if args.user:
        pw = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        pw.add_password(None, args.url, args.user, args.password)
        handlers = [
            urllib.request.HTTPDigestAuthHandler(pw),
            urllib.request.HTTPBasicAuthHandler(pw),
        ]
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(req, timeout=args.timeout) as r:
            answer = json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            err = json.loads(exc.read() or b"{}")
        except ValueError:
            err = {}
        msg = err.get("error") or exc.reason
        hint = " (give --user and --password)" if exc.code == 401 and not args.user else ""
        print(f"onvifcam: trigger: HTTP {exc.code}: {msg}{hint}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"onvifcam: trigger: cannot reach {args.url}: {reason}", file=sys.stderr)
        return 1
    what = "motion" if args.what == "motion" else f"input {answer.get('input', args.args[0])}"
    change = "changed" if answer.get("changed") else "unchanged"
    print(f"{answer.get('camera', args.camera)}: {what} {'on' if state else 'off'} ({change})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
