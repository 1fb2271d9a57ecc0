"""``manage.py oauth_heartbeat [--all | --account EMAIL]``: run the heartbeat sweep now, in-process.

The same selection and per-credential step as the Celery beat sweep (see ``oauth/heartbeat.py``),
with at most ``--concurrency`` (OAUTH_HEARTBEAT_CONCURRENCY) refreshes in flight at once.
"""
from __future__ import annotations

import gc

from django.core import checks
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from oauth.exceptions import OAuthError
from oauth.sweep import heartbeat_sweep_run


class Command(BaseCommand):
    #: The checks about secrets and endpoints; not the URL and admin checks, which import every
    #: view (a third of a second of start-up, for a command that serves no page).
    requires_system_checks = [checks.Tags.security]
    help = (
        "Refresh (for real) and probe the credentials due for a heartbeat now; --all: every "
        "credential; --account: that one. Prints how many ended in each state."
    )

    def run_from_argv(self, argv):
        # Run from the command line, the process ends with the sweep: what start-up loaded
        # (Django, the apps) lives as long as it does, so keep it out of the collector's way, which
        # otherwise walks it again and again during a large sweep and once more at exit. (Not in
        # call_command: a longer-lived caller's garbage must stay collectable.)
        gc.freeze()
        return super().run_from_argv(argv)

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--all", action="store_true", help="Every credential, whatever its window.")
        which.add_argument("--account", metavar="EMAIL", help="Only this account (email or key).")
        parser.add_argument(
            "--concurrency", type=int, default=None,
            help="Refreshes in flight at once (default OAUTH_HEARTBEAT_CONCURRENCY).",
        )

    def handle(self, *args, all=False, account=None, concurrency=None, **options):
        if concurrency is not None and concurrency < 1:
            raise CommandError("--concurrency must be at least 1.")
        try:
            run = heartbeat_sweep_run(
                trigger="command", all_credentials=all, account=account, concurrency=concurrency
            )
        except OAuthError as exc:
            raise CommandError(str(exc)) from None
        except DatabaseError as exc:
            raise CommandError(
                f"The database could not be reached ({type(exc).__name__}): check DATABASE_URL "
                "and that PostgreSQL is up, then run 'manage.py oauth_heartbeat' again."
            ) from None
        seconds = (run.finished_at - run.started_at).total_seconds()
        self.stdout.write(f"Heartbeat: {run.selected} credential(s) in {seconds:.1f} s")
        for state, count in sorted(run.outcomes.items()):
            self.stdout.write(f"  {state}: {count}")
        bad = {k: v for k, v in run.outcomes.items() if k not in ("connected",)}
        if bad:
            self.stderr.write(
                "Some credentials need attention: see /api/oauth/status or the admin for the "
                "remediation of each."
            )
            raise SystemExit(1)
