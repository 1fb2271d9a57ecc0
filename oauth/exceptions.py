"""Errors of the OAuth app.

Every error carries an ``error`` code (stable, for machines) and a ``description`` that says what to
do (for people). None of them ever contains a secret: messages are written from codes and field
names, never from token values or raw provider bodies.
"""
from __future__ import annotations


class OAuthError(Exception):
    """Base class of every error this app raises on purpose."""

    error = "oauth_error"
    description = "Google OAuth failed."

    def __init__(self, description: str | None = None, *, error: str | None = None) -> None:
        if description is not None:
            self.description = description
        if error is not None:
            self.error = error
        super().__init__(self.description)

    def __str__(self) -> str:
        return self.description


# --- encryption -------------------------------------------------------------------------------
class EncryptionError(OAuthError):
    """A secret could not be encrypted or decrypted with ``OAUTH_ENCRYPTION_KEYS``."""

    error = "encryption_error"


class EncryptionKeyMissing(EncryptionError):
    """No key is configured; nothing can be stored or read."""

    error = "encryption_key_missing"
    description = (
        "OAUTH_ENCRYPTION_KEYS is empty. Generate a key with: python -c 'from cryptography.fernet "
        "import Fernet; print(Fernet.generate_key().decode())'"
    )


class DecryptionFailed(EncryptionError):
    """None of the configured keys opens a stored value (wrong or removed key)."""

    error = "decryption_failed"
    description = (
        "A stored secret could not be decrypted with any key in OAUTH_ENCRYPTION_KEYS. Put back the "
        "key it was written with (older keys go after the newest), then run "
        "'manage.py rotate_encryption_keys' before removing it."
    )


# --- configuration and credential resolution ----------------------------------------------------
class NotConfigured(OAuthError):
    """No OAuth client id is configured (neither in the admin nor GOOGLE_OAUTH_CLIENT_ID)."""

    error = "not_configured"
    description = (
        "No Google OAuth client is configured. Save one in the admin (/admin/oauth/oauthclient/) or "
        "set GOOGLE_OAUTH_CLIENT_ID, GOOGLE_OAUTH_CLIENT_SECRET and GOOGLE_OAUTH_REDIRECT_URI."
    )


class CredentialError(OAuthError):
    """No usable credential could be resolved (DB, then the deprecated env vars)."""

    error = "credential_missing"
    description = (
        "No Google credential is stored. Connect an account from the dashboard (/), or import the "
        "deprecated env vars with 'manage.py oauth_import_env'."
    )


class EnvCredentialInvalid(CredentialError):
    """A deprecated env credential is present but malformed (message names the variable)."""

    error = "env_credential_invalid"


class AccountNotFound(CredentialError):
    """No stored credential for the requested account email."""

    error = "account_not_found"


# --- token lifecycle ---------------------------------------------------------------------------
class TokenError(OAuthError):
    """An access token could not be obtained."""

    error = "token_error"


class ReconsentRequired(TokenError):
    """The refresh token is dead (invalid_grant, revoked): a person must consent again."""

    error = "expired"
    description = (
        "The Google grant has expired or was revoked. Reconnect the account from the dashboard."
    )


class ClientMisconfigured(TokenError):
    """Google rejected the OAuth client itself (invalid_client, unauthorized_client, deleted_client)."""

    error = "misconfigured"
    description = (
        "Google rejected the OAuth client. Check the client id and secret in the admin or "
        "GOOGLE_OAUTH_CLIENT_ID / GOOGLE_OAUTH_CLIENT_SECRET."
    )


class TransientGoogleError(TokenError):
    """Google or the network failed in a way that may pass (5xx, 429, timeout): retry later."""

    error = "temporarily_unavailable"
    description = "Google is temporarily unavailable; the refresh will be retried."
    #: Seconds Google asked us to wait (a 429/503 ``Retry-After``), when it said.
    retry_after: float | None = None


# --- consent flow -------------------------------------------------------------------------------
class ConsentError(OAuthError):
    """The consent callback failed; ``error`` is one of the contract's callback codes."""

    error = "consent_failed"


# --- operator tools (import, revoke, key rotation) ------------------------------------------------
class NothingToImport(CredentialError):
    """``oauth_import_env`` found none of the deprecated credential variables set."""

    error = "nothing_to_import"
    description = (
        "Nothing to import: none of BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON, GMAIL_CLIENT_ID/"
        "GMAIL_CLIENT_SECRET/GMAIL_REFRESH_TOKEN or GOOGLE_REFRESH_TOKEN is set in this environment."
    )


class RevocationFailed(OAuthError):
    """Google did not confirm a revocation; nothing was changed locally, so it can be retried."""

    error = "revocation_failed"
    description = (
        "Google did not confirm the revocation; nothing was changed locally. Retry "
        "'manage.py oauth_revoke', or remove the app's access at "
        "https://myaccount.google.com/permissions."
    )


class InvalidState(ConsentError):
    """The callback's ``state`` is unknown, tampered, expired, already used or another session's."""

    error = "invalid_state"
    description = (
        "This consent link is not valid any more (unknown, expired after 10 minutes, already used, "
        "or started from another browser session). Start again with 'Connect a Google account' "
        "on the dashboard (/)."
    )


class MissingCode(ConsentError):
    """Google came back without an authorization code."""

    error = "missing_code"
    description = (
        "Google returned without an authorization code. Start again with 'Connect a Google "
        "account' on the dashboard (/)."
    )


class AccessDenied(ConsentError):
    """The person at Google declined (or Google refused) to grant access."""

    error = "access_denied"
    description = (
        "Access was not granted at Google. To connect the account, start again and allow every "
        "permission asked for."
    )


class TokenExchangeFailed(ConsentError):
    """Google would not trade the authorization code for tokens (or the account email)."""

    error = "token_exchange_failed"
    description = (
        "Google did not accept the authorization code (it may have expired or been used already). "
        "Start again with 'Connect a Google account' on the dashboard (/)."
    )


class NoRefreshToken(ConsentError):
    """A first consent returned no refresh token, so nothing could be stored."""

    error = "no_refresh_token"
    description = (
        "Google returned no refresh token, so nothing was stored. Remove the app's access at "
        "https://myaccount.google.com/permissions, then connect again (the start URL asks for "
        "access_type=offline and prompt=consent)."
    )


class RedirectUriMismatch(ConsentError):
    """Google refused the redirect URI: it is not registered on the OAuth client."""

    error = "redirect_uri_mismatch"
    description = (
        "Google refused the redirect URI. Add it exactly as configured (GOOGLE_OAUTH_REDIRECT_URI or "
        "the client in the admin) to the OAuth client's 'Authorized redirect URIs' in Google Cloud "
        "Console (APIs & Services > Credentials), then connect again."
    )


class ConsentStorageFailed(ConsentError):
    """The grant came back from Google but could not be saved; nothing was kept."""

    error = "storage_failed"
    description = (
        "Google granted access but the grant could not be saved, so nothing was stored. Check the "
        "database (GET /api/health/ready), then connect again."
    )


class AuthorizationFailed(ConsentError):
    """Google's consent page sent back an error other than access_denied / redirect_uri_mismatch.

    The description says what Google's code means (a bad scope, a rejected client, an admin
    policy, a passing outage) when it is one Google documents; Google's text is never echoed.
    """

    error = "authorization_failed"
    description = (
        "Google refused the consent request with an error this server does not recognise. Start "
        "again with 'Connect a Google account' on the dashboard (/); if it repeats, check the "
        "OAuth client in Google Cloud Console (APIs & Services > Credentials)."
    )


class ConsentRateLimited(ConsentError):
    """Too many consent starts or callbacks from one user within OAUTH_RATE_LIMIT's window."""

    error = "rate_limited"
    description = (
        "Too many consent attempts; wait a minute and try again (limit: OAUTH_RATE_LIMIT)."
    )


# --- the token API (service keys) -------------------------------------------------------------------
class TokenApiError(OAuthError):
    """A call to the token API that cannot be answered; ``status_code`` is its HTTP status."""

    status_code = 400
    error = "invalid_request"
    description = (
        "The request body must be a JSON object such as {\"account\": \"someone@example.com\"} "
        "(or empty for the primary account)."
    )


class ServiceKeyInvalid(TokenApiError):
    """No key, an unknown key, or a revoked or expired one."""

    status_code = 401
    error = "invalid_key"
    description = (
        "Send a valid service key as 'Authorization: Bearer bk_...'. Keys are created in the admin "
        "(/admin/oauth/servicekey/) or with 'manage.py service_key_create'; a revoked or expired "
        "key needs a new one."
    )


class ServiceKeyForbidden(TokenApiError):
    """The key is valid but does not allow this account, these scopes or this client address."""

    status_code = 403
    error = "forbidden"


class ServiceKeyNotFound(TokenApiError):
    """``service_key_revoke`` named a key that does not exist."""

    status_code = 404
    error = "service_key_not_found"


class TokenApiRateLimited(TokenApiError):
    """Too many calls with one key (or from one address without a valid key) in a minute."""

    status_code = 429
    error = "rate_limited"
    description = "Too many token requests with this key; wait a minute (limit: SERVICE_KEY_RATE_LIMIT)."


class TokenAccountNotFound(TokenApiError):
    """A key allowed every account asked for one that is not stored."""

    status_code = 404
    error = "account_not_found"
    description = "No Google account is connected yet. Connect one from the dashboard (/)."


# --- Google security events (RISC) ---------------------------------------------------------------
class SecurityEventRejected(OAuthError):
    """A security event token failed a check (signature, issuer, audience, age, replay, shape).

    ``err`` is the RFC 8935 error code the receiver answers with; ``description`` the reason.
    Nothing was changed.
    """

    status_code = 400
    error = "invalid_request"
    description = "The security event token was refused."


class SecurityEventUnavailable(OAuthError):
    """Google's RISC discovery document or signing keys could not be read: the event could not be
    checked (Google retries it). Check this server's access to GOOGLE_RISC_CONFIG_URI."""

    status_code = 503
    error = "temporarily_unavailable"
    description = (
        "Google's RISC signing keys could not be read to check the event; Google will retry. "
        "Check this server's access to GOOGLE_RISC_CONFIG_URI."
    )
