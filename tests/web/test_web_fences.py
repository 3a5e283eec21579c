"""The web report reads only regular files inside a run folder, never through a symbolic link, on
every route; and a connection that does not finish its request headers in time is closed."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from atlaspipe.io import files
from atlaspipe.model import RunState, RunStatus
from atlaspipe.web.server import HEADER_TIMEOUT_SECONDS, create_app, runner_options, start_server

SECRET = "secret-outside-the-run-folder"


def write_status(run_dir: Path, state: str, done: int, total: int) -> None:
    status = RunStatus(run_id=run_dir.name, state=RunState(state), executor="celery", chunks_total=total,
                       chunks_done=done, started="2025-01-02T03:04:05+00:00", updated="2025-01-02T03:05:05+00:00")
    run_dir.mkdir(parents=True, exist_ok=True)
    files.write_text(run_dir / "status.json", status.to_json(indent=1))


@pytest.fixture
def output(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.json"
    secret.write_text(f'{{"token": "{SECRET}"}}')
    out = tmp_path / "output"
    run = out / "run-linked"
    write_status(run, "running", 1, 4)
    (run / "status.json").unlink()
    (run / "status.json").symlink_to(secret)
    (run / "manifest.json").symlink_to(secret)
    (run / "results.json").symlink_to(secret)
    (run / "notes.txt").symlink_to(secret)
    (run / "plain.txt").write_text("served\n")
    (run / "alias.txt").symlink_to(run / "plain.txt")
    os.mkfifo(run / "pipe.txt")
    write_status(out / "run-ok", "running", 1, 4)
    (out / "run-alias").symlink_to(out / "run-ok")
    return out


def _scenario(output: Path, check: Any, **options: Any) -> None:
    async def main() -> None:
        async with TestClient(TestServer(create_app(output), **options)) as client:
            await check(client)

    asyncio.run(main())


def test_no_route_follows_a_symlink(output: Path) -> None:
    async def check(client: TestClient[Any, Any]) -> None:
        for path in ("/api/runs/run-linked/status", "/runs/run-linked/", "/api/runs", "/",
                     "/runs/run-linked/status.json", "/runs/run-linked/manifest.json",
                     "/runs/run-linked/results.json", "/runs/run-linked/notes.txt"):
            response = await client.get(path)
            assert SECRET not in await response.text(), path
        for path in ("/runs/run-linked/alias.txt", "/runs/run-linked/pipe.txt", "/runs/run-alias/",
                     "/api/runs/run-alias/status", "/runs/run-linked/status.json"):
            assert (await client.get(path)).status == 404, path
        plain = await client.get("/runs/run-linked/plain.txt")
        assert plain.status == 200 and await plain.text() == "served\n"
        assert (await client.get("/api/runs/run-ok/status")).status == 200

    _scenario(output, check)


def test_the_live_histogram_is_never_read_through_a_symlink(tmp_path: Path) -> None:
    from atlaspipe.model import LiveHistogram

    outside = tmp_path / "elsewhere.json"
    outside.write_text(LiveHistogram(run_id="run-linked", bin_edges=(80.0, 85.0), groups=(), data=(4321.0,),
                                     chunks_done=1, chunks_total=4, events_read=1, events_total=4,
                                     updated="2025-01-02T03:05:05+00:00").to_json())
    run = tmp_path / "output" / "run-linked"
    write_status(run, "running", 1, 4)
    (run / "live.json").symlink_to(outside)

    async def check(client: TestClient[Any, Any]) -> None:
        body = await (await client.get("/api/runs/run-linked/status")).json()
        assert body["state"] == "running" and body["live"] is None
        (run / "live.json").unlink()
        (run / "live.json").write_bytes(outside.read_bytes())
        assert (await (await client.get("/api/runs/run-linked/status")).json())["live"]["data"] == [4321.0]

    _scenario(tmp_path / "output", check)


def test_default_header_timeout_is_between_10_and_30_s() -> None:
    assert 10 <= HEADER_TIMEOUT_SECONDS <= 30
    assert runner_options() == {"keepalive_timeout": HEADER_TIMEOUT_SECONDS}


def test_half_a_header_then_idle_is_closed_within_the_timeout(output: Path) -> None:
    """The server ``atlaspipe serve`` starts, with the timeout shortened to keep the test fast."""
    timeout = 1.0

    async def main() -> None:
        runner = await start_server(output, "127.0.0.1", 0, None, header_timeout=timeout)
        port = runner.addresses[0][1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /api/runs HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            await writer.drain()
            started = time.monotonic()
            data = await asyncio.wait_for(reader.read(), timeout=timeout + 5)
            elapsed = time.monotonic() - started
            writer.close()
            assert data == b"" and elapsed < timeout + 2, (data, elapsed)
            # A whole request in time is answered as usual.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), timeout=5)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200"), answer
        finally:
            await runner.cleanup()

    asyncio.run(main())
