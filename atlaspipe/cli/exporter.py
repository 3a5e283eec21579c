"""``atlaspipe exporter``: Prometheus metrics of the queues, workers and runs of a deployment."""

from __future__ import annotations

import argparse
import os
import threading

from atlaspipe.errors import ConfigError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from atlaspipe.pipeline.celery.monitor import DEFAULT_PORT

    parser.description = ("Serve celery_queue_length, celery_queue_consumers, celery_worker_up and the "
                          "run counts (atlaspipe_runs, atlaspipe_runs_stalled) on /metrics. The workers serve "
                          "their task counters themselves (ATLASPIPE_METRICS_PORT).")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to serve /metrics on (default {DEFAULT_PORT})")
    parser.add_argument("--address", default=os.environ.get("ATLASPIPE_METRICS_ADDRESS", "0.0.0.0"),
                        help="address to bind (default $ATLASPIPE_METRICS_ADDRESS or 0.0.0.0, as the workers)")
    parser.add_argument("--stall-seconds", type=float, default=None,
                        help="a running run with no progress, nothing running and nothing queued for this long "
                             "counts as stalled (default: as atlaspipe-submit, 60)")


def main(args: argparse.Namespace) -> int:
    from atlaspipe.config import RuntimeSettings
    from atlaspipe.pipeline.celery.app import create_app
    from atlaspipe.pipeline.celery.monitor import ClusterCollector, WorkerWatch, configured_queues, serve
    from atlaspipe.pipeline.celery.records import RunRecords
    from atlaspipe.pipeline.lifecycle import STALL_SECONDS

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: must be between 0 and 65535")
    if args.stall_seconds is not None and args.stall_seconds <= 0:
        raise ConfigError(f"--stall-seconds {args.stall_seconds:g}: must be positive")
    runtime = RuntimeSettings.from_env()
    app = create_app(runtime.broker_url, runtime.result_backend)
    collector = ClusterCollector(app, RunRecords(runtime.result_backend, attempts=1), configured_queues(app),
                                 WorkerWatch(app).start(), stall_seconds=args.stall_seconds or STALL_SECONDS)
    try:
        server = serve(collector, args.port, args.address)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.address}:{args.port}: {exc.strerror or exc}") from None
    print(f"atlaspipe exporter: metrics on http://{args.address}:{server.server_port}/metrics", flush=True)
    threading.Event().wait()
    return 0
