"""Finding 2: with Redis or PostgreSQL down, every endpoint answers on purpose, never 500.

Redis is a PRIVATE ``redis-server`` on a free port (tests/faults/harness.py) that the test stops;
PostgreSQL "down" is this process's connection pointed at a port nobody listens on. The shared
servers are never touched.
"""
from __future__ import annotations

import base64
import logging

import pytest
import requests
from django.db import connection
from django.test import Client

from tests.faults.harness import RedisServer, free_port

HTML = {"HTTP_ACCEPT": "text/html,application/xhtml+xml"}


def _basic(username, password):
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


@pytest.fixture
def redis_down(settings):
    """The app's cache on a private Redis that has just been stopped."""
    server = RedisServer().start()
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": server.url(0),
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
            "KEY_PREFIX": "butlers",
        }
    }
    from django.core.cache import cache

    cache.set("warm", "1")  # it did work
    server.stop()
    yield server
    server.stop()


def test_finding_02_redis_down_start_still_redirects_to_google_and_logs_a_warning(
    staff_client, fake_google, redis_down, caplog
):
    with caplog.at_level(logging.WARNING):
        response = staff_client.get("/api/oauth/google/start", **HTML)
    assert response.status_code == 302 and response["Location"].startswith(fake_google.url)
    assert any("rate limit" in r.getMessage() and "cache" in r.getMessage() for r in caplog.records)
    as_json = staff_client.get("/api/oauth/google/start", {"redirect": "false"})
    assert as_json.status_code == 200 and "authorization_url" in as_json.json()


def test_finding_02_redis_down_callback_stores_the_grant(staff_client, fake_google, redis_down):
    from oauth.models import GoogleCredential

    start = staff_client.get("/api/oauth/google/start", **HTML)
    google = requests.get(start["Location"], allow_redirects=False, timeout=10)
    callback = google.headers["Location"].split("testserver", 1)[-1]
    response = staff_client.get(callback, **HTML)
    assert response.status_code == 302 and response["Location"] == "/"
    assert GoogleCredential.objects.get().email == "alice@example.com"


def test_finding_02_redis_down_basic_auth_api_calls_still_answer(client, staff_user, redis_down):
    ok = client.get("/api/oauth/status", **_basic("operator", "operator-pass-123"))
    assert ok.status_code == 200 and "google" in ok.json()
    wrong = client.get("/api/oauth/status", **_basic("operator", "wrong"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_credentials"


def test_finding_02_redis_down_readiness_is_503_naming_the_cache(client, db, redis_down):
    response = client.get("/api/health/ready")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["cache"]["ok"] is False and checks["database"]["ok"] is True


@pytest.mark.django_db(transaction=True)
def test_finding_02_postgresql_down_status_answers_503_json(staff_user):
    browser = Client()
    browser.force_login(staff_user)
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())  # nobody listens there: "PostgreSQL is down"
    try:
        for caller in (Client(), browser):
            response = caller.get("/api/oauth/status")
            assert response.status_code == 503
            body = response.json()
            assert body["error"] == "database_unavailable"
            assert "/api/health/ready" in body["description"]
        ready = Client().get("/api/health/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False
    finally:
        connection.close()
        connection.settings_dict.update(saved)


# --- finding 15: a 429 from this app says when to come back ---------------------------------------
@pytest.mark.parametrize("rate, seconds", [("2/m", "60"), ("2/10s", "10"), ("2/h", "3600")])
def test_finding_15_a_consent_429_carries_retry_after(staff_client, fake_google, settings, rate, seconds):
    settings.OAUTH_RATE_LIMIT = rate
    answers = [staff_client.get("/api/oauth/google/start", {"redirect": "false"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[-1]["Retry-After"] == seconds
    assert answers[-1].json()["error"] == "rate_limited"
    page = staff_client.get("/api/oauth/google/start", **HTML)
    assert page.status_code == 429 and page["Retry-After"] == seconds
