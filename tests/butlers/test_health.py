import pytest


@pytest.fixture
def beat_running(settings):
    """A live ``celery beat`` as readiness sees it: redbeat's lock key, extended at each tick."""
    import redis

    from butlers.health import _beat_lock_key

    client = redis.Redis.from_url(settings.CELERY_REDBEAT_REDIS_URL)
    client.set(_beat_lock_key(), "a-beat-token", ex=60)
    yield
    client.delete(_beat_lock_key())
    client.close()


def test_liveness_answers_ok_without_touching_the_database(client):
    # no database access is allowed in this test: a query would raise instead of answering
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.django_db
def test_readiness_reports_each_check_when_all_pass(client, beat_running):
    response = client.get("/api/health/ready")
    body = response.json()
    assert response.status_code == 200, body
    assert set(body["checks"]) == {"database", "cache", "broker", "beat"}
    assert all(check["ok"] for check in body["checks"].values())


@pytest.mark.django_db
def test_readiness_answers_503_naming_the_failed_check_when_redis_is_down(client, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:6390/0",  # nothing listens here
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6390/0"

    response = client.get("/api/health/ready")

    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unavailable"
    assert not body["checks"]["cache"]["ok"] and not body["checks"]["broker"]["ok"]
    assert body["checks"]["database"]["ok"]
    assert "Connection" in body["checks"]["cache"]["error"]


@pytest.mark.django_db
def test_readiness_fails_when_beat_has_not_swept_for_two_intervals(
    client, credential_factory, settings, beat_running
):
    import datetime as dt

    from django.utils import timezone

    from oauth.models import GoogleCredential, HeartbeatRun

    settings.OAUTH_HEARTBEAT_INTERVAL = 3600
    credential_factory()
    HeartbeatRun.objects.create(trigger="beat", started_at=timezone.now() - dt.timedelta(hours=3))

    body = client.get("/api/health/ready").json()
    assert not body["checks"]["beat"]["ok"] and "celery beat" in body["checks"]["beat"]["error"]

    HeartbeatRun.objects.create(trigger="beat", started_at=timezone.now() - dt.timedelta(minutes=5))
    assert client.get("/api/health/ready").status_code == 200
    assert GoogleCredential.objects.count() == 1
