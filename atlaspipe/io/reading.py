"""Reading trees from ROOT files with uproot, turning every failure into an error that names the file."""

from __future__ import annotations

import logging
import re
import threading
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, NoReturn, cast

import awkward as ak
import numpy as np
import uproot
from billiard.exceptions import SoftTimeLimitExceeded

from atlaspipe.config import redact_url
from atlaspipe.errors import InputError
from atlaspipe.model import Chunk
from atlaspipe.physics.selection import JAGGED_BRANCHES

LEPTON_COUNT_BRANCH = "lep_n"
"""The per-event lepton count of the 2020 trees; 2025e trees may lack it."""

log = logging.getLogger(__name__)

_OPEN_FILES_KEPT = 4
_open_files: OrderedDict[tuple[str, float, int], Any] = OrderedDict()
_open_files_lock = threading.Lock()


def _decompression_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [zlib.error]
    try:
        from isal import isal_zlib
    except ImportError:
        return tuple(errors)
    errors.append(cast(type[BaseException], isal_zlib.error))
    return tuple(errors)


_DECOMPRESSION_ERRORS = _decompression_errors()


def use_fast_zlib() -> None:
    """Decompress ZLIB baskets with ISA-L: about half the read time of the real files is zlib."""
    if len(_DECOMPRESSION_ERRORS) > 1:
        uproot.compression._decompress_ZLIB.library = "isal"


def _identity(source: str) -> tuple[str, float, int]:
    if "://" in source:
        return (source, 0.0, 0)
    try:
        stat = Path(source).stat()
    except FileNotFoundError:
        raise InputError(source, "file not found") from None
    except OSError as exc:
        raise InputError(source, f"cannot access file: {exc.strerror}") from None
    if stat.st_size == 0:
        raise InputError(source, "file is empty (0 bytes), not a ROOT file")
    return (source, stat.st_mtime, stat.st_size)


def open_file(source: str) -> Any:
    """An open uproot file, reused across chunks of the same unchanged file in this process."""
    key = _identity(source)
    with _open_files_lock:
        if key in _open_files:
            _open_files.move_to_end(key)
            return _open_files[key]
    try:
        # No array cache: each chunk is read once, and uproot's default keeps up to 100 MB of
        # arrays per open file. Local files are read with pread, not mmap, so a worker's RSS
        # counts the chunk it holds rather than every page of the file it has touched; and on the
        # calling thread, since a chunk waits for its bytes anyway: bytes read on uproot's helper
        # thread land in that thread's malloc arena, which raised a worker's peak RSS over 29
        # chunks from 381 to 517 MB.
        if "://" in source:
            handle = uproot.open(source, timeout=30, array_cache=None)
        else:
            handle = uproot.open(source, array_cache=None, handler=uproot.source.file.MultithreadedFileSource,
                                 use_threads=False)
    except FileNotFoundError:
        raise InputError(source, "file not found") from None
    except SoftTimeLimitExceeded:
        # A worker's time limit, not a property of the file: the task retries it.
        raise
    except Exception as exc:  # uproot reports bad files through many exception types
        from atlaspipe.io.sources import http_problem

        # A remote file may be fine and its server the problem (unreachable, no range requests).
        reason = http_problem(source) if "://" in source else None
        raise InputError(source, reason or f"not a readable ROOT file ({_looks_like(source) or type(exc).__name__})"
                         ) from None
    log.debug("opened %s", redact_url(source))
    with _open_files_lock:
        _open_files[key] = handle
        while len(_open_files) > _OPEN_FILES_KEPT:
            _, old = _open_files.popitem(last=False)
            old.close()
    return handle


def forget_open_files() -> None:
    """Close every file this process keeps open."""
    with _open_files_lock:
        while _open_files:
            _open_files.popitem()[1].close()


def open_tree(source: str, tree: str) -> Any:
    """The TTree ``tree`` of ``source``, or an InputError naming what is missing."""
    handle = open_file(source)
    try:
        obj = handle[tree]
    except uproot.KeyInFileError:
        available = ", ".join(sorted({k.split(";")[0] for k in handle.keys(recursive=False)}))
        raise InputError(source, f"no tree '{tree}' in file (found: {available or 'nothing'})") from None
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:
        raise InputError(source, f"cannot read tree '{tree}' ({_short(exc)})") from None
    if not isinstance(obj, uproot.behaviors.TTree.TTree):
        raise InputError(source, f"'{tree}' is a {type(obj).__name__}, not a TTree")
    return obj


def check_branches(source: str, ttree: Any, branches: list[str]) -> None:
    """Fail on a missing branch, or on a scalar branch where a per-lepton one is expected (or back)."""
    for name in branches:
        if name not in ttree:
            raise InputError(source, "branch missing from tree", field=name)
        interpretation = ttree[name].interpretation
        jagged = isinstance(interpretation, uproot.AsJagged | uproot.AsObjects)
        if name in JAGGED_BRANCHES and not jagged:
            raise InputError(
                source, f"expected a per-lepton (jagged) branch, found {ttree[name].typename}", field=name
            )
        if name not in JAGGED_BRANCHES and jagged:
            raise InputError(
                source, f"expected one value per event, found {ttree[name].typename}", field=name
            )


def read_chunk(chunk: Chunk, branches: list[str]) -> tuple[ak.Array, int]:
    """The ``branches`` of ``chunk``'s entry range, checked against the plan it was cut from,
    and the number of bytes requested from the file for them."""
    ttree = open_tree(chunk.source, chunk.tree)
    if ttree.num_entries != chunk.file_entries:
        raise InputError(
            chunk.source,
            f"tree '{chunk.tree}' has {ttree.num_entries} entries but had {chunk.file_entries} "
            "when the run was planned; the file changed, re-plan the run",
        )
    check_branches(chunk.source, ttree, branches)
    has_count = LEPTON_COUNT_BRANCH in ttree and LEPTON_COUNT_BRANCH not in branches
    wanted = [*branches, LEPTON_COUNT_BRANCH] if has_count else branches
    source = ttree.file.source
    before = source.num_requested_bytes
    try:
        arrays = ttree.arrays(wanted, entry_start=chunk.entry_start, entry_stop=chunk.entry_stop, library="ak")
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:
        # A corrupt basket surfaces as almost any exception type (zlib, struct, numpy, awkward,
        # MemoryError for a mangled length): each one is this file's fault, reported as such.
        raise InputError(
            chunk.source,
            # No entry range here: the chunk's failure line names the file and range once.
            f"cannot read the entries ({_short(exc)}); "
            "the file may be truncated or corrupt",
        ) from None
    check_lepton_counts(chunk.source, chunk.entry_start, arrays, [b for b in branches if b in JAGGED_BRANCHES])
    if has_count:
        arrays = arrays[branches]
    return arrays, int(source.num_requested_bytes - before)


def _offsets(values: ak.Array) -> np.ndarray:
    """Where each event's values start in the flat contents, from 0, plus the end: the layout's own
    offsets when it has them, so checking costs a comparison and no copy."""
    layout = ak.to_layout(values)
    if isinstance(layout, ak.contents.ListOffsetArray):
        offsets = np.asarray(layout.offsets.data)
        return offsets if len(offsets) == 0 or offsets[0] == 0 else offsets - offsets[0]
    return np.concatenate(([0], np.cumsum(np.asarray(ak.num(values, axis=1), dtype=np.int64))))


def check_lepton_counts(source: str, entry_start: int, events: ak.Array, jagged: list[str]) -> None:
    """Every per-lepton branch holds the same number of values in each event, equal to ``lep_n``
    where the tree has it.

    The selection gathers each event's first four leptons from every branch by one shared index:
    a branch one value short would silently hand it the next event's leptons.
    """
    if not jagged:
        return
    reference = _offsets(events[jagged[0]])
    for name in jagged[1:]:
        offsets = _offsets(events[name])
        if not np.array_equal(offsets, reference):
            _count_mismatch(source, entry_start, name, np.diff(offsets), jagged[0], np.diff(reference))
    if LEPTON_COUNT_BRANCH in events.fields:
        declared = np.asarray(events[LEPTON_COUNT_BRANCH])
        counts = np.diff(reference)
        if not np.array_equal(counts, declared):
            _count_mismatch(source, entry_start, jagged[0], counts, LEPTON_COUNT_BRANCH, declared)


def _count_mismatch(source: str, entry_start: int, name: str, counts: np.ndarray, reference_name: str,
                    reference: np.ndarray) -> NoReturn:
    entry = int(np.flatnonzero(counts != reference)[0])
    verb = "is" if reference_name == LEPTON_COUNT_BRANCH else "has"
    raise InputError(
        source,
        f"entry {entry_start + entry} has {int(counts[entry])} values but {reference_name} {verb} "
        f"{int(reference[entry])}; per-lepton branches must agree in every event",
        field=name,
    )


_SIGNATURES = (
    (b"\x1f\x8b", "it is gzip-compressed"),
    (b"PK\x03\x04", "it is a zip archive"),
    (b"\x89HDF", "it is an HDF5 file"),
)


def _looks_like(source: str) -> str | None:
    """What a local file that is not ROOT seems to be, said without quoting any of its bytes:
    error texts reach users who may not be allowed to read the file."""
    if "://" in source:
        return None
    try:
        with Path(source).open("rb") as handle:
            head = handle.read(512)
    except OSError:
        return None
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            return kind
    if head.lstrip()[:1] == b"<":
        return "it looks like HTML or XML text"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "it is plain text"
    return "it does not start with the ROOT file signature" if head[:4] != b"root" else None


_BYTES_LITERAL = re.compile(r"""b(['"]).*?(?<!\\)\1""")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    # Library messages may quote bytes of the file (uproot's "first four bytes are b'...'").
    text = _BYTES_LITERAL.sub("<bytes>", text)[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
