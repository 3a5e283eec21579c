"""The benchmark harness end to end on a small dataset: every contender runs and agrees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, services_up

pytestmark = pytest.mark.integration


def test_compare_quick_runs_every_contender_and_histograms_agree(tmp_path: Path) -> None:
    services_up()
    results = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "compare.py"), "--quick", "--output", str(results)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = results.read_text("utf-8")
    for contender in ("distributed", "in-process", "serial", "read limit"):
        assert contender in text
    assert "distributed identical" in text and "serial identical" in text
    assert "per-task overhead" in text and "peak RSS" in text
