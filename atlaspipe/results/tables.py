"""Yield tables of a run (per sample, group and channel, with MC statistical uncertainties).

The same rows go to ``yields.json`` (for programs), ``yields.csv`` (for spreadsheets) and
``yields.md`` (for people and the web report).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wcwidth import wcswidth

from atlaspipe.io import files
from atlaspipe.model import OTHER_GROUP_ID, CutflowTable, GroupInfo, Histogram, RunResults

log = logging.getLogger(__name__)

ALL = "all"
CHANNEL_TEXT = {"4e": "4e", "4mu": "4μ", "2e2mu": "2e2μ", ALL: "total"}


@dataclass(frozen=True)
class Yield:
    """A yield and its statistical uncertainty √Σw²."""

    value: float
    uncertainty: float

    @classmethod
    def of(cls, histogram: Histogram) -> Yield:
        return cls(histogram.total, histogram.uncertainty)

    def __add__(self, other: Yield) -> Yield:
        return Yield(self.value + other.value, math.hypot(self.uncertainty, other.uncertainty))

    def text(self) -> str:
        return f"{self.value:.3f} ± {self.uncertainty:.3f}"

    def to_jsonable(self) -> dict[str, float]:
        return {"yield": self.value, "uncertainty": self.uncertainty}


ZERO = Yield(0.0, 0.0)


@dataclass(frozen=True)
class SampleRow:
    """One MC sample's yields by channel (and ``all``)."""

    name: str
    group: str
    yields: Mapping[str, Yield]


@dataclass(frozen=True)
class GroupRow:
    """The summed yields of a group's samples by channel (and ``all``)."""

    id: str
    text: str
    kind: Literal["background", "signal"]
    yields: Mapping[str, Yield]


@dataclass(frozen=True)
class YieldTable:
    """Every row of the yield tables, in display order: samples within their groups, then totals.

    ``keys`` are the channels then ``all``; data carry counts only.
    """

    channels: tuple[str, ...]
    samples: tuple[SampleRow, ...]
    groups: tuple[GroupRow, ...]
    total_mc: Mapping[str, Yield]
    data: Mapping[str, float]
    data_label: str | None = "Data"
    """``Data``, ``Pseudo-data`` for generated data, None for a run without data."""

    @property
    def keys(self) -> tuple[str, ...]:
        return (*self.channels, ALL)

    def samples_of(self, group: GroupRow) -> list[SampleRow]:
        return [s for s in self.samples if s.group == group.id]

    def to_jsonable(self) -> dict[str, Any]:
        """The ``yields.json`` document."""

        def by_key(yields: Mapping[str, Yield]) -> dict[str, dict[str, float]]:
            return {k: yields[k].to_jsonable() for k in self.keys if k in yields}

        return {
            "channels": list(self.channels),
            "samples": [{"name": s.name, "group": s.group, "yields": by_key(s.yields)} for s in self.samples],
            "groups": [{"id": g.id, "text": g.text, "kind": g.kind, "yields": by_key(g.yields)} for g in self.groups],
            "total_mc": by_key(self.total_mc),
            "data": {k: self.data[k] for k in self.keys},
            "data_label": self.data_label,
        }


def data_name(results: RunResults) -> str | None:
    """What the run's data are called in its texts: ``pseudo-data``, ``data``, or None without data."""
    if results.data.kind == "pseudo":
        return "pseudo-data"
    if results.data.given:
        return "data"
    return None


def yield_rows(results: RunResults) -> YieldTable:
    """The yields of every sample, group, all MC and data, by channel.

    Yields are sums of the in-range m4l bins, uncertainties √Σw².
    """
    channels = tuple(results.channels)
    keys = (*channels, ALL)
    group_ids = [g.id for g in results.groups]
    listed = [n for g in results.groups for n in g.samples]
    samples: list[SampleRow] = []
    sums: dict[str, dict[str, Yield]] = {}
    for name, sample in results.samples.items():
        per = {ch: Yield.of(sample.channels[ch]) for ch in channels if ch in sample.channels}
        per[ALL] = Yield.of(sample.m4l)
        group = sample.group or OTHER_GROUP_ID
        samples.append(SampleRow(name=name, group=group, yields=per))
        acc = sums.setdefault(group, dict.fromkeys(keys, ZERO))
        for k, cell in per.items():
            acc[k] = acc[k] + cell
    # Catalog order within a group (ggH before VBF, …), unknown samples after, by name.
    samples.sort(key=lambda r: (_order(group_ids, r.group), _order(listed, r.name), r.name))
    groups = tuple(_group_row(results.group(gid), gid, sums[gid])
                   for gid in sorted(sums, key=lambda g: _order(group_ids, g)))
    total = dict.fromkeys(keys, ZERO)
    for row in groups:
        for k in keys:
            total[k] = total[k] + row.yields[k]
    data = {ch: results.data.channels[ch].total if ch in results.data.channels else 0.0 for ch in channels}
    data[ALL] = results.data.m4l.total
    label = data_name(results)
    return YieldTable(channels=channels, samples=tuple(samples), groups=groups, total_mc=total, data=data,
                      data_label=label[0].upper() + label[1:] if label else None)


def _group_row(info: GroupInfo | None, gid: str, yields: Mapping[str, Yield]) -> GroupRow:
    if info is None:
        return GroupRow(id=gid, text=gid, kind="background", yields=yields)
    return GroupRow(id=gid, text=info.text, kind=info.kind, yields=yields)


def _order(ordered: Sequence[str], item: str) -> int:
    return ordered.index(item) if item in ordered else len(ordered)


@dataclass(frozen=True)
class TextRow:
    """One row of the human-readable table; ``level`` says how to emphasise it."""

    level: Literal["sample", "group", "total", "data"]
    cells: tuple[str, ...]


def table_lines(rows: YieldTable) -> tuple[tuple[str, ...], list[TextRow]]:
    """Header and text rows of the human-readable table (also used by the web report)."""
    header = ("", *(CHANNEL_TEXT.get(k, k) for k in rows.keys))
    body: list[TextRow] = []
    for group in rows.groups:
        body += [TextRow("sample", (s.name, *(s.yields[k].text() for k in rows.keys))) for s in rows.samples_of(group)]
        body.append(TextRow("group", (group.text, *(group.yields[k].text() for k in rows.keys))))
    if rows.samples:
        body.append(TextRow("total", ("Total MC", *(rows.total_mc[k].text() for k in rows.keys))))
    if rows.data_label is not None:
        body.append(TextRow("data", (rows.data_label, *(f"{rows.data[k]:.0f}" for k in rows.keys))))
    return header, body


def text_width(text: str) -> int:
    """Columns ``text`` takes on a terminal (a combining mark, as in tt̄, takes none)."""
    width = wcswidth(text)
    return width if width >= 0 else len(text)


def pad(text: str, width: int, right: bool = False) -> str:
    """``text`` padded with spaces to ``width`` terminal columns."""
    fill = " " * max(0, width - text_width(text))
    return fill + text if right else text + fill


def aligned(rows: Sequence[Sequence[str]], right: Sequence[bool], gap: str = " ") -> list[str]:
    """``rows`` of cells as lines, each column as wide as its widest cell in terminal columns
    (``right``: per column, align to the right), so that no name or number breaks the columns."""
    widths = [max(text_width(row[i]) for row in rows) for i in range(len(right))]
    return [gap.join(pad(cell, width, right=r) for cell, width, r in zip(row, widths, right, strict=True)).rstrip()
            for row in rows]


def _md_escape(text: str) -> str:
    # ZZ* and similar names must not open Markdown emphasis.
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("_", "\\_").replace("|", "\\|")


def markdown_table(rows: YieldTable) -> str:
    """The yields as a GitHub-flavoured Markdown table, its columns aligned for reading as text."""
    header, body = table_lines(rows)

    def first(row: TextRow) -> str:
        name = _md_escape(row.cells[0])
        return name if row.level == "sample" else f"**{name}**"

    lines = [header, *((first(r), *r.cells[1:]) for r in body)]
    widths = [max(3, *(text_width(line[i]) for line in lines)) for i in range(len(header))]
    rule = "|" + "|".join(["-" * (widths[0] + 2), *("-" * (w + 1) + ":" for w in widths[1:])]) + "|"
    text = ["| " + " | ".join(pad(c, w, right=i > 0) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
            + " |" for line in lines]
    return "\n".join([text[0], rule, *text[1:]]) + "\n"


CUTFLOW_NOTE = ("\nCutflow: events passing each cut in turn; raw counts, with the weighted MC yields "
                "(scaled to the luminosity) in brackets. Before the type-sum cut an event counts in the "
                "channel of its first four leptons' flavours, if any.\n")


def markdown_cutflow(cutflow: CutflowTable | None) -> str:
    """One Markdown table per channel column: a row per sample, a column per cut."""
    if cutflow is None or not cutflow.samples:
        return ""
    parts = []
    for col, column in enumerate(cutflow.columns):
        header = ("sample", *cutflow.steps)
        lines = [header, *((_md_escape(name), *(
            f"{flow.raw[step][col]}" + (f" ({flow.weighted[step][col]:.4g})"
                                        if flow.weighted[step][col] != flow.raw[step][col] else "")
            for step in range(len(cutflow.steps)))) for name, flow in cutflow.samples.items())]
        widths = [max(3, *(text_width(line[i]) for line in lines)) for i in range(len(header))]
        rule = "|" + "|".join(["-" * (widths[0] + 2), *("-" * (w + 1) + ":" for w in widths[1:])]) + "|"
        text = ["| " + " | ".join(pad(c, w, right=i > 0) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
                + " |" for line in lines]
        parts.append(f"\n## Cutflow, {CHANNEL_TEXT.get(column, column)}\n\n" + "\n".join([text[0], rule, *text[1:]])
                     + "\n")
    return "".join(parts) + CUTFLOW_NOTE


def csv_table(rows: YieldTable, cutflow: CutflowTable | None = None) -> str:
    """Long format: one line per (level, name, channel) with yield and uncertainty; then, with a
    cutflow, one ``cutflow`` line per (sample, cut, channel) with the weighted and raw counts."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["level", "name", "group", "channel", "yield", "stat_uncertainty", "cut", "raw_events"])
    for s in rows.samples:
        for k in rows.keys:
            writer.writerow(["sample", s.name, s.group, k, repr(s.yields[k].value), repr(s.yields[k].uncertainty)])
    for g in rows.groups:
        for k in rows.keys:
            writer.writerow(["group", g.id, g.id, k, repr(g.yields[k].value), repr(g.yields[k].uncertainty)])
    for k in rows.keys:
        writer.writerow(["total_mc", "total_mc", "", k, repr(rows.total_mc[k].value),
                         repr(rows.total_mc[k].uncertainty)])
    for k in rows.keys:
        writer.writerow(["data", "data", "", k, repr(rows.data[k]), ""])
    if cutflow is not None:
        groups = {s.name: s.group for s in rows.samples}
        for name, flow in cutflow.samples.items():
            for step, cut in enumerate(cutflow.steps):
                for col, column in enumerate(cutflow.columns):
                    writer.writerow(["cutflow", name, groups.get(name, "data"), column,
                                     repr(flow.weighted[step][col]), "", cut, flow.raw[step][col]])
    return out.getvalue()


def write_yield_tables(results: RunResults, run_dir: Path) -> dict[str, str]:
    """Write yields.json, yields.csv and yields.md; returns ``{"yields_json": "yields.json", …}``."""
    rows = yield_rows(results)
    run_dir.mkdir(parents=True, exist_ok=True)
    title = f"# Yields of run {results.run_id}\n\n"
    note = ("\nMC yields are sums of the in-range m4l bins with statistical uncertainties "
            "√Σw²; data are event counts.\n")
    if rows.data_label == "Pseudo-data":
        note += "\nPseudo-data: generated by atlaspipe generate, not ATLAS data.\n"
    if results.partial:
        note += "\n**PARTIAL run**: some chunks failed, yields are incomplete.\n"
    contents = {
        "yields_json": ("yields.json", json.dumps(rows.to_jsonable(), indent=2, allow_nan=False) + "\n"),
        "yields_csv": ("yields.csv", csv_table(rows, results.cutflow)),
        "yields_md": ("yields.md", title + markdown_table(rows) + note + markdown_cutflow(results.cutflow)),
    }
    outputs: dict[str, str] = {}
    for key, (name, text) in contents.items():
        files.write_text(run_dir / name, text)
        outputs[key] = name
    log.debug("run %s: %s written into %s", results.run_id, ", ".join(outputs.values()), run_dir)
    return outputs
