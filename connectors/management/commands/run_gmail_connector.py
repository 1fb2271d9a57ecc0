"""``manage.py run_gmail_connector [--once] [--account EMAIL]``: the Gmail poller process."""
from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from connectors import broker_mode
from connectors.app_settings import connector_settings
from connectors.broker_client import BrokerClient, BrokerConfigError, BrokerError
from connectors.exceptions import (
    GmailCredentialError,
    GmailRequestError,
    GmailTokenRefreshError,
)
from connectors.gmail import gmail_accounts, gmail_poll
from oauth.preflight import (
    EXIT_CREDENTIAL_UNUSABLE,
    EXIT_DATABASE_UNAVAILABLE,
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
        "(no credential / unusable or expired credential / database unavailable). With "
        "BUTLERS_BROKER_URL and BUTLERS_SERVICE_KEY set it runs in broker mode (docs/token-api.md): "
        "tokens come from the token broker, the accounts are those the key may use, and only the "
        "Gmail state is kept locally (SQLite under BUTLERS_VAR_DIR without DATABASE_URL); exit 3 "
        "when the broker refuses the key, 5 when it cannot be reached at start."
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
        broker = self._broker_start() if broker_mode.broker_configured() else None
        if broker is None:
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
            failed = self._poll_everything(account, broker)
            if once:
                if failed:
                    raise CommandError(f"{failed} Gmail poll(s) failed; see the messages above.")
                return
            if stop.wait(interval):
                break
        self.stdout.write(f"Gmail connector stopped ({received[0] if received else 'stop'}).")

    def _poll_everything(self, account: str | None, broker: BrokerClient | None = None) -> int:
        if account:
            accounts = [account]
        elif broker is not None:
            try:
                accounts = broker_mode.broker_gmail_accounts(broker)
            except BrokerError as exc:
                self.stderr.write(f"The token broker did not list the accounts: {exc}")
                return 1
        else:
            accounts = gmail_accounts()
        if not accounts:
            self.stderr.write("No account to poll: no stored credential can read Gmail.")
            return 1
        failed = 0
        for each in accounts:
            try:
                result = gmail_poll(
                    account=each, actor="process:gmail-connector",
                    token_source=broker_mode.broker_token_source(broker, each) if broker else None,
                )
            except GmailTokenRefreshError as exc:
                # A dead grant stops a connector that has nothing else to poll; among several
                # accounts it is reported and drops out (its state is now 'expired').
                if exc.reconsent_required and len(accounts) == 1:
                    exit_blocked(
                        caller=CALLER,
                        failure=GuardFailure(
                            problem=str(exc),
                            remediation=_broker_remediation(broker) if broker else reconnect_remediation(),
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
                        remediation=_broker_remediation(broker) if broker else standard_remediation(),
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

    def _broker_start(self) -> BrokerClient:
        """Broker mode: the client, the local store ready, and the key accepted by the broker."""
        try:
            broker = broker_mode.broker_client_from_env()
        except BrokerConfigError as exc:
            self._blocked(str(exc), EXIT_NO_CREDENTIALS, None)
        broker_mode.local_store_prepare()
        try:
            usable = broker_mode.broker_gmail_accounts(broker)
        except BrokerError as exc:
            code = EXIT_DATABASE_UNAVAILABLE if exc.status is None or exc.status >= 500 else EXIT_NO_CREDENTIALS
            self._blocked(f"The token broker refused to start this connector: {exc}", code, broker)
        self.stdout.write(
            f"Token broker at {broker.url} accepted the service key; {len(usable)} account(s) "
            "can be polled."
        )
        self.stdout.flush()
        return broker

    def _blocked(self, problem: str, exit_code: int, broker: BrokerClient | None):
        exit_blocked(
            caller=CALLER,
            failure=GuardFailure(
                problem=problem, remediation=_broker_remediation(broker), exit_code=exit_code
            ),
            stream=self.stderr._out,
        )


def _broker_remediation(broker: BrokerClient | None) -> list[str]:
    where = broker.url if broker else "the broker"
    return [
        "This connector runs in broker mode: BUTLERS_BROKER_URL and BUTLERS_SERVICE_KEY (see "
        "docs/token-api.md).",
        f"Check that {where} answers (GET /api/health) and that the key is valid: an operator "
        "creates one with 'manage.py service_key_create NAME --account EMAIL --scopes "
        "gmail.readonly' on the broker.",
        f"A dead grant is reconnected on the broker's dashboard ({where}/), not here.",
    ]
