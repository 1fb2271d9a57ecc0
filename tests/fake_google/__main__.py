"""Run the fake Google on its own: ``python -m tests.fake_google``.

It serves an interactive consent page, so the whole flow can be tried in a browser without Google.
Its port follows the app's (``BUTLERS_PORT`` + 100, so 8300 beside 8200) unless ``--port`` or
``FAKE_GOOGLE_PORT`` says otherwise, and the grants it issues are kept in ``--state-file``
(default ``var/fake-google.json``): restarting it does not expire the accounts connected through it.
``make demo`` starts it beside the app, already pointed at it.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .server import FakeGoogle

ROOT = Path(__file__).resolve().parents[2]
DEMO_CLIENT_ID = "butlers-demo.apps.googleusercontent.com"
#: a local fake's made-up secret: printed so the exports can be pasted as they are
DEMO_CLIENT_SECRET = "demo-fake-google-secret"


def app_port() -> int:
    return int(os.environ.get("BUTLERS_PORT") or 8200)


def fake_port() -> int:
    """The fake's port: FAKE_GOOGLE_PORT, else the app's port + 100."""
    return int(os.environ.get("FAKE_GOOGLE_PORT") or app_port() + 100)


def app_env(*, fake_url: str, port: int, host: str = "127.0.0.1") -> dict[str, str]:
    """Everything the app needs to use the fake: endpoints, client, redirect URI on its port."""
    fake = FakeGoogle()
    fake.port = int(fake_url.rsplit(":", 1)[1])
    return {
        **fake.env(),
        "GOOGLE_OAUTH_CLIENT_ID": DEMO_CLIENT_ID,
        "GOOGLE_OAUTH_CLIENT_SECRET": DEMO_CLIENT_SECRET,
        "GOOGLE_OAUTH_REDIRECT_URI": f"http://{host}:{port}/api/oauth/google/callback",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=None, help="default: FAKE_GOOGLE_PORT, else BUTLERS_PORT + 100")
    parser.add_argument("--app-port", type=int, default=None, help="the app's port, for the printed redirect URI")
    parser.add_argument("--client-id", default=DEMO_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEMO_CLIENT_SECRET)
    parser.add_argument("--state-file", default=str(ROOT / "var" / "fake-google.json"),
                        help="where issued grants are kept across restarts ('' keeps them in memory)")
    parser.add_argument("--token-latency", type=float, default=0.0, help="seconds per /token call")
    parser.add_argument("--quiet", action="store_true", help="print one line, not the exports")
    parser.add_argument("--risc-key-file", default="",
                        help="write a service-account key its RISC API accepts there (oauth_risc_register)")
    args = parser.parse_args(argv)
    port = args.port if args.port is not None else fake_port()
    # Ctrl-C and SIGTERM are taken by sigwait() below rather than by a handler: blocked from here
    # on (the server's threads, started after, inherit the mask), so one that comes at any moment
    # (while the exports are still being printed, or just after) stops the fake the same way and
    # its grants are saved. (A Python handler runs only in the main thread: one handed to the
    # server's thread left the main thread waiting for ever, and one that came before the handler
    # was installed ended the fake with a traceback and nothing saved.)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    fake = FakeGoogle(
        client_id=args.client_id, client_secret=args.client_secret, port=port, interactive=True,
        state_file=args.state_file or None,
    )
    fake.token_latency = args.token_latency
    try:
        fake.start()
    except OSError as exc:
        print(f"fake Google: cannot listen on 127.0.0.1:{port} ({exc.strerror}); "
              "set FAKE_GOOGLE_PORT or --port to a free port", file=sys.stderr)
        return 2
    if args.quiet:
        print(f"Fake Google on {fake.url} ({len(fake.grants)} grants kept in {args.state_file or 'memory'})",
              flush=True)
    else:
        print(f"Fake Google on {fake.url}. Point Butlers at it with:")
        env = app_env(fake_url=fake.url, port=args.app_port or app_port())
        env["GOOGLE_OAUTH_CLIENT_ID"] = args.client_id
        env["GOOGLE_OAUTH_CLIENT_SECRET"] = args.client_secret
        if args.risc_key_file:
            env["GOOGLE_RISC_SERVICE_ACCOUNT_FILE"] = str(fake.risc.service_account_file(args.risc_key_file))
        for name, value in env.items():
            print(f"  export {name}={value}")
        print("(`make demo` does all of this for you.)", flush=True)
    signal.sigwait(stop_signals)
    fake.stop()
    fake.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
