"""``manage.py oauth_risc_register [--status|--verify|--disable]``: Google's security event stream."""
from __future__ import annotations

import secrets
import time

from django.core.management.base import BaseCommand, CommandError

from oauth.exceptions import OAuthError
from oauth.google.risc import RiscApiError, RiscUnavailable
from oauth.risc import (
    risc_stream_disable,
    risc_stream_register,
    risc_stream_status,
    risc_stream_verify,
    risc_verification_received,
)


class Command(BaseCommand):
    help = (
        "Registers this server's receiver (POST /api/oauth/google/risc) with Google's RISC API, "
        "so Google pushes security events (revoked tokens, disabled accounts, ...) at once. "
        "Signs its calls with the service-account key GOOGLE_RISC_SERVICE_ACCOUNT_FILE (role "
        "'RISC Configuration Admin'). Without a flag: register (or update) and enable the stream. "
        "--status: what Google has and whether a verification event arrived. --verify: ask "
        "Google for a verification event and wait for it. --disable: stop the stream. "
        "Exit 0 on success, 1 with what to fix otherwise. See docs/risc.md."
    )

    def add_arguments(self, parser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--status", action="store_true", help="Show the stream's configuration.")
        group.add_argument("--verify", action="store_true", help="Ask Google for a verification event.")
        group.add_argument("--disable", action="store_true", help="Stop the stream.")
        parser.add_argument(
            "--url", help="The receiver URL Google should call (default: BUTLERS_DASHBOARD_URL's "
            "origin, else the redirect URI's, + /api/oauth/google/risc). It must be https.",
        )
        parser.add_argument("--wait", type=float, default=30.0,
                            help="Seconds --verify waits for the event (default 30).")

    def handle(self, *args, status=False, verify=False, disable=False, url=None, wait=30.0, **options):
        try:
            if status:
                self._print_status(risc_stream_status())
            elif verify:
                self._verify(wait)
            elif disable:
                risc_stream_disable()
                self.stdout.write("Google's security event stream is disabled.")
            else:
                result = risc_stream_register(url=url)
                self.stdout.write(f"Registered {result['receiver']} with Google's RISC API.")
                self._print_status(result)
                self.stdout.write("Next: manage.py oauth_risc_register --verify")
        except (RiscApiError, RiscUnavailable) as exc:
            raise CommandError(str(exc)) from None
        except OAuthError as exc:
            raise CommandError(str(exc)) from None

    def _print_status(self, result: dict) -> None:
        self.stdout.write(f"Receiver: {result['receiver'] or '(none registered)'}")
        self.stdout.write(f"Stream status: {result['status'] or 'unknown'}")
        self.stdout.write(f"Events requested: {', '.join(result['events_requested']) or '-'}")
        if result["stream_verified"]:
            at = result["last_verification_at"]
            self.stdout.write(f"Verified: yes (last verification event {at:%Y-%m-%d %H:%M} UTC)")
        else:
            self.stdout.write("Verified: no verification event received yet (run --verify)")

    def _verify(self, wait: float) -> None:
        state = "butlers-" + secrets.token_hex(8)
        risc_stream_verify(state=state)
        self.stdout.write(f"Google was asked for a verification event (state {state}).")
        deadline = time.monotonic() + wait
        while not risc_verification_received(state=state):
            if time.monotonic() > deadline:
                raise CommandError(
                    f"No verification event with state {state} arrived within {wait:g} s. Check "
                    "that the receiver URL (--status) is reachable from the internet over https "
                    "and that GET /api/oauth/status shows no error; Google may also take longer: "
                    "run --status later."
                )
            time.sleep(0.5)
        self.stdout.write("Verification event received: the stream works.")
