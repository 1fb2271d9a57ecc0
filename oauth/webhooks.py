"""Webhook deliveries, signed per the Standard Webhooks specification (``standardwebhooks``).

Each message carries ``webhook-id`` (the delivery's ``msg_id``, the same on every retry so a
receiver can drop duplicates), ``webhook-timestamp`` and ``webhook-signature`` (``v1,<base64
HMAC-SHA256>`` of ``id.timestamp.body`` with the endpoint's ``whsec_`` secret).

A delivery is tried by the Celery task :func:`webhook_deliver`; a failure (no answer, a non-2xx
status, a redirect: redirects are never followed) is retried after OAUTH_WEBHOOK_RETRY_SCHEDULE
(about a day in all), then given up. Every attempt is recorded (status, latency, the first bytes
of the answer) and shown in the admin. Endpoints must be https, or http on a loopback host.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import secrets
import time
import uuid
from typing import Any

import urllib3
from celery import shared_task
from django.db import transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook
from urllib3.exceptions import HTTPError, LocationParseError
from urllib3.util import parse_url

from .app_settings import is_loopback_host, oauth_settings
from .models import (
    DeliveryStatus,
    Notification,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from .redaction import redact_text

logger = logging.getLogger("oauth.webhooks")

USER_AGENT = "butlers-oauth-webhooks/1"
SNIPPET = 300
_pool = urllib3.PoolManager(num_pools=8, maxsize=4, headers={"User-Agent": USER_AGENT})


def _now() -> dt.datetime:
    return timezone.now()


def webhook_secret_new() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot receive webhooks, or None: https only, http only on loopback."""
    try:
        parts = parse_url(url or "")
    except LocationParseError:
        return "Enter a valid URL."
    if parts.auth is not None or any(c.isspace() or c == "\\" for c in url):
        return "The URL must not carry user@ credentials, spaces or backslashes."
    if parts.scheme == "https" and parts.host:
        return None
    if parts.scheme == "http" and is_loopback_host(parts.host):
        return None
    return "Use an https:// URL (http:// is accepted only for a loopback host such as 127.0.0.1)."


class WebhookUrlRefused(ValueError):
    """The URL cannot receive webhooks (not https, or http off loopback, or malformed)."""


def webhook_endpoint_create(
    *, url: str, events: list[str] | None = None, description: str = ""
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret (returned once: only its ciphertext is kept)."""
    problem = webhook_url_problem(url)
    if problem:
        raise WebhookUrlRefused(problem)
    secret = webhook_secret_new()
    endpoint = WebhookEndpoint(url=url, events=list(events or []), description=description)
    endpoint.secret = secret
    endpoint.save()
    return endpoint, secret


def notification_payload(notification: Notification) -> dict[str, Any]:
    """The JSON a webhook receives (Standard Webhooks' ``type``/``timestamp``/``data`` shape)."""
    return {
        "type": notification.event_type,
        "timestamp": notification.occurred_at.isoformat(),
        "data": {
            "account": notification.account,
            "old_state": notification.old_state,
            "new_state": notification.new_state,
            "remediation": notification.remediation,
            "occurred_at": notification.occurred_at.isoformat(),
            **({"security_event": notification.detail["security_event"]}
               if notification.detail.get("security_event") else {}),
        },
    }


def _delivery_create(*, endpoint: WebhookEndpoint, event_type: str, payload: dict,
                     notification: Notification | None, now: dt.datetime) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        endpoint=endpoint, notification=notification, msg_id=f"msg_{uuid.uuid4().hex}",
        event_type=event_type, payload=payload, created_at=now, next_attempt_at=now,
    )


def webhook_deliveries_create(*, notification: Notification) -> list[WebhookDelivery]:
    """One delivery per active endpoint that wants this event type."""
    payload = notification_payload(notification)
    return [
        _delivery_create(endpoint=endpoint, event_type=notification.event_type, payload=payload,
                         notification=notification, now=notification.occurred_at)
        for endpoint in WebhookEndpoint.objects.filter(active=True)
        if endpoint.wants(notification.event_type)
    ]


def webhook_test_send(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A ``test`` event to one endpoint (the admin's "send test event")."""
    now = _now()
    payload = {"type": "test", "timestamp": now.isoformat(),
               "data": {"message": "A test event from Butlers OAuth.", "occurred_at": now.isoformat()}}
    delivery = _delivery_create(endpoint=endpoint, event_type="test", payload=payload,
                                notification=None, now=now)
    webhook_dispatch(delivery_ids=[delivery.pk])
    return delivery


def webhook_redeliver(*, delivery: WebhookDelivery) -> None:
    """Try a delivery again now, whatever happened before (the admin's "redeliver")."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.PENDING, next_attempt_at=_now()
    )
    webhook_dispatch(delivery_ids=[delivery.pk], force=True)


def webhook_dispatch(*, delivery_ids: list[int], force: bool = False) -> None:
    """Queue the deliveries (Celery); a broker that is down leaves them to the housekeeping task."""
    for delivery_id in delivery_ids:
        try:
            webhook_deliver.apply_async(kwargs={"delivery_id": delivery_id, "force": force})
        except Exception as exc:  # the broker is down: the periodic housekeeping sends it later
            logger.warning("Could not queue webhook delivery %s (%s); it is sent later",
                           delivery_id, type(exc).__name__)


def _sign(*, secret: str, msg_id: str, body: str, at: dt.datetime) -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=at, data=body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


def _post(*, url: str, headers: dict[str, str], body: str) -> tuple[int | None, str, str]:
    """POST once: (status, answer snippet, error). Redirects are not followed, nothing retried."""
    problem = webhook_url_problem(url)
    if problem:
        return None, "", f"refused URL: {problem}"[:300]
    timeout = float(oauth_settings.OAUTH_WEBHOOK_TIMEOUT)
    try:
        response = _pool.request(
            "POST", url, body=body.encode("utf-8"), headers=headers, redirect=False, retries=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout), preload_content=False,
        )
    except (HTTPError, OSError) as exc:
        return None, "", f"{type(exc).__name__}: could not reach the receiver"
    try:
        snippet = response.read(SNIPPET, decode_content=True) or b""
    except (HTTPError, OSError):
        snippet = b""
    finally:
        response.release_conn()
    return response.status, redact_text(snippet.decode("utf-8", "replace"))[:SNIPPET], ""


def _retry_delay(attempts: int) -> float | None:
    schedule = list(oauth_settings.OAUTH_WEBHOOK_RETRY_SCHEDULE)
    return float(schedule[attempts - 1]) if attempts - 1 < len(schedule) else None


def webhook_attempt(*, delivery_id: int, force: bool = False) -> float | None:
    """Try one delivery once if it is due; returns the seconds until its next try, or None when
    it is done (delivered, given up, or not this task's to try)."""
    now = _now()
    with transaction.atomic():
        # of=self: lock the delivery only; locking its endpoint too would make every other
        # delivery to that endpoint skip itself while this one is in flight.
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("endpoint").filter(pk=delivery_id).first()
        )
        # Another worker holds it, or it is done, or a duplicate message came early.
        if delivery is None or delivery.status != DeliveryStatus.PENDING:
            return None
        if not force and delivery.next_attempt_at and delivery.next_attempt_at > now + dt.timedelta(seconds=1):
            return None
        endpoint = delivery.endpoint
        body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True)
        number = delivery.attempts + 1
        if not endpoint.active or endpoint.secret is None:
            status, snippet, error, latency = None, "", "endpoint disabled", 0
        else:
            headers = _sign(secret=endpoint.secret.reveal(), msg_id=delivery.msg_id, body=body, at=now)
            started = time.monotonic()
            status, snippet, error = _post(url=endpoint.url, headers=headers, body=body)
            latency = int((time.monotonic() - started) * 1000)
        WebhookAttempt.objects.create(
            delivery=delivery, number=number, attempted_at=now, status_code=status,
            latency_ms=latency, response_snippet=snippet, error=error,
        )
        delivery.attempts = number
        ok = status is not None and 200 <= status < 300
        delay = None if ok or not endpoint.active else _retry_delay(number)
        if ok:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = (
                DeliveryStatus.SUCCEEDED, now, None)
        elif delay is None:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
        else:
            delivery.next_attempt_at = now + dt.timedelta(seconds=delay)
        delivery.save(update_fields=["attempts", "status", "delivered_at", "next_attempt_at"])
    if ok:
        logger.info("Webhook %s delivered to %s (attempt %d, HTTP %s)",
                    delivery.event_type, endpoint.url, number, status)
    else:
        logger.warning("Webhook %s to %s failed (attempt %d: %s)%s", delivery.event_type,
                       endpoint.url, number, status or error,
                       f"; retried in {delay:g} s" if delay is not None else "; given up")
    return delay


@shared_task(name="oauth.webhooks.webhook_deliver", ignore_result=True, acks_late=True)
def webhook_deliver(delivery_id: int, force: bool = False) -> None:
    """Try one delivery; queue its next try with the backoff schedule's countdown."""
    delay = webhook_attempt(delivery_id=delivery_id, force=force)
    if delay is not None:
        webhook_deliver.apply_async(kwargs={"delivery_id": delivery_id}, countdown=delay)


def webhook_deliveries_due(*, now: dt.datetime, grace: float = 300) -> list[int]:
    """Pending deliveries whose next try is overdue by ``grace`` seconds (a lost message)."""
    return list(
        WebhookDelivery.objects.filter(
            status=DeliveryStatus.PENDING, next_attempt_at__lte=now - dt.timedelta(seconds=grace)
        ).values_list("pk", flat=True)[:500]
    )
