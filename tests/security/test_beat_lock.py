"""Finding 6: celery beat survives a Redis restart that lost its lock (redbeat's
``LockNotOwnedError`` killed it), and readiness answers 503 while no beat holds the lock.

A real ``celery beat`` runs against a PRIVATE redis-server that the test restarts empty.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import redis

from tests.faults.harness import AppProcess, RedisServer, wait_until

pytestmark = pytest.mark.slow

LOCK_KEY = "butlers:redbeat::lock"
SCHEDULE_KEY = "butlers:redbeat::schedule"


@pytest.fixture
def private_redis():
    server = RedisServer().start()
    yield server
    server.stop()


def _beat(redis_url: str, subprocess_env: dict) -> AppProcess:
    env = dict(subprocess_env)
    env.update({"DJANGO_SETTINGS_MODULE": "butlers.settings", "REDIS_URL": redis_url,
                "DATABASE_URL": env["TEST_DATABASE_URL"], "DEBUG": "0",
                "SECRET_KEY": "beat-test-secret-key-0123456789abcdef0123456789abcdef",
                "SECURE_SSL_REDIRECT": "0"})
    log_dir = Path(tempfile.mkdtemp(prefix="butlers-beat-"))
    return AppProcess("beat", [str(Path(os.sys.executable).parent / "celery"), "-A", "butlers",
                               "beat", "--loglevel=INFO"], env=env, log_dir=log_dir).start()


@pytest.mark.django_db(transaction=True)
def test_finding_06_beat_takes_its_lock_again_after_redis_restarts_empty(
    private_redis, subprocess_env, settings, client
):
    settings.CELERY_REDBEAT_REDIS_URL = private_redis.url(0)
    settings.OAUTH_HEARTBEAT_INTERVAL = 3600
    store = redis.Redis.from_url(private_redis.url(0))
    beat = _beat(private_redis.url(0), subprocess_env)
    try:
        wait_until(lambda: store.exists(LOCK_KEY), timeout=180, what="beat holds its lock")
        assert client.get("/api/health/ready").json()["checks"]["beat"]["ok"], beat.output()

        private_redis.restart_empty()  # the lock and the schedule are gone
        store = redis.Redis.from_url(private_redis.url(0))
        assert not store.exists(LOCK_KEY)
        body = client.get("/api/health/ready").json()
        assert body["checks"]["beat"]["ok"] is False
        assert "lock" in body["checks"]["beat"]["error"]

        wait_until(lambda: store.exists(LOCK_KEY), timeout=180, what="beat takes its lock again")
        assert beat.running, beat.output()
        assert store.zcard(SCHEDULE_KEY) >= 1  # the schedule was written again
        assert client.get("/api/health/ready").json()["checks"]["beat"]["ok"]
        assert "LockNotOwnedError" not in beat.output()
    finally:
        beat.stop()
    assert "Traceback" not in beat.output(), beat.output()


@pytest.mark.django_db
def test_finding_06_readiness_is_503_while_no_beat_holds_the_lock(client, settings, private_redis):
    settings.CELERY_REDBEAT_REDIS_URL = private_redis.url(0)
    response = client.get("/api/health/ready")
    assert response.status_code == 503
    beat = response.json()["checks"]["beat"]
    assert beat["ok"] is False and "celery beat" in beat["error"]
    redis.Redis.from_url(private_redis.url(0)).set(LOCK_KEY, "token", ex=60)  # a live beat's lock
    assert client.get("/api/health/ready").json()["checks"]["beat"]["ok"]
