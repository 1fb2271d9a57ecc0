"""Revoking a stored grant at Google: the emergency procedure behind ``manage.py oauth_revoke`` and
the admin's "Revoke at Google" action.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from .google.revoke import RevokeOutcome, token_revoke
from .models import AuditAction, GoogleCredential
from .services import audit_record
from .tokens import access_token_cache_invalidate

logger = logging.getLogger("oauth.revocation")


@dataclass(frozen=True)
class RevocationResult:
    account: str
    #: 'revoked' (Google confirmed), 'already_revoked' (Google no longer knew the token), or
    #: 'nothing_to_revoke' (no token stored at all).
    outcome: str


def _now():
    return timezone.now()


def credential_revoke(*, credential: GoogleCredential, actor: str) -> RevocationResult:
    """Revoke ``credential``'s grant at Google, then forget its tokens and mark it revoked.

    Google is asked first: when it does not confirm, :class:`~oauth.exceptions.RevocationFailed`
    is raised and nothing changes locally, so the operator can simply retry. Afterwards the row
    stays (state ``expired``, ``last_error_code='revoked'``, ``revoked_at`` set) so the dashboard
    and the status API say what happened; reconnecting the account replaces it in place.
    """
    token = credential.refresh_token or credential.access_token
    if token is None:
        outcome = "nothing_to_revoke"
    else:
        outcome = token_revoke(token=token.reveal()).value
    now = _now()
    with transaction.atomic():
        # The refresh token is dead at Google now; its ciphertext stays so that every later use
        # says "was revoked" (rather than "no refresh token") and a retry can ask Google again.
        credential.save(update_fields=credential.mark_revoked(now=now, actor=actor))
        audit_record(
            action=AuditAction.REVOKED,
            actor=actor,
            credential=credential,
            outcome=outcome,
            detail={"revoke_uri_outcome": outcome},
        )
    access_token_cache_invalidate(credential=credential)
    logger.warning("Revoked Google grant for %s (%s) by %s", credential, outcome, actor)
    return RevocationResult(account=str(credential), outcome=outcome)


__all__ = ["RevocationResult", "RevokeOutcome", "credential_revoke"]
