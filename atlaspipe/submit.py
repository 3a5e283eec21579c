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
from typing import Any, NoReturn

from atlaspipe.cli import OneLineParser, run_reporting_errors
from atlaspipe.config import RuntimeSettings, analysis_config, load_config, redact_url
from atlaspipe.errors import AtlaspipeError, ConfigError, RunFailedError
from atlaspipe.records import PLAN_COPY, REQUEST_COPY, read_run_copy, write_run_copy

POLL_SECONDS = 0.5
STALL_SECONDS = 60.0
"""Without a new chunk result for this long, the submitter checks the run for lost work."""
BACKEND_GRACE_SECONDS = 30.0
"""How long the submitter keeps polling an unreachable Redis before giving up on following."""
_SUBCOMMANDS = ("status", "list", "resume")


def _submit_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    _follow_options(parser)
    return parser


def _follow_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stall-timeout", type=float, default=STALL_SECONDS, metavar="SECONDS",
                        help="without a new chunk result for this long, look for lost or failed chunk "
                        f"tasks and complete the run if it can (default {STALL_SECONDS:g})")


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", help="broker URL (default: $ATLASPIPE_BROKER_URL)")
    parser.add_argument("--backend", help="result backend URL, Redis (default: $ATLASPIPE_RESULT_BACKEND)")


def _other_parser(name: str) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=f"atlaspipe-submit {name}")
    if name in ("status", "resume"):
        parser.add_argument("run_id")
    if name == "list":
        parser.add_argument("--limit", type=int, default=20)
    if name == "resume":
        parser.add_argument("--no-wait", dest="wait", action="store_false", default=True)
        parser.add_argument("--quiet", action="store_true")
        parser.add_argument("--force", action="store_true",
                            help="relaunch the missing chunks even if the run still makes progress")
        parser.add_argument("--output", type=Path,
                            help="output folder of the run, to rebuild it from request.json and plan.json "
                            "if the result backend lost it (default: $ATLASPIPE_OUTPUT_DIR)")
        _follow_options(parser)
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
    run_dir = Path(request["output_dir"]) / run_id
    # A copy beside the outputs, for `resume` should the result backend lose the run.
    write_run_copy(run_dir, REQUEST_COPY, request)
    store.create(run_id, request)
    plan_run.apply_async(args=[run_id], retry=True,
                         retry_policy={"max_retries": 3, "interval_start": 0.5, "interval_step": 1})
    print(f"run {run_id} submitted; outputs will be in {run_dir}", file=sys.stderr)
    if not args.wait:
        print(run_id)
        return 0
    return follow(store, run_id, quiet=args.quiet, stall_seconds=args.stall_timeout)


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


class _BackendWatch:
    """Tells a Redis restart (records gone) from a Redis that is briefly unreachable."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.down_since: float | None = None

    def unreachable(self, exc: Exception) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            print(f"result backend unreachable ({exc}); still trying", file=sys.stderr)
        elif now - self.down_since > BACKEND_GRACE_SECONDS:
            raise RunFailedError(
                f"run {self.run_id}: result backend unreachable for {BACKEND_GRACE_SECONDS:g} s; the run goes on "
                f"without being followed (see 'atlaspipe-submit status {self.run_id}')"
            )

    def lost(self) -> NoReturn:
        raise RunFailedError(
            f"run {self.run_id}: the result backend lost the run's records (was Redis restarted? it keeps "
            f"nothing on disk); finish the run with: atlaspipe-submit resume {self.run_id}"
        )


def follow(store: Any, run_id: str, quiet: bool = False, stall_seconds: float = STALL_SECONDS) -> int:
    """Show progress until the run ends, then print its summary; 0 on success.

    It also watches for a stalled run: with no new chunk result for ``stall_seconds``, it records
    chunk tasks that failed for good and launches the completion a lost chord callback never did.
    """
    import redis

    from atlaspipe.records import TERMINAL_STATES

    request = store.request(run_id)
    run_dir = Path(request["output_dir"]) / run_id
    bar = None
    started = time.monotonic()
    last_hint = started
    watch = _BackendWatch(run_id)
    last_done, last_progress = -1, time.monotonic()
    while True:
        try:
            meta = store.meta(run_id)
            total = int(meta.get("chunks_total", 0))
            done = min(store.chunks_done(run_id), total) if total else 0
        except redis.RedisError as exc:
            watch.unreachable(exc)
            time.sleep(POLL_SECONDS)
            continue
        except AtlaspipeError:
            watch.lost()
        watch.down_since = None
        state = meta["state"]
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
        if done != last_done:
            last_done, last_progress = done, time.monotonic()
        elif state == "running" and time.monotonic() - last_progress > stall_seconds:
            unstall(store, run_id)
            last_progress = time.monotonic()
        if state == "submitted" and time.monotonic() - last_hint > 15:
            print("still waiting for a 'load' worker: is `celery -A atlaspipe worker -Q load` running?",
                  file=sys.stderr)
            last_hint = time.monotonic()
        time.sleep(POLL_SECONDS)
    if bar is not None:
        bar.close()
    return report(store, run_id, time.monotonic() - started)


def unstall(store: Any, run_id: str, limit: int = 2000) -> None:
    """Repair a run that stopped progressing: record chunk tasks that failed for good, then
    complete the run if every chunk has a result. Safe to call at any time."""
    from atlaspipe.canvas import chunk_task_id
    from atlaspipe.tasks import app, maybe_complete, process_chunk

    try:
        generation = store.generation(run_id)
        config = store.load_plan(run_id).config.to_json_dict() if store.has_plan(run_id) else None
        failed = relaunched = 0
        for chunk_id in store.missing_chunk_ids(run_id)[:limit]:
            task_id = chunk_task_id(run_id, generation, chunk_id)
            outcome = app.AsyncResult(task_id)
            chunk = store.planned_chunk(run_id, chunk_id)
            if chunk is None or outcome.state not in ("FAILURE", "SUCCESS"):
                continue  # still queued or running
            if outcome.state == "FAILURE":
                reason = f"task failed on the worker: {type(outcome.result).__name__}: {str(outcome.result)[:300]}"
                record = {"chunk_id": chunk.chunk_id, "sample": chunk.sample,
                          "error": f"{chunk.source} [{chunk.entry_start}, {chunk.entry_stop}): {reason}"}
                failed += store.save_chunk_result(run_id, record)
            elif config is not None:
                # The task finished but its result is gone (the backend lost it): run it again.
                process_chunk.apply_async((run_id, chunk.to_dict(), config), task_id=task_id)
                relaunched += 1
        if failed:
            print(f"run {run_id}: {failed} chunk task(s) had failed for good; recorded as failed", file=sys.stderr)
        if relaunched:
            print(f"run {run_id}: {relaunched} finished chunk task(s) had no stored result; relaunched them",
                  file=sys.stderr)
        if maybe_complete(store, run_id):
            print(f"run {run_id}: every chunk has a result but the run had not completed; completing it",
                  file=sys.stderr)
    except Exception as exc:
        # Repair is best effort; following goes on and `resume` remains available.
        print(f"run {run_id}: could not check the stalled run ({exc})", file=sys.stderr)


def report(store: Any, run_id: str, wall: float | None = None) -> int:
    from atlaspipe.summary import describe_failure, format_summary

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
    lines += [f"  {describe_failure(f)}" for f in failed[:50]]
    if failed:
        lines.append(f"rerun the failed chunks with: atlaspipe-submit resume {run_id}")
    raise RunFailedError("\n".join(lines))


def status(args: argparse.Namespace) -> int:
    _, store = _connect(args)
    meta = store.meta(args.run_id)
    done = _chunks_done(store, args.run_id, meta)
    print(f"run {args.run_id}: {meta['state']}, {done}/{meta.get('chunks_total', '?')} chunks done, "
          f"{meta.get('chunks_failed', 0)} failed, {meta.get('events_read', 0)} events read")
    if meta.get("message"):
        print(f"  {meta['message']}")
    if meta.get("run_dir"):
        print(f"  outputs: {meta['run_dir']}")
    return 0


def _chunks_done(store: Any, run_id: str, meta: dict[str, str]) -> int:
    """Chunks with a result; a succeeded run's per-chunk records are released, so all of them."""
    if meta.get("state") == "succeeded":
        return int(meta.get("chunks_total", 0))
    return int(store.chunks_done(run_id))


def list_runs(args: argparse.Namespace) -> int:
    _, store = _connect(args)
    print(f"{'run id':<24} {'state':<12} {'chunks':>13} {'created':<26}")
    for run_id in store.run_ids(args.limit):
        try:
            meta = store.meta(run_id)
        except AtlaspipeError:
            continue
        chunks = f"{_chunks_done(store, run_id, meta)}/{meta.get('chunks_total', '?')}"
        print(f"{run_id:<24} {meta['state']:<12} {chunks:>13} {meta.get('created', ''):<26}")
    return 0


def _restore(store: Any, args: argparse.Namespace) -> bool:
    """Rebuild a run's records from its folder (request.json, plan.json) if the backend lost them."""
    from atlaspipe.planning import RunPlan

    run_id = args.run_id
    try:
        store.meta(run_id)
        store.request(run_id)
        return False
    except AtlaspipeError:
        pass
    output = (args.output or RuntimeSettings.from_env().output_dir).absolute()
    run_dir = output / run_id
    request = read_run_copy(run_dir, REQUEST_COPY)
    if request is None:
        raise AtlaspipeError(
            f"unknown run id '{run_id}': the result backend has no record of it and {run_dir / REQUEST_COPY} "
            "does not exist (pass --output with the run's output folder)"
        )
    plan_copy = read_run_copy(run_dir, PLAN_COPY)
    store.create(run_id, request, state="running" if plan_copy else "submitted")
    if plan_copy is not None:
        plan = RunPlan.from_dict(plan_copy)
        store.save_plan(plan)
        store.set_state(run_id, "running", chunks_total=len(plan.chunks), notes=plan.notes)
    store.recount(run_id)
    print(f"run {run_id}: rebuilt its records from {run_dir}", file=sys.stderr)
    return True


def _progressing(meta: dict[str, str], within: float) -> bool:
    """Whether a live run stored a chunk result or changed state in the last ``within`` seconds."""
    last = float(meta.get("last_chunk_at") or 0)
    try:
        updated = datetime.fromisoformat(meta.get("updated", "")).timestamp()
    except ValueError:
        updated = 0.0
    return time.time() - max(last, updated) < within


def resume(args: argparse.Namespace) -> int:
    """Run again only the chunks of a run that have no result, or a failed one, then complete it."""
    from atlaspipe.canvas import run_graph
    from atlaspipe.tasks import maybe_complete, plan_run

    _, store = _connect(args)
    run_id = args.run_id
    restored = _restore(store, args)
    meta = store.meta(run_id)
    if meta["state"] == "succeeded":
        print(f"run {run_id} already succeeded; nothing to resume", file=sys.stderr)
        return report(store, run_id)
    if not store.has_plan(run_id):
        store.set_state(run_id, "submitted", message="resumed before planning")
        plan_run.apply_async(args=[run_id])
        print(f"run {run_id} had no plan yet; planning it again", file=sys.stderr)
        return follow(store, run_id, args.quiet, args.stall_timeout) if args.wait else 0
    active = meta["state"] not in ("failed", "partial")
    if active and not (args.force or restored) and _progressing(meta, args.stall_timeout):
        print(f"run {run_id} is still progressing; following it (--force relaunches its missing chunks now)",
              file=sys.stderr)
        return follow(store, run_id, args.quiet, args.stall_timeout) if args.wait else 0
    plan = store.load_plan(run_id)
    # A new generation: a fresh completion claim, and task ids distinct from the first launch's.
    generation = store.next_generation(run_id)
    store.forget_failed_chunks(run_id)
    store.recount(run_id)
    stored = set(store.chunk_results(run_id))
    missing = [c for c in plan.chunks if c.chunk_id not in stored]
    store.set_state(run_id, "running", message=f"resumed: {len(missing)} chunk(s) to run", failed="[]")
    print(f"run {run_id}: resuming {len(missing)} of {len(plan.chunks)} chunk(s)", file=sys.stderr)
    if missing:
        run_graph(run_id, missing, plan.config.to_json_dict(), generation).apply_async()
    else:
        maybe_complete(store, run_id)
    return follow(store, run_id, args.quiet, args.stall_timeout) if args.wait else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``atlaspipe-submit``."""
    arguments = list(sys.argv[1:] if argv is None else argv)

    def command() -> int:
        if arguments and arguments[0] in _SUBCOMMANDS:
            name = arguments[0]
            args = _other_parser(name).parse_args(arguments[1:])
            return {"status": status, "list": list_runs, "resume": resume}[name](args)
        return submit(_submit_parser().parse_args(arguments))

    return run_reporting_errors(
        "atlaspipe-submit", command, "stopped following; the run goes on (see 'atlaspipe-submit status')")

if __name__ == "__main__":
    sys.exit(main())
