"""Prometheus metrics of the Celery workers, served over HTTP; and the check that keeps Flower authenticated.

Every worker serves ``/metrics`` on ``$ATLASPIPE_METRICS_PORT`` (default 9808, 0 = off) from its main
process. Tasks run in prefork pool children, so the task metrics use prometheus-client's multiprocess
mode: ``PROMETHEUS_MULTIPROC_DIR`` is set in the main process before any metric exists, the children
inherit it through fork and write their values to per-pid files, and the main process merges those
files at each scrape. CPU and memory come from psutil over the main process and all its children.

Two sets of families come out of the same signals: ``atlaspipe_*`` (per stage, what atlaspipe's own
bench and docs read) and celery-exporter's ``celery_task_*`` / ``celery_worker_tasks_active`` (per task
name and worker hostname), so the Celery dashboards operators already run work unchanged. Every
counter exists at zero from the worker's start, for every registered atlaspipe task and this worker:
``rate()`` and ``increase()`` need the zero sample before the first failure. Queue length, consumers,
worker liveness and stalled runs are cluster facts, served by ``atlaspipe exporter``
(``atlaspipe.pipeline.celery.monitor``), not by any one worker.

Nothing here imports prometheus_client until a worker starts with the exporter on, so ``atlaspipe-submit``
and ``atlaspipe run`` never pay for it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery, signals

from atlaspipe.config import RuntimeSettings

log = logging.getLogger(__name__)

PUBLISHED_HEADER = "atlaspipe_published"
"""Message header holding the publish time (Unix seconds), for the queue-wait histogram."""
ADDRESS_ENV = "ATLASPIPE_METRICS_ADDRESS"
PROCESS_TASK = "atlaspipe.process_chunk"

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


@dataclass
class _TaskMetrics:
    """The metric objects; created in the worker's main process once multiprocess mode is set up."""

    started: Any
    succeeded: Any
    failed: Any
    retried: Any
    in_progress: Any
    duration: Any
    queue_wait: Any
    events_read: Any
    events_selected: Any
    bytes_read: Any
    celery: _CeleryMetrics


CELERY_TASK_EVENTS = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked")
"""celery-exporter's task counters, ``celery_task_<event>_total{name,hostname}``."""


@dataclass
class _CeleryMetrics:
    """celery-exporter's families, fed by this worker's signals."""

    counters: dict[str, Any]
    runtime: Any
    active: Any


@dataclass
class _State:
    stage_by_task: dict[str, str] = field(default_factory=dict)
    metrics: _TaskMetrics | None = None
    server: Any = None
    directory: Path | None = None
    owns_directory: bool = False
    main_pid: int = 0
    hostname: str = ""
    task_started: dict[str, float] = field(default_factory=dict)


_state = _State()


def install(app: Celery) -> None:
    """Connect the metric signal handlers for ``app`` (its settings are read when it is configured)."""
    app.on_after_configure.connect(_learn_stages, weak=False)
    # dispatch_uid makes a second create_app() in the same process a no-op here.
    for signal, handler in (
        (signals.worker_init, _on_worker_init),
        (signals.worker_process_init, _on_worker_process_init),
        (signals.worker_process_shutdown, _on_worker_process_shutdown),
        (signals.worker_shutdown, _on_worker_shutdown),
        (signals.before_task_publish, _on_before_task_publish),
        (signals.task_received, _on_task_received),
        (signals.task_revoked, _on_task_revoked),
        (signals.task_prerun, _on_task_prerun),
        (signals.task_postrun, _on_task_postrun),
        (signals.task_success, _on_task_success),
        (signals.task_failure, _on_task_failure),
        (signals.task_retry, _on_task_retry),
    ):
        signal.connect(handler, weak=False, dispatch_uid=f"atlaspipe.ops.metrics.{handler.__name__}")


def _learn_stages(source: Any = None, **_: Any) -> None:
    """Which stage (queue) each task belongs to, from the app's routes, for the ``stage`` label."""
    routes = getattr(source, "task_routes", None) or {}
    if isinstance(routes, Mapping):
        _state.stage_by_task.update({name: str(route.get("queue", "")) for name, route in routes.items()
                                     if isinstance(route, Mapping)})


# --------------------------------------------------------------------------- exporter lifecycle


def _prepare_multiprocess_dir() -> tuple[Path, bool]:
    """The folder for per-process metric files, emptied: values of an earlier worker must not leak in."""
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        return directory, False
    directory = Path(tempfile.mkdtemp(prefix="atlaspipe-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory, True


def _create_celery_metrics() -> _CeleryMetrics:
    from prometheus_client import Counter, Gauge, Histogram

    labels = ("name", "hostname")
    counters = {event: Counter(f"celery_task_{event}", f"Tasks {event} (celery-exporter compatible)", labels)
                for event in CELERY_TASK_EVENTS}
    return _CeleryMetrics(
        counters=counters,
        runtime=Histogram("celery_task_runtime", "Task run time in seconds (celery-exporter compatible)", labels,
                          buckets=DURATION_BUCKETS),
        active=Gauge("celery_worker_tasks_active", "Tasks this worker is running now (celery-exporter compatible)",
                     ("hostname",), multiprocess_mode="livesum"),
    )


def _create_metrics() -> _TaskMetrics:
    from prometheus_client import Counter, Gauge, Histogram, values

    # A value class chosen before the variable was set (prometheus_client imported earlier) would
    # keep values in this process's memory, invisible to the main process: choose it again.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # unannotated upstream
    task_labels = ("stage", "task")
    return _TaskMetrics(
        celery=_create_celery_metrics(),
        started=Counter("atlaspipe_tasks_started_total", "Tasks started", task_labels),
        succeeded=Counter("atlaspipe_tasks_succeeded_total", "Tasks that returned", task_labels),
        failed=Counter("atlaspipe_tasks_failed_total", "Tasks that raised", task_labels),
        retried=Counter("atlaspipe_tasks_retried_total", "Tasks sent back for a retry", task_labels),
        in_progress=Gauge("atlaspipe_tasks_in_progress", "Tasks running now", ("stage",),
                          multiprocess_mode="livesum"),
        duration=Histogram("atlaspipe_task_duration_seconds", "Task run time", ("stage",),
                           buckets=DURATION_BUCKETS),
        queue_wait=Histogram("atlaspipe_task_queue_wait_seconds",
                             "Time from publishing a task to its start on a worker (chunks: the process stage)",
                             ("stage",), buckets=WAIT_BUCKETS),
        events_read=Counter("atlaspipe_events_read_total", "Events read by process tasks", ("sample",)),
        events_selected=Counter("atlaspipe_events_selected_total", "Events passing the selection", ("sample",)),
        bytes_read=Counter("atlaspipe_bytes_read_total", "Compressed bytes read from the inputs", ("sample",)),
    )


def _zero_series(metrics: _TaskMetrics, task_names: Collection[str], hostname: str) -> None:
    """Every counter of every known task at zero, so a first failure is an increase, not a new series."""
    for name in task_names:
        stage = _state.stage_by_task.get(name, "unknown")
        for counter in (metrics.started, metrics.succeeded, metrics.failed, metrics.retried):
            counter.labels(stage, name)
        for counter in metrics.celery.counters.values():
            counter.labels(name, hostname)
        metrics.celery.runtime.labels(name, hostname)
    for stage in sorted(set(_state.stage_by_task.get(name, "unknown") for name in task_names)):
        metrics.in_progress.labels(stage)
        metrics.duration.labels(stage)
    metrics.celery.active.labels(hostname)


def start_exporter(port: int, worker: str, stage: str, address: str = "0.0.0.0",
                   task_names: Collection[str] = ()) -> int:
    """Serve this process's and its pool children's metrics on ``address:port``; returns the bound port."""
    directory, owned = _prepare_multiprocess_dir()
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    _state.directory, _state.owns_directory = directory, owned
    _state.main_pid = os.getpid()
    _state.hostname = worker
    _state.metrics = _create_metrics()
    _zero_series(_state.metrics, task_names, worker)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]  # unannotated upstream
    registry.register(WorkerResourceCollector(os.getpid(), worker, stage))
    server, _thread = start_http_server(port, addr=address, registry=registry)
    _state.server = server
    return int(server.server_port)


def _worker_stage(worker: Any) -> str:
    """The stage label of a worker's own resources: its queues joined by ``+`` (a comma would make the
    label unusable in PromQL regexes and in the bench's service names)."""
    try:
        queues = sorted(worker.app.amqp.queues.consume_from)
    except AttributeError:
        queues = []
    return "+".join(queues) or "all"


def _task_names(worker: Any) -> list[str]:
    try:
        return sorted(name for name in worker.app.tasks if name.startswith("atlaspipe."))
    except AttributeError:
        return []


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    port = RuntimeSettings.from_env().metrics_port
    if port == 0:
        return
    address = os.environ.get(ADDRESS_ENV, "0.0.0.0")
    hostname = str(getattr(sender, "hostname", "") or os.uname().nodename)
    try:
        bound = start_exporter(port, hostname, _worker_stage(sender), address, _task_names(sender))
    except OSError as exc:
        # A worker without metrics still does its work; the log says why the exporter is missing.
        log.error("metrics exporter not started on %s:%d: %s", address, port, exc)
        return
    log.info("Prometheus metrics on http://%s:%d/metrics", address, bound)


def _on_worker_process_init(**_: Any) -> None:
    # A pool child inherits the listening socket through fork; only the main process serves it.
    if _state.server is not None:
        _state.server.socket.close()
        _state.server = None
    _state.task_started.clear()


def _on_worker_process_shutdown(pid: int | None = None, **_: Any) -> None:
    if _state.metrics is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid or os.getpid(), path=str(_state.directory))  # type: ignore[no-untyped-call]


def _on_worker_shutdown(**_: Any) -> None:
    if _state.server is not None and os.getpid() == _state.main_pid:
        # The main process holds live gauges too (the zero series): a shared folder must not keep them.
        _on_worker_process_shutdown(os.getpid())
        _state.server.shutdown()
        _state.server.server_close()
        _state.server = None
        if _state.owns_directory and _state.directory is not None:
            shutil.rmtree(_state.directory, ignore_errors=True)


# --------------------------------------------------------------------------- task signals


def _stage(task: Any) -> str:
    name = str(getattr(task, "name", ""))
    stage = _state.stage_by_task.get(name)
    if stage:
        return stage
    delivery = getattr(getattr(task, "request", None), "delivery_info", None) or {}
    return str(delivery.get("routing_key") or "unknown")


def _on_before_task_publish(sender: Any = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers[PUBLISHED_HEADER] = time.time()
    if _state.metrics is not None and sender:
        _state.metrics.celery.counters["sent"].labels(str(sender), _state.hostname).inc()


def _on_task_received(request: Any = None, **_: Any) -> None:
    name = getattr(request, "name", None)
    if _state.metrics is not None and name:
        _state.metrics.celery.counters["received"].labels(str(name), _state.hostname).inc()


def _on_task_revoked(sender: Any = None, **_: Any) -> None:
    name = getattr(sender, "name", None)
    if _state.metrics is not None and name:
        _state.metrics.celery.counters["revoked"].labels(str(name), _state.hostname).inc()


def _on_task_prerun(task_id: str = "", task: Any = None, **_: Any) -> None:
    metrics = _state.metrics
    if metrics is None or task is None:
        return
    stage = _stage(task)
    metrics.started.labels(stage, task.name).inc()
    metrics.in_progress.labels(stage).inc()
    metrics.celery.counters["started"].labels(task.name, _state.hostname).inc()
    metrics.celery.active.labels(_state.hostname).inc()
    _state.task_started[task_id] = time.perf_counter()
    published = task.request.get(PUBLISHED_HEADER)
    if isinstance(published, int | float):
        # Clocks of different hosts can disagree by a little; a negative wait is not a wait.
        metrics.queue_wait.labels(stage).observe(max(0.0, time.time() - float(published)))


def _on_task_postrun(task_id: str = "", task: Any = None, **_: Any) -> None:
    metrics = _state.metrics
    if metrics is None or task is None:
        return
    stage = _stage(task)
    metrics.in_progress.labels(stage).dec()
    metrics.celery.active.labels(_state.hostname).dec()
    started = _state.task_started.pop(task_id, None)
    if started is not None:
        runtime = time.perf_counter() - started
        metrics.duration.labels(stage).observe(runtime)
        metrics.celery.runtime.labels(task.name, _state.hostname).observe(runtime)


def _on_task_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    metrics = _state.metrics
    if metrics is None or sender is None:
        return
    metrics.succeeded.labels(_stage(sender), sender.name).inc()
    metrics.celery.counters["succeeded"].labels(sender.name, _state.hostname).inc()
    if sender.name == PROCESS_TASK and isinstance(result, dict) and not result.get("duplicate"):
        sample = str(result.get("sample", "unknown"))
        metrics.events_read.labels(sample).inc(int(result.get("events_read") or 0))
        metrics.events_selected.labels(sample).inc(int(result.get("events_selected") or 0))
        metrics.bytes_read.labels(sample).inc(int(result.get("bytes_read") or 0))


def _on_task_failure(sender: Any = None, **_: Any) -> None:
    if _state.metrics is not None and sender is not None:
        _state.metrics.failed.labels(_stage(sender), sender.name).inc()
        _state.metrics.celery.counters["failed"].labels(sender.name, _state.hostname).inc()


def _on_task_retry(sender: Any = None, **_: Any) -> None:
    if _state.metrics is not None and sender is not None:
        _state.metrics.retried.labels(_stage(sender), sender.name).inc()
        _state.metrics.celery.counters["retried"].labels(sender.name, _state.hostname).inc()


# --------------------------------------------------------------------------- CPU and memory


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    role: str
    cpu_seconds: float
    rss_bytes: int


def process_tree(pid: int) -> tuple[list[ProcessSample], float]:
    """Each live process of the tree under ``pid``, and the CPU seconds of its children already reaped."""
    import psutil

    root = psutil.Process(pid)
    samples: list[ProcessSample] = []
    reaped = 0.0
    for index, process in enumerate([root, *root.children(recursive=True)]):
        try:
            with process.oneshot():
                times = process.cpu_times()
                rss = process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if index == 0:
            # Pool children replaced after worker_max_tasks_per_child keep counting through this.
            reaped = float(times.children_user + times.children_system)
        samples.append(ProcessSample(process.pid, "main" if index == 0 else "pool",
                                     float(times.user + times.system), int(rss)))
    return samples, reaped


class WorkerResourceCollector:
    """CPU seconds and resident memory of a worker: its main process and every pool child."""

    def __init__(self, pid: int, worker: str, stage: str) -> None:
        self.pid = pid
        self.worker = worker
        self.stage = stage
        self._lock = threading.Lock()
        self._high_water = 0.0

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        samples, reaped = process_tree(self.pid)
        labels = [self.worker, self.stage]
        with self._lock:
            # A child reaped between reading its times and the parent's would count twice or not
            # at all for one scrape; keep the counter monotonic as Prometheus requires.
            total = sum(s.cpu_seconds for s in samples) + reaped
            self._high_water = max(self._high_water, total)
            total = self._high_water
        cpu = CounterMetricFamily("atlaspipe_worker_cpu_seconds",
                                  "CPU seconds of the worker, pool children included (live and exited)",
                                  labels=["worker", "stage"])
        cpu.add_metric(labels, total)
        rss = GaugeMetricFamily("atlaspipe_worker_resident_memory_bytes",
                                "Resident memory of the worker's main process and pool children",
                                labels=["worker", "stage"])
        rss.add_metric(labels, float(sum(s.rss_bytes for s in samples)))
        count = GaugeMetricFamily("atlaspipe_worker_pool_processes", "Live pool child processes",
                                  labels=["worker", "stage"])
        count.add_metric(labels, float(sum(1 for s in samples if s.role == "pool")))
        # Per role, not per pid: pool children are replaced (worker_max_tasks_per_child), and a pid
        # label would add series without bound.
        per_cpu = CounterMetricFamily("atlaspipe_worker_process_cpu_seconds",
                                      "CPU seconds of the worker's main process and of its live pool children",
                                      labels=["worker", "stage", "role"])
        per_rss = GaugeMetricFamily("atlaspipe_worker_process_resident_memory_bytes",
                                    "Resident memory of the worker's main process and of its pool children",
                                    labels=["worker", "stage", "role"])
        main_cpu = sum(s.cpu_seconds for s in samples if s.role == "main")
        # The pool's share includes children already reaped, so it never drops when one is replaced.
        per_cpu.add_metric([*labels, "main"], main_cpu)
        per_cpu.add_metric([*labels, "pool"], max(0.0, total - main_cpu))
        for role in ("main", "pool"):
            per_rss.add_metric([*labels, role], float(sum(s.rss_bytes for s in samples if s.role == role)))
        yield from (cpu, rss, count, per_cpu, per_rss)
