"""The physics functions on hand-built events whose answers are known."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest

from atlaspipe.config import analysis_config
from atlaspipe.physics.selection import (
    OPTIONAL_2020_PT_GEV,
    SelectedEvents,
    SelectionOptions,
    analyse,
    event_weight_2020,
    event_weight_2025e,
    four_lepton_mass,
    four_momenta,
    notebook_options,
    pt_ordered,
    select_2020,
    select_2025e,
)
from atlaspipe.pipeline.processing import control_arrays, histogram_arrays

E, MU = 11, 13


def events_2020(leptons: list[list[tuple[float, int, int]]]) -> ak.Array:
    """Events from (pt [MeV], charge, type) per lepton; eta/phi spread so masses are finite."""
    rows = []
    for event in leptons:
        rows.append({
            "lep_pt": [p for p, _, _ in event], "lep_eta": [0.1 * i for i in range(len(event))],
            "lep_phi": [1.3 * i for i in range(len(event))], "lep_E": [p * 1.5 for p, _, _ in event],
            "lep_charge": [c for _, c, _ in event], "lep_type": [t for _, _, t in event],
        })
    return ak.Array(rows)


def test_2020_sums_on_first_four_leptons() -> None:
    events = events_2020([
        [(50e3, 1, E), (40e3, -1, E), (30e3, 1, MU), (20e3, -1, MU)],  # 2e2mu: pass
        [(50e3, 1, E), (40e3, 1, E), (30e3, 1, MU), (20e3, -1, MU)],  # charge sum 2: fail
        [(50e3, 1, E), (40e3, -1, E), (30e3, 1, E), (20e3, -1, MU)],  # 3e1mu, type sum 46: fail
        [(50e3, 1, MU), (40e3, -1, MU), (30e3, 1, MU), (20e3, -1, MU)],  # 4mu: pass
        [(50e3, 1, E), (40e3, -1, E), (30e3, 1, E)],  # three leptons: fail, no crash
        [(50e3, 1, E), (40e3, -1, E), (30e3, 1, E), (20e3, -1, E), (10e3, 1, MU)],  # fifth ignored: pass
        [(50e3, 1, E), (40e3, 1, E), (30e3, -1, MU), (20e3, -1, MU)],  # e+e+mu-mu-: notebook passes it
    ])
    assert select_2020(events).tolist() == [True, False, False, True, False, True, True]


def test_sfos_pairing_closes_the_same_sign_gap() -> None:
    events = events_2020([
        [(50e3, 1, E), (40e3, 1, E), (30e3, -1, MU), (20e3, -1, MU)],
        [(50e3, 1, E), (40e3, -1, MU), (30e3, -1, E), (20e3, 1, MU)],
        [(50e3, 1, E), (40e3, -1, E), (30e3, -1, E), (20e3, 1, E)],
    ])
    assert select_2020(events, SelectionOptions(sfos_pairing=True)).tolist() == [False, True, True]


def test_optional_2020_pt_cuts() -> None:
    events = events_2020([
        [(31e3, 1, E), (21e3, -1, E), (11e3, 1, MU), (5e3, -1, MU)],
        [(29e3, 1, E), (21e3, -1, E), (11e3, 1, MU), (5e3, -1, MU)],
        [(31e3, 1, E), (21e3, -1, E), (9e3, 1, MU), (5e3, -1, MU)],
    ])
    assert select_2020(events).tolist() == [True, True, True]
    cut = select_2020(events, SelectionOptions(lepton_pt_gev=OPTIONAL_2020_PT_GEV))
    assert cut.tolist() == [True, False, False]


def test_four_lepton_mass_of_two_back_to_back_pairs() -> None:
    # Four massless leptons of 50 GeV along ±x and ±y: at rest in total, so m4l = ΣE = 200 GeV.
    pt = np.array([[50.0, 50.0, 50.0, 50.0]])
    eta = np.zeros((1, 4))
    phi = np.array([[0.0, math.pi, math.pi / 2, -math.pi / 2]])
    mass = four_lepton_mass(four_momenta(pt, eta, phi, pt.copy()))
    assert mass[0] == pytest.approx(200.0, rel=1e-12)


def test_z_candidates_by_hand() -> None:
    # Massless leptons at eta = 0, so E = pT and a back-to-back pair (phi 0 and -pi) has m = 2 sqrt(pT1 pT2).
    # Event 1, e+e- mu+mu-: m_ee = 2 sqrt(45 * 45) = 90, m_mumu = 2 sqrt(20 * 5) = 20.
    # Event 2, mu+mu- mu+mu-: pairs (0,1) 100, (2,3) 2 sqrt(42.32 * 2) = 18.4, (1,2) 2 sqrt(50 * 42.32) = 92
    #   and (0,3) 2 sqrt(50 * 2) = 20: Z1 is (1,2), nearer 91.19 GeV than (0,1), so Z2 is (0,3).
    # Event 3, e+e+ mu-mu-: passes the notebook's sums but has no same-flavour opposite-sign pair.
    events = ak.Array([
        {"lep_pt": [45e3, 45e3, 20e3, 5e3], "lep_phi": [0.0, -math.pi, math.pi / 2, -math.pi / 2],
         "lep_charge": [1, -1, 1, -1], "lep_type": [E, E, MU, MU]},
        {"lep_pt": [50e3, 50e3, 42.32e3, 2e3], "lep_phi": [0.0, -math.pi, 0.0, -math.pi],
         "lep_charge": [1, -1, 1, -1], "lep_type": [MU, MU, MU, MU]},
        {"lep_pt": [50e3, 40e3, 30e3, 20e3], "lep_phi": [0.0, 1.0, 2.0, 3.0],
         "lep_charge": [1, 1, -1, -1], "lep_type": [E, E, MU, MU]},
    ])
    events = ak.zip({**{f: events[f] for f in events.fields}, "lep_eta": events["lep_pt"] * 0.0,
                     "lep_E": events["lep_pt"]}, depth_limit=1)
    selected = analyse(events, "2020", is_mc=False, to_gev=1e-3)
    assert selected.channel.tolist() == [2, 1, 2]
    assert selected.m_z1_gev[:2] == pytest.approx([90.0, 92.0], rel=1e-9)
    assert selected.m_z2_gev[:2] == pytest.approx([20.0, 20.0], rel=1e-9)
    assert np.isnan(selected.m_z1_gev[2]) and np.isnan(selected.m_z2_gev[2])
    assert selected.lepton_pt_gev[1].tolist() == pytest.approx([50.0, 50.0, 42.32, 2.0], rel=1e-12)
    filled = control_arrays(selected)
    m_z1, _ = filled["m_z1"]  # 16 bins of 5 GeV from 40: [90, 95) is bin 10, 11 with the underflow
    assert m_z1[:, 11].tolist() == [0.0, 1.0, 1.0] and m_z1.sum() == 2  # event 3 is not filled
    m_z2, _ = filled["m_z2"]  # 10 GeV bins from 0: [20, 30) is bin 3 with the underflow
    assert m_z2[:, 3].tolist() == [0.0, 1.0, 1.0] and m_z2.sum() == 2
    assert filled["lep1_pt"][0].sum() == 3  # the leptons of every event are


def test_weights_2020_multiply_in_float64() -> None:
    events = ak.Array({
        "mcWeight": np.array([2.0, -0.5], dtype=np.float32),
        "scaleFactor_PILEUP": np.array([0.9, 1.0], dtype=np.float32),
        "scaleFactor_ELE": np.array([1.1, 1.0], dtype=np.float32),
        "scaleFactor_MUON": np.array([1.0, 0.8], dtype=np.float32),
        "scaleFactor_LepTRIGGER": np.array([0.95, 1.0], dtype=np.float32),
    })
    weight = event_weight_2020(events)
    assert weight.dtype == np.float64
    expected = [float(np.float32(2.0)) * float(np.float32(0.9)) * float(np.float32(1.1)) * float(np.float32(0.95)),
                -0.5 * float(np.float32(0.8))]
    assert weight.tolist() == pytest.approx(expected, rel=1e-15)


def test_weights_2025e_take_absolute_values_over_sum_of_weights() -> None:
    events = ak.Array({
        "sum_of_weights": np.array([200.0]), "filteff": np.array([-0.5], dtype=np.float32),
        "kfac": np.array([1.25], dtype=np.float32), "xsec": np.array([2.0], dtype=np.float32),
        "mcWeight": np.array([-4.0], dtype=np.float32), "ScaleFactor_PILEUP": np.array([1.0], dtype=np.float32),
        "ScaleFactor_ELE": np.array([1.0], dtype=np.float32), "ScaleFactor_MUON": np.array([0.5], dtype=np.float32),
        "ScaleFactor_LepTRIGGER": np.array([1.0], dtype=np.float32),
    })
    assert event_weight_2025e(events).tolist() == pytest.approx([0.5 * 1.25 * 2.0 * 4.0 * 0.5 / 200.0])


def events_2025e(rows: list[dict[str, object]]) -> ak.Array:
    base = {"trigE": True, "trigM": False}
    lepton_defaults = {"lep_isTrigMatched": True, "lep_isMediumID": True, "lep_isLooseID": True,
                       "lep_isLooseIso": True}
    built = []
    for row in rows:
        n = len(row["lep_pt"])  # type: ignore[arg-type]
        event = {**base, **{k: [v] * n for k, v in lepton_defaults.items()}, "lep_eta": [0.2] * n,
                 "lep_phi": [0.0, 1.5, 3.0, 4.5][:n], "lep_e": [2.0 * p for p in row["lep_pt"]]}  # type: ignore[union-attr]
        event.update(row)
        built.append(event)
    return ak.Array(built)


def test_2025e_cuts_apply_to_pt_ordered_leptons() -> None:
    good = {"lep_pt": [12.0, 25.0, 16.0, 30.0], "lep_type": [E, E, MU, MU], "lep_charge": [1, -1, 1, -1]}
    events = events_2025e([
        good,
        {**good, "lep_pt": [12.0, 14.0, 16.0, 30.0]},  # second-leading 16 > 15 still: pass
        {**good, "lep_pt": [9.0, 14.0, 9.5, 30.0]},  # third-leading 9.5 < 10: fail
        {**good, "trigE": False},  # no trigger: fail
        {**good, "lep_isTrigMatched": [False] * 4},  # no trigger match: fail
        {**good, "lep_isMediumID": [True, True, True, False]},  # a muon not medium: fail
        {**good, "lep_isMediumID": [False, False, True, True]},  # electrons need loose, not medium: pass
        {**good, "lep_isLooseIso": [True, False, True, True]},  # an electron not isolated: fail
        {**good, "lep_charge": [1, 1, 1, -1]},  # charge sum: fail
    ])
    ordered = pt_ordered(events)
    assert ak.to_list(ordered.lep_pt[0]) == [30.0, 25.0, 16.0, 12.0]
    assert ak.to_list(ordered.lep_type[0]) == [MU, E, MU, E]
    passed = select_2025e(ordered, notebook_options("2025e")).tolist()
    assert passed == [True, True, False, False, False, False, True, False, False]


def test_2025e_default_cuts_take_the_leptons_as_stored() -> None:
    """The notebook cuts lep_pt[:, 0..2] as stored (electrons first); "pt" reorders first."""
    events = events_2025e([
        {"lep_pt": [12.0, 25.0, 16.0, 30.0], "lep_type": [E, E, MU, MU], "lep_charge": [1, -1, 1, -1]},
        {"lep_pt": [25.0, 16.0, 12.0, 30.0], "lep_type": [E, E, MU, MU], "lep_charge": [1, -1, 1, -1]},
        {"lep_pt": [25.0, 16.0, 8.0, 30.0], "lep_type": [E, E, MU, MU], "lep_charge": [1, -1, 1, -1]},
    ])
    stored = notebook_options("2025e")
    pt_first = SelectionOptions(stored.lepton_pt_gev, lepton_order="pt")
    assert stored.lepton_order == "stored"
    assert select_2025e(events, stored).tolist() == [False, True, False]
    assert select_2025e(pt_ordered(events), stored).tolist() == [True, True, True]
    assert len(analyse(events, "2025e", False, 1.0, stored)) == 1
    assert len(analyse(events, "2025e", False, 1.0, pt_first)) == 3
    assert len(analyse(events, "2025e", False, 1.0)) == 1


def test_2020_pt_order_changes_nothing_on_pt_ordered_files() -> None:
    events = events_2020([
        [(50e3, 1, E), (40e3, -1, E), (30e3, 1, MU), (20e3, -1, MU)],
        [(45e3, 1, MU), (35e3, -1, E), (25e3, 1, E), (6e3, -1, MU)],
        [(50e3, 1, E), (40e3, 1, E), (30e3, 1, MU), (20e3, -1, MU)],
    ])
    cuts = OPTIONAL_2020_PT_GEV
    stored = analyse(events, "2020", False, 1e-3, SelectionOptions(cuts))
    reordered = analyse(events, "2020", False, 1e-3, SelectionOptions(cuts, lepton_order="pt"))
    assert stored.m4l_gev.tolist() == reordered.m4l_gev.tolist()
    assert stored.channel.tolist() == reordered.channel.tolist() == [2, 2]


def test_histogram_edges_are_half_open() -> None:
    edges = analysis_config().bin_edges()
    kinematics = np.zeros((6, 4))
    selected = SelectedEvents(
        m4l_gev=np.array([79.999, 80.0, 84.999, 85.0, 249.999, 250.0]),
        weight=np.ones(6), channel=np.zeros(6, dtype=np.int64), lepton_pt_gev=kinematics, lepton_eta=kinematics,
        lepton_phi=kinematics, m_z1_gev=np.zeros(6), m_z2_gev=np.zeros(6), rows=np.arange(6),
    )
    sumw, _ = histogram_arrays(selected, edges)
    assert sumw[0, 0] == 1  # underflow
    assert sumw[0, 1] == 2  # [80, 85)
    assert sumw[0, 2] == 1  # [85, 90)
    assert sumw[0, -2] == 1  # [245, 250)
    assert sumw[0, -1] == 1  # 250.0 is overflow


def test_analyse_returns_channels_and_unit_weights_for_data() -> None:
    events = events_2020([
        [(50e3, 1, E), (40e3, -1, E), (30e3, 1, E), (20e3, -1, E)],
        [(50e3, 1, MU), (40e3, -1, MU), (30e3, 1, MU), (20e3, -1, MU)],
        [(50e3, 1, E), (40e3, -1, E), (30e3, 1, MU), (20e3, -1, MU)],
    ])
    selected = analyse(events, "2020", is_mc=False, to_gev=1e-3)
    assert selected.channel.tolist() == [0, 1, 2]
    assert selected.weight.tolist() == [1.0, 1.0, 1.0]
    assert np.all(selected.m4l_gev > 0)
