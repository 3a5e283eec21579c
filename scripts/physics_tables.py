"""Print the data/MC table of docs/physics.md from a run's results.json (real 2020 data and generated MC).

Usage: python scripts/physics_tables.py RUN_FOLDER/results.json
Regions sum whole 5 GeV bins (the run must use the full-range binning of docs/physics.md), the
last one adds the overflow. The abs. pull is (data - MC)/sqrt(data + var_MC); the shape pull the
same with the MC scaled to the data total.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

REGIONS = ((0.0, 80.0), (80.0, 100.0), (100.0, 115.0), (115.0, 130.0), (130.0, 180.0), (180.0, 250.0),
           (250.0, 400.0), (400.0, math.inf))
CHANNELS = {"4e": "4e", "4mu": "4μ", "2e2mu": "2e2μ"}


def _sum(histogram: dict[str, Any], edges: list[float], lo: float, hi: float, key: str) -> float:
    total = math.fsum(x for x, edge in zip(histogram[key], edges, strict=False) if lo <= edge < hi)
    if hi == math.inf:
        total += histogram["overflow" if key == "values" else "overflow_variance"]
    return total


def _region(results: dict[str, Any], lo: float, hi: float, channel: str | None) -> tuple[float, float, float]:
    """(data, MC, MC variance) in [lo, hi) for one channel or all."""
    edges = results["bin_edges"]

    def pick(entry: dict[str, Any]) -> dict[str, Any]:
        return entry["m4l"] if channel is None else entry["channels"][channel]

    data = _sum(pick(results["data"]), edges, lo, hi, "values")
    mc = math.fsum(_sum(pick(s), edges, lo, hi, "values") for s in results["samples"].values())
    var = math.fsum(_sum(pick(s), edges, lo, hi, "variances") for s in results["samples"].values())
    return data, mc, var


def main(path: str) -> None:
    lines = []
    results = json.loads(Path(path).read_text("utf-8"))
    data_total, mc_total, _ = _region(results, 0.0, math.inf, None)
    scale = data_total / mc_total
    lines.append(f"data {data_total:.0f}, MC {mc_total:.2f}, data/MC {scale:.3f}")
    lines.append("| region / channel | data | generated MC | data/MC | abs. pull | shape pull |")
    lines.append("|---|---|---|---|---|---|")
    rows = [(f"{lo:g}–{hi:g} GeV" if hi != math.inf else f"> {lo:g} GeV", lo, hi, None) for lo, hi in REGIONS]
    rows += [(text, 0.0, math.inf, key) for key, text in CHANNELS.items()]
    for name, lo, hi, channel in rows:
        data, mc, var = _region(results, lo, hi, channel)
        pulls = [(data - mc) / math.sqrt(data + var), (data - scale * mc) / math.sqrt(data + scale * scale * var)]
        shown = [f"**{p:+.1f}**" if abs(p) > 2 else f"{p:+.1f}" for p in pulls]
        lines.append(f"| {name} | {data:.0f} | {mc:.2f} ± {math.sqrt(var):.2f} | {data / mc:.2f} "
                     f"| {shown[0]} | {shown[1]} |")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
