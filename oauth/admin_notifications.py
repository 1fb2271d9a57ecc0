"""Admin pages of notifications and Google's security events (imported by ``oauth/admin.py``).

* Notification preferences: which staff users get the emails.
* Webhook endpoints: URL, events, active; the signing secret is shown once, on the page after
  'Save', never again (only its ciphertext is stored). Action "send test event".
* Webhook deliveries: status, attempts (status code, latency, the receiver's first bytes) inline;
  action "redeliver".
* Notifications and security events: read-only history.
"""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse

# oauth.admin imports this module at its end, after ReadOnlyAdmin is defined
from .admin import ReadOnlyAdmin
from .models import (
    Notification,
    NotificationEvent,
    NotificationPreference,
    SecurityEvent,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from .webhooks import (
    webhook_redeliver,
    webhook_secret_new,
    webhook_test_send,
    webhook_url_problem,
)

_EVENT_CHOICES = [(value, label) for value, label in NotificationEvent.choices if value != "test"]


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(admin.ModelAdmin):
    list_display = ["user", "email", "user_email"]
    list_editable = ["email"]
    raw_id_fields = ["user"]

    @admin.display(description="Address")
    def user_email(self, obj: NotificationPreference) -> str:
        return obj.user.email or "(no address: set one on the user)"


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https",
                         help_text="https:// (http:// only on a loopback host). Redirects are not followed.")
    events = forms.MultipleChoiceField(
        choices=_EVENT_CHOICES, required=False, widget=forms.CheckboxSelectMultiple,
        help_text="None ticked = every event.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "description", "events", "active"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        problem = webhook_url_problem(url)
        if problem:
            raise forms.ValidationError(problem)
        return url


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ["number", "attempted_at", "status_code", "latency_ms", "response_snippet", "error"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ["url", "description", "event_list", "active", "created_at"]
    actions = ["send_test_event"]

    @admin.display(description="Events")
    def event_list(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.events) or "all"

    def save_model(self, request, obj: WebhookEndpoint, form, change) -> None:
        if not change:
            request._webhook_secret = webhook_secret_new()
            obj.secret = request._webhook_secret
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj: WebhookEndpoint, post_url_continue=None):
        """Show the signing secret on this one page (never again, never in a message)."""
        secret = getattr(request, "_webhook_secret", None)
        if secret is None:  # pragma: no cover - save_model always sets it on add
            return super().response_add(request, obj, post_url_continue)
        context = {**self.admin_site.each_context(request), "opts": self.opts,
                   "title": "Webhook endpoint created", "endpoint": obj, "secret": secret}
        response = TemplateResponse(request, "admin/oauth/webhookendpoint/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Send a test event to the selected endpoints")
    def send_test_event(self, request, queryset) -> None:
        for endpoint in queryset:
            delivery = webhook_test_send(endpoint=endpoint)
            messages.success(request, f"Test event {delivery.msg_id} queued for {endpoint.url}; "
                             "see Webhook deliveries for the answer.")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "event_type", "endpoint", "account", "status", "attempts",
                    "next_attempt_at", "delivered_at"]
    list_filter = ["status", "event_type"]
    readonly_fields = ["endpoint", "notification", "msg_id", "event_type", "payload", "status",
                       "attempts", "next_attempt_at", "delivered_at", "created_at"]
    inlines = [WebhookAttemptInline]
    actions = ["redeliver"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("endpoint")

    @admin.display(description="Account")
    def account(self, obj: WebhookDelivery) -> str:
        return str((obj.payload.get("data") or {}).get("account", ""))

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Redeliver the selected messages now")
    def redeliver(self, request, queryset) -> None:
        for delivery in queryset:
            webhook_redeliver(delivery=delivery)
        messages.success(request, f"{queryset.count()} delivery(ies) queued again.")


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["occurred_at", "event_type", "account", "old_state", "new_state", "emailed_at"]
    list_filter = ["event_type", "new_state"]
    search_fields = ["account"]


@admin.register(SecurityEvent)
class SecurityEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "event_type", "credential", "outcome", "jti"]
    list_filter = ["event_type", "outcome"]
    search_fields = ["jti", "subject"]
