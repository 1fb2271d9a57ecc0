"""Google's side of the consent flow: the authorization URL, the code exchange, the account email.

Hand-rolled over the shared ``requests`` session (every call has OAUTH_HTTP_TIMEOUT). Google's
answers are mapped to the consent errors of ``oauth.exceptions``; their raw bodies are never put in
an error message (only Google's short error *code*, and only when it is one we know).
"""
from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlencode

import jwt
import requests

from ..app_settings import oauth_settings
from ..encryption import Secret
from ..exceptions import RedirectUriMismatch, TokenExchangeFailed
from . import transport
from .refresh import expires_in_clamped

logger = logging.getLogger("oauth.google.consent")

#: Google error codes on the token endpoint that mean the OAuth client itself is wrong.
CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client", "deleted_client"})


def pkce_pair() -> tuple[str, str]:
    """A PKCE ``(code_verifier, code_challenge)`` for S256 (RFC 7636: 43-128 url-safe chars)."""
    verifier = secrets.token_urlsafe(64)[:96]
    return verifier, pkce_challenge(verifier)


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(
    *, client_id: str, redirect_uri: str, scopes: list[str], state: str, code_challenge: str,
    login_hint: str | None = None,
) -> str:
    """The URL of Google's consent page for an offline grant with PKCE.

    ``login_hint`` (an email) makes Google preselect that account (a reconnect)."""
    params = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": " ".join(scopes),
        # offline + consent: Google returns a refresh token every time, not only the first.
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
        "state": state,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    if login_hint:
        params["login_hint"] = login_hint
    return f"{oauth_settings.GOOGLE_OAUTH_AUTH_URI}?{urlencode(params)}"


@dataclass
class TokenGrant:
    """What the token endpoint gave for an authorization code. Secrets stay boxed."""

    access_token: Secret
    refresh_token: Secret | None
    expires_in: int
    scopes: list[str] = field(default_factory=list)
    #: The account's (iss, sub) from the id_token, how Google's security events name it.
    google_subject: tuple[str, str] | None = None

    def __repr__(self) -> str:
        return (
            f"TokenGrant(refresh_token={'yes' if self.refresh_token else 'no'}, "
            f"expires_in={self.expires_in!r}, scopes={self.scopes!r})"
        )


def _exchange_error(response: requests.Response) -> Exception:
    body = transport.parse_error(response)
    logger.warning(
        "Google refused the authorization code exchange (%s, HTTP %s)", body.error, body.status
    )
    if body.error == "redirect_uri_mismatch":
        return RedirectUriMismatch()
    if body.error in CLIENT_ERRORS:
        return TokenExchangeFailed(
            f"Google rejected the OAuth client ({body.error}). Check the client id and secret in "
            "the admin (/admin/oauth/oauthclient/) or GOOGLE_OAUTH_CLIENT_ID / "
            "GOOGLE_OAUTH_CLIENT_SECRET, then connect again."
        )
    if body.error == "invalid_grant":
        return TokenExchangeFailed()
    if response.status_code >= 500 or response.status_code == 429:
        return TokenExchangeFailed(
            "Google's token endpoint is temporarily unavailable. Wait a moment, then start again "
            "with 'Connect a Google account' on the dashboard (/)."
        )
    return TokenExchangeFailed(
        f"Google did not accept the authorization code (HTTP {response.status_code}). Start again "
        "with 'Connect a Google account' on the dashboard (/)."
    )


def code_exchange(
    *,
    code: str,
    code_verifier: str,
    redirect_uri: str,
    client_id: str,
    client_secret: Secret | None,
) -> TokenGrant:
    """Trade an authorization code for tokens at GOOGLE_OAUTH_TOKEN_URI.

    Raises :class:`RedirectUriMismatch` or :class:`TokenExchangeFailed`.
    """
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": code_verifier,
        "redirect_uri": redirect_uri,
        "client_id": client_id,
    }
    if client_secret is not None:
        data["client_secret"] = client_secret.reveal()
    try:
        response = transport.send(
            "POST",
            oauth_settings.GOOGLE_OAUTH_TOKEN_URI,
            data=data,
            headers={"Accept": "application/json"},
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        logger.warning("Could not reach Google's token endpoint: %s", type(exc).__name__)
        raise TokenExchangeFailed(
            "Could not reach Google's token endpoint "
            f"({transport.endpoint_host(oauth_settings.GOOGLE_OAUTH_TOKEN_URI)}: network error or "
            "timeout). Check this server's access to GOOGLE_OAUTH_TOKEN_URI, then connect again."
        ) from None
    if response.status_code != 200:
        raise _exchange_error(response)
    try:
        body = response.json()
    except ValueError:
        body = None
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise TokenExchangeFailed(
            "Google's token endpoint answered without an access token. Start again with 'Connect "
            "a Google account' on the dashboard (/)."
        )
    refresh = body.get("refresh_token")
    scope = body.get("scope")
    return TokenGrant(
        google_subject=id_token_subject(body.get("id_token"), client_id=client_id),
        access_token=Secret(token, field="access_token"),
        refresh_token=Secret(refresh, field="refresh_token")
        if isinstance(refresh, str) and refresh
        else None,
        expires_in=expires_in_clamped(body.get("expires_in")),
        scopes=scope.split() if isinstance(scope, str) else [],
    )


def id_token_subject(id_token: object, *, client_id: str) -> tuple[str, str] | None:
    """``(iss, sub)`` of the id_token the token endpoint returned with the grant, or None.

    The signature is not checked: the token came straight from GOOGLE_OAUTH_TOKEN_URI over TLS in
    answer to our own authenticated request, which OpenID Connect Core (3.1.3.7) accepts in place
    of the signature. What is checked is that it is meant for us (``aud`` is our client id) and
    names an issuer and a subject; a token that fails is ignored (the grant is still stored, and
    security events cannot name this account until it is connected again).
    """
    if not isinstance(id_token, str) or not id_token:
        return None
    try:
        claims = jwt.decode(id_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        logger.warning("Google's token endpoint returned an id_token that is not a JWT; ignored")
        return None
    issuer, subject, audience = claims.get("iss"), claims.get("sub"), claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if (
        not isinstance(issuer, str) or not isinstance(subject, str) or not subject
        or client_id not in audiences or len(subject) > 255 or len(issuer) > 255
    ):
        logger.warning("The id_token of a grant is not addressed to this client; its subject is "
                       "not recorded")
        return None
    return issuer, subject


def userinfo_email(*, access_token: Secret) -> str:
    """The account's email from GOOGLE_OAUTH_USERINFO_URI (needs the 'email' scope)."""
    try:
        response = transport.send(
            "GET",
            oauth_settings.GOOGLE_OAUTH_USERINFO_URI,
            headers={"Authorization": f"Bearer {access_token.reveal()}"},
        )
    except requests.RequestException as exc:
        logger.warning("Could not reach Google's userinfo endpoint: %s", type(exc).__name__)
        raise TokenExchangeFailed(
            "Could not reach Google's userinfo endpoint "
            f"({transport.endpoint_host(oauth_settings.GOOGLE_OAUTH_USERINFO_URI)}) to read the "
            "account email. Check this server's access to GOOGLE_OAUTH_USERINFO_URI, then connect "
            "again."
        ) from None
    body = None
    if response.status_code == 200:
        try:
            body = response.json()
        except ValueError:
            body = None
    email = body.get("email") if isinstance(body, dict) else None
    if not isinstance(email, str) or "@" not in email or len(email) > 254:
        logger.warning("Google's userinfo endpoint gave no email (HTTP %s)", response.status_code)
        raise TokenExchangeFailed(
            "Google did not tell which account was connected (no email from the userinfo "
            "endpoint). Make sure GOOGLE_OAUTH_SCOPES includes 'openid email', then connect again."
        )
    # An unverified address may belong to someone else (it was typed, never proven): the grant
    # would be stored, and shown, under another person's name.
    if body.get("email_verified") not in (True, "true"):
        logger.warning("Google's userinfo endpoint did not confirm the email is verified")
        raise TokenExchangeFailed(
            "Google did not confirm that the account's email address is verified "
            "(email_verified), so nothing was stored. Verify the address in the Google account, "
            "then connect again."
        )
    return email.strip().lower()
