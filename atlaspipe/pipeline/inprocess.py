"""The in-process executor: a run's whole lifecycle in this process, no broker, chunks one after another."""

from __future__ import annotations

import logging
from collections.abc import Callable

from atlaspipe.errors import AtlaspipeError
from atlaspipe.model import ChunkResult, RunPlan, RunRequest, RunStatus
from atlaspipe.pipeline.lifecycle import Lifecycle, Stages, one_line, worker_name
from atlaspipe.pipeline.memory import MemoryStore

log = logging.getLogger(__name__)

ProgressCallback = Callable[[RunStatus], None]


def execute_plan(plan: RunPlan, on_result: Callable[[ChunkResult], None] | None = None) -> dict[int, ChunkResult]:
    """Process every chunk of ``plan`` in this process, in chunk-id order."""
    from atlaspipe.io.reading import use_fast_zlib
    from atlaspipe.pipeline.processing import process_chunk

    use_fast_zlib()
    worker = worker_name()
    results: dict[int, ChunkResult] = {}
    for chunk in plan.chunks:
        result = process_chunk(chunk, plan.config, worker)
        results[chunk.chunk_id] = result
        if on_result is not None:
            on_result(result)
    return results


class InProcessExecutor:
    """Runs a request through the same ``Lifecycle`` as the Celery workers, over a ``MemoryStore``.

    ``on_progress`` receives the live status after every chunk and at the end; ``status.json`` in
    the run folder follows the same states, throttled.
    """

    name = "in-process"

    def __init__(self, on_progress: ProgressCallback | None = None, stages: Stages | None = None) -> None:
        self.on_progress = on_progress
        self.stages = stages

    def run(self, request: RunRequest) -> RunStatus:
        store = MemoryStore()
        lifecycle = Lifecycle(store, "in-process", self.stages)
        run_id = request.run_id
        lifecycle.submit(request)
        try:
            plan = lifecycle.plan(run_id, owner="in-process")
            if plan is not None:
                self._execute(lifecycle, store, plan)
            elif isinstance(lifecycle.planning_error, AtlaspipeError):
                # A bad option or input is the user's to fix: reported as raised, with its exit code.
                raise lifecycle.planning_error
        except KeyboardInterrupt:
            # The run's folder must not go on saying "running" after Ctrl-C.
            lifecycle.cancel(run_id, "interrupted")
            raise
        except AtlaspipeError:
            raise
        except Exception as exc:
            lifecycle.fail(run_id, f"unexpected error: {one_line(exc)}")
            raise
        return self._report(lifecycle.publish_status(run_id) or store.status(run_id))

    def _execute(self, lifecycle: Lifecycle, store: MemoryStore, plan: RunPlan) -> None:
        from atlaspipe.pipeline.warmup import preload_in_background

        run_id = plan.run_id
        log.info("run %s: %d chunk(s), one after another in this process", run_id, len(plan.chunks))
        # The fit's and the figures' libraries load beside the chunks, not after the last one.
        preload_in_background(["plot"])

        def stored(result: ChunkResult) -> None:
            lifecycle.chunk_done(run_id, result)
            if self.on_progress is not None:
                self.on_progress(store.status(run_id))

        execute_plan(plan, stored)
        owner = lifecycle.completion_owner(run_id)
        if owner is None:
            return
        if lifecycle.aggregate(run_id, owner) is not None:
            lifecycle.finalize(run_id, owner, [worker_name()])

    def _report(self, status: RunStatus) -> RunStatus:
        if self.on_progress is not None:
            self.on_progress(status)
        return status
