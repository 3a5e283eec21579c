"""Reference runs for the tests: the in-process numbers of a set of inputs, and what to compare."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atlaspipe.config import analysis_config
from atlaspipe.model import RunResults
from atlaspipe.pipeline.inprocess import execute_plan
from atlaspipe.pipeline.planning import new_run_id, plan_run, resolve_inputs
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
