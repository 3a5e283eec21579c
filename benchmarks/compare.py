"""atlaspipe against a serial uproot loop, coffea and the read limit, on the same files, in one run.

``python benchmarks/compare.py`` (full: the 10.2M-event dataset, 3 interleaved repetitions, the
chunk-size sweep, scaling, per-task overhead and the LZ4 variant; about 10 minutes on 2 cores) or
``--quick`` (120k events, one repetition: the smoke test). Writes the generated part of
``benchmarks/RESULTS.md``; the hand-written sections around it are kept.

Contenders, each timed as the wall time until the histograms exist, in a fresh process:
1. ``distributed``: real ``celery -A atlaspipe worker`` processes (one ``process`` worker with
   ``--concurrency 2``, plus one load, aggregate and plot worker each) on a private RabbitMQ vhost
   and Redis DB, fed through ``atlaspipe-submit``; timed from launching the CLI until the
   aggregate stage has stored the merged histograms (the plot stage then runs untimed, and the
   next measurement waits for it);
2. ``inprocess``: ``atlaspipe run``'s code path (plan_run + inprocess.execute_plan + aggregate);
3. ``serial``: ``uproot.iterate`` + awkward + vector, one step at a time, as the HZZ notebook;
4. ``coffea``: benchmarks/coffea_processor.py on FuturesExecutor(2), in its own virtualenv;
5. ``readlimit``: the needed branches read with uproot over cluster-aligned ranges in 2
   processes, nothing computed.
All five decompress ZLIB with ISA-L (uproot's ``ZLIB.library = "isal"``), so the comparison is of
the frameworks, not of zlib builds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

DEFAULT_BROKER = os.environ.get("ATLASPIPE_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/atlaspipe-bench")
"""Its private vhost ``atlaspipe-bench``, or the default vhost where that cannot be made (see ensure_vhost)."""
DEFAULT_BACKEND = os.environ.get("ATLASPIPE_BENCH_RESULT_BACKEND", "redis://127.0.0.1:6379/9")
"""A private redis-server instead where one can be started (see private_redis)."""
COFFEA_VENV = HERE / ".venv-coffea"
COFFEA_PINS = ("coffea==2026.9.0",)
RESULTS = HERE / "RESULTS.md"
MARK_START, MARK_END = "<!-- compare.py:start -->", "<!-- compare.py:end -->"
LEPTONS = ("lep_pt", "lep_eta", "lep_phi", "lep_E", "lep_charge", "lep_type")
WEIGHTS = ("mcWeight", "scaleFactor_PILEUP", "scaleFactor_ELE", "scaleFactor_MUON", "scaleFactor_LepTRIGGER")
MC_REL_TOLERANCE = 1e-12
"""Weighted MC bins may differ by summation order (per-chunk partial sums); data bins are exact."""

Samples = dict[str, dict[str, Any]]


# --------------------------------------------------------------------------- the contenders


def _use_isal() -> None:
    import uproot

    uproot.compression._decompress_ZLIB.library = "isal"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mode_inprocess(job: dict[str, Any]) -> dict[str, Any]:
    """``atlaspipe run``'s code path, in this process, to its last output (fit, figures, report)."""
    from atlaspipe.api import make_request
    from atlaspipe.config import analysis_settings
    from atlaspipe.model import ChunkResult, RunPlan
    from atlaspipe.pipeline.inprocess import InProcessExecutor
    from atlaspipe.pipeline.stages import AnalysisStages

    seen: dict[str, Any] = {}

    class Watched(AnalysisStages):
        def aggregate(self, plan: RunPlan, results: dict[int, ChunkResult]) -> Any:
            seen.update(plan=plan, results=dict(results), histograms=time.perf_counter())
            return super().aggregate(plan, results)

    request = make_request([job["data"]], release="2020", settings=analysis_settings(chunk_size=job["chunk_size"]),
                           output=job.get("output") or tempfile.mkdtemp(prefix="atlaspipe-bench-run-"))
    started = time.perf_counter()
    status = InProcessExecutor(stages=Watched()).run(request)
    if status.state.value != "succeeded":
        raise RuntimeError(f"in-process run {status.state}: {status.message}")
    plan, results = seen["plan"], seen["results"]
    seconds = [r.seconds for r in results.values()]
    return {"samples": raw_from_chunks(plan.chunks, results), "tasks": len(plan.chunks),
            "histograms_s": seen["histograms"] - started,
            "task_seconds_mean": statistics.fmean(seconds) if seconds else 0.0, "peak_rss_mb": _peak_rss_mb()}


def mode_serial(job: dict[str, Any]) -> dict[str, Any]:
    """The HZZ notebook's loop: uproot.iterate, awkward cuts, vector, one histogram per sample."""
    import awkward as ak
    import hist
    import numpy as np
    import uproot
    import vector

    _use_isal()
    samples: Samples = {}
    for entry in job["files"]:
        histogram = hist.Hist(hist.axis.Variable(job["edges"]), hist.axis.IntCategory([0, 1, 2]),
                              storage=hist.storage.Weight())
        read = selected = 0
        branches = list(LEPTONS) + (list(WEIGHTS) if entry["is_mc"] else [])
        for batch in uproot.iterate(f"{entry['path']}:mini", branches, step_size=job["chunk_size"], library="ak"):
            read += len(batch)
            four = batch[ak.num(batch.lep_pt, axis=1) >= 4]
            charge = four.lep_charge[:, 0] + four.lep_charge[:, 1] + four.lep_charge[:, 2] + four.lep_charge[:, 3]
            ltype = ak.values_astype(four.lep_type[:, :4], np.int64)
            type_sum = ltype[:, 0] + ltype[:, 1] + ltype[:, 2] + ltype[:, 3]
            passed = (charge == 0) & ((type_sum == 44) | (type_sum == 48) | (type_sum == 52))
            data = four[passed]
            type_sum = type_sum[passed]
            selected += len(data)
            p4 = vector.zip({name: ak.values_astype(data[field][:, :4], np.float64) for name, field in
                             (("pt", "lep_pt"), ("eta", "lep_eta"), ("phi", "lep_phi"), ("E", "lep_E"))})
            mllll = np.asarray((p4[:, 0] + p4[:, 1] + p4[:, 2] + p4[:, 3]).M) * 1e-3
            weight = np.ones(len(data), dtype=np.float64)
            if entry["is_mc"]:
                for name in WEIGHTS:
                    weight *= np.asarray(data[name], dtype=np.float64)
            sums = np.asarray(type_sum)
            channel = np.select([sums == 44, sums == 52, sums == 48], [0, 1, 2], -1)
            histogram.fill(mllll, channel, weight=weight)
        view = histogram.view(flow=True)
        samples[entry["sample"]] = {"sumw": np.ascontiguousarray(view.value[:, :3].T).tolist(),
                                    "sumw2": np.ascontiguousarray(view.variance[:, :3].T).tolist(),
                                    "read": read, "selected": selected}
    from mainplot import draw

    draw(samples, job, Path(tempfile.mkdtemp(prefix="atlaspipe-bench-serial-")) / "m4l.png")
    return {"samples": samples, "peak_rss_mb": _peak_rss_mb()}


_open: dict[str, Any] = {}


def _read_range(task: tuple[str, list[str], int, int]) -> int:
    import uproot

    path, branches, start, stop = task
    if path not in _open:
        _open[path] = uproot.open(path)["mini"]
    return len(_open[path].arrays(branches, entry_start=start, entry_stop=stop, library="ak"))


def cluster_ranges(path: str, chunk_size: int) -> list[tuple[int, int]]:
    """Entry ranges of about ``chunk_size`` entries, cut at cluster starts."""
    import uproot

    tree = uproot.open(path)["mini"]
    starts = [int(x) for x in tree.common_entry_offsets()]
    ranges, begin = [], 0
    for boundary in starts[1:]:
        if boundary - begin >= chunk_size or boundary == starts[-1]:
            ranges.append((begin, boundary))
            begin = boundary
    return ranges or [(0, int(tree.num_entries))]


def mode_readlimit(job: dict[str, Any]) -> dict[str, Any]:
    """The needed branches only, cluster-aligned ranges, 2 processes, no computation."""
    _use_isal()
    tasks = []
    for entry in job["files"]:
        branches = list(LEPTONS) + (list(WEIGHTS) if entry["is_mc"] else [])
        tasks += [(entry["path"], branches, a, b) for a, b in cluster_ranges(entry["path"], job["chunk_size"])]
    tasks.sort(key=lambda t: t[2] - t[3])  # longest first, as a scheduler would
    with ProcessPoolExecutor(max_workers=job["workers"]) as pool:
        read = sum(pool.map(_read_range, tasks))
    return {"samples": {}, "read": read, "tasks": len(tasks), "peak_rss_mb": _peak_rss_mb()}


MODES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "inprocess": mode_inprocess, "serial": mode_serial, "readlimit": mode_readlimit,
}


def raw_from_chunks(chunks: Any, results: dict[int, Any]) -> Samples:
    """Per-sample un-normalised sums of the chunk histograms, in chunk-id order (as aggregate does)."""
    import numpy as np

    samples: Samples = {}
    for chunk in sorted(chunks, key=lambda c: c.chunk_id):
        result = results[chunk.chunk_id]
        if not result.ok:
            raise RuntimeError(f"chunk {chunk.chunk_id} failed: {result.error}")
        counts = result.histograms["m4l"]
        entry = samples.setdefault(chunk.sample, {"sumw": 0.0, "sumw2": 0.0, "read": 0, "selected": 0})
        entry["sumw"] = entry["sumw"] + np.asarray(counts.sumw)
        entry["sumw2"] = entry["sumw2"] + np.asarray(counts.sumw2)
        entry["read"] += result.events_read
        entry["selected"] += result.events_selected
    return {k: {**v, "sumw": np.asarray(v["sumw"]).tolist(), "sumw2": np.asarray(v["sumw2"]).tolist()}
            for k, v in samples.items()}


def run_subprocess_mode(mode: str, job: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Run one contender in a fresh interpreter; its wall time includes start-up and imports."""
    job_path = tmp / f"job-{uuid.uuid4().hex[:8]}.json"
    out_path = job_path.with_suffix(".out.json")
    job_path.write_text(json.dumps(job), "utf-8")
    if mode == "coffea":
        command = [str(COFFEA_VENV / "bin" / "python"), str(HERE / "coffea_processor.py"), str(job_path), str(out_path)]
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "_mode", mode, str(job_path), str(out_path)]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed ({done.returncode}): {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out_path.read_text("utf-8"))
    result.update(wall=wall, load=load)
    return result


# --------------------------------------------------------------------------- the distributed cluster


@dataclass(frozen=True)
class Services:
    """The broker and the run records (result backend) of the benchmark's workers."""

    broker: str
    backend: str


def ensure_vhost(broker: str) -> str:
    """``broker`` on a private vhost (so other sessions' workers never take our tasks) where we can make
    one; otherwise on the default vhost."""
    if not broker.endswith("/atlaspipe-bench"):
        return broker
    if shutil.which("rabbitmqctl") is not None:
        listed = subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, check=False)
        if "atlaspipe-bench" in listed.stdout.split():
            return broker
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", "atlaspipe-bench"], capture_output=True, check=False)
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", "atlaspipe-bench", "guest", ".*", ".*", ".*"],
                       capture_output=True, check=False)
    import kombu

    try:
        with kombu.Connection(broker, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception:
        return broker.rsplit("/", 1)[0] + "//"
    return broker


def private_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    """A redis-server of our own on a free port and its URL, so no other session's tests (which may
    flush or restart the shared one) touch the benchmark's records; None where redis-server is missing."""
    if "ATLASPIPE_BENCH_RESULT_BACKEND" in os.environ or shutil.which("redis-server") is None:
        return None
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis.from_url(url).ping()
            return server, url
        except redis.RedisError:
            time.sleep(0.05)
    server.kill()
    return None


class Cluster:
    """Real ``celery -A atlaspipe worker`` processes: load, aggregate, plot and N process slots."""

    def __init__(self, tmp: Path, services: Services, process_slots: int = 2, data_root: Path | None = None, *,
                 repo: Path = REPO, plot_slots: int = 1, extra_env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.services = services
        self.process_slots = process_slots
        self.plot_slots = plot_slots
        self.repo = repo
        self.tag = uuid.uuid4().hex[:6]
        self.env = {**os.environ, "ATLASPIPE_BROKER_URL": services.broker,
                    "ATLASPIPE_RESULT_BACKEND": services.backend,
                    "ATLASPIPE_OUTPUT_DIR": str(tmp / "outputs"), "ATLASPIPE_METRICS_PORT": "0",
                    "ATLASPIPE_INPUT_ROOTS": str(data_root or HERE / "data"),
                    "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(extra_env or {})}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        from atlaspipe.pipeline.celery.app import create_app

        app = create_app(self.services.broker, self.services.backend)
        app.control.purge()
        names = []
        for stage, slots in (("load", 1), ("aggregate", 1), ("plot", self.plot_slots), ("process", self.process_slots)):
            node = f"bench-{stage}-{self.tag}@{os.uname().nodename}"
            log = (self.tmp / f"worker-{stage}-{self.tag}.log").open("wb")  # open as long as the worker runs
            self.processes[stage] = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "atlaspipe", "worker", "-Q", stage, "-n", node,
                 "-c", str(slots), "--pool", "prefork", "--loglevel", "WARNING", "--without-gossip",
                 "--without-mingle", "--without-heartbeat"],
                cwd=self.repo, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            names.append(node)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            answered = {n for reply in app.control.ping(destination=names, timeout=1.0) for n in reply}
            if set(names) <= answered:
                return
            for stage, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{stage} worker exited; see {self.tmp}")
        raise RuntimeError("workers not ready after 90 s")

    def warm(self, data: Path) -> None:
        """One small run, untimed, so the pool children have imported the analysis (a deployed
        worker is a long-running service; its first chunk's imports are not per-run costs)."""
        run_distributed(self, str(data / "Data"), 1_000_000)

    def process_children(self) -> list[int]:
        main = self.processes["process"].pid
        out = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True, check=False).stdout.split()
        return [int(p) for p in out]

    def peak_rss_mb(self) -> dict[str, float]:
        """VmHWM (peak resident set) of each process-pool child and of the worker's main process."""
        peaks = {}
        for pid in [self.processes["process"].pid, *self.process_children()]:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks[str(pid)] = int(line.split()[1]) / 1024
        return peaks

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()


def run_distributed(cluster: Cluster, data: str, chunk_size: int, wait_for_plot: bool = True) -> dict[str, Any]:
    """Submit through atlaspipe-submit; wall time until the submitter exits after the run's final state
    (``histograms_s``: until the aggregate is stored and finalizing begins)."""
    from atlaspipe.model import RunState
    from atlaspipe.pipeline.celery.records import RunRecords

    store = RunRecords(cluster.services.backend)
    output = cluster.tmp / "outputs"
    command = [sys.executable, "-m", "atlaspipe.cli.submit", "--input", data, "--chunk-size", str(chunk_size),
               "--output", str(output), "--keep-records", "--quiet"]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cluster.repo, env=cluster.env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    found = threading.Event()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if line.startswith("run ") and " submitted" in line:
                found.set()

    threading.Thread(target=pump, daemon=True).start()
    if not found.wait(60):
        process.kill()
        raise RuntimeError(f"atlaspipe-submit printed no run id: {''.join(lines)[-2000:]}")
    run_id = next(line.split()[1] for line in lines if line.startswith("run "))
    marks: dict[str, float] = {}
    while True:
        try:
            state = store.status(run_id).state
        except Exception:
            state = RunState.SUBMITTED  # not yet registered by the load worker
        marks.setdefault(state.value, time.perf_counter() - started)
        if state is RunState.FINALIZING or state.terminal:
            break
        if process.poll() is not None and not state.terminal:
            raise RuntimeError(f"atlaspipe-submit exited in state {state}: {''.join(lines)[-2000:]}")
        time.sleep(0.005)
    histograms_ready = time.perf_counter() - started
    if wait_for_plot:
        process.wait(600)
    total = time.perf_counter() - started
    plan = store.plan(run_id)
    assert plan is not None
    results = store.chunk_results(run_id)
    state = store.status(run_id).state
    if state in (RunState.FAILED, RunState.PARTIAL):
        raise RuntimeError(f"run {run_id} {state}")
    # The headline is end to end: from launching the submitter to its exit after the last output.
    return {"wall": total if wait_for_plot else histograms_ready, "histograms_s": histograms_ready,
            "wall_with_plot": total if wait_for_plot else None, "load": load,
            "run_id": run_id, "marks": marks, "tasks": len(plan.chunks),
            "samples": raw_from_chunks(plan.chunks, results)}


# --------------------------------------------------------------------------- checks and report


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds used so far by these processes and their children (live and reaped)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                times = process.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            continue
    return total


def events_read(result: dict[str, Any]) -> int:
    if "read" in result:
        return int(result["read"])
    return sum(int(s["read"]) for s in result["samples"].values())


def compare_histograms(reference: Samples, other: Samples, is_mc: dict[str, bool]) -> list[str]:
    """Differences between two runs' per-sample histograms: [] when they agree."""
    import numpy as np

    problems = []
    if set(reference) != set(other):
        return [f"samples differ: {sorted(set(reference) ^ set(other))}"]
    for name, ref in reference.items():
        got = other[name]
        if (ref["read"], ref["selected"]) != (got["read"], got["selected"]):
            problems.append(f"{name}: read/selected {ref['read']}/{ref['selected']} vs {got['read']}/{got['selected']}")
        for key in ("sumw", "sumw2"):
            a, b = np.asarray(ref[key]), np.asarray(got[key])
            same = np.array_equal(a, b) if not is_mc[name] else np.allclose(a, b, rtol=MC_REL_TOLERANCE, atol=0)
            if not same:
                worst = float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-300)))
                problems.append(f"{name} {key}: max relative difference {worst:.3g}")
    return problems


def dataset_job(data: Path, chunk_size: int, workers: int = 2) -> dict[str, Any]:
    from atlaspipe.config import analysis_config
    from atlaspipe.pipeline.planning import resolve_inputs

    release, files = resolve_inputs("2020", [str(data)])
    from atlaspipe.physics.catalog import load_release

    rel = load_release(release)
    return {"data": str(data), "chunk_size": chunk_size, "workers": workers,
            "edges": analysis_config().bin_edges(),
            "files": [{"path": f.source, "sample": f.sample, "is_mc": not rel.sample(f.sample).is_data}
                      for f in files]}


def ensure_coffea(log: Callable[[str], None]) -> bool:
    """Create benchmarks/.venv-coffea with coffea and the main venv's numpy/awkward/uproot versions."""
    python = COFFEA_VENV / "bin" / "python"
    probe = (subprocess.run([str(python), "-c", "import coffea"], capture_output=True, check=False)
             if python.exists() else None)
    if probe is not None and probe.returncode == 0:
        return True
    from importlib import metadata

    pins = [f"{name}=={metadata.version(name)}" for name in
            ("numpy", "awkward", "uproot", "isal", "vector", "hist", "boost-histogram")]
    log(f"creating {COFFEA_VENV} with {' '.join(COFFEA_PINS + tuple(pins))}")
    subprocess.run([sys.executable, "-m", "venv", str(COFFEA_VENV)], check=True)
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", *COFFEA_PINS, *pins],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log(f"coffea install failed: {done.stderr[-1500:]}")
        return False
    return True


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": model, "cores": str(os.cpu_count()), "memory_gib": f"{memory:.0f}",
            "python": platform.python_version(), "kernel": platform.release()}


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("atlaspipe", "uproot", "awkward", "numpy", "vector", "hist", "isal", "celery", "kombu", "redis"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    python = COFFEA_VENV / "bin" / "python"
    if python.exists():
        done = subprocess.run([str(python), "-c", "import coffea; print(coffea.__version__)"],
                              capture_output=True, text=True, check=False)
        out["coffea"] = done.stdout.strip() or "-"
    return out


# --------------------------------------------------------------------------- the whole comparison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="atlaspipe vs a serial loop, coffea and the read limit")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 120k events, 1 repetition")
    parser.add_argument("--repetitions", type=int, default=None)
    parser.add_argument("--chunk-size", type=int, default=None, help="default: atlaspipe's DEFAULT_CHUNK_SIZE")
    parser.add_argument("--data-root", type=Path, default=HERE / "data", help="where the datasets live")
    parser.add_argument("--no-coffea", action="store_true")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--no-lz4", action="store_true", help="skip the LZ4 variant (and making its dataset)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 1-slot scaling runs")
    parser.add_argument("--sweep", type=int, nargs="+", default=[125_000, 250_000, 500_000, 1_000_000, 2_000_000])
    parser.add_argument("--sweep-repetitions", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None, help="results file (default benchmarks/RESULTS.md; "
                        "--quick writes none unless given)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw measurements here")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    from make_dataset import make

    from atlaspipe.config import DEFAULT_CHUNK_SIZE

    def log(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    quick = args.quick
    began = time.perf_counter()
    load_start = os.getloadavg()
    log("dataset")
    data = make("zlib", quick=quick, root=args.data_root)
    data_lz4 = None if quick or args.no_lz4 else make("lz4", quick=False, root=args.data_root)
    chunk = args.chunk_size or (20_000 if quick else DEFAULT_CHUNK_SIZE)
    job = dataset_job(data, chunk)
    coffea = not args.no_coffea and (ensure_coffea(log) if not quick else (COFFEA_VENV / "bin" / "python").exists())
    broker = ensure_vhost(DEFAULT_BROKER)
    tmp = Path(tempfile.mkdtemp(prefix="atlaspipe-bench-"))
    own_redis = private_redis(tmp)
    try:
        setup = Setup(args=args, quick=quick, repetitions=args.repetitions or (1 if quick else 3), chunk=chunk,
                      data=data, data_lz4=data_lz4, job=job, is_mc={f["sample"]: f["is_mc"] for f in job["files"]},
                      coffea=coffea, tmp=tmp, services=Services(broker, own_redis[1] if own_redis else DEFAULT_BACKEND),
                      began=began, load_start=load_start, log=log)
        return _compare(setup)
    finally:
        if own_redis is not None:
            own_redis[0].terminate()
            own_redis[0].wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class Setup:
    """What every measurement of one comparison shares."""

    args: argparse.Namespace
    quick: bool
    repetitions: int
    chunk: int
    data: Path
    data_lz4: Path | None
    job: dict[str, Any]
    is_mc: dict[str, bool]
    coffea: bool
    tmp: Path
    services: Services
    began: float
    load_start: tuple[float, float, float]
    log: Callable[[str], None]

    def cluster(self, process_slots: int) -> Cluster:
        # Two plot slots: the fit and the figures render in parallel once the process slots are idle.
        return Cluster(self.tmp, self.services, process_slots, self.args.data_root, plot_slots=2)


def _compare(setup: Setup) -> int:
    setup.log(f"broker {setup.services.broker.rsplit('@', 1)[-1]}, records {setup.services.backend.rsplit('@', 1)[-1]}")
    measurements: dict[str, Any] = {"runs": {}, "check": {}, "quick": setup.quick, "chunk_size": setup.chunk}
    cluster = setup.cluster(2)
    try:
        setup.log("starting workers (process --concurrency 2, load, aggregate, plot)")
        cluster.start()
        cluster.warm(setup.data)
        _race(setup, cluster, measurements["runs"])
        measurements["worker_rss_mb"] = cluster.peak_rss_mb()
        setup.log(f"peak RSS of the process worker's processes: {measurements['worker_rss_mb']}")
        _check_against_inprocess(setup, measurements)
        measurements["overhead"] = _task_overhead(setup, cluster)
        setup.log(f"overhead: {measurements['overhead']}")
    finally:
        cluster.stop()
    if not setup.quick and not setup.args.no_scaling:
        measurements["scaling"] = _scaling(setup, measurements["runs"])
        setup.log(f"scaling: {measurements['scaling']}")
    if not setup.quick and setup.data_lz4 is not None:
        _lz4_variant(setup, setup.data_lz4, measurements)
    if not setup.quick and not setup.args.no_sweep:
        _chunk_size_sweep(setup, measurements)
    return _write_report(setup, measurements)


def _race(setup: Setup, cluster: Cluster, runs: dict[str, list[dict[str, Any]]]) -> None:
    """Every contender, ``setup.repetitions`` times, interleaved."""
    from atlaspipe.io.checksums import kept_folder

    order = ["distributed", "inprocess", "serial", *(["coffea"] if setup.coffea else []), "readlimit"]
    for rep in range(setup.repetitions):
        # Rotate the order so no contender always runs first (page cache, turbo, neighbours' load).
        for mode in order[rep % len(order):] + order[: rep % len(order)]:
            # Each atlaspipe run hashes its inputs for the manifest, as a first run over new files
            # does, rather than finding the digests the previous repetition kept.
            shutil.rmtree(kept_folder(), ignore_errors=True)
            if mode == "distributed":
                result = run_distributed(cluster, str(setup.data), setup.chunk)
            else:
                result = run_subprocess_mode(mode, setup.job, setup.tmp)
            result["events"] = events_read(result)
            runs.setdefault(mode, []).append(result)
            setup.log(f"rep {rep + 1}/{setup.repetitions} {mode:<11} {result['wall']:6.2f} s  "
                      f"{result['events'] / result['wall']:>12,.0f} ev/s  (load {result['load']:.2f})")


def _check_against_inprocess(setup: Setup, measurements: dict[str, Any]) -> None:
    runs = measurements["runs"]
    reference = runs["inprocess"][0]["samples"]
    for mode in ("distributed", "serial", "coffea"):
        if mode in runs:
            problems = [p for r in runs[mode] for p in compare_histograms(reference, r["samples"], setup.is_mc)]
            measurements["check"][mode] = problems
            setup.log(f"histograms {mode} vs inprocess: {'identical' if not problems else problems[:5]}")


def _task_overhead(setup: Setup, cluster: Cluster) -> dict[str, Any]:
    setup.log("per-task overhead: pseudo-data files in 1-entry chunks")
    data_dir = str(Path(setup.data) / "Data")
    overhead = run_distributed(cluster, data_dir, 1)
    inproc_tiny = run_subprocess_mode("inprocess", {**dataset_job(Path(data_dir), 1)}, setup.tmp)
    busy = overhead["marks"].get("aggregating", overhead["wall"]) - overhead["marks"].get("running", 0.0)
    return {
        "tasks": overhead["tasks"], "busy_seconds": busy,
        "ms_per_task": 1e3 * busy * cluster.process_slots / overhead["tasks"],
        "tasks_per_second": overhead["tasks"] / busy,
        "inprocess_ms_per_chunk": 1e3 * inproc_tiny["task_seconds_mean"],
    }


def _scaling(setup: Setup, runs: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    setup.log("scaling: 1 process slot")
    single = setup.cluster(1)
    try:
        single.start()
        single.warm(setup.data)
        ones = [run_distributed(single, str(setup.data), setup.chunk) for _ in range(2)]
    finally:
        single.stop()
    one = max(events_read(r) / r["wall"] for r in ones)
    two = max(r["events"] / r["wall"] for r in runs["distributed"])
    return {"one": one, "two": two, "speedup": two / one}


def _lz4_variant(setup: Setup, data_lz4: Path, measurements: dict[str, Any]) -> None:
    setup.log("LZ4 variant")
    job_lz4 = dataset_job(data_lz4, setup.chunk)
    lz4 = setup.cluster(2)
    try:
        lz4.start()
        lz4.warm(setup.data)
        for mode in ("distributed", "inprocess", "readlimit"):
            r = (run_distributed(lz4, str(data_lz4), setup.chunk) if mode == "distributed"
                 else run_subprocess_mode(mode, job_lz4, setup.tmp))
            r["events"] = events_read(r)
            measurements.setdefault("lz4", {})[mode] = r
            setup.log(f"lz4 {mode:<11} {r['wall']:6.2f} s  {r['events'] / r['wall']:>12,.0f} ev/s")
    finally:
        lz4.stop()
    reference = measurements["runs"]["inprocess"][0]["samples"]
    measurements["check"]["lz4"] = compare_histograms(reference, measurements["lz4"]["inprocess"]["samples"],
                                                      setup.is_mc)


def _chunk_size_sweep(setup: Setup, measurements: dict[str, Any]) -> None:
    setup.log(f"chunk-size sweep {setup.args.sweep}")
    for size in setup.args.sweep:
        sweep_cluster = setup.cluster(2)
        try:
            sweep_cluster.start()
            sweep_cluster.warm(setup.data)
            dist = [run_distributed(sweep_cluster, str(setup.data), size) for _ in range(setup.args.sweep_repetitions)]
            rss = sweep_cluster.peak_rss_mb()
        finally:
            sweep_cluster.stop()
        ip = run_subprocess_mode("inprocess", dataset_job(setup.data, size), setup.tmp)
        entry = {"chunk_size": size, "tasks": dist[0]["tasks"],
                 "distributed": max(events_read(r) / r["wall"] for r in dist),
                 "inprocess": events_read(ip) / ip["wall"], "worker_peak_rss_mb": max(rss.values()),
                 "inprocess_peak_rss_mb": ip["peak_rss_mb"], "load": max(r["load"] for r in dist)}
        measurements.setdefault("sweep", []).append(entry)
        setup.log(f"sweep {entry}")


def _write_report(setup: Setup, measurements: dict[str, Any]) -> int:
    """Print and write the tables (and the raw measurements); 1 if any histograms disagreed."""
    args = setup.args
    measurements.update(machine=machine(), versions=versions(), seconds=time.perf_counter() - setup.began,
                        load_start=setup.load_start, load_end=os.getloadavg(),
                        date=datetime.now(UTC).isoformat(timespec="seconds"),
                        command="python benchmarks/compare.py" + (" " + " ".join(args.argv)).rstrip())
    for run_list in measurements["runs"].values():
        for r in run_list:
            r.pop("samples", None)
    for r in measurements.get("lz4", {}).values():
        r.pop("samples", None)
    table = report(measurements)
    print(table)
    output = args.output or (None if setup.quick else RESULTS)
    if output is not None:
        write_results(output, table)
        setup.log(f"wrote {output}")
    if args.json:
        args.json.write_text(json.dumps(measurements, indent=1, default=str), "utf-8")
    failed = any(measurements["check"].values())
    return 1 if failed else 0


def report(m: dict[str, Any]) -> str:
    """The Markdown tables of one comparison."""
    runs = m["runs"]
    events = runs["inprocess"][0]["events"]
    labels = {
        "distributed": "1. atlaspipe distributed (process worker -c 2 + load/aggregate/plot workers)",
        "inprocess": "2. atlaspipe in-process (`atlaspipe run` path, 1 process)",
        "serial": "3. serial uproot.iterate + awkward + vector loop (notebook style)",
        "coffea": "4. coffea FuturesExecutor(workers=2)",
        "readlimit": "5. read limit: needed branches, uproot, 2 processes, no computation",
    }
    walls = {mode: [r["wall"] for r in rs] for mode, rs in runs.items()}
    typical = {mode: median(w) for mode, w in walls.items()}
    lines = [
        f"Date {m['date']}; {m['machine']['cpu']}, {m['machine']['cores']} cores, {m['machine']['memory_gib']} GiB; "
        f"Python {m['machine']['python']}; load average at start {m['load_start'][0]:.2f}, "
        f"at end {m['load_end'][0]:.2f} (other sessions share the machine).",
        "",
        f"Command: `{m['command']}` ({m['seconds'] / 60:.1f} min). {events:,} events, chunk size "
        f"{m['chunk_size']:,}, {len(runs['inprocess'])} interleaved repetition(s), order rotated per repetition. "
        "**End to end**: each time runs from launching the contender (a fresh process: start-up and imports "
        "included) to its last output written: atlaspipe's fit, figures, tables, results.json and report "
        "(distributed: until `atlaspipe-submit` exits after the final state); the serial loop and coffea "
        "end with the same main m4l plot (benchmarks/mainplot.py); the read limit only reads.",
        "",
        "| contender | median wall s | min–max s | each (load average) | median events/s |",
        "|---|---:|---:|---|---:|",
    ]
    for mode, rs in runs.items():
        each = ", ".join(f"{r['wall']:.2f} ({r['load']:.1f})" for r in rs)
        lines.append(f"| {labels[mode]} | {typical[mode]:.2f} | {min(walls[mode]):.2f}–{max(walls[mode]):.2f} | "
                     f"{each} | {events / typical[mode]:,.0f} |")
    lines += ["", "| target (medians, side by side) | measured | target | |", "|---|---:|---|---|"]
    for other, need in (("serial", 2.0), ("coffea", 2.5), ("readlimit", 0.7)):
        if other in typical:
            value = typical[other] / typical["distributed"]
            lines.append(f"| end to end: distributed speed / {other} | {value:.2f}× | ≥ {need} | "
                         f"{'met' if value >= need else 'missed'} |")
    dist = runs.get("distributed", [])
    if dist and dist[0].get("histograms_s") is not None:
        finalize = [r["wall"] - r["histograms_s"] for r in dist]
        value = median(finalize)
        lines.append(f"| distributed: finalize (from the stored aggregate to the final state), s "
                     f"(min–max {min(finalize):.2f}–{max(finalize):.2f}) | {value:.2f} | ≤ 1.0 | "
                     f"{'met' if value <= 1.0 else 'missed'} |")
        hist = median([r["histograms_s"] for r in dist])
        lines.append(f"| distributed: until the histograms exist (the old headline), s | {hist:.2f} | | |")
    if "inprocess" in runs and runs["inprocess"][0].get("histograms_s") is not None:
        lines.append(f"| in-process: until the histograms exist, s | "
                     f"{median([r['histograms_s'] for r in runs['inprocess']]):.2f} | | |")
    rss = m.get("worker_rss_mb", {})
    if rss:
        lines.append(f"| peak RSS per process-worker process (MB, VmHWM; main + pool children) | "
                     f"{', '.join(f'{v:.0f}' for v in rss.values())} | ≤ 400 | "
                     f"{'met' if max(rss.values()) <= 400 else 'missed'} |")
    if "overhead" in m:
        o = m["overhead"]
        lines.append(f"| per-task overhead ({o['tasks']} one-entry chunks, 2 slots): ms per task per slot "
                     f"({o['tasks_per_second']:.0f} tasks/s; in-process {o['inprocess_ms_per_chunk']:.2f} ms "
                     "per chunk) | "
                     f"{o['ms_per_task']:.2f} | ≤ 3 | {'met' if o['ms_per_task'] <= 3 else 'missed'} |")
    if "scaling" in m:
        s = m["scaling"]
        lines.append(f"| scaling 1 → 2 process slots (best runs) | {s['speedup']:.2f}× "
                     f"({s['one']:,.0f} → {s['two']:,.0f} ev/s) | | |")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + "."]
    checks = m["check"]
    lines += ["", "Histogram check against the in-process run (data bins exact, MC bins within relative "
              f"{MC_REL_TOLERANCE:g}, read and selected counts exact): "
              + "; ".join(f"{k} {'identical' if not v else 'DIFFERENT: ' + '; '.join(v[:3])}"
                          for k, v in checks.items())
              + "."]
    if "lz4" in m:
        lz = m["lz4"]
        lines += ["", "LZ4(1) variant of the same events:", "", "| contender | wall s | events/s |", "|---|---:|---:|"]
        for mode, r in lz.items():
            lines.append(f"| {labels[mode]} | {r['wall']:.2f} | {r['events'] / r['wall']:,.0f} |")
        lz_rate = {mode: r["events"] / r["wall"] for mode, r in lz.items()}
        lines.append(f"| ratio distributed / read limit | {lz_rate['distributed'] / lz_rate['readlimit']:.2f} | |")
    if "sweep" in m:
        lines += ["", "Chunk-size sweep (distributed: fresh warmed workers per size, best of the repetitions; "
                  "in-process: one run):", "",
                  "| chunk size | tasks | distributed ev/s | in-process ev/s | worker peak RSS MB "
                  "| in-process peak RSS MB | load |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for e in m["sweep"]:
            lines.append(f"| {e['chunk_size']:,} | {e['tasks']} | {e['distributed']:,.0f} | {e['inprocess']:,.0f} | "
                         f"{e['worker_peak_rss_mb']:.0f} | {e['inprocess_peak_rss_mb']:.0f} | {e['load']:.2f} |")
    return "\n".join(lines) + "\n"


def write_results(path: Path, table: str) -> None:
    """Replace the generated block of RESULTS.md, keeping the hand-written text around it."""
    block = f"{MARK_START}\n{table}{MARK_END}"
    text = path.read_text("utf-8") if path.exists() else f"# Benchmark results\n\n{MARK_START}\n{MARK_END}\n"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, "utf-8")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "_mode":
        job_in = json.loads(Path(sys.argv[3]).read_text("utf-8"))
        outcome = MODES[sys.argv[2]](job_in)
        Path(sys.argv[4]).write_text(json.dumps(outcome), "utf-8")
        sys.exit(0)
    sys.exit(main())
