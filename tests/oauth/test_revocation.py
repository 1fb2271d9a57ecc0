"""Revoking a grant at Google: the emergency procedure and what it leaves behind."""
from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from tests.factories import ACCESS_TOKEN, REFRESH_TOKEN
from oauth.exceptions import RevocationFailed
from oauth.models import AuditEvent, GoogleCredential
from oauth.revocation import credential_revoke
from oauth.tokens import access_token_get

pytestmark = pytest.mark.django_db
EMAIL = "alice@example.com"


@pytest.fixture
def alice(fake_google, credential_factory):
    token = fake_google.issue_grant(EMAIL)
    return credential_factory(email=EMAIL, refresh_token=token, access_token=None, expires_in=None)


def test_revoke_calls_google_and_marks_the_credential_revoked(alice, fake_google):
    access_token_get(account=EMAIL)  # a cached access token exists
    result = credential_revoke(credential=alice, actor="user:operator")

    assert result.outcome == "revoked"
    assert fake_google.stats["revokes"] == 1
    stored = GoogleCredential.objects.get(pk=alice.pk)
    assert stored.state == "expired" and stored.last_error_code == "revoked"
    assert stored.revoked_at is not None and stored.access_token is None
    event = AuditEvent.objects.get(action="revoked")
    assert (event.account, event.actor, event.outcome) == (EMAIL, "user:operator", "revoked")
    # the grant is dead at Google too: a refresh with the old token is refused
    fake_refresh = fake_google.grants[stored.refresh_token.reveal()]
    assert fake_refresh.revoked


def test_after_revoke_oauth_token_fails_clearly(alice):
    call_command("oauth_token", "--account", EMAIL)  # works before
    credential_revoke(credential=alice, actor="user:operator")

    with pytest.raises(CommandError) as exc_info:
        call_command("oauth_token", "--account", EMAIL)

    assert "revoked" in str(exc_info.value) and "Reconnect" in str(exc_info.value)


def test_a_token_google_no_longer_knows_counts_as_revoked(fake_google, credential_factory):
    credential = credential_factory(email=EMAIL, refresh_token="1//unknown-to-google")

    result = credential_revoke(credential=credential, actor="user:operator")

    assert result.outcome == "already_revoked"
    assert GoogleCredential.objects.get(pk=credential.pk).state == "expired"


def test_revoking_twice_is_harmless(alice, fake_google):
    credential_revoke(credential=alice, actor="user:operator")
    again = credential_revoke(credential=GoogleCredential.objects.get(pk=alice.pk), actor="user:operator")

    # (real Google answers 400 invalid_token the second time; the fake says 200: both are fine)
    assert again.outcome in ("revoked", "already_revoked")
    assert GoogleCredential.objects.get(pk=alice.pk).state == "expired"
    assert AuditEvent.objects.filter(action="revoked").count() == 2


def test_google_failing_changes_nothing_locally(credential_factory, fake_google, settings):
    credential = credential_factory(email=EMAIL)
    settings.GOOGLE_OAUTH_REVOKE_URI = fake_google.url + "/no-such-endpoint"

    with pytest.raises(RevocationFailed) as exc_info:
        credential_revoke(credential=credential, actor="user:operator")

    stored = GoogleCredential.objects.get(pk=credential.pk)
    assert stored.state == "connected" and stored.revoked_at is None
    assert stored.access_token == ACCESS_TOKEN
    assert "nothing was changed locally" in str(exc_info.value)
    assert REFRESH_TOKEN not in str(exc_info.value)
    assert not AuditEvent.objects.filter(action="revoked").exists()
