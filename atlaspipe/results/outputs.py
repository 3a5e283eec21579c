"""Every output of a finished run, written into its folder: statistics, figures, tables, documents, report."""

from __future__ import annotations

import logging
import time

from atlaspipe.io import files
from atlaspipe.model import Aggregate, RunPlan, RunRequest, RunResults, RunStatus
from atlaspipe.results.document import build_manifest, build_results

log = logging.getLogger(__name__)


def write_outputs(aggregated: Aggregate, plan: RunPlan, request: RunRequest, status: RunStatus,
             workers: tuple[str, ...]) -> RunResults | None:
    """The ``plot`` stage: statistics, figures, tables, ``results.json``, ``manifest.json`` and the report.

    A run with failed chunks writes its outputs only with ``allow_partial``, and then every one of
    them says PARTIAL; otherwise only the manifest is written and None returned.
    """
    from atlaspipe.results import exports, plotting, report, statistics, tables

    started = time.perf_counter()
    run_dir = request.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    results = build_results(aggregated, plan)
    timings: dict[str, float | str | None] = {"submitted": status.started}
    if results.partial and not request.allow_partial:
        log.warning("run %s: %d chunk(s) failed and partial results were not allowed; only manifest.json "
                    "is written", plan.run_id, len(results.chunks.failed))
        manifest = build_manifest(plan, request, status, results, workers, timings)
        files.write_text(run_dir / "manifest.json", manifest.to_json(indent=1) + "\n")
        return None
    config = plan.config
    significance, fit = statistics.summarise(
        results, config.mass_window_gev,
        statistics.FitOptions(background_norm_uncertainty=config.fit.background_norm_uncertainty,
                              staterror=config.fit.staterror),
    )
    results = results.model_copy(update={"significance": significance, "fit": fit})
    outputs = plotting.draw_all(results, run_dir, list(config.stacked_groups or []) or None)
    outputs.update(tables.write_yield_tables(results, run_dir))
    outputs.update(exports.write_exports(results, run_dir))
    outputs.update(results_json="results.json", manifest_json="manifest.json", report_html="report.html")
    results = results.model_copy(update={"outputs": outputs})
    timings["finalize_seconds"] = time.perf_counter() - started
    manifest = build_manifest(plan, request, status, results, workers, timings)
    files.write_text(run_dir / "results.json", results.to_json(indent=1) + "\n")
    files.write_text(run_dir / "manifest.json", manifest.to_json(indent=1) + "\n")
    # The report is written before the run's final state lands; the page polls status.json for it.
    report.write_report(results, None, manifest, run_dir)
    log.info("run %s: outputs written into %s in %.1f s", plan.run_id, run_dir, timings["finalize_seconds"])
    return results
