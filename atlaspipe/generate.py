"""``atlaspipe generate``: a seeded, vectorised generator of 4-lepton events in the real ROOT schemas.

No ATLAS MC file can be had offline, so this writes look-alikes of the public files: the 2020
``mini`` tree (MeV, leptons pT-ordered, 4–6 leptons) and the 2025e ``analysis`` tree (GeV, exactly
four leptons, electrons first and not pT-ordered), with the same file names and folder layout as
the public servers.

Physics content (parameters in ``generator_models.json``): H→ZZ*→4ℓ built as two Z decays with Z1
on shell and Z2 off shell, at 125 GeV with ~1.7 GeV resolution from lepton momentum smearing;
ZZ*→4ℓ as a Z→4ℓ peak, an off-shell continuum and the on-shell ZZ rise above 180 GeV; Z+jets and
tt̄ with two non-prompt leptons of random flavour and charge, softer and less isolated, so that
most of them fail the charge and flavour sums.

Weights. Every MC event gets scale factors near 1 and ``mcWeight = C_s × (1 + small fluctuation)``.
The per-sample constant ``C_s`` is calibrated from the generator's own knowledge of which events
it built to pass the release's selection (80 ≤ m4l < 250 GeV), so that the catalog normalisation
(2020: lumi·1000·xsec/(sumw·red_eff) at 10 fb⁻¹; 2025e: the per-event xsec/kfac/filteff/
sum_of_weights branches at 36.6 fb⁻¹) gives the target yield exactly for any event count. With the
"natural" event counts — the counts at which the targets come out with the real samples' typical
weight: 1 for 2020 (about 8M events, mostly ggH, then Z+jets and VBF, because the catalog sumw of
those samples is large), sum_of_weights/nEvents for 2025e (about 4M events, mostly ZZ*) — ``C_s`` is
about that typical weight; with fewer events it scales up as natural/generated. ``--events N``
splits N over the samples in these natural proportions, with a floor per sample (200 events, and
enough for about 50 passing ones) so that tiny samples keep some statistics.

Pseudo-data are a Poisson draw per MC sample of the expected recorded count (the normalised sum of
weights over all generated events), generated afresh as unweighted events from the sample's model,
split over the data periods by luminosity and shuffled within each file.

Determinism: every (sample, purpose, batch) has its own numpy ``SeedSequence`` keyed by the seed,
the release and stable hashes of the names, and batches have fixed boundaries, so the output depends
only on (release, seed, event counts) — not on sample order or on which samples are written.
"""

from __future__ import annotations

import argparse
import json
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

from atlaspipe.catalog import RELEASES, Release, Sample, load_release
from atlaspipe.errors import CatalogError, ConfigError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]
Columns = dict[str, npt.NDArray[Any]]

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
_M4L_RANGE = (80.0, 250.0)
_PURPOSE_MC, _PURPOSE_DATA, _PURPOSE_COUNT, _PURPOSE_SHUFFLE = 0, 1, 2, 3
_COMPRESSION = {"zlib": lambda: uproot.ZLIB(1), "lz4": lambda: uproot.LZ4(1)}

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
    seconds: float = 0.0

    @property
    def total_events(self) -> int:
        return sum(self.events.values())

    @property
    def events_per_second(self) -> float:
        return self.total_events / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- parameters


@cache
def _parameters() -> dict[str, Any]:
    text = resources.files("atlaspipe").joinpath("generator_models.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _num_events_2025e() -> dict[int, float]:
    """nEvents per DSID; the Sample dataclass does not carry it, but sum_of_weights_squared needs it."""
    raw = json.loads(resources.files("atlaspipe.catalogs").joinpath("2025e_exactly4lep.json")
                     .read_text("utf-8"))
    return {int(d["dataset_number"]): float(d["nEvents"]) for d in raw["datasets"]}


def _sample_parameters(release: Release, sample: Sample) -> dict[str, Any]:
    try:
        entry: dict[str, Any] = _parameters()["releases"][release.name]["samples"][sample.name]
    except KeyError:
        raise ConfigError(f"generator_models.json has no model for sample {sample.name}") from None
    return entry


def _model(release: Release, sample: Sample) -> dict[str, Any]:
    model: dict[str, Any] = _parameters()["models"][_sample_parameters(release, sample)["model"]]
    return model


def _periods(release: Release) -> dict[str, dict[str, Any]]:
    periods: dict[str, dict[str, Any]] = _parameters()["releases"][release.name]["data_periods"]
    return periods


def target_yield(release: Release, sample: Sample) -> float:
    """The weighted yield after the selection (80–250 GeV) the generator calibrates ``sample`` to."""
    if release.name == "2020":
        return release.reference_yields[sample.name]
    return float(_sample_parameters(release, sample)["target_yield"])


def normalisation(release: Release, sample: Sample) -> float:
    """Per-sample factor turning Σ(mcWeight·SFs) into events, as the analysis computes it.

    For 2025e the analysis reads xsec, kfac and filteff from float32 branches, so those are rounded.
    """
    lumi_pb = release.luminosity_fb * 1000.0
    assert sample.xsec_pb is not None and sample.sumw is not None
    if release.name == "2020":
        return lumi_pb * sample.xsec_pb / (sample.sumw * (sample.red_eff or 1.0))
    factors = (sample.xsec_pb, sample.k_factor or 1.0, sample.filter_eff or 1.0)
    product = float(np.prod(np.abs(np.asarray(factors, dtype=np.float32).astype(np.float64))))
    return lumi_pb * product / sample.sumw


def _efficiency(release: Release, sample: Sample) -> float:
    return float(_sample_parameters(release, sample)["efficiency"])


def natural_weight(release: Release, sample: Sample) -> float:
    """The typical mcWeight of the real sample: 1 for 2020, sum_of_weights/nEvents for 2025e."""
    if release.name == "2020" or sample.dsid is None or sample.sumw is None:
        return 1.0
    return sample.sumw / _num_events_2025e().get(sample.dsid, sample.sumw)


def natural_events(release: Release, sample: Sample) -> float:
    """Events at which the target yield comes out with the natural mcWeight (given the efficiency)."""
    expected = target_yield(release, sample) / normalisation(release, sample)
    return expected / _efficiency(release, sample) / natural_weight(release, sample)


def events_per_sample(release: Release, events: int, samples: Sequence[Sample],
                      minimum: int = MIN_EVENTS_PER_SAMPLE) -> dict[str, int]:
    """``events`` split over the MC ``samples`` in natural proportions, at least ``minimum`` each."""
    mc = [s for s in samples if not s.is_data]
    natural = {s.name: natural_events(release, s) for s in mc}
    total = sum(natural.values())
    # Rarely-passing samples (fakes under the 2025e cuts) need more events to be calibrated at all.
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

    def __len__(self) -> int:
        return len(self.ltype)

    def take(self, index: npt.NDArray[Any] | slice) -> _Leptons:
        return _Leptons(self.p4[index], self.ltype[index], self.charge[index], self.prompt[index],
                        self.present[index])

    @staticmethod
    def empty(n: int) -> _Leptons:
        return _Leptons(np.zeros((n, MAX_LEPTONS, 4)), np.full((n, MAX_LEPTONS), ELECTRON),
                        np.zeros((n, MAX_LEPTONS), dtype=np.int64),
                        np.zeros((n, MAX_LEPTONS), dtype=bool), np.zeros((n, MAX_LEPTONS), dtype=bool))

    def put(self, slot: int, p4: F64, ltype: I64, charge: I64, prompt: bool,
            where: Bool | None = None) -> None:
        mask = np.ones(len(self), dtype=bool) if where is None else where
        self.p4[mask, slot] = p4[mask]
        self.ltype[mask, slot] = ltype[mask]
        self.charge[mask, slot] = charge[mask]
        self.prompt[mask, slot] = prompt
        self.present[mask, slot] = True


def _concat(parts: list[_Leptons]) -> _Leptons:
    return _Leptons(*(np.concatenate([getattr(p, f) for p in parts])
                      for f in ("p4", "ltype", "charge", "prompt", "present")))


def _mass_of(ltype: I64) -> F64:
    return np.where(ltype == MUON, _MASS[MUON], _MASS[ELECTRON])


def _p4(pt: F64, eta: F64, phi: F64, mass: F64) -> F64:
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    energy = np.sqrt(px**2 + py**2 + pz**2 + mass**2)
    return np.stack([energy, px, py, pz], axis=-1)


def _breit_wigner(rng: np.random.Generator, n: int, lo: float | F64, hi: float | F64) -> F64:
    """Z masses from a Breit–Wigner truncated to [lo, hi] by inverting its CDF."""
    a = np.arctan(2.0 * (np.asarray(lo) - _Z_MASS) / _Z_WIDTH)
    b = np.arctan(2.0 * (np.asarray(hi) - _Z_MASS) / _Z_WIDTH)
    return np.asarray(_Z_MASS + 0.5 * _Z_WIDTH * np.tan(rng.uniform(a, b, n)), dtype=np.float64)


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


def _system_velocity(rng: np.random.Generator, mass: F64, model: dict[str, Any]) -> F64:
    """Lab velocity of a system of ``mass`` with a Gamma-distributed pT and Gaussian rapidity."""
    n = len(mass)
    pt = rng.gamma(model["pt_shape"], model["pt_scale"], n)
    rapidity = np.clip(rng.normal(0.0, model["y_sigma"], n), -4.0, 4.0)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    mt = np.sqrt(mass**2 + pt**2)
    energy = mt * np.cosh(rapidity)
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(rapidity)], axis=-1) / energy[:, None]


def _random_flavour(rng: np.random.Generator, n: int) -> I64:
    return np.where(rng.random(n) < 0.5, ELECTRON, MUON).astype(np.int64)


def _random_charge(rng: np.random.Generator, n: int) -> I64:
    return np.where(rng.random(n) < 0.5, -1, 1).astype(np.int64)


def _pair_decay(rng: np.random.Generator, parent: F64, mass: F64, flavour: I64) -> tuple[F64, F64]:
    """A resonance of ``mass`` with lab 4-momentum ``parent`` → ℓ⁻ℓ⁺ of ``flavour``."""
    m_lep = _mass_of(flavour)
    a, b = _two_body(rng, mass, m_lep, m_lep)
    beta = parent[:, 1:] / parent[:, :1]
    return _boost(a, beta), _boost(b, beta)


def _four_lepton_masses(rng: np.random.Generator, n: int, model: dict[str, Any]) -> tuple[F64, F64, F64]:
    """(m4l, m_Z1, m_Z2) for the resonant 4-lepton models."""
    if model["kind"] == "higgs":
        m4l = np.full(n, float(model["mass"]))
        m1 = _breit_wigner(rng, n, 50.0, 106.0)
        m2 = 10.0 + (m4l - m1 - 10.5) * rng.beta(3.0, 1.3, n)
        return m4l, m1, m2
    fractions = model["fractions"]
    component = rng.choice(3, size=n, p=[fractions["z4l"], fractions["offshell"], fractions["onshell"]])
    m4l, m1, m2 = np.empty(n), np.empty(n), np.empty(n)
    # Z→4ℓ: one Z* recoiling against a soft γ*/Z* inside the Z peak.
    z = component == 0
    nz = int(z.sum())
    m4l[z] = _breit_wigner(rng, nz, 76.0, 106.0)
    m2[z] = 4.0 + 20.0 * rng.beta(1.3, 3.0, nz)
    m1[z] = (m4l[z] - m2[z]) * rng.uniform(0.55, 0.98, nz)
    # Off-shell continuum between the Z and the ZZ threshold.
    off = component == 1
    n_off = int(off.sum())
    m4l[off] = 100.0 + 85.0 * rng.beta(1.0, 1.3, n_off)
    m1[off] = _breit_wigner(rng, n_off, 60.0, np.minimum(106.0, m4l[off] - 12.0))
    m2[off] = 10.0 + (m4l[off] - m1[off] - 10.5) * rng.beta(2.0, 1.2, n_off)
    # On-shell ZZ: both Z on the peak, m4l rising from threshold with a long tail.
    on = component == 2
    n_on = int(on.sum())
    m1[on] = _breit_wigner(rng, n_on, 66.0, 116.0)
    m2[on] = _breit_wigner(rng, n_on, 66.0, 116.0)
    m4l[on] = m1[on] + m2[on] + rng.gamma(model["onshell_shape"], model["onshell_scale"], n_on)
    return m4l, m1, m2


def _resonant_four(rng: np.random.Generator, n: int, model: dict[str, Any]) -> _Leptons:
    """H→ZZ*→4ℓ or ZZ*→4ℓ: X → Z1 Z2 → 4ℓ in the X frame, then boosted to the lab."""
    m4l, m1, m2 = _four_lepton_masses(rng, n, model)
    z1, z2 = _two_body(rng, m4l, m1, m2)
    leptons = _Leptons.empty(n)
    for slot, (z, mass) in enumerate(((z1, m1), (z2, m2))):
        flavour = _random_flavour(rng, n)
        minus, plus = _pair_decay(rng, z, mass, flavour)
        leptons.put(2 * slot, minus, flavour, np.full(n, -1), True)
        leptons.put(2 * slot + 1, plus, flavour, np.full(n, 1), True)
    beta = _system_velocity(rng, m4l, model)
    leptons.p4[:, :4] = _boost(leptons.p4[:, :4], beta)
    return leptons


def _soft_leptons(rng: np.random.Generator, n: int, offset: float, scale: float,
                  phi_centre: F64 | None = None) -> tuple[F64, I64, I64]:
    """Non-prompt or fake leptons: soft exponential pT, random flavour and charge."""
    pt = offset + rng.exponential(scale, n)
    eta = rng.normal(0.0, 1.4, n)
    phi = rng.uniform(0, 2 * np.pi, n) if phi_centre is None else phi_centre + rng.normal(0, 1.0, n)
    flavour = _random_flavour(rng, n)
    return _p4(pt, eta, phi, _mass_of(flavour)), flavour, _random_charge(rng, n)


def _hard_leptons(rng: np.random.Generator, n: int, shape: float, scale: float) -> tuple[F64, I64]:
    """Prompt leptons from W decays: Gamma-distributed pT, central η, random flavour."""
    pt = rng.gamma(shape, scale, n)
    eta = rng.normal(0.0, 1.3, n)
    flavour = _random_flavour(rng, n)
    return _p4(pt, eta, rng.uniform(0, 2 * np.pi, n), _mass_of(flavour)), flavour


def _z_plus_two(rng: np.random.Generator, n: int, model: dict[str, Any]) -> _Leptons:
    """A Z→ℓℓ plus two further leptons: fakes recoiling against the Z (Z+jets) or prompt (ttZ, VVZ)."""
    mass = _breit_wigner(rng, n, 66.0, 116.0)
    beta = _system_velocity(rng, mass, model)
    gamma = 1.0 / np.sqrt(1.0 - _dot3(beta, beta))
    z = np.concatenate([(gamma * mass)[:, None], (gamma * mass)[:, None] * beta], axis=1)
    flavour = (np.full(n, model["z_flavour"], dtype=np.int64) if model["z_flavour"]
               else _random_flavour(rng, n))
    minus, plus = _pair_decay(rng, z, mass, flavour)
    leptons = _Leptons.empty(n)
    leptons.put(0, minus, flavour, np.full(n, -1), True)
    leptons.put(1, plus, flavour, np.full(n, 1), True)
    if model["other_prompt"]:
        charge = _random_charge(rng, n)
        for slot, sign in ((2, 1), (3, -1)):
            p4, other = _hard_leptons(rng, n, model["other_pt_shape"], model["other_pt_scale"])
            leptons.put(slot, p4, other, sign * charge, True)
    else:
        recoil = np.arctan2(-z[:, 2], -z[:, 1])
        for slot in (2, 3):
            p4, other, charge = _soft_leptons(rng, n, model["other_pt_offset"],
                                              model["other_pt_scale"], recoil)
            leptons.put(slot, p4, other, charge, False)
    return leptons


def _ttbar(rng: np.random.Generator, n: int, model: dict[str, Any]) -> _Leptons:
    """Two opposite-sign prompt leptons from the W decays plus two non-prompt ones from b decays."""
    leptons = _Leptons.empty(n)
    charge = _random_charge(rng, n)
    for slot, sign in ((0, 1), (1, -1)):
        p4, flavour = _hard_leptons(rng, n, model["w_pt_shape"], model["w_pt_scale"])
        leptons.put(slot, p4, flavour, sign * charge, True)
    for slot in (2, 3):
        p4, flavour, other = _soft_leptons(rng, n, model["other_pt_offset"], model["other_pt_scale"])
        leptons.put(slot, p4, flavour, other, False)
    return leptons


_BUILDERS: dict[str, Callable[[np.random.Generator, int, dict[str, Any]], _Leptons]] = {
    "higgs": _resonant_four, "zz": _resonant_four, "z_plus_two": _z_plus_two, "ttbar": _ttbar,
}


def _add_extras(rng: np.random.Generator, leptons: _Leptons, model: dict[str, Any]) -> None:
    """Fill slots 4 and 5 with extra prompt (W/Z decays in VH, ttH…) or fake leptons.

    Only the few events that get extras are drawn, which keeps the common case cheap.
    """
    n = len(leptons)
    p_one, p_two = model.get("extra_prompt", [0.0, 0.0])
    u = rng.random(n)
    with_prompt = np.flatnonzero(u < p_one + p_two)
    k = len(with_prompt)
    if k:
        p4, flavour = _hard_leptons(rng, k, 2.5, 14.0)
        charge = _random_charge(rng, k)
        _put_subset(leptons, 4, with_prompt, p4, flavour, charge, True)
        # The second extra prompt lepton completes a same-flavour opposite-sign pair (Z→ℓℓ).
        two = u[with_prompt] >= p_one
        p4b, _ = _hard_leptons(rng, k, 2.5, 14.0)
        p4b[:, 0] = np.sqrt(_dot3(p4b[:, 1:], p4b[:, 1:]) + _mass_of(flavour) ** 2)
        _put_subset(leptons, 5, with_prompt[two], p4b[two], flavour[two], -charge[two], True)
    f_one, f_two = model.get("extra_fake", [0.0, 0.0])
    u = rng.random(n)
    for slot, wanted in ((4, u < f_one + f_two), (5, u < f_two)):
        free = np.flatnonzero(wanted & ~leptons.present[:, slot])
        if len(free):
            p4, flavour, charge = _soft_leptons(rng, len(free), 4.0, 7.0)
            _put_subset(leptons, slot, free, p4, flavour, charge, False)


def _put_subset(leptons: _Leptons, slot: int, events: I64, p4: F64, ltype: I64, charge: I64,
                prompt: bool) -> None:
    leptons.p4[events, slot] = p4
    leptons.ltype[events, slot] = ltype
    leptons.charge[events, slot] = charge
    leptons.prompt[events, slot] = prompt
    leptons.present[events, slot] = True


def _reconstruct(rng: np.random.Generator, leptons: _Leptons, detector: dict[str, Any]) -> None:
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
    eta = np.arcsinh(np.divide(p3[..., 2], pt, out=np.zeros_like(pt), where=pt > 0))
    leptons.present &= (pt > detector["min_pt"]) & (np.abs(eta) < detector["max_abs_eta"])


def _accepted_leptons(rng: np.random.Generator, n: int, model: dict[str, Any], release: str) -> _Leptons:
    """``n`` events inside the skim's acceptance (2020: ≥ 4 leptons; 2025e: exactly 4).

    The first trial learns the acceptance, the next ones ask for just what is missing, in pieces
    of at most SUBCHUNK candidates so temporaries stay small.
    """
    detector = _parameters()["detector"]
    parts: list[_Leptons] = []
    have, rate = 0, 1.0
    while have < n:
        trial = min(SUBCHUNK, max(256, int((n - have) / rate * 1.05) + 16))
        leptons = _BUILDERS[model["kind"]](rng, trial, model)
        _add_extras(rng, leptons, model)
        _reconstruct(rng, leptons, detector)
        count = leptons.present.sum(axis=1)
        kept = leptons.take((count >= 4) if release == "2020" else (count == 4))
        rate = max(len(kept) / trial, 0.01)
        parts.append(kept)
        have += len(kept)
    return _concat(parts).take(slice(0, n))


# --------------------------------------------------------------------------- event columns


def _order(leptons: _Leptons, rng: np.random.Generator, release: str) -> _Leptons:
    """2020: by decreasing pT; 2025e: electrons first, in random order within a flavour, as stored."""
    if release == "2020":
        key = -np.hypot(leptons.p4[..., 1], leptons.p4[..., 2])
    else:
        key = (leptons.ltype == MUON) * 10.0 + rng.random(leptons.ltype.shape)
    order = np.argsort(np.where(leptons.present, key, np.inf), axis=1, kind="stable")
    return _Leptons(np.take_along_axis(leptons.p4, order[..., None], axis=1),
                    *(np.take_along_axis(getattr(leptons, f), order, axis=1)
                      for f in ("ltype", "charge", "prompt", "present")))


def _clipped(rng: np.random.Generator, mean: float, sigma: float, shape: tuple[int, ...]) -> F64:
    return np.clip(rng.normal(mean, sigma, shape), 0.9, 1.05)


def _event_columns(rng: np.random.Generator, leptons: _Leptons, model: dict[str, Any],
                   release: str) -> Columns:
    """Every per-event and (padded, ordered) per-lepton quantity the writers need, in GeV."""
    detector = _parameters()["detector"]
    lep = _order(leptons, rng, release)
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
    fired_e = is_e & (pt > detector["trigger_electron_pt"])
    fired_mu = is_mu & (pt > detector["trigger_muon_pt"])
    cols["trigE"] = fired_e.any(axis=1) & (rng.random(n) < detector["trigger_electron_eff"])
    cols["trigM"] = fired_mu.any(axis=1) & (rng.random(n) < detector["trigger_muon_eff"])
    cols["met_et"] = rng.gamma(2.0, model.get("met_scale", 8.0), n)
    cols["met_phi"] = rng.uniform(-np.pi, np.pi, n)
    cols["fluctuation"] = np.clip(rng.normal(1.0, 0.04, n), 0.85, 1.15)
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
    loose = u[0] < np.where(prompt, np.where(is_e, 0.97, 0.99), 0.55)
    cols["isLooseID"] = loose
    cols["isMediumID"] = loose & (u[1] < np.where(is_e, 0.9, 0.98))
    cols["isTightID"] = cols["isMediumID"] & (u[2] < 0.88)
    cols["isLooseIso"] = u[3] < np.where(prompt, 0.96, 0.3)
    cols["isTightIso"] = cols["isLooseIso"] & (u[4] < np.where(prompt, 0.85, 0.5))
    matchable = (fired_e & cols["trigE"][:, None]) | (fired_mu & cols["trigM"][:, None])
    cols["isTrigMatched"] = matchable & (u[5] < 0.95)
    return cols


def _stored_m4l(cols: Columns, to_unit: float) -> F64:
    """m4l of the first four leptons in GeV, from the float32 values the files hold."""
    stored = {k: (cols[k][:, :4] * (to_unit if k in ("pt", "e") else 1.0)).astype(np.float32)
              .astype(np.float64) for k in ("pt", "eta", "phi", "e")}
    px = (stored["pt"] * np.cos(stored["phi"])).sum(axis=1)
    py = (stored["pt"] * np.sin(stored["phi"])).sum(axis=1)
    pz = (stored["pt"] * np.sinh(stored["eta"])).sum(axis=1)
    energy = stored["e"].sum(axis=1)
    return np.asarray(np.sqrt(np.clip(energy**2 - px**2 - py**2 - pz**2, 0, None)) / to_unit)


def _passes(cols: Columns, release: str) -> Bool:
    """Which events the generator built to pass the release's selection with 80 ≤ m4l < 250 GeV."""
    charge = cols["charge"][:, :4]
    ltype = cols["type"][:, :4]
    sums = (charge.sum(axis=1) == 0) & np.isin(ltype.sum(axis=1), (44, 48, 52))
    if release == "2020":
        m4l = _stored_m4l(cols, 1000.0)
        return sums & (m4l >= _M4L_RANGE[0]) & (m4l < _M4L_RANGE[1])
    present = cols["present"]
    is_mu = cols["type"] == MUON
    lepton_ok = np.where(is_mu, cols["isMediumID"], cols["isLooseID"]) & cols["isLooseIso"]
    pt_sorted = -np.sort(-np.where(present, cols["pt"].astype(np.float32), 0.0), axis=1)
    passed = (
        sums
        & (cols["trigE"] | cols["trigM"])
        & (cols["isTrigMatched"] & present).any(axis=1)
        & (lepton_ok | ~present).all(axis=1)
        & (pt_sorted[:, 0] > 20.0) & (pt_sorted[:, 1] > 15.0) & (pt_sorted[:, 2] > 10.0)
    )
    m4l = _stored_m4l(cols, 1.0)
    return passed & (m4l >= _M4L_RANGE[0]) & (m4l < _M4L_RANGE[1])


def _relative_weight(cols: Columns) -> F64:
    """mcWeight/C × scale factors as the analysis multiplies them (float32 on disk)."""
    names = ("fluctuation", "sf_pileup", "sf_ele", "sf_muon", "sf_trigger")
    weight = np.ones(len(cols["fluctuation"]))
    for name in names:
        weight *= cols[name].astype(np.float32).astype(np.float64)
    return weight


# --------------------------------------------------------------------------- branches


def _branches_2020(pieces: list[Columns], sample: Sample | None, weight_constant: float,
                   run: I64, event: I64) -> dict[str, Any]:
    n = len(run)
    channel = run if sample is None else np.full(n, sample.dsid)
    out: dict[str, Any] = {
        "runNumber": run.astype(np.int32), "eventNumber": event.astype(np.int32),
        "channelNumber": channel.astype(np.int32),
    }
    # Rounded to float32 first, exactly as the calibration and the cached batches see it.
    fluctuation = _event_values(pieces, "fluctuation").astype(np.float32).astype(np.float64)
    weights = {
        "mcWeight": fluctuation * weight_constant,
        "scaleFactor_PILEUP": _event_values(pieces, "sf_pileup"),
        "scaleFactor_ELE": _event_values(pieces, "sf_ele"),
        "scaleFactor_MUON": _event_values(pieces, "sf_muon"), "scaleFactor_PHOTON": np.ones(n),
        "scaleFactor_TAU": np.ones(n), "scaleFactor_BTAG": np.ones(n),
        "scaleFactor_LepTRIGGER": _event_values(pieces, "sf_trigger"),
    }
    # The real data files carry zero weights and scale factors.
    out.update({k: (np.zeros(n) if sample is None else v).astype(np.float32) for k, v in weights.items()})
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
        assert sample.sumw is not None and sample.dsid is not None and sample.xsec_pb is not None
        n_events = _num_events_2025e().get(sample.dsid, sample.sumw)
        fluctuation = _event_values(pieces, "fluctuation").astype(np.float32).astype(np.float64)
        out = {"num_events": n_events * ones, "sum_of_weights": sample.sumw * ones,
               "sum_of_weights_squared": sample.sumw**2 / n_events * ones,
               "ScaleFactor_PILEUP": _event_values(pieces, "sf_pileup"),
               "mcWeight": fluctuation * weight_constant,
               "xsec": sample.xsec_pb * ones, "filteff": (sample.filter_eff or 1.0) * ones,
               "kfac": (sample.k_factor or 1.0) * ones, "channelNumber": np.full(n, sample.dsid),
               "ScaleFactor_ELE": _event_values(pieces, "sf_ele"),
               "ScaleFactor_MUON": _event_values(pieces, "sf_muon"),
               "ScaleFactor_LepTRIGGER": _event_values(pieces, "sf_trigger")}
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


def _write_tree(path: Path, release: Release, batches: Iterator[dict[str, Any]], compression: str) -> int:
    """Write ``batches`` with one ``extend`` each (so one cluster each); returns the event count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with uproot.recreate(path, compression=_COMPRESSION[compression]()) as out:
        tree = out.mktree(release.tree, TREE_TYPES[release.name], counter_name=lambda _: "lep_n",
                          field_name=lambda outer, inner: inner if outer == "" else f"{outer}_{inner}")
        for branches in batches:
            tree.extend(branches)
            written += len(branches["runNumber"])
    return written


# --------------------------------------------------------------------------- samples


def _columns(rng: np.random.Generator, size: int, model: dict[str, Any], release: str) -> list[Columns]:
    """``size`` events' columns as pieces of SUBCHUNK events.

    The pieces are only joined in their compact on-disk form, which saves copying the float64
    working arrays.
    """
    pieces = []
    for start in range(0, size, SUBCHUNK):
        leptons = _accepted_leptons(rng, min(SUBCHUNK, size - start), model, release)
        pieces.append(_event_columns(rng, leptons, model, release))
    return pieces


def _joined(pieces: list[Columns]) -> Columns:
    if len(pieces) == 1:
        return pieces[0]
    return {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}


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
    return _columns(rng, size, _model(release, sample), release.name)


@dataclass
class _Calibration:
    weight_constant: float
    expected_recorded: float
    cached: list[tuple[dict[str, Any], F64]]
    """Small samples' batches as written with C = 1, and their float32 fluctuations."""


def _mc_branch_batch(release: Release, sample: Sample, pieces: list[Columns], first: int,
                     weight_constant: float) -> dict[str, Any]:
    size = sum(len(p["fluctuation"]) for p in pieces)
    event = np.arange(first + 1, first + size + 1, dtype=np.int64)
    run = np.full(size, _MC_RUN_NUMBER, dtype=np.int64)
    return _BRANCHES[release.name](pieces, sample, weight_constant, run, event)


def _calibrate(seed: int, release: Release, sample: Sample, n_events: int) -> _Calibration:
    """C_s from the events built to pass; also the expected recorded count for the pseudo-data.

    Samples up to CACHE_EVENTS keep their batches (in on-disk form) for writing; larger ones are
    regenerated batch by batch (same streams, same events) rather than held in memory.
    """
    passing = total = 0.0
    cached: list[tuple[dict[str, Any], F64]] = []
    first = 0
    for index, size in enumerate(_batch_sizes(n_events)):
        pieces = _mc_batch(seed, release, sample, index, size)
        for cols in pieces:
            weight = _relative_weight(cols)
            passing += float(weight[_passes(cols, release.name)].sum())
            total += float(weight.sum())
        if n_events <= CACHE_EVENTS:
            fluctuation = _event_values(pieces, "fluctuation").astype(np.float32).astype(np.float64)
            cached.append((_mc_branch_batch(release, sample, pieces, first, 1.0), fluctuation))
        first += size
    if passing <= 0:
        raise ConfigError(f"sample {sample.name}: no generated event passes the selection; "
                          f"generate more than {n_events} events")
    target = target_yield(release, sample)
    return _Calibration(target / (normalisation(release, sample) * passing),
                        target * total / passing, cached)


def _mc_branches(seed: int, release: Release, sample: Sample, n_events: int,
                 calibration: _Calibration) -> Iterator[dict[str, Any]]:
    constant = calibration.weight_constant
    if calibration.cached:
        for branches, fluctuation in calibration.cached:
            yield {**branches, "mcWeight": (fluctuation * constant).astype(np.float32)}
        return
    first = 0
    for index, size in enumerate(_batch_sizes(n_events)):
        yield _mc_branch_batch(release, sample, _mc_batch(seed, release, sample, index, size), first,
                               constant)
        first += size


def _data_columns(seed: int, release: Release, mc: Sequence[Sample],
                  expected: Mapping[str, float]) -> dict[str, list[Columns]]:
    """Per data period, the pseudo-data events of each MC sample (catalog order)."""
    periods = _periods(release)
    names = list(periods)
    shares = np.array([periods[p]["lumi_fb"] for p in names], dtype=np.float64)
    shares /= shares.sum()
    out: dict[str, list[Columns]] = {p: [] for p in names}
    for sample in mc:
        count_rng = _rng(seed, release.name, sample.name, _PURPOSE_COUNT, 0)
        n_data = int(count_rng.poisson(expected[sample.name]))
        model = _model(release, sample)
        for index, size in enumerate(_batch_sizes(n_data)):
            rng = _rng(seed, release.name, sample.name, _PURPOSE_DATA, index)
            cols = _joined(_columns(rng, size, model, release.name))
            period = rng.choice(len(names), size=size, p=shares)
            for i, name in enumerate(names):
                out[name].append({k: v[period == i] for k, v in cols.items()})
    return out


def _data_branches(seed: int, release: Release, period: str, parts: list[Columns]) -> dict[str, Any]:
    if not parts:
        parts = [_event_columns(np.random.default_rng(0), _Leptons.empty(0), {}, release.name)]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = len(cols["fluctuation"])
    rng = _rng(seed, release.name, period, _PURPOSE_SHUFFLE, 0)
    order = rng.permutation(n)
    cols = {k: v[order] for k, v in cols.items()}
    low, high = _periods(release)[period]["runs"]
    run = np.sort(rng.integers(low, high + 1, n))
    event = rng.integers(1, 2**31 - 1, n)
    return _BRANCHES[release.name]([cols], None, 0.0, run, event)


# --------------------------------------------------------------------------- API


def generate_release(release: str, output_dir: Path | str, events: int | None = None,
                     seed: int = DEFAULT_SEED, samples: Sequence[str] | None = None,
                     compression: str = "zlib", with_data: bool = True,
                     events_per_sample_override: Mapping[str, int] | None = None,
                     min_events: int = MIN_EVENTS_PER_SAMPLE,
                     progress: Callable[[str], None] | None = None) -> GenerationReport:
    """Generate the files of ``release`` under ``output_dir`` in the public servers' layout.

    ``events`` is the total MC count, split in natural proportions with at least ``min_events``
    per sample; ``events_per_sample_override`` sets chosen samples' counts directly. ``samples``
    takes sample names, group ids, ``data`` or ``mc`` (default: all). Pseudo-data are drawn from the
    expectation of every MC sample of the release, generated or not, so they do not depend on
    ``samples``; MC samples not written are still generated in memory to calibrate them.
    """
    if release not in RELEASES:
        raise CatalogError(f"unknown release '{release}'; known releases: {', '.join(RELEASES)}")
    if compression not in _COMPRESSION:
        raise ConfigError(f"unknown compression '{compression}'; choose from {', '.join(_COMPRESSION)}")
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
    calibrate = mc_all if write_data else write_mc

    out_dir = Path(output_dir)
    report = GenerationReport(release=release, output_dir=out_dir, seed=seed)
    say = progress or (lambda _line: None)
    start = time.perf_counter()
    for sample in calibrate:
        file_start = time.perf_counter()
        calibration = _calibrate(seed, rel, sample, counts[sample.name])
        report.weight_constants[sample.name] = calibration.weight_constant
        report.expected_data[sample.name] = calibration.expected_recorded
        if sample not in write_mc:
            continue
        path = out_dir / sample.path
        written = _write_tree(path, rel, _mc_branches(seed, rel, sample, counts[sample.name],
                                                     calibration), compression)
        report.files.append(path)
        report.events[sample.name] = written
        say(_progress_line(path, written, time.perf_counter() - file_start,
                           f"mcWeight constant {calibration.weight_constant:.4g}"))
    if write_data:
        data_start = time.perf_counter()
        per_period = _data_columns(seed, rel, mc_all, report.expected_data)
        for sample in write_data:
            path = out_dir / sample.path
            branches = _data_branches(seed, rel, sample.name, per_period[sample.name])
            written = _write_tree(path, rel, iter([branches]), compression)
            report.files.append(path)
            report.events[sample.name] = written
            say(_progress_line(path, written, time.perf_counter() - data_start, "pseudo-data"))
            data_start = time.perf_counter()
    report.seconds = time.perf_counter() - start
    say(f"generated {report.total_events:,} events in {len(report.files)} files in "
        f"{report.seconds:.1f} s: {report.events_per_second:,.0f} events/s")
    return report


def _progress_line(path: Path, events: int, seconds: float, note: str) -> str:
    size = path.stat().st_size / 1e6
    rate = events / seconds if seconds > 0 else 0.0
    return f"{path}: {events:,} events, {size:.1f} MB, {rate:,.0f} events/s ({note})"


# --------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``atlaspipe generate``."""
    parser.add_argument("--release", required=True, help="2020 or 2025e")
    parser.add_argument("--output", required=True, type=Path, help="folder to write the files into")
    parser.add_argument("--events", type=int, default=None,
                        help=f"total MC events, split over samples (default {DEFAULT_EVENTS:,})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument("--samples", nargs="+", default=None, metavar="NAME",
                        help="samples, group ids, 'data' or 'mc' to write (default: all)")
    parser.add_argument("--compression", choices=sorted(_COMPRESSION), default="zlib",
                        help="ZLIB level 1 (default) or LZ4 level 1")
    parser.add_argument("--no-data", action="store_true", help="do not write pseudo-data")


def main(args: argparse.Namespace) -> int:
    """Run ``atlaspipe generate``."""
    generate_release(args.release, args.output, events=args.events, seed=args.seed,
                     samples=args.samples, compression=args.compression,
                     with_data=not args.no_data, progress=print)
    return 0
