"""manage.py oauth_risc_register against the fake Google's RISC API (a real service-account key,
a real receiver: the running app)."""
from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from oauth.google import risc as google_risc

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def key_file(fake_google, tmp_path, settings):
    google_risc.cache_clear()
    path = fake_google.risc.service_account_file(tmp_path / "risc-admin.json")
    settings.GOOGLE_RISC_SERVICE_ACCOUNT_FILE = str(path)
    return path


def test_register_verify_status_disable(live_server, fake_google, key_file, capsys):
    receiver = live_server.url + "/api/oauth/google/risc"

    call_command("oauth_risc_register", "--url", receiver)
    out = capsys.readouterr().out
    assert f"Registered {receiver}" in out and "Stream status: enabled" in out
    assert fake_google.risc.stream["delivery"]["url"] == receiver
    assert "tokens-revoked" in out and "Verified: no" in out

    call_command("oauth_risc_register", "--verify", "--wait", "10")
    assert "Verification event received" in capsys.readouterr().out

    call_command("oauth_risc_register", "--status")
    assert "Verified: yes" in capsys.readouterr().out

    call_command("oauth_risc_register", "--disable")
    assert fake_google.risc.stream["status"] == "disabled"


def test_without_a_key_file_it_names_the_variable(fake_google, settings):
    settings.GOOGLE_RISC_SERVICE_ACCOUNT_FILE = ""
    with pytest.raises(CommandError, match="GOOGLE_RISC_SERVICE_ACCOUNT_FILE"):
        call_command("oauth_risc_register", "--status")


def test_a_key_google_does_not_know_is_refused_with_advice(fake_google, tmp_path, settings):
    google_risc.cache_clear()
    other = fake_google.risc.service_account_file(tmp_path / "key.json")
    fake_google.risc.service_accounts.clear()  # the key was deleted in Google Cloud
    settings.GOOGLE_RISC_SERVICE_ACCOUNT_FILE = str(other)
    with pytest.raises(CommandError, match="HTTP 401"):
        call_command("oauth_risc_register", "--status")


def test_a_file_that_is_not_a_key_is_refused(fake_google, tmp_path, settings):
    bad = tmp_path / "notes.json"
    bad.write_text("{}")
    settings.GOOGLE_RISC_SERVICE_ACCOUNT_FILE = str(bad)
    with pytest.raises(CommandError, match="not a service-account JSON key"):
        call_command("oauth_risc_register", "--status")
