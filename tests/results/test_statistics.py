"""Significance formulas and the pyhf fit, tied to hand-computed values.

The synthetic results come from tests/synthetic_results.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from synthetic_results import histogram, make_results, with_data, with_sample_values, with_samples

from atlaspipe.config import analysis_config
from atlaspipe.errors import ConfigError
from atlaspipe.model import (
    ChunkSummary,
    DataSummary,
    GroupInfo,
    RunResults,
    SampleYields,
)
from atlaspipe.results.statistics import (
    FitOptions,
    asimov_significance,
    bound_warnings,
    build_spec,
    fit_input,
    fit_results,
    notebook_significance,
    summarise,
    window_counts,
)


def _one_bin_results(s: float, b: float, n: float, sumw2_b: float = 0.0) -> RunResults:
    """One 120-130 GeV bin with one signal and one background sample."""

    def sample(group: str, kind: str, y: float, w2: float) -> SampleYields:
        return SampleYields(group=group, kind=kind, events_read=1, events_selected=1, normalisation=1.0,
                            expected=y, expected_uncertainty=math.sqrt(w2), m4l=histogram([y], [w2]), channels={})

    def group(gid: str, kind: str) -> GroupInfo:
        return GroupInfo(id=gid, label=gid, text=gid, color="#000000", kind=kind, samples=())

    return RunResults(
        run_id="one-bin", status="complete", release="2020", luminosity_fb=1.0, bin_edges=(120.0, 130.0),
        groups=(group("bkg", "background"), group("sig", "signal")),
        samples={"S": sample("sig", "signal", s, 0.0), "B": sample("bkg", "background", b, sumw2_b)},
        data=DataSummary(m4l=histogram([n]), channels={}), inputs=(), chunks=ChunkSummary(total=1),
        config=analysis_config(bins=1, m4l_range_gev=(120.0, 130.0), mass_window_gev=(120.0, 130.0)),
    )


NO_SYST = FitOptions(background_norm_uncertainty=0.0, staterror=False)


def test_notebook_significance_reproduces_published_figure() -> None:
    assert notebook_significance(43.102, 34.012) == pytest.approx(2.208, abs=5e-4)
    assert notebook_significance(10.0, 10.0) == pytest.approx(10.0 / math.sqrt(10.0 + 30.0))
    with pytest.raises(ValueError, match="positive background"):
        notebook_significance(1.0, 0.0)


def test_asimov_significance_hand_computed() -> None:
    # s=10, b=20: 2*(30*ln 1.5 - 10) = 4.32791..., sqrt = 2.08036
    assert asimov_significance(10.0, 20.0) == pytest.approx(2.0803621, rel=1e-6)
    # s=5, b=5: 2*(10*ln 2 - 5) = 3.862944, sqrt = 1.965437
    assert asimov_significance(5.0, 5.0) == pytest.approx(1.9654373, rel=1e-6)
    # s << b tends to s/sqrt(b)
    assert asimov_significance(0.01, 100.0) == pytest.approx(0.001, rel=1e-3)
    assert asimov_significance(0.0, 3.0) == 0.0


def test_window_counts_sum_the_window_bins() -> None:
    results = make_results()
    n_sb, n_bg, n_sig = window_counts(results, (115.0, 130.0))
    edges = np.asarray(results.bin_edges)
    sel = (edges[:-1] >= 115.0) & (edges[:-1] < 130.0)
    assert sel.sum() == 3
    sig = sum(np.asarray(s.m4l.values)[sel].sum() for s in results.samples.values() if s.group == "signal")
    bkg = sum(np.asarray(s.m4l.values)[sel].sum() for s in results.samples.values() if s.group != "signal")
    assert n_sig == pytest.approx(sig)
    assert n_bg == pytest.approx(bkg)
    assert n_sb == pytest.approx(sig + bkg)
    assert n_sig > 8.0  # most of the 2 GeV-wide peak is inside


def test_a_group_outside_the_results_counts_by_the_sample_kind() -> None:
    # Only the stacked groups are listed in the results; a signal sample of an unlisted group
    # must still count as signal.
    results = make_results()
    listed = results.model_copy(update={"groups": tuple(g for g in results.groups if g.id != "signal")})
    assert window_counts(listed, (115.0, 130.0)) == pytest.approx(window_counts(results, (115.0, 130.0)))


def test_window_not_on_bin_edges_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="117"):
        window_counts(make_results(), (117.0, 130.0))
    with pytest.raises(ConfigError, match="mass window"):
        window_counts(make_results(), (130.0, 115.0))


def test_one_bin_fit_matches_closed_form() -> None:
    s, b, n = 10.0, 20.0, 35.0
    fit = fit_results(_one_bin_results(s, b, n), NO_SYST)
    assert fit.converged, fit.error
    assert fit.mu == pytest.approx((n - b) / s, abs=1e-4)
    # -2 ln L(mu) - min = 1 at mu s + b = x where 2(x - n - n ln(x/n)) = 1
    from scipy.optimize import brentq

    def g(x: float) -> float:
        return 2.0 * (x - n - n * math.log(x / n)) - 1.0

    up = (brentq(g, n, 3 * n) - b) / s
    down = (brentq(g, 1e-3, n) - b) / s
    assert fit.mu_uncertainty_up == pytest.approx(up - 1.5, abs=1e-3)
    assert fit.mu_uncertainty_down == pytest.approx(1.5 - down, abs=1e-3)
    assert fit.mu_uncertainty == pytest.approx(math.sqrt(n) / s, rel=0.02)
    # q0 = 2(n ln(n/b) - (n - b)) without nuisance parameters
    z_obs = math.sqrt(2.0 * (n * math.log(n / b) - (n - b)))
    assert fit.significance_observed == pytest.approx(z_obs, rel=1e-4)
    assert fit.significance_expected == pytest.approx(asimov_significance(s, b), rel=1e-4)


def test_fit_on_asimov_data_returns_mu_one_and_expected_significance() -> None:
    results = make_results()
    inputs = fit_input(results)
    asimov = inputs.signal + sum(h for h, _ in inputs.backgrounds.values())
    data = np.zeros(len(results.bin_edges) - 1)
    data[inputs.bins_used] = asimov
    results = with_data(results, data.tolist())
    fit = fit_results(results, FitOptions())
    assert fit.converged, fit.error
    assert fit.mu == pytest.approx(1.0, abs=2e-3)
    assert fit.significance_observed == pytest.approx(fit.significance_expected, rel=5e-3)
    assert fit.p_value_observed == pytest.approx(fit.p_value_expected, rel=2e-2)
    # Uncertainties can only lower the sensitivity below the systematics-free value.
    free = fit_results(results, NO_SYST)
    assert free.mu == pytest.approx(1.0, abs=2e-3)
    assert fit.significance_expected is not None and free.significance_expected is not None
    assert fit.significance_expected < free.significance_expected
    assert fit.mu_uncertainty is not None and free.mu_uncertainty is not None
    assert fit.mu_uncertainty > free.mu_uncertainty


def test_staterror_and_normsys_follow_the_options() -> None:
    inputs = fit_input(make_results())
    spec = build_spec((inputs,), FitOptions(background_norm_uncertainty=0.2, staterror=True))
    samples = spec["channels"][0]["samples"]
    assert [s["name"] for s in samples] == ["signal", "background_z_tt", "background_zz"]
    zz = samples[2]["modifiers"]
    assert {"name": "norm_background_zz", "type": "normsys",
            "data": {"hi": 1.2, "lo": 0.8}} in zz
    stat = next(m for m in zz if m["type"] == "staterror")
    assert stat["data"] == pytest.approx(np.sqrt(inputs.backgrounds["background_zz"][1]).tolist())
    bare = build_spec((inputs,), NO_SYST)
    assert all(m["type"] == "normfactor" for s in bare["channels"][0]["samples"]
               for m in s["modifiers"])
    with pytest.raises(ConfigError):
        FitOptions(background_norm_uncertainty=1.5)


def test_empty_bins_are_dropped_and_zero_data_fits() -> None:
    results = make_results()
    samples = {}
    for name, sample in results.samples.items():
        m4l = sample.m4l.model_copy(update={"values": (*sample.m4l.values[:-1], 0.0),
                                            "variances": (*sample.m4l.variances[:-1], 0.0)})
        samples[name] = sample.model_copy(update={"m4l": m4l})
    data = [0.0] * (len(results.bin_edges) - 1)
    data[-1] = 2.0
    fit = fit_results(with_data(with_samples(results, samples), data))
    assert fit.bins_used == fit.bins_total - 1
    assert fit.data_outside_model == 2.0
    assert fit.converged, fit.error
    assert fit.mu_bounds is not None
    assert fit.mu == pytest.approx(fit.mu_bounds[0], abs=1e-3)
    assert fit.significance_observed == pytest.approx(0.0, abs=1e-6)
    # Sitting on the bound is said, in results.json and so in the summary.
    assert any(w.startswith("μ̂ = ") and "lower bound" in w for w in fit.warnings), fit.warnings


def test_parameters_at_a_bound_are_named() -> None:
    bounds = {"mu": [(-2.0, 20.0)], "mc_stat": [(1e-10, 10.0), (1e-10, 10.0)], "norm_zz": [(-5.0, 5.0)]}
    values = {"mu": (-2.0,), "mc_stat": (1.0, 9.999), "norm_zz": (0.3,)}
    found = bound_warnings(values, bounds)
    assert len(found) == 2
    assert "μ̂ = -2 is at the lower bound -2" in found[0]
    assert "mc_stat[1]" in found[1] and "upper bound 10" in found[1]
    assert bound_warnings({"mu": (1.0,)}, {"mu": [(-2.0, 20.0)]}) == []


def test_a_run_without_data_gets_the_expected_fit() -> None:
    results = make_results()
    empty = histogram([0.0] * len(results.data.m4l.values))
    no_data = results.model_copy(update={"data": DataSummary(m4l=empty, channels={})})
    assert not no_data.data.given
    fit = fit_results(no_data, NO_SYST)
    assert fit.kind == "expected"
    assert fit.mu == pytest.approx(1.0, abs=2e-3)
    assert fit.significance_observed == pytest.approx(fit.significance_expected, rel=5e-3)
    assert not fit.warnings
    # The same histograms with data read: observed, and at zero data μ̂ sits on its bound.
    read = DataSummary(kind="real", m4l=empty, channels={})
    observed = fit_results(no_data.model_copy(update={"data": read}), NO_SYST)
    assert observed.kind == "observed" and observed.warnings


def test_no_signal_reports_instead_of_failing() -> None:
    results = make_results()
    results = with_sample_values(results, {name: [0.0] * len(s.m4l.values)
                                           for name, s in results.samples.items() if s.group == "signal"})
    fit = fit_results(results)
    assert fit.mu is None and not fit.converged
    assert fit.error is not None and "no signal" in fit.error


def test_summarise_fills_the_contract() -> None:
    results = make_results()
    sig, fit = summarise(results, (115.0, 130.0), FitOptions())
    assert sig.window_gev == (115.0, 130.0)
    assert sig.notebook == pytest.approx(sig.n_sig_plus_bg / math.sqrt(sig.n_bg + 0.3 * sig.n_bg ** 2))
    assert sig.asimov == pytest.approx(asimov_significance(sig.n_sig, sig.n_bg))
    for value in (fit.mu, fit.mu_uncertainty, fit.significance_observed, fit.significance_expected,
                  fit.p_value_observed, fit.p_value_expected):
        assert isinstance(value, float)
    assert fit.background_norm_uncertainty == 0.10 and fit.staterror is True
    # The synthetic data are the expectation plus small wiggles: mu must come out near 1.
    assert fit.mu is not None and 0.3 < fit.mu < 1.7
    # The completed document passes its own schema both ways.
    complete = results.model_copy(update={"significance": sig, "fit": fit})
    assert RunResults.from_json(complete.to_json()) == complete
