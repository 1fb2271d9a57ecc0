"""Errors of the connectors, named as the runbook names them.

``CalendarCredentialError`` (no usable credential: "... must be set to a non-empty JSON object",
"... is missing required field(s): [...]"), ``CalendarTokenRefreshError`` ("Failed to refresh
access token: ..."), ``CalendarRequestError`` ("Google Calendar API request failed (403): ...",
with ``status_code``), and the same three for Gmail. Messages are built from Google's short error
text and our own words, redacted, never from a token.
"""
from __future__ import annotations


class ConnectorError(Exception):
    """Base class of every connector error."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


class ConnectorCredentialError(ConnectorError):
    """No usable credential resolved (nothing stored, or a malformed deprecated env var)."""


class ConnectorTokenRefreshError(ConnectorError):
    """No access token could be had. ``error`` is the token service's code; ``reconsent_required``
    is true when the grant is dead (expired/revoked) and only a new consent helps."""

    def __init__(self, message: str, *, error: str = "token_error", reconsent_required: bool = False):
        super().__init__(message)
        self.error = error
        self.reconsent_required = reconsent_required


class ConnectorRequestError(ConnectorError):
    """Google's API refused the request; ``status_code`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, *, status_code: int | None) -> None:
        super().__init__(message)
        self.status_code = status_code


class CalendarError(ConnectorError):
    """Base class of the Calendar client's errors."""


class CalendarCredentialError(CalendarError, ConnectorCredentialError):
    """No usable Google credential for the Calendar client (see the runbook, section 3.1/3.2)."""


class CalendarTokenRefreshError(CalendarError, ConnectorTokenRefreshError):
    """The access token could not be refreshed (runbook section 3.3)."""


class CalendarRequestError(CalendarError, ConnectorRequestError):
    """The Calendar API answered an error (runbook sections 3.4, 3.5)."""


class GmailError(ConnectorError):
    """Base class of the Gmail connector's errors."""


class GmailCredentialError(GmailError, ConnectorCredentialError):
    """No usable Google credential for the Gmail connector."""


class GmailTokenRefreshError(GmailError, ConnectorTokenRefreshError):
    """The access token could not be refreshed; an expired grant stops the connector."""


class GmailRequestError(GmailError, ConnectorRequestError):
    """The Gmail API answered an error."""
