"""Consent-flow findings of issue 9: 9 (anonymous callers changing status), 12 (long emails),
14 (concurrent first consents of different accounts), and from 15 the callback's error reporting
and ``email_verified``. Google is stubbed at the HTTP boundary with ``responses``."""
from __future__ import annotations

import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from django.db import connection, connections
from django.test import Client

from tests.factories import REFRESH_TOKEN
from oauth import consent
from oauth.exceptions import InvalidState, TokenExchangeFailed
from oauth.models import AuditAction, AuditEvent, GoogleCredential

TOKEN_URI = "https://oauth2.googleapis.com/token"
USERINFO_URI = "https://openidconnect.googleapis.com/v1/userinfo"
CALLBACK_URL = "http://testserver/api/oauth/google/callback"
CALLBACK = "/api/oauth/google/callback"
ALL_SCOPES = (
    "openid https://www.googleapis.com/auth/userinfo.email "
    "https://www.googleapis.com/auth/gmail.readonly https://www.googleapis.com/auth/gmail.modify "
    "https://www.googleapis.com/auth/calendar"
)
JSON = {"HTTP_ACCEPT": "application/json"}


def _google_for_codes(mock, *, verified=True):
    """Token endpoint: code '4/<email>' gives access token 'at-<email>'; userinfo names the email."""

    def token(request):
        code = parse_qs(request.body)["code"][0]
        email = code.split("/", 1)[1]
        return 200, {}, (
            '{"access_token": "at-%s", "refresh_token": "%s-%s", "expires_in": 3599, "scope": "%s"}'
            % (email, REFRESH_TOKEN, email, ALL_SCOPES)
        )

    def userinfo(request):
        email = request.headers["Authorization"].split("at-", 1)[1]
        return 200, {}, '{"sub": "1", "email": "%s", "email_verified": %s}' % (
            email, "true" if verified is True else ('"false"' if verified == "string" else "false")
        )

    mock.add_callback(responses.POST, TOKEN_URI, callback=token)
    mock.add_callback(responses.GET, USERINFO_URI, callback=userinfo)


def _start(user, binding):
    url = consent.consent_start(user=user, session_binding=binding, default_redirect_uri=CALLBACK_URL)
    return parse_qs(urlsplit(url).query)["state"][0]


def _complete(user, state, *, binding, email):
    return consent.consent_complete(
        user=user, session_binding=binding, state=state, code=f"4/{email}"
    )


# --- finding 9 ----------------------------------------------------------------------------------
def test_finding_09_anonymous_callback_errors_do_not_change_the_public_status(
    client, oauth_client_factory
):
    oauth_client_factory(redirect_uri=CALLBACK_URL)
    before = client.get("/api/oauth/status").json()["google"]["state"]
    assert before == "not_configured"
    for _ in range(3):
        response = client.get(CALLBACK, {"error": "redirect_uri_mismatch"}, **JSON)
        assert response.status_code == 400
    assert client.get("/api/oauth/status").json()["google"]["state"] == "not_configured"
    assert not AuditEvent.objects.exists()


def test_finding_09_anonymous_callbacks_cannot_clear_a_real_redirect_uri_mismatch(
    staff_client, oauth_client_factory
):
    oauth_client_factory(redirect_uri=CALLBACK_URL)
    start = staff_client.get("/api/oauth/google/start", {"redirect": "false"}).json()
    state = parse_qs(urlsplit(start["authorization_url"]).query)["state"][0]
    # A real failure: Google sent the staff session back with the mismatch and its valid state.
    response = staff_client.get(CALLBACK, {"state": state, "error": "redirect_uri_mismatch"}, **JSON)
    assert response.status_code == 400 and response.json()["error"] == "redirect_uri_mismatch"
    assert Client().get("/api/oauth/status").json()["google"]["state"] == "redirect_uri_mismatch"
    rows = AuditEvent.objects.count()
    anonymous = Client()
    anonymous.get(CALLBACK, {"error": "access_denied"}, **JSON)
    anonymous.get(CALLBACK, {"state": "forged", "code": "4/x"}, **JSON)
    assert Client().get("/api/oauth/status").json()["google"]["state"] == "redirect_uri_mismatch"
    assert AuditEvent.objects.count() == rows


# --- finding 12 ---------------------------------------------------------------------------------
def test_finding_12_a_254_character_email_is_stored_as_a_secondary_account(
    staff_user, oauth_client_factory, credential_factory
):
    oauth_client_factory(redirect_uri=CALLBACK_URL)
    credential_factory(email="primary@example.com")
    email = ("a" * 64) + "@" + ".".join(["b" * 60, "c" * 60, "d" * 60]) + ".example"
    email = email[: 254 - len(".io")] + ".io"
    assert len(email) == 254
    with responses.RequestsMock() as mock:
        _google_for_codes(mock)
        result = _complete(staff_user, _start(staff_user, "b1"), binding="b1", email=email)
    stored = GoogleCredential.objects.get(email=email)
    assert result.created and stored.credential_key == f"google:{email}"
    assert stored.refresh_token.reveal() == f"{REFRESH_TOKEN}-{email}"
    event = AuditEvent.objects.get(action=AuditAction.CONNECTED, credential=stored)
    assert event.credential_key == f"google:{email}" and event.account == email


# --- finding 14 ---------------------------------------------------------------------------------
def _waiting_inserts() -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted "
            "AND relation = 'google_oauth_credentials'::regclass"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_finding_14_concurrent_first_consents_of_different_accounts_all_get_stored(
    staff_user, oauth_client_factory, django_user_model
):
    """Eight different accounts consent at the same moment on an empty database.

    A SHARE lock held by the test lets every consent read 'no primary yet' and then parks each
    one at its INSERT; releasing it makes all of them insert at once, the race the review saw.
    """
    oauth_client_factory(redirect_uri=CALLBACK_URL)
    emails = [f"person{i}@example.com" for i in range(8)]
    states = {email: _start(staff_user, f"binding-{email}") for email in emails}
    results: dict[str, object] = {}

    def consent_in_thread(email: str) -> None:
        try:
            results[email] = _complete(
                staff_user, states[email], binding=f"binding-{email}", email=email
            )
        except Exception as exc:  # reported below, with the account
            results[email] = exc
        finally:
            connections.close_all()

    with responses.RequestsMock() as mock:
        _google_for_codes(mock)
        with connection.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("LOCK TABLE google_oauth_credentials IN SHARE MODE")
            threads = [threading.Thread(target=consent_in_thread, args=(e,)) for e in emails]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while _waiting_inserts() < len(emails) and time.monotonic() < deadline:
                time.sleep(0.05)
            parked = _waiting_inserts()
            cursor.execute("COMMIT")
        for thread in threads:
            thread.join(60)
    assert parked == len(emails)  # the race really happened
    failures = {e: r for e, r in results.items() if isinstance(r, Exception)}
    assert not failures, failures
    keys = dict(GoogleCredential.objects.values_list("email", "credential_key"))
    assert set(keys) == set(emails)
    assert sorted(keys.values()).count("google") == 1
    assert all(key in ("google", f"google:{email}") for email, key in keys.items())
    for email in emails:
        stored = GoogleCredential.objects.get(email=email)
        assert stored.refresh_token.reveal() == f"{REFRESH_TOKEN}-{email}"
    assert AuditEvent.objects.filter(action=AuditAction.CONNECTED).count() == len(emails)
    assert not AuditEvent.objects.filter(action=AuditAction.CONSENT_FAILED).exists()


# --- finding 15: callback errors reported as what they are ----------------------------------------
@pytest.mark.parametrize(
    "google_error, says",
    [
        ("invalid_scope", "GOOGLE_OAUTH_SCOPES"),
        ("invalid_request", "invalid_request"),
        ("unauthorized_client", "client id"),
        ("invalid_client", "client id"),
        ("admin_policy_enforced", "Workspace"),
        ("org_internal", "Internal"),
        ("server_error", "again"),
        ("temporarily_unavailable", "again"),
        ("something_new_from_google", "not recognise"),
    ],
)
def test_finding_15_callback_errors_other_than_access_denied_are_reported_as_what_they_are(
    staff_client, oauth_client_factory, google_error, says
):
    oauth_client_factory(redirect_uri=CALLBACK_URL)
    start = staff_client.get("/api/oauth/google/start", {"redirect": "false"}).json()
    state = parse_qs(urlsplit(start["authorization_url"]).query)["state"][0]
    response = staff_client.get(CALLBACK, {"state": state, "error": google_error}, **JSON)
    body = response.json()
    assert response.status_code == 400
    assert body["error"] == "authorization_failed"
    assert says in body["description"]
    assert "allow every permission" not in body["description"]
    event = AuditEvent.objects.get(action=AuditAction.CONSENT_FAILED)
    assert event.outcome == "authorization_failed"


def test_finding_15_access_denied_still_says_allow_every_permission(staff_client, oauth_client_factory):
    oauth_client_factory(redirect_uri=CALLBACK_URL)
    start = staff_client.get("/api/oauth/google/start", {"redirect": "false"}).json()
    state = parse_qs(urlsplit(start["authorization_url"]).query)["state"][0]
    body = staff_client.get(CALLBACK, {"state": state, "error": "access_denied"}, **JSON).json()
    assert body["error"] == "access_denied" and "allow every permission" in body["description"]


def test_finding_15_an_unknown_callback_error_is_not_echoed(staff_client, oauth_client_factory):
    oauth_client_factory(redirect_uri=CALLBACK_URL)
    start = staff_client.get("/api/oauth/google/start", {"redirect": "false"}).json()
    state = parse_qs(urlsplit(start["authorization_url"]).query)["state"][0]
    hostile = "<script>alert(1)</script>" + "x" * 200
    page = staff_client.get(CALLBACK, {"state": state, "error": hostile}).content.decode()
    assert "<script>alert(1)" not in page and "x" * 100 not in page


# --- finding 15: userinfo must say the email is verified ------------------------------------------
@pytest.mark.parametrize("verified", [False, "string", None])
def test_finding_15_userinfo_without_a_verified_email_stores_nothing(
    staff_user, oauth_client_factory, verified
):
    oauth_client_factory(redirect_uri=CALLBACK_URL)
    with responses.RequestsMock() as mock:
        if verified is None:
            mock.add(responses.POST, TOKEN_URI, json={
                "access_token": "at-x", "refresh_token": REFRESH_TOKEN, "expires_in": 3599,
                "scope": ALL_SCOPES})
            mock.add(responses.GET, USERINFO_URI, json={"sub": "1", "email": "eve@example.com"})
        else:
            _google_for_codes(mock, verified=verified)
        state = _start(staff_user, "b1")
        with pytest.raises(TokenExchangeFailed, match="verified"):
            _complete(staff_user, state, binding="b1", email="eve@example.com")
    assert not GoogleCredential.objects.exists()
    assert AuditEvent.objects.get().outcome == "token_exchange_failed"
    with pytest.raises(InvalidState):  # the state was used up all the same
        _complete(staff_user, state, binding="b1", email="eve@example.com")
