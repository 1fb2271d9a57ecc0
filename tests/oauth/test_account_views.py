"""oauth/account_views.py: the dashboard's per-account actions and its live region, as HTTP."""
from __future__ import annotations

import pytest
from django.test import Client
from django.views.defaults import server_error

from butlers.celery import app
from oauth.models import ActionRun, AuditEvent, GoogleCredential
from oauth.revocation import credential_revoke

pytestmark = pytest.mark.django_db(transaction=True)  # a run's task is sent on commit
EMAIL = "alice@example.com"


@pytest.fixture(autouse=True)
def eager():
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.fixture
def alice(fake_google, credential_factory):
    token = fake_google.issue_grant(EMAIL)
    return credential_factory(email=EMAIL, refresh_token=token, access_token=None, expires_in=None)


@pytest.mark.parametrize("action", ["refresh", "test", "reconnect", "disconnect"])
def test_actions_need_a_staff_session(client, django_user_model, alice, action):
    response = client.post(f"/accounts/{alice.pk}/{action}")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    user = django_user_model.objects.create_user(username="guest", password="x" * 12)
    client.force_login(user)
    response = client.post(f"/accounts/{alice.pk}/{action}")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert not ActionRun.objects.exists()


def test_changes_are_posts_with_the_csrf_token(staff_user, alice):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff_user)
    assert browser.get(f"/accounts/{alice.pk}/refresh").status_code == 405
    assert browser.post(f"/accounts/{alice.pk}/refresh").status_code == 403
    assert not ActionRun.objects.exists()


def test_an_unknown_account_is_a_404_page(staff_client):
    response = staff_client.post("/accounts/999999/refresh", HTTP_ACCEPT="text/html")
    assert response.status_code == 404
    assert "Page not found" in response.content.decode()


def test_refresh_queues_a_run_and_the_dashboard_shows_its_result(staff_client, alice, fake_google):
    response = staff_client.post(f"/accounts/{alice.pk}/refresh")
    run = ActionRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/#run-{run.pk}"
    page = staff_client.get("/").content.decode()
    assert f"Refresh now queued for {EMAIL}" in page
    assert 'data-status="succeeded"' in page and "refreshed; the new access token is valid" in page
    assert fake_google.refreshes_for(EMAIL) == 1


def test_disconnect_asks_first_then_revokes_and_deletes(staff_client, alice, fake_google):
    page = staff_client.get(f"/accounts/{alice.pk}/disconnect").content.decode()
    assert "Disconnect 1 account?" in page and EMAIL in page
    assert "Google is asked to revoke the grant" in page and "deleted here" in page
    assert GoogleCredential.objects.filter(pk=alice.pk).exists() and fake_google.stats["revokes"] == 0

    staff_client.post(f"/accounts/{alice.pk}/disconnect")

    assert not GoogleCredential.objects.filter(pk=alice.pk).exists()
    assert fake_google.grants[alice.refresh_token.reveal()].revoked
    event = AuditEvent.objects.get(action="disconnected")
    assert (event.actor, event.account, event.detail["deleted"]) == ("user:operator", EMAIL, True)


def test_revoke_asks_first_then_keeps_the_account_as_revoked(staff_client, alice, fake_google):
    assert "Revoke at Google 1 account?" in staff_client.get(f"/accounts/{alice.pk}/revoke").content.decode()
    staff_client.post(f"/accounts/{alice.pk}/revoke")
    assert GoogleCredential.objects.get(pk=alice.pk).revoked_at is not None


def test_reconnect_asks_google_with_the_account_preselected(staff_client, alice, settings):
    response = staff_client.post(f"/accounts/{alice.pk}/reconnect")
    assert response.status_code == 302
    assert response["Location"].startswith(settings.GOOGLE_OAUTH_AUTH_URI)
    assert "login_hint=alice%40example.com" in response["Location"]
    assert "prompt=consent" in response["Location"]


def test_the_dashboard_lets_its_reconnect_forms_reach_google_only(staff_client, alice, settings):
    policy = staff_client.get("/")["Content-Security-Policy"]
    form_action = next(p for p in policy.split(";") if p.strip().startswith("form-action"))
    origin = settings.GOOGLE_OAUTH_AUTH_URI.split("/o/")[0]
    assert form_action.split()[1:] == ["'self'", origin]
    other = staff_client.get("/api/oauth/status")["Content-Security-Policy"]
    assert origin not in other


def test_the_live_region_polls_faster_while_a_run_is_in_progress(staff_client, alice):
    fragment = staff_client.get("/accounts/live").content.decode()
    assert 'data-poll-ms="5000"' in fragment and "<html" not in fragment
    assert f'data-account="{EMAIL}"' in fragment
    ActionRun.objects.create(action="refresh", actor="user:operator", created_at=alice.created_at)
    assert 'data-poll-ms="1000"' in staff_client.get("/accounts/live").content.decode()


def test_a_revoked_card_says_each_thing_once_and_strikes_its_scopes(staff_client, alice, fake_google):
    credential_revoke(credential=alice, actor="user:operator")
    page = staff_client.get("/").content.decode()
    assert page.count('class="problem') == 1
    assert page.count("Revoked at Google by user:operator") == 1
    assert page.count("This grant was revoked.") == 1
    assert "Granted scopes" not in page and "Scopes (grant no longer valid)" in page
    assert page.count('class="scope dead"') == 5  # every scope the grant held
    # a dead grant offers Reconnect and Disconnect, not Refresh or Test
    assert f"/accounts/{alice.pk}/refresh" not in page and f"/accounts/{alice.pk}/reconnect" in page


def test_the_500_page_needs_no_request_context_and_keeps_the_style(rf):
    response = server_error(rf.get("/"))
    page = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong on the server" in page
    assert 'href="/static/oauth/site.css"' in page and "/api/health/ready" in page
