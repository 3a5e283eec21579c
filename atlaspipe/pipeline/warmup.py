"""The libraries each stage imports on first use, imported ahead of it.

The plot stage's (pyhf, matplotlib, mplhep) take one to two seconds to import, and the process
stage's (uproot, hist) most of a second. A Celery worker imports its queues' before its pool forks
(``pipeline.celery.warmup``); ``atlaspipe run`` imports the plot stage's on a thread while its
chunks are processed, on the core the chunks leave idle, instead of after the last one.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterable

log = logging.getLogger(__name__)

STAGE_LIBRARIES: dict[str, tuple[str, ...]] = {
    "process": ("uproot", "hist", "atlaspipe.io.reading"),
    "aggregate": ("hist",),
    "plot": ("matplotlib.pyplot", "mplhep", "pyhf", "uproot", "atlaspipe.results.outputs", "atlaspipe.results.exports"),
}
"""What each stage's tasks import on first use, by queue name (celeryconfig.STAGE_QUEUES)."""


def modules_for(queues: Iterable[str]) -> list[str]:
    """The modules to import for a worker consuming ``queues``, each once, in a stable order."""
    wanted: list[str] = []
    for queue in sorted(queues):
        wanted.extend(name for name in STAGE_LIBRARIES.get(queue, ()) if name not in wanted)
    return wanted


def preload(queues: Iterable[str]) -> list[str]:
    """Import what ``queues`` need; a module that fails to import is logged and left to the task,
    which then reports the error where it belongs."""
    names = modules_for(queues)
    if any(name.startswith("matplotlib") for name in names):
        import matplotlib

        # Before pyplot is imported: a worker has no display, and the plot stage draws with Agg.
        matplotlib.use("Agg")
    loaded = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            log.warning("could not preload %s: %s", name, exc)
            continue
        loaded.append(name)
    return loaded


def preload_in_background(queues: Iterable[str]) -> threading.Thread:
    """:func:`preload` on a daemon thread; the caller goes on (a later import of the same module
    waits for this one)."""
    thread = threading.Thread(target=preload, args=(list(queues),), name="atlaspipe-preload", daemon=True)
    thread.start()
    return thread
