"""Every output of a finished run, written into its folder: statistics, figures, tables, documents, report.

The work splits into pieces that need nothing from each other (the fit, each figure, the histogram
files), so a distributed run renders them in parallel tasks; ``write_outputs`` then only writes the
tables, the workspace and the documents. In one process (``atlaspipe run``) ``write_outputs``
renders every piece itself, so both give the same files.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from atlaspipe.errors import AtlaspipeError
from atlaspipe.io import files
from atlaspipe.model import Aggregate, FitResult, RunPlan, RunRequest, RunResults, RunStatus, Significance
from atlaspipe.results.document import build_manifest, build_results

log = logging.getLogger(__name__)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector off while one piece of the outputs (a figure, the fit) is made, then
    one young-generation pass; in a worker's task and in ``atlaspipe run`` alike.

    Drawing makes hundreds of thousands of small objects; each allocation burst triggers a
    collection that walks the worker's large heap (numpy, scipy, pyhf, matplotlib), 15-25 % of the
    plot pieces' CPU as measured (benchmarks/RESULTS.md). With the collector off nothing is
    promoted, so the one pass over generation 0 afterwards finds every cycle the piece left. One
    piece at a time: paused over all of them, ``atlaspipe run`` peaked 46 MB higher.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
            gc.collect(0)


FIT_PIECE = "fit"
HISTOGRAMS_PIECE = "histograms"

Statistics = tuple[Significance | None, FitResult | None]
"""What the fit piece computes: the window significance and the fit."""


def piece_names(channels: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The finalize pieces of a run: the fit (with its figures), the histogram files and one per
    figure stem. Longest first (the fit, the grid of control plots, the histogram files): parallel
    slots take them in this order, so the short figures fill in at the end instead of a long piece
    starting last."""
    from atlaspipe.results.plotting import CONTROLS_STEM, figure_stems

    stems = figure_stems(channels)
    return (FIT_PIECE, CONTROLS_STEM, HISTOGRAMS_PIECE, *(stem for stem in stems if stem != CONTROLS_STEM))


@dataclass(frozen=True)
class Rendered:
    """The pieces rendered before ``write_outputs`` (by parallel tasks): the statistics, each
    piece's files, when the first piece started, and the first failure's one-line reason."""

    statistics: Statistics | None = None
    """The fit piece's answer; None if it did not answer (then ``write_outputs`` fits itself)."""
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    """Each piece's files by output kind, by piece name: under a figure's stem its files, under
    ``FIT_PIECE`` the fit's figures, under ``HISTOGRAMS_PIECE`` the histogram files."""
    started: float | None = None
    error: str | None = None

    @classmethod
    def from_pieces(cls, pieces: list[dict[str, Any]]) -> Rendered:
        """Gather the answers of ``render_piece`` (in any order)."""
        found: Statistics | None = None
        written: dict[str, dict[str, str]] = {}
        errors = [p["error"] for p in pieces if p.get("error")]
        for piece in pieces:
            if piece.get("error") or piece.get("partial"):
                continue
            if piece["piece"] == FIT_PIECE:
                significance, fit = piece.get("significance"), piece.get("fit")
                found = (None if significance is None else Significance.from_jsonable(significance, "fit piece"),
                         None if fit is None else FitResult.from_jsonable(fit, "fit piece"))
                if "outputs" in piece:
                    written[FIT_PIECE] = dict(piece["outputs"])
            else:
                written[piece["piece"]] = dict(piece["outputs"])
        starts = [float(p["started"]) for p in pieces if p.get("started") is not None]
        return cls(found, written, min(starts, default=None), errors[0] if errors else None)


def _results(aggregated: Aggregate, plan: RunPlan, request: RunRequest) -> RunResults | None:
    """The run's results without statistics; None when failed chunks forbid writing them."""
    results = build_results(aggregated, plan)
    return None if results.partial and not request.allow_partial else results


def _statistics(results: RunResults, plan: RunPlan) -> Statistics:
    from atlaspipe.results import statistics

    config = plan.config
    return statistics.summarise(
        results, config.mass_window_gev,
        statistics.FitOptions(background_norm_uncertainty=config.fit.background_norm_uncertainty,
                              staterror=config.fit.staterror, channels=config.fit.channels),
    )


def render_piece(piece: str, aggregated: Aggregate, plan: RunPlan, request: RunRequest) -> dict[str, Any]:
    """One finalize piece, as a small JSON-able answer: the fit's statistics, or the files of one
    figure or of the histograms (written into the run folder). ``partial`` when failed chunks
    forbid results."""
    started = time.time()
    answer: dict[str, Any] = {"piece": piece, "started": started}
    results = _results(aggregated, plan, request)
    if results is None:
        return {**answer, "partial": True}
    written, statistics = _render(piece, results, plan, request)
    if statistics is not None:
        significance, fit = statistics
        answer.update(significance=None if significance is None else significance.to_jsonable(),
                      fit=None if fit is None else fit.to_jsonable())
    answer["outputs"] = written
    answer["seconds"] = time.time() - started
    log.info("run %s: finalize piece %s took %.2f s", plan.run_id, piece, answer["seconds"])
    return answer


def _render(piece: str, results: RunResults, plan: RunPlan,
            request: RunRequest) -> tuple[dict[str, str], Statistics | None]:
    """Write one piece into the run folder: its files by output kind and, for the fit, its
    statistics. The same in a worker's task and in ``write_outputs``."""
    if piece == FIT_PIECE:
        return _fit_piece(results, plan, request)
    with collector_paused():
        if piece == HISTOGRAMS_PIECE:
            from atlaspipe.results.exports import write_histograms

            request.run_dir.mkdir(parents=True, exist_ok=True)
            return write_histograms(results, request.run_dir), None
        from atlaspipe.results import plotting

        return plotting.draw_figure(results, piece, request.run_dir, list(plan.config.stacked_groups or []) or None,
                                    plotting.figure_formats(request.pdf_figures)), None


def _fit_piece(results: RunResults, plan: RunPlan, request: RunRequest) -> tuple[dict[str, str], Statistics]:
    """The fit and its figures; the figures need only the fit, so they are drawn here, beside the
    other figures, rather than after all of them."""
    from atlaspipe.results.fitplots import draw_fit_figures

    with collector_paused():
        significance, fit = _statistics(results, plan)
        fitted = results.model_copy(update={"significance": significance, "fit": fit})
        return draw_fit_figures(fitted, request.run_dir), (significance, fit)


def write_outputs(aggregated: Aggregate, plan: RunPlan, request: RunRequest, status: RunStatus,
                  workers: tuple[str, ...], rendered: Rendered | None = None) -> RunResults | None:
    """The ``plot`` stage: statistics, figures, tables, ``results.json``, ``manifest.json`` and the report.

    ``rendered`` holds the pieces already rendered elsewhere; without it every piece is rendered
    here. A run with failed chunks writes its outputs only with ``allow_partial``, and then every
    one of them says PARTIAL; otherwise only the manifest is written and None returned.
    """
    from atlaspipe.results import exports, plotting, report, tables

    started = time.perf_counter()
    begun = rendered.started if rendered is not None and rendered.started is not None else time.time()
    if rendered is not None and rendered.error is not None:
        raise AtlaspipeError(rendered.error)
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
    done = dict(rendered.files) if rendered is not None else {}
    statistics = rendered.statistics if rendered is not None else None
    if statistics is None:
        done[FIT_PIECE], statistics = _fit_piece(results, plan, request)
    significance, fit = statistics
    results = results.model_copy(update={"significance": significance, "fit": fit})
    for piece in piece_names(results.channels):
        if piece not in done:
            done[piece], _ = _render(piece, results, plan, request)
    # Listed in one order however the pieces were rendered: figures, tables, exports, fit figures.
    outputs: dict[str, str] = {}
    for stem in plotting.figure_stems(results.channels):
        outputs.update(done[stem])
    outputs.update(tables.write_yield_tables(results, run_dir))
    outputs.update(exports.write_workspace(results, run_dir))
    outputs.update(done[HISTOGRAMS_PIECE])
    outputs.update(done[FIT_PIECE])
    outputs.update(results_json="results.json", manifest_json="manifest.json", report_html="report.html")
    results = results.model_copy(update={"outputs": outputs})
    timings["finalize_seconds"] = time.time() - begun
    manifest = build_manifest(plan, request, status, results, workers, timings)
    files.write_text(run_dir / "results.json", results.to_json(indent=1) + "\n")
    files.write_text(run_dir / "manifest.json", manifest.to_json(indent=1) + "\n")
    # The report is written before the run's final state lands; the page polls status.json for it.
    report.write_report(results, None, manifest, run_dir)
    log.info("run %s: outputs written into %s in %.1f s (this step %.2f s)", plan.run_id, run_dir,
             timings["finalize_seconds"], time.perf_counter() - started)
    return results

