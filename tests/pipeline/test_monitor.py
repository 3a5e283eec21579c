"""atlaspipe exporter's run counts: when a running run counts as stalled (in-process, fakeredis)."""

from __future__ import annotations

import time
from pathlib import Path

import fakeredis
from celery import Celery

from atlaspipe.model import RunState
from atlaspipe.pipeline.celery.monitor import ClusterCollector, WorkerWatch
from atlaspipe.pipeline.celery.records import RunRecords
from tests.pipeline.test_lifecycle import WORKER, FakeStages, finish, histogram_result, planned, run_all


def collector() -> ClusterCollector:
    records = RunRecords("redis://fake", status_interval=0.001, client=fakeredis.FakeRedis())
    return ClusterCollector(Celery("monitor-test"), records, ("load", "process"), stall_seconds=60)


def test_a_running_run_is_stalled_only_when_nothing_can_move_it(tmp_path: Path) -> None:
    monitor = collector()
    lifecycle, plan = planned(monitor.records, tmp_path, FakeStages())
    later = time.time() + 120
    counts = monitor.run_counts({"process": 0}, later)
    assert counts.by_state[RunState.RUNNING] == 1 and counts.stalled == 1
    # Chunks still queued, or no word from the broker: not a stall.
    assert monitor.run_counts({"process": 3}, later).stalled == 0
    assert monitor.run_counts({}, later).stalled == 0
    # Recent progress: not yet.
    assert monitor.run_counts({"process": 0}, time.time()).stalled == 0
    # A chunk on a worker: not a stall, however long it takes.
    first = plan.chunks[0]
    lifecycle.start_chunk(plan.run_id, first, 0, WORKER)
    assert monitor.run_counts({"process": 0}, later).stalled == 0
    lifecycle.chunk_done(plan.run_id, histogram_result(first))
    assert monitor.run_counts({"process": 0}, time.time()).stalled == 0
    assert monitor.run_counts({"process": 0}, time.time() + 120).stalled == 1


def test_finished_runs_count_per_state_and_never_as_stalled(tmp_path: Path) -> None:
    monitor = collector()
    lifecycle, plan = planned(monitor.records, tmp_path, FakeStages())
    assert run_all(lifecycle, plan)
    finish(lifecycle, plan.run_id)
    counts = monitor.run_counts({"process": 0}, time.time() + 3600)
    assert counts.by_state[RunState.SUCCEEDED] == 1 and counts.stalled == 0
    assert sum(counts.by_state.values()) == 1 and set(counts.by_state) == set(RunState)


def test_worker_liveness_follows_heartbeats_goodbyes_and_forgets_the_silent() -> None:
    watch = WorkerWatch(Celery("monitor-test"), forget_seconds=600)
    now = time.time()
    # The event handlers, fed directly (the integration test drives them with real workers).
    watch._alive({"hostname": "process@a", "freq": 2.0})
    watch._alive({"hostname": "load@a", "freq": 2.0})
    assert watch.up(now) == {"load@a": True, "process@a": True}
    # Heartbeats late: down, until forgotten; a goodbye removes the worker at once.
    watch._gone({"hostname": "load@a"})
    assert watch.up(now + 30) == {"process@a": False}
    assert watch.up(now + 601) == {}
