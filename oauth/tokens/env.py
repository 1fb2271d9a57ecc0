"""The deprecated env-credential strategy: no row, so a cache entry and an advisory lock.

Used only while the database holds no credential (``oauth.selectors.credential_resolve``). The
token is cached under a key derived from the refresh token and bound to a fingerprint of the
variables (:mod:`oauth.tokens.cache`); single flight across processes comes from a
transaction-scoped PostgreSQL advisory lock on the refresh token's digest (a thread lock within a
process, for SQLite). Outcomes go through the same bookkeeping as a stored credential's.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time

from django.db import connection, transaction

from .. import metrics
from ..encryption import encrypt
from ..exceptions import ClientMisconfigured, ReconsentRequired, TransientGoogleError
from ..google.refresh import refresh_access_token
from ..selectors import ResolvedCredential
from . import cache, outcomes
from .base import AccessToken, duration_ms, now_, with_retries

#: Per-process copy for when the cache is down: refresh-token digest -> entry.
_memory: dict[str, cache.Cached] = {}
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _digest(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest()[:32]


def env_access_token_get(
    *, resolved: ResolvedCredential, force_refresh: bool, actor: str, now: dt.datetime
) -> AccessToken:
    refresh_token = resolved.refresh_token.reveal()
    key = cache.PREFIX + "env:" + _digest(refresh_token)
    binding = cache.env_fingerprint()

    def usable(record: cache.Cached | None) -> bool:
        if record is None or record.binding != binding or not record.fresh(now=now_()):
            return False
        return not force_refresh or record.refreshed_at >= now.timestamp()

    record, epoch = cache.lookup(key)
    record = record or _memory.get(key)
    if usable(record):
        metrics.ACCESS_TOKENS_SERVED.labels("cache").inc()
        cache.store([cache.alias_key(None)], record, now=now)
        return record.token()

    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(key, threading.Lock())

    def attempt(final: bool) -> AccessToken:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                # No row to lock: a transaction-scoped advisory lock on the token's digest.
                lock_id = int.from_bytes(
                    hashlib.sha256(refresh_token.encode()).digest()[:8], "big", signed=True
                )
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_id])
            found, current_epoch = cache.lookup(key)
            found = found or _memory.get(key)
            if usable(found):
                metrics.ACCESS_TOKENS_SERVED.labels("cache").inc()
                return found.token()
            started = time.perf_counter()
            try:
                result = refresh_access_token(
                    refresh_token=refresh_token,
                    client_id=resolved.client_id,
                    client_secret=resolved.client_secret.reveal() if resolved.client_secret else None,
                )
            except (ReconsentRequired, ClientMisconfigured) as exc:
                outcome = "expired" if isinstance(exc, ReconsentRequired) else "misconfigured"
                outcomes.refresh_failed(
                    credential=None, source=resolved.source, actor=actor, outcome=outcome,
                    error=exc.error, description=exc.description, duration_ms=duration_ms(started),
                )
                exc.description = (
                    f"The refresh token in the deprecated {resolved.source} was refused by "
                    f"Google: {exc.description}"
                )
                exc.args = (exc.description,)
                raise
            except TransientGoogleError as exc:
                outcomes.refresh_failed(
                    credential=None, source=resolved.source, actor=actor, outcome="transient",
                    error=exc.error, description=exc.description,
                    duration_ms=duration_ms(started), counted=final,
                )
                raise
            done = now_()
            fresh = cache.Cached(
                ciphertext=encrypt(result.access_token),
                expires_at=result.expires_at(now=done).timestamp(),
                account=resolved.account,
                credential_key=None,
                credential_id=None,
                binding=binding,
                epoch=current_epoch,
                refreshed_at=done.timestamp(),
            )
            _memory[key] = fresh
            cache.store([key, cache.alias_key(None)], fresh, now=done)
            outcomes.refresh_succeeded(
                credential=None, source=resolved.source, actor=actor,
                expires_in=result.expires_in, duration_ms=duration_ms(started),
                rotated=bool(result.refresh_token),
            )
            return AccessToken(
                value=result.access_token,
                expires_at=result.expires_at(now=done),
                account=resolved.account,
                credential_key=None,
            )

    with thread_lock:
        return with_retries(attempt, what="Refresh", credential_key=None)
