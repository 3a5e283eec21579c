"""The Celery executor's client: send a run's messages and follow it from the records the workers write.

A client never writes a run's records or its folder: submit, resume, cancel and clean are messages
to the ``load`` stage, whose worker carries them out through the lifecycle, so what the web report
and ``status`` show does not depend on a submitter staying alive. Reading (``status``, ``list``,
following) needs only the result backend; the broker is only for sending and for the hints about
stages without a worker.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from atlaspipe.config import redact_url
from atlaspipe.errors import AtlaspipeError, BackendUnavailable, ConfigError, RunFailedError
from atlaspipe.model import RunRequest, RunState, RunStatus
from atlaspipe.pipeline.celery.canvas import CANCEL_TASK, CLEAN_TASK, RESUME_TASK, submission, task
from atlaspipe.pipeline.celery.records import RunRecords
from atlaspipe.pipeline.lifecycle import STALL_SECONDS, run_stalled

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
"""How often following reads the run's status: one small Redis read, while the user waits for the
last output (at 0.5 s it added 0.25 s on average to every run's end)."""
HINT_AFTER_SECONDS = 10.0
"""A stage queue without a consumer for this long gets a hint naming the worker to start."""
CONSUMER_CHECK_SECONDS = 2.0
BACKEND_GRACE_SECONDS = 600.0
"""How long following tolerates an unreachable result backend before giving up (the run goes on)."""
STAGES_AHEAD = {
    RunState.SUBMITTED: ("load", "process", "aggregate", "plot"),
    RunState.PLANNING: ("load", "process", "aggregate", "plot"),
    RunState.RUNNING: ("process", "aggregate", "plot"),
    RunState.AGGREGATING: ("aggregate", "plot"),
    RunState.FINALIZING: ("plot",),
}
"""The stage queues a run in each state still needs a worker on."""


def worker_command(queue: str) -> str:
    return f"celery -A atlaspipe worker -Q {queue}"


@dataclass
class _Watch:
    """What following has seen so far, to tell progress from a stall and to say each hint once."""

    seen_record: bool = False
    backend_down_since: float | None = None
    last_change: float = 0.0
    last_fingerprint: tuple[Any, ...] = ()
    idle_queue_since: dict[str, float] | None = None
    hinted: frozenset[str] = frozenset()
    stall_noted: bool = False


class CeleryClient:
    """Sends runs to the workers and reads their records; ``note`` receives one-line messages."""

    def __init__(self, broker_url: str, backend_url: str, note: Callable[[str], None] | None = None) -> None:
        if not backend_url.startswith(("redis://", "rediss://")):
            raise ConfigError(f"result backend {redact_url(backend_url)}: atlaspipe needs Redis (run records)")
        self.broker_url = broker_url
        self.backend_url = backend_url
        self.records = RunRecords(backend_url, attempts=2)
        self.note = note or (lambda text: log.warning("%s", text))
        self._app: Any = None

    # --- sending ---------------------------------------------------------------------------------

    @property
    def app(self) -> Any:
        if self._app is None:
            from atlaspipe.pipeline.celery.app import create_app

            self._app = create_app(self.broker_url, self.backend_url)
        return self._app

    def check_broker(self) -> None:
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, interval_start=0, interval_step=1, timeout=4)
        except Exception as exc:
            raise AtlaspipeError(f"broker {redact_url(self.broker_url)} unreachable: {exc}") from None

    def _send(self, signature: Any) -> None:
        self.check_broker()
        result = signature.apply_async(retry=True, retry_policy={"max_retries": 3, "interval_start": 0.5,
                                                                 "interval_step": 1})
        # Celery's async results unsubscribe in __del__; collected at interpreter exit they print
        # "Exception ignored … sys.meta_path is None". Collect them now, while imports still work.
        del result
        gc.collect()

    def submit(self, request: RunRequest) -> None:
        self.records.ping()
        self._send(submission(self.app, request))

    def resume(self, run_dir: Path) -> None:
        self._send(task(self.app, RESUME_TASK, args=[str(run_dir)]))

    def cancel(self, run_id: str) -> None:
        self._send(task(self.app, CANCEL_TASK, args=[run_id]))

    def clean(self, older_than_days: float) -> None:
        self._send(task(self.app, CLEAN_TASK, args=[older_than_days]))

    # --- reading ---------------------------------------------------------------------------------

    def status(self, run_id: str) -> RunStatus:
        try:
            return self.records.status(run_id)
        except redis.RedisError as exc:
            raise BackendUnavailable(f"result backend {redact_url(self.backend_url)} unreachable: {exc}") from None

    def runs(self, limit: int) -> list[RunStatus]:
        try:
            ids = self.records.run_ids(limit)
        except redis.RedisError as exc:
            raise BackendUnavailable(f"result backend {redact_url(self.backend_url)} unreachable: {exc}") from None
        found = []
        for run_id in ids:
            try:
                found.append(self.records.status(run_id))
            except AtlaspipeError:
                continue
        return found

    def consumers(self, queue: str) -> int | None:
        """Workers consuming ``queue`` now, or None if the broker cannot tell."""
        try:
            with self.app.connection_for_read() as connection:
                declared = connection.default_channel.queue_declare(queue=queue, passive=True)
                return int(declared.consumer_count)
        except Exception:
            return None

    def queued(self, queue: str) -> int | None:
        try:
            with self.app.connection_for_read() as connection:
                return int(connection.default_channel.queue_declare(queue=queue, passive=True).message_count)
        except Exception:
            return None

    # --- following -------------------------------------------------------------------------------

    def follow(self, run_id: str, on_status: Callable[[RunStatus], None] | None = None,
               stall_seconds: float = STALL_SECONDS, since_generation: int = -1,
               give_up_seconds: float | None = None, until_stalled: bool = False) -> RunStatus:
        """Poll the run's records until it ends (a terminal state of a generation after
        ``since_generation``), or with ``until_stalled`` until it stalls (its status then is not
        terminal); hints and stalls go to ``note``. Raises ``RunFailedError`` when the records are
        lost or stay unreachable."""
        watch = _Watch(last_change=time.monotonic(), idle_queue_since={})
        started = time.monotonic()
        last_consumer_check = 0.0
        while True:
            status = self._poll(run_id, watch)
            now = time.monotonic()
            if status is not None:
                if on_status is not None:
                    on_status(status)
                if status.terminal and status.generation > since_generation:
                    return status
                if self._watch_progress(run_id, status, watch, stall_seconds) and until_stalled:
                    return status
            elif give_up_seconds is not None and now - started > give_up_seconds:
                raise RunFailedError(f"run {run_id}: no load worker took the request within "
                                     f"{give_up_seconds:g} s (see the load worker's log)")
            if now - last_consumer_check >= CONSUMER_CHECK_SECONDS:
                last_consumer_check = now
                self._hint_idle_stage(status, watch)
            time.sleep(POLL_SECONDS)

    def _poll(self, run_id: str, watch: _Watch) -> RunStatus | None:
        try:
            status = self.records.status(run_id)
        except redis.RedisError as exc:
            self._backend_down(run_id, watch, exc)
            return None
        except AtlaspipeError:
            if watch.seen_record:
                raise RunFailedError(
                    f"run {run_id}: the result backend lost the run's records (was Redis restarted empty?); "
                    f"finish the run with: atlaspipe resume {run_id}") from None
            return None
        if watch.backend_down_since is not None:
            self.note(f"run {run_id}: result backend reachable again")
            watch.backend_down_since = None
        watch.seen_record = True
        return status

    def _backend_down(self, run_id: str, watch: _Watch, exc: Exception) -> None:
        now = time.time()
        if watch.backend_down_since is None:
            watch.backend_down_since = now
            since = datetime.fromtimestamp(now, UTC).strftime("%H:%M:%S UTC")
            self.note(f"run {run_id} stalled: result backend unreachable since {since} ({exc}); "
                      "workers hold their chunks and carry on when it is back")
        elif now - watch.backend_down_since > BACKEND_GRACE_SECONDS:
            raise RunFailedError(
                f"run {run_id} stalled: result backend unreachable for {BACKEND_GRACE_SECONDS:g} s; the run "
                f"goes on without being followed (check with: atlaspipe status {run_id}; "
                f"if it stays stuck once the backend is back: atlaspipe resume {run_id})")

    def _watch_progress(self, run_id: str, status: RunStatus, watch: _Watch, stall_seconds: float) -> bool:
        """Whether the run has just been found stalled (told once per stall)."""
        fingerprint = (status.state, status.generation, status.chunks_done, status.events_read)
        now = time.monotonic()
        if fingerprint != watch.last_fingerprint:
            watch.last_fingerprint, watch.last_change, watch.stall_noted = fingerprint, now, False
            return False
        if watch.stall_noted or status.state is not RunState.RUNNING or now - watch.last_change < stall_seconds:
            return False  # nothing to ask the records and the broker yet
        try:
            in_flight = self.records.in_flight(run_id)
        except redis.RedisError:
            return False
        queued = self.queued("process")  # None when the broker cannot say: then no verdict
        if queued is None or not run_stalled(status.state, now - watch.last_change, in_flight, queued, stall_seconds):
            return False
        missing = status.chunks_total - status.chunks_done
        self.note(f"run {run_id} stalled: {missing} chunk(s) have no result and none is queued or running; "
                  f"finish it with: atlaspipe resume {run_id}")
        watch.stall_noted = True
        return True

    def _hint_idle_stage(self, status: RunStatus | None, watch: _Watch) -> None:
        """Name the worker to start for each stage the run still needs that has no consumer."""
        assert watch.idle_queue_since is not None
        state = status.state if status is not None else RunState.SUBMITTED
        for queue in STAGES_AHEAD.get(state, ()):
            if queue in watch.hinted:
                continue
            consumers = self.consumers(queue)
            if consumers is None or consumers > 0:
                watch.idle_queue_since.pop(queue, None)
                continue
            since = watch.idle_queue_since.setdefault(queue, time.monotonic())
            if time.monotonic() - since >= HINT_AFTER_SECONDS:
                self.note(f"no worker consumes the '{queue}' queue: start one with `{worker_command(queue)}`")
                watch.hinted = watch.hinted | {queue}
