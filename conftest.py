"""Shared fixtures: factories for credentials and clients, a staff browser session, clean Redis.

Every test runs against real PostgreSQL and Redis (``tests/settings.py``); Google is stubbed at the
HTTP boundary (``responses``) or served by the project's fake Google (``tests/fake_google``).
"""
from __future__ import annotations

import os
import sys

import pytest

from tests.factories import (  # noqa: F401 - re-exported for tests written before tests.factories
    ACCESS_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    ROOT,
    credential_create,
    oauth_client_create,
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Keep pytest-django's order (database tests, then transactional ones, then the rest).

    pytest-django sorts first; pytest then regroups tests by their session-scoped parameters
    (Playwright's browser), which could pull browser tests, whose transactional flush empties the
    scopes seeded by the migrations, ahead of tests that read those seeds. Sorting again last (a
    stable sort) restores the order and keeps the grouping within each part.
    """
    from pytest_django.plugin import pytest_collection_modifyitems as django_order

    django_order(items)


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
    """Save the OAuth client in the DB (what an admin does): :func:`tests.factories.oauth_client_create`."""
    return oauth_client_create


@pytest.fixture
def credential_factory(db):
    """Create stored credentials (:func:`tests.factories.credential_create`); emails default to
    user<n>@example.com."""
    counter = {"n": 0}

    def make(*, email: str | None = None, **kwargs):
        counter["n"] += 1
        return credential_create(email=email or f"user{counter['n']}@example.com", **kwargs)

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
