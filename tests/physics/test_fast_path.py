"""The numpy fast path gives the same bits as the awkward + vector + hist reference it replaced."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from atlaspipe.config import analysis_config
from atlaspipe.generate.events import generate_release
from atlaspipe.physics.catalog import load_release
from atlaspipe.physics.selection import (
    OPTIONAL_2020_PT_GEV,
    SelectedEvents,
    SelectionOptions,
    _leading,
    analyse,
    four_lepton_mass,
    four_lepton_mass_vector,
    has_sfos_pairs,
    required_branches,
)
from atlaspipe.pipeline.processing import histogram_arrays
from tests.conftest import shared_dir

REAL_2020 = "atlas-opendata/2020/4lep/Data"


def reference_analyse_2020(events: ak.Array, is_mc: bool, options: SelectionOptions) -> SelectedEvents:
    """The selection as first written: awkward padding, a boolean mask on the record, vector."""

    def leading(values: ak.Array, fill: float) -> np.ndarray:
        return np.asarray(ak.to_numpy(ak.fill_none(ak.pad_none(values, 4, axis=1, clip=True), fill)))

    has_four = np.asarray(ak.num(events["lep_pt"], axis=1) >= 4)
    charge = leading(events["lep_charge"], 0)
    ltype = leading(events["lep_type"], 0).astype(np.int64)
    passed = has_four & (charge.sum(axis=1) == 0) & np.isin(ltype.sum(axis=1), (44, 48, 52))
    if options.lepton_pt_gev is not None:
        pt = leading(events["lep_pt"], 0.0).astype(np.float64) * 1e-3
        first, second, third = options.lepton_pt_gev
        passed &= (pt[:, 0] > first) & (pt[:, 1] > second) & (pt[:, 2] > third)
    if options.sfos_pairing:
        passed &= has_sfos_pairs(charge, ltype)
    chosen = events[passed]
    pt, eta, phi, energy = (leading(chosen[n], 0.0) for n in ("lep_pt", "lep_eta", "lep_phi", "lep_E"))
    mass = four_lepton_mass_vector(pt, eta, phi, energy) * 1e-3
    weight = np.ones(len(chosen), dtype=np.float64)
    if is_mc:
        for name in ("mcWeight", "scaleFactor_PILEUP", "scaleFactor_ELE", "scaleFactor_MUON",
                     "scaleFactor_LepTRIGGER"):
            weight *= np.asarray(chosen[name], dtype=np.float64)
    sums = leading(chosen["lep_type"], 0).astype(np.int64).sum(axis=1)
    channel = np.select([sums == 44, sums == 52, sums == 48], [0, 1, 2], -1)
    return SelectedEvents(m4l_gev=mass, weight=weight, channel=channel, rows=np.flatnonzero(passed))


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.all(a.view(np.uint64) == b.view(np.uint64)))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, bool]]:
    """A few thousand events of every 2020 sample, pseudo-data included (4–6 leptons per event)."""
    folder = tmp_path_factory.mktemp("generated")
    release = load_release("2020")
    counts = {s.name: 3000 for s in release.samples if not s.is_data}
    report = generate_release("2020", folder, seed=11, events_per_sample_override=counts)
    return [(path, "/MC/" in str(path)) for path in report.files]


def real_files() -> list[tuple[Path, bool]]:
    folder = shared_dir() / REAL_2020
    return [(path, False) for path in sorted(folder.glob("*.root"))] if folder.exists() else []


def read(path: Path, is_mc: bool) -> ak.Array:
    return uproot.open(path)["mini"].arrays(required_branches("2020", is_mc), library="ak")


@pytest.mark.parametrize("options", [SelectionOptions(), SelectionOptions(OPTIONAL_2020_PT_GEV, sfos_pairing=True)],
                         ids=["notebook", "pt-and-sfos"])
def test_analyse_matches_the_reference_bit_for_bit(generated: list[tuple[Path, bool]],
                                                   options: SelectionOptions) -> None:
    files = generated + real_files()
    selected_total = 0
    for path, is_mc in files:
        events = read(path, is_mc)
        fast = analyse(events, "2020", is_mc, 1e-3, options)
        ref = reference_analyse_2020(events, is_mc, options)
        assert same_bits(fast.m4l_gev, ref.m4l_gev), path
        assert same_bits(fast.weight, ref.weight), path
        assert np.array_equal(fast.channel, ref.channel), path
        edges = analysis_config().bin_edges()
        for got, want in zip(histogram_arrays(fast, edges), histogram_arrays(ref, edges), strict=True):
            assert same_bits(got, want), path
        selected_total += len(fast)
    assert selected_total > 1000


def test_real_data_masses_match_vector() -> None:
    files = real_files()
    if not files:
        pytest.skip(f"{shared_dir() / REAL_2020} is absent")
    for path, _ in files:
        events = read(path, False)
        events = events[ak.num(events["lep_pt"], axis=1) >= 4]
        columns = [_leading(events[n], 4, 0.0) for n in ("lep_pt", "lep_eta", "lep_phi", "lep_E")]
        assert same_bits(four_lepton_mass(*columns), four_lepton_mass_vector(*columns))


def test_mass_matches_vector_on_degenerate_inputs() -> None:
    rng = np.random.default_rng(5)
    pt = rng.uniform(0, 1e5, (64, 4))
    eta = rng.normal(0, 2, (64, 4))
    phi = rng.uniform(-np.pi, np.pi, (64, 4))
    energy = pt * np.cosh(eta)
    pt[0], eta[0], energy[0] = 0.0, 0.0, 0.0  # nothing at all: 0/0 inside vector
    pt[1], phi[1], eta[1] = [10, 10, 0, 0], [0, np.pi, 0, 0], [1, 1, 0, 0]  # back to back, pz left
    pt[2, 0] = np.nan
    eta[3, 1] = np.inf
    energy[4] = 0.0  # spacelike: negative mass squared
    assert same_bits(four_lepton_mass(pt, eta, phi, energy), four_lepton_mass_vector(pt, eta, phi, energy))


def test_leading_pads_like_awkward() -> None:
    values = ak.Array([[1.5, 2.5], [], [1.0, 2.0, 3.0, 4.0, 5.0], [7.0]])
    padded = ak.to_numpy(ak.fill_none(ak.pad_none(values, 4, axis=1, clip=True), 0.0))
    assert np.array_equal(_leading(values, 4, 0.0), padded)
    sliced = values[[2, 0]]  # a ListArray, not ListOffsetArray
    assert np.array_equal(_leading(sliced, 4, -1.0), [[1.0, 2.0, 3.0, 4.0], [1.5, 2.5, -1.0, -1.0]])
