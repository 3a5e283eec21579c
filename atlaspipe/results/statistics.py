"""Significance figures and the pyhf profile-likelihood fit on a run's m4l histograms.

``summarise`` is called by the finalize stage with a run's ``RunResults`` and returns the
``Significance`` and ``FitResult`` that complete it.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from atlaspipe.config import FitChannels
from atlaspipe.errors import ConfigError
from atlaspipe.model import OTHER_GROUP_ID, FitResult, LikelihoodScan, RunResults, Significance

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

DEFAULT_WINDOW_GEV: tuple[float, float] = (115.0, 130.0)


@dataclass(frozen=True)
class FitOptions:
    """How the binned fit models the uncertainties.

    ``background_norm_uncertainty`` is the relative normalisation uncertainty of each background
    group (a separate normsys per group, 0 = none); ``staterror`` adds per-bin MC-statistics
    modifiers from √Σw²; ``mu_upper`` bounds the signal strength from above; ``channels`` fits the
    summed m4l or each lepton channel's (``config.FitChannels``).
    """

    background_norm_uncertainty: float = 0.10
    staterror: bool = True
    mu_upper: float = 20.0
    channels: FitChannels = "combined"

    def __post_init__(self) -> None:
        if not 0.0 <= self.background_norm_uncertainty < 1.0:
            raise ConfigError(
                "background_norm_uncertainty must be in [0, 1), "
                f"got {self.background_norm_uncertainty}"
            )
        if self.mu_upper <= 0.0:
            raise ConfigError(f"mu_upper must be positive, got {self.mu_upper}")


def notebook_significance(n_sig_plus_bg: float, n_bg: float) -> float:
    """The HZZ notebook's figure Z = N/√(B + 0.3·B²) (N = stacked S+B in the window)."""
    if n_bg <= 0.0:
        raise ValueError(f"notebook significance needs a positive background, got {n_bg}")
    return float(n_sig_plus_bg / math.sqrt(n_bg + 0.3 * n_bg * n_bg))


def asimov_significance(s: float, b: float) -> float:
    """Median discovery significance Z_A = √(2((s+b)·ln(1+s/b) − s)) for a counting experiment."""
    if b <= 0.0:
        raise ValueError(f"Asimov significance needs a positive background, got {b}")
    if s <= 0.0:
        return 0.0
    # max() guards against a tiny negative argument from rounding when s << b.
    return float(math.sqrt(max(0.0, 2.0 * ((s + b) * math.log1p(s / b) - s))))


# ---------------------------------------------------------------------------------------------
# Reading the results


def sample_kind(results: RunResults, name: str) -> Literal["signal", "background"]:
    """``signal`` or ``background`` for an MC sample: its group's kind, else the sample's own."""
    sample = results.samples[name]
    group = results.group(sample.group)
    return group.kind if group is not None else sample.kind


def _sum_histograms(results: RunResults, kind: str, variances: bool = False) -> FloatArray:
    total = np.zeros(len(results.bin_edges) - 1, dtype=np.float64)
    for name, sample in results.samples.items():
        if sample_kind(results, name) == kind:
            total += np.asarray(sample.m4l.variances if variances else sample.m4l.values, dtype=np.float64)
    return total


def window_bins(bin_edges: Sequence[float], window_gev: tuple[float, float]) -> slice:
    """The bins covering [lo, hi); both edges must be bin edges, else a ConfigError."""
    lo, hi = float(window_gev[0]), float(window_gev[1])
    edges = np.asarray(bin_edges, dtype=np.float64)
    where = f"mass window {lo:g}-{hi:g} GeV"
    if not lo < hi:
        raise ConfigError(f"{where}: the lower edge must be below the upper edge")
    idx = []
    for edge in (lo, hi):
        hits = np.flatnonzero(np.isclose(edges, edge, rtol=0.0, atol=1e-6))
        if hits.size == 0:
            raise ConfigError(
                f"{where}: {edge:g} GeV is not a bin edge of the m4l histogram "
                f"({edges[0]:g}-{edges[-1]:g} GeV in {edges.size - 1} bins)"
            )
        idx.append(int(hits[0]))
    return slice(idx[0], idx[1])


def window_counts(results: RunResults, window_gev: tuple[float, float]) -> tuple[float, float, float]:
    """(N stacked S+B, N background, N signal) summed over the window's bins."""
    sl = window_bins(results.bin_edges, window_gev)
    n_sig = float(_sum_histograms(results, "signal")[sl].sum())
    n_bg = float(_sum_histograms(results, "background")[sl].sum())
    return n_sig + n_bg, n_bg, n_sig


# ---------------------------------------------------------------------------------------------
# The pyhf model


COMBINED_CHANNEL = "m4l"
"""The pyhf channel of the combined fit; the simultaneous fit's are ``m4l_<lepton channel>``."""


@dataclass(frozen=True)
class FitInput:
    """Per-bin inputs of one channel of the fit, after dropping bins the model cannot describe."""

    signal: FloatArray
    signal_sumw2: FloatArray
    backgrounds: dict[str, tuple[FloatArray, FloatArray]]
    data: FloatArray
    bins_used: list[int]
    channel: str = COMBINED_CHANNEL
    """The pyhf channel's name."""


def fit_input(results: RunResults, lepton_channel: str | None = None) -> FitInput:
    """The m4l histograms of signal, each background group and data: summed over the lepton
    channels, or of ``lepton_channel`` alone."""
    nbins = len(results.bin_edges) - 1

    def m4l(summary: Any) -> Any:
        return summary.m4l if lepton_channel is None else summary.channels[lepton_channel]

    def values_and_w2(summary: Any) -> tuple[FloatArray, FloatArray]:
        return (np.asarray(m4l(summary).values, dtype=np.float64),
                np.asarray(m4l(summary).variances, dtype=np.float64))

    # The signal is summed in the samples' order and the backgrounds in sorted order, as always:
    # another order changes the last bit of a sum, and so the combined fit's workspace.json.
    signal, signal_w2 = np.zeros(nbins), np.zeros(nbins)
    for name, sample in results.samples.items():
        if sample_kind(results, name) == "signal":
            values, w2 = values_and_w2(sample)
            signal, signal_w2 = signal + values, signal_w2 + w2
    backgrounds: dict[str, tuple[FloatArray, FloatArray]] = {}
    for name, sample in sorted(results.samples.items()):
        if sample_kind(results, name) != "background":
            continue
        values, w2 = values_and_w2(sample)
        group = sample.group or OTHER_GROUP_ID
        group_values, group_w2 = backgrounds.get(group, (np.zeros(nbins), np.zeros(nbins)))
        backgrounds[group] = (group_values + values, group_w2 + w2)
    data = np.asarray(m4l(results.data).values, dtype=np.float64)

    # Negative-weight MC can leave a bin negative; a Poisson mean cannot be.
    signal = np.clip(signal, 0.0, None)
    backgrounds = {g: (np.clip(h, 0.0, None), w2) for g, (h, w2) in backgrounds.items()}
    total_bkg = sum((h for h, _ in backgrounds.values()), np.zeros(nbins))
    # A bin with no expectation has no Poisson term pyhf can evaluate; it carries no information
    # on mu either, so it is left out (and counted in the report).
    keep = (signal + total_bkg) > 0.0
    used = [int(i) for i in np.flatnonzero(keep)]
    return FitInput(
        signal=signal[keep], signal_sumw2=signal_w2[keep],
        backgrounds={g: (h[keep], w2[keep]) for g, (h, w2) in backgrounds.items()},
        data=data[keep], bins_used=used,
        channel=COMBINED_CHANNEL if lepton_channel is None else f"{COMBINED_CHANNEL}_{lepton_channel}",
    )


def fit_inputs(results: RunResults, channels: FitChannels = "combined") -> tuple[FitInput, ...]:
    """The inputs of each channel of the fit: the summed m4l, or one per lepton channel that expects
    any event (pyhf cannot build a channel without bins)."""
    if channels == "combined":
        return (fit_input(results),)
    per_channel = (fit_input(results, lepton_channel) for lepton_channel in results.channels)
    return tuple(channel for channel in per_channel if channel.bins_used)


def staterror_name(channel: str) -> str:
    """The MC-statistics modifier of a pyhf channel; the combined fit's keeps the name it always had."""
    return "mc_stat" if channel == COMBINED_CHANNEL else f"mc_stat_{channel.removeprefix(COMBINED_CHANNEL + '_')}"


def build_spec(inputs: Sequence[FitInput], options: FitOptions) -> dict[str, Any]:
    """The HistFactory spec: a channel over the m4l bins of each input, signal normfactor ``mu`` and one
    normsys per background group shared by every channel, an MC-statistics staterror per channel."""

    def stat_modifier(channel: FitInput, sumw2: FloatArray) -> list[dict[str, Any]]:
        if not options.staterror:
            return []
        return [{"name": staterror_name(channel.channel), "type": "staterror",
                 "data": np.sqrt(np.clip(sumw2, 0.0, None)).tolist()}]

    def samples_of(channel: FitInput) -> list[dict[str, Any]]:
        samples: list[dict[str, Any]] = [{
            "name": "signal", "data": channel.signal.tolist(),
            "modifiers": [{"name": "mu", "type": "normfactor", "data": None},
                          *stat_modifier(channel, channel.signal_sumw2)],
        }]
        unc = options.background_norm_uncertainty
        for group, (hist, w2) in channel.backgrounds.items():
            if not np.any(hist > 0.0):
                continue
            modifiers = stat_modifier(channel, w2)
            if unc > 0.0:
                modifiers.append({"name": f"norm_{group}", "type": "normsys",
                                  "data": {"hi": 1.0 + unc, "lo": 1.0 - unc}})
            samples.append({"name": group, "data": hist.tolist(), "modifiers": modifiers})
        return samples

    return {"channels": [{"name": channel.channel, "samples": samples_of(channel)} for channel in inputs]}


def _fittable(inputs: Sequence[FitInput]) -> bool:
    """Whether any channel expects signal: without, μ cannot be fitted."""
    return any(np.any(channel.signal > 0.0) for channel in inputs)


def fit_workspace(results: RunResults, options: FitOptions) -> dict[str, Any] | None:
    """The fit's model, observations (a run without data: the Asimov data it was fitted to) and μ
    bounds as a pyhf workspace; None when μ cannot be fitted."""
    inputs = fitted_inputs(results, options.channels)
    if not _fittable(inputs):
        return None
    spec = build_spec(inputs, options)
    bounds = [_mu_lower(inputs), options.mu_upper]
    return {
        **spec,
        "observations": [{"name": channel.channel, "data": channel.data.tolist()} for channel in inputs],
        "measurements": [{"name": "atlaspipe_fit", "config": {
            "poi": "mu", "parameters": [{"name": "mu", "bounds": [bounds]}]}}],
        "version": "1.0.0",
    }


def _mu_lower(inputs: Sequence[FitInput]) -> float:
    """A lower bound on mu keeping every bin's expectation positive, with margin for the pulls."""
    ratios = []
    for channel in inputs:
        bkg = sum((h for h, _ in channel.backgrounds.values()), np.zeros_like(channel.signal))
        has_signal = channel.signal > 0.0
        if np.any(has_signal):
            ratios.append(float(np.min(bkg[has_signal] / channel.signal[has_signal])))
    return max(-10.0, -0.5 * min(ratios))


def _z_from_p(p: float) -> float | None:
    from scipy.stats import norm

    if not math.isfinite(p):
        return None
    # Cap instead of inf: JSON has no infinity, and beyond ~38σ the p-value underflows anyway.
    return float(min(norm.isf(p), 38.0)) if p > 0.0 else 38.0


def _crossing(g: Callable[[float], float], start: float, step: float, bound: float) -> float | None:
    """Where g (≈ linear, g(start) = -1) crosses zero going from ``start`` towards ``bound``."""
    from scipy.optimize import brentq

    direction = 1.0 if bound > start else -1.0
    a, g_a = start, -1.0
    for _ in range(30):
        b = start + direction * step
        if (b - bound) * direction >= 0.0:
            b = bound
        g_b = g(b)
        if g_b > 0.0:
            return float(brentq(g, a, b, xtol=1e-6))
        if b == bound:
            return None
        # g is close to |mu - mu_hat|/sigma - 1: extrapolate linearly to just past the crossing.
        slope = (g_b - g_a) / abs(b - a) if g_b > g_a else 0.0
        a, g_a = b, g_b
        reach = abs(a - start)
        step = reach + (1.2 * (-g_b) / slope if slope > 0.0 else reach)
    return None


@dataclass(frozen=True)
class _FitValues:
    """What one pyhf fit found; None where a value is undefined or not finite."""

    mu: float | None
    mu_uncertainty: float | None
    mu_uncertainty_up: float | None
    mu_uncertainty_down: float | None
    significance_observed: float | None
    significance_expected: float | None
    p_value_observed: float | None
    p_value_expected: float | None
    twice_nll: float | None
    parameters: dict[str, tuple[float, ...]]
    parameter_uncertainties: dict[str, tuple[float, ...]]
    scan: LikelihoodScan | None
    warnings: tuple[str, ...] = ()


AT_BOUND_TOLERANCE = 1e-3
"""How near a bound, relative to the range, a fitted parameter counts as sitting on it."""


def bound_warnings(values: dict[str, tuple[float, ...]], bounds: dict[str, list[tuple[float, float]]],
                   poi: str = "mu") -> list[str]:
    """One line per fitted parameter sitting on a bound of its range: there the minimum is not a
    minimum of the likelihood, and the uncertainty the curvature gives means little."""
    found = []
    for name, fitted in values.items():
        for index, (value, (lo, hi)) in enumerate(zip(fitted, bounds.get(name, []), strict=False)):
            span = hi - lo
            side = ("lower", lo) if value - lo <= AT_BOUND_TOLERANCE * span else \
                ("upper", hi) if hi - value <= AT_BOUND_TOLERANCE * span else None
            if side is None:
                continue
            label = name if len(fitted) == 1 else f"{name}[{index}]"
            what = "μ̂" if name == poi else label
            found.append(f"{what} = {value:.3g} is at the {side[0]} bound {side[1]:.3g} of its range: "
                         "the fit result is not reliable")
    return found


MINUIT_TOLERANCE: dict[FitChannels, float] = {"combined": 1e-3, "simultaneous": 1e-5}
"""MIGRAD's stopping tolerance by fit channels. The simultaneous model has three times the parameters
(one MC-statistics γ per channel and bin), and at 1e-3 its μ̂ stops ~1e-4 short of the minimum; 1e-5
costs no measurable CPU more on the embedded sample. The combined fit keeps its 1e-3, so its results
are unchanged."""


def _fit(spec: dict[str, Any], data: dict[str, FloatArray], mu_bounds: tuple[float, float],
         tolerance: float) -> _FitValues:
    import pyhf

    pyhf.set_backend("numpy")
    model = pyhf.Model(spec, poi_name="mu", validate=True)
    # pyhf orders the channels by name: the observations follow its order.
    observed = np.concatenate([data[channel] for channel in model.config.channels]).tolist() + list(
        model.config.auxdata)
    bounds = list(model.config.suggested_bounds())
    bounds[model.config.poi_index] = mu_bounds
    fixed = model.config.suggested_fixed()
    free_nuisances = sum(1 for i, f in enumerate(fixed) if not f and i != model.config.poi_index)
    # MINUIT is about twenty times faster than SLSQP on the 40-parameter m4l model, but it
    # cannot run a fit with nothing left free, which a fixed-mu fit of a nuisance-free model is.
    optimizer = (pyhf.optimize.minuit_optimizer(tolerance=tolerance) if free_nuisances
                 else pyhf.optimize.scipy_optimizer(tolerance=1e-10))
    pyhf.set_backend("numpy", optimizer)

    poi = model.config.poi_index
    hesse: FloatArray | None = None
    if free_nuisances:
        best, twice_nll_min, result = pyhf.infer.mle.fit(
            observed, model, par_bounds=bounds, fixed_params=fixed, return_result_obj=True,
            return_fitted_val=True,
        )
        mu_hat = float(best[poi])
        hesse = None if result.unc is None else np.asarray(result.unc, dtype=np.float64)
        # MINOS: the -2ΔlnL = 1 crossings of the profile likelihood, asymmetric where it is.
        result.minuit.minos(poi)
        errors = result.minuit.merrors[poi]
        up = mu_hat + errors.upper if errors.upper_valid else None
        down = mu_hat + errors.lower if errors.lower_valid else None
    else:
        best, twice_nll_min = pyhf.infer.mle.fit(
            observed, model, par_bounds=bounds, fixed_params=fixed, return_fitted_val=True
        )
        mu_hat = float(best[poi])

        def twice_delta_nll(mu: float) -> float:
            start = np.array(best, dtype=np.float64)
            start[poi] = mu
            _, twice_nll = pyhf.infer.mle.fixed_poi_fit(
                mu, observed, model, init_pars=start.tolist(), par_bounds=bounds, fixed_params=fixed,
                return_fitted_val=True,
            )
            return float(twice_nll - twice_nll_min)

        def excess(mu: float) -> float:
            # sqrt(-2ΔlnL) - 1 is nearly linear in mu, which keeps the root search short.
            return math.sqrt(max(0.0, twice_delta_nll(mu))) - 1.0

        # With nothing to profile, scan the likelihood for the same -2ΔlnL = 1 crossings.
        step = max(0.05, 0.25 * abs(mu_hat))
        up = _crossing(excess, mu_hat, step, mu_bounds[1])
        down = _crossing(excess, mu_hat, step, mu_bounds[0])
    err_up = None if up is None else up - mu_hat
    err_down = None if down is None else mu_hat - down
    defined = [e for e in (err_up, err_down) if e is not None]
    mu_unc = float(np.mean(defined)) if defined else None
    scan = None
    sigma_down, sigma_up = err_down or mu_unc, err_up or mu_unc
    if sigma_down and sigma_up:
        grid = scan_points(mu_hat, sigma_down, sigma_up, mu_bounds)
        scan = (_minuit_scan(result.minuit, poi, grid, float(twice_nll_min)) if free_nuisances else
                LikelihoodScan(mu=tuple(grid), twice_delta_nll=tuple(twice_delta_nll(mu) for mu in grid)))

    if free_nuisances:
        p_obs, p_exp = _discovery_p_values(model, observed, best, float(twice_nll_min), bounds=bounds, fixed=fixed,
                                            tolerance=tolerance)
    else:
        p_obs, p_exp = (float(p) for p in pyhf.infer.hypotest(
            0.0, observed, model, test_stat="q0", return_expected=True, par_bounds=bounds, fixed_params=fixed))
    parameters = {name: tuple(float(v) for v in np.atleast_1d(best[model.config.par_slice(name)]))
                  for name in model.config.par_order}
    free = {name: values for name, values in parameters.items()
            if not all(fixed[model.config.par_slice(name)])}
    uncertainties = {} if hesse is None else {
        name: tuple(float(v) for v in np.atleast_1d(hesse[model.config.par_slice(name)])) for name in free}
    ranges = {name: [tuple(b) for b in bounds[model.config.par_slice(name)]] for name in free}
    return _FitValues(
        mu=_finite(mu_hat),
        mu_uncertainty=_finite(mu_unc),
        mu_uncertainty_up=_finite(err_up),
        mu_uncertainty_down=_finite(err_down),
        significance_observed=_z_from_p(p_obs),
        significance_expected=_z_from_p(p_exp),
        p_value_observed=_finite(p_obs),
        p_value_expected=_finite(p_exp),
        twice_nll=_finite(float(twice_nll_min)),
        # JSON has no NaN: a parameter the fit left undefined is not reported.
        parameters={name: values for name, values in parameters.items() if all(map(math.isfinite, values))},
        parameter_uncertainties={name: values for name, values in uncertainties.items()
                                 if all(map(math.isfinite, values))},
        scan=scan,
        warnings=tuple(bound_warnings(free, ranges)),
    )


def _profiled(model: Any, data: Any, start: Any, mu: float, *, bounds: list[tuple[float, float]],
              fixed: list[bool], tolerance: float) -> tuple[FloatArray, float]:
    """The parameters and -2 ln L at ``mu`` with the free nuisances profiled, by MIGRAD from ``start``.

    pyhf's own fits end with HESSE, which a test statistic does not need and which costs most of a
    fit of this model; the minimiser and its settings are otherwise pyhf's (MINUIT, steps of a
    thousandth of each parameter's range).
    """
    import pyhf
    from iminuit import Minuit

    poi = model.config.poi_index
    init = np.array(start, dtype=np.float64)
    init[poi] = mu
    minuit = Minuit(lambda pars: float(pyhf.infer.mle.twice_nll(pars, data, model)[0]), init)
    minuit.errordef = Minuit.LEAST_SQUARES  # the cost is -2 ln L, so one standard deviation is Δ = 1
    minuit.limits = bounds
    minuit.errors = [(hi - lo) / 1000.0 for lo, hi in bounds]
    for index, is_fixed in enumerate(fixed):
        minuit.fixed[index] = bool(is_fixed) or index == poi
    minuit.strategy = 0
    minuit.tol = tolerance
    minuit.migrad()
    return np.asarray(minuit.values, dtype=np.float64), float(minuit.fval)


def _discovery_p_values(model: Any, observed: list[float], best: Any, twice_nll_min: float, *,
                        bounds: list[tuple[float, float]], fixed: list[bool], tolerance: float) -> tuple[float, float]:
    """The background-only p-values, observed and median expected, from q0 in the asymptotic
    approximation: what ``pyhf.infer.hypotest(0, test_stat="q0", return_expected=True)`` gives
    (tests/results/test_exports.py compares them), with three fits instead of its five.

    The best fit is reused; the Asimov data of μ = 1 (nuisances profiled on the data at μ = 1, as
    pyhf makes it) has its best fit at those parameters by construction, so only the μ = 0 fits of
    the data and of the Asimov data remain.
    """
    from scipy.stats import norm

    poi = model.config.poi_index
    _, twice_nll_zero = _profiled(model, observed, best, 0.0, bounds=bounds, fixed=fixed, tolerance=tolerance)
    q0 = max(0.0, twice_nll_zero - twice_nll_min) if float(best[poi]) >= 0.0 else 0.0
    asimov_pars, _ = _profiled(model, observed, best, 1.0, bounds=bounds, fixed=fixed, tolerance=tolerance)
    asimov = model.expected_data(asimov_pars)
    twice_nll_asimov = float(-2.0 * model.logpdf(asimov_pars, asimov)[0])
    _, twice_nll_asimov_zero = _profiled(model, asimov, asimov_pars, 0.0, bounds=bounds, fixed=fixed,
                                         tolerance=tolerance)
    q0_asimov = max(0.0, twice_nll_asimov_zero - twice_nll_asimov)
    return float(norm.sf(math.sqrt(q0))), float(norm.sf(math.sqrt(q0_asimov)))


SCAN_STEPS = (0.5, 1.0, 1.5, 2.0)
"""Where the likelihood scan refits, in units of μ's uncertainty on each side of μ̂: the 1σ crossings
themselves and enough around them to show the curve's shape."""


def _minuit_scan(minuit: Any, poi: int, grid: list[float], twice_nll_min: float) -> LikelihoodScan:
    """The profile −2ΔlnL at each μ of ``grid`` where MIGRAD converges. iminuit's profile refits the
    nuisances at each μ from the best fit's state (strategy 0, no HESSE per point): about a tenth of
    the cost of as many pyhf fits."""
    _, profile, valid = minuit.mnprofile(minuit.parameters[poi], grid=grid)
    kept = [(mu, float(value) - twice_nll_min) for mu, value, ok in zip(grid, profile, valid, strict=True) if ok]
    return LikelihoodScan(mu=tuple(mu for mu, _ in kept), twice_delta_nll=tuple(value for _, value in kept))


def scan_points(mu_hat: float, sigma_down: float, sigma_up: float, bounds: tuple[float, float]) -> list[float]:
    """μ̂ and ``SCAN_STEPS`` × σ on either side of it, inside μ's range."""
    points = {mu_hat}
    for sign, sigma in ((-1.0, sigma_down), (1.0, sigma_up)):
        points.update(min(max(mu_hat + sign * step * sigma, bounds[0]), bounds[1]) for step in SCAN_STEPS)
    return sorted(points)


def _finite(value: float | None) -> float | None:
    """``value``, or None for NaN and the infinities (JSON has neither)."""
    return value if value is None or math.isfinite(value) else None


METHOD = ("pyhf binned profile likelihood, MINUIT (SLSQP if no nuisance parameter); "
          "mu interval from -2ΔlnL = 1; significances from q0 (asymptotic)")


def has_data(results: RunResults) -> bool:
    """Whether the run read any data file (a data period selecting no event still counts)."""
    return results.data.given


def fitted_inputs(results: RunResults, channels: FitChannels = "combined") -> tuple[FitInput, ...]:
    """What the fit runs on: :func:`fit_inputs`, with the Asimov data of the MC in place of the
    data for a run without data."""
    inputs = fit_inputs(results, channels)
    if has_data(results):
        return inputs
    return tuple(replace(channel, data=channel.signal + sum(
        (h for h, _ in channel.backgrounds.values()), np.zeros_like(channel.signal))) for channel in inputs)


def fit_results(results: RunResults, options: FitOptions | None = None) -> FitResult:
    """The pyhf fit of mu to the data histogram; on failure the values are None with ``error``.

    A run without data is fitted to the Asimov data of its MC (signal at μ = 1, every bin at its
    expectation): the result is the expected one, and labelled so.
    """
    options = options or FitOptions()
    inputs = fitted_inputs(results, options.channels)
    expected = not has_data(results)
    n_data = 0.0 if expected else float(sum(channel.data.sum() for channel in inputs))
    base = FitResult(
        background_norm_uncertainty=options.background_norm_uncertainty, staterror=options.staterror,
        mu_upper=options.mu_upper, channels=options.channels, method=METHOD,
        bins_used=sum(len(channel.bins_used) for channel in inputs),
        bins_total=len(inputs) * (len(results.bin_edges) - 1),
        n_data=n_data, n_signal=float(sum(channel.signal.sum() for channel in inputs)),
        n_background=float(sum(h.sum() for channel in inputs for h, _ in channel.backgrounds.values())),
        data_outside_model=0.0 if expected else
        float(np.sum(np.asarray(results.data.m4l.values, dtype=np.float64))) - n_data,
        kind="expected" if expected else "observed",
    )
    if not _fittable(inputs):
        return base.model_copy(update={"error": "no signal expectation in the m4l range; mu cannot be fitted"})
    spec = build_spec(inputs, options)
    mu_bounds = (_mu_lower(inputs), options.mu_upper)
    base = base.model_copy(update={"mu_bounds": mu_bounds})
    try:
        with warnings.catch_warnings():
            # pyhf warns about values at the bounds, which a zero-data run legitimately reaches.
            warnings.simplefilter("ignore", RuntimeWarning)
            # pyhf 0.7's schema validation uses a jsonschema API that now warns on every model.
            warnings.simplefilter("ignore", DeprecationWarning)
            fitted = _fit(spec, {channel.channel: channel.data for channel in inputs}, mu_bounds,
                          MINUIT_TOLERANCE[options.channels])
    except Exception as exc:  # the fit must not sink a finished run: report why instead
        reason = " ".join(str(exc).split())[:300]
        log.warning("run %s: the fit failed: %s%s", results.run_id, type(exc).__name__, f": {reason}" if reason else "")
        log.debug("the failed fit", exc_info=True)
        return base.model_copy(update={"error": f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__})
    for warning in fitted.warnings:
        log.warning("run %s: fit: %s", results.run_id, warning)
    return base.model_copy(update={**asdict(fitted), "converged": fitted.mu is not None})


def significance_results(
    results: RunResults, window_gev: tuple[float, float] = DEFAULT_WINDOW_GEV
) -> Significance:
    """The window counts with the notebook's figure and the Asimov median significance."""
    n_sb, n_bg, n_sig = window_counts(results, window_gev)
    sl = window_bins(results.bin_edges, window_gev)
    n_data = float(np.sum(np.asarray(results.data.m4l.values, dtype=np.float64)[sl]))
    return Significance(
        window_gev=(float(window_gev[0]), float(window_gev[1])),
        n_sig_plus_bg=n_sb, n_bg=n_bg, n_sig=n_sig, n_data=n_data,
        notebook=notebook_significance(n_sb, n_bg) if n_bg > 0.0 else None,
        asimov=asimov_significance(n_sig, n_bg) if n_bg > 0.0 else None,
    )


def summarise(
    results: RunResults, window_gev: tuple[float, float], fit_options: FitOptions
) -> tuple[Significance | None, FitResult | None]:
    """The ``significance`` and ``fit`` of a run's results (the statistics are not in it yet).

    A run without MC has neither: there is no expectation to compare the data with.
    """
    if not results.samples:
        return None, None
    return significance_results(results, window_gev), fit_results(results, fit_options)


def fit_options(fit: FitResult) -> FitOptions:
    """The options a finished fit ran with, as results.json records them."""
    return FitOptions(background_norm_uncertainty=fit.background_norm_uncertainty, staterror=fit.staterror,
                      mu_upper=fit.mu_upper, channels=fit.channels)


def run_workspace(results: RunResults) -> dict[str, Any] | None:
    """The pyhf workspace of the run's fit; None when the run has no fit or no signal to fit."""
    if results.fit is None:
        return None
    return fit_workspace(results, fit_options(results.fit))
