"""The Gmail connector in broker mode: another process with only the broker's URL and a service key
(no DATABASE_URL, no OAUTH_ENCRYPTION_KEYS) ingests messages from the fake Google."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from connectors.models import GmailMessage
from oauth.models import AuditEvent
from oauth.service_keys import service_key_create, service_key_revoke
from tests.factories import ROOT
from tests.gunicorn_server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ALICE = "alice@example.com"


@pytest.fixture
def broker(live_server, fake_google, credential_factory):
    """The broker (a live server) holding Alice's grant, three INBOX messages and one sent one."""
    token = fake_google.issue_grant(ALICE, scopes=["openid", "email", "gmail.modify", "calendar"])
    credential_factory(email=ALICE, refresh_token=token, access_token=None, expires_in=None)
    for n in range(1, 4):
        fake_google.add_message(ALICE, subject=f"Hello {n}", sender=f"Friend {n} <f{n}@example.org>")
    fake_google.add_message(ALICE, subject="Sent by me", labels=("SENT",))
    _, key = service_key_create(name="gmail-butler", accounts=[ALICE], scopes=["gmail.readonly"],
                                actor="user:test")
    return live_server.url, key


def _env(url: str, key: str, google_url: str, state_dir) -> dict[str, str]:
    """Nothing of the broker's: no database, no encryption keys, no secret key, no Redis."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "BUTLERS_BROKER_URL": url,
        "BUTLERS_SERVICE_KEY": key,
        "BUTLERS_VAR_DIR": str(state_dir),
        "GOOGLE_API_BASE_URL": google_url,  # the fake Google (Google's own by default)
    }


def _connector(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "run_gmail_connector", "--once"],
        env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=120,
    )


def _local_subjects(state_dir) -> list[str]:
    with sqlite3.connect(state_dir / "butlers.sqlite3") as db:
        return sorted(row[0] for row in db.execute("SELECT subject FROM connectors_gmailmessage"))


def test_a_connector_with_only_the_broker_and_a_key_ingests_messages(broker, fake_google, tmp_path):
    url, key = broker
    env = _env(url, key, fake_google.url, tmp_path)
    assert not {"DATABASE_URL", "OAUTH_ENCRYPTION_KEYS", "SECRET_KEY", "REDIS_URL"} & set(env)

    first = _connector(env)
    restarted = _connector(env)
    fake_google.add_message(ALICE, subject="Brand new")
    again = _connector(env)

    assert first.returncode == 0, first.stdout + first.stderr
    assert "Token broker at" in first.stdout and "1 account(s) can be polled" in first.stdout
    assert f"Polled {ALICE}: 3 new message(s) (baseline)." in first.stdout
    assert f"Polled {ALICE}: 0 new message(s) (history)." in restarted.stdout
    assert f"Polled {ALICE}: 1 new message(s) (history)." in again.stdout
    # The connector's state is its own; the broker's database has none of it.
    assert _local_subjects(tmp_path) == ["Brand new", "Hello 1", "Hello 2", "Hello 3"]
    assert GmailMessage.objects.count() == 0
    # Tokens came from the broker, under the key's name; none was written locally or logged.
    issued = AuditEvent.objects.filter(action="token_api", actor="service-key:gmail-butler", outcome="issued")
    assert issued.count() == 3
    local = (tmp_path / "butlers.sqlite3").read_bytes()
    output = first.stdout + first.stderr + again.stdout + again.stderr
    for token in fake_google.access_tokens:
        assert token.encode() not in local and token not in output
    assert key not in output and key.encode() not in local
    assert "Traceback" not in first.stderr + again.stderr


def test_a_revoked_key_blocks_the_connector_with_what_to_do(broker, fake_google, tmp_path):
    url, key = broker
    service_key_revoke(name="gmail-butler", actor="user:test")

    result = _connector(_env(url, key, fake_google.url, tmp_path))

    assert result.returncode == 3
    assert "STARTUP BLOCKED: gmail-connector" in result.stderr
    assert "gmail-butler' was revoked" in result.stderr and "service_key_create" in result.stderr
    assert key not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_an_unreachable_broker_blocks_the_connector(fake_google, tmp_path):
    result = _connector(_env(f"http://127.0.0.1:{free_port()}", "bk_test-key", fake_google.url, tmp_path))

    assert result.returncode == 5
    assert "did not answer" in result.stderr and "BUTLERS_BROKER_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_dead_grant_stops_the_connector_and_points_at_the_brokers_dashboard(broker, fake_google, tmp_path):
    url, key = broker
    env = _env(url, key, fake_google.url, tmp_path)
    assert _connector(env).returncode == 0
    # Google kills the grant and the token the broker has cached: the connector's 401 makes the
    # broker refresh (force_refresh), which finds the grant dead.
    fake_google.expire_grant(ALICE)
    fake_google.revoke_access_tokens(ALICE)

    result = _connector(env)

    assert result.returncode == 4, result.stdout + result.stderr
    assert "STARTUP BLOCKED: gmail-connector" in result.stderr
    assert "reconnect" in result.stderr.lower() and f"{url}/" in result.stderr
    assert "Traceback" not in result.stderr
    outcomes = list(AuditEvent.objects.filter(action="token_api").values_list("outcome", flat=True))
    assert "reconsent_required" in outcomes
