"""``atlaspipe status`` and ``list`` read the result backend only: they answer with the broker's port
closed. The run they read is driven through the production lifecycle on the real Redis (test DB 12),
and its final counts are what ``status`` and the progress line show (it used to end at 0/12)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from atlaspipe.cli.progress import Progress
from atlaspipe.config import analysis_config
from atlaspipe.model import (
    Aggregate,
    Chunk,
    ChunkResult,
    Counts,
    PlannedFile,
    RunPlan,
    RunRequest,
    RunResults,
    RunState,
    RunStatus,
)
from atlaspipe.pipeline.celery.records import RunRecords
from atlaspipe.pipeline.lifecycle import ChunkGate, Lifecycle

BACKEND = os.environ.get("ATLASPIPE_TEST_RESULT_BACKEND_CLI", "redis://127.0.0.1:6379/12")
CHUNKS = 12


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TwelveChunks:
    """Stages planning 12 chunks of one made-up data file; finalize writes the results document."""

    def plan(self, request: RunRequest) -> RunPlan:
        chunks = tuple(Chunk(chunk_id=i, release="2020", sample="data_A", source="/data/a.root", tree="mini",
                             entry_start=10 * i, entry_stop=10 * i + 10, file_entries=10 * CHUNKS)
                       for i in range(CHUNKS))
        files = (PlannedFile(release="2020", sample="data_A", source="/data/a.root", tree="mini",
                             entries=10 * CHUNKS),)
        return RunPlan(run_id=request.run_id, config=analysis_config(), files=files, chunks=chunks,
                       created="2026-12-01T00:00:00+00:00")

    def aggregate(self, plan: RunPlan, results: dict[int, ChunkResult]) -> Aggregate:
        from atlaspipe.pipeline.processing import aggregate

        return aggregate(plan, results)

    def finalize(self, aggregate: Aggregate, plan: RunPlan, request: RunRequest, status: RunStatus,  # noqa: ARG002
                 workers: tuple[str, ...]) -> RunResults | None:  # noqa: ARG002 - the Stages interface
        from atlaspipe.results.document import build_results

        return build_results(aggregate, plan)


@pytest.fixture
def finished_run(tmp_path: Path) -> Iterator[tuple[str, list[RunStatus]]]:
    """A run of 12 chunks taken to success by the lifecycle on Redis; the statuses seen on the way."""
    try:
        redis.Redis.from_url(BACKEND, socket_connect_timeout=2).ping()
    except redis.RedisError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis at {BACKEND} is not reachable")
        pytest.skip(f"Redis at {BACKEND} is not reachable")
    store = RunRecords(BACKEND, status_interval=0.0)
    run_id = f"20261201-000000-{uuid.uuid4().hex[:6]}"
    lifecycle = Lifecycle(store, "celery", TwelveChunks())
    seen: list[RunStatus] = []
    try:
        request = RunRequest(run_id=run_id, output_dir=str(tmp_path), created="2026-12-01T00:00:00+00:00")
        lifecycle.submit(request)
        plan = lifecycle.plan(run_id, owner="planner")
        assert plan is not None
        zeros = tuple(tuple([0.0] * 36) for _ in range(3))
        ones = tuple(tuple([1.0] + [0.0] * 35) for _ in range(3))
        for chunk in plan.chunks:
            assert lifecycle.start_chunk(run_id, chunk, 0, "w").gate is ChunkGate.RUN
            lifecycle.chunk_done(run_id, ChunkResult(chunk_id=chunk.chunk_id, sample=chunk.sample, worker="w",
                                                     events_read=10, events_selected=1,
                                                     histograms={"m4l": Counts(sumw=ones, sumw2=zeros)}))
            seen.append(store.status(run_id))
        owner = lifecycle.completion_owner(run_id)
        assert owner is not None and lifecycle.aggregate(run_id, owner) is not None
        final = lifecycle.finalize(run_id, "finalizer")
        assert final is not None and final.state is RunState.SUCCEEDED
        seen.append(store.status(run_id))
        yield run_id, seen
    finally:
        store.forget(run_id)


def atlaspipe(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "ATLASPIPE_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{closed_port()}//",
           "ATLASPIPE_RESULT_BACKEND": BACKEND}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=60, check=False,
                          env=env)
    return done, time.monotonic() - started


def test_status_and_list_need_only_the_result_backend(finished_run: tuple[str, list[RunStatus]]) -> None:
    run_id, _ = finished_run
    status, took = atlaspipe("atlaspipe.cli.main", "status", run_id)
    assert status.returncode == 0, status.stderr
    assert f"run {run_id}: succeeded, {CHUNKS}/{CHUNKS} chunks done, 0 failed, 120/120 events read" in status.stdout
    assert took < 20, "status must not wait for a broker"
    listed, _ = atlaspipe("atlaspipe.cli.main", "list", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(run_id))
    assert row.split()[1:3] == ["succeeded", f"{CHUNKS}/{CHUNKS}"]
    alias, _ = atlaspipe("atlaspipe.cli.submit", "status", run_id)
    assert alias.returncode == 0 and alias.stdout == status.stdout, alias.stderr


def test_commands_that_send_still_name_the_unreachable_broker(finished_run: tuple[str, list[RunStatus]]) -> None:
    run_id, _ = finished_run
    done, took = atlaspipe("atlaspipe.cli.main", "clean", "--older-than", "30")
    assert done.returncode != 0 and "broker" in done.stderr and "unreachable" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and took < 20
    resumed, _ = atlaspipe("atlaspipe.cli.main", "resume", run_id)
    assert resumed.returncode == 0 and "already succeeded" in resumed.stderr, resumed.stderr


def test_the_progress_line_ends_with_the_final_counts(finished_run: tuple[str, list[RunStatus]]) -> None:
    _, seen = finished_run
    stream = io.StringIO()
    with Progress(stream=stream, interval=3600.0) as progress:
        for status in seen:
            progress.update(status)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines  # the first status, then the final one: nothing in between within the interval
    assert lines[-1].startswith(f"run {seen[-1].run_id} succeeded: {CHUNKS}/{CHUNKS} chunks, 120/120 events")
