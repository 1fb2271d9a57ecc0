"""The access-token cache: never required, and never trusted beyond what it was cached for.

Entries live in Django's cache (Redis when configured) under a key per way of asking (an email, a
credential key, "the primary"). The value is the same Fernet ciphertext the database holds, never
plaintext, and it is *bound* to what it came from:

* a stored credential's entry carries its id and ``token_version``; every change that makes a
  cached token wrong (a re-consent, possibly as another account; a revoke; a dead grant; a delete;
  an import) bumps the credential's version and the cache's **epoch**, and an entry cached under
  another epoch is not served. A warm call reads its entry and the epoch in one round trip;
* the deprecated env credential's entry carries a fingerprint of the variables it was read from,
  compared with the current environment's on every call, so a changed or broken variable is
  never answered from the cache.

Every failure of the cache falls through to the database, with one warning per process.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
from dataclasses import dataclass

from django.core.cache import cache

from ..encryption import decrypt
from ..selectors import DEPRECATED_ENV_VARS
from .base import AccessToken, logger, margin

PREFIX = "oauth:access-token:"
EPOCH_KEY = PREFIX + "epoch"
_PRIMARY_ALIAS = "\x00primary"


@dataclass(frozen=True)
class Cached:
    ciphertext: str
    expires_at: float  # unix seconds
    account: str
    credential_key: str | None
    credential_id: int | None
    #: "db:<id>:<token_version>" or "env:<fingerprint>"
    binding: str
    epoch: int = 0
    refreshed_at: float = 0.0

    def token(self) -> AccessToken:
        return AccessToken(
            value=decrypt(self.ciphertext, field="access_token"),
            expires_at=dt.datetime.fromtimestamp(self.expires_at, tz=dt.timezone.utc),
            account=self.account,
            credential_key=self.credential_key,
        )

    def fresh(self, *, now: dt.datetime) -> bool:
        return self.expires_at - margin().total_seconds() > now.timestamp()


_warned = threading.Event()


def failed(exc: Exception) -> None:
    if not _warned.is_set():
        _warned.set()
        logger.warning(
            "The cache (REDIS_URL) is unreachable; access tokens are served from PostgreSQL",
            error=type(exc).__name__,
        )


def alias_key(account: str | None) -> str:
    name = _PRIMARY_ALIAS if not account else account.strip().lower()
    return PREFIX + hashlib.sha256(name.encode()).hexdigest()[:32]


def env_fingerprint() -> str:
    """A digest of every deprecated credential variable as this process sees it now."""
    digest = hashlib.sha256()
    for name in DEPRECATED_ENV_VARS:
        value = os.environ.get(name)
        digest.update(b"\x01" if value is None else b"\x02" + value.encode("utf-8", "replace"))
        digest.update(b"\x00")
    return "env:" + digest.hexdigest()[:32]


def db_binding(credential_id: int, token_version: int) -> str:
    return f"db:{credential_id}:{token_version}"


def lookup(key: str) -> tuple[Cached | None, int]:
    """The entry under ``key`` if it is still bound to what it came from, and the epoch."""
    try:
        found = cache.get_many([key, EPOCH_KEY])
    except Exception as exc:  # noqa: BLE001 - any cache failure means "no cache"
        failed(exc)
        return None, 0
    epoch = found.get(EPOCH_KEY) or 0
    record = found.get(key)
    if not isinstance(record, Cached) or record.epoch != epoch:
        return None, epoch
    if record.binding.startswith("env:") and record.binding != env_fingerprint():
        return None, epoch
    return record, epoch


def store(keys: list[str], record: Cached, *, now: dt.datetime) -> None:
    ttl = int(record.expires_at - now.timestamp() - margin().total_seconds())
    if ttl <= 0:
        return
    try:
        cache.set_many({key: record for key in keys}, timeout=ttl)
    except Exception as exc:  # noqa: BLE001
        failed(exc)


def current_epoch() -> int:
    try:
        return cache.get(EPOCH_KEY) or 0
    except Exception as exc:  # noqa: BLE001
        failed(exc)
        return 0


def epoch_bump() -> None:
    """Invalidate every entry at once (a grant's tokens changed in a way a cache must not hide)."""
    try:
        cache.add(EPOCH_KEY, 0, timeout=None)
        cache.incr(EPOCH_KEY)
    except Exception as exc:  # noqa: BLE001
        failed(exc)


def aliases(*, credential_key: str, email: str, is_primary: bool, requested: str | None) -> list[str]:
    names = {credential_key}
    if email:
        names.add(email)
    keys = {alias_key(name) for name in names}
    if is_primary:
        keys.add(alias_key(None))
    if requested is not None or is_primary:
        keys.add(alias_key(requested))
    return sorted(keys)


def forget(keys: list[str]) -> None:
    try:
        cache.delete_many(sorted(set(keys)))
    except Exception as exc:  # noqa: BLE001
        failed(exc)
