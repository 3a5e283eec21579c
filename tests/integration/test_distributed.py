"""The pipeline on real Celery workers, RabbitMQ and Redis, against the in-process run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import redis
import uproot

import atlaspipe.api
from atlaspipe.generate.embedded import embedded_sample_dir
from atlaspipe.model import Manifest, RunResults
from tests.conftest import BACKEND_URL, WorkerPool
from tests.runs import histograms, reference_results, run_dir_of, write_many_entries_file
from tests.runs import submit as run_submit

pytestmark = pytest.mark.integration

ONE_MIB = 1 << 20


def submit(pool: WorkerPool, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_submit(pool.env, pool.tmp, *args, timeout=timeout)


def test_embedded_sample_on_workers_is_bit_identical_to_in_process(stage_workers: WorkerPool) -> None:
    chunk_size = 700
    completed = submit(stage_workers, "--chunk-size", str(chunk_size))
    assert completed.returncode == 0, completed.stderr + completed.stdout
    run_dir = run_dir_of(completed)
    distributed = RunResults.read(run_dir / "results.json")
    local = reference_results([embedded_sample_dir()], chunk_size)
    assert histograms(distributed) == histograms(local)
    assert distributed.significance is not None and (distributed.significance.notebook or 0) > 0
    assert (run_dir / "m4l.png").stat().st_size > 0
    # The fit's figures are drawn by the fit piece on the plot worker, and listed like the others.
    for kind in ("m4l_prefit_postfit_png", "fit_pulls_png", "fit_scan_png"):
        assert (run_dir / distributed.outputs[kind]).stat().st_size > 0
    # Pieces written by parallel tasks are listed, in order, as one process writing them all lists them.
    in_process = atlaspipe.api.run(settings=atlaspipe.api.AnalysisSettings(chunk_size=chunk_size),
                                   output=stage_workers.tmp / "in-process")
    assert in_process.ok, in_process.status.message
    assert list(distributed.outputs.items()) == list(in_process.results.outputs.items())
    for name in in_process.results.outputs.values():
        assert (run_dir / name).stat().st_size > 0, name
    manifest = Manifest.read(run_dir / "manifest.json")
    assert manifest.executor == "celery"
    assert all((i.checksum or "").startswith("sha256:") for i in manifest.inputs)
    assert "yield" in completed.stdout and str(run_dir) in completed.stdout
    # Each worker imported its stage's libraries before forking its pool (pipeline/celery/warmup.py).
    assert "preloaded matplotlib.pyplot, mplhep, pyhf" in stage_workers.log("plot")
    assert "preloaded uproot, hist" in stage_workers.log("process")


def test_two_process_workers_share_the_chunks(stage_workers: WorkerPool) -> None:
    second = stage_workers.start("process2", "process")
    completed = submit(stage_workers, "--chunk-size", "300")
    assert completed.returncode == 0, completed.stderr
    manifest = Manifest.read(run_dir_of(completed) / "manifest.json")
    process_workers = {w for w in manifest.workers if w.startswith("process")}
    assert second in process_workers and len(process_workers) == 2, manifest.workers


def test_two_thousand_tiny_chunks_stay_within_the_size_limits(stage_workers: WorkerPool) -> None:
    data = stage_workers.tmp / "inputs" / "data_A.4lep.root"
    data.parent.mkdir()
    write_many_entries_file(data, 2100)
    completed = submit(stage_workers, "--input", str(data), "--chunk-size", "1", "--keep-records",
                       "--allow-partial", timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = RunResults.read(run_dir_of(completed) / "results.json")
    chunks = results.chunks.total
    assert chunks >= 2000 and not results.chunks.failed
    assert results.data.events_read == 2100 and results.data.events_selected == 2100

    from atlaspipe.pipeline.celery.app import create_app
    from atlaspipe.pipeline.celery.canvas import run_graph
    from atlaspipe.pipeline.celery.records import RunRecords

    store = RunRecords(BACKEND_URL)
    run_id = results.run_id
    sizes = dict(store.value_sizes(run_id))
    chunk_results = [size for key, size in sizes.items() if ":results/" in key]
    assert len(chunk_results) == chunks
    assert max(chunk_results) < 64 * 1024
    assert max(sizes.values()) < ONE_MIB
    # Every message the run sent is one chunk's description: its size does not grow with the run.
    plan = store.plan(run_id)
    assert plan is not None
    graph = run_graph(create_app(), run_id, plan.chunks, plan.config)
    largest_message = max(len(json.dumps([*task.args, task.kwargs])) for task in graph.tasks[0].tasks)
    assert 0 < largest_message < 4096
    largest_backend_value = largest_value_in(store.redis)
    assert largest_backend_value < ONE_MIB
    print(f"{chunks} chunks: largest chunk result {max(chunk_results)} B, largest message {largest_message} B, "
          f"largest backend value {largest_backend_value} B")


def largest_value_in(client: redis.Redis) -> int:
    """The largest value stored anywhere in the test database (strings, hash fields, list items)."""
    largest = 0
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            largest = max(largest, int(client.strlen(key)))
        elif kind == "hash":
            largest = max([largest, *(len(v) for v in client.hvals(key))])
        elif kind == "list":
            largest = max([largest, *(len(v) for v in client.lrange(key, 0, -1))])
    return largest


def test_unreachable_broker_fails_fast_with_one_line(tmp_path: Path) -> None:
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "atlaspipe.cli.submit", "--broker", "amqp://127.0.0.1:1//"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        check=False,
    )
    assert completed.returncode != 0
    assert time.monotonic() - started < 15
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "broker" in lines[0] and "unreachable" in lines[0], completed.stderr
    assert "Traceback" not in completed.stderr


def test_failed_chunk_is_reported_with_file_and_branch(stage_workers: WorkerPool) -> None:
    inputs = stage_workers.tmp / "inputs"
    inputs.mkdir()
    write_many_entries_file(inputs / "data_A.4lep.root", 50)
    broken = inputs / "data_B.4lep.root"
    with uproot.recreate(broken) as handle:
        handle.mktree("mini", {"runNumber": np.int32})
        handle["mini"].extend({"runNumber": np.arange(10, dtype=np.int32)})
    completed = submit(stage_workers, "--input", str(inputs))
    assert completed.returncode == 1, completed.stderr
    assert f"chunk 1 {broken} [0, 10): branch 'lep_pt': branch missing from tree" in completed.stderr
    assert "resume" in completed.stderr
    assert "Traceback" not in completed.stderr
