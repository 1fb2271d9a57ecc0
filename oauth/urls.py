"""URLs of the consent flow, the status API and the dashboard (paths are DESIGN.md's contract)."""
from django.urls import path

from . import account_views, api, risc_views, views

app_name = "oauth"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("accounts/live", account_views.dashboard_live, name="dashboard-live"),
    path("accounts/<int:pk>/refresh", account_views.account_refresh, name="account-refresh"),
    path("accounts/<int:pk>/test", account_views.account_test, name="account-test"),
    path("accounts/<int:pk>/reconnect", account_views.account_reconnect, name="account-reconnect"),
    path("accounts/<int:pk>/disconnect", account_views.account_disconnect, name="account-disconnect"),
    path("accounts/<int:pk>/revoke", account_views.account_revoke, name="account-revoke"),
    path("api/oauth/status", views.oauth_status, name="status"),
    path("api/oauth/google/start", views.google_start, name="google-start"),
    path("api/oauth/google/callback", views.google_callback, name="google-callback"),
    path("api/oauth/google/risc", risc_views.risc_receiver, name="google-risc"),
    path("api/oauth/token", api.token, name="token"),
    path("api/oauth/accounts", api.accounts, name="accounts"),
    path("api/schema", api.schema, name="schema"),
]
