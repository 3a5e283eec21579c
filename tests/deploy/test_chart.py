"""The Helm chart: lint, schemas and wiring for every values set, and the behaviours around its Secret.

No cluster is available here; `lookup` is exercised against a small fake Kubernetes API that serves
one Secret, which is all the chart asks a cluster for.
"""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import checks
import pytest
import yaml
from deploytools import need_module

CASES = list(checks.values_cases(checks.CHART))
SENTINELS = {
    "rabbitmq": "RabbitSentinel0123456789abcdefXYZ",
    "redis": "RedisSentinel0123456789abcdefXYZ0",
    "flower": "FlowerSentinel0123456789abcdefXYZ",
    "web": "WebSentinel0123456789abcdefXYZ012",
}


@pytest.fixture(scope="module", autouse=True)
def _helm() -> None:
    need_module("helm_python", "helm-python-sdk")


def render(values: dict[str, Any] | None = None, **kwargs: Any) -> checks.Rendered:
    return checks.render(checks.CHART, values, **kwargs)


@pytest.mark.parametrize("case", CASES)
def test_chart_lints_validates_and_is_wired(case: str) -> None:
    values = checks.values_cases(checks.CHART)[case]
    problems = checks.lint_problems(checks.CHART, case, values)
    rendered = checks.render(checks.CHART, values, case)
    for check in checks.RENDER_CHECKS:
        problems += check(rendered)
    assert not problems, "\n".join(problems)


def test_lint_catches_a_broken_chart(tmp_path: Path) -> None:
    broken = tmp_path / "atlaspipe"
    shutil.copytree(checks.CHART, broken)
    (broken / "templates" / "broken.yaml").write_text("kind: ConfigMap\nname: {{ .Values.nope.nope }}\n")
    assert checks.lint_problems(broken, "broken", None)


def test_values_schema_rejects_typos_and_unknown_queues() -> None:
    sdk = checks.helm()
    for values in ({"rabbitmq": {"auth": {"pasword": "x"}}},
                   {"workers": {"stages": {"process": {"queues": ["proces"]}}}},
                   {"workers": {"terminationGracePeriod": 700}}):
        with pytest.raises(sdk.HelmError, match="schema"):
            render(values)
    schema = json.loads((checks.CHART / "values.schema.json").read_text())
    queues = schema["definitions"]["stage"]["properties"]["queues"]["items"]["enum"]
    assert queues == list(checks.celeryconfig.STAGE_QUEUES)


def test_alternative_values_change_the_render() -> None:
    default, external, keda, scaled = (render(checks.values_cases(checks.CHART)[case]) for case in (
        "default", "external-broker-values.yaml", "keda-values.yaml", "scaled-values.yaml"))
    assert default.of("StatefulSet") and not external.of("StatefulSet")
    assert keda.of("ScaledObject") and not default.of("ScaledObject")
    assert external.of("ServiceMonitor")
    stages = {d["metadata"]["name"] for d in default.of("Deployment") if checks.component(d) == "worker"}
    assert stages == {"rel-atlaspipe-light", "rel-atlaspipe-process"}
    replicas = {d["metadata"]["name"]: d["spec"].get("replicas") for d in scaled.of("Deployment")}
    assert replicas["rel-atlaspipe-process"] == 6 and "rel-atlaspipe-light" not in replicas
    assert scaled.named("Job", "rel-atlaspipe-bench")


def test_no_password_anywhere_but_the_secret() -> None:
    sdk = checks.helm()
    values = {name: {"auth": {"password": sentinel}} for name, sentinel in SENTINELS.items()}
    values |= {"keda": {"enabled": True}, "bench": {"enabled": True}}
    with sdk.Chart.load(checks.CHART) as chart:
        texts = chart.render(values, name=checks.RELEASE, namespace=checks.NAMESPACE)
    rendered = render(values)
    (secret,) = rendered.of("Secret")
    for path, text in texts.items():
        for sentinel in SENTINELS.values():
            assert sentinel not in text, path
    decoded = checks.rendered_secrets(rendered)[secret["metadata"]["name"]]
    assert decoded["rabbitmq-password"] == SENTINELS["rabbitmq"]
    assert decoded["flower-basic-auth"] == f"admin:{SENTINELS['flower']}"
    assert not checks.pod_metadata_problems(rendered)


def test_submit_job_runs_once_unless_asked() -> None:
    (job,) = render().of("Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install"
    (job,) = render({"submit": {"onUpgrade": True}}).of("Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"


def test_keda_target_follows_concurrency() -> None:
    rendered = render({"keda": {"enabled": True}, "workers": {"stages": {"process": {"concurrency": 3}}}})
    (scaled,) = rendered.of("ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["value"] == "3"
    sdk = checks.helm()
    with pytest.raises(sdk.HelmError, match=r"keda\.queueName"):
        render({"keda": {"enabled": True, "queueName": "plot"}})


def test_checksum_annotations_follow_the_secret_and_the_config() -> None:
    def checksums(values: dict[str, Any]) -> tuple[str, str]:
        (worker,) = [d for d in render(values).of("Deployment") if d["metadata"]["name"].endswith("-process")]
        annotations = worker["spec"]["template"]["metadata"]["annotations"]
        return annotations["checksum/secret"], annotations["checksum/config"]

    base = {name: {"auth": {"password": sentinel}} for name, sentinel in SENTINELS.items()}
    same = checksums(base)
    assert checksums(base) == same
    changed = {**base, "web": {"auth": {"password": "another0123456789abcdefXYZ012345"}}}
    assert checksums(changed)[0] != same[0] and checksums(changed)[1] == same[1]
    assert checksums({**base, "workers": {"metricsPort": 9809}})[1] != same[1]


# -------------------------------------------------------------------------------- lookup: a fake cluster
class FakeKubernetes:
    """A Kubernetes API with one Secret, answering what Helm's `lookup` asks for (discovery, then a GET)."""

    def __init__(self, secret: dict[str, str] | None) -> None:
        self.secret = secret
        handler = self._handler()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                name = f"{checks.RELEASE}-atlaspipe-credentials"
                code, body = 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "reason": "NotFound", "code": 404}
                if path == f"/api/v1/namespaces/{checks.NAMESPACE}/secrets/{name}" and fake.secret is not None:
                    code, body = 200, {"apiVersion": "v1", "kind": "Secret",
                                       "metadata": {"name": name, "namespace": checks.NAMESPACE},
                                       "data": {k: base64.b64encode(v.encode()).decode()
                                                for k, v in fake.secret.items()}}
                elif path == "/api/v1":
                    code, body = 200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                        {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret",
                         "verbs": ["get", "list"]}]}
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    fake = FakeKubernetes({"rabbitmq-password": "R" * 32, "redis-password": "S" * 32,
                           "flower-password": "F" * 32, "web-password": "W" * 32})
    try:
        yield fake
    finally:
        fake.close()


def upgrade(fake: FakeKubernetes, values: dict[str, Any] | None = None) -> checks.Rendered:
    sdk = checks.helm()
    with sdk.Config(kube_apiserver=fake.url, namespace=checks.NAMESPACE) as config:
        return render(values, config=config, is_upgrade=True)


def test_upgrade_keeps_the_stored_passwords(cluster: FakeKubernetes) -> None:
    first, second = upgrade(cluster), upgrade(cluster)
    secret = checks.rendered_secrets(first)[f"{checks.RELEASE}-atlaspipe-credentials"]
    assert secret["rabbitmq-password"] == "R" * 32 and secret["web-auth"] == "atlas:" + "W" * 32
    annotations = [d["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
                   for r in (first, second) for d in r.of("Deployment") if checks.component(d) == "worker"]
    assert len(set(annotations)) == 1, "pods would restart on an upgrade that changes nothing"
    # The same password given explicitly is fine; another one for a service that rereads it too.
    assert upgrade(cluster, {"rabbitmq": {"auth": {"password": "R" * 32}}})
    assert upgrade(cluster, {"web": {"auth": {"password": "another0123456789"}}})


def test_upgrade_refuses_a_changed_rabbitmq_password(cluster: FakeKubernetes) -> None:
    sdk = checks.helm()
    with pytest.raises(sdk.HelmError, match=r"rabbitmq.auth.password differs from the password in Secret "
                                             r"rel-atlaspipe-credentials.*rabbitmqctl change_password"):
        upgrade(cluster, {"rabbitmq": {"auth": {"password": "changed0123456789"}}})


def test_first_install_generates_strong_passwords() -> None:
    fake = FakeKubernetes(None)
    try:
        secret = checks.rendered_secrets(upgrade(fake))[f"{checks.RELEASE}-atlaspipe-credentials"]
    finally:
        fake.close()
    passwords = [v for k, v in secret.items() if k.endswith("-password")]
    assert len(passwords) == 4 and all(len(p) == 32 and p.isalnum() for p in passwords)
    assert len(set(passwords)) == 4


def named(rendered: checks.Rendered, kind: str, name: str) -> dict[str, Any]:
    doc = rendered.named(kind, name)
    assert doc is not None, f"no {kind} {name}"
    return doc


def test_dashboard_and_alert_rules_are_the_shipped_files() -> None:
    default = render(checks.values_cases(checks.CHART)["default"])
    operator = render(checks.values_cases(checks.CHART)["external-broker-values.yaml"])
    dashboard = checks.ROOT / "ops" / "grafana" / "atlaspipe.json"
    rules = checks.ROOT / "ops" / "prometheus" / "alerts.yml"
    for rendered in (default, operator):
        (board,) = [c for c in rendered.of("ConfigMap") if c["metadata"]["name"] == "rel-atlaspipe-dashboard"]
        assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(board["data"]["atlaspipe.json"]) == json.loads(dashboard.read_text())
    # The bundled Prometheus reads the rules where its configuration says; an operator's from a PrometheusRule.
    prometheus = named(default, "ConfigMap", "rel-atlaspipe-prometheus")
    assert prometheus["data"]["alerts.yml"] == rules.read_text()
    assert yaml.safe_load(prometheus["data"]["prometheus.yml"])["rule_files"] == ["/etc/prometheus/rules/alerts.yml"]
    volume = named(default, "Deployment", "rel-atlaspipe-prometheus")["spec"]["template"]["spec"]["volumes"][0]
    assert {"key": "alerts.yml", "path": "rules/alerts.yml"} in volume["configMap"]["items"]
    assert not default.of("PrometheusRule")
    (rule,) = operator.of("PrometheusRule")
    assert rule["spec"] == yaml.safe_load(rules.read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # The exporter runs in both, and its Service is what the scrape config and the ServiceMonitor select.
    for rendered in (default, operator):
        service = named(rendered, "Service", "rel-atlaspipe-exporter")
        assert service["metadata"]["labels"]["atlaspipe.io/scrape"] == "true"
        assert service["spec"]["ports"][0]["name"] == "metrics"
        assert named(rendered, "Deployment", "rel-atlaspipe-exporter")["spec"]["replicas"] == 1
