"""Filesets: files of any name, mapped to catalog samples or described with their own cross-section,
give the same numbers as the files under their official names."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from atlaspipe.errors import CatalogError, ConfigError
from atlaspipe.fileset import load_fileset, parse_fileset
from atlaspipe.generate.embedded import embedded_sample_dir
from atlaspipe.model import RunResults
from atlaspipe.physics.catalog import load_release
from atlaspipe.pipeline.planning import resolve_inputs
from tests.runs import reference_results


def _renamed_embedded(folder: Path) -> dict[str, object]:
    """The embedded files copied under arbitrary names, and a fileset naming them.

    ggH is described by its own numbers (the catalog's, typed in) under a new name, data_A as plain
    data under a new name, and the rest through ``catalog`` or coffea's bare list under the catalog name.
    """
    release = load_release("2020")
    fileset: dict[str, object] = {}
    for index, path in enumerate(sorted(embedded_sample_dir().rglob("*.root"))):
        sample = release.recognise(str(path))
        assert sample is not None
        target = folder / f"input-{index:02d}.root"
        shutil.copyfile(path, target)
        if sample.name == "ggH125_ZZ4lep":
            fileset["my_higgs"] = {"files": {target.name: "mini"}, "metadata": {
                "group": sample.group, "xsec": sample.xsec_pb, "sumw": sample.sumw, "red_eff": sample.red_eff}}
        elif sample.name == "data_A":
            fileset["period_a"] = {"files": [target.name], "kind": "data", "luminosity_fb": sample.luminosity_fb}
        elif index % 2:
            fileset[sample.name] = [target.name]
        else:
            fileset[f"alias_{index}"] = {"files": [str(target)], "catalog": sample.name}
    return fileset


def _by_sample(results: RunResults) -> dict[str, object]:
    """Every MC histogram and count under its catalog sample name, and the data."""
    renamed = {"my_higgs": "ggH125_ZZ4lep"}
    out: dict[str, object] = {"data": (results.data.m4l, results.data.channels, results.data.events_selected,
                                       results.data.events_read)}
    for name, sample in results.samples.items():
        out[renamed.get(name, name)] = (sample.m4l, sample.channels, sample.events_selected, sample.events_read,
                                        sample.normalisation)
    return out


def test_renamed_files_through_a_fileset_give_the_official_run_bit_for_bit(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    fileset_file = inputs / "fileset.json"
    fileset_file.write_text(json.dumps(_renamed_embedded(inputs)))
    completed = subprocess.run(
        [sys.executable, "-m", "atlaspipe", "run", "--fileset", str(fileset_file), "--output", str(tmp_path / "out"),
         "--quiet"], capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert completed.returncode == 0, completed.stderr
    [run_dir] = (tmp_path / "out").iterdir()
    results = RunResults.read(run_dir / "results.json")
    reference = reference_results([embedded_sample_dir()])

    assert sorted(Path(f.source).name for f in results.inputs) == sorted(p.name for p in inputs.glob("*.root"))
    assert "my_higgs" in results.samples and results.samples["my_higgs"].group == "signal"
    assert results.data.samples.keys() >= {"period_a"}
    got, want = _by_sample(results), _by_sample(reference)
    aliased = {k for k in results.samples if k.startswith("alias_")}
    # Aliases keep their own name; compare them through their catalog numbers.
    for alias in aliased:
        catalog = json.loads(fileset_file.read_text())[alias]["catalog"]
        got[catalog] = got.pop(alias)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == value, key
    # Every sample not under its catalog name is defined in the run's config, so the run reproduces.
    catalog_names = {s.name for s in load_release("2020").samples}
    renamed = set(json.loads(fileset_file.read_text())) - catalog_names
    assert {d.name for d in results.config.samples} == renamed >= {"my_higgs", "period_a", *aliased}


def test_fileset_toml_with_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "a.root").write_bytes(b"")
    (tmp_path / "fs.toml").write_text('[zz]\nfiles = ["a.root"]\ngroup = "background_zz"\nxsec_pb = 1.5\n'
                                      'sumw = 10.0\n[ggH125_ZZ4lep]\nfiles = ["a.root"]\n')
    fileset = load_fileset(tmp_path / "fs.toml")
    assert fileset["zz"].files == (str(tmp_path / "a.root"),)
    release, files = resolve_inputs(None, fileset=fileset)
    assert release == "2020"
    assert [(f.sample, f.definition is not None) for f in files] == [("zz", True), ("ggH125_ZZ4lep", False)]


@pytest.mark.parametrize(("raw", "message"), [
    ({}, "found no samples"),
    ({"zz": {"files": []}}, "sample 'zz': files"),
    ({"zz": {"files": ["x.root"], "xsec_pb": 1.0}}, "give both xsec_pb and sumw"),
    ({"zz": {"files": ["x.root"], "colour": "red"}}, "sample 'zz': colour"),
])
def test_bad_fileset_is_one_config_error(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_fileset(raw)
    assert "\n" not in str(caught.value)


def test_fileset_samples_are_checked_against_the_release(tmp_path: Path) -> None:
    data = tmp_path / "x.root"
    data.write_bytes(b"")
    with pytest.raises(ConfigError, match="needs xsec_pb and sumw"):
        resolve_inputs(None, fileset=parse_fileset({"zz": [str(data)]}))
    with pytest.raises(CatalogError, match="unknown group 'nope'"):
        resolve_inputs(None, fileset=parse_fileset({"d": {"files": [str(data)], "kind": "data", "group": "nope"}}))
    with pytest.raises(ConfigError, match="catalog sample name"):
        resolve_inputs(None, fileset=parse_fileset({"llll": {"files": [str(data)], "xsec_pb": 1, "sumw": 2}}))
    with pytest.raises(ConfigError, match="data need luminosity_fb"):
        resolve_inputs(None, fileset=parse_fileset({"d": {"files": [str(data)], "kind": "data"}}))
    with pytest.raises(ConfigError, match="not both"):
        resolve_inputs(None, [str(data)], fileset=parse_fileset({"d": {"files": [str(data)], "kind": "data"}}))


def test_a_submitted_fileset_is_fenced_by_the_input_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atlaspipe.api import make_request
    from atlaspipe.errors import InputError
    from atlaspipe.pipeline.stages import AnalysisStages

    outside, inside = tmp_path / "outside", tmp_path / "inside"
    for folder in (outside, inside):
        folder.mkdir()
        shutil.copyfile(embedded_sample_dir() / "Data" / "data_A.4lep.root", folder / "run.root")
    monkeypatch.setenv("ATLASPIPE_INPUT_ROOTS", str(inside))
    fenced = AnalysisStages(fence_inputs=True)
    data = {"kind": "data", "luminosity_fb": 0.5}
    request = make_request(fileset={"x": {"files": [str(outside / "run.root")], **data}}, output=tmp_path)
    with pytest.raises(InputError, match="ATLASPIPE_INPUT_ROOTS"):
        fenced.plan(request)
    request = make_request(fileset={"x": {"files": [str(inside / "run.root")], **data}}, output=tmp_path)
    plan = fenced.plan(request)
    assert [(f.sample, f.source) for f in plan.files] == [("x", str(inside / "run.root"))]
    assert plan.config.samples[0].kind == "data"
    # The request carries the fileset itself: a worker on another machine needs no file of the client's.
    assert type(request).from_json(request.to_json()).fileset == request.fileset
