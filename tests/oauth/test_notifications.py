"""oauth/notifications.py and oauth/webhooks.py in-process, with a real SMTP server (aiosmtpd) and a
webhook receiver that checks signatures with the Standard Webhooks verifier.

Celery is not running here: the tests call what the tasks call (``notifications_email_send``,
``webhook_attempt``); tests/e2e/test_notifications_worker.py runs the same through a worker."""
from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from oauth.models import (
    DeliveryStatus,
    GoogleCredential,
    Notification,
    NotificationPreference,
    WebhookDelivery,
)
from oauth.notifications import notifications_email_send, notifications_remind
from oauth.webhooks import WebhookUrlRefused, webhook_attempt, webhook_endpoint_create
from tests.factories import ACCESS_TOKEN, CLIENT_SECRET
from tests.receivers import SmtpServer, WebhookReceiver, text_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def smtp(settings):
    server = SmtpServer().start()
    for name, value in server.settings().items():
        setattr(settings, name, value)
    settings.OAUTH_NOTIFY_EMAILS = ["household@example.com"]
    settings.BUTLERS_DASHBOARD_URL = "https://butlers.example.com/"
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def receiver():
    server = WebhookReceiver().start()
    endpoint, secret = webhook_endpoint_create(url=server.url, description="test receiver")
    server.secret = secret
    server.endpoint = endpoint
    try:
        yield server
    finally:
        server.stop()


def _deliver_all(*, force: bool = True) -> None:
    for pk in WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING).values_list("pk", flat=True):
        webhook_attempt(delivery_id=pk, force=force)


def _kill(credential: GoogleCredential) -> None:
    with transaction.atomic():
        row = GoogleCredential.objects.select_for_update().get(pk=credential.pk)
        row.save(update_fields=row.record_refresh_failure(
            now=timezone.now(), state="expired", code="invalid_grant", detail="Token has been expired or revoked."
        ))


def test_a_grant_that_dies_is_emailed_and_webhooked_once(smtp, receiver, credential_factory, staff_user):
    staff_user.email = "operator@example.com"
    staff_user.save()
    NotificationPreference.objects.create(user=staff_user, email=True)
    alice = credential_factory(email="alice@example.com")

    _kill(alice)

    notification = Notification.objects.get()
    assert (notification.event_type, notification.old_state, notification.new_state) == (
        "account.problem", "connected", "expired")
    _deliver_all()
    assert len(receiver.received) == 1
    data = receiver.received[0]["payload"]
    assert data["type"] == "account.problem"
    assert data["data"]["account"] == "alice@example.com"
    assert (data["data"]["old_state"], data["data"]["new_state"]) == ("connected", "expired")
    assert "Reconnect" in data["data"]["remediation"] and data["data"]["occurred_at"]

    assert notifications_email_send(now=timezone.now(), wait=False) == 1
    assert len(smtp.messages) == 1
    message = smtp.messages[0]
    assert set(a.strip() for a in message["To"].split(",")) == {"operator@example.com", "household@example.com"}
    plain, html = text_of(message), text_of(message, "html")
    for body in (plain, html):
        assert "alice@example.com" in body
        assert "https://butlers.example.com/" in body
        assert "Reconnect" in body
        assert ACCESS_TOKEN not in body and "refresh-token" not in body and CLIENT_SECRET not in body
    # told once: nothing is pending any more
    assert notifications_email_send(now=timezone.now(), wait=False) == 0
    assert len(smtp.messages) == 1


def test_a_sweep_that_finds_20_dead_accounts_sends_one_digest_and_20_webhooks(
    smtp, receiver, fake_google, credential_factory
):
    for n in range(20):
        email = f"member{n}@example.com"
        credential_factory(email=email, refresh_token=fake_google.issue_grant(email),
                           last_refreshed_at=timezone.now() - dt.timedelta(days=2))
        fake_google.expire_grant(email)

    with pytest.raises(SystemExit):  # exit 1: some credentials need attention
        call_command("oauth_heartbeat", "--all")

    assert GoogleCredential.objects.filter(state="expired").count() == 20
    assert Notification.objects.count() == 20
    # the sweep is still fresh: the digest waits for the debounce window to pass
    assert notifications_email_send(now=timezone.now()) == -1
    later = timezone.now() + dt.timedelta(minutes=5)
    assert notifications_email_send(now=later) == 20
    assert len(smtp.messages) == 1
    assert "20 account notices (20 need attention)" in smtp.messages[0]["Subject"]
    body = text_of(smtp.messages[0])
    assert all(f"member{n}@example.com" in body for n in range(20))
    _deliver_all()
    assert len(receiver.received) == 20
    assert {r["payload"]["data"]["account"] for r in receiver.received} == {
        f"member{n}@example.com" for n in range(20)
    }


def test_a_receiver_that_fails_twice_gets_the_event_on_the_third_attempt(
    receiver, credential_factory, staff_client, settings
):
    settings.OAUTH_WEBHOOK_RETRY_SCHEDULE = [5, 60, 300]
    receiver.fail_next = 2
    _kill(credential_factory(email="alice@example.com"))
    delivery = WebhookDelivery.objects.get()

    assert webhook_attempt(delivery_id=delivery.pk) == 5
    assert webhook_attempt(delivery_id=delivery.pk) is None  # not due yet: 5 s from now
    assert webhook_attempt(delivery_id=delivery.pk, force=True) == 60
    assert webhook_attempt(delivery_id=delivery.pk, force=True) is None

    delivery.refresh_from_db()
    assert delivery.status == "succeeded" and delivery.attempts == 3
    assert [a.status_code for a in delivery.attempt_log.all()] == [500, 500, 204]
    assert len(receiver.received) == 1
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1  # same id each time
    page = staff_client.get(f"/admin/oauth/webhookdelivery/{delivery.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "receiver down for maintenance" in html and "204" in html


def test_redirects_are_not_followed_and_plain_http_off_loopback_is_refused(receiver, credential_factory):
    with pytest.raises(WebhookUrlRefused):
        webhook_endpoint_create(url="http://hooks.example.com/butlers")
    receiver.redirect = True
    _kill(credential_factory(email="alice@example.com"))
    delivery = WebhookDelivery.objects.get()
    webhook_attempt(delivery_id=delivery.pk)
    attempt = delivery.attempt_log.get()
    assert attempt.status_code == 302
    assert len(receiver.requests) == 1  # the Location was never visited
    delivery.refresh_from_db()
    assert delivery.status == "pending"


def test_recovery_is_told_and_ends_the_daily_reminders(smtp, credential_factory, settings, fake_google):
    settings.OAUTH_NOTIFY_REMINDER_INTERVAL = 86400
    alice = credential_factory(email="alice@example.com", refresh_token=fake_google.issue_grant("alice@example.com"))
    _kill(alice)
    now = timezone.now()
    assert notifications_remind(now=now) == []  # told a moment ago
    reminders = notifications_remind(now=now + dt.timedelta(days=1, minutes=1))
    assert [r.event_type for r in reminders] == ["account.reminder"]

    with transaction.atomic():
        row = GoogleCredential.objects.select_for_update().get(pk=alice.pk)
        row.save(update_fields=row.record_refresh_success(
            now=timezone.now(), access_token="ya29.new", expires_at=timezone.now() + dt.timedelta(hours=1)
        ))
    row.refresh_from_db()
    if row.state != "connected":  # record_refresh_success heals refresh_failing only; consent heals expired
        with transaction.atomic():
            row = GoogleCredential.objects.select_for_update().get(pk=alice.pk)
            row.save(update_fields=row.mark_connected(
                now=timezone.now(), access_token="ya29.new", expires_in=3600, refresh_token=None,
                client_id=row.client_id, email=row.email,
            ))
    assert Notification.objects.filter(event_type="account.recovered").count() == 1
    assert notifications_remind(now=now + dt.timedelta(days=3)) == []


def test_reminders_are_off_with_zero(credential_factory, settings):
    settings.OAUTH_NOTIFY_REMINDER_INTERVAL = 0
    _kill(credential_factory(email="alice@example.com"))
    assert notifications_remind(now=timezone.now() + dt.timedelta(days=5)) == []


def test_no_recipient_is_logged_not_crashed(credential_factory, settings, caplog):
    settings.OAUTH_NOTIFY_EMAILS = []
    _kill(credential_factory(email="alice@example.com"))
    assert notifications_email_send(now=timezone.now(), wait=False) == 1
    assert "OAUTH_NOTIFY_EMAILS" in caplog.text


def test_housekeeping_sends_a_digest_whose_queued_task_was_lost(smtp, credential_factory):
    from oauth.notifications import notifications_housekeeping

    _kill(credential_factory(email="alice@example.com"))
    Notification.objects.update(occurred_at=timezone.now() - dt.timedelta(minutes=10))

    notifications_housekeeping()  # what beat runs every five minutes

    assert len(smtp.messages) == 1 and "alice@example.com" in smtp.messages[0]["Subject"]
    assert not Notification.objects.filter(emailed_at__isnull=True).exists()
