"""Django admin for the OAuth client, credentials, scopes and the audit log.

No page ever renders a secret, not even truncated: secret columns are not editable model fields, the
client secret has a write-only form field, and the credential pages show only whether a token is
set and how old it is.
"""
from __future__ import annotations

import ipaddress

from django import forms
from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django_object_actions import DjangoObjectActions
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from .admin_actions import CREDENTIAL_ACTIONS, CredentialObjectActions
from .app_settings import is_loopback_host
from .models import (
    ActionItem,
    ActionRun,
    AuditAction,
    AuditEvent,
    CredentialState,
    Feature,
    GoogleCredential,
    HeartbeatRun,
    OAuthClient,
    Scope,
    ServiceKey,
)
from .scopes import short_name
from .selectors import credential_states
from .services import actor_for_user, audit_record
from .templatetags.oauth_display import when
from .tokens.stored import oauth_client


def redirect_uri_problem(value: str) -> str | None:
    """Why Google would refuse ``value`` as a redirect URI, or None when it is acceptable.

    Google's rules for a web client: https (http only for loopback), no #fragment, no user@ part,
    no wildcard, no raw IP address other than loopback, no path traversal. The URL is read with
    urllib3's parser, like the endpoint settings (oauth/app_settings.py).
    """
    if any(c == "\\" or c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        return "The redirect URI must not contain a backslash, space or control character."
    try:
        parts = parse_url(value)
    except LocationParseError:
        return "This is not a valid URL."
    if parts.scheme not in ("http", "https") or not parts.host or not value.lower().startswith(
        f"{parts.scheme}://"
    ):
        return (
            "The redirect URI must start with https:// and name a host (Google accepts http:// "
            "only for loopback hosts such as 127.0.0.1)."
        )
    if parts.auth is not None or "@" in (parts.netloc or ""):
        return "The redirect URI must not contain a user@ part."
    if "#" in value:
        return "The redirect URI must not contain a #fragment: Google refuses it."
    if "*" in parts.host:
        return "The redirect URI must not contain a wildcard: register each host exactly."
    if ".." in (parts.path or "").split("/"):
        return "The redirect URI must not contain /../ (path traversal): Google refuses it."
    if parts.scheme == "http" and not is_loopback_host(parts.host):
        return (
            "http:// is accepted only for loopback hosts (127.0.0.1, localhost, [::1]); use "
            "https:// for this host."
        )
    try:
        ipaddress.ip_address(parts.host.strip("[]"))
    except ValueError:
        return None
    if not is_loopback_host(parts.host):
        return "Google refuses a raw IP address as the host of a redirect URI; use a domain name."
    return None


def when_html(value):
    """A time as the dashboard shows it: relative, with the absolute UTC time beneath."""
    if value is None:
        return "-"
    text = when(value)  # '2026-01-02 10:00 UTC (3 hours ago)'
    absolute, _, relative = text.partition(" (")
    return format_html(
        '<time datetime="{}" title="{}">{}</time><br><span class="quiet">{}</span>',
        value.isoformat(), absolute, relative.rstrip(")"), absolute,
    )


def _time_column(field: str, label: str):
    @admin.display(description=label, ordering=field)
    def column(self, obj):
        return when_html(getattr(obj, field))

    return column


# The app's admin is small (a few models): the list pages get the whole width instead of sharing
# it with the navigation sidebar (the index and the breadcrumbs lead everywhere).
admin.site.enable_nav_sidebar = False


class AdminStyles:
    """The project's admin stylesheet: state badges, compact columns (oauth/static/oauth/admin.css)."""

    class Media:
        css = {"all": ["oauth/admin.css"]}


class OAuthClientForm(forms.ModelForm):
    # A CharField, not a URLField: URLField would silently turn '//evil.example' or
    # 'evil.example/cb' into an https URL instead of refusing them.
    redirect_uri = forms.CharField(
        required=False,
        max_length=500,
        strip=True,
        help_text="Exactly as registered in Google Cloud Console; empty = this server's callback.",
    )
    new_client_secret = forms.CharField(
        label="Client secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: type a value to set or replace the secret; leave blank to keep it.",
    )

    class Meta:
        model = OAuthClient
        fields = ["client_id", "redirect_uri"]

    def clean_redirect_uri(self) -> str:
        value = self.cleaned_data.get("redirect_uri", "")
        if value:
            problem = redirect_uri_problem(value)
            if problem:
                raise forms.ValidationError(problem)
        return value

    def clean(self):
        cleaned = super().clean()
        has_secret = self.instance.pk is not None and self.instance.client_secret is not None
        if not cleaned.get("new_client_secret") and not has_secret:
            self.add_error("new_client_secret", "A new client needs its secret.")
        return cleaned

    def save(self, commit: bool = True):
        client = super().save(commit=False)
        if self.cleaned_data.get("new_client_secret"):
            client.client_secret = self.cleaned_data["new_client_secret"]
        if commit:
            client.save()
        return client


@admin.register(OAuthClient)
class OAuthClientAdmin(admin.ModelAdmin):
    form = OAuthClientForm
    list_display = ["client_id", "redirect_uri", "secret_status", "updated_at"]
    readonly_fields = ["secret_status", "updated_at"]
    fields = ["client_id", "new_client_secret", "secret_status", "redirect_uri", "updated_at"]

    @admin.display(description="Secret")
    def secret_status(self, obj: OAuthClient) -> str:
        if obj is None or obj.pk is None or obj.client_secret is None:
            return "not set"
        return f"set (last change {obj.updated_at:%Y-%m-%d %H:%M} UTC)"

    def has_add_permission(self, request) -> bool:
        # one client: the project's Google OAuth client
        return super().has_add_permission(request) and not OAuthClient.objects.exists()

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        audit_record(
            action=AuditAction.CLIENT_CHANGED,
            actor=actor_for_user(request.user),
            detail={
                "client_id": obj.client_id,
                "changed": sorted(set(form.changed_data)),
                "secret_replaced": bool(form.cleaned_data.get("new_client_secret")),
            },
        )


class ScopeListFilter(admin.SimpleListFilter):
    title = "lacks scope"
    parameter_name = "lacks"

    def lookups(self, request, model_admin):
        return [(s.uri, s.short_name) for s in Scope.objects.exclude(short_name__in=["openid", "email"])]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.lacking_scope(self.value())
        return queryset


class StateListFilter(admin.SimpleListFilter):
    """By the state an operator sees (the status API's), not the stored column alone."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return CredentialState.choices

    def queryset(self, request, queryset):
        if self.value():
            ids = [c.pk for c, state in credential_states() if state == self.value()]
            return queryset.filter(pk__in=ids)
        return queryset


@admin.register(GoogleCredential)
class GoogleCredentialAdmin(CredentialObjectActions, DjangoObjectActions, admin.ModelAdmin):
    # narrow columns, so that the list fits at 1280 px (granted scopes are on each account's page)
    list_display = [
        "account",
        "current_state",
        "missing",
        "last_error",
        "last_refreshed",
        "idle_limit",
    ]
    list_filter = [StateListFilter, ScopeListFilter, "source"]
    # oauth/admin_actions.py: refresh now, test, revoke at Google and disconnect (both confirmed)
    actions = CREDENTIAL_ACTIONS

    class Media:  # django-object-actions' buttons, then our badges (one Media wins in the MRO)
        css = {"all": ["django_object_actions/css/django-object-actions.css", "oauth/admin.css"]}
    search_fields = ["email", "credential_key"]
    ordering = ["credential_key"]
    fieldsets = [
        (None, {"fields": ["credential_key", "email", "source", "current_state", "client_id"]}),
        ("Scopes", {"fields": ["scopes", "missing"]}),
        (
            "Tokens",
            {
                "fields": [
                    "token_status",
                    "access_token_expires",
                    "consented",
                    "refresh_token_issued",
                    "refresh_token_age",
                    "days_to_idle_limit",
                ]
            },
        ),
        (
            "Activity",
            {
                "fields": [
                    "last_refreshed",
                    "last_used",
                    "last_probed",
                    "last_error_when",
                    "last_error_code",
                    "last_error_detail",
                    "consecutive_failures",
                    "revoked",
                    "created",
                    "updated",
                ]
            },
        ),
    ]

    # every field is read-only: a grant changes by consenting, refreshing or revoking
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("granted_scopes")

    def has_add_permission(self, request) -> bool:
        # accounts are added by consenting, never by typing a token in
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # read-only page (no Save buttons): a grant changes by consenting, refreshing or revoking
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # the page's Reconnect button goes to Google's consent page
        from .account_views import consent_form_allowed

        return consent_form_allowed(super().change_view(request, object_id, form_url, extra_context))

    def has_delete_permission(self, request, obj=None) -> bool:
        # a bare delete would leave the grant alive at Google: "Disconnect" revokes, then deletes
        return False

    last_refreshed = _time_column("last_refreshed_at", "Last refresh")
    last_used = _time_column("last_used_at", "Last used")
    last_probed = _time_column("last_probed_at", "Last API test")
    last_error_when = _time_column("last_error_at", "Last error at")
    access_token_expires = _time_column("access_token_expires_at", "Access token expires")
    consented = _time_column("consented_at", "Consented")
    refresh_token_issued = _time_column("refresh_token_issued_at", "Refresh token issued")
    revoked = _time_column("revoked_at", "Revoked")
    created = _time_column("created_at", "Created")
    updated = _time_column("updated_at", "Updated")

    @admin.display(description="Account", ordering="email")
    def account(self, obj: GoogleCredential):
        if obj.is_primary or not obj.email:
            return format_html(
                '{}<br><span class="quiet">{}</span>', obj.email or "(unknown email)",
                f"{obj.credential_key} (primary)" if obj.is_primary else obj.credential_key,
            )
        return obj.email

    @admin.display(description="Idle limit")
    def idle_limit(self, obj: GoogleCredential) -> str:
        days = obj.days_until_idle_limit(now=timezone.now())
        dead = obj.revoked_at is not None or obj.state == CredentialState.EXPIRED
        return "-" if days is None or dead else f"{days} days"

    @admin.display(description="State")
    def current_state(self, obj: GoogleCredential):
        state = obj.effective_state(client_configured=oauth_client() is not None)
        return format_html(
            '<span class="state-badge {}">{}</span>', state, CredentialState(state).label
        )

    @admin.display(description="Last error")
    def last_error(self, obj: GoogleCredential):
        if not obj.last_error_code:
            return "-"
        first = obj.last_error_detail.partition(". ")[0]
        return format_html(
            '<code title="{}">{}</code><br><span class="quiet">{}</span>',
            first, obj.last_error_code, when(obj.last_error_at) if obj.last_error_at else "",
        )

    @admin.display(description="Granted scopes")
    def scopes(self, obj: GoogleCredential):
        names = [short_name(uri) for uri in obj.granted_scope_uris()]
        return format_html_join(", ", "{}", ((name,) for name in names)) or "-"

    @admin.display(description="Missing scopes")
    def missing(self, obj: GoogleCredential) -> str:
        return ", ".join(short_name(uri) for uri in obj.missing_scopes()) or "-"

    @admin.display(description="Client id")
    def client_id(self, obj: GoogleCredential) -> str:
        return obj.client_id or "-"

    @admin.display(description="Tokens")
    def token_status(self, obj: GoogleCredential) -> str:
        refresh = "refresh token stored (encrypted)" if obj.refresh_token else "no refresh token"
        access = "access token cached" if obj.access_token else "no access token"
        return f"{refresh}; {access}"

    @admin.display(description="Refresh token age")
    def refresh_token_age(self, obj: GoogleCredential) -> str:
        days = obj.refresh_token_age_days(now=timezone.now())
        return "-" if days is None else f"{days} days"

    @admin.display(description="Days until Google's 6-month idle limit")
    def days_to_idle_limit(self, obj: GoogleCredential) -> str:
        days = obj.days_until_idle_limit(now=timezone.now())
        return "-" if days is None else str(days)


class ReadOnlyAdmin(AdminStyles, admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created", "action", "account", "actor", "outcome"]
    list_filter = ["action", "outcome"]
    search_fields = ["account", "credential_key", "actor"]
    date_hierarchy = "created_at"
    created = _time_column("created_at", "When")
    fields = readonly_fields = ["created", "action", "account", "credential_key", "actor", "outcome",
                                "detail"]


@admin.register(HeartbeatRun)
class HeartbeatRunAdmin(ReadOnlyAdmin):
    list_display = ["started", "finished", "trigger", "selected", "outcomes"]
    started = _time_column("started_at", "Started")
    finished = _time_column("finished_at", "Finished")
    fields = readonly_fields = ["started", "finished", "trigger", "selected", "outcomes"]


class ActionItemInline(admin.TabularInline):
    model = ActionItem
    fields = readonly_fields = ["account", "status", "message", "updated"]
    extra = 0
    can_delete = False
    updated = _time_column("updated_at", "Updated")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ActionRun)
class ActionRunAdmin(ReadOnlyAdmin):
    """Every operator action run (dashboard or admin) and each account's result: the dashboard
    shows the latest few, this keeps the rest until the retention prune."""

    list_display = ["created", "action", "actor", "summary", "finished"]
    list_filter = ["action"]
    search_fields = ["actor", "items__account"]
    fields = readonly_fields = ["created", "action", "actor", "finished"]
    inlines = [ActionItemInline]
    created = _time_column("created_at", "Started")
    finished = _time_column("finished_at", "Finished")

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("items")

    @admin.display(description="Accounts")
    def summary(self, obj: ActionRun) -> str:
        counts: dict[str, int] = {}
        for item in obj.items.all():
            counts[item.get_status_display().lower()] = counts.get(item.get_status_display().lower(), 0) + 1
        return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "-"


@admin.register(Scope)
class ScopeAdmin(admin.ModelAdmin):
    list_display = ["short_name", "uri", "description", "implied"]
    search_fields = ["short_name", "uri"]
    filter_horizontal = ["implies"]

    @admin.display(description="Also grants")
    def implied(self, obj: Scope) -> str:
        return ", ".join(s.short_name for s in obj.implies.all()) or "-"


@admin.register(Feature)
class FeatureAdmin(admin.ModelAdmin):
    list_display = ["key", "connector", "description", "scopes"]
    filter_horizontal = ["satisfied_by"]

    @admin.display(description="Satisfied by any of")
    def scopes(self, obj: Feature) -> str:
        return ", ".join(s.short_name for s in obj.satisfied_by.all())


# --- service keys (the token API) -------------------------------------------------------------------
class ServiceKeyForm(forms.ModelForm):
    class Meta:
        model = ServiceKey
        fields = ["name", "all_accounts", "accounts", "scopes", "allowed_networks", "expires_at"]

    def clean_allowed_networks(self) -> str:
        from .service_keys import networks_validate

        try:
            return networks_validate(self.cleaned_data.get("allowed_networks") or "")
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("all_accounts") and not cleaned.get("accounts"):
            self.add_error("accounts", "Choose the accounts the key may use, or tick 'All accounts'.")
        return cleaned


@admin.register(ServiceKey)
class ServiceKeyAdmin(admin.ModelAdmin):
    """Keys for the token API. The key itself is shown once, on the page after 'Save', never again:
    only its hash and first characters are stored."""

    form = ServiceKeyForm
    list_display = ["name", "key_prefix", "status", "account_list", "scope_list", "expires_at",
                    "last_used_at", "use_count"]
    search_fields = ["name", "key_prefix"]
    filter_horizontal = ["accounts", "scopes"]
    readonly_fields = ["key_prefix", "status", "created_by", "created_at", "last_used_at",
                       "use_count", "revoked_at"]
    actions = ["revoke_keys"]

    def get_fieldsets(self, request, obj=None):
        editable = ["name", "all_accounts", "accounts", "scopes", "allowed_networks", "expires_at"]
        if obj is None:
            return [(None, {"fields": editable})]
        return [
            (None, {"fields": editable}),
            ("Use", {"fields": ["key_prefix", "status", "created_by", "created_at", "last_used_at",
                                "use_count", "revoked_at"]}),
        ]

    @admin.display(description="Status")
    def status(self, obj: ServiceKey) -> str:
        if obj.revoked_at is not None:
            return f"revoked {obj.revoked_at:%Y-%m-%d %H:%M} UTC"
        if obj.expires_at is not None and obj.expires_at <= timezone.now():
            return "expired"
        return "active"

    @admin.display(description="Accounts")
    def account_list(self, obj: ServiceKey) -> str:
        if obj.all_accounts:
            return "all"
        return ", ".join(str(c) for c in obj.accounts.all()) or "-"

    @admin.display(description="Scopes")
    def scope_list(self, obj: ServiceKey) -> str:
        return ", ".join(s.short_name for s in obj.scopes.all()) or "any"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("accounts", "scopes")

    def save_model(self, request, obj: ServiceKey, form, change) -> None:
        from .service_keys import service_key_issue

        if not change:
            obj.created_by = actor_for_user(request.user)
            request._service_key_plaintext = service_key_issue(key=obj)
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        if not change:
            from .service_keys import service_key_audit_created

            service_key_audit_created(key=form.instance, actor=actor_for_user(request.user))

    def response_add(self, request, obj: ServiceKey, post_url_continue=None):
        """Show the new key on this one page (never stored, never in a message or a redirect)."""
        from django.template.response import TemplateResponse

        plaintext = getattr(request, "_service_key_plaintext", None)
        if plaintext is None:  # pragma: no cover - save_model always sets it on add
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Service key {obj.name} created",
            "key": obj,
            "plaintext": plaintext,
        }
        response = TemplateResponse(request, "admin/oauth/servicekey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected keys (refused at once)")
    def revoke_keys(self, request, queryset) -> None:
        from django.contrib import messages

        from .service_keys import service_key_revoke

        for key in queryset:
            _, changed = service_key_revoke(name=key.name, actor=actor_for_user(request.user))
            if changed:
                messages.success(request, f"Revoked service key {key.name}: it is refused from now on.")
            else:
                messages.info(request, f"Service key {key.name} was already revoked.")


from . import admin_notifications  # noqa: E402,F401  (notifications, webhooks, security events)
