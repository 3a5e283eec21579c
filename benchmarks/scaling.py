"""Beyond this machine: what one chunk costs RabbitMQ and Redis, and where they saturate.

``python benchmarks/scaling.py`` (about 5 minutes on 2 cores) does two things, both on a private
RabbitMQ node and a private ``redis-server`` on free loopback ports (tests/private_services.py),
so the shared services on 5672/6379 are never touched:

1. **Cost of a real chunk.** Real ``celery -A atlaspipe worker`` processes (compare.Cluster) run two
   distributed runs of one-entry chunks through ``atlaspipe-submit``; the broker's global message
   counters (``rabbit_global_counters``) and Redis' ``INFO commandstats`` are read around each run,
   and ``MONITOR`` tells the commands a client sent from those its Lua scripts ran. The difference
   between the two runs divided by the difference of their chunk counts is the cost of one chunk
   (the fixed cost of a run, plan + aggregate + finalize, cancels out).
2. **Load test.** Simulated workers, threads spread over a few processes, each with its own AMQP
   connection (prefetch 1, manual ack) and its own Redis connection, do for every message exactly
   what a real ``process_chunk`` does on the services: consume, the run records' ``start_chunk``
   and ``store_chunk`` Lua scripts (the real ``RunRecords`` with a real chunk result), the status
   read when the store says it is due, Celery's chord-part-return script (the real Redis backend),
   and the ack; the chunk's work is a sleep of ``--work-ms``. Producer processes keep the
   ``process`` queue filled the way the load worker does: persistent messages of the real
   ``process_chunk`` format, each waiting for its publisher confirm, and one result-channel
   SUBSCRIBE per task (Celery's result consumer on the launching side). The sweep over worker count
   and work time records chunks/s, per-chunk overhead, the CPU of the broker, of Redis and of the
   load generator, and the load average.

Prints Markdown tables; ``--figure`` writes the curve. Nothing here is a test: no assertion on time.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
# tests.conftest creates a vhost on the shared broker when imported unless this is set; the
# benchmark uses only the private servers of tests/private_services.py.
os.environ.setdefault("ATLASPIPE_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/unused-by-scaling")

from compare import Cluster, Services, cpu_seconds, machine, versions  # noqa: E402

from tests.private_services import PrivateRabbitMQ, PrivateRedis  # noqa: E402
from tests.runs import write_many_entries_file  # noqa: E402

if TYPE_CHECKING:
    from atlaspipe.model import RunPlan

EVENTS_PER_SECOND_PER_WORKER = 1.45e6
"""One worker process's processing rate on this machine: `atlaspipe run` over the generated
files (benchmarks/RESULTS.md, "Serial loop": 1.45 M ev/s in one process, reading with ISA-L)."""
EFFICIENT = 0.9
"""A worker count is efficient while throughput stays at or above this share of ideal scaling."""
SATURATED_WORKERS = 100
DEFAULT_CHUNK_EVENTS = 500_000
"""atlaspipe.config.DEFAULT_CHUNK_SIZE, as of this benchmark (chunks are cut at 500k-entry clusters)."""
BROKER_COUNTERS = ("received", "routed", "confirmed", "delivered", "acknowledged")
_COUNTERS_ERL = (
    "M = rabbit_global_counters:overview(), P = maps:get([{protocol,amqp091}], M), "
    "Q = maps:get([{protocol,amqp091},{queue_type,rabbit_classic_queue}], M), "
    "list_to_tuple([maps:get(K, P) || K <- [messages_received_total, messages_routed_total, "
    "messages_confirmed_total]] ++ [maps:get(K, Q) || K <- [messages_delivered_total, "
    "messages_acknowledged_total]])."
)
TERMINAL = {"succeeded", "failed", "partial", "cancelled"}


# --------------------------------------------------------------------------- services


@dataclass
class Node:
    """The private broker and Redis, and how to read their counters and CPU."""

    rabbit: PrivateRabbitMQ
    redis: PrivateRedis

    def broker_counters(self) -> dict[str, int]:
        out = self.rabbit.ctl("eval", _COUNTERS_ERL)
        return dict(zip(BROKER_COUNTERS, (int(n) for n in re.findall(r"\d+", out)), strict=True))

    def redis_commands(self) -> Counter[str]:
        info = self.redis.client().info("commandstats")
        return Counter({name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()})


@contextlib.contextmanager
def private_node() -> Iterator[Node]:
    rabbit, redis_server = PrivateRabbitMQ(), PrivateRedis()
    try:
        rabbit.start()
        redis_server.start()
        yield Node(rabbit, redis_server)
    finally:
        with contextlib.suppress(Exception):
            rabbit.stop()
        rabbit.destroy()
        redis_server.destroy()


def load_average() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


# --------------------------------------------------------------------------- 1. a real chunk's cost


@dataclass(frozen=True)
class ChunkCost:
    """What one chunk of a real distributed run costs the services (slope between two runs)."""

    chunks: tuple[int, int]
    broker: dict[str, float]
    redis_total: dict[str, float]
    """Commands per chunk as ``INFO commandstats`` counts them (those run by Lua scripts included)."""
    redis_sent: dict[str, float]
    """Commands per chunk a client sent (round trips; MONITOR lines not issued by a script)."""
    loads: tuple[str, ...]
    result_json: str = field(repr=False)
    """One stored chunk result of the real run, the value the simulated workers store."""
    message: dict[str, Any] = field(repr=False)
    """A real process_chunk task message (headers, properties, body) for the producer."""


class Monitor:
    """Redis MONITOR in a thread: (client address, from Lua?, command) of every command."""

    def __init__(self, node: Node) -> None:
        import redis

        self.lines: list[tuple[str, bool, str]] = []
        self.client = redis.Redis(port=node.redis.port, socket_timeout=None)
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()
        time.sleep(0.3)

    def _listen(self) -> None:
        with contextlib.suppress(Exception), self.client.monitor() as monitor:
            for command in monitor.listen():
                name = str(command["command"]).split(" ", 1)[0].lower()
                self.lines.append((str(command.get("client_address")) + ":" + str(command.get("client_port")),
                                   command.get("client_type") == "lua", name))

    def take(self) -> list[tuple[str, bool, str]]:
        taken, self.lines = self.lines, []
        return taken


def real_run(cluster: Cluster, node: Node, data: Path, monitor: Monitor) -> dict[str, Any]:
    """One run of one-entry chunks; its counter deltas, sent commands excluding our own polling."""
    import redis

    from atlaspipe.pipeline.celery.records import RunRecords

    poller = redis.Redis(port=node.redis.port, single_connection_client=True)
    own = str(poller.client_info()["addr"])
    time.sleep(0.5)
    monitor.take()
    before_broker, before_redis = node.broker_counters(), node.redis_commands()
    done = subprocess.run(
        [sys.executable, "-m", "atlaspipe.cli.submit", "--input", str(data), "--chunk-size", "1",
         "--output", str(cluster.tmp / "outputs"), "--keep-records", "--no-wait", "--quiet"],
        env=cluster.env, cwd=REPO, capture_output=True, text=True, check=True)
    run_id = done.stdout.split()[-1]
    meta = f"atlaspipe:run:{run_id}:meta"
    polls = 0
    deadline = time.monotonic() + 300
    while (poller.hget(meta, "state") or b"").decode() not in TERMINAL:
        polls += 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} did not finish in 300 s; see {cluster.tmp}")
        time.sleep(0.5)
    polls += 1
    time.sleep(1.0)  # the finalize task's ack
    after_broker, after_redis = node.broker_counters(), node.redis_commands()
    lines = [line for line in monitor.take() if line[0] != own]
    store = RunRecords(node.redis.url(0))
    results = store.chunk_results(run_id)
    commands = after_redis - before_redis
    commands["hget"] -= polls
    commands.pop("info", None)
    return {"run_id": run_id, "chunks": len(results), "load": load_average(),
            "broker": {k: after_broker[k] - before_broker[k] for k in BROKER_COUNTERS},
            "redis_total": commands, "redis_sent": Counter(name for _, lua, name in lines if not lua),
            "result_json": next(r.to_json() for r in results.values() if r.ok), "plan": store.plan(run_id)}


def task_message(broker: str, backend: str, run_id: str, plan: RunPlan) -> dict[str, Any]:
    """A process_chunk message as Celery sends it (headers, properties, JSON body), for a chunk of ``plan``."""
    from atlaspipe.pipeline.celery.app import create_app
    from atlaspipe.pipeline.celery.canvas import PROCESS_TASK, chunk_task_id

    app = create_app(broker, backend)
    task_id = chunk_task_id(run_id, 0, 0)
    made = app.amqp.as_task_v2(task_id, PROCESS_TASK,
                               args=(run_id, plan.chunks[0].to_jsonable(), plan.config.to_json_dict()),
                               kwargs={}, group_id=str(uuid.uuid4()), group_index=0,
                               chord={"task": "atlaspipe.aggregate_run", "args": [run_id], "immutable": True})
    return {"headers": made.headers, "properties": made.properties, "body": made.body}


def measure_chunk_cost(node: Node, tmp: Path, sizes: tuple[int, int]) -> ChunkCost:
    inputs = tmp / "inputs"
    inputs.mkdir()
    vhost = node.rabbit.add_vhost("scaling-real")
    cluster = Cluster(tmp / "cluster", Services(vhost, node.redis.url(0)), 2, inputs)
    (tmp / "cluster").mkdir()
    files = []
    for entries in (8, *sizes):
        folder = inputs / f"e{entries}"
        folder.mkdir()
        write_many_entries_file(folder / "data_A.4lep.root", entries)
        files.append(folder / "data_A.4lep.root")
    cluster.start()
    try:
        monitor = Monitor(node)
        real_run(cluster, node, files[0], monitor)  # warm: imports in the pool children
        small, large = (real_run(cluster, node, path, monitor) for path in files[1:])
    finally:
        cluster.stop()
    span = large["chunks"] - small["chunks"]

    def slope(key: str) -> dict[str, float]:
        names = set(large[key]) | set(small[key])
        per = {name: (large[key].get(name, 0) - small[key].get(name, 0)) / span for name in names}
        return {name: value for name, value in sorted(per.items()) if abs(value) >= 0.02}

    return ChunkCost(chunks=(small["chunks"], large["chunks"]), broker=slope("broker"),
                     redis_total=slope("redis_total"), redis_sent=slope("redis_sent"),
                     loads=(small["load"], large["load"]), result_json=large["result_json"],
                     message=task_message(vhost, node.redis.url(0), "sim", large["plan"]))


# --------------------------------------------------------------------------- 2. the load test


@dataclass(frozen=True)
class Setting:
    broker: str
    backend: str
    run_id: str
    group_id: str
    work_s: float
    result_json: str
    message: dict[str, Any]


def amqp_connect(broker: str, **options: Any) -> Any:
    """A py-amqp connection (what kombu uses underneath) to ``amqp://user:password@host:port/vhost``."""
    from urllib.parse import unquote, urlsplit

    import amqp

    url = urlsplit(broker)
    connection = amqp.Connection(host=f"{url.hostname}:{url.port}", userid=unquote(url.username or ""),
                                 password=unquote(url.password or ""), virtual_host=unquote(url.path[1:]) or "/",
                                 heartbeat=0, **options)
    connection.connect()
    return connection


def _simulated_worker(setting: Setting, shared: Any, index: int, stop: Any, window: Any,
                      samples: list[float]) -> None:
    """One worker slot: consume with prefetch 1, the chunk's run-record and chord calls, ack."""
    from types import SimpleNamespace

    from atlaspipe.model import ChunkResult
    from atlaspipe.pipeline.celery.app import create_app
    from atlaspipe.pipeline.celery.records import RunRecords

    connection = amqp_connect(setting.broker)
    channel = connection.channel()
    channel.basic_qos(0, 1, False)
    records = RunRecords(setting.backend)
    backend = create_app(setting.broker, setting.backend).backend
    result = ChunkResult.from_json(setting.result_json)
    answer = {"chunk_id": 0, "sample": result.sample, "ok": True, "duplicate": False, "events_read": 1,
              "events_selected": 1, "bytes_read": 1}
    last = [0.0]

    def on_message(message: Any) -> None:
        args = json.loads(message.body)[0]
        chunk_id = int(args[1]["chunk_id"])
        records.start_chunk(setting.run_id, chunk_id, 0, 3)
        if setting.work_s:
            time.sleep(setting.work_s)
        stored = records.store_chunk(setting.run_id, result.model_copy(update={"chunk_id": chunk_id}))
        if stored.status_due:
            records.status(setting.run_id)
        request = SimpleNamespace(id=message.headers["id"], group=setting.group_id, group_index=chunk_id,
                                  chord=None)
        backend.on_chord_part_return(request, "SUCCESS", {**answer, "chunk_id": chunk_id})
        channel.basic_ack(message.delivery_tag)
        now = time.perf_counter()
        with shared.get_lock():
            shared[index] += 1
        if last[0] and window[0] <= now <= window[1]:
            samples.append(now - last[0] - setting.work_s)
        last[0] = now

    channel.basic_consume("process", callback=on_message)
    with shared.get_lock():
        shared[-1] += 1  # ready
    while not stop.is_set():
        with contextlib.suppress(TimeoutError, OSError):
            connection.drain_events(timeout=0.2)
    with contextlib.suppress(Exception):
        connection.close()


def _worker_process(setting: Setting, threads: int, offset: int, *, shared: Any, stop: Any, window: Any,
                    out: Any) -> None:
    samples: list[float] = []
    started = [threading.Thread(target=_simulated_worker, args=(setting, shared, offset + i, stop, window, samples),
                                daemon=True) for i in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    out.put(samples)


def _publisher(setting: Setting, depth: int, stop: Any, sequence: Iterator[int]) -> None:
    """Tops the process queue up to ``depth``: persistent messages, each confirmed before the next, as
    kombu publishes with ``confirm_publish``; and one SUBSCRIBE per task, as Celery's result consumer
    on the launching side does."""
    import amqp
    import redis

    connection = amqp_connect(setting.broker, confirm_publish=True)
    channel = connection.channel()
    subscriber = redis.Redis.from_url(setting.backend).pubsub()
    headers = dict(setting.message["headers"])
    properties = dict(setting.message["properties"])
    args, kwargs, embed = setting.message["body"]
    chunk = dict(args[1])
    while not stop.is_set():
        queued = channel.queue_declare("process", durable=True, auto_delete=False, passive=True).message_count
        if queued >= depth:
            time.sleep(0.005)
            continue
        for _ in range(min(20, depth - queued)):
            number = next(sequence)
            task_id = f"{setting.run_id}.g0.c{number}"
            body = json.dumps([[args[0], {**chunk, "chunk_id": number}, args[2]], kwargs, embed])
            message = amqp.Message(body, content_type="application/json", content_encoding="utf-8",
                                   application_headers={**headers, "id": task_id, "root_id": task_id},
                                   correlation_id=task_id, reply_to=properties.get("reply_to"),
                                   delivery_mode=2, priority=0)
            channel.basic_publish(message, exchange="atlaspipe", routing_key="process")
            subscriber.subscribe(f"celery-task-meta-{task_id}")
    subscriber.close()
    connection.close()


def _producer(setting: Setting, depth: int, threads: int, first: int, stop: Any) -> None:
    """``threads`` publishers (one connection each): one confirmed publisher alone is slower than
    a few hundred workers consume."""
    sequence = itertools.count(first)
    running = [threading.Thread(target=_publisher, args=(setting, depth, stop, sequence), daemon=True)
               for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()


@dataclass(frozen=True)
class Point:
    workers: int
    work_ms: float
    chunks_per_s: float
    overhead_ms_mean: float
    overhead_ms_median: float
    overhead_ms_p95: float
    rabbit_cpu: float
    """Cores used by the broker (1.0 = one core busy) during the window."""
    redis_cpu: float
    generator_cpu: float
    redis_commands_per_chunk: float
    """As ``INFO commandstats`` counts them, to compare with the real chunk's; per three EVALSHA (a
    chunk runs three scripts), since the acks counted at the window's edges miss the chunks in flight."""
    queued: int
    """Messages waiting at the end of the window: 0 would mean the producers, not the workers, set the pace."""
    load: str


def declare(setting: Setting) -> None:

    with amqp_connect(setting.broker) as connection:
        channel = connection.channel()
        channel.exchange_declare("atlaspipe", "direct", durable=True, auto_delete=False)
        channel.queue_declare("process", durable=True, auto_delete=False)
        channel.queue_bind("process", "atlaspipe", "process")
        channel.queue_purge("process")


def run_point(node: Node, cost: ChunkCost, vhost: str, workers: int, work_ms: float, *, seconds: float,
              processes: int, publishers: int) -> Point:
    """``workers`` simulated workers for ``seconds`` after a warm-up; throughput and costs in that window."""
    from atlaspipe.pipeline.celery.app import create_app

    run_id = f"sim-{uuid.uuid4().hex[:8]}"
    group_id = str(uuid.uuid4())
    setting = Setting(vhost, node.redis.url(0), run_id, group_id, work_ms / 1e3, cost.result_json, cost.message)
    declare(setting)
    client = node.redis.client()
    # A running run whose chunk count is never reached, and a chord that never completes.
    client.hset(f"atlaspipe:run:{run_id}:meta", mapping={"state": "running", "run_dir": "", "chunks_total": 10**9})
    create_app(vhost, node.redis.url(0)).backend.set_chord_size(group_id, 10**9)
    ctx = mp.get_context("fork")
    shared = ctx.Array("d", workers + 1)
    window = ctx.Array("d", [math.inf, -math.inf], lock=False)
    stop, producer_stop = ctx.Event(), ctx.Event()
    out = ctx.Queue()
    producers = [ctx.Process(target=_producer, args=(setting, max(200, 3 * workers), 4, i * 10**9, producer_stop))
                 for i in range(publishers)]
    for producer in producers:
        producer.start()
    count = max(1, min(processes, workers))
    spread = [workers // count + (1 if i < workers % count else 0) for i in range(count)]
    offsets = [sum(spread[:i]) for i in range(count)]
    children = [ctx.Process(target=_worker_process, args=(setting, n, offsets[i]),
                            kwargs={"shared": shared, "stop": stop, "window": window, "out": out})
                for i, n in enumerate(spread)]
    for child in children:
        child.start()
    deadline = time.monotonic() + 120
    while shared[-1] < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {shared[-1]:.0f} of {workers} simulated workers connected")
        time.sleep(0.05)
    time.sleep(1.5)  # warm-up: the queue full, every worker past its first chunk
    pids = [c.pid or 0 for c in [*children, *producers]]
    begin_cpu = (cpu_seconds([node.rabbit.pid]), cpu_seconds([node.redis.pid]), cpu_seconds(pids))
    begin_commands = node.redis_commands()
    begin_done, begin = sum(shared[:-1]), time.perf_counter()
    window[0], window[1] = begin, begin + seconds
    time.sleep(seconds)
    end_done, end = sum(shared[:-1]), time.perf_counter()
    commands = node.redis_commands() - begin_commands
    commands.pop("info", None)
    end_cpu = (cpu_seconds([node.rabbit.pid]), cpu_seconds([node.redis.pid]), cpu_seconds(pids))
    load = load_average()
    with amqp_connect(vhost) as connection:
        queued = connection.channel().queue_declare("process", durable=True, auto_delete=False,
                                                    passive=True).message_count
    stop.set()
    producer_stop.set()
    samples: list[float] = []
    for _ in children:
        samples += out.get(timeout=60)
    for child in [*children, *producers]:
        child.join(60)
    elapsed = end - begin
    overheads = sorted(samples) or [math.nan]
    for key in client.scan_iter(match=f"atlaspipe:run:{run_id}:*"):
        client.delete(key)
    for key in client.scan_iter(match=f"celery-taskset-meta-{group_id}*"):
        client.delete(key)
    return Point(workers, work_ms, (end_done - begin_done) / elapsed, 1e3 * statistics.fmean(overheads),
                 1e3 * statistics.median(overheads), 1e3 * overheads[int(0.95 * (len(overheads) - 1))],
                 (end_cpu[0] - begin_cpu[0]) / elapsed, (end_cpu[1] - begin_cpu[1]) / elapsed,
                 (end_cpu[2] - begin_cpu[2]) / elapsed, commands.total() / max(1.0, commands["evalsha"] / 3),
                 queued, load)


# --------------------------------------------------------------------------- analysis and report


def ideal_rate(points: Sequence[Point], point: Point) -> float:
    """Chunks/s if every worker ran as a lone worker does: work time + the lone worker's overhead per chunk.

    From the lone worker's mean overhead rather than its chunk count, which over a few seconds of
    500 ms chunks is a handful.
    """
    one = next((p for p in points if p.work_ms == point.work_ms and p.workers == 1), None)
    if one is None or point.work_ms == 0:
        return math.nan
    return point.workers / ((point.work_ms + one.overhead_ms_mean) / 1e3)


def efficient_counts(points: Sequence[Point]) -> dict[float, list[int]]:
    """Per work time: every worker count measured at ≥ EFFICIENT of ideal scaling."""
    return {work: [p.workers for p in sorted(points, key=lambda p: p.workers)
                   if p.work_ms == work and p.chunks_per_s >= EFFICIENT * ideal_rate(points, p)]
            for work in sorted({p.work_ms for p in points} - {0.0})}


def knee(points: Sequence[Point]) -> float:
    """Where throughput stops growing: the median chunks/s of the no-op points with ≥ SATURATED_WORKERS
    workers (each of them waits longer for its next message than a lone worker's whole chunk takes)."""
    plateau = [p.chunks_per_s for p in points if p.work_ms == 0 and p.workers >= SATURATED_WORKERS]
    return statistics.median(plateau) if plateau else math.nan


def chunk_seconds(workers: int, capacity: float) -> float:
    """The chunk duration that keeps ``workers`` asking for no more than EFFICIENT of ``capacity`` chunks/s."""
    return workers / (EFFICIENT * capacity)


def cost_table(cost: ChunkCost) -> str:
    lines = [f"Chunks in the two real runs: {cost.chunks[0]} and {cost.chunks[1]} (load {cost.loads[0]} and "
             f"{cost.loads[1]}); per chunk = difference / {cost.chunks[1] - cost.chunks[0]}.", "",
             "| broker, per chunk | messages |", "|---|---:|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in cost.broker.items()]
    lines += ["", "| Redis command, per chunk | sent by a client (round trips) | all (commandstats, Lua included) |",
              "|---|---:|---:|"]
    names = sorted(set(cost.redis_total) | set(cost.redis_sent), key=lambda n: -cost.redis_total.get(n, 0))
    lines += [f"| {n} | {cost.redis_sent.get(n, 0):.2f} | {cost.redis_total.get(n, 0):.2f} |" for n in names]
    lines.append(f"| **total** | **{sum(cost.redis_sent.values()):.2f}** | **{sum(cost.redis_total.values()):.2f}** |")
    return "\n".join(lines)


def point_table(points: Sequence[Point]) -> str:
    lines = ["| workers | work ms | chunks/s | ideal chunks/s | efficiency | overhead ms median (p95) | "
             "RabbitMQ cores | Redis cores | generator cores | RabbitMQ ms CPU/chunk | Redis ms CPU/chunk | "
             "Redis commands/chunk | queued | load 1/5/15 |",
             "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in points:
        ideal = ideal_rate(points, p)
        efficiency = p.chunks_per_s / ideal
        per = max(p.chunks_per_s, 1e-9)
        lines.append(f"| {p.workers} | {p.work_ms:g} | {p.chunks_per_s:,.0f} | "
                     f"{'–' if p.work_ms == 0 else f'{ideal:,.0f}'} | "
                     f"{'–' if math.isnan(efficiency) else f'{efficiency:.0%}'} | "
                     f"{p.overhead_ms_median:.2f} ({p.overhead_ms_p95:.2f}) | {p.rabbit_cpu:.2f} | "
                     f"{p.redis_cpu:.2f} | {p.generator_cpu:.2f} | {1e3 * p.rabbit_cpu / per:.3f} | "
                     f"{1e3 * p.redis_cpu / per:.3f} | {p.redis_commands_per_chunk:.1f} | {p.queued} | {p.load} |")
    return "\n".join(lines)


def marginal_cpu_ms(points: Sequence[Point], server: str) -> tuple[float, float]:
    """A server's CPU per chunk as the slope of its cores against chunks/s over every point (ms), and its
    cores at zero chunks/s (the intercept: timers, and Erlang's schedulers spinning while idle)."""
    rates = [p.chunks_per_s for p in points]
    cores = [getattr(p, f"{server}_cpu") for p in points]
    slope, intercept = statistics.linear_regression(rates, cores)
    return 1e3 * slope, intercept


def saturation_rate(points: Sequence[Point], server: str) -> float:
    """Chunks/s at which the linear fit of a server's CPU reaches one core."""
    per_chunk, idle = marginal_cpu_ms(points, server)
    return (1.0 - idle) * 1e3 / per_chunk


def summary(points: Sequence[Point]) -> str:
    lines = []
    saturated = [p for p in points if p.work_ms == 0]
    if saturated:
        peak = max(saturated, key=lambda p: p.chunks_per_s)
        lines.append(f"- Highest throughput with no-op chunks: **{peak.chunks_per_s:,.0f} chunks/s** at {peak.workers} "
                     f"workers (RabbitMQ {peak.rabbit_cpu:.2f} cores, Redis {peak.redis_cpu:.2f} cores, generator "
                     f"{peak.generator_cpu:.2f} cores; load {peak.load}).")
    if len({p.chunks_per_s for p in points}) > 2:
        rabbit_ms, rabbit_idle = marginal_cpu_ms(points, "rabbit")
        redis_ms, redis_idle = marginal_cpu_ms(points, "redis")
        lines.append(f"- Marginal CPU per chunk (slope over all points): RabbitMQ {rabbit_ms:.3f} ms "
                     f"(+{rabbit_idle:.2f} cores at rest), Redis {redis_ms:.3f} ms (+{redis_idle:.2f}). "
                     f"The fits reach one core at: RabbitMQ ≈ {saturation_rate(points, 'rabbit'):,.0f} chunks/s, "
                     f"Redis (one thread, its hard limit) ≈ {saturation_rate(points, 'redis'):,.0f} chunks/s.")
    capacity = knee(points)
    if math.isnan(capacity):
        return "\n".join(lines)
    lines.append(f"- **Knee: {capacity:,.0f} chunks/s** (median of the no-op points with ≥ {SATURATED_WORKERS} "
                 f"workers): as many messages/s published, delivered and acknowledged. Model: a worker count W with "
                 f"chunks of d ms stays efficient while W / (d + overhead) ≤ {EFFICIENT:.0%} of the knee.")
    for work, counts in efficient_counts(points).items():
        one = next((p for p in points if p.work_ms == work and p.workers == 1), None)
        overhead = one.overhead_ms_mean if one is not None else 0.0
        model = int(EFFICIENT * capacity * (work + overhead) / 1e3)
        lines.append(f"- {work:g} ms chunks: measured ≥ {EFFICIENT:.0%} of ideal at {counts or 'no'} workers; "
                     f"the model allows up to {model} workers.")
    crowded = max((p for p in points if p.work_ms == 0), key=lambda p: p.workers)
    rabbit_ms, redis_ms = (1e3 * cores / crowded.chunks_per_s for cores in (crowded.rabbit_cpu, crowded.redis_cpu))
    core = 1e3 / max(rabbit_ms, redis_ms)
    lines.append(f"- CPU per chunk with the most connected workers ({crowded.workers}, no-op): RabbitMQ "
                 f"{rabbit_ms:.2f} ms, Redis {redis_ms:.2f} ms (more than the fit: each connection costs the "
                 f"servers too). At these costs one core each lasts up to {core:,.0f} chunks/s.")
    for label, rate in (("with these services as measured here", capacity),
                        (f"with RabbitMQ and Redis a core each, at the CPU per chunk of {crowded.workers} workers",
                         core)):
        seconds = chunk_seconds(1000, rate)
        default = int(EFFICIENT * rate * DEFAULT_CHUNK_EVENTS / EVENTS_PER_SECOND_PER_WORKER)
        lines.append(f"- 1,000 workers {label} ({rate:,.0f} chunks/s): chunks of ≥ {seconds:.2f} s, i.e. "
                     f"**≥ {seconds * EVENTS_PER_SECOND_PER_WORKER / 1e6:.1f} M events per chunk** at "
                     f"{EVENTS_PER_SECOND_PER_WORKER / 1e6:.2f} M events/s per worker; the default "
                     f"{DEFAULT_CHUNK_EVENTS:,}-event chunks keep up to {default} workers efficient.")
    return "\n".join(lines)


def figure(points: Sequence[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for work in sorted({p.work_ms for p in points}):
        row = sorted((p for p in points if p.work_ms == work), key=lambda p: p.workers)
        xs = [p.workers for p in row]
        line = left.plot(xs, [p.chunks_per_s for p in row], "o-", label=f"work {work:g} ms")[0]
        if work:
            left.plot(xs, [ideal_rate(points, p) for p in row], ":", color=line.get_color(), alpha=0.6)
    if not math.isnan(knee(points)):
        left.axhline(knee(points), color="black", lw=0.8, ls="--")
        left.annotate(f"knee {knee(points):,.0f}/s", (1, knee(points) * 1.15), fontsize=8)
    left.set(xlabel="simulated workers", ylabel="chunks / s", title="throughput (dotted: ideal scaling)",
             xscale="log", yscale="log")
    left.legend()
    rates = [p.chunks_per_s for p in points]
    reach = 1.1e3 / min(marginal_cpu_ms(points, "rabbit")[0], marginal_cpu_ms(points, "redis")[0])
    for server, label, colour in (("rabbit", "RabbitMQ", "tab:orange"), ("redis", "Redis", "tab:red"),
                                  ("generator", "load generator", "tab:grey")):
        right.plot(rates, [getattr(p, f"{server}_cpu") for p in points], "o", ms=4, color=colour, label=label)
        per_chunk, idle = marginal_cpu_ms(points, server)
        if server != "generator":
            right.plot([0, reach], [idle, idle + per_chunk * reach / 1e3], "--", color=colour, lw=1,
                       label=f"{label}: {per_chunk:.2f} ms per chunk, one core at "
                             f"{saturation_rate(points, server):,.0f}/s")
    right.axhline(1.0, color="black", lw=0.8)
    right.set(xlabel="chunks / s", ylabel="cores used", title="CPU against throughput (dashed: linear fit)",
              ylim=(0, 1.15))
    right.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_list(text: str, kind: type) -> list[Any]:
    return [kind(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workers", default="1,10,50,100,200,300,400", help="simulated worker counts")
    parser.add_argument("--work-ms", default="0,5,50,500", help="chunk work times (a sleep), milliseconds")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window per point")
    parser.add_argument("--processes", type=int, default=4, help="processes the simulated workers are spread over")
    parser.add_argument("--publishers", type=int, default=2,
                        help="producer processes, 4 confirmed publishers each, keeping the queue full")
    parser.add_argument("--real-chunks", default="60,360", help="one-entry chunks of the two real runs")
    parser.add_argument("--figure", type=Path, default=None, help="write the curve here (PNG)")
    parser.add_argument("--json", type=Path, default=None, help="write every measured number here")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="measure nothing: print the load-test table and draw the figure from a --json file")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        points = [Point(**p) for p in json.loads(args.from_json.read_text())["points"]]
        print(point_table(points) + "\n\n" + summary(points))
        if args.figure is not None:
            figure(points, args.figure)
        return 0
    workers, works = parse_list(args.workers, int), parse_list(args.work_ms, float)
    small, large = parse_list(args.real_chunks, int)
    started = time.monotonic()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; load {load_average()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="atlaspipe-scaling-"))
    points: list[Point] = []
    try:
        with private_node() as node:
            cost = measure_chunk_cost(node, tmp, (small + 1, large + 1))
            print("\n## Cost of one real chunk\n\n" + cost_table(cost) + "\n", flush=True)
            vhost = node.rabbit.add_vhost("scaling-load")
            for work in works:
                for count in workers:
                    point = run_point(node, cost, vhost, count, work, seconds=args.seconds,
                                      processes=args.processes, publishers=args.publishers)
                    points.append(point)
                    print(f"workers {count:4d} work {work:4g} ms: {point.chunks_per_s:8,.0f} chunks/s  overhead "
                          f"{point.overhead_ms_median:6.2f} ms (p95 {point.overhead_ms_p95:6.2f})  RabbitMQ "
                          f"{point.rabbit_cpu:.2f}  Redis {point.redis_cpu:.2f}  generator "
                          f"{point.generator_cpu:.2f} cores  queued {point.queued}  load {point.load}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n## Load test\n\n" + point_table(points) + "\n\n" + summary(points))
    print(f"\nVersions: {versions()}; {time.monotonic() - started:.0f} s in all; load at the end {load_average()}.")
    if args.figure is not None:
        figure(points, args.figure)
    if args.json is not None:
        args.json.write_text(json.dumps({"cost": {k: v for k, v in cost.__dict__.items() if k not in
                                                  ("result_json", "message")},
                                         "points": [p.__dict__ for p in points]}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
