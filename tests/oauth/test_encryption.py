"""Secrets are ciphertext at rest, keys rotate, and a wrong key fails loudly."""
import os
import subprocess

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from tests.factories import ACCESS_TOKEN, CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN
from oauth.encryption import Secret, decrypt, encrypt
from oauth.exceptions import DecryptionFailed, EncryptionError, EncryptionKeyMissing
from oauth.models import GoogleCredential, OAuthClient


def _raw_rows(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return repr(cursor.fetchall())


def test_stored_tokens_and_client_secret_are_ciphertext_in_a_raw_sql_read(
    credential_factory, oauth_client_factory
):
    credential_factory(email="alice@example.com")
    oauth_client_factory()

    credentials = _raw_rows("SELECT * FROM google_oauth_credentials")
    clients = _raw_rows("SELECT * FROM oauth_oauthclient")

    for plaintext in (REFRESH_TOKEN, ACCESS_TOKEN, CLIENT_SECRET):
        assert plaintext not in credentials
        assert plaintext not in clients
    assert "gAAAAA" in credentials and "gAAAAA" in clients  # Fernet tokens are what is stored
    assert CLIENT_ID in credentials  # client_id stays in clear for the runbook's query


def test_reading_back_decrypts_only_when_revealed(credential_factory):
    stored = credential_factory(email="alice@example.com")
    credential = GoogleCredential.objects.get(pk=stored.pk)

    assert isinstance(credential.refresh_token, Secret)
    assert credential.refresh_token.reveal() == REFRESH_TOKEN
    assert REFRESH_TOKEN not in repr(credential.refresh_token)
    assert REFRESH_TOKEN not in str(credential.refresh_token)
    assert REFRESH_TOKEN not in f"{credential.refresh_token}"
    assert REFRESH_TOKEN not in repr(credential.__dict__)


@pytest.mark.django_db(transaction=True)
def test_pg_dump_holds_no_plaintext_secret(credential_factory, oauth_client_factory):
    credential_factory(email="alice@example.com")
    oauth_client_factory()
    settings = connection.settings_dict

    dump = subprocess.run(
        ["pg_dump", "-h", settings["HOST"] or "127.0.0.1", "-p", str(settings["PORT"] or 5432),
         "-U", settings["USER"] or "postgres", "--data-only", settings["NAME"]],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout

    assert "google_oauth_credentials" in dump
    for plaintext in (REFRESH_TOKEN, ACCESS_TOKEN, CLIENT_SECRET):
        assert plaintext not in dump


@pytest.mark.django_db(transaction=True)
def test_runbook_psql_query_shows_the_primary_row_with_its_client_id(credential_factory):
    credential_factory(email="alice@example.com")
    settings = connection.settings_dict
    dsn = (
        f"postgresql://{settings['USER'] or 'postgres'}@{settings['HOST'] or '127.0.0.1'}:"
        f"{settings['PORT'] or 5432}/{settings['NAME']}"
    )

    out = subprocess.run(
        ["psql", dsn, "-At", "-c",
         "SELECT credential_key, credentials->>'client_id', updated_at FROM google_oauth_credentials;"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()

    key, client_id, updated_at = out.split("|")
    assert (key, client_id) == ("google", CLIENT_ID)
    assert updated_at.startswith(str(GoogleCredential.objects.get().updated_at.year))


def test_rotation_with_a_new_key_first_still_reads_old_rows(credential_factory, settings):
    stored = credential_factory(email="alice@example.com")
    old_keys = list(settings.OAUTH_ENCRYPTION_KEYS)

    settings.OAUTH_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *old_keys]

    credential = GoogleCredential.objects.get(pk=stored.pk)
    assert credential.refresh_token.reveal() == REFRESH_TOKEN
    # and new writes use the new key: the old keys alone cannot read them
    credential.access_token = "ya29.written-after-rotation"
    credential.save()
    settings.OAUTH_ENCRYPTION_KEYS = old_keys
    with pytest.raises(DecryptionFailed):
        GoogleCredential.objects.get(pk=stored.pk).access_token.reveal()


def test_a_wrong_key_fails_loudly_and_never_returns_ciphertext(credential_factory, settings):
    stored = credential_factory(email="alice@example.com")
    settings.OAUTH_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    credential = GoogleCredential.objects.get(pk=stored.pk)  # listing needs no key...
    with pytest.raises(DecryptionFailed) as excinfo:
        credential.refresh_token.reveal()  # ...revealing does

    message = str(excinfo.value)
    assert "OAUTH_ENCRYPTION_KEYS" in message and "refresh_token" in message
    assert "gAAAAA" not in message and REFRESH_TOKEN not in message


def test_missing_or_malformed_keys_name_the_variable(settings):
    settings.OAUTH_ENCRYPTION_KEYS = []
    with pytest.raises(EncryptionKeyMissing, match="OAUTH_ENCRYPTION_KEYS"):
        encrypt("x")
    settings.OAUTH_ENCRYPTION_KEYS = ["not-a-fernet-key"]
    with pytest.raises(EncryptionError, match="OAUTH_ENCRYPTION_KEYS"):
        decrypt("gAAAAAxxxx")


def test_secret_values_cannot_be_queried_by_equality(credential_factory):
    credential_factory(email="alice@example.com")
    from django.core.exceptions import FieldError

    with pytest.raises(FieldError):
        list(GoogleCredential.objects.filter(refresh_token=REFRESH_TOKEN))
    assert GoogleCredential.objects.filter(refresh_token__isnull=False).count() == 1


def test_client_secret_round_trips_through_the_db(oauth_client_factory):
    oauth_client_factory()
    assert OAuthClient.objects.get().client_secret.reveal() == CLIENT_SECRET
    assert os.environ.get("OAUTH_ENCRYPTION_KEYS")  # tests run with real keys, not a bypass
