"""End to end: the fake Google's RISC issuer pushes a security event to the running app; a real
Celery worker sends the email (to an aiosmtpd server started here) and the webhook (to a receiver
that verifies it with the Standard Webhooks verifier).

Done-when of issue 12: a ``tokens-revoked`` event for one account marks exactly that account
``expired`` within the request, audits it, sends one email and one signed webhook; the receiver
that fails twice gets it on the third attempt, recorded in the admin.
"""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import threading

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from oauth.google import risc as google_risc
from oauth.models import AuditEvent, GoogleCredential, WebhookDelivery, refresh_token_fingerprint
from oauth.webhooks import webhook_endpoint_create
from tests.factories import CLIENT_ID, CLIENT_SECRET, ROOT
from tests.fake_google.risc import subject_for
from tests.receivers import SmtpServer, WebhookReceiver, text_of, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def smtp():
    server = SmtpServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def receiver():
    server = WebhookReceiver().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def worker(subprocess_env, fake_google, smtp):
    """A Celery worker as `make run` starts it, pointed at this test's stores, SMTP server and fake."""
    db = connection.settings_dict
    env = dict(subprocess_env)
    env.update(fake_google.env())
    env.update({
        "DJANGO_SETTINGS_MODULE": "butlers.settings",
        "DATABASE_URL": f"postgresql://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
                        f"{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": os.environ["REDIS_URL"],
        "DEBUG": "0",
        "GOOGLE_OAUTH_CLIENT_ID": CLIENT_ID,
        "GOOGLE_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "EMAIL_URL": smtp.email_url(),
        "DEFAULT_FROM_EMAIL": "butlers@example.com",
        "OAUTH_NOTIFY_EMAILS": "household@example.com",
        "OAUTH_NOTIFY_DEBOUNCE": "3",
        "OAUTH_WEBHOOK_RETRY_SCHEDULE": "0.5,0.5,0.5",
        "BUTLERS_DASHBOARD_URL": "https://butlers.example.com/",
    })
    celery = str(ROOT / ".venv" / "bin" / "celery")
    process = subprocess.Popen(
        [celery, "-A", "butlers", "worker", "--loglevel=INFO", "--pool=threads", "--concurrency=2",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", "test-notify-worker@%h"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True).start()
    try:
        assert wait_for(lambda: any("ready." in line for line in lines)), "".join(lines)
        yield lines
    finally:
        process.terminate()
        process.wait(30)


def test_a_tokens_revoked_event_expires_one_account_and_tells_people_once(
    live_server, fake_google, credential_factory, smtp, receiver, worker, settings
):
    google_risc.cache_clear()
    settings.OAUTH_NOTIFY_DEBOUNCE = 3
    accounts = {}
    for email in ("alice@example.com", "bob@example.com"):
        token = fake_google.issue_grant(email)
        accounts[email] = credential_factory(
            email=email, refresh_token=token, google_issuer=fake_google.url,
            google_subject=subject_for(email), refresh_token_fingerprint=refresh_token_fingerprint(token),
        )
    endpoint, secret = webhook_endpoint_create(url=receiver.url)
    receiver.secret = secret
    receiver.fail_next = 2  # the receiver is down for the first two attempts

    status, body = fake_google.risc.send_event(
        live_server.url + "/api/oauth/google/risc", "tokens-revoked",
        audience=CLIENT_ID, email="alice@example.com", jti="e2e-event-1",
    )

    # within the request: exactly that account, audited with the event id
    assert status == 202, body
    states = dict(GoogleCredential.objects.values_list("email", "state"))
    assert states == {"alice@example.com": "expired", "bob@example.com": "connected"}
    audit = AuditEvent.objects.get(action="security_event")
    assert (audit.account, audit.detail["event_id"]) == ("alice@example.com", "e2e-event-1")

    # then, through the worker: one email and one verified webhook (on its third attempt)
    assert wait_for(lambda: len(smtp.messages) == 1 and len(receiver.received) == 1), "".join(worker)
    message = smtp.messages[0]
    assert "alice@example.com" in message["Subject"] and "security event" in message["Subject"]
    text = text_of(message)
    assert "tokens-revoked" in text and "e2e-event-1" in text and "https://butlers.example.com/" in text
    assert "bob@example.com" not in text
    payload = receiver.received[0]["payload"]
    assert payload["type"] == "account.security_event"
    assert payload["data"]["account"] == "alice@example.com"
    assert (payload["data"]["old_state"], payload["data"]["new_state"]) == ("connected", "expired")
    assert payload["data"]["security_event"]["event_id"] == "e2e-event-1"

    delivery = WebhookDelivery.objects.get()
    assert wait_for(lambda: WebhookDelivery.objects.get().status == "succeeded")
    assert [a.status_code for a in delivery.attempt_log.all()] == [500, 500, 204]
    # nothing more arrives: told once
    assert not wait_for(lambda: len(smtp.messages) > 1 or len(receiver.requests) > 3, timeout=3)


def test_a_sweep_that_finds_20_dead_accounts_sends_one_digest_and_20_webhooks(
    fake_google, credential_factory, smtp, receiver, worker, settings
):
    settings.OAUTH_NOTIFY_DEBOUNCE = 3
    endpoint, secret = webhook_endpoint_create(url=receiver.url)
    receiver.secret = secret
    emails = [f"member{n}@example.com" for n in range(20)]
    for email in emails:
        credential_factory(email=email, refresh_token=fake_google.issue_grant(email),
                           last_refreshed_at=timezone.now() - dt.timedelta(days=2))
        fake_google.expire_grant(email)

    with pytest.raises(SystemExit):  # exit 1: accounts need attention
        call_command("oauth_heartbeat", "--all")

    assert wait_for(lambda: len(receiver.received) == 20 and len(smtp.messages) == 1), (
        len(receiver.received), len(smtp.messages), "".join(worker)[-3000:])
    assert {r["payload"]["data"]["account"] for r in receiver.received} == set(emails)
    assert "20 account notices (20 need attention)" in smtp.messages[0]["Subject"]
    body = text_of(smtp.messages[0])
    assert all(email in body for email in emails)
    assert not wait_for(lambda: len(smtp.messages) > 1, timeout=5)  # one digest, not 20 emails
