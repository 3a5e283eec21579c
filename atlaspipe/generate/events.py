"""``atlaspipe generate``: a seeded, vectorised generator of 4-lepton events in the real ROOT schemas.

No ATLAS MC file can be had offline, so this writes look-alikes of the public files: the 2020
``mini`` tree (MeV, leptons pT-ordered, at least four leptons, every event with a fired single-lepton
trigger and a leading lepton of at least 25 GeV, as in the real 4lep skim) and the 2025e ``analysis``
tree (GeV, exactly four leptons, electrons first and not pT-ordered), with the same file names and
folder layout as the public servers. The physics and its sources are in docs/physics.md.

Events. Every process is a mixture of components (``models.json``). A component draws
m4l from its spectrum (Breit–Wigner, shifted-Gamma, power-law, log-uniform terms), splits it into
two lepton pairs of chosen masses (Z1 on shell and a Z2 that is off shell, a Z or a γ*, or a
non-prompt pair from heavy-flavour decays), decays each pair isotropically and boosts the system
with a Gamma-distributed pT and a Gaussian rapidity. The detector then adds final-state radiation
(a log-uniform energy loss of some prompt leptons, which gives the peaks their low-mass tail),
momentum smearing, electron charge flips, the release's |η| acceptance, single-lepton trigger
decisions, and (2025e) ID and isolation flags whose rates differ for prompt and non-prompt leptons.

Weights. Every MC event gets scale factors near 1 and ``mcWeight = C_s × (1 + small fluctuation)``.
The per-sample constant ``C_s`` makes the sample's yield after the release's notebook selection
(run by :func:`atlaspipe.physics.selection.analyse` on the branches as written) equal its target in the
release's calibration range: for 2020 the notebook's printed per-sample yields over all m4l, for
2025e the group yields read from the notebook's figure in 80–250 GeV. So the yield is right at any
event count. ``--events N`` splits N over the samples in "natural" proportions (the counts at
which the targets come out with the real samples' typical weight), with a floor per sample.

Pseudo-data: per data period, a Poisson draw for every MC sample of its expected recorded count
(its normalised sum of weights over all written events) scaled to the period's luminosity, plus
the release's data-only components (2025e: the non-prompt multi-lepton events that fill the real
exactly4lep skim and that no MC sample of the release describes), generated afresh as unweighted
events and shuffled within the file.

Determinism: every (sample, purpose, batch) and every (sample, period) has its own numpy
``SeedSequence`` keyed by the seed, the release and stable hashes of the names, and batches have
fixed boundaries, so the output depends only on (release, seed, event counts) — not on sample
order or on which samples and periods are written.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import numpy.typing as npt
import uproot

from atlaspipe.errors import CatalogError, ConfigError
from atlaspipe.physics.catalog import GENERATED_TITLE, RELEASES, Release, Sample, _raw_catalog, load_release
from atlaspipe.physics.selection import analyse, event_weight_2020, event_weight_2025e, notebook_options

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]
Columns = dict[str, npt.NDArray[Any]]
Params = dict[str, Any]

BATCH_EVENTS = 500_000
"""Events per generated batch and per ``TTree.extend`` call (one TTree cluster each).

Part of the random-stream layout: changing it changes the output for a given seed.
"""
DEFAULT_EVENTS = 1_000_000
DEFAULT_SEED = 1
MIN_EVENTS_PER_SAMPLE = 200
_PASSING_FLOOR = 50
MAX_LEPTONS = 6
SUBCHUNK = 100_000
"""Largest piece generated at once; fixed because it is part of the random-stream layout too."""
CACHE_EVENTS = 1_000_000
"""Samples up to this many events keep their batches in memory between calibration and writing."""
ELECTRON, MUON = 11, 13
_MASS = {ELECTRON: 0.000511, MUON: 0.10566}
_Z_MASS, _Z_WIDTH = 91.1876, 2.4952
_MC_RUN_NUMBER = 284500
_PURPOSE_MC, _PURPOSE_DATA, _PURPOSE_COUNT, _PURPOSE_SHUFFLE = 0, 1, 2, 3
COMPRESSIONS = {"zlib": lambda: uproot.ZLIB(1), "lz4": lambda: uproot.LZ4(1)}

_TYPES_2020: dict[str, str] = {
    "runNumber": "int32", "eventNumber": "int32", "channelNumber": "int32", "mcWeight": "float32",
    "scaleFactor_PILEUP": "float32", "scaleFactor_ELE": "float32", "scaleFactor_MUON": "float32",
    "scaleFactor_PHOTON": "float32", "scaleFactor_TAU": "float32", "scaleFactor_BTAG": "float32",
    "scaleFactor_LepTRIGGER": "float32", "trigE": "bool", "trigM": "bool",
    "lep_pt": "var * float32", "lep_eta": "var * float32", "lep_phi": "var * float32",
    "lep_E": "var * float32", "lep_charge": "var * int32", "lep_type": "var * uint32",
    "lep_isTightID": "var * bool", "lep_ptcone30": "var * float32", "lep_etcone20": "var * float32",
    "met_et": "float32", "met_phi": "float32",
}
_TYPES_2025E: dict[str, str] = {
    "num_events": "float64", "sum_of_weights": "float64", "sum_of_weights_squared": "float64",
    "ScaleFactor_PILEUP": "float32", "mcWeight": "float32", "xsec": "float32", "filteff": "float32",
    "kfac": "float32", "channelNumber": "uint32", "eventNumber": "uint64", "runNumber": "uint32",
    "trigE": "bool", "trigM": "bool", "ScaleFactor_ELE": "float32", "ScaleFactor_MUON": "float32",
    "ScaleFactor_LepTRIGGER": "float32",
    "lep_type": "var * int32", "lep_pt": "var * float32", "lep_eta": "var * float32",
    "lep_phi": "var * float32", "lep_e": "var * float32", "lep_charge": "var * int32",
    "lep_isTightID": "var * bool", "lep_isMediumID": "var * bool", "lep_isLooseID": "var * bool",
    "lep_isTightIso": "var * bool", "lep_isLooseIso": "var * bool", "lep_isTrigMatched": "var * bool",
    "met": "float32", "met_phi": "float32",
}
TREE_TYPES: dict[str, dict[str, str]] = {"2020": _TYPES_2020, "2025e": _TYPES_2025E}
"""The branches written per release (plus the int32 counter ``lep_n`` uproot adds)."""


@dataclass
class GenerationReport:
    """What :func:`generate_release` wrote and how fast."""

    release: str
    output_dir: Path
    seed: int
    files: list[Path] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)
    weight_constants: dict[str, float] = field(default_factory=dict)
    expected_data: dict[str, float] = field(default_factory=dict)
    """Per MC sample, the expected number of its events recorded over the whole release."""
    seconds: float = 0.0

    @property
    def total_events(self) -> int:
        return sum(self.events.values())

    @property
    def events_per_second(self) -> float:
        return self.total_events / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- parameters


@cache
def _parameters() -> Params:
    text = resources.files("atlaspipe.generate").joinpath("models.json").read_text("utf-8")
    loaded: Params = json.loads(text)
    return loaded


def _release_parameters(release: str) -> Params:
    params: Params = _parameters()["releases"][release]
    return params


@cache
def _num_events_2025e() -> dict[int, float]:
    """nEvents per DSID; the Sample dataclass does not carry it, but sum_of_weights_squared needs it."""
    return {int(d["dataset_number"]): float(d["nEvents"]) for d in _raw_catalog("2025e")["datasets"]}


@dataclass(frozen=True)
class DataPeriod:
    """A data period of a release: its luminosity and run range (catalog ``data`` entries)."""

    name: str
    luminosity_fb: float
    runs: tuple[int, int]


@cache
def data_periods(release: str) -> tuple[DataPeriod, ...]:
    """The release's data periods with the luminosities and run ranges the catalog gives them."""
    runs = {d["name"]: (int(d["runs"][0]), int(d["runs"][1])) for d in _raw_catalog(release)["data"]}
    return tuple(DataPeriod(s.name, float(s.luminosity_fb or 0.0), runs[s.name])
                 for s in load_release(release).samples if s.is_data)


def calibration_range(release: str) -> tuple[float, float] | None:
    """The m4l range [GeV] the targets refer to: None for all m4l."""
    span = _release_parameters(release)["calibration_m4l_gev"]
    return None if span is None else (float(span[0]), float(span[1]))


def _sample_parameters(release: Release, sample: Sample) -> Params:
    try:
        entry: Params = _release_parameters(release.name)["samples"][sample.name]
    except KeyError:
        raise ConfigError(f"models.json has no model for sample {sample.name}") from None
    return entry


def _model(name: str) -> Params:
    model: Params = _parameters()["models"][name]
    return model


def _sample_model(release: Release, sample: Sample) -> Params:
    return _model(_sample_parameters(release, sample)["model"])


def target_yield(release: Release, sample: Sample) -> float:
    """The weighted yield after the notebook selection, in :func:`calibration_range`, of ``sample``."""
    if release.name == "2020":
        return release.reference_yields[sample.name]
    return float(_sample_parameters(release, sample)["target_yield"])


def _normalisation(release: Release, sample: Sample) -> float:
    return release.normalisation(sample, release.luminosity_fb)


def _efficiency(release: Release, sample: Sample) -> float:
    return float(_sample_parameters(release, sample)["efficiency"])


def natural_weight(release: Release, sample: Sample) -> float:
    """The typical mcWeight of the real sample: 1 for 2020, sum_of_weights/nEvents for 2025e."""
    if release.name == "2020" or sample.dsid is None or sample.sumw is None:
        return 1.0
    return sample.sumw / _num_events_2025e().get(sample.dsid, sample.sumw)


def _yield_per_unit_weight(release: Release, sample: Sample) -> float:
    """What one event with mcWeight 1 and unit scale factors adds to the yield, as the analysis weighs it."""
    pieces = [{name: np.ones(1) for name in ("fluctuation", "importance", "sf_pileup", "sf_ele", "sf_muon",
                                             "sf_trigger")}]
    weights = _weight_branches(release.name, pieces, sample, 1.0)
    per_event = _EVENT_WEIGHT[release.name](ak.Array(weights))
    return _normalisation(release, sample) * float(per_event[0])


def natural_events(release: Release, sample: Sample) -> float:
    """Events at which the target yield comes out with the natural mcWeight (given the efficiency)."""
    expected = target_yield(release, sample) / _yield_per_unit_weight(release, sample)
    return expected / _efficiency(release, sample) / natural_weight(release, sample)


def events_per_sample(release: Release, events: int, samples: Sequence[Sample],
                      minimum: int = MIN_EVENTS_PER_SAMPLE) -> dict[str, int]:
    """``events`` split over the MC ``samples`` in natural proportions, at least ``minimum`` each."""
    mc = [s for s in samples if not s.is_data]
    natural = {s.name: natural_events(release, s) for s in mc}
    total = sum(natural.values())
    # Rarely-passing samples need more events to be calibrated at all.
    floor = {s.name: max(minimum, int(np.ceil(_PASSING_FLOOR / _efficiency(release, s)))) for s in mc}
    return {name: max(floor[name], round(events * value / total)) for name, value in natural.items()}


# --------------------------------------------------------------------------- random streams


def _key(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _rng(seed: int, release: str, name: str, purpose: int, index: int) -> np.random.Generator:
    """An independent stream per (sample, purpose, batch), whatever else is generated."""
    sequence = np.random.SeedSequence(seed, spawn_key=(_key(release), _key(name), purpose, index))
    return np.random.default_rng(sequence)


def _batch_sizes(n_events: int) -> list[int]:
    full, rest = divmod(n_events, BATCH_EVENTS)
    return [BATCH_EVENTS] * full + ([rest] if rest else [])


# --------------------------------------------------------------------------- kinematics


@dataclass
class _Leptons:
    """Up to MAX_LEPTONS lepton slots per event; ``p4`` is (events, slots, [E, px, py, pz]) in GeV."""

    p4: F64
    ltype: I64
    charge: I64
    prompt: Bool
    present: Bool
    importance: F64
    """Per event: natural over sampled probability of its component and spectrum terms (1 unbiased)."""

    def __len__(self) -> int:
        return len(self.ltype)

    def take(self, index: npt.NDArray[Any] | slice) -> _Leptons:
        return _Leptons(self.p4[index], self.ltype[index], self.charge[index], self.prompt[index],
                        self.present[index], self.importance[index])

    @staticmethod
    def empty(n: int) -> _Leptons:
        return _Leptons(np.zeros((n, MAX_LEPTONS, 4)), np.full((n, MAX_LEPTONS), ELECTRON),
                        np.zeros((n, MAX_LEPTONS), dtype=np.int64),
                        np.zeros((n, MAX_LEPTONS), dtype=bool), np.zeros((n, MAX_LEPTONS), dtype=bool),
                        np.ones(n))


_LEPTON_FIELDS = ("p4", "ltype", "charge", "prompt", "present", "importance")


def _concat(parts: list[_Leptons]) -> _Leptons:
    return _Leptons(*(np.concatenate([getattr(p, f) for p in parts]) for f in _LEPTON_FIELDS))


def _mass_of(ltype: I64) -> F64:
    return np.where(ltype == MUON, _MASS[MUON], _MASS[ELECTRON])


def _p4(pt: F64, eta: F64, phi: F64, mass: F64) -> F64:
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    energy = np.sqrt(px**2 + py**2 + pz**2 + mass**2)
    return np.stack([energy, px, py, pz], axis=-1)


def _breit_wigner(rng: np.random.Generator, n: int, lo: float | F64, hi: float | F64,
                  mass: float = _Z_MASS, width: float = _Z_WIDTH) -> F64:
    """Masses from a Breit–Wigner truncated to [lo, hi] by inverting its CDF."""
    a = np.arctan(2.0 * (np.asarray(lo) - mass) / width)
    b = np.arctan(2.0 * (np.asarray(hi) - mass) / width)
    return np.asarray(mass + 0.5 * width * np.tan(rng.uniform(a, b, n)), dtype=np.float64)


def _log_uniform(rng: np.random.Generator, n: int, lo: float | F64, hi: float | F64) -> F64:
    return np.asarray(np.exp(rng.uniform(np.log(lo), np.log(hi), n)), dtype=np.float64)


def _spectrum_term(rng: np.random.Generator, n: int, term: Params) -> F64:
    shape = term["shape"]
    if shape == "fixed":
        return np.full(n, float(term["value"]))
    if shape == "breit_wigner":
        return _breit_wigner(rng, n, term["lo"], term["hi"], term["mass"], term["width"])
    if shape == "gamma":
        return np.asarray(term["offset"] + rng.gamma(term["shape_k"], term["scale"], n), dtype=np.float64)
    if shape == "power_law":
        # pdf ∝ m^-index above lo, by inverting the CDF
        return np.asarray(term["lo"] * rng.random(n) ** (-1.0 / (term["index"] - 1.0)), dtype=np.float64)
    if shape == "log_uniform":
        return _log_uniform(rng, n, term["lo"], term["hi"])
    if shape == "uniform":
        return rng.uniform(term["lo"], term["hi"], n)
    raise ConfigError(f"models.json: unknown spectrum shape {shape!r}")


def _biased_choice(rng: np.random.Generator, n: int, weights: Sequence[float], biases: Sequence[float],
                   biased: bool) -> tuple[I64, F64]:
    """Indices drawn with probability ∝ weight (× bias when ``biased``) and each draw's importance weight.

    Biased MC oversamples some terms, as real MC productions oversample rare regions; the
    importance weight (natural over sampled probability) goes into mcWeight, so weighted sums keep
    the natural mixture. Pseudo-data are never biased.
    """
    natural = np.asarray(weights, dtype=np.float64)
    natural = natural / natural.sum()
    sampled = natural * np.asarray(biases, dtype=np.float64) if biased else natural
    sampled = sampled / sampled.sum()
    which = _choice(rng, n, sampled)
    return which, np.asarray((natural / sampled)[which], dtype=np.float64)


def _spectrum(rng: np.random.Generator, n: int, terms: list[Params], biased: bool = False) -> F64:
    """Values from a weighted mixture of spectrum terms."""
    return _biased_spectrum(rng, n, terms, biased)[0]


def _biased_spectrum(rng: np.random.Generator, n: int, terms: list[Params], biased: bool) -> tuple[F64, F64]:
    if len(terms) == 1:
        return _spectrum_term(rng, n, terms[0]), np.ones(n)
    which, importance = _biased_choice(rng, n, [t["weight"] for t in terms],
                                       [t.get("mc_bias", 1.0) for t in terms], biased)
    out = np.empty(n)
    for index, term in enumerate(terms):
        chosen = which == index
        out[chosen] = _spectrum_term(rng, int(chosen.sum()), term)
    return out, importance


def _two_body(rng: np.random.Generator, mother: F64, m_a: F64, m_b: F64) -> tuple[F64, F64]:
    """Isotropic two-body decay in the mother's rest frame."""
    n = len(mother)
    lam = (mother**2 - (m_a + m_b) ** 2) * (mother**2 - (m_a - m_b) ** 2)
    p = np.sqrt(np.clip(lam, 0.0, None)) / (2.0 * mother)
    cos_t = rng.uniform(-1.0, 1.0, n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    a, b = np.empty((n, 4)), np.empty((n, 4))
    a[:, 0] = np.sqrt(p**2 + m_a**2)
    b[:, 0] = np.sqrt(p**2 + m_b**2)
    a[:, 1] = p * sin_t * np.cos(phi)
    a[:, 2] = p * sin_t * np.sin(phi)
    a[:, 3] = p * cos_t
    np.negative(a[:, 1:], out=b[:, 1:])
    return a, b


def _dot3(a: F64, b: F64) -> F64:
    """Sum over the last axis of length 3, written out: numpy's reduce is slow on such short axes."""
    return np.asarray(a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2])


def _boost(p4: F64, beta: F64) -> F64:
    """Lorentz boost of (…, 4) vectors by velocity ``beta`` (events, 3), broadcast over slots."""
    while beta.ndim < p4.ndim:
        beta = beta[:, None, :]
    b2 = _dot3(beta, beta)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = _dot3(beta, p4[..., 1:])
    g2 = np.divide(gamma - 1.0, b2, out=np.zeros_like(b2), where=b2 > 0)
    out = np.empty(np.broadcast_shapes(p4.shape, (*beta.shape[:-1], 4)))
    out[..., 0] = gamma * (p4[..., 0] + bp)
    np.multiply((g2 * bp + gamma * p4[..., 0])[..., None], beta, out=out[..., 1:])
    out[..., 1:] += p4[..., 1:]
    return out


def _system_velocity(rng: np.random.Generator, mass: F64, system: Params) -> F64:
    """Lab velocity of a system of ``mass`` with a Gamma-distributed pT and Gaussian rapidity."""
    n = len(mass)
    pt = rng.gamma(system["pt_shape"], system["pt_scale"], n)
    rapidity = np.clip(rng.normal(0.0, system["y_sigma"], n), -4.0, 4.0)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    mt = np.sqrt(mass**2 + pt**2)
    energy = mt * np.cosh(rapidity)
    velocity: F64 = np.stack([pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(rapidity)], axis=-1) / energy[:, None]
    return velocity


def _choice(rng: np.random.Generator, n: int, probabilities: Sequence[float]) -> I64:
    p = np.asarray(probabilities, dtype=np.float64)
    return np.asarray(rng.choice(len(p), size=n, p=p / p.sum()), dtype=np.int64)


def _flavour(rng: np.random.Generator, n: int, electron_probability: float) -> I64:
    return np.where(rng.random(n) < electron_probability, ELECTRON, MUON).astype(np.int64)


def _sign(rng: np.random.Generator, n: int) -> I64:
    return np.where(rng.random(n) < 0.5, -1, 1).astype(np.int64)


# ---- pair masses and lepton labels per component kind; every kind returns (m_a, m_b) with m_a + m_b < m4l


def _higgs_masses(rng: np.random.Generator, m4l: F64, _comp: Params) -> tuple[F64, F64]:
    """H→ZZ*: Z1 from the Z line shape, Z2 in what is left; no parameters (``_comp`` keeps the table's signature)."""
    m1 = _breit_wigner(rng, len(m4l), 50.0, np.minimum(106.0, m4l - 12.0))
    m2 = 10.0 + (m4l - m1 - 10.5) * rng.beta(3.0, 1.3, len(m4l))
    return m1, m2


def _z_to_4l_masses(rng: np.random.Generator, m4l: F64, comp: Params) -> tuple[F64, F64]:
    """Z→ℓℓγ*→4ℓ: a soft γ* (log-uniform mass) and the rest of the Z mass in the other pair."""
    lo, hi = comp["m_z2_gev"]
    m2 = _log_uniform(rng, len(m4l), lo, np.maximum(lo * 1.01, np.minimum(hi, 0.4 * m4l)))
    m1 = (m4l - m2) * rng.uniform(0.55, 0.98, len(m4l))
    return m1, m2


def _zz_masses(rng: np.random.Generator, m4l: F64, comp: Params) -> tuple[F64, F64]:
    """Z(*) Z(*)/γ*: Z1 from the Z line shape, Z2 a γ* (log-uniform) or the Z line shape in what is left."""
    n = len(m4l)
    m2_lo, m1_lo = float(comp["m_z2_min_gev"]), float(comp["m_z1_min_gev"])
    m1 = _breit_wigner(rng, n, m1_lo, np.clip(m4l - m2_lo - 0.5, m1_lo + 1.0, 120.0))
    room = np.maximum(m4l - m1 - 0.1, m2_lo * 1.01)
    gamma_star = (rng.random(n) < comp["gamma_star_fraction"]) & (m4l < comp["gamma_star_below_gev"])
    m2 = np.where(gamma_star, _log_uniform(rng, n, m2_lo, room),
                  _breit_wigner(rng, n, m2_lo, np.minimum(120.0, room)))
    return m1, m2


def _z_plus_pair_masses(rng: np.random.Generator, m4l: F64, comp: Params) -> tuple[F64, F64]:
    """A Z (or a broad prompt pair) and a second pair of the component's mass spectrum."""
    n = len(m4l)
    m_b = np.minimum(_spectrum(rng, n, comp["pair_mass"]), np.maximum(0.5 * m4l - 1.0, 0.3))
    room = m4l - m_b - 0.5
    if comp.get("first_pair_mass"):
        m_a = np.clip(_spectrum(rng, n, comp["first_pair_mass"]), 1.0, room)
    else:
        m_a = _breit_wigner(rng, n, np.minimum(60.0, room - 1.0), np.minimum(106.0, room))
    return m_a, m_b


def _nonprompt_masses(rng: np.random.Generator, m4l: F64, comp: Params) -> tuple[F64, F64]:
    n = len(m4l)
    cap = np.maximum(0.45 * m4l, 0.25)
    return (np.minimum(_spectrum(rng, n, comp["pair_mass"]), cap),
            np.minimum(_spectrum(rng, n, comp["pair_mass"]), cap))


_PAIR_MASSES: dict[str, Callable[[np.random.Generator, F64, Params], tuple[F64, F64]]] = {
    "higgs": _higgs_masses, "z_to_4l": _z_to_4l_masses, "zz": _zz_masses,
    "z_plus_nonprompt": _z_plus_pair_masses, "prompt_pair_plus_nonprompt": _z_plus_pair_masses,
    "z_plus_prompt_pair": _z_plus_pair_masses, "nonprompt": _nonprompt_masses,
}


def _labels(rng: np.random.Generator, n: int, comp: Params) -> tuple[I64, I64, Bool]:
    """Flavour, charge and promptness of the four leptons (pair A = slots 0, 1; pair B = 2, 3)."""
    kind = comp["kind"]
    flavour = np.empty((n, 4), dtype=np.int64)
    charge = np.tile(np.array([-1, 1, -1, 1], dtype=np.int64), (n, 1))
    prompt = np.ones((n, 4), dtype=bool)
    if kind in ("higgs", "z_to_4l", "zz"):
        # channels: 4e, 4μ, 2e2μ at generation
        channel = _choice(rng, n, comp["channels"])
        first_e = rng.random(n) < 0.5
        a_e = (channel == 0) | ((channel == 2) & first_e)
        b_e = (channel == 0) | ((channel == 2) & ~first_e)
        flavour[:, :2] = np.where(a_e, ELECTRON, MUON)[:, None]
        flavour[:, 2:] = np.where(b_e, ELECTRON, MUON)[:, None]
        return flavour, charge, prompt
    if kind == "nonprompt":
        electrons = _choice(rng, n, comp["fractions_by_electron_count"])
        slot = np.argsort(rng.random((n, 4)), axis=1)
        flavour[:] = np.where(slot < electrons[:, None], ELECTRON, MUON)
        for pair in ((0, 1), (2, 3)):
            same_sign = rng.random(n) >= comp["opposite_sign_probability"]
            sign = _sign(rng, n)
            charge[:, pair[0]] = sign
            charge[:, pair[1]] = np.where(same_sign, sign, -sign)
        prompt[:] = False
        return flavour, charge, prompt
    if kind in ("z_plus_nonprompt", "z_plus_prompt_pair"):
        z = comp.get("z_flavour") or 0
        flavour[:, :2] = (np.full(n, z, dtype=np.int64) if z else _flavour(rng, n, 0.5))[:, None]
    else:  # prompt_pair_plus_nonprompt: two W leptons of independent flavour
        flavour[:, 0], flavour[:, 1] = _flavour(rng, n, 0.5), _flavour(rng, n, 0.5)
        sign = _sign(rng, n)
        charge[:, 0], charge[:, 1] = sign, -sign
    if kind == "z_plus_prompt_pair":
        flavour[:, 2], flavour[:, 3] = _flavour(rng, n, 0.5), _flavour(rng, n, 0.5)
        sign = _sign(rng, n)
        charge[:, 2], charge[:, 3] = sign, -sign
        return flavour, charge, prompt
    electron = float(comp["nonprompt_electron_fraction"])
    flavour[:, 2], flavour[:, 3] = _flavour(rng, n, electron), _flavour(rng, n, electron)
    opposite = rng.random(n) < comp.get("opposite_sign_probability", 0.5)
    sign = _sign(rng, n)
    charge[:, 2], charge[:, 3] = sign, np.where(opposite, -sign, sign)
    # Heavy-flavour leptons that happen to be isolated look prompt to the ID and isolation flags.
    prompt[:, 2:] = bool(comp.get("pair_b_prompt", False))
    return flavour, charge, prompt


def _component_leptons(rng: np.random.Generator, n: int, comp: Params, system: Params, biased: bool) -> _Leptons:
    """``n`` events of one component: X(m4l) → A B → 4ℓ in the X frame, boosted to the lab."""
    if comp["kind"] == "higgs":
        m4l, importance = np.full(n, float(comp["mass"])), np.ones(n)
    else:
        m4l, importance = _biased_spectrum(rng, n, comp["m4l"], biased)
    m_a, m_b = _PAIR_MASSES[comp["kind"]](rng, m4l, comp)
    flavour, charge, prompt = _labels(rng, n, comp)
    leptons = _Leptons.empty(n)
    leptons.importance = importance
    a, b = _two_body(rng, m4l, m_a, m_b)
    for pair, (parent, mass) in enumerate(((a, m_a), (b, m_b))):
        first, second = 2 * pair, 2 * pair + 1
        d1, d2 = _two_body(rng, mass, _mass_of(flavour[:, first]), _mass_of(flavour[:, second]))
        beta = parent[:, 1:] / parent[:, :1]
        leptons.p4[:, first] = _boost(d1, beta)
        leptons.p4[:, second] = _boost(d2, beta)
    leptons.ltype[:, :4], leptons.charge[:, :4] = flavour, charge
    leptons.prompt[:, :4], leptons.present[:, :4] = prompt, True
    leptons.p4[:, :4] = _boost(leptons.p4[:, :4], _system_velocity(rng, m4l, comp.get("system", system)))
    return leptons


def _model_leptons(rng: np.random.Generator, n: int, model: Params, biased: bool) -> _Leptons:
    """``n`` events of a model: its components in their fractions, mixed in random order."""
    components = model["components"]
    which, importance = _biased_choice(rng, n, [c["fraction"] for c in components],
                                       [c.get("mc_bias", 1.0) for c in components], biased)
    counts = np.bincount(which, minlength=len(components))
    parts = []
    for index, (comp, count) in enumerate(zip(components, counts, strict=True)):
        if count:
            part = _component_leptons(rng, int(count), comp, model["system"], biased)
            part.importance = part.importance * importance[which == index]
            parts.append(part)
    leptons = _concat(parts) if parts else _Leptons.empty(0)
    return leptons.take(rng.permutation(len(leptons))) if len(parts) > 1 else leptons


def _add_extras(rng: np.random.Generator, leptons: _Leptons, model: Params) -> None:
    """Fill slots 4 and 5 with extra prompt (W/Z decays in VH, ttH…) or non-prompt leptons.

    Only the few events that get extras are drawn, which keeps the common case cheap.
    """
    n = len(leptons)
    p_one, p_two = model.get("extra_prompt", [0.0, 0.0])
    u = rng.random(n)
    with_prompt = np.flatnonzero(u < p_one + p_two)
    k = len(with_prompt)
    if k:
        p4, flavour = _hard_leptons(rng, k, 2.5, 14.0)
        charge = _sign(rng, k)
        _put_subset(leptons, 4, with_prompt, p4, flavour, charge, prompt=True)
        # The second extra prompt lepton completes a same-flavour opposite-sign pair (Z→ℓℓ).
        two = u[with_prompt] >= p_one
        p4b, _ = _hard_leptons(rng, k, 2.5, 14.0)
        p4b[:, 0] = np.sqrt(_dot3(p4b[:, 1:], p4b[:, 1:]) + _mass_of(flavour) ** 2)
        _put_subset(leptons, 5, with_prompt[two], p4b[two], flavour[two], -charge[two], prompt=True)
    f_one, f_two = model.get("extra_nonprompt", [0.0, 0.0])
    u = rng.random(n)
    for slot, wanted in ((4, u < f_one + f_two), (5, u < f_two)):
        free = np.flatnonzero(wanted & ~leptons.present[:, slot])
        if len(free):
            pt = 4.0 + rng.exponential(7.0, len(free))
            flavour = _flavour(rng, len(free), 0.5)
            p4 = _p4(pt, rng.normal(0.0, 1.4, len(free)), rng.uniform(0, 2 * np.pi, len(free)), _mass_of(flavour))
            _put_subset(leptons, slot, free, p4, flavour, _sign(rng, len(free)), prompt=False)


def _hard_leptons(rng: np.random.Generator, n: int, shape: float, scale: float) -> tuple[F64, I64]:
    """Prompt leptons from W decays: Gamma-distributed pT, central η, random flavour."""
    pt = rng.gamma(shape, scale, n)
    eta = rng.normal(0.0, 1.3, n)
    flavour = _flavour(rng, n, 0.5)
    return _p4(pt, eta, rng.uniform(0, 2 * np.pi, n), _mass_of(flavour)), flavour


def _put_subset(leptons: _Leptons, slot: int, events: I64, p4: F64, ltype: I64, charge: I64, *,
                prompt: bool) -> None:
    leptons.p4[events, slot] = p4
    leptons.ltype[events, slot] = ltype
    leptons.charge[events, slot] = charge
    leptons.prompt[events, slot] = prompt
    leptons.present[events, slot] = True


def _final_state_radiation(rng: np.random.Generator, leptons: _Leptons, fsr: Params) -> None:
    """Prompt leptons that radiate lose a log-uniform fraction of their momentum to an unseen photon."""
    is_e = leptons.ltype == ELECTRON
    probability = np.where(is_e, fsr["electron_probability"], fsr["muon_probability"])
    radiates = leptons.prompt & leptons.present & (rng.random(leptons.ltype.shape) < probability)
    lo, hi = fsr["fraction_range"]
    keep = np.where(radiates, 1.0 - _log_uniform(rng, radiates.size, lo, hi).reshape(radiates.shape), 1.0)
    leptons.p4[..., 1:] *= keep[..., None]
    p2 = _dot3(leptons.p4[..., 1:], leptons.p4[..., 1:])
    leptons.p4[..., 0] = np.sqrt(p2 + _mass_of(leptons.ltype) ** 2)


def _reconstruct(rng: np.random.Generator, leptons: _Leptons, detector: Params) -> None:
    """Momentum smearing, electron charge flips and the pT/η acceptance, in place."""
    p3 = leptons.p4[..., 1:]
    p = np.sqrt(_dot3(p3, p3))
    pt = np.hypot(p3[..., 0], p3[..., 1])
    is_e = leptons.ltype == ELECTRON
    energy = np.maximum(leptons.p4[..., 0], 1e-9)
    sigma = np.where(
        is_e,
        np.hypot(detector["electron_stochastic"] / np.sqrt(energy), detector["electron_constant"]),
        np.hypot(detector["muon_constant"], detector["muon_per_gev"] * pt),
    )
    scale = np.clip(1.0 + sigma * rng.standard_normal(p.shape), 0.5, 1.5)
    p3 *= scale[..., None]
    leptons.p4[..., 0] = np.sqrt((p * scale) ** 2 + _mass_of(leptons.ltype) ** 2)
    flip = is_e & (rng.random(p.shape) < detector["electron_charge_flip"])
    leptons.charge[flip] *= -1
    pt = pt * scale
    abs_eta = np.abs(np.arcsinh(np.divide(p3[..., 2], pt, out=np.zeros_like(pt), where=pt > 0)))
    crack_lo, crack_hi = detector["electron_crack"] or (0.0, 0.0)
    in_crack = (abs_eta > crack_lo) & (abs_eta < crack_hi)
    inside = np.where(is_e, (abs_eta < detector["electron_max_abs_eta"]) & ~in_crack,
                      abs_eta < detector["muon_max_abs_eta"])
    efficiency = np.where(is_e, detector["electron_efficiency"], detector["muon_efficiency"])
    leptons.present &= (pt > detector["min_pt"]) & inside & (rng.random(p.shape) < efficiency)


def _trigger_fires(rng: np.random.Generator, leptons: _Leptons, trigger: Params) -> Bool:
    """Per lepton: would it fire its flavour's single-lepton trigger (threshold, ID and isolation)."""
    pt = np.hypot(leptons.p4[..., 1], leptons.p4[..., 2])
    is_e = leptons.ltype == ELECTRON
    threshold = np.where(is_e, trigger["electron_pt"], trigger["muon_pt"])
    efficiency = np.where(is_e, np.where(leptons.prompt, *trigger["electron_efficiency"]),
                          np.where(leptons.prompt, *trigger["muon_efficiency"]))
    return np.asarray(leptons.present & (pt > threshold) & (rng.random(pt.shape) < efficiency))


@dataclass
class _Accepted:
    leptons: _Leptons
    fires: Bool


def _accepted_leptons(rng: np.random.Generator, n: int, model: Params, release: str, biased: bool) -> _Accepted:
    """``n`` events that pass the release's skim.

    The first trial learns the acceptance, the next ones ask for just what is missing, in pieces
    of at most SUBCHUNK candidates so temporaries stay small.
    """
    detector = {**_parameters()["detector"], **_release_parameters(release)["detector"]}
    skim = _release_parameters(release)["skim"]
    parts: list[_Leptons] = []
    fired: list[Bool] = []
    have, rate = 0, 1.0
    while have < n:
        trial = min(SUBCHUNK, max(256, int((n - have) / rate * 1.05) + 16))
        leptons = _model_leptons(rng, trial, model, biased)
        _add_extras(rng, leptons, model)
        _final_state_radiation(rng, leptons, detector["fsr"])
        _reconstruct(rng, leptons, detector)
        fires = _trigger_fires(rng, leptons, detector["trigger"])
        count = leptons.present.sum(axis=1)
        keep = (count >= skim["min_leptons"]) & (count <= skim["max_leptons"])
        if skim["trigger"]:
            pt = np.where(leptons.present, np.hypot(leptons.p4[..., 1], leptons.p4[..., 2]), 0.0)
            keep &= fires.any(axis=1) & (pt.max(axis=1) >= skim["leading_pt"])
        rows = np.flatnonzero(keep)
        rate = max(len(rows) / trial, 0.002)
        parts.append(leptons.take(rows))
        fired.append(fires[rows])
        have += len(rows)
    return _Accepted(_concat(parts).take(slice(0, n)), np.concatenate(fired)[:n])


# --------------------------------------------------------------------------- event columns


def _order(accepted: _Accepted, rng: np.random.Generator, release: str) -> tuple[_Leptons, Bool]:
    """Slot order as the release's files store leptons.

    2020: by decreasing pT. 2025e: electrons first; within a flavour by decreasing pT times a
    log-normal factor, which reproduces how often the real file's pairs are pT-ordered.
    """
    leptons = accepted.leptons
    pt = np.hypot(leptons.p4[..., 1], leptons.p4[..., 2])
    if release == "2020":
        key = -pt
    else:
        noise = _release_parameters(release)["stored_order_log_pt_noise"]
        sigma = np.where(leptons.ltype == MUON, noise["muon"], noise["electron"])
        key = (leptons.ltype == MUON) * 1e3 - np.log(np.maximum(pt, 1e-9)) - sigma * rng.standard_normal(pt.shape)
    order = np.argsort(np.where(leptons.present, key, np.inf), axis=1, kind="stable")
    ltype, charge, prompt, present = (np.take_along_axis(getattr(leptons, f), order, axis=1)
                                      for f in ("ltype", "charge", "prompt", "present"))
    ordered = _Leptons(np.take_along_axis(leptons.p4, order[..., None], axis=1), ltype, charge, prompt, present,
                       leptons.importance)
    return ordered, np.take_along_axis(accepted.fires, order, axis=1)


def _clipped(rng: np.random.Generator, mean: float, sigma: float, shape: tuple[int, ...]) -> F64:
    return np.clip(rng.normal(mean, sigma, shape), 0.9, 1.05)


def _flag_rates(flags: Params, key: str, is_e: Bool, prompt: Bool) -> F64:
    rates = flags[key]
    return np.asarray(np.where(prompt, np.where(is_e, *rates["prompt"]), np.where(is_e, *rates["nonprompt"])))


def _event_columns(rng: np.random.Generator, accepted: _Accepted, model: Params, release: str) -> Columns:
    """Every per-event and (padded, ordered) per-lepton quantity the writers need, in GeV."""
    lep, fires = _order(accepted, rng, release)
    n, shape = len(lep), lep.ltype.shape
    px, py, pz = lep.p4[..., 1], lep.p4[..., 2], lep.p4[..., 3]
    pt = np.hypot(px, py)
    is_e = (lep.ltype == ELECTRON) & lep.present
    is_mu = (lep.ltype == MUON) & lep.present
    cols: Columns = {
        "pt": pt, "eta": np.arcsinh(pz / np.maximum(pt, 1e-9)), "phi": np.arctan2(py, px),
        "e": lep.p4[..., 0], "type": lep.ltype, "charge": lep.charge, "present": lep.present,
        "prompt": lep.prompt,
    }
    cols["trigE"] = (fires & is_e).any(axis=1)
    cols["trigM"] = (fires & is_mu).any(axis=1)
    cols["met_et"] = rng.gamma(2.0, model.get("met_scale", 8.0), n)
    cols["met_phi"] = rng.uniform(-np.pi, np.pi, n)
    cols["fluctuation"] = np.clip(rng.normal(1.0, 0.04, n), 0.85, 1.15)
    cols["importance"] = lep.importance
    cols["sf_pileup"] = _clipped(rng, 1.0, 0.025, (n,))
    cols["sf_ele"] = np.clip(np.where(is_e, rng.normal(0.985, 0.012, shape), 1.0).prod(axis=1), 0.9, 1.05)
    cols["sf_muon"] = np.clip(np.where(is_mu, rng.normal(0.99, 0.008, shape), 1.0).prod(axis=1), 0.9, 1.05)
    cols["sf_trigger"] = _clipped(rng, 0.995, 0.008, (n,))
    prompt = lep.prompt
    u = rng.random((6, *shape))
    if release == "2020":
        cols["isTightID"] = u[0] < np.where(prompt, np.where(is_e, 0.9, 0.96), 0.45)
        cols["ptcone30"] = pt * np.where(prompt, rng.exponential(0.015, shape) * (u[1] < 0.4),
                                         rng.exponential(0.35, shape))
        cols["etcone20"] = pt * np.where(prompt, rng.normal(0.003, 0.02, shape),
                                         rng.normal(0.12, 0.12, shape))
        return cols
    flags = _release_parameters(release)["lepton_flags"]
    e_or_absent = lep.ltype == ELECTRON
    cols["isLooseID"] = u[0] < _flag_rates(flags, "loose_id", e_or_absent, prompt)
    cols["isMediumID"] = cols["isLooseID"] & (u[1] < _flag_rates(flags, "medium_given_loose", e_or_absent, prompt))
    cols["isTightID"] = cols["isMediumID"] & (u[2] < _flag_rates(flags, "tight_given_medium", e_or_absent, prompt))
    cols["isLooseIso"] = u[3] < _flag_rates(flags, "loose_iso", e_or_absent, prompt)
    cols["isTightIso"] = cols["isLooseIso"] & (u[4] < _flag_rates(flags, "tight_given_loose_iso", e_or_absent, prompt))
    cols["isTrigMatched"] = fires & (cols["trigE"] | cols["trigM"])[:, None] & (u[5] < flags["trigger_match"])
    return cols


# --------------------------------------------------------------------------- branches


def _relative_mc_weight(pieces: list[Columns]) -> F64:
    """mcWeight / C_s: the fluctuation times the importance weight, rounded to float32 as written."""
    relative = _event_values(pieces, "fluctuation") * _event_values(pieces, "importance")
    return np.asarray(relative.astype(np.float32), dtype=np.float64)


def _weight_branches(release: str, pieces: list[Columns], sample: Sample, weight_constant: float) -> dict[str, Any]:
    """The MC weight branches of ``sample`` as the files hold them (float32 where the real files are)."""
    fluctuation = _relative_mc_weight(pieces)
    n = len(fluctuation)
    ones = np.ones(n)
    if release == "2020":
        weights = {
            "mcWeight": fluctuation * weight_constant, "scaleFactor_PILEUP": _event_values(pieces, "sf_pileup"),
            "scaleFactor_ELE": _event_values(pieces, "sf_ele"), "scaleFactor_MUON": _event_values(pieces, "sf_muon"),
            "scaleFactor_PHOTON": ones, "scaleFactor_TAU": ones, "scaleFactor_BTAG": ones,
            "scaleFactor_LepTRIGGER": _event_values(pieces, "sf_trigger"),
        }
    else:
        assert sample.sumw is not None
        assert sample.dsid is not None
        assert sample.xsec_pb is not None
        n_events = _num_events_2025e().get(sample.dsid, sample.sumw)
        weights = {
            "num_events": n_events * ones, "sum_of_weights": sample.sumw * ones,
            "sum_of_weights_squared": sample.sumw**2 / n_events * ones,
            "ScaleFactor_PILEUP": _event_values(pieces, "sf_pileup"), "mcWeight": fluctuation * weight_constant,
            "xsec": sample.xsec_pb * ones, "filteff": (sample.filter_eff or 1.0) * ones,
            "kfac": (sample.k_factor or 1.0) * ones, "ScaleFactor_ELE": _event_values(pieces, "sf_ele"),
            "ScaleFactor_MUON": _event_values(pieces, "sf_muon"),
            "ScaleFactor_LepTRIGGER": _event_values(pieces, "sf_trigger"),
        }
    types = TREE_TYPES[release]
    return {k: np.asarray(v).astype(types[k]) for k, v in weights.items()}


def _branches_2020(pieces: list[Columns], sample: Sample | None, weight_constant: float,
                   run: I64, event: I64) -> dict[str, Any]:
    n = len(run)
    channel = run if sample is None else np.full(n, sample.dsid)
    out: dict[str, Any] = {
        "runNumber": run.astype(np.int32), "eventNumber": event.astype(np.int32),
        "channelNumber": channel.astype(np.int32),
    }
    if sample is None:
        # The real data files carry zero weights and scale factors.
        out.update({k: np.zeros(n, dtype=np.float32) for k in _TYPES_2020
                    if k == "mcWeight" or k.startswith("scaleFactor_")})
    else:
        out.update(_weight_branches("2020", pieces, sample, weight_constant))
    out["trigE"], out["trigM"] = _event_values(pieces, "trigE"), _event_values(pieces, "trigM")
    for name, key, dtype, scale in (
        ("lep_pt", "pt", "float32", 1e3), ("lep_eta", "eta", "float32", 1.0),
        ("lep_phi", "phi", "float32", 1.0), ("lep_E", "e", "float32", 1e3),
        ("lep_charge", "charge", "int32", 1.0), ("lep_type", "type", "uint32", 1.0),
        ("lep_isTightID", "isTightID", "bool", 1.0), ("lep_ptcone30", "ptcone30", "float32", 1e3),
        ("lep_etcone20", "etcone20", "float32", 1e3),
    ):
        out[name] = _lepton_values(pieces, key, dtype, scale)
    out["met_et"] = (_event_values(pieces, "met_et") * 1e3).astype(np.float32)
    out["met_phi"] = _event_values(pieces, "met_phi").astype(np.float32)
    return out


def _branches_2025e(pieces: list[Columns], sample: Sample | None, weight_constant: float,
                    run: I64, event: I64) -> dict[str, Any]:
    n = len(run)
    ones = np.ones(n)
    out: dict[str, Any]
    if sample is None:
        # The real data files: unit weights and bookkeeping, zero cross-section factors.
        out = {"num_events": ones, "sum_of_weights": ones, "sum_of_weights_squared": ones,
               "ScaleFactor_PILEUP": ones, "mcWeight": ones, "xsec": 0 * ones, "filteff": 0 * ones,
               "kfac": 0 * ones, "channelNumber": run, "ScaleFactor_ELE": ones,
               "ScaleFactor_MUON": ones, "ScaleFactor_LepTRIGGER": ones}
    else:
        assert sample.dsid is not None
        out = {**_weight_branches("2025e", pieces, sample, weight_constant), "channelNumber": np.full(n, sample.dsid)}
    out.update({"eventNumber": event, "runNumber": run, "trigE": _event_values(pieces, "trigE"),
                "trigM": _event_values(pieces, "trigM")})
    out = {k: np.asarray(v).astype(_TYPES_2025E[k]) for k, v in out.items()}
    for name, key in (("lep_type", "type"), ("lep_pt", "pt"), ("lep_eta", "eta"), ("lep_phi", "phi"),
                      ("lep_e", "e"), ("lep_charge", "charge"), ("lep_isTightID", "isTightID"),
                      ("lep_isMediumID", "isMediumID"), ("lep_isLooseID", "isLooseID"),
                      ("lep_isTightIso", "isTightIso"), ("lep_isLooseIso", "isLooseIso"),
                      ("lep_isTrigMatched", "isTrigMatched")):
        out[name] = _lepton_values(pieces, key, _TYPES_2025E[name].removeprefix("var * "))
    out["met"] = _event_values(pieces, "met_et").astype(np.float32)
    out["met_phi"] = _event_values(pieces, "met_phi").astype(np.float32)
    return out


_BRANCHES = {"2020": _branches_2020, "2025e": _branches_2025e}
_EVENT_WEIGHT = {"2020": event_weight_2020, "2025e": event_weight_2025e}


def tree_title(sample: Sample) -> str:
    """The TTree title that marks a generated file, and says which kind it is, to whoever opens it."""
    what = "pseudo-data, not ATLAS data" if sample.is_data else "generated MC"
    return f"{GENERATED_TITLE}: {what}"


def _write_tree(path: Path, release: Release, sample: Sample, batches: Iterator[dict[str, Any]],
                compression: str) -> int:
    """Write ``batches`` with one ``extend`` each (so one cluster each); returns the event count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with uproot.recreate(path, compression=COMPRESSIONS[compression]()) as out:
        tree = out.mktree(release.tree, TREE_TYPES[release.name], tree_title(sample), counter_name=lambda _: "lep_n",
                          field_name=lambda outer, inner: inner if outer == "" else f"{outer}_{inner}")
        for branches in batches:
            tree.extend(branches)
            written += len(branches["runNumber"])
    return written


# --------------------------------------------------------------------------- samples


def _columns(rng: np.random.Generator, size: int, model: Params, release: str, biased: bool) -> list[Columns]:
    """``size`` events' columns as pieces of SUBCHUNK events.

    The pieces are only joined in their compact on-disk form, which saves copying the float64
    working arrays.
    """
    pieces = []
    for start in range(0, size, SUBCHUNK):
        accepted = _accepted_leptons(rng, min(SUBCHUNK, size - start), model, release, biased)
        pieces.append(_event_columns(rng, accepted, model, release))
    return pieces


def _event_values(pieces: list[Columns], key: str) -> npt.NDArray[Any]:
    return pieces[0][key] if len(pieces) == 1 else np.concatenate([p[key] for p in pieces])


def _lepton_values(pieces: list[Columns], key: str, dtype: str, scale: float = 1.0) -> ak.Array:
    """A jagged branch from the padded (events, slots) arrays: present slots, in slot order."""
    flats = []
    for piece in pieces:
        values = piece[key][piece["present"]]
        flats.append((values * scale if scale != 1.0 else values).astype(dtype))
    counts = np.concatenate([p["present"].sum(axis=1) for p in pieces])
    return ak.unflatten(np.concatenate(flats), counts)


def _mc_batch(seed: int, release: Release, sample: Sample, index: int, size: int) -> list[Columns]:
    rng = _rng(seed, release.name, sample.name, _PURPOSE_MC, index)
    return _columns(rng, size, _sample_model(release, sample), release.name, biased=True)


@dataclass
class _Calibration:
    weight_constant: float
    expected_recorded: float
    cached: list[tuple[dict[str, Any], F64]]
    """Small samples' batches as written with C = 1, and their mcWeight / C."""


def _mc_branch_batch(release: Release, sample: Sample, pieces: list[Columns], first: int,
                     weight_constant: float) -> dict[str, Any]:
    size = sum(len(p["fluctuation"]) for p in pieces)
    event = np.arange(first + 1, first + size + 1, dtype=np.int64)
    run = np.full(size, _MC_RUN_NUMBER, dtype=np.int64)
    return _BRANCHES[release.name](pieces, sample, weight_constant, run, event)


def _weighted_sums(release: Release, branches: dict[str, Any]) -> tuple[float, float]:
    """(Σ weight of the events the notebook selection keeps in the calibration range, Σ weight of all)."""
    events = ak.zip(branches, depth_limit=1)
    selected = analyse(events, release.schema, True, release.to_gev, notebook_options(release.name))
    span = calibration_range(release.name)
    weight = selected.weight
    if span is not None:
        weight = weight[(selected.m4l_gev >= span[0]) & (selected.m4l_gev < span[1])]
    return float(weight.sum()), float(_EVENT_WEIGHT[release.name](events).sum())


def _calibrate(seed: int, release: Release, sample: Sample, n_events: int) -> _Calibration:
    """C_s from the events the analysis selects; also the expected recorded count for the pseudo-data.

    Samples up to CACHE_EVENTS keep their batches (in on-disk form) for writing; larger ones are
    regenerated batch by batch (same streams, same events) rather than held in memory.
    """
    passing = total = 0.0
    cached: list[tuple[dict[str, Any], F64]] = []
    first = 0
    for index, size in enumerate(_batch_sizes(n_events)):
        pieces = _mc_batch(seed, release, sample, index, size)
        branches = _mc_branch_batch(release, sample, pieces, first, 1.0)
        batch_passing, batch_total = _weighted_sums(release, branches)
        passing += batch_passing
        total += batch_total
        if n_events <= CACHE_EVENTS:
            cached.append((branches, _relative_mc_weight(pieces)))
        first += size
    if passing <= 0:
        raise ConfigError(f"sample {sample.name}: no generated event passes the selection; "
                          f"generate more than {n_events} events")
    target = target_yield(release, sample)
    return _Calibration(target / (_normalisation(release, sample) * passing), target * total / passing, cached)


def _mc_branches(seed: int, release: Release, sample: Sample, n_events: int,
                 calibration: _Calibration) -> Iterator[dict[str, Any]]:
    constant = calibration.weight_constant
    if calibration.cached:
        for branches, relative in calibration.cached:
            yield {**branches, "mcWeight": (relative * constant).astype(np.float32)}
        return
    first = 0
    for index, size in enumerate(_batch_sizes(n_events)):
        yield _mc_branch_batch(release, sample, _mc_batch(seed, release, sample, index, size), first,
                               constant)
        first += size


def _period_columns(seed: int, release: Release, period: DataPeriod, mc: Sequence[Sample],
                    expected: Mapping[str, float]) -> list[Columns]:
    """A data period's pseudo-data: every MC sample and data-only component at the period's luminosity."""
    share = period.luminosity_fb / release.luminosity_fb
    sources: list[tuple[str, float, Params]] = [
        (s.name, expected[s.name] * share, _sample_model(release, s)) for s in mc]
    sources += [(name, float(entry["events_per_fb"]) * period.luminosity_fb, _model(entry["model"]))
                for name, entry in _release_parameters(release.name).get("data_only", {}).items()]
    parts: list[Columns] = []
    for name, mean, model in sources:
        stream = f"{name}@{period.name}"
        n_data = int(_rng(seed, release.name, stream, _PURPOSE_COUNT, 0).poisson(mean))
        for index, size in enumerate(_batch_sizes(n_data)):
            rng = _rng(seed, release.name, stream, _PURPOSE_DATA, index)
            parts.extend(_columns(rng, size, model, release.name, biased=False))
    return parts


def _data_branches(seed: int, release: Release, period: DataPeriod, parts: list[Columns]) -> dict[str, Any]:
    if not parts:
        empty = _Accepted(_Leptons.empty(0), np.zeros((0, MAX_LEPTONS), dtype=bool))
        parts = [_event_columns(np.random.default_rng(0), empty, {}, release.name)]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = len(cols["fluctuation"])
    rng = _rng(seed, release.name, period.name, _PURPOSE_SHUFFLE, 0)
    order = rng.permutation(n)
    cols = {k: v[order] for k, v in cols.items()}
    low, high = period.runs
    run = np.sort(rng.integers(low, high + 1, n))
    event = rng.integers(1, 2**31 - 1, n)
    return _BRANCHES[release.name]([cols], None, 0.0, run, event)


# --------------------------------------------------------------------------- API


def generate_release(  # noqa: PLR0913 - the tests and callers pass these as keywords, one per choice
    release: str, output_dir: Path | str, *, events: int | None = None, seed: int = DEFAULT_SEED,
    samples: Sequence[str] | None = None, compression: str = "zlib", with_data: bool = True,
    events_per_sample_override: Mapping[str, int] | None = None, min_events: int = MIN_EVENTS_PER_SAMPLE,
    progress: Callable[[str], None] | None = None,
) -> GenerationReport:
    """Generate the files of ``release`` under ``output_dir`` in the public servers' layout.

    ``events`` is the total MC count, split in natural proportions with at least ``min_events``
    per sample; ``events_per_sample_override`` sets chosen samples' counts directly. ``samples``
    takes sample names, group ids, ``data`` or ``mc`` (default: all). Pseudo-data are drawn from the
    expectation of every MC sample of the release, generated or not, so they do not depend on
    ``samples``; MC samples not written are still generated in memory to calibrate them.
    ``progress`` receives one line per file (default: this module's log).
    """
    if release not in RELEASES:
        raise CatalogError(f"unknown release '{release}'; known releases: {', '.join(RELEASES)}")
    if compression not in COMPRESSIONS:
        raise ConfigError(f"unknown compression '{compression}'; choose from {', '.join(COMPRESSIONS)}")
    if events is not None and events < 1:
        raise ConfigError(f"--events must be positive, got {events}")
    rel = load_release(release)
    chosen = rel.select(list(samples) if samples else None)
    mc_all = [s for s in rel.samples if not s.is_data]
    counts = events_per_sample(rel, DEFAULT_EVENTS if events is None else events, mc_all, min_events)
    for name, count in (events_per_sample_override or {}).items():
        if rel.sample(name).is_data or count < 1:
            raise ConfigError(f"event count override for {name}: need an MC sample and a positive count")
        counts[name] = int(count)
    write_mc = [s for s in mc_all if s in chosen]
    write_data = [s for s in rel.samples if s.is_data and s in chosen] if with_data else []

    writer = _Writer(rel, seed, Path(output_dir), compression, progress or log.info)
    report = GenerationReport(release=release, output_dir=writer.output_dir, seed=seed)
    start = time.perf_counter()
    _calibrate_and_write_mc(writer, report, mc_all if write_data else write_mc, write_mc, counts)
    _write_pseudo_data(writer, report, write_data, mc_all)
    report.seconds = time.perf_counter() - start
    writer.say(f"generated {report.total_events:,} events in {len(report.files)} files in "
               f"{report.seconds:.1f} s: {report.events_per_second:,.0f} events/s")
    return report


@dataclass(frozen=True)
class _Writer:
    """Where and how one generation writes its files, and whom it tells."""

    release: Release
    seed: int
    output_dir: Path
    compression: str
    say: Callable[[str], None]

    def write(self, report: GenerationReport, sample: Sample, batches: Iterator[dict[str, Any]],
              started: float, note: str) -> None:
        path = self.output_dir / sample.path
        written = _write_tree(path, self.release, sample, batches, self.compression)
        report.files.append(path)
        report.events[sample.name] = written
        self.say(_progress_line(path, written, time.perf_counter() - started, note))


def _calibrate_and_write_mc(writer: _Writer, report: GenerationReport, calibrate: Sequence[Sample],
                            write: Sequence[Sample], counts: Mapping[str, int]) -> None:
    """Calibrate every sample of ``calibrate`` (the pseudo-data need them all) and write those of ``write``."""
    for sample in calibrate:
        started = time.perf_counter()
        calibration = _calibrate(writer.seed, writer.release, sample, counts[sample.name])
        report.weight_constants[sample.name] = calibration.weight_constant
        report.expected_data[sample.name] = calibration.expected_recorded
        if sample in write:
            batches = _mc_branches(writer.seed, writer.release, sample, counts[sample.name], calibration)
            writer.write(report, sample, batches, started, f"mcWeight constant {calibration.weight_constant:.4g}")


def _write_pseudo_data(writer: _Writer, report: GenerationReport, write: Sequence[Sample],
                       mc_all: Sequence[Sample]) -> None:
    periods = {p.name: p for p in data_periods(report.release)}
    for sample in write:
        started = time.perf_counter()
        period = periods[sample.name]
        parts = _period_columns(writer.seed, writer.release, period, mc_all, report.expected_data)
        writer.write(report, sample, iter([_data_branches(writer.seed, writer.release, period, parts)]), started,
                     "pseudo-data")


def _progress_line(path: Path, events: int, seconds: float, note: str) -> str:
    size = path.stat().st_size / 1e6
    rate = events / seconds if seconds > 0 else 0.0
    return f"{path}: {events:,} events, {size:.1f} MB, {rate:,.0f} events/s ({note})"


