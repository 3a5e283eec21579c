"""The Compose deployment, statically: schema, docker-compose 1.29's own validation and the wiring."""

from __future__ import annotations

import os
import stat
import subprocess
import urllib.parse
from pathlib import Path

import checks
from deploytools import need_executable


def test_compose_is_wired() -> None:
    problems = checks.compose_problems()
    assert not problems, "\n".join(problems)


def test_docker_compose_1_29_accepts_the_files() -> None:
    need_executable("docker-compose")
    problems = checks.compose_v1_problems(checks.COMPOSE_DIR)
    assert not problems, problems


def test_docker_compose_1_29_rejects_a_v2_only_file(tmp_path: Path) -> None:
    need_executable("docker-compose")
    folder = tmp_path / "compose"
    folder.mkdir()
    for name in ("compose.yaml", "standins.yaml", ".env.example"):
        (folder / name).write_text((checks.COMPOSE_DIR / name).read_text())
    text = (folder / "compose.yaml").read_text()
    (folder / "compose.yaml").write_text("name: atlaspipe\n" + text)
    assert checks.compose_v1_problems(folder)


def test_init_writes_consistent_private_secrets(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "compose").mkdir(parents=True)
    (root / "compose" / ".env.example").write_text((checks.COMPOSE_DIR / ".env.example").read_text())
    (root / "scripts").mkdir()
    for name in ("docker-run.sh", "lib.sh", "image-build.sh"):
        (root / "scripts" / name).write_text((checks.SCRIPTS / name).read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}

    def init() -> dict[str, str]:
        subprocess.run(["bash", str(root / "scripts" / "docker-run.sh"), "--init"], check=True, env=env,
                       capture_output=True, timeout=60)
        return {p.name: p.read_text() for p in (root / "compose" / "secrets").iterdir()}

    first = init()
    folder = root / "compose" / "secrets"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE((folder / name).stat().st_mode) == 0o444 for name in first)
    broker = urllib.parse.urlsplit(first["broker_url"].strip())
    conf = checks.ini(first["rabbitmq_default_user.conf"])
    assert (broker.username, broker.password, broker.path) == (
        conf["default_user"], conf["default_pass"], "/" + conf["default_vhost"])
    backend = urllib.parse.urlsplit(first["result_backend"].strip())
    assert backend.password == first["redis_password"].strip()
    passwords = {broker.password, backend.password, first["flower_basic_auth"].split(":")[1].strip(),
                 first["web_auth"].split(":")[1].strip()}
    assert len(passwords) == 4 and all(len(p) == 48 for p in passwords)
    assert init() == first, "a second --init must keep the passwords"
    assert "PASSWORD" not in (root / "compose" / ".env").read_text()
