"""URLs of the consent flow, the status API and the dashboard (filled in by the consent-flow work)."""
from django.urls import path  # noqa: F401

app_name = "oauth"
urlpatterns: list = []
