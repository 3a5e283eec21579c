"""A real pipeline run on the workers while the CPU and memory of every service are sampled.

Writes ``cpu_data_<env>.csv`` (tidy: time, service, cpu_percent, cpu_seconds, rss_bytes),
``cpu_usage_<env>.png`` and ``summary_<env>.json``; ``atlaspipe cpu-report`` compares environments.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atlaspipe.cpu.sampling import (
    CgroupSource,
    ExporterSource,
    LocalSource,
    PrometheusSource,
    Row,
    Sampler,
    Source,
    write_csv,
)
from atlaspipe.errors import AtlaspipeError, ConfigError
from atlaspipe.model import RunRequest, RunStatus

log = logging.getLogger(__name__)

DEFAULT_OUTPUT = Path("benchmarks/data")
ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class SourceChoice:
    """Where CPU and memory are read from: a Prometheus server, exporters, cgroups, or local /proc."""

    prometheus_url: str | None = None
    exporters: tuple[str, ...] = ()
    cgroups: tuple[str, ...] = ()
    split_workers: bool = False


@dataclass(frozen=True)
class BenchOptions:
    """One bench run: the environment's name, the inputs, where to write, how to sample."""

    env: str
    output: Path = DEFAULT_OUTPUT
    inputs: tuple[str, ...] = ()
    events: int | None = None
    dataset_dir: Path | None = None
    chunk_size: int | None = None
    source: SourceChoice = SourceChoice()
    interval: float = 1.0
    broker: str | None = None
    backend: str | None = None
    run_output: Path | None = None

    def check(self) -> None:
        if not ENV_NAME.match(self.env):
            raise ConfigError(f"--env {self.env!r}: use letters, digits, '.', '_' or '-' (it names the output files)")
        if self.interval <= 0:
            raise ConfigError(f"--interval must be positive, got {self.interval}")
        if self.events is not None and self.events < 1:
            raise ConfigError(f"--events must be positive, got {self.events}")



def make_source(choice: SourceChoice, broker: str | None = None, backend: str | None = None) -> Source:
    """The sampling source the options ask for; local /proc by default."""
    if choice.prometheus_url:
        return PrometheusSource(choice.prometheus_url)
    if choice.exporters:
        targets: dict[str, str | None] = {}
        for item in choice.exporters:
            name, sep, url = item.partition("=")
            if sep and "://" not in name:
                targets[url] = name
            else:
                targets[item] = None
        return ExporterSource(targets)
    if choice.cgroups:
        cgroups = {}
        for item in choice.cgroups:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise ConfigError(f"--cgroup {item!r}: expected NAME=PATH")
            cgroups[name] = Path(path)
        return CgroupSource(cgroups)
    from atlaspipe.config import RuntimeSettings

    runtime = RuntimeSettings.from_env()
    return LocalSource(split_workers=choice.split_workers, broker_url=broker or runtime.broker_url,
                       backend_url=backend or runtime.result_backend)


def prepare_dataset(events: int, folder: Path | None) -> Path:
    """A generated 2020 dataset of ``events`` MC events, made once and reused."""
    from atlaspipe.config import RuntimeSettings

    target = (folder or RuntimeSettings.from_env().cache_dir / "bench") / f"2020-{events}"
    marker = target / "generated.json"
    if marker.is_file() and json.loads(marker.read_text("utf-8")).get("events") == events:
        return target
    from atlaspipe.generate.events import generate_release

    log.warning("generating %s MC events into %s", f"{events:,}", target)
    report = generate_release("2020", target, events=events, progress=log.warning)
    marker.write_text(json.dumps({"events": events, "files": len(report.files),
                                  "total_events": report.total_events}), "utf-8")
    return target


class _Background:
    """Samples every ``interval`` seconds on a thread until stopped; a failed sample is reported and skipped."""

    def __init__(self, sampler: Sampler, interval: float) -> None:
        self.sampler = sampler
        self.interval = interval
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def _run(self) -> None:
        next_time = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, next_time - time.monotonic())):
            next_time += self.interval
            try:
                self.sampler.sample()
            except AtlaspipeError as exc:
                self.errors.append(str(exc))

    def __enter__(self) -> _Background:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _run(options: BenchOptions, inputs: list[str]) -> RunStatus:
    """Submit the bench run through the Celery client and follow it to its end."""
    from atlaspipe.config import RuntimeSettings, analysis_settings
    from atlaspipe.model import new_run_id
    from atlaspipe.pipeline.celery.client import CeleryClient
    from atlaspipe.pipeline.lifecycle import now_text

    settings = RuntimeSettings.from_env()
    output = (options.run_output or settings.output_dir).absolute()
    request = RunRequest(run_id=new_run_id(), inputs=tuple(inputs), output_dir=str(output), created=now_text(),
                         config=analysis_settings(chunk_size=options.chunk_size), submitted_by=f"bench {options.env}")
    client = CeleryClient(options.broker or settings.broker_url, options.backend or settings.result_backend)
    client.submit(request)
    log.warning("bench %s: run %s, sampling every %g s", options.env, request.run_id, options.interval)
    return client.follow(request.run_id)


def summarise(env: str, rows: list[Row], totals: dict[str, float], wall: float, events: int,
              extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON summary of a bench run."""
    total = sum(totals.values())
    per_million = {s: v / events * 1e6 for s, v in sorted(totals.items())} if events else {}
    peak: dict[str, float] = {}
    for row in rows:
        peak[row.service] = max(peak.get(row.service, 0.0), row.rss_bytes)
    return {
        "env": env, **extra, "wall_seconds": round(wall, 3), "events": events,
        "events_per_second": events / wall if wall > 0 else 0.0,
        "cpu_seconds": {s: round(v, 4) for s, v in sorted(totals.items())},
        "cpu_seconds_total": round(total, 4),
        "cpu_seconds_per_million_events": {s: round(v, 4) for s, v in per_million.items()},
        "cpu_seconds_per_million_events_total": round(total / events * 1e6, 4) if events else None,
        "peak_rss_bytes": {s: int(v) for s, v in sorted(peak.items())},
        "samples": len(rows),
    }


def plot_usage(path: Path, env: str, rows: list[Row]) -> None:
    """``cpu_usage_<env>.png``: CPU percent of one core against time, a line per service."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    for service in sorted({r.service for r in rows}):
        points = [r for r in rows if r.service == service]
        ax.plot([r.time for r in points], [r.cpu_percent for r in points], label=service, linewidth=1.4)
    ax.set_xlabel("time since start [s]")
    ax.set_ylabel("CPU [% of one core]")
    ax.set_title(f"CPU usage per service: {env}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass(frozen=True)
class BenchResult:
    csv_path: Path
    events: int
    wall_seconds: float
    summary: dict[str, Any]


def run_bench(options: BenchOptions) -> BenchResult:
    """Sample every service while one run goes through the workers; write the CSV, plot and summary."""
    options.check()
    options.output.mkdir(parents=True, exist_ok=True)
    inputs = list(options.inputs)
    if options.events:
        inputs = [str(prepare_dataset(options.events, options.dataset_dir))]
    source = make_source(options.source, options.broker, options.backend)
    sampler = Sampler(source)
    sampler.start()
    if not sampler.totals():
        raise AtlaspipeError(f"no service found through {source.description}: are the workers running?")
    started = datetime.now(UTC)
    began = time.monotonic()
    with _Background(sampler, options.interval) as background:
        status = _run(options, inputs)
        wall = time.monotonic() - began
    sampler.sample()
    events = status.events_read
    summary = summarise(options.env, sampler.rows, sampler.totals(), wall, events, {
        "run_id": status.run_id, "state": status.state.value, "source": source.description,
        "interval_seconds": options.interval, "inputs": inputs or ["embedded sample"],
        "chunks": status.chunks_total, "started": started.isoformat(timespec="seconds"),
        "host": socket.gethostname(), "sampling_errors": background.errors[:20],
    })
    csv_path = options.output / f"cpu_data_{options.env}.csv"
    write_csv(csv_path, sampler.rows)
    plot_usage(options.output / f"cpu_usage_{options.env}.png", options.env, sampler.rows)
    (options.output / f"summary_{options.env}.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    return BenchResult(csv_path=csv_path, events=events, wall_seconds=wall, summary=summary)
