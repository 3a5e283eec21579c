"""Fault injection against real workers, RabbitMQ and Redis: every fault ends in a result
bit-identical to the in-process run, or in a clear failure that ``resume`` finishes."""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atlaspipe.records import RunRecords
from tests.conftest import BACKEND_URL, WorkerPool
from tests.faultkit import (
    FAULT_BROKER_URL,
    fault_pool,  # noqa: F401 - a fixture
    finish,
    histograms,
    make_inputs,
    reference_results,
    restart_broker,
    restart_redis,
    results_of,
    run_dir_in,
    run_id_from,
    run_submit,
    start_stages,
    start_submit,
    submitted_run_id,
    successes,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 200_000
CHUNK = 50_000
"""Four inputs of 200,000 events cut into chunks of about 0.5 s each: a window to act mid-run."""


@pytest.fixture
def inputs(fault_pool: WorkerPool) -> Path:  # noqa: F811
    return make_inputs(fault_pool.tmp / "inputs", EVENTS)


def store() -> RunRecords:
    return RunRecords(BACKEND_URL)


def assert_exact(run_dir: Path, inputs: Path) -> dict[str, Any]:
    results = results_of(run_dir)
    assert results["status"] == "complete" and not results["chunks"]["failed"], results["chunks"]
    assert histograms(results) == histograms(reference_results(inputs, CHUNK))
    return results


def events_counted(run_id: str) -> int:
    return int(store().meta(run_id)["events_read"])


def test_pool_child_killed_mid_chunk_is_redelivered(fault_pool: WorkerPool, inputs: Path) -> None:  # noqa: F811
    start_stages(fault_pool)
    submitter = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(CHUNK), "--keep-records")
    wait_for(lambda: successes(fault_pool, "process") >= 2, what="two chunks done")
    _main, *children = fault_pool.pids("process")
    assert children, "no pool child"
    os.kill(children[0], signal.SIGKILL)
    code, _, err = finish(submitter)
    assert code == 0, err[-3000:]
    log = fault_pool.log("process")
    assert "WorkerLostError" in log and "signal 9" in log, log[-3000:]
    run_id = run_id_from(err)
    results = assert_exact(run_dir_in(fault_pool, run_id), inputs)
    assert events_counted(run_id) == 4 * EVENTS == sum(i["entries"] for i in results["inputs"])


def test_whole_process_worker_killed_while_another_runs(fault_pool: WorkerPool, inputs: Path) -> None:  # noqa: F811
    start_stages(fault_pool, process_workers=2)
    submitter = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(CHUNK), "--keep-records")
    wait_for(lambda: successes(fault_pool, "process") >= 1 and successes(fault_pool, "process1") >= 1,
             what="both process workers busy")
    victim = fault_pool.processes["process"]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)
    code, _, err = finish(submitter)
    assert code == 0, err[-3000:]
    run_id = run_id_from(err)
    assert_exact(run_dir_in(fault_pool, run_id), inputs)
    assert events_counted(run_id) == 4 * EVENTS


def test_broker_restart_mid_run(fault_pool: WorkerPool, inputs: Path) -> None:  # noqa: F811
    start_stages(fault_pool)
    submitter = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(CHUNK))
    wait_for(lambda: successes(fault_pool, "process") >= 2, what="two chunks done")
    restart_broker()
    code, _, err = finish(submitter)
    assert code == 0, err[-3000:]
    run_id = run_id_from(err)
    assert_exact(run_dir_in(fault_pool, run_id), inputs)
    assert "Connection to broker lost" in fault_pool.log("process") or "consumer: Cannot connect" in \
        fault_pool.log("process"), fault_pool.log("process")[-2000:]


def test_result_backend_restart_then_resume(fault_pool: WorkerPool, inputs: Path) -> None:  # noqa: F811
    start_stages(fault_pool)
    submitter = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(CHUNK))
    wait_for(lambda: successes(fault_pool, "process") >= 2, what="two chunks done")
    restart_redis()
    code, _, err = finish(submitter)
    run_id = run_id_from(err)
    print(f"after the Redis restart the submitter exited {code}: {err.strip().splitlines()[-1]}")
    if code != 0:
        # The run's records went with Redis: the submitter says so in one line and names the fix.
        assert f"atlaspipe-submit resume {run_id}" in err and "Traceback" not in err, err[-3000:]
        resumed = run_submit(fault_pool, "resume", run_id, "--output", str(fault_pool.tmp / "outputs"))
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "rebuilt its records" in resumed.stderr
    assert_exact(run_dir_in(fault_pool, run_id), inputs)


def test_duplicate_deliveries_are_counted_once(fault_pool: WorkerPool, inputs: Path) -> None:  # noqa: F811
    from atlaspipe.taskapp import create_app

    start_stages(fault_pool)
    app = create_app(FAULT_BROKER_URL, BACKEND_URL)
    submitter = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(CHUNK), "--keep-records")
    run_id = submitted_run_id(submitter)
    plan = wait_for(lambda: store().has_plan(run_id) and store().load_plan(run_id), what="the plan")

    def publish_all() -> None:
        for chunk in plan.chunks:
            app.send_task("atlaspipe.process_chunk", args=[run_id, chunk.to_dict(), plan.config.to_json_dict()],
                          queue="process", routing_key="process")

    publish_all()  # while the originals are queued or running
    code, _, err = finish(submitter)
    assert code == 0, err[-3000:]
    run_dir = run_dir_in(fault_pool, run_id)
    assert_exact(run_dir, inputs)
    assert events_counted(run_id) == 4 * EVENTS
    publish_all()  # after the run finished
    wait_for(lambda: fault_pool.log("process").count("duplicate delivery not counted")
             + fault_pool.log("process").count("stored by another delivery") >= 2 * len(plan.chunks),
             what="every duplicate seen and skipped")
    assert events_counted(run_id) == 4 * EVENTS
    assert store().chunks_done(run_id) == len(plan.chunks)
    assert_exact(run_dir, inputs)


class _StallingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with byte ranges until told to stall; then every request hangs."""

    stall = threading.Event()
    release = threading.Event()

    def do_GET(self) -> None:
        if self.stall.is_set():
            self.release.wait(120)
            return
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        header = self.headers.get("Range")
        if header and header.startswith("bytes="):
            first, _, last = header[6:].partition("-")
            start, stop = int(first), min(int(last) + 1 if last else len(data), len(data))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
        else:
            start, stop = 0, len(data)
            self.send_response(200)
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(data[start:stop])

    def do_HEAD(self) -> None:
        if self.stall.is_set():
            self.release.wait(120)
            return
        super().do_HEAD()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stalling_server(tmp_path: Path) -> Iterator[tuple[str, type[_StallingHandler]]]:
    served = tmp_path / "served"
    make_inputs(served, 20_000, samples=("data_A",))
    handler = type("Handler", (_StallingHandler,), {"stall": threading.Event(), "release": threading.Event()})

    def factory(*args: Any, **kwargs: Any) -> _StallingHandler:
        return handler(*args, directory=str(served), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/Data/data_A.4lep.root", handler
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()


def test_hung_chunk_hits_the_time_limit_is_retried_then_failed(
        fault_pool: WorkerPool, stalling_server: tuple[str, type[_StallingHandler]]) -> None:  # noqa: F811
    url, handler = stalling_server
    start_stages(fault_pool, extra_env={"ATLASPIPE_TASK_SOFT_TIME_LIMIT": "2", "ATLASPIPE_TASK_TIME_LIMIT": "8"})
    submitter = start_submit(fault_pool, "--input", url, "--chunk-size", "1000000")
    run_id = submitted_run_id(submitter)
    wait_for(lambda: store().meta(run_id)["state"] != "submitted" and store().has_plan(run_id), what="planning")
    handler.stall.set()
    started = time.monotonic()
    code, _, err = finish(submitter, timeout=120)
    assert code == 1, err[-3000:]
    assert url in err and "exceeded the task time limit 3 times" in err and "Traceback" not in err, err
    assert time.monotonic() - started < 60
    assert fault_pool.log("process").count("Soft time limit (2.0s) exceeded") == 3
    status = json.loads((run_dir_in(fault_pool, run_id) / "status.json").read_text())
    assert status["state"] == "failed" and status["failed"][0]["source"] == url


def test_submitter_killed_then_status_and_resume(fault_pool: WorkerPool, inputs: Path) -> None:  # noqa: F811
    start_stages(fault_pool)
    submitter = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(CHUNK))
    wait_for(lambda: successes(fault_pool, "process") >= 1, what="a chunk done")
    os.killpg(submitter.pid, signal.SIGKILL)
    _, _, err = finish(submitter)
    run_id = run_id_from(err)
    status = run_submit(fault_pool, "status", run_id)
    assert status.returncode == 0 and f"run {run_id}:" in status.stdout, status.stderr
    resumed = run_submit(fault_pool, "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_exact(run_dir_in(fault_pool, run_id), inputs)
    assert events_counted(run_id) == 4 * EVENTS
    listed = run_submit(fault_pool, "list")
    assert run_id in listed.stdout and "succeeded" in listed.stdout


def test_run_completes_without_the_chord_callback(fault_pool: WorkerPool, inputs: Path) -> None:  # noqa: F811
    """Celery can lose a chord's callback when a header task dies (celery#2911, #4207): publish the
    chunks as a plain group, with no callback at all; the last chunk stored completes the run."""
    from atlaspipe.config import analysis_config
    from atlaspipe.planning import new_run_id, plan_run, resolve_inputs
    from atlaspipe.taskapp import create_app

    start_stages(fault_pool)
    app = create_app(FAULT_BROKER_URL, BACKEND_URL)
    run_id = new_run_id()
    output = fault_pool.tmp / "outputs"
    release, files = resolve_inputs(None, [str(inputs)])
    plan = plan_run(run_id, analysis_config(release=release, chunk_size=CHUNK), files)
    records = store()
    records.create(run_id, {"run_id": run_id, "inputs": [str(inputs)], "output_dir": str(output),
                            "keep_records": True})
    records.save_plan(plan)
    records.set_state(run_id, "running", chunks_total=len(plan.chunks))
    for chunk in plan.chunks:
        app.send_task("atlaspipe.process_chunk", args=[run_id, chunk.to_dict(), plan.config.to_json_dict()],
                      queue="process", routing_key="process")
    wait_for(lambda: records.meta(run_id)["state"] in ("succeeded", "failed"), timeout=120, what="completion")
    assert records.meta(run_id)["state"] == "succeeded"
    assert_exact(output / run_id, inputs)


@pytest.mark.parametrize("task_state", ["FAILURE", "SUCCESS"])
def test_stalled_run_is_repaired_by_the_submitter(fault_pool: WorkerPool, inputs: Path,  # noqa: F811
                                                  task_state: str) -> None:
    """A chunk whose task ended but whose result is not stored (a worker lost between the two writes,
    or a backend that lost the result) is found by the submitter's watchdog: a failed task is
    recorded as a failed chunk, a succeeded one is run again; either way the run ends."""
    from atlaspipe.canvas import chunk_task_id
    from atlaspipe.taskapp import create_app

    start_stages(fault_pool)
    app = create_app(FAULT_BROKER_URL, BACKEND_URL)
    submitter = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(CHUNK), "--stall-timeout", "3",
                             "--keep-records")
    run_id = submitted_run_id(submitter)
    records = store()
    plan = wait_for(lambda: records.has_plan(run_id) and records.load_plan(run_id), what="the plan")
    last = plan.chunks[-1].chunk_id
    task_id = chunk_task_id(run_id, 0, last)
    fault_pool.stop("aggregate")  # hold completion until the result is withdrawn
    wait_for(lambda: app.AsyncResult(task_id).state == "SUCCESS", what="the last chunk's task")
    if task_state == "FAILURE":
        # Celery never overwrites a stored SUCCESS, so the success goes first.
        records.redis.delete(f"celery-task-meta-{task_id}")
        app.backend.mark_as_failure(task_id, RuntimeError("worker vanished"))
    records.redis.hdel(f"atlaspipe:run:{run_id}:results", str(last))
    records.redis.delete(f"atlaspipe:run:{run_id}:claim:aggregate:0")
    fault_pool.start("aggregate", "aggregate")
    code, _, err = finish(submitter, timeout=120)
    if task_state == "FAILURE":
        assert code == 1, err[-3000:]
        assert "recorded as failed" in err and "worker vanished" in err, err[-3000:]
    else:
        assert code == 0 and "relaunched" in err, err[-3000:]
        assert_exact(run_dir_in(fault_pool, run_id), inputs)
