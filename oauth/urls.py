"""URLs of the consent flow, the status API and the dashboard (paths are DESIGN.md's contract)."""
from django.urls import path

from . import api, views

app_name = "oauth"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("api/oauth/status", views.oauth_status, name="status"),
    path("api/oauth/google/start", views.google_start, name="google-start"),
    path("api/oauth/google/callback", views.google_callback, name="google-callback"),
    path("api/oauth/token", api.token, name="token"),
    path("api/oauth/accounts", api.accounts, name="accounts"),
    path("api/schema", api.schema, name="schema"),
]
