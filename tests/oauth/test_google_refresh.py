"""oauth/google/refresh.py: one refresh grant on the shared transport, failures sorted by Google's code."""
from __future__ import annotations

import pytest
import requests
import responses

from oauth.exceptions import ClientMisconfigured, ReconsentRequired, TransientGoogleError
from oauth.google.refresh import refresh_access_token

TOKEN_URI = "https://oauth2.googleapis.com/token"
RT = "1//refresh-token-under-test"


def call():
    return refresh_access_token(refresh_token=RT, client_id="cid", client_secret="GOCSPX-s3cret")


@responses.activate
def test_success_returns_token_lifetime_and_scopes():
    responses.post(TOKEN_URI, json={
        "access_token": "ya29.new", "expires_in": 3599, "scope": "openid email", "token_type": "Bearer",
    })

    result = call()

    assert (result.access_token, result.expires_in, result.refresh_token) == ("ya29.new", 3599, None)
    assert result.scopes == ["openid", "email"]
    body = responses.calls[0].request.body
    assert "grant_type=refresh_token" in body and "client_id=cid" in body
    assert "ya29.new" not in repr(result)


@responses.activate
def test_a_rotated_refresh_token_is_returned():
    responses.post(TOKEN_URI, json={"access_token": "ya29.new", "expires_in": 3599, "refresh_token": "1//rotated"})

    assert call().refresh_token == "1//rotated"


@pytest.mark.parametrize(
    "status,body,expected,code",
    [
        (400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, ReconsentRequired, "invalid_grant"),
        (401, {"error": "invalid_client"}, ClientMisconfigured, "invalid_client"),
        (401, {"error": "deleted_client"}, ClientMisconfigured, "deleted_client"),
        (400, {"error": "unauthorized_client"}, ClientMisconfigured, "unauthorized_client"),
        (503, {"error": "temporarily_unavailable"}, TransientGoogleError, "temporarily_unavailable"),
        (500, {"error": "internal_failure"}, TransientGoogleError, "internal_failure"),
        (429, {"error": "rate_limit_exceeded"}, TransientGoogleError, "rate_limit_exceeded"),
        (502, "<html>Bad Gateway</html>", TransientGoogleError, "http_502"),
    ],
)
@responses.activate
def test_failures_are_classified_by_google_error_code(status, body, expected, code):
    if isinstance(body, dict):
        responses.post(TOKEN_URI, json=body, status=status)
    else:
        responses.post(TOKEN_URI, body=body, status=status, content_type="text/html")

    with pytest.raises(expected) as excinfo:
        call()

    assert excinfo.value.error == code
    assert RT not in str(excinfo.value) and "s3cret" not in str(excinfo.value)
    assert len(responses.calls) == 1  # one attempt: retries belong to oauth.tokens


@pytest.mark.parametrize("exc,code", [(requests.ConnectTimeout("slow"), "timeout"),
                                      (requests.ConnectionError("refused"), "connection_error")])
@responses.activate
def test_network_failures_are_transient(exc, code):
    responses.post(TOKEN_URI, body=exc)

    with pytest.raises(TransientGoogleError) as excinfo:
        call()

    assert excinfo.value.error == code


@responses.activate
def test_every_call_carries_the_configured_timeout(settings, monkeypatch):
    from oauth.google import transport

    settings.OAUTH_HTTP_TIMEOUT = 3.5
    seen = {}
    original = transport.session.request

    def spy(method, url, **kwargs):
        seen["timeout"] = kwargs.get("timeout")
        return original(method, url, **kwargs)

    monkeypatch.setattr(transport.session, "request", spy)
    responses.post(TOKEN_URI, json={"access_token": "ya29.new", "expires_in": 3599})

    call()

    assert seen["timeout"] == (3.5, 3.5)
