"""The startup guard: connectors start with a usable credential and stop with a clear banner."""
from __future__ import annotations

import json
import logging
import subprocess

import pytest

from butlers.startup_guard import (
    EXIT_CREDENTIAL_UNUSABLE,
    EXIT_NO_CREDENTIALS,
    require_google_credentials_or_exit,
)
from tests.factories import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, ROOT
from oauth.selectors import DEPRECATED_ENV_VARS

pytestmark = pytest.mark.django_db



def _blocked(capsys, **kwargs) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc_info:
        require_google_credentials_or_exit(caller="gmail-connector", **kwargs)
    return exc_info.value.code, capsys.readouterr().err


def test_passes_with_a_stored_credential(credential_factory, oauth_client_factory, caplog):
    oauth_client_factory()
    credential_factory(email="alice@example.com")

    with caplog.at_level(logging.INFO, logger="butlers.startup_guard"):
        resolved = require_google_credentials_or_exit(caller="gmail-connector")

    assert resolved.source == "db"
    assert resolved.account == "alice@example.com"
    assert any(
        "Google credentials resolved" in r.getMessage() and "gmail-connector" in r.getMessage()
        for r in caplog.records
    )


def test_passes_with_only_the_deprecated_json(monkeypatch, caplog):
    monkeypatch.setenv(
        "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON",
        json.dumps(
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN}
        ),
    )
    with caplog.at_level(logging.INFO, logger="butlers.startup_guard"):
        resolved = require_google_credentials_or_exit(caller="calendar")

    assert resolved.source == "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON"
    assert resolved.refresh_token.reveal() == REFRESH_TOKEN
    assert REFRESH_TOKEN not in caplog.text and CLIENT_SECRET not in caplog.text


def test_blocks_with_a_banner_when_nothing_resolves(capsys):
    code, err = _blocked(capsys)

    assert code == EXIT_NO_CREDENTIALS != 0
    assert "STARTUP BLOCKED: gmail-connector" in err
    assert "http://127.0.0.1:8200/" in err  # the dashboard
    assert "manage.py oauth_import_env" in err
    for name in ("BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON", "GMAIL_REFRESH_TOKEN", "GOOGLE_REFRESH_TOKEN"):
        assert name in err
    assert "must be set to a non-empty JSON object" in err


def test_banner_names_the_configured_dashboard(capsys, settings):
    settings.GOOGLE_OAUTH_REDIRECT_URI = "https://butlers.example.org/api/oauth/google/callback"
    _, err = _blocked(capsys)
    assert "https://butlers.example.org/" in err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON": ""},
            "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON must be set to a non-empty JSON object",
        ),
        (
            {"BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON": "{}"},
            "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON must be set to a non-empty JSON object",
        ),
        (
            {"BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON": "not json " + REFRESH_TOKEN},
            "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON must be set to a non-empty JSON object",
        ),
        (
            {"BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON": '["a list"]'},
            "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON must be set to a non-empty JSON object",
        ),
        (
            {"BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON": json.dumps({"client_id": CLIENT_ID})},
            "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON is missing required field(s): "
            "[client_secret, refresh_token]",
        ),
        (
            {
                "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON": json.dumps(
                    {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "refresh_token": ""}
                )
            },
            "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON is missing required field(s): [refresh_token]",
        ),
        ({"GMAIL_REFRESH_TOKEN": REFRESH_TOKEN}, "GMAIL_CLIENT_ID, GMAIL_CLIENT_SECRET must be set"),
        ({"GOOGLE_REFRESH_TOKEN": ""}, "GOOGLE_REFRESH_TOKEN is set but empty"),
        (
            {"GOOGLE_REFRESH_TOKEN": REFRESH_TOKEN},
            "GOOGLE_REFRESH_TOKEN is set but no OAuth client is configured",
        ),
    ],
)
def test_each_malformed_env_input_gives_the_runbook_message(monkeypatch, capsys, settings, env, message):
    settings.GOOGLE_OAUTH_CLIENT_ID = ""
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    code, err = _blocked(capsys)

    assert code == EXIT_NO_CREDENTIALS
    assert "STARTUP BLOCKED: gmail-connector" in err
    assert message in err
    assert REFRESH_TOKEN not in err and CLIENT_SECRET not in err


def test_expired_credential_blocks_with_reconnect_advice(credential_factory, oauth_client_factory, capsys):
    oauth_client_factory()
    credential_factory(email="alice@example.com", state="expired")

    code, err = _blocked(capsys)

    assert code == EXIT_CREDENTIAL_UNUSABLE
    assert "alice@example.com" in err and "Reconnect" in err


def test_credential_without_any_oauth_client_blocks(credential_factory, capsys, settings):
    settings.GOOGLE_OAUTH_CLIENT_ID = ""
    credential_factory(email="alice@example.com")

    code, err = _blocked(capsys)

    assert code == EXIT_CREDENTIAL_UNUSABLE
    assert "GOOGLE_OAUTH_CLIENT_ID" in err


def test_a_removed_encryption_key_blocks_instead_of_crashing(credential_factory, oauth_client_factory, capsys, settings):
    oauth_client_factory()
    credential_factory(email="alice@example.com")
    from cryptography.fernet import Fernet

    settings.OAUTH_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    code, err = _blocked(capsys)

    assert code == EXIT_CREDENTIAL_UNUSABLE
    assert "OAUTH_ENCRYPTION_KEYS" in err and "Traceback" not in err


# --- the runbook's check: a bare interpreter in the project root --------------------------------
GUARD_SNIPPET = (
    "from butlers.startup_guard import require_google_credentials_or_exit\n"
    "require_google_credentials_or_exit(caller='test')\n"
    "print('Guard passed \u2014 credentials are present')\n"
)


@pytest.fixture
def bare_env(subprocess_env, settings, tmp_path):
    """What a configured deployment exports: DATABASE_URL etc., no DJANGO_SETTINGS_MODULE."""
    env = dict(subprocess_env)
    env.pop("DJANGO_SETTINGS_MODULE")
    for name in DEPRECATED_ENV_VARS:
        env.pop(name, None)
    env.update(
        {
            "DATABASE_URL": env["TEST_DATABASE_URL"],
            "REDIS_URL": settings.REDIS_URL,
            "SECRET_KEY": settings.SECRET_KEY,
            "OAUTH_ENCRYPTION_KEYS": ",".join(settings.OAUTH_ENCRYPTION_KEYS),
            "BUTLERS_VAR_DIR": str(tmp_path),
            "DEBUG": "0",
        }
    )
    return env


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_runbook_guard_snippet_passes_from_a_bare_interpreter(bare_env, python_exe, credential_factory, oauth_client_factory):
    oauth_client_factory()
    credential_factory(email="alice@example.com")
    bare_env["GOOGLE_REFRESH_TOKEN"] = "1//operator-pasted-token"

    run = subprocess.run(
        [python_exe, "-c", GUARD_SNIPPET], cwd=ROOT, env=bare_env, capture_output=True, text=True, timeout=60
    )

    assert run.returncode == 0, run.stderr
    assert "Guard passed" in run.stdout
    assert "Google credentials resolved" in run.stderr + run.stdout
    assert "1//operator-pasted-token" not in run.stderr + run.stdout


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_runbook_guard_snippet_blocks_from_a_bare_interpreter(bare_env, python_exe):
    run = subprocess.run(
        [python_exe, "-c", GUARD_SNIPPET], cwd=ROOT, env=bare_env, capture_output=True, text=True, timeout=60
    )

    assert run.returncode == EXIT_NO_CREDENTIALS
    assert "STARTUP BLOCKED: test" in run.stderr
    assert "Guard passed" not in run.stdout
    assert "Traceback" not in run.stderr
