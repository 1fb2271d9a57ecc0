"""The Celery application and its process wiring.

Configuration lives in Django settings under the ``CELERY_`` namespace; every periodic schedule
is declared once, in ``settings.CELERY_BEAT_SCHEDULE``. The wiring of a worker process (database
connections treated as Django treats them after a request, quiet routine task lines) lives here,
with the app, not in the apps' task modules.
"""
import logging
import os

from celery import Celery
from celery.signals import task_postrun, worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "butlers.settings")

app = Celery("butlers")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _redbeat_settings_by_their_own_names(sender, **kwargs) -> None:
    """redbeat looks its settings up by their bare names (``redbeat_redis_url``), which the
    CELERY_ namespace does not give it: without this it warns "set redbeat_redis_url explicitly"
    at every beat start and falls back to the broker's URL and options."""
    for key in [k for k in sender.conf.keys() if k.startswith("CELERY_REDBEAT_")]:
        sender.conf[key[len("CELERY_"):].lower()] = sender.conf[key]


#: Tasks of a fan-out (thousands per sweep, one credential each or a few: a large sweep's
#: batches) whose "received" and "succeeded" lines Celery's worker does not write: each heartbeat
#: already writes the runbook's one line per refresh, and its outcome is counted in its
#: HeartbeatRun. Their retries, failures and rejections are still logged.
QUIET_TASKS = frozenset({"oauth.tasks.credential_heartbeat", "oauth.tasks.heartbeat_batch"})


class _QuietRoutineTaskLines(logging.Filter):
    """Drop Celery's per-task "received"/"succeeded" INFO lines of QUIET_TASKS (they cost a
    formatted, redacted log line each, about a tenth of a fan-out task's CPU)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        data = getattr(record, "data", None)
        if not isinstance(data, dict) or data.get("name") not in QUIET_TASKS:
            return True
        from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS

        return record.msg not in (LOG_RECEIVED, LOG_SUCCESS)


_quiet_filter = _QuietRoutineTaskLines()
for _name in ("celery.app.trace", "celery.worker.strategy"):
    logging.getLogger(_name).addFilter(_quiet_filter)


@task_postrun.connect
def close_old_database_connections(sender=None, **kwargs) -> None:
    """After each task, treat this thread's connections as Django does after a request.

    ``settings.CELERY_DB_REUSE_MAX`` stops Celery's fixup from closing them after every task; this
    closes one only when CONN_MAX_AGE has passed, a transaction was left open or an error left it
    unusable, and arms CONN_HEALTH_CHECKS for its next use.
    """
    if not getattr(sender.request, "is_eager", False):
        from django.db import close_old_connections

        close_old_connections()


@worker_ready.connect  # the threads pool: the worker itself
@worker_process_init.connect  # the prefork pool: each child
def _freeze_what_was_loaded(**kwargs) -> None:
    """Load the cache backend now; then, as Django, the apps and Celery stay loaded for the
    worker's whole life, move them out of the garbage collector's generations, which a busy worker
    (a heartbeat sweep) otherwise walks again and again. Objects made later are collected as
    usual."""
    import gc

    from django.core.cache import caches

    caches["default"]  # its backend is imported on first use: now, not by the first tasks at once
    gc.collect()  # start-up's garbage first: what is frozen is never collected
    gc.freeze()
