"""``atlaspipe fetch``: download samples into the local cache, in parallel, resumably and verified.

Each file is written to ``<name>.part`` and renamed into place only once its size (and the
catalog's checksum, where given) is right, so a file under its final name is always whole. An
interrupted download keeps its ``.part`` and the next attempt asks the server for the rest with an
HTTP ``Range`` request. Transient faults (connection errors, timeouts, HTTP 5xx/408/429) are
retried with exponential backoff; 404 and authentication failures are not.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import requests
import urllib3
from tqdm import tqdm

from atlaspipe.config import redact_url
from atlaspipe.errors import ConfigError
from atlaspipe.io.sources import (
    Integrity,
    cache_dir,
    cached_path,
    catalog_integrity,
    check_location,
    is_complete,
    local_path,
    read_sidecar,
    root_file_end,
    sidecar_path,
    url_scheme,
)
from atlaspipe.physics.catalog import Release, Sample, load_release

log = logging.getLogger(__name__)

MB = 1_000_000
_RETRYABLE_STATUS = frozenset({408, 425, 429})
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

FileStatus = Literal["fetched", "skipped", "failed"]
_NO_INTEGRITY = Integrity()


@dataclass(frozen=True)
class NetworkOptions:
    """Timeouts (seconds), retry policy and transfer block size of a fetch."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 4
    backoff: float = 1.0
    backoff_max: float = 30.0
    chunk_size: int = 1 << 20

    def delay(self, attempt: int) -> float:
        """Sleep before retry number ``attempt`` (1-based): exponential with jitter, capped."""
        base = min(self.backoff_max, self.backoff * 2 ** (attempt - 1))
        # Jitter keeps parallel downloads that failed together from retrying in lock step.
        return float(base * random.uniform(0.5, 1.0))


@dataclass
class FileResult:
    """The outcome for one file."""

    sample: str
    url: str
    path: str
    status: FileStatus
    bytes: int = 0
    reason: str = ""
    attempts: int = 0
    seconds: float = 0.0


@dataclass
class FetchReport:
    """What a fetch did, file by file, and how fast."""

    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def _with(self, status: FileStatus) -> list[FileResult]:
        return [f for f in self.files if f.status == status]

    @property
    def fetched(self) -> list[FileResult]:
        return self._with("fetched")

    @property
    def skipped(self) -> list[FileResult]:
        return self._with("skipped")

    @property
    def failed(self) -> list[FileResult]:
        return self._with("failed")

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def bytes_downloaded(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def mb_per_s(self) -> float:
        return self.bytes_downloaded / MB / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line: counts, volume, time and throughput."""
        return (
            f"fetched {len(self.fetched)}, skipped {len(self.skipped)} (already cached), "
            f"failed {len(self.failed)}: {self.bytes_downloaded / MB:.1f} MB in "
            f"{self.seconds:.2f} s ({self.mb_per_s:.1f} MB/s)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"files": [asdict(f) for f in self.files], "seconds": self.seconds,
                "bytes": self.bytes_downloaded, "mb_per_s": self.mb_per_s}


class FetchError(Exception):
    """A file could not be fetched; ``reason`` says why, ``attempts`` how often it was tried."""

    def __init__(self, reason: str, attempts: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


class _Transient(Exception):
    """A fault worth retrying."""


class _Permanent(Exception):
    """A fault that retrying cannot fix (404, 401/403, checksum mismatch)."""


class _ChecksumMismatch(_Permanent):
    """The whole file arrived but does not match the catalog; its bytes are useless for a resume."""


class _Progress(Protocol):
    def add_total(self, nbytes: int) -> None: ...
    def add_bytes(self, nbytes: int) -> None: ...


class _NoProgress:
    def add_total(self, nbytes: int) -> None:
        pass

    def add_bytes(self, nbytes: int) -> None:
        pass


class _Bars:
    """A bytes bar and a files bar, safe to update from the download threads."""

    def __init__(self, files: int) -> None:
        self._lock = threading.Lock()
        self.bytes = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc="bytes",
                          position=0, dynamic_ncols=True)
        self.files = tqdm(total=files, unit="file", desc="files", position=1, dynamic_ncols=True)

    def add_total(self, nbytes: int) -> None:
        with self._lock:
            self.bytes.total = (self.bytes.total or 0) + nbytes
            self.bytes.refresh()

    def add_bytes(self, nbytes: int) -> None:
        with self._lock:
            self.bytes.update(nbytes)

    def file_done(self) -> None:
        with self._lock:
            self.files.update(1)

    def close(self) -> None:
        self.bytes.close()
        self.files.close()


class _Hashes:
    """Running sha256 (always, for the sidecar) and the catalog's algorithm, if another."""

    def __init__(self, integrity: Integrity) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5() if _algorithm(integrity) == "md5" else None
        self.adler: int | None = 1 if _algorithm(integrity) == "adler32" else None

    def update(self, block: bytes | memoryview) -> None:
        self.sha256.update(block)
        if self.md5 is not None:
            self.md5.update(block)
        if self.adler is not None:
            self.adler = zlib.adler32(block, self.adler)

    def digest(self, algorithm: str) -> str:
        if algorithm == "sha256":
            return self.sha256.hexdigest()
        if algorithm == "md5" and self.md5 is not None:
            return self.md5.hexdigest()
        if algorithm == "adler32" and self.adler is not None:
            return f"{self.adler:08x}"
        raise ValueError(f"checksum {algorithm} was not computed")


def _algorithm(integrity: Integrity) -> str | None:
    return integrity.checksum.partition(":")[0] if integrity.checksum else None


def _hash_file(path: Path, hashes: _Hashes, block: int = 1 << 20) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(block):
            hashes.update(chunk)


def _check_checksum(hashes: _Hashes, integrity: Integrity) -> None:
    if integrity.checksum is None:
        return
    algorithm, _, expected = integrity.checksum.partition(":")
    actual = hashes.digest(algorithm)
    same = (int(actual, 16) == int(expected, 16)) if algorithm == "adler32" else actual == expected
    if not same:
        raise _ChecksumMismatch(
            f"checksum mismatch: catalog {algorithm}:{expected}, got {algorithm}:{actual}"
        )


@contextmanager
def _file_lock(dest: Path) -> Iterator[None]:
    """Serialise fetches of one file across threads and processes (e.g. workers fetching first)."""
    lock = dest.with_name(dest.name + ".lock")
    while True:
        handle = lock.open("a")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            same = lock.stat().st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        # The holder removed the lock file while we waited: lock the new one instead.
        handle.close()
    try:
        yield
    finally:
        # Unlink before unlocking, so a waiter on this inode sees it is stale and retries.
        lock.unlink(missing_ok=True)
        handle.close()


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _status_error(response: requests.Response) -> Exception:
    text = f"HTTP {response.status_code} {response.reason or ''}".strip()
    if response.status_code in (401, 403):
        return _Permanent(f"{text} (authentication or permission failure; not retried)")
    if response.status_code >= 500 or response.status_code in _RETRYABLE_STATUS:
        return _Transient(text)
    return _Permanent(text)


def _remote_size(session: requests.Session, url: str, options: NetworkOptions) -> int | None:
    response = session.head(url, timeout=(options.connect_timeout, options.read_timeout),
                            allow_redirects=True, headers={"Accept-Encoding": "identity"})
    if response.status_code >= 400:
        raise _status_error(response)
    length = response.headers.get("Content-Length")
    return int(length) if length is not None and length.isdigit() else None


class _HttpDownload:
    """One file over HTTP: attempts that each continue the ``.part`` file from where it ends."""

    def __init__(self, url: str, part: Path, integrity: Integrity, options: NetworkOptions,
                 progress: _Progress, session: requests.Session) -> None:
        self.url = url
        self.part = part
        self.integrity = integrity
        self.options = options
        self.progress = progress
        self.session = session
        self.announced = False
        self.hashes = _Hashes(integrity)

    def _restart(self) -> None:
        """Throw away the partial file (the server ignored or refused our Range)."""
        if self.part.exists():
            self.progress.add_bytes(-self.part.stat().st_size)
            self.part.unlink()

    def _announce(self, total: int, offset: int) -> None:
        if not self.announced:
            self.announced = True
            self.progress.add_total(total)
            self.progress.add_bytes(offset)

    def attempt(self) -> int:
        """Bring ``.part`` to the whole file; returns the bytes transferred by this attempt."""
        offset = self.part.stat().st_size if self.part.exists() else 0
        # Plain bytes: sizes and checksums refer to the file, not to a compressed transfer.
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        timeout = (self.options.connect_timeout, self.options.read_timeout)
        try:
            response = self.session.get(self.url, headers=headers, stream=True, timeout=timeout)
            with response:
                if response.status_code == 416 and offset:
                    self._range_refused(offset)
                    return 0
                total = self._start_body(response, offset)
                transferred = self._append_body(response)
        except (requests.Timeout, urllib3.exceptions.TimeoutError) as exc:
            raise _Transient(
                f"timed out (read timeout {self.options.read_timeout:g} s, connect "
                f"{self.options.connect_timeout:g} s): {_short(exc)}"
            ) from exc
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError, ConnectionError) as exc:
            raise _Transient(f"connection failed: {_short(exc)}") from exc
        self._check_whole(total)
        return transferred

    def _range_refused(self, offset: int) -> None:
        """HTTP 416 on a resume: the ``.part`` file is whole already (hash it), else start over."""
        total = _remote_size(self.session, self.url, self.options)
        if total != offset:
            self._restart()
            raise _Transient(f"server refused range from byte {offset}; restarting")
        self._announce(total, offset)
        self.hashes = _Hashes(self.integrity)
        _hash_file(self.part, self.hashes)

    def _start_body(self, response: requests.Response, offset: int) -> int | None:
        """Check the response's status, size and encoding, and hash what ``.part`` already holds;
        the whole file's size, if the server said."""
        if response.status_code not in (200, 206):
            raise _status_error(response)
        total = self._total(response, offset)
        if response.status_code == 200:
            offset = 0
            self._restart()
        if self.integrity.size is not None and total is not None and total != self.integrity.size:
            raise _Permanent(f"server announces {total} bytes, the catalog says {self.integrity.size}")
        self._announce(total or 0, offset)
        self.hashes = _Hashes(self.integrity)
        if offset:
            _hash_file(self.part, self.hashes)
        encoding = response.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            raise _Permanent(f"server sent Content-Encoding {encoding} although "
                             "asked for identity; sizes cannot be checked")
        return total

    def _append_body(self, response: requests.Response) -> int:
        transferred = 0
        with self.part.open("ab") as out:
            # read1, not iter_content: on a dropped connection iter_content discards the
            # bytes of its unfinished block, read1 hands over whatever has arrived.
            while block := response.raw.read1(self.options.chunk_size, decode_content=False):
                out.write(block)
                self.hashes.update(block)
                transferred += len(block)
                self.progress.add_bytes(len(block))
        return transferred

    def _check_whole(self, total: int | None) -> None:
        size = self.part.stat().st_size if self.part.exists() else 0
        if total is None:
            # No length from the server: fall back on the catalog, then on the ROOT header.
            total = self.integrity.size
            if total is None:
                total = root_file_end(self.part)
        if total is not None and size < total:
            raise _Transient(f"connection closed after {size} of {total} bytes")
        if total is not None and size > total:
            self._restart()
            raise _Transient(f"received {size} bytes, more than the {total} announced")

    @staticmethod
    def _total(response: requests.Response, offset: int) -> int | None:
        """The whole file's size from Content-Range (206) or Content-Length (200)."""
        if response.status_code == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if match is None or int(match.group(1)) != offset:
                got = response.headers.get("Content-Range")
                raise _Transient(f"bad Content-Range {got!r} for a request from byte {offset}")
            return int(match.group(3)) if match.group(3) != "*" else None
        length = response.headers.get("Content-Length")
        return int(length) if length is not None and length.isdigit() else None


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "…"


def _copy_local(source: Path, part: Path, integrity: Integrity, options: NetworkOptions,
                progress: _Progress) -> tuple[int, _Hashes]:
    """Copy a file from a local mirror (a folder or file:// base URL) into ``part``."""
    if not source.is_file():
        raise _Permanent("no such file")
    size = source.stat().st_size
    progress.add_total(size)
    hashes = _Hashes(integrity)
    with source.open("rb") as src, part.open("wb") as out:
        while block := src.read(options.chunk_size):
            out.write(block)
            hashes.update(block)
            progress.add_bytes(len(block))
    return size, hashes


def _fsspec_download(url: str, part: Path, integrity: Integrity, options: NetworkOptions,
                     progress: _Progress) -> tuple[int, _Hashes]:
    """Fetch over a non-HTTP protocol (root://) through fsspec, continuing ``part`` by seeking."""
    import fsspec

    try:
        with fsspec.open(url, "rb") as src:
            size = src.size if isinstance(getattr(src, "size", None), int) else None
            offset = part.stat().st_size if part.exists() else 0
            if size is not None and offset > size:
                part.unlink()
                offset = 0
            progress.add_total(size or 0)
            hashes = _Hashes(integrity)
            if offset:
                _hash_file(part, hashes)
                src.seek(offset)
            transferred = 0
            with part.open("ab") as out:
                while block := src.read(options.chunk_size):
                    out.write(block)
                    hashes.update(block)
                    transferred += len(block)
                    progress.add_bytes(len(block))
    except FileNotFoundError as exc:
        raise _Permanent(f"not found: {_short(exc)}") from exc
    except PermissionError as exc:
        raise _Permanent(f"permission denied: {_short(exc)}") from exc
    except OSError as exc:
        raise _Transient(_short(exc)) from exc
    if size is not None and part.stat().st_size != size:
        raise _Transient(f"transfer ended after {part.stat().st_size} of {size} bytes")
    return transferred, hashes


def fetch_file(url: str, dest: Path, *, integrity: Integrity = _NO_INTEGRITY,
               options: NetworkOptions = NetworkOptions(), progress: _Progress | None = None,
               session: requests.Session | None = None) -> tuple[int, int]:
    """Download ``url`` to ``dest`` (atomically, resumably, verified).

    A whole file already at ``dest`` is kept: returns (0, 0). Otherwise returns
    (bytes transferred, attempts). Raises FetchError with the reason when it gives up;
    ``dest`` is then untouched and the ``.part`` file is kept for a later resume.
    """
    check_location(url)
    progress = progress or _NoProgress()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    own_session = session is None
    http = session or requests.Session()
    attempts = 0
    transferred = 0
    try:
        with _file_lock(dest):
            # Another thread or process may have finished this file while we waited for the lock.
            if is_complete(dest, integrity):
                return 0, 0
            download = _HttpDownload(url, part, integrity, options, progress, http)
            while True:
                attempts += 1
                try:
                    nbytes, hashes = _attempt(url, part, integrity, options, progress, download)
                    transferred += nbytes
                    _check_checksum(hashes, integrity)
                    _install(part, dest, url, hashes)
                    return transferred, attempts
                except _Permanent as exc:
                    if isinstance(exc, _ChecksumMismatch):
                        part.unlink(missing_ok=True)
                    log.warning("%s: %s; not retried", redact_url(url), exc)
                    raise FetchError(str(exc), attempts) from None
                except _Transient as exc:
                    if attempts > options.retries:
                        log.warning("%s: %s; gave up after %d attempts", redact_url(url), exc, attempts)
                        raise FetchError(f"{exc} (gave up after {attempts} attempts)",
                                         attempts) from None
                    delay = options.delay(attempts)
                    log.info("%s: %s; retrying in %.1f s", redact_url(url), exc, delay)
                    time.sleep(delay)
    finally:
        if own_session:
            http.close()


def _attempt(url: str, part: Path, integrity: Integrity, options: NetworkOptions,
             progress: _Progress, download: _HttpDownload) -> tuple[int, _Hashes]:
    scheme = url_scheme(url)
    if scheme in ("http", "https"):
        transferred = download.attempt()
        return transferred, download.hashes
    source = local_path(url)
    if source is not None:
        return _copy_local(source, part, integrity, options, progress)
    return _fsspec_download(url, part, integrity, options, progress)


def _install(part: Path, dest: Path, url: str, hashes: _Hashes) -> None:
    """Record the sidecar, then rename the whole file into place."""
    size = part.stat().st_size
    record = {"url": url, "size": size, "sha256": hashes.sha256.hexdigest(),
              "fetched": datetime.now(UTC).isoformat(timespec="seconds")}
    sidecar = sidecar_path(dest)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", "utf-8")
    tmp.replace(sidecar)
    part.replace(dest)


def verify_cached(path: Path, integrity: Integrity) -> str | None:
    """Re-hash a cached file; None if it matches the catalog checksum (or its sidecar's sha256),
    else the reason it does not."""
    if not is_complete(path, integrity):
        return "missing or wrong size"
    sidecar = read_sidecar(path) or {}
    expected = integrity.checksum
    if expected is None and "sha256" in sidecar:
        expected = f"sha256:{sidecar['sha256']}"
    if expected is None:
        return None
    want = Integrity(size=integrity.size, checksum=expected)
    hashes = _Hashes(want)
    _hash_file(path, hashes)
    try:
        _check_checksum(hashes, want)
    except _Permanent as exc:
        return str(exc)
    return None


def _as_release(release: Release | str) -> Release:
    return release if isinstance(release, Release) else load_release(release)


def fetch_samples(  # noqa: PLR0913 - the tests and the command line pass these as keywords, one per option
    release: Release | str, samples: Sequence[Sample | str] | None = None, *, base_url: str | None = None,
    protocol: str = "https", cache: Path | None = None, jobs: int = 4, progress: bool = True,
    options: NetworkOptions = NetworkOptions(), verify: bool = False,
) -> FetchReport:
    """Download ``samples`` (names, groups, ``data``/``mc``, or all) of ``release`` into the cache.

    Files already whole in the cache are skipped (with ``verify``, only if their checksum still
    matches). Failures do not stop the other downloads; they are listed in the report.
    """
    rel = _as_release(release)
    if base_url is not None:
        check_location(base_url)
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    selected: list[Sample] = []
    for item in samples or rel.samples:
        selected.extend([item] if isinstance(item, Sample) else rel.select([item]))
    selected = list(dict.fromkeys(selected))
    if selected:
        # A protocol the release lacks, or root:// without its extra, is one error, not N.
        check_location(rel.url(selected[0], protocol, base_url))
    root = cache_dir(cache)
    bars = _Bars(len(selected)) if progress else None
    started = time.perf_counter()

    def one(sample: Sample) -> FileResult:
        url = rel.url(sample, protocol, base_url)
        dest = cached_path(rel, sample, root)
        t0 = time.perf_counter()
        result = FileResult(sample=sample.name, url=url, path=str(dest), status="skipped")
        try:
            check_location(url)
            integrity = catalog_integrity(rel, sample)
            if is_complete(dest, integrity):
                if not verify or verify_cached(dest, integrity) is None:
                    return result
                # Right size, wrong content: fetch_file keeps whole-looking files, so drop it.
                log.warning("%s no longer matches its checksum; fetching it again", dest)
                dest.unlink()
            nbytes, attempts = fetch_file(url, dest, integrity=integrity, options=options,
                                          progress=bars or _NoProgress())
            result.bytes, result.attempts = nbytes, attempts
            result.status = "fetched" if attempts else "skipped"
        except FetchError as exc:
            result.status, result.reason, result.attempts = "failed", exc.reason, exc.attempts
        except ConfigError as exc:
            result.status, result.reason = "failed", str(exc)
        except OSError as exc:
            result.status, result.reason = "failed", f"cache: {exc}"
        finally:
            result.seconds = time.perf_counter() - t0
            if bars is not None:
                bars.file_done()
        return result

    try:
        with ThreadPoolExecutor(max_workers=min(jobs, max(1, len(selected)))) as pool:
            files = list(pool.map(one, selected))
    finally:
        if bars is not None:
            bars.close()
    return FetchReport(files=files, seconds=time.perf_counter() - started)


def refresh_catalog(release: str, cache: Path | None = None) -> Path:
    """Write a refreshed 2025e metadata snapshot from atlasopenmagic into the cache; its path.

    The shipped snapshot stays the default; the refreshed one is for comparison or for pointing
    a catalog loader at. Needs atlasopenmagic and network access to the ATLAS metadata service.
    """
    if release != "2025e":
        raise ConfigError("--refresh-catalog applies to release 2025e only (2020 is fixed)")
    try:
        import atlasopenmagic as atom
    except ImportError:
        raise ConfigError(
            "--refresh-catalog needs atlasopenmagic (not installed): pip install atlasopenmagic; "
            "the shipped snapshot is used meanwhile"
        ) from None
    from atlaspipe.physics.catalog import _raw_catalog

    raw = _raw_catalog(release)
    skim = raw["skim"]
    try:
        atom.set_release("2025e-13tev-beta")
        for dataset in raw["datasets"]:
            dsid = str(dataset["dataset_number"])
            meta = atom.get_metadata(dsid)
            for key in ("physics_short", "cross_section_pb", "genFiltEff", "kFactor",
                        "sumOfWeights", "nEvents"):
                if key in meta:
                    dataset[key] = meta[key]
            urls = list(atom.get_urls(dsid, skim=skim, protocol="https"))
            if urls:
                dataset["skims"] = [{"skim_type": skim, "file_list": urls}]
    except Exception as exc:  # network or API errors of a third-party client
        raise ConfigError(f"atlasopenmagic refresh failed: {_short(exc)}") from exc
    raw["snapshot"] = {"source": f"atlasopenmagic {getattr(atom, '__version__', '?')}",
                       "refreshed": datetime.now(UTC).isoformat(timespec="seconds")}
    out = cache_dir(cache) / release / "catalog-snapshot.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(raw, indent=1) + "\n", "utf-8")
    tmp.replace(out)
    log.info("wrote the refreshed %s catalog to %s", release, out)
    return out
