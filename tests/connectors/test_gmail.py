"""The Gmail poller against the fake Google: every new message recorded exactly once."""
from __future__ import annotations

import select
import signal
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from tests.factories import CLIENT_ID, CLIENT_SECRET, ROOT
from connectors.gmail import gmail_poll
from connectors.models import GmailMailbox, GmailMessage
from connectors.tasks import gmail_poll_all
from oauth.selectors import DEPRECATED_ENV_VARS

pytestmark = pytest.mark.django_db
EMAIL = "alice@example.com"



@pytest.fixture
def mailbox(fake_google, credential_factory):
    """Alice's grant (no access token yet) and three INBOX messages plus one sent message."""
    token = fake_google.issue_grant(EMAIL, scopes=["openid", "email", "gmail.modify", "calendar"])
    credential_factory(email=EMAIL, refresh_token=token, access_token=None, expires_in=None)
    for n in range(1, 4):
        fake_google.add_message(EMAIL, subject=f"Hello {n}", sender=f"Friend {n} <f{n}@example.org>")
    fake_google.add_message(EMAIL, subject="Sent by me", labels=("SENT",))
    return fake_google


def _subjects() -> list[str]:
    return sorted(GmailMessage.objects.values_list("subject", flat=True))


def test_first_poll_baselines_and_records_recent_inbox_messages(mailbox):
    result = gmail_poll()

    assert (result.email, result.mode, result.ingested) == (EMAIL, "baseline", 3)
    assert _subjects() == ["Hello 1", "Hello 2", "Hello 3"]
    message = GmailMessage.objects.get(subject="Hello 2")
    assert message.sender == "Friend 2 <f2@example.org>"
    assert message.thread_id and message.snippet and message.received_at is not None
    assert message.labels == ["INBOX"]
    box = GmailMailbox.objects.get(email=EMAIL)
    assert box.history_id == result.history_id != "" and box.baselined_at is not None


def test_second_poll_ingests_nothing_and_a_new_message_exactly_once(mailbox):
    gmail_poll()

    assert gmail_poll().ingested == 0
    mailbox.add_message(EMAIL, subject="Brand new")
    second = gmail_poll()
    third = gmail_poll()

    assert (second.mode, second.ingested) == ("history", 1)
    assert third.ingested == 0
    assert GmailMessage.objects.filter(subject="Brand new").count() == 1
    assert GmailMessage.objects.count() == 4


def test_a_replayed_history_page_records_nothing_twice(mailbox):
    first = gmail_poll()
    mailbox.add_message(EMAIL, subject="Brand new")
    gmail_poll()
    # A crash after storing but before moving the cursor: the same page comes again.
    GmailMailbox.objects.filter(email=EMAIL).update(history_id=first.history_id)

    replay = gmail_poll()

    assert replay.ingested == 0
    assert GmailMessage.objects.count() == 4


def test_history_pages_are_followed(mailbox, monkeypatch):
    monkeypatch.setattr("connectors.gmail.HISTORY_PAGE_SIZE", 2)
    gmail_poll()
    for n in range(5):
        mailbox.add_message(EMAIL, subject=f"Batch {n}")

    assert gmail_poll().ingested == 5
    assert GmailMessage.objects.filter(subject__startswith="Batch").count() == 5


def test_a_stale_cursor_falls_back_to_a_bounded_relist_without_duplicates(mailbox, settings):
    gmail_poll()
    mailbox.expire_history(EMAIL)  # Google forgot the history: history.list answers 404
    mailbox.add_message(EMAIL, subject="After the gap")
    settings.GMAIL_RELIST_LIMIT = 3

    result = gmail_poll()
    after = gmail_poll()

    assert (result.mode, result.ingested) == ("relist", 1)
    assert GmailMessage.objects.count() == 4
    assert after.mode == "history" and after.ingested == 0
    assert GmailMailbox.objects.get(email=EMAIL).last_relisted_at is not None


def test_baseline_is_bounded(mailbox, settings):
    settings.GMAIL_BASELINE_MESSAGES = 2

    assert gmail_poll().ingested == 2
    assert _subjects() == ["Hello 2", "Hello 3"]  # the most recent ones


def test_a_401_forces_one_refresh_and_the_poll_goes_on(mailbox):
    gmail_poll()
    mailbox.revoke_access_tokens(EMAIL)
    mailbox.add_message(EMAIL, subject="Brand new")

    assert gmail_poll().ingested == 1
    assert mailbox.refreshes_for(EMAIL) == 2


def test_an_expired_grant_stops_the_connector_with_the_guard_banner(mailbox, capfd):
    call_command("run_gmail_connector", "--once")
    mailbox.expire_grant(EMAIL)
    mailbox.revoke_access_tokens(EMAIL)

    with pytest.raises(SystemExit) as exc_info:
        call_command("run_gmail_connector", "--once")

    assert exc_info.value.code == 4
    err = capfd.readouterr().err
    assert "STARTUP BLOCKED: gmail-connector" in err and "Reconnect" in err
    # and the next start is refused up front, before any call to Google
    calls = len(mailbox.stats["api_calls"])
    with pytest.raises(SystemExit):
        call_command("run_gmail_connector", "--once")
    assert len(mailbox.stats["api_calls"]) == calls


def test_a_dead_secondary_account_does_not_stop_the_others(mailbox, credential_factory, capfd):
    bob_token = mailbox.issue_grant("bob@example.com")
    credential_factory(email="bob@example.com", refresh_token=bob_token, access_token=None, expires_in=None)
    mailbox.expire_grant("bob@example.com")

    with pytest.raises(CommandError, match="1 Gmail poll"):
        call_command("run_gmail_connector", "--once")

    captured = capfd.readouterr()
    assert f"Polled {EMAIL}: 3 new message(s) (baseline)." in captured.out
    assert "Gmail poll of bob@example.com failed: Failed to refresh access token" in captured.err
    # next time only the live account is polled
    call_command("run_gmail_connector", "--once")
    assert "bob@example.com" not in capfd.readouterr().err


def test_the_connector_will_not_start_without_credentials(fake_google, capfd):
    with pytest.raises(SystemExit) as exc_info:
        call_command("run_gmail_connector", "--once")

    assert exc_info.value.code == 3
    assert "STARTUP BLOCKED: gmail-connector" in capfd.readouterr().err


def test_beat_task_polls_every_account_and_survives_a_dead_one(mailbox, credential_factory):
    bob_token = mailbox.issue_grant("bob@example.com")
    credential_factory(email="bob@example.com", refresh_token=bob_token, access_token=None, expires_in=None)
    mailbox.add_message("bob@example.com", subject="For Bob")
    carol_token = mailbox.issue_grant("carol@example.com")
    credential_factory(email="carol@example.com", refresh_token=carol_token, access_token=None, expires_in=None)
    mailbox.expire_grant("carol@example.com")

    outcomes = gmail_poll_all()

    assert outcomes[EMAIL] == "3 new (baseline)"
    assert outcomes["bob@example.com"] == "1 new (baseline)"
    assert outcomes["carol@example.com"].startswith("failed: Failed to refresh access token")
    assert GmailMessage.objects.filter(mailbox__email="bob@example.com").count() == 1


def test_beat_task_skips_accounts_without_gmail_scope(fake_google, credential_factory):
    token = fake_google.issue_grant(EMAIL, scopes=["calendar"])
    credential_factory(email=EMAIL, refresh_token=token, scopes=("calendar",), access_token=None, expires_in=None)

    assert gmail_poll_all() == {}
    assert fake_google.stats["api_calls"] == []


# --- real processes: restarts and SIGTERM ----------------------------------------------------------
@pytest.fixture
def connector_env(subprocess_env, fake_google):
    env = dict(subprocess_env)
    for name in DEPRECATED_ENV_VARS:
        env.pop(name, None)
    env.update(fake_google.env())
    env.update({"GOOGLE_OAUTH_CLIENT_ID": CLIENT_ID, "GOOGLE_OAUTH_CLIENT_SECRET": CLIENT_SECRET})
    return env


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), "run_gmail_connector", *args]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_restarted_connector_does_not_ingest_again(mailbox, connector_env):
    first = subprocess.run(_manage("--once"), env=connector_env, capture_output=True, text=True, timeout=60)
    restarted = subprocess.run(_manage("--once"), env=connector_env, capture_output=True, text=True, timeout=60)
    mailbox.add_message(EMAIL, subject="Brand new")
    again = subprocess.run(_manage("--once"), env=connector_env, capture_output=True, text=True, timeout=60)

    assert first.returncode == 0, first.stderr
    assert f"Polled {EMAIL}: 3 new message(s) (baseline)." in first.stdout
    assert f"Polled {EMAIL}: 0 new message(s) (history)." in restarted.stdout
    assert f"Polled {EMAIL}: 1 new message(s) (history)." in again.stdout
    assert GmailMessage.objects.count() == 4
    assert "Google credentials resolved" in first.stderr + first.stdout


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_long_lived_connector_stops_cleanly_on_sigterm(mailbox, connector_env):
    process = subprocess.Popen(
        _manage("--interval", "0.2"), env=connector_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen: list[str] = []
    try:
        # Wait (bounded) until it has polled once, then ask it to stop the way systemd/docker do.
        ready, _, _ = select.select([process.stdout], [], [], 60)
        while ready:
            line = process.stdout.readline()
            seen.append(line)
            if not line or line.startswith("Polled"):
                break
            ready, _, _ = select.select([process.stdout], [], [], 60)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert any(line.startswith("Polled") for line in seen), err
    assert process.returncode == 0, err
    assert "Gmail connector stopped (SIGTERM)." in out
    assert "Traceback" not in err
    assert GmailMessage.objects.count() == 3
