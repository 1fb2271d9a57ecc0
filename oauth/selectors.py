"""Reads: the OAuth client to use, and credential resolution (DB first, then deprecated env vars).

Credential resolution is the one place that knows the deprecated variables and their messages, so
the token service, ``oauth_token``, ``oauth_check``, the startup guard and the connectors all report
a bad env credential the same way.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import NamedTuple

from . import scopes as scope_catalogue
from .app_settings import oauth_settings
from .encryption import Secret
from .exceptions import AccountNotFound, CredentialError, EnvCredentialInvalid, NotConfigured
from .models import (
    PRIMARY_CREDENTIAL_KEY,
    GoogleCredential,
    OAuthClient,
    operator_state,
    primary_to_front,
    recorded_scope_lists,
)

logger = logging.getLogger("oauth.credentials")

CALENDAR_JSON_VAR = "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON"
GMAIL_VARS = ("GMAIL_CLIENT_ID", "GMAIL_CLIENT_SECRET", "GMAIL_REFRESH_TOKEN")
GOOGLE_REFRESH_TOKEN_VAR = "GOOGLE_REFRESH_TOKEN"
#: Every deprecated variable, in the order they are tried.
DEPRECATED_ENV_VARS = (CALENDAR_JSON_VAR, *GMAIL_VARS, GOOGLE_REFRESH_TOKEN_VAR)
REQUIRED_JSON_FIELDS = ("client_id", "client_secret", "refresh_token")

_warned: set[str] = set()


# --- the OAuth client ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientConfig:
    """The OAuth client to use. ``source`` is 'db' or 'env'."""

    client_id: str
    client_secret: Secret | None
    redirect_uri: str
    source: str

    def __repr__(self) -> str:
        return f"ClientConfig(client_id={self.client_id!r}, source={self.source!r})"


def oauth_client_get() -> ClientConfig:
    """The client saved in the admin, else GOOGLE_OAUTH_CLIENT_ID/_SECRET/_REDIRECT_URI."""
    client = OAuthClient.objects.filter(key="google").first()
    if client is not None and client.client_id:
        return ClientConfig(
            client_id=client.client_id,
            client_secret=client.client_secret,
            redirect_uri=client.redirect_uri or oauth_settings.GOOGLE_OAUTH_REDIRECT_URI,
            source="db",
        )
    client_id = oauth_settings.GOOGLE_OAUTH_CLIENT_ID
    if not client_id:
        raise NotConfigured()
    secret = oauth_settings.GOOGLE_OAUTH_CLIENT_SECRET
    return ClientConfig(
        client_id=client_id,
        client_secret=Secret(secret, field="client_secret") if secret else None,
        redirect_uri=oauth_settings.GOOGLE_OAUTH_REDIRECT_URI,
        source="env",
    )


def oauth_client_get_or_none() -> ClientConfig | None:
    try:
        return oauth_client_get()
    except NotConfigured:
        return None


# --- stored credentials -------------------------------------------------------------------------
def credentials_list() -> list[GoogleCredential]:
    """Every stored account, the primary first, in one query.

    Granted scopes are read from the list kept in each row's metadata beside the M2M
    (:meth:`GoogleCredential.granted_scope_list`): thousands of accounts must not cost thousands of
    scope instances.
    """
    return list(GoogleCredential.objects.primary_first())


def credential_states() -> list[tuple[GoogleCredential, str]]:
    """Every stored account (the primary first) with the state an operator sees, in constant
    queries: the one reading behind the status API, the dashboard, the admin and ``/metrics``."""
    configured = oauth_client_get_or_none() is not None
    return [
        (credential, credential.effective_state(client_configured=configured))
        for credential in credentials_list()
    ]


class CredentialStanding(NamedTuple):
    """What an account list needs to count, filter and order an account without its row."""

    pk: int
    state: str
    last_error_code: str
    #: Whether the row's metadata lists its scopes (else they are read from the M2M).
    scopes_recorded: bool


def credential_standings() -> list[CredentialStanding]:
    """Every stored account's id, operator state and last error code, the primary first, in at
    most four queries whatever their number.

    The rule of :func:`credential_states` (:func:`oauth.models.operator_state`) judged from a few
    columns instead of whole rows (no secret, no model instance), so the dashboard can count and
    order 3,000 accounts and load only the page it shows. Each distinct scope list is judged once;
    a row whose metadata lists no scopes falls back to the M2M, as
    :meth:`GoogleCredential.granted_scope_list` does.
    """
    rows = primary_to_front(list(
        GoogleCredential.objects.with_judged_columns().values_list(
            "primary", "pk", "state", "revoked", "own_secret", "scopes_digest", "last_error_code"
        )
    ))
    scope_lists = recorded_scope_lists({digest for *_, digest, _code in rows})
    granted: dict[int, tuple[str, ...] | None] = {
        pk: scope_lists[digest] for _primary, pk, _stored, _revoked, _own_secret, digest, _code in rows
    }
    unrecorded = {pk for pk, scopes in granted.items() if scopes is None}
    if unrecorded:
        from_m2m: dict[int, list[str]] = {pk: [] for pk in unrecorded}
        through = GoogleCredential.granted_scopes.through.objects
        for pk, uri in through.filter(googlecredential_id__in=unrecorded).values_list(
            "googlecredential_id", "scope__uri"
        ):
            from_m2m[pk].append(uri)
        granted.update((pk, tuple(sorted(uris))) for pk, uris in from_m2m.items())

    configured = oauth_client_get_or_none() is not None
    required = oauth_settings.OAUTH_REQUIRED_SCOPES
    lacking: dict[tuple[str, ...], bool] = {}
    standings = []
    for _primary, pk, stored, revoked, own_secret, _digest, code in rows:
        scopes = granted[pk]
        if scopes not in lacking:
            lacking[scopes] = bool(
                scope_catalogue.missing_scopes(granted=scopes, required=required)
            )
        state = operator_state(
            stored=stored, revoked=revoked, own_client_secret=own_secret,
            client_configured=configured, lacks_required_scope=lacking[scopes],
        )
        standings.append(CredentialStanding(pk, state, code, pk not in unrecorded))
    return standings


def credential_get(*, account: str | None = None) -> GoogleCredential:
    """The credential of ``account`` (an email or a credential key), or the primary without one."""
    queryset = GoogleCredential.objects.prefetch_related("granted_scopes")
    if account:
        credential = (
            queryset.filter(email__iexact=account).first()
            or queryset.filter(credential_key=account).first()
        )
        if credential is None:
            known = ", ".join(
                GoogleCredential.objects.exclude(email="").values_list("email", flat=True)
            )
            raise AccountNotFound(
                f"No stored Google credential for account {account!r}. "
                + (f"Known accounts: {known}." if known else "No account is connected yet.")
                + " Connect it from the dashboard (/)."
            )
        return credential
    credential = queryset.filter(credential_key=PRIMARY_CREDENTIAL_KEY).first()
    if credential is None:  # the first account stored, as the status's "google" entry reads it
        credential = queryset.order_by("pk").first()
    if credential is None:
        raise CredentialError()
    return credential


def credential_exists() -> bool:
    return GoogleCredential.objects.exists()


def oldest_credential_created_at():
    """When the first stored account was connected (None without one)."""
    return GoogleCredential.objects.order_by("created_at").values_list("created_at", flat=True).first()


def heartbeat_last_started_at():
    """When the latest heartbeat sweep started (None before the first)."""
    from .models import HeartbeatRun

    return HeartbeatRun.objects.last_started_at()


# --- resolution: DB first, then the deprecated env vars --------------------------------------------
@dataclass
class ResolvedCredential:
    """What a caller needs to talk to Google for one account.

    ``credential`` is the stored row, or None for the deprecated env fallback (``source`` then
    names the variable). Secrets stay boxed in :class:`Secret`.
    """

    source: str
    client_id: str
    client_secret: Secret | None
    refresh_token: Secret
    credential: GoogleCredential | None = None
    scopes: list[str] = field(default_factory=list)

    @property
    def account(self) -> str:
        if self.credential is not None:
            return str(self.credential)
        return f"env:{self.source}"

    def __repr__(self) -> str:
        return f"ResolvedCredential(source={self.source!r}, account={self.account!r})"


def _warn_deprecated(name: str) -> None:
    if name not in _warned:
        _warned.add(name)
        logger.warning(
            "%s is deprecated: store the credential in the database with 'manage.py "
            "oauth_import_env' (or connect from the dashboard), then remove the variable.",
            name,
        )


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None else value


def env_credential_present() -> bool:
    """True when any deprecated credential variable is set (even if malformed)."""
    return any(_env(name) is not None for name in DEPRECATED_ENV_VARS)


def _from_calendar_json(raw: str) -> ResolvedCredential:
    try:
        data = json.loads(raw) if raw.strip() else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not data:
        raise EnvCredentialInvalid(f"{CALENDAR_JSON_VAR} must be set to a non-empty JSON object")
    missing = [
        name
        for name in REQUIRED_JSON_FIELDS
        if not isinstance(data.get(name), str) or not data.get(name).strip()
    ]
    if missing:
        raise EnvCredentialInvalid(
            f"{CALENDAR_JSON_VAR} is missing required field(s): [{', '.join(missing)}]"
        )
    return ResolvedCredential(
        source=CALENDAR_JSON_VAR,
        client_id=data["client_id"].strip(),
        client_secret=Secret(data["client_secret"].strip(), field="client_secret"),
        refresh_token=Secret(data["refresh_token"].strip(), field="refresh_token"),
        scopes=data.get("scopes") if isinstance(data.get("scopes"), list) else [],
    )


def _from_gmail_vars() -> ResolvedCredential:
    values = {name: (_env(name) or "").strip() for name in GMAIL_VARS}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise EnvCredentialInvalid(
            f"The deprecated Gmail credential is incomplete: {', '.join(missing)} must be set "
            f"(alongside {', '.join(n for n in GMAIL_VARS if n not in missing)})."
        )
    return ResolvedCredential(
        source="GMAIL_REFRESH_TOKEN",
        client_id=values["GMAIL_CLIENT_ID"],
        client_secret=Secret(values["GMAIL_CLIENT_SECRET"], field="client_secret"),
        refresh_token=Secret(values["GMAIL_REFRESH_TOKEN"], field="refresh_token"),
    )


def _from_google_refresh_token(raw: str) -> ResolvedCredential:
    if not raw.strip():
        raise EnvCredentialInvalid(f"{GOOGLE_REFRESH_TOKEN_VAR} is set but empty.")
    try:
        client = oauth_client_get()
    except NotConfigured:
        raise EnvCredentialInvalid(
            f"{GOOGLE_REFRESH_TOKEN_VAR} is set but no OAuth client is configured: set "
            "GOOGLE_OAUTH_CLIENT_ID and GOOGLE_OAUTH_CLIENT_SECRET (or save the client in the admin)."
        ) from None
    return ResolvedCredential(
        source=GOOGLE_REFRESH_TOKEN_VAR,
        client_id=client.client_id,
        client_secret=client.client_secret,
        refresh_token=Secret(raw.strip(), field="refresh_token"),
    )


def env_credential_resolve() -> ResolvedCredential | None:
    """The deprecated env credential, or None when no such variable is set.

    Raises :class:`EnvCredentialInvalid` with the runbook's message when one is set but malformed.
    """
    raw = _env(CALENDAR_JSON_VAR)
    if raw is not None:
        _warn_deprecated(CALENDAR_JSON_VAR)
        return _from_calendar_json(raw)
    if any(_env(name) is not None for name in GMAIL_VARS):
        for name in GMAIL_VARS:
            if _env(name) is not None:
                _warn_deprecated(name)
        return _from_gmail_vars()
    raw = _env(GOOGLE_REFRESH_TOKEN_VAR)
    if raw is not None:
        _warn_deprecated(GOOGLE_REFRESH_TOKEN_VAR)
        return _from_google_refresh_token(raw)
    return None


def credential_client(
    credential: GoogleCredential, *, client_get=None
) -> tuple[str, Secret | None]:
    """The client id and secret ``credential``'s grant was issued to.

    Its own (an imported credential may carry them), else the configured client's
    (``client_get``, default :func:`oauth_client_get_or_none`). Raises :class:`CredentialError`
    when the row has no refresh token to use them with.
    """
    if credential.refresh_token is None:
        raise CredentialError(
            f"The stored credential {credential} has no refresh token. Reconnect it from the "
            "dashboard (/)."
        )
    client_id = credential.client_id
    client_secret = credential.client_secret
    if not client_id or client_secret is None:
        client = (client_get or oauth_client_get_or_none)()
        if client is not None:
            client_id = client_id or client.client_id
            if client_secret is None and client.client_id == client_id:
                client_secret = client.client_secret
    return client_id, client_secret


def _resolved_from_row(credential: GoogleCredential) -> ResolvedCredential:
    client_id, client_secret = credential_client(credential)
    return ResolvedCredential(
        source="db",
        client_id=client_id,
        client_secret=client_secret,
        refresh_token=credential.refresh_token,
        credential=credential,
        scopes=credential.granted_scope_uris(),
    )


def credential_resolve(*, account: str | None = None) -> ResolvedCredential:
    """The credential to use: the stored one (``account`` or the primary), else the env fallback.

    An explicit ``account`` is only ever looked up in the database, never substituted. With no
    stored credential and no deprecated variable, raises :class:`CredentialError` whose message
    carries the runbook's "... must be set to a non-empty JSON object" wording.
    """
    if account:
        return _resolved_from_row(credential_get(account=account))
    if GoogleCredential.objects.exists():
        return _resolved_from_row(credential_get())
    resolved = env_credential_resolve()
    if resolved is None:
        raise CredentialError(
            "No Google credential is stored in the database, and the deprecated fallback "
            f"{CALENDAR_JSON_VAR} must be set to a non-empty JSON object. Connect an account from "
            "the dashboard (/), or run 'manage.py oauth_import_env' after setting the deprecated "
            "variables."
        )
    return resolved
