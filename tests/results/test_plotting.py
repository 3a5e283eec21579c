"""Figures, yield tables and terminal summaries: the numbers drawn and written equal the inputs; files are valid."""

from __future__ import annotations

import csv
import errno
import json
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from synthetic_results import LOST_CHUNK, histogram, make_results, with_data, with_samples

from atlaspipe.model import Failure, RunResults, RunState, RunStatus
from atlaspipe.results.plotting import PARTIAL_STAMP, build_figures, draw_all, figure_formats, plot_inputs
from atlaspipe.results.summary import format_failed, format_summary
from atlaspipe.results.tables import markdown_table, text_width, write_yield_tables, yield_rows


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
    assert [e.group.id for e in inputs.entries] == ["background_z_tt", "background_zz", "signal"]
    np.testing.assert_allclose(inputs.entries[1].values, results.samples["llll"].m4l.values)
    total = sum(np.asarray(s.m4l.values) for s in results.samples.values())
    np.testing.assert_allclose(inputs.stacked_total, total)
    w2 = sum(np.asarray(s.m4l.variances) for s in results.samples.values())
    np.testing.assert_allclose(inputs.stacked_sumw2, w2)
    np.testing.assert_allclose(inputs.data, results.data.m4l.values)

    ch = plot_inputs(results, "4mu")
    sig = sum(np.asarray(s.channels["4mu"].values) for s in results.samples.values() if s.group == "signal")
    np.testing.assert_allclose(ch.entries[2].values, sig)
    np.testing.assert_allclose(ch.data, results.data.channels["4mu"].values)

    only_bkg = plot_inputs(results, None, ["background_zz", "background_z_tt"])
    assert [e.stacked for e in only_bkg.entries] == [True, True, False]
    np.testing.assert_allclose(only_bkg.stacked_total, total - inputs.entries[2].values)


def test_samples_of_an_unlisted_group_are_drawn_as_other() -> None:
    results = make_results()
    listed = results.model_copy(update={"groups": tuple(g for g in results.groups if g.id != "background_z_tt")})
    entries = plot_inputs(listed).entries
    assert [e.group.id for e in entries] == ["background_zz", "other", "signal"]
    z_tt = sum(np.asarray(results.samples[n].m4l.values) for n in ("Zee", "Zmumu", "ttbar_lep"))
    np.testing.assert_allclose(entries[1].values, z_tt)


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
    data = np.asarray(results.data.m4l.values)
    _, ys = _data_points(figures["m4l"])
    np.testing.assert_allclose(ys, data[data > 0])
    legend_box = ax.get_legend()
    assert legend_box is not None
    legend = [t.get_text() for t in legend_box.get_texts()]
    assert legend[:3] == [g.label for g in results.groups]
    assert "Data" in legend
    # Headroom: the y range leaves space above the tallest bin for the legend.
    total = plot_inputs(results).stacked_total
    assert ax.get_ylim()[1] >= 1.5 * total.max()
    ratio = figures["m4l_ratio"].axes
    assert len(ratio) == 2 and ratio[1].get_ylabel() == "Data / MC"
    assert "4\\mu" in " ".join(_texts(figures["m4l_4mu"]))


def test_control_grids_draw_the_control_histograms() -> None:
    from matplotlib.container import ErrorbarContainer

    from atlaspipe.generate.embedded import embedded_sample_dir
    from tests.runs import reference_results

    results = reference_results([embedded_sample_dir()], 700)
    # Every selected data event has its four leptons in the lepton histograms, flow bins included.
    lep1_pt = results.data.controls["lep1_pt"]
    assert sum(h.total + h.underflow + h.overflow for h in lep1_pt.values()) == results.data.events_selected
    from atlaspipe.results.plotting import _style, build_figure

    with _style():
        figures = {stem: build_figure(results, stem) for stem in ("controls", "controls_channels")}

    def data_points(ax: Any) -> Any:
        points = next(c for c in ax.containers if c.get_label() == "Pseudo-data")
        assert isinstance(points, ErrorbarContainer)
        return points.lines[0].get_data()[1]

    panels = [ax for ax in figures["controls"].axes if ax.get_xlabel()]
    assert [ax.get_xlabel() for ax in panels] == [axis.label for axis in results.controls]
    for ax, axis in zip(panels, results.controls, strict=True):
        data = sum(np.asarray(results.data.controls[axis.name][c].values) for c in results.channels)
        np.testing.assert_allclose(data_points(ax), data[data > 0], err_msg=axis.name)
    by_channel = [ax for ax in figures["controls_channels"].axes if ax.get_xlabel()]
    assert len(by_channel) == 2 * len(results.channels)
    m_z2_4mu = np.asarray(results.data.controls["m_z2"]["4mu"].values)
    np.testing.assert_allclose(data_points(by_channel[3]), m_z2_4mu[m_z2_4mu > 0])
    assert "Events / 0.5" in _texts(figures["controls"])


def test_bin_width_label_follows_the_binning() -> None:
    results = make_results()
    edges = np.asarray(results.bin_edges)
    # Merge pairs of bins: 10 GeV wide.
    keep = np.arange(0, edges.size, 2)

    def merge(values: tuple[float, ...]) -> list[float]:
        return np.add.reduceat(np.asarray(values), keep[:-1]).tolist()

    def merged(h: Any) -> Any:
        return histogram(merge(h.values), merge(h.variances))

    data = results.data.model_copy(update={
        "m4l": merged(results.data.m4l), "channels": {c: merged(h) for c, h in results.data.channels.items()}})
    samples = {n: s.model_copy(update={"m4l": merged(s.m4l), "channels": {c: merged(h) for c, h in s.channels.items()}})
               for n, s in results.samples.items()}
    results = results.model_copy(update={"bin_edges": tuple(edges[keep].tolist()), "data": data,
                                         "samples": samples})
    fig = build_figures(results)["m4l"]
    assert fig.axes[0].get_ylabel() == "Events / 10 GeV"


def test_partial_runs_are_stamped_on_every_figure() -> None:
    figures = build_figures(make_results(status="partial"))
    for stem, fig in figures.items():
        assert PARTIAL_STAMP in _texts(fig), stem


def test_draw_all_writes_valid_png_and_pdf(tmp_path: Path) -> None:
    stems = ["m4l", "m4l_4e", "m4l_4mu", "m4l_2e2mu", "m4l_ratio"]
    assert draw_all(make_results(status="partial"), tmp_path / "png") == {f"{s}_png": f"{s}.png" for s in stems}
    outputs = draw_all(make_results(status="partial"), tmp_path, formats=figure_formats(pdf=True))
    assert outputs == {f"{s}_{e}": f"{s}.{e}" for s in stems for e in ("png", "pdf")}
    for name in outputs.values():
        blob = (tmp_path / name).read_bytes()
        assert len(blob) > 10_000, name
        magic = b"\x89PNG\r\n\x1a\n" if name.endswith(".png") else b"%PDF-"
        assert blob.startswith(magic), name
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(outputs.values())


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes fail with EFBIG, as a full disk fails them with ENOSPC."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Without this the kernel kills the process with SIGXFSZ instead of failing the write.
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_failed_write_leaves_no_debris(tmp_path: Path) -> None:
    results = make_results()
    whole = tmp_path / "whole"
    written = draw_all(results, whole, formats=figure_formats(pdf=True))
    sizes = {name: (whole / name).stat().st_size for name in written.values()}
    # Let the first file through and fail on the first larger one, as a disk filling up would.
    limit = sizes["m4l.png"]
    order = list(written.values())
    failing = next(i for i, name in enumerate(order) if sizes[name] > limit)
    figures = tmp_path / "figures"
    with file_size_limit(limit), pytest.raises(OSError, match="too large") as failed:
        draw_all(results, figures, formats=figure_formats(pdf=True))
    assert failed.value.errno == errno.EFBIG
    # What was written before is whole, under its own name; nothing half-written is left.
    assert sorted(p.name for p in figures.iterdir()) == sorted(order[:failing])
    for name in order[:failing]:
        blob = (figures / name).read_bytes()
        if name.endswith(".png"):
            assert blob == (whole / name).read_bytes(), name
        else:  # a PDF carries its creation time
            assert blob.startswith(b"%PDF-") and blob.rstrip().endswith(b"%%EOF"), name

    tables = tmp_path / "tables"
    with file_size_limit(100), pytest.raises(OSError, match="too large"):
        write_yield_tables(results, tables)
    assert list(tables.iterdir()) == []


def test_empty_data_and_empty_bins_draw(tmp_path: Path) -> None:
    results = with_data(make_results(), [0.0] * 34)
    figures = build_figures(results)
    xs, _ = _data_points(figures["m4l"])
    assert len(xs) == 0
    # No MC at all (a data-only run) draws the data alone, and no data/MC ratio.
    data = [0.0] * 34
    data[3] = 4.0
    results = with_samples(with_data(results, data), {})
    outputs = draw_all(results, tmp_path)
    assert (tmp_path / outputs["m4l_png"]).stat().st_size > 10_000
    assert "m4l_ratio_png" not in outputs


def test_plotting_is_not_imported_eagerly() -> None:
    code = ("import sys, atlaspipe.results.plotting, atlaspipe.results.statistics, atlaspipe.results.tables, "
            "atlaspipe.results.summary, atlaspipe.results.report, atlaspipe.web.server; "
            "print(sorted(m for m in ('matplotlib', 'mplhep', 'pyhf', 'aiohttp') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


def test_yield_tables_equal_the_inputs(tmp_path: Path) -> None:
    results = make_results(status="partial")
    outputs = write_yield_tables(results, tmp_path)
    assert outputs == {"yields_json": "yields.json", "yields_csv": "yields.csv",
                       "yields_md": "yields.md"}
    rows = json.loads((tmp_path / "yields.json").read_text())
    assert rows == json.loads(json.dumps(yield_rows(results).to_jsonable()))
    llll = next(s for s in rows["samples"] if s["name"] == "llll")
    src = results.samples["llll"]
    assert llll["yields"]["all"]["yield"] == pytest.approx(sum(src.m4l.values))
    assert llll["yields"]["all"]["uncertainty"] == pytest.approx(np.sqrt(sum(src.m4l.variances)))
    assert llll["yields"]["2e2mu"]["yield"] == pytest.approx(sum(src.channels["2e2mu"].values))
    sig = next(g for g in rows["groups"] if g["id"] == "signal")
    members = [results.samples[n] for n in results.groups[2].samples]
    assert sig["yields"]["4e"]["yield"] == pytest.approx(sum(sum(m.channels["4e"].values) for m in members))
    assert sig["yields"]["4e"]["uncertainty"] == pytest.approx(
        np.sqrt(sum(sum(m.channels["4e"].variances) for m in members)))
    assert rows["data"]["all"] == sum(results.data.m4l.values)
    assert rows["data"]["4mu"] == sum(results.data.channels["4mu"].values)
    total = sum(sum(s.m4l.values) for s in results.samples.values())
    assert rows["total_mc"]["all"]["yield"] == pytest.approx(total)
    # Signal samples in catalog order.
    assert [s["name"] for s in rows["samples"] if s["group"] == "signal"] == [
        "ggH125_ZZ4lep", "VBFH125_ZZ4lep", "WH125_ZZ4lep", "ZH125_ZZ4lep"]

    with (tmp_path / "yields.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == (8 + 3 + 1 + 1) * 4
    zz = next(r for r in table if r["level"] == "group" and r["name"] == "background_zz"
              and r["channel"] == "all")
    assert float(zz["yield"]) == pytest.approx(sum(src.m4l.values))

    md = (tmp_path / "yields.md").read_text()
    assert "| **Background ZZ\\*** " in md
    assert "| **Data** " in md and f" {rows['data']['4e']:.0f} |" in md
    assert "PARTIAL" in md
    assert f"{llll['yields']['all']['yield']:.3f} ± {llll['yields']['all']['uncertainty']:.3f}" in md


def _renamed(results: RunResults, names: dict[str, str]) -> RunResults:
    """``results`` with some samples renamed (in the sample map and their groups)."""
    samples = {names.get(n, n): s for n, s in results.samples.items()}
    groups = tuple(g.model_copy(update={"samples": tuple(names.get(n, n) for n in g.samples)})
                   for g in results.groups)
    return results.model_copy(update={"samples": samples, "groups": groups})


LONG_NAME = "PowhegPythia8EvtGen_NNPDF30_AZNLO_WpH125J_Wincl_H_ZZ4l"  # a 2025e signal sample


def test_tables_and_summary_align_whatever_the_names(tmp_path: Path) -> None:
    results = _renamed(make_results(status="partial"), {"WH125_ZZ4lep": LONG_NAME})
    md_lines = markdown_table(yield_rows(results)).splitlines()
    # Every row's separators sit in the same terminal columns: tt̄'s combining macron takes none.
    columns = {tuple(i for i, c in enumerate(_columns(line)) if c == "|") for line in md_lines}
    assert len(columns) == 1, md_lines
    assert any(LONG_NAME.replace("_", "\\_") in line for line in md_lines)

    summary = format_summary(results, tmp_path, 1.5).splitlines()
    table = [line for line in summary if line.split(" ")[0] in {"sample", "data", *results.samples}]
    assert len(table) == 2 + len(results.samples)
    ends = {text_width(line) for line in table}
    assert len(ends) == 1, table
    assert summary[0].endswith("PARTIAL")
    assert any("chunk 7 /data/mc_363490.llll.4lep.root [0, 500000): InputError" in line for line in summary)
    assert "events lost: llll 500,000 (25.0%)" in summary


def _columns(line: str) -> str:
    """``line`` with combining marks dropped, so that its index is its terminal column."""
    import unicodedata

    return "".join(c for c in line if not unicodedata.combining(c))


def _ended(state: RunState, message: str, failures: tuple[Failure, ...] = (), executor: Any = "celery") -> RunStatus:
    return RunStatus(run_id="r1", state=state, executor=executor, chunks_total=10, chunks_done=10,
                     chunks_failed=len(failures), started="2025-01-02T03:04:05+00:00",
                     updated="2025-01-02T03:05:05+00:00", message=message, failures=failures, run_dir="/out/r1")


def test_a_failed_run_is_one_line_unless_chunks_failed() -> None:
    disk_full = "finalize failed: No space left on device: /out/r1/m4l_4e.pdf"
    assert format_failed(_ended(RunState.FAILED, disk_full)) == (
        f"run r1 failed: {disk_full}; run folder /out/r1; after fixing the cause: atlaspipe resume r1")
    assert format_failed(_ended(RunState.FAILED, disk_full, executor="in-process")) == (
        f"run r1 failed: {disk_full}; run folder /out/r1")
    assert format_failed(_ended(RunState.CANCELLED, "")) == "run r1 cancelled: cancelled; run folder /out/r1"

    many = tuple(LOST_CHUNK.model_copy(update={"chunk_id": i}) for i in range(25))
    text = format_failed(_ended(RunState.FAILED, "25 of 10 chunk(s) failed", many), limit=3).splitlines()
    assert text == [
        "run r1 failed: 25 of 10 chunk(s) failed",
        *(f"  {f.describe()}" for f in many[:3]),
        "  … and 22 more (see /out/r1/status.json)",
        "run folder /out/r1; after fixing the cause: atlaspipe resume r1",
    ]
