"""oauth/google/consent.py: the authorization URL, PKCE, the code exchange and the account email."""
from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from tests.factories import ACCESS_TOKEN, CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN
from oauth.encryption import Secret
from oauth.exceptions import RedirectUriMismatch, TokenExchangeFailed
from oauth.google import consent as google_consent

TOKEN_URI = "https://oauth2.googleapis.com/token"
USERINFO_URI = "https://openidconnect.googleapis.com/v1/userinfo"
REDIRECT = "https://butlers.example.com/api/oauth/google/callback"


@pytest.fixture
def google():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def _exchange(**overrides):
    kwargs = dict(
        code="4/auth-code-PLAINTEXT",
        code_verifier="v" * 64,
        redirect_uri=REDIRECT,
        client_id=CLIENT_ID,
        client_secret=Secret(CLIENT_SECRET),
    )
    kwargs.update(overrides)
    return google_consent.code_exchange(**kwargs)


def test_authorization_url_asks_for_an_offline_grant_with_pkce(settings):
    settings.GOOGLE_OAUTH_AUTH_URI = "https://accounts.google.com/o/oauth2/v2/auth"
    url = google_consent.authorization_url(
        client_id=CLIENT_ID,
        redirect_uri=REDIRECT,
        scopes=["openid", "https://www.googleapis.com/auth/calendar"],
        state="the-state",
        code_challenge="the-challenge",
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == settings.GOOGLE_OAUTH_AUTH_URI
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid https://www.googleapis.com/auth/calendar",
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
        "state": "the-state",
        "code_challenge": "the-challenge",
        "code_challenge_method": "S256",
    }


def test_pkce_pair_is_random_and_its_challenge_is_the_s256_of_the_verifier():
    verifier, challenge = google_consent.pkce_pair()
    other, _ = google_consent.pkce_pair()
    assert verifier != other
    assert 43 <= len(verifier) <= 128
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert challenge == expected.decode()


def test_code_exchange_sends_verifier_redirect_uri_and_secret_and_boxes_the_tokens(google, settings):
    settings.OAUTH_HTTP_TIMEOUT = 7.5
    google.post(
        TOKEN_URI,
        json={
            "access_token": ACCESS_TOKEN,
            "refresh_token": REFRESH_TOKEN,
            "expires_in": 3599,
            "scope": "openid https://www.googleapis.com/auth/calendar",
            "token_type": "Bearer",
        },
    )
    grant = _exchange()
    sent = parse_qs(google.calls[0].request.body)
    assert sent["grant_type"] == ["authorization_code"]
    assert sent["code_verifier"] == ["v" * 64]
    assert sent["redirect_uri"] == [REDIRECT]
    assert sent["client_secret"] == [CLIENT_SECRET]
    assert google.calls[0].request.req_kwargs["timeout"] == (7.5, 7.5)
    assert grant.access_token.reveal() == ACCESS_TOKEN
    assert grant.refresh_token.reveal() == REFRESH_TOKEN
    assert grant.expires_in == 3599
    assert grant.scopes == ["openid", "https://www.googleapis.com/auth/calendar"]
    assert ACCESS_TOKEN not in repr(grant) and REFRESH_TOKEN not in repr(grant)


def test_code_exchange_without_refresh_token_says_so(google):
    google.post(TOKEN_URI, json={"access_token": ACCESS_TOKEN, "expires_in": 3599, "scope": "openid"})
    assert _exchange().refresh_token is None


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"error": "redirect_uri_mismatch", "error_description": "Bad Request"}, RedirectUriMismatch),
        (400, {"error": "invalid_grant", "error_description": "Malformed auth code."}, TokenExchangeFailed),
        (401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}, TokenExchangeFailed),
        (503, "<html>Server Error</html>", TokenExchangeFailed),
        (200, "not json", TokenExchangeFailed),
    ],
)
def test_code_exchange_maps_google_errors_to_consent_codes(google, status, body, expected):
    if isinstance(body, dict):
        body = {**body, "error_description": body["error_description"] + " ECHO-1//leaked"}
        google.post(TOKEN_URI, status=status, json=body)
    else:
        google.post(TOKEN_URI, status=status, body=body)
    with pytest.raises(expected) as caught:
        _exchange()
    message = str(caught.value)
    # What to do, never Google's raw text or a secret.
    assert "ECHO" not in message and "Server Error" not in message
    assert CLIENT_SECRET not in message and "4/auth-code-PLAINTEXT" not in message
    assert caught.value.error in {"redirect_uri_mismatch", "token_exchange_failed"}


def test_code_exchange_names_the_client_settings_when_google_rejects_the_client(google):
    google.post(TOKEN_URI, status=401, json={"error": "invalid_client"})
    with pytest.raises(TokenExchangeFailed, match="GOOGLE_OAUTH_CLIENT_SECRET"):
        _exchange()


def test_code_exchange_network_failure_is_a_token_exchange_failure(google):
    google.post(TOKEN_URI, body=requests.ConnectTimeout("timed out"))
    with pytest.raises(TokenExchangeFailed, match="GOOGLE_OAUTH_TOKEN_URI"):
        _exchange()


def test_userinfo_email_reads_the_account_email_with_the_bearer_token(google):
    google.get(USERINFO_URI, json={"sub": "1", "email": "Alice@Example.com", "email_verified": True})
    assert google_consent.userinfo_email(access_token=Secret(ACCESS_TOKEN)) == "alice@example.com"
    assert google.calls[0].request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"


@pytest.mark.parametrize("answer", [{"status": 401, "json": {"error": "invalid_token"}}, {"json": {"sub": "1"}}])
def test_userinfo_without_an_email_fails_with_what_to_fix(google, answer):
    google.get(USERINFO_URI, **answer)
    with pytest.raises(TokenExchangeFailed, match="GOOGLE_OAUTH_SCOPES"):
        google_consent.userinfo_email(access_token=Secret(ACCESS_TOKEN))


def test_the_id_token_gives_googles_subject_only_when_meant_for_this_client():
    import jwt

    from oauth.google.consent import id_token_subject

    def token(**claims):
        return jwt.encode({"iss": "https://accounts.google.com", "sub": "10769150350006150715113082367",
                           "aud": CLIENT_ID, **claims}, "any-key-the-signature-is-not-checked", algorithm="HS256")

    assert id_token_subject(token(), client_id=CLIENT_ID) == (
        "https://accounts.google.com", "10769150350006150715113082367")
    assert id_token_subject(token(aud="someone-else"), client_id=CLIENT_ID) is None
    assert id_token_subject(token(sub=""), client_id=CLIENT_ID) is None
    assert id_token_subject("not-a-jwt", client_id=CLIENT_ID) is None
    assert id_token_subject(None, client_id=CLIENT_ID) is None
