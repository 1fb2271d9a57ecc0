"""Prometheus metrics of the token lifecycle, and the ``/metrics`` view that serves them.

Counters and histograms are plain ``prometheus_client`` objects: with ``PROMETHEUS_MULTIPROC_DIR``
set (``scripts/run.sh`` sets it for gunicorn, the Celery worker and beat) every process writes its
samples to that directory and :func:`metrics_view` merges them, so several gunicorn workers answer
the same totals. Values that describe stored state (credentials by state, heartbeat lag) are read
from the database at scrape time by :class:`StoredStateCollector` instead of being kept in memory,
so they are right whichever process answers the scrape.
"""
from __future__ import annotations

import hmac
import ipaddress
import os

from django.http import HttpResponse, JsonResponse
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

from .app_settings import oauth_settings

_LOOPBACK = ["127.0.0.0/8", "::1/128"]

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
#: Reasons a refresh can fail that ``/metrics`` names; any other code Google sends is 'other', so a
#: label never carries Google's free text (and the number of series stays bounded).
KNOWN_REASONS = frozenset(
    {
        "ok", "invalid_grant", "invalid_client", "unauthorized_client", "deleted_client",
        "temporarily_unavailable", "server_error", "internal_failure", "invalid_response",
        "timeout", "connection_error", "invalid_request", "invalid_scope", "access_denied",
        "http_400", "http_401", "http_403", "http_404", "http_408", "http_429", "http_500",
        "http_502", "http_503", "http_504",
    }
)


def reason_label(error: str) -> str:
    """The ``reason`` label for Google's error code: known codes as they are, else 'other'."""
    return error if error in KNOWN_REASONS else "other"


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

TOKEN_API_CALLS = Counter(
    "butlers_oauth_token_api_calls",
    "Calls to the token API (POST /api/oauth/token, GET /api/oauth/accounts), by service key "
    "name ('unknown' when no valid key was sent), endpoint and outcome ('issued', 'listed', or "
    "the error code answered). Never a key or a token.",
    ["key", "endpoint", "outcome"],
)


class StoredStateCollector:
    """Credentials by state and heartbeat lag, read from the database at scrape time.

    When the database cannot be read, those gauges are left out (a made-up 0 would look like
    'no credential') and ``butlers_oauth_stored_state_scrape_error`` says 1, so an alert can tell
    "nothing to report" from "could not look".
    """

    @staticmethod
    def _scrape_error(value: int) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "butlers_oauth_stored_state_scrape_error",
            "1 when this scrape could not read the stored-state gauges (credentials by state, "
            "heartbeat lag) from the database, else 0.",
            value=value,
        )

    def collect(self):
        from .models import CredentialState, HeartbeatRun

        by_state = GaugeMetricFamily(
            "butlers_oauth_credentials",
            "Stored Google credentials by the state an operator sees (as in the status API and "
            "the dashboard).",
            labels=["state"],
        )
        lag = GaugeMetricFamily(
            "butlers_oauth_heartbeat_lag_seconds",
            "Seconds since the last heartbeat sweep started (-1 before the first one).",
        )
        try:
            from .selectors import credential_states

            counts = {state: 0 for state in CredentialState.values}
            for _credential, state in credential_states():
                counts[state] += 1
            last = HeartbeatRun.objects.last_started_at()
        except Exception:  # a scrape must answer even when the database does not
            yield self._scrape_error(1)
            return
        yield self._scrape_error(0)
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


def _allowed_networks() -> list:
    entries = oauth_settings.METRICS_ALLOWED_IPS or _LOOPBACK
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            continue  # reported by `manage.py check` (oauth.E003); never widens the list
    return networks


def _address_allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in _allowed_networks())


def metrics_access_refusal(request) -> HttpResponse | None:
    """None when the caller may read /metrics, else the 401/403 to answer.

    A ``Bearer`` token equal to METRICS_TOKEN passes from any address; otherwise the client
    address (REMOTE_ADDR, never a forwarded header a client could write) must be in
    METRICS_ALLOWED_IPS, which is loopback only when unset.
    """
    header = request.headers.get("Authorization", "")
    token = str(oauth_settings.METRICS_TOKEN or "")
    if header:
        scheme, _, presented = header.partition(" ")
        if (
            token
            and scheme.lower() == "bearer"
            and hmac.compare_digest(presented.strip().encode(), token.encode())
        ):
            return None
        response = JsonResponse(
            {
                "error": "invalid_token",
                "description": "Wrong or unexpected Authorization for /metrics: send "
                "'Authorization: Bearer <METRICS_TOKEN>'.",
            },
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="butlers-metrics"'
        return response
    if _address_allowed(request.META.get("REMOTE_ADDR", "")):
        return None
    return JsonResponse(
        {
            "error": "forbidden",
            "description": "/metrics answers only a Bearer token equal to METRICS_TOKEN or a "
            "client address listed in METRICS_ALLOWED_IPS (unset: loopback only).",
        },
        status=403,
    )


def metrics_view(request):
    """``GET /metrics``: django-prometheus's metrics, ours, and the stored-state gauges."""
    refusal = metrics_access_refusal(request)
    if refusal is not None:
        return refusal
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
