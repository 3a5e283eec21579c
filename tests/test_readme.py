"""The README works as written: its ```bash blocks run, in order, in one shell, from a copy of a fresh clone.

How the blocks run:
- The working folder is a fresh folder holding the repository's tracked top-level entries (symbolic links)
  and ``.venv``, the virtual environment this test runs in (what the first block's install line makes);
  ``../shared`` next to it is the shared data folder (``$ATLASPIPE_SHARED_DIR``). So relative paths in
  the README mean what they mean in a clone.
- Every block runs in one bash session, in README order, with ``set -euo pipefail``: a variable
  exported or a venv activated in one block holds in the next, as for a reader.
- Blocks preceded by ``<!-- readme-test: skip (REASON) -->`` are not run; the reason is in the README
  next to the block. ``<!-- readme-test: skip-line "PREFIX" (REASON) -->`` leaves out the lines of the next
  block that start with PREFIX.
- Long-running servers (``atlaspipe serve``, ``atlaspipe flower``) are started, probed until they answer
  HTTP on their port (any status: Flower answers 401 without credentials), then stopped. A line ending with
  ``&`` is started in the background and its port waited for; it is stopped at the end.

The only substitutions, for ports and paths so that the test never collides with a service on this
machine: every port the README uses (8000, 8080, 5555, 9808-9810) becomes a free port; ``/tmp/`` becomes
the test's temporary folder; ``RUN_ID`` becomes the id of the newest run folder in ``./atlaspipe-output``
(what the reader copies from ``submit``'s output). The environment points the README's default broker
and result backend at a private RabbitMQ vhost and Redis database 12 (the README's
``ATLASPIPE_BROKER_URL``/``ATLASPIPE_RESULT_BACKEND``), and the download cache at the temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from atlaspipe.errors import InputError
from atlaspipe.io.input_roots import check_submitted_inputs
from tests.conftest import IN_CI, REPO, require_shared, services_up

pytestmark = pytest.mark.readme

README = REPO / "README.md"
BACKEND = "redis://127.0.0.1:6379/12"
PORTS = (8000, 8080, 5555, 9808, 9809, 9810)
LONG_RUNNING = re.compile(r"^(?:[A-Z_]+=\S+\s+)*atlaspipe (?:serve|flower)\b")
SKIP = re.compile(r"<!-- readme-test: skip \((?P<reason>.+)\) -->")
SKIP_LINE = re.compile(r'<!-- readme-test: skip-line "(?P<prefix>[^"]+)" \((?P<reason>.+)\) -->')
SCRIPT_SECONDS = 600
"""A guard against a hang only: on an idle 2-core machine the whole README takes about a minute."""


@dataclass
class Block:
    line: int
    """The line of the README where the block's code starts."""
    commands: list[tuple[int, str]]
    skipped: str | None = None


def readme_blocks(text: str) -> list[Block]:
    """The ```bash blocks of the README, with the directives written above each; continuation lines
    (a trailing backslash) are joined, comment-only lines dropped."""
    blocks: list[Block] = []
    lines = text.splitlines()
    directives: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("<!-- readme-test:"):
            directives.append(line)
        elif line.strip() == "```bash":
            start = index + 2
            body: list[tuple[int, str]] = []
            index += 1
            while lines[index].strip() != "```":
                body.append((index + 1, lines[index]))
                index += 1
            block = Block(start, [])
            for directive in directives:
                if (skip := SKIP.fullmatch(directive.strip())) is not None:
                    block.skipped = skip["reason"]
                elif (skip_line := SKIP_LINE.fullmatch(directive.strip())) is not None:
                    body = [(n, c) for n, c in body if not c.startswith(skip_line["prefix"])]
                else:
                    raise AssertionError(f"README line {index}: unknown readme-test directive {directive!r}")
            joined: list[tuple[int, str]] = []
            for number, command in body:
                if joined and joined[-1][1].endswith("\\"):
                    joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + command.strip())
                elif command.strip() and not command.lstrip().startswith("#"):
                    joined.append((number, command))
            block.commands = joined
            blocks.append(block)
            directives = []
        elif line.strip():
            directives = [] if not line.startswith("<!--") else directives
        index += 1
    return blocks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def substitute(command: str, ports: dict[int, int], tmp: Path) -> str:
    for port, free in ports.items():
        command = re.sub(rf"(?<![\d.]){port}(?!\d)", str(free), command)
    command = command.replace("/tmp/", f"{tmp}/")
    return command.replace("RUN_ID", '"$RUN_ID"')


PRELUDE = r"""
set -euo pipefail
BACKGROUND=()
stop_background() { for pid in "${BACKGROUND[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done; }
trap stop_background EXIT
# wait_http PORT PID: until something answers HTTP on PORT (any status), while process PID lives.
wait_http() {
  "$READMETEST_PYTHON" - "$1" "$2" <<'PY'
import sys, time, urllib.error, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = "gone"
    if state in ("Z", "gone"):
        sys.exit(f"the server exited before answering on port {port}")
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)
    except OSError:
        time.sleep(0.3)
sys.exit(f"nothing answered on port {port}")
PY
}
# server PORT COMMAND: start COMMAND (a long-running server), probe it, stop it.
server() {
  local port=$1 pid
  setsid bash -c "$2" &
  pid=$!
  wait_http "$port" "$pid" || { kill -TERM -- "-$pid" 2>/dev/null; return 1; }
  kill -TERM -- "-$pid" 2>/dev/null || true
  wait "$pid" || true
}
# background PORT COMMAND: start COMMAND for the rest of the session, once it answers on PORT.
background() {
  setsid bash -c "$2" &
  BACKGROUND+=($!)
  wait_http "$1" "$!"
}
newest_run() { ls -td atlaspipe-output/*/ 2>/dev/null | head -1 | xargs -r basename; }
"""


def script(blocks: list[Block], ports: dict[int, int], tmp: Path) -> str:
    """One bash script running every command of the blocks, each announced on stderr with its README line."""
    out = [PRELUDE]
    for block in blocks:
        if block.skipped:
            continue
        for number, raw in block.commands:
            command = substitute(raw, ports, tmp)
            code = command.split(" #")[0].rstrip() if " #" in command else command
            out.append(f"echo \"README:{number} at $SECONDS s:\" {shell_quote(raw.strip())} >&2")
            if "RUN_ID" in raw:
                out.append('RUN_ID="$(newest_run)"')
            port = re.search(r"--port[ =](\d+)|\b(\d{4,5})\b", code)
            if LONG_RUNNING.match(code.strip()):
                assert port is not None, f"README line {number}: a server without a port"
                out.append(f"server {port.group(1) or port.group(2)} {shell_quote(code)}")
            elif code.endswith("&"):
                assert port is not None, f"README line {number}: a background command without a port"
                out.append(f"background {port.group(1) or port.group(2)} {shell_quote(code[:-1])}")
            else:
                out.append(command)
    return "\n".join(out) + "\n"


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def fresh_clone(tmp: Path) -> Path:
    """A folder that looks like a fresh clone: the tracked top-level entries, ``.venv`` and ``../shared``."""
    clone = tmp / "atlaspipe"
    clone.mkdir()
    try:
        tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        names = {line.split("/", 1)[0] for line in tracked.splitlines()}
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked archive)
        names = {p.name for p in REPO.iterdir() if not p.name.startswith(".") and p.name != "atlaspipe-output"}
    for name in sorted(names):
        (clone / name).symlink_to(REPO / name)
    (clone / ".venv").symlink_to(Path(sys.prefix))
    (tmp / "shared").symlink_to(require_shared("atlas-opendata").parent)
    return clone


def private_vhost() -> str:
    name = f"atlaspipe-readme-{uuid.uuid4().hex[:8]}"
    try:
        for command in (["add_vhost", name], ["set_permissions", "-p", name, "guest", ".*", ".*", ".*"]):
            subprocess.run(["rabbitmqctl", "-q", *command], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        if IN_CI:
            pytest.fail(f"cannot make a private RabbitMQ vhost: {exc}")
        pytest.skip(f"cannot make a private RabbitMQ vhost (rabbitmqctl): {exc}")
    return name


def our_workers(tmp: Path) -> list[int]:
    """The workers the README started (--detach: not our children): those whose command line names a
    file in this test's folder (their --logfile)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"celery" in b" ".join(argv) and any(str(tmp).encode() in arg for arg in argv):
            found.append(int(proc.name))
    return found


def stop_detached_workers(tmp: Path) -> list[int]:
    """Stop the README's workers if its own `kill` did not (a failure before it); the ones found."""
    left = our_workers(tmp)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while our_workers(tmp) and time.monotonic() < deadline:
        time.sleep(0.3)
    for pid in our_workers(tmp):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def test_directives_are_understood_and_every_skip_says_why() -> None:
    blocks = readme_blocks(README.read_text())
    assert len(blocks) >= 10
    run = [b for b in blocks if not b.skipped]
    assert len(run) >= 5, "most blocks run"
    for block in blocks:
        assert block.skipped is None or len(block.skipped) > 15, f"README line {block.line}: say why it is skipped"


def test_the_readme_commands_run_as_written(tmp_path: Path) -> None:
    services_up()
    blocks = readme_blocks(README.read_text())
    clone = fresh_clone(tmp_path)
    vhost = private_vhost()
    ports = {port: free_port() for port in PORTS}
    text = script(blocks, ports, tmp_path)
    (tmp_path / "readme.sh").write_text(text)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("ATLASPIPE_", "VIRTUAL_ENV", "CELERY_", "FLOWER_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(sys.prefix)) or "/usr/bin:/bin"
    env.update({
        "ATLASPIPE_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        "ATLASPIPE_RESULT_BACKEND": BACKEND,
        "ATLASPIPE_CACHE_DIR": str(tmp_path / "cache"),
        "READMETEST_PYTHON": sys.executable,
    })
    started = time.monotonic()
    log_out, log_err = tmp_path / "readme.out", tmp_path / "readme.err"
    try:
        with log_out.open("w") as out, log_err.open("w") as err:
            shell = subprocess.Popen(["bash", str(tmp_path / "readme.sh")], cwd=clone, env=env, stdout=out,
                                     stderr=err, text=True, start_new_session=True)
            try:
                returncode: int | None = shell.wait(SCRIPT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(shell.pid, signal.SIGKILL)
                shell.wait()
                returncode = None
        # The README's last worker command stops them; wait for them to finish their shutdown.
        deadline = time.monotonic() + 30
        while our_workers(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        left = stop_detached_workers(tmp_path)
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60, check=False)
    took = time.monotonic() - started
    stdout, stderr = log_out.read_text(), log_err.read_text()
    announced = [line for line in stderr.splitlines() if line.startswith("README:")]
    where = announced[-1] if announced else "before the first command"
    assert returncode == 0, (f"the README failed at {where} (rc {returncode}, None: still running after "
                             f"{SCRIPT_SECONDS} s):\n{stdout[-3000:]}\n{stderr[-4000:]}")
    assert "Traceback" not in stderr, stderr[-4000:]
    assert not left, f"the README's workers were still running after its kill: {left}"
    print(f"README: {len(announced)} commands in {took:.1f} s:", *announced, sep="\n  ")


GENERATED = ("compose/.env", "compose/secrets/")
"""Paths the README names that ``scripts/docker-run.sh --init`` writes, absent from a clone."""


def test_every_path_the_readme_names_exists() -> None:
    text = README.read_text()
    links = re.findall(r"\]\(([^)#\s]+)\)", text)
    named = re.findall(r"`((?:atlaspipe|tests|scripts|compose|helm|docs|benchmarks)/[^`\s]*)`", text)
    missing = sorted({path for path in [*links, *named] if "://" not in path and not path.startswith(GENERATED)
                      and not (REPO / path.rstrip("/")).exists()})
    assert not missing, f"the README names paths that do not exist: {missing}"


def test_the_input_roots_export_of_the_readme_keeps_the_cache_allowed(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`atlaspipe bench --events` generates its dataset in the cache: the README's export must not fence it out."""

    export = next(c for b in readme_blocks(README.read_text()) for _, c in b.commands
                  if c.startswith("export ATLASPIPE_INPUT_ROOTS="))
    clone = tmp_path / "clone"
    clone.mkdir()
    value = subprocess.run(["bash", "-c", f'{export.split(" #")[0]}; printf %s "$ATLASPIPE_INPUT_ROOTS"'],
                           cwd=clone, capture_output=True, text=True, check=True).stdout
    assert value.startswith(str(clone)), value
    monkeypatch.setenv("ATLASPIPE_INPUT_ROOTS", value)
    monkeypatch.setenv("ATLASPIPE_CACHE_DIR", str(tmp_path / "cache"))
    bench_file = tmp_path / "cache" / "bench" / "2020-300000" / "mc_345060.ggH125_ZZ4lep.4lep.root"
    bench_file.parent.mkdir(parents=True)
    bench_file.write_bytes(b"root")
    check_submitted_inputs([str(bench_file), str(clone)])
    elsewhere = tmp_path / "elsewhere.root"
    elsewhere.write_bytes(b"root")
    with pytest.raises(InputError, match="outside the allowed input folders"):
        check_submitted_inputs([str(elsewhere)])
