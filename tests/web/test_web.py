"""``atlaspipe serve`` on a real socket: pages, JSON, 404s, traversal attempts and auth."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from synthetic_results import LOST_CHUNK, make_results

from atlaspipe.errors import ConfigError
from atlaspipe.io import files
from atlaspipe.model import Failure, InputRecord, Manifest, RunResults, RunState, RunStatus
from atlaspipe.results.report import RunFolder, duration_text, progress_of, write_report
from atlaspipe.results.statistics import FitOptions, summarise
from atlaspipe.results.tables import write_yield_tables
from atlaspipe.web.server import create_app, load_auth

SECRET = "top-secret-outside-the-output-folder"
STARTED = datetime.fromisoformat("2025-01-02T03:04:05+00:00")
DISK_FULL = "finalize failed: No space left on device: /srv/out/run-doomed/m4l_4e.pdf"


def make_run(output: Path, run_id: str, status: str = "complete", plots: bool = True) -> RunResults:
    """A finished run folder as the finalize stage writes it."""
    results = make_results(status=status, run_id=run_id)
    run_dir = output / run_id
    run_dir.mkdir(parents=True)
    significance, fit = summarise(results, (115.0, 130.0), FitOptions())
    results = results.model_copy(update={"significance": significance, "fit": fit})
    outputs: dict[str, str] = {}
    if plots:
        from atlaspipe.results.plotting import draw_all, figure_formats

        outputs.update(draw_all(results, run_dir, formats=figure_formats(pdf=True)))
    outputs.update(write_yield_tables(results, run_dir))
    outputs.update(results_json="results.json", manifest_json="manifest.json", report_html="report.html")
    results = results.model_copy(update={"outputs": outputs})
    manifest = Manifest(
        run_id=run_id, created=STARTED.isoformat(), release="2020", status=results.status, executor="celery",
        inputs=(InputRecord(release="2020", sample="data_A", source="/data/data_A.4lep.root", tree="mini",
                            entries=100000, checksum="sha256:0123"),),
        config=results.config, chunks_total=12, chunks_failed=len(results.chunks.failed),
        versions={"atlaspipe": "0.1.0"},
    )
    files.write_text(run_dir / "manifest.json", manifest.to_json(indent=1))
    final = RunState.SUCCEEDED if status == "complete" else RunState.PARTIAL
    write_report(results, None, manifest, run_dir)
    files.write_text(run_dir / "results.json", results.to_json(indent=1))
    write_status(run_dir, final, 12, 12, failures=results.chunks.failed)
    return results


def write_status(run_dir: Path, state: str, done: int, total: int, message: str = "", *,
                 failures: Sequence[Failure] = (), seconds_per_chunk: float = 10.0) -> RunStatus:
    """The run's status.json as the lifecycle writes it: 1000 events a chunk, one chunk every 10 s."""
    status = RunStatus(
        run_id=run_dir.name, state=RunState(state), executor="celery", chunks_total=total, chunks_done=done,
        chunks_failed=len(failures), events_read=1000 * done, events_total=1000 * total,
        started=STARTED.isoformat(), updated=(STARTED + timedelta(seconds=seconds_per_chunk * done)).isoformat(),
        message=message, failures=tuple(failures), run_dir=str(run_dir),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    files.write_text(run_dir / "status.json", status.to_json(indent=1))
    return status


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
    # Submitted with --no-wait: the workers write status.json, nothing else yet.
    write_status(out / "run-live", "running", 3, 10, "processing chunks")
    write_status(out / "run-doomed", "failed", 10, 10, DISK_FULL)
    write_status(out / "run-short", "failed", 10, 10, "2 of 10 chunk(s) or file(s) failed; no results written",
                 failures=(LOST_CHUNK, Failure(chunk_id=None, sample="data_B", source="/data/data_B.4lep.root",
                                               reason="not a ROOT file")))
    write_status(out / "run-stopped", "cancelled", 4, 10, "cancelled by alice")
    write_status(out / "run-closing", "finalizing", 10, 10, "writing plots")
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


RUN_IDS = {"run-done", "run-partial", "run-live", "run-doomed", "run-short", "run-stopped", "run-closing"}


def test_run_list_shows_runs_with_status_and_headline_numbers(output: Path) -> None:
    results = RunResults.read(output / "run-done" / "results.json")
    assert results.fit is not None and results.fit.mu is not None and results.fit.mu_uncertainty is not None
    assert results.significance is not None and results.significance.notebook is not None

    async def scenario(client: TestClient[Any, Any]) -> None:
        page = await client.get("/")
        assert page.status == 200
        text = await page.text()
        for run_id in RUN_IDS:
            assert f'href="/runs/{run_id}/"' in text
        assert "not-a-run" not in text
        assert f"{results.fit.mu:.2f} ± {results.fit.mu_uncertainty:.2f}" in text
        assert f"{results.significance.notebook:.3f}" in text
        assert "data_A" in text and "2025-01-02 03:04:05 UTC" in text
        assert DISK_FULL in text and "cancelled by alice" in text
        assert '<div class="eta">about 70 s left</div>' in text
        api = await (await client.get("/api/runs")).json()
        by_id = {r["run_id"]: r for r in api["runs"]}
        assert set(by_id) == RUN_IDS
        assert by_id["run-live"]["state"] == "running"
        assert by_id["run-live"]["status"]["chunks_done"] == 3
        assert by_id["run-done"]["mu"] == pytest.approx(results.fit.mu)
        assert by_id["run-partial"]["state"] == "partial"
        assert by_id["run-doomed"]["state"] == "failed" and by_id["run-doomed"]["status"]["terminal"]
        assert by_id["run-stopped"]["state"] == "cancelled"
        assert not by_id["run-closing"]["status"]["terminal"]

    serve(output)(scenario)


def test_run_page_has_plots_yields_significance_fit_and_manifest(output: Path) -> None:
    results = RunResults.read(output / "run-done" / "results.json")
    fit, significance = results.fit, results.significance
    assert fit is not None and significance is not None and fit.significance_observed is not None

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
        assert f"{fit.mu:.3f} ± {fit.mu_uncertainty:.3f}" in text
        assert f"{fit.significance_observed:.2f} σ" in text
        assert f"{significance.asimov:.3f}" in text
        assert 'id="manifest"' in text and "sha256:0123" in text
        assert "/static/live.js" in text and 'id="progress"' not in text
        png = await client.get("/runs/run-done/m4l.png")
        assert png.status == 200 and png.content_type == "image/png"
        assert (await png.read()).startswith(b"\x89PNG")
        pdf = await client.get("/runs/run-done/m4l_ratio.pdf")
        assert pdf.status == 200 and (await pdf.read()).startswith(b"%PDF")
        js = await client.get("/static/live.js")
        assert js.status == 200 and "api/runs" in await js.text()
        # Files outside the served kinds stay private even inside a run folder.
        assert (await client.get("/runs/run-done/notes.py")).status == 404

    serve(output)(scenario)


def test_partial_run_says_what_was_lost(output: Path) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        page = await (await client.get("/runs/run-partial/")).text()
        assert 'id="partial"' in page and "No plots yet" in page
        # The "Events lost" column is filled from missing[sample].events_lost.
        assert ("<tr><td>llll</td><td class=\"num\">1</td><td class=\"num\">0</td>"
                "<td class=\"num\">500,000</td><td class=\"num\">25.0%</td></tr>") in page
        assert "chunk 7 /data/mc_363490.llll.4lep.root [0, 500000): InputError" in page
        assert '<span class="badge partial">partial</span>' in page

    serve(output)(scenario)


def test_status_json_and_live_progress_markup(output: Path) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        status = await client.get("/api/runs/run-live/status")
        assert status.status == 200
        body = await status.json()
        assert body["state"] == "running" and body["terminal"] is False
        assert (body["chunks_done"], body["chunks_total"]) == (3, 10)
        assert (body["events_read"], body["events_total"]) == (3000, 10000)
        page = await (await client.get("/runs/run-live/")).text()
        assert 'id="progress"' in page and 'data-state="running"' in page
        assert '<span class="chunks-done">3</span>' in page
        assert '<span class="events-total"> of 10,000</span>' in page
        write_status(output / "run-live", "running", 7, 10)
        again = await (await client.get("/api/runs/run-live/status")).json()
        assert again["chunks_done"] == 7
        write_status(output / "run-live", "running", 3, 10, "processing chunks")

    serve(output)(scenario)


def test_eta_extrapolates_the_rate_since_the_start(output: Path) -> None:
    # 3 of 10 chunks in 30 s: 7 more take 70 s.
    async def scenario(client: TestClient[Any, Any]) -> None:
        body = await (await client.get("/api/runs/run-live/status")).json()
        assert body["fraction"] == pytest.approx(0.3)
        assert body["eta_seconds"] == pytest.approx(70.0)
        assert body["eta_text"] == "about 70 s left" and body["percent_text"] == "30%"
        page = await (await client.get("/runs/run-live/")).text()
        assert '<span class="eta">about 70 s left</span>' in page
        # After the last chunk there is no estimate to give, only the state.
        closing = await (await client.get("/api/runs/run-closing/status")).json()
        assert closing["state"] == "finalizing" and closing["eta_seconds"] is None

    serve(output)(scenario)


def write_live(run_dir: Path, data: tuple[float, ...], done: int, eta: float | None) -> None:
    """A ``live.json`` of two bins, as the lifecycle writes it while the run runs."""
    from atlaspipe.model import LiveGroup, LiveHistogram

    live = LiveHistogram(run_id=run_dir.name, bin_edges=(80.0, 85.0, 90.0), data=data, chunks_done=done,
                         chunks_total=10, events_read=1000 * done, events_total=10_000, eta_seconds=eta,
                         updated=STARTED.isoformat(),
                         groups=(LiveGroup(id="signal", label="Signal", color="#00cdff", kind="signal",
                                           values=(0.5, 0.25)),))
    files.write_text(run_dir / "live.json", live.to_json())


def test_a_running_runs_status_carries_its_live_histogram_and_eta(tmp_path: Path) -> None:
    run_dir = tmp_path / "run-busy"
    write_status(run_dir, "running", 3, 10)
    write_live(run_dir, (2.0, 1.0), 3, 12.5)

    async def scenario(client: TestClient[Any, Any]) -> None:
        body = await (await client.get("/api/runs/run-busy/status")).json()
        assert body["live"]["data"] == [2.0, 1.0] and body["live"]["groups"][0]["values"] == [0.5, 0.25]
        # The rate chunks land at, not the time since submission (which would say 70 s).
        assert (body["eta_seconds"], body["eta_text"]) == (12.5, "about 13 s left")
        write_status(run_dir, "succeeded", 10, 10)
        ended = await (await client.get("/api/runs/run-busy/status")).json()
        assert ended["live"] is None and ended["eta_seconds"] is None
        # A live.json that is not one is left out of the status, which still answers.
        write_status(run_dir, "running", 3, 10)
        files.write_text(run_dir / "live.json", '{"run_id": "run-busy"}')
        broken = await client.get("/api/runs/run-busy/status")
        assert broken.status == 200 and (await broken.json())["live"] is None

    serve(tmp_path)(scenario)


def test_eta_follows_the_fraction_done(tmp_path: Path) -> None:
    def eta(done: int, total: int, seconds_per_chunk: float, state: str = "running") -> float | None:
        status = write_status(tmp_path / "run", state, done, total, seconds_per_chunk=seconds_per_chunk)
        return progress_of(RunFolder(run_id="run", path=tmp_path / "run", status=status)).eta_seconds

    assert eta(1, 4, 20.0) == pytest.approx(60.0)
    assert eta(9, 10, 60.0) == pytest.approx(60.0)
    assert eta(0, 10, 10.0) is None  # nothing done yet: no rate to extrapolate
    assert eta(10, 10, 10.0) is None
    assert eta(2, 10, 10.0, "planning") is None
    assert [duration_text(s) for s in (0.2, 45, 89.5, 150, 3599, 3900)] == [
        "1 s", "45 s", "90 s", "2 min", "1 h", "1 h 5 min"]


def test_failed_and_cancelled_runs_show_why(output: Path) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        doomed = await client.get("/runs/run-doomed/")
        assert doomed.status == 200
        text = await doomed.text()
        assert '<span class="badge failed">failed</span>' in text
        assert f'id="run-message"><b>failed</b>: {DISK_FULL}' in text
        # A run that has ended is not polled as if it went on.
        assert 'id="progress"' not in text
        assert (await (await client.get("/api/runs/run-doomed/status")).json())["terminal"] is True

        short = await (await client.get("/runs/run-short/")).text()
        assert "2 of 10 chunk(s) or file(s) failed" in short
        assert f"<li>{LOST_CHUNK.describe()}</li>" in short.replace("&#x27;", "'")
        assert "<li>file /data/data_B.4lep.root: not a ROOT file</li>" in short

        stopped = await (await client.get("/runs/run-stopped/")).text()
        assert '<span class="badge cancelled">cancelled</span>' in stopped
        assert "cancelled by alice" in stopped and 'id="progress"' not in stopped

        closing = await (await client.get("/runs/run-closing/")).text()
        assert 'data-state="finalizing"' in closing and "writing plots" in closing

    serve(output)(scenario)


def test_every_state_renders(tmp_path: Path) -> None:
    output = tmp_path / "out"

    async def scenario(client: TestClient[Any, Any]) -> None:
        for state in RunState:
            write_status(output / f"run-{state}", state, 0, 0)
            page = await client.get(f"/runs/run-{state}/")
            assert page.status == 200, state
            assert f'<span class="badge {state}">{state}</span>' in await page.text()
            body = await (await client.get(f"/api/runs/run-{state}/status")).json()
            assert body["terminal"] is state.terminal
        assert (await client.get("/")).status == 200

    serve(output)(scenario)


def test_an_invalid_document_is_one_line_not_an_error_page(tmp_path: Path) -> None:
    output = tmp_path / "out"
    make_run(output, "run-old", plots=False)
    # A results.json of the previous schema, and a status.json with a state this version does not know.
    old = json.loads((output / "run-old" / "results.json").read_text())
    old["schema_version"] = 1
    (output / "run-old" / "results.json").write_text(json.dumps(old))
    status = json.loads((output / "run-old" / "status.json").read_text())
    status["state"] = "plotting"
    (output / "run-old" / "status.json").write_text(json.dumps(status))
    (output / "run-torn").mkdir()
    (output / "run-torn" / "status.json").write_text('{"run_id": "run-to')

    async def scenario(client: TestClient[Any, Any]) -> None:
        page = await client.get("/runs/run-old/")
        assert page.status == 200
        text = await page.text()
        problems = [line.split("</div>")[0] for line in text.split('<div class="error problem">')[1:]]
        assert len(problems) == 2, problems
        assert problems[0].startswith("status.json: not a valid RunStatus: state: ")
        assert problems[1].startswith("results.json: not a valid RunResults: schema_version: ")
        assert 'id="yields"' not in text
        torn = await client.get("/runs/run-torn/")
        assert torn.status == 200 and "status.json: not a valid RunStatus" in await torn.text()
        listing = await client.get("/")
        assert listing.status == 200 and "run-torn" in await listing.text()
        api = await (await client.get("/api/runs/run-torn/status")).json()
        assert api["state"] == "unknown" and not api["terminal"]
        assert api["message"].startswith("status.json: not a valid RunStatus")

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
    return [sys.executable, "-m", "atlaspipe", "serve", "--output", str(output), *extra]


def test_serve_refuses_public_bind_without_auth(output: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLASPIPE_WEB_AUTH")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(_serve_cmd(output, "--host", "0.0.0.0", "--port", "0"), env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("atlaspipe: error: refusing to serve on 0.0.0.0")


def test_serve_subprocess_binds_and_stops_cleanly(output: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
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
    assert '<span class="badge succeeded">succeeded</span>' in report
    assert "<style>" in report  # readable straight from the run folder, no server needed
    partial = (output / "run-partial" / "report.html").read_text()
    assert '<span class="badge partial">partial</span>' in partial and "500,000" in partial
    assert not list((output / "run-done").glob(".*"))


def test_report_does_not_load_the_server() -> None:
    # finalize imports atlaspipe.results.report: it must not pull in the HTTP server.
    code = ("import sys, atlaspipe.results.report; "
            "print(sorted(m for m in sys.modules if m in ('aiohttp', 'atlaspipe.web.server')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
