"""Operators can run the runbook's curl checks with staff credentials (HTTP Basic, /api/ only)."""
import base64

import pytest


def _basic(username, password):
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


@pytest.mark.django_db
def test_staff_basic_credentials_authenticate_api_calls(client, staff_user, credential_factory):
    credential_factory(email="alice@example.com")

    anonymous = client.get("/api/oauth/status").json()
    staff = client.get("/api/oauth/status", **_basic("operator", "operator-pass-123")).json()

    assert "email" not in anonymous["google"]
    assert staff["google"]["email"] == "alice@example.com"


@pytest.mark.django_db
def test_wrong_or_non_staff_credentials_get_401_and_are_rate_limited(client, django_user_model):
    django_user_model.objects.create_user(username="guest", password="guest-pass-123")

    assert client.get("/api/oauth/status", **_basic("guest", "guest-pass-123")).status_code == 401
    response = client.get("/api/oauth/status", **_basic("operator", "wrong"))
    assert response.status_code == 401 and response.json()["error"] == "invalid_credentials"
    assert "Basic" in response["WWW-Authenticate"]
    statuses = [client.get("/api/health", **_basic("x", "y")).status_code for _ in range(12)]
    assert statuses[-1] == 429


@pytest.mark.django_db
def test_basic_credentials_are_ignored_outside_the_api(client, staff_user):
    response = client.get("/admin/", **_basic("operator", "operator-pass-123"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
