"""Reference runs for the tests: the in-process numbers of a set of inputs, and what to compare."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atlaspipe.config import analysis_config
from atlaspipe.model import RunResults, new_run_id
from atlaspipe.pipeline.inprocess import execute_plan
from atlaspipe.pipeline.planning import plan_run, resolve_inputs
from atlaspipe.pipeline.processing import aggregate
from atlaspipe.results.document import build_results

_reference_cache: dict[tuple[tuple[str, ...], int, str | None], RunResults] = {}


def reference_results(inputs: Sequence[str | Path], chunk_size: int = 500_000,
                      release: str | None = None) -> RunResults:
    """``results.json``'s numbers for ``inputs`` from the in-process stage functions (no outputs written)."""
    key = (tuple(str(i) for i in inputs), chunk_size, release)
    if key not in _reference_cache:
        rel, files = resolve_inputs(release, [str(i) for i in inputs])
        plan = plan_run(new_run_id(), analysis_config(release=rel, chunk_size=chunk_size), files)
        _reference_cache[key] = build_results(aggregate(plan, execute_plan(plan)), plan)
    return _reference_cache[key]


def histograms(results: RunResults) -> dict[str, Any]:
    """Every histogram and event count of a run, for bit-for-bit comparisons."""
    out: dict[str, Any] = {"data": results.data.m4l, "data_channels": results.data.channels,
                           "data_read": results.data.events_read, "data_selected": results.data.events_selected,
                           "cutflow": results.cutflow, "controls": results.controls,
                           "data_controls": results.data.controls}
    for name, sample in results.samples.items():
        out[name] = (sample.m4l, sample.channels, sample.events_selected, sample.events_read, sample.controls)
    return out


def submit(env: dict[str, str], cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``atlaspipe-submit ARGS --quiet`` (subcommands without ``--quiet``) as a subprocess."""
    quiet = [] if args and args[0] in ("status", "list", "cancel", "clean") else ["--quiet"]
    return subprocess.run([sys.executable, "-m", "atlaspipe.cli.submit", *args, *quiet], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


def run_dir_of(completed: subprocess.CompletedProcess[str]) -> Path:
    """The run folder a submitter named on stderr."""
    for line in completed.stderr.splitlines():
        if "outputs will be in" in line:
            return Path(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no run folder in the submitter's output:\n{completed.stderr}")


def write_many_entries_file(path: Path, entries: int) -> None:
    """A valid 2020-schema data file with ``entries`` identical four-muon events."""
    import awkward as ak
    import numpy as np
    import uproot

    counts = np.full(entries, 4, dtype=np.int32)

    def jagged(values: list[float], dtype: Any) -> ak.Array:
        return ak.unflatten(np.tile(np.asarray(values, dtype=dtype), entries), counts)

    with uproot.recreate(path) as handle:
        handle.mktree("mini", {
            "lep_n": np.int32, "lep_pt": "var * float32", "lep_eta": "var * float32",
            "lep_phi": "var * float32", "lep_E": "var * float32", "lep_charge": "var * int32",
            "lep_type": "var * uint32",
        }, counter_name=lambda _: "lep_n")
        handle["mini"].extend({
            "lep_n": counts, "lep_pt": jagged([5e4, 4e4, 3e4, 2e4], np.float32),
            "lep_eta": jagged([0.1, -0.4, 0.8, 1.2], np.float32), "lep_phi": jagged([0.0, 2.0, 4.0, 1.0], np.float32),
            "lep_E": jagged([6e4, 5e4, 4e4, 5e4], np.float32), "lep_charge": jagged([1, -1, 1, -1], np.int32),
            "lep_type": jagged([13, 13, 13, 13], np.uint32),
        })
