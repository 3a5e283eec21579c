"""Celery tasks: thin adapters from messages to the run lifecycle, with stable explicit names.

The lifecycle (``atlaspipe.pipeline.lifecycle``) owns every decision and every write; a task turns
a message into a lifecycle call and the lifecycle's answer into the next messages. Two rules are the
tasks' own (docs/reliability.md):

- A message is never acknowledged before its outcome is stored. No task stores a Celery result or a
  STARTED state (the run records hold the outcome), and a task that cannot reach the records waits
  for them inside its body, holding the message; past ``backend_patience`` it requeues the message.
- A chunk's deliveries are counted in the run records, so one that kills its worker every time
  is failed after ``max_deliveries`` instead of coming back forever.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import task_failure

from atlaspipe.config import AnalysisConfig, WorkerSettings
from atlaspipe.errors import AtlaspipeError
from atlaspipe.model import Chunk, ChunkResult, RunRequest
from atlaspipe.pipeline.celery.app import app
from atlaspipe.pipeline.celery.records import TRANSIENT_ERRORS, RunRecords
from atlaspipe.pipeline.lifecycle import ChunkGate, Lifecycle, one_line, worker_name
from atlaspipe.pipeline.stages import AnalysisStages

log = logging.getLogger(__name__)
T = TypeVar("T")
_TASK_ID = re.compile(r"\.g(\d+)\.c\d+$")


F = TypeVar("F", bound=Callable[..., Any])


def stage_task(name: str, **options: Any) -> Callable[[F], F]:
    """``app.task`` with its stable name and ``bind``; typed, since celery ships no type information.

    Nothing calls the decorated functions directly: the canvas builds signatures by task name.
    """
    return cast(Callable[[F], F], app.task(name=name, bind=True, **options))


def on_failure(receiver: F) -> F:
    """Connect ``receiver`` to Celery's ``task_failure`` signal (typed, like ``stage_task``)."""
    task_failure.connect(receiver, weak=False)
    return receiver


@functools.cache
def settings() -> WorkerSettings:
    """This worker's settings, read once, when the first task runs (never at import)."""
    return WorkerSettings.from_env()


@functools.cache
def lifecycle() -> Lifecycle:
    """This process's lifecycle over the run records on the result backend's Redis."""
    return Lifecycle(RunRecords(str(app.conf.result_backend)), "celery", AnalysisStages(fence_inputs=True),
                     max_deliveries=settings().max_deliveries)


def patiently(action: Callable[[], T], waiting: Callable[[float], None] | None = None) -> T:
    """``action()``, waited out while the run records are unreachable (the message stays unacked).

    Past the worker's backend patience the message is requeued, so a long outage delays the run
    but never drops a chunk. ``waiting(since)`` is told once, after ten seconds.
    """
    patience = settings().backend_patience_seconds
    started = time.monotonic()
    delay = 0.2
    told = False
    while True:
        try:
            return action()
        except TRANSIENT_ERRORS as exc:
            waited = time.monotonic() - started
            if waited >= patience:
                log.warning("result backend unreachable for %.0f s (%s); requeueing the message", waited, exc)
                raise Reject(exc, requeue=True) from None
            if not told and waited >= 10.0:
                told = True
                log.warning("result backend unreachable (%s); waiting up to %.0f s", exc, patience)
                if waiting is not None:
                    waiting(time.time() - waited)
            time.sleep(min(delay, patience - waited))
            delay = min(delay * 2, 5.0)


def _stalled_note(run_dir: str | None) -> Callable[[float], None] | None:
    if not run_dir:
        return None

    def note(since: float) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(since))
        lifecycle().note_stalled(Path(run_dir), f"result backend unreachable since {stamp} UTC")

    return note


def generation_of(task_id: str | None) -> int:
    """The generation a chunk task belongs to, from its id (see ``canvas.chunk_task_id``)."""
    found = _TASK_ID.search(task_id or "")
    return int(found.group(1)) if found else 0


def launch_chunks(run_id: str, chunks: Sequence[Chunk], config: AnalysisConfig, generation: int) -> None:
    """Publish a run's chunks (and its completion chord); a run whose chunks cannot be queued fails."""
    from atlaspipe.pipeline.celery.canvas import run_graph

    if not chunks:
        complete(run_id)
        return
    try:
        # Not a child of the calling task: the ids of a big run would otherwise sit in its request.
        run_graph(app, run_id, chunks, config, generation).apply_async(add_to_parent=False)
    except Exception as exc:
        lifecycle().fail(run_id, f"could not queue the chunks: {exc}")
        raise


def complete(run_id: str) -> None:
    """If every chunk has a result and nobody claimed the completion yet, launch aggregate → finalize."""
    from atlaspipe.pipeline.celery.canvas import completion_graph

    owner = patiently(lambda: lifecycle().completion_owner(run_id))
    if owner is None:
        return
    log.info("run %s: every chunk has a result; launching aggregation (%s)", run_id, owner)
    try:
        completion_graph(app, run_id, owner).apply_async(add_to_parent=False)
    except Exception as exc:
        # The claim is ours, so nobody else will complete this generation: the message comes back
        # and its redelivery (a duplicate) publishes the completion under the same claim.
        log.warning("run %s: could not queue the completion (%s); requeueing", run_id, exc)
        raise Reject(exc, requeue=True) from None


@stage_task("atlaspipe.plan_run")
def plan_run(self: Task, request: dict[str, Any]) -> None:
    """``load`` stage: register the run, plan it and launch its chunks."""
    submitted = RunRequest.from_jsonable(request, "plan_run message")
    run_id = submitted.run_id
    patiently(lambda: lifecycle().submit(submitted))
    plan = patiently(lambda: lifecycle().plan(run_id, owner=str(self.request.id)))
    if plan is not None:
        launch_chunks(run_id, plan.chunks, plan.config, lifecycle().store.generation(run_id))


@stage_task("atlaspipe.resume_run")
def resume_run(_self: Task, run_dir: str) -> None:
    """``load`` stage: rebuild a run's records from its folder if they were lost, then relaunch
    what has no result, or plan it again if it never got a plan."""
    run_id = Path(run_dir).name
    current = lifecycle()
    patiently(lambda: current.restore(Path(run_dir)))
    chunks = patiently(lambda: current.resume(run_id))
    if chunks is None:
        from atlaspipe.pipeline.celery.canvas import submission

        submission(app, current.store.request(run_id)).apply_async(add_to_parent=False)
        return
    plan = current.store.plan(run_id)
    assert plan is not None
    launch_chunks(run_id, chunks, plan.config, current.store.generation(run_id))


@stage_task("atlaspipe.cancel_run")
def cancel_run(_self: Task, run_id: str, reason: str = "cancelled") -> None:
    """``load`` stage: end a run as cancelled; its queued chunks are skipped when delivered."""
    patiently(lambda: lifecycle().cancel(run_id, reason))


@stage_task("atlaspipe.clean_runs")
def clean_runs(_self: Task, older_than_days: float) -> None:
    """``load`` stage: remove the records and folders of runs that ended more than this many days ago."""
    from datetime import timedelta

    removed = lifecycle().clean(timedelta(days=older_than_days))
    log.info("removed %d run(s) that ended more than %g day(s) ago", len(removed), older_than_days)


@stage_task("atlaspipe.process_chunk", acks_late=True, reject_on_worker_lost=True)
def process_chunk(self: Task, run_id: str, chunk: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``process`` stage: one chunk's histograms, stored in the run records; returns a small
    acknowledgement for the chord and the worker's metrics."""
    from atlaspipe.io.reading import use_fast_zlib
    from atlaspipe.pipeline.processing import process_chunk as run_chunk

    work = Chunk.from_jsonable(chunk, "process_chunk message")
    worker = str(self.request.hostname or worker_name())
    current = lifecycle()
    start = patiently(lambda: current.start_chunk(run_id, work, generation_of(self.request.id), worker))
    if start.gate is not ChunkGate.RUN:
        if start.gate is ChunkGate.STOPPED:
            log.info("run %s chunk %d: the run is not running (cancelled, ended or unknown); chunk skipped",
                     run_id, work.chunk_id)
            patiently(lambda: current.skip_chunk(run_id, work.chunk_id))
        else:
            if start.gate is ChunkGate.DUPLICATE:
                log.info("run %s chunk %d: already has a result; duplicate delivery not counted", run_id,
                         work.chunk_id)
            # A duplicate, or a chunk just failed for its deliveries: the run may be complete now
            # and its completion never launched (the first delivery died before launching it).
            complete(run_id)
        return {"chunk_id": work.chunk_id, "sample": work.sample, "ok": start.gate is ChunkGate.DUPLICATE,
                "duplicate": True}
    use_fast_zlib()
    try:
        result = run_chunk(work, AnalysisConfig(**config), worker, passthrough=(SoftTimeLimitExceeded,))
    except SoftTimeLimitExceeded:
        if start.deliveries < settings().max_deliveries:
            log.warning("run %s chunk %d: soft time limit exceeded; retrying", run_id, work.chunk_id)
            raise self.retry(countdown=1) from None
        result = ChunkResult.failed(work, f"exceeded the task time limit on each of its {start.deliveries} "
                                    "deliveries", worker)
    completes = patiently(lambda: current.chunk_done(run_id, result), waiting=_stalled_note(start.run_dir))
    if completes:
        complete(run_id)
    return {"chunk_id": work.chunk_id, "sample": work.sample, "ok": result.ok, "duplicate": False,
            "events_read": result.events_read, "events_selected": result.events_selected,
            "bytes_read": result.bytes_read}


@on_failure
def _record_failed_chunk(sender: Any = None, exception: BaseException | None = None, args: Any = None,
                         kwargs: Any = None, **_: Any) -> None:
    """A chunk task that failed for good outside its body (the hard time limit) is stored as a failed
    chunk, so the run finishes and says which chunk and why."""
    if getattr(sender, "name", None) != "atlaspipe.process_chunk":
        return
    try:
        values = [*(args or ()), None, None]
        run_id = (kwargs or {}).get("run_id", values[0])
        work = Chunk.from_jsonable((kwargs or {}).get("chunk", values[1]))
        reason = f"task failed on the worker: {type(exception).__name__}: {str(exception)[:300]}"
        if lifecycle().chunk_done(run_id, ChunkResult.failed(work, reason, worker_name())):
            complete(run_id)
        log.warning("run %s chunk %d: %s", run_id, work.chunk_id, reason)
    except Exception:
        log.exception("could not record the failure of a chunk task")


@stage_task("atlaspipe.aggregate_run", acks_late=True, reject_on_worker_lost=True)
def aggregate_run(self: Task, run_id: str, owner: str | None = None) -> None:
    """``aggregate`` stage: merge the stored chunk results in chunk-id order, under the run's
    completion claim (the chord callback without an owner claims it with its own task id)."""
    claimant = owner or str(self.request.id)
    if patiently(lambda: lifecycle().aggregate(run_id, claimant)) is None:
        # Not this chain's run to finish (the other completion path holds the claim), or the
        # aggregation failed: its finalize pieces would only find nothing to render.
        self.request.chain = self.request.callbacks = None


@stage_task("atlaspipe.render_piece", acks_late=True, reject_on_worker_lost=True)
def render_piece(_self: Task, run_id: str, piece: str) -> dict[str, Any]:
    """``plot`` stage: one piece of a run's outputs (the fit, or one figure), in parallel with the
    others. A failure is answered as ``error``, never raised, so the chord still reaches
    ``finalize``, which fails the run with it."""
    current = lifecycle()
    try:
        found = patiently(lambda: current.finalizing(run_id))
        if found is None:
            return {"piece": piece, "skipped": True}
        return AnalysisStages.render(piece, *found)
    except Reject:
        raise
    except Exception as exc:
        if not isinstance(exc, (AtlaspipeError, OSError)):
            log.exception("run %s: rendering %s failed", run_id, piece)
        return {"piece": piece, "error": one_line(exc)}


@stage_task("atlaspipe.finalize_run", acks_late=True, reject_on_worker_lost=True)
def finalize_run(self: Task, pieces: list[dict[str, Any]] | None, run_id: str) -> None:
    """``plot`` stage: tables, results.json, the manifest, the report and the final state, from the
    pieces ``render_piece`` answered, under the run's ``finalize`` claim."""
    from atlaspipe.results.outputs import Rendered

    answers = [p for p in pieces or [] if isinstance(p, dict)]
    if any(p.get("skipped") for p in answers):
        log.info("run %s: its pieces found no aggregate to render (finished or stopped elsewhere)", run_id)
        return
    current = lifecycle()
    workers = patiently(lambda: sorted({r.worker for r in current.store.chunk_results(run_id).values()}))
    rendered = Rendered.from_pieces(answers)
    final = Lifecycle(current.store, current.executor, AnalysisStages(fence_inputs=True, rendered=rendered),
                      max_deliveries=current.max_deliveries)
    patiently(lambda: final.finalize(run_id, str(self.request.id), workers))
