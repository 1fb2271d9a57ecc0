"""The one HTTP session for Google's OAuth endpoints, its timeout, and Google's error shapes."""
from __future__ import annotations

from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter

from ..app_settings import oauth_settings

class EnvCachingSession(requests.Session):
    """A Session that reads the proxy/CA environment once per scheme and host, not on every call.

    ``requests`` re-scans ``os.environ`` for proxy and CA-bundle variables on each request
    (``merge_environment_settings``); with a large environment that is most of a request's CPU,
    which dominates a heartbeat sweep of thousands of refreshes. The environment of a running
    process does not change, so the answer is remembered per (scheme, host).
    """

    def __init__(self) -> None:
        super().__init__()
        self._env_settings: dict[tuple, dict] = {}

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        if proxies or not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, stream, verify, cert)
        settings = self._env_settings.get(key)
        if settings is None:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            self._env_settings[key] = settings
        return {**settings, "proxies": dict(settings["proxies"])}


session = EnvCachingSession()
# Enough pooled connections for a heartbeat sweep's fan-out without reconnecting per refresh.
_adapter = HTTPAdapter(pool_connections=8, pool_maxsize=128)
session.mount("https://", _adapter)
session.mount("http://", _adapter)
session.headers["User-Agent"] = "butlers-oauth/1"


def timeout() -> float:
    """Seconds before a call to Google is abandoned (OAUTH_HTTP_TIMEOUT)."""
    return float(oauth_settings.OAUTH_HTTP_TIMEOUT)


@dataclass(frozen=True)
class OAuthErrorBody:
    """Google's OAuth error: ``error`` code and a short description (never echoed raw to users)."""

    status: int
    error: str
    description: str = ""


def parse_oauth_error(response: requests.Response) -> OAuthErrorBody:
    """``{"error": "invalid_grant", "error_description": "..."}`` -> OAuthErrorBody.

    Google sometimes nests errors (``{"error": {"status": ...}}``) or answers HTML on a 5xx; the
    code then falls back to the HTTP status.
    """
    error, description = "", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw = body.get("error")
        if isinstance(raw, str):
            error = raw
            description = str(body.get("error_description") or "")
        elif isinstance(raw, dict):
            error = str(raw.get("status") or raw.get("code") or "")
            description = str(raw.get("message") or "")
    if not error:
        error = f"http_{response.status_code}"
    return OAuthErrorBody(status=response.status_code, error=error, description=description[:200])
