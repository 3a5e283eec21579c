"""The one place where the task graph is built: ``chord(group(process_chunk…), aggregate) | finalize``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import chain, chord, group
from celery.canvas import Signature

from atlaspipe.chunks import Chunk


def run_graph(run_id: str, chunks: Sequence[Chunk], config: dict[str, Any]) -> Signature:
    """Process every chunk, then aggregate, then finalize.

    The aggregate step is immutable: it reads the chunk histograms from the run records, so the
    chord passes only tiny acknowledgements, whatever the number of chunks.
    """
    from atlaspipe.tasks import aggregate_run, finalize_run, process_chunk

    header = group(process_chunk.s(run_id, chunk.to_dict(), config) for chunk in chunks)
    body = aggregate_run.si(run_id)
    return chain(chord(header, body), finalize_run.si(run_id))
