"""One bookkeeping path for a refresh's outcome, shared by the stored and the env credential.

Each outcome is counted (``/metrics``), audited (never a token) and logged with the runbook's
wording ("Refreshed access token (valid for N seconds)", "Failed to refresh access token: ...").
The row's own fields are changed by the model's transition methods, by the caller that holds the
row lock.
"""
from __future__ import annotations

from typing import Any

from .. import metrics
from ..models import AuditAction, GoogleCredential
from ..services import audit_record
from .base import logger


def refresh_succeeded(
    *, credential: GoogleCredential | None, source: str | None, actor: str, expires_in: int,
    duration_ms: float, rotated: bool,
) -> None:
    """A refresh grant gave a new access token."""
    detail: dict[str, Any] = {"expires_in": expires_in, "refresh_token_rotated": rotated}
    if source is not None:
        detail["source"] = source
    audit_record(
        action=AuditAction.REFRESHED, actor=actor, credential=credential, outcome="refreshed",
        detail=detail,
    )
    metrics.REFRESHES.labels("success", "ok").inc()
    metrics.REFRESH_DURATION.observe(duration_ms / 1000)
    metrics.ACCESS_TOKENS_SERVED.labels("refresh").inc()
    logger.info(
        f"Refreshed access token (valid for {expires_in} seconds)",
        credential_key=credential.credential_key if credential else None, source=source,
        outcome="refreshed", expires_in=expires_in, duration_ms=duration_ms, actor=actor,
        refresh_token_rotated=rotated,
    )


def refresh_failed(
    *, credential: GoogleCredential | None, source: str | None, actor: str, outcome: str,
    error: str, description: str, duration_ms: float, counted: bool = True,
    consecutive_failures: int | None = None,
) -> None:
    """A refresh grant failed. ``outcome``: 'expired', 'misconfigured' or 'transient'.

    ``counted=False`` (a transient failure that the same call still retries) is only counted in
    ``/metrics``: the grant's record, the audit trail and the log hear of the call's last attempt.
    """
    metrics.REFRESHES.labels(outcome, metrics.reason_label(error)).inc()
    metrics.REFRESH_DURATION.observe(duration_ms / 1000)
    if not counted:
        return
    detail: dict[str, Any] = {"error": error, "reason": description}
    if consecutive_failures is not None:
        detail["consecutive_failures"] = consecutive_failures
    if source is not None:
        detail["source"] = source
    if credential is not None:
        audit_record(
            action=AuditAction.REFRESH_FAILED, actor=actor, credential=credential,
            outcome=outcome, detail=detail,
        )
    text = f"{error}: {description}" if outcome != "transient" else description
    logger.error(
        f"Failed to refresh access token: {text}",
        credential_key=credential.credential_key if credential else None, source=source,
        outcome=outcome, reason=error, consecutive_failures=consecutive_failures,
        duration_ms=duration_ms, actor=actor,
    )
