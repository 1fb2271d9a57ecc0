"""The token API over real HTTP (Django's live server and the fake Google): who gets which token.

The cross-process cases (16 concurrent callers under gunicorn, a revoked key in every worker, logs)
are in ``test_token_api_gunicorn.py``.
"""
from __future__ import annotations

import datetime as dt
import json

import pytest
import requests
from django.utils import timezone

from oauth import metrics
from oauth.models import AuditEvent, CredentialState
from oauth.service_keys import service_key_create, service_key_revoke

pytestmark = pytest.mark.django_db(transaction=True)
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"


@pytest.fixture
def broker(live_server, fake_google, credential_factory):
    """A live server in front of real grants at the fake Google: Alice (primary, Gmail and
    Calendar), Bob (Gmail) and Carol (Calendar only), none with an access token yet."""

    def grant(email, scopes):
        token = fake_google.issue_grant(email, scopes=list(scopes))
        return credential_factory(email=email, refresh_token=token, access_token=None,
                                  expires_in=None, scopes=scopes)

    class Broker:
        url = live_server.url
        google = fake_google
        alice = grant(ALICE, ("openid", "email", "gmail.modify", "calendar"))
        bob = grant(BOB, ("openid", "email", "gmail.modify"))
        carol = grant(CAROL, ("openid", "email", "calendar"))

        @staticmethod
        def key(name="svc", **kwargs):
            kwargs.setdefault("actor", "user:test")
            return service_key_create(name=name, **kwargs)[1]

        def token(self, key, account=None, *, body=None, headers=None):
            payload = body if body is not None else ({"account": account} if account else {})
            return requests.post(
                f"{self.url}/api/oauth/token",
                data=payload if isinstance(payload, (str, bytes)) else json.dumps(payload),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                         **(headers or {})},
                timeout=30,
            )

        def accounts(self, key):
            return requests.get(f"{self.url}/api/oauth/accounts",
                                headers={"Authorization": f"Bearer {key}"}, timeout=30)

    return Broker()


def test_a_key_scoped_to_alice_gets_her_token_and_403_for_bob(broker):
    key = broker.key(accounts=[ALICE])

    mine = broker.token(key, ALICE)
    other = broker.token(key, BOB)
    unknown = broker.token(key, "nobody@example.com")

    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert body["account"] == ALICE and body["access_token"].startswith("ya29.fake-")
    assert 3000 < body["expires_in"] <= 3600
    assert dt.datetime.fromisoformat(body["expires_at"]) > timezone.now()
    assert "https://www.googleapis.com/auth/gmail.modify" in body["scopes"]
    # the token is Alice's at Google
    profile = requests.get(f"{broker.google.url}/gmail/v1/users/me/profile",
                           headers={"Authorization": f"Bearer {body['access_token']}"}, timeout=10)
    assert profile.json()["emailAddress"] == ALICE
    assert other.status_code == 403 and other.json()["error"] == "account_not_allowed"
    assert BOB in other.json()["description"]
    # an account that does not exist looks the same as one the key may not use
    assert unknown.status_code == 403 and unknown.json()["error"] == "account_not_allowed"
    assert broker.google.refreshes_for(BOB) == 0


def test_a_gmail_readonly_key_gets_403_for_a_grant_without_gmail_and_a_token_with_it(broker):
    key = broker.key(all_accounts=True, scopes=["gmail.readonly"])

    calendar_only = broker.token(key, CAROL)
    gmail_modify = broker.token(key, BOB)  # gmail.modify implies gmail.readonly

    assert calendar_only.status_code == 403
    assert calendar_only.json()["error"] == "scope_not_granted"
    assert "gmail.readonly" in calendar_only.json()["description"]
    assert broker.google.refreshes_for(CAROL) == 0
    assert gmail_modify.status_code == 200
    assert gmail_modify.json()["scopes"] == [
        "https://www.googleapis.com/auth/gmail.modify",
        "https://www.googleapis.com/auth/userinfo.email",
        "openid",
    ]


def test_no_account_means_the_primary_if_the_key_may_use_it(broker):
    everything = broker.key("all", all_accounts=True)
    bob_only = broker.key("bob", accounts=[BOB])

    assert broker.token(everything).json()["account"] == ALICE
    refused = broker.token(bob_only)
    assert refused.status_code == 403 and "the primary account" in refused.json()["description"]


def test_a_key_for_every_account_gets_404_for_one_that_is_not_stored(broker):
    response = broker.token(broker.key(all_accounts=True), "nobody@example.com")
    assert response.status_code == 404 and response.json()["error"] == "account_not_found"


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer bk_unknown", "Basic Zm9vOmJhcg=="])
def test_a_missing_or_unknown_key_gets_401(broker, header):
    headers = {} if header is None else {"Authorization": header}
    response = requests.post(f"{broker.url}/api/oauth/token", json={}, headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.json()["error"] in ("invalid_key", "invalid_credentials")


def test_a_revoked_key_gets_401_at_once_and_an_expired_one_too(broker):
    key = broker.key("svc", all_accounts=True)
    expired = broker.key("old", all_accounts=True, expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert broker.token(key).status_code == 200

    service_key_revoke(name="svc", actor="user:test")

    revoked = broker.token(key)
    assert revoked.status_code == 401 and "was revoked" in revoked.json()["description"]
    assert revoked.headers["WWW-Authenticate"].startswith("Bearer")
    assert broker.token(expired).status_code == 401
    assert broker.accounts(key).status_code == 401


def test_a_key_outside_its_networks_gets_403(broker):
    key = broker.key(all_accounts=True, allowed_networks="10.0.0.0/8")
    response = broker.token(key)
    assert response.status_code == 403 and response.json()["error"] == "address_not_allowed"


def test_a_dead_grant_is_409_reconsent_required_with_the_remediation(broker):
    key = broker.key(all_accounts=True)
    broker.google.expire_grant(BOB)

    response = broker.token(key, BOB)

    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "reconsent_required"
    assert "Reconnect the account from the dashboard" in body["remediation"]
    broker.bob.refresh_from_db()
    assert broker.bob.state == CredentialState.EXPIRED
    assert broker.token(key, BOB).status_code == 409  # and no second call to Google
    assert broker.google.stats["refreshes_by_email"].get(BOB, 0) == 0


def test_a_transient_google_failure_is_503_with_retry_after(broker, settings):
    settings.OAUTH_REFRESH_RETRIES = 0
    key = broker.key(all_accounts=True)
    broker.google.fail_token(1, status=503)

    response = broker.token(key, ALICE)

    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert int(response.headers["Retry-After"]) > 0
    assert broker.token(key, ALICE).status_code == 200  # it passed


def test_token_responses_are_never_cached(broker):
    key = broker.key(all_accounts=True)
    for response in (broker.token(key), broker.token(key, BOB + "x"), broker.accounts(key)):
        assert "no-store" in response.headers["Cache-Control"]


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '{"account": 5}'])
def test_a_bad_body_is_400_saying_what_to_send(broker, body):
    response = broker.token(broker.key(all_accounts=True), body=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "account" in response.json()["description"]


def test_get_on_the_token_endpoint_is_405(broker):
    key = broker.key(all_accounts=True)
    response = requests.get(f"{broker.url}/api/oauth/token",
                            headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code == 405


def test_each_key_is_rate_limited_on_its_own(broker, settings):
    settings.SERVICE_KEY_RATE_LIMIT = "3/m"
    busy, quiet = broker.key("busy", all_accounts=True), broker.key("quiet", all_accounts=True)

    statuses = [broker.token(busy).status_code for _ in range(4)]
    limited = broker.token(busy)

    assert statuses == [200, 200, 200, 429]
    assert limited.json()["error"] == "rate_limited" and int(limited.headers["Retry-After"]) > 0
    assert broker.token(quiet).status_code == 200


def test_accounts_lists_what_the_key_may_use_with_state_and_scopes(broker):
    key = broker.key(accounts=[ALICE, CAROL], scopes=["gmail.readonly"])
    broker.carol.state = CredentialState.EXPIRED
    broker.carol.save(update_fields=["state"])

    response = broker.accounts(key)

    assert response.status_code == 200
    entries = {entry["account"]: entry for entry in response.json()["accounts"]}
    assert list(entries) == [ALICE, CAROL]
    assert entries[ALICE]["primary"] is True and entries[ALICE]["token_available"] is True
    assert entries[ALICE]["lacking_scopes"] == []
    assert entries[CAROL]["state"] == "expired" and entries[CAROL]["token_available"] is False
    assert entries[CAROL]["lacking_scopes"] == ["https://www.googleapis.com/auth/gmail.readonly"]
    assert "Reconnect" in entries[CAROL]["remediation"]


def test_every_call_is_audited_and_counted_without_the_key_or_the_token(broker):
    key = broker.key("gmail-butler", accounts=[ALICE])
    before = metrics.TOKEN_API_CALLS.labels("gmail-butler", "token", "issued")._value.get()

    issued = broker.token(key, ALICE).json()["access_token"]
    broker.token(key, BOB)
    broker.token("bk_wrong")
    broker.accounts(key)

    events = list(AuditEvent.objects.filter(action="token_api").order_by("pk"))
    assert [(e.actor, e.account or e.detail.get("requested_account", ""), e.outcome) for e in events] == [
        ("service-key:gmail-butler", ALICE, "issued"),
        ("service-key:gmail-butler", BOB, "account_not_allowed"),
        ("service-key:unknown", "", "invalid_key"),
        ("service-key:gmail-butler", "", "listed"),
    ]
    dump = repr([(e.actor, e.account, e.outcome, e.detail) for e in AuditEvent.objects.all()])
    assert key not in dump and key[11:] not in dump and issued not in dump
    after = metrics.TOKEN_API_CALLS.labels("gmail-butler", "token", "issued")._value.get()
    assert after == before + 1
    exposition = metrics.metrics_text().decode()
    assert 'key="gmail-butler"' in exposition
    assert key not in exposition and issued not in exposition


def test_force_refresh_replaces_a_token_google_refused(broker):
    key = broker.key(all_accounts=True)
    first = broker.token(key, ALICE).json()["access_token"]
    broker.google.revoke_access_tokens(ALICE)  # Google now answers 401 to it

    same = broker.token(key, ALICE).json()["access_token"]
    fresh = broker.token(key, body={"account": ALICE, "force_refresh": True})
    bad = broker.token(key, body={"account": ALICE, "force_refresh": "yes"})

    assert same == first  # without force_refresh the cached token is served
    assert fresh.status_code == 200 and fresh.json()["access_token"] != first
    assert broker.google.refreshes_for(ALICE) == 2
    assert bad.status_code == 400 and "force_refresh" in bad.json()["description"]


# --- degraded stores: never a 500 -----------------------------------------------------------------
def test_with_redis_down_tokens_are_still_served_and_the_limit_fails_open(client, credential_factory, settings, caplog):
    import logging

    from tests.faults.harness import RedisServer

    credential_factory(email=ALICE)  # a stored access token valid for an hour
    _, key = service_key_create(name="svc", all_accounts=True, actor="user:test")
    server = RedisServer().start()
    settings.CACHES = {"default": {
        "BACKEND": "django_redis.cache.RedisCache", "LOCATION": server.url(0),
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1}, "KEY_PREFIX": "butlers",
    }}
    server.stop()
    try:
        with caplog.at_level(logging.WARNING):
            response = client.post("/api/oauth/token", {"account": ALICE}, content_type="application/json",
                                   HTTP_AUTHORIZATION=f"Bearer {key}")
    finally:
        server.stop()
    assert response.status_code == 200 and response.json()["account"] == ALICE
    assert any("rate limit skipped" in r.getMessage() for r in caplog.records)


def test_with_postgresql_down_the_api_answers_503_json():
    from django.db import connection
    from django.test import Client

    from tests.faults.harness import free_port

    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())  # nobody listens there: "PostgreSQL is down"
    try:
        token = Client().post("/api/oauth/token", {}, content_type="application/json",
                              HTTP_AUTHORIZATION="Bearer bk_whatever")
        listed = Client().get("/api/oauth/accounts", HTTP_AUTHORIZATION="Bearer bk_whatever")
    finally:
        connection.close()
        connection.settings_dict.update(saved)
    for response in (token, listed):
        assert response.status_code == 503
        assert response.json()["error"] == "database_unavailable"
        assert "/api/health/ready" in response.json()["description"]
        assert int(response["Retry-After"]) > 0


def test_calls_without_a_valid_key_are_rate_limited_per_address(broker, settings):
    settings.SERVICE_KEY_RATE_LIMIT = "2/m"

    statuses = [broker.token("bk_guess-" + str(n)).status_code for n in range(4)]
    valid = broker.token(broker.key(all_accounts=True))

    assert statuses == [401, 401, 429, 429]  # two refused keys a minute from one address
    # the limit is the address's (checked before any key is looked up): a valid key from it waits too
    assert valid.status_code == 429
