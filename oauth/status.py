"""The status report behind ``GET /api/oauth/status``, the dashboard and ``manage.py oauth_status``.

It reads stored state only (it never calls Google) in a fixed number of queries whatever the number
of accounts: the credentials, their granted scopes (one prefetch), the OAuth client, and the last
consent outcome.

Shape (DESIGN.md)::

    {"google": {...the primary, or state 'not_configured'...}, "accounts": [{...}, ...]}

Every entry has ``state``, ``connected``, ``scopes_granted`` (always a list), ``missing_scopes``
and, unless connected, a ``remediation`` sentence. Emails, credential keys, timestamps and error
details are added only with ``include_private=True`` (staff).

An account's state is :meth:`GoogleCredential.effective_state` (the one rule the dashboard, the
admin, ``/metrics`` and ``oauth_status`` share). With no stored credential, ``google`` reads ``redirect_uri_mismatch`` when the last consent
  attempt failed that way (so the runbook's triage row shows up in status), else
  ``not_configured``.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import json

from django.db.models import BooleanField, ExpressionWrapper, Q
from django.db.models.fields.json import KT
from django.utils import timezone

from . import scopes as scope_catalogue
from .app_settings import oauth_settings
from .models import AuditAction, AuditEvent, CredentialState, GoogleCredential, operator_state
from .selectors import ClientConfig, credential_states, oauth_client_get_or_none
from .tokens.stored import expired_remediation

NOT_CONFIGURED = "not_configured"

_PRIVATE_TIMESTAMPS = (
    "consented_at",
    "refresh_token_issued_at",
    "last_refreshed_at",
    "last_used_at",
    "last_probed_at",
    "access_token_expires_at",
    "last_error_at",
    "revoked_at",
    "created_at",
    "updated_at",
)


def _now() -> dt.datetime:
    return timezone.now()


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _short(uris: list[str]) -> str:
    return ", ".join(scope_catalogue.short_name(uri) for uri in uris)


def credential_state(credential: GoogleCredential, *, client: ClientConfig | None) -> str:
    """The state an operator sees (:meth:`GoogleCredential.effective_state`, the one rule)."""
    return credential.effective_state(client_configured=client is not None)


def remediation(credential: GoogleCredential, *, state: str, missing: list[str]) -> str:
    """One sentence (or two) telling the operator what to do about ``state``."""
    if state == CredentialState.MISSING_SCOPE:
        return (
            f"This grant lacks {_short(missing)}. Reconnect the account from the dashboard (/) "
            "with the button on its card and leave every permission ticked."
        )
    if state == CredentialState.EXPIRED:
        if credential.last_error_code.startswith("risc_") and credential.last_error_detail:
            return credential.last_error_detail  # what Google's security event reported
        if credential.revoked_at is not None:
            return (
                "This grant was revoked. Reconnect the account from the dashboard (/) with the "
                "button on its card to use it again."
            )
        if credential.last_error_code == "invalid_grant":
            return expired_remediation(credential)
        return (
            "Google rejected the refresh token (expired, revoked, or unused for six months). "
            "Reconnect the account from the dashboard (/) with the button on its card."
        )
    if state == CredentialState.REFRESH_FAILING:
        return (
            f"Refreshing has failed {credential.consecutive_failures} times in a row with a "
            "temporary error; retries continue and nothing is lost. If it persists, check this "
            "server's network access to Google and GET /api/health/ready."
        )
    if state == CredentialState.MISCONFIGURED:
        return (
            "The OAuth client is missing or Google rejected it. Check the client id and secret "
            "in the admin (/admin/oauth/oauthclient/) or GOOGLE_OAUTH_CLIENT_ID / "
            "GOOGLE_OAUTH_CLIENT_SECRET, then reconnect the account from the dashboard (/)."
        )
    if state == CredentialState.REDIRECT_URI_MISMATCH:
        return _redirect_mismatch_remediation()
    return "Reconnect the account from the dashboard (/) with the button on its card."


def _redirect_mismatch_remediation() -> str:
    return (
        "Google refused the redirect URI. Add it exactly as configured (GOOGLE_OAUTH_REDIRECT_URI "
        "or the client in the admin; default: this server's /api/oauth/google/callback) to the "
        "OAuth client's 'Authorized redirect URIs' in Google Cloud Console, then connect again."
    )


def _account_payload(
    credential: GoogleCredential,
    *,
    state: str,
    include_private: bool,
    now: dt.datetime,
) -> dict[str, Any]:
    missing = credential.missing_scopes()
    entry: dict[str, Any] = {
        "state": state,
        "connected": state == CredentialState.CONNECTED,
        "scopes_granted": sorted(credential.granted_scope_list()),
        "missing_scopes": missing,
    }
    if state != CredentialState.CONNECTED:
        entry["remediation"] = remediation(credential, state=state, missing=missing)
    if include_private:
        entry.update(
            {
                "email": credential.email,
                "credential_key": credential.credential_key,
                "primary": credential.is_primary,
                "source": credential.source,
                "client_id": credential.client_id,
                "last_error_code": credential.last_error_code,
                "last_error_detail": credential.last_error_detail,
                "consecutive_failures": credential.consecutive_failures,
                "days_until_idle_limit": credential.days_until_idle_limit(now=now),
                "last_security_event": credential.last_security_event or None,
                "last_security_event_at": _iso(credential.last_security_event_at),
            }
        )
        for name in _PRIVATE_TIMESTAMPS:
            entry[name] = _iso(getattr(credential, name))
    return entry


#: Columns the public payload is judged from (everything else is staff-only).
_PUBLIC_COLUMNS = ("pk", "state", "revoked_at", "scopes")
#: What a remediation reads, fetched only for the accounts that need one.
_REMEDIATION_FIELDS = (
    "pk", "revoked_at", "last_error_code", "last_error_detail", "last_error_at",
    "consecutive_failures", "consented_at", "refresh_token_issued_at",
)


class _RemediationView:
    """The few fields :func:`remediation` reads, without building a model instance per row."""

    testing_grant_days = GoogleCredential.testing_grant_days

    def __init__(self, row: dict[str, Any]) -> None:
        self.__dict__.update(row)


def _public_accounts(*, client_configured: bool) -> list[dict[str, Any]]:
    """The anonymous accounts list: plain rows, no model instances, the state from the one rule
    (:func:`oauth.models.operator_state`), missing scopes once per distinct scope set, and a
    second query only for the accounts whose remediation needs their error details."""
    rows = list(
        GoogleCredential.objects.primary_first()
        .annotate(
            scopes=KT("credentials__scopes"),
            own_secret=ExpressionWrapper(Q(client_secret__isnull=False), output_field=BooleanField()),
        )
        .values(*_PUBLIC_COLUMNS, "own_secret")
    )
    required = tuple(oauth_settings.OAUTH_REQUIRED_SCOPES)
    parsed: dict[str | None, list[str]] = {}
    entries, problems = [], {}
    for row in rows:
        raw = row["scopes"]
        if raw not in parsed:
            parsed[raw] = sorted(json.loads(raw)) if raw else []
        granted = parsed[raw]
        missing = scope_catalogue.missing_scopes(granted=granted, required=required)
        state = operator_state(
            stored=row["state"], revoked=row["revoked_at"] is not None,
            own_client_secret=row["own_secret"], client_configured=client_configured,
            lacks_required_scope=bool(missing),
        )
        entry = {"state": state, "connected": state == CredentialState.CONNECTED,
                 "scopes_granted": granted, "missing_scopes": missing}
        if state != CredentialState.CONNECTED:
            problems[row["pk"]] = entry
        entries.append(entry)
    if problems:
        wanted = GoogleCredential.objects.all()
        if len(problems) <= 200:  # a long IN list costs more to send than the rows it spares
            wanted = wanted.filter(pk__in=problems)
        for row in wanted.values(*_REMEDIATION_FIELDS):
            entry = problems.get(row["pk"])
            if entry is None:
                continue
            entry["remediation"] = remediation(
                _RemediationView(row), state=entry["state"], missing=entry["missing_scopes"]
            )
    return entries


def _unconfigured_payload(*, client: ClientConfig | None) -> dict[str, Any]:
    last = (
        AuditEvent.objects.filter(
            action__in=[
                AuditAction.CONSENT_FAILED,
                AuditAction.CONNECTED,
                AuditAction.RECONSENTED,
            ]
        )
        .values_list("action", "outcome")
        .first()
    )
    if last == (AuditAction.CONSENT_FAILED, CredentialState.REDIRECT_URI_MISMATCH):
        state, text = CredentialState.REDIRECT_URI_MISMATCH.value, _redirect_mismatch_remediation()
    elif client is None:
        state = NOT_CONFIGURED
        text = (
            "No OAuth client is configured and no account is connected. Save the client in the "
            "admin (/admin/oauth/oauthclient/) or set GOOGLE_OAUTH_CLIENT_ID, "
            "GOOGLE_OAUTH_CLIENT_SECRET and GOOGLE_OAUTH_REDIRECT_URI, then click 'Connect a "
            "Google account' on the dashboard (/)."
        )
    else:
        state = NOT_CONFIGURED
        text = (
            "No Google account is connected. Log in as staff, open the dashboard (/) and click "
            "'Connect a Google account'."
        )
    return {
        "state": state,
        "connected": False,
        "scopes_granted": [],
        "missing_scopes": [],
        "remediation": text,
    }


def status_payload(*, include_private: bool) -> dict[str, Any]:
    """``{"google": {...}, "accounts": [...]}`` from stored state only, in constant queries."""
    now = _now()
    client = oauth_client_get_or_none()
    if include_private:
        accounts = [
            _account_payload(c, state=state, include_private=True, now=now)
            for c, state in credential_states()
        ]
    else:
        accounts = _public_accounts(client_configured=client is not None)
    # The primary comes first; without a 'google' row the earliest account stands in for it,
    # as it does for the token service.
    primary = accounts[0] if accounts else _unconfigured_payload(client=client)
    return {"google": primary, "accounts": accounts, "risc": _risc_payload(include_private)}


def _risc_payload(include_private: bool) -> dict[str, Any]:
    """Whether Google's security event stream (RISC) has proven it reaches us (a verification
    event was received: ``manage.py oauth_risc_register --verify``)."""
    from .risc import stream_verified

    verified = stream_verified()
    payload: dict[str, Any] = {"stream_verified": verified["stream_verified"]}
    if include_private:
        payload["last_verification_at"] = _iso(verified["last_verification_at"])
    return payload
