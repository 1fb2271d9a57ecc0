"""Credential resolution: the database first, then the deprecated env vars with the runbook's messages."""
import json
import logging

import pytest

from tests.factories import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN
from oauth.exceptions import AccountNotFound, CredentialError, EnvCredentialInvalid, NotConfigured
from oauth.selectors import CALENDAR_JSON_VAR, credential_resolve, oauth_client_get

ENV_JSON = json.dumps(
    {"client_id": "env-client", "client_secret": "env-secret", "refresh_token": "1//env-refresh"}
)



def test_database_credential_beats_the_env_fallback(credential_factory, monkeypatch):
    credential_factory(email="alice@example.com")
    monkeypatch.setenv(CALENDAR_JSON_VAR, ENV_JSON)

    resolved = credential_resolve()

    assert resolved.source == "db"
    assert resolved.credential.email == "alice@example.com"
    assert resolved.refresh_token.reveal() == REFRESH_TOKEN


@pytest.mark.django_db
def test_env_json_is_the_fallback_when_the_database_is_empty(monkeypatch, caplog):
    monkeypatch.setenv(CALENDAR_JSON_VAR, ENV_JSON)

    with caplog.at_level(logging.WARNING, logger="oauth.credentials"):
        first = credential_resolve()
        credential_resolve()

    assert first.source == CALENDAR_JSON_VAR
    assert first.client_id == "env-client"
    assert first.refresh_token.reveal() == "1//env-refresh"
    warnings = [r for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(warnings) == 1  # once per process, not per call
    assert "oauth_import_env" in warnings[0].getMessage()
    assert "1//env-refresh" not in caplog.text


@pytest.mark.django_db
@pytest.mark.parametrize("raw", ["", "   ", "null", "[]", "{}", "not json", '"a string"'])
def test_empty_or_non_object_json_gets_the_runbook_message(monkeypatch, raw):
    monkeypatch.setenv(CALENDAR_JSON_VAR, raw)
    with pytest.raises(EnvCredentialInvalid) as excinfo:
        credential_resolve()
    assert str(excinfo.value) == f"{CALENDAR_JSON_VAR} must be set to a non-empty JSON object"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "missing"),
    [
        ({"client_id": "cid-VALUE"}, "[client_secret, refresh_token]"),
        ({"client_secret": "secret-VALUE", "refresh_token": "1//rt-VALUE"}, "[client_id]"),
        ({"client_id": "cid-VALUE", "client_secret": "", "refresh_token": "1//rt-VALUE"}, "[client_secret]"),
        ({"foo": 1}, "[client_id, client_secret, refresh_token]"),
    ],
)
def test_missing_fields_are_named(monkeypatch, data, missing):
    monkeypatch.setenv(CALENDAR_JSON_VAR, json.dumps(data))
    with pytest.raises(EnvCredentialInvalid) as excinfo:
        credential_resolve()
    assert str(excinfo.value) == f"{CALENDAR_JSON_VAR} is missing required field(s): {missing}"
    assert "VALUE" not in str(excinfo.value)  # values are never echoed


@pytest.mark.django_db
def test_incomplete_gmail_vars_name_the_missing_one(monkeypatch):
    monkeypatch.setenv("GMAIL_CLIENT_ID", "gid")
    monkeypatch.setenv("GMAIL_CLIENT_SECRET", "gsecret")
    with pytest.raises(EnvCredentialInvalid, match="GMAIL_REFRESH_TOKEN must be set"):
        credential_resolve()
    monkeypatch.setenv("GMAIL_REFRESH_TOKEN", "1//gmail")
    assert credential_resolve().source == "GMAIL_REFRESH_TOKEN"


@pytest.mark.django_db
def test_google_refresh_token_uses_the_configured_client(monkeypatch, settings):
    monkeypatch.setenv("GOOGLE_REFRESH_TOKEN", "1//bare")
    settings.GOOGLE_OAUTH_CLIENT_ID = ""
    with pytest.raises(EnvCredentialInvalid, match="GOOGLE_OAUTH_CLIENT_ID"):
        credential_resolve()
    settings.GOOGLE_OAUTH_CLIENT_ID = CLIENT_ID
    settings.GOOGLE_OAUTH_CLIENT_SECRET = CLIENT_SECRET
    resolved = credential_resolve()
    assert (resolved.source, resolved.client_id) == ("GOOGLE_REFRESH_TOKEN", CLIENT_ID)


@pytest.mark.django_db
def test_nothing_anywhere_says_how_to_connect():
    with pytest.raises(CredentialError) as excinfo:
        credential_resolve()
    message = str(excinfo.value)
    assert f"{CALENDAR_JSON_VAR} must be set to a non-empty JSON object" in message
    assert "oauth_import_env" in message and "dashboard" in message


def test_an_explicit_account_is_never_substituted(credential_factory, monkeypatch):
    credential_factory(email="alice@example.com")
    credential_factory(email="bob@example.com")
    monkeypatch.setenv(CALENDAR_JSON_VAR, ENV_JSON)

    assert credential_resolve(account="bob@example.com").credential.email == "bob@example.com"
    with pytest.raises(AccountNotFound, match="carol@example.com"):
        credential_resolve(account="carol@example.com")


def test_the_admin_client_wins_over_env(oauth_client_factory, settings):
    settings.GOOGLE_OAUTH_CLIENT_ID = "from-env"
    assert oauth_client_get().client_id == "from-env"
    oauth_client_factory(client_id="from-db")
    client = oauth_client_get()
    assert (client.client_id, client.source) == ("from-db", "db")
    assert CLIENT_SECRET not in repr(client)


@pytest.mark.django_db
def test_no_client_anywhere_is_not_configured(settings):
    settings.GOOGLE_OAUTH_CLIENT_ID = ""
    with pytest.raises(NotConfigured, match="GOOGLE_OAUTH_CLIENT_ID"):
        oauth_client_get()


def test_standings_judge_each_account_as_the_full_rows_do(credential_factory, settings):
    """The dashboard's light reading agrees with credential_states, a row whose metadata lists no
    scopes included (its M2M is read instead)."""
    from django.utils import timezone

    from oauth.models import GoogleCredential
    from oauth.selectors import credential_standings, credential_states

    settings.GOOGLE_OAUTH_CLIENT_ID = CLIENT_ID
    settings.GOOGLE_OAUTH_CLIENT_SECRET = CLIENT_SECRET
    credential_factory(email="fine@example.com")
    credential_factory(email="partial@example.com", scopes=("openid", "email", "gmail.modify"))
    credential_factory(email="revoked@example.com", revoked_at=timezone.now())
    credential_factory(email="failing@example.com", state="refresh_failing", last_error_code="x")
    legacy = credential_factory(email="legacy@example.com")  # every scope, in the M2M alone
    GoogleCredential.objects.filter(pk=legacy.pk).update(credentials={"client_id": CLIENT_ID})

    standings = credential_standings()

    expected = [(c.pk, state, c.last_error_code) for c, state in credential_states()]
    assert [(s.pk, s.state, s.last_error_code) for s in standings] == expected
    assert [s.state for s in standings] == [
        "connected", "missing_scope", "expired", "refresh_failing", "connected"]
    assert [s.scopes_recorded for s in standings] == [True, True, True, True, False]
    settings.GOOGLE_OAUTH_CLIENT_ID = ""
    assert {s.state for s in credential_standings()} == {"misconfigured", "expired"}
