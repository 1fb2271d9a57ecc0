"""Test data shared by the whole suite: the plaintexts tests grep for, and factories.

Import from here (``from tests.factories import REFRESH_TOKEN, credential_create``); the fixtures
in ``conftest.py`` are thin wrappers that add the database marker.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Non-secret-looking but unique plaintexts, so a test can grep for them anywhere.
REFRESH_TOKEN = "1//test-refresh-token-PLAINTEXT-rt"
ACCESS_TOKEN = "ya29.test-access-token-PLAINTEXT-at"
CLIENT_SECRET = "GOCSPX-test-client-secret-PLAINTEXT"
CLIENT_ID = "1234567890-test.apps.googleusercontent.com"
DEFAULT_SCOPES = ("openid", "email", "gmail.readonly", "gmail.modify", "calendar")


def oauth_client_create(
    *,
    client_id: str = CLIENT_ID,
    client_secret: str = CLIENT_SECRET,
    redirect_uri: str = "http://testserver/api/oauth/google/callback",
):
    """Save the OAuth client in the DB (what an admin does)."""
    from oauth.models import OAuthClient

    client, _ = OAuthClient.objects.update_or_create(
        key="google",
        defaults={"client_id": client_id, "client_secret": client_secret, "redirect_uri": redirect_uri},
    )
    return client


def credential_create(
    *,
    email: str,
    credential_key: str | None = None,
    refresh_token: str | None = REFRESH_TOKEN,
    access_token: str | None = ACCESS_TOKEN,
    expires_in: int | None = 3600,
    scopes: tuple[str, ...] = DEFAULT_SCOPES,
    client_id: str = CLIENT_ID,
    state: str = "connected",
    **fields,
):
    """A stored credential; the first one made is the primary unless a key is given."""
    from django.utils import timezone

    from oauth.models import PRIMARY_CREDENTIAL_KEY, GoogleCredential
    from oauth.services import credential_set_scopes

    now = timezone.now()
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


def credentials_bulk_create(
    *,
    count: int,
    prefix: str,
    scopes: tuple[str, ...] = DEFAULT_SCOPES,
    state: str = "connected",
    **fields,
):
    """``count`` stored credentials in one INSERT (``<prefix><n>@example.com``), for tests of many
    accounts. Their scopes are listed in the metadata only (the M2M stays empty: what every reader
    consults first); none of them is the primary."""
    from django.utils import timezone

    from oauth import scopes as scope_catalogue
    from oauth.models import GoogleCredential

    now = timezone.now()
    uris = scope_catalogue.normalize_scopes(scopes)
    rows = []
    for n in range(count):
        email = f"{prefix}{n:04d}@example.com"
        rows.append(
            GoogleCredential(
                credential_key=f"google:{email}",
                email=email,
                credentials={"client_id": CLIENT_ID, "email": email, "scopes": uris},
                refresh_token=REFRESH_TOKEN,
                state=state,
                consented_at=now,
                refresh_token_issued_at=now,
                **fields,
            )
        )
    return GoogleCredential.objects.bulk_create(rows)
