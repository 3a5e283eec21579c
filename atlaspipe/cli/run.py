"""``atlaspipe run``: the whole analysis in this process, no broker, through the same stage functions."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from atlaspipe.api import make_request
from atlaspipe.cli.common import add_fileset_option, add_fit_channels_option, add_pdf_option
from atlaspipe.cli.progress import Progress
from atlaspipe.config import analysis_settings, load_settings
from atlaspipe.errors import RunFailedError
from atlaspipe.model import RunRequest, RunResults, RunState
from atlaspipe.pipeline.inprocess import InProcessExecutor


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--release", choices=("2020", "2025e"),
                        help="release of the inputs (default: recognised from the file names; "
                        "2020 for the embedded sample)")
    parser.add_argument("--input", nargs="+", default=[], metavar="PATH",
                        help="ROOT files, folders of them, or URLs (default: the embedded sample)")
    parser.add_argument("--samples", nargs="+", default=[], metavar="NAME",
                        help="catalog samples, groups, 'data' or 'mc' "
                        "(read from the cache or the release's server)")
    add_fileset_option(parser)
    parser.add_argument("--output", type=Path,
                        help="folder for run outputs (default: $ATLASPIPE_OUTPUT_DIR or ./atlaspipe-output)")
    parser.add_argument("--config", type=Path, help="analysis configuration file (TOML or JSON)")
    parser.add_argument("--chunk-size", type=int, help="entries per chunk")
    parser.add_argument("--base-url", help="read catalog samples from this mirror instead of the release's server")
    parser.add_argument("--fetch", action="store_true", help="download catalog samples into the cache before running")
    parser.add_argument("--sfos-pairing", action="store_true", default=None,
                        help="require two same-flavour opposite-sign pairs")
    parser.add_argument("--non-finite", choices=("exclude", "error"),
                        help="events with a NaN/inf lepton kinematic or weight: leave out and count them "
                        "(default) or fail their chunk")
    add_fit_channels_option(parser)
    add_pdf_option(parser)
    parser.add_argument("--allow-partial", action="store_true",
                        help="finish a run whose inputs partly failed, marking every output PARTIAL")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_request(args: argparse.Namespace) -> RunRequest:
    """The run a command line asks for, with a new run id."""
    overrides = {"chunk_size": args.chunk_size, "sfos_pairing": args.sfos_pairing, "non_finite": args.non_finite}
    settings = load_settings(args.config, **overrides) if args.config is not None else analysis_settings(**overrides)
    return make_request(args.input, release=args.release, samples=args.samples, settings=settings, output=args.output,
                        base_url=args.base_url, fetch=bool(args.fetch), allow_partial=bool(args.allow_partial),
                        fileset=args.fileset, fit_channels=args.fit_channels, pdf_figures=bool(args.pdf))


def main(args: argparse.Namespace) -> int:
    from atlaspipe.results.summary import format_failed, format_summary

    started = time.perf_counter()
    request = build_request(args)
    with Progress(quiet=args.quiet) as progress:
        status = InProcessExecutor(on_progress=progress.update).run(request)
    wall = time.perf_counter() - started
    for note in status.notes:
        print(f"note: {note}", file=sys.stderr)
    if status.state not in (RunState.SUCCEEDED, RunState.PARTIAL):
        raise RunFailedError(format_failed(status))
    results = RunResults.read(request.run_dir / "results.json")
    print(format_summary(results, request.run_dir, wall))
    return 0
