"""Real receivers for notification tests: an SMTP server (aiosmtpd) and a webhook receiver that
checks every message with the Standard Webhooks verifier, each on a free loopback port."""
from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class _Collect:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"


class SmtpServer:
    """An SMTP server on 127.0.0.1 that keeps every message it accepts."""

    def __init__(self) -> None:
        self.handler = _Collect()
        # aiosmtpd connects to its own port to check it started: it needs a real one, not 0
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=port)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return self.controller.port

    @property
    def messages(self) -> list[email.message.EmailMessage]:
        return self.handler.messages

    def settings(self) -> dict:
        return {"EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": self.port, "EMAIL_USE_TLS": False,
                "EMAIL_HOST_USER": "", "EMAIL_HOST_PASSWORD": ""}

    def email_url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


def text_of(message: email.message.EmailMessage, subtype: str = "plain") -> str:
    part = message.get_body(preferencelist=(subtype,))
    return part.get_content() if part is not None else ""


class WebhookReceiver:
    """An HTTP receiver that verifies each message with ``standardwebhooks``' verifier.

    ``fail_next`` answers that many requests with 500 first; ``redirect`` answers 302. Verified
    payloads land in ``received``, every request (verified or not) in ``requests``.
    """

    def __init__(self) -> None:
        self.secret: str | None = None
        self.received: list[dict] = []
        self.requests: list[dict] = []
        self.rejected: list[str] = []
        self.fail_next = 0
        self.redirect = False
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.requests.append({"headers": headers, "body": body})
                    failing = receiver.fail_next > 0
                    if failing:
                        receiver.fail_next -= 1
                if receiver.redirect:
                    self.send_response(302)
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if failing:
                    return self._answer(500, b"receiver down for maintenance")
                try:
                    payload = Webhook(receiver.secret).verify(body, headers)
                except (WebhookVerificationError, TypeError, ValueError) as exc:
                    with receiver._lock:
                        receiver.rejected.append(str(exc))
                    return self._answer(400, b"bad signature")
                with receiver._lock:
                    receiver.received.append({"id": headers.get("webhook-id"), "payload": payload})
                return self._answer(204, b"")

            def _answer(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    def start(self) -> WebhookReceiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/butlers"


def wait_for(predicate, *, timeout: float = 60.0) -> bool:
    """Poll until ``predicate()`` holds (for work done by another process), up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def payloads(receiver: WebhookReceiver) -> list[dict]:
    return [json.loads(json.dumps(r["payload"])) for r in receiver.received]
