"""Celery tasks of the OAuth app: thin wrappers that load by id, call one service, own the retries.

``heartbeat_sweep`` runs from the beat schedule (``settings.CELERY_BEAT_SCHEDULE``; with Redis the
scheduler is celery-redbeat, whose lock lets only one of several beat processes fire). It records
the run and fans the due credentials out to the workers, so a sweep takes as long as the workers'
concurrency needs, not as long as the credential count.

Up to OAUTH_HEARTBEAT_TASKS_PER_SWEEP credentials each get their own ``credential_heartbeat``
task. A larger sweep sends ``heartbeat_batch`` tasks of a few credentials each: a heartbeat costs
a few milliseconds of CPU and so does a Celery task (receive, ack, trace), and on a small machine
CPU, not Google's latency, bounds a sweep (``make bench``). A credential of a batch that fails
transiently gets its own ``credential_heartbeat`` task, which owns the retries from there. Both
tasks are acks-late and idempotent: a redelivered one skips credentials refreshed since the sweep
started.
"""
from __future__ import annotations

import datetime as dt
import math
import random

import structlog
from celery import shared_task
from celery.signals import beat_init
from django.conf import settings
from django.core.cache import cache
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from .exceptions import TransientGoogleError
from .models import HeartbeatRun

logger = structlog.get_logger("oauth.tasks")

HEARTBEAT_MAX_RETRIES = 4
#: Messages of a sweep's fan-out sent to the broker in one pipelined round trip.
PUBLISH_BATCH = 100
#: What a heartbeat task retries later: Google failing for now, or the database restarting.
RETRY_ON = (TransientGoogleError, OperationalError, InterfaceError)

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
    # One producer (one broker connection) for the whole fan-out, and the messages sent to Redis
    # in pipelined batches (PUBLISH_BATCH at a time) rather than one round trip each; the workers
    # start on the first batch while the next is built. (Brokers without batches send each.)
    size = heartbeat_batch_size(selected=len(due))
    with heartbeat_sweep.app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_BATCH):
        for start in range(0, len(due), size):
            ids = due[start : start + size]
            common = {"run_id": run.pk, "not_before": now.isoformat()}
            if size == 1:
                credential_heartbeat.apply_async(
                    kwargs={"credential_id": ids[0], **common}, producer=producer
                )
            else:
                heartbeat_batch.apply_async(kwargs={"credential_ids": ids, **common}, producer=producer)
    logger.info(
        "Heartbeat sweep queued", trigger=trigger, selected=len(due), run_id=run.pk, per_task=size
    )
    return run.pk


def heartbeat_batch_size(*, selected: int) -> int:
    """Credentials per task: 1 for a small sweep, a few for a large one (see the module doc)."""
    from .app_settings import oauth_settings

    target = max(1, int(oauth_settings.OAUTH_HEARTBEAT_TASKS_PER_SWEEP))
    return max(1, min(int(oauth_settings.OAUTH_HEARTBEAT_MAX_BATCH), math.ceil(selected / target)))


@shared_task(name="oauth.tasks.heartbeat_batch", acks_late=True, ignore_result=True)
def heartbeat_batch(credential_ids: list[int], run_id: int | None = None, not_before: str | None = None) -> dict:
    """Heartbeat a few credentials in turn; a transient failure becomes its own retrying task."""
    from .heartbeat import credential_heartbeat as heartbeat_one, heartbeat_run_record_outcomes

    since = dt.datetime.fromisoformat(not_before) if not_before else None
    outcomes: dict[str, int] = {}
    for credential_id in credential_ids:
        try:
            outcome = heartbeat_one(
                credential_id=credential_id, actor="process:heartbeat:beat", not_before=since
            )
        except RETRY_ON:
            delay = round(30 * random.uniform(0.5, 1.0))  # as credential_heartbeat's first retry
            credential_heartbeat.apply_async(
                kwargs={"credential_id": credential_id, "run_id": run_id, "not_before": not_before},
                countdown=delay,
            )
            logger.warning(
                f"Heartbeat failed transiently: oauth.tasks.credential_heartbeat retry in {delay}s",
                credential_id=credential_id, run_id=run_id,
            )
            continue
        except Exception:  # one bad credential never stops the others of its batch
            logger.exception("Heartbeat failed for one credential", credential_id=credential_id)
            outcome = "error"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    if run_id is not None and outcomes:
        heartbeat_run_record_outcomes(run_id=run_id, outcomes=outcomes)
    return outcomes


@shared_task(
    name="oauth.tasks.credential_heartbeat",
    bind=True,
    acks_late=True,
    ignore_result=True,
    autoretry_for=RETRY_ON,
    retry_backoff=30,
    retry_backoff_max=900,
    retry_jitter=True,
    max_retries=HEARTBEAT_MAX_RETRIES,
)
def credential_heartbeat(
    self, credential_id: int, run_id: int | None = None, not_before: str | None = None
) -> str:
    """Refresh + probe one credential. Idempotent: a redelivered task finds it already refreshed."""
    from .heartbeat import (
        credential_heartbeat as heartbeat_one,
        heartbeat_run_record_outcomes,
        transient_outcome,
    )

    since = dt.datetime.fromisoformat(not_before) if not_before else None
    try:
        outcome = heartbeat_one(
            credential_id=credential_id, actor="process:heartbeat:beat", not_before=since
        )
    except RETRY_ON:
        if self.request.retries >= self.max_retries and run_id is not None:
            outcome = transient_outcome(credential_id=credential_id)
            heartbeat_run_record_outcomes(run_id=run_id, outcomes={outcome: 1})
        raise  # autoretry_for: again later, with exponential backoff and jitter
    if run_id is not None:
        heartbeat_run_record_outcomes(run_id=run_id, outcomes={outcome: 1})
    return outcome


@shared_task(name="oauth.tasks.action_run_execute", acks_late=True, ignore_result=True)
def action_run_execute(run_id: int) -> None:
    """An operator's action on one or more accounts (dashboard or admin), off the request."""
    from .account_actions import action_run_execute as execute

    execute(run_id=run_id)


@shared_task(name="oauth.tasks.records_prune", ignore_result=True)
def records_prune() -> dict:
    """The daily retention sweep (OAUTH_AUDIT_RETENTION_DAYS, OAUTH_RUN_RETENTION_DAYS)."""
    from .retention import records_prune as prune

    return prune().counts


@beat_init.connect
def first_sweep_without_waiting(sender=None, **kwargs) -> None:
    """A fresh beat sends one sweep now when none ran within the interval.

    Beat would otherwise wait a whole interval (an hour) before the first sweep. With several beat
    processes starting together, a cache lock lets only one of them send it.
    """
    interval = float(settings.OAUTH_HEARTBEAT_INTERVAL)
    try:
        last = HeartbeatRun.objects.last_started_at()
        if last is not None and (timezone.now() - last).total_seconds() < interval:
            return
        if cache.add("oauth:heartbeat:startup-sweep", 1, timeout=max(1, int(interval))):
            heartbeat_sweep.apply_async(kwargs={"trigger": "startup"})
            logger.info("Sent the first heartbeat sweep at beat start-up")
    except Exception as exc:  # beat must start even when the database is not there yet
        logger.warning("Could not send the start-up heartbeat sweep", error=type(exc).__name__)
