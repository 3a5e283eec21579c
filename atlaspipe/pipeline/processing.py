"""The ``process`` and ``aggregate`` stages as plain functions over the run model.

They know nothing of how they are run: ``atlaspipe run`` calls them in one process, the Celery
tasks call the same functions on workers, both through ``atlaspipe.pipeline.lifecycle``. Results
cross process boundaries as the typed documents of ``atlaspipe.model``, holding small histograms,
never per-event arrays.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import awkward as ak
import numpy as np
import numpy.typing as npt

from atlaspipe.config import AnalysisConfig
from atlaspipe.errors import AtlaspipeError, InputError
from atlaspipe.model import M4L, Aggregate, Chunk, ChunkResult, Counts, Cutflow, Failure, RunPlan, SampleAggregate
from atlaspipe.physics.catalog import load_release
from atlaspipe.physics.channels import CHANNELS
from atlaspipe.physics.selection import (
    CONTROL_VARIABLES,
    JAGGED_BRANCHES,
    SelectedEvents,
    SelectionOptions,
    analyse,
    control_values,
    cutflow,
    required_branches,
)

if TYPE_CHECKING:
    import hist

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]


def selection_options(config: AnalysisConfig) -> SelectionOptions:
    """The cuts a run's configuration asks for."""
    return SelectionOptions(lepton_pt_gev=config.lepton_pt_gev, sfos_pairing=config.sfos_pairing,
                            lepton_order=config.lepton_order)


def histogram_arrays(selected: SelectedEvents, edges: list[float]) -> tuple[FloatArray, FloatArray]:
    """Sum of weights and of squared weights of m4l per (channel, bin), flow bins included; one fill per chunk."""
    import hist

    return _channel_histogram(hist.axis.Variable(edges), selected.m4l_gev, selected.channel, selected.weight)


def control_arrays(selected: SelectedEvents) -> dict[str, tuple[FloatArray, FloatArray]]:
    """:func:`histogram_arrays` of each control distribution, by name. An event whose value is NaN
    (no Z candidates) is not filled: hist would count it in the overflow bin.

    One histogram of (variable, bin with flow, channel) holds them all, filled variable by variable
    with each value's bin from that variable's regular axis: building and reading one histogram
    instead of fourteen was most of a small chunk's cost (1.2 → 0.6 ms for a one-event chunk; +25%
    on a 500k-event chunk's 70 ms, and no more memory). Each bin receives the same values in the
    same order as a fill of its variable alone, so the sums are bit-identical to that.
    """
    import hist

    by_name = control_values(selected)
    width = max(v.bins for v in CONTROL_VARIABLES) + 2
    histogram = hist.Hist(hist.axis.Integer(0, len(CONTROL_VARIABLES), underflow=False, overflow=False),
                          hist.axis.Integer(0, width, underflow=False, overflow=False),
                          hist.axis.Integer(0, len(CHANNELS), underflow=False, overflow=False),
                          storage=hist.storage.Weight())
    for index, (variable, axis) in enumerate(zip(CONTROL_VARIABLES, _control_axes(), strict=True)):
        values = by_name[variable.name]
        defined = ~np.isnan(values)
        channel, weight = selected.channel, selected.weight
        if not defined.all():
            values, channel, weight = values[defined], channel[defined], weight[defined]
        # The axis's own bin (-1 underflow, ``bins`` overflow), shifted so the flow bins are 0 and
        # bins+1. (boost-histogram's stubs declare one value; the axis takes arrays.)
        bins = np.asarray(axis.index(cast(Any, values)), dtype=np.int64) + 1
        histogram.fill(index, bins, channel, weight=weight)
    view = histogram.view()
    return {variable.name: (np.ascontiguousarray(view.value[index, : variable.bins + 2].T, dtype=np.float64),
                            np.ascontiguousarray(view.variance[index, : variable.bins + 2].T, dtype=np.float64))
            for index, variable in enumerate(CONTROL_VARIABLES)}


@functools.cache
def _control_axes() -> tuple[hist.axis.Regular, ...]:
    import hist

    # A regular axis finds a bin several times faster than the same edges as a variable axis.
    return tuple(hist.axis.Regular(variable.bins, variable.lo, variable.hi) for variable in CONTROL_VARIABLES)


def _channel_histogram(axis: hist.axis.Regular | hist.axis.Variable, values: FloatArray, channel: npt.NDArray[np.int64],
                       weight: FloatArray) -> tuple[FloatArray, FloatArray]:
    import hist

    histogram = hist.Hist(axis, hist.axis.Integer(0, len(CHANNELS), underflow=False, overflow=False),
                          storage=hist.storage.Weight())
    histogram.fill(values, channel, weight=weight)
    view = histogram.view(flow=True)
    sumw = np.ascontiguousarray(view.value.T, dtype=np.float64)
    sumw2 = np.ascontiguousarray(view.variance.T, dtype=np.float64)
    return sumw, sumw2


def _counts(sumw: FloatArray, sumw2: FloatArray) -> Counts:
    return Counts(sumw=tuple(tuple(row) for row in sumw.tolist()), sumw2=tuple(tuple(row) for row in sumw2.tolist()))


KINEMATIC_BRANCHES = frozenset({"lep_pt", "lep_eta", "lep_phi", "lep_E", "lep_e"})
"""The lepton branches the four-lepton mass is computed from."""


def _non_finite_branches(branches: list[str], is_mc: bool) -> list[str]:
    kinematic = [b for b in branches if b in KINEMATIC_BRANCHES]
    return kinematic + ([b for b in branches if b not in JAGGED_BRANCHES] if is_mc else [])


def _all_finite(values: ak.Array) -> bool:
    """A quick look at the whole buffer; False may also come from values outside the events."""
    layout = ak.to_layout(values)
    while isinstance(layout, ak.contents.ListOffsetArray | ak.contents.ListArray):
        layout = layout.content
    if not isinstance(layout, ak.contents.NumpyArray):
        return False
    data = np.asarray(layout.data)
    return not np.issubdtype(data.dtype, np.floating) or bool(np.isfinite(data).all())


def non_finite_events(chunk: Chunk, events: ak.Array, branches: list[str], policy: str) -> npt.NDArray[np.bool_] | None:
    """Events with a NaN or infinite value in a kinematic (or, for MC, weight) branch; None when
    there are none. A non-finite mass lands in the overflow bin and a non-finite weight poisons a
    whole histogram, so such events never reach them. With ``policy="error"`` they are an InputError
    naming the branch and the first entry."""
    bad: npt.NDArray[np.bool_] | None = None
    for name in branches:
        values = events[name]
        if _all_finite(values):
            continue
        finite = np.isfinite(values)
        here = np.asarray(~ak.all(finite, axis=1) if values.ndim > 1 else ~finite, dtype=bool)
        if not here.any():
            continue
        if policy == "error":
            entry = chunk.entry_start + int(np.flatnonzero(here)[0])
            raise InputError(chunk.source, f"entry {entry} holds a non-finite value (NaN or inf); set "
                             "non_finite = \"exclude\" to leave such events out", field=name)
        bad = here if bad is None else bad | here
    return bad


def failure_reason(exc: AtlaspipeError, chunk: Chunk) -> str:
    """What went wrong, without the file: the chunk's failure line names the file and range itself."""
    if isinstance(exc, InputError) and exc.source == chunk.source:
        return f"branch '{exc.field}': {exc.reason}" if exc.field else exc.reason
    text = str(exc)
    prefix = f"{chunk.source}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def process_chunk(chunk: Chunk, config: AnalysisConfig, worker: str,
                  passthrough: tuple[type[BaseException], ...] = ()) -> ChunkResult:
    """Read, select and histogram one chunk. Whatever a file makes the libraries raise becomes a
    failed result naming the reason, never a lost chunk; ``passthrough`` exceptions (an executor's
    own, such as a time limit) are raised as they are."""
    started = time.perf_counter()
    try:
        from atlaspipe.io.reading import read_chunk

        release = load_release(chunk.release)
        sample = config.sample(chunk.sample)
        branches = required_branches(release.schema, not sample.is_data)
        events, bytes_read = read_chunk(chunk, branches)
        events_read = len(events)
        bad = non_finite_events(chunk, events, _non_finite_branches(branches, not sample.is_data), config.non_finite)
        excluded = 0 if bad is None else int(bad.sum())
        if bad is not None:
            events = events[~bad]
        selected = analyse(events, release.schema, not sample.is_data, release.to_gev, selection_options(config))
        sumw, sumw2 = histogram_arrays(selected, config.bin_edges())
        controls = control_arrays(selected)
        cuts = cutflow(events, release.schema, not sample.is_data, release.to_gev, selection_options(config),
                       config.mass_window_gev, selected=selected)
    except passthrough:
        raise
    except AtlaspipeError as exc:
        return ChunkResult.failed(chunk, failure_reason(exc, chunk), worker, time.perf_counter() - started)
    except Exception as exc:
        log.exception("chunk %d %s: unexpected error", chunk.chunk_id, chunk.where)
        reason = f"unexpected error {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        return ChunkResult.failed(chunk, reason, worker, time.perf_counter() - started)
    return ChunkResult(
        chunk_id=chunk.chunk_id, sample=chunk.sample, worker=worker, seconds=time.perf_counter() - started,
        events_read=events_read, events_selected=len(selected), events_non_finite=excluded,
        bytes_read=bytes_read,
        histograms={M4L: _counts(sumw, sumw2), **{name: _counts(*arrays) for name, arrays in controls.items()}},
        cutflow=Cutflow(raw=tuple(tuple(r) for r in cuts.raw.tolist()),
                        weighted=tuple(tuple(r) for r in cuts.weighted.tolist())),
    )


class _SampleSums:
    """One sample's running sums while merging chunk results."""

    def __init__(self, shapes: Mapping[str, tuple[int, int]]) -> None:
        self.sumw = {name: np.zeros(shape) for name, shape in shapes.items()}
        self.sumw2 = {name: np.zeros(shape) for name, shape in shapes.items()}
        self.merged = dict.fromkeys(shapes, 0)
        self.events_read = self.events_selected = self.chunks = self.chunks_failed = 0
        self.entries_planned = self.events_lost = self.files_failed = self.events_non_finite = 0
        self.cutflow_raw: npt.NDArray[np.int64] | None = None
        self.cutflow_weighted: FloatArray | None = None
        self.cutflow_complete = True

    def add_histograms(self, histograms: Mapping[str, Counts]) -> None:
        """Add a chunk's histograms; its m4l must be there, a control distribution may be missing
        (a result from before it existed), and then the sample's sum of it is incomplete."""
        if M4L not in histograms:
            raise KeyError(M4L)
        for name, counts in histograms.items():
            if name in self.merged:
                self.sumw[name] += np.asarray(counts.sumw, dtype=np.float64)
                self.sumw2[name] += np.asarray(counts.sumw2, dtype=np.float64)
                self.merged[name] += 1

    def scaled_histograms(self, norm: float) -> dict[str, Counts]:
        """The histograms every merged chunk carried, scaled by ``norm``."""
        return {name: _counts(self.sumw[name] * norm, self.sumw2[name] * (norm * norm))
                for name, merged in self.merged.items() if merged == self.chunks}

    def add_cutflow(self, cuts: Cutflow | None) -> None:
        if cuts is None:
            self.cutflow_complete = False
            return
        raw, weighted = np.asarray(cuts.raw, dtype=np.int64), np.asarray(cuts.weighted, dtype=np.float64)
        if self.cutflow_raw is None or self.cutflow_weighted is None:
            self.cutflow_raw, self.cutflow_weighted = raw, weighted
        else:
            self.cutflow_raw = self.cutflow_raw + raw
            self.cutflow_weighted = self.cutflow_weighted + weighted

    def scaled_cutflow(self, norm: float) -> Cutflow | None:
        if not self.cutflow_complete or self.cutflow_raw is None or self.cutflow_weighted is None:
            return None
        return Cutflow(raw=tuple(tuple(r) for r in self.cutflow_raw.tolist()),
                       weighted=tuple(tuple(r) for r in (self.cutflow_weighted * norm).tolist()))


def aggregate(plan: RunPlan, results: Mapping[int, ChunkResult]) -> Aggregate:
    """Merge chunk histograms per sample in chunk-id order and scale them.

    The fixed merge order makes the sums bit-identical however many workers ran the chunks and
    in whatever order they finished. A chunk without a result, or with an error, is listed as
    failed, never silently dropped.
    """
    config = plan.config
    release = load_release(config.release)
    luminosity, warnings = release.run_luminosity([f.sample for f in plan.files], config.luminosity_fb,
                                                  [config.sample(d.name) for d in config.samples])
    for warning in warnings:
        log.warning("run %s: %s", plan.run_id, warning)
    shapes = {M4L: (len(CHANNELS), config.bins + 2),
              **{v.name: (len(CHANNELS), v.bins + 2) for v in CONTROL_VARIABLES}}
    sums: dict[str, _SampleSums] = {}
    failures: list[Failure] = []
    for planned in plan.files:
        if planned.error:
            sums.setdefault(planned.sample, _SampleSums(shapes)).files_failed += 1
            failures.append(Failure.of_file(planned))
    for chunk in sorted(plan.chunks, key=lambda c: c.chunk_id):
        entry = sums.setdefault(chunk.sample, _SampleSums(shapes))
        entry.entries_planned += chunk.num_entries
        result = results.get(chunk.chunk_id)
        if result is None or not result.ok:
            entry.chunks_failed += 1
            entry.events_lost += chunk.num_entries
            reason = result.error if result is not None else "no result (chunk never finished)"
            failures.append(Failure.of_chunk(chunk, reason or ""))
            continue
        entry.add_histograms(result.histograms)
        entry.events_read += result.events_read
        entry.events_selected += result.events_selected
        entry.events_non_finite += result.events_non_finite
        entry.add_cutflow(result.cutflow)
        entry.chunks += 1
    samples: dict[str, SampleAggregate] = {}
    for name, entry in sums.items():
        sample = config.sample(name)
        norm = release.normalisation(sample, luminosity)
        samples[name] = SampleAggregate(
            kind=sample.kind, group=sample.group, normalisation=norm, events_read=entry.events_read,
            events_selected=entry.events_selected, chunks=entry.chunks, chunks_failed=entry.chunks_failed,
            entries_planned=entry.entries_planned, events_lost=entry.events_lost, files_failed=entry.files_failed,
            events_non_finite=entry.events_non_finite,
            histograms=entry.scaled_histograms(norm),
            cutflow=entry.scaled_cutflow(norm),
        )
    return Aggregate(run_id=plan.run_id, release=release.name, luminosity_fb=luminosity,
                     bin_edges=tuple(config.bin_edges()), samples=samples, chunks_total=len(plan.chunks),
                     failures=tuple(failures), warnings=tuple(warnings))
