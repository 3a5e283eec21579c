"""The run lifecycle's guarantees on real workers, RabbitMQ and Redis (docs/reliability.md, 3–7):
a chunk that kills its worker is failed after its delivery limit; an exception in planning, aggregation
or finalize ends the run failed with one line; progress shows without a submitter; a stage without a
worker gets a hint; a run can be cancelled and old runs cleaned."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atlaspipe.model import RunResults, RunState, RunStatus
from atlaspipe.pipeline.celery.records import RunRecords
from tests.conftest import BACKEND_URL, IN_CI, WorkerPool
from tests.faultkit import (
    fault_pool,  # noqa: F401 - a fixture
    finish,
    histograms,
    make_inputs,
    reference_results,
    run_dir_in,
    run_id_from,
    run_submit,
    start_stages,
    start_submit,
    submitted_run_id,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 100_000
CHUNK = 25_000


@pytest.fixture
def inputs(fault_pool: WorkerPool) -> Path:  # noqa: F811
    return make_inputs(fault_pool.tmp / "inputs", EVENTS)


def store() -> RunRecords:
    return RunRecords(BACKEND_URL)


def status_file(pool: WorkerPool, run_id: str) -> RunStatus:
    return RunStatus.read(run_dir_in(pool, run_id) / "status.json")


def assert_exact(run_dir: Path, inputs: Path) -> RunResults:
    results = RunResults.read(run_dir / "results.json")
    assert results.status == "complete" and not results.chunks.failed, results.chunks
    assert histograms(results) == histograms(reference_results(inputs, CHUNK))
    return results


# --- 3. a chunk that kills its worker's main process ------------------------------------------------


class Supervisor:
    """Restarts a worker whenever it dies, as Compose's ``restart`` or a Kubernetes Deployment would."""

    def __init__(self, pool: WorkerPool, name: str, queues: str, env: dict[str, str]) -> None:
        self.pool, self.name, self.queues, self.env = pool, name, queues, env
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self._start_worker()
        self._thread.start()

    def _start_worker(self) -> None:
        self.pool.start(self.name, self.queues, extra_env=self.env, wait=False, extra_args=("--include",
                                                                                          "tests.fault_hooks"))

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            process = self.pool.processes.get(self.name)
            if process is not None and process.poll() is not None:
                self.restarts += 1
                self.pool.processes.pop(self.name)
                # The pool children of a killed main process are orphans holding nothing; end them.
                subprocess.run(["pkill", "-KILL", "-f", "--", f"-n {self.name}-{self.pool.tag}@"], check=False)
                self._start_worker()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("allow_partial", [False, True], ids=["failed", "partial"])
def test_a_chunk_that_kills_its_worker_is_failed_after_its_delivery_limit(
        fault_pool: WorkerPool, inputs: Path, allow_partial: bool) -> None:  # noqa: F811
    killer = inputs / "kill-main"
    killer.mkdir()
    shutil.copyfile(inputs / "Data" / "data_A.4lep.root", killer / "data_B.4lep.root")
    start_stages(fault_pool, process_workers=0)
    supervisor = Supervisor(fault_pool, "process", "process", {"ATLASPIPE_TEST_KILL_MAIN_ON": "kill-main"})
    supervisor.start()
    started = time.monotonic()
    try:
        options = ["--allow-partial"] if allow_partial else []
        completed = run_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(CHUNK), *options,
                               timeout=300)
    finally:
        supervisor.stop()
    elapsed = time.monotonic() - started
    run_id = run_id_from(completed.stderr)
    status = store().status(run_id)
    victim = [f for f in status.failures if "kill-main" in f.source]
    assert victim and "delivered 3 times without finishing" in victim[0].reason, status
    assert len(status.failures) == len(victim)
    # Each such chunk killed three workers; its fourth delivery failed it without running it.
    assert supervisor.restarts == 3 * len(victim), (supervisor.restarts, victim)
    if allow_partial:
        assert completed.returncode == 0 and status.state is RunState.PARTIAL, completed.stderr[-2000:]
        results = RunResults.read(run_dir_in(fault_pool, run_id) / "results.json")
        assert results.chunks.failed == status.failures
        # Every other chunk of the queue ran and counts once: all of the four good files.
        assert results.data.events_read + sum(s.events_read for s in results.samples.values()) == 4 * EVENTS
    else:
        assert completed.returncode == 1 and status.state is RunState.FAILED
        assert victim[0].describe() in completed.stderr and "Traceback" not in completed.stderr
    print(f"kill-main chunk: failed after {supervisor.restarts} worker deaths, run ended in {elapsed:.1f} s")


# --- 4. exceptions in planning, aggregation or finalize ----------------------------------------------


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``folder`` (root only)."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the full-disk tests mount a tmpfs and need root")
        pytest.skip("the full-disk tests mount a tmpfs and need root")
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system of ``folder`` up to ``leave`` bytes free."""
    ballast = folder / "ballast"
    free = shutil.disk_usage(folder).free - leave
    with ballast.open("wb") as handle, contextlib.suppress(OSError):
        handle.write(b"\0" * max(free, 0))
    return ballast


def debris(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.rglob(".*.tmp"))


def test_disk_full_in_finalize_fails_the_run_then_resume_finishes_it(fault_pool: WorkerPool,  # noqa: F811
                                                                      inputs: Path) -> None:
    outputs = fault_pool.tmp / "outputs"
    with small_disk(outputs, "16m"):
        start_stages(fault_pool)
        fault_pool.stop("plot")  # hold finalize until the disk is full
        submitter = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(CHUNK))
        run_id = submitted_run_id(submitter)
        wait_for(lambda: store().status(run_id).state is RunState.AGGREGATING, timeout=120, what="aggregation")
        wait_for(lambda: store().aggregate(run_id, 0) is not None, what="the aggregate")
        ballast = fill(outputs)
        fault_pool.start("plot", "plot")
        started = time.monotonic()
        code, _, err = finish(submitter, timeout=120)
        failed_after = time.monotonic() - started
        assert code == 1, err[-3000:]
        assert "finalize failed: No space left on device" in err and "Traceback" not in err, err[-3000:]
        status = status_file(fault_pool, run_id)
        assert status.state is RunState.FAILED and status.message.startswith("finalize failed: No space left")
        run_dir = run_dir_in(fault_pool, run_id)
        assert debris(run_dir) == []
        ballast.unlink()
        resumed = run_submit(fault_pool, "resume", run_id)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "Exception ignored" not in resumed.stderr
        assert_exact(run_dir, inputs)
        assert debris(run_dir) == []
    print(f"disk full in finalize: run failed {failed_after:.1f} s after the plot worker started")


def test_atlaspipe_run_on_a_full_disk_prints_one_line(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    with small_disk(outputs, "1m"):
        fill(outputs, leave=16 * 1024)
        completed = subprocess.run([sys.executable, "-m", "atlaspipe", "run", "--output", str(outputs), "--quiet"],
                                   capture_output=True, text=True, timeout=180, cwd=tmp_path, check=False)
        assert completed.returncode == 1, completed.stderr
        assert "Traceback" not in completed.stderr
        lines = completed.stderr.strip().splitlines()
        assert "No space left on device" in lines[0] and len(lines) <= 2, completed.stderr
        run_dirs = [p for p in outputs.iterdir() if p.is_dir()]
        assert len(run_dirs) == 1
        status = RunStatus.read(run_dirs[0] / "status.json")
        assert status.state is RunState.FAILED and "No space left on device" in status.message
        assert debris(run_dirs[0]) == []


def test_a_planning_failure_of_a_submitted_run_ends_it_failed(fault_pool: WorkerPool) -> None:  # noqa: F811
    start_stages(fault_pool)
    completed = run_submit(fault_pool, "--input", "/etc", timeout=60)
    assert completed.returncode == 1 and "Traceback" not in completed.stderr, completed.stderr
    run_id = run_id_from(completed.stderr)
    status = status_file(fault_pool, run_id)
    assert status.state is RunState.FAILED
    assert status.message.startswith("planning failed: ") and "outside the allowed input folders" in status.message


def test_a_corrupt_chunk_result_fails_the_aggregation_and_resume_recovers(fault_pool: WorkerPool,  # noqa: F811
                                                                         inputs: Path) -> None:
    start_stages(fault_pool)
    fault_pool.stop("aggregate")
    submitter = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(CHUNK), "--keep-records")
    run_id = submitted_run_id(submitter)
    records = store()
    wait_for(lambda: records.complete(run_id), timeout=120, what="every chunk stored")
    records.redis.hset(f"atlaspipe:run:{run_id}:results", "0", b"{not json")
    fault_pool.start("aggregate", "aggregate")
    code, _, err = finish(submitter, timeout=120)
    assert code == 1 and "aggregation failed: " in err and "Traceback" not in err, err[-3000:]
    # The cause fixed (here: the damaged record removed), resume reruns that chunk and finishes exactly.
    records.redis.hdel(f"atlaspipe:run:{run_id}:results", "0")
    resumed = run_submit(fault_pool, "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_exact(run_dir_in(fault_pool, run_id), inputs)


# --- 5. live progress without the submitter ------------------------------------------------------------


def test_progress_shows_in_the_run_folder_without_a_submitter(fault_pool: WorkerPool,  # noqa: F811
                                                              inputs: Path) -> None:
    start_stages(fault_pool)
    completed = run_submit(fault_pool, "--input", str(inputs), "--chunk-size", "5000", "--no-wait")
    assert completed.returncode == 0, completed.stderr
    run_id = completed.stdout.strip().splitlines()[-1]
    seen: list[tuple[str, int]] = []

    def progressed() -> bool:
        with contextlib.suppress(Exception):
            status = status_file(fault_pool, run_id)
            seen.append((status.state, status.chunks_done))
            return status.terminal
        return False

    wait_for(progressed, timeout=180, interval=0.2, what="the run to end")
    running = sorted({done for state, done in seen if state == RunState.RUNNING})
    total = status_file(fault_pool, run_id).chunks_total
    # Written by the workers as chunks land: intermediate counts, not only 0 and the end.
    assert any(0 < done < total for done in running), seen[-20:]
    assert status_file(fault_pool, run_id).state is RunState.SUCCEEDED
    assert status_file(fault_pool, run_id).chunks_done == total


def test_progress_goes_on_after_the_submitter_is_killed(fault_pool: WorkerPool, inputs: Path) -> None:  # noqa: F811
    start_stages(fault_pool)
    submitter = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", "5000")
    run_id = submitted_run_id(submitter)
    wait_for(lambda: store().status(run_id).chunks_done >= 1, what="a chunk done")
    os.killpg(submitter.pid, signal.SIGKILL)
    finish(submitter)
    at_kill = store().status(run_id).chunks_done
    wait_for(lambda: status_file(fault_pool, run_id).terminal, timeout=180, what="the run to end")
    final = status_file(fault_pool, run_id)
    assert final.state is RunState.SUCCEEDED and final.chunks_done > at_kill


# --- 6. a stage queue without consumers ------------------------------------------------------------------


def test_each_stage_without_a_worker_gets_a_hint(fault_pool: WorkerPool, inputs: Path) -> None:  # noqa: F811
    submitter = start_submit(fault_pool, "--input", str(inputs / "Data"), "--chunk-size", str(CHUNK))
    assert submitter.stderr is not None
    os.set_blocking(submitter.stderr.fileno(), False)
    started = time.monotonic()
    text = ""
    delays: dict[str, float] = {}
    stages = ("load", "process", "aggregate", "plot")

    def hinted() -> bool:
        nonlocal text
        with contextlib.suppress(TypeError):
            text += submitter.stderr.read() or ""  # type: ignore[union-attr]
        for stage in stages:
            if stage not in delays and f"start one with `celery -A atlaspipe worker -Q {stage}`" in text:
                delays[stage] = time.monotonic() - started
        return len(delays) == len(stages)

    wait_for(hinted, timeout=30, interval=0.2, what=f"a hint for each stage, so far {sorted(delays)}")
    os.set_blocking(submitter.stderr.fileno(), True)
    start_stages(fault_pool)
    code, _, err = finish(submitter, timeout=120)
    assert code == 0, (text + err)[-3000:]
    assert all(delay < 15 for delay in delays.values()), delays
    print("hints after " + ", ".join(f"{stage} {delay:.1f} s" for stage, delay in delays.items()))


# --- 7. cancel and clean ---------------------------------------------------------------------------------


def test_cancel_drops_the_runs_chunks_and_disturbs_nothing_else(fault_pool: WorkerPool,  # noqa: F811
                                                                 inputs: Path) -> None:
    start_stages(fault_pool)
    doomed = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", "2000")
    doomed_id = submitted_run_id(doomed)
    other = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(CHUNK))
    other_id = submitted_run_id(other)
    wait_for(lambda: store().status(doomed_id).chunks_done >= 2, what="the run under way")
    cancelled = run_submit(fault_pool, "cancel", doomed_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stderr, cancelled.stderr
    code, _, err = finish(doomed)
    assert code == 1 and f"run {doomed_id} cancelled" in err, err[-2000:]
    done_at_cancel = store().status(doomed_id).chunks_done
    code, _, err = finish(other)
    assert code == 0, err[-3000:]
    assert_exact(run_dir_in(fault_pool, other_id), inputs)
    status = store().status(doomed_id)
    assert status.state is RunState.CANCELLED and status.chunks_done == done_at_cancel < status.chunks_total
    assert status_file(fault_pool, doomed_id).state is RunState.CANCELLED
    cleaned = run_submit(fault_pool, "clean", "--older-than", "0")
    assert cleaned.returncode == 0, cleaned.stderr
    wait_for(lambda: not run_dir_in(fault_pool, doomed_id).exists(), what="the cancelled run's folder removed")
    assert run_submit(fault_pool, "status", doomed_id).returncode == 2
