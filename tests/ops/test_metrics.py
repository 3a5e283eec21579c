"""The worker exporter: metric names and values after a real run, across prefork children; Flower's auth check."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from atlaspipe.errors import ConfigError
from atlaspipe.ops.flower import check_flower_auth, flower_argv
from atlaspipe.ops.metrics import WorkerResourceCollector
from tests.conftest import REPO, WorkerPool
from tests.integration.test_distributed import run_dir_of, submit


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    from atlaspipe.cpu.sampling import parse_exposition

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return parse_exposition(response.read().decode())


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


# --------------------------------------------------------------------------- Flower


@pytest.mark.parametrize(("arguments", "environ"), [
    (["--address=127.0.0.1"], {}),
    (["--address", "::1"], {}),
    (["--address=0.0.0.0"], {"FLOWER_BASIC_AUTH": "admin:s3cret"}),
    ([], {"FLOWER_BASIC_AUTH": "a:b,c:d"}),
    (["--basic-auth=admin:pw"], {}),
    (["--auth=.*@example\\.org"], {}),
    ([], {"FLOWER_ADDRESS": "localhost"}),
])
def test_flower_is_allowed_on_localhost_or_with_auth(arguments: list[str], environ: dict[str, str],
                                                     tmp_path: Path) -> None:
    check_flower_auth(arguments, environ, config_file=tmp_path / "absent.py")


@pytest.mark.parametrize(("arguments", "environ", "message"), [
    ([], {}, "all interfaces without authentication"),
    (["--address=0.0.0.0"], {}, "0.0.0.0 without authentication"),
    (["--address=10.1.2.3"], {"FLOWER_BASIC_AUTH": ""}, "without authentication"),
    (["--address=0.0.0.0"], {"FLOWER_BASIC_AUTH": "admin:"}, "non-empty password"),
    ([], {"FLOWER_BASIC_AUTH": "admin"}, "non-empty password"),
])
def test_flower_beyond_localhost_without_auth_is_refused(arguments: list[str], environ: dict[str, str],
                                                         message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        check_flower_auth(arguments, environ, config_file=tmp_path / "absent.py")


def test_flowerconfig_file_settings_count(tmp_path: Path) -> None:
    conf = tmp_path / "flowerconfig.py"
    conf.write_text("address = '0.0.0.0'\n")
    with pytest.raises(ConfigError):
        check_flower_auth([], {}, config_file=conf)
    conf.write_text("address = '0.0.0.0'\nbasic_auth = ['ops:long-password']\n")
    check_flower_auth([], {}, config_file=conf)


def test_flower_options_are_handed_over_in_the_form_flower_parses() -> None:
    assert flower_argv(["--port", "5599", "--address=127.0.0.1", "--persistent"]) == [
        "--port=5599", "--address=127.0.0.1", "--persistent"]


def test_atlaspipe_flower_refuses_to_start_unauthenticated(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    env["PYTHONPATH"] = str(REPO)
    completed = subprocess.run([sys.executable, "-m", "atlaspipe", "flower", "--address", "0.0.0.0",
                                "--port", str(free_port())], env=env, cwd=tmp_path, capture_output=True, text=True,
                               timeout=60, check=False)
    assert completed.returncode == 2
    assert completed.stderr.startswith("atlaspipe: error: Flower would listen on 0.0.0.0 without authentication")
    assert "Traceback" not in completed.stderr


# --------------------------------------------------------------------------- CPU and memory collector


def test_resource_collector_covers_children_and_reaped_ones() -> None:
    code = ("import os,time\n"
            "def burn(s):\n"
            "    end=time.process_time()+s\n"
            "    while time.process_time()<end: pass\n"
            "c=os.fork()\n"
            "if c==0:\n    burn(0.3); os._exit(0)\n"
            "os.waitpid(c,0)\n"
            "if os.fork()==0:\n    burn(0.3); time.sleep(30); os._exit(0)\n"
            "print('ready',flush=True); time.sleep(30)\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        families = {f.name: f for f in WorkerResourceCollector(process.pid, "w@h", "process").collect()}
    finally:
        os.killpg(process.pid, 9)
        process.wait()
    cpu = families["atlaspipe_worker_cpu_seconds"].samples[0]
    assert cpu.name == "atlaspipe_worker_cpu_seconds_total" and cpu.labels == {"worker": "w@h", "stage": "process"}
    assert 0.5 <= cpu.value <= 1.2
    per_process = families["atlaspipe_worker_process_cpu_seconds"].samples
    assert sorted(s.labels["role"] for s in per_process) == ["main", "pool"]
    assert families["atlaspipe_worker_pool_processes"].samples[0].value == 1
    assert families["atlaspipe_worker_resident_memory_bytes"].samples[0].value > 5e6


# --------------------------------------------------------------------------- a real run


@pytest.mark.integration
def test_exporter_values_after_a_run_across_prefork_children(worker_pool: WorkerPool) -> None:
    process_port, load_port = free_port(), free_port()
    multiproc = worker_pool.tmp / "multiproc"
    names = [
        worker_pool.start("load", "load", extra_env={"ATLASPIPE_METRICS_PORT": str(load_port)}, wait=False),
        worker_pool.start("process", "process", concurrency=2, wait=False, extra_env={
            "ATLASPIPE_METRICS_PORT": str(process_port), "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}),
        worker_pool.start("aggregate", "aggregate", wait=False),
        worker_pool.start("plot", "plot", wait=False),
    ]
    worker_pool.wait_ready(names)
    children = worker_pool.pids("process")[1:]
    assert len(children) == 2

    completed = submit(worker_pool, "--chunk-size", "300")
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((run_dir_of(completed) / "results.json").read_text())
    chunks = results["chunks"]["total"]
    events_read = results["data"]["events_read"] + sum(s["events_read"] for s in results["samples"].values())
    events_selected = results["data"]["events_selected"] + sum(
        s["events_selected"] for s in results["samples"].values())
    assert chunks > 20

    samples = scrape(process_port)
    task = {"stage": "process", "task": "atlaspipe.process_chunk"}
    assert total(samples, "atlaspipe_tasks_started_total", **task) == chunks
    assert total(samples, "atlaspipe_tasks_succeeded_total", **task) == chunks
    assert total(samples, "atlaspipe_tasks_failed_total") == 0
    assert total(samples, "atlaspipe_task_duration_seconds_count", stage="process") == chunks
    assert total(samples, "atlaspipe_task_queue_wait_seconds_count", stage="process") == chunks
    assert total(samples, "atlaspipe_task_queue_wait_seconds_sum", stage="process") > 0
    assert total(samples, "atlaspipe_tasks_in_progress") == 0
    assert total(samples, "atlaspipe_events_read_total") == events_read
    assert total(samples, "atlaspipe_events_selected_total") == events_selected
    assert total(samples, "atlaspipe_events_read_total", sample="data_A") == \
        results["data"]["samples"]["data_A"]["events_read"]
    assert total(samples, "atlaspipe_bytes_read_total") > 0

    # Both pool children ran chunks and wrote their own files; the exporter merged them.
    writers = {int(p.stem.rsplit("_", 1)[1]) for p in multiproc.glob("counter_*.db")}
    assert writers == set(children)
    per_process = {lab["pid"]: (lab["role"], v) for lab, v in samples["atlaspipe_worker_process_cpu_seconds_total"]}
    assert {int(pid) for pid, (role, _) in per_process.items() if role == "pool"} == set(children)
    assert all(v > 0 for _, v in per_process.values())
    worker_cpu = total(samples, "atlaspipe_worker_cpu_seconds_total", stage="process")
    assert worker_cpu >= sum(v for _, v in per_process.values()) - 0.05
    assert total(samples, "atlaspipe_worker_pool_processes") == 2
    assert total(samples, "atlaspipe_worker_resident_memory_bytes") > 50e6

    load = scrape(load_port)
    assert total(load, "atlaspipe_tasks_succeeded_total", stage="load", task="atlaspipe.plan_run") == 1

    # Naming conventions, on everything the exporter serves.
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{process_port}/metrics", timeout=10) as response:
        families = list(text_string_to_metric_families(response.read().decode()))
    assert families and all(f.name.startswith("atlaspipe_") for f in families)
    for family in families:
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith("_total"), sample.name
            if family.type == "histogram":
                assert family.name.endswith("_seconds"), family.name

    # A child's live gauge file goes when the child does (mark_process_dead on process shutdown).
    worker_pool.stop("process")
    assert not list(multiproc.glob("gauge_livesum_*.db"))
    assert len(list(multiproc.glob("counter_*.db"))) == 2
