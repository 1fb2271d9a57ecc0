"""Finding 3: brute force on /admin/login/ (and on HTTP Basic for /api/) is locked out by
django-axes, by username and address, one policy for both; the lockout says when to retry."""
from __future__ import annotations

import base64
import datetime as dt

import pytest
from django.conf import settings as django_settings
from django.test import Client

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "operator-pass-123"


def _post_login(client: Client, password: str):
    return client.post(LOGIN, {"username": "operator", "password": password, "next": "/admin/"})


def _basic(password: str):
    token = base64.b64encode(f"operator:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


def test_finding_03_forty_wrong_passwords_then_the_right_one_does_not_log_in(staff_user):
    attacker = Client(REMOTE_ADDR="192.0.2.66")
    statuses = [_post_login(attacker, f"guess-{n}").status_code for n in range(40)]
    limit = django_settings.AXES_FAILURE_LIMIT
    assert statuses[: limit - 1] == [200] * (limit - 1)  # the form again, "wrong password"
    assert set(statuses[limit:]) == {429}
    locked = _post_login(attacker, PASSWORD)
    assert locked.status_code == 429
    assert "_auth_user_id" not in attacker.session
    page = locked.content.decode()
    assert "Too many failed logins" in page and "Try again after" in page and "UTC" in page
    assert int(locked["Retry-After"]) > 0
    # The real operator, elsewhere, is not locked out by the attacker.
    operator = Client(REMOTE_ADDR="198.51.100.7")
    assert _post_login(operator, PASSWORD).status_code == 302
    assert "_auth_user_id" in operator.session


def test_finding_03_the_lockout_ends_after_the_cool_off(staff_user):
    from axes.models import AccessAttempt

    attacker = Client(REMOTE_ADDR="192.0.2.66")
    for n in range(django_settings.AXES_FAILURE_LIMIT):
        _post_login(attacker, f"guess-{n}")
    assert _post_login(attacker, PASSWORD).status_code == 429
    AccessAttempt.objects.update(
        attempt_time=dt.datetime.now(dt.timezone.utc) - django_settings.AXES_COOLOFF_TIME
        - dt.timedelta(seconds=1)
    )
    assert _post_login(attacker, PASSWORD).status_code == 302


def test_finding_03_http_basic_shares_the_policy_and_the_lockout(staff_user):
    attacker = Client(REMOTE_ADDR="192.0.2.66")
    statuses = [
        attacker.get("/api/oauth/status", **_basic(f"guess-{n}")).status_code
        for n in range(django_settings.AXES_FAILURE_LIMIT + 2)
    ]
    assert statuses[0] == 401 and statuses[-1] == 429
    locked = attacker.get("/api/oauth/status", **_basic(PASSWORD))
    assert locked.status_code == 429
    body = locked.json()
    assert body["error"] == "locked_out" and "Try again after" in body["description"]
    assert int(locked["Retry-After"]) > 0
    # the same username from the same address is locked on the admin form too
    assert _post_login(attacker, PASSWORD).status_code == 429


def test_finding_03_a_successful_login_resets_the_count(staff_user):
    operator = Client(REMOTE_ADDR="198.51.100.7")
    for _round in range(3):
        for n in range(django_settings.AXES_FAILURE_LIMIT - 1):
            assert _post_login(operator, f"typo-{n}").status_code == 200
        assert _post_login(operator, PASSWORD).status_code == 302
        operator.logout()
