"""One state everywhere: the status API, the dashboard, the admin changelist and /metrics agree.

Every way a grant can look is walked through every place an operator reads it. The rule lives in
one place (``GoogleCredential.effective_state``); this proves each reader uses it.
"""
from __future__ import annotations

import re

import pytest
from django.utils import timezone

from oauth.models import CredentialState

pytestmark = pytest.mark.django_db

FULL = ("openid", "email", "gmail.modify", "calendar")

#: case -> (stored fields, scopes, OAuth client configured?, the state an operator must see)
CASES = {
    "connected": ({"state": "connected"}, FULL, True, "connected"),
    "lacks_a_required_scope": ({"state": "connected"}, ("openid", "email", "gmail.modify"), True,
                               "missing_scope"),
    "probe_found_missing_scope": ({"state": "missing_scope"}, FULL, True, "missing_scope"),
    "expired": ({"state": "expired", "last_error_code": "invalid_grant"}, FULL, True, "expired"),
    "refresh_failing": ({"state": "refresh_failing", "consecutive_failures": 3}, FULL, True,
                        "refresh_failing"),
    "client_rejected": ({"state": "misconfigured", "last_error_code": "invalid_client"}, FULL, True,
                        "misconfigured"),
    "no_client_secret_anywhere": ({"state": "connected"}, FULL, False, "misconfigured"),
    "revoked": ({"state": "connected", "revoked_at": "now"}, FULL, True, "expired"),
    "redirect_uri_mismatch": ({"state": "redirect_uri_mismatch"}, FULL, True,
                              "redirect_uri_mismatch"),
}


def _metric(text: str, state: str) -> float:
    match = re.search(rf'^butlers_oauth_credentials\{{state="{state}"\}} (\S+)$', text, re.M)
    assert match, f"no butlers_oauth_credentials sample for {state}"
    return float(match.group(1))


@pytest.mark.parametrize("case", list(CASES))
def test_every_reader_shows_the_same_state(case, staff_client, credential_factory, settings):
    fields, scopes, client_configured, expected = CASES[case]
    settings.GOOGLE_OAUTH_CLIENT_ID = "client-id.apps.googleusercontent.com" if client_configured else ""
    settings.GOOGLE_OAUTH_CLIENT_SECRET = "GOCSPX-client" if client_configured else ""
    fields = dict(fields)
    if fields.get("revoked_at") == "now":
        fields["revoked_at"] = timezone.now()
    credential_factory(email="alice@example.com", scopes=scopes, **fields)
    label = CredentialState(expected).label

    from django.test import Client

    anonymous = Client().get("/api/oauth/status").json()  # the public path judges plain rows
    assert anonymous["accounts"][0]["state"] == expected
    assert ("remediation" in anonymous["accounts"][0]) is (expected != "connected")
    status = staff_client.get("/api/oauth/status").json()
    assert status["accounts"][0]["state"] == expected
    assert status["google"]["state"] == expected
    assert status["google"]["connected"] is (expected == "connected")

    dashboard = staff_client.get("/").content.decode()
    assert f'data-state="{expected}"' in dashboard
    assert f'<span class="badge {expected}">{label}</span>' in dashboard

    changelist = staff_client.get("/admin/oauth/googlecredential/").content.decode()
    assert (
        f'<td class="field-current_state"><span class="state-badge {expected}">{label}</span></td>'
        in changelist
    )
    filtered = staff_client.get(f"/admin/oauth/googlecredential/?state={expected}").content.decode()
    assert "alice@example.com" in filtered

    metrics = staff_client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert _metric(metrics, expected) == 1
    for other in CredentialState.values:
        if other != expected:
            assert _metric(metrics, other) == 0
