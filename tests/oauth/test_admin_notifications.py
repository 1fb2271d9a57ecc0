"""The admin of notifications (oauth/admin_notifications.py): the webhook secret is shown once,
"send test event" and "redeliver" reach a real receiver, preferences are a per-user flag."""
from __future__ import annotations

import pytest

from oauth.models import NotificationPreference, WebhookDelivery, WebhookEndpoint
from oauth.notifications import notification_recipients
from oauth.webhooks import webhook_attempt
from tests.receivers import WebhookReceiver

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def receiver():
    server = WebhookReceiver().start()
    try:
        yield server
    finally:
        server.stop()


def _add_endpoint(staff_client, url: str):
    return staff_client.post(
        "/admin/oauth/webhookendpoint/add/",
        {"url": url, "description": "household hub", "events": ["account.problem"], "active": "on"},
    )


def test_the_secret_is_shown_once_then_signs_a_test_event(staff_client, receiver):
    page = _add_endpoint(staff_client, receiver.url)
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    endpoint = WebhookEndpoint.objects.get()
    secret = endpoint.secret.reveal()
    assert secret.startswith("whsec_") and secret in page.content.decode()
    # never again: not on the change page or the list, not in the database in clear
    for url in ("/admin/oauth/webhookendpoint/", f"/admin/oauth/webhookendpoint/{endpoint.pk}/change/"):
        assert secret not in staff_client.get(url).content.decode()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM oauth_webhookendpoint")
        assert secret not in cursor.fetchone()[0]

    receiver.secret = secret
    staff_client.post("/admin/oauth/webhookendpoint/",
                      {"action": "send_test_event", "_selected_action": [endpoint.pk]})
    delivery = WebhookDelivery.objects.get()
    webhook_attempt(delivery_id=delivery.pk, force=True)
    assert [r["payload"]["type"] for r in receiver.received] == ["test"]


def test_plain_http_off_loopback_is_refused_in_the_form(staff_client):
    page = _add_endpoint(staff_client, "http://hooks.example.com/butlers")
    assert page.status_code == 200
    assert "https://" in page.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_redeliver_sends_a_given_up_message_again(staff_client, receiver, settings):
    settings.OAUTH_WEBHOOK_RETRY_SCHEDULE = []  # give up after the first failure
    _add_endpoint(staff_client, receiver.url)
    endpoint = WebhookEndpoint.objects.get()
    receiver.secret = endpoint.secret.reveal()
    receiver.fail_next = 1
    staff_client.post("/admin/oauth/webhookendpoint/",
                      {"action": "send_test_event", "_selected_action": [endpoint.pk]})
    delivery = WebhookDelivery.objects.get()
    webhook_attempt(delivery_id=delivery.pk, force=True)
    delivery.refresh_from_db()
    assert delivery.status == "failed"

    staff_client.post("/admin/oauth/webhookdelivery/",
                      {"action": "redeliver", "_selected_action": [delivery.pk]})
    webhook_attempt(delivery_id=delivery.pk, force=True)
    delivery.refresh_from_db()
    assert delivery.status == "succeeded" and delivery.attempts == 2
    assert len(receiver.received) == 1


def test_only_staff_who_opted_in_get_email(django_user_model, settings):
    settings.OAUTH_NOTIFY_EMAILS = ["household@example.com"]
    keen = django_user_model.objects.create_user("keen", "keen@example.com", "x", is_staff=True)
    quiet = django_user_model.objects.create_user("quiet", "quiet@example.com", "x", is_staff=True)
    outsider = django_user_model.objects.create_user("outsider", "out@example.com", "x", is_staff=False)
    NotificationPreference.objects.create(user=keen, email=True)
    NotificationPreference.objects.create(user=quiet, email=False)
    NotificationPreference.objects.create(user=outsider, email=True)
    assert sorted(notification_recipients()) == ["household@example.com", "keen@example.com"]
