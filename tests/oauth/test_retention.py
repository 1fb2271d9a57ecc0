"""oauth/retention.py and ``manage.py oauth_prune``: old audit events and runs go, recent ones stay."""
from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from oauth.models import ActionRun, AuditAction, AuditEvent, HeartbeatRun
from oauth.retention import records_prune
from oauth.services import audit_record

pytestmark = pytest.mark.django_db


def _event(days_ago: int) -> AuditEvent:
    event = audit_record(action=AuditAction.REFRESHED, actor="process:test")
    # created_at is auto_now_add and the audit manager refuses updates: age it underneath.
    AuditEvent._base_manager.filter(pk=event.pk).update(
        created_at=timezone.now() - dt.timedelta(days=days_ago)
    )
    return event


def _runs(days_ago: int) -> None:
    when = timezone.now() - dt.timedelta(days=days_ago)
    HeartbeatRun.objects.create(trigger="beat", started_at=when, finished_at=when)
    ActionRun.objects.create(action="refresh", actor="user:op", created_at=when)


def test_prune_deletes_only_records_past_their_retention_in_batches():
    for days in (500, 450, 401, 399, 10):
        _event(days)
    for days in (200, 91, 89, 1):
        _runs(days)

    result = records_prune(batch_size=2)

    assert result.counts == {"audit_events": 3, "heartbeat_runs": 2, "action_runs": 2}
    ages = sorted((timezone.now() - e.created_at).days for e in AuditEvent.objects.all())
    assert ages == [10, 399]
    assert HeartbeatRun.objects.count() == 2 and ActionRun.objects.count() == 2


def test_a_retention_of_zero_keeps_records_forever(settings):
    settings.OAUTH_AUDIT_RETENTION_DAYS = 0
    _event(5000)
    _runs(5000)
    result = records_prune()
    assert result.counts["audit_events"] == 0 and AuditEvent.objects.count() == 1
    assert result.counts["heartbeat_runs"] == 1


def test_the_audit_log_stays_append_only_outside_the_prune():
    _event(1000)
    with pytest.raises(TypeError, match="append-only"):
        AuditEvent.objects.all().delete()


def test_oauth_prune_dry_run_counts_and_deletes_nothing(capsys):
    _event(30)
    _runs(30)
    call_command("oauth_prune", "--older-than", "7", "--dry-run")
    out = capsys.readouterr().out
    assert "Would delete 1 audit events older than 7 days." in out
    assert "Would delete 1 heartbeat runs older than 7 days." in out
    assert AuditEvent.objects.count() == 1 and HeartbeatRun.objects.count() == 1

    call_command("oauth_prune", "--older-than", "7")
    out = capsys.readouterr().out
    assert "Deleted 1 audit events older than 7 days." in out
    assert "Deleted 1 action runs older than 7 days." in out
    assert AuditEvent.objects.count() == 0 and HeartbeatRun.objects.count() == 0


def test_oauth_prune_defaults_to_the_configured_retentions(capsys):
    _event(399)
    call_command("oauth_prune")
    out = capsys.readouterr().out
    assert "Deleted 0 audit events older than 400 days." in out
    assert "older than 90 days" in out


def test_oauth_prune_refuses_a_non_positive_age():
    with pytest.raises(CommandError, match="at least 1 day"):
        call_command("oauth_prune", "--older-than", "0")


def test_the_daily_beat_entry_runs_the_prune(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["oauth-prune"]
    assert entry["task"] == "oauth.tasks.records_prune" and entry["schedule"] == 86400.0
    from oauth.tasks import records_prune as task

    _event(1000)
    assert task.apply().get()["audit_events"] == 1
