"""Run the fake Google on its own: ``python -m tests.fake_google --port 8300``.

It serves an interactive consent page, so the whole flow can be tried in a browser without Google.
"""
from __future__ import annotations

import argparse
import time

from .server import FakeGoogle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--client-id", default="butlers-local.apps.googleusercontent.com")
    parser.add_argument("--client-secret", default="local-fake-secret")
    parser.add_argument("--token-latency", type=float, default=0.0, help="seconds per /token call")
    args = parser.parse_args()
    fake = FakeGoogle(
        client_id=args.client_id, client_secret=args.client_secret, port=args.port, interactive=True
    )
    fake.token_latency = args.token_latency
    fake.start()
    print(f"Fake Google on {fake.url}. Point Butlers at it with:")
    for name, value in fake.env().items():
        print(f"  export {name}={value}")
    print(f"  export GOOGLE_OAUTH_CLIENT_ID={args.client_id}")
    # a local fake's made-up secret, printed so the exports can be pasted as they are
    print(f"  export GOOGLE_OAUTH_CLIENT_SECRET={args.client_secret}")
    print("  export GOOGLE_OAUTH_REDIRECT_URI=http://127.0.0.1:8200/api/oauth/google/callback")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
