"""Bad input: every case ends in a clear message naming the file or field, in process and on workers,
and ``--allow-partial`` marks every output PARTIAL with what was lost."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import uproot

from atlaspipe.config import analysis_config
from atlaspipe.generate.embedded import embedded_sample_dir
from atlaspipe.model import Manifest, RunPlan, RunRequest, RunResults, RunState, SampleLoss, new_run_id
from atlaspipe.pipeline.lifecycle import Lifecycle, now_text
from atlaspipe.pipeline.planning import plan_run, resolve_inputs
from atlaspipe.pipeline.processing import process_chunk
from atlaspipe.pipeline.stages import AnalysisStages
from tests.conftest import BACKEND_URL, WorkerPool
from tests.faultkit import (
    FAULT_BROKER_URL,
    fault_pool,  # noqa: F401 - a fixture
    run_submit,
    start_stages,
    wait_for,
)

GOOD = embedded_sample_dir() / "Data" / "data_A.4lep.root"


class PlannedStages(AnalysisStages):
    """The analysis stages with a plan made earlier, to run it after its input changed."""

    def __init__(self, plan: RunPlan) -> None:
        super().__init__()
        self.planned = plan

    def plan(self, request: RunRequest) -> RunPlan:  # noqa: ARG002 - the Stages interface
        return self.planned


def truncated(path: Path) -> None:
    data = GOOD.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(5).randbytes(50_000))


def empty(path: Path) -> None:
    path.write_bytes(b"")


def missing_tree(path: Path) -> None:
    with uproot.recreate(path) as handle:
        handle.mktree("other", {"x": np.int32})
        handle["other"].extend({"x": np.arange(5, dtype=np.int32)})


def missing_branch(path: Path) -> None:
    with uproot.recreate(path) as handle:
        handle.mktree("mini", {"runNumber": np.int32})
        handle["mini"].extend({"runNumber": np.arange(10, dtype=np.int32)})


def scalar_where_jagged(path: Path) -> None:
    """Every branch the selection reads, but ``lep_pt`` holds one number per event."""
    import awkward as ak

    events = uproot.open(GOOD)["mini"].arrays(library="ak")
    branches = {name: events[name] for name in events.fields if name != "lep_n"}
    branches["lep_pt"] = ak.Array(np.ones(len(events), dtype=np.float32))
    types = {name: (f"var * {ak.flatten(a).type.content}" if a.ndim > 1 else a.type.content)
             for name, a in branches.items()}
    with uproot.recreate(path) as handle:
        handle.mktree("mini", {k: str(v) for k, v in types.items()}, counter_name=lambda _: "lep_n")
        handle["mini"].extend(branches)


BAD_FILES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (truncated, "re:truncated or corrupt|not a readable ROOT file|cannot read"),
    "random bytes": (random_bytes, "not a readable ROOT file"),
    "empty": (empty, "file is empty (0 bytes)"),
    "missing tree": (missing_tree, "no tree 'mini' in file (found: other)"),
    "missing branch": (missing_branch, "re:branch 'lep_\\w+': branch missing from tree"),
    "jagged expected": (scalar_where_jagged, "branch 'lep_pt': expected a per-lepton (jagged) branch"),
}


def atlaspipe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atlaspipe", *args], capture_output=True, text=True,
                          timeout=180, cwd=cwd, check=False)


def assert_clear(completed: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Non-zero exit, no traceback, and one line that names every needle ("re:" marks a regex)."""
    import re

    assert completed.returncode != 0, completed.stdout
    assert "Traceback" not in completed.stderr, completed.stderr
    lines = completed.stderr.strip().splitlines()
    patterns = [n[3:] if n.startswith("re:") else re.escape(n) for n in needles]
    assert any(all(re.search(p, line) for p in patterns) for line in lines), \
        f"no line naming {needles} in:\n{completed.stderr}"


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_in_process_gives_one_clear_line(case: str, tmp_path: Path) -> None:
    make, reason = BAD_FILES[case]
    bad = tmp_path / "data_B.4lep.root"
    make(bad)
    completed = atlaspipe("run", "--input", str(GOOD), str(bad), "--output", str(tmp_path / "out"), "--quiet",
                          cwd=tmp_path)
    assert_clear(completed, str(bad), reason)
    assert completed.returncode in (1, 2)


@pytest.mark.parametrize(("args", "needle"), [
    (["--samples", "no_such_sample"], "unknown sample 'no_such_sample'"),
    (["--release", "2099"], "--release"),
    (["--chunk-size", "0"], "chunk_size"),
    (["--chunk-size", "-5"], "chunk_size"),
    (["--input", "ftp://example.org/data_A.4lep.root"], "unsupported URL scheme 'ftp'"),
    (["--input", "file:///etc/passwd"], "unsupported URL scheme 'file'"),
    (["--input", "/no/such/data_A.4lep.root"], "file not found"),
])
def test_bad_option_in_process(args: list[str], needle: str, tmp_path: Path) -> None:
    completed = atlaspipe("run", *args, "--output", str(tmp_path / "out"), "--quiet", cwd=tmp_path)
    assert_clear(completed, needle)


@pytest.mark.parametrize("text", ["bins = [", "bins = 'many'", "chunk_size = 0", "no_such_setting = 1"])
def test_malformed_config_file(text: str, tmp_path: Path) -> None:
    config = tmp_path / "analysis.toml"
    config.write_text(text + "\n")
    completed = atlaspipe("run", "--config", str(config), "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert_clear(completed, str(config))


def test_entry_count_changed_since_planning(tmp_path: Path) -> None:
    data = tmp_path / "data_A.4lep.root"
    shutil.copyfile(GOOD, data)
    release, files = resolve_inputs(None, [str(data)])
    plan = plan_run(new_run_id(), analysis_config(release=release, chunk_size=10_000), files)
    missing_branch(data)  # rewritten with another entry count
    result = process_chunk(plan.chunks[0], plan.config, "test")
    assert "when the run was planned" in (result.error or ""), result


def run_with_bad_data_b(tmp_path: Path, damage: Callable[[Path], None],
                        *needles: str) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """Good data_A and ggH beside a damaged data_B: refused without --allow-partial (the message
    names data_B and ``needles``), completed with it. Returns the inputs, output folder and run."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copyfile(GOOD, inputs / "data_A.4lep.root")
    shutil.copyfile(embedded_sample_dir() / "MC" / "mc_345060.ggH125_ZZ4lep.4lep.root",
                    inputs / "mc_345060.ggH125_ZZ4lep.4lep.root")
    damage(inputs / "data_B.4lep.root")
    out = tmp_path / "out"
    refused = atlaspipe("run", "--input", str(inputs), "--output", str(out), "--quiet", cwd=tmp_path)
    assert_clear(refused, "data_B.4lep.root", *needles)
    completed = atlaspipe("run", "--input", str(inputs), "--output", str(out), "--quiet", "--allow-partial",
                          cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    return inputs, out, completed


def test_allow_partial_marks_every_output(tmp_path: Path) -> None:
    from atlaspipe.results.plotting import build_figures

    _, out, completed = run_with_bad_data_b(tmp_path, scalar_where_jagged, "lep_pt")
    assert "PARTIAL" in completed.stdout and "data_B.4lep.root" in completed.stdout
    run_dir = max((p for p in out.iterdir() if (p / "results.json").exists()), key=lambda p: p.name)
    check_partial_outputs(run_dir, "data_B")
    results = RunResults.read(run_dir / "results.json")
    texts = [t.get_text() for fig in build_figures(results).values() for t in fig.texts]
    assert any("PARTIAL" in t for t in texts), texts


# A truncated file still opens (its header is whole) and fails per chunk instead: covered above.
@pytest.mark.parametrize("damage", [random_bytes, empty], ids=["random", "empty"])
def test_allow_partial_covers_files_that_cannot_be_opened(tmp_path: Path, damage: Callable[[Path], None]) -> None:
    inputs, out, completed = run_with_bad_data_b(tmp_path, damage)
    assert "PARTIAL" in completed.stdout and "file " in completed.stdout and "data_B.4lep.root" in completed.stdout
    run_dir = max((p for p in out.iterdir() if (p / "results.json").exists()), key=lambda p: p.name)
    results = RunResults.read(run_dir / "results.json")
    assert results.missing["data_B"] == SampleLoss(chunks_failed=0, files_failed=1, events_lost=0, fraction_lost=1.0)
    assert results.data.samples["data_A"].events_read > 0
    assert [f.source for f in results.chunks.failed] == [str(inputs / "data_B.4lep.root")]
    assert "PARTIAL" in (run_dir / "report.html").read_text()


def check_partial_outputs(run_dir: Path, lost_sample: str) -> None:
    results = RunResults.read(run_dir / "results.json")
    assert results.status == "partial"
    assert results.missing[lost_sample].fraction_lost == 1.0
    assert results.missing[lost_sample].chunks_failed >= 1
    assert all(f.sample == lost_sample for f in results.chunks.failed)
    assert Manifest.read(run_dir / "manifest.json").status == "partial"
    assert "PARTIAL" in (run_dir / "yields.md").read_text()
    assert "PARTIAL" in (run_dir / "report.html").read_text()


# --- the same inputs through the workers ---------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.parametrize("where", ["../../etc/passwd", "symlink"])
def test_paths_outside_the_input_roots_are_refused(fault_pool: WorkerPool, where: str) -> None:  # noqa: F811
    start_stages(fault_pool)
    if where == "symlink":
        outside = Path("/tmp") / f"atlaspipe-outside-{fault_pool.tag}"
        outside.mkdir(exist_ok=True)
        shutil.copyfile(GOOD, outside / "data_A.4lep.root")
        link = fault_pool.tmp / "data_A.4lep.root"
        link.symlink_to(outside / "data_A.4lep.root")
        target = str(link)
    else:
        # As many parents as it takes from the workers' folder: an existing file, so the refusal is
        # the fence's and not "file not found".
        target = os.path.relpath("/etc/passwd", fault_pool.tmp)
    try:
        completed = run_submit(fault_pool, "--input", target)
    finally:
        if where == "symlink":
            shutil.rmtree(outside)
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert "outside the allowed input folders" in completed.stderr, completed.stderr


@pytest.mark.integration
def test_entry_count_changed_on_workers(fault_pool: WorkerPool) -> None:  # noqa: F811
    """A plan made before the file changed: the worker refuses the chunk and says why."""
    from atlaspipe.pipeline.celery.app import create_app
    from atlaspipe.pipeline.celery.canvas import run_graph
    from atlaspipe.pipeline.celery.records import RunRecords

    start_stages(fault_pool)
    data = fault_pool.tmp / "data_A.4lep.root"
    shutil.copyfile(GOOD, data)
    release, files = resolve_inputs(None, [str(data)])
    run_id = new_run_id()
    plan = plan_run(run_id, analysis_config(release=release, chunk_size=10_000), files)
    missing_branch(data)
    store = RunRecords(BACKEND_URL)
    request = RunRequest(run_id=run_id, output_dir=str(fault_pool.tmp / "outputs"), created=now_text())
    lifecycle = Lifecycle(store, "celery", PlannedStages(plan))
    lifecycle.submit(request)
    assert lifecycle.plan(run_id, "test") is not None
    app = create_app(FAULT_BROKER_URL, BACKEND_URL)
    run_graph(app, run_id, plan.chunks, plan.config).apply_async()
    wait_for(lambda: store.status(run_id).state is RunState.FAILED, what="the run to fail")
    failures = store.status(run_id).failures
    assert failures and failures[0].source == str(data)
    assert "when the run was planned" in failures[0].reason


@pytest.mark.integration
def test_corpus_on_workers(fault_pool: WorkerPool) -> None:  # noqa: F811
    """The whole corpus in one folder, one partial run on workers fenced to that folder: every case
    ends as its named failure, its skip or its counted exclusion in results.json and the summary."""
    from atlaspipe.physics.catalog import recognise_file
    from tests import corpus

    cases = tuple(c for c in corpus.CASES if c.name != "wrong-name")
    allowed = corpus.build(fault_pool.tmp / "corpus", cases)
    (allowed / "good").mkdir()
    shutil.copyfile(GOOD, allowed / "good" / "data_A.4lep.root")
    start_stages(fault_pool, extra_env={"ATLASPIPE_INPUT_ROOTS": str(allowed)})
    partial = run_submit(fault_pool, "--input", str(allowed), "--allow-partial")
    assert partial.returncode == 0 and "Traceback" not in partial.stderr, partial.stderr
    run_dir = Path(next(line.split()[-1] for line in partial.stderr.splitlines() if "outputs will be in" in line))
    results = RunResults.read(run_dir / "results.json")
    assert results.status == "partial"
    failures = {f.source: f for f in results.chunks.failed}
    skipped = {s.source: s.reason for s in results.skipped_inputs}
    counted = {**{n: s.events_non_finite for n, s in results.data.samples.items()},
               **{n: s.events_non_finite for n, s in results.samples.items()}}
    for case in cases:
        path = str(case.path(fault_pool.tmp / "corpus"))
        if case.outcome == "error":
            assert path in failures, (case.name, sorted(failures))
            assert re.search(case.reason, failures[path].reason), (case.name, failures[path].reason)
            assert (failures[path].chunk_id is None) == case.planning, case.name
            assert partial.stdout.count(path) == 1 or path not in partial.stdout, case.name
        elif case.outcome == "skipped":
            assert skipped[path] == case.reason, case.name
            assert f"{path}: {case.reason}" in partial.stdout
        else:
            assert counted[recognise_file(path)[1].name] == case.excluded, case.name
    assert "non-finite values (NaN/inf): 7 event(s) left out: " in partial.stdout, partial.stdout
    manifest = Manifest.read(run_dir / "manifest.json")
    text = (run_dir / "manifest.json").read_text()
    assert not re.search(r"\w+:[x*!]?:\d+:\d+:", text) and "SECRET-PAGE" not in text
    passwd = str(corpus.CASE_BY_NAME["link-to-passwd"].path(fault_pool.tmp / "corpus"))
    assert [i.checksum for i in manifest.inputs if i.source == passwd] == [None]
    assert 'id="non-finite"' in (run_dir / "report.html").read_text()
    assert Manifest.read(run_dir / "manifest.json").status == "partial"
    assert "PARTIAL" in (run_dir / "yields.md").read_text() and "PARTIAL" in (run_dir / "report.html").read_text()
    # Without --allow-partial: a file failing at planning fails the run, a failed chunk exits 1; a
    # file no catalog names is refused saying how to name it. Each names the file, no traceback.
    corpus.build(fault_pool.tmp / "corpus", (corpus.CASE_BY_NAME["wrong-name"],))
    for name in ("random-bytes", "unequal-lengths", "wrong-name"):
        case = corpus.CASE_BY_NAME[name]
        refused = run_submit(fault_pool, "--input", str(GOOD), str(case.path(fault_pool.tmp / "corpus")))
        assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
        assert str(case.path(fault_pool.tmp / "corpus")) in refused.stderr + refused.stdout, name
        assert re.search(case.reason, refused.stderr + refused.stdout), (name, refused.stderr, refused.stdout)
