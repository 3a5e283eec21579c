"""Shared fixtures: the real data in ../shared, and real Celery workers on RabbitMQ and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"


def _session_vhost() -> str:
    """A RabbitMQ vhost of this test session's own, so concurrent sessions never share queues.

    Needs rabbitmqctl (root on this machine); without it the default vhost is used.
    """
    name = f"atlaspipe-test-{os.getpid()}"
    try:
        for command in (["add_vhost", name], ["set_permissions", "-p", name, "guest", ".*", ".*", ".*"]):
            subprocess.run(["rabbitmqctl", "-q", *command], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return name


TEST_VHOST = "" if "ATLASPIPE_TEST_BROKER_URL" in os.environ else _session_vhost()
BROKER_URL = os.environ.get("ATLASPIPE_TEST_BROKER_URL", f"amqp://guest:guest@127.0.0.1:5672/{TEST_VHOST}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:  # noqa: ARG001 - pytest's hook
    if TEST_VHOST:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", TEST_VHOST], capture_output=True, timeout=60, check=False)
BACKEND_URL = os.environ.get("ATLASPIPE_TEST_RESULT_BACKEND", "redis://127.0.0.1:6379/7")


def shared_dir() -> Path:
    """The folder holding ``atlas-opendata/``: $ATLASPIPE_SHARED_DIR, by default ``../shared``."""
    return Path(os.environ.get("ATLASPIPE_SHARED_DIR", REPO.parent / "shared")).resolve()


def require_shared(relative: str) -> Path:
    """A file under the shared folder; skipped with the reason where absent, a failure in CI."""
    path = shared_dir() / relative
    if not path.exists():
        reason = f"{path} is absent (set ATLASPIPE_SHARED_DIR to the folder holding atlas-opendata/)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _unavailable(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is not reachable; .ci/run must start it")
    pytest.skip(f"{what} is not reachable")


def services_up() -> None:
    """Skip (outside CI) or fail (in CI) unless RabbitMQ and Redis answer."""
    import kombu
    import redis

    try:
        redis.Redis.from_url(BACKEND_URL, socket_connect_timeout=2).ping()
    except redis.RedisError:
        _unavailable("Redis at " + BACKEND_URL)
    try:
        with kombu.Connection(BROKER_URL, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception:
        _unavailable("RabbitMQ at 127.0.0.1:5672")


@dataclass
class WorkerPool:
    """Real ``celery worker`` subprocesses, one per stage unless told otherwise."""

    tmp: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def start(self, name: str, queues: str, concurrency: int = 1, extra_env: dict[str, str] | None = None,
              wait: bool = True, extra_args: tuple[str, ...] = ()) -> str:
        node = f"{name}-{self.tag}@%h"
        log = (self.tmp / f"worker-{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "atlaspipe", "worker", "-Q", queues, "-n", node,
             "-c", str(concurrency), "--pool", "prefork", "--loglevel", "INFO", "--without-gossip",
             "--without-mingle", *extra_args],
            cwd=self.tmp, env={**self.env, **(extra_env or {})}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        hostname = node.replace("%h", os.uname().nodename)
        if wait:
            self.wait_ready([hostname])
        return hostname

    def wait_ready(self, hostnames: list[str], timeout: float = 60.0) -> None:
        from atlaspipe.pipeline.celery.app import create_app

        app = create_app(self.env.get("ATLASPIPE_BROKER_URL", BROKER_URL), self.env["ATLASPIPE_RESULT_BACKEND"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = app.control.ping(destination=hostnames, timeout=1.0)
            answered = {name for reply in replies for name in reply}
            if set(hostnames) <= answered:
                return
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"worker {name} exited: {self.log(name)[-3000:]}")
        raise RuntimeError(f"workers {hostnames} not ready after {timeout} s")

    def log(self, name: str) -> str:
        return (self.tmp / f"worker-{name}.log").read_text(errors="replace")

    def pids(self, name: str) -> list[int]:
        """The main process of a worker and its pool children."""
        main = self.processes[name].pid
        found = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True, check=False)
        children = found.stdout.split()
        return [main, *map(int, children)]

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        process = self.processes.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, sig)
            _reap(process, timeout)

    def stop_all(self, timeout: float = 30.0) -> None:
        # Every worker is told first, so their warm shutdowns overlap instead of adding up.
        stopping = [p for p in self.processes.values() if p.poll() is None]
        for process in stopping:
            os.killpg(process.pid, signal.SIGTERM)
        for process in stopping:
            _reap(process, timeout)
        self.processes.clear()


def _reap(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for a stopping worker; one still there after ``timeout`` is killed."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def worker_environment(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ATLASPIPE_BROKER_URL": BROKER_URL, "ATLASPIPE_RESULT_BACKEND": BACKEND_URL,
        "ATLASPIPE_OUTPUT_DIR": str(tmp / "outputs"), "ATLASPIPE_METRICS_PORT": "0",
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    return env


def purge_queues() -> None:
    """Drop messages left in the stage queues by an earlier, interrupted session."""
    from atlaspipe.pipeline.celery.app import create_app

    create_app(BROKER_URL, BACKEND_URL).control.purge()


@pytest.fixture
def worker_pool(tmp_path: Path) -> Iterator[WorkerPool]:
    services_up()
    purge_queues()
    pool = WorkerPool(tmp=tmp_path, env=worker_environment(tmp_path))
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
def stage_workers(worker_pool: WorkerPool) -> WorkerPool:
    """One real worker per stage queue: load, process, aggregate, plot."""
    names = [worker_pool.start(stage, stage, wait=False) for stage in ("load", "process", "aggregate", "plot")]
    worker_pool.wait_ready(names)
    return worker_pool
