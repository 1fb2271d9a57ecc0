"""``make bench``: the heartbeat sweep and the token service under load, against the fake Google.

What it does, for each size in BENCH_SIZES (300 and 2,000 credentials), on a database of its own
(``bench_butlers``, dropped and re-created each time):

1. stores the credentials, each with a live grant at a fake Google that runs in its own process
   and answers the token endpoint after BENCH_LATENCY (100 ms);
2. BENCH_RUNS (3) times, side by side against that fake: the floor (``bench/floor.py``, a minimal
   asyncio sweep: the reference), ``manage.py oauth_heartbeat --all`` (the in-process sweep) and
   the Celery fan-out (a worker as ``scripts/run.sh`` starts it, one ``heartbeat_sweep``);
3. prints the medians: wall time and its ratio to the floor's, CPU ms per credential and its ratio,
   peak refreshes in flight at Google, peak RSS, with the load average before and after each run;
4. the token path: warm ``access_token_get`` median and p99, a cold call's overhead;
5. the concurrent-access check (8 processes ask at once for a stale token) and the token API under
   gunicorn (``bench/token_api.py``).

BENCH_VERBOSE=1 also prints each sweep's detailed report.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pipe, Process
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: This process's credential count: BENCH_CREDENTIALS, else BENCH_SIZES when it names one size.
N = int(os.environ.get("BENCH_CREDENTIALS") or os.environ.get("BENCH_SIZES", "2000").split(",")[0])
LATENCY = float(os.environ.get("BENCH_LATENCY", "0.1"))
DB_NAME = os.environ.get("BENCH_DATABASE", "bench_butlers")
PG_BASE = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
CLIENT_ID = "1234567890-bench.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-bench-client-secret"
WARM_CALLS = 2000
#: Comma-separated parts to run (command, celery, warm, status, concurrent, token_api; the floor always
#: runs); empty = all.
ONLY = {part.strip() for part in os.environ.get("BENCH_ONLY", "").split(",") if part.strip()}
#: A directory: record a py-spy flame profile (raw, collapsed stacks) of each sweep's processes.
PYSPY_DIR = os.environ.get("BENCH_PYSPY_DIR", "")


#: A file to append the Celery workers' log lines to (default: discarded).
WORKER_LOG = os.environ.get("BENCH_WORKER_LOG", "")


def _drain(stream, path: str) -> None:
    if not path:
        for _ in stream:
            pass
        return
    with open(path, "a") as out:
        for line in stream:
            out.write(line)


def _wanted(part: str) -> bool:
    return not ONLY or part in ONLY


def _pyspy(pid: int, name: str) -> subprocess.Popen | None:
    """Start ``py-spy record`` on ``pid`` and its children when BENCH_PYSPY_DIR is set."""
    if not PYSPY_DIR:
        return None
    pyspy = Path(sys.executable).parent / "py-spy"
    if not pyspy.exists():
        raise SystemExit(f"BENCH_PYSPY_DIR needs py-spy in this environment: {sys.executable} -m "
                         "pip install py-spy (or unset BENCH_PYSPY_DIR)")
    Path(PYSPY_DIR).mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(  # noqa: S603
        [str(pyspy), "record", "--pid", str(pid), "--subprocesses",
         "--rate", os.environ.get("BENCH_PYSPY_RATE", "100"), "--gil", "--format", "raw",
         "--output", str(Path(PYSPY_DIR) / f"{name}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _pyspy_stop(recorders) -> None:
    for recorder in recorders:
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)
    for recorder in recorders:
        if recorder is not None:
            recorder.wait(30)


def log(message: str) -> None:
    print(message, flush=True)


# --- the fake Google, in its own process (its CPU must not share the sweep's GIL) ------------------
def _fake_main(conn, n: int, latency: float) -> None:
    from tests.fake_google import FakeGoogle, server

    # Answer with Nagle off: otherwise the fake's separate header and body writes meet the
    # client's delayed ACK and every call costs ~40 ms more than the latency we inject.
    server._Handler.disable_nagle_algorithm = True
    fake = FakeGoogle(client_id=CLIENT_ID, client_secret=CLIENT_SECRET).start()
    tokens = [fake.issue_grant(f"user{i:05d}@example.com") for i in range(n)]
    conn.send({"settings": fake.settings(), "tokens": tokens})
    while True:
        command = conn.recv()
        if command == "stop":
            fake.stop()
            conn.send("stopped")
            return
        if command == "reset":
            with fake._lock:
                fake.stats.update(refreshes=0, token_requests=0, max_in_flight_refreshes=0, api_calls=[])
                fake.stats["refreshes_by_email"] = {}
            fake.token_latency = latency
            conn.send("ok")
        elif command == "no latency":
            fake.token_latency = 0.0
            conn.send("ok")
        elif command == "stats":
            stats = dict(fake.stats)
            stats["api_calls"] = len(stats["api_calls"])
            stats.pop("refreshes_by_email", None)
            stats["cpu_s"] = sum(os.times()[:2])
            conn.send(stats)


class FakeGoogleProcess:
    def __init__(self, n: int, latency: float) -> None:
        self.conn, child = Pipe()
        self.process = Process(target=_fake_main, args=(child, n, latency), daemon=True)
        self.process.start()
        ready = self.conn.recv()
        self.settings, self.tokens = ready["settings"], ready["tokens"]

    def ask(self, command: str):
        self.conn.send(command)
        return self.conn.recv()

    def stop(self) -> None:
        try:
            self.ask("stop")
        finally:
            self.process.join(5)


# --- measuring a process ------------------------------------------------------------------------------
def _proc_cpu(pid: int, part: slice = slice(11, 13)) -> float:
    """CPU seconds of a process: user + system (``part=slice(12, 13)``: system only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[part]) / ticks


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def _services_cpu() -> dict[str, float]:
    """CPU seconds used so far by the local PostgreSQL (with its ended backends) and Redis."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals = {"PostgreSQL": 0.0, "Redis": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        key = "PostgreSQL" if name.startswith("postgres") else "Redis" if name.startswith("redis-server") else None
        if key:
            totals[key] += sum(int(x) for x in fields[11:15]) / ticks  # utime stime cutime cstime
    return totals


def _proc_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants, now."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


class PeakRss:
    """Samples the summed RSS of a process tree every 100 ms; ``peak`` is the largest sum seen
    (more often costs the sweep CPU: each sample reads every thread's children file)."""

    def __init__(self, pids) -> None:
        import threading

        self.pids, self.peak, self._stop = list(pids), 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(_tree_rss_mb(pid) for pid in self.pids))
            self._stop.wait(0.1)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def _child_env(fake: FakeGoogleProcess, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "TEST_DATABASE_URL": f"{PG_BASE}/{DB_NAME}",
            "TEST_REDIS_URL": REDIS_URL,
            "GOOGLE_OAUTH_CLIENT_ID": CLIENT_ID,
            "GOOGLE_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
            "PYTHONPATH": str(ROOT),
            "BUTLERS_LOG_LEVEL": "INFO",
        }
    )
    env.update(fake.settings)
    env.update(extra or {})
    return env


def _deployed_env(fake: FakeGoogleProcess, extra: dict | None = None) -> dict:
    """Environment of a sweep process as ``make run`` starts it: ``butlers.settings`` itself.

    (tests.settings pins CONN_MAX_AGE to 0, which a deployment does not have.) The database, Redis
    and keys are the bench's; DEBUG stays off, as in production.
    """
    import tests.settings  # noqa: F401 - sets the test keys in os.environ

    env = _child_env(fake, extra)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "butlers.settings",
            "DATABASE_URL": f"{PG_BASE}/{DB_NAME}",
            "REDIS_URL": REDIS_URL,
            "DEBUG": "0",
        }
    )
    return env


def _supervisor_setting(name: str, fallback: str) -> str:
    """A worker option as ``make run`` passes it (scripts/supervise.py), or the environment's."""
    text = (ROOT / "scripts" / "supervise.py").read_text()
    found = re.search(rf"env\.get\(['\"]{name}['\"],\s*['\"]([^'\"]+)['\"]\)", text)
    return os.environ.get(name) or (found.group(1) if found else fallback)


def _run_sh_prefetch() -> str:
    return _supervisor_setting("CELERY_WORKER_PREFETCH_MULTIPLIER", "1")


def _run_sh_worker_settings() -> tuple[str, str, int]:
    """Pool, concurrency and worker processes of ``make run`` (one worker per CPU by default)."""
    processes = os.environ.get("CELERY_WORKER_PROCESSES") or str(os.cpu_count() or 2)
    return (
        _supervisor_setting("CELERY_WORKER_POOL", "threads"),
        _supervisor_setting("CELERY_WORKER_CONCURRENCY", "32"),
        int(processes),
    )


# --- set-up ---------------------------------------------------------------------------------------------
def _recreate_database() -> None:
    import psycopg

    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [DB_NAME]
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def _setup_django(fake: FakeGoogleProcess) -> None:
    os.environ.update(_child_env(fake))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _store_credentials(tokens: list[str]) -> None:
    from django.utils import timezone

    from oauth.models import PRIMARY_CREDENTIAL_KEY, GoogleCredential, Scope
    from oauth.scopes import normalize_scopes

    now = timezone.now()
    scopes = normalize_scopes(["openid", "email", "gmail.modify", "calendar"])
    rows = []
    for i, token in enumerate(tokens):
        email = f"user{i:05d}@example.com"
        rows.append(
            GoogleCredential(
                credential_key=PRIMARY_CREDENTIAL_KEY if i == 0 else f"google:{email}",
                email=email,
                credentials={"client_id": CLIENT_ID, "email": email, "scopes": scopes},
                refresh_token=token,
                state="connected",
                consented_at=now,
                refresh_token_issued_at=now,
            )
        )
    GoogleCredential.objects.bulk_create(rows, batch_size=500)
    scope_rows = {s.uri: s for s in Scope.objects.filter(uri__in=scopes)}
    for uri in scopes:
        if uri not in scope_rows:
            scope_rows[uri] = Scope.objects.create(uri=uri, short_name=uri.rsplit("/", 1)[-1][:100])
    through = GoogleCredential.granted_scopes.through
    links = [
        through(googlecredential_id=pk, scope_id=scope.pk)
        for pk in GoogleCredential.objects.values_list("pk", flat=True)
        for scope in scope_rows.values()
    ]
    through.objects.bulk_create(links, batch_size=2000)


def _make_all_due() -> None:
    from oauth.models import GoogleCredential, HeartbeatRun

    GoogleCredential.objects.update(
        last_refreshed_at=None, last_used_at=None, access_token=None, access_token_expires_at=None
    )
    HeartbeatRun.objects.all().delete()


# --- the measurements -------------------------------------------------------------------------------------
def _report(
    title: str, *, wall: float, cpu: float, rss_mb: float, stats: dict, fake_cpu: float, extra: str = "",
    machine: tuple[float, float] | None = None, services: dict[str, float] | None = None,
):
    serial = N * LATENCY
    log(f"\n== {title}")
    log(f"credentials            {N}")
    log(f"token latency          {LATENCY * 1000:.0f} ms (serial ideal {serial:.0f} s)")
    log(f"wall time              {wall:.2f} s")
    log(f"speed-up vs serial     {serial / wall:.1f}x  (target >= 20x)")
    log(f"refreshes at Google    {stats['refreshes']}  (API probe calls {stats['api_calls']})")
    log(f"peak in-flight         {stats['max_in_flight_refreshes']} refreshes")
    log(f"peak memory (RSS)      {rss_mb:.0f} MB in all (target < 300 MB)")
    log(f"CPU                    sweep {cpu:.1f} s = {cpu / wall:.0%} of one core ({cpu / N * 1000:.1f} ms per "
        f"credential); fake Google {fake_cpu:.1f} s")
    log(f"latency floor          {serial / max(1, stats['max_in_flight_refreshes']):.1f} s at the observed concurrency")
    if machine is not None:
        busy, total = machine
        log(f"machine CPU            {busy:.1f} s busy of {total:.1f} s on {os.cpu_count()} cores ({busy / total:.0%}; "
            f"includes PostgreSQL, Redis, the fake Google and anything else running)")
    if services:
        log("services CPU           " + ", ".join(f"{k} {v:.1f} s" for k, v in services.items()))
    if extra:
        log(extra)


#: CPU of ended children already counted (RUSAGE_CHILDREN only grows).
_CHILD_CPU = {"before": 0.0, "system": 0.0}
VERBOSE = os.environ.get("BENCH_VERBOSE") == "1"


def _child_cpu_baseline() -> None:
    """RUSAGE_CHILDREN counts every child ever waited for (Celery workers, gunicorn too): take
    the baseline right before the child to be measured starts."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    _CHILD_CPU["before"], _CHILD_CPU["system"] = ru.ru_utime + ru.ru_stime, ru.ru_stime


def _child_cpu_taken(ru) -> tuple[float, float]:
    """CPU seconds (all, and in the kernel) of the children waited for since the baseline."""
    cpu = ru.ru_utime + ru.ru_stime - _CHILD_CPU["before"]
    system = ru.ru_stime - _CHILD_CPU["system"]
    _CHILD_CPU["before"], _CHILD_CPU["system"] = ru.ru_utime + ru.ru_stime, ru.ru_stime
    return cpu, system


class _SweepStart:
    """The CPU a sweep process spent starting (imports, Django, checks) before its sweep began:
    read from /proc the moment its HeartbeatRun row appears (before any fork)."""

    def __init__(self, pid: int) -> None:
        import threading

        self.pid, self.cpu, self._done = pid, None, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(f"{PG_BASE}/{DB_NAME}", autocommit=True) as conn:
            while not self._done.is_set():
                cpu = _proc_cpu(self.pid)
                if conn.execute("SELECT 1 FROM oauth_heartbeatrun LIMIT 1").fetchone():
                    self.cpu = cpu
                    return
                self._done.wait(0.005)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.cpu or 0.0


def bench_floor_sweep(fake: FakeGoogleProcess) -> dict:
    """The floor (bench/floor.py) in its own process, against the same fake and database."""
    import resource

    _make_all_due()
    fake.ask("reset")
    env = _deployed_env(fake)
    _child_cpu_baseline()
    services0 = _services_cpu()
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "bench.floor"], cwd=ROOT, env=env,  # noqa: S603
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = PeakRss([child.pid])
    out, err = child.communicate()
    wall = time.perf_counter() - started
    peak_rss = sampler.stop()
    postgres = _services_cpu()["PostgreSQL"] - services0["PostgreSQL"]
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, system = _child_cpu_taken(ru)
    if child.returncode != 0:
        raise SystemExit(f"the floor sweep failed:\n{err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    stats = fake.ask("stats")
    return {"wall": wall, "cpu": cpu, "in_flight": stats["max_in_flight_refreshes"], "rss": peak_rss,
            "refreshes": stats["refreshes"], "ok": result["ok"] == N,
            "sweep_wall": result["wall_s"], "sweep_cpu": result["sweep_cpu_s"], "system": system,
            "postgres": postgres}


def bench_command_sweep(fake: FakeGoogleProcess) -> dict:
    _make_all_due()
    fake.ask("reset")
    fake_cpu0 = fake.ask("stats")["cpu_s"]
    env = _deployed_env(fake)
    machine0, services0 = _machine_busy(), _services_cpu()
    _child_cpu_baseline()
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "manage.py", "oauth_heartbeat", "--all"], cwd=ROOT, env=env,  # noqa: S603
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    sampler = PeakRss([child.pid])
    recorders = [_pyspy(child.pid, "command")]
    start_cpu = _SweepStart(child.pid)
    out, _ = child.communicate()
    _pyspy_stop(recorders)
    wall = time.perf_counter() - started
    machine = tuple(b - a for a, b in zip(machine0, _machine_busy()))
    services = {k: v - services0[k] for k, v in _services_cpu().items()}
    peak_rss = sampler.stop()
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    stats = fake.ask("stats")
    summary = " | ".join(line.strip() for line in out.splitlines())
    cpu, system = _child_cpu_taken(ru)
    if VERBOSE:
        _report(
            "oauth_heartbeat --all (in-process, threads)", wall=wall, cpu=cpu,
            rss_mb=peak_rss, stats=stats, fake_cpu=stats["cpu_s"] - fake_cpu0, machine=machine,
            services=services, extra=f"command output         {summary} (exit {child.returncode})",
        )
    from oauth.models import HeartbeatRun

    run = HeartbeatRun.objects.filter(trigger="command").order_by("-started_at").first()
    return {"wall": wall, "cpu": cpu, "in_flight": stats["max_in_flight_refreshes"], "rss": peak_rss,
            "refreshes": stats["refreshes"], "ok": child.returncode == 0,
            "sweep_wall": (run.finished_at - run.started_at).total_seconds(),
            "sweep_cpu": cpu - start_cpu.stop(), "start_cpu": start_cpu.cpu, "system": system,
            "postgres": services["PostgreSQL"]}


def bench_celery_sweep(fake: FakeGoogleProcess) -> dict:
    from oauth.models import HeartbeatRun

    _make_all_due()
    pool, concurrency, processes = _run_sh_worker_settings()
    prefetch = _run_sh_prefetch()
    redis_flush()
    multiproc = tempfile.mkdtemp(prefix="bench-prom-")
    env = _deployed_env(fake, {"PROMETHEUS_MULTIPROC_DIR": multiproc})
    import threading

    workers = []
    for i in range(processes):
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "butlers", "worker", "--loglevel=INFO",
             f"--pool={pool}", f"--concurrency={concurrency}", f"--prefetch-multiplier={prefetch}",
             "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-n", f"bench{i}@%h"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        workers.append(worker)
    try:
        for worker in workers:
            for line in worker.stderr:
                if "ready." in line:
                    break
            else:
                raise SystemExit("a Celery worker did not start")
            # keep draining the worker's log so it never blocks on a full pipe (BENCH_WORKER_LOG:
            # a file to keep it in)
            threading.Thread(target=_drain, args=(worker.stderr, WORKER_LOG), daemon=True).start()
        fake.ask("reset")
        fake_cpu0 = fake.ask("stats")["cpu_s"]
        cpu0 = sum(_proc_cpu(w.pid) for w in workers)
        sys0 = sum(_proc_cpu(w.pid, slice(12, 13)) for w in workers)
        from oauth.tasks import heartbeat_sweep

        machine0, services0 = _machine_busy(), _services_cpu()
        self0 = sum(os.times()[:2])
        started = time.perf_counter()
        sampler = PeakRss([w.pid for w in workers])
        recorders = [_pyspy(w.pid, f"worker{i}") for i, w in enumerate(workers)]
        heartbeat_sweep.apply_async(kwargs={"trigger": "bench"})
        run = None
        while time.perf_counter() - started < 600:  # (workers start before: CPU is the sweep's)
            run = HeartbeatRun.objects.filter(trigger="bench").first()
            if run is not None and run.finished_at is not None:
                break
            time.sleep(0.05)
        wall = time.perf_counter() - started
        cpu = sum(_proc_cpu(w.pid) for w in workers) - cpu0
        sys_cpu = sum(_proc_cpu(w.pid, slice(12, 13)) for w in workers) - sys0
        machine = tuple(b - a for a, b in zip(machine0, _machine_busy()))
        services = {k: v - services0[k] for k, v in _services_cpu().items()}
        services["bench (this process)"] = sum(os.times()[:2]) - self0
        _pyspy_stop(recorders)
        rss = max(sampler.stop(), sum(_proc_hwm_mb(w.pid) for w in workers))
        stats = fake.ask("stats")
        if VERBOSE:
            _report(
                f"Celery fan-out ({processes} x worker --pool={pool} --concurrency={concurrency} "
                f"--prefetch-multiplier={prefetch}, as "
                "scripts/run.sh)",
                wall=wall, cpu=cpu, rss_mb=rss, stats=stats, fake_cpu=stats["cpu_s"] - fake_cpu0,
                machine=machine, services=services,
                extra=f"worker system CPU      {sys_cpu:.1f} s of the {cpu:.1f} s (the rest is user)\n"
                f"run outcomes           {run.outcomes if run else 'unfinished'}",
            )
        return {"wall": wall, "cpu": cpu, "in_flight": stats["max_in_flight_refreshes"], "rss": rss,
                "refreshes": stats["refreshes"], "sweep_wall": wall, "sweep_cpu": cpu,
                "ok": bool(run and run.finished_at and run.outcomes.get("connected") == N),
                "system": sys_cpu, "postgres": services["PostgreSQL"]}
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()


def bench_serial(fake: FakeGoogleProcess) -> None:
    """One heartbeat's own CPU, serially, with Google answering at once (bench/serial.py)."""
    fake.ask("no latency")
    try:
        child = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "bench.serial"], cwd=ROOT, env=_deployed_env(fake),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        recorders = [_pyspy(child.pid, "serial")]
        out, _ = child.communicate()
        _pyspy_stop(recorders)
        if child.returncode:
            raise SystemExit(f"bench.serial exited with {child.returncode}")
    finally:
        fake.ask("reset")
    result = json.loads(out.strip().splitlines()[-1])
    log(f"\n== one heartbeat, serially (one thread, Google answering at once; bench/serial.py)\n"
        f"  {result['cpu_ms_per_credential']:.2f} ms CPU and {result['wall_ms_per_credential']:.2f} ms "
        f"wall per credential ({result['credentials']} credentials, all connected: "
        f"{result['all_connected']})")


def redis_flush() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def bench_token_path(fake: FakeGoogleProcess) -> None:
    """Warm ``access_token_get`` (Redis cache) median and p99, and a cold call's overhead over the
    fake's token latency (one refresh: lock, refresh grant, write, cache)."""
    from oauth.models import GoogleCredential
    from oauth.tokens import access_token_get

    import logging

    logging.getLogger("oauth").setLevel(logging.WARNING)  # one refresh line per cold call: noise here
    GoogleCredential.objects.filter(credential_key="google").update(state="connected")
    colds = []
    for _ in range(20):
        GoogleCredential.objects.filter(credential_key="google").update(
            access_token=None, access_token_expires_at=None
        )
        redis_flush()
        t0 = time.perf_counter()
        access_token_get(actor="process:bench")
        colds.append((time.perf_counter() - t0) * 1000 - LATENCY * 1000)
    samples = []
    for _ in range(WARM_CALLS):
        t0 = time.perf_counter()
        access_token_get()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    log("\n== token path")
    log(f"warm access_token_get  median {statistics.median(samples):.3f} ms, "
        f"p99 {samples[int(len(samples) * 0.99)]:.3f} ms ({WARM_CALLS} calls, Redis cache)")
    log(f"cold (one refresh)     median overhead {statistics.median(colds):.1f} ms over the fake's "
        f"{LATENCY * 1000:.0f} ms latency (20 calls)")


CHILD = """
import json, os, sys, time
import django
django.setup()
from oauth.tokens import access_token_get
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.002)
print(json.dumps({"token": access_token_get(actor="process:bench").value}), flush=True)
"""


def bench_concurrent_access(fake: FakeGoogleProcess, *, redis_url: str | None) -> None:
    from oauth.models import GoogleCredential

    GoogleCredential.objects.filter(credential_key="google").update(
        access_token=None, access_token_expires_at=None, state="connected"
    )
    redis_flush()
    fake.ask("reset")
    env = _child_env(fake, {"TEST_REDIS_URL": redis_url} if redis_url else None)
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        children = [
            subprocess.Popen([sys.executable, "-c", CHILD, str(go)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for _ in range(8)
        ]
        for child in children:
            child.stdout.readline()
        go.touch()
        tokens = {json.loads(child.communicate()[0].strip().splitlines()[-1])["token"] for child in children}
    stats = fake.ask("stats")
    label = "PostgreSQL only (Redis unreachable)" if redis_url else "Redis + PostgreSQL"
    log(f"8 processes, stale token, {label}: {stats['refreshes']} refresh(es) at Google, "
        f"{len(tokens)} distinct token(s) received")


#: Credential counts to run, each in a process of its own (BENCH_CREDENTIALS overrides with one).
SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "300,2000").split(",") if x.strip()]
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
PATHS = {"floor": "floor (bench/floor.py)", "command": "oauth_heartbeat --all",
         "celery": "Celery fan-out (as make run)"}


STATUS_SIZES = [int(x) for x in os.environ.get("BENCH_STATUS_ACCOUNTS", "300,3000").split(",") if x]
STATUS_CALLS = 60


#: Calls of the staff dashboard timed at each size (a page of 100 cards is heavier than a probe).
DASHBOARD_CALLS = 10


def _staff_session_cookie() -> str:
    """A ``sessionid`` cookie of a staff user, as after logging in (sessions are in the database,
    which gunicorn shares with this process, and both sign with the same SECRET_KEY)."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(
        username="bench-operator", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def _collect_static(fake: FakeGoogleProcess, static_root: str) -> None:
    """``collectstatic`` into ``static_root``, as ``make run`` does before it starts gunicorn: the
    dashboard's pages name their static files from its manifest (without one they answer 500)."""
    subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=ROOT,
        env=_deployed_env(fake, {"STATIC_ROOT": static_root}), check=True,
    )


def bench_status(fake: FakeGoogleProcess) -> None:
    """``GET /api/oauth/status`` (anonymous) against ``GET /api/health`` under gunicorn, and the
    dashboard ``GET /`` as a staff user (its first page: the problems, 100 cards), with the
    stored accounts grown to each of STATUS_SIZES (extra rows are copies; nothing calls Google)."""
    import socket
    import urllib.request

    from django.db import connection

    from oauth.models import GoogleCredential

    log("\n== status under gunicorn (anonymous, each round the median of %d calls of each path in "
        "turn; the staff dashboard, median of %d)" % (STATUS_CALLS, DASHBOARD_CALLS))
    staff = {"Cookie": _staff_session_cookie(), "Accept": "text/html"}
    static_root = tempfile.mkdtemp(prefix="bench-static-")
    _collect_static(fake, static_root)
    for size in STATUS_SIZES:
        have = GoogleCredential.objects.count()
        if have > size:
            log(f"{size:5d} accounts: skipped (this run's database already holds {have})")
            continue
        if have < size:
            template = GoogleCredential.objects.order_by("pk").last()
            GoogleCredential.objects.bulk_create(
                [GoogleCredential(
                    credential_key=f"google:status{i}@example.com", email=f"status{i}@example.com",
                    credentials=template.credentials, refresh_token=template.refresh_token,
                    state=["connected", "expired", "missing_scope"][i % 3],
                ) for i in range(have, size)], batch_size=1000,
            )
            with connection.cursor() as cursor:  # as autovacuum would have by the time they serve
                cursor.execute(f"ANALYZE {GoogleCredential._meta.db_table}")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = _deployed_env(fake, {"GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_WORKERS": "2",
                                   "SECURE_SSL_REDIRECT": "0", "ALLOWED_HOSTS": "127.0.0.1",
                                   "STATIC_ROOT": static_root})
        web = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "butlers/gunicorn.conf.py",
             "butlers.wsgi:application"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/api/health", timeout=2).read()
                    break
                except OSError:
                    time.sleep(0.2)
            paths = ("/api/health", "/api/oauth/status")
            for path in paths:
                for _ in range(5):  # warm both workers
                    urllib.request.urlopen(base + path, timeout=30).read()
            rounds = []  # BENCH_RUNS rounds; in each, the two paths called in turn (same machine state)
            for _ in range(RUNS):
                samples = {path: [] for path in paths}
                for _ in range(STATUS_CALLS):
                    for path in paths:
                        t0 = time.perf_counter()
                        urllib.request.urlopen(base + path, timeout=30).read()
                        samples[path].append((time.perf_counter() - t0) * 1000)
                rounds.append({path: statistics.median(samples[path]) for path in paths})
            rounds.sort(key=lambda r: r["/api/oauth/status"] / r["/api/health"])
            middle = rounds[len(rounds) // 2]
            log(f"{size:5d} accounts: /api/health {middle['/api/health']:.1f} ms, /api/oauth/status "
                f"{middle['/api/oauth/status']:.1f} ms "
                f"({middle['/api/oauth/status'] / middle['/api/health']:.1f}x health, the median of "
                f"{len(rounds)} rounds: "
                + ", ".join(f"{r['/api/oauth/status'] / r['/api/health']:.1f}x" for r in rounds) + ")")
            dashboard = urllib.request.Request(base + "/", headers=staff)
            for _ in range(3):  # warm both workers
                page = urllib.request.urlopen(dashboard, timeout=30).read().decode()
            # a lost session would be answered by the login page, after a redirect
            assert 'id="live"' in page, "the staff session was not accepted"
            samples = []
            for _ in range(DASHBOARD_CALLS):
                t0 = time.perf_counter()
                urllib.request.urlopen(dashboard, timeout=30).read()
                samples.append((time.perf_counter() - t0) * 1000)
            cards = page.count('class="card account"')
            log(f"{size:5d} accounts: dashboard (staff, page 1, {cards} cards) "
                f"{statistics.median(samples):.0f} ms")
        finally:
            web.terminate()
            web.wait(20)
    shutil.rmtree(static_root, ignore_errors=True)


#: Most seconds to wait before a run for the machine to be quiet (nothing else using its CPUs).
QUIET_WAIT = float(os.environ.get("BENCH_QUIET_WAIT", "30"))


def _wait_until_quiet() -> float:
    """Wait (at most QUIET_WAIT s) for a second in which the CPUs are at least 90% idle: the
    previous run's processes (PostgreSQL finishing its writes, workers stopping) are done, and
    nothing else is running. Returns the idle fraction of the last second measured. (The load
    average, printed too, decays over minutes and still shows the previous run.)"""
    deadline = time.monotonic() + QUIET_WAIT
    while True:
        busy0, total0 = _machine_busy()
        time.sleep(1.0)
        busy1, total1 = _machine_busy()
        idle = 1 - (busy1 - busy0) / max(total1 - total0, 1e-9)
        if idle >= 0.9 or time.monotonic() > deadline:
            return idle


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _table(results: dict[str, list[dict]], loads: list[tuple[str, str]]) -> None:
    log("  oauth_heartbeat's start-up CPU before its sweep, s: " + ", ".join(f"{r.get('start_cpu') or 0:.2f}" for r in results.get('command', [])))

    def median(runs, key, per_credential=False):
        value = statistics.median(r[key] for r in runs)
        return value / N * 1000 if per_credential else value

    floor = {key: median(results["floor"], key, key.endswith("cpu"))
             for key in ("wall", "cpu", "sweep_wall", "sweep_cpu")}
    log(f"\n== heartbeat sweep, {N} credentials, {LATENCY * 1000:.0f} ms token latency, median of "
        f"{RUNS} run(s) ({os.cpu_count()} CPUs)")
    log("   process: from the command's start to its exit (Python and Django start-up included);")
    log("   sweep: from the sweep's start (the floor: after its imports; the command: its HeartbeatRun")
    log("   row; Celery: the fan-out, workers already up) to its end. CPU: the sweep's own processes.")
    log(f"{'path':30} {'process s':>9} {'x floor':>7} {'CPU ms/cr':>9} {'x floor':>7} | "
        f"{'sweep s':>7} {'x floor':>7} {'CPU ms/cr':>9} {'x floor':>7} | {'in flight':>9} "
        f"{'RSS MB':>6} {'all ok':>6}")
    for key, title in PATHS.items():
        runs = results.get(key) or []
        if not runs:
            continue
        wall, cpu = median(runs, "wall"), median(runs, "cpu", True)
        sweep_wall, sweep_cpu = median(runs, "sweep_wall"), median(runs, "sweep_cpu", True)
        process = (f"{wall:9.2f} {wall / floor['wall']:7.2f} {cpu:9.2f} {cpu / floor['cpu']:7.2f}"
                   if key != "celery" else f"{'(workers stay up)':>35}")
        log(f"{title:30} {process} | {sweep_wall:7.2f} {sweep_wall / floor['sweep_wall']:7.2f} "
            f"{sweep_cpu:9.2f} {sweep_cpu / floor['sweep_cpu']:7.2f} | "
            f"{max(r['in_flight'] for r in runs):9d} {max(r['rss'] for r in runs):6.0f} "
            f"{str(all(r['ok'] for r in runs)):>6}")
    for key, runs in results.items():
        log(f"  {key:8} walls: " + ", ".join(f"{r['wall']:.2f}" for r in runs))
    # The rest of the machine's CPU a sweep causes: the same two cores run PostgreSQL.
    extra = [(PATHS[key], runs) for key, runs in results.items()
             if runs and all("postgres" in r for r in runs)]
    if extra:
        log("  per credential, median (process): "
            + "; ".join(f"{title.split(' (')[0]}: in the kernel "
                        f"{statistics.median(r['system'] for r in runs) / N * 1000:.2f} ms, "
                        f"PostgreSQL {statistics.median(r['postgres'] for r in runs) / N * 1000:.2f} ms"
                        for title, runs in extra))
    log("  load average (1/5/15 min) before and after each run: "
        + "; ".join(f"{a} -> {b}" for a, b in loads))


def main() -> None:
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    if "BENCH_CREDENTIALS" not in os.environ and len(SIZES) > 1:
        for size in SIZES:  # each size in a fresh process: a fresh database, fake and Django
            code = subprocess.call([sys.executable, "-m", "bench"], cwd=ROOT,  # noqa: S603
                                   env={**os.environ, "BENCH_CREDENTIALS": str(size)})
            if code:
                raise SystemExit(code)
        return
    log(f"Butlers OAuth benchmark: {N} credentials, {LATENCY * 1000:.0f} ms token latency, "
        f"{os.cpu_count()} CPU(s), load average {_loadavg()}")
    _recreate_database()
    fake = FakeGoogleProcess(N, LATENCY)
    try:
        _setup_django(fake)
        redis_flush()
        _store_credentials(fake.tokens)
        results: dict[str, list[dict]] = {key: [] for key in PATHS}
        loads = []
        sweeps = {"floor": bench_floor_sweep, "command": bench_command_sweep,
                  "celery": bench_celery_sweep}
        for run in range(RUNS):
            for key, sweep in sweeps.items():
                if not _wanted(key) and key != "floor":
                    continue
                idle = _wait_until_quiet()
                before = _loadavg()
                results[key].append(sweep(fake))
                loads.append((before, _loadavg()))
                log(f"run {run + 1} {key:8} {results[key][-1]['wall']:.2f} s "
                    f"(machine {idle:.0%} idle in the second before)")
        _table(results, loads)
        if _wanted("serial"):
            bench_serial(fake)
        if _wanted("warm"):
            bench_token_path(fake)
        if _wanted("status") and N == min(SIZES):  # grown from this size's accounts
            bench_status(fake)
        if _wanted("concurrent"):
            log("\n== concurrent access (8 processes at once, 100 ms token latency)")
            bench_concurrent_access(fake, redis_url=None)
            bench_concurrent_access(fake, redis_url="redis://127.0.0.1:6390/0")
        if _wanted("token_api"):
            from bench.token_api import token_api_bench

            log("\n== token API under gunicorn (warm tokens)")
            figures = token_api_bench()
            log("  " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    finally:
        fake.stop()
        from django.db import connections

        connections.close_all()
        if os.environ.get("BENCH_KEEP_DATABASE") != "1":
            try:
                _drop_database()
            except Exception as exc:  # noqa: BLE001
                log(f"(could not drop {DB_NAME}: {exc})")


def _drop_database() -> None:
    import psycopg

    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [DB_NAME]
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')


if __name__ == "__main__":
    main()
