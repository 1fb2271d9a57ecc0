"""The startup guard: a connector refuses to start without a usable Google credential.

``require_google_credentials_or_exit(caller="gmail-connector")`` resolves the credential the same
way every other part does (the database first, then the deprecated env vars), logs
"Google credentials resolved" and returns the resolution. When nothing usable resolves it writes a
``STARTUP BLOCKED: <caller>`` banner to stderr that says what is missing and how to fix it, and
exits the process with one of the codes below. ``manage.py oauth_check`` is the same check as a
pre-flight command.

It can be called from a bare interpreter started in the project root (``python -c "from
butlers.startup_guard import ..."``): it then sets Django up itself with
``DJANGO_SETTINGS_MODULE`` (default ``butlers.settings``), so it needs the deployment's environment
(``DATABASE_URL``, ``SECRET_KEY``, ``OAUTH_ENCRYPTION_KEYS``, or ``DEBUG=1`` on a dev checkout).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

# The pre-flight logic lives in the app; this module is the public entry point the runbook imports.
from oauth.preflight import (  # noqa: F401 - re-exported for callers of the public entry point
    CALLBACK_PATH,
    DEFAULT_DASHBOARD_URL,
    EXIT_CREDENTIAL_UNUSABLE,
    EXIT_DATABASE_UNAVAILABLE,
    EXIT_NO_CREDENTIALS,
    EXIT_OK,
    GuardFailure,
    blocked_banner,
    credentials_check,
    dashboard_url,
    exit_blocked,
    reconnect_remediation,
    standard_remediation,
)

if TYPE_CHECKING:  # pragma: no cover
    from oauth.selectors import ResolvedCredential

logger = logging.getLogger("butlers.startup_guard")


def _ensure_django() -> None:
    """Set Django up when called from a bare interpreter (no-op inside manage.py/Celery/pytest)."""
    from django.apps import apps

    if apps.ready:
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "butlers.settings")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    import django

    django.setup()


def require_google_credentials_or_exit(
    *, caller: str, account: str | None = None
) -> ResolvedCredential:
    """Return the resolved credential, or print the STARTUP BLOCKED banner and exit non-zero."""
    _ensure_django()
    from oauth.preflight import credentials_required

    return credentials_required(caller=caller, account=account)
