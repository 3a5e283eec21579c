"""Helpers of the deployment tests: a missing tool is a skip outside CI and a failure in CI."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing_tool(reason: str) -> None:
    """Skip outside CI, fail in CI: CI must run every check."""
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


def need_executable(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        missing_tool(f"{name} is not installed")
    assert found
    return found


def need_module(name: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except (ImportError, OSError) as exc:  # OSError: a native library that does not load
        missing_tool(f"{package} is not usable: {exc}")
        raise
