"""Per-task overhead and finalize time of two code trees, side by side, interleaved repetitions.

``python benchmarks/overhead.py --before PATH [--tasks 1000] [--repetitions 3]``: ``PATH`` is a
checkout of the code to compare with (``git worktree add --detach /tmp/base main``); the after
side is this checkout. Each side gets its own workers (process ``-c 2``, load, aggregate, plot),
on its own RabbitMQ vhost and Redis database, both alive the whole time; runs alternate
before/after, the order swapped per repetition, and the load average is recorded with each.

Two measurements per run:
- overhead: one file of ``--tasks`` identical events in one-entry chunks; ms per task per slot is
  the time from ``running`` to ``aggregating`` × 2 slots / tasks;
- finalize: the embedded sample in one chunk; the time from ``aggregating`` to the final state
  (aggregate + fit + figures + documents), which is what a user waits for after the histograms.
With ``--data DIR`` (the benchmark dataset), a third: the whole distributed run of DIR in 500k-entry
chunks, end to end as compare.py times it, each side hashing its inputs afresh.
Prints a Markdown table (pasted into RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from compare import Cluster, Services, cpu_seconds, private_redis, run_distributed  # noqa: E402

from tests.runs import write_many_entries_file  # noqa: E402


def vhost(name: str) -> str:
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], capture_output=True, check=False)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
                   capture_output=True, check=False)
    return f"amqp://guest:guest@127.0.0.1:5672/{name}"


def measure(cluster: Cluster, tiny: Path, embedded: Path, redis_pid: int, finalize: bool) -> dict[str, float]:
    # CPU is what a busy neighbour cannot inflate much: wall time on a loaded machine is mostly waiting.
    pids = [cluster.processes[stage].pid for stage in ("process", "load", "aggregate")]
    cpu_before, redis_before = cpu_seconds(pids), cpu_seconds([redis_pid])
    over = run_distributed(cluster, str(tiny), 1)
    cpu, redis_cpu = cpu_seconds(pids) - cpu_before, cpu_seconds([redis_pid]) - redis_before
    busy = over["marks"].get("aggregating", over["wall"]) - over["marks"]["running"]
    row = {"ms_per_task_per_slot": 1e3 * busy * cluster.process_slots / over["tasks"], "tasks": over["tasks"],
           "worker_cpu_ms_per_task": 1e3 * cpu / over["tasks"],
           "redis_cpu_ms_per_task": 1e3 * redis_cpu / over["tasks"], "load": over["load"], "finalize_s": float("nan")}
    if finalize:
        fin = run_distributed(cluster, str(embedded), 10_000_000)
        assert fin["wall_with_plot"] is not None
        # Until the final state; from the aggregation's start (or the first piece's, if the 5 ms poll missed it).
        row["finalize_s"] = fin["wall_with_plot"] - fin["marks"].get("aggregating", fin["histograms_s"])
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout of the code to compare with")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--plot-slots", type=int, default=2, help="plot worker concurrency (both sides)")
    parser.add_argument("--no-finalize", action="store_true", help="measure the per-task overhead only")
    parser.add_argument("--data", type=Path, help="also time whole runs of this folder, end to end")
    args = parser.parse_args()
    from atlaspipe.generate.embedded import embedded_sample_dir

    tmp = Path(tempfile.mkdtemp(prefix="atlaspipe-overhead-"))
    own = private_redis(tmp)
    if own is None:
        raise SystemExit("needs redis-server")
    inputs = tmp / "inputs"
    inputs.mkdir()
    tiny = inputs / "data_A.4lep.root"
    write_many_entries_file(tiny, args.tasks)
    embedded = inputs / "embedded"
    shutil.copytree(embedded_sample_dir(), embedded)
    sides = {"before": args.before.resolve(), "after": REPO}
    clusters: dict[str, Cluster] = {}
    rows: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    try:
        for index, (side, repo) in enumerate(sides.items()):
            # A vhost per invocation: a worker left over from an interrupted run never takes these tasks.
            services = Services(vhost(f"atlaspipe-overhead-{side}-{tmp.name[-8:]}"),
                                own[1].rsplit("/", 1)[0] + f"/{index + 1}")
            roots = os.pathsep.join(str(r) for r in (inputs, args.data and args.data.resolve()) if r)
            cluster = Cluster(tmp / side, services, 2, inputs, repo=repo, plot_slots=args.plot_slots,
                              extra_env={"ATLASPIPE_INPUT_ROOTS": roots})
            (tmp / side).mkdir()
            cluster.start()
            clusters[side] = cluster
            run_distributed(cluster, str(embedded), 10_000_000)  # warm: imports in the pool children
            run_distributed(cluster, str(tiny), 50)
        for rep in range(args.repetitions):
            for side in (list(sides) if rep % 2 == 0 else list(reversed(sides))):
                row = measure(clusters[side], tiny, embedded, own[0].pid, not args.no_finalize)
                if args.data:
                    row.update(whole_run(clusters[side], args.data))
                rows[side].append(row)
                print(f"rep {rep + 1} {side:<6} {row['ms_per_task_per_slot']:6.2f} ms/task/slot "
                      f"({row['tasks']} tasks)  worker CPU {row['worker_cpu_ms_per_task']:.2f} ms/task  "
                      f"redis CPU {row['redis_cpu_ms_per_task']:.2f} ms/task  finalize {row['finalize_s']:5.2f} s  "
                      f"load {row['load']:.2f}", flush=True)
    finally:
        for cluster in clusters.values():
            cluster.stop()
        for cluster in clusters.values():
            vhost_name = cluster.services.broker.rsplit("/", 1)[-1]
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost_name], capture_output=True, check=False)
        own[0].terminate()
        own[0].wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    print_table(args, rows)
    return 0


def print_table(args: argparse.Namespace, rows: dict[str, list[dict[str, float]]]) -> None:
    """The Markdown table of both sides' medians."""

    def cell(side: str, key: str, fmt: str) -> str:
        values = [r[key] for r in rows[side]]
        loads = ", ".join(f"{r['load']:.1f}" for r in rows[side])
        return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}}; load {loads})"

    print(f"\n{args.tasks} one-entry chunks on 2 process slots; finalize on the embedded sample, plot worker "
          f"-c {args.plot_slots}; median (min–max) of {args.repetitions} interleaved repetitions, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| measure | before | after |\n|---|---|---|")
    print(f"| per-task overhead, ms per task per slot | {cell('before', 'ms_per_task_per_slot', '.2f')} | "
          f"{cell('after', 'ms_per_task_per_slot', '.2f')} |")
    print(f"| worker CPU (process + load + aggregate workers), ms per task | "
          f"{cell('before', 'worker_cpu_ms_per_task', '.2f')} | {cell('after', 'worker_cpu_ms_per_task', '.2f')} |")
    print(f"| Redis CPU, ms per task | {cell('before', 'redis_cpu_ms_per_task', '.3f')} | "
          f"{cell('after', 'redis_cpu_ms_per_task', '.3f')} |")
    if not args.no_finalize:
        print(f"| finalize (aggregating → final state), s | {cell('before', 'finalize_s', '.2f')} | "
              f"{cell('after', 'finalize_s', '.2f')} |")
    if args.data:
        for key, what in (("run_s", "end to end"), ("run_histograms_s", "until the histograms exist"),
                          ("run_finalize_s", "finalize")):
            print(f"| {args.data.name}, 500k-entry chunks: {what}, s | {cell('before', key, '.2f')} | "
                  f"{cell('after', key, '.2f')} |")


def whole_run(cluster: Cluster, data: Path) -> dict[str, float]:
    """A distributed run of ``data`` from launching the submitter to its exit after the final state."""
    from atlaspipe.io.checksums import kept_folder

    shutil.rmtree(kept_folder(), ignore_errors=True)
    run = run_distributed(cluster, str(data), 500_000)
    assert run["wall_with_plot"] is not None
    aggregating = run["marks"].get("aggregating", run["histograms_s"])
    return {"run_s": run["wall_with_plot"], "run_histograms_s": aggregating,
            "run_finalize_s": run["wall_with_plot"] - aggregating}


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
