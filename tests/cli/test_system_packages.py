"""scripts/system-packages.sh checks every command the tests run on its own, not one per family."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "system-packages.sh"


def missing_with(tmp_path: Path, present: list[str]) -> list[str]:
    """The packages --check reports when only ``present`` commands are on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in present:
        stub = bin_dir / name
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    bash = shutil.which("bash") or "/bin/bash"
    done = subprocess.run([bash, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=30, check=False,
                          env={"PATH": str(bin_dir)})
    assert done.returncode == (1 if done.stdout else 0), done.stderr
    return done.stdout.split()


@pytest.mark.parametrize(("present", "expected"), [
    (["chromium", "shellcheck", "prometheus", "promtool", "docker-compose"], ["chromium-driver"]),
    (["chromedriver", "shellcheck", "prometheus", "promtool", "docker-compose"], ["chromium"]),
    (["chromium", "chromedriver", "shellcheck", "prometheus", "docker-compose"], ["prometheus"]),
    (["chromium", "chromedriver", "prometheus", "promtool", "docker-compose"], ["shellcheck"]),
    (["chromium", "chromedriver", "shellcheck", "prometheus", "promtool", "docker-compose"], []),
    ([], ["chromium", "chromium-driver", "shellcheck", "prometheus", "docker-compose"]),
])
def test_each_needed_command_is_checked_on_its_own(tmp_path: Path, present: list[str], expected: list[str]) -> None:
    assert missing_with(tmp_path, present) == expected
