"""The event generator, checked through the real analysis functions and the real file schema."""

from __future__ import annotations

import argparse
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from atlaspipe import generate
from atlaspipe.catalog import Release, Sample, load_release
from atlaspipe.errors import CatalogError, ConfigError
from atlaspipe.selection import analyse, has_sfos_pairs, required_branches
from tests.conftest import require_shared

EVENTS_2020 = 20_000
EVENTS_2025E = 2_000
REAL_2020_DATA_A = "atlas-opendata/2020/4lep/Data/data_A.4lep.root"


@pytest.fixture(scope="module")
def release_2020() -> Release:
    return load_release("2020")


@pytest.fixture(scope="module")
def generated_2020(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, generate.GenerationReport]:
    out = tmp_path_factory.mktemp("gen2020")
    counts = {s.name: EVENTS_2020 for s in load_release("2020").samples if not s.is_data}
    report = generate.generate_release("2020", out, seed=11, events_per_sample_override=counts)
    return out, report


@pytest.fixture(scope="module")
def generated_2025e(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, generate.GenerationReport]:
    out = tmp_path_factory.mktemp("gen2025e")
    counts = {s.name: EVENTS_2025E for s in load_release("2025e").samples if not s.is_data}
    report = generate.generate_release("2025e", out, seed=5, events_per_sample_override=counts)
    return out, report


def _read(path: Path, release: Release, sample: Sample, branches: list[str] | None = None) -> ak.Array:
    names = branches or required_branches(release.schema, not sample.is_data)
    return uproot.open(path)[release.tree].arrays(names)


def _in_range(m4l: np.ndarray) -> np.ndarray:
    return (m4l >= 80.0) & (m4l < 250.0)


def _yield_2020(out: Path, release: Release, sample: Sample) -> float:
    """The catalog normalisation lumi·1000·xsec/(sumw·red_eff), written out independently here."""
    selected = analyse(_read(out / sample.path, release, sample), "2020", True, release.to_gev)
    assert sample.xsec_pb and sample.sumw and sample.red_eff
    norm = release.luminosity_fb * 1000.0 * sample.xsec_pb / (sample.sumw * sample.red_eff)
    return float(norm * selected.weight[_in_range(selected.m4l_gev)].sum())


def test_2020_yields_reproduce_the_published_ones(generated_2020, release_2020) -> None:
    out, _ = generated_2020
    for sample in release_2020.samples:
        if sample.is_data:
            continue
        expected = release_2020.reference_yields[sample.name]
        assert _yield_2020(out, release_2020, sample) == pytest.approx(expected, rel=0.05), sample.name


def test_2020_weights_are_near_one_apart_from_the_sample_constant(generated_2020, release_2020) -> None:
    out, report = generated_2020
    sample = release_2020.sample("llll")
    events = _read(out / sample.path, release_2020, sample)
    relative = np.asarray(events["mcWeight"]) / report.weight_constants["llll"]
    assert relative.min() > 0.8 and relative.max() < 1.2 and abs(relative.mean() - 1) < 0.01
    for name in ("scaleFactor_PILEUP", "scaleFactor_ELE", "scaleFactor_MUON", "scaleFactor_LepTRIGGER"):
        values = np.asarray(events[name])
        assert values.min() >= 0.9 - 1e-6 and values.max() <= 1.05 + 1e-6 and values.std() > 0.001


def test_higgs_peak_position_and_resolution(generated_2020, release_2020) -> None:
    out, _ = generated_2020
    sample = release_2020.sample("ggH125_ZZ4lep")
    m4l = analyse(_read(out / sample.path, release_2020, sample), "2020", True, 1e-3).m4l_gev
    core = m4l[(m4l > 110) & (m4l < 140)]
    low, median, high = np.percentile(core, [16, 50, 84])
    assert median == pytest.approx(125.0, abs=0.3)
    assert 1.5 <= (high - low) / 2 <= 2.5


def test_zz_background_has_the_z_peak_and_the_zz_threshold(generated_2020, release_2020) -> None:
    out, _ = generated_2020
    sample = release_2020.sample("llll")
    m4l = analyse(_read(out / sample.path, release_2020, sample), "2020", True, 1e-3).m4l_gev
    counts, _ = np.histogram(m4l, bins=np.arange(80.0, 255.0, 5.0))
    z_peak = counts[2:4].mean()      # 90-100 GeV
    valley = counts[10:16].mean()    # 130-160 GeV
    onshell = counts[22:26].mean()   # 190-210 GeV
    assert z_peak > 3 * valley and onshell > 3 * valley


def test_selection_rejects_a_realistic_fraction(generated_2020, release_2020) -> None:
    out, _ = generated_2020
    fractions = {}
    for sample in release_2020.samples:
        events = _read(out / sample.path, release_2020, sample)
        selected = analyse(events, "2020", not sample.is_data, 1e-3)
        fractions[sample.name] = len(selected) / len(events)
    for name in ("Zee", "Zmumu", "ttbar_lep"):
        assert 0.1 < fractions[name] < 0.5, (name, fractions[name])
    for name in ("llll", "ggH125_ZZ4lep", "VBFH125_ZZ4lep"):
        assert 0.9 < fractions[name] < 1.0, (name, fractions[name])
    # The real 2020 data pass 507 of 832 events (61%).
    data = [s.name for s in release_2020.samples if s.is_data]
    assert 0.4 < np.mean([fractions[name] for name in data]) < 0.8


def test_events_give_the_selection_work_to_do(generated_2020, release_2020) -> None:
    out, _ = generated_2020
    sample = release_2020.sample("ttbar_lep")
    events = _read(out / sample.path, release_2020, sample)
    counts = np.asarray(ak.num(events["lep_pt"]))
    assert set(np.unique(counts)) == {4, 5, 6}
    charge = ak.to_numpy(events["lep_charge"][:, :4])
    ltype = ak.to_numpy(events["lep_type"][:, :4]).astype(np.int64)
    assert (np.abs(charge.sum(axis=1)) == 2).any()                 # same-sign content
    assert (np.sort(ltype, axis=1) == [11, 11, 11, 13]).all(axis=1).any()   # 3e1mu
    notebook = (charge.sum(axis=1) == 0) & np.isin(ltype.sum(axis=1), (44, 48, 52))
    assert (notebook & ~has_sfos_pairs(charge, ltype)).any()      # e+e+mu-mu-
    pt = np.asarray(ak.flatten(events["lep_pt"])) * 1e-3
    eta = np.asarray(ak.flatten(events["lep_eta"]))
    assert pt.min() > 7.0 and np.abs(eta).max() < 2.5
    assert ak.all(events["lep_pt"][:, :-1] >= events["lep_pt"][:, 1:])


def test_pseudo_data_is_a_poisson_draw_of_the_expectation(generated_2020, release_2020) -> None:
    out, report = generated_2020
    total_expected = 0.0
    for sample in release_2020.samples:
        if sample.is_data:
            continue
        # The expected recorded count: the normalised weights of all generated events, from the files.
        events = _read(out / sample.path, release_2020, sample)
        weight = np.ones(len(events))
        for name in ("mcWeight", "scaleFactor_PILEUP", "scaleFactor_ELE", "scaleFactor_MUON",
                     "scaleFactor_LepTRIGGER"):
            weight *= np.asarray(events[name], dtype=np.float64)
        assert sample.xsec_pb and sample.sumw
        expected = 10.0 * 1000.0 * sample.xsec_pb / sample.sumw * weight.sum()
        assert expected == pytest.approx(report.expected_data[sample.name], rel=1e-5)
        total_expected += expected
    observed = {s.name: report.events[s.name] for s in release_2020.samples if s.is_data}
    n_data = sum(observed.values())
    assert abs(n_data - total_expected) < 4 * np.sqrt(total_expected)
    shares = np.array([27, 86, 146, 248]) / 507
    expected_per_period = n_data * shares
    chi2 = float((((np.array(list(observed.values())) - expected_per_period) ** 2) / expected_per_period).sum())
    assert chi2 < 20.0
    data_a = release_2020.sample("data_A")
    events = uproot.open(out / data_a.path)["mini"].arrays(["mcWeight", "scaleFactor_ELE", "channelNumber",
                                                             "runNumber"])
    assert ak.all(events["mcWeight"] == 0) and ak.all(events["scaleFactor_ELE"] == 0)
    assert ak.all(events["channelNumber"] == events["runNumber"])


def test_same_seed_same_output_and_other_seed_differs(tmp_path: Path) -> None:
    counts = {"ggH125_ZZ4lep": 700, "Zee": 500}

    def make(seed: int, folder: str) -> dict[str, ak.Array]:
        # The pseudo-data calibrate every MC sample: keep the unwritten ones small too.
        report = generate.generate_release("2020", tmp_path / folder, seed=seed, events=3000,
                                           samples=["ggH125_ZZ4lep", "Zee", "data_B"],
                                           events_per_sample_override=counts, min_events=200)
        return {p.name: uproot.open(p)["mini"].arrays() for p in report.files}

    first, again, other = make(3, "a"), make(3, "b"), make(4, "c")
    assert sorted(first) == ["data_B.4lep.root", "mc_345060.ggH125_ZZ4lep.4lep.root",
                             "mc_361106.Zee.4lep.root"]
    for name, arrays in first.items():
        assert ak.array_equal(arrays, again[name]), name
        assert not ak.array_equal(arrays, other[name]), name


def test_a_sample_does_not_depend_on_which_others_are_written(tmp_path: Path) -> None:
    alone = generate.generate_release("2020", tmp_path / "alone", seed=9, samples=["WH125_ZZ4lep"],
                                      events_per_sample_override={"WH125_ZZ4lep": 600})
    together = generate.generate_release("2020", tmp_path / "together", seed=9, events=3000,
                                         samples=["signal"], events_per_sample_override={"WH125_ZZ4lep": 600})
    path = "MC/mc_341964.WH125_ZZ4lep.4lep.root"
    assert ak.array_equal(uproot.open(tmp_path / "alone" / path)["mini"].arrays(),
                          uproot.open(tmp_path / "together" / path)["mini"].arrays())
    assert len(together.files) == 4 and len(alone.files) == 1


def test_2020_schema_matches_the_real_files(generated_2020, release_2020) -> None:
    real_path = require_shared(REAL_2020_DATA_A)
    real = uproot.open(real_path)["mini"]
    ours = uproot.open(generated_2020[0] / release_2020.sample("data_A").path)["mini"]
    assert set(ours.keys()) <= set(real.keys())
    real_types = real.arrays(ours.keys(), entry_stop=5).type.content
    our_types = ours.arrays(entry_stop=5).type.content
    names = ours.keys()
    for name in names:
        if name == "lep_n":
            # uproot writes counters as int32; the real lep_n is uint32 and the analysis never reads it.
            assert str(real_types.content(name)) == "uint32" and str(our_types.content(name)) == "int32"
            continue
        assert str(our_types.content(name)) == str(real_types.content(name)), name


def test_2025e_files_pass_the_2025e_analysis(generated_2025e) -> None:
    out, report = generated_2025e
    release = load_release("2025e")
    for name, target in (("Sh_2212_llll", 800.0), ("PowhegPythia8EvtGen_NNLOPS_nnlo_30_ggH125_ZZ4l", 26.35)):
        sample = release.sample(name)
        selected = analyse(_read(out / sample.path, release, sample), "2025e", True, 1.0)
        weighted = selected.weight[_in_range(selected.m4l_gev)].sum() * release.luminosity_fb * 1000.0
        assert weighted == pytest.approx(target, rel=0.05), name
    data_selected = 0
    for sample in release.samples:
        if sample.is_data:
            data_selected += len(analyse(_read(out / sample.path, release, sample), "2025e", False, 1.0))
    assert data_selected > 0
    assert len(report.files) == len(release.samples)


def test_2025e_leptons_are_electrons_first_and_not_pt_ordered(generated_2025e) -> None:
    out, _ = generated_2025e
    release = load_release("2025e")
    sample = release.sample("Sh_2212_llll")
    events = _read(out / sample.path, release, sample, ["lep_type", "lep_pt", "lep_n", "mcWeight",
                                                         "sum_of_weights", "xsec"])
    assert ak.all(events["lep_n"] == 4) and ak.all(ak.num(events["lep_pt"]) == 4)
    assert ak.all(events["lep_type"][:, :-1] <= events["lep_type"][:, 1:])
    ordered = ak.all(events["lep_pt"][:, :-1] >= events["lep_pt"][:, 1:], axis=1)
    assert ak.mean(ordered) < 0.5
    assert ak.all(events["sum_of_weights"] == sample.sumw)
    assert ak.all(events["xsec"] == np.float32(sample.xsec_pb))
    data = uproot.open(out / release.sample("data15_periodD").path)["analysis"].arrays(
        ["mcWeight", "xsec", "sum_of_weights", "ScaleFactor_ELE"])
    assert ak.all(data["mcWeight"] == 1) and ak.all(data["xsec"] == 0)
    assert ak.all(data["sum_of_weights"] == 1) and ak.all(data["ScaleFactor_ELE"] == 1)


def test_event_split_follows_natural_proportions_with_a_floor(release_2020) -> None:
    mc = [s for s in release_2020.samples if not s.is_data]
    counts = generate.events_per_sample(release_2020, 2_000_000, mc)
    assert counts["ggH125_ZZ4lep"] > counts["Zmumu"] > counts["llll"] > counts["WH125_ZZ4lep"]
    assert min(counts.values()) >= generate.MIN_EVENTS_PER_SAMPLE
    assert sum(counts.values()) == pytest.approx(2_000_000, rel=0.01)


def test_errors_are_one_line_atlaspipe_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="unknown release '2019'"):
        generate.generate_release("2019", tmp_path)
    with pytest.raises(CatalogError, match="unknown sample 'nosuch'"):
        generate.generate_release("2020", tmp_path, samples=["nosuch"])
    with pytest.raises(ConfigError, match="compression"):
        generate.generate_release("2020", tmp_path, compression="zstd")
    with pytest.raises(ConfigError, match="positive"):
        generate.generate_release("2020", tmp_path, events=0)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    generate.configure_parser(parser)
    args = parser.parse_args(["--release", "2020", "--output", str(tmp_path), "--events", "3000",
                              "--samples", "signal", "--no-data", "--compression", "lz4"])
    assert generate.main(args) == 0
    written = sorted(p.name for p in (tmp_path / "MC").iterdir())
    assert written == ["mc_341947.ZH125_ZZ4lep.4lep.root", "mc_341964.WH125_ZZ4lep.4lep.root",
                       "mc_344235.VBFH125_ZZ4lep.4lep.root", "mc_345060.ggH125_ZZ4lep.4lep.root"]
    assert not (tmp_path / "Data").exists()
    out = capsys.readouterr().out
    assert "events/s" in out and out.count("\n") == 5
