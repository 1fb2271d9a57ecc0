"""Cheap API calls that prove a grant's scopes still work (used by the heartbeat).

One call per granted product, the cheapest Google offers: Calendar ``calendarList`` with
``maxResults=1`` and Gmail ``users/me/profile``. No retries here: a heartbeat that cannot probe
now probes again at the next sweep. The token is given (the heartbeat just refreshed it), so a
probe never triggers a refresh of its own.
"""
from __future__ import annotations

import requests

from oauth import metrics
from oauth.app_settings import oauth_settings
from oauth.google.http import EnvCachingSession
from oauth.models import GoogleCredential

#: The probes' own connection pool (a sweep probes many accounts at once).
session = EnvCachingSession()
_adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=128)
session.mount("https://", _adapter)
session.mount("http://", _adapter)
session.headers["User-Agent"] = "butlers-probes/1"

CALENDAR_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/calendar",
        "https://www.googleapis.com/auth/calendar.readonly",
        "https://www.googleapis.com/auth/calendar.events",
        "https://www.googleapis.com/auth/calendar.events.readonly",
    }
)
GMAIL_SCOPES = frozenset(
    {
        "https://mail.google.com/",
        "https://www.googleapis.com/auth/gmail.readonly",
        "https://www.googleapis.com/auth/gmail.modify",
        "https://www.googleapis.com/auth/gmail.metadata",
    }
)
#: api -> (scopes that make it "granted", the cheap call)
PROBES: dict[str, tuple[frozenset[str], str, dict]] = {
    "calendar": (CALENDAR_SCOPES, "/calendar/v3/users/me/calendarList", {"maxResults": "1"}),
    "gmail": (GMAIL_SCOPES, "/gmail/v1/users/me/profile", {}),
}

OK = "ok"
MISSING_SCOPE = "missing_scope"  # 403: the token lacks the scope (or the API is disabled)
UNAUTHORIZED = "unauthorized"  # 401: the token itself was refused
ERROR = "error"  # 5xx, 429, timeouts: says nothing about the grant


def _outcome(status: int) -> str:
    if 200 <= status < 300:
        return OK
    if status == 403:
        return MISSING_SCOPE
    if status == 401:
        return UNAUTHORIZED
    return ERROR


def _granted(credential: GoogleCredential) -> set[str]:
    # The scope list kept in the credential's metadata spares a query per probe; the M2M is the
    # fallback for a row written without it.
    recorded = (credential.credentials or {}).get("scopes")
    if isinstance(recorded, list):
        return set(recorded)
    return set(credential.granted_scope_uris())


def credential_probe(*, credential: GoogleCredential, access_token: str) -> dict[str, str]:
    """Touch each granted API once; returns ``{"calendar": "ok", "gmail": "missing_scope"}``.

    An API whose scope was never granted is not called (and not in the result).
    """
    granted = _granted(credential)
    base = oauth_settings.GOOGLE_API_BASE_URL
    results: dict[str, str] = {}
    for api, (scopes, path, params) in PROBES.items():
        if not granted & scopes:
            continue
        try:
            response = session.get(
                base + path,
                params=params,
                headers={"Authorization": f"Bearer {access_token}"},
                timeout=float(oauth_settings.OAUTH_HTTP_TIMEOUT),
            )
            results[api] = _outcome(response.status_code)
        except requests.RequestException:
            results[api] = ERROR
        metrics.PROBES.labels(api, results[api]).inc()
    return results
