"""Django settings for Butlers OAuth.

Everything an operator sets comes from the environment (see README "Configuration"). With no
``DATABASE_URL`` / ``REDIS_URL`` the project runs on embedded defaults: a SQLite file, a file-based
cache and a file-system Celery broker, all under ``var/``.
"""
from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import csp.constants as _csp
import environ
from cryptography.fernet import Fernet
from django.core.management.utils import get_random_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("BUTLERS_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

#: Written by `make run` / `make demo` on a development checkout: DEBUG on, plain-http cookies, the
#: stores and (demo) Google endpoints that run uses, so `manage.py`, `celery` and the runbook's
#: snippets on that checkout match the running app. Its values never override the environment,
#: and it is not read at all when SECRET_KEY is set: every production environment sets it (and
#: the Docker image and the systemd units have no such file).
DEV_ENV_FILE = VAR_DIR / "dev.env"
if DEV_ENV_FILE.is_file() and "SECRET_KEY" not in os.environ:
    environ.Env.read_env(DEV_ENV_FILE, overwrite=False)

# prometheus_client's multiprocess mode writes a file per process into this folder: every process
# (web, worker, beat, a command) creates it, so none dies at its first metric on a missing folder.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)


def _stop(message: str) -> None:
    """Stop start-up with one clear line, never a traceback."""
    sys.stderr.write(f"butlers: configuration error: {message}\n")
    raise SystemExit(2)


class _Env(environ.Env):
    """django-environ's reader, except that a value that is not of its kind (``OAUTH_HTTP_TIMEOUT=
    ten``) stops start-up with one line naming the variable (not its value: it may be a URL with
    a password), instead of a traceback."""

    _KINDS = {int: "a whole number", float: "a number", bool: "true or false"}

    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except (ValueError, TypeError):
            if isinstance(cast, list):  # env.list(name, cast=float)
                kind = f"a comma-separated list, each {self._KINDS.get(cast[0], 'valid')}"
            else:
                kind = self._KINDS.get(cast, "a valid value")
            _stop(f"{var} must be {kind}: fix it or unset it.")


env = _Env()

DEBUG = env.bool("DEBUG", default=False)
#: A broker client (docs/token-api.md): with BUTLERS_BROKER_URL set and no DATABASE_URL, this process
#: (the Gmail connector on another host) gets access tokens from the broker and keeps only its own
#: non-secret state (Gmail cursors and messages) in the SQLite file under BUTLERS_VAR_DIR. It holds
#: no secret, so it needs neither SECRET_KEY nor OAUTH_ENCRYPTION_KEYS: local values are made
#: under BUTLERS_VAR_DIR as for DEBUG.
BROKER_CLIENT = bool(env.str("BUTLERS_BROKER_URL", default="")) and not env.str("DATABASE_URL", default="")


def _dev_value(name: str, make) -> str:
    """A value kept under var/ so that a DEBUG run keeps working across restarts."""
    path = VAR_DIR / f"dev-{name}"
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not (DEBUG or BROKER_CLIENT):
        _stop(
            "SECRET_KEY is not set. Generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
            f" (on a development checkout, run `make run` once: its settings in {DEV_ENV_FILE}"
            " are then read by manage.py and celery)"
        )
    SECRET_KEY = _dev_value("secret-key", get_random_secret_key)

#: Fernet keys, newest first. The first encrypts; every one of them decrypts.
OAUTH_ENCRYPTION_KEYS = env.list("OAUTH_ENCRYPTION_KEYS", default=[])
if not OAUTH_ENCRYPTION_KEYS:
    if not (DEBUG or BROKER_CLIENT):
        _stop(
            "OAUTH_ENCRYPTION_KEYS is not set. Generate a key with: "
            "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            f" (on a development checkout, run `make run` once: its settings in {DEV_ENV_FILE}"
            " are then read by manage.py and celery)"
        )
    OAUTH_ENCRYPTION_KEYS = [_dev_value("encryption-key", lambda: Fernet.generate_key().decode())]

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "axes",
    "csp",
    "django_object_actions",
    "django_prometheus",
    "oauth",
    "connectors",
    "butlers.apps.ButlersConfig",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "butlers.auth.AnonymousWhenDatabaseDownMiddleware",
    "butlers.auth.StaffBasicAuthMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_structlog.middlewares.RequestMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as django-axes asks: it turns a lockout detected during the view into its answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "butlers.urls"
WSGI_APPLICATION = "butlers.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- stores ---------------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'butlers.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 2,
            },
            "KEY_PREFIX": "butlers",
        }
    }
else:
    # Shared between web, worker and beat processes on one machine (rate limits need that).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# --- Celery -----------------------------------------------------------------------------------
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_IGNORE_RESULT = True
# Worker and beat log through the project's formatter, so their lines are redacted too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fixup closes every database connection before and after every task unless this
# is set (a new PostgreSQL connection per heartbeat: the largest single cost of a fan-out). With
# it, the fixup closes a connection only every N tasks, and oauth.tasks closes connections the
# way Django does after a request (CONN_MAX_AGE, CONN_HEALTH_CHECKS, a broken connection).
CELERY_DB_REUSE_MAX = 1000
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # redbeat, made to take its lock again when Redis restarts empty (butlers/beat.py)
    CELERY_BEAT_SCHEDULER = "butlers.beat.SelfHealingRedBeatScheduler"
    CELERY_REDBEAT_REDIS_URL = REDIS_URL
    # set, so redbeat does not fall back to the broker's options (and warn about it)
    CELERY_REDBEAT_REDIS_OPTIONS = {}
    CELERY_REDBEAT_KEY_PREFIX = "butlers:redbeat:"
    # Beat extends its lock at every tick (at most CELERY_BEAT_MAX_LOOP_INTERVAL apart); a dead
    # beat's lock expires after CELERY_REDBEAT_LOCK_TIMEOUT, so a standby beat takes over and
    # readiness reports "no beat" within a minute.
    CELERY_BEAT_MAX_LOOP_INTERVAL = 15
    CELERY_REDBEAT_LOCK_TIMEOUT = 60
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
else:
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    # "localhost": kombu warns "No hostname was supplied" for every connection without one
    CELERY_BROKER_URL = "filesystem://localhost//"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    CELERY_BEAT_SCHEDULER = "celery.beat:PersistentScheduler"
    CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

#: Seconds between heartbeat sweeps (readiness fails when the last sweep is older than twice this).
OAUTH_HEARTBEAT_INTERVAL = env.int("OAUTH_HEARTBEAT_INTERVAL", default=3600)
#: Seconds between Gmail polls by the beat-scheduled connector task.
GMAIL_POLL_INTERVAL = env.int("GMAIL_POLL_INTERVAL", default=60)

# Every periodic schedule of the project, in one place.
CELERY_BEAT_SCHEDULE = {
    "oauth-heartbeat-sweep": {
        "task": "oauth.tasks.heartbeat_sweep",
        "schedule": float(OAUTH_HEARTBEAT_INTERVAL),
    },
    "gmail-poll": {
        "task": "connectors.tasks.gmail_poll_all",
        "schedule": float(GMAIL_POLL_INTERVAL),
    },
    # Reminders of problems still open, the digest of any notification whose email was lost,
    # and webhook retries whose message was lost: cheap when there is nothing to do.
    "oauth-notifications-housekeeping": {
        "task": "oauth.notifications.notifications_housekeeping",
        "schedule": 300.0,
    },
    # Retention: audit events after OAUTH_AUDIT_RETENTION_DAYS, heartbeat and action runs after
    # OAUTH_RUN_RETENTION_DAYS (0 keeps them forever); daily, every OAUTH_PRUNE_INTERVAL seconds.
    "oauth-prune": {
        "task": "oauth.tasks.records_prune",
        "schedule": float(env.int("OAUTH_PRUNE_INTERVAL", default=86400)),
    },
}
OAUTH_AUDIT_RETENTION_DAYS = env.int("OAUTH_AUDIT_RETENTION_DAYS", default=400)
OAUTH_RUN_RETENTION_DAYS = env.int("OAUTH_RUN_RETENTION_DAYS", default=90)

# --- Google OAuth (see oauth/app_settings.py for what each one means) ------------------------
GOOGLE_OAUTH_CLIENT_ID = env.str("GOOGLE_OAUTH_CLIENT_ID", default="")
GOOGLE_OAUTH_CLIENT_SECRET = env.str("GOOGLE_OAUTH_CLIENT_SECRET", default="")
GOOGLE_OAUTH_REDIRECT_URI = env.str("GOOGLE_OAUTH_REDIRECT_URI", default="")
if "GOOGLE_OAUTH_SCOPES" in env:
    GOOGLE_OAUTH_SCOPES = env.str("GOOGLE_OAUTH_SCOPES").split()
if "OAUTH_REQUIRED_SCOPES" in env:
    OAUTH_REQUIRED_SCOPES = env.str("OAUTH_REQUIRED_SCOPES").split()


def _from_env(read, *names: str) -> None:
    """Each of ``names`` the environment sets becomes that setting, read with ``read`` (env.str,
    env.float, env.int); the others keep the app's default (oauth/app_settings.py)."""
    for name in names:
        if name in env:
            globals()[name] = read(name)


_from_env(
    env.str, "GOOGLE_OAUTH_AUTH_URI", "GOOGLE_OAUTH_TOKEN_URI", "GOOGLE_OAUTH_REVOKE_URI",
    "GOOGLE_OAUTH_USERINFO_URI", "GOOGLE_API_BASE_URL",
)
OAUTH_RATE_LIMIT = env.str("OAUTH_RATE_LIMIT", default="30/m")
#: /metrics answers a `Bearer` token equal to this, or a client in METRICS_ALLOWED_IPS (comma-
#: separated addresses or CIDR networks; unset = loopback only).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=[])
#: Token API calls per service key, e.g. 600/m; 0 turns the limit off.
SERVICE_KEY_RATE_LIMIT = env.str("SERVICE_KEY_RATE_LIMIT", default="600/m")
#: Public URL of the dashboard, named in the STARTUP BLOCKED banner (empty = derived).
BUTLERS_DASHBOARD_URL = env.str("BUTLERS_DASHBOARD_URL", default="")

# --- notifications and Google security events (oauth/notifications.py, oauth/risc.py) ----------
#: SMTP for notification emails, e.g. smtp+tls://user:password@smtp.example.com:587 (django-
#: environ's email URL); unset = the console backend with DEBUG on, SMTP on localhost:25 off.
if "EMAIL_URL" in env:
    globals().update(env.email_url("EMAIL_URL"))
elif DEBUG:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="butlers-oauth@localhost")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
OAUTH_NOTIFY_EMAILS = env.list("OAUTH_NOTIFY_EMAILS", default=[])
GOOGLE_RISC_CONFIG_URI = env.str(
    "GOOGLE_RISC_CONFIG_URI", default="https://accounts.google.com/.well-known/risc-configuration"
)
GOOGLE_RISC_SERVICE_ACCOUNT_FILE = env.str("GOOGLE_RISC_SERVICE_ACCOUNT_FILE", default="")
GOOGLE_RISC_CLIENT_IDS = env.list("GOOGLE_RISC_CLIENT_IDS", default=[])
_from_env(env.float, "OAUTH_NOTIFY_DEBOUNCE", "OAUTH_NOTIFY_REMINDER_INTERVAL")
_from_env(lambda name: env.list(name, cast=float), "OAUTH_WEBHOOK_RETRY_SCHEDULE")
_from_env(
    env.float, "OAUTH_HEARTBEAT_WINDOW", "OAUTH_HEARTBEAT_CONCURRENCY", "OAUTH_ACCESS_TOKEN_MARGIN",
    "OAUTH_REFRESH_FAILURES_BEFORE_FAILING", "OAUTH_HTTP_TIMEOUT", "OAUTH_REFRESH_BACKOFF",
)
_from_env(  # counts (docs/token-lifecycle.md)
    env.int, "OAUTH_REFRESH_RETRIES", "OAUTH_HEARTBEAT_PROCESSES",
    "OAUTH_HEARTBEAT_TASKS_PER_SWEEP", "OAUTH_HEARTBEAT_MAX_BATCH",
)

# --- auth, i18n, static -----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

# Brute-force protection (django-axes), one policy for the admin login form and HTTP Basic on
# /api/ (butlers/auth.py): after AXES_FAILURE_LIMIT wrong passwords for one username from one
# address, that pair is refused for AXES_COOLOFF_TIME (counted from its latest failure). Keyed on
# the pair, so an attacker elsewhere cannot lock the operator out. Stored in the database, so it
# holds with Redis down. `manage.py axes_reset_username NAME` lifts a lockout early.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = 10
AXES_COOLOFF_TIME = dt.timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "butlers.auth.lockout_response"
AXES_CLIENT_IP_CALLABLE = "butlers.auth.client_address"
AXES_VERBOSE = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- security ---------------------------------------------------------------------------------
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Probes come over plain http from inside the deployment (container healthchecks); they carry no
# credential and answer nothing secret. /metrics is NOT exempt: its bearer token must not travel
# in clear, so Prometheus scrapes it over https (docs/runbook.md, "Metrics").
SECURE_REDIRECT_EXEMPT = [r"^api/health"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp) on every answer: only this origin's scripts, styles, images
# and forms; the dashboard's one inline <style> carries the per-request nonce; no inline script,
# no eval, no plugin, no framing, no <base>. The Django admin works under it as it is.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [_csp.SELF],
        "script-src": [_csp.SELF],
        "style-src": [_csp.SELF, _csp.NONCE],
        "img-src": [_csp.SELF, "data:"],
        "font-src": [_csp.SELF],
        "connect-src": [_csp.SELF],
        "form-action": [_csp.SELF],
        "object-src": [_csp.NONE],
        "base-uri": [_csp.NONE],
        "frame-ancestors": [_csp.NONE],
    }
}
# Joining the HSTS preload list is a decision about the whole domain, not this app's to make.
SILENCED_SYSTEM_CHECKS = ["security.W021"]

# --- logging ----------------------------------------------------------------------------------
BUTLERS_LOG_LEVEL = env.str("BUTLERS_LOG_LEVEL", default="INFO").upper()
BUTLERS_LOG_FORMAT = env.str("BUTLERS_LOG_FORMAT", default="console")

from butlers.logging import configure_logging  # noqa: E402

LOGGING_CONFIG = None
configure_logging(level=BUTLERS_LOG_LEVEL, fmt=BUTLERS_LOG_FORMAT)
DJANGO_STRUCTLOG_CELERY_ENABLED = False
