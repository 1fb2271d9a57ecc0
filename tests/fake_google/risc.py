"""The fake Google's Cross-Account Protection (RISC): its own signing key and JWKS, the discovery
document, id_tokens for the consent flow, the RISC API (``stream:update``, ``stream/status``,
``stream:verify``) and a control to send a signed security event token to a URL.

Tests call ``fake.risc.send_event(url, "tokens-revoked", email=..., audience=...)``; ``make demo``
and manual runs can do the same with ``POST /_control/risc/send`` (JSON: url, event, email,
audience, and optionally token, reason, state).
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

RISC = "https://schemas.openid.net/secevent/risc/event-type/"
OAUTH = "https://schemas.openid.net/secevent/oauth/event-type/"
EVENT_URIS = {
    "sessions-revoked": RISC + "sessions-revoked",
    "tokens-revoked": OAUTH + "tokens-revoked",
    "token-revoked": OAUTH + "token-revoked",
    "account-disabled": RISC + "account-disabled",
    "account-enabled": RISC + "account-enabled",
    "account-credential-change-required": RISC + "account-credential-change-required",
    "verification": RISC + "verification",
}
RISC_API_AUDIENCE = "https://risc.googleapis.com/google.identity.risc.v1beta.RiscManagementService"


def subject_for(email: str) -> str:
    """The fake's stable Google subject ('sub') of an account (the same as userinfo's)."""
    return str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16))


def refresh_token_hash(token: str) -> str:
    """How the fake names a refresh token in token-revoked: base64 of its SHA-512."""
    return base64.b64encode(hashlib.sha512(token.encode()).digest()).decode()


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class RiscIssuer:
    """Signs id_tokens and security event tokens, serves its JWKS and the RISC API."""

    def __init__(self, fake) -> None:
        self.fake = fake
        self._key: rsa.RSAPrivateKey | None = None  # made at first use: most tests never sign
        self.kid = "fake-risc-" + secrets.token_hex(4)
        self.stream: dict = {"delivery": None, "events_requested": [], "status": "disabled"}
        self.api_calls: list[tuple[str, str]] = []
        self.jwks_fetches: list[tuple[str, str]] = []
        self.service_accounts: dict[str, rsa.RSAPublicKey] = {}
        self._lock = threading.Lock()

    @property
    def key(self) -> rsa.RSAPrivateKey:
        with self._lock:
            if self._key is None:
                self._key = _new_key()
            return self._key

    @key.setter
    def key(self, value: rsa.RSAPrivateKey) -> None:
        self._key = value

    # --- identities -------------------------------------------------------------------------------
    @property
    def issuer(self) -> str:
        # Google writes its RISC issuer with a trailing slash, its id_token issuer without.
        return self.fake.url + "/"

    def configuration(self) -> dict:
        base = self.fake.url
        return {
            "issuer": self.issuer,
            "jwks_uri": base + "/risc/jwks",
            "delivery_methods_supported": ["https://schemas.openid.net/secevent/risc/delivery-method/push"],
            "configuration_endpoint": base + "/v1beta/stream",
            "status_endpoint": base + "/v1beta/stream/status",
            "verification_endpoint": base + "/v1beta/stream:verify",
        }

    def jwks(self) -> dict:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        return {"keys": [jwk]}

    def rotate_key(self) -> None:
        """A new signing key (and kid): receivers must fetch the JWKS again."""
        self.key, self.kid = _new_key(), "fake-risc-" + secrets.token_hex(4)

    def sign(self, claims: dict, *, key: rsa.RSAPrivateKey | None = None, kid: str | None = None) -> str:
        pem = (key or self.key).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return jwt.encode(claims, pem, algorithm="RS256", headers={"kid": kid or self.kid, "typ": "secevent+jwt"})

    def id_token(self, *, email: str, client_id: str) -> str:
        now = int(time.time())
        return self.sign({"iss": self.fake.url, "sub": subject_for(email), "aud": client_id,
                          "email": email, "email_verified": True, "iat": now, "exp": now + 3600})

    def security_event(
        self, event: str, *, audience: str, email: str | None = None, token: str | None = None,
        reason: str | None = None, state: str | None = None, jti: str | None = None,
        iat: float | None = None, key: rsa.RSAPrivateKey | None = None, kid: str | None = None,
    ) -> str:
        """A signed security event token (SET) as Google sends it."""
        body: dict = {}
        if event == "verification":
            body["state"] = state or ""
        elif event == "token-revoked":
            body["subject"] = {"subject_type": "oauth_token", "token_type": "refresh_token",
                               "token_identifier_alg": "hash_base64_sha512_sha512",
                               "token": refresh_token_hash(token or "")}
        else:
            body["subject"] = {"subject_type": "iss-sub", "iss": self.issuer, "sub": subject_for(email or "")}
        if reason:
            body["reason"] = reason
        claims = {"iss": self.issuer, "aud": audience, "iat": int(iat if iat is not None else time.time()),
                  "jti": jti or secrets.token_hex(16), "events": {EVENT_URIS[event]: body}}
        return self.sign(claims, key=key, kid=kid)

    # --- delivery -----------------------------------------------------------------------------------
    @staticmethod
    def post(url: str, token: str | bytes, *, content_type: str = "application/secevent+jwt") -> tuple[int, str]:
        """POST a token (or any body) to a receiver; returns (status, body)."""
        data = token.encode() if isinstance(token, str) else token
        request = urllib.request.Request(url, data=data, method="POST",
                                         headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def send_event(self, url: str, event: str, **kwargs) -> tuple[int, str]:
        """Sign ``event`` and push it to ``url`` (what Google does); returns (status, body)."""
        return self.post(url, self.security_event(event, **kwargs))

    # --- the RISC API --------------------------------------------------------------------------------
    def service_account_file(
        self, path: str | Path, *, email: str = "risc-admin@fake-project.iam.gserviceaccount.com"
    ) -> Path:
        """Write a service-account JSON key the fake's RISC API accepts; returns its path."""
        key = _new_key()
        key_id = secrets.token_hex(8)
        with self._lock:
            self.service_accounts[key_id] = key.public_key()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        path = Path(path)
        path.write_text(json.dumps({"type": "service_account", "project_id": "fake-project",
                                    "private_key_id": key_id, "private_key": pem,
                                    "client_email": email, "client_id": "1"}))
        path.chmod(0o600)
        return path

    def _authorised(self, handler) -> bool:
        auth = handler.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        token = auth[7:]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            public = self.service_accounts.get(kid)
            if public is None:
                return False
            claims = jwt.decode(token, public, algorithms=["RS256"], audience=RISC_API_AUDIENCE)
        except jwt.PyJWTError:
            return False
        return claims.get("iss") == claims.get("sub")

    def handle(self, handler, method: str, path: str):
        """Serve the discovery document, the JWKS, the RISC API and the control endpoint."""
        if path == "/.well-known/risc-configuration" and method == "GET":
            return handler._send(200, self.configuration())
        if path == "/risc/jwks" and method == "GET":
            with self._lock:
                self.jwks_fetches.append((method, path))
            return handler._send(200, self.jwks())
        if path == "/_control/risc/send" and method == "POST":
            spec = handler._json_body()
            url, event = spec.pop("url", ""), spec.pop("event", "")
            status, body = self.send_event(url, event, **spec)
            return handler._send(200, {"status": status, "body": body})
        if not path.startswith("/v1beta/"):
            return handler._send(404, {"error": {"code": 404, "message": "Not Found"}})
        with self._lock:
            self.api_calls.append((method, path))
        if not self._authorised(handler):
            return handler._send(401, {"error": {"code": 401, "status": "UNAUTHENTICATED",
                                                 "message": "Request had invalid authentication credentials."}})
        body = handler._json_body()
        if path == "/v1beta/stream:update" and method == "POST":
            with self._lock:
                self.stream.update({"delivery": body.get("delivery"),
                                    "events_requested": body.get("events_requested", []),
                                    "status": "enabled"})
            return handler._send(200, {})
        if path == "/v1beta/stream" and method == "GET":
            return handler._send(200, {"delivery": self.stream["delivery"],
                                       "events_requested": self.stream["events_requested"],
                                       "events_delivered": self.stream["events_requested"]})
        if path == "/v1beta/stream/status" and method == "GET":
            return handler._send(200, {"status": self.stream["status"]})
        if path == "/v1beta/stream/status:update" and method == "POST":
            with self._lock:
                self.stream["status"] = body.get("status", "enabled")
            return handler._send(200, {"status": self.stream["status"]})
        if path == "/v1beta/stream:verify" and method == "POST":
            delivery = self.stream.get("delivery") or {}
            if not delivery.get("url"):
                return handler._send(404, {"error": {"code": 404, "status": "NOT_FOUND",
                                                     "message": "No stream is configured."}})
            audience = next(iter(self.fake.clients))
            status, _ = self.send_event(delivery["url"], "verification", audience=audience,
                                        state=body.get("state", ""))
            if status != 202:
                return handler._send(400, {"error": {"code": 400, "status": "FAILED_PRECONDITION",
                                                     "message": f"The receiver answered {status}."}})
            return handler._send(200, {})
        return handler._send(404, {"error": {"code": 404, "message": "Not Found"}})
