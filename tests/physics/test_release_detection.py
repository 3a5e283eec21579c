"""Which release a file is: its trees and branches first, its name only within that release."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from atlaspipe.errors import CatalogError
from atlaspipe.generate.events import generate_release
from atlaspipe.io.identify import release_of_trees
from atlaspipe.physics.catalog import load_release, recognise_file
from atlaspipe.physics.selection import required_branches
from atlaspipe.pipeline.planning import resolve_inputs

GGH_2025E = "PowhegPythia8EvtGen_NNLOPS_nnlo_30_ggH125_ZZ4l"


@pytest.fixture(scope="module")
def ggh_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A generated ggH file of each release; both are DSID 345060."""
    out = tmp_path_factory.mktemp("ggh")
    new = generate_release("2025e", out / "2025e", samples=[GGH_2025E], with_data=False,
                           events_per_sample_override={GGH_2025E: 400}, min_events=1)
    old = generate_release("2020", out / "2020", samples=["ggH125_ZZ4lep"], with_data=False,
                           events_per_sample_override={"ggH125_ZZ4lep": 400}, min_events=1)
    return new.files[0], old.files[0]


def test_the_tree_decides_the_release() -> None:
    assert release_of_trees({"mini": required_branches("2020", True)}) == "2020"
    assert release_of_trees({"analysis": required_branches("2025e", True)}) == "2025e"
    assert release_of_trees({"events": ["x"]}) is None
    # A file holding both trees is the release whose tree has the branches its analysis reads.
    assert release_of_trees({"mini": ["x"], "analysis": required_branches("2025e", False)}) == "2025e"


def test_a_dsid_only_counts_within_its_release() -> None:
    name = load_release("2025e").sample(GGH_2025E).file_name
    assert "mc_345060." in name
    release, sample = recognise_file(name)
    assert (release.name, sample.name) == ("2025e", GGH_2025E)
    assert load_release("2020").recognise(name) is None
    assert load_release("2020").recognise("mc_345060.anything.4lep.root") is not None


def test_a_generated_2025e_ggh_file_is_2025e(ggh_files: tuple[Path, Path]) -> None:
    new, _ = ggh_files
    release, files = resolve_inputs(None, [str(new.parent)])
    assert release == "2025e"
    assert [f.sample for f in files] == [GGH_2025E]


def test_the_content_wins_over_a_misleading_name(ggh_files: tuple[Path, Path], tmp_path: Path) -> None:
    new, _ = ggh_files
    disguised = tmp_path / "mc_345060.ggH125_ZZ4lep.4lep.root"
    shutil.copy(new, disguised)
    with pytest.raises(CatalogError) as info:
        resolve_inputs(None, [str(disguised)])
    message = str(info.value)
    assert "\n" not in message
    assert "tree 'analysis'" in message
    assert "release 2025e" in message


def test_mixing_releases_is_one_line_naming_both(ggh_files: tuple[Path, Path]) -> None:
    new, old = ggh_files
    with pytest.raises(CatalogError) as info:
        resolve_inputs(None, [str(new), str(old)])
    message = str(info.value)
    assert "\n" not in message
    assert "2025e" in message
    assert "2020" in message


def test_asking_for_the_other_release_names_both(ggh_files: tuple[Path, Path]) -> None:
    new, _ = ggh_files
    with pytest.raises(CatalogError, match=r"release 2025e file .* release 2020 was asked for"):
        resolve_inputs("2020", [str(new)])


def test_an_unreadable_file_is_left_to_planning_to_report(tmp_path: Path) -> None:
    broken = tmp_path / "data_A.4lep.root"
    broken.write_bytes(b"not a root file")
    # Judged by its name: the release is known, and planning names the problem when it opens it.
    assert resolve_inputs(None, [str(broken)])[0] == "2020"
