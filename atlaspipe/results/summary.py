"""The short texts printed at the end of a run, by ``atlaspipe run`` and ``atlaspipe-submit``."""

from __future__ import annotations

from pathlib import Path

from atlaspipe.model import RunResults, RunState, RunStatus
from atlaspipe.results.tables import pad

MAX_LISTED = 20
"""Failed chunks listed in the terminal; status.json lists more."""
_SHOWN_OUTPUTS = ("m4l_png", "results_json", "report_html")


def format_summary(results: RunResults, run_dir: Path, wall_seconds: float | None = None) -> str:
    """Yields per sample, the data count, the significance figures and where the outputs are."""
    title = f"run {results.run_id} · release {results.release} · {results.luminosity_fb:g} fb⁻¹"
    if results.partial:
        title += " · PARTIAL"
    names = [*results.samples, "data", "sample"]
    width = max(len(n) for n in names)
    lines = [title, f"{pad('sample', width)} {'selected':>9} {'yield':>12} {'± stat':>10}"]
    for name, sample in results.samples.items():
        lines.append(f"{pad(name, width)} {sample.events_selected:>9} {sample.expected:>12.4f} "
                     f"{sample.expected_uncertainty:>10.4f}")
    data = results.data
    lines.append(f"{pad('data', width)} {data.events_selected:>9} {data.events_in_range:>12} {'(in range)':>10}")
    significance = results.significance
    if significance is not None:
        lo, hi = significance.window_gev
        lines.append(
            f"{lo:g}–{hi:g} GeV: N(S+B) = {_number(significance.n_sig_plus_bg)}, "
            f"N(B) = {_number(significance.n_bg)}, Z(notebook) = {_number(significance.notebook)}, "
            f"Z(Asimov) = {_number(significance.asimov)}"
        )
    fit = results.fit
    if fit is not None and fit.mu is not None:
        lines.append(
            f"fit: μ = {_number(fit.mu)} ± {_number(fit.mu_uncertainty)}, "
            f"Z observed = {_number(fit.significance_observed, 2)}, "
            f"expected = {_number(fit.significance_expected, 2)}"
        )
    elif fit is not None and fit.error:
        lines.append(f"fit: not done ({fit.error})")
    failed = results.chunks.failed
    if failed:
        lines.append(f"{len(failed)} chunk(s) or file(s) failed:")
        lines.extend(f"  {f.describe()}" for f in failed[:MAX_LISTED])
        if len(failed) > MAX_LISTED:
            lines.append(f"  … and {len(failed) - MAX_LISTED} more (see {run_dir / 'results.json'})")
    if results.missing:
        lines.append("events lost: " + ", ".join(
            f"{name} {loss.events_lost:,}" + ("" if loss.fraction_lost is None else f" ({loss.fraction_lost:.1%})")
            for name, loss in results.missing.items()))
    lines.extend(non_finite_lines(results))
    if wall_seconds is not None:
        lines.append(f"wall time {wall_seconds:.2f} s")
    lines.append(f"outputs: {run_dir}")
    lines += [f"  {run_dir / name}" for key, name in results.outputs.items() if key in _SHOWN_OUTPUTS]
    return "\n".join(lines)


def non_finite_lines(results: RunResults) -> list[str]:
    """The events left out for non-finite values, and the input paths not read, with why."""
    lines = []
    excluded = results.events_non_finite
    if excluded:
        lines.append(f"non-finite values (NaN/inf): {sum(excluded.values()):,} event(s) left out: "
                     + ", ".join(f"{name} {count:,}" for name, count in excluded.items()))
    if results.skipped_inputs:
        lines.append(f"skipped inputs ({len(results.skipped_inputs)}):")
        lines.extend(f"  {s.source}: {s.reason}" for s in results.skipped_inputs[:MAX_LISTED])
    return lines


def format_failed(status: RunStatus, resume_command: str | None = None, limit: int = MAX_LISTED) -> str:
    """A run that ended without results (``failed`` or ``cancelled``), for the terminal.

    Without failed chunks this is one line: the reason, the run folder and, for a failed run, how
    to finish it once the cause is fixed. Failed chunks and files follow on their own lines, the
    first ``limit`` of them. ``resume_command`` defaults to ``atlaspipe-submit resume RUN_ID`` for
    a distributed run; an in-process run has none unless given.
    """
    if resume_command is None and status.executor == "celery":
        resume_command = f"atlaspipe-submit resume {status.run_id}"
    reason = status.message or ("cancelled" if status.state is RunState.CANCELLED else "no reason recorded")
    tail = []
    if status.run_dir:
        tail.append(f"run folder {status.run_dir}")
    if status.state is RunState.FAILED and resume_command:
        tail.append(f"after fixing the cause: {resume_command}")
    head = f"run {status.run_id} {status.state}: {reason}"
    if not status.failures:
        return "; ".join([head, *tail])
    lines = [head, *(f"  {f.describe()}" for f in status.failures[:limit])]
    more = len(status.failures) - limit
    if more > 0:
        where = f" (see {Path(status.run_dir) / 'status.json'})" if status.run_dir else ""
        lines.append(f"  … and {more} more{where}")
    if tail:
        lines.append("; ".join(tail))
    return "\n".join(lines)


def _number(value: float | None, digits: int = 3) -> str:
    """A figure for the terminal; statistics undefined for the inputs (no MC, no signal) show n/a."""
    return "n/a" if value is None else f"{value:.{digits}f}"
