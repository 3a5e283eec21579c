"""Filesets in coffea's style: sample name → its files, and what the sample is.

A fileset lets files of any name be analysed. Each sample either names the catalog sample it is
(``catalog``), or brings its own normalisation (``xsec_pb`` and ``sumw``, optionally ``red_eff``)
and ``group``; data samples say ``"kind": "data"``. ``files`` is a list, or coffea's mapping of
file → tree name. Keys may also sit under coffea's ``metadata``. As JSON::

    {
      "higgs": {"files": ["/data/a.root", "/data/b.root"], "catalog": "ggH125_ZZ4lep"},
      "my_zz": {"files": {"/data/zz.root": "mini"}, "group": "background_zz", "xsec_pb": 1.25,
                "sumw": 2.0e6, "red_eff": 0.5},
      "run2":  {"files": ["/data/d.root"], "kind": "data", "luminosity_fb": 4.7}
    }

or the same in TOML (``[higgs]`` with ``files = [...]``). Relative paths are relative to the
fileset file. Planning turns it into input files (``atlaspipe.pipeline.planning``); the samples it
defines beyond the catalog travel in the run's ``AnalysisConfig.samples``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from atlaspipe.errors import ConfigError


class SampleDefinition(BaseModel):
    """A sample that a fileset defines beyond its release's catalog: what scales and draws it."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    name: str
    kind: Literal["data", "mc"] = "mc"
    group: str | None = None
    xsec_pb: float | None = Field(None, gt=0)
    sumw: float | None = Field(None, gt=0)
    red_eff: float | None = Field(None, gt=0)
    luminosity_fb: float | None = Field(None, gt=0)
    """A data sample's integrated luminosity, which the MC is scaled to."""


class FilesetEntry(BaseModel):
    """One sample of a fileset: its files, and either a catalog sample or its own description."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    files: tuple[str, ...] = Field(min_length=1)
    trees: tuple[str | None, ...] = ()
    """The tree of each file (coffea's ``{file: tree}``); empty or None: the release's tree."""
    catalog: str | None = None
    """The catalog sample these files are; its cross-section, sum of weights and group apply."""
    kind: Literal["data", "mc"] | None = None
    group: str | None = None
    xsec_pb: float | None = Field(None, gt=0)
    sumw: float | None = Field(None, gt=0)
    red_eff: float | None = Field(None, gt=0)
    luminosity_fb: float | None = Field(None, gt=0)
    """A data sample's integrated luminosity (the MC is scaled to the data's)."""

    @model_validator(mode="before")
    @classmethod
    def _coffea_layout(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return {"files": raw} if isinstance(raw, list) else raw
        raw = dict(raw)
        raw.update(raw.pop("metadata", None) or {})
        if "xsec" in raw:
            raw["xsec_pb"] = raw.pop("xsec")
        files = raw.get("files")
        if isinstance(files, dict):
            raw["files"] = list(files)
            raw["trees"] = list(files.values())
        return raw

    @model_validator(mode="after")
    def _check(self) -> FilesetEntry:
        if self.trees and len(self.trees) != len(self.files):
            raise ValueError("trees must name one tree per file")
        if self.catalog is None and self.kind != "data" and (self.xsec_pb is None) != (self.sumw is None):
            raise ValueError("give both xsec_pb and sumw, or a catalog sample")
        return self

    def tree(self, index: int) -> str | None:
        return self.trees[index] if self.trees else None


Fileset = dict[str, FilesetEntry]
"""Sample name → its files and description."""


def parse_fileset(raw: Any, where: str = "fileset", base: Path | None = None) -> Fileset:
    """A fileset from its parsed JSON or TOML; relative local paths are taken from ``base``."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: a fileset maps sample names to their files; found no samples")
    fileset: Fileset = {}
    for name, value in raw.items():
        try:
            entry = FilesetEntry.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            location = ".".join(str(p) for p in first["loc"]) or "entry"
            raise ConfigError(f"{where}: sample '{name}': {location}: {first['msg']}") from None
        if base is not None:
            entry = entry.model_copy(update={"files": tuple(
                f if "://" in f or Path(f).is_absolute() else str(base / f) for f in entry.files)})
        fileset[str(name)] = entry
    return fileset


def load_fileset(path: Path) -> Fileset:
    """A fileset file, JSON or TOML (by its suffix)."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"fileset {path}: cannot read: {exc.strerror or exc}") from None
    try:
        raw = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"fileset {path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: "
                          f"{exc}") from None
    return parse_fileset(raw, f"fileset {path}", path.absolute().parent)


def fileset_locations(fileset: Fileset | None) -> tuple[str, ...]:
    """Every file a fileset names, in order."""
    return tuple(f for entry in (fileset or {}).values() for f in entry.files)
