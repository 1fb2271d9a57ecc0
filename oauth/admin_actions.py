"""The credential admin's actions: on the list (for the ticked accounts) and as buttons on an
account's page (django-object-actions): Refresh now, Test, Reconnect, Revoke at Google, Disconnect.

No request waits on Google: Refresh, Test, Revoke and Disconnect are queued as one background run
(:func:`oauth.account_actions.action_run_start`) and the operator lands on the dashboard, where
each account's progress shows (queued, running, done) and updates by itself. Revoke and
Disconnect first show a page that says exactly what will happen; nothing happens until it is
confirmed. Disconnect replaces the admin's bare Delete (which neither revoked at Google nor wrote
an audit event).
"""
from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from .account_actions import action_run_start
from .models import ActionKind
from .services import actor_for_user

CONFIRM_TEMPLATE = "admin/oauth/googlecredential/confirm_action.html"


def _queue(modeladmin, request, credentials, action: str) -> HttpResponseRedirect:
    credentials = list(credentials)
    run = action_run_start(action=action, credentials=credentials, actor=actor_for_user(request.user))
    count = len(credentials)
    modeladmin.message_user(
        request,
        f"{ActionKind(action).label} queued for {count} account{'s' if count != 1 else ''}: "
        "each account's progress shows below and updates by itself.",
        level=messages.SUCCESS,
    )
    return HttpResponseRedirect(f"{reverse('oauth:dashboard')}#run-{run.pk}")


def _confirm_page(modeladmin, request, credentials, action: str, *, selection: bool):
    """The confirmation page of a destructive action (list action or object button)."""
    from .account_views import confirmation_context

    context = {
        **modeladmin.admin_site.each_context(request),
        **confirmation_context(action=action, credentials=list(credentials)),
        "title": f"{ActionKind(action).label}: are you sure?",
        "opts": modeladmin.model._meta,
        "selection": selection,
        "action_name": request.POST.get("action", ""),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, CONFIRM_TEMPLATE, context)


def _confirmed_or_ask(modeladmin, request, queryset, action: str):
    if request.POST.get("confirmed") == "yes":
        return _queue(modeladmin, request, queryset.order_by("credential_key"), action)
    return _confirm_page(modeladmin, request, queryset.order_by("credential_key"), action, selection=True)


# --- list actions (the ticked accounts) ---------------------------------------------------------
@admin.action(description="Refresh now (a real refresh grant at Google)")
def refresh_now(modeladmin, request, queryset):
    return _queue(modeladmin, request, queryset, ActionKind.REFRESH)


@admin.action(description="Test (get a token and touch each granted API)")
def test_credential(modeladmin, request, queryset):
    return _queue(modeladmin, request, queryset, ActionKind.TEST)


@admin.action(description="Revoke at Google… (asks first; the grant stops working)")
def revoke_at_google(modeladmin, request, queryset):
    return _confirmed_or_ask(modeladmin, request, queryset, ActionKind.REVOKE)


@admin.action(description="Disconnect… (asks first; revoke at Google, then delete here)")
def disconnect(modeladmin, request, queryset):
    return _confirmed_or_ask(modeladmin, request, queryset, ActionKind.DISCONNECT)


CREDENTIAL_ACTIONS = [refresh_now, test_credential, revoke_at_google, disconnect]


# --- object buttons on an account's page (django-object-actions) --------------------------------
class CredentialObjectActions:
    """Mixed into the credential admin: Refresh, Test, Reconnect and Disconnect buttons."""

    change_actions = ("refresh_this", "test_this", "reconnect_this", "disconnect_this")

    def _check(self, request, obj) -> None:
        if not self.has_view_permission(request, obj):
            raise PermissionDenied

    def refresh_this(self, request, obj):
        self._check(request, obj)
        return _queue(self, request, [obj], ActionKind.REFRESH)

    refresh_this.label = "Refresh now"
    refresh_this.short_description = "A real refresh grant at Google, in the background"
    refresh_this.methods = ("POST",)
    refresh_this.button_type = "form"

    def test_this(self, request, obj):
        self._check(request, obj)
        return _queue(self, request, [obj], ActionKind.TEST)

    test_this.label = "Test"
    test_this.short_description = "Get a token and touch each granted API, in the background"
    test_this.methods = ("POST",)
    test_this.button_type = "form"

    def reconnect_this(self, request, obj):
        from .account_views import account_reconnect

        self._check(request, obj)
        return account_reconnect(request, obj.pk)

    reconnect_this.label = "Reconnect"
    reconnect_this.short_description = "Consent again at Google with this account preselected"
    reconnect_this.methods = ("POST",)
    reconnect_this.button_type = "form"

    def disconnect_this(self, request, obj):
        self._check(request, obj)
        if request.method == "POST" and request.POST.get("confirmed") == "yes":
            return _queue(self, request, [obj], ActionKind.DISCONNECT)
        return _confirm_page(self, request, [obj], ActionKind.DISCONNECT, selection=False)

    disconnect_this.label = "Disconnect…"
    disconnect_this.short_description = "Revoke at Google, then delete here (asks first)"
    disconnect_this.methods = ("GET", "POST")
    disconnect_this.button_type = "a"
