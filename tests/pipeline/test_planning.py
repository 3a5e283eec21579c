"""Chunk planning: cluster-aligned ranges that cover every entry exactly once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import uproot

from atlaspipe.config import analysis_config
from atlaspipe.errors import ConfigError, InputError
from atlaspipe.pipeline.planning import InputFile, cut_entries, file_layout, plan_run


@pytest.mark.parametrize(("entries", "clusters", "chunk_size"), [
    (1000, [0, 100, 200, 300, 400, 500, 600, 700, 800, 900], 250),
    (1000, [0, 100, 200, 300, 400, 500, 600, 700, 800, 900], 1),
    (1000, [0], 300),
    (1000, [0, 999], 10_000),
    (7, [0, 3, 5], 2),
    (12345, list(range(0, 12345, 977)), 1000),
])
def test_ranges_cover_every_entry_once(entries: int, clusters: list[int], chunk_size: int) -> None:
    ranges = cut_entries(entries, clusters, chunk_size)
    covered = np.zeros(entries, dtype=int)
    for start, stop in ranges:
        assert start < stop
        covered[start:stop] += 1
    assert covered.min() == 1 and covered.max() == 1
    assert ranges[0][0] == 0 and ranges[-1][1] == entries


def test_ranges_follow_cluster_boundaries_near_the_target() -> None:
    clusters = [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    assert cut_entries(1000, clusters, 250) == [(0, 200), (200, 400), (400, 600), (600, 800), (800, 1000)]
    assert cut_entries(1000, clusters, 270) == [(0, 300), (300, 600), (600, 900), (900, 1000)]
    # A single huge cluster is split inside rather than becoming one giant chunk.
    assert cut_entries(1000, [0], 300) == [(0, 300), (300, 600), (600, 1000)]


def test_invalid_chunk_size_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="chunk size"):
        cut_entries(10, [0], 0)
    with pytest.raises(ConfigError, match="chunk_size"):
        analysis_config(chunk_size=-5)


def write_clustered_file(path: Path, clusters: list[int]) -> None:
    with uproot.recreate(path) as handle:
        tree = handle.mktree("mini", {"x": np.float32})
        for size in clusters:
            tree.extend({"x": np.arange(size, dtype=np.float32)})


def test_plan_reads_cluster_boundaries_and_skips_empty_files(tmp_path: Path) -> None:
    full = tmp_path / "data_A.4lep.root"
    empty = tmp_path / "data_B.4lep.root"
    write_clustered_file(full, [300, 300, 300, 100])
    with uproot.recreate(empty) as handle:
        handle.mktree("mini", {"x": np.float32})
    assert file_layout(str(full), "mini").cluster_starts == (0, 300, 600, 900, 1000)
    files = [InputFile("2020", "data_A", str(full), "mini"), InputFile("2020", "data_B", str(empty), "mini")]
    plan = plan_run("test", analysis_config(chunk_size=500), files)
    assert [(c.entry_start, c.entry_stop) for c in plan.chunks] == [(0, 600), (600, 1000)]
    assert [c.chunk_id for c in plan.chunks] == [0, 1]
    assert any("0 entries" in note for note in plan.notes)


def test_missing_tree_is_named(tmp_path: Path) -> None:
    path = tmp_path / "data_A.4lep.root"
    write_clustered_file(path, [10])
    with pytest.raises(InputError, match="no tree 'analysis'"):
        plan_run("test", analysis_config(), [InputFile("2020", "data_A", str(path), "analysis")])
