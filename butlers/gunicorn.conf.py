"""gunicorn settings (``gunicorn -c butlers/gunicorn.conf.py butlers.wsgi``).

The access log leaves out query strings and referrers: an OAuth callback URL carries the
authorization code, which must never reach a log.
"""
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8200")
workers = int(os.environ.get("WEB_WORKERS", "2"))
graceful_timeout = 10
# no gunicornc control socket: nothing here uses it, and its default path ($HOME/.gunicorn) is one
# per user, so a second gunicorn on the machine (another checkout, a test) would take it over
control_socket_disable = True
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'


def child_exit(server, worker):
    """Let prometheus_client forget a dead worker's live gauges (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
