"""Google's revocation endpoint (GOOGLE_OAUTH_REVOKE_URI): ``POST token=<refresh or access token>``.

Revoking a refresh token ends the whole grant (its access tokens die with it). Google answers 200
on success and ``400 {"error": "invalid_token"}`` for a token it no longer knows, which for the
caller means the same thing: the token is dead.
"""
from __future__ import annotations

import enum

import requests

from ..app_settings import oauth_settings
from ..exceptions import RevocationFailed
from . import transport


class RevokeOutcome(str, enum.Enum):
    REVOKED = "revoked"
    ALREADY_REVOKED = "already_revoked"


def token_revoke(*, token: str) -> RevokeOutcome:
    """Revoke ``token`` at Google. Raises :class:`RevocationFailed` when Google does not confirm."""
    try:
        response = transport.send(
            "POST",
            oauth_settings.GOOGLE_OAUTH_REVOKE_URI,
            data={"token": token},
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise RevocationFailed(
            f"Google's revocation endpoint ({transport.endpoint_host(oauth_settings.GOOGLE_OAUTH_REVOKE_URI)}) "
            f"could not be reached ({type(exc).__name__}); nothing "
            "was changed locally. Retry 'manage.py oauth_revoke', or remove the app's access at "
            "https://myaccount.google.com/permissions."
        ) from None
    if response.status_code == 200:
        return RevokeOutcome.REVOKED
    error = transport.parse_error(response)
    if response.status_code == 400 and error.error == "invalid_token":
        return RevokeOutcome.ALREADY_REVOKED
    raise RevocationFailed(
        f"Google did not confirm the revocation (HTTP {error.status}, {error.error}); nothing was "
        "changed locally. Retry 'manage.py oauth_revoke', or remove the app's access at "
        "https://myaccount.google.com/permissions."
    )
