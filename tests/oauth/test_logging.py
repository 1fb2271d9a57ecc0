"""Refresh logs keep the runbook's lines, carry structured fields, and never show a secret."""
from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import structlog

from tests.factories import ACCESS_TOKEN, CLIENT_SECRET, REFRESH_TOKEN
from oauth.exceptions import ReconsentRequired
from oauth.tokens import access_token_get

pytestmark = pytest.mark.django_db

SECRETS = (ACCESS_TOKEN, REFRESH_TOKEN, CLIENT_SECRET)


class _Output:
    def __init__(self, stream):
        self.stream = stream

    def readouterr(self):
        class Captured:
            err = self.stream.getvalue()

        return Captured


@pytest.fixture
def log_output():
    """What the project's console handler writes: its own formatter, into a buffer."""
    import io

    root = logging.getLogger()
    formatter = next(h.formatter for h in root.handlers if h.formatter is not None)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    try:
        yield _Output(stream)
    finally:
        root.removeHandler(handler)


def test_a_refresh_logs_the_runbook_line_with_fields(fake_google, credential_factory, log_output):
    credential_factory(email="alice@example.com", refresh_token=fake_google.issue_grant("alice@example.com"),
                       expires_in=60)

    token = access_token_get()

    err = log_output.readouterr().err
    line = next(line for line in err.splitlines() if "Refreshed access token" in line)
    assert "Refreshed access token (valid for 3599 seconds)" in line
    for field in ("credential_key=google", "outcome=refreshed", "expires_in=3599", "duration_ms="):
        assert field in line
    assert token.value not in err


def test_a_failed_refresh_logs_the_runbook_failure_line(fake_google, credential_factory, log_output):
    credential_factory(email="alice@example.com", expires_in=60)  # a refresh token the fake never issued

    with pytest.raises(ReconsentRequired):
        access_token_get()

    err = log_output.readouterr().err
    assert "Failed to refresh access token: invalid_grant" in err
    for secret in SECRETS:
        assert secret not in err


def test_no_path_leaks_a_token(log_output):
    from celery.utils.log import get_task_logger

    structlog.get_logger("oauth.tokens").info("structlog", access_token=ACCESS_TOKEN, note=f"rt {REFRESH_TOKEN}")
    logging.getLogger("oauth.tokens").info("stdlib %s and %r", ACCESS_TOKEN, {"client_secret": CLIENT_SECRET})
    try:
        raise RuntimeError(f"Google said no to {REFRESH_TOKEN} / {ACCESS_TOKEN}")
    except RuntimeError:
        logging.getLogger("oauth.tokens").exception("while refreshing")
        structlog.get_logger("oauth.tokens").exception("while refreshing (structlog)")
    get_task_logger("oauth.tasks").info(
        "Task oauth.tasks.credential_heartbeat received args=(%r,) kwargs=%r",
        ACCESS_TOKEN, {"refresh_token": REFRESH_TOKEN},
    )
    logging.getLogger("celery.app.trace").error(
        "Task %s raised: %s", "oauth.tasks.credential_heartbeat", f"Bearer {ACCESS_TOKEN}"
    )

    err = log_output.readouterr().err
    assert "while refreshing" in err and "Task oauth.tasks.credential_heartbeat" in err
    for secret in SECRETS:
        assert secret not in err
    assert "[redacted]" in err


def test_a_service_key_pasted_into_a_log_line_is_masked():
    from oauth.redaction import redact_text

    key = "bk_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0_-x"
    assert key not in redact_text(f"calling the broker with {key} failed")
    assert "[redacted]" in redact_text(f"key={key}")


_SECRET_SHAPES = [
    "ya29.a0AfH6SMBx-secret_access", "1//0gSecretRefreshToken-x", "GOCSPX-clientSecret_1",
    "bk_" + "A" * 43, "gAAAAABlZ" + "x" * 40, "Bearer abc.def", "code=4/0Aabc", "state=xyz",
    '"refresh_token": "r-123"', "'client_secret':'s'", "access_token=tok&x=1",
]


@settings(max_examples=300, deadline=None)
@given(
    before=st.text(max_size=40), after=st.text(max_size=40),
    shape=st.sampled_from(_SECRET_SHAPES + [""]),
)
def test_the_quick_screen_of_redaction_never_lets_a_secret_through(before, after, shape):
    """Text the screen lets pass unchanged is text the full set of patterns would not change."""
    from oauth.redaction import _PATTERNS, redact_text

    text = before + shape + after
    every_pattern = text
    for pattern, replacement in _PATTERNS:
        every_pattern = pattern.sub(replacement, every_pattern)
    assert redact_text(text) == every_pattern
