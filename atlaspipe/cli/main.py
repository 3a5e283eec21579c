# PYTHON_ARGCOMPLETE_OK
"""The ``atlaspipe`` command: one argparse tree of subcommands (``atlaspipe-submit`` is an alias of
``atlaspipe submit``). A subcommand's module is imported only when it runs, or when the whole tree is
needed (``--help`` listings, shell completion, the tests), so start-up stays fast."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from atlaspipe.cli.common import OneLineParser, run_reporting_errors


@dataclass(frozen=True)
class Command:
    """A subcommand: the module that configures and runs it, and its one-line description.

    A module with one command has ``configure_parser(parser)`` and ``main(args)``; a module with
    several has ``COMMANDS[key] = (configure_parser, main)``.
    """

    module: str
    help: str
    key: str = ""
    interrupted: str = "interrupted"


_FOLLOWING = "stopped following; the run goes on (see 'atlaspipe status RUN_ID')"
COMMANDS: dict[str, Command] = {
    "run": Command("atlaspipe.cli.run", "analyse in this process, no broker (default input: the embedded sample)"),
    "submit": Command("atlaspipe.cli.submit", "run the analysis on the Celery workers and follow it",
                      "submit", _FOLLOWING),
    "status": Command("atlaspipe.cli.submit", "one run's state, read from the result backend only", "status"),
    "list": Command("atlaspipe.cli.submit", "recent runs, read from the result backend only", "list"),
    "resume": Command("atlaspipe.cli.submit", "rerun only the chunks of a run that have no result", "resume",
                      _FOLLOWING),
    "cancel": Command("atlaspipe.cli.submit", "cancel a run: its queued chunks are skipped", "cancel"),
    "clean": Command("atlaspipe.cli.submit", "remove the records and folders of runs that ended long ago", "clean"),
    "generate": Command("atlaspipe.cli.generate", "write MC and pseudo-data in the real ROOT schemas"),
    "fetch": Command("atlaspipe.cli.fetch", "download release samples into the local cache"),
    "serve": Command("atlaspipe.cli.serve", "browse runs, plots and live progress over HTTP"),
    "bench": Command("atlaspipe.cli.bench", "run a pipeline while sampling the CPU and memory of every service"),
    "cpu-report": Command("atlaspipe.cli.cpu_report", "compare the CPU data of several deployments"),
    "flower": Command("atlaspipe.cli.flower",
                      "Flower for the workers, refused beyond localhost without authentication"),
    "completion": Command("atlaspipe.cli.completion", "print the shell completion script (bash, zsh, fish)"),
    "exporter": Command("atlaspipe.cli.exporter", "Prometheus metrics of the queues, workers and runs"),
}
PASSTHROUGH = frozenset({"flower"})
"""Commands whose options belong to another program, handed over unparsed."""

Runner = Callable[[argparse.Namespace], int]


def _entry(command: Command) -> tuple[Callable[[argparse.ArgumentParser], None], Runner]:
    module = importlib.import_module(command.module)
    if command.key:
        configure, run = module.COMMANDS[command.key]
        return configure, run
    return module.configure_parser, module.main


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``atlaspipe`` parser; every subcommand's options are configured, or only those of ``only``."""
    from atlaspipe import __version__

    top = OneLineParser(prog="atlaspipe",
                        description="H→ZZ*→4ℓ analysis of ATLAS Open Data, in-process or on Celery workers.",
                        epilog="'atlaspipe COMMAND --help' describes a command's options.")
    top.add_argument("--version", action="version", version=f"atlaspipe {__version__}",
                     help="print the version and exit")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser)
    for name, command in COMMANDS.items():
        parser = commands.add_parser(name, help=command.help, description=command.help)
        if only is None or only == name:
            configure, run = _entry(command)
            configure(parser)
            parser.set_defaults(run=run)
    return top


def _autocomplete() -> None:
    """Answer the shell's completion request (``_ARGCOMPLETE`` set) and exit; otherwise do nothing."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(build_parser())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``atlaspipe``; user errors print one line and exit non-zero."""
    _autocomplete()
    arguments = list(sys.argv[1:] if argv is None else argv)
    name = arguments[0] if arguments else None
    if name in PASSTHROUGH:
        module = importlib.import_module(COMMANDS[name].module)
        return run_reporting_errors("atlaspipe", lambda: int(module.run(arguments[1:])), "interrupted")
    parser = build_parser(name if name in COMMANDS else None)
    if not arguments:
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(arguments)
    command = COMMANDS[args.command]
    return run_reporting_errors("atlaspipe", lambda: int(args.run(args)), command.interrupted)


if __name__ == "__main__":
    sys.exit(main())
