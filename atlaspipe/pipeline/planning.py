"""The ``load`` stage: resolve a run's inputs to files and cut them into cluster-aligned chunks."""

from __future__ import annotations

import errno
import logging
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

from atlaspipe.config import AnalysisConfig
from atlaspipe.errors import CatalogError, ConfigError, InputError
from atlaspipe.fileset import Fileset, FilesetEntry, SampleDefinition
from atlaspipe.io.identify import release_of_file
from atlaspipe.io.input_roots import check_local_path
from atlaspipe.io.reading import open_tree
from atlaspipe.io.sources import check_location
from atlaspipe.model import Chunk, PlannedFile, RunPlan, SkippedInput
from atlaspipe.physics.catalog import RELEASES, Release, is_generated_title, load_release, recognise_file
from atlaspipe.physics.selection import required_branches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputFile:
    """One file of a run, with the sample it belongs to."""

    release: str
    sample: str
    source: str
    tree: str
    definition: SampleDefinition | None = None
    """The sample as a fileset defines it, where the catalog does not."""


@dataclass(frozen=True)
class FileLayout:
    """What planning learns of a file: its entry count, size, cluster boundaries, and the basket
    boundaries of each branch (``branch.entry_offsets``: a chunk decompresses whole baskets)."""

    entries: int
    size_bytes: int | None
    cluster_starts: tuple[int, ...]
    title: str = ""
    basket_offsets: tuple[tuple[str, tuple[int, ...]], ...] = ()


def _skip_reason(path: Path) -> str | None:
    """Why a ``*.root`` path found in an input folder cannot be read, or None if it is a regular file."""
    try:
        if path.is_file():
            return None
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        if exc.errno == errno.ENOENT:
            return "symbolic link to a missing file"
        return f"cannot access: {exc.strerror}"
    return "not a regular file"


def _local_root_files(path: Path) -> tuple[list[Path], list[SkippedInput]]:
    """The ``.root`` files of ``path`` (itself if a file), and the ``.root`` paths in it that are
    not readable files, each with the reason."""
    if not path.is_dir():
        return [path], []
    found: list[Path] = []
    skipped: list[SkippedInput] = []
    for candidate in sorted(path.rglob("*.root")):
        reason = _skip_reason(candidate)
        if reason is None:
            found.append(candidate)
        else:
            log.warning("%s: skipped (%s)", candidate, reason)
            skipped.append(SkippedInput(source=str(candidate), reason=reason))
    if not found:
        detail = f" ({len(skipped)} skipped: {skipped[0].reason}, ...)" if skipped else ""
        raise InputError(str(path), f"folder holds no readable .root files{detail}")
    return found, skipped


def resolve_inputs(release: str | None, inputs: Sequence[str] = (), samples: Sequence[str] = (),
                   base_url: str | None = None, fetch_first: bool = False,
                   fileset: Fileset | None = None) -> tuple[str, list[InputFile]]:
    """The release and files of a run: a fileset, explicit paths or URLs, catalog samples, or the
    embedded sample."""
    release_name, files, _ = resolve_inputs_skipping(release, inputs, samples, base_url, fetch_first, fileset)
    return release_name, files


def resolve_inputs_skipping(
    release: str | None, inputs: Sequence[str] = (), samples: Sequence[str] = (), base_url: str | None = None,
    fetch_first: bool = False, fileset: Fileset | None = None,
) -> tuple[str, list[InputFile], list[SkippedInput]]:
    """:func:`resolve_inputs`, with the paths of input folders that were passed over and why."""
    if fileset:
        if inputs:
            raise ConfigError("give input files either with a fileset or as inputs, not both")
        return _resolve_fileset(release, fileset, samples)
    if inputs:
        return _resolve_paths(release, inputs, samples)
    if not samples and base_url is None and not fetch_first:
        from atlaspipe.generate.embedded import embedded_sample_dir

        if release not in (None, "2020"):
            raise ConfigError(f"the embedded sample is of release 2020; give --input files for release {release}")
        return _resolve_paths("2020", [str(embedded_sample_dir())], ())
    from atlaspipe.io.sources import resolve

    rel = load_release(release or "2020")
    chosen = rel.select(list(samples))
    if fetch_first:
        from atlaspipe.io.fetch import fetch_samples

        log.info("fetching %d sample(s) of release %s before planning", len(chosen), rel.name)
        report = fetch_samples(rel, chosen, base_url=base_url, progress=False)
        if report.failed:
            failure = report.failed[0]
            raise InputError(failure.url, f"fetch failed: {failure.reason}")
    files = [InputFile(rel.name, s.name, resolve(rel, s, base_url=base_url), rel.tree) for s in chosen]
    return rel.name, files, []


def _resolve_paths(release: str | None, inputs: Sequence[str],
                   samples: Sequence[str]) -> tuple[str, list[InputFile], list[SkippedInput]]:
    locations: list[str] = []
    skipped: list[SkippedInput] = []
    for item in inputs:
        if "://" in item:
            check_location(item, allow_file_url=False)
            locations.append(item)
        else:
            path = Path(item)
            if not path.exists():
                raise InputError(item, "file not found")
            found, passed_over = _local_root_files(path)
            locations.extend(str(p) for p in found)
            skipped.extend(passed_over)
    files: list[InputFile] = []
    found_release: Release | None = None
    for location in locations:
        rel, sample = recognise_file(location, release, release_of_file(location))
        if found_release is not None and rel.name != found_release.name:
            raise CatalogError(
                f"inputs mix releases {found_release.name} and {rel.name} ({location} is {rel.name}); "
                "run one release at a time"
            )
        found_release = rel
        files.append(InputFile(rel.name, sample.name, location, rel.tree))
    if found_release is None:
        raise ConfigError("no input files given")
    if samples:
        wanted = {s.name for s in found_release.select(list(samples))}
        files = [f for f in files if f.sample in wanted]
        if not files:
            raise ConfigError(f"none of the input files belongs to the samples {', '.join(samples)}")
    return found_release.name, files, skipped


def _fileset_release(release: str | None, fileset: Fileset) -> Release:
    """The release a fileset is of: the one given, else the one whose catalog has its catalog samples."""
    if release is not None:
        return load_release(release)
    named = [e.catalog for e in fileset.values() if e.catalog]
    for candidate in RELEASES:
        loaded = load_release(candidate)
        if all(any(s.name == name for s in loaded.samples) for name in named):
            return loaded
    raise CatalogError(f"the fileset's catalog samples {', '.join(named)} are not all of one release")


def _definition(rel: Release, name: str, entry: FilesetEntry) -> SampleDefinition | None:
    """How a fileset's sample is scaled and drawn; None when it is a catalog sample under its own name."""
    own = {k: v for k, v in entry.model_dump(include={"kind", "group", "xsec_pb", "sumw", "red_eff",
                                                                      "luminosity_fb"}).items()
           if v is not None}
    catalog = entry.catalog
    if catalog is None and not own and any(s.name == name for s in rel.samples):
        catalog = name  # coffea's plain {sample: [files]} with a catalog sample's name
    if catalog is not None:
        base = rel.sample(catalog)
        if name == base.name and not own:
            return None
        own = {"kind": base.kind, "group": base.group, "xsec_pb": base.xsec_pb, "sumw": base.sumw,
               "red_eff": base.red_eff, "luminosity_fb": base.luminosity_fb, **own}
    elif any(s.name == name for s in rel.samples):
        raise ConfigError(f"fileset sample '{name}' is a catalog sample name of release {rel.name}: "
                          f"add \"catalog\": \"{name}\" to use the catalog's, or choose another name")
    definition = SampleDefinition(name=name, **own)
    if definition.group is not None:
        rel.group(definition.group)  # an unknown group is a CatalogError naming the known ones
    if definition.kind == "data" and definition.luminosity_fb is None:
        raise ConfigError(f"fileset sample '{name}': data need luminosity_fb (the MC is scaled to the data's), "
                          "or a catalog data period")
    if definition.kind == "mc" and rel.schema == "2020" and (definition.xsec_pb is None or definition.sumw is None):
        raise ConfigError(f"fileset sample '{name}': MC of release 2020 needs xsec_pb and sumw, or a catalog sample")
    return definition


def _resolve_fileset(release: str | None, fileset: Fileset,
                     samples: Sequence[str]) -> tuple[str, list[InputFile], list[SkippedInput]]:
    rel = _fileset_release(release, fileset)
    if samples:
        unknown = sorted(set(samples) - set(fileset))
        if unknown:
            raise ConfigError(f"samples {', '.join(unknown)} are not in the fileset (it has {', '.join(fileset)})")
    files: list[InputFile] = []
    skipped: list[SkippedInput] = []
    for name, entry in fileset.items():
        if samples and name not in samples:
            continue
        definition = _definition(rel, name, entry)
        for index, item in enumerate(entry.files):
            tree = entry.tree(index) or rel.tree
            if "://" in item:
                check_location(item, allow_file_url=False)
                files.append(InputFile(rel.name, name, item, tree, definition))
                continue
            if not Path(item).exists():
                raise InputError(item, "file not found")
            found, passed_over = _local_root_files(Path(item))
            files.extend(InputFile(rel.name, name, str(p), tree, definition) for p in found)
            skipped.extend(passed_over)
    return rel.name, files, skipped


_layout_cache: dict[tuple[str, str, float, int], FileLayout] = {}
_layout_lock = threading.Lock()


def _file_identity(source: str, tree: str) -> tuple[str, str, float, int]:
    if "://" in source:
        return (source, tree, 0.0, 0)
    try:
        stat = Path(source).stat()
    except OSError:
        return (source, tree, -1.0, -1)
    return (source, tree, stat.st_mtime, stat.st_size)


def file_layout(source: str, tree: str) -> FileLayout:
    """Entry count and cluster starts of ``tree`` in ``source``, cached by file identity."""
    key = _file_identity(source, tree)
    with _layout_lock:
        if key in _layout_cache:
            return _layout_cache[key]
    ttree = open_tree(source, tree)
    entries = int(ttree.num_entries)
    starts = tuple(int(x) for x in ttree.common_entry_offsets()) if entries else (0,)
    size = key[3] if key[3] >= 0 and "://" not in source else None
    offsets = tuple((str(name), tuple(int(x) for x in branch.entry_offsets))
                    for name, branch in ttree.iteritems()) if entries else ()
    layout = FileLayout(entries=entries, size_bytes=size, cluster_starts=starts, title=str(ttree.title or ""),
                        basket_offsets=offsets)
    with _layout_lock:
        _layout_cache[key] = layout
    return layout


def cut_entries(entries: int, cluster_starts: Sequence[int], chunk_size: int) -> list[tuple[int, int]]:
    """Entry ranges covering ``[0, entries)`` exactly once, cut at the cluster boundary nearest each
    multiple of ``chunk_size``; a cluster more than twice the chunk size is split inside."""
    if chunk_size <= 0:
        raise ConfigError(f"chunk size must be a positive number of entries, got {chunk_size}")
    boundaries = sorted({b for b in cluster_starts if 0 < b < entries} | {entries})
    ranges: list[tuple[int, int]] = []
    start = 0
    while start < entries:
        target = start + chunk_size
        if target >= entries:
            stop = entries
        else:
            later = [b for b in boundaries if b > start]
            stop = min(later, key=lambda b: (abs(b - target), b))
            if stop - start > 2 * chunk_size:
                stop = target
        ranges.append((start, stop))
        start = stop
    return ranges


def _described(input_file: InputFile) -> dict[str, str]:
    """The fields of a planned file (its sample's definition is in the run's config)."""
    return {k: v for k, v in asdict(input_file).items() if k != "definition"}


READ_AMPLIFICATION_WARNING = 1.5
"""Above this many times its entries, a file read in the planned chunks is worth a warning."""


def read_amplification(layout: FileLayout, ranges: Sequence[tuple[int, int]], branches: Sequence[str]) -> float:
    """How many times the entries of ``branches`` are decompressed when ``ranges`` are read one by
    one: each range decompresses every basket it overlaps, whole. 1.0 when chunks hold whole baskets."""
    offsets = {name: starts for name, starts in layout.basket_offsets if len(starts) >= 2}
    chosen = [offsets[b] for b in branches if b in offsets] or list(offsets.values())
    if not chosen or layout.entries <= 0:
        return 1.0
    factors = []
    for starts in chosen:
        read = 0
        for start, stop in ranges:
            first = bisect_right(starts, start) - 1
            last = bisect_left(starts, stop)
            read += starts[min(last, len(starts) - 1)] - starts[max(first, 0)]
        factors.append(read / layout.entries)
    return max(1.0, sum(factors) / len(factors))


def plan_run(run_id: str, config: AnalysisConfig, files: Sequence[InputFile], *,
             max_workers: int = 8, allow_partial: bool = False, roots: Sequence[Path] | None = None,
             skipped: Sequence[SkippedInput] = ()) -> RunPlan:
    """Read every file's layout concurrently and cut the chunks, numbered in input order.

    A file that cannot be opened stops the run, naming the file; with ``allow_partial`` it is
    listed in the plan with its error instead, so the run goes on and reports it as lost. With
    ``roots``, a local file whose real path (symbolic links followed) lies outside them is refused
    the same way before anything opens it: folder expansion, the catalog and the cache all end here.
    """
    if config.chunk_size <= 0:
        raise ConfigError(f"chunk size must be positive, got {config.chunk_size}")

    def layout_or_error(input_file: InputFile) -> FileLayout | InputError:
        try:
            if roots is not None and "://" not in input_file.source:
                check_local_path(input_file.source, roots)
            return file_layout(input_file.source, input_file.tree)
        except InputError as exc:
            if not allow_partial:
                raise
            return exc

    defined = {f.definition.name: f.definition for f in files if f.definition is not None}
    if defined:
        config = config.model_copy(update={"samples": tuple(defined.values())})
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(files)))) as pool:
        layouts = list(pool.map(layout_or_error, files))
    chunks: list[Chunk] = []
    described: list[PlannedFile] = []
    notes: list[str] = []
    for input_file, layout in zip(files, layouts, strict=True):
        if isinstance(layout, InputError):
            log.warning("run %s: %s; the file is left out of this partial run", run_id, layout)
            described.append(PlannedFile(**_described(input_file), error=layout.reason))
            notes.append(f"{layout}; the file is left out of this partial run")
            continue
        described.append(PlannedFile(**_described(input_file), entries=layout.entries, size_bytes=layout.size_bytes,
                                     generated=is_generated_title(layout.title)))
        if layout.entries == 0:
            notes.append(f"{input_file.source}: tree '{input_file.tree}' has 0 entries; no chunk planned")
            continue
        ranges = cut_entries(layout.entries, layout.cluster_starts, config.chunk_size)
        factor = read_amplification(layout, ranges, required_branches(input_file.release, True))
        if factor > READ_AMPLIFICATION_WARNING:
            widest = max((b - a for _, s in layout.basket_offsets for a, b in pairwise(s)), default=0)
            note = (f"{input_file.source}: chunks of {config.chunk_size:,} entries are smaller than its baskets "
                    f"(up to {widest:,} entries), and each chunk decompresses whole baskets: the file is read "
                    f"{factor:.1f}× over; a chunk size of at least {widest:,} reads it once")
            log.warning("run %s: %s", run_id, note)
            notes.append(note)
        for start, stop in ranges:
            chunks.append(Chunk(
                chunk_id=len(chunks), release=input_file.release, sample=input_file.sample,
                source=input_file.source, tree=input_file.tree, entry_start=start, entry_stop=stop,
                file_entries=layout.entries,
            ))
    log.info("run %s: %d chunk(s) of up to %d entries from %d file(s)", run_id, len(chunks), config.chunk_size,
             len(files))
    return RunPlan(run_id=run_id, config=config, files=tuple(described), chunks=tuple(chunks), notes=tuple(notes),
                   skipped=tuple(skipped), created=datetime.now(UTC).isoformat(timespec="seconds"))
