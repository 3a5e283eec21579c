"""``atlaspipe run``: the whole analysis in this process, no broker, through the same stage functions."""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
import time
from pathlib import Path

from atlaspipe.config import RuntimeSettings, analysis_config, load_config
from atlaspipe.errors import RunFailedError
from atlaspipe.model import RunRequest, RunResults, RunState
from atlaspipe.pipeline.inprocess import InProcessExecutor
from atlaspipe.pipeline.lifecycle import now_text
from atlaspipe.planning import new_run_id
from atlaspipe.progress import Progress


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--release", choices=("2020", "2025e"),
                        help="release of the inputs (default: recognised from the file names; "
                        "2020 for the embedded sample)")
    parser.add_argument("--input", nargs="+", default=[], metavar="PATH",
                        help="ROOT files, folders of them, or URLs (default: the embedded sample)")
    parser.add_argument("--samples", nargs="+", default=[], metavar="NAME",
                        help="catalog samples, groups, 'data' or 'mc' "
                        "(read from the cache or the release's server)")
    parser.add_argument("--output", type=Path,
                        help="folder for run outputs (default: $ATLASPIPE_OUTPUT_DIR or ./atlaspipe-output)")
    parser.add_argument("--config", type=Path, help="analysis configuration file (TOML or JSON)")
    parser.add_argument("--chunk-size", type=int, help="entries per chunk")
    parser.add_argument("--base-url", help="read catalog samples from this mirror instead of the release's server")
    parser.add_argument("--fetch", action="store_true", help="download catalog samples into the cache before running")
    parser.add_argument("--sfos-pairing", action="store_true", default=None,
                        help="require two same-flavour opposite-sign pairs")
    parser.add_argument("--allow-partial", action="store_true",
                        help="finish a run whose inputs partly failed, marking every output PARTIAL")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_request(args: argparse.Namespace) -> RunRequest:
    """The run a command line asks for, with a new run id."""
    overrides = {"chunk_size": args.chunk_size, "sfos_pairing": args.sfos_pairing}
    config = load_config(args.config, **overrides) if args.config is not None else analysis_config(**overrides)
    output = (args.output or RuntimeSettings.from_env().output_dir).absolute()
    return RunRequest(
        run_id=new_run_id(), release=args.release,
        inputs=tuple(i if "://" in i else str(Path(i).absolute()) for i in args.input),
        samples=tuple(args.samples), base_url=args.base_url, fetch=bool(args.fetch), config=config,
        output_dir=str(output), allow_partial=bool(args.allow_partial),
        submitted_by=f"{getpass.getuser()}@{socket.gethostname()}", created=now_text(),
    )


def main(args: argparse.Namespace) -> int:
    from atlaspipe.summary import format_failed, format_summary

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
