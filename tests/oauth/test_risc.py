"""POST /api/oauth/google/risc (oauth/risc.py, oauth/google/risc.py) with the fake Google's RISC
issuer: what each security event does to the grant it names, and every token that is refused
(400 with a reason, nothing changed)."""
from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from oauth.google import risc as google_risc
from oauth.models import (
    AuditEvent,
    GoogleCredential,
    SecurityEvent,
    refresh_token_fingerprint,
)
from tests.factories import CLIENT_ID
from tests.fake_google.risc import subject_for

URL = "/api/oauth/google/risc"


@pytest.fixture(autouse=True)
def _fresh_keys():
    google_risc.cache_clear()
    yield
    google_risc.cache_clear()


@pytest.fixture
def grant(fake_google, credential_factory):
    """A stored grant the fake knows, with the Google subject consent would have recorded."""

    def make(email: str = "alice@example.com", **fields):
        token = fake_google.issue_grant(email)
        return credential_factory(
            email=email, refresh_token=token, google_issuer=fake_google.url,
            google_subject=subject_for(email), refresh_token_fingerprint=refresh_token_fingerprint(token),
            **fields,
        )

    return make


def post(client, token, content_type="application/secevent+jwt"):
    return client.post(URL, data=token, content_type=content_type)


def _snapshot():
    return (
        sorted(GoogleCredential.objects.values_list("email", "state", "last_error_code", "token_version")),
        AuditEvent.objects.count(),
        SecurityEvent.objects.count(),
    )


@pytest.mark.django_db
def test_tokens_revoked_expires_exactly_that_account_and_audits_the_event_id(client, fake_google, grant):
    alice, bob = grant("alice@example.com"), grant("bob@example.com")
    token = fake_google.risc.security_event(
        "tokens-revoked", audience=CLIENT_ID, email="alice@example.com", jti="evt-alice-1"
    )

    response = post(client, token)

    assert response.status_code == 202
    alice.refresh_from_db()
    bob.refresh_from_db()
    assert alice.state == "expired" and alice.access_token is None
    assert alice.last_security_event == "tokens-revoked"
    assert alice.last_error_code == "risc_tokens-revoked"
    assert bob.state == "connected" and bob.last_security_event == ""
    audit = AuditEvent.objects.get(action="security_event")
    assert audit.account == "alice@example.com"
    assert audit.detail["event_id"] == "evt-alice-1"
    status = client.get("/api/oauth/status").json()
    states = {a["state"] for a in status["accounts"]}
    assert states == {"expired", "connected"}
    expired = next(a for a in status["accounts"] if a["state"] == "expired")
    assert "tokens-revoked" in expired["remediation"]


@pytest.mark.django_db
def test_token_revoked_matches_the_refresh_token_by_its_sha512(client, fake_google, grant):
    alice, bob = grant("alice@example.com"), grant("bob@example.com")
    token = fake_google.risc.security_event(
        "token-revoked", audience=CLIENT_ID, token=bob.refresh_token.reveal()
    )

    assert post(client, token).status_code == 202

    alice.refresh_from_db()
    bob.refresh_from_db()
    assert (alice.state, bob.state) == ("connected", "expired")
    assert bob.last_security_event == "token-revoked"


@pytest.mark.django_db
def test_account_disabled_says_why_and_account_enabled_brings_it_back(client, fake_google, grant):
    alice = grant()
    disabled = fake_google.risc.security_event(
        "account-disabled", audience=CLIENT_ID, email=alice.email, reason="hijacking"
    )
    assert post(client, disabled).status_code == 202
    alice.refresh_from_db()
    assert alice.state == "expired"
    assert "hijacked" in alice.last_error_detail

    enabled = fake_google.risc.security_event("account-enabled", audience=CLIENT_ID, email=alice.email)
    assert post(client, enabled).status_code == 202
    alice.refresh_from_db()
    assert alice.state == "connected" and alice.last_error_code == ""
    assert alice.last_security_event == "account-enabled"


@pytest.mark.django_db
@pytest.mark.parametrize("event", ["sessions-revoked", "account-credential-change-required"])
def test_events_that_leave_the_grant_working_are_recorded(client, fake_google, grant, event):
    alice = grant()
    token = fake_google.risc.security_event(event, audience=CLIENT_ID, email=alice.email)
    assert post(client, token).status_code == 202
    alice.refresh_from_db()
    assert alice.state == "connected"
    assert alice.last_security_event == event
    assert AuditEvent.objects.filter(action="security_event", outcome=event).count() == 1


@pytest.mark.django_db
def test_verification_marks_the_stream_verified_in_status(client, fake_google, staff_client):
    before = staff_client.get("/api/oauth/status").json()
    assert before["risc"]["stream_verified"] is False
    token = fake_google.risc.security_event("verification", audience=CLIENT_ID, state="hello")
    assert post(client, token).status_code == 202
    after = staff_client.get("/api/oauth/status").json()
    assert after["risc"]["stream_verified"] is True
    assert after["risc"]["last_verification_at"]


@pytest.mark.django_db
def test_an_event_for_an_unknown_account_is_accepted_and_changes_nothing(client, fake_google, grant):
    grant()
    before = _snapshot()
    token = fake_google.risc.security_event("tokens-revoked", audience=CLIENT_ID, email="stranger@example.com")
    assert post(client, token).status_code == 202
    after = _snapshot()
    assert after[0] == before[0] and after[1] == before[1]
    assert SecurityEvent.objects.get().outcome == "no_matching_account"


def _other_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


REFUSALS = {
    "bad signature": lambda risc: risc.security_event(
        "tokens-revoked", audience=CLIENT_ID, email="alice@example.com", key=_other_key()
    ),
    "wrong audience": lambda risc: risc.security_event(
        "tokens-revoked", audience="someone-else.apps.googleusercontent.com", email="alice@example.com"
    ),
    "unknown kid": lambda risc: risc.security_event(
        "tokens-revoked", audience=CLIENT_ID, email="alice@example.com", key=_other_key(), kid="no-such-key"
    ),
    "too old": lambda risc: risc.security_event(
        "tokens-revoked", audience=CLIENT_ID, email="alice@example.com", iat=time.time() - 3 * 86400
    ),
    "from the future": lambda risc: risc.security_event(
        "tokens-revoked", audience=CLIENT_ID, email="alice@example.com", iat=time.time() + 3600
    ),
    "malformed body": lambda risc: "this is not a jwt",
    "empty body": lambda risc: "",
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_invalid_tokens_get_400_with_a_reason_and_change_nothing(client, fake_google, grant, case):
    grant()
    before = _snapshot()

    response = post(client, REFUSALS[case](fake_google.risc))

    assert response.status_code == 400
    body = response.json()
    assert body["err"] and body["description"]
    assert _snapshot() == before


@pytest.mark.django_db
def test_a_replayed_jti_gets_400_and_is_applied_once(client, fake_google, grant):
    grant()
    token = fake_google.risc.security_event(
        "sessions-revoked", audience=CLIENT_ID, email="alice@example.com", jti="same-jti"
    )
    assert post(client, token).status_code == 202
    before = _snapshot()

    response = post(client, token)

    assert response.status_code == 400
    assert "replayed" in response.json()["description"]
    assert _snapshot() == before


@pytest.mark.django_db
def test_a_rotated_google_key_is_fetched_again_once(client, fake_google, grant, monkeypatch):
    monkeypatch.setattr(google_risc, "REFETCH_INTERVAL", 0)  # Google rotated a while ago
    grant()
    first = fake_google.risc.security_event("sessions-revoked", audience=CLIENT_ID, email="alice@example.com")
    assert post(client, first).status_code == 202
    fake_google.risc.rotate_key()
    second = fake_google.risc.security_event("sessions-revoked", audience=CLIENT_ID, email="alice@example.com")
    assert post(client, second).status_code == 202


@pytest.mark.django_db
def test_an_unreachable_jwks_is_503_not_400(client, fake_google, grant, settings):
    grant()
    token = fake_google.risc.security_event("tokens-revoked", audience=CLIENT_ID, email="alice@example.com")
    settings.GOOGLE_RISC_CONFIG_URI = "http://127.0.0.1:9/.well-known/risc-configuration"
    response = post(client, token)
    assert response.status_code == 503
    assert GoogleCredential.objects.get().state == "connected"


@pytest.mark.django_db
def test_the_receiver_refuses_get_and_other_content_types(client, fake_google):
    assert client.get(URL).status_code == 405
    response = client.post(URL, data={"a": "b"})
    assert response.status_code == 400
    assert "application/secevent+jwt" in response.json()["description"]


@pytest.mark.django_db
def test_the_dashboard_shows_the_last_security_event_and_the_stream(client, staff_client, fake_google, grant):
    grant()
    assert "stream not verified yet" in staff_client.get("/").content.decode()
    post(client, fake_google.risc.security_event("verification", audience=CLIENT_ID, state="s"))
    post(client, fake_google.risc.security_event("tokens-revoked", audience=CLIENT_ID, email="alice@example.com"))
    page = staff_client.get("/").content.decode()
    assert "stream verified" in page
    assert "Google security event" in page and "tokens-revoked" in page


@pytest.mark.django_db
def test_made_up_key_ids_do_not_make_the_receiver_hammer_google(client, fake_google, grant):
    grant()
    post(client, fake_google.risc.security_event("sessions-revoked", audience=CLIENT_ID, email="alice@example.com"))
    fetches = sum(1 for _, path in fake_google.risc.jwks_fetches)
    for n in range(5):
        token = fake_google.risc.security_event(
            "tokens-revoked", audience=CLIENT_ID, email="alice@example.com", key=_other_key(), kid=f"made-up-{n}"
        )
        assert post(client, token).status_code == 400
    assert sum(1 for _, path in fake_google.risc.jwks_fetches) == fetches
