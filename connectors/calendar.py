"""The Google Calendar client: calendars, events in a time window, create/update/delete.

Built on the token service (one way to get an access token) through
:mod:`connectors.google_api`. Errors and log lines keep the runbook's wording: the logger is
named ``calendar`` and says "Initialized calendar module with Google provider" and
"Calendar API request succeeded (200 OK)"; failures raise :class:`CalendarCredentialError`,
:class:`CalendarTokenRefreshError` or :class:`CalendarRequestError` (``status_code``).
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from oauth.exceptions import CredentialError
from oauth.selectors import credential_resolve

from .exceptions import CalendarCredentialError, CalendarRequestError, CalendarTokenRefreshError
from .google_api import GoogleApiClient, path_segment

logger = logging.getLogger("calendar")

__all__ = [
    "CalendarClient",
    "CalendarCredentialError",
    "CalendarRequestError",
    "CalendarTokenRefreshError",
]

#: Follow at most this many pages of one listing (Google's page size tops out at 2500 events).
MAX_PAGES = 100


def _rfc3339(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("Calendar time bounds must be timezone-aware datetimes")
    return value.isoformat()


class CalendarClient(GoogleApiClient):
    """A Calendar client for one account (``account`` email), or the primary without one."""

    log_name = "Calendar"
    error_name = "Google Calendar"
    credential_error = CalendarCredentialError
    token_refresh_error = CalendarTokenRefreshError
    request_error = CalendarRequestError
    logger = logger

    def __init__(self, *, account: str | None = None, actor: str = "process:calendar") -> None:
        super().__init__(account=account, actor=actor)
        try:
            # Fail at start-up, not on the first call, when no credential resolves.
            credential_resolve(account=account)
        except CredentialError as exc:
            raise CalendarCredentialError(str(exc)) from None
        logger.info("Initialized calendar module with Google provider")

    def _pages(self, path: str, params: dict[str, Any]) -> list[dict]:
        items: list[dict] = []
        page_token = None
        for _ in range(MAX_PAGES):
            query = dict(params)
            if page_token:
                query["pageToken"] = page_token
            body = self.request("GET", path, params=query) or {}
            items.extend(body.get("items") or [])
            page_token = body.get("nextPageToken")
            if not page_token:
                break
        return items

    def calendars_list(self) -> list[dict]:
        """Every calendar on the account's calendar list."""
        return self._pages("/calendar/v3/users/me/calendarList", {"maxResults": 250})

    def events_list(
        self,
        *,
        calendar_id: str = "primary",
        time_min: dt.datetime | None = None,
        time_max: dt.datetime | None = None,
        page_size: int = 250,
    ) -> list[dict]:
        """Events overlapping [time_min, time_max), following every page."""
        params: dict[str, Any] = {"maxResults": page_size, "singleEvents": "true"}
        if time_min is not None:
            params["timeMin"] = _rfc3339(time_min)
        if time_max is not None:
            params["timeMax"] = _rfc3339(time_max)
        return self._pages(f"/calendar/v3/calendars/{path_segment(calendar_id)}/events", params)

    def event_create(self, *, event: dict, calendar_id: str = "primary") -> dict:
        """Create ``event`` (Google's event resource: summary, start, end, ...); returns it with id."""
        return self.request(
            "POST", f"/calendar/v3/calendars/{path_segment(calendar_id)}/events", json=event
        ) or {}

    def event_update(self, *, event_id: str, changes: dict, calendar_id: str = "primary") -> dict:
        """Change some fields of an event (PATCH); returns the updated event."""
        return self.request(
            "PATCH",
            f"/calendar/v3/calendars/{path_segment(calendar_id)}/events/{path_segment(event_id)}",
            json=changes,
        ) or {}

    def event_delete(self, *, event_id: str, calendar_id: str = "primary") -> None:
        """Delete an event."""
        self.request(
            "DELETE",
            f"/calendar/v3/calendars/{path_segment(calendar_id)}/events/{path_segment(event_id)}",
        )
