"""The heartbeat: keep every refresh token alive and prove its scopes still work.

Google revokes a refresh token unused for six months (7 days while the consent screen is in
"Testing"). Serving a cached access token does not use the refresh token, so a heartbeat always
makes a real refresh grant (:func:`oauth.tokens.credential_refresh`), then touches one cheap API
per granted product (:mod:`connectors.probes`); a 403 there marks the grant ``missing_scope``.

Two ways to run a sweep, one selection and one per-credential step:

* Celery beat -> ``oauth.tasks.heartbeat_sweep`` -> one ``oauth.tasks.credential_heartbeat`` per
  due credential (the workers' concurrency bounds the sweep);
* ``manage.py oauth_heartbeat`` -> :func:`heartbeat_sweep_run`, in-process with a bounded pool of
  threads, each with its own database connection (closed when the thread is done).
"""
from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import queue
import threading
from collections import Counter

import structlog
from django.db import connection, connections, transaction
from django.db.models import Q
from django.utils import timezone

from . import metrics
from .app_settings import oauth_settings
from .exceptions import ClientMisconfigured, CredentialError, ReconsentRequired, TransientGoogleError
from .models import AuditAction, CredentialState, GoogleCredential, HeartbeatRun
from .services import audit_record
from .tokens import credential_refresh_row

logger = structlog.get_logger("oauth.heartbeat")

#: Outcome of a credential whose refresh failed transiently but is not yet 'refresh_failing'.
RETRYING = "retrying"


def _now() -> dt.datetime:
    return timezone.now()


# --- selection ------------------------------------------------------------------------------------
def credentials_due_for_heartbeat(*, now: dt.datetime) -> list[int]:
    """Ids of live credentials neither refreshed nor used within OAUTH_HEARTBEAT_WINDOW.

    Same rule as :meth:`GoogleCredential.is_due_for_heartbeat`, as one query.
    """
    cutoff = now - dt.timedelta(seconds=float(oauth_settings.OAUTH_HEARTBEAT_WINDOW))
    return list(
        GoogleCredential.objects.exclude(
            state__in=[CredentialState.EXPIRED, CredentialState.MISCONFIGURED]
        )
        .filter(revoked_at__isnull=True)
        .filter(Q(last_refreshed_at__isnull=True) | Q(last_refreshed_at__lte=cutoff))
        .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=cutoff))
        .order_by("last_refreshed_at", "pk")
        .values_list("pk", flat=True)
    )


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
    """
    try:
        credential, token = credential_refresh_row(
            credential_id=credential_id, actor=actor, since=not_before, cache=False
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
    from connectors.probes import credential_probe

    results = credential_probe(credential=credential, access_token=access_token)
    row = probe_results_store(credential=credential, results=results, actor=actor)
    if row.state != CredentialState.CONNECTED:
        return row.state
    granted = (row.credentials or {}).get("scopes")
    if granted is None:
        return row.effective_state()
    from .scopes import missing_scopes

    missing = missing_scopes(granted=granted, required=oauth_settings.OAUTH_REQUIRED_SCOPES)
    return CredentialState.MISSING_SCOPE if missing else CredentialState.CONNECTED


def probe_results_store(
    *, credential: GoogleCredential, results: dict[str, str], actor: str
) -> GoogleCredential:
    """Record API probe results (heartbeat or the admin's "Test"): last_probed_at, a 403 turns
    the state to missing_scope and a clean probe clears it, one audit event. Returns the row."""
    from connectors.probes import MISSING_SCOPE, OK

    now = _now()
    all_ok = bool(results) and all(outcome == OK for outcome in results.values())
    outcome = MISSING_SCOPE if MISSING_SCOPE in results.values() else ("ok" if all_ok else "error")
    row = credential
    if outcome == "ok" and credential.state != CredentialState.MISSING_SCOPE or outcome == "error":
        # Nothing to decide about the state: one UPDATE, no lock.
        GoogleCredential.objects.filter(pk=credential.pk).update(last_probed_at=now)
        row.last_probed_at = now
    else:
        with transaction.atomic():
            row = GoogleCredential.objects.select_for_update(of=("self",)).get(pk=credential.pk)
            fields = ["last_probed_at", "updated_at"]
            row.last_probed_at = now
            if outcome == MISSING_SCOPE and row.state == CredentialState.CONNECTED:
                row.state = CredentialState.MISSING_SCOPE
                row.last_error_at = now
                row.last_error_code = "insufficient_scope"
                missing = ", ".join(api for api, o in results.items() if o == MISSING_SCOPE)
                row.last_error_detail = (
                    f"Google refused the {missing} API with 403 (insufficient scope or API "
                    "disabled). Reconnect the account from the dashboard (/) and grant every "
                    "requested scope."
                )
                fields += ["state", "last_error_at", "last_error_code", "last_error_detail"]
            elif all_ok and row.state == CredentialState.MISSING_SCOPE:
                row.state = CredentialState.CONNECTED
                fields.append("state")
            row.save(update_fields=fields)
    audit_record(
        action=AuditAction.PROBED, actor=actor, credential=row, outcome=outcome, detail=results
    )
    return row


# --- a sweep ----------------------------------------------------------------------------------------
def heartbeat_run_start(*, trigger: str, selected: int, now: dt.datetime) -> HeartbeatRun:
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


def _heartbeat_outcome(*, credential_id: int, actor: str, not_before: dt.datetime) -> str:
    """One credential of an in-process sweep; never raises (one bad credential never stops it)."""
    try:
        outcome = credential_heartbeat(credential_id=credential_id, actor=actor, not_before=not_before)
    except TransientGoogleError:
        state = GoogleCredential.objects.filter(pk=credential_id).values_list("state", flat=True).first()
        outcome = state if state == CredentialState.REFRESH_FAILING else RETRYING
    except Exception:
        logger.exception("Heartbeat failed for one credential", credential_id=credential_id)
        outcome = "error"
    metrics.HEARTBEAT_RESULTS.labels(outcome).inc()
    return outcome


def _sweep_worker(
    ids: queue.SimpleQueue, outcomes: Counter, lock: threading.Lock, actor, not_before, close=True
) -> None:
    try:
        while True:
            try:
                credential_id = ids.get_nowait()
            except queue.Empty:
                return
            outcome = _heartbeat_outcome(credential_id=credential_id, actor=actor, not_before=not_before)
            with lock:
                outcomes[outcome] += 1
    finally:
        if close:
            connection.close()  # this thread's own connection


#: Below this many credentials a sweep stays in one process (forking costs more than it saves).
MIN_CREDENTIALS_PER_EXTRA_PROCESS = 200


def _sweep_threads(ids: list[int], *, threads: int, actor: str, not_before: dt.datetime) -> Counter:
    work: queue.SimpleQueue = queue.SimpleQueue()
    for credential_id in ids:
        work.put(credential_id)
    outcomes: Counter = Counter()
    lock = threading.Lock()
    if connection.vendor == "sqlite" or connection.in_atomic_block:
        # One connection only (SQLite file, or a caller's transaction the threads could not see).
        _sweep_worker(work, outcomes, lock, actor, not_before, close=False)
        return outcomes
    pool = [
        threading.Thread(
            target=_sweep_worker, args=(work, outcomes, lock, actor, not_before),
            name=f"heartbeat-{i}", daemon=True,
        )
        for i in range(min(threads, max(1, len(ids))))
    ]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return outcomes


def _sweep_process(args) -> dict[str, int]:
    """One forked process of a large sweep: its share of the credentials, on its own threads."""
    ids, threads, actor, not_before = args
    from connectors.probes import session as probe_session

    from .google.http import session as oauth_session

    # Connections inherited from the parent belong to it: start with fresh ones.
    oauth_session.close()
    probe_session.close()
    try:
        return dict(_sweep_threads(ids, threads=threads, actor=actor, not_before=not_before))
    finally:
        connection.close()


def _process_count(requested: int | None, selected: int) -> int:
    wanted = int(requested if requested is not None else oauth_settings.OAUTH_HEARTBEAT_PROCESSES)
    if wanted <= 0:
        wanted = os.cpu_count() or 1
    return max(1, min(wanted, selected // MIN_CREDENTIALS_PER_EXTRA_PROCESS or 1))


def heartbeat_sweep_run(
    *,
    trigger: str,
    all_credentials: bool = False,
    account: str | None = None,
    concurrency: int | None = None,
    processes: int | None = None,
) -> HeartbeatRun:
    """Run a sweep now, in this process, ``concurrency`` credentials at a time; returns the run.

    A refresh is mostly waiting on Google, so threads overlap the waits; but each one also costs
    a few milliseconds of CPU (HTTP, ORM, encryption, logging) under one GIL. A large sweep is
    therefore split over ``processes`` forked processes (OAUTH_HEARTBEAT_PROCESSES, 0 = one per
    CPU), the ``concurrency`` threads shared between them.
    """
    now = _now()
    selected = heartbeat_selection(now=now, all_credentials=all_credentials, account=account)
    run = heartbeat_run_start(trigger=trigger, selected=len(selected), now=now)
    concurrency = max(1, int(concurrency or oauth_settings.OAUTH_HEARTBEAT_CONCURRENCY))
    actor = f"process:heartbeat:{trigger}"
    count = _process_count(processes, len(selected))
    if count > 1 and connection.vendor == "postgresql" and not connection.in_atomic_block:
        connections.close_all()  # no connection may cross the fork
        chunks = [selected[i::count] for i in range(count)]
        per_process = max(1, concurrency // count)
        with multiprocessing.get_context("fork").Pool(count) as pool:
            results = pool.map(_sweep_process, [(chunk, per_process, actor, now) for chunk in chunks])
        outcomes: Counter = Counter()
        for result in results:
            outcomes.update(result)
    else:
        outcomes = _sweep_threads(selected, threads=concurrency, actor=actor, not_before=now)
    run.outcomes = {str(outcome): count for outcome, count in outcomes.items()}
    run.finished_at = _now()
    run.save(update_fields=["outcomes", "finished_at"])
    logger.info(
        "Heartbeat sweep finished",
        trigger=trigger, selected=len(selected), outcomes=run.outcomes, processes=count,
        duration_s=round((run.finished_at - run.started_at).total_seconds(), 2),
    )
    return run


__all__ = [
    "credential_heartbeat",
    "credentials_due_for_heartbeat",
    "heartbeat_run_record_outcomes",
    "heartbeat_sweep_run",
]
