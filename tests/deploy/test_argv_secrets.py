"""No shipped deploy file puts a password in a process's arguments, where ``ps`` shows it: the chart's
containers (with Kubernetes' ``$(VAR)`` expansion of command and args) and the compose services."""

from __future__ import annotations

import re
from pathlib import Path

import checks
import pytest
import yaml
from deploytools import need_module

SENTINEL = "ArgvSentinel0123456789abcdefXYZ"
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@pytest.mark.parametrize("case", ["default", "bench"])
def test_chart_argv_holds_no_password(case: str) -> None:
    need_module("helm_python", "helm-python-sdk")
    values = {name: {"auth": {"password": SENTINEL}} for name in ("rabbitmq", "redis", "flower", "web")}
    if case == "bench":
        values |= {"keda": {"enabled": True}, "bench": {"enabled": True}}
    rendered = checks.render(checks.CHART, values)
    secrets = checks.rendered_secrets(rendered)
    seen = 0
    for doc in rendered.of(*checks.WORKLOAD_KINDS):
        for container in checks.containers(doc):
            env = checks.container_env(rendered, container, secrets)
            argv = [str(a) for a in container.get("command", []) + container.get("args", [])]
            expanded = [_REFERENCE.sub(lambda m, e=env: e.get(m.group(1), m.group(0)), a) for a in argv]
            where = f"{doc['kind']} {doc['metadata']['name']} container {container['name']}"
            assert not any(SENTINEL in a for a in expanded), (where, argv)
            seen += 1
    assert seen >= 5


def test_compose_commands_hold_no_password() -> None:
    compose = yaml.safe_load((Path(checks.__file__).parents[2] / "compose" / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        command = service.get("command", [])
        text = " ".join(command) if isinstance(command, list) else str(command)
        # Shell scripts may read a secret file into a builtin (printf into a config file), never
        # into a program's arguments.
        assert "--requirepass" not in text and not re.search(r"://[^/\s:@]*:[^@\s$]+@", text), name
        for part in re.findall(r"\$\$\(cat /run/secrets/[^)]*\)", text):
            assert f"printf 'requirepass %s\\n' \"{part}\"" in text, (name, part)
