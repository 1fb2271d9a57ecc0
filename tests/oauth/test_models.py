"""Scopes are in the ORM: 'which accounts lack calendar' is a query, implications count."""
import datetime as dt

import pytest
from django.utils import timezone

from oauth.models import AuditEvent, GoogleCredential
from oauth.services import audit_record


def test_which_accounts_lack_calendar_is_a_query(credential_factory):
    credential_factory(email="full@example.com")
    credential_factory(email="readonly@example.com", scopes=("gmail.readonly", "calendar.readonly"))
    credential_factory(email="mail@example.com", scopes=("gmail.modify",))

    lacking_write = GoogleCredential.objects.lacking_feature("calendar.write")
    lacking_read = GoogleCredential.objects.lacking_feature("calendar.read")
    lacking_labels = GoogleCredential.objects.lacking_scope("gmail.modify")

    assert {c.email for c in lacking_write} == {"readonly@example.com", "mail@example.com"}
    assert {c.email for c in lacking_read} == {"mail@example.com"}
    assert {c.email for c in lacking_labels} == {"readonly@example.com"}
    # gmail.modify implies gmail.readonly: nobody lacks Gmail reading
    assert not GoogleCredential.objects.lacking_scope("gmail.readonly").exists()


def test_missing_scopes_and_effective_state_follow_the_required_setting(credential_factory, settings):
    credential = credential_factory(scopes=("openid", "email", "gmail.modify", "calendar.readonly"))

    assert credential.missing_scopes() == ["https://www.googleapis.com/auth/calendar"]
    assert credential.effective_state(client_configured=True) == "missing_scope"

    settings.OAUTH_REQUIRED_SCOPES = ["gmail.readonly", "calendar.readonly", "openid"]
    assert credential.missing_scopes() == []
    assert credential.effective_state(client_configured=True) == "connected"
    # no client secret of its own and no OAuth client configured anywhere: it cannot refresh
    assert credential.effective_state(client_configured=False) == "misconfigured"


def test_idle_limit_counts_from_the_last_refresh(credential_factory, settings):
    now = timezone.now()
    credential = credential_factory(
        consented_at=now - dt.timedelta(days=100),
        refresh_token_issued_at=now - dt.timedelta(days=100),
        last_refreshed_at=now - dt.timedelta(days=10),
    )
    assert credential.days_until_idle_limit(now=now) == 173  # 183-day limit
    assert credential.refresh_token_age_days(now=now) == 100
    settings.OAUTH_HEARTBEAT_WINDOW = 24 * 3600
    assert GoogleCredential.objects.due_for_heartbeat(now=now).filter(pk=credential.pk).exists()
    settings.OAUTH_HEARTBEAT_WINDOW = 11 * 86400
    assert not GoogleCredential.objects.due_for_heartbeat(now=now).filter(pk=credential.pk).exists()
    # a revoked grant is never due, whatever its age
    settings.OAUTH_HEARTBEAT_WINDOW = 24 * 3600
    GoogleCredential.objects.filter(pk=credential.pk).update(revoked_at=now)
    assert not GoogleCredential.objects.due_for_heartbeat(now=now).filter(pk=credential.pk).exists()


def test_the_audit_log_is_append_only(credential_factory):
    event = audit_record(action="connected", actor="user:x", credential=credential_factory())

    event.outcome = "changed"
    with pytest.raises(TypeError, match="append-only"):
        event.save()
    with pytest.raises(TypeError, match="append-only"):
        event.delete()
    with pytest.raises(TypeError, match="append-only"):
        AuditEvent.objects.all().update(outcome="x")
    with pytest.raises(TypeError, match="append-only"):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get().outcome == ""


def test_a_credential_repr_never_holds_a_secret(credential_factory):
    from tests.factories import ACCESS_TOKEN, REFRESH_TOKEN

    credential = GoogleCredential.objects.get(pk=credential_factory(email="a@example.com").pk)
    text = repr(credential) + str(credential) + repr(vars(credential))
    assert REFRESH_TOKEN not in text and ACCESS_TOKEN not in text


@pytest.mark.django_db
def test_every_transition_that_stores_a_refresh_token_keeps_its_sha512(credential_factory):
    import hashlib

    from oauth.models import refresh_token_fingerprint

    def sha(token):
        return hashlib.sha512(token.encode()).hexdigest()

    now = timezone.now()
    credential = credential_factory(email="alice@example.com")
    credential.mark_connected(now=now, access_token="ya29.a", expires_in=3600, refresh_token="1//first",
                              client_id="c", email="alice@example.com", google_issuer="https://accounts.google.com",
                              google_subject="1234")
    assert credential.refresh_token_fingerprint == sha("1//first")
    assert (credential.google_issuer, credential.google_subject) == ("https://accounts.google.com", "1234")
    fields = credential.record_refresh_success(now=now, access_token="ya29.b",
                                               expires_at=now + dt.timedelta(hours=1), refresh_token="1//rotated")
    assert "refresh_token_fingerprint" in fields
    assert credential.refresh_token_fingerprint == sha("1//rotated")
    credential.record_refresh_success(now=now, access_token="ya29.c", expires_at=now + dt.timedelta(hours=1))
    assert credential.refresh_token_fingerprint == sha("1//rotated")  # no new token: kept
    credential.mark_imported(now=now, refresh_token="1//imported", client_id="c", client_secret=None,
                             email="alice@example.com", imported_from="env")
    assert credential.refresh_token_fingerprint == sha("1//imported")
    # a re-consent without a refresh token keeps the fingerprint and the subject
    credential.mark_connected(now=now, access_token="ya29.d", expires_in=3600, refresh_token=None,
                              client_id="c", email="alice@example.com")
    assert credential.refresh_token_fingerprint == refresh_token_fingerprint("1//imported")
    assert credential.google_subject == "1234"
