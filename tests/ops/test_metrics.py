"""The worker exporter: metric names and values after a real run, across prefork children; Flower's auth check."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from atlaspipe.errors import ConfigError
from atlaspipe.ops.families import FAMILIES, family_of
from atlaspipe.ops.flower import check_flower_auth, flower_argv
from atlaspipe.ops.metrics import WorkerResourceCollector
from tests.conftest import IN_CI, REPO, WorkerPool
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


def total(samples: dict[str, list[tuple[dict[str, str], float]]], family: str, /, **labels: str) -> float:
    return sum(v for lab, v in samples.get(family, []) if all(lab.get(k) == x for k, x in labels.items()))


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
            # 'ready' once the live child has burnt its share: on a loaded machine it may take a while.
            "if os.fork()==0:\n    burn(0.3); print('ready',flush=True); time.sleep(30); os._exit(0)\n"
            "time.sleep(30)\n")
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


PROMTOOL = shutil.which("promtool")


def promtool_lint(text: str) -> None:
    """``promtool check metrics`` on a scrape: skipped without promtool, except in CI."""
    if PROMTOOL is None:
        if IN_CI:
            pytest.fail("promtool is not installed (required in CI; scripts/system-packages.sh)")
        return
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True,
                             timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the exporter exited"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port} after {timeout} s")


TASKS = ("atlaspipe.aggregate_run", "atlaspipe.cancel_run", "atlaspipe.clean_runs", "atlaspipe.finalize_run",
         "atlaspipe.plan_run", "atlaspipe.process_chunk", "atlaspipe.render_piece", "atlaspipe.resume_run")
EVENTS = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked")


@pytest.mark.integration
def test_exporter_values_after_a_run_across_prefork_children(worker_pool: WorkerPool) -> None:
    process_port, load_port, late_port, exporter_port = free_port(), free_port(), free_port(), free_port()
    multiproc = worker_pool.tmp / "multiproc"
    names = [
        worker_pool.start("load", "load", extra_env={"ATLASPIPE_METRICS_PORT": str(load_port)}, wait=False),
        worker_pool.start("process", "process", concurrency=2, wait=False, extra_env={
            "ATLASPIPE_METRICS_PORT": str(process_port), "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}),
        worker_pool.start("late", "aggregate,plot", wait=False,
                          extra_env={"ATLASPIPE_METRICS_PORT": str(late_port)}),
    ]
    exporter = subprocess.Popen([sys.executable, "-m", "atlaspipe", "exporter", "--address", "127.0.0.1",
                                 "--port", str(exporter_port)], cwd=worker_pool.tmp, env=worker_pool.env,
                                stdout=subprocess.DEVNULL, stderr=(worker_pool.tmp / "exporter.log").open("wb"))
    try:
        worker_pool.wait_ready(names)
        wait_for_port(exporter_port, exporter)
        children = worker_pool.pids("process")[1:]
        assert len(children) == 2
        process_host = names[1]

        # Before any task: every counter of every task is there, at zero.
        before = scrape(process_port)
        for event in EVENTS:
            assert {(lab["name"], lab["hostname"]) for lab, _ in before[f"celery_task_{event}_total"]} == \
                {(task, process_host) for task in TASKS}, event
            assert total(before, f"celery_task_{event}_total") == 0
        assert total(before, "atlaspipe_tasks_failed_total", stage="process", task="atlaspipe.process_chunk") == 0
        assert [v for _, v in before["celery_worker_tasks_active"]] == [0]

        completed = submit(worker_pool, "--chunk-size", "300")
        assert completed.returncode == 0, completed.stderr[-3000:]
        run_id = run_dir_of(completed).name
        results = json.loads((run_dir_of(completed) / "results.json").read_text())
        chunks = results["chunks"]["total"]
        events_read = results["data"]["events_read"] + sum(s["events_read"] for s in results["samples"].values())
        events_selected = results["data"]["events_selected"] + sum(
            s["events_selected"] for s in results["samples"].values())
        assert chunks > 20

        texts = {port: scrape_text(port) for port in (process_port, load_port, late_port, exporter_port)}
        for text in texts.values():
            promtool_lint(text)
            assert "pid=" not in text
        # Exactly the documented families (atlaspipe.ops.families), each from its documented source.
        from atlaspipe.cpu.sampling import parse_exposition

        def served(*ports: int) -> set[str]:
            return {family_of(name) for port in ports for name in parse_exposition(texts[port])}

        assert served(process_port, load_port, late_port) == {f.name for f in FAMILIES if f.source == "worker"}
        assert served(exporter_port) == {f.name for f in FAMILIES if f.source == "exporter"}

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

        chunk = {"name": "atlaspipe.process_chunk", "hostname": process_host}
        for event in ("received", "started", "succeeded"):
            assert total(samples, f"celery_task_{event}_total", **chunk) == chunks, event
        for event in ("failed", "retried", "revoked"):
            assert total(samples, f"celery_task_{event}_total") == 0, event
        # The process worker's pool children publish the aggregation (the chord callback, and the
        # completing chunk's own trigger; the claim lets only one of them run).
        sent = {lab["name"]: v for lab, v in samples["celery_task_sent_total"] if v}
        assert set(sent) == {"atlaspipe.aggregate_run"} and sent["atlaspipe.aggregate_run"] >= 1
        assert total(samples, "celery_task_runtime_count", **chunk) == chunks
        assert total(samples, "celery_task_runtime_sum", **chunk) > 0
        assert total(samples, "celery_worker_tasks_active", hostname=process_host) == 0

        # Both pool children ran chunks and wrote their own files; the exporter merged them.
        writers = {int(p.stem.rsplit("_", 1)[1]) for p in multiproc.glob("counter_*.db")}
        assert set(children) <= writers
        roles = {lab["role"]: v for lab, v in samples["atlaspipe_worker_process_cpu_seconds_total"]}
        assert set(roles) == {"main", "pool"} and all(v > 0 for v in roles.values())
        worker_cpu = total(samples, "atlaspipe_worker_cpu_seconds_total", stage="process")
        assert worker_cpu >= sum(roles.values()) - 0.05
        assert total(samples, "atlaspipe_worker_pool_processes") == 2
        assert total(samples, "atlaspipe_worker_resident_memory_bytes") > 50e6

        # The load worker planned the run and sent the chunks; the late stages share one worker,
        # whose own resources carry one stage label without a comma.
        load = scrape(load_port)
        assert total(load, "atlaspipe_tasks_succeeded_total", stage="load", task="atlaspipe.plan_run") == 1
        assert total(load, "celery_task_succeeded_total", name="atlaspipe.plan_run", hostname=names[0]) == 1
        assert total(load, "celery_task_sent_total", name="atlaspipe.process_chunk", hostname=names[0]) == chunks
        late = scrape(late_port)
        assert {lab["stage"] for lab, _ in late["atlaspipe_worker_cpu_seconds_total"]} == {"aggregate+plot"}
        assert total(late, "atlaspipe_tasks_succeeded_total", stage="aggregate") >= 1  # a duplicate is a no-op
        assert total(late, "atlaspipe_tasks_succeeded_total", stage="plot") >= 1
        assert total(late, "celery_task_succeeded_total", name="atlaspipe.finalize_run", hostname=names[2]) >= 1

        cluster = scrape(exporter_port)
        assert {lab["queue_name"]: v for lab, v in cluster["celery_queue_length"]} == \
            {"load": 0, "process": 0, "aggregate": 0, "plot": 0}
        assert {lab["queue_name"]: v for lab, v in cluster["celery_queue_consumers"]} == \
            {"load": 1, "process": 1, "aggregate": 1, "plot": 1}
        assert {lab["hostname"]: v for lab, v in cluster["celery_worker_up"]} == dict.fromkeys(names, 1)
        assert total(cluster, "atlaspipe_runs", state="succeeded") >= 1
        assert total(cluster, "atlaspipe_runs_stalled") == 0
        assert total(cluster, "atlaspipe_broker_up") == total(cluster, "atlaspipe_backend_up") == 1
        assert run_id

        # Naming conventions, on everything the workers serve.
        from prometheus_client.parser import text_string_to_metric_families

        families = list(text_string_to_metric_families(texts[process_port]))
        assert families and all(f.name.startswith(("atlaspipe_", "celery_")) for f in families)
        for family in families:
            for sample in family.samples:
                if family.type == "counter":
                    assert sample.name.endswith("_total"), sample.name

        # A worker killed without a goodbye is down once its heartbeats are late; one that shuts
        # down cleanly (worker-offline) is simply gone. Neither leaves a consumer on its queues.
        worker_pool.stop("late", signal.SIGKILL)
        worker_pool.stop("load")
        deadline = time.monotonic() + 40
        while True:
            stopped = scrape(exporter_port)
            up = {lab["hostname"]: v for lab, v in stopped["celery_worker_up"]}
            if up == {names[1]: 1, names[2]: 0} or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert up == {names[1]: 1, names[2]: 0}
        assert total(stopped, "celery_queue_consumers", queue_name="plot") == 0
        assert total(stopped, "celery_queue_consumers", queue_name="load") == 0

        # A child's live gauge file goes when the child does (mark_process_dead on process shutdown).
        worker_pool.stop("process")
        assert not list(multiproc.glob("gauge_livesum_*.db"))
    finally:
        exporter.terminate()
        exporter.wait(30)
