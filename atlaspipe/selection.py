"""The H→ZZ*→4ℓ event selection, four-lepton mass and event weights: pure functions on awkward arrays.

Nothing here knows about files, Celery or histograms, so the same code serves the in-process run,
the workers, the generator's cross-checks and the benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np
import numpy.typing as npt
import vector

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

ELECTRON = 11
MUON = 13
CHANNELS: tuple[str, ...] = ("4e", "4mu", "2e2mu")
"""Channel names, in the order of the histograms' channel axis."""
_CHANNEL_OF_TYPE_SUM = {4 * ELECTRON: 0, 4 * MUON: 1, 2 * ELECTRON + 2 * MUON: 2}
ALLOWED_TYPE_SUMS: tuple[int, ...] = tuple(sorted(_CHANNEL_OF_TYPE_SUM))

LEPTON_BRANCHES_2020 = ("lep_pt", "lep_eta", "lep_phi", "lep_E", "lep_charge", "lep_type")
WEIGHT_BRANCHES_2020 = (
    "mcWeight", "scaleFactor_PILEUP", "scaleFactor_ELE", "scaleFactor_MUON", "scaleFactor_LepTRIGGER",
)
LEPTON_BRANCHES_2025E = (
    "lep_pt", "lep_eta", "lep_phi", "lep_e", "lep_charge", "lep_type",
    "lep_isTrigMatched", "lep_isMediumID", "lep_isLooseID", "lep_isLooseIso",
)
EVENT_BRANCHES_2025E = ("trigE", "trigM")
WEIGHT_BRANCHES_2025E = (
    "sum_of_weights", "filteff", "kfac", "xsec", "mcWeight", "ScaleFactor_PILEUP",
    "ScaleFactor_ELE", "ScaleFactor_MUON", "ScaleFactor_LepTRIGGER",
)
JAGGED_BRANCHES = frozenset(LEPTON_BRANCHES_2020 + LEPTON_BRANCHES_2025E)


@dataclass(frozen=True)
class SelectionOptions:
    """Optional cuts. ``lepton_pt_gev`` are the leading three lepton pT thresholds, or None for none."""

    lepton_pt_gev: tuple[float, float, float] | None = None
    sfos_pairing: bool = False


DEFAULT_2025E_PT_GEV = (20.0, 15.0, 10.0)
OPTIONAL_2020_PT_GEV = (30.0, 20.0, 10.0)


@dataclass(frozen=True)
class SelectedEvents:
    """What the histograms need from the events that pass: mass in GeV, weight and channel index."""

    m4l_gev: FloatArray
    weight: FloatArray
    channel: IntArray

    def __len__(self) -> int:
        return len(self.m4l_gev)


def required_branches(schema: str, is_mc: bool) -> list[str]:
    """The branches the analysis reads for ``schema`` ("2020" or "2025e")."""
    if schema == "2020":
        return list(LEPTON_BRANCHES_2020) + (list(WEIGHT_BRANCHES_2020) if is_mc else [])
    branches = list(LEPTON_BRANCHES_2025E) + list(EVENT_BRANCHES_2025E)
    return branches + (list(WEIGHT_BRANCHES_2025E) if is_mc else [])


def _leading(values: ak.Array, n: int, fill: float | int | bool) -> np.ndarray:
    """The first ``n`` entries of each event as an (events, n) array, padded with ``fill``."""
    padded = ak.fill_none(ak.pad_none(values, n, axis=1, clip=True), fill)
    return np.asarray(ak.to_numpy(padded))


def _has_four(events: ak.Array, pt_field: str) -> BoolArray:
    return np.asarray(ak.num(events[pt_field], axis=1) >= 4)


def _pair_flavour_charge(charge: np.ndarray, ltype: np.ndarray) -> tuple[BoolArray, BoolArray]:
    charge_sum_zero = charge.sum(axis=1) == 0
    type_ok = np.isin(ltype.sum(axis=1), ALLOWED_TYPE_SUMS)
    return charge_sum_zero, type_ok


def has_sfos_pairs(charge: np.ndarray, ltype: np.ndarray) -> BoolArray:
    """True where the four leptons split into two same-flavour opposite-sign pairs.

    The notebook's charge and type sums alone accept e⁺e⁺μ⁻μ⁻; this closes that gap.
    """
    result = np.zeros(len(charge), dtype=bool)
    for a, b, c, d in ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2)):
        first = (ltype[:, a] == ltype[:, b]) & (charge[:, a] + charge[:, b] == 0)
        second = (ltype[:, c] == ltype[:, d]) & (charge[:, c] + charge[:, d] == 0)
        result |= first & second
    return result


def four_lepton_mass(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, energy: np.ndarray) -> FloatArray:
    """|p1+p2+p3+p4| for (events, 4) arrays, in the unit of the inputs, computed in float64."""
    leptons: list[Any] = [
        vector.array({
            "pt": pt[:, i].astype(np.float64), "eta": eta[:, i].astype(np.float64),
            "phi": phi[:, i].astype(np.float64), "E": energy[:, i].astype(np.float64),
        })
        for i in range(4)
    ]
    total = leptons[0] + leptons[1] + leptons[2] + leptons[3]
    return np.asarray(total.mass, dtype=np.float64)


def channel_index(ltype: np.ndarray) -> IntArray:
    """0 for 4e, 1 for 4μ, 2 for 2e2μ; -1 for any other flavour content."""
    sums = ltype.sum(axis=1)
    out = np.full(len(sums), -1, dtype=np.int64)
    for type_sum, index in _CHANNEL_OF_TYPE_SUM.items():
        out[sums == type_sum] = index
    return out


def select_2020(events: ak.Array, options: SelectionOptions = SelectionOptions(),
                to_gev: float = 1e-3) -> BoolArray:
    """The 2020 notebook selection on the first four leptons, plus the optional cuts."""
    has_four = _has_four(events, "lep_pt")
    charge = _leading(events["lep_charge"], 4, 0)
    ltype = _leading(events["lep_type"], 4, 0).astype(np.int64)
    charge_ok, type_ok = _pair_flavour_charge(charge, ltype)
    passed = has_four & charge_ok & type_ok
    if options.lepton_pt_gev is not None:
        pt = _leading(events["lep_pt"], 4, 0.0).astype(np.float64) * to_gev
        passed &= _pt_thresholds(pt, options.lepton_pt_gev)
    if options.sfos_pairing:
        passed &= has_sfos_pairs(charge, ltype)
    return np.asarray(passed, dtype=bool)


def _pt_thresholds(pt_descending: np.ndarray, thresholds: tuple[float, float, float]) -> BoolArray:
    first, second, third = thresholds
    return (pt_descending[:, 0] > first) & (pt_descending[:, 1] > second) & (pt_descending[:, 2] > third)


def pt_ordered(events: ak.Array) -> ak.Array:
    """The events with their leptons sorted by decreasing pT.

    The 2025e files store electrons first and do not order by pT; the "leading" leptons of the
    2025e cuts are the highest-pT ones, so every lepton field is reordered by the same index.
    """
    order = ak.argsort(events["lep_pt"], axis=1, ascending=False, stable=True)
    fields = {name: events[name][order] if name.startswith("lep_") else events[name]
              for name in events.fields}
    return ak.zip(fields, depth_limit=1)


def select_2025e(events: ak.Array, options: SelectionOptions = SelectionOptions(DEFAULT_2025E_PT_GEV),
                 to_gev: float = 1.0) -> BoolArray:
    """The 2025e selection: trigger and match, pT 20/15/10 GeV, ID and isolation, then the sums.

    ``events`` must already be pT-ordered (see :func:`pt_ordered`).
    """
    has_four = _has_four(events, "lep_pt")
    trigger = np.asarray(events["trigE"] | events["trigM"], dtype=bool)
    matched = np.asarray(ak.any(events["lep_isTrigMatched"], axis=1), dtype=bool)
    is_muon = events["lep_type"] == MUON
    lepton_ok = ak.where(
        is_muon,
        events["lep_isMediumID"] & events["lep_isLooseIso"],
        events["lep_isLooseID"] & events["lep_isLooseIso"],
    )
    all_ok = np.asarray(ak.all(lepton_ok, axis=1), dtype=bool)
    charge = _leading(events["lep_charge"], 4, 0)
    ltype = _leading(events["lep_type"], 4, 0).astype(np.int64)
    charge_ok, type_ok = _pair_flavour_charge(charge, ltype)
    passed = has_four & trigger & matched & all_ok & charge_ok & type_ok
    if options.lepton_pt_gev is not None:
        pt = _leading(events["lep_pt"], 4, 0.0).astype(np.float64) * to_gev
        passed &= _pt_thresholds(pt, options.lepton_pt_gev)
    if options.sfos_pairing:
        passed &= has_sfos_pairs(charge, ltype)
    return np.asarray(passed, dtype=bool)


def event_weight_2020(events: ak.Array) -> FloatArray:
    """mcWeight × the four scale factors, in float64; the per-sample normalisation comes later."""
    weight = np.ones(len(events), dtype=np.float64)
    for name in WEIGHT_BRANCHES_2020:
        weight *= np.asarray(events[name], dtype=np.float64)
    return weight


def event_weight_2025e(events: ak.Array) -> FloatArray:
    """|filteff·kfac·xsec·mcWeight·SFs| / sum_of_weights per event, in float64; lumi·1000 comes later."""
    weight = 1.0 / np.asarray(events["sum_of_weights"], dtype=np.float64)
    for name in WEIGHT_BRANCHES_2025E[1:]:
        weight = weight * np.abs(np.asarray(events[name], dtype=np.float64))
    return weight


def analyse(events: ak.Array, schema: str, is_mc: bool, to_gev: float,
            options: SelectionOptions | None = None) -> SelectedEvents:
    """Select events and return their m4l [GeV], weight and channel."""
    if schema == "2020":
        opts = options or SelectionOptions()
        passed = select_2020(events, opts, to_gev)
        energy_field = "lep_E"
        weight_fn = event_weight_2020
    elif schema == "2025e":
        events = pt_ordered(events)
        opts = options or SelectionOptions(DEFAULT_2025E_PT_GEV)
        passed = select_2025e(events, opts, to_gev)
        energy_field = "lep_e"
        weight_fn = event_weight_2025e
    else:
        raise ValueError(f"unknown schema {schema!r}")
    chosen = events[passed]
    pt, eta, phi, energy = (
        _leading(chosen[name], 4, 0.0) for name in ("lep_pt", "lep_eta", "lep_phi", energy_field)
    )
    mass = four_lepton_mass(pt, eta, phi, energy) * to_gev
    weight = weight_fn(chosen) if is_mc else np.ones(len(chosen), dtype=np.float64)
    channel = channel_index(_leading(chosen["lep_type"], 4, 0).astype(np.int64))
    return SelectedEvents(m4l_gev=mass, weight=weight, channel=channel)
