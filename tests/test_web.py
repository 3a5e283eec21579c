"""``atlaspipe serve`` on a real socket: pages, JSON, 404s, traversal attempts and auth."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from test_statistics import make_results

from atlaspipe.errors import ConfigError
from atlaspipe.statistics import FitOptions, summarise
from atlaspipe.tables import write_yield_tables
from atlaspipe.web import create_app, load_auth, write_report

SECRET = "top-secret-outside-the-output-folder"


def make_run(output: Path, run_id: str, status: str = "complete", plots: bool = True) -> dict[str, Any]:
    """A finished run folder as the finalize stage writes it."""
    results = make_results(status=status, run_id=run_id)
    run_dir = output / run_id
    run_dir.mkdir(parents=True)
    results.update(summarise(results, (115.0, 130.0), FitOptions()))
    if plots:
        from atlaspipe.plotting import draw_all

        results["outputs"] = draw_all(results, run_dir)
    results["outputs"].update(write_yield_tables(results, run_dir))
    manifest = {"run_id": run_id, "release": "2020", "created": "2025-01-02T03:04:05Z",
                "inputs": [{"sample": "data_A"}], "options": {"window": [115, 130]}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    write_status(run_dir, "succeeded" if status == "complete" else "partial", 12, 12)
    results["outputs"]["report_html"] = write_report(results, manifest, run_dir)
    (run_dir / "results.json").write_text(json.dumps(results, allow_nan=False))
    return results


def write_status(run_dir: Path, state: str, done: int, total: int, message: str = "") -> None:
    status = {"run_id": run_dir.name, "state": state, "chunks_total": total, "chunks_done": done,
              "chunks_failed": 0, "events_read": 1000 * done, "started": "2025-01-02T03:04:05Z",
              "updated": time.time(), "message": message}
    tmp = run_dir / ".status.json.tmp"
    tmp.write_text(json.dumps(status))
    tmp.replace(run_dir / "status.json")


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("web")
    (root / "secret.txt").write_text(SECRET)
    # Looks like a run, but lives outside the output folder (reachable only through a symlink).
    outside = root / "outside-run"
    outside.mkdir()
    (outside / "manifest.json").write_text("{}")
    (outside / "secret.txt").write_text(SECRET)
    out = root / "output"
    make_run(out, "run-done")
    make_run(out, "run-partial", status="partial", plots=False)
    running = out / "run-live"
    running.mkdir()
    (running / "manifest.json").write_text(json.dumps({"run_id": "run-live"}))
    write_status(running, "running", 3, 10, "processing chunks")
    (out / "not-a-run").mkdir()
    (out / "run-done" / "notes.py").write_text("print('not served')")
    return out


def serve(output: Path, auth: tuple[str, str] | None = None) -> Callable[
        [Callable[[TestClient[Any, Any]], Awaitable[None]]], None]:
    """Run a scenario against the app on a real ephemeral port."""

    def run(scenario: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
        async def main() -> None:
            async with TestClient(TestServer(create_app(output, auth))) as client:
                await scenario(client)

        asyncio.run(main())

    return run


async def raw_get(client: TestClient[Any, Any], target: str) -> tuple[int, str]:
    """Send ``target`` byte for byte (no client-side normalisation or re-encoding)."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
    return int(head.split()[1]), body


def test_run_list_shows_runs_with_status_and_headline_numbers(output: Path) -> None:
    results = json.loads((output / "run-done" / "results.json").read_text())

    async def scenario(client: TestClient[Any, Any]) -> None:
        page = await client.get("/")
        assert page.status == 200
        text = await page.text()
        for run_id in ("run-done", "run-partial", "run-live"):
            assert f'href="/runs/{run_id}/"' in text
        assert "not-a-run" not in text
        assert f"{results['fit']['mu']:.2f} ± {results['fit']['mu_uncertainty']:.2f}" in text
        assert f"{results['significance']['notebook']:.3f}" in text
        assert "data_A" in text and "2025-01-02 03:04:05 UTC" in text
        api = await (await client.get("/api/runs")).json()
        by_id = {r["run_id"]: r for r in api["runs"]}
        assert set(by_id) == {"run-done", "run-partial", "run-live"}
        assert by_id["run-live"]["state"] == "running"
        assert by_id["run-live"]["status"]["chunks_done"] == 3
        assert by_id["run-done"]["mu"] == pytest.approx(results["fit"]["mu"])
        assert by_id["run-partial"]["state"] == "partial"

    serve(output)(scenario)


def test_run_page_has_plots_yields_significance_fit_and_manifest(output: Path) -> None:
    results = json.loads((output / "run-done" / "results.json").read_text())

    async def scenario(client: TestClient[Any, Any]) -> None:
        redirect = await client.get("/runs/run-done", allow_redirects=False)
        assert redirect.status == 302 and redirect.headers["Location"] == "/runs/run-done/"
        page = await client.get("/runs/run-done/")
        assert page.status == 200
        text = await page.text()
        for stem in ("m4l", "m4l_4e", "m4l_4mu", "m4l_2e2mu", "m4l_ratio"):
            assert f'src="{stem}.png"' in text
        assert text.count('<tr class="sample">') == 8
        assert 'id="yields"' in text and "Total MC" in text
        fit = results["fit"]
        assert f"{fit['mu']:.3f} ± {fit['mu_uncertainty']:.3f}" in text
        assert f"{fit['significance_observed']:.2f} σ" in text
        assert f"{results['significance']['asimov']:.3f}" in text
        assert 'id="manifest"' in text and "&quot;window&quot;" in text
        assert "/static/live.js" in text
        png = await client.get("/runs/run-done/m4l.png")
        assert png.status == 200 and png.content_type == "image/png"
        assert (await png.read()).startswith(b"\x89PNG")
        pdf = await client.get("/runs/run-done/m4l_ratio.pdf")
        assert pdf.status == 200 and (await pdf.read()).startswith(b"%PDF")
        js = await client.get("/static/live.js")
        assert js.status == 200 and "api/runs" in await js.text()
        # Files outside the served kinds stay private even inside a run folder.
        assert (await client.get("/runs/run-done/notes.py")).status == 404

        partial = await (await client.get("/runs/run-partial/")).text()
        assert 'id="partial"' in partial and "No plots yet" in partial

    serve(output)(scenario)


def test_status_json_and_live_progress_markup(output: Path) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        status = await client.get("/api/runs/run-live/status")
        assert status.status == 200
        body = await status.json()
        assert body["state"] == "running"
        assert (body["chunks_done"], body["chunks_total"]) == (3, 10)
        page = await (await client.get("/runs/run-live/")).text()
        assert 'id="progress"' in page and 'data-state="running"' in page
        assert '<span class="chunks-done">3</span>' in page
        write_status(output / "run-live", "running", 7, 10)
        again = await (await client.get("/api/runs/run-live/status")).json()
        assert again["chunks_done"] == 7
        write_status(output / "run-live", "running", 3, 10, "processing chunks")

    serve(output)(scenario)


def test_unknown_runs_get_a_404_page(output: Path) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        for path in ("/runs/nope/", "/runs/not-a-run/", "/runs/nope/m4l.png", "/nowhere",
                     "/runs/run-done/missing.png", "/static/other.js"):
            response = await client.get(path)
            assert response.status == 404, path
            assert response.content_type == "text/html"
            assert "Not found" in await response.text()
        api = await client.get("/api/runs/nope/status")
        assert api.status == 404 and (await api.json())["error"]

    serve(output)(scenario)


@pytest.mark.parametrize("target", [
    "/runs/../secret.txt",
    "/runs/run-done/../../secret.txt",
    "/runs/..%2fsecret.txt",
    "/runs/%2e%2e/secret.txt",
    "/runs/%2E%2E/secret.txt",
    "/runs/run-done/..%2f..%2fsecret.txt",
    "/runs/run-done/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/runs/run-done/%252e%252e%252fsecret.txt",
    "/runs/%252e%252e/secret.txt",
    "/runs/..%5c..%5csecret.txt",
    "/runs/run-done/%2fetc%2fpasswd",
    "/runs/run-done//etc/passwd",
    "/static/..%2f..%2fweb.py",
    "/api/runs/..%2f/status",
    "/runs/.%2e/secret.txt",
])
def test_paths_cannot_escape_the_output_folder(output: Path, target: str) -> None:
    # A symlinked run folder pointing outside must not be followed either.
    link = output / "escape"
    if not link.exists():
        link.symlink_to(output.parent / "outside-run")

    async def scenario(client: TestClient[Any, Any]) -> None:
        status, body = await raw_get(client, target)
        assert status in (400, 404), (target, status)
        assert SECRET not in body and "root:" not in body
        for path in ("/runs/escape/secret.txt", "/runs/escape/", "/api/runs/escape/status"):
            linked = await client.get(path)
            assert linked.status == 404, path
            assert SECRET not in await linked.text()

    serve(output)(scenario)


def test_healthz(output: Path) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        response = await client.get("/healthz")
        assert response.status == 200 and (await response.text()).strip() == "ok"

    serve(output)(scenario)


def test_basic_auth_guards_everything_but_healthz(output: Path) -> None:
    good = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    bad = "Basic " + base64.b64encode(b"alice:wrong").decode()

    async def scenario(client: TestClient[Any, Any]) -> None:
        for path in ("/", "/runs/run-done/", "/api/runs", "/runs/run-done/m4l.png"):
            denied = await client.get(path)
            assert denied.status == 401, path
            assert denied.headers["WWW-Authenticate"].startswith("Basic")
            assert (await client.get(path, headers={"Authorization": bad})).status == 401
            assert (await client.get(path, headers={"Authorization": "Basic %%%"})).status == 401
            assert (await client.get(path, headers={"Authorization": good})).status == 200
        assert (await client.get("/healthz")).status == 200

    serve(output, ("alice", "s3cret"))(scenario)


def test_auth_is_required_beyond_localhost(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.delenv("ATLASPIPE_WEB_AUTH", raising=False)
    monkeypatch.delenv("ATLASPIPE_WEB_AUTH_FILE", raising=False)
    assert load_auth("127.0.0.1") is None
    assert load_auth("::1") is None
    assert load_auth("localhost") is None
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.org"):
        with pytest.raises(ConfigError, match="ATLASPIPE_WEB_AUTH"):
            load_auth(host)
    monkeypatch.setenv("ATLASPIPE_WEB_AUTH", "bob:pw:with:colons")
    assert load_auth("0.0.0.0") == ("bob", "pw:with:colons")
    monkeypatch.setenv("ATLASPIPE_WEB_AUTH", "nopassword")
    with pytest.raises(ConfigError, match="user:password"):
        load_auth("0.0.0.0")
    monkeypatch.delenv("ATLASPIPE_WEB_AUTH")
    secret = tmp_path / "auth"
    secret.write_text("carol:pw\n")
    monkeypatch.setenv("ATLASPIPE_WEB_AUTH_FILE", str(secret))
    assert load_auth("0.0.0.0") == ("carol", "pw")
    monkeypatch.setenv("ATLASPIPE_WEB_AUTH_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="ATLASPIPE_WEB_AUTH_FILE"):
        load_auth("0.0.0.0")


def _serve_cmd(output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "atlaspipe.web", "--output", str(output), *extra]


def test_serve_refuses_public_bind_without_auth(output: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLASPIPE_WEB_AUTH")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(_serve_cmd(output, "--host", "0.0.0.0", "--port", "0"), env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("atlaspipe: error: refusing to serve on 0.0.0.0")


def test_serve_subprocess_binds_and_stops_cleanly(output: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(_serve_cmd(output, "--port", "0"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line
        url = line.split(" at ")[1].strip()

        async def fetch() -> tuple[int, int]:
            async with ClientSession() as session, session.get(url + "healthz") as health, \
                    session.get(url + "runs/run-done/") as page:
                return health.status, page.status

        assert asyncio.run(fetch()) == (200, 200)
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_write_report_is_a_static_snapshot(output: Path) -> None:
    report = (output / "run-done" / "report.html").read_text()
    assert "live.js" not in report and 'id="progress"' not in report
    assert 'src="m4l.png"' in report and 'id="yields"' in report and 'id="fit"' in report
    assert "<style>" in report  # readable straight from the run folder, no server needed
