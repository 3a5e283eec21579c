"""``atlaspipe bench``: a real run while sampling the CPU and memory of every service."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atlaspipe.cpu.bench import DEFAULT_OUTPUT, BenchOptions, SourceChoice, run_bench


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``atlaspipe bench``."""
    parser.add_argument("--env", required=True, help="name of this environment, e.g. docker-compose, kubernetes")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"folder for the CSV, plot and summary (default: {DEFAULT_OUTPUT})")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--input", nargs="+", default=[], metavar="PATH",
                      help="ROOT files or folders as the workers see them (default: the embedded sample)")
    data.add_argument("--events", type=int, help="generate a 2020-schema dataset of N MC events (plus "
                      "pseudo-data) into the cache folder, reused by later runs, and analyse it")
    parser.add_argument("--dataset-dir", type=Path,
                        help="where --events writes its dataset (default: $ATLASPIPE_CACHE_DIR/bench); "
                             "the workers must see it at the same path")
    parser.add_argument("--chunk-size", type=int, help="entries per chunk")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prometheus-url", help="read CPU and memory from this Prometheus server")
    source.add_argument("--exporter", action="append", default=[], metavar="[NAME=]URL",
                        help="scrape this metrics URL directly (repeatable); worker exporters name their "
                             "stage, other targets (e.g. Flower) are named NAME")
    source.add_argument("--cgroup", action="append", default=[], metavar="NAME=PATH",
                        help="read a service from its cgroup v2 folder (repeatable)")
    parser.add_argument("--split-workers", action="store_true",
                        help="local sampling: one service per worker node name instead of per stage")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    parser.add_argument("--broker", help="broker URL (default: $ATLASPIPE_BROKER_URL)")
    parser.add_argument("--backend", help="result backend URL (default: $ATLASPIPE_RESULT_BACKEND)")
    parser.add_argument("--run-output", type=Path, help="output folder of the run, as the plot worker sees it")


def main(args: argparse.Namespace) -> int:
    """Run ``atlaspipe bench``."""
    from atlaspipe.cli.common import warn_password_in_argv

    for option in ("broker", "backend"):
        warn_password_in_argv(f"--{option}", getattr(args, option))
    options = BenchOptions(
        env=args.env, output=args.output, inputs=tuple(args.input), events=args.events, dataset_dir=args.dataset_dir,
        chunk_size=args.chunk_size, interval=args.interval, broker=args.broker, backend=args.backend,
        run_output=args.run_output,
        source=SourceChoice(prometheus_url=args.prometheus_url, exporters=tuple(args.exporter),
                            cgroups=tuple(args.cgroup), split_workers=args.split_workers),
    )
    result = run_bench(options)
    print(f"bench {args.env}: {result.events:,} events in {result.wall_seconds:.1f} s "
          f"({result.summary['events_per_second']:,.0f} events/s), {result.summary['cpu_seconds_total']:.1f} CPU-s; "
          f"wrote {result.csv_path}", file=sys.stderr)
    return 0
