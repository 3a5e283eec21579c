"""The fit's figures: the m4l model before and after the fit (``m4l_prefit_postfit.png``), the pulls of
its nuisance parameters (``fit_pulls.png``) and the profile likelihood scan of μ (``fit_scan.png``).

Each comes from the run's pyhf workspace (``statistics.run_workspace``) and the numbers results.json
records (fitted parameters, their HESSE uncertainties, the scan), so drawing them costs no extra fit.
The pre-fit expectation is at the model's initial parameters (μ = 1, nuisances nominal), the post-fit
one at the fitted parameters; a simultaneous fit's channels are summed back into one m4l.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from atlaspipe.io.files import replacing
from atlaspipe.model import RunResults
from atlaspipe.results.statistics import fit_inputs, run_workspace, staterror_name

if TYPE_CHECKING:
    import pyhf

FloatArray = npt.NDArray[np.float64]
PREFIT_POSTFIT = "m4l_prefit_postfit.png"
PULLS = "fit_pulls.png"
SCAN = "fit_scan.png"


@dataclass(frozen=True)
class FitExpectations:
    """Expected events per model sample over the full m4l binning (bins the fit left out are 0)."""

    edges: FloatArray
    samples: tuple[str, ...]
    prefit: FloatArray
    postfit: FloatArray
    data: FloatArray
    mu: float


def _fitted_model(results: RunResults) -> pyhf.pdf.Model | None:
    """The pyhf model of the run's fit; None without a converged fit."""
    import pyhf

    spec = run_workspace(results)
    fit = results.fit
    if spec is None or fit is None or fit.mu is None or not fit.parameters:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pyhf 0.7's jsonschema use
        return pyhf.Workspace(spec).model()


def fit_expectations(results: RunResults) -> FitExpectations | None:
    """Pre- and post-fit expectations of the fit's model; None without a converged fit."""
    model = _fitted_model(results)
    fit = results.fit
    if model is None or fit is None or fit.mu is None:
        return None
    prefit = np.asarray(model.config.suggested_init(), dtype=np.float64)
    postfit = prefit.copy()
    for name, values in fit.parameters.items():
        postfit[model.config.par_slice(name)] = values
    channel_bins = {channel.channel: channel.bins_used for channel in fit_inputs(results, fit.channels)}
    edges = np.asarray(results.bin_edges, dtype=np.float64)

    def full(per_sample: FloatArray) -> FloatArray:
        # Each channel's kept bins back to their m4l bin, the channels summed.
        out = np.zeros((per_sample.shape[0], edges.size - 1))
        for channel in model.config.channels:
            out[:, channel_bins[channel]] += per_sample[:, model.config.channel_slices[channel]]
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


@dataclass(frozen=True)
class Pull:
    """One nuisance parameter after the fit, in units of its prior width: (θ̂ − θ₀)/Δθ ± σ̂/Δθ."""

    parameter: str
    """pyhf's name of it (``model.config.par_names``: ``mc_stat[3]``)."""
    label: str
    pull: float
    constraint: float


def fit_pulls(results: RunResults) -> tuple[Pull, ...]:
    """The pull and post-fit constraint of each constrained parameter MINUIT fitted (background
    normalisations, then the MC-statistics γ of each bin); empty without a converged fit."""
    model = _fitted_model(results)
    fit = results.fit
    if model is None or fit is None:
        return ()
    nominal = model.config.suggested_init()
    edges = results.bin_edges
    # A γ is labelled with its m4l bin: index i of a channel's staterror is its i-th kept bin.
    bins_of = {staterror_name(c.channel): c.bins_used for c in fit_inputs(results, fit.channels)}
    pulls: list[Pull] = []
    # Normalisations first: they are few and what a reader looks for.
    names = sorted(fit.parameter_uncertainties, key=lambda n: (not n.startswith("norm_"), n))
    for name in names:
        parameters = model.config.param_set(name)
        if not parameters.constrained or name not in fit.parameters:
            continue
        widths = parameters.width()
        start = model.config.par_slice(name).start
        for index, (value, error, width) in enumerate(zip(fit.parameters[name], fit.parameter_uncertainties[name],
                                                          widths, strict=True)):
            if width <= 0.0:
                continue
            label = name
            if name in bins_of:
                low = bins_of[name][index]
                label = f"{name} {edges[low]:g}–{edges[low + 1]:g} GeV"
            elif len(widths) > 1:
                label = f"{name}[{index}]"
            pulls.append(Pull(parameter=model.config.par_names[start + index], label=label,
                              pull=(value - nominal[start + index]) / width, constraint=error / width))
    return tuple(pulls)


def draw_pulls(results: RunResults, run_dir: Path) -> dict[str, str]:
    """Write ``fit_pulls.png``: each pull with its post-fit constraint as an error bar, over the ±1σ and
    ±2σ prior bands."""
    pulls = fit_pulls(results)
    if not pulls:
        return {}
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    from atlaspipe.results.plotting import _style

    rows = np.arange(len(pulls))[::-1]
    with _style():
        fig = Figure(figsize=(7.0, 1.2 + 0.19 * len(pulls)))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.axvspan(-2.0, 2.0, color="#fff3b0", linewidth=0)
        ax.axvspan(-1.0, 1.0, color="#b9e4b0", linewidth=0)
        ax.axvline(0.0, color="0.4", linewidth=0.8)
        ax.errorbar([p.pull for p in pulls], rows, xerr=[p.constraint for p in pulls], fmt="o", color="black",
                    markersize=3, capsize=0, linewidth=1)
        labels = [p.label for p in pulls]
        ax.set_yticks(rows, labels, fontsize=7)
        # No minor ticks between parameters: building the style's dense ones for a tall axis was half
        # of this figure's time.
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_ylim(-0.7, len(pulls) - 0.3)
        ax.set_xlim(-3.0, 3.0)
        ax.set_xlabel(r"$(\hat{\theta} - \theta_0) / \Delta\theta$")
        ax.set_title("Nuisance parameters after the fit", fontsize="medium")
        # Margins from the longest label (7 pt glyphs, about 0.45 em wide) rather than tight_layout,
        # which lays the whole figure out once more before it is drawn.
        width, height = fig.get_size_inches()
        left = min(0.6, (0.2 + max(map(len, labels)) * 7 * 0.45 / 72) / width)
        fig.subplots_adjust(left=left, right=0.95, top=1 - 0.4 / height, bottom=0.85 / height)
        with replacing(run_dir / PULLS) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    return {"fit_pulls_png": PULLS}


def draw_scan(results: RunResults, run_dir: Path) -> dict[str, str]:
    """Write ``fit_scan.png``: −2ΔlnL of the profile likelihood against μ, with the −2ΔlnL = 1
    crossings of the fit's μ interval marked."""
    fit = results.fit
    if fit is None or fit.scan is None or fit.mu is None or len(fit.scan.mu) < 3:
        return {}
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy.interpolate import CubicSpline

    from atlaspipe.results.plotting import _style

    mu, twice_delta = np.asarray(fit.scan.mu), np.asarray(fit.scan.twice_delta_nll)
    smooth = np.linspace(mu[0], mu[-1], 200)
    with _style():
        fig = Figure(figsize=(7.0, 5.0))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.plot(smooth, CubicSpline(mu, twice_delta)(smooth), color="tab:blue", linewidth=1.5,
                label="profile likelihood")
        ax.plot(mu, twice_delta, "o", color="tab:blue", markersize=4)
        ax.axhline(1.0, color="0.4", linestyle="--", linewidth=0.8)
        crossings = [fit.mu - d for d in (fit.mu_uncertainty_down,) if d is not None] + \
                    [fit.mu + u for u in (fit.mu_uncertainty_up,) if u is not None]
        for crossing in crossings:
            ax.axvline(crossing, color="tab:red", linestyle=":", linewidth=1.2)
        down, up = fit.mu_uncertainty_down, fit.mu_uncertainty_up
        interval = f"$\\hat{{\\mu}} = {fit.mu:.2f}$"
        if up is not None and down is not None:
            interval = f"$\\hat{{\\mu}} = {fit.mu:.2f}^{{+{up:.2f}}}_{{-{down:.2f}}}$"
        ax.plot([], [], color="tab:red", linestyle=":", label=f"1σ interval, {interval}")
        ax.set_xlabel(r"$\mu$")
        ax.set_ylabel(r"$-2\,\Delta \ln L$")
        ax.set_ylim(bottom=-0.05 * float(max(twice_delta.max(), 1.0)))
        ax.legend(loc="upper center", frameon=False, fontsize="small")
        fig.subplots_adjust(left=0.14, right=0.95, top=0.96, bottom=0.15)
        with replacing(run_dir / SCAN) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    return {"fit_scan_png": SCAN}


def draw_fit_figures(results: RunResults, run_dir: Path) -> dict[str, str]:
    """Every figure of the fit, written into ``run_dir``; the files by output kind."""
    return {**draw_prefit_postfit(results, run_dir), **draw_pulls(results, run_dir), **draw_scan(results, run_dir)}
