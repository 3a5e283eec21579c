"""Analysis configuration and runtime settings, each declared once and validated."""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from atlaspipe.errors import ConfigError

DEFAULT_CHUNK_SIZE = 500_000
"""Entries per chunk, from the measured sweep in benchmarks/RESULTS.md: one 500k-entry cluster of
the generated files (smaller chunks decompress the same baskets several times), peak worker RSS
well under 400 MB, and still 20+ chunks for 2 workers on the 10M-event benchmark."""


class FitConfig(BaseModel):
    """Uncertainties of the pyhf profile-likelihood fit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    background_norm_uncertainty: float = Field(0.10, ge=0.0, lt=1.0)
    staterror: bool = True


class AnalysisConfig(BaseModel):
    """Everything that decides the numbers of a run, so a run's config reproduces it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    release: Literal["2020", "2025e"] = "2020"
    bins: int = Field(34, gt=0, le=10_000)
    m4l_range_gev: tuple[float, float] = (80.0, 250.0)
    mass_window_gev: tuple[float, float] = (115.0, 130.0)
    lepton_pt_gev: tuple[float, float, float] | None = None
    """Leading-lepton pT cuts; None means the release default (2020: none, 2025e: 20/15/10)."""
    sfos_pairing: bool = False
    lepton_order: Literal["stored", "pt"] | None = None
    """Which leptons the pT cuts see first: as stored (the notebooks) or pT-ordered; None means the release default."""
    luminosity_fb: float | None = Field(None, gt=0)
    """Overrides the release's integrated luminosity."""
    stacked_groups: tuple[str, ...] | None = None
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, gt=0, le=100_000_000)
    fit: FitConfig = Field(default_factory=FitConfig)

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


def analysis_config(**values: Any) -> AnalysisConfig:
    """An AnalysisConfig from keyword values, with validation errors as one-line ConfigErrors."""
    try:
        return AnalysisConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "analysis configuration")) from None


def load_config(path: Path, **overrides: Any) -> AnalysisConfig:
    """Read a TOML or JSON analysis configuration file; ``overrides`` win over the file."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: malformed config file: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: config file must hold a table of settings")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return AnalysisConfig(**raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path))) from None


def _describe(exc: ValidationError, where: str) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()
    )
    return f"{where}: invalid setting: {problems}"


def _secret(name: str, default: str | None = None) -> str | None:
    """``$NAME``, else the content of the file named by ``$NAME_FILE`` (Docker/Kubernetes secrets)."""
    value = os.environ.get(name)
    if value:
        return value
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text("utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={file_name}: cannot read secret file: {exc.strerror}") from None
    return default


@dataclass(frozen=True)
class RuntimeSettings:
    """Where things are: broker, backend, folders. Read from the environment."""

    broker_url: str
    result_backend: str
    output_dir: Path
    cache_dir: Path
    metrics_port: int

    @classmethod
    def from_env(cls) -> RuntimeSettings:
        port_text = os.environ.get("ATLASPIPE_METRICS_PORT", "9808")
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"ATLASPIPE_METRICS_PORT={port_text!r} is not a port number") from None
        return cls(
            broker_url=_secret("ATLASPIPE_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//") or "",
            result_backend=_secret("ATLASPIPE_RESULT_BACKEND", "redis://127.0.0.1:6379/0") or "",
            output_dir=Path(os.environ.get("ATLASPIPE_OUTPUT_DIR", "atlaspipe-output")),
            cache_dir=Path(os.environ.get("ATLASPIPE_CACHE_DIR", Path.home() / ".cache" / "atlaspipe")),
            metrics_port=port,
        )


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
        assert deliveries is not None and patience is not None
        return cls(max_deliveries=int(deliveries), backend_patience_seconds=patience, soft_time_limit=soft,
                   time_limit=hard)


def warn_password_in_argv(option: str, url: str | None) -> None:
    """Warn when a URL with a password came on the command line: every local user sees argv in ``ps``."""
    from urllib.parse import urlsplit

    if url and urlsplit(url).password:
        import sys

        variable = "ATLASPIPE_BROKER_URL" if "broker" in option else "ATLASPIPE_RESULT_BACKEND"
        print(f"warning: {option} carries a password, which other users can read in `ps`; set {variable} "
              f"or {variable}_FILE instead", file=sys.stderr)
