"""The connectors' settings: one object, defaults in one place, read at call time.

``from connectors.app_settings import connector_settings`` then
``connector_settings.GMAIL_POLL_INTERVAL``. Each name is a plain Django setting (``butlers/settings.py``
fills those that come from the environment), so tests override it with pytest-django's
``settings`` fixture. Google's endpoints and the HTTP timeout are the OAuth app's
(``oauth.app_settings``): the connectors reach Google through its transport. An unknown name
raises ``AttributeError``.
"""
from __future__ import annotations

from typing import Any

from django.conf import settings

from oauth.app_settings import oauth_settings

#: name -> (default, what it means)
DEFAULTS: dict[str, tuple[Any, str]] = {
    "GMAIL_POLL_INTERVAL": (60, "Seconds between Gmail polls."),
    "GMAIL_BASELINE_MESSAGES": (
        25,
        "Recent INBOX messages ingested when a mailbox is first polled (its baseline).",
    ),
    "GMAIL_RELIST_LIMIT": (
        100,
        "Most INBOX messages re-listed when Google no longer knows the stored history cursor.",
    ),
    "CONNECTOR_MAX_RETRIES": (
        3,
        "Retries of a Gmail/Calendar API call that Google answered 429 or 503.",
    ),
    "CONNECTOR_MAX_RETRY_AFTER": (
        30.0,
        "Longest wait, in seconds, honoured from a Retry-After header before a retry.",
    ),
}


class ConnectorSettings:
    """Attribute access to the connectors' settings with defaults; unknown names raise."""

    def __getattr__(self, name: str) -> Any:
        if name == "GOOGLE_API_BASE_URL":
            return oauth_settings.GOOGLE_API_BASE_URL
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown connector setting: {name}")
        return getattr(settings, name, DEFAULTS[name][0])


connector_settings = ConnectorSettings()
