"""The credential admin's actions and object buttons, as a staff member clicking them sees them.

Every action is queued as a background run (here run eagerly: the worker is not the point; see
tests/e2e/test_control_panel.py for a real worker) and lands on the dashboard with its result.
Revoke and Disconnect ask first.
"""
from __future__ import annotations

import re

import pytest

from butlers.celery import app
from oauth.models import ActionRun, AuditEvent, GoogleCredential
from tests.factories import CLIENT_SECRET

# Committed rows: a run's task is sent once its rows are committed (transaction.on_commit).
pytestmark = pytest.mark.django_db(transaction=True)
CHANGELIST = "/admin/oauth/googlecredential/"
EMAIL = "alice@example.com"


@pytest.fixture(autouse=True)
def eager():
    """Tasks run in this process as soon as the request's rows are committed."""
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.fixture
def alice(fake_google, credential_factory):
    token = fake_google.issue_grant(EMAIL, scopes=["openid", "email", "gmail.modify", "calendar"])
    return credential_factory(email=EMAIL, refresh_token=token, access_token=None, expires_in=None)


def _run(staff_client, action: str, *credentials, **extra):
    return staff_client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [c.pk for c in credentials], **extra},
        follow=True,
    )


def _results(run: ActionRun) -> dict[str, tuple[str, str]]:
    return {item.account: (item.status, item.message) for item in run.items.all()}


def _secrets(fake_google, *credentials) -> list[str]:
    values = [CLIENT_SECRET, *fake_google.access_tokens]
    for credential in credentials:
        stored = GoogleCredential.objects.filter(pk=credential.pk).first()
        if stored is not None:
            values.append(stored.refresh_token.reveal())
    return values


def test_the_actions_are_offered_and_delete_is_not(staff_client, alice):
    page = staff_client.get(CHANGELIST).content.decode()
    for action in ("refresh_now", "test_credential", "revoke_at_google", "disconnect"):
        assert f'value="{action}"' in page
    assert 'value="delete_selected"' not in page


def test_refresh_now_runs_in_the_background_and_shows_on_the_dashboard(staff_client, alice, fake_google):
    response = _run(staff_client, "refresh_now", alice)

    assert response.redirect_chain[-1][0].startswith("/#run-")
    page = response.content.decode()
    assert "Refresh now queued for 1 account" in page
    run = ActionRun.objects.get()
    status, message = _results(run)[EMAIL]
    assert status == "succeeded" and message.startswith("refreshed; the new access token is valid for 35")
    assert fake_google.refreshes_for(EMAIL) == 1
    assert f'id="run-{run.pk}"' in page and "Done" in page
    for secret in _secrets(fake_google, alice):
        assert secret not in page


def test_each_account_of_a_run_gets_its_own_result(staff_client, alice, fake_google, credential_factory):
    bob = credential_factory(
        email="bob@example.com", refresh_token=fake_google.issue_grant("bob@example.com"),
        access_token=None, expires_in=None,
    )
    fake_google.expire_grant("bob@example.com")

    _run(staff_client, "refresh_now", alice, bob)

    results = _results(ActionRun.objects.get())
    assert results[EMAIL][0] == "succeeded"
    assert results["bob@example.com"][0] == "failed"
    assert results["bob@example.com"][1].startswith("refresh failed (expired)")


def test_test_action_probes_the_granted_apis(staff_client, alice, fake_google):
    _run(staff_client, "test_credential", alice)

    assert _results(ActionRun.objects.get())[EMAIL] == ("succeeded", "calendar: ok, gmail: ok")
    assert GoogleCredential.objects.get(pk=alice.pk).last_probed_at is not None
    assert AuditEvent.objects.get(action="probed").detail == {"calendar": "ok", "gmail": "ok"}


def test_test_fails_an_account_lacking_a_required_scope_even_when_its_apis_answer(
    staff_client, fake_google, credential_factory
):
    token = fake_google.issue_grant("carol@example.com", scopes=["openid", "email", "gmail.modify"])
    carol = credential_factory(
        email="carol@example.com", refresh_token=token, access_token=None, expires_in=None,
        scopes=("openid", "email", "gmail.modify"),
    )
    _run(staff_client, "test_credential", carol)

    status, message = _results(ActionRun.objects.get())["carol@example.com"]
    assert status == "failed"
    assert message.startswith("missing required scope calendar")
    assert "(gmail: ok)" in message


def test_revoke_at_google_asks_first_and_nothing_happens_until_confirmed(staff_client, alice, fake_google):
    response = _run(staff_client, "revoke_at_google", alice)

    page = response.content.decode()
    assert "Revoke at Google 1 account?" in page and EMAIL in page
    assert "stop working at once" in page
    assert fake_google.stats["revokes"] == 0 and not ActionRun.objects.exists()

    _run(staff_client, "revoke_at_google", alice, confirmed="yes")

    assert fake_google.stats["revokes"] == 1
    assert _results(ActionRun.objects.get())[EMAIL][0] == "succeeded"
    stored = GoogleCredential.objects.get(pk=alice.pk)
    assert stored.state == "expired" and stored.revoked_at is not None
    assert AuditEvent.objects.get(action="revoked").actor == "user:operator"


def test_disconnect_revokes_at_google_then_deletes_and_audits_who(staff_client, alice, fake_google):
    page = _run(staff_client, "disconnect", alice).content.decode()
    assert "Disconnect 1 account?" in page and "deleted here" in page
    assert GoogleCredential.objects.filter(pk=alice.pk).exists()

    _run(staff_client, "disconnect", alice, confirmed="yes")

    assert not GoogleCredential.objects.filter(pk=alice.pk).exists()
    assert fake_google.grants[alice.refresh_token.reveal()].revoked
    event = AuditEvent.objects.get(action="disconnected")
    assert (event.actor, event.account, event.outcome) == ("user:operator", EMAIL, "revoked")


def test_disconnect_keeps_the_account_when_google_does_not_confirm(staff_client, alice, fake_google):
    fake_google.stop()  # Google unreachable
    _run(staff_client, "disconnect", alice, confirmed="yes")

    status, message = _results(ActionRun.objects.get())[EMAIL]
    assert status == "failed" and "Nothing was deleted" in message
    assert GoogleCredential.objects.filter(pk=alice.pk).exists()
    assert not AuditEvent.objects.filter(action="disconnected").exists()


def test_the_change_page_is_read_only_with_object_buttons(staff_client, alice):
    page = staff_client.get(f"{CHANGELIST}{alice.pk}/change/").content.decode()
    assert 'name="_save"' not in page and 'name="_continue"' not in page
    assert "deletelink" not in page
    for label in ("Refresh now", "Test", "Reconnect", "Disconnect…"):
        assert f">{label}</" in page
    # times read relative, with the absolute time beneath
    assert re.search(r'<time datetime="[^"]+" title="\d{4}-\d\d-\d\d \d\d:\d\d UTC">just now</time>', page)


def test_object_buttons_queue_the_action_or_ask_first(staff_client, alice, fake_google):
    base = f"{CHANGELIST}{alice.pk}/actions"
    assert staff_client.get(f"{base}/refresh_this/").status_code == 405  # POST only
    response = staff_client.post(f"{base}/refresh_this/", follow=True)
    assert response.redirect_chain[-1][0].startswith("/#run-")
    assert fake_google.refreshes_for(EMAIL) == 1

    confirm = staff_client.get(f"{base}/disconnect_this/").content.decode()
    assert "Disconnect 1 account?" in confirm and GoogleCredential.objects.filter(pk=alice.pk).exists()
    staff_client.post(f"{base}/disconnect_this/", {"confirmed": "yes"})
    assert not GoogleCredential.objects.filter(pk=alice.pk).exists()


def test_reconnect_button_starts_consent_with_the_account_preselected(staff_client, alice, settings):
    response = staff_client.post(f"{CHANGELIST}{alice.pk}/actions/reconnect_this/")
    assert response.status_code == 302
    assert response["Location"].startswith(settings.GOOGLE_OAUTH_AUTH_URI)
    assert "login_hint=alice%40example.com" in response["Location"]


def test_the_list_shows_badges_last_errors_and_both_times(staff_client, alice, fake_google, credential_factory):
    fake_google.expire_grant(EMAIL)
    _run(staff_client, "refresh_now", alice)
    page = staff_client.get(CHANGELIST).content.decode()
    assert '<span class="state-badge expired">Expired or revoked</span>' in page
    assert ">invalid_grant</code>" in page
    assert "oauth/admin.css" in page


def test_past_runs_stay_listed_in_the_admin(staff_client, alice, fake_google, credential_factory):
    bob = credential_factory(email="bob@example.com", refresh_token=fake_google.issue_grant("bob@example.com"),
                             access_token=None, expires_in=None)
    fake_google.expire_grant("bob@example.com")
    _run(staff_client, "refresh_now", alice, bob)
    run = ActionRun.objects.get()

    listing = staff_client.get("/admin/oauth/actionrun/").content.decode()
    assert "1 done, 1 failed" in listing and "user:operator" in listing
    detail = staff_client.get(f"/admin/oauth/actionrun/{run.pk}/change/").content.decode()
    assert "refresh failed (expired)" in detail and 'name="_save"' not in detail
