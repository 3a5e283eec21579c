"""Probe files a worker writes about itself, for container liveness and readiness checks.

``$ATLASPIPE_PROBE_DIR/heartbeat`` (default ``/tmp/atlaspipe-probe``) is touched every
``HEARTBEAT_SECONDS`` while the worker's consumer loop turns, and also while the worker waits for a
broker that is away: a liveness probe (``find heartbeat -newermt -60sec``) then restarts a worker
whose loop is stuck, never one that is only waiting out a RabbitMQ restart. ``ready`` exists only
while the consumer is connected and consuming, for the readiness probe.

A probe reads two files instead of running ``celery inspect ping``, which broadcasts to every worker
(0.45 CPU-s per probe here, and O(N²) across a deployment).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from celery import bootsteps

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
STUCK_AFTER_SECONDS = 30.0
"""A consumer loop that has not turned for this long is stuck: the heartbeat stops."""


def probe_dir() -> Path:
    return Path(os.environ.get("ATLASPIPE_PROBE_DIR", "/tmp/atlaspipe-probe"))


class _Pulse:
    """What the heartbeat thread knows of the consumer: connected or not, and when its loop last turned."""

    def __init__(self) -> None:
        self.connected = False
        self.loop_turned = time.monotonic()
        self.thread: threading.Thread | None = None

    def alive(self) -> bool:
        return not self.connected or time.monotonic() - self.loop_turned < STUCK_AFTER_SECONDS


_pulse = _Pulse()


def _touch(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError as exc:
        log.warning("cannot write the probe file %s: %s", path, exc)


def _beat() -> None:
    heartbeat = probe_dir() / "heartbeat"
    while True:
        if _pulse.alive():
            _touch(heartbeat)
        time.sleep(HEARTBEAT_SECONDS)


class ProbeFiles(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no type information
    """A consumer bootstep: started when the consumer connects, stopped when it loses the broker."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, _consumer: Any, **_options: Any) -> None:
        self.timer_ref: Any = None

    def start(self, consumer: Any) -> None:
        _pulse.connected = True
        _pulse.loop_turned = time.monotonic()
        # The consumer's own timer marks each turn of its loop; a loop that stops turning stops it.
        self.timer_ref = consumer.timer.call_repeatedly(HEARTBEAT_SECONDS / 2, _loop_turned, priority=10)
        if _pulse.thread is None:
            _pulse.thread = threading.Thread(target=_beat, name="atlaspipe-heartbeat", daemon=True)
            _pulse.thread.start()
        _touch(probe_dir() / "heartbeat")
        _touch(probe_dir() / "ready")

    def stop(self, _consumer: Any) -> None:
        _pulse.connected = False
        with contextlib.suppress(OSError):
            (probe_dir() / "ready").unlink()
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def shutdown(self, consumer: Any) -> None:
        self.stop(consumer)


def _loop_turned() -> None:
    _pulse.loop_turned = time.monotonic()
