"""``atlaspipe submit``: send a run to the Celery workers, follow it, and report where the results are.

With it, the commands about submitted runs: ``status RUN_ID`` and ``list`` (they read the result
backend only, no broker), ``resume RUN_ID``, ``cancel RUN_ID`` and ``clean --older-than DAYS``
(messages to the ``load`` workers). ``atlaspipe-submit`` is an alias: ``atlaspipe-submit ARGS`` is
``atlaspipe submit ARGS``, and ``atlaspipe-submit status RUN_ID`` is ``atlaspipe status RUN_ID``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from atlaspipe.api import make_request
from atlaspipe.cli.common import add_fileset_option, add_fit_channels_option, add_pdf_option, warn_password_in_argv
from atlaspipe.cli.progress import Progress
from atlaspipe.config import RuntimeSettings, analysis_settings, load_settings
from atlaspipe.errors import AtlaspipeError, ConfigError, RunFailedError
from atlaspipe.model import RunRequest, RunResults, RunState, RunStatus
from atlaspipe.pipeline.celery.client import CeleryClient
from atlaspipe.pipeline.lifecycle import STALL_SECONDS

_SUBCOMMANDS = ("status", "list", "resume", "cancel", "clean")


def configure_submit(parser: argparse.ArgumentParser) -> None:
    """Options of ``atlaspipe submit``."""
    parser.add_argument("--release", choices=("2020", "2025e"),
                        help="release of the inputs (default: recognised from the file names; "
                        "2020 for the embedded sample)")
    parser.add_argument("--input", nargs="+", default=[], metavar="PATH",
                        help="ROOT files, folders or URLs, as the workers see them (default: the embedded sample)")
    parser.add_argument("--samples", nargs="+", default=[], metavar="NAME",
                        help="catalog samples, groups, 'data' or 'mc' of the release, read from the workers' "
                        "cache or the release's server")
    add_fileset_option(parser)
    parser.add_argument("--chunk-size", type=int, metavar="ENTRIES", help="entries per chunk")
    parser.add_argument("--config", type=Path, help="analysis configuration file (TOML or JSON)")
    parser.add_argument("--base-url", help="read catalog samples from this mirror")
    parser.add_argument("--output", type=Path, help="output folder, as the workers see it")
    _connection_options(parser)
    parser.add_argument("--non-finite", choices=("exclude", "error"),
                        help="events with a NaN/inf lepton kinematic or weight: leave out and count them "
                        "(default) or fail their chunk")
    add_fit_channels_option(parser)
    add_pdf_option(parser)
    parser.add_argument("--allow-partial", action="store_true",
                        help="finish even if some inputs fail; outputs are marked PARTIAL")
    parser.add_argument("--keep-records", action="store_true",
                        help="keep the per-chunk records in Redis after success, for inspection")
    parser.add_argument("--no-wait", dest="wait", action="store_false", default=True,
                        help="print the run id and return at once; follow later with 'atlaspipe status RUN_ID' "
                        "or the web report")
    _follow_options(parser)


def _follow_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--stall-timeout", type=float, default=STALL_SECONDS, metavar="SECONDS",
                        help="without progress for this long, check whether the run is stalled "
                        f"(default {STALL_SECONDS:g})")


def _connection_options(parser: argparse.ArgumentParser, broker: bool = True) -> None:
    if broker:
        parser.add_argument("--broker", help="broker URL (default: $ATLASPIPE_BROKER_URL; keep passwords in "
                            "the environment or ATLASPIPE_BROKER_URL_FILE, not on the command line)")
    else:
        parser.set_defaults(broker=None)
    parser.add_argument("--backend", help="result backend URL, Redis (default: $ATLASPIPE_RESULT_BACKEND, "
                        "or ATLASPIPE_RESULT_BACKEND_FILE)")


def _run_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", metavar="RUN_ID", help="the run's id, as printed when it was submitted")


def configure_status(parser: argparse.ArgumentParser) -> None:
    """Options of ``atlaspipe status``: it reads the result backend only."""
    _run_id(parser)
    _connection_options(parser, broker=False)


def configure_list(parser: argparse.ArgumentParser) -> None:
    """Options of ``atlaspipe list``: it reads the result backend only."""
    parser.add_argument("--limit", type=int, default=20, help="how many of the newest runs to show (default 20)")
    _connection_options(parser, broker=False)


def configure_resume(parser: argparse.ArgumentParser) -> None:
    _run_id(parser)
    parser.add_argument("--no-wait", dest="wait", action="store_false", default=True,
                        help="return once the resume is sent")
    parser.add_argument("--force", action="store_true",
                        help="relaunch the missing chunks even if the run still makes progress")
    parser.add_argument("--output", type=Path,
                        help="output folder of the run, to rebuild it from request.json and plan.json "
                        "if the result backend lost it (default: $ATLASPIPE_OUTPUT_DIR)")
    _follow_options(parser)
    _connection_options(parser)


def configure_cancel(parser: argparse.ArgumentParser) -> None:
    _run_id(parser)
    _connection_options(parser)


def configure_clean(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--older-than", type=float, required=True, metavar="DAYS",
                        help="remove the records and run folders of runs that ended more than DAYS ago")
    _connection_options(parser)


def _client(args: argparse.Namespace, progress: Progress | None = None) -> CeleryClient:
    settings = RuntimeSettings.from_env()
    for option in ("broker", "backend"):
        warn_password_in_argv(f"--{option}", getattr(args, option))
    note = progress.note if progress is not None else (lambda text: print(text, file=sys.stderr))
    return CeleryClient(args.broker or settings.broker_url, args.backend or settings.result_backend, note)


def _request(args: argparse.Namespace) -> RunRequest:
    if args.chunk_size is not None and args.chunk_size <= 0:
        raise ConfigError(f"--chunk-size must be a positive number of entries, got {args.chunk_size}")
    overrides = {"chunk_size": args.chunk_size, "non_finite": args.non_finite}
    settings = load_settings(args.config, **overrides) if args.config else analysis_settings(**overrides)
    return make_request(args.input, release=args.release, samples=args.samples, settings=settings, output=args.output,
                        base_url=args.base_url, allow_partial=bool(args.allow_partial),
                        keep_records=bool(args.keep_records), fileset=args.fileset,
                        fit_channels=args.fit_channels, pdf_figures=bool(args.pdf))


def submit(args: argparse.Namespace) -> int:
    request = _request(args)
    with Progress(quiet=args.quiet) as progress:
        client = _client(args, progress)
        client.submit(request)
        print(f"run {request.run_id} submitted; outputs will be in {request.run_dir}", file=sys.stderr)
        if not args.wait:
            print(request.run_id)
            return 0
        status = client.follow(request.run_id, progress.update, args.stall_timeout)
    return report(status)


def report(status: RunStatus) -> int:
    """Print a finished run's summary (0), or raise its failure as one block of lines (exit 1)."""
    from atlaspipe.results.summary import format_failed, format_summary

    run_dir = Path(status.run_dir or ".")
    if status.state in (RunState.SUCCEEDED, RunState.PARTIAL):
        try:
            results = RunResults.read(run_dir / "results.json")
        except AtlaspipeError:
            # The run folder lives on the workers' side only: say where the outputs are.
            print(f"run {status.run_id} {status.state}; outputs in {run_dir} (on the workers' volume)")
            return 0
        print(format_summary(results, run_dir, None))
        return 0
    raise RunFailedError(format_failed(status))


def status_command(args: argparse.Namespace) -> int:
    status = _client(args).status(args.run_id)
    print(f"run {status.run_id}: {status.state}, {status.chunks_done}/{status.chunks_total} chunks done, "
          f"{status.chunks_failed} failed, {status.events_read}/{status.events_total} events read")
    if status.message:
        print(f"  {status.message}")
    for failure in status.failures[:20]:
        print(f"  {failure.describe()}")
    if status.run_dir:
        print(f"  outputs: {status.run_dir}")
    return 0


def list_command(args: argparse.Namespace) -> int:
    runs = _client(args).runs(args.limit)
    width = max([len(s.run_id) for s in runs] + [6])
    print(f"{'run id':<{width}}  {'state':<11}  {'chunks':>13}  {'started':<25}")
    for status in runs:
        chunks = f"{status.chunks_done}/{status.chunks_total}"
        print(f"{status.run_id:<{width}}  {status.state:<11}  {chunks:>13}  {status.started:<25}")
    return 0


def resume_command(args: argparse.Namespace) -> int:
    import time

    with Progress(quiet=args.quiet) as progress:
        client = _client(args, progress)
        try:
            current: RunStatus | None = client.status(args.run_id)
        except AtlaspipeError as exc:
            if "unknown run id" not in str(exc):
                raise
            current = None
        if current is not None and current.state is RunState.SUCCEEDED:
            print(f"run {args.run_id} already succeeded; nothing to resume", file=sys.stderr)
            return report(current)
        if current is not None and current.state is RunState.CANCELLED:
            raise AtlaspipeError(f"run {args.run_id} was cancelled; submit it again instead")
        progressing = (current is not None and not current.terminal
                       and time.time() - client.records.last_chunk_at(args.run_id) < args.stall_timeout)
        if progressing and not args.force:
            print(f"run {args.run_id} is still progressing; following it, and relaunching its missing chunks "
                  "if it stalls (--force relaunches them now)", file=sys.stderr)
            if not args.wait:
                return 0
            # A launch cut short (its load worker lost the backend mid-way) leaves chunks that were
            # never queued: progress stops short of the end, and only a relaunch finishes the run.
            current = client.follow(args.run_id, progress.update, args.stall_timeout, until_stalled=True)
            if current.terminal:
                return report(current)
        run_dir = Path(current.run_dir) if current is not None and current.run_dir else (
            (args.output or RuntimeSettings.from_env().output_dir).absolute() / args.run_id)
        client.resume(run_dir)
        print(f"run {args.run_id}: resume sent to the load workers", file=sys.stderr)
        if not args.wait:
            return 0
        generation = current.generation if current is not None else -1
        return report(client.follow(args.run_id, progress.update, args.stall_timeout, since_generation=generation))


def cancel_command(args: argparse.Namespace) -> int:
    client = _client(args)
    current = client.status(args.run_id)
    if current.terminal:
        print(f"run {args.run_id} already ended: {current.state}", file=sys.stderr)
        return 0
    client.cancel(args.run_id)
    status = client.follow(args.run_id, since_generation=current.generation - 1)
    print(f"run {args.run_id} {status.state}{': ' + status.message if status.message else ''}", file=sys.stderr)
    return 0


def clean_command(args: argparse.Namespace) -> int:
    if args.older_than < 0:
        raise ConfigError(f"--older-than must not be negative, got {args.older_than}")
    _client(args).clean(args.older_than)
    print(f"sent: remove runs that ended more than {args.older_than:g} day(s) ago (done by a load worker)",
          file=sys.stderr)
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "submit": (configure_submit, submit),
    "status": (configure_status, status_command),
    "list": (configure_list, list_command),
    "resume": (configure_resume, resume_command),
    "cancel": (configure_cancel, cancel_command),
    "clean": (configure_clean, clean_command),
}
"""The subcommands of ``atlaspipe`` this module carries out (see ``atlaspipe.cli.main``)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``atlaspipe-submit``, the alias of ``atlaspipe submit`` (and of ``atlaspipe status``…)."""
    from atlaspipe.cli import main as cli

    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in _SUBCOMMANDS:
        return cli.main(arguments)
    return cli.main(["submit", *arguments])


if __name__ == "__main__":
    sys.exit(main())
