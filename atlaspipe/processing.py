"""The ``process``, ``aggregate`` and ``finalize`` stages as plain functions over the run model.

They know nothing of how they are run: ``atlaspipe run`` calls them in one process, the Celery
tasks call the same functions on workers, both through ``atlaspipe.pipeline.lifecycle``. Results
cross process boundaries as the typed documents of ``atlaspipe.model``, holding small histograms,
never per-event arrays.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from importlib import metadata

import numpy as np
import numpy.typing as npt

from atlaspipe import files
from atlaspipe.catalog import Group, Release, Sample, load_release
from atlaspipe.config import AnalysisConfig
from atlaspipe.errors import AtlaspipeError, InputError
from atlaspipe.model import (
    Aggregate,
    Chunk,
    ChunkResult,
    ChunkSummary,
    Counts,
    DataCounts,
    DataSummary,
    Executor,
    Failure,
    GroupInfo,
    Histogram,
    InputRecord,
    Manifest,
    RunPlan,
    RunRequest,
    RunResults,
    RunStatus,
    SampleAggregate,
    SampleYields,
)
from atlaspipe.selection import (
    CHANNELS,
    DEFAULT_2025E_PT_GEV,
    DEFAULT_LEPTON_ORDER,
    SelectedEvents,
    SelectionOptions,
    analyse,
    required_branches,
)

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
M4L = "m4l"


def selection_options(config: AnalysisConfig) -> SelectionOptions:
    """The cuts a config asks for, with the release's default pT thresholds."""
    default_pt = DEFAULT_2025E_PT_GEV if config.release == "2025e" else None
    return SelectionOptions(lepton_pt_gev=config.lepton_pt_gev or default_pt, sfos_pairing=config.sfos_pairing,
                            lepton_order=config.lepton_order or DEFAULT_LEPTON_ORDER)


def histogram_arrays(selected: SelectedEvents, edges: list[float]) -> tuple[FloatArray, FloatArray]:
    """Sum of weights and of squared weights per (channel, bin), flow bins included; one fill per chunk."""
    import hist

    histogram = hist.Hist(
        hist.axis.Variable(edges, name="m4l"),
        hist.axis.IntCategory(list(range(len(CHANNELS))), name="channel"),
        storage=hist.storage.Weight(),
    )
    histogram.fill(m4l=selected.m4l_gev, channel=selected.channel, weight=selected.weight)
    view = histogram.view(flow=True)
    # The category axis has an overflow slot for unknown channels; selection never fills it.
    sumw = np.ascontiguousarray(view.value[:, : len(CHANNELS)].T, dtype=np.float64)
    sumw2 = np.ascontiguousarray(view.variance[:, : len(CHANNELS)].T, dtype=np.float64)
    return sumw, sumw2


def _counts(sumw: FloatArray, sumw2: FloatArray) -> Counts:
    return Counts(sumw=tuple(tuple(row) for row in sumw.tolist()), sumw2=tuple(tuple(row) for row in sumw2.tolist()))


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
        from atlaspipe.reading import read_chunk

        release = load_release(chunk.release)
        sample = release.sample(chunk.sample)
        branches = required_branches(release.schema, not sample.is_data)
        events, bytes_read = read_chunk(chunk, branches)
        selected = analyse(events, release.schema, not sample.is_data, release.to_gev, selection_options(config))
        sumw, sumw2 = histogram_arrays(selected, config.bin_edges())
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
        events_read=len(events), events_selected=len(selected), bytes_read=bytes_read,
        histograms={M4L: _counts(sumw, sumw2)},
    )


def normalisation(release: Release, sample: Sample, luminosity_fb: float) -> float:
    """The per-sample factor applied to the chunk histograms: 1 for data.

    2020: lumi·1000·xsec/(sumw·red_eff). 2025e: lumi·1000, the rest is in the per-event weight.
    """
    if sample.is_data:
        return 1.0
    if release.schema == "2020":
        assert sample.xsec_pb is not None and sample.sumw is not None and sample.red_eff is not None
        return luminosity_fb * 1000.0 * sample.xsec_pb / (sample.sumw * sample.red_eff)
    return luminosity_fb * 1000.0


class _SampleSums:
    """One sample's running sums while merging chunk results."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.sumw = np.zeros(shape)
        self.sumw2 = np.zeros(shape)
        self.events_read = self.events_selected = self.chunks = self.chunks_failed = 0
        self.entries_planned = self.events_lost = self.files_failed = 0


def aggregate(plan: RunPlan, results: Mapping[int, ChunkResult]) -> Aggregate:
    """Merge chunk histograms per sample in chunk-id order and scale them.

    The fixed merge order makes the sums bit-identical however many workers ran the chunks and
    in whatever order they finished. A chunk without a result, or with an error, is listed as
    failed, never silently dropped.
    """
    config = plan.config
    release = load_release(config.release)
    luminosity = config.luminosity_fb or release.luminosity_fb
    shape = (len(CHANNELS), config.bins + 2)
    sums: dict[str, _SampleSums] = {}
    failures: list[Failure] = []
    for planned in plan.files:
        if planned.error:
            sums.setdefault(planned.sample, _SampleSums(shape)).files_failed += 1
            failures.append(Failure.of_file(planned))
    for chunk in sorted(plan.chunks, key=lambda c: c.chunk_id):
        entry = sums.setdefault(chunk.sample, _SampleSums(shape))
        entry.entries_planned += chunk.num_entries
        result = results.get(chunk.chunk_id)
        if result is None or not result.ok:
            entry.chunks_failed += 1
            entry.events_lost += chunk.num_entries
            reason = result.error if result is not None else "no result (chunk never finished)"
            failures.append(Failure.of_chunk(chunk, reason or ""))
            continue
        counts = result.histograms[M4L]
        entry.sumw += np.asarray(counts.sumw, dtype=np.float64)
        entry.sumw2 += np.asarray(counts.sumw2, dtype=np.float64)
        entry.events_read += result.events_read
        entry.events_selected += result.events_selected
        entry.chunks += 1
    samples: dict[str, SampleAggregate] = {}
    for name, entry in sums.items():
        sample = release.sample(name)
        norm = normalisation(release, sample, luminosity)
        samples[name] = SampleAggregate(
            kind=sample.kind, group=sample.group, normalisation=norm, events_read=entry.events_read,
            events_selected=entry.events_selected, chunks=entry.chunks, chunks_failed=entry.chunks_failed,
            entries_planned=entry.entries_planned, events_lost=entry.events_lost, files_failed=entry.files_failed,
            histograms={M4L: _counts(entry.sumw * norm, entry.sumw2 * (norm * norm))},
        )
    return Aggregate(run_id=plan.run_id, release=release.name, luminosity_fb=luminosity,
                     bin_edges=tuple(config.bin_edges()), samples=samples, chunks_total=len(plan.chunks),
                     failures=tuple(failures))


def _histogram(counts: Counts, channel: int | None = None) -> Histogram:
    """The m4l histogram of one channel, or of all channels summed."""
    sumw = np.asarray(counts.sumw, dtype=np.float64)
    sumw2 = np.asarray(counts.sumw2, dtype=np.float64)
    if channel is None:
        return Histogram.from_flow(sumw.sum(axis=0).tolist(), sumw2.sum(axis=0).tolist())
    return Histogram.from_flow(sumw[channel].tolist(), sumw2[channel].tolist())


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
    for name, entry in aggregated.samples.items():
        counts = entry.histograms[M4L]
        if entry.kind == "data":
            data_sumw += np.asarray(counts.sumw, dtype=np.float64)
            data_samples[name] = DataCounts(events_read=entry.events_read, events_selected=entry.events_selected)
            continue
        total = _histogram(counts)
        samples[name] = SampleYields(
            group=entry.group, kind=release.group(entry.group or "").kind if entry.group else "background",
            events_read=entry.events_read, events_selected=entry.events_selected,
            normalisation=entry.normalisation, expected=total.total, expected_uncertainty=total.uncertainty,
            m4l=total, channels={c: _histogram(counts, i) for i, c in enumerate(CHANNELS)},
        )
    data_counts = Counts(sumw=tuple(tuple(r) for r in data_sumw.tolist()),
                         sumw2=tuple(tuple(r) for r in data_sumw.tolist()))
    data_total = _histogram(data_counts)
    groups = release.groups if config.stacked_groups is None else tuple(
        release.group(g) for g in config.stacked_groups)
    return RunResults(
        run_id=plan.run_id, status="partial" if aggregated.failures else "complete", release=release.name,
        luminosity_fb=aggregated.luminosity_fb, bin_edges=aggregated.bin_edges,
        groups=tuple(_group_info(g, samples) for g in groups),
        data=DataSummary(
            events_read=sum(d.events_read for d in data_samples.values()),
            events_selected=sum(d.events_selected for d in data_samples.values()),
            events_in_range=round(data_total.total), m4l=data_total,
            channels={c: _histogram(data_counts, i) for i, c in enumerate(CHANNELS)}, samples=data_samples,
        ),
        samples=samples, inputs=plan.files, notes=plan.notes,
        chunks=ChunkSummary(total=aggregated.chunks_total, failed=aggregated.failures),
        missing=aggregated.missing(), config=config,
    )


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers, for the manifest."""
    versions = {}
    for name in ("atlaspipe", "uproot", "awkward", "numpy", "vector", "hist", "pyhf", "celery", "kombu"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def file_checksum(source: str) -> str | None:
    """sha256 of a local file, None for a remote one (its server's checksum is not ours to trust)."""
    if "://" in source:
        return None
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return "sha256:" + digest.hexdigest()


def build_manifest(plan: RunPlan, request: RunRequest, status: RunStatus, results: RunResults,
                   workers: tuple[str, ...], timings: Mapping[str, float | str | None]) -> Manifest:
    """The run's inputs with sizes and checksums, its config, versions, timings and workers."""
    executor: Executor = status.executor
    return Manifest(
        run_id=plan.run_id, created=plan.created, release=plan.release, status=results.status,
        executor=executor,
        inputs=tuple(InputRecord(**f.model_dump(), checksum=file_checksum(f.source)) for f in plan.files),
        config=plan.config, chunks_total=len(plan.chunks), chunks_failed=len(results.chunks.failed),
        notes=plan.notes, versions=package_versions(), workers=workers,
        submitted_by=request.submitted_by or None, generation=status.generation, timings=dict(timings),
    )


def finalize(aggregated: Aggregate, plan: RunPlan, request: RunRequest, status: RunStatus,
             workers: tuple[str, ...]) -> RunResults | None:
    """The ``plot`` stage: statistics, figures, tables, ``results.json``, ``manifest.json`` and the report.

    A run with failed chunks writes its outputs only with ``allow_partial``, and then every one of
    them says PARTIAL; otherwise only the manifest is written and None returned.
    """
    from atlaspipe import plotting, report, statistics, tables

    started = time.perf_counter()
    run_dir = request.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    results = build_results(aggregated, plan)
    timings: dict[str, float | str | None] = {"submitted": status.started}
    if results.partial and not request.allow_partial:
        manifest = build_manifest(plan, request, status, results, workers, timings)
        files.write_text(run_dir / "manifest.json", manifest.to_json(indent=1) + "\n")
        return None
    config = plan.config
    significance, fit = statistics.summarise(
        results, config.mass_window_gev,
        statistics.FitOptions(background_norm_uncertainty=config.fit.background_norm_uncertainty,
                              staterror=config.fit.staterror),
    )
    results = results.model_copy(update={"significance": significance, "fit": fit})
    outputs = plotting.draw_all(results, run_dir, list(config.stacked_groups or []) or None)
    outputs.update(tables.write_yield_tables(results, run_dir))
    outputs.update(results_json="results.json", manifest_json="manifest.json", report_html="report.html")
    results = results.model_copy(update={"outputs": outputs})
    timings["finalize_seconds"] = time.perf_counter() - started
    manifest = build_manifest(plan, request, status, results, workers, timings)
    files.write_text(run_dir / "results.json", results.to_json(indent=1) + "\n")
    files.write_text(run_dir / "manifest.json", manifest.to_json(indent=1) + "\n")
    # The report is written before the run's final state lands; the page polls status.json for it.
    report.write_report(results, None, manifest, run_dir)
    return results
