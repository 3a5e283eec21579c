"""Wiring checks of the deployment files: what lint and schemas cannot see.

``chart_problems(chart_dir)`` lints and renders the chart with its default values and every
``ci/*-values.yaml``, validates every object (Kubernetes schemas; the saved CRD schemas for KEDA and
the ServiceMonitor) and checks the wiring between them. ``compose_problems(compose_dir, scripts_dir)``
does the same for Docker Compose. Both return one line per problem: the tests require none on the
real files, and at least one on each mutation of them (test_mutations.py).

The facts the files must agree with come from their one source: queues, routes, time limits and
the prefetch from ``celeryconfig``; console scripts from the installed distributions; the report's
routes from its aiohttp application; Flower's from Flower; command-line options from the real
parsers (celery's click commands, ``--help`` of atlaspipe's own commands).
"""

from __future__ import annotations

import base64
import functools
import importlib
import importlib.metadata
import importlib.resources
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "atlaspipe"
COMPOSE_DIR = ROOT / "compose"
SCRIPTS = ROOT / "scripts"
CRD_DIR = Path(__file__).resolve().parent / "crd-schemas"
RELEASE, NAMESPACE = "rel", "ns"
K8S_VERSIONS = ("1.25.0", "1.37.0")
"""The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and kubernetes-validate's newest."""
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}
APP_IMAGE = "atlaspipe"
PROBE_FILES = ("heartbeat", "ready")
"""The worker's probe-file contract: $ATLASPIPE_PROBE_DIR/heartbeat (mtime refreshed every 10 s by the
consumer's event loop) and $ATLASPIPE_PROBE_DIR/ready (present while connected and consuming)."""
HEARTBEAT_PERIOD = 10
# What the third-party images run and listen on (their documented defaults).
RABBITMQ_TOOLS = {"rabbitmq-diagnostics": {"ping", "check_running", "check_port_connectivity", "status",
                                           "check_local_alarms", "check_virtual_hosts"}}
PROMETHEUS_ROUTES = {"/-/ready", "/-/healthy", "/metrics"}
REDIS_PORT = 6379

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import celeryconfig  # noqa: E402

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION: str = PYPROJECT["project"]["version"]


# ================================================================================== shared facts
def routed_queues() -> set[str]:
    """Every queue a task is routed to: what the workers' -Q must cover, and nothing else."""
    queues = {route["queue"] for route in celeryconfig.task_routes.values()}
    queues.add(celeryconfig.task_default_queue)
    return queues


def task_time_limit(env: dict[str, str]) -> float:
    """celeryconfig's hard time limit, or the ATLASPIPE_TASK_TIME_LIMIT a container overrides it with."""
    override = env.get("ATLASPIPE_TASK_TIME_LIMIT", "").strip()
    return float(override) if override else float(celeryconfig.task_time_limit)


@functools.cache
def console_scripts() -> frozenset[str]:
    """The commands the image's venv has: atlaspipe's own and those of its locked dependencies."""
    names = set(PYPROJECT["project"]["scripts"])
    lock = (ROOT / "requirements.lock").read_text()
    for dist in re.findall(r"^([A-Za-z0-9_.-]+)==", lock, re.M):
        try:
            entry_points = importlib.metadata.distribution(dist).entry_points
        except importlib.metadata.PackageNotFoundError:
            continue
        names |= {ep.name for ep in entry_points if ep.group == "console_scripts"}
    return frozenset(names)


@functools.cache
def help_options(*command: str) -> frozenset[str]:
    """The --options a command documents in its --help (its real parser)."""
    exe = shutil.which(command[0]) or str(Path(sys.executable).parent / command[0])
    text = subprocess.run([exe, *command[1:], "--help"], capture_output=True, text=True, timeout=60, check=False).stdout
    return frozenset(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


@functools.cache
def atlaspipe_commands() -> frozenset[str]:
    cli = importlib.import_module("atlaspipe.cli.main")
    return frozenset(cli.COMMANDS)


@functools.cache
def web_routes() -> frozenset[str]:
    """The canonical routes of the report's aiohttp application (the module behind `atlaspipe serve`)."""
    from atlaspipe.web.server import create_app

    app = create_app(Path(tempfile.gettempdir()), None)
    return frozenset(resource.canonical for resource in app.router.resources())


@functools.cache
def flower_routes() -> tuple[re.Pattern[str], ...]:
    from flower import urls

    patterns = [h.regex.pattern if hasattr(h, "regex") else h[0] for h in urls.handlers]
    return tuple(re.compile(p) for p in patterns if p != ".*")


@functools.cache
def flower_options() -> frozenset[str]:
    from flower.options import options

    return frozenset(name.replace("_", "-") for name in options._options)


def celery_problems(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Parse `celery ...` with celery's own click commands; (problems, the subcommand's parameters)."""
    import click
    from celery.app.utils import find_app
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery

    try:
        ctx = celery.make_context("celery", list(argv[1:]), resilient_parsing=False)
        try:
            app = find_app(ctx.params["app"])
        except Exception as exc:
            return [f"celery -A {ctx.params['app']}: no such Celery app ({exc})"], {}
        ctx.obj = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
        with warnings.catch_warnings():  # click 8.2 deprecates protected_args; click 9 puts them in args
            warnings.simplefilter("ignore", DeprecationWarning)
            name, *rest = [*getattr(ctx, "protected_args", []), *ctx.args]
        command = celery.get_command(ctx, name)
        if command is None:
            return [f"celery has no command {name!r}"], {}
        sub = command.make_context(name, rest, parent=ctx)
    except click.ClickException as exc:
        return [f"{' '.join(argv)}: {exc.format_message()}"], {}
    params = dict(sub.params, command=name)
    if name == "flower":
        # Flower's click command hands its own options on to tornado's parser.
        for arg in [*sub.args, *sub.params.get("tornado_argv", ())]:
            option = arg.split("=", 1)[0]
            if not option.startswith("--") or option[2:] not in flower_options():
                return [f"{' '.join(argv)}: Flower has no option {option}"], params
            if "=" in arg:
                params[option[2:].replace("-", "_")] = arg.split("=", 1)[1]
    return [], params


def as_flower(argv: list[str]) -> list[str]:
    """``atlaspipe flower OPTIONS`` is ``celery -A atlaspipe flower OPTIONS`` behind a guard: checked as that."""
    if len(argv) >= 2 and Path(argv[0]).name == "atlaspipe" and argv[1] == "flower":
        return ["celery", "-A", "atlaspipe", "flower", *argv[2:]]
    return argv


def command_problems(argv: list[str], where: str) -> list[str]:
    """The program is in the image's venv and its subcommand and options exist."""
    if not argv:
        return [f"{where}: no command"]
    if Path(argv[0]).name not in console_scripts():
        return [f"{where}: {Path(argv[0]).name} is not a command of the image's venv"]
    argv = as_flower(argv)
    program = Path(argv[0]).name
    if program not in console_scripts():
        return [f"{where}: {program} is not a command of the image's venv"]
    if program == "celery":
        problems, _ = celery_problems(argv)
        return [f"{where}: {p}" for p in problems]
    if program == "atlaspipe":
        if len(argv) < 2 or argv[1] not in atlaspipe_commands():
            return [f"{where}: 'atlaspipe {' '.join(argv[1:2])}' is not an atlaspipe command"]
        known = help_options("atlaspipe", argv[1])
        rest = argv[2:]
    elif len(argv) > 1 and argv[1] in ("status", "list", "resume"):
        known, rest = help_options(program, argv[1]), argv[2:]
    else:
        known, rest = help_options(program), argv[1:]
    return [f"{where}: {program} has no option {arg.split('=')[0]}"
            for arg in rest if arg.startswith("--") and arg.split("=")[0] not in known]


def option_value(argv: list[str], *names: str) -> str | None:
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                return argv[index + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def listen_port(argv: list[str], env: dict[str, str]) -> set[int]:
    """The ports an atlaspipe process listens on, from its command and environment."""
    argv = as_flower(argv)
    program = Path(argv[0]).name if argv else ""
    if program == "celery":
        _, params = celery_problems(argv)
        if params.get("command") == "worker":
            port = env.get("ATLASPIPE_METRICS_PORT", "9808")
            return {int(port)} if port.isdigit() and int(port) else set()
        if params.get("command") == "flower":
            return {int(params.get("port") or 5555)}
    if program == "atlaspipe" and len(argv) > 1 and argv[1] == "serve":
        return {int(option_value(argv, "--port") or 8080)}
    if program == "atlaspipe" and len(argv) > 1 and argv[1] == "exporter":
        from atlaspipe.pipeline.celery.monitor import DEFAULT_PORT

        return {int(option_value(argv, "--port") or DEFAULT_PORT)}
    return set()


def http_route_problems(argv: list[str], path: str, where: str) -> list[str]:
    """An HTTP probe path must be a route of the program it probes."""
    argv = as_flower(argv)
    program = Path(argv[0]).name if argv else ""
    if program == "atlaspipe" and argv[1:2] in (["serve"], ["exporter"]):
        # The exporter is prometheus-client's server: /metrics is its documented route.
        routes = web_routes() if argv[1] == "serve" else frozenset({"/metrics"})
        if path not in routes:
            return [f"{where}: {path} is not a route of atlaspipe {argv[1]} ({sorted(routes)})"]
        return []
    if program == "celery" and "flower" in argv:
        if not any(p.fullmatch(path) for p in flower_routes()):
            return [f"{where}: {path} is not a Flower route"]
        return []
    if program.endswith("prometheus") or "prometheus" in where:
        return [] if path in PROMETHEUS_ROUTES else [f"{where}: {path} is not a Prometheus route"]
    return [f"{where}: HTTP probe {path} on a program without HTTP routes ({program})"]


def shell_script_argv(argv: list[str]) -> list[str]:
    """For `sh -c '... exec PROGRAM ARGS'`, the argv exec'd; otherwise argv itself."""
    if len(argv) >= 3 and Path(argv[0]).name in ("sh", "bash") and argv[1] == "-c":
        script = argv[2]
        match = re.search(r"(?:^|&&|;)\s*exec\s+(.+?)\s*$", script, re.S)
        if match:
            return shlex.split(match.group(1))
    return argv


def worker_probe_problems(script: str, where: str, env: dict[str, str], ready: bool) -> list[str]:
    """A worker probe reads the probe files of the contract, in the directory the worker writes them to."""
    problems = []
    if "ATLASPIPE_PROBE_DIR" not in env:
        problems.append(f"{where}: ATLASPIPE_PROBE_DIR is not set, the worker writes its probe files elsewhere")
    heartbeat = re.search(r'"?\$\{?ATLASPIPE_PROBE_DIR\}?/heartbeat"?\s+-newermt\s+[\'"]?-(\d+) seconds', script)
    if not heartbeat:
        problems.append(f"{where}: does not test the age of $ATLASPIPE_PROBE_DIR/heartbeat (find -newermt)")
    elif not 3 * HEARTBEAT_PERIOD <= int(heartbeat.group(1)) <= 300:
        problems.append(f"{where}: heartbeat age limit {heartbeat.group(1)} s is not between 3 heartbeats and 5 min")
    has_ready = re.search(r'test -f "?\$\{?ATLASPIPE_PROBE_DIR\}?/ready"?', script)
    if ready and not has_ready:
        problems.append(f"{where}: readiness does not test $ATLASPIPE_PROBE_DIR/ready")
    if not ready and has_ready:
        problems.append(f"{where}: liveness depends on the broker connection (the ready file)")
    for name in re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", script):
        if name not in env and name != "HOSTNAME":
            problems.append(f"{where}: ${name} is not set in the container")
    return problems


def parse_quantity(value: Any) -> float:
    """A Kubernetes quantity in cores or bytes."""
    text = str(value)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", text)
    if not match or (match.group(2) and match.group(2) not in units):
        raise ValueError(f"not a quantity: {value!r}")
    number = float(match.group(1))
    return number * units[match.group(2)] if match.group(2) else number


def compose_quantity(value: Any) -> float:
    """A compose memory size (1g, 384m, 1536m) in bytes."""
    match = re.fullmatch(r"([0-9.]+)([bkmg]?)", str(value).lower())
    if not match:
        raise ValueError(f"not a size: {value!r}")
    return float(match.group(1)) * {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2)]


def url_problems(url: str, where: str, endpoints: dict[tuple[str, int], str]) -> list[str]:
    """A URL's host:port must be an endpoint something listens on."""
    parts = urllib.parse.urlsplit(url)
    default = {"amqp": 5672, "redis": REDIS_PORT, "http": 80}.get(parts.scheme)
    try:
        host, port = parts.hostname or "", parts.port or default
    except ValueError:
        return [f"{where}: not a URL: {url}"]
    if (host, port) not in endpoints:
        known = ", ".join(f"{h}:{p}" for h, p in sorted(endpoints))
        return [f"{where}: {parts.scheme}://{host}:{port} is no endpoint of this deployment (known: {known})"]
    return []


# ================================================================================== Helm chart
@dataclass
class Rendered:
    """The chart rendered with one set of values."""

    case: str
    values: dict[str, Any]
    docs: list[dict[str, Any]]
    notes: str

    def of(self, *kinds: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] in kinds]

    def named(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def values_cases(chart_dir: Path) -> dict[str, dict[str, Any] | None]:
    cases: dict[str, dict[str, Any] | None] = {"default": None}
    for path in sorted((chart_dir / "ci").glob("*-values.yaml")):
        cases[path.name] = yaml.safe_load(path.read_text())
    return cases


def helm() -> Any:
    import helm_python

    helm_python.disable_logging()
    return helm_python


def render(chart_dir: Path, values: dict[str, Any] | None, case: str = "default", config: Any = None,
           is_upgrade: bool = False) -> Rendered:
    """Render offline, or with ``config`` (a helm_python.Config) so that `lookup` reads a cluster."""
    sdk = helm()
    with sdk.Chart.load(chart_dir) as chart:
        merged = chart.merge_values(values)
        options = {"name": RELEASE, "namespace": NAMESPACE, "is_install": not is_upgrade, "is_upgrade": is_upgrade}
        texts = config.render(chart, values, **options) if config else chart.render(values, **options)
    docs, notes = [], ""
    for path, text in texts.items():
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return Rendered(case, merged, docs, notes)


def containers(doc: dict[str, Any], init: bool = True) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return list(spec.get("containers", [])) + (list(spec.get("initContainers", [])) if init else [])


def component(doc: dict[str, Any]) -> str:
    return str(doc["metadata"].get("labels", {}).get("app.kubernetes.io/component", ""))


def is_app(container: dict[str, Any]) -> bool:
    return container["image"].rpartition(":")[0].rsplit("/", 1)[-1] == APP_IMAGE


def container_env(r: Rendered, container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment a container sees: envFrom ConfigMaps, then env (Secrets decoded, $(VAR) expanded)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        cm = r.named("ConfigMap", ref["name"]) if ref else None
        if cm:
            env.update({k: str(v) for k, v in cm.get("data", {}).items()})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                      lambda m: env.get(m.group(1), m.group(0)), str(var["value"]))
        elif "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets.get(ref["name"], {}).get(ref["key"], f"<external {ref['name']}/{ref['key']}>")
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["configMapKeyRef"]
            cm = r.named("ConfigMap", ref["name"])
            env[var["name"]] = str((cm or {}).get("data", {}).get(ref["key"], ""))
        else:
            env[var["name"]] = ""
    return env


def rendered_secrets(r: Rendered) -> dict[str, dict[str, str]]:
    return {s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
            for s in r.of("Secret")}


def external_secret_keys(values: dict[str, Any]) -> dict[str, set[str]]:
    """Secrets the user creates (GitOps: *.existingSecret) and the keys values.yaml documents for each."""
    documented: dict[str, set[str]] = {}

    def add(name: str, *keys: str) -> None:
        if name:
            documented.setdefault(name, set()).update(k for k in keys if k)

    rabbit, redis_, broker, backend = (values["rabbitmq"], values["redis"], values["externalBroker"],
                                       values["externalBackend"])
    add(rabbit["auth"]["existingSecret"], rabbit["auth"]["existingSecretPasswordKey"], broker["managementUrlKey"])
    add(redis_["auth"]["existingSecret"], redis_["auth"]["existingSecretPasswordKey"])
    add(broker["existingSecret"], broker["existingSecretKey"], broker["managementUrlKey"])
    add(backend["existingSecret"], backend["existingSecretKey"])
    add(values["flower"]["auth"]["existingSecret"], "flower-basic-auth")
    add(values["web"]["auth"]["existingSecret"], "web-auth")
    return documented


def secret_ref_problem(r: Rendered, name: str, key: str | None, where: str,
                       secrets: dict[str, dict[str, str]]) -> list[str]:
    if name in secrets:
        if key is not None and key not in secrets[name]:
            return [f"{where}: Secret {name} has no key {key!r} (it has {sorted(secrets[name])})"]
        return []
    external = external_secret_keys(r.values)
    if name not in external:
        return [f"{where}: Secret {name} is neither rendered by the chart nor a documented existingSecret"]
    if key is not None and key not in external[name]:
        return [f"{where}: key {key!r} of existing Secret {name} is not one values.yaml documents "
                f"({sorted(external[name])})"]
    return []


def reference_problems(r: Rendered) -> list[str]:
    """Every secretKeyRef, configMapKeyRef, envFrom, secret and configMap volume resolves."""
    problems: list[str] = []
    secrets = rendered_secrets(r)
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in r.of("ConfigMap")}
    for doc in r.of(*WORKLOAD_KINDS):
        name = doc["metadata"]["name"]
        for c in containers(doc):
            where = f"[{r.case}] {name}/{c['name']}"
            for var in c.get("env", []):
                source = var.get("valueFrom", {})
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    problems += secret_ref_problem(r, ref["name"], ref["key"], f"{where} env {var['name']}", secrets)
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    if ref["key"] not in configmaps.get(ref["name"], {}):
                        problems.append(f"{where} env {var['name']}: ConfigMap {ref['name']} has no key {ref['key']}")
            for source in c.get("envFrom", []):
                if "configMapRef" in source and source["configMapRef"]["name"] not in configmaps:
                    problems.append(f"{where}: envFrom ConfigMap {source['configMapRef']['name']} is not rendered")
                if "secretRef" in source:
                    problems += secret_ref_problem(r, source["secretRef"]["name"], None, where, secrets)
            volumes = {v["name"]: v for v in doc["spec"]["template"]["spec"].get("volumes", [])}
            claims = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
            for mount in c.get("volumeMounts", []):
                volume = volumes.get(mount["name"])
                if volume is None and mount["name"] not in claims:
                    problems.append(f"{where}: volumeMount {mount['name']} has no volume")
                    continue
                if volume and "configMap" in volume:
                    data = configmaps.get(volume["configMap"]["name"])
                    if data is None:
                        problems.append(f"{where}: ConfigMap volume {volume['configMap']['name']} is not rendered")
                    elif mount.get("subPath") and mount["subPath"] not in data:
                        problems.append(f"{where}: ConfigMap {volume['configMap']['name']} has no key "
                                        f"{mount['subPath']} (subPath)")
                if volume and "persistentVolumeClaim" in volume:
                    claim = volume["persistentVolumeClaim"]["claimName"]
                    existing = {r.values["persistence"][p]["existingClaim"] for p in ("cache", "outputs")}
                    if claim not in {p["metadata"]["name"] for p in r.of("PersistentVolumeClaim")} | existing:
                        problems.append(f"{where}: PersistentVolumeClaim {claim} is not rendered")
    for ta in r.of("TriggerAuthentication"):
        for ref in ta["spec"].get("secretTargetRef", []):
            problems += secret_ref_problem(r, ref["name"], ref["key"],
                                           f"[{r.case}] TriggerAuthentication {ta['metadata']['name']}", secrets)
    return problems


def endpoints(r: Rendered) -> dict[tuple[str, int], str]:
    """Service name and port -> what answers there: the targetPort must name a declared container port
    that the process listens on."""
    found: dict[tuple[str, int], str] = {}
    pods = [(d["spec"]["template"]["metadata"].get("labels", {}), d) for d in r.of(*WORKLOAD_KINDS)]
    for svc in r.of("Service"):
        selector = svc["spec"].get("selector", {})
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for labels, doc in pods:
                if not selector.items() <= labels.items():
                    continue
                for c in containers(doc, init=False):
                    declared = {(p.get("name") if isinstance(target, str) else p["containerPort"]): p["containerPort"]
                                for p in c.get("ports", [])}
                    if target in declared and declared[target] in process_ports(r, c):
                        found[(svc["metadata"]["name"], port["port"])] = doc["metadata"]["name"]
                        found[(f"{svc['metadata']['name']}.{NAMESPACE}.svc.{r.values['clusterDomain']}",
                               port["port"])] = doc["metadata"]["name"]
    return found


def process_ports(r: Rendered, c: dict[str, Any]) -> set[int]:
    """The ports a container's process really listens on: from its command, its environment, or for
    RabbitMQ, Redis and Prometheus their configuration and defaults."""
    image = c["image"].rpartition(":")[0]
    if image.endswith("rabbitmq"):
        conf = next((cm["data"] for cm in r.of("ConfigMap") if "90-atlaspipe.conf" in cm.get("data", {})), {})
        text = conf.get("90-atlaspipe.conf", "")
        keys = ("listeners.tcp.default", "management.tcp.port", "prometheus.tcp.port")
        ports = {int(m) for k in keys for m in re.findall(rf"^\s*{re.escape(k)}\s*=\s*(\d+)", text, re.M)}
        return ports | {4369, 25672}
    if image.endswith("redis"):
        script = " ".join(c.get("command", []) + c.get("args", []))
        port = re.search(r"--port[ =](\d+)", script)
        return {int(port.group(1)) if port else REDIS_PORT}
    if image.endswith("prometheus"):
        return {9090}
    env = container_env(r, c, rendered_secrets(r))
    return listen_port(c.get("command", []) + c.get("args", []), env)


def probe_problems(r: Rendered) -> list[str]:
    problems = []
    secrets = rendered_secrets(r)
    for doc in r.of(*WORKLOAD_KINDS):
        for c in containers(doc, init=False):
            where = f"[{r.case}] {doc['metadata']['name']}/{c['name']}"
            argv = c.get("command", []) + c.get("args", [])
            env = container_env(r, c, secrets)
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            listening = process_ports(r, c)
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = c.get(kind)
                if probe is None:
                    continue
                if "httpGet" in probe:
                    port = probe["httpGet"]["port"]
                    number = ports.get(port) if isinstance(port, str) else port
                    if number is None or number not in listening:
                        problems.append(f"{where} {kind}: port {port} is not one the process listens on {listening}")
                    problems += http_route_problems(argv, probe["httpGet"]["path"], f"{where} {kind}")
                elif "exec" in probe:
                    command = probe["exec"]["command"]
                    if component(doc) == "worker":
                        if command[:2] != ["sh", "-c"]:
                            problems.append(f"{where} {kind}: not a shell test of the probe files")
                            continue
                        problems += worker_probe_problems(command[2], f"{where} {kind}", env,
                                                          ready=kind == "readinessProbe")
                    elif c["image"].rpartition(":")[0].endswith("rabbitmq"):
                        tool = RABBITMQ_TOOLS.get(command[0])
                        sub = [a for a in command[1:] if not a.startswith("-")]
                        if tool is None or not sub or sub[0] not in tool:
                            problems.append(f"{where} {kind}: {' '.join(command)} is no RabbitMQ health command")
                    elif c["image"].rpartition(":")[0].endswith("redis") and "redis-cli ping" not in " ".join(command):
                        problems.append(f"{where} {kind}: {' '.join(command)} is not redis-cli ping")
                else:
                    problems.append(f"{where} {kind}: neither httpGet nor exec")
            if component(doc) == "worker" and not (c.get("livenessProbe") and c.get("readinessProbe")):
                problems.append(f"{where}: a worker needs both a liveness and a readiness probe")
    return problems


def command_and_queue_problems(r: Rendered) -> list[str]:
    problems = []
    served: set[str] = set()
    for doc in r.of(*WORKLOAD_KINDS):
        for c in containers(doc, init=False):
            if not is_app(c):
                continue
            where = f"[{r.case}] {doc['metadata']['name']}/{c['name']}"
            argv = c.get("command", []) + c.get("args", [])
            problems += command_problems(argv, where)
            if component(doc) == "worker":
                if argv[:4] != ["celery", "-A", "atlaspipe", "worker"]:
                    problems.append(f"{where}: a worker runs {' '.join(argv[:4])}")
                    continue
                queues = (option_value(argv, "-Q", "--queues") or "").split(",")
                unknown = set(queues) - set(celeryconfig.STAGE_QUEUES)
                if unknown:
                    problems.append(f"{where}: -Q {','.join(queues)}: no task is routed to {sorted(unknown)}")
                served |= set(queues)
                stage = doc["metadata"]["labels"].get("atlaspipe.io/stage", "")
                node = option_value(argv, "-n", "--hostname") or ""
                if node != f"{stage}@%h":
                    problems.append(f"{where}: node name {node!r} is not {stage}@%h")
            if component(doc) == "submit" and Path(argv[0]).name != "atlaspipe-submit":
                problems.append(f"{where}: the submit Job runs {argv[0]}, not atlaspipe-submit")
    missing = routed_queues() - served
    if missing:
        problems.append(f"[{r.case}] no worker consumes {sorted(missing)} (celeryconfig.task_routes)")
    return problems


def url_wiring_problems(r: Rendered) -> list[str]:
    """Broker, backend, Prometheus and KEDA URLs point at a Service port that reaches the right process."""
    problems = []
    known = endpoints(r)
    secrets = rendered_secrets(r)
    external = external_secret_keys(r.values)
    for doc in r.of(*WORKLOAD_KINDS):
        for c in containers(doc):
            if not is_app(c):
                continue
            where = f"[{r.case}] {doc['metadata']['name']}/{c['name']}"
            env = container_env(r, c, secrets)
            for var in ("ATLASPIPE_BROKER_URL", "ATLASPIPE_RESULT_BACKEND"):
                url = env.get(var, "")
                if url.startswith("<external") or not url:
                    continue
                problems += url_problems(url, f"{where} {var}", known)
            rabbit = next((d for d in r.of(*WORKLOAD_KINDS) if component(d) == "rabbitmq"), None)
            if rabbit:
                rabbit_env = container_env(r, containers(rabbit, init=False)[0], secrets)
                url = urllib.parse.urlsplit(env.get("ATLASPIPE_BROKER_URL", ""))
                if url.scheme == "amqp":
                    if url.username != rabbit_env.get("RABBITMQ_DEFAULT_USER"):
                        problems.append(f"{where}: broker user {url.username} is not RabbitMQ's default user")
                    if url.password != rabbit_env.get("RABBITMQ_DEFAULT_PASS"):
                        problems.append(f"{where}: broker password is not the one RabbitMQ is configured with")
                    if urllib.parse.unquote(url.path.lstrip("/")) != rabbit_env.get("RABBITMQ_DEFAULT_VHOST"):
                        problems.append(f"{where}: vhost {url.path} is not RabbitMQ's default vhost")
            redis_doc = next((d for d in r.of(*WORKLOAD_KINDS) if component(d) == "redis"), None)
            if redis_doc:
                redis_env = container_env(r, containers(redis_doc, init=False)[0], secrets)
                url = urllib.parse.urlsplit(env.get("ATLASPIPE_RESULT_BACKEND", ""))
                if url.scheme == "redis" and url.password != redis_env.get("REDISCLI_AUTH"):
                    problems.append(f"{where}: Redis password is not the one Redis is configured with")
            argv = c.get("command", []) + c.get("args", [])
            prom = option_value(argv, "--prometheus-url")
            if prom:
                problems += url_problems(prom, f"{where} --prometheus-url", known)
    for so in r.of("ScaledObject"):
        for trigger in so["spec"]["triggers"]:
            ref = next((t for t in r.of("TriggerAuthentication")
                        if t["metadata"]["name"] == trigger.get("authenticationRef", {}).get("name")), None)
            if ref is None:
                problems.append(f"[{r.case}] ScaledObject {so['metadata']['name']}: no such TriggerAuthentication")
                continue
            for target in ref["spec"].get("secretTargetRef", []):
                value = secrets.get(target["name"], {}).get(target["key"])
                if value is not None:
                    problems += url_problems(value, f"[{r.case}] KEDA management URL", known)
                elif target["name"] not in external:
                    problems.append(f"[{r.case}] KEDA host Secret {target['name']} does not exist")
    return problems


def resource_problems(r: Rendered) -> list[str]:
    problems = []
    for doc in r.of(*WORKLOAD_KINDS):
        for c in containers(doc):
            where = f"[{r.case}] {doc['metadata']['name']}/{c['name']}"
            res = c.get("resources", {})
            for bound in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(bound, {})):
                    problems.append(f"{where}: {bound} needs cpu and memory")
            for kind in ("cpu", "memory"):
                try:
                    request = parse_quantity(res.get("requests", {}).get(kind, 0))
                    limit = parse_quantity(res.get("limits", {}).get(kind, 0))
                except ValueError as exc:
                    problems.append(f"{where}: {exc}")
                    continue
                if limit and request > limit:
                    problems.append(f"{where}: {kind} request {res['requests'][kind]} is above its limit "
                                    f"{res['limits'][kind]}")
        if component(doc) == "worker":
            spec = doc["spec"]["template"]["spec"]
            env = container_env(r, containers(doc, init=False)[0], rendered_secrets(r))
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if grace < task_time_limit(env):
                problems.append(f"[{r.case}] {doc['metadata']['name']}: terminationGracePeriodSeconds {grace} is "
                                f"below task_time_limit {task_time_limit(env):g} s: running chunks would be killed")
    return problems


def pod_metadata_problems(r: Rendered) -> list[str]:
    """checksum annotations, PodDisruptionBudgets, security, pinned images, Jobs."""
    problems = []
    secrets = rendered_secrets(r)
    for doc in r.of(*WORKLOAD_KINDS):
        name = doc["metadata"]["name"]
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        all_c = containers(doc)
        uses_secret = any("secretKeyRef" in v.get("valueFrom", {}) for c in all_c for v in c.get("env", []))
        uses_config = any(c.get("envFrom") for c in all_c) or any(
            "configMap" in v for v in doc["spec"]["template"]["spec"].get("volumes", []))
        if uses_secret and not annotations.get("checksum/secret"):
            problems.append(f"[{r.case}] {name}: reads a Secret but has no checksum/secret annotation")
        if uses_config and not annotations.get("checksum/config"):
            problems.append(f"[{r.case}] {name}: reads a ConfigMap but has no checksum/config annotation")
        spec = doc["spec"]["template"]["spec"]
        if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
            problems.append(f"[{r.case}] {name}: pods must set runAsNonRoot")
        for c in all_c:
            image = c["image"]
            repo, _, tag = image.rpartition(":")
            if not repo or not tag or tag == "latest" or "/" in tag:
                problems.append(f"[{r.case}] {name}: image {image} is not pinned")
            if is_app(c) and tag != VERSION and r.values["image"]["tag"] in ("", None):
                problems.append(f"[{r.case}] {name}: atlaspipe image tag {tag} is not the package version {VERSION}")
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"[{r.case}] {name}/{c['name']}: must drop all capabilities, no privilege escalation")
            if is_app(c) and sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"[{r.case}] {name}/{c['name']}: atlaspipe runs with a read-only root filesystem")
            argv = " ".join(c.get("command", []) + c.get("args", []))
            for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", argv):
                problems.append(f"[{r.case}] {name}/{c['name']}: $({var}) in the command line puts its value "
                                "into the process arguments (ps shows them)")
            for password in (v for s in secrets.values() for k, v in s.items() if "password" in k or "auth" in k):
                if password and password in argv:
                    problems.append(f"[{r.case}] {name}/{c['name']}: a password in the command line")
            for var in c.get("env", []):
                value = str(var.get("value", ""))
                if re.search(r"(PASS|PASSWORD|SECRET|TOKEN|_AUTH)$", var["name"]) and "value" in var:
                    problems.append(f"[{r.case}] {name}/{c['name']}: {var['name']} is a literal value, not a secret")
                for _user, password in re.findall(r"://([^:/@\s]*):([^@\s]*)@", value):
                    if not (password.startswith("$(") and password.endswith(")")):
                        problems.append(f"[{r.case}] {name}/{c['name']}: a literal password in {var['name']}")
        if doc["kind"] == "Job":
            hooks = set(doc["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(","))
            if "post-install" not in hooks:
                problems.append(f"[{r.case}] Job {name}: not a post-install hook, so every upgrade would resubmit "
                                "or fail on its immutable spec")
            if component(doc) == "submit" and "post-upgrade" in hooks and not r.values["submit"].get("onUpgrade"):
                problems.append(f"[{r.case}] Job {name}: resubmits on every upgrade")
            if spec.get("restartPolicy") not in ("Never", "OnFailure") or doc["spec"].get("backoffLimit", 6) > 6:
                problems.append(f"[{r.case}] Job {name}: needs restartPolicy Never/OnFailure and a small backoffLimit")
    pdbs = r.of("PodDisruptionBudget")
    for doc in r.of("Deployment"):
        if component(doc) != "worker" or not r.values["workers"]["podDisruptionBudget"]["enabled"]:
            continue
        labels = doc["spec"]["template"]["metadata"]["labels"]
        if not any(p["spec"]["selector"]["matchLabels"].items() <= labels.items() for p in pdbs):
            problems.append(f"[{r.case}] {doc['metadata']['name']}: no PodDisruptionBudget selects its pods")
    for pdb in pdbs:
        selector = pdb["spec"]["selector"]["matchLabels"]
        if not any(selector.items() <= d["spec"]["template"]["metadata"]["labels"].items() for d in r.of("Deployment")):
            problems.append(f"[{r.case}] PodDisruptionBudget {pdb['metadata']['name']} selects no pod")
    for secret in r.of("Secret"):
        if secret["metadata"].get("annotations", {}).get("helm.sh/resource-policy") != "keep":
            problems.append(f"[{r.case}] Secret {secret['metadata']['name']}: must be kept on uninstall")
        for key, value in secret.get("data", {}).items():
            if key.endswith("-password") and len(base64.b64decode(value)) < 32:
                problems.append(f"[{r.case}] Secret key {key}: generated passwords have 32 characters")
    return problems


def service_problems(r: Rendered) -> list[str]:
    problems = []
    pods = [(d["spec"]["template"]["metadata"].get("labels", {}), d) for d in r.of(*WORKLOAD_KINDS)]
    for svc in r.of("Service"):
        selector = svc["spec"].get("selector", {})
        matched = [d for labels, d in pods if selector.items() <= labels.items()]
        name = svc["metadata"]["name"]
        if not matched:
            problems.append(f"[{r.case}] Service {name} selects no pod")
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for doc in matched:
                declared = [p for c in containers(doc, init=False) for p in c.get("ports", [])]
                key = "name" if isinstance(target, str) else "containerPort"
                hit = [p for p in declared if p.get(key) == target]
                if not hit:
                    problems.append(f"[{r.case}] Service {name}:{port['port']} -> {target}: "
                                    f"{doc['metadata']['name']} declares no such port")
                elif not any(p["containerPort"] in process_ports(r, c)
                             for c in containers(doc, init=False) for p in hit):
                    problems.append(f"[{r.case}] Service {name}:{port['port']} -> {target}: nothing listens there")
    for doc in r.of(*WORKLOAD_KINDS):
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        if "prometheus.io/port" in annotations:
            ports = set().union(*(process_ports(r, c) for c in containers(doc, init=False)))
            if int(annotations["prometheus.io/port"]) not in ports:
                problems.append(f"[{r.case}] {doc['metadata']['name']}: prometheus.io/port "
                                f"{annotations['prometheus.io/port']} is not listened on ({ports})")
    for sm in r.of("ServiceMonitor"):
        selector = sm["spec"]["selector"]["matchLabels"]
        selected = [s for s in r.of("Service") if selector.items() <= s["metadata"].get("labels", {}).items()]
        port_names = {p.get("name") for s in selected for p in s["spec"]["ports"]}
        for endpoint in sm["spec"]["endpoints"]:
            if endpoint.get("port") not in port_names:
                problems.append(f"[{r.case}] ServiceMonitor endpoint port {endpoint.get('port')} is no port of "
                                f"the Services it selects ({sorted(n for n in port_names if n)})")
    for cm in r.of("ConfigMap"):
        if "prometheus.yml" not in cm.get("data", {}):
            continue
        config = yaml.safe_load(cm["data"]["prometheus.yml"])
        known = endpoints(r)
        for job in config.get("scrape_configs", []):
            for sd in job.get("dns_sd_configs", []):
                for target in sd["names"]:
                    if (target, sd["port"]) not in known:
                        problems.append(f"[{r.case}] Prometheus job {job['job_name']}: {target}:{sd['port']} is no "
                                        "Service port with a listener")
    return problems


def keda_problems(r: Rendered) -> list[str]:
    problems = []
    for so in r.of("ScaledObject"):
        target = r.named("Deployment", so["spec"]["scaleTargetRef"]["name"])
        if target is None:
            problems.append(f"[{r.case}] ScaledObject {so['metadata']['name']} scales a Deployment that does not exist")
            continue
        if "replicas" in target["spec"]:
            problems.append(f"[{r.case}] {target['metadata']['name']}: sets replicas although KEDA owns them")
        argv = containers(target, init=False)[0]["command"]
        queues = (option_value(argv, "-Q") or "").split(",")
        _, params = celery_problems(argv)
        concurrency = int(params.get("concurrency") or 1)
        for trigger in so["spec"]["triggers"]:
            meta = trigger["metadata"]
            if trigger["type"] != "rabbitmq" or meta.get("protocol") != "http" or meta.get("mode") != "QueueLength":
                problems.append(f"[{r.case}] KEDA trigger must be rabbitmq/http/QueueLength (unacked messages count)")
            if meta.get("queueName") not in queues:
                problems.append(f"[{r.case}] KEDA watches queue {meta.get('queueName')!r}, "
                                f"the target consumes {queues}")
            per_replica = concurrency * celeryconfig.worker_prefetch_multiplier
            if int(meta.get("value", 0)) != per_replica:
                problems.append(f"[{r.case}] KEDA value {meta.get('value')} is not what one busy replica holds "
                                f"(concurrency {concurrency} x prefetch {celeryconfig.worker_prefetch_multiplier})")
            if meta.get("vhostName") != r.values["rabbitmq"]["vhost"]:
                problems.append(f"[{r.case}] KEDA vhost {meta.get('vhostName')} is not the broker's")
            if "host" in meta:
                problems.append(f"[{r.case}] KEDA host inlined in the ScaledObject")
    return problems


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of the saved CRDs, made strict (unknown fields are errors)."""
    schemas = {}
    for path in CRD_DIR.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            schemas[(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])] = schema
    return schemas


def strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    return schema


def schema_problems(r: Rendered) -> list[str]:
    import jsonschema

    problems = []
    for doc in r.docs:
        where = f"[{r.case}] {doc['kind']} {doc['metadata']['name']}"
        key = (doc["apiVersion"], doc["kind"])
        if key in crd_schemas():
            for error in jsonschema.Draft7Validator(crd_schemas()[key]).iter_errors(doc):
                problems.append(f"{where}: CRD schema: {'.'.join(map(str, error.path))}: {error.message}")
            continue
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        if "." in group and not group.endswith(".k8s.io"):
            problems.append(f"{where}: custom resource without a saved CRD schema")
            continue
        text = json.dumps(doc, sort_keys=True)
        for version in K8S_VERSIONS:
            error = kubernetes_error(text, version)
            if error:
                problems.append(f"{where}: Kubernetes {version}: {error}")
    return problems


@functools.cache
def kubernetes_error(document: str, version: str) -> str:
    """kubernetes-validate --strict of one object (JSON text, so the result can be cached)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(json.loads(document), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return str(exc).splitlines()[0]
    return ""


def lint_problems(chart_dir: Path, case: str, values: dict[str, Any] | None) -> list[str]:
    report = helm().lint(chart_dir, values, strict=True, namespace=NAMESPACE)
    found = [f"[{case}] helm lint: {e}" for e in report["errors"]]
    found += [f"[{case}] helm lint: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return found


RENDER_CHECKS = (reference_problems, probe_problems, command_and_queue_problems, url_wiring_problems,
                 resource_problems, pod_metadata_problems, service_problems, keda_problems, schema_problems)


def chart_problems(chart_dir: Path = CHART) -> list[str]:
    """Every problem of the chart, with its default values and each ci/*-values.yaml."""
    problems: list[str] = []
    for case, values in values_cases(chart_dir).items():
        lint = lint_problems(chart_dir, case, values)
        problems += lint
        try:
            rendered = render(chart_dir, values, case)
        except Exception as exc:  # a template error or a schema violation
            problems.append(f"[{case}] render: {str(exc).strip().splitlines()[-1]}")
            continue
        for check in RENDER_CHECKS:
            problems += check(rendered)
    return problems


# ================================================================================== Docker Compose
def load_compose(compose_dir: Path, *extra: str) -> dict[str, Any]:
    """compose.yaml (YAML anchors and merge keys resolved) with override files applied service by service."""
    data: dict[str, Any] = yaml.safe_load((compose_dir / "compose.yaml").read_text())
    for name in extra:
        override = yaml.safe_load((compose_dir / name).read_text())
        for service, settings in override.get("services", {}).items():
            data["services"].setdefault(service, {}).update(settings)
    return data


def compose_argv(service: dict[str, Any]) -> list[str]:
    def as_list(value: Any) -> list[str]:
        if value is None:
            return []
        return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]

    return as_list(service.get("entrypoint")) + as_list(service.get("command"))


def substitute(text: str, env: dict[str, str]) -> str:
    """Compose variable substitution: ${VAR}, ${VAR:-default}, ${VAR:?error}, $$."""
    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        value = env.get(name)
        if op == ":-" and not value:
            return arg
        if op == ":?" and not value:
            return f"<unset {name}>"
        return value or ""

    text = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-|:\?)?([^}]*)\}", one, text.replace("$$", "\0"))
    return text.replace("\0", "$")


def compose_env(compose_dir: Path) -> dict[str, str]:
    lines = (compose_dir / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z_][A-Z0-9_]*=", line))


def mounted_secrets(service: dict[str, Any]) -> dict[str, str]:
    """secret name -> path in the container."""
    found = {}
    for item in service.get("secrets", []):
        if isinstance(item, str):
            found[item] = f"/run/secrets/{item}"
        else:
            target = item.get("target", item["source"])
            found[item["source"]] = target if target.startswith("/") else f"/run/secrets/{target}"
    return found


@dataclass
class SecretFiles:
    """What `scripts/docker-run.sh --init` writes into compose/secrets/ (one run in a temp copy)."""

    files: dict[str, str] = field(default_factory=dict)
    error: str = ""


def generate_compose_secrets(compose_dir: Path, scripts_dir: Path) -> SecretFiles:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(compose_dir, root / "compose", ignore=shutil.ignore_patterns(".env", "secrets"))
        shutil.copytree(scripts_dir, root / "scripts")
        shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
        run = subprocess.run(["bash", str(root / "scripts" / "docker-run.sh"), "--init"], capture_output=True,
                             text=True, timeout=60, env=env, check=False)
        if run.returncode != 0:
            return SecretFiles(error=f"docker-run.sh --init failed: {run.stderr.strip()[-300:]}")
        secrets = root / "compose" / "secrets"
        return SecretFiles({p.name: p.read_text().strip() for p in secrets.iterdir() if p.name != ".gitignore"})


def ini(text: str) -> dict[str, str]:
    """`key = value` lines (rabbitmq.conf style)."""
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s*([a-z_.]+)\s*=\s*(.*)$", text, re.M)}


def compose_problems(compose_dir: Path = COMPOSE_DIR, scripts_dir: Path = SCRIPTS) -> list[str]:
    problems: list[str] = []
    try:
        data = load_compose(compose_dir)
    except yaml.YAMLError as exc:
        return [f"compose.yaml: {exc}"]
    problems += compose_schema_problems(data)
    problems += compose_v1_problems(compose_dir)
    env = compose_env(compose_dir)
    services = data["services"]
    top_secrets = data.get("secrets", {})
    generated = generate_compose_secrets(compose_dir, scripts_dir)
    if generated.error:
        problems.append(generated.error)
    for name, spec in top_secrets.items():
        file = Path(spec.get("file", "")).name
        if not generated.error and file not in generated.files:
            problems.append(f"secret {name}: docker-run.sh --init does not write secrets/{file}")
    rabbit_conf = ini((compose_dir / "rabbitmq" / "rabbitmq.conf").read_text())
    secret_text = {name: generated.files.get(Path(spec.get("file", "")).name, "") for name, spec in top_secrets.items()}
    default_user = ini(secret_text.get("rabbitmq_default_user", ""))
    listeners: dict[tuple[str, int], str] = {}
    for name, svc in services.items():
        image = svc.get("image", "")
        if image.startswith(("rabbitmq", "atlaspipe-standin/rabbitmq")):
            for key in ("listeners.tcp.default", "management.tcp.port", "prometheus.tcp.port"):
                if key in rabbit_conf:
                    listeners[(name, int(rabbit_conf[key]))] = name
        elif "redis" in image:
            listeners[(name, REDIS_PORT)] = name
        elif "prometheus" in image:
            listeners[(name, 9090)] = name
        elif "build" in svc:
            service_env = {k: substitute(str(v), env) for k, v in (svc.get("environment") or {}).items()}
            for port in listen_port(shell_script_argv(substitute_argv(compose_argv(svc), env)), service_env):
                listeners[(name, port)] = name

    served: set[str] = set()
    for name, svc in services.items():
        where = f"compose {name}"
        argv = substitute_argv(compose_argv(svc), env)
        service_env = {k: substitute(str(v), env) for k, v in (svc.get("environment") or {}).items()}
        secrets = mounted_secrets(svc)
        for secret in secrets:
            if secret not in top_secrets:
                problems.append(f"{where}: secret {secret} is not declared at the top level")
        # *_FILE variables and /run/secrets paths must be secrets this service mounts.
        for var, value in service_env.items():
            if var.endswith("_FILE") and value not in secrets.values():
                problems.append(f"{where}: {var}={value} is no secret this service mounts")
            if re.search(r"(PASS|PASSWORD|SECRET|TOKEN|_AUTH)$", var) or re.search(r"://[^:/@\s]*:[^@\s]+@", value):
                problems.append(f"{where}: {var} carries a credential in the environment; use a *_FILE secret")
        scripts = " ".join(argv) + " " + " ".join(map(str, (svc.get("healthcheck") or {}).get("test", [])))
        for path in re.findall(r"/run/secrets/[A-Za-z0-9_.-]+", scripts):
            if path not in secrets.values():
                problems.append(f"{where}: reads {path}, which is not mounted")
        if re.search(r"--requirepass\s|--requirepass=|\$\{[A-Z_]*PASSWORD", " ".join(argv)):
            problems.append(f"{where}: a password in the command line (ps shows it)")
        user = str(svc.get("user", ""))
        if not user or user.split(":", maxsplit=1)[0] in ("0", "root"):
            problems.append(f"{where}: runs as root")
        for port in svc.get("ports", []):
            text = str(port)
            if not text.startswith("${ATLASPIPE_BIND_ADDRESS:-127.0.0.1}:"):
                problems.append(f"{where}: port {text} is not bound to ATLASPIPE_BIND_ADDRESS")
            published, _, container = substitute(text, env).rpartition(":")
            if container in ("5672", "6379") or published.endswith((":5672", ":6379")):
                problems.append(f"{where}: publishes {text}, which clashes with a local RabbitMQ/Redis")
            if (name, int(container)) not in listeners:
                problems.append(f"{where}: publishes {container}, where nothing listens")
        limits = (svc.get("deploy") or {}).get("resources", {}).get("limits")
        if "profiles" not in svc and not (limits and {"cpus", "memory"} <= set(limits)):
            problems.append(f"{where}: needs deploy.resources.limits cpus and memory")
        for dep, cond in (svc.get("depends_on") or {}).items():
            if dep not in services:
                problems.append(f"{where}: depends on unknown service {dep}")
            elif not isinstance(cond, dict) or cond.get("condition") != "service_healthy":
                problems.append(f"{where}: depends on {dep} without condition service_healthy")
            elif "healthcheck" not in services[dep]:
                problems.append(f"{where}: depends on {dep}, which has no healthcheck")
        if "profiles" not in svc and "healthcheck" not in svc:
            problems.append(f"{where}: no healthcheck")
        if "build" not in svc:
            continue
        # atlaspipe services
        if svc.get("image") != "atlaspipe:${ATLASPIPE_VERSION:-0.1.0}":
            problems.append(f"{where}: image {svc.get('image')} is not atlaspipe:${{ATLASPIPE_VERSION}}")
        context = (compose_dir / svc["build"]["context"]).resolve()
        if not (context / svc["build"].get("dockerfile", "Dockerfile")).is_file():
            problems.append(f"{where}: no Dockerfile in the build context {context}")
        if not svc.get("read_only"):
            problems.append(f"{where}: atlaspipe runs with a read-only root filesystem")
        program_argv = shell_script_argv(argv)
        problems += command_problems(program_argv, where)
        if program_argv[:4] == ["celery", "-A", "atlaspipe", "worker"]:
            queues = (option_value(program_argv, "-Q", "--queues") or "").split(",")
            unknown = set(queues) - set(celeryconfig.STAGE_QUEUES)
            if unknown:
                problems.append(f"{where}: -Q {','.join(queues)}: no task is routed to {sorted(unknown)}")
            served |= set(queues)
            if option_value(program_argv, "-n") != f"{name}@%h":
                problems.append(f"{where}: node name is not {name}@%h")
            if "container_name" in svc or "hostname" in svc:
                problems.append(f"{where}: a fixed container name or hostname breaks --scale")
            test = svc.get("healthcheck", {}).get("test", [])
            if test[:1] != ["CMD-SHELL"]:
                problems.append(f"{where}: the healthcheck is not a shell test of the probe files")
            else:
                problems += worker_probe_problems(test[1].replace("$$", "$"), f"{where} healthcheck",
                                                  service_env, ready=True)
            grace = parse_duration(str(svc.get("stop_grace_period", "10s")))
            if grace < task_time_limit(service_env):
                problems.append(f"{where}: stop_grace_period {svc.get('stop_grace_period')} is below task_time_limit "
                                f"{task_time_limit(service_env):g} s")
        elif "healthcheck" in svc:
            problems += compose_http_healthcheck_problems(svc, program_argv, where)
        for var in ("ATLASPIPE_BROKER_URL_FILE", "ATLASPIPE_RESULT_BACKEND_FILE"):
            if var not in service_env:
                continue
            secret = next((s for s, p in secrets.items() if p == service_env[var]), None)
            url = secret_text.get(secret or "", "")
            if url:
                problems += url_problems(url, f"{where} {var} ({secret})", listeners)
        broker = secret_text.get(next((s for s, p in secrets.items()
                                       if p == service_env.get("ATLASPIPE_BROKER_URL_FILE")), ""), "")
        if broker and default_user:
            url = urllib.parse.urlsplit(broker)
            if (url.username, url.password, url.path.lstrip("/")) != (
                    default_user.get("default_user"), default_user.get("default_pass"),
                    default_user.get("default_vhost")):
                problems.append(f"{where}: the broker URL's user, password or vhost is not RabbitMQ's default user")
        backend = secret_text.get(next((s for s, p in secrets.items()
                                        if p == service_env.get("ATLASPIPE_RESULT_BACKEND_FILE")), ""), "")
        if backend and urllib.parse.urlsplit(backend).password != secret_text.get("redis_password"):
            problems.append(f"{where}: the result backend's password is not Redis' requirepass")
    missing = routed_queues() - served
    if missing:
        problems.append(f"compose: no worker service consumes {sorted(missing)}")
    # RabbitMQ reads its default user from a conf.d snippet: only *.conf files there are loaded.
    rabbit_secrets = mounted_secrets(services.get("rabbitmq", {}))
    users = [path for secret, path in rabbit_secrets.items() if "default_pass" in ini(secret_text.get(secret, ""))]
    if not users:
        problems.append("compose rabbitmq: no secret gives RabbitMQ its default user")
    for path in users:
        if not re.fullmatch(r"/etc/rabbitmq/conf\.d/[^/]+\.conf", path):
            problems.append(f"compose rabbitmq: its default user is mounted at {path}, which RabbitMQ does not read "
                            "(it loads /etc/rabbitmq/conf.d/*.conf)")
    problems += compose_infra_problems(data, compose_dir, listeners)
    return problems


def substitute_argv(argv: list[str], env: dict[str, str]) -> list[str]:
    return [substitute(a, env) for a in argv]


def parse_duration(text: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)(h|m|s|ms|us)?", text):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "": 1}[unit]
    return total


def compose_http_healthcheck_problems(svc: dict[str, Any], argv: list[str], where: str) -> list[str]:
    test = " ".join(map(str, svc["healthcheck"].get("test", [])))
    urls = re.findall(r"https?://(?:127\.0\.0\.1|localhost):(\d+)(/[^'\" )]*)", test)
    if not urls:
        return [f"{where}: the healthcheck asks no local HTTP endpoint"]
    problems = []
    for port, path in urls:
        if int(port) not in listen_port(argv, {}):
            problems.append(f"{where}: the healthcheck asks port {port}, "
                            f"the process listens on {listen_port(argv, {})}")
        problems += http_route_problems(argv, path, f"{where} healthcheck")
    return problems


def compose_infra_problems(data: dict[str, Any], compose_dir: Path, listeners: dict[tuple[str, int], str]) -> list[str]:
    """RabbitMQ, Redis, Prometheus: health commands, the config files they mount, scrape targets."""
    problems = []
    services = data["services"]
    rabbit = services.get("rabbitmq", {})
    test = [str(t) for t in rabbit.get("healthcheck", {}).get("test", [])][1:]
    tool = RABBITMQ_TOOLS.get(test[0] if test else "")
    sub = [a for a in test[1:] if not a.startswith("-")]
    if tool is None or not sub or sub[0] not in tool:
        problems.append(f"compose rabbitmq: healthcheck {' '.join(test)} is no RabbitMQ health command")
    redis_test = " ".join(map(str, services.get("redis", {}).get("healthcheck", {}).get("test", [])))
    if "redis-cli ping" not in redis_test:
        problems.append("compose redis: healthcheck is not redis-cli ping")
    prom = services.get("prometheus", {})
    prom_test = " ".join(map(str, prom.get("healthcheck", {}).get("test", [])))
    for path in re.findall(r"http://127\.0\.0\.1:9090(/\S*)", prom_test):
        if path not in PROMETHEUS_ROUTES:
            problems.append(f"compose prometheus: healthcheck path {path} is not a Prometheus route")
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("."):
                if not (compose_dir / source).exists():
                    problems.append(f"compose {name}: mounts {source}, which does not exist")
            elif source and source not in data.get("volumes", {}):
                problems.append(f"compose {name}: unknown volume {source}")
    config = yaml.safe_load((compose_dir / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for target in sd["names"]:
                if (target, sd["port"]) not in listeners:
                    problems.append(f"prometheus.yml job {job['job_name']}: {target}:{sd['port']} is no listener")
    standins = yaml.safe_load((compose_dir / "standins.yaml").read_text())
    for name, svc in standins.get("services", {}).items():
        if set(svc) - {"image", "pull_policy"} or not str(svc.get("image", "")).startswith("atlaspipe-standin/"):
            problems.append(f"standins.yaml {name}: only replaces the image, with an atlaspipe-standin/ tag")
        if svc.get("pull_policy") != "never":
            problems.append(f"standins.yaml {name}: a stand-in is never pulled")
    return problems


@functools.cache
def compose_spec_schema() -> dict[str, Any]:
    path = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def compose_schema_problems(data: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(compose_spec_schema())
    return [f"compose-spec: {'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(data)]


def compose_v1_problems(compose_dir: Path) -> list[str]:
    """docker-compose 1.29's own validation, where it is installed (Debian's docker-compose)."""
    exe = shutil.which("docker-compose")
    if exe is None:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        env_file = Path(tmp) / ".env"
        env_file.write_text((compose_dir / ".env.example").read_text())
        files = []
        for name in ("compose.yaml", "standins.yaml"):
            files += ["-f", str(compose_dir / name)]
        run = subprocess.run([exe, "--env-file", str(env_file), *files, "--profile", "submit", "--profile", "bench",
                              "config", "-q"], capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}, check=False)
        return [f"docker-compose 1.29 config: {run.stderr.strip()[-400:]}"] if run.returncode else []
