"""Finding 7 (``/metrics`` protected; Google's raw error codes never become label values) and,
from 15, the scrape-error gauge when the stored-state gauges cannot be read."""
from __future__ import annotations

import pytest
import responses
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from oauth import metrics
from oauth.tokens import access_token_get

pytestmark = pytest.mark.django_db

TOKEN = "metrics-bearer-PLAINTEXT-0123456789"


def _samples(text: str, name: str) -> list:
    return [
        s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name
    ]


def test_finding_07_metrics_refuse_an_outside_address_without_a_token(settings):
    response = Client(REMOTE_ADDR="192.0.2.9").get("/metrics")
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "forbidden" and "METRICS_TOKEN" in body["description"]
    assert b"butlers_oauth" not in response.content
    # loopback (the default allow-list) still reads them
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200


def test_finding_07_metrics_answer_the_bearer_token_from_anywhere(settings):
    settings.METRICS_TOKEN = TOKEN
    outside = Client(REMOTE_ADDR="192.0.2.9")
    response = outside.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200 and b"butlers_oauth" in response.content
    wrong = outside.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert wrong.status_code == 401 and wrong["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN.encode() not in wrong.content
    assert outside.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401


def test_finding_07_metrics_allowed_ips_replace_loopback(settings):
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8", "192.0.2.77"]
    assert Client(REMOTE_ADDR="10.20.30.40").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="192.0.2.77").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="192.0.2.78").get("/metrics").status_code == 403
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 403


def test_finding_07_a_bad_allow_list_entry_fails_the_system_check(settings):
    from oauth.checks import check_metrics_access

    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8", "not-an-address"]
    errors = check_metrics_access()
    assert [e.id for e in errors] == ["oauth.E003"] and "not-an-address" in errors[0].msg
    # and the view refuses rather than failing open or answering 500
    assert Client(REMOTE_ADDR="10.1.1.1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="192.0.2.1").get("/metrics").status_code == 403


def test_finding_07_metrics_are_not_exempt_from_the_https_redirect(settings):
    settings.SECURE_SSL_REDIRECT = True
    response = Client(REMOTE_ADDR="127.0.0.1").get("/metrics")
    assert response.status_code == 301 and response["Location"].startswith("https://")
    # the probes stay reachable over plain http (container healthchecks)
    assert Client().get("/api/health").status_code == 200


def test_finding_07_unknown_google_error_codes_are_labelled_other(client, credential_factory, settings):
    settings.OAUTH_REFRESH_RETRIES = 0
    credential_factory(email="alice@example.com", expires_in=None)
    long_code = "weird_" + "x" * 120
    with responses.RequestsMock() as google:
        google.post("https://oauth2.googleapis.com/token", status=400,
                    json={"error": long_code, "error_description": "something new"})
        with pytest.raises(Exception):
            access_token_get(account="alice@example.com")
    text = client.get("/metrics").content.decode()
    reasons = {s.labels["reason"] for s in _samples(text, "butlers_oauth_refreshes_total")}
    assert "other" in reasons
    assert not any("xxxx" in reason or len(reason) > 32 for reason in reasons)
    assert metrics.reason_label("invalid_grant") == "invalid_grant"
    assert metrics.reason_label(long_code) == "other"


# --- finding 15: the scrape-error gauge ---------------------------------------------------------
def test_finding_15_stored_state_gauges_that_cannot_be_read_raise_the_scrape_error_gauge(
    credential_factory, monkeypatch
):
    credential_factory(email="alice@example.com")
    healthy = metrics.metrics_text().decode()
    assert [s.value for s in _samples(healthy, "butlers_oauth_stored_state_scrape_error")] == [0]
    assert _samples(healthy, "butlers_oauth_credentials")

    def database_down(self, sql, params=None):
        raise OperationalError("connection to server failed: Connection refused")

    monkeypatch.setattr(CursorWrapper, "execute", database_down)
    broken = metrics.metrics_text().decode()
    assert [s.value for s in _samples(broken, "butlers_oauth_stored_state_scrape_error")] == [1]
    assert not _samples(broken, "butlers_oauth_credentials")  # no made-up zeros
    assert _samples(broken, "butlers_oauth_refreshes_total") is not None
