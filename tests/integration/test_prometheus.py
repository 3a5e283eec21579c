"""Debian's Prometheus scraping real workers and Flower; counters read back through its HTTP API; bench from it."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, REPO, WorkerPool
from tests.ops.test_metrics import free_port

pytestmark = pytest.mark.integration


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        reason = "Debian's prometheus is not installed (apt-get install -y prometheus)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def query(base: str, expression: str) -> list[dict[str, Any]]:
    answer = get_json(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expression})}")
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def flower(worker_pool: WorkerPool) -> Iterator[int]:
    """Flower on loopback with basic auth from a secret file, as `atlaspipe flower`, its options as the
    README writes them (``--port N``)."""
    port = free_port()
    secret = worker_pool.tmp / "flower-auth"
    secret.write_text("ops:test-password\n")
    log = (worker_pool.tmp / "flower.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "atlaspipe", "flower", "--address", "127.0.0.1", "--port", str(port)],
        cwd=worker_pool.tmp, env={**worker_pool.env, "FLOWER_BASIC_AUTH_FILE": str(secret)},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2).status == 200,
                 60, "Flower")
        yield port
    finally:
        process.terminate()
        process.wait(20)
        log.close()


@pytest.fixture
def prometheus(worker_pool: WorkerPool, flower: int) -> Iterator[tuple[str, dict[str, int]]]:
    """Workers with exporters (process at concurrency 2) and a Prometheus scraping them every second."""
    binary = prometheus_binary()
    ports = {stage: free_port() for stage in ("load", "process", "aggregate", "plot")}
    names = [worker_pool.start(stage, stage, concurrency=2 if stage == "process" else 1, wait=False,
                               extra_env={"ATLASPIPE_METRICS_PORT": str(port),
                                          # Flower turns task events on only after a few seconds;
                                          # this test counts every chunk's event from the first.
                                          "ATLASPIPE_TASK_EVENTS": "1"}) for stage, port in ports.items()]
    worker_pool.wait_ready(names)
    config = worker_pool.tmp / "prometheus.yml"
    targets = ", ".join(f'"127.0.0.1:{p}"' for p in ports.values())
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: [\"{REPO / 'ops' / 'prometheus' / 'alerts.yml'}\"]\n"
        "scrape_configs:\n"
        f"  - job_name: atlaspipe-workers\n    static_configs:\n      - targets: [{targets}]\n"
        f"  - job_name: flower\n    static_configs:\n      - targets: [\"127.0.0.1:{flower}\"]\n"
    )
    web_port = free_port()
    log = (worker_pool.tmp / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={worker_pool.tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{web_port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{web_port}"
    try:
        wait_for(lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200, 60, "Prometheus")
        wait_for(lambda: len([r for r in query(base, "up") if r["value"][1] == "1"]) == 5, 30,
                 "all five targets up")
        yield base, ports
    finally:
        process.terminate()
        process.wait(20)
        log.close()


@pytest.mark.usefixtures("flower")
def test_prometheus_counts_every_chunk_and_bench_reads_it(worker_pool: WorkerPool,
                                                          prometheus: tuple[str, dict[str, int]]) -> None:
    base, _ports = prometheus
    out = worker_pool.tmp / "bench"
    completed = subprocess.run(
        [sys.executable, "-m", "atlaspipe", "bench", "--env", "prom", "--output", str(out), "--prometheus-url",
         base, "--interval", "1", "--chunk-size", "500"],
        env=worker_pool.env, cwd=worker_pool.tmp, capture_output=True, text=True, timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((out / "summary_prom.json").read_text())
    assert summary["state"] == "succeeded"
    chunks = summary["chunks"]
    assert chunks > 10

    succeeded = 'sum(atlaspipe_tasks_succeeded_total{task="atlaspipe.process_chunk"})'
    wait_for(lambda: float(query(base, succeeded)[0]["value"][1]) == chunks, 15, "the last scrape")
    started = query(base, 'sum(atlaspipe_tasks_started_total{task="atlaspipe.process_chunk"})')
    assert float(started[0]["value"][1]) == chunks
    assert not query(base, "atlaspipe_tasks_failed_total > 0")
    events = query(base, "sum(atlaspipe_events_read_total)")
    assert float(events[0]["value"][1]) == summary["events"] > 0
    planned = query(base, 'sum(atlaspipe_tasks_succeeded_total{stage="load",task="atlaspipe.plan_run"})')
    assert float(planned[0]["value"][1]) == 1
    # Completion may be attempted by more than one party (guarded by a claim): at least once each.
    # The finalize task's counter lands after the submitter has returned: wait for the next scrape.
    for stage in ("aggregate", "plot"):
        done = f'sum(atlaspipe_tasks_succeeded_total{{stage="{stage}"}})'
        wait_for(lambda done=done: bool(query(base, done)) and float(query(base, done)[0]["value"][1]) >= 1,
                 15, f"the {stage} counter")
    # One series for the pool, however many children it had (no pid label).
    children = query(base, 'atlaspipe_worker_process_cpu_seconds_total{stage="process",role="pool"}')
    assert len(children) == 1 and float(children[0]["value"][1]) > 0

    # The shipped alert rules load and evaluate on these series; none fires after a clean run.
    rules = get_json(f"{base}/api/v1/rules")["data"]["groups"]
    alerts = {r["name"]: r for group in rules for r in group["rules"] if r["type"] == "alerting"}
    assert {"AtlaspipeWorkerDown", "AtlaspipeTaskFailureRate", "AtlaspipeRunStalled",
            "AtlaspipeBacklogWithoutConsumers"} <= set(alerts)
    wait_for(lambda: all(r["health"] == "ok" for group in get_json(f"{base}/api/v1/rules")["data"]["groups"]
                         for r in group["rules"]), 15, "every rule evaluated")
    assert not [a for a in get_json(f"{base}/api/v1/alerts")["data"]["alerts"] if a["state"] == "firing"]

    # Flower's own /metrics, populated from the workers' task events.
    flower_succeeded = 'sum(flower_events_total{task="atlaspipe.process_chunk",type="task-succeeded"})'
    wait_for(lambda: bool(query(base, flower_succeeded))
             and float(query(base, flower_succeeded)[0]["value"][1]) == chunks, 15, "Flower's count")

    # The bench's CSV, sampled from Prometheus: every stage and Flower, in the tidy schema.
    with (out / "cpu_data_prom.csv").open() as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["time", "service", "cpu_percent", "cpu_seconds", "rss_bytes"]
        rows = list(reader)
    services = {r["service"] for r in rows}
    assert {"worker-load", "worker-process", "worker-aggregate", "worker-plot", "flower"} <= services
    assert summary["cpu_seconds"]["worker-process"] > 0 and summary["cpu_seconds"]["worker-plot"] > 0
    assert (out / "cpu_usage_prom.png").stat().st_size > 5000
    assert (out / "cpu_data_prom.csv").stat().st_size > 0
