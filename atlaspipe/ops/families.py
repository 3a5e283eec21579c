"""Every metric family atlaspipe serves, where it comes from and what it means: the list that
docs/observability.md, the Grafana dashboard and the alert rules are checked against.

The integration test (tests/ops/test_metrics.py) scrapes real workers and a real ``atlaspipe exporter``
and requires exactly these families, so this list cannot drift from what is served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Source = Literal["worker", "exporter"]
Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class Family:
    name: str
    """As queried: counters with ``_total``; histograms by their base name (``_bucket``, ``_sum``, ``_count``)."""
    kind: Kind
    labels: tuple[str, ...]
    source: Source
    meaning: str


_TASK = ("stage", "task")
_CELERY = ("name", "hostname")
_WORKER = ("worker", "stage")

FAMILIES: tuple[Family, ...] = (
    # celery-exporter compatible, from each worker's signals
    *(Family(f"celery_task_{event}_total", "counter", _CELERY, "worker", meaning) for event, meaning in (
        ("sent", "tasks this worker published (e.g. the load worker sending the chunks)"),
        ("received", "tasks this worker took off its queue"),
        ("started", "tasks this worker started"),
        ("succeeded", "tasks that returned"),
        ("failed", "tasks that raised"),
        ("retried", "tasks sent back for a retry"),
        ("revoked", "tasks revoked (cancelled runs) before or while running"),
    )),
    Family("celery_task_runtime", "histogram", _CELERY, "worker", "task run time in seconds"),
    Family("celery_worker_tasks_active", "gauge", ("hostname",), "worker", "tasks the worker is running now"),
    # celery-exporter compatible, from atlaspipe exporter
    Family("celery_worker_up", "gauge", ("hostname",), "exporter",
           "1 while the worker's heartbeat events arrive; 0 once they stop without a clean shutdown"),
    Family("celery_queue_length", "gauge", ("queue_name",), "exporter", "messages waiting in the stage queue"),
    Family("celery_queue_consumers", "gauge", ("queue_name",), "exporter",
           "consumers of the stage queue (celery-exporter: celery_active_consumer_count)"),
    # atlaspipe's own, per stage, from each worker
    Family("atlaspipe_tasks_started_total", "counter", _TASK, "worker", "tasks started, per stage and task"),
    Family("atlaspipe_tasks_succeeded_total", "counter", _TASK, "worker", "tasks that returned"),
    Family("atlaspipe_tasks_failed_total", "counter", _TASK, "worker", "tasks that raised"),
    Family("atlaspipe_tasks_retried_total", "counter", _TASK, "worker", "tasks sent back for a retry"),
    Family("atlaspipe_tasks_in_progress", "gauge", ("stage",), "worker", "tasks running now"),
    Family("atlaspipe_task_duration_seconds", "histogram", ("stage",), "worker", "task run time"),
    Family("atlaspipe_task_queue_wait_seconds", "histogram", ("stage",), "worker",
           "time from publishing a task to its start on a worker"),
    Family("atlaspipe_events_read_total", "counter", ("sample",), "worker", "events read by process tasks"),
    Family("atlaspipe_events_selected_total", "counter", ("sample",), "worker", "events passing the selection"),
    Family("atlaspipe_bytes_read_total", "counter", ("sample",), "worker", "compressed bytes read from the inputs"),
    Family("atlaspipe_worker_cpu_seconds_total", "counter", _WORKER, "worker",
           "CPU seconds of the worker, pool children included (live and exited)"),
    Family("atlaspipe_worker_resident_memory_bytes", "gauge", _WORKER, "worker",
           "resident memory of the worker's main process and pool children"),
    Family("atlaspipe_worker_pool_processes", "gauge", _WORKER, "worker", "live pool child processes"),
    Family("atlaspipe_worker_process_cpu_seconds_total", "counter", (*_WORKER, "role"), "worker",
           "CPU seconds of the main process (role=main) and of the pool (role=pool)"),
    Family("atlaspipe_worker_process_resident_memory_bytes", "gauge", (*_WORKER, "role"), "worker",
           "resident memory of the main process and of the pool"),
    # atlaspipe's own, from atlaspipe exporter
    Family("atlaspipe_runs", "gauge", ("state",), "exporter", "runs per state among the 200 newest"),
    Family("atlaspipe_runs_stalled", "gauge", (), "exporter",
           "running runs without progress for 60 s, no chunk running and none queued (resume them)"),
    Family("atlaspipe_broker_up", "gauge", (), "exporter", "1 if the exporter could read the broker"),
    Family("atlaspipe_backend_up", "gauge", (), "exporter", "1 if the exporter could read the run records"),
)

BY_NAME = {family.name: family for family in FAMILIES}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def family_of(sample_name: str) -> str:
    """The family a sample or query name belongs to: ``celery_task_runtime_bucket`` -> ``celery_task_runtime``."""
    if sample_name in BY_NAME:
        return sample_name
    for suffix in _HISTOGRAM_SUFFIXES:
        base = sample_name.removesuffix(suffix)
        if base != sample_name and base in BY_NAME and BY_NAME[base].kind == "histogram":
            return base
    return sample_name
