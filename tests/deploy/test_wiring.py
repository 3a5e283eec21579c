"""The chart's containers, run for real: the exact command and environment of every rendered worker,
web, Flower and submit container, started as local processes against the local RabbitMQ and a private
Redis; one run of the embedded sample through them; the probes executed as written.

The only translations are those a cluster would do: Secret values substituted (secretKeyRef,
$(VAR) expansion), Service names mapped to 127.0.0.1 and Service ports to the local services' ports,
each container port to a free local port (pods have their own network namespaces; processes here
share one), and the volumes' mount paths to local folders (the two PVCs shared, /tmp per pod).

The worker probes test the probe-file contract ($ATLASPIPE_PROBE_DIR/heartbeat and /ready, written by
the worker itself); until atlaspipe implements it they fail with a message saying so.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import checks
import pytest
from deploytools import missing_tool, need_executable, need_module

pytestmark = pytest.mark.integration
VENV_BIN = Path(sys.executable).parent
CONTRACT = ("the worker's probe-file contract is not implemented yet: a Celery worker must keep "
            "$ATLASPIPE_PROBE_DIR/heartbeat fresh (touched every 10 s by its consumer's event loop) and hold "
            "$ATLASPIPE_PROBE_DIR/ready while connected and consuming (lead: atlaspipe worker bootstep)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Pod:
    """One rendered pod's containers, translated to this machine."""

    name: str
    component: str
    doc: dict[str, Any]
    tmp: Path
    ports: dict[int, int] = field(default_factory=dict)
    """container port -> local port"""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)


class Cluster:
    """The translation of a rendered release to local processes."""

    def __init__(self, rendered: checks.Rendered, root: Path, service_map: dict[tuple[str, int], int]) -> None:
        self.rendered = rendered
        self.root = root
        self.service_map = service_map
        self.secrets = checks.rendered_secrets(rendered)
        self.pods: dict[str, Pod] = {}
        self.volumes = {"cache": root / "pvc-cache", "outputs": root / "pvc-outputs"}
        for folder in self.volumes.values():
            folder.mkdir(parents=True)

    # ---------------------------------------------------------------- translation
    def pod(self, doc: dict[str, Any]) -> Pod:
        name = doc["metadata"]["name"]
        if name not in self.pods:
            tmp = self.root / f"pod-{name}"
            tmp.mkdir()
            ports = {p["containerPort"]: free_port() for c in checks.containers(doc) for p in c.get("ports", [])}
            self.pods[name] = Pod(name, checks.component(doc), doc, tmp, ports)
        return self.pods[name]

    def mounts(self, pod: Pod, container: dict[str, Any]) -> list[tuple[str, str]]:
        volumes = {v["name"]: v for v in pod.doc["spec"]["template"]["spec"].get("volumes", [])}
        found = []
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "persistentVolumeClaim" in volume:
                local = self.volumes[mount["name"]]
            else:
                local = pod.tmp / mount["name"]
                local.mkdir(exist_ok=True)
            found.append((mount["mountPath"], str(local)))
        return sorted(found, key=lambda m: -len(m[0]))

    def translate(self, text: str, mounts: list[tuple[str, str]]) -> str:
        if mounts:  # one pass: a local folder may itself start with a mount path (/tmp)
            where = dict(mounts)
            pattern = "|".join(re.escape(path) for path, _ in mounts)
            text = re.sub(rf"(?<![\w/])({pattern})(?=/|\b|$)", lambda m: where[m.group(1)], text)

        def url(match: re.Match[str]) -> str:
            parts = urllib.parse.urlsplit(match.group(0))
            port = parts.port or {"amqp": 5672, "redis": 6379}.get(parts.scheme, 80)
            local = self.service_map.get((parts.hostname or "", port))
            if local is None:
                return match.group(0)
            credentials = parts.netloc.rpartition("@")[0]
            netloc = f"{credentials}@127.0.0.1:{local}" if credentials else f"127.0.0.1:{local}"
            return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

        return re.sub(r"[a-z]+://[^\s\"']+", url, text)

    def environment(self, pod: Pod, container: dict[str, Any]) -> dict[str, str]:
        env = checks.container_env(self.rendered, container, self.secrets)
        assert not [v for v in env.values() if v.startswith("<external")], env
        mounts = self.mounts(pod, container)
        translated = {k: self.translate(v, mounts) for k, v in env.items()}
        for key, value in translated.items():
            if value.isdigit() and int(value) in pod.ports:
                translated[key] = str(pod.ports[int(value)])
        home = pod.tmp / "home"
        home.mkdir(exist_ok=True)
        return {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
                "HOSTNAME": pod.name, **translated}

    def argv(self, pod: Pod, container: dict[str, Any], argv: list[str]) -> list[str]:
        mounts = self.mounts(pod, container)
        out = []
        for arg in argv:
            translated = self.translate(arg, mounts)
            for port, local in pod.ports.items():
                translated = re.sub(rf"^(--port=)?{port}$", lambda m, local=local: f"{m.group(1) or ''}{local}",
                                    translated)
            out.append(translated)
        program = out[0]
        if program == "python3":
            out[0] = sys.executable
        elif (VENV_BIN / program).exists():
            out[0] = str(VENV_BIN / program)
        return out

    # ---------------------------------------------------------------- running
    def start(self, doc: dict[str, Any], container: dict[str, Any]) -> subprocess.Popen[bytes]:
        pod = self.pod(doc)
        argv = self.argv(pod, container, container.get("command", []) + container.get("args", []))
        log = (pod.tmp / f"{container['name']}.log").open("wb")
        process = subprocess.Popen(argv, env=self.environment(pod, container), cwd=pod.tmp, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        pod.processes.append(process)
        return process

    def run_to_end(self, doc: dict[str, Any], container: dict[str, Any], timeout: float) -> tuple[int, str]:
        process = self.start(doc, container)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return process.returncode, self.log(doc, container)

    def log(self, doc: dict[str, Any], container: dict[str, Any]) -> str:
        return (self.pod(doc).tmp / f"{container['name']}.log").read_text(errors="replace")

    def probe(self, doc: dict[str, Any], container: dict[str, Any], kind: str) -> tuple[bool, str]:
        """Execute a probe as Kubernetes would: an HTTP GET, or the exec command in the container's env."""
        pod = self.pod(doc)
        probe = container[kind]
        if "httpGet" in probe:
            port = probe["httpGet"]["port"]
            if isinstance(port, str):
                port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
            url = f"http://127.0.0.1:{pod.ports[port]}{probe['httpGet']['path']}"
            try:
                with urllib.request.urlopen(url, timeout=probe.get("timeoutSeconds", 1)) as response:
                    return 200 <= response.status < 400, f"GET {url}: {response.status}"
            except (urllib.error.URLError, OSError) as exc:
                return False, f"GET {url}: {exc}"
        command = self.argv(pod, container, probe["exec"]["command"])
        result = subprocess.run(command, env=self.environment(pod, container), capture_output=True, text=True,
                                timeout=probe.get("timeoutSeconds", 1) + 5, check=False)
        return result.returncode == 0, f"{command}: exit {result.returncode} {result.stderr[-300:]}"

    def stop(self) -> None:
        for pod in self.pods.values():
            for process in pod.processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for pod in self.pods.values():
            for process in pod.processes:
                try:
                    process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False)


@dataclass
class Wired:
    cluster: Cluster
    rendered: checks.Rendered
    submit_code: int
    submit_log: str
    run_dir: Path | None


@pytest.fixture(scope="module")
def wired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wired]:
    need_module("helm_python", "helm-python-sdk")
    need_executable("rabbitmqctl")
    redis_server = need_executable("redis-server")
    tag = uuid.uuid4().hex[:8]
    user, vhost = f"wiring-{tag}", f"wiring-{tag}"
    rendered = checks.render(checks.CHART, {"rabbitmq": {"auth": {"username": user}, "vhost": vhost},
                                            "prometheus": {"enabled": False}})
    secret = checks.rendered_secrets(rendered)[f"{checks.RELEASE}-atlaspipe-credentials"]
    root = tmp_path_factory.mktemp("wiring")
    redis_port = free_port()
    redis = subprocess.Popen([redis_server, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    assert redis.stdin
    redis.stdin.write(f"port {redis_port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\n"
                      f"requirepass {secret['redis-password']}\n".encode())
    redis.stdin.close()
    created = [rabbitmqctl("add_vhost", vhost), rabbitmqctl("add_user", user, secret["rabbitmq-password"]),
               rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")]
    cluster = None
    try:
        if any(c.returncode for c in created):
            missing_tool(f"cannot create a RabbitMQ user and vhost: {[c.stderr for c in created]}")
        service = {"rabbitmq": 5672, "redis": redis_port}
        service_map = {}
        for (name, port), workload in checks.endpoints(rendered).items():
            kind = "rabbitmq" if "rabbitmq" in workload else "redis" if "redis" in workload else ""
            if kind and port in (5672, 6379):
                service_map[(name, port)] = service[kind]
        cluster = Cluster(rendered, root, service_map)
        long_running = [d for d in rendered.of("Deployment") if checks.component(d) in ("worker", "web", "flower")]
        for doc in long_running:
            for container in checks.containers(doc, init=False):
                cluster.start(doc, container)
        workers = [d for d in long_running if checks.component(d) == "worker"]
        ping_env = cluster.environment(cluster.pod(workers[0]), checks.containers(workers[0])[0])

        def all_workers_answer() -> bool:
            answer = subprocess.run([str(VENV_BIN / "celery"), "-A", "atlaspipe", "inspect", "ping", "-t", "2"],
                                    env=ping_env, capture_output=True, text=True, timeout=60, check=False).stdout
            return answer.count("pong") >= len(workers)

        wait_until(all_workers_answer, 90, "the rendered workers to answer a ping")
        (job,) = [d for d in rendered.of("Job") if checks.component(d) == "submit"]
        for init in job["spec"]["template"]["spec"].get("initContainers", []):
            code, log = cluster.run_to_end(job, init, timeout=120)
            assert code == 0, f"init container {init['name']}: {log[-2000:]}"
        code, log = cluster.run_to_end(job, checks.containers(job, init=False)[0], timeout=300)
        runs = [p.parent for p in cluster.volumes["outputs"].glob("*/results.json")]
        yield Wired(cluster, rendered, code, log, runs[0] if runs else None)
    finally:
        if cluster:
            cluster.stop()
        os.killpg(redis.pid, signal.SIGTERM)
        redis.wait(30)
        rabbitmqctl("delete_user", user)
        rabbitmqctl("delete_vhost", vhost)


def logs(wired: Wired) -> str:
    return "\n".join(f"--- {p.name}/{f.name}\n{f.read_text(errors='replace')[-1500:]}"
                     for p in wired.cluster.pods.values() for f in p.tmp.glob("*.log"))


def test_submit_job_completes_a_run(wired: Wired, tmp_path: Path) -> None:
    assert wired.submit_code == 0, wired.submit_log[-3000:] + logs(wired)
    assert wired.run_dir is not None, "no results.json in the outputs volume"
    reference = tmp_path / "local"
    subprocess.run([str(VENV_BIN / "atlaspipe"), "run", "--output", str(reference)], check=True,
                   capture_output=True, timeout=300)
    (local,) = reference.glob("*/results.json")
    got, want = (checks_histograms(p) for p in (wired.run_dir / "results.json", local))
    assert got == want


def checks_histograms(path: Path) -> dict[str, Any]:
    import json

    results = json.loads(path.read_text())
    out: dict[str, Any] = {"data": (results["data"]["m4l"], results["data"]["channels"])}
    for name, sample in results["samples"].items():
        out[name] = (sample["m4l"], sample["channels"])
    return out


@pytest.mark.parametrize("component", ["web", "flower"])
def test_http_probes_and_auth_as_rendered(wired: Wired, component: str) -> None:
    (doc,) = [d for d in wired.rendered.of("Deployment") if checks.component(d) == component]
    container = checks.containers(doc, init=False)[0]
    for kind in ("readinessProbe", "livenessProbe"):
        wait_until(lambda kind=kind: wired.cluster.probe(doc, container, kind)[0], 60, f"{component} {kind}")
    pod = wired.cluster.pod(doc)
    port = pod.ports[container["ports"][0]["containerPort"]]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
    assert refused.value.code == 401
    key = {"web": "web-auth", "flower": "flower-basic-auth"}[component]
    credentials = checks.rendered_secrets(wired.rendered)[f"{checks.RELEASE}-atlaspipe-credentials"][key]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={
        "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.mark.parametrize("kind", ["livenessProbe", "readinessProbe"])
def test_worker_probes_as_rendered(wired: Wired, kind: str) -> None:
    workers = [d for d in wired.rendered.of("Deployment") if checks.component(d) == "worker"]
    assert workers
    for doc in workers:
        container = checks.containers(doc, init=False)[0]
        probe_dir = Path(wired.cluster.environment(wired.cluster.pod(doc), container)["ATLASPIPE_PROBE_DIR"])
        if not (probe_dir / "heartbeat").exists():
            pytest.fail(CONTRACT)
        ok, detail = wired.cluster.probe(doc, container, kind)
        assert ok, f"{doc['metadata']['name']} {kind}: {detail}"


def test_worker_probes_fail_on_a_stale_heartbeat(wired: Wired) -> None:
    """The liveness probe is not a test that always passes: an old heartbeat makes it fail."""
    (doc, *_) = [d for d in wired.rendered.of("Deployment") if checks.component(d) == "worker"]
    container = checks.containers(doc, init=False)[0]
    probe_dir = Path(wired.cluster.environment(wired.cluster.pod(doc), container)["ATLASPIPE_PROBE_DIR"])
    fake = Path(str(probe_dir) + "-stale")
    fake.mkdir(exist_ok=True)
    (fake / "heartbeat").touch()
    (fake / "ready").touch()
    old = time.time() - 3600
    os.utime(fake / "heartbeat", (old, old))
    env = wired.cluster.environment(wired.cluster.pod(doc), container) | {"ATLASPIPE_PROBE_DIR": str(fake)}
    for kind in ("livenessProbe", "readinessProbe"):
        command = container[kind]["exec"]["command"]
        assert subprocess.run(command, env=env, timeout=10, check=False).returncode != 0, kind
    os.utime(fake / "heartbeat", None)
    for kind in ("livenessProbe", "readinessProbe"):
        probe = subprocess.run(container[kind]["exec"]["command"], env=env, timeout=10, check=False)
        assert probe.returncode == 0, kind
    (fake / "ready").unlink()
    probe = subprocess.run(container["readinessProbe"]["exec"]["command"], env=env, timeout=10, check=False)
    assert probe.returncode != 0
    shutil.rmtree(fake)
