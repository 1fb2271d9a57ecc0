"""The status report behind ``GET /api/oauth/status``, the dashboard and ``manage.py oauth_status``.

It reads stored state only (it never calls Google) in a fixed number of queries whatever the number
of accounts. The anonymous payload is one query of the columns it is judged from
(:func:`_public_rows`), each scope list read once per process by its digest
(:func:`oauth.models.recorded_scope_lists`); accounts in the same situation share one entry,
worded and encoded as JSON once (:func:`status_json`), so 3,000 accounts cost a query and a join.
The staff payload reads the credentials (scopes from each row's metadata), the OAuth client and
the last consent outcome.

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
import functools
import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from . import scopes as scope_catalogue
from .app_settings import oauth_settings
from .models import (
    AuditAction,
    AuditEvent,
    CredentialState,
    GoogleCredential,
    operator_state,
    primary_to_front,
    recorded_scope_lists,
)
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


def account_payload(
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


class _RemediationView:
    """The few fields :func:`remediation` reads, without building a model instance per row."""

    testing_grant_days = GoogleCredential.testing_grant_days

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


#: The columns of :func:`_public_rows`, in order: whether the row is the primary's, what an entry
#: is judged and worded from, then two that are the same on every row.
_ENTRY_COLUMNS = (
    "state", "revoked", "own_secret", "scopes_digest", "last_error_code", "consecutive_failures",
    "risc_detail", "issued", "died", "client_saved",
)
_PUBLIC_COLUMNS = ("primary", *_ENTRY_COLUMNS, "stream_verified")
_DIGEST = _PUBLIC_COLUMNS.index("scopes_digest")


def _public_rows_query():
    """One query for the whole anonymous payload, the columns it is judged from as tuples. The
    error details and the dates of the Testing rule come only for the rows whose remediation reads
    them (a connected account costs a few short columns), and whether an OAuth client is saved and
    the RISC stream verified ride along as sub-queries PostgreSQL runs once."""
    from django.db.models import Case, Exists, F, Value, When
    from django.db.models.functions import Coalesce

    from .models import OAuthClient, SecurityEvent

    expired_by_google = Q(revoked_at__isnull=True, state=CredentialState.EXPIRED)
    died_of_invalid_grant = expired_by_google & Q(last_error_code="invalid_grant")
    return (
        GoogleCredential.objects.with_judged_columns()
        .annotate(
            risc_detail=Case(
                When(expired_by_google & Q(last_error_code__startswith="risc_"),
                     then=F("last_error_detail")),
                default=Value(""),
            ),
            issued=Case(When(died_of_invalid_grant,
                             then=Coalesce("refresh_token_issued_at", "consented_at"))),
            died=Case(When(died_of_invalid_grant, then=F("last_error_at"))),
            client_saved=Exists(OAuthClient.objects.filter(key="google").exclude(client_id="")),
            stream_verified=Exists(SecurityEvent.objects.filter(event_type="verification")),
        )
        .values_list(*_PUBLIC_COLUMNS)
    )


@functools.lru_cache(maxsize=1)
def _public_rows_sql() -> tuple[str, tuple]:
    # The query has no variable part: it is compiled once per process, not per request.
    return _public_rows_query().query.sql_with_params()


def _public_rows() -> list[tuple]:
    """The rows of :data:`_PUBLIC_COLUMNS`, the primary first (:func:`primary_to_front`)."""
    sql, params = _public_rows_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return primary_to_front(cursor.fetchall())


def _public_entries() -> tuple[list[tuple[dict[str, Any], str]], bool]:
    """The anonymous accounts list as (entry, its JSON) pairs, in the order of the payload, and
    whether the RISC stream is verified.

    Accounts share a handful of situations (a state, a scope set, an error): each distinct one is
    judged (:func:`oauth.models.operator_state`, the one rule), worded and encoded once, and every
    account in it gets the same entry; what is left per account is a dictionary lookup.
    """
    required = tuple(oauth_settings.OAUTH_REQUIRED_SCOPES)
    client_from_settings = bool(oauth_settings.GOOGLE_OAUTH_CLIENT_ID)
    known: dict[tuple, tuple[dict[str, Any], str]] = {}
    entries = []
    rows = _public_rows()
    scope_lists = recorded_scope_lists({row[_DIGEST] for row in rows})
    for row in rows:  # the whole row is the key: its last column is the same on every row
        found = known.get(row)
        if found is None:
            found = known[row] = _public_entry(
                *row[1:-1], required=required, client_from_settings=client_from_settings,
                scope_lists=scope_lists,
            )
        entries.append(found)
    return entries, bool(rows and rows[0][-1])


def _public_entry(
    stored, revoked, own_secret, scopes_digest, code, failures, risc_detail, issued, died,
    client_saved, *, required: tuple[str, ...], client_from_settings: bool,
    scope_lists: dict[str | None, tuple[str, ...] | None],
) -> tuple[dict[str, Any], str]:
    """One entry (and its JSON) from the columns of :data:`_ENTRY_COLUMNS`."""
    client_configured = client_from_settings or client_saved
    granted = list(scope_lists[scopes_digest] or ())
    missing = scope_catalogue.missing_scopes(granted=granted, required=required)
    state = operator_state(
        stored=stored, revoked=revoked, own_client_secret=own_secret,
        client_configured=client_configured, lacks_required_scope=bool(missing),
    )
    entry: dict[str, Any] = {"state": state, "connected": state == CredentialState.CONNECTED,
                             "scopes_granted": granted, "missing_scopes": missing}
    if state != CredentialState.CONNECTED:
        view = _RemediationView(
            revoked_at=revoked or None, last_error_code=code or "",
            last_error_detail=risc_detail, consecutive_failures=failures,
            refresh_token_issued_at=issued, consented_at=None, last_error_at=died,
        )
        entry["remediation"] = remediation(view, state=state, missing=missing)
    return entry, json.dumps(entry)


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
    if include_private:
        now = _now()
        accounts = [
            account_payload(c, state=state, include_private=True, now=now)
            for c, state in credential_states()
        ]
        risc = _risc_payload(True)
    else:
        entries, stream_verified = _public_entries()
        accounts = [dict(entry) for entry, _ in entries]
        risc = {"stream_verified": stream_verified} if entries else _risc_payload(False)
    # The primary comes first; without a 'google' row the earliest account stands in for it,
    # as it does for the token service.
    primary = accounts[0] if accounts else _unconfigured_payload(client=oauth_client_get_or_none())
    return {"google": primary, "accounts": accounts, "risc": risc}


def status_json(*, include_private: bool) -> str:
    """:func:`status_payload` encoded as JSON, the body of ``GET /api/oauth/status``.

    The anonymous body is joined from the entries' JSON encoded once per distinct situation
    (:func:`_public_entries`): thousands of accounts cost a join, not thousands of encodings.
    """
    if include_private:
        return json.dumps(status_payload(include_private=True), cls=DjangoJSONEncoder)
    entries, stream_verified = _public_entries()
    if not entries:
        return json.dumps(status_payload(include_private=False))
    return (
        f'{{"google": {entries[0][1]}, "accounts": [{", ".join(encoded for _, encoded in entries)}], '
        f'"risc": {json.dumps({"stream_verified": stream_verified})}}}'
    )


def _risc_payload(include_private: bool) -> dict[str, Any]:
    """Whether Google's security event stream (RISC) has proven it reaches us (a verification
    event was received: ``manage.py oauth_risc_register --verify``)."""
    from .risc import stream_verified

    verified = stream_verified()
    payload: dict[str, Any] = {"stream_verified": verified["stream_verified"]}
    if include_private:
        payload["last_verification_at"] = _iso(verified["last_verification_at"])
    return payload
