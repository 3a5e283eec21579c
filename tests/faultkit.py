"""Helpers of the reliability tests: an isolated RabbitMQ vhost, real workers on it, service restarts,
generated inputs and the in-process reference results."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import tests.conftest as conftest
from tests.conftest import BACKEND_URL, IN_CI, WorkerPool, services_up, worker_environment

VHOST = "atlaspipe-faults"
FAULT_BROKER_URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
"""Workers of these tests listen on their own vhost: other sessions' workers never take their tasks."""


def rabbitmqctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if shutil.which("rabbitmqctl") is None:
        if IN_CI:
            pytest.fail("rabbitmqctl is not installed")
        pytest.skip("rabbitmqctl is not installed")
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout)


@functools.cache
def ensure_vhost() -> None:
    rabbitmqctl("add_vhost", VHOST)
    done = rabbitmqctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")
    assert done.returncode == 0, done.stderr


def purge(broker_url: str = FAULT_BROKER_URL) -> None:
    from atlaspipe.taskapp import create_app

    app = create_app(broker_url, BACKEND_URL)
    with app.connection() as connection:
        app.control.purge(connection=connection)


@pytest.fixture
def fault_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerPool]:
    """Real workers on the isolated vhost; the conftest helpers ping them there."""
    services_up()
    ensure_vhost()
    monkeypatch.setattr(conftest, "BROKER_URL", FAULT_BROKER_URL)
    purge()
    env = worker_environment(tmp_path)
    env["ATLASPIPE_BROKER_URL"] = FAULT_BROKER_URL
    pool = WorkerPool(tmp=tmp_path, env=env)
    try:
        yield pool
    finally:
        pool.stop_all()
        ensure_services_running()


def start_stages(pool: WorkerPool, process_workers: int = 1, extra_env: dict[str, str] | None = None) -> list[str]:
    names = [pool.start(stage, stage, wait=False, extra_env=extra_env) for stage in ("load", "aggregate", "plot")]
    names += [pool.start(f"process{i}" if i else "process", "process", wait=False, extra_env=extra_env)
              for i in range(process_workers)]
    pool.wait_ready(names)
    return names


def submit_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "atlaspipe.submit", *args]


def run_submit(pool: WorkerPool, *args: str, timeout: float = 300,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(submit_args(*args, "--quiet") if args and args[0] not in ("status", "list")
                          else submit_args(*args),
                          env=env or pool.env, cwd=pool.tmp, capture_output=True, text=True, timeout=timeout)


def start_submit(pool: WorkerPool, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(submit_args(*args, "--quiet"), env=pool.env, cwd=pool.tmp, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


_first_lines: dict[int, str] = {}


def submitted_run_id(process: subprocess.Popen[str]) -> str:
    """The run id a running submitter printed first (the test database is shared with other runs)."""
    assert process.stderr is not None
    line = process.stderr.readline()
    _first_lines[process.pid] = line
    return run_id_from(line)


def finish(process: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"submitter still running after {timeout} s:\n{err[-3000:]}") from None
    return process.returncode, out, _first_lines.pop(process.pid, "") + err


def run_id_from(text: str) -> str:
    found = re.search(r"run (\d{8}-\d{6}-[0-9a-f]{6}) submitted", text)
    assert found, f"no run id in:\n{text}"
    return found.group(1)


def wait_for(predicate: Callable[[], Any], timeout: float = 120, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def successes(pool: WorkerPool, name: str) -> int:
    """Chunk tasks a worker finished, from its log."""
    return len(re.findall(r"process_chunk\[[^\]]+\] succeeded", pool.log(name)))


def ensure_services_running() -> None:
    """Whatever a test did, leave RabbitMQ and Redis up."""
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2).ping()
    except redis.RedisError:
        start_redis()
    if shutil.which("rabbitmqctl") is not None:
        check = subprocess.run(["rabbitmq-diagnostics", "-q", "check_running"], capture_output=True, timeout=120)
        if check.returncode != 0:
            subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, timeout=120)
            subprocess.run(["rabbitmqctl", "await_startup"], capture_output=True, timeout=120)


def start_redis() -> None:
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379",
                    "--save", "", "--appendonly", "no"], check=True, capture_output=True)
    wait_for(_redis_up, timeout=20, what="redis to start")


def _redis_up() -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def restart_redis() -> None:
    """Restart Redis, losing everything it held (it keeps nothing on disk here)."""
    try:
        subprocess.run(["redis-cli", "shutdown", "nosave"], capture_output=True, timeout=30)
        wait_for(lambda: not _redis_up(), timeout=20, what="redis to stop")
    finally:
        start_redis()


def restart_broker(down_seconds: float = 2.0) -> None:
    """``rabbitmqctl stop_app``, a pause, ``start_app``; the app is started again whatever happens."""
    try:
        stopped = rabbitmqctl("stop_app")
        assert stopped.returncode == 0, stopped.stderr
        time.sleep(down_seconds)
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
        # This process's pooled broker connections died with the broker; later tests need fresh ones.
        from kombu import pools

        pools.reset()


# --- inputs -----------------------------------------------------------------------------------------

_GENERATED = Path(os.environ.get("ATLASPIPE_TEST_GENERATED", "/tmp/atlaspipe-test-generated"))
SAMPLE_FILES = {
    "ggH125_ZZ4lep": "MC/mc_345060.ggH125_ZZ4lep.4lep.root", "VBFH125_ZZ4lep": "MC/mc_344235.VBFH125_ZZ4lep.4lep.root",
    "llll": "MC/mc_363490.llll.4lep.root", "data_A": "Data/data_A.4lep.root",
}


def generated_file(events: int) -> Path:
    """One generated ggH file of ``events`` events, made once and kept for later sessions."""
    from atlaspipe.generate import generate_release

    folder = _GENERATED / f"ggH-{events}"
    path = folder / SAMPLE_FILES["ggH125_ZZ4lep"]
    if not path.exists():
        scratch = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(scratch, ignore_errors=True)
        generate_release("2020", scratch, samples=["ggH125_ZZ4lep"], with_data=False, seed=11,
                         events_per_sample_override={"ggH125_ZZ4lep": events})
        shutil.rmtree(folder, ignore_errors=True)
        scratch.rename(folder)
    return path


def make_inputs(folder: Path, events: int, samples: tuple[str, ...] = tuple(SAMPLE_FILES)) -> Path:
    """A folder of inputs, one file per sample, each a copy of the same generated events
    (data files read the subset of branches data has)."""
    source = generated_file(events)
    for sample in samples:
        target = folder / SAMPLE_FILES[sample]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return folder


_reference_cache: dict[tuple[str, int], dict[str, Any]] = {}


def reference_results(inputs: Path, chunk_size: int) -> dict[str, Any]:
    """``results.json``'s numbers for ``inputs`` from the in-process executor (no broker)."""
    from atlaspipe.config import analysis_config
    from atlaspipe.planning import new_run_id, plan_run, resolve_inputs
    from atlaspipe.processing import aggregate, build_results
    from atlaspipe.runner import execute_plan

    key = (str(inputs), chunk_size)
    if key not in _reference_cache:
        release, files = resolve_inputs(None, [str(inputs)])
        plan = plan_run(new_run_id(), analysis_config(release=release, chunk_size=chunk_size), files)
        _reference_cache[key] = build_results(aggregate(plan, execute_plan(plan)), plan)
    return _reference_cache[key]


def histograms(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"data": results["data"]["histogram"], "data_channels": results["data"]["channels"],
                           "data_read": results["data"]["events_read"]}
    for name, sample in results["samples"].items():
        out[name] = (sample["histogram"], sample["sumw2"], sample["channels"], sample["events_selected"],
                     sample["events_read"])
    return out


def results_of(run_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((run_dir / "results.json").read_text())
    return loaded


def run_dir_in(pool: WorkerPool, run_id: str) -> Path:
    return pool.tmp / "outputs" / run_id
