"""The figures of a run in ATLAS style (mplhep): the m4l main plot, per channel, with the data/MC
ratio, and the grids of control distributions.

Matplotlib and mplhep are imported inside the functions so that ``atlaspipe --help`` and the
workers that never plot stay fast to start.  Figures are built as ``matplotlib.figure.Figure``
objects on the Agg canvas (never pyplot), so nothing accumulates in a global figure manager.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from atlaspipe.io.files import replacing
from atlaspipe.model import OTHER_GROUP_ID, ControlAxis, GroupInfo, Histogram, RunResults, SampleYields
from atlaspipe.results.tables import data_name

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

CHANNEL_TITLES = {"4e": r"4e", "4mu": r"4\mu", "2e2mu": r"2e2\mu"}
PARTIAL_STAMP = "PARTIAL"
OTHER_GROUP = GroupInfo(id=OTHER_GROUP_ID, label="Other", text="Other", color="#aaaaaa", kind="background", samples=())
"""Where MC samples of a group the results do not list are drawn."""


@dataclass(frozen=True)
class StackEntry:
    """One drawn group: its summed histogram and √Σw² inputs."""

    group: GroupInfo
    values: FloatArray
    sumw2: FloatArray
    stacked: bool = True


@dataclass(frozen=True)
class PlotInputs:
    """Everything one figure draws, for all channels or one of them."""

    edges: FloatArray
    data: FloatArray
    entries: tuple[StackEntry, ...] = ()
    data_label: str | None = "Data"
    """The legend of the data points: ``Pseudo-data`` for generated data; None draws none (MC only)."""

    @property
    def stacked_total(self) -> FloatArray:
        return sum((e.values for e in self.entries if e.stacked), np.zeros(self.edges.size - 1))

    @property
    def stacked_sumw2(self) -> FloatArray:
        return sum((e.sumw2 for e in self.entries if e.stacked), np.zeros(self.edges.size - 1))


def _groups(results: RunResults) -> list[GroupInfo]:
    groups = list(results.groups)
    known = {g.id for g in groups}
    if any((s.group or "") not in known for s in results.samples.values()):
        groups.append(OTHER_GROUP)
    return groups


def plot_inputs(
    results: RunResults, channel: str | None = None, stacked_groups: Sequence[str] | None = None
) -> PlotInputs:
    """Per-group sums of the samples (backgrounds first, signal on top) and the data histogram."""

    def histogram(source: Histogram, channels: dict[str, Histogram]) -> list[Histogram]:
        return [source if channel is None else channels[channel]]

    return _stack_inputs(results, results.bin_edges, histogram(results.data.m4l, results.data.channels),
                         lambda sample: histogram(sample.m4l, sample.channels), stacked_groups)


def control_inputs(results: RunResults, axis: ControlAxis, channel: str | None = None,
                   stacked_groups: Sequence[str] | None = None) -> PlotInputs:
    """:func:`plot_inputs` of one control distribution, for one channel or all of them summed."""

    def histograms(by_channel: dict[str, Histogram]) -> list[Histogram]:
        return [by_channel[c] for c in results.channels if channel is None or c == channel]

    return _stack_inputs(results, axis.bin_edges, histograms(results.data.controls[axis.name]),
                         lambda sample: histograms(sample.controls[axis.name]), stacked_groups)


def _stack_inputs(results: RunResults, bin_edges: Sequence[float], data_histograms: list[Histogram],
                  sample_histograms: Callable[[SampleYields], list[Histogram]],
                  stacked_groups: Sequence[str] | None) -> PlotInputs:
    """The drawn groups of ``sample_histograms`` (summed) and the data of ``data_histograms`` (summed)."""
    edges = np.asarray(bin_edges, dtype=np.float64)
    nbins = edges.size - 1
    groups = _groups(results)
    known = {g.id for g in groups}
    # Backgrounds at the bottom of the stack and signal on top, each in catalog order.
    groups.sort(key=lambda g: g.kind == "signal")

    data = np.zeros(nbins)
    for histogram in data_histograms:
        data = data + np.asarray(histogram.values, dtype=np.float64)
    entries = []
    for group in groups:
        members = [s for s in results.samples.values() if (s.group if s.group in known else OTHER_GROUP_ID) == group.id]
        if not members:
            # A group none of whose samples was run is not drawn: a legend entry for nothing misleads.
            continue
        values, sumw2 = np.zeros(nbins), np.zeros(nbins)
        for sample in members:
            for src in sample_histograms(sample):
                values = values + np.asarray(src.values, dtype=np.float64)
                sumw2 = sumw2 + np.asarray(src.variances, dtype=np.float64)
        stacked = stacked_groups is None or group.id in stacked_groups
        entries.append(StackEntry(group=group, values=values, sumw2=sumw2, stacked=stacked))
    label = data_name(results)
    return PlotInputs(edges=edges, data=data, entries=tuple(entries),
                      data_label=label[0].upper() + label[1:] if label else None)


def _bin_width_label(edges: FloatArray, unit: str = "GeV") -> str:
    widths = np.diff(edges)
    if np.allclose(widths, widths[0]):
        return f"Events / {widths[0]:.3g} {unit}".rstrip()
    return "Events / bin"


class _NoRadicalWarning(logging.Filter):
    """Drops the PDF backend's harmless note about the √ glyph of mplhep's √s label."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "__radical" not in record.getMessage()


logging.getLogger("matplotlib.mathtext").addFilter(_NoRadicalWarning())


def _style() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.style
    import mplhep

    # A fixed title height spares each titled axes a search of its decorations' extent (~10 % of a
    # fit figure); nothing in these figures sits above an axes, so the title lands where it did.
    return matplotlib.style.context([mplhep.style.ATLAS, {"axes.formatter.use_mathtext": False, "axes.titley": 1.0}])


M4L_LABEL = r"$m_{4\ell}$ [GeV]"


def _draw_main(ax: Axes, inputs: PlotInputs, xlabel: str | None = M4L_LABEL, unit: str = "GeV",
               legend: bool = True, headroom: float = 1.6) -> None:
    """Stack, MC stat band, unstacked overlays and data points on ``ax``; the y range leaves
    ``headroom`` times the tallest bin for labels and legend."""
    edges = inputs.edges
    bottom = np.zeros(edges.size - 1)
    for entry in inputs.entries:
        if not entry.stacked:
            continue
        ax.stairs(bottom + entry.values, edges, baseline=bottom, fill=True,
                  color=entry.group.color, label=entry.group.label, linewidth=0)
        bottom = bottom + entry.values
    total, err = inputs.stacked_total, np.sqrt(inputs.stacked_sumw2)
    if any(entry.stacked for entry in inputs.entries):
        ax.stairs(total + err, edges, baseline=total - err, fill=True, facecolor="none",
                  edgecolor="0.35", hatch="////", linewidth=0, label="Stat. Unc.")
    for entry in inputs.entries:
        if not entry.stacked:
            ax.stairs(entry.values, edges, color=entry.group.color, linewidth=2,
                      label=entry.group.label)
    _draw_data(ax, inputs)
    top = max(float(np.max(total + err, initial=0.0)),
              float(np.max(inputs.data + np.sqrt(inputs.data), initial=0.0)), 1.0)
    # Room above the tallest bin for the labels (left) and the legend (right).
    ax.set_ylim(0.0, top * headroom)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylabel(_bin_width_label(edges, unit))
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if legend:
        ax.legend(loc="upper right", frameon=False, fontsize="small")


def _draw_data(ax: Axes, inputs: PlotInputs) -> None:
    if inputs.data_label is None:
        return
    centres = 0.5 * (inputs.edges[:-1] + inputs.edges[1:])
    # Empty bins get no marker: a point at zero with no error bar reads as a measurement.
    filled = inputs.data > 0
    ax.errorbar(centres[filled], inputs.data[filled], yerr=np.sqrt(inputs.data[filled]),
                fmt="o", color="black", markersize=5, capsize=0, label=inputs.data_label)


def _labels(ax: Axes, results: RunResults, process: str) -> None:
    import mplhep

    # Only ATLAS data is "data" to the label; generated pseudo-data and MC alone are simulation.
    mplhep.atlas.label(text="Open Data", ax=ax, data=results.data.kind == "real", lumi=f"{results.luminosity_fb:g}",
                       com=13, loc=4, fontsize="medium")
    ax.text(0.045, 0.83, "for education", transform=ax.transAxes, fontsize="small",
            style="italic", va="top")
    ax.text(0.045, 0.76, process, transform=ax.transAxes, fontsize="medium", va="top")


def _stamp(fig: Figure, results: RunResults) -> None:
    if not results.partial:
        return
    fig.text(0.5, 0.5, PARTIAL_STAMP, ha="center", va="center", rotation=25, fontsize=72,
             color="red", alpha=0.3, weight="bold", gid="partial-stamp", zorder=100)
    fig.text(0.99, 0.01, "PARTIAL: some chunks failed; yields are incomplete", ha="right",
             va="bottom", color="red", fontsize="small", gid="partial-note")


def _figure(results: RunResults, inputs: PlotInputs, process: str) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 6.5))
    ax = fig.add_subplot()
    _draw_main(ax, inputs)
    _labels(ax, results, process)
    _stamp(fig, results)
    return fig


def _ratio_figure(results: RunResults, inputs: PlotInputs) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 8.0))
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.05)
    ax = fig.add_subplot(grid[0])
    rax = fig.add_subplot(grid[1], sharex=ax)
    _draw_main(ax, inputs, xlabel=None)
    ax.tick_params(labelbottom=False)
    _labels(ax, results, r"$H \rightarrow ZZ^{*} \rightarrow 4\ell$")

    edges, total = inputs.edges, inputs.stacked_total
    err = np.sqrt(inputs.stacked_sumw2)
    has_mc = total > 0
    safe = np.where(has_mc, total, 1.0)
    rel = np.where(has_mc, err / safe, 0.0)
    rax.stairs(np.where(has_mc, 1 + rel, np.nan), edges, baseline=np.where(has_mc, 1 - rel, np.nan),
               fill=True, facecolor="none", edgecolor="0.35", hatch="////", linewidth=0)
    centres = 0.5 * (edges[:-1] + edges[1:])
    show = has_mc & (inputs.data > 0)
    rax.errorbar(centres[show], inputs.data[show] / safe[show],
                 yerr=np.sqrt(inputs.data[show]) / safe[show], fmt="o", color="black",
                 markersize=5, capsize=0)
    rax.axhline(1.0, color="0.3", linestyle="--", linewidth=1)
    rax.set_ylim(0.0, 2.5)
    rax.set_ylabel(f"{inputs.data_label or 'Data'} / MC")
    rax.set_xlabel(M4L_LABEL)
    _stamp(fig, results)
    return fig


CONTROLS_STEM = "controls"
CONTROLS_CHANNELS_STEM = "controls_channels"
CONTROLS_BY_CHANNEL = ("m_z1", "m_z2")
"""The control distributions drawn per channel: the Z masses differ between 4e, 4μ and 2e2μ."""


def _controls_figure(results: RunResults, stacked_groups: Sequence[str] | None) -> Figure:
    """Every control distribution, all channels summed: the Z masses and the legend on the first
    row, then one row per lepton quantity."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16.0, 13.0))
    grid = fig.add_gridspec(4, 4, hspace=0.35, wspace=0.3, left=0.06, right=0.98, top=0.97, bottom=0.06)
    slots = [(0, 0), (0, 1), *((1 + j // 4, j % 4) for j in range(len(results.controls) - 2))]
    last = None
    for axis, (row, col) in zip(results.controls, slots, strict=False):
        ax = fig.add_subplot(grid[row, col])
        last = control_inputs(results, axis, None, stacked_groups)
        _draw_main(ax, last, xlabel=axis.label, unit=axis.unit, legend=False, headroom=1.3)
        _few_ticks(ax)
    key = fig.add_subplot(grid[0, 2:])
    key.axis("off")
    if last is not None:
        _key(key, results, fig.axes[0], columns=2)
    _stamp(fig, results)
    return fig


def _few_ticks(ax: Axes) -> None:
    """No minor ticks on a grid's small panels: making the ATLAS style's dense ticks is most of a
    grid's drawing time, and they are unreadable at that size anyway."""
    ax.minorticks_off()
    ax.locator_params(nbins=5)


def _key(ax: Axes, results: RunResults, source: Axes, columns: int) -> None:
    """The ATLAS label, the process and the legend of ``source``'s entries, on an empty panel."""
    import mplhep

    mplhep.atlas.label(text="Open Data", ax=ax, data=results.data.kind == "real", lumi=f"{results.luminosity_fb:g}",
                       com=13, loc=4, fontsize="medium")
    ax.text(0.02, 0.7, r"$H \rightarrow ZZ^{*} \rightarrow 4\ell$, selected events", transform=ax.transAxes,
            fontsize="medium", va="top")
    handles, labels = source.get_legend_handles_labels()
    ax.legend(handles, labels, loc="lower left", frameon=False, ncols=columns, fontsize="small")


def _controls_channels_figure(results: RunResults, stacked_groups: Sequence[str] | None) -> Figure:
    """The Z masses per channel: one row per channel."""
    from matplotlib.figure import Figure

    shown = [axis for axis in results.controls if axis.name in CONTROLS_BY_CHANNEL]
    fig = Figure(figsize=(5.0 * len(shown) + 5.0, 4.0 * len(results.channels)))
    grid = fig.add_gridspec(len(results.channels), len(shown) + 1, hspace=0.35, wspace=0.3, left=0.08,
                            right=0.98, top=0.97, bottom=0.07)
    for row, channel in enumerate(results.channels):
        for col, axis in enumerate(shown):
            ax = fig.add_subplot(grid[row, col])
            _draw_main(ax, control_inputs(results, axis, channel, stacked_groups), xlabel=axis.label,
                       unit=axis.unit, legend=False, headroom=1.3)
            _few_ticks(ax)
            ax.text(0.05, 0.93, rf"${CHANNEL_TITLES.get(channel, channel)}$", transform=ax.transAxes,
                    fontsize="large", va="top")
    key = fig.add_subplot(grid[0, len(shown)])
    key.axis("off")
    if shown:
        _key(key, results, fig.axes[0], columns=1)
    _stamp(fig, results)
    return fig


def figure_stems(channels: Sequence[str]) -> tuple[str, ...]:
    """The file stems of a run's figures, in the order they are listed in ``outputs``."""
    return ("m4l", *(f"m4l_{channel}" for channel in channels), "m4l_ratio", CONTROLS_STEM, CONTROLS_CHANNELS_STEM)


def build_figure(results: RunResults, stem: str, stacked_groups: Sequence[str] | None = None) -> Figure | None:
    """One of the run's figures (see ``figure_stems``), not yet saved; call inside ``_style()``.
    None for the ratio when there is no MC or no data to divide, and for the control grids of
    results without control distributions."""
    if stem in {CONTROLS_STEM, CONTROLS_CHANNELS_STEM}:
        if not results.controls:
            return None
        draw = _controls_figure if stem == CONTROLS_STEM else _controls_channels_figure
        return draw(results, stacked_groups)
    if stem == "m4l_ratio":
        ratio_inputs = plot_inputs(results, None, stacked_groups)
        if not ratio_inputs.entries or ratio_inputs.data_label is None:
            return None
        return _ratio_figure(results, ratio_inputs)
    if stem == "m4l":
        return _figure(results, plot_inputs(results, None, stacked_groups), r"$H \rightarrow ZZ^{*} \rightarrow 4\ell$")
    channel = stem.removeprefix("m4l_")
    if stem == channel or channel not in results.channels:
        raise ValueError(f"no figure named {stem!r}")
    title = CHANNEL_TITLES.get(channel, channel)
    return _figure(results, plot_inputs(results, channel, stacked_groups),
                   rf"$H \rightarrow ZZ^{{*}} \rightarrow {title}$")


def build_figures(results: RunResults, stacked_groups: Sequence[str] | None = None) -> dict[str, Figure]:
    """The run's figures by file stem (``m4l``, ``m4l_4e``, …, ``m4l_ratio``), not yet saved."""
    with _style():
        figures = {stem: build_figure(results, stem, stacked_groups) for stem in figure_stems(results.channels)}
    return {stem: figure for stem, figure in figures.items() if figure is not None}


def figure_formats(pdf: bool) -> tuple[str, ...]:
    """The file formats of a run's figures: PNG, and PDF when the run asks for it (``--pdf``)."""
    return ("png", "pdf") if pdf else ("png",)


def draw_figure(results: RunResults, stem: str, run_dir: Path, stacked_groups: Sequence[str] | None = None,
                formats: Sequence[str] = ("png",)) -> dict[str, str]:
    """Write one figure in each of ``formats`` into ``run_dir``; returns ``{"m4l_png": "m4l.png", …}``.

    Each file is written under a temporary name and renamed when whole, so the web server never
    serves half an image and a failure (a full disk) leaves no debris.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    run_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, str] = {}
    with _style():
        fig = build_figure(results, stem, stacked_groups)
        if fig is None:
            return outputs
        FigureCanvasAgg(fig)
        # Fixed margins fit the ATLAS-style labels; bbox_inches="tight" would draw every figure twice.
        fig.subplots_adjust(left=0.13, right=0.97, top=0.97, bottom=0.11)
        for ext in formats:
            name = f"{stem}.{ext}"
            with replacing(run_dir / name) as tmp:
                fig.savefig(tmp, format=ext, dpi=110)
            outputs[f"{stem}_{ext}"] = name
    return outputs


def draw_all(results: RunResults, run_dir: Path, stacked_groups: Sequence[str] | None = None,
             formats: Sequence[str] = ("png",)) -> dict[str, str]:
    """Write every figure in each of ``formats`` into ``run_dir``; returns ``{"m4l_png": "m4l.png", …}``."""
    outputs: dict[str, str] = {}
    for stem in figure_stems(results.channels):
        outputs.update(draw_figure(results, stem, run_dir, stacked_groups, formats))
    log.debug("run %s: %d figure file(s) written into %s", results.run_id, len(outputs), run_dir)
    return outputs
