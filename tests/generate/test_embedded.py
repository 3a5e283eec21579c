"""The shipped embedded sample: present, small, and exactly what the generator makes."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import pytest
import uproot

from atlaspipe.generate import embedded

MAX_BYTES = 5 * 1024 * 1024


def test_shipped_files_exist_and_are_small() -> None:
    files = embedded.embedded_files()
    assert embedded.embedded_sample_dir() == embedded.shipped_dir()
    assert len(files) == 12 and all(path.is_file() for path in files)
    assert sum(path.stat().st_size for path in files) <= MAX_BYTES


def test_shipped_files_equal_a_fresh_regeneration(tmp_path: Path) -> None:
    report = embedded.generate_embedded(tmp_path)
    for fresh in report.files:
        shipped = embedded.shipped_dir() / fresh.relative_to(tmp_path)
        ours, theirs = uproot.open(shipped)["mini"], uproot.open(fresh)["mini"]
        assert ours.keys() == theirs.keys(), shipped.name
        assert ak.array_equal(ours.arrays(), theirs.arrays()), shipped.name


def test_missing_shipped_files_are_regenerated_into_the_cache(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "shipped_dir", lambda: tmp_path / "stripped")
    monkeypatch.setenv("ATLASPIPE_CACHE_DIR", str(tmp_path / "cache"))
    folder = embedded.embedded_sample_dir()
    assert folder == tmp_path / "cache" / "embedded" / "2020"
    assert all(path.is_file() for path in embedded.embedded_files())
    assert not [p for p in folder.parent.iterdir() if p.name.startswith("embedded-")]
