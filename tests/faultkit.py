"""Helpers of the reliability tests: an isolated RabbitMQ vhost, real workers on it, service restarts,
generated inputs and the in-process reference results."""

from __future__ import annotations

import atexit
import functools
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

from atlaspipe.model import RunResults
from tests import conftest, runs
from tests.conftest import BACKEND_URL, IN_CI, WorkerPool, services_up, worker_environment
from tests.runs import histograms  # noqa: F401 - re-exported for the fault tests

VHOST = f"atlaspipe-faults-{os.getpid()}"
FAULT_BROKER_URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
"""Workers of these tests listen on a vhost of this session's own: other sessions' workers (another
checkout's tests running at the same time) never take their tasks."""


def rabbitmqctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if shutil.which("rabbitmqctl") is None:
        if IN_CI:
            pytest.fail("rabbitmqctl is not installed")
        pytest.skip("rabbitmqctl is not installed")
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout, check=False)


@functools.cache
def ensure_vhost() -> None:
    rabbitmqctl("add_vhost", VHOST)
    done = rabbitmqctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")
    assert done.returncode == 0, done.stderr
    atexit.register(lambda: subprocess.run(["rabbitmqctl", "-q", "delete_vhost", VHOST], capture_output=True,
                                           timeout=60, check=False))


def purge(broker_url: str = FAULT_BROKER_URL) -> None:
    from atlaspipe.pipeline.celery.app import create_app

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


def start_stages(pool: WorkerPool, process_workers: int = 1, extra_env: dict[str, str] | None = None,
                 process_env: dict[str, str] | None = None) -> list[str]:
    """Workers of every stage; ``process_env`` is added to the process workers' environment only."""
    names = [pool.start(stage, stage, wait=False, extra_env=extra_env) for stage in ("load", "aggregate", "plot")]
    names += [pool.start(f"process{i}" if i else "process", "process", wait=False,
                         extra_env={**(extra_env or {}), **(process_env or {})})
              for i in range(process_workers)]
    pool.wait_ready(names)
    return names


def submit_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "atlaspipe.cli.submit", *args]


def run_submit(pool: WorkerPool, *args: str, timeout: float = 300,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(submit_args(*args, "--quiet") if args and args[0] not in ("status", "list", "cancel", "clean")
                          else submit_args(*args),
                          env=env or pool.env, cwd=pool.tmp, capture_output=True, text=True, timeout=timeout,
                          check=False)


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


# --- inputs -----------------------------------------------------------------------------------------

_GENERATED = Path(os.environ.get("ATLASPIPE_TEST_GENERATED", "/tmp/atlaspipe-test-generated"))
SAMPLE_FILES = {
    "ggH125_ZZ4lep": "MC/mc_345060.ggH125_ZZ4lep.4lep.root", "VBFH125_ZZ4lep": "MC/mc_344235.VBFH125_ZZ4lep.4lep.root",
    "llll": "MC/mc_363490.llll.4lep.root", "data_A": "Data/data_A.4lep.root",
}


def generated_file(events: int) -> Path:
    """One generated ggH file of ``events`` events, made once and kept for later sessions."""
    from atlaspipe.generate.events import generate_release

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


def reference_results(inputs: Path, chunk_size: int) -> RunResults:
    """``results.json``'s numbers for ``inputs`` from the in-process stage functions (no broker)."""
    return runs.reference_results([inputs], chunk_size)


def results_of(run_dir: Path) -> RunResults:
    return RunResults.read(run_dir / "results.json")


def run_dir_in(pool: WorkerPool, run_id: str) -> Path:
    return pool.tmp / "outputs" / run_id
