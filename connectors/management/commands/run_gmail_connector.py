"""``manage.py run_gmail_connector [--once] [--account EMAIL]``: the Gmail poller process."""
from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from connectors.app_settings import connector_settings
from connectors.exceptions import (
    GmailCredentialError,
    GmailRequestError,
    GmailTokenRefreshError,
)
from connectors.gmail import gmail_accounts, gmail_poll
from oauth.preflight import (
    EXIT_CREDENTIAL_UNUSABLE,
    EXIT_NO_CREDENTIALS,
    GuardFailure,
    credentials_required,
    exit_blocked,
    reconnect_remediation,
    standard_remediation,
)

CALLER = "gmail-connector"


class Command(BaseCommand):
    help = (
        "Run the Gmail connector: records each new INBOX message once (see "
        "docs/connectors-and-commands.md). It starts behind the startup guard (no usable Google "
        "credential: the STARTUP BLOCKED banner and a non-zero exit), then polls every connected "
        "account (or --account) every GMAIL_POLL_INTERVAL seconds until SIGTERM/SIGINT, which "
        "finish the current poll and exit 0. --once polls once and exits. An expired or revoked "
        "grant stops it with the banner (when it is the only account; among several, that account "
        "is reported and skipped from then on). Exit codes: 0 stopped cleanly or --once succeeded; 1 "
        "with --once, a poll failed (network, Google error); 3/4/5 the startup guard blocked "
        "(no credential / unusable or expired credential / database unavailable)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="Poll once, then exit.")
        parser.add_argument(
            "--account", metavar="EMAIL", help="Poll only this stored account (default: every one)."
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="Seconds between polls (default: GMAIL_POLL_INTERVAL).",
        )

    def handle(self, *args, once: bool = False, account: str | None = None, interval=None, **options):
        interval = float(connector_settings.GMAIL_POLL_INTERVAL if interval is None else interval)
        if interval <= 0:
            raise CommandError("--interval must be a positive number of seconds.")
        credentials_required(caller=CALLER, account=account)

        stop = threading.Event()
        received: list[str] = []

        def on_signal(signum, _frame):
            received.append(signal.Signals(signum).name)
            stop.set()

        if not once:
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            self.stdout.write(f"Gmail connector started; polling every {interval:g} s.")
            self.stdout.flush()

        while True:
            failed = self._poll_everything(account)
            if once:
                if failed:
                    raise CommandError(f"{failed} Gmail poll(s) failed; see the messages above.")
                return
            if stop.wait(interval):
                break
        self.stdout.write(f"Gmail connector stopped ({received[0] if received else 'stop'}).")

    def _poll_everything(self, account: str | None) -> int:
        accounts = [account] if account else gmail_accounts()
        if not accounts:
            self.stderr.write("No account to poll: no stored credential can read Gmail.")
            return 1
        failed = 0
        for each in accounts:
            try:
                result = gmail_poll(account=each, actor="process:gmail-connector")
            except GmailTokenRefreshError as exc:
                # A dead grant stops a connector that has nothing else to poll; among several
                # accounts it is reported and drops out (its state is now 'expired').
                if exc.reconsent_required and len(accounts) == 1:
                    exit_blocked(
                        caller=CALLER,
                        failure=GuardFailure(
                            problem=str(exc),
                            remediation=reconnect_remediation(),
                            exit_code=EXIT_CREDENTIAL_UNUSABLE,
                        ),
                        stream=self.stderr._out,
                    )
                self.stderr.write(f"Gmail poll of {each or 'the primary account'} failed: {exc}")
                failed += 1
                continue
            except GmailCredentialError as exc:
                exit_blocked(
                    caller=CALLER,
                    failure=GuardFailure(
                        problem=str(exc),
                        remediation=standard_remediation(),
                        exit_code=EXIT_NO_CREDENTIALS,
                    ),
                    stream=self.stderr._out,
                )
            except GmailRequestError as exc:
                self.stderr.write(f"Gmail poll of {each or 'the primary account'} failed: {exc}")
                failed += 1
                continue
            self.stdout.write(
                f"Polled {result.email}: {result.ingested} new message(s) ({result.mode})."
            )
            self.stdout.flush()
        return failed
