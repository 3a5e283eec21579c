"""Yield tables of a run (per sample, group and channel, with MC statistical uncertainties).

The same rows go to ``yields.json`` (for programs), ``yields.csv`` (for spreadsheets) and
``yields.md`` (for people and the web report).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

ALL = "all"
CHANNEL_TEXT = {"4e": "4e", "4mu": "4μ", "2e2mu": "2e2μ", ALL: "total"}


def _cell(histogram: list[float], sumw2: list[float]) -> dict[str, float]:
    return {"yield": float(sum(histogram)), "uncertainty": math.sqrt(max(0.0, sum(sumw2)))}


def _add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {"yield": a["yield"] + b["yield"],
            "uncertainty": math.hypot(a["uncertainty"], b["uncertainty"])}


def yield_rows(results: dict[str, Any]) -> dict[str, Any]:
    """The tables as a dict: ``samples``, ``groups``, ``total_mc`` and ``data``, each by channel.

    Every entry maps a channel name (and ``all``) to ``{"yield", "uncertainty"}``; data carry
    counts only.  Yields are sums of the in-range m4l bins, uncertainties √Σw².
    """
    channels = list(results.get("channels", []))
    keys = [*channels, ALL]
    zero = {k: {"yield": 0.0, "uncertainty": 0.0} for k in keys}
    group_ids = [g["id"] for g in results.get("groups", [])]
    samples: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    for name, sample in results.get("samples", {}).items():
        per = {ch: _cell(sample["channels"][ch]["histogram"], sample["channels"][ch]["sumw2"])
               for ch in channels if ch in sample.get("channels", {})}
        per[ALL] = _cell(sample["histogram"], sample["sumw2"])
        group = sample.get("group") or "other"
        samples.append({"name": name, "group": group, "yields": per})
        acc = groups.setdefault(group, {k: dict(v) for k, v in zero.items()})
        for k, cell in per.items():
            acc[k] = _add(acc[k], cell)
    listed = [n for g in results.get("groups", []) for n in g.get("samples", [])]
    # Catalog order within a group (ggH before VBF, …), unknown samples after, by name.
    samples.sort(key=lambda r: (_order(group_ids, r["group"]), _order(listed, r["name"]),
                                r["name"]))
    group_rows: list[dict[str, Any]] = [
        {"id": gid, "text": _group_text(results, gid), "kind": _group_kind(results, gid),
         "yields": groups[gid]}
        for gid in sorted(groups, key=lambda g: _order(group_ids, g))
    ]
    total = {k: dict(v) for k, v in zero.items()}
    for row in group_rows:
        for k in keys:
            total[k] = _add(total[k], row["yields"][k])
    data = results.get("data", {})
    data_counts = {ch: float(sum(data.get("channels", {}).get(ch, {}).get("histogram", [])))
                   for ch in channels}
    data_counts[ALL] = float(sum(data.get("histogram", [])))
    return {"channels": channels, "samples": samples, "groups": group_rows, "total_mc": total,
            "data": data_counts}


def _order(group_ids: list[str], gid: str) -> int:
    return group_ids.index(gid) if gid in group_ids else len(group_ids)


def _group_info(results: dict[str, Any], gid: str) -> dict[str, Any]:
    return next((g for g in results.get("groups", []) if g["id"] == gid), {})


def _group_text(results: dict[str, Any], gid: str) -> str:
    return str(_group_info(results, gid).get("text", gid))


def _group_kind(results: dict[str, Any], gid: str) -> str:
    return str(_group_info(results, gid).get("kind", "background"))


def _fmt(cell: dict[str, float]) -> str:
    return f"{cell['yield']:.3f} ± {cell['uncertainty']:.3f}"


def table_lines(rows: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of the human-readable table (also used by the web report)."""
    keys = [*rows["channels"], ALL]
    header = ["", *(CHANNEL_TEXT.get(k, k) for k in keys)]
    body: list[list[str]] = []
    for group in rows["groups"]:
        for sample in rows["samples"]:
            if sample["group"] == group["id"]:
                body.append([sample["name"], *(_fmt(sample["yields"][k]) for k in keys)])
        body.append([f"**{group['text']}**", *(_fmt(group["yields"][k]) for k in keys)])
    body.append(["**Total MC**", *(_fmt(rows["total_mc"][k]) for k in keys)])
    body.append(["**Data**", *(f"{rows['data'][k]:.0f}" for k in keys)])
    return header, body


def _md_escape(text: str) -> str:
    # ZZ* and similar names must not open Markdown emphasis; the ** markers are ours.
    if text.startswith("**") and text.endswith("**") and len(text) > 4:
        return "**" + _md_escape(text[2:-2]) + "**"
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("_", "\\_").replace("|", "\\|")


def markdown_table(rows: dict[str, Any]) -> str:
    """The yields as a GitHub-flavoured Markdown table."""
    header, body = table_lines(rows)
    body = [[_md_escape(c) for c in r] for r in body]
    rule = "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def csv_table(rows: dict[str, Any]) -> str:
    """Long format: one line per (level, name, channel) with yield and uncertainty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["level", "name", "group", "channel", "yield", "stat_uncertainty"])
    keys = [*rows["channels"], ALL]
    for s in rows["samples"]:
        for k in keys:
            writer.writerow(["sample", s["name"], s["group"], k, repr(s["yields"][k]["yield"]),
                             repr(s["yields"][k]["uncertainty"])])
    for g in rows["groups"]:
        for k in keys:
            writer.writerow(["group", g["id"], g["id"], k, repr(g["yields"][k]["yield"]),
                             repr(g["yields"][k]["uncertainty"])])
    for k in keys:
        writer.writerow(["total_mc", "total_mc", "", k, repr(rows["total_mc"][k]["yield"]),
                         repr(rows["total_mc"][k]["uncertainty"])])
    for k in keys:
        writer.writerow(["data", "data", "", k, repr(rows["data"][k]), ""])
    return out.getvalue()


def write_yield_tables(results: dict[str, Any], run_dir: Path) -> dict[str, str]:
    """Write yields.json, yields.csv and yields.md; returns ``{"yields_json": "yields.json", …}``."""
    rows = yield_rows(results)
    run_dir.mkdir(parents=True, exist_ok=True)
    title = f"# Yields of run {results.get('run_id', '')}\n\n"
    note = ("\nMC yields are sums of the in-range m4l bins with statistical uncertainties "
            "√Σw²; data are event counts.\n")
    if results.get("status") == "partial":
        note += "\n**PARTIAL run**: some chunks failed, yields are incomplete.\n"
    contents = {
        "yields_json": ("yields.json", json.dumps(rows, indent=2, allow_nan=False) + "\n"),
        "yields_csv": ("yields.csv", csv_table(rows)),
        "yields_md": ("yields.md", title + markdown_table(rows) + note),
    }
    outputs: dict[str, str] = {}
    for key, (name, text) in contents.items():
        tmp = run_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(run_dir / name)
        outputs[key] = name
    return outputs
