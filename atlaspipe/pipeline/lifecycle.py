"""One owner for a run's life: submitted → planning → running → aggregating → finalizing → a terminal state.

Every change of a run's state and every write of its records and of ``status.json`` goes through
``Lifecycle``. Both executors drive the same object: ``atlaspipe run`` in one process over a
``MemoryStore``, the Celery workers over the Redis run records. Whoever runs a step owns its
failure: an exception in planning, aggregation or finalize moves the run to ``failed`` with a one-line
reason instead of leaving it in a state nobody will leave.

What makes the distributed case exact is kept from the first version: a chunk's result is stored once
(set-if-absent), completion is claimed by whoever sees the last result (not only the chord callback),
each ``resume`` is a new generation with fresh claims, and histograms merge in chunk-id order.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from atlaspipe.errors import AtlaspipeError
from atlaspipe.io import files
from atlaspipe.model import (
    ACTIVE_STATES,
    M4L,
    TRANSITIONS,
    Aggregate,
    Chunk,
    ChunkResult,
    Executor,
    Failure,
    RunPlan,
    RunRequest,
    RunResults,
    RunState,
    RunStatus,
    SampleLoss,
)

log = logging.getLogger(__name__)

REQUEST_COPY = "request.json"
PLAN_COPY = "plan.json"
STATUS_FILE = "status.json"
LIVE_FILE = "live.json"
LIVE_STATES = frozenset({RunState.RUNNING, RunState.AGGREGATING})
"""The states ``live.json`` is written in: the chunk sums are all there, none released yet."""
DEFAULT_MAX_DELIVERIES = 3
"""Deliveries of one chunk before it is failed: a chunk that kills its worker is not retried forever."""
STATUS_INTERVAL_SECONDS = 1.0
"""How often, at most, progress is written to ``status.json`` while chunks finish."""

STALL_SECONDS = 60.0
"""A running run without progress for this long, with nothing queued or running, is stalled."""


def run_stalled(state: RunState, idle_seconds: float, in_flight: int, queued: int,
                stall_seconds: float = STALL_SECONDS) -> bool:
    """A running run with no progress for ``stall_seconds``, no chunk running and none queued:
    nothing will move it on until ``resume``."""
    return state is RunState.RUNNING and idle_seconds >= stall_seconds and in_flight == 0 and queued == 0



def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def one_line(exc: BaseException) -> str:
    """An exception as one line for a status message: the reason, not the traceback."""
    if isinstance(exc, AtlaspipeError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:500]


class ChunkGate(StrEnum):
    """What one delivery of a chunk must do."""

    RUN = "run"
    DUPLICATE = "duplicate"
    """The chunk already has a stored result: a redelivery, counted once."""
    STOPPED = "stopped"
    """The run is cancelled, finished or unknown: the chunk is skipped."""
    OVER_LIMIT = "over-limit"
    """Delivered more often than allowed: the chunk is failed instead of run."""


@dataclass(frozen=True)
class ChunkStart:
    gate: ChunkGate
    deliveries: int
    run_dir: str | None


@dataclass(frozen=True)
class ChunkStored:
    counted: bool
    """False if another delivery stored this chunk's result first."""
    complete: bool
    """Every planned chunk has a result now."""
    status_due: bool
    """Time to write progress to ``status.json`` (at most every ``STATUS_INTERVAL_SECONDS``)."""


@dataclass(frozen=True)
class LiveSums:
    """What the store keeps for ``live.json`` as chunks land, in time independent of their number.

    ``bins``: per sample, the in-range m4l bins of its stored chunks summed over channels, unscaled,
    the empty ones left out. ``landed``: chunks stored since the run last entered ``running``
    (epoch seconds ``running_since``), the last at ``last_landed``.
    """

    bins: dict[str, dict[int, float]]
    landed: int = 0
    running_since: float | None = None
    last_landed: float | None = None

    def eta_seconds(self, chunks_left: int) -> float | None:
        """Time left at the rate chunks have landed since the run started running; None before the first."""
        if self.landed <= 0 or self.running_since is None or self.last_landed is None:
            return None
        elapsed = self.last_landed - self.running_since
        return max(0, chunks_left) * elapsed / self.landed if elapsed > 0 else None


def live_bins(result: ChunkResult) -> dict[int, float]:
    """The non-empty in-range m4l bins of a chunk, summed over channels: what it adds to ``LiveSums``."""
    counts = result.histograms.get(M4L)
    if counts is None or not result.ok:
        return {}
    summed = [sum(column) for column in zip(*counts.sumw, strict=True)][1:-1]
    return {index: value for index, value in enumerate(summed) if value}


@dataclass(frozen=True)
class StatusChange:
    """Fields of the status that a transition sets besides the state."""

    message: str | None = None
    chunks_total: int | None = None
    events_total: int | None = None
    notes: tuple[str, ...] | None = None
    failures: tuple[Failure, ...] | None = None
    missing: dict[str, SampleLoss] | None = None


class RunStore(Protocol):
    """Where the lifecycle keeps a run's records: Redis for Celery runs, memory for in-process ones.

    Each method is atomic on its own; the lifecycle never needs a transaction across two of them.
    """

    def create(self, request: RunRequest, status: RunStatus) -> bool:
        """Register a run; False if it exists already (a redelivered submission)."""

    def request(self, run_id: str) -> RunRequest: ...

    def status(self, run_id: str) -> RunStatus:
        """The live status; an ``AtlaspipeError`` naming the run if it is unknown."""

    def transition(self, run_id: str, target: RunState, allowed: Collection[RunState],
                   change: StatusChange) -> RunState | None:
        """Move to ``target`` if the current state is in ``allowed``: the previous state, else None."""

    def save_plan(self, plan: RunPlan) -> None: ...

    def plan(self, run_id: str, with_chunks: bool = True) -> RunPlan | None:
        """The plan; without its chunks it costs the same however many there are."""

    def start_chunk(self, run_id: str, chunk_id: int, generation: int, max_deliveries: int) -> ChunkStart: ...

    def store_chunk(self, run_id: str, result: ChunkResult) -> ChunkStored: ...

    def finish_chunk(self, run_id: str, chunk_id: int) -> None:
        """Forget that a delivery of this chunk is in progress (it was skipped or stored)."""

    def chunk_results(self, run_id: str) -> dict[int, ChunkResult]: ...

    def live_sums(self, run_id: str) -> LiveSums:
        """The running sums of the chunks stored so far (``store_chunk`` adds a counted chunk's
        ``live_bins``; entering ``running`` restarts the landing clock)."""

    def complete(self, run_id: str) -> bool:
        """The run is planned and every planned chunk has a result (a success or a failure)."""

    def missing_chunk_ids(self, run_id: str) -> list[int]:
        """Planned chunks without a result, in chunk-id order (none before planning)."""

    def claim(self, run_id: str, step: str, generation: int, owner: str) -> bool:
        """The right to run ``step`` for this generation; one owner, who may ask again."""

    def generation(self, run_id: str) -> int: ...

    def next_generation(self, run_id: str) -> int:
        """Start a new generation: failed chunk results are forgotten, counters recomputed."""

    def save_aggregate(self, run_id: str, generation: int, aggregate: Aggregate) -> None: ...

    def aggregate(self, run_id: str, generation: int) -> Aggregate | None: ...

    def release_bulk(self, run_id: str) -> None:
        """Drop per-chunk records once a run succeeded; its status, request and plan stay."""

    def forget(self, run_id: str) -> None:
        """Remove every record of a run."""

    def run_ids(self, limit: int) -> list[str]: ...


class Stages(Protocol):
    """The stage functions the lifecycle calls: pure work, no state of their own."""

    def plan(self, request: RunRequest) -> RunPlan: ...

    def aggregate(self, plan: RunPlan, results: dict[int, ChunkResult]) -> Aggregate: ...

    def finalize(self, aggregate: Aggregate, plan: RunPlan, request: RunRequest, status: RunStatus,
                 workers: tuple[str, ...]) -> RunResults | None:
        """Write the outputs; None when failed chunks forbid results (no ``allow_partial``)."""


class Lifecycle:
    """The state machine of runs, over one store. Safe to call from any process at any time."""

    def __init__(self, store: RunStore, executor: Executor, stages: Stages | None = None,
                 max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> None:
        if stages is None:
            from atlaspipe.pipeline.stages import AnalysisStages

            stages = AnalysisStages()
        self.store = store
        self.executor = executor
        self.stages = stages
        self.max_deliveries = max_deliveries
        self.planning_error: BaseException | None = None
        """Why this object's last ``plan`` failed, for an in-process caller to report as it was raised."""

    # --- submitted ---------------------------------------------------------------------------

    def submit(self, request: RunRequest) -> RunStatus:
        """Register a run in state ``submitted``; a second submission of the same id changes nothing."""
        status = RunStatus(run_id=request.run_id, state=RunState.SUBMITTED, executor=self.executor,
                           started=request.created, updated=now_text(), run_dir=str(request.run_dir))
        if self.store.create(request, status):
            self._copy(request.run_dir, REQUEST_COPY, request.to_json(indent=1))
            self.publish_status(request.run_id)
        return self.store.status(request.run_id)

    # --- planning ----------------------------------------------------------------------------

    def plan(self, run_id: str, owner: str) -> RunPlan | None:
        """Plan a submitted run and move it to ``running``; None if it is not this caller's to plan
        or planning failed (then the run is ``failed`` with the reason)."""
        generation = self.store.generation(run_id)
        if not self.store.claim(run_id, "plan", generation, owner):
            return None
        previous = self._move(run_id, RunState.PLANNING, {RunState.SUBMITTED, RunState.PLANNING})
        if previous is None:
            return None
        try:
            request = self.store.request(run_id)
            plan = self.stages.plan(request)
            self.store.save_plan(plan)
            self._copy(request.run_dir, PLAN_COPY, plan.to_json())
        except Exception as exc:
            _log_failure(run_id, "planning", exc)
            self.planning_error = exc
            self.fail(run_id, f"planning failed: {one_line(exc)}")
            return None
        self._move(run_id, RunState.RUNNING, {RunState.PLANNING}, StatusChange(
            chunks_total=len(plan.chunks), events_total=plan.total_entries, notes=plan.notes))
        return plan

    # --- running -----------------------------------------------------------------------------

    def start_chunk(self, run_id: str, chunk: Chunk, generation: int, worker: str) -> ChunkStart:
        """Whether this delivery of ``chunk`` should run; a chunk past its delivery limit is failed here."""
        start = self.store.start_chunk(run_id, chunk.chunk_id, generation, self.max_deliveries)
        if start.gate is ChunkGate.OVER_LIMIT:
            reason = (f"delivered {start.deliveries - 1} times without finishing (its worker was lost each "
                      f"time, e.g. killed or out of memory); not retried again")
            log.error("run %s chunk %d: %s", run_id, chunk.chunk_id, reason)
            self.chunk_done(run_id, ChunkResult.failed(chunk, reason, worker))
        return start

    def chunk_done(self, run_id: str, result: ChunkResult) -> bool:
        """Store a chunk's result (once); True when it was the last one missing."""
        stored = self.store.store_chunk(run_id, result)
        if stored.status_due:
            self.publish_status(run_id)
        return stored.counted and stored.complete

    def skip_chunk(self, run_id: str, chunk_id: int) -> None:
        self.store.finish_chunk(run_id, chunk_id)

    def completion_owner(self, run_id: str) -> str | None:
        """If every chunk has a result and nobody claimed the aggregation yet, claim it: the owner
        token to launch aggregate → finalize with, else None."""
        if not self.store.complete(run_id):
            return None
        generation = self.store.generation(run_id)
        owner = f"{run_id}.g{generation}.complete-{uuid.uuid4().hex[:8]}"
        return owner if self.store.claim(run_id, "aggregate", generation, owner) else None

    # --- aggregating -------------------------------------------------------------------------

    def aggregate(self, run_id: str, owner: str) -> Aggregate | None:
        """Merge the chunk results of a complete run under the aggregation claim; None if not this
        caller's to do (incomplete, claimed elsewhere, stopped) or if it failed."""
        if not self.store.complete(run_id):
            return None
        generation = self.store.generation(run_id)
        if not self.store.claim(run_id, "aggregate", generation, owner):
            return None
        if self._move(run_id, RunState.AGGREGATING, {RunState.RUNNING, RunState.AGGREGATING}) is None:
            return None
        try:
            plan = self._plan(run_id)
            aggregate = self.stages.aggregate(plan, self.store.chunk_results(run_id))
            self.store.save_aggregate(run_id, generation, aggregate)
        except Exception as exc:
            _log_failure(run_id, "aggregation", exc)
            self.fail(run_id, f"aggregation failed: {one_line(exc)}")
            return None
        return aggregate

    # --- finalizing --------------------------------------------------------------------------

    def finalizing(self, run_id: str) -> tuple[Aggregate, RunPlan, RunRequest] | None:
        """Move an aggregated run to ``finalizing`` and give what its outputs are made from; None
        if it has no aggregate for this generation or stopped. Pieces of the outputs (the fit,
        each figure) rendered in parallel call this first; no claim is needed, since rendering a
        piece twice writes the same files, and ``finalize`` alone writes the final state."""
        aggregate = self.store.aggregate(run_id, self.store.generation(run_id))
        if aggregate is None:
            return None
        if self._move(run_id, RunState.FINALIZING, {RunState.AGGREGATING, RunState.FINALIZING}) is None:
            return None
        return aggregate, self._plan(run_id), self.store.request(run_id)

    def finalize(self, run_id: str, owner: str, workers: Iterable[str] = ()) -> RunStatus | None:
        """Write every output from this generation's aggregate and end the run; None if not this
        caller's to do. A failure here ends the run ``failed``; no temporary file stays behind."""
        generation = self.store.generation(run_id)
        aggregate = self.store.aggregate(run_id, generation)
        if aggregate is None or not self.store.claim(run_id, "finalize", generation, owner):
            return None
        if self._move(run_id, RunState.FINALIZING, {RunState.AGGREGATING, RunState.FINALIZING}) is None:
            return None
        request = self.store.request(run_id)
        try:
            plan = self._plan(run_id)
            status = self.store.status(run_id)
            results = self.stages.finalize(aggregate, plan, request, status, tuple(sorted(set(workers))))
        except Exception as exc:
            _log_failure(run_id, "finalize", exc)
            files.remove_debris(request.run_dir)
            self.fail(run_id, f"finalize failed: {one_line(exc)}")
            return None
        failures = aggregate.failures
        change = StatusChange(failures=failures[:RunStatus.MAX_LISTED_FAILURES], missing=aggregate.missing())
        if results is None:
            target = RunState.FAILED
            change = _with_message(change, f"{len(failures)} of {len(plan.chunks)} chunk(s) or file(s) failed; "
                                   "no results written (--allow-partial writes PARTIAL results)")
        elif results.partial:
            target = RunState.PARTIAL
            change = _with_message(change, f"PARTIAL: {len(failures)} of {len(plan.chunks)} chunk(s) or "
                                   "file(s) failed")
        else:
            target = RunState.SUCCEEDED
        self._move(run_id, target, {RunState.FINALIZING}, change)
        if target is RunState.SUCCEEDED and not request.keep_records:
            self.store.release_bulk(run_id)
        return self.store.status(run_id)

    # --- ending otherwise --------------------------------------------------------------------

    def fail(self, run_id: str, reason: str) -> None:
        """End an active run as ``failed`` with a one-line reason."""
        self._move(run_id, RunState.FAILED, ACTIVE_STATES, StatusChange(message=reason))

    def cancel(self, run_id: str, reason: str = "cancelled") -> bool:
        """End an active run as ``cancelled``; its queued chunks are skipped when delivered."""
        return self._move(run_id, RunState.CANCELLED, ACTIVE_STATES, StatusChange(message=reason)) is not None

    # --- resuming ----------------------------------------------------------------------------

    def restore(self, run_dir: Path) -> bool:
        """Rebuild a run's records from the copies in its folder if the store lost them; True if it did."""
        run_id = run_dir.name
        try:
            self.store.status(run_id)
            return False
        except AtlaspipeError:
            pass
        request_path = run_dir / REQUEST_COPY
        if not request_path.exists():
            raise AtlaspipeError(f"unknown run id '{run_id}': no record of it and no {request_path}")
        request = RunRequest.read(request_path)
        plan_path = run_dir / PLAN_COPY
        plan = RunPlan.read(plan_path) if plan_path.exists() else None
        status = RunStatus(run_id=run_id, state=RunState.FAILED, executor=self.executor, started=request.created,
                           updated=now_text(), run_dir=str(request.run_dir),
                           message="records rebuilt from the run folder")
        self.store.create(request, status)
        if plan is not None:
            self.store.save_plan(plan)
        log.info("run %s: records rebuilt from %s", run_id, run_dir)
        return True

    def resume(self, run_id: str) -> list[Chunk] | None:
        """Start a new generation of a run that did not succeed: the chunks to launch again (maybe
        none, then the caller completes the run), or None if the run must be planned again."""
        status = self.store.status(run_id)
        if status.state is RunState.SUCCEEDED:
            return []
        if status.state is RunState.CANCELLED:
            raise AtlaspipeError(f"run {run_id} was cancelled; submit it again instead")
        plan = self.store.plan(run_id)
        if plan is None:
            self.store.next_generation(run_id)
            self._move(run_id, RunState.SUBMITTED, {RunState.SUBMITTED, RunState.PLANNING, RunState.FAILED},
                       StatusChange(message="resumed: planning again"))
            return None
        self.store.next_generation(run_id)
        missing = set(self.store.missing_chunk_ids(run_id))
        chunks = [c for c in plan.chunks if c.chunk_id in missing]
        allowed = {RunState.RUNNING, RunState.AGGREGATING, RunState.FINALIZING, RunState.FAILED, RunState.PARTIAL}
        self._move(run_id, RunState.RUNNING, allowed, StatusChange(
            message=f"resumed: {len(chunks)} chunk(s) to run", failures=(), missing={}))
        return chunks

    # --- housekeeping ------------------------------------------------------------------------

    def clean(self, older_than: timedelta, limit: int = 100_000) -> list[str]:
        """Remove the records and run folders of runs that ended more than ``older_than`` ago."""
        cutoff = datetime.now(UTC) - older_than
        removed = []
        for run_id in self.store.run_ids(limit):
            try:
                status = self.store.status(run_id)
            except AtlaspipeError:
                continue
            if not status.terminal or datetime.fromisoformat(status.updated) > cutoff:
                continue
            if status.run_dir:
                _remove_run_folder(Path(status.run_dir))
            self.store.forget(run_id)
            removed.append(run_id)
        return removed

    # --- status.json -------------------------------------------------------------------------

    def publish_status(self, run_id: str) -> RunStatus | None:
        """Write the run's live status to its folder, where the web report reads it, and while
        chunks are being merged the histogram so far (``live.json``)."""
        try:
            status = self.store.status(run_id)
        except AtlaspipeError:
            return None
        if status.run_dir:
            self._copy(Path(status.run_dir), STATUS_FILE, status.to_json(indent=1), even_when_full=True)
            if status.state in LIVE_STATES:
                self._publish_live(status, Path(status.run_dir))
        return status

    def _publish_live(self, status: RunStatus, run_dir: Path) -> None:
        """``live.json`` from the store's running sums: its cost does not grow with the chunks. Only
        a picture of progress, so one that cannot be made is logged, never the run's failure."""
        from atlaspipe.results.live import live_histogram

        try:
            plan = self.store.plan(status.run_id, with_chunks=False)
            if plan is None:
                return
            sums = self.store.live_sums(status.run_id)
            eta = sums.eta_seconds(status.chunks_total - status.chunks_done) if status.state is RunState.RUNNING \
                else None
            live = live_histogram(plan, sums.bins, status, eta, now_text())
        except AtlaspipeError as exc:
            log.info("run %s: no live histogram: %s", status.run_id, one_line(exc))
            return
        self._copy(run_dir, LIVE_FILE, live.to_json())

    def note_stalled(self, run_dir: Path, reason: str) -> None:
        """Say in ``status.json`` why a run makes no progress while its records cannot be reached."""
        path = run_dir / STATUS_FILE
        try:
            status = RunStatus.read(path)
        except AtlaspipeError:
            return
        if status.terminal:
            return
        stalled = status.model_copy(update={"message": f"stalled: {reason}", "updated": now_text()})
        self._copy(run_dir, STATUS_FILE, stalled.to_json(indent=1), even_when_full=True)

    # --- internals ---------------------------------------------------------------------------

    def _plan(self, run_id: str) -> RunPlan:
        plan = self.store.plan(run_id)
        if plan is None:
            raise AtlaspipeError(f"run {run_id} has no plan (its records expired or were lost)")
        return plan

    def _move(self, run_id: str, target: RunState, allowed: Collection[RunState],
              change: StatusChange = StatusChange()) -> RunState | None:
        # Re-entering the current state is allowed where the caller asks for it: a redelivered
        # step whose worker died midway carries on under the same claim.
        permitted = {state for state in allowed if state is target or target in TRANSITIONS[state]}
        previous = self.store.transition(run_id, target, permitted, change)
        if previous is None:
            return None
        if previous is not target:
            log.info("run %s: %s → %s%s", run_id, previous, target, f" ({change.message})" if change.message else "")
        self.publish_status(run_id)
        return previous

    @staticmethod
    def _copy(run_dir: Path, name: str, text: str, even_when_full: bool = False) -> None:
        """Keep a document in the run folder; a folder this process cannot write is not an error here
        (in a deployment only some workers may mount it), so it is logged and skipped."""
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            if even_when_full:
                files.write_text_even_when_full(run_dir / name, text + "\n")
            else:
                files.write_text(run_dir / name, text + "\n")
        except OSError as exc:
            log.debug("cannot write %s in %s: %s", name, run_dir, exc)


def _log_failure(run_id: str, step: str, exc: BaseException) -> None:
    """An input or disk problem is the run's reason, logged in a line; anything else is a bug, logged
    with its traceback for whoever reads the worker's log."""
    if isinstance(exc, AtlaspipeError | OSError):
        log.warning("run %s: %s failed: %s", run_id, step, one_line(exc))
    else:
        log.error("run %s: %s failed", run_id, step, exc_info=exc)


def _with_message(change: StatusChange, message: str) -> StatusChange:
    return StatusChange(message=message, chunks_total=change.chunks_total, events_total=change.events_total,
                        notes=change.notes, failures=change.failures, missing=change.missing)


def _remove_run_folder(run_dir: Path) -> None:
    """Remove a run folder: only its own files and subfolders, never through a symbolic link."""
    import shutil

    if run_dir.is_symlink() or not (run_dir / STATUS_FILE).exists():
        return
    shutil.rmtree(run_dir, ignore_errors=True)


def worker_name() -> str:
    """This process as a worker name in results and logs."""
    import os

    return f"{socket.gethostname()}:{os.getpid()}"
