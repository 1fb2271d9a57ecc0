"""The operator commands as an operator (or a script checking exit codes) meets them."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from tests.factories import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, ROOT
from oauth.models import GoogleCredential
from oauth.selectors import DEPRECATED_ENV_VARS

pytestmark = pytest.mark.django_db
EMAIL = "alice@example.com"



@pytest.fixture
def manage_env(subprocess_env):
    env = dict(subprocess_env)
    for name in DEPRECATED_ENV_VARS:
        env.pop(name, None)
    return env


def _manage(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], env=env, capture_output=True, text=True, timeout=60
    )


# --- oauth_check ------------------------------------------------------------------------------
def test_oauth_check_passes_with_a_stored_credential(credential_factory, oauth_client_factory, capsys):
    oauth_client_factory()
    credential_factory(email=EMAIL)

    call_command("oauth_check")

    assert "Google credentials resolved: account alice@example.com (source db)" in capsys.readouterr().out


def test_oauth_check_warns_about_a_deprecated_source(monkeypatch, capsys):
    monkeypatch.setenv(
        "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON",
        json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN}),
    )
    call_command("oauth_check")

    out = capsys.readouterr().out
    assert "Google credentials resolved" in out and "oauth_import_env" in out
    assert REFRESH_TOKEN not in out


def test_oauth_check_blocks_with_the_banner(capfd):
    with pytest.raises(SystemExit) as exc_info:
        call_command("oauth_check")

    assert exc_info.value.code == 3
    assert "STARTUP BLOCKED: oauth_check" in capfd.readouterr().err


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_oauth_check_as_a_process(manage_env, credential_factory, oauth_client_factory):
    blocked = _manage(manage_env, "oauth_check")
    oauth_client_factory()
    credential_factory(email=EMAIL)
    passed = _manage(manage_env, "oauth_check")

    assert blocked.returncode == 3
    assert "STARTUP BLOCKED: oauth_check" in blocked.stderr and "Traceback" not in blocked.stderr
    assert passed.returncode == 0, passed.stderr
    assert "Google credentials resolved" in passed.stdout


# --- oauth_import_env ---------------------------------------------------------------------------
def test_import_env_with_nothing_to_import():
    with pytest.raises(CommandError, match="Nothing to import: none of BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON"):
        call_command("oauth_import_env")


def test_import_env_reports_what_it_did_and_what_to_remove(fake_google, monkeypatch, capsys):
    token = fake_google.issue_grant(EMAIL)
    monkeypatch.setenv(
        "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON",
        json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "refresh_token": token}),
    )

    call_command("oauth_import_env")
    call_command("oauth_import_env")

    out = capsys.readouterr().out
    assert "Created: credential 'google' (account alice@example.com)" in out
    assert "Unchanged: credential 'google'" in out
    assert "Remove these deprecated variables" in out and "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON" in out
    assert token not in out


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_import_env_exit_code_for_bad_input(manage_env):
    nothing = _manage(manage_env, "oauth_import_env")
    malformed = _manage(dict(manage_env, BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON="{not json"), "oauth_import_env")

    assert nothing.returncode == 1 and "Nothing to import" in nothing.stderr
    assert malformed.returncode == 1
    assert "must be set to a non-empty JSON object" in malformed.stderr
    assert "Traceback" not in nothing.stderr + malformed.stderr


# --- oauth_revoke -----------------------------------------------------------------------------------
def test_revoke_requires_an_account():
    with pytest.raises(CommandError, match="--account"):
        call_command("oauth_revoke")


def test_revoke_unknown_account_names_the_known_ones(credential_factory):
    credential_factory(email=EMAIL)

    with pytest.raises(CommandError) as exc_info:
        call_command("oauth_revoke", "--account", "nobody@example.com")

    assert "nobody@example.com" in str(exc_info.value) and EMAIL in str(exc_info.value)
    assert GoogleCredential.objects.get().state == "connected"


def test_revoke_revokes_and_says_what_next(fake_google, credential_factory, capsys):
    token = fake_google.issue_grant(EMAIL)
    credential_factory(email=EMAIL, refresh_token=token)

    call_command("oauth_revoke", "--account", EMAIL)

    assert fake_google.stats["revokes"] == 1
    out = capsys.readouterr().out
    assert "Revoked alice@example.com: Google confirmed the revocation." in out
    assert "Reconnect" in out
    assert GoogleCredential.objects.get().state == "expired"


def test_revoke_when_google_does_not_confirm(fake_google, credential_factory, settings):
    credential_factory(email=EMAIL)
    settings.GOOGLE_OAUTH_REVOKE_URI = fake_google.url + "/unavailable"

    with pytest.raises(CommandError, match="nothing was changed locally"):
        call_command("oauth_revoke", "--account", EMAIL)


# --- rotate_encryption_keys ------------------------------------------------------------------------
def test_rotate_reports_counts_and_check_tells_when_old_keys_can_go(settings, credential_factory, capsys):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.OAUTH_ENCRYPTION_KEYS = [old]
    credential_factory(email=EMAIL)
    settings.OAUTH_ENCRYPTION_KEYS = [new, old]

    with pytest.raises(CommandError, match="2 stored value"):
        call_command("rotate_encryption_keys", "--check")
    call_command("rotate_encryption_keys", "--batch-size", "1")
    call_command("rotate_encryption_keys", "--check")

    out = capsys.readouterr().out
    assert "oauth.GoogleCredential.refresh_token: 1 re-encrypted, 0 already current" in out
    assert "Re-encrypted 2 secret(s); 0 were already under the newest key." in out
    assert "the older keys can be removed" in out


def test_rotate_with_a_malformed_key(settings, credential_factory):
    credential_factory(email=EMAIL)
    settings.OAUTH_ENCRYPTION_KEYS = ["not-a-fernet-key", *settings.OAUTH_ENCRYPTION_KEYS]

    with pytest.raises(CommandError, match="not a Fernet key"):
        call_command("rotate_encryption_keys")


def test_rotate_rejects_a_zero_batch():
    with pytest.raises(CommandError, match="--batch-size must be at least 1"):
        call_command("rotate_encryption_keys", "--batch-size", "0")


# --- every command explains itself -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    ["oauth_check", "oauth_import_env", "oauth_revoke", "rotate_encryption_keys", "run_gmail_connector"],
)
def test_help_documents_exit_codes(manage_env, command):
    run = _manage(manage_env, command, "--help")

    assert run.returncode == 0
    assert "Exit codes: 0" in " ".join(run.stdout.split())
