"""Mutation test of the deployment checks: each single change below, applied to a temporary copy of the
chart, the compose files and the secret generator, must make the checks report a problem.

A change to helm/ is judged by checks.chart_problems, one to compose/ or scripts/ by
checks.compose_problems; compose/prometheus.yml is shared by both, so both judge it. Every `old`
text must occur in the real file, so a refactor cannot quietly turn a mutation into a no-op.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import checks
import pytest
from deploytools import need_executable, need_module


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str


HELPERS = "helm/atlaspipe/templates/_helpers.tpl"
VALUES = "helm/atlaspipe/values.yaml"
WORKERS = "helm/atlaspipe/templates/workers.yaml"
WEB = "helm/atlaspipe/templates/web.yaml"
FLOWER = "helm/atlaspipe/templates/flower.yaml"
JOBS = "helm/atlaspipe/templates/jobs.yaml"
KEDA = "helm/atlaspipe/templates/keda.yaml"
REDIS = "helm/atlaspipe/templates/redis.yaml"
RABBITMQ = "helm/atlaspipe/templates/rabbitmq.yaml"
COMPOSE = "compose/compose.yaml"

MUTATIONS = [
    # --- the chart: the misses of the first, static-only review
    Mutation("secret key typo", HELPERS,
             'key: {{ .Values.rabbitmq.auth.existingSecretPasswordKey | default "rabbitmq-password" }}',
             "key: rabbitmq-pasword"),
    Mutation("secret name typo", WEB,
             'name: {{ .Values.web.auth.existingSecret | default (include "atlaspipe.secretName" .) }}',
             'name: {{ .Values.web.auth.existingSecret | default (printf "%s-credential" '
             '(include "atlaspipe.fullname" .)) }}'),
    Mutation("queue route typo in a worker's -Q", WORKERS, '- {{ join "," $cfg.queues }}',
             '- {{ join "," $cfg.queues | replace "process" "proces" }}'),
    Mutation("queue typo in values", VALUES, "queues: [load, aggregate, plot]", "queues: [load, aggregate, plots]"),
    Mutation("readiness probe file typo", HELPERS, '"test -f \\"$ATLASPIPE_PROBE_DIR/ready\\"',
             '"test -f \\"$ATLASPIPE_PROBE_DIR/reday\\"'),
    Mutation("liveness heartbeat file typo", HELPERS, "$ATLASPIPE_PROBE_DIR/heartbeat",
             "$ATLASPIPE_PROBE_DIR/hearbeat"),
    Mutation("probe directory not set", HELPERS, "ATLASPIPE_PROBE_DIR: {{ .Values.workers.probeDir | quote }}\n", ""),
    Mutation("liveness waits for the broker", WORKERS, '(dict "root" $root "ready" false)',
             '(dict "root" $root "ready" true)'),
    Mutation("app name typo in the worker command", WORKERS, "- -A\n            - atlaspipe\n",
             "- -A\n            - atlaspip\n"),
    Mutation("web probe path", WEB, "path: /healthz", "path: /health"),
    Mutation("Flower probe path", FLOWER, "path: /healthcheck", "path: /healthchek"),
    Mutation("RabbitMQ liveness typo", RABBITMQ,
             'command: ["rabbitmq-diagnostics", "-q", "ping"]\n            periodSeconds: 30',
             'command: ["rabbitmq-diagnostic", "-q", "ping"]\n            periodSeconds: 30'),
    Mutation("Redis Service port differs from the URL's", REDIS, "    - name: redis\n      port: 6379",
             "    - name: redis\n      port: 6380"),
    Mutation("submit command typo", JOBS, 'command: ["atlaspipe-submit", "--output", "/data/outputs"]',
             'command: ["atlaspipe-submitt", "--output", "/data/outputs"]'),
    Mutation("grace period below task_time_limit", VALUES, "terminationGracePeriodSeconds: 690",
             "terminationGracePeriodSeconds: 120"),
    Mutation("CPU request above its limit", VALUES, "requests: {cpu: 100m, memory: 320Mi}",
             'requests: {cpu: "2", memory: 320Mi}'),
    # --- the chart: more wiring
    Mutation("memory request above its limit", VALUES, "requests: {cpu: 500m, memory: 416Mi}",
             "requests: {cpu: 500m, memory: 2Gi}"),
    Mutation("Service targetPort name typo", WEB, "targetPort: http", "targetPort: htp"),
    Mutation("Service selects no pod", WEB,
             '{{- include "atlaspipe.selectorLabels" . | nindent 4 }}\n    app.kubernetes.io/component: web',
             '{{- include "atlaspipe.selectorLabels" . | nindent 4 }}\n    app.kubernetes.io/component: webb'),
    Mutation("report listens on another port", WEB, '"--port", "8080"', '"--port", "8081"'),
    Mutation("Flower's Secret key typo", FLOWER, "key: flower-basic-auth", "key: flower-basic-auht"),
    Mutation("broker URL on another vhost", HELPERS, "(.Values.rabbitmq.vhost | urlquery) | quote }}",
             '("other" | urlquery) | quote }}'),
    Mutation("Redis password in its arguments", REDIS, "&& exec redis-server /tmp/redis.conf",
             "&& exec redis-server /tmp/redis.conf --requirepass $(REDISCLI_AUTH)"),
    Mutation("no checksum annotations on workers", WORKERS,
             '{{- include "atlaspipe.checksums" $root | nindent 8 }}\n', ""),
    Mutation("PodDisruptionBudget selects nothing", WORKERS,
             "maxUnavailable: {{ $w.podDisruptionBudget.maxUnavailable }}\n  selector:\n    matchLabels:\n"
             '      {{- include "atlaspipe.selectorLabels" $root | nindent 6 }}\n'
             "      app.kubernetes.io/component: worker",
             "maxUnavailable: {{ $w.podDisruptionBudget.maxUnavailable }}\n  selector:\n    matchLabels:\n"
             '      {{- include "atlaspipe.selectorLabels" $root | nindent 6 }}\n'
             "      app.kubernetes.io/component: workers"),
    Mutation("metrics annotation on another port", WORKERS, "prometheus.io/port: {{ $w.metricsPort | quote }}",
             'prometheus.io/port: "9809"'),
    Mutation("submit Job is not a hook", JOBS, '    helm.sh/hook: {{ join "," $hooks }}\n', ""),
    Mutation("submit reruns on every upgrade", JOBS, '{{- if or (eq $kind "bench") $job.onUpgrade }}',
             "{{- if true }}"),
    Mutation("KEDA target incoherent with concurrency", KEDA,
             "default (toString $stage.concurrency)", 'default "5"'),
    Mutation("ScaledObject field typo (CRD schema)", KEDA, "  cooldownPeriod:", "  coolDownPeriod:"),
    Mutation("ServiceMonitor field typo (CRD schema)", "helm/atlaspipe/templates/servicemonitor.yaml",
             "    - port: metrics\n      path: /metrics", "    - port: metrics\n      paht: /metrics"),
    Mutation("Kubernetes schema: a misspelt field", RABBITMQ, "serviceName:", "servicename:"),
    # --- compose
    Mutation("compose worker -Q typo", COMPOSE, '"-Q", "process"', '"-Q", "proces"'),
    Mutation("compose *_FILE path typo", COMPOSE, "ATLASPIPE_BROKER_URL_FILE: /run/secrets/broker_url",
             "ATLASPIPE_BROKER_URL_FILE: /run/secrets/broker-url"),
    Mutation("compose secret not declared", COMPOSE, "      - flower_basic_auth\n", "      - flower_auth\n"),
    Mutation("compose web healthcheck path", COMPOSE, "http://127.0.0.1:8080/healthz", "http://127.0.0.1:8080/healthy"),
    Mutation("compose publishes AMQP on the host", COMPOSE,
             '"${ATLASPIPE_BIND_ADDRESS:-127.0.0.1}:${RABBITMQ_MANAGEMENT_PORT:-15672}:15672"',
             '"${ATLASPIPE_BIND_ADDRESS:-127.0.0.1}:${RABBITMQ_MANAGEMENT_PORT:-15672}:15672"\n'
             '      - "${ATLASPIPE_BIND_ADDRESS:-127.0.0.1}:5672:5672"'),
    Mutation("compose Redis runs as root", COMPOSE, 'user: "999:1000"', 'user: "0:0"'),
    Mutation("compose Redis password in its arguments", COMPOSE, "exec redis-server /tmp/redis.conf",
             'exec redis-server /tmp/redis.conf --requirepass "$$(cat /run/secrets/redis_password)"'),
    Mutation("compose grace period below task_time_limit", COMPOSE, "stop_grace_period: 690s",
             "stop_grace_period: 120s"),
    Mutation("compose depends_on without health", COMPOSE, "condition: service_healthy",
             "condition: service_started"),
    Mutation("compose readiness probe file typo", COMPOSE, "$$ATLASPIPE_PROBE_DIR/ready",
             "$$ATLASPIPE_PROBE_DIR/reday"),
    Mutation("compose Flower listens elsewhere", COMPOSE, '"--port=5555", "--address=0.0.0.0"',
             '"--port=5556", "--address=0.0.0.0"'),
    Mutation("compose RabbitMQ user in a file it does not read", COMPOSE,
             "target: /etc/rabbitmq/conf.d/20-default-user.conf", "target: /etc/rabbitmq/conf.d/20-default-user.cnf"),
    Mutation("compose top-level name (Compose v2 only)", COMPOSE, "x-app: &app", "name: atlaspipe\n\nx-app: &app"),
    Mutation("stand-in tagged with an official name", "compose/standins.yaml",
             "image: atlaspipe-standin/redis:7.0-bookworm", "image: redis:7.0-bookworm"),
    Mutation("generated broker URL on another port", "scripts/docker-run.sh", "@rabbitmq:5672/$rabbit_vhost",
             "@rabbitmq:5673/$rabbit_vhost"),
    Mutation("generated RabbitMQ user on another vhost", "scripts/docker-run.sh",
             '"$rabbit_user" "$rabbit_pw" "$rabbit_vhost")', '"$rabbit_user" "$rabbit_pw" "other")'),
    # --- shared by both
    Mutation("scrape port differs from the exporter's", "compose/prometheus.yml", "port: 9808", "port: 9809"),
    Mutation("scrape port differs from atlaspipe exporter's", "compose/prometheus.yml", "port: 9809", "port: 9810"),
    Mutation("exporter listens elsewhere than its Service's port", "helm/atlaspipe/templates/exporter.yaml",
             '"--port={{ .Values.exporter.port }}"', '"--port=9810"'),
    Mutation("exporter probe path typo", "compose/compose.yaml", "127.0.0.1:9809/metrics", "127.0.0.1:9809/metric"),
]

NOT_CAUGHT: dict[str, str] = {}
"""Mutations the checks are known to miss, with the reason; none at present."""


def copy_tree(tmp: Path) -> Path:
    root = tmp / "repo"
    shutil.copytree(checks.ROOT / "helm", root / "helm", symlinks=True)
    shutil.copytree(checks.ROOT / "compose", root / "compose", ignore=shutil.ignore_patterns(".env", "secrets"))
    shutil.copytree(checks.ROOT / "scripts", root / "scripts")
    # the chart's files/alerts.yml and files/atlaspipe-dashboard.json link here
    shutil.copytree(checks.ROOT / "ops", root / "ops")
    for name in ("Dockerfile", "pyproject.toml"):
        shutil.copy(checks.ROOT / name, root / name)
    return root


def problems_after(mutation: Mutation, tmp: Path) -> list[str]:
    root = copy_tree(tmp)
    target = root / mutation.path
    text = target.read_text()
    assert mutation.old in text, f"{mutation.path} no longer contains {mutation.old!r}"
    target.write_text(text.replace(mutation.old, mutation.new, 1))
    found: list[str] = []
    if mutation.path.startswith("helm/") or mutation.path == "compose/prometheus.yml":
        found += checks.chart_problems(root / "helm" / "atlaspipe")
    if not mutation.path.startswith("helm/"):
        found += checks.compose_problems(root / "compose", root / "scripts")
    return found


def test_enough_mutations() -> None:
    assert len(MUTATIONS) >= 25
    assert len({m.name for m in MUTATIONS}) == len(MUTATIONS)
    assert len(MUTATIONS) - len(NOT_CAUGHT) >= 24


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_mutation_is_caught(mutation: Mutation, tmp_path: Path) -> None:
    need_module("helm_python", "helm-python-sdk")
    if "Compose v2 only" in mutation.name:
        need_executable("docker-compose")
    found = problems_after(mutation, tmp_path)
    if mutation.name in NOT_CAUGHT:
        pytest.xfail(NOT_CAUGHT[mutation.name])
    assert found, f"{mutation.name}: no check noticed {mutation.path}: {mutation.old!r} -> {mutation.new!r}"
