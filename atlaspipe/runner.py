"""``atlaspipe run``: the whole analysis in this process, no broker, through the same stage functions."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atlaspipe.config import AnalysisConfig, RuntimeSettings, analysis_config, load_config
from atlaspipe.errors import RunFailedError
from atlaspipe.planning import RunPlan, new_run_id, plan_run, resolve_inputs


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


def build_config(args: argparse.Namespace, release: str) -> AnalysisConfig:
    """The run's analysis config: the config file, then command-line overrides."""
    overrides = {"release": release, "chunk_size": args.chunk_size, "sfos_pairing": args.sfos_pairing}
    if args.config is not None:
        return load_config(args.config, **overrides)
    return analysis_config(**overrides)


def execute_plan(plan: RunPlan, on_chunk: Callable[[dict[str, Any]], None] | None = None) -> dict[int, dict[str, Any]]:
    """Process every chunk of ``plan`` in this process, in chunk-id order."""
    from atlaspipe.processing import process_chunk
    from atlaspipe.reading import use_fast_zlib

    use_fast_zlib()
    results: dict[int, dict[str, Any]] = {}
    for chunk in plan.chunks:
        result = process_chunk(chunk, plan.config)
        results[chunk.chunk_id] = result
        if on_chunk is not None:
            on_chunk(result)
    return results


def main(args: argparse.Namespace) -> int:
    from atlaspipe.processing import aggregate, finalize, write_json
    from atlaspipe.summary import describe_failure, format_summary

    started = time.perf_counter()
    release, files = resolve_inputs(args.release, args.input, args.samples, args.base_url, args.fetch)
    config = build_config(args, release)
    plan = plan_run(new_run_id(), config, files, allow_partial=args.allow_partial)
    output_root = args.output or RuntimeSettings.from_env().output_dir
    run_dir = output_root / plan.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    status: dict[str, Any] = {
        "run_id": plan.run_id, "state": "running", "chunks_total": len(plan.chunks), "chunks_done": 0,
        "chunks_failed": 0, "events_read": 0, "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "executor": "in-process",
    }
    write_json(run_dir / "status.json", status)
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)

    progress = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        progress = tqdm(total=plan.total_entries, unit="ev", unit_scale=True, desc="processing", file=sys.stderr)

    def on_chunk(result: dict[str, Any]) -> None:
        status["chunks_done"] += 1
        status["chunks_failed"] += "error" in result
        status["events_read"] += result.get("events_read", 0)
        if progress is not None:
            progress.update(result.get("events_read", 0))

    processing_started = time.perf_counter()
    chunk_results = execute_plan(plan, on_chunk)
    if progress is not None:
        progress.close()
    processing_seconds = time.perf_counter() - processing_started
    aggregated = aggregate(plan, chunk_results)
    run_info = {
        "executor": "in-process",
        "workers": sorted({f"{r['host']}:{r['pid']}" for r in chunk_results.values()}),
        "timings": {"processing_seconds": processing_seconds},
    }
    results = finalize(aggregated, plan, run_dir, run_info, allow_partial=args.allow_partial)
    wall = time.perf_counter() - started
    failed = results["chunks"]["failed"]
    status.update(
        state="partial" if failed and args.allow_partial else ("failed" if failed else "succeeded"),
        updated=datetime.now(UTC).isoformat(timespec="seconds"), wall_seconds=wall,
        failed=failed,
    )
    write_json(run_dir / "status.json", status)
    if failed and not args.allow_partial:
        lines = [f"{len(failed)} of {len(plan.chunks)} chunk(s) failed; no results written "
                 f"(use --allow-partial to write PARTIAL results). Run folder: {run_dir}"]
        lines += [f"  {describe_failure(f)}" for f in failed[:20]]
        raise RunFailedError("\n".join(lines))
    print(format_summary(results, run_dir, wall))
    return 0
