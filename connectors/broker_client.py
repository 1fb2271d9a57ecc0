"""A small client for the Butlers OAuth token broker (``POST /api/oauth/token``).

Standard library only and no Django: a butler on another host can copy this one file. It asks the
broker for an account's access token with a service key, keeps the token in this process until
``margin`` seconds before it expires, and retries a 503 once after the ``Retry-After`` the broker
sends (capped at ``max_retry_after``). Configuration, when not passed in::

    BUTLERS_BROKER_URL   the broker's base URL, e.g. https://oauth.home.example
    BUTLERS_SERVICE_KEY  the service key (bk_...), from 'manage.py service_key_create'

Usage::

    from connectors.broker_client import BrokerClient

    broker = BrokerClient.from_env()
    token = broker.access_token("alice@example.com")   # a str, for Authorization: Bearer ...

Errors are :class:`BrokerError` subclasses carrying the broker's ``error`` code, its
``description`` and, for a dead grant, the ``remediation``. Neither the key nor a token ever
appears in an error message or a repr.
"""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

URL_VAR = "BUTLERS_BROKER_URL"
KEY_VAR = "BUTLERS_SERVICE_KEY"
_PRIMARY = "\x00primary"


class BrokerError(Exception):
    """The broker did not hand out what was asked. ``status`` is the HTTP status (None: no answer)."""

    def __init__(
        self, description: str, *, status: int | None = None, error: str = "broker_error",
        remediation: str = "",
    ) -> None:
        self.description = description
        self.status = status
        self.error = error
        self.remediation = remediation
        super().__init__(description)

    def __str__(self) -> str:
        return f"{self.description} {self.remediation}".strip()


class BrokerConfigError(BrokerError):
    """BUTLERS_BROKER_URL or BUTLERS_SERVICE_KEY is missing or malformed."""


class BrokerAuthError(BrokerError):
    """401: the key is missing, unknown, revoked or expired."""


class BrokerForbidden(BrokerError):
    """403: the key may not use this account, its grant lacks the key's scopes, or the address."""


class BrokerAccountNotFound(BrokerError):
    """404: the account is not stored at the broker."""


class BrokerReconsentRequired(BrokerError):
    """409: the grant is dead (or the OAuth client is rejected); a person must act (remediation)."""


class BrokerUnavailable(BrokerError):
    """503 (twice), 429, a 5xx or no answer: try again later."""


_BY_STATUS: dict[int, type[BrokerError]] = {
    401: BrokerAuthError,
    403: BrokerForbidden,
    404: BrokerAccountNotFound,
    409: BrokerReconsentRequired,
}


@dataclass(frozen=True)
class BrokerToken:
    """An access token from the broker. ``access_token`` is plaintext: never log it."""

    access_token: str = field(repr=False)
    expires_at: float  # unix seconds
    account: str
    scopes: tuple[str, ...] = ()

    def expires_in(self, *, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)


def _parse_time(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class BrokerClient:
    """Tokens from the broker, cached in-process per account until ``margin`` s before expiry."""

    #: Indirections so tests can observe waits and move time without sleeping.
    sleep: Callable[[float], None] = staticmethod(time.sleep)
    clock: Callable[[], float] = staticmethod(time.time)

    def __init__(
        self, url: str, key: str, *, timeout: float = 10.0, margin: float = 60.0,
        max_retry_after: float = 30.0,
    ) -> None:
        url = (url or "").strip().rstrip("/")
        if not url.startswith(("https://", "http://")):
            raise BrokerConfigError(
                f"{URL_VAR} must be the broker's base URL, e.g. https://oauth.example.org "
                f"(got {url!r}).", error="config",
            )
        if not (key or "").strip().startswith("bk_"):
            raise BrokerConfigError(
                f"{KEY_VAR} must hold a service key (bk_...); create one with 'manage.py "
                "service_key_create NAME --account EMAIL' on the broker.", error="config",
            )
        self.url = url
        self._key = key.strip()
        self.timeout = timeout
        self.margin = margin
        self.max_retry_after = max_retry_after
        self._tokens: dict[str, BrokerToken] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **kwargs) -> BrokerClient:
        env = os.environ if environ is None else environ
        url, key = env.get(URL_VAR, ""), env.get(KEY_VAR, "")
        if not url or not key:
            missing = " and ".join(name for name, value in ((URL_VAR, url), (KEY_VAR, key)) if not value)
            raise BrokerConfigError(
                f"{missing} must be set to use the token broker (see docs/token-api.md).",
                error="config",
            )
        return cls(url, key, **kwargs)

    def __repr__(self) -> str:
        return f"BrokerClient(url={self.url!r})"

    # --- tokens -------------------------------------------------------------------------------
    def token(self, account: str | None = None, *, force_refresh: bool = False) -> BrokerToken:
        """A token for ``account`` (the primary when None): from this process while it has more
        than ``margin`` seconds left, else from the broker (one request per account at a time).
        ``force_refresh`` (after Google answered 401 to the token) asks the broker for a new one."""
        name = account or _PRIMARY
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            cached = self._tokens.get(name)
            if force_refresh and cached is not None:
                self._tokens.pop(name, None)
                cached = None
            if cached is not None and cached.expires_in(now=self.clock()) > self.margin:
                return cached
            payload: dict[str, Any] = {"account": account} if account else {}
            if force_refresh:
                # Google refused the token we had: ask the broker to refresh, not to resend it.
                payload["force_refresh"] = True
            body = self._request("POST", "/api/oauth/token", payload)
            try:
                token = BrokerToken(
                    access_token=str(body["access_token"]),
                    expires_at=_parse_time(str(body["expires_at"])),
                    account=str(body.get("account") or account or ""),
                    scopes=tuple(body.get("scopes") or ()),
                )
            except (KeyError, TypeError, ValueError):
                raise BrokerUnavailable(
                    "The broker's answer had no usable access_token/expires_at.", status=200,
                    error="bad_answer",
                ) from None
            self._tokens[name] = token
            return token

    def access_token(self, account: str | None = None, *, force_refresh: bool = False) -> str:
        return self.token(account, force_refresh=force_refresh).access_token

    def accounts(self) -> list[dict[str, Any]]:
        """The accounts this key may use (``GET /api/oauth/accounts``)."""
        return list(self._request("GET", "/api/oauth/accounts", None).get("accounts") or [])

    def forget(self, account: str | None = None) -> None:
        """Drop the cached token of ``account`` (e.g. after Google refused it)."""
        self._tokens.pop(account or _PRIMARY, None)

    # --- HTTP ---------------------------------------------------------------------------------
    def _request(self, method: str, path: str, payload: dict | None) -> dict[str, Any]:
        retried = False
        while True:
            status, headers, body = self._send(method, path, payload)
            if status == 503 and not retried:
                retried = True
                self.sleep(self._retry_after(headers))
                continue
            if 200 <= status < 300:
                return body
            raise self._error(status, body)

    def _send(self, method: str, path: str, payload: dict | None) -> tuple[int, dict, dict]:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._key}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, dict(response.headers), self._json(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers or {}), self._json(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BrokerUnavailable(
                f"The token broker at {self.url} did not answer ({type(reason).__name__}); check "
                f"{URL_VAR} and that the broker is running.", error="unreachable",
            ) from None

    @staticmethod
    def _json(raw: bytes) -> dict:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def _retry_after(self, headers: dict) -> float:
        raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        try:
            wait = float(raw) if raw is not None else 1.0
        except ValueError:
            wait = 1.0
        return max(0.0, min(wait, self.max_retry_after))

    def _error(self, status: int, body: dict) -> BrokerError:
        cls = _BY_STATUS.get(status, BrokerUnavailable)
        description = str(body.get("description") or f"The token broker answered HTTP {status}.")
        return cls(
            description, status=status, error=str(body.get("error") or f"http_{status}"),
            remediation=str(body.get("remediation") or ""),
        )
