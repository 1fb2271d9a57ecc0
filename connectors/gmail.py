"""The Gmail poller: records each new INBOX message once, across restarts and replays.

First poll of a mailbox (its *baseline*): read the profile's ``historyId`` first, then ingest the
GMAIL_BASELINE_MESSAGES most recent INBOX messages, and keep the historyId as the cursor. Every
later poll asks ``history.list`` for ``messageAdded`` records after the cursor (following pages),
records the INBOX ones not seen yet, and moves the cursor on only after all of them are stored, so
a crash replays a page rather than losing one. When Google no longer knows the cursor (404: history
is kept about a week) the poll re-lists at most GMAIL_RELIST_LIMIT recent INBOX messages and
re-baselines. A unique constraint per mailbox and message id makes every replay harmless.

Nothing here holds a database transaction across a call to Google: pollers running at once (the
beat task and a long-lived ``run_gmail_connector``) only ever both skip what the other stored.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from oauth.exceptions import CredentialError
from oauth.models import CredentialState, GoogleCredential
from oauth.selectors import env_credential_present

from .app_settings import connector_settings
from .exceptions import GmailCredentialError, GmailRequestError, GmailTokenRefreshError
from .google_api import GoogleApiClient, path_segment
from .models import GmailMailbox, GmailMessage

logger = logging.getLogger("connectors.gmail")

INBOX = "INBOX"
GMAIL_READ_SCOPE = "gmail.readonly"
#: Follow at most this many pages of history in one poll; the rest comes next poll.
MAX_HISTORY_PAGES = 50
HISTORY_PAGE_SIZE = 100


class GmailClient(GoogleApiClient):
    """The Gmail API calls the poller needs."""

    log_name = "Gmail"
    error_name = "Gmail"
    credential_error = GmailCredentialError
    token_refresh_error = GmailTokenRefreshError
    request_error = GmailRequestError
    logger = logging.getLogger("connectors.gmail")
    success_level = logging.DEBUG  # a poll a minute: success is not news

    def profile(self) -> dict:
        return self.request("GET", "/gmail/v1/users/me/profile") or {}

    def messages_list(self, *, label: str, limit: int) -> list[dict]:
        """The ``limit`` most recent message stubs (id, threadId) carrying ``label``."""
        found: list[dict] = []
        page_token = None
        while len(found) < limit:
            params = {"labelIds": label, "maxResults": min(100, limit - len(found))}
            if page_token:
                params["pageToken"] = page_token
            body = self.request("GET", "/gmail/v1/users/me/messages", params=params) or {}
            found.extend(body.get("messages") or [])
            page_token = body.get("nextPageToken")
            if not page_token:
                break
        return found[:limit]

    def message_get(self, *, message_id: str) -> dict | None:
        """A message's metadata (From, Subject), or None when it is gone since it was listed."""
        try:
            return self.request(
                "GET",
                f"/gmail/v1/users/me/messages/{path_segment(message_id)}",
                params=[("format", "metadata"), ("metadataHeaders", "From"), ("metadataHeaders", "Subject")],
            )
        except GmailRequestError as exc:
            if exc.status_code == 404:
                return None
            raise

    def history_page(self, *, start_history_id: str, page_token: str | None) -> dict:
        params = {
            "startHistoryId": start_history_id,
            "historyTypes": "messageAdded",
            "maxResults": HISTORY_PAGE_SIZE,
        }
        if page_token:
            params["pageToken"] = page_token
        return self.request("GET", "/gmail/v1/users/me/history", params=params) or {}


@dataclass(frozen=True)
class PollResult:
    """One poll of one mailbox."""

    email: str
    #: 'baseline' (first poll), 'history' (cursor followed) or 'relist' (stale cursor)
    mode: str
    ingested: int
    history_id: str


def _header(message: dict, name: str) -> str:
    for header in (message.get("payload") or {}).get("headers") or []:
        if str(header.get("name", "")).lower() == name.lower():
            return str(header.get("value") or "")
    return ""


def _received_at(message: dict) -> dt.datetime | None:
    try:
        millis = int(message.get("internalDate"))
    except (TypeError, ValueError):
        return None
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.timezone.utc)


def _record(mailbox: GmailMailbox, message: dict) -> bool:
    """Store one message; False when it was already recorded (a replay or a parallel poller)."""
    try:
        with transaction.atomic():
            _, created = GmailMessage.objects.get_or_create(
                mailbox=mailbox,
                message_id=str(message["id"]),
                defaults={
                    "thread_id": str(message.get("threadId") or ""),
                    "sender": _header(message, "From")[:500],
                    "subject": _header(message, "Subject")[:1000],
                    "snippet": str(message.get("snippet") or ""),
                    "received_at": _received_at(message),
                    "labels": list(message.get("labelIds") or []),
                },
            )
    except IntegrityError:  # stored by another poller between our read and write
        return False
    return created


def _ingest(client: GmailClient, mailbox: GmailMailbox, message_ids: Iterable[str]) -> int:
    """Fetch and store the messages not recorded yet, oldest first; returns how many were new."""
    wanted = list(dict.fromkeys(str(i) for i in message_ids))
    known = set(
        GmailMessage.objects.filter(mailbox=mailbox, message_id__in=wanted).values_list(
            "message_id", flat=True
        )
    )
    ingested = 0
    for message_id in wanted:
        if message_id in known:
            continue
        message = client.message_get(message_id=message_id)
        if message is None:
            continue
        if _record(mailbox, message):
            ingested += 1
            logger.info(
                "Recorded Gmail message %s for %s", message_id, mailbox.email,
            )
    return ingested


def _relist(client: GmailClient, mailbox: GmailMailbox, *, limit: int) -> int:
    stubs = client.messages_list(label=INBOX, limit=limit)
    # listings are newest first; record oldest first so received order is kept
    return _ingest(client, mailbox, reversed([s["id"] for s in stubs]))


def _follow_history(client: GmailClient, mailbox: GmailMailbox) -> tuple[int, str]:
    """Ingest what history says was added after the cursor; returns (ingested, new cursor)."""
    cursor = mailbox.history_id
    page_token = None
    ingested = 0
    for _ in range(MAX_HISTORY_PAGES):
        page = client.history_page(start_history_id=mailbox.history_id, page_token=page_token)
        added = []
        last_seen = cursor
        for record in page.get("history") or []:
            last_seen = str(record.get("id") or last_seen)
            for item in record.get("messagesAdded") or []:
                message = item.get("message") or {}
                labels = message.get("labelIds")
                if message.get("id") and (labels is None or INBOX in labels):
                    added.append(message["id"])
        ingested += _ingest(client, mailbox, added)
        page_token = page.get("nextPageToken")
        if not page_token:
            return ingested, str(page.get("historyId") or last_seen)
        cursor = last_seen
    # Too much history for one poll: resume after the last record stored.
    return ingested, cursor


def gmail_poll(
    *, account: str | None = None, actor: str = "process:gmail-connector",
    token_source: Callable[..., str] | None = None,
) -> PollResult:
    """Poll one mailbox once (``account`` email, or the primary credential).

    ``token_source`` replaces the token service (the broker mode, connectors/broker_mode.py).
    Raises :class:`GmailCredentialError`, :class:`GmailTokenRefreshError` (``reconsent_required``
    for an expired grant) or :class:`GmailRequestError`.
    """
    client = GmailClient(account=account, actor=actor, token_source=token_source)
    profile = client.profile()
    email = str(profile.get("emailAddress") or "").strip().lower()
    if not email:
        raise GmailRequestError("Gmail API request failed (200): the profile has no emailAddress", status_code=200)
    mailbox, _ = GmailMailbox.objects.get_or_create(email=email)
    now = timezone.now()
    mailbox.credential_key = account or "primary"

    if not mailbox.history_id:
        # The cursor is read before the listing, so nothing arriving meanwhile is skipped.
        ingested = _relist(client, mailbox, limit=int(connector_settings.GMAIL_BASELINE_MESSAGES))
        mode, cursor = "baseline", str(profile.get("historyId") or "")
        mailbox.baselined_at = now
    else:
        try:
            ingested, cursor = _follow_history(client, mailbox)
            mode = "history"
        except GmailRequestError as exc:
            if exc.status_code != 404:
                raise
            logger.warning(
                "Gmail no longer knows history cursor %s of %s; re-listing up to %s messages",
                mailbox.history_id, email, connector_settings.GMAIL_RELIST_LIMIT,
            )
            ingested = _relist(client, mailbox, limit=int(connector_settings.GMAIL_RELIST_LIMIT))
            mode, cursor = "relist", str(profile.get("historyId") or "")
            mailbox.last_relisted_at = now

    mailbox.history_id = cursor
    mailbox.last_polled_at = now
    mailbox.save()
    logger.info("Polled Gmail for %s: %d new message(s) (%s)", email, ingested, mode)
    return PollResult(email=email, mode=mode, ingested=ingested, history_id=cursor)


def gmail_accounts() -> list[str | None]:
    """The accounts to poll: every stored credential able to read Gmail and not dead; with no
    stored credential at all, ``[None]`` when a deprecated env credential is set, else ``[]``."""
    stored = GoogleCredential.objects.all()
    if not stored.exists():
        return [None] if env_credential_present() else []
    usable = [
        credential
        for credential in stored.exclude(
            state__in=[CredentialState.EXPIRED, CredentialState.MISCONFIGURED]
        )
        .filter(revoked_at__isnull=True)
        .prefetch_related("granted_scopes")
        .primary_first()
        # gmail.readonly is implied by gmail.modify (oauth.scopes knows the hierarchy)
        if not credential.missing_scopes(required=[GMAIL_READ_SCOPE])
    ]
    return [c.email or c.credential_key for c in usable]


def gmail_poll_all(*, actor: str = "process:gmail-poll") -> dict[str, str]:
    """Poll every account once; one account's failure never stops the others.

    Returns ``{account: outcome}`` where outcome is e.g. ``"3 new (history)"`` or the error.
    """
    outcomes: dict[str, str] = {}
    for account in gmail_accounts():
        label = account or "primary"
        try:
            result = gmail_poll(account=account, actor=actor)
        except (GmailCredentialError, GmailTokenRefreshError, GmailRequestError, CredentialError) as exc:
            logger.error("Gmail poll of %s failed: %s", label, exc)
            outcomes[label] = f"failed: {exc}"
            continue
        outcomes[label] = f"{result.ingested} new ({result.mode})"
    return outcomes
