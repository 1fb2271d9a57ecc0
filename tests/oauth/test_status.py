"""oauth/status.py: the status payload (DESIGN.md's shape), remediation, privacy, constant queries."""
from __future__ import annotations

import datetime as dt
import json

import pytest
import responses
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.factories import ACCESS_TOKEN, CLIENT_SECRET, REFRESH_TOKEN
from oauth.models import AuditAction, _scope_lists
from oauth.services import audit_record
from oauth.status import status_json, status_payload

CALENDAR = "https://www.googleapis.com/auth/calendar"
PRIVATE_KEYS = {"email", "credential_key", "consented_at", "last_refreshed_at", "last_used_at",
                "last_error_code", "last_error_detail", "days_until_idle_limit"}


@pytest.fixture
def configured(settings, db):
    settings.GOOGLE_OAUTH_CLIENT_ID = "client.apps.googleusercontent.com"
    settings.GOOGLE_OAUTH_CLIENT_SECRET = CLIENT_SECRET


def test_nothing_stored_reads_not_configured_with_what_to_do(configured):
    payload = status_payload(include_private=False)
    assert payload["accounts"] == []
    google = payload["google"]
    assert google["state"] == "not_configured" and google["connected"] is False
    assert google["scopes_granted"] == [] and "Connect a Google account" in google["remediation"]


def test_without_a_client_the_remediation_names_the_client_settings(db, settings):
    settings.GOOGLE_OAUTH_CLIENT_ID = ""
    assert "GOOGLE_OAUTH_CLIENT_ID" in status_payload(include_private=False)["google"]["remediation"]


def test_connected_primary_with_gmail_and_calendar(configured, credential_factory):
    credential_factory(email="alice@example.com")
    google = status_payload(include_private=False)["google"]
    assert google["state"] == "connected" and google["connected"] is True
    assert "remediation" not in google
    assert CALENDAR in google["scopes_granted"]
    assert any("gmail" in scope for scope in google["scopes_granted"])
    assert google["missing_scopes"] == []


def test_anonymous_callers_see_states_and_scopes_only_and_staff_see_details(configured, credential_factory):
    credential_factory(email="alice@example.com", last_error_code="x", last_error_detail="y")
    public = status_payload(include_private=False)
    assert not PRIVATE_KEYS & set(public["google"])
    assert "alice@example.com" not in json.dumps(public)
    private = status_payload(include_private=True)["google"]
    assert PRIVATE_KEYS <= set(private)
    assert private["email"] == "alice@example.com" and private["credential_key"] == "google"
    assert 180 <= private["days_until_idle_limit"] <= 183


def test_no_secret_ever_appears_in_the_payload(configured, credential_factory):
    credential_factory(email="alice@example.com", client_secret=CLIENT_SECRET)
    text = json.dumps(status_payload(include_private=True))
    for secret in (REFRESH_TOKEN, ACCESS_TOKEN, CLIENT_SECRET):
        assert secret not in text


def test_accounts_list_the_primary_first_and_google_repeats_it(configured, credential_factory):
    credential_factory(email="zed@example.com", credential_key="google:zed@example.com")
    credential_factory(email="alice@example.com", credential_key="google")
    payload = status_payload(include_private=True)
    assert [a["email"] for a in payload["accounts"]] == ["alice@example.com", "zed@example.com"]
    assert payload["google"] == payload["accounts"][0]


def test_the_anonymous_list_also_puts_the_primary_first_whenever_it_was_connected(
    configured, credential_factory
):
    # The anonymous list is read in the order of the rows' ids, the primary moved up after.
    credential_factory(email="zed@example.com", credential_key="google:zed@example.com")
    credential_factory(email="alice@example.com", credential_key="google", state="expired")
    credential_factory(email="bob@example.com", credential_key="google:bob@example.com",
                       scopes=("openid", "email", "gmail.modify"))
    payload = status_payload(include_private=False)
    assert [a["state"] for a in payload["accounts"]] == ["expired", "connected", "missing_scope"]
    assert payload["google"] == payload["accounts"][0]
    assert json.loads(status_json(include_private=False)) == payload


def test_scopes_changed_after_the_grant_show_in_the_anonymous_status(configured, credential_factory):
    from oauth.services import credential_set_scopes

    credential = credential_factory(email="alice@example.com")
    credential_set_scopes(credential=credential, scopes=("openid", "email", "gmail.modify"))
    google = json.loads(status_json(include_private=False))["google"]
    assert google["state"] == "missing_scope"
    assert CALENDAR not in google["scopes_granted"] and google["missing_scopes"] == [CALENDAR]


def test_partial_grant_is_missing_scope_naming_calendar(configured, credential_factory):
    credential_factory(scopes=("openid", "email", "gmail.modify"))
    google = status_payload(include_private=False)["google"]
    assert google["state"] == "missing_scope" and google["connected"] is False
    assert google["missing_scopes"] == [CALENDAR]
    assert "calendar" in google["remediation"]


@pytest.mark.parametrize(
    "state", ["missing_scope", "expired", "refresh_failing", "misconfigured", "redirect_uri_mismatch"]
)
def test_every_non_connected_state_carries_a_remediation(configured, credential_factory, state):
    credential_factory(state=state)
    google = status_payload(include_private=False)["google"]
    assert google["state"] == state and google["connected"] is False
    assert len(google["remediation"]) > 20


def test_a_grant_dying_about_seven_days_after_consent_points_at_testing_status(configured, credential_factory):
    now = timezone.now()
    credential_factory(state="expired", consented_at=now - dt.timedelta(days=7, hours=2),
                       refresh_token_issued_at=now - dt.timedelta(days=7, hours=2),
                       last_error_at=now, last_error_code="invalid_grant")
    remediation = status_payload(include_private=False)["google"]["remediation"]
    assert "Testing" in remediation and "In production" in remediation


def test_an_old_grant_that_expired_is_not_the_testing_case(configured, credential_factory):
    now = timezone.now()
    credential_factory(state="expired", consented_at=now - dt.timedelta(days=200),
                       last_error_at=now, last_error_code="invalid_grant")
    remediation = status_payload(include_private=False)["google"]["remediation"]
    assert "Testing" not in remediation and "Reconnect" in remediation


def test_a_revoked_grant_reads_expired_and_says_it_was_revoked(configured, credential_factory):
    credential_factory(revoked_at=timezone.now())
    google = status_payload(include_private=False)["google"]
    assert google["state"] == "expired" and "revoked" in google["remediation"]


def test_credentials_without_any_client_to_refresh_them_read_misconfigured(db, settings, credential_factory):
    settings.GOOGLE_OAUTH_CLIENT_ID = ""
    credential_factory()
    google = status_payload(include_private=False)["google"]
    assert google["state"] == "misconfigured" and "GOOGLE_OAUTH_CLIENT_ID" in google["remediation"]


def test_an_imported_credential_with_its_own_secret_needs_no_configured_client(db, settings, credential_factory):
    settings.GOOGLE_OAUTH_CLIENT_ID = ""
    credential_factory(client_secret=CLIENT_SECRET)
    assert status_payload(include_private=False)["google"]["state"] == "connected"


def test_a_redirect_uri_mismatch_at_first_consent_shows_in_status(configured):
    audit_record(action=AuditAction.CONSENT_FAILED, actor="user:operator", outcome="redirect_uri_mismatch")
    google = status_payload(include_private=False)["google"]
    assert google["state"] == "redirect_uri_mismatch"
    assert "Authorized redirect URIs" in google["remediation"]


def test_status_never_calls_google(configured, credential_factory):
    credential_factory(state="expired")
    with responses.RequestsMock():  # any HTTP call would fail with ConnectionError
        status_payload(include_private=True)


def _count_queries(include_private: bool) -> int:
    _scope_lists.clear()  # as in a process that has not read any scope list yet
    with CaptureQueriesContext(connection) as queries:
        status_payload(include_private=include_private)
    return len(queries)


def test_status_makes_the_same_number_of_queries_for_1_and_50_accounts(configured, credential_factory):
    credential_factory(email="first@example.com", state="expired",
                       scopes=("gmail.modify",), last_error_code="invalid_grant")
    one = _count_queries(True), _count_queries(False)
    for n in range(49):
        credential_factory(email=f"member{n}@example.com", state=("connected", "refresh_failing")[n % 2],
                           scopes=("gmail.modify", "calendar") if n % 3 else ("gmail.readonly",))
    assert len(status_payload(include_private=False)["accounts"]) == 50
    fifty = _count_queries(True), _count_queries(False)
    assert one == fifty
    assert one[0] <= 5  # credentials, scopes, client, last consent, RISC stream verification
    assert one[1] <= 2  # the judged columns; the scope lists this process has not seen yet


def test_each_distinct_scope_list_is_read_once_per_process(configured, credential_factory):
    for n in range(20):
        credential_factory(email=f"member{n}@example.com",
                           scopes=("gmail.modify", "calendar") if n % 2 else ("gmail.readonly",))
    cold = _count_queries(False)
    with CaptureQueriesContext(connection) as queries:
        warm = status_payload(include_private=False)
    assert len(queries) == cold - 1  # the two scope lists come from memory now
    assert warm == status_payload(include_private=False)
    assert sorted({len(a["scopes_granted"]) for a in warm["accounts"]}) == [1, 2]
    assert sum(CALENDAR in a["scopes_granted"] for a in warm["accounts"]) == 10
