"""The HTML of a run: its state and progress, plots, yields, significance, fit and manifest.

Pure rendering from the run's documents (``RunResults``, ``RunStatus``, ``Manifest``, any of them
missing) to text: the finalize stage writes the static ``report.html`` with ``write_report``, and
``atlaspipe serve`` (atlaspipe.web.server) renders the same pages live. Nothing here imports the HTTP
server.
"""

from __future__ import annotations

import functools
import html
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from atlaspipe.io import files
from atlaspipe.model import Failure, InputRecord, Manifest, PlannedFile, RunResults, RunState, RunStatus
from atlaspipe.results.tables import data_name, table_lines, yield_rows

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
UNKNOWN = "unknown"
"""The state shown for a folder whose status cannot be read and that has no results."""
MAX_LISTED_FAILURES = 20
PLOT_CAPTIONS = {"m4l_4e": "m4l, 4e channel", "m4l_4mu": "m4l, 4μ channel", "m4l_2e2mu": "m4l, 2e2μ channel",
                 "m4l_ratio": "m4l with data/MC ratio", "m4l_prefit_postfit": "m4l: fit model before and after the fit",
                 "controls": "Z candidate masses and lepton pT, η, φ (ℓ1…ℓ4 in the selection's order), all channels",
                 "controls_channels": "Z candidate masses per channel",
                 "fit_scan": "profile likelihood scan of μ, 1σ interval marked",
                 "fit_pulls": "nuisance parameters after the fit: pull ± constraint"}


@dataclass(frozen=True)
class RunFolder:
    """What a run folder holds: each document, or None when it is missing or unreadable.

    ``problems`` has one line per document that exists but could not be read or validated.
    """

    run_id: str
    path: Path
    results: RunResults | None = None
    status: RunStatus | None = None
    manifest: Manifest | None = None
    problems: tuple[str, ...] = ()

    @property
    def state(self) -> str:
        if self.status is not None:
            return self.status.state.value
        if self.results is not None:
            return RunState.PARTIAL.value if self.results.partial else RunState.SUCCEEDED.value
        return UNKNOWN

    @property
    def terminal(self) -> bool:
        """Nothing more will happen to the run (a folder with no readable state is not known to be done)."""
        if self.status is not None:
            return self.status.terminal
        return self.results is not None

    @property
    def started(self) -> str | None:
        if self.status is not None:
            return self.status.started
        if self.manifest is not None:
            return self.manifest.created
        return None

    @property
    def release(self) -> str | None:
        if self.results is not None:
            return self.results.release
        return self.manifest.release if self.manifest is not None else None

    def inputs(self) -> list[str]:
        """The samples read, in input order."""
        records: Sequence[PlannedFile | InputRecord] = (
            self.results.inputs if self.results is not None
            else self.manifest.inputs if self.manifest is not None else ())
        return list(dict.fromkeys(r.sample for r in records))


# ---------------------------------------------------------------------------------------------
# Progress


@dataclass(frozen=True)
class Progress:
    """How far a run got, from its status (or, for a finished run without one, its results)."""

    run_id: str
    state: str
    terminal: bool
    chunks_total: int = 0
    chunks_done: int = 0
    chunks_failed: int = 0
    events_read: int = 0
    events_total: int = 0
    message: str = ""
    started: str | None = None
    updated: str | None = None
    eta_seconds: float | None = None
    """Time left when the status was last updated, if the run is running and has made progress."""

    @property
    def fraction(self) -> float | None:
        """Share of the work done: events where the plan counted them, else chunks."""
        if self.events_total > 0:
            return min(1.0, self.events_read / self.events_total)
        if self.chunks_total > 0:
            return min(1.0, self.chunks_done / self.chunks_total)
        return None

    @property
    def eta_text(self) -> str:
        if self.eta_seconds is None:
            return ""
        return f"about {duration_text(self.eta_seconds)} left"

    @property
    def percent_text(self) -> str:
        return "" if self.fraction is None else f"{self.fraction:.0%}"

    def to_jsonable(self) -> dict[str, Any]:
        """The JSON of ``/api/runs/<id>/status``, polled by the live pages."""
        return {
            "run_id": self.run_id, "state": self.state, "terminal": self.terminal,
            "chunks_total": self.chunks_total, "chunks_done": self.chunks_done,
            "chunks_failed": self.chunks_failed, "events_read": self.events_read,
            "events_total": self.events_total, "message": self.message, "started": self.started,
            "updated": self.updated, "started_text": time_text(self.started),
            "updated_text": time_text(self.updated), "fraction": self.fraction,
            "percent_text": self.percent_text, "eta_seconds": self.eta_seconds, "eta_text": self.eta_text,
        }


def progress_of(run: RunFolder) -> Progress:
    """The run's progress; a folder whose status cannot be read says why in ``message``."""
    status = run.status
    if status is not None:
        progress = Progress(
            run_id=run.run_id, state=status.state.value, terminal=status.terminal,
            chunks_total=status.chunks_total, chunks_done=status.chunks_done, chunks_failed=status.chunks_failed,
            events_read=status.events_read, events_total=status.events_total, message=status.message,
            started=status.started, updated=status.updated,
        )
        if status.state is RunState.RUNNING:
            return replace(progress, eta_seconds=eta_seconds(progress))
        return progress
    message = "; ".join(run.problems)
    if run.results is not None:
        chunks = run.results.chunks
        return Progress(run_id=run.run_id, state=run.state, terminal=True, chunks_total=chunks.total,
                        chunks_done=chunks.total, chunks_failed=len(chunks.failed), message=message,
                        started=run.started)
    return Progress(run_id=run.run_id, state=run.state, terminal=False, message=message, started=run.started)


def eta_seconds(progress: Progress) -> float | None:
    """Time left as of the last update, extrapolating the rate since the run started."""
    fraction = progress.fraction
    started, updated = timestamp(progress.started), timestamp(progress.updated)
    if fraction is None or not 0.0 < fraction < 1.0 or started is None or updated is None or updated <= started:
        return None
    return (updated - started) * (1.0 - fraction) / fraction


def duration_text(seconds: float) -> str:
    """``45 s``, ``3 min``, ``1 h 5 min``: coarse enough that an estimate does not look precise."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{max(1, math.ceil(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def timestamp(value: str | None) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (UTC when it names no zone), or None."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def time_text(value: str | None) -> str:
    stamp = timestamp(value)
    if stamp is None:
        return value or ""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------------------------------------
# HTML


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "—" if value is None else format(value, fmt)


def static_text(name: str) -> str:
    """A file of the package's ``web`` folder (style sheet, script)."""
    return resources.files("atlaspipe.web").joinpath("static", name).read_text(encoding="utf-8")


def page(title: str, body: str, live: bool) -> str:
    """A whole page; ``live`` links the polling script and the run list (server), else it stands alone."""
    script = '<script src="/static/live.js" defer></script>' if live else ""
    home = '<a href="/">atlaspipe</a>' if live else "<b>atlaspipe</b>"
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_e(title)}</title><style>{static_text('style.css')}</style>{script}</head>"
        f"<body><header class=\"top\">{home}<span>H → ZZ* → 4ℓ with ATLAS Open Data</span>"
        f"</header><main>{body}</main></body></html>\n"
    )


def _badge(state: str) -> str:
    return f'<span class="badge {_e(state)}">{_e(state)}</span>'


def _progress_html(progress: Progress) -> str:
    total, done = progress.chunks_total, progress.chunks_done
    events_total = f" of {progress.events_total:,}" if progress.events_total else ""
    return (
        f'<div class="progress" id="progress" data-run="{_e(progress.run_id)}" data-state="{_e(progress.state)}">'
        f'{_badge(progress.state)} <span class="percent">{_e(progress.percent_text)}</span>'
        f'<span class="eta">{_e(progress.eta_text)}</span>'
        f'<progress max="{max(total, 1)}" value="{done}"></progress>'
        f'<div><span class="chunks-done">{done}</span> / <span class="chunks-total">{total}'
        f'</span> chunks done, <span class="chunks-failed">{progress.chunks_failed}</span> failed,'
        f' <span class="events-read">{progress.events_read:,}</span>'
        f'<span class="events-total">{events_total}</span> events read</div>'
        f'<div class="muted"><span class="message">{_e(progress.message)}</span> · '
        f'updated <span class="updated">{_e(time_text(progress.updated))}</span></div></div>'
    )


def render_run_list(output: Path, runs: Sequence[RunFolder]) -> str:
    """The ``/`` page: every run with its state and headline numbers."""
    if not runs:
        body = f"<h1>Runs</h1><p class=\"muted\">No runs yet in {_e(output)}.</p>"
        return page("atlaspipe runs", body, live=True)
    rows = []
    for run in runs:
        progress = progress_of(run)
        fit = run.results.fit if run.results is not None else None
        significance = run.results.significance if run.results is not None else None
        inputs = run.inputs()
        shown = ", ".join(inputs[:4]) + (f", … ({len(inputs)} in all)" if len(inputs) > 4 else "")
        mu = (f"{_num(fit.mu, '.2f')} ± {_num(fit.mu_uncertainty, '.2f')}"
              if fit is not None and fit.mu is not None else "—")
        z_text = (f"{_num(fit.significance_observed, '.2f')} ({_num(fit.significance_expected, '.2f')})"
                  if fit is not None and fit.significance_observed is not None else "—")
        notebook = significance.notebook if significance is not None else None
        rows.append(
            f'<tr data-run="{_e(run.run_id)}" data-terminal="{str(progress.terminal).lower()}">'
            f'<td><a href="/runs/{_e(run.run_id)}/">{_e(run.run_id)}</a></td>'
            f'<td>{_badge(progress.state)}<br>'
            f'<span class="chunks-done">{progress.chunks_done}</span>/'
            f'<span class="chunks-total">{progress.chunks_total}</span> chunks'
            f'<div class="eta">{_e(progress.eta_text)}</div>'
            f'<div class="message">{_e(progress.message)}</div></td>'
            f'<td>{_e(time_text(run.started))}</td><td>{_e(run.release)}</td><td>{_e(shown)}</td>'
            f'<td class="num">{mu}</td><td class="num">{z_text}</td>'
            f'<td class="num">{_num(notebook, ".3f")}</td></tr>'
        )
    body = (
        "<h1>Runs</h1><div class=\"scroll\"><table id=\"runs\"><thead><tr><th>Run</th>"
        "<th>Status</th><th>Started</th><th>Release</th><th>Inputs</th><th class=\"num\">μ̂</th>"
        "<th class=\"num\">Z obs (exp)</th><th class=\"num\">Z notebook</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table></div>"
    )
    return page("atlaspipe runs", body, live=True)


def _figure_html(run_dir: Path, results: RunResults, stem: str) -> str:
    """One figure of the run folder with its caption and, when there is one, a link to its PDF."""
    png = results.outputs.get(f"{stem}_png", f"{stem}.png")
    if not (run_dir / png).is_file():
        return ""
    pdf = results.outputs.get(f"{stem}_pdf", f"{stem}.pdf")
    link = f' · <a href="{_e(pdf)}">PDF</a>' if (run_dir / pdf).is_file() else ""
    cls = ' class="main"' if stem in {"m4l", "controls"} else ""
    caption = PLOT_CAPTIONS.get(stem, "m4l, all channels")
    return (f'<figure{cls}><img src="{_e(png)}" alt="{_e(stem)}" id="plot-{_e(stem)}">'
            f"<figcaption>{_e(caption)}{link}</figcaption></figure>")


def _plots_html(run_dir: Path, results: RunResults, controls: bool = False) -> str:
    """The m4l figures, or with ``controls`` the control distributions' grids."""
    figure = functools.partial(_figure_html, run_dir, results)
    if controls:
        rows = [figure("controls"), figure("controls_channels")]
        empty = "<p class=\"muted\">No control distributions.</p>"
    else:
        rows = ["".join(figure(s) for s in ("m4l", "m4l_ratio")),
                "".join(figure(f"m4l_{c}") for c in results.channels), figure("m4l_prefit_postfit")]
        empty = "<p class=\"muted\">No plots yet.</p>"
    if not any(rows):
        return empty
    return "".join(f'<div class="plots">{row}</div>' for row in rows if row)


def _yields_html(run_dir: Path, results: RunResults) -> str:
    header, body = table_lines(yield_rows(results))
    head = "".join(f'<th class="num">{_e(text)}</th>' for text in header[1:])
    rows = "".join(
        f'<tr class="{row.level}"><td>{_e(row.cells[0])}</td>'
        + "".join(f'<td class="num">{_e(c)}</td>' for c in row.cells[1:]) + "</tr>"
        for row in body
    )
    links = " · ".join(f'<a href="yields.{x}">{x.upper()}</a>' for x in ("json", "csv", "md")
                       if (run_dir / f"yields.{x}").is_file())
    return (f'<div class="scroll"><table id="yields"><thead><tr><th>Sample / group</th>{head}'
            f"</tr></thead><tbody>{rows}</tbody></table></div>"
            f'<p class="muted">Statistical uncertainties √Σw². {links}</p>')


def _cutflow_html(run_dir: Path, results: RunResults) -> str:
    """The all-channel cutflow: raw counts per sample and cut, weighted MC yields in the title."""
    table = results.cutflow
    if table is None or not table.samples:
        return "<p class=\"muted\">No cutflow.</p>"
    head = "".join(f'<th class="num">{_e(step)}</th>' for step in table.steps)
    rows = "".join(
        f"<tr><td>{_e(name)}</td>" + "".join(
            f'<td class="num" title="weighted {flow.weighted[i][0]:.6g}">{flow.raw[i][0]}</td>'
            for i in range(len(table.steps))) + "</tr>"
        for name, flow in table.samples.items())
    exports = " · ".join(f'<a href="{_e(name)}">{_e(name)}</a>'
                         for name in ("workspace.json", "histograms.json", "histograms.root")
                         if (run_dir / name).is_file())
    return (f'<div class="scroll"><table id="cutflow"><thead><tr><th>Sample</th>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>"
            f'<p class="muted">Events passing each cut in turn, all channels; per channel and weighted in '
            f'yields.md and yields.csv. {exports}</p>')


def _facts(items: Sequence[tuple[str, str]], element_id: str) -> str:
    inner = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in items)
    return f'<dl class="facts" id="{element_id}">{inner}</dl>'


def _significance_html(results: RunResults) -> str:
    sig = results.significance
    if sig is None:
        return "<p class=\"muted\">Not computed.</p>"
    lo, hi = sig.window_gev
    return _facts([
        ("Mass window", f"{lo:g}–{hi:g} GeV"),
        ("N (S+B, stacked MC)", _num(sig.n_sig_plus_bg)),
        ("N background", _num(sig.n_bg)),
        ("N signal", _num(sig.n_sig)),
        ("N data", _num(sig.n_data, ".0f")),
        ("Notebook Z = N/√(B+0.3B²)", f"<b>{_num(sig.notebook)}</b>"),
        ("Asimov Z_A (median expected)", f"<b>{_num(sig.asimov)}</b>"),
    ], "significance")


def _fit_html(results: RunResults) -> str:
    fit = results.fit
    if fit is None:
        return "<p class=\"muted\">Not fitted.</p>"
    error = f'<div class="error">{_e(fit.error)}</div>' if fit.error else ""
    error += "".join(f'<div class="error">{_e(w)}</div>' for w in fit.warnings)
    if fit.kind == "expected":
        error += '<p class="muted">Expected result: no observed data; fitted to the Asimov data of the MC (μ = 1).</p>'
    up, down = fit.mu_uncertainty_up, fit.mu_uncertainty_down
    asym = f" (+{_num(up)} / −{_num(down)})" if up is not None and down is not None else ""
    return error + _facts([
        ("Best-fit μ", f"<b>{_num(fit.mu)} ± {_num(fit.mu_uncertainty)}</b>{asym}"),
        ("Observed significance", f"<b>{_num(fit.significance_observed, '.2f')} σ</b> "
                                  f"(p₀ = {_num(fit.p_value_observed, '.3g')})"),
        ("Expected significance", f"{_num(fit.significance_expected, '.2f')} σ "
                                  f"(p₀ = {_num(fit.p_value_expected, '.3g')})"),
        ("Background normalisation unc.", _num(fit.background_norm_uncertainty, ".0%")),
        ("MC statistics (staterror)", _e(fit.staterror)),
        ("Channels", "4e, 4μ and 2e2μ simultaneously, one μ" if fit.channels == "simultaneous"
         else "m4l of the lepton channels summed"),
        ("Bins used", f"{fit.bins_used} of {fit.bins_total}"),
        ("Converged", _e(fit.converged)),
        ("Method", _e(fit.method)),
    ], "fit")


def _fit_figures_html(run_dir: Path, results: RunResults) -> str:
    figures = "".join(_figure_html(run_dir, results, stem) for stem in ("fit_scan", "fit_pulls"))
    return f'<div class="plots">{figures}</div>' if figures else ""


def _failures_html(failures: Sequence[Failure], total: int) -> str:
    if not failures:
        return ""
    items = "".join(f"<li>{_e(f.describe())}</li>" for f in failures[:MAX_LISTED_FAILURES])
    more = total - min(len(failures), MAX_LISTED_FAILURES)
    tail = f"<li class=\"muted\">… and {more} more</li>" if more > 0 else ""
    return f'<ul class="failures">{items}{tail}</ul>'


def _partial_html(results: RunResults) -> str:
    if not results.partial:
        return ""
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td class=\"num\">{loss.chunks_failed}</td>"
        f"<td class=\"num\">{loss.files_failed}</td><td class=\"num\">{loss.events_lost:,}</td>"
        f"<td class=\"num\">{_num(loss.fraction_lost, '.1%')}</td></tr>"
        for name, loss in results.missing.items()
    )
    table = ("<table id=\"missing\"><tr><th>Sample</th><th class=\"num\">Chunks failed</th>"
             "<th class=\"num\">Files failed</th><th class=\"num\">Events lost</th>"
             f"<th class=\"num\">Fraction lost</th></tr>{rows}</table>") if rows else ""
    failed = results.chunks.failed
    return (f'<div class="warning" id="partial"><b>PARTIAL results</b>: some chunks failed, so '
            f"the yields below are incomplete.{table}{_failures_html(failed, len(failed))}</div>")


def _excluded_html(results: RunResults) -> str:
    """Events left out for non-finite values and input paths not read: the numbers above lack them."""
    parts = []
    excluded = results.events_non_finite
    if excluded:
        rows = "".join(f"<tr><td>{_e(name)}</td><td class=\"num\">{count:,}</td></tr>"
                       for name, count in excluded.items())
        parts.append(f'<div class="warning" id="non-finite"><b>{sum(excluded.values()):,} event(s) left out</b> '
                     "for a NaN or infinite lepton kinematic or weight:"
                     f"<table><tr><th>Sample</th><th class=\"num\">Events</th></tr>{rows}</table></div>")
    if results.skipped_inputs:
        items = "".join(f"<li>{_e(s.source)}: {_e(s.reason)}</li>" for s in results.skipped_inputs)
        parts.append(f'<div class="warning" id="skipped-inputs"><b>Skipped inputs</b><ul>{items}</ul></div>')
    return "".join(parts)


def _inputs_html(results: RunResults) -> str:
    rows = "".join(
        f"<tr><td>{_e(i.sample)}</td><td>{_e(i.source)}"
        + (f'<div class="error-text">{_e(i.error)}</div>' if i.error else "")
        + f"</td><td class=\"num\">{_e(i.entries)}</td><td class=\"num\">{_e(i.size_bytes)}</td></tr>"
        for i in results.inputs
    )
    if not rows:
        return "<p class=\"muted\">None recorded.</p>"
    return ("<div class=\"scroll\"><table id=\"inputs\"><tr><th>Sample</th><th>Source</th>"
            f"<th class=\"num\">Entries</th><th class=\"num\">Bytes</th></tr>{rows}</table></div>")


def _ended_html(run: RunFolder) -> str:
    """Why a run ended without succeeding: the status's one line and the failures it lists."""
    status = run.status
    if status is None or status.state not in (RunState.FAILED, RunState.CANCELLED):
        return ""
    reason = status.message or ("cancelled" if status.state is RunState.CANCELLED else "no reason recorded")
    return (f'<div class="error" id="run-message"><b>{_e(status.state.value)}</b>: {_e(reason)}'
            f"{_failures_html(status.failures, len(status.failures))}</div>")


def render_run_page(run: RunFolder, live: bool) -> str:
    """A run's page; ``live`` polls the server for progress, else it is a static snapshot."""
    results = run.results
    progress = progress_of(run)
    parts = [f"<h1>Run {_e(run.run_id)}</h1>"]
    parts += [f'<div class="error problem">{_e(p)}</div>' for p in run.problems]
    facts = [("Status", _badge(run.state)), ("Started", _e(time_text(run.started)))]
    if run.terminal:
        facts.append(("Chunks", f"{progress.chunks_done} of {progress.chunks_total} done, "
                                f"{progress.chunks_failed} failed"))
    if results is not None:
        facts += [("Release", _e(results.release)),
                  ("Luminosity", f"{results.luminosity_fb:g} fb⁻¹"),
                  (f"{(data_name(results) or 'data').capitalize()} events selected (in range)",
                   f"{results.data.events_selected} ({results.data.events_in_range})")]
        facts += [("Warning", _e(w)) for w in results.warnings]
        if results.data.kind == "pseudo":
            facts.append(("Pseudo-data", "generated by atlaspipe generate, not ATLAS data"))
    parts.append(_facts(facts, "run-facts"))
    parts.append(_ended_html(run))
    if not run.terminal:
        parts += ["<h2>Progress</h2>", _progress_html(progress)]
    if results is not None:
        parts += [_partial_html(results), _excluded_html(results),
                  "<h2>m4l distribution</h2>", _plots_html(run.path, results),
                  "<h2>Control distributions</h2>", _plots_html(run.path, results, controls=True),
                  "<h2>Significance</h2>", _significance_html(results),
                  "<h2>Profile-likelihood fit (pyhf)</h2>", _fit_html(results), _fit_figures_html(run.path, results),
                  "<h2>Yields</h2>", _yields_html(run.path, results),
                  "<h2>Cutflow</h2>", _cutflow_html(run.path, results),
                  "<h2>Inputs</h2>", _inputs_html(results)]
    elif run.terminal:
        if not _ended_html(run):
            parts.append('<div class="error">no results were written</div>')
    else:
        parts.append('<p class="muted">Results appear here when the run finishes.</p>')
    if run.manifest is not None:
        parts += ["<h2>Manifest</h2>", f'<pre id="manifest">{_e(run.manifest.to_json(indent=2))}</pre>']
    return page(f"atlaspipe run {run.run_id}", "".join(parts), live=live)


def write_report(results: RunResults | None, status: RunStatus | None, manifest: Manifest | None,
                 run_dir: Path) -> str:
    """Write the static ``report.html`` into ``run_dir`` (atomically); returns its file name.

    A status that is not terminal is left out: the report is a snapshot of a finished run, and the
    finalize stage writes it before the run's final state lands.
    """
    if status is not None and not status.terminal:
        status = None
    run_id = (results.run_id if results is not None else status.run_id if status is not None
              else manifest.run_id if manifest is not None else run_dir.name)
    run = RunFolder(run_id=run_id, path=run_dir, results=results, status=status, manifest=manifest)
    files.write_text(run_dir / REPORT_FILE, render_run_page(run, live=False))
    log.debug("run %s: %s written into %s", run_id, REPORT_FILE, run_dir)
    return REPORT_FILE
