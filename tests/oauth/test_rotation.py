"""Key rotation: every stored secret re-encrypted under the newest key, then the old key can go."""
from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from tests.factories import ACCESS_TOKEN, CLIENT_SECRET, REFRESH_TOKEN
from oauth.encryption import is_current
from oauth.exceptions import DecryptionFailed
from oauth.models import AuditEvent, GoogleCredential, OAuthClient, OAuthState
from oauth.rotation import encryption_keys_pending, encryption_keys_rotate

pytestmark = pytest.mark.django_db
OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


@pytest.fixture
def stored_under_old_key(settings, credential_factory, oauth_client_factory):
    settings.OAUTH_ENCRYPTION_KEYS = [OLD_KEY]
    oauth_client_factory()
    credentials = [credential_factory(email=f"user{n}@example.com") for n in range(5)]
    OAuthState.objects.create(
        state_digest="d" * 64, session_digest="s" * 64, code_verifier="verifier-PLAINTEXT-123",
        redirect_uri="http://testserver/cb", created_at=credentials[0].created_at,
    )
    settings.OAUTH_ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]  # step 2: new key first, old kept
    return credentials


def _raw_ciphertexts() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT refresh_token FROM google_oauth_credentials UNION ALL "
            "SELECT access_token FROM google_oauth_credentials UNION ALL "
            "SELECT client_secret FROM oauth_oauthclient UNION ALL "
            "SELECT code_verifier FROM oauth_oauthstate"
        )
        return [row[0] for row in cursor.fetchall() if row[0]]


def test_after_rotation_the_old_key_can_be_removed(stored_under_old_key, settings):
    report = encryption_keys_rotate(actor="process:test", batch_size=2)

    assert report.rotated == 5 * 2 + 1 + 1  # refresh+access per credential, client secret, verifier
    assert all(is_current(value) for value in _raw_ciphertexts())
    settings.OAUTH_ENCRYPTION_KEYS = [NEW_KEY]  # step 4: the old key is gone
    for credential in GoogleCredential.objects.all():
        assert credential.refresh_token.reveal() == REFRESH_TOKEN
        assert credential.access_token.reveal() == ACCESS_TOKEN
    assert OAuthClient.objects.get().client_secret.reveal() == CLIENT_SECRET
    assert OAuthState.objects.get().code_verifier.reveal() == "verifier-PLAINTEXT-123"
    event = AuditEvent.objects.get(action="rotated")
    assert event.detail == {"rotated": 12, "already_current": 0}


def test_rotation_is_resumable_and_counts_what_was_already_done(stored_under_old_key):
    first = encryption_keys_rotate(actor="process:test")
    second = encryption_keys_rotate(actor="process:test")

    assert (second.rotated, second.already_current) == (0, first.rotated)
    assert encryption_keys_pending() == 0


def test_pending_counts_values_under_an_old_key(stored_under_old_key):
    assert encryption_keys_pending() == 12


def test_rotation_does_not_touch_updated_at(stored_under_old_key):
    before = dict(GoogleCredential.objects.values_list("pk", "updated_at"))
    encryption_keys_rotate(actor="process:test")
    assert dict(GoogleCredential.objects.values_list("pk", "updated_at")) == before


def test_a_value_no_key_opens_is_named_not_crashed_on(stored_under_old_key, settings):
    settings.OAUTH_ENCRYPTION_KEYS = [NEW_KEY]  # the old key removed too early

    with pytest.raises(DecryptionFailed) as exc_info:
        encryption_keys_rotate(actor="process:test")

    assert "cannot be decrypted" in str(exc_info.value)
    assert "OAUTH_ENCRYPTION_KEYS" in str(exc_info.value)
