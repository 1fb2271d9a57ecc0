"""Private stores and the app's processes for fault tests.

Every fault test runs against its OWN PostgreSQL cluster (``initdb`` + ``pg_ctl`` on a free port)
and its OWN ``redis-server`` on a free port, so stopping, restarting or emptying them never touches
the shared servers other tests (and other people) use. The app runs as production runs it:
gunicorn with ``butlers/gunicorn.conf.py``, a Celery worker and Celery beat (``scripts/run.sh``),
pointed at those stores and at the project's fake Google.

Import it; nothing here is a fixture (``tests/faults/conftest.py`` wraps the pieces a test needs).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
BIN = Path(PYTHON).parent


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], *, timeout: float, interval: float = 0.1,
               what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; return it, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # the thing waited for may fail until it is up
            last_error = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout} s (last error: {last_error!r})")


def _port_open(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- Redis -----------------------------------------------------------------------------------
class RedisServer:
    """A private ``redis-server`` without persistence: a restart comes back empty."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: _port_open(self.port), timeout=10, what=f"redis on {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # like a crash: no final save (there is none anyway)
            self.process.wait(10)
        self.process = None

    def restart_empty(self) -> None:
        """Stop, then start again with nothing in it (what a Redis restart without AOF is)."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


# --- PostgreSQL ----------------------------------------------------------------------------------
def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    binary = shutil.which(name)
    if binary is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return binary


class PostgresCluster:
    """A private PostgreSQL cluster (trust auth on loopback) in a temporary directory.

    As root (a CI container) the server runs as the ``postgres`` user, since PostgreSQL refuses
    to run as root.
    """

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = Path(tempfile.mkdtemp(prefix="butlers-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = list(args)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def url(self, name: str = "butlers") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def init(self, *, max_connections: int = 200) -> PostgresCluster:
        if self._as_postgres:
            shutil.chown(self.base, "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a") as conf:
            # Fast and small: nothing here must survive a power cut.
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.base}'\nfsync = off\n"
                f"synchronous_commit = off\nfull_page_writes = off\nmax_connections = {max_connections}\n"
                "shared_buffers = 32MB\n"
            )
        return self

    def start(self) -> PostgresCluster:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "start")
        return self

    def stop(self, *, mode: str = "fast") -> None:
        """``fast`` closes every connection; ``immediate`` is a crash (recovery at next start)."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
                  check=False)

    def restart(self, *, mode: str = "fast") -> None:
        self.stop(mode=mode)
        self.start()

    def create_database(self, name: str = "butlers") -> str:
        self._run(_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                  name)
        return self.url(name)

    def destroy(self) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.base, ignore_errors=True)


# --- the app's processes --------------------------------------------------------------------------
class AppProcess:
    """One process of the app (gunicorn, a Celery worker, beat), its output kept in a file."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> AppProcess:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.running:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, *, timeout: float = 15) -> None:
        if self.process is None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL the whole process group (the master and its children): a crash."""
        self.signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class App:
    """gunicorn + Celery worker + beat on private stores, as ``scripts/run.sh`` starts them."""

    def __init__(self, *, database_url: str, redis_url: str, extra_env: dict[str, str] | None = None,
                 heartbeat_interval: int = 3600) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="butlers-app-"))
        (self.dir / "prometheus").mkdir()
        self.env = {
            key: value for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "PYTEST", "TEST_", "GOOGLE_", "OAUTH_", "GMAIL_"))
        }
        self.env.update(
            {
                "DJANGO_SETTINGS_MODULE": "butlers.settings",
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "DEBUG": "0",
                "SECRET_KEY": "fault-suite-secret-key-not-for-production-0123456789abcdef",
                "OAUTH_ENCRYPTION_KEYS": "6Q2kVqL0m5Gq0w0S6Cq0c1Xy2Wqzv9V2o5rL3mE7t1I=",
                "SECURE_SSL_REDIRECT": "0",
                "SESSION_COOKIE_SECURE": "0",
                "CSRF_COOKIE_SECURE": "0",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "BUTLERS_VAR_DIR": str(self.dir / "var"),
                "STATIC_ROOT": str(self.dir / "static"),
                "PROMETHEUS_MULTIPROC_DIR": str(self.dir / "prometheus"),
                "OAUTH_HEARTBEAT_INTERVAL": str(heartbeat_interval),
                "OAUTH_RATE_LIMIT": "0",
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(ROOT),
                "WEB_WORKERS": "2",
                "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            }
        )
        self.env.update(extra_env or {})
        self.processes: dict[str, AppProcess] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=timeout,
        )

    def migrate(self) -> None:
        result = self.manage("migrate", "--noinput")
        if result.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{result.stdout}\n{result.stderr}")

    def _spawn(self, name: str, argv: list[str]) -> AppProcess:
        process = AppProcess(name, argv, env=self.env, log_dir=self.dir).start()
        self.processes[name] = process
        return process

    def start_web(self) -> AppProcess:
        process = self._spawn(
            "web", [str(BIN / "gunicorn"), "-c", "butlers/gunicorn.conf.py", "butlers.wsgi:application"]
        )
        wait_until(lambda: _port_open(self.port), timeout=180, what="gunicorn listening")
        return process

    def start_worker(self, *, concurrency: int = 8) -> AppProcess:
        return self._spawn(
            "worker",
            [str(BIN / "celery"), "-A", "butlers", "worker", "--loglevel=INFO", "--pool=threads",
             f"--concurrency={concurrency}", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "--hostname=faultworker@%h"],
        )

    def start_beat(self) -> AppProcess:
        return self._spawn(
            "beat", [str(BIN / "celery"), "-A", "butlers", "beat", "--loglevel=INFO"]
        )

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"===== {n} =====\n{p.output()[-6000:]}" for n, p in self.processes.items())

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
