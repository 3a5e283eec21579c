"""Imports a worker's stage needs, done once in the worker's main process before its pool forks.

The libraries behind the plot stage (pyhf, matplotlib, mplhep) take one to two seconds to import,
and the process stage's (uproot, hist) most of a second. Left to the first task, that time lands
inside the first run a fresh worker serves, and again in every pool child; imported before the
fork, the children inherit them and a run's finalize pays only for its own work. A worker's
queues (``-Q``) say which stages it serves.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from celery.signals import celeryd_after_setup

log = logging.getLogger(__name__)

STAGE_LIBRARIES: dict[str, tuple[str, ...]] = {
    "process": ("uproot", "hist", "atlaspipe.io.reading"),
    "aggregate": ("hist",),
    "plot": ("matplotlib.pyplot", "mplhep", "pyhf", "atlaspipe.results.outputs"),
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


def _preload_for_queues(instance: Any = None, **_: Any) -> None:
    try:
        queues = list(instance.app.amqp.queues.consume_from)
    except AttributeError:
        return
    started = time.perf_counter()
    loaded = preload(queues)
    if loaded:
        log.info("preloaded %s in %.2f s", ", ".join(loaded), time.perf_counter() - started)


# Sent once logging is set up and the queues are chosen, before the pool starts its children.
celeryd_after_setup.connect(_preload_for_queues, weak=False)
