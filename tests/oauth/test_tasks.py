"""oauth/tasks.py: the beat sweep fans out the due credentials; redbeat fires it once."""
from __future__ import annotations

import base64
import json
import subprocess
import time

import pytest
from django.utils import timezone

from butlers.celery import app
from oauth.exceptions import TransientGoogleError
from oauth.models import HeartbeatRun
from oauth.tasks import (
    HEARTBEAT_MAX_RETRIES,
    credential_heartbeat,
    heartbeat_batch_size,
    heartbeat_sweep,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager(monkeypatch, settings):
    settings.OAUTH_REFRESH_BACKOFF = 0.01
    settings.OAUTH_REFRESH_RETRIES = 0
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.fixture
def grant(fake_google, credential_factory):
    def make(email, **kwargs):
        return credential_factory(email=email, refresh_token=fake_google.issue_grant(email), **kwargs)

    return make


def test_the_sweep_records_a_run_and_heartbeats_each_due_credential(eager, fake_google, grant):
    grant("alice@example.com")
    grant("bob@example.com")
    grant("fresh@example.com", last_refreshed_at=timezone.now())

    run_id = heartbeat_sweep.apply(kwargs={"trigger": "beat"}).get()

    run = HeartbeatRun.objects.get(pk=run_id)
    assert run.selected == 2
    assert run.outcomes == {"connected": 2}
    assert run.finished_at is not None
    assert fake_google.refreshes_for("alice@example.com") == 1
    assert fake_google.refreshes_for("fresh@example.com") == 0


def test_a_sweep_with_nothing_due_is_finished_at_once(eager, fake_google):
    run = HeartbeatRun.objects.get(pk=heartbeat_sweep.apply().get())
    assert run.selected == 0 and run.finished_at is not None


def test_a_redelivered_heartbeat_does_not_refresh_twice(eager, fake_google, grant):
    credential = grant("alice@example.com")
    since = timezone.now().isoformat()

    first = credential_heartbeat.apply(kwargs={"credential_id": credential.pk, "not_before": since}).get()
    again = credential_heartbeat.apply(kwargs={"credential_id": credential.pk, "not_before": since}).get()

    assert first == again == "connected"
    assert fake_google.refreshes_for("alice@example.com") == 1


def test_a_transient_failure_is_retried_and_counted_when_retries_run_out(eager, fake_google, grant):
    credential = grant("alice@example.com")
    run = HeartbeatRun.objects.create(trigger="beat", started_at=timezone.now(), selected=1)
    fake_google.fail_token(10, status=503)

    result = credential_heartbeat.apply(
        kwargs={"credential_id": credential.pk, "run_id": run.pk}, retries=HEARTBEAT_MAX_RETRIES,
        throw=False,
    )

    assert isinstance(result.result, TransientGoogleError)
    run.refresh_from_db()
    assert run.outcomes == {"retrying": 1}
    credential.refresh_from_db()
    assert credential.state == "connected"  # never expired by an outage


def test_a_large_sweep_goes_out_in_batches_and_counts_every_credential(
    eager, fake_google, grant, settings
):
    settings.OAUTH_HEARTBEAT_TASKS_PER_SWEEP = 2  # 5 due credentials -> batches of 3 and 2
    for n in range(5):
        grant(f"user{n}@example.com")
    fake_google.fail_token(1, status=503)  # the first credential of the first batch

    run = HeartbeatRun.objects.get(pk=heartbeat_sweep.apply(kwargs={"trigger": "beat"}).get())

    # the transient failure became its own credential_heartbeat task (run at once when eager)
    assert run.selected == 5 and run.outcomes == {"connected": 5}
    assert run.finished_at is not None
    assert all(fake_google.refreshes_for(f"user{n}@example.com") == 1 for n in range(5))


def test_batch_size_is_one_for_small_sweeps_and_capped_for_large_ones(settings):
    settings.OAUTH_HEARTBEAT_TASKS_PER_SWEEP = 200
    settings.OAUTH_HEARTBEAT_MAX_BATCH = 25
    assert [heartbeat_batch_size(selected=n) for n in (1, 200, 201, 2000, 100_000)] == [1, 1, 2, 10, 25]


def _queued_tasks(redis_url: str) -> list[tuple[str, dict]]:
    import redis

    client = redis.Redis.from_url(redis_url)
    found = []
    for raw in client.lrange("celery", 0, -1):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        found.append((message["headers"]["task"], body[1]))
    return found


@pytest.mark.django_db(transaction=True)
def test_two_beat_processes_send_one_sweep_per_interval(subprocess_env, python_exe):
    import os

    from tests.factories import ROOT

    redis_url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    env = dict(subprocess_env, OAUTH_HEARTBEAT_INTERVAL="2", GMAIL_POLL_INTERVAL="3600")
    celery = str(ROOT / ".venv" / "bin" / "celery")
    if not os.path.exists(celery):
        celery = os.path.join(os.path.dirname(python_exe), "celery")
    beats = [
        subprocess.Popen(
            [celery, "-A", "butlers", "beat", "--loglevel=INFO", "--pidfile=", "--max-interval=1"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    duration = 11.0
    try:
        time.sleep(duration)
    finally:
        for beat in beats:
            beat.terminate()
        logs = [beat.communicate(timeout=30)[1] for beat in beats]

    sweeps = [kwargs for task, kwargs in _queued_tasks(redis_url) if task == "oauth.tasks.heartbeat_sweep"]
    scheduled = [kwargs for kwargs in sweeps if kwargs.get("trigger") != "startup"]
    startup = [kwargs for kwargs in sweeps if kwargs.get("trigger") == "startup"]
    # One beat holds redbeat's lock: ~duration/interval sweeps, not twice that.
    assert 2 <= len(scheduled) <= duration / 2 + 1, logs
    # and a fresh deployment did not wait a whole interval: exactly one start-up sweep
    assert len(startup) == 1, logs
