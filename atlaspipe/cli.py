"""The ``atlaspipe`` command. Each subcommand's module is imported only when it runs, so start-up is fast."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("atlaspipe.runner", "analyse in this process, no broker (default input: the embedded sample)"),
    "generate": ("atlaspipe.generate", "write MC and pseudo-data in the real ROOT schemas"),
    "fetch": ("atlaspipe.fetch", "download release samples into the local cache"),
    "serve": ("atlaspipe.web", "browse runs, plots and live progress over HTTP"),
    "bench": ("atlaspipe.bench", "run a pipeline while sampling the CPU and memory of every service"),
    "cpu-report": ("atlaspipe.cpu_report", "compare the CPU data of several deployments"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other atlaspipe error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _top_parser() -> argparse.ArgumentParser:
    from atlaspipe import __version__

    parser = OneLineParser(
        prog="atlaspipe", description="H→ZZ*→4ℓ analysis of ATLAS Open Data, in-process or on Celery workers.",
        epilog="commands:\n" + "\n".join(f"  {name:<11} {text}" for name, (_, text) in COMMANDS.items())
        + "\n\nDistributed runs: atlaspipe-submit --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"atlaspipe {__version__}")
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``atlaspipe``; user errors print one line and exit non-zero."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not arguments or arguments[0].startswith("-"):
        top.parse_args(arguments or ["--help"])
        return 2
    name, rest = arguments[0], arguments[1:]
    if name not in COMMANDS:
        top.error(f"unknown command '{name}' (choose from {', '.join(COMMANDS)})")
    module_name, description = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = OneLineParser(prog=f"atlaspipe {name}", description=description)
    module.configure_parser(parser)
    args = parser.parse_args(rest)
    return run_reporting_errors("atlaspipe", lambda: int(module.main(args)), "interrupted")


def configure_logging() -> None:
    """Library logs stay quiet on a terminal (errors reach the user as one line each);
    ``ATLASPIPE_LOG_LEVEL=INFO`` shows them, with tracebacks of unexpected errors."""
    import logging
    import os

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
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away; that is not an error of ours.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130

if __name__ == "__main__":
    sys.exit(main())
