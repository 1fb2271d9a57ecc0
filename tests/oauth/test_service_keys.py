"""Service keys: created once in clear, stored as a hash, revocable, scoped; the two commands."""
from __future__ import annotations

import datetime as dt
import hashlib
import re
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from oauth.exceptions import ServiceKeyForbidden, ServiceKeyInvalid
from oauth.models import AuditEvent, ServiceKey
from oauth.service_keys import (
    service_key_authenticate,
    service_key_create,
    service_key_revoke,
)
from tests.factories import ROOT

pytestmark = pytest.mark.django_db


def _create(**kwargs):
    kwargs.setdefault("actor", "user:test")
    return service_key_create(**kwargs)


def test_a_key_is_high_entropy_shown_once_and_stored_only_as_its_hash(credential_factory):
    alice = credential_factory(email="alice@example.com")

    key, plaintext = _create(name="gmail-butler", accounts=["alice@example.com"])

    assert plaintext.startswith("bk_") and len(plaintext) >= 46
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert key.key_prefix == plaintext[:11]
    assert list(key.accounts.all()) == [alice]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM oauth_servicekey")
        dump = repr(cursor.fetchall())
        cursor.execute("SELECT detail::text, actor, outcome FROM oauth_auditevent")
        dump += repr(cursor.fetchall())
    assert plaintext not in dump and plaintext[11:] not in dump
    assert plaintext not in repr(key) and plaintext not in str(key)
    assert AuditEvent.objects.filter(action="service_key_created").count() == 1


def test_two_keys_never_collide():
    keys = {_create(name=f"k{n}", all_accounts=True)[1] for n in range(20)}
    assert len(keys) == 20


def test_authenticate_accepts_the_key_and_counts_its_use(credential_factory):
    credential_factory()
    _, plaintext = _create(name="svc", all_accounts=True)

    key = service_key_authenticate(authorization=f"Bearer {plaintext}", address="127.0.0.1")
    service_key_authenticate(authorization=f"bearer {plaintext}", address="127.0.0.1")

    key.refresh_from_db()
    assert key.name == "svc" and key.use_count == 2 and key.last_used_at is not None


@pytest.mark.parametrize("header", ["", "Bearer", "Basic abc", "Bearer bk_not-a-real-key", "Bearer ya29.x"])
def test_authenticate_refuses_a_missing_or_unknown_key(header):
    _create(name="svc", all_accounts=True)
    with pytest.raises(ServiceKeyInvalid):
        service_key_authenticate(authorization=header, address="127.0.0.1")


def test_a_revoked_or_expired_key_is_refused_and_says_so():
    _, revoked = _create(name="old", all_accounts=True)
    _, expired = _create(
        name="temp", all_accounts=True,
        expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
    )
    service_key_revoke(name="old", actor="user:test")

    with pytest.raises(ServiceKeyInvalid, match="was revoked"):
        service_key_authenticate(authorization=f"Bearer {revoked}", address="127.0.0.1")
    with pytest.raises(ServiceKeyInvalid, match="expired"):
        service_key_authenticate(authorization=f"Bearer {expired}", address="127.0.0.1")
    assert AuditEvent.objects.filter(action="service_key_revoked", actor="user:test").count() == 1


def test_allowed_networks_limit_where_a_key_works():
    _, plaintext = _create(name="lan", all_accounts=True, allowed_networks="10.0.0.0/8, 192.168.1.7")

    assert service_key_authenticate(authorization=f"Bearer {plaintext}", address="10.1.2.3")
    assert service_key_authenticate(authorization=f"Bearer {plaintext}", address="192.168.1.7")
    with pytest.raises(ServiceKeyForbidden) as caught:
        service_key_authenticate(authorization=f"Bearer {plaintext}", address="127.0.0.1")
    assert caught.value.error == "address_not_allowed"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"accounts": ["nobody@example.com"]}, "No stored Google credential for account 'nobody@example.com'"),
        ({"all_accounts": True, "scopes": ["gmail.nonsense"]}, "Unknown scope"),
        ({"all_accounts": True, "allowed_networks": "10.0.0.300"}, "'10.0.0.300' is not an IP address"),
        ({}, "Name at least one account"),
    ],
)
def test_bad_input_is_refused_with_what_to_fix(credential_factory, kwargs, message):
    credential_factory(email="alice@example.com")
    with pytest.raises(ValueError, match=re.escape(message)):
        _create(name="svc", **kwargs)
    assert not ServiceKey.objects.exists()


# --- the commands -----------------------------------------------------------------------------------
def test_service_key_create_prints_the_key_alone_then_it_works(credential_factory, capsys):
    credential_factory(email="alice@example.com")

    call_command("service_key_create", "gmail-butler", "--account", "alice@example.com",
                 "--scopes", "gmail.readonly", "--expires-in-days", "30")

    out, err = capsys.readouterr()
    plaintext = out.strip()
    assert plaintext.startswith("bk_") and "\n" not in plaintext
    assert "will not be shown again" in err and "service_key_revoke gmail-butler" in err
    key = service_key_authenticate(authorization=f"Bearer {plaintext}", address="127.0.0.1")
    assert [s.short_name for s in key.scopes.all()] == ["gmail.readonly"]
    assert key.expires_at is not None and key.created_by == "process:service_key_create"


@pytest.mark.parametrize(
    "args, message",
    [
        (["svc"], "--account EMAIL) or pass --all-accounts"),
        (["svc", "--account", "bob@example.com"], "No stored Google credential for account 'bob@example.com'"),
        (["bad name!", "--all-accounts"], "not a usable key name"),
        (["svc", "--all-accounts", "--expires-in-days", "0"], "positive number of days"),
        (["svc", "--all-accounts", "--allow-network", "nowhere"], "'nowhere' is not an IP address"),
    ],
)
def test_service_key_create_refuses_bad_input(credential_factory, args, message):
    credential_factory(email="alice@example.com")
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("service_key_create", *args)


def test_service_key_create_takes_several_accounts_after_one_flag_or_repeated(credential_factory, capsys):
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        credential_factory(email=email)

    call_command("service_key_create", "svc", "--account", "a@example.com", "b@example.com",
                 "--account", "c@example.com")

    key = ServiceKey.objects.get(name="svc")
    assert sorted(c.email for c in key.accounts.all()) == ["a@example.com", "b@example.com", "c@example.com"]


def test_service_key_create_refuses_an_existing_name():
    _create(name="svc", all_accounts=True)
    with pytest.raises(CommandError, match="exists already"):
        call_command("service_key_create", "svc", "--all-accounts")


def test_service_key_revoke_revokes_once_and_names_unknown_keys(capsys):
    _, plaintext = _create(name="svc", all_accounts=True)

    call_command("service_key_revoke", "svc")
    call_command("service_key_revoke", "svc")
    out = capsys.readouterr().out

    assert "Revoked service key 'svc'" in out and "was already revoked" in out
    with pytest.raises(ServiceKeyInvalid):
        service_key_authenticate(authorization=f"Bearer {plaintext}", address="127.0.0.1")
    with pytest.raises(CommandError, match=re.escape("No service key named 'nope'. Existing keys: svc.")):
        call_command("service_key_revoke", "nope")


@pytest.mark.django_db(transaction=True)
def test_the_commands_as_real_processes_exit_codes(credential_factory, subprocess_env):
    credential_factory(email="alice@example.com")
    manage = [sys.executable, str(ROOT / "manage.py")]

    created = subprocess.run([*manage, "service_key_create", "svc", "--account", "alice@example.com"],
                             env=subprocess_env, capture_output=True, text=True, timeout=60)
    unknown = subprocess.run([*manage, "service_key_revoke", "nope"],
                             env=subprocess_env, capture_output=True, text=True, timeout=60)
    revoked = subprocess.run([*manage, "service_key_revoke", "svc"],
                             env=subprocess_env, capture_output=True, text=True, timeout=60)

    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().startswith("bk_")
    assert created.stdout.strip() not in created.stderr
    assert unknown.returncode == 1 and "No service key named 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    assert revoked.returncode == 0 and ServiceKey.objects.get(name="svc").revoked_at is not None


# --- the admin --------------------------------------------------------------------------------------
def test_the_admin_shows_a_new_key_once_and_never_again(staff_client, credential_factory):
    alice = credential_factory(email="alice@example.com")

    created = staff_client.post("/admin/oauth/servicekey/add/", {
        "name": "gmail-butler", "accounts": [alice.pk], "allowed_networks": "10.0.0.0/8",
    })

    assert created.status_code == 200, created.content[:2000]
    page = created.content.decode()
    key = ServiceKey.objects.get(name="gmail-butler")
    plaintext = page.split('id="service-key"')[0].rsplit('value="', 1)[1].split('"')[0]
    assert plaintext.startswith("bk_") and key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert "will not be shown again" in page and "no-store" in created["Cache-Control"]
    assert key.created_by == "user:operator"
    assert service_key_authenticate(authorization=f"Bearer {plaintext}", address="10.0.0.1")
    later = [
        staff_client.get("/admin/oauth/servicekey/").content.decode(),
        staff_client.get(f"/admin/oauth/servicekey/{key.pk}/change/").content.decode(),
        staff_client.get("/admin/oauth/auditevent/").content.decode(),
    ]
    for html in later:
        assert plaintext not in html and plaintext[11:] not in html
    assert key.key_prefix in later[0]  # recognisable by its first characters
    assert AuditEvent.objects.filter(action="service_key_created", actor="user:operator").exists()


def test_the_admin_refuses_a_key_without_accounts_or_with_a_bad_network(staff_client):
    response = staff_client.post("/admin/oauth/servicekey/add/", {"name": "svc", "allowed_networks": "nowhere"})
    page = response.content.decode()
    assert response.status_code == 200
    assert "Choose the accounts the key may use" in page and "is not an IP address" in page
    assert not ServiceKey.objects.exists()


def test_the_admin_action_revokes_keys(staff_client):
    _, plaintext = _create(name="svc", all_accounts=True)
    key = ServiceKey.objects.get(name="svc")

    response = staff_client.post("/admin/oauth/servicekey/", {
        "action": "revoke_keys", "_selected_action": [key.pk],
    }, follow=True)

    assert "Revoked service key svc" in response.content.decode()
    with pytest.raises(ServiceKeyInvalid):
        service_key_authenticate(authorization=f"Bearer {plaintext}", address="127.0.0.1")
