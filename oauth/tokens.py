"""The access-token service: the one way anything in Butlers gets a Google access token.

``access_token_get`` answers from the cache when it holds a token valid for at least
``OAUTH_ACCESS_TOKEN_MARGIN`` seconds (Redis when configured; the cached value is the same Fernet
ciphertext the database holds, never plaintext). Otherwise it reads the credential, and when the
stored token is too old it takes the credential's row lock (``SELECT ... FOR UPDATE`` on
PostgreSQL), looks again (another process may have refreshed while it waited), and refreshes once.
Any number of processes asking at once therefore cause one call to Google, with or without Redis.

Failures follow Google's error code (see :mod:`oauth.google.refresh`): a dead grant marks the
credential ``expired`` and is never retried; a rejected client marks it ``misconfigured``; a
transient failure is retried here with exponential backoff and jitter, the row lock released
while sleeping, and only ``OAUTH_REFRESH_FAILURES_BEFORE_FAILING`` failed calls in a row turn the
state to ``refresh_failing``. The stored tokens are never touched by a failure.

A process killed mid-refresh holds its row lock inside an open transaction: PostgreSQL rolls it
back when the connection drops, so nothing half-written remains and the next caller refreshes.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import random
import threading
import time
from dataclasses import dataclass, field

import structlog
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from . import metrics
from .app_settings import oauth_settings
from .encryption import decrypt, encrypt
from .exceptions import (
    ClientMisconfigured,
    OAuthError,
    ReconsentRequired,
    TokenError,
    TransientGoogleError,
)
from .google.refresh import RefreshResult, refresh_access_token
from .models import AuditAction, CredentialState, GoogleCredential, OAuthClient
from .scopes import normalize_scopes
from .selectors import (
    ResolvedCredential,
    credential_client,
    credential_resolve,
    oauth_client_get_or_none,
)
from .services import audit_record, credential_set_scopes

logger = structlog.get_logger("oauth.tokens")

CACHE_PREFIX = "oauth:access-token:"
_PRIMARY_ALIAS = "\x00primary"
#: A warm call writes ``last_used_at`` at most this often per process and credential.
LAST_USED_WRITE_INTERVAL = 300.0

TESTING_REMEDIATION = (
    "The grant died about {days} days after consent: the OAuth consent screen is most likely still "
    "in 'Testing' publishing status, where Google expires refresh tokens after 7 days. Publish the "
    "app (Google Cloud Console > OAuth consent screen > Publish app), then reconnect the account "
    "from the dashboard (/)."
)


@dataclass(frozen=True)
class AccessToken:
    """A bearer token for Google APIs. ``value`` is plaintext: pass it to Google, never log it."""

    value: str = field(repr=False)
    expires_at: dt.datetime
    account: str  # email, else credential_key, else "env:<VAR>"
    credential_key: str | None

    def expires_in(self, *, now: dt.datetime | None = None) -> int:
        return int((self.expires_at - (now or _now())).total_seconds())


def _now() -> dt.datetime:
    """Separate so tests can move time."""
    return timezone.now()


def _margin() -> dt.timedelta:
    return dt.timedelta(seconds=float(oauth_settings.OAUTH_ACCESS_TOKEN_MARGIN))


# --- the cache (never required: every failure of it falls through to the database) --------------
@dataclass(frozen=True)
class _Cached:
    ciphertext: str
    expires_at: float  # unix seconds
    account: str
    credential_key: str | None
    credential_id: int | None
    refreshed_at: float = 0.0

    def token(self) -> AccessToken:
        return AccessToken(
            value=decrypt(self.ciphertext, field="access_token"),
            expires_at=dt.datetime.fromtimestamp(self.expires_at, tz=dt.timezone.utc),
            account=self.account,
            credential_key=self.credential_key,
        )


_cache_warned = threading.Event()


def _cache_failed(exc: Exception) -> None:
    if not _cache_warned.is_set():
        _cache_warned.set()
        logger.warning(
            "The cache (REDIS_URL) is unreachable; access tokens are served from PostgreSQL",
            error=type(exc).__name__,
        )


def _alias_key(account: str | None) -> str:
    name = _PRIMARY_ALIAS if not account else account.strip().lower()
    return CACHE_PREFIX + hashlib.sha256(name.encode()).hexdigest()[:32]


def _env_key(refresh_token: str) -> str:
    return CACHE_PREFIX + "env:" + hashlib.sha256(refresh_token.encode()).hexdigest()[:32]


def _cache_get(key: str) -> _Cached | None:
    try:
        value = cache.get(key)
    except Exception as exc:  # noqa: BLE001 - any cache failure means "no cache"
        _cache_failed(exc)
        return None
    return value if isinstance(value, _Cached) else None


def _cache_set(keys: list[str], record: _Cached, *, now: dt.datetime) -> None:
    ttl = int(record.expires_at - now.timestamp() - _margin().total_seconds())
    if ttl <= 0:
        return
    try:
        cache.set_many({key: record for key in keys}, timeout=ttl)
    except Exception as exc:  # noqa: BLE001
        _cache_failed(exc)


def _aliases(credential: GoogleCredential, requested: str | None = None) -> list[str]:
    names = {credential.credential_key}
    if credential.email:
        names.add(credential.email)
    keys = {_alias_key(name) for name in names}
    if credential.is_primary:
        keys.add(_alias_key(None))
    if requested is not None or credential.is_primary:
        keys.add(_alias_key(requested))
    return sorted(keys)


def access_token_cache_invalidate(*, credential: GoogleCredential) -> None:
    """Forget the cached token of ``credential`` (after a re-consent, a revoke, a dead grant)."""
    keys = set(_aliases(credential)) | {_alias_key(None)}
    try:
        cache.delete_many(sorted(keys))
    except Exception as exc:  # noqa: BLE001
        _cache_failed(exc)


def _cache_stored(credential: GoogleCredential, *, requested: str | None, now: dt.datetime) -> AccessToken:
    record = _Cached(
        ciphertext=credential.access_token.ciphertext,
        expires_at=credential.access_token_expires_at.timestamp(),
        account=str(credential),
        credential_key=credential.credential_key,
        credential_id=credential.pk,
        refreshed_at=credential.last_refreshed_at.timestamp() if credential.last_refreshed_at else 0,
    )
    _cache_set(_aliases(credential, requested) + [_alias_key(requested)], record, now=now)
    return AccessToken(
        value=credential.access_token.reveal(),
        expires_at=credential.access_token_expires_at,
        account=record.account,
        credential_key=credential.credential_key,
    )


# --- last_used_at, throttled ------------------------------------------------------------------------
_last_used_writes: dict[int, float] = {}


def _note_used(credential_id: int | None, *, now: dt.datetime) -> None:
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


# --- the public service -------------------------------------------------------------------------------
def access_token_get(
    *, account: str | None = None, force_refresh: bool = False, actor: str = "process:unknown"
) -> AccessToken:
    """A valid access token for ``account`` (an email or credential key), or the primary.

    ``force_refresh`` is for a caller whose token Google just refused (401): it refreshes unless
    another caller already did after this one asked. Raises :class:`CredentialError` (nothing
    stored or a bad env fallback), :class:`ReconsentRequired`, :class:`ClientMisconfigured` or
    :class:`TransientGoogleError` (after the in-call retries).
    """
    now = _now()
    if not force_refresh:
        cached = _cache_get(_alias_key(account))
        if cached is not None and cached.expires_at - _margin().total_seconds() > now.timestamp():
            metrics.ACCESS_TOKENS_SERVED.labels("cache").inc()
            _note_used(cached.credential_id, now=now)
            return cached.token()

    resolved = credential_resolve(account=account)
    if resolved.credential is None:
        return _env_access_token_get(resolved=resolved, force_refresh=force_refresh, actor=actor, now=now)

    credential = resolved.credential
    _raise_if_dead(credential)
    if not force_refresh and credential.access_token_valid(now=now, margin=_margin()):
        metrics.ACCESS_TOKENS_SERVED.labels("database").inc()
        _note_used(credential.pk, now=now)
        return _cache_stored(credential, requested=account, now=now)

    row = _refresh_stored(credential_id=credential.pk, actor=actor, requested_at=now, force=force_refresh)
    return _cache_stored(row, requested=account, now=_now())


def credential_refresh(*, credential: GoogleCredential, actor: str) -> AccessToken:
    """Make a real refresh grant for ``credential`` now (heartbeat, admin "Refresh now").

    Same lock and bookkeeping as :func:`access_token_get`. If another process refreshed this
    credential while we waited for its lock, that refresh (which used the refresh token) counts.
    """
    return credential_refresh_row(credential=credential, actor=actor)[1]


def credential_refresh_row(
    *, credential: GoogleCredential | None = None, credential_id: int | None = None, actor: str,
    since: dt.datetime | None = None, cache: bool = True,
) -> tuple[GoogleCredential, AccessToken]:
    """:func:`credential_refresh`, also returning the row as stored after the refresh.

    ``since``: a refresh made by anyone after this moment counts (a heartbeat sweep passes its
    start, so a redelivered task or a connector's refresh meanwhile is not repeated).
    ``cache=False`` (the heartbeat: its credentials are the unused ones) leaves the cache as it
    is: a token cached earlier stays valid until it expires, and the next caller past it reads
    the new one from the database and caches it then.
    """
    if credential is not None:
        _raise_if_dead(credential)
        credential_id = credential.pk
    row = _refresh_stored(
        credential_id=credential_id, actor=actor, requested_at=since or _now(), force=True
    )
    if not cache:
        return row, AccessToken(
            value=row.access_token.reveal(),
            expires_at=row.access_token_expires_at,
            account=str(row),
            credential_key=row.credential_key,
        )
    token = _cache_stored(row, requested=None if row.is_primary else row.credential_key, now=_now())
    return row, token


# --- stored credentials ---------------------------------------------------------------------------------
def _raise_if_dead(credential: GoogleCredential) -> None:
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


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter: uniform(0.5, 1.0) * base * 2**attempt."""
    base = float(oauth_settings.OAUTH_REFRESH_BACKOFF)
    return base * (2**attempt) * random.uniform(0.5, 1.0)


def _refresh_stored(
    *, credential_id: int, actor: str, requested_at: dt.datetime, force: bool
) -> GoogleCredential:
    retries = max(0, int(oauth_settings.OAUTH_REFRESH_RETRIES))
    for attempt in range(retries + 1):
        final = attempt == retries
        row, error = _refresh_attempt(
            credential_id=credential_id, actor=actor, requested_at=requested_at, force=force,
            final=final,
        )
        if error is None:
            return row
        if isinstance(error, (ReconsentRequired, ClientMisconfigured)):
            access_token_cache_invalidate(credential=row)
            raise error
        if final:
            raise error
        delay = _backoff(attempt)
        logger.warning(
            "Refresh attempt failed, retrying",
            credential_key=row.credential_key, reason=error.error, attempt=attempt + 1,
            retry_in_s=round(delay, 2),
        )
        time.sleep(delay)  # the row lock is released: the transaction ended above
    raise AssertionError("unreachable")


def _refresh_attempt(
    *, credential_id: int, actor: str, requested_at: dt.datetime, force: bool, final: bool
) -> tuple[GoogleCredential, OAuthError | None]:
    """One locked attempt. Returns the row and the error (bookkeeping already committed)."""
    with transaction.atomic():
        row = (
            GoogleCredential.objects.select_for_update(of=("self",))
            .get(pk=credential_id)
        )
        try:
            _raise_if_dead(row)
        except ReconsentRequired as exc:
            return row, exc
        now = _now()
        if force:
            # Someone else refreshed while we waited for the lock: their grant is ours.
            if (
                row.last_refreshed_at is not None
                and row.last_refreshed_at >= requested_at
                and row.access_token_valid(now=now, margin=dt.timedelta(0))
            ):
                return row, None
        elif row.access_token_valid(now=now, margin=_margin()):
            metrics.ACCESS_TOKENS_SERVED.labels("database").inc()
            return row, None

        client_id, client_secret = _client_for(row)
        started = time.perf_counter()
        try:
            result = refresh_access_token(
                refresh_token=row.refresh_token.reveal(),
                client_id=client_id,
                client_secret=client_secret.reveal() if client_secret else None,
            )
        except ReconsentRequired as exc:
            error = _record_failure(row, exc, actor=actor, started=started, state=CredentialState.EXPIRED)
        except ClientMisconfigured as exc:
            error = _record_failure(
                row, exc, actor=actor, started=started, state=CredentialState.MISCONFIGURED
            )
        except TransientGoogleError as exc:
            error = _record_transient(row, exc, actor=actor, started=started, final=final)
        else:
            _record_success(row, result, actor=actor, started=started, now=_now())
            return row, None
    return row, error


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


def _oauth_client():
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


def _client_for(row: GoogleCredential):
    """The client id and secret this grant was issued to, with the memoised OAuth client."""
    return credential_client(row, client_get=_oauth_client)


def _duration_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _record_success(
    row: GoogleCredential, result: RefreshResult, *, actor: str, started: float, now: dt.datetime
) -> None:
    duration = _duration_ms(started)
    row.access_token = result.access_token
    row.access_token_expires_at = result.expires_at(now=now)
    row.last_refreshed_at = now
    fields = ["access_token", "access_token_expires_at", "last_refreshed_at", "updated_at"]
    if result.refresh_token:
        # Google rotated the refresh token: the old one stops working, keep only the new one.
        row.refresh_token = result.refresh_token
        row.refresh_token_issued_at = now
        fields += ["refresh_token", "refresh_token_issued_at"]
    if row.consecutive_failures:
        row.consecutive_failures = 0
        fields.append("consecutive_failures")
    if row.state in (CredentialState.REFRESH_FAILING, CredentialState.MISCONFIGURED):
        row.state = CredentialState.CONNECTED
        fields.append("state")
    row.save(update_fields=fields)
    if result.scopes:
        granted = normalize_scopes(result.scopes)
        if set(granted) != set((row.credentials or {}).get("scopes") or []):
            credential_set_scopes(credential=row, scopes=granted)
    audit_record(
        action=AuditAction.REFRESHED, actor=actor, credential=row, outcome="refreshed",
        detail={"expires_in": result.expires_in, "refresh_token_rotated": bool(result.refresh_token)},
    )
    metrics.REFRESHES.labels("success", "ok").inc()
    metrics.REFRESH_DURATION.observe(duration / 1000)
    metrics.ACCESS_TOKENS_SERVED.labels("refresh").inc()
    logger.info(
        f"Refreshed access token (valid for {result.expires_in} seconds)",
        credential_key=row.credential_key, outcome="refreshed", expires_in=result.expires_in,
        duration_ms=duration, actor=actor, refresh_token_rotated=bool(result.refresh_token),
    )


def _testing_status_case(row: GoogleCredential, *, now: dt.datetime) -> int | None:
    """Days since consent when a grant died about OAUTH_TESTING_GRANT_DAYS after it, else None."""
    issued = row.refresh_token_issued_at or row.consented_at
    if issued is None:
        return None
    age = now - issued
    limit = dt.timedelta(days=float(oauth_settings.OAUTH_TESTING_GRANT_DAYS))
    if limit - dt.timedelta(hours=12) <= age <= limit + dt.timedelta(days=1):
        return round(age.total_seconds() / 86400)
    return None


def _record_failure(
    row: GoogleCredential, exc: TokenError, *, actor: str, started: float, state: str
) -> TokenError:
    """A failure that no retry can fix: expired grant or rejected client."""
    now = _now()
    duration = _duration_ms(started)
    google_error = exc.error
    description = exc.description
    if state == CredentialState.EXPIRED:
        days = _testing_status_case(row, now=now)
        description = (
            TESTING_REMEDIATION.format(days=days)
            if days is not None
            else "Google answered invalid_grant: the refresh token has expired (unused for six "
            "months, password change) or was revoked. Reconnect the account from the dashboard (/)."
        )
        error: TokenError = ReconsentRequired(f"{row}: {description}")
    else:
        error = ClientMisconfigured(f"{row}: {description}")
    error.google_error = google_error
    row.state = state
    row.last_error_at = now
    row.last_error_code = google_error
    row.last_error_detail = description[:500]
    row.consecutive_failures += 1
    row.save(
        update_fields=[
            "state", "last_error_at", "last_error_code", "last_error_detail",
            "consecutive_failures", "updated_at",
        ]
    )
    audit_record(
        action=AuditAction.REFRESH_FAILED, actor=actor, credential=row, outcome=state,
        detail={"error": google_error, "reason": description},
    )
    metrics.REFRESHES.labels(state, google_error).inc()
    metrics.REFRESH_DURATION.observe(duration / 1000)
    logger.error(
        f"Failed to refresh access token: {google_error}: {description}",
        credential_key=row.credential_key, outcome=state, reason=google_error,
        duration_ms=duration, actor=actor,
    )
    return error


def _record_transient(
    row: GoogleCredential, exc: TransientGoogleError, *, actor: str, started: float, final: bool
) -> TransientGoogleError:
    """A failure that may pass. Only the last attempt of a call is counted against the grant."""
    duration = _duration_ms(started)
    metrics.REFRESHES.labels("transient", exc.error).inc()
    metrics.REFRESH_DURATION.observe(duration / 1000)
    if not final:
        return exc
    now = _now()
    row.consecutive_failures += 1
    row.last_error_at = now
    row.last_error_code = exc.error
    row.last_error_detail = exc.description[:500]
    fields = ["consecutive_failures", "last_error_at", "last_error_code", "last_error_detail", "updated_at"]
    threshold = int(oauth_settings.OAUTH_REFRESH_FAILURES_BEFORE_FAILING)
    if row.consecutive_failures >= threshold and row.state in (
        CredentialState.CONNECTED, CredentialState.MISSING_SCOPE,
    ):
        row.state = CredentialState.REFRESH_FAILING
        fields.append("state")
    row.save(update_fields=fields)
    audit_record(
        action=AuditAction.REFRESH_FAILED, actor=actor, credential=row, outcome="transient",
        detail={
            "error": exc.error, "reason": exc.description,
            "consecutive_failures": row.consecutive_failures,
        },
    )
    logger.error(
        f"Failed to refresh access token: {exc.description}",
        credential_key=row.credential_key, outcome="transient", reason=exc.error,
        consecutive_failures=row.consecutive_failures, duration_ms=duration, actor=actor,
    )
    return exc


# --- the deprecated env fallback (no row: cache + an advisory lock) ---------------------------------------
_env_memory: dict[str, _Cached] = {}
_env_thread_locks: dict[str, threading.Lock] = {}
_env_thread_locks_guard = threading.Lock()


def _env_access_token_get(
    *, resolved: ResolvedCredential, force_refresh: bool, actor: str, now: dt.datetime
) -> AccessToken:
    refresh_token = resolved.refresh_token.reveal()
    key = _env_key(refresh_token)
    margin = _margin().total_seconds()

    def fresh(record: _Cached | None) -> bool:
        if record is None or record.expires_at - margin <= _now().timestamp():
            return False
        return not force_refresh or record.refreshed_at >= now.timestamp()

    record = _cache_get(key) or _env_memory.get(key)
    if fresh(record):
        metrics.ACCESS_TOKENS_SERVED.labels("cache").inc()
        _cache_set([_alias_key(None)], record, now=now)
        return record.token()

    with _env_thread_locks_guard:
        thread_lock = _env_thread_locks.setdefault(key, threading.Lock())
    retries = max(0, int(oauth_settings.OAUTH_REFRESH_RETRIES))
    with thread_lock:
        for attempt in range(retries + 1):
            with transaction.atomic():
                if connection.vendor == "postgresql":
                    # No row to lock: a transaction-scoped advisory lock on the token's digest.
                    lock_id = int.from_bytes(hashlib.sha256(refresh_token.encode()).digest()[:8], "big", signed=True)
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_id])
                record = _cache_get(key) or _env_memory.get(key)
                if fresh(record):
                    metrics.ACCESS_TOKENS_SERVED.labels("cache").inc()
                    return record.token()
                started = time.perf_counter()
                try:
                    result = refresh_access_token(
                        refresh_token=refresh_token,
                        client_id=resolved.client_id,
                        client_secret=resolved.client_secret.reveal() if resolved.client_secret else None,
                    )
                except (ReconsentRequired, ClientMisconfigured) as exc:
                    outcome = "expired" if isinstance(exc, ReconsentRequired) else "misconfigured"
                    metrics.REFRESHES.labels(outcome, exc.error).inc()
                    logger.error(
                        f"Failed to refresh access token: {exc.description}",
                        credential_key=None, source=resolved.source, outcome=outcome,
                        reason=exc.error, duration_ms=_duration_ms(started), actor=actor,
                    )
                    exc.description = (
                        f"The refresh token in the deprecated {resolved.source} was refused by "
                        f"Google: {exc.description}"
                    )
                    exc.args = (exc.description,)
                    raise
                except TransientGoogleError as exc:
                    metrics.REFRESHES.labels("transient", exc.error).inc()
                    if attempt == retries:
                        logger.error(
                            f"Failed to refresh access token: {exc.description}",
                            credential_key=None, source=resolved.source, outcome="transient",
                            reason=exc.error, duration_ms=_duration_ms(started), actor=actor,
                        )
                        raise
                    error = exc
                else:
                    error = None
                    done = _now()
                    record = _Cached(
                        ciphertext=encrypt(result.access_token),
                        expires_at=result.expires_at(now=done).timestamp(),
                        account=resolved.account,
                        credential_key=None,
                        credential_id=None,
                        refreshed_at=done.timestamp(),
                    )
                    _env_memory[key] = record
                    _cache_set([key, _alias_key(None)], record, now=done)
                    audit_record(
                        action=AuditAction.REFRESHED, actor=actor, outcome="refreshed",
                        detail={"source": resolved.source, "expires_in": result.expires_in},
                    )
                    metrics.REFRESHES.labels("success", "ok").inc()
                    metrics.REFRESH_DURATION.observe(_duration_ms(started) / 1000)
                    metrics.ACCESS_TOKENS_SERVED.labels("refresh").inc()
                    logger.info(
                        f"Refreshed access token (valid for {result.expires_in} seconds)",
                        credential_key=None, source=resolved.source, outcome="refreshed",
                        expires_in=result.expires_in, duration_ms=_duration_ms(started), actor=actor,
                    )
                    return AccessToken(
                        value=result.access_token,
                        expires_at=result.expires_at(now=done),
                        account=resolved.account,
                        credential_key=None,
                    )
            time.sleep(_backoff(attempt))
    raise error  # pragma: no cover - the loop returns or raises


__all__ = [
    "AccessToken",
    "access_token_cache_invalidate",
    "access_token_get",
    "credential_refresh",
]
