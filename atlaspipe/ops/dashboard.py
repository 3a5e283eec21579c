"""The Grafana dashboard of atlaspipe, built with grafana-foundation-sdk (``pip install atlaspipe[dashboard]``).

``python -m atlaspipe.ops.dashboard`` writes it to ops/grafana/atlaspipe.json,
which compose and the Helm chart provision; the tests regenerate it and compare, and check that every
query reads only families of atlaspipe.ops.families.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef

from atlaspipe.ops.families import family_of

UID = "atlaspipe"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"


def _query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    return query.legend_format(legend) if legend else query


def _series(title: str, unit: str, *queries: tuple[str, str], width: int = 12,
            description: str = "") -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).datasource(DATASOURCE).height(8).span(width).min(0)
    if description:
        panel = panel.description(description)
    for index, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + index)))
    return panel


def _stat(title: str, expr: str, unit: str = "none", description: str = "") -> stat.Panel:
    panel = stat.Panel().title(title).unit(unit).datasource(DATASOURCE).height(4).span(4)
    if description:
        panel = panel.description(description)
    return panel.with_target(_query(expr).instant())


def build() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("atlaspipe").uid(UID).tags(["atlaspipe", "celery"]).timezone("utc")
        .description("H→ZZ*→4ℓ pipeline: queues, workers, tasks (celery-exporter families), runs and resources")
        .refresh("30s").time("now-1h", "now").tooltip(DashboardCursorSync.CROSSHAIR).editable()
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    board = (
        board.with_row(dashboard.Row("Cluster (atlaspipe exporter)"))
        .with_panel(_stat("Workers up", "sum(celery_worker_up)",
                          description="Workers whose heartbeats arrive (celery_worker_up)"))
        .with_panel(_stat("Running runs", 'sum(atlaspipe_runs{state="running"})'))
        .with_panel(_stat("Stalled runs", "sum(atlaspipe_runs_stalled)",
                          description="No progress, nothing running, nothing queued: atlaspipe-submit resume"))
        .with_panel(_stat("Messages waiting", "sum(celery_queue_length)"))
        .with_panel(_stat("Broker readable", "min(atlaspipe_broker_up)"))
        .with_panel(_stat("Run records readable", "min(atlaspipe_backend_up)"))
        .with_panel(_series("Queue length", "short", ("celery_queue_length", "{{queue_name}}")))
        .with_panel(_series("Consumers per queue", "short", ("celery_queue_consumers", "{{queue_name}}")))
        .with_panel(_series("Workers up", "short", ("celery_worker_up", "{{hostname}}")))
        .with_panel(_series("Runs per state", "short", ("atlaspipe_runs > 0", "{{state}}")))
    )
    board = (
        board.with_row(dashboard.Row("Tasks (celery-exporter families)"))
        .with_panel(_series("Tasks succeeded / s", "ops",
                            (f"sum by (name) (rate(celery_task_succeeded_total[{RATE}]))", "{{name}}")))
        .with_panel(_series("Tasks failed, retried, revoked / s", "ops",
                            (f"sum by (name) (rate(celery_task_failed_total[{RATE}]))", "failed {{name}}"),
                            (f"sum by (name) (rate(celery_task_retried_total[{RATE}]))", "retried {{name}}"),
                            (f"sum by (name) (rate(celery_task_revoked_total[{RATE}]))", "revoked {{name}}")))
        .with_panel(_series("Task runtime p50 / p95", "s",
                            (f"histogram_quantile(0.5, sum by (name, le) (rate(celery_task_runtime_bucket[{RATE}])))",
                             "p50 {{name}}"),
                            (f"histogram_quantile(0.95, sum by (name, le) (rate(celery_task_runtime_bucket[{RATE}])))",
                             "p95 {{name}}")))
        .with_panel(_series("Active tasks per worker", "short", ("celery_worker_tasks_active", "{{hostname}}")))
        .with_panel(_series("Sent and received / s", "ops",
                            (f"sum by (name) (rate(celery_task_sent_total[{RATE}]))", "sent {{name}}"),
                            (f"sum by (name) (rate(celery_task_received_total[{RATE}]))", "received {{name}}")))
        .with_panel(_series("Failure ratio", "percentunit",
                            (f"sum by (name) (rate(celery_task_failed_total[{RATE}])) / (sum by (name) "
                             f"(rate(celery_task_failed_total[{RATE}])) + sum by (name) "
                             f"(rate(celery_task_succeeded_total[{RATE}])))", "{{name}}"),
                            description="Alert AtlaspipeTaskFailureRate fires above 5% over 10 minutes"))
    )
    board = (
        board.with_row(dashboard.Row("Pipeline stages"))
        .with_panel(_series("Events read / s per sample", "short",
                            (f"sum by (sample) (rate(atlaspipe_events_read_total[{RATE}]))", "{{sample}}")))
        .with_panel(_series("Selection efficiency", "percentunit",
                            (f"sum(rate(atlaspipe_events_selected_total[{RATE}])) / "
                             f"sum(rate(atlaspipe_events_read_total[{RATE}]))", "selected / read")))
        .with_panel(_series("Input read / s", "Bps",
                            (f"sum(rate(atlaspipe_bytes_read_total[{RATE}]))", "compressed bytes")))
        .with_panel(_series("Tasks in progress per stage", "short", ("sum by (stage) (atlaspipe_tasks_in_progress)",
                                                                     "{{stage}}")))
        .with_panel(_series("Queue wait p95 per stage", "s",
                            ("histogram_quantile(0.95, sum by (stage, le) "
                             f"(rate(atlaspipe_task_queue_wait_seconds_bucket[{RATE}])))", "{{stage}}")))
        .with_panel(_series("Task duration p95 per stage", "s",
                            ("histogram_quantile(0.95, sum by (stage, le) "
                             f"(rate(atlaspipe_task_duration_seconds_bucket[{RATE}])))", "{{stage}}")))
    )
    return (
        board.with_row(dashboard.Row("Worker resources"))
        .with_panel(_series("CPU per worker stage (cores)", "short",
                            (f"sum by (stage) (rate(atlaspipe_worker_cpu_seconds_total[{RATE}]))", "{{stage}}"),
                            width=8))
        .with_panel(_series("CPU main process vs pool (cores)", "short",
                            (f"sum by (role) (rate(atlaspipe_worker_process_cpu_seconds_total[{RATE}]))", "{{role}}"),
                            width=8))
        .with_panel(_series("Resident memory per worker stage", "bytes",
                            ("sum by (stage) (atlaspipe_worker_resident_memory_bytes)", "{{stage}}"),
                            ("sum by (stage) (atlaspipe_worker_pool_processes)", "pool processes {{stage}}"),
                            width=8))
    )


def render() -> str:
    """The dashboard as the JSON Grafana imports (stable: sorted keys, two-space indent, final newline)."""
    document = json.loads(JSONEncoder(sort_keys=True).encode(build().build()))
    # The SDK leaves panel ids unset (rows get 0); Grafana links and edits panels by a unique id.
    for number, panel in enumerate(document["panels"], start=1):
        panel["id"] = number
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


METRIC = re.compile(r"\b((?:atlaspipe|celery)_[a-z_]+)\b")


def queried_families(document: dict[str, object]) -> set[str]:
    """The metric families the panel queries of a dashboard JSON read."""
    exprs = [target["expr"] for panel in document.get("panels", [])  # type: ignore[attr-defined]
             for target in panel.get("targets", []) if "expr" in target]
    return {family_of(name) for expr in exprs for name in METRIC.findall(expr)}


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "ops" / "grafana" / "atlaspipe.json"
    target.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {target}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
