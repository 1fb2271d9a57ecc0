"""End to end: the consent flow through real HTTP, Django's live server and the fake Google.

A ``requests`` session plays the operator's browser: it logs in through the admin login page,
opens /api/oauth/google/start, follows the redirect to the fake Google (which consents as planned
and redirects back to the live server's callback), and lands on the dashboard or an error.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.db import connection, connections

from tests.factories import CLIENT_ID, CLIENT_SECRET, ROOT
from oauth.models import GoogleCredential, OAuthState
from tests.fake_google import ConsentPlan

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

START = "/api/oauth/google/start"
CALLBACK = "/api/oauth/google/callback"
GMAIL_MODIFY = "https://www.googleapis.com/auth/gmail.modify"
CALENDAR = "https://www.googleapis.com/auth/calendar"


class Browser:
    """An operator's browser against the live server."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.http.headers["Accept"] = "text/html,application/xhtml+xml,*/*;q=0.8"

    def login(self, username: str = "operator", password: str = "operator-pass-123") -> None:
        page = self.http.get(f"{self.base}/admin/login/?next=/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = self.http.post(
            f"{self.base}/admin/login/?next=/",
            data={"csrfmiddlewaretoken": token, "username": username, "password": password, "next": "/"},
            headers={"Referer": f"{self.base}/admin/login/"},
            timeout=10,
        )
        assert response.url.rstrip("/") == self.base, "login failed"

    def connect(self, **headers) -> requests.Response:
        """Click 'Connect a Google account' and follow every redirect (Google and back)."""
        return self.http.get(f"{self.base}{START}", headers=headers, timeout=20)

    def authorization_url(self) -> str:
        response = self.http.get(f"{self.base}{START}?redirect=false", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["authorization_url"]

    def consent_at_google(self, authorization_url: str) -> str:
        """Visit Google's page and return the callback URL it redirects to (not followed)."""
        google = self.http.get(authorization_url, allow_redirects=False, timeout=10)
        assert google.status_code == 302, google.text
        return google.headers["Location"]

    def get(self, url: str, **headers) -> requests.Response:
        return self.http.get(url, headers=headers, timeout=20)


@pytest.fixture
def server(live_server, fake_google, staff_user, settings):
    """The live server configured for the fake Google, with the exact redirect URI registered."""
    settings.GOOGLE_OAUTH_REDIRECT_URI = f"{live_server.url}{CALLBACK}"
    settings.OAUTH_RATE_LIMIT = "0"
    fake_google.allowed_redirect_uris = {settings.GOOGLE_OAUTH_REDIRECT_URI}
    return live_server


@pytest.fixture
def operator(server) -> Browser:
    """A staff operator, logged in through the admin login page."""
    operator = Browser(server.url)
    operator.login()
    return operator


def _status(server) -> dict:
    response = requests.get(f"{server.url}/api/oauth/status", timeout=10)
    assert response.status_code == 200
    return response.json()


def _error_code(response: requests.Response) -> str:
    assert response.status_code == 400, response.text[:300]
    if response.headers["Content-Type"].startswith("application/json"):
        return response.json()["error"]
    return re.search(r'id="error-panel">\s*<strong>[^<]*<code>([a-z_]+)</code>', response.text).group(1)


def test_connect_shows_connected_with_gmail_and_calendar_and_survives_a_restart(
    server, operator, subprocess_env
):
    landed = operator.connect()
    assert landed.status_code == 200 and urlsplit(landed.url).path == "/"
    assert "Connected alice@example.com" in landed.text

    google = _status(server)["google"]
    assert google["state"] == "connected" and google["connected"] is True
    assert GMAIL_MODIFY in google["scopes_granted"] and CALENDAR in google["scopes_granted"]
    assert "email" not in google  # anonymous curl sees no account email

    # The runbook's psql check.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT credential_key, credentials->>'client_id', updated_at FROM google_oauth_credentials"
        )
        rows = cursor.fetchall()
    assert [(key, client) for key, client, _ in rows] == [("google", CLIENT_ID)]

    # A restart: drop every connection, then ask a brand-new process.
    connections.close_all()
    subprocess_env.update({"GOOGLE_OAUTH_CLIENT_ID": CLIENT_ID, "GOOGLE_OAUTH_CLIENT_SECRET": CLIENT_SECRET})
    child = subprocess.run(
        [sys.executable, "manage.py", "oauth_status", "--json"],
        cwd=ROOT, env=subprocess_env, capture_output=True, text=True, timeout=120,
    )
    assert child.returncode == 0, child.stderr
    restarted = json.loads(child.stdout)["google"]
    assert restarted["state"] == "connected" and restarted["email"] == "alice@example.com"
    assert _status(server)["google"]["state"] == "connected"


def test_a_second_account_gets_its_own_row_and_the_primary_stays(server, operator, fake_google):
    operator.connect()
    fake_google.consent = ConsentPlan(email="bob@example.com")
    assert "Connected bob@example.com" in operator.connect().text
    rows = dict(GoogleCredential.objects.values_list("email", "credential_key"))
    assert rows == {"alice@example.com": "google", "bob@example.com": "google:bob@example.com"}
    status = _status(server)
    assert len(status["accounts"]) == 2 and all(a["state"] == "connected" for a in status["accounts"])
    # Reconnecting alice updates her row in place.
    fake_google.consent = ConsentPlan(email="alice@example.com")
    assert "Reconnected alice@example.com" in operator.connect().text
    assert GoogleCredential.objects.count() == 2
    assert GoogleCredential.objects.get(credential_key="google").email == "alice@example.com"


def test_partial_grant_is_missing_scope_naming_calendar(server, operator, fake_google):
    fake_google.consent = ConsentPlan(scopes=["openid", "email", GMAIL_MODIFY])
    landed = operator.connect()
    assert landed.status_code == 200 and "lacks calendar" in landed.text
    google = _status(server)["google"]
    assert google["state"] == "missing_scope" and google["missing_scopes"] == [CALENDAR]
    assert "calendar" in google["remediation"]


def test_deny_is_access_denied(server, operator, fake_google):
    fake_google.consent = ConsentPlan(deny=True)
    assert _error_code(operator.connect()) == "access_denied"
    assert _error_code(operator.connect(Accept="application/json")) == "access_denied"
    assert _status(server)["google"]["state"] == "not_configured"


def test_tampered_state_is_invalid(server, operator):
    callback = operator.consent_at_google(operator.authorization_url())
    state = parse_qs(urlsplit(callback).query)["state"][0]
    tampered = callback.replace(f"state={state}", f"state={state[:-2]}xx")
    assert _error_code(operator.get(tampered)) == "invalid_state"
    assert not GoogleCredential.objects.exists()


def test_expired_state_is_invalid(server, operator):
    url = operator.authorization_url()
    OAuthState.objects.update(created_at=OAuthState.objects.get().created_at - dt.timedelta(minutes=11))
    assert _error_code(operator.get(operator.consent_at_google(url))) == "invalid_state"
    assert not GoogleCredential.objects.exists()


def test_replayed_callback_is_invalid(server, operator):
    callback = operator.consent_at_google(operator.authorization_url())
    assert operator.get(callback).status_code == 200  # connected, on the dashboard
    assert _error_code(operator.get(callback, Accept="application/json")) == "invalid_state"


def test_callback_from_another_session_is_invalid_and_leaves_the_state_usable(server, operator):
    callback = operator.consent_at_google(operator.authorization_url())
    intruder = Browser(server.url)
    intruder.login()  # even the same staff user, in another session
    assert _error_code(intruder.get(callback)) == "invalid_state"
    assert _error_code(Browser(server.url).get(callback)) == "invalid_state"  # anonymous
    assert not GoogleCredential.objects.exists()
    assert "Connected alice@example.com" in operator.get(callback).text


def test_first_consent_without_refresh_token_stores_nothing(server, operator, fake_google):
    fake_google.consent = ConsentPlan(refresh_token=False)
    assert _error_code(operator.connect()) == "no_refresh_token"
    assert not GoogleCredential.objects.exists()


def test_reconsent_without_refresh_token_keeps_the_stored_one(server, operator, fake_google):
    operator.connect()
    original = GoogleCredential.objects.get()
    fake_google.consent = ConsentPlan(refresh_token=False)
    assert "Reconnected alice@example.com" in operator.connect().text
    again = GoogleCredential.objects.get()
    assert again.refresh_token == original.refresh_token.reveal()
    assert again.access_token.reveal() != original.access_token.reveal()
    assert _status(server)["google"]["state"] == "connected"


def test_redirect_uri_not_registered_at_google_is_stopped_there(server, operator, fake_google, settings):
    fake_google.allowed_redirect_uris = {"https://elsewhere.example/api/oauth/google/callback"}
    google = operator.http.get(operator.authorization_url(), allow_redirects=False, timeout=10)
    assert google.status_code == 400 and "redirect_uri_mismatch" in google.text


def test_anonymous_start_gets_no_authorization_url(server):
    as_json = requests.get(f"{server.url}{START}?redirect=false", timeout=10)
    assert as_json.status_code == 401 and "authorization_url" not in as_json.json()
    plain = requests.get(f"{server.url}{START}", allow_redirects=False, timeout=10)
    assert plain.status_code == 302 and plain.headers["Location"].startswith("/admin/login/")


def test_no_client_id_is_503(server, operator, settings):
    settings.GOOGLE_OAUTH_CLIENT_ID = ""
    response = operator.http.get(f"{server.url}{START}?redirect=false", timeout=10)
    assert response.status_code == 503 and response.json()["error"] == "not_configured"
