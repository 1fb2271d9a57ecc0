"""Finding 13: the admin refuses redirect URIs that Google would refuse at consent time."""
from __future__ import annotations

import pytest

from tests.factories import CLIENT_SECRET
from oauth.models import OAuthClient

ADD = "/admin/oauth/oauthclient/add/"


def _save(staff_client, redirect_uri: str):
    return staff_client.post(
        ADD,
        {"client_id": "1-x.apps.googleusercontent.com", "redirect_uri": redirect_uri,
         "new_client_secret": CLIENT_SECRET},
    )


@pytest.mark.parametrize(
    "redirect_uri, reason",
    [
        ("https://butlers.example.com/api/oauth/google/callback#frag", "fragment"),
        ("ftp://butlers.example.com/api/oauth/google/callback", "https://"),
        ("//evil.example/api/oauth/google/callback", "https://"),
        ("evil.example/api/oauth/google/callback", "https://"),
        ("http://butlers.example.com/api/oauth/google/callback", "loopback"),
        ("https://user:pw@butlers.example.com/api/oauth/google/callback", "user@"),
        ("https://192.0.2.7/api/oauth/google/callback", "IP address"),
        ("https://*.example.com/api/oauth/google/callback", "wildcard"),
        ("https://butlers.example.com\\@evil.example/cb", "backslash"),
    ],
)
def test_finding_13_admin_refuses_redirect_uris_google_refuses(staff_client, redirect_uri, reason):
    response = _save(staff_client, redirect_uri)
    assert response.status_code == 200  # the form again, with the error
    page = response.content.decode()
    assert "errorlist" in page and reason in page
    assert not OAuthClient.objects.exists()


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://butlers.example.com/api/oauth/google/callback",
        "http://127.0.0.1:8200/api/oauth/google/callback",
        "http://localhost:8200/api/oauth/google/callback",
        "",
    ],
)
def test_finding_13_admin_accepts_redirect_uris_google_accepts(staff_client, redirect_uri):
    response = _save(staff_client, redirect_uri)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert OAuthClient.objects.get().redirect_uri == redirect_uri
