"""Writing a run's files so that a reader never sees half a file and a failure leaves no debris."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def temporary_name(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this process, for writing before the rename."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on any failure it is removed.

    Libraries that write files themselves (matplotlib, uproot) get the temporary path, so a full
    disk or a crash mid-write never leaves a truncated output under its real name.
    """
    tmp = temporary_name(path)
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text, "utf-8")


def write_text_even_when_full(path: Path, text: str) -> None:
    """Like ``write_text``, but on a full disk overwrite ``path`` in place instead.

    A run's state must reach its folder even when the disk filled up: the temporary copy needs new
    blocks, while rewriting a small file that exists reuses the blocks it already holds.
    """
    try:
        write_text(path, text)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not path.exists():
            raise
        log.warning("disk full: rewriting %s in place", path)
        with path.open("r+", encoding="utf-8") as handle:
            handle.write(text)
            handle.truncate()


def remove_debris(folder: Path) -> list[Path]:
    """Remove temporary files this module's writers left in ``folder`` (a process killed mid-write)."""
    removed = []
    with contextlib.suppress(OSError):
        for candidate in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                candidate.unlink()
                removed.append(candidate)
    if removed:
        log.info("removed %d unfinished file(s) from %s", len(removed), folder)
    return removed
