"""The run folder's exports, each loaded with its own library: pyhf and cabinetry read ``workspace.json``,
uproot reads ``histograms.root`` and uhi/hist read ``histograms.json``; all compared with results.json."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from atlaspipe.api import RunOutcome
from atlaspipe.model import Histogram, RunResults
from atlaspipe.results.exports import read_uhi_json
from atlaspipe.results.statistics import build_spec, fit_inputs

DOCS_API = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def docs_example() -> str:
    """The first ``python`` block of docs/api.md, the notebook example."""
    text = DOCS_API.read_text("utf-8")
    return text.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory: pytest.TempPathFactory) -> RunOutcome:
    """The docs' notebook example, executed as written: one in-process run of the embedded sample."""
    namespace: dict[str, object] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ATLASPIPE_OUTPUT_DIR", str(tmp_path_factory.mktemp("runs")))
        exec(compile(docs_example(), str(DOCS_API), "exec"), namespace)
    outcome = namespace["outcome"]
    assert isinstance(outcome, RunOutcome)
    assert outcome.ok, outcome.status.message
    return outcome


@pytest.fixture(scope="module")
def simultaneous_run(tmp_path_factory: pytest.TempPathFactory) -> RunOutcome:
    """The embedded sample fitted in its 4e, 4μ and 2e2μ channels at once, chosen through the API."""
    import atlaspipe

    outcome = atlaspipe.run(output=tmp_path_factory.mktemp("simultaneous"), fit_channels="simultaneous")
    assert outcome.ok, outcome.status.message
    return outcome


@pytest.fixture(params=["combined", "simultaneous"])
def fitted_run(request: pytest.FixtureRequest) -> RunOutcome:
    """Each fit option's run."""
    outcome: RunOutcome = request.getfixturevalue("embedded_run" if request.param == "combined"
                                                  else "simultaneous_run")
    return outcome


def test_api_outcome_holds_a_hist_per_sample_and_channel_the_fit_and_the_paths(embedded_run: RunOutcome) -> None:
    import hist

    results = _results(embedded_run)
    assert embedded_run.fit == results.fit
    assert set(embedded_run.histograms) == {"data", *results.samples}
    for name, by_channel in embedded_run.histograms.items():
        summary = results.data if name == "data" else results.samples[name]
        assert set(by_channel) == {"all", "4e", "4mu", "2e2mu"}
        for channel, histogram in by_channel.items():
            assert isinstance(histogram, hist.Hist)
            want = summary.m4l if channel == "all" else summary.channels[channel]
            assert np.array_equal(np.array([histogram.view(flow=True).value, histogram.view(flow=True).variance]),
                                  _flow(want)), (name, channel)
            assert list(histogram.axes[0].edges) == list(results.bin_edges)
    assert embedded_run.histograms is embedded_run.histograms  # built once
    assert embedded_run.outputs["workspace_json"] == embedded_run.run_dir / "workspace.json"
    assert all(path.is_file() for path in embedded_run.outputs.values())
    assert {"results_json", "m4l_png", "histograms_root", "histograms_json", "workspace_json"} <= set(
        embedded_run.outputs)


def _results(outcome: RunOutcome) -> RunResults:
    assert outcome.results is not None
    return outcome.results


def _workspace(outcome: RunOutcome) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((outcome.run_dir / "workspace.json").read_text("utf-8"))
    return loaded


def test_workspace_is_a_valid_pyhf_workspace_of_the_fit_model(fitted_run: RunOutcome) -> None:
    import pyhf

    results = _results(fitted_run)
    assert results.outputs["workspace_json"] == "workspace.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        workspace = pyhf.Workspace(_workspace(fitted_run))  # validates against pyhf's schema
        model = workspace.model()
    assert results.fit is not None
    assert sorted(model.config.channels) == sorted(
        ["m4l"] if results.fit.channels == "combined" else ["m4l_4e", "m4l_4mu", "m4l_2e2mu"])
    assert model.config.poi_name == "mu"
    assert model.config.suggested_bounds()[model.config.poi_index] == pytest.approx(results.fit.mu_bounds)
    # The observations are the data histogram's bins that the fit kept, counted in results.json.
    data = workspace.data(model, include_auxdata=False)
    assert len(data) == results.fit.bins_used
    assert sum(data) == results.fit.n_data
    assert sum(results.data.m4l.values) - sum(data) == results.fit.data_outside_model
    # Its nuisance parameters are the ones the fit reported.
    assert set(model.config.par_order) == set(results.fit.parameters)
    signal = sum(sum(s["data"]) for c in workspace["channels"] for s in c["samples"] if s["name"] == "signal")
    assert signal == pytest.approx(results.fit.n_signal, rel=1e-12)


@contextlib.contextmanager
def pyhf_minuit(tolerance: float) -> Iterator[None]:
    """pyhf on MINUIT at ``tolerance`` for the block, then its default optimizer again; pyhf's
    warnings (its jsonschema use, values at bounds) are silenced meanwhile."""
    import pyhf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(tolerance=tolerance))
        try:
            yield
        finally:
            pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer())


def test_pyhf_fit_of_the_workspace_gives_the_run_mu(fitted_run: RunOutcome) -> None:
    import pyhf

    results = _results(fitted_run)
    assert results.fit is not None and results.fit.mu is not None
    # A tight tolerance: pyhf's defaults stop ~3e-4 short of the minimum on this flat likelihood.
    with pyhf_minuit(1e-7):
        workspace = pyhf.Workspace(_workspace(fitted_run))
        model = workspace.model()
        best = pyhf.infer.mle.fit(workspace.data(model), model)
    assert float(best[model.config.poi_index]) == pytest.approx(results.fit.mu, abs=1e-4)


def test_significances_are_pyhfs_hypotest_of_the_workspace(embedded_run: RunOutcome) -> None:
    # The simultaneous fit's significances come from the same code; pyhf's hypotest of its
    # 105-parameter model takes seconds more than this one, so it is checked on the combined fit.
    import pyhf
    from scipy.stats import norm

    results = _results(embedded_run)
    assert results.fit is not None and results.fit.significance_observed is not None
    with pyhf_minuit(1e-5):
        workspace = pyhf.Workspace(_workspace(embedded_run))
        model = workspace.model()
        p_obs, p_exp = pyhf.infer.hypotest(0.0, workspace.data(model), model, test_stat="q0", return_expected=True)
    assert results.fit.significance_observed == pytest.approx(float(norm.isf(float(p_obs))), rel=1e-3)
    assert results.fit.significance_expected == pytest.approx(float(norm.isf(float(p_exp))), rel=1e-3)
    assert results.fit.p_value_observed == pytest.approx(float(p_obs), rel=1e-2)


def test_cabinetry_loads_and_fits_the_workspace(embedded_run: RunOutcome) -> None:
    cabinetry = pytest.importorskip("cabinetry", reason="cabinetry is not installed (pip install cabinetry)")
    results = _results(embedded_run)
    assert results.fit is not None and results.fit.mu is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = cabinetry.workspace.load(embedded_run.run_dir / "workspace.json")
        model, data = cabinetry.model_utils.model_and_data(spec)
        fitted = cabinetry.fit.fit(model, data, tolerance=1e-7)
    assert fitted.bestfit[fitted.labels.index("mu")] == pytest.approx(results.fit.mu, abs=1e-4)
    assert model.config.channels == ["m4l"]


def test_workspace_channel_is_the_model_the_fit_builds(fitted_run: RunOutcome) -> None:
    from atlaspipe.results.statistics import fit_options

    results = _results(fitted_run)
    assert results.fit is not None
    expected = build_spec(fit_inputs(results, results.fit.channels), fit_options(results.fit))
    assert _workspace(fitted_run)["channels"] == json.loads(json.dumps(expected["channels"]))


def test_likelihood_scan_is_pyhfs_profile_of_the_workspace(embedded_run: RunOutcome) -> None:
    """Each scan point is −2ΔlnL of pyhf's own fixed-μ fit of workspace.json, started cold; its minimum
    is pyhf's μ̂; pyhf's profile is 1 at the 1σ crossings the plot marks (scan points themselves), and
    their half-distance is pyhf's (HESSE) uncertainty on μ."""
    import pyhf

    fit = _results(embedded_run).fit
    assert fit is not None and fit.scan is not None and fit.mu is not None
    assert fit.mu_uncertainty_up is not None and fit.mu_uncertainty_down is not None
    with pyhf_minuit(1e-7):
        workspace = pyhf.Workspace(_workspace(embedded_run))
        model = workspace.model()
        data = workspace.data(model)
        best, twice_nll_min = pyhf.infer.mle.fit(data, model, return_uncertainties=True, return_fitted_val=True)

        def twice_delta(mu: float) -> float:
            _, twice_nll = pyhf.infer.mle.fixed_poi_fit(mu, data, model, return_fitted_val=True)
            return float(twice_nll - twice_nll_min)

        independent = [twice_delta(mu) if mu != fit.mu else 0.0 for mu in fit.scan.mu]
    poi = model.config.poi_index
    assert len(fit.scan.mu) >= 7 and min(fit.scan.mu) < fit.mu - fit.mu_uncertainty_down
    assert max(fit.scan.mu) > fit.mu + fit.mu_uncertainty_up
    np.testing.assert_allclose(fit.scan.twice_delta_nll, independent, atol=1e-3)
    lowest = fit.scan.mu[int(np.argmin(fit.scan.twice_delta_nll))]
    assert lowest == fit.mu == pytest.approx(float(best[poi, 0]), abs=1e-4)
    crossings = [independent[fit.scan.mu.index(fit.mu - fit.mu_uncertainty_down)],
                 independent[fit.scan.mu.index(fit.mu + fit.mu_uncertainty_up)]]
    assert crossings == pytest.approx([1.0, 1.0], abs=2e-3)
    assert (fit.mu_uncertainty_up + fit.mu_uncertainty_down) / 2 == pytest.approx(float(best[poi, 1]), rel=0.03)


def test_pulls_are_cabinetrys_for_the_workspace(embedded_run: RunOutcome) -> None:
    """The pulls plot's numbers, (θ̂ − θ₀)/Δθ ± σ̂/Δθ, as cabinetry computes them from its own fit of
    workspace.json: nominal values and prior widths from cabinetry, θ̂ and σ̂ from its MINUIT fit."""
    cabinetry = pytest.importorskip("cabinetry", reason="cabinetry is not installed (pip install cabinetry)")
    from atlaspipe.results.fitplots import fit_pulls

    pulls = {p.parameter: p for p in fit_pulls(_results(embedded_run))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = cabinetry.workspace.load(embedded_run.run_dir / "workspace.json")
        model, data = cabinetry.model_utils.model_and_data(spec)
        fitted = cabinetry.fit.fit(model, data, tolerance=1e-7)
    prior = cabinetry.model_utils.prefit_uncertainties(model)
    nominal = cabinetry.model_utils.asimov_parameters(model)
    constrained = [i for i, width in enumerate(prior) if width > 0.0]
    assert set(pulls) == {fitted.labels[i] for i in constrained}
    assert {"norm_background_zz", "norm_background_z_tt", "mc_stat[0]"} <= set(pulls)
    for i in constrained:
        pull = pulls[fitted.labels[i]]
        assert pull.pull == pytest.approx((fitted.bestfit[i] - nominal[i]) / prior[i], abs=5e-3), pull
        assert pull.constraint == pytest.approx(fitted.uncertainty[i] / prior[i], rel=2e-2), pull


def _flow(histogram: Histogram) -> np.ndarray:
    return np.array([[histogram.underflow, *histogram.values, histogram.overflow],
                     [histogram.underflow_variance, *histogram.variances, histogram.overflow_variance]])


def test_histogram_files_hold_every_histogram_with_flow_and_sumw2(embedded_run: RunOutcome) -> None:
    import uproot

    results = _results(embedded_run)
    assert results.outputs["histograms_root"] == "histograms.root"
    assert results.outputs["histograms_json"] == "histograms.json"
    expected: dict[str, np.ndarray] = {}
    for channel in ("all", *results.channels):
        def pick(summary: object, channel: str = channel) -> Histogram:
            return summary.m4l if channel == "all" else summary.channels[channel]  # type: ignore[attr-defined]

        expected[f"{channel}/data"] = _flow(pick(results.data))
        for name, sample in results.samples.items():
            expected[f"{channel}/samples/{name}"] = _flow(pick(sample))
        for group in results.groups:
            expected[f"{channel}/groups/{group.id}"] = sum(
                (_flow(pick(results.samples[m])) for m in group.samples), np.zeros((2, len(results.bin_edges) + 1)))

    from_json = read_uhi_json(embedded_run.run_dir / "histograms.json")
    with uproot.open(embedded_run.run_dir / "histograms.root") as root_file:
        classes = root_file.classnames()
        for key, want in expected.items():
            assert classes[f"{key};1"] == "TH1D", key
            th1 = root_file[key]
            assert np.array_equal(th1.axis().edges(), results.bin_edges), key
            from_root = th1.to_hist()
            for got in (from_root, from_json[key]):
                view = got.view(flow=True)
                np.testing.assert_allclose(np.array([view.value, view.variance]), want, rtol=1e-12, atol=0,
                                           err_msg=key)
            # The ROOT file and the UHI JSON hold the same numbers, bit for bit.
            assert np.array_equal(from_root.view(flow=True).value, from_json[key].view(flow=True).value), key
            assert np.array_equal(from_root.view(flow=True).variance, from_json[key].view(flow=True).variance), key
    # The MC overflow is not empty on the embedded sample: the flow bins are really carried.
    assert expected["all/samples/llll"][0, -1] > 0.0


def test_exports_are_listed_and_left_whole(embedded_run: RunOutcome) -> None:
    names = sorted(p.name for p in Path(embedded_run.run_dir).iterdir())
    assert {"workspace.json", "histograms.root", "histograms.json"} <= set(names)
    assert not [n for n in names if n.endswith(".tmp")]


def test_report_shows_the_cutflow_and_links_the_exports(embedded_run: RunOutcome) -> None:
    results = _results(embedded_run)
    assert results.cutflow is not None
    html = (embedded_run.run_dir / "report.html").read_text("utf-8")
    table = html.split('<table id="cutflow">', 1)[1].split("</table>", 1)[0]
    llll = results.cutflow.samples["llll"]
    row = table.split("<td>llll</td>", 1)[1].split("</tr>", 1)[0]
    assert [int(cell.split(">")[1].split("<")[0]) for cell in row.split("<td")[1:]] == [r[0] for r in llll.raw]
    assert '<a href="workspace.json">' in html and '<a href="histograms.json">' in html
    assert 'id="plot-m4l_prefit_postfit"' in html
    assert 'id="plot-fit_pulls"' in html and 'id="plot-fit_scan"' in html
    assert embedded_run.outputs["fit_pulls_png"].is_file() and embedded_run.outputs["fit_scan_png"].is_file()


def test_prefit_and_postfit_expectations_follow_the_fit(fitted_run: RunOutcome) -> None:
    from atlaspipe.results.fitplots import fit_expectations

    results = _results(fitted_run)
    assert results.fit is not None and results.fit.mu is not None
    assert fitted_run.outputs["m4l_prefit_postfit_png"].stat().st_size > 10_000
    expected = fit_expectations(results)
    assert expected is not None
    spec = _workspace(fitted_run)
    nominal: dict[str, float] = {}
    for channel in spec["channels"]:  # type: ignore[attr-defined]
        for sample in channel["samples"]:
            nominal[sample["name"]] = nominal.get(sample["name"], 0.0) + sum(sample["data"])
    for index, sample in enumerate(expected.samples):
        assert expected.prefit[index].sum() == pytest.approx(nominal[sample], rel=1e-9), sample
    signal = expected.samples.index("signal")
    # Post-fit signal = μ̂ × nominal, up to the MC-stat gammas (within a few per cent of 1 here).
    ratio = expected.postfit[signal].sum() / expected.prefit[signal].sum()
    assert ratio == pytest.approx(results.fit.mu, rel=0.05)
    assert not np.array_equal(expected.postfit, expected.prefit)
    assert np.array_equal(expected.data, np.asarray(results.data.m4l.values))


def test_control_distributions_are_exported_and_shown(embedded_run: RunOutcome) -> None:
    import uproot

    results = _results(embedded_run)
    assert [axis.name for axis in results.controls][:2] == ["m_z1", "m_z2"] and len(results.controls) == 14
    from_json = read_uhi_json(embedded_run.run_dir / "histograms.json")
    with uproot.open(embedded_run.run_dir / "histograms.root") as root_file:
        for axis in (results.controls[0], results.controls[-1]):
            for channel in ("all", "4mu"):
                channels = results.channels if channel == "all" else (channel,)
                data = sum(_flow(results.data.controls[axis.name][c]) for c in channels)
                zz = sum(_flow(results.samples[m].controls[axis.name][c])
                         for m in results.group("background_zz").samples for c in channels)  # type: ignore[union-attr]
                for key, want in ((f"controls/{axis.name}/{channel}/data", data),
                                  (f"controls/{axis.name}/{channel}/groups/background_zz", zz)):
                    for got in (root_file[key].to_hist(), from_json[key]):
                        assert list(got.axes[0].edges) == pytest.approx(axis.bin_edges, rel=1e-12), key
                        view = got.view(flow=True)
                        np.testing.assert_allclose(np.array([view.value, view.variance]), want, rtol=1e-12,
                                                   err_msg=key)
    html = (embedded_run.run_dir / "report.html").read_text("utf-8")
    assert "<h2>Control distributions</h2>" in html
    assert 'id="plot-controls"' in html and 'id="plot-controls_channels"' in html
    assert (embedded_run.run_dir / "controls.png").stat().st_size > 10_000
