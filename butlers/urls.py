"""Top-level URLs: health probes, the OAuth app (status API, consent flow, dashboard), admin, metrics."""
from django.contrib import admin
from django.urls import include, path

from oauth import metrics as oauth_metrics

from . import health

urlpatterns = [
    path("api/health", health.liveness, name="health"),
    path("api/health/ready", health.readiness, name="health-ready"),
    path("admin/", admin.site.urls),
    # Ours first: django-prometheus's metrics merged across processes, plus stored-state gauges.
    path("metrics", oauth_metrics.metrics_view, name="prometheus-django-metrics"),
    path("", include("django_prometheus.urls")),
    path("", include("oauth.urls")),
]

admin.site.site_header = "Butlers OAuth"
admin.site.site_title = "Butlers OAuth"
admin.site.index_title = "Google grants"
