"""The Celery application. Settings come from ``celeryconfig``; URLs, secrets and limits from the environment."""

from __future__ import annotations

from celery import Celery

from atlaspipe.config import RuntimeSettings, WorkerSettings


def create_app(broker_url: str | None = None, result_backend: str | None = None) -> Celery:
    """A Celery app with atlaspipe's queues and tasks; URLs default to the environment's."""
    settings = RuntimeSettings.from_env()
    application = Celery("atlaspipe", include=["atlaspipe.tasks"])
    application.config_from_object("celeryconfig")
    application.conf.broker_url = broker_url or settings.broker_url
    application.conf.result_backend = result_backend or settings.result_backend
    limits = WorkerSettings.from_env()
    if limits.soft_time_limit is not None:
        application.conf.task_soft_time_limit = limits.soft_time_limit
    if limits.time_limit is not None:
        application.conf.task_time_limit = limits.time_limit
    from atlaspipe import metrics
    from atlaspipe.probes import ProbeFiles

    application.steps["consumer"].add(ProbeFiles)
    metrics.install(application)
    return application


app = create_app()
