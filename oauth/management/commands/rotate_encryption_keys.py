"""``manage.py rotate_encryption_keys``: re-encrypt every stored secret under the newest key."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from oauth.exceptions import OAuthError
from oauth.rotation import encryption_keys_pending, encryption_keys_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret (client secret, refresh and access tokens, PKCE "
        "verifiers) under the newest key. Key rotation: 1) generate a key with python -c 'from "
        "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'; 2) put it "
        "FIRST in OAUTH_ENCRYPTION_KEYS, keeping the old keys after it, and restart every "
        "process; 3) run this command; 4) remove the old keys and restart. Works in batches and "
        "skips values already under the newest key, so an interrupted run is simply repeated. "
        "--check only counts what is still under an old key. Exit codes: 0 done (with --check: "
        "nothing left under an old key); 1 a key is malformed or a stored value opens with no "
        "configured key (with --check: values remain under an old key)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="Rows re-encrypted per transaction (default 500).",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="Change nothing; exit 1 while any value is still encrypted under an old key.",
        )

    def handle(self, *args, batch_size: int = 500, check: bool = False, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            if check:
                pending = encryption_keys_pending()
                if pending:
                    raise CommandError(
                        f"{pending} stored value(s) are still encrypted under an old key: run "
                        "'manage.py rotate_encryption_keys' before removing it."
                    )
                self.stdout.write(
                    "Every stored secret is under the newest key: the older keys can be removed."
                )
                return
            report = encryption_keys_rotate(actor="process:rotate_encryption_keys", batch_size=batch_size)
        except OAuthError as exc:
            raise CommandError(str(exc)) from None
        for label, counts in sorted(report.per_field.items()):
            self.stdout.write(
                f"  {label}: {counts['rotated']} re-encrypted, {counts['already_current']} already current"
            )
        self.stdout.write(
            f"Re-encrypted {report.rotated} secret(s); {report.already_current} were already under "
            "the newest key. The older keys in OAUTH_ENCRYPTION_KEYS can now be removed (restart "
            "every process afterwards)."
        )
