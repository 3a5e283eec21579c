"""What every command shares: one-line usage errors, one-line user errors, quiet library logs, and the
warning about a password on the command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other atlaspipe error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def warn_password_in_argv(option: str, url: str | None) -> None:
    """Warn when a URL with a password came on the command line: every local user sees argv in ``ps``."""
    if url and urlsplit(url).password:
        warn_secret_in_argv(option, "ATLASPIPE_BROKER_URL" if "broker" in option else "ATLASPIPE_RESULT_BACKEND")


def warn_secret_in_argv(option: str, variable: str) -> None:
    """Warn that ``option`` put a secret on the command line, and where it belongs instead."""
    print(f"warning: {option} carries a password, which other users can read in `ps`; set {variable} "
          f"or {variable}_FILE instead", file=sys.stderr)


def configure_logging() -> None:
    """Library logs stay quiet on a terminal (errors reach the user as one line each);
    ``ATLASPIPE_LOG_LEVEL=INFO`` shows them, with tracebacks of unexpected errors (``DEBUG``: of user
    errors too)."""
    level = os.environ.get("ATLASPIPE_LOG_LEVEL", "CRITICAL").upper()
    logging.basicConfig(level=getattr(logging, level, logging.CRITICAL),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_reporting_errors(prog: str, command: Callable[[], int], interrupted: str) -> int:
    """Run a command; a user error prints one line ``PROG: error: …`` and returns its exit code."""
    from atlaspipe.errors import AtlaspipeError

    configure_logging()
    try:
        return command()
    except AtlaspipeError as exc:
        log.debug("%s stopped by a user error", prog, exc_info=True)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away; that is not an error of ours.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130


def add_fit_channels_option(parser: argparse.ArgumentParser) -> None:
    """``--fit-channels``, shared by ``run`` and ``submit``."""
    from atlaspipe.config import FIT_CHANNELS

    parser.add_argument("--fit-channels", choices=FIT_CHANNELS,
                        help="fit the m4l summed over the lepton channels (combined, the default) or the 4e, "
                        "4mu and 2e2mu m4l simultaneously with one mu (simultaneous; slower)")


def add_pdf_option(parser: argparse.ArgumentParser) -> None:
    """``--pdf``, shared by ``run`` and ``submit``."""
    parser.add_argument("--pdf", action="store_true",
                        help="also write each figure as PDF (about doubles the figures' time)")


def add_fileset_option(parser: argparse.ArgumentParser) -> None:
    """``--fileset``, shared by ``run`` and ``submit``."""
    parser.add_argument("--fileset", type=Path, metavar="FILE",
                        help="JSON or TOML fileset: sample -> files, with a catalog sample or xsec_pb and sumw "
                        "(files of any name; see docs/data-access.md)")
