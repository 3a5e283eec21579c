"""The Prometheus alert rules: valid, and each alert fires on its own series only (promtool's unit tests)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from atlaspipe.ops.families import BY_NAME, family_of
from tests.conftest import IN_CI, REPO

RULES = REPO / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "ops" / "prometheus" / "alerts.test.yml"
REQUIRED = {"AtlaspipeWorkerDown", "AtlaspipeBacklogWithoutConsumers", "AtlaspipeTaskFailureRate",
            "AtlaspipeRunStalled"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is not installed (Debian's prometheus package; scripts/system-packages.sh)"
        if IN_CI:
            pytest.fail(reason + " (required in CI)")
        pytest.skip(reason)
    return found


def alerts() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_rules_check() -> None:
    completed = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True,
                               timeout=60, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in completed.stdout


def test_rule_unit_tests_pass_and_cover_every_alert() -> None:
    completed = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                               timeout=120, check=False, cwd=RULE_TESTS.parent)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert set(alerts()) >= REQUIRED
    assert tested == set(alerts()), "every alert has a case where it fires"


def test_rules_use_only_exported_families() -> None:
    for name, expr in alerts().items():
        used = {family_of(m) for m in re.findall(r"\b((?:atlaspipe|celery)_[a-z_]+)\b", expr)}
        assert used or "up{" in expr, name
        assert used <= set(BY_NAME), (name, used - set(BY_NAME))


def test_rule_file_is_the_one_prometheus_loads() -> None:
    config = yaml.safe_load((REPO / "compose" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/alerts.yml"]
    compose = yaml.safe_load((REPO / "compose" / "compose.yaml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert f"../{RULES.relative_to(REPO)}:/etc/prometheus/rules/alerts.yml:ro" in mounts
    assert Path(REPO / "helm" / "atlaspipe" / "files" / "alerts.yml").resolve() == RULES.resolve()
