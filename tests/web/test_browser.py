"""Headless Chromium against a real ``atlaspipe serve`` subprocess.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; without them
the test skips outside CI and fails in CI (CI=true).  Screenshots and the measured page load
time go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_web import DISK_FULL, make_run, write_status

from atlaspipe.model import RunResults
from tests.conftest import WorkerPool
from tests.runs import run_dir_of, submit

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1300,2600")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install selenium)")
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).exists():
            _unavailable(f"{binary} missing (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    output = tmp_path_factory.mktemp("browser") / "output"
    make_run(output, "run-2020")
    # Runs followed by nobody but the workers: only their status.json exists.
    write_status(output / "run-live", "running", 2, 10, "processing chunks")
    write_status(output / "run-doomed", "finalizing", 10, 10, "writing plots")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "atlaspipe", "serve", "--output", str(output), "--port", "0"],
        env=env, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert " at http://127.0.0.1:" in line, line
        yield line.split(" at ")[1].strip(), output
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait(condition: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_report_page_shows_plots_and_yields(driver: Any, server: tuple[str, Path]) -> None:
    from selenium.webdriver.common.by import By

    url, output = server
    driver.get(url + "runs/run-2020/")
    timing = driver.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "return {dom: n.domContentLoadedEventEnd, load: n.loadEventEnd, bytes: n.transferSize};")
    images = driver.find_elements(By.CSS_SELECTOR, "figure img")
    assert len(images) == 5
    for img in images:
        width = driver.execute_script("return arguments[0].naturalWidth", img)
        height = driver.execute_script("return arguments[0].naturalHeight", img)
        assert width > 0 and height > 0, img.get_attribute("src")
    rows = driver.find_elements(By.CSS_SELECTOR, "#yields tbody tr")
    names = [r.find_element(By.CSS_SELECTOR, "td").text for r in rows]
    assert names == [
        "Zee", "Zmumu", "ttbar_lep", "Background Z, tt̄", "llll", "Background ZZ*",
        "ggH125_ZZ4lep", "VBFH125_ZZ4lep", "WH125_ZZ4lep", "ZH125_ZZ4lep",
        "Signal (m_H = 125 GeV)", "Total MC", "Data",
    ]
    results = RunResults.read(output / "run-2020" / "results.json")
    assert results.fit is not None and results.fit.mu is not None and results.fit.mu_uncertainty is not None
    data_cells = rows[-1].find_elements(By.CSS_SELECTOR, "td")
    assert data_cells[-1].text == f"{results.data.m4l.total:.0f}"
    fit_text = driver.find_element(By.ID, "fit").text
    assert f"{results.fit.mu:.3f} ± {results.fit.mu_uncertainty:.3f}" in fit_text
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "report-run-page.png"))
    (ARTIFACTS / "page-load.json").write_text(json.dumps(
        {"page": "/runs/<id>/", "dom_content_loaded_ms": timing["dom"],
         "load_event_end_ms": timing["load"], "html_bytes": timing["bytes"]}, indent=2))
    assert timing["load"] < 5000

    driver.get(url)
    listed = driver.find_elements(By.CSS_SELECTOR, "#runs tr[data-run]")
    assert {r.get_attribute("data-run") for r in listed} == {"run-2020", "run-live", "run-doomed"}
    driver.save_screenshot(str(ARTIFACTS / "report-run-list.png"))
    # The list follows running runs too.
    row = driver.find_element(By.CSS_SELECTOR, 'tr[data-run="run-live"]')
    assert row.find_element(By.CSS_SELECTOR, ".chunks-done").text == "2"
    write_status(output / "run-live", "running", 4, 10, "processing chunks")
    _wait(lambda: row.find_element(By.CSS_SELECTOR, ".chunks-done").text == "4")
    write_status(output / "run-live", "running", 2, 10, "processing chunks")


def test_progress_view_updates_while_the_run_goes_on(driver: Any, server: tuple[str, Path]) -> None:
    from selenium.webdriver.common.by import By

    url, output = server
    live = output / "run-live"
    driver.get(url + "runs/run-live/")

    def shown() -> tuple[str, str, str, str]:
        box = driver.find_element(By.ID, "progress")
        return (box.find_element(By.CSS_SELECTOR, ".chunks-done").text,
                box.find_element(By.CSS_SELECTOR, "progress").get_attribute("value"),
                box.find_element(By.CSS_SELECTOR, ".events-read").text,
                box.find_element(By.CSS_SELECTOR, ".eta").text)

    assert shown()[0] == "2" and shown()[3] == "about 80 s left"
    for done in (5, 8):
        write_status(live, "running", done, 10, f"chunk {done} done")
        _wait(lambda d=done: shown()[:2] == (str(d), str(d)))
    # 8 chunks in 80 s: 2 more take 20 s.
    assert shown()[2:] == ("8,000", "about 20 s left")
    assert "chunk 8 done" in driver.find_element(By.ID, "progress").text
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "report-progress.png"))

    write_status(live, "aggregating", 10, 10, "merging histograms")
    _wait(lambda: driver.find_element(By.CSS_SELECTOR, "#run-facts .badge").text == "aggregating")

    # When the run finishes the page reloads itself and shows the results.
    for name in ("results.json", "m4l.png", "yields.json"):
        shutil.copy(output / "run-2020" / name, live / name)
    write_status(live, "succeeded", 10, 10, "done")
    img = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "figure.main img"))[0]
    _wait(lambda: driver.execute_script("return arguments[0].naturalWidth", img) > 0)
    assert driver.find_element(By.CSS_SELECTOR, ".badge").text == "succeeded"


def test_a_run_that_fails_shows_why(driver: Any, server: tuple[str, Path]) -> None:
    from selenium.webdriver.common.by import By

    url, output = server
    driver.get(url + "runs/run-doomed/")
    assert driver.find_element(By.CSS_SELECTOR, "#progress .badge").text == "finalizing"
    write_status(output / "run-doomed", "failed", 10, 10, DISK_FULL)
    # The page reloads itself when the run ends and shows the reason in one line.
    message = _wait(lambda: driver.find_elements(By.ID, "run-message"))[0]
    assert message.text == f"failed: {DISK_FULL}"
    assert driver.find_element(By.CSS_SELECTOR, "#run-facts .badge").text == "failed"
    assert not driver.find_elements(By.ID, "progress")
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "report-failed.png"))


LIVE_VIEW = """
const badge = document.querySelector("#run-facts .badge");
const chart = document.querySelector("#live-plot svg");
const eta = document.querySelector("#live-plot .live-eta");
return [badge ? badge.textContent : null,
        chart ? Array.from(chart.querySelectorAll("rect.bar, circle.point"),
                           (e) => e.getAttribute("height") || e.getAttribute("cy")).join(" ") : null,
        chart ? chart.dataset.chunks : null, eta ? eta.textContent : ""];
"""


def test_the_live_histogram_grows_during_a_distributed_run(driver: Any, worker_pool: WorkerPool) -> None:
    """20 chunks of the embedded sample on real workers, each held 0.3 s by the test's fault hook."""
    from atlaspipe.pipeline.celery.records import RunRecords
    from atlaspipe.pipeline.lifecycle import Lifecycle
    from tests.conftest import BACKEND_URL

    names = [worker_pool.start(stage, stage, wait=False) for stage in ("load", "aggregate", "plot")]
    names.append(worker_pool.start("process", "process", wait=False, extra_args=("--include", "tests.fault_hooks"),
                                   extra_env={"ATLASPIPE_TEST_SLOW_CHUNK_SECONDS": "0.3"}))
    output = Path(worker_pool.env["ATLASPIPE_OUTPUT_DIR"])
    output.mkdir(parents=True, exist_ok=True)
    serve = subprocess.Popen([sys.executable, "-m", "atlaspipe", "serve", "--output", str(output), "--port", "0"],
                             env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, text=True)
    try:
        assert serve.stdout is not None
        url = serve.stdout.readline().split(" at ")[1].strip()
        worker_pool.wait_ready(names)
        submitted = submit(worker_pool.env, worker_pool.tmp, "--chunk-size", "1000", "--no-wait")
        assert submitted.returncode == 0, submitted.stderr
        run_dir = run_dir_of(submitted)
        _wait((run_dir / "status.json").exists)
        driver.get(f"{url}runs/{run_dir.name}/")
        drawn: set[str] = set()
        chunks_drawn: set[str] = set()
        etas: set[str] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (len(drawn) >= 2 and etas):
            state, bars, chunks, eta = driver.execute_script(LIVE_VIEW)
            if state != "running" and state in {"succeeded", "partial", "failed", "cancelled"}:
                break
            if state == "running" and bars is not None:
                drawn.add(bars)
                chunks_drawn.add(chunks)
                if eta:
                    etas.add(eta)
            time.sleep(0.1)
        # While the run ran, the bars drawn changed as chunks landed, and the time left was shown.
        assert len(drawn) >= 2 and len(chunks_drawn) >= 2, chunks_drawn
        assert any(e.startswith(" · about ") and e.endswith(" left") for e in etas), etas
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "report-live-histogram.png"))
        # Once the run ends the page shows how it ended instead of the partial histogram. On a
        # loaded machine the run may have ended by itself before the cancel: then as that.
        records = RunRecords(BACKEND_URL)
        cancelled = Lifecycle(records, "celery").cancel(run_dir.name, "seen enough")
        ended = "cancelled" if cancelled else records.status(run_dir.name).state.value
        assert ended in {"cancelled", "succeeded"}, ended
        _wait(lambda: driver.execute_script(LIVE_VIEW)[0] == ended)
        assert not driver.find_elements("id", "live-plot")
    finally:
        serve.terminate()
        serve.wait(timeout=10)
