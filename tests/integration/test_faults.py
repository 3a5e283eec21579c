"""Fault injection against real workers, RabbitMQ and Redis: every fault ends in a result
bit-identical to the in-process run, or in a clear failure that ``resume`` finishes.

Faults that stop, restart or freeze a service do it to private instances (tests/private_services.py):
the shared RabbitMQ and Redis stay up for every other test session on the machine.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from atlaspipe.errors import AtlaspipeError
from atlaspipe.model import Chunk, RunPlan, RunRequest, RunResults, RunState, RunStatus
from atlaspipe.pipeline.celery.records import RunRecords
from tests.conftest import BACKEND_URL, WorkerPool, worker_environment
from tests.faultkit import (
    FAULT_BROKER_URL,
    fault_pool,  # noqa: F401 - a fixture
    finish,
    histograms,
    make_inputs,
    reference_results,
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
from tests.private_services import (  # noqa: F401 - fixtures
    PrivateRabbitMQ,
    PrivateRedis,
    RedisFactory,
    private_broker_url,
    private_rabbitmq,
    private_redis,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 200_000
CHUNK = 50_000
"""Four inputs of 200,000 events cut into chunks of about 0.5 s each: a window to act mid-run."""


@pytest.fixture
def inputs(fault_pool: WorkerPool) -> Path:  # noqa: F811
    return make_inputs(fault_pool.tmp / "inputs", EVENTS)


def store(url: str = BACKEND_URL) -> RunRecords:
    return RunRecords(url)


def assert_exact(run_dir: Path, inputs: Path) -> RunResults:
    results = results_of(run_dir)
    assert results.status == "complete" and not results.chunks.failed, results.chunks
    assert histograms(results) == histograms(reference_results(inputs, CHUNK))
    return results


def events_counted(run_id: str, url: str = BACKEND_URL) -> int:
    return store(url).status(run_id).events_read


def use_services(pool: WorkerPool, broker: str | None = None, backend: str | None = None) -> None:
    """Point the pool's workers and submitters at other services (private instances)."""
    env = worker_environment(pool.tmp)
    env["ATLASPIPE_BROKER_URL"] = broker or FAULT_BROKER_URL
    env["ATLASPIPE_RESULT_BACKEND"] = backend or BACKEND_URL
    pool.env = env


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
    assert events_counted(run_id) == 4 * EVENTS == sum(i.entries or 0 for i in results.inputs)


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


def test_broker_restart_mid_run(fault_pool: WorkerPool, inputs: Path,  # noqa: F811
                                private_rabbitmq: PrivateRabbitMQ, private_broker_url: str) -> None:  # noqa: F811
    use_services(fault_pool, broker=private_broker_url)
    start_stages(fault_pool)
    submitter = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(CHUNK))
    wait_for(lambda: successes(fault_pool, "process") >= 2, what="two chunks done")
    private_rabbitmq.restart(down_seconds=2.0)
    code, _, err = finish(submitter)
    assert code == 0, err[-3000:]
    run_id = run_id_from(err)
    assert_exact(run_dir_in(fault_pool, run_id), inputs)
    log = fault_pool.log("process")
    assert "Connection to broker lost" in log or "consumer: Cannot connect" in log, log[-2000:]


def test_result_backend_restarted_empty_then_resume(fault_pool: WorkerPool, inputs: Path,  # noqa: F811
                                                    private_redis: RedisFactory) -> None:  # noqa: F811
    backend = private_redis(persistent=False)
    use_services(fault_pool, backend=backend.url())
    start_stages(fault_pool)
    submitter = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(CHUNK))
    wait_for(lambda: successes(fault_pool, "process") >= 2, what="two chunks done")
    backend.restart_empty()
    code, _, err = finish(submitter)
    run_id = run_id_from(err)
    # The run's records went with Redis: the submitter says so in one line and names the fix.
    assert code == 1, err[-3000:]
    assert f"atlaspipe resume {run_id}" in err and "Traceback" not in err, err[-3000:]
    started = time.monotonic()
    resumed = run_submit(fault_pool, "resume", run_id, "--output", str(fault_pool.tmp / "outputs"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Exception ignored" not in resumed.stderr
    assert_exact(run_dir_in(fault_pool, run_id), inputs)
    assert events_counted(run_id, backend.url()) == 4 * EVENTS
    print(f"Redis restarted empty: resume finished the run in {time.monotonic() - started:.1f} s")


def test_result_backend_away_mid_run_finishes_exactly_on_its_own(
        fault_pool: WorkerPool, inputs: Path, private_redis: RedisFactory) -> None:  # noqa: F811
    """Persistent Redis unreachable for OUTAGE seconds while chunks run and wait in the queue: no chunk
    is acknowledged without its stored result, and the run finishes exactly without anyone's help."""
    outage = float(os.environ.get("ATLASPIPE_TEST_BACKEND_OUTAGE", "45"))
    backend = private_redis(persistent=True)
    use_services(fault_pool, backend=backend.url())
    start_stages(fault_pool, process_workers=2)
    submitter = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", "10000", "--keep-records")
    run_id = submitted_run_id(submitter)
    wait_for(lambda: successes(fault_pool, "process") + successes(fault_pool, "process1") >= 3,
             what="three chunks done")
    with backend.outage(outage):
        down_at = time.monotonic()
    code, _, err = finish(submitter, timeout=600)
    recovered = time.monotonic() - down_at - outage
    assert code == 0, err[-3000:]
    assert "stalled: result backend unreachable since" in err and "reachable again" in err, err[-3000:]
    assert_exact_with(run_dir_in(fault_pool, run_id), inputs, 10_000)
    assert events_counted(run_id, backend.url()) == 4 * EVENTS
    print(f"Redis away {outage:.0f} s: the run finished exactly {recovered:.1f} s after it came back")


def test_a_longer_backend_outage_says_stalled_and_resume_finishes(
        fault_pool: WorkerPool, inputs: Path, private_redis: RedisFactory) -> None:  # noqa: F811
    """Past the workers' patience the chunk messages are requeued, never dropped; the run folder says
    why the run stalls, and once the backend is back the run ends exact (``resume`` if it must)."""
    backend = private_redis(persistent=True)
    use_services(fault_pool, backend=backend.url())
    start_stages(fault_pool, extra_env={"ATLASPIPE_BACKEND_PATIENCE": "15"})
    completed = run_submit(fault_pool, "--input", str(inputs), "--chunk-size", "10000", "--no-wait")
    run_id = completed.stdout.strip().splitlines()[-1]
    wait_for(lambda: successes(fault_pool, "process") >= 2, what="two chunks done")
    with backend.outage():
        wait_for(lambda: RunStatus.read(run_dir_in(fault_pool, run_id) / "status.json").message.startswith(
            "stalled: result backend unreachable since"), timeout=60, what="the stalled note")
        wait_for(lambda: "requeueing the message" in fault_pool.log("process"), timeout=60, what="a requeue")
    resumed = run_submit(fault_pool, "resume", run_id, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_exact_with(run_dir_in(fault_pool, run_id), inputs, 10_000)
    assert events_counted(run_id, backend.url()) == 4 * EVENTS


def assert_exact_with(run_dir: Path, inputs: Path, chunk_size: int) -> RunResults:
    results = results_of(run_dir)
    assert results.status == "complete" and not results.chunks.failed, results.chunks
    assert histograms(results) == histograms(reference_results(inputs, chunk_size))
    return results


def test_duplicate_deliveries_are_counted_once(fault_pool: WorkerPool, inputs: Path) -> None:  # noqa: F811
    from atlaspipe.pipeline.celery.app import create_app
    from atlaspipe.pipeline.celery.canvas import PROCESS_TASK, chunk_task_id

    start_stages(fault_pool)
    app = create_app(FAULT_BROKER_URL, BACKEND_URL)
    submitter = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(CHUNK), "--keep-records")
    run_id = submitted_run_id(submitter)
    plan = wait_for(lambda: store().plan(run_id), what="the plan")

    def publish_all() -> None:
        for chunk in plan.chunks:
            app.send_task(PROCESS_TASK, args=[run_id, chunk.to_jsonable(), plan.config.to_json_dict()],
                          task_id=chunk_task_id(run_id, 0, chunk.chunk_id), queue="process", routing_key="process")

    publish_all()  # while the originals are queued or running
    code, _, err = finish(submitter)
    assert code == 0, err[-3000:]
    run_dir = run_dir_in(fault_pool, run_id)
    assert_exact(run_dir, inputs)
    assert events_counted(run_id) == 4 * EVENTS
    publish_all()  # after the run finished
    wait_for(lambda: fault_pool.log("process").count("duplicate delivery not counted")
             + fault_pool.log("process").count("chunk skipped") >= 2 * len(plan.chunks),
             what="every duplicate seen and skipped")
    assert events_counted(run_id) == 4 * EVENTS
    assert store().status(run_id).chunks_done == len(plan.chunks)
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


def _ended(run_id: str) -> bool:
    try:
        return store().status(run_id).terminal
    except AtlaspipeError:
        return False


def test_hung_chunk_hits_the_time_limit_is_retried_then_failed(
        fault_pool: WorkerPool, stalling_server: tuple[str, type[_StallingHandler]]) -> None:  # noqa: F811
    url, handler = stalling_server
    # Limits on the chunks only: planning over HTTP on a loaded machine can take longer than 2 s.
    start_stages(fault_pool, process_env={"ATLASPIPE_TASK_SOFT_TIME_LIMIT": "2", "ATLASPIPE_TASK_TIME_LIMIT": "8"})
    submitter = start_submit(fault_pool, "--input", url, "--chunk-size", "1000000")
    run_id = submitted_run_id(submitter)
    wait_for(lambda: store().plan(run_id) or _ended(run_id), what="planning")
    assert store().plan(run_id) is not None, fault_pool.log("load")[-3000:]
    handler.stall.set()
    started = time.monotonic()
    code, _, err = finish(submitter, timeout=120)
    assert code == 1, err[-3000:]
    assert f"chunk 0 {url} [0, 20000): exceeded the task time limit on each of its 3 deliveries" in err, err
    assert "Traceback" not in err
    assert time.monotonic() - started < 60
    assert fault_pool.log("process").count("Soft time limit (2.0s) exceeded") == 3
    status = RunStatus.read(run_dir_in(fault_pool, run_id) / "status.json")
    assert status.state is RunState.FAILED and status.failures[0].source == url


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


def _planned_not_launched(pool: WorkerPool, inputs: Path) -> tuple[RunRequest, RunPlan]:
    """Stage workers, and a run of ``inputs`` submitted and planned here, none of its chunks queued."""
    from atlaspipe.config import AnalysisSettings
    from atlaspipe.model import new_run_id
    from atlaspipe.pipeline.lifecycle import Lifecycle, now_text

    start_stages(pool)
    request = RunRequest(run_id=new_run_id(), inputs=(str(inputs),), output_dir=str(pool.tmp / "outputs"),
                         created=now_text(), config=AnalysisSettings(chunk_size=CHUNK))
    lifecycle = Lifecycle(store(), "celery")
    lifecycle.submit(request)
    plan = lifecycle.plan(request.run_id, "test")
    assert plan is not None
    return request, plan


def _queue_chunks(request: RunRequest, plan: RunPlan, chunks: Sequence[Chunk]) -> None:
    """``chunks`` as a plain group: no chord, no callback."""
    from celery import group

    from atlaspipe.pipeline.celery.app import create_app
    from atlaspipe.pipeline.celery.canvas import PROCESS_TASK, chunk_task_id, task

    app = create_app(FAULT_BROKER_URL, BACKEND_URL)
    group(task(app, PROCESS_TASK, args=(request.run_id, c.to_jsonable(), plan.config.to_json_dict()),
               task_id=chunk_task_id(request.run_id, 0, c.chunk_id)) for c in chunks).apply_async()


def test_run_completes_without_the_chord_callback(fault_pool: WorkerPool, inputs: Path) -> None:  # noqa: F811
    """Celery can lose a chord's callback when a header task dies (celery#2911, #4207): publish the
    chunks as a plain group, with no callback at all; the last chunk stored completes the run."""
    request, plan = _planned_not_launched(fault_pool, inputs)
    records = store()
    _queue_chunks(request, plan, plan.chunks)
    wait_for(lambda: records.status(request.run_id).terminal, timeout=120, what="completion")
    assert records.status(request.run_id).state is RunState.SUCCEEDED
    assert_exact(request.run_dir, inputs)


def test_resume_relaunches_a_launch_cut_short_once_it_stalls(fault_pool: WorkerPool, inputs: Path) -> None:  # noqa: F811
    """A load worker that lost the backend while publishing a run's chunks leaves some never queued:
    the run progresses, then stops short. ``resume`` on a run still progressing follows it, and
    relaunches the missing chunks when it stalls, instead of following it forever."""
    request, plan = _planned_not_launched(fault_pool, inputs)
    records = store()
    assert len(plan.chunks) >= 4
    queued = plan.chunks[: len(plan.chunks) // 2]
    _queue_chunks(request, plan, queued)
    wait_for(lambda: len(records.chunk_results(request.run_id)) == len(queued), timeout=120, what="the queued half")
    resumed = run_submit(fault_pool, "resume", request.run_id, "--stall-timeout", "8", timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "still progressing; following it, and relaunching its missing chunks if it stalls" in resumed.stderr
    assert f"run {request.run_id} stalled: {len(plan.chunks) - len(queued)} chunk(s)" in resumed.stderr
    assert "resume sent to the load workers" in resumed.stderr
    assert_exact(request.run_dir, inputs)


def test_a_lost_chunk_result_is_reported_as_a_stall_and_resume_finishes(
        fault_pool: WorkerPool, inputs: Path) -> None:  # noqa: F811
    """A chunk whose stored result vanished (an operator's mistake, a backend that lost a key): nothing
    is queued or running for it, so the submitter says the run is stalled and names ``resume``."""
    start_stages(fault_pool)
    fault_pool.stop("aggregate")  # hold completion until the result is withdrawn
    submitter = start_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(CHUNK), "--stall-timeout", "3",
                             "--keep-records")
    run_id = submitted_run_id(submitter)
    records = store()
    wait_for(lambda: records.complete(run_id), timeout=120, what="every chunk stored")
    last = max(records.chunk_results(run_id))
    records.redis.hdel(f"atlaspipe:run:{run_id}:results", str(last))
    fault_pool.start("aggregate", "aggregate")
    assert submitter.stderr is not None
    os.set_blocking(submitter.stderr.fileno(), False)
    seen = [""]

    def stalled() -> bool:
        # A non-blocking text stream with nothing to read raises TypeError inside its decoder.
        with contextlib.suppress(TypeError):
            seen[0] += submitter.stderr.read() or ""  # type: ignore[union-attr]
        return f"finish it with: atlaspipe resume {run_id}" in seen[0]

    wait_for(stalled, timeout=60, interval=0.2, what="the stall note")
    os.killpg(submitter.pid, signal.SIGKILL)
    finish(submitter)
    resumed = run_submit(fault_pool, "resume", run_id, "--stall-timeout", "3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_exact(run_dir_in(fault_pool, run_id), inputs)
