"""oauth/metrics.py and /metrics: refresh outcomes, probes, heartbeat lag, credentials by state."""
from __future__ import annotations

import subprocess
import sys

import pytest

from oauth.tokens import access_token_get

pytestmark = pytest.mark.django_db


def sample(text: str, name: str, **labels) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_metrics_count_refreshes_by_outcome_and_show_credentials_by_state(
    client, fake_google, credential_factory, settings
):
    settings.OAUTH_REFRESH_BACKOFF = 0.01
    before = sample(client.get("/metrics").content.decode(), "butlers_oauth_refreshes_total",
                    outcome="expired", reason="invalid_grant") or 0
    credential_factory(email="alice@example.com", refresh_token=fake_google.issue_grant("alice@example.com"),
                       expires_in=60)
    credential_factory(email="bob@example.com", refresh_token="1//dead", expires_in=60)
    access_token_get(account="alice@example.com")
    with pytest.raises(Exception):
        access_token_get(account="bob@example.com")

    response = client.get("/metrics")

    assert response.status_code == 200
    text = response.content.decode()
    assert sample(text, "butlers_oauth_refreshes_total", outcome="success", reason="ok") >= 1
    assert sample(text, "butlers_oauth_refreshes_total", outcome="expired", reason="invalid_grant") == before + 1
    assert sample(text, "butlers_oauth_credentials", state="connected") == 1
    assert sample(text, "butlers_oauth_credentials", state="expired") == 1
    assert sample(text, "butlers_oauth_heartbeat_lag_seconds") == -1  # no sweep yet
    assert "django_http_requests_total_by_method_total" in text  # django-prometheus still there
    assert "1//dead" not in text


def test_heartbeat_lag_and_probe_outcomes(client, fake_google, credential_factory):
    from oauth.sweep import heartbeat_sweep_run

    credential_factory(email="alice@example.com", refresh_token=fake_google.issue_grant("alice@example.com"))
    heartbeat_sweep_run(trigger="test", all_credentials=True)

    text = client.get("/metrics").content.decode()

    assert 0 <= sample(text, "butlers_oauth_heartbeat_lag_seconds") < 60
    assert sample(text, "butlers_oauth_api_probes_total", api="calendar", outcome="ok") >= 1
    assert sample(text, "butlers_oauth_heartbeat_runs_total", trigger="test") >= 1


CHILD = """
import django
django.setup()
from oauth import metrics
import sys
if sys.argv[1] == "count":
    metrics.REFRESHES.labels("success", "ok").inc()
else:
    sys.stdout.write(metrics.metrics_text().decode())
"""


@pytest.mark.django_db(transaction=True)
def test_several_processes_add_up_in_multiprocess_mode(subprocess_env, tmp_path, credential_factory):
    from tests.factories import ROOT

    credential_factory(email="alice@example.com")
    env = dict(subprocess_env, PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
               GOOGLE_OAUTH_CLIENT_ID="client-id", GOOGLE_OAUTH_CLIENT_SECRET="client-secret")
    for _ in range(3):  # three "gunicorn workers" each count one refresh
        subprocess.run([sys.executable, "-c", CHILD, "count"], cwd=ROOT, env=env, check=True)

    scrape = subprocess.run(
        [sys.executable, "-c", CHILD, "scrape"], cwd=ROOT, env=env, check=True,
        capture_output=True, text=True,
    ).stdout

    assert sample(scrape, "butlers_oauth_refreshes_total", outcome="success", reason="ok") == 3
    assert sample(scrape, "butlers_oauth_credentials", state="connected") == 1
