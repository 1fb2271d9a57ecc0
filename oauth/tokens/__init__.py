"""The access-token service: the one way anything in Butlers gets a Google access token.

One public API over strategies, the way ``django.contrib.sessions.backends`` is laid out:

* :mod:`.cache` - the cache layer (Redis when configured; ciphertext only; entries bound to the
  credential and version, or the env variables, they came from);
* :mod:`.stored` - a credential stored in the database, refreshed under its row lock;
* :mod:`.env` - the deprecated env credential (only while the database holds none);
* :mod:`.outcomes` - the one bookkeeping path (metrics, audit, runbook log lines) both share;
* :mod:`.base` - the token type, time, margin and the retry rule.

``access_token_get`` answers from the cache when it holds a token valid for at least
OAUTH_ACCESS_TOKEN_MARGIN seconds, else from the database, else refreshes once for everyone.
"""
from __future__ import annotations

import datetime as dt

from .. import metrics
from ..models import GoogleCredential
from ..selectors import credential_resolve
from . import cache, stored
from .base import AccessToken, margin, now_
from .env import env_access_token_get
from .stored import client_memo_clear, raise_if_dead


def access_token_get(
    *, account: str | None = None, force_refresh: bool = False, actor: str = "process:unknown"
) -> AccessToken:
    """A valid access token for ``account`` (an email or credential key), or the primary.

    ``force_refresh`` is for a caller whose token Google just refused (401): it refreshes unless
    another caller already did after this one asked. Raises :class:`CredentialError` (nothing
    stored or a bad env fallback), :class:`ReconsentRequired`, :class:`ClientMisconfigured` or
    :class:`TransientGoogleError` (after the in-call retries).
    """
    now = now_()
    epoch = 0
    if not force_refresh:
        cached, epoch = cache.lookup(cache.alias_key(account))
        if cached is not None and cached.fresh(now=now):
            metrics.ACCESS_TOKENS_SERVED.labels("cache").inc()
            stored.note_used(cached.credential_id, now=now)
            return cached.token()

    resolved = credential_resolve(account=account)
    if resolved.credential is None:
        return env_access_token_get(
            resolved=resolved, force_refresh=force_refresh, actor=actor, now=now
        )

    credential = resolved.credential
    raise_if_dead(credential)
    if not force_refresh and credential.access_token_valid(now=now, margin=margin()):
        metrics.ACCESS_TOKENS_SERVED.labels("database").inc()
        stored.note_used(credential.pk, now=now)
        return stored.cache_and_return(credential, requested=account, epoch=epoch, now=now)

    row = stored.refresh_stored(
        credential_id=credential.pk, actor=actor, requested_at=now, force=force_refresh
    )
    return stored.cache_and_return(row, requested=account, epoch=epoch, now=now_())


def credential_refresh(*, credential: GoogleCredential, actor: str) -> AccessToken:
    """Make a real refresh grant for ``credential`` now (heartbeat, admin "Refresh now").

    Same lock and bookkeeping as :func:`access_token_get`. If another process refreshed this
    credential while we waited for its lock, that refresh (which used the refresh token) counts.
    """
    return credential_refresh_row(credential=credential, actor=actor)[1]


def credential_refresh_row(
    *, credential: GoogleCredential | None = None, credential_id: int | None = None, actor: str,
    since: dt.datetime | None = None, cache_token: bool = True,
) -> tuple[GoogleCredential, AccessToken]:
    """:func:`credential_refresh`, also returning the row as stored after the refresh.

    ``since``: a refresh made by anyone after this moment counts (a heartbeat sweep passes its
    start, so a redelivered task or a connector's refresh meanwhile is not repeated).
    ``cache_token=False`` (the heartbeat: its credentials are the unused ones) leaves the cache as
    it is: a token cached earlier stays valid until it expires, and the next caller past it reads
    the new one from the database and caches it then.
    """
    if credential is not None:
        raise_if_dead(credential)
        credential_id = credential.pk
    row = stored.refresh_stored(
        credential_id=credential_id, actor=actor, requested_at=since or now_(), force=True
    )
    if not cache_token:
        return row, stored.token_of(row)
    epoch = cache.current_epoch()
    token = stored.cache_and_return(
        row, requested=None if row.is_primary else row.credential_key, epoch=epoch, now=now_()
    )
    return row, token


def access_token_cache_invalidate(*, credential: GoogleCredential) -> None:
    """Forget the cached token of ``credential`` (after a re-consent, a revoke, a dead grant)."""
    stored.invalidate(credential=credential)


__all__ = [
    "AccessToken",
    "access_token_cache_invalidate",
    "access_token_get",
    "client_memo_clear",
    "credential_refresh",
    "credential_refresh_row",
]
