"""Analysis configuration and runtime settings, each declared once and validated."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from atlaspipe.errors import ConfigError
from atlaspipe.fileset import SampleDefinition

if TYPE_CHECKING:
    from atlaspipe.physics.catalog import Sample

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 500_000
"""Entries per chunk, from the measured sweep in benchmarks/RESULTS.md: one 500k-entry cluster of
the generated files (smaller chunks decompress the same baskets several times), peak worker RSS
well under 400 MB, and still 20+ chunks for 2 workers on the 10M-event benchmark."""


NonFinitePolicy = Literal["exclude", "error"]
FitChannels = Literal["combined", "simultaneous"]
"""The fit's channels: one over the m4l of the three lepton channels summed (``combined``), or one per
lepton channel (4e, 4μ, 2e2μ) fitted together with a shared μ and background normalisations
(``simultaneous``)."""
FIT_CHANNELS: tuple[FitChannels, ...] = ("combined", "simultaneous")


class FitConfig(BaseModel):
    """Uncertainties and channels of the pyhf profile-likelihood fit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    background_norm_uncertainty: float = Field(0.10, ge=0.0, lt=1.0)
    staterror: bool = True
    channels: FitChannels = "combined"


class AnalysisSettings(BaseModel):
    """What a user may set for a run; a field left None takes the default of the run's release,
    from its notebook (``AnalysisDefaults`` in the release catalog), once planning knows the release."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    bins: int | None = Field(None, gt=0, le=10_000)
    m4l_range_gev: tuple[float, float] | None = None
    mass_window_gev: tuple[float, float] | None = None
    lepton_pt_gev: tuple[float, float, float] | None = None
    """Thresholds on the first three leptons; None: the release's (2020 none, 2025e 20/15/10 GeV)."""
    lepton_order: Literal["stored", "pt"] | None = None
    """Which leptons the pT cuts see first: as stored, as the notebooks do, or pT-ordered."""
    sfos_pairing: bool = False
    luminosity_fb: float | None = Field(None, gt=0)
    """Overrides the release's integrated luminosity."""
    stacked_groups: tuple[str, ...] | None = None
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, gt=0, le=100_000_000)
    fit: FitConfig = Field(default_factory=FitConfig)
    non_finite: NonFinitePolicy = "exclude"
    """An event with a NaN or infinite lepton pT, η, φ, E or weight: left out and counted per
    sample (``exclude``), or its chunk fails naming the file, branch and entry (``error``)."""

    def with_fit_channels(self, channels: str | None) -> AnalysisSettings:
        """These settings with the fit's ``channels`` (``FitChannels``) replaced; None keeps them."""
        if channels is None:
            return self
        try:
            fit = FitConfig(**{**self.fit.model_dump(), "channels": channels})
        except ValidationError as exc:
            raise ConfigError(_describe(exc, "fit configuration")) from None
        return self.model_copy(update={"fit": fit})

    def resolve(self, release: str) -> AnalysisConfig:
        """The complete configuration of a run of ``release``: these settings over its defaults."""
        from atlaspipe.physics.catalog import load_release

        loaded = load_release(release)
        defaults = loaded.analysis
        try:
            return AnalysisConfig(
                release="2025e" if loaded.name == "2025e" else "2020", bins=self.bins or defaults.bins,
                m4l_range_gev=self.m4l_range_gev or defaults.m4l_range_gev,
                mass_window_gev=self.mass_window_gev or defaults.mass_window_gev,
                lepton_pt_gev=self.lepton_pt_gev if self.lepton_pt_gev is not None else defaults.lepton_pt_gev,
                lepton_order=self.lepton_order or defaults.lepton_order, sfos_pairing=self.sfos_pairing,
                luminosity_fb=self.luminosity_fb, stacked_groups=self.stacked_groups, chunk_size=self.chunk_size,
                fit=self.fit, non_finite=self.non_finite,
            )
        except ValidationError as exc:
            raise ConfigError(_describe(exc, f"analysis configuration for release {release}")) from None


class AnalysisConfig(BaseModel):
    """Everything that decides the numbers of a run, resolved for its release, so it reproduces the run."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    release: Literal["2020", "2025e"]
    bins: int = Field(gt=0, le=10_000)
    m4l_range_gev: tuple[float, float]
    mass_window_gev: tuple[float, float]
    lepton_pt_gev: tuple[float, float, float] | None
    """Thresholds on the first three leptons (None: no pT cut)."""
    lepton_order: Literal["stored", "pt"]
    sfos_pairing: bool = False
    luminosity_fb: float | None = Field(None, gt=0)
    """Overrides the release's integrated luminosity."""
    stacked_groups: tuple[str, ...] | None = None
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, gt=0, le=100_000_000)
    fit: FitConfig = Field(default_factory=FitConfig)
    non_finite: NonFinitePolicy = "exclude"
    """An event with a NaN or infinite lepton pT, η, φ, E or weight: left out and counted per
    sample (``exclude``), or its chunk fails naming the file, branch and entry (``error``)."""
    samples: tuple[SampleDefinition, ...] = ()
    """Samples the run's fileset defines beyond the release's catalog."""

    def sample(self, name: str) -> Sample:
        """The sample ``name``: as the run's fileset defines it, else from the release's catalog."""
        from atlaspipe.physics.catalog import Sample, load_release

        for defined in self.samples:
            if defined.name == name:
                return Sample(name=name, release=self.release, kind=defined.kind, file_name="", path="",
                              group=defined.group, xsec_pb=defined.xsec_pb, sumw=defined.sumw,
                              red_eff=defined.red_eff, luminosity_fb=defined.luminosity_fb)
        return load_release(self.release).sample(name)

    @model_validator(mode="after")
    def _check_ranges(self) -> AnalysisConfig:
        lo, hi = self.m4l_range_gev
        if not lo < hi:
            raise ValueError(f"m4l_range_gev must be increasing, got {self.m4l_range_gev}")
        w_lo, w_hi = self.mass_window_gev
        if not lo <= w_lo < w_hi <= hi:
            raise ValueError(f"mass_window_gev {self.mass_window_gev} must lie inside {self.m4l_range_gev}")
        edges = self.bin_edges()
        for edge in (w_lo, w_hi):
            if not any(abs(edge - e) < 1e-9 for e in edges):
                raise ValueError(f"mass_window_gev edge {edge} is not a bin edge of the m4l binning")
        return self

    def bin_edges(self) -> list[float]:
        lo, hi = self.m4l_range_gev
        width = (hi - lo) / self.bins
        return [lo + i * width for i in range(self.bins)] + [hi]

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def analysis_settings(**values: Any) -> AnalysisSettings:
    """AnalysisSettings from keyword values (None ones left to the release), one-line ConfigErrors."""
    try:
        return AnalysisSettings(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "analysis configuration")) from None


def analysis_config(release: str = "2020", **values: Any) -> AnalysisConfig:
    """The complete configuration of a run of ``release`` with these settings, the rest its defaults."""
    return analysis_settings(**values).resolve(release)


CONFIG_SECTION = "analysis"
"""A config file holds the settings at its top level or in an ``[analysis]`` table."""


def load_settings(path: Path, **overrides: Any) -> AnalysisSettings:
    """Read a TOML or JSON analysis configuration file; ``overrides`` win over the file."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    log.debug("analysis settings from %s", path)
    try:
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: malformed config file: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: config file must hold a table of settings")
    if isinstance(raw.get(CONFIG_SECTION), dict):
        others = sorted(k for k in raw if k != CONFIG_SECTION)
        if others:
            raise ConfigError(f"{path}: settings go either in [{CONFIG_SECTION}] or at the top level, "
                              f"not both (found {', '.join(others)} beside [{CONFIG_SECTION}])")
        raw = dict(raw[CONFIG_SECTION])
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return AnalysisSettings(**raw)
    except ValidationError as exc:
        fields = ", ".join(sorted(AnalysisSettings.model_fields))
        raise ConfigError(f"{_describe(exc, str(path))} (settings: {fields}; optionally under "
                          f"[{CONFIG_SECTION}])") from None


def _describe(exc: ValidationError, where: str) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()
    )
    return f"{where}: invalid setting: {problems}"


def secret(name: str, default: str | None = None) -> str | None:
    """``$NAME``, else the content of the file named by ``$NAME_FILE`` (Docker/Kubernetes secrets)."""
    value = os.environ.get(name)
    if value:
        return value
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            value = Path(file_name).read_text("utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={file_name}: cannot read secret file: {exc.strerror}") from None
        log.debug("%s from the file %s", name, file_name)
        return value
    return default


@dataclass(frozen=True)
class RuntimeSettings:
    """Where things are: broker, backend, folders. Read from the environment."""

    broker_url: str
    result_backend: str
    output_dir: Path
    cache_dir: Path
    metrics_port: int
    task_events: bool = False
    """Celery task events (``ATLASPIPE_TASK_EVENTS=1``), for a monitor such as Flower; off, they
    cost every task three extra broker messages. Flower also turns them on at run time."""

    @classmethod
    def from_env(cls) -> RuntimeSettings:
        port_text = os.environ.get("ATLASPIPE_METRICS_PORT", "9808")
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"ATLASPIPE_METRICS_PORT={port_text!r} is not a port number") from None
        return cls(
            broker_url=secret("ATLASPIPE_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//") or "",
            result_backend=secret("ATLASPIPE_RESULT_BACKEND", "redis://127.0.0.1:6379/0") or "",
            output_dir=Path(os.environ.get("ATLASPIPE_OUTPUT_DIR", "atlaspipe-output")),
            cache_dir=cache_folder(),
            metrics_port=port,
            task_events=os.environ.get("ATLASPIPE_TASK_EVENTS", "0").strip().lower() in {"1", "true", "yes", "on"},
        )


def package_data_folder() -> Path:
    """Where the package keeps its data files (the embedded demo sample)."""
    return Path(__file__).resolve().parent / "data"


def cache_folder() -> Path:
    """Where downloads (and a regenerated embedded sample) are kept: ``$ATLASPIPE_CACHE_DIR``, else
    ``~/.cache/atlaspipe``."""
    return Path(os.environ.get("ATLASPIPE_CACHE_DIR") or Path.home() / ".cache" / "atlaspipe").expanduser()


def redact_url(url: str) -> str:
    """``url`` with any password replaced, for logs and manifests."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def is_loopback(host: str) -> bool:
    """True for an address that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive_number(name: str, default: float | None) -> float | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={text!r} must be positive")
    return value


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker treats trouble: deliveries per chunk, patience with the result backend, time limits."""

    max_deliveries: int = 3
    """Deliveries of one chunk before it is failed (a chunk that kills its worker each time)."""
    backend_patience_seconds: float = 300.0
    """How long a task waits for an unreachable result backend, holding its message, before requeueing it."""
    soft_time_limit: float | None = None
    time_limit: float | None = None

    @classmethod
    def from_env(cls) -> WorkerSettings:
        deliveries = _positive_number("ATLASPIPE_MAX_DELIVERIES", 3)
        patience = _positive_number("ATLASPIPE_BACKEND_PATIENCE", 300.0)
        soft = _positive_number("ATLASPIPE_TASK_SOFT_TIME_LIMIT", None)
        hard = _positive_number("ATLASPIPE_TASK_TIME_LIMIT", None)
        if soft is not None and hard is None:
            # The hard limit must leave the soft one time to be handled.
            hard = soft + 60
        if soft is not None and hard is not None and hard <= soft:
            raise ConfigError("ATLASPIPE_TASK_TIME_LIMIT must be larger than ATLASPIPE_TASK_SOFT_TIME_LIMIT")
        assert deliveries is not None
        assert patience is not None
        return cls(max_deliveries=int(deliveries), backend_patience_seconds=patience, soft_time_limit=soft,
                   time_limit=hard)

