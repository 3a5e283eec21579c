"""The short text summary printed at the end of a run, by ``atlaspipe run`` and ``atlaspipe-submit``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def format_summary(results: Mapping[str, Any], run_dir: Path, wall_seconds: float | None = None) -> str:
    """Yields per sample, the data count, the significance figures and where the outputs are."""
    lines = []
    status = results.get("status", "complete")
    title = f"run {results['run_id']} · release {results['release']} · {results['luminosity_fb']:g} fb⁻¹"
    if status != "complete":
        title += f" · {status.upper()}"
    lines.append(title)
    lines.append(f"{'sample':<44} {'selected':>9} {'yield':>12} {'± stat':>10}")
    for name, sample in results["samples"].items():
        lines.append(f"{name:<44} {sample['events_selected']:>9} {sample['yield']:>12.4f} "
                     f"{sample['yield_uncertainty']:>10.4f}")
    data = results["data"]
    lines.append(f"{'data':<44} {data['events_selected']:>9} {data['events_in_range']:>12} "
                 f"{'(in range)':>10}")
    significance = results.get("significance", {})
    if significance:
        lo, hi = significance["window_gev"]
        lines.append(
            f"{lo:g}–{hi:g} GeV: N(S+B) = {_number(significance.get('n_sig_plus_bg'))}, "
            f"N(B) = {_number(significance.get('n_bg'))}, Z(notebook) = {_number(significance.get('notebook'))}, "
            f"Z(Asimov) = {_number(significance.get('asimov'))}"
        )
    fit = results.get("fit")
    if fit and fit.get("mu") is not None:
        lines.append(
            f"fit: μ = {_number(fit['mu'])} ± {_number(fit.get('mu_uncertainty'))}, "
            f"Z observed = {_number(fit.get('significance_observed'), 2)}, "
            f"expected = {_number(fit.get('significance_expected'), 2)}"
        )
    elif fit and fit.get("error"):
        lines.append(f"fit: not done ({fit['error']})")
    failed = results.get("chunks", {}).get("failed", [])
    if failed:
        lines.append(f"{len(failed)} chunk(s) failed:")
        lines.extend(f"  {describe_failure(f)}" for f in failed[:20])
        if len(failed) > 20:
            lines.append(f"  … and {len(failed) - 20} more (see status.json)")
    if wall_seconds is not None:
        lines.append(f"wall time {wall_seconds:.2f} s")
    lines.append(f"outputs: {run_dir}")
    for key, name in results.get("outputs", {}).items():
        if key in ("m4l_png", "results_json", "report_html"):
            lines.append(f"  {run_dir / name}")
    return "\n".join(lines)


def _number(value: Any, digits: int = 3) -> str:
    """A figure for the terminal; statistics undefined for the inputs (no MC, no signal) show n/a."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def describe_failure(failure: Mapping[str, Any]) -> str:
    """One line for a failed chunk, or for a whole input file that could not be opened."""
    if failure.get("chunk_id") is None:
        return f"file {failure['source']}: {failure['error']}"
    return (f"chunk {failure['chunk_id']} {failure['source']} [{failure['entry_start']}, {failure['entry_stop']}): "
            f"{failure['error']}")
