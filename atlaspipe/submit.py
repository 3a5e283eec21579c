"""``atlaspipe-submit``: launch a run on the Celery workers, follow it, and report where the results are."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atlaspipe.config import RuntimeSettings, analysis_config, load_config, redact_url
from atlaspipe.errors import AtlaspipeError, ConfigError, RunFailedError

POLL_SECONDS = 0.5
_SUBCOMMANDS = ("status", "list", "resume")


def _submit_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atlaspipe-submit",
        description="Run the analysis on Celery workers. Other forms: "
                    "'atlaspipe-submit status RUN_ID', 'atlaspipe-submit list', 'atlaspipe-submit resume RUN_ID'.",
    )
    parser.add_argument("--release", choices=("2020", "2025e"))
    parser.add_argument("--input", nargs="+", default=[], metavar="PATH",
                        help="ROOT files, folders or URLs, as the workers see them (default: the embedded sample)")
    parser.add_argument("--samples", nargs="+", default=[], metavar="NAME")
    parser.add_argument("--chunk-size", type=int, help="entries per chunk")
    parser.add_argument("--config", type=Path, help="analysis configuration file (TOML or JSON)")
    parser.add_argument("--base-url", help="read catalog samples from this mirror")
    parser.add_argument("--output", type=Path, help="output folder, as the plot workers see it")
    _connection_options(parser)
    parser.add_argument("--allow-partial", action="store_true",
                        help="finish even if some inputs fail; outputs are marked PARTIAL")
    parser.add_argument("--keep-records", action="store_true",
                        help="keep the per-chunk records in Redis after success, for inspection")
    wait = parser.add_mutually_exclusive_group()
    wait.add_argument("--wait", dest="wait", action="store_true", default=True, help="follow the run (default)")
    wait.add_argument("--no-wait", dest="wait", action="store_false", help="print the run id and return")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", help="broker URL (default: $ATLASPIPE_BROKER_URL)")
    parser.add_argument("--backend", help="result backend URL, Redis (default: $ATLASPIPE_RESULT_BACKEND)")


def _other_parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"atlaspipe-submit {name}")
    if name in ("status", "resume"):
        parser.add_argument("run_id")
    if name == "list":
        parser.add_argument("--limit", type=int, default=20)
    if name == "resume":
        parser.add_argument("--no-wait", dest="wait", action="store_false", default=True)
        parser.add_argument("--quiet", action="store_true")
    _connection_options(parser)
    return parser


def _connect(args: argparse.Namespace) -> tuple[Any, Any]:
    """The Celery app and run records for the chosen URLs, failing fast if either is unreachable."""
    settings = RuntimeSettings.from_env()
    broker = args.broker or settings.broker_url
    backend = args.backend or settings.result_backend
    if not backend.startswith(("redis://", "rediss://")):
        raise ConfigError(f"result backend {redact_url(backend)}: atlaspipe needs Redis (chords and run records)")
    from atlaspipe import taskapp
    from atlaspipe.records import RunRecords

    taskapp.app.conf.broker_url = broker
    taskapp.app.conf.result_backend = backend
    try:
        with taskapp.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=1, timeout=4)
    except Exception as exc:
        raise AtlaspipeError(f"broker {redact_url(broker)} unreachable: {exc}") from None
    store = RunRecords(backend)
    store.ping()
    return taskapp.app, store


def _request(args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    overrides = {"release": args.release, "chunk_size": args.chunk_size}
    config = load_config(args.config, **overrides) if args.config else analysis_config(**overrides)
    output = (args.output or RuntimeSettings.from_env().output_dir).absolute()
    return {
        "run_id": run_id, "release": args.release,
        "inputs": [i if "://" in i else str(Path(i).absolute()) for i in args.input],
        "samples": list(args.samples), "base_url": args.base_url,
        "config": {k: v for k, v in config.to_json_dict().items() if k != "release"},
        "output_dir": str(output), "allow_partial": bool(args.allow_partial),
        "keep_records": bool(args.keep_records),
        "submitted_by": f"{getpass.getuser()}@{socket.gethostname()}",
    }


def submit(args: argparse.Namespace) -> int:
    from atlaspipe.planning import new_run_id
    from atlaspipe.tasks import plan_run

    if args.chunk_size is not None and args.chunk_size <= 0:
        raise ConfigError(f"--chunk-size must be a positive number of entries, got {args.chunk_size}")
    _, store = _connect(args)
    run_id = new_run_id()
    request = _request(args, run_id)
    store.create(run_id, request)
    plan_run.apply_async(args=[run_id], retry=True,
                         retry_policy={"max_retries": 3, "interval_start": 0.5, "interval_step": 1})
    run_dir = Path(request["output_dir"]) / run_id
    print(f"run {run_id} submitted; outputs will be in {run_dir}", file=sys.stderr)
    if not args.wait:
        print(run_id)
        return 0
    return follow(store, run_id, quiet=args.quiet)


def _write_status(run_dir: Path, meta: dict[str, str], done: int) -> None:
    from atlaspipe.processing import write_json

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "status.json", {
            "run_id": run_dir.name, "state": meta.get("state"), "chunks_total": int(meta.get("chunks_total", 0)),
            "chunks_done": done, "chunks_failed": int(meta.get("chunks_failed", 0)),
            "events_read": int(meta.get("events_read", 0)), "started": meta.get("created"),
            "updated": datetime.now(UTC).isoformat(timespec="seconds"), "message": meta.get("message", ""),
            "executor": "celery",
        })
    except OSError:
        # The output folder may live on the workers' side only; progress then shows in the terminal.
        pass


def follow(store: Any, run_id: str, quiet: bool = False) -> int:
    """Show progress until the run ends, then print its summary; 0 on success."""
    from atlaspipe.records import TERMINAL_STATES

    request = store.request(run_id)
    run_dir = Path(request["output_dir"]) / run_id
    bar = None
    started = time.monotonic()
    last_hint = started
    while True:
        meta = store.meta(run_id)
        state = meta["state"]
        total = int(meta.get("chunks_total", 0))
        done = min(store.chunks_done(run_id), total) if total else 0
        if state not in TERMINAL_STATES:
            _write_status(run_dir, meta, done)
        if not quiet and total and bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="chunk", desc=f"run {run_id}", file=sys.stderr, dynamic_ncols=True)
        if bar is not None:
            bar.update(done - bar.n)
            elapsed = max(time.monotonic() - started, 1e-6)
            bar.set_postfix_str(f"{int(meta.get('events_read', 0)) / elapsed:,.0f} ev/s, {state}")
        if state in TERMINAL_STATES:
            break
        if state == "submitted" and time.monotonic() - last_hint > 15:
            print("still waiting for a 'load' worker: is `celery -A atlaspipe worker -Q load` running?",
                  file=sys.stderr)
            last_hint = time.monotonic()
        time.sleep(POLL_SECONDS)
    if bar is not None:
        bar.close()
    return report(store, run_id, time.monotonic() - started)


def report(store: Any, run_id: str, wall: float | None = None) -> int:
    from atlaspipe.summary import format_summary

    meta = store.meta(run_id)
    request = store.request(run_id)
    run_dir = Path(meta.get("run_dir") or Path(request["output_dir"]) / run_id)
    state = meta["state"]
    results_path = run_dir / "results.json"
    if state in ("succeeded", "partial") and results_path.exists():
        results = json.loads(results_path.read_text("utf-8"))
        print(format_summary(results, run_dir, wall))
        return 0
    failed = json.loads(meta.get("failed") or "[]")
    lines = [f"run {run_id} {state}: {meta.get('message') or 'see ' + str(run_dir)}"]
    lines += [f"  chunk {f['chunk_id']} {f['source']} [{f['entry_start']}, {f['entry_stop']}): {f['error']}"
              for f in failed[:50]]
    if failed:
        lines.append(f"rerun the failed chunks with: atlaspipe-submit resume {run_id}")
    raise RunFailedError("\n".join(lines))


def status(args: argparse.Namespace) -> int:
    _, store = _connect(args)
    meta = store.meta(args.run_id)
    done = store.chunks_done(args.run_id)
    print(f"run {args.run_id}: {meta['state']}, {done}/{meta.get('chunks_total', '?')} chunks done, "
          f"{meta.get('chunks_failed', 0)} failed, {meta.get('events_read', 0)} events read")
    if meta.get("message"):
        print(f"  {meta['message']}")
    if meta.get("run_dir"):
        print(f"  outputs: {meta['run_dir']}")
    return 0


def list_runs(args: argparse.Namespace) -> int:
    _, store = _connect(args)
    print(f"{'run id':<24} {'state':<12} {'chunks':>13} {'created':<26}")
    for run_id in store.run_ids(args.limit):
        try:
            meta = store.meta(run_id)
        except AtlaspipeError:
            continue
        chunks = f"{store.chunks_done(run_id)}/{meta.get('chunks_total', '?')}"
        print(f"{run_id:<24} {meta['state']:<12} {chunks:>13} {meta.get('created', ''):<26}")
    return 0


def resume(args: argparse.Namespace) -> int:
    """Run again only the chunks of a run that have no result, or a failed one."""
    from atlaspipe.canvas import run_graph
    from atlaspipe.tasks import plan_run

    _, store = _connect(args)
    meta = store.meta(args.run_id)
    if meta["state"] == "succeeded":
        print(f"run {args.run_id} already succeeded; nothing to resume", file=sys.stderr)
        return report(store, args.run_id)
    try:
        plan = store.load_plan(args.run_id)
    except AtlaspipeError:
        store.set_state(args.run_id, "submitted", message="resumed before planning")
        plan_run.apply_async(args=[args.run_id])
        print(f"run {args.run_id} had no plan yet; planning it again", file=sys.stderr)
        return follow(store, args.run_id, args.quiet) if args.wait else 0
    store.forget_failed_chunks(args.run_id)
    stored = set(store.chunk_results(args.run_id))
    missing = [c for c in plan.chunks if c.chunk_id not in stored]
    store.set_state(args.run_id, "running", message=f"resumed: {len(missing)} chunk(s) to run")
    print(f"run {args.run_id}: resuming {len(missing)} of {len(plan.chunks)} chunk(s)", file=sys.stderr)
    run_graph(args.run_id, missing, plan.config.to_json_dict()).apply_async()
    return follow(store, args.run_id, args.quiet) if args.wait else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``atlaspipe-submit``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        if arguments and arguments[0] in _SUBCOMMANDS:
            name = arguments[0]
            args = _other_parser(name).parse_args(arguments[1:])
            return {"status": status, "list": list_runs, "resume": resume}[name](args)
        return submit(_submit_parser().parse_args(arguments))
    except AtlaspipeError as exc:
        print(f"atlaspipe-submit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("atlaspipe-submit: stopped following; the run goes on (see 'atlaspipe-submit status')",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
