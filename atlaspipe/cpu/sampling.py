"""Cumulative CPU seconds and resident memory of each service: from /proc (cgroup-aware), exporters or Prometheus.

A source's ``read()`` returns, per service, the CPU seconds the service has used since it started and its
resident memory now. The benchmark turns successive readings into CPU percent of one core.

Services: ``worker-<stage>`` (all workers of a stage, pool children included), ``broker`` (RabbitMQ's
beam.smp), ``backend`` (redis-server) and ``flower``.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from atlaspipe.errors import AtlaspipeError, ConfigError

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
HTTP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Reading:
    """One service at one instant: cumulative CPU seconds and resident memory."""

    cpu_seconds: float
    rss_bytes: float


class Source(Protocol):
    """Where readings come from."""

    description: str

    def read(self) -> dict[str, Reading]: ...


# --------------------------------------------------------------------------- cgroup v2


def cgroup_v2_path(pid: int | str = "self", proc: Path = Path("/proc")) -> str | None:
    """The unified (v2) cgroup of a process, e.g. ``/system.slice/redis-server.service``; None without v2."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


@dataclass(frozen=True)
class Cgroup:
    """A cgroup v2 folder: ``cpu.stat`` usage_usec and ``memory.current`` count every process in it."""

    path: Path

    @classmethod
    def of(cls, relative: str, root: Path = CGROUP_ROOT) -> Cgroup | None:
        """The cgroup at ``relative`` under a v2 hierarchy, if it accounts CPU there."""
        folder = root / relative.lstrip("/")
        return cls(folder) if (folder / "cpu.stat").is_file() else None

    def cpu_seconds(self) -> float:
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
        raise AtlaspipeError(f"{self.path / 'cpu.stat'}: no usage_usec line")

    def memory_bytes(self) -> float:
        try:
            return float(int((self.path / "memory.current").read_text().strip()))
        except (OSError, ValueError):
            # The memory controller may not be enabled for this subtree.
            return 0.0

    def pids(self) -> set[int]:
        try:
            return {int(p) for p in (self.path / "cgroup.procs").read_text().split()}
        except OSError:
            return set()


def read_cgroup(cgroup: Cgroup) -> Reading:
    return Reading(cgroup.cpu_seconds(), cgroup.memory_bytes())


# --------------------------------------------------------------------------- local processes


def classify(cmdline: Sequence[str], name: str, split_workers: bool = False) -> str | None:
    """The service a process belongs to, from its command line; None for anything else.

    Workers are grouped by the queues they consume, or with ``split_workers`` one service per node
    name (``-n``), e.g. to compare two workers of one stage.
    """
    if name == "beam.smp" or (cmdline and Path(cmdline[0]).name == "beam.smp"):
        return "broker"
    if name == "redis-server" or (cmdline and Path(cmdline[0]).name == "redis-server"):
        return "backend"
    head = list(cmdline[:4])
    if not any(Path(w).name == "celery" or w.endswith("celery/__main__.py") for w in head):
        return None
    if "flower" in cmdline:
        return "flower"
    if "worker" in cmdline:
        node = _option(cmdline, "-n", "--hostname") if split_workers else None
        return f"worker-{_queues(cmdline)}" + (f"-{node.split('@')[0]}" if node else "")
    return None


def service_port(url: str | None, default: int) -> int | None:
    """The TCP port of a broker or backend URL on this host; None when it is elsewhere or unknown
    (then every local instance is counted: nothing better to tell them apart by)."""
    if not url:
        return None
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.split(";")[0])
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if host not in ("127.0.0.1", "localhost", "::1", socket.gethostname()):
        return None
    return port or default


def _option(cmdline: Sequence[str], *names: str) -> str | None:
    for index, word in enumerate(cmdline):
        if word in names and index + 1 < len(cmdline):
            return cmdline[index + 1]
        for name in names:
            if name.startswith("--") and word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def _queues(cmdline: Sequence[str]) -> str:
    value = _option(cmdline, "-Q", "--queues")
    if value is None:
        # The short form may be glued to its value: -Qprocess.
        value = next((w[2:] for w in cmdline if w.startswith("-Q") and len(w) > 2), None)
    return ",".join(sorted(value.split(","))) if value else "all"


class LocalSource:
    """Services running on this machine, found by command line in /proc.

    A service whose processes are alone in their own cgroup v2 (a container, a systemd unit) is read
    from the cgroup's ``cpu.stat`` and ``memory.current``: exact, and never the whole machine. Otherwise
    the service is the sum of its processes, each worker with all its pool children, and the CPU of
    children it has already reaped.
    """

    description = "local processes (/proc, cgroup v2 where a service has its own)"

    def __init__(self, cgroup_root: Path = CGROUP_ROOT, split_workers: bool = False,
                 broker_url: str | None = None, backend_url: str | None = None) -> None:
        self.cgroup_root = cgroup_root
        self.split_workers = split_workers
        self.broker_url = broker_url
        self.backend_url = backend_url

    def _serves_us(self, process: Any, service: str) -> bool:
        """Whether a RabbitMQ or Redis process is the deployment's own: the one listening on the
        port of its broker or backend URL, not any other instance on the host."""
        url = self.broker_url if service == "broker" else self.backend_url
        port = service_port(url, 5672 if service == "broker" else 6379)
        if port is None:
            return True
        try:
            listening = {c.laddr.port for c in process.net_connections(kind="tcp") if c.status == "LISTEN"}
        except Exception:  # not ours to inspect (another user): keep it rather than miss the service
            log.debug("cannot read the sockets of process %d; counted as ours", process.pid)
            return True
        return port in listening

    def _same_deployment(self, process: Any) -> bool:
        """Whether a Celery process talks to our broker: other deployments on this host are not ours."""
        if self.broker_url is None:
            return True
        try:
            environ = process.environ()
        except Exception:  # unreadable (another user): keep it rather than miss a service
            log.debug("cannot read the environment of process %d; counted as ours", process.pid)
            return True
        from atlaspipe.config import RuntimeSettings

        default = RuntimeSettings.from_env().broker_url if "ATLASPIPE_BROKER_URL" not in environ else None
        return bool(environ.get("ATLASPIPE_BROKER_URL", default) == self.broker_url)

    def _roots(self) -> dict[str, list[int]]:
        import psutil

        found: dict[int, str] = {}
        parents: dict[int, int] = {}
        for process in psutil.process_iter(["pid", "ppid", "name", "cmdline"]):
            info = process.info
            service = classify(info.get("cmdline") or [], info.get("name") or "", self.split_workers)
            if service and (self._serves_us(process, service) if service in ("broker", "backend")
                            else self._same_deployment(process)):
                found[info["pid"]] = service
                parents[info["pid"]] = info["ppid"]
        roots: dict[str, list[int]] = {}
        for pid, service in found.items():
            # Pool children (and beam's helpers) are counted through their parent's tree.
            if found.get(parents[pid]) != service:
                roots.setdefault(service, []).append(pid)
        return roots

    def _cgroup_for(self, pids: set[int]) -> Cgroup | None:
        paths = {cgroup_v2_path(pid) for pid in pids}
        if len(paths) != 1:
            return None
        path = paths.pop()
        if path in (None, "/"):
            return None
        cgroup = Cgroup.of(str(path), self.cgroup_root)
        if cgroup is None:
            return None
        members = cgroup.pids()
        return cgroup if members and members <= pids else None

    def read(self) -> dict[str, Reading]:
        from atlaspipe.ops.metrics import process_tree

        readings: dict[str, Reading] = {}
        for service, roots in self._roots().items():
            cpu = rss = 0.0
            pids: set[int] = set()
            for root in roots:
                try:
                    samples, reaped = process_tree(root)
                except Exception:  # the process ended between listing and reading it
                    log.debug("%s process %d ended before it was read", service, root)
                    continue
                pids.update(s.pid for s in samples)
                cpu += sum(s.cpu_seconds for s in samples) + reaped
                rss += sum(s.rss_bytes for s in samples)
            if not pids:
                continue
            cgroup = self._cgroup_for(pids)
            readings[service] = read_cgroup(cgroup) if cgroup else Reading(cpu, rss)
        return readings


class CgroupSource:
    """Named cgroup v2 folders, e.g. ``process=/sys/fs/cgroup/system.slice/atlaspipe-process.service``."""

    description = "cgroup v2 cpu.stat and memory.current"

    def __init__(self, cgroups: Mapping[str, Path]) -> None:
        self.cgroups = {name: Cgroup(Path(path)) for name, path in cgroups.items()}
        for name, cgroup in self.cgroups.items():
            if not (cgroup.path / "cpu.stat").is_file():
                raise ConfigError(f"--cgroup {name}={cgroup.path}: no cpu.stat there (is it a cgroup v2 folder?)")

    def read(self) -> dict[str, Reading]:
        return {name: read_cgroup(cgroup) for name, cgroup in self.cgroups.items()}


# --------------------------------------------------------------------------- exporters and Prometheus


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
            body: bytes = response.read()
            return body
    except (urllib.error.URLError, OSError) as exc:
        raise AtlaspipeError(f"{url}: {getattr(exc, 'reason', exc)}") from None


def parse_exposition(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of a Prometheus text exposition, by sample name."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


class ExporterSource:
    """Scrape exporters directly: atlaspipe workers (per stage) and any prometheus-client process metrics.

    ``targets`` maps a URL to a service name for non-worker targets (e.g. Flower's ``/metrics``);
    worker exporters name their services from their ``stage`` label.
    """

    description = "exporters, scraped directly"

    def __init__(self, targets: Mapping[str, str | None]) -> None:
        self.targets = dict(targets)

    def read(self) -> dict[str, Reading]:
        cpu: dict[str, float] = {}
        rss: dict[str, float] = {}
        for url, name in self.targets.items():
            samples = parse_exposition(_get(url).decode("utf-8", "replace"))
            if "atlaspipe_worker_cpu_seconds_total" in samples:
                for labels, value in samples["atlaspipe_worker_cpu_seconds_total"]:
                    key = f"worker-{labels.get('stage', 'all')}"
                    cpu[key] = cpu.get(key, 0.0) + value
                for labels, value in samples.get("atlaspipe_worker_resident_memory_bytes", []):
                    key = f"worker-{labels.get('stage', 'all')}"
                    rss[key] = rss.get(key, 0.0) + value
            elif "process_cpu_seconds_total" in samples:
                key = name or urllib.parse.urlsplit(url).hostname or url
                cpu[key] = cpu.get(key, 0.0) + sum(v for _, v in samples["process_cpu_seconds_total"])
                rss[key] = rss.get(key, 0.0) + sum(v for _, v in samples.get("process_resident_memory_bytes", []))
        return {key: Reading(value, rss.get(key, 0.0)) for key, value in cpu.items()}


PROMETHEUS_QUERIES: dict[str, tuple[str, str]] = {
    # service (or "worker" for one per stage) -> (CPU seconds, resident bytes)
    "worker": ("sum by (stage) (atlaspipe_worker_cpu_seconds_total)",
               "sum by (stage) (atlaspipe_worker_resident_memory_bytes)"),
    "flower": ('sum(process_cpu_seconds_total{job="flower"})', 'sum(process_resident_memory_bytes{job="flower"})'),
    "broker": ('sum({__name__=~"(rabbitmq_)?process_cpu_seconds_total",job="rabbitmq"})',
               'sum({__name__=~"(rabbitmq_)?process_resident_memory_bytes",job="rabbitmq"})'),
    # Only if a redis_exporter is scraped as job "redis"; the shipped configuration has none.
    "backend": ('sum({__name__=~"redis_cpu_(sys|user)_seconds_total",job="redis"})',
                'sum(redis_memory_used_rss_bytes{job="redis"})'),
}


class PrometheusSource:
    """Instant queries to a Prometheus server that scrapes the workers, Flower and RabbitMQ.

    Values are as fresh as the last scrape: sample no faster than the scrape interval.
    """

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.description = f"Prometheus at {self.url}"

    def query(self, expression: str) -> list[tuple[dict[str, str], float]]:
        body = _get(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expression})}")
        try:
            payload = json.loads(body)
            result = payload["data"]["result"] if payload.get("status") == "success" else None
        except (ValueError, KeyError, TypeError):
            result = None
        if result is None:
            raise AtlaspipeError(f"{self.url}: unexpected answer to query {expression!r}: {body[:200]!r}")
        return [(dict(item.get("metric", {})), float(item["value"][1])) for item in result]

    def read(self) -> dict[str, Reading]:
        readings: dict[str, Reading] = {}
        for service, (cpu_query, rss_query) in PROMETHEUS_QUERIES.items():
            cpu = self.query(cpu_query)
            rss = {_name(service, labels): value for labels, value in self.query(rss_query)}
            for labels, value in cpu:
                name = _name(service, labels)
                readings[name] = Reading(value, rss.get(name, 0.0))
        return readings


def _name(service: str, labels: Mapping[str, str]) -> str:
    return f"worker-{labels.get('stage', 'all')}" if service == "worker" else service


# --------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class Row:
    """One tidy row of ``cpu_data_<env>.csv``."""

    time: float
    service: str
    cpu_percent: float
    cpu_seconds: float
    rss_bytes: float


CSV_COLUMNS = ("time", "service", "cpu_percent", "cpu_seconds", "rss_bytes")


class Sampler:
    """Turns successive readings into rows: CPU percent of one core over each interval, CPU seconds since start.

    A service that appears later starts from its first reading; a counter that goes back (a restarted
    worker) counts from its new value instead of going negative.
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        self.rows: list[Row] = []
        self._start = 0.0
        self._last: dict[str, tuple[float, float]] = {}
        self._used: dict[str, float] = {}

    def start(self, now: float | None = None) -> None:
        self._start = time.monotonic() if now is None else now
        for service, reading in self.source.read().items():
            self._last[service] = (self._start, reading.cpu_seconds)
            self._used[service] = 0.0

    def sample(self, now: float | None = None) -> list[Row]:
        # The time is taken before reading, as in start(): a slow read shifts both ends alike.
        now = time.monotonic() if now is None else now
        readings = self.source.read()
        rows = []
        for service, reading in sorted(readings.items()):
            last_time, last_cpu = self._last.get(service, (self._start, reading.cpu_seconds))
            delta = reading.cpu_seconds - last_cpu
            if delta < 0:
                delta = 0.0
            self._used[service] = self._used.get(service, 0.0) + delta
            elapsed = now - last_time
            percent = 100.0 * delta / elapsed if elapsed > 0 else 0.0
            self._last[service] = (now, reading.cpu_seconds)
            rows.append(Row(round(now - self._start, 3), service, percent, self._used[service], reading.rss_bytes))
        self.rows.extend(rows)
        return rows

    def totals(self) -> dict[str, float]:
        return dict(self._used)


def write_csv(path: Path, rows: Iterable[Row]) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow([f"{row.time:.3f}", row.service, f"{row.cpu_percent:.3f}", f"{row.cpu_seconds:.4f}",
                             f"{row.rss_bytes:.0f}"])
