"""Finding 11: a heartbeat sweep survives a PostgreSQL restart in the middle of it.

A private PostgreSQL cluster (never the shared one) is restarted while ``manage.py
oauth_heartbeat --all`` is sweeping 30 credentials against a fake Google that answers slowly. The
command reconnects, finishes, prints its summary and exits 0; no credential is lost, corrupted or
falsely expired, and the run is recorded as finished.
"""
from __future__ import annotations

import contextlib
import subprocess
import time

import pytest

from tests.factories import CLIENT_ID, CLIENT_SECRET
from tests.fake_google import FakeGoogle
from tests.faults.harness import PYTHON, ROOT, App, PostgresCluster, RedisServer

pytestmark = pytest.mark.slow

SEED = """
import sys
from oauth.models import GoogleCredential
from oauth.services import credential_set_scopes
for line in sys.stdin:
    email, token = line.split()
    c = GoogleCredential.objects.create(
        credential_key="google" if not GoogleCredential.objects.exists() else f"google:{email}",
        email=email, credentials={"client_id": %r, "email": email}, refresh_token=token)
    credential_set_scopes(credential=c, scopes=["openid", "email", "gmail.modify", "calendar"])
""" % CLIENT_ID

CHECK = """
from oauth.models import GoogleCredential, HeartbeatRun
rows = list(GoogleCredential.objects.all())
run = HeartbeatRun.objects.get()
print(len(rows), sorted({r.state for r in rows}), sum(1 for r in rows if r.refresh_token), run.finished_at is not None)
"""


@contextlib.contextmanager
def _private_stores(*, max_connections: int = 200):
    """A private PostgreSQL cluster and Redis, and a fake Google; all stopped afterwards."""
    cluster = PostgresCluster().init(max_connections=max_connections).start()
    redis = RedisServer().start()
    fake = FakeGoogle(client_id=CLIENT_ID, client_secret=CLIENT_SECRET).start()
    try:
        yield cluster, redis, fake
    finally:
        fake.stop()
        redis.stop()
        cluster.destroy()


@pytest.fixture
def stores():
    with _private_stores() as found:
        yield found


@pytest.fixture
def small_database():
    """A cluster that takes 20 connections (17 but for the superusers' reserve)."""
    with _private_stores(max_connections=20) as found:
        yield found


def _seeded_app(cluster: PostgresCluster, redis: RedisServer, fake: FakeGoogle, *, concurrency: int,
                accounts: int = 30) -> App:
    """The app on the private cluster, migrated, with ``accounts`` credentials live at ``fake``."""
    app = App(
        database_url=cluster.create_database(), redis_url=redis.url(),
        extra_env={
            **fake.env(), "GOOGLE_OAUTH_CLIENT_ID": CLIENT_ID,
            "GOOGLE_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
            "OAUTH_HEARTBEAT_CONCURRENCY": str(concurrency), "OAUTH_REFRESH_BACKOFF": "0.05",
        },
    )
    app.migrate()
    grants = "".join(
        f"user{i}@example.com {fake.issue_grant(f'user{i}@example.com')}\n" for i in range(accounts)
    )
    seeded = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", SEED], cwd=ROOT, env=app.env, input=grants,
        capture_output=True, text=True, timeout=120,
    )
    assert seeded.returncode == 0, seeded.stderr
    return app


def _checked(app: App) -> str:
    """The CHECK line: rows, their states, rows with a refresh token, run finished."""
    check = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", CHECK], cwd=ROOT, env=app.env,
        capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 0, check.stderr[-2000:]
    return check.stdout.strip().splitlines()[-1]


def test_finding_11_the_in_process_sweep_finishes_across_a_database_restart(stores):
    cluster, redis, fake = stores
    fake.token_latency = 0.3
    app = _seeded_app(cluster, redis, fake, concurrency=4)

    sweep = subprocess.Popen(
        [PYTHON, "manage.py", "oauth_heartbeat", "--all"], cwd=ROOT, env=app.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while fake.stats["refreshes"] < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sweep.poll() is None, "the sweep ended before the restart"
    cluster.restart(mode="fast")  # every connection of the sweep is cut
    out, err = sweep.communicate(timeout=180)

    assert sweep.returncode == 0, err[-3000:]
    assert "Heartbeat: 30 credential(s)" in out
    assert "Traceback" not in err
    # 30 rows, all connected, each with its refresh token, the run recorded as finished
    assert _checked(app) == "30 ['connected'] 30 True"


def test_a_sweep_wider_than_the_databases_connection_limit_runs_within_it(small_database):
    """OAUTH_HEARTBEAT_CONCURRENCY=64 against a PostgreSQL that takes 20 connections: each thread
    holds one while its refresh is in flight, so the sweep runs as many as the database has room
    for (saying so, with the settings that fix it) instead of failing credentials with 'too many
    clients'."""
    cluster, redis, fake = small_database
    fake.token_latency = 0.2
    app = _seeded_app(cluster, redis, fake, concurrency=64)

    sweep = subprocess.run(
        [PYTHON, "manage.py", "oauth_heartbeat", "--all"], cwd=ROOT, env=app.env,
        capture_output=True, text=True, timeout=180,
    )

    log = sweep.stdout + sweep.stderr
    assert sweep.returncode == 0, log[-3000:]
    assert "Heartbeat: 30 credential(s)" in sweep.stdout
    assert "OAUTH_HEARTBEAT_CONCURRENCY is more than PostgreSQL has connections for" in log
    assert "max_connections" in log and "too many clients" not in log
    assert "reconnecting" not in log  # no thread was refused a connection
    assert fake.stats["max_in_flight_refreshes"] > 1  # still concurrent, within the room
    assert _checked(app) == "30 ['connected'] 30 True"
