"""Chunks smaller than a file's baskets: the planner says how many times over the file is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot

from atlaspipe.config import analysis_config
from atlaspipe.pipeline.planning import InputFile, file_layout, plan_run, read_amplification


def write_file(path: Path, baskets: list[int]) -> None:
    """A 2020-schema data file whose branches each hold one basket per entry of ``baskets``."""
    import awkward as ak

    with uproot.recreate(path) as handle:
        handle.mktree("mini", {"lep_n": np.int32, "lep_pt": "var * float32"}, counter_name=lambda _: "lep_n")
        for size in baskets:
            counts = np.full(size, 1, dtype=np.int32)
            pt: Any = ak.unflatten(np.full(size, 3e4, dtype=np.float32), counts)
            handle["mini"].extend({"lep_n": counts, "lep_pt": pt})


def plan(path: Path, chunk_size: int) -> Any:
    return plan_run("r", analysis_config(chunk_size=chunk_size), [InputFile("2020", "data_A", str(path), "mini")])


def test_chunks_inside_one_basket_warn_with_the_factor(tmp_path: Path) -> None:
    path = tmp_path / "data_A.4lep.root"
    write_file(path, [10_000])
    small = plan(path, 1_000)
    assert len(small.chunks) == 9  # the last chunk takes the remainder up to the file's end
    [note] = [n for n in small.notes if "read" in n]
    # Nine chunks in one basket: each decompresses the whole basket, so the file is read 9 times.
    assert "9.0× over" in note and "10,000 entries" in note, note
    assert not [n for n in plan(path, 10_000).notes if "× over" in n]


def test_chunks_on_basket_boundaries_read_each_basket_once(tmp_path: Path) -> None:
    path = tmp_path / "data_A.4lep.root"
    write_file(path, [1_000] * 6)
    layout = file_layout(str(path), "mini")
    assert dict(layout.basket_offsets)["lep_pt"] == (0, 1000, 2000, 3000, 4000, 5000, 6000)
    assert read_amplification(layout, [(0, 2000), (2000, 4000), (4000, 6000)], ["lep_pt"]) == 1.0
    # Ranges that straddle baskets decompress the shared basket twice.
    assert read_amplification(layout, [(0, 1500), (1500, 6000)], ["lep_pt"]) == pytest.approx(7000 / 6000)
    assert not [n for n in plan(path, 2_000).notes if "× over" in n]
