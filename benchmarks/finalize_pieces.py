"""What each piece of finalize costs: imports, the fit, each figure as PNG and PDF, the documents.

``python benchmarks/finalize_pieces.py [--repetitions 3]``: runs the embedded sample in process
to get its aggregate, then times each piece in a fresh interpreter (cold: its imports included)
and again in the same interpreter (warm, as in a long-running plot worker). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def capture(path: Path, output: Path) -> None:
    """Run the embedded sample in process and keep what finalize is given."""
    from atlaspipe.api import make_request
    from atlaspipe.pipeline.inprocess import InProcessExecutor
    from atlaspipe.pipeline.stages import AnalysisStages

    class Capture(AnalysisStages):
        def finalize(self, aggregate: Any, plan: Any, request: Any, status: Any, workers: Any) -> Any:
            path.write_bytes(pickle.dumps((aggregate, plan, request, status, workers)))
            return super().finalize(aggregate, plan, request, status, workers)

    InProcessExecutor(stages=Capture()).run(make_request(output=output))


def pieces(path: Path, out: Path) -> dict[str, float]:
    """Seconds of each piece, first (cold) and second (warm) time, in this interpreter."""
    times: dict[str, float] = {}

    def timed(name: str, action: Any) -> Any:
        started = time.perf_counter()
        value = action()
        times[name] = time.perf_counter() - started
        return value

    aggregate, plan, request, status, workers = pickle.loads(path.read_bytes())
    from atlaspipe.results.document import build_results
    from atlaspipe.results.outputs import _statistics

    results = build_results(aggregate, plan)
    timed("import pyhf", lambda: __import__("pyhf"))
    for rep in ("cold", "warm"):
        significance, fit = timed(f"fit ({rep})", lambda: _statistics(results, plan))
    results = results.model_copy(update={"significance": significance, "fit": fit})

    def import_plotting() -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.figure
        import mplhep  # noqa: F401

    timed("import matplotlib + mplhep", import_plotting)
    from atlaspipe.results import plotting

    for rep in ("cold", "warm"):
        for stem in plotting.figure_stems(results.channels):
            for ext in ("png", "pdf"):
                timed(f"figure {stem}.{ext} ({rep})",
                      lambda stem=stem, ext=ext: plotting.draw_figure(results, stem, out, None, (ext,)))
    from atlaspipe.results import exports, fitplots, report, tables
    from atlaspipe.results.document import build_manifest

    for rep in ("cold", "warm"):
        for name in ("draw_prefit_postfit", "draw_pulls", "draw_scan"):
            timed(f"fit figure {name.removeprefix('draw_')} ({rep})",
                  lambda name=name: getattr(fitplots, name)(results, out))
    timed("histograms.root + histograms.json", lambda: exports.write_histograms(results, out))
    timed("workspace.json", lambda: exports.write_workspace(results, out))

    def documents() -> None:
        tables.write_yield_tables(results, out)
        manifest = build_manifest(plan, request, status, results, workers, {})
        (out / "results.json").write_text(results.to_json(indent=1))
        report.write_report(results, None, manifest, out)

    timed("tables + results.json + manifest + report", documents)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="atlaspipe-finalize-"))
    captured = tmp / "finalize.pkl"
    capture(captured, tmp / "run")
    runs: list[dict[str, float]] = []
    loads = []
    for _ in range(args.repetitions):
        loads.append(os.getloadavg()[0])
        done = subprocess.run([sys.executable, __file__, "_pieces", str(captured), str(tmp / "out")], cwd=REPO,
                              capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    load_text = ", ".join(f"{x:.1f}" for x in loads)
    print(f"Embedded sample; {args.repetitions} fresh interpreters; load average {load_text}; "
          "median (min–max) seconds\n")
    print("| piece | seconds |\n|---|---:|")
    for name in runs[0]:
        values = [r[name] for r in runs]
        print(f"| {name} | {statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f}) |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "_pieces":
        Path(sys.argv[3]).mkdir(parents=True, exist_ok=True)
        print(json.dumps(pieces(Path(sys.argv[2]), Path(sys.argv[3]))))
        sys.exit(0)
    sys.exit(main())
