"""The credential pre-flight: can a connector start with the Google credential that resolves?

Resolves the credential the way every other part does (the database first, then the deprecated env
vars) without calling Google, and judges it. :func:`credentials_check` returns the resolution or a
:class:`GuardFailure` (the problem, the fix, the exit code); :func:`exit_blocked` prints the
``STARTUP BLOCKED: <caller>`` banner and exits. ``manage.py oauth_check`` and the public entry point
``butlers.startup_guard.require_google_credentials_or_exit`` are thin wrappers around it.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn, TextIO
from urllib.parse import urlsplit

from .redaction import redact_text

if TYPE_CHECKING:  # pragma: no cover
    from .selectors import ResolvedCredential

logger = logging.getLogger("butlers.startup_guard")

#: Exit codes (documented in docs/connectors-and-commands.md). 2 is taken by settings errors.
EXIT_OK = 0
EXIT_NO_CREDENTIALS = 3
"""No credential is stored and no deprecated env var is set, or one is set but malformed."""
EXIT_CREDENTIAL_UNUSABLE = 4
"""A credential resolves but cannot be used: expired/revoked, no OAuth client, undecryptable."""
EXIT_DATABASE_UNAVAILABLE = 5
"""The database could not be queried (down, or not migrated)."""

DEFAULT_DASHBOARD_URL = "http://127.0.0.1:8200/"
CALLBACK_PATH = "/api/oauth/google/callback"


@dataclass(frozen=True)
class GuardFailure:
    """Why the guard blocks: a one-line problem, the fix, and the exit code."""

    problem: str
    remediation: list[str]
    exit_code: int


def dashboard_url() -> str:
    """The dashboard operators should open: BUTLERS_DASHBOARD_URL, else the redirect URI's origin."""
    from .app_settings import oauth_settings

    configured = (oauth_settings.BUTLERS_DASHBOARD_URL or "").strip()
    if configured:
        return configured if configured.endswith("/") else configured + "/"
    redirect_uri = ""
    try:
        from .selectors import oauth_client_get_or_none

        client = oauth_client_get_or_none()
        redirect_uri = client.redirect_uri if client else ""
        redirect_uri = redirect_uri or oauth_settings.GOOGLE_OAUTH_REDIRECT_URI
    except Exception:  # the banner must print even when the database is down
        redirect_uri = oauth_settings.GOOGLE_OAUTH_REDIRECT_URI
    parts = urlsplit(redirect_uri or "")
    if parts.scheme and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}/"
    return DEFAULT_DASHBOARD_URL


def standard_remediation() -> list[str]:
    url = dashboard_url()
    return [
        f"Connect a Google account on the dashboard: {url} (staff login at {url}admin/).",
        "Or move deprecated env credentials into the database: set them, run "
        "'python manage.py oauth_import_env', then remove them from the environment.",
        "Deprecated fallback (read only when the database holds no credential): "
        "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON='{\"client_id\":...,\"client_secret\":...,"
        "\"refresh_token\":...}', or GMAIL_CLIENT_ID + GMAIL_CLIENT_SECRET + GMAIL_REFRESH_TOKEN, "
        "or GOOGLE_REFRESH_TOKEN with GOOGLE_OAUTH_CLIENT_ID + GOOGLE_OAUTH_CLIENT_SECRET.",
        "Check again with: python manage.py oauth_check",
    ]


def reconnect_remediation() -> list[str]:
    url = dashboard_url()
    return [
        f"Reconnect the account on the dashboard: {url} (\"Connect a Google account\").",
        "Check again with: python manage.py oauth_check",
    ]


def credentials_check(*, account: str | None = None) -> tuple[ResolvedCredential | None, GuardFailure | None]:
    """Resolve the credential and judge whether a connector can use it (no call to Google)."""
    from django.db import DatabaseError

    from .exceptions import CredentialError, EncryptionError, NotConfigured
    from .models import CredentialState
    from .selectors import credential_resolve

    try:
        resolved = credential_resolve(account=account)
        # Opening the refresh token proves OAUTH_ENCRYPTION_KEYS still holds its key.
        resolved.refresh_token.reveal()
    except EncryptionError as exc:
        return None, GuardFailure(
            problem=str(exc),
            remediation=["Fix OAUTH_ENCRYPTION_KEYS, then: python manage.py oauth_check"],
            exit_code=EXIT_CREDENTIAL_UNUSABLE,
        )
    except CredentialError as exc:
        return None, GuardFailure(
            problem=str(exc), remediation=standard_remediation(), exit_code=EXIT_NO_CREDENTIALS
        )
    except DatabaseError as exc:
        return None, GuardFailure(
            problem=f"The database could not be queried ({type(exc).__name__}).",
            remediation=[
                "Check DATABASE_URL and that the database is up, then run "
                "'python manage.py migrate' and 'python manage.py oauth_check'.",
            ],
            exit_code=EXIT_DATABASE_UNAVAILABLE,
        )

    credential = resolved.credential
    if credential is not None and credential.state == CredentialState.EXPIRED:
        how = "was revoked" if credential.revoked_at else "has expired or was revoked at Google"
        return resolved, GuardFailure(
            problem=f"The stored Google grant for {credential} {how}; it cannot be refreshed.",
            remediation=reconnect_remediation(),
            exit_code=EXIT_CREDENTIAL_UNUSABLE,
        )
    if not resolved.client_id or resolved.client_secret is None:
        return resolved, GuardFailure(
            problem=f"The credential for {resolved.account} has no usable OAuth client. "
            + NotConfigured.description,
            remediation=standard_remediation()[-1:],
            exit_code=EXIT_CREDENTIAL_UNUSABLE,
        )
    return resolved, None


def blocked_banner(*, caller: str, failure: GuardFailure) -> str:
    """The banner text; it names the problem and the fix, never a secret."""
    rule = "=" * 78
    lines = [
        rule,
        f"STARTUP BLOCKED: {caller}",
        "Google credentials could not be resolved for this process.",
        f"Problem: {redact_text(failure.problem)}",
        "Fix:",
        *(f"  - {step}" for step in failure.remediation),
        rule,
    ]
    return "\n".join(lines) + "\n"


def exit_blocked(*, caller: str, failure: GuardFailure, stream: TextIO | None = None) -> NoReturn:
    """Print the banner to stderr, log it, and exit with the failure's code."""
    (stream or sys.stderr).write(blocked_banner(caller=caller, failure=failure))
    (stream or sys.stderr).flush()
    logger.error("STARTUP BLOCKED: %s: %s", caller, failure.problem)
    raise SystemExit(failure.exit_code)


def credentials_required(*, caller: str, account: str | None = None) -> ResolvedCredential:
    """The resolved credential, or the STARTUP BLOCKED banner on stderr and a non-zero exit."""
    resolved, failure = credentials_check(account=account)
    if failure is not None:
        exit_blocked(caller=caller, failure=failure)
    logger.info(
        "Google credentials resolved for %s (account %s, source %s)",
        caller,
        resolved.account,
        resolved.source,
    )
    return resolved
