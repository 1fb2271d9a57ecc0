"""The Calendar client against the fake Google: what a connector and an operator would see."""
from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

from tests.factories import CLIENT_ID, CLIENT_SECRET
from connectors import google_api
from connectors.calendar import (
    CalendarClient,
    CalendarCredentialError,
    CalendarRequestError,
    CalendarTokenRefreshError,
)
from oauth.models import GoogleCredential

pytestmark = pytest.mark.django_db
EMAIL = "alice@example.com"
UTC = dt.timezone.utc



@pytest.fixture
def waits(monkeypatch):
    """The waits the client asked for between retries (nothing actually sleeps)."""
    recorded: list[float] = []
    monkeypatch.setattr(google_api, "sleep", recorded.append)
    return recorded


@pytest.fixture
def account(fake_google, credential_factory):
    """A stored grant the fake knows; no access token yet, so the first call refreshes."""
    refresh_token = fake_google.issue_grant(EMAIL, scopes=["openid", "email", "gmail.modify", "calendar"])
    return credential_factory(email=EMAIL, refresh_token=refresh_token, access_token=None, expires_in=None)


def _event(summary: str, day: int) -> dict:
    start = dt.datetime(2030, 1, day, 9, tzinfo=UTC)
    return {
        "summary": summary,
        "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()},
    }


def test_lists_calendars_and_creates_updates_deletes_events(account, fake_google, caplog):
    with caplog.at_level(logging.INFO):
        client = CalendarClient()
        calendars = client.calendars_list()
        created = client.event_create(event=_event("Dentist", 3))
        updated = client.event_update(event_id=created["id"], changes={"summary": "Dentist (moved)"})
        listed = client.events_list(
            time_min=dt.datetime(2030, 1, 1, tzinfo=UTC), time_max=dt.datetime(2030, 1, 31, tzinfo=UTC)
        )
        client.event_delete(event_id=created["id"])
        after_delete = client.events_list(time_min=dt.datetime(2030, 1, 1, tzinfo=UTC))

    assert [c["id"] for c in calendars] == ["primary"]
    assert created["id"] and updated["summary"] == "Dentist (moved)"
    assert [e["summary"] for e in listed] == ["Dentist (moved)"]
    assert after_delete == []
    messages = [r.getMessage() for r in caplog.records if r.name == "calendar"]
    assert "Initialized calendar module with Google provider" in messages
    assert "Calendar API request succeeded (200 OK)" in messages
    assert fake_google.refreshes_for(EMAIL) == 1  # one refresh served every call


def test_events_list_honours_the_window_and_follows_pages(account):
    client = CalendarClient()
    for day in range(1, 8):
        client.event_create(event=_event(f"Day {day}", day))

    events = client.events_list(
        time_min=dt.datetime(2030, 1, 2, tzinfo=UTC),
        time_max=dt.datetime(2030, 1, 7, tzinfo=UTC),
        page_size=2,
    )

    assert [e["summary"] for e in events] == [f"Day {d}" for d in range(2, 7)]


def test_insufficient_scope_raises_request_error_403(fake_google, credential_factory):
    token = fake_google.issue_grant(EMAIL, scopes=["openid", "email", "calendar.readonly"])
    credential_factory(email=EMAIL, refresh_token=token, access_token=None, expires_in=None)
    client = CalendarClient()
    assert client.calendars_list()  # reading is allowed with calendar.readonly

    with pytest.raises(CalendarRequestError) as exc_info:
        client.event_create(event=_event("Not allowed", 3))

    assert exc_info.value.status_code == 403
    assert str(exc_info.value) == (
        "Google Calendar API request failed (403): Request had insufficient authentication scopes."
    )


def test_a_401_forces_one_refresh_then_succeeds(account, fake_google):
    client = CalendarClient()
    client.calendars_list()
    fake_google.revoke_access_tokens(EMAIL)  # Google stops honouring the cached access token

    calendars = client.calendars_list()

    assert calendars
    assert fake_google.refreshes_for(EMAIL) == 2


def test_a_401_after_the_forced_refresh_is_a_request_error(account, fake_google, monkeypatch):
    client = CalendarClient()
    client.calendars_list()
    # every access token Google hands out is refused at once
    real_mint = fake_google._mint_access_token

    def mint_revoked(email, scopes, refresh_token):
        token = real_mint(email, scopes, refresh_token)
        fake_google.access_tokens[token].revoked = True
        return token

    monkeypatch.setattr(fake_google, "_mint_access_token", mint_revoked)
    fake_google.revoke_access_tokens(EMAIL)

    with pytest.raises(CalendarRequestError) as exc_info:
        client.calendars_list()

    assert exc_info.value.status_code == 401
    assert fake_google.refreshes_for(EMAIL) == 2  # exactly one forced refresh, no loop


def test_invalid_grant_raises_token_refresh_error(account, fake_google):
    fake_google.expire_grant(EMAIL)

    with pytest.raises(CalendarTokenRefreshError) as exc_info:
        CalendarClient().calendars_list()

    assert str(exc_info.value).startswith("Failed to refresh access token: ")
    assert exc_info.value.reconsent_required
    assert GoogleCredential.objects.get(email=EMAIL).state == "expired"


def test_429_and_503_are_retried_honouring_retry_after(account, fake_google, waits):
    fake_google.fail_api(1, status=429, retry_after=7, prefix="/calendar")
    fake_google.fail_api(1, status=503, retry_after=2, prefix="/calendar")

    assert CalendarClient().calendars_list()
    assert waits == [7.0, 2.0]


def test_retry_after_is_capped_and_retries_are_bounded(account, fake_google, waits, settings):
    settings.CONNECTOR_MAX_RETRIES = 2
    settings.CONNECTOR_MAX_RETRY_AFTER = 5
    fake_google.fail_api(5, status=503, retry_after=3600, prefix="/calendar")

    with pytest.raises(CalendarRequestError) as exc_info:
        CalendarClient().calendars_list()

    assert exc_info.value.status_code == 503
    assert waits == [5.0, 5.0]


def test_no_credential_raises_credential_error_with_the_runbook_message():
    with pytest.raises(CalendarCredentialError, match="must be set to a non-empty JSON object"):
        CalendarClient()


def test_malformed_env_json_raises_credential_error(monkeypatch):
    monkeypatch.setenv("BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON", json.dumps({"client_id": CLIENT_ID}))

    with pytest.raises(CalendarCredentialError) as exc_info:
        CalendarClient()

    assert str(exc_info.value) == (
        "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON is missing required field(s): "
        "[client_secret, refresh_token]"
    )


def test_works_from_the_deprecated_env_json_alone(fake_google, monkeypatch):
    refresh_token = fake_google.issue_grant(EMAIL)
    monkeypatch.setenv(
        "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON",
        json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "refresh_token": refresh_token}),
    )

    assert CalendarClient().calendars_list()[0]["primary"] is True


def test_no_secret_in_logs_or_errors(account, fake_google, caplog):
    with caplog.at_level(logging.DEBUG):
        client = CalendarClient()
        client.calendars_list()
        fake_google.expire_grant(EMAIL)
        fake_google.revoke_access_tokens(EMAIL)
        with pytest.raises(CalendarTokenRefreshError) as exc_info:
            client.calendars_list()

    stored = GoogleCredential.objects.get(email=EMAIL)
    secrets = [stored.refresh_token.reveal(), CLIENT_SECRET, *fake_google.access_tokens]
    for secret in secrets:
        assert secret not in caplog.text
        assert secret not in str(exc_info.value)
        assert secret not in repr(client)
