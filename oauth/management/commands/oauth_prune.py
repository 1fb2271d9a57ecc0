"""``manage.py oauth_prune [--older-than DAYS] [--dry-run]``: the retention sweep, run now."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from oauth.app_settings import oauth_settings
from oauth.retention import records_prune


class Command(BaseCommand):
    help = (
        "Deletes audit events older than OAUTH_AUDIT_RETENTION_DAYS (default 400) and heartbeat "
        "and action runs older than OAUTH_RUN_RETENTION_DAYS (default 90), in batches, and "
        "prints how many of each. --older-than DAYS uses one age for all of them. A retention of "
        "0 keeps that kind forever. Beat runs the same sweep daily (oauth-prune)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than", type=int, metavar="DAYS", default=None,
            help="Delete records older than DAYS days (instead of the configured retentions).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Only count what would be deleted."
        )

    def handle(self, *args, older_than: int | None, dry_run: bool, **options):
        if older_than is not None and older_than < 1:
            raise CommandError(
                "--older-than must be at least 1 day (to keep records forever, set "
                "OAUTH_AUDIT_RETENTION_DAYS / OAUTH_RUN_RETENTION_DAYS to 0 and skip this command)."
            )
        result = records_prune(audit_days=older_than, run_days=older_than, dry_run=dry_run)
        verb = "Would delete" if dry_run else "Deleted"
        for kind, label, days in (
            ("audit_events", "audit events", older_than or oauth_settings.OAUTH_AUDIT_RETENTION_DAYS),
            ("heartbeat_runs", "heartbeat runs", older_than or oauth_settings.OAUTH_RUN_RETENTION_DAYS),
            ("action_runs", "action runs", older_than or oauth_settings.OAUTH_RUN_RETENTION_DAYS),
        ):
            if result.cutoffs[kind] is None:
                self.stdout.write(f"Kept all {label} (retention 0 = forever).")
            else:
                self.stdout.write(f"{verb} {result.counts[kind]} {label} older than {days} days.")
