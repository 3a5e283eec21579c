"""The documents of a finished run: ``results.json`` from the aggregate, and ``manifest.json``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib import metadata
from typing import Literal

import numpy as np

from atlaspipe.io.checksums import file_checksum
from atlaspipe.model import (
    M4L,
    Aggregate,
    ChunkSummary,
    ControlAxis,
    Counts,
    CutflowTable,
    DataCounts,
    DataSummary,
    Executor,
    GroupInfo,
    Histogram,
    InputRecord,
    Manifest,
    RunPlan,
    RunRequest,
    RunResults,
    RunStatus,
    SampleYields,
)
from atlaspipe.physics.catalog import Group, load_release
from atlaspipe.physics.channels import CHANNELS
from atlaspipe.physics.selection import CONTROL_VARIABLES, CUTFLOW_STEPS

log = logging.getLogger(__name__)


def _histogram(counts: Counts, channel: int | None = None) -> Histogram:
    """The m4l histogram of one channel, or of all channels summed."""
    sumw = np.asarray(counts.sumw, dtype=np.float64)
    sumw2 = np.asarray(counts.sumw2, dtype=np.float64)
    if channel is None:
        return Histogram.from_flow(sumw.sum(axis=0).tolist(), sumw2.sum(axis=0).tolist())
    return Histogram.from_flow(sumw[channel].tolist(), sumw2[channel].tolist())


def _by_channel(counts: Counts) -> dict[str, Histogram]:
    return {c: _histogram(counts, i) for i, c in enumerate(CHANNELS)}


def _data_counts(sumw: np.ndarray) -> Counts:
    """Data histograms count events: Σw² is Σw."""
    rows = tuple(tuple(r) for r in sumw.tolist())
    return Counts(sumw=rows, sumw2=rows)


def _group_info(group: Group, samples: Mapping[str, SampleYields]) -> GroupInfo:
    return GroupInfo(id=group.id, label=group.label, text=group.text, color=group.color, kind=group.kind,
                     samples=tuple(n for n, s in samples.items() if s.group == group.id))


def build_results(aggregated: Aggregate, plan: RunPlan) -> RunResults:
    """The ``results.json`` document, without statistics and outputs."""
    release = load_release(aggregated.release)
    config = plan.config
    samples: dict[str, SampleYields] = {}
    data_sumw = np.zeros((len(CHANNELS), config.bins + 2))
    data_samples: dict[str, DataCounts] = {}
    # A control distribution is reported only if every sample has it whole.
    controls = [v for v in CONTROL_VARIABLES if all(v.name in e.histograms for e in aggregated.samples.values())]
    data_controls = {v.name: np.zeros((len(CHANNELS), v.bins + 2)) for v in controls}
    for name, entry in aggregated.samples.items():
        counts = entry.histograms[M4L]
        if entry.kind == "data":
            data_sumw += np.asarray(counts.sumw, dtype=np.float64)
            for variable, summed in data_controls.items():
                np.add(summed, np.asarray(entry.histograms[variable].sumw, dtype=np.float64), out=summed)
            data_samples[name] = DataCounts(events_read=entry.events_read, events_selected=entry.events_selected,
                                            events_non_finite=entry.events_non_finite)
            continue
        total = _histogram(counts)
        samples[name] = SampleYields(
            group=entry.group, kind=release.group(entry.group or "").kind if entry.group else "background",
            events_read=entry.events_read, events_selected=entry.events_selected,
            events_non_finite=entry.events_non_finite, normalisation=entry.normalisation,
            expected=total.total, expected_uncertainty=total.uncertainty,
            m4l=total, channels=_by_channel(counts),
            controls={v.name: _by_channel(entry.histograms[v.name]) for v in controls},
        )
    data_counts = _data_counts(data_sumw)
    data_total = _histogram(data_counts)
    groups = release.stacked_groups(config.stacked_groups)
    return RunResults(
        run_id=plan.run_id, status="partial" if aggregated.failures else "complete", release=release.name,
        luminosity_fb=aggregated.luminosity_fb, bin_edges=aggregated.bin_edges,
        controls=tuple(ControlAxis(name=v.name, label=v.label, unit=v.unit, bin_edges=tuple(v.edges()))
                       for v in controls),
        groups=tuple(_group_info(g, samples) for g in groups),
        data=DataSummary(
            kind=_data_kind(plan, data_samples),
            events_read=sum(d.events_read for d in data_samples.values()),
            events_selected=sum(d.events_selected for d in data_samples.values()),
            events_in_range=round(data_total.total), m4l=data_total,
            events_non_finite=sum(d.events_non_finite for d in data_samples.values()),
            channels=_by_channel(data_counts), samples=data_samples,
            controls={name: _by_channel(_data_counts(sumw)) for name, sumw in data_controls.items()},
        ),
        samples=samples, inputs=plan.files, notes=plan.notes, skipped_inputs=plan.skipped,
        chunks=ChunkSummary(total=aggregated.chunks_total, failed=aggregated.failures),
        missing=aggregated.missing(), config=config, warnings=aggregated.warnings,
        cutflow=CutflowTable(steps=CUTFLOW_STEPS, columns=("all", *CHANNELS), samples={
            name: entry.cutflow for name, entry in aggregated.samples.items() if entry.cutflow is not None}),
    )


def _data_kind(plan: RunPlan, data_samples: Mapping[str, DataCounts]) -> Literal["real", "pseudo"] | None:
    """``pseudo`` if any data file of the run is marked as generated: one such file makes the sum pseudo-data."""
    data_files = [f for f in plan.files if f.sample in data_samples]
    if not data_files:
        return None
    return "pseudo" if any(f.generated for f in data_files) else "real"


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers, for the manifest."""
    versions = {}
    for name in ("atlaspipe", "uproot", "awkward", "numpy", "vector", "hist", "pyhf", "celery", "kombu"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_manifest(plan: RunPlan, request: RunRequest, status: RunStatus, results: RunResults,
                   workers: tuple[str, ...], timings: Mapping[str, float | str | None]) -> Manifest:
    """The run's inputs with sizes and checksums, its config, versions, timings and workers."""
    executor: Executor = status.executor
    return Manifest(
        run_id=plan.run_id, created=plan.created, release=plan.release, status=results.status,
        executor=executor,
        # A file refused or unreadable at planning is not read now either.
        inputs=tuple(InputRecord(**f.model_dump(), checksum=None if f.error else file_checksum(f.source))
                     for f in plan.files),
        config=plan.config, chunks_total=len(plan.chunks), chunks_failed=len(results.chunks.failed),
        notes=plan.notes, versions=package_versions(), workers=workers,
        submitted_by=request.submitted_by or None, generation=status.generation, timings=dict(timings),
    )
