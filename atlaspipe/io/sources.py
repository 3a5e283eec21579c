"""Where a sample is read from: a complete cached copy, else its URL (or a fetch first).

The cache mirrors the server layout, ``<cache>/<release>/<sample.path>``, so a cache folder can
itself be served as a mirror. Next to each fetched file ``fetch`` writes a small sidecar
(``<file>.atlaspipe.json``) recording the URL, size and sha256 it was downloaded with.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests

from atlaspipe.config import cache_folder, redact_url
from atlaspipe.errors import ConfigError, InputError
from atlaspipe.physics.catalog import Release, Sample, _raw_catalog

log = logging.getLogger(__name__)

ALLOWED_SCHEMES = ("", "file", "http", "https", "root")
SIDECAR_SUFFIX = ".atlaspipe.json"
CHECKSUM_ALGORITHMS = ("sha256", "md5", "adler32")
XROOTD_HINT = (
    "root:// URLs need the optional dependency fsspec-xrootd: pip install 'atlaspipe[xrootd]'"
)


@dataclass(frozen=True)
class Integrity:
    """What the catalog promises about a file: its size in bytes and a ``algo:hex`` checksum."""

    size: int | None = None
    checksum: str | None = None


def cache_dir(explicit: Path | None = None) -> Path:
    """The download cache: ``explicit``, else the configured cache folder."""
    return explicit if explicit is not None else cache_folder()


def cached_path(release: Release | str, sample: Sample, cache: Path | None = None) -> Path:
    """Where the cached copy of ``sample`` lives (whether or not it exists)."""
    name = release if isinstance(release, str) else release.name
    return cache_dir(cache) / name / sample.path


def sidecar_path(path: Path) -> Path:
    """The sidecar that records how ``path`` was fetched."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar of ``path``, or None when missing or unreadable."""
    try:
        loaded = json.loads(sidecar_path(path).read_text("utf-8"))
    except OSError:
        return None
    except ValueError as exc:
        log.warning("%s: unreadable (%s); ignored", sidecar_path(path), exc)
        return None
    return loaded if isinstance(loaded, dict) else None


def root_file_end(path: Path) -> int | None:
    """The ``fEND`` offset in a ROOT file header (the size of a whole file), or None if not ROOT."""
    try:
        with path.open("rb") as handle:
            header = handle.read(20)
    except OSError:
        return None
    if len(header) < 16 or header[:4] != b"root":
        return None
    version = struct.unpack(">i", header[4:8])[0]
    # Files over 2 GB use the "big file" header (version + 1000000) with 64-bit offsets.
    if version >= 1_000_000:
        return int(struct.unpack(">q", header[12:20])[0]) if len(header) >= 20 else None
    return int(struct.unpack(">i", header[12:16])[0])


@cache
def _raw_entries(release: str) -> dict[str, dict[str, Any]]:
    """The catalog's raw JSON entry per sample name, where optional ``size``/``checksum`` live."""
    raw = _raw_catalog(release)
    entries: dict[str, dict[str, Any]] = {}
    for entry in raw.get("data", []) + raw.get("mc", []):
        entries[entry["name"]] = entry
    skim = raw.get("skim")
    for dataset in raw.get("datasets", []):
        # In the atlasopenmagic layout the per-file facts belong to the skim, not the dataset.
        chosen: dict[str, Any] = next(
            (s for s in dataset.get("skims", []) if s.get("skim_type") == skim), {}
        )
        entries[dataset["physics_short"]] = {**dataset, **chosen}
    return entries


def catalog_integrity(release: Release | str, sample: Sample) -> Integrity:
    """The size and checksum the catalog gives for ``sample``, where it gives them."""
    name = release if isinstance(release, str) else release.name
    size = getattr(sample, "size", None)
    checksum = getattr(sample, "checksum", None)
    entry = _raw_entries(name).get(sample.name, {})
    size = size if size is not None else entry.get("size")
    checksum = checksum if checksum is not None else entry.get("checksum")
    if checksum is not None:
        algorithm = str(checksum).partition(":")[0].lower()
        if algorithm not in CHECKSUM_ALGORITHMS:
            raise ConfigError(
                f"catalog {name}, sample {sample.name}: checksum '{checksum}' is not "
                f"'<algorithm>:<hex>' with algorithm one of {', '.join(CHECKSUM_ALGORITHMS)}"
            )
    return Integrity(size=int(size) if size is not None else None,
                     checksum=str(checksum).lower() if checksum is not None else None)


def expected_size(path: Path, integrity: Integrity = Integrity()) -> int | None:
    """The size a whole copy of ``path`` must have: catalog, else sidecar, else ROOT header."""
    if integrity.size is not None:
        return integrity.size
    sidecar = read_sidecar(path)
    if sidecar is not None and isinstance(sidecar.get("size"), int):
        return int(sidecar["size"])
    return root_file_end(path)


def is_complete(path: Path, integrity: Integrity = Integrity()) -> bool:
    """Whether ``path`` is a whole file, judged by size (checksums are checked at fetch time)."""
    if not path.is_file():
        return False
    actual = path.stat().st_size
    wanted = expected_size(path, integrity)
    return wanted is not None and actual == wanted


def complete_cached_copy(release: Release, sample: Sample,
                         cache: Path | None = None) -> Path | None:
    """The cached copy of ``sample`` if a whole one is present, else None."""
    path = cached_path(release, sample, cache)
    return path if is_complete(path, catalog_integrity(release, sample)) else None


def check_location(location: str, allow_file_url: bool = True) -> str:
    """``location`` unchanged if atlaspipe can read it, else an InputError naming it: the one URL
    policy of atlaspipe, for inputs and mirrors alike.

    Local paths, ``http(s)://`` and ``root://`` are accepted; ``root://`` only when fsspec-xrootd is
    installed, since uproot reads it through fsspec. ``file://`` names a local mirror folder; an
    input is a plain path instead (``allow_file_url=False``), so that it is fenced like one.
    """
    scheme = url_scheme(location)
    allowed = ALLOWED_SCHEMES if allow_file_url else tuple(s for s in ALLOWED_SCHEMES if s != "file")
    if scheme not in allowed:
        raise InputError(location, f"unsupported URL scheme '{scheme}'; atlaspipe reads local paths and "
                         f"{', '.join(s for s in allowed if s)} URLs")
    if scheme == "root" and importlib.util.find_spec("fsspec_xrootd") is None:
        raise InputError(location, XROOTD_HINT)
    if scheme in ("http", "https") and not urlsplit(location).netloc:
        raise InputError(location, "URL has no host")
    return location


def url_scheme(location: str) -> str:
    """The lower-case scheme of ``location``, or "" for a plain path."""
    if "://" not in location:
        return ""
    return location.split("://", 1)[0].lower()


def local_path(location: str) -> Path | None:
    """The filesystem path of a plain path or ``file://`` URL, else None."""
    scheme = url_scheme(location)
    if scheme == "":
        return Path(location).expanduser()
    if scheme == "file":
        return Path(unquote(urlsplit(location).path))
    return None


def resolve(release: Release, sample: Sample, *, base_url: str | None = None,
            protocol: str = "https", cache: Path | None = None) -> str:
    """What uproot should open for ``sample``: the cached path if whole, else the URL to stream.

    Downloading first is ``atlaspipe.io.fetch``'s business; after it, this finds the cached copy.
    """
    if base_url is not None:
        check_location(base_url)
    cached = complete_cached_copy(release, sample, cache)
    if cached is not None:
        log.debug("%s: the cached copy %s", sample.name, cached)
        return str(cached)
    url = check_location(release.url(sample, protocol, base_url))
    log.debug("%s: no whole cached copy; reading %s", sample.name, redact_url(url))
    path = local_path(url)
    return str(path) if path is not None else url


def check_remote_readable(url: str, timeout: float = 10.0) -> None:
    """Raise InputError unless ``url`` answers a HEAD request (or exists, for a local path)."""
    check_location(url)
    path = local_path(url)
    if path is not None:
        if not path.is_file():
            raise InputError(url, "no such file")
        return
    if url_scheme(url) not in ("http", "https"):
        return
    try:
        response = requests.head(url, timeout=timeout, allow_redirects=True)
    except requests.RequestException as exc:
        raise InputError(url, f"not reachable: {exc}") from exc
    if response.status_code >= 400:
        raise InputError(url, f"HTTP {response.status_code} {response.reason}")


RANGE_HINT = ("download it first (atlaspipe fetch --base-url …, or --fetch), or serve the files with a server "
              "that supports Range")


def http_problem(url: str, timeout: float = 10.0) -> str | None:
    """Why ``url`` cannot be streamed, when opening it failed: unreachable, an HTTP error, or a server
    without HTTP range requests (uproot reads a remote file by ranges; ``python -m http.server``
    answers every request with the whole file). None when the server looks fine, so the file is to blame.
    """
    if url_scheme(url) not in ("http", "https"):
        return None
    try:
        with requests.get(url, headers={"Range": "bytes=0-3"}, timeout=timeout, stream=True,
                          allow_redirects=True) as response:
            status, reason = response.status_code, response.reason
            ranged = status == 206 or response.headers.get("Content-Range", "").startswith("bytes 0-3/")
    except requests.RequestException as exc:
        return f"not reachable ({type(exc).__name__}: {_first_line(exc)})"
    if status >= 400:
        return f"HTTP {status} {reason}"
    if not ranged:
        return f"server does not support HTTP range requests (answered {status} to a Range request); {RANGE_HINT}"
    return None


def _first_line(exc: BaseException) -> str:
    """The cause in a few words: the system's error (``[Errno 111] Connection refused``) where requests
    wraps one in urllib3's long messages, else the first line."""
    text = str(exc).strip()
    errno_text = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    if errno_text:
        return errno_text.group(0).strip()
    lines = text.splitlines()
    return lines[0][:200] if lines else ""
