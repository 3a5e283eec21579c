"""The cluster exporter behind ``atlaspipe exporter``: what no single worker can report about itself.

Each worker serves its own task counters (``atlaspipe.ops.metrics``). What belongs to the cluster is
read here at every scrape, so a value is never older than the scrape:

- ``celery_queue_length`` and ``celery_queue_consumers`` per stage queue, from an AMQP passive
  ``queue_declare`` (the broker's own count; no management plugin),
- ``celery_worker_up`` per worker hostname, from the workers' own events (``WorkerWatch``, as
  celery-exporter and Flower do): 1 while heartbeats arrive, 0 once they stop without a goodbye (a
  crashed or frozen worker) until ``forget_seconds`` later; a worker that shuts down cleanly sends
  ``worker-offline`` and its series goes at once, so scaling down is not an outage,
- ``atlaspipe_runs`` per state and ``atlaspipe_runs_stalled`` over the recent run records.

Every label is bounded: queue names come from the configuration, states from ``RunState``, and
hostnames are forgotten ``forget_seconds`` after their last answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from celery import Celery

from atlaspipe.errors import AtlaspipeError
from atlaspipe.model import RunState
from atlaspipe.pipeline.celery.records import RunRecords
from atlaspipe.pipeline.lifecycle import STALL_SECONDS, run_stalled

log = logging.getLogger(__name__)

DEFAULT_PORT = 9809
"""Next to the workers' 9808, which is also celery-exporter's default."""
RECENT_RUNS = 200
"""Runs read per scrape (newest first): older runs are terminal or long stalled."""
FORGET_SECONDS = 600.0
"""A worker silent this long is forgotten (its series goes): celery-exporter's default purge delay."""
HEARTBEAT_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class QueueStats:
    name: str
    messages: int
    consumers: int


@dataclass(frozen=True)
class RunCounts:
    by_state: dict[RunState, int]
    stalled: int


def _timestamp(text: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


class WorkerWatch:
    """Which workers are alive, from their ``worker-online`` / ``worker-heartbeat`` / ``worker-offline``
    events (celeryconfig sends them every 2 s), read by a background thread that reconnects on its own."""

    def __init__(self, app: Celery, forget_seconds: float = FORGET_SECONDS) -> None:
        self.app = app
        self.forget_seconds = forget_seconds
        self.connected = threading.Event()
        self._heard: dict[str, tuple[float, float]] = {}  # hostname -> (last event, heartbeat expiry)
        self._lock = threading.Lock()

    def start(self) -> WorkerWatch:
        threading.Thread(target=self._listen, name="atlaspipe-worker-events", daemon=True).start()
        return self

    def _listen(self) -> None:
        handlers = {"worker-online": self._alive, "worker-heartbeat": self._alive, "worker-offline": self._gone}
        while True:
            try:
                with self.app.connection_for_read() as connection:
                    receiver = self.app.events.Receiver(connection, handlers=handlers, routing_key="worker.#")
                    self.connected.set()
                    # wakeup: every worker answers with a heartbeat now, not within the next 2 s.
                    receiver.capture(limit=None, timeout=None, wakeup=True)
            except Exception as exc:  # whatever the transport raises; the broker may come back
                log.warning("worker events: %s; reconnecting in 5 s", exc)
            self.connected.clear()
            time.sleep(5)

    def _alive(self, event: dict[str, Any]) -> None:
        # A worker is late after missing a few heartbeats (celery's own rule: twice the interval).
        expiry = max(HEARTBEAT_GRACE_SECONDS, 3 * float(event.get("freq") or 2.0))
        with self._lock:
            self._heard[str(event["hostname"])] = (time.time(), expiry)

    def _gone(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._heard.pop(str(event["hostname"]), None)

    def up(self, now: float) -> dict[str, bool]:
        with self._lock:
            for name, (last, _) in list(self._heard.items()):
                if now - last > self.forget_seconds:
                    del self._heard[name]
            return {name: now - last <= expiry for name, (last, expiry) in sorted(self._heard.items())}


@dataclass(eq=False)  # registries key collectors by identity
class ClusterCollector:
    """A prometheus-client collector of the queues, workers and runs of one atlaspipe deployment."""

    app: Celery
    records: RunRecords
    queues: Sequence[str]
    workers: WorkerWatch | None = None
    stall_seconds: float = STALL_SECONDS
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def queue_stats(self) -> list[QueueStats]:
        """Length and consumers of each queue; a queue not declared yet holds nothing and has no consumer."""
        stats = []
        with self.app.connection_for_read() as connection:
            channel = connection.channel()
            try:
                for name in self.queues:
                    try:
                        declared = channel.queue_declare(queue=name, passive=True)
                    except connection.channel_errors:
                        # NOT_FOUND closes the channel: the next queue needs a fresh one.
                        channel = connection.channel()
                        stats.append(QueueStats(name, 0, 0))
                        continue
                    stats.append(QueueStats(name, int(declared.message_count), int(declared.consumer_count)))
            finally:
                channel.close()
        return stats

    def run_counts(self, queued: dict[str, int], now: float) -> RunCounts:
        by_state = dict.fromkeys(RunState, 0)
        stalled = 0
        for run_id in self.records.run_ids(limit=RECENT_RUNS):
            try:
                status = self.records.status(run_id)
            except AtlaspipeError:
                continue  # expired or removed between the index and its record
            by_state[status.state] += 1
            # Without the broker's count of queued chunks a stall cannot be told from a backlog.
            if status.state is RunState.RUNNING and "process" in queued:
                progress = max(self.records.last_chunk_at(run_id), _timestamp(status.updated))
                if run_stalled(status.state, now - progress, self.records.in_flight(run_id),
                               queued["process"], self.stall_seconds):
                    stalled += 1
        return RunCounts(by_state, stalled)

    def describe(self) -> Iterator[Any]:
        return iter(())  # unchecked registration: collect() talks to the broker, not at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            now = time.time()
            broker_up = backend_up = 1.0
            stats: list[QueueStats] = []
            workers = self.workers.up(now) if self.workers is not None else {}
            try:
                stats = self.queue_stats()
            except Exception as exc:  # whatever the transport raises: the broker is unreachable
                log.warning("broker not readable: %s", exc)
                broker_up = 0.0
            counts: RunCounts | None = None
            try:
                counts = self.run_counts({s.name: s.messages for s in stats}, now)
            except Exception as exc:  # redis errors, or records the exporter cannot read
                log.warning("run records not readable: %s", exc)
                backend_up = 0.0

        length = GaugeMetricFamily("celery_queue_length", "Messages waiting in the queue (celery-exporter compatible)",
                                   labels=["queue_name"])
        # celery-exporter calls this celery_active_consumer_count; promtool's lint refuses a gauge
        # ending in _count (it reads as part of a histogram), so the name follows celery_queue_length.
        consumers = GaugeMetricFamily("celery_queue_consumers", "Consumers (worker channels) of the queue",
                                      labels=["queue_name"])
        for s in stats:
            length.add_metric([s.name], s.messages)
            consumers.add_metric([s.name], s.consumers)
        up = GaugeMetricFamily("celery_worker_up", "1 while the worker's heartbeats arrive, 0 once they stopped "
                               "without a clean shutdown (celery-exporter compatible)", labels=["hostname"])
        for name, alive in workers.items():
            up.add_metric([name], 1.0 if alive else 0.0)
        yield from (length, consumers, up)

        broker = GaugeMetricFamily("atlaspipe_broker_up", "1 if the exporter could read the broker")
        broker.add_metric([], broker_up)
        backend = GaugeMetricFamily("atlaspipe_backend_up", "1 if the exporter could read the run records")
        backend.add_metric([], backend_up)
        yield from (broker, backend)
        if counts is not None:
            runs = GaugeMetricFamily("atlaspipe_runs", f"Runs per state among the {RECENT_RUNS} newest",
                                     labels=["state"])
            for state, n in counts.by_state.items():
                runs.add_metric([state.value], n)
            stalled = GaugeMetricFamily(
                "atlaspipe_runs_stalled",
                f"Running runs without progress for {self.stall_seconds:g} s, no chunk running and none queued")
            stalled.add_metric([], counts.stalled)
            yield from (runs, stalled)


def serve(collector: ClusterCollector, port: int, address: str) -> Any:
    """Serve ``collector`` on ``address:port`` from a background thread; returns the HTTP server."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return server


def configured_queues(app: Celery) -> list[str]:
    return [queue.name for queue in app.conf.task_queues or ()]
