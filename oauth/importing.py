"""Moving the deprecated env credential into the database (``manage.py oauth_import_env``).

By default the import first proves the credential works: one refresh grant at Google (which also
tells the granted scopes) and a call to the userinfo endpoint (which tells the account email, when
the grant holds the ``email`` scope). Only then is it stored, so an operator who is told "remove
these variables" will not lose a working setup. ``verify=False`` imports offline instead: no call
to Google, the email stays blank and the scopes are whatever the JSON variable listed.

Running it again is harmless: the same credential is found (by email, else by refresh token) and
reported ``unchanged``; a different refresh token for the same account is ``updated``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from .encryption import Secret
from .exceptions import NothingToImport, TokenExchangeFailed
from .models import (
    PRIMARY_CREDENTIAL_KEY,
    AuditAction,
    CredentialSource,
    CredentialState,
    GoogleCredential,
)
from .selectors import (
    DEPRECATED_ENV_VARS,
    ResolvedCredential,
    env_credential_resolve,
    oauth_client_get_or_none,
)
from .services import audit_record, credential_set_scopes
from .tokens import access_token_cache_invalidate

logger = logging.getLogger("oauth.importing")

ENV_IMPORT_KEY = "google:env-import"


@dataclass
class ImportResult:
    """What the import did."""

    #: 'created', 'updated' or 'unchanged'
    outcome: str
    credential: GoogleCredential
    #: the variable the credential came from
    source: str
    verified: bool
    #: every deprecated variable set in this environment: remove them all once imported
    env_vars_to_remove: list[str] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)

    @property
    def account(self) -> str:
        return str(self.credential)


def _now():
    return timezone.now()


def _set_env_vars() -> list[str]:
    import os

    return [name for name in DEPRECATED_ENV_VARS if os.environ.get(name) is not None]


@dataclass
class _Verification:
    access_token: Secret
    expires_in: int
    refresh_token: str | None
    scopes: list[str] | None
    email: str


def _verify(resolved: ResolvedCredential) -> _Verification:
    """One refresh grant and one userinfo call; raises the refresh's classified errors."""
    from .google.consent import userinfo_email
    from .google.refresh import refresh_access_token

    result = refresh_access_token(
        refresh_token=resolved.refresh_token.reveal(),
        client_id=resolved.client_id,
        client_secret=resolved.client_secret.reveal() if resolved.client_secret else None,
    )
    access_token = Secret(result.access_token, field="access_token")
    try:
        email = userinfo_email(access_token=access_token)
    except TokenExchangeFailed:
        # A grant without the 'email' scope: import it without an email rather than not at all.
        logger.warning("Google did not give the imported account's email; it is stored without one")
        email = ""
    return _Verification(
        access_token=access_token,
        expires_in=result.expires_in,
        refresh_token=result.refresh_token,
        scopes=result.scopes,
        email=email,
    )


def _find_existing(resolved: ResolvedCredential, email: str) -> GoogleCredential | None:
    if email:
        match = GoogleCredential.objects.filter(email__iexact=email).first()
        if match is not None:
            return match
    plaintext = resolved.refresh_token.reveal()
    for credential in GoogleCredential.objects.filter(refresh_token__isnull=False).iterator():
        if credential.refresh_token is not None and credential.refresh_token.reveal() == plaintext:
            return credential
    return (
        GoogleCredential.objects.filter(source=CredentialSource.ENV_IMPORT, email="").first()
        if not email
        else None
    )


def _new_key(email: str) -> str:
    if not GoogleCredential.objects.filter(credential_key=PRIMARY_CREDENTIAL_KEY).exists():
        return PRIMARY_CREDENTIAL_KEY
    return f"google:{email}" if email else ENV_IMPORT_KEY


def _row_client_secret(resolved: ResolvedCredential) -> Secret | None:
    """Keep the env's client secret on the row only when the configured client is another one."""
    client = oauth_client_get_or_none()
    if client is not None and client.client_id == resolved.client_id and client.client_secret:
        return None
    return resolved.client_secret


def env_credentials_import(*, actor: str, verify: bool = True) -> ImportResult:
    """Store the deprecated env credential in the database; see the module docstring.

    Raises :class:`~oauth.exceptions.NothingToImport` when no deprecated variable is set,
    :class:`~oauth.exceptions.EnvCredentialInvalid` (the runbook's messages) when one is malformed,
    and, with ``verify``, the refresh's :class:`ReconsentRequired` / :class:`ClientMisconfigured` /
    :class:`TransientGoogleError` without storing anything.
    """
    resolved = env_credential_resolve()
    if resolved is None:
        raise NothingToImport()
    verification = _verify(resolved) if verify else None
    email = verification.email if verification else ""
    refresh_token = (
        verification.refresh_token if verification and verification.refresh_token else None
    ) or resolved.refresh_token.reveal()
    scopes = (verification.scopes if verification else None) or resolved.scopes
    now = _now()

    with transaction.atomic():
        credential = _find_existing(resolved, email)
        if credential is None:
            outcome = "created"
            credential = GoogleCredential(
                credential_key=_new_key(email), source=CredentialSource.ENV_IMPORT
            )
        else:
            credential = GoogleCredential.objects.select_for_update().get(pk=credential.pk)
            same = (
                credential.refresh_token is not None
                and credential.refresh_token.reveal() == refresh_token
                and credential.client_id == resolved.client_id
                and credential.state == CredentialState.CONNECTED
            )
            outcome = "unchanged" if same else "updated"

        if outcome != "unchanged":
            credential.mark_imported(
                now=now,
                refresh_token=refresh_token,
                client_id=resolved.client_id,
                client_secret=_row_client_secret(resolved),
                email=email,
                imported_from=resolved.source,
                access_token=verification.access_token if verification is not None else None,
                expires_in=verification.expires_in if verification is not None else None,
            )
            credential.save()
            if scopes:
                credential_set_scopes(credential=credential, scopes=scopes)
        audit_record(
            action=AuditAction.IMPORTED,
            actor=actor,
            credential=credential,
            outcome=outcome,
            detail={"source": resolved.source, "verified": verification is not None},
        )
    if outcome != "unchanged":
        access_token_cache_invalidate(credential=credential)
    logger.info(
        "Imported the deprecated %s credential as %s (%s)", resolved.source, credential, outcome
    )
    return ImportResult(
        outcome=outcome,
        credential=credential,
        source=resolved.source,
        verified=verification is not None,
        env_vars_to_remove=_set_env_vars(),
        scopes=credential.granted_scope_uris(),
    )
