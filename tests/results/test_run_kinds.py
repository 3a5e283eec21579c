"""What a run says about its data: the luminosity it scales to, pseudo-data, data-only and MC-only runs.

Each test runs ``atlaspipe.run`` in this process on a small generated 2020 sample (a few hundred
events per MC sample, pseudo-data for period A), or on the real 2025e period-D file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from atlaspipe import api
from atlaspipe.config import analysis_config, analysis_settings
from atlaspipe.generate.events import generate_release
from atlaspipe.model import RunResults
from atlaspipe.physics.catalog import load_release
from atlaspipe.pipeline.planning import plan_run, resolve_inputs
from atlaspipe.results.plotting import build_figures
from atlaspipe.results.summary import format_summary
from tests.conftest import require_shared

REAL_PERIOD_D = ("atlas-opendata/2025e-13tev-beta/exactly4lep/"
                 "ODEO_FEB2025_v0_exactly4lep_data15_periodD.exactly4lep.root")
# The notebooks' luminosities: 2020 data_A 0.5 of 10 fb⁻¹; 2025e period D 0.105 of 36.6 fb⁻¹.
LUMI_2020, LUMI_2020_A = 10.0, 0.5
LUMI_2025E_D = 0.105


@pytest.fixture(scope="module")
def sample_2020(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen2020")
    counts = {s.name: 400 for s in load_release("2020").samples if not s.is_data}
    generate_release("2020", out, seed=3, samples=["mc", "data_A"], events_per_sample_override=counts,
                     min_events=1)
    return out


@pytest.fixture(scope="module")
def mc_only(sample_2020: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResults, str, Path]:
    return _run([sample_2020 / "MC"], tmp_path_factory.mktemp("mc-only"))


@pytest.fixture(scope="module")
def with_pseudo_data(sample_2020: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResults, str, Path]:
    return _run([sample_2020], tmp_path_factory.mktemp("pseudo"), pdf_figures=True)


# No per-bin MC-statistics parameters: what these tests check does not depend on them, and the
# fit is several times faster without.
FAST_FIT = analysis_settings(fit={"staterror": False})


def _run(inputs: list[Path], output: Path, pdf_figures: bool = False) -> tuple[RunResults, str, Path]:
    outcome = api.run(inputs, output=output, settings=FAST_FIT, pdf_figures=pdf_figures)
    assert outcome.ok and outcome.results is not None, outcome.status.message
    return outcome.results, format_summary(outcome.results, outcome.run_dir), outcome.run_dir


def _figure_texts(results: RunResults, stem: str = "m4l") -> tuple[list[str], list[str]]:
    """(every text drawn on the figure's axes, its legend entries)."""
    ax = build_figures(results)[stem].axes[0]
    legend = ax.get_legend()
    return [t.get_text() for t in ax.texts], [t.get_text() for t in legend.get_texts()] if legend else []


def test_mc_is_scaled_to_the_data_periods_given(mc_only, with_pseudo_data) -> None:
    alone, _, _ = mc_only
    results, summary, _ = with_pseudo_data
    assert alone.luminosity_fb == LUMI_2020
    assert results.luminosity_fb == LUMI_2020_A
    for name, sample in results.samples.items():
        assert sample.expected == pytest.approx(alone.samples[name].expected * LUMI_2020_A / LUMI_2020, rel=1e-9)
    assert any("0.5 fb⁻¹" in w and "10 fb⁻¹" in w for w in results.warnings), results.warnings
    assert "warning: the data periods given (data_A) hold 0.5 fb⁻¹" in summary
    texts, _ = _figure_texts(results)
    assert any("0.5" in t and "fb" in t for t in texts), texts
    assert not alone.warnings


def test_pseudo_data_is_labelled_as_such_everywhere(with_pseudo_data) -> None:
    results, summary, run_dir = with_pseudo_data
    assert results.data.kind == "pseudo"
    assert all(f.generated for f in results.inputs)
    assert "pseudo-data" in summary and "not ATLAS data" in summary
    _, legend = _figure_texts(results)
    assert "Pseudo-data" in legend and "Data" not in legend
    _, ratio_legend = _figure_texts(results, "m4l_ratio")
    assert "Pseudo-data" in ratio_legend
    assert "| **Pseudo-data**" in (run_dir / "yields.md").read_text("utf-8")
    report = (run_dir / "report.html").read_text("utf-8")
    assert "Pseudo-data events selected" in report


def test_figures_are_png_unless_pdfs_are_asked_for(mc_only, with_pseudo_data) -> None:
    results, _, run_dir = mc_only
    assert not list(run_dir.glob("*.pdf")) and not [kind for kind in results.outputs if kind.endswith("_pdf")]
    assert ">PDF</a>" not in (run_dir / "report.html").read_text("utf-8")
    results, _, run_dir = with_pseudo_data  # run with pdf_figures=True
    pngs = {kind.removesuffix("_png") for kind in results.outputs if kind.endswith("_png")}
    pdfs = {kind.removesuffix("_pdf") for kind in results.outputs if kind.endswith("_pdf")}
    # Every figure of the run in both formats; the fit's own figures stay PNG only.
    assert pdfs == pngs - {"m4l_prefit_postfit", "fit_pulls", "fit_scan"} and "m4l_ratio" in pdfs
    for stem in pdfs:
        assert (run_dir / f"{stem}.pdf").read_bytes().startswith(b"%PDF-"), stem
    report = (run_dir / "report.html").read_text("utf-8")
    assert report.count(">PDF</a>") == len(pdfs)


def test_the_embedded_demo_is_marked_as_generated() -> None:
    release, files = resolve_inputs(None)
    plan = plan_run("embedded", analysis_config(release), files)
    assert plan.files and all(f.generated for f in plan.files)


def test_a_data_only_run_has_no_mc_rows_and_no_fit(sample_2020: Path, tmp_path: Path) -> None:
    results, summary, run_dir = _run([sample_2020 / "Data"], tmp_path)
    assert results.samples == {}
    assert results.fit is None and results.significance is None
    assert results.data.events_selected > 0
    assert "Total MC" not in summary and "Total MC" not in (run_dir / "yields.md").read_text("utf-8")
    assert "fit: none (no MC" in summary
    assert "m4l_ratio_png" not in results.outputs
    _, legend = _figure_texts(results)
    assert legend == ["Pseudo-data"]


def test_an_mc_only_run_has_no_data_points_and_an_expected_fit(mc_only) -> None:
    results, summary, _ = mc_only
    assert results.data.kind is None and not results.data.given
    fit = results.fit
    assert fit is not None and fit.kind == "expected", fit
    # The Asimov data of the MC: μ̂ = 1 and the observed significance is the expected one.
    assert fit.mu == pytest.approx(1.0, abs=5e-3)
    assert fit.n_data == 0.0
    assert not fit.warnings
    assert "fit (expected: no observed data" in summary
    assert "Traceback" not in summary and "AssertionError" not in summary
    _, legend = _figure_texts(results)
    assert "Data" not in legend and "Pseudo-data" not in legend
    assert "m4l_ratio_png" not in results.outputs


def test_real_period_d_with_mc_is_scaled_to_its_luminosity(tmp_path: Path) -> None:
    real = require_shared(REAL_PERIOD_D)
    ggh = "PowhegPythia8EvtGen_NNLOPS_nnlo_30_ggH125_ZZ4l"
    generated = generate_release("2025e", tmp_path / "mc", samples=[ggh, "Sh_2212_llll"], with_data=False,
                                 events_per_sample_override={ggh: 400, "Sh_2212_llll": 600}, min_events=1)
    results, summary, _ = _run([real, *generated.files], tmp_path / "runs")
    assert results.release == "2025e"
    assert results.luminosity_fb == LUMI_2025E_D
    assert results.data.kind == "real"
    assert results.data.events_selected == 2
    assert any("0.105 fb⁻¹" in w and "36.6 fb⁻¹" in w for w in results.warnings)
    assert "0.105 fb⁻¹" in summary.splitlines()[0]
    texts, legend = _figure_texts(results)
    assert any("0.105" in t for t in texts) and not any("36.6" in t for t in texts)
    assert "Data" in legend
