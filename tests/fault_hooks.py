"""Faults injected into real workers by the tests, loaded with ``celery worker --include tests.fault_hooks``.

They live here, not in the package: production workers never carry them.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from atlaspipe.pipeline import processing

KILL_MAIN_MARK = os.environ.get("ATLASPIPE_TEST_KILL_MAIN_ON", "")
"""A chunk whose file path contains this text kills its worker's main process on every delivery."""

SLOW_CHUNK_SECONDS = float(os.environ.get("ATLASPIPE_TEST_SLOW_CHUNK_SECONDS") or 0)
"""Every chunk takes at least this long: a run slow enough to watch while it goes on."""

_process_chunk = processing.process_chunk


def _process_or_die(chunk: Any, *args: Any, **kwargs: Any) -> Any:
    if KILL_MAIN_MARK and KILL_MAIN_MARK in chunk.source:
        # As an out-of-memory kill would, while the chunk is being read: the main process first (its
        # unacknowledged message goes back to the queue), then this pool child.
        os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    if SLOW_CHUNK_SECONDS:
        time.sleep(SLOW_CHUNK_SECONDS)
    return _process_chunk(chunk, *args, **kwargs)


processing.process_chunk = _process_or_die
