"""Issue 9's findings on the token path (1, 5, 8, 10, 15): each test is named after its finding.

Google is stubbed at the HTTP boundary (``responses``), or served by the project's fake Google, or
(finding 10) by a socket server in this module that drips its answer.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest
import responses
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError

from oauth.exceptions import TransientGoogleError
from oauth.google.refresh import MAX_EXPIRES_IN, MIN_EXPIRES_IN, refresh_access_token
from oauth.models import AuditAction, AuditEvent, GoogleCredential
from oauth.tokens import access_token_get
from tests.factories import ACCESS_TOKEN, CLIENT_ID, CLIENT_SECRET

TOKEN_URI = "https://oauth2.googleapis.com/token"


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.OAUTH_REFRESH_BACKOFF = 0.01
    settings.GOOGLE_OAUTH_CLIENT_ID = CLIENT_ID
    settings.GOOGLE_OAUTH_CLIENT_SECRET = CLIENT_SECRET


def _refresh():
    return refresh_access_token(refresh_token="1//rt", client_id=CLIENT_ID, client_secret="s")


MALFORMED = {
    "html": ("<html><body>Sign in</body></html>", "text/html"),
    "not_json": ("{not json", "application/json"),
    "a_list": ("[]", "application/json"),
    "null_token": ('{"access_token": null, "expires_in": 3599}', "application/json"),
    "empty_token": ('{"access_token": "", "expires_in": 3599}', "application/json"),
    "expires_in_soon": ('{"access_token": "ya29.x", "expires_in": "soon"}', "application/json"),
}


# --- finding 1 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(MALFORMED))
@responses.activate
def test_finding_01_a_malformed_200_is_a_transient_invalid_response(case):
    body, content_type = MALFORMED[case]
    responses.post(TOKEN_URI, body=body, status=200, content_type=content_type)

    with pytest.raises(TransientGoogleError) as excinfo:
        _refresh()

    assert excinfo.value.error == "invalid_response"
    assert "oauth2.googleapis.com" in str(excinfo.value)


@pytest.mark.parametrize("value,expected", [
    (1e20, MAX_EXPIRES_IN), ("1e20", MAX_EXPIRES_IN), (-5, MIN_EXPIRES_IN), (0, MIN_EXPIRES_IN),
    (3599, 3599), (None, 3600),
])
@responses.activate
def test_finding_01_expires_in_is_clamped_to_a_sane_range(value, expected):
    payload = {"access_token": "ya29.x"}
    if value is not None:
        payload["expires_in"] = value
    responses.post(TOKEN_URI, json=payload)

    assert _refresh().expires_in == expected


@pytest.mark.django_db
@responses.activate
def test_finding_01_a_null_token_is_never_saved_and_the_failure_is_recorded(credential_factory):
    credential = credential_factory(email="alice@example.com", expires_in=60)
    responses.post(TOKEN_URI, json={"access_token": None, "expires_in": 3599})

    with pytest.raises(TransientGoogleError):
        access_token_get(actor="process:test")

    row = GoogleCredential.objects.get(pk=credential.pk)
    assert row.access_token.reveal() == ACCESS_TOKEN  # the stored token is untouched
    assert row.last_error_code == "invalid_response" and row.consecutive_failures == 1
    actions = list(AuditEvent.objects.values_list("action", "outcome"))
    assert (AuditAction.REFRESH_FAILED, "transient") in actions
    assert not any(action == AuditAction.REFRESHED for action, _ in actions)


@pytest.mark.django_db(transaction=True)  # the admin's run is sent to the worker on commit
@responses.activate
def test_finding_01_admin_refresh_now_reports_instead_of_500(staff_client, credential_factory):
    from butlers.celery import app

    credential = credential_factory(email="alice@example.com")
    responses.post(TOKEN_URI, body="<html>oops</html>", status=200, content_type="text/html")

    app.conf.task_always_eager = True  # the background run, in this process
    try:
        response = staff_client.post(
            "/admin/oauth/googlecredential/",
            {"action": "refresh_now", "_selected_action": [credential.pk]},
            follow=True,
        )
    finally:
        app.conf.task_always_eager = False

    assert response.status_code == 200  # the dashboard, with the run's result
    assert "refresh failed" in response.content.decode()


@pytest.mark.django_db
@responses.activate
def test_finding_01_oauth_token_fails_with_a_message_not_a_traceback(credential_factory):
    credential_factory(email="alice@example.com", expires_in=60)
    responses.post(TOKEN_URI, body="[]", status=200, content_type="application/json")

    with pytest.raises(CommandError) as excinfo:
        call_command("oauth_token")

    assert "invalid_response" in str(excinfo.value) or "without a usable token" in str(excinfo.value)


@responses.activate
def test_finding_01_a_consent_answer_with_a_huge_lifetime_is_clamped():
    from oauth.encryption import Secret
    from oauth.google.consent import code_exchange

    responses.post(TOKEN_URI, json={"access_token": "ya29.x", "refresh_token": "1//r", "expires_in": 1e20})

    grant = code_exchange(code="c", code_verifier="v" * 50, redirect_uri="https://x.example/cb",
                          client_id=CLIENT_ID, client_secret=Secret("s", field="client_secret"))

    assert grant.expires_in == MAX_EXPIRES_IN


# --- finding 8 ---------------------------------------------------------------------------------------
@pytest.mark.django_db
@responses.activate
def test_finding_08_a_google_error_code_longer_than_64_characters_is_recorded(
    credential_factory, client
):
    credential = credential_factory(email="alice@example.com", expires_in=60)
    long_code = "quota_exceeded_" + "x" * 120
    responses.post(TOKEN_URI, json={"error": long_code}, status=400)

    with pytest.raises(TransientGoogleError):
        access_token_get(actor="process:test")

    row = GoogleCredential.objects.get(pk=credential.pk)
    assert row.consecutive_failures == 1 and 0 < len(row.last_error_code) <= 64
    assert row.last_error_code.startswith("quota_exceeded_")
    assert AuditEvent.objects.filter(action=AuditAction.REFRESH_FAILED).exists()
    scrape = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert "x" * 40 not in scrape
    assert 'butlers_oauth_refreshes_total{outcome="transient",reason="other"}' in scrape


# --- finding 10 ---------------------------------------------------------------------------------------
class DrippingServer:
    """Answers 200 with a body it sends one byte every 0.2 s (25 s for all of it)."""

    BODY = b'{"access_token": "ya29.dripped", "expires_in": 3599, "pad": "' + b"x" * 100 + b'"}'

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(self.BODY)}\r\n\r\n".encode()
        )
        try:
            for byte in self.BODY:
                if self.stop.is_set():
                    break
                conn.sendall(bytes([byte]))
                self.sent += 1
                time.sleep(0.2)
        except OSError:
            pass  # the client gave up and closed: exactly what is expected
        finally:
            conn.close()


def test_finding_10_a_dripped_answer_is_abandoned_at_the_call_deadline(settings):
    server = DrippingServer()
    settings.GOOGLE_OAUTH_TOKEN_URI = f"http://127.0.0.1:{server.port}/token"
    settings.OAUTH_HTTP_TIMEOUT = 1.0
    try:
        with pytest.raises(TransientGoogleError) as excinfo:
            _refresh()
    finally:
        server.stop.set()

    assert excinfo.value.error == "timeout"
    # the client stopped long before the server finished sending its body
    assert server.sent < len(DrippingServer.BODY) // 2


# --- finding 5 ----------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_finding_05_a_rotated_refresh_token_survives_a_failed_write(
    fake_google, credential_factory, monkeypatch
):
    from oauth.tokens import stored

    fake_google.rotate_refresh_tokens = True
    first = fake_google.issue_grant("alice@example.com")
    credential = credential_factory(email="alice@example.com", refresh_token=first, expires_in=60)
    monkeypatch.setattr(stored, "ROTATION_WRITE_ATTEMPTS", 3)
    monkeypatch.setattr(stored.time, "sleep", lambda s: None)
    original_store = stored.row_store
    failures = {"left": 1}

    def store_failing_once(row, fields, **how):  # the refresh's own write (one plain UPDATE)
        if "refresh_token" in fields and failures["left"]:
            failures["left"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return original_store(row, fields, **how)

    monkeypatch.setattr(stored, "row_store", store_failing_once)

    token = access_token_get(actor="process:test")
    assert failures["left"] == 0  # the write did fail once

    row = GoogleCredential.objects.get(pk=credential.pk)
    rotated = row.refresh_token.reveal()
    assert rotated != first and not fake_google.grants[rotated].revoked  # the new, live token
    assert fake_google.access_tokens[token.value].email == "alice@example.com"
    # and the grant keeps working: the next refresh uses the stored new token
    GoogleCredential.objects.filter(pk=credential.pk).update(access_token_expires_at=None)
    access_token_get(actor="process:test", force_refresh=True)
    assert GoogleCredential.objects.get(pk=credential.pk).state == "connected"


@pytest.mark.django_db(transaction=True)
def test_finding_05_a_rotated_token_that_could_not_be_written_is_used_by_the_next_refresh(
    fake_google, credential_factory, monkeypatch
):
    from oauth.tokens import stored

    fake_google.rotate_refresh_tokens = True
    first = fake_google.issue_grant("alice@example.com")
    credential = credential_factory(email="alice@example.com", refresh_token=first, expires_in=60)
    monkeypatch.setattr(stored, "ROTATION_WRITE_ATTEMPTS", 2)
    monkeypatch.setattr(stored.time, "sleep", lambda s: None)
    original_save = GoogleCredential.save

    def save_failing(self, *args, **kwargs):
        if "refresh_token" in (kwargs.get("update_fields") or []):
            raise OperationalError("the database is down")
        return original_save(self, *args, **kwargs)

    original_store = stored.row_store

    def store_failing(row, fields, **how):  # the refresh's own write (one plain UPDATE)
        if "refresh_token" in fields:
            raise OperationalError("the database is down")
        return original_store(row, fields, **how)

    monkeypatch.setattr(GoogleCredential, "save", save_failing)
    monkeypatch.setattr(stored, "row_store", store_failing)
    token = access_token_get(actor="process:test")  # Google rotated; every write of it failed
    assert fake_google.access_tokens[token.value].email == "alice@example.com"  # still served
    assert GoogleCredential.objects.get(pk=credential.pk).refresh_token.reveal() == first

    monkeypatch.setattr(GoogleCredential, "save", original_save)  # the database is back
    monkeypatch.setattr(stored, "row_store", original_store)
    access_token_get(actor="process:test", force_refresh=True)

    row = GoogleCredential.objects.get(pk=credential.pk)
    assert row.state == "connected" and row.refresh_token.reveal() != first
    assert not fake_google.grants[row.refresh_token.reveal()].revoked


# --- finding 15 (Retry-After from Google) -------------------------------------------------------------
@pytest.mark.parametrize("asked,waited", [("3", 3.0), ("3600", 10.0)])
@pytest.mark.django_db
@responses.activate
def test_finding_15_google_retry_after_is_honoured_and_bounded(
    credential_factory, monkeypatch, asked, waited
):
    from oauth.tokens import base

    credential_factory(email="alice@example.com", expires_in=60)
    responses.post(TOKEN_URI, json={"error": "rate_limit_exceeded"}, status=429,
                   headers={"Retry-After": asked})
    responses.post(TOKEN_URI, json={"access_token": "ya29.after", "expires_in": 3599})
    slept = []
    monkeypatch.setattr(base.time, "sleep", slept.append)

    assert access_token_get(actor="process:test").value == "ya29.after"
    assert slept == [waited]
