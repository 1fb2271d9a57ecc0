"""The stored-credential strategy: a row in ``google_oauth_credentials``, refreshed under its lock.

When the stored token is too old the credential's row lock is taken (``SELECT ... FOR UPDATE`` on
PostgreSQL), the row is read again (another process may have refreshed while we waited), and one
refresh grant is sent. Any number of processes asking at once therefore cause one call to Google,
with or without Redis.

The transaction that holds the lock ends with the one ``UPDATE`` that stores what Google gave, so
a rotated refresh token is durable the moment the lock is released; the audit event follows in its
own statement. If that write fails (the database restarted under us), the new refresh token, which
Google already considers the only valid one, is kept encrypted in this process and in the cache
and written again with a fresh connection until it is stored; the next refresh of that credential
uses it. If it cannot be written at all, a critical event says so.

Failures follow Google's error code (see :mod:`oauth.google.refresh`): a dead grant marks the
credential ``expired`` and is never retried; a rejected client marks it ``misconfigured``; a
transient failure is retried with backoff (:func:`oauth.tokens.base.with_retries`), the lock
released while sleeping, and only OAUTH_REFRESH_FAILURES_BEFORE_FAILING failed calls in a row
turn the state to ``refresh_failing``.
"""
from __future__ import annotations

import datetime as dt
import threading
import time

from django.core.cache import cache as django_cache
from django.db import DatabaseError, connection, transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .. import metrics
from ..app_settings import oauth_settings
from ..encryption import decrypt, encrypt
from ..exceptions import (
    ClientMisconfigured,
    OAuthError,
    ReconsentRequired,
    TokenError,
    TransientGoogleError,
)
from ..google.refresh import RefreshResult, refresh_access_token
from ..models import CredentialState, GoogleCredential, OAuthClient
from ..scopes import normalize_scopes
from ..selectors import credential_client, oauth_client_get_or_none
from ..services import credential_set_scopes
from ..statements import row_locked, row_store
from . import cache, outcomes
from .base import AccessToken, duration_ms, logger, margin, now_, with_retries

#: A warm call writes ``last_used_at`` at most this often per process and credential.
LAST_USED_WRITE_INTERVAL = 300.0

TESTING_REMEDIATION = (
    "The grant died about {days} days after consent: the OAuth consent screen is most likely still "
    "in 'Testing' publishing status, where Google expires refresh tokens after 7 days. Set it to "
    "'In production' (Google Cloud Console > APIs & Services > OAuth consent screen > Publish app), "
    "then reconnect the account from the dashboard (/)."
)
EXPIRED_REMEDIATION = (
    "Google answered invalid_grant: the refresh token has expired (unused for six months, password "
    "change) or was revoked. Reconnect the account from the dashboard (/)."
)


def expired_remediation(credential: GoogleCredential, *, died_at: dt.datetime | None = None) -> str:
    """What to do about a dead grant: the Testing-status advice when it died at about 7 days."""
    days = credential.testing_grant_days(died_at=died_at)
    return TESTING_REMEDIATION.format(days=days) if days is not None else EXPIRED_REMEDIATION


# --- serving ---------------------------------------------------------------------------------------
def raise_if_dead(credential: GoogleCredential) -> None:
    if credential.revoked_at is not None:
        raise ReconsentRequired(
            f"The Google grant of {credential} was revoked. Reconnect the account from the "
            "dashboard (/)."
        )
    if credential.state == CredentialState.EXPIRED:
        detail = credential.last_error_detail or (
            "The Google grant has expired or was revoked. Reconnect the account from the "
            "dashboard (/)."
        )
        raise ReconsentRequired(f"{credential}: {detail}")


def token_of(credential: GoogleCredential) -> AccessToken:
    return AccessToken(
        value=credential.access_token.reveal(),
        expires_at=credential.access_token_expires_at,
        account=str(credential),
        credential_key=credential.credential_key,
    )


def cache_and_return(
    credential: GoogleCredential, *, requested: str | None, epoch: int, now: dt.datetime
) -> AccessToken:
    """Cache ``credential``'s stored token under every name it answers to; return it."""
    record = cache.Cached(
        ciphertext=credential.access_token.ciphertext,
        expires_at=credential.access_token_expires_at.timestamp(),
        account=str(credential),
        credential_key=credential.credential_key,
        credential_id=credential.pk,
        binding=cache.db_binding(credential.pk, credential.token_version),
        epoch=epoch,
        refreshed_at=credential.last_refreshed_at.timestamp() if credential.last_refreshed_at else 0,
    )
    keys = cache.aliases(
        credential_key=credential.credential_key, email=credential.email,
        is_primary=credential.is_primary, requested=requested,
    )
    cache.store(keys + [cache.alias_key(requested)], record, now=now)
    return token_of(credential)


def invalidate(*, credential: GoogleCredential) -> None:
    """Forget every cached token of ``credential`` (re-consent, revoke, dead grant, delete)."""
    cache.epoch_bump()
    cache.forget(
        cache.aliases(
            credential_key=credential.credential_key, email=credential.email,
            is_primary=credential.is_primary, requested=None,
        )
        + [cache.alias_key(None)]
    )


@receiver(post_delete, sender=GoogleCredential)
def _deleted(sender, instance: GoogleCredential, **kwargs) -> None:
    invalidate(credential=instance)


_last_used_writes: dict[int, float] = {}


def note_used(credential_id: int | None, *, now: dt.datetime) -> None:
    """Record use at most once per LAST_USED_WRITE_INTERVAL per process (not a write per call)."""
    if credential_id is None:
        return
    mono = time.monotonic()
    last = _last_used_writes.get(credential_id)
    if last is not None and mono - last < LAST_USED_WRITE_INTERVAL:
        return
    _last_used_writes[credential_id] = mono
    try:
        GoogleCredential.objects.filter(pk=credential_id).update(last_used_at=now)
    except Exception as exc:  # noqa: BLE001 - bookkeeping never fails a token request
        logger.warning("Could not record last_used_at", error=type(exc).__name__)


# --- the OAuth client, memoised -------------------------------------------------------------------
#: Seconds a process reuses the OAuth client it read: a heartbeat sweep refreshes thousands of
#: credentials, and the client is one more query each. A change saved in this process (the admin,
#: a test) or a change of the GOOGLE_OAUTH_CLIENT_* settings applies at once; one saved by another
#: process within this many seconds.
CLIENT_MEMO_SECONDS = 5.0
_client_memo: tuple[float, tuple, object] | None = None


def _client_settings_key() -> tuple:
    return (
        oauth_settings.GOOGLE_OAUTH_CLIENT_ID,
        oauth_settings.GOOGLE_OAUTH_CLIENT_SECRET,
        oauth_settings.GOOGLE_OAUTH_REDIRECT_URI,
    )


def oauth_client():
    global _client_memo
    key = _client_settings_key()
    memo = _client_memo
    if memo is not None and memo[1] == key and time.monotonic() - memo[0] < CLIENT_MEMO_SECONDS:
        return memo[2]
    client = oauth_client_get_or_none()
    _client_memo = (time.monotonic(), key, client)
    return client


@receiver([post_save, post_delete], sender=OAuthClient)
def client_memo_clear(**kwargs) -> None:
    """Forget the memoised OAuth client (on a save here; tests call it between tests)."""
    global _client_memo
    _client_memo = None


# --- a rotated refresh token that could not be stored yet -------------------------------------------
_RECOVERY_PREFIX = "oauth:rotated-refresh-token:"
#: credential id -> (ciphertext of the rotated refresh token, when Google issued it)
_pending_rotations: dict[int, tuple[str, dt.datetime]] = {}
_pending_lock = threading.Lock()
#: Attempts (with growing waits, about half a minute in all) to store a rotated refresh token.
ROTATION_WRITE_ATTEMPTS = 8


#: Set (never cleared but by a cache flush) once any process had to keep a rotated token: until
#: then a refresh need not look for one in the cache. Read at most once a RECOVERY_INDEX_SECONDS
#: per process (a sweep refreshes thousands of credentials; the lookup was one more round trip
#: each). A process keeping a token sets it before its retries, which last half a minute.
_RECOVERY_INDEX = _RECOVERY_PREFIX + "any"
RECOVERY_INDEX_SECONDS = 1.0
_recovery_index_memo: list = [0.0, True]


def _recovery_possible() -> bool:
    checked_at, possible = _recovery_index_memo
    if possible is False and time.monotonic() - checked_at < RECOVERY_INDEX_SECONDS:
        return False
    try:
        possible = django_cache.get(_RECOVERY_INDEX) is not None
    except Exception as exc:  # noqa: BLE001 - look, as before the index existed
        cache.failed(exc)
        return True
    _recovery_index_memo[:] = [time.monotonic(), possible]
    return possible


def _recovery_keep(credential_id: int, ciphertext: str, issued_at: dt.datetime) -> None:
    with _pending_lock:
        _pending_rotations[credential_id] = (ciphertext, issued_at)
    try:
        django_cache.set(_RECOVERY_INDEX, True, timeout=None)
        django_cache.set(_RECOVERY_PREFIX + str(credential_id), (ciphertext, issued_at), timeout=None)
    except Exception as exc:  # noqa: BLE001 - the in-process copy still holds it
        cache.failed(exc)


def _recovery_get(credential_id: int) -> tuple[str, dt.datetime] | None:
    with _pending_lock:
        pending = _pending_rotations.get(credential_id)
    if pending is not None:
        return pending
    if not _recovery_possible():
        return None
    try:
        found = django_cache.get(_RECOVERY_PREFIX + str(credential_id))
    except Exception as exc:  # noqa: BLE001
        cache.failed(exc)
        return None
    return found if isinstance(found, tuple) and len(found) == 2 else None


def _recovery_drop(credential_id: int) -> None:
    with _pending_lock:
        _pending_rotations.pop(credential_id, None)
    try:
        django_cache.delete(_RECOVERY_PREFIX + str(credential_id))
    except Exception as exc:  # noqa: BLE001
        cache.failed(exc)


def _apply_recovered(row: GoogleCredential) -> None:
    """Use a rotated refresh token that an earlier refresh could not store (its store failed)."""
    pending = _recovery_get(row.pk)
    if pending is None:
        return
    ciphertext, issued_at = pending
    if row.refresh_token_issued_at is not None and row.refresh_token_issued_at >= issued_at:
        _recovery_drop(row.pk)  # stored meanwhile (or superseded by a re-consent)
        return
    row.refresh_token = decrypt(ciphertext, field="refresh_token")
    row.refresh_token_issued_at = issued_at
    row.save(update_fields=["refresh_token", "refresh_token_issued_at", "updated_at"])
    _recovery_drop(row.pk)
    logger.warning("Stored a rotated refresh token recovered from an earlier failed write",
                   credential_key=row.credential_key)


def _store_rotation_retrying(*, credential_id: int, result: RefreshResult, now: dt.datetime,
                             credential_key: str) -> bool:
    """The write of a refresh that rotated the token failed: keep the new token and retry.
    Returns whether it is stored now."""
    ciphertext = encrypt(result.refresh_token)
    _recovery_keep(credential_id, ciphertext, now)
    delay = 0.25
    for attempt in range(ROTATION_WRITE_ATTEMPTS):
        try:
            connection.close()  # the broken connection; the next query opens a new one
            with transaction.atomic():
                row = GoogleCredential.objects.select_for_update(of=("self",)).get(pk=credential_id)
                if row.refresh_token_issued_at is None or row.refresh_token_issued_at < now:
                    fields = row.record_refresh_success(
                        now=now, access_token=result.access_token,
                        expires_at=result.expires_at(now=now), refresh_token=result.refresh_token,
                    )
                    row.save(update_fields=fields)
            _recovery_drop(credential_id)
            logger.warning("Stored the rotated refresh token after a failed write",
                           credential_key=credential_key, attempts=attempt + 1)
            return True
        except DatabaseError:
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
    logger.critical(
        "Could not store a rotated refresh token: the database is unreachable. Its encrypted copy "
        "is kept in this process and in the cache, and the next refresh of this credential will "
        "store it; do not restart this process before the database is back.",
        credential_key=credential_key,
    )
    return False


# --- refreshing ------------------------------------------------------------------------------------
def refresh_stored(
    *, credential_id: int, actor: str, requested_at: dt.datetime, force: bool
) -> GoogleCredential:
    """Make sure the row holds a fresh token (refreshing once if needed); return the row."""

    def attempt(final: bool) -> GoogleCredential:
        row, error = _attempt(
            credential_id=credential_id, actor=actor, requested_at=requested_at, force=force,
            final=final,
        )
        if error is not None:
            if isinstance(error, (ReconsentRequired, ClientMisconfigured)):
                invalidate(credential=row)
            raise error
        return row

    return with_retries(attempt, what="Refresh", credential_key=None)


def _attempt(
    *, credential_id: int, actor: str, requested_at: dt.datetime, force: bool, final: bool
) -> tuple[GoogleCredential, OAuthError | None]:
    """One locked attempt. Returns the row and the error (bookkeeping already stored)."""
    rotation_failed: tuple[RefreshResult, dt.datetime, str] | None = None
    try:
        with transaction.atomic():
            row = row_locked(GoogleCredential, credential_id)
            try:
                raise_if_dead(row)
            except ReconsentRequired as exc:
                return row, exc
            now = now_()
            if force:
                # Someone else refreshed while we waited for the lock: their grant is ours.
                if (
                    row.last_refreshed_at is not None
                    and row.last_refreshed_at >= requested_at
                    and row.access_token_valid(now=now, margin=dt.timedelta(0))
                ):
                    return row, None
            elif row.access_token_valid(now=now, margin=margin()):
                metrics.ACCESS_TOKENS_SERVED.labels("database").inc()
                return row, None

            _apply_recovered(row)
            client_id, client_secret = credential_client(row, client_get=oauth_client)
            started = time.perf_counter()
            try:
                result = refresh_access_token(
                    refresh_token=row.refresh_token.reveal(),
                    client_id=client_id,
                    client_secret=client_secret.reveal() if client_secret else None,
                )
            except ReconsentRequired as exc:
                error = _failed(row, exc, actor=actor, started=started, state=CredentialState.EXPIRED)
                return row, error
            except ClientMisconfigured as exc:
                error = _failed(row, exc, actor=actor, started=started,
                                state=CredentialState.MISCONFIGURED)
                return row, error
            except TransientGoogleError as exc:
                _transient(row, exc, actor=actor, started=started, final=final)
                return row, exc
            done = now_()
            if result.refresh_token:
                rotation_failed = (result, done, row.credential_key)
            # The first statement after Google's answer stores it; the commit follows at once.
            row_store(row, row.record_refresh_success(
                now=done, access_token=result.access_token, expires_at=result.expires_at(now=done),
                refresh_token=result.refresh_token,
            ), last=True)
        rotation_failed = None
    except DatabaseError:
        if rotation_failed is None:
            raise
        result, done, key = rotation_failed
        stored_now = _store_rotation_retrying(
            credential_id=credential_id, result=result, now=done, credential_key=key
        )
        if not stored_now:
            # ``row`` holds what Google gave (in memory): the caller gets its valid token; the
            # bookkeeping waits for the database, the rotated token for the next refresh.
            return row, None
    if result.scopes:
        granted = normalize_scopes(result.scopes)
        if set(granted) != set((row.credentials or {}).get("scopes") or []):
            credential_set_scopes(credential=row, scopes=granted)
    outcomes.refresh_succeeded(
        credential=row, source=None, actor=actor, expires_in=result.expires_in,
        duration_ms=duration_ms(started), rotated=bool(result.refresh_token),
    )
    return row, None


def _failed(
    row: GoogleCredential, exc: TokenError, *, actor: str, started: float, state: str
) -> TokenError:
    """A failure that no retry can fix: expired grant or rejected client."""
    now = now_()
    google_error = exc.error
    if state == CredentialState.EXPIRED:
        description = expired_remediation(row, died_at=now)
        error: TokenError = ReconsentRequired(f"{row}: {description}")
    else:
        description = exc.description
        error = ClientMisconfigured(f"{row}: {description}")
    error.google_error = google_error
    row.save(update_fields=row.record_refresh_failure(
        now=now, state=state, code=google_error, detail=description,
    ))
    outcomes.refresh_failed(
        credential=row, source=None, actor=actor, outcome=state, error=google_error,
        description=description, duration_ms=duration_ms(started),
    )
    return error


def _transient(
    row: GoogleCredential, exc: TransientGoogleError, *, actor: str, started: float, final: bool
) -> None:
    """A failure that may pass. Only the last attempt of a call is counted against the grant."""
    if final:
        row.save(update_fields=row.record_transient_failure(
            now=now_(), code=exc.error, detail=exc.description,
            failures_before_failing=int(oauth_settings.OAUTH_REFRESH_FAILURES_BEFORE_FAILING),
        ))
    outcomes.refresh_failed(
        credential=row, source=None, actor=actor, outcome="transient", error=exc.error,
        description=exc.description, duration_ms=duration_ms(started), counted=final,
        consecutive_failures=row.consecutive_failures if final else None,
    )
