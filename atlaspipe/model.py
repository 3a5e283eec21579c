"""The run model: the frozen, typed values that cross module and process boundaries.

A run is a request, then a plan of chunks, then one result per chunk, an aggregate, and finally
the results document; its status says where it is. Each of these is a pydantic model, frozen,
with a ``schema_version`` and a JSON round trip (``to_json`` / ``from_json``), so the same value
travels through Redis, the run folder and the web report without a hand-written dict in between.
``results.json`` and ``status.json`` are validated against the JSON Schemas generated from these
types (``python -m atlaspipe.model`` writes them to ``docs/schemas/``).
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from atlaspipe.config import AnalysisConfig, AnalysisSettings, FitChannels
from atlaspipe.errors import ConfigError, SchemaError
from atlaspipe.fileset import FilesetEntry, fileset_locations
from atlaspipe.physics.channels import CHANNELS

if TYPE_CHECKING:
    import hist

M4L = "m4l"
"""The name of the four-lepton mass histogram in chunk results and aggregates; the control
distributions sit beside it under their ``physics.selection.CONTROL_VARIABLES`` names."""


class Document(BaseModel):
    """A frozen value with a JSON round trip; unknown fields are an error, not silently kept."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True,
                              use_attribute_docstrings=True)

    def to_json(self, indent: int | None = None) -> str:
        return self.model_dump_json(indent=indent)

    def to_jsonable(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "") -> Self:
        """Parse a document; a wrong schema version or shape is one ``SchemaError`` line."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise SchemaError(_describe(cls.__name__, where, exc)) from None

    @classmethod
    def from_jsonable(cls, raw: Any, where: str = "") -> Self:
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise SchemaError(_describe(cls.__name__, where, exc)) from None

    @classmethod
    def read(cls, path: Path) -> Self:
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise SchemaError(f"{path}: cannot read: {exc.strerror or exc}") from None
        return cls.from_json(text, str(path))


def _describe(kind: str, where: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    location = ".".join(str(p) for p in first["loc"]) or "document"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where or kind}: not a valid {kind}: {location}: {first['msg']}{more}"


# --- the run's life -----------------------------------------------------------------------------


class RunState(StrEnum):
    """Where a run is. The last four are terminal."""

    SUBMITTED = "submitted"
    PLANNING = "planning"
    RUNNING = "running"
    AGGREGATING = "aggregating"
    FINALIZING = "finalizing"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({RunState.SUCCEEDED, RunState.PARTIAL, RunState.FAILED, RunState.CANCELLED})
ACTIVE_STATES = frozenset(set(RunState) - TERMINAL_STATES)

TRANSITIONS: Mapping[RunState, frozenset[RunState]] = {
    RunState.SUBMITTED: frozenset({RunState.PLANNING, RunState.FAILED, RunState.CANCELLED}),
    RunState.PLANNING: frozenset({RunState.RUNNING, RunState.FAILED, RunState.CANCELLED, RunState.SUBMITTED}),
    RunState.RUNNING: frozenset({RunState.AGGREGATING, RunState.FAILED, RunState.CANCELLED, RunState.RUNNING}),
    RunState.AGGREGATING: frozenset({RunState.FINALIZING, RunState.FAILED, RunState.CANCELLED, RunState.RUNNING}),
    RunState.FINALIZING: frozenset({RunState.SUCCEEDED, RunState.PARTIAL, RunState.FAILED, RunState.CANCELLED,
                                    RunState.RUNNING}),
    # `resume` starts a stalled, failed or partial run again as a new generation (back to
    # ``running``), or from planning (``submitted``) if it never got a plan.
    RunState.FAILED: frozenset({RunState.SUBMITTED, RunState.RUNNING}),
    RunState.PARTIAL: frozenset({RunState.RUNNING}),
    RunState.SUCCEEDED: frozenset(),
    RunState.CANCELLED: frozenset(),
}
"""Every allowed change of state; anything else is refused by the lifecycle."""

Executor = Literal["in-process", "celery"]


# --- request and plan ---------------------------------------------------------------------------


def new_run_id() -> str:
    """A sortable, unique run id such as ``20261126-093000-1a2b3c``."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


class RunRequest(Document):
    """What a user asked for; the load stage turns it into a plan."""

    schema_version: Literal[1] = 1
    run_id: str
    release: Literal["2020", "2025e"] | None = None
    inputs: tuple[str, ...] = ()
    samples: tuple[str, ...] = ()
    fileset: dict[str, FilesetEntry] | None = None
    """Sample name → files and description (``--fileset``), instead of ``inputs`` recognised by name."""
    base_url: str | None = None
    fetch: bool = False
    config: AnalysisSettings = Field(default_factory=AnalysisSettings)
    """The analysis settings; planning resolves them for the release it finds."""
    output_dir: str
    allow_partial: bool = False
    keep_records: bool = False
    pdf_figures: bool = False
    """Also write each figure as PDF; off by default, since a PDF costs about what its PNG does."""
    submitted_by: str = ""
    created: str

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_id

    @property
    def input_locations(self) -> tuple[str, ...]:
        """Every file or folder the run names, in ``inputs`` and in its fileset."""
        return self.inputs + fileset_locations(self.fileset)


class Chunk(Document):
    """Entries ``[entry_start, entry_stop)`` of ``tree`` in ``source``, which belongs to ``sample``.

    ``file_entries`` is the file's entry count when the run was planned, so a file that changed
    since then is caught instead of being half-read.
    """

    chunk_id: int
    release: str
    sample: str
    source: str
    tree: str
    entry_start: int
    entry_stop: int
    file_entries: int

    def model_post_init(self, _context: Any, /) -> None:
        if not 0 <= self.entry_start <= self.entry_stop <= self.file_entries:
            raise ConfigError(
                f"chunk {self.chunk_id} of {self.source}: invalid entry range "
                f"[{self.entry_start}, {self.entry_stop}) for a file of {self.file_entries} entries"
            )

    @property
    def num_entries(self) -> int:
        return self.entry_stop - self.entry_start

    @property
    def where(self) -> str:
        """The file and entry range, as every message about this chunk names them."""
        return f"{self.source} [{self.entry_start}, {self.entry_stop})"


class PlannedFile(Document):
    """One input file of a plan: its sample and what planning learned of it, or why it could not be opened."""

    release: str
    sample: str
    source: str
    tree: str
    entries: int | None = None
    size_bytes: int | None = None
    error: str | None = None
    generated: bool = False
    """Its TTree title marks it as written by ``atlaspipe generate``: pseudo-data or generated MC."""


class SkippedInput(Document):
    """A path found while expanding an input folder that the run does not read, and why."""

    source: str
    reason: str


class RunPlan(Document):
    """A run's inputs and chunks, in chunk-id order, plus notes for the user."""

    schema_version: Literal[1] = 1
    run_id: str
    config: AnalysisConfig
    files: tuple[PlannedFile, ...]
    chunks: tuple[Chunk, ...]
    notes: tuple[str, ...] = ()
    skipped: tuple[SkippedInput, ...] = ()
    """Paths in input folders left out: symlink loops, links to nothing, files not named as a sample."""
    created: str

    @property
    def release(self) -> str:
        return self.config.release

    @property
    def total_entries(self) -> int:
        return sum(c.num_entries for c in self.chunks)

    def without_chunks(self) -> RunPlan:
        """The plan's description alone; the chunks are stored one by one beside it."""
        return self.model_copy(update={"chunks": ()})


# --- chunk results and the aggregate --------------------------------------------------------------


class Counts(Document):
    """Weighted counts of one histogram per channel: ``sumw[channel][bin]``, flow bins included
    (bin 0 is the underflow, the last bin the overflow)."""

    sumw: tuple[tuple[float, ...], ...]
    sumw2: tuple[tuple[float, ...], ...]


class Cutflow(Document):
    """Events passing each cut in turn (``physics.selection.CUTFLOW_STEPS``), one row per cut, one
    column per channel: all, 4e, 4mu, 2e2mu. ``weighted`` is scaled like the histograms."""

    raw: tuple[tuple[int, ...], ...]
    weighted: tuple[tuple[float, ...], ...]


class CutflowTable(Document):
    """The cutflow of every sample (data samples included) of a run."""

    steps: tuple[str, ...]
    columns: tuple[str, ...]
    samples: dict[str, Cutflow]


class ChunkResult(Document):
    """What one chunk produced: histograms and counts, or why it failed. One type for both."""

    schema_version: Literal[1] = 1
    chunk_id: int
    sample: str
    worker: str
    seconds: float = 0.0
    error: str | None = None
    """Why the chunk failed, without its file and entry range (the plan's chunk has those)."""
    events_read: int = 0
    events_selected: int = 0
    events_non_finite: int = 0
    """Events left out for a NaN or infinite lepton kinematic or weight (``non_finite="exclude"``)."""
    bytes_read: int = 0
    histograms: dict[str, Counts] = Field(default_factory=dict)
    """``m4l`` and each control distribution, of the selected events."""
    cutflow: Cutflow | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, chunk: Chunk, reason: str, worker: str, seconds: float = 0.0) -> ChunkResult:
        return cls(chunk_id=chunk.chunk_id, sample=chunk.sample, worker=worker, seconds=seconds, error=reason)


class Failure(Document):
    """A chunk that failed, or a whole input file that could not be opened (``chunk_id`` None)."""

    chunk_id: int | None
    sample: str
    source: str
    entry_start: int | None = None
    entry_stop: int | None = None
    reason: str

    @classmethod
    def of_chunk(cls, chunk: Chunk, reason: str) -> Failure:
        return cls(chunk_id=chunk.chunk_id, sample=chunk.sample, source=chunk.source,
                   entry_start=chunk.entry_start, entry_stop=chunk.entry_stop, reason=reason)

    @classmethod
    def of_file(cls, planned: PlannedFile) -> Failure:
        return cls(chunk_id=None, sample=planned.sample, source=planned.source, reason=planned.error or "")

    def describe(self) -> str:
        """One line naming the file (and entry range) once, then the reason."""
        if self.chunk_id is None:
            return f"file {self.source}: {self.reason}"
        return f"chunk {self.chunk_id} {self.source} [{self.entry_start}, {self.entry_stop}): {self.reason}"


class SampleLoss(Document):
    """What a sample lost to failed chunks and unopenable files.

    ``fraction_lost`` is None when a whole file of the sample could not be opened while others
    were read: that file's entry count is unknown.
    """

    chunks_failed: int
    files_failed: int
    events_lost: int
    fraction_lost: float | None


class SampleAggregate(Document):
    """One sample's merged, scaled histograms and counts."""

    kind: Literal["data", "mc"]
    group: str | None
    normalisation: float
    events_read: int
    events_selected: int
    chunks: int
    chunks_failed: int
    entries_planned: int
    events_lost: int
    files_failed: int
    histograms: dict[str, Counts]
    """``m4l``, and each control distribution that every merged chunk result carried."""
    cutflow: Cutflow | None = None
    """Merged in chunk-id order and scaled; None when a chunk's result had none."""
    events_non_finite: int = 0

    def loss(self) -> SampleLoss | None:
        if not (self.chunks_failed or self.files_failed):
            return None
        # An unopenable file has no known entry count: the fraction is known only when nothing of
        # the sample could be read (1.0) or no file of it was lost.
        if not self.files_failed:
            fraction: float | None = self.events_lost / max(self.entries_planned, 1)
        elif self.entries_planned == self.events_lost:
            fraction = 1.0
        else:
            fraction = None
        return SampleLoss(chunks_failed=self.chunks_failed, files_failed=self.files_failed,
                          events_lost=self.events_lost, fraction_lost=fraction)


class Aggregate(Document):
    """Every sample's histograms merged in chunk-id order and scaled, and what failed."""

    schema_version: Literal[1] = 1
    run_id: str
    release: str
    luminosity_fb: float
    bin_edges: tuple[float, ...]
    channels: tuple[str, ...] = CHANNELS
    samples: dict[str, SampleAggregate]
    chunks_total: int
    failures: tuple[Failure, ...] = ()
    warnings: tuple[str, ...] = ()
    """Physics caveats found while merging (the data's luminosity differs from the MC's)."""

    def missing(self) -> dict[str, SampleLoss]:
        return {name: loss for name, entry in self.samples.items() if (loss := entry.loss()) is not None}


# --- status -------------------------------------------------------------------------------------


class RunStatus(Document):
    """``status.json``: where a run is and how far it got; written by the lifecycle only."""

    schema_version: Literal[1] = 1
    run_id: str
    state: RunState
    executor: Executor
    """Who ran it: ``atlaspipe run`` (in-process) or the Celery workers."""
    generation: int = 0
    """0 for the first launch, one more for each ``resume``."""
    chunks_total: int = 0
    chunks_done: int = 0
    """Chunks with a stored result, a success or a failure."""
    chunks_failed: int = 0
    events_read: int = 0
    """Entries read by the chunks that succeeded."""
    events_total: int = 0
    """Entries planned over every chunk, for the progress bar and the ETA."""
    started: str
    """When the run was submitted (ISO 8601, UTC)."""
    updated: str
    """When its state or progress last changed."""
    message: str = ""
    """One line: why the run failed, was cancelled or is stalled; empty when all is well."""
    failures: tuple[Failure, ...] = ()
    """The first ``MAX_LISTED_FAILURES`` failures."""
    missing: dict[str, SampleLoss] = Field(default_factory=dict)
    """Per sample, what failed chunks and files lost (set when the run ends)."""
    notes: tuple[str, ...] = ()
    """Remarks from planning (empty trees, files left out of a partial run)."""
    run_dir: str | None = None
    """The run folder, as the workers see it."""

    MAX_LISTED_FAILURES: ClassVar[int] = 200

    @property
    def terminal(self) -> bool:
        return self.state.terminal


class LiveGroup(Document):
    """One stacked group's m4l histogram so far: its samples' in-range bins, all channels, scaled."""

    id: str
    label: str
    """The group's name as plain text."""
    color: str
    kind: Literal["background", "signal"]
    values: tuple[float, ...]


class LiveHistogram(Document):
    """``live.json``: the m4l histogram of the chunks stored so far, written with ``status.json``
    while a run runs. Partial by design and summed in whatever order chunks landed: ``results.json``
    holds the run's only exact numbers."""

    schema_version: Literal[1] = 1
    run_id: str
    generation: int = 0
    bin_edges: tuple[float, ...]
    groups: tuple[LiveGroup, ...]
    """MC groups with a planned sample: backgrounds at the bottom of the stack, signal on top."""
    data: tuple[float, ...] | None
    """Data events per in-range bin so far; None for a run without data."""
    chunks_done: int
    chunks_total: int
    events_read: int
    events_total: int
    eta_seconds: float | None = None
    """Time left when this was written, from the rate chunks have landed at since the run
    (or its latest ``resume``) started running; None until a chunk landed."""
    updated: str


# --- results ------------------------------------------------------------------------------------


class Histogram(Document):
    """One histogram (m4l or a control distribution): in-range bins ([lo, hi) each) with their sums
    of squared weights, and the flow bins apart."""

    values: tuple[float, ...]
    variances: tuple[float, ...]
    underflow: float = 0.0
    overflow: float = 0.0
    underflow_variance: float = 0.0
    overflow_variance: float = 0.0

    @classmethod
    def from_flow(cls, sumw: Sequence[float], sumw2: Sequence[float]) -> Histogram:
        """From arrays whose first and last entries are the underflow and overflow."""
        return cls(values=tuple(float(v) for v in sumw[1:-1]), variances=tuple(float(v) for v in sumw2[1:-1]),
                   underflow=float(sumw[0]), overflow=float(sumw[-1]),
                   underflow_variance=float(sumw2[0]), overflow_variance=float(sumw2[-1]))

    @property
    def total(self) -> float:
        return math.fsum(self.values)

    @property
    def uncertainty(self) -> float:
        return math.sqrt(max(0.0, math.fsum(self.variances)))

    def to_hist(self, bin_edges: Sequence[float], name: str = "m4l",
                label: str = "$m_{4\\ell}$ [GeV]") -> hist.Hist[hist.storage.Weight]:
        """This histogram as a ``hist.Hist`` with Weight storage, flow bins filled."""
        import hist as hist_module
        import numpy as np

        histogram = hist_module.Hist(hist_module.axis.Variable(list(bin_edges), name=name, label=label),
                                     storage=hist_module.storage.Weight())
        view = histogram.view(flow=True)
        view.value = np.array([self.underflow, *self.values, self.overflow])
        view.variance = np.array([self.underflow_variance, *self.variances, self.overflow_variance])
        return histogram


class ControlAxis(Document):
    """A control distribution of the selected events and its binning (``physics.selection.CONTROL_VARIABLES``)."""

    name: str
    label: str
    """The axis title, in matplotlib mathtext."""
    unit: str
    """"GeV", or "" for a dimensionless quantity."""
    bin_edges: tuple[float, ...]


OTHER_GROUP_ID = "other"
"""The group of an MC sample whose own group the run does not list (or that has none)."""


class GroupInfo(Document):
    """A stacked-plot group of MC samples, as the catalog describes it."""

    id: str
    label: str
    text: str
    color: str
    kind: Literal["background", "signal"]
    samples: tuple[str, ...]


class SampleYields(Document):
    """One MC sample's selected yield: in-range m4l histogram overall and per channel."""

    group: str | None
    kind: Literal["background", "signal"]
    events_read: int
    events_selected: int
    events_non_finite: int = 0
    """Events left out for a NaN or infinite lepton kinematic or weight."""
    normalisation: float
    expected: float = Field(alias="yield")
    """Sum of the in-range bins."""
    expected_uncertainty: float = Field(alias="yield_uncertainty")
    m4l: Histogram
    channels: dict[str, Histogram]
    controls: dict[str, dict[str, Histogram]] = Field(default_factory=dict)
    """Control distribution (``RunResults.controls``) → channel → histogram, scaled like ``m4l``."""


class DataCounts(Document):
    events_read: int
    events_selected: int
    events_non_finite: int = 0
    """Events left out for a NaN or infinite lepton kinematic."""


class DataSummary(Document):
    """The data's selected events and their m4l histogram (unweighted counts)."""

    kind: Literal["real", "pseudo"] | None = None
    """``pseudo`` when any data file was written by ``atlaspipe generate`` (its TTree title says so),
    ``real`` for ATLAS data, None for a run without data."""
    events_read: int = 0
    events_selected: int = 0
    events_in_range: int = 0
    events_non_finite: int = 0
    """Events left out for a NaN or infinite lepton kinematic, over every data sample."""
    m4l: Histogram
    channels: dict[str, Histogram]
    controls: dict[str, dict[str, Histogram]] = Field(default_factory=dict)
    """Control distribution (``RunResults.controls``) → channel → histogram of the data."""
    samples: dict[str, DataCounts] = Field(default_factory=dict)

    @property
    def given(self) -> bool:
        """Whether the run read data at all (a period selecting no event counts; an MC-only run does not)."""
        return (self.kind is not None or bool(self.samples) or self.events_read > 0
                or self.m4l.total + self.m4l.underflow + self.m4l.overflow > 0)


class Significance(Document):
    """The notebook's figure and the Asimov median significance in the mass window."""

    window_gev: tuple[float, float]
    n_sig_plus_bg: float
    n_bg: float
    n_sig: float
    n_data: float
    notebook: float | None
    asimov: float | None


class LikelihoodScan(Document):
    """The profile likelihood of μ at a few points around μ̂: −2ΔlnL with every other parameter refitted."""

    mu: tuple[float, ...]
    twice_delta_nll: tuple[float, ...]


class FitResult(Document):
    """The binned profile-likelihood fit of the signal strength; values are None when it could not run."""

    mu: float | None = None
    mu_uncertainty: float | None = None
    mu_uncertainty_up: float | None = None
    mu_uncertainty_down: float | None = None
    significance_observed: float | None = None
    significance_expected: float | None = None
    p_value_observed: float | None = None
    p_value_expected: float | None = None
    twice_nll: float | None = None
    parameters: dict[str, tuple[float, ...]] = Field(default_factory=dict)
    parameter_uncertainties: dict[str, tuple[float, ...]] = Field(default_factory=dict)
    """The post-fit (HESSE) uncertainty of each parameter MINUIT fitted."""
    scan: LikelihoodScan | None = None
    background_norm_uncertainty: float
    staterror: bool
    channels: FitChannels = "combined"
    """``simultaneous``: one pyhf channel per lepton channel, sharing μ; ``combined``: one over their sum."""
    mu_upper: float
    mu_bounds: tuple[float, float] | None = None
    converged: bool = False
    method: str
    bins_used: int = 0
    bins_total: int = 0
    n_data: float = 0.0
    n_signal: float = 0.0
    n_background: float = 0.0
    data_outside_model: float = 0.0
    error: str | None = None
    kind: Literal["observed", "expected"] = "observed"
    """``expected``: a run without data, fitted to the Asimov data of its MC (signal at μ = 1)."""
    warnings: tuple[str, ...] = ()
    """Why the result needs care: a parameter at a bound of its range."""


class ChunkSummary(Document):
    total: int
    failed: tuple[Failure, ...] = ()


class RunResults(Document):
    """``results.json``: every number of a finished run."""

    schema_version: Literal[2] = 2
    run_id: str
    status: Literal["complete", "partial"]
    """``partial``: some chunks or files failed and ``--allow-partial`` let the run finish."""
    release: str
    luminosity_fb: float
    """The integrated luminosity the MC is scaled to, in fb⁻¹."""
    bin_edges: tuple[float, ...]
    """The m4l bin edges in GeV, lowest first."""
    channels: tuple[str, ...] = CHANNELS
    controls: tuple[ControlAxis, ...] = ()
    """The control distributions every sample carries (in ``controls`` of the data and each sample)."""
    groups: tuple[GroupInfo, ...]
    """The stacked-plot groups, bottom of the stack first."""
    data: DataSummary
    samples: dict[str, SampleYields]
    """Every MC sample by catalog name."""
    significance: Significance | None = None
    fit: FitResult | None = None
    cutflow: CutflowTable | None = None
    inputs: tuple[PlannedFile, ...]
    notes: tuple[str, ...] = ()
    skipped_inputs: tuple[SkippedInput, ...] = ()
    """Paths in input folders that were not read, and why."""
    warnings: tuple[str, ...] = ()
    """Physics caveats of the run, such as data and MC of different luminosities."""
    chunks: ChunkSummary
    missing: dict[str, SampleLoss] = Field(default_factory=dict)
    """Per sample, what failed chunks and files lost; empty for a complete run."""
    config: AnalysisConfig
    outputs: dict[str, str] = Field(default_factory=dict)
    """Output kind → file name in the run folder."""

    @property
    def partial(self) -> bool:
        return self.status == "partial"

    @property
    def events_non_finite(self) -> dict[str, int]:
        """Per sample with any, the events left out for non-finite values."""
        counts = {name: s.events_non_finite for name, s in self.data.samples.items()}
        counts.update({name: s.events_non_finite for name, s in self.samples.items()})
        return {name: n for name, n in counts.items() if n}

    def group(self, group_id: str | None) -> GroupInfo | None:
        return next((g for g in self.groups if g.id == group_id), None)


class InputRecord(PlannedFile):
    """An input file in the manifest: the planned file, with its checksum where it is local."""

    checksum: str | None = None


class Manifest(Document):
    """``manifest.json``: what a run read and how, to reproduce it."""

    schema_version: Literal[1] = 1
    run_id: str
    created: str
    release: str
    status: Literal["complete", "partial"]
    executor: Executor
    inputs: tuple[InputRecord, ...]
    config: AnalysisConfig
    chunks_total: int
    chunks_failed: int
    notes: tuple[str, ...] = ()
    versions: dict[str, str]
    workers: tuple[str, ...] = ()
    submitted_by: str | None = None
    generation: int = 0
    timings: dict[str, float | str | None] = Field(default_factory=dict)


SCHEMAS: dict[str, type[Document]] = {
    "results": RunResults, "status": RunStatus, "manifest": Manifest, "plan": RunPlan, "request": RunRequest,
    "live": LiveHistogram,
}
"""The run folder's documents whose JSON Schemas are shipped in docs/schemas/."""
CONTRACT_BEGIN = "<!-- generated from atlaspipe/model.py: scripts/update-contracts.sh -->"
CONTRACT_END = "<!-- end of generated section -->"


def json_schema(kind: str) -> dict[str, Any]:
    model = SCHEMAS[kind]
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    schema["$id"] = f"https://atlaspipe.invalid/schemas/{kind}.schema.json"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def schema_text(kind: str) -> str:
    return json.dumps(json_schema(kind), indent=1, sort_keys=True) + "\n"


def _type_text(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        return str(spec["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in spec:
        return " or ".join(_type_text(option) for option in spec["anyOf"])
    if "enum" in spec:
        return " or ".join(json.dumps(v) for v in spec["enum"])
    if "const" in spec:
        return json.dumps(spec["const"])
    return _structure_text(spec)


def _structure_text(spec: dict[str, Any]) -> str:
    """An array, a map or a plain type, as CONTRACTS.md writes it."""
    kind = spec.get("type", "any")
    if kind == "array":
        if "prefixItems" in spec:
            return "[" + ", ".join(_type_text(p) for p in spec["prefixItems"]) + "]"
        return f"[{_type_text(spec.get('items', {}))}]"
    if kind == "object" and "additionalProperties" in spec:
        return f"{{name: {_type_text(spec['additionalProperties'])}}}"
    return str(kind)


def contract_markdown() -> str:
    """The fields of ``status.json``, ``live.json`` and ``results.json`` and of every type they hold,
    for docs/CONTRACTS.md."""
    lines = []
    for kind in ("status", "live", "results"):
        schema = json_schema(kind)
        definitions = {schema["title"]: schema, **schema.get("$defs", {})}
        lines.append(f"### `{kind}.json`: `{schema['title']}` (JSON Schema: `docs/schemas/{kind}.schema.json`)")
        for name, definition in definitions.items():
            if "properties" not in definition:
                continue
            lines.append("")
            lines.append(f"`{name}`" + (f": {definition['description'].splitlines()[0]}"
                                       if definition.get("description") else ""))
            lines.append("")
            lines.append("| field | type | required | meaning |")
            lines.append("|---|---|---|---|")
            required = set(definition.get("required", []))
            for field_name, spec in definition["properties"].items():
                meaning = " ".join(str(spec.get("description", "")).split())
                lines.append(f"| `{field_name}` | {_type_text(spec)} | {'yes' if field_name in required else ''} "
                             f"| {meaning} |")
        lines.append("")
    return "\n".join(lines)


def write_contracts(docs: Path) -> None:
    """Regenerate docs/schemas/*.schema.json and the generated section of docs/CONTRACTS.md."""
    folder = docs / "schemas"
    folder.mkdir(parents=True, exist_ok=True)
    for kind in SCHEMAS:
        (folder / f"{kind}.schema.json").write_text(schema_text(kind), "utf-8")
    contracts = docs / "CONTRACTS.md"
    text = contracts.read_text("utf-8")
    head, _, rest = text.partition(CONTRACT_BEGIN)
    _, _, tail = rest.partition(CONTRACT_END)
    contracts.write_text(f"{head}{CONTRACT_BEGIN}\n{contract_markdown()}\n{CONTRACT_END}{tail}", "utf-8")
