"""oauth/heartbeat.py and manage.py oauth_heartbeat: real refresh grants, probes, per-state runs."""
from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.utils import timezone

from oauth.heartbeat import credentials_due_for_heartbeat
from oauth.sweep import heartbeat_sweep_run
from oauth.models import AuditAction, AuditEvent, GoogleCredential, HeartbeatRun

pytestmark = pytest.mark.django_db

DAY = dt.timedelta(days=1)


@pytest.fixture(autouse=True)
def _fast_backoff(settings):
    settings.OAUTH_REFRESH_BACKOFF = 0.01
    settings.OAUTH_REFRESH_RETRIES = 1


@pytest.fixture
def grant(fake_google, credential_factory):
    """A stored credential backed by a live grant at the fake Google."""

    def make(email, scopes=("openid", "email", "gmail.modify", "calendar"), **kwargs):
        refresh_token = fake_google.issue_grant(email, scopes=list(scopes))
        return credential_factory(email=email, refresh_token=refresh_token, scopes=scopes, **kwargs)

    return make


def test_due_means_neither_refreshed_nor_used_within_the_window(credential_factory, settings):
    settings.OAUTH_HEARTBEAT_WINDOW = 86400
    now = timezone.now()
    never = credential_factory(email="never@example.com")
    old = credential_factory(email="old@example.com", last_refreshed_at=now - 2 * DAY)
    refreshed = credential_factory(email="fresh@example.com", last_refreshed_at=now - dt.timedelta(hours=2))
    used = credential_factory(
        email="used@example.com", last_refreshed_at=now - 3 * DAY, last_used_at=now - dt.timedelta(hours=1)
    )
    expired = credential_factory(email="dead@example.com", state="expired")
    revoked = credential_factory(email="gone@example.com", revoked_at=now)

    due = set(credentials_due_for_heartbeat(now=now))

    assert due == {never.pk, old.pk}
    assert not due & {refreshed.pk, used.pk, expired.pk, revoked.pk}


def test_a_sweep_refreshes_for_real_even_when_the_cached_token_is_fresh(fake_google, grant):
    credential = grant("alice@example.com", last_refreshed_at=timezone.now() - 2 * DAY)

    run = heartbeat_sweep_run(trigger="test")

    assert fake_google.refreshes_for("alice@example.com") == 1
    row = GoogleCredential.objects.get(pk=credential.pk)
    assert row.last_refreshed_at > timezone.now() - dt.timedelta(minutes=1)
    assert row.last_probed_at is not None
    assert run.selected == 1 and run.outcomes == {"connected": 1}
    assert run.finished_at is not None
    assert AuditEvent.objects.filter(action=AuditAction.PROBED, outcome="ok").count() == 1


def test_a_403_on_probe_marks_missing_scope_and_a_later_ok_clears_it(fake_google, grant):
    credential = grant("bob@example.com")
    fake_google.fail_api(1, status=403, prefix="/calendar")  # e.g. the Calendar API disabled

    run = heartbeat_sweep_run(trigger="test", all_credentials=True)

    row = GoogleCredential.objects.get(pk=credential.pk)
    assert row.state == "missing_scope"
    assert "calendar" in row.last_error_detail
    assert run.outcomes == {"missing_scope": 1}

    heartbeat_sweep_run(trigger="test", all_credentials=True)
    assert GoogleCredential.objects.get(pk=credential.pk).state == "connected"


def test_a_narrowed_grant_shows_missing_scope(fake_google, credential_factory):
    # Google's grant lacks calendar: the refresh answer says so and the scopes follow it.
    refresh_token = fake_google.issue_grant("bob@example.com", scopes=["openid", "email", "gmail.modify"])
    credential = credential_factory(email="bob@example.com", refresh_token=refresh_token)

    run = heartbeat_sweep_run(trigger="test", all_credentials=True)

    row = GoogleCredential.objects.get(pk=credential.pk)
    assert row.missing_scopes() == ["https://www.googleapis.com/auth/calendar"]
    assert run.outcomes == {"missing_scope": 1}


def test_outcomes_count_each_state(fake_google, grant):
    grant("ok@example.com")
    grant("dead@example.com")
    fake_google.expire_grant("dead@example.com")

    run = heartbeat_sweep_run(trigger="test", all_credentials=True)

    assert run.outcomes == {"connected": 1, "expired": 1}
    assert GoogleCredential.objects.get(email="dead@example.com").state == "expired"


def test_a_transient_outage_is_retrying_not_expired(fake_google, grant):
    credential = grant("alice@example.com")
    fake_google.fail_token(10, status=503)

    run = heartbeat_sweep_run(trigger="test", all_credentials=True)

    assert run.outcomes == {"retrying": 1}
    assert GoogleCredential.objects.get(pk=credential.pk).state == "connected"


def test_account_sweeps_only_that_account(fake_google, grant):
    grant("alice@example.com")
    grant("bob@example.com")

    run = heartbeat_sweep_run(trigger="test", account="bob@example.com")

    assert run.selected == 1
    assert fake_google.refreshes_for("bob@example.com") == 1
    assert fake_google.refreshes_for("alice@example.com") == 0


def test_command_prints_a_per_state_summary(fake_google, grant, capsys):
    grant("alice@example.com")
    grant("bob@example.com")

    call_command("oauth_heartbeat", "--all")

    out = capsys.readouterr().out
    assert "Heartbeat: 2 credential(s)" in out
    assert "connected: 2" in out
    assert HeartbeatRun.objects.get().trigger == "command"


def test_a_sweep_called_from_code_leaves_the_callers_memory_collectable(fake_google, grant):
    """Only ``manage.py oauth_heartbeat`` run as its own process freezes what start-up loaded
    out of the garbage collector's way; a caller that lives on (a test, a shell) is left as it was."""
    import gc

    grant("alice@example.com")
    frozen = gc.get_freeze_count()
    call_command("oauth_heartbeat", "--all")
    assert gc.get_freeze_count() == frozen


def test_command_exits_non_zero_when_a_credential_needs_attention(fake_google, grant, capsys):
    grant("dead@example.com")
    fake_google.expire_grant("dead@example.com")

    with pytest.raises(SystemExit) as excinfo:
        call_command("oauth_heartbeat", "--all")

    assert excinfo.value.code == 1
    captured = capsys.readouterr()
    assert "expired: 1" in captured.out
    assert "remediation" in captured.err


def test_command_unknown_account_is_a_clear_error(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError) as excinfo:
        call_command("oauth_heartbeat", "--account", "nobody@example.com")

    assert "nobody@example.com" in str(excinfo.value)


@pytest.mark.django_db(transaction=True)
def test_a_threaded_sweep_refreshes_each_credential_once(fake_google, grant):
    fake_google.token_latency = 0.05
    for i in range(20):
        grant(f"user{i}@example.com")

    run = heartbeat_sweep_run(trigger="test", all_credentials=True, concurrency=8)

    assert run.outcomes == {"connected": 20}
    assert fake_google.stats["refreshes"] == 20
    assert 1 < fake_google.stats["max_in_flight_refreshes"] <= 8


def test_a_sweeps_threads_log_through_one_writer_and_every_line_arrives():
    """During an in-process sweep the threads' records go to one writer thread; two sweeps at
    once share it; when the last ends every line has been written and the handlers are back."""
    import logging
    import threading

    from oauth import sweep

    written = []

    class Keep(logging.Handler):
        def emit(self, record):
            written.append(record.getMessage())

    root, keep = logging.getLogger(), Keep(level=logging.WARNING)
    root.addHandler(keep)
    before = list(root.handlers)

    def log_lines(i):
        for j in range(50):
            logging.getLogger("oauth.heartbeat").warning("line %s-%s", i, j)

    try:
        with sweep._logging_off_the_threads():
            with sweep._logging_off_the_threads():  # a second sweep in the same process
                threads = [threading.Thread(target=log_lines, args=(i,)) for i in range(8)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            assert keep not in root.handlers  # the first sweep still hands over
        assert root.handlers == before
        assert sorted(written) == sorted(f"line {i}-{j}" for i in range(8) for j in range(50))
    finally:
        root.removeHandler(keep)


def _row_updates() -> tuple[int, int]:
    """Updates of google_oauth_credentials in this transaction: (all, in place on their page)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_stat_get_xact_tuples_updated(%s::regclass),"
            " pg_stat_get_xact_tuples_hot_updated(%s::regclass)",
            [GoogleCredential._meta.db_table] * 2,
        )
        return cursor.fetchone()


def test_a_heartbeat_rewrites_no_index_of_the_credentials_table(fake_google, grant):
    """Every refresh and probe write is a HOT update (the row's next version on its own page, no
    new index entries): the table and its indexes do not grow with each hourly refresh."""
    from oauth.heartbeat import credential_heartbeat

    credential = grant("hot@example.com", last_refreshed_at=timezone.now() - 2 * DAY)
    updated_before, hot_before = _row_updates()

    outcome = credential_heartbeat(credential_id=credential.pk, actor="test")

    updated, hot = _row_updates()
    assert outcome == "connected" and fake_google.refreshes_for("hot@example.com") == 1
    assert updated - updated_before == 2  # the refresh's write and the probe time
    assert hot - hot_before == updated - updated_before
