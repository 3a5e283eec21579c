"""Mutated ROOT files through the ``process`` stage: always a clean error naming the file, or the
correct result; never a crash or a hang, in process and on a real worker."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from atlaspipe.config import analysis_config
from atlaspipe.generate.embedded import embedded_sample_dir
from atlaspipe.model import Chunk, ChunkResult, RunPlan, RunRequest, new_run_id
from atlaspipe.pipeline.lifecycle import Lifecycle, now_text
from atlaspipe.pipeline.planning import plan_run, resolve_inputs
from atlaspipe.pipeline.processing import process_chunk
from tests.conftest import BACKEND_URL, WorkerPool
from tests.faultkit import FAULT_BROKER_URL, fault_pool, start_stages, wait_for  # noqa: F401

SEED = 20261126
MUTATIONS = 50
SOURCE = embedded_sample_dir() / "Data" / "data_A.4lep.root"
PER_FILE_SECONDS = 20


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Flip one to eight random bytes, anywhere in the file."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= rng.randrange(1, 256)
    return bytes(out)


def mutated_files(folder: Path, count: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    data = SOURCE.read_bytes()
    paths = []
    for index in range(count):
        path = folder / f"m{index:03d}" / "data_A.4lep.root"
        path.parent.mkdir(parents=True)
        path.write_bytes(mutate(data, rng))
        paths.append(path)
    return paths


def clean_chunk() -> tuple[RunPlan, ChunkResult]:
    release, files = resolve_inputs(None, [str(SOURCE)])
    plan = plan_run(new_run_id(), analysis_config(release=release, chunk_size=1_000_000), files)
    assert len(plan.chunks) == 1
    return plan, process_chunk(plan.chunks[0], plan.config, "test")


def same_numbers(result: ChunkResult, clean: ChunkResult) -> bool:
    return (result.events_read, result.events_selected, result.histograms) == \
        (clean.events_read, clean.events_selected, clean.histograms)


_RUNNER = textwrap.dedent("""
    import json, signal, sys
    from atlaspipe.model import Chunk
    from atlaspipe.config import AnalysisConfig
    from atlaspipe.pipeline.processing import process_chunk

    def hang(*_):
        raise TimeoutError("hang")

    signal.signal(signal.SIGALRM, hang)
    chunk, config, paths, seconds = json.loads(sys.stdin.read())
    for path in paths:
        signal.alarm(seconds)
        try:
            result = process_chunk(Chunk(**{**chunk, "source": path}), AnalysisConfig(**config), "fuzz")
            outcome = {"path": path, "result": result.to_jsonable()}
        except TimeoutError:
            outcome = {"path": path, "hang": True}
        except BaseException as exc:
            outcome = {"path": path, "raised": f"{type(exc).__name__}: {exc}"[:300]}
        signal.alarm(0)
        print(json.dumps(outcome), flush=True)
""")


def run_isolated(chunk: Chunk, config: dict[str, Any], paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Outcome per file, from a child process; a file that kills the child is reported as a crash."""
    outcomes: dict[str, dict[str, Any]] = {}
    remaining = [str(p) for p in paths]
    while remaining:
        completed = subprocess.run(
            [sys.executable, "-c", _RUNNER], input=json.dumps([chunk.to_jsonable(), config, remaining,
                                                               PER_FILE_SECONDS]),
            capture_output=True, text=True, timeout=PER_FILE_SECONDS * len(remaining) + 60, check=False)
        for line in completed.stdout.splitlines():
            outcome = json.loads(line)
            outcomes[outcome["path"]] = outcome
        done = [p for p in remaining if p in outcomes]
        remaining = remaining[len(done):]
        if remaining and completed.returncode != 0:
            outcomes[remaining[0]] = {"path": remaining[0], "crash": completed.returncode,
                                      "stderr": completed.stderr[-500:]}
            remaining = remaining[1:]
        elif remaining:
            raise AssertionError(f"runner stopped early: {completed.stderr[-2000:]}")
    return outcomes


def test_mutated_files_in_process(tmp_path: Path) -> None:
    plan, clean = clean_chunk()
    paths = mutated_files(tmp_path, MUTATIONS, SEED)
    outcomes = run_isolated(plan.chunks[0], plan.config.to_json_dict(), paths)
    errors = correct = 0
    for path in paths:
        outcome = outcomes[str(path)]
        assert "crash" not in outcome and "hang" not in outcome and "raised" not in outcome, outcome
        result = ChunkResult.model_validate(outcome["result"])
        if result.error is not None:
            assert result.error and "\n" not in result.error, result.error
            errors += 1
        else:
            assert same_numbers(result, clean), f"{path}: a wrong result without an error"
            correct += 1
    print(f"{MUTATIONS} mutations: {errors} clean errors, {correct} correct results")
    assert errors > 0


@pytest.mark.integration
def test_mutated_files_on_a_worker(fault_pool: WorkerPool) -> None:  # noqa: F811
    from atlaspipe.pipeline.celery.app import create_app
    from atlaspipe.pipeline.celery.canvas import run_graph
    from atlaspipe.pipeline.celery.records import RunRecords
    from tests.integration.test_bad_input import PlannedStages

    start_stages(fault_pool)
    worker_pids = set(fault_pool.pids("process"))
    plan, clean = clean_chunk()
    paths = mutated_files(fault_pool.tmp / "mutated", 6, SEED + 1)
    run_id = new_run_id()
    chunks = tuple(plan.chunks[0].model_copy(update={"chunk_id": i, "source": str(p)}) for i, p in enumerate(paths))
    mutated_plan = plan.model_copy(update={"run_id": run_id, "chunks": chunks})
    store = RunRecords(BACKEND_URL)
    lifecycle = Lifecycle(store, "celery", PlannedStages(mutated_plan))
    lifecycle.submit(RunRequest(run_id=run_id, output_dir=str(fault_pool.tmp / "outputs"), keep_records=True,
                                created=now_text()))
    assert lifecycle.plan(run_id, "test") is not None
    run_graph(create_app(FAULT_BROKER_URL, BACKEND_URL), run_id, chunks, plan.config).apply_async()
    wait_for(lambda: store.status(run_id).terminal, timeout=120, what="the run")
    results = store.chunk_results(run_id)
    assert len(results) == len(chunks)
    for work in chunks:
        result = results[work.chunk_id]
        assert (result.error is not None and "\n" not in result.error) or same_numbers(result, clean), result
    assert fault_pool.processes["process"].poll() is None
    assert set(fault_pool.pids("process")) == worker_pids, "a pool child died"
