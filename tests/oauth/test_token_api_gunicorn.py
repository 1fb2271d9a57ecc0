"""The token API under gunicorn (several worker processes) in front of the fake Google."""
from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from oauth.models import AuditEvent
from oauth.service_keys import service_key_create
from tests.factories import CLIENT_ID, CLIENT_SECRET, ROOT
from tests.gunicorn_server import GunicornServer

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ALICE = "alice@example.com"


@pytest.fixture
def web(subprocess_env, fake_google, tmp_path):
    env = dict(subprocess_env)
    env.update(fake_google.env())
    env.update({"GOOGLE_OAUTH_CLIENT_ID": CLIENT_ID, "GOOGLE_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
                "SERVICE_KEY_RATE_LIMIT": "0"})
    servers: list[GunicornServer] = []

    def start(*, workers: int, threads: int) -> GunicornServer:
        server = GunicornServer(env=env, workers=workers, threads=threads, log_dir=str(tmp_path)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def alice(fake_google, credential_factory):
    """Alice's live grant with no access token: the first caller must refresh."""
    token = fake_google.issue_grant(ALICE, scopes=["openid", "email", "gmail.modify", "calendar"])
    return credential_factory(email=ALICE, refresh_token=token, access_token=None, expires_in=None)


def _post(url: str, key: str, account: str | None = ALICE) -> requests.Response:
    return requests.post(f"{url}/api/oauth/token", json={"account": account} if account else {},
                         headers={"Authorization": f"Bearer {key}"}, timeout=60)


def test_16_concurrent_calls_for_a_stale_token_cause_one_refresh_at_google(web, fake_google, alice):
    _, key = service_key_create(name="svc", accounts=[ALICE], actor="user:test")
    server = web(workers=4, threads=4)
    fake_google.token_latency = 0.3  # the refresh is in flight while the others arrive
    start = threading.Barrier(16)

    def call(_):
        start.wait()
        return _post(server.url, key)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(call, range(16)))

    assert [r.status_code for r in responses] == [200] * 16, responses[0].text
    assert len({r.json()["access_token"] for r in responses}) == 1
    assert fake_google.refreshes_for(ALICE) == 1
    assert len({pid for pid, *_ in server.access_lines()}) > 1  # several processes answered


def test_a_revoked_key_is_refused_at_once_by_every_worker(web, alice, subprocess_env):
    _, key = service_key_create(name="svc", accounts=[ALICE], actor="user:test")
    server = web(workers=2, threads=2)

    def until_both_workers_answered(status: str) -> list[int]:
        seen: list[int] = []
        for _ in range(60):
            with ThreadPoolExecutor(4) as pool:
                seen += [r.status_code for r in pool.map(lambda _: _post(server.url, key), range(4))]
            pids = {pid for pid, _, path, code in server.access_lines() if code == status}
            if len(pids) == 2:
                return seen
        raise AssertionError(f"both workers never answered {status}: {server.access_lines()}")

    assert set(until_both_workers_answered("200")) == {200}
    revoked = subprocess.run([sys.executable, str(ROOT / "manage.py"), "service_key_revoke", "svc"],
                             env=subprocess_env, capture_output=True, text=True, timeout=60)
    assert revoked.returncode == 0, revoked.stderr

    after = until_both_workers_answered("401")

    assert set(after) == {401}


def test_no_key_or_token_reaches_the_logs_audit_or_metrics(web, alice, fake_google, settings):
    _, key = service_key_create(name="gmail-butler", accounts=[ALICE], actor="user:test")
    server = web(workers=2, threads=2)

    tokens = [_post(server.url, key).json()["access_token"] for _ in range(3)]
    _post(server.url, key, account="bob@example.com")  # 403
    _post(server.url, key + "x")  # an unknown key: 401
    requests.get(f"{server.url}/api/oauth/accounts", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    metrics_text = requests.get(f"{server.url}/metrics", timeout=30).text
    server.stop()

    logs = server.output() + server.access_path.read_text()
    audit = repr(list(AuditEvent.objects.values_list("actor", "account", "outcome", "detail")))
    assert "service-key:gmail-butler" in audit and "POST /api/oauth/token" in logs
    for secret in {key, key[3:], *tokens}:
        assert secret not in logs
        assert secret not in audit
        assert secret not in metrics_text
