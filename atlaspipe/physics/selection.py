"""The H→ZZ*→4ℓ event selection, four-lepton mass and event weights: pure functions on awkward arrays.

Nothing here knows about files, Celery or histograms, so the same code serves the in-process run,
the workers, the generator's cross-checks and the benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import awkward as ak
import numpy as np
import numpy.typing as npt

from atlaspipe.physics.channels import ALLOWED_TYPE_SUMS, CHANNEL_OF_TYPE_SUM, CHANNELS, MUON

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


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


LeptonOrder = Literal["stored", "pt"]


@dataclass(frozen=True)
class SelectionOptions:
    """Optional cuts. ``lepton_pt_gev`` are the pT thresholds of the first three leptons, or None for none.

    ``lepton_order`` says which leptons are "first": ``"stored"`` takes them as the file stores
    them, as both HZZ notebooks do (2020 files are pT-ordered, 2025e files store electrons first
    and are not); ``"pt"`` reorders every lepton branch by decreasing pT first, so the thresholds
    apply to the leading, sub-leading and third-leading leptons whatever their flavour.
    """

    lepton_pt_gev: tuple[float, float, float] | None = None
    sfos_pairing: bool = False
    lepton_order: LeptonOrder = "stored"


def notebook_options(release: str) -> SelectionOptions:
    """The selection of a release's notebook, from its catalog (``analysis_defaults``)."""
    from atlaspipe.physics.catalog import load_release

    defaults = load_release(release).analysis
    return SelectionOptions(lepton_pt_gev=defaults.lepton_pt_gev, lepton_order=defaults.lepton_order)


OPTIONAL_2020_PT_GEV = (30.0, 20.0, 10.0)


Z_MASS_GEV = 91.1876
"""The Z boson mass (PDG) that picks the Z1 candidate."""


@dataclass(frozen=True)
class SelectedEvents:
    """What the histograms need from the events that pass: mass in GeV, weight and channel index,
    the control distributions' inputs, and ``rows``, where the events are among those given, so
    the cutflow reuses them.

    The lepton arrays are (events, 4), the four leptons in the order the selection used them (as
    stored, or by decreasing pT with ``lepton_order="pt"``). ``m_z1_gev`` and ``m_z2_gev`` come from
    :func:`z_candidates`: NaN for an event whose leptons form no two same-flavour opposite-sign
    pairs (e±e±μ∓μ∓ passes the notebook's sums unless ``sfos_pairing`` is on); such an event has
    no Z candidates and is left out of the Z mass histograms only.
    """

    m4l_gev: FloatArray
    weight: FloatArray
    channel: IntArray
    lepton_pt_gev: FloatArray
    lepton_eta: FloatArray
    lepton_phi: FloatArray
    m_z1_gev: FloatArray
    m_z2_gev: FloatArray
    rows: IntArray

    def __len__(self) -> int:
        return len(self.m4l_gev)


@dataclass(frozen=True)
class ControlVariable:
    """A control distribution of the selected events and its regular binning: ``bins`` in [lo, hi)."""

    name: str
    symbol: str
    """The quantity in matplotlib mathtext, without its unit."""
    unit: str
    """"GeV", or "" for a dimensionless quantity."""
    bins: int
    lo: float
    hi: float

    @property
    def label(self) -> str:
        """The axis title."""
        return f"{self.symbol} [{self.unit}]" if self.unit else self.symbol

    def edges(self) -> list[float]:
        """The bin edges exactly as the histograms' regular axis computes them."""
        import hist

        return [float(edge) for edge in hist.axis.Regular(self.bins, self.lo, self.hi).edges]


_ORDINALS = ("1", "2", "3", "4")
CONTROL_VARIABLES: tuple[ControlVariable, ...] = (
    ControlVariable("m_z1", r"$m_{Z_1}$", "GeV", 16, 40.0, 120.0),
    ControlVariable("m_z2", r"$m_{Z_2}$", "GeV", 12, 0.0, 120.0),
    # The leptons' pT spectra fall off at very different scales, so each gets its own range.
    *(ControlVariable(f"lep{n}_pt", rf"$p_{{T}}^{{\ell{n}}}$", "GeV", bins, 0.0, hi)
      for n, bins, hi in zip(_ORDINALS, (10, 10, 10, 12), (200.0, 150.0, 100.0, 60.0), strict=True)),
    *(ControlVariable(f"lep{n}_eta", rf"$\eta^{{\ell{n}}}$", "", 10, -2.5, 2.5) for n in _ORDINALS),
    *(ControlVariable(f"lep{n}_phi", rf"$\phi^{{\ell{n}}}$", "", 8, -np.pi, np.pi) for n in _ORDINALS),
)
"""The control distributions filled for the selected events, per sample and channel: the Z
candidates' masses and each of the four leptons' pT, η and φ (ℓ1…ℓ4 in the selection's order). The
binning is coarse on purpose: every chunk result carries all of them."""


def control_values(selected: SelectedEvents) -> dict[str, FloatArray]:
    """Each control variable's per-event values (NaN where undefined), by ``CONTROL_VARIABLES`` name."""
    values = {"m_z1": selected.m_z1_gev, "m_z2": selected.m_z2_gev}
    for i, n in enumerate(_ORDINALS):
        values[f"lep{n}_pt"] = selected.lepton_pt_gev[:, i]
        values[f"lep{n}_eta"] = selected.lepton_eta[:, i]
        values[f"lep{n}_phi"] = selected.lepton_phi[:, i]
    return values


def required_branches(schema: str, is_mc: bool) -> list[str]:
    """The branches the analysis reads for ``schema`` ("2020" or "2025e")."""
    if schema == "2020":
        return list(LEPTON_BRANCHES_2020) + (list(WEIGHT_BRANCHES_2020) if is_mc else [])
    branches = list(LEPTON_BRANCHES_2025E) + list(EVENT_BRANCHES_2025E)
    return branches + (list(WEIGHT_BRANCHES_2025E) if is_mc else [])


def _list_parts(values: ak.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(starts, stops, flat content) of a one-level jagged numeric array; None for other layouts."""
    layout = ak.to_layout(values)
    if isinstance(layout, ak.contents.ListOffsetArray):
        offsets = np.asarray(layout.offsets.data)
        starts, stops = offsets[:-1], offsets[1:]
    elif isinstance(layout, ak.contents.ListArray):
        starts, stops = np.asarray(layout.starts.data), np.asarray(layout.stops.data)
    else:
        return None
    content = layout.content
    if not isinstance(content, ak.contents.NumpyArray) or content.data.ndim != 1:
        return None
    return starts, stops, np.asarray(content.data)


def _leading(values: ak.Array, n: int, fill: float | int | bool) -> np.ndarray:
    """The first ``n`` entries of each event as an (events, n) array, padded with ``fill``."""
    parts = _list_parts(values)
    if parts is None:
        padded = ak.fill_none(ak.pad_none(values, n, axis=1, clip=True), fill)
        return np.asarray(ak.to_numpy(padded))
    # Gathering from the flat buffer skips awkward's pad/fill/to_numpy copies, the bulk of the
    # selection's time on large chunks.
    starts, stops, content = parts
    counts = stops - starts
    out = np.full((len(starts), n), fill, dtype=np.result_type(content.dtype, np.min_scalar_type(fill)))
    for k in range(n):
        rows = np.flatnonzero(counts > k)
        out[rows, k] = content[starts[rows] + k]
    return out


def _first_four(values: ak.Array, rows: IntArray, index: IntArray | None = None) -> np.ndarray:
    """The first four entries of the events ``rows``, which must all have at least four.

    ``index`` is a flat-content index from :func:`_gather_index` for these rows, when known.
    """
    parts = _list_parts(values)
    if parts is None:
        return _leading(values, 4, 0)[rows]
    starts, _, content = parts
    return np.asarray(content[_gather_index(starts, rows) if index is None else index])


def _gather_index(starts: np.ndarray, rows: IntArray) -> IntArray:
    return np.asarray(starts[rows, np.newaxis] + np.arange(4), dtype=np.int64)


class _LeptonColumns:
    """Per-lepton branches read as flat buffers, sharing one gather index where their offsets agree.

    Every jagged branch of a tree carries its own copy of the same offsets; comparing them once is
    far cheaper than building an index per branch.
    """

    def __init__(self, events: ak.Array, fields: tuple[str, ...]) -> None:
        self.events = events
        self.parts = {name: _list_parts(events[name]) for name in fields}
        first = self.parts[fields[0]]
        self.starts = None if first is None else first[0]
        self.shared = {
            name for name, part in self.parts.items()
            if part is not None and self.starts is not None
            and (part[0] is self.starts or np.array_equal(part[0], self.starts))
        }

    def counts(self, field: str) -> IntArray:
        part = self.parts[field]
        if part is None:
            return np.asarray(ak.num(self.events[field], axis=1), dtype=np.int64)
        return np.asarray(part[1] - part[0], dtype=np.int64)

    def index(self, rows: IntArray) -> IntArray | None:
        return None if self.starts is None else _gather_index(self.starts, rows)

    def first_four(self, field: str, rows: IntArray, index: IntArray | None) -> np.ndarray:
        part = self.parts[field]
        if part is not None and index is not None and field in self.shared:
            return np.asarray(part[2][index])
        return _first_four(self.events[field], rows)


def _has_four(events: ak.Array, pt_field: str) -> BoolArray:
    return np.asarray(ak.num(events[pt_field], axis=1) >= 4)


def _pair_flavour_charge(charge: np.ndarray, ltype: np.ndarray) -> tuple[BoolArray, BoolArray]:
    charge_sum_zero = charge.sum(axis=1) == 0
    type_ok = np.isin(ltype.sum(axis=1), ALLOWED_TYPE_SUMS)
    return charge_sum_zero, type_ok


PAIRINGS: tuple[tuple[int, int, int, int], ...] = ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2))
"""The three ways to split four leptons into two pairs, (a, b) and (c, d)."""


def sfos_pairings(charge: np.ndarray, ltype: np.ndarray) -> BoolArray:
    """(events, 3): whether each of ``PAIRINGS`` makes two same-flavour opposite-sign pairs."""
    valid = np.zeros((len(charge), len(PAIRINGS)), dtype=bool)
    for k, (a, b, c, d) in enumerate(PAIRINGS):
        first = (ltype[:, a] == ltype[:, b]) & (charge[:, a] + charge[:, b] == 0)
        second = (ltype[:, c] == ltype[:, d]) & (charge[:, c] + charge[:, d] == 0)
        valid[:, k] = first & second
    return valid


def has_sfos_pairs(charge: np.ndarray, ltype: np.ndarray) -> BoolArray:
    """True where the four leptons split into two same-flavour opposite-sign pairs.

    The notebook's charge and type sums alone accept e⁺e⁺μ⁻μ⁻; this closes that gap.
    """
    return np.asarray(sfos_pairings(charge, ltype).any(axis=1))


Momenta = tuple[FloatArray, FloatArray, FloatArray, FloatArray]
"""(px, py, pz, E) in float64, each (4, events): one contiguous row per lepton."""


def four_momenta(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, energy: np.ndarray) -> Momenta:
    """The leptons' Cartesian four-momenta from (events, 4) arrays, computed once per chunk for both
    the four-lepton mass and the Z candidates: numpy's float64 cos and sin (~13 ns a value, no SIMD)
    are most of the selection's cost. Rows per lepton, so the sums read whole rows, not strided
    columns; written in place into one block, since a chunk's temporaries set a worker's peak memory."""
    px, py, pz, e = np.empty((4, 4, len(pt)))
    with np.errstate(all="ignore"):
        # dtype=float64: a float32 input would otherwise pick numpy's float32 loop. Multiplying in
        # place by the float32 pT casts it in small buffers, the same values as a float64 copy.
        np.cos(phi.T, out=px, dtype=np.float64)
        px *= pt.T
        np.sin(phi.T, out=py, dtype=np.float64)
        py *= pt.T
        np.sinh(eta.T, out=pz, dtype=np.float64)
        pz *= pt.T
    e[...] = energy.T
    return px, py, pz, e


def _mass(px: FloatArray, py: FloatArray, pz: FloatArray, e: FloatArray) -> FloatArray:
    """Invariant mass, negative for a spacelike sum (rounding on near-collinear leptons), as
    vector's ``.mass`` gives it. Consumes its arguments: each is a fresh sum, squared in place."""
    with np.errstate(all="ignore"):
        for component in (px, py, pz, e):
            np.multiply(component, component, out=component)
        px += py
        px += pz
        e -= px  # E² − ((px² + py²) + pz²)
        np.absolute(e, out=px)
        np.sqrt(px, out=px)
        return np.asarray(np.copysign(px, e, out=px), dtype=np.float64)


def _pair_mass(momenta: Momenta, a: int, b: int) -> FloatArray:
    """The invariant mass of leptons ``a`` and ``b``."""
    px, py, pz, e = (c[a] + c[b] for c in momenta)
    return _mass(px, py, pz, e)


def z_candidates(momenta: Momenta, charge: np.ndarray, ltype: np.ndarray, *,
                 to_gev: float) -> tuple[FloatArray, FloatArray]:
    """(m_Z1, m_Z2) in GeV of four leptons per event: of the pairings into two same-flavour
    opposite-sign pairs, the pair whose mass is closest to ``Z_MASS_GEV`` is Z1 and the other pair
    of its pairing Z2 (the first in ``PAIRINGS`` order, first pair first, on a tie). NaN for both
    where no pairing is valid. ``momenta`` are :func:`four_momenta` of the four leptons."""
    valid = np.ascontiguousarray(sfos_pairings(charge, ltype).T)
    n = valid.shape[1]
    # The six candidate pairs as rows, in the tie order (pairing k's first pair, then its second);
    # walking the rows keeps every pass contiguous, where an argmin across a 6-wide axis is slow.
    candidates = np.empty((2 * len(PAIRINGS), n))
    closest = np.full(n, np.inf)
    nearest = np.zeros(n, dtype=np.int64)
    distance = np.empty(n)
    better = np.empty(n, dtype=bool)
    for k, (a, b, c, d) in enumerate(PAIRINGS):
        for row, (i, j) in ((2 * k, (a, b)), (2 * k + 1, (c, d))):
            mass = candidates[row]
            np.multiply(_pair_mass(momenta, i, j), to_gev, out=mass)
            np.subtract(mass, Z_MASS_GEV, out=distance)
            np.absolute(distance, out=distance)
            # Strictly nearer: the first of equal distances wins, and a NaN mass never does.
            np.less(distance, closest, out=better)
            better &= valid[k]
            np.copyto(closest, distance, where=better)
            np.putmask(nearest, better, row)
    found = closest < np.inf
    column = np.arange(n)
    m_z1 = np.where(found, candidates[nearest, column], np.nan)
    # nearest ^ 1: the other pair of the same pairing.
    m_z2 = np.where(found, candidates[nearest ^ 1, column], np.nan)
    return m_z1, m_z2


def four_lepton_mass(momenta: Momenta) -> FloatArray:
    """|p1+p2+p3+p4| of :func:`four_momenta`, in the unit of the inputs, computed in float64.

    Summed in Cartesian components, ((p1+p2)+p3)+p4, from the momenta the Z candidates use too.
    ``vector``'s (pt, eta, phi, E) sum, as the HZZ notebook does it, converts back to (pt, eta, phi)
    after each addition: 6 more cos/sin, 3 arctan2 and arcsinh per event, and the same mass to
    about 1e-14 relative (tests/physics/test_fast_path.py compares them on every generated and real
    file, histograms included).
    """
    px, py, pz, e = (((c[0] + c[1]) + c[2]) + c[3] for c in momenta)
    return _mass(px, py, pz, e)


def four_lepton_mass_vector(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, energy: np.ndarray) -> FloatArray:
    """The reference: :func:`four_lepton_mass` through ``vector`` objects, as the HZZ notebook does."""
    import vector

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
    for type_sum, index in CHANNEL_OF_TYPE_SUM.items():
        out[sums == type_sum] = index
    return out


def select_2020(events: ak.Array, options: SelectionOptions = SelectionOptions(),
                to_gev: float = 1e-3) -> BoolArray:
    """The 2020 notebook selection on the first four leptons, plus the optional cuts."""
    passed = np.zeros(len(events), dtype=bool)
    passed[_passing_rows_2020(events, options, to_gev)[0]] = True
    return passed


def _passing_rows_2020(events: ak.Array, options: SelectionOptions, to_gev: float,
                       columns: _LeptonColumns | None = None) -> tuple[IntArray, IntArray | None, IntArray]:
    """Rows of the passing events, with their flat-content gather index and type sums."""
    cols = columns or _LeptonColumns(events, LEPTON_BRANCHES_2020)
    # Only events with four leptons can pass, so the leptons are gathered for those alone.
    rows = np.flatnonzero(cols.counts("lep_pt") >= 4)
    index = cols.index(rows)
    charge = cols.first_four("lep_charge", rows, index)
    ltype = cols.first_four("lep_type", rows, index).astype(np.int64)
    # Column sums rather than .sum(axis=1): numpy reduces a 4-wide axis slowly.
    type_sum = ltype[:, 0] + ltype[:, 1] + ltype[:, 2] + ltype[:, 3]
    passed = (charge[:, 0] + charge[:, 1] + charge[:, 2] + charge[:, 3] == 0) & (_channel_of_sum(type_sum) >= 0)
    if options.lepton_pt_gev is not None:
        pt = cols.first_four("lep_pt", rows, index).astype(np.float64) * to_gev
        passed &= _pt_thresholds(pt, options.lepton_pt_gev)
    if options.sfos_pairing:
        passed &= has_sfos_pairs(charge, ltype)
    keep = np.flatnonzero(passed)
    return (np.asarray(rows[keep], dtype=np.int64), None if index is None else np.asarray(index[keep]),
            np.asarray(type_sum[keep], dtype=np.int64))


_CHANNEL_LOOKUP = np.full(max(ALLOWED_TYPE_SUMS) + 2, -1, dtype=np.int64)
for _sum, _index in CHANNEL_OF_TYPE_SUM.items():
    _CHANNEL_LOOKUP[_sum] = _index


def _channel_of_sum(type_sum: IntArray) -> IntArray:
    """:func:`channel_index` from precomputed type sums, by table lookup (sums out of range map to -1)."""
    return np.asarray(_CHANNEL_LOOKUP[np.clip(type_sum, 0, len(_CHANNEL_LOOKUP) - 1)])


def _pt_thresholds(pt_descending: np.ndarray, thresholds: tuple[float, float, float]) -> BoolArray:
    first, second, third = thresholds
    return (pt_descending[:, 0] > first) & (pt_descending[:, 1] > second) & (pt_descending[:, 2] > third)


def pt_ordered(events: ak.Array) -> ak.Array:
    """The events with their leptons sorted by decreasing pT (the ``lepton_order="pt"`` option).

    Every lepton field is reordered by the same index, so a lepton keeps its flavour, charge and
    flags. The 2025e files store electrons first and not by pT; reordering makes the pT thresholds
    act on the hardest leptons, which is always looser than the notebook's stored order.
    """
    order = ak.argsort(events["lep_pt"], axis=1, ascending=False, stable=True)
    fields = {name: events[name][order] if name.startswith("lep_") and events[name].ndim > 1 else events[name]
              for name in events.fields}
    return ak.zip(fields, depth_limit=1)


def _trigger_and_id_2025e(events: ak.Array) -> tuple[BoolArray, BoolArray]:
    """Per event: an electron or muon trigger fired with a lepton matched to it; every lepton passes
    its ID (medium for muons, loose for electrons) and loose isolation."""
    trigger = (np.asarray(events["trigE"] | events["trigM"], dtype=bool)
               & np.asarray(ak.any(events["lep_isTrigMatched"], axis=1), dtype=bool))
    lepton_ok = ak.where(events["lep_type"] == MUON, events["lep_isMediumID"] & events["lep_isLooseIso"],
                         events["lep_isLooseID"] & events["lep_isLooseIso"])
    return trigger, np.asarray(ak.all(lepton_ok, axis=1), dtype=bool)


def select_2025e(events: ak.Array, options: SelectionOptions, to_gev: float = 1.0) -> BoolArray:
    """The 2025e selection: trigger and match, pT 20/15/10 GeV, ID and isolation, then the sums.

    The pT thresholds and the sums apply to the leptons in the order ``events`` holds them;
    :func:`analyse` reorders them first when ``options.lepton_order`` is ``"pt"``.
    """
    has_four = _has_four(events, "lep_pt")
    trigger, id_iso = _trigger_and_id_2025e(events)
    charge = _leading(events["lep_charge"], 4, 0)
    ltype = _leading(events["lep_type"], 4, 0).astype(np.int64)
    charge_ok, type_ok = _pair_flavour_charge(charge, ltype)
    passed = has_four & trigger & id_iso & charge_ok & type_ok
    if options.lepton_pt_gev is not None:
        pt = _leading(events["lep_pt"], 4, 0.0).astype(np.float64) * to_gev
        passed &= _pt_thresholds(pt, options.lepton_pt_gev)
    if options.sfos_pairing:
        passed &= has_sfos_pairs(charge, ltype)
    return np.asarray(passed, dtype=bool)


def event_weight_2020(events: ak.Array, rows: IntArray | None = None) -> FloatArray:
    """mcWeight × the four scale factors, in float64; the per-sample normalisation comes later.

    With ``rows``, only for those events (the same numbers as indexing the full result).
    """
    weight = np.ones(len(events) if rows is None else len(rows), dtype=np.float64)
    for name in WEIGHT_BRANCHES_2020:
        column = np.asarray(events[name])
        weight *= np.asarray(column if rows is None else column[rows], dtype=np.float64)
    return weight


def event_weight_2025e(events: ak.Array) -> FloatArray:
    """|filteff·kfac·xsec·mcWeight·SFs| / sum_of_weights per event, in float64; lumi·1000 comes later."""
    weight = 1.0 / np.asarray(events["sum_of_weights"], dtype=np.float64)
    for name in WEIGHT_BRANCHES_2025E[1:]:
        weight = weight * np.abs(np.asarray(events[name], dtype=np.float64))
    return weight


def analyse(events: ak.Array, schema: str, is_mc: bool, to_gev: float,
            options: SelectionOptions | None = None) -> SelectedEvents:
    """Select events and return their m4l [GeV], weight, channel and control inputs; without
    ``options``, as the release's notebook does."""
    if options is not None and options.lepton_order == "pt":
        events = pt_ordered(events)
    if schema == "2020":
        cols = _LeptonColumns(events, LEPTON_BRANCHES_2020)
        rows, index, type_sum = _passing_rows_2020(events, options or SelectionOptions(), to_gev, cols)
        pt, eta, phi, energy, charge, ltype = (
            cols.first_four(name, rows, index)
            for name in ("lep_pt", "lep_eta", "lep_phi", "lep_E", "lep_charge", "lep_type"))
        del index  # 32 bytes an event, not needed past the gather
        channel = _channel_of_sum(type_sum)
        weight = event_weight_2020(events, rows) if is_mc else np.ones(len(rows), dtype=np.float64)
    elif schema == "2025e":
        passed = select_2025e(events, options or notebook_options("2025e"), to_gev)
        rows = np.flatnonzero(passed)
        pt, eta, phi, energy, charge, ltype = (
            _first_four(events[name], rows)
            for name in ("lep_pt", "lep_eta", "lep_phi", "lep_e", "lep_charge", "lep_type"))
        channel = channel_index(ltype.astype(np.int64))
        weight = event_weight_2025e(events[rows]) if is_mc else np.ones(len(rows), dtype=np.float64)
    else:
        raise ValueError(f"unknown schema {schema!r}")
    mass, m_z1, m_z2 = _masses(pt, eta, phi, energy, charge, ltype, to_gev=to_gev)
    return SelectedEvents(m4l_gev=mass, weight=weight, channel=channel,
                          lepton_pt_gev=np.asarray(pt, dtype=np.float64) * to_gev,
                          lepton_eta=np.asarray(eta, dtype=np.float64), lepton_phi=np.asarray(phi, dtype=np.float64),
                          m_z1_gev=m_z1, m_z2_gev=m_z2, rows=np.asarray(rows, dtype=np.int64))


def _masses(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, energy: np.ndarray, charge: np.ndarray,
            ltype: np.ndarray, *, to_gev: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """m4l, m_Z1 and m_Z2 in GeV. The four-momenta (128 bytes an event, a chunk's largest array)
    are freed on return, before the selected events' float64 columns are made: held until then,
    they set a process worker's peak memory."""
    momenta = four_momenta(pt, eta, phi, energy)
    mass = four_lepton_mass(momenta) * to_gev
    m_z1, m_z2 = z_candidates(momenta, charge, ltype, to_gev=to_gev)
    return mass, m_z1, m_z2


CUTFLOW_STEPS: tuple[str, ...] = ("all", "trigger", "pt", "id_iso", "charge_sum", "type_sum", "mass_window")
"""The cutflow's cuts, in the order they apply: every event; the trigger (2025e: trigE or trigM and
a trigger-matched lepton); four leptons with the pT thresholds (when the run sets any); every
lepton's ID and isolation (2025e); the charge sum; the type sum (and the SFOS pairing, when asked);
and m4l inside the mass window. Cuts a release's files do not carry (2020: trigger, ID) pass all."""


@dataclass(frozen=True)
class CutflowCounts:
    """Events passing each cut, cumulatively: ``raw[step][c]`` and ``weighted[step][c]`` (event
    weights, before the sample's normalisation) for c = all channels, 4e, 4mu, 2e2mu. Before the
    type sum, an event counts in the channel its first four leptons' flavours make, if any."""

    raw: IntArray
    weighted: FloatArray


def _event_cuts(events: ak.Array, schema: str, is_mc: bool) -> tuple[BoolArray | None, BoolArray | None, FloatArray]:
    """The trigger and ID/isolation cuts of every event (None where the release has no such cut),
    and every event's weight."""
    n = len(events)
    if schema == "2025e":
        trigger, id_iso = _trigger_and_id_2025e(events)
        return trigger, id_iso, event_weight_2025e(events) if is_mc else np.ones(n, dtype=np.float64)
    if schema == "2020":
        return None, None, event_weight_2020(events) if is_mc else np.ones(n, dtype=np.float64)
    raise ValueError(f"unknown schema {schema!r}")


def cutflow(events: ak.Array, schema: str, is_mc: bool, to_gev: float, options: SelectionOptions,
            mass_window_gev: tuple[float, float], *, selected: SelectedEvents | None = None) -> CutflowCounts:
    """The cutflow of ``events``: the same cuts as :func:`analyse`, counted one after another.

    ``selected`` is what :func:`analyse` returned for the same events and options, when the caller
    has it: the four-lepton mass is most of the selection's cost, and is not computed twice.
    """
    if selected is None:
        selected = analyse(events, schema, is_mc, to_gev, options)
    if options.lepton_order == "pt":
        events = pt_ordered(events)
    n = len(events)
    trigger, id_iso, weight = _event_cuts(events, schema, is_mc)
    fields = LEPTON_BRANCHES_2020 if schema == "2020" else LEPTON_BRANCHES_2025E
    cols = _LeptonColumns(events, fields)
    # Only events with four leptons get past the pT step, so their leptons alone are gathered;
    # every later cut is False elsewhere.
    four = np.flatnonzero(cols.counts("lep_pt") >= 4)
    index = cols.index(four)
    charge = cols.first_four("lep_charge", four, index)
    ltype = cols.first_four("lep_type", four, index).astype(np.int64)
    type_sum = ltype[:, 0] + ltype[:, 1] + ltype[:, 2] + ltype[:, 3]
    channel = np.full(n, -1, dtype=np.int64)
    channel[four] = _channel_of_sum(type_sum)
    pt_ok = np.zeros(n, dtype=bool)
    pt_ok[four] = True
    if options.lepton_pt_gev is not None:
        pt_ok[four] = _pt_thresholds(cols.first_four("lep_pt", four, index).astype(np.float64) * to_gev,
                                     options.lepton_pt_gev)
    charge_ok = np.zeros(n, dtype=bool)
    charge_ok[four] = charge[:, 0] + charge[:, 1] + charge[:, 2] + charge[:, 3] == 0
    flavours_ok = _channel_of_sum(type_sum) >= 0
    if options.sfos_pairing:
        flavours_ok &= has_sfos_pairs(charge, ltype)
    type_ok = np.zeros(n, dtype=bool)
    type_ok[four] = flavours_ok
    in_window = np.zeros(n, dtype=bool)
    lo, hi = mass_window_gev
    in_window[selected.rows] = (selected.m4l_gev >= lo) & (selected.m4l_gev < hi)
    # How many cuts each event passes in turn (a cut the release lacks passes all), then one
    # weighted bincount over (depth, channel): a few passes over the events instead of one masked
    # sum per cut and channel.
    depth = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    for cut in (trigger, pt_ok, id_iso, charge_ok, type_ok, in_window):
        if cut is not None:
            alive &= cut
        depth += alive
    columns = 2 + len(CHANNELS)  # "no channel" (-1), the channels, then a spare slot unused
    index = depth * columns + (channel + 1)
    size = len(CUTFLOW_STEPS) * columns
    by_depth_raw = np.bincount(index, minlength=size).reshape(len(CUTFLOW_STEPS), columns)
    by_depth_w = np.bincount(index, weights=weight, minlength=size).reshape(len(CUTFLOW_STEPS), columns)
    # Events passing step s are those whose depth is s or more.
    passing_raw = np.cumsum(by_depth_raw[::-1], axis=0)[::-1]
    passing_w = np.cumsum(by_depth_w[::-1], axis=0)[::-1]
    channels = slice(1, 1 + len(CHANNELS))
    raw = np.column_stack([passing_raw.sum(axis=1), passing_raw[:, channels]]).astype(np.int64)
    weighted = np.column_stack([passing_w.sum(axis=1), passing_w[:, channels]]).astype(np.float64)
    return CutflowCounts(raw=raw, weighted=weighted)
