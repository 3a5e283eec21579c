"""The terminal yields table: its columns are as wide as their content, whatever the names and numbers."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from synthetic_results import make_results

from atlaspipe.results.summary import format_summary
from atlaspipe.results.tables import aligned, text_width

# Real 2025e sample names (longer than any header or number), and a name with a combining mark.
LONG_2025E = ("PowhegPythia8EvtGen_NNPDF30_AZNLO_WpH125J_Wincl_H_ZZ4l",
              "Sh_2214_Zee_maxHTpTV2_BFilter", "PhPy8EG_A14NNPDF23_NNPDF30ME_ttbar_dil")


def _starts(line: str, text: str) -> int:
    """The terminal column where ``text`` starts in ``line`` (combining marks take none)."""
    index = line.index(text)
    return index - sum(1 for c in line[:index] if unicodedata.combining(c))


def test_aligned_columns_follow_the_widest_cell() -> None:
    rows = [("sample", "selected", "yield"), ("tt̄", "3", "1.5000"), (LONG_2025E[0], "1234567890123", "98765432.1234")]
    lines = aligned(rows, (False, True, True), gap="  ")
    assert len({text_width(line) for line in lines}) == 1, lines
    name_width = len(LONG_2025E[0])
    assert all(_starts(line, line.split()[1]) >= name_width + 2 for line in lines)
    # Right-aligned columns end in the same terminal column on every row.
    assert len({_starts(line, cells[2]) + len(cells[2]) for line, cells in zip(lines, rows, strict=True)}) == 1


def test_summary_table_aligns_with_long_2025e_names_and_big_numbers(tmp_path: Path) -> None:
    results = make_results()
    renamed = dict(zip(list(results.samples)[:3], LONG_2025E, strict=True))
    samples = {renamed.get(n, n): s for n, s in results.samples.items()}
    first = next(iter(samples))
    samples[first] = samples[first].model_copy(update={"events_selected": 123_456_789_012, "expected": 9.87e9})
    summary = format_summary(results.model_copy(update={"samples": samples}), tmp_path).splitlines()
    table = [line for line in summary if line.split(" ")[0] in {"sample", "data", *samples}]
    assert len(table) == 2 + len(samples)
    assert len({text_width(line) for line in table}) == 1, "\n".join(table)
    header = table[0]
    for column in ("selected", "yield", "± stat"):
        end = _starts(header, column) + len(column)
        for line in table[1:]:
            assert line[end - 1] != " " and (end == len(line) or line[end] == " "), (column, line)
