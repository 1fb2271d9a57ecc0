"""The catalogue of Google scopes this project knows, what implies what, and each feature's needs.

This is the single source the data migration seeds the ``Scope`` and ``Feature`` tables from, and
the pure scope checks (``normalize_scope``, ``missing_scopes``) use. Short names (``gmail.modify``)
and full URIs are both accepted everywhere a scope is configured.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable

AUTH = "https://www.googleapis.com/auth/"

#: uri -> (short name, what it allows)
SCOPES: dict[str, tuple[str, str]] = {
    "openid": ("openid", "Sign-in identity (OpenID Connect)."),
    AUTH + "userinfo.email": ("email", "See the account's email address."),
    AUTH + "gmail.readonly": ("gmail.readonly", "Read email and settings."),
    AUTH + "gmail.modify": ("gmail.modify", "Read, label, archive and mark email (not delete)."),
    AUTH + "gmail.send": ("gmail.send", "Send email."),
    AUTH + "calendar.readonly": ("calendar.readonly", "See calendars and events."),
    AUTH + "calendar": ("calendar", "See, create, change and delete calendars and events."),
}

#: A granted scope also grants these (Google's own hierarchy).
IMPLIES: dict[str, tuple[str, ...]] = {
    AUTH + "gmail.modify": (AUTH + "gmail.readonly",),
    AUTH + "calendar": (AUTH + "calendar.readonly",),
}

#: Scopes never required for an account to be 'connected' (identity only).
IDENTITY_SCOPES = frozenset({"openid", AUTH + "userinfo.email"})

#: feature key -> (connector, what it does, scopes any one of which satisfies it)
FEATURES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "gmail.read": ("gmail", "Read the inbox", (AUTH + "gmail.readonly", AUTH + "gmail.modify")),
    "gmail.labels": ("gmail", "Label and organise email", (AUTH + "gmail.modify",)),
    "calendar.read": (
        "calendar",
        "Read calendars and events",
        (AUTH + "calendar.readonly", AUTH + "calendar"),
    ),
    "calendar.write": ("calendar", "Create, change and delete events", (AUTH + "calendar",)),
}

#: Google product -> every scope that opens it (a heartbeat probes a product when one is granted).
PRODUCT_SCOPES: dict[str, frozenset[str]] = {
    "calendar": frozenset(
        {
            AUTH + "calendar",
            AUTH + "calendar.readonly",
            AUTH + "calendar.events",
            AUTH + "calendar.events.readonly",
        }
    ),
    "gmail": frozenset(
        {
            "https://mail.google.com/",
            AUTH + "gmail.readonly",
            AUTH + "gmail.modify",
            AUTH + "gmail.metadata",
        }
    ),
}

_ALIASES = {
    "email": AUTH + "userinfo.email",
    "profile": AUTH + "userinfo.profile",
    "https://www.googleapis.com/auth/userinfo.email": AUTH + "userinfo.email",
}


def normalize_scope(scope: str) -> str:
    """Full URI for a short name (``calendar`` -> ``https://.../auth/calendar``)."""
    scope = scope.strip()
    if scope in _ALIASES:
        return _ALIASES[scope]
    if scope == "openid" or "://" in scope:
        return scope
    return AUTH + scope


def normalize_scopes(scopes: Iterable[str] | str) -> list[str]:
    """Normalised, de-duplicated, order kept; a space-separated string is split."""
    if isinstance(scopes, str):
        scopes = scopes.split()
    seen: dict[str, None] = {}
    for scope in scopes:
        if scope and scope.strip():
            seen.setdefault(normalize_scope(scope), None)
    return list(seen)


def short_name(uri: str) -> str:
    """``gmail.modify`` for its URI; unknown URIs lose the common prefix."""
    if uri in SCOPES:
        return SCOPES[uri][0]
    return uri.removeprefix(AUTH)


def effective_scopes(granted: Iterable[str]) -> set[str]:
    """Granted scopes plus every scope they imply."""
    result = set(normalize_scopes(list(granted)))
    for uri in list(result):
        result.update(IMPLIES.get(uri, ()))
    return result


def missing_scopes(*, granted: Iterable[str], required: Iterable[str]) -> list[str]:
    """Required scopes (full URIs, in order) that ``granted`` does not satisfy; identity ignored."""
    return list(_missing(tuple(granted), tuple(required)))


@functools.lru_cache(maxsize=1024)
def _missing(granted: tuple[str, ...], required: tuple[str, ...]) -> tuple[str, ...]:
    # Accounts share a handful of scope sets: each distinct one is worked out once.
    have = effective_scopes(granted)
    return tuple(
        uri
        for uri in normalize_scopes(list(required))
        if uri not in IDENTITY_SCOPES and uri not in have
    )


def products_granted(granted: Iterable[str]) -> list[str]:
    """The Google products (``gmail``, ``calendar``) that ``granted`` scopes open, sorted."""
    have = effective_scopes(granted)
    return sorted(product for product, uris in PRODUCT_SCOPES.items() if have & uris)
