"""The access-token service (oauth/tokens.py) against the fake Google and real PostgreSQL/Redis."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from tests.factories import ACCESS_TOKEN, CLIENT_SECRET, REFRESH_TOKEN
from oauth.exceptions import (
    AccountNotFound,
    ClientMisconfigured,
    CredentialError,
    ReconsentRequired,
    TransientGoogleError,
)
from oauth.models import AuditAction, AuditEvent, GoogleCredential
from oauth.tokens import (
    AccessToken,
    access_token_cache_invalidate,
    access_token_get,
    credential_refresh,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_backoff(settings):
    settings.OAUTH_REFRESH_BACKOFF = 0.01


@pytest.fixture
def stale_credential(fake_google, credential_factory):
    """A stored grant known to the fake, whose access token expires within the margin."""

    def make(email="alice@example.com", **kwargs):
        refresh_token = fake_google.issue_grant(email)
        return credential_factory(email=email, refresh_token=refresh_token, expires_in=60, **kwargs)

    return make


def reload(credential) -> GoogleCredential:
    return GoogleCredential.objects.get(pk=credential.pk)


def test_a_fresh_stored_token_is_served_without_calling_google(fake_google, credential_factory):
    credential_factory(email="alice@example.com", expires_in=3600)

    token = access_token_get()

    assert token.value == ACCESS_TOKEN
    assert token.account == "alice@example.com"
    assert token.credential_key == "google"
    assert fake_google.stats["token_requests"] == 0


def test_a_warm_call_needs_no_database_query(fake_google, credential_factory, django_assert_num_queries):
    credential_factory(email="alice@example.com", expires_in=3600)
    access_token_get()  # fills the cache (and records last_used_at once)

    with django_assert_num_queries(0):
        again = access_token_get()

    assert again.value == ACCESS_TOKEN


def test_the_cache_holds_ciphertext_not_the_token(fake_google, credential_factory):
    from django_redis import get_redis_connection

    credential_factory(email="alice@example.com", expires_in=3600)
    access_token_get()

    redis = get_redis_connection("default")
    dump = b"".join(redis.get(key) or b"" for key in redis.keys("*"))
    assert dump  # something was cached
    assert ACCESS_TOKEN.encode() not in dump


def test_a_stale_token_is_refreshed_once_and_stored_encrypted(fake_google, stale_credential):
    credential = stale_credential()

    token = access_token_get(actor="process:test")
    again = access_token_get()

    assert token.value.startswith("ya29.fake-")
    assert again.value == token.value
    assert fake_google.refreshes_for("alice@example.com") == 1
    row = reload(credential)
    assert row.access_token.reveal() == token.value
    assert row.access_token_expires_at > timezone.now() + dt.timedelta(minutes=55)
    assert row.last_refreshed_at is not None
    event = AuditEvent.objects.get(action=AuditAction.REFRESHED)
    assert event.actor == "process:test" and event.credential_id == credential.pk
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT access_token FROM google_oauth_credentials WHERE id = %s", [row.pk])
        (stored,) = cursor.fetchone()
    assert token.value not in stored


def test_a_refresh_without_refresh_token_keeps_the_stored_one(fake_google, stale_credential):
    credential = stale_credential()
    stored = reload(credential).refresh_token.reveal()

    access_token_get()

    assert reload(credential).refresh_token.reveal() == stored


def test_a_rotated_refresh_token_is_stored(fake_google, stale_credential):
    credential = stale_credential()
    old = reload(credential).refresh_token.reveal()
    fake_google.rotate_refresh_tokens = True

    access_token_get()

    row = reload(credential)
    assert row.refresh_token.reveal() != old
    # and the new one works at Google on the next forced refresh
    credential_refresh(credential=row, actor="process:test")
    assert fake_google.refreshes_for("alice@example.com") == 2


def test_invalid_grant_marks_expired_without_retry(fake_google, stale_credential):
    credential = stale_credential()
    fake_google.expire_grant("alice@example.com")

    with pytest.raises(ReconsentRequired) as excinfo:
        access_token_get()

    assert "Reconnect" in str(excinfo.value)
    assert fake_google.stats["token_requests"] == 1  # no retry
    row = reload(credential)
    assert row.state == "expired"
    assert row.last_error_code == "invalid_grant"
    assert row.access_token.reveal() == ACCESS_TOKEN  # nothing lost
    assert AuditEvent.objects.filter(action=AuditAction.REFRESH_FAILED, outcome="expired").count() == 1
    # an expired credential is not sent to Google again
    with pytest.raises(ReconsentRequired):
        access_token_get()
    assert fake_google.stats["token_requests"] == 1


def test_a_grant_dying_seven_days_after_consent_points_at_testing_status(
    fake_google, stale_credential
):
    week_ago = timezone.now() - dt.timedelta(days=7, hours=1)
    credential = stale_credential(consented_at=week_ago, refresh_token_issued_at=week_ago)
    fake_google.expire_grant("alice@example.com")

    with pytest.raises(ReconsentRequired) as excinfo:
        access_token_get()

    assert "Testing" in str(excinfo.value)
    assert "Testing" in reload(credential).last_error_detail


def test_an_old_grant_dying_gets_the_plain_reconnect_remediation(fake_google, stale_credential):
    long_ago = timezone.now() - dt.timedelta(days=200)
    stale_credential(consented_at=long_ago, refresh_token_issued_at=long_ago)
    fake_google.expire_grant("alice@example.com")

    with pytest.raises(ReconsentRequired) as excinfo:
        access_token_get()

    assert "Testing" not in str(excinfo.value)
    assert "Reconnect the account" in str(excinfo.value)


def test_two_503s_then_success_stays_connected_with_tokens_intact(fake_google, stale_credential):
    credential = stale_credential()
    refresh_before = reload(credential).refresh_token.reveal()
    fake_google.fail_token(2, status=503)

    token = access_token_get()

    row = reload(credential)
    assert row.state == "connected"
    assert row.consecutive_failures == 0
    assert row.refresh_token.reveal() == refresh_before
    assert row.access_token.reveal() == token.value
    assert fake_google.stats["token_requests"] == 3


@pytest.mark.parametrize(
    "status,error",
    [(503, "temporarily_unavailable"), (500, "server_error"), (429, "rate_limit_exceeded"),
     (502, "html_bad_gateway")],
)
def test_transient_failures_count_up_to_refresh_failing_never_expired(
    fake_google, stale_credential, settings, status, error
):
    settings.OAUTH_REFRESH_RETRIES = 1
    settings.OAUTH_REFRESH_FAILURES_BEFORE_FAILING = 2
    credential = stale_credential()
    fake_google.fail_token(100, status=status, error=error)

    with pytest.raises(TransientGoogleError):
        access_token_get()
    row = reload(credential)
    assert (row.state, row.consecutive_failures) == ("connected", 1)
    assert fake_google.stats["token_requests"] == 2  # one call, one retry

    with pytest.raises(TransientGoogleError):
        access_token_get()
    row = reload(credential)
    assert (row.state, row.consecutive_failures) == ("refresh_failing", 2)
    assert row.access_token.reveal() == ACCESS_TOKEN
    assert row.refresh_token is not None

    fake_google._token_failures.clear()
    access_token_get()
    row = reload(credential)
    assert (row.state, row.consecutive_failures) == ("connected", 0)


def test_google_unreachable_is_transient(settings, credential_factory):
    settings.GOOGLE_OAUTH_TOKEN_URI = "http://127.0.0.1:9/token"  # discard port: refused
    settings.GOOGLE_OAUTH_CLIENT_ID = "x"
    settings.OAUTH_REFRESH_RETRIES = 0
    credential = credential_factory(expires_in=60)

    with pytest.raises(TransientGoogleError) as excinfo:
        access_token_get()

    assert excinfo.value.error == "connection_error"
    assert reload(credential).state == "connected"


@pytest.mark.parametrize("how", ["invalid_client", "deleted_client", "unauthorized_client"])
def test_a_rejected_client_marks_misconfigured(fake_google, stale_credential, how):
    credential = stale_credential()
    if how == "deleted_client":
        fake_google.delete_client()
    else:
        fake_google.fail_token(1, status=401 if how == "invalid_client" else 400, error=how)

    with pytest.raises(ClientMisconfigured) as excinfo:
        access_token_get()

    assert "GOOGLE_OAUTH_CLIENT_SECRET" in str(excinfo.value)
    row = reload(credential)
    assert row.state == "misconfigured"
    assert row.last_error_code == how
    assert fake_google.stats["token_requests"] == 1


def test_a_fixed_client_brings_a_misconfigured_credential_back(fake_google, stale_credential):
    credential = stale_credential()
    fake_google.fail_token(1, status=401, error="invalid_client")
    with pytest.raises(ClientMisconfigured):
        access_token_get()

    access_token_get()

    assert reload(credential).state == "connected"


def test_account_selects_that_account_and_never_another(fake_google, credential_factory):
    credential_factory(email="alice@example.com", access_token="ya29.alice-token")
    credential_factory(email="bob@example.com", access_token="ya29.bob-token")

    assert access_token_get(account="bob@example.com").value == "ya29.bob-token"
    assert access_token_get(account="BOB@example.com").value == "ya29.bob-token"
    assert access_token_get().value == "ya29.alice-token"
    with pytest.raises(AccountNotFound) as excinfo:
        access_token_get(account="carol@example.com")
    assert "carol@example.com" in str(excinfo.value)


def test_nothing_configured_names_the_fix(db, monkeypatch):
    for name in ("BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON", "GMAIL_CLIENT_ID", "GMAIL_CLIENT_SECRET",
                 "GMAIL_REFRESH_TOKEN", "GOOGLE_REFRESH_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(CredentialError) as excinfo:
        access_token_get()

    assert "must be set to a non-empty JSON object" in str(excinfo.value)


def test_a_revoked_credential_is_refused_without_calling_google(fake_google, credential_factory):
    credential_factory(revoked_at=timezone.now(), expires_in=60)

    with pytest.raises(ReconsentRequired):
        access_token_get()

    assert fake_google.stats["token_requests"] == 0


def test_force_refresh_replaces_a_token_google_refused(fake_google, credential_factory):
    refresh_token = fake_google.issue_grant("alice@example.com")
    credential_factory(email="alice@example.com", refresh_token=refresh_token, expires_in=3600)

    token = access_token_get(force_refresh=True)

    assert token.value != ACCESS_TOKEN
    assert access_token_get().value == token.value  # and the cache now holds the new one
    assert fake_google.refreshes_for("alice@example.com") == 1


def test_credential_refresh_always_asks_google(fake_google, credential_factory):
    refresh_token = fake_google.issue_grant("alice@example.com")
    credential = credential_factory(email="alice@example.com", refresh_token=refresh_token)

    credential_refresh(credential=credential, actor="process:heartbeat")
    credential_refresh(credential=reload(credential), actor="process:heartbeat")

    assert fake_google.refreshes_for("alice@example.com") == 2


def test_invalidation_after_reconsent_serves_the_new_token(fake_google, credential_factory):
    credential = credential_factory(email="alice@example.com")
    assert access_token_get().value == ACCESS_TOKEN
    credential.access_token = "ya29.after-reconsent"
    credential.save()

    assert access_token_get().value == ACCESS_TOKEN  # still cached
    access_token_cache_invalidate(credential=credential)
    assert access_token_get().value == "ya29.after-reconsent"
    assert access_token_get(account="alice@example.com").value == "ya29.after-reconsent"


def test_works_without_redis(fake_google, stale_credential, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:6390/0",  # nothing listens there
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    stale_credential()

    first = access_token_get()
    second = access_token_get()

    assert first.value == second.value
    assert fake_google.refreshes_for("alice@example.com") == 1


def test_env_fallback_is_refreshed_once_and_cached(fake_google, monkeypatch, db):
    refresh_token = fake_google.issue_grant("env@example.com")
    monkeypatch.setenv(
        "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON",
        json.dumps({"client_id": fake_google_client_id(), "client_secret": CLIENT_SECRET,
                    "refresh_token": refresh_token}),
    )

    first = access_token_get()
    second = access_token_get()

    assert first.account == "env:BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON"
    assert first.credential_key is None
    assert second.value == first.value
    assert fake_google.refreshes_for("env@example.com") == 1


def test_env_fallback_dead_token_names_the_variable(fake_google, monkeypatch, db):
    monkeypatch.setenv(
        "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON",
        json.dumps({"client_id": fake_google_client_id(), "client_secret": CLIENT_SECRET,
                    "refresh_token": "1//unknown-token"}),
    )

    with pytest.raises(ReconsentRequired) as excinfo:
        access_token_get()

    assert "BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON" in str(excinfo.value)
    assert "1//unknown-token" not in str(excinfo.value)


def test_access_token_repr_hides_the_value():
    token = AccessToken(
        value=ACCESS_TOKEN, expires_at=timezone.now(), account="a@example.com", credential_key="google"
    )
    assert ACCESS_TOKEN not in repr(token)
    assert REFRESH_TOKEN not in repr(token)


def fake_google_client_id() -> str:
    from tests.factories import CLIENT_ID

    return CLIENT_ID


# --- real processes --------------------------------------------------------------------------------
CHILD = """
import json, os, sys, time
import django
django.setup()
from oauth.tokens import access_token_get
print("ready", flush=True)
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.002)
token = access_token_get(actor="process:child")
print(json.dumps({"token": token.value, "account": token.account}), flush=True)
"""


def _child_env(subprocess_env, fake, *, redis_url=None):
    from tests.factories import CLIENT_ID

    env = dict(subprocess_env)
    env.update(fake.env())
    env.update({"GOOGLE_OAUTH_CLIENT_ID": CLIENT_ID, "GOOGLE_OAUTH_CLIENT_SECRET": CLIENT_SECRET})
    if redis_url:
        env["TEST_REDIS_URL"] = redis_url
    return env


def _race(env, tmp_path, n=8):
    import subprocess
    import sys

    from tests.factories import ROOT

    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(go)], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(n)
    ]
    for child in children:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
    go.touch()  # every child asks at the same moment
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("redis", ["redis", "no-redis"])
def test_eight_processes_asking_at_once_cause_one_refresh(
    fake_google, stale_credential, subprocess_env, tmp_path, redis
):
    fake_google.token_latency = 0.5  # the first refresh is still in flight when the others ask
    credential = stale_credential()
    env = _child_env(
        subprocess_env, fake_google,
        redis_url="redis://127.0.0.1:6390/0" if redis == "no-redis" else None,
    )

    results = _race(env, tmp_path)

    assert fake_google.refreshes_for("alice@example.com") == 1
    tokens = {result["token"] for result in results}
    assert len(tokens) == 1
    (token,) = tokens
    assert token != ACCESS_TOKEN
    assert reload(credential).access_token.reveal() == token
    assert AuditEvent.objects.filter(action=AuditAction.REFRESHED).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_refresh_leaves_the_credential_consistent(
    fake_google, stale_credential, subprocess_env, tmp_path
):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.factories import ROOT

    fake_google.token_latency = 5
    credential = stale_credential()
    before = reload(credential)
    go = tmp_path / "go"
    go.touch()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(go)], cwd=ROOT,
        env=_child_env(subprocess_env, fake_google), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while fake_google._in_flight == 0:  # the child holds the row lock and waits on Google
        assert time.monotonic() < deadline and child.poll() is None, child.stderr.read()
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    row = reload(credential)
    assert row.access_token.reveal() == before.access_token.reveal()
    assert row.access_token_expires_at == before.access_token_expires_at
    assert row.refresh_token.reveal() == before.refresh_token.reveal()
    assert row.last_refreshed_at is None and row.state == "connected"

    fake_google.token_latency = 0
    token = access_token_get()  # the lock died with the worker's connection

    assert token.value != ACCESS_TOKEN
    assert reload(credential).access_token.reveal() == token.value


# --- the cache never answers for a credential it was not cached from ------------------------------
def _oauth_token(env) -> "subprocess.CompletedProcess":
    import subprocess
    import sys

    from tests.factories import ROOT

    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "oauth_token"], env=env, capture_output=True,
        text=True, timeout=60,
    )


@pytest.mark.django_db(transaction=True)
def test_a_changed_or_broken_env_credential_is_never_answered_from_the_cache(
    fake_google, subprocess_env
):
    from tests.factories import CLIENT_ID, CLIENT_SECRET
    from oauth.selectors import CALENDAR_JSON_VAR, DEPRECATED_ENV_VARS

    env = {k: v for k, v in subprocess_env.items() if k not in DEPRECATED_ENV_VARS}
    env.update(fake_google.env())

    def credential(email: str) -> str:
        return json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                           "refresh_token": fake_google.issue_grant(email)})

    first = _oauth_token({**env, CALENDAR_JSON_VAR: credential("alice@example.com")})
    assert first.returncode == 0, first.stderr
    alice_token = first.stdout.strip()
    assert fake_google.access_tokens[alice_token].email == "alice@example.com"

    # same Redis, same database: the variable is now broken -> the runbook's message, not a token
    broken = _oauth_token({**env, CALENDAR_JSON_VAR: "{not json"})
    assert broken.returncode != 0
    assert f"{CALENDAR_JSON_VAR} must be set to a non-empty JSON object" in broken.stderr
    assert alice_token not in broken.stdout + broken.stderr

    # another account's credential -> that account's token, never alice's
    other = _oauth_token({**env, CALENDAR_JSON_VAR: credential("bob@example.com")})
    assert other.returncode == 0, other.stderr
    bob_token = other.stdout.strip()
    assert bob_token != alice_token
    assert fake_google.access_tokens[bob_token].email == "bob@example.com"


def test_a_revoked_or_deleted_credential_is_never_answered_from_the_cache(
    stale_credential, fake_google, oauth_client_factory
):
    oauth_client_factory()
    alice = stale_credential()
    token = access_token_get(actor="process:test")  # refreshed and cached under the primary alias
    assert access_token_get(actor="process:test").value == token.value  # warm

    # another writer (no cache invalidation of its own) revokes: the token version moves on
    GoogleCredential.objects.filter(pk=alice.pk).update(
        revoked_at=timezone.now(), token_version=alice.token_version + 1
    )
    from oauth.tokens import cache as token_cache

    token_cache.epoch_bump()
    with pytest.raises(ReconsentRequired):
        access_token_get(actor="process:test")

    GoogleCredential.objects.filter(pk=alice.pk).delete()
    with pytest.raises(CredentialError):
        access_token_get(account="alice@example.com", actor="process:test")


def test_a_refresh_after_a_failure_clears_the_last_error(
    stale_credential, fake_google, oauth_client_factory, staff_client
):
    oauth_client_factory()
    stale_credential()
    fake_google.fail_token(4, status=503)  # every attempt of the first call fails
    with pytest.raises(TransientGoogleError):
        access_token_get(actor="process:test")
    status = staff_client.get("/api/oauth/status").json()["accounts"][0]
    assert status["last_error_code"] and status["consecutive_failures"] == 1

    access_token_get(actor="process:test")

    status = staff_client.get("/api/oauth/status").json()["accounts"][0]
    assert status["state"] == "connected"
    assert status["last_error_code"] == "" and status["last_error_detail"] == ""
    assert status["consecutive_failures"] == 0
    assert "Last error" not in staff_client.get("/").content.decode()


# --- the refresh's transaction: its BEGIN and COMMIT travel with its statements -------------------------
def _lock_is_free(pk: int) -> bool:
    """Whether another connection can lock the row at once (NOWAIT): the refresh released it."""
    import psycopg
    from django.db import connection

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params) as other:
        try:
            other.execute(
                "SELECT id FROM google_oauth_credentials WHERE id = %s FOR UPDATE NOWAIT", [pk]
            )
        except psycopg.errors.LockNotAvailable:
            return False
    return True


@pytest.mark.django_db(transaction=True)
def test_a_refresh_on_its_own_sends_begin_with_the_read_and_commit_with_the_write(
    fake_google, stale_credential
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from oauth.tokens.stored import oauth_client

    credential = stale_credential()
    oauth_client()  # read once, then remembered for a few seconds

    with CaptureQueriesContext(connection) as queries:
        token = access_token_get(actor="process:test")

    sent = [q["sql"] for q in queries]
    (locked,) = [i for i, sql in enumerate(sent) if "FOR UPDATE" in sql]
    (written,) = [i for i, sql in enumerate(sent) if sql.endswith("; COMMIT")]
    assert sent[locked].startswith('BEGIN; SELECT "google_oauth_credentials"')
    assert sent[written].startswith('UPDATE "google_oauth_credentials"')
    assert written == locked + 1  # the lock is held for these two round trips and Google's answer
    assert not connection.in_atomic_block and connection.connection.autocommit
    row = reload(credential)  # stored, and the lock released with the commit
    assert row.access_token.reveal() == token.value
    assert _lock_is_free(credential.pk)
    assert AuditEvent.objects.filter(action=AuditAction.REFRESHED).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_refresh_on_its_own_that_google_refuses_stores_the_failure_and_frees_the_row(
    fake_google, stale_credential
):
    credential = stale_credential()
    fake_google.expire_grant("alice@example.com")

    with pytest.raises(ReconsentRequired):
        access_token_get(actor="process:test")

    row = reload(credential)
    assert row.state == "expired" and row.last_error_code == "invalid_grant"
    assert row.access_token.reveal() == ACCESS_TOKEN  # nothing lost
    assert _lock_is_free(credential.pk)
    # and the connection goes on as usual: the next statements are plain, committed ones
    access_token_cache_invalidate(credential=row)
    GoogleCredential.objects.filter(pk=credential.pk).update(state="connected")
    assert reload(credential).state == "connected"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["atomic", "set_autocommit"])
def test_a_refresh_inside_a_callers_transaction_never_commits_it(fake_google, stale_credential, how):
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    credential = stale_credential()

    class Undo(Exception):
        pass

    with CaptureQueriesContext(connection) as queries:
        if how == "atomic":
            with pytest.raises(Undo), transaction.atomic():
                access_token_get(actor="process:test")
                raise Undo  # the caller rolls its transaction back
        else:
            transaction.set_autocommit(False)
            try:
                access_token_get(actor="process:test")
                transaction.rollback()  # the caller's own decision
            finally:
                transaction.set_autocommit(True)

    sent = " ".join(q["sql"] for q in queries)
    assert "BEGIN;" not in sent and "; COMMIT" not in sent
    assert fake_google.refreshes_for("alice@example.com") == 1
    row = reload(credential)
    assert row.access_token.reveal() == ACCESS_TOKEN  # the refresh went with the caller's rollback
    assert not AuditEvent.objects.filter(action=AuditAction.REFRESHED).exists()
