"""The OAuth refresh grant, through google-auth, with Google's failures sorted into our classes.

This is the only module that sends a refresh token to Google. It makes exactly one attempt per
call: retries, locking and bookkeeping belong to :mod:`oauth.tokens`, which knows whether the
row lock is held and whether a retry is worth it.

Classification (by Google's ``error`` code first, then by HTTP status):

* ``invalid_grant``                                        -> :class:`ReconsentRequired`
* ``invalid_client``, ``unauthorized_client``, ``deleted_client`` -> :class:`ClientMisconfigured`
* 5xx, 408, 429, ``temporarily_unavailable``/``server_error``/``internal_failure``, timeouts and
  connection errors                                        -> :class:`TransientGoogleError`
* anything else (an unexpected 4xx)                        -> :class:`TransientGoogleError` with
  the code kept, so it is counted and retried but never mistaken for a dead grant.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from google.auth import exceptions as google_exceptions
from google.auth.transport.requests import Request
from google.oauth2 import _client

from butlers.logging import redact_text

from ..app_settings import oauth_settings
from ..exceptions import ClientMisconfigured, ReconsentRequired, TransientGoogleError
from .http import session, timeout

RECONSENT_ERRORS = frozenset({"invalid_grant"})
CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client", "deleted_client"})
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "internal_failure"})
TRANSIENT_STATUSES = frozenset({408, 429})

#: One google-auth transport over the shared session (its connection pool is thread-safe).
_transport = Request(session=session)


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


class _TimedRequest:
    """A google-auth transport that always sends our timeout and remembers the last status.

    ``refresh_grant`` does not pass a timeout through, and its error object does not carry the
    HTTP status (which we need to tell a 502 HTML page from a client error).
    """

    def __init__(self) -> None:
        self.status: int | None = None

    def __call__(self, url, method="GET", body=None, headers=None, **kwargs):
        kwargs["timeout"] = timeout()
        response = _transport(url, method=method, body=body, headers=headers, **kwargs)
        self.status = response.status
        return response


def _clean(text: str) -> str:
    return redact_text(str(text or ""))[:200]


def classify_refresh_error(*, status: int | None, error: str, description: str = ""):
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
    return TransientGoogleError(
        f"Google's token endpoint failed ({code}"
        + (f", HTTP {status}" if status else "")
        + f"){suffix}; the refresh will be retried.",
        error=code,
    )


def refresh_access_token(
    *, refresh_token: str, client_id: str, client_secret: str | None
) -> RefreshResult:
    """One refresh grant at GOOGLE_OAUTH_TOKEN_URI. Raises one of the classes above."""
    request = _TimedRequest()
    try:
        access_token, _refresh_token, _expiry, data = _client.refresh_grant(
            request,
            oauth_settings.GOOGLE_OAUTH_TOKEN_URI,
            refresh_token,
            client_id,
            client_secret or "",
            can_retry=False,  # oauth.tokens retries, with the row lock released in between
        )
    except google_exceptions.RefreshError as exc:
        data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        error = data.get("error") if isinstance(data.get("error"), str) else ""
        status = request.status
        if not error and status is not None and (status >= 500 or status in TRANSIENT_STATUSES):
            error = f"http_{status}"
        raise classify_refresh_error(
            status=status, error=error, description=str(data.get("error_description") or "")
        ) from None
    except google_exceptions.TransportError as exc:
        cause = exc.__cause__ or exc
        kind = "timeout" if "Timeout" in type(cause).__name__ else "connection_error"
        raise TransientGoogleError(
            f"Could not reach Google's token endpoint ({kind}: {type(cause).__name__}); the "
            "refresh will be retried.",
            error=kind,
        ) from None

    try:
        expires_in = int(data.get("expires_in") or 3600)
    except (TypeError, ValueError):
        expires_in = 3600
    rotated = data.get("refresh_token")
    scope = data.get("scope")
    return RefreshResult(
        access_token=access_token,
        expires_in=expires_in,
        refresh_token=rotated if rotated and rotated != refresh_token else None,
        scopes=scope.split() if isinstance(scope, str) and scope.strip() else None,
    )

