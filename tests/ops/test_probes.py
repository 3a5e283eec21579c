"""The probe files a real worker writes: heartbeat and ready while it consumes, heartbeat kept while
it waits out a broker that is away, ready gone then, and both checked the way the deploy files check."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import WorkerPool
from tests.faultkit import fault_pool, wait_for  # noqa: F401 - a fixture
from tests.private_services import PrivateRabbitMQ, private_broker_url, private_rabbitmq  # noqa: F401

pytestmark = pytest.mark.integration


def fresh(path: Path, seconds: float) -> bool:
    """The shell test of the liveness probe: modified within ``seconds``."""
    found = subprocess.run(["find", str(path), "-newermt", f"-{int(seconds)} seconds"], capture_output=True,
                           text=True, check=False)
    return bool(found.stdout.strip())


def test_heartbeat_and_ready_follow_the_consumer(fault_pool: WorkerPool, private_rabbitmq: PrivateRabbitMQ,  # noqa: F811
                                                 private_broker_url: str) -> None:  # noqa: F811
    probes = fault_pool.tmp / "probes"
    fault_pool.env["ATLASPIPE_BROKER_URL"] = private_broker_url
    fault_pool.start("load", "load", extra_env={"ATLASPIPE_PROBE_DIR": str(probes)})
    wait_for((probes / "ready").exists, timeout=30, what="the ready file")
    assert fresh(probes / "heartbeat", 15)
    first = (probes / "heartbeat").stat().st_mtime
    wait_for(lambda: (probes / "heartbeat").stat().st_mtime > first, timeout=25, what="a second heartbeat")
    with private_rabbitmq.outage():
        wait_for(lambda: not (probes / "ready").exists(), timeout=60, what="ready removed while the broker is away")
        waiting_since = (probes / "heartbeat").stat().st_mtime
        # Waiting for the broker is not being stuck: the heartbeat goes on.
        wait_for(lambda: (probes / "heartbeat").stat().st_mtime > waiting_since, timeout=25,
                 what="a heartbeat during the outage")
    wait_for((probes / "ready").exists, timeout=90, what="ready again after the broker came back")
    fault_pool.stop("load")
    assert not (probes / "ready").exists()


def test_a_connected_consumer_whose_loop_stopped_turning_is_not_alive() -> None:
    from atlaspipe.ops.probes import STUCK_AFTER_SECONDS, _Pulse

    pulse = _Pulse()
    pulse.connected = True
    pulse.loop_turned = time.monotonic()
    assert pulse.alive()
    pulse.loop_turned = time.monotonic() - STUCK_AFTER_SECONDS - 1
    assert not pulse.alive()
    pulse.connected = False  # reconnecting to the broker: waiting, not stuck
    assert pulse.alive()
