"""``atlaspipe bench``: a real pipeline run on the workers while the CPU and memory of every service are sampled.

Writes ``cpu_data_<env>.csv`` (tidy: time, service, cpu_percent, cpu_seconds, rss_bytes),
``cpu_usage_<env>.png`` and ``summary_<env>.json``; ``atlaspipe cpu-report`` compares environments.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atlaspipe.errors import AtlaspipeError, ConfigError
from atlaspipe.model import RunRequest, RunStatus
from atlaspipe.sampling import (
    CgroupSource,
    ExporterSource,
    LocalSource,
    PrometheusSource,
    Row,
    Sampler,
    Source,
    write_csv,
)

DEFAULT_OUTPUT = Path("benchmarks/data")
ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``atlaspipe bench``."""
    parser.add_argument("--env", required=True, help="name of this environment, e.g. docker-compose, kubernetes")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"folder for the CSV, plot and summary (default: {DEFAULT_OUTPUT})")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--input", nargs="+", default=[], metavar="PATH",
                      help="ROOT files or folders as the workers see them (default: the embedded sample)")
    data.add_argument("--events", type=int, help="generate a 2020-schema dataset of N MC events (plus "
                      "pseudo-data) into the cache folder, reused by later runs, and analyse it")
    parser.add_argument("--dataset-dir", type=Path,
                        help="where --events writes its dataset (default: $ATLASPIPE_CACHE_DIR/bench); "
                             "the workers must see it at the same path")
    parser.add_argument("--chunk-size", type=int, help="entries per chunk")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prometheus-url", help="read CPU and memory from this Prometheus server")
    source.add_argument("--exporter", action="append", default=[], metavar="[NAME=]URL",
                        help="scrape this metrics URL directly (repeatable); worker exporters name their "
                             "stage, other targets (e.g. Flower) are named NAME")
    source.add_argument("--cgroup", action="append", default=[], metavar="NAME=PATH",
                        help="read a service from its cgroup v2 folder (repeatable)")
    parser.add_argument("--split-workers", action="store_true",
                        help="local sampling: one service per worker node name instead of per stage")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    parser.add_argument("--broker", help="broker URL (default: $ATLASPIPE_BROKER_URL)")
    parser.add_argument("--backend", help="result backend URL (default: $ATLASPIPE_RESULT_BACKEND)")
    parser.add_argument("--run-output", type=Path, help="output folder of the run, as the plot worker sees it")


def make_source(args: argparse.Namespace) -> Source:
    """The sampling source the options ask for; local /proc by default."""
    if args.prometheus_url:
        return PrometheusSource(args.prometheus_url)
    if args.exporter:
        targets: dict[str, str | None] = {}
        for item in args.exporter:
            name, sep, url = item.partition("=")
            if sep and "://" not in name:
                targets[url] = name
            else:
                targets[item] = None
        return ExporterSource(targets)
    if args.cgroup:
        cgroups = {}
        for item in args.cgroup:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise ConfigError(f"--cgroup {item!r}: expected NAME=PATH")
            cgroups[name] = Path(path)
        return CgroupSource(cgroups)
    from atlaspipe.config import RuntimeSettings

    broker = args.broker or RuntimeSettings.from_env().broker_url
    return LocalSource(split_workers=args.split_workers, broker_url=broker)


def prepare_dataset(events: int, folder: Path | None) -> Path:
    """A generated 2020 dataset of ``events`` MC events, made once and reused."""
    from atlaspipe.config import RuntimeSettings

    target = (folder or RuntimeSettings.from_env().cache_dir / "bench") / f"2020-{events}"
    marker = target / "generated.json"
    if marker.is_file() and json.loads(marker.read_text("utf-8")).get("events") == events:
        return target
    from atlaspipe.generate import generate_release

    print(f"generating {events:,} MC events into {target}", file=sys.stderr)
    report = generate_release("2020", target, events=events, progress=lambda line: print(line, file=sys.stderr))
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


def _run(args: argparse.Namespace, inputs: list[str]) -> RunStatus:
    """Submit the bench run through the Celery client and follow it to its end."""
    from atlaspipe.client import CeleryClient
    from atlaspipe.config import RuntimeSettings, analysis_config
    from atlaspipe.pipeline.lifecycle import now_text
    from atlaspipe.planning import new_run_id

    settings = RuntimeSettings.from_env()
    output = (args.run_output or settings.output_dir).absolute()
    request = RunRequest(run_id=new_run_id(), inputs=tuple(inputs), output_dir=str(output), created=now_text(),
                         config=analysis_config(chunk_size=args.chunk_size), submitted_by=f"bench {args.env}")
    client = CeleryClient(args.broker or settings.broker_url, args.backend or settings.result_backend)
    client.submit(request)
    print(f"bench {args.env}: run {request.run_id}, sampling every {args.interval:g} s", file=sys.stderr)
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


def main(args: argparse.Namespace) -> int:
    """Run ``atlaspipe bench``."""
    if not ENV_NAME.match(args.env):
        raise ConfigError(f"--env {args.env!r}: use letters, digits, '.', '_' or '-' (it names the output files)")
    if args.interval <= 0:
        raise ConfigError(f"--interval must be positive, got {args.interval}")
    if args.events is not None and args.events < 1:
        raise ConfigError(f"--events must be positive, got {args.events}")
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    inputs = list(args.input)
    if args.events:
        inputs = [str(prepare_dataset(args.events, args.dataset_dir))]
    source = make_source(args)
    sampler = Sampler(source)
    sampler.start()
    if not sampler.totals():
        raise AtlaspipeError(f"no service found through {source.description}: are the workers running?")
    started = datetime.now(UTC)
    began = time.monotonic()
    with _Background(sampler, args.interval) as background:
        status = _run(args, inputs)
        wall = time.monotonic() - began
    sampler.sample()
    events = status.events_read
    summary = summarise(args.env, sampler.rows, sampler.totals(), wall, events, {
        "run_id": status.run_id, "state": status.state.value, "source": source.description,
        "interval_seconds": args.interval, "inputs": inputs or ["embedded sample"],
        "chunks": status.chunks_total, "started": started.isoformat(timespec="seconds"),
        "host": socket.gethostname(), "sampling_errors": background.errors[:20],
    })
    csv_path = output / f"cpu_data_{args.env}.csv"
    write_csv(csv_path, sampler.rows)
    plot_usage(output / f"cpu_usage_{args.env}.png", args.env, sampler.rows)
    (output / f"summary_{args.env}.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    print(f"bench {args.env}: {events:,} events in {wall:.1f} s ({summary['events_per_second']:,.0f} events/s), "
          f"{summary['cpu_seconds_total']:.1f} CPU-s; wrote {csv_path}", file=sys.stderr)
    return 0
