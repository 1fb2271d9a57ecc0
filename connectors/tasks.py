"""Celery tasks of the connectors (scheduled in settings.CELERY_BEAT_SCHEDULE)."""
from __future__ import annotations

from celery import shared_task

from .gmail import gmail_poll_all as _gmail_poll_all


@shared_task(name="connectors.tasks.gmail_poll_all", ignore_result=True)
def gmail_poll_all() -> dict[str, str]:
    """Poll every Gmail account once. Each account's errors are logged, never retried here: the
    next beat tick is the retry, and an expired grant needs a person, not another attempt."""
    return _gmail_poll_all(actor="process:gmail-poll")
