"""Finding 4: the "http only on loopback" rule of the Google endpoint settings cannot be bypassed.

The settings are checked with the URL parser the HTTP client itself uses (urllib3's ``parse_url``,
which ``requests`` calls), so a URL that looks loopback to one parser but reaches another host
through the client is refused by ``manage.py check`` before any secret is sent.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from oauth.app_settings import _URL_SETTINGS, oauth_settings

ROOT = Path(__file__).resolve().parents[2]

BYPASSES = [
    # urllib3 reads the host as 192.0.2.2; a naive urlsplit sees 127.0.0.1.
    "http://192.0.2.2:8404\\@127.0.0.1/token",
    "https://oauth2.googleapis.com\\@evil.example/token",
    "http://user:pass@127.0.0.1:8300/token",
    "https://someone@oauth2.googleapis.com/token",
    "http://127.0.0.1:8300/to ken",
    "https://oauth2.googleapis.com/token\n",
    "http://127.0.0.1:8300/token\t",
    "https://oauth2.googleapis.com/tok\x00en",
    "https://oauth2.googleapis.com/tok\x7fen",
    " https://oauth2.googleapis.com/token",
    "http://192.0.2.2:8404#@127.0.0.1/token",
    "http://127.0.0.1.evil.example/token",
    "http:///token",
]


@pytest.mark.parametrize("name", _URL_SETTINGS)
@pytest.mark.parametrize("value", BYPASSES)
def test_finding_04_endpoint_bypasses_are_refused_in_every_setting(settings, name, value):
    setattr(settings, name, value)
    with pytest.raises(ImproperlyConfigured, match=name):
        getattr(oauth_settings, name)


@pytest.mark.parametrize(
    "value",
    [
        "https://oauth2.googleapis.com/token",
        "http://127.0.0.1:8300/token",
        "http://localhost:8300/token",
        "http://[::1]:8300/token",
    ],
)
def test_finding_04_genuine_endpoints_still_pass(settings, value):
    settings.GOOGLE_OAUTH_TOKEN_URI = value
    assert oauth_settings.GOOGLE_OAUTH_TOKEN_URI == value


def test_finding_04_manage_check_refuses_the_backslash_bypass():
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="butlers.settings", DEBUG="1",
               GOOGLE_OAUTH_TOKEN_URI="http://192.0.2.2:8404\\@127.0.0.1/token")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode != 0, result.stdout
    assert "oauth.E001" in result.stderr and "GOOGLE_OAUTH_TOKEN_URI" in result.stderr
    assert "Traceback" not in result.stderr
