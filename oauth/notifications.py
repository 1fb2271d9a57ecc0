"""Telling a person when an account needs one, once: email digests and webhooks.

The one place transitions are detected is :func:`credential_saved`, a ``post_save`` receiver of
:class:`~oauth.models.GoogleCredential`: the model remembers the state it was loaded with
(``from_db``), so whichever code saved it (a refresh, the heartbeat, a probe, a revoke, a security
event) a change into ``expired``, ``missing_scope``, ``misconfigured`` or ``refresh_failing``, a
security event from Google, and the way back to ``connected`` are each noticed here, after the
transaction commits (``transaction.on_commit``), and recorded as one :class:`Notification`.

* **Email**: notifications wait OAUTH_NOTIFY_DEBOUNCE seconds for others to join them, then go out
  as one digest (a sweep that finds 20 dead accounts sends one email listing them) to the staff
  users who opted in (:class:`~oauth.models.NotificationPreference`) and OAUTH_NOTIFY_EMAILS.
* **Webhooks**: one delivery per notification and endpoint (:mod:`oauth.webhooks`).
* **Reminders**: while an account stays in a problem state, a reminder every
  OAUTH_NOTIFY_REMINDER_INTERVAL seconds (0 = never); going back to ``connected`` sends the
  recovery notice, which ends them.

Nothing here ever breaks the code that saved the credential: a failure is logged, and the periodic
:func:`notifications_housekeeping` sends what was left behind.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery import shared_task
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Max
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.template.loader import render_to_string
from django.utils import timezone

from . import scopes as scope_catalogue
from .app_settings import oauth_settings
from .models import (
    CredentialState,
    GoogleCredential,
    Notification,
    NotificationEvent,
)

logger = logging.getLogger("oauth.notifications")

#: States that need a person.
PROBLEM_STATES = frozenset({
    CredentialState.EXPIRED, CredentialState.MISSING_SCOPE, CredentialState.MISCONFIGURED,
    CredentialState.REFRESH_FAILING,
})
_DIGEST_SCHEDULED = "oauth:notifications:digest-scheduled"
#: A digest waits at most this many debounce windows for a long sweep to finish.
_MAX_WAIT_WINDOWS = 10
_STATE_WORDS = {
    "expired": "expired or revoked",
    "missing_scope": "missing a scope",
    "misconfigured": "misconfigured (OAuth client)",
    "refresh_failing": "failing to refresh",
    "connected": "connected again",
}


def _now() -> dt.datetime:
    return timezone.now()


# --- detection ---------------------------------------------------------------------------------
def _notice_state(credential: GoogleCredential, loaded: tuple) -> str:
    """The state an operator saw when ``credential`` was loaded (effective_state's rule, with the
    client assumed configured: a missing client is not a transition of one account)."""
    state, revoked_at, scopes = loaded
    if revoked_at is not None:
        return CredentialState.EXPIRED
    if state == CredentialState.CONNECTED:
        granted = scopes if isinstance(scopes, list) else credential.granted_scope_list()
        if scope_catalogue.missing_scopes(granted=granted, required=oauth_settings.OAUTH_REQUIRED_SCOPES):
            return CredentialState.MISSING_SCOPE
    return str(state)


def _remediation(credential: GoogleCredential, state: str) -> str:
    from .status import remediation

    if state == CredentialState.CONNECTED:
        return "Nothing to do: the account is connected and refreshing again."
    return remediation(credential, state=state, missing=credential.missing_scopes())


@receiver(post_save, sender=GoogleCredential, dispatch_uid="oauth.notifications.credential_saved")
def credential_saved(sender, instance: GoogleCredential, created: bool, raw: bool = False, **kwargs) -> None:
    """Notice a transition that needs a person (or ends one), once, after the commit."""
    if raw:
        return
    loaded = getattr(instance, "_loaded_notice", None)
    security = instance.__dict__.pop("_security_event", None)
    noticed = instance._loaded_notice = (
        instance.state, instance.revoked_at, (instance.credentials or {}).get("scopes")
    )
    if (created or loaded is None or loaded == noticed) and security is None:
        return  # nothing the operator's state is judged by has changed (most saves: a refresh)
    new = instance.effective_state(client_configured=True)
    old = _notice_state(instance, loaded) if loaded is not None else ""
    if security is not None:
        event_type = NotificationEvent.SECURITY_EVENT
    elif old == new:
        return
    elif new in PROBLEM_STATES:
        event_type = NotificationEvent.PROBLEM
    elif new == CredentialState.CONNECTED and old in PROBLEM_STATES:
        event_type = NotificationEvent.RECOVERED
    else:
        return
    notice = {
        "event_type": event_type,
        "credential_id": instance.pk,
        "account": instance.email or instance.credential_key,
        "old_state": old,
        "new_state": new,
        "remediation": (security or {}).get("remediation") or _remediation(instance, new),
        "detail": {"security_event": security} if security else {},
        "occurred_at": _now(),
    }
    transaction.on_commit(lambda: notification_record(**notice))


# --- recording and dispatch -----------------------------------------------------------------------
def notification_record(**notice: Any) -> Notification | None:
    """Store one notification, queue its webhooks and the digest email. Never raises."""
    from .webhooks import webhook_deliveries_create, webhook_dispatch

    try:
        with transaction.atomic():
            notification = Notification.objects.create(**notice)
            deliveries = webhook_deliveries_create(notification=notification)
    except Exception:
        logger.exception("Could not record a notification (%s %s)",
                         notice.get("event_type"), notice.get("account"))
        return None
    logger.info("Notification %s for %s (%s -> %s)", notification.event_type,
                notification.account, notification.old_state or "-", notification.new_state)
    webhook_dispatch(delivery_ids=[d.pk for d in deliveries])
    digest_schedule()
    return notification


def digest_schedule() -> None:
    """Queue one digest email OAUTH_NOTIFY_DEBOUNCE seconds from now, unless one is queued."""
    debounce = max(0.0, float(oauth_settings.OAUTH_NOTIFY_DEBOUNCE))
    try:
        if cache.add(_DIGEST_SCHEDULED, "1", timeout=max(1, int(debounce) + 1)):
            notifications_email_digest.apply_async(countdown=debounce)
    except Exception as exc:  # cache or broker down: the housekeeping task sends it later
        logger.warning("Could not queue the notification digest (%s); it is sent later",
                       type(exc).__name__)


def notification_recipients() -> list[str]:
    """Staff users who opted in (with an address) and OAUTH_NOTIFY_EMAILS, each once."""
    users = get_user_model().objects.filter(
        is_active=True, is_staff=True, oauth_notifications__email=True
    ).exclude(email="")
    found = [u.email.strip() for u in users] + [
        e.strip() for e in oauth_settings.OAUTH_NOTIFY_EMAILS if e and e.strip()
    ]
    seen: dict[str, str] = {}
    for address in found:
        seen.setdefault(address.lower(), address)
    return list(seen.values())


def _describe(notification: Notification) -> str:
    if notification.event_type == NotificationEvent.SECURITY_EVENT:
        event = (notification.detail.get("security_event") or {}).get("event", "")
        return f"Google reported a security event ({event})"
    if notification.event_type == NotificationEvent.REMINDER:
        return f"still {_STATE_WORDS.get(notification.new_state, notification.new_state)}"
    return _STATE_WORDS.get(notification.new_state, notification.new_state)


def _subject(items: list[Notification]) -> str:
    if len(items) == 1:
        item = items[0]
        return f"[Butlers OAuth] {item.account}: {_describe(item)}"
    problems = sum(1 for i in items if i.new_state in PROBLEM_STATES)
    return f"[Butlers OAuth] {len(items)} account notices ({problems} need attention)"


def digest_email_build(*, items: list[Notification], recipients: list[str]) -> EmailMultiAlternatives:
    """The digest: plain text and HTML, each account with what happened, the remediation and a
    link to the dashboard. Built from stored fields only: never a secret."""
    from django.conf import settings

    from .preflight import dashboard_url

    context = {
        "items": [
            {"n": n, "account": i.account, "what": _describe(i), "old_state": i.old_state or "-",
             "new_state": i.new_state, "remediation": i.remediation,
             "occurred_at": i.occurred_at, "event_type": i.event_type,
             "event_id": (i.detail.get("security_event") or {}).get("event_id", "")}
            for n, i in enumerate(items, 1)
        ],
        "dashboard_url": dashboard_url(),
        "count": len(items),
    }
    message = EmailMultiAlternatives(
        subject=_subject(items),
        body=render_to_string("oauth/notifications/digest.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
    )
    message.attach_alternative(render_to_string("oauth/notifications/digest.html", context), "text/html")
    return message


def notifications_email_send(*, now: dt.datetime, wait: bool = True) -> int:
    """Email every notification not yet emailed as one digest; returns how many it listed.

    With ``wait``, a digest whose newest notification is younger than OAUTH_NOTIFY_DEBOUNCE is
    not sent yet (more are coming: a sweep is running), unless its oldest has waited ten windows.
    Raises when the mail server refuses (the notifications stay pending for the next try).
    """
    debounce = dt.timedelta(seconds=float(oauth_settings.OAUTH_NOTIFY_DEBOUNCE))
    with transaction.atomic():
        items = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(emailed_at__isnull=True).order_by("occurred_at", "pk")
        )
        if not items:
            return 0
        if wait and items[-1].occurred_at > now - debounce and (
            items[0].occurred_at > now - _MAX_WAIT_WINDOWS * debounce
        ):
            return -1
        recipients = notification_recipients()
        if recipients:
            digest_email_build(items=items, recipients=recipients).send(fail_silently=False)
            logger.info("Notification digest of %d item(s) emailed to %d recipient(s)",
                        len(items), len(recipients))
        else:
            logger.warning(
                "%d notification(s) not emailed: no recipient (set OAUTH_NOTIFY_EMAILS or tick "
                "'email' on a staff user's notification preference in the admin)", len(items)
            )
        Notification.objects.filter(pk__in=[i.pk for i in items]).update(emailed_at=now)
    return len(items)


@shared_task(name="oauth.notifications.notifications_email_digest", ignore_result=True,
             bind=True, max_retries=5)
def notifications_email_digest(self) -> None:
    """Send the digest (queued by :func:`digest_schedule`); wait another window while
    notifications are still arriving; retry when the mail server fails."""
    try:
        sent = notifications_email_send(now=_now())
    except Exception as exc:
        logger.warning("The notification digest could not be emailed (%s); retrying",
                       type(exc).__name__)
        raise self.retry(countdown=60) from None
    if sent == -1:
        cache.delete(_DIGEST_SCHEDULED)
        digest_schedule()


# --- reminders and housekeeping ------------------------------------------------------------------------
def notifications_remind(*, now: dt.datetime) -> list[Notification]:
    """A reminder for each account still in a problem state whose last notice is older than
    OAUTH_NOTIFY_REMINDER_INTERVAL (0 = reminders off)."""
    from .selectors import credential_states

    interval = float(oauth_settings.OAUTH_NOTIFY_REMINDER_INTERVAL)
    if interval <= 0:
        return []
    cutoff = now - dt.timedelta(seconds=interval)
    last = dict(
        Notification.objects.exclude(event_type=NotificationEvent.TEST)
        .values("credential_id").annotate(at=Max("occurred_at")).values_list("credential_id", "at")
    )
    made = []
    for credential, state in credential_states():
        if state not in PROBLEM_STATES:
            continue
        if last.get(credential.pk) is not None and last[credential.pk] > cutoff:
            continue
        if last.get(credential.pk) is None and credential.updated_at > cutoff:
            continue  # a problem older than the notifications, but not older than the interval
        notification = notification_record(
            event_type=NotificationEvent.REMINDER, credential_id=credential.pk,
            account=credential.email or credential.credential_key, old_state=state,
            new_state=state, remediation=_remediation(credential, state), detail={},
            occurred_at=now,
        )
        if notification is not None:
            made.append(notification)
    return made


@shared_task(name="oauth.notifications.notifications_housekeeping", ignore_result=True)
def notifications_housekeeping() -> None:
    """Periodic (beat): reminders, a digest left behind, webhook retries whose message was lost."""
    from .webhooks import webhook_deliveries_due, webhook_dispatch

    now = _now()
    notifications_remind(now=now)
    try:
        notifications_email_send(now=now)
    except Exception as exc:
        logger.warning("The notification digest could not be emailed (%s); tried again later",
                       type(exc).__name__)
    webhook_dispatch(delivery_ids=webhook_deliveries_due(now=now))
