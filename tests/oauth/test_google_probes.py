"""oauth/google/probes.py: one cheap call per granted API, outcomes a heartbeat can act on."""
from __future__ import annotations

import pytest

from oauth.google.probes import credential_probe
from oauth.tokens import credential_refresh

pytestmark = pytest.mark.django_db


@pytest.fixture
def granted(fake_google, credential_factory):
    def make(scopes, token_scopes=None):
        refresh_token = fake_google.issue_grant("alice@example.com", scopes=list(token_scopes or scopes))
        credential = credential_factory(
            email="alice@example.com", refresh_token=refresh_token, scopes=tuple(scopes)
        )
        token = credential_refresh(credential=credential, actor="process:test")
        return credential, token.value

    return make


def test_both_apis_answer_ok_with_a_full_grant(fake_google, granted):
    credential, token = granted(["openid", "email", "gmail.modify", "calendar"])

    assert credential_probe(granted=credential.granted_scope_list(), access_token=token) == {
        "calendar": "ok", "gmail": "ok"
    }
    paths = [path for _, path in fake_google.stats["api_calls"]]
    assert any(p.startswith("/calendar/v3/users/me/calendarList") for p in paths)
    assert any(p.startswith("/gmail/v1/users/me/profile") for p in paths)


def test_an_api_not_granted_is_not_called(fake_google, granted):
    credential, token = granted(["openid", "email", "gmail.readonly"])

    assert credential_probe(granted=credential.granted_scope_list(), access_token=token) == {"gmail": "ok"}
    assert not any("/calendar/" in path for _, path in fake_google.stats["api_calls"])


def test_a_scope_recorded_but_not_really_granted_is_missing_scope(fake_google, granted):
    from oauth.services import credential_set_scopes

    # Google's grant lacks calendar (so its token gets 403 there) while we still record it.
    credential, token = granted(
        ["openid", "email", "gmail.modify", "calendar"], token_scopes=["openid", "email", "gmail.modify"]
    )
    credential_set_scopes(credential=credential, scopes=["openid", "email", "gmail.modify", "calendar"])

    assert credential_probe(granted=credential.granted_scope_list(), access_token=token) == {
        "calendar": "missing_scope", "gmail": "ok"
    }


def test_a_refused_token_and_an_outage_are_told_apart(fake_google, granted):
    credential, token = granted(["openid", "email", "gmail.modify", "calendar"])
    fake_google.fail_api(1, status=503, prefix="/gmail")

    assert credential_probe(granted=credential.granted_scope_list(), access_token="ya29.not-a-token") == {
        "calendar": "unauthorized", "gmail": "error"
    }
