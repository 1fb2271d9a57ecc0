"""The OAuth app's settings: one object, defaults in one place, read at call time.

``from oauth.app_settings import oauth_settings`` then ``oauth_settings.GOOGLE_OAUTH_TOKEN_URI``.
Each name is a plain Django setting (``butlers/settings.py`` fills it from the environment of the
same name), so tests override it with pytest-django's ``settings`` fixture. An unknown name raises
``AttributeError`` instead of silently returning nothing.
"""
from __future__ import annotations

import functools

import ipaddress
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
GMAIL_MODIFY = "https://www.googleapis.com/auth/gmail.modify"
CALENDAR = "https://www.googleapis.com/auth/calendar"
CALENDAR_READONLY = "https://www.googleapis.com/auth/calendar.readonly"

#: name -> (default, what it means)
DEFAULTS: dict[str, tuple[Any, str]] = {
    "GOOGLE_OAUTH_CLIENT_ID": ("", "OAuth client id; a client saved in the admin wins."),
    "GOOGLE_OAUTH_CLIENT_SECRET": ("", "OAuth client secret; a client saved in the admin wins."),
    "GOOGLE_OAUTH_REDIRECT_URI": (
        "",
        "Callback URL registered at Google; empty = this server's /api/oauth/google/callback.",
    ),
    "GOOGLE_OAUTH_SCOPES": (
        ["openid", "email", GMAIL_READONLY, GMAIL_MODIFY, CALENDAR],
        "Scopes requested at consent.",
    ),
    "OAUTH_REQUIRED_SCOPES": (
        [GMAIL_MODIFY, CALENDAR],
        "Scopes an account needs to be 'connected'; short names (gmail.modify) are accepted.",
    ),
    "GOOGLE_OAUTH_AUTH_URI": ("https://accounts.google.com/o/oauth2/v2/auth", "Consent page."),
    "GOOGLE_OAUTH_TOKEN_URI": ("https://oauth2.googleapis.com/token", "Token endpoint."),
    "GOOGLE_OAUTH_REVOKE_URI": ("https://oauth2.googleapis.com/revoke", "Revocation endpoint."),
    "GOOGLE_OAUTH_USERINFO_URI": (
        "https://openidconnect.googleapis.com/v1/userinfo",
        "OpenID userinfo endpoint (account email).",
    ),
    "GOOGLE_API_BASE_URL": ("https://www.googleapis.com", "Base of the Gmail and Calendar APIs."),
    "OAUTH_HTTP_TIMEOUT": (10.0, "Seconds before any call to Google is abandoned."),
    "OAUTH_RATE_LIMIT": ("30/m", "Consent starts/callbacks per user; '0' turns the limit off."),
    "SERVICE_KEY_RATE_LIMIT": (
        "600/m",
        "Token API calls per service key (POST /api/oauth/token, GET /api/oauth/accounts); '0' "
        "turns the limit off.",
    ),
    "OAUTH_STATE_TTL": (600, "Seconds a consent 'state' stays valid."),
    "METRICS_TOKEN": ("", "Bearer token /metrics accepts from any address; empty = no token."),
    "METRICS_ALLOWED_IPS": (
        [],
        "Addresses or networks (CIDR) that may read /metrics without a token; empty = loopback "
        "only (127.0.0.0/8, ::1).",
    ),
    "OAUTH_ACCESS_TOKEN_MARGIN": (300, "Seconds before expiry at which a token is refreshed."),
    "OAUTH_REFRESH_FAILURES_BEFORE_FAILING": (
        3,
        "Consecutive transient refresh failures before an account shows 'refresh_failing'.",
    ),
    "OAUTH_REFRESH_RETRIES": (3, "Retries of a transient refresh failure within one call."),
    "OAUTH_REFRESH_BACKOFF": (0.5, "Base seconds of the exponential backoff between retries."),
    "OAUTH_HEARTBEAT_INTERVAL": (3600, "Seconds between heartbeat sweeps."),
    "OAUTH_HEARTBEAT_WINDOW": (
        86400,
        "A credential not refreshed or used within this many seconds is due for a heartbeat.",
    ),
    "OAUTH_HEARTBEAT_CONCURRENCY": (64, "Refreshes in flight at once in an in-process sweep."),
    "OAUTH_HEARTBEAT_TASKS_PER_SWEEP": (
        200,
        "A Celery sweep of more credentials than this queues them in batches (at most "
        "OAUTH_HEARTBEAT_MAX_BATCH each) so that per-task overhead does not dominate; fewer "
        "get one task each.",
    ),
    "OAUTH_HEARTBEAT_MAX_BATCH": (25, "Most credentials one Celery heartbeat task handles."),
    "OAUTH_HEARTBEAT_PROCESSES": (
        0,
        "Processes a large in-process sweep is split over (CPU, not Google, bounds it); 0 = one "
        "per CPU.",
    ),
    "OAUTH_TESTING_GRANT_DAYS": (
        7,
        "A grant dying about this many days after consent is the 'Testing' publishing-status case.",
    ),
    "OAUTH_AUDIT_RETENTION_DAYS": (
        400,
        "Audit events older than this many days are deleted by the daily prune (manage.py "
        "oauth_prune); 0 keeps them forever.",
    ),
    "OAUTH_RUN_RETENTION_DAYS": (
        90,
        "Heartbeat runs and operator action runs older than this many days are deleted by the "
        "daily prune; 0 keeps them forever.",
    ),
    "GOOGLE_RISC_CONFIG_URI": (
        "https://accounts.google.com/.well-known/risc-configuration",
        "Google's RISC discovery document: the issuer and JWKS that security event tokens are "
        "checked against, and the RISC API endpoints oauth_risc_register calls.",
    ),
    "GOOGLE_RISC_SERVICE_ACCOUNT_FILE": (
        "",
        "Path of the service-account key (JSON, role RISC Configuration Admin) that "
        "oauth_risc_register signs its calls to the RISC API with.",
    ),
    "GOOGLE_RISC_CLIENT_IDS": (
        [],
        "Extra OAuth client ids a security event may be addressed to (besides the admin's and "
        "GOOGLE_OAUTH_CLIENT_ID).",
    ),
    "GOOGLE_RISC_MAX_AGE": (
        86400,
        "Seconds a security event token's 'iat' may lie in the past (Google retries delivery); "
        "one more than 300 seconds in the future is refused too.",
    ),
    "GOOGLE_RISC_JWKS_TTL": (3600, "Seconds Google's RISC signing keys are cached."),
    "OAUTH_NOTIFY_EMAILS": (
        [],
        "Addresses emailed about accounts that need a person, beside the staff users who opted in.",
    ),
    "OAUTH_NOTIFY_DEBOUNCE": (
        30,
        "Seconds a notification waits for others to join it in one digest email (a sweep that "
        "finds 20 dead accounts sends one email).",
    ),
    "OAUTH_NOTIFY_REMINDER_INTERVAL": (
        86400,
        "Seconds between reminders while an account stays in a problem state; 0 turns them off.",
    ),
    "OAUTH_WEBHOOK_RETRY_SCHEDULE": (
        [5, 60, 300, 1800, 7200, 18000, 36000, 36000],
        "Seconds before each retry of a failed webhook delivery (about a day in all), then it "
        "is given up.",
    ),
    "OAUTH_WEBHOOK_TIMEOUT": (10.0, "Seconds a webhook receiver has to answer."),
    "BUTLERS_DASHBOARD_URL": (
        "",
        "Where operators find the dashboard (named in the STARTUP BLOCKED banner); empty = "
        "derived from the redirect URI, else http://127.0.0.1:8200/.",
    ),
}

_URL_SETTINGS = (
    "GOOGLE_OAUTH_AUTH_URI",
    "GOOGLE_OAUTH_TOKEN_URI",
    "GOOGLE_OAUTH_REVOKE_URI",
    "GOOGLE_OAUTH_USERINFO_URI",
    "GOOGLE_API_BASE_URL",
)


def is_loopback_host(host: str | None) -> bool:
    """True for localhost and any loopback address (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _has_unsafe_character(value: str) -> bool:
    # A backslash, whitespace or a control character lets parsers disagree about the host
    # ("http://192.0.2.2:8404\\@127.0.0.1/" is 127.0.0.1 to urlsplit, 192.0.2.2 to urllib3).
    return any(c == "\\" or c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value)


def validate_endpoint_url(name: str, value: str) -> str:
    """An endpoint must be https, or http on a loopback host (a local fake).

    The URL is read with urllib3's ``parse_url``, the parser ``requests`` uses to decide where a
    request goes, so the host checked here is the host the refresh token is sent to. Backslashes,
    whitespace, control characters and userinfo (``user@``) are refused outright.
    """
    refused = ImproperlyConfigured(
        f"{name}={value!r} is not allowed: use an https:// URL "
        "(http:// is accepted only for loopback hosts such as 127.0.0.1), with no user@ part, "
        "backslash, space or control character."
    )
    if not isinstance(value, str) or _has_unsafe_character(value):
        raise refused
    try:
        parts = parse_url(value)
    except LocationParseError:
        raise refused from None
    if parts.auth is not None or "@" in (parts.netloc or ""):
        raise refused
    if parts.scheme == "https" and parts.host:
        return value.rstrip("/") if name == "GOOGLE_API_BASE_URL" else value
    if parts.scheme == "http" and is_loopback_host(parts.host):
        return value.rstrip("/") if name == "GOOGLE_API_BASE_URL" else value
    raise refused


@functools.lru_cache(maxsize=64)
def _validated_endpoint_url(name: str, value: str) -> str:
    # Read on every refresh and probe: each distinct value is checked once (a refused one raises
    # every time, as exceptions are not cached).
    return validate_endpoint_url(name, value)


class OAuthSettings:
    """Attribute access to the app's settings with defaults; unknown names raise."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown OAuth setting: {name}")
        value = getattr(settings, name, DEFAULTS[name][0])
        if name in _URL_SETTINGS:
            value = _validated_endpoint_url(name, value)
        return value

    @property
    def rate_limit(self) -> str | None:
        """The consent rate as django-ratelimit takes it, or None when turned off."""
        rate = str(self.OAUTH_RATE_LIMIT).strip()
        return None if rate in ("", "0") else rate


oauth_settings = OAuthSettings()
