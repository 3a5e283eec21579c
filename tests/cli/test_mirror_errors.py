"""A mirror served by ``python -m http.server`` (no HTTP range requests) and a mirror that is down are
named as such, never as "not a readable ROOT file"; with ``--fetch`` the same mirror works."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_shared


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def plain_mirror() -> Iterator[str]:
    """The 2020 data served by the standard library's http.server, which ignores Range headers."""
    folder = require_shared("atlas-opendata/2020/4lep/Data").parents[1]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/4lep/"
    finally:
        server.terminate()
        server.wait(10)


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ATLASPIPE_CACHE_DIR": str(tmp_path / "cache"), "ATLASPIPE_OUTPUT_DIR": str(tmp_path / "out")}
    return subprocess.run([sys.executable, "-m", "atlaspipe.cli.main", "run", "--release", "2020", "--samples", "data",
                           "--quiet", *args], capture_output=True, text=True, timeout=300, check=False, env=env)


def test_streaming_from_a_server_without_range_support_names_it(tmp_path: Path, plain_mirror: str) -> None:
    done = run(tmp_path, "--base-url", plain_mirror)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "server does not support HTTP range requests" in done.stderr and "--fetch" in done.stderr, done.stderr
    assert "not a readable ROOT file" not in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def test_fetching_from_the_same_server_works(tmp_path: Path, plain_mirror: str) -> None:
    done = run(tmp_path, "--base-url", plain_mirror, "--fetch")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cache" / "2020" / "Data" / "data_A.4lep.root").is_file()
    assert "data" in done.stdout and "outputs:" in done.stdout


def test_an_unreachable_mirror_is_named_so(tmp_path: Path) -> None:
    done = run(tmp_path, "--base-url", f"http://127.0.0.1:{free_port()}/4lep/")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not reachable" in done.stderr and "not a readable ROOT file" not in done.stderr, done.stderr
