"""``atlaspipe serve``: browse the runs of an output folder over HTTP (aiohttp).

Pages: ``/`` (run list), ``/runs/<id>/`` (plots, yields, significance, fit, manifest; live
progress while running), ``/runs/<id>/<file>`` (a file of the run folder), ``/api/runs`` and
``/api/runs/<id>/status`` (JSON polled by the pages), ``/healthz`` (container probes).
``write_report`` renders the same run page as a static ``report.html`` for the finalize stage.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import html
import json
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atlaspipe.config import is_loopback
from atlaspipe.errors import AtlaspipeError, ConfigError

if TYPE_CHECKING:
    from aiohttp import web

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
TERMINAL_STATES = frozenset({"succeeded", "failed", "partial"})
# Run ids and file names: one path segment of plain characters, so nothing can name a parent,
# a separator or an encoded form of either.
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}$")
_SERVED_SUFFIXES = frozenset({".png", ".pdf", ".svg", ".json", ".csv", ".md", ".html", ".txt",
                              ".log"})
_STATIC_FILES = {"live.js": "application/javascript", "style.css": "text/css"}
_PLOT_CAPTIONS = {"m4l_4e": "4e channel", "m4l_4mu": "4μ channel", "m4l_2e2mu": "2e2μ channel",
                  "m4l_ratio": "with data/MC ratio"}


# ---------------------------------------------------------------------------------------------
# Reading run folders


@dataclass
class Run:
    """What a run folder holds; any of the three JSON files may be missing or half-written."""

    run_id: str
    path: Path
    manifest: dict[str, Any] | None
    status: dict[str, Any] | None
    results: dict[str, Any] | None

    @property
    def state(self) -> str:
        if self.status and self.status.get("state"):
            return str(self.status["state"])
        if self.results:
            return "partial" if self.results.get("status") == "partial" else "succeeded"
        return "unknown"

    @property
    def started(self) -> Any:
        for source in (self.status, self.manifest):
            if source:
                for key in ("started", "created", "submitted"):
                    if source.get(key) is not None:
                        return source[key]
        return None

    def sort_key(self) -> float:
        stamp = _timestamp(self.started)
        return stamp if stamp is not None else self.path.stat().st_mtime


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def safe_child(parent: Path, name: str) -> Path | None:
    """``parent/name`` if ``name`` is one plain segment that resolves inside ``parent``, else None."""
    if not _SEGMENT.match(name) or ".." in name:
        return None
    base = parent.resolve()
    child = (base / name).resolve()
    # resolve() follows symlinks, so a link pointing out of the folder is refused too.
    if child.parent != base:
        return None
    return child


def load_run(output: Path, run_id: str) -> Run | None:
    """The run ``run_id`` of ``output``, or None if there is no such run folder."""
    path = safe_child(output, run_id)
    if path is None or not path.is_dir():
        return None
    files = [_read_json(path / n) for n in ("manifest.json", "status.json", "results.json")]
    if all(f is None for f in files) and not any(
        (path / n).exists() for n in ("manifest.json", "status.json", "results.json")
    ):
        return None
    return Run(run_id=path.name, path=path, manifest=files[0], status=files[1], results=files[2])


def list_runs(output: Path) -> list[Run]:
    """Every run folder of ``output``, newest first."""
    if not output.is_dir():
        return []
    runs = [r for p in output.iterdir() if p.is_dir() and (r := load_run(output, p.name))]
    runs.sort(key=Run.sort_key, reverse=True)
    return runs


def _timestamp(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    return None


def _time_text(value: Any) -> str:
    stamp = _timestamp(value)
    if stamp is None:
        return "" if value is None else str(value)
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def status_payload(run: Run) -> dict[str, Any]:
    """The JSON of ``/api/runs/<id>/status``: status.json with derived fields filled in."""
    status = dict(run.status or {})
    status.setdefault("run_id", run.run_id)
    status["state"] = run.state
    for key in ("chunks_total", "chunks_done", "chunks_failed", "events_read"):
        status.setdefault(key, 0)
    if not run.status and run.results:
        total = int(run.results.get("chunks", {}).get("total", 0))
        failed = len(run.results.get("chunks", {}).get("failed", []))
        status.update(chunks_total=total, chunks_done=total - failed, chunks_failed=failed)
    status["started_text"] = _time_text(status.get("started"))
    status["updated_text"] = _time_text(status.get("updated"))
    return status


def run_summary(run: Run) -> dict[str, Any]:
    """Headline facts of a run for the list page and ``/api/runs``."""
    results = run.results or {}
    fit = results.get("fit") or {}
    sig = results.get("significance") or {}
    return {
        "run_id": run.run_id, "state": run.state, "started": _time_text(run.started),
        "release": results.get("release") or (run.manifest or {}).get("release"),
        "inputs": _inputs(run), "status": status_payload(run),
        "mu": fit.get("mu"), "mu_uncertainty": fit.get("mu_uncertainty"),
        "significance_observed": fit.get("significance_observed"),
        "significance_expected": fit.get("significance_expected"),
        "significance_notebook": sig.get("notebook"), "n_data_window": sig.get("n_data"),
    }


def _inputs(run: Run) -> list[str]:
    raw = (run.results or {}).get("inputs") or (run.manifest or {}).get("inputs") or []
    names: list[str] = []
    for item in raw if isinstance(raw, list) else []:
        name = item.get("sample") or item.get("source") if isinstance(item, dict) else item
        if name is not None and str(name) not in names:
            names.append(str(name))
    return names


# ---------------------------------------------------------------------------------------------
# HTML


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any, fmt: str = ".3f") -> str:
    return format(value, fmt) if isinstance(value, int | float) else "—"


def _static_text(name: str) -> str:
    return resources.files("atlaspipe").joinpath("web", name).read_text(encoding="utf-8")


def _page(title: str, body: str, live: bool) -> str:
    script = '<script src="/static/live.js" defer></script>' if live else ""
    home = '<a href="/">atlaspipe</a>' if live else "<b>atlaspipe</b>"
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_e(title)}</title><style>{_static_text('style.css')}</style>{script}</head>"
        f"<body><header class=\"top\">{home}<span>H → ZZ* → 4ℓ with ATLAS Open Data</span>"
        f"</header><main>{body}</main></body></html>\n"
    )


def _progress_html(run: Run, element_id: str | None = "progress") -> str:
    s = status_payload(run)
    total, done = int(s["chunks_total"] or 0), int(s["chunks_done"] or 0)
    ident = f' id="{element_id}"' if element_id else ""
    return (
        f'<div class="progress"{ident} data-run="{_e(run.run_id)}" data-state="{_e(s["state"])}">'
        f'<span class="badge {_e(s["state"])}">{_e(s["state"])}</span> '
        f'<progress max="{max(total, 1)}" value="{done}"></progress>'
        f'<div><span class="chunks-done">{done}</span> / <span class="chunks-total">{total}'
        f'</span> chunks done, <span class="chunks-failed">{_e(s["chunks_failed"])}</span> failed,'
        f' <span class="events-read">{int(s["events_read"] or 0):,}</span> events read</div>'
        f'<div class="muted"><span class="message">{_e(s.get("message"))}</span> · '
        f'updated <span class="updated">{_e(s["updated_text"])}</span></div></div>'
    )


def render_run_list(output: Path, runs: list[Run]) -> str:
    """The ``/`` page."""
    if not runs:
        body = f"<h1>Runs</h1><p class=\"muted\">No runs yet in {_e(output)}.</p>"
        return _page("atlaspipe runs", body, live=True)
    rows = []
    for run in runs:
        s = run_summary(run)
        st = s["status"]
        inputs = s["inputs"]
        shown = ", ".join(inputs[:4]) + (f", … ({len(inputs)} in all)" if len(inputs) > 4 else "")
        mu = (f"{_num(s['mu'], '.2f')} ± {_num(s['mu_uncertainty'], '.2f')}"
              if s["mu"] is not None else "—")
        z_text = (f"{_num(s['significance_observed'], '.2f')} "
                  f"({_num(s['significance_expected'], '.2f')})"
                  if s["significance_observed"] is not None else "—")
        rows.append(
            f'<tr data-run="{_e(run.run_id)}"><td><a href="/runs/{_e(run.run_id)}/">'
            f'{_e(run.run_id)}</a></td>'
            f'<td><span class="badge {_e(s["state"])}">{_e(s["state"])}</span><br>'
            f'<span class="chunks-done">{_e(st["chunks_done"])}</span>/'
            f'<span class="chunks-total">{_e(st["chunks_total"])}</span> chunks</td>'
            f'<td>{_e(s["started"])}</td><td>{_e(s["release"])}</td><td>{_e(shown)}</td>'
            f'<td class="num">{mu}</td>'
            f'<td class="num">{z_text}</td>'
            f'<td class="num">{_num(s["significance_notebook"], ".3f")}</td></tr>'
        )
    body = (
        "<h1>Runs</h1><div class=\"scroll\"><table id=\"runs\"><thead><tr><th>Run</th>"
        "<th>Status</th><th>Started</th><th>Release</th><th>Inputs</th><th class=\"num\">μ̂</th>"
        "<th class=\"num\">Z obs (exp)</th><th class=\"num\">Z notebook</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table></div>"
    )
    return _page("atlaspipe runs", body, live=True)


def _plots_html(run_dir: Path, results: dict[str, Any]) -> str:
    outputs = results.get("outputs") or {}
    channels = [f"m4l_{c}" for c in results.get("channels", [])]

    def figure(stem: str) -> str:
        png = outputs.get(f"{stem}_png", f"{stem}.png")
        if not (run_dir / png).is_file():
            return ""
        pdf = outputs.get(f"{stem}_pdf", f"{stem}.pdf")
        link = f' · <a href="{_e(pdf)}">PDF</a>' if (run_dir / pdf).is_file() else ""
        cls = ' class="main"' if stem == "m4l" else ""
        caption = _PLOT_CAPTIONS.get(stem, "all channels")
        return (f'<figure{cls}><img src="{_e(png)}" alt="{_e(stem)}" id="plot-{_e(stem)}">'
                f"<figcaption>m4l, {_e(caption)}{link}</figcaption></figure>")

    rows = ["".join(figure(s) for s in ("m4l", "m4l_ratio")), "".join(map(figure, channels))]
    if not any(rows):
        return "<p class=\"muted\">No plots yet.</p>"
    return "".join(f'<div class="plots">{row}</div>' for row in rows if row)


def _yields_html(run_dir: Path, results: dict[str, Any]) -> str:
    from atlaspipe.tables import ALL, CHANNEL_TEXT, yield_rows

    rows = _read_json(run_dir / "yields.json") or yield_rows(results)
    keys = [*rows["channels"], ALL]
    head = "".join(f'<th class="num">{_e(CHANNEL_TEXT.get(k, k))}</th>' for k in keys)

    def cells(per: dict[str, Any]) -> str:
        return "".join(f'<td class="num">{per[k]["yield"]:.3f} ± {per[k]["uncertainty"]:.3f}</td>'
                       for k in keys)

    body = []
    for group in rows["groups"]:
        for sample in rows["samples"]:
            if sample["group"] == group["id"]:
                body.append(f'<tr class="sample"><td>{_e(sample["name"])}</td>'
                            f'{cells(sample["yields"])}</tr>')
        body.append(f'<tr class="group"><td>{_e(group["text"])}</td>{cells(group["yields"])}</tr>')
    body.append(f'<tr class="total"><td>Total MC</td>{cells(rows["total_mc"])}</tr>')
    data = "".join(f'<td class="num">{rows["data"][k]:.0f}</td>' for k in keys)
    body.append(f'<tr class="data"><td>Data</td>{data}</tr>')
    links = " · ".join(f'<a href="yields.{x}">{x.upper()}</a>' for x in ("json", "csv", "md")
                       if (run_dir / f"yields.{x}").is_file())
    return (f'<div class="scroll"><table id="yields"><thead><tr><th>Sample / group</th>{head}'
            f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
            f'<p class="muted">Statistical uncertainties √Σw². {links}</p>')


def _facts(items: list[tuple[str, str]], element_id: str) -> str:
    inner = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in items)
    return f'<dl class="facts" id="{element_id}">{inner}</dl>'


def _significance_html(results: dict[str, Any]) -> str:
    sig = results.get("significance") or {}
    if not sig:
        return "<p class=\"muted\">Not computed.</p>"
    lo, hi = (sig.get("window_gev") or [None, None])[:2]
    return _facts([
        ("Mass window", f"{_num(lo, 'g')}–{_num(hi, 'g')} GeV"),
        ("N (S+B, stacked MC)", _num(sig.get("n_sig_plus_bg"))),
        ("N background", _num(sig.get("n_bg"))),
        ("N signal", _num(sig.get("n_sig"))),
        ("N data", _num(sig.get("n_data"), ".0f")),
        ("Notebook Z = N/√(B+0.3B²)", f"<b>{_num(sig.get('notebook'))}</b>"),
        ("Asimov Z_A (median expected)", f"<b>{_num(sig.get('asimov'))}</b>"),
    ], "significance")


def _fit_html(results: dict[str, Any]) -> str:
    fit = results.get("fit") or {}
    if not fit:
        return "<p class=\"muted\">Not fitted.</p>"
    error = f'<div class="error">{_e(fit["error"])}</div>' if fit.get("error") else ""
    up, down = fit.get("mu_uncertainty_up"), fit.get("mu_uncertainty_down")
    asym = (f" (+{_num(up)} / −{_num(down)})" if up is not None and down is not None else "")
    return error + _facts([
        ("Best-fit μ", f"<b>{_num(fit.get('mu'))} ± {_num(fit.get('mu_uncertainty'))}</b>{asym}"),
        ("Observed significance", f"<b>{_num(fit.get('significance_observed'), '.2f')} σ</b> "
                                  f"(p₀ = {_num(fit.get('p_value_observed'), '.3g')})"),
        ("Expected significance", f"{_num(fit.get('significance_expected'), '.2f')} σ "
                                  f"(p₀ = {_num(fit.get('p_value_expected'), '.3g')})"),
        ("Background normalisation unc.", _num(fit.get("background_norm_uncertainty"), ".0%")),
        ("MC statistics (staterror)", _e(fit.get("staterror"))),
        ("Bins used", f"{_e(fit.get('bins_used'))} of {_e(fit.get('bins_total'))}"),
        ("Converged", _e(fit.get("converged"))),
        ("Method", _e(fit.get("method"))),
    ], "fit")


def _partial_html(results: dict[str, Any]) -> str:
    if results.get("status") != "partial":
        return ""
    missing = results.get("missing") or {}
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td class=\"num\">{_e(m.get('chunks_failed'))}</td>"
        f"<td class=\"num\">{_e(m.get('events_lost'))}</td>"
        f"<td class=\"num\">{_num(m.get('fraction_lost'), '.1%')}</td></tr>"
        for name, m in missing.items()
    )
    table = (f"<table><tr><th>Sample</th><th>Chunks failed</th><th>Events lost</th>"
             f"<th>Fraction lost</th></tr>{rows}</table>") if rows else ""
    return (f'<div class="warning" id="partial"><b>PARTIAL results</b>: some chunks failed, so '
            f"the yields below are incomplete.{table}</div>")


def render_run_page(run: Run, live: bool) -> str:
    """A run's page; ``live`` adds the polling script (server) instead of a static snapshot."""
    results = run.results or {}
    parts = [f"<h1>Run {_e(run.run_id)}</h1>"]
    facts = [("Status", f'<span class="badge {_e(run.state)}">{_e(run.state)}</span>'),
             ("Started", _e(_time_text(run.started)))]
    if run.state in TERMINAL_STATES:
        st = status_payload(run)
        facts.append(("Chunks", f"{_e(st['chunks_done'])} of {_e(st['chunks_total'])} done, "
                                f"{_e(st['chunks_failed'])} failed"))
    if results:
        facts += [("Release", _e(results.get("release"))),
                  ("Luminosity", f"{_num(results.get('luminosity_fb'), 'g')} fb⁻¹"),
                  ("Data events selected (in range)",
                   f"{_e(results.get('data', {}).get('events_selected'))} "
                   f"({_e(results.get('data', {}).get('events_in_range'))})")]
    parts.append(_facts(facts, "run-facts"))
    if run.state not in TERMINAL_STATES:
        parts += ["<h2>Progress</h2>", _progress_html(run)]
    if results:
        parts += [_partial_html(results), "<h2>m4l distribution</h2>",
                  _plots_html(run.path, results),
                  "<h2>Significance</h2>", _significance_html(results),
                  "<h2>Profile-likelihood fit (pyhf)</h2>", _fit_html(results),
                  "<h2>Yields</h2>", _yields_html(run.path, results),
                  "<h2>Inputs</h2>", _inputs_html(results)]
    elif run.state in TERMINAL_STATES:
        msg = (run.status or {}).get("message") or "no results were written"
        parts.append(f'<div class="error">{_e(msg)}</div>')
    else:
        parts.append('<p class="muted">Results appear here when the run finishes.</p>')
    if run.manifest is not None:
        parts += ["<h2>Manifest</h2>",
                  f'<pre id="manifest">{_e(json.dumps(run.manifest, indent=2))}</pre>']
    return _page(f"atlaspipe run {run.run_id}", "".join(parts), live=live)


def _inputs_html(results: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{_e(i.get('sample'))}</td><td>{_e(i.get('source'))}</td>"
        f"<td class=\"num\">{_e(i.get('entries'))}</td>"
        f"<td class=\"num\">{_e(i.get('size_bytes'))}</td></tr>"
        for i in results.get("inputs", []) if isinstance(i, dict)
    )
    if not rows:
        return "<p class=\"muted\">None recorded.</p>"
    return ("<div class=\"scroll\"><table id=\"inputs\"><tr><th>Sample</th><th>Source</th>"
            f"<th class=\"num\">Entries</th><th class=\"num\">Bytes</th></tr>{rows}</table></div>")


def write_report(results: dict[str, Any], manifest: dict[str, Any] | None, run_dir: Path) -> str:
    """Write the static ``report.html`` beside the run's plots; returns its file name."""
    run = Run(run_id=str(results.get("run_id", run_dir.name)), path=run_dir, manifest=manifest,
              status=_read_json(run_dir / "status.json"), results=results)
    if run.state not in TERMINAL_STATES:
        # The report is written at the end of finalize, before the final status lands.
        run.status = None
    tmp = run_dir / ".report.html.tmp"
    tmp.write_text(render_run_page(run, live=False), encoding="utf-8")
    tmp.replace(run_dir / "report.html")
    return "report.html"


# ---------------------------------------------------------------------------------------------
# The server


def load_auth(host: str) -> tuple[str, str] | None:
    """``(user, password)`` from ATLASPIPE_WEB_AUTH(_FILE); required when ``host`` is not loopback."""
    value = os.environ.get("ATLASPIPE_WEB_AUTH", "")
    file_name = os.environ.get("ATLASPIPE_WEB_AUTH_FILE", "")
    if not value and file_name:
        try:
            value = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"ATLASPIPE_WEB_AUTH_FILE {file_name}: {exc.strerror}") from exc
    if value:
        user, sep, password = value.partition(":")
        if not sep or not user or not password:
            raise ConfigError("ATLASPIPE_WEB_AUTH must be user:password with both parts non-empty")
        return user, password
    if not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without authentication: set ATLASPIPE_WEB_AUTH="
            "user:password (or ATLASPIPE_WEB_AUTH_FILE), or bind to 127.0.0.1"
        )
    return None


def _authorised(header: str, auth: tuple[str, str]) -> bool:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    # Compare both parts in constant time so a timing probe learns neither.
    ok_user = hmac.compare_digest(user.encode(), auth[0].encode())
    ok_password = hmac.compare_digest(password.encode(), auth[1].encode())
    return ok_user and ok_password


def create_app(output: Path, auth: tuple[str, str] | None = None) -> web.Application:
    """The aiohttp application serving the runs of ``output``."""
    from aiohttp import web

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

    def not_found(request: web.Request, what: str) -> web.Response:
        if request.path.startswith("/api/"):
            return web.json_response({"error": what}, status=404)
        body = (f"<h1>Not found</h1><p>{_e(what)}</p>"
                '<p><a href="/">All runs</a></p>')
        return web.Response(text=_page("Not found", body, live=False), status=404,
                            content_type="text/html")

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if auth is not None and request.path != "/healthz" and not _authorised(
            request.headers.get("Authorization", ""), auth
        ):
            return web.Response(status=401, text="authentication required\n",
                                headers={"WWW-Authenticate": 'Basic realm="atlaspipe"'})
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            response = not_found(request, f"There is nothing at {request.path}.")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
        )
        return response

    def run_or_404(request: web.Request) -> Run:
        run = load_run(output, request.match_info["run_id"])
        if run is None:
            raise web.HTTPNotFound()
        return run

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def index(request: web.Request) -> web.Response:
        runs = await asyncio.to_thread(list_runs, output)
        return web.Response(text=render_run_list(output, runs), content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def api_runs(request: web.Request) -> web.Response:
        runs = await asyncio.to_thread(list_runs, output)
        return web.json_response({"runs": [run_summary(r) for r in runs]},
                                 headers={"Cache-Control": "no-store"})

    async def api_status(request: web.Request) -> web.Response:
        run = await asyncio.to_thread(run_or_404, request)
        return web.json_response(status_payload(run), headers={"Cache-Control": "no-store"})

    async def run_redirect(request: web.Request) -> web.Response:
        run = run_or_404(request)
        raise web.HTTPFound(f"/runs/{run.run_id}/")

    async def run_page(request: web.Request) -> web.Response:
        run = await asyncio.to_thread(run_or_404, request)
        text = await asyncio.to_thread(render_run_page, run, True)
        return web.Response(text=text, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def run_file(request: web.Request) -> web.StreamResponse:
        run = run_or_404(request)
        path = safe_child(run.path, request.match_info["name"])
        if path is None or path.suffix.lower() not in _SERVED_SUFFIXES or not path.is_file():
            raise web.HTTPNotFound()
        # Plots are rewritten when a run finishes: always revalidate.
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC_FILES:
            raise web.HTTPNotFound()
        return web.Response(text=_static_text(name), content_type=_STATIC_FILES[name])

    app = web.Application(middlewares=[guard])
    app.add_routes([
        web.get("/healthz", healthz),
        web.get("/", index),
        web.get("/api/runs", api_runs),
        web.get("/api/runs/{run_id}/status", api_status),
        web.get("/runs/{run_id}", run_redirect),
        web.get("/runs/{run_id}/", run_page),
        web.get("/runs/{run_id}/{name}", run_file),
        web.get("/static/{name}", static),
    ])
    return app


async def _serve(output: Path, host: str, port: int, auth: tuple[str, str] | None) -> None:
    from aiohttp import web

    runner = web.AppRunner(create_app(output, auth), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
    print(f"atlaspipe serve: runs in {output} at http://{shown}:{bound[1]}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Container runtimes stop with SIGTERM: close the listener cleanly and exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = "Serve the runs of an output folder (plots, yields, fit, live progress)."
    parser.add_argument("--output", type=Path,
                        default=Path(os.environ.get("ATLASPIPE_OUTPUT_DIR", "atlaspipe-output")),
                        help="folder holding the runs (default: $ATLASPIPE_OUTPUT_DIR or "
                             "./atlaspipe-output)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to bind (default 127.0.0.1; anything else requires "
                             "ATLASPIPE_WEB_AUTH)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="port (default 8080; 0 picks a free one)")


def main(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: must be between 0 and 65535")
    auth = load_auth(args.host)
    asyncio.run(_serve(Path(args.output), args.host, args.port, auth))
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="atlaspipe serve")
    configure_parser(_parser)
    try:
        sys.exit(main(_parser.parse_args()))
    except AtlaspipeError as _exc:
        print(f"atlaspipe: error: {_exc}", file=sys.stderr)
        sys.exit(_exc.exit_code)
