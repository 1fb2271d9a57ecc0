"""Prometheus metrics of the token lifecycle, and the ``/metrics`` view that serves them.

Counters and histograms are plain ``prometheus_client`` objects: with ``PROMETHEUS_MULTIPROC_DIR``
set (``scripts/run.sh`` sets it for gunicorn, the Celery worker and beat) every process writes its
samples to that directory and :func:`metrics_view` merges them, so several gunicorn workers answer
the same totals. Values that describe stored state (credentials by state, heartbeat lag) are read
from the database at scrape time by :class:`StoredStateCollector` instead of being kept in memory,
so they are right whichever process answers the scrape.
"""
from __future__ import annotations

import os

from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

REFRESHES = Counter(
    "butlers_oauth_refreshes",
    "Refresh grants sent to Google, by outcome (success, expired, misconfigured, transient) and "
    "reason (Google's error code, or 'ok').",
    ["outcome", "reason"],
)
REFRESH_DURATION = Histogram(
    "butlers_oauth_refresh_duration_seconds",
    "Wall time of one refresh grant at Google's token endpoint.",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0),
)
ACCESS_TOKENS_SERVED = Counter(
    "butlers_oauth_access_tokens_served",
    "Access tokens handed out by the token service, by where they came from "
    "(cache, database, refresh).",
    ["source"],
)
HEARTBEAT_RUNS = Counter(
    "butlers_oauth_heartbeat_runs",
    "Heartbeat sweeps started, by trigger (beat, command, ...).",
    ["trigger"],
)
HEARTBEAT_RESULTS = Counter(
    "butlers_oauth_heartbeat_credentials",
    "Credentials processed by heartbeats, by the state they ended in.",
    ["state"],
)
HEARTBEAT_LAST_RUN = Gauge(
    "butlers_oauth_heartbeat_last_run_timestamp_seconds",
    "Unix time at which this deployment last started a heartbeat sweep.",
    multiprocess_mode="max",
)
PROBES = Counter(
    "butlers_oauth_api_probes",
    "Cheap API calls made by heartbeats to prove granted scopes, by API and outcome.",
    ["api", "outcome"],
)


class StoredStateCollector:
    """Credentials by state and heartbeat lag, read from the database at scrape time."""

    def collect(self):
        from django.db.models import Count

        from .models import CredentialState, GoogleCredential, HeartbeatRun

        by_state = GaugeMetricFamily(
            "butlers_oauth_credentials",
            "Stored Google credentials by state (as stored; 'missing_scope' includes grants "
            "lacking a required scope).",
            labels=["state"],
        )
        lag = GaugeMetricFamily(
            "butlers_oauth_heartbeat_lag_seconds",
            "Seconds since the last heartbeat sweep started (-1 before the first one).",
        )
        try:
            counts = {state: 0 for state in CredentialState.values}
            for row in GoogleCredential.objects.values("state").annotate(n=Count("id")):
                counts[row["state"]] = row["n"]
            # A 'connected' row lacking a required scope shows as missing_scope (as in the status API).
            connected = GoogleCredential.objects.filter(state=CredentialState.CONNECTED)
            if counts[CredentialState.CONNECTED]:
                lacking = sum(
                    1 for c in connected.prefetch_related("granted_scopes") if c.missing_scopes()
                )
                counts[CredentialState.CONNECTED] -= lacking
                counts[CredentialState.MISSING_SCOPE] += lacking
            last = (
                HeartbeatRun.objects.order_by("-started_at")
                .values_list("started_at", flat=True)
                .first()
            )
        except Exception:  # a scrape must answer even when the database does not
            return
        for state, n in sorted(counts.items()):
            by_state.add_metric([state], n)
        lag.add_metric([], (timezone.now() - last).total_seconds() if last else -1)
        yield by_state
        yield lag


_stored_state_registry = CollectorRegistry(auto_describe=False)
_stored_state_registry.register(StoredStateCollector())


def _process_registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def metrics_text() -> bytes:
    """The exposition text: every process's samples (merged in multiprocess mode) + stored state."""
    return generate_latest(_process_registry()) + generate_latest(_stored_state_registry)


def metrics_view(request):
    """``GET /metrics``: django-prometheus's metrics, ours, and the stored-state gauges."""
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
