"""Token API throughput and latency under gunicorn, for warm tokens.

``token_api_bench()`` makes a database of its own (``bench_token_api``, dropped and re-created),
stores one account whose grant lives at a fake Google, creates a service key, starts gunicorn the
way production runs it (``butlers.settings``, DEBUG off, PostgreSQL and Redis) and:

1. asks once, so the token is refreshed at Google and cached (warm from then on);
2. sends ``requests_total`` ``POST /api/oauth/token`` calls from ``concurrency`` client threads,
   each on a keep-alive connection, and times every call.

It returns a dict: ``throughput_rps``, ``p50_ms``, ``p99_ms``, ``max_ms``, the settings used, how
many calls failed, and how many refreshes Google saw (1: every warm call was served without it).
The per-key rate limit is off (SERVICE_KEY_RATE_LIMIT=0); every call is still authenticated,
audited and counted, as in production. Run it alone: ``python -m bench.token_api``.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
CLIENT_ID = "1234567890-bench.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-bench-client-secret"
ACCOUNT = "bench@example.com"
#: Fixed keys for the bench's own database only.
ENCRYPTION_KEY = "6Q2kVqL0m5Gq0w0S6Cq0c1Xy2Wqzv9V2o5rL3mE7t1I="
SECRET_KEY = "bench-only-secret-key-not-for-production-0123456789abcdef"

_SETUP = """
import django, json, sys
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0, interactive=False)
from oauth.models import GoogleCredential
from oauth.services import credential_set_scopes
from oauth.service_keys import service_key_create
credential = GoogleCredential.objects.create(
    credential_key="google", email=sys.argv[1], credentials={"client_id": sys.argv[2]},
    refresh_token=sys.argv[3],
)
credential_set_scopes(credential=credential, scopes=["openid", "email", "gmail.modify", "calendar"])
_, key = service_key_create(name="bench", accounts=[sys.argv[1]], scopes=["gmail.readonly"], actor="process:bench")
print(json.dumps({"key": key}))
"""


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def _recreate_database(pg_base: str, name: str, *, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(f"{pg_base}/postgres", autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


def token_api_bench(
    *,
    requests_total: int = 2000,
    concurrency: int = 8,
    workers: int = 2,
    threads: int = 4,
    pg_base: str = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"),
    database: str = os.environ.get("BENCH_TOKEN_API_DATABASE", "bench_token_api"),
    redis_url: str = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
    log=print,
) -> dict:
    """Warm-token throughput and latency of ``POST /api/oauth/token`` under gunicorn."""
    import redis

    from tests.fake_google import FakeGoogle
    from tests.gunicorn_server import GunicornServer

    redis.Redis.from_url(redis_url).flushdb()
    _recreate_database(pg_base, database)
    fake = FakeGoogle(client_id=CLIENT_ID, client_secret=CLIENT_SECRET).start()
    var_dir = Path(os.environ.get("BUTLERS_VAR_DIR", "/tmp")) / "bench-token-api"
    var_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "butlers.settings",
        "DATABASE_URL": f"{pg_base}/{database}",
        "REDIS_URL": redis_url,
        "SECRET_KEY": SECRET_KEY,
        "OAUTH_ENCRYPTION_KEYS": ENCRYPTION_KEY,
        "DEBUG": "0",
        "SECURE_SSL_REDIRECT": "0",
        "SERVICE_KEY_RATE_LIMIT": "0",
        "BUTLERS_LOG_LEVEL": "WARNING",
        "BUTLERS_VAR_DIR": str(var_dir),
        "GOOGLE_OAUTH_CLIENT_ID": CLIENT_ID,
        "GOOGLE_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "PYTHONPATH": str(ROOT),
        **fake.env(),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = None
    try:
        setup = subprocess.run(
            [sys.executable, "-c", _SETUP, ACCOUNT, CLIENT_ID, fake.issue_grant(ACCOUNT)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
        if setup.returncode != 0:
            raise RuntimeError(f"bench setup failed: {setup.stderr[-2000:]}")
        key = json.loads(setup.stdout.strip().splitlines()[-1])["key"]
        server = GunicornServer(env=env, workers=workers, threads=threads).start()
        url = f"{server.url}/api/oauth/token"
        headers = {"Authorization": f"Bearer {key}"}
        body = {"account": ACCOUNT}
        first = requests.post(url, json=body, headers=headers, timeout=30)
        if first.status_code != 200:
            raise RuntimeError(f"the first token call answered {first.status_code}: {first.text[:500]}")

        latencies: list[float] = []
        errors = [0]
        lock = threading.Lock()
        per_thread = [requests_total // concurrency + (1 if i < requests_total % concurrency else 0)
                      for i in range(concurrency)]
        start = threading.Barrier(concurrency + 1)

        def client(n: int) -> None:
            session = requests.Session()
            mine: list[float] = []
            failed = 0
            for _ in range(2):  # warm this connection (and each worker's own connections)
                session.post(url, json=body, headers=headers, timeout=30)
            start.wait()
            for _ in range(n):
                began = time.perf_counter()
                response = session.post(url, json=body, headers=headers, timeout=30)
                mine.append(time.perf_counter() - began)
                if response.status_code != 200:
                    failed += 1
            with lock:
                latencies.extend(mine)
                errors[0] += failed

        pool = [threading.Thread(target=client, args=(n,)) for n in per_thread]
        for thread in pool:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in pool:
            thread.join()
        wall = time.perf_counter() - began
        ordered = sorted(latencies)
        result = {
            "requests": len(latencies),
            "concurrency": concurrency,
            "gunicorn_workers": workers,
            "gunicorn_threads": threads,
            "seconds": round(wall, 3),
            "throughput_rps": round(len(latencies) / wall, 1),
            "p50_ms": round(_percentile(ordered, 0.50) * 1000, 2),
            "p99_ms": round(_percentile(ordered, 0.99) * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
            "errors": errors[0],
            "google_refreshes": fake.refreshes_for(ACCOUNT),
            "cpus": os.cpu_count(),
        }
        log(
            f"token API (warm, gunicorn {workers}x{threads} gthread, {concurrency} clients): "
            f"{result['throughput_rps']} req/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms "
            f"({result['requests']} calls, {result['errors']} errors, {result['google_refreshes']} "
            "refresh at Google)"
        )
        return result
    finally:
        if server is not None:
            server.stop()
        fake.stop()
        _recreate_database(pg_base, database, drop_only=True)


if __name__ == "__main__":
    print(json.dumps(token_api_bench(), indent=2))
