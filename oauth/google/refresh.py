"""The OAuth refresh grant (RFC 6749 section 6) on the shared transport, Google's answers sorted.

This is the only module that sends a refresh token to Google. It makes exactly one attempt per
call: retries, locking and bookkeeping belong to :mod:`oauth.tokens`, which knows whether the
row lock is held and whether a retry is worth it.

Classification (by Google's ``error`` code first, then by HTTP status):

* ``invalid_grant``                                        -> :class:`ReconsentRequired`
* ``invalid_client``, ``unauthorized_client``, ``deleted_client`` -> :class:`ClientMisconfigured`
* 5xx, 408, 429, ``temporarily_unavailable``/``server_error``/``internal_failure``, timeouts and
  connection errors                                        -> :class:`TransientGoogleError`
* a 200 that is not a usable token answer (HTML, not JSON, no access token, a nonsensical
  ``expires_in``)                                           -> :class:`TransientGoogleError`
  ``invalid_response``: counted and retried, never stored
* anything else (an unexpected 4xx)                        -> :class:`TransientGoogleError` with
  the code kept, so it is counted and retried but never mistaken for a dead grant.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import requests

from ..app_settings import oauth_settings
from ..exceptions import ClientMisconfigured, ReconsentRequired, TransientGoogleError
from ..redaction import redact_text
from . import transport

RECONSENT_ERRORS = frozenset({"invalid_grant"})
CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client", "deleted_client"})
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "internal_failure"})
TRANSIENT_STATUSES = frozenset({408, 429})

#: ``expires_in`` outside this range is clamped: Google gives 3599; a zero or negative value
#: would make every call refresh, a huge one would keep a dead token forever (and overflow).
MIN_EXPIRES_IN = 60
MAX_EXPIRES_IN = 24 * 3600
DEFAULT_EXPIRES_IN = 3600


def expires_in_clamped(value) -> int:
    """A usable lifetime in seconds from Google's ``expires_in`` (missing -> one hour)."""
    if value is None or isinstance(value, bool):
        return DEFAULT_EXPIRES_IN
    try:
        number = float(value)
    except (TypeError, ValueError):
        return DEFAULT_EXPIRES_IN
    if not math.isfinite(number):
        return MAX_EXPIRES_IN if number > 0 else MIN_EXPIRES_IN
    return int(min(MAX_EXPIRES_IN, max(MIN_EXPIRES_IN, number)))


@dataclass(frozen=True)
class RefreshResult:
    """What Google answered to a refresh grant.

    ``refresh_token`` is set only when Google rotated it (a new value to store); ``scopes`` is the
    granted scope list when Google returned one.
    """

    access_token: str = field(repr=False)
    expires_in: int
    refresh_token: str | None = field(default=None, repr=False)
    scopes: list[str] | None = None

    def expires_at(self, *, now: dt.datetime) -> dt.datetime:
        return now + dt.timedelta(seconds=self.expires_in)


def _clean(text: str) -> str:
    return redact_text(str(text or ""))[:200]


def _where() -> str:
    return f"Google's token endpoint ({transport.endpoint_host(oauth_settings.GOOGLE_OAUTH_TOKEN_URI)})"


def classify_refresh_error(
    *, status: int | None, error: str, description: str = "", retry_after: float | None = None
):
    """The exception (not raised) for a failed refresh with Google's ``error`` code and status."""
    description = _clean(description)
    suffix = f" ({description})" if description else ""
    if error in RECONSENT_ERRORS:
        return ReconsentRequired(
            "Google answered invalid_grant: the refresh token has expired or was revoked"
            f"{suffix}. Reconnect the account from the dashboard (/).",
            error="invalid_grant",
        )
    if error in CLIENT_ERRORS:
        return ClientMisconfigured(
            f"Google rejected the OAuth client ({error}){suffix}. Check the client id and secret "
            "in the admin (/admin/oauth/oauthclient/) or GOOGLE_OAUTH_CLIENT_ID / "
            "GOOGLE_OAUTH_CLIENT_SECRET, and that the client still exists in Google Cloud Console.",
            error=error,
        )
    code = error or (f"http_{status}" if status else "unknown_error")
    exc = TransientGoogleError(
        f"{_where()} failed ({code}"
        + (f", HTTP {status}" if status else "")
        + f"){suffix}; the refresh will be retried.",
        error=code,
    )
    exc.retry_after = retry_after
    return exc


def _invalid_response(why: str) -> TransientGoogleError:
    return TransientGoogleError(
        f"{_where()} answered 200 without a usable token ({why}); the refresh will be retried.",
        error="invalid_response",
    )


def refresh_access_token(
    *, refresh_token: str, client_id: str, client_secret: str | None
) -> RefreshResult:
    """One refresh grant at GOOGLE_OAUTH_TOKEN_URI. Raises one of the classes above."""
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": client_id,
    }
    if client_secret:
        form["client_secret"] = client_secret
    try:
        response = transport.send(
            "POST",
            oauth_settings.GOOGLE_OAUTH_TOKEN_URI,
            data=form,
            headers={"Accept": "application/json"},
            allow_redirects=False,  # a redirect would carry the refresh token elsewhere
        )
    except requests.RequestException as exc:
        kind = "timeout" if isinstance(exc, requests.Timeout) else "connection_error"
        raise TransientGoogleError(
            f"Could not reach {_where()} ({kind}: {type(exc).__name__}); the refresh will be "
            "retried.",
            error=kind,
        ) from None

    if response.status_code != 200:
        body = transport.parse_error(response)
        error = body.error
        if error.startswith("http_") or not error:
            error = f"http_{response.status_code}"
        description = body.description if body.description != (response.reason or "") else ""
        raise classify_refresh_error(
            status=response.status_code, error=error, description=description,
            retry_after=transport.retry_after(response),
        )
    try:
        data = response.json()
    except ValueError:
        raise _invalid_response("not JSON") from None
    if not isinstance(data, dict):
        raise _invalid_response("not a JSON object")
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token.strip():
        raise _invalid_response("no access_token")
    raw_expires = data.get("expires_in")
    if raw_expires is not None and not isinstance(raw_expires, (int, float, str)):
        raise _invalid_response("expires_in is not a number")
    if isinstance(raw_expires, str):
        try:
            float(raw_expires)
        except ValueError:
            raise _invalid_response("expires_in is not a number") from None
    rotated = data.get("refresh_token")
    scope = data.get("scope")
    return RefreshResult(
        access_token=access_token,
        expires_in=expires_in_clamped(raw_expires),
        refresh_token=(
            rotated if isinstance(rotated, str) and rotated.strip() and rotated != refresh_token
            else None
        ),
        scopes=scope.split() if isinstance(scope, str) and scope.strip() else None,
    )
