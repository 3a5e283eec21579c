"""The run store of ``atlaspipe run``: the lifecycle's records in this process's memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from atlaspipe.errors import AtlaspipeError
from atlaspipe.model import Aggregate, ChunkResult, RunPlan, RunRequest, RunState, RunStatus
from atlaspipe.pipeline.lifecycle import (
    STATUS_INTERVAL_SECONDS,
    ChunkGate,
    ChunkStart,
    ChunkStored,
    LiveSums,
    StatusChange,
    live_bins,
    now_text,
)


@dataclass
class _Run:
    request: RunRequest
    status: RunStatus
    plan: RunPlan | None = None
    results: dict[int, ChunkResult] = field(default_factory=dict)
    deliveries: dict[tuple[int, int], int] = field(default_factory=dict)
    claims: dict[tuple[str, int], str] = field(default_factory=dict)
    aggregates: dict[int, Aggregate] = field(default_factory=dict)
    generation: int = 0
    status_written: float = 0.0
    live: dict[str, dict[int, float]] = field(default_factory=dict)
    landed: int = 0
    running_since: float | None = None
    last_landed: float | None = None


class MemoryStore:
    """A ``RunStore`` for runs that live and end inside one process; thread-safe."""

    def __init__(self, status_interval: float = STATUS_INTERVAL_SECONDS) -> None:
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self.status_interval = status_interval

    def _run(self, run_id: str) -> _Run:
        try:
            return self._runs[run_id]
        except KeyError:
            raise AtlaspipeError(f"unknown run id '{run_id}'") from None

    def create(self, request: RunRequest, status: RunStatus) -> bool:
        with self._lock:
            if request.run_id in self._runs:
                return False
            self._runs[request.run_id] = _Run(request=request, status=status)
            return True

    def request(self, run_id: str) -> RunRequest:
        return self._run(run_id).request

    def status(self, run_id: str) -> RunStatus:
        with self._lock:
            run = self._run(run_id)
            failed = sum(1 for r in run.results.values() if not r.ok)
            events = sum(r.events_read for r in run.results.values())
            return run.status.model_copy(update={
                "chunks_done": len(run.results), "chunks_failed": failed, "events_read": events,
                "generation": run.generation,
            })

    def transition(self, run_id: str, target: RunState, allowed: Collection[RunState],
                   change: StatusChange) -> RunState | None:
        with self._lock:
            run = self._run(run_id)
            previous = run.status.state
            if previous not in allowed:
                return None
            updates: dict[str, object] = {"state": target, "updated": now_text()}
            updates.update({k: v for k, v in vars(change).items() if v is not None})
            run.status = run.status.model_copy(update=updates)
            if target is RunState.RUNNING:
                run.running_since, run.landed, run.last_landed = time.time(), 0, None
            return previous

    def save_plan(self, plan: RunPlan) -> None:
        with self._lock:
            run = self._run(plan.run_id)
            run.plan = plan
            run.status = run.status.model_copy(update={"chunks_total": len(plan.chunks),
                                                       "events_total": plan.total_entries})

    def plan(self, run_id: str, with_chunks: bool = True) -> RunPlan | None:  # noqa: ARG002 - in memory either way
        return self._run(run_id).plan

    def start_chunk(self, run_id: str, chunk_id: int, generation: int, max_deliveries: int) -> ChunkStart:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.status.state is not RunState.RUNNING:
                return ChunkStart(ChunkGate.STOPPED, 0, None)
            key = (generation, chunk_id)
            deliveries = run.deliveries[key] = run.deliveries.get(key, 0) + 1
            if chunk_id in run.results:
                gate = ChunkGate.DUPLICATE
            elif deliveries > max_deliveries:
                gate = ChunkGate.OVER_LIMIT
            else:
                gate = ChunkGate.RUN
            return ChunkStart(gate, deliveries, run.status.run_dir)

    def store_chunk(self, run_id: str, result: ChunkResult) -> ChunkStored:
        with self._lock:
            run = self._run(run_id)
            counted = result.chunk_id not in run.results
            if counted:
                run.results[result.chunk_id] = result
                sums = run.live.setdefault(result.sample, {})
                for index, value in live_bins(result).items():
                    sums[index] = sums.get(index, 0.0) + value
                run.landed += 1
                run.last_landed = time.time()
            now = time.monotonic()
            due = now - run.status_written >= self.status_interval
            if due:
                run.status_written = now
            complete = len(run.results) >= run.status.chunks_total
            return ChunkStored(counted=counted, complete=complete, status_due=due)

    def finish_chunk(self, run_id: str, chunk_id: int) -> None:
        """Nothing to forget: in one process a chunk is never in flight when this is asked."""

    def chunk_results(self, run_id: str) -> dict[int, ChunkResult]:
        with self._lock:
            return dict(self._run(run_id).results)

    def live_sums(self, run_id: str) -> LiveSums:
        with self._lock:
            run = self._run(run_id)
            return LiveSums(bins={name: dict(sums) for name, sums in run.live.items()}, landed=run.landed,
                            running_since=run.running_since, last_landed=run.last_landed)

    def complete(self, run_id: str) -> bool:
        with self._lock:
            run = self._run(run_id)
            return run.plan is not None and len(run.results) >= len(run.plan.chunks)

    def missing_chunk_ids(self, run_id: str) -> list[int]:
        with self._lock:
            run = self._run(run_id)
            planned = [c.chunk_id for c in run.plan.chunks] if run.plan is not None else []
            return [c for c in planned if c not in run.results]

    def claim(self, run_id: str, step: str, generation: int, owner: str) -> bool:
        with self._lock:
            holder = self._run(run_id).claims.setdefault((step, generation), owner)
            return holder == owner

    def generation(self, run_id: str) -> int:
        return self._run(run_id).generation

    def next_generation(self, run_id: str) -> int:
        with self._lock:
            run = self._run(run_id)
            run.generation += 1
            run.results = {k: r for k, r in run.results.items() if r.ok}
            return run.generation

    def save_aggregate(self, run_id: str, generation: int, aggregate: Aggregate) -> None:
        with self._lock:
            self._run(run_id).aggregates[generation] = aggregate

    def aggregate(self, run_id: str, generation: int) -> Aggregate | None:
        return self._run(run_id).aggregates.get(generation)

    def release_bulk(self, run_id: str) -> None:
        """Kept: the caller may still want the chunk results, and the process ends soon anyway."""

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def run_ids(self, limit: int) -> list[str]:
        return list(self._runs)[-limit:]
