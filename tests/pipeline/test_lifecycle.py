"""The run state machine, in milliseconds: the same lifecycle over both stores (memory, and the Redis
records on fakeredis, whose Lua scripts are the production ones), with stand-in stages."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import pytest

from atlaspipe.config import analysis_config
from atlaspipe.errors import AtlaspipeError, InputError
from atlaspipe.model import (
    TRANSITIONS,
    Aggregate,
    Chunk,
    ChunkResult,
    PlannedFile,
    RunPlan,
    RunRequest,
    RunResults,
    RunState,
    RunStatus,
    SampleAggregate,
)
from atlaspipe.pipeline.celery.records import RunRecords
from atlaspipe.pipeline.lifecycle import ChunkGate, Lifecycle, RunStore, StatusChange
from atlaspipe.pipeline.memory import MemoryStore

WORKER = "test-worker"


class FakeStages:
    """Stages that plan ``chunks`` chunks of one made-up file and write one output file."""

    def __init__(self, chunks: int = 3) -> None:
        self.chunks = chunks
        self.plan_error: Exception | None = None
        self.finalize_error: Exception | None = None
        self.finalized = 0

    def plan(self, request: RunRequest) -> RunPlan:
        if self.plan_error is not None:
            raise self.plan_error
        chunks = tuple(Chunk(chunk_id=i, release="2020", sample="data_A", source="/data/a.root", tree="mini",
                             entry_start=10 * i, entry_stop=10 * i + 10, file_entries=10 * self.chunks)
                       for i in range(self.chunks))
        files = (PlannedFile(release="2020", sample="data_A", source="/data/a.root", tree="mini",
                             entries=10 * self.chunks),)
        return RunPlan(run_id=request.run_id, config=analysis_config(), files=files, chunks=chunks,
                       created="2026-12-01T00:00:00+00:00")

    def aggregate(self, plan: RunPlan, results: dict[int, ChunkResult]) -> Aggregate:
        from atlaspipe.pipeline.processing import aggregate

        return aggregate(plan, results)

    def finalize(self, aggregate: Aggregate, plan: RunPlan, request: RunRequest, status: RunStatus,  # noqa: ARG002
                 workers: tuple[str, ...]) -> RunResults | None:  # noqa: ARG002 - the Stages interface
        from atlaspipe.io.files import replacing

        with replacing(request.run_dir / "out.txt") as tmp:
            tmp.write_text("partial output")
            if self.finalize_error is not None:
                raise self.finalize_error
        self.finalized += 1
        from atlaspipe.results.document import build_results

        results = build_results(aggregate, plan)
        return None if results.partial and not request.allow_partial else results


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[RunStore]:
    if request.param == "memory":
        yield MemoryStore(status_interval=0.0)
    else:
        yield RunRecords("redis://fake", status_interval=0.001, client=fakeredis.FakeRedis())


def make_request(tmp_path: Path, run_id: str = "20261201-000000-abcdef", allow_partial: bool = False) -> RunRequest:
    return RunRequest(run_id=run_id, output_dir=str(tmp_path), created="2026-12-01T00:00:00+00:00",
                      allow_partial=allow_partial)


def histogram_result(chunk: Chunk, events: int = 10) -> ChunkResult:
    from atlaspipe.model import Counts

    zeros = tuple(tuple([0.0] * 36) for _ in range(3))
    counts = tuple(tuple([1.0] + [0.0] * 35) for _ in range(3))
    return ChunkResult(chunk_id=chunk.chunk_id, sample=chunk.sample, worker=WORKER, events_read=events,
                       events_selected=1, histograms={"m4l": Counts(sumw=counts, sumw2=zeros)})


def planned(store: RunStore, tmp_path: Path, stages: FakeStages, **kwargs: bool) -> tuple[Lifecycle, RunPlan]:
    lifecycle = Lifecycle(store, "celery", stages)
    request = make_request(tmp_path, **kwargs)
    lifecycle.submit(request)
    plan = lifecycle.plan(request.run_id, owner="planner")
    assert plan is not None
    return lifecycle, plan


def run_all(lifecycle: Lifecycle, plan: RunPlan, generation: int = 0) -> bool:
    complete = False
    for chunk in plan.chunks:
        if lifecycle.start_chunk(plan.run_id, chunk, generation, WORKER).gate is ChunkGate.RUN:
            complete = lifecycle.chunk_done(plan.run_id, histogram_result(chunk)) or complete
    return complete


def finish(lifecycle: Lifecycle, run_id: str) -> RunStatus | None:
    owner = lifecycle.completion_owner(run_id)
    assert owner is not None
    assert lifecycle.aggregate(run_id, owner) is not None
    return lifecycle.finalize(run_id, "finalizer", [WORKER])


def status_file(tmp_path: Path, run_id: str = "20261201-000000-abcdef") -> RunStatus:
    return RunStatus.read(tmp_path / run_id / "status.json")


def test_a_run_goes_through_every_state_and_its_folder_follows(store: RunStore, tmp_path: Path) -> None:
    stages = FakeStages()
    lifecycle = Lifecycle(store, "celery", stages)
    request = make_request(tmp_path)
    assert lifecycle.submit(request).state is RunState.SUBMITTED
    assert status_file(tmp_path).state is RunState.SUBMITTED
    assert json.loads((request.run_dir / "request.json").read_text())["run_id"] == request.run_id
    plan = lifecycle.plan(request.run_id, owner="planner")
    assert plan is not None and status_file(tmp_path).state is RunState.RUNNING
    assert RunPlan.read(request.run_dir / "plan.json") == plan
    assert run_all(lifecycle, plan)
    live = status_file(tmp_path)
    assert (live.chunks_done, live.chunks_total, live.events_read, live.events_total) == (3, 3, 30, 30)
    final = finish(lifecycle, request.run_id)
    assert final is not None and final.state is RunState.SUCCEEDED
    assert status_file(tmp_path).state is RunState.SUCCEEDED and status_file(tmp_path).chunks_done == 3
    assert stages.finalized == 1


def counts_in(cells: dict[tuple[int, int], float]) -> ChunkResult:
    """A chunk of ``data_A`` whose m4l histogram holds ``cells[(channel, flow bin)]``, else nothing."""
    from atlaspipe.model import Counts

    rows = tuple(tuple(cells.get((channel, index), 0.0) for index in range(36)) for channel in range(3))
    return ChunkResult(chunk_id=0, sample="data_A", worker=WORKER, events_read=10, events_selected=1,
                       histograms={"m4l": Counts(sumw=rows, sumw2=rows)})


def test_live_json_sums_the_chunks_stored_so_far(store: RunStore, tmp_path: Path) -> None:
    from atlaspipe.model import LiveHistogram

    lifecycle, plan = planned(store, tmp_path, FakeStages())
    live_path = tmp_path / plan.run_id / "live.json"
    started = LiveHistogram.read(live_path)
    assert (started.data, started.groups, started.chunks_done, started.eta_seconds) == ((0.0,) * 34, (), 0, None)
    assert started.bin_edges[:3] == (80.0, 85.0, 90.0) and started.bin_edges[-1] == 250.0
    # 4e and 4mu events in 80-85 GeV, a 2e2mu one in 100-105 GeV; the flow bins are not drawn.
    first = counts_in({(0, 1): 1.0, (1, 1): 2.0, (2, 5): 1.0, (0, 0): 7.0, (1, 35): 7.0})
    second = counts_in({(2, 1): 1.0, (2, 34): 4.0})
    chunks = plan.chunks
    lifecycle.chunk_done(plan.run_id, first.model_copy(update={"chunk_id": chunks[0].chunk_id}))
    lifecycle.chunk_done(plan.run_id, first.model_copy(update={"chunk_id": chunks[0].chunk_id}))  # redelivered
    lifecycle.chunk_done(plan.run_id, second.model_copy(update={"chunk_id": chunks[1].chunk_id}))
    live = LiveHistogram.read(live_path)
    assert live.data == (4.0, 0.0, 0.0, 0.0, 1.0) + (0.0,) * 28 + (4.0,)
    assert (live.chunks_done, live.chunks_total, live.events_read) == (2, 3, 20)
    assert live.eta_seconds is not None and live.eta_seconds >= 0.0
    # A failed chunk adds nothing; after it, no chunk is left to wait for.
    lifecycle.chunk_done(plan.run_id, ChunkResult.failed(chunks[2], "bad basket", WORKER))
    live = LiveHistogram.read(live_path)
    assert (sum(live.data or ()), live.chunks_done, live.eta_seconds) == (9.0, 3, 0.0)
    # A resume runs the failed chunk again: the sums so far stay, the landing clock starts again.
    assert lifecycle.resume(plan.run_id) == [chunks[2]]
    live = LiveHistogram.read(live_path)
    assert (sum(live.data or ()), live.chunks_done, live.eta_seconds, live.generation) == (9.0, 2, None, 1)


def test_a_second_submission_of_the_same_run_changes_nothing(store: RunStore, tmp_path: Path) -> None:
    lifecycle, _ = planned(store, tmp_path, FakeStages())
    assert lifecycle.submit(make_request(tmp_path)).state is RunState.RUNNING


def test_each_chunk_counts_once_and_completion_is_claimed_once(store: RunStore, tmp_path: Path) -> None:
    lifecycle, plan = planned(store, tmp_path, FakeStages())
    assert run_all(lifecycle, plan)
    # A redelivered chunk finds its result and is not counted again.
    assert lifecycle.start_chunk(plan.run_id, plan.chunks[0], 0, WORKER).gate is ChunkGate.DUPLICATE
    assert not lifecycle.chunk_done(plan.run_id, histogram_result(plan.chunks[0], events=999))
    assert store.status(plan.run_id).events_read == 30
    owners = [lifecycle.completion_owner(plan.run_id) for _ in range(3)]
    assert owners[0] is not None and owners[1:] == [None, None]
    # The chord callback (another owner) cannot aggregate; the claim holder can, twice (redelivery).
    assert lifecycle.aggregate(plan.run_id, "chord-callback") is None
    assert lifecycle.aggregate(plan.run_id, owners[0]) is not None
    assert lifecycle.aggregate(plan.run_id, owners[0]) is not None
    assert lifecycle.finalize(plan.run_id, "finalize-1") is not None
    assert lifecycle.finalize(plan.run_id, "finalize-2") is None


def test_an_incomplete_run_is_not_aggregated(store: RunStore, tmp_path: Path) -> None:
    lifecycle, plan = planned(store, tmp_path, FakeStages())
    lifecycle.start_chunk(plan.run_id, plan.chunks[0], 0, WORKER)
    lifecycle.chunk_done(plan.run_id, histogram_result(plan.chunks[0]))
    assert lifecycle.completion_owner(plan.run_id) is None
    assert lifecycle.aggregate(plan.run_id, "anyone") is None
    assert store.status(plan.run_id).state is RunState.RUNNING


def test_a_chunk_past_its_delivery_limit_is_failed_with_the_reason(store: RunStore, tmp_path: Path) -> None:
    lifecycle, plan = planned(store, tmp_path, FakeStages(chunks=1))
    chunk = plan.chunks[0]
    gates = [lifecycle.start_chunk(plan.run_id, chunk, 0, WORKER).gate for _ in range(4)]
    assert gates == [ChunkGate.RUN] * 3 + [ChunkGate.OVER_LIMIT]
    failed = store.chunk_results(plan.run_id)[0]
    assert not failed.ok and "delivered 3 times without finishing" in (failed.error or "")
    final = finish(lifecycle, plan.run_id)
    assert final is not None and final.state is RunState.FAILED
    assert "1 of 1 chunk(s) or file(s) failed" in final.message
    assert final.failures[0].describe().startswith("chunk 0 /data/a.root [0, 10): delivered 3 times")


def test_deliveries_are_counted_per_generation(store: RunStore, tmp_path: Path) -> None:
    lifecycle, plan = planned(store, tmp_path, FakeStages(chunks=1))
    for _ in range(3):
        lifecycle.start_chunk(plan.run_id, plan.chunks[0], 0, WORKER)
    lifecycle.fail(plan.run_id, "stopped by the test")
    relaunched = lifecycle.resume(plan.run_id)
    assert relaunched == [plan.chunks[0]]
    assert lifecycle.start_chunk(plan.run_id, plan.chunks[0], 1, WORKER).gate is ChunkGate.RUN


def test_a_failure_in_planning_ends_the_run_failed_with_one_line(store: RunStore, tmp_path: Path) -> None:
    stages = FakeStages()
    stages.plan_error = InputError("/etc/passwd", "path is outside the allowed input folders")
    lifecycle = Lifecycle(store, "celery", stages)
    lifecycle.submit(make_request(tmp_path))
    assert lifecycle.plan("20261201-000000-abcdef", owner="planner") is None
    status = status_file(tmp_path)
    assert status.state is RunState.FAILED
    assert status.message == "planning failed: /etc/passwd: path is outside the allowed input folders"


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device", "/out/m4l.pdf"),
                                   KeyError("a bug")])
def test_a_failure_in_finalize_ends_the_run_failed_and_leaves_no_debris(store: RunStore, tmp_path: Path,
                                                                        error: Exception) -> None:
    stages = FakeStages()
    lifecycle, plan = planned(store, tmp_path, stages)
    run_all(lifecycle, plan)
    stages.finalize_error = error
    assert finish(lifecycle, plan.run_id) is None
    status = status_file(tmp_path)
    assert status.state is RunState.FAILED
    expected = ("finalize failed: No space left on device: /out/m4l.pdf" if isinstance(error, OSError)
                else "finalize failed: KeyError: 'a bug'")
    assert status.message == expected
    run_dir = tmp_path / plan.run_id
    assert sorted(p.name for p in run_dir.iterdir()) == ["live.json", "plan.json", "request.json", "status.json"]
    # Once the cause is gone, a resume finishes the run from the stored chunk results.
    stages.finalize_error = None
    assert lifecycle.resume(plan.run_id) == []
    final = finish(lifecycle, plan.run_id)
    assert final is not None and final.state is RunState.SUCCEEDED and final.generation == 1


def test_failed_chunks_end_the_run_failed_or_partial(store: RunStore, tmp_path: Path) -> None:
    for allow_partial, expected in ((False, RunState.FAILED), (True, RunState.PARTIAL)):
        lifecycle = Lifecycle(store, "celery", FakeStages(chunks=2))
        request = make_request(tmp_path / str(allow_partial), allow_partial=allow_partial)
        lifecycle.submit(request)
        plan = lifecycle.plan(request.run_id, "planner")
        assert plan is not None
        lifecycle.start_chunk(plan.run_id, plan.chunks[0], 0, WORKER)
        lifecycle.chunk_done(plan.run_id, ChunkResult.failed(plan.chunks[0], "branch 'lep_pt': NaN", WORKER))
        lifecycle.start_chunk(plan.run_id, plan.chunks[1], 0, WORKER)
        lifecycle.chunk_done(plan.run_id, histogram_result(plan.chunks[1]))
        final = finish(lifecycle, plan.run_id)
        assert final is not None and final.state is expected, final
        assert [f.chunk_id for f in final.failures] == [0]
        assert final.missing["data_A"].events_lost == 10
        store.forget(plan.run_id)


def test_cancel_stops_queued_chunks_and_is_final(store: RunStore, tmp_path: Path) -> None:
    lifecycle, plan = planned(store, tmp_path, FakeStages())
    assert lifecycle.cancel(plan.run_id, "cancelled by alice")
    assert lifecycle.start_chunk(plan.run_id, plan.chunks[0], 0, WORKER).gate is ChunkGate.STOPPED
    assert not lifecycle.cancel(plan.run_id)
    lifecycle.fail(plan.run_id, "too late")
    status = status_file(tmp_path)
    assert (status.state, status.message) == (RunState.CANCELLED, "cancelled by alice")
    with pytest.raises(AtlaspipeError, match="was cancelled"):
        lifecycle.resume(plan.run_id)


def test_terminal_states_refuse_every_change_but_resume(store: RunStore, tmp_path: Path) -> None:
    lifecycle, plan = planned(store, tmp_path, FakeStages())
    run_all(lifecycle, plan)
    finish(lifecycle, plan.run_id)
    assert not lifecycle.cancel(plan.run_id)
    lifecycle.fail(plan.run_id, "nope")
    assert store.status(plan.run_id).state is RunState.SUCCEEDED
    assert lifecycle.resume(plan.run_id) == []


def test_a_redelivered_step_carries_on_under_the_same_claim(store: RunStore, tmp_path: Path) -> None:
    lifecycle = Lifecycle(store, "celery", FakeStages())
    request = make_request(tmp_path)
    lifecycle.submit(request)
    store.claim(request.run_id, "plan", 0, "planner")
    store.transition(request.run_id, RunState.PLANNING, {RunState.SUBMITTED}, StatusChange())
    # The first planner died after taking its claim; its message comes back with the same id.
    assert lifecycle.plan(request.run_id, owner="someone-else") is None
    assert lifecycle.plan(request.run_id, owner="planner") is not None


def test_resume_of_a_run_never_planned_plans_it_again(store: RunStore, tmp_path: Path) -> None:
    stages = FakeStages()
    stages.plan_error = OSError(errno.EACCES, "Permission denied", "/data")
    lifecycle = Lifecycle(store, "celery", stages)
    lifecycle.submit(make_request(tmp_path))
    lifecycle.plan("20261201-000000-abcdef", "planner")
    assert lifecycle.resume("20261201-000000-abcdef") is None
    assert store.status("20261201-000000-abcdef").state is RunState.SUBMITTED
    stages.plan_error = None
    assert lifecycle.plan("20261201-000000-abcdef", "planner") is not None


def test_records_lost_are_rebuilt_from_the_run_folder(store: RunStore, tmp_path: Path) -> None:
    lifecycle, plan = planned(store, tmp_path, FakeStages())
    store.forget(plan.run_id)
    assert lifecycle.restore(tmp_path / plan.run_id)
    chunks = lifecycle.resume(plan.run_id)
    assert chunks == list(plan.chunks)
    assert run_all(lifecycle, plan, generation=store.generation(plan.run_id))
    final = finish(lifecycle, plan.run_id)
    assert final is not None and final.state is RunState.SUCCEEDED


def test_clean_removes_runs_that_ended_long_ago(store: RunStore, tmp_path: Path) -> None:
    lifecycle, plan = planned(store, tmp_path, FakeStages())
    run_all(lifecycle, plan)
    finish(lifecycle, plan.run_id)
    active = Lifecycle(store, "celery", FakeStages())
    other = make_request(tmp_path, run_id="20261201-000001-aaaaaa")
    active.submit(other)
    assert lifecycle.clean(timedelta(days=1)) == []
    assert lifecycle.clean(timedelta(seconds=-5)) == [plan.run_id]
    assert not (tmp_path / plan.run_id).exists() and (tmp_path / other.run_id).exists()
    with pytest.raises(AtlaspipeError):
        store.status(plan.run_id)


def test_every_transition_of_the_table_is_allowed_and_no_other(tmp_path: Path) -> None:
    for source in RunState:
        for target in RunState:
            store = MemoryStore()
            lifecycle = Lifecycle(store, "in-process", FakeStages())
            lifecycle.submit(make_request(tmp_path))
            store._runs["20261201-000000-abcdef"].status = store.status("20261201-000000-abcdef").model_copy(
                update={"state": source})
            moved = lifecycle._move("20261201-000000-abcdef", target, set(RunState))
            assert (moved is not None) == (target in TRANSITIONS[source] or target is source), (source, target)


def test_a_stalled_note_reaches_the_status_file_without_the_records(tmp_path: Path) -> None:
    lifecycle, plan = planned(MemoryStore(), tmp_path, FakeStages())
    since = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")
    lifecycle.note_stalled(tmp_path / plan.run_id, f"result backend unreachable since {since} UTC")
    status = status_file(tmp_path)
    assert status.state is RunState.RUNNING
    assert status.message == "stalled: result backend unreachable since 2026-12-01 12:00:00 UTC"


def test_in_place_status_write_when_the_disk_is_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atlaspipe.io import files

    target = tmp_path / "status.json"
    target.write_text("x" * 100)

    def full(path: Path, _text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(files, "write_text", full)
    files.write_text_even_when_full(target, '{"state": "failed"}')
    assert target.read_text() == '{"state": "failed"}'


def test_aggregate_document_round_trips(tmp_path: Path) -> None:
    lifecycle, plan = planned(MemoryStore(), tmp_path, FakeStages())
    run_all(lifecycle, plan)
    owner = lifecycle.completion_owner(plan.run_id)
    assert owner is not None
    aggregate = lifecycle.aggregate(plan.run_id, owner)
    assert aggregate is not None and Aggregate.from_json(aggregate.to_json()) == aggregate
    assert isinstance(aggregate.samples["data_A"], SampleAggregate)
