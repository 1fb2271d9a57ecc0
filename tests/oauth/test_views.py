"""oauth/views.py: status API, consent start/callback (test client + the fake Google), dashboard."""
from __future__ import annotations

import io
import logging
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
import responses
from django.db import DatabaseError
from django.test import Client
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from tests.factories import ACCESS_TOKEN, CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN
from oauth import consent
from oauth.models import AuditAction, AuditEvent, GoogleCredential, OAuthState
from tests.fake_google import ConsentPlan

START = "/api/oauth/google/start"
CALLBACK = "/api/oauth/google/callback"
HTML = {"HTTP_ACCEPT": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
JSON = {"HTTP_ACCEPT": "application/json"}


def _go_to_google(client, **start_query) -> str:
    """Start as the browser would and let the fake Google answer; returns the callback URL."""
    start = client.get(START, start_query, **HTML)
    assert start.status_code == 302, start.content
    google = requests.get(start["Location"], allow_redirects=False, timeout=10)
    assert google.status_code == 302, google.text
    return google.headers["Location"]


def _callback(client, url: str, **headers):
    parts = urlsplit(url)
    assert parts.path == CALLBACK
    return client.get(f"{parts.path}?{parts.query}", **(headers or HTML))


# --- status API -------------------------------------------------------------------------------
def test_status_is_public_but_details_need_staff(staff_client, credential_factory, settings):
    settings.GOOGLE_OAUTH_CLIENT_ID = CLIENT_ID
    credential_factory(email="alice@example.com")
    public = Client().get("/api/oauth/status")
    assert public.status_code == 200 and public.json()["google"]["state"] == "connected"
    assert b"alice@example.com" not in public.content
    assert staff_client.get("/api/oauth/status").json()["google"]["email"] == "alice@example.com"


# --- start ------------------------------------------------------------------------------------
def test_anonymous_start_gets_no_authorization_url(client, fake_google):
    as_json = client.get(START, {"redirect": "false"})
    assert as_json.status_code == 401
    assert as_json.json()["error"] == "authentication_required"
    assert "authorization_url" not in as_json.json()
    browser = client.get(START)
    assert browser.status_code == 302
    assert browser["Location"].startswith("/admin/login/?next=")
    assert fake_google.url not in browser["Location"]


def test_non_staff_start_is_forbidden(client, django_user_model, fake_google):
    client.force_login(django_user_model.objects.create_user("guest", password="x" * 12))
    response = client.get(START, {"redirect": "false"})
    assert response.status_code == 403 and "authorization_url" not in response.json()


def test_staff_start_redirects_to_google_with_every_parameter(staff_client, fake_google, settings):
    response = staff_client.get(START)
    assert response.status_code == 302
    url = urlsplit(response["Location"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == settings.GOOGLE_OAUTH_AUTH_URI
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == "http://testserver/api/oauth/google/callback"
    assert query["response_type"] == "code" and query["access_type"] == "offline"
    assert query["prompt"] == "consent" and query["include_granted_scopes"] == "true"
    assert query["code_challenge_method"] == "S256" and query["code_challenge"] and query["state"]
    assert query["scope"].split() == [
        "openid",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/gmail.readonly",
        "https://www.googleapis.com/auth/gmail.modify",
        "https://www.googleapis.com/auth/calendar",
    ]


def test_start_uses_the_exact_configured_redirect_uri(staff_client, fake_google, settings):
    settings.GOOGLE_OAUTH_REDIRECT_URI = "https://butlers.example.ts.net/api/oauth/google/callback"
    url = staff_client.get(START, {"redirect": "false"}).json()["authorization_url"]
    assert parse_qs(urlsplit(url).query)["redirect_uri"] == [settings.GOOGLE_OAUTH_REDIRECT_URI]


def test_start_without_client_id_is_503_not_configured(staff_client, settings):
    settings.GOOGLE_OAUTH_CLIENT_ID = ""
    response = staff_client.get(START, {"redirect": "false"})
    assert response.status_code == 503
    assert response.json()["error"] == "not_configured"
    assert "GOOGLE_OAUTH_CLIENT_ID" in response.json()["description"]


def test_browser_start_without_client_shows_the_error_panel_and_a_disabled_button(staff_client, settings):
    settings.GOOGLE_OAUTH_CLIENT_ID = ""
    response = staff_client.get(START, **HTML)
    page = response.content.decode()
    assert response.status_code == 503
    assert 'id="error-panel"' in page and "not_configured" in page
    assert 'aria-disabled="true">Connect a Google account' in page


def test_start_is_rate_limited_per_user(staff_client, fake_google, settings):
    settings.OAUTH_RATE_LIMIT = "2/m"
    assert [staff_client.get(START, {"redirect": "false"}).status_code for _ in range(3)] == [200, 200, 429]
    limited = staff_client.get(START, {"redirect": "false"})
    assert limited.json()["error"] == "rate_limited"


def test_rate_limit_zero_turns_it_off(staff_client, fake_google, settings):
    settings.OAUTH_RATE_LIMIT = "0"
    assert {staff_client.get(START, {"redirect": "false"}).status_code for _ in range(5)} == {200}


# --- callback -----------------------------------------------------------------------------------
def test_connect_stores_the_account_and_the_dashboard_says_so(staff_client, fake_google):
    response = _callback(staff_client, _go_to_google(staff_client))
    assert response.status_code == 302 and response["Location"] == "/"
    dashboard = staff_client.get("/")
    page = dashboard.content.decode()
    assert "Connected alice@example.com" in page
    assert 'data-state="connected"' in page
    credential = GoogleCredential.objects.get()
    assert credential.credential_key == "google"
    assert staff_client.get("/api/oauth/status").json()["google"]["state"] == "connected"


def test_partial_grant_is_stored_and_the_dashboard_warns(staff_client, fake_google):
    fake_google.consent = ConsentPlan(scopes=["openid", "email", "https://www.googleapis.com/auth/gmail.modify"])
    assert _callback(staff_client, _go_to_google(staff_client)).status_code == 302
    page = staff_client.get("/").content.decode()
    assert "lacks calendar" in page and 'data-state="missing_scope"' in page


def test_deny_is_access_denied_as_json_and_as_the_dashboard_error_panel(staff_client, fake_google):
    fake_google.consent = ConsentPlan(deny=True)
    as_json = _callback(staff_client, _go_to_google(staff_client), **JSON)
    assert as_json.status_code == 400 and as_json.json()["error"] == "access_denied"
    as_page = _callback(staff_client, _go_to_google(staff_client))
    assert as_page.status_code == 400
    page = as_page.content.decode()
    assert 'id="error-panel"' in page and "access_denied" in page and "Connect a Google account" in page
    assert not GoogleCredential.objects.exists()


def test_format_json_selects_json(staff_client, db):
    response = staff_client.get(CALLBACK, {"format": "json", "state": "nope", "code": "c"}, **HTML)
    assert response.status_code == 400 and response.json()["error"] == "invalid_state"


def test_missing_code_with_a_valid_state(staff_client, fake_google):
    url = _go_to_google(staff_client)
    state = parse_qs(urlsplit(url).query)["state"][0]
    response = staff_client.get(CALLBACK, {"state": state}, **JSON)
    assert response.status_code == 400 and response.json()["error"] == "missing_code"


def test_replayed_callback_is_invalid_state(staff_client, fake_google):
    url = _go_to_google(staff_client)
    assert _callback(staff_client, url).status_code == 302
    replay = _callback(staff_client, url, **JSON)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_state"


def test_callback_in_another_session_is_invalid_and_does_not_burn_the_state(
    staff_client, staff_user, fake_google
):
    url = _go_to_google(staff_client)
    other = Client()
    other.force_login(staff_user)  # same user, another browser session
    stolen = _callback(other, url, **JSON)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_state"
    assert _callback(staff_client, url).status_code == 302


def test_anonymous_callback_is_invalid_state_page(client, db):
    response = client.get(CALLBACK, {"state": "s", "code": "c"}, **HTML)
    assert response.status_code == 400 and b"invalid_state" in response.content


def test_first_consent_without_refresh_token_is_no_refresh_token(staff_client, fake_google):
    fake_google.consent = ConsentPlan(refresh_token=False)
    response = _callback(staff_client, _go_to_google(staff_client), **JSON)
    assert response.status_code == 400 and response.json()["error"] == "no_refresh_token"
    assert not GoogleCredential.objects.exists()


def test_redirect_uri_mismatch_at_the_token_endpoint(staff_client, fake_google, settings):
    url = _go_to_google(staff_client)
    # The server's configuration changed between start and callback: Google sees another URI.
    OAuthState.objects.update(redirect_uri="http://testserver/other/callback")
    response = _callback(staff_client, url, **JSON)
    assert response.status_code == 400 and response.json()["error"] == "redirect_uri_mismatch"
    assert AuditEvent.objects.filter(outcome="redirect_uri_mismatch").exists()


def test_token_exchange_failure_echoes_neither_secrets_nor_google_text(staff_client, oauth_client_factory):
    oauth_client_factory()
    start = staff_client.get(START, {"redirect": "false"}).json()["authorization_url"]
    state = parse_qs(urlsplit(start).query)["state"][0]
    with responses.RequestsMock() as google:
        google.post(
            "https://oauth2.googleapis.com/token",
            status=400,
            json={"error": "invalid_grant", "error_description": f"RAW-GOOGLE-TEXT {REFRESH_TOKEN}"},
        )
        response = staff_client.get(CALLBACK, {"state": state, "code": "4/SECRET-AUTH-CODE"}, **HTML)
    page = response.content.decode()
    assert response.status_code == 400 and "token_exchange_failed" in page
    for leaked in ("RAW-GOOGLE-TEXT", REFRESH_TOKEN, "4/SECRET-AUTH-CODE", CLIENT_SECRET, state):
        assert leaked not in page


def test_a_failure_to_save_shows_an_error_never_success(staff_client, fake_google, monkeypatch):
    def broken(**kwargs):
        raise DatabaseError("could not extend file")

    monkeypatch.setattr(consent, "credential_set_scopes", broken)
    response = _callback(staff_client, _go_to_google(staff_client))
    assert response.status_code == 503
    page = response.content.decode()
    assert "storage_failed" in page and "Connected" not in page
    assert not GoogleCredential.objects.exists()
    assert AuditEvent.objects.filter(action=AuditAction.CONSENT_FAILED, outcome="storage_failed").exists()


query_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60
)
query = st.dictionaries(
    st.sampled_from(["state", "code", "error", "scope", "format", "authuser", "prompt", "x"]) | query_values,
    query_values | st.lists(query_values, max_size=3),
    max_size=6,
)


@pytest.mark.django_db
@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(params=query, accept=st.sampled_from(["text/html", "application/json", "*/*", ""]))
def test_any_query_string_is_400_or_302_never_500(staff_client, settings, params, accept):
    settings.OAUTH_RATE_LIMIT = "0"
    settings.GOOGLE_OAUTH_CLIENT_ID = CLIENT_ID
    with responses.RequestsMock(assert_all_requests_are_fired=False):  # Google is never reached
        response = staff_client.get(f"{CALLBACK}?{urlencode(params, doseq=True)}", HTTP_ACCEPT=accept)
    assert response.status_code in (400, 302)
    if response.status_code == 400 and response["Content-Type"].startswith("application/json"):
        assert response.json()["error"] in {
            "invalid_state", "missing_code", "access_denied", "token_exchange_failed",
            "no_refresh_token", "redirect_uri_mismatch", "authorization_failed",
        }


# --- dashboard --------------------------------------------------------------------------------
def test_dashboard_needs_staff(client, db):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_dashboard_lists_accounts_with_state_scopes_refresh_and_remediation(staff_client, credential_factory, settings):
    settings.GOOGLE_OAUTH_CLIENT_ID = CLIENT_ID
    credential_factory(email="alice@example.com")
    credential_factory(email="bob@example.com", scopes=("openid", "gmail.readonly"))
    page = staff_client.get("/").content.decode()
    assert "Connect a Google account" in page and START in page
    assert "alice@example.com" in page and "bob@example.com" in page
    assert 'data-state="missing_scope"' in page and "gmail.readonly" in page
    assert "Last refresh" in page and "Reconnect the account" in page
    for secret in (REFRESH_TOKEN, ACCESS_TOKEN, CLIENT_SECRET):
        assert secret not in page


@pytest.fixture
def written_logs():
    """What the project's log handler writes (its real formatter, redaction included)."""
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(root.handlers[0].formatter)
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


def test_the_whole_flow_writes_no_secret_to_the_logs(staff_client, fake_google, written_logs):
    callback = _go_to_google(staff_client)
    query = parse_qs(urlsplit(callback).query)
    code, state = query["code"][0], query["state"][0]
    assert _callback(staff_client, callback).status_code == 302
    assert _callback(staff_client, callback).status_code == 400  # a replay is logged too
    credential = GoogleCredential.objects.get()
    verifier = OAuthState.objects.get().code_verifier.reveal()
    logs = written_logs.getvalue()
    assert "/api/oauth/google/callback" in logs  # the requests were logged...
    for secret in (code, state, verifier, credential.refresh_token.reveal(),
                   credential.access_token.reveal(), CLIENT_SECRET):
        assert secret not in logs  # ...without their secrets
