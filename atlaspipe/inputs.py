"""Checks on what a run may read: URL schemes everywhere, and the allowed input roots for submitted runs.

A submitted run is executed by workers that read whatever paths the request names. Without a
fence, ``--input ../../etc/passwd`` would have a worker open any file it can see, so the ``load``
worker accepts local paths only below the folders in ``ATLASPIPE_INPUT_ROOTS``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from atlaspipe.errors import ConfigError, InputError

ALLOWED_SCHEMES = ("http", "https", "root")
"""What uproot reads remotely here: HTTP(S) and XRootD."""


def check_url(location: str) -> None:
    """Refuse a URL whose scheme atlaspipe does not read, naming the URL and the schemes it does."""
    scheme = urlsplit(location).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise InputError(
            location, f"unsupported URL scheme '{scheme}' (atlaspipe reads {', '.join(ALLOWED_SCHEMES)} "
            "URLs and local paths)"
        )


def input_roots() -> list[Path]:
    """The folders a submitted run may read local files from: ``$ATLASPIPE_INPUT_ROOTS`` (``:``-separated),
    by default this process's working folder, the download cache and the embedded sample's folder."""
    text = os.environ.get("ATLASPIPE_INPUT_ROOTS", "").strip()
    if text:
        roots = [Path(part).expanduser() for part in text.split(os.pathsep) if part.strip()]
        if not roots:
            raise ConfigError("ATLASPIPE_INPUT_ROOTS names no folder")
    else:
        from atlaspipe import embedded
        from atlaspipe.config import RuntimeSettings

        roots = [Path.cwd(), RuntimeSettings.from_env().cache_dir, embedded.shipped_dir(), embedded.cache_dir()]
    return [root.resolve() for root in roots]


def check_local_path(location: str, roots: Sequence[Path]) -> None:
    """Refuse a local path that resolves (symbolic links followed) outside every allowed root."""
    resolved = Path(location).resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise InputError(
            location, "path is outside the allowed input folders "
            f"({', '.join(str(r) for r in roots)}); set ATLASPIPE_INPUT_ROOTS on the load worker to allow it"
        )


def check_submitted_inputs(inputs: Sequence[str]) -> None:
    """Every input of a submitted run: a URL with a readable scheme, or a path inside the input roots."""
    roots: list[Path] | None = None
    for location in inputs:
        if "://" in location:
            check_url(location)
            continue
        if roots is None:
            roots = input_roots()
        check_local_path(location, roots)
