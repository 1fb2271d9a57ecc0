"""oauth/tasks.py in a real Celery worker (threads pool, as scripts/run.sh starts it).

What an operator sees from a fan-out: one runbook line per refresh and no Celery "received" /
"succeeded" pair per heartbeat, while retries stay in the log; and the worker keeps its database
connection across tasks instead of opening one per heartbeat.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
from django.db import connection

from tests.factories import CLIENT_ID, CLIENT_SECRET, ROOT
from oauth.models import GoogleCredential

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker_env(subprocess_env, fake_google):
    """A worker environment like `make run`'s: butlers.settings (CONN_MAX_AGE 60), this test's stores."""
    db = connection.settings_dict
    env = dict(subprocess_env)
    env.update(fake_google.env())
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "butlers.settings",
            "DATABASE_URL": (
                f"postgresql://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
                f"{db['PORT'] or 5432}/{db['NAME']}"
            ),
            "REDIS_URL": os.environ["REDIS_URL"],
            "DEBUG": "0",
            "BUTLERS_LOG_LEVEL": "INFO",
            "GOOGLE_OAUTH_CLIENT_ID": CLIENT_ID,
            "GOOGLE_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
        }
    )
    return env


def _start_worker(env) -> tuple[subprocess.Popen, list[str]]:
    celery = str(ROOT / ".venv" / "bin" / "celery")
    worker = subprocess.Popen(
        [celery, "-A", "butlers", "worker", "--loglevel=INFO", "--pool=threads", "--concurrency=1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", "test-tasks-worker@%h"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(worker.stderr), daemon=True).start()
    return worker, lines


def _celery_task_lines(lines: list[str]) -> str:
    """Celery's own per-task lines of a worker's log ("received", "succeeded in")."""
    return "".join(line for line in lines if " received" in line or " succeeded in " in line)


def _wait_for(predicate, *, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_worker_logs_one_line_per_heartbeat_keeps_retries_and_reuses_its_connection(
    worker_env, fake_google, credential_factory
):
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        credential_factory(email=email, refresh_token=fake_google.issue_grant(email))
    # The first heartbeat meets an outage longer than its in-call retries: Celery retries it later.
    fake_google.fail_token(4)

    with connection.cursor() as cursor:  # the database's clock, as backend_start is
        cursor.execute("SELECT clock_timestamp()")
        worker_started_at = cursor.fetchone()[0]
    worker, lines = _start_worker(worker_env)
    try:
        assert _wait_for(lambda: any("ready." in line for line in lines)), "".join(lines)
        from oauth.tasks import heartbeat_sweep

        heartbeat_sweep.apply_async(kwargs={"trigger": "test"})
        assert _wait_for(
            lambda: sum("Refreshed access token" in line for line in lines) >= 2
            and any("retry" in line.lower() and "credential_heartbeat" in line for line in lines)
        ), "".join(lines)
        with connection.cursor() as cursor:
            cursor.execute(
                # the connections opened since the worker started (an earlier test's process or
                # thread that still holds one is not this worker's)
                "SELECT backend_start FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend' AND backend_start >= %s",
                [worker_started_at],
            )
            worker_connections = [row[0] for row in cursor.fetchall()]
    finally:
        worker.terminate()
        worker.wait(30)
    # (the retry waits a random 0-30 s: it may have run before the worker stopped)
    refreshed = list(
        GoogleCredential.objects.filter(last_refreshed_at__isnull=False).values_list(
            "last_refreshed_at", flat=True
        )
    )

    # the runbook's line per refresh (the reader may still be taking the last lines from the
    # pipe), and no Celery pair per heartbeat
    assert len(refreshed) >= 2
    assert _wait_for(
        lambda: "".join(lines).count("Refreshed access token") == len(refreshed), timeout=10
    ), "".join(lines)
    log = "".join(lines)
    assert "credential_heartbeat" not in _celery_task_lines(lines)
    # the sweep task itself and the retry of the failing heartbeat are still logged
    assert "oauth.tasks.heartbeat_sweep" in log and "succeeded in" in log
    assert any("credential_heartbeat" in line and "Retry in" in line for line in lines), log
    # one connection served the sweep and the heartbeats (opened before the first refresh)
    assert len(worker_connections) == 1, worker_connections
    assert worker_connections[0] < min(refreshed)


def test_a_large_sweeps_batches_log_one_line_per_heartbeat_too(worker_env, fake_google, credential_factory):
    """A sweep larger than OAUTH_HEARTBEAT_TASKS_PER_SWEEP goes out in heartbeat_batch tasks: they
    too leave Celery's per-task "received"/"succeeded" pair out of the log."""
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        credential_factory(email=email, refresh_token=fake_google.issue_grant(email))
    worker, lines = _start_worker({**worker_env, "OAUTH_HEARTBEAT_TASKS_PER_SWEEP": "1"})
    try:
        assert _wait_for(lambda: any("ready." in line for line in lines)), "".join(lines)
        from oauth.tasks import heartbeat_sweep

        heartbeat_sweep.apply_async(kwargs={"trigger": "test"})
        assert _wait_for(lambda: sum("Refreshed access token" in line for line in lines) >= 3
                         and sum("succeeded in" in line for line in lines) >= 1), "".join(lines)
        time.sleep(0.5)  # the batch task's own lines, were they written, would follow at once
    finally:
        worker.terminate()
        worker.wait(30)
    log = "".join(lines)

    assert "per_task=3" in log, log  # one heartbeat_batch task of the three credentials
    assert log.count("Refreshed access token") == 3
    assert "heartbeat_batch" not in _celery_task_lines(lines), log
    assert "oauth.tasks.heartbeat_sweep" in log  # the sweep task itself is still logged
