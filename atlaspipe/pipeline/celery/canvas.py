"""The one place where the task graph is built:
``chord(group(process_chunk…), aggregate) | chord(group(render_piece…), finalize)``.

Signatures are made by task name, so this module needs the app only, never the task functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery, chain, chord, group
from celery.canvas import Signature

from atlaspipe.config import AnalysisConfig
from atlaspipe.model import Chunk, RunRequest
from atlaspipe.pipeline.stages import AnalysisStages

PLAN_TASK = "atlaspipe.plan_run"
RESUME_TASK = "atlaspipe.resume_run"
CANCEL_TASK = "atlaspipe.cancel_run"
CLEAN_TASK = "atlaspipe.clean_runs"
PROCESS_TASK = "atlaspipe.process_chunk"
AGGREGATE_TASK = "atlaspipe.aggregate_run"
RENDER_TASK = "atlaspipe.render_piece"
FINALIZE_TASK = "atlaspipe.finalize_run"


def task(app: Celery, name: str, **options: Any) -> Signature:
    """A signature of the atlaspipe task ``name`` whose time limits are those of the worker that runs it.

    Celery puts the sending process's ``task_time_limit`` and ``task_soft_time_limit`` in each
    message, and a worker obeys the message's over its own: the limits an operator sets on the
    process workers would otherwise be overridden by the load worker's (or the submitter's).
    """
    return app.signature(name, time_limit=None, soft_time_limit=None, **options)


def chunk_task_id(run_id: str, generation: int, chunk_id: int) -> str:
    """The Celery task id of one chunk of one launch of a run.

    The generation in the id tells a redelivered chunk of an old launch from the chunk of a resume,
    so each generation counts its own deliveries.
    """
    return f"{run_id}.g{generation}.c{chunk_id}"


def submission(app: Celery, request: RunRequest) -> Signature:
    """The message that starts a run: the ``load`` stage registers, plans and launches it."""
    return task(app, PLAN_TASK, args=[request.to_jsonable()], task_id=f"{request.run_id}.plan")


def run_graph(app: Celery, run_id: str, chunks: Sequence[Chunk], config: AnalysisConfig,
              generation: int = 0) -> Signature:
    """Process every chunk, then aggregate, then render the outputs' pieces in parallel, then finalize.

    The aggregate step is immutable: it reads the chunk histograms from the run records, so the
    chord passes only tiny acknowledgements, whatever the number of chunks. The chord is not the
    only way to completion (Celery chords can lose their callback when a header task dies, celery
    #2911 and #4207): the chunk that stores the last result can launch the same
    ``completion_graph``; a claim in the run records makes exactly one of them run it.
    """
    settings = config.to_json_dict()
    header = group(
        task(app, PROCESS_TASK, args=(run_id, chunk.to_jsonable(), settings),
                      task_id=chunk_task_id(run_id, generation, chunk.chunk_id))
        for chunk in chunks
    )
    return chain(chord(header, task(app, AGGREGATE_TASK, args=(run_id,), immutable=True)),
                 finishing(app, run_id))


def completion_graph(app: Celery, run_id: str, owner: str) -> Signature:
    """Aggregate then finalize a run whose chunks all have results, outside the chord; ``owner``
    holds the run's completion claim."""
    return chain(task(app, AGGREGATE_TASK, args=(run_id,), kwargs={"owner": owner}, immutable=True),
                 finishing(app, run_id))


def finishing(app: Celery, run_id: str) -> Signature:
    """After the aggregate: each piece of the outputs (the fit, each figure) in its own task on the
    plot queue, then one small step that writes the documents and the final state.

    The pieces answer with their statistics or file names (a few kB in all), which the chord hands
    to ``finalize``; a piece that fails answers with its reason rather than raising, so the chord
    still fires and ``finalize`` fails the run with that reason. Only the holder of the run's
    ``finalize`` claim writes the final state.
    """
    pieces = group(task(app, RENDER_TASK, args=(run_id, piece), immutable=True)
                   for piece in AnalysisStages.pieces())
    return chord(pieces, task(app, FINALIZE_TASK, args=(run_id,)))
