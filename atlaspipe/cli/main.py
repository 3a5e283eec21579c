"""The ``atlaspipe`` command. Each subcommand's module is imported only when it runs, so start-up is fast."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from atlaspipe.cli.common import OneLineParser, run_reporting_errors

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("atlaspipe.cli.run", "analyse in this process, no broker (default input: the embedded sample)"),
    "generate": ("atlaspipe.cli.generate", "write MC and pseudo-data in the real ROOT schemas"),
    "fetch": ("atlaspipe.cli.fetch", "download release samples into the local cache"),
    "serve": ("atlaspipe.cli.serve", "browse runs, plots and live progress over HTTP"),
    "bench": ("atlaspipe.cli.bench", "run a pipeline while sampling the CPU and memory of every service"),
    "cpu-report": ("atlaspipe.cli.cpu_report", "compare the CPU data of several deployments"),
    "flower": ("atlaspipe.cli.flower", "Flower for the workers, refused beyond localhost without authentication"),
    "exporter": ("atlaspipe.cli.exporter", "Prometheus metrics of the queues, workers and runs"),
}
PASSTHROUGH = frozenset({"flower"})
"""Commands whose options belong to another program, handed over unparsed."""




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
    if name in PASSTHROUGH:
        return run_reporting_errors("atlaspipe", lambda: int(module.run(rest)), "interrupted")
    parser = OneLineParser(prog=f"atlaspipe {name}", description=description)
    module.configure_parser(parser)
    args = parser.parse_args(rest)
    return run_reporting_errors("atlaspipe", lambda: int(module.main(args)), "interrupted")





if __name__ == "__main__":
    sys.exit(main())
