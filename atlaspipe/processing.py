"""The ``process``, ``aggregate`` and ``finalize`` stages as plain functions.

They know nothing of how they are run: ``atlaspipe run`` calls them in one process, the Celery
tasks call the same functions on workers. Results cross process boundaries as JSON-ready dicts
of small histograms, never as per-event arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from atlaspipe.catalog import Release, Sample, load_release
from atlaspipe.chunks import Chunk
from atlaspipe.config import AnalysisConfig
from atlaspipe.errors import AtlaspipeError
from atlaspipe.planning import RunPlan
from atlaspipe.selection import (
    CHANNELS,
    DEFAULT_2025E_PT_GEV,
    DEFAULT_LEPTON_ORDER,
    SelectedEvents,
    SelectionOptions,
    analyse,
    required_branches,
)

RESULTS_SCHEMA_VERSION = 1


def selection_options(config: AnalysisConfig) -> SelectionOptions:
    """The cuts a config asks for, with the release's default pT thresholds."""
    default_pt = DEFAULT_2025E_PT_GEV if config.release == "2025e" else None
    return SelectionOptions(lepton_pt_gev=config.lepton_pt_gev or default_pt, sfos_pairing=config.sfos_pairing,
                            lepton_order=config.lepton_order or DEFAULT_LEPTON_ORDER)


def histogram_arrays(selected: SelectedEvents, edges: list[float]) -> tuple[np.ndarray, np.ndarray]:
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


def process_chunk(chunk: Chunk, config: AnalysisConfig) -> dict[str, Any]:
    """Read, select and histogram one chunk. Bad input becomes a result with an ``error``."""
    started = time.perf_counter()
    record: dict[str, Any] = {
        "chunk_id": chunk.chunk_id, "sample": chunk.sample, "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    try:
        from atlaspipe.reading import read_chunk

        release = load_release(chunk.release)
        sample = release.sample(chunk.sample)
        branches = required_branches(release.schema, not sample.is_data)
        events, bytes_read = read_chunk(chunk, branches)
        selected = analyse(events, release.schema, not sample.is_data, release.to_gev,
                           selection_options(config))
        sumw, sumw2 = histogram_arrays(selected, config.bin_edges())
    except AtlaspipeError as exc:
        record.update(error=str(exc), seconds=time.perf_counter() - started)
        return record
    record.update(
        events_read=len(events), events_selected=len(selected), bytes_read=bytes_read, sumw=sumw.tolist(),
        sumw2=sumw2.tolist(), seconds=time.perf_counter() - started,
    )
    return record


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


def aggregate(plan: RunPlan, results: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Merge chunk histograms per sample in chunk-id order and scale them.

    The fixed merge order makes the sums bit-identical however many workers ran the chunks and
    in whatever order they finished. A chunk without a result, or with an error, is listed as
    failed, never silently dropped.
    """
    config = plan.config
    release = load_release(config.release)
    luminosity = config.luminosity_fb or release.luminosity_fb
    nbins = config.bins
    shape = (len(CHANNELS), nbins + 2)
    samples: dict[str, dict[str, Any]] = {}
    failed: list[dict[str, Any]] = []

    def sample_entry(name: str) -> dict[str, Any]:
        return samples.setdefault(name, {
            "sumw": np.zeros(shape), "sumw2": np.zeros(shape), "events_read": 0, "events_selected": 0,
            "chunks": 0, "chunks_failed": 0, "entries_planned": 0, "entries_lost": 0, "files_failed": 0,
        })

    for described in plan.files:
        if described.get("error"):
            sample_entry(described["sample"])["files_failed"] += 1
            failed.append({
                "chunk_id": None, "sample": described["sample"], "source": described["source"],
                "entry_start": None, "entry_stop": None, "error": described["error"],
            })
    for chunk in sorted(plan.chunks, key=lambda c: c.chunk_id):
        entry = sample_entry(chunk.sample)
        entry["entries_planned"] += chunk.num_entries
        result = results.get(chunk.chunk_id)
        if result is None or "error" in result:
            entry["chunks_failed"] += 1
            entry["entries_lost"] += chunk.num_entries
            failed.append({
                "chunk_id": chunk.chunk_id, "sample": chunk.sample, "source": chunk.source,
                "entry_start": chunk.entry_start, "entry_stop": chunk.entry_stop,
                "error": result["error"] if result is not None else "no result (chunk never finished)",
            })
            continue
        entry["sumw"] += np.asarray(result["sumw"], dtype=np.float64)
        entry["sumw2"] += np.asarray(result["sumw2"], dtype=np.float64)
        entry["events_read"] += int(result["events_read"])
        entry["events_selected"] += int(result["events_selected"])
        entry["chunks"] += 1
    merged: dict[str, Any] = {}
    for name, entry in samples.items():
        sample = release.sample(name)
        norm = normalisation(release, sample, luminosity)
        merged[name] = {
            "kind": sample.kind, "group": sample.group, "normalisation": norm,
            "events_read": entry["events_read"], "events_selected": entry["events_selected"],
            "chunks": entry["chunks"], "chunks_failed": entry["chunks_failed"],
            "entries_planned": entry["entries_planned"], "entries_lost": entry["entries_lost"],
            "files_failed": entry["files_failed"],
            "sumw": (entry["sumw"] * norm).tolist(), "sumw2": (entry["sumw2"] * (norm * norm)).tolist(),
        }
    return {
        "run_id": plan.run_id, "release": release.name, "luminosity_fb": luminosity,
        "bin_edges": config.bin_edges(), "channels": list(CHANNELS), "samples": merged,
        "chunks_total": len(plan.chunks), "failed": failed,
    }


def _in_range(values: list[list[float]]) -> np.ndarray:
    """Per-channel in-range bins of a (channels, nbins+2) list."""
    return np.asarray(values, dtype=np.float64)[:, 1:-1]


def build_results(aggregated: Mapping[str, Any], plan: RunPlan) -> dict[str, Any]:
    """The ``results.json`` document (see docs/CONTRACTS.md), without fit and plots."""
    release = load_release(aggregated["release"])
    config = plan.config
    groups_in_order = _stack_order(release, config)
    samples_out: dict[str, Any] = {}
    data_sumw = np.zeros((len(CHANNELS), config.bins + 2))
    data_samples: dict[str, Any] = {}
    data_read = data_selected = 0
    missing: dict[str, Any] = {}
    for name, entry in aggregated["samples"].items():
        files_failed = entry.get("files_failed", 0)
        if entry["chunks_failed"] or files_failed:
            # An unopenable file has no known entry count: the fraction is known only when
            # nothing of the sample could be read (1.0) or no file of it was lost.
            if not files_failed:
                fraction: float | None = entry["entries_lost"] / max(entry["entries_planned"], 1)
            elif entry["entries_planned"] == entry["entries_lost"]:
                fraction = 1.0
            else:
                fraction = None
            missing[name] = {
                "chunks_failed": entry["chunks_failed"], "files_failed": files_failed,
                "entries_lost": entry["entries_lost"], "fraction_lost": fraction,
            }
        if entry["kind"] == "data":
            data_sumw += np.asarray(entry["sumw"])
            data_read += entry["events_read"]
            data_selected += entry["events_selected"]
            data_samples[name] = {"events_read": entry["events_read"],
                                  "events_selected": entry["events_selected"]}
            continue
        sumw = _in_range(entry["sumw"])
        sumw2 = _in_range(entry["sumw2"])
        total, total2 = sumw.sum(axis=0), sumw2.sum(axis=0)
        samples_out[name] = {
            "group": entry["group"], "kind": release.group(entry["group"]).kind,
            "events_read": entry["events_read"], "events_selected": entry["events_selected"],
            "normalisation": entry["normalisation"],
            "yield": float(total.sum()), "yield_uncertainty": float(np.sqrt(total2.sum())),
            "histogram": total.tolist(), "sumw2": total2.tolist(),
            "channels": {
                channel: {"yield": float(sumw[i].sum()), "histogram": sumw[i].tolist(),
                          "sumw2": sumw2[i].tolist()}
                for i, channel in enumerate(CHANNELS)
            },
        }
    data_in = data_sumw[:, 1:-1]
    inputs = [{"sample": f["sample"], "source": f["source"], "entries": f["entries"],
               "size_bytes": f["size_bytes"]} for f in plan.files]
    return {
        "schema_version": RESULTS_SCHEMA_VERSION, "run_id": plan.run_id,
        "status": "partial" if aggregated["failed"] else "complete",
        "release": release.name, "luminosity_fb": aggregated["luminosity_fb"],
        "bin_edges": aggregated["bin_edges"], "channels": list(CHANNELS),
        "groups": [
            {"id": g.id, "label": g.label, "text": g.text, "color": g.color, "kind": g.kind,
             "samples": [n for n, s in samples_out.items() if s["group"] == g.id]}
            for g in groups_in_order
        ],
        "data": {
            "events_read": data_read, "events_selected": data_selected,
            "events_in_range": round(float(data_in.sum())),
            "histogram": data_in.sum(axis=0).tolist(),
            "underflow": float(data_sumw[:, 0].sum()), "overflow": float(data_sumw[:, -1].sum()),
            "channels": {c: {"histogram": data_in[i].tolist()} for i, c in enumerate(CHANNELS)},
            "samples": data_samples,
        },
        "samples": samples_out,
        "inputs": inputs,
        "notes": plan.notes,
        "chunks": {"total": aggregated["chunks_total"], "failed": aggregated["failed"]},
        "missing": missing,
        "config": config.to_json_dict(),
    }


def _stack_order(release: Release, config: AnalysisConfig) -> list[Any]:
    if config.stacked_groups is None:
        return list(release.groups)
    return [release.group(g) for g in config.stacked_groups]


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


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` atomically, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", "utf-8")
    os.replace(tmp, path)


def finalize(aggregated: Mapping[str, Any], plan: RunPlan, run_dir: Path,
             run_info: Mapping[str, Any] | None = None, allow_partial: bool = False) -> dict[str, Any]:
    """The ``plot`` stage: statistics, figures, tables, ``results.json`` and ``manifest.json``.

    A run with failed chunks writes its outputs only with ``allow_partial``, and then every one of
    them says PARTIAL; otherwise it writes the failures to ``status.json`` and returns them.
    """
    from atlaspipe import plotting, statistics, tables, web

    run_dir.mkdir(parents=True, exist_ok=True)
    results = build_results(aggregated, plan)
    manifest = write_manifest(plan, run_dir, results, run_info or {})
    if results["status"] == "partial" and not allow_partial:
        return results
    config = plan.config
    summary = statistics.summarise(
        results, tuple(config.mass_window_gev),  # type: ignore[arg-type]
        statistics.FitOptions(background_norm_uncertainty=config.fit.background_norm_uncertainty,
                              staterror=config.fit.staterror),
    )
    results.update(summary)
    outputs = plotting.draw_all(results, run_dir, list(config.stacked_groups or []) or None)
    outputs.update(tables.write_yield_tables(results, run_dir))
    outputs["results_json"] = "results.json"
    outputs["manifest_json"] = "manifest.json"
    outputs["report_html"] = "report.html"
    results["outputs"] = outputs
    write_json(run_dir / "results.json", results)
    web.write_report(results, manifest, run_dir)
    return results


def write_manifest(plan: RunPlan, run_dir: Path, results: Mapping[str, Any],
                   run_info: Mapping[str, Any]) -> dict[str, Any]:
    """The run's inputs with sizes and checksums, its config, versions, timings and workers."""
    manifest = {
        "run_id": plan.run_id, "created": plan.created, "release": plan.release,
        "status": results["status"],
        "inputs": [{**f, "checksum": file_checksum(f["source"])} for f in plan.files],
        "config": plan.config.to_json_dict(), "chunks_total": len(plan.chunks),
        "chunks_failed": len(results["chunks"]["failed"]), "notes": plan.notes,
        "versions": package_versions(), **run_info,
    }
    write_json(run_dir / "manifest.json", manifest)
    return manifest
