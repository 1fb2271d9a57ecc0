"""The beat scheduler: redbeat's, made to survive losing its lock.

redbeat keeps the schedule and an HA lock (only one ``celery beat`` sends tasks) in Redis, and
extends the lock at every tick. When Redis restarts empty (no AOF/RDB, a failover, a FLUSHALL)
the lock is gone, ``extend`` raises ``LockNotOwnedError`` and stock redbeat kills beat: no more
heartbeat sweeps, and ``make run`` stops web and workers with it. Here beat instead takes the
lock again (waiting while another beat holds it, as at start-up), writes the static schedule back
into Redis, and carries on. With Redis unreachable it logs and retries at the next tick instead
of dying. Readiness (``butlers/health.py``) reports 503 while no beat holds the lock.
"""
from __future__ import annotations

import redis
from celery.utils.log import get_logger
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, RedBeatScheduler, get_redis

logger = get_logger("celery.beat")

#: Seconds before a tick is tried again after Redis did not answer.
REDIS_RETRY_SECONDS = 5.0


class SelfHealingRedBeatScheduler(RedBeatScheduler):
    """RedBeatScheduler that re-acquires a lost lock and survives Redis being away."""

    def tick(self, min=min, **kwargs):
        try:
            return super().tick(min=min, **kwargs)
        except redis.exceptions.LockError:  # LockNotOwnedError: the lock key is gone or not ours
            logger.warning(
                "beat: lost the scheduler lock %s (Redis restarted or was emptied?); taking it "
                "again", self.lock_key,
            )
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            logger.warning(
                "beat: Redis did not answer (%s); retrying in %.0f s", type(exc).__name__,
                REDIS_RETRY_SECONDS,
            )
            return REDIS_RETRY_SECONDS
        try:
            self._lock_again()
            # A Redis that lost the lock lost the schedule too: write the static entries back
            # (entries still present keep their last run).
            self.setup_schedule()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            logger.warning("beat: Redis did not answer while re-locking (%s)", type(exc).__name__)
            return REDIS_RETRY_SECONDS
        logger.info("beat: Acquired lock again; schedule restored")
        return 0.0

    def _lock_again(self) -> None:
        """Take the lock as redbeat's beat_init handler does (blocking while another beat has it)."""
        client = get_redis(self.app)
        lock = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
        lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
        lock.acquire()
        self.lock = lock
