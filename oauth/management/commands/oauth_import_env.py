"""``manage.py oauth_import_env``: move the deprecated env credential into the database."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from oauth.exceptions import OAuthError
from oauth.importing import env_credentials_import


class Command(BaseCommand):
    help = (
        "Move the deprecated Google credential env vars (BUTLER_GOOGLE_CALENDAR_CREDENTIALS_JSON, "
        "or GMAIL_CLIENT_ID + GMAIL_CLIENT_SECRET + GMAIL_REFRESH_TOKEN, or GOOGLE_REFRESH_TOKEN "
        "with GOOGLE_OAUTH_CLIENT_ID/SECRET) into the database, encrypted. Run it in the "
        "environment that has them set. By default it first proves the credential works (one "
        "refresh at Google, plus the userinfo endpoint to learn the account email); "
        "--no-verify stores it without calling Google. Safe to run again: it reports created, "
        "updated or unchanged. Afterwards it lists the variables to remove. Exit codes: 0 "
        "imported (or already imported); 1 nothing to import, a malformed variable, or Google "
        "rejected the credential (nothing stored)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--no-verify",
            action="store_true",
            help="Do not call Google: store the credential as it is (the email stays blank).",
        )

    def handle(self, *args, no_verify: bool = False, **options):
        try:
            result = env_credentials_import(actor="process:oauth_import_env", verify=not no_verify)
        except OAuthError as exc:
            raise CommandError(f"Nothing was imported: {exc}") from None
        credential = result.credential
        self.stdout.write(
            f"{result.outcome.capitalize()}: credential {credential.credential_key!r} "
            f"(account {credential.email or 'unknown'}) from {result.source}"
            + ("" if result.verified else " (not verified with Google)")
            + "."
        )
        if result.scopes:
            self.stdout.write("Granted scopes: " + " ".join(result.scopes))
        if result.env_vars_to_remove:
            self.stdout.write(
                "The credential now lives in the database. Remove these deprecated variables from "
                "every environment (.env, secrets, compose files), then restart: "
                + ", ".join(result.env_vars_to_remove)
            )
        self.stdout.write("Check with: python manage.py oauth_check")
