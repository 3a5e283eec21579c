"""The cluster exporter behind ``atlaspipe exporter``: what no single worker can report about itself.

Each worker serves its own task counters (``atlaspipe.ops.metrics``). What belongs to the cluster is
read here at every scrape, so a value is never older than the scrape:

- ``celery_queue_length`` and ``celery_queue_consumers`` per stage queue, from an AMQP passive
  ``queue_declare`` (the broker's own count; no management plugin),
- ``celery_worker_up`` per worker hostname, from a broadcast ``ping``: a worker that answered within
  ``forget_seconds`` and no longer does is reported as 0 until it is forgotten,
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
from atlaspipe.pipeline.celery.client import STALL_SECONDS
from atlaspipe.pipeline.celery.records import RunRecords

log = logging.getLogger(__name__)

DEFAULT_PORT = 9809
"""Next to the workers' 9808, which is also celery-exporter's default."""
RECENT_RUNS = 200
"""Runs read per scrape (newest first): older runs are terminal or long stalled."""
FORGET_SECONDS = 600.0


@dataclass(frozen=True)
class QueueStats:
    name: str
    messages: int
    consumers: int


@dataclass(frozen=True)
class RunCounts:
    by_state: dict[RunState, int]
    stalled: int


def run_stalled(state: RunState, idle_seconds: float, in_flight: int, queued: int,
                stall_seconds: float = STALL_SECONDS) -> bool:
    """A running run with no progress for ``stall_seconds``, no chunk running and none queued:
    nothing will move it on until ``resume``."""
    return state is RunState.RUNNING and idle_seconds >= stall_seconds and in_flight == 0 and queued == 0


def _timestamp(text: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


@dataclass(eq=False)  # registries key collectors by identity
class ClusterCollector:
    """A prometheus-client collector of the queues, workers and runs of one atlaspipe deployment."""

    app: Celery
    records: RunRecords
    queues: Sequence[str]
    stall_seconds: float = STALL_SECONDS
    ping_timeout: float = 1.0
    forget_seconds: float = FORGET_SECONDS
    last_seen: dict[str, float] = field(default_factory=dict)
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

    def workers_up(self, now: float) -> dict[str, bool]:
        replies = self.app.control.ping(timeout=self.ping_timeout) or []
        answered = {name for reply in replies for name in reply}
        for name in answered:
            self.last_seen[name] = now
        for name, seen in list(self.last_seen.items()):
            if now - seen > self.forget_seconds:
                del self.last_seen[name]
        return {name: name in answered for name in sorted(self.last_seen)}

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
            workers: dict[str, bool] = {}
            try:
                stats = self.queue_stats()
                workers = self.workers_up(now)
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
        up = GaugeMetricFamily("celery_worker_up", "1 if the worker answered the last ping, 0 if it stopped "
                               "answering (celery-exporter compatible)", labels=["hostname"])
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
