"""What an operator does to an account from the dashboard or the admin: Refresh now, Test, Revoke
at Google, Disconnect; and the background runs that carry them out.

A request never waits on Google: :func:`action_run_start` records an :class:`ActionRun` with one
queued :class:`ActionItem` per account and sends ``oauth.tasks.action_run_execute``; a worker
calls :func:`action_run_execute`, which moves each item to running, then to succeeded or failed
with a one-line result, so the pages can show the progress (and the result stays afterwards).

Each action calls the same service the commands use (``credential_refresh``, the API probe,
``credential_revoke``); messages are built from the account, Google's error code and our own
words, never from a token.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from . import scopes as scope_catalogue
from .exceptions import OAuthError
from .models import (
    ActionItem,
    ActionItemStatus,
    ActionKind,
    ActionRun,
    AuditAction,
    GoogleCredential,
)
from .services import audit_record

logger = logging.getLogger("oauth.account_actions")

#: What each destructive action does, in the words the confirmation pages use.
CONSEQUENCES = {
    ActionKind.REVOKE: (
        "Google is asked to revoke the grant: its refresh and access tokens stop working at "
        "once, for every butler using them. The account stays listed as revoked until you "
        "reconnect it."
    ),
    ActionKind.DISCONNECT: (
        "Google is asked to revoke the grant (its tokens stop working at once), then the account "
        "is deleted here. The audit log keeps a record of who did it. Connect the account again "
        "to use it."
    ),
}
DESTRUCTIVE = frozenset(CONSEQUENCES)


def _now():
    return timezone.now()


@dataclass(frozen=True)
class ActionOutcome:
    ok: bool
    message: str


# --- the actions on one account --------------------------------------------------------------
def credential_refresh_now(*, credential: GoogleCredential, actor: str) -> ActionOutcome:
    """A real refresh grant at Google (what the heartbeat does)."""
    from .tokens import credential_refresh

    try:
        token = credential_refresh(credential=credential, actor=actor)
    except OAuthError as exc:
        return ActionOutcome(False, f"refresh failed ({exc.error}): {exc.description}")
    return ActionOutcome(
        True, f"refreshed; the new access token is valid for {token.expires_in()} seconds"
    )


def credential_test(*, credential: GoogleCredential, actor: str) -> ActionOutcome:
    """Get a token and touch each granted API; a grant lacking a required scope fails the test,
    even when every API it does reach answers."""
    from .google.probes import credential_probe
    from .heartbeat import probe_results_store
    from .tokens import access_token_get

    try:
        token = access_token_get(account=credential.email or credential.credential_key, actor=actor)
    except OAuthError as exc:
        return ActionOutcome(False, f"no access token ({exc.error}): {exc.description}")
    results = credential_probe(granted=credential.granted_scope_list(), access_token=token.value)
    probe_results_store(credential=credential, results=results, actor=actor)
    missing = credential.missing_scopes()
    problems = [f"{api}: {outcome.replace('_', ' ')}" for api, outcome in sorted(results.items())
                if outcome != "ok"]
    if missing:
        names = ", ".join(scope_catalogue.short_name(uri) for uri in missing)
        problems.insert(0, f"missing required scope {names} (reconnect and tick every permission)")
    reached = ", ".join(f"{api}: ok" for api, outcome in sorted(results.items()) if outcome == "ok")
    if problems:
        return ActionOutcome(False, "; ".join(problems) + (f" ({reached})" if reached else ""))
    if not results:
        return ActionOutcome(False, "no Gmail or Calendar scope granted, nothing could be tested")
    return ActionOutcome(True, reached)


def credential_revoke_at_google(*, credential: GoogleCredential, actor: str) -> ActionOutcome:
    from .revocation import credential_revoke

    try:
        result = credential_revoke(credential=credential, actor=actor)
    except OAuthError as exc:
        return ActionOutcome(False, f"not revoked ({exc.error}): {exc.description}")
    return ActionOutcome(
        True, f"revoked at Google ({result.outcome.replace('_', ' ')}); reconnect it to use it again"
    )


def credential_disconnect(*, credential: GoogleCredential, actor: str) -> ActionOutcome:
    """Revoke the grant at Google, then delete the account here, audited with ``actor``.

    When Google does not confirm the revocation nothing is deleted (a deleted row would leave a
    live grant behind with no way to revoke it from here); the operator retries.
    """
    from .revocation import credential_revoke

    try:
        result = credential_revoke(credential=credential, actor=actor)
    except OAuthError as exc:
        return ActionOutcome(
            False, f"not disconnected: Google did not confirm the revocation ({exc.error}). "
            "Nothing was deleted; try again."
        )
    account = str(credential)
    with transaction.atomic():
        audit_record(
            action=AuditAction.DISCONNECTED,
            actor=actor,
            credential=credential,
            outcome=result.outcome,
            detail={"revoke_uri_outcome": result.outcome, "deleted": True},
        )
        credential.delete()
    logger.warning("Disconnected Google account %s (%s) by %s", account, result.outcome, actor)
    return ActionOutcome(
        True, f"revoked at Google ({result.outcome.replace('_', ' ')}) and deleted here"
    )


ACTIONS = {
    ActionKind.REFRESH: credential_refresh_now,
    ActionKind.TEST: credential_test,
    ActionKind.REVOKE: credential_revoke_at_google,
    ActionKind.DISCONNECT: credential_disconnect,
}


# --- background runs -------------------------------------------------------------------------
def action_run_start(
    *, action: str, credentials: Iterable[GoogleCredential], actor: str
) -> ActionRun:
    """Record a run with one queued item per credential and hand it to a Celery worker.

    The task is sent once the rows are committed, so the worker always finds them.
    """
    from .tasks import action_run_execute as task

    action = ActionKind(action)
    with transaction.atomic():
        run = ActionRun.objects.create(action=action, actor=actor, created_at=_now())
        ActionItem.objects.bulk_create(
            ActionItem(run=run, credential=credential, account=str(credential))
            for credential in sorted(credentials, key=lambda c: c.credential_key)
        )
        transaction.on_commit(lambda: task.apply_async(kwargs={"run_id": run.pk}))
    return run


def action_run_execute(*, run_id: int) -> ActionRun:
    """Carry out each still-queued item of a run (a redelivered task skips finished ones)."""
    run = ActionRun.objects.get(pk=run_id)
    perform = ACTIONS[ActionKind(run.action)]
    for item in run.items.filter(status=ActionItemStatus.QUEUED).order_by("pk"):
        item.status = ActionItemStatus.RUNNING
        item.save(update_fields=["status", "updated_at"])
        credential = GoogleCredential.objects.filter(pk=item.credential_id).first()
        if credential is None:
            outcome = ActionOutcome(False, "the account no longer exists (deleted meanwhile)")
        else:
            try:
                outcome = perform(credential=credential, actor=run.actor)
            except Exception:  # one account's bug must not leave the others queued forever
                logger.exception("Action %s failed on %s", run.action, item.account)
                outcome = ActionOutcome(False, "failed unexpectedly; the server log has details")
        item.status = ActionItemStatus.SUCCEEDED if outcome.ok else ActionItemStatus.FAILED
        item.message = outcome.message[:1000]
        item.save(update_fields=["status", "message", "updated_at"])
    run.finished_at = _now()
    run.save(update_fields=["finished_at"])
    return run


def action_runs_recent(*, limit: int = 5) -> list[ActionRun]:
    """The latest runs with their items (two queries), newest first, for the pages to show."""
    return list(ActionRun.objects.prefetch_related("items").order_by("-created_at", "-pk")[:limit])
