"""A run's numbers in the formats of the HEP toolchain: a pyhf workspace and histogram files.

- ``workspace.json``: the exact HistFactory model the fit used, with the observed counts and the
  μ bounds, so ``pyhf fit workspace.json`` or cabinetry refit it without atlaspipe.
- ``histograms.root``: one TH1D (with Σw² and the flow bins) per sample, group and data, for each
  channel and all channels summed, written with uproot.
- ``histograms.json``: the same histograms in the UHI serialisation (``uhi.io.json``), which
  ``hist.Hist(...)`` reads back.

The histograms share one naming, ``<channel>/data``, ``<channel>/samples/<sample>`` and
``<channel>/groups/<group>``, with ``<channel>`` one of ``all``, ``4e``, ``4mu`` and ``2e2mu``; the
control distributions of the data and the groups follow the same naming under ``controls/<variable>/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from atlaspipe.io import files
from atlaspipe.model import OTHER_GROUP_ID, ControlAxis, DataSummary, Histogram, RunResults, SampleYields
from atlaspipe.results.statistics import run_workspace

if TYPE_CHECKING:
    import hist

    WeightedHist = hist.Hist[hist.storage.Weight]

ALL_CHANNELS = "all"
"""The channel name of the histograms summed over the three channels."""

WORKSPACE = "workspace.json"
HISTOGRAMS_ROOT = "histograms.root"
HISTOGRAMS_JSON = "histograms.json"


def _weighted(histograms: list[Histogram], bin_edges: tuple[float, ...], name: str) -> WeightedHist:
    """The bin-by-bin sum of ``histograms`` (in the order given) as one hist.Hist with Weight storage."""
    first, *rest = histograms
    total = first.to_hist(bin_edges)
    for other in rest:
        total = total + other.to_hist(bin_edges)
    total.name = name
    return total


def sample_histograms(results: RunResults) -> dict[str, dict[str, WeightedHist]]:
    """The m4l histogram of the data (``"data"``) and of each MC sample, by channel (and ``"all"``)."""
    edges = results.bin_edges
    summaries: dict[str, DataSummary | SampleYields] = {"data": results.data, **results.samples}
    return {
        name: {ALL_CHANNELS: _weighted([summary.m4l], edges, name),
               **{c: _weighted([summary.channels[c]], edges, name) for c in results.channels}}
        for name, summary in summaries.items()
    }


def run_histograms(results: RunResults) -> dict[str, WeightedHist]:
    """Every m4l histogram of the run by path: data, each MC sample and each group, per channel."""
    edges = results.bin_edges
    groups: dict[str, list[str]] = {}
    for name, sample in results.samples.items():
        groups.setdefault(sample.group or OTHER_GROUP_ID, []).append(name)
    by_sample = sample_histograms(results)
    out: dict[str, WeightedHist] = {}
    for channel in (ALL_CHANNELS, *results.channels):
        def of(summary: DataSummary | SampleYields, channel: str = channel) -> Histogram:
            return summary.m4l if channel == ALL_CHANNELS else summary.channels[channel]

        out[f"{channel}/data"] = by_sample["data"][channel]
        for name in results.samples:
            out[f"{channel}/samples/{name}"] = by_sample[name][channel]
        for group, members in groups.items():
            out[f"{channel}/groups/{group}"] = _weighted([of(results.samples[m]) for m in members], edges, group)
    return out


CONTROLS = "controls"
"""The folder of the control distributions' histograms: ``controls/<variable>/<channel>/...``."""


def control_histograms(results: RunResults) -> dict[str, WeightedHist]:
    """Every control distribution of the data and of each group (the drawn histograms), named like
    :func:`run_histograms` under ``controls/<variable>/``; results.json has them per sample too."""
    groups: dict[str, list[str]] = {}
    for name, sample in results.samples.items():
        groups.setdefault(sample.group or OTHER_GROUP_ID, []).append(name)
    out: dict[str, WeightedHist] = {}
    for axis in results.controls:
        def summed(parts: list[dict[str, Histogram]], channel: str, name: str,
                   axis: ControlAxis = axis) -> WeightedHist:
            chosen = [h for by_channel in parts for c, h in by_channel.items() if channel in {ALL_CHANNELS, c}]
            first, *rest = (h.to_hist(axis.bin_edges, axis.name, axis.label) for h in chosen)
            total = sum(rest, start=first)
            total.name = name
            return total

        for channel in (ALL_CHANNELS, *results.channels):
            prefix = f"{CONTROLS}/{axis.name}/{channel}"
            out[f"{prefix}/data"] = summed([results.data.controls[axis.name]], channel, "data")
            for group, members in groups.items():
                out[f"{prefix}/groups/{group}"] = summed(
                    [results.samples[m].controls[axis.name] for m in members], channel, group)
    return out


def write_root(histograms: dict[str, WeightedHist], path: Path) -> None:
    """Each histogram as a TH1D under its path (directories by channel), atomically."""
    import uproot

    with files.replacing(path) as tmp, uproot.recreate(tmp) as out:
        for key, histogram in histograms.items():
            out[key] = histogram


def uhi_json(histograms: dict[str, WeightedHist]) -> str:
    """The histograms in the UHI JSON serialisation, keyed by path."""
    import uhi.io.json

    return json.dumps(histograms, default=uhi.io.json.default, indent=1) + "\n"


def read_uhi_json(path: Path) -> dict[str, WeightedHist]:
    """``histograms.json`` read back into hist.Hist objects."""
    import hist as hist_module
    import uhi.io.json

    raw = json.loads(path.read_text("utf-8"), object_hook=uhi.io.json.object_hook)
    return {key: hist_module.Hist(value) for key, value in raw.items()}


def write_histograms(results: RunResults, run_dir: Path) -> dict[str, str]:
    """Write ``histograms.root`` and ``histograms.json`` into ``run_dir``; the written files by
    output kind, for results.json's ``outputs``. They need no fit, so a distributed run writes them
    in a piece of their own, beside the figures."""
    histograms = {**run_histograms(results), **control_histograms(results)}
    write_root(histograms, run_dir / HISTOGRAMS_ROOT)
    files.write_text(run_dir / HISTOGRAMS_JSON, uhi_json(histograms))
    return {"histograms_root": HISTOGRAMS_ROOT, "histograms_json": HISTOGRAMS_JSON}


def write_workspace(results: RunResults, run_dir: Path) -> dict[str, str]:
    """Write ``workspace.json`` into ``run_dir`` when the run has a fit (the fit decides its options)."""
    spec = run_workspace(results)
    if spec is None:
        return {}
    files.write_text(run_dir / WORKSPACE, json.dumps(spec, indent=1) + "\n")
    return {"workspace_json": WORKSPACE}
