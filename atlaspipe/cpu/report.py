"""``atlaspipe cpu-report``: compare the CPU data of every environment benchmarked into one folder.

Reads each ``cpu_data_<env>.csv`` with its ``summary_<env>.json`` (written by ``atlaspipe bench``) and
writes ``cpu_comparison.png`` and ``cpu_comparison_results.txt``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlaspipe.cpu.sampling import CSV_COLUMNS
from atlaspipe.errors import AtlaspipeError, ConfigError

log = logging.getLogger(__name__)

DEFAULT_FOLDER = Path("benchmarks/data")
ALL = "all services"


class CpuDataError(AtlaspipeError):
    """A CPU data or summary file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class Stats:
    """CPU figures of one service (or all services) of one environment."""

    mean_percent: float
    p95_percent: float
    max_percent: float
    cpu_seconds: float
    cpu_seconds_per_million_events: float | None


@dataclass
class Environment:
    """One benchmarked environment: its samples and its run summary."""

    name: str
    csv_path: Path
    series: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    """service -> [(time, cpu_percent, cpu_seconds)] in time order."""
    wall_seconds: float = 0.0
    events: int = 0
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.events / self.wall_seconds if self.wall_seconds > 0 else 0.0




def _number(value: str, path: Path, line: int, column: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise CpuDataError(f"{path}: line {line}: column '{column}' is not a number: {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise CpuDataError(f"{path}: line {line}: column '{column}' must be a finite non-negative number, "
                           f"got {value!r}")
    return number


def load_csv(path: Path) -> dict[str, list[tuple[float, float, float]]]:
    """The samples of one ``cpu_data_<env>.csv``, by service; CpuDataError naming the file if unusable."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise CpuDataError(f"{path}: cannot read CPU data: {exc.strerror or exc}") from None
    series: dict[str, list[tuple[float, float, float]]] = {}
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None or [h.strip() for h in header] != list(CSV_COLUMNS):
                raise CpuDataError(f"{path}: not a CPU data file: the header must be {','.join(CSV_COLUMNS)}, "
                                   f"got {','.join(header or []) or 'nothing'}")
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != len(CSV_COLUMNS):
                    raise CpuDataError(f"{path}: line {line}: expected {len(CSV_COLUMNS)} columns, got {len(row)}")
                service = row[1].strip()
                if not service:
                    raise CpuDataError(f"{path}: line {line}: empty service name")
                values = [_number(row[i], path, line, CSV_COLUMNS[i]) for i in (0, 2, 3, 4)]
                series.setdefault(service, []).append((values[0], values[1], values[2]))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise CpuDataError(f"{path}: malformed CSV: {exc}") from None
    if not series:
        raise CpuDataError(f"{path}: no samples (only a header)")
    for points in series.values():
        points.sort()
    return series


def load_environment(folder: Path, name: str) -> Environment:
    """An environment from ``folder``: its CSV and its summary, both required."""
    csv_path = folder / f"cpu_data_{name}.csv"
    summary_path = folder / f"summary_{name}.json"
    env = Environment(name, csv_path, load_csv(csv_path))
    try:
        summary = json.loads(summary_path.read_text("utf-8"))
    except FileNotFoundError:
        raise CpuDataError(f"{summary_path}: missing (atlaspipe bench writes it next to {csv_path.name}); "
                           "events and wall time come from it") from None
    except (OSError, ValueError) as exc:
        raise CpuDataError(f"{summary_path}: malformed summary: {exc}") from None
    try:
        env.wall_seconds = float(summary["wall_seconds"])
        env.events = int(summary["events"])
    except (KeyError, TypeError, ValueError):
        raise CpuDataError(f"{summary_path}: needs numeric 'wall_seconds' and 'events'") from None
    env.summary = summary
    return env


def find_environments(folder: Path) -> list[str]:
    """Environment names with a CSV or a summary in ``folder``; either alone is reported as incomplete later."""
    if not folder.is_dir():
        raise CpuDataError(f"{folder}: no such folder")
    names = {p.name[len("cpu_data_"):-len(".csv")] for p in folder.glob("cpu_data_*.csv")}
    names |= {p.name[len("summary_"):-len(".json")] for p in folder.glob("summary_*.json")}
    if not names:
        raise CpuDataError(f"{folder}: no cpu_data_<env>.csv files (run `atlaspipe bench --env NAME --output "
                           f"{folder}` first)")
    return sorted(names)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile with linear interpolation (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _stats(percents: list[float], cpu_seconds: float, events: int) -> Stats:
    return Stats(
        mean_percent=sum(percents) / len(percents) if percents else 0.0,
        p95_percent=percentile(percents, 95.0),
        max_percent=max(percents, default=0.0),
        cpu_seconds=cpu_seconds,
        cpu_seconds_per_million_events=cpu_seconds / events * 1e6 if events else None,
    )


def service_stats(env: Environment) -> dict[str, Stats]:
    """Stats per service, plus ``ALL``: the sum of the services at each sample time."""
    result: dict[str, Stats] = {}
    by_time: dict[float, float] = {}
    total = 0.0
    for service, points in sorted(env.series.items()):
        percents = [p for _, p, _ in points]
        used = max(c for _, _, c in points)
        total += used
        result[service] = _stats(percents, used, env.events)
        for t, p, _ in points:
            by_time[t] = by_time.get(t, 0.0) + p
    result[ALL] = _stats([by_time[t] for t in sorted(by_time)], total, env.events)
    return result


def _relative(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return "n/a"
    if base == 0:
        return "n/a" if value else "+0.0%"
    return f"{(value - base) / base * 100:+.1f}%"


def format_report(envs: list[Environment], baseline: str, folder: Path) -> str:
    """The text of ``cpu_comparison_results.txt``."""
    stats = {env.name: service_stats(env) for env in envs}
    lines = [f"CPU comparison of {len(envs)} environment(s) from {folder}", f"baseline: {baseline}",
             "CPU% is percent of one core; CPU-s are CPU seconds used during the run; "
             "Mevent = a million events read.", ""]
    header = f"{'service':<28} {'mean CPU%':>10} {'p95 CPU%':>10} {'max CPU%':>10} {'CPU-s':>10} {'CPU-s/Mevent':>13}"
    for env in envs:
        lines += [f"== {env.name}: {env.events:,} events, wall {env.wall_seconds:.2f} s, "
                  f"{env.events_per_second:,.1f} events/s"
                  + (f", source {env.summary['source']}" if env.summary.get("source") else ""),
                  header, "-" * len(header)]
        for service, s in stats[env.name].items():
            per_million = f"{s.cpu_seconds_per_million_events:13.2f}" if s.cpu_seconds_per_million_events is not None \
                else f"{'n/a':>13}"
            lines.append(f"{service:<28} {s.mean_percent:10.2f} {s.p95_percent:10.2f} {s.max_percent:10.2f} "
                         f"{s.cpu_seconds:10.2f} {per_million}")
        lines.append("")
    base_env = next(e for e in envs if e.name == baseline)
    base_stats = stats[baseline]
    for env in envs:
        if env.name == baseline:
            continue
        lines += [f"== {env.name} relative to {baseline}: wall time "
                  f"{_relative(env.wall_seconds, base_env.wall_seconds)}, events/s "
                  f"{_relative(env.events_per_second, base_env.events_per_second)}", header, "-" * len(header)]
        for service, s in stats[env.name].items():
            b = base_stats.get(service)
            if b is None:
                lines.append(f"{service:<28} (not in {baseline})")
                continue
            lines.append(f"{service:<28} {_relative(s.mean_percent, b.mean_percent):>10} "
                         f"{_relative(s.p95_percent, b.p95_percent):>10} {_relative(s.max_percent, b.max_percent):>10} "
                         f"{_relative(s.cpu_seconds, b.cpu_seconds):>10} "
                         f"{_relative(s.cpu_seconds_per_million_events, b.cpu_seconds_per_million_events):>13}")
        missing = sorted(set(base_stats) - set(stats[env.name]))
        lines += [f"{service:<28} (only in {baseline})" for service in missing]
        lines.append("")
    lines += format_repetitions(envs, baseline)
    return "\n".join(lines)


REPETITION = re.compile(r"^(?P<base>.+?)\.r\d+$")
"""``<env>.r<N>``: repetition N of environment ``<env>`` (``atlaspipe bench --env prod.r2``)."""


def base_name(name: str) -> str:
    """The environment a bench run belongs to: its name without a ``.r<N>`` repetition suffix."""
    found = REPETITION.match(name)
    return found.group("base") if found else name


@dataclass(frozen=True)
class CostModel:
    """A run's CPU as fixed cost + cost per million events, fitted over runs of two or more sizes."""

    fixed_cpu_seconds: float
    cpu_seconds_per_million_events: float


def fit_cost(points: list[tuple[int, float]]) -> CostModel | None:
    """Least-squares line through (events, CPU-s); None unless the runs have two sizes or more."""
    if len({events for events, _ in points}) < 2:
        return None
    xs = [events / 1e6 for events, _ in points]
    ys = [cpu for _, cpu in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return CostModel(fixed_cpu_seconds=my - slope * mx, cpu_seconds_per_million_events=slope)


def _spread(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return percentile(ordered, 50.0), ordered[0], ordered[-1]


def format_repetitions(envs: list[Environment], baseline: str) -> list[str]:
    """Per environment (repetitions ``<env>.r<N>`` grouped): total CPU-s per size as median and
    min–max, the fixed cost and the cost per million events where there are two sizes, and each
    change against the baseline, called an effect only where it is larger than both spreads."""
    groups: dict[str, list[Environment]] = {}
    for env in envs:
        groups.setdefault(base_name(env.name), []).append(env)
    if all(len(members) == 1 for members in groups.values()):
        return []
    totals = {name: [(env.events, service_stats(env)[ALL].cpu_seconds) for env in members]
              for name, members in groups.items()}
    lines = ["== repetitions (<env>.r<N>) and sizes: all services' CPU-s per run",
             f"{'environment':<20} {'events':>12} {'runs':>5} {'median CPU-s':>13} {'min–max':>17}"]
    for name, points in totals.items():
        for events in sorted({e for e, _ in points}):
            mid, low, high = _spread([c for e, c in points if e == events])
            runs = sum(1 for e, _ in points if e == events)
            lines.append(f"{name:<20} {events:>12,} {runs:>5} {mid:13.2f} {f'{low:.2f}–{high:.2f}':>17}")
        model = fit_cost(points)
        lines.append(f"{'':<20} fixed cost {model.fixed_cpu_seconds:.2f} CPU-s + "
                     f"{model.cpu_seconds_per_million_events:.2f} CPU-s per million events (line through "
                     f"{len(points)} runs)" if model else f"{'':<20} fixed cost vs per event: needs runs of two sizes")
    base = base_name(baseline)
    for name, points in totals.items():
        if name == base or base not in totals:
            continue
        for events in sorted({e for e, _ in points} & {e for e, _ in totals[base]}):
            mine = [c for e, c in points if e == events]
            theirs = [c for e, c in totals[base] if e == events]
            change = _spread(mine)[0] - _spread(theirs)[0]
            noise = max(max(mine) - min(mine), max(theirs) - min(theirs))
            verdict = (f"{change:+.2f} CPU-s ({_relative(_spread(mine)[0], _spread(theirs)[0])})"
                       if abs(change) > noise and min(len(mine), len(theirs)) > 1
                       else f"no effect: the change {change:+.2f} CPU-s is within the spread {noise:.2f}"
                       if min(len(mine), len(theirs)) > 1 else "one run each: no spread, no verdict")
            lines.append(f"{name} vs {base} at {events:,} events: {verdict}")
    return [*lines, ""]


def plot_comparison(path: Path, envs: list[Environment]) -> None:
    """``cpu_comparison.png``: a time-series panel per environment, then totals per service."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    services = sorted({s for env in envs for s in env.series})
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(services)}
    columns = max(2, len(envs))
    fig = plt.figure(figsize=(5 * columns, 8.5))
    grid = fig.add_gridspec(2, columns, height_ratios=(1.0, 1.0))
    shared = None
    for index, env in enumerate(envs):
        ax = fig.add_subplot(grid[0, index], sharey=shared)
        shared = shared or ax
        for service, points in sorted(env.series.items()):
            ax.plot([t for t, _, _ in points], [p for _, p, _ in points], label=service, color=colors[service],
                    linewidth=1.2)
        ax.set_title(f"{env.name}: {env.events:,} events in {env.wall_seconds:.1f} s")
        ax.set_xlabel("time since start [s]")
        ax.set_ylabel("CPU [% of one core]")
        ax.grid(alpha=0.3)
    shared_legend = [Line2D([], [], color=colors[s], label=s) for s in services]
    fig.legend(handles=shared_legend, loc="upper center", ncol=min(len(services), 6), fontsize="small")
    totals_ax = fig.add_subplot(grid[1, : columns // 2 or 1])
    per_event_ax = fig.add_subplot(grid[1, columns // 2:])
    width = 0.8 / len(envs)
    for index, env in enumerate(envs):
        stats = service_stats(env)
        xs = [i + (index - (len(envs) - 1) / 2) * width for i in range(len(services))]
        totals_ax.bar(xs, [stats[s].cpu_seconds if s in stats else 0.0 for s in services], width, label=env.name)
        per_event_ax.bar(xs, [(stats[s].cpu_seconds_per_million_events or 0.0) if s in stats else 0.0
                              for s in services], width, label=env.name)
    for ax, label in ((totals_ax, "CPU seconds during the run"), (per_event_ax, "CPU seconds per million events")):
        ax.set_xticks(range(len(services)), services, rotation=30, ha="right", fontsize="small")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(folder: Path, baseline: str | None = None) -> tuple[list[Environment], str]:
    """Load every environment of ``folder`` and choose the baseline."""
    names = find_environments(folder)
    if baseline is not None and baseline not in names:
        raise ConfigError(f"--baseline {baseline}: no {folder / f'cpu_data_{baseline}.csv'} "
                          f"(environments found: {', '.join(names)})")
    envs = [load_environment(folder, name) for name in names]
    log.debug("CPU data of %s in %s", ", ".join(names), folder)
    return envs, baseline or names[0]
