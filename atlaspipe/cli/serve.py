"""``atlaspipe serve``: the web report over HTTP."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from atlaspipe.errors import ConfigError
from atlaspipe.web.server import DEFAULT_HOST, DEFAULT_PORT, load_auth, serve


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = "Serve the runs of an output folder (plots, yields, fit, live progress)."
    parser.add_argument("--output", type=Path,
                        default=Path(os.environ.get("ATLASPIPE_OUTPUT_DIR", "atlaspipe-output")),
                        help="folder holding the runs (default: $ATLASPIPE_OUTPUT_DIR or "
                             "./atlaspipe-output)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to bind (default 127.0.0.1; anything else requires "
                             "ATLASPIPE_WEB_AUTH)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="port (default 8080; 0 picks a free one)")


def main(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: must be between 0 and 65535")
    serve(Path(args.output), args.host, args.port, load_auth(args.host),
          lambda url: print(f"atlaspipe serve: runs in {args.output} at {url}", flush=True))
    return 0
