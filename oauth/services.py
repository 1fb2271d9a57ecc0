"""Writes of the OAuth app that every part shares: the audit trail.

Flow-specific services live beside their flow (``oauth/consent.py``, ``oauth/tokens/``, ...);
they all record what happened through :func:`audit_record`.
"""
from __future__ import annotations

from typing import Any

from .models import AuditEvent, GoogleCredential
from .redaction import redact_event
from .statements import audit_batch_current


def actor_for_user(user) -> str:
    """The audit actor for a request's user."""
    if user is None or not getattr(user, "is_authenticated", False):
        return "user:anonymous"
    return f"user:{user.get_username()}"


def audit_record(
    *,
    action: str,
    actor: str,
    credential: GoogleCredential | None = None,
    outcome: str = "",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event; ``detail`` is redacted before it is stored. Inside
    :func:`oauth.statements.audit_batch` the event is written with the others when it ends."""
    event = AuditEvent(
        action=action,
        actor=actor,
        credential=credential,
        credential_key=credential.credential_key if credential else "",
        account=credential.email if credential else "",
        outcome=outcome,
        detail=redact_event(None, "", dict(detail or {})),
    )
    batch = audit_batch_current()
    if batch is not None:
        return batch.add(event)
    event.save(force_insert=True)
    return event


def credential_set_scopes(*, credential: GoogleCredential, scopes) -> list[str]:
    """Record exactly ``scopes`` (short names or URIs) as granted; unknown scopes are added."""
    from . import scopes as catalogue
    from .models import Scope

    uris = catalogue.normalize_scopes(scopes)
    existing = {scope.uri: scope for scope in Scope.objects.filter(uri__in=uris)}
    for uri in uris:
        if uri not in existing:
            existing[uri], _ = Scope.objects.get_or_create(
                uri=uri, defaults={"short_name": catalogue.short_name(uri)[:100]}
            )
    credential.granted_scopes.set(existing.values())
    metadata = dict(credential.credentials or {})
    metadata["scopes"] = uris
    if metadata != credential.credentials:
        credential.credentials = metadata
        credential.save(update_fields=["credentials", "updated_at"])
    return uris
