"""A small fake of Google's OAuth endpoints and the Gmail/Calendar calls the connectors make.

It speaks real HTTP on loopback (a threaded stdlib server), so the project's code runs unchanged
against it: only the endpoint settings (``fake.settings()`` / ``fake.env()``) differ. Tests steer it
through attributes and methods (consent plan, injected failures and latency) and read ``stats``.
"""
from __future__ import annotations

import base64
import hashlib
import html
import itertools
import json
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from .risc import RiscIssuer

AUTH = "https://www.googleapis.com/auth/"
EMAIL_SCOPE = AUTH + "userinfo.email"
_ALIASES = {"email": EMAIL_SCOPE, "profile": AUTH + "userinfo.profile"}
CALENDAR_READ = {AUTH + "calendar", AUTH + "calendar.readonly"}
CALENDAR_WRITE = {AUTH + "calendar"}
GMAIL_READ = {AUTH + "gmail.readonly", AUTH + "gmail.modify"}


def _norm(scope: str) -> str:
    return _ALIASES.get(scope, scope)


@dataclass
class ConsentPlan:
    """What the next visits to the consent page do."""

    email: str = "alice@example.com"
    scopes: list[str] | None = None  # None: grant every requested scope
    deny: bool = False
    refresh_token: bool = True


@dataclass
class _Grant:
    email: str
    scopes: list[str]
    refresh_token: str
    client_id: str
    revoked: bool = False


@dataclass
class _AccessToken:
    email: str
    scopes: list[str]
    expires_at: float
    refresh_token: str | None
    revoked: bool = False


@dataclass
class _Code:
    email: str
    scopes: list[str]
    client_id: str
    redirect_uri: str
    challenge: str | None
    method: str | None
    issue_refresh_token: bool
    used: bool = False


@dataclass
class _Mailbox:
    history_id: int = 1000
    min_history_id: int = 1000
    messages: dict[str, dict] = field(default_factory=dict)  # id -> message
    history: list[dict] = field(default_factory=list)  # {"id": int, "message": {...}}
    events: dict[str, dict[str, dict]] = field(default_factory=dict)  # calendar -> id -> event


class FakeGoogle:
    """The fake. ``start()`` binds 127.0.0.1 on a free port (or ``port``).

    With ``state_file``, the grants and access tokens it issued are kept in that JSON file and read
    back at ``start()``: a restarted fake still honours the refresh tokens the app stored.
    """

    def __init__(
        self,
        *,
        client_id: str = "1234567890-test.apps.googleusercontent.com",
        client_secret: str = "GOCSPX-test-client-secret-PLAINTEXT",
        port: int = 0,
        interactive: bool = False,
        state_file: str | os.PathLike | None = None,
    ) -> None:
        self.state_file = Path(state_file) if state_file else None
        self.clients: dict[str, str] = {client_id: client_secret}
        self.deleted_clients: set[str] = set()
        self.port = port
        self.interactive = interactive
        self.consent = ConsentPlan()
        self.allowed_redirect_uris: set[str] | None = None
        self.token_latency = 0.0
        self.api_latency = 0.0
        self.access_token_lifetime = 3599
        self.rotate_refresh_tokens = False
        self.omit_refresh_token_on_exchange = False
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._token_failures: list[tuple[int, str]] = []
        self._api_failures: list[tuple[int, int | None, str]] = []
        self.grants: dict[str, _Grant] = {}  # refresh token -> grant
        self.access_tokens: dict[str, _AccessToken] = {}
        self.codes: dict[str, _Code] = {}
        self.mailboxes: dict[str, _Mailbox] = {}
        self._in_flight = 0
        self.stats: dict = {
            "exchanges": 0,
            "refreshes": 0,
            "refreshes_by_email": {},
            "revokes": 0,
            "userinfo": 0,
            "max_in_flight_refreshes": 0,
            "token_requests": 0,
            "api_calls": [],
        }
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.risc = RiscIssuer(self)  # Cross-Account Protection: signing key, JWKS, RISC API

    # --- life cycle -----------------------------------------------------------------------------
    def start(self) -> FakeGoogle:
        self._load()
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        server = _Server(("127.0.0.1", self.port), Handler)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="fake-google", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- persistence (state_file) -------------------------------------------------------------------
    def _load(self) -> None:
        if self.state_file is None or not self.state_file.is_file():
            return
        data = json.loads(self.state_file.read_text())
        with self._lock:
            self.grants = {t: _Grant(**g) for t, g in data.get("grants", {}).items()}
            self.access_tokens = {t: _AccessToken(**a) for t, a in data.get("access_tokens", {}).items()}
            for email in data.get("accounts", []):
                self.mailboxes.setdefault(email, _Mailbox())

    def save(self) -> None:
        """Write the grants and live access tokens to ``state_file`` (atomically); no-op without one."""
        if self.state_file is None:
            return
        now = time.time()
        with self._lock:
            data = {
                "grants": {t: asdict(g) for t, g in self.grants.items()},
                "access_tokens": {
                    t: asdict(a) for t, a in self.access_tokens.items() if a.expires_at > now
                },
                "accounts": sorted(self.mailboxes),
            }
        with self._save_lock:  # one writer at a time: requests are served by many threads
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_name(self.state_file.name + ".tmp")
            # the fake's made-up tokens, but tokens all the same: owner-only
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.state_file)

    def __enter__(self) -> FakeGoogle:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> dict[str, str]:
        """Django settings that point the project at this fake."""
        return {
            "GOOGLE_OAUTH_AUTH_URI": self.url + "/o/oauth2/v2/auth",
            "GOOGLE_OAUTH_TOKEN_URI": self.url + "/token",
            "GOOGLE_OAUTH_REVOKE_URI": self.url + "/revoke",
            "GOOGLE_OAUTH_USERINFO_URI": self.url + "/v1/userinfo",
            "GOOGLE_API_BASE_URL": self.url,
            "GOOGLE_RISC_CONFIG_URI": self.url + "/.well-known/risc-configuration",
        }

    def env(self) -> dict[str, str]:
        """The same, as environment variables for a child process."""
        return dict(self.settings())

    # --- steering ---------------------------------------------------------------------------------
    def register_client(self, client_id: str, client_secret: str) -> None:
        with self._lock:
            self.clients[client_id] = client_secret

    def delete_client(self, client_id: str | None = None) -> None:
        with self._lock:
            self.deleted_clients.update([client_id] if client_id else list(self.clients))

    def add_account(self, email: str) -> _Mailbox:
        with self._lock:
            return self.mailboxes.setdefault(email, _Mailbox())

    def issue_grant(
        self, email: str, scopes: list[str] | None = None, *, client_id: str | None = None
    ) -> str:
        """A refresh token for ``email`` as if the account had consented; returns it."""
        self.add_account(email)
        scopes = [_norm(s) for s in (scopes or ["openid", "email", AUTH + "gmail.modify", AUTH + "calendar"])]
        scopes = [s if ("://" in s or s == "openid") else AUTH + s for s in scopes]
        token = f"1//fake-refresh-{secrets.token_urlsafe(18)}"
        with self._lock:
            self.grants[token] = _Grant(
                email=email, scopes=scopes, refresh_token=token,
                client_id=client_id or next(iter(self.clients)),
            )
        self.save()
        return token

    def fail_token(self, n: int = 1, *, status: int = 503, error: str = "temporarily_unavailable") -> None:
        with self._lock:
            self._token_failures.extend([(status, error)] * n)

    def fail_api(self, n: int = 1, *, status: int = 503, retry_after: int | None = None, prefix: str = "") -> None:
        with self._lock:
            self._api_failures.extend([(status, retry_after, prefix)] * n)

    def expire_grant(self, email: str) -> None:
        with self._lock:
            for grant in self.grants.values():
                if grant.email == email:
                    grant.revoked = True
        self.save()

    def revoke_access_tokens(self, email: str) -> None:
        with self._lock:
            for token in self.access_tokens.values():
                if token.email == email:
                    token.revoked = True

    def refreshes_for(self, email: str) -> int:
        return self.stats["refreshes_by_email"].get(email, 0)

    def add_message(
        self,
        email: str,
        *,
        subject: str = "Hello",
        sender: str = "friend@example.com",
        snippet: str = "",
        labels: tuple[str, ...] = ("INBOX",),
    ) -> str:
        box = self.add_account(email)
        with self._lock:
            message_id = f"m{next(self._ids):08x}"
            box.history_id += 1
            message = {
                "id": message_id,
                "threadId": f"t{message_id[1:]}",
                "labelIds": list(labels),
                "snippet": snippet or f"{subject} ...",
                "historyId": str(box.history_id),
                "internalDate": str(int(time.time() * 1000)),
                "payload": {
                    "headers": [
                        {"name": "From", "value": sender},
                        {"name": "Subject", "value": subject},
                        {"name": "To", "value": email},
                    ]
                },
            }
            box.messages[message_id] = message
            box.history.append({"id": box.history_id, "message": message})
        return message_id

    def expire_history(self, email: str) -> None:
        box = self.add_account(email)
        with self._lock:
            box.min_history_id = box.history_id + 1
            box.history.clear()

    # --- internals used by the handler ---------------------------------------------------------------
    def _mint_access_token(self, email: str, scopes: list[str], refresh_token: str | None) -> str:
        token = f"ya29.fake-{secrets.token_urlsafe(24)}"
        self.access_tokens[token] = _AccessToken(
            email=email, scopes=scopes, expires_at=time.time() + self.access_token_lifetime,
            refresh_token=refresh_token,
        )
        return token

    def _take_token_failure(self) -> tuple[int, str] | None:
        with self._lock:
            return self._token_failures.pop(0) if self._token_failures else None

    def _take_api_failure(self, path: str) -> tuple[int, int | None] | None:
        with self._lock:
            for i, (status, retry_after, prefix) in enumerate(self._api_failures):
                if path.startswith(prefix):
                    del self._api_failures[i]
                    return status, retry_after
        return None


_CONSENT_PAGE = """<!doctype html><html><head><title>Sign in - Google Accounts (fake)</title>
<style>body{{font-family:sans-serif;max-width:32rem;margin:3rem auto}}label{{display:block;margin:.3rem 0}}
button{{margin-right:1rem;padding:.5rem 1rem}}</style></head><body>
<h1>Fake Google consent</h1><p>An application ({client}) wants access to your account.</p>
<form method="post" action="/o/oauth2/v2/auth/decide">
<input type="hidden" name="q" value="{query}">
<label>Account email <input name="email" value="{email}" id="email"></label>
<fieldset><legend>Scopes</legend>{boxes}</fieldset>
<button name="decision" value="allow" id="allow">Allow</button>
<button name="decision" value="deny" id="deny">Cancel</button>
</form></body></html>"""


class _Server(ThreadingHTTPServer):
    """The fake's server. ``request_queue_size`` is the listen() backlog, so it must be set on the
    class: set on an instance it comes after listen() and the backlog stays 5, so a burst of
    connections loses SYNs and waits a second for the retransmit."""

    daemon_threads = True
    request_queue_size = 1024


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGoogle
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: without this, delayed ACKs add ~40 ms a response
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # quiet
        pass

    # --- plumbing -------------------------------------------------------------------------------
    def _send(self, status: int, body, *, content_type="application/json", headers=None):
        data = body if isinstance(body, bytes) else (
            json.dumps(body).encode() if content_type == "application/json" else str(body).encode()
        )
        self.send_response(status)
        self.send_header("Content-Type", content_type + ("; charset=utf-8" if "json" in content_type or "html" in content_type else ""))
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        # Headers and body in one write (one segment for a small answer): separate writes meet
        # the client's delayed ACK and cost ~40 ms each when Nagle is on.
        self._headers_buffer.append(b"\r\n")
        self._headers_buffer.append(data)
        self.flush_headers()

    def _redirect(self, location: str):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _body(self) -> bytes:
        return self._raw_body

    def _read_body(self) -> bytes:
        # read every body up front: an unread body would corrupt the next keep-alive request
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(length) if length > 0 else b""

    def _form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self._body().decode(), keep_blank_values=True).items()}

    def _json_body(self) -> dict:
        try:
            return json.loads(self._body() or b"{}")
        except ValueError:
            return {}

    def _query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)

    def _route(self, method: str):
        self._raw_body = self._read_body()
        path = urlsplit(self.path).path
        if path == "/o/oauth2/v2/auth" and method == "GET":
            return self._auth()
        if path == "/o/oauth2/v2/auth/decide" and method == "POST":
            return self._decide()
        if path == "/token" and method == "POST":
            return self._token()
        if path == "/revoke" and method == "POST":
            return self._revoke()
        if path == "/v1/userinfo" and method == "GET":
            return self._userinfo()
        if path.startswith("/calendar/v3/") or path.startswith("/gmail/v1/"):
            return self._api(method, path)
        if path.startswith(("/.well-known/risc", "/risc/", "/v1beta/", "/_control/risc/")):
            return self.fake.risc.handle(self, method, path)
        return self._send(404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_PATCH(self):
        self._route("PATCH")

    def do_PUT(self):
        self._route("PUT")

    def do_DELETE(self):
        self._route("DELETE")

    # --- consent --------------------------------------------------------------------------------
    def _auth(self):
        fake = self.fake
        q = {k: v[0] for k, v in self._query().items()}
        client_id = q.get("client_id", "")
        redirect_uri = q.get("redirect_uri", "")
        if client_id not in fake.clients or client_id in fake.deleted_clients:
            return self._send(400, "Error 401: invalid_client. The OAuth client was not found.", content_type="text/html")
        host = urlsplit(redirect_uri).hostname or ""
        allowed = (
            redirect_uri in fake.allowed_redirect_uris
            if fake.allowed_redirect_uris is not None
            else host in ("127.0.0.1", "localhost", "testserver", "::1")
        )
        if not allowed:
            return self._send(
                400, "Error 400: redirect_uri_mismatch. The redirect URI in the request does not "
                "match the ones authorized for the OAuth client.", content_type="text/html",
            )
        if q.get("response_type") != "code":
            return self._send(400, "Error 400: invalid_request (response_type)", content_type="text/html")
        # Like Google, a login_hint preselects that account (the app's "Reconnect").
        preselected = q.get("login_hint") or fake.consent.email
        fake.stats.setdefault("login_hints", []).append(q.get("login_hint"))
        if fake.interactive:
            requested = [_norm(s) for s in q.get("scope", "").split()]
            boxes = "".join(
                f'<label><input type="checkbox" name="scope" value="{html.escape(s)}" checked> {html.escape(s)}</label>'
                for s in requested
            )
            page = _CONSENT_PAGE.format(
                client=html.escape(client_id), query=html.escape(urlsplit(self.path).query),
                email=html.escape(preselected), boxes=boxes,
            )
            return self._send(200, page, content_type="text/html")
        plan = fake.consent
        return self._complete_consent(q, email=preselected, scopes=plan.scopes, deny=plan.deny)

    def _decide(self):
        form = parse_qs(self._body().decode(), keep_blank_values=True)
        q = {k: v[0] for k, v in parse_qs(form.get("q", [""])[0]).items()}
        deny = form.get("decision", ["deny"])[0] != "allow"
        return self._complete_consent(
            q, email=form.get("email", [self.fake.consent.email])[0], scopes=form.get("scope", []), deny=deny
        )

    def _complete_consent(self, q: dict, *, email: str, scopes, deny: bool):
        fake = self.fake
        redirect_uri = q.get("redirect_uri", "")
        state = q.get("state")
        sep = "&" if "?" in redirect_uri else "?"
        if deny:
            params = {"error": "access_denied"}
            if state is not None:
                params["state"] = state
            return self._redirect(redirect_uri + sep + urlencode(params))
        requested = [_norm(s) for s in q.get("scope", "").split()]
        granted = [_norm(s) for s in scopes] if scopes is not None else requested
        fake.add_account(email)
        code = "4/fake-code-" + secrets.token_urlsafe(18)
        plan = fake.consent
        with fake._lock:
            fake.codes[code] = _Code(
                email=email, scopes=granted, client_id=q.get("client_id", ""),
                redirect_uri=redirect_uri, challenge=q.get("code_challenge"),
                method=q.get("code_challenge_method"),
                issue_refresh_token=plan.refresh_token and not fake.omit_refresh_token_on_exchange,
            )
        params = {"code": code, "scope": " ".join(granted)}
        if state is not None:
            params["state"] = state
        return self._redirect(redirect_uri + sep + urlencode(params))

    # --- token endpoint ------------------------------------------------------------------------------
    def _client_ok(self, form: dict) -> tuple[bool, str]:
        fake = self.fake
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                client_id, secret = base64.b64decode(auth[6:]).decode().split(":", 1)
            except ValueError:
                pass
        if client_id in fake.deleted_clients:
            return False, "deleted_client"
        if fake.clients.get(client_id) != secret or not secret:
            return False, "invalid_client"
        return True, client_id

    def _token(self):
        fake = self.fake
        form = self._form()
        grant_type = form.get("grant_type")
        with fake._lock:
            fake.stats["token_requests"] += 1
            if grant_type == "refresh_token":
                fake._in_flight += 1
                fake.stats["max_in_flight_refreshes"] = max(
                    fake.stats["max_in_flight_refreshes"], fake._in_flight
                )
        try:
            if fake.token_latency:
                time.sleep(fake.token_latency)
            failure = fake._take_token_failure()
            if failure is not None:
                status, error = failure
                body = {"error": error, "error_description": "Injected failure"}
                if status >= 500 and error.startswith("html"):
                    return self._send(status, "<html>Server Error</html>", content_type="text/html")
                return self._send(status, body)
            ok, client_or_error = self._client_ok(form)
            if not ok:
                return self._send(401, {"error": client_or_error, "error_description": "The OAuth client was not found."})
            if grant_type == "authorization_code":
                return self._exchange(form, client_or_error)
            if grant_type == "refresh_token":
                return self._refresh(form, client_or_error)
            return self._send(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"})
        finally:
            if grant_type == "refresh_token":
                with fake._lock:
                    fake._in_flight -= 1
            fake.save()

    def _exchange(self, form: dict, client_id: str):
        fake = self.fake
        with fake._lock:
            code = fake.codes.get(form.get("code", ""))
            if code is None or code.used or code.client_id != client_id:
                return self._send(400, {"error": "invalid_grant", "error_description": "Malformed auth code."})
            if code.redirect_uri != form.get("redirect_uri"):
                return self._send(400, {"error": "redirect_uri_mismatch", "error_description": "Bad Request"})
            if code.challenge:
                verifier = form.get("code_verifier", "")
                digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                expected = code.challenge if code.method == "S256" else None
                if not verifier or digest != expected:
                    return self._send(400, {"error": "invalid_grant", "error_description": "Invalid code verifier."})
            code.used = True
            fake.stats["exchanges"] += 1
        response = {
            "access_token": None,
            "expires_in": fake.access_token_lifetime,
            "scope": " ".join(code.scopes),
            "token_type": "Bearer",
        }
        refresh_token = None
        if code.issue_refresh_token:
            refresh_token = fake.issue_grant(code.email, code.scopes, client_id=client_id)
            response["refresh_token"] = refresh_token
        with fake._lock:
            response["access_token"] = fake._mint_access_token(code.email, code.scopes, refresh_token)
        if "openid" in code.scopes:
            response["id_token"] = fake.risc.id_token(email=code.email, client_id=client_id)
        return self._send(200, response)

    def _refresh(self, form: dict, client_id: str):
        fake = self.fake
        with fake._lock:
            grant = fake.grants.get(form.get("refresh_token", ""))
            if grant is None or grant.revoked or grant.client_id != client_id:
                return self._send(400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
            fake.stats["refreshes"] += 1
            by_email = fake.stats["refreshes_by_email"]
            by_email[grant.email] = by_email.get(grant.email, 0) + 1
            response = {
                "access_token": fake._mint_access_token(grant.email, grant.scopes, grant.refresh_token),
                "expires_in": fake.access_token_lifetime,
                "scope": " ".join(grant.scopes),
                "token_type": "Bearer",
            }
        if fake.rotate_refresh_tokens:
            new = fake.issue_grant(grant.email, grant.scopes, client_id=client_id)
            with fake._lock:
                grant.revoked = True
            response["refresh_token"] = new
        return self._send(200, response)

    def _revoke(self):
        fake = self.fake
        form = self._form()
        token = form.get("token") or {k: v[0] for k, v in self._query().items()}.get("token", "")
        with fake._lock:
            fake.stats["revokes"] += 1
            grant = fake.grants.get(token)
            access = fake.access_tokens.get(token)
            if (grant is None or grant.revoked) and (access is None or access.revoked):
                return self._send(400, {"error": "invalid_token", "error_description": "Token expired or revoked"})
            refresh = grant.refresh_token if grant else access.refresh_token
            if refresh and refresh in fake.grants:
                fake.grants[refresh].revoked = True
            for value in fake.access_tokens.values():
                if value.refresh_token == refresh or value is access:
                    value.revoked = True
        fake.save()
        return self._send(200, {})

    # --- bearer APIs ------------------------------------------------------------------------------
    def _bearer(self) -> _AccessToken | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        token = self.fake.access_tokens.get(auth[7:].strip())
        if token is None or token.revoked or token.expires_at < time.time():
            return None
        return token

    def _unauthenticated(self):
        return self._send(401, {"error": {"code": 401, "message": "Request had invalid authentication credentials. Expected OAuth 2 access token.", "status": "UNAUTHENTICATED"}}, headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})

    def _forbidden(self):
        return self._send(403, {"error": {"code": 403, "message": "Request had insufficient authentication scopes.", "status": "PERMISSION_DENIED", "errors": [{"reason": "insufficientPermissions", "message": "Insufficient Permission"}]}})

    def _userinfo(self):
        token = self._bearer()
        if token is None:
            return self._send(401, {"error": "invalid_token", "error_description": "Invalid Credentials"})
        with self.fake._lock:
            self.fake.stats["userinfo"] += 1
        sub = str(int(hashlib.sha256(token.email.encode()).hexdigest()[:15], 16))
        return self._send(200, {"sub": sub, "email": token.email, "email_verified": True})

    def _api(self, method: str, path: str):
        fake = self.fake
        with fake._lock:
            fake.stats["api_calls"].append((method, path))
        if fake.api_latency:
            time.sleep(fake.api_latency)
        failure = fake._take_api_failure(path)
        if failure is not None:
            status, retry_after = failure
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return self._send(status, {"error": {"code": status, "message": "Injected failure", "status": "UNAVAILABLE" if status >= 500 else "RESOURCE_EXHAUSTED"}}, headers=headers)
        token = self._bearer()
        if token is None:
            return self._unauthenticated()
        scopes = set(token.scopes)
        box = fake.add_account(token.email)
        q = {k: v[0] for k, v in self._query().items()}
        if path.startswith("/calendar/v3/"):
            return self._calendar(method, path, q, scopes, box, token.email)
        return self._gmail(method, path, q, scopes, box, token.email)

    def _calendar(self, method, path, q, scopes, box: _Mailbox, email: str):
        needs = CALENDAR_READ if method == "GET" else CALENDAR_WRITE
        if not scopes & needs:
            return self._forbidden()
        if path == "/calendar/v3/users/me/calendarList" and method == "GET":
            items = [{"id": "primary", "summary": email, "primary": True, "accessRole": "owner"}]
            items += [{"id": cid, "summary": cid, "accessRole": "owner"} for cid in box.events if cid != "primary"]
            return self._send(200, {"kind": "calendar#calendarList", "items": items[: int(q.get("maxResults", 250))]})
        match = re.fullmatch(r"/calendar/v3/calendars/([^/]+)/events(?:/([^/]+))?", path)
        if not match:
            return self._send(404, {"error": {"code": 404, "message": "Not Found"}})
        calendar, event_id = match.group(1), match.group(2)
        events = box.events.setdefault(calendar, {})
        if event_id is None and method == "GET":
            ordered = sorted(events.values(), key=lambda e: e.get("start", {}).get("dateTime", ""))
            tmin, tmax = q.get("timeMin"), q.get("timeMax")
            if tmin:
                ordered = [e for e in ordered if e.get("end", {}).get("dateTime", "") >= tmin]
            if tmax:
                ordered = [e for e in ordered if e.get("start", {}).get("dateTime", "") < tmax]
            start = int(q.get("pageToken") or 0)
            size = int(q.get("maxResults") or 250)
            page = ordered[start : start + size]
            body = {"kind": "calendar#events", "items": page}
            if start + size < len(ordered):
                body["nextPageToken"] = str(start + size)
            return self._send(200, body)
        if event_id is None and method == "POST":
            event = self._json_body()
            if not event.get("start") or not event.get("end"):
                return self._send(400, {"error": {"code": 400, "message": "Missing start or end time."}})
            event["id"] = f"ev{next(self.fake._ids):06d}"
            event["status"] = "confirmed"
            events[event["id"]] = event
            return self._send(200, event)
        event = events.get(event_id)
        if event is None:
            return self._send(404, {"error": {"code": 404, "message": "Not Found"}})
        if method == "GET":
            return self._send(200, event)
        if method in ("PATCH", "PUT"):
            update = self._json_body()
            event = update if method == "PUT" else {**event, **update}
            event["id"] = event_id
            events[event_id] = event
            return self._send(200, event)
        if method == "DELETE":
            del events[event_id]
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._send(405, {"error": {"code": 405, "message": "Method not allowed"}})

    def _gmail(self, method, path, q, scopes, box: _Mailbox, email: str):
        if not scopes & GMAIL_READ:
            return self._forbidden()
        if path == "/gmail/v1/users/me/profile":
            return self._send(200, {"emailAddress": email, "messagesTotal": len(box.messages), "threadsTotal": len(box.messages), "historyId": str(box.history_id)})
        if path == "/gmail/v1/users/me/messages":
            label = q.get("labelIds")
            items = [m for m in reversed(list(box.messages.values())) if not label or label in m["labelIds"]]
            start = int(q.get("pageToken") or 0)
            size = int(q.get("maxResults") or 100)
            body = {"messages": [{"id": m["id"], "threadId": m["threadId"]} for m in items[start : start + size]], "resultSizeEstimate": len(items)}
            if start + size < len(items):
                body["nextPageToken"] = str(start + size)
            if not body["messages"]:
                del body["messages"]
            return self._send(200, body)
        match = re.fullmatch(r"/gmail/v1/users/me/messages/([^/]+)", path)
        if match:
            message = box.messages.get(match.group(1))
            if message is None:
                return self._send(404, {"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}})
            return self._send(200, message)
        if path == "/gmail/v1/users/me/history":
            try:
                start_id = int(q.get("startHistoryId", "0"))
            except ValueError:
                return self._send(400, {"error": {"code": 400, "message": "Invalid startHistoryId"}})
            if start_id < box.min_history_id:
                return self._send(404, {"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}})
            entries = [h for h in box.history if h["id"] > start_id]
            offset = int(q.get("pageToken") or 0)
            size = int(q.get("maxResults") or 100)
            page = entries[offset : offset + size]
            body = {
                "history": [
                    {"id": str(h["id"]), "messagesAdded": [{"message": {"id": h["message"]["id"], "threadId": h["message"]["threadId"], "labelIds": h["message"]["labelIds"]}}]}
                    for h in page
                ],
                "historyId": str(box.history_id),
            }
            if offset + size < len(entries):
                body["nextPageToken"] = str(offset + size)
            if not body["history"]:
                del body["history"]
            return self._send(200, body)
        return self._send(404, {"error": {"code": 404, "message": "Not Found"}})
