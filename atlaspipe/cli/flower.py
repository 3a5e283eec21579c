"""``atlaspipe flower [FLOWER OPTIONS]``: Flower for atlaspipe's workers, refused where it would be open.

The options are Flower's own (``--port``, ``--address``, ``--basic-auth``…), given as ``--name value``
or ``--name=value``. ``FLOWER_BASIC_AUTH`` or ``FLOWER_BASIC_AUTH_FILE`` (a secret file) hold the
credentials, so they never appear in the process's arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from atlaspipe.cli.common import warn_secret_in_argv
from atlaspipe.config import secret
from atlaspipe.ops.flower import check_flower_auth, flower_argv


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """What ``atlaspipe flower --help`` would list if it did not hand over to Flower's own help."""
    parser.add_argument("options", nargs=argparse.REMAINDER, metavar="FLOWER OPTIONS",
                        help="Flower's options (--port 5555, --address 127.0.0.1, ...), handed over to "
                        "'celery -A atlaspipe flower'")


def main(args: argparse.Namespace) -> int:
    return run(args.options)


def run(arguments: Sequence[str]) -> int:
    """Check Flower's settings, then replace this process with ``celery -A atlaspipe flower``."""
    credentials = secret("FLOWER_BASIC_AUTH")
    if credentials:
        os.environ["FLOWER_BASIC_AUTH"] = credentials
    options = flower_argv(arguments)
    if any(o.startswith(("--basic-auth=", "--basic_auth=")) for o in options):
        warn_secret_in_argv("--basic-auth", "FLOWER_BASIC_AUTH")
    check_flower_auth(options, os.environ)
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "atlaspipe", "flower", *options])
    return 0  # not reached: exec replaced the process
