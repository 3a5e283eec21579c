"""Security defaults on real workers: pickled messages are refused, credentials never leak."""

from __future__ import annotations

import pickle
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Producer

from tests.conftest import BACKEND_URL, WorkerPool
from tests.faultkit import FAULT_BROKER_URL, VHOST, fault_pool, rabbitmqctl, start_stages, wait_for  # noqa: F401

pytestmark = pytest.mark.integration


class _Payload:
    """Unpickling this creates ``marker``: proof that pickled content was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_pickled_message_is_refused_and_logged(fault_pool: WorkerPool) -> None:  # noqa: F811
    start_stages(fault_pool)
    marker = fault_pool.tmp / "pickle-was-executed"
    body = pickle.dumps(((_Payload(marker),), {}, {"callbacks": None, "errbacks": None, "chain": None,
                                                   "chord": None}))
    task_id = str(uuid.uuid4())
    with Connection(FAULT_BROKER_URL) as connection:
        producer = Producer(connection.channel(), exchange=Exchange("atlaspipe", type="direct"))
        producer.publish(body, routing_key="process", content_type="application/x-python-serialize",
                         content_encoding="binary", serializer=None,
                         headers={"lang": "py", "task": "atlaspipe.process_chunk", "id": task_id,
                                  "root_id": task_id, "parent_id": None, "group": None, "retries": 0,
                                  "argsrepr": "()", "kwargsrepr": "{}", "origin": "test"})
    wait_for(lambda: "untrusted content" in fault_pool.log("process") or "ContentDisallowed"
             in fault_pool.log("process"), timeout=30, what="the refusal in the worker log")
    assert not marker.exists()
    assert "pickle" in fault_pool.log("process")
    # The worker carries on with ordinary work.
    completed = subprocess.run([sys.executable, "-m", "atlaspipe.cli.submit", "--quiet", "--chunk-size", "5000"],
                               env=fault_pool.env, cwd=fault_pool.tmp, capture_output=True, text=True, timeout=300,
                               check=False)
    assert completed.returncode == 0, completed.stderr


def test_credentials_never_appear_in_logs_or_outputs(fault_pool: WorkerPool) -> None:  # noqa: F811
    user = f"atlaspipe-secret-{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(18)
    assert rabbitmqctl("add_user", user, password).returncode == 0
    try:
        assert rabbitmqctl("set_permissions", "-p", VHOST, user, ".*", ".*", ".*").returncode == 0
        broker = f"amqp://{user}:{password}@127.0.0.1:5672/{VHOST}"
        secret_file = fault_pool.tmp / "broker-url"
        secret_file.write_text(broker + "\n")
        # Workers read the URL from a secret file; the submitter gets it on the command line.
        fault_pool.env.pop("ATLASPIPE_BROKER_URL")
        start_stages(fault_pool, extra_env={"ATLASPIPE_BROKER_URL_FILE": str(secret_file)})
        completed = subprocess.run(
            [sys.executable, "-m", "atlaspipe.cli.submit", "--chunk-size", "5000", "--broker", broker,
             "--backend", BACKEND_URL],
            env=fault_pool.env, cwd=fault_pool.tmp, capture_output=True, text=True, timeout=300, check=False)
        assert completed.returncode == 0, completed.stderr
        failing = subprocess.run(
            [sys.executable, "-m", "atlaspipe.cli.submit", "--broker", broker.replace("5672", "1")],
            env=fault_pool.env, cwd=fault_pool.tmp, capture_output=True, text=True, timeout=60, check=False)
        assert failing.returncode != 0 and "***" in failing.stderr
        captured = completed.stdout + completed.stderr + failing.stdout + failing.stderr
        assert password not in captured
        for path in fault_pool.tmp.rglob("*"):
            if path.is_file() and path != secret_file:
                assert password.encode() not in path.read_bytes(), f"password found in {path}"
        import redis

        client = redis.Redis.from_url(BACKEND_URL)
        for key in client.scan_iter(match="atlaspipe:run:*:meta"):
            assert password.encode() not in (client.hget(key, "request") or b"")
    finally:
        rabbitmqctl("delete_user", user)
