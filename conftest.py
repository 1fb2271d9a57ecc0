"""Shared fixtures: factories for credentials and clients, a staff browser session, clean Redis.

Every test runs against real PostgreSQL and Redis (``tests/settings.py``); Google is stubbed at the
HTTP boundary (``responses``) or served by the project's fake Google (``tests/fake_google``).
"""
from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

#: Non-secret-looking but unique plaintexts, so a test can grep for them anywhere.
REFRESH_TOKEN = "1//test-refresh-token-PLAINTEXT-rt"
ACCESS_TOKEN = "ya29.test-access-token-PLAINTEXT-at"
CLIENT_SECRET = "GOCSPX-test-client-secret-PLAINTEXT"
CLIENT_ID = "1234567890-test.apps.googleusercontent.com"


@pytest.fixture(autouse=True)
def _clean_cache():
    """Each test starts with an empty Redis test database and no memoised OAuth client."""
    from django.core.cache import cache

    from oauth.tokens import client_memo_clear

    cache.clear()
    client_memo_clear()  # a rolled-back test's client must not serve the next test
    yield


@pytest.fixture(autouse=True)
def _no_deprecated_env(monkeypatch):
    """The developer's own deprecated credential variables never leak into a test."""
    from oauth import selectors

    for name in selectors.DEPRECATED_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    selectors._warned.clear()  # each test sees the once-per-process deprecation warning afresh


@pytest.fixture
def oauth_client_factory(db):
    """Save the OAuth client in the DB (what an admin does)."""
    from oauth.models import OAuthClient

    def make(
        *,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        redirect_uri: str = "http://testserver/api/oauth/google/callback",
    ) -> OAuthClient:
        client, _ = OAuthClient.objects.update_or_create(
            key="google",
            defaults={
                "client_id": client_id,
                "client_secret": client_secret,
                "redirect_uri": redirect_uri,
            },
        )
        return client

    return make


@pytest.fixture
def credential_factory(db):
    """Create a stored credential; the first one made is the primary unless a key is given."""
    from django.utils import timezone

    from oauth.models import PRIMARY_CREDENTIAL_KEY, GoogleCredential
    from oauth.services import credential_set_scopes

    counter = {"n": 0}

    def make(
        *,
        email: str | None = None,
        credential_key: str | None = None,
        refresh_token: str | None = REFRESH_TOKEN,
        access_token: str | None = ACCESS_TOKEN,
        expires_in: int | None = 3600,
        scopes: tuple[str, ...] = ("openid", "email", "gmail.readonly", "gmail.modify", "calendar"),
        client_id: str = CLIENT_ID,
        state: str = "connected",
        **fields,
    ) -> GoogleCredential:
        counter["n"] += 1
        now = timezone.now()
        if email is None:
            email = f"user{counter['n']}@example.com"
        if credential_key is None:
            credential_key = (
                PRIMARY_CREDENTIAL_KEY
                if not GoogleCredential.objects.filter(credential_key=PRIMARY_CREDENTIAL_KEY).exists()
                else f"google:{email}"
            )
        credential = GoogleCredential.objects.create(
            credential_key=credential_key,
            email=email,
            credentials={"client_id": client_id, "email": email},
            refresh_token=refresh_token,
            access_token=access_token,
            access_token_expires_at=(now + dt.timedelta(seconds=expires_in)) if expires_in else None,
            state=state,
            consented_at=fields.pop("consented_at", now),
            refresh_token_issued_at=fields.pop("refresh_token_issued_at", now),
            **fields,
        )
        credential_set_scopes(credential=credential, scopes=scopes)
        return credential

    return make


@pytest.fixture
def staff_user(db, django_user_model):
    return django_user_model.objects.create_user(
        username="operator", password="operator-pass-123", is_staff=True, is_superuser=True
    )


@pytest.fixture
def staff_client(client, staff_user):
    """A Django test client logged in as a staff superuser."""
    client.force_login(staff_user)
    return client


@pytest.fixture
def subprocess_env(settings):
    """Environment for a child process (manage.py, a worker) that uses this test's database.

    Use it with ``@pytest.mark.django_db(transaction=True)`` so the child sees committed rows.
    """
    from django.db import connection

    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "TEST_DATABASE_URL": (
                f"postgresql://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
                f"{db['PORT'] or 5432}/{db['NAME']}"
            ),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture
def python_exe() -> str:
    return sys.executable


@pytest.fixture
def fake_google(settings):
    """A running fake Google on loopback, with the project's endpoint settings pointed at it."""
    from tests.fake_google import FakeGoogle

    fake = FakeGoogle(client_id=CLIENT_ID, client_secret=CLIENT_SECRET).start()
    for name, value in fake.settings().items():
        setattr(settings, name, value)
    settings.GOOGLE_OAUTH_CLIENT_ID = CLIENT_ID
    settings.GOOGLE_OAUTH_CLIENT_SECRET = CLIENT_SECRET
    try:
        yield fake
    finally:
        fake.stop()
