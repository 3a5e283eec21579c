"""Celery tasks: thin adapters from messages to the stage functions, with stable explicit names."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import before_task_publish

from atlaspipe.chunks import Chunk
from atlaspipe.config import AnalysisConfig, RuntimeSettings
from atlaspipe.errors import AtlaspipeError
from atlaspipe.records import RunRecords
from atlaspipe.taskapp import app

log = logging.getLogger(__name__)

MAX_TIMEOUT_RETRIES = 2
_records: RunRecords | None = None
_largest_message_bytes = 0


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


@app.task(name="atlaspipe.plan_run", bind=True)
def plan_run(self: Task, run_id: str) -> dict[str, Any]:
    """``load`` stage: resolve the inputs, cut chunks, store the plan and launch the graph."""
    from atlaspipe.canvas import run_graph
    from atlaspipe.planning import plan_run as make_plan
    from atlaspipe.planning import resolve_inputs

    store = records()
    request = store.request(run_id)
    store.set_state(run_id, "planning")
    try:
        release, files = resolve_inputs(
            request.get("release"), request.get("inputs", []), request.get("samples", []),
            request.get("base_url"), bool(request.get("fetch", False)),
        )
        config = AnalysisConfig(**{**request.get("config", {}), "release": release})
        plan = make_plan(run_id, config, files)
    except AtlaspipeError as exc:
        store.set_state(run_id, "failed", message=str(exc))
        log.warning("run %s: planning failed: %s", run_id, exc)
        return {"run_id": run_id, "error": str(exc)}
    store.save_plan(plan)
    store.set_state(run_id, "running", chunks_total=len(plan.chunks), notes=plan.notes)
    global _largest_message_bytes
    _largest_message_bytes = 0
    run_graph(run_id, plan.chunks, config.to_json_dict()).apply_async()
    store.set_state(run_id, "running", largest_message_bytes=_largest_message_bytes)
    return {"run_id": run_id, "chunks_total": len(plan.chunks)}


@app.task(name="atlaspipe.process_chunk", bind=True, acks_late=True, max_retries=MAX_TIMEOUT_RETRIES)
def process_chunk(self: Task, run_id: str, chunk: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``process`` stage: one chunk's histograms, stored by reference; returns a tiny acknowledgement."""
    from atlaspipe.processing import process_chunk as run_chunk
    from atlaspipe.reading import use_fast_zlib

    store = records()
    work = Chunk.from_dict(chunk)
    if store.has_chunk_result(run_id, work.chunk_id):
        return {"chunk_id": work.chunk_id, "duplicate": True}
    use_fast_zlib()
    try:
        result = run_chunk(work, AnalysisConfig(**config))
    except SoftTimeLimitExceeded:
        if self.request.retries < MAX_TIMEOUT_RETRIES:
            raise self.retry(countdown=1) from None
        result = {"chunk_id": work.chunk_id, "sample": work.sample, "host": self.request.hostname,
                  "pid": os.getpid(),
                  "error": f"{work.source} [{work.entry_start}, {work.entry_stop}): exceeded the task "
                           f"time limit {MAX_TIMEOUT_RETRIES + 1} times"}
    result["worker"] = self.request.hostname
    counted = store.save_chunk_result(run_id, result)
    return {"chunk_id": work.chunk_id, "ok": "error" not in result, "duplicate": not counted}


@app.task(name="atlaspipe.aggregate_run", bind=True)
def aggregate_run(self: Task, run_id: str) -> dict[str, Any]:
    """``aggregate`` stage: merge the stored chunk histograms in chunk-id order and scale them."""
    from atlaspipe.processing import aggregate

    store = records()
    store.set_state(run_id, "aggregating")
    plan = store.load_plan(run_id)
    aggregated = aggregate(plan, store.chunk_results(run_id))
    store.save_aggregate(run_id, aggregated)
    return {"run_id": run_id, "chunks_failed": len(aggregated["failed"])}


@app.task(name="atlaspipe.finalize_run", bind=True)
def finalize_run(self: Task, run_id: str) -> dict[str, Any]:
    """``plot`` stage: statistics, figures, tables, results.json and the manifest."""
    from atlaspipe.processing import finalize, write_json

    store = records()
    store.set_state(run_id, "plotting")
    request = store.request(run_id)
    plan = store.load_plan(run_id)
    aggregated = store.load_aggregate(run_id)
    chunk_results = store.chunk_results(run_id)
    workers = sorted({r.get("worker") or r.get("host", "?") for r in chunk_results.values()})
    meta = store.meta(run_id)
    run_info = {
        "executor": "celery", "workers": workers, "submitted_by": request.get("submitted_by"),
        "timings": {"submitted": meta.get("created"), "finalized_by": self.request.hostname},
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
        message = ""
    store.set_state(run_id, state, run_dir=str(run_dir), message=message, failed=failed[:200])
    meta = store.meta(run_id)
    write_json(run_dir / "status.json", {
        "run_id": run_id, "state": state, "chunks_total": len(plan.chunks),
        "chunks_done": len(chunk_results), "chunks_failed": len(failed),
        "events_read": int(meta.get("events_read", 0)), "started": meta.get("created"),
        "updated": meta.get("updated"), "message": message, "executor": "celery", "failed": failed,
    })
    if state == "succeeded" and not request.get("keep_records", False):
        store.release_bulk(run_id)
    return {"run_id": run_id, "state": state, "run_dir": str(run_dir)}
