"""The butlers' client of the token broker, against a live broker in front of the fake Google."""
from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from connectors.broker_client import (
    BrokerAuthError,
    BrokerClient,
    BrokerConfigError,
    BrokerForbidden,
    BrokerReconsentRequired,
    BrokerUnavailable,
)
from oauth.models import AuditEvent
from oauth.service_keys import service_key_create, service_key_revoke
from tests.factories import ROOT

pytestmark = pytest.mark.django_db(transaction=True)
ALICE, BOB = "alice@example.com", "bob@example.com"


@pytest.fixture
def broker(live_server, fake_google, credential_factory):
    for email in (ALICE, BOB):
        token = fake_google.issue_grant(email, scopes=["openid", "email", "gmail.modify"])
        credential_factory(email=email, refresh_token=token, access_token=None, expires_in=None,
                           scopes=("openid", "email", "gmail.modify"))
    _, key = service_key_create(name="svc", accounts=[ALICE], actor="user:test")
    client = BrokerClient(live_server.url, key)
    client.waits = []
    client.sleep = client.waits.append  # observe the Retry-After wait without sleeping
    return client


def _calls() -> int:
    return AuditEvent.objects.filter(action="token_api").count()


def test_a_token_is_fetched_once_and_kept_until_shortly_before_it_expires(broker):
    first = broker.token(ALICE)
    again = broker.access_token(ALICE)

    assert again == first.access_token and _calls() == 1
    assert first.account == ALICE and "https://www.googleapis.com/auth/gmail.modify" in first.scopes
    later = first.expires_at - broker.margin + 1  # inside the margin: ask the broker again
    broker.clock = lambda: later
    broker.token(ALICE)
    assert _calls() == 2


def test_threads_of_one_process_share_one_request(broker):
    start = threading.Barrier(8)

    def call(_):
        start.wait()
        return broker.access_token(ALICE)

    with ThreadPoolExecutor(8) as pool:
        tokens = set(pool.map(call, range(8)))

    assert len(tokens) == 1 and _calls() == 1


def test_a_503_is_retried_once_after_retry_after(broker, fake_google, settings):
    settings.OAUTH_REFRESH_RETRIES = 0
    fake_google.fail_token(1)

    token = broker.token(ALICE)

    assert token.access_token and broker.waits == [10.0]
    assert [e.outcome for e in AuditEvent.objects.filter(action="token_api").order_by("pk")] == [
        "temporarily_unavailable", "issued",
    ]


def test_a_second_503_is_raised(broker, fake_google, settings):
    settings.OAUTH_REFRESH_RETRIES = 0
    fake_google.fail_token(2)

    with pytest.raises(BrokerUnavailable) as caught:
        broker.token(ALICE)

    assert caught.value.status == 503 and caught.value.error == "temporarily_unavailable"
    assert broker.waits == [10.0]


def test_refusals_keep_the_brokers_code_and_what_to_do(broker, fake_google):
    with pytest.raises(BrokerForbidden) as forbidden:
        broker.token(BOB)
    assert forbidden.value.error == "account_not_allowed"

    fake_google.expire_grant(ALICE)
    with pytest.raises(BrokerReconsentRequired) as dead:
        broker.token(ALICE)
    assert dead.value.error == "reconsent_required"
    assert "Reconnect the account" in str(dead.value)

    service_key_revoke(name="svc", actor="user:test")
    with pytest.raises(BrokerAuthError) as revoked:
        broker.accounts()
    assert revoked.value.status == 401 and "revoked" in str(revoked.value)
    assert broker._key not in str(revoked.value) + repr(broker)


def test_accounts_lists_what_the_key_may_use(broker):
    assert [a["account"] for a in broker.accounts()] == [ALICE]


def test_configuration_errors_name_the_variables():
    with pytest.raises(BrokerConfigError, match="BUTLERS_BROKER_URL and BUTLERS_SERVICE_KEY must be set"):
        BrokerClient.from_env({})
    with pytest.raises(BrokerConfigError, match="BUTLERS_SERVICE_KEY must hold a service key"):
        BrokerClient.from_env({"BUTLERS_BROKER_URL": "http://127.0.0.1:1", "BUTLERS_SERVICE_KEY": "nope"})
    with pytest.raises(BrokerConfigError, match="base URL"):
        BrokerClient.from_env({"BUTLERS_BROKER_URL": "127.0.0.1:8200", "BUTLERS_SERVICE_KEY": "bk_x"})


def test_an_unreachable_broker_says_which_variable_to_check():
    from tests.gunicorn_server import free_port

    client = BrokerClient(f"http://127.0.0.1:{free_port()}", "bk_secret-value", timeout=2)
    with pytest.raises(BrokerUnavailable, match="check BUTLERS_BROKER_URL") as caught:
        client.token()
    assert "bk_secret-value" not in str(caught.value)


def test_the_client_needs_neither_django_nor_requests():
    code = (
        "import sys, connectors.broker_client; "
        "assert not {'django', 'requests'} & set(sys.modules), sorted(sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_force_refresh_gets_a_new_token_from_google(broker, fake_google):
    first = broker.access_token(ALICE)
    fake_google.revoke_access_tokens(ALICE)

    fresh = broker.access_token(ALICE, force_refresh=True)

    assert fresh != first and fake_google.refreshes_for(ALICE) == 2
    assert broker.access_token(ALICE) == fresh  # and kept
