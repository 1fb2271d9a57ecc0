"""What the Gmail connector keeps: each mailbox's history cursor and the messages it recorded."""
from __future__ import annotations

from django.db import models


class GmailMailbox(models.Model):
    """One Gmail mailbox (by its address) and where its history polling has got to.

    ``history_id`` is Gmail's cursor: empty until the first poll baselines the mailbox on the
    profile's historyId; every later poll asks ``history.list`` for what came after it.
    """

    email = models.EmailField(unique=True)
    credential_key = models.CharField(
        max_length=200, blank=True, default="",
        help_text="The credential it was last polled with (a key of google_oauth_credentials, or env:VAR).",
    )
    history_id = models.CharField(max_length=32, blank=True, default="")
    baselined_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_relisted_at = models.DateTimeField(
        null=True, blank=True, help_text="Last time a stale cursor forced a bounded re-list."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Gmail mailbox"

    def __str__(self) -> str:
        return self.email


class GmailMessage(models.Model):
    """A message the connector recorded: once per mailbox, whatever restarts or replays happen."""

    mailbox = models.ForeignKey(GmailMailbox, on_delete=models.CASCADE, related_name="messages")
    message_id = models.CharField(max_length=64)
    thread_id = models.CharField(max_length=64, blank=True, default="")
    sender = models.CharField(max_length=500, blank=True, default="")
    subject = models.CharField(max_length=1000, blank=True, default="")
    snippet = models.TextField(blank=True, default="")
    received_at = models.DateTimeField(null=True, blank=True)
    labels = models.JSONField(default=list, blank=True)
    ingested_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["mailbox", "message_id"], name="unique_gmail_message_per_mailbox"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject or '(no subject)'} from {self.sender}"
