"""Celery tasks: thin adapters from messages to the stage functions, with stable explicit names.

Reliability rules (docs/reliability.md): a chunk's result is stored once (HSETNX), whatever the
number of deliveries; every chunk ends with a stored result, a success or an error, so nothing is
silently dropped; and completion (aggregate, then finalize) is triggered by whoever sees the last
result stored, guarded by a claim, instead of depending on the chord callback alone.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import redis
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import before_task_publish, task_failure

from atlaspipe.chunks import Chunk
from atlaspipe.config import AnalysisConfig, RuntimeSettings
from atlaspipe.errors import AtlaspipeError, ConfigError
from atlaspipe.records import PLAN_COPY, REQUEST_COPY, RunRecords, write_run_copy
from atlaspipe.taskapp import app

log = logging.getLogger(__name__)

MAX_TIMEOUT_RETRIES = 2
"""Retries of a chunk that hit the soft time limit or lost its worker process, before it is failed."""
BACKEND_RETRIES = 30
"""Retries, two seconds apart, of a chunk that could not store its result because Redis was away."""
_records: RunRecords | None = None
_largest_message_bytes = 0


def _seconds(name: str) -> float | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{name}={text!r} must be a positive number of seconds")
    return value


def _time_limits() -> dict[str, float]:
    """Per-task limits from ``ATLASPIPE_TASK_SOFT_TIME_LIMIT`` / ``ATLASPIPE_TASK_TIME_LIMIT``, for
    operators whose chunks are much faster or slower than celeryconfig's defaults assume."""
    soft = _seconds("ATLASPIPE_TASK_SOFT_TIME_LIMIT")
    hard = _seconds("ATLASPIPE_TASK_TIME_LIMIT")
    limits: dict[str, float] = {}
    if soft is not None:
        limits["soft_time_limit"] = soft
        # The hard limit must leave the soft one time to be handled.
        limits["time_limit"] = hard if hard is not None else soft + 60
    elif hard is not None:
        limits["time_limit"] = hard
    if "soft_time_limit" in limits and limits["time_limit"] <= limits["soft_time_limit"]:
        raise ConfigError("ATLASPIPE_TASK_TIME_LIMIT must be larger than ATLASPIPE_TASK_SOFT_TIME_LIMIT")
    return limits


TIME_LIMITS = _time_limits()


@before_task_publish.connect
def _measure_message(body: Any = None, **_: Any) -> None:
    """Keep the size of the largest task message this process published, for the run records."""
    global _largest_message_bytes
    size = len(json.dumps(body, default=str))
    _largest_message_bytes = max(_largest_message_bytes, size)


def records() -> RunRecords:
    """This process's connection to the run records, on the result backend's Redis."""
    global _records
    if _records is None:
        _records = RunRecords(str(app.conf.result_backend))
    return _records


def run_dir_for(request: dict[str, Any]) -> Path:
    return Path(request.get("output_dir") or RuntimeSettings.from_env().output_dir) / request["run_id"]


def maybe_complete(store: RunRecords, run_id: str) -> bool:
    """Launch aggregate → finalize if every chunk has a result and nobody has claimed it yet."""
    if not store.complete(run_id):
        return False
    from atlaspipe.canvas import completion_graph

    generation = store.generation(run_id)
    owner = f"{run_id}.g{generation}.complete-{uuid.uuid4().hex[:8]}"
    if not store.claim_completion(run_id, generation, owner):
        return False
    log.info("run %s: every chunk has a result; launching aggregation (%s)", run_id, owner)
    completion_graph(run_id, owner).apply_async()
    return True


@app.task(name="atlaspipe.plan_run", bind=True, **TIME_LIMITS)
def plan_run(self: Task, run_id: str) -> dict[str, Any]:
    """``load`` stage: resolve the inputs, cut chunks, store the plan and launch the graph."""
    from atlaspipe.canvas import run_graph
    from atlaspipe.inputs import check_submitted_inputs
    from atlaspipe.planning import plan_run as make_plan
    from atlaspipe.planning import resolve_inputs

    store = records()
    request = store.request(run_id)
    if store.meta(run_id).get("state") not in ("submitted", "planning"):
        # A redelivered planning message: the run was planned and launched already.
        return {"run_id": run_id, "duplicate": True}
    store.set_state(run_id, "planning")
    run_dir = run_dir_for(request)
    write_run_copy(run_dir, REQUEST_COPY, request)
    try:
        check_submitted_inputs(request.get("inputs", []))
        release, files = resolve_inputs(
            request.get("release"), request.get("inputs", []), request.get("samples", []),
            request.get("base_url"), bool(request.get("fetch", False)),
        )
        config = AnalysisConfig(**{**request.get("config", {}), "release": release})
        plan = make_plan(run_id, config, files, allow_partial=bool(request.get("allow_partial", False)))
    except AtlaspipeError as exc:
        store.set_state(run_id, "failed", message=str(exc))
        log.warning("run %s: planning failed: %s", run_id, exc)
        return {"run_id": run_id, "error": str(exc)}
    store.save_plan(plan)
    # The plan on disk lets `resume` rebuild the run should Redis lose it.
    write_run_copy(run_dir, PLAN_COPY, plan.to_dict(with_chunks=True))
    store.set_state(run_id, "running", chunks_total=len(plan.chunks), notes=plan.notes)
    global _largest_message_bytes
    _largest_message_bytes = 0
    if plan.chunks:
        # Not a child of this task: the 10,000 ids of a big run would otherwise sit in its result.
        run_graph(run_id, plan.chunks, config.to_json_dict(), store.generation(run_id)).apply_async(
            add_to_parent=False)
    else:
        maybe_complete(store, run_id)
    store.set_state(run_id, "running", largest_message_bytes=_largest_message_bytes)
    return {"run_id": run_id, "chunks_total": len(plan.chunks)}


def _failed_record(work: Chunk, reason: str, host: str | None) -> dict[str, Any]:
    return {"chunk_id": work.chunk_id, "sample": work.sample, "host": host, "pid": os.getpid(),
            "error": f"{work.source} [{work.entry_start}, {work.entry_stop}): {reason}"}


@app.task(name="atlaspipe.process_chunk", bind=True, acks_late=True, max_retries=MAX_TIMEOUT_RETRIES,
          retry_on_worker_lost=True, default_retry_delay=1, **TIME_LIMITS)
def process_chunk(self: Task, run_id: str, chunk: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``process`` stage: one chunk's histograms, stored by reference; returns a tiny acknowledgement."""
    from atlaspipe.processing import process_chunk as run_chunk
    from atlaspipe.reading import use_fast_zlib

    store = records()
    work = Chunk.from_dict(chunk)
    try:
        stored, state = store.chunk_status(run_id, work.chunk_id)
    except redis.RedisError as exc:
        raise self.retry(exc=exc, countdown=2, max_retries=BACKEND_RETRIES) from None
    if stored or state == "succeeded":
        log.info("run %s chunk %d: already has a result; duplicate delivery not counted", run_id, work.chunk_id)
        return {"chunk_id": work.chunk_id, "sample": work.sample, "ok": True, "duplicate": True}
    use_fast_zlib()
    try:
        result = run_chunk(work, AnalysisConfig(**config))
    except SoftTimeLimitExceeded:
        if self.request.retries < MAX_TIMEOUT_RETRIES:
            log.warning("run %s chunk %d: soft time limit exceeded; retrying", run_id, work.chunk_id)
            raise self.retry(countdown=1) from None
        result = _failed_record(work, f"exceeded the task time limit {MAX_TIMEOUT_RETRIES + 1} times",
                                self.request.hostname)
    except Exception as exc:
        # Whatever a strange file makes the libraries raise, the chunk ends as a reported failure,
        # never as a lost one.
        log.exception("run %s chunk %d: unexpected error", run_id, work.chunk_id)
        result = _failed_record(work, f"unexpected error {type(exc).__name__}: {str(exc)[:300]}",
                                self.request.hostname)
    result["worker"] = self.request.hostname
    try:
        counted = store.save_chunk_result(run_id, result)
        if counted:
            maybe_complete(store, run_id)
    except redis.RedisError as exc:
        log.warning("run %s chunk %d: result backend unavailable (%s); retrying", run_id, work.chunk_id, exc)
        raise self.retry(exc=exc, countdown=2, max_retries=BACKEND_RETRIES) from None
    if not counted:
        log.info("run %s chunk %d: result stored by another delivery; not counted", run_id, work.chunk_id)
    return {
        "chunk_id": work.chunk_id, "sample": work.sample, "ok": "error" not in result, "duplicate": not counted,
        "events_read": result.get("events_read", 0), "events_selected": result.get("events_selected", 0),
        "bytes_read": result.get("bytes_read", 0),
    }


@task_failure.connect
def _record_failed_chunk(sender: Any = None, exception: BaseException | None = None, args: Any = None,
                         kwargs: Any = None, **_: Any) -> None:
    """A chunk task that failed for good (hard time limit, worker lost too often, backend retries
    exhausted) is stored as a failed chunk, so the run finishes and says which chunk and why."""
    if getattr(sender, "name", None) != "atlaspipe.process_chunk":
        return
    try:
        values = [*(args or ()), None, None]
        run_id = (kwargs or {}).get("run_id", values[0])
        work = Chunk.from_dict((kwargs or {}).get("chunk", values[1]))
        reason = f"task failed on the worker: {type(exception).__name__}: {str(exception)[:300]}"
        store = records()
        if store.save_chunk_result(run_id, _failed_record(work, reason, None)):
            log.warning("run %s chunk %d: %s", run_id, work.chunk_id, reason)
            maybe_complete(store, run_id)
    except Exception:
        log.exception("could not record the failure of a chunk task")


@app.task(name="atlaspipe.aggregate_run", bind=True, **TIME_LIMITS)
def aggregate_run(self: Task, run_id: str, owner: str | None = None) -> dict[str, Any]:
    """``aggregate`` stage: merge the stored chunk histograms in chunk-id order and scale them.

    Runs only when every chunk has a result and this task holds the run's completion claim, so an
    early chord callback (duplicate deliveries count twice in Celery's chord counter) or a second
    trigger does nothing.
    """
    from atlaspipe.processing import aggregate

    store = records()
    if not store.complete(run_id):
        missing = len(store.missing_chunk_ids(run_id))
        log.info("run %s: aggregation asked with %d chunk(s) still without a result; the last one "
                 "to finish completes the run", run_id, missing)
        return {"run_id": run_id, "aggregated": False, "missing": missing}
    generation = store.generation(run_id)
    if not store.claim_completion(run_id, generation, owner or str(self.request.id)):
        return {"run_id": run_id, "aggregated": False, "claimed_elsewhere": True}
    store.set_state(run_id, "aggregating")
    plan = store.load_plan(run_id)
    aggregated = aggregate(plan, store.chunk_results(run_id))
    store.save_aggregate(run_id, aggregated)
    store.set_state(run_id, "aggregating", aggregated_generation=generation)
    return {"run_id": run_id, "aggregated": True, "chunks_failed": len(aggregated["failed"])}


@app.task(name="atlaspipe.finalize_run", bind=True, **TIME_LIMITS)
def finalize_run(self: Task, run_id: str) -> dict[str, Any]:
    """``plot`` stage: statistics, figures, tables, results.json and the manifest.

    Every aggregate step is chained to one of these; only the first to find this generation's
    aggregate finalizes it, the others (after an aggregate that did nothing) return at once.
    """
    from atlaspipe.processing import finalize, write_json

    store = records()
    generation = store.generation(run_id)
    aggregated_generation = int(store.meta(run_id).get("aggregated_generation", -1))
    if aggregated_generation != generation or not store.claim_completion(
            run_id, generation, str(self.request.id), step="finalize"):
        return {"run_id": run_id, "finalized": False}
    store.set_state(run_id, "plotting")
    request = store.request(run_id)
    plan = store.load_plan(run_id)
    aggregated = store.load_aggregate(run_id)
    chunk_results = store.chunk_results(run_id)
    workers = sorted({r.get("worker") or r.get("host") or "?" for r in chunk_results.values()})
    meta = store.meta(run_id)
    run_info = {
        "executor": "celery", "workers": workers, "submitted_by": request.get("submitted_by"),
        "timings": {"submitted": meta.get("created"), "finalized_by": self.request.hostname},
        "generation": store.generation(run_id),
    }
    run_dir = run_dir_for(request)
    allow_partial = bool(request.get("allow_partial", False))
    results = finalize(aggregated, plan, run_dir, run_info, allow_partial=allow_partial)
    failed = results["chunks"]["failed"]
    if failed and not allow_partial:
        state = "failed"
        message = f"{len(failed)} of {len(plan.chunks)} chunk(s) failed"
    else:
        state = "partial" if failed else "succeeded"
        message = f"PARTIAL: {len(failed)} of {len(plan.chunks)} chunk(s) failed" if failed else ""
    store.set_state(run_id, state, run_dir=str(run_dir), message=message, failed=failed[:200])
    meta = store.meta(run_id)
    write_json(run_dir / "status.json", {
        "run_id": run_id, "state": state, "chunks_total": len(plan.chunks),
        "chunks_done": len(chunk_results), "chunks_failed": len(failed),
        "events_read": int(meta.get("events_read", 0)), "started": meta.get("created"),
        "updated": meta.get("updated"), "message": message, "executor": "celery", "failed": failed,
        "missing": results.get("missing", {}),
    })
    if state == "succeeded" and not request.get("keep_records", False):
        store.release_bulk(run_id)
    return {"run_id": run_id, "state": state, "run_dir": str(run_dir), "finalized": True}
