"""The embedded demo sample: a small 2020-release set of files made by :mod:`atlaspipe.generate.events`.

It ships in the package under ``atlaspipe/data/embedded/2020/`` in the public server's layout
(``Data/data_A.4lep.root``…, ``MC/mc_<dsid>.<name>.4lep.root``). Where an install lacks those files
they are regenerated, identically, into ``$ATLASPIPE_CACHE_DIR/embedded/2020`` on first use.
Regenerate the shipped copy with ``atlaspipe generate --embedded``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from atlaspipe.config import cache_folder, package_data_folder
from atlaspipe.generate.events import GenerationReport, generate_release
from atlaspipe.physics.catalog import load_release

log = logging.getLogger(__name__)

EMBEDDED_RELEASE = "2020"
EMBEDDED_SEED = 2020
EMBEDDED_EVENTS_PER_SAMPLE = 2500
"""Equal MC counts rather than natural ones: every sample then has enough events to plot."""


def shipped_dir() -> Path:
    """Where the package keeps the embedded files."""
    return package_data_folder() / "embedded" / EMBEDDED_RELEASE


def cache_dir() -> Path:
    """Where the embedded files are regenerated when the package lacks them."""
    return cache_folder() / "embedded" / EMBEDDED_RELEASE


def _relative_paths() -> list[str]:
    return [sample.path for sample in load_release(EMBEDDED_RELEASE).samples]


def _complete(folder: Path) -> bool:
    return all((folder / path).is_file() for path in _relative_paths())


def generate_embedded(output_dir: Path) -> GenerationReport:
    """Write the embedded sample into ``output_dir`` (fixed seed and event counts)."""
    release = load_release(EMBEDDED_RELEASE)
    counts = {s.name: EMBEDDED_EVENTS_PER_SAMPLE for s in release.samples if not s.is_data}
    return generate_release(EMBEDDED_RELEASE, output_dir, seed=EMBEDDED_SEED,
                            events_per_sample_override=counts, compression="zlib")


def embedded_sample_dir() -> Path:
    """The folder holding the embedded sample: the shipped copy, else a regenerated cached one."""
    if _complete(shipped_dir()):
        return shipped_dir()
    target = cache_dir()
    if not _complete(target):
        log.info("this install lacks the embedded sample; generating it into %s", target)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Generate aside and move into place, so concurrent first uses never see half a sample.
        scratch = Path(tempfile.mkdtemp(prefix="embedded-", dir=target.parent))
        try:
            generate_embedded(scratch)
            if target.exists():
                shutil.rmtree(target)
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def embedded_files() -> list[Path]:
    """The embedded sample's files, data periods first, in catalog order."""
    folder = embedded_sample_dir()
    return [folder / path for path in _relative_paths()]
