"""oauth/account_actions.py: a background run carries out each account once and always finishes."""
from __future__ import annotations

import pytest

from oauth.account_actions import action_run_execute
from oauth.models import ActionItem, ActionItemStatus, ActionRun, GoogleCredential

pytestmark = pytest.mark.django_db


def _run(action: str, *credentials) -> ActionRun:
    from django.utils import timezone

    run = ActionRun.objects.create(action=action, actor="user:operator", created_at=timezone.now())
    for credential in credentials:
        ActionItem.objects.create(run=run, credential=credential, account=str(credential))
    return run


def test_a_redelivered_run_skips_the_accounts_already_done(fake_google, credential_factory):
    alice = credential_factory(email="alice@example.com", refresh_token=fake_google.issue_grant("alice@example.com"))
    bob = credential_factory(email="bob@example.com", refresh_token=fake_google.issue_grant("bob@example.com"))
    run = _run("refresh", alice, bob)
    run.items.filter(credential=alice).update(status=ActionItemStatus.SUCCEEDED, message="refreshed")

    action_run_execute(run_id=run.pk)

    assert fake_google.refreshes_for("alice@example.com") == 0
    assert fake_google.refreshes_for("bob@example.com") == 1
    run.refresh_from_db()
    assert run.is_finished
    assert set(run.items.values_list("status", flat=True)) == {"succeeded"}


def test_an_account_deleted_meanwhile_fails_on_its_own(fake_google, credential_factory):
    alice = credential_factory(
        email="alice@example.com", refresh_token=fake_google.issue_grant("alice@example.com"),
        access_token=None, expires_in=None,
    )
    gone = credential_factory(email="gone@example.com")
    run = _run("test", gone, alice)
    GoogleCredential.objects.filter(pk=gone.pk).delete()

    action_run_execute(run_id=run.pk)

    items = {i.account: i for i in ActionRun.objects.get(pk=run.pk).items.all()}
    assert items["gone@example.com"].status == "failed"
    assert "no longer exists" in items["gone@example.com"].message
    assert items["alice@example.com"].status == "succeeded"


def test_an_unexpected_error_fails_that_account_and_the_run_still_finishes(
    fake_google, credential_factory, monkeypatch
):
    from oauth import account_actions

    alice = credential_factory(email="alice@example.com", refresh_token=fake_google.issue_grant("alice@example.com"))

    def broken(**kwargs):
        raise RuntimeError("bug")

    monkeypatch.setitem(account_actions.ACTIONS, "refresh", broken)
    run = _run("refresh", alice)
    action_run_execute(run_id=run.pk)

    item = ActionRun.objects.get(pk=run.pk).items.get()
    assert item.status == "failed" and "server log" in item.message and "bug" not in item.message
    assert ActionRun.objects.get(pk=run.pk).is_finished
