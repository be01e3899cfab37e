"""Command line: ``onvifcam serve`` and friends (thin: parse, then call the app)."""

from __future__ import annotations

import argparse
import logging
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
    s.add_argument("--http-port", type=_port, metavar="N", help="HTTP port (default 8080)")
    s.add_argument("--advertise", metavar="ADDR", help="address put in URLs given to clients")
    s.add_argument("--state-dir", metavar="DIR", help="where run-time state is kept")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``onvifcam`` console script."""
    args = build_parser().parse_args(argv)
    if args.command in (None, "serve"):
        return _serve(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


def _serve(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config) if getattr(args, "config", None) else Config()
        cfg = with_overrides(
            cfg,
            host=getattr(args, "host", None),
            rtsp_port=getattr(args, "rtsp_port", None),
            rtmp_port=getattr(args, "rtmp_port", None),
            http_port=getattr(args, "http_port", None),
            advertise=getattr(args, "advertise", None),
            state_dir=getattr(args, "state_dir", None),
            log_level=getattr(args, "log_level", None),
        )
    except ConfigError as exc:
        print(f"onvifcam: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, cfg.server.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from onvifcam.app import run

    return run(cfg)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
