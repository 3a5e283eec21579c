"""The Python API: run the analysis in this process, or submit it to the Celery workers.

Both go through the same lifecycle as the command line; they differ only in the executor, as a
coffea ``Runner(executor=…)`` does::

    import atlaspipe
    outcome = atlaspipe.run()                       # the embedded sample, in this process
    handle = atlaspipe.submit(inputs=["/data/4lep"])  # on the workers
    outcome = handle.wait()
    outcome.fit.mu, outcome.histograms["ggH125_ZZ4lep"]["4mu"], outcome.outputs["workspace_json"]
"""

from __future__ import annotations

import getpass
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from atlaspipe.config import AnalysisSettings, FitChannels, RuntimeSettings
from atlaspipe.errors import AtlaspipeError
from atlaspipe.fileset import Fileset, FilesetEntry
from atlaspipe.model import FitResult, RunRequest, RunResults, RunState, RunStatus

if TYPE_CHECKING:
    import hist

log = logging.getLogger(__name__)

ProgressCallback = Callable[[RunStatus], None]


@dataclass(frozen=True)
class RunOutcome:
    """A finished run: its final status, its folder and, unless it failed, its results."""

    status: RunStatus
    run_dir: Path
    results: RunResults | None

    @property
    def ok(self) -> bool:
        return self.status.state in (RunState.SUCCEEDED, RunState.PARTIAL)

    @property
    def fit(self) -> FitResult | None:
        """The pyhf fit of μ (None when the run has no results)."""
        return self.results.fit if self.results is not None else None

    @property
    def outputs(self) -> dict[str, Path]:
        """Every file the run wrote, by kind (``m4l_png``, ``workspace_json``, ``histograms_root``, …)."""
        if self.results is None:
            return {}
        return {kind: self.run_dir / name for kind, name in self.results.outputs.items()}

    @cached_property
    def histograms(self) -> dict[str, dict[str, hist.Hist[hist.storage.Weight]]]:
        """The m4l ``hist.Hist`` of ``"data"`` and of each MC sample, by channel (``"all"``, ``"4e"``,
        ``"4mu"``, ``"2e2mu"``), with Σw² and the flow bins; empty when the run has no results."""
        from atlaspipe.results.exports import sample_histograms

        return sample_histograms(self.results) if self.results is not None else {}

    @classmethod
    def of(cls, status: RunStatus) -> RunOutcome:
        run_dir = Path(status.run_dir or ".")
        results = None
        if status.state in (RunState.SUCCEEDED, RunState.PARTIAL) and (run_dir / "results.json").is_file():
            results = RunResults.read(run_dir / "results.json")
        return cls(status=status, run_dir=run_dir, results=results)


def make_request(  # noqa: PLR0913 - keyword-only, one per field of a request
    inputs: Sequence[str | Path] = (), *, release: str | None = None, samples: Sequence[str] = (),
    settings: AnalysisSettings | None = None, output: str | Path | None = None, base_url: str | None = None,
    fetch: bool = False, allow_partial: bool = False, keep_records: bool = False,
    fileset: Fileset | str | Path | None = None, fit_channels: FitChannels | None = None, pdf_figures: bool = False,
) -> RunRequest:
    """A new run of ``inputs`` (files, folders or URLs; none: the embedded sample) or of a ``fileset``
    (a mapping or a JSON/TOML file, see ``atlaspipe.fileset``) with a fresh id; ``fit_channels``
    overrides the fit's channels of ``settings`` (``"combined"`` or ``"simultaneous"``);
    ``pdf_figures`` writes each figure as PDF too."""
    from atlaspipe.model import new_run_id
    from atlaspipe.pipeline.lifecycle import now_text

    if release not in (None, "2020", "2025e"):
        raise AtlaspipeError(f"unknown release {release!r} (choose 2020 or 2025e)")
    folder = Path(output) if output is not None else RuntimeSettings.from_env().output_dir
    return RunRequest(
        run_id=new_run_id(), release=cast(Literal["2020", "2025e"] | None, release),
        inputs=tuple(str(i) if "://" in str(i) else str(Path(i).absolute()) for i in inputs),
        samples=tuple(samples), fileset=_fileset(fileset), base_url=base_url, fetch=fetch,
        config=(settings or AnalysisSettings()).with_fit_channels(fit_channels),
        output_dir=str(folder.absolute()), allow_partial=allow_partial, keep_records=keep_records,
        pdf_figures=pdf_figures, submitted_by=f"{getpass.getuser()}@{socket.gethostname()}", created=now_text(),
    )


def _fileset(fileset: Fileset | str | Path | None) -> Fileset | None:
    """A fileset with absolute local paths: read from its file, or relative to the working folder."""
    from atlaspipe.fileset import load_fileset, parse_fileset

    if fileset is None:
        return None
    if isinstance(fileset, str | Path):
        return load_fileset(Path(fileset))
    return parse_fileset({name: entry.model_dump() if isinstance(entry, FilesetEntry) else entry
                          for name, entry in fileset.items()}, base=Path.cwd())


def run(  # noqa: PLR0913 - the public API: keyword-only, one per option of `atlaspipe run`
    inputs: Sequence[str | Path] = (), *, release: str | None = None, samples: Sequence[str] = (),
    settings: AnalysisSettings | None = None, output: str | Path | None = None, base_url: str | None = None,
    fetch: bool = False, allow_partial: bool = False, on_progress: ProgressCallback | None = None,
    fileset: Fileset | str | Path | None = None, fit_channels: FitChannels | None = None, pdf_figures: bool = False,
) -> RunOutcome:
    """Analyse ``inputs`` in this process, no broker; the outcome once every output is written."""
    from atlaspipe.pipeline.inprocess import InProcessExecutor

    request = make_request(inputs, release=release, samples=samples, settings=settings, output=output,
                           base_url=base_url, fetch=fetch, allow_partial=allow_partial, fileset=fileset,
                           fit_channels=fit_channels, pdf_figures=pdf_figures)
    return RunOutcome.of(InProcessExecutor(on_progress=on_progress).run(request))


@dataclass(frozen=True)
class RunHandle:
    """A run sent to the workers: follow it, wait for it, or cancel it."""

    run_id: str
    run_dir: Path
    broker_url: str
    backend_url: str

    def status(self) -> RunStatus:
        from atlaspipe.pipeline.celery.client import CeleryClient

        return CeleryClient(self.broker_url, self.backend_url).status(self.run_id)

    def wait(self, on_progress: ProgressCallback | None = None,
             on_note: Callable[[str], None] | None = None) -> RunOutcome:
        """Follow the run to its end; ``on_note`` receives hints (a stage without a worker, a stall)."""
        from atlaspipe.pipeline.celery.client import CeleryClient

        client = CeleryClient(self.broker_url, self.backend_url, on_note or log.warning)
        return RunOutcome.of(client.follow(self.run_id, on_progress))

    def cancel(self) -> None:
        from atlaspipe.pipeline.celery.client import CeleryClient

        CeleryClient(self.broker_url, self.backend_url).cancel(self.run_id)


def submit(  # noqa: PLR0913 - the public API: keyword-only, one per option of `atlaspipe submit`
    inputs: Sequence[str | Path] = (), *, release: str | None = None, samples: Sequence[str] = (),
    settings: AnalysisSettings | None = None, output: str | Path | None = None, base_url: str | None = None,
    allow_partial: bool = False, keep_records: bool = False, broker_url: str | None = None,
    backend_url: str | None = None, fileset: Fileset | str | Path | None = None,
    fit_channels: FitChannels | None = None, pdf_figures: bool = False,
) -> RunHandle:
    """Send a run to the Celery workers (``output`` as the workers see it); a handle to follow it."""
    from atlaspipe.pipeline.celery.client import CeleryClient

    runtime = RuntimeSettings.from_env()
    broker, backend = broker_url or runtime.broker_url, backend_url or runtime.result_backend
    request = make_request(inputs, release=release, samples=samples, settings=settings, output=output,
                           base_url=base_url, allow_partial=allow_partial, keep_records=keep_records,
                           fileset=fileset, fit_channels=fit_channels, pdf_figures=pdf_figures)
    CeleryClient(broker, backend).submit(request)
    return RunHandle(run_id=request.run_id, run_dir=request.run_dir, broker_url=broker, backend_url=backend)
