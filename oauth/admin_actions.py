"""The credential admin's actions: "Refresh now", "Test" (API probe) and "Revoke at Google".

Each calls the same service the commands use and reports one message per credential. Messages are
built from the account, Google's error code and our own words: never from a token.
"""
from __future__ import annotations

from django.contrib import admin, messages

from .exceptions import OAuthError
from .services import actor_for_user


def _each(request, queryset):
    for credential in queryset.order_by("credential_key"):
        yield credential, actor_for_user(request.user)


@admin.action(description="Refresh now (a real refresh grant at Google)")
def refresh_now(modeladmin, request, queryset) -> None:
    from .tokens import credential_refresh

    for credential, actor in _each(request, queryset):
        try:
            token = credential_refresh(credential=credential, actor=actor)
        except OAuthError as exc:
            modeladmin.message_user(
                request, f"{credential}: refresh failed: {exc}", level=messages.ERROR
            )
            continue
        modeladmin.message_user(
            request,
            f"{credential}: refreshed; the new access token is valid for "
            f"{token.expires_in()} seconds.",
            level=messages.SUCCESS,
        )


@admin.action(description="Test (get a token and touch each granted API)")
def test_credential(modeladmin, request, queryset) -> None:
    from .google.probes import credential_probe
    from .heartbeat import probe_results_store
    from .tokens import access_token_get

    for credential, actor in _each(request, queryset):
        try:
            token = access_token_get(
                account=credential.email or credential.credential_key, actor=actor
            )
        except OAuthError as exc:
            modeladmin.message_user(
                request, f"{credential}: no access token: {exc}", level=messages.ERROR
            )
            continue
        results = credential_probe(granted=credential.granted_scope_list(), access_token=token.value)
        probe_results_store(credential=credential, results=results, actor=actor)
        healthy = bool(results) and all(outcome == "ok" for outcome in results.values())
        summary = ", ".join(f"{api}: {outcome}" for api, outcome in sorted(results.items()))
        modeladmin.message_user(
            request,
            f"{credential}: {summary or 'no Gmail or Calendar scope granted, nothing to test'}.",
            level=messages.SUCCESS if healthy else messages.WARNING,
        )


@admin.action(description="Revoke at Google (emergency: the grant stops working)")
def revoke_at_google(modeladmin, request, queryset) -> None:
    from .revocation import credential_revoke

    for credential, actor in _each(request, queryset):
        try:
            result = credential_revoke(credential=credential, actor=actor)
        except OAuthError as exc:
            modeladmin.message_user(
                request, f"{credential}: not revoked: {exc}", level=messages.ERROR
            )
            continue
        modeladmin.message_user(
            request,
            f"{credential}: revoked at Google ({result.outcome.replace('_', ' ')}). Reconnect it "
            "from the dashboard to use it again.",
            level=messages.SUCCESS,
        )


CREDENTIAL_ACTIONS = [refresh_now, test_credential, revoke_at_google]
