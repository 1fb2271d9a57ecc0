"""oauth/consent.py: state minting and checking, storing the grant, auditing (Google via responses)."""
from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from django.db import DatabaseError, connection

from tests.factories import ACCESS_TOKEN, CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN
from oauth import consent
from oauth.exceptions import (
    AccessDenied,
    ConsentStorageFailed,
    InvalidState,
    MissingCode,
    NoRefreshToken,
    NotConfigured,
)
from oauth.models import AuditAction, AuditEvent, GoogleCredential, OAuthState
from oauth.tokens import access_token_get

TOKEN_URI = "https://oauth2.googleapis.com/token"
USERINFO_URI = "https://openidconnect.googleapis.com/v1/userinfo"
CALLBACK = "http://testserver/api/oauth/google/callback"
ALL_SCOPES = (
    "openid https://www.googleapis.com/auth/userinfo.email "
    "https://www.googleapis.com/auth/gmail.readonly https://www.googleapis.com/auth/gmail.modify "
    "https://www.googleapis.com/auth/calendar"
)
NEW_ACCESS = "ya29.second-access-token-PLAINTEXT"
NEW_REFRESH = "1//second-refresh-token-PLAINTEXT"


@pytest.fixture
def google(oauth_client_factory):
    """Google's token and userinfo endpoints, answering for a chosen account."""
    oauth_client_factory(redirect_uri=CALLBACK)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:

        def answer(*, email="alice@example.com", scope=ALL_SCOPES, access=ACCESS_TOKEN, refresh=REFRESH_TOKEN):
            body = {"access_token": access, "expires_in": 3599, "scope": scope, "token_type": "Bearer"}
            if refresh:
                body["refresh_token"] = refresh
            mock.upsert(responses.POST, TOKEN_URI, json=body)
            mock.upsert(responses.GET, USERINFO_URI, json={"sub": "1", "email": email, "email_verified": True})

        mock.answer = answer
        answer()
        yield mock


def _start(user, binding="binding-1"):
    url = consent.consent_start(user=user, session_binding=binding, default_redirect_uri=CALLBACK)
    return parse_qs(urlsplit(url).query)["state"][0]


def _complete(user, state, binding="binding-1", code="4/code"):
    return consent.consent_complete(user=user, session_binding=binding, state=state, code=code)


# --- start ---------------------------------------------------------------------------------------
def test_start_stores_only_a_digest_of_the_state_and_an_encrypted_verifier(staff_user, google):
    url = consent.consent_start(user=staff_user, session_binding="b", default_redirect_uri=CALLBACK)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["redirect_uri"] == CALLBACK and query["client_id"] == CLIENT_ID
    pending = OAuthState.objects.get()
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM oauth_oauthstate")
        row = " ".join(str(value) for value in cursor.fetchone())
    assert query["state"] not in row
    assert pending.code_verifier.reveal() not in row
    assert pending.user == staff_user


def test_start_without_any_client_is_not_configured(staff_user, db, settings):
    settings.GOOGLE_OAUTH_CLIENT_ID = ""
    with pytest.raises(NotConfigured, match="GOOGLE_OAUTH_CLIENT_ID"):
        consent.consent_start(user=staff_user, session_binding="b", default_redirect_uri=CALLBACK)


def test_start_uses_this_servers_callback_when_no_redirect_uri_is_configured(staff_user, db, settings):
    settings.GOOGLE_OAUTH_CLIENT_ID = CLIENT_ID
    settings.GOOGLE_OAUTH_REDIRECT_URI = ""
    url = consent.consent_start(
        user=staff_user, session_binding="b", default_redirect_uri="https://me.example/api/oauth/google/callback"
    )
    assert parse_qs(urlsplit(url).query)["redirect_uri"] == ["https://me.example/api/oauth/google/callback"]


# --- complete: storing ------------------------------------------------------------------------------
def test_first_account_becomes_the_primary_with_encrypted_tokens_and_scopes(staff_user, google):
    result = _complete(staff_user, _start(staff_user))
    credential = result.credential
    assert result.created
    assert credential.credential_key == "google" and credential.email == "alice@example.com"
    assert credential.effective_state() == "connected"
    assert credential.client_id == CLIENT_ID
    assert "https://www.googleapis.com/auth/calendar" in credential.granted_scope_uris()
    stored = GoogleCredential.objects.get()
    assert stored.refresh_token.reveal() == REFRESH_TOKEN
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM google_oauth_credentials")
        row = " ".join(str(value) for value in cursor.fetchone())
    assert REFRESH_TOKEN not in row and ACCESS_TOKEN not in row
    event = AuditEvent.objects.get(action=AuditAction.CONNECTED)
    assert event.actor == "user:operator" and event.account == "alice@example.com"
    # The token exchange sent the verifier minted with the state.
    exchange = parse_qs(google.calls[0].request.body)
    assert exchange["redirect_uri"] == [CALLBACK] and exchange["client_secret"] == [CLIENT_SECRET]
    assert len(exchange["code_verifier"][0]) >= 43


def test_a_second_account_gets_its_own_row_and_the_primary_stays(staff_user, google):
    _complete(staff_user, _start(staff_user))
    google.answer(email="bob@example.com", access=NEW_ACCESS, refresh=NEW_REFRESH)
    second = _complete(staff_user, _start(staff_user)).credential
    assert second.credential_key == "google:bob@example.com"
    keys = dict(GoogleCredential.objects.values_list("email", "credential_key"))
    assert keys == {"alice@example.com": "google", "bob@example.com": "google:bob@example.com"}
    assert GoogleCredential.objects.get(email="alice@example.com").refresh_token.reveal() == REFRESH_TOKEN


def test_reconsent_updates_the_row_in_place_and_replaces_stored_and_cached_access_token(
    staff_user, google, credential_factory, django_capture_on_commit_callbacks
):
    old = credential_factory(email="alice@example.com")
    # A connector got (and the token service cached) the old access token.
    assert access_token_get(account="alice@example.com").value == ACCESS_TOKEN
    GoogleCredential.objects.filter(pk=old.pk).update(
        state="expired", consecutive_failures=4, last_error_code="invalid_grant", last_error_detail="dead"
    )
    google.answer(access=NEW_ACCESS, refresh=NEW_REFRESH)
    with django_capture_on_commit_callbacks(execute=True):
        result = _complete(staff_user, _start(staff_user))
    assert not result.created and result.credential.pk == old.pk
    stored = GoogleCredential.objects.get()
    assert stored.access_token.reveal() == NEW_ACCESS and stored.refresh_token.reveal() == NEW_REFRESH
    assert stored.state == "connected" and stored.consecutive_failures == 0
    assert stored.last_error_code == "" and stored.last_error_detail == ""
    # The next caller gets the new token, from the primary alias and the account alike.
    assert access_token_get(account="alice@example.com").value == NEW_ACCESS
    assert access_token_get().value == NEW_ACCESS
    assert AuditEvent.objects.filter(action=AuditAction.RECONSENTED, credential=stored).exists()


def test_reconsent_without_refresh_token_keeps_the_stored_one(staff_user, google, credential_factory):
    credential_factory(email="alice@example.com")
    google.answer(access=NEW_ACCESS, refresh=None)
    _complete(staff_user, _start(staff_user))
    stored = GoogleCredential.objects.get()
    assert stored.refresh_token.reveal() == REFRESH_TOKEN
    assert stored.access_token.reveal() == NEW_ACCESS


def test_first_consent_without_refresh_token_stores_nothing(staff_user, google):
    google.answer(refresh=None)
    with pytest.raises(NoRefreshToken):
        _complete(staff_user, _start(staff_user))
    assert not GoogleCredential.objects.exists()
    assert AuditEvent.objects.get().outcome == "no_refresh_token"


def test_partial_grant_is_stored_as_missing_scope(staff_user, google):
    google.answer(scope="openid https://www.googleapis.com/auth/gmail.modify")
    result = _complete(staff_user, _start(staff_user))
    assert result.missing_scopes == ["https://www.googleapis.com/auth/calendar"]
    assert GoogleCredential.objects.get().effective_state() == "missing_scope"


def test_a_failure_to_save_is_an_error_and_nothing_is_kept(staff_user, google, monkeypatch):
    def broken(**kwargs):
        raise DatabaseError("disk full")

    monkeypatch.setattr(consent, "credential_set_scopes", broken)
    with pytest.raises(ConsentStorageFailed):
        _complete(staff_user, _start(staff_user))
    assert not GoogleCredential.objects.exists()
    assert AuditEvent.objects.get().outcome == "storage_failed"


# --- complete: state -----------------------------------------------------------------------------
def test_state_is_single_use(staff_user, google):
    state = _start(staff_user)
    _complete(staff_user, state)
    with pytest.raises(InvalidState):
        _complete(staff_user, state)


def test_state_expires_after_the_ttl(staff_user, google):
    state = _start(staff_user)
    OAuthState.objects.update(created_at=OAuthState.objects.get().created_at - dt.timedelta(seconds=601))
    with pytest.raises(InvalidState):
        _complete(staff_user, state)
    assert not GoogleCredential.objects.exists()


def test_state_from_another_session_is_refused_without_consuming_it(staff_user, google, django_user_model):
    state = _start(staff_user, binding="mine")
    with pytest.raises(InvalidState):
        _complete(staff_user, state, binding="someone-else")
    other = django_user_model.objects.create_user("intruder", password="x" * 12, is_staff=True)
    with pytest.raises(InvalidState):
        _complete(other, state, binding="mine")
    assert _complete(staff_user, state, binding="mine").credential.email == "alice@example.com"


@pytest.mark.parametrize("state", [None, "", "tampered", "x" * 5000])
def test_unknown_or_tampered_state_is_invalid(staff_user, google, state):
    _start(staff_user)
    with pytest.raises(InvalidState):
        _complete(staff_user, state)


def test_tampered_state_is_invalid(staff_user, google):
    state = _start(staff_user)
    with pytest.raises(InvalidState):
        _complete(staff_user, state[:-1] + ("A" if state[-1] != "A" else "B"))


def test_google_error_is_access_denied_and_consumes_the_state(staff_user, google):
    state = _start(staff_user)
    with pytest.raises(AccessDenied):
        consent.consent_complete(
            user=staff_user, session_binding="binding-1", state=state, code=None, error="access_denied"
        )
    with pytest.raises(InvalidState):
        _complete(staff_user, state)
    assert AuditEvent.objects.filter(action=AuditAction.CONSENT_FAILED, outcome="access_denied").exists()


def test_valid_state_without_code_is_missing_code(staff_user, google):
    with pytest.raises(MissingCode):
        _complete(staff_user, _start(staff_user), code="")


def test_consent_records_googles_subject_and_the_refresh_tokens_sha512(staff_user, google):
    import hashlib

    import jwt

    id_token = jwt.encode({"iss": "https://accounts.google.com", "sub": "110248495921238986420",
                           "aud": CLIENT_ID, "email": "alice@example.com"}, "x", algorithm="HS256")
    google.upsert(responses.POST, TOKEN_URI, json={
        "access_token": ACCESS_TOKEN, "refresh_token": REFRESH_TOKEN, "expires_in": 3599,
        "scope": ALL_SCOPES, "token_type": "Bearer", "id_token": id_token,
    })
    _complete(staff_user, _start(staff_user))
    stored = GoogleCredential.objects.get()
    assert (stored.google_issuer, stored.google_subject) == ("https://accounts.google.com", "110248495921238986420")
    assert stored.refresh_token_fingerprint == hashlib.sha512(REFRESH_TOKEN.encode()).hexdigest()
