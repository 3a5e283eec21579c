"""The deployment scripts: shellcheck, their conventions, and what their dry runs would do."""

from __future__ import annotations

import os
import subprocess

import checks
import pytest
from deploytools import need_executable

SCRIPTS = ["image-build.sh", "docker-run.sh", "deploy-k8s.sh", "cpu-compare.sh", "validate-deploy.sh",
           "compose-e2e.sh", "system-packages.sh"]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    return subprocess.run(["bash", *argv], capture_output=True, text=True, timeout=60, env=env, cwd=checks.ROOT,
                          check=False)


def test_shellcheck() -> None:
    exe = need_executable("shellcheck")
    paths = [str(checks.SCRIPTS / s) for s in [*SCRIPTS, "lib.sh"]]
    result = subprocess.run([exe, "--external-sources", "--severity=style", *paths],
                            capture_output=True, text=True, timeout=120, cwd=checks.SCRIPTS, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_conventions(script: str) -> None:
    path = checks.SCRIPTS / script
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert os.access(path, os.X_OK), f"{script} is not executable"
    helped = run(str(path), "-h")
    assert helped.returncode == 0 and "sage:" in helped.stdout
    if script != "system-packages.sh":
        assert run(str(path), "--no-such-flag").returncode != 0


def test_image_build_tags_the_package_version_and_passes_pip_settings_as_secrets() -> None:
    built = run("scripts/image-build.sh", "--dry-run", "--minikube", "--base", "example/base:1")
    assert built.returncode == 0, built.stderr
    assert f"--tag atlaspipe:{checks.VERSION}" in built.stdout and "minikube" in built.stdout
    assert "--build-arg PYTHON_IMAGE=example/base:1" in built.stdout
    assert "--build-arg" not in built.stdout.replace("--build-arg ATLASPIPE_VERSION", "").replace(
        "--build-arg PYTHON_IMAGE", ""), "pip settings must not travel as build arguments"
    assert run("scripts/image-build.sh", "--dry-run", "--tag", "latest").returncode != 0


def test_docker_run_dry_run_works_with_compose_v1_and_v2() -> None:
    dry = run("scripts/docker-run.sh", "--dry-run", "--scale", "2", "--no-build")
    assert dry.returncode == 0, dry.stderr
    assert "up --detach --scale process=2" in dry.stdout
    assert "run --rm submit" in dry.stdout
    assert "--wait" not in dry.stdout, "docker-compose 1.29 has no --wait"


def test_cpu_compare_dry_run() -> None:
    dry = run("scripts/cpu-compare.sh", "--dry-run", "--envs", "docker-compose,local,kubernetes")
    assert dry.returncode == 0, dry.stderr
    assert "--cgroup" in dry.stdout and "cpu-report" in dry.stdout and "--baseline local" in dry.stdout
    assert run("scripts/cpu-compare.sh", "--envs", "mars").returncode == 2


def test_deploy_k8s_dry_run() -> None:
    dry = run("scripts/deploy-k8s.sh", "--dry-run", "--no-port-forward", "-f", "helm/atlaspipe/ci/keda-values.yaml")
    assert dry.returncode == 0, dry.stderr
    assert "helm upgrade --install atlaspipe" in dry.stdout and "ci/keda-values.yaml" in dry.stdout
