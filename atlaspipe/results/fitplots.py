"""The m4l model before and after the fit: ``m4l_prefit_postfit.png``.

Both panels come from the run's pyhf workspace (``statistics.run_workspace``): the pre-fit expectation
at the model's initial parameters (μ = 1, nuisances nominal) and the post-fit one at the fitted
parameters results.json records, so drawing them costs no extra fit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from atlaspipe.io.files import replacing
from atlaspipe.model import RunResults
from atlaspipe.results.statistics import fit_input, run_workspace

FloatArray = npt.NDArray[np.float64]
PREFIT_POSTFIT = "m4l_prefit_postfit.png"


@dataclass(frozen=True)
class FitExpectations:
    """Expected events per model sample over the full m4l binning (bins the fit left out are 0)."""

    edges: FloatArray
    samples: tuple[str, ...]
    prefit: FloatArray
    postfit: FloatArray
    data: FloatArray
    mu: float


def fit_expectations(results: RunResults) -> FitExpectations | None:
    """Pre- and post-fit expectations of the fit's model; None without a converged fit."""
    import pyhf

    spec = run_workspace(results)
    fit = results.fit
    if spec is None or fit is None or fit.mu is None or not fit.parameters:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pyhf 0.7's jsonschema use
        model = pyhf.Workspace(spec).model()
    prefit = np.asarray(model.config.suggested_init(), dtype=np.float64)
    postfit = prefit.copy()
    for name, values in fit.parameters.items():
        postfit[model.config.par_slice(name)] = values
    used = fit_input(results).bins_used
    edges = np.asarray(results.bin_edges, dtype=np.float64)

    def full(per_sample: FloatArray) -> FloatArray:
        out = np.zeros((per_sample.shape[0], edges.size - 1))
        out[:, used] = per_sample
        return out

    def by_sample(pars: FloatArray) -> FloatArray:
        return full(np.asarray(model.main_model.expected_data(pars, return_by_sample=True), dtype=np.float64))

    return FitExpectations(edges=edges, samples=tuple(model.config.samples), prefit=by_sample(prefit),
                           postfit=by_sample(postfit),
                           data=np.asarray(results.data.m4l.values, dtype=np.float64), mu=fit.mu)


def draw_prefit_postfit(results: RunResults, run_dir: Path) -> dict[str, str]:
    """Write ``m4l_prefit_postfit.png`` (stacked model samples and data, pre-fit and post-fit)."""
    expected = fit_expectations(results)
    if expected is None:
        return {}
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from atlaspipe.results.plotting import _bin_width_label, _style

    # The model's samples are the signal and each background group.
    looks = {g.id: (g.color, g.label) for g in results.groups}
    looks["signal"] = next(((g.color, g.label) for g in results.groups if g.kind == "signal"), ("tab:blue", "Signal"))
    centres = 0.5 * (expected.edges[:-1] + expected.edges[1:])
    with _style():
        fig = Figure(figsize=(13.0, 5.5))
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2, sharey=True)
        for ax, (title, stack) in zip(axes, (("Pre-fit (μ = 1)", expected.prefit),
                                             (f"Post-fit (μ̂ = {expected.mu:.2f})", expected.postfit)), strict=True):
            bottom = np.zeros(centres.size)
            for index, sample in enumerate(expected.samples):
                colour, label = looks.get(sample, ("0.6", sample))
                ax.stairs(bottom + stack[index], expected.edges, baseline=bottom, fill=True, color=colour,
                          label=label, linewidth=0)
                bottom = bottom + stack[index]
            filled = expected.data > 0
            ax.errorbar(centres[filled], expected.data[filled], yerr=np.sqrt(expected.data[filled]), fmt="o",
                        color="black", markersize=4, capsize=0, label="Data")
            ax.set_title(title)
            ax.set_xlabel(r"$m_{4\ell}$ [GeV]")
            ax.set_xlim(expected.edges[0], expected.edges[-1])
        axes[0].set_ylabel(_bin_width_label(expected.edges))
        axes[1].legend(loc="upper right", frameon=False, fontsize="small")
        fig.subplots_adjust(left=0.07, right=0.98, top=0.92, bottom=0.12, wspace=0.05)
        with replacing(run_dir / PREFIT_POSTFIT) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    return {"m4l_prefit_postfit_png": PREFIT_POSTFIT}
