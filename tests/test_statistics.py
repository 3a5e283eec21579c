"""Significance formulas and the pyhf fit, tied to hand-computed values.

``make_results`` builds a synthetic results dict following docs/CONTRACTS.md; the plotting, web
and browser tests import it from here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from atlaspipe.catalog import load_release
from atlaspipe.errors import ConfigError
from atlaspipe.statistics import (
    FitOptions,
    asimov_significance,
    build_spec,
    fit_input,
    fit_results,
    notebook_significance,
    summarise,
    window_counts,
)

CHANNEL_FRACTIONS = {"4e": 0.25, "4mu": 0.35, "2e2mu": 0.40}


def _sample_entry(group: str, kind: str, hist: np.ndarray, rel_stat: float) -> dict[str, Any]:
    sumw2 = (rel_stat * hist) ** 2
    channels = {
        ch: {"yield": float((f * hist).sum()), "histogram": (f * hist).tolist(),
             "sumw2": (f * sumw2).tolist()}
        for ch, f in CHANNEL_FRACTIONS.items()
    }
    return {
        "group": group, "kind": kind, "events_read": 10000, "events_selected": 500,
        "normalisation": 1e-3, "yield": float(hist.sum()),
        "yield_uncertainty": float(np.sqrt(sumw2.sum())), "histogram": hist.tolist(),
        "sumw2": sumw2.tolist(), "channels": channels,
    }


def make_results(
    status: str = "complete", run_id: str = "run-test", data_scale: float = 1.0
) -> dict[str, Any]:
    """A results dict shaped like the 2020 analysis: 80-250 GeV in 5 GeV bins."""
    edges = np.arange(80.0, 250.0 + 1e-9, 5.0)
    centres = 0.5 * (edges[:-1] + edges[1:])
    release = load_release("2020")
    shapes = {
        "Zee": 8.0 * np.exp(-(centres - 80.0) / 25.0),
        "Zmumu": 10.0 * np.exp(-(centres - 80.0) / 25.0),
        "ttbar_lep": np.full(centres.size, 0.8),
        "llll": 4.0 + 20.0 * np.exp(-0.5 * ((centres - 91.0) / 4.0) ** 2)
        + 8.0 * np.exp(-0.5 * ((centres - 200.0) / 30.0) ** 2),
        "ggH125_ZZ4lep": 8.6 * _gauss_fractions(edges, 125.0, 2.0),
        "VBFH125_ZZ4lep": 0.77 * _gauss_fractions(edges, 125.0, 2.0),
        "WH125_ZZ4lep": 0.22 * _gauss_fractions(edges, 125.0, 2.0),
        "ZH125_ZZ4lep": 0.0015 * _gauss_fractions(edges, 125.0, 2.0),
    }
    samples = {}
    for s in release.samples:
        if s.kind != "mc":
            continue
        kind = release.group(s.group or "").kind
        samples[s.name] = _sample_entry(s.group or "", kind, shapes[s.name], 0.05)
    expected = sum(np.asarray(v["histogram"]) for v in samples.values())
    data = np.round(expected * data_scale + 0.4 * np.sin(centres)).clip(0.0)
    data_channels = {ch: {"histogram": np.round(data * f).tolist()}
                     for ch, f in CHANNEL_FRACTIONS.items()}
    return {
        "schema_version": 1, "run_id": run_id, "status": status, "release": "2020",
        "luminosity_fb": 10.0, "bin_edges": edges.tolist(), "channels": list(CHANNEL_FRACTIONS),
        "groups": [{"id": g.id, "label": g.label, "text": g.text, "color": g.color,
                    "kind": g.kind, "samples": [s.name for s in release.samples if s.group == g.id]}
                   for g in release.groups],
        "data": {"events_read": 100000, "events_selected": int(data.sum()) + 3,
                 "events_in_range": int(data.sum()), "histogram": data.tolist(),
                 "underflow": 1, "overflow": 2, "channels": data_channels,
                 "samples": {"data_A": {"events_read": 100000, "events_selected": int(data.sum())}}},
        "samples": samples,
        "inputs": [{"sample": "data_A", "source": "/data/data_A.4lep.root", "entries": 100000,
                    "size_bytes": 1234567}],
        "chunks": {"total": 12, "failed": []},
        "missing": {},
        "outputs": {},
    }


def _gauss_fractions(edges: np.ndarray, mean: float, sigma: float) -> np.ndarray:
    cdf = np.array([0.5 * (1.0 + math.erf((e - mean) / (sigma * math.sqrt(2.0)))) for e in edges])
    return np.diff(cdf)


def _one_bin_results(s: float, b: float, n: float, sumw2_b: float = 0.0) -> dict[str, Any]:
    """A one-bin results dict with one signal and one background sample."""

    def sample(group: str, kind: str, y: float, w2: float) -> dict[str, Any]:
        return {"group": group, "kind": kind, "yield": y, "yield_uncertainty": math.sqrt(w2),
                "histogram": [y], "sumw2": [w2], "channels": {}}

    return {
        "bin_edges": [120.0, 130.0],
        "groups": [{"id": "bkg", "kind": "background"}, {"id": "sig", "kind": "signal"}],
        "samples": {"S": sample("sig", "signal", s, 0.0), "B": sample("bkg", "background", b, sumw2_b)},
        "data": {"histogram": [n]},
    }


NO_SYST = FitOptions(background_norm_uncertainty=0.0, staterror=False)


def test_notebook_significance_reproduces_published_figure() -> None:
    assert notebook_significance(43.102, 34.012) == pytest.approx(2.208, abs=5e-4)
    assert notebook_significance(10.0, 10.0) == pytest.approx(10.0 / math.sqrt(10.0 + 30.0))
    with pytest.raises(ValueError):
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
    edges = np.asarray(results["bin_edges"])
    sel = (edges[:-1] >= 115.0) & (edges[:-1] < 130.0)
    assert sel.sum() == 3
    sig = sum(np.asarray(s["histogram"])[sel].sum() for s in results["samples"].values()
              if s["group"] == "signal")
    bkg = sum(np.asarray(s["histogram"])[sel].sum() for s in results["samples"].values()
              if s["group"] != "signal")
    assert n_sig == pytest.approx(sig)
    assert n_bg == pytest.approx(bkg)
    assert n_sb == pytest.approx(sig + bkg)
    assert n_sig > 8.0  # most of the 2 GeV-wide peak is inside


def test_window_not_on_bin_edges_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="117"):
        window_counts(make_results(), (117.0, 130.0))
    with pytest.raises(ConfigError, match="mass window"):
        window_counts(make_results(), (130.0, 115.0))


def test_one_bin_fit_matches_closed_form() -> None:
    s, b, n = 10.0, 20.0, 35.0
    fit = fit_results(_one_bin_results(s, b, n), NO_SYST)
    assert fit["converged"], fit.get("error")
    assert fit["mu"] == pytest.approx((n - b) / s, abs=1e-4)
    # -2 ln L(mu) - min = 1 at mu s + b = x where 2(x - n - n ln(x/n)) = 1
    from scipy.optimize import brentq

    def g(x: float) -> float:
        return 2.0 * (x - n - n * math.log(x / n)) - 1.0

    up = (brentq(g, n, 3 * n) - b) / s
    down = (brentq(g, 1e-3, n) - b) / s
    assert fit["mu_uncertainty_up"] == pytest.approx(up - 1.5, abs=1e-3)
    assert fit["mu_uncertainty_down"] == pytest.approx(1.5 - down, abs=1e-3)
    assert fit["mu_uncertainty"] == pytest.approx(math.sqrt(n) / s, rel=0.02)
    # q0 = 2(n ln(n/b) - (n - b)) without nuisance parameters
    z_obs = math.sqrt(2.0 * (n * math.log(n / b) - (n - b)))
    assert fit["significance_observed"] == pytest.approx(z_obs, rel=1e-4)
    assert fit["significance_expected"] == pytest.approx(asimov_significance(s, b), rel=1e-4)


def test_fit_on_asimov_data_returns_mu_one_and_expected_significance() -> None:
    results = make_results()
    inputs = fit_input(results)
    asimov = inputs.signal + sum(h for h, _ in inputs.backgrounds.values())
    results["data"]["histogram"] = np.zeros(len(results["bin_edges"]) - 1).tolist()
    for i, value in zip(inputs.bins_used, asimov, strict=True):
        results["data"]["histogram"][i] = float(value)
    fit = fit_results(results, FitOptions())
    assert fit["converged"], fit.get("error")
    assert fit["mu"] == pytest.approx(1.0, abs=2e-3)
    assert fit["significance_observed"] == pytest.approx(fit["significance_expected"], rel=5e-3)
    assert fit["p_value_observed"] == pytest.approx(fit["p_value_expected"], rel=2e-2)
    # Uncertainties can only lower the sensitivity below the systematics-free value.
    free = fit_results(results, NO_SYST)
    assert free["mu"] == pytest.approx(1.0, abs=2e-3)
    assert fit["significance_expected"] < free["significance_expected"]
    assert fit["mu_uncertainty"] > free["mu_uncertainty"]


def test_staterror_and_normsys_follow_the_options() -> None:
    inputs = fit_input(make_results())
    spec = build_spec(inputs, FitOptions(background_norm_uncertainty=0.2, staterror=True))
    samples = spec["channels"][0]["samples"]
    assert [s["name"] for s in samples] == ["signal", "background_z_tt", "background_zz"]
    zz = samples[2]["modifiers"]
    assert {"name": "norm_background_zz", "type": "normsys",
            "data": {"hi": 1.2, "lo": 0.8}} in zz
    stat = next(m for m in zz if m["type"] == "staterror")
    assert stat["data"] == pytest.approx(np.sqrt(inputs.backgrounds["background_zz"][1]).tolist())
    bare = build_spec(inputs, NO_SYST)
    assert all(m["type"] == "normfactor" for s in bare["channels"][0]["samples"]
               for m in s["modifiers"])
    with pytest.raises(ConfigError):
        FitOptions(background_norm_uncertainty=1.5)


def test_empty_bins_are_dropped_and_zero_data_fits() -> None:
    results = make_results()
    for sample in results["samples"].values():
        sample["histogram"][-1] = 0.0
        sample["sumw2"][-1] = 0.0
    results["data"]["histogram"] = [0.0] * (len(results["bin_edges"]) - 1)
    results["data"]["histogram"][-1] = 2.0
    fit = fit_results(results)
    assert fit["bins_used"] == fit["bins_total"] - 1
    assert fit["data_outside_model"] == 2.0
    assert fit["converged"], fit.get("error")
    assert fit["mu"] == pytest.approx(fit["mu_bounds"][0], abs=1e-3)
    assert fit["significance_observed"] == pytest.approx(0.0, abs=1e-6)


def test_no_signal_reports_instead_of_failing() -> None:
    results = make_results()
    for sample in results["samples"].values():
        if sample["group"] == "signal":
            sample["histogram"] = [0.0] * len(sample["histogram"])
    fit = fit_results(results)
    assert fit["mu"] is None and not fit["converged"]
    assert "no signal" in fit["error"]


def test_summarise_fills_the_contract() -> None:
    results = make_results()
    out = summarise(results, (115.0, 130.0), FitOptions())
    sig = out["significance"]
    assert sig["window_gev"] == [115.0, 130.0]
    assert sig["notebook"] == pytest.approx(
        sig["n_sig_plus_bg"] / math.sqrt(sig["n_bg"] + 0.3 * sig["n_bg"] ** 2))
    assert sig["asimov"] == pytest.approx(asimov_significance(sig["n_sig"], sig["n_bg"]))
    fit = out["fit"]
    for key in ("mu", "mu_uncertainty", "significance_observed", "significance_expected",
                "p_value_observed", "p_value_expected"):
        assert isinstance(fit[key], float), key
    assert fit["background_norm_uncertainty"] == 0.10 and fit["staterror"] is True
    # The synthetic data are the expectation plus small wiggles: mu must come out near 1.
    assert 0.3 < fit["mu"] < 1.7
    import json

    json.dumps(out, allow_nan=False)
