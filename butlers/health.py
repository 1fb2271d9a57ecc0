"""Health probes.

``/api/health`` is liveness: it answers from memory, no I/O, so a slow database never gets a
healthy process restarted. ``/api/health/ready`` runs every readiness check and answers 200 when all
pass, 503 with each check's result otherwise.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from butlers.logging import redact_text


class CheckFailed(Exception):
    """A readiness check found a problem; the message is shown to the caller."""


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def check_cache() -> str:
    key = "butlers:health:probe"
    value = str(time.monotonic())
    cache.set(key, value, 30)
    if cache.get(key) != value:
        raise CheckFailed("the cache did not return what was written")
    return settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]


def check_broker() -> str:
    url = settings.CELERY_BROKER_URL
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
        return "redis"
    folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    if not folder.is_dir():
        raise CheckFailed(f"the file-system broker folder {folder} is missing")
    return "filesystem"


def _beat_lock_key() -> str | None:
    """redbeat's lock key when beat runs on redbeat (REDIS_URL set), else None."""
    if "redbeat" not in str(getattr(settings, "CELERY_BEAT_SCHEDULER", "")).lower():
        return None
    prefix = getattr(settings, "CELERY_REDBEAT_KEY_PREFIX", "redbeat")
    key = getattr(settings, "CELERY_REDBEAT_LOCK_KEY", None) or f"{prefix}:lock"
    return key if key.startswith(prefix) else prefix + key


def check_beat_lock() -> str | None:
    """Some ``celery beat`` holds redbeat's lock (it extends it at every tick; a dead one's lock
    expires after CELERY_REDBEAT_LOCK_TIMEOUT). None when beat does not run on redbeat."""
    key = _beat_lock_key()
    if key is None:
        return None
    import redis

    client = redis.Redis.from_url(
        settings.CELERY_REDBEAT_REDIS_URL, socket_connect_timeout=2, socket_timeout=2
    )
    try:
        ttl = client.pttl(key)
    finally:
        client.close()
    if ttl == -2:  # no such key
        raise CheckFailed(
            f"no 'celery beat' holds the scheduler lock ({key}): is 'celery beat' running? "
            "(after a Redis restart it takes the lock again within "
            f"{getattr(settings, 'CELERY_BEAT_MAX_LOOP_INTERVAL', 300)} s)"
        )
    return f"lock held ({max(ttl, 0) // 1000} s left)"


def check_beat() -> str:
    """A beat holds the scheduler lock, and the last heartbeat sweep started within twice the
    interval.

    Before the first sweep, a deployment is given two intervals from its oldest credential (or is
    fine with no credential at all: there is nothing to keep alive yet).
    """
    lock = check_beat_lock()
    detail = _check_last_sweep()
    return f"{detail}; {lock}" if lock else detail


def _check_last_sweep() -> str:
    from oauth.selectors import heartbeat_last_started_at, oldest_credential_created_at

    interval = settings.OAUTH_HEARTBEAT_INTERVAL
    limit = timezone.timedelta(seconds=2 * interval)
    now = timezone.now()
    last = heartbeat_last_started_at()
    if last is not None:
        age = now - last
        if age > limit:
            raise CheckFailed(
                f"the last heartbeat sweep started {int(age.total_seconds())} s ago (limit "
                f"{int(limit.total_seconds())} s): is 'celery beat' running?"
            )
        return f"last sweep {int(age.total_seconds())} s ago"
    oldest = oldest_credential_created_at()
    if oldest is None:
        return "no credential to keep alive yet"
    if now - oldest > limit:
        raise CheckFailed("no heartbeat sweep has ever run: is 'celery beat' running?")
    return "waiting for the first sweep"


READINESS_CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "cache": check_cache,
    "broker": check_broker,
    "beat": check_beat,
}


def _run(check: Callable[[], str]) -> dict:
    started = time.perf_counter()
    try:
        detail = check()
        result = {"ok": True, "detail": detail}
    except Exception as exc:  # a probe reports every failure, whatever its type
        result = {"ok": False, "error": redact_text(f"{type(exc).__name__}: {exc}")[:300]}
    result["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


@require_GET
@never_cache
def liveness(request):
    return JsonResponse({"status": "ok", "service": "butlers-oauth"})


@require_GET
@never_cache
def readiness(request):
    results = {name: _run(check) for name, check in READINESS_CHECKS.items()}
    ok = all(result["ok"] for result in results.values())
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": results}, status=200 if ok else 503
    )
