"""The heartbeat: keep every refresh token alive and prove its scopes still work.

Google revokes a refresh token unused for six months (7 days while the consent screen is in
"Testing"). Serving a cached access token does not use the refresh token, so a heartbeat always
makes a real refresh grant (:func:`oauth.tokens.credential_refresh`), then touches one cheap API
per granted product (:mod:`oauth.google.probes`); a 403 there marks the grant ``missing_scope``.

This module is what ONE heartbeat does (:func:`credential_heartbeat`), which credentials are
due, how a transient failure is reported, and the sweep's record (:class:`HeartbeatRun`). Two
executors run a sweep of them:

* Celery beat -> ``oauth.tasks.heartbeat_sweep`` -> ``oauth.tasks.credential_heartbeat`` /
  ``heartbeat_batch`` tasks (the workers' concurrency bounds the sweep);
* ``manage.py oauth_heartbeat`` -> :func:`oauth.sweep.heartbeat_sweep_run`, in-process with a
  bounded pool of threads.
"""
from __future__ import annotations

import datetime as dt
import json

import structlog
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from . import metrics
from .exceptions import ClientMisconfigured, CredentialError, ReconsentRequired
from .google.probes import credential_probe
from .models import AuditAction, CredentialState, GoogleCredential, HeartbeatRun
from .services import audit_record
from .statements import audit_batch, audit_batch_current, update_sql
from .tokens import credential_refresh_row

logger = structlog.get_logger("oauth.heartbeat")

#: Outcome of a credential whose refresh failed transiently but is not yet 'refresh_failing'.
RETRYING = "retrying"


def _now() -> dt.datetime:
    return timezone.now()


# --- selection ------------------------------------------------------------------------------------
def credentials_due_for_heartbeat(*, now: dt.datetime) -> list[int]:
    """Ids of the credentials due for a heartbeat (:meth:`GoogleCredentialQuerySet.due_for_heartbeat`)."""
    return list(GoogleCredential.objects.due_for_heartbeat(now=now).values_list("pk", flat=True))


def heartbeat_selection(
    *, now: dt.datetime, all_credentials: bool = False, account: str | None = None
) -> list[int]:
    """The due credentials; ``all_credentials``: every one; ``account``: that one (or raise)."""
    if account:
        from .selectors import credential_get

        return [credential_get(account=account).pk]
    if all_credentials:
        return list(GoogleCredential.objects.order_by("pk").values_list("pk", flat=True))
    return credentials_due_for_heartbeat(now=now)


# --- one credential --------------------------------------------------------------------------------
def credential_heartbeat(
    *, credential_id: int, actor: str, not_before: dt.datetime | None = None
) -> str:
    """Refresh one credential for real, probe its APIs, record it; returns the outcome (a state).

    ``not_before``: skip the refresh when the credential was already refreshed after that moment
    (a redelivered task of the same sweep, or a connector that refreshed it meanwhile): the
    refresh token was used, which is all a heartbeat is for.

    Raises :class:`TransientGoogleError` when Google failed transiently (after the in-call
    retries), so a Celery task can retry later; the credential's bookkeeping is already stored.

    The refresh's own write is committed under the row lock as soon as Google answers; its audit
    event, the probe time and the probe's event follow in one round trip at the end
    (:func:`oauth.statements.audit_batch`), also when the probe raised.
    """
    with audit_batch():
        return _heartbeat(credential_id=credential_id, actor=actor, not_before=not_before)


def _heartbeat(*, credential_id: int, actor: str, not_before: dt.datetime | None) -> str:
    try:
        credential, token = credential_refresh_row(
            credential_id=credential_id, actor=actor, since=not_before, cache_token=False
        )
    except GoogleCredential.DoesNotExist:
        return "deleted"
    except ReconsentRequired:
        return CredentialState.EXPIRED
    except ClientMisconfigured:
        return CredentialState.MISCONFIGURED
    except CredentialError:
        return "no_refresh_token"
    return credential_probe_record(credential=credential, access_token=token.value, actor=actor)


def credential_probe_record(*, credential: GoogleCredential, access_token: str, actor: str) -> str:
    """Probe the granted APIs and store what was learned; returns the credential's state."""
    results = credential_probe(granted=credential.granted_scope_list(), access_token=access_token)
    row = probe_results_store(credential=credential, results=results, actor=actor)
    return row.effective_state(client_configured=True)


def probe_results_store(
    *, credential: GoogleCredential, results: dict[str, str], actor: str
) -> GoogleCredential:
    """Record API probe results (heartbeat or the admin's "Test") through
    :meth:`GoogleCredential.apply_probe_results`, with one audit event. Returns the row."""
    from .google.probes import MISSING_SCOPE, OK

    now = _now()
    all_ok = bool(results) and all(outcome == OK for outcome in results.values())
    outcome = MISSING_SCOPE if MISSING_SCOPE in results.values() else ("ok" if all_ok else "error")
    row = credential
    if outcome == "ok" and credential.state != CredentialState.MISSING_SCOPE or outcome == "error":
        # Nothing to decide about the state: one UPDATE, no lock (with the audit event in a batch).
        probe_time_store(credential_id=credential.pk, now=now)
        row.last_probed_at = now
    else:
        with transaction.atomic():
            row = GoogleCredential.objects.select_for_update(of=("self",)).get(pk=credential.pk)
            row.save(update_fields=row.apply_probe_results(now=now, results=results))
    audit_record(
        action=AuditAction.PROBED, actor=actor, credential=row, outcome=outcome, detail=results
    )
    return row


def probe_time_store(*, credential_id: int, now: dt.datetime) -> None:
    """Record when the credential was last probed (sent with the audit batch when there is one)."""
    batch = audit_batch_current()
    if batch is None:
        GoogleCredential.objects.filter(pk=credential_id).update(last_probed_at=now)
        return
    batch.also(update_sql(GoogleCredential, ("last_probed_at",))[0], [now, credential_id])


def transient_outcome(*, credential_id: int) -> str:
    """The outcome of a heartbeat that failed transiently: 'refresh_failing' once the grant shows
    it (repeated failures), else 'retrying' (the next attempt may well succeed)."""
    try:
        state = (
            GoogleCredential.objects.filter(pk=credential_id).values_list("state", flat=True).first()
        )
    except DatabaseError:  # the database is restarting: the failure is recorded or will be
        return RETRYING
    return state if state == CredentialState.REFRESH_FAILING else RETRYING


# --- a sweep's record ----------------------------------------------------------------------------------------
def heartbeat_run_start(*, trigger: str, selected: int, now: dt.datetime) -> HeartbeatRun:
    """Record that a sweep started (``/metrics`` and readiness read it)."""
    metrics.HEARTBEAT_RUNS.labels(trigger).inc()
    metrics.HEARTBEAT_LAST_RUN.set(now.timestamp())
    return HeartbeatRun.objects.create(trigger=trigger, started_at=now, selected=selected)


def heartbeat_run_record_outcomes(*, run_id: int, outcomes: dict[str, int]) -> None:
    """Add credentials' outcomes to their run (the tasks of a fan-out report as they finish)."""
    for outcome, count in outcomes.items():
        metrics.HEARTBEAT_RESULTS.labels(outcome).inc(count)
    added = sum(outcomes.values())
    if connection.vendor == "postgresql":
        # One statement: tasks of a fan-out finish concurrently, the row lock lasts one UPDATE.
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                UPDATE {HeartbeatRun._meta.db_table}
                SET outcomes = (
                        SELECT jsonb_object_agg(key, total) FROM (
                            SELECT key, SUM(value::int) AS total FROM (
                                SELECT * FROM jsonb_each_text(outcomes)
                                UNION ALL SELECT * FROM jsonb_each_text(%s::jsonb)
                            ) AS parts GROUP BY key
                        ) AS sums),
                    finished_at = CASE
                        WHEN finished_at IS NULL AND (
                            SELECT COALESCE(SUM(value::int), 0) FROM jsonb_each_text(outcomes)
                        ) + %s >= selected THEN %s ELSE finished_at END
                WHERE id = %s
                """,
                [json.dumps(outcomes), added, _now(), run_id],
            )
        return
    with transaction.atomic():
        run = HeartbeatRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return
        merged = dict(run.outcomes or {})
        for outcome, count in outcomes.items():
            merged[outcome] = merged.get(outcome, 0) + count
        run.outcomes = merged
        fields = ["outcomes"]
        if sum(merged.values()) >= run.selected and run.finished_at is None:
            run.finished_at = _now()
            fields.append("finished_at")
        run.save(update_fields=fields)


__all__ = [
    "credential_heartbeat",
    "credentials_due_for_heartbeat",
    "heartbeat_run_record_outcomes",
    "heartbeat_run_start",
    "transient_outcome",
]
