"""The connectors' broker mode: access tokens from a Butlers OAuth broker instead of the database.

With ``BUTLERS_BROKER_URL`` and ``BUTLERS_SERVICE_KEY`` set, ``run_gmail_connector`` runs on a host
that has no ``DATABASE_URL`` and no ``OAUTH_ENCRYPTION_KEYS``: it asks the broker which accounts
its key may use (``GET /api/oauth/accounts``) and gets each account's token from it
(``POST /api/oauth/token``, through :class:`~connectors.broker_client.BrokerClient`). What the
connector keeps (each mailbox's history cursor and the messages it recorded) lives in its own
store: the SQLite file under ``BUTLERS_VAR_DIR`` that Django uses without ``DATABASE_URL``,
migrated when the connector starts. No secret is ever written there.

The seam with the Google API client is a *token source*: a callable ``(force_refresh=False) ->
str`` passed to the client (``GmailClient(token_source=...)``). The one made here turns the
broker's refusals into the token service's own errors, so the connector reports them as it
reports a database credential's.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from oauth import scopes as scope_catalogue
from oauth.exceptions import (
    ClientMisconfigured,
    CredentialError,
    ReconsentRequired,
    TransientGoogleError,
)

from .broker_client import (
    URL_VAR,
    BrokerAccountNotFound,
    BrokerAuthError,
    BrokerClient,
    BrokerConfigError,
    BrokerError,
    BrokerForbidden,
    BrokerReconsentRequired,
)

TokenSource = Callable[..., str]
GMAIL_READ_SCOPE = "gmail.readonly"


def broker_configured(environ: dict[str, str] | None = None) -> bool:
    """True when BUTLERS_BROKER_URL is set: tokens come from the broker, not the database."""
    return bool((os.environ if environ is None else environ).get(URL_VAR, "").strip())


def broker_client_from_env() -> BrokerClient:
    """The broker client configured by BUTLERS_BROKER_URL / BUTLERS_SERVICE_KEY (or
    :class:`BrokerConfigError` naming what is missing)."""
    return BrokerClient.from_env()


def as_token_error(exc: BrokerError) -> Exception:
    """The token service's error for a broker refusal (what the connectors already handle)."""
    message = str(exc)
    if isinstance(exc, BrokerReconsentRequired):
        if exc.error == "misconfigured":
            return ClientMisconfigured(message)
        return ReconsentRequired(message)
    if isinstance(exc, (BrokerAuthError, BrokerForbidden, BrokerAccountNotFound, BrokerConfigError)):
        return CredentialError(f"The token broker refused: {message}", error=exc.error)
    return TransientGoogleError(message)


def broker_token_source(client: BrokerClient, account: str | None) -> TokenSource:
    """A token source for ``account`` served by the broker (cached in ``client``)."""

    def token_source(*, force_refresh: bool = False) -> str:
        try:
            return client.access_token(account, force_refresh=force_refresh)
        except BrokerError as exc:
            raise as_token_error(exc) from None

    return token_source


def broker_gmail_accounts(client: BrokerClient) -> list[str]:
    """The accounts to poll: those the key may use that can read Gmail and are not dead."""
    accounts = []
    for entry in client.accounts():
        granted = entry.get("scopes") or []
        if not entry.get("token_available", True):
            continue
        if scope_catalogue.missing_scopes(granted=granted, required=[GMAIL_READ_SCOPE]):
            continue
        accounts.append(str(entry["account"]))
    return accounts


def local_store_prepare() -> None:
    """Create or upgrade the connector's own SQLite store (a no-op on a migrated PostgreSQL)."""
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor == "sqlite":
        call_command("migrate", verbosity=0, interactive=False)
