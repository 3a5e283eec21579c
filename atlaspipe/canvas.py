"""The one place where the task graph is built: ``chord(group(process_chunk…), aggregate) | finalize``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import chain, chord, group
from celery.canvas import Signature

from atlaspipe.chunks import Chunk


def chunk_task_id(run_id: str, generation: int, chunk_id: int) -> str:
    """The Celery task id of one chunk of one launch of a run.

    Ids derived from the run let the submitter's watchdog look up the state of any chunk's task,
    and let the run's task results be deleted by prefix once the run is done.
    """
    return f"{run_id}.g{generation}.c{chunk_id}"


def run_graph(run_id: str, chunks: Sequence[Chunk], config: dict[str, Any], generation: int = 0) -> Signature:
    """Process every chunk, then aggregate, then finalize.

    The aggregate step is immutable: it reads the chunk histograms from the run records, so the
    chord passes only tiny acknowledgements, whatever the number of chunks. The chord is not the
    only way to completion (Celery chords can lose their callback when a header task dies, celery
    #2911 and #4207): the chunk that stores the last result, and the submitter, can trigger the
    same ``completion_graph``; a claim in the run records makes exactly one of them run it.
    """
    from atlaspipe.tasks import aggregate_run, finalize_run, process_chunk

    header = group(
        process_chunk.signature((run_id, chunk.to_dict(), config),
                                task_id=chunk_task_id(run_id, generation, chunk.chunk_id))
        for chunk in chunks
    )
    return chain(chord(header, aggregate_run.si(run_id)), finalize_run.si(run_id))


def completion_graph(run_id: str, owner: str) -> Signature:
    """Aggregate then finalize a run whose chunks all have results, outside the chord; ``owner``
    holds the run's completion claim."""
    from atlaspipe.tasks import aggregate_run, finalize_run

    return chain(aggregate_run.si(run_id, owner=owner), finalize_run.si(run_id))
