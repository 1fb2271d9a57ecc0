"""Moving the deprecated env credential into the database (oauth_import_env's service)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.db import connection

from tests.factories import CLIENT_ID, CLIENT_SECRET, ROOT
from oauth.exceptions import EnvCredentialInvalid, NothingToImport, ReconsentRequired
from oauth.importing import env_credentials_import
from oauth.models import AuditEvent, GoogleCredential
from oauth.selectors import DEPRECATED_ENV_VARS, credential_resolve

pytestmark = pytest.mark.django_db
EMAIL = "alice@example.com"
JSON_VAR = "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON"



@pytest.fixture
def env_json(fake_google, monkeypatch):
    """Alice's grant in the deprecated JSON variable; returns the refresh token."""
    token = fake_google.issue_grant(EMAIL, scopes=["openid", "email", "gmail.modify", "calendar"])
    monkeypatch.setenv(
        JSON_VAR, json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "refresh_token": token})
    )
    return token


def test_import_stores_the_verified_credential_encrypted(env_json, fake_google):
    result = env_credentials_import(actor="process:test")

    assert result.outcome == "created" and result.verified
    credential = GoogleCredential.objects.get()
    assert (credential.credential_key, credential.email, credential.source) == ("google", EMAIL, "env_import")
    assert credential.refresh_token.reveal() == env_json
    assert credential.client_id == CLIENT_ID
    assert credential.effective_state() == "connected"
    assert "https://www.googleapis.com/auth/calendar" in result.scopes
    assert result.env_vars_to_remove == [JSON_VAR]
    assert AuditEvent.objects.get(action="imported").outcome == "created"
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(c)::text FROM google_oauth_credentials c")
        dump = cursor.fetchone()[0]
    assert env_json not in dump and CLIENT_SECRET not in dump and CLIENT_ID in dump


def test_import_is_idempotent(env_json):
    env_credentials_import(actor="process:test")
    again = env_credentials_import(actor="process:test")

    assert again.outcome == "unchanged"
    assert GoogleCredential.objects.count() == 1


def test_a_new_refresh_token_for_the_same_account_updates_in_place(env_json, fake_google, monkeypatch):
    env_credentials_import(actor="process:test")
    newer = fake_google.issue_grant(EMAIL)
    monkeypatch.setenv(
        JSON_VAR, json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "refresh_token": newer})
    )

    result = env_credentials_import(actor="process:test")

    assert result.outcome == "updated"
    assert GoogleCredential.objects.get().refresh_token.reveal() == newer


def test_imported_credential_still_connects_after_the_env_vars_are_removed(env_json, monkeypatch):
    env_credentials_import(actor="process:test")
    monkeypatch.delenv(JSON_VAR)
    from oauth.tokens import access_token_get

    resolved = credential_resolve()
    token = access_token_get(force_refresh=True)

    assert resolved.source == "db" and resolved.account == EMAIL
    assert token.account == EMAIL and token.value


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_import_then_restart_without_env_vars_is_still_connected(fake_google, subprocess_env):
    token = fake_google.issue_grant(EMAIL)
    env = dict(subprocess_env)
    for name in DEPRECATED_ENV_VARS:
        env.pop(name, None)
    env.update(fake_google.env())
    manage = [sys.executable, str(ROOT / "manage.py")]
    with_vars = dict(env, GMAIL_CLIENT_ID=CLIENT_ID, GMAIL_CLIENT_SECRET=CLIENT_SECRET, GMAIL_REFRESH_TOKEN=token)

    imported = subprocess.run([*manage, "oauth_import_env"], env=with_vars, capture_output=True, text=True, timeout=60)
    # "restart": new processes, the deprecated variables gone
    check = subprocess.run([*manage, "oauth_check"], env=env, capture_output=True, text=True, timeout=60)
    printed = subprocess.run([*manage, "oauth_token", "--json"], env=env, capture_output=True, text=True, timeout=60)

    assert imported.returncode == 0, imported.stderr
    assert "Created: credential 'google' (account alice@example.com)" in imported.stdout
    assert "GMAIL_CLIENT_ID, GMAIL_CLIENT_SECRET, GMAIL_REFRESH_TOKEN" in imported.stdout
    assert token not in imported.stdout + imported.stderr
    assert check.returncode == 0, check.stderr
    assert "Google credentials resolved: account alice@example.com (source db)" in check.stdout
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["account"] == EMAIL
    assert GoogleCredential.objects.get().effective_state() == "connected"


def test_nothing_to_import():
    with pytest.raises(NothingToImport, match="Nothing to import"):
        env_credentials_import(actor="process:test")


def test_a_malformed_variable_gives_the_runbook_message(monkeypatch):
    monkeypatch.setenv(JSON_VAR, json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}))

    with pytest.raises(EnvCredentialInvalid) as exc_info:
        env_credentials_import(actor="process:test")

    assert str(exc_info.value) == f"{JSON_VAR} is missing required field(s): [refresh_token]"
    assert not GoogleCredential.objects.exists()


def test_a_dead_env_credential_is_not_imported(env_json, fake_google):
    fake_google.expire_grant(EMAIL)

    with pytest.raises(ReconsentRequired):
        env_credentials_import(actor="process:test")

    assert not GoogleCredential.objects.exists()


def test_no_verify_imports_without_calling_google(env_json, fake_google):
    result = env_credentials_import(actor="process:test", verify=False)

    assert result.outcome == "created" and not result.verified
    assert fake_google.stats["refreshes"] == 0
    credential = GoogleCredential.objects.get()
    assert credential.email == "" and credential.refresh_token.reveal() == env_json
    assert env_credentials_import(actor="process:test", verify=False).outcome == "unchanged"


def test_import_updates_an_account_already_connected_from_the_dashboard(env_json, credential_factory):
    existing = credential_factory(email=EMAIL)

    result = env_credentials_import(actor="process:test")

    assert result.outcome == "updated" and result.credential.pk == existing.pk
    assert GoogleCredential.objects.count() == 1
