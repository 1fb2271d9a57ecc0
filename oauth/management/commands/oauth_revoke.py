"""``manage.py oauth_revoke --account EMAIL``: the emergency revocation."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from oauth.exceptions import OAuthError
from oauth.revocation import credential_revoke
from oauth.selectors import credential_get


class Command(BaseCommand):
    help = (
        "Emergency procedure for a compromised or unwanted grant: revokes the account's refresh "
        "token at Google (GOOGLE_OAUTH_REVOKE_URI), which also kills its access tokens, then "
        "forgets the stored tokens, marks the credential revoked (state 'expired') and writes an "
        "audit event. Google is asked first; if it does not confirm, nothing changes locally and "
        "the command can be run again. To use the account again, reconnect it on the dashboard. "
        "Exit codes: 0 revoked (or already revoked at Google); 1 unknown account, or Google did "
        "not confirm."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--account",
            required=True,
            metavar="EMAIL",
            help="Email (or credential key) of the stored account to revoke.",
        )

    def handle(self, *args, account: str, **options):
        try:
            credential = credential_get(account=account)
            result = credential_revoke(credential=credential, actor="process:oauth_revoke")
        except OAuthError as exc:
            raise CommandError(str(exc)) from None
        messages = {
            "revoked": "Google confirmed the revocation.",
            "already_revoked": "Google no longer knew the token (it was already revoked or expired).",
            "nothing_to_revoke": "No token was stored any more (it was revoked before).",
        }
        self.stdout.write(
            f"Revoked {result.account}: {messages[result.outcome]} The stored tokens are gone and "
            "the account shows as expired/revoked. Reconnect it on the dashboard to use it again."
        )
