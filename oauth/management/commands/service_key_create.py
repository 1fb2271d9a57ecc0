"""``manage.py service_key_create NAME --account EMAIL... [--scopes ...]``: a key for a service."""
from __future__ import annotations

import datetime as dt
import re

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from oauth.service_keys import service_key_create

_NAME_RE = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")


class Command(BaseCommand):
    help = (
        "Create a service key for the token API (POST /api/oauth/token) and print it once on "
        "standard output, alone on its line (KEY=$(manage.py service_key_create ...) works); it "
        "is stored only as a hash and cannot be shown again. The key may use the named accounts "
        "(or every account with --all-accounts) and gets a token only for an account whose grant "
        "covers every --scopes scope. Exit codes: 0 created; 1 bad input (existing name, unknown "
        "account or scope, bad network), with a message saying what to fix."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="Who uses the key, e.g. gmail-butler (letters, digits, - and _).")
        parser.add_argument(
            "--account", action="extend", nargs="+", default=[], metavar="EMAIL",
            help="Stored accounts the key may use (--account a@x b@x, or repeat --account).",
        )
        parser.add_argument(
            "--all-accounts", action="store_true",
            help="The key may use every stored account, including ones connected later.",
        )
        parser.add_argument(
            "--scopes", nargs="+", default=[], metavar="SCOPE",
            help="Scopes a grant must cover for the key to get its token, e.g. gmail.readonly "
            "(short names or full URIs); default: none required.",
        )
        parser.add_argument(
            "--allow-network", action="append", default=[], metavar="CIDR",
            help="Client address or network allowed to use the key; repeat for several "
            "(default: any address).",
        )
        parser.add_argument(
            "--expires-in-days", type=float, default=None, metavar="DAYS",
            help="The key stops working after this many days (default: never).",
        )

    def handle(self, *args, name: str, account, all_accounts, scopes, allow_network,
               expires_in_days, **options):
        if not _NAME_RE.match(name):
            raise CommandError(
                f"{name!r} is not a usable key name: use letters, digits, '-' and '_' "
                "(e.g. gmail-butler)."
            )
        if not account and not all_accounts:
            raise CommandError("Name the accounts the key may use (--account EMAIL) or pass --all-accounts.")
        expires_at = None
        if expires_in_days is not None:
            if expires_in_days <= 0:
                raise CommandError("--expires-in-days must be a positive number of days.")
            expires_at = timezone.now() + dt.timedelta(days=expires_in_days)
        try:
            key, plaintext = service_key_create(
                name=name,
                accounts=account,
                all_accounts=all_accounts,
                scopes=[s for part in scopes for s in part.replace(",", " ").split()],
                allowed_networks=",".join(allow_network),
                expires_at=expires_at,
                actor="process:service_key_create",
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(plaintext)
        self.stderr.write(
            f"Created service key {key.name!r} ({key.key_prefix}…). The key is printed above and "
            "will not be shown again: give it to the service as BUTLERS_SERVICE_KEY. Revoke it "
            f"with 'manage.py service_key_revoke {key.name}'."
        )
