"""Imports a worker's stage needs, done once in the worker's main process before its pool forks.

Left to the first task, that time lands inside the first run a fresh worker serves, and again in
every pool child; imported before the fork, the children inherit them and a run's finalize pays
only for its own work. A worker's queues (``-Q``) say which stages it serves; what each needs is in
``atlaspipe.pipeline.warmup``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.signals import celeryd_after_setup

from atlaspipe.pipeline.warmup import preload

log = logging.getLogger(__name__)


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
