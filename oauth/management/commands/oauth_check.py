"""``manage.py oauth_check``: the startup guard as a pre-flight check."""
from __future__ import annotations

from django.core.management.base import BaseCommand

from oauth.preflight import (
    EXIT_CREDENTIAL_UNUSABLE,
    EXIT_DATABASE_UNAVAILABLE,
    EXIT_NO_CREDENTIALS,
    credentials_check,
    exit_blocked,
)


class Command(BaseCommand):
    help = (
        "Pre-flight check run before starting a connector: resolves the Google credential the way "
        "the connectors do (the database first, then the deprecated env vars) without calling "
        "Google. Prints 'Google credentials resolved' when a connector could start; otherwise "
        "prints the STARTUP BLOCKED banner (what is missing and how to fix it) to stderr. Exit "
        f"codes: 0 credentials resolved; {EXIT_NO_CREDENTIALS} no credential, or a malformed "
        f"deprecated env var; {EXIT_CREDENTIAL_UNUSABLE} expired/revoked grant, no OAuth client, "
        f"or undecryptable; {EXIT_DATABASE_UNAVAILABLE} database down or not migrated."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--account",
            metavar="EMAIL",
            help="Check this stored account instead of the primary one.",
        )
        parser.add_argument(
            "--caller",
            default="oauth_check",
            help="Name shown in the banner (default: oauth_check).",
        )

    def handle(self, *args, account: str | None = None, caller: str = "oauth_check", **options):
        resolved, failure = credentials_check(account=account)
        if failure is not None:
            exit_blocked(caller=caller, failure=failure, stream=self.stderr._out)
        self.stdout.write(
            f"Google credentials resolved: account {resolved.account} (source {resolved.source})."
        )
        if resolved.source != "db":
            self.stdout.write(
                f"Warning: {resolved.source} is deprecated. Move it into the database with "
                "'python manage.py oauth_import_env', then remove it from the environment."
            )
