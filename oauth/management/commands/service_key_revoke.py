"""``manage.py service_key_revoke NAME``: a service key stops working at once."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from oauth.exceptions import ServiceKeyNotFound
from oauth.service_keys import service_key_revoke


class Command(BaseCommand):
    help = (
        "Revoke a service key: every web process refuses it (401) from the next call on, since "
        "keys are checked against the database on every call. The key's row stays for the audit "
        "trail. Exit codes: 0 revoked (or already revoked); 1 no key of that name."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="The key's name, as shown in the admin.")

    def handle(self, *args, name: str, **options):
        try:
            key, changed = service_key_revoke(name=name, actor="process:service_key_revoke")
        except ServiceKeyNotFound as exc:
            raise CommandError(str(exc)) from None
        if changed:
            self.stdout.write(f"Revoked service key {key.name!r}: it is refused from now on.")
        else:
            self.stdout.write(
                f"Service key {key.name!r} was already revoked on {key.revoked_at:%Y-%m-%d %H:%M} UTC."
            )
