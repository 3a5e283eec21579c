"""Sample catalogs of the supported ATLAS Open Data releases, loaded from the JSON files in ``catalogs/``."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

from atlaspipe.errors import CatalogError

RELEASES: tuple[str, ...] = ("2020", "2025e")
_CATALOG_FILES = {"2020": "2020_4lep.json", "2025e": "2025e_exactly4lep.json"}

SampleKind = Literal["data", "mc"]


@dataclass(frozen=True)
class Group:
    """A set of MC samples drawn as one entry of the stacked plot."""

    id: str
    label: str
    text: str
    color: str
    kind: Literal["background", "signal"]


@dataclass(frozen=True)
class Sample:
    """One data period or MC dataset of a release."""

    name: str
    release: str
    kind: SampleKind
    file_name: str
    path: str
    group: str | None = None
    dsid: int | None = None
    xsec_pb: float | None = None
    sumw: float | None = None
    red_eff: float | None = None
    filter_eff: float | None = None
    k_factor: float | None = None
    urls: tuple[str, ...] = ()
    luminosity_fb: float | None = None
    """A data period's integrated luminosity; None for MC."""

    @property
    def is_data(self) -> bool:
        return self.kind == "data"


LeptonOrder = Literal["stored", "pt"]


@dataclass(frozen=True)
class AnalysisDefaults:
    """How a release's notebook analyses it: the binning, the signal window and the lepton cuts."""

    bins: int
    m4l_range_gev: tuple[float, float]
    mass_window_gev: tuple[float, float]
    lepton_order: LeptonOrder
    lepton_pt_gev: tuple[float, float, float] | None

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> AnalysisDefaults:
        lo, hi = raw["m4l_range_gev"]
        w_lo, w_hi = raw["mass_window_gev"]
        pt = raw.get("lepton_pt_gev")
        return cls(bins=int(raw["bins"]), m4l_range_gev=(float(lo), float(hi)),
                   mass_window_gev=(float(w_lo), float(w_hi)),
                   lepton_order="pt" if raw["lepton_order"] == "pt" else "stored",
                   lepton_pt_gev=(float(pt[0]), float(pt[1]), float(pt[2])) if pt else None)


@dataclass(frozen=True)
class Release:
    """A release: its tree, units, luminosity, groups and samples."""

    name: str
    title: str
    tree: str
    schema: str
    energy_unit: Literal["MeV", "GeV"]
    luminosity_fb: float
    groups: tuple[Group, ...]
    samples: tuple[Sample, ...]
    analysis: AnalysisDefaults
    base_urls: dict[str, str] = field(default_factory=dict)
    reference_yields: dict[str, float] = field(default_factory=dict)

    @property
    def to_gev(self) -> float:
        """Factor that turns this release's stored energies into GeV."""
        return 1e-3 if self.energy_unit == "MeV" else 1.0

    def normalisation(self, sample: Sample, luminosity_fb: float) -> float:
        """The factor that scales a sample's summed event weights to ``luminosity_fb``: 1 for data.

        2020: lumi·1000·xsec/(sumw·red_eff). 2025e: lumi·1000, the rest is in the per-event weight.
        """
        if sample.is_data:
            return 1.0
        if self.schema == "2020":
            assert sample.xsec_pb is not None
            assert sample.sumw is not None
            assert sample.red_eff is not None
            return luminosity_fb * 1000.0 * sample.xsec_pb / (sample.sumw * sample.red_eff)
        return luminosity_fb * 1000.0

    def sample(self, name: str) -> Sample:
        for sample in self.samples:
            if sample.name == name:
                return sample
        known = ", ".join(s.name for s in self.samples)
        raise CatalogError(f"unknown sample '{name}' in release {self.name}; known samples: {known}")

    def group(self, group_id: str) -> Group:
        for group in self.groups:
            if group.id == group_id:
                return group
        raise CatalogError(f"unknown group '{group_id}' in release {self.name}")

    def stacked_groups(self, group_ids: Sequence[str] | None) -> tuple[Group, ...]:
        """The groups a run stacks: the ones its configuration names, else every group of the release."""
        return self.groups if group_ids is None else tuple(self.group(g) for g in group_ids)

    def select(self, names: list[str] | None) -> list[Sample]:
        """The named samples (or groups, or ``data``/``mc``), or all of them when ``names`` is empty."""
        if not names:
            return list(self.samples)
        chosen: list[Sample] = []
        for name in names:
            if name in ("data", "mc"):
                matched = [s for s in self.samples if s.kind == name]
            elif any(g.id == name for g in self.groups):
                matched = [s for s in self.samples if s.group == name]
            else:
                matched = [self.sample(name)]
            chosen.extend(s for s in matched if s not in chosen)
        return chosen

    def url(self, sample: Sample, protocol: str = "https", base_url: str | None = None) -> str:
        """Where ``sample`` lives: under ``base_url`` if given, else on the release's public server."""
        if base_url is not None:
            return base_url.rstrip("/") + "/" + sample.path
        if protocol == "https" and sample.urls:
            return sample.urls[0]
        if protocol not in self.base_urls:
            raise CatalogError(
                f"release {self.name} has no '{protocol}' location; "
                f"available: {', '.join(sorted(self.base_urls)) or 'https'}"
            )
        return self.base_urls[protocol].rstrip("/") + "/" + sample.path

    @property
    def file_suffixes(self) -> frozenset[str]:
        """How this release's file names end (``.4lep.root``, ``.exactly4lep.root``)."""
        return frozenset("." + ".".join(s.file_name.split(".")[-2:]) for s in self.samples)

    def recognise(self, location: str) -> Sample | None:
        """The sample a file belongs to, judged from its file name, or None.

        A DSID alone only counts in a name that ends as this release's names do: the same DSID
        (345060, ggH) is a sample of both releases.
        """
        name = PurePosixPath(urlsplit(location).path if "://" in location else location).name
        for sample in self.samples:
            if sample.file_name == name:
                return sample
        dsid = _dsid_in(name)
        if dsid is not None and name.endswith(tuple(self.file_suffixes)):
            for sample in self.samples:
                if sample.dsid == dsid:
                    return sample
        return None

    def run_luminosity(self, names: Iterable[str], override: float | None = None,
                       defined: Sequence[Sample] = ()) -> tuple[float, list[str]]:
        """The luminosity a run of the samples ``names`` scales its MC to, and warnings about it.

        The data periods given decide (the MC is scaled to the data it is compared with); without
        data, the release's. ``override`` (a configured ``luminosity_fb``) wins over both.
        ``defined`` are samples a fileset defines beyond the catalog.
        """
        listed = list(names)
        known = (*defined, *self.samples)
        data = self.data_luminosity(listed, defined)
        has_mc = any(not s.is_data for s in known if s.name in listed)
        warnings: list[str] = []
        periods = ", ".join(dict.fromkeys(s.name for s in known if s.is_data and s.name in listed))
        if override is not None:
            if data is not None and not math.isclose(override, data, rel_tol=1e-6):
                warnings.append(f"luminosity_fb = {override:g} fb⁻¹ is configured, but the data periods given "
                                f"({periods}) hold {data:g} fb⁻¹; the MC is scaled to {override:g} fb⁻¹")
            return override, warnings
        if data is None:
            return self.luminosity_fb, warnings
        if has_mc and not math.isclose(data, self.luminosity_fb, rel_tol=1e-6):
            warnings.append(f"the data periods given ({periods}) hold {data:g} fb⁻¹, not the {self.luminosity_fb:g} "
                            f"fb⁻¹ of release {self.name}; the MC is scaled to {data:g} fb⁻¹")
        return data, warnings

    def data_luminosity(self, names: Iterable[str], defined: Sequence[Sample] = ()) -> float | None:
        """The summed luminosity of the data periods among ``names``; None when there is none."""
        periods = {s.name: s for s in (*self.samples, *defined) if s.is_data}
        chosen = [periods[n] for n in dict.fromkeys(names) if n in periods]
        if not chosen:
            return None
        return math.fsum(s.luminosity_fb or 0.0 for s in chosen)


_DSID = re.compile(r"(?:^|_)mc_(\d{6})\.")


def _dsid_in(file_name: str) -> int | None:
    match = _DSID.search(file_name)
    return int(match.group(1)) if match else None


def _raw_catalog(release: str) -> dict[str, Any]:
    if release not in _CATALOG_FILES:
        raise CatalogError(f"unknown release '{release}'; known releases: {', '.join(RELEASES)}")
    text = resources.files("atlaspipe.physics.catalogs").joinpath(_CATALOG_FILES[release]).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _groups(raw: dict[str, Any]) -> tuple[Group, ...]:
    return tuple(
        Group(id=g["id"], label=g["label"], text=g["text"], color=g["color"], kind=g["kind"])
        for g in raw["groups"]
    )


def _release_2020(raw: dict[str, Any]) -> Release:
    samples = [
        Sample(name=d["name"], release="2020", kind="data", file_name=PurePosixPath(d["path"]).name,
               path=d["path"], luminosity_fb=float(d["luminosity_fb"]))
        for d in raw["data"]
    ]
    samples += [
        Sample(
            name=m["name"], release="2020", kind="mc", file_name=PurePosixPath(m["path"]).name,
            path=m["path"], group=m["group"], dsid=int(m["dsid"]), xsec_pb=float(m["xsec_pb"]),
            sumw=float(m["sumw"]), red_eff=float(m["red_eff"]),
        )
        for m in raw["mc"]
    ]
    yields = {k: float(v) for k, v in raw.get("reference_yields", {}).items() if k != "source"}
    return Release(
        name="2020", title=raw["title"], tree=raw["tree"], schema=raw["schema"],
        energy_unit=raw["energy_unit"], luminosity_fb=float(raw["luminosity_fb"]),
        groups=_groups(raw), samples=tuple(samples), base_urls=dict(raw["base_urls"]),
        reference_yields=yields, analysis=AnalysisDefaults.from_raw(raw["analysis_defaults"]),
    )


def _release_2025e(raw: dict[str, Any]) -> Release:
    group_of = {dsid: g["id"] for g in raw["groups"] for dsid in g["dataset_numbers"]}
    skim = raw["skim"]
    samples: list[Sample] = []
    for d in raw["data"]:
        url = d["file_list"][0]
        file_name = PurePosixPath(urlsplit(url).path).name
        samples.append(Sample(name=d["name"], release="2025e", kind="data", file_name=file_name,
                              path=file_name, urls=tuple(d["file_list"]),
                              luminosity_fb=float(d["luminosity_fb"])))
    for ds in raw["datasets"]:
        dsid = int(ds["dataset_number"])
        files = next(s["file_list"] for s in ds["skims"] if s["skim_type"] == skim)
        file_name = PurePosixPath(urlsplit(files[0]).path).name
        samples.append(Sample(
            name=ds["physics_short"], release="2025e", kind="mc", file_name=file_name, path=file_name,
            group=group_of.get(dsid), dsid=dsid, xsec_pb=float(ds["cross_section_pb"]),
            sumw=float(ds["sumOfWeights"]), filter_eff=float(ds["genFiltEff"]),
            k_factor=float(ds["kFactor"]), urls=tuple(files),
        ))
    https_base = raw["file_pattern"]["https"].rsplit("/", 1)[0] + "/"
    return Release(
        name="2025e", title=raw["title"], tree=raw["tree"], schema=raw["schema"],
        energy_unit=raw["energy_unit"], luminosity_fb=float(raw["luminosity_fb"]),
        groups=_groups(raw), samples=tuple(samples), base_urls={"https": https_base},
        analysis=AnalysisDefaults.from_raw(raw["analysis_defaults"]),
    )


@cache
def load_release(name: str) -> Release:
    """The catalog of release ``name`` ("2020" or "2025e")."""
    raw = _raw_catalog(name)
    return _release_2020(raw) if name == "2020" else _release_2025e(raw)


GENERATED_TITLE = "atlaspipe generate"
"""How the TTree title of every file ``atlaspipe generate`` writes begins (the real files' title is
the tree name): the mark by which a run tells pseudo-data from ATLAS data."""


def is_generated_title(title: str | None) -> bool:
    """Whether a TTree title marks a file written by ``atlaspipe generate``."""
    return bool(title) and str(title).startswith(GENERATED_TITLE)


def recognise_file(location: str, release: str | None = None,
                   content_release: str | None = None) -> tuple[Release, Sample]:
    """The release and sample a file belongs to, or a CatalogError saying why not.

    ``content_release`` is the release the file's trees say it is (``atlaspipe.io.identify.release_of_trees``): it
    decides, and the file name then only has to name a sample of that release. Without it the file
    name decides.
    """
    if content_release is not None and release is not None and content_release != release:
        tree = load_release(content_release).tree
        raise CatalogError(f"{location}: a release {content_release} file (tree '{tree}'), but release {release} "
                           "was asked for; run one release at a time")
    wanted = content_release or release
    candidates = [wanted] if wanted else list(RELEASES)
    for candidate in candidates:
        rel = load_release(candidate)
        sample = rel.recognise(location)
        if sample is not None:
            return rel, sample
    scope = f"release {wanted}" if wanted else "any release"
    found = f" (its tree '{load_release(content_release).tree}' is release {content_release}'s)" \
        if content_release else ""
    raise CatalogError(
        f"{location}: file name not recognised as a sample of {scope}{found}"
        "; name the file, or a symbolic link to it, as its sample in the catalog: data_A.4lep.root, "
        "mc_345060.ggH125_ZZ4lep.4lep.root, ODEO_FEB2025_v0_exactly4lep_<name>.exactly4lep.root "
        '(docs/data-access.md, "Analysing your own files")'
    )
