"""Private Redis and RabbitMQ servers for tests that stop, kill or freeze a service.

The shared services (RabbitMQ node rabbit@localhost on 127.0.0.1:5672, Redis on 127.0.0.1:6379) serve every
test session on the machine at once, so no test may stop them. A fault test starts its own server instead:
:class:`PrivateRedis` is a ``redis-server`` on a free loopback port, :class:`PrivateRabbitMQ` a second
RabbitMQ node with its own name, ports, data folder and Erlang cookie. The cookie is what makes the
isolation hard rather than careful: the ``rabbitmqctl`` calls made here cannot authenticate to any other node.

No server outlives its test session: fixture finalizers stop them, an ``atexit`` hook kills what is left, and
on Linux each server gets SIGKILL from the kernel when the Python thread that started it dies (so even a
SIGKILLed pytest leaves nothing running). A later session removes the folders of dead sessions.

Use the fixtures ``private_redis`` (a factory), ``private_rabbitmq`` (one node per session) and
``private_broker_url`` (a fresh vhost on that node for each test); import them into the test module like
the other shared fixtures (``# noqa: F401`` on the import, ``# noqa: F811`` on the tests using them).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NoReturn, Protocol
from urllib.parse import quote

import amqp
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import IN_CI

PRIVATE_ROOT = Path(tempfile.gettempdir()) / "atlaspipe-private-services"
"""Folders of the private servers, one per server: ``<kind>-<pid of the owning process>-<random>``."""
SHARED_RABBITMQ_NODE = "rabbit@localhost"
_LOG_TAIL = 3000


class PrivateServiceError(RuntimeError):
    """A private server did not start, stop or answer as asked."""


# --- processes ----------------------------------------------------------------------------------------

class _Server(Protocol):
    def destroy(self) -> None: ...


_live: set[_Server] = set()


def _kill_all_at_exit() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.destroy()


atexit.register(_kill_all_at_exit)


def _die_with_starting_thread() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when the thread that started it ends.

    The signal follows the *thread*, not the process: start servers from the main thread (fixtures run there).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def arm() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return arm


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_sessions() -> None:
    """Kill servers and remove folders left in PRIVATE_ROOT by processes that no longer exist."""
    PRIVATE_ROOT.mkdir(parents=True, exist_ok=True)
    for folder in PRIVATE_ROOT.iterdir():
        parts = folder.name.split("-")
        if len(parts) != 3 or not parts[1].isdigit() or _alive(int(parts[1])):
            continue
        with contextlib.suppress(OSError, ValueError):
            pid = int((folder / "server.pid").read_text())
            # The pid may have been reused since; our servers run in their folder.
            if Path(f"/proc/{pid}/cwd").readlink() == folder:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


def _new_folder(kind: str) -> Path:
    sweep_dead_sessions()
    folder = PRIVATE_ROOT / f"{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(mode=0o700)
    return folder


def free_port(taken: tuple[int, ...] = ()) -> int:
    """A loopback TCP port nobody listens on, below the kernel's ephemeral range.

    Servers here are stopped and started again on the same port; an ephemeral port could meanwhile be taken
    as the local end of some outgoing connection.
    """
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    for _ in range(200):
        port = random.randrange(15000, max(ephemeral_low, 15001))
        if port in taken:
            continue
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise PrivateServiceError("no free loopback port found")


def accepts_tcp(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05,
               log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise PrivateServiceError(f"timed out after {timeout} s waiting for {what}{_tail(log)}")
        time.sleep(interval)


def _tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    return f"\n--- {log} (end) ---\n{log.read_text(errors='replace')[-_LOG_TAIL:]}"


class _Process:
    """One server process at a time, running in ``folder``, its pid in ``folder/server.pid`` for the sweep."""

    def __init__(self, folder: Path, log: Path) -> None:
        self.folder = folder
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None
        self.frozen = False

    def spawn(self, command: list[str], env: Mapping[str, str]) -> None:
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                command, cwd=self.folder, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                # Run before exec in the child, to set PR_SET_PDEATHSIG; nothing else happens there.
                preexec_fn=_die_with_starting_thread())  # noqa: PLW1509
        (self.folder / "server.pid").write_text(str(self.popen.pid))
        self.frozen = False

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise PrivateServiceError("the server was never started")
        return self.popen.pid

    def exited_early(self, what: str) -> PrivateServiceError:
        code = self.popen.returncode if self.popen is not None else None
        return PrivateServiceError(f"{what} exited with code {code} while starting{_tail(self.log)}")

    def signal(self, sig: signal.Signals) -> None:
        if self.running:
            os.kill(self.pid, sig)

    def freeze(self) -> None:
        self.signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)
        self.frozen = False

    def wait_exit(self, timeout: float, what: str) -> None:
        if self.popen is None:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise PrivateServiceError(f"{what} still running {timeout} s after being stopped"
                                      f"{_tail(self.log)}") from None
        self.frozen = False

    def kill(self) -> None:
        if self.running:
            os.kill(self.pid, signal.SIGKILL)
            self.wait_exit(10, "a SIGKILLed server")
        self.frozen = False


# --- Redis ----------------------------------------------------------------------------------------------

class PrivateRedis:
    """A ``redis-server`` of one test on 127.0.0.1:<free port>, data in a folder of its own.

    ``persistent=True`` runs it as Compose does (append-only file plus RDB snapshots): everything written
    survives :meth:`kill`, :meth:`stop` and :meth:`start`. ``persistent=False`` keeps nothing on disk
    except the snapshot an explicit ``stop(save=True)`` writes, which the next :meth:`start` loads (that
    is how :meth:`outage` keeps the data); a :meth:`kill` or ``stop(save=False)`` loses everything.
    """

    def __init__(self, *, persistent: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.binary = binary
        self.persistent = persistent
        self.folder = _new_folder("redis")
        self.port = free_port()
        self._process = _Process(self.folder, self.folder / "redis.log")
        _live.add(self)

    def __repr__(self) -> str:
        return f"PrivateRedis(port={self.port}, persistent={self.persistent}, folder={self.folder})"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0, timeout: float = 2.0) -> redis.Redis:
        """A client that fails at once: no retries, and ``timeout`` seconds for a frozen server to answer."""
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=timeout,
                           socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.running

    def answers(self) -> bool:
        try:
            return bool(self.client(timeout=0.5).ping())
        except redis.RedisError:
            return False

    def _arguments(self) -> list[str]:
        durability = (["--appendonly", "yes", "--save", "3600 1 300 100 60 10000"] if self.persistent
                      else ["--appendonly", "no", "--save", ""])
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--daemonize", "no", "--logfile", "", "--protected-mode", "yes", *durability]

    def start(self, timeout: float = 20.0) -> None:
        if self.running:
            raise PrivateServiceError(f"{self} is already running")
        first_start = self._process.popen is None
        for attempt in range(3):
            self._process.spawn(self._arguments(), os.environ)
            try:
                self.wait_until_ready(timeout)
                break
            except PrivateServiceError:
                # Someone may have taken the port since it was probed; once clients know it, it must stay.
                if self.running or not first_start or attempt == 2:
                    raise
                self.port = free_port()
        if not self.persistent:
            (self.folder / "dump.rdb").unlink(missing_ok=True)

    def wait_until_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if not self._process.running:
                raise self._process.exited_early("redis-server")
            return self.answers()

        wait_until(ready, timeout, f"{self} to answer PING", log=self._process.log)

    def wait_until_down(self, timeout: float = 20.0) -> None:
        wait_until(lambda: not accepts_tcp(self.port), timeout, f"{self} to stop listening")

    def stop(self, *, save: bool, timeout: float = 20.0) -> None:
        """``SHUTDOWN SAVE`` (snapshot written, loaded by the next start) or ``SHUTDOWN NOSAVE``."""
        if not self.running:
            return
        if self._process.frozen:
            self._process.thaw()
        try:
            self.client(timeout=timeout).shutdown(save=save, nosave=not save)
        except redis.RedisError as error:
            raise PrivateServiceError(f"{self} refused to shut down: {error}{_tail(self._process.log)}") from None
        self._process.wait_exit(timeout, str(self))
        self.wait_until_down(timeout)

    def kill(self) -> None:
        """SIGKILL: a persistent server keeps what it acknowledged (append-only file); the other loses all."""
        self._process.kill()

    def restart_empty(self) -> None:
        """Kill the server, delete its data files and start it again with nothing in it."""
        self.kill()
        for name in ("dump.rdb", "appendonly.aof"):
            (self.folder / name).unlink(missing_ok=True)
        shutil.rmtree(self.folder / "appendonlydir", ignore_errors=True)
        self.start()

    @contextlib.contextmanager
    def outage(self, seconds: float = 0.0) -> Iterator[None]:
        """Unreachable (connection refused) for the ``with`` body and at least ``seconds``; back with its data."""
        began = time.monotonic()
        self.stop(save=True)
        try:
            yield
            time.sleep(max(0.0, seconds - (time.monotonic() - began)))
        finally:
            self.start()

    def freeze(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel, but no command is ever answered."""
        self._process.freeze()

    def thaw(self) -> None:
        self._process.thaw()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        self.freeze()
        try:
            yield
        finally:
            self.thaw()

    def destroy(self) -> None:
        """Kill the server and delete its folder; the object is unusable afterwards."""
        self._process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
        _live.discard(self)


# --- RabbitMQ -------------------------------------------------------------------------------------------

def rabbitmq_scripts() -> Path | None:
    """The folder of the real ``rabbitmq-server``/``rabbitmqctl`` scripts.

    Debian's /usr/sbin ones are wrappers that switch to the ``rabbitmq`` user, whose HOME holds the shared
    node's cookie and who could not write to our folder; the scripts they wrap sit in /usr/lib/rabbitmq/bin.
    """
    candidates = [Path("/usr/lib/rabbitmq/bin")]
    found = shutil.which("rabbitmq-server")
    if found is not None:
        candidates.append(Path(found).resolve().parent)
    for folder in candidates:
        if (folder / "rabbitmq-server").is_file() and (folder / "rabbitmqctl").is_file():
            return folder
    return None


class PrivateRabbitMQ:
    """A RabbitMQ node of this test session: ``atlaspipe-faults-<pid>-<n>@localhost`` on free loopback ports.

    It has its own Erlang cookie (in its folder, used as HOME by the node and by our ``rabbitmqctl``), no
    plugins, and ignores /etc/rabbitmq. guest/guest may connect from loopback, as on any fresh node.
    ``config`` adds rabbitmq.conf lines, e.g. ``{"consumer_timeout": "10000"}``.
    """

    _count = 0

    def __init__(self, *, config: Mapping[str, str] | None = None) -> None:
        scripts = rabbitmq_scripts()
        if scripts is None:
            raise FileNotFoundError("rabbitmq-server is not installed")
        self.scripts = scripts
        PrivateRabbitMQ._count += 1
        self.node = f"atlaspipe-faults-{os.getpid()}-{PrivateRabbitMQ._count}@localhost"
        self.folder = _new_folder("rabbitmq")
        self.port = free_port()
        self.dist_port = free_port(taken=(self.port,))
        self.last_boot_seconds = 0.0
        self._process = _Process(self.folder, self.folder / "server.log")
        self._vhost_pool: list[str] = []
        self._vhost_count = 0
        self._write_files(config or {})
        _live.add(self)

    def __repr__(self) -> str:
        return f"PrivateRabbitMQ(node={self.node}, port={self.port}, folder={self.folder})"

    def _write_files(self, config: Mapping[str, str]) -> None:
        home = self.folder / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex.upper())
        cookie.chmod(0o400)
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "rabbitmq-env.conf").write_text("")
        (self.folder / "rabbitmq.conf").write_text("".join(f"{key} = {value}\n" for key, value in config.items()))

    @property
    def env(self) -> dict[str, str]:
        """The environment of the node and of ``rabbitmqctl`` calls aimed at it."""
        return {
            **os.environ,
            "HOME": str(self.folder / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.folder / "advanced.config"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # The script then execs the VM instead of forking it, so our child *is* beam.smp (kill() and
            # the die-with-parent signal reach it); -noinput below keeps the shell off.
            "RABBITMQ_ALLOW_INPUT": "true",
        }

    def url(self, vhost: str = "") -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{quote(vhost, safe='')}"

    @property
    def pid(self) -> int:
        """The pid of beam.smp."""
        return self._process.pid

    @property
    def running(self) -> bool:
        """The node's VM is alive (its app may still be stopped)."""
        return self._process.running

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl -n <this node> ...``; its stdout, or an error with its stderr."""
        if self.node == SHARED_RABBITMQ_NODE:
            raise PrivateServiceError("refusing to run rabbitmqctl against the shared node")
        done = subprocess.run([str(self.scripts / "rabbitmqctl"), "-n", self.node, "-q", *args], env=self.env,
                              cwd=self.folder, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise PrivateServiceError(f"rabbitmqctl {' '.join(args)} on {self.node} failed ({done.returncode}): "
                                      f"{done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def answers(self) -> bool:
        """An AMQP handshake as guest on the default vhost succeeds."""
        if not accepts_tcp(self.port):
            return False
        try:
            connection = amqp.Connection(host=f"127.0.0.1:{self.port}", userid="guest", password="guest",
                                         virtual_host="/", connect_timeout=1)
            connection.connect()
            connection.close()
        except (OSError, amqp.exceptions.AMQPError):
            return False
        return True

    def start(self, timeout: float = 90.0) -> float:
        """Boot the node (again: a restarted node recovers its durable queues); the seconds it took."""
        if self.running:
            raise PrivateServiceError(f"{self} is already running")
        began = time.monotonic()
        self._process.spawn([str(self.scripts / "rabbitmq-server"), "-noinput", "-noshell"], self.env)
        self.wait_until_ready(timeout)
        self.last_boot_seconds = time.monotonic() - began
        return self.last_boot_seconds

    def wait_until_ready(self, timeout: float = 90.0) -> None:
        def ready() -> bool:
            if not self._process.running:
                raise self._process.exited_early(f"RabbitMQ node {self.node}")
            return self.answers()

        wait_until(ready, timeout, f"{self} to accept AMQP connections", interval=0.1,
                   log=self.folder / "log" / f"{self.node}.log")

    def wait_until_down(self, timeout: float = 60.0) -> None:
        wait_until(lambda: not accepts_tcp(self.port), timeout, f"{self} to stop listening")

    def stop(self, timeout: float = 60.0) -> None:
        """``rabbitmqctl stop``: the whole node shuts down cleanly."""
        if not self.running:
            return
        if self._process.frozen:
            self._process.thaw()
        self.ctl("stop", timeout=timeout)
        self._process.wait_exit(timeout, str(self))

    def stop_app(self) -> None:
        """Stop the RabbitMQ application; the VM stays up, AMQP connections are refused."""
        self.ctl("stop_app")
        self.wait_until_down()

    def start_app(self) -> None:
        self.ctl("start_app")
        self.wait_until_ready()

    @contextlib.contextmanager
    def outage(self, seconds: float = 0.0) -> Iterator[None]:
        """App stopped for the ``with`` body and at least ``seconds``; started again whatever happens."""
        began = time.monotonic()
        self.stop_app()
        try:
            yield
            time.sleep(max(0.0, seconds - (time.monotonic() - began)))
        finally:
            self.start_app()

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the whole node, wait ``down_seconds``, boot it again from its data folder."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def kill(self) -> None:
        """SIGKILL of beam.smp; :meth:`start` boots it again."""
        self._process.kill()

    def freeze(self) -> None:
        """SIGSTOP of beam.smp: connections hang instead of failing."""
        self._process.freeze()

    def thaw(self) -> None:
        self._process.thaw()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        self.freeze()
        try:
            yield
        finally:
            self.thaw()

    def ensure_running(self) -> None:
        """Whatever the last test did to it, leave the node up and accepting connections."""
        if self._process.frozen:
            self._process.thaw()
        if not self.running:
            self.start()
        elif not self.answers():
            self.start_app()

    def add_vhosts(self, names: list[str]) -> None:
        """Create vhosts with full permissions for guest, in one ``rabbitmqctl`` call (each takes 0.5-1 s)."""
        definitions = {
            "vhosts": [{"name": name} for name in names],
            "permissions": [{"user": "guest", "vhost": name, "configure": ".*", "write": ".*", "read": ".*"}
                            for name in names],
        }
        path = self.folder / f"definitions-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps(definitions))
        try:
            self.ctl("import_definitions", str(path))
        finally:
            path.unlink()

    def add_vhost(self, name: str) -> str:
        """Create a vhost guest may use; its URL."""
        self.add_vhosts([name])
        return self.url(name)

    def fresh_vhost(self, batch: int = 16) -> str:
        """The name of a vhost no one has used yet (they are made ``batch`` at a time)."""
        if not self._vhost_pool:
            names = [f"test-{self._vhost_count + i}" for i in range(batch)]
            self.add_vhosts(names)
            self._vhost_count += batch
            self._vhost_pool = names
        return self._vhost_pool.pop(0)

    def destroy(self) -> None:
        """Kill the node and delete its folder; the object is unusable afterwards."""
        self._process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
        _live.discard(self)


# --- fixtures -------------------------------------------------------------------------------------------

def _missing(what: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{what}; CI must install it")
    pytest.skip(what)


class RedisFactory(Protocol):
    def __call__(self, *, persistent: bool = False) -> PrivateRedis: ...


@pytest.fixture
def private_redis() -> Iterator[RedisFactory]:
    """``private_redis(persistent=...)`` starts a private Redis; every one is destroyed after the test."""
    made: list[PrivateRedis] = []

    def make(*, persistent: bool = False) -> PrivateRedis:
        try:
            server = PrivateRedis(persistent=persistent)
        except FileNotFoundError as error:
            _missing(str(error))
        made.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in made:
            server.destroy()


@pytest.fixture(scope="session")
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """One private RabbitMQ node for the whole session (booting one takes seconds)."""
    try:
        node = PrivateRabbitMQ()
    except FileNotFoundError as error:
        _missing(str(error))
    try:
        node.start()
        yield node
    finally:
        try:
            node.stop()
        finally:
            node.destroy()


@pytest.fixture
def private_broker_url(private_rabbitmq: PrivateRabbitMQ) -> str:
    """The URL of a vhost of this test's own on the private node, which is up when the test begins."""
    private_rabbitmq.ensure_running()
    return private_rabbitmq.url(private_rabbitmq.fresh_vhost())
