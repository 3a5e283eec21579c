"""The Celery application. Settings come from ``celeryconfig``; URLs, secrets and limits from the environment.

Nothing is read at import: the environment is read when Celery first configures the app (its first use),
so ``celery -A atlaspipe`` reports a bad setting as a configuration error, not as a failed import.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from atlaspipe.config import RuntimeSettings, WorkerSettings, redact_url
from atlaspipe.errors import AtlaspipeError

log = logging.getLogger(__name__)


def create_app(broker_url: str | None = None, result_backend: str | None = None) -> Celery:
    """A Celery app with atlaspipe's queues and tasks; URLs default to the environment's."""
    application = Celery("atlaspipe", include=["atlaspipe.pipeline.celery.tasks"])
    application.config_from_object("celeryconfig")

    def configure(source: Any = None, **_: Any) -> None:
        try:
            runtime = RuntimeSettings.from_env()
            limits = WorkerSettings.from_env()
        except AtlaspipeError as exc:
            # Celery's signals swallow exceptions, and a worker must not start on the defaults.
            raise SystemExit(f"atlaspipe: error: {exc}") from None
        source.broker_url = broker_url or runtime.broker_url
        source.result_backend = result_backend or runtime.result_backend
        source.worker_send_task_events = source.task_send_sent_event = runtime.task_events
        if limits.soft_time_limit is not None:
            source.task_soft_time_limit = limits.soft_time_limit
        if limits.time_limit is not None:
            source.task_time_limit = limits.time_limit
        log.debug("broker %s, result backend %s", redact_url(source.broker_url), redact_url(source.result_backend))

    application.on_after_configure.connect(configure, weak=False)
    from atlaspipe.ops import metrics
    from atlaspipe.ops.probes import ProbeFiles
    from atlaspipe.pipeline.celery import warmup  # noqa: F401 - connects its celeryd_after_setup handler

    application.steps["consumer"].add(ProbeFiles)
    metrics.install(application)
    return application


app = create_app()
