"""Figures and yield tables: the numbers drawn and written equal the inputs; files are valid."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_statistics import make_results

from atlaspipe.plotting import PARTIAL_STAMP, build_figures, draw_all, plot_inputs
from atlaspipe.tables import write_yield_tables, yield_rows


def _texts(fig: object) -> list[str]:
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    found = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        found += [t.get_text() for t in ax.texts]
        found += [ax.get_xlabel(), ax.get_ylabel()]
    return found


def _data_points(fig: Any) -> Any:
    """The (x, y) arrays of the "Data" error-bar markers of the first axes."""
    from matplotlib.container import ErrorbarContainer

    ax = fig.axes[0]
    points = next(c for c in ax.containers if c.get_label() == "Data")
    assert isinstance(points, ErrorbarContainer)
    return points.lines[0].get_data()


def test_stack_order_sums_and_channels_match_inputs() -> None:
    results = make_results()
    inputs = plot_inputs(results)
    assert [e.group["id"] for e in inputs.entries] == [
        "background_z_tt", "background_zz", "signal"]
    zz = np.asarray(results["samples"]["llll"]["histogram"])
    np.testing.assert_allclose(inputs.entries[1].values, zz)
    total = sum(np.asarray(s["histogram"]) for s in results["samples"].values())
    np.testing.assert_allclose(inputs.stacked_total, total)
    w2 = sum(np.asarray(s["sumw2"]) for s in results["samples"].values())
    np.testing.assert_allclose(inputs.stacked_sumw2, w2)
    np.testing.assert_allclose(inputs.data, results["data"]["histogram"])

    ch = plot_inputs(results, "4mu")
    sig = sum(np.asarray(s["channels"]["4mu"]["histogram"]) for s in results["samples"].values()
              if s["group"] == "signal")
    np.testing.assert_allclose(ch.entries[2].values, sig)
    np.testing.assert_allclose(ch.data, results["data"]["channels"]["4mu"]["histogram"])

    only_bkg = plot_inputs(results, None, ["background_zz", "background_z_tt"])
    assert [e.stacked for e in only_bkg.entries] == [True, True, False]
    np.testing.assert_allclose(only_bkg.stacked_total, total - inputs.entries[2].values)


def test_figures_carry_the_labels_and_drawn_values() -> None:
    results = make_results()
    figures = build_figures(results)
    assert set(figures) == {"m4l", "m4l_4e", "m4l_4mu", "m4l_2e2mu", "m4l_ratio"}
    texts = _texts(figures["m4l"])
    joined = " ".join(texts)
    for needed in ("ATLAS", "Open Data", "for education", "13", "10", r"\rightarrow 4\ell",
                   "Events / 5 GeV", r"$m_{4\ell}$ [GeV]"):
        assert needed in joined, needed
    assert PARTIAL_STAMP not in texts
    ax = figures["m4l"].axes[0]
    # The data points drawn are the non-empty bins with √N errors.
    data = np.asarray(results["data"]["histogram"])
    _, ys = _data_points(figures["m4l"])
    np.testing.assert_allclose(ys, data[data > 0])
    legend_box = ax.get_legend()
    assert legend_box is not None
    legend = [t.get_text() for t in legend_box.get_texts()]
    assert legend[:3] == [g["label"] for g in results["groups"]]
    assert "Data" in legend
    # Headroom: the y range leaves space above the tallest bin for the legend.
    total = plot_inputs(results).stacked_total
    assert ax.get_ylim()[1] >= 1.5 * total.max()
    ratio = figures["m4l_ratio"].axes
    assert len(ratio) == 2 and ratio[1].get_ylabel() == "Data / MC"
    assert "4\\mu" in " ".join(_texts(figures["m4l_4mu"]))


def test_bin_width_label_follows_the_binning() -> None:
    results = make_results()
    edges = np.asarray(results["bin_edges"])
    # Merge pairs of bins: 10 GeV wide.
    keep = np.arange(0, edges.size, 2)
    results["bin_edges"] = edges[keep].tolist()

    def merge(values: list[float]) -> list[float]:
        return np.add.reduceat(np.asarray(values), keep[:-1]).tolist()

    results["data"]["histogram"] = merge(results["data"]["histogram"])
    for ch in results["channels"]:
        results["data"]["channels"][ch]["histogram"] = merge(
            results["data"]["channels"][ch]["histogram"])
    for sample in results["samples"].values():
        for src in (sample, *sample["channels"].values()):
            src["histogram"], src["sumw2"] = merge(src["histogram"]), merge(src["sumw2"])
    fig = build_figures(results)["m4l"]
    assert fig.axes[0].get_ylabel() == "Events / 10 GeV"


def test_partial_runs_are_stamped_on_every_figure() -> None:
    figures = build_figures(make_results(status="partial"))
    for stem, fig in figures.items():
        assert PARTIAL_STAMP in _texts(fig), stem


def test_draw_all_writes_valid_png_and_pdf(tmp_path: Path) -> None:
    outputs = draw_all(make_results(status="partial"), tmp_path)
    stems = ["m4l", "m4l_4e", "m4l_4mu", "m4l_2e2mu", "m4l_ratio"]
    assert outputs == {f"{s}_{e}": f"{s}.{e}" for s in stems for e in ("png", "pdf")}
    for name in outputs.values():
        blob = (tmp_path / name).read_bytes()
        assert len(blob) > 10_000, name
        magic = b"\x89PNG\r\n\x1a\n" if name.endswith(".png") else b"%PDF-"
        assert blob.startswith(magic), name
    assert not list(tmp_path.glob(".*tmp"))


def test_empty_data_and_empty_bins_draw(tmp_path: Path) -> None:
    results = make_results()
    results["data"]["histogram"] = [0.0] * len(results["data"]["histogram"])
    figures = build_figures(results)
    xs, _ = _data_points(figures["m4l"])
    assert len(xs) == 0
    # No MC at all (a data-only run) still draws every figure.
    results["samples"] = {}
    results["data"]["histogram"][3] = 4.0
    outputs = draw_all(results, tmp_path)
    assert (tmp_path / outputs["m4l_ratio_png"]).stat().st_size > 10_000


def test_plotting_is_not_imported_eagerly() -> None:
    code = ("import sys, atlaspipe.plotting, atlaspipe.statistics, atlaspipe.tables, "
            "atlaspipe.web; "
            "print(sorted(m for m in ('matplotlib', 'mplhep', 'pyhf', 'aiohttp') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_yield_tables_equal_the_inputs(tmp_path: Path) -> None:
    results = make_results(status="partial")
    outputs = write_yield_tables(results, tmp_path)
    assert outputs == {"yields_json": "yields.json", "yields_csv": "yields.csv",
                       "yields_md": "yields.md"}
    rows = json.loads((tmp_path / "yields.json").read_text())
    assert rows == json.loads(json.dumps(yield_rows(results)))
    llll = next(s for s in rows["samples"] if s["name"] == "llll")
    src = results["samples"]["llll"]
    assert llll["yields"]["all"]["yield"] == pytest.approx(sum(src["histogram"]))
    assert llll["yields"]["all"]["uncertainty"] == pytest.approx(np.sqrt(sum(src["sumw2"])))
    assert llll["yields"]["2e2mu"]["yield"] == pytest.approx(src["channels"]["2e2mu"]["yield"])
    sig = next(g for g in rows["groups"] if g["id"] == "signal")
    members = [results["samples"][n] for n in results["groups"][2]["samples"]]
    assert sig["yields"]["4e"]["yield"] == pytest.approx(
        sum(sum(m["channels"]["4e"]["histogram"]) for m in members))
    assert sig["yields"]["4e"]["uncertainty"] == pytest.approx(
        np.sqrt(sum(sum(m["channels"]["4e"]["sumw2"]) for m in members)))
    assert rows["data"]["all"] == sum(results["data"]["histogram"])
    assert rows["data"]["4mu"] == sum(results["data"]["channels"]["4mu"]["histogram"])
    total = sum(sum(s["histogram"]) for s in results["samples"].values())
    assert rows["total_mc"]["all"]["yield"] == pytest.approx(total)
    # Signal samples in catalog order.
    assert [s["name"] for s in rows["samples"] if s["group"] == "signal"] == [
        "ggH125_ZZ4lep", "VBFH125_ZZ4lep", "WH125_ZZ4lep", "ZH125_ZZ4lep"]

    with (tmp_path / "yields.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == (8 + 3 + 1 + 1) * 4
    zz = next(r for r in table if r["level"] == "group" and r["name"] == "background_zz"
              and r["channel"] == "all")
    assert float(zz["yield"]) == pytest.approx(sum(src["histogram"]))

    md = (tmp_path / "yields.md").read_text()
    assert "| **Background ZZ\\*** |" in md
    assert f"| **Data** | {rows['data']['4e']:.0f} |" in md
    assert "PARTIAL" in md
    assert f"{llll['yields']['all']['yield']:.3f} ± {llll['yields']['all']['uncertainty']:.3f}" in md
