"""Service keys: how a service elsewhere proves who it is to the token API, and what it may get.

A key is ``bk_`` followed by 32 random bytes (base64url). Only its SHA-256 is stored: with 256 bits
of entropy there is nothing to guess, so a slow password hash would only cost time on every call.
:func:`service_key_authenticate` looks the hash up in the database on every call (one indexed
query), so a revoked key is refused at once by every web process; there is no cache to go stale.

:func:`service_key_token` is the token API's one service: it checks that the key may use the
account and that the account's grant covers the key's scopes, then asks the one token service
(:func:`oauth.tokens.access_token_get`) for the token, as ``service-key:<name>``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from . import scopes as scope_catalogue
from .exceptions import (
    AccountNotFound,
    CredentialError,
    ServiceKeyForbidden,
    ServiceKeyInvalid,
    ServiceKeyNotFound,
    TokenAccountNotFound,
)
from .models import AuditAction, GoogleCredential, Scope, ServiceKey
from .selectors import credential_get
from .services import audit_record

KEY_PREFIX = "bk_"
#: Characters of the key kept in clear for display: "bk_" and 8 of its 43 random characters.
DISPLAY_PREFIX_LENGTH = 11


def _now() -> dt.datetime:
    """Separate so tests can move time."""
    return timezone.now()


def service_key_hash(key: str) -> str:
    """The stored form of a key: hex SHA-256."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def service_key_actor(key: ServiceKey) -> str:
    """How a key appears as the actor of audit events and token-service calls."""
    return f"service-key:{key.name}"


def networks_validate(value: str) -> str:
    """Normalised comma-separated networks, or ValueError naming the entry that is not one."""
    parts = [part.strip() for part in value.replace(" ", ",").split(",") if part.strip()]
    for part in parts:
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise ValueError(
                f"{part!r} is not an IP address or network (e.g. 10.0.0.5 or 192.168.1.0/24)."
            ) from None
    return ", ".join(parts)


def _scopes_for(names: Iterable[str]) -> list[Scope]:
    """Scope rows for short names or URIs: stored ones, or catalogue ones (created as needed)."""
    uris = scope_catalogue.normalize_scopes(list(names))
    found = {scope.uri: scope for scope in Scope.objects.filter(uri__in=uris)}
    unknown = [uri for uri in uris if uri not in found and uri not in scope_catalogue.SCOPES]
    if unknown:
        known = sorted(
            set(Scope.objects.values_list("short_name", flat=True))
            | {short for short, _ in scope_catalogue.SCOPES.values()}
        )
        raise ValueError(f"Unknown scope(s): {', '.join(unknown)}. Known scopes: {', '.join(known)}.")
    for uri in uris:
        if uri not in found:
            short, description = scope_catalogue.SCOPES[uri]
            found[uri], _ = Scope.objects.get_or_create(
                uri=uri, defaults={"short_name": short, "description": description}
            )
    return [found[uri] for uri in uris]


def service_key_create(
    *,
    name: str,
    accounts: Iterable[str] = (),
    all_accounts: bool = False,
    scopes: Iterable[str] = (),
    allowed_networks: str = "",
    expires_at: dt.datetime | None = None,
    actor: str,
) -> tuple[ServiceKey, str]:
    """Create a key; returns it and the plaintext key, which is never available again.

    ``accounts`` are emails (or credential keys) of stored accounts. Raises ValueError with a
    message naming what to fix (an existing name, an unknown account or scope, a bad network).
    """
    if ServiceKey.objects.filter(name=name).exists():
        raise ValueError(
            f"A service key named {name!r} exists already. Revoke it with 'manage.py "
            f"service_key_revoke {name}' and delete it in the admin, or choose another name."
        )
    credentials: list[GoogleCredential] = []
    for account in accounts:
        try:
            credentials.append(credential_get(account=account))
        except AccountNotFound as exc:
            raise ValueError(str(exc)) from None
    if not credentials and not all_accounts:
        raise ValueError("Name at least one account (--account EMAIL) or allow all accounts.")
    scope_rows = _scopes_for(scopes)
    networks = networks_validate(allowed_networks)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        row = ServiceKey.objects.create(
            name=name,
            key_prefix=key[:DISPLAY_PREFIX_LENGTH],
            key_hash=service_key_hash(key),
            all_accounts=all_accounts,
            allowed_networks=networks,
            expires_at=expires_at,
            created_by=actor,
        )
        row.accounts.set(credentials)
        row.scopes.set(scope_rows)
        service_key_audit_created(key=row, actor=actor)
    return row, key


def service_key_issue(*, key: ServiceKey) -> str:
    """Give an unsaved or key-less ``ServiceKey`` (the admin's add form) a new key; returns it."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key.key_prefix = plaintext[:DISPLAY_PREFIX_LENGTH]
    key.key_hash = service_key_hash(plaintext)
    return plaintext


def service_key_audit_created(*, key: ServiceKey, actor: str) -> None:
    audit_record(
        action=AuditAction.SERVICE_KEY_CREATED, actor=actor, outcome="created",
        detail={
            "service_key": key.name,
            "key_prefix": key.key_prefix,
            "all_accounts": key.all_accounts,
            "accounts": sorted(str(c) for c in key.accounts.all()),
            "scopes": sorted(s.uri for s in key.scopes.all()),
        },
    )


def service_key_revoke(*, name: str, actor: str) -> tuple[ServiceKey, bool]:
    """Revoke the key ``name`` now; returns it and False when it was revoked already."""
    with transaction.atomic():
        key = ServiceKey.objects.select_for_update().filter(name=name).first()
        if key is None:
            known = ", ".join(ServiceKey.objects.values_list("name", flat=True))
            raise ServiceKeyNotFound(
                f"No service key named {name!r}. "
                + (f"Existing keys: {known}." if known else "No service key exists yet.")
            )
        if key.revoked_at is not None:
            return key, False
        key.revoked_at = _now()
        key.save(update_fields=["revoked_at"])
        audit_record(
            action=AuditAction.SERVICE_KEY_REVOKED, actor=actor, outcome="revoked",
            detail={"service_key": key.name, "key_prefix": key.key_prefix},
        )
    return key, True


# --- the API's checks --------------------------------------------------------------------------------
def bearer_key(authorization: str) -> str | None:
    """The key in an ``Authorization: Bearer bk_…`` header, or None."""
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value.startswith(KEY_PREFIX):
        return None
    return value


_USE_SQL = (
    "UPDATE oauth_servicekey SET use_count = use_count + 1, last_used_at = %s "
    "WHERE key_hash = %s AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > %s) "
    "RETURNING *"
)


def service_key_authenticate(*, authorization: str, address: str | None) -> ServiceKey:
    """The active key presented in ``authorization``, its use recorded, in one statement.

    The lookup and the use count are one ``UPDATE ... RETURNING`` on the unique hash: the row is
    read where it is counted, so a revoked key is refused from the next call on. Raises
    :class:`ServiceKeyInvalid` (missing, unknown, revoked, expired) or
    :class:`ServiceKeyForbidden` (the client address is outside the key's networks).
    """
    presented = bearer_key(authorization)
    if presented is None:
        raise ServiceKeyInvalid()
    digest = service_key_hash(presented)
    now = _now()
    key = next(iter(ServiceKey.objects.raw(_USE_SQL, [now, digest, now])), None)
    if key is None:
        _raise_inactive(ServiceKey.objects.filter(key_hash=digest).first())
    if not key.allows_address(address):
        raise ServiceKeyForbidden(
            f"The service key {key.name!r} may not be used from {address}. Its allowed networks "
            "are set in the admin (/admin/oauth/servicekey/).",
            error="address_not_allowed",
        )
    return key


def _raise_inactive(key: ServiceKey | None) -> None:
    """Why a presented key is refused: unknown, revoked or expired (the rare path)."""
    if key is None:
        raise ServiceKeyInvalid()
    if key.revoked_at is not None:
        raise ServiceKeyInvalid(
            f"The service key {key.name!r} was revoked. Ask the operator for a new key "
            "('manage.py service_key_create')."
        )
    raise ServiceKeyInvalid(
        f"The service key {key.name!r} expired. Ask the operator for a new key "
        "('manage.py service_key_create')."
    )


def _key_scope_uris(key: ServiceKey) -> list[str]:
    return sorted(key.scopes.values_list("uri", flat=True))


@dataclass(frozen=True)
class KeyAccount:
    """An account as a key sees it: the credential and the key's scopes it lacks."""

    credential: GoogleCredential
    lacking_scopes: list[str]


def service_key_credential(*, key: ServiceKey, account: str | None) -> KeyAccount:
    """The credential ``key`` asks for (``account`` or the primary), if the key may use it.

    A key limited to some accounts gets 403 for any other account, stored or not, so it cannot
    learn which accounts exist: for such a key the account is looked up among the key's own
    (one query). Raises :class:`ServiceKeyForbidden` or :class:`TokenAccountNotFound` (an account
    that does not exist, asked for by a key that may use every account).
    """
    if account and not key.all_accounts:
        credential = (
            key.accounts.filter(Q(email__iexact=account) | Q(credential_key=account))
            .order_by("pk")
            .first()
        )
        if credential is None:
            raise _account_forbidden(key, account)
    else:
        try:
            credential = credential_get(account=account)
        except AccountNotFound:
            raise TokenAccountNotFound(
                f"No stored Google account {account!r}. GET /api/oauth/accounts lists the "
                "accounts this key may use."
            ) from None
        except CredentialError:  # nothing stored at all
            if not key.all_accounts:
                raise _account_forbidden(key, account) from None
            raise TokenAccountNotFound() from None
        if not key.all_accounts and not key.accounts.filter(pk=credential.pk).exists():
            raise _account_forbidden(key, None)
    lacking = scope_catalogue.missing_scopes(
        granted=credential.granted_scope_list(), required=_key_scope_uris(key)
    )
    return KeyAccount(credential=credential, lacking_scopes=lacking)


def _account_forbidden(key: ServiceKey, account: str | None) -> ServiceKeyForbidden:
    what = f"account {account!r}" if account else "the primary account"
    return ServiceKeyForbidden(
        f"The service key {key.name!r} may not use {what}. GET /api/oauth/accounts lists the "
        "accounts it may use; an operator can add accounts to the key in the admin "
        "(/admin/oauth/servicekey/).",
        error="account_not_allowed",
    )


def scope_forbidden(key: ServiceKey, credential: GoogleCredential, lacking: list[str]) -> ServiceKeyForbidden:
    names = ", ".join(scope_catalogue.short_name(uri) for uri in lacking)
    return ServiceKeyForbidden(
        f"The grant of {credential} lacks {names}, which the service key {key.name!r} is for. "
        "Reconnect the account from the dashboard (/) with every permission ticked, or change "
        "the key's scopes in the admin (/admin/oauth/servicekey/).",
        error="scope_not_granted",
    )


def service_key_accounts(*, key: ServiceKey) -> list[KeyAccount]:
    """Every stored account ``key`` may use, the primary first."""
    queryset = GoogleCredential.objects.primary_first().prefetch_related("granted_scopes")
    if not key.all_accounts:
        queryset = queryset.filter(service_keys=key)
    required = _key_scope_uris(key)
    return [
        KeyAccount(
            credential=credential,
            lacking_scopes=scope_catalogue.missing_scopes(
                granted=credential.granted_scope_uris(), required=required
            ),
        )
        for credential in queryset
    ]
