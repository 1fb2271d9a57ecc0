"""Retention: deleting audit events, heartbeat runs and operator action runs past their age.

One domain function, :func:`records_prune`, called by ``manage.py oauth_prune`` and by the daily
beat task ``oauth.tasks.records_prune`` (like Django's ``clearsessions``). Rows go in batches of
``batch_size`` (short transactions: writers are never blocked for long, whatever the backlog).

The audit log is append-only for every other code path (``AuditEvent.objects.delete()`` raises).
Ageing out old events is the one exception, and it is deliberate: this module deletes them with
a raw ``DELETE ... WHERE id IN (SELECT ... LIMIT n)``, so no ORM path can delete audit events by
accident. Keeping records longer is a setting (OAUTH_AUDIT_RETENTION_DAYS,
OAUTH_RUN_RETENTION_DAYS; 0 keeps them forever), see docs/runbook.md.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone

from .app_settings import oauth_settings
from .models import ActionRun, AuditEvent, HeartbeatRun

logger = logging.getLogger("oauth.retention")

BATCH_SIZE = 1000


def _now() -> dt.datetime:
    return timezone.now()


@dataclass
class PruneResult:
    """Rows deleted (or, with ``dry_run``, that would be) per kind, and the cut-offs used."""

    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)
    cutoffs: dict[str, dt.datetime | None] = field(default_factory=dict)


def _cutoff(days: int | None, *, now: dt.datetime) -> dt.datetime | None:
    if days is None or int(days) <= 0:
        return None  # kept forever
    return now - dt.timedelta(days=int(days))


def _audit_events_delete(*, before: dt.datetime, batch_size: int) -> int:
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            # the table name is our own model's (quoted); the values are parameters
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN "
                f"(SELECT id FROM {table} WHERE created_at < %s ORDER BY id LIMIT %s)",
                # stored as the backend stores the column (SQLite keeps naive UTC text)
                [connection.ops.adapt_datetimefield_value(before), batch_size],
            )
            count = cursor.rowcount
        deleted += count
        if count < batch_size:
            return deleted


def _orm_delete(queryset, *, batch_size: int) -> int:
    deleted = 0
    while True:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        with transaction.atomic():
            queryset.model.objects.filter(pk__in=ids).delete()
        deleted += len(ids)


def records_prune(
    *,
    audit_days: int | None = None,
    run_days: int | None = None,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
) -> PruneResult:
    """Delete audit events older than ``audit_days`` (default OAUTH_AUDIT_RETENTION_DAYS) and
    heartbeat/action runs older than ``run_days`` (default OAUTH_RUN_RETENTION_DAYS); 0 keeps
    that kind forever. ``dry_run`` only counts."""
    now = _now()
    if audit_days is None:
        audit_days = int(oauth_settings.OAUTH_AUDIT_RETENTION_DAYS)
    if run_days is None:
        run_days = int(oauth_settings.OAUTH_RUN_RETENTION_DAYS)
    result = PruneResult(dry_run=dry_run)
    audit_before = _cutoff(audit_days, now=now)
    run_before = _cutoff(run_days, now=now)
    result.cutoffs = {"audit_events": audit_before, "heartbeat_runs": run_before,
                      "action_runs": run_before}
    old = {
        "audit_events": AuditEvent.objects.filter(created_at__lt=audit_before) if audit_before else None,
        "heartbeat_runs": HeartbeatRun.objects.filter(started_at__lt=run_before) if run_before else None,
        "action_runs": ActionRun.objects.filter(created_at__lt=run_before) if run_before else None,
    }
    for kind, queryset in old.items():
        if queryset is None:
            result.counts[kind] = 0
        elif dry_run:
            result.counts[kind] = queryset.count()
        elif kind == "audit_events":
            result.counts[kind] = _audit_events_delete(before=audit_before, batch_size=batch_size)
        else:
            result.counts[kind] = _orm_delete(queryset, batch_size=batch_size)
    logger.info(
        "%s %s audit events, %s heartbeat runs, %s action runs",
        "Would prune" if dry_run else "Pruned",
        result.counts["audit_events"], result.counts["heartbeat_runs"], result.counts["action_runs"],
    )
    return result
