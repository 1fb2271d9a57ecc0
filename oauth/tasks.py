"""Celery tasks of the OAuth app: thin wrappers that load by id, call one service, own the retries.

``heartbeat_sweep`` runs from the beat schedule (``settings.CELERY_BEAT_SCHEDULE``; with Redis the
scheduler is celery-redbeat, whose lock lets only one of several beat processes fire). It records
the run and fans out one ``credential_heartbeat`` per due credential, so a sweep takes as long as
the workers' concurrency needs, not as long as the credential count.
"""
from __future__ import annotations

import datetime as dt

import structlog
from celery import shared_task
from celery.signals import beat_init
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from .exceptions import TransientGoogleError
from .models import CredentialState, GoogleCredential, HeartbeatRun

logger = structlog.get_logger("oauth.tasks")

HEARTBEAT_MAX_RETRIES = 4


@shared_task(name="oauth.tasks.heartbeat_sweep", ignore_result=True)
def heartbeat_sweep(trigger: str = "beat") -> int:
    """Record a HeartbeatRun and queue one heartbeat per due credential; returns the run id."""
    from .heartbeat import credentials_due_for_heartbeat, heartbeat_run_start

    now = timezone.now()
    due = credentials_due_for_heartbeat(now=now)
    run = heartbeat_run_start(trigger=trigger, selected=len(due), now=now)
    if not due:
        run.finished_at = now
        run.save(update_fields=["finished_at"])
    # One producer (one broker connection) for the whole fan-out instead of one per message.
    with heartbeat_sweep.app.producer_or_acquire() as producer:
        for credential_id in due:
            credential_heartbeat.apply_async(
                kwargs={"credential_id": credential_id, "run_id": run.pk, "not_before": now.isoformat()},
                producer=producer,
            )
    logger.info("Heartbeat sweep queued", trigger=trigger, selected=len(due), run_id=run.pk)
    return run.pk


@shared_task(
    name="oauth.tasks.credential_heartbeat",
    bind=True,
    acks_late=True,
    ignore_result=True,
    autoretry_for=(TransientGoogleError,),
    retry_backoff=30,
    retry_backoff_max=900,
    retry_jitter=True,
    max_retries=HEARTBEAT_MAX_RETRIES,
)
def credential_heartbeat(
    self, credential_id: int, run_id: int | None = None, not_before: str | None = None
) -> str:
    """Refresh + probe one credential. Idempotent: a redelivered task finds it already refreshed."""
    from .heartbeat import RETRYING, credential_heartbeat as heartbeat_one, heartbeat_run_record_outcome

    since = dt.datetime.fromisoformat(not_before) if not_before else None
    try:
        outcome = heartbeat_one(
            credential_id=credential_id, actor="process:heartbeat:beat", not_before=since
        )
    except TransientGoogleError:
        if self.request.retries >= self.max_retries and run_id is not None:
            state = (
                GoogleCredential.objects.filter(pk=credential_id).values_list("state", flat=True).first()
            )
            heartbeat_run_record_outcome(
                run_id=run_id,
                outcome=state if state == CredentialState.REFRESH_FAILING else RETRYING,
            )
        raise  # autoretry_for: again later, with exponential backoff and jitter
    if run_id is not None:
        heartbeat_run_record_outcome(run_id=run_id, outcome=outcome)
    return outcome


@beat_init.connect
def first_sweep_without_waiting(sender=None, **kwargs) -> None:
    """A fresh beat sends one sweep now when none ran within the interval.

    Beat would otherwise wait a whole interval (an hour) before the first sweep. With several beat
    processes starting together, a cache lock lets only one of them send it.
    """
    interval = float(settings.OAUTH_HEARTBEAT_INTERVAL)
    try:
        last = HeartbeatRun.objects.order_by("-started_at").values_list("started_at", flat=True).first()
        if last is not None and (timezone.now() - last).total_seconds() < interval:
            return
        if cache.add("oauth:heartbeat:startup-sweep", 1, timeout=max(1, int(interval))):
            heartbeat_sweep.apply_async(kwargs={"trigger": "startup"})
            logger.info("Sent the first heartbeat sweep at beat start-up")
    except Exception as exc:  # beat must start even when the database is not there yet
        logger.warning("Could not send the start-up heartbeat sweep", error=type(exc).__name__)
