"""Load on real workers: many tiny chunks with flat worker memory and a backend that returns to its
size, and many runs back to back or at once, each equal to the same run alone.

The 10,000-chunk run takes about five minutes here; it runs with ``ATLASPIPE_FULL_LOAD=1`` (marker
``load``), and CI runs the same test with 2,000 chunks.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from pathlib import Path

import pytest
import redis

from atlaspipe.errors import AtlaspipeError
from atlaspipe.generate.embedded import embedded_sample_dir
from atlaspipe.model import RunResults, RunState
from atlaspipe.pipeline.celery.records import RunRecords
from tests.conftest import BACKEND_URL, WorkerPool
from tests.faultkit import (
    VHOST,
    fault_pool,  # noqa: F401 - a fixture
    finish,
    histograms,
    rabbitmqctl,
    reference_results,
    results_of,
    run_dir_in,
    run_id_from,
    run_submit,
    start_stages,
    start_submit,
    submitted_run_id,
    wait_for,
)
from tests.integration.test_distributed import write_many_entries_file

pytestmark = pytest.mark.integration


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        found = re.search(r"VmRSS:\s+(\d+) kB", text)
        total += int(found.group(1)) * 1024 if found else 0
    return total


def rabbit_memory() -> int:
    return int(rabbitmqctl("eval", "erlang:memory(total).").stdout.strip())


def redis_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def queue_memory() -> int:
    """Memory of this vhost's queues, in bytes: the broker's share that belongs to these runs."""
    listed = rabbitmqctl("list_queues", "-p", VHOST, "--quiet", "--no-table-headers", "memory").stdout
    return sum(int(n) for n in listed.split() if n.isdigit())


def run_footprint(client: redis.Redis, run_id: str) -> int:
    """Bytes Redis holds for one run: its records and any Celery result of its chunks."""
    keys = [*client.scan_iter(match=f"atlaspipe:run:{run_id}:*", count=1000),
            *client.scan_iter(match=f"celery-task-meta-{run_id}.*", count=1000)]
    return sum(int(client.memory_usage(k) or 0) for k in keys)


def queued_messages() -> int:
    listed = rabbitmqctl("list_queues", "-p", VHOST, "--quiet", "--no-table-headers", "messages").stdout
    return sum(int(n) for n in listed.split() if n.isdigit())


@pytest.mark.parametrize("chunks", [
    2000, pytest.param(10_000, marks=[pytest.mark.load, pytest.mark.skipif(
        os.environ.get("ATLASPIPE_FULL_LOAD") != "1", reason="set ATLASPIPE_FULL_LOAD=1 for the full-size run")]),
])
def test_many_chunks_flat_memory_and_clean_backend(fault_pool: WorkerPool, chunks: int) -> None:  # noqa: F811
    data = fault_pool.tmp / "inputs" / "data_A.4lep.root"
    data.parent.mkdir()
    write_many_entries_file(data, chunks)
    start_stages(fault_pool)
    client = redis.Redis.from_url(BACKEND_URL)
    redis_before, rabbit_before, queues_before = redis_memory(client), rabbit_memory(), queue_memory()
    samples: list[tuple[int, int]] = []
    peak_footprint = [0]
    stop = threading.Event()
    store = RunRecords(BACKEND_URL)
    submitter = start_submit(fault_pool, "--input", str(data), "--chunk-size", "1")
    run_id_box: list[str] = []

    def sample() -> None:
        while not stop.is_set():
            if run_id_box:
                try:
                    done = store.status(run_id_box[0]).chunks_done
                except (redis.RedisError, AtlaspipeError):
                    done = -1
                samples.append((done, rss_bytes(fault_pool.pids("process"))))
                if len(samples) % 20 == 0:
                    peak_footprint[0] = max(peak_footprint[0], run_footprint(client, run_id_box[0]))
            time.sleep(0.5)

    run_id_box.append(submitted_run_id(submitter))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        code, _, err = finish(submitter, timeout=1800)
    finally:
        stop.set()
        sampler.join()
    wall = time.monotonic() - started
    assert code == 0, err[-3000:]
    results = results_of(run_dir_in(fault_pool, run_id_box[0]))
    # Chunks follow the file's clusters, so a few may hold two entries; every entry is read once.
    assert results.chunks.total >= 0.99 * chunks and not results.chunks.failed
    assert results.data.events_read == chunks
    first = sorted(rss for done, rss in samples if 100 <= done < 1000)
    last = sorted(rss for done, rss in samples if done >= chunks - 1000 and done < chunks)
    assert first and last, samples
    rss_first, rss_last = first[len(first) // 2], last[len(last) // 2]
    assert rss_last <= 1.2 * rss_first, (rss_first, rss_last)
    # Results of a successful run are released: the backend and the broker go back to their size.
    wait_for(lambda: queued_messages() == 0, timeout=60, what="empty queues")
    run_id = run_id_box[0]
    rabbit_after, queues_after = rabbit_memory(), queue_memory()
    # The workers' connection buffers count in Redis's used_memory until they disconnect.
    fault_pool.stop_all()
    # Shared with other sessions: reported below, while the run's own share is asserted.
    with contextlib.suppress(AssertionError):
        wait_for(lambda: redis_memory(client) < redis_before + 1024 * 1024, timeout=10, interval=1)
    redis_after = redis_memory(client)
    # No task stores a Celery result: the run records hold every outcome.
    metas = [client.get(k) for k in client.scan_iter(match="celery-task-meta-*", count=1000)]
    assert not [v for v in metas if isinstance(v, bytes) and run_id.encode() in v]
    assert not client.exists(f"atlaspipe:run:{run_id}:results")
    # Redis and RabbitMQ are shared with other sessions, so the run's own share is what is checked;
    # the global figures are printed.
    footprint = run_footprint(client, run_id)
    assert footprint < 256 * 1024, footprint
    # An emptied queue's process keeps a few MiB of heap until it hibernates; bounded, not per chunk.
    assert queues_after < queues_before + 8 * 1024 * 1024, (queues_before, queues_after)
    print(f"{chunks} chunks in {wall:.1f} s ({chunks / wall:.0f} chunks/s); process worker RSS median "
          f"{rss_first / 2**20:.1f} MiB (chunks 100-1000) -> {rss_last / 2**20:.1f} MiB (last 1000); "
          f"run's Redis footprint peak {peak_footprint[0] / 2**20:.2f} MiB -> {footprint / 2**10:.1f} KiB after; "
          f"Redis used_memory {redis_before / 2**20:.2f} -> {redis_after / 2**20:.2f} MiB; vhost queues "
          f"{queues_before / 2**10:.0f} -> {queues_after / 2**10:.0f} KiB; RabbitMQ total "
          f"{rabbit_before / 2**20:.1f} -> {rabbit_after / 2**20:.1f} MiB")


def small_inputs(folder: Path) -> Path:
    import shutil

    folder.mkdir()
    for name in ("Data/data_A.4lep.root", "Data/data_B.4lep.root", "MC/mc_345060.ggH125_ZZ4lep.4lep.root",
                 "MC/mc_363490.llll.4lep.root"):
        shutil.copyfile(embedded_sample_dir() / name, folder / Path(name).name)
    return folder


def assert_equal_to_alone(run_dir: Path, inputs: Path, chunk_size: int) -> RunResults:
    results = results_of(run_dir)
    assert results.status == "complete"
    assert histograms(results) == histograms(reference_results(inputs, chunk_size))
    return results


def test_ten_runs_back_to_back_and_two_at_once(fault_pool: WorkerPool) -> None:  # noqa: F811
    inputs = small_inputs(fault_pool.tmp / "inputs")
    start_stages(fault_pool)
    sizes = [400 + 100 * i for i in range(10)]
    run_ids = []
    for size in sizes:
        completed = run_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(size), "--no-wait")
        assert completed.returncode == 0, completed.stderr
        run_ids.append(run_id_from(completed.stderr))
    store = RunRecords(BACKEND_URL)
    wait_for(lambda: all(store.status(r).terminal for r in run_ids), timeout=300, interval=0.5, what="ten runs")
    for run_id, size in zip(run_ids, sizes, strict=True):
        assert store.status(run_id).state is RunState.SUCCEEDED
        assert_equal_to_alone(run_dir_in(fault_pool, run_id), inputs, size)
    pair = [start_submit(fault_pool, "--input", str(inputs), "--chunk-size", str(size)) for size in (300, 700)]
    for submitter, size in zip(pair, (300, 700), strict=True):
        code, _, err = finish(submitter)
        assert code == 0, err[-3000:]
        assert_equal_to_alone(run_dir_in(fault_pool, run_id_from(err)), inputs, size)

