"""The web consent flow: mint a state for a staff session, then complete the grant Google sends back.

Safer than the system the runbook describes:

* the ``state`` is random, single use, expires after OAUTH_STATE_TTL (10 minutes) and is bound to
  the staff session (and user) that minted it; a foreign session's attempt does not consume it;
* it lives in the database (only its SHA-256 digest, with the PKCE verifier encrypted), so any
  number of web workers can serve the callback;
* every request carries PKCE (S256);
* the grant is saved in one transaction, and a failure to save is reported as an error, never as a
  success page with the refresh token thrown away.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from dataclasses import dataclass

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from . import scopes as scope_catalogue
from .app_settings import oauth_settings
from .exceptions import (
    AccessDenied,
    AuthorizationFailed,
    ConsentError,
    ConsentStorageFailed,
    EncryptionError,
    InvalidState,
    MissingCode,
    NoRefreshToken,
    RedirectUriMismatch,
)
from .google import consent as google_consent
from .models import (
    PRIMARY_CREDENTIAL_KEY,
    AuditAction,
    CredentialSource,
    GoogleCredential,
    OAuthState,
)
from .selectors import oauth_client_get
from .services import actor_for_user, audit_record, credential_set_scopes
from .tokens import access_token_cache_invalidate

logger = logging.getLogger("oauth.consent")

#: Longest ``state`` accepted from a query string (ours are 43 characters).
MAX_STATE_LENGTH = 128
#: Provider error codes on the callback that have their own error code.
_KNOWN_CALLBACK_ERRORS = {
    "access_denied": AccessDenied,
    "redirect_uri_mismatch": RedirectUriMismatch,
}
_CLIENT_ADVICE = (
    "Google rejected the OAuth client ({code}). Check the client id in the admin "
    "(/admin/oauth/oauthclient/) or GOOGLE_OAUTH_CLIENT_ID against Google Cloud Console "
    "(APIs & Services > Credentials), then connect again."
)
_MALFORMED_ADVICE = (
    "Google found the consent request malformed ({code}). Check the client id and redirect URI "
    "in the admin (/admin/oauth/oauthclient/), then connect again."
)
_OUTAGE_ADVICE = (
    "Google failed temporarily ({code}). Wait a moment, then start again with 'Connect a Google "
    "account' on the dashboard (/)."
)
#: Other error codes Google documents for the authorization endpoint, and what each means.
#: Anything else gets AuthorizationFailed's generic text; Google's own value is never echoed.
_CALLBACK_ERROR_ADVICE = {
    "invalid_scope": (
        "Google refused a requested scope ({code}). Check GOOGLE_OAUTH_SCOPES (space-separated "
        "scope URIs plus 'openid email') and that the Gmail and Calendar APIs are enabled in the "
        "OAuth client's Google Cloud project, then connect again."
    ),
    "invalid_request": _MALFORMED_ADVICE,
    "unsupported_response_type": _MALFORMED_ADVICE,
    "invalid_client": _CLIENT_ADVICE,
    "unauthorized_client": _CLIENT_ADVICE,
    "deleted_client": _CLIENT_ADVICE,
    "admin_policy_enforced": (
        "The account's Google Workspace administrator blocks this app ({code}). Ask them to trust "
        "the OAuth client in the Admin console (Security > Access and data control > API "
        "controls), then connect again."
    ),
    "org_internal": (
        "The OAuth client's consent screen is 'Internal' to another Google Workspace "
        "organisation ({code}): only its members can connect. Use an account of that "
        "organisation, or set the user type to 'External' in Google Cloud Console."
    ),
    "server_error": _OUTAGE_ADVICE,
    "temporarily_unavailable": _OUTAGE_ADVICE,
}
#: How many times a grant is saved when another consent's row collides with it (see _store).
STORE_ATTEMPTS = 3


def _callback_error(code: str) -> ConsentError:
    """The error for Google's ``?error=`` on the callback, named for what it is."""
    if code in _KNOWN_CALLBACK_ERRORS:
        return _KNOWN_CALLBACK_ERRORS[code]()
    if code in _CALLBACK_ERROR_ADVICE:
        exc = AuthorizationFailed(_CALLBACK_ERROR_ADVICE[code].format(code=code))
        exc.google_error = code
        return exc
    return AuthorizationFailed()


def _now() -> dt.datetime:
    return timezone.now()


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _state_ttl() -> dt.timedelta:
    return dt.timedelta(seconds=float(oauth_settings.OAUTH_STATE_TTL))


def new_session_binding() -> str:
    """A random value kept in the staff session; states are bound to its digest."""
    return secrets.token_urlsafe(32)


# --- start ------------------------------------------------------------------------------------
def consent_start(
    *, user, session_binding: str, default_redirect_uri: str, login_hint: str | None = None
) -> str:
    """Mint a state for this staff session and return Google's authorization URL.

    ``login_hint``: the email of the account being reconnected, so Google preselects it.

    ``default_redirect_uri`` is this server's callback URL, used when neither the admin's client nor
    GOOGLE_OAUTH_REDIRECT_URI names one. Raises :class:`~oauth.exceptions.NotConfigured`.
    """
    client = oauth_client_get()
    redirect_uri = client.redirect_uri or default_redirect_uri
    requested = scope_catalogue.normalize_scopes(oauth_settings.GOOGLE_OAUTH_SCOPES)
    state = secrets.token_urlsafe(32)
    verifier, challenge = google_consent.pkce_pair()
    now = _now()
    # Old states are useless after their TTL; keep the table small.
    OAuthState.objects.filter(created_at__lt=now - 6 * _state_ttl()).delete()
    OAuthState.objects.create(
        state_digest=_digest(state),
        session_digest=_digest(session_binding),
        user=user if getattr(user, "pk", None) else None,
        code_verifier=verifier,
        redirect_uri=redirect_uri,
        scopes=requested,
        created_at=now,
    )
    return google_consent.authorization_url(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        scopes=requested,
        state=state,
        code_challenge=challenge,
        login_hint=login_hint,
    )


# --- callback -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConsentResult:
    """A completed consent: the stored credential and whether it was new."""

    credential: GoogleCredential
    created: bool
    missing_scopes: list[str]


def _state_consume(*, state: str | None, user, session_binding: str | None) -> OAuthState:
    """Take the pending consent for ``state``, marking it used; raise InvalidState otherwise.

    A state minted for another session (or user) is refused *without* being consumed, so an
    attacker replaying a victim's callback cannot burn the victim's consent.
    """
    if not state or len(state) > MAX_STATE_LENGTH or not session_binding:
        raise InvalidState()
    with transaction.atomic():
        pending = (
            OAuthState.objects.select_for_update().filter(state_digest=_digest(state)).first()
        )
        if pending is None:
            raise InvalidState()
        if pending.session_digest != _digest(session_binding) or pending.user_id != getattr(
            user, "pk", None
        ):
            logger.warning("Consent callback with a state minted for another session")
            raise InvalidState()
        if pending.used_at is not None:
            raise InvalidState()
        pending.used_at = _now()
        pending.save(update_fields=["used_at"])
    if pending.is_expired(now=pending.used_at, ttl=_state_ttl()):
        raise InvalidState()
    return pending


def _credential_key_for(*, email: str) -> str:
    if not GoogleCredential.objects.filter(credential_key=PRIMARY_CREDENTIAL_KEY).exists():
        return PRIMARY_CREDENTIAL_KEY
    return f"google:{email}"


def _invalidate_cached_token(credential: GoogleCredential) -> None:
    """Drop any cached access token of ``credential`` so the re-consented one is served next."""
    access_token_cache_invalidate(credential=credential)


def _store_grant(
    *, email: str, grant: google_consent.TokenGrant, client_id: str, requested: list[str], user
) -> ConsentResult:
    now = _now()
    with transaction.atomic():
        credential = (
            GoogleCredential.objects.select_for_update().filter(email__iexact=email).first()
        )
        created = credential is None
        if grant.refresh_token is None and (created or credential.refresh_token is None):
            # First consent without a refresh token: storing it would give a grant that dies in
            # an hour. Nothing is stored.
            raise NoRefreshToken()
        if created:
            credential = GoogleCredential(credential_key=_credential_key_for(email=email), email=email)
        credential.mark_connected(
            now=now,
            access_token=grant.access_token.reveal(),
            expires_in=grant.expires_in,
            refresh_token=grant.refresh_token.reveal() if grant.refresh_token is not None else None,
            client_id=client_id,
            email=email,
            # The grant belongs to the configured client now, whatever it was imported with.
            client_secret=None,
            source=CredentialSource.CONSENT,
            google_issuer=grant.google_subject[0] if grant.google_subject else "",
            google_subject=grant.google_subject[1] if grant.google_subject else "",
        )
        credential.save()
        granted = grant.scopes or requested
        credential_set_scopes(credential=credential, scopes=granted)
        credential = GoogleCredential.objects.prefetch_related("granted_scopes").get(pk=credential.pk)
        missing = credential.missing_scopes()
        audit_record(
            action=AuditAction.CONNECTED if created else AuditAction.RECONSENTED,
            actor=actor_for_user(user),
            credential=credential,
            outcome=credential.effective_state(client_configured=True),
            detail={
                "scopes": credential.granted_scope_uris(),
                "missing_scopes": missing,
                "refresh_token_returned": grant.refresh_token is not None,
            },
        )
        transaction.on_commit(lambda: _invalidate_cached_token(credential))
    return ConsentResult(credential=credential, created=created, missing_scopes=missing)


def _audit_failure(*, user, error: ConsentError) -> None:
    google_error = getattr(error, "google_error", None)
    try:
        audit_record(
            action=AuditAction.CONSENT_FAILED,
            actor=actor_for_user(user),
            outcome=error.error,
            detail={"google_error": google_error} if google_error else None,
        )
    except DatabaseError:
        logger.exception("Could not record the failed consent in the audit log")


def _is_staff(user) -> bool:
    return bool(
        user is not None and getattr(user, "is_active", False) and getattr(user, "is_staff", False)
    )


def _store(**grant) -> ConsentResult:
    """Save the grant, again when another consent's row collided with it (IntegrityError).

    Two first consents at the same moment each find no primary and both insert
    credential_key='google'; the loser's retry sees the winner's row and becomes a secondary
    account ('google:<email>'). Two consents of the same account: the retry finds its row and
    updates it. Each attempt is its own transaction, so a retry sees what the winner committed.
    """
    for attempt in range(1, STORE_ATTEMPTS + 1):
        try:
            return _store_grant(**grant)
        except IntegrityError:
            if attempt == STORE_ATTEMPTS:
                logger.error(
                    "Saving the grant collided with other consents saved at the same time "
                    "%d times in a row; nothing was stored",
                    attempt,
                )
                raise ConsentStorageFailed() from None
            logger.info("Another consent was saved at the same time; saving this grant again")
        except (DatabaseError, EncryptionError) as exc:
            logger.error("Saving the grant for a consent failed: %s", type(exc).__name__)
            raise ConsentStorageFailed() from None
    raise AssertionError("unreachable")


def consent_complete(
    *,
    user,
    session_binding: str | None,
    state: str | None,
    code: str | None,
    error: str | None = None,
) -> ConsentResult:
    """Finish the consent Google redirected back with; raises a :class:`ConsentError` subclass.

    Order: Google's own ``error`` first (the person declined), then the state, then the code.

    A failure is recorded in the audit log (which the status API reads) only when it carried a
    valid state of this session, or came from a staff user: an anonymous caller with a made-up
    ``?error=redirect_uri_mismatch`` must not change what status says for everyone.
    """
    recorded = _is_staff(user)
    try:
        if error:
            # Google's answer wins, but a valid state is still used up so it cannot be replayed;
            # an invalid one changes nothing about what the person is told.
            try:
                _state_consume(state=state, user=user, session_binding=session_binding)
                recorded = True
            except InvalidState:
                pass
            raise _callback_error(error)
        pending = _state_consume(state=state, user=user, session_binding=session_binding)
        recorded = True
        if not code:
            raise MissingCode()
        client = oauth_client_get()
        grant = google_consent.code_exchange(
            code=code,
            code_verifier=pending.code_verifier.reveal(),
            redirect_uri=pending.redirect_uri,
            client_id=client.client_id,
            client_secret=client.client_secret,
        )
        email = google_consent.userinfo_email(access_token=grant.access_token)
        result = _store(
            email=email,
            grant=grant,
            client_id=client.client_id,
            requested=list(pending.scopes or []),
            user=user,
        )
    except ConsentError as exc:
        logger.warning("Consent failed: %s", exc.error)
        if recorded:
            _audit_failure(user=user, error=exc)
        raise
    logger.info(
        "Google account connected (%s, %s)",
        result.credential.credential_key,
        "new" if result.created else "re-consented",
    )
    return result
