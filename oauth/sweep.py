"""The in-process sweep executor behind ``manage.py oauth_heartbeat``.

Runs :func:`oauth.heartbeat.credential_heartbeat` for each selected credential on a bounded pool of
threads, each with its own database connection (closed when the thread is done); a large sweep is
split over forked processes. The Celery executor is :mod:`oauth.tasks`.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import logging.handlers
import multiprocessing
import os
import queue
import threading
import time
from collections import Counter

import structlog
from django.core.cache import caches
from django.db import DatabaseError, InterfaceError, OperationalError, connection, connections

from . import metrics
from .app_settings import oauth_settings
from .exceptions import TransientGoogleError
from .google import transport
from .heartbeat import (
    _now,
    credential_heartbeat,
    heartbeat_run_start,
    heartbeat_selection,
    transient_outcome,
)
from .models import HeartbeatRun

logger = structlog.get_logger("oauth.heartbeat")


#: Tries of one credential when the database connection breaks under it (a restart), with
#: growing waits of about 15 s in all: long enough for PostgreSQL to come back.
DATABASE_TRIES = 6


def _reconnect(attempt: int) -> None:
    """Drop this thread's broken connection (the next query opens a new one) and wait a little."""
    try:
        connection.close()
    except DatabaseError:
        pass  # already dead: closing it is all that was asked
    time.sleep(min(8.0, 0.5 * 2**attempt))


def _heartbeat_outcome(*, credential_id: int, actor: str, not_before: dt.datetime) -> str:
    """One credential of an in-process sweep; never raises (one bad credential never stops it).

    A broken database connection (PostgreSQL restarting) is reopened and the credential tried
    again: the heartbeat is idempotent (``not_before``), so a refresh that was stored is not redone.
    """
    for attempt in range(DATABASE_TRIES):
        try:
            outcome = credential_heartbeat(
                credential_id=credential_id, actor=actor, not_before=not_before
            )
        except TransientGoogleError:
            outcome = transient_outcome(credential_id=credential_id)
        except (OperationalError, InterfaceError) as exc:
            if attempt + 1 < DATABASE_TRIES:
                logger.warning("Database connection lost during a heartbeat; reconnecting",
                               credential_id=credential_id, error=type(exc).__name__)
                _reconnect(attempt)
                continue
            logger.error("Heartbeat failed for one credential: the database stayed unreachable",
                         credential_id=credential_id, error=type(exc).__name__)
            outcome = "error"
        except Exception:
            logger.exception("Heartbeat failed for one credential", credential_id=credential_id)
            outcome = "error"
        break
    metrics.HEARTBEAT_RESULTS.labels(outcome).inc()
    return outcome


def _run_finish(run: HeartbeatRun, outcomes: Counter) -> None:
    """Store the sweep's outcomes, reconnecting if the database restarted during the sweep."""
    run.outcomes = {str(outcome): count for outcome, count in outcomes.items()}
    run.finished_at = _now()
    for attempt in range(DATABASE_TRIES):
        try:
            run.save(update_fields=["outcomes", "finished_at"])
            return
        except (OperationalError, InterfaceError):
            if attempt + 1 == DATABASE_TRIES:
                raise
            _reconnect(attempt)


def _sweep_worker(
    ids: queue.SimpleQueue, outcomes: Counter, lock: threading.Lock, actor, not_before, close=True
) -> None:
    try:
        while True:
            try:
                credential_id = ids.get_nowait()
            except queue.Empty:
                return
            outcome = _heartbeat_outcome(credential_id=credential_id, actor=actor, not_before=not_before)
            with lock:
                outcomes[outcome] += 1
    finally:
        if close:
            connection.close()  # this thread's own connection


#: Below this many credentials a sweep stays in one process (forking costs more than it saves).
MIN_CREDENTIALS_PER_EXTRA_PROCESS = 200


def _sweep_threads(ids: list[int], *, threads: int, actor: str, not_before: dt.datetime) -> Counter:
    work: queue.SimpleQueue = queue.SimpleQueue()
    for credential_id in ids:
        work.put(credential_id)
    outcomes: Counter = Counter()
    lock = threading.Lock()
    if connection.vendor == "sqlite" or connection.in_atomic_block:
        # One connection only (SQLite file, or a caller's transaction the threads could not see).
        _sweep_worker(work, outcomes, lock, actor, not_before, close=False)
        return outcomes
    pool = [
        threading.Thread(
            target=_sweep_worker, args=(work, outcomes, lock, actor, not_before),
            name=f"heartbeat-{i}", daemon=True,
        )
        for i in range(min(threads, max(1, len(ids))))
    ]
    with _logging_off_the_threads():
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    return outcomes


class _HandOver(logging.handlers.QueueHandler):
    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # formatted (structlog, redaction) by the real handlers, in the listener


_hand_over_lock = threading.Lock()
#: [sweeps using the hand-over, (root's own handlers, the queue handler, its listener) or None]
_hand_over: list = [0, None]


@contextlib.contextmanager
def _logging_off_the_threads():
    """While the sweep's threads run, their log records go through a queue to one thread that
    formats and writes them: a handler formats and writes under its lock, and sixty threads
    logging a line per refresh would otherwise queue on it. Every line is written, in order, by
    the end of the block. Sweeps running at once in one process share one hand-over."""
    root = logging.getLogger()
    with _hand_over_lock:
        if _hand_over[0] == 0 and root.handlers:
            handlers = list(root.handlers)
            records: queue.SimpleQueue = queue.SimpleQueue()
            listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
            queue_handler = _HandOver(records)
            listener.start()
            for handler in handlers:
                root.removeHandler(handler)
            root.addHandler(queue_handler)
            _hand_over[1] = (handlers, queue_handler, listener)
        _hand_over[0] += 1
    try:
        yield
    finally:
        with _hand_over_lock:
            _hand_over[0] -= 1
            if _hand_over[0] == 0 and _hand_over[1] is not None:
                handlers, queue_handler, listener = _hand_over[1]
                _hand_over[1] = None
                root.removeHandler(queue_handler)
                for handler in handlers:
                    root.addHandler(handler)
                listener.stop()  # writes what is still queued


def _sweep_process(args) -> dict[str, int]:
    """One forked process of a large sweep: its share of the credentials, on its own threads."""
    ids, threads, actor, not_before = args
    # Connections inherited from the parent belong to it: start with fresh ones.
    transport.session_reset()
    try:
        return dict(_sweep_threads(ids, threads=threads, actor=actor, not_before=not_before))
    finally:
        connection.close()


#: Connections a sweep leaves free for everything else (the web, the workers, beat, psql):
#: this many, or a tenth of max_connections when that is more.
CONNECTIONS_LEFT_FREE = 5


def _connection_room(wanted: int) -> int:
    """How many threads (each holding a connection while its refresh is in flight) the database
    has room for, at most ``wanted``: PostgreSQL refuses connections past max_connections, and a
    thread refused one would fail its credentials. Warns, naming both settings, when it is fewer."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return wanted  # (in a caller's transaction the sweep runs on that one connection)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('max_connections')::int,"
                " current_setting('superuser_reserved_connections')::int,"
                " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
            )
            limit, reserved, in_use = cursor.fetchone()
    except DatabaseError as exc:  # the sweep itself will say what is wrong with the database
        logger.warning("Could not read PostgreSQL's connection limit", error=type(exc).__name__)
        return wanted
    room = max(1, limit - reserved - in_use - max(CONNECTIONS_LEFT_FREE, limit // 10))
    if room >= wanted:
        return wanted  # (one thread always runs: a sweep of one account is never held back)
    logger.warning(
        "OAUTH_HEARTBEAT_CONCURRENCY is more than PostgreSQL has connections for: this sweep "
        "runs fewer at once. Raise max_connections in postgresql.conf or lower "
        "OAUTH_HEARTBEAT_CONCURRENCY.",
        concurrency=wanted, running=room, max_connections=limit, in_use=in_use,
        reserved=reserved,
    )
    return room


def _process_count(requested: int | None, selected: int) -> int:
    wanted = int(requested if requested is not None else oauth_settings.OAUTH_HEARTBEAT_PROCESSES)
    if wanted <= 0:
        wanted = os.cpu_count() or 1
    return max(1, min(wanted, selected // MIN_CREDENTIALS_PER_EXTRA_PROCESS or 1))


def heartbeat_sweep_run(
    *,
    trigger: str,
    all_credentials: bool = False,
    account: str | None = None,
    concurrency: int | None = None,
    processes: int | None = None,
) -> HeartbeatRun:
    """Run a sweep now, in this process, ``concurrency`` credentials at a time; returns the run.

    A refresh is mostly waiting on Google, so threads overlap the waits; but each one also costs
    a few milliseconds of CPU (HTTP, ORM, encryption, logging) under one GIL. A large sweep is
    therefore split over ``processes`` forked processes (OAUTH_HEARTBEAT_PROCESSES, 0 = one per
    CPU), the ``concurrency`` threads shared between them.
    """
    now = _now()
    selected = heartbeat_selection(now=now, all_credentials=all_credentials, account=account)
    run = heartbeat_run_start(trigger=trigger, selected=len(selected), now=now)
    concurrency = max(1, int(concurrency or oauth_settings.OAUTH_HEARTBEAT_CONCURRENCY))
    concurrency = _connection_room(min(concurrency, max(1, len(selected))))
    actor = f"process:heartbeat:{trigger}"
    count = _process_count(processes, len(selected))
    # The cache backend's modules are imported on its first use: here, once, rather than in
    # each forked child with sixty threads queuing on the import lock.
    caches["default"]
    if count > 1 and connection.vendor == "postgresql" and not connection.in_atomic_block:
        connections.close_all()  # no connection may cross the fork
        chunks = [selected[i::count] for i in range(count)]
        per_process = max(1, concurrency // count)
        with multiprocessing.get_context("fork").Pool(count) as pool:
            results = pool.map(_sweep_process, [(chunk, per_process, actor, now) for chunk in chunks])
        outcomes: Counter = Counter()
        for result in results:
            outcomes.update(result)
    else:
        outcomes = _sweep_threads(selected, threads=concurrency, actor=actor, not_before=now)
    _run_finish(run, outcomes)
    logger.info(
        "Heartbeat sweep finished",
        trigger=trigger, selected=len(selected), outcomes=run.outcomes, processes=count,
        duration_s=round((run.finished_at - run.started_at).total_seconds(), 2),
    )
    return run


__all__ = ["heartbeat_sweep_run"]
