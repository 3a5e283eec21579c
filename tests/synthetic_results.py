"""Synthetic ``RunResults`` (the results.json of docs/CONTRACTS.md) for the statistics, plotting,
web and browser tests: a 2020-like run with Gaussian signal and falling backgrounds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from atlaspipe.config import analysis_config
from atlaspipe.model import (
    ChunkSummary,
    DataCounts,
    DataSummary,
    Failure,
    GroupInfo,
    Histogram,
    PlannedFile,
    RunResults,
    SampleLoss,
    SampleYields,
)
from atlaspipe.physics.catalog import load_release

CHANNEL_FRACTIONS = {"4e": 0.25, "4mu": 0.35, "2e2mu": 0.40}
LOST_CHUNK = Failure(chunk_id=7, sample="llll", source="/data/mc_363490.llll.4lep.root", entry_start=0,
                     entry_stop=500_000, reason="InputError: branch 'lep_pt' is not jagged")


def histogram(values: Sequence[float], variances: Sequence[float] | None = None, underflow: float = 0.0,
              overflow: float = 0.0) -> Histogram:
    """In-range bins; counts (variance = value) unless ``variances`` are given."""
    values = [float(v) for v in values]
    return Histogram(values=tuple(values), variances=tuple(float(v) for v in (variances or values)),
                     underflow=underflow, overflow=overflow, underflow_variance=underflow,
                     overflow_variance=overflow)


def _sample_entry(group: str, kind: str, hist: np.ndarray, rel_stat: float) -> SampleYields:
    sumw2 = (rel_stat * hist) ** 2
    return SampleYields(
        group=group, kind=kind, events_read=10000, events_selected=500, normalisation=1e-3,
        expected=float(hist.sum()), expected_uncertainty=float(np.sqrt(sumw2.sum())),
        m4l=histogram(hist.tolist(), sumw2.tolist()),
        channels={ch: histogram((f * hist).tolist(), (f * sumw2).tolist()) for ch, f in CHANNEL_FRACTIONS.items()},
    )


def with_data(results: RunResults, values: Sequence[float]) -> RunResults:
    """``results`` with other data counts (all channels; the per-channel ones kept)."""
    data = results.data.model_copy(update={"m4l": histogram(values)})
    return results.model_copy(update={"data": data})


def with_samples(results: RunResults, samples: dict[str, SampleYields]) -> RunResults:
    return results.model_copy(update={"samples": samples})


def with_sample_values(results: RunResults, change: dict[str, Sequence[float]]) -> RunResults:
    """``results`` with the all-channel m4l values of some samples replaced (variances kept)."""
    samples = dict(results.samples)
    for name, values in change.items():
        old = samples[name].m4l
        samples[name] = samples[name].model_copy(
            update={"m4l": old.model_copy(update={"values": tuple(float(v) for v in values)})})
    return with_samples(results, samples)


def make_results(status: str = "complete", run_id: str = "run-test", data_scale: float = 1.0) -> RunResults:
    """Results shaped like the 2020 analysis: 80-250 GeV in 5 GeV bins.

    A partial run lost one chunk of ``llll``, listed in ``chunks.failed`` and ``missing``.
    """
    config = analysis_config("2020")
    edges = np.asarray(config.bin_edges())
    assert np.allclose(edges, np.arange(80.0, 250.0 + 1e-9, 5.0))
    centres = 0.5 * (edges[:-1] + edges[1:])
    release = load_release("2020")
    shapes = {
        "Zee": 8.0 * np.exp(-(centres - 80.0) / 25.0),
        "Zmumu": 10.0 * np.exp(-(centres - 80.0) / 25.0),
        "ttbar_lep": np.full(centres.size, 0.8),
        "llll": 4.0 + 20.0 * np.exp(-0.5 * ((centres - 91.0) / 4.0) ** 2)
        + 8.0 * np.exp(-0.5 * ((centres - 200.0) / 30.0) ** 2),
        "ggH125_ZZ4lep": 8.6 * gauss_fractions(edges, 125.0, 2.0),
        "VBFH125_ZZ4lep": 0.77 * gauss_fractions(edges, 125.0, 2.0),
        "WH125_ZZ4lep": 0.22 * gauss_fractions(edges, 125.0, 2.0),
        "ZH125_ZZ4lep": 0.0015 * gauss_fractions(edges, 125.0, 2.0),
    }
    samples = {}
    for s in release.samples:
        if s.kind != "mc":
            continue
        kind = release.group(s.group or "").kind
        samples[s.name] = _sample_entry(s.group or "", kind, shapes[s.name], 0.05)
    expected = sum(np.asarray(v.m4l.values) for v in samples.values())
    data = np.round(expected * data_scale + 0.4 * np.sin(centres)).clip(0.0)
    partial = status == "partial"
    return RunResults(
        run_id=run_id, status="partial" if partial else "complete", release="2020", luminosity_fb=10.0,
        bin_edges=tuple(edges.tolist()), channels=tuple(CHANNEL_FRACTIONS),
        groups=tuple(GroupInfo(id=g.id, label=g.label, text=g.text, color=g.color, kind=g.kind,
                               samples=tuple(s.name for s in release.samples if s.group == g.id))
                     for g in release.groups),
        data=DataSummary(
            events_read=100000, events_selected=int(data.sum()) + 3, events_in_range=int(data.sum()),
            m4l=histogram(data.tolist(), underflow=1.0, overflow=2.0),
            channels={ch: histogram(np.round(data * f).tolist()) for ch, f in CHANNEL_FRACTIONS.items()},
            samples={"data_A": DataCounts(events_read=100000, events_selected=int(data.sum()))},
        ),
        samples=samples,
        inputs=(PlannedFile(release="2020", sample="data_A", source="/data/data_A.4lep.root", tree="mini",
                            entries=100000, size_bytes=1234567),),
        chunks=ChunkSummary(total=12, failed=(LOST_CHUNK,) if partial else ()),
        missing={"llll": SampleLoss(chunks_failed=1, files_failed=0, events_lost=500_000, fraction_lost=0.25)}
        if partial else {},
        config=config,
    )


def gauss_fractions(edges: np.ndarray, mean: float, sigma: float) -> np.ndarray:
    cdf = np.array([0.5 * (1.0 + math.erf((e - mean) / (sigma * math.sqrt(2.0)))) for e in edges])
    return np.diff(cdf)


