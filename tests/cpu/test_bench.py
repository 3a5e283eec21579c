"""The benchmark's sampling: CSV schema, /proc and cgroup v2 readings, exporters, rates from readings."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from atlaspipe.cpu.bench import plot_usage, summarise
from atlaspipe.cpu.sampling import (
    CSV_COLUMNS,
    Cgroup,
    CgroupSource,
    ExporterSource,
    LocalSource,
    Reading,
    Sampler,
    cgroup_v2_path,
    classify,
    service_port,
    write_csv,
)
from atlaspipe.errors import ConfigError


class ScriptedSource:
    """Readings given in advance, one dict per call."""

    description = "scripted"

    def __init__(self, readings: list[dict[str, Reading]]) -> None:
        self.readings = iter(readings)

    def read(self) -> dict[str, Reading]:
        return next(self.readings)


def test_sampler_rates_totals_and_csv_schema(tmp_path: Path) -> None:
    source = ScriptedSource([
        {"broker": Reading(100.0, 5e6), "worker-process": Reading(10.0, 1e8)},
        {"broker": Reading(100.5, 5e6), "worker-process": Reading(12.0, 2e8)},
        # the process worker restarted (its counter went back); a new service appears
        {"broker": Reading(101.0, 6e6), "worker-process": Reading(0.5, 1e8), "flower": Reading(3.0, 4e7)},
    ])
    sampler = Sampler(source)
    sampler.start(now=0.0)
    sampler.sample(now=1.0)
    sampler.sample(now=2.0)
    by = {(r.time, r.service): r for r in sampler.rows}
    assert by[(1.0, "worker-process")].cpu_percent == pytest.approx(200.0)
    assert by[(1.0, "broker")].cpu_percent == pytest.approx(50.0)
    assert by[(2.0, "worker-process")].cpu_percent == 0.0
    assert by[(2.0, "worker-process")].cpu_seconds == pytest.approx(2.0)
    assert by[(2.0, "flower")].cpu_seconds == 0.0
    assert sampler.totals() == pytest.approx({"broker": 1.0, "worker-process": 2.0, "flower": 0.0})

    path = tmp_path / "cpu_data_x.csv"
    write_csv(path, sampler.rows)
    with path.open() as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS == ("time", "service", "cpu_percent", "cpu_seconds",
                                                                  "rss_bytes")
        rows = list(reader)
    assert len(rows) == 5
    for row in rows:
        assert float(row["time"]) > 0 and row["service"]
        assert float(row["cpu_percent"]) >= 0 and float(row["cpu_seconds"]) >= 0 and int(row["rss_bytes"]) > 0

    summary = summarise("x", sampler.rows, sampler.totals(), wall=2.0, events=500_000, extra={"run_id": "r"})
    assert summary["events_per_second"] == 250_000
    assert summary["cpu_seconds_total"] == pytest.approx(3.0)
    assert summary["cpu_seconds_per_million_events"]["worker-process"] == pytest.approx(4.0)
    assert summary["cpu_seconds_per_million_events_total"] == pytest.approx(6.0)
    assert summary["peak_rss_bytes"]["worker-process"] == 200_000_000
    json.dumps(summary)
    plot_usage(tmp_path / "cpu_usage_x.png", "x", sampler.rows)
    assert (tmp_path / "cpu_usage_x.png").stat().st_size > 5000


@pytest.mark.parametrize(("cmdline", "service"), [
    (["/usr/lib/erlang/erts-13/bin/beam.smp", "-W", "w"], "broker"),
    (["redis-server", "127.0.0.1:6379"], "backend"),
    (["/venv/bin/python3", "/venv/bin/celery", "-A", "atlaspipe", "worker", "-Q", "process", "-c", "2"],
     "worker-process"),
    (["python", "-m", "celery", "-A", "atlaspipe", "worker", "--queues=plot,aggregate"], "worker-aggregate,plot"),
    (["celery", "-A", "atlaspipe", "worker", "-Qload"], "worker-load"),
    (["celery", "-A", "atlaspipe", "flower", "--port=5555"], "flower"),
    (["python", "-m", "pytest", "-k", "worker"], None),
    (["bash", "-c", "echo celery worker"], None),
])
def test_processes_are_classified_by_command_line(cmdline: list[str], service: str | None) -> None:
    assert classify(cmdline, Path(cmdline[0]).name) == service


def test_split_workers_names_each_node() -> None:
    cmdline = ["celery", "-A", "atlaspipe", "worker", "-Q", "process", "-n", "process-a@host"]
    assert classify(cmdline, "celery", split_workers=True) == "worker-process-process-a"


BUSY_WORKER = textwrap.dedent("""
    import os, sys, time
    def burn(seconds):
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass
    child = os.fork()
    if child == 0:          # an exited pool child: its CPU must still count, through the parent
        burn(0.4)
        os._exit(0)
    os.waitpid(child, 0)
    if os.fork() == 0:      # a live pool child
        burn(0.4)
        time.sleep(60)
        os._exit(0)
    burn(0.2)
    print("ready", flush=True)
    time.sleep(60)
""")


@pytest.fixture
def fake_worker(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process whose command line looks like a celery process worker, with a live and a reaped child."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "celery"
    script.write_text(f"#!{sys.executable}\n{BUSY_WORKER}")
    script.chmod(0o755)
    process = subprocess.Popen([str(script), "-A", "fake", "worker", "-Q", "benchtest"], stdout=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # let the live child finish burning
        yield process
    finally:
        os.killpg(process.pid, 9)
        process.wait()


@pytest.mark.usefixtures("fake_worker")
def test_local_source_counts_pool_children_live_and_reaped() -> None:
    readings = LocalSource().read()
    worker = readings["worker-benchtest"]
    # 0.2 s main + 0.4 s reaped child + 0.4 s live child, of CPU time; scheduler ticks round it a bit
    assert 0.85 <= worker.cpu_seconds <= 1.6, worker
    assert worker.rss_bytes > 5_000_000


def test_cgroup_v2_files_are_read_for_a_service_alone_in_its_cgroup(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    unit = root / "system.slice" / "redis.service"
    unit.mkdir(parents=True)
    (unit / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    (unit / "memory.current").write_text("7340032\n")
    (unit / "cgroup.procs").write_text("4242\n")
    cgroup = Cgroup.of("/system.slice/redis.service", root)
    assert cgroup is not None and cgroup.pids() == {4242}
    assert CgroupSource({"backend": unit}).read() == {"backend": Reading(2.5, 7340032.0)}
    assert Cgroup.of("/system.slice/absent.service", root) is None
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "cgroup").write_text("1:cpu:/\n0::/system.slice/redis.service\n")
    assert cgroup_v2_path(4242, proc) == "/system.slice/redis.service"
    with pytest.raises(ConfigError, match=r"no cpu\.stat"):
        CgroupSource({"x": tmp_path})


def test_exporter_source_reads_worker_and_process_metrics() -> None:
    worker_text = textwrap.dedent("""\
        # TYPE atlaspipe_worker_cpu_seconds_total counter
        atlaspipe_worker_cpu_seconds_total{stage="process",worker="p1@h"} 12.5
        # TYPE atlaspipe_worker_resident_memory_bytes gauge
        atlaspipe_worker_resident_memory_bytes{stage="process",worker="p1@h"} 3e8
        """)
    flower_text = textwrap.dedent("""\
        # TYPE process_cpu_seconds_total counter
        process_cpu_seconds_total 4.25
        # TYPE process_resident_memory_bytes gauge
        process_resident_memory_bytes 9e7
        """)
    pages = {"/w": worker_text, "/f": flower_text}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages[self.path].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        readings = ExporterSource({f"{base}/w": None, f"{base}/f": "flower"}).read()
    finally:
        server.shutdown()
    assert readings == {"worker-process": Reading(12.5, 3e8), "flower": Reading(4.25, 9e7)}


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_local_source_counts_only_the_deployments_own_redis(tmp_path: Path) -> None:
    import psutil

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                c.status == "LISTEN" for c in psutil.Process(server.pid).net_connections(kind="tcp")):
            time.sleep(0.05)
        ours = LocalSource(backend_url=f"redis://127.0.0.1:{port}/10")
        other = LocalSource(backend_url=f"redis://127.0.0.1:{port + 1 if port < 65535 else port - 1}/10")
        process = psutil.Process(server.pid)
        assert ours._serves_us(process, "backend")
        assert not other._serves_us(process, "backend")
        # A backend on another host: no local Redis can be told apart, so each is counted.
        assert LocalSource(backend_url="redis://redis.example:6379/0")._serves_us(process, "backend")
        assert service_port("amqp://guest:guest@127.0.0.1:5673//", 5672) == 5673
        assert service_port("redis://localhost/0", 6379) == 6379
    finally:
        server.terminate()
        server.wait(10)
