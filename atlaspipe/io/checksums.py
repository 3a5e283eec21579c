"""The sha256 of each local input file, for the manifest: computed once per version of a file, and
off the end of the run.

Hashing reads every byte of every input (0.9 s for the 1.3 GB benchmark dataset on one core), and
the finalize step used to do it after the last plot, on every run. Planning now starts it on a
thread of its own (``hash_in_background``), which the chunks overlap; and each digest is kept in the
cache folder under the file's identity: device, inode, size, and mtime and ctime in nanoseconds.
A write, a replacement or a ``touch`` changes one of them (ctime cannot be set back), so a kept
digest is always that of the bytes the file holds now.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from atlaspipe.config import cache_folder
from atlaspipe.io import files

log = logging.getLogger(__name__)

Identity = tuple[str, int, int, int, int, int]
"""(real path, device, inode, size, mtime ns, ctime ns)."""

class _Hashing:
    """This process's digests in progress or done, and the one thread computing them."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[Identity, Future[str | None]] = {}
        self.thread: ThreadPoolExecutor | None = None

    def submit(self, source: str, identity: Identity) -> None:
        with self.lock:
            if identity in self.pending:
                return
            if self.thread is None:
                self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atlaspipe-checksums")
            future = self.thread.submit(_checksum, source, identity)
            self.pending[identity] = future
        # Only digests in progress are remembered here; a done one is in the cache folder, where a
        # later run (or the finalize step, in another worker) finds it.
        future.add_done_callback(lambda done: self.forget(identity, done))

    def forget(self, identity: Identity, future: Future[str | None]) -> None:
        with self.lock:
            if self.pending.get(identity) is future:
                del self.pending[identity]

    def started(self, identity: Identity) -> Future[str | None] | None:
        with self.lock:
            return self.pending.get(identity)


_hashing = _Hashing()
# A forked child (a Celery pool process) has none of its parent's threads, so it starts afresh.
os.register_at_fork(after_in_child=_hashing.reset)


def file_checksum(source: str) -> str | None:
    """``sha256:<hex>`` of a local file; None for a remote one (its server's checksum is not ours
    to trust) or one that cannot be read (a warning says why)."""
    if "://" in source:
        return None
    identity = _identity(source)
    if identity is None:
        return None
    started = _hashing.started(identity)
    return started.result() if started is not None else _checksum(source, identity)


def hash_in_background(sources: Iterable[str]) -> None:
    """Start hashing the local ``sources`` not known yet, one after another on a thread of this
    process; :func:`file_checksum` then waits for a file's digest instead of reading it again."""
    for source in sources:
        identity = None if "://" in source else _identity(source)
        if identity is not None:
            _hashing.submit(source, identity)


def _identity(source: str) -> Identity | None:
    identity = _identity_quietly(source)
    if identity is None:
        log.warning("no checksum for %s in the manifest: cannot read its status (missing or no permission)",
                    source)
    return identity


def kept_folder() -> Path:
    """Where the digests are kept: ``checksums/`` in the cache folder."""
    return cache_folder() / "checksums"


def _kept_at(identity: Identity) -> Path:
    name = hashlib.sha256(json.dumps(identity).encode()).hexdigest()
    return kept_folder() / f"{name}.json"


def _checksum(source: str, identity: Identity) -> str | None:
    kept = _kept_at(identity)
    try:
        record = json.loads(kept.read_text("utf-8"))
        if record.get("identity") == list(identity):
            return str(record["sha256"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    try:
        with Path(source).open("rb") as handle:
            digest = "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        log.warning("no checksum for %s in the manifest: %s", source, exc)
        return None
    if _identity(source) != identity:
        # Changed while being read: the digest belongs to no single version of the file.
        log.warning("no checksum for %s in the manifest: the file changed while it was read", source)
        return None
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        files.write_text(kept, json.dumps({"identity": list(identity), "sha256": digest}) + "\n")
        _prune(kept.parent)
    except OSError as exc:
        log.debug("checksum of %s not kept in %s: %s", source, kept.parent, exc)
    return digest


KEPT_RECORDS = 1000
"""Above this many kept digests, those of files that are gone or changed are removed."""


def _prune(folder: Path) -> None:
    records = list(folder.glob("*.json"))
    if len(records) <= KEPT_RECORDS:
        return
    for record in records:
        try:
            identity = tuple(json.loads(record.read_text("utf-8"))["identity"])
            stale = _identity_quietly(str(identity[0])) != identity
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            stale = True
        if stale:
            record.unlink(missing_ok=True)


def _identity_quietly(source: str) -> Identity | None:
    try:
        path = Path(source).resolve()
        stat = path.stat()
    except OSError:
        return None
    return (str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
