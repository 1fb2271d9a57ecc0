"""Fault cases of issue 9 that do not depend on the token core's internals: Redis stopped or
restarted empty during a sweep and during web requests, two sweeps at once, and Google's token
endpoint answering 500, 503 (an HTML page), 200 with garbage, or refusing connections during a
sweep.

One app per module, run as production runs it (gunicorn, a Celery worker, beat; see
``tests/faults/harness.py``) on a PRIVATE PostgreSQL cluster and a PRIVATE redis-server, against
the project's fake Google. Every case checks what a user would notice: no credential lost or
corrupted (each stored refresh token is still one the fake Google honours), none falsely
``expired``, readiness telling the truth while the fault lasts, no 500, and recovery without a
hand.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time

import pytest
import requests

from tests.factories import CLIENT_ID, CLIENT_SECRET
from tests.fake_google import FakeGoogle
from tests.faults.harness import PYTHON, ROOT, App, PostgresCluster, RedisServer, free_port, wait_until

pytestmark = pytest.mark.slow

ACCOUNTS = 12
STAFF = ("operator", "operator-pass-123")

SEED = """
import sys
from django.contrib.auth import get_user_model
from oauth.models import GoogleCredential
from oauth.services import credential_set_scopes
get_user_model().objects.create_user(username=%r, password=%r, is_staff=True, is_superuser=True)
for line in sys.stdin:
    email, token = line.split()
    c = GoogleCredential.objects.create(
        credential_key="google" if not GoogleCredential.objects.exists() else f"google:{email}",
        email=email, credentials={"client_id": %r, "email": email}, refresh_token=token)
    credential_set_scopes(credential=c, scopes=["openid", "email", "gmail.modify", "calendar"])
""" % (STAFF[0], STAFF[1], CLIENT_ID)

# One JSON line per credential: its state and a digest of the stored (decrypted) refresh token.
INSPECT = """
import hashlib, json
from oauth.models import GoogleCredential
for c in GoogleCredential.objects.order_by("email"):
    token = c.refresh_token.reveal() if c.refresh_token else ""
    print(json.dumps({"email": c.email, "state": c.state,
                      "refresh": hashlib.sha256(token.encode()).hexdigest() if token else None}))
"""


class Deployment:
    """The running app plus its private stores and the fake Google, with the checks every case
    makes."""

    def __init__(self) -> None:
        self.cluster = PostgresCluster().init().start()
        self.redis = RedisServer().start()
        self.fake = FakeGoogle(client_id=CLIENT_ID, client_secret=CLIENT_SECRET).start()
        self.app = App(
            database_url=self.cluster.create_database(), redis_url=self.redis.url(),
            extra_env={**self.fake.env(), "GOOGLE_OAUTH_CLIENT_ID": CLIENT_ID,
                       "GOOGLE_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
                       "OAUTH_HEARTBEAT_CONCURRENCY": "8", "OAUTH_HTTP_TIMEOUT": "3",
                       # every account is due at every Celery sweep (beat's interval stays 1 h)
                       "OAUTH_HEARTBEAT_WINDOW": "1"},
        )
        self.app.migrate()
        grants = "".join(
            f"user{i}@example.com {self.fake.issue_grant(f'user{i}@example.com')}\n"
            for i in range(ACCOUNTS)
        )
        seeded = self.shell(SEED, input=grants)
        assert seeded.returncode == 0, seeded.stderr[-3000:]
        self.app.start_web()
        self.app.start_worker(concurrency=4)
        self.app.start_beat()
        self.wait(self.ready, timeout=240, what="readiness 200 (web, worker, beat up)")

    # --- driving it ---------------------------------------------------------------------------
    def shell(self, code: str, *, input: str | None = None, env: dict | None = None):
        return subprocess.run(
            [PYTHON, "manage.py", "shell", "-c", code], cwd=ROOT, env=env or self.app.env,
            input=input, capture_output=True, text=True, timeout=120,
        )

    def sweep(self, **env_overrides) -> subprocess.Popen:
        """``manage.py oauth_heartbeat --all``: the beat sweep, run now, in its own process."""
        return subprocess.Popen(
            [PYTHON, "manage.py", "oauth_heartbeat", "--all"], cwd=ROOT,
            env={**self.app.env, **env_overrides}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(f"{self.app.base_url}{path}", timeout=15, **kwargs)

    def ready(self) -> bool:
        return self.get("/api/health/ready").status_code == 200

    def wait(self, predicate, *, timeout: float, what: str):
        """:func:`wait_until`; when it times out, the error carries the app's logs (web, worker,
        beat), so a case that fails once on a loaded machine says why."""
        try:
            return wait_until(predicate, timeout=timeout, what=what)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.app.logs()}") from None

    def processes_alive(self) -> bool:
        """gunicorn, the worker and beat are all still running (none died of the fault)."""
        dead = [name for name, p in self.app.processes.items() if not p.running]
        assert not dead, f"died: {dead}\n{self.app.logs()}"
        return True

    # --- what every case checks ---------------------------------------------------------------
    def credentials(self) -> list[dict]:
        result = self.shell(INSPECT)
        assert result.returncode == 0, result.stderr[-3000:]
        return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]

    def assert_nothing_lost(self) -> list[dict]:
        """Every account still there, none falsely expired, each refresh token one the fake
        Google still honours (not lost, not corrupted, not a revoked predecessor)."""
        rows = self.credentials()
        assert len(rows) == ACCOUNTS
        live = {
            hashlib.sha256(token.encode()).hexdigest(): grant.email
            for token, grant in self.fake.grants.items() if not grant.revoked
        }
        for row in rows:
            assert row["state"] in ("connected", "refresh_failing"), row
            assert live.get(row["refresh"]) == row["email"], f"{row['email']}: refresh token lost"
        return rows

    def close(self) -> None:
        try:
            self.app.destroy()
        finally:
            self.fake.stop()
            self.redis.stop()
            self.cluster.destroy()


@pytest.fixture(scope="module")
def deployment():
    running = Deployment()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def app(deployment):
    """The deployment, with Redis and Google healthy again and every account connected."""
    yield deployment
    deployment.fake._token_failures.clear()
    deployment.fake.token_latency = 0.0
    deployment.fake.rotate_refresh_tokens = False
    if not deployment.redis.running:
        deployment.redis.start()
    recovery = deployment.sweep()
    out, err = recovery.communicate(timeout=180)
    assert recovery.returncode == 0, err[-3000:]
    assert {row["state"] for row in deployment.assert_nothing_lost()} == {"connected"}
    deployment.wait(deployment.ready, timeout=180, what="readiness back to 200")


class Watcher:
    """Web requests in a loop while a fault happens: records every status, to prove no 500."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.statuses: dict[str, set[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        paths = [
            ("/api/health", {}), ("/api/health/ready", {}), ("/api/oauth/status", {}),
            ("/api/oauth/status", {"auth": STAFF}),
            ("/api/oauth/google/start?redirect=false", {"auth": STAFF}),
        ]
        while not self._stop.is_set():
            for path, kwargs in paths:
                try:
                    status = self.deployment.get(path, **kwargs).status_code
                except requests.RequestException as exc:
                    status = type(exc).__name__
                self.statuses.setdefault(path + (" (staff)" if kwargs else ""), set()).add(status)
            time.sleep(0.05)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def assert_never_500(self) -> None:
        for path, seen in self.statuses.items():
            assert all(isinstance(s, int) and s < 500 or s == 503 for s in seen), (path, seen)


def _finish(sweep: subprocess.Popen, *, google_failing: bool = False) -> str:
    """Wait for a sweep; it must end with its summary, no traceback, and exit 0 (1 only when
    Google failed: "Some credentials need attention")."""
    out, err = sweep.communicate(timeout=240)
    assert sweep.returncode in ((0, 1) if google_failing else (0,)), (out[-2000:], err[-4000:])
    assert f"Heartbeat: {ACCOUNTS} credential(s)" in out
    assert "Traceback" not in err, err[-4000:]
    return out


# --- Google's token endpoint misbehaving during a sweep ------------------------------------------
@pytest.mark.parametrize(
    "status, error",
    [(500, "internal_failure"), (503, "html-outage"), (200, "garbage")],
    # 200 "garbage": a 200 whose JSON has no access_token at all
    ids=["500-json", "503-html-page", "200-without-access-token"],
)
def test_fault_token_endpoint_failing_during_a_sweep_loses_nothing(app, status, error):
    app.fake.fail_token(10_000, status=status, error=error)
    with Watcher(app) as watcher:
        _finish(app.sweep(), google_failing=True)
        assert app.ready()  # the stores are fine: readiness says so, Google is not its business
    watcher.assert_never_500()
    rows = app.assert_nothing_lost()
    assert {row["state"] for row in rows} <= {"connected", "refresh_failing"}


def test_fault_token_endpoint_refusing_connections_during_a_sweep_loses_nothing(app):
    closed = f"http://127.0.0.1:{free_port()}/token"  # nothing listens there
    with Watcher(app) as watcher:
        _finish(app.sweep(GOOGLE_OAUTH_TOKEN_URI=closed), google_failing=True)
    watcher.assert_never_500()
    app.assert_nothing_lost()


# --- Redis -----------------------------------------------------------------------------------------
def test_fault_redis_stopped_mid_sweep_the_sweep_finishes_and_readiness_tells(app):
    app.fake.token_latency = 0.4
    with Watcher(app) as watcher:
        sweep = app.sweep()
        app.wait(lambda: app.fake.stats["refreshes"] >= 2, timeout=60, what="sweep under way")
        app.redis.stop()
        assert sweep.poll() is None, "the sweep ended before Redis stopped"
        ready = app.get("/api/health/ready")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["cache"]["ok"] is False and checks["database"]["ok"] is True
        _finish(sweep)
        app.redis.start()  # back, and empty
    watcher.assert_never_500()
    assert {row["state"] for row in app.assert_nothing_lost()} == {"connected"}
    # beat takes its lock again, and readiness comes back by itself
    app.wait(app.ready, timeout=180, what="readiness back after Redis returned empty")
    assert app.processes_alive()


def test_fault_redis_restarted_empty_mid_sweep_the_sweep_finishes(app):
    app.fake.token_latency = 1.0
    with Watcher(app) as watcher:
        sweep = app.sweep()
        app.wait(lambda: app.fake.stats["token_requests"] >= 1, timeout=60, what="sweep under way")
        app.redis.restart_empty()  # cached tokens, locks, queues and beat's lock all gone
        assert sweep.poll() is None, "the sweep ended before Redis restarted"
        _finish(sweep)
    watcher.assert_never_500()
    assert {row["state"] for row in app.assert_nothing_lost()} == {"connected"}
    app.wait(app.ready, timeout=180, what="readiness back after Redis restarted empty")
    assert app.processes_alive()


CELERY_SWEEP = "from oauth.tasks import heartbeat_sweep; heartbeat_sweep.delay(trigger='fault-test')"


def test_fault_redis_restarted_empty_during_a_celery_sweep_the_worker_recovers(app):
    """beat -> worker path: queued heartbeats vanish with Redis; the worker reconnects by
    itself and the next sweep refreshes every account."""
    app.fake.token_latency = 1.0
    requests_before = app.fake.stats["token_requests"]
    with Watcher(app) as watcher:
        sent = app.shell(CELERY_SWEEP)
        assert sent.returncode == 0, sent.stderr[-2000:]
        app.wait(lambda: app.fake.stats["token_requests"] > requests_before, timeout=120,
                   what="the worker's heartbeats under way")
        app.redis.restart_empty()
        app.fake.token_latency = 0.0
        app.wait(app.ready, timeout=180, what="readiness back after Redis restarted empty")
    watcher.assert_never_500()
    app.assert_nothing_lost()
    counts = dict(app.fake.stats["refreshes_by_email"])
    sent = app.shell(CELERY_SWEEP)  # the next sweep, as beat sends it every interval
    assert sent.returncode == 0, sent.stderr[-2000:]
    app.wait(
        lambda: all(app.fake.refreshes_for(f"user{i}@example.com") > counts.get(f"user{i}@example.com", 0)
                    for i in range(ACCOUNTS)),
        timeout=180, what="every account refreshed by the worker after Redis came back",
    )
    assert {row["state"] for row in app.assert_nothing_lost()} == {"connected"}
    assert app.processes_alive()


def test_fault_redis_restarted_empty_during_web_requests_never_500(app):
    with Watcher(app) as watcher:
        time.sleep(0.5)
        app.redis.restart_empty()
        time.sleep(1.0)
        app.redis.stop()
        time.sleep(1.0)
        app.redis.start()
        app.wait(app.ready, timeout=180, what="readiness back after Redis restarts")
    watcher.assert_never_500()
    assert watcher.statuses["/api/oauth/status"] == {200}
    assert watcher.statuses["/api/oauth/status (staff)"] == {200}
    assert app.processes_alive()


# --- concurrency -----------------------------------------------------------------------------------
@pytest.mark.parametrize("rotate", [False, True], ids=["google-keeps-tokens", "rotating-tokens"])
def test_fault_two_sweeps_at_once_lose_nothing(app, rotate):
    app.fake.rotate_refresh_tokens = rotate
    app.fake.token_latency = 0.1
    before = app.fake.stats["refreshes"]
    first, second = app.sweep(), app.sweep()
    _finish(first)
    _finish(second)
    rows = app.assert_nothing_lost()
    assert {row["state"] for row in rows} == {"connected"}
    assert app.fake.stats["refreshes"] - before >= ACCOUNTS
