"""Checks on what a run may read: URL schemes everywhere, and the allowed input roots for submitted runs.

A submitted run is executed by workers that read whatever paths the request names. Without a
fence, ``--input ../../etc/passwd`` would have a worker open any file it can see, so the ``load``
worker accepts local paths only below the folders in ``ATLASPIPE_INPUT_ROOTS``.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from atlaspipe.config import cache_folder, package_data_folder
from atlaspipe.errors import ConfigError, InputError
from atlaspipe.io.sources import check_location

log = logging.getLogger(__name__)


def input_roots() -> list[Path]:
    """The folders a submitted run may read local files from: always the download cache and the
    package's embedded sample, plus ``$ATLASPIPE_INPUT_ROOTS`` (``:``-separated), by default this
    process's working folder. Setting the variable extends the always-allowed folders, never removes them."""
    text = os.environ.get("ATLASPIPE_INPUT_ROOTS", "").strip()
    if text:
        chosen = [Path(part).expanduser() for part in text.split(os.pathsep) if part.strip()]
        if not chosen:
            raise ConfigError("ATLASPIPE_INPUT_ROOTS names no folder")
    else:
        chosen = [Path.cwd()]
    return [root.resolve() for root in (cache_folder(), package_data_folder(), *chosen)]


def check_local_path(location: str, roots: Sequence[Path]) -> None:
    """Refuse a local path that resolves (symbolic links followed) outside every allowed root, and
    say "not found" for one that does not exist: that is what the user needs to fix."""
    path = Path(location)
    try:
        path.stat()
    except FileNotFoundError:
        reason = "symbolic link to a missing file" if path.is_symlink() else "file not found"
        raise InputError(location, reason) from None
    except OSError as exc:
        reason = "symbolic link loop" if exc.errno == errno.ELOOP else f"cannot access: {exc.strerror}"
        raise InputError(location, reason) from None
    resolved = path.resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        log.warning("refused the input %s: %s is outside the allowed input folders", location, resolved)
        raise InputError(
            location, "path is outside the allowed input folders "
            f"({', '.join(str(r) for r in roots)}); set ATLASPIPE_INPUT_ROOTS on the load worker to allow it"
        )


def check_submitted_inputs(inputs: Sequence[str]) -> None:
    """Every input of a submitted run: a URL with a readable scheme, or a path inside the input roots."""
    roots: list[Path] | None = None
    for location in inputs:
        if "://" in location:
            check_location(location, allow_file_url=False)
            continue
        if roots is None:
            roots = input_roots()
        check_local_path(location, roots)
