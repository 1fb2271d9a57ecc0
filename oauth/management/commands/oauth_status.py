"""``manage.py oauth_status [--json]``: the status report, as the staff view of /api/oauth/status."""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from oauth import scopes as scope_catalogue
from oauth.status import status_payload


class Command(BaseCommand):
    help = (
        "Show every stored Google account's state, scopes and remediation (stored state only; "
        "Google is not called). --json prints the same payload as GET /api/oauth/status for staff."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the payload as JSON.")

    def handle(self, *args, **options):
        payload = status_payload(include_private=True)
        if options["json"]:
            self.stdout.write(json.dumps(payload, indent=2, sort_keys=True))
            return
        self.stdout.write(self._table(payload))

    @staticmethod
    def _names(uris: list[str]) -> str:
        return " ".join(scope_catalogue.short_name(uri) for uri in uris) or "-"

    def _table(self, payload: dict) -> str:
        accounts = payload["accounts"]
        if not accounts:
            google = payload["google"]
            return f"google: {google['state']}\n  {google['remediation']}"
        rows = [("ACCOUNT", "KEY", "STATE", "GRANTED", "MISSING", "LAST REFRESH")]
        for account in accounts:
            rows.append(
                (
                    account["email"] or "-",
                    account["credential_key"],
                    account["state"],
                    self._names(account["scopes_granted"]),
                    self._names(account["missing_scopes"]),
                    (account["last_refreshed_at"] or "never")[:19],
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
        for account in accounts:
            if account.get("remediation"):
                lines.append(f"{account['email'] or account['credential_key']}: {account['remediation']}")
        return "\n".join(lines)
