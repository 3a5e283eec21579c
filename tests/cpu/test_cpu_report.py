"""``atlaspipe cpu-report``: numbers recomputed from the CSVs, and clear errors for bad inputs."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from atlaspipe.cli.main import main as cli_main
from atlaspipe.cpu.report import ALL, CpuDataError, compare, service_stats

SERVICES = ("broker", "worker-plot", "worker-process")


def write_env(folder: Path, name: str, seed: int, events: int, wall: float, samples: int = 40) -> None:
    """A bench-shaped CSV (cumulative CPU seconds consistent with the percents) and its summary."""
    rng = np.random.default_rng(seed)
    rows = []
    used = dict.fromkeys(SERVICES, 0.0)
    for step in range(1, samples + 1):
        t = step * 0.5
        for service in SERVICES:
            percent = float(rng.uniform(0, 190 if service == "worker-process" else 40))
            used[service] += percent / 100 * 0.5
            rows.append([f"{t:.3f}", service, f"{percent:.3f}", f"{used[service]:.4f}", str(10_000_000 + step)])
    with (folder / f"cpu_data_{name}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "service", "cpu_percent", "cpu_seconds", "rss_bytes"])
        writer.writerows(rows)
    (folder / f"summary_{name}.json").write_text(json.dumps({"env": name, "wall_seconds": wall, "events": events}))


def expected(folder: Path, name: str, events: int) -> dict[str, dict[str, float]]:
    """The report's figures recomputed independently with numpy from the CSV."""
    with (folder / f"cpu_data_{name}.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    out: dict[str, dict[str, float]] = {}
    for service in SERVICES:
        percents = np.array([float(r["cpu_percent"]) for r in rows if r["service"] == service])
        total = max(float(r["cpu_seconds"]) for r in rows if r["service"] == service)
        out[service] = {"mean": percents.mean(), "p95": np.percentile(percents, 95), "max": percents.max(),
                        "cpu_s": total, "per_mevent": total / events * 1e6}
    times = sorted({float(r["time"]) for r in rows})
    summed = np.array([sum(float(r["cpu_percent"]) for r in rows if float(r["time"]) == t) for t in times])
    total = sum(v["cpu_s"] for v in out.values())
    out[ALL] = {"mean": summed.mean(), "p95": np.percentile(summed, 95), "max": summed.max(), "cpu_s": total,
                "per_mevent": total / events * 1e6}
    return out


def test_report_numbers_match_a_recomputation_from_the_csv(tmp_path: Path) -> None:
    write_env(tmp_path, "compose", 1, events=300_000, wall=20.0)
    write_env(tmp_path, "k8s", 2, events=300_000, wall=25.0)
    envs, baseline = compare(tmp_path, "compose")
    assert baseline == "compose" and [e.name for e in envs] == ["compose", "k8s"]
    for env in envs:
        stats = service_stats(env)
        for service, want in expected(tmp_path, env.name, 300_000).items():
            got = stats[service]
            assert got.mean_percent == pytest.approx(want["mean"])
            assert got.p95_percent == pytest.approx(want["p95"])
            assert got.max_percent == pytest.approx(want["max"])
            assert got.cpu_seconds == pytest.approx(want["cpu_s"])
            assert got.cpu_seconds_per_million_events == pytest.approx(want["per_mevent"])

    assert cli_main(["cpu-report", "--output", str(tmp_path), "--baseline", "compose"]) == 0
    text = (tmp_path / "cpu_comparison_results.txt").read_text()
    assert (tmp_path / "cpu_comparison.png").stat().st_size > 10_000
    k8s = expected(tmp_path, "k8s", 300_000)
    base = expected(tmp_path, "compose", 300_000)
    line = next(row for row in text.split("== k8s:")[1].splitlines() if row.startswith("worker-process"))
    numbers = [float(x) for x in line.split()[1:]]
    want = k8s["worker-process"]
    assert numbers == pytest.approx([want["mean"], want["p95"], want["max"], want["cpu_s"], want["per_mevent"]],
                                    abs=0.006)
    assert "wall 25.00 s, 12,000.0 events/s" in text
    relative = text.split("== k8s relative to compose:")[1]
    assert "wall time +25.0%" in relative and "events/s -20.0%" in relative
    rel_line = next(row for row in relative.splitlines() if row.startswith("worker-process"))
    cpu_change = float(re.findall(r"[+-][0-9.]+%", rel_line)[3].rstrip("%"))
    assert cpu_change == pytest.approx((want["cpu_s"] - base["worker-process"]["cpu_s"])
                                       / base["worker-process"]["cpu_s"] * 100, abs=0.06)


@pytest.mark.parametrize(("content", "message"), [
    ("time,service,cpu\n1,a,2\n", "header must be time,service,cpu_percent,cpu_seconds,rss_bytes"),
    ("time,service,cpu_percent,cpu_seconds,rss_bytes\n", "no samples"),
    ("time,service,cpu_percent,cpu_seconds,rss_bytes\n1.0,broker,abc,1.0,5\n", "line 2: column 'cpu_percent'"),
    ("time,service,cpu_percent,cpu_seconds,rss_bytes\n1.0,broker,2.0,1.0\n", "line 2: expected 5 columns"),
    ("time,service,cpu_percent,cpu_seconds,rss_bytes\n1.0,,2.0,1.0,5\n", "line 2: empty service"),
    ("time,service,cpu_percent,cpu_seconds,rss_bytes\n1.0,broker,-2.0,1.0,5\n", "non-negative"),
    ("", "got nothing"),
])
def test_malformed_csv_is_an_error_naming_the_file(tmp_path: Path, content: str, message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "cpu_data_bad.csv"
    bad.write_text(content)
    (tmp_path / "summary_bad.json").write_text(json.dumps({"wall_seconds": 1.0, "events": 10}))
    with pytest.raises(CpuDataError, match=re.escape(str(bad))) as caught:
        compare(tmp_path)
    assert message in str(caught.value)
    assert cli_main(["cpu-report", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("atlaspipe: error: ") and str(bad) in err and "\n" not in err


def test_missing_csv_summary_or_folder_are_errors_naming_the_file(tmp_path: Path) -> None:
    write_env(tmp_path, "ok", 3, events=1000, wall=2.0)
    (tmp_path / "summary_lonely.json").write_text(json.dumps({"wall_seconds": 1.0, "events": 10}))
    with pytest.raises(CpuDataError, match=re.escape(str(tmp_path / "cpu_data_lonely.csv"))):
        compare(tmp_path)
    (tmp_path / "summary_lonely.json").unlink()
    (tmp_path / "summary_ok.json").unlink()
    with pytest.raises(CpuDataError, match=re.escape(str(tmp_path / "summary_ok.json")) + ": missing"):
        compare(tmp_path)
    (tmp_path / "summary_ok.json").write_text("{not json")
    with pytest.raises(CpuDataError, match=re.escape(str(tmp_path / "summary_ok.json")) + ": malformed"):
        compare(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CpuDataError, match=re.escape(str(empty)) + ": no cpu_data_"):
        compare(empty)
    with pytest.raises(CpuDataError, match="no such folder"):
        compare(tmp_path / "absent")


def test_unknown_baseline_names_the_expected_file(tmp_path: Path) -> None:
    write_env(tmp_path, "a", 4, events=1000, wall=2.0)
    with pytest.raises(Exception, match=re.escape(str(tmp_path / "cpu_data_b.csv"))):
        compare(tmp_path, "b")


def _write_total(folder: Path, name: str, events: int, cpu_seconds: float) -> None:
    """A one-service bench run whose CPU-s total is ``cpu_seconds``."""
    with (folder / f"cpu_data_{name}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "service", "cpu_percent", "cpu_seconds", "rss_bytes"])
        writer.writerow(["1.0", "worker-process", "100.0", f"{cpu_seconds / 2:.4f}", "1000"])
        writer.writerow(["2.0", "worker-process", "100.0", f"{cpu_seconds:.4f}", "1000"])
    (folder / f"summary_{name}.json").write_text(json.dumps({"env": name, "wall_seconds": 2.0, "events": events}))


def test_repetitions_give_fixed_cost_per_event_cost_and_effects_only_beyond_the_spread(tmp_path: Path) -> None:
    from atlaspipe.cpu.report import fit_cost, format_report

    # Two sizes: 3 CPU-s fixed + 8 CPU-s per million events, with ±0.1 of noise.
    for rep, noise in enumerate((-0.1, 0.0, 0.1), 1):
        _write_total(tmp_path, f"base.r{rep}", 1_000_000, 11.0 + noise)
        _write_total(tmp_path, f"base.r{rep + 3}", 2_000_000, 19.0 - noise)
        # Slower by 0.05 CPU-s: inside the spread. Slower by 2 CPU-s: an effect.
        _write_total(tmp_path, f"same.r{rep}", 1_000_000, 11.05 + noise)
        _write_total(tmp_path, f"slow.r{rep}", 1_000_000, 13.0 + noise)
    envs, baseline = compare(tmp_path, "base.r1")
    model = fit_cost([(e.events, service_stats(e)[ALL].cpu_seconds) for e in envs if e.name.startswith("base")])
    assert model is not None
    assert model.fixed_cpu_seconds == pytest.approx(3.0, abs=1e-6)
    assert model.cpu_seconds_per_million_events == pytest.approx(8.0, abs=1e-6)
    text = format_report(envs, baseline, tmp_path)
    assert "fixed cost 3.00 CPU-s + 8.00 CPU-s per million events" in text
    assert "base" in text and "10.90–11.10" in text
    same = next(line for line in text.splitlines() if line.startswith("same vs base"))
    assert same.startswith("same vs base at 1,000,000 events: no effect") and "within the spread 0.20" in same
    slow = next(line for line in text.splitlines() if line.startswith("slow vs base"))
    assert slow == "slow vs base at 1,000,000 events: +2.00 CPU-s (+18.2%)"
