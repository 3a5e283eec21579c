"""The default values are the small-Minikube profile: the whole release schedules on
`minikube start --cpus=4 --memory=2200`, and every memory request covers what the container was
measured to use (tests/deploy/data/measured-memory.json, written from scripts/compose-e2e.sh)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import checks
import pytest
from deploytools import need_module

MEASURED = json.loads((Path(__file__).parent / "data" / "measured-memory.json").read_text())["peak_mib"]
MIB = 2**20

# The node: `minikube start --cpus=4 --memory=2200` (MiB). The kubelet keeps its default hard eviction
# threshold (memory.available < 100Mi) out of the allocatable memory.
NODE_CPU = 4.0
NODE_MEMORY = 2200 * MIB
EVICTION = 100 * MIB
# Minikube's own pods (kubeadm's static pods, CoreDNS, kube-proxy, storage-provisioner): their requests.
SYSTEM_REQUESTS = {
    "etcd": (0.100, 100 * MIB),
    "kube-apiserver": (0.250, 0),
    "kube-controller-manager": (0.200, 0),
    "kube-scheduler": (0.100, 0),
    "coredns": (0.100, 70 * MIB),
    "kube-proxy": (0.0, 0),
    "storage-provisioner": (0.0, 0),
}
# Which measured Compose services each chart workload runs (the small profile's `light` worker runs
# load, aggregate and plot in one process tree, so it needs what the largest of them needs).
MEASURED_AS = {"light": ("load", "aggregate", "plot"), "process": ("process",), "rabbitmq": ("rabbitmq",),
               "redis": ("redis",), "flower": ("flower",), "web": ("web",), "prometheus": ("prometheus",),
               "submit": ("submit",), "exporter": ("exporter",)}
HEADROOM = 1.10


@pytest.fixture(scope="module")
def rendered() -> checks.Rendered:
    need_module("helm_python", "helm-python-sdk")
    return checks.render(checks.CHART, None)


def pod_requests(doc: dict[str, Any]) -> tuple[float, float]:
    """What the scheduler reserves for one pod: the larger of its init containers and its containers' sum."""
    def of(container: dict[str, Any], kind: str) -> float:
        return checks.parse_quantity(container["resources"]["requests"][kind])

    spec = doc["spec"]["template"]["spec"]
    running = [sum(of(c, kind) for c in spec["containers"]) for kind in ("cpu", "memory")]
    for init in spec.get("initContainers", []):
        running = [max(running[0], of(init, "cpu")), max(running[1], of(init, "memory"))]
    return running[0], running[1]


def workload_key(doc: dict[str, Any]) -> str:
    return str(doc["metadata"].get("labels", {}).get("atlaspipe.io/stage") or checks.component(doc))


def test_whole_release_fits_the_small_minikube(rendered: checks.Rendered) -> None:
    cpu = memory = 0.0
    lines = []
    for doc in rendered.of(*checks.WORKLOAD_KINDS):
        replicas = doc["spec"].get("replicas", 1) if doc["kind"] != "Job" else 1
        pod_cpu, pod_memory = pod_requests(doc)
        cpu += replicas * pod_cpu
        memory += replicas * pod_memory
        lines.append(f"{doc['metadata']['name']}: {replicas} x ({pod_cpu:.3f} CPU, {pod_memory / MIB:.0f} Mi)")
    free_cpu = NODE_CPU - sum(c for c, _ in SYSTEM_REQUESTS.values())
    free_memory = NODE_MEMORY - EVICTION - sum(m for _, m in SYSTEM_REQUESTS.values())
    report = "\n".join(lines) + f"\ntotal {cpu:.3f} CPU, {memory / MIB:.0f} Mi; free {free_cpu:.3f} CPU, " \
                                f"{free_memory / MIB:.0f} Mi"
    assert cpu <= free_cpu, report
    assert memory <= free_memory, report
    # Real use, not only requests: what was measured must fit too, with the system pods' requests.
    measured = sum(max(MEASURED[s] for s in MEASURED_AS[workload_key(d)]) * d["spec"].get("replicas", 1)
                   for d in rendered.of(*checks.WORKLOAD_KINDS))
    assert measured * MIB <= free_memory, f"measured {measured} MiB"


def test_memory_requests_cover_the_measured_peaks(rendered: checks.Rendered) -> None:
    short = []
    for doc in rendered.of(*checks.WORKLOAD_KINDS):
        key = workload_key(doc)
        assert key in MEASURED_AS, f"no measurement for {doc['metadata']['name']} ({key})"
        need = max(MEASURED[s] for s in MEASURED_AS[key]) * HEADROOM * MIB
        _, memory = pod_requests(doc)
        if memory < need:
            short.append(f"{doc['metadata']['name']}: requests {memory / MIB:.0f} Mi, measured "
                         f"{need / HEADROOM / MIB:.0f} MiB (+{HEADROOM - 1:.0%} = {need / MIB:.0f} Mi)")
        limit = checks.parse_quantity(checks.containers(doc, init=False)[0]["resources"]["limits"]["memory"])
        assert limit >= 1.5 * need / HEADROOM, f"{doc['metadata']['name']}: the limit leaves no room above the peak"
    assert not short, "\n".join(short)


def test_measurements_cover_every_compose_service() -> None:
    compose = checks.load_compose(checks.COMPOSE_DIR)
    assert set(compose["services"]) <= set(MEASURED), set(compose["services"]) - set(MEASURED)
