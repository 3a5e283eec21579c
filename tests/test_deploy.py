"""Offline validation of the deployment files: Dockerfile, compose/, helm/atlaspipe, scripts/.

Nothing here needs Docker or a cluster. The chart is linted and rendered with helm-python-sdk (Helm's
Go SDK through ctypes), every rendered object is schema-checked with kubernetes-validate, the compose
file with check-jsonschema's compose-spec schema, the scripts with shellcheck; then the tests below
check the semantics the seed got wrong.

A validation tool that cannot be imported or found is a skip outside CI and a failure in CI
(CI=true). Run everything, including the command-line tools, with scripts/validate-deploy.sh.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "atlaspipe"
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
SCRIPTS = ["image-build.sh", "docker-run.sh", "deploy-k8s.sh", "cpu-compare.sh", "validate-deploy.sh"]
ALT_VALUES = ["values-external-broker.yaml", "values-keda.yaml", "values-scaled.yaml"]
VALUES_CASES = ["default", *ALT_VALUES]
# Custom resources: no schema ships with kubernetes-validate, so they are checked here by hand.
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"}
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and kubernetes-validate's newest.
K8S_VERSIONS = ["1.25.0", None]
RELEASE, NAMESPACE = "rel", "ns"
IN_CI = os.environ.get("CI") == "true"

sys.path.insert(0, str(ROOT))
from celeryconfig import STAGE_QUEUES  # noqa: E402

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
CONSOLE_SCRIPTS = set(PYPROJECT["project"]["scripts"])
ATLASPIPE_SUBCOMMANDS = {"run", "generate", "fetch", "serve", "bench", "cpu-report"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}


def missing_tool(reason: str) -> None:
    """Skip outside CI, fail in CI: CI must run every validation."""
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


def need_executable(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        missing_tool(f"{name} is not installed")
    assert found
    return found


def load_helm() -> Any:
    try:
        import helm_python
    except (ImportError, OSError) as exc:  # OSError: libhelm_c could not be loaded
        missing_tool(f"helm-python-sdk is not usable: {exc}")
    return helm_python


def values_of(case: str) -> dict[str, Any] | None:
    if case == "default":
        return None
    return yaml.safe_load((ROOT / "helm" / case).read_text())


# --------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------
SENTINELS = {
    "rabbitmq": "RabbitSentinel0123456789abcdefXYZ",
    "redis": "RedisSentinel0123456789abcdefXYZ",
    "flower": "FlowerSentinel0123456789abcdefXYZ",
    "web": "WebSentinel0123456789abcdefXYZ",
}


def render(values: dict[str, Any] | None) -> tuple[dict[str, str], list[dict[str, Any]]]:
    helm = load_helm()
    with helm.Chart.load(CHART) as chart:
        texts = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in texts.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["_template"] = path
                docs.append(doc)
    return texts, docs


@pytest.fixture(scope="module")
def rendered() -> dict[str, tuple[dict[str, str], list[dict[str, Any]]]]:
    return {case: render(values_of(case)) for case in VALUES_CASES}


def strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_template"}


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def containers(doc: dict[str, Any], init: bool = True) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    found = list(spec.get("containers", []))
    if init:
        found += spec.get("initContainers", [])
    return found


def workloads(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (d for d in docs if d["kind"] in WORKLOAD_KINDS)


def workers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d
        for d in objects(docs, "Deployment")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    ]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# --------------------------------------------------------------------------------------------------
# Helm lint and render
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", VALUES_CASES)
def test_helm_lint_strict(case: str) -> None:
    helm = load_helm()
    report = helm.lint(CHART, values_of(case), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"], report["errors"]
    assert not problems, problems


def test_lint_catches_a_broken_chart(tmp_path: Path) -> None:
    """The lint gate can fail: a chart with a template error is reported."""
    helm = load_helm()
    broken = tmp_path / "atlaspipe"
    shutil.copytree(CHART, broken, symlinks=False)
    (broken / "templates" / "broken.yaml").write_text("kind: ConfigMap\nname: {{ .Values.nope.nope }}\n")
    report = helm.lint(broken, strict=True)
    assert report["errors"] or any(m["severity"] >= 2 for m in report["messages"])


@pytest.mark.parametrize("case", VALUES_CASES)
def test_render(case: str, rendered: dict[str, Any]) -> None:
    texts, docs = rendered[case]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "Job", "PersistentVolumeClaim"} <= kinds
    assert workers(docs)
    notes = next(v for k, v in texts.items() if k.endswith("NOTES.txt"))
    assert "port-forward" in notes


def test_alternative_values_change_the_render(rendered: dict[str, Any]) -> None:
    default = rendered["default"][1]
    external = rendered["values-external-broker.yaml"][1]
    keda = rendered["values-keda.yaml"][1]
    scaled = rendered["values-scaled.yaml"][1]
    assert objects(default, "StatefulSet") and not objects(external, "StatefulSet")
    assert objects(keda, "ScaledObject") and not objects(default, "ScaledObject")
    assert objects(external, "ServiceMonitor")
    replicas = {d["metadata"]["name"]: d["spec"].get("replicas") for d in workers(scaled)}
    assert replicas[f"{RELEASE}-atlaspipe-process"] == 6
    assert any(d["metadata"]["name"].endswith("-bench-1") for d in objects(scaled, "Job"))


# --------------------------------------------------------------------------------------------------
# Kubernetes schemas
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", VALUES_CASES)
def test_kubernetes_validate_strict(case: str, rendered: dict[str, Any], tmp_path: Path) -> None:
    exe = need_executable("kubernetes-validate")
    _, docs = rendered[case]
    files = []
    for i, doc in enumerate(docs):
        if doc["kind"] in CRD_KINDS:
            continue  # no schema available offline; checked semantically below
        path = tmp_path / f"{i:03d}-{doc['kind']}.yaml"
        path.write_text(yaml.safe_dump(strip(doc)))
        files.append(str(path))
    assert files
    for version in K8S_VERSIONS:
        cmd = [exe, "--strict", "--quiet", *(["-k", version] if version else []), *files]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validate_catches_errors(tmp_path: Path) -> None:
    exe = need_executable("kubernetes-validate")
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  portz: []\n")
    result = subprocess.run([exe, "--strict", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


def test_only_known_custom_resources(rendered: dict[str, Any]) -> None:
    for _, docs in rendered.values():
        for doc in docs:
            group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
            if "." in group and not group.endswith(".k8s.io"):
                assert doc["kind"] in CRD_KINDS, doc["kind"]


# --------------------------------------------------------------------------------------------------
# Semantics of the rendered objects
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", VALUES_CASES)
def test_workers_have_probes_and_resources(case: str, rendered: dict[str, Any]) -> None:
    _, docs = rendered[case]
    for doc in workers(docs):
        for c in containers(doc, init=False):
            assert c.get("livenessProbe") and c.get("readinessProbe"), doc["metadata"]["name"]
            # liveness must not go through the broker (no restart storm during an outage)
            assert "httpGet" in c["livenessProbe"]
            ping = " ".join(c["readinessProbe"]["exec"]["command"])
            node = option(c["command"], "-n").split("@")[0]
            assert f"inspect ping -d {node}@" in ping
    for doc in workloads(docs):
        for c in containers(doc):
            res = c.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(bound, {})), (doc["metadata"]["name"], c["name"])


@pytest.mark.parametrize("case", VALUES_CASES)
def test_worker_queues_match_celeryconfig(case: str, rendered: dict[str, Any]) -> None:
    _, docs = rendered[case]
    served: set[str] = set()
    for doc in workers(docs):
        argv = containers(doc, init=False)[0]["command"]
        assert argv[:4] == ["celery", "-A", "atlaspipe", "worker"]
        queues = option(argv, "-Q").split(",")
        assert set(queues) <= set(STAGE_QUEUES), queues
        served |= set(queues)
    assert served == set(STAGE_QUEUES)


def test_process_concurrency_and_scaling(rendered: dict[str, Any]) -> None:
    _, docs = rendered["values-keda.yaml"]
    (scaled,) = objects(docs, "ScaledObject")
    target = scaled["spec"]["scaleTargetRef"]["name"]
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == target)
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["protocol"] == "http"  # unacked messages count too
    assert trigger["metadata"]["queueName"] == "process" and "process" in STAGE_QUEUES
    assert "host" not in trigger["metadata"]
    auth = trigger["authenticationRef"]["name"]
    (ta,) = [d for d in objects(docs, "TriggerAuthentication") if d["metadata"]["name"] == auth]
    ref = ta["spec"]["secretTargetRef"][0]
    secret = next(d for d in objects(docs, "Secret") if d["metadata"]["name"] == ref["name"])
    url = base64.b64decode(secret["data"][ref["key"]]).decode()
    assert re.fullmatch(r"http://atlaspipe:[A-Za-z0-9]{32}@rel-atlaspipe-rabbitmq:15672/atlaspipe", url)


def test_no_plaintext_password() -> None:
    values = {
        "rabbitmq": {"auth": {"password": SENTINELS["rabbitmq"]}},
        "redis": {"auth": {"password": SENTINELS["redis"]}},
        "flower": {"auth": {"password": SENTINELS["flower"]}},
        "web": {"auth": {"password": SENTINELS["web"]}},
        "keda": {"enabled": True},
        "bench": {"enabled": True},
    }
    texts, docs = render(values)
    everything = "\n".join(texts.values())
    for sentinel in SENTINELS.values():
        assert sentinel not in everything
    secrets = objects(docs, "Secret")
    assert secrets and all("stringData" not in s for s in secrets)
    decoded = {k: base64.b64decode(v).decode() for s in secrets for k, v in s["data"].items()}
    assert decoded["rabbitmq-password"] == SENTINELS["rabbitmq"]
    assert decoded["redis-password"] == SENTINELS["redis"]
    assert decoded["flower-basic-auth"] == f"admin:{SENTINELS['flower']}"
    assert_no_literal_credentials(docs)


def assert_no_literal_credentials(docs: list[dict[str, Any]]) -> None:
    for doc in workloads(docs):
        for c in containers(doc):
            for var in c.get("env", []):
                value = var.get("value")
                if value is None:
                    continue
                assert not re.search(r"(PASS|PASSWORD|SECRET|TOKEN|_AUTH)$", var["name"]), var
                for _user, password in re.findall(r"://([^:/@\s]*):([^@\s]*)@", value):
                    assert password.startswith("$(") and password.endswith(")"), var
            argv = " ".join(c.get("command", []) + c.get("args", []))
            if "--requirepass" in argv:
                assert "--requirepass $(" in argv
    for doc in docs:
        assert "guest:guest" not in yaml.safe_dump(strip(doc))


@pytest.mark.parametrize("case", VALUES_CASES)
def test_generated_passwords_are_strong_and_hidden(case: str, rendered: dict[str, Any]) -> None:
    _, docs = rendered[case]
    assert_no_literal_credentials(docs)
    for secret in objects(docs, "Secret"):
        assert "stringData" not in secret
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        for key, value in secret["data"].items():
            if key.endswith("-password"):
                assert len(base64.b64decode(value)) >= 32, key
    # kept across upgrades: the template reuses the live Secret's values
    template = (CHART / "templates" / "secret.yaml").read_text()
    assert 'lookup "v1" "Secret"' in template


@pytest.mark.parametrize("component", ["rabbitmq", "redis"])
def test_broker_and_workers_share_credentials(component: str, rendered: dict[str, Any]) -> None:
    """The seed's bug: RabbitMQ on guest/guest while the workers used other credentials."""
    _, docs = rendered["default"]
    server = next(
        c
        for d in workloads(docs)
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == component
        for c in containers(d, init=False)
    )
    server_env = env_of(server)
    if component == "rabbitmq":
        server_ref = server_env["RABBITMQ_DEFAULT_PASS"]["valueFrom"]["secretKeyRef"]
        user = server_env["RABBITMQ_DEFAULT_USER"]["value"]
        vhost = server_env["RABBITMQ_DEFAULT_VHOST"]["value"]
        pw_var, url_var = "ATLASPIPE_BROKER_PASSWORD", "ATLASPIPE_BROKER_URL"
        expected = f"amqp://{user}:$({pw_var})@{RELEASE}-atlaspipe-rabbitmq:5672/{vhost}"
    else:
        server_ref = server_env["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"]
        assert "$(REDISCLI_AUTH)" in server["args"]
        pw_var, url_var = "ATLASPIPE_REDIS_PASSWORD", "ATLASPIPE_RESULT_BACKEND"
        expected = f"redis://:$({pw_var})@{RELEASE}-atlaspipe-redis:6379/0"
    services = {d["metadata"]["name"] for d in objects(docs, "Service")}
    assert expected.split("@")[1].split(":")[0] in services
    clients = [d for d in workloads(docs) if d["metadata"]["labels"]["app.kubernetes.io/component"]
               in {"worker", "flower", "submit", "bench"}]
    assert clients
    for doc in clients:
        for c in containers(doc):
            env = env_of(c)
            assert env[pw_var]["valueFrom"]["secretKeyRef"] == server_ref, doc["metadata"]["name"]
            assert env[url_var]["value"] == expected
            names = [e["name"] for e in c["env"]]
            assert names.index(pw_var) < names.index(url_var)  # $(VAR) needs VAR defined before


def test_external_broker_reads_urls_from_secret(rendered: dict[str, Any]) -> None:
    _, docs = rendered["values-external-broker.yaml"]
    for doc in workers(docs):
        env = env_of(containers(doc)[0])
        assert env["ATLASPIPE_BROKER_URL"]["valueFrom"]["secretKeyRef"]["name"] == "atlaspipe-external"
        assert env["ATLASPIPE_RESULT_BACKEND"]["valueFrom"]["secretKeyRef"]["key"] == "result-backend"
    assert not any(d["metadata"]["name"].endswith("-redis") for d in workloads(docs))


@pytest.mark.parametrize("case", VALUES_CASES)
def test_images_pinned(case: str, rendered: dict[str, Any]) -> None:
    _, docs = rendered[case]
    for doc in workloads(docs):
        for c in containers(doc):
            image = c["image"]
            name, _, tag = image.rpartition(":")
            assert name and "/" not in tag and tag, f"{image} has no tag"
            assert tag != "latest" and "latest" not in image
            assert c.get("imagePullPolicy") in {"IfNotPresent", "Always", "Never"}, c["name"]
            if name.endswith("atlaspipe"):
                assert tag == VERSION


@pytest.mark.parametrize("case", VALUES_CASES)
def test_jobs_are_one_shot(case: str, rendered: dict[str, Any]) -> None:
    _, docs = rendered[case]
    jobs = objects(docs, "Job")
    assert any(j["metadata"]["labels"]["app.kubernetes.io/component"] == "submit" for j in jobs)
    for job in jobs:
        assert pod_spec(job)["restartPolicy"] in {"Never", "OnFailure"}
        assert isinstance(job["spec"]["backoffLimit"], int)
        assert job["spec"]["backoffLimit"] <= 6
    for doc in objects(docs, "Deployment") + objects(docs, "StatefulSet"):
        argv = containers(doc, init=False)[0].get("command", [])
        assert "atlaspipe-submit" not in argv and "bench" not in argv, doc["metadata"]["name"]
    for job in jobs:
        argv = containers(job, init=False)[0]["command"]
        if "bench" in argv:
            assert option(argv, "--env") == "kubernetes"
            assert option(argv, "--output").startswith("/data/outputs")


@pytest.mark.parametrize("case", VALUES_CASES)
def test_service_ports_match_container_ports(case: str, rendered: dict[str, Any]) -> None:
    _, docs = rendered[case]
    pods = [
        (d["spec"]["template"]["metadata"]["labels"], containers(d, init=False))
        for d in workloads(docs)
    ]
    for svc in objects(docs, "Service"):
        selector = svc["spec"]["selector"]
        matched = [cs for labels, cs in pods if selector.items() <= labels.items()]
        assert matched, f"Service {svc['metadata']['name']} selects no pod"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for cs in matched:
                ports = [p for c in cs for p in c.get("ports", [])]
                if isinstance(target, str):
                    hit = [p for p in ports if p.get("name") == target]
                else:
                    hit = [p for p in ports if p["containerPort"] == target]
                assert hit, f"{svc['metadata']['name']}:{port['port']} -> {target} not listened on"


def listening_ports(container: dict[str, Any]) -> set[int]:
    """The ports the container's process really listens on, from its command and environment."""
    argv = container.get("command", []) + container.get("args", [])
    env = env_of(container)
    image = container["image"].split(":")[0]
    if argv[:4] == ["celery", "-A", "atlaspipe", "worker"]:
        return {int(env["ATLASPIPE_METRICS_PORT"]["value"])}
    for i, arg in enumerate(argv):
        if arg.startswith("--port="):
            return {int(arg.split("=", 1)[1])}
        if arg == "--port":
            return {int(argv[i + 1])}
    defaults = {"rabbitmq": {5672, 15672, 15692}, "redis": {6379}, "prom/prometheus": {9090}}
    return next((ports for name, ports in defaults.items() if image.endswith(name)), set())


@pytest.mark.parametrize("case", VALUES_CASES)
def test_container_ports_are_listened_on(case: str, rendered: dict[str, Any]) -> None:
    """The seed published a port nothing listened on: declared ports must be the real ones."""
    _, docs = rendered[case]
    for doc in workloads(docs):
        for c in containers(doc, init=False):
            declared = {p["containerPort"] for p in c.get("ports", [])}
            listening = listening_ports(c)
            assert listening <= declared, (doc["metadata"]["name"], listening, declared)
            names = {p.get("name") for p in c.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if port is not None:
                    assert port in names or port in listening, (c["name"], probe, port)
                    resolved = next((p["containerPort"] for p in c["ports"] if p.get("name") == port), port)
                    assert resolved in listening, (c["name"], probe, port)
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        if "prometheus.io/port" in annotations:
            ports = set().union(*(listening_ports(c) for c in containers(doc, init=False)))
            assert int(annotations["prometheus.io/port"]) in ports, doc["metadata"]["name"]


@pytest.mark.parametrize("case", VALUES_CASES)
def test_security_context(case: str, rendered: dict[str, Any]) -> None:
    _, docs = rendered[case]
    for doc in workloads(docs):
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        for c in containers(doc):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            if c["image"].split(":")[0].endswith("atlaspipe"):
                assert sc["readOnlyRootFilesystem"] is True


def test_pvcs_and_volumes(rendered: dict[str, Any]) -> None:
    _, docs = rendered["default"]
    claims = {d["metadata"]["name"] for d in objects(docs, "PersistentVolumeClaim")}
    assert {f"{RELEASE}-atlaspipe-cache", f"{RELEASE}-atlaspipe-outputs"} <= claims
    for doc in workloads(docs):
        for vol in pod_spec(doc).get("volumes", []):
            if "persistentVolumeClaim" in vol:
                assert vol["persistentVolumeClaim"]["claimName"] in claims
    (sts,) = objects(docs, "StatefulSet")
    assert sts["spec"]["volumeClaimTemplates"]


def prometheus_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    cm = next(d for d in objects(docs, "ConfigMap") if d["metadata"]["name"].endswith("-prometheus"))
    config: dict[str, Any] = yaml.safe_load(cm["data"]["prometheus.yml"])
    return config


@pytest.mark.parametrize("case", ["default", "values-keda.yaml", "values-scaled.yaml"])
def test_prometheus_scrapes_existing_services(case: str, rendered: dict[str, Any]) -> None:
    _, docs = rendered[case]
    config = prometheus_config(docs)
    services = {d["metadata"]["name"]: d for d in objects(docs, "Service")}
    ports: dict[str, int] = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                short, ns = name.split(".")[:2]
                assert ns == NAMESPACE and short in services, name
                assert sd["port"] in {p["port"] for p in services[short]["spec"]["ports"]}
                ports[job["job_name"]] = sd["port"]
    assert ports == {"atlaspipe-workers": 9808, "flower": 5555, "rabbitmq": 15692}
    # same jobs as the file Compose mounts
    shared = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    assert [j["job_name"] for j in shared["scrape_configs"]] == [
        j["job_name"] for j in config["scrape_configs"]
    ]
    assert (CHART / "files" / "prometheus.yml").resolve() == (COMPOSE_DIR / "prometheus.yml").resolve()


def test_prometheus_drops_external_rabbitmq(rendered: dict[str, Any]) -> None:
    _texts, docs = rendered["values-external-broker.yaml"]
    assert not [d for d in objects(docs, "ConfigMap") if d["metadata"]["name"].endswith("-prometheus")]
    helm_values = values_of("values-external-broker.yaml") or {}
    helm_values["prometheus"] = {"enabled": True}
    _, docs = render(helm_values)
    jobs = {j["job_name"] for j in prometheus_config(docs)["scrape_configs"]}
    assert "rabbitmq" not in jobs and "atlaspipe-workers" in jobs


def test_worker_pods_carry_scrape_annotations(rendered: dict[str, Any]) -> None:
    _, docs = rendered["default"]
    for doc in workers(docs):
        ann = doc["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "9808"
        env = env_of(containers(doc)[0])
        assert env["ATLASPIPE_METRICS_PORT"]["value"] == "9808"


def test_rabbitmq_consumer_timeout_raised(rendered: dict[str, Any]) -> None:
    _, docs = rendered["default"]
    cm = next(d for d in objects(docs, "ConfigMap") if d["metadata"]["name"].endswith("-rabbitmq"))
    for text in (cm["data"]["90-atlaspipe.conf"], (COMPOSE_DIR / "rabbitmq" / "rabbitmq.conf").read_text()):
        timeout = int(re.search(r"^consumer_timeout\s*=\s*(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
        assert timeout > 30 * 60 * 1000
    plugins = cm["data"]["enabled_plugins"]
    assert "rabbitmq_prometheus" in plugins and "rabbitmq_management" in plugins


def test_chart_versions_follow_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == VERSION and str(chart["appVersion"]) == VERSION
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["tag"] in ("", VERSION)
    for line in (CHART / "values.yaml").read_text().splitlines():
        code = line.split("#")[0]
        assert not re.search(r"(tag:\s*[\"']?latest|:latest)", code), line


# --------------------------------------------------------------------------------------------------
# Docker Compose
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves the << merge keys
    return data


def compose_argv(service: dict[str, Any]) -> list[str]:
    def as_list(value: Any) -> list[str]:
        if value is None:
            return []
        return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]

    return as_list(service.get("entrypoint")) + as_list(service.get("command"))


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if "build" in s}


def test_compose_schema() -> None:
    exe = need_executable("check-jsonschema")
    result = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_build_contexts_and_mounts_exist(compose: dict[str, Any]) -> None:
    apps = app_services(compose)
    assert apps
    for name, svc in apps.items():
        context = (COMPOSE_DIR / svc["build"]["context"]).resolve()
        assert context.is_dir(), name
        assert (context / svc["build"].get("dockerfile", "Dockerfile")).is_file(), name
        assert (context / ".dockerignore").is_file()
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source}"
            elif source:
                assert source in compose["volumes"], f"{name}: unknown volume {source}"
    assert {"cache", "outputs"} <= set(compose["volumes"])


def test_compose_commands_exist(compose: dict[str, Any]) -> None:
    for name, svc in app_services(compose).items():
        argv = compose_argv(svc)
        assert argv, f"{name} has no command"
        program = argv[0]
        assert program in CONSOLE_SCRIPTS | {"celery"}, f"{name}: {program}"
        if program == "celery":
            assert argv[1:3] == ["-A", "atlaspipe"] and argv[3] in {"worker", "flower"}, name
        if program == "atlaspipe":
            assert argv[1] in ATLASPIPE_SUBCOMMANDS, f"{name}: atlaspipe {argv[1]}"
    bench = compose_argv(compose["services"]["bench"])
    assert option(bench, "--env") == "docker-compose"
    assert compose["services"]["bench"]["profiles"] == ["bench"]
    assert compose["services"]["submit"]["restart"] == "no"
    serve = compose_argv(compose["services"]["web"])
    assert option(serve, "--port") == "8080" and option(serve, "--host") == "0.0.0.0"


def test_compose_stage_queues(compose: dict[str, Any]) -> None:
    served = {}
    for name, svc in compose["services"].items():
        argv = compose_argv(svc)
        if argv[:4] != ["celery", "-A", "atlaspipe", "worker"]:
            continue
        queues = option(argv, "-Q").split(",")
        assert set(queues) <= set(STAGE_QUEUES), queues
        node = option(argv, "-n")
        assert node == f"{name}@%h"
        test = " ".join(svc["healthcheck"]["test"])
        assert f"inspect ping -d {name}@$$HOSTNAME" in test
        assert "container_name" not in svc and "hostname" not in svc  # --scale must work
        served[name] = queues
    assert sorted(served) == sorted(STAGE_QUEUES), "one worker service per stage"
    assert {q for qs in served.values() for q in qs} == set(STAGE_QUEUES)


def test_compose_healthchecks_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    rabbit = " ".join(services["rabbitmq"]["healthcheck"]["test"])
    assert "rabbitmq-diagnostics -q ping" in rabbit
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: use the long depends_on form"
        for dep, cond in deps.items():
            assert cond["condition"] == "service_healthy", f"{name} -> {dep}"
            assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
        if "profiles" not in svc:
            assert "healthcheck" in svc, name


def test_compose_resources_ports_and_images(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        limits = svc["deploy"]["resources"]["limits"] if name not in {"submit", "bench"} else None
        if limits is not None:
            assert "cpus" in limits and "memory" in limits, name
        for port in svc.get("ports", []):
            assert str(port).startswith("${ATLASPIPE_BIND_ADDRESS:-127.0.0.1}:"), f"{name}: {port}"
        image = svc["image"]
        assert ":" in image and "latest" not in image, image
        assert svc.get("pull_policy") in {"build", "missing", "never", "always"}, name
    app = app_services(compose)
    assert {s["image"] for s in app.values()} == {"atlaspipe:${ATLASPIPE_VERSION:-0.1.0}"}
    assert f"ATLASPIPE_VERSION={VERSION}" in (COMPOSE_DIR / ".env.example").read_text()
    for name, svc in app.items():
        argv = compose_argv(svc)
        listen = [a.split("=", 1)[1] for a in argv if a.startswith("--port=")]
        listen += [argv[i + 1] for i, a in enumerate(argv) if a == "--port"]
        for port in svc.get("ports", []):
            assert port.rsplit(":", 1)[1] in listen, f"{name} publishes {port}, listens on {listen}"
    assert any(p.endswith(":8080") for p in compose["services"]["web"]["ports"])


def test_compose_credentials(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    code = "\n".join(line.split("#")[0] for line in text.splitlines())
    assert "guest" not in code
    services = compose["services"]
    rabbit_env = services["rabbitmq"]["environment"]
    user, password = rabbit_env["RABBITMQ_DEFAULT_USER"], rabbit_env["RABBITMQ_DEFAULT_PASS"]
    assert user.startswith("${RABBITMQ_USER:?") and password.startswith("${RABBITMQ_PASSWORD:?")
    for name, svc in app_services(compose).items():
        url = svc["environment"]["ATLASPIPE_BROKER_URL"]
        assert url.startswith(f"amqp://{user}:{password}@rabbitmq:5672/"), name
        assert "@redis:6379/" in svc["environment"]["ATLASPIPE_RESULT_BACKEND"]
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_USER:?")
    assert services["web"]["environment"]["ATLASPIPE_WEB_AUTH"].startswith("${WEB_USER:?")
    required = set(re.findall(r"\$\{([A-Z_]+):\?", code))
    example = (COMPOSE_DIR / ".env.example").read_text()
    for var in required:
        assert re.search(rf"^{var}=", example, re.M), f"{var} missing from .env.example"
    for line in example.splitlines():
        if "PASSWORD=" in line:
            assert line.endswith("="), "no default password in .env.example"


def test_compose_prometheus_config(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    services = compose["services"]
    targets = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                assert name in services, name
                targets[name] = sd["port"]
    assert {stage: 9808 for stage in STAGE_QUEUES}.items() <= targets.items()
    assert targets["flower"] == 5555 and targets["rabbitmq"] == 15692
    mounts = services["prometheus"]["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


# --------------------------------------------------------------------------------------------------
# Dockerfile and scripts
# --------------------------------------------------------------------------------------------------
def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.M | re.I)
    assert len(stages) >= 2, "multi-stage"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base.group(1)), "pinned slim base"
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(rf"ATLASPIPE_VERSION={re.escape(VERSION)}", text)
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ".git" in ignore and ".venv" in ignore
    for needed in ("pyproject.toml", "celeryconfig.py", "atlaspipe"):
        assert needed not in ignore


def test_shellcheck() -> None:
    exe = need_executable("shellcheck")
    paths = [str(ROOT / "scripts" / s) for s in SCRIPTS]
    result = subprocess.run([exe, "--external-sources", "--severity=style", *paths],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_conventions(script: str) -> None:
    path = ROOT / "scripts" / script
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(path, os.X_OK), f"{script} is not executable"
    result = subprocess.run(["bash", str(path), "-h"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "Usage:" in result.stdout
    bad = subprocess.run(["bash", str(path), "--no-such-flag"], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0


def test_image_build_tags_the_package_version() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "image-build.sh"), "--dry-run", "--minikube"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert f"--tag atlaspipe:{VERSION}" in result.stdout and "minikube" in result.stdout
    latest = subprocess.run(
        ["bash", str(ROOT / "scripts" / "image-build.sh"), "--dry-run", "--tag", "latest"],
        capture_output=True, text=True, timeout=30,
    )
    assert latest.returncode != 0
