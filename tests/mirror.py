"""A local HTTP mirror of the ATLAS Open Data servers for tests: real path layout, HEAD, byte
ranges and injectable faults (status codes, dropped connections, slow responses).

No CERN server is reachable from the test machines, so every network test talks to this server
on 127.0.0.1. The mirror folder is built in a temporary directory from the real files in
``$ATLASPIPE_SHARED_DIR/atlas-opendata`` (symlinked) plus small MC files from ``atlaspipe.generate.events``.
"""

from __future__ import annotations

import os
import posixpath
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

import pytest

from atlaspipe.generate.events import generate_release
from atlaspipe.physics.catalog import load_release

FaultKind = Literal["status", "drop", "slow", "ignore_range"]
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")

MIRROR_2020 = "2020/4lep"
"""Folder of the 2020 release inside the mirror (holds Data/ and MC/)."""
MIRROR_2025E = "2025e"
"""Folder of the 2025e release inside the mirror (flat, as on opendata.cern.ch)."""
REAL_2020_DATA = ("data_A", "data_B", "data_C", "data_D")
REAL_2025E_FILE = "ODEO_FEB2025_v0_exactly4lep_data15_periodD.exactly4lep.root"


@dataclass
class Fault:
    """A misbehaviour for one path.

    ``status``: answer with ``status`` instead of the file. ``drop``: send the headers and
    ``after_bytes`` bytes of the body, then close the connection. ``slow``: wait ``delay`` seconds
    before answering. ``ignore_range``: answer a Range request with the whole file (200).
    ``times`` limits how many GET requests the fault applies to (None: every one).
    """

    kind: FaultKind
    status: int = 500
    after_bytes: int = 0
    delay: float = 0.0
    times: int | None = None
    hits: int = 0

    def applies(self) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    range: str | None


@dataclass
class MirrorServer:
    """A threaded HTTP server on 127.0.0.1:<ephemeral> serving ``root``."""

    root: Path
    faults: dict[str, Fault] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def base_url(self, folder: str) -> str:
        return f"{self.url}/{folder}"

    def set_fault(self, path: str, fault: Fault) -> None:
        """Make requests for ``path`` (URL path, e.g. ``/2020/4lep/Data/data_A.4lep.root``) misbehave."""
        with self._lock:
            self.faults["/" + path.lstrip("/")] = fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.requests.clear()

    def count(self, path: str, method: str = "GET") -> int:
        """How many ``method`` requests reached ``path``."""
        wanted = "/" + path.lstrip("/")
        with self._lock:
            return sum(1 for r in self.requests if r.path == wanted and r.method == method)

    def ranges(self, path: str) -> list[str | None]:
        """The Range headers of the GET requests for ``path``, in order."""
        wanted = "/" + path.lstrip("/")
        with self._lock:
            return [r.range for r in self.requests if r.path == wanted and r.method == "GET"]

    def _record(self, method: str, path: str, range_header: str | None) -> Fault | None:
        with self._lock:
            self.requests.append(Request(method, path, range_header))
            fault = self.faults.get(path)
            if fault is None or (method != "GET" and fault.kind != "status"):
                return None
            return fault if fault.applies() else None

    def start(self) -> MirrorServer:
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _QuietServer(ThreadingHTTPServer):
    """Threaded server that does not print the connection resets the fault tests provoke."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def _handler_for(mirror: MirrorServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _file(self) -> Path | None:
            path = posixpath.normpath(unquote(urlsplit(self.path).path))
            parts = [p for p in path.split("/") if p]
            if any(p in ("..", ".") for p in parts):
                return None
            candidate = mirror.root.joinpath(*parts)
            return candidate if candidate.is_file() else None

        def _send_status(self, status: int) -> None:
            body = f"{status} {self.responses.get(status, ('',))[0]}\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self._serve()

        def do_GET(self) -> None:
            self._serve()

        def _serve(self) -> None:
            url_path = posixpath.normpath(unquote(urlsplit(self.path).path))
            range_header = self.headers.get("Range")
            fault = mirror._record(self.command, url_path, range_header)
            if fault is not None and fault.kind == "slow":
                time.sleep(fault.delay)
            if fault is not None and fault.kind == "status":
                self._send_status(fault.status)
                return
            target = self._file()
            if target is None:
                self._send_status(404)
                return
            size = target.stat().st_size
            start, stop = 0, size
            partial = False
            if range_header and not (fault is not None and fault.kind == "ignore_range"):
                match = _RANGE.fullmatch(range_header.strip())
                if match is None or not (match.group(1) or match.group(2)):
                    self._send_status(416)
                    return
                first, last = match.group(1), match.group(2)
                if first:
                    start = int(first)
                    stop = min(size, int(last) + 1) if last else size
                else:  # suffix range: the last N bytes
                    start = max(0, size - int(last))
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                partial = True
            self.send_response(206 if partial else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(stop - start))
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
            self.end_headers()
            if self.command == "HEAD":
                return
            if fault is not None and fault.kind == "drop":
                stop = min(stop, start + fault.after_bytes)
            try:
                with target.open("rb") as handle:
                    self.wfile.flush()
                    # sendfile keeps the server far faster than the client, for throughput numbers.
                    if stop > start:
                        self.connection.sendfile(handle, offset=start, count=stop - start)
                if fault is not None and fault.kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    return Handler


@contextmanager
def serving(root: Path) -> Iterator[MirrorServer]:
    """A started mirror of ``root``, stopped on exit."""
    server = MirrorServer(root).start()
    try:
        yield server
    finally:
        server.stop()


def shared_dir() -> Path:
    """The folder holding ``atlas-opendata/``; skips the test if absent (fails it on CI)."""
    default = Path(__file__).resolve().parents[1].parent / "shared"
    shared = Path(os.environ.get("ATLASPIPE_SHARED_DIR", default))
    if not (shared / "atlas-opendata").is_dir():
        reason = f"real ATLAS Open Data files not found under {shared}/atlas-opendata"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (required on CI)")
        pytest.skip(reason + " (set ATLASPIPE_SHARED_DIR)")
    return shared


@dataclass(frozen=True)
class MirrorTree:
    """A mirror folder: ``root`` plus the source file behind each served 2020/2025e sample."""

    root: Path
    sources_2020: dict[str, Path]
    sources_2025e: dict[str, Path]


def build_mirror_tree(dest: Path, *, mc_samples: tuple[str, ...] = ("ggH125_ZZ4lep", "llll"),
                      mc_events: int = 400) -> MirrorTree:
    """Lay out a mirror in ``dest``: real 2020 data and the real 2025e file (symlinks into the
    shared folder, never copies into the repo) and generated 2020 MC files."""
    opendata = shared_dir() / "atlas-opendata"
    release = load_release("2020")
    sources_2020: dict[str, Path] = {}
    for name in REAL_2020_DATA:
        sample = release.sample(name)
        source = opendata / "2020" / "4lep" / sample.path
        link = dest / MIRROR_2020 / sample.path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source)
        sources_2020[name] = source
    if mc_samples:
        generated = generate_release("2020", dest / MIRROR_2020, events=mc_events, seed=7,
                                     samples=list(mc_samples), with_data=False)
        for name in mc_samples:
            target = dest / MIRROR_2020 / release.sample(name).path
            assert target in generated.files, f"generator did not write {target}"
            sources_2020[name] = target
    real_2025e = opendata / "2025e-13tev-beta" / "exactly4lep" / REAL_2025E_FILE
    link = dest / MIRROR_2025E / REAL_2025E_FILE
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(real_2025e)
    return MirrorTree(root=dest, sources_2020=sources_2020,
                      sources_2025e={"data15_periodD": real_2025e})


def _serve_forever() -> None:
    """``python tests/mirror.py FOLDER [--port N]``: serve a mirror folder until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(description=_serve_forever.__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = MirrorServer(args.folder)
    server._server = _QuietServer(("127.0.0.1", args.port), _handler_for(server))
    print(f"serving {args.folder} at {server.url}", flush=True)
    try:
        server._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._server.server_close()


if __name__ == "__main__":
    _serve_forever()
