"""`make run` and `make demo`: check the stores, migrate, then run web, worker(s) and beat.

Quiet and supervised: Celery banners and routine per-task lines are left out, each request gives
one line (gunicorn's access line), the banner comes last once every process is ready, a process
that dies is restarted with backoff (one line says so) instead of taking the others down, and
Ctrl-C stops everything within a few seconds. A missing or unreachable database or Redis stops it
with one line naming the URL and the command that fixes it.

The development settings of the run (DEBUG on, plain-http cookies, the stores and, for the demo,
the fake Google's endpoints) are written to ``<var>/dev.env``, which ``butlers/settings.py`` reads
when the environment has no ``SECRET_KEY``: ``manage.py`` and ``celery`` on this checkout then
work as the README and the runbook write them.

``--demo`` also runs the fake Google (``tests/fake_google``) and points the app at it, on embedded
stores under ``var/demo/`` (``$BUTLERS_VAR_DIR/demo``) so that the demo's made-up grants never reach ``make run``'s data.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
PROBE_AGENT = "butlers-run-probe"

#: Lines a developer does not need once per task or per request. Celery's failures, retries and
#: rejections, django-structlog's request_failed and every project line stay.
ROUTINE = [
    re.compile(r"\[celery\.worker\.strategy\].*\breceived\b|\breceived\b.*\[celery\.worker\.strategy\]"),
    re.compile(r"\bsucceeded in \d"),
    re.compile(r"\brequest_(started|finished)\b"),
    re.compile(r"Connected to (filesystem|redis)://"),
    re.compile(r"Scheduler: Sending due task "),  # beat, once per schedule entry per period
    re.compile(PROBE_AGENT),
    re.compile(r"Warm shutdown \(MainProcess\)"),
    re.compile(r"AXES: (Reset|Deleted|Cleaned up) 0 "),  # django-axes' no-op bookkeeping per login
    re.compile(r"Not Found: \S+\s+\[django\.request\]"),  # the access line already says 404
    re.compile(r"^\s*$"),
]


def say(message: str) -> None:
    print(f"{ROLE}: {message}", flush=True)


ROLE = "make run"
#: Set by Ctrl-C (SIGINT), SIGTERM or SIGHUP, from the very start: a stop during the migration
#: waits for it to finish instead of breaking it with a traceback.
STOP = threading.Event()


def stop_on_signals() -> None:
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP set STOP, whichever thread the kernel hands them to.

    Not from a Python handler: Python runs one only in the main thread, between two bytecodes,
    and the main thread here spends its life blocked in ``STOP.wait()`` while other threads pump
    the processes' output, so a signal that landed on one of those would wait for it for ever
    (and a handler taking STOP's lock could deadlock a main thread that held it). The
    interpreter's own C-level handler writes the signal's number to a wakeup pipe at once, in any
    thread; a thread of ours reads the pipe and sets STOP. Call it from the main thread.
    """
    read_end, write_end = os.pipe()  # not inherited by the processes started
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: None)  # the pipe carries it

    def relay() -> None:
        while os.read(read_end, 64):
            STOP.set()

    threading.Thread(target=relay, name="signals", daemon=True).start()


# --- stores ---------------------------------------------------------------------------------------
def masked(url: str) -> str:
    """The URL with any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _pg_start_command() -> str:
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").is_dir() else []
    version = versions[-1] if versions else "<version>"
    return f"pg_ctlcluster --skip-systemctl-redirect {version} main start"


def database_problem(url: str) -> str | None:
    """One line when DATABASE_URL's server is down or its database missing, else None."""
    if not url.startswith(("postgres://", "postgresql://", "pgsql://")):
        return None
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    host, port, user = parts.hostname or "127.0.0.1", parts.port or 5432, parts.username or "postgres"
    try:
        psycopg.connect(
            host=host, port=port, user=user, password=parts.password, dbname=name or "postgres",
            connect_timeout=3,
        ).close()
        return None
    except psycopg.OperationalError as exc:
        text = str(exc)
    if "does not exist" in text and f'"{name}"' in text:
        return (f"database {name!r} does not exist on {masked(url)}. Create it with: "
                f"createdb -h {host} -p {port} -U {user} {name}")
    if "password authentication failed" in text or "no pg_hba.conf entry" in text:
        return (f"PostgreSQL at {masked(url)} refused user {user!r} ({text.strip().splitlines()[-1]}). "
                "Fix the user or password in DATABASE_URL")
    return (f"PostgreSQL is not reachable at {masked(url)}. Start it with: {_pg_start_command()} "
            "(or unset DATABASE_URL for the embedded SQLite)")


def redis_problem(url: str) -> str | None:
    """One line when REDIS_URL's server does not answer, else None."""
    if not url:
        return None
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
        return None
    except redis.AuthenticationError:
        return f"Redis at {masked(url)} refused the password in REDIS_URL. Fix REDIS_URL"
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
        return (f"Redis is not reachable at {masked(url)}. Start it with: "
                f'redis-server --daemonize yes --bind {host} --port {port} --save "" --appendonly no '
                "(or unset REDIS_URL for the embedded file broker)")


# --- processes ------------------------------------------------------------------------------------
try:  # loaded here, once: between fork and exec the child only makes the prctl system call
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """Children get SIGTERM if the supervisor itself is killed (no orphans left serving)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Process:
    name: str
    argv: list[str]
    ready_marker: re.Pattern | None = None  # a line that says the process is ready
    stop_signal: int = signal.SIGTERM
    popen: subprocess.Popen | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 1.0
    restart_at: float | None = None


class Supervisor:
    def __init__(self, processes: list[Process], env: dict[str, str], *, width: int) -> None:
        self.processes = processes
        self.env = env
        self.width = width
        self.stopping = STOP
        self._print_lock = threading.Lock()

    def start(self, proc: Process) -> None:
        proc.ready.clear()
        proc.started_at = time.monotonic()
        proc.popen = subprocess.Popen(
            proc.argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            # its own session: the terminal's Ctrl-C reaches the supervisor, which stops each
            # process in order instead of every one of them racing to print its shutdown
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        threading.Thread(target=self._pump, args=(proc, proc.popen), daemon=True).start()

    def _pump(self, proc: Process, popen: subprocess.Popen) -> None:
        for line in popen.stdout:
            line = line.rstrip("\n")
            if proc.ready_marker is not None and not proc.ready.is_set() and proc.ready_marker.search(line):
                proc.ready.set()
                continue
            if any(pattern.search(line) for pattern in ROUTINE):
                continue
            with self._print_lock:
                print(f"{proc.name:<{self.width}} | {line}", flush=True)

    def watch(self) -> None:
        """Restart a process that died, with backoff, until stop() is called."""
        while not self.stopping.wait(0.5):
            now = time.monotonic()
            for proc in self.processes:
                code = proc.popen.poll() if proc.popen else None
                if proc.restart_at is not None:
                    if now >= proc.restart_at:
                        proc.restart_at = None
                        self.start(proc)
                    continue
                if code is None:
                    if now - proc.started_at > 60:
                        proc.backoff = 1.0  # it ran a while: the next failure restarts quickly
                    continue
                proc.restarts += 1
                delay = proc.backoff
                proc.backoff = min(proc.backoff * 2, 30.0)
                proc.restart_at = now + delay
                say(f"{proc.name} exited with code {code}; restarting it in {delay:.0f} s "
                    f"(restart {proc.restarts})")

    def stop(self) -> None:
        self.stopping.set()
        running = [p for p in self.processes if p.popen and p.popen.poll() is None]
        for proc in running:
            try:
                os.killpg(proc.popen.pid, proc.stop_signal)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 6
        for proc in running:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.popen.wait()


def wait_http(url: str, *, timeout: float, alive) -> bool:
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": PROBE_AGENT})
    while time.monotonic() < deadline and alive():
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def write_dev_env(path: Path, values: dict[str, str]) -> None:
    lines = [
        "# Written by `make run` / `make demo` at each start: the development settings of this",
        "# checkout. butlers/settings.py reads it when the environment has no SECRET_KEY, never",
        "# overriding a variable that is set. Production never has this file (see docs/deploy.md).",
    ]
    lines += [f"{name}={value}" for name, value in values.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold a database password
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    # its own session: the terminal's Ctrl-C does not cut a migration in half
    return subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          start_new_session=True, check=False)


def main(argv: list[str] | None = None) -> int:
    global ROLE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="also run the fake Google, app pointed at it")
    args = parser.parse_args(argv)
    demo = args.demo
    stop_on_signals()
    ROLE = "make demo" if demo else "make run"

    env = dict(os.environ)
    host = env.get("BUTLERS_HOST", "127.0.0.1")
    port = int(env.get("BUTLERS_PORT") or env.get("PORT") or 8200)
    if demo:
        # the demo's grants are made up: its own embedded stores, apart from make run's data
        for name in ("DATABASE_URL", "REDIS_URL"):
            env.pop(name, None)
        env["BUTLERS_VAR_DIR"] = str(Path(env.get("BUTLERS_VAR_DIR") or ROOT / "var") / "demo")
    var_dir = Path(env.get("BUTLERS_VAR_DIR") or ROOT / "var")
    var_dir.mkdir(parents=True, exist_ok=True)

    dev = {
        "DEBUG": "1",
        "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        # named by the STARTUP BLOCKED banner of manage.py commands run beside this one
        "BUTLERS_DASHBOARD_URL": f"http://{host}:{port}/",
    }
    for name in ("DATABASE_URL", "REDIS_URL"):
        if env.get(name):
            dev[name] = env[name]
    fake_port = None
    if demo:
        sys.path.insert(0, str(ROOT))
        from tests.fake_google.__main__ import app_env

        fake_port = int(env.get("FAKE_GOOGLE_PORT") or port + 100)
        dev.update(app_env(fake_url=f"http://127.0.0.1:{fake_port}", port=port, host=host))
    for name, value in dev.items():
        env.setdefault(name, value)

    env["PROMETHEUS_MULTIPROC_DIR"] = env.get("PROMETHEUS_MULTIPROC_DIR") or str(var_dir / "prometheus")
    env["PYTHONUNBUFFERED"] = "1"
    # running as root (a container, a CI box): Celery's superuser warning, once per process, is noise here
    env["PYTHONWARNINGS"] = "ignore:You're running the worker with superuser privileges"

    problems = [p for p in (database_problem(env.get("DATABASE_URL", "")), redis_problem(env.get("REDIS_URL", ""))) if p]
    for problem in problems:
        say(problem)
    if problems:
        return 1
    for what, taken in (("the app", port), ("the fake Google", fake_port)):
        if taken and port_in_use(host if what == "the app" else "127.0.0.1", taken):
            say(f"port {taken} for {what} is already in use (another `make run`?). "
                f"Stop it or choose another port: BUTLERS_PORT={port + 1} make {'demo' if demo else 'run'}")
            return 1

    write_dev_env(var_dir / "dev.env", {name: env[name] for name in dev})
    metrics = Path(env["PROMETHEUS_MULTIPROC_DIR"])
    for stale in metrics.glob("*.db"):  # a previous run's per-process files
        stale.unlink()
    metrics.mkdir(parents=True, exist_ok=True)

    for step in (("migrate", "--noinput"), ("collectstatic", "--noinput")):
        result = manage(env, *step)
        if result.returncode != 0:
            sys.stdout.write(result.stdout + result.stderr)
            say(f"`manage.py {' '.join(step)}` failed (exit {result.returncode}), see above")
            return 1
        if step[0] == "migrate":
            applied = result.stdout.count("... OK")
            if applied:
                say(f"applied {applied} database migrations")
        if STOP.is_set():
            say("stopped before starting anything.")
            return 0

    celery = str(BIN / "celery")
    workers = int(env.get("CELERY_WORKER_PROCESSES") or os.cpu_count() or 2)
    processes: list[Process] = []
    if demo:
        processes.append(Process(
            "fake-google",
            [PYTHON, "-m", "tests.fake_google", "--quiet", "--port", str(fake_port), "--app-port", str(port),
             "--client-id", env["GOOGLE_OAUTH_CLIENT_ID"], "--client-secret", env["GOOGLE_OAUTH_CLIENT_SECRET"],
             "--state-file", str(var_dir / "fake-google.json")],
            ready_marker=re.compile(r"^Fake Google on "),
        ))
    processes.append(Process(
        "web",
        [str(BIN / "gunicorn"), "-c", "butlers/gunicorn.conf.py", "--log-level", "warning",
         "--bind", f"{host}:{port}", "--workers", env.get("WEB_WORKERS", "2"), "butlers.wsgi:application"],
        stop_signal=signal.SIGINT,  # gunicorn's quick shutdown
    ))
    # No gossip, mingle or worker heartbeat events: nothing here consumes them, and each costs every
    # worker broker traffic and CPU beside the tasks (remote control, `celery inspect`, still works).
    for i in range(1, workers + 1):
        processes.append(Process(
            f"worker{i}" if workers > 1 else "worker",
            [celery, "-A", "butlers", "--quiet", "worker", "--loglevel=INFO",
             f"--pool={env.get('CELERY_WORKER_POOL', 'threads')}",
             f"--concurrency={env.get('CELERY_WORKER_CONCURRENCY', '24')}",
             f"--prefetch-multiplier={env.get('CELERY_WORKER_PREFETCH_MULTIPLIER', '4')}",
             "--without-gossip", "--without-mingle", "--without-heartbeat", f"--hostname=worker{i}@%h"],
            ready_marker=re.compile(r"@\S+ ready\."),
        ))
    processes.append(Process(
        "beat", [celery, "-A", "butlers", "--quiet", "beat", "--loglevel=INFO"],
        ready_marker=re.compile(r"beat: Starting\.\.\."),
    ))

    supervisor = Supervisor(processes, env, width=max(len(p.name) for p in processes))

    for proc in processes:
        supervisor.start(proc)
    web = next(p for p in processes if p.name == "web")
    watcher = threading.Thread(target=supervisor.watch, daemon=True)
    watcher.start()
    if wait_http(f"http://{host}:{port}/api/health", timeout=90,
                 alive=lambda: not supervisor.stopping.is_set()):
        web.ready.set()
    deadline = time.monotonic() + 90
    while not supervisor.stopping.is_set() and time.monotonic() < deadline:
        if all(p.ready.is_set() for p in processes):
            break
        time.sleep(0.2)
    if not supervisor.stopping.is_set():
        late = [p.name for p in processes if not p.ready.is_set()]
        if late:
            say(f"not ready after 90 s: {', '.join(late)} (their lines above say why); still trying")
        print(banner(env=env, host=host, port=port, demo=demo, fake_port=fake_port, var_dir=var_dir), flush=True)
    supervisor.stopping.wait()
    say("stopping ...")
    supervisor.stop()
    say("stopped.")
    return 0


def banner(*, env: dict[str, str], host: str, port: int, demo: bool, fake_port: int | None, var_dir: Path) -> str:
    url = f"http://{host}:{port}"
    database = masked(env["DATABASE_URL"]) if env.get("DATABASE_URL") else f"SQLite {var_dir / 'butlers.sqlite3'}"
    broker = masked(env["REDIS_URL"]) if env.get("REDIS_URL") else f"embedded (file cache and broker under {var_dir})"
    shown = os.path.relpath(var_dir, ROOT) if var_dir.is_relative_to(ROOT) else str(var_dir)
    prefix = f"BUTLERS_VAR_DIR={shlex.quote(shown)} " if demo else ""
    lines = [
        "",
        f"  Butlers OAuth is ready on {url}/" + ("   (demo: the fake Google)" if demo else ""),
        f"  Database:   {database}",
        f"  Broker:     {broker}",
        f"  Dashboard:  {url}/    Admin: {url}/admin/    Status: {url}/api/oauth/status",
        "  Create your login once (prompts for a password):",
        f"      {prefix}.venv/bin/python manage.py createsuperuser",
    ]
    if demo:
        lines += [
            f"  Fake Google: http://127.0.0.1:{fake_port} (grants kept in {shown}/fake-google.json)",
            "  Log in, press \"Connect a Google account\", then Allow on the fake consent page.",
        ]
    lines += ["  Stop with Ctrl-C.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
