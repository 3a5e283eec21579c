"""The cutflow: hand-counted on small event sets, and tied to the selection and histograms of a real run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from atlaspipe.generate.embedded import embedded_sample_dir
from atlaspipe.physics.selection import (
    CUTFLOW_STEPS,
    SelectionOptions,
    analyse,
    cutflow,
    notebook_options,
)
from tests.physics.test_selection import MU, E, events_2020, events_2025e
from tests.runs import reference_results

STEP = {name: i for i, name in enumerate(CUTFLOW_STEPS)}


def test_2020_cutflow_counts_each_cut_in_turn() -> None:
    events = events_2020([
        [(50e3, 1, E), (40e3, -1, E), (30e3, 1, MU), (20e3, -1, MU)],  # 2e2mu: pass
        [(50e3, 1, E), (40e3, 1, E), (30e3, 1, MU), (20e3, -1, MU)],  # 2e2mu flavours, charge sum 2
        [(50e3, 1, E), (40e3, -1, E), (30e3, 1, E), (20e3, -1, MU)],  # charge 0, type sum 46: no channel
        [(50e3, 1, MU), (40e3, -1, MU), (30e3, 1, MU), (20e3, -1, MU)],  # 4mu: pass
        [(50e3, 1, E), (40e3, -1, E), (30e3, 1, E)],  # three leptons
    ])
    counts = cutflow(events, "2020", False, 1e-3, SelectionOptions(), (0.0, 1e9))
    # Columns: all, 4e, 4mu, 2e2mu. No trigger or ID in the 2020 files: those cuts pass everything.
    assert counts.raw.tolist() == [
        [5, 0, 1, 2], [5, 0, 1, 2], [4, 0, 1, 2], [4, 0, 1, 2], [3, 0, 1, 1], [2, 0, 1, 1], [2, 0, 1, 1],
    ]
    assert np.array_equal(counts.weighted, counts.raw.astype(float))  # data: unit weights
    # A window that holds none of the passing masses removes them in the last step only.
    assert cutflow(events, "2020", False, 1e-3, SelectionOptions(), (0.0, 1.0)).raw[-1].tolist() == [0, 0, 0, 0]
    # pT thresholds act in the pT step: the 2e2mu event's third lepton (30 GeV) fails a 35 GeV cut.
    strict = cutflow(events, "2020", False, 1e-3, SelectionOptions(lepton_pt_gev=(45.0, 35.0, 35.0)), (0.0, 1e9))
    assert strict.raw[STEP["pt"]].tolist() == [0, 0, 0, 0]


def test_2025e_cutflow_has_trigger_and_identification_steps() -> None:
    good = {"lep_pt": [30.0, 25.0, 16.0, 12.0], "lep_type": [MU, E, MU, E], "lep_charge": [1, -1, -1, 1]}
    events = events_2025e([
        good,
        {**good, "trigE": False},  # no trigger
        {**good, "lep_pt": [30.0, 25.0, 9.0, 12.0]},  # third lepton below 10 GeV
        {**good, "lep_isMediumID": [True, True, False, True]},  # a muon not medium
        {**good, "lep_charge": [1, 1, -1, 1]},  # charge sum
    ])
    counts = cutflow(events, "2025e", False, 1.0, notebook_options("2025e"), (0.0, 1e9))
    assert counts.raw[:, 0].tolist() == [5, 4, 3, 2, 1, 1, 1]
    assert counts.raw[:, 3].tolist() == [5, 4, 3, 2, 1, 1, 1]  # all 2e2mu by flavour
    assert counts.raw[-1].tolist() == [len(analyse(events, "2025e", False, 1.0, notebook_options("2025e"))), 0, 0, 1]


def test_run_cutflow_agrees_with_the_selection_and_the_histograms() -> None:
    results = reference_results([embedded_sample_dir()])
    table = results.cutflow
    assert table is not None
    assert table.steps == CUTFLOW_STEPS and table.columns == ("all", "4e", "4mu", "2e2mu")
    assert set(table.samples) == {*results.samples, *results.data.samples}
    lo, hi = results.config.mass_window_gev
    window = [i for i, edge in enumerate(results.bin_edges[:-1]) if lo <= edge < hi]
    for name, flow in table.samples.items():
        raw = np.asarray(flow.raw)
        assert np.all(np.diff(raw, axis=0) <= 0), name  # cumulative cuts only remove events
        # Every event that passes the type sum is in exactly one channel; before it, in at most one.
        assert np.all(raw[:, 0] >= raw[:, 1:].sum(axis=1)), name
        assert np.array_equal(raw[STEP["type_sum"]:, 0], raw[STEP["type_sum"]:, 1:].sum(axis=1)), name
        if name in results.data.samples:
            counts = results.data.samples[name]
            assert raw[STEP["all"], 0] == counts.events_read
            assert raw[STEP["type_sum"], 0] == counts.events_selected
            continue
        sample = results.samples[name]
        assert raw[STEP["all"], 0] == sample.events_read
        assert raw[STEP["type_sum"], 0] == sample.events_selected
        for col, channel in enumerate(results.channels, start=1):
            histogram = sample.channels[channel]
            with_flow = math.fsum([histogram.underflow, *histogram.values, histogram.overflow])
            assert flow.weighted[STEP["type_sum"]][col] == pytest.approx(with_flow, rel=1e-9), (name, channel)
            in_window = math.fsum(histogram.values[i] for i in window)
            assert flow.weighted[STEP["mass_window"]][col] == pytest.approx(in_window, rel=1e-9), (name, channel)
    data_in_window = sum(np.asarray(f.raw)[STEP["mass_window"], 0] for n, f in table.samples.items()
                         if n in results.data.samples)
    assert data_in_window == sum(results.data.m4l.values[i] for i in window)
