"""manage.py oauth_status [--json]: the staff status report on the server's console."""
from __future__ import annotations

import io
import json

from django.core.management import call_command

from tests.factories import ACCESS_TOKEN, CLIENT_ID, REFRESH_TOKEN


def _run(*args) -> str:
    out = io.StringIO()
    call_command("oauth_status", *args, stdout=out)
    return out.getvalue()


def test_json_prints_the_staff_payload(db, settings, credential_factory):
    settings.GOOGLE_OAUTH_CLIENT_ID = CLIENT_ID
    credential_factory(email="alice@example.com")
    credential_factory(email="bob@example.com", scopes=("gmail.modify",))
    payload = json.loads(_run("--json"))
    assert payload["google"]["state"] == "connected" and payload["google"]["email"] == "alice@example.com"
    assert [a["state"] for a in payload["accounts"]] == ["connected", "missing_scope"]


def test_table_shows_each_account_and_the_remediation(db, settings, credential_factory):
    settings.GOOGLE_OAUTH_CLIENT_ID = CLIENT_ID
    credential_factory(email="alice@example.com")
    credential_factory(email="bob@example.com", scopes=("gmail.modify",))
    text = _run()
    assert text.splitlines()[0].split()[:3] == ["ACCOUNT", "KEY", "STATE"]
    assert "alice@example.com  google " in text
    assert "bob@example.com: This grant lacks calendar" in text
    assert REFRESH_TOKEN not in text and ACCESS_TOKEN not in text


def test_nothing_connected_says_what_to_do(db, settings):
    settings.GOOGLE_OAUTH_CLIENT_ID = CLIENT_ID
    text = _run()
    assert text.startswith("google: not_configured") and "Connect a Google account" in text
