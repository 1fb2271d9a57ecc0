"""``manage.py oauth_token [--account EMAIL] [--json]``: print a valid access token.

Uses the token service like every connector does (cache, row lock, one refresh). Without
``--account`` it is the primary account's token; with it, that account's or an error: never
another account's.
"""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from oauth.exceptions import OAuthError
from oauth.tokens import access_token_get


class Command(BaseCommand):
    help = "Print a valid Google access token for an account (the primary without --account)."

    def add_arguments(self, parser):
        parser.add_argument("--account", metavar="EMAIL", help="The account's email (or credential key).")
        parser.add_argument(
            "--json", action="store_true",
            help='Print {"access_token", "expires_at", "account"} as JSON.',
        )

    def handle(self, *args, account=None, json=False, **options):
        try:
            token = access_token_get(account=account, actor="command:oauth_token")
        except OAuthError as exc:
            raise CommandError(str(exc)) from None
        if json:
            payload = {
                "access_token": token.value,
                "expires_at": token.expires_at.isoformat(),
                "account": token.account,
            }
            self.stdout.write(_dumps(payload))
        else:
            self.stdout.write(token.value)


def _dumps(payload: dict) -> str:
    return json.dumps(payload)
