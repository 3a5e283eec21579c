"""``atlaspipe serve``: browse the runs of an output folder over HTTP (aiohttp).

Pages: ``/`` (run list), ``/runs/<id>/`` (plots, yields, significance, fit, manifest; live
progress and the partial m4l histogram while running), ``/runs/<id>/<file>`` (a file of the run
folder), ``/api/runs`` and ``/api/runs/<id>/status`` (JSON polled by the pages; a running run's
carries its ``live.json``), ``/healthz`` (container probes).
The pages are rendered by atlaspipe.results.report, which also writes the static ``report.html``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import hmac
import html
import logging
import mimetypes
import os
import re
import signal
import stat
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from atlaspipe.config import is_loopback, secret
from atlaspipe.errors import ConfigError, SchemaError
from atlaspipe.model import Document, LiveHistogram, Manifest, RunResults, RunStatus
from atlaspipe.results.report import (
    RunFolder,
    page,
    progress_of,
    render_run_list,
    render_run_page,
    static_text,
    timestamp,
)

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
# Run ids and file names: one path segment of plain characters, so nothing can name a parent,
# a separator or an encoded form of either.
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}$")
_SERVED_SUFFIXES = frozenset({".png", ".pdf", ".svg", ".json", ".csv", ".md", ".html", ".txt",
                              ".log", ".root"})
_STATIC_FILES = {"live.js": "application/javascript", "style.css": "text/css"}
_DOCUMENTS = ("manifest.json", "status.json", "results.json")

D = TypeVar("D", bound=Document)

HEADER_TIMEOUT_SECONDS = 15.0
"""How long a connection may take to send a whole request (or stay idle between requests)."""


def runner_options(header_timeout: float = HEADER_TIMEOUT_SECONDS) -> dict[str, Any]:
    """aiohttp server options that close a connection whose request headers do not arrive in time.

    aiohttp has no header read timeout of its own. Its keep-alive timer starts when a connection
    opens and moves only when a request has been answered, and on expiry it closes a connection
    that has no complete request: so it bounds the time to send the headers, trickled or not.
    """
    return {"keepalive_timeout": header_timeout}


# ---------------------------------------------------------------------------------------------
# Reading run folders


def safe_child(parent: Path, name: str) -> Path | None:
    """``parent/name`` if ``name`` is one plain segment that resolves inside ``parent``, else None."""
    if not _SEGMENT.match(name) or ".." in name:
        return None
    base = parent.resolve()
    # Nothing is served through a symbolic link, even one to a file of the same folder.
    if (base / name).is_symlink():
        return None
    child = (base / name).resolve()
    if child.parent != base:
        return None
    return child


class NotRegular(OSError):
    """A path that is a symbolic link, a folder, a FIFO or a device: never read by the server."""


def read_regular(path: Path) -> bytes:
    """The bytes of ``path``, opened without following a symbolic link, if it is a regular file.

    Opening with O_NOFOLLOW and checking the open descriptor leaves no window between a check and
    the read for a link or a FIFO to be swapped in.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegular(errno.ELOOP, "a symbolic link, not served") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise NotRegular(errno.EINVAL, "not a regular file, not served")
        return handle.read()


def _read(kind: type[D], path: Path, problems: list[str]) -> D | None:
    """The document at ``path``; None if there is none, or if it is invalid (said in ``problems``)."""
    try:
        text = read_regular(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        problems.append(f"{path.name}: cannot read: {exc.strerror or exc}")
        return None
    try:
        # Named by its file name alone: the page does not show where the server keeps its runs.
        return kind.from_json(text, path.name)
    except SchemaError as exc:
        problems.append(str(exc))
        return None


def load_run(output: Path, run_id: str) -> RunFolder | None:
    """The run ``run_id`` of ``output``, or None if there is no such run folder."""
    path = safe_child(output, run_id)
    if path is None or not path.is_dir() or not any((path / n).exists() for n in _DOCUMENTS):
        return None
    problems: list[str] = []
    manifest = _read(Manifest, path / "manifest.json", problems)
    status = _read(RunStatus, path / "status.json", problems)
    results = _read(RunResults, path / "results.json", problems)
    return RunFolder(run_id=path.name, path=path, results=results, status=status, manifest=manifest,
                     problems=tuple(problems))


def live_status(run: RunFolder) -> dict[str, Any]:
    """``/api/runs/<id>/status``: the run's progress and, while it runs, its ``live.json`` (whose
    ETA, from the rate chunks land at, replaces the one from the state's timestamps)."""
    progress = progress_of(run)
    problems: list[str] = []
    live = None if run.terminal else _read(LiveHistogram, run.path / "live.json", problems)
    if live is not None and live.run_id != run.run_id:
        live = None
    if live is not None and live.eta_seconds is not None and progress.state == "running":
        progress = replace(progress, eta_seconds=live.eta_seconds)
    return {**progress.to_jsonable(), "live": None if live is None else live.to_jsonable()}


def _sort_key(run: RunFolder) -> float:
    stamp = timestamp(run.started)
    return stamp if stamp is not None else run.path.stat().st_mtime


def list_runs(output: Path) -> list[RunFolder]:
    """Every run folder of ``output``, newest first."""
    if not output.is_dir():
        return []
    runs = [r for p in output.iterdir() if p.is_dir() and (r := load_run(output, p.name))]
    runs.sort(key=_sort_key, reverse=True)
    return runs


def run_summary(run: RunFolder) -> dict[str, Any]:
    """Headline facts of a run for ``/api/runs``."""
    results = run.results
    fit = results.fit if results is not None else None
    sig = results.significance if results is not None else None
    return {
        "run_id": run.run_id, "state": run.state, "started": run.started, "release": run.release,
        "inputs": run.inputs(), "status": progress_of(run).to_jsonable(), "problems": list(run.problems),
        "mu": fit.mu if fit else None, "mu_uncertainty": fit.mu_uncertainty if fit else None,
        "significance_observed": fit.significance_observed if fit else None,
        "significance_expected": fit.significance_expected if fit else None,
        "significance_notebook": sig.notebook if sig else None, "n_data_window": sig.n_data if sig else None,
    }


# ---------------------------------------------------------------------------------------------
# The server


def load_auth(host: str) -> tuple[str, str] | None:
    """``(user, password)`` from ATLASPIPE_WEB_AUTH(_FILE); required when ``host`` is not loopback."""
    value = secret("ATLASPIPE_WEB_AUTH") or ""
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
        body = f"<h1>Not found</h1><p>{html.escape(what)}</p><p><a href=\"/\">All runs</a></p>"
        return web.Response(text=page("Not found", body, live=False), status=404,
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

    def run_or_404(request: web.Request) -> RunFolder:
        run = load_run(output, request.match_info["run_id"])
        if run is None:
            raise web.HTTPNotFound()
        return run

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def index(_request: web.Request) -> web.Response:
        runs = await asyncio.to_thread(list_runs, output)
        return web.Response(text=render_run_list(output, runs), content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def api_runs(_request: web.Request) -> web.Response:
        runs = await asyncio.to_thread(list_runs, output)
        return web.json_response({"runs": [run_summary(r) for r in runs]},
                                 headers={"Cache-Control": "no-store"})

    async def api_status(request: web.Request) -> web.Response:
        run = await asyncio.to_thread(run_or_404, request)
        body = await asyncio.to_thread(live_status, run)
        return web.json_response(body, headers={"Cache-Control": "no-store"})

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
        if path is None or path.suffix.lower() not in _SERVED_SUFFIXES:
            raise web.HTTPNotFound()
        try:
            body = await asyncio.to_thread(read_regular, path)
        except OSError:
            raise web.HTTPNotFound() from None
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        # Plots are rewritten when a run finishes: always revalidate.
        return web.Response(body=body, content_type=kind, headers={"Cache-Control": "no-cache"})

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC_FILES:
            raise web.HTTPNotFound()
        return web.Response(text=static_text(name), content_type=_STATIC_FILES[name])

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


def serve(output: Path, host: str, port: int, auth: tuple[str, str] | None,
          on_listening: Callable[[str], None] | None = None) -> None:
    """Serve ``output`` until SIGTERM or SIGINT; ``on_listening`` receives the URL once bound."""
    asyncio.run(_serve(output, host, port, auth, on_listening or (lambda url: log.info("serving at %s", url))))


async def start_server(output: Path, host: str, port: int, auth: tuple[str, str] | None,
                       header_timeout: float = HEADER_TIMEOUT_SECONDS) -> web.AppRunner:
    """The server of ``output`` listening on ``host:port``; ``cleanup()`` the runner to stop it."""
    from aiohttp import web

    runner = web.AppRunner(create_app(output, auth), access_log=None, **runner_options(header_timeout))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return runner


async def _serve(output: Path, host: str, port: int, auth: tuple[str, str] | None,
                 on_listening: Callable[[str], None]) -> None:
    runner = await start_server(output, host, port, auth)
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
    on_listening(f"http://{shown}:{bound[1]}/")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Container runtimes stop with SIGTERM: close the listener cleanly and exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
