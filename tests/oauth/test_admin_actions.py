"""The credential admin's actions, as a staff member clicking them sees them."""
from __future__ import annotations

import pytest
from django.contrib.messages import get_messages

from tests.factories import CLIENT_SECRET
from oauth.models import AuditEvent, GoogleCredential

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/oauth/googlecredential/"
EMAIL = "alice@example.com"


@pytest.fixture
def alice(fake_google, credential_factory):
    token = fake_google.issue_grant(EMAIL, scopes=["openid", "email", "gmail.modify", "calendar"])
    return credential_factory(email=EMAIL, refresh_token=token, access_token=None, expires_in=None)


def _run(staff_client, action: str, *credentials) -> tuple[list[str], str]:
    response = staff_client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [c.pk for c in credentials]},
        follow=True,
    )
    assert response.status_code == 200
    return [str(m) for m in get_messages(response.wsgi_request)], response.content.decode()


def _secrets(fake_google, *credentials) -> list[str]:
    values = [CLIENT_SECRET, *fake_google.access_tokens]
    for credential in credentials:
        stored = GoogleCredential.objects.get(pk=credential.pk)
        values.append(stored.refresh_token.reveal())
    return values


def test_the_three_actions_are_offered(staff_client, alice):
    page = staff_client.get(CHANGELIST).content.decode()
    for action in ("refresh_now", "test_credential", "revoke_at_google"):
        assert f'value="{action}"' in page


def test_refresh_now_refreshes_and_reports(staff_client, alice, fake_google):
    messages, page = _run(staff_client, "refresh_now", alice)

    assert fake_google.refreshes_for(EMAIL) == 1
    assert len(messages) == 1
    assert messages[0].startswith(f"{EMAIL}: refreshed; the new access token is valid for 35")
    for secret in _secrets(fake_google, alice):
        assert secret not in page


def test_refresh_now_reports_each_credential_on_its_own(staff_client, alice, fake_google, credential_factory):
    bob = credential_factory(
        email="bob@example.com", refresh_token=fake_google.issue_grant("bob@example.com"),
        access_token=None, expires_in=None,
    )
    fake_google.expire_grant("bob@example.com")

    messages, page = _run(staff_client, "refresh_now", alice, bob)

    assert any(m.startswith(f"{EMAIL}: refreshed") for m in messages)
    assert any(m.startswith("bob@example.com: refresh failed:") and "invalid_grant" in m for m in messages)
    for secret in _secrets(fake_google, alice, bob):
        assert secret not in page


def test_test_action_probes_the_granted_apis(staff_client, alice, fake_google):
    messages, page = _run(staff_client, "test_credential", alice)

    assert messages == [f"{EMAIL}: calendar: ok, gmail: ok."]
    assert GoogleCredential.objects.get(pk=alice.pk).last_probed_at is not None
    assert AuditEvent.objects.get(action="probed").detail == {"calendar": "ok", "gmail": "ok"}
    for secret in _secrets(fake_google, alice):
        assert secret not in page


def test_revoke_at_google_revokes_and_reports(staff_client, alice, fake_google):
    messages, page = _run(staff_client, "revoke_at_google", alice)

    assert fake_google.stats["revokes"] == 1
    assert messages == [f"{EMAIL}: revoked at Google (revoked). Reconnect it from the dashboard to use it again."]
    stored = GoogleCredential.objects.get(pk=alice.pk)
    assert stored.state == "expired" and stored.revoked_at is not None
    assert AuditEvent.objects.get(action="revoked").actor == "user:operator"
    for secret in _secrets(fake_google, alice):
        assert secret not in page
