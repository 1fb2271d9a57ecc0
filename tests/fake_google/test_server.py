"""The fake Google behaves like Google where the project depends on it (the other tests trust it)."""
import base64
import hashlib
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.fake_google import ConsentPlan, FakeGoogle

CLIENT_ID, SECRET = "cid.apps.googleusercontent.com", "shh"
REDIRECT = "http://127.0.0.1:9/api/oauth/google/callback"


@pytest.fixture
def fake():
    with FakeGoogle(client_id=CLIENT_ID, client_secret=SECRET) as fake:
        yield fake


def _consent(fake, verifier="v" * 50, scope="openid email https://www.googleapis.com/auth/calendar"):
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode({
        "client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code", "scope": scope,
        "state": "st", "code_challenge": challenge, "code_challenge_method": "S256",
    })
    response = requests.get(f"{fake.url}/o/oauth2/v2/auth?{query}", allow_redirects=False, timeout=5)
    assert response.status_code == 302
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def _exchange(fake, code, verifier="v" * 50):
    return requests.post(f"{fake.url}/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": CLIENT_ID, "client_secret": SECRET, "code_verifier": verifier,
    }, timeout=5)


def test_consent_then_exchange_with_pkce_gives_tokens_for_the_chosen_account(fake):
    fake.consent = ConsentPlan(email="bob@example.com")
    params = _consent(fake)
    assert params["state"] == "st"
    tokens = _exchange(fake, params["code"]).json()
    assert tokens["refresh_token"].startswith("1//")
    info = requests.get(f"{fake.url}/v1/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=5)
    assert info.json()["email"] == "bob@example.com"


def test_a_wrong_verifier_or_a_reused_code_is_invalid_grant(fake):
    params = _consent(fake)
    assert _exchange(fake, params["code"], verifier="w" * 50).json()["error"] == "invalid_grant"
    assert _exchange(fake, params["code"]).status_code == 200
    assert _exchange(fake, params["code"]).json()["error"] == "invalid_grant"


def test_deny_and_unregistered_redirect(fake):
    fake.consent = ConsentPlan(deny=True)
    assert _consent(fake)["error"] == "access_denied"
    fake.allowed_redirect_uris = {"https://elsewhere.example/cb"}
    query = urlencode({"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code"})
    response = requests.get(f"{fake.url}/o/oauth2/v2/auth?{query}", allow_redirects=False, timeout=5)
    assert response.status_code == 400 and "redirect_uri_mismatch" in response.text


def test_refresh_counts_failures_and_expiry(fake):
    token = fake.issue_grant("carol@example.com")
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": CLIENT_ID, "client_secret": SECRET}
    fake.fail_token(1, status=503)
    assert requests.post(f"{fake.url}/token", data=form, timeout=5).status_code == 503
    assert requests.post(f"{fake.url}/token", data=form, timeout=5).status_code == 200
    assert fake.refreshes_for("carol@example.com") == 1
    fake.expire_grant("carol@example.com")
    assert requests.post(f"{fake.url}/token", data=form, timeout=5).json()["error"] == "invalid_grant"
    fake.delete_client()
    assert requests.post(f"{fake.url}/token", data=form, timeout=5).json()["error"] == "deleted_client"


def test_apis_check_the_bearer_and_its_scopes(fake):
    token = fake.issue_grant("dan@example.com", ["gmail.readonly", "calendar.readonly"])
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": CLIENT_ID, "client_secret": SECRET}
    access = requests.post(f"{fake.url}/token", data=form, timeout=5).json()["access_token"]
    auth = {"Authorization": f"Bearer {access}"}
    assert requests.get(f"{fake.url}/calendar/v3/users/me/calendarList", headers=auth, timeout=5).status_code == 200
    created = requests.post(f"{fake.url}/calendar/v3/calendars/primary/events", json={"start": {}, "end": {}}, headers=auth, timeout=5)
    assert created.status_code == 403
    fake.add_message("dan@example.com", subject="Hi")
    listed = requests.get(f"{fake.url}/gmail/v1/users/me/messages", params={"labelIds": "INBOX"}, headers=auth, timeout=5).json()
    assert len(listed["messages"]) == 1
    assert requests.get(f"{fake.url}/gmail/v1/users/me/profile", headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401


def test_the_fake_listens_with_a_deep_backlog_and_answers_in_one_segment():
    """A burst of connections must not lose SYNs (backlog 5 did), and a small answer goes out in
    one write (separate header and body writes met delayed ACKs: ~40 ms each)."""
    import socket
    import subprocess

    from tests.fake_google import FakeGoogle

    fake = FakeGoogle(client_id="cid", client_secret="secret").start()
    try:
        listening = subprocess.run(
            ["ss", "-ltnH", f"sport = :{fake.port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert int(listening[2]) >= 1024  # Send-Q of a listening socket = its backlog
        with socket.create_connection(("127.0.0.1", fake.port)) as conn:
            conn.sendall(b"GET /v1/userinfo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            first = conn.recv(65536)
        assert first.startswith(b"HTTP/1.1 401") and first.endswith(b"}")  # headers and body at once
    finally:
        fake.stop()
